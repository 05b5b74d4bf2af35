//! The call tracker driven by a real [`Client`] against a scripted server: events, answers
//! and their stream marks as the client really produces them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: a real epoch for virtual time, a fixture read from disk

#[path = "support/scripted.rs"]
mod scripted;
#[path = "support/tracker.rs"]
mod tracker;

use ami_proto::calls::{
    CallEnd, CallTracker, CallUpdate, ChannelState, EndedCall, Ending, OriginateState,
    OriginateTag, ResyncReport, StaleReason, TrackerConfig, MAX_ENDED_PER_CALL,
};
use ami_proto::{Action, Decoder, DecoderLimits, DisconnectReason, Frame};
use scripted::{id_of, Out};
use std::time::{Duration, Instant};
use tracker::{block, ev, list, T};

impl T {
    /// Loses the link and logs in again.
    fn reconnect(&mut self) {
        let out = self.h.eof();
        let Some(Out::Disconnected(_, Some(at))) = out.last().cloned() else {
            panic!("{out:?}")
        };
        self.pump();
        self.h.advance_to(at);
        self.h.ready();
        self.pump();
    }
}

#[test]
fn a_call_is_followed_from_newchannel_to_hangup_with_cause_and_timings() {
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 4, ""));
    let created = t.h.now;
    t.feed(&ev("Newchannel", "1.2", "1.1", 0, ""));
    t.feed(&ev("Newstate", "1.2", "1.1", 6, ""));
    let answered = t.h.now;
    t.feed(&ev("BridgeEnter", "1.2", "1.1", 6, "BridgeUniqueid: b-1"));
    assert_eq!(t.tr.channel("1.2").unwrap().bridge.as_deref(), Some("b-1"));
    assert_eq!(t.tr.calls().count(), 1);
    assert_eq!(t.tr.call("1.1").unwrap().len(), 2);
    t.feed(&ev(
        "Hangup",
        "1.2",
        "1.1",
        6,
        "Cause: 17\nCause-txt: User busy",
    ));
    assert!(t.ended().is_empty(), "one channel of the call is still up");
    t.feed(&ev(
        "Hangup",
        "1.1",
        "1.1",
        6,
        "Cause: 16\nCause-txt: Normal Clearing",
    ));
    let ended = t.ended();
    assert_eq!(ended.len(), 1);
    let call = &ended[0];
    assert_eq!(call.linkedid, "1.1");
    assert_eq!(call.cause(), Some(16), "the originating channel's cause");
    assert_eq!(call.created(), Some(created));
    assert_eq!(call.answered(), Some(answered));
    assert_eq!(call.ended(), CallEnd::Seen(t.h.now));
    assert!(!call.unobserved());
    assert_eq!(t.tr.channels().len(), 0);
}

#[test]
fn a_real_capture_of_25_calls_leaves_nothing_behind() {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/asterisk-22.10.1/event_stream_20s.raw"
    ))
    .unwrap();
    let mut t = T::new();
    t.live();
    // The capture's own banner and login answer are not for this client: skip to the
    // first event.
    let at = raw.windows(7).position(|w| w == b"Event: ").unwrap();
    let mut d = Decoder::without_banner(DecoderLimits::default());
    d.feed(&raw[at..]);
    let (mut newchannels, mut bridged) = (0, 0);
    while let Some(frame) = d.decode() {
        let Ok(Frame::Message(m)) = frame else {
            continue;
        };
        let name = m.event().unwrap_or("").to_string();
        if m.action_id().is_some() || m.response().is_some() && name.is_empty() {
            continue;
        }
        t.feed(&wire(&m));
        if name == "Newchannel" {
            newchannels += 1;
        }
        if name == "BridgeEnter" {
            let uid = m.get_str("Uniqueid").unwrap();
            assert!(t.tr.channel(uid).unwrap().bridge.is_some());
            bridged += 1;
        }
    }
    let ended = t.ended();
    assert_eq!(newchannels, 50);
    assert_eq!(bridged, 10);
    assert_eq!(t.tr.channels().len(), 0, "every channel hung up");
    let channels: usize = ended.iter().map(|c| c.channels.len()).sum();
    assert_eq!(channels, 50);
    assert!(ended.iter().all(|c| c.cause().is_some() && !c.unobserved()));
    assert!(!t.tr.is_stale());
}

/// The last resync report: continued, ended unobserved, adopted, replayed.
fn report(updates: &[CallUpdate]) -> (usize, usize, usize, usize) {
    let r: &ResyncReport = updates
        .iter()
        .rev()
        .find_map(|u| match u {
            CallUpdate::Resynced(r) => Some(r),
            _ => None,
        })
        .expect("a resync report");
    (r.continued, r.ended_unobserved, r.adopted, r.replayed)
}

