//! What an event storm costs the simulator (a measurement, never a test): CPU time per event
//! of `emit_user_events_sized` (500-byte events) and `emit_user_events` (plain, ~75 bytes),
//! in batches of `Flood::BATCH` to `SESSIONS` logged-in sessions that read everything
//! between batches (as a `Flood` does, minus the sockets).
//!
//! `cargo run --release -p ami-sim --example storm_cost -- [SECONDS] [SESSIONS]`
//! (default 2 s per kind, 1 session). CPU time is this thread's, from
//! `/proc/thread-self/schedstat` (Linux), so preemption by other work on a loaded machine
//! does not count; elsewhere it falls back to wall-clock time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_sim::flood::Flood;
use ami_sim::{SessionId, SimConfig, SimServer};
use std::time::{Duration, Instant};

/// This thread's CPU time, if the OS says it.
fn cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn run(seconds: f64, sessions: usize, event_bytes: Option<usize>) {
    let t0 = Instant::now();
    let config = SimConfig {
        socket_buffer: 4 << 20,
        ..SimConfig::default()
    };
    let mut sim = SimServer::new(config, t0);
    let ids: Vec<SessionId> = (0..sessions)
        .map(|_| {
            let s = sim.accept(t0);
            sim.receive(
                s,
                t0,
                b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\n\r\n",
            );
            s
        })
        .collect();
    let drain = |sim: &mut SimServer| {
        for &s in &ids {
            let n = sim.transmit(s).len();
            sim.advance_transmit(s, n);
        }
    };
    drain(&mut sim);
    let delivered = sim.stats().events_delivered;
    let (wall0, cpu0) = (Instant::now(), cpu());
    let mut events = 0u64;
    while wall0.elapsed().as_secs_f64() < seconds {
        let now = Instant::now();
        match event_bytes {
            Some(b) => sim.emit_user_events_sized(now, Flood::BATCH, b),
            None => sim.emit_user_events(now, Flood::BATCH),
        }
        events += Flood::BATCH as u64;
        drain(&mut sim);
    }
    let wall = wall0.elapsed();
    let spent = match (cpu0, cpu()) {
        (Some(a), Some(b)) => b - a,
        _ => wall,
    };
    let st = sim.stats();
    assert_eq!(st.events_delivered - delivered, events * sessions as u64);
    println!(
        "{:>9} {:>8} {:>11} {:>10.0} ns {:>10.2} M/s",
        event_bytes.map_or("plain".to_string(), |b| format!("{b} B")),
        sessions,
        events,
        spent.as_nanos() as f64 / events as f64,
        events as f64 / spent.as_secs_f64() / 1e6,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(2.0, |a| a.parse().expect("SECONDS"));
    let sessions: usize = args.next().map_or(1, |a| a.parse().expect("SESSIONS"));
    println!(
        "{:>9} {:>8} {:>11} {:>13} {:>14}",
        "event", "sessions", "events", "CPU/event", "events/CPU-s"
    );
    run(seconds, sessions, Some(500));
    run(seconds, sessions, None);
}
