//! The call tracker over ami-async-std's public API, against the simulator's TCP front: the
//! shared [`TrackerScript`] (a call followed to its end, a server restart with a call up).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: the tracker is fed the real clock

mod support;

use ami_async_std::AmiError;
use ami_proto::calls::{CallTracker, TrackerConfig};
use ami_sim::call_harness::TrackerScript;
use std::time::{Duration, Instant};
use support::{block_on, connect, front, within};

#[test]
fn the_call_tracker_follows_calls_across_a_server_restart() {
    let front = front();
    let config = support::builder("admin", "amp111")
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(100))
        .breaker_cooldown(Duration::from_millis(200))
        .build()
        .unwrap();
    let (ami, mut events) = connect(config, front.local_addr());
    let mut tracker = CallTracker::new(
        TrackerConfig::builder()
            .tag_prefix("async-std")
            .build()
            .unwrap(),
    );
    let mut updates = Vec::new();
    let mut script = TrackerScript::new();
    block_on(within("the tracker script", async {
        loop {
            // Answers are awaited in line: the driver queues events meanwhile, and the
            // tracker lines the two up by the answer's stream mark.
            while let Some(req) = tracker.poll_request() {
                match ami.send_with(req.action, req.options).await {
                    Ok(resp) => tracker.handle_reply(Instant::now(), req.token, Ok(resp)),
                    Err(AmiError::Action(e)) => {
                        tracker.handle_reply(Instant::now(), req.token, Err(e))
                    }
                    Err(_) => tracker.send_failed(Instant::now(), req.token),
                }
            }
            let Some(item) = events.recv().await else {
                panic!("the event stream ended");
            };
            tracker.handle_item(Instant::now(), &item);
            updates.extend(std::iter::from_fn(|| tracker.poll_update()));
            if script.advance(&mut tracker, &updates, &front).unwrap() {
                return;
            }
        }
    }));
    ami.close();
}
