//! Measurement, not a test: sustained events/s from 10 simulated Asterisk servers through one
//! bridge into JetStream (file storage, nats-server on the same box), and the failover time
//! from killing the lease holder to the first event published by the next bridge.
//!
//! ```text
//! cargo run --release -p ami-nats --example bridge_bench
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use ami_nats::BridgeConfig;
use async_nats::jetstream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn last_seq(rt: &tokio::runtime::Runtime, js: &jetstream::Context) -> u64 {
    rt.block_on(async {
        let mut s = js.get_stream("AMI").await.unwrap();
        s.info().await.unwrap().state.last_sequence
    })
}

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
    let window = std::env::var("WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let bridge = TestBridge::start(
        BridgeConfig::new(nats.url(), specs)
            .lease_ttl(Duration::from_secs(5))
            .publish_window(window),
    );
    wait_for(Duration::from_secs(20), "all logged in", || {
        fronts.iter().all(|f| f.stats().logins == 1)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let per_burst: usize = std::env::var("BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let driver = {
        let (fronts, stop) = (fronts.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for f in fronts.iter() {
                    f.with_server(|s, now| s.emit_user_events(now, per_burst));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let (s0, t0, c0) = (last_seq(&rt, &js), Instant::now(), cpu_split(&nats));
    let mut peak_backlog = 0i64;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let b = bridge
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix("ami_bridge_backlog ")?.trim().parse().ok())
            .unwrap_or(0);
        peak_backlog = peak_backlog.max(b);
    }
    let (s1, t1, c1) = (last_seq(&rt, &js), Instant::now(), cpu_split(&nats));
    stop.store(true, Ordering::Relaxed);
    driver.join().unwrap();
    let emitted: u64 = fronts.iter().map(|f| f.stats().events_emitted).sum();
    let rate = (s1 - s0) as f64 / (t1 - t0).as_secs_f64();
    let offered = emitted as f64 / (t1 - t0 + Duration::from_secs(2)).as_secs_f64();
    println!("throughput: {rate:.0} events/s stored by JetStream (file storage), {servers} servers offering ~{offered:.0} events/s, publish window {window}");
    println!("  peak backlog (items waiting for NATS acks): {peak_backlog}");
    let stored = (s1 - s0).max(1) as f64;
    let per = |i: usize| (c1[i] - c0[i]) * 1e6 / stored;
    println!(
        "  CPU per stored event: bridge {:.2} us, simulators {:.2} us, nats-server {:.2} us (load average {})",
        per(0),
        per(1),
        per(2),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );
    let m = bridge.metrics();
    for l in m.lines().filter(|l| {
        l.starts_with("ami_bridge_events_dropped_total")
            || l.starts_with("ami_bridge_publish_retries")
    }) {
        println!("  {l}");
    }
    bridge.shutdown();
    drop(fronts);

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
