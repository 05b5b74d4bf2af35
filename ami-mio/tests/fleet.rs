//! Many servers on one loop, over real loopback sockets against the simulator's TCP front: a
//! flooding server does not starve a quiet one, a reconnect storm does not stretch a step,
//! and a hanging name lookup does not delay one. Unreachable servers need no server at all:
//! a port that was bound and released refuses every connect.
//!
//! The flood is a simulator whose sessions get UserEvent storms as fast as they read them
//! (`support::Flood`); the quiet server is another simulator, answering Pings.
//!
//! Measured numbers are printed; see them with
//! `cargo test -p ami-mio --release --test fleet -- --nocapture --test-threads=1`.

// Test helpers may unwrap and panic: that is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_mio::{ConnId, MioDriver, Notice, Options};
use ami_proto::{Action, ActionId, ClientConfig, StreamItem};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{config, drive, front, quick_retries, refused_addr, storm_seq, Flood, HangingDns};

const LIMIT: Duration = Duration::from_secs(5);

/// These tests time steps: run them one at a time so they do not compete for the two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reconnects as fast as the core allows, and never opens the breaker: a worst-case storm.
fn storm_config(seed: u64) -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .seed(seed)
        .backoff_base(Duration::from_millis(1))
        .backoff_max(Duration::from_millis(5))
        .breaker_threshold(1_000_000)
        .build()
        .unwrap()
}

fn wait_ready(driver: &mut MioDriver, conns: &[ConnId]) {
    let mut ready = Vec::new();
    assert!(drive(driver, LIMIT, |_, r| {
        for (c, n) in r.notices {
            if matches!(n, Notice::Ready { .. }) {
                ready.push(c);
            }
        }
        conns.iter().all(|c| ready.contains(c))
    }));
}

/// Runs the loop for `span`: keeps one Ping in flight on `quiet` (latencies returned), drains
/// every event (count returned), and times each step (longest returned).
fn run(
    driver: &mut MioDriver,
    quiet: Option<ConnId>,
    span: Duration,
) -> (Vec<Duration>, u64, Duration) {
    let mut latencies = Vec::new();
    let mut inflight: Option<(ActionId, Instant)> = None;
    let mut events = 0u64;
    let mut last_seq: HashMap<ConnId, u64> = HashMap::new();
    let mut longest = Duration::ZERO;
    let end = Instant::now() + span;
    while Instant::now() < end {
        if let (Some(q), None) = (quiet, &inflight) {
            if let Ok(id) = driver.send(Instant::now(), q, Action::new("Ping")) {
                inflight = Some((id, Instant::now()));
            }
        }
        let t0 = Instant::now();
        let report = driver.step(t0).unwrap();
        longest = longest.max(t0.elapsed());
        for (_, n) in report.notices {
            if let Notice::Completed { id, outcome } = n {
                if let Some((want, at)) = &inflight {
                    if *want == id {
                        assert!(outcome.is_ok(), "{outcome:?}");
                        latencies.push(at.elapsed());
                        inflight = None;
                    }
                }
            }
        }
        for c in report.events {
            while let Some(item) = driver.poll_event(c) {
                let m = match item {
                    StreamItem::Event(m) => m,
                    // Session boundaries: the reconnecting connections cross them.
                    StreamItem::Ready { .. } | StreamItem::Disconnected { .. } => continue,
                    other => panic!("{c:?}: unexpected {other:?}"),
                };
                events += 1;
                // Storms come in batches numbered from 0: nothing lost, nothing reordered.
                if let Some(seq) = storm_seq(&m) {
                    let next = match last_seq.get(&c) {
                        Some(&l) if l + 1 < Flood::BATCH as u64 => l + 1,
                        _ => 0,
                    };
                    assert_eq!(seq, next, "{c:?}: storm event out of sequence");
                    last_seq.insert(c, seq);
                }
            }
        }
        driver.wait(Some(Duration::from_millis(5))).unwrap();
    }
    (latencies, events, longest)
}

