//! Fault behaviour of the client: broken connections mid-list, floods, refused actions,
//! event overflow, filters across reconnects, secrets in debug output, and logoff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{
    Action, ActionError, AuthMethod, Client, ClientConfig, ClientConfigBuilder, Discard,
    DisconnectReason, EncodeError, FullQueue, Input, OverflowPolicy, SendError, SendOptions,
    StreamItem,
};
use scripted::{
    async_originate, event, goodbye, id_of, list_complete, list_item, list_start, msg,
    originate_queued, originate_response, pong, stream_label, success, Harness, Out, BANNER,
};
use std::time::{Duration, Instant};

const SECRET: &str = "s3cr3t-Pa55";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn base() -> ClientConfigBuilder {
    ClientConfig::builder("admin", SECRET)
        .events("call")
        .seed(11)
        .ping_interval(secs(3600))
}

fn labels(items: &[StreamItem]) -> Vec<String> {
    items.iter().map(stream_label).collect()
}

// ----- broken connections -----------------------------------------------------------------

#[test]
fn disconnect_mid_list_fails_the_list_once_leaks_nothing_and_the_next_connection_works() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let list = h.send(Action::new("CoreShowChannels"));
    let ping = h.send(Action::new("Ping"));
    h.feed(&list_start(list.as_str()));
    h.feed(&list_item(list.as_str(), 1));
    h.feed(&list_item(list.as_str(), 2));
    // Half of the third item, then the link dies.
    let third = list_item(list.as_str(), 3);
    h.feed(&third[..third.len() / 2]);
    let out = h.eof();
    let unknown = Err(ActionError::Unknown(DisconnectReason::Eof));
    let retry = match &out[..] {
        [Out::Close, Out::Completed(a, oa), Out::Completed(b, ob), Out::Disconnected(DisconnectReason::Eof, Some(at))] =>
        {
            assert_eq!((a, oa), (&list, &unknown));
            assert_eq!((b, ob), (&ping, &unknown));
            *at
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        labels(&h.events()),
        ["ready", "down:eof"],
        "no list item reaches the stream, only the session's boundaries"
    );
    assert_eq!(h.client.stats().pending, 0);
    assert_eq!(h.client.stats().in_flight, 0);

    assert_eq!(h.advance_to(retry), [Out::Connect]);
    h.ready();
    let list2 = h.send(Action::new("CoreShowChannels"));
    assert_ne!(list2, list);
    h.feed(&list_start(list2.as_str()));
    h.feed(&list_item(list2.as_str(), 1));
    h.feed(&list_complete(list2.as_str(), 1));
    let Ok(resp) = h.outcome(&list2) else {
        panic!("{:?}", h.outcome(&list2))
    };
    assert_eq!(resp.items().len(), 1);
    assert_eq!(labels(&h.events()), ["ready"]);
    assert_eq!(h.outcomes(&list).len(), 1);
    assert_eq!(h.outcomes(&ping).len(), 1);
}

#[test]
fn flood_of_unknown_action_ids_is_counted_delivered_and_bounded() {
    let t0 = Instant::now();
    let cfg = base().event_queue_cap(1000).build().unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let prefix = h.client.action_id_prefix().to_string();
    let before = h.client.stats();
    let mut chunk = Vec::new();
    for i in 0..10_000u64 {
        // Half look like ours (same prefix, a counter never issued), half are foreign.
        let id = if i % 2 == 0 {
            format!("{prefix}-{}", 1_000_000 + i)
        } else {
            format!("someone-else-{i}")
        };
        chunk.extend_from_slice(&success(&id, "not yours"));
        chunk.extend_from_slice(&msg(&[
            ("Event", "UserEvent"),
            ("ActionID", &id),
            ("Seq", &i.to_string()),
        ]));
        if chunk.len() > 32 << 10 {
            assert!(h.feed(&chunk).is_empty());
            chunk.clear();
            let s = h.client.stats();
            assert_eq!(s.pending, 0);
            assert!(h.client.events_queued() <= 1000);
        }
    }
    assert!(h.feed(&chunk).is_empty());
    let s = h.client.stats();
    assert_eq!(s.unmatched - before.unmatched, 10_000);
    assert_eq!(s.pending, 0);
    assert_eq!(s.in_flight, 0);
    assert_eq!(h.client.events_queued(), 1000);
    assert_eq!(s.events_queued + s.events_dropped, 10_000);
    assert_eq!(s.discarded - before.discarded, 10_000);
    let items = h.events();
    assert_eq!(stream_label(&items[0]), "ready");
    // Every dropped event is a counted gap; each unmatched response is reported, merged with
    // its neighbours while no event was kept between them.
    let count =
        |want: fn(&StreamItem) -> Option<u64>| -> u64 { items.iter().filter_map(want).sum() };
    assert_eq!(
        count(|i| match i {
            StreamItem::Gap { dropped } => Some(*dropped),
            _ => None,
        }),
        9000
    );
    assert_eq!(
        count(|i| match i {
            StreamItem::Discarded {
                reason: Discard::UnmatchedResponse,
                count,
            } => Some(*count),
            _ => None,
        }),
        10_000
    );
    let events: Vec<_> = items
        .iter()
        .filter(|i| matches!(i, StreamItem::Event(_)))
        .collect();
    assert_eq!(events.len(), 1000);
    assert_eq!(stream_label(events[0]), "UserEvent9000");
    assert_eq!(stream_label(events[999]), "UserEvent9999");
    assert!(items.len() <= 3 + 2 * 1000, "{} items", items.len());
    // The session is unharmed.
    let id = h.send(Action::new("Ping"));
    h.feed(&pong(id.as_str()));
    assert!(h.outcome(&id).is_ok());
}

#[test]
fn session_boundaries_reach_the_stream_in_order_between_the_events() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    h.feed(&event("E", 1));
    h.feed(&event("E", 2));
    let retry = match &h.eof()[..] {
        [Out::Close, Out::Disconnected(_, Some(at))] => *at,
        other => panic!("{other:?}"),
    };
    // The consumer reads only now: the loss sits between the two sessions' events.
    h.advance_to(retry);
    h.ready();
    h.feed(&event("E", 3));
    assert_eq!(
        labels(&h.events()),
        ["ready", "E1", "E2", "down:eof", "ready", "E3"]
    );
    h.client.close(h.now);
    h.drain();
    assert_eq!(labels(&h.events()), ["down:local_close"]);
}

#[test]
fn a_marked_action_leaves_its_mark_where_its_answer_arrived_in_the_stream() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let list = h
        .client
        .send_action_with(
            h.now,
            Action::new("CoreShowChannels"),
            SendOptions::default().with_mark(7),
        )
        .unwrap();
    h.drain();
    h.feed(&event("E", 1));
    h.feed(&list_start(list.as_str()));
    h.feed(&list_item(list.as_str(), 1));
    h.feed(&list_complete(list.as_str(), 1));
    h.feed(&event("E", 2));
    assert!(h.outcome(&list).is_ok());
    assert_eq!(labels(&h.events()), ["ready", "E1", "mark7", "E2"]);
    // A marked action that dies with the link still leaves its mark, after the loss.
    let ping = h
        .client
        .send_action_with(
            h.now,
            Action::new("Ping"),
            SendOptions::default().with_mark(8),
        )
        .unwrap();
    h.drain();
    h.eof();
    assert_eq!(
        h.outcome(&ping),
        &Err(ActionError::Unknown(DisconnectReason::Eof))
    );
    assert_eq!(labels(&h.events()), ["down:eof", "mark8"]);
}

#[test]
fn marked_actions_are_refused_when_marks_would_outgrow_the_event_queue() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().event_queue_cap(2).build().unwrap(), t0);
    h.ready();
    let marked = |h: &mut Harness, m| {
        h.client.send_action_with(
            h.now,
            Action::new("Ping"),
            SendOptions::default().with_mark(m),
        )
    };
    let a = marked(&mut h, 1).unwrap();
    let b = marked(&mut h, 2).unwrap();
    assert_eq!(
        marked(&mut h, 3),
        Err(SendError::QueueFull {
            what: FullQueue::StreamMarks,
            cap: 2
        })
    );
    h.drain();
    h.feed(&pong(a.as_str()));
    h.feed(&pong(b.as_str()));
    // Both marks wait in the stream: still full until the consumer reads them.
    assert!(marked(&mut h, 3).is_err());
    assert_eq!(labels(&h.events()), ["ready", "mark1", "mark2"]);
    assert!(marked(&mut h, 3).is_ok());
}

// ----- refused actions ------------------------------------------------------------------------

