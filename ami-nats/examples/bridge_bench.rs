//! Measurement, not a test: sustained events/s from 10 simulated Asterisk servers through one
//! bridge into JetStream (file storage, nats-server on the same box), and the failover time
//! from killing the lease holder to the first event published by the next bridge.
//!
//! ```text
//! BURST=60 cargo run --release -p ami-nats --example bridge_bench
//! ```
//!
//! Environment (all optional): `SECS` seconds measured after a 2-s warm-up (default 10;
//! over 10, a line every 10 s shows the stream and the duplicate window filling);
//! `BURST` events per server every 5 ms (default 200; the
//! driver keeps the 5 ms period exact, catching up on late wakes, so 10 servers at `BURST`
//! offer `BURST * 2000` events/s); `BRIDGE_THREADS` the bridge runtime's workers (default 0:
//! a current-thread runtime, as `ami bridge` runs); `WINDOW` publishes awaiting acks (default 1024); `DUPWIN`
//! the stream's duplicate window in seconds (default: the bridge's, 120); `MAX_MIB` the
//! stream's byte limit in MiB (default 1024); `MEM=1` memory storage instead of file
//! storage (to see what the file store costs); `FAILOVER=0` skips
//! the failover part; `RAW=1` adds a trivial publisher into the same stream config (one
//! connection, pre-built bodies of the bridge's average size, a message ID each, acks on one
//! wildcard inbox, same window): nats-server's own CPU per stored message, the floor that
//! no bridge change can go under (`RAW=2`: that publisher only, `BYTES` per message,
//! default 284, the bridge's average here; `RAW_NOID=1` without message IDs, `RAW_NOID=2` with
//! the ID under another header name: what headers and de-duplication cost; `RAW_RING=N`
//! reply subjects that repeat every N publishes instead of one per publish: what
//! nats-server's subject-match cache misses cost).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use ami_nats::{BridgeConfig, StreamLimits};
use async_nats::jetstream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// CPU seconds used so far by the threads of process `pid` whose name passes `which`
/// (Linux `/proc`; 0 elsewhere). CPU per event is the figure that survives a shared machine:
/// wall-clock throughput moves with what the other processes do.
fn cpu_secs(pid: u32, which: impl Fn(&str) -> bool) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for t in tasks.flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !which(name.trim_end()) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is the 3rd field, utime the 14th.
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split(' ')
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        ticks += f.iter().sum::<u64>();
    }
    // USER_HZ is 100 on every Linux this runs on.
    ticks as f64 / 100.0
}

/// CPU seconds of the bridge (its runtime's worker threads), the rest of this process (the
/// simulators and their driver) and nats-server.
fn cpu_split(nats: &Nats) -> [f64; 3] {
    let me = std::process::id();
    [
        cpu_secs(me, |n| n.starts_with("tokio-")),
        cpu_secs(me, |n| !n.starts_with("tokio-")),
        nats.pid().map_or(0.0, |p| cpu_secs(p, |_| true)),
    ]
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .next()
        .unwrap_or("?")
        .to_string()
}

fn stream_limits() -> StreamLimits {
    let mut limits = StreamLimits::default();
    if let Some(s) = env::<u64>("DUPWIN") {
        limits.duplicate_window = Duration::from_secs(s);
    }
    if let Some(mib) = env::<i64>("MAX_MIB") {
        limits.max_bytes = mib << 20;
    }
    if env::<u8>("MEM") == Some(1) {
        limits.file_storage = false;
    }
    limits
}

