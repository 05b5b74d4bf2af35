//! Memory per server of a client holding many logged-in, mostly quiet Asterisk servers,
//! per adapter: the tokio fleet (`ami_tokio::fleet`), the async-std fleet
//! (`ami_async_std::fleet`), ami-mio's `MioFleet`, and N independent `ami_tokio::spawn`
//! clients. Measured idle, right after one burst per server (2,000 events of 500 bytes,
//! read promptly by the consumer), and after the burst plus a quiet spell (a few pings): a
//! fleet that kept each server's burst high-water mark would hold GBs after one storm.
//!
//! `cargo run --release -p ami-conformance --example idle_memory -- [ADAPTER|all] [N...]`
//!
//! ADAPTER: `tokio-fleet`, `async-std-fleet`, `mio-fleet`, `tokio-spawn`; `all` (default)
//! runs each adapter at N = 1, 100, 1000 (the default Ns), each in a fresh process (so that
//! one run's freed memory, kept by the allocator, does not count in the next), and prints a
//! table and the bytes per server: the slope between the two largest Ns. Env:
//! `IDLE_BURST` events per server (2000), `IDLE_EVENT_BYTES` (500), `IDLE_QUIET` seconds
//! after the burst (5), `IDLE_PING` the clients' ping interval in seconds (2, so that the
//! quiet spell has reads in it: a buffer that only shrinks on the next read gets its chance),
//! `IDLE_BURSTS` bursts, each with its quiet spell (1; the last is reported),
//! `IDLE_EXIT_AT_QUIET=1` exits without closing (for a heap profiler: what is still
//! allocated shows as leaked).
//!
//! The servers are one fake Asterisk in a child process (this program, `serve`), a thread
//! per connection: it logs every client in, answers every action with Success, and on
//! `burst` (a line on its stdin) writes the burst to every connection. So the measured
//! process holds only the client side. RSS is `VmRSS`; heap is the live bytes counted by a
//! counting global allocator (what the client holds, without the allocator's retention);
//! `dec` and `queue` are the sums of the clients' `Stats::decoder_allocated` (read buffers)
//! and `Stats::event_queue_allocated` (event queue buffers), per server.
//!
//! Reading it: the heap columns say what the clients keep; RSS adds what glibc's malloc
//! keeps of what was freed (after a burst, most of the difference). Single runs of RSS after
//! a burst vary by up to 2x from run to run (thread interleaving); compare several.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, missing_docs)]

use ami_async::fleet::{FleetConfig, FleetEvents, FleetHandle, FleetItem};
use ami_proto::{ClientConfig, StreamItem};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ADAPTERS: [&str; 4] = ["tokio-fleet", "async-std-fleet", "mio-fleet", "tokio-spawn"];

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

fn heap() -> i64 {
    let s = GLOBAL.stats();
    // `bytes_allocated` and `bytes_deallocated` include what reallocations grew or shrank
    // (`bytes_reallocated` is the same again, net).
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

/// One measurement: RSS, live heap, and the clients' read buffers.
#[derive(Clone, Copy, Default)]
struct Sample {
    rss: u64,
    heap: i64,
    decoder: usize,
    queue: usize,
}

// ---------------------------------------------------------------- the fake Asterisk

/// The `serve` child: prints its port, then `sent` after each connection wrote its burst.
fn serve() {
    let burst_n = env_num("IDLE_BURST", 2000) as usize;
    let event_bytes = env_num("IDLE_EVENT_BYTES", 500) as usize;
    let mut burst = Vec::with_capacity(burst_n * event_bytes);
    for i in 0..burst_n {
        let head = format!(
            "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Burst\r\nSeq: {i:08}\r\nPad: "
        );
        let pad = event_bytes.saturating_sub(head.len() + 4).max(1);
        burst.extend_from_slice(head.as_bytes());
        burst.extend(std::iter::repeat_n(b'x', pad));
        burst.extend_from_slice(b"\r\n\r\n");
    }
    let burst = Arc::new(burst);
    let generation = Arc::new(AtomicU64::new(0));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    {
        let mut o = out.lock().unwrap();
        writeln!(o, "port {}", l.local_addr().unwrap().port()).unwrap();
        o.flush().unwrap();
    }
    {
        let generation = Arc::clone(&generation);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line.as_deref() {
                    Ok("burst") => {
                        generation.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => std::process::exit(0),
                }
            }
            std::process::exit(0);
        });
    }
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        let (burst, generation, out) = (
            Arc::clone(&burst),
            Arc::clone(&generation),
            Arc::clone(&out),
        );
        std::thread::Builder::new()
            .stack_size(128 << 10)
            .spawn(move || connection(s, &burst, &generation, &out))
            .unwrap();
    }
}