#[test]
fn crlf_injection_is_refused_as_invalid_and_nothing_is_written() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    // One valid action stays unwritten in the transmit buffer: it must be left unchanged.
    h.client.send_action(h.now, Action::new("Ping")).unwrap();
    let transmit = h.client.transmit().to_vec();
    assert!(!transmit.is_empty());
    let stats = h.client.stats();
    let injections = [
        (
            Action::new("Originate")
                .field(
                    "Channel",
                    "Local/1@x\r\nAction: Command\r\nCommand: core stop now",
                )
                .field("Async", "true"),
            "value with CRLF",
        ),
        (
            Action::new("Ping").field("Foo", "a\nAction: Command"),
            "bare LF",
        ),
        (Action::new("Ping").field("Foo", "a\rb"), "bare CR"),
        (Action::new("Ping").field("Foo", "a\0b"), "NUL"),
        (
            Action::new("Ping").field("Foo\r\nAction", "x"),
            "CRLF in name",
        ),
        (Action::new("Ping").field("Foo:", "x"), "colon in name"),
        (
            Action::new("Ping\r\nAction: Command"),
            "CRLF in action name",
        ),
    ];
    for (action, what) in injections {
        let r = h.client.send_action(h.now, action);
        assert!(
            matches!(
                r,
                Err(SendError::Invalid(
                    EncodeError::ForbiddenByte { .. } | EncodeError::InvalidName { .. }
                ))
            ),
            "{what}: {r:?}"
        );
        assert_eq!(
            h.client.transmit(),
            &transmit[..],
            "{what}: transmit changed"
        );
    }
    assert!(matches!(
        h.client.add_filter(h.now, "Event: X\r\nAction: Command"),
        Err(SendError::Invalid(EncodeError::ForbiddenByte { .. }))
    ));
    assert!(matches!(
        h.client.set_event_mask(h.now, "on\r\nAction: Command"),
        Err(SendError::Invalid(EncodeError::ForbiddenByte { .. }))
    ));
    assert_eq!(h.client.transmit(), &transmit[..]);
    let after = h.client.stats();
    assert_eq!(after.pending, stats.pending);
    assert_eq!(after.actions_written, stats.actions_written);
    h.drain();
    assert_eq!(h.inbox_actions(), ["Ping"]);

    // Refused actions leave no trace after a reconnect either: no filter re-applied, and
    // the login keeps the old event mask.
    let retry = match &h.eof()[..] {
        [Out::Close, Out::Completed(..), Out::Disconnected(_, Some(at))] => *at,
        other => panic!("{other:?}"),
    };
    h.take_all();
    h.advance_to(retry);
    h.ready();
    let logins: Vec<_> = h.written.iter().filter(|(c, _)| *c == 2).collect();
    assert_eq!(logins.len(), 1, "only Login on the new connection");
    assert_eq!(logins[0].1.get_str("Events"), Some("call"));
}

#[test]
fn injection_is_refused_while_disconnected_and_nothing_is_queued() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    let r = h.try_send(Action::new("Ping").field("Foo", "x\r\nAction: Command"));
    assert!(matches!(r, Err(SendError::Invalid(_))));
    assert_eq!(h.client.stats().queued, 0);
    h.ready();
    assert!(h.inbox.is_empty());
}

#[test]
fn action_carrying_its_own_action_id_is_refused() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    for name in ["ActionID", "actionid", "ACTIONID"] {
        assert_eq!(
            h.try_send(Action::new("Ping").field(name, "mine-1")),
            Err(SendError::ActionIdField),
            "{name}"
        );
    }
    assert!(h.inbox.is_empty());
    assert_eq!(h.client.stats().pending, 0);
}

#[test]
fn login_logoff_and_challenge_are_reserved() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    for (name, canonical) in [
        ("Login", "Login"),
        ("login", "Login"),
        ("LOGOFF", "Logoff"),
        ("Challenge", "Challenge"),
    ] {
        let action = Action::new(name)
            .field("Username", "admin")
            .field("Secret", "x");
        assert_eq!(
            h.try_send(action),
            Err(SendError::Reserved(canonical.to_string())),
            "{name}"
        );
    }
    assert!(h.inbox.is_empty());
    assert!(h.client.is_ready(), "a refused Logoff does not log off");
}

#[test]
fn full_queue_and_full_pending_table_are_refused() {
    let t0 = Instant::now();
    let cfg = base()
        .max_queued_actions(3)
        .max_pending_actions(5)
        .pipeline_depth(2)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    // Disconnected: everything queues; the fourth is refused.
    for _ in 0..3 {
        h.try_send(Action::new("Ping")).unwrap();
    }
    assert_eq!(
        h.try_send(Action::new("Ping")),
        Err(SendError::QueueFull {
            what: FullQueue::Queued,
            cap: 3
        })
    );
    assert_eq!(h.client.stats().queued, 3);
    // Ready: two written, one queued; two more fit the pending table (5) but not the queue.
    h.ready();
    assert_eq!(h.client.stats().in_flight, 2);
    assert_eq!(h.client.stats().queued, 1);
    h.try_send(Action::new("Ping")).unwrap();
    h.try_send(Action::new("Ping")).unwrap();
    assert_eq!(h.client.stats().pending, 5);
    assert_eq!(
        h.try_send(Action::new("Ping")),
        Err(SendError::QueueFull {
            what: FullQueue::Pending,
            cap: 5
        })
    );
    assert_eq!(h.inbox.len(), 2, "refusals write nothing");
    // Answers make room again.
    for m in h.take_all() {
        h.feed(&pong(id_of(&m)));
    }
    assert!(h.try_send(Action::new("Ping")).is_ok());
}

// ----- event overflow ------------------------------------------------------------------------

fn overflow_harness(policy: OverflowPolicy) -> Harness {
    let cfg = base().event_queue_cap(3).overflow(policy).build().unwrap();
    let mut h = Harness::new(cfg, Instant::now());
    h.ready();
    h
}

fn five_events(h: &mut Harness) -> Vec<Out> {
    let mut bytes = Vec::new();
    for n in 1..=5 {
        bytes.extend_from_slice(&event("E", n));
    }
    h.feed(&bytes)
}

#[test]
fn event_overflow_drop_oldest_reports_the_gap_first_then_the_newest_events() {
    let mut h = overflow_harness(OverflowPolicy::DropOldest);
    assert!(five_events(&mut h).is_empty());
    assert_eq!(h.client.events_queued(), 3);
    assert_eq!(labels(&h.events()), ["ready", "gap2", "E3", "E4", "E5"]);
    assert_eq!(h.client.stats().events_dropped, 2);
    // Room again: no stale gap.
    h.feed(&event("E", 6));
    assert_eq!(labels(&h.events()), ["E6"]);
    assert!(h.client.is_ready());
}

#[test]
fn event_overflow_drop_newest_keeps_the_oldest_events_then_the_gap() {
    let mut h = overflow_harness(OverflowPolicy::DropNewest);
    assert!(five_events(&mut h).is_empty());
    assert_eq!(h.client.events_queued(), 3);
    assert_eq!(labels(&h.events()), ["ready", "E1", "E2", "E3", "gap2"]);
    assert_eq!(h.client.stats().events_dropped, 2);
    h.feed(&event("E", 6));
    assert_eq!(labels(&h.events()), ["E6"]);
}

#[test]
fn event_overflow_close_session_disconnects_and_fails_pending_once() {
    let t0 = Instant::now();
    let cfg = base()
        .event_queue_cap(3)
        .overflow(OverflowPolicy::CloseSession)
        .pipeline_depth(1)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let written = h.send(Action::new("Ping"));
    let queued = h.send(Action::new("Ping"));
    assert_eq!(h.client.stats().queued, 1);
    // Four events then the answer, in one read: the answer comes after the overflow and
    // belongs to a dead session.
    let mut bytes = Vec::new();
    for n in 1..=4 {
        bytes.extend_from_slice(&event("E", n));
    }
    bytes.extend_from_slice(&pong(written.as_str()));
    let out = h.feed(&bytes);
    let reason = DisconnectReason::EventOverflow;
    let retry = match &out[..] {
        [Out::Close, Out::Completed(id, o), Out::Disconnected(r, Some(at))] => {
            assert_eq!(id, &written);
            assert_eq!(o, &Err(ActionError::Unknown(reason.clone())));
            assert_eq!(r, &reason);
            *at
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h.client
            .stats()
            .disconnect_count(ami_proto::DisconnectKind::EventOverflow),
        1
    );
    assert_eq!(
        labels(&h.events()),
        ["ready", "E1", "E2", "E3", "down:event_overflow"]
    );
    // The queued action survives and runs on the next session.
    h.advance_to(retry);
    h.ready();
    let m = h.take("Ping");
    assert_eq!(id_of(&m), queued.as_str());
    h.feed(&pong(queued.as_str()));
    assert!(h.outcome(&queued).is_ok());
    assert_eq!(h.outcomes(&written).len(), 1);
}

// ----- filters across reconnects ---------------------------------------------------------------

#[test]
fn filters_are_reapplied_after_reconnect_before_ready_and_before_queued_actions() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let f1 = h.client.add_filter(h.now, "Event: Newchannel").unwrap();
    let f2 = h.client.add_filter(h.now, "!Event: VarSet").unwrap();
    h.drain();
    let written = h.take_all();
    assert_eq!(written.len(), 2);
    for (m, id) in written.iter().zip([&f1, &f2]) {
        assert_eq!(m.action(), Some("Filter"));
        assert_eq!(m.get_str("Operation"), Some("Add"));
        h.feed(&success(id.as_str(), "Filter Added Successfully"));
    }
    assert!(h.outcome(&f1).is_ok() && h.outcome(&f2).is_ok());

    let retry = match &h.eof()[..] {
        [Out::Close, Out::Disconnected(DisconnectReason::Eof, Some(at))] => *at,
        other => panic!("{other:?}"),
    };
    let user = h.send(Action::new("Ping"));
    h.advance_to(retry);
    h.connected();
    h.feed(BANNER);
    let login = h.take("Login");
    let out = h.feed(&scripted::login_ok(id_of(&login)));
    assert!(
        out.is_empty(),
        "not Ready while filters are re-applied: {out:?}"
    );
    assert!(!h.client.is_ready());
    let reapplied = h.take_all();
    let filters: Vec<_> = reapplied
        .iter()
        .map(|m| (m.action().unwrap(), m.get_str("Filter").unwrap()))
        .collect();
    assert_eq!(
        filters,
        [
            ("Filter", "Event: Newchannel"),
            ("Filter", "!Event: VarSet")
        ],
        "in installation order, before the queued Ping"
    );
    assert!(h.feed(&success(id_of(&reapplied[0]), "ok")).is_empty());
    assert!(
        h.inbox.is_empty(),
        "the queued action waits for the last filter"
    );
    let out = h.feed(&success(id_of(&reapplied[1]), "ok"));
    assert!(matches!(&out[..], [Out::Ready(_)]), "{out:?}");
    let ping = h.take("Ping");
    assert_eq!(id_of(&ping), user.as_str());
    // Internal re-applies never complete as user actions.
    assert_eq!(h.outcomes(&f1).len(), 1);
    let order: Vec<_> = h
        .written
        .iter()
        .filter(|(c, _)| *c == 2)
        .map(|(_, m)| m.action().unwrap().to_string())
        .collect();
    assert_eq!(order, ["Login", "Filter", "Filter", "Ping"]);
}

