//! An action completed by a follow-up (an async Originate's `OriginateResponse`, res_fax's
//! `FAXStats`) completes only with that follow-up: another event that happens to carry its
//! ActionID neither completes it nor is swallowed, so no action reads as answered from a
//! message that does not answer it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::StreamItem;
use scripted::{msg, Harness};
use std::time::Duration;

fn ready() -> Harness {
    Harness::ready_now(5, Duration::from_secs(5))
}

fn stream_event_names(h: &mut Harness) -> Vec<String> {
    h.events()
        .into_iter()
        .filter_map(|i| match i {
            StreamItem::Event(m) => m.event().map(str::to_string),
            _ => None,
        })
        .collect()
}

#[test]
fn an_event_echoing_an_async_originates_action_id_is_not_its_originate_response() {
    let mut h = ready();
    let o = h.send(scripted::async_originate(30_000));
    h.take("Originate");
    h.feed(&scripted::originate_queued(o.as_str()));
    // Any event with the Originate's ActionID, other than its OriginateResponse, waiting
    // for its answer: it is no answer, and goes to the stream like any other event.
    h.feed(&msg(&[
        ("Event", "VarSet"),
        ("Privilege", "dialplan,all"),
        ("ActionID", o.as_str()),
        ("Variable", "X"),
    ]));
    assert!(h.outcomes(&o).is_empty(), "{:?}", h.outcomes(&o));
    assert_eq!(stream_event_names(&mut h), ["VarSet"]);
    h.feed(&scripted::originate_response(o.as_str(), true));
    let response = h.outcome(&o).as_ref().unwrap();
    assert_eq!(
        response.follow_up().and_then(|m| m.event()),
        Some("OriginateResponse")
    );
}

#[test]
fn an_event_echoing_an_async_originates_action_id_before_its_response_is_not_its_originate_response(
) {
    let mut h = ready();
    let o = h.send(scripted::async_originate(30_000));
    h.take("Originate");
    // Before the Originate's own response: not kept as an early OriginateResponse.
    h.feed(&msg(&[
        ("Event", "VarSet"),
        ("Privilege", "dialplan,all"),
        ("ActionID", o.as_str()),
        ("Variable", "X"),
    ]));
    assert_eq!(stream_event_names(&mut h), ["VarSet"]);
    h.feed(&scripted::originate_queued(o.as_str()));
    assert!(h.outcomes(&o).is_empty(), "{:?}", h.outcomes(&o));
    h.feed(&scripted::originate_response(o.as_str(), true));
    let response = h.outcome(&o).as_ref().unwrap();
    assert_eq!(
        response.follow_up().and_then(|m| m.event()),
        Some("OriginateResponse")
    );
}
