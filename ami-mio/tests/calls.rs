//! The call tracker over ami-mio's public API, against the simulator's TCP front: the
//! shared [`TrackerScript`] (a call followed to its end, a server restart with a call up).

// Test helpers may unwrap and panic: that is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_mio::{MioDriver, Notice};
use ami_proto::calls::{CallTracker, TrackerConfig};
use ami_proto::ClientConfig;
use ami_sim::call_harness::TrackerScript;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::{drive, front};

#[test]
fn the_call_tracker_follows_calls_across_a_server_restart() {
    let front = front();
    let config = ClientConfig::builder("admin", "amp111")
        .seed(13)
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(100))
        .breaker_cooldown(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config, front.local_addr())
        .unwrap();
    let mut tracker = CallTracker::new(TrackerConfig::builder().tag_prefix("mio").build().unwrap());
    let mut sent = HashMap::new();
    let mut updates = Vec::new();
    let mut script = TrackerScript::new();
    let done = drive(&mut driver, Duration::from_secs(10), |driver, report| {
        let now = Instant::now();
        for (_, notice) in report.notices {
            if let Notice::Completed { id, outcome } = notice {
                if let Some(token) = sent.remove(&id) {
                    tracker.handle_reply(now, token, outcome);
                }
            }
        }
        while let Some(item) = driver.poll_event(conn) {
            tracker.handle_item(now, &item);
        }
        while let Some(req) = tracker.poll_request() {
            match driver.send_with(Instant::now(), conn, req.action, req.options) {
                Ok(id) => {
                    sent.insert(id, req.token);
                }
                Err(_) => tracker.send_failed(now, req.token),
            }
        }
        updates.extend(std::iter::from_fn(|| tracker.poll_update()));
        script.advance(&mut tracker, &updates, &front).unwrap()
    });
    assert!(done, "script stuck at {script:?}");
}
