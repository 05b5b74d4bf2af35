//! Measurement (not a test): Ping round trips per second through each client, beside a raw
//! socket ping-ponger in the same run, at 1 and at 64 Pings in flight; then the syscalls
//! each client makes per Ping (its process under `strace -c -f`, when strace is installed).
//!
//! `cargo run --release -p ami-conformance --example ping_rate [SECS]`
//!
//! One loopback AMI server runs in a process of its own (the same code for every client): a
//! banner, every Login accepted, every `Action: Ping` answered with
//! `Response: Success`/`Ping: Pong`/`Timestamp`, all the answers to one read written at once.
//! Each client runs in a child process of its own, one after the other, for SECS seconds
//! (default 3):
//!
//! - `raw`: a std `TcpStream` writing pre-formatted Ping bytes and counting the answers by
//!   their blank line (the baseline);
//! - `tokio`: `ami-tokio` on a two-worker runtime, each Ping in flight a task looping on
//!   `Handle::send`;
//! - `tokio-1t`: the same on a current-thread runtime;
//! - `async-std`: `ami-async-std` as its docs run it, the driver on a thread of its own
//!   (`run_on_thread`), the callers on the main thread (`async_io::block_on`);
//! - `async-std-parked`: the driver on its own thread as above, the callers in
//!   `futures_lite::future::block_on`, which parks the thread until woken instead of taking
//!   turns at async-io's reactor (whose thread then has to pass each wake-up on);
//! - `async-std-1t`: the driver and the callers in one `block_on` on one thread;
//! - `mio`: `ami-mio`'s `MioDriver`, a new Ping sent for each one completed.
//!
//! Syscalls per Ping are `(calls(N) - calls(0)) / N` with N = 20,000 Pings at one in flight,
//! so that start-up and login do not count.
//!
//! `AMI_PING_ROUNDS=N` then runs one client (`AMI_PING_CLIENT`, default `async-std`) and
//! `raw` alternately N times at one Ping in flight and prints each round's ratio and their
//! median: one row of the table moves 30 % from run to run on a shared machine (the raw
//! ping-ponger with it), and a median of alternated rounds is the figure to compare.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_async::Handle;
use ami_proto::{Action, ClientConfig};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: [&str; 7] = [
    "raw",
    "tokio",
    "tokio-1t",
    "async-std",
    "async-std-parked",
    "async-std-1t",
    "mio",
];
const IN_FLIGHT: [usize; 2] = [1, 64];
/// Pings counted under strace (after subtracting a run with none).
const STRACE_PINGS: u64 = 20_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(),
        Some("client") => {
            let client = args[1].as_str();
            let in_flight: usize = args[2].parse().unwrap();
            let addr: SocketAddr = args[3].parse().unwrap();
            let stop = match args[4].as_str() {
                "count" => Stop::Count(args[5].parse().unwrap()),
                _ => Stop::Secs(args[5].parse().unwrap()),
            };
            let (pings, took, cpu) = run_client(client, in_flight, addr, &stop);
            println!("{pings} {} {cpu}", took.as_secs_f64());
        }
        _ => parent(args.first().and_then(|a| a.parse().ok()).unwrap_or(3.0)),
    }
}

/// When a client stops sending.
enum Stop {
    Secs(f64),
    Count(u64),
}

/// Shared by every caller of one client: whether to send another Ping, and what completed.
struct Budget {
    /// The process's CPU time (all threads, user + system) when the run started.
    cpu0: f64,
    end: Option<Instant>,
    limit: u64,
    taken: AtomicU64,
    done: AtomicU64,
}

impl Budget {
    fn new(stop: &Stop) -> Arc<Budget> {
        let (end, limit) = match *stop {
            Stop::Secs(s) => (Some(Instant::now() + Duration::from_secs_f64(s)), u64::MAX),
            Stop::Count(n) => (None, n),
        };
        Arc::new(Budget {
            cpu0: cpu_secs(),
            end,
            limit,
            taken: AtomicU64::new(0),
            done: AtomicU64::new(0),
        })
    }

    /// Takes one more Ping, if the run is not over.
    fn take(&self) -> bool {
        match self.end {
            Some(end) => Instant::now() < end,
            None => self.taken.fetch_add(1, Ordering::Relaxed) < self.limit,
        }
    }

