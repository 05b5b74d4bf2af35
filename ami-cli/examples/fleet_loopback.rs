//! The fleet over loopback on each runtime (issue 11's measurement, never a test): one tool,
//! the runtime an argument, the same runs and figures on every runtime.
//!
//! 1. Merged event throughput from 1 and from 10 flooding simulators at once.
//! 2. For each size N (default 10, 100 and 1,000): N servers, one flooding and N-1 quiet
//!    ones all served by one thread (a current-thread tokio runtime, one task per
//!    connection, so the servers cost little CPU). Reported: the time until every server is
//!    ready, the most connects the fleet started in one step (against the budget), a quiet
//!    server's Ping latency (worst and mean; a different quiet server each time, one at a
//!    time), the merged events/s, and the worst step: the longest `MioFleet::step` on mio,
//!    the longest poll of a fleet driver (one shard's turn) on tokio and async-std.
//!
//! Every line starts with the 1-minute load average, since the figures are wall clock.
//! `AMI_FLEET_READS=1` also prints the `ami-async` fleet driver's read counters of each run
//! (reads, empty reads, held reads, bytes) on stderr.
//! `AMI_FLEET_ROUNDS=N` runs the merged-stream rows N times, alternating, and prints the
//! median 10-vs-1 ratio (e.g. `AMI_FLEET_ROUNDS=7 ... fleet_loopback mio 3 none`).
//! `AMI_FLEET_SHARDS=N` sets the shards of the `ami-async` fleet (default: one per core but
//! one, as the adapters start it; compare 1 and 2 in the same minutes).
//!
//! `cargo run --release -p ami-cli --example fleet_loopback [tokio|async-std|mio|all [SECONDS [SIZES]]]`
//! e.g. `... fleet_loopback all 3 10,100,1000` (the defaults); SIZES `none` runs only the
//! merged-stream rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_async::fleet::{FleetConfig, FleetDriver, FleetHandle, Route};
use ami_conformance::threads::Snapshot;
use ami_mio::MioFleet;
use ami_proto::fleet::{FleetItem, FleetOutput};
use ami_proto::{Action, ActionId, ClientConfig, StreamItem};
use ami_sim::flood::Flood;
use ami_sim::{SimConfig, SimServer};
use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rt {
    Tokio,
    AsyncStd,
    Mio,
}

impl Rt {
    fn name(self) -> &'static str {
        match self {
            Rt::Tokio => "tokio",
            Rt::AsyncStd => "async-std",
            Rt::Mio => "mio",
        }
    }
}

/// What one run saw.
#[derive(Default)]
struct Figures {
    ready: Duration,
    most_connects: usize,
    latencies: Vec<Duration>,
    events: u64,
    lost: u64,
    span: Duration,
    worst_step: Duration,
    /// CPU per thread over the span (flood threads summed as `floods`).
    threads: String,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.events as f64 / self.span.as_secs_f64().max(1e-9)
    }

    /// Who used the CPU during the span: the client's threads by name, the simulators'
    /// threads summed (on 2 cores, ten flooding simulators take CPU from the client).
    fn cpu(before: &Snapshot, took: Duration) -> String {
        let mut floods = (0.0, 0);
        let mut rows = Vec::new();
        for u in before.used_since(took) {
            if u.name.starts_with("flood") {
                floods = (floods.0 + u.share, floods.1 + u.preempted);
            } else {
                rows.push(format!("{} {:.2} ({})", u.name, u.share, u.preempted));
            }
        }
        rows.push(format!("floods {:.2} ({})", floods.0, floods.1));
        rows.join(", ")
    }

    fn pings(&self) -> String {
        let worst = self.latencies.iter().max().copied().unwrap_or_default();
        let n = u32::try_from(self.latencies.len().max(1)).unwrap();
        let mean = self.latencies.iter().sum::<Duration>() / n;
        format!(
            "quiet Ping worst {worst:.2?}, mean {mean:.2?} over {} pings",
            self.latencies.len()
        )
    }
}

