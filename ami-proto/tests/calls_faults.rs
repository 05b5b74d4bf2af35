//! The call tracker against what a real Asterisk 22 sends (fixtures in
//! shared/fixtures/asterisk-22.10.1): faults a telephony audit found (each test failed
//! before its fix), and replays of real captures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: a real epoch for virtual time, fixtures read from disk

#[path = "support/scripted.rs"]
mod scripted;
#[path = "support/tracker.rs"]
mod tracker;

use ami_proto::calls::{
    CallEnd, CallUpdate, EndedCall, OriginateState, StaleReason, TrackerConfig, MAX_FIELD_BYTES,
};
use ami_proto::{Action, ClientConfig};
use scripted::id_of;
use std::time::Duration;
use tracker::{block, ev, list, T};

fn tag_varset(uid: &str, linked: &str, state: u8, tag: &str) -> Vec<u8> {
    ev(
        "VarSet",
        uid,
        linked,
        state,
        &format!("Variable: AMIRS_ORIGINATE\nValue: {tag}"),
    )
}

/// The async Originate's answer as Asterisk 22 writes it (fixture `originate_async.raw`):
/// the response, then the OriginateResponse event with the ;1 channel's Uniqueid.
fn originate_response(id: &str, uid: &str) -> Vec<u8> {
    let mut out = format!(
        "Response: Success\r\nActionID: {id}\r\nMessage: Originate successfully queued\r\n\r\n"
    );
    out += &format!(
        "Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: {id}\r\nResponse: Success\r\n\
         Channel: Local/wait10@ami-test-00000002;1\r\nApplication: Wait\r\nData: 3\r\nReason: 4\r\n\
         Uniqueid: {uid}\r\nCallerIDNum: 5551000\r\nCallerIDName: AMI Test\r\n\r\n"
    );
    out.into_bytes()
}

fn async_originate() -> Action {
    Action::new("Originate")
        .field("Channel", "Local/wait10@ami-test")
        .field("Application", "Wait")
        .field("Data", "3")
        .field("Async", "true")
}

fn in_doubt_seen(updates: &[CallUpdate]) -> bool {
    updates.iter().any(|u| {
        matches!(
            u,
            CallUpdate::Stale(StaleReason::OriginateInDoubt)
                | CallUpdate::Originate {
                    state: OriginateState::InDoubt,
                    ..
                }
        )
    })
}

fn originate_states(updates: Vec<CallUpdate>) -> Vec<OriginateState> {
    updates
        .into_iter()
        .filter_map(|u| match u {
            CallUpdate::Originate { state, .. } => Some(state),
            _ => None,
        })
        .collect()
}

fn local_originate() -> Action {
    Action::new("Originate")
        .field("Channel", "Local/cust@outbound")
        .field("Context", "agents")
        .field("Exten", "s")
        .field("Priority", "1")
        .field("Async", "true")
}

// ---------------------------------------------------------------------------------------
// An Originate runs until its call ends, not until its tagged channels do.
// ---------------------------------------------------------------------------------------