#[test]
fn events_while_filters_are_reapplied_are_counted_discards_and_ready_comes_first() {
    let mut h = logged_in_again_with_a_filter(&event("Hangup", 1));
    let reapplied = h.take("Filter");
    // The server is not filtering yet: whatever it sends now may be what the filter keeps
    // out, and it belongs to a session the stream has not announced.
    h.feed(&event("Newchannel", 2));
    h.feed(&event("Hangup", 3));
    let out = h.feed(&success(id_of(&reapplied), "ok"));
    assert!(matches!(&out[..], [Out::Ready(_)]), "{out:?}");
    h.feed(&event("Hangup", 4));
    let items = h.events();
    assert_eq!(
        labels(&items),
        [
            "ready",
            "Hangup1",
            "down:eof",
            "Discarded { reason: BeforeReady, count: 2 }",
            "ready",
            "Hangup4"
        ]
    );
    assert_eq!(h.client.stats().discarded, 2);
}

/// Asterisk's inline `FullyBooted` after the login's Success, as a real server writes it.
fn fully_booted() -> Vec<u8> {
    msg(&[
        ("Event", "FullyBooted"),
        ("Privilege", "system,all"),
        ("Uptime", "12"),
        ("LastReload", "12"),
        ("Status", "Fully Booted"),
    ])
}

/// Asterisk's answer to a Filter from a user without `write=system`.
fn permission_denied(id: &str) -> Vec<u8> {
    msg(&[
        ("Response", "Error"),
        ("ActionID", id),
        ("Message", "Permission denied"),
    ])
}

/// The server closes the connection (EOF, nothing pending): the clock moves to the
/// reconnect the client set.
fn lost_until_the_retry(h: &mut Harness) {
    let retry = match &h.eof()[..] {
        [Out::Close, Out::Disconnected(DisconnectReason::Eof, Some(at))] => *at,
        other => panic!("{other:?}"),
    };
    h.advance_to(retry);
}

/// A client with one filter whose session was lost (right after the server sent
/// `before_loss`), logged in again: its filter is about to be re-applied and the session is
/// not Ready yet.
fn logged_in_again_with_a_filter(before_loss: &[u8]) -> Harness {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let f = h.client.add_filter(h.now, "Event: Hangup").unwrap();
    h.drain();
    h.take("Filter");
    h.feed(&success(f.as_str(), "Filter Added Successfully"));
    if !before_loss.is_empty() {
        h.feed(before_loss);
    }
    lost_until_the_retry(&mut h);
    h.connected();
    h.feed(BANNER);
    let login = h.take("Login");
    h.feed(&scripted::login_ok(id_of(&login)));
    h
}

#[test]
fn the_logins_fully_booted_waits_for_ready_while_filters_are_reapplied_and_is_not_a_discard() {
    let mut h = logged_in_again_with_a_filter(b"");
    // Written by Asterisk before any filter exists, so a fresh session that adds its
    // filters after login receives it as well: not input to discard on every reconnect.
    h.feed(&fully_booted());
    let reapplied = h.take("Filter");
    h.feed(&event("Newchannel", 2));
    let out = h.feed(&success(id_of(&reapplied), "ok"));
    assert!(matches!(&out[..], [Out::Ready(_)]), "{out:?}");
    h.feed(&event("Hangup", 4));
    assert_eq!(
        labels(&h.events()),
        [
            "ready",
            "down:eof",
            "Discarded { reason: BeforeReady, count: 1 }",
            "ready",
            "FullyBooted",
            "Hangup4"
        ]
    );
    assert_eq!(h.client.stats().discarded, 1, "only the Newchannel");
}

/// The `SuccessfulAuth` Asterisk writes after a login of `account` (security class).
fn successful_auth(account: &str) -> Vec<u8> {
    msg(&[
        ("Event", "SuccessfulAuth"),
        ("Privilege", "security,all"),
        ("Severity", "Informational"),
        ("Service", "AMI"),
        ("AccountID", account),
        ("UsingPassword", "0"),
    ])
}

#[test]
fn the_logins_own_successful_auth_waits_for_ready_under_configured_filters_and_is_not_a_discard() {
    // A real Asterisk 22 login (fixtures/login_plain.raw): Success, FullyBooted, then the
    // SuccessfulAuth of this very login, all before the configured filter's answer. The
    // first session must not start with a possible loss.
    let t0 = Instant::now();
    let config = base().filter("Event: Hangup").build().unwrap();
    let mut h = Harness::new(config, t0);
    assert!(h.login().is_empty(), "not Ready before the filter");
    let filter = h.take("Filter");
    h.feed(&fully_booted());
    h.feed(&successful_auth("admin"));
    // Another account logging in at the same moment is an ordinary event of this one.
    h.feed(&successful_auth("reporting"));
    let out = h.feed(&success(id_of(&filter), "Filter Added Successfully"));
    assert!(matches!(&out[..], [Out::Ready(_)]), "{out:?}");
    h.feed(&event("Hangup", 1));
    let items = h.events();
    assert_eq!(
        labels(&items),
        [
            "Discarded { reason: BeforeReady, count: 1 }",
            "ready",
            "FullyBooted",
            "SuccessfulAuth",
            "Hangup1"
        ]
    );
    let held = items.iter().find_map(|i| match i {
        StreamItem::Event(m) if m.event() == Some("SuccessfulAuth") => m.get_str("AccountID"),
        _ => None,
    });
    assert_eq!(
        held,
        Some("admin"),
        "this login's own, not the other account's"
    );
    assert_eq!(h.client.stats().discarded, 1, "only the other account's");
}

#[test]
fn a_held_fully_booted_whose_session_never_became_ready_is_a_counted_discard() {
    let mut h = logged_in_again_with_a_filter(b"");
    h.feed(&fully_booted());
    h.feed(&fully_booted());
    h.take("Filter");
    h.eof();
    assert_eq!(
        labels(&h.events()),
        [
            "ready",
            "down:eof",
            "Discarded { reason: BeforeReady, count: 2 }"
        ]
    );
    assert_eq!(
        h.client.stats().discarded,
        2,
        "the replaced one and the last"
    );
}

#[test]
fn configured_filters_are_installed_at_every_login_before_ready() {
    // `ClientConfigBuilder::filter`: from the first session on, no event the filter keeps out
    // reaches the stream (events before its answer are counted BeforeReady discards), and
    // a refused filter (no write=system) leaves the session up, unfiltered.
    let t0 = Instant::now();
    let config = base()
        .filter("^Event: Hangup[[:space:]]")
        .filter("!Event: VarSet")
        .build()
        .unwrap();
    let mut h = Harness::new(config, t0);
    for connection in 0..2 {
        if connection == 1 {
            lost_until_the_retry(&mut h);
        }
        let out = h.login();
        assert!(out.is_empty(), "not Ready before the filters: {out:?}");
        let written = h.take_all();
        let filters: Vec<_> = written
            .iter()
            .map(|m| (m.action().unwrap(), m.get_str("Filter").unwrap()))
            .collect();
        assert_eq!(
            filters,
            [
                ("Filter", "^Event: Hangup[[:space:]]"),
                ("Filter", "!Event: VarSet")
            ],
            "connection {connection}"
        );
        h.feed(&event("Newchannel", 1));
        assert!(h.feed(&success(id_of(&written[0]), "ok")).is_empty());
        let out = h.feed(&permission_denied(id_of(&written[1])));
        assert!(matches!(&out[..], [Out::Ready(_)]), "{out:?}");
        h.feed(&event("Hangup", 2));
    }
    assert_eq!(
        labels(&h.events()),
        [
            "Discarded { reason: BeforeReady, count: 1 }",
            "ready",
            "Hangup2",
            "down:eof",
            "Discarded { reason: BeforeReady, count: 1 }",
            "ready",
            "Hangup2"
        ]
    );
    assert_eq!(h.client.stats().discarded, 2);
    assert_eq!(
        h.client.stats().filters_failed,
        2,
        "the refused filter, at each login: visible without a logger"
    );
}

