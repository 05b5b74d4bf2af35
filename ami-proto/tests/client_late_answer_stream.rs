//! A response that comes after its action ended without it (timed out before its response,
//! cancelled once written) is the server's word on what it did: it reaches the event stream
//! once, in order, as `StreamItem::LateAnswer` with the action's ID, while the action's own
//! outcome stays the error it got. A dialer told "timed out" learns whether its Redirect or
//! sync Originate ran.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/fleet_login.rs"]
mod fleet_login;
#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::fleet::{Fleet, FleetConfig, FleetOutput, Route, ServerId};
use ami_proto::{
    Action, ActionError, ActionId, ClientConfig, Input, Message, OverflowPolicy, Phase,
    SendOptions, StreamItem,
};
use fleet_login::{all_ready, client_config};
use scripted::{msg, Harness};
use std::time::{Duration, Instant};

fn ready() -> Harness {
    Harness::ready_now(9, Duration::from_secs(5))
}

fn redirect() -> Action {
    Action::new("Redirect")
        .field("Channel", "PJSIP/agent-0001")
        .field("Exten", "200")
        .field("Context", "agents")
        .field("Priority", "1")
}

fn response(result: &str, id: &ActionId, message: &str) -> Vec<u8> {
    msg(&[
        ("Response", result),
        ("ActionID", id.as_str()),
        ("Message", message),
    ])
}

/// The late answers in `items`: (id, mark, Response, Message).
fn late_answers(items: &[StreamItem]) -> Vec<(ActionId, Option<u64>, String, String)> {
    items
        .iter()
        .filter_map(|i| match i {
            StreamItem::LateAnswer { id, mark, response } => Some((
                id.clone(),
                *mark,
                response.get_str("Response").unwrap_or("").to_string(),
                response.get_str("Message").unwrap_or("").to_string(),
            )),
            _ => None,
        })
        .collect()
}

fn event(name: &str) -> Vec<u8> {
    msg(&[("Event", name), ("Privilege", "call,all")])
}

fn label(item: &StreamItem) -> String {
    match item {
        StreamItem::Event(m) => m.event().unwrap_or("?").to_string(),
        StreamItem::LateAnswer { response, .. } => {
            format!("late:{}", response.get_str("Response").unwrap_or("?"))
        }
        other => scripted::stream_label(other),
    }
}

#[test]
fn a_late_success_reaches_the_stream_in_order_with_its_action_id_and_the_action_stays_timed_out() {
    let mut h = ready();
    let before = h.client.stats().late_answers_dropped;
    let id = h.send(redirect());
    h.take("Redirect");
    h.advance(Duration::from_secs(6));
    assert!(matches!(
        h.outcome(&id),
        Err(ActionError::TimedOut {
            phase: Phase::Response,
            partial: None
        })
    ));
    h.feed(&event("Before"));
    h.feed(&response("Success", &id, "Redirect successful"));
    h.feed(&event("After"));
    let items = h.events();
    let labels: Vec<String> = items.iter().map(label).collect();
    assert_eq!(labels, ["Before", "late:Success", "After"]);
    assert_eq!(
        late_answers(&items),
        [(
            id.clone(),
            None,
            "Success".into(),
            "Redirect successful".into()
        )]
    );
    // The action's outcome is still the one it got, reported once: no synthetic success.
    assert!(matches!(h.outcome(&id), Err(ActionError::TimedOut { .. })));
    assert_eq!(h.client.stats().late_answers_dropped - before, 1);
}

#[test]
fn a_late_error_of_a_cancelled_action_reaches_the_stream_as_the_servers_error() {
    let mut h = ready();
    let id = h.send(Action::new("Hangup").field("Channel", "PJSIP/agent-0001"));
    h.take("Hangup");
    assert!(h.client.cancel(h.now, &id));
    h.feed(&response("Error", &id, "No such channel"));
    let items = h.events();
    assert_eq!(
        late_answers(&items),
        [(id.clone(), None, "Error".into(), "No such channel".into())]
    );
    assert_eq!(h.outcome(&id), &Err(ActionError::Cancelled));
    assert_eq!(h.client.stats().late_answers_dropped, 1);
}

