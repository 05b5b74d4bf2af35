//! Answers that come after their action ended (timed out, cancelled) are dropped, since
//! nobody waits for them, and counted: an operator tuning `action_timeout` sees how many
//! answers came too late.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{Action, ActionError, ClientConfig, StreamItem};
use scripted::{list_complete, list_item, list_start, msg, pong, Harness};
use std::time::{Duration, Instant};

fn ready() -> Harness {
    Harness::ready_now(9, Duration::from_secs(5))
}

#[test]
fn late_responses_follow_ups_and_list_completes_are_counted_when_dropped() {
    let mut h = ready();
    let before = h.client.stats().late_answers_dropped;

    // A Ping that timed out, then its Pong.
    let ping = h.send(Action::new("Ping"));
    h.take("Ping");
    h.advance(Duration::from_secs(6));
    assert!(matches!(
        h.outcome(&ping),
        Err(ActionError::TimedOut { .. })
    ));
    h.feed(&pong(ping.as_str()));
    assert_eq!(h.client.stats().late_answers_dropped - before, 1);

    // A FAXStats cancelled once written: its response, then its data event.
    let fax = h.send(Action::new("FAXStats"));
    h.take("FAXStats");
    assert!(h.client.cancel(h.now, &fax));
    let id = fax.as_str();
    h.feed(&msg(&[("Response", "Success"), ("ActionID", id)]));
    h.feed(&msg(&[
        ("Event", "FAXStats"),
        ("ActionID", id),
        ("CurrentSessions", "0"),
    ]));
    assert_eq!(h.client.stats().late_answers_dropped - before, 3);

    // A list that timed out after its start: its items are list drops, its Complete a late
    // answer.
    let list = h.send(Action::new("CoreShowChannels"));
    h.take("CoreShowChannels");
    let id = list.as_str();
    h.feed(&msg(&[
        ("Response", "Success"),
        ("ActionID", id),
        ("EventList", "start"),
        ("Message", "Channels will follow"),
    ]));
    h.advance(Duration::from_secs(6));
    h.feed(&msg(&[("Event", "CoreShowChannel"), ("ActionID", id)]));
    h.feed(&msg(&[
        ("Event", "CoreShowChannelsComplete"),
        ("ActionID", id),
        ("EventList", "Complete"),
        ("ListItems", "1"),
    ]));
    let stats = h.client.stats();
    assert_eq!(stats.late_answers_dropped - before, 4);
    assert_eq!(stats.list_items_dropped, 1);
    assert!(
        !h.events()
            .iter()
            .any(|i| matches!(i, StreamItem::Event(e) if e.action_id().is_some())),
        "no late answer reaches the stream"
    );
}

#[test]
fn a_list_that_timed_out_before_its_start_swallows_its_items_and_complete() {
    let mut h = ready();
    let list = h.send(Action::new("CoreShowChannels"));
    h.take("CoreShowChannels");
    h.advance(Duration::from_secs(6));
    assert!(matches!(
        h.outcome(&list),
        Err(ActionError::TimedOut { .. })
    ));
    let id = list.as_str();
    h.feed(&list_start(id));
    h.feed(&list_item(id, 1));
    h.feed(&list_item(id, 2));
    h.feed(&list_complete(id, 2));
    let stats = h.client.stats();
    assert_eq!(stats.late_answers_dropped, 2, "its start and its Complete");
    assert_eq!(stats.list_items_dropped, 2);
    assert_eq!(stats.unmatched, 0);
    assert!(
        !h.events()
            .iter()
            .any(|i| matches!(i, StreamItem::Event(e) if e.action_id().is_some())),
        "no item of the late list reaches the stream"
    );
}

#[test]
fn an_originate_response_that_came_before_the_response_of_an_originate_cancelled_reaches_the_stream(
) {
    // Cancelled (or timed out) once its OriginateResponse had come but not its Response:
    // the event says how a call that may be ringing ended, as a late one does.
    let mut h = ready();
    let o = h.send(scripted::async_originate(30_000));
    h.take("Originate");
    h.feed(&scripted::originate_response(o.as_str(), true));
    assert!(h.client.cancel(h.now, &o));
    h.feed(&scripted::originate_queued(o.as_str()));
    let got = h
        .events()
        .into_iter()
        .filter(|i| matches!(i, StreamItem::Event(m) if m.event() == Some("OriginateResponse")))
        .count();
    assert_eq!(got, 1);
}