/// Rule: a `Running` Originate reaches `Ended` only when its call ends: the channels that
/// carry its tag are gone AND no channel of their call (their Linkedid) is live; its cause
/// is that of the call's last channel to hang up.
///
/// The dialer's classic Originate: `Channel: Local/cust@outbound`, `Context: agents`. The
/// tag is set on ;1 and copied to ;2 (`originate_async.raw`: VarSet FOO/BAZ on both halves),
/// but not onto the customer's channel that ;2 dials, nor the agent's that ;1 dials (a
/// variable without the `_`/`__` prefix is not inherited). Asterisk 22 optimizes Local
/// channels by default (`LocalBridge` ... `LocalOptimization: Yes` in every capture): once
/// both halves are bridged, the customer is swapped into the agent's bridge and ;1 and ;2
/// hang up (Cause 16). The call, Linkedid 10.1, goes on.
#[test]
fn an_originate_through_a_local_channel_stays_running_after_the_local_pair_optimizes_away() {
    let mut t = T::new();
    t.live();
    let tag = t.tr.originate(local_originate()).unwrap();
    t.pump();
    let id = id_of(&t.h.take("Originate")).to_string();
    let tag = tag.as_str().to_string();
    let l = "10.1";
    t.feed(&ev("Newchannel", "10.1", l, 0, ""));
    t.feed(&ev("Newchannel", "10.2", l, 4, ""));
    t.feed(&tag_varset("10.1", l, 0, &tag));
    t.feed(&tag_varset("10.2", l, 4, &tag));
    // ;2 dials the customer; answered and bridged with ;2.
    t.feed(&ev("Newchannel", "10.3", l, 0, ""));
    t.feed(&ev("Newstate", "10.3", l, 6, ""));
    t.feed(&ev("Newstate", "10.2", l, 6, ""));
    t.feed(&ev("BridgeEnter", "10.2", l, 6, "BridgeUniqueid: b-2"));
    t.feed(&ev("BridgeEnter", "10.3", l, 6, "BridgeUniqueid: b-2"));
    t.feed(&ev("Newstate", "10.1", l, 6, ""));
    t.feed(&originate_response(&id, "10.1"));
    // ;1 runs agents,s: dials the agent, bridged with ;1.
    t.feed(&ev("Newchannel", "10.4", l, 0, ""));
    t.feed(&ev("Newstate", "10.4", l, 6, ""));
    t.feed(&ev("BridgeEnter", "10.1", l, 6, "BridgeUniqueid: b-1"));
    t.feed(&ev("BridgeEnter", "10.4", l, 6, "BridgeUniqueid: b-1"));
    assert!(matches!(
        t.tr.originates().next().map(|(_, state)| state),
        Some(OriginateState::Running { .. })
    ));
    t.drain_updates();
    // Local optimization: the customer is swapped into the agent's bridge, ;1/;2 go.
    t.feed(&ev("BridgeLeave", "10.3", l, 6, "BridgeUniqueid: b-2"));
    t.feed(&ev(
        "BridgeEnter",
        "10.3",
        l,
        6,
        "BridgeUniqueid: b-1\nSwapUniqueid: 10.1",
    ));
    t.feed(&ev("BridgeLeave", "10.1", l, 6, "BridgeUniqueid: b-1"));
    t.feed(&ev(
        "Hangup",
        "10.1",
        l,
        6,
        "Cause: 16\nCause-txt: Normal Clearing",
    ));
    t.feed(&ev("BridgeLeave", "10.2", l, 6, "BridgeUniqueid: b-2"));
    t.feed(&ev(
        "Hangup",
        "10.2",
        l,
        6,
        "Cause: 16\nCause-txt: Normal Clearing",
    ));
    let live = t.tr.call(l).map(|c| c.len());
    assert_eq!(
        live,
        Some(2),
        "customer and agent still talking in call {l}"
    );
    assert_eq!(
        originate_states(t.drain_updates()),
        [
            OriginateState::Running {
                channels: vec!["10.2".into()]
            },
            OriginateState::Running { channels: vec![] },
        ],
        "running while its call is live, without a tagged channel left"
    );
    // The customer hangs up, then the agent's channel: the call ends, and the Originate
    // with it, with the cause of its last channel (not the optimization's 16).
    t.feed(&ev("Hangup", "10.3", l, 6, "Cause: 16"));
    assert_eq!(originate_states(t.drain_updates()), []);
    t.feed(&ev("Hangup", "10.4", l, 6, "Cause: 31"));
    assert_eq!(
        originate_states(t.drain_updates()),
        [OriginateState::Ended {
            cause: Some(31),
            unobserved: false
        }]
    );
    assert_eq!(t.tr.originates().count(), 0);
}

/// Rule: an Originate follows its call to the Linkedid a live channel of it moves to (a
/// bridge with an older call gives its channels that call's Linkedid): the call of
/// Linkedid 30.1 has no channel left, but its callee talks on in call 29.1.
#[test]
fn an_originate_follows_its_call_to_the_linkedid_its_channels_move_to() {
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "29.1", "29.1", 6, ""));
    let tag = t.tr.originate(local_originate()).unwrap();
    t.pump();
    let id = id_of(&t.h.take("Originate")).to_string();
    t.feed(&ev("Newchannel", "30.1", "30.1", 0, ""));
    t.feed(&tag_varset("30.1", "30.1", 0, tag.as_str()));
    t.feed(&ev("Newchannel", "30.2", "30.1", 6, ""));
    t.feed(&originate_response(&id, "30.1"));
    // 30.2 joins a bridge with the older call 29.1 and takes its Linkedid; 30.1 leaves.
    t.feed(&ev("BridgeEnter", "30.2", "29.1", 6, "BridgeUniqueid: b-9"));
    t.feed(&ev("Hangup", "30.1", "30.1", 6, "Cause: 16"));
    assert_eq!(t.tr.call("29.1").map(|c| c.len()), Some(2));
    assert!(
        matches!(
            t.tr.originate_state(&tag),
            Some(OriginateState::Running { .. })
        ),
        "{:?}",
        t.tr.originate_state(&tag)
    );
    t.drain_updates();
    t.feed(&ev("Hangup", "29.1", "29.1", 6, "Cause: 16"));
    t.feed(&ev("Hangup", "30.2", "29.1", 6, "Cause: 17"));
    assert_eq!(
        originate_states(t.drain_updates()),
        [OriginateState::Ended {
            cause: Some(17),
            unobserved: false
        }]
    );
}

// ---------------------------------------------------------------------------------------
// An answer that overtakes its channel's events is not a lost answer.
// ---------------------------------------------------------------------------------------

