//! The call tracker over ami-tokio's public API, against the simulator's TCP front: the
//! shared [`TrackerScript`] (a call followed to its end, a server restart with a call up).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: the tracker is fed the real clock

mod support;

use ami_proto::calls::{CallTracker, TrackerConfig};
use ami_sim::call_harness::TrackerScript;
use ami_tokio::AmiError;
use std::time::{Duration, Instant};
use support::front;

#[tokio::test]
async fn the_call_tracker_follows_calls_across_a_server_restart() {
    let front = front();
    let config = support::builder("admin", "amp111")
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(100))
        .breaker_cooldown(Duration::from_millis(200))
        .build()
        .unwrap();
    let (ami, mut events) = ami_tokio::spawn(config, front.local_addr());
    let mut tracker = CallTracker::new(
        TrackerConfig::builder()
            .tag_prefix("tokio")
            .build()
            .unwrap(),
    );
    let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let mut updates = Vec::new();
    let mut script = TrackerScript::new();
    let run = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            while let Some(req) = tracker.poll_request() {
                let (ami, tx) = (ami.clone(), answers_tx.clone());
                tokio::spawn(async move {
                    let r = ami.send_with(req.action, req.options).await;
                    let _ = tx.send((req.token, r));
                });
            }
            tokio::select! {
                item = events.recv() => match item {
                    Some(item) => tracker.handle_item(Instant::now(), &item),
                    None => panic!("the event stream ended"),
                },
                Some((token, r)) = answers.recv() => match r {
                    Ok(resp) => tracker.handle_reply(Instant::now(), token, Ok(resp)),
                    Err(AmiError::Action(e)) => tracker.handle_reply(Instant::now(), token, Err(e)),
                    Err(_) => tracker.send_failed(Instant::now(), token),
                },
            }
            updates.extend(std::iter::from_fn(|| tracker.poll_update()));
            if script.advance(&mut tracker, &updates, &front).unwrap() {
                return;
            }
        }
    })
    .await;
    let tail: Vec<String> = updates
        .iter()
        .skip(5)
        .map(|u| format!("{u:?}").chars().take(160).collect())
        .collect();
    assert!(
        run.is_ok(),
        "script stuck at {script:?}; status {:?}, sim {:?}; updates {tail:#?}",
        ami.status().get(),
        front.stats()
    );
    ami.close();
}