#[test]
fn prefilters_are_installed_at_every_login_without_holding_ready_or_events_back() {
    // `ClientConfigBuilder::prefilter` cuts traffic, not the stream: Ready comes with the login,
    // the events the server sends before it applies the filter are delivered (the
    // application filters them itself), and a refusal leaves the session up.
    let t0 = Instant::now();
    let config = base()
        .prefilter("^Event: Hangup[[:space:]]")
        .build()
        .unwrap();
    let mut h = Harness::new(config, t0);
    for connection in 0..2 {
        if connection == 1 {
            lost_until_the_retry(&mut h);
        }
        h.connected();
        h.feed(BANNER);
        // Right behind the Login, before its answer: in place a round trip sooner.
        let written = h.take_all();
        let actions: Vec<_> = written.iter().map(|m| m.action().unwrap()).collect();
        assert_eq!(actions, ["Login", "Filter"], "connection {connection}");
        let f = &written[1];
        assert_eq!(f.get_str("Filter"), Some("^Event: Hangup[[:space:]]"));
        let out = h.feed(&scripted::login_ok(id_of(&written[0])));
        assert!(
            matches!(out.last(), Some(Out::Ready(_))),
            "connection {connection}: Ready with the login: {out:?}"
        );
        h.feed(&event("Newchannel", 1));
        assert!(
            h.feed(&permission_denied(id_of(f))).is_empty(),
            "no outcome of its own"
        );
        assert!(h.client.is_ready());
        h.feed(&event("Hangup", 2));
    }
    assert_eq!(
        labels(&h.events()),
        [
            "ready",
            "Newchannel1",
            "Hangup2",
            "down:eof",
            "ready",
            "Newchannel1",
            "Hangup2"
        ]
    );
    assert_eq!(h.client.stats().discarded, 0);
    assert_eq!(h.client.stats().filters_failed, 2, "refused at each login");
}

#[test]
fn a_prefilter_the_server_never_answers_counts_as_failed_at_its_deadline_and_the_session_goes_on() {
    let t0 = Instant::now();
    let config = base()
        .prefilter("^Event: Hangup[[:space:]]")
        .action_timeout(secs(5))
        .build()
        .unwrap();
    let mut h = Harness::new(config, t0);
    h.connected();
    h.feed(BANNER);
    let written = h.take_all();
    let out = h.feed(&scripted::login_ok(id_of(&written[0])));
    assert!(matches!(out.last(), Some(Out::Ready(_))), "{out:?}");
    h.advance(secs(6));
    assert_eq!(h.client.stats().filters_failed, 1);
    assert!(h.client.is_ready());
}

#[test]
fn a_configured_filter_the_server_accepts_at_login_is_not_counted_as_failed() {
    let t0 = Instant::now();
    let config = base().filter("!Event: VarSet").build().unwrap();
    let mut h = Harness::new(config, t0);
    assert!(h.login().is_empty(), "not Ready before its filter");
    let filter = h.take("Filter");
    let out = h.feed(&success(id_of(&filter), "Filter Added Successfully"));
    assert!(matches!(&out[..], [Out::Ready(_)]), "{out:?}");
    assert_eq!(h.client.stats().filters_failed, 0);
}

#[test]
fn configured_filters_that_cannot_be_sent_are_refused_at_build() {
    let long = "x".repeat(1100);
    for (bad, why) in [
        ("", "empty"),
        ("Event: A\r\nAction: Logoff", "CR LF"),
        (long.as_str(), "too long"),
    ] {
        let err = base().filter(bad).build().unwrap_err();
        assert!(err.to_string().contains("filter"), "{why}: {err}");
    }
    for bad in ["", "Event: A\r\nAction: Logoff"] {
        assert!(base().prefilter(bad).build().is_err(), "{bad:?}");
    }
    let mut many = base();
    for i in 0..=ami_proto::MAX_FILTERS {
        many = many.filter(format!("Event: E{i}"));
    }
    assert!(many.build().is_err());
}

#[test]
fn filter_added_while_disconnected_is_sent_once_on_the_first_connection() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    let id = h.client.add_filter(h.now, "Event: Newchannel").unwrap();
    h.drain();
    h.login();
    // Answer every Filter the client writes, as Asterisk would.
    while let Some(pos) = h.inbox.iter().position(|m| m.action() == Some("Filter")) {
        let f = h.inbox.remove(pos).unwrap();
        h.feed(&success(id_of(&f), "Filter Added Successfully"));
    }
    assert!(h.client.is_ready());
    assert!(h.outcome(&id).is_ok());
    let filters = h
        .written
        .iter()
        .filter(|(_, m)| m.action() == Some("Filter"))
        .count();
    assert_eq!(filters, 1, "the filter was written {filters} times");
}

// ----- secrets ---------------------------------------------------------------------------------

/// Debug renderings of everything a caller can print during a login.
fn debug_trail(auth: AuthMethod) -> (Vec<String>, String, Client) {
    let t0 = Instant::now();
    let builder = base().auth(auth);
    let mut trail = vec![format!("{builder:?}")];
    let cfg = builder.build().unwrap();
    trail.push(format!("{cfg:?}"));
    let mut client = Client::new(cfg, t0);
    trail.push(format!("{client:?}"));
    let mut server = ami_proto::Decoder::without_banner(ami_proto::DecoderLimits::default());
    let mut take = |client: &mut Client, trail: &mut Vec<String>| {
        loop {
            let o = client.poll_output();
            trail.push(format!("{o:?}"));
            if matches!(o, ami_proto::Output::Wait(_)) {
                break;
            }
        }
        trail.push(format!("{client:?}"));
        trail.push(format!("{:?}", client.stats()));
        let bytes = client.transmit().to_vec();
        client.advance_transmit(bytes.len());
        server.feed(&bytes);
        let mut out = Vec::new();
        while let Some(Ok(ami_proto::Frame::Message(m))) = server.decode() {
            out.push(m);
        }
        out
    };
    take(&mut client, &mut trail);
    client.handle_input(t0, Input::Connected);
    client.handle_input(t0, Input::Received(BANNER));
    let mut msgs = take(&mut client, &mut trail);
    if auth == AuthMethod::Md5 {
        let c = msgs.remove(0);
        assert_eq!(c.action(), Some("Challenge"));
        client.handle_input(
            t0,
            Input::Received(&scripted::challenge(id_of(&c), "987654321")),
        );
        msgs = take(&mut client, &mut trail);
    }
    let login = msgs.remove(0);
    assert_eq!(login.action(), Some("Login"));
    let key = login
        .get_str(if auth == AuthMethod::Md5 {
            "Key"
        } else {
            "Secret"
        })
        .unwrap()
        .to_string();
    client.handle_input(t0, Input::Received(&scripted::login_ok(id_of(&login))));
    take(&mut client, &mut trail);
    let action = Action::new("Command")
        .field("Command", "core show uptime")
        .field("Secret", SECRET)
        .field("Key", &key);
    trail.push(format!("{action:?}"));
    let r = client.send_action(t0, action);
    trail.push(format!("{r:?}"));
    take(&mut client, &mut trail);
    client.close(t0);
    take(&mut client, &mut trail);
    (trail, key, client)
}