/// A message back to wire bytes.
fn wire(m: &ami_proto::Message) -> Vec<u8> {
    let mut out = Vec::new();
    for f in m.fields() {
        out.extend_from_slice(f.key);
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[test]
fn after_an_outage_gone_channels_end_unobserved_others_continue_and_new_ones_are_adopted() {
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 6, ""));
    t.feed(&ev("Newchannel", "2.1", "2.1", 6, ""));
    let last_seen_2 = t.h.now;
    t.reconnect();
    let updates = t.drain_updates();
    assert_eq!(
        updates[0],
        CallUpdate::Stale(StaleReason::SessionLost(DisconnectReason::Eof))
    );
    assert!(t.tr.is_resyncing());
    assert_eq!(
        t.h.inbox_actions(),
        ["CoreShowChannels"],
        "no Originate in doubt: no Status"
    );
    t.channels(&[("1.1", "1.1", 6), ("3.1", "3.1", 4)], "BridgeId: b-9");
    let updates = t.drain_updates();
    let ended: Vec<&EndedCall> = updates
        .iter()
        .filter_map(|u| match u {
            CallUpdate::CallEnded(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].linkedid, "2.1");
    assert!(ended[0].unobserved());
    assert_eq!(ended[0].cause(), None, "no cause is made up");
    assert_eq!(
        ended[0].ended(),
        CallEnd::Unobserved {
            last_seen: last_seen_2,
            noticed: t.h.now
        },
        "no end time is made up, only its bounds"
    );
    assert_eq!(ended[0].ended().seen(), None);
    assert!(matches!(
        ended[0].channels[0].ending,
        Ending::Unobserved { last_seen, .. } if last_seen == last_seen_2
    ));
    assert_eq!(report(&updates), (1, 1, 1, 0));
    let adopted = t.tr.channel("3.1").unwrap();
    assert!(adopted.adopted && adopted.created.is_none());
    assert_eq!(adopted.bridge.as_deref(), Some("b-9"));
    assert!(!t.tr.channel("1.1").unwrap().adopted);
    assert_eq!(t.tr.stats().ended_unobserved, 1);
}

#[test]
fn events_around_the_snapshot_answer_are_neither_lost_nor_applied_twice() {
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 4, ""));
    t.feed(&ev("Newchannel", "2.1", "2.1", 6, ""));
    // A gap: the tracker resyncs on the same session.
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 5 });
    t.pump();
    assert!(t.tr.is_resyncing());
    let id = t.take("CoreShowChannels");
    // Before the server answers: 2.1 hangs up (gone from the snapshot), 4.1 is created
    // (in it), 1.1 answers. After it answered, in the same read: 4.1 hangs up.
    let mut bytes = ev("Hangup", "2.1", "2.1", 6, "Cause: 16");
    bytes.extend(ev("Newchannel", "4.1", "4.1", 4, ""));
    bytes.extend(ev("Newstate", "1.1", "1.1", 6, ""));
    bytes.extend(list(
        &id,
        "CoreShowChannel",
        &[("1.1", "1.1", 6), ("4.1", "4.1", 4)],
        "",
    ));
    bytes.extend(ev("Hangup", "4.1", "4.1", 4, "Cause: 21"));
    t.feed(&bytes);
    assert!(!t.tr.is_stale());
    let updates = t.drain_updates();
    // 4.1 was created before the snapshot (so it continues), 2.1 hung up before it; the
    // Hangup of 4.1 came after it and is applied after it.
    assert_eq!(report(&updates), (2, 0, 0, 0), "{updates:?}");
    let ended: Vec<(String, Option<u16>)> = updates
        .iter()
        .filter_map(|u| match u {
            CallUpdate::CallEnded(c) => Some((c.linkedid.clone(), c.cause())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        [("2.1".to_string(), Some(16)), ("4.1".to_string(), Some(21))],
        "each seen Hangup reported once, with its cause"
    );
    let ch = t.tr.channel("1.1").unwrap();
    assert_eq!(ch.state, ChannelState::Up);
    assert!(ch.answered.is_some(), "its answer was seen");
    assert_eq!(t.tr.channels().len(), 1);
}

#[test]
fn events_after_the_snapshot_mark_wait_for_a_late_answer_and_then_apply() {
    let mut t = T::new();
    t.live();
    t.items_first = true;
    t.feed(&ev("Newchannel", "1.1", "1.1", 4, ""));
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
    t.pump();
    let id = t.take("CoreShowChannels");
    // The snapshot says Ring; after it, 1.1 answers and 5.1 is created, and the consumer
    // reads those events before the answer is handed over.
    let mut bytes = list(&id, "CoreShowChannel", &[("1.1", "1.1", 4)], "");
    bytes.extend(ev("Newstate", "1.1", "1.1", 6, ""));
    bytes.extend(ev("Newchannel", "5.1", "5.1", 4, ""));
    t.feed(&bytes);
    assert!(!t.tr.is_stale());
    assert_eq!(report(&t.drain_updates()), (1, 0, 0, 2));
    let ch = t.tr.channel("1.1").unwrap();
    assert_eq!(
        ch.state,
        ChannelState::Up,
        "the snapshot never overwrites a newer event"
    );
    assert!(ch.answered.is_some());
    assert!(!t.tr.channel("5.1").unwrap().adopted);
}

fn originate_response(id: &str, uid: &str) -> Vec<u8> {
    let mut out = format!(
        "Response: Success\r\nActionID: {id}\r\nMessage: Originate successfully queued\r\n\r\n"
    );
    out += &format!("Event: OriginateResponse\r\nActionID: {id}\r\nResponse: Success\r\nChannel: PJSIP/{uid}\r\nReason: 4\r\nUniqueid: {uid}\r\n\r\n");
    out.into_bytes()
}

fn originate() -> Action {
    Action::new("Originate")
        .field("Channel", "Local/100@default")
        .field("Application", "Wait")
        .field("Data", "10")
        .field("Async", "true")
}

#[test]
fn an_originate_carries_its_tag_and_is_followed_to_its_end() {
    let mut t = T::new();
    t.live();
    let tag = t.tr.originate(originate()).unwrap();
    t.pump();
    let sent = t.h.take("Originate");
    assert_eq!(
        sent.get_str("Variable"),
        Some(format!("AMIRS_ORIGINATE={tag}").as_str())
    );
    let id = id_of(&sent).to_string();
    t.feed(&ev("Newchannel", "5.1", "5.1", 0, ""));
    t.feed(&ev(
        "VarSet",
        "5.1",
        "5.1",
        0,
        &format!("Variable: AMIRS_ORIGINATE\nValue: {tag}"),
    ));
    assert_eq!(t.tr.originate_state(&tag), Some(&OriginateState::Pending));
    t.feed(&originate_response(&id, "5.1"));
    assert_eq!(
        t.tr.originate_state(&tag),
        Some(&OriginateState::Running {
            channels: vec!["5.1".into()]
        })
    );
    t.feed(&ev("Hangup", "5.1", "5.1", 6, "Cause: 16"));
    assert!(t.drain_updates().contains(&CallUpdate::Originate {
        tag: tag.clone(),
        state: OriginateState::Ended {
            cause: Some(16),
            unobserved: false
        }
    }));
    assert_eq!(t.tr.originate_state(&tag), None, "final: forgotten");
}

fn in_doubt_then_snapshot(status_has_tag: bool) -> (T, OriginateTag) {
    let mut t = T::new();
    t.live();
    let tag = t.tr.originate(originate()).unwrap();
    t.pump();
    t.h.take("Originate");
    t.reconnect();
    assert_eq!(t.tr.originate_state(&tag), Some(&OriginateState::InDoubt));
    assert_eq!(t.h.inbox_actions(), ["CoreShowChannels", "Status"]);
    let status = t.h.take("Status");
    assert_eq!(status.get_str("Variables"), Some("AMIRS_ORIGINATE"));
    t.channels(&[("7.1", "7.1", 6)], "");
    assert!(t.tr.is_resyncing(), "waits for Status too");
    let var = if status_has_tag {
        format!("Variable: AMIRS_ORIGINATE={tag}")
    } else {
        "Variable: AMIRS_ORIGINATE=".to_string()
    };
    t.feed(&list(id_of(&status), "Status", &[("7.1", "7.1", 6)], &var));
    assert!(!t.tr.is_stale());
    (t, tag)
}

#[test]
fn an_originate_in_doubt_found_by_its_tag_after_reconnect_is_running() {
    let (mut t, tag) = in_doubt_then_snapshot(true);
    assert!(t.drain_updates().contains(&CallUpdate::Originate {
        tag: tag.clone(),
        state: OriginateState::Running {
            channels: vec!["7.1".into()]
        }
    }));
    assert_eq!(t.tr.channel("7.1").unwrap().originate.as_ref(), Some(&tag));
}

#[test]
fn an_originate_in_doubt_not_found_is_not_running_now_never_failed() {
    let (mut t, tag) = in_doubt_then_snapshot(false);
    assert!(t.drain_updates().contains(&CallUpdate::Originate {
        tag: tag.clone(),
        state: OriginateState::NotRunningNow
    }));
    assert_eq!(t.tr.originate_state(&tag), None);
}

#[test]
fn the_channel_cap_is_enforced_and_counted() {
    let mut t = T::with(TrackerConfig::builder().max_channels(2).build().unwrap());
    t.live();
    for n in 0..5 {
        let uid = format!("{n}.1");
        t.feed(&ev("Newchannel", &uid, &uid, 4, ""));
    }
    assert_eq!(t.tr.channels().len(), 2);
    assert_eq!(t.tr.stats().channels_over_cap, 3);
    // Events for untracked channels are counted, never a panic.
    t.feed(&ev("Hangup", "4.1", "4.1", 4, "Cause: 16"));
    assert_eq!(t.tr.stats().unknown_channel_events, 1);
}

#[test]
fn a_failing_snapshot_is_retried_then_given_up_until_the_next_session() {
    let mut t = T::new();
    for _ in 0..3 {
        let id = t.take("CoreShowChannels");
        t.feed(
            format!("Response: Error\r\nActionID: {id}\r\nMessage: Permission denied\r\n\r\n")
                .as_bytes(),
        );
    }
    assert!(t.h.inbox.is_empty(), "no request loop");
    assert!(t.tr.is_stale() && !t.tr.is_resyncing());
    assert_eq!(t.tr.stats().snapshot_failures, 3);
    t.reconnect();
    assert_eq!(t.h.inbox_actions(), ["CoreShowChannels"]);
}

#[test]
fn an_answer_to_an_older_resync_is_ignored() {
    let mut t = T::new();
    let old = t.take("CoreShowChannels");
    // A new resync while one is in flight (a gap there no longer starts one: the snapshot
    // to come covers it).
    t.tr.resync();
    t.pump();
    t.feed(&list(&old, "CoreShowChannel", &[("9.1", "9.1", 6)], ""));
    assert!(t.tr.is_resyncing());
    assert_eq!(t.tr.channels().len(), 0);
    t.channels(&[], "");
    assert!(!t.tr.is_stale());
}

#[test]
fn a_snapshot_the_client_refuses_at_send_is_asked_again_then_reported_stale_not_left_waiting() {
    // Found by the `calls` fuzz target: with the client's stream marks at their cap, the
    // snapshot request was refused at send; the tracker took that for a session going down,
    // waited for a Disconnected or Ready that never came, and stayed stale for good, silently.
    let mut tr = CallTracker::new(TrackerConfig::builder().tag_prefix("t").build().unwrap());
    let now = Instant::now();
    tr.handle_item(
        now,
        &ami_proto::StreamItem::Ready {
            ami_version: "11.0.0".into(),
        },
    );
    for _ in 0..3 {
        let req = tr.poll_request().expect("the snapshot is asked (again)");
        assert!(req.action.is("CoreShowChannels"));
        tr.send_failed(now, req.token);
    }
    assert!(
        tr.poll_request().is_none(),
        "three refusals in a row: it stops asking"
    );
    let updates: Vec<CallUpdate> = std::iter::from_fn(|| tr.poll_update()).collect();
    assert!(
        updates.contains(&CallUpdate::Stale(StaleReason::SnapshotFailed {
            attempt: 3
        })),
        "{updates:?}"
    );
    assert!(tr.is_stale() && !tr.is_resyncing());
    // The application's resync asks again.
    tr.resync();
    assert!(tr.poll_request().is_some());
}

/// Linkedid and channel Uniqueids of each CallEnded in `updates`, in order.
fn ended_ids(updates: &[CallUpdate]) -> Vec<(String, Vec<String>)> {
    updates
        .iter()
        .filter_map(|u| match u {
            CallUpdate::CallEnded(c) => Some((
                c.linkedid.clone(),
                c.channels
                    .iter()
                    .map(|e| e.channel.uniqueid.clone())
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

fn ids(linkedid: &str, uids: &[&str]) -> (String, Vec<String>) {
    (
        linkedid.to_string(),
        uids.iter().map(|u| u.to_string()).collect(),
    )
}

#[test]
fn a_channel_that_moves_to_another_linkedid_ends_its_old_call_once() {
    // An attended transfer: A (1.1) called B (1.2); B called C through 2.1 -> 2.2; B
    // completes the transfer, its two legs hang up, and C is bridged with A, taking A's
    // Linkedid (Asterisk gives a bridge's channels the oldest Linkedid among them).
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 6, ""));
    t.feed(&ev("Newchannel", "1.2", "1.1", 6, ""));
    t.feed(&ev("Newchannel", "2.1", "2.1", 6, ""));
    t.feed(&ev("Newchannel", "2.2", "2.1", 6, ""));
    t.feed(&ev("Hangup", "1.2", "1.1", 6, "Cause: 16"));
    t.feed(&ev("Hangup", "2.1", "2.1", 6, "Cause: 16"));
    assert!(t.ended().is_empty(), "each call has a channel left");
    t.feed(&ev("BridgeEnter", "2.2", "1.1", 6, "BridgeUniqueid: b-1"));
    let updates = t.drain_updates();
    assert_eq!(
        ended_ids(&updates),
        [ids("2.1", &["2.1"])],
        "call 2.1 has no channel left: it ends"
    );
    let CallUpdate::CallEnded(call) = &updates[0] else {
        panic!("{updates:?}")
    };
    assert_eq!(call.channels_moved, 1);
    assert_eq!(t.tr.call("1.1").unwrap().len(), 2);
    assert!(t.tr.call("2.1").is_none());
    t.feed(&ev("Hangup", "2.2", "1.1", 6, "Cause: 16"));
    t.feed(&ev("Hangup", "1.1", "1.1", 6, "Cause: 16"));
    assert_eq!(
        ended_ids(&t.drain_updates()),
        [ids("1.1", &["1.2", "2.2", "1.1"])],
        "the moved channel ends with its new call; the old call is not ended again"
    );
    assert_eq!(t.tr.stats().calls, 0);
}

#[test]
fn a_call_whose_every_channel_moves_to_another_linkedid_ends_once_with_none_ended() {
    // Both channels of call 2.1 join a bridge with the older call 1.1 and take its Linkedid.
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 6, ""));
    t.feed(&ev("Newchannel", "2.1", "2.1", 6, ""));
    t.feed(&ev("Newchannel", "2.2", "2.1", 6, ""));
    t.feed(&ev("BridgeEnter", "2.1", "1.1", 6, "BridgeUniqueid: b-1"));
    assert!(t.ended().is_empty(), "2.2 is still in call 2.1");
    t.feed(&ev("BridgeEnter", "2.2", "1.1", 6, "BridgeUniqueid: b-1"));
    let updates = t.drain_updates();
    assert_eq!(ended_ids(&updates), [ids("2.1", &[])]);
    let CallUpdate::CallEnded(call) = &updates[0] else {
        panic!("{updates:?}")
    };
    assert_eq!(call.channels_moved, 2);
    assert_eq!(
        call.ended(),
        CallEnd::Moved,
        "no end of its own, not an unknown one"
    );
    assert!(!call.unobserved());
    assert_eq!(t.tr.call("1.1").unwrap().len(), 3);
}

#[test]
fn a_call_still_live_in_the_snapshot_is_not_ended_by_a_resync_and_ends_once() {
    // No grace for a Hangup behind the snapshot (calls_faults.rs has those): a channel gone
    // from it ends unobserved at once.
    let mut t = T::with(no_grace().build().unwrap());
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 6, ""));
    t.feed(&ev("Newchannel", "5.1", "5.1", 6, ""));
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 9 });
    t.pump();
    // Unseen during the gap: 1.1 dialled 1.2 and left (a blind transfer), so call 1.1 goes
    // on without it; 5.1 dialled 5.2, then joined a bridge with the older call 4.1.
    t.channels(
        &[
            ("1.2", "1.1", 6),
            ("4.1", "4.1", 6),
            ("5.1", "4.1", 6),
            ("5.2", "5.1", 5),
        ],
        "",
    );
    let updates = t.drain_updates();
    assert_eq!(report(&updates), (1, 1, 3, 0));
    assert_eq!(
        ended_ids(&updates),
        [],
        "calls 1.1 and 5.1 are live in the snapshot"
    );
    assert_eq!(t.tr.call("1.1").unwrap().len(), 1);
    assert_eq!(t.tr.call("5.1").unwrap().len(), 1);
    t.feed(&ev("Hangup", "1.2", "1.1", 6, "Cause: 16"));
    t.feed(&ev("Hangup", "5.2", "5.1", 5, "Cause: 19"));
    let updates = t.drain_updates();
    assert_eq!(
        ended_ids(&updates),
        [ids("1.1", &["1.1", "1.2"]), ids("5.1", &["5.2"])],
        "each ends once, with every channel it had"
    );
    let CallUpdate::CallEnded(call) = &updates[0] else {
        panic!("{updates:?}")
    };
    assert!(call.unobserved(), "1.1 ended unseen");
}

