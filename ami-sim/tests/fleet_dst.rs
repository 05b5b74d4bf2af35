//! Deterministic simulation of a fleet (issue 11): 200 simulated servers on virtual time,
//! one flooding events, twenty restarting every few seconds, fifty unreachable, the rest
//! quiet with actions flowing; most seeds log one quiet server off mid-run, some then the
//! whole fleet. The harness checks every law at every step; a failing seed prints the
//! command that replays it.
//!
//! `AMI_FLEET_SEEDS=N` sets how many seeds `two_hundred_servers_keep_every_law` runs
//! (default 3); `AMI_FLEET_SEED=S` picks the seed for `replay_fleet_seed`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_sim::fleet::{run_seed, Scenario};
use std::time::Duration;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn two_hundred_servers_keep_every_law() {
    let seeds = env_u64("AMI_FLEET_SEEDS").unwrap_or(3);
    let scenario = Scenario::default();
    let bound = scenario.latency_bound();
    let (mut logoffs, mut logoff_alls, mut cut) = (0u64, 0u64, 0u64);
    for seed in 0..seeds {
        let started = std::time::Instant::now();
        let (s, violations) = run_seed(seed, scenario.clone());
        eprintln!(
            "fleet seed {seed}: {:.1?} wall; {s:?}; quiet latency bound {bound:?}",
            started.elapsed()
        );
        for v in &violations {
            eprintln!("{v}");
        }
        assert!(violations.is_empty(), "seed {seed} broke a law");
        // The scenario exercised what it claims to.
        assert!(s.events_lost > 0, "the flood never overflowed: {s:?}");
        assert!(s.quiet_events > 0 && s.successes > 100, "{s:?}");
        assert!(s.restarts >= 20, "{s:?}");
        assert!(s.no_server == 0 || s.steps > 0);
        assert_eq!(s.most_connects_in_a_step, scenario.budget.connects_per_step);
        logoffs += s.logoffs;
        logoff_alls += s.logoff_alls;
        cut += s.pending_at_logoff;
    }
    eprintln!(
        "fleet: {seeds} seeds: {logoffs} servers logged off alone, {logoff_alls} fleets logged off whole, {cut} actions pending at a logoff"
    );
    // The default three seeds log servers off alone with an action pending (seeds 0-2 are
    // fixed: this holds run after run); a whole-fleet logoff needs more seeds to come up.
    assert!(
        seeds < 3 || (logoffs > 0 && cut > 0),
        "the default seeds must log a server off with actions pending"
    );
    assert!(
        seeds < 20 || (logoffs > 0 && logoff_alls > 0 && cut > 0),
        "the suite must log servers off, alone and all together, with actions pending"
    );
}

#[test]
fn replay_fleet_seed() {
    let seed = env_u64("AMI_FLEET_SEED").unwrap_or(7);
    let (summary, violations) = run_seed(seed, Scenario::default());
    eprintln!("fleet seed {seed}: {summary:?}");
    for v in &violations {
        eprintln!("{v}");
    }
    assert!(violations.is_empty());
}

#[test]
fn same_seed_same_fleet_run() {
    let scenario = Scenario {
        duration: Duration::from_secs(5),
        ..Scenario::scaled(40)
    };
    let a = run_seed(11, scenario.clone());
    let b = run_seed(11, scenario);
    assert!(a.1.is_empty(), "{:?}", a.1);
    assert_eq!(a, b, "seed 11 is not deterministic");
}

/// A quiet server's worst latency does not grow with the flooder's rate: the budgets, not
/// the flood, decide it.
#[test]
fn quiet_latency_does_not_follow_the_flood_rate() {
    let base = Scenario {
        duration: Duration::from_secs(5),
        ..Scenario::scaled(40)
    };
    let mut worst = Vec::new();
    for flood in [10, 300, 3000] {
        let (s, v) = run_seed(
            3,
            Scenario {
                flood_per_step: flood,
                ..base.clone()
            },
        );
        assert!(v.is_empty(), "flood {flood}: {v:?}");
        worst.push(s.quiet_worst_latency_us);
    }
    let bound = u64::try_from(base.latency_bound().as_micros()).unwrap();
    assert!(worst.iter().all(|w| *w <= bound), "{worst:?} over {bound}");
}