fn main() {
    let Some(nats) = Nats::start() else { return };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async { jetstream::new(async_nats::connect(nats.url()).await.unwrap()) });

    // Throughput: 10 servers, each fed in bursts by one driver thread.
    let servers = 10;
    let fronts: Arc<Vec<_>> = Arc::new((0..servers).map(|_| sim()).collect());
    let specs = fronts
        .iter()
        .enumerate()
        .map(|(i, f)| spec(&format!("pbx{i}"), f, login().build().unwrap()))
        .collect();
    let window = env("WINDOW").unwrap_or(1024);
    let limits = stream_limits();
    // As `ami bridge` runs it: one current-thread runtime (BRIDGE_THREADS=N: N workers).
    let threads = env("BRIDGE_THREADS").unwrap_or(0);
    let bridge = TestBridge::start_with(
        BridgeConfig::new(nats.url(), specs)
            .lease_ttl(Duration::from_secs(5))
            .publish_window(window)
            .stream(limits.clone()),
        Some(threads),
    );
    wait_for(Duration::from_secs(20), "all logged in", || {
        fronts.iter().all(|f| f.stats().logins == 1)
    });
    if env::<u8>("RAW") == Some(2) {
        // The trivial publisher only (the bridge created the stream); BYTES: message size.
        bridge.shutdown();
        drop(fronts);
        rt.block_on(raw_publisher(
            &nats,
            &js,
            window,
            env("BYTES").unwrap_or(284),
        ));
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let per_burst: usize = env("BURST").unwrap_or(200);
    let driver = {
        let (fronts, stop) = (fronts.clone(), stop.clone());
        std::thread::spawn(move || {
            // One burst per server every 5 ms on a fixed schedule: a late wake-up is caught
            // up (at most 4 bursts at once), so the offered rate does not sag with the
            // sleep's overshoot.
            let period = Duration::from_millis(5);
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let mut due = 0;
                while next <= Instant::now() && due < 4 {
                    due += 1;
                    next += period;
                }
                if next <= Instant::now() {
                    next = Instant::now() + period;
                }
                for f in fronts.iter() {
                    f.with_server(|s, now| s.emit_user_events(now, per_burst * due));
                }
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // SECS: seconds measured after the 2-s warm-up (default 10); longer runs print every
    // 10 s, showing the stream filling (then every new message removes an old one) and the
    // duplicate window filling (nats-server keeps every message ID of it).
    let secs: u64 = env("SECS").unwrap_or(10).max(1);
    let emitted = || fronts.iter().map(|f| f.stats().events_emitted).sum::<u64>();
    let state = || {
        rt.block_on(async {
            let mut s = js.get_stream("AMI").await.unwrap();
            s.info().await.unwrap().state.clone()
        })
    };
    let dropped = || -> u64 {
        bridge
            .metrics()
            .lines()
            .filter_map(|l| l.strip_prefix("ami_bridge_events_dropped_total"))
            .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<u64>().ok())
            .sum()
    };
    let (st0, t0, c0, e0, d0) = (
        state(),
        Instant::now(),
        cpu_split(&nats),
        emitted(),
        dropped(),
    );
    let (mut sp, mut tp, mut cp) = (st0.last_sequence, t0, c0);
    let mut peak_backlog = 0i64;
    let mut ticks = 0u64;
    while ticks < secs * 2 {
        std::thread::sleep(Duration::from_millis(500));
        ticks += 1;
        let b = bridge
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix("ami_bridge_backlog ")?.trim().parse().ok())
            .unwrap_or(0);
        peak_backlog = peak_backlog.max(b);
        if secs > 10 && ticks.is_multiple_of(20) {
            let (st, t, c) = (state(), Instant::now(), cpu_split(&nats));
            let n = (st.last_sequence - sp).max(1) as f64;
            println!(
                "  {:>3}-{:>3} s: {:.0} stored/s, CPU per event: bridge {:.2} us, nats-server {:.2} us; stream {} messages, {} MiB, first sequence {}; nats-server resident {} MiB (load average {})",
                (tp - t0).as_secs(),
                (t - t0).as_secs(),
                n / (t - tp).as_secs_f64(),
                (c[0] - cp[0]) * 1e6 / n,
                (c[2] - cp[2]) * 1e6 / n,
                st.messages,
                st.bytes >> 20,
                st.first_sequence,
                resident_mib(nats.pid().unwrap_or(0)),
                load_average()
            );
            (sp, tp, cp) = (st.last_sequence, t, c);
        }
    }
    let (st1, t1, c1, e1, d1) = (
        state(),
        Instant::now(),
        cpu_split(&nats),
        emitted(),
        dropped(),
    );
    stop.store(true, Ordering::Relaxed);
    driver.join().unwrap();
    let took = (t1 - t0).as_secs_f64();
    let stored = (st1.last_sequence - st0.last_sequence).max(1) as f64;
    let avg_bytes = st1.bytes / st1.messages.max(1);
    let offered = (e1 - e0) as f64 / took;
    println!("throughput: {:.0} events/s stored by JetStream (file storage) over {took:.1} s measured after a 2-s warm-up, {servers} servers offering {offered:.0} events/s over the same time, publish window {window}, duplicate window {:?}, {avg_bytes} bytes per stored message, bridge runtime {}", stored / took, limits.duplicate_window, if threads == 0 { "current-thread".to_string() } else { format!("{threads} workers") });
    // The stream is full once its first message was removed for max_bytes (nothing is old
    // enough for max_age here).
    let full = if st1.first_sequence > 1 {
        format!("full: {} messages removed to stay within {} MiB (first sequence {} at the start, {} at the end)", st1.first_sequence - 1, limits.max_bytes >> 20, st0.first_sequence, st1.first_sequence)
    } else {
        format!(
            "not full: {} of {} MiB",
            st1.bytes >> 20,
            limits.max_bytes >> 20
        )
    };
    println!(
        "  stream {full}; nats-server resident {} MiB",
        resident_mib(nats.pid().unwrap_or(0))
    );
    println!(
        "  dropped by the bounded AMI queues meanwhile (counted, published as overflow gaps): {}; peak backlog (items waiting for NATS acks): {peak_backlog}",
        d1 - d0
    );
    let per = |i: usize| (c1[i] - c0[i]) * 1e6 / stored;
    println!(
        "  CPU per stored event: bridge {:.2} us, simulators {:.2} us, nats-server {:.2} us (load average {})",
        per(0),
        per(1),
        per(2),
        load_average()
    );
    let m = bridge.metrics();
    for l in m
        .lines()
        .filter(|l| l.starts_with("ami_bridge_publish_retries"))
    {
        println!("  {l}");
    }
    bridge.shutdown();
    drop(fronts);
    if env::<u8>("RAW") == Some(1) {
        rt.block_on(raw_publisher(&nats, &js, window, avg_bytes as usize));
    }
    if env::<u8>("FAILOVER") == Some(0) {
        return;
    }

    // Failover: two bridges for one server, kill the holder, time the first event published
    // by the other (the server emits 10 events every 5 ms throughout).
    let ttl = Duration::from_secs(2);
    let front = Arc::new(sim());
    let cfg = |id: &str| {
        BridgeConfig::new(
            nats.url(),
            vec![spec("fo", &front, login().build().unwrap())],
        )
        .lease_ttl(ttl)
        .bridge_id(id)
    };
    let first = TestBridge::start(cfg("holder"));
    wait_for(Duration::from_secs(10), "holder serves", || {
        first.serving().len() == 1
    });
    let second = TestBridge::start(cfg("standby"));
    wait_for(Duration::from_secs(10), "logged in", || {
        front.stats().logins == 1
    });
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (front, stop) = (front.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                front.with_server(|s, now| s.emit_user_events(now, 10));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    if !second.serving().is_empty() || first.serving().is_empty() {
        println!("failover: not measured, the holder lost its lease before the kill (machine overloaded?)");
        return;
    }
    let mut sub = rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        client.subscribe("ami.fo.event.>").await.unwrap()
    });
    let killed = Instant::now();
    first.kill();
    let (took, first_event) = rt.block_on(first_event_of(&mut sub, "standby-", killed));
    if took < ttl / 2 {
        // Takeover cannot happen before a TTL without a release: report what was seen.
        println!("failover: not measured, the standby published {took:?} after the kill (before a TTL could pass): {first_event}");
    } else {
        println!("failover: {took:?} from killing the lease holder to the first event published by the standby (lease TTL {ttl:?})");
    }
    // A clean hand-over: the holder stops (lease released), a standby takes over at its next
    // look at the lease (every TTL/4).
    let third = TestBridge::start(cfg("third"));
    std::thread::sleep(Duration::from_secs(1));
    let stopped = Instant::now();
    second.shutdown();
    let (took, _) = rt.block_on(first_event_of(&mut sub, "third-", stopped));
    println!("clean hand-over: {took:?} from stopping the holder to the first event published by the standby (lease TTL {ttl:?})");
    stop.store(true, Ordering::Relaxed);
    driver.join().unwrap();
    third.shutdown();
}