    fn completed(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// What the client reports: Pings completed, the time since `start`, CPU seconds used.
    fn result(&self, start: Instant) -> (u64, Duration, f64) {
        (self.done(), start.elapsed(), cpu_secs() - self.cpu0)
    }
}

/// This process's CPU time so far (user + system, every thread), from /proc (0 elsewhere).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces): utime and stime are the
    // 12th and 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

// ---------------------------------------------------------------------------------------
// The parent: one server process, each client in a child process, one markdown table.

fn parent(secs: f64) {
    let exe = std::env::current_exe().unwrap();
    let mut server = Command::new(&exe)
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().to_string();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "Ping round trips, {secs} s per client, server {addr}; load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    println!("| client | 1 in flight: Pings/s | vs raw | CPU µs/Ping | 64 in flight: Pings/s | vs raw | CPU µs/Ping |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut raw = [0.0; 2];
    for client in CLIENTS {
        let mut row = format!("| {client} |");
        for (i, in_flight) in IN_FLIGHT.into_iter().enumerate() {
            match child(&exe, client, in_flight, &addr, "secs", &secs.to_string()) {
                Some((n, took, cpu)) => {
                    let r = n as f64 / took;
                    if client == "raw" {
                        raw[i] = r;
                    }
                    row += &format!(
                        " {:.1} k | {:.2} | {:.1} |",
                        r / 1e3,
                        r / raw[i].max(1e-9),
                        cpu * 1e6 / n.max(1) as f64
                    );
                }
                None => row += " failed | - | - |",
            }
        }
        println!("{row}");
    }
    rounds(&exe, &addr, secs);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!(
        "load average at end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if Command::new("strace").arg("-V").output().is_ok() {
        println!();
        println!("Syscalls per Ping at 1 in flight (client process, `strace -c -f`, {STRACE_PINGS} Pings minus none):");
        println!();
        println!("| client | syscalls/Ping | errors/Ping | most frequent, per Ping |");
        println!("|---|---:|---:|---|");
        for client in CLIENTS {
            let with = strace(&exe, client, &addr, STRACE_PINGS);
            let without = strace(&exe, client, &addr, 0);
            let (Some(with), Some(without)) = (with, without) else {
                println!("| {client} | failed | | |");
                continue;
            };
            let per = |f: fn(&(u64, u64)) -> u64| {
                let a: u64 = with.values().map(f).sum();
                let b: u64 = without.values().map(f).sum();
                a.saturating_sub(b) as f64 / STRACE_PINGS as f64
            };
            let mut top: Vec<(String, f64)> = with
                .iter()
                .map(|(name, c)| {
                    let before = without.get(name).map_or(0, |b| b.0);
                    (
                        name.clone(),
                        c.0.saturating_sub(before) as f64 / STRACE_PINGS as f64,
                    )
                })
                .filter(|(_, v)| *v >= 0.05)
                .collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            let top: Vec<String> = top.iter().map(|(n, v)| format!("{n} {v:.2}")).collect();
            println!(
                "| {client} | {:.1} | {:.1} | {} |",
                per(|c| c.0),
                per(|c| c.1),
                top.join(", ")
            );
        }
    }
    server.kill().ok();
    server.wait().ok();
}

/// `AMI_PING_ROUNDS=N`: one client and `raw` alternated N times at one Ping in flight, each
/// round's ratio and the median of the N.
fn rounds(exe: &std::path::Path, addr: &str, secs: f64) {
    let Some(n) = std::env::var("AMI_PING_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let client = std::env::var("AMI_PING_CLIENT").unwrap_or_else(|_| "async-std".into());
    let rate = |c: &str| {
        child(exe, c, 1, addr, "secs", &secs.to_string()).map(|(p, took, _)| p as f64 / took)
    };
    let mut ratios = Vec::new();
    println!();
    for round in 1..=n {
        let (Some(raw), Some(other)) = (rate("raw"), rate(&client)) else {
            println!("round {round}: a client failed");
            continue;
        };
        let ratio = other / raw.max(1e-9);
        println!(
            "round {round}: raw {:.1} k/s, {client} {:.1} k/s, {ratio:.2} of raw",
            raw / 1e3,
            other / 1e3
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    if let Some(median) = ratios.get(ratios.len() / 2) {
        let all: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{client} at 1 in flight over {} rounds: median {median:.2} of raw ({})",
            ratios.len(),
            all.join(", ")
        );
    }
}

/// Runs one client in a child process; returns (pings, seconds, CPU seconds).
fn child(
    exe: &std::path::Path,
    client: &str,
    in_flight: usize,
    addr: &str,
    stop: &str,
    n: &str,
) -> Option<(u64, f64, f64)> {
    let out = Command::new(exe)
        .args(["client", client, &in_flight.to_string(), addr, stop, n])
        .output()
        .ok()?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

/// Syscalls of one client process at one Ping in flight: name -> (calls, errors).
fn strace(
    exe: &std::path::Path,
    client: &str,
    addr: &str,
    pings: u64,
) -> Option<BTreeMap<String, (u64, u64)>> {
    let file =
        std::env::temp_dir().join(format!("ping_rate.{}.{client}.{pings}", std::process::id()));
    let status = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&file)
        .arg(exe)
        .args(["client", client, "1", addr, "count", &pings.to_string()])
        .stdout(Stdio::null())
        .status()
        .ok()?;
    let text = std::fs::read_to_string(&file).ok()?;
    std::fs::remove_file(&file).ok();
    if !status.success() {
        return None;
    }
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 5 || t[0].starts_with('%') || t[0].starts_with('-') {
            continue;
        }
        let name = t[t.len() - 1];
        if name == "total" {
            continue;
        }
        let n: u64 = t[3].parse().ok()?;
        let errors = if t.len() >= 6 {
            t[4].parse().unwrap_or(0)
        } else {
            0
        };
        calls.insert(name.to_string(), (n, errors));
    }
    Some(calls)
}

// ---------------------------------------------------------------------------------------
// The server: the same code for every client.

fn serve() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    for s in listener.incoming() {
        let Ok(s) = s else { continue };
        std::thread::spawn(move || serve_one(s));
    }
}

/// Answers every action of one connection; all answers to one read in one write.
fn serve_one(mut s: TcpStream) {
    s.set_nodelay(true).ok();
    if s.write_all(b"Asterisk Call Manager/9.0.0\r\n").is_err() {
        return;
    }
    let finder = memchr::memmem::Finder::new(b"\r\n\r\n");
    let mut buf = vec![0u8; 64 << 10];
    let (mut have, mut out) = (0usize, Vec::with_capacity(64 << 10));
    loop {
        let k = match s.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(k) => k,
        };
        have += k;
        let mut start = 0;
        while let Some(end) = finder.find(&buf[start..have]) {
            answer(&buf[start..start + end], &mut out);
            start += end + 4;
        }
        buf.copy_within(start..have, 0);
        have -= start;
        if have == buf.len() {
            return; // one action larger than the buffer: not ours
        }
        if !out.is_empty() {
            if s.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
    }
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
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let _ = write!(
            out,
            "Ping: Pong\r\nTimestamp: {}.{:06}\r\n\r\n",
            t.as_secs(),
            t.subsec_micros()
        );
    } else if action.eq_ignore_ascii_case(b"Login") {
        out.extend_from_slice(b"Message: Authentication accepted\r\n\r\n");
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

// ---------------------------------------------------------------------------------------
// The clients.

fn config() -> ClientConfig {
    ClientConfig::builder("admin", "x")
        .events("off")
        .ping_interval(Duration::from_secs(600))
        .build()
        .unwrap()
}

/// Runs one client; returns the Pings completed, the time from the first sent to the last
/// completed, and the CPU time the process used meanwhile.
fn run_client(
    client: &str,
    in_flight: usize,
    addr: SocketAddr,
    stop: &Stop,
) -> (u64, Duration, f64) {
    match client {
        "raw" => raw(addr, in_flight, stop),
        "tokio" | "tokio-1t" => {
            let rt = if client == "tokio" {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            }
            .unwrap();
            rt.block_on(async {
                let (ami, _events) = ami_tokio::spawn(config(), addr);
                ami.wait_ready().await.unwrap();
                let budget = Budget::new(stop);
                let start = Instant::now();
                let tasks: Vec<_> = (0..in_flight)
                    .map(|_| tokio::spawn(caller(ami.clone(), budget.clone())))
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                budget.result(start)
            })
        }
        "async-std" => {
            let (ami, _events) = ami_async_std::run_on_thread(config(), addr).unwrap();
            async_io::block_on(callers(ami, in_flight, stop))
        }
        "async-std-parked" => {
            // The callers park their thread (a futex) instead of driving async-io's reactor.
            let (ami, _events) = ami_async_std::run_on_thread(config(), addr).unwrap();
            futures_lite::future::block_on(callers(ami, in_flight, stop))
        }
        "async-std-1t" => {
            let (ami, _events, driver) = ami_async_std::spawn(config(), addr);
            async_io::block_on(futures_lite::future::or(
                async {
                    driver.await;
                    panic!("the driver ended before the callers")
                },
                callers(ami, in_flight, stop),
            ))
        }
        "mio" => mio(addr, in_flight, stop),
        other => panic!("unknown client {other}"),
    }
}

/// One Ping in flight: sends the next when the last completed, until the budget is spent.
async fn caller(ami: Handle, budget: Arc<Budget>) {
    while budget.take() {
        let r = ami.send(Action::new("Ping")).await;
        assert!(r.is_ok(), "Ping failed: {r:?}");
        budget.completed();
    }
}

/// `in_flight` callers in one future (for executors that only block on one).
async fn callers(ami: Handle, in_flight: usize, stop: &Stop) -> (u64, Duration, f64) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    ami.wait_ready().await.unwrap();
    let budget = Budget::new(stop);
    let start = Instant::now();
    let mut all: FuturesUnordered<_> = (0..in_flight)
        .map(|_| caller(ami.clone(), budget.clone()))
        .collect();
    while all.next().await.is_some() {}
    budget.result(start)
}

/// The baseline: pre-formatted Pings on a blocking socket, answers counted by their blank
/// line; a new Ping written for each answer, all of one read's in one write.
fn raw(addr: SocketAddr, in_flight: usize, stop: &Stop) -> (u64, Duration, f64) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"Action: Login\r\nActionID: 1\r\nUsername: admin\r\nSecret: x\r\n\r\n")
        .unwrap();
    let finder = memchr::memmem::Finder::new(b"\r\n\r\n");
    let mut buf = vec![0u8; 64 << 10];
    // The tail of the last read, so that a blank line split across two reads is found.
    let mut carry = [0u8; 3];
    let mut frames = |s: &mut TcpStream, buf: &mut Vec<u8>| -> u64 {
        let k = s.read(&mut buf[3..]).unwrap();
        assert!(k > 0, "server closed");
        buf[..3].copy_from_slice(&carry);
        let n = finder.find_iter(&buf[..3 + k]).count();
        carry.copy_from_slice(&buf[k..k + 3]);
        n as u64
    };
    while frames(&mut s, &mut buf) == 0 {} // the login's answer
    let ping = b"Action: Ping\r\nActionID: raw\r\n\r\n";
    let pings: Vec<u8> = ping.repeat(in_flight);
    let budget = Budget::new(stop);
    let start = Instant::now();
    let mut out = 0usize;
    for _ in 0..in_flight {
        if budget.take() {
            out += 1;
        }
    }
    s.write_all(&pings[..out * ping.len()]).unwrap();
    while out > 0 {
        let n = frames(&mut s, &mut buf);
        let mut again = 0;
        for _ in 0..n {
            budget.completed();
            out -= 1;
            if budget.take() {
                again += 1;
            }
        }
        if again > 0 {
            s.write_all(&pings[..again * ping.len()]).unwrap();
            out += again;
        }
    }
    budget.result(start)
}

