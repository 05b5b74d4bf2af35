//! Measurement (not a test): what one action costs the client, without sockets, so that a
//! change on the per-action path can be measured on a loaded machine (ping_rate's figures
//! move by tens of percent with the load; these are minimums of interleaved runs).
//!
//! `cargo run --release -p ami-conformance --example action_cost [ROUNDS] [ROW]`
//!
//! ROW (`core`, `async` or `server`) runs that row alone: under `valgrind --tool=callgrind`,
//! the instructions of `ROUNDS = 2` minus those of `ROUNDS = 1`, divided by 64,000, are the
//! instructions per Ping of one run, start-up excluded; unlike time, the same on a loaded
//! machine.
//!
//! Rows, each the minimum over ROUNDS (default 15) interleaved runs of 64,000 Pings with 64
//! in flight (ping_rate's loop):
//!
//! - `core`: `ami_proto::Client` alone: 64 `send_action`s and `transmit`, then the 64
//!   answers in one `handle_input` and the 64 outcomes drained. Only the client's calls are
//!   timed (the answers are formatted outside the timed part).
//! - `ami-async`: 64 callers looping on `Handle::send` on a current-thread tokio runtime,
//!   the driver on an in-memory transport whose write answers at once (ping_rate's server
//!   logic, in the same thread): handles, waiters, wake-ups and the driver's turns, no
//!   syscalls.
//! - `in-memory server`: that transport's answering alone, over the same Pings (subtract
//!   it from `ami-async` for the client's share).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // a measurement: the real clock

use ami_async::{BoxFuture, Runtime, Timer, Transport};
use ami_proto::{Action, Client, ClientConfig, Input, Notice, Output};
use std::hint::black_box;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

const IN_FLIGHT: usize = 64;
const PINGS: usize = 64_000;

fn config() -> ClientConfig {
    ClientConfig::builder("admin", "x")
        .events("off")
        .ping_interval(Duration::from_secs(600))
        .seed(7)
        .build()
        .unwrap()
}

/// ping_rate's server: answers every complete action in `input` into `out`, keeps the rest.
fn answer_all(input: &mut Vec<u8>, out: &mut Vec<u8>) {
    let finder = memchr::memmem::Finder::new(b"\r\n\r\n");
    let mut start = 0;
    while let Some(end) = finder.find(&input[start..]) {
        answer(&input[start..start + end], out);
        start += end + 4;
    }
    input.drain(..start);
}