#[test]
fn a_rename_updates_the_channel_name_though_it_carries_no_channel_state() {
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 6, ""));
    // As Asterisk sends it: the old name, the new one, the Uniqueid, nothing more.
    t.feed(
        b"Event: Rename\r\nChannel: PJSIP/1.1\r\nNewname: PJSIP/1.1<MASQ>\r\nUniqueid: 1.1\r\n\r\n",
    );
    let ch = t.tr.channel("1.1").unwrap();
    assert_eq!(ch.name, "PJSIP/1.1<MASQ>");
    assert_eq!(ch.state, ChannelState::Up, "no state is made up");
    assert_eq!(ch.linkedid, "1.1");
    assert_eq!(t.tr.stats().unknown_channel_events, 0);
}

#[test]
fn gaps_while_each_snapshot_is_in_flight_do_not_keep_the_view_from_going_live() {
    // A steady trickle: a gap while every snapshot is on its way. The snapshot is taken
    // after the events a gap before its mark lost, so it covers them.
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 6, ""));
    for round in 0..4 {
        t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 2 });
        t.pump();
        assert!(t.tr.is_resyncing());
        t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 3 });
        t.pump();
        t.channels(&[("1.1", "1.1", 6)], "");
        assert!(
            !t.tr.is_stale(),
            "round {round}: live once its snapshot is in"
        );
        assert!(t.h.inbox.is_empty(), "round {round}: one snapshot asked");
    }
    assert_eq!(t.tr.stats().resynced, 5);
}