fn config() -> ClientConfig {
    ClientConfig::builder("admin", "amp111").build().unwrap()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The servers of one run: floods (each a thread), quiet ones (all on one thread).
struct Servers {
    floods: Vec<Flood>,
    quiet: Vec<SocketAddr>,
}

impl Servers {
    fn names(&self) -> Vec<(String, SocketAddr)> {
        let floods = self.floods.iter().enumerate();
        let quiet = self.quiet.iter().enumerate();
        floods
            .map(|(k, f)| (format!("flood{k}"), f.addr()))
            .chain(quiet.map(|(k, a)| (format!("quiet{k}"), *a)))
            .collect()
    }
}

/// A fleet driver whose longest poll is recorded.
struct Timed {
    driver: FleetDriver,
    worst: Arc<AtomicU64>,
}

impl Future for Timed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let t = Instant::now();
        let r = Pin::new(&mut self.driver).poll(cx);
        let took = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.worst.fetch_max(took, Ordering::Relaxed);
        r
    }
}

/// `ami-async`'s fleet with one shard per core, as `spawn_fleet` / `run_fleet_on_thread`
/// start it, each driver timed.
fn run_async(rt: Rt, servers: &Servers, span: Duration, ping: bool) -> Figures {
    let shards = shards();
    let (fleet, mut events, drivers) = match rt {
        Rt::Tokio => {
            ami_async::fleet::start_sharded::<ami_tokio::Tokio>(FleetConfig::default(), shards)
        }
        _ => ami_async::fleet::start_sharded::<ami_async_std::AsyncIo>(
            FleetConfig::default(),
            shards,
        ),
    };
    let worst = Arc::new(AtomicU64::new(0));
    let tokio = (rt == Rt::Tokio).then(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    });
    for driver in drivers {
        let timed = Timed {
            driver,
            worst: worst.clone(),
        };
        match &tokio {
            Some(t) => drop(t.spawn(timed)),
            None => drop(std::thread::spawn(move || async_io::block_on(timed))),
        }
    }
    let (got, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let consumer = {
        let (got, lost) = (got.clone(), lost.clone());
        std::thread::spawn(move || {
            futures_lite::future::block_on(async {
                let mut batch: Vec<FleetItem> = Vec::new();
                while events.recv_many(&mut batch, 4096).await > 0 {
                    for item in batch.drain(..) {
                        match item.item {
                            StreamItem::Event(_) => got.fetch_add(1, Ordering::Relaxed),
                            StreamItem::Gap { dropped } => {
                                lost.fetch_add(dropped, Ordering::Relaxed)
                            }
                            _ => 0,
                        };
                    }
                }
            })
        })
    };
    let started = Instant::now();
    let names = servers.names();
    for (name, addr) in &names {
        fleet.add(name, config(), *addr).unwrap();
    }
    wait_ready(&fleet);
    let mut f = Figures {
        ready: started.elapsed(),
        ..Figures::default()
    };
    worst.store(0, Ordering::Relaxed);
    let (got0, lost0) = (got.load(Ordering::Relaxed), lost.load(Ordering::Relaxed));
    let cpu0 = Snapshot::now();
    let t0 = Instant::now();
    let mut k = 0;
    while t0.elapsed() < span {
        if !ping || servers.quiet.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let name = format!("quiet{}", k % servers.quiet.len());
        k += 1;
        let t = Instant::now();
        let r =
            futures_lite::future::block_on(fleet.send(Route::Server(&name), Action::new("Ping")))
                .unwrap();
        assert!(r.result.is_ok(), "{:?}", r.result);
        f.latencies.push(t.elapsed());
    }
    f.span = t0.elapsed();
    f.threads = Figures::cpu(&cpu0, f.span);
    f.events = got.load(Ordering::Relaxed) - got0;
    f.lost = lost.load(Ordering::Relaxed) - lost0;
    f.worst_step = Duration::from_nanos(worst.load(Ordering::Relaxed));
    f.most_connects = fleet.stats().most_connects_in_a_step;
    if std::env::var_os("AMI_FLEET_READS").is_some() {
        // The driver's read counters, summed: where a slower run's reads went.
        let (mut reads, mut empty, mut holds, mut bytes) = (0, 0, 0, 0);
        for (_, c) in fleet.read_counters() {
            (reads, empty, holds, bytes) = (
                reads + c.reads,
                empty + c.empty,
                holds + c.holds,
                bytes + c.bytes,
            );
        }
        eprintln!("reads {reads}, empty {empty}, holds {holds}, {bytes} bytes");
    }
    fleet.close();
    drop(fleet);
    consumer.join().unwrap();
    if let Some(t) = tokio {
        t.shutdown_timeout(Duration::from_millis(200));
    }
    f
}

