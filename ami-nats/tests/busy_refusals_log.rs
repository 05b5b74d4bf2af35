//! Requests refused because `max_actions_in_flight` run already are answered `not_sent`
//! and counted, and logged rate-limited: the first at once, the rest summed up (every drop
//! is counted and logged, and a flood of them must not flood the log).
//!
//! Its own test binary: the log lines it counts are every bridge's of the binary.
//!
//! Real nats-server on 127.0.0.1 (the test passes vacuously without one, as bridge.rs's do).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

#[test]
fn requests_refused_for_too_many_in_flight_are_logged_rate_limited_with_their_count() {
    let lines = warnings();
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    // A server that answers nothing after login, and room for one action at once, held
    // by a Ping the server never answers.
    let (srv, bridge) = silent_pbx1_with_slots(&nats, 1);
    hold_one_slot(&url, &srv);
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
