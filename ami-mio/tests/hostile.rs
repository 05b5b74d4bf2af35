//! ami-mio against hostile servers over loopback (issue 9): discarded input and an
//! unterminated legacy Follows reach the stream in order and later events flow; a trickle is
//! closed by the heartbeat; an action whose deadline passed is never written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

use ami_mio::{ConnId, MioDriver, Notice};
use ami_proto::{
    Action, ActionError, ClientConfig, ClientConfigBuilder, DecodeError, Discard, Phase,
    SendOptions, StreamItem,
};
use ami_sim::hostile::{broken_follows_script, Hostile, HostileServer};
use std::time::{Duration, Instant};

fn builder() -> ClientConfigBuilder {
    ClientConfig::builder("admin", "hostile").seed(5)
}

/// Steps the driver until `done` says so (10 s at most); events are collected into `items`.
fn drive(
    driver: &mut MioDriver,
    items: &mut Vec<StreamItem>,
    mut done: impl FnMut(&mut MioDriver, &[StreamItem], Vec<(ConnId, Notice)>) -> bool,
) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let report = driver.step(Instant::now()).unwrap();
        for conn in report.events {
            while let Some(item) = driver.poll_event(conn) {
                // Session boundaries are not what these tests look at.
                if !matches!(item, StreamItem::Ready { .. }) {
                    items.push(item);
                }
            }
        }
        if done(driver, items, report.notices) {
            return;
        }
        driver.wait(Some(Duration::from_millis(20))).unwrap();
    }
    panic!("not done within 10 s; items: {}", items.len());
}

fn ready(driver: &mut MioDriver, conn: ConnId) {
    drive(driver, &mut Vec::new(), |d, _, _| {
        d.client(conn).is_some_and(|c| c.is_ready())
    });
}

#[test]
fn discarded_input_and_broken_follows_are_reported_in_order_and_events_flow() {
    let script = broken_follows_script(500);
    let srv = HostileServer::start(Hostile::Script(script), 0).unwrap();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), builder().build().unwrap(), srv.local_addr())
        .unwrap();
    let mut items = Vec::new();
    drive(&mut driver, &mut items, |_, items, _| items.len() >= 503);
    assert!(matches!(&items[0], StreamItem::Event(m) if m.event() == Some("A")));
    assert_eq!(
        items[1..3],
        [
            StreamItem::Discarded {
                reason: Discard::NotEventOrResponse,
                count: 1
            },
            StreamItem::Discarded {
                reason: Discard::Malformed(DecodeError::FollowsUnterminated),
                count: 1
            }
        ]
    );
    for (i, item) in items[3..].iter().enumerate() {
        let seq = (i + 1).to_string();
        assert!(matches!(item, StreamItem::Event(m) if m.get_str("Seq") == Some(seq.as_str())));
    }
    assert_eq!(driver.stats(conn).unwrap().discarded, 2);
}

#[test]
fn a_trickle_of_bytes_is_closed_by_the_heartbeat() {
    let srv = HostileServer::start(
        Hostile::Trickle {
            every: Duration::from_millis(20),
        },
        0,
    )
    .unwrap();
    let cfg = builder()
        .ping_interval(Duration::from_millis(300))
        .pong_timeout(Duration::from_millis(300))
        .backoff_base(Duration::from_millis(10))
        .build()
        .unwrap();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver.add(Instant::now(), cfg, srv.local_addr()).unwrap();
    drive(&mut driver, &mut Vec::new(), |d, _, _| {
        d.stats(conn)
            .is_some_and(|s| s.disconnect_count(ami_proto::DisconnectKind::HeartbeatTimeout) >= 1)
    });
    assert!(
        srv.received_count("Ping") >= 1,
        "pinged despite the trickle"
    );
}

#[test]
fn nothing_is_written_after_its_deadline() {
    let srv = HostileServer::start(Hostile::Silent, 0).unwrap();
    let mut driver = MioDriver::new().unwrap();
    let cfg = builder().pipeline_depth(1).build().unwrap();
    let conn = driver.add(Instant::now(), cfg, srv.local_addr()).unwrap();
    ready(&mut driver, conn);
    // The first Ping holds the one pipeline slot for a second; the two behind it expire
    // while queued, long before the slot frees (equal deadlines would race the slot).
    for ms in [1000, 200, 200] {
        let timeout = SendOptions::timeout(Duration::from_millis(ms));
        driver
            .send_with(Instant::now(), conn, Action::new("Ping"), timeout)
            .unwrap();
    }
    let mut phases = Vec::new();
    drive(&mut driver, &mut Vec::new(), |_, _, notices| {
        for (_, n) in notices {
            if let Notice::Completed {
                outcome: Err(ActionError::TimedOut { phase, .. }),
                ..
            } = n
            {
                phases.push(phase);
            }
        }
        phases.len() == 3
    });
    assert_eq!(phases, [Phase::Queued, Phase::Queued, Phase::Response]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        srv.received_count("Ping"),
        1,
        "only the first Ping was written before its deadline"
    );
}