/// Shards of the `ami-async` fleet: `AMI_FLEET_SHARDS`, else as the adapters start it.
fn shards() -> usize {
    std::env::var("AMI_FLEET_SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(ami_async::fleet::default_shards)
}

fn wait_ready(fleet: &FleetHandle) {
    while fleet.statuses().iter().any(|(_, s)| !s.is_ready()) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `MioFleet` on this thread: steps, pings one at a time, drains the stream.
fn run_mio(servers: &Servers, span: Duration, ping: bool) -> Figures {
    let mut fleet = MioFleet::new().unwrap();
    let started = Instant::now();
    let names = servers.names();
    for (name, addr) in &names {
        fleet.add(Instant::now(), name, config(), *addr).unwrap();
    }
    let mut batch: Vec<FleetItem> = Vec::new();
    let mut f = Figures::default();
    let count = |batch: &mut Vec<FleetItem>, f: &mut Figures| {
        for item in batch.drain(..) {
            match item.item {
                StreamItem::Event(_) => f.events += 1,
                StreamItem::Gap { dropped } => f.lost += dropped,
                _ => {}
            }
        }
    };
    while !names
        .iter()
        .all(|(n, _)| fleet.status(n).is_some_and(|s| s.is_ready()))
    {
        fleet.step(Instant::now()).unwrap();
        fleet.poll_events(&mut batch, usize::MAX);
        batch.clear();
        fleet.wait(Some(Duration::from_millis(5))).unwrap();
    }
    f.ready = started.elapsed();
    let mut inflight: Option<(ActionId, Instant)> = None;
    let mut k = 0;
    let cpu0 = Snapshot::now();
    let t0 = Instant::now();
    while t0.elapsed() < span {
        let now = Instant::now();
        if ping && inflight.is_none() && !servers.quiet.is_empty() {
            let name = format!("quiet{}", k % servers.quiet.len());
            k += 1;
            let r = fleet
                .send(now, Route::Server(&name), Action::new("Ping"))
                .unwrap();
            inflight = Some((r.id, now));
        }
        let report = fleet.step(now).unwrap();
        f.worst_step = f.worst_step.max(now.elapsed());
        for news in report.news {
            if let FleetOutput::Completed { id, outcome, .. } = news {
                if inflight.as_ref().is_some_and(|(want, _)| *want == id) {
                    assert!(outcome.is_ok(), "{outcome:?}");
                    f.latencies
                        .push(inflight.take().map(|(_, at)| at.elapsed()).unwrap());
                }
            }
        }
        fleet.poll_events(&mut batch, usize::MAX);
        count(&mut batch, &mut f);
        fleet.wait(Some(Duration::from_millis(5))).unwrap();
    }
    f.span = t0.elapsed();
    f.threads = Figures::cpu(&cpu0, f.span);
    f.most_connects = fleet.stats().most_connects_in_a_step;
    fleet.close_all(Instant::now());
    f
}

fn run(rt: Rt, servers: &Servers, span: Duration, ping: bool) -> Figures {
    match rt {
        Rt::Mio => run_mio(servers, span, ping),
        _ => run_async(rt, servers, span, ping),
    }
}

/// `n` simulated servers on loopback, all served by one thread until `stop`: their
/// addresses.
fn quiet_many(n: usize, stop: Arc<AtomicBool>) -> Vec<SocketAddr> {
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
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
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

fn main() {
    let mut args = std::env::args().skip(1);
    let rts = match args.next().as_deref() {
        None | Some("all") => vec![Rt::Tokio, Rt::AsyncStd, Rt::Mio],
        Some("tokio") => vec![Rt::Tokio],
        Some("async-std") => vec![Rt::AsyncStd],
        Some("mio") => vec![Rt::Mio],
        Some(other) => panic!("runtime {other:?}: tokio, async-std, mio or all"),
    };
    let secs: f64 = args.next().map_or(3.0, |s| s.parse().unwrap());
    let sizes: Vec<usize> = match args.next().as_deref() {
        None => vec![10, 100, 1000],
        Some("none") => Vec::new(),
        Some(s) => s.split(',').map(|n| n.parse().unwrap()).collect(),
    };
    // `AMI_FLEET_ROUNDS=N` repeats the merged-stream rows N times (default 1).
    let rounds: usize = std::env::var("AMI_FLEET_ROUNDS")
        .ok()
        .map_or(1, |s| s.parse().unwrap());
    // `AMI_FLEET_FLOODS=10` runs only that merged-stream row (for a profiler).
    let floods: Vec<usize> = std::env::var("AMI_FLEET_FLOODS")
        .ok()
        .map_or(vec![1, 10], |s| {
            s.split(',').map(|n| n.parse().unwrap()).collect()
        });
    let span = Duration::from_secs_f64(secs);
    let budget = FleetConfig::default().budget.connects_per_step;
    for &rt in &rts {
        let shards = if rt == Rt::Mio {
            String::new()
        } else {
            format!(" ({} shards)", shards())
        };
        // Rows alternate (1, 10, 1, 10, ...) so that both see the same minutes of a shared
        // machine; with several rounds, the median of each round's 10-vs-1 ratio closes.
        let mut ratios = Vec::new();
        for _ in 0..rounds {
            let mut rates = Vec::new();
            for &n in &floods {
                let servers = Servers {
                    floods: (0..n).map(|_| Flood::start().unwrap()).collect(),
                    quiet: Vec::new(),
                };
                let f = run(rt, &servers, span, false);
                rates.push(f.rate());
                println!(
                    "load {} | {:>9}{shards} merged stream, {n:>2} flooding servers: {:>9.0} events/s ({} lost as gaps); CPU {}",
                    load(),
                    rt.name(),
                    f.rate(),
                    f.lost,
                    f.threads
                );
            }
            if let [one, .., last] = rates[..] {
                ratios.push(last / one);
            }
        }
        if ratios.len() > 1 {
            ratios.sort_by(f64::total_cmp);
            let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
            println!(
                "{:>9} merged stream, {} vs {} flooding servers over {} rounds: median {:.3} ({})",
                rt.name(),
                floods.last().unwrap(),
                floods[0],
                ratios.len(),
                ratios[ratios.len() / 2],
                shown.join(", ")
            );
        }
        for &n in &sizes {
            let stop = Arc::new(AtomicBool::new(false));
            let servers = Servers {
                floods: vec![Flood::start().unwrap()],
                quiet: quiet_many(n.max(2) - 1, stop.clone()),
            };
            let f = run(rt, &servers, span, true);
            stop.store(true, Ordering::Relaxed);
            println!(
                "load {} | {:>9}{shards}, {n:>4} servers (1 flooding): ready in {:.2?}; most \
                 connects in a step {} (budget {budget}); {}; merged {:.0} events/s ({} lost); \
                 worst step {:.2?}",
                load(),
                rt.name(),
                f.ready,
                f.most_connects,
                f.pings(),
                f.rate(),
                f.lost,
                f.worst_step
            );
        }
    }
}