#[test]
fn secrets_never_appear_in_debug_output_of_config_client_actions_outputs_or_stats() {
    let (trail, secret, _) = debug_trail(AuthMethod::Plain);
    assert_eq!(secret, SECRET, "the plain login did send the secret");
    let (md5_trail, key, _) = debug_trail(AuthMethod::Md5);
    assert_eq!(key.len(), 32);
    assert!(key
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    for line in trail.iter().chain(&md5_trail) {
        assert!(!line.contains(SECRET), "secret in {line}");
        assert!(!line.contains(&key), "MD5 key in {line}");
    }
    assert!(trail.iter().any(|l| l.contains("<redacted>")));
}

/// Regression: `Client`'s `Debug` once printed its transmit buffer as a byte list, which spelled
/// the secret while a Login was written but not yet sent. Neither the text nor its bytes may
/// show.
#[test]
fn secret_bytes_never_appear_in_client_debug_while_login_is_unsent() {
    let t0 = Instant::now();
    let mut client = Client::new(base().build().unwrap(), t0);
    let _ = client.poll_output();
    client.handle_input(t0, Input::Connected);
    client.handle_input(t0, Input::Received(BANNER));
    assert!(!client.transmit().is_empty());
    let as_bytes = format!("{:?}", SECRET.as_bytes());
    let inner = &as_bytes[1..as_bytes.len() - 1];
    let dbg = format!("{client:?}");
    assert!(!dbg.contains(inner), "secret bytes {inner} in {dbg}");
}

// ----- logoff ------------------------------------------------------------------------------------

#[test]
fn logoff_drops_queued_answers_written_then_closes_on_goodbye() {
    let t0 = Instant::now();
    let cfg = base().pipeline_depth(1).build().unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let a = h.send(Action::new("Ping"));
    let b = h.send(Action::new("Ping"));
    let c = h.send(Action::new("Ping"));
    h.take("Ping");
    h.client.logoff(h.now);
    let out = h.drain();
    let not_sent = Err(ActionError::NotSent(DisconnectReason::Logoff));
    assert_eq!(
        out,
        [
            Out::Completed(b.clone(), not_sent.clone()),
            Out::Completed(c.clone(), not_sent)
        ]
    );
    let logoff = h.take("Logoff");
    assert!(h.inbox.is_empty());
    assert_eq!(
        h.try_send(Action::new("Ping")),
        Err(SendError::Closed {
            reason: DisconnectReason::Logoff
        }),
        "nothing new after logoff"
    );
    // The written action still gets its answer.
    let out = h.feed(&pong(a.as_str()));
    assert!(matches!(&out[..], [Out::Completed(id, Ok(_))] if *id == a));
    let out = h.feed(&goodbye(id_of(&logoff)));
    assert_eq!(out, [Out::Close, Out::Closed(DisconnectReason::Logoff)]);
    assert!(h.client.is_closed());
    assert!(h.eof().is_empty(), "EOF after Goodbye changes nothing");
    assert_eq!(
        h.try_send(Action::new("Ping")),
        Err(SendError::Closed {
            reason: DisconnectReason::Logoff
        })
    );
    assert_eq!(h.wait(), None);
    for id in [&a, &b, &c] {
        assert_eq!(h.outcomes(id).len(), 1);
    }
    assert!(!h.log.iter().any(|o| matches!(o, Out::Disconnected(..))));
}

#[test]
fn a_logoff_the_server_never_answers_closes_after_the_logoff_timeout_not_the_action_timeout() {
    let t0 = Instant::now();
    let cfg = base()
        .action_timeout(Duration::from_secs(30))
        .logoff_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    h.client.logoff(h.now);
    h.drain();
    h.take("Logoff");
    let logged_off = h.now;
    assert_eq!(h.wait(), Some(logged_off + Duration::from_secs(2)));
    assert!(h
        .advance_to(logged_off + Duration::from_secs(2) - Duration::from_millis(1))
        .is_empty());
    let out = h.advance_to(logged_off + Duration::from_secs(2));
    assert_eq!(out, [Out::Close, Out::Closed(DisconnectReason::Logoff)]);
    assert!(h.client.is_closed());
}

/// An async Originate the server accepted, then the session ends (`end`): how it fails.
fn accepted_originate_when_the_session_ends(
    end: impl FnOnce(&mut Harness) -> Vec<Out>,
) -> Vec<Out> {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let accepted = h.send(async_originate(30_000));
    let unanswered = h.send(async_originate(30_000));
    h.drain();
    assert!(h.feed(&originate_queued(accepted.as_str())).is_empty());
    let mut out = end(&mut h);
    out.extend(h.drain());
    out.retain(|o| matches!(o, Out::Completed(..)));
    let [Out::Completed(a, Err(ActionError::FollowUpLost { response, .. })), Out::Completed(u, Err(ActionError::Unknown(_)))] =
        &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!((a, u), (&accepted, &unanswered), "in send order");
    assert_eq!(response.text(), Some("Originate successfully queued"));
    out
}

#[test]
fn an_accepted_async_originate_whose_session_ends_fails_follow_up_lost_with_its_acceptance() {
    // "Outcome unknown" would say it may never have run; the server said it took it: the
    // call is being placed. The acceptance travels with the error; a second Originate
    // would be a second call. The Originate not yet answered stays unknown.
    let out = accepted_originate_when_the_session_ends(|h| h.eof());
    let Out::Completed(_, Err(e)) = &out[0] else {
        panic!("{out:?}")
    };
    assert!(matches!(
        e,
        ActionError::FollowUpLost {
            reason: DisconnectReason::Eof,
            ..
        }
    ));
    assert_eq!(e.kind(), ami_proto::OutcomeKind::Unknown);
    assert!(e.response().is_some());
    assert!(
        e.to_string()
            .starts_with("accepted, then the session was lost"),
        "{e}"
    );
    // The same at logoff and at a local close: neither waits for a ring timeout.
    accepted_originate_when_the_session_ends(|h| {
        h.client.logoff(h.now);
        let mut out = h.drain();
        out.extend(h.eof());
        out
    });
    accepted_originate_when_the_session_ends(|h| {
        h.client.close(h.now);
        h.drain()
    });
}

#[test]
fn logoff_then_eof_without_goodbye_closes_and_fails_written_as_unknown() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let a = h.send(Action::new("Ping"));
    h.client.logoff(h.now);
    h.drain();
    let out = h.eof();
    assert_eq!(
        out,
        [
            Out::Close,
            Out::Completed(a, Err(ActionError::Unknown(DisconnectReason::Logoff))),
            Out::Closed(DisconnectReason::Logoff)
        ]
    );
}

#[test]
fn a_heartbeat_deadline_during_logoff_closes_for_good_instead_of_reconnecting() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(10))
        .pong_timeout(secs(5))
        .action_timeout(secs(30))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    // The idle timer fires: a Ping goes out and the pong deadline is armed for t0 + 15 s.
    h.advance_to(t0 + secs(10));
    h.take("Ping");
    h.client.logoff(h.now);
    h.drain();
    h.take("Logoff");
    // The server answers neither; the pong deadline comes before the Logoff's own.
    let out = h.advance_to(t0 + secs(15));
    assert_eq!(out, [Out::Close, Out::Closed(DisconnectReason::Logoff)]);
    assert!(h.client.is_closed());
    assert_eq!(h.wait(), None, "no reconnect is scheduled after a logoff");
}

#[test]
fn a_logoff_answered_with_an_error_still_closes() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    h.client.logoff(h.now);
    h.drain();
    let logoff = h.take("Logoff");
    let out = h.feed(&scripted::error(id_of(&logoff), "Permission denied"));
    assert_eq!(out, [Out::Close, Out::Closed(DisconnectReason::Logoff)]);
    assert!(h.client.is_closed());
    assert_eq!(h.wait(), None);
}

// ----- pipeline slots -------------------------------------------------------------------------

#[test]
fn async_originate_response_frees_its_pipeline_slot_at_once() {
    let t0 = Instant::now();
    let cfg = base().events("call").pipeline_depth(1).build().unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let orig = h.send(async_originate(30_000));
    let ping = h.send(Action::new("Ping"));
    assert_eq!(h.inbox_actions(), ["Originate"]);
    h.take("Originate");
    h.feed(&originate_queued(orig.as_str()));
    assert_eq!(
        h.client.stats().in_flight,
        1,
        "only the Ping: the Originate gave its slot up with its response"
    );
    assert_eq!(
        h.inbox_actions(),
        ["Ping"],
        "the queued Ping is written as soon as the slot frees"
    );
    h.feed(&pong(ping.as_str()));
    h.feed(&originate_response(orig.as_str(), true));
    assert!(h.outcome(&orig).is_ok());
}

#[test]
fn list_overflow_keeps_in_flight_within_pipeline_depth() {
    let t0 = Instant::now();
    let cfg = base().pipeline_depth(1).max_list_items(2).build().unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let list = h.send(Action::new("CoreShowChannels"));
    let _ping = h.send(Action::new("Ping"));
    h.feed(&list_start(list.as_str()));
    for n in 1..=3 {
        h.feed(&list_item(list.as_str(), n));
    }
    assert!(matches!(
        h.outcome(&list),
        Err(ActionError::ListOverflow { items: 2, .. })
    ));
    let s = h.client.stats();
    assert!(
        s.in_flight <= 1,
        "in_flight {} > pipeline_depth 1",
        s.in_flight
    );
}

#[test]
fn list_overflow_reports_once_and_swallows_the_rest_of_the_list() {
    let t0 = Instant::now();
    let cfg = base().max_list_items(2).build().unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let list = h.send(Action::new("CoreShowChannels"));
    h.feed(&list_start(list.as_str()));
    for n in 1..=5 {
        h.feed(&list_item(list.as_str(), n));
    }
    h.feed(&list_complete(list.as_str(), 5));
    assert!(matches!(
        h.outcome(&list),
        Err(ActionError::ListOverflow { items: 2, .. })
    ));
    assert_eq!(h.client.stats().list_items_dropped, 3);
    assert_eq!(
        labels(&h.events()),
        ["ready"],
        "no list item reaches the stream"
    );
    assert_eq!(h.client.stats().in_flight, 0);
    assert_eq!(h.client.stats().pending, 0);
}

#[test]
fn an_async_originate_whose_answer_the_event_mask_keeps_out_is_refused_before_sending() {
    // Its OriginateResponse is a call event: with call events masked out it could never
    // arrive, and the call would be placed while the action timed out.
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("off").build().unwrap(), t0);
    h.ready();
    let refused = h.client.send_action(h.now, async_originate(30_000));
    assert!(
        matches!(&refused, Err(SendError::FollowUpMasked { mask }) if mask == "off"),
        "{refused:?}"
    );
    assert!(h.take_all().is_empty(), "nothing written");
    // Once the mask lets call events through, it goes.
    h.client.set_event_mask(h.now, "system,call").unwrap();
    h.drain();
    assert!(h.client.send_action(h.now, async_originate(30_000)).is_ok());
    // Answered (a mask that hides call events is refused while it waits for its answer)...
    h.drain();
    let sent = h.take("Originate");
    h.feed(&scripted::originate_queued(id_of(&sent)));
    h.feed(&scripted::originate_response(id_of(&sent), true));
    // ...a mask changed back keeps the next one out again.
    h.client.set_event_mask(h.now, "system").unwrap();
    assert!(matches!(
        h.client.send_action(h.now, async_originate(30_000)),
        Err(SendError::FollowUpMasked { .. })
    ));
}