#[test]
fn gaps_after_a_snapshots_mark_ask_for_one_more_snapshot_not_one_each() {
    // No grace for a Hangup behind the snapshot (calls_faults.rs has those): a channel gone
    // from it ends unobserved at once.
    let mut t = T::with(no_grace().build().unwrap());
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 6, ""));
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
    t.pump();
    let id = t.take("CoreShowChannels");
    // The snapshot's mark is read, then events after it are lost (three gaps), and only
    // then is its answer handed over.
    t.tick();
    t.h.feed(&list(
        &id,
        "CoreShowChannel",
        &[("1.1", "1.1", 6), ("2.1", "2.1", 4)],
        "",
    ));
    for item in t.h.events() {
        t.tr.handle_item(t.h.now, &item);
    }
    for _ in 0..3 {
        t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
    }
    t.pump();
    assert!(
        t.tr.channel("2.1").is_some(),
        "the snapshot is applied, not thrown away"
    );
    assert!(t.tr.is_resyncing(), "events after it were lost: not live");
    assert_eq!(
        t.h.inbox_actions(),
        ["CoreShowChannels"],
        "one more, not three"
    );
    t.channels(&[("1.1", "1.1", 6)], "");
    assert!(!t.tr.is_stale());
    assert_eq!(
        ended_ids(&t.drain_updates()),
        [ids("2.1", &["2.1"])],
        "2.1 ended while unseen"
    );
}