fn answer(frame: &[u8], out: &mut Vec<u8>) {
    let (mut action, mut id) = (&b""[..], None);
    for line in frame.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (key, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if key.eq_ignore_ascii_case(b"Action") {
            action = value;
        } else if key.eq_ignore_ascii_case(b"ActionID") {
            id = Some(value);
        }
    }
    out.extend_from_slice(b"Response: Success\r\n");
    if let Some(id) = id {
        out.extend_from_slice(b"ActionID: ");
        out.extend_from_slice(id);
        out.extend_from_slice(b"\r\n");
    }
    if action.eq_ignore_ascii_case(b"Ping") {
        out.extend_from_slice(b"Ping: Pong\r\nTimestamp: 1764756000.123456\r\n\r\n");
    } else if action.eq_ignore_ascii_case(b"Login") {
        out.extend_from_slice(b"Message: Authentication accepted\r\n\r\n");
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

// ---------------------------------------------------------------------------------------
// The core alone.

/// Runs `PINGS` Pings through a logged-in core; returns the time spent in its calls.
fn core_only() -> Duration {
    let mut now = Instant::now();
    let mut c = Client::new(config(), now);
    assert!(matches!(c.poll_output(), Output::Connect));
    c.handle_input(now, Input::Connected);
    c.handle_input(now, Input::Received(b"Asterisk Call Manager/9.0.0\r\n"));
    let (mut sent, mut answers) = (Vec::new(), Vec::new());
    let exchange = |c: &mut Client, sent: &mut Vec<u8>, answers: &mut Vec<u8>| {
        sent.extend_from_slice(c.transmit());
        let n = c.transmit().len();
        c.advance_transmit(n);
        answers.clear();
        answer_all(sent, answers);
    };
    exchange(&mut c, &mut sent, &mut answers);
    c.handle_input(now, Input::Received(&answers));
    while !matches!(c.poll_output(), Output::Wait(_)) {}
    assert!(c.is_ready());
    let mut spent = Duration::ZERO;
    let mut done = 0;
    while done < PINGS {
        // A fresh `now` per batch, as a driver reads the clock once per turn.
        now = Instant::now();
        for _ in 0..IN_FLIGHT {
            black_box(c.send_action(now, Action::new("Ping")).unwrap());
        }
        let sending = now.elapsed();
        exchange(&mut c, &mut sent, &mut answers);
        let t = Instant::now();
        c.handle_input(t, Input::Received(&answers));
        loop {
            match c.poll_output() {
                Output::Notice(Notice::Completed { outcome, .. }) => {
                    assert!(black_box(outcome).is_ok());
                    done += 1;
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
        spent += sending + t.elapsed();
    }
    spent
}

// ---------------------------------------------------------------------------------------
// ami-async on an in-memory transport.

/// The runtime: tokio's clock, an in-memory transport, a timer that never fires (no
/// deadline is near in a run).
struct Mem;

impl Runtime for Mem {
    type Tcp = MemTcp;
    type Timer = NeverTimer;

    fn now() -> Instant {
        Instant::now()
    }
    fn resolve(_: String, _: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(async { Ok(vec![SocketAddr::from(([127, 0, 0, 1], 5038))]) })
    }
    fn connect(_: SocketAddr) -> BoxFuture<io::Result<MemTcp>> {
        Box::pin(async { Ok(MemTcp::default()) })
    }
    fn timer() -> NeverTimer {
        NeverTimer
    }
    // As ami-tokio's.
    const YIELD_BEFORE_WRITE: bool = true;
}

/// A connection to ping_rate's server logic: what is written is answered at once.
struct MemTcp {
    /// Written, not yet a complete action.
    input: Vec<u8>,
    /// Answers not yet read.
    output: Vec<u8>,
    waker: Option<Waker>,
}

impl Default for MemTcp {
    fn default() -> MemTcp {
        MemTcp {
            input: Vec::new(),
            output: b"Asterisk Call Manager/9.0.0\r\n".to_vec(),
            waker: None,
        }
    }
}

impl Transport for MemTcp {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.output.is_empty() {
            self.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = self.output.len().min(buf.len());
        buf[..n].copy_from_slice(&self.output[..n]);
        self.output.drain(..n);
        Poll::Ready(Ok(n))
    }
    fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.input.extend_from_slice(buf);
        answer_all(&mut self.input, &mut self.output);
        if !self.output.is_empty() {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct NeverTimer;

impl Timer for NeverTimer {
    fn set_at(&mut self, _: Instant) {}
    fn poll_fired(&mut self, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

/// Runs `PINGS` Pings through ami-async with 64 callers; returns the wall time (one thread).
fn ami_async_mem() -> Duration {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (ami, _events, driver) = ami_async::session::<Mem>(config(), ("127.0.0.1", 5038));
        let driver = tokio::spawn(driver);
        ami.wait_ready().await.unwrap();
        let left = Arc::new(std::sync::atomic::AtomicUsize::new(PINGS));
        let start = Instant::now();
        let callers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (ami, left) = (ami.clone(), left.clone());
                tokio::spawn(async move {
                    use std::sync::atomic::Ordering::Relaxed;
                    while left
                        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        assert!(ami.send(Action::new("Ping")).await.is_ok());
                    }
                })
            })
            .collect();
        for c in callers {
            c.await.unwrap();
        }
        let took = start.elapsed();
        ami.close();
        driver.await.unwrap();
        took
    })
}

/// The in-memory server alone, over what the core writes for `PINGS` Pings.
fn server_only() -> Duration {
    let now = Instant::now();
    let mut c = Client::new(config(), now);
    let _ = c.poll_output();
    c.handle_input(now, Input::Connected);
    let mut batch = Vec::new();
    // IDs as the client makes them: same length as the real run's.
    for i in 0..IN_FLIGHT {
        batch.extend_from_slice(
            format!("Action: Ping\r\nActionID: abcdefgh-{}\r\n\r\n", 1000 + i).as_bytes(),
        );
    }
    let (mut input, mut out) = (Vec::new(), Vec::new());
    let start = Instant::now();
    for _ in 0..PINGS / IN_FLIGHT {
        input.extend_from_slice(&batch);
        out.clear();
        answer_all(&mut input, &mut out);
        black_box(&out);
    }
    start.elapsed()
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(15);
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "Per-Ping cost, {IN_FLIGHT} in flight, {PINGS} Pings per run, minimum of {rounds} interleaved runs; load at start: {}",
        load()
    );
    let row = std::env::args().nth(2);
    let runs = |name: &str| row.as_deref().is_none_or(|r| r == name);
    let mut best = [Duration::MAX; 3];
    for _ in 0..rounds {
        if runs("core") {
            best[0] = best[0].min(core_only());
        }
        if runs("async") {
            best[1] = best[1].min(ami_async_mem());
        }
        if runs("server") {
            best[2] = best[2].min(server_only());
        }
    }
    println!();
    println!("| path | ns/Ping (min) |");
    println!("|---|---:|");
    for (name, d) in [
        "core",
        "ami-async (tokio current-thread)",
        "in-memory server",
    ]
    .iter()
    .zip(best)
    {
        if d < Duration::MAX {
            println!("| {name} | {:.0} |", d.as_nanos() as f64 / PINGS as f64);
        }
    }
    println!();
    println!("load at end: {}", load());
}