#[test]
fn a_marked_actions_late_answer_carries_its_mark_for_callers_that_never_see_the_id() {
    let mut h = ready();
    let id = h.send_with(redirect(), SendOptions::default().with_mark(7));
    h.take("Redirect");
    h.advance(Duration::from_secs(6));
    h.feed(&response("Success", &id, "Redirect successful"));
    let items = h.events();
    let labels: Vec<String> = items.iter().map(label).collect();
    assert_eq!(labels, ["mark7", "late:Success"]);
    assert_eq!(late_answers(&items)[0].1, Some(7));
}

#[test]
fn a_late_list_start_is_reported_once_and_its_items_and_complete_stay_swallowed() {
    let mut h = ready();
    let id = h.send(Action::new("QueueStatus"));
    h.take("QueueStatus");
    h.advance(Duration::from_secs(6));
    let aid = id.as_str();
    h.feed(&msg(&[
        ("Response", "Success"),
        ("ActionID", aid),
        ("EventList", "start"),
        ("Message", "Queue status will follow"),
    ]));
    h.feed(&msg(&[("Event", "QueueMember"), ("ActionID", aid)]));
    h.feed(&msg(&[
        ("Event", "QueueStatusComplete"),
        ("ActionID", aid),
        ("EventList", "Complete"),
        ("ListItems", "1"),
    ]));
    let items = h.events();
    let labels: Vec<String> = items.iter().map(label).collect();
    assert_eq!(labels, ["late:Success"], "the start alone; items swallowed");
    let stats = h.client.stats();
    assert_eq!(stats.list_items_dropped, 1);
    assert_eq!(stats.late_answers_dropped, 2, "the start and the Complete");
}

#[test]
fn only_the_first_response_is_reported_never_one_after_an_answer_that_came_in_time() {
    let mut h = ready();
    // A list that timed out after its start: its second response ends it, late, but the
    // server's answer (the start) had come, in the outcome's `partial`.
    let list = h.send(Action::new("CoreShowChannels"));
    h.take("CoreShowChannels");
    h.feed(&msg(&[
        ("Response", "Success"),
        ("ActionID", list.as_str()),
        ("EventList", "start"),
    ]));
    h.advance(Duration::from_secs(6));
    h.feed(&response("Error", &list, "Something broke"));
    // A plain action answered twice after its timeout: the first answer only.
    let ping = h.send(Action::new("Ping"));
    h.take("Ping");
    h.advance(Duration::from_secs(6));
    h.feed(&response("Success", &ping, "Pong"));
    h.feed(&response("Success", &ping, "Pong again"));
    let items = h.events();
    let late = late_answers(&items);
    assert_eq!(late.len(), 1, "{items:?}");
    assert_eq!((&late[0].0, late[0].3.as_str()), (&ping, "Pong"));
}

#[test]
fn a_late_answer_never_crosses_a_reconnect() {
    let mut h = ready();
    // Timed out, then the session is lost: its entry goes with the connection.
    let timed_out = h.send(redirect());
    h.take("Redirect");
    h.advance(Duration::from_secs(6));
    // Written, then the session is lost before any answer: Unknown.
    let lost = h.send(Action::new("Hangup").field("Channel", "PJSIP/x"));
    h.take("Hangup");
    let login = h.lose_and_reconnect_to_login();
    h.feed(&scripted::login_ok(scripted::id_of(&login)));
    assert!(matches!(h.outcome(&lost), Err(ActionError::Unknown(_))));
    h.events();
    // A peer (or a confused proxy) echoes the old connection's answers on the new one.
    h.feed(&response("Success", &timed_out, "Redirect successful"));
    h.feed(&response("Success", &lost, "Channel Hungup"));
    let items = h.events();
    assert!(late_answers(&items).is_empty(), "{items:?}");
    assert_eq!(h.client.stats().unmatched, 2);
}

