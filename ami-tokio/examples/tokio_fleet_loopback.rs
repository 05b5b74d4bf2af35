//! The tokio fleet over loopback (issue 11's measurement, never a test):
//! 1. merged event throughput from 1 and from 10 flooding simulators at once;
//! 2. a quiet server's worst Ping latency among 10 and 100 servers (one of them flooding),
//!    each quiet simulator a `TcpFront` (a thread of its own);
//! 3. the same among MANY servers (default 1,000; one flooding), the quiet simulators all on
//!    one thread (a current-thread tokio runtime, one task per connection), with the time
//!    until every server is ready and the most connects the fleet started in one step.
//!
//! `cargo run --release -p ami-tokio --example tokio_fleet_loopback [SECONDS [MANY]]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::fleet::{FleetConfig, Route};
use ami_proto::{Action, ClientConfig, StreamItem};
use ami_sim::flood::Flood;
use ami_sim::tcp::TcpFront;
use ami_sim::{SimConfig, SimServer};
use ami_tokio::fleet::{spawn_fleet, FleetHandle};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// `n` simulated servers on loopback, all served by one thread: their addresses.
fn quiet_many(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            for l in listeners {
                l.set_nonblocking(true).unwrap();
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                tokio::task::spawn_local(async move {
                    let sim = Rc::new(RefCell::new(SimServer::new(
                        SimConfig::default(),
                        Instant::now(),
                    )));
                    while let Ok((stream, _)) = l.accept().await {
                        tokio::task::spawn_local(serve(sim.clone(), stream));
                    }
                });
            }
            std::future::pending::<()>().await;
        });
    });
    addrs
}

/// One connection to a simulated server: bytes in, bytes out, its timers.
async fn serve(sim: Rc<RefCell<SimServer>>, mut stream: tokio::net::TcpStream) {
    stream.set_nodelay(true).unwrap();
    let sid = sim.borrow_mut().accept(Instant::now());
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let out = sim.borrow().transmit(sid).to_vec();
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                break;
            }
            sim.borrow_mut().advance_transmit(sid, out.len());
        }
        if sim.borrow().is_eof(sid) {
            break;
        }
        let next = sim.borrow().poll_timeout();
        let at = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => sim.borrow_mut().receive(sid, Instant::now(), &buf[..n]),
            },
            _ = tokio::time::sleep_until(at.into()) => {
                sim.borrow_mut().handle_timeout(Instant::now())
            }
        }
    }
    let mut sim = sim.borrow_mut();
    sim.client_closed(sid, Instant::now());
    sim.forget(sid);
}

/// Ready time, most connects in a step, and the quiet Ping worst and mean among `n`
/// servers (one flooding, the rest on one thread).
async fn many(n: usize, span: Duration) {
    let flood = Flood::start().unwrap();
    let addrs = quiet_many(n - 1);
    let (fleet, mut events) = spawn_fleet(FleetConfig::default());
    let started = Instant::now();
    fleet.add("flood", config(), flood.addr()).unwrap();
    for (k, a) in addrs.iter().enumerate() {
        fleet.add(&format!("quiet{k}"), config(), *a).unwrap();
    }
    let consumer = tokio::spawn(async move {
        let (mut got, mut lost, mut batch) = (0u64, 0u64, Vec::new());
        while events.recv_many(&mut batch, 4096).await > 0 {
            for item in batch.drain(..) {
                match item.item {
                    StreamItem::Event(_) => got += 1,
                    StreamItem::Gap { dropped } => lost += dropped,
                    _ => {}
                }
            }
        }
        (got, lost)
    });
    all_ready(&fleet).await;
    let ready = started.elapsed();
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let mut k = 0;
    while t0.elapsed() < span {
        // A different quiet server each time, so every one is asked.
        let name = format!("quiet{}", k % (n - 1));
        k += 1;
        let t = Instant::now();
        let r = fleet
            .send(Route::Server(&name), Action::new("Ping"))
            .await
            .unwrap();
        assert!(r.result.is_ok(), "{:?}", r.result);
        lat.push(t.elapsed());
    }
    let stats = fleet.stats();
    fleet.close();
    let (got, lost) = consumer.await.unwrap();
    let worst = lat.iter().max().copied().unwrap_or_default();
    let mean = lat.iter().sum::<Duration>() / u32::try_from(lat.len().max(1)).unwrap();
    let budget = FleetConfig::default().budget.connects_per_step;
    println!(
        "tokio, {n} servers (1 flooding, {} on one thread): all ready in {ready:.2?}; most \
         connects in one step {} (budget {budget}); quiet Ping worst {worst:?}, mean {mean:?} \
         over {} pings; merged {:.0} events/s over the whole run ({lost} lost as gaps)",
        n - 1,
        stats.most_connects_in_a_step,
        lat.len(),
        got as f64 / started.elapsed().as_secs_f64(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: f64 = std::env::args().nth(1).map_or(5.0, |s| s.parse().unwrap());
    let many_n: usize = std::env::args().nth(2).map_or(1000, |s| s.parse().unwrap());
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
    many(many_n.max(2), span).await;
}