/// A snapshot's answer with each channel's bridge: (uniqueid, linkedid, state, bridge).
fn bridged_list(id: &str, chans: &[(&str, &str, u8, &str)]) -> Vec<u8> {
    let mut out = format!("Response: Success\r\nActionID: {id}\r\nEventList: start\r\n\r\n");
    for (uid, linked, state, bridge) in chans {
        out += &format!(
            "Event: CoreShowChannel\r\nActionID: {id}\r\n{}BridgeId: {bridge}\r\n\r\n",
            block(uid, linked, *state)
        );
    }
    out += &format!(
        "Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: {}\r\n\r\n",
        chans.len()
    );
    out.into_bytes()
}

/// A tracker config without `event_grace`.
fn no_grace() -> ami_proto::calls::TrackerConfigBuilder {
    TrackerConfig::builder()
        .tag_prefix("t")
        .event_grace(Duration::ZERO)
}

/// Starts a resync with a gap and returns the ActionID of its CoreShowChannels.
fn gap_then_snapshot_asked(t: &mut T) -> String {
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
    t.pump();
    assert!(t.tr.is_resyncing());
    t.take("CoreShowChannels")
}

#[test]
fn a_flood_after_each_snapshots_mark_lets_the_resync_finish_with_the_view_right() {
    // More events after each snapshot's mark than max_buffered_events, before its answer is
    // handed over: round after round, as under a steady flood.
    // No grace for a Hangup behind the snapshot (calls_faults.rs has those): a channel gone
    // from it ends unobserved at once.
    let config = no_grace().max_buffered_events(4).build().unwrap();
    let mut t = T::with(config);
    t.live();
    t.items_first = true;
    t.feed(&ev("Newchannel", "1.1", "1.1", 4, ""));
    t.feed(&ev("Newchannel", "2.1", "2.1", 6, ""));
    t.feed(&ev("Newchannel", "9.1", "9.1", 6, ""));
    t.drain_updates();
    let id = gap_then_snapshot_asked(&mut t);
    // Unseen, before the mark: 2.1 hung up; 3.1 was created; 9.1 and 3.1 entered a bridge.
    let mut bytes = bridged_list(
        &id,
        &[
            ("1.1", "1.1", 4, ""),
            ("3.1", "3.1", 4, "b-1"),
            ("9.1", "9.1", 6, "b-1"),
        ],
    );
    // After it: 1.1 answers and hangs up, 5.1 is created and answers, 3.1 (not yet in the
    // view) answers, 6.1 comes and goes, and 9.1 floods.
    bytes.extend(ev("Newstate", "1.1", "1.1", 6, ""));
    bytes.extend(ev("Hangup", "1.1", "1.1", 6, "Cause: 16"));
    bytes.extend(ev("Newchannel", "5.1", "5.1", 4, ""));
    bytes.extend(ev("Newstate", "3.1", "3.1", 6, ""));
    bytes.extend(ev("Newchannel", "6.1", "6.1", 4, ""));
    bytes.extend(ev("Hangup", "6.1", "6.1", 4, "Cause: 17"));
    for _ in 0..6 {
        bytes.extend(ev("Newstate", "9.1", "9.1", 6, ""));
    }
    bytes.extend(ev("Newstate", "5.1", "5.1", 6, ""));
    t.feed(&bytes);
    assert!(
        !t.tr.is_stale(),
        "the snapshot in flight finished the resync"
    );
    assert!(t.h.inbox.is_empty(), "no snapshot started over");
    let updates = t.drain_updates();
    assert_eq!(
        ended_ids(&updates),
        [
            ids("1.1", &["1.1"]),
            ids("6.1", &["6.1"]),
            ids("2.1", &["2.1"])
        ],
        "each ended once; 1.1, seen hanging up after the mark, not brought back"
    );
    let r = updates
        .iter()
        .find_map(|u| match u {
            CallUpdate::Resynced(r) => Some(*r),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            r.continued,
            r.ended_unobserved,
            r.adopted,
            r.replayed,
            r.kept_newer
        ),
        (0, 1, 1, 1, 2),
        "{r:?}"
    );
    let state = |t: &T, uid: &str| {
        let ch = t.tr.channel(uid).unwrap();
        (ch.state, ch.bridge.clone(), ch.adopted)
    };
    let b1 = Some("b-1".to_string());
    assert_eq!(state(&t, "3.1"), (ChannelState::Up, b1.clone(), true));
    assert_eq!(state(&t, "5.1"), (ChannelState::Up, None, false));
    assert_eq!(state(&t, "9.1"), (ChannelState::Up, b1, false));
    assert_eq!(t.tr.channels().len(), 3);
    let stats = t.tr.stats();
    assert_eq!(
        (
            stats.buffer_overflows,
            stats.buffered_dropped,
            stats.unknown_channel_events
        ),
        (1, 0, 0)
    );
    for round in 1..4u32 {
        let id = gap_then_snapshot_asked(&mut t);
        let mut bytes = list(
            &id,
            "CoreShowChannel",
            &[("3.1", "3.1", 6), ("5.1", "5.1", 6), ("9.1", "9.1", 6)],
            "",
        );
        let uid = format!("7{round}.1");
        bytes.extend(ev("Newchannel", &uid, &uid, 4, ""));
        for _ in 0..8 {
            bytes.extend(ev("Newstate", "9.1", "9.1", 6, ""));
        }
        bytes.extend(ev("Hangup", &uid, &uid, 4, "Cause: 16"));
        t.feed(&bytes);
        assert!(!t.tr.is_stale(), "round {round}");
        assert!(t.h.inbox.is_empty(), "round {round}");
        assert_eq!(ended_ids(&t.drain_updates()), [ids(&uid, &[&uid])]);
        assert_eq!(t.tr.channels().len(), 3, "round {round}");
    }
    assert_eq!(t.tr.stats().resynced, 5);
    assert_eq!(t.tr.stats().buffer_overflows, 4);
}

