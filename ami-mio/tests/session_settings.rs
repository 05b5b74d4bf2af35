//! `MioDriver::add_filter` and `MioDriver::set_event_mask` over loopback against the
//! simulator: what a session takes from the server, changed after `add` without reaching
//! into the (read-only) core client, and kept across a reconnect.

// Test helpers may unwrap and panic: that is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_mio::{ConnId, MioDriver};
use ami_proto::{Action, ClientConfig, DisconnectReason, SendError, StreamItem};
use std::time::{Duration, Instant};
use support::{complete, drive, front, wait_ready, LIMIT};

/// The simulator's admin user, short backoff, the event mask `events`.
fn config(seed: u64, events: &str) -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .seed(seed)
        .events(events)
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// The ID of a connection added and removed at once.
fn removed(driver: &mut MioDriver, front: &ami_sim::tcp::TcpFront) -> ConnId {
    let conn = driver
        .add(Instant::now(), config(23, "on"), front.local_addr())
        .unwrap();
    assert!(driver.remove(Instant::now(), conn));
    conn
}

/// An async Originate the simulator answers: its `OriginateResponse` is a `call` event.
fn originate() -> Action {
    Action::new("Originate")
        .field("Channel", "Local/echo@ami-test")
        .field("Application", "Wait")
        .field("Data", "1")
        .field("Timeout", "5000")
        .field("Async", "true")
}

/// A UserEvent broadcast by the server, `UserEvent: name`.
fn user_event(name: &str) -> Action {
    Action::new("UserEvent").field("UserEvent", name)
}

#[test]
fn add_filter_keeps_out_the_events_the_filter_does_not_match() {
    let mut front = front();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(21, "on"), front.local_addr())
        .unwrap();
    wait_ready(&mut driver, conn);
    let filter = driver
        .add_filter(Instant::now(), conn, "UserEvent: Kept")
        .unwrap();
    let out = complete(&mut driver, &filter);
    assert!(out.is_ok(), "{out:?}");

    for name in ["Dropped", "Kept"] {
        let id = driver.send(Instant::now(), conn, user_event(name)).unwrap();
        assert!(complete(&mut driver, &id).is_ok());
    }
    let mut seen = Vec::new();
    assert!(
        drive(&mut driver, LIMIT, |d, _| {
            while let Some(item) = d.poll_event(conn) {
                if let StreamItem::Event(e) = item {
                    seen.extend(e.get_str("UserEvent").map(str::to_string));
                }
            }
            seen.iter().any(|n| n == "Kept")
        }),
        "the kept event never came: {seen:?}"
    );
    assert_eq!(seen, ["Kept"], "the filter let another event through");
    let gone = removed(&mut driver, &front);
    assert_eq!(
        driver.add_filter(Instant::now(), gone, "UserEvent: Kept"),
        Err(SendError::Closed {
            reason: DisconnectReason::LocalClose
        }),
        "a removed connection"
    );
    front.shutdown();
}

#[test]
fn set_event_mask_lets_async_originates_through_and_the_next_login_asks_for_it() {
    let mut front = front();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(22, "system"), front.local_addr())
        .unwrap();
    wait_ready(&mut driver, conn);
    let refused = driver.send(Instant::now(), conn, originate());
    assert!(
        matches!(refused, Err(SendError::FollowUpMasked { .. })),
        "{refused:?}"
    );

    let mask = driver.set_event_mask(Instant::now(), conn, "call").unwrap();
    let out = complete(&mut driver, &mask);
    assert!(out.is_ok(), "{out:?}");
    let call = driver.send(Instant::now(), conn, originate()).unwrap();
    let out = complete(&mut driver, &call);
    assert!(
        out.as_ref().is_ok_and(|r| r.follow_up().is_some()),
        "{out:?}"
    );

    // After a restart the session logs in again: its Login asks for `call` events, or the
    // server would keep the next OriginateResponse to itself and the call time out.
    front.restart(Duration::from_millis(100));
    wait_ready(&mut driver, conn);
    assert_eq!(driver.stats(conn).unwrap().logins, 2);
    assert_eq!(driver.client(conn).unwrap().config().events(), "call");
    let call = driver.send(Instant::now(), conn, originate()).unwrap();
    let out = complete(&mut driver, &call);
    assert!(
        out.as_ref().is_ok_and(|r| r.follow_up().is_some()),
        "{out:?}"
    );
    let gone = removed(&mut driver, &front);
    assert_eq!(
        driver.set_event_mask(Instant::now(), gone, "off"),
        Err(SendError::Closed {
            reason: DisconnectReason::LocalClose
        }),
        "a removed connection"
    );
    front.shutdown();
}
