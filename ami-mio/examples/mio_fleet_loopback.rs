//! `MioFleet` over loopback (issue 11's measurement, never a test), the same runs as
//! ami-tokio's `tokio_fleet_loopback`: merged event throughput from 1 and from 10 flooding
//! simulators; a quiet server's worst Ping latency among 10 and 100 servers (one flooding),
//! and the longest step.
//!
//! `cargo run --release -p ami-mio --example mio_fleet_loopback [SECONDS]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_mio::MioFleet;
use ami_proto::fleet::{FleetItem, FleetOutput, Route};
use ami_proto::{Action, ActionId, ClientConfig, StreamItem};
use ami_sim::flood::Flood;
use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use std::time::{Duration, Instant};

fn config() -> ClientConfig {
    ClientConfig::builder("admin", "amp111").build().unwrap()
}

/// Steps until every server is ready.
fn all_ready(fleet: &mut MioFleet, names: &[String]) {
    while !names
        .iter()
        .all(|n| fleet.status(n).is_some_and(|s| s.is_ready()))
    {
        fleet.step(Instant::now()).unwrap();
        while fleet.poll_event().is_some() {}
        fleet.wait(Some(Duration::from_millis(5))).unwrap();
    }
}

fn merged(n: usize, span: Duration) -> (f64, u64) {
    let floods: Vec<Flood> = (0..n).map(|_| Flood::start().unwrap()).collect();
    let mut fleet = MioFleet::new().unwrap();
    let names: Vec<String> = (0..n).map(|k| format!("flood{k}")).collect();
    for (name, f) in names.iter().zip(&floods) {
        fleet.add(Instant::now(), name, config(), f.addr()).unwrap();
    }
    all_ready(&mut fleet, &names);
    let (mut got, mut lost) = (0u64, 0u64);
    let mut batch: Vec<FleetItem> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < span {
        fleet.step(Instant::now()).unwrap();
        batch.clear();
        fleet.poll_events(&mut batch, usize::MAX);
        for item in &batch {
            match item.item {
                StreamItem::Event(_) => got += 1,
                StreamItem::Gap { dropped } => lost += dropped,
                _ => {}
            }
        }
        fleet.wait(Some(Duration::from_millis(5))).unwrap();
    }
    (got as f64 / started.elapsed().as_secs_f64(), lost)
}

fn quiet_latency(n: usize, span: Duration) -> (Duration, Duration, usize, Duration) {
    let flood = Flood::start().unwrap();
    let fronts: Vec<TcpFront> = (1..n)
        .map(|_| TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap())
        .collect();
    let mut fleet = MioFleet::new().unwrap();
    let mut names = vec!["flood".to_string()];
    fleet
        .add(Instant::now(), "flood", config(), flood.addr())
        .unwrap();
    for (k, f) in fronts.iter().enumerate() {
        names.push(format!("quiet{k}"));
        fleet
            .add(Instant::now(), &names[k + 1], config(), f.local_addr())
            .unwrap();
    }
    all_ready(&mut fleet, &names);
    let mut lat = Vec::new();
    let mut inflight: Option<(ActionId, Instant)> = None;
    let mut longest = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < span {
        let now = Instant::now();
        if inflight.is_none() {
            let r = fleet
                .send(now, Route::Server("quiet0"), Action::new("Ping"))
                .unwrap();
            inflight = Some((r.id, now));
        }
        let report = fleet.step(now).unwrap();
        longest = longest.max(now.elapsed());
        for news in report.news {
            if let FleetOutput::Completed { id, outcome, .. } = news {
                if inflight.as_ref().is_some_and(|(want, _)| *want == id) {
                    assert!(outcome.is_ok(), "{outcome:?}");
                    lat.push(inflight.take().map(|(_, at)| at.elapsed()).unwrap());
                }
            }
        }
        while fleet.poll_event().is_some() {}
        fleet.wait(Some(Duration::from_millis(5))).unwrap();
    }
    let worst = lat.iter().max().copied().unwrap_or_default();
    let mean = lat.iter().sum::<Duration>() / u32::try_from(lat.len().max(1)).unwrap();
    (worst, mean, lat.len(), longest)
}

fn main() {
    let secs: f64 = std::env::args().nth(1).map_or(5.0, |s| s.parse().unwrap());
    let span = Duration::from_secs_f64(secs);
    for n in [1, 10] {
        let (rate, lost) = merged(n, span);
        println!(
            "mio merged stream, {n:>2} flooding servers: {rate:>10.0} events/s ({lost} lost as gaps)"
        );
    }
    for n in [10, 100] {
        let (worst, mean, pings, longest) = quiet_latency(n, span);
        println!(
            "mio, {n:>3} servers (1 flooding): quiet server's Ping worst {worst:?}, mean {mean:?} over {pings} pings; longest step {longest:?}"
        );
    }
}