/// Rule: an Originate answered Success before any event of its channels waits for them
/// (up to `event_grace`) and runs when they come; it is not in doubt, and no resync is
/// started for it.
///
/// Asterisk writes OriginateResponse straight to the sessions, while channel events come
/// through stasis: in `originate_async.raw` the OriginateResponse (Reason 4, answered)
/// arrives BEFORE `Newstate ;1 Up` and `DialEnd`, which happened before it. Under load the
/// stasis queue lags further, so the answer can overtake the Newchannel/VarSet of its own
/// channel.
#[test]
fn an_originate_response_that_overtakes_its_channel_events_waits_for_them_and_runs() {
    let mut t = T::new();
    t.live();
    let tag = t.tr.originate(async_originate()).unwrap();
    t.pump();
    let id = id_of(&t.h.take("Originate")).to_string();
    // The answer first, then the (lagging) channel events of its ;1 and ;2 channels.
    t.feed(&originate_response(&id, "1795423110.4"));
    assert_eq!(t.tr.originate_state(&tag), Some(&OriginateState::Pending));
    t.feed(&ev("Newchannel", "1795423110.4", "1795423110.4", 0, ""));
    t.feed(&ev("Newchannel", "1795423110.5", "1795423110.4", 4, ""));
    t.feed(&tag_varset("1795423110.4", "1795423110.4", 0, tag.as_str()));
    t.feed(&tag_varset("1795423110.5", "1795423110.4", 4, tag.as_str()));
    let updates = t.drain_updates();
    assert!(
        !in_doubt_seen(&updates),
        "the server answered; the answer was not lost: {updates:#?}"
    );
    assert_eq!(t.h.inbox_actions(), Vec::<String>::new(), "no resync");
    assert!(!t.tr.is_stale());
    assert_eq!(
        t.tr.originate_state(&tag),
        Some(&OriginateState::Running {
            channels: vec!["1795423110.4".into(), "1795423110.5".into()]
        })
    );
}

/// Rule: an answered Originate's channel is known by the answer's Uniqueid too: its
/// Newchannel, after the answer, links it even before (or without) its tag's VarSet.
#[test]
fn an_answered_originates_channel_is_linked_by_the_answers_uniqueid_when_it_comes() {
    let mut t = T::new();
    t.live();
    let tag = t.tr.originate(async_originate()).unwrap();
    t.pump();
    let id = id_of(&t.h.take("Originate")).to_string();
    t.feed(&originate_response(&id, "21.1"));
    t.feed(&ev("Newchannel", "21.1", "21.1", 0, ""));
    assert_eq!(
        t.tr.originate_state(&tag),
        Some(&OriginateState::Running {
            channels: vec!["21.1".into()]
        })
    );
    assert_eq!(t.tr.channel("21.1").unwrap().originate.as_ref(), Some(&tag));
}

/// Rule as above, for a sync Originate (no `Async`): it blocks the session and the events
/// of the call come AFTER its response (`originate_sync_blocks.raw`: the `Response` of
/// `sync-noanswer` comes first, then the Newchannel ... Hangup of its channels).
#[test]
fn a_sync_originate_answered_before_its_events_is_not_in_doubt() {
    let client = ClientConfig::builder("admin", "amp111")
        .seed(3)
        .ping_interval(Duration::from_secs(3600))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut t = T::with_client(
        client,
        TrackerConfig::builder().tag_prefix("t").build().unwrap(),
    );
    t.live();
    let sync = Action::new("Originate")
        .field("Channel", "Local/wait10@ami-test")
        .field("Application", "Wait")
        .field("Data", "1");
    let tag = t.tr.originate(sync).unwrap();
    t.pump();
    let id = id_of(&t.h.take("Originate")).to_string();
    t.feed(
        format!(
            "Response: Success\r\nActionID: {id}\r\nMessage: Originate successfully queued\r\n\r\n"
        )
        .as_bytes(),
    );
    t.feed(&ev("Newchannel", "9.1", "9.1", 0, ""));
    t.feed(&tag_varset("9.1", "9.1", 0, tag.as_str()));
    let updates = t.drain_updates();
    assert!(!in_doubt_seen(&updates), "{updates:#?}");
    assert_eq!(t.h.inbox_actions(), Vec::<String>::new(), "no resync");
    assert_eq!(
        originate_states(updates),
        [OriginateState::Running {
            channels: vec!["9.1".into()]
        }]
    );
}

/// Rule as above: a short answered call whose events all come after its answer (answered,
/// then hung up) runs and ends with the cause its Hangup gave, not as `NotRunningNow`.
#[test]
fn an_answered_short_originate_whose_events_come_after_its_answer_ends_with_their_cause() {
    let mut t = T::new();
    t.live();
    let tag = t.tr.originate(async_originate()).unwrap();
    t.pump();
    let id = id_of(&t.h.take("Originate")).to_string();
    let mut bytes = originate_response(&id, "20.1");
    bytes.extend(ev("Newchannel", "20.1", "20.1", 0, ""));
    bytes.extend(tag_varset("20.1", "20.1", 0, tag.as_str()));
    bytes.extend(ev("Newstate", "20.1", "20.1", 6, ""));
    bytes.extend(ev("Hangup", "20.1", "20.1", 6, "Cause: 16"));
    t.feed(&bytes);
    assert_eq!(
        originate_states(t.drain_updates()),
        [
            OriginateState::Running {
                channels: vec!["20.1".into()]
            },
            OriginateState::Ended {
                cause: Some(16),
                unobserved: false
            }
        ]
    );
    assert_eq!(t.h.inbox_actions(), Vec::<String>::new(), "no resync");
}

