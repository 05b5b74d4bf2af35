//! Measures what 100,000 pending actions with deadlines cost: time per send, per answer and
//! per timeout, and the resident memory while they are pending.
//!
//! `cargo run --release -p ami-proto --example pending_cost`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

use ami_proto::{Action, Client, ClientConfig, Input, Notice, Output};
use std::time::{Duration, Instant};

/// Resident memory in bytes, from /proc (Linux); 0 elsewhere.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

const N: usize = 100_000;

fn ready_client(t0: Instant, depth: usize) -> Client {
    let cfg = ClientConfig::builder("admin", "amp111")
        .seed(1)
        .max_pending_actions(N)
        .max_queued_actions(N)
        .pipeline_depth(depth)
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut c = Client::new(cfg, t0);
    while !matches!(c.poll_output(), Output::Wait(_)) {}
    c.handle_input(t0, Input::Connected);
    c.handle_input(t0, Input::Received(b"Asterisk Call Manager/11.0.0\r\n"));
    let login = String::from_utf8_lossy(c.transmit()).to_string();
    let id = login
        .lines()
        .find_map(|l| l.strip_prefix("ActionID: "))
        .unwrap()
        .to_string();
    c.advance_transmit(login.len());
    let ok =
        format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n");
    c.handle_input(t0, Input::Received(ok.as_bytes()));
    while !matches!(c.poll_output(), Output::Wait(_)) {}
    assert!(c.is_ready());
    c
}

fn main() {
    let t0 = Instant::now();
    // 1. Send N actions that all get written (pipeline as deep as N).
    let mut c = ready_client(t0, N);
    let before = rss();
    let start = Instant::now();
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        let at = t0 + Duration::from_micros(i as u64);
        ids.push(c.send_action(at, Action::new("Ping")).unwrap());
    }
    let send = start.elapsed();
    let wire = c.transmit().len();
    c.advance_transmit(wire);
    let held = rss().saturating_sub(before);
    println!(
        "send: {N} actions in {send:?} = {:.0} ns/action; RSS growth while pending: {:.1} MiB = {} bytes/action (the caller's ids and the encoded bytes included)",
        send.as_nanos() as f64 / N as f64,
        held as f64 / (1 << 20) as f64,
        held / N
    );

    // 2. Answer them all (in order, as Asterisk does).
    let mut replies = Vec::with_capacity(N * 64);
    for id in &ids {
        replies.extend_from_slice(b"Response: Success\r\nActionID: ");
        replies.extend_from_slice(id.as_str().as_bytes());
        replies.extend_from_slice(b"\r\nPing: Pong\r\n\r\n");
    }
    let start = Instant::now();
    for chunk in replies.chunks(64 << 10) {
        c.handle_input(t0, Input::Received(chunk));
        while !matches!(c.poll_output(), Output::Wait(_)) {}
    }
    let answer = start.elapsed();
    println!(
        "answer: {N} responses correlated and completed in {answer:?} = {:.0} ns/action",
        answer.as_nanos() as f64 / N as f64
    );

    // 3. N pending actions, never answered, all time out in one handle_timeout.
    let mut c = ready_client(t0, N);
    for i in 0..N {
        let at = t0 + Duration::from_micros(i as u64);
        c.send_action(at, Action::new("Ping")).unwrap();
    }
    let wire = c.transmit().len();
    c.advance_transmit(wire);
    let start = Instant::now();
    let mut timed_out = 0;
    // Walk the deadlines in 100 steps of virtual time, as a loop would.
    for step in 1..=100u64 {
        c.handle_timeout(t0 + Duration::from_secs(30) + Duration::from_millis(step));
        loop {
            match c.poll_output() {
                Output::Notice(Notice::Completed { .. }) => timed_out += 1,
                Output::Wait(_) => break,
                _ => {}
            }
        }
    }
    let expire = start.elapsed();
    println!(
        "timeout: {timed_out} deadlines fired in {expire:?} = {:.0} ns/action",
        expire.as_nanos() as f64 / timed_out.max(1) as f64
    );
}
