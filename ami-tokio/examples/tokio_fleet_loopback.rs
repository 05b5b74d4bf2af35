//! The tokio fleet over loopback (issue 11's measurement, never a test):
//! 1. merged event throughput from 1 and from 10 flooding simulators at once;
//! 2. a quiet server's worst Ping latency among 10 and 100 servers (one of them flooding).
//!
//! `cargo run --release -p ami-tokio --example tokio_fleet_loopback [SECONDS]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::fleet::{FleetConfig, Route};
use ami_proto::{Action, ClientConfig, StreamItem};
use ami_sim::flood::Flood;
use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use ami_tokio::fleet::{spawn_fleet, FleetHandle};
use std::time::{Duration, Instant};

fn config() -> ClientConfig {
    ClientConfig::builder("admin", "amp111").build().unwrap()
}

async fn all_ready(fleet: &FleetHandle) {
    while fleet.statuses().iter().any(|(_, s)| !s.is_ready()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Events per second through the merged stream from `n` flooding servers, and events lost.
async fn merged(n: usize, span: Duration) -> (f64, u64) {
    let floods: Vec<Flood> = (0..n).map(|_| Flood::start().unwrap()).collect();
    let (fleet, mut events) = spawn_fleet(FleetConfig::default());
    for (k, f) in floods.iter().enumerate() {
        fleet.add(&format!("flood{k}"), config(), f.addr()).unwrap();
    }
    all_ready(&fleet).await;
    let (mut got, mut lost) = (0u64, 0u64);
    let started = Instant::now();
    let mut batch = Vec::new();
    while started.elapsed() < span {
        batch.clear();
        let wait = events.recv_many(&mut batch, 4096);
        let _ = tokio::time::timeout(Duration::from_millis(50), wait).await;
        for item in &batch {
            match item.item {
                StreamItem::Event(_) => got += 1,
                StreamItem::Gap { dropped } => lost += dropped,
                _ => {}
            }
        }
    }
    let rate = got as f64 / started.elapsed().as_secs_f64();
    fleet.close();
    (rate, lost)
}

/// Worst and mean Ping latency on one quiet server among `n` (one of them flooding).
async fn quiet_latency(n: usize, span: Duration) -> (Duration, Duration, usize) {
    let flood = Flood::start().unwrap();
    let fronts: Vec<TcpFront> = (1..n)
        .map(|_| TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap())
        .collect();
    let (fleet, mut events) = spawn_fleet(FleetConfig::default());
    fleet.add("flood", config(), flood.addr()).unwrap();
    for (k, f) in fronts.iter().enumerate() {
        fleet
            .add(&format!("quiet{k}"), config(), f.local_addr())
            .unwrap();
    }
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    all_ready(&fleet).await;
    let mut lat = Vec::new();
    let started = Instant::now();
    while started.elapsed() < span {
        let t = Instant::now();
        let r = fleet
            .send(Route::Server("quiet0"), Action::new("Ping"))
            .await
            .unwrap();
        assert!(r.result.is_ok(), "{:?}", r.result);
        lat.push(t.elapsed());
    }
    fleet.close();
    let worst = lat.iter().max().copied().unwrap_or_default();
    let mean = lat.iter().sum::<Duration>() / u32::try_from(lat.len().max(1)).unwrap();
    (worst, mean, lat.len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: f64 = std::env::args().nth(1).map_or(5.0, |s| s.parse().unwrap());
    let span = Duration::from_secs_f64(secs);
    for n in [1, 10] {
        let (rate, lost) = merged(n, span).await;
        println!(
            "tokio merged stream, {n:>2} flooding servers: {rate:>10.0} events/s ({lost} lost as gaps)"
        );
    }
    for n in [10, 100] {
        let (worst, mean, pings) = quiet_latency(n, span).await;
        println!(
            "tokio, {n:>3} servers (1 flooding): quiet server's Ping worst {worst:?}, mean {mean:?} over {pings} pings"
        );
    }
}