#[test]
fn a_data_event_that_came_before_the_response_of_an_action_cancelled_is_dropped_and_counted() {
    // FAXStats's data event, ahead of its response, then the action is cancelled: the data
    // was its caller's alone, so it is a late answer (counted), not an event of the stream.
    let mut h = ready();
    let fax = h.send(Action::new("FAXStats"));
    h.take("FAXStats");
    let id = fax.as_str();
    h.feed(&msg(&[
        ("Event", "FAXStats"),
        ("ActionID", id),
        ("CurrentSessions", "0"),
    ]));
    assert!(h.client.cancel(h.now, &fax));
    assert_eq!(h.client.stats().late_answers_dropped, 1);
    assert!(
        !h.events()
            .iter()
            .any(|i| matches!(i, StreamItem::Event(e) if e.action_id().is_some())),
        "the data event does not reach the stream"
    );
}

#[test]
fn an_originate_response_that_came_before_a_lost_sessions_response_reaches_the_stream_before_its_end(
) {
    let mut h = ready();
    let o = h.send(scripted::async_originate(30_000));
    h.take("Originate");
    h.feed(&scripted::originate_response(o.as_str(), true));
    h.eof();
    let labels: Vec<String> = h.events().iter().map(scripted::stream_label).collect();
    let at = labels
        .iter()
        .position(|l| l.starts_with("OriginateResponse"));
    let down = labels.iter().position(|l| l.starts_with("down"));
    assert!(
        matches!((at, down), (Some(a), Some(d)) if a < d),
        "the event, then the session's end: {labels:?}"
    );
}

/// A session where one Ping fills the pipeline, an async Originate queued behind it when the
/// session is lost, and the session after it Ready with the Originate written on it: the
/// Originate keeps the ActionID it was given on the lost connection.
fn originate_queued_across_a_reconnect() -> (Harness, ami_proto::ActionId) {
    let cfg = ClientConfig::builder("admin", "amp111")
        .events("on")
        .seed(9)
        .pipeline_depth(1)
        .ping_interval(Duration::from_secs(3600))
        .action_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, Instant::now());
    h.ready();
    h.send(Action::new("Ping"));
    h.take("Ping");
    let o = h.send(scripted::async_originate(30_000));
    assert!(
        !h.inbox_actions().iter().any(|a| a == "Originate"),
        "queued behind the Ping"
    );
    let login = h.lose_and_reconnect_to_login();
    h.feed(&scripted::login_ok(scripted::id_of(&login)));
    h.take("Originate");
    assert!(
        !o.as_str().starts_with(h.client.action_id_prefix()),
        "the Originate carries the lost connection's prefix"
    );
    h.events();
    (h, o)
}

#[test]
fn an_unclaimed_originate_response_reaches_the_stream_when_its_originate_was_queued_across_a_reconnect(
) {
    let (mut h, o) = originate_queued_across_a_reconnect();
    h.feed(&scripted::originate_queued(o.as_str()));
    h.feed(&scripted::originate_response(o.as_str(), true));
    let outcome = h.outcome(&o).clone();
    assert!(outcome.as_ref().is_ok_and(|r| r.follow_up().is_some()));
    // The caller went away: the event this session received says how the call ended.
    h.client.unclaimed(h.now, &o, None, outcome);
    let got = h
        .events()
        .into_iter()
        .filter(|i| matches!(i, StreamItem::Event(m) if m.event() == Some("OriginateResponse")))
        .count();
    assert_eq!(got, 1, "the OriginateResponse must reach the stream");
}

#[test]
fn an_early_originate_response_reaches_the_stream_when_its_originate_was_queued_across_a_reconnect()
{
    let (mut h, o) = originate_queued_across_a_reconnect();
    h.feed(&scripted::originate_response(o.as_str(), true));
    assert!(h.client.cancel(h.now, &o));
    h.feed(&scripted::originate_queued(o.as_str()));
    let got = h
        .events()
        .into_iter()
        .filter(|i| matches!(i, StreamItem::Event(m) if m.event() == Some("OriginateResponse")))
        .count();
    assert_eq!(got, 1, "the OriginateResponse must reach the stream");
}
