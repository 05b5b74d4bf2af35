//! Servers that stay unreachable: a fleet of 300 servers whose connects are all refused for
//! two simulated hours, default client config (backoff up to 30 s, breaker after 10
//! failures, cooldown 60 s). The outage is said when it starts and then summarised: the
//! second hour of an unchanged outage does not re-say every probe of every server (info is
//! `ami bridge`'s default level; it said `is connecting`, `could not connect` and `is
//! breaker open until` at every probe, for ever).
//!
//! One test function: the logger is process-global.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/log_capture.rs"]
mod log_capture;

use ami_proto::fleet::{Fleet, FleetConfig, FleetOutput};
use ami_proto::{ClientConfig, ConnectFailure, Input};
use std::time::{Duration, Instant};

const SERVERS: usize = 300;

/// Runs the fleet to `until`, every connect refused.
fn run_refused(fleet: &mut Fleet, now: &mut Instant, until: Instant) {
    loop {
        let wait = loop {
            match fleet.poll_output() {
                FleetOutput::Wait(w) => break w,
                FleetOutput::Connect(id) => {
                    fleet.handle_input(*now, id, Input::ConnectFailed(ConnectFailure::Refused))
                }
                _ => {}
            }
        };
        match wait {
            Some(t) if t <= until => {
                *now = t.max(*now);
                fleet.handle_timeout(*now);
            }
            _ => {
                *now = until;
                fleet.handle_timeout(*now);
                return;
            }
        }
    }
}

#[test]
fn servers_unreachable_for_hours_are_not_re_said_at_every_probe() {
    log_capture::install(log::LevelFilter::Info);
    let t0 = Instant::now();
    let mut config = FleetConfig::default();
    config.seed = 7;
    let mut fleet = Fleet::new(config);
    for i in 0..SERVERS {
        let client = ClientConfig::builder("admin", "amp111").build().unwrap();
        fleet.add(t0, &format!("pbx{i:03}"), client).unwrap();
    }
    let mut now = t0;
    run_refused(&mut fleet, &mut now, t0 + Duration::from_secs(3600));
    let first_hour = log_capture::take(|_| true);
    run_refused(&mut fleet, &mut now, t0 + Duration::from_secs(7200));
    let second_hour = log_capture::take(|_| true);

    let warn_first = first_hour
        .iter()
        .filter(|r| r.level <= log::Level::Warn)
        .count();
    let warn_second = second_hour
        .iter()
        .filter(|r| r.level <= log::Level::Warn)
        .count();
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for r in &second_hour {
        let k: String = r
            .message
            .replace(|c: char| c.is_ascii_digit(), "")
            .chars()
            .take(60)
            .collect();
        match kinds.iter_mut().find(|(x, _)| *x == k) {
            Some((_, n)) => *n += 1,
            None => kinds.push((k, 1)),
        }
    }
    // The outage is said: every server's failed connects, by name, in the first hour.
    for i in 0..SERVERS {
        let name = format!("pbx{i:03}");
        assert!(
            first_hour
                .iter()
                .any(|r| r.message.contains(&name) && r.message.contains("could not connect")),
            "{name}'s outage was never said in the first hour"
        );
    }
    // Nothing changed in the second hour: a summary per server every 10 minutes would be
    // 6 lines each.
    let bound = SERVERS * 6;
    assert!(
        second_hour.len() <= bound,
        "{} info+ records in the second hour of an unchanged outage of {SERVERS} servers \
         ({} per server; first hour {}, warnings {warn_first} then {warn_second}): {kinds:#?}",
        second_hour.len(),
        second_hour.len() / SERVERS,
        first_hour.len()
    );
}
