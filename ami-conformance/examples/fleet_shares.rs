//! Measurement (not a test): N flooding simulators (`ami_sim::flood::Flood`, 500-byte
//! events) merged by an `ami-async` fleet on tokio or async-std, read as fast as possible;
//! prints each server's share of the merged stream and the fleet driver's per-server read
//! counters (`FleetHandle::read_counters`: visits, reads, bytes, empty reads, holds), to see
//! whether every socket gets its turn.
//!
//! `cargo run --release -p ami-conformance --example fleet_shares -- [tokio|async-std] [SERVERS] [SECONDS]`
//! (default async-std 10 3). Like `ami bench --servers`: tokio runs the drivers on a
//! two-worker runtime, async-std on a thread per shard (`run_fleet_on_thread`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_async::fleet::{FleetConfig, FleetEvents, FleetHandle, FleetItem};
use ami_proto::{ClientConfig, StreamItem};
use ami_sim::flood::Flood;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = args.first().map_or("async-std", String::as_str).to_string();
    let n: usize = args.get(1).map_or(10, |a| a.parse().expect("SERVERS"));
    let secs: f64 = args.get(2).map_or(3.0, |a| a.parse().expect("SECONDS"));
    let floods: Vec<Flood> = (0..n).map(|_| Flood::start_sized(500).unwrap()).collect();
    let add = |fleet: &FleetHandle| {
        for (i, f) in floods.iter().enumerate() {
            let config = ClientConfig::builder("admin", "amp111").build().unwrap();
            fleet.add(&format!("s{i}"), config, f.addr()).unwrap();
        }
    };
    let (shares, counters) = match runtime.as_str() {
        "tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (fleet, events) = {
                let _entered = rt.enter();
                ami_tokio::fleet::spawn_fleet(FleetConfig::default())
            };
            add(&fleet);
            let shares = rt.block_on(read(events, secs));
            let counters = fleet.read_counters();
            fleet.close();
            (shares, counters)
        }
        "async-std" => {
            let (fleet, events) =
                ami_async_std::fleet::run_fleet_on_thread(FleetConfig::default()).unwrap();
            add(&fleet);
            let shares = async_io::block_on(read(events, secs));
            let counters = fleet.read_counters();
            fleet.close();
            (shares, counters)
        }
        other => panic!("runtime: tokio or async-std, not {other}"),
    };
    let total: u64 = shares.values().sum();
    println!(
        "{runtime}, {n} servers, {secs} s: {:.0} events/s merged",
        total as f64 / secs
    );
    println!(
        "server     events   visits    reads  MB read  empty  holds  KB/read | writes  KB/write  in write  starved  starved for"
    );
    for (name, c) in &counters {
        let i: usize = name.as_str()[1..].parse().unwrap();
        let w = floods[i].writes();
        println!(
            "{:<6} {:>10} {:>8} {:>8} {:>8.1} {:>6} {:>6} {:>8.1} | {:>6} {:>8.1} {:>8.0?} {:>8} {:>12.0?}",
            name.as_str(),
            shares.get(name.as_str()).copied().unwrap_or(0),
            c.visits,
            c.reads,
            c.bytes as f64 / 1e6,
            c.empty,
            c.holds,
            c.bytes as f64 / 1e3 / c.reads.max(1) as f64,
            w.writes,
            w.bytes as f64 / 1e3 / w.writes.max(1) as f64,
            w.in_write,
            w.starved,
            w.starved_for,
        );
    }
}

/// Reads the merged stream for `secs` once every server is up; events per server.
async fn read(mut events: FleetEvents, secs: f64) -> HashMap<String, u64> {
    let mut shares: HashMap<String, u64> = HashMap::new();
    let mut batch: Vec<FleetItem> = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        batch.clear();
        if events.recv_many(&mut batch, 4096).await == 0 {
            break;
        }
        for item in &batch {
            if let StreamItem::Event(_) = item.item {
                *shares.entry(item.server.as_str().to_string()).or_default() += 1;
            }
        }
    }
    shares
}