/// `ami-mio`: one `MioDriver`, a new Ping sent for each one completed.
fn mio(addr: SocketAddr, in_flight: usize, stop: &Stop) -> (u64, Duration, f64) {
    use ami_mio::{MioDriver, Notice};
    let mut driver = MioDriver::new().unwrap();
    let conn = driver.add(Instant::now(), config(), addr).unwrap();
    let mut budget = None;
    let mut start = Instant::now();
    let mut out = 0usize;
    loop {
        let report = driver.step(Instant::now()).unwrap();
        for (_, notice) in report.notices {
            match notice {
                Notice::Ready { .. } if budget.is_none() => {
                    let b = Budget::new(stop);
                    start = Instant::now();
                    for _ in 0..in_flight {
                        if b.take() {
                            driver
                                .send(Instant::now(), conn, Action::new("Ping"))
                                .unwrap();
                            out += 1;
                        }
                    }
                    budget = Some(b);
                }
                Notice::Completed { outcome, .. } => {
                    assert!(outcome.is_ok(), "Ping failed: {outcome:?}");
                    let b = budget.as_ref().unwrap();
                    b.completed();
                    out -= 1;
                    if b.take() {
                        driver
                            .send(Instant::now(), conn, Action::new("Ping"))
                            .unwrap();
                        out += 1;
                    }
                }
                Notice::Disconnected { reason, .. } | Notice::Closed { reason } => {
                    panic!("lost the server: {reason:?}")
                }
                _ => {}
            }
        }
        if let Some(b) = &budget {
            if out == 0 {
                return b.result(start);
            }
        }
        driver.wait(None).unwrap();
    }
}