#[test]
fn a_flooding_server_does_not_starve_a_quiet_one() {
    let _serial = serial();
    let flood = Flood::start().unwrap();
    let quiet_server = front();
    let mut driver = MioDriver::new().unwrap();
    let noisy = driver
        .add(Instant::now(), config(11), flood.addr())
        .unwrap();
    let quiet = driver
        .add(Instant::now(), config(12), quiet_server.local_addr())
        .unwrap();
    wait_ready(&mut driver, &[noisy, quiet]);

    let span = Duration::from_millis(1500);
    let (lat, events, longest) = run(&mut driver, Some(quiet), span);
    let max = lat.iter().max().copied().unwrap_or_default();
    let mean = lat.iter().sum::<Duration>() / u32::try_from(lat.len().max(1)).unwrap();
    println!(
        "flood + quiet: {} pings, ping latency mean {mean:?} max {max:?}; {events} events in {span:?} \
         = {:.0} events/s through the adapter; longest step {longest:?}",
        lat.len(),
        events as f64 / span.as_secs_f64()
    );
    let sim = flood.stats();
    println!(
        "flood server delivered {} events in all (login and drain included), {} slow-reader closes",
        sim.events_delivered, sim.slow_reader_closes
    );
    // Not starved: the quiet server kept answering while the flood went on (its latency and
    // the step times are printed above: figures, not assertions).
    assert!(lat.len() >= 10, "only {} pings answered", lat.len());
    assert!(events > 10_000, "flood delivered only {events} events");
    // The client kept up: the simulator never saw a blocked write, the session is the first.
    assert_eq!(sim.slow_reader_closes, 0, "{sim:?}");
    assert_eq!(sim.sessions_accepted, 1, "{sim:?}");
    assert_eq!(driver.stats(noisy).unwrap().events_dropped, 0);
    assert_eq!(quiet_server.stats().logins, 1);
}

#[test]
fn a_hundred_unreachable_servers_keep_steps_short() {
    let _serial = serial();
    let mut driver = MioDriver::new().unwrap();
    let conns: Vec<ConnId> = (0..100)
        .map(|k| {
            driver
                .add(Instant::now(), storm_config(100 + k), refused_addr())
                .unwrap()
        })
        .collect();
    let mut failures: HashMap<ConnId, u32> = HashMap::new();
    let mut longest = Duration::ZERO;
    let mut steps = 0u32;
    let budget = Options::default().budget.connects_per_step;
    let mut most_in_a_step = 0;
    let end = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < end {
        let t0 = Instant::now();
        let report = driver.step(t0).unwrap();
        longest = longest.max(t0.elapsed());
        let failed = report
            .notices
            .iter()
            .filter(|(_, n)| matches!(n, Notice::Disconnected { .. }))
            .count();
        most_in_a_step = most_in_a_step.max(failed);
        steps += 1;
        for (c, n) in report.notices {
            match n {
                Notice::Disconnected { .. } => *failures.entry(c).or_default() += 1,
                Notice::Ready { .. } => panic!("a refused port accepted"),
                _ => {}
            }
        }
        driver.wait(Some(Duration::from_millis(5))).unwrap();
    }
    let total: u32 = failures.values().sum();
    println!("100 unreachable: {steps} steps, {total} failed connects, longest step {longest:?}");
    assert!(
        conns
            .iter()
            .all(|c| failures.get(c).copied().unwrap_or(0) >= 3),
        "some connection did not get its connect turns"
    );
    // What keeps the step short, counted rather than timed: a step sees at most the failures
    // of the connects the previous step started and of those it starts itself, each within
    // the per-step connect budget (the step time is printed above).
    assert!(
        most_in_a_step <= 2 * budget,
        "{most_in_a_step} failed connects in one step, budget {budget} per step"
    );
}

#[test]
fn a_flood_plus_a_hundred_reconnecting_connections() {
    let _serial = serial();
    let flood = Flood::start().unwrap();
    let quiet_server = front();
    let mut driver = MioDriver::new().unwrap();
    let noisy = driver
        .add(Instant::now(), config(21), flood.addr())
        .unwrap();
    let quiet = driver
        .add(Instant::now(), config(22), quiet_server.local_addr())
        .unwrap();
    wait_ready(&mut driver, &[noisy, quiet]);
    for k in 0..100 {
        driver
            .add(Instant::now(), storm_config(200 + k), refused_addr())
            .unwrap();
    }
    let span = Duration::from_millis(1500);
    let (lat, events, longest) = run(&mut driver, Some(quiet), span);
    let max = lat.iter().max().copied().unwrap_or_default();
    let connects: u64 = driver
        .connections()
        .iter()
        .filter_map(|c| driver.stats(*c))
        .map(|s| s.connects)
        .sum();
    println!(
        "flood + quiet + 100 reconnecting: longest step {longest:?}; {connects} connects; \
         {} pings, max latency {max:?}; {:.0} events/s",
        lat.len(),
        events as f64 / span.as_secs_f64()
    );
    // Not starved by the flood nor by the storm: the quiet server kept answering.
    assert!(lat.len() >= 10, "only {} pings answered", lat.len());
    assert!(connects > 300, "the storm made only {connects} connects");
    assert_eq!(flood.stats().slow_reader_closes, 0);
}

