//! Requests refused because `max_actions_in_flight` run already are answered `not_sent`
//! and counted, and logged rate-limited: the first at once, the rest summed up (every drop
//! is counted and logged, and a flood of them must not flood the log).
//!
//! Its own test binary: the log lines it counts are every bridge's of the binary.
//!
//! Real nats-server on 127.0.0.1 (the test passes vacuously without one, as bridge.rs's do).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use ami_sim::hostile::{Hostile, HostileServer};
use std::time::Duration;
use support::*;

#[test]
fn requests_refused_for_too_many_in_flight_are_logged_rate_limited_with_their_count() {
    let lines = warnings();
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    // A server that answers nothing after login, and room for one action at once.
    let srv = HostileServer::start(Hostile::Silent, 0).unwrap();
    let addr = srv.local_addr();
    let client = login()
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let spec =
        ami_nats::ServerSpec::new("pbx1", addr.ip().to_string(), addr.port(), client).unwrap();
    let bridge =
        TestBridge::start(BridgeConfig::new(url.clone(), vec![spec]).max_actions_in_flight(1));
    wait_for(Duration::from_secs(10), "served", || {
        bridge.serving().len() == 1 && srv.connections() == 1
    });
    // A Ping the server never answers holds the one slot.
    block(async {
        let nc = async_nats::connect(&url).await.unwrap();
        let hold = r#"{"headers":[["Action","Ping"]],"timeout_ms":60000}"#;
        nc.publish_with_reply("ami.pbx1.action", nc.new_inbox(), hold.into())
            .await
            .unwrap();
        nc.flush().await.unwrap();
    });
    wait_for(Duration::from_secs(10), "the holding Ping written", || {
        srv.received_count("Ping") == 1
    });
    let n = 30;
    for _ in 0..n {
        let r = block(request(
            &url,
            "ami.pbx1.action",
            r#"{"headers":[["Action","Ping"]]}"#,
        ));
        assert_eq!(r["outcome"], "not_sent", "{r}");
    }
    // The summary of those only counted comes at the latest with the bridge's end.
    bridge.shutdown();
    let said: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("too many actions in flight") || l.contains("max_actions_in_flight"))
        .cloned()
        .collect();
    assert!(
        !said.is_empty() && said.len() <= 3,
        "{} lines about {n} refusals: {said:#?}",
        said.len()
    );
    // Every refusal is in a line: logged, or in the count of a later one.
    let accounted: u64 = said
        .iter()
        .map(|l| {
            let more = l
                .split_whitespace()
                .zip(l.split_whitespace().skip(1))
                .find(|(_, w)| *w == "more")
                .and_then(|(n, _)| n.trim_start_matches(';').parse::<u64>().ok());
            // A line logged for one refusal (plus the count it carries), or a summary.
            if l.starts_with("action request refused") {
                1 + more.unwrap_or(0)
            } else {
                more.unwrap_or(0)
            }
        })
        .sum();
    assert_eq!(accounted, n, "{said:#?}");
}
