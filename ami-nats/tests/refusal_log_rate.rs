//! How often a stream that refuses every publish is logged: once, then at most once a log
//! interval with how many were not logged, as the other repeated conditions are (a full
//! `DiscardNew` stream refuses every retry round for as long as it stays full).
//!
//! Its own test binary: the log lines it counts are every bridge's of the binary.
//!
//! Real nats-server on 127.0.0.1 (the test passes vacuously without one, as bridge.rs's do).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use async_nats::jetstream::{self, stream};
use std::time::Duration;
use support::*;

#[test]
fn a_stream_refusing_every_publish_is_logged_at_most_once_an_interval_with_the_count_not_logged() {
    let lines = warnings();
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    // A stream that refuses new messages once it holds 3: every retry round is refused.
    block(async {
        let js = jetstream::new(async_nats::connect(&url).await.unwrap());
        js.create_stream(stream::Config {
            name: "AMI".into(),
            max_messages: 3,
            discard: stream::DiscardPolicy::New,
            subjects: vec![
                "ami.*.event.>".into(),
                "ami.*.gap".into(),
                "ami.*.session".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let a = sim();
    let client = login().build().unwrap();
    let bridge = TestBridge::start(BridgeConfig::new(
        url.clone(),
        vec![spec("pbx1", &a, client)],
    ));
    wait_for(Duration::from_secs(10), "logged in", || {
        a.stats().logins == 1
    });
    a.with_server(|sim, now| sim.emit_user_events(now, 50));
    let refused = |l: &String| l.contains("JetStream refused a publish");
    wait_for(Duration::from_secs(10), "the first refusal logged", || {
        lines.lock().unwrap().iter().any(refused)
    });
    // Past one log interval (10 s) of refusals, retried every 2 s at most.
    std::thread::sleep(Duration::from_secs(11));
    let m = bridge.metrics();
    bridge.kill();
    let said: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| refused(l))
        .cloned()
        .collect();
    assert!(
        metric(&m, "ami_bridge_publish_retries_total") >= 5,
        "the stream was not refusing all along\n{m}"
    );
    assert!(
        said.len() <= 3,
        "{} refusal lines in some 11 s: {said:#?}",
        said.len()
    );
    assert!(
        said.iter().skip(1).any(|l| l.contains(" more ")),
        "the refusals not logged are not said: {said:#?}"
    );
}