#[test]
fn an_events_or_filter_action_sent_by_hand_is_kept_for_later_logins_as_the_methods_keep_them() {
    // The typed builders (`ami_types::actions::Events`, `Filter`) and the CLI send these
    // as plain actions: the mask must then decide async Originates and the next Login, and
    // the filter must come back after a reconnect, as if set_event_mask / add_filter sent
    // them.
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("system").build().unwrap(), t0);
    h.ready();
    assert!(matches!(
        h.client.send_action(h.now, async_originate(30_000)),
        Err(SendError::FollowUpMasked { .. })
    ));
    let mask = h
        .client
        .send_action(
            h.now,
            Action::new("Events").field("EventMask", "system,call"),
        )
        .unwrap();
    let filter = h
        .client
        .send_action(
            h.now,
            Action::new("Filter")
                .field("Operation", "Add")
                .field("Filter", "Event: Hangup"),
        )
        .unwrap();
    h.drain();
    h.take("Events");
    h.take("Filter");
    h.feed(&success(mask.as_str(), "Events On"));
    h.feed(&success(filter.as_str(), "Filter Added Successfully"));
    assert!(h.client.send_action(h.now, async_originate(30_000)).is_ok());
    h.drain();
    h.take("Originate");
    let login = h.lose_and_reconnect_to_login();
    assert_eq!(login.get_str("Events"), Some("system,call"));
    h.feed(&scripted::login_ok(id_of(&login)));
    let reapplied = h.take("Filter");
    assert_eq!(reapplied.get_str("Filter"), Some("Event: Hangup"));
    // A hand-made mask naming no class is refused as set_event_mask refuses it.
    let r = h
        .client
        .send_action(h.now, Action::new("Events").field("EventMask", "calls"));
    assert!(
        matches!(&r, Err(SendError::UnknownEventClass(c)) if c == "calls"),
        "{r:?}"
    );
}

#[test]
fn an_empty_event_mask_or_a_filter_asterisk_refuses_leaves_the_session_as_it_was() {
    // Asterisk answers an empty EventMask "Invalid event mask" and keeps its mask: the
    // client must not take "" as the mask (async Originates refused, `Events: ` at every
    // later login), nor keep a filter the server refused (empty, or a regex it cannot
    // compile) to re-apply, and fail, after each reconnect.
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("system,call").build().unwrap(), t0);
    h.ready();
    let mask = h
        .client
        .send_action(h.now, Action::new("Events").field("EventMask", ""))
        .unwrap();
    let filter = h
        .client
        .send_action(
            h.now,
            Action::new("Filter")
                .field("Operation", "Add")
                .field("Filter", ""),
        )
        .unwrap();
    let bad_regex = h
        .client
        .send_action(
            h.now,
            Action::new("Filter")
                .field("Operation", "Add")
                .field("Filter", "Event: ("),
        )
        .unwrap();
    h.drain();
    h.take("Events");
    h.take("Filter");
    h.take("Filter");
    h.feed(&scripted::error(mask.as_str(), "Invalid event mask"));
    h.feed(&scripted::error(filter.as_str(), "Filter Not Added"));
    h.feed(&scripted::error(bad_regex.as_str(), "Filter Not Added"));
    assert!(h.client.send_action(h.now, async_originate(30_000)).is_ok());
    h.drain();
    h.take("Originate");
    let login = h.lose_and_reconnect_to_login();
    assert_eq!(login.get_str("Events"), Some("system,call"));
    let out = h.feed(&scripted::login_ok(id_of(&login)));
    assert!(
        matches!(out.last(), Some(Out::Ready(_))),
        "no filter to re-apply: {out:?}"
    );
    assert!(h.inbox_actions().is_empty(), "{:?}", h.inbox_actions());
}

#[test]
fn a_filter_refused_because_asterisk_is_shutting_down_is_kept_for_the_next_login() {
    // Asterisk refuses every action while it shuts down: the filter itself was fine, and
    // the restarted server must get it again.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let filter = h.client.add_filter(h.now, "Event: Hangup").unwrap();
    h.drain();
    h.take("Filter");
    h.feed(&scripted::error(
        filter.as_str(),
        "Asterisk is shutting down",
    ));
    let login = h.lose_and_reconnect_to_login();
    h.feed(&scripted::login_ok(id_of(&login)));
    let reapplied = h.take("Filter");
    assert_eq!(reapplied.get_str("Filter"), Some("Event: Hangup"));
}

#[test]
fn an_event_class_asterisk_would_ignore_is_refused_at_build_and_at_run_time() {
    // Asterisk ignores a class name it does not know without a word: `calls` or `Call`
    // would ask for nothing at all.
    for typo in ["calls", "system,Call", "agent,queue"] {
        let err = base().events(typo).build().unwrap_err();
        assert!(err.to_string().contains("no event class"), "{typo}: {err}");
    }
    for fine in ["on", "off", "0", "7", "system,call,dialplan", "all"] {
        assert!(base().events(fine).build().is_ok(), "{fine}");
    }
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let r = h.client.set_event_mask(h.now, "user,Agent");
    assert!(
        matches!(&r, Err(SendError::UnknownEventClass(c)) if c == "Agent"),
        "{r:?}"
    );
    assert!(h.take_all().is_empty(), "nothing written");
    assert!(h.client.set_event_mask(h.now, "user,agent").is_ok());
}

// ----- probe scenarios: login during a shutdown, MD5 challenges -------------------------------

/// The outputs of a session ended by the server's shutdown: the transport closed, then a
/// reconnect scheduled (returned), not a final close.
fn shut_down_then_retried(out: &[Out]) -> Instant {
    match out {
        [Out::Close, Out::Disconnected(DisconnectReason::ServerShutdown, Some(at))] => *at,
        other => panic!("expected Close + Disconnected(ServerShutdown), got {other:?}"),
    }
}

#[test]
fn a_login_refused_because_asterisk_is_shutting_down_is_a_shutdown_retried_with_backoff() {
    // Asterisk refuses every action while it shuts down, Login included, and keeps the
    // connection open: not a bad password, so not a final LoginRejected.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.connected();
    h.feed(BANNER);
    let login = h.take("Login");
    let out = h.feed(&scripted::error(id_of(&login), "Asterisk is shutting down"));
    let retry = shut_down_then_retried(&out);
    assert!(!h.client.is_closed());
    h.advance_to(retry);
    h.ready();
    let s = h.client.stats();
    assert_eq!(
        s.disconnect_count(ami_proto::DisconnectKind::ServerShutdown),
        1
    );
    assert_eq!(
        s.disconnect_count(ami_proto::DisconnectKind::LoginRejected),
        0
    );
}

#[test]
fn login_already_in_use_after_a_reconnect_is_retried_with_backoff_not_final() {
    // allowmultiplelogin=no: the server still holds the half-open session a network fault
    // left behind, and refuses the reconnect's Login until it notices. That clears.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let out = h.eof();
    let Some(Out::Disconnected(DisconnectReason::Eof, Some(retry))) = out.last().cloned() else {
        panic!("{out:?}")
    };
    h.advance_to(retry);
    h.connected();
    h.feed(BANNER);
    let login = h.take("Login");
    let mut out = h.feed(&scripted::error(id_of(&login), "Login Already In Use"));
    out.extend(h.eof());
    let retry = match &out[..] {
        [.., Out::Disconnected(DisconnectReason::LoginRejected { message }, Some(at))]
            if message == "Login Already In Use" =>
        {
            *at
        }
        other => panic!("expected a retried LoginRejected, got {other:?}"),
    };
    assert!(!h.client.is_closed());
    h.advance_to(retry);
    h.ready();
    assert_eq!(
        h.client
            .stats()
            .disconnect_count(ami_proto::DisconnectKind::LoginRejected),
        1
    );
}

#[test]
fn a_challenge_refused_as_login_already_in_use_is_retried_and_a_bad_password_is_not() {
    let (mut h, c) = md5_challenged();
    let out = h.feed(&scripted::error(id_of(&c), "Login Already In Use"));
    assert!(
        matches!(
            out.last(),
            Some(Out::Disconnected(
                DisconnectReason::LoginRejected { .. },
                Some(_)
            ))
        ),
        "{out:?}"
    );
    assert!(!h.client.is_closed());
    let (mut h, c) = md5_challenged();
    let out = h.feed(&scripted::error(id_of(&c), "Authentication failed"));
    assert!(
        matches!(
            out.last(),
            Some(Out::Closed(DisconnectReason::LoginRejected { .. }))
        ),
        "{out:?}"
    );
}

/// A client logging in with MD5, connected and past the banner: its Challenge action.
fn md5_challenged() -> (Harness, ami_proto::Message) {
    let mut h = Harness::new(
        base().auth(AuthMethod::Md5).build().unwrap(),
        Instant::now(),
    );
    h.connected();
    h.feed(BANNER);
    let c = h.take("Challenge");
    (h, c)
}

#[test]
fn a_challenge_refused_because_asterisk_is_shutting_down_is_a_shutdown_too() {
    let (mut h, c) = md5_challenged();
    let out = h.feed(&scripted::error(id_of(&c), "Asterisk is shutting down"));
    shut_down_then_retried(&out);
}