#[test]
fn events_for_channels_not_yet_in_the_view_past_the_buffer_are_dropped_counted_and_asked_again() {
    let config = TrackerConfig::builder()
        .tag_prefix("t")
        .max_buffered_events(2)
        .build()
        .unwrap();
    let mut t = T::with(config);
    t.live();
    t.items_first = true;
    t.feed(&ev("Newchannel", "9.1", "9.1", 6, ""));
    let id = gap_then_snapshot_asked(&mut t);
    // 3.1 was created unseen before the mark; after it, 9.1 floods, then 3.1 changes four
    // times: two wait for the snapshot to bring 3.1 in, two are past the cap.
    let mut bytes = list(
        &id,
        "CoreShowChannel",
        &[("9.1", "9.1", 6), ("3.1", "3.1", 4)],
        "",
    );
    for _ in 0..3 {
        bytes.extend(ev("Newstate", "9.1", "9.1", 6, ""));
    }
    for state in [5, 6, 5, 6] {
        bytes.extend(ev("Newstate", "3.1", "3.1", state, ""));
    }
    t.feed(&bytes);
    let stats = t.tr.stats();
    assert_eq!((stats.buffer_overflows, stats.buffered_dropped), (1, 2));
    assert!(t.tr.channel("3.1").is_some(), "the snapshot was applied");
    assert!(t.tr.is_resyncing(), "events were lost: not live");
    assert!(t
        .drain_updates()
        .contains(&CallUpdate::Stale(StaleReason::BufferFull)));
    assert_eq!(t.h.inbox_actions(), ["CoreShowChannels"], "one more");
    t.channels(&[("9.1", "9.1", 6), ("3.1", "3.1", 6)], "");
    assert!(!t.tr.is_stale());
    assert_eq!(t.tr.channel("3.1").unwrap().state, ChannelState::Up);
}

