//! Abandoned entries (actions that ended after their bytes were handed out, kept to
//! swallow their late answers for a grace period) count against no caller cap: the client
//! caps them itself (`max_abandoned_actions`), evicting the oldest, and an evicted action's
//! late answer is still counted and dropped, never streamed as an unsolicited event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{Action, ActionError, ActionId, ClientConfig, DisconnectReason, StreamItem};
use scripted::{
    list_complete, list_item, list_start, originate_queued, originate_response, pong, Harness, Out,
};
use std::time::{Duration, Instant};

const MAX_PENDING: usize = 100;

fn config() -> ami_proto::ClientConfigBuilder {
    ClientConfig::builder("admin", "amp111")
        .events("on")
        .seed(11)
        .ping_interval(Duration::from_secs(3600))
        .action_timeout(Duration::from_secs(30))
        .pipeline_depth(4)
        .max_queued_actions(50)
        .max_pending_actions(MAX_PENDING)
}

fn ready(cfg: ClientConfig) -> Harness {
    let mut h = Harness::new(cfg, Instant::now());
    h.ready();
    h.events();
    h
}

#[test]
fn actions_sent_and_cancelled_against_a_silent_server_leave_a_bounded_number_of_abandoned_entries()
{
    // `tokio::time::timeout(d, ami.send(a))` on every action against a server that stopped
    // answering: each action is written, then cancelled, freeing its pipeline slot for the
    // next one. Its entry stays for the grace period (action_timeout) to swallow the late
    // answer. Before: nothing capped those entries; 5,000 rounds within one grace period
    // left 5,000 of them, fifty times max_pending_actions.
    let mut h = ready(config().build().unwrap());
    let mut most = 0;
    for _ in 0..5_000 {
        let id = h.send(Action::new("Ping"));
        h.take("Ping");
        assert!(h.client.cancel(h.now, &id));
        h.drain();
        h.advance(Duration::from_millis(1));
        most = most.max(h.client.stats().abandoned_actions);
    }
    let stats = h.client.stats();
    assert_eq!(stats.pending, 0);
    assert!(
        most <= MAX_PENDING,
        "abandoned entries grew to {most}, past max_pending_actions ({MAX_PENDING})"
    );
    assert_eq!(stats.abandoned_actions, MAX_PENDING);
    assert_eq!(stats.abandoned_evicted, 5_000 - MAX_PENDING as u64);
}

/// Sends a Ping, lets it be written, and cancels it: one more abandoned entry.
fn send_and_cancel(h: &mut Harness) -> ActionId {
    let id = h.send(Action::new("Ping"));
    assert!(h.client.cancel(h.now, &id));
    h.drain();
    assert_eq!(h.outcome(&id), &Err(ActionError::Cancelled));
    id
}

/// Stream items that carry an ActionID (answers that leaked into the stream) or say
/// server input was discarded.
fn leaked(h: &mut Harness) -> Vec<StreamItem> {
    h.events()
        .into_iter()
        .filter(|i| match i {
            StreamItem::Event(e) => e.action_id().is_some(),
            StreamItem::Discarded { .. } => true,
            _ => false,
        })
        .collect()
}

#[test]
fn the_cap_defaults_to_max_pending_actions_and_can_be_set() {
    let c = config().build().unwrap();
    assert_eq!(c.max_abandoned_actions(), MAX_PENDING);
    let c = config().max_abandoned_actions(7).build().unwrap();
    assert_eq!(c.max_abandoned_actions(), 7);
    let err = config().max_abandoned_actions(0).build().unwrap_err();
    assert!(err.to_string().contains("max_abandoned_actions"), "{err}");
}

#[test]
fn an_evicted_actions_late_answers_are_dropped_and_counted_never_streamed_or_taken_for_strays() {
    let mut h = ready(config().max_abandoned_actions(2).build().unwrap());
    // A list cancelled while its items still come: its entry swallows them.
    let list = h.send(Action::new("CoreShowChannels"));
    h.take("CoreShowChannels");
    h.feed(&list_start(list.as_str()));
    h.feed(&list_item(list.as_str(), 1));
    assert!(h.client.cancel(h.now, &list));
    h.drain();
    h.feed(&list_item(list.as_str(), 2));
    assert_eq!(h.client.stats().list_items_dropped, 1);
    // Two more ended actions: the list, the oldest, is forgotten.
    let first = send_and_cancel(&mut h);
    let second = send_and_cancel(&mut h);
    let s = h.client.stats();
    assert_eq!((s.abandoned_actions, s.abandoned_evicted), (2, 1));
    // Its items and Complete still come: dropped and counted, not events of the stream.
    h.feed(&list_item(list.as_str(), 3));
    h.feed(&list_item(list.as_str(), 4));
    h.feed(&list_complete(list.as_str(), 4));
    let s = h.client.stats();
    assert_eq!(s.evicted_answers_dropped, 3);
    assert_eq!(s.list_items_dropped, 1);
    // One more: the first Ping is forgotten; its late Pong is its answer, not a stray.
    let _third = send_and_cancel(&mut h);
    h.feed(&pong(first.as_str()));
    h.feed(&pong(second.as_str()));
    let s = h.client.stats();
    assert_eq!(s.abandoned_evicted, 2);
    assert_eq!(s.evicted_answers_dropped, 4);
    assert_eq!(
        s.late_answers_dropped, 1,
        "the second's entry was still there"
    );
    assert_eq!((s.unmatched, s.discarded), (0, 0));
    assert_eq!(leaked(&mut h), Vec::<StreamItem>::new());
    // A response whose ActionID is no action of ours is still a stray.
    h.feed(&pong("someone-else-1"));
    assert_eq!(h.client.stats().unmatched, 1);
}