/// A trivial publisher into the stream the bridge created (same config): pre-built bodies
/// of `bytes`, one message ID each, on 10 subjects, `window` acks outstanding on one
/// wildcard inbox. What nats-server costs per stored message with nothing else going on.
async fn raw_publisher(nats: &Nats, js: &jetstream::Context, window: usize, bytes: usize) {
    use futures_util::StreamExt;
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(window + 1024)
        .connect(nats.url())
        .await
        .unwrap();
    let inbox = client.new_inbox();
    let mut acks = client.subscribe(format!("{inbox}.*")).await.unwrap();
    let subjects: Vec<async_nats::Subject> = (0..10)
        .map(|i| format!("ami.raw{i}.event.UserEvent").into())
        .collect();
    let body = bytes::Bytes::from(vec![b'x'; bytes.saturating_sub(60).max(1)]);
    let (mut sent, mut acked, mut failed) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let mut measured: Option<(u64, Instant, f64, f64)> = None;
    let me = std::process::id();
    // RAW_SECS: how long (default 12 s; the last 10 s are measured). Longer than the
    // duplicate window shows its steady state (JetStream keeps every ID of the window).
    let secs: u64 = env("RAW_SECS").unwrap_or(12).max(12);
    // RAW_NOID=1: no message ID (what de-duplication and headers cost nats-server);
    // RAW_NOID=2: the same header under another name (what de-duplication alone costs).
    let no_id = env::<u8>("RAW_NOID").unwrap_or(0);
    // RAW_RING=N: reply subjects repeat every N publishes (default: never).
    let ring: u64 = env("RAW_RING").unwrap_or(u64::MAX);
    while start.elapsed() < Duration::from_secs(secs) {
        while sent - acked < window as u64 {
            let mut h = async_nats::HeaderMap::new();
            match no_id {
                0 => h.insert("Nats-Msg-Id", format!("raw.{sent}").as_str()),
                1 => {}
                _ => h.insert("Ami-Raw-Id", format!("raw.{sent}").as_str()),
            }
            client
                .publish_with_reply_and_headers(
                    subjects[(sent % 10) as usize].clone(),
                    format!("{inbox}.{}", sent % ring),
                    h,
                    body.clone(),
                )
                .await
                .unwrap();
            sent += 1;
        }
        let m = acks.next().await.unwrap();
        if m.payload.windows(5).any(|w| w == b"\"seq\"") {
            acked += 1;
        } else {
            failed += 1;
            acked += 1;
        }
        if measured.is_none() && start.elapsed() > Duration::from_secs(secs - 10) {
            measured = Some((
                acked,
                Instant::now(),
                cpu_secs(nats.pid().unwrap(), |_| true),
                cpu_secs(me, |_| true),
            ));
        }
    }
    let (a0, t0, n0, p0) = measured.unwrap();
    let (n1, p1) = (
        cpu_secs(nats.pid().unwrap(), |_| true),
        cpu_secs(me, |_| true),
    );
    let stored = (acked - a0) as f64;
    let _ = js;
    println!(
        "raw publisher (same stream config, {bytes}-byte messages{}, window {window}, {secs} s): {:.0} messages/s acked, CPU per message: nats-server {:.2} us, publisher {:.2} us; {failed} refused; nats-server resident {} MiB (load average {})",
        match no_id {
            0 => "",
            1 => " without message ID",
            _ => " with the ID in another header (no de-duplication)",
        },
        stored / t0.elapsed().as_secs_f64(),
        (n1 - n0) * 1e6 / stored.max(1.0),
        (p1 - p0) * 1e6 / stored.max(1.0),
        resident_mib(nats.pid().unwrap()),
        load_average()
    );
}

/// Resident memory of process `pid` in MiB (Linux `/proc`; 0 elsewhere).
fn resident_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// Waits for the first event of a session whose ID starts with `prefix`: how long after
/// `since`, and its body.
async fn first_event_of(
    sub: &mut async_nats::Subscriber,
    prefix: &str,
    since: Instant,
) -> (Duration, serde_json::Value) {
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        if v["session"].as_str().unwrap_or("").starts_with(prefix) {
            return (since.elapsed(), v);
        }
    }
}