#[test]
fn a_calls_end_counts_its_channels_beyond_those_kept() {
    // A long call: more channels end in it than MAX_ENDED_PER_CALL keeps; the last ones
    // decide its end, seen or not.
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 6, ""));
    for n in 0..=MAX_ENDED_PER_CALL {
        let uid = format!("1.{}", n + 2);
        t.feed(&ev("Newchannel", &uid, "1.1", 6, ""));
        t.feed(&ev("Hangup", &uid, "1.1", 6, "Cause: 16"));
    }
    t.feed(&ev("Newchannel", "1.99", "1.1", 6, ""));
    t.feed(&ev("Hangup", "1.1", "1.1", 6, "Cause: 16"));
    let seen_end = t.h.now;
    // The call's last channel, 1.99, ends unseen in an outage.
    t.reconnect();
    t.channels(&[], "");
    let ended = t.ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].channels_not_kept, 3);
    assert!(ended[0].unobserved(), "1.99, not kept, ended unseen");
    assert_eq!(
        ended[0].ended(),
        CallEnd::Unobserved {
            last_seen: seen_end,
            noticed: t.h.now
        }
    );

    // The same with every Hangup seen: the end is the last one, not the last one kept.
    t.feed(&ev("Newchannel", "2.1", "2.1", 6, ""));
    for n in 0..=MAX_ENDED_PER_CALL {
        let uid = format!("2.{}", n + 2);
        t.feed(&ev("Newchannel", &uid, "2.1", 6, ""));
        t.feed(&ev("Hangup", &uid, "2.1", 6, "Cause: 16"));
    }
    t.feed(&ev("Hangup", "2.1", "2.1", 6, "Cause: 16"));
    let ended = t.ended();
    assert_eq!(ended[0].ended(), CallEnd::Seen(t.h.now));
    assert!(!ended[0].unobserved());
}