#[test]
fn an_evicted_async_originates_originate_response_still_reaches_the_stream() {
    let mut h = ready(config().max_abandoned_actions(1).build().unwrap());
    let o = h.send(scripted::async_originate(30_000));
    h.take("Originate");
    assert!(h.client.cancel(h.now, &o));
    h.drain();
    send_and_cancel(&mut h);
    assert_eq!(h.client.stats().abandoned_evicted, 1);
    h.feed(&originate_queued(o.as_str()));
    h.feed(&originate_response(o.as_str(), true));
    assert_eq!(h.client.stats().evicted_answers_dropped, 1);
    let events = h.events();
    assert!(
        events
            .iter()
            .any(|i| matches!(i, StreamItem::Event(e) if e.event() == Some("OriginateResponse"))),
        "{events:?}"
    );
}

fn sync_originate(timeout_ms: u64) -> Action {
    Action::new("Originate")
        .field("Channel", "Local/100@ami-test")
        .field("Exten", "100")
        .field("Context", "ami-test")
        .field("Priority", "1")
        .field("Timeout", timeout_ms.to_string())
}

fn sync_config() -> ami_proto::ClientConfigBuilder {
    config()
        .ping_interval(Duration::from_secs(20))
        .pong_timeout(Duration::from_secs(10))
        .originate_margin(Duration::from_secs(10))
        .allow_sync_originate(true)
        .max_abandoned_actions(1)
}

#[test]
fn a_cancelled_sync_originate_that_blocks_the_session_is_evicted_after_the_other_abandoned_entries()
{
    let mut h = ready(sync_config().build().unwrap());
    let o = h.send(sync_originate(600_000));
    assert!(h.client.cancel(h.now, &o));
    h.drain();
    // The Ping cancelled after it is newer, but the Originate blocks the server's session.
    send_and_cancel(&mut h);
    let s = h.client.stats();
    assert_eq!((s.abandoned_actions, s.abandoned_evicted), (1, 1));
    h.feed(&originate_queued(o.as_str()));
    let s = h.client.stats();
    assert_eq!((s.late_answers_dropped, s.evicted_answers_dropped), (1, 0));
}

#[test]
fn an_evicted_cancelled_sync_originate_no_longer_holds_the_heartbeat() {
    let t0 = Instant::now();
    let mut h = Harness::new(sync_config().build().unwrap(), t0);
    h.ready();
    h.take_all();
    // Two cancelled sync Originates, ringing up to 10 minutes and 1 s: at the cap the
    // first is forgotten, and with it its hold; the second's ends at 11 s.
    for timeout_ms in [600_000, 1_000] {
        let o = h.send(sync_originate(timeout_ms));
        assert!(h.client.cancel(h.now, &o));
        h.drain();
    }
    assert_eq!(h.client.stats().abandoned_evicted, 1);
    let mut down = None;
    for s in (5..=120).step_by(5) {
        let out = h.advance_to(t0 + Duration::from_secs(s));
        if out
            .iter()
            .any(|o| matches!(o, Out::Disconnected(DisconnectReason::HeartbeatTimeout, _)))
        {
            down = Some(s);
            break;
        }
    }
    // Idle from 0 s, the Ping at 20 s, its pong deadline at 30 s.
    assert_eq!(down, Some(30));
}

#[test]
fn lent_bytes_of_an_evicted_action_given_back_are_withdrawn_not_written_later() {
    let mut h = ready(config().max_abandoned_actions(1).build().unwrap());
    h.take_all();
    h.room = Some(0);
    let first = h.send(Action::new("Ping"));
    assert!(!h.client.lend_transmit().is_empty());
    assert!(h.client.cancel(h.now, &first));
    let second = h.send(Action::new("Ping"));
    assert!(!h.client.lend_transmit().is_empty());
    assert!(h.client.cancel(h.now, &second));
    h.drain();
    assert_eq!(h.client.stats().abandoned_evicted, 1);
    h.client.unlend_transmit();
    assert_eq!(h.client.stats().actions_withdrawn, 2);
    assert!(h.client.transmit().is_empty(), "neither Ping leaves");
    h.room = None;
    h.advance(Duration::from_secs(1));
    assert!(
        !h.written
            .iter()
            .any(|(_, m)| m.action_id() == Some(first.as_str())
                || m.action_id() == Some(second.as_str())),
        "a cancelled action was written after it was given back"
    );
}

#[test]
fn lent_bytes_of_an_action_past_its_grace_period_given_back_are_withdrawn_not_written_later() {
    // The same without eviction: a write that stays pending past the grace period (the
    // server stopped reading), then fails and gives its bytes back.
    let mut h = ready(config().build().unwrap());
    h.take_all();
    h.room = Some(0);
    let id = h.send(Action::new("Ping"));
    assert!(!h.client.lend_transmit().is_empty());
    assert!(h.client.cancel(h.now, &id));
    h.drain();
    h.advance(Duration::from_secs(31));
    assert_eq!(
        h.client.stats().abandoned_actions,
        0,
        "its grace period is over"
    );
    h.client.unlend_transmit();
    assert_eq!(h.client.stats().actions_withdrawn, 1);
    assert!(h.client.transmit().is_empty(), "the Ping never leaves");
    h.room = None;
    h.advance(Duration::from_secs(1));
    assert!(
        !h.written
            .iter()
            .any(|(_, m)| m.action_id() == Some(id.as_str())),
        "a cancelled action was written 31 s after it was cancelled"
    );
}