fn connection(
    mut s: TcpStream,
    burst: &[u8],
    generation: &AtomicU64,
    out: &Mutex<std::io::Stdout>,
) {
    let _ = s.set_nodelay(true);
    if s.write_all(b"Asterisk Call Manager/6.0.0\r\n").is_err() {
        return;
    }
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut seen = generation.load(Ordering::SeqCst);
    let mut got: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let action = String::from_utf8_lossy(&got[..end]).into_owned();
            got.drain(..end + 4);
            let id = action
                .lines()
                .find_map(|l| l.strip_prefix("ActionID: "))
                .unwrap_or("");
            let reply = if action.to_ascii_lowercase().contains("action: login") {
                format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n")
            } else if action.to_ascii_lowercase().contains("action: ping") {
                format!(
                    "Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nTimestamp: 1.0\r\n\r\n"
                )
            } else {
                format!("Response: Success\r\nActionID: {id}\r\n\r\n")
            };
            if s.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
        let g = generation.load(Ordering::SeqCst);
        if g != seen {
            seen = g;
            if s.write_all(burst).is_err() {
                return;
            }
            let mut o = out.lock().unwrap();
            let _ = writeln!(o, "sent");
            let _ = o.flush();
        }
    }
}

/// The fake Asterisk in its child process.
struct Server {
    child: Child,
    stdin: ChildStdin,
    addr: SocketAddr,
    sent: Arc<AtomicUsize>,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port: u16 = lines
            .next()
            .unwrap()
            .unwrap()
            .strip_prefix("port ")
            .unwrap()
            .parse()
            .unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&sent);
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if l == "sent" {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Server {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            sent,
        }
    }

    fn burst(&mut self) {
        writeln!(self.stdin, "burst").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- the consumers

/// What the consumers saw, over all servers.
#[derive(Default)]
struct Seen {
    ready: AtomicUsize,
    events: AtomicU64,
    lost: AtomicU64,
    stop: AtomicBool,
}

impl Seen {
    fn count(&self, item: &StreamItem) {
        match item {
            StreamItem::Event(_) => {
                self.events.fetch_add(1, Ordering::Relaxed);
            }
            StreamItem::Gap { dropped, .. } => {
                self.lost.fetch_add(*dropped, Ordering::Relaxed);
            }
            StreamItem::Ready { .. } => {
                self.ready.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

async fn consume_fleet(mut events: FleetEvents, seen: Arc<Seen>) {
    let mut batch: Vec<FleetItem> = Vec::new();
    loop {
        batch.clear();
        if events.recv_many(&mut batch, 1024).await == 0 {
            return;
        }
        for item in &batch {
            seen.count(&item.item);
        }
    }
}

fn config() -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .ping_interval(Duration::from_secs(env_num("IDLE_PING", 2)))
        .build()
        .unwrap()
}

/// An adapter holding `n` servers, with a way to read its clients' read-buffer bytes.
trait Adapter {
    /// Read buffers and event queue buffers, summed over the servers.
    fn allocated(&mut self) -> (usize, usize);
    fn close(self: Box<Self>);
}

struct AsyncFleet {
    fleet: FleetHandle,
    _rt: Option<tokio::runtime::Runtime>,
}

impl Adapter for AsyncFleet {
    fn allocated(&mut self) -> (usize, usize) {
        let t = self.fleet.stats().total;
        (t.decoder_allocated, t.event_queue_allocated)
    }
    fn close(self: Box<Self>) {
        self.fleet.close();
    }
}

fn async_fleet(kind: &str, n: usize, addr: SocketAddr, seen: &Arc<Seen>) -> Box<dyn Adapter> {
    let (fleet, events, rt) = if kind == "tokio-fleet" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (fleet, events) = {
            let _entered = rt.enter();
            ami_tokio::fleet::spawn_fleet(FleetConfig::default())
        };
        rt.spawn(consume_fleet(events, Arc::clone(seen)));
        (fleet, None, Some(rt))
    } else {
        let (fleet, events) =
            ami_async_std::fleet::run_fleet_on_thread(FleetConfig::default()).unwrap();
        (fleet, Some(events), None)
    };
    if let Some(events) = events {
        let seen = Arc::clone(seen);
        std::thread::spawn(move || async_io::block_on(consume_fleet(events, seen)));
    }
    for i in 0..n {
        fleet.add(&format!("s{i}"), config(), addr).unwrap();
    }
    Box::new(AsyncFleet { fleet, _rt: rt })
}

struct TokioSpawn {
    handles: Vec<ami_async::Handle>,
    rt: tokio::runtime::Runtime,
}

impl Adapter for TokioSpawn {
    fn allocated(&mut self) -> (usize, usize) {
        let stats: Vec<_> = self.handles.iter().map(ami_async::Handle::stats).collect();
        (
            stats.iter().map(|s| s.decoder_allocated).sum(),
            stats.iter().map(|s| s.event_queue_allocated).sum(),
        )
    }
    fn close(self: Box<Self>) {
        drop(self.handles);
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}

fn tokio_spawn(n: usize, addr: SocketAddr, seen: &Arc<Seen>) -> Box<dyn Adapter> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let (handle, mut events) = {
            let _entered = rt.enter();
            ami_tokio::spawn(config(), addr)
        };
        let seen = Arc::clone(seen);
        // One item at a time: a batch buffer per server would count the consumer's memory.
        rt.spawn(async move {
            while let Some(item) = events.recv().await {
                seen.count(&item);
            }
        });
        handles.push(handle);
    }
    Box::new(TokioSpawn { handles, rt })
}

/// `MioFleet` on a thread of its own; its stats are asked for through a channel.
struct Mio {
    ask: std::sync::mpsc::Sender<std::sync::mpsc::Sender<(usize, usize)>>,
    wake: Box<dyn Fn() + Send>,
    thread: std::thread::JoinHandle<()>,
}

impl Adapter for Mio {
    fn allocated(&mut self) -> (usize, usize) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.ask.send(tx).unwrap();
        (self.wake)();
        rx.recv().unwrap()
    }
    fn close(self: Box<Self>) {
        drop(self.ask);
        (self.wake)();
        self.thread.join().unwrap();
    }
}

fn mio_fleet(n: usize, addr: SocketAddr, seen: &Arc<Seen>) -> Box<dyn Adapter> {
    let mut fleet = ami_mio::MioFleet::new().unwrap();
    let now = Instant::now();
    for i in 0..n {
        fleet.add(now, &format!("s{i}"), config(), addr).unwrap();
    }
    let waker = fleet.waker();
    let wake: Box<dyn Fn() + Send> = Box::new(move || {
        let _ = waker.wake();
    });
    let (ask, asks) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<(usize, usize)>>();
    let seen = Arc::clone(seen);
    let thread = std::thread::spawn(move || {
        let mut batch = Vec::new();
        loop {
            fleet.wait(Some(Duration::from_millis(100))).unwrap();
            fleet.step(Instant::now()).unwrap();
            loop {
                batch.clear();
                if fleet.poll_events(&mut batch, 1024) == 0 {
                    break;
                }
                for item in &batch {
                    seen.count(&item.item);
                }
            }
            loop {
                match asks.try_recv() {
                    Ok(tx) => {
                        let t = fleet.stats().total;
                        let _ = tx.send((t.decoder_allocated, t.event_queue_allocated));
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        fleet.close_all(Instant::now());
                        let _ = fleet.step(Instant::now());
                        return;
                    }
                }
            }
        }
    });
    Box::new(Mio { ask, wake, thread })
}

// ---------------------------------------------------------------- one run

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sample(adapter: &mut dyn Adapter) -> Sample {
    let (decoder, queue) = adapter.allocated();
    Sample {
        rss: rss(),
        heap: heap(),
        decoder,
        queue,
    }
}

/// Runs one adapter with `n` servers; prints a `ROW` line for the table.
fn one(kind: &str, n: usize) {
    let burst_n = env_num("IDLE_BURST", 2000);
    let quiet = Duration::from_secs(env_num("IDLE_QUIET", 5));
    let mut server = Server::start();
    let seen = Arc::new(Seen::default());
    std::thread::sleep(Duration::from_millis(200));
    let base = Sample {
        rss: rss(),
        heap: heap(),
        decoder: 0,
        queue: 0,
    };
    let mut adapter = match kind {
        "tokio-fleet" | "async-std-fleet" => async_fleet(kind, n, server.addr, &seen),
        "mio-fleet" => mio_fleet(n, server.addr, &seen),
        "tokio-spawn" => tokio_spawn(n, server.addr, &seen),
        other => panic!("adapter: one of {ADAPTERS:?}, not {other}"),
    };
    wait_for("every server ready", Duration::from_secs(120), || {
        seen.ready.load(Ordering::SeqCst) >= n
    });
    std::thread::sleep(Duration::from_secs(1));
    let idle = sample(adapter.as_mut());

    // `IDLE_BURSTS` bursts, each followed by the quiet spell; the last one is reported (does
    // memory after a second storm grow past the first's, or reuse it?).
    let (mut burst, mut after) = (idle, idle);
    for round in 1..=env_num("IDLE_BURSTS", 1).max(1) as usize {
        server.burst();
        let want = (round * n) as u64 * burst_n;
        wait_for("the burst", Duration::from_secs(600), || {
            server.sent.load(Ordering::SeqCst) >= round * n
                && seen.events.load(Ordering::SeqCst) + seen.lost.load(Ordering::SeqCst) >= want
        });
        burst = sample(adapter.as_mut());
        std::thread::sleep(quiet);
        after = sample(adapter.as_mut());
    }
    let lost = seen.lost.load(Ordering::SeqCst);
    let reconnects = seen.ready.load(Ordering::SeqCst) - n;
    if std::env::var_os("IDLE_EXIT_AT_QUIET").is_some() {
        // For a heap profiler: what is still allocated now shows as leaked at exit.
        std::process::exit(0);
    }
    seen.stop.store(true, Ordering::SeqCst);
    adapter.close();
    drop(server);
    println!(
        "ROW {kind} {n} {} {} {} {} {} {} {} {} {} {} {} {lost} {reconnects} {} {} {}",
        base.rss,
        idle.rss,
        burst.rss,
        after.rss,
        base.heap,
        idle.heap,
        burst.heap,
        after.heap,
        idle.decoder,
        burst.decoder,
        after.decoder,
        idle.queue,
        burst.queue,
        after.queue,
    );
}

// ---------------------------------------------------------------- the table

struct Row {
    kind: String,
    n: usize,
    /// base, idle, burst, after: RSS then heap.
    rss: [u64; 4],
    heap: [i64; 4],
    decoder: [usize; 3],
    queue: [usize; 3],
    lost: u64,
    reconnects: usize,
}

fn parse(line: &str) -> Option<Row> {
    let f: Vec<&str> = line.strip_prefix("ROW ")?.split_whitespace().collect();
    let num = |i: usize| f[i].parse::<i64>().unwrap();
    Some(Row {
        kind: f[0].to_string(),
        n: f[1].parse().unwrap(),
        rss: [num(2) as u64, num(3) as u64, num(4) as u64, num(5) as u64],
        heap: [num(6), num(7), num(8), num(9)],
        decoder: [num(10) as usize, num(11) as usize, num(12) as usize],
        queue: [num(15) as usize, num(16) as usize, num(17) as usize],
        lost: num(13) as u64,
        reconnects: num(14) as usize,
    })
}

fn all(kinds: &[String], ns: &[usize]) {
    let mut rows = Vec::new();
    for kind in kinds {
        for &n in ns {
            let out = Command::new(std::env::current_exe().unwrap())
                .args([kind.as_str(), &n.to_string()])
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            match text.lines().find_map(parse) {
                Some(row) => rows.push(row),
                None => eprintln!("{kind} {n}: no result ({})", out.status),
            }
        }
    }
    let kb = |b: f64| b / 1024.0;
    println!(
        "RSS and live heap above the empty process (MB); per server: (value - base) / N (KiB)"
    );
    println!(
        "{:<16} {:>5} | {:>9} {:>9} {:>9} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | lost reconn",
        "adapter", "N", "RSS idle", "burst", "quiet", "KiB/srv", "burst", "quiet", "heap/srv", "burst", "quiet", "dec/srv", "burst", "quiet", "queue/sv", "burst", "quiet"
    );
    for r in &rows {
        let n = r.n as f64;
        let per = |i: usize| kb((r.rss[i] as f64 - r.rss[0] as f64) / n);
        let hper = |i: usize| kb((r.heap[i] - r.heap[0]) as f64 / n);
        let dper = |i: usize| kb(r.decoder[i] as f64 / n);
        let qper = |i: usize| kb(r.queue[i] as f64 / n);
        println!(
            "{:<16} {:>5} | {:>9.1} {:>9.1} {:>9.1} | {:>8.1} {:>8.1} {:>8.1} | {:>8.1} {:>8.1} {:>8.1} | {:>8.1} {:>8.1} {:>8.1} | {:>8.1} {:>8.1} {:>8.1} | {} {}",
            r.kind,
            r.n,
            r.rss[1] as f64 / 1e6,
            r.rss[2] as f64 / 1e6,
            r.rss[3] as f64 / 1e6,
            per(1),
            per(2),
            per(3),
            hper(1),
            hper(2),
            hper(3),
            dper(0),
            dper(1),
            dper(2),
            qper(0),
            qper(1),
            qper(2),
            r.lost,
            r.reconnects,
        );
    }
    println!("\nSlope between the two largest N (KiB per server): RSS idle/burst/quiet, heap idle/burst/quiet");
    for kind in kinds {
        let mut of: Vec<&Row> = rows.iter().filter(|r| &r.kind == kind).collect();
        of.sort_by_key(|r| r.n);
        if of.len() < 2 {
            continue;
        }
        let (a, b) = (of[of.len() - 2], of[of.len() - 1]);
        let dn = (b.n - a.n) as f64;
        let s = |i: usize| kb((b.rss[i] as f64 - a.rss[i] as f64) / dn);
        let h = |i: usize| kb((b.heap[i] - a.heap[i]) as f64 / dn);
        println!(
            "{:<16} N {}..{}: RSS {:>7.1} {:>7.1} {:>7.1}   heap {:>7.1} {:>7.1} {:>7.1}",
            kind,
            a.n,
            b.n,
            s(1),
            s(2),
            s(3),
            h(1),
            h(2),
            h(3)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(),
        Some(kind) if ADAPTERS.contains(&kind) && args.len() == 2 => {
            one(kind, args[1].parse().unwrap())
        }
        first => {
            let (kinds, rest): (Vec<String>, &[String]) = match first {
                None | Some("all") => (
                    ADAPTERS.iter().map(|s| s.to_string()).collect(),
                    args.get(1..).unwrap_or(&[]),
                ),
                Some(kind) => (vec![kind.to_string()], &args[1..]),
            };
            let mut ns: Vec<usize> = rest.iter().map(|a| a.parse().unwrap()).collect();
            if ns.is_empty() {
                ns = vec![1, 100, 1000];
            }
            all(&kinds, &ns);
        }
    }
}