#[test]
fn a_hanging_resolver_does_not_delay_the_step() {
    let _serial = serial();
    let hang = Duration::from_secs(3);
    let mut options = Options::default();
    options.resolver_threads = 1;
    options.resolve = Arc::new(move |_host: &str| {
        std::thread::sleep(hang);
        Err(std::io::Error::other("gave up"))
    });
    let server = front();
    let mut driver = MioDriver::with_options(options).unwrap();
    for k in 0..3 {
        driver
            .add_host(Instant::now(), config(30 + k), "pbx.invalid:5038")
            .unwrap();
    }
    let direct = driver
        .add(Instant::now(), config(40), server.local_addr())
        .unwrap();
    let started = Instant::now();
    let mut longest = Duration::ZERO;
    let mut ready = false;
    while started.elapsed() < Duration::from_millis(500) {
        let t0 = Instant::now();
        let report = driver.step(t0).unwrap();
        longest = longest.max(t0.elapsed());
        ready |= report
            .notices
            .iter()
            .any(|(c, n)| *c == direct && matches!(n, Notice::Ready { .. }));
        driver.wait(Some(Duration::from_millis(5))).unwrap();
    }
    println!("resolver hanging {hang:?}: longest step {longest:?}, direct server ready: {ready}");
    // The resolver hangs for 3 s and the loop ran for 0.5 s: reaching Ready, which takes
    // several steps, proves that no step waited on a lookup (the step time is printed).
    assert!(ready, "the server given by address was not reached");
}

#[test]
fn a_name_whose_lookup_hangs_holds_up_no_other_name_and_queues_no_retries() {
    let server = front();
    let port = server.local_addr().port();
    // Lookups of `hangs-*` block until the test ends (an unreachable DNS server); more of
    // them than the old fixed two resolver threads.
    let dns = HangingDns::new();
    let mut options = Options::default();
    options.resolve = dns.resolve(port);
    let mut driver = MioDriver::with_options(options).unwrap();
    for k in 0..3 {
        driver
            .add_host(
                Instant::now(),
                quick_retries(60 + k),
                format!("hangs-{k}.test:5038"),
            )
            .unwrap();
    }
    let fast = driver
        .add_host(
            Instant::now(),
            quick_retries(70),
            format!("fast.test:{port}"),
        )
        .unwrap();
    let ready = drive(&mut driver, LIMIT, |_, r| {
        r.notices
            .iter()
            .any(|(c, n)| *c == fast && matches!(n, Notice::Ready { .. }))
    });
    // Let the hanging names time out their connects a few times more.
    drive(&mut driver, Duration::from_millis(500), |_, _| false);
    dns.release();
    let calls = dns.calls();
    assert!(
        ready,
        "fast.test not ready while three other lookups hung: {calls:?}"
    );
    for k in 0..3 {
        assert_eq!(
            calls.get(&format!("hangs-{k}.test:5038")),
            Some(&1),
            "a hanging lookup is asked once, not once per connect attempt: {calls:?}"
        );
    }
}

#[test]
fn a_resolver_that_panics_fails_that_connect_and_keeps_serving_the_others() {
    let server = front();
    let port = server.local_addr().port();
    let mut options = Options::default();
    // One thread: were a panic to end it, no lookup would be served after the first.
    options.resolver_threads = 1;
    options.resolve = Arc::new(move |host: &str| {
        if host.starts_with("bad") {
            panic!("a resolver bug");
        }
        Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])
    });
    let mut driver = MioDriver::with_options(options).unwrap();
    let bad: Vec<ConnId> = (0..3)
        .map(|k| {
            driver
                .add_host(Instant::now(), config(80 + k), format!("bad-{k}.test:5038"))
                .unwrap()
        })
        .collect();
    let good = driver
        .add_host(Instant::now(), config(90), format!("good.test:{port}"))
        .unwrap();
    let mut failed = Vec::new();
    let ready = drive(&mut driver, LIMIT, |_, r| {
        for (c, n) in &r.notices {
            if let Notice::Disconnected {
                reason: ami_proto::DisconnectReason::ConnectFailed(_),
                ..
            } = n
            {
                failed.push(*c);
            }
        }
        r.notices
            .iter()
            .any(|(c, n)| *c == good && matches!(n, Notice::Ready { .. }))
    });
    assert!(
        ready,
        "good.test never connected after the resolver panicked"
    );
    for c in &bad {
        assert!(failed.contains(c), "{c:?} was not told its lookup failed");
    }
}