/// Rule: the wait for an answered Originate's channel is bounded: with no event of it
/// within `event_grace` (a channel over the cap, events filtered or lost), it is in doubt
/// at the first input past the grace, and the resync looks for its tag.
#[test]
fn an_answered_originate_whose_channel_never_comes_is_in_doubt_after_the_grace() {
    let config = TrackerConfig::builder()
        .tag_prefix("t")
        .event_grace(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut t = T::with(config);
    t.live();
    let tag = t.tr.originate(async_originate()).unwrap();
    t.pump();
    let id = id_of(&t.h.take("Originate")).to_string();
    t.feed(&originate_response(&id, "22.1"));
    // Within the grace: other traffic, still waiting.
    t.feed(&ev("Newchannel", "8.1", "8.1", 4, ""));
    t.feed(&ev("Newstate", "8.1", "8.1", 5, ""));
    assert_eq!(t.tr.originate_state(&tag), Some(&OriginateState::Pending));
    assert!(!in_doubt_seen(&t.drain_updates()));
    t.h.advance(Duration::from_secs(5));
    t.feed(&ev("Newstate", "8.1", "8.1", 6, ""));
    assert!(in_doubt_seen(&t.drain_updates()));
    assert_eq!(t.h.inbox_actions(), ["CoreShowChannels", "Status"]);
    let status = t.take("Status");
    t.channels(&[("8.1", "8.1", 6), ("22.1", "22.1", 6)], "");
    let var = format!("Variable: AMIRS_ORIGINATE={tag}");
    t.feed(&list(&status, "Status", &[("22.1", "22.1", 6)], &var));
    assert!(!t.tr.is_stale());
    assert_eq!(
        t.tr.originate_state(&tag),
        Some(&OriginateState::Running {
            channels: vec!["22.1".into()]
        })
    );
}

/// Rule: events lost while an answered Originate waits for its channel's may be those: a
/// gap puts it in doubt at once, and the resync it starts looks for its tag.
#[test]
fn an_answered_originate_waiting_for_its_channel_is_looked_for_after_a_gap() {
    let mut t = T::new();
    t.live();
    let tag = t.tr.originate(async_originate()).unwrap();
    t.pump();
    let id = id_of(&t.h.take("Originate")).to_string();
    t.feed(&originate_response(&id, "23.1"));
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 2 });
    t.pump();
    assert_eq!(t.tr.originate_state(&tag), Some(&OriginateState::InDoubt));
    assert_eq!(t.h.inbox_actions(), ["CoreShowChannels", "Status"]);
}

// ---------------------------------------------------------------------------------------
// A Hangup that lags behind the snapshot keeps its cause.
// ---------------------------------------------------------------------------------------

/// Rule: on the session whose events the view followed, a channel a snapshot no longer
/// lists waits `event_grace` for its Hangup, and ends with its cause when it comes.
///
/// CoreShowChannels items are written by the action handler from the channel cache, which
/// Asterisk updates when the snapshot is published; the AMI events reach the session later,
/// through the stasis->manager taskprocessor. `originate_async.raw` shows a directly
/// written message (OriginateResponse, Reason 4 = ;1 answered) overtaking the stasis
/// `Newstate ;1 Up` it depends on. So a channel that hung up just before the snapshot is
/// missing from it while its Hangup comes right after the list.
#[test]
fn a_hangup_lagging_behind_a_snapshot_on_the_same_session_keeps_its_cause() {
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 4, ""));
    t.feed(&ev("Newstate", "1.1", "1.1", 5, ""));
    // Something makes the tracker resync (a gap, an Originate in doubt...).
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
    t.pump();
    let id = t.take("CoreShowChannels");
    let mut bytes = list(&id, "CoreShowChannel", &[], "");
    bytes.extend(ev(
        "Hangup",
        "1.1",
        "1.1",
        5,
        "Cause: 17\nCause-txt: User busy",
    ));
    t.feed(&bytes);
    let updates = t.drain_updates();
    let report = updates
        .iter()
        .find_map(|u| match u {
            CallUpdate::Resynced(r) => Some(*r),
            _ => None,
        })
        .unwrap();
    assert_eq!((report.ended_unobserved, report.waiting_for_hangup), (0, 1));
    let ended: Vec<&EndedCall> = updates
        .iter()
        .filter_map(|u| match u {
            CallUpdate::CallEnded(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 1);
    assert_eq!((ended[0].cause(), ended[0].unobserved()), (Some(17), false));
    let stats = t.tr.stats();
    assert_eq!(
        (stats.unknown_channel_events, stats.ended_unobserved),
        (0, 0),
        "seen hanging up after all"
    );
}

/// Rule: the wait for a Hangup behind a snapshot is bounded: without it within
/// `event_grace`, the channel ends unobserved at the first input past it, noticed when the
/// snapshot showed it gone (no cause, no end time made up).
#[test]
fn a_channel_gone_from_a_snapshot_without_its_hangup_ends_unobserved_once_the_grace_passes() {
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 4, ""));
    t.feed(&ev("Newchannel", "2.1", "2.1", 6, ""));
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
    t.pump();
    let id = t.take("CoreShowChannels");
    t.feed(&list(&id, "CoreShowChannel", &[("2.1", "2.1", 6)], ""));
    let noticed = t.h.now;
    assert!(!t.tr.is_stale());
    assert!(
        t.tr.channel("1.1").is_none(),
        "the view equals the snapshot"
    );
    assert_eq!(
        t.tr.stats().ended_unobserved,
        1,
        "counted from the snapshot on"
    );
    t.feed(&ev("Newstate", "2.1", "2.1", 6, ""));
    assert!(t.ended().is_empty(), "its end waits for the grace");
    t.h.advance(Duration::from_secs(5));
    t.feed(&ev("Newstate", "2.1", "2.1", 6, ""));
    let ended = t.ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].linkedid, "1.1");
    assert!(ended[0].unobserved());
    assert_eq!(ended[0].cause(), None, "no cause is made up");
    assert!(matches!(
        ended[0].ended(),
        CallEnd::Unobserved { noticed: n, .. } if n == noticed
    ));
    assert!(t.tr.channel("1.1").is_none());
    assert_eq!(t.tr.stats().ended_unobserved, 1);
}

