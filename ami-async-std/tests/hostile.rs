//! ami-async-std against hostile servers over loopback (issue 9): discarded input and an
//! unterminated legacy Follows reach the stream in order and later events flow; an action
//! whose deadline passed is never written. Uses only the public API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

use ami_async_std::{AmiError, Events};
use ami_proto::{Action, ActionError, ClientConfig, DecodeError, Discard, SendOptions, StreamItem};
use ami_sim::hostile::{broken_follows_script, Hostile, HostileServer};
use futures_lite::future;
use std::time::Duration;

/// The next stream item that is not a session boundary.
fn next(events: &mut Events) -> StreamItem {
    loop {
        let timeout = async {
            async_io::Timer::after(Duration::from_secs(10)).await;
            None
        };
        let item =
            future::block_on(future::or(events.recv(), timeout)).expect("an item within 10 s");
        if !matches!(item, StreamItem::Ready { .. }) {
            return item;
        }
    }
}

#[test]
fn discarded_input_and_broken_follows_are_reported_in_order_and_events_flow() {
    let script = broken_follows_script(500);
    let srv = HostileServer::start(Hostile::Script(script), 0).unwrap();
    let cfg = ClientConfig::builder("admin", "hostile")
        .seed(5)
        .build()
        .unwrap();
    let (ami, mut events) = ami_async_std::run_on_thread(cfg, srv.local_addr()).unwrap();
    future::block_on(ami.wait_ready()).unwrap();
    assert!(matches!(next(&mut events), StreamItem::Event(m) if m.event() == Some("A")));
    assert_eq!(
        next(&mut events),
        StreamItem::Discarded {
            reason: Discard::NotEventOrResponse,
            count: 1
        }
    );
    assert_eq!(
        next(&mut events),
        StreamItem::Discarded {
            reason: Discard::Malformed(DecodeError::FollowsUnterminated),
            count: 1
        }
    );
    for i in 1..=500 {
        match next(&mut events) {
            StreamItem::Event(m) => assert_eq!(m.get_str("Seq"), Some(i.to_string().as_str())),
            other => panic!("{other:?}"),
        }
    }
    ami.close();
}

#[test]
fn nothing_is_written_after_its_deadline() {
    let srv = HostileServer::start(Hostile::Silent, 0).unwrap();
    let cfg = ClientConfig::builder("admin", "hostile")
        .seed(5)
        .pipeline_depth(1)
        .build()
        .unwrap();
    let (ami, _events) = ami_async_std::run_on_thread(cfg, srv.local_addr()).unwrap();
    future::block_on(ami.wait_ready()).unwrap();
    // The first Ping (queued first: `zip` polls it first) holds the one pipeline slot for a
    // second; the two behind it expire while queued, long before the slot frees (equal
    // deadlines would race the slot).
    let long = SendOptions::timeout(Duration::from_millis(1000));
    let short = SendOptions::timeout(Duration::from_millis(200));
    let results = future::block_on(async {
        let a = ami.send_with(Action::new("Ping"), long);
        let b = ami.send_with(Action::new("Ping"), short);
        let c = ami.send_with(Action::new("Ping"), short);
        future::zip(a, future::zip(b, c)).await
    });
    let (a, (b, c)) = results;
    let mut phases: Vec<String> = [a, b, c]
        .into_iter()
        .map(|r| match r {
            Err(AmiError::Action(ActionError::TimedOut { phase, .. })) => format!("{phase:?}"),
            other => panic!("{other:?}"),
        })
        .collect();
    phases.sort();
    assert_eq!(phases, ["Queued", "Queued", "Response"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        srv.received_count("Ping"),
        1,
        "only the first Ping was written before its deadline"
    );
    ami.close();
}