/// A Ready client whose event queue holds `cap` events under `policy`, with a Redirect
/// that timed out before its response.
fn timed_out_before_a_queue_of(cap: usize, policy: OverflowPolicy) -> (Harness, ActionId) {
    let config = ClientConfig::builder("admin", "amp111")
        .events("on")
        .seed(9)
        .ping_interval(Duration::from_secs(3600))
        .action_timeout(Duration::from_secs(5))
        .event_queue_cap(cap)
        .overflow(policy)
        .build()
        .unwrap();
    let mut h = Harness::new(config, Instant::now());
    h.ready();
    h.events();
    let id = h.send(redirect());
    h.take("Redirect");
    h.advance(Duration::from_secs(6));
    (h, id)
}

#[test]
fn a_late_answer_goes_through_the_bounded_queue_a_full_drop_newest_queue_counts_it_as_a_gap() {
    let (mut h, id) = timed_out_before_a_queue_of(1, OverflowPolicy::DropNewest);
    h.feed(&event("Fills"));
    h.feed(&response("Success", &id, "Redirect successful"));
    let labels: Vec<String> = h.events().iter().map(label).collect();
    assert_eq!(labels, ["Fills", "gap1"]);
    assert_eq!(h.client.stats().events_dropped, 1);
    assert_eq!(h.client.stats().late_answers_dropped, 1);
}

#[test]
fn drop_oldest_never_displaces_a_late_answer_for_a_newer_event() {
    let (mut h, id) = timed_out_before_a_queue_of(2, OverflowPolicy::DropOldest);
    h.feed(&response("Success", &id, "Redirect successful"));
    for n in ["E1", "E2", "E3"] {
        h.feed(&event(n));
    }
    let labels: Vec<String> = h.events().iter().map(label).collect();
    assert_eq!(labels, ["late:Success", "gap2", "E3"]);
}

// ---- fleet: the merged stream names the server of a late answer.

/// Sends a Redirect to `server` (named `name`), lets it time out, then feeds its answer:
/// the Redirect's ID and the instant the answer came.
fn redirect_answered_late(
    f: &mut Fleet,
    now: Instant,
    name: &str,
    server: ServerId,
) -> (ActionId, Instant) {
    let sent = f.send(now, Route::Server(name), redirect()).unwrap();
    let wire = f.transmit(server).to_vec();
    f.advance_transmit(server, wire.len());
    let later = now + Duration::from_secs(6);
    f.handle_timeout(later);
    while !matches!(f.poll_output(), FleetOutput::Wait(_)) {}
    let answer = response("Success", &sent.id, "Redirect successful");
    f.handle_input(later, server, Input::Received(&answer));
    (sent.id, later)
}