// ---------------------------------------------------------------------------------------
// The flood path keeps the snapshot's state for channels no state event reached.
// ---------------------------------------------------------------------------------------

/// Rule: in the flood path (events after a snapshot's mark applied at once), only an event
/// with a channel block (its state) or one that ends the channel makes the view newer than
/// the snapshot for that channel; one that only names its Uniqueid (a broadcast
/// OriginateResponse of another client, a Rename) does not shadow the snapshot.
#[test]
fn a_flood_event_without_channel_state_does_not_shadow_the_snapshot() {
    let config = TrackerConfig::builder()
        .tag_prefix("t")
        .max_buffered_events(4)
        .build()
        .unwrap();
    let mut t = T::with(config);
    t.live();
    t.items_first = true;
    t.feed(&ev("Newchannel", "1.1", "1.1", 5, "")); // ringing
    t.feed(&ev("Newchannel", "9.1", "9.1", 6, ""));
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 3 });
    t.pump();
    let id = t.take("CoreShowChannels");
    // Lost in the gap: 1.1 was answered and bridged. The snapshot says so.
    let mut out = format!("Response: Success\r\nActionID: {id}\r\nEventList: start\r\n\r\n");
    for (uid, state, bridge) in [("1.1", 6u8, "b-1"), ("9.1", 6, "")] {
        out += &format!(
            "Event: CoreShowChannel\r\nActionID: {id}\r\n{}BridgeId: {bridge}\r\n\r\n",
            block(uid, uid, state)
        );
    }
    out += &format!("Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 2\r\n\r\n");
    let mut bytes = out.into_bytes();
    // After the mark: 9.1 floods; another AMI client's Originate of 1.1 completes and its
    // OriginateResponse is broadcast (AMI-PROTOCOL section 7) naming 1.1's Uniqueid.
    for _ in 0..6 {
        bytes.extend(ev("Newstate", "9.1", "9.1", 6, ""));
    }
    bytes.extend_from_slice(
        b"Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: other-client-7\r\n\
          Response: Success\r\nChannel: PJSIP/1.1\r\nApplication: Wait\r\nData: 3\r\nReason: 4\r\n\
          Uniqueid: 1.1\r\nCallerIDNum: 100\r\nCallerIDName: Alice\r\n\r\n",
    );
    t.feed(&bytes);
    assert!(!t.tr.is_stale(), "the resync finished");
    assert_eq!(t.tr.stats().buffer_overflows, 1);
    let ch = t.tr.channel("1.1").unwrap();
    assert_eq!(
        (ch.state.code(), ch.bridge.as_deref()),
        (6, Some("b-1")),
        "no event after the mark changed 1.1: the snapshot's Up/b-1 stands"
    );
}

// ---------------------------------------------------------------------------------------
// Keys, sizes and names.
// ---------------------------------------------------------------------------------------

/// Rule: a channel is keyed one way everywhere (its Uniqueid's text, bytes that are not
/// UTF-8 replaced), so a Uniqueid a client chose (`ChannelId`, AMI-PROTOCOL.md section 7)
/// that is not UTF-8 still finds its channel at its Hangup.
#[test]
fn a_channel_with_a_non_utf8_uniqueid_leaves_the_view_at_its_hangup() {
    let mut t = T::new();
    t.live();
    let raw = |name: &str, extra: &str| -> Vec<u8> {
        let mut out = format!("Event: {name}\r\nChannel: PJSIP/caf").into_bytes();
        out.extend_from_slice(
            b"\xe9-00000001\r\nChannelState: 6\r\nUniqueid: caf\xe9-1\r\nLinkedid: caf\xe9-1\r\n",
        );
        out.extend_from_slice(extra.as_bytes());
        out.extend_from_slice(b"\r\n");
        out
    };
    t.feed(&raw("Newchannel", ""));
    assert_eq!(t.tr.channels().len(), 1, "tracked");
    t.feed(&raw("Hangup", "Cause: 16\r\n"));
    let ended = t.ended();
    assert_eq!(
        (
            t.tr.channels().len(),
            ended.len(),
            t.tr.stats().unknown_channel_events
        ),
        (0, 1, 0)
    );
    assert_eq!(ended[0].cause(), Some(16));
}

