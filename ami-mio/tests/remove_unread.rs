//! A connection removed with events its application never read: they are dropped, and the
//! log says how many (its counters go with it, so the log line is all that is left of
//! them). One test function: the logger is process-global.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../ami-proto/tests/support/log_capture.rs"]
mod log_capture;
mod support;

use ami_mio::MioDriver;
use ami_proto::Action;
use std::time::Instant;
use support::{complete, config, drive, front, wait_ready, LIMIT};

#[test]
fn removing_a_connection_says_how_many_unread_events_it_dropped() {
    log_capture::install(log::LevelFilter::Info);
    let mut front = front();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(31), front.local_addr())
        .unwrap();
    wait_ready(&mut driver, conn);
    for _ in 0..3 {
        let id = driver
            .send(
                Instant::now(),
                conn,
                Action::new("UserEvent").field("UserEvent", "LeftUnread"),
            )
            .unwrap();
        assert!(complete(&mut driver, &id).is_ok());
    }
    // The three UserEvents reach the queue, where nobody takes them.
    assert!(
        drive(&mut driver, LIMIT, |d, _| d
            .stats(conn)
            .is_some_and(|s| s.events_queued >= 3)),
        "the events never came: {:?}",
        driver.stats(conn)
    );
    // The login's own events (FullyBooted...) are queued too, unread as well.
    let queued = driver.stats(conn).unwrap().events_queued;
    log_capture::take(|_| true);
    assert!(driver.remove(Instant::now(), conn));
    let said: Vec<String> = log_capture::take(|r| r.level <= log::Level::Info)
        .into_iter()
        .map(|r| r.message)
        .filter(|m| m.contains("not read"))
        .collect();
    assert!(
        said.iter()
            .any(|m| m.contains(&format!(" {queued} events not read"))),
        "the dropped events are said: {said:?}"
    );
    front.shutdown();
}