#[test]
fn a_channel_adopted_from_a_snapshot_is_as_old_as_its_duration_says() {
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 6, ""));
    let seen_created = t.tr.channel("1.1").unwrap().created;
    t.reconnect();
    t.channels(
        &[("1.1", "1.1", 6), ("3.1", "3.1", 6)],
        "Duration: 01:02:05",
    );
    let now = t.h.now;
    let adopted = t.tr.channel("3.1").unwrap();
    assert!(adopted.adopted);
    assert_eq!(adopted.created, Some(now - Duration::from_secs(3725)));
    // One the tracker saw created keeps the time it saw.
    assert_eq!(t.tr.channel("1.1").unwrap().created, seen_created);
    // A Duration that does not parse (or none) gives no age rather than a made-up one.
    t.reconnect();
    t.channels(
        &[("1.1", "1.1", 6), ("3.1", "3.1", 6), ("4.1", "4.1", 6)],
        "Duration: 1:99:00",
    );
    assert_eq!(t.tr.channel("4.1").unwrap().created, None);
    assert_eq!(
        t.tr.channel("3.1").unwrap().created,
        Some(now - Duration::from_secs(3725)),
        "a later snapshot does not move what is known"
    );
}

#[test]
fn large_events_after_a_snapshots_mark_are_held_within_a_byte_cap_not_only_a_count() {
    // A client whose own queue lets 40 MiB of events through before the tracker sees the
    // snapshot's answer (an application that reads the stream faster than it hands answers
    // over): 640 events of 64 KiB, far under the default 65,536 events held, but 40 MiB
    // held whole. Past the tracker's byte cap they are applied at once, counted, as past the
    // count.
    let client = ami_proto::ClientConfig::builder("admin", "amp111")
        .seed(3)
        .ping_interval(Duration::from_secs(3600))
        .event_queue_bytes(256 << 20)
        .build()
        .unwrap();
    let mut t = T::with_client(client, no_grace().build().unwrap());
    t.live();
    t.items_first = true;
    t.feed(&ev("Newchannel", "9.1", "9.1", 6, ""));
    t.drain_updates();
    let id = gap_then_snapshot_asked(&mut t);
    let mut bytes = list(&id, "CoreShowChannel", &[("9.1", "9.1", 6)], "");
    let big = format!("X-Padding: {}", "p".repeat(64 << 10));
    for _ in 0..640 {
        bytes.extend(ev("Newstate", "9.1", "9.1", 6, &big));
    }
    t.feed(&bytes);
    assert!(!t.tr.is_stale(), "the snapshot finished the resync");
    assert_eq!(
        t.h.client.stats().events_dropped,
        0,
        "the client kept every event"
    );
    assert!(
        t.tr.stats().buffer_overflows >= 1,
        "40 MiB of events held after the mark without reaching a cap: {:?}",
        t.tr.stats()
    );
    assert!(t.tr.channel("9.1").is_some());
}