/// Rule: each text field a channel keeps is cut to `MAX_FIELD_BYTES` (at a character
/// boundary), counted in `fields_cut`, so `max_channels` bounds bytes ("about 1 KiB
/// each"), whatever display name a remote caller sent.
#[test]
fn a_channel_keeps_each_text_field_cut_to_max_field_bytes_and_counts_the_cut() {
    let mut t = T::new();
    t.live();
    let name = "A".repeat(512 * 1024);
    t.feed(&ev("Newchannel", "1.1", "1.1", 4, ""));
    // As Asterisk sends it: the channel block with the new caller ID.
    let long = format!(
        "Event: NewCallerid\r\nChannel: PJSIP/1.1\r\nChannelState: 4\r\nCallerIDNum: 100\r\n\
         CallerIDName: {name}\r\nConnectedLineName: {}\u{e9}{name}\r\nContext: default\r\n\
         Exten: 200\r\nPriority: 1\r\nUniqueid: 1.1\r\nLinkedid: 1.1\r\n\r\n",
        "A".repeat(MAX_FIELD_BYTES - 1)
    );
    t.feed(long.as_bytes());
    let ch = t.tr.channel("1.1").unwrap();
    assert_eq!(ch.caller_id_name.len(), MAX_FIELD_BYTES);
    assert_eq!(
        ch.connected_line_name,
        "A".repeat(MAX_FIELD_BYTES - 1),
        "cut before the character that straddles the cap"
    );
    let kept = ch.caller_id_name.len()
        + ch.connected_line_name.len()
        + ch.name.len()
        + ch.context.len()
        + ch.exten.len();
    assert!(kept <= 5 * MAX_FIELD_BYTES, "{kept} bytes kept");
    assert_eq!(t.tr.stats().fields_cut, 2);
}

/// Rule: event names are compared trimmed, as the client compares the words it acts on
/// (`Value::is_word`): `Event: Hangup ` (a trailing blank) ends the channel.
#[test]
fn a_padded_event_name_is_recognised() {
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel ", "1.1", "1.1", 4, ""));
    assert_eq!(t.tr.channel("1.1").unwrap().created, Some(t.h.now));
    t.feed(&ev("Hangup ", "1.1", "1.1", 4, "Cause: 16"));
    assert_eq!(t.tr.channels().len(), 0);
    assert_eq!(t.ended()[0].cause(), Some(16));
}

#[test]
fn lower_case_event_and_header_names_are_followed() {
    let mut t = T::new();
    t.live();
    t.feed(b"Event: newchannel\r\nchannel: PJSIP/a-1\r\nchannelstate: 4\r\nuniqueid: 1.1\r\nlinkedid: 1.1\r\n\r\n");
    assert_eq!(t.tr.channels().len(), 1);
    t.feed(b"Event: HANGUP\r\nCHANNEL: PJSIP/a-1\r\nCHANNELSTATE: 4\r\nUNIQUEID: 1.1\r\nLINKEDID: 1.1\r\nCAUSE: 17\r\n\r\n");
    assert_eq!(t.tr.channels().len(), 0);
    assert_eq!(t.ended()[0].cause(), Some(17));
}

// ---------------------------------------------------------------------------------------
// Replays of real captures.
// ---------------------------------------------------------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../shared/fixtures/asterisk-22.10.1/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Every message of a capture after the login, as (event name, message).
fn capture_messages(name: &str) -> Vec<ami_proto::Message> {
    let raw = fixture(name);
    let at = raw.windows(7).position(|w| w == b"Event: ").unwrap();
    let mut d = ami_proto::Decoder::without_banner(ami_proto::DecoderLimits::default());
    d.feed(&raw[at..]);
    let mut out = Vec::new();
    while let Some(frame) = d.decode() {
        if let Ok(ami_proto::Frame::Message(m)) = frame {
            out.push(m);
        }
    }
    out
}

/// Rewrites a field's value: (key, value) to the new value.
type MapField<'a> = &'a dyn Fn(&[u8], &[u8]) -> Vec<u8>;