#[test]
fn a_fleets_late_answer_names_its_server() {
    let now = Instant::now();
    let mut f = Fleet::new(FleetConfig::default());
    f.add(now, "pbx-a", client_config()).unwrap();
    let b = f.add(now, "pbx-b", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    let (sent_id, _) = redirect_answered_late(&mut f, now, "pbx-b", b);
    let items: Vec<(String, StreamItem)> = std::iter::from_fn(|| f.poll_event())
        .map(|i| (i.server.as_str().to_string(), i.item))
        .collect();
    let late: Vec<(&str, &ActionId, &Message)> = items
        .iter()
        .filter_map(|(server, item)| match item {
            StreamItem::LateAnswer { id, response, .. } => Some((server.as_str(), id, &**response)),
            _ => None,
        })
        .collect();
    assert_eq!(late.len(), 1, "{items:?}");
    assert_eq!((late[0].0, late[0].1), ("pbx-b", &sent_id));
    assert_eq!(late[0].2.get_str("Message"), Some("Redirect successful"));
    // Held and counted as an event by its server's queue: delivered as one.
    let stats = f.stats();
    let b_stats = stats.servers.iter().find(|x| x.name.as_str() == "pbx-b");
    assert_eq!(
        b_stats.map(|x| (x.client.events_queued, x.events_delivered)),
        Some((1, 1))
    );
}

#[test]
fn a_removed_servers_queued_late_answer_is_handed_to_the_reader_as_its_marks_are() {
    let now = Instant::now();
    let mut f = Fleet::new(FleetConfig::default());
    let a = f.add(now, "pbx-a", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    let (sent_id, later) = redirect_answered_late(&mut f, now, "pbx-a", a);
    // Removed before its reader took the answer.
    assert!(f.remove(later, "pbx-a"));
    let items: Vec<(String, StreamItem)> = std::iter::from_fn(|| f.poll_event())
        .map(|i| (i.server.as_str().to_string(), i.item))
        .collect();
    assert!(
        matches!(
            &items[..],
            [(server, StreamItem::LateAnswer { id, .. })] if server == "pbx-a" && *id == sent_id
        ),
        "{items:?}"
    );
}

/// An answer mark reaches the late answer as a mark does, but puts nothing in the event
/// stream and takes no place in the event queue: a consumer that stops reading events
/// cannot get such actions refused (the NATS bridge marks every action so).
#[test]
fn an_answer_mark_reaches_the_late_answer_without_a_stream_mark_or_a_place_in_the_queue() {
    let config = ClientConfig::builder("admin", "amp111")
        .events("on")
        .seed(9)
        .ping_interval(Duration::from_secs(3600))
        .action_timeout(Duration::from_secs(5))
        .event_queue_cap(2)
        .build()
        .unwrap();
    let mut h = Harness::new(config, Instant::now());
    h.ready();
    h.events();
    // Twice the event queue's cap, answered in time, the stream never read meanwhile.
    for n in 0..4 {
        let id = h.send_with(redirect(), SendOptions::default().with_answer_mark(n));
        h.take("Redirect");
        h.feed(&response("Success", &id, "Redirect successful"));
        assert!(h.outcome(&id).is_ok());
    }
    let late = h.send_with(redirect(), SendOptions::default().with_answer_mark(41));
    h.take("Redirect");
    h.advance(Duration::from_secs(6));
    assert!(matches!(
        h.outcome(&late),
        Err(ActionError::TimedOut {
            phase: Phase::Response,
            ..
        })
    ));
    h.feed(&response("Success", &late, "Redirect successful"));
    let items = h.events();
    assert!(
        !items.iter().any(|i| matches!(i, StreamItem::Mark { .. })),
        "{items:?}"
    );
    assert_eq!(
        late_answers(&items),
        [(
            late.clone(),
            Some(41),
            "Success".into(),
            "Redirect successful".into()
        )]
    );
}

// ---- `Client::unclaimed`: an outcome its caller never took (an async future dropped after
// the answer came, before it was polled) is the server's word all the same.

/// A marked Redirect answered in time; its outcome and the stream drained of its mark.
fn answered_in_time(
    h: &mut Harness,
    result: &str,
    message: &str,
) -> (ActionId, ami_proto::Outcome) {
    let id = h.send_with(redirect(), SendOptions::default().with_mark(7));
    h.take("Redirect");
    h.feed(&response(result, &id, message));
    let outcome = h.outcome(&id).clone();
    let labels: Vec<String> = h.events().iter().map(label).collect();
    assert_eq!(labels, ["mark7"]);
    (id, outcome)
}

#[test]
fn an_unclaimed_success_reaches_the_stream_as_a_late_answer_with_its_id_and_mark() {
    let mut h = ready();
    let (id, outcome) = answered_in_time(&mut h, "Success", "Redirect successful");
    assert!(outcome.is_ok(), "{outcome:?}");
    let queued = h.client.stats().events_queued;
    h.client.unclaimed(h.now, &id, Some(7), outcome);
    let items = h.events();
    assert_eq!(
        late_answers(&items),
        [(
            id.clone(),
            Some(7),
            "Success".into(),
            "Redirect successful".into()
        )],
        "{items:?}"
    );
    assert_eq!(items.len(), 1, "{items:?}");
    // Queued as an event is; no late answer on the wire, so none counted as one.
    assert_eq!(h.client.stats().events_queued - queued, 1);
    assert_eq!(h.client.stats().late_answers_dropped, 0);
}

#[test]
fn an_unclaimed_server_error_reaches_the_stream_as_a_late_answer() {
    let mut h = ready();
    let (id, outcome) = answered_in_time(&mut h, "Error", "Channel specified does not exist");
    assert!(
        matches!(outcome, Err(ActionError::Server(_))),
        "{outcome:?}"
    );
    h.client.unclaimed(h.now, &id, Some(7), outcome);
    let items = h.events();
    assert_eq!(
        late_answers(&items),
        [(
            id.clone(),
            Some(7),
            "Error".into(),
            "Channel specified does not exist".into()
        )],
        "{items:?}"
    );
}

#[test]
fn an_unclaimed_timeout_holds_no_answer_and_reaches_nothing() {
    let mut h = ready();
    let id = h.send_with(redirect(), SendOptions::default().with_mark(7));
    h.take("Redirect");
    h.advance(Duration::from_secs(6));
    let outcome = h.outcome(&id).clone();
    assert!(matches!(outcome, Err(ActionError::TimedOut { .. })));
    h.events();
    h.client.unclaimed(h.now, &id, Some(7), outcome);
    let items = h.events();
    assert!(items.is_empty(), "{items:?}");
}

/// An outcome that failed after the server's answer came still holds that answer: the
/// list's `start` (its items were the caller's alone), or an async Originate's acceptance.
#[test]
fn an_unclaimed_list_that_timed_out_after_its_start_reports_the_start_as_a_late_answer() {
    let mut h = ready();
    let id = h.send_with(
        Action::new("CoreShowChannels"),
        SendOptions::default().with_mark(7),
    );
    h.take("CoreShowChannels");
    h.feed(&scripted::list_start(id.as_str()));
    h.feed(&scripted::list_item(id.as_str(), 1));
    h.advance(Duration::from_secs(6));
    let outcome = h.outcome(&id).clone();
    assert!(
        matches!(
            outcome,
            Err(ActionError::TimedOut {
                phase: Phase::List,
                partial: Some(_)
            })
        ),
        "{outcome:?}"
    );
    h.events();
    h.client.unclaimed(h.now, &id, Some(7), outcome);
    let items = h.events();
    assert_eq!(
        late_answers(&items),
        [(
            id.clone(),
            Some(7),
            "Success".into(),
            "Channels will follow".into()
        )],
        "{items:?}"
    );
    assert_eq!(items.len(), 1, "the start alone, not the items: {items:?}");
}

#[test]
fn an_unclaimed_incomplete_list_reports_its_start_as_a_late_answer() {
    let limits = ami_proto::DecoderLimits::builder()
        .max_line_len(512)
        .max_message_len(1024)
        .build()
        .unwrap();
    let config = ClientConfig::builder("admin", "amp111")
        .events("on")
        .seed(9)
        .ping_interval(Duration::from_secs(3600))
        .decoder(limits)
        .build()
        .unwrap();
    let mut h = Harness::new(config, Instant::now());
    h.ready();
    h.events();
    let id = h.send_with(
        Action::new("CoreShowChannels"),
        SendOptions::default().with_mark(7),
    );
    h.take("CoreShowChannels");
    let big = "x".repeat(400);
    h.feed(&scripted::list_start(id.as_str()));
    // Over max_message_len: the decoder drops it, so the list is not whole.
    h.feed(&msg(&[
        ("Event", "CoreShowChannel"),
        ("ActionID", id.as_str()),
        ("Channel", &big),
        ("Context", &big),
        ("Application", &big),
    ]));
    h.feed(&scripted::list_complete(id.as_str(), 1));
    let outcome = h.outcome(&id).clone();
    assert!(
        matches!(outcome, Err(ActionError::ListIncomplete { dropped: 1, .. })),
        "{outcome:?}"
    );
    h.events();
    h.client.unclaimed(h.now, &id, Some(7), outcome);
    let items = h.events();
    assert_eq!(
        late_answers(&items),
        [(
            id.clone(),
            Some(7),
            "Success".into(),
            "Channels will follow".into()
        )],
        "{items:?}"
    );
}

#[test]
fn an_unclaimed_async_originate_that_timed_out_waiting_for_its_follow_up_reports_its_acceptance() {
    let mut h = ready();
    let id = h.send_with(
        scripted::async_originate(1_000),
        SendOptions::default().with_mark(9),
    );
    h.take("Originate");
    h.feed(&scripted::originate_queued(id.as_str()));
    h.advance(Duration::from_secs(60));
    let outcome = h.outcome(&id).clone();
    assert!(
        matches!(
            outcome,
            Err(ActionError::TimedOut {
                phase: Phase::FollowUp,
                partial: Some(_)
            })
        ),
        "{outcome:?}"
    );
    h.events();
    h.client.unclaimed(h.now, &id, Some(9), outcome);
    let items = h.events();
    assert_eq!(
        late_answers(&items),
        [(
            id.clone(),
            Some(9),
            "Success".into(),
            "Originate successfully queued".into()
        )],
        "{items:?}"
    );
}

#[test]
fn an_unclaimed_answer_of_the_previous_connection_never_reaches_the_new_sessions_stream() {
    let mut h = ready();
    let (id, outcome) = answered_in_time(&mut h, "Success", "Redirect successful");
    let login = h.lose_and_reconnect_to_login();
    h.feed(&scripted::login_ok(scripted::id_of(&login)));
    h.events();
    h.client.unclaimed(h.now, &id, Some(7), outcome);
    let items = h.events();
    assert!(late_answers(&items).is_empty(), "{items:?}");
}

#[test]
fn an_unclaimed_async_originates_answer_comes_before_its_originate_response() {
    let mut h = ready();
    let id = h.send_with(
        scripted::async_originate(30_000),
        SendOptions::default().with_mark(9),
    );
    h.take("Originate");
    h.feed(&scripted::originate_queued(id.as_str()));
    h.feed(&scripted::originate_response(id.as_str(), false));
    let outcome = h.outcome(&id).clone();
    assert!(
        matches!(outcome, Err(ActionError::Server(_))),
        "{outcome:?}"
    );
    h.events();
    h.client.unclaimed(h.now, &id, Some(9), outcome);
    let items = h.events();
    let labels: Vec<String> = items.iter().map(label).collect();
    assert_eq!(labels, ["late:Success", "OriginateResponse"]);
    assert_eq!(
        late_answers(&items),
        [(
            id.clone(),
            Some(9),
            "Success".into(),
            "Originate successfully queued".into()
        )]
    );
}

#[test]
fn a_fleets_unclaimed_answer_names_its_server() {
    let now = Instant::now();
    let mut f = Fleet::new(FleetConfig::default());
    f.add(now, "pbx-a", client_config()).unwrap();
    let b = f.add(now, "pbx-b", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    let sent = f
        .send_with(
            now,
            Route::Server("pbx-b"),
            redirect(),
            SendOptions::default().with_mark(4),
        )
        .unwrap();
    let wire = f.transmit(b).to_vec();
    f.advance_transmit(b, wire.len());
    let answer = response("Success", &sent.id, "Redirect successful");
    f.handle_input(now, b, Input::Received(&answer));
    let outcome = std::iter::from_fn(|| match f.poll_output() {
        FleetOutput::Wait(_) => None,
        other => Some(other),
    })
    .find_map(|o| match o {
        FleetOutput::Completed { id, outcome, .. } if id == sent.id => Some(outcome),
        _ => None,
    })
    .expect("the Redirect completed");
    assert!(outcome.is_ok(), "{outcome:?}");
    while f.poll_event().is_some() {}
    f.unclaimed(now, "pbx-b", &sent.id, Some(4), outcome);
    let items: Vec<(String, StreamItem)> = std::iter::from_fn(|| f.poll_event())
        .map(|i| (i.server.as_str().to_string(), i.item))
        .collect();
    assert!(
        matches!(
            &items[..],
            [(server, StreamItem::LateAnswer { id, mark: Some(4), .. })]
                if server == "pbx-b" && *id == sent.id
        ),
        "{items:?}"
    );
}

/// A fleet reader that goes away with a late answer taken out of the merged stream and
/// never read (`close_event_stream(unread)`, as ami-async's `FleetEvents` does when
/// dropped with a batch in hand) loses that answer: counted as a dropped event of its
/// server, as `Client::close_event_stream` counts it for a session's reader.
#[test]
fn a_late_answer_a_fleet_reader_took_and_never_read_is_counted_dropped_on_its_server() {
    let now = Instant::now();
    let mut f = Fleet::new(FleetConfig::default());
    let a = f.add(now, "pbx-a", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    let _ = redirect_answered_late(&mut f, now, "pbx-a", a);
    // The stream was drained before the action: the late answer is all it holds.
    let taken: Vec<_> = std::iter::from_fn(|| f.poll_queued()).collect();
    assert_eq!(taken.len(), 1);
    let before = f.stats().servers[0].client.events_dropped;
    f.close_event_stream(taken);
    assert_eq!(
        f.stats().servers[0].client.events_dropped - before,
        1,
        "the late answer handed back unread is counted dropped"
    );
}

/// A large Command answer that came after its action timed out, on `server`, queued for the
/// reader: `fields` Output lines of nearly 1 MiB each.
fn large_late_answer(f: &mut Fleet, now: Instant, name: &str, server: ServerId, fields: usize) {
    let sent = f
        .send(
            now,
            Route::Server(name),
            Action::new("Command").field("Command", "core show channels verbose"),
        )
        .unwrap();
    let wire = f.transmit(server).to_vec();
    f.advance_transmit(server, wire.len());
    f.handle_timeout(now + Duration::from_secs(6));
    while !matches!(f.poll_output(), FleetOutput::Wait(_)) {}
    let line = "x".repeat((1 << 20) - 64);
    let mut answer = format!(
        "Response: Success\r\nActionID: {}\r\nMessage: Command output follows\r\n",
        sent.id.as_str()
    );
    for _ in 0..fields {
        answer += &format!("Output: {line}\r\n");
    }
    answer += "\r\n";
    f.handle_input(
        now + Duration::from_secs(6),
        server,
        Input::Received(answer.as_bytes()),
    );
}

/// Late answers of removed servers wait for the reader outside every server's queue (no
/// `event_queue_bytes` holds them any more): what they keep alive there has a byte cap of
/// its own, not only `MAX_REMOVAL_GAPS` of them (a thousand 16 MiB Command answers), and one
/// past it is dropped, counted and logged as a notice past the count is.
#[test]
fn late_answers_of_removed_servers_waiting_for_the_reader_are_capped_in_bytes() {
    let now = Instant::now();
    let mut f = Fleet::new(FleetConfig::default());
    let names: Vec<String> = (0..6).map(|i| format!("pbx-{i}")).collect();
    let ids: Vec<ServerId> = names
        .iter()
        .map(|n| f.add(now, n, client_config()).unwrap())
        .collect();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    for (name, &id) in names.iter().zip(&ids) {
        // 8 MiB each: every server's queue (16 MiB by default) holds its own.
        large_late_answer(&mut f, now, name, id, 8);
        assert!(f.remove(now + Duration::from_secs(6), name));
    }
    let orphaned: Vec<usize> = std::iter::from_fn(|| f.poll_event())
        .filter_map(|i| match i.item {
            StreamItem::LateAnswer { response, .. } => Some(response.retained_bytes()),
            _ => None,
        })
        .collect();
    let held: usize = orphaned.iter().sum();
    assert!(
        held <= ami_proto::fleet::MAX_REMOVAL_BYTES,
        "{} late answers of removed servers held {held} bytes",
        orphaned.len()
    );
    assert!(!orphaned.is_empty(), "the first still reaches the reader");
    assert_eq!(
        f.stats().removal_gaps_dropped,
        (names.len() - orphaned.len()) as u64,
        "every one not kept is counted"
    );
}