/// Asterisk's MD5 key for `challenge` (bytes as sent) and the test secret.
fn md5_key(challenge: &[u8]) -> String {
    use md5::{Digest, Md5};
    let mut input = challenge.to_vec();
    input.extend_from_slice(SECRET.as_bytes());
    Md5::digest(&input)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn an_md5_challenge_that_is_not_utf8_is_hashed_as_the_bytes_the_server_sent() {
    // Asterisk hashes its challenge as a C string, bytes as they are; so does the client,
    // instead of calling a challenge it cannot read as text a rejected login.
    let (mut h, c) = md5_challenged();
    let challenge = b"\xff\xfe\xe9\x00abc";
    let mut reply = format!(
        "Response: Success\r\nActionID: {}\r\nChallenge: ",
        id_of(&c)
    )
    .into_bytes();
    reply.extend_from_slice(challenge);
    reply.extend_from_slice(b"\r\n\r\n");
    let out = h.feed(&reply);
    assert!(out.is_empty(), "{out:?}");
    let login = h.take("Login");
    assert_eq!(login.get_str("AuthType"), Some("MD5"));
    assert_eq!(login.get_str("Key"), Some(md5_key(challenge).as_str()));
    let out = h.feed(&scripted::login_ok(id_of(&login)));
    assert!(matches!(out.last(), Some(Out::Ready(_))), "{out:?}");
}

#[test]
fn a_challenge_answer_without_a_challenge_says_so_in_the_rejection() {
    let (mut h, c) = md5_challenged();
    let out = h.feed(&msg(&[("Response", "Success"), ("ActionID", id_of(&c))]));
    let Some(Out::Closed(DisconnectReason::LoginRejected { message })) = out.last() else {
        panic!("{out:?}")
    };
    assert!(message.contains("no challenge"), "{message:?}");
    // What comes after the rejection says why the client is closed.
    let refused = h.try_send(Action::new("Ping"));
    assert!(
        matches!(
            &refused,
            Err(SendError::Closed {
                reason: DisconnectReason::LoginRejected { message: m }
            }) if m.contains("no challenge")
        ),
        "{refused:?}"
    );
    let said = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        said.starts_with("client is closed (login rejected: "),
        "{said}"
    );
}

#[test]
fn a_challenge_answer_with_an_empty_challenge_is_a_rejection_not_hashed() {
    // Nothing to hash: a key made of the secret alone would be a login the server never
    // asked for.
    let (mut h, c) = md5_challenged();
    let out = h.feed(&msg(&[
        ("Response", "Success"),
        ("ActionID", id_of(&c)),
        ("Challenge", ""),
    ]));
    let Some(Out::Closed(DisconnectReason::LoginRejected { message })) = out.last() else {
        panic!("{out:?}")
    };
    assert!(message.contains("no challenge"), "{message:?}");
    assert!(h.inbox_actions().is_empty(), "{:?}", h.inbox_actions());
}

// ----- probe scenario filter_silent ----------------------------------------------------------

#[test]
fn a_filter_the_server_never_answers_delays_ready_by_the_login_timeout_and_fails_nothing() {
    let t0 = Instant::now();
    let cfg = base()
        .filter("Event: Newchannel")
        .login_timeout(secs(10))
        .action_timeout(secs(30))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    assert!(h.login().is_empty(), "not Ready before the filter");
    h.take("Filter");
    let out = h.advance(secs(10));
    assert!(matches!(&out[..], [Out::Ready(_)]), "{out:?}");
    // Its own deadline passing later changes nothing.
    assert!(h.advance(secs(30)).is_empty());
    assert!(h.client.is_ready());
    let s = h.client.stats();
    assert_eq!(s.disconnects_by_reason.total(), 0);
    assert_eq!(s.logins, 1);
}

#[test]
fn a_filter_refused_after_the_login_timeout_gave_up_on_it_counts_as_failed_once() {
    let t0 = Instant::now();
    let cfg = base()
        .filter("Event: Newchannel")
        .login_timeout(secs(10))
        .action_timeout(secs(30))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    assert!(h.login().is_empty(), "not Ready before the filter");
    let filter = h.take("Filter");
    let out = h.advance(secs(10));
    assert!(matches!(&out[..], [Out::Ready(_)]), "{out:?}");
    assert_eq!(h.client.stats().filters_failed, 1, "given up on");
    // Its refusal, within its own deadline: the same failure, already counted.
    h.feed(&permission_denied(id_of(&filter)));
    assert_eq!(h.client.stats().filters_failed, 1);
    assert!(h.client.is_ready());
}

#[test]
fn a_filter_whose_deadline_passes_before_the_login_timeout_counts_as_done() {
    let t0 = Instant::now();
    let cfg = base()
        .filter("Event: Newchannel")
        .filter("Event: Hangup")
        .login_timeout(secs(10))
        .action_timeout(secs(2))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    assert!(h.login().is_empty());
    let filters = h.take_all();
    assert_eq!(filters.len(), 2);
    // One answered, one never.
    assert!(h.feed(&success(id_of(&filters[0]), "ok")).is_empty());
    let out = h.advance(secs(2));
    assert!(matches!(&out[..], [Out::Ready(_)]), "{out:?}");
    assert_eq!(h.client.stats().filters_failed, 1, "the unanswered one");
    assert!(h.advance(secs(20)).is_empty());
    assert_eq!(h.client.stats().disconnects_by_reason.total(), 0);
}

// ----- probe scenario originate_dup --------------------------------------------------------------

#[test]
fn a_duplicate_response_to_an_originate_waiting_for_its_follow_up_is_counted_and_reported() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let orig = h.send(async_originate(30_000));
    h.take("Originate");
    h.feed(&originate_queued(orig.as_str()));
    h.feed(&originate_queued(orig.as_str()));
    h.feed(&originate_response(orig.as_str(), true));
    assert!(h.outcome(&orig).is_ok());
    let s = h.client.stats();
    assert_eq!((s.unmatched, s.discarded), (1, 1));
    assert_eq!(
        labels(&h.events()),
        ["ready", "Discarded { reason: UnmatchedResponse, count: 1 }"]
    );
}

// ----- probe scenario shutdown -------------------------------------------------------------------

#[test]
fn a_connection_reset_after_event_shutdown_is_a_server_shutdown() {
    // Asterisk closing with unread pipelined actions resets the connection.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    h.feed(&msg(&[
        ("Event", "Shutdown"),
        ("Privilege", "system,all"),
        ("Shutdown", "Cleanly"),
        ("Restart", "False"),
    ]));
    let out = h.input(Input::TransportError(std::io::ErrorKind::ConnectionReset));
    shut_down_then_retried(&out);
}

// ----- action names ------------------------------------------------------------------------------

#[test]
fn an_action_name_with_blanks_or_controls_is_refused_before_anything_is_queued() {
    // Asterisk keeps a value's trailing blanks: `Action: Ping ` is an unknown command.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    for bad in [
        "Ping ",
        " Ping",
        "Ping\t",
        "Core Show Channels",
        "Ping\u{a0}",
        "Pi\x07ng",
    ] {
        let r = h.try_send(Action::new(bad));
        assert!(
            matches!(
                &r,
                Err(SendError::Invalid(EncodeError::InvalidActionName { .. }))
            ),
            "{bad:?}: {r:?}"
        );
        let e = r.unwrap_err().to_string();
        assert!(e.contains("whitespace"), "{e}");
    }
    assert_eq!(h.client.stats().pending, 0);
    h.ready();
    assert_eq!(h.inbox_actions(), Vec::<String>::new(), "only the Login");
}

// ----- probe scenario list_endless ---------------------------------------------------------------

#[test]
fn items_of_an_overflowed_list_are_dropped_for_as_long_as_they_keep_coming() {
    let t0 = Instant::now();
    let cfg = base()
        .max_list_items(2)
        .action_timeout(secs(5))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let list = h.send(Action::new("CoreShowChannels"));
    h.take("CoreShowChannels");
    h.feed(&list_start(list.as_str()));
    for n in 1..=3 {
        h.feed(&list_item(list.as_str(), n));
    }
    assert!(matches!(
        h.outcome(&list),
        Err(ActionError::ListOverflow { items: 2, .. })
    ));
    // An endless list: one item a second for far longer than the grace period.
    for n in 4..=40 {
        h.advance(secs(1));
        h.feed(&list_item(list.as_str(), n));
    }
    assert_eq!(h.client.stats().list_items_dropped, 38);
    assert_eq!(
        labels(&h.events()),
        ["ready"],
        "no item leaks into the stream"
    );
    assert_eq!(
        h.client.stats().in_flight,
        1,
        "the server is still busy with it"
    );
    // Once they stop, the entry goes one grace period after the last one.
    h.advance(secs(4));
    assert_eq!(h.client.stats().in_flight, 1);
    h.advance(secs(2));
    assert_eq!(h.client.stats().in_flight, 0);
}

// ----- conformance: actions whose data comes in a follow-up event --------------------------