fn wire_with(m: &ami_proto::Message, map: MapField<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for f in m.fields() {
        out.extend_from_slice(f.key);
        out.extend_from_slice(b": ");
        out.extend(map(f.key, f.value.as_bytes()));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `originate_async.raw` replayed as the answer to the tracker's own Originate: its
/// `Variable: FOO=bar` stands in for the tag (same VarSet positions, on ;1 and ;2), its
/// ActionID is the client's.
#[test]
fn the_real_async_originate_capture_runs_then_ends() {
    let mut t = T::new();
    t.live();
    let tag = t.tr.originate(async_originate()).unwrap();
    t.pump();
    let id = id_of(&t.h.take("Originate")).to_string();
    let tagv = tag.as_str().to_string();
    let map = |k: &[u8], v: &[u8]| -> Vec<u8> {
        if k.eq_ignore_ascii_case(b"ActionID") && v == b"orig-async-1" {
            id.as_bytes().to_vec()
        } else if k == b"Variable" && v == b"FOO" {
            b"AMIRS_ORIGINATE".to_vec()
        } else if k == b"Value" && v == b"bar" {
            tagv.as_bytes().to_vec()
        } else {
            v.to_vec()
        }
    };
    let mut states = Vec::new();
    for m in capture_messages("originate_async.raw") {
        if m.response().is_some() && m.event().is_none() {
            // The response to the Originate itself (and the Logoff's): only ours matters.
            if m.action_id() == Some("orig-async-1") {
                t.feed(&wire_with(&m, &map));
            }
            continue;
        }
        t.feed(&wire_with(&m, &map));
        for u in t.drain_updates() {
            if let CallUpdate::Originate { state, .. } = u {
                states.push(state);
            }
        }
    }
    assert_eq!(
        states,
        [
            OriginateState::Running {
                channels: vec!["1795423110.4".into(), "1795423110.5".into()]
            },
            // ;1 hangs up first, then ;2; both with `Cause: 0` / `Cause-txt: Unknown` on
            // the wire (a normal end of Wait(3)): passed through as Some(0).
            OriginateState::Running {
                channels: vec!["1795423110.5".into()]
            },
            OriginateState::Ended {
                cause: Some(0),
                unobserved: false
            },
        ],
    );
    assert_eq!(t.tr.channels().len(), 0);
    assert!(!t.tr.is_stale());
}

/// `event_stream_20s.raw`: a tracker started in the middle of the capture (its first
/// snapshot built from a tracker that saw it all) ends with nothing left either.
#[test]
fn a_tracker_started_mid_capture_leaves_nothing_behind() {
    let msgs: Vec<ami_proto::Message> = capture_messages("event_stream_20s.raw")
        .into_iter()
        .filter(|m| m.event().is_some() && m.action_id().is_none())
        .collect();
    let id = |_: &[u8], v: &[u8]| v.to_vec();
    for cut in [150usize, 300, 500, 700] {
        let mut a = T::new();
        a.live();
        for m in &msgs[..cut] {
            a.feed(&wire_with(m, &id));
        }
        let chans: Vec<(String, String, u8)> =
            a.tr.channels()
                .map(|c| (c.uniqueid.clone(), c.linkedid.clone(), c.state.code()))
                .collect();
        let refs: Vec<(&str, &str, u8)> = chans
            .iter()
            .map(|(u, l, s)| (u.as_str(), l.as_str(), *s))
            .collect();
        let mut b = T::new();
        b.channels(&refs, "Duration: 00:00:01");
        assert!(!b.tr.is_stale());
        for m in &msgs[cut..] {
            b.feed(&wire_with(m, &id));
        }
        assert_eq!(
            b.tr.channels().len(),
            0,
            "cut {cut}: {} adopted",
            refs.len()
        );
        assert_eq!(b.tr.stats().calls, 0);
    }
}

/// The tracker has no clock: its bounded waits end at `handle_timeout`, which the
/// application calls once `poll_timeout` is due, whether or not anything else happens. An
/// answered Originate whose channel never shows on a server that stays quiet leaves
/// `Pending` within the grace.
#[test]
fn an_answered_originate_waiting_for_its_channel_leaves_pending_on_a_quiet_server() {
    let mut t = T::with(
        TrackerConfig::builder()
            .tag_prefix("t")
            .event_grace(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    t.live();
    let tag = t.tr.originate(async_originate()).unwrap();
    t.pump();
    let id = t.take("Originate");
    t.feed(&originate_response(&id, "77.1"));
    assert_eq!(t.tr.originate_state(&tag), Some(&OriginateState::Pending));
    let due = t.tr.poll_timeout().expect("a wait to end");
    for _ in 0..10 {
        t.tick();
        t.pump();
    }
    assert!(t.h.now > due);
    assert_ne!(
        t.tr.originate_state(&tag),
        Some(&OriginateState::Pending),
        "10 s past a 5 s grace with nothing else happening"
    );
}

#[test]
fn a_channel_listed_again_by_the_next_snapshot_is_not_counted_ended_unobserved() {
    let mut t = T::new();
    t.live();
    t.feed(&ev("Newchannel", "1.1", "1.1", 6, ""));
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
    t.pump();
    t.channels(&[], "");
    assert_eq!(t.tr.stats().ended_unobserved, 1);
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
    t.pump();
    t.channels(&[("1.1", "1.1", 6)], "");
    assert!(t.tr.channel("1.1").is_some(), "back in the view, live");
    t.feed(&ev("Newstate", "1.1", "1.1", 6, ""));
    assert!(t.ended().is_empty());
    assert_eq!(
        t.tr.stats().ended_unobserved,
        0,
        "a live channel is not ended"
    );
}

/// Channel A is gone from a snapshot (it ended before it, unseen); channel B of the same
/// call hangs up after the snapshot with cause 17; A's unobserved end is applied later, when
/// its grace runs out. The call ended with B: its cause is the Originate's.
#[test]
fn an_unobserved_end_applied_late_does_not_erase_the_cause_of_the_channel_that_ended_last() {
    let mut t = T::new();
    t.live();
    let tag = t.tr.originate(local_originate()).unwrap();
    t.pump();
    let id = t.take("Originate");
    let l = "40.1";
    t.feed(&ev("Newchannel", "40.1", l, 0, ""));
    t.feed(&tag_varset("40.1", l, 0, tag.as_str()));
    t.feed(&ev("Newchannel", "40.2", l, 6, ""));
    t.feed(&originate_response(&id, "40.1"));
    assert!(matches!(
        t.tr.originate_state(&tag),
        Some(OriginateState::Running { .. })
    ));
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
    t.pump();
    let cs = t.take("CoreShowChannels");
    t.feed(&list(&cs, "CoreShowChannel", &[("40.2", l, 6)], ""));
    t.drain_updates();
    t.feed(&ev("Hangup", "40.2", l, 6, "Cause: 17"));
    t.h.advance(Duration::from_secs(6));
    t.pump();
    let states = originate_states(t.drain_updates());
    assert_eq!(
        states,
        [OriginateState::Ended {
            cause: Some(17),
            unobserved: true
        }]
    );
}

/// An answered Originate linked by another of its channels than the answered one (that one
/// never entered the view: it came at the channel cap) leaves nothing behind once it ends.
#[test]
fn an_answered_uid_linked_through_another_channel_leaves_no_entry_behind() {
    let mut t = T::with(
        TrackerConfig::builder()
            .tag_prefix("t")
            .max_channels(1)
            .build()
            .unwrap(),
    );
    t.live();
    t.feed(&ev("Newchannel", "7.1", "7.1", 6, ""));
    let tag = t.tr.originate(async_originate()).unwrap();
    t.pump();
    let id = t.take("Originate");
    t.feed(&originate_response(&id, "50.1"));
    t.feed(&ev("Newchannel", "50.1", "50.1", 0, "")); // at the cap: not tracked
    t.feed(&ev("Hangup", "7.1", "7.1", 6, "Cause: 16"));
    t.feed(&ev("Newchannel", "50.2", "50.1", 4, ""));
    t.feed(&tag_varset("50.2", "50.1", 4, tag.as_str()));
    assert!(matches!(
        t.tr.originate_state(&tag),
        Some(OriginateState::Running { .. })
    ));
    t.feed(&ev("Hangup", "50.2", "50.1", 6, "Cause: 16"));
    assert_eq!(t.tr.originate_state(&tag), None, "final and forgotten");
    let dbg = format!("{:?}", t.tr);
    let start = dbg.find("answered_uids").unwrap();
    let field = &dbg[start..start + dbg[start..].find('}').unwrap() + 1];
    assert_eq!(
        field, "answered_uids: {}",
        "an entry outlives its Originate"
    );
}

/// Rule: an `event_grace` too long for an `Instant` (`Duration::MAX` as "wait for ever")
/// is refused when the config is built, as every duration setting of a `ClientConfig` is:
/// `now + grace` cannot be held, and a wait that saturated to `now` would end at once (an
/// answered Originate in doubt at the first input after its answer, a resync for a call
/// that is ringing). The longest accepted, a year, waits a year.
#[test]
fn an_event_grace_too_long_for_an_instant_is_refused_instead_of_ending_every_wait_at_once() {
    let endless = TrackerConfig::builder()
        .tag_prefix("t")
        .event_grace(Duration::MAX)
        .build();
    assert!(
        endless
            .as_ref()
            .is_err_and(|e| e.to_string().contains("event_grace")),
        "an event_grace beyond a year is refused, not saturated to no wait at all: {endless:?}"
    );
    let config = TrackerConfig::builder()
        .tag_prefix("t")
        .event_grace(ami_proto::MAX_SETTING_DURATION)
        .build()
        .unwrap();
    let mut t = T::with(config);
    t.live();
    let tag = t.tr.originate(async_originate()).unwrap();
    t.pump();
    let id = id_of(&t.h.take("Originate")).to_string();
    t.feed(&originate_response(&id, "22.1"));
    t.feed(&ev("Newchannel", "8.1", "8.1", 4, ""));
    t.h.advance(Duration::from_secs(86_400));
    t.feed(&ev("Newstate", "8.1", "8.1", 6, ""));
    assert!(t.tr.poll_timeout().is_some_and(|at| at > t.h.now));
    assert_eq!(t.tr.originate_state(&tag), Some(&OriginateState::Pending));
    assert!(!in_doubt_seen(&t.drain_updates()));
    assert!(
        !t.h.inbox_actions().iter().any(|a| a == "CoreShowChannels"),
        "no resync"
    );
}
