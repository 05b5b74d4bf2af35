//! The call tracker on a clock that jumps: a VM suspended and resumed wakes the application
//! loop hours later, with the server's bytes and the tracker's due waits in the same turn.
//! What that turn reads was sent by the server; a wait it satisfies is not over for lack of
//! it (as for the client's actions, whose answers in a read count before the deadlines
//! the same turn handles).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;
#[path = "support/tracker.rs"]
mod tracker;

use ami_proto::calls::{CallUpdate, OriginateState, StaleReason, TrackerConfig};
use ami_proto::Action;
use scripted::id_of;
use std::time::Duration;
use tracker::{ev, list, T};

/// A suspended VM resumed: far past any grace.
const SUSPENDED: Duration = Duration::from_secs(2 * 3600);

fn tracker() -> T {
    let config = TrackerConfig::builder()
        .tag_prefix("t")
        .event_grace(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut t = T::with(config);
    t.live();
    t
}

/// Time jumps by `d`, then `bytes` arrive and the application takes one turn (items, then
/// the tracker's due waits), as the first turn after a resume does.
fn resume_with(t: &mut T, d: Duration, bytes: &[u8]) {
    t.h.advance(d);
    t.h.feed(bytes);
    t.pump();
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

/// Rule: the Hangup a channel missing from a snapshot waits for, read in the same turn
/// that finds its grace over, ends the channel with its cause: it came.
#[test]
fn a_hangup_read_in_the_turn_its_grace_ends_keeps_its_cause() {
    let mut t = tracker();
    t.feed(&ev("Newchannel", "1.1", "1.1", 4, ""));
    t.feed(&ev("Newstate", "1.1", "1.1", 5, ""));
    t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
    t.pump();
    let id = t.take("CoreShowChannels");
    t.feed(&list(&id, "CoreShowChannel", &[], ""));
    assert!(t.ended().is_empty(), "its end waits for the Hangup");
    resume_with(
        &mut t,
        SUSPENDED,
        &ev("Hangup", "1.1", "1.1", 5, "Cause: 17\nCause-txt: User busy"),
    );
    let ended = t.ended();
    assert_eq!(ended.len(), 1, "{ended:#?}");
    assert_eq!(
        (ended[0].cause(), ended[0].unobserved()),
        (Some(17), false),
        "the Hangup in hand was seen: {ended:#?}"
    );
}

/// Rule: the channel event an answered Originate waits for, read in the same turn that
/// finds its grace over, runs it: it is not in doubt, and no resync looks for it.
#[test]
fn an_originates_channel_event_read_in_the_turn_its_grace_ends_runs_it() {
    let mut t = tracker();
    let tag =
        t.tr.originate(
            Action::new("Originate")
                .field("Channel", "Local/wait10@ami-test")
                .field("Application", "Wait")
                .field("Data", "3")
                .field("Async", "true"),
        )
        .unwrap();
    t.pump();
    let id = id_of(&t.h.take("Originate")).to_string();
    t.feed(
        format!(
            "Response: Success\r\nActionID: {id}\r\nMessage: Originate successfully queued\r\n\r\n\
             Event: OriginateResponse\r\nActionID: {id}\r\nResponse: Success\r\n\
             Channel: Local/wait10@ami-test-00000002;1\r\nReason: 4\r\nUniqueid: 30.1\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(t.tr.originate_state(&tag), Some(&OriginateState::Pending));
    resume_with(&mut t, SUSPENDED, &ev("Newchannel", "30.1", "30.1", 0, ""));
    let updates = t.drain_updates();
    assert!(!in_doubt_seen(&updates), "its channel came: {updates:#?}");
    let asked = t.h.inbox_actions();
    assert!(
        !asked
            .iter()
            .any(|a| a == "CoreShowChannels" || a == "Status"),
        "no resync (the client's own heartbeat Ping aside): {asked:?}"
    );
    assert_eq!(
        t.tr.originate_state(&tag),
        Some(&OriginateState::Running {
            channels: vec!["30.1".into()]
        })
    );
}

/// Rule: a snapshot read in the turn that finds a missing channel's grace over, and that
/// lists the channel again, brings it back (it is live after all): no call ends for it and
/// it is not adopted anew. The snapshot's answer and its stream mark come out of the client
/// together; whichever of them the application feeds first must not end the wait the other
/// settles. Both orders are tried.
#[test]
fn a_snapshot_read_in_the_turn_a_missing_channels_grace_ends_brings_it_back_without_a_call_end() {
    for items_first in [false, true] {
        let mut t = tracker();
        t.items_first = items_first;
        t.feed(&ev("Newchannel", "1.1", "1.1", 4, ""));
        t.feed(&ev("Newstate", "1.1", "1.1", 6, ""));
        t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
        t.pump();
        let id = t.take("CoreShowChannels");
        t.feed(&list(&id, "CoreShowChannel", &[], ""));
        assert!(t.ended().is_empty(), "its end waits for the Hangup");
        assert!(t.tr.channel("1.1").is_none(), "out of the view meanwhile");
        // Another gap: one more snapshot, answered while the VM is suspended.
        t.tr.handle_item(t.h.now, &ami_proto::StreamItem::Gap { dropped: 1 });
        t.pump();
        let id = t.take("CoreShowChannels");
        // The answer is read before the client's deadlines fire (as its drivers do): it is
        // not timed out, it came.
        t.h.now += SUSPENDED;
        t.h.feed(&list(&id, "CoreShowChannel", &[("1.1", "1.1", 6)], ""));
        t.h.advance(Duration::ZERO);
        t.pump();
        let ended = t.ended();
        assert!(
            ended.is_empty(),
            "items first: {items_first}: the snapshot in hand lists it: {ended:#?}"
        );
        let ch = t.tr.channel("1.1").expect("back in the view");
        assert!(
            !ch.adopted,
            "items first: {items_first}: the same channel, not adopted anew: {ch:#?}"
        );
    }
}