#[test]
fn faxstats_and_faxsession_complete_with_their_follow_up_event_not_the_stream() {
    // res_fax acknowledges ("FAXStats event will follow") and writes the data in an event
    // with the action's ActionID right after: the caller asked for that data.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    h.events();
    let stats = h.send(Action::new("FAXStats"));
    h.take("FAXStats");
    let out = h.feed(&success(stats.as_str(), "FAXStats event will follow"));
    assert!(out.is_empty(), "the data is still to come: {out:?}");
    let event = format!(
        "Event: FAXStats\r\nActionID: {stats}\r\nCurrentSessions: 0\r\nReservedSessions: 0\r\n\
         TransmitAttempts: 3\r\nReceiveAttempts: 2\r\nCompletedFAXes: 4\r\nFailedFAXes: 1\r\n\r\n"
    );
    let out = h.feed(event.as_bytes());
    let [Out::Completed(id, Ok(r))] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(id, &stats);
    let data = r.follow_up().expect("the FAXStats event");
    assert_eq!(data.event(), Some("FAXStats"));
    assert_eq!(data.get_str("CompletedFAXes"), Some("4"));
    assert!(
        h.events().is_empty(),
        "the action's data is not an event for the stream"
    );

    // FAXSession: the same shape; a session that does not exist is a plain error.
    let session = h.send(Action::new("FAXSession").field("SessionNumber", "7"));
    h.take("FAXSession");
    let mut bytes = success(session.as_str(), "FAXSession event will follow");
    bytes.extend_from_slice(
        format!("Event: FAXSession\r\nActionID: {session}\r\nSessionNumber: 7\r\nOperation: receive\r\n\r\n")
            .as_bytes(),
    );
    let out = h.feed(&bytes);
    assert!(
        matches!(&out[..], [Out::Completed(_, Ok(r))]
            if r.follow_up().and_then(|e| e.get_str("SessionNumber")) == Some("7")),
        "{out:?}"
    );
    let missing = h.send(Action::new("FAXSession").field("SessionNumber", "8"));
    h.take("FAXSession");
    let out = h.feed(&scripted::error(missing.as_str(), "Session not found"));
    assert!(
        matches!(&out[..], [Out::Completed(_, Err(ActionError::Server(_)))]),
        "{out:?}"
    );
    assert!(h.events().is_empty());
}

#[test]
fn a_follow_up_event_that_never_comes_times_out_in_the_follow_up_phase() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().action_timeout(secs(5)).build().unwrap(), t0);
    h.ready();
    let stats = h.send(Action::new("FAXStats"));
    h.take("FAXStats");
    h.feed(&success(stats.as_str(), "FAXStats event will follow"));
    let out = h.advance(secs(6));
    assert!(
        out.iter().any(|o| matches!(o,
            Out::Completed(id, Err(ActionError::TimedOut { phase: ami_proto::Phase::FollowUp, .. }))
                if *id == stats)),
        "{out:?}"
    );
}

#[test]
fn iaxnetstats_whose_raw_text_answer_has_no_action_id_is_refused_before_sending() {
    // chan_iax2 answers it with bare text lines and a blank line: no Response, no ActionID.
    // Sent, it could only time out; refused, the caller learns what to send instead.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let refused = h.try_send(Action::new("IAXnetstats"));
    assert_eq!(
        refused,
        Err(SendError::UnmatchableAnswer("IAXnetstats".to_string()))
    );
    let said = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(said.contains("iax2 show netstats"), "{said}");
    assert!(h.inbox.is_empty(), "nothing written");
}

#[test]
fn queues_whose_raw_text_answer_has_no_action_id_is_refused_before_sending() {
    // Asterisk 13 and 14 answer it with the `queue show` table and a blank line
    // (13.38.3 apps/app_queue.c:manager_queues_show): no Response, no ActionID, so it could
    // only time out; 15 and later do not know it. Refused, the caller learns what to send.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let refused = h.try_send(Action::new("queues"));
    assert_eq!(
        refused,
        Err(SendError::UnmatchableAnswer("queues".to_string()))
    );
    let said = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(said.contains("Command `queue show`"), "{said}");
    assert!(h.inbox.is_empty(), "nothing written");
}

#[test]
fn a_cancelled_faxstats_late_answer_is_swallowed_its_data_event_included() {
    // Client::cancel's doc: an action with bytes handed out "may reach the server whole ...:
    // its late response and list items are swallowed until its grace period ..., while an
    // async Originate's OriginateResponse goes to the event stream". FAXStats' answer is
    // now its response and its FAXStats event (the action's follow-up). The response, the
    // server's word that it ran, is reported once as a `LateAnswer`; the data event, its
    // caller's alone, is not.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    h.events();
    let stats = h.send(Action::new("FAXStats"));
    h.take("FAXStats");
    assert!(h.client.cancel(h.now, &stats));
    h.drain();
    let mut late = success(stats.as_str(), "FAXStats event will follow");
    late.extend_from_slice(
        format!(
            "Event: FAXStats\r\nActionID: {stats}\r\nCurrentSessions: 0\r\nReservedSessions: 0\r\n\
             TransmitAttempts: 3\r\nReceiveAttempts: 2\r\nCompletedFAXes: 4\r\nFailedFAXes: 1\r\n\r\n"
        )
        .as_bytes(),
    );
    h.feed(&late);
    let events = h.events();
    assert!(
        matches!(&events[..], [StreamItem::LateAnswer { id, .. }] if *id == stats),
        "the cancelled action's data event reached the event stream: {events:?}"
    );
}

#[test]
fn login_events_held_for_ready_are_counted_as_dropped_once_the_event_stream_is_closed() {
    let mut h = logged_in_again_with_a_filter(b"");
    h.feed(&fully_booted());
    let dropped = h.client.stats().events_dropped;
    // The FullyBooted held for Ready is freed with the queue, and counted.
    h.client.close_event_stream([]);
    assert_eq!(h.client.stats().events_dropped - dropped, 1);
    // The login's SuccessfulAuth, which comes after, is discarded as it comes, and counted.
    h.feed(&successful_auth("admin"));
    assert_eq!(h.client.stats().events_dropped - dropped, 2);
    let reapplied = h.take("Filter");
    let out = h.feed(&success(id_of(&reapplied), "ok"));
    assert!(matches!(&out[..], [Out::Ready(_)]), "{out:?}");
    assert!(h.client.poll_event().is_none(), "nothing held reaches it");
    assert_eq!(h.client.stats().events_dropped - dropped, 2);
}

#[test]
fn a_shutdown_refusal_of_an_action_already_cancelled_still_makes_the_eof_a_shutdown() {
    // Asterisk's "Asterisk is shutting down" says the server is going, whoever still waits
    // for the action it refuses: the EOF that follows is its shutdown (the reconnect's
    // reason, its counter), as it is when the caller still waits.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let id = h.send(Action::new("Redirect").field("Channel", "PJSIP/100-1"));
    h.drain();
    h.take("Redirect");
    assert!(h.client.cancel(h.now, &id));
    h.feed(&scripted::error(id.as_str(), "Asterisk is shutting down"));
    let out = h.eof();
    shut_down_then_retried(&out);
}

#[test]
fn a_shutdown_refusal_of_an_action_forgotten_after_its_grace_period_still_makes_the_eof_a_shutdown()
{
    // Past its grace period an ended action's answer matches nothing; the refusal still
    // says the server is going.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let id = h.send(Action::new("Redirect").field("Channel", "PJSIP/100-1"));
    h.drain();
    h.take("Redirect");
    // Timed out at its deadline; its entry forgotten one grace period (as long) later.
    h.advance(Duration::from_secs(5 * 60));
    assert_eq!(h.outcomes(&id).len(), 1, "it timed out");
    h.advance(Duration::from_secs(5 * 60));
    h.feed(&scripted::error(id.as_str(), "Asterisk is shutting down"));
    assert_eq!(h.client.stats().unmatched, 1, "its answer matched nothing");
    let out = h.eof();
    shut_down_then_retried(&out);
}

#[test]
fn client_debug_says_where_the_session_is() {
    let t0 = Instant::now();
    let mut client = Client::new(base().build().unwrap(), t0);
    let _ = client.poll_output();
    client.handle_input(t0, Input::Connected);
    let dbg = format!("{client:?}");
    assert!(dbg.starts_with("Client {"), "{dbg}");
    assert!(dbg.contains("state: AwaitBanner"), "{dbg}");
    assert!(dbg.contains("pending: 0"), "{dbg}");
}

#[test]
fn a_second_logoff_while_logging_off_changes_nothing_and_the_goodbye_still_closes() {
    let mut h = Harness::new(base().build().unwrap(), Instant::now());
    h.ready();
    h.client.logoff(h.now);
    h.drain();
    let logoff = h.take("Logoff");
    // Called again (a second shutdown path): no second Logoff, and the session is not cut
    // short either, so the answers still on their way arrive.
    h.client.logoff(h.now);
    let out = h.drain();
    assert!(out.is_empty(), "{out:?}");
    assert!(h.inbox_actions().is_empty(), "{:?}", h.inbox_actions());
    let out = h.feed(&goodbye(id_of(&logoff)));
    assert!(
        out.iter()
            .any(|o| matches!(o, Out::Closed(DisconnectReason::Logoff))),
        "{out:?}"
    );
}

#[test]
fn a_transport_error_reported_while_waiting_to_reconnect_ends_nothing_again() {
    let mut h = Harness::new(base().build().unwrap(), Instant::now());
    h.ready();
    let lost = h.eof();
    assert!(
        matches!(
            &lost[..],
            [
                Out::Close,
                Out::Disconnected(DisconnectReason::Eof, Some(_))
            ]
        ),
        "{lost:?}"
    );
    let disconnects = h.client.stats().disconnects_by_reason.total();
    // A late error from the socket already given up (the adapter's last read).
    let out = h.input(Input::TransportError(std::io::ErrorKind::ConnectionReset));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.client.stats().disconnects_by_reason.total(), disconnects);
}

#[test]
fn bytes_in_counts_every_byte_received() {
    let mut h = Harness::new(base().build().unwrap(), Instant::now());
    h.ready();
    let before = h.client.stats().bytes_in;
    let wire = event("Newchannel", 1);
    h.feed(&wire);
    h.feed(&wire[..7]);
    assert_eq!(h.client.stats().bytes_in - before, (wire.len() + 7) as u64);
}
