//! Fleet scaling on virtual time (issue 11's benchmark; a measurement, never a test):
//! for 10, 100 and 1,000 simulated servers (1 flooding, 10 % restarting, 25 % unreachable,
//! the rest quiet with actions flowing), the worst and mean wall-clock cost of one step of
//! the core fleet plus its simulated servers, and the quiet servers' worst action latency in
//! virtual time, at three flood rates; and the most connects the fleet started in one step
//! (restarting servers reconnecting, unreachable ones retrying) against the budget.
//!
//! `cargo run --release -p ami-sim --example fleet_scale` (all nine runs), or
//! `... --example fleet_scale -- SERVERS FLOOD SECONDS` for one run (e.g. under
//! `valgrind --tool=callgrind`, which counts instructions: stable on a loaded machine).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_sim::fleet::{FleetHarness, Scenario};
use std::time::{Duration, Instant};

fn main() {
    println!(
        "{:>7} {:>11} {:>12} {:>12} {:>14} {:>12} {:>10} {:>16}",
        "servers",
        "flood/step",
        "worst step",
        "mean step",
        "quiet worst",
        "bound",
        "events/s",
        "connects/step"
    );
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("SERVERS FLOOD SECONDS: numbers"))
        .collect();
    let (sizes, floods, secs) = match args[..] {
        [n, f, s] => (vec![n as usize], vec![f as usize], s),
        _ => (vec![10, 100, 1000], vec![20, 200, 2000], 10),
    };
    for &n in &sizes {
        for &flood in &floods {
            let scenario = Scenario {
                duration: Duration::from_secs(secs),
                flood_per_step: flood,
                ..Scenario::scaled(n)
            };
            let bound = scenario.latency_bound();
            let budget = scenario.budget;
            let mut h = FleetHarness::new(1, Instant::now(), scenario);
            let (mut worst, mut total, mut steps) = (Duration::ZERO, Duration::ZERO, 0u32);
            loop {
                let t = Instant::now();
                if !h.advance() {
                    break;
                }
                let cost = t.elapsed();
                worst = worst.max(cost);
                total += cost;
                steps += 1;
            }
            let violations = h.finish();
            assert!(violations.is_empty(), "{violations:?}");
            let s = &h.summary;
            println!(
                "{n:>7} {flood:>11} {:>12.1?} {:>12.1?} {:>14?} {:>12?} {:>10.0} {:>9} of {:>3}",
                worst,
                total / steps.max(1),
                Duration::from_micros(s.quiet_worst_latency_us),
                bound,
                s.events as f64 / total.as_secs_f64(),
                s.most_connects_in_a_step,
                budget.connects_per_step,
            );
        }
    }
}
