//! CPU and wake-ups of an idle client in every state where it waits on time or on a peer,
//! per adapter: backoff (connect refused), circuit breaker open, connect hanging (a
//! listener whose backlog is full), no banner (a listener that never accepts), TLS
//! handshake hanging, ready and quiet, event queue full with a consumer that never takes,
//! writes blocked (a server that stopped reading), every handle dropped while an action is
//! pending; and one fleet per adapter holding servers in all of those states at once.
//!
//! `cargo run --release -p ami-conformance --example idle_cpu [secs] [tokio|async-std|mio|fleet]`
//!
//! Each state is measured over `secs` (default 3) of real time after it settled: CPU
//! seconds of the whole process (schedstat, nanoseconds) scaled to 10 s, and voluntary
//! context switches per second (each is a thread going to sleep, so one per wake-up; the
//! measuring thread's own sleep is one). The `mio` rows add the loop's turns per second.
//! `IDLE_THREADS=1` lists the threads that woke more than once. Nothing running costs
//! about 0.3 wake-ups/s (the measuring thread); a loop that spins shows thousands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, missing_docs)]

use ami_conformance::threads::Snapshot;
use ami_proto::{Action, ClientConfig, ClientConfigBuilder, SendOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// CPU seconds (schedstat) and voluntary context switches (sleeps: each wake-up is one)
/// summed over this process's threads.
fn proc_cpu() -> (f64, u64) {
    Snapshot::now().totals()
}

/// Sleeps `secs` and prints what the process used meanwhile.
fn measure(label: &str, secs: u64) {
    let snap = Snapshot::now();
    let (c0, w0) = snap.totals();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let took = t0.elapsed().as_secs_f64();
    let (c1, w1) = proc_cpu();
    println!(
        "{label:<44} {:>8.4} CPU s/10 s  {:>8.1} wake-ups/s   [{}]",
        (c1 - c0) * 10.0 / took,
        (w1.saturating_sub(w0)) as f64 / took,
        snap.report_since(t0.elapsed())
    );
    if std::env::var_os("IDLE_THREADS").is_some() {
        for (tid, t) in Snapshot::now().0 {
            let d = t
                .slept
                .saturating_sub(snap.0.get(&tid).map_or(0, |b| b.slept));
            if d > 1 {
                println!("      {}/{tid}: {d} wake-ups", t.name);
            }
        }
    }
}

fn base() -> ClientConfigBuilder {
    ClientConfig::builder("admin", "amp111").seed(5)
}

/// A port nothing listens on.
fn refused() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A listener whose backlog is full: new SYNs go unanswered (connect hangs).
fn backlog_full() -> (SocketAddr, Vec<Box<dyn std::any::Any>>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let l = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        s.listen(0).unwrap().into_std().unwrap()
    });
    let addr = l.local_addr().unwrap();
    let mut keep: Vec<Box<dyn std::any::Any>> = vec![Box::new(l)];
    for _ in 0..4 {
        if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            keep.push(Box::new(c));
        }
    }
    (addr, keep)
}

/// A listener that never accepts (the kernel completes the handshake; no banner ever).
fn silent() -> (SocketAddr, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    (l.local_addr().unwrap(), l)
}

/// A fake Asterisk: logs every client in, then (per `mode`) sends 50,000 events and goes
/// quiet (`flood`), stops reading (`deaf`), or just reads; never answers anything else.
fn fake(mode: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                s.write_all(b"Asterisk Call Manager/11.0.0\r\n").unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&got).into_owned();
                let id = text
                    .lines()
                    .find_map(|l| l.strip_prefix("ActionID: "))
                    .unwrap_or("")
                    .to_string();
                let ok = format!(
                    "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
                );
                let _ = s.write_all(ok.as_bytes());
                match mode {
                    "flood" => {
                        let mut out = String::new();
                        for i in 0..50_000 {
                            out.push_str(&format!(
                                "Event: UserEvent\r\nUserEvent: T\r\nSeq: {i}\r\n\r\n"
                            ));
                        }
                        let _ = s.write_all(out.as_bytes());
                        // Then read (and drop) forever: answers nothing.
                        while s.read(&mut buf).unwrap_or(0) > 0 {}
                    }
                    "deaf" => std::thread::sleep(Duration::from_secs(3600)),
                    _ => while s.read(&mut buf).unwrap_or(0) > 0 {},
                }
            });
        }
    });
    addr
}

fn filler() -> Action {
    let pad = "x".repeat(1000);
    (0..120).fold(
        Action::new("UserEvent").field("UserEvent", "Fill"),
        |a, _| a.field("Pad", pad.as_str()),
    )
}

/// What a state's peers need kept alive while it is measured.
type Keep = Vec<Box<dyn std::any::Any>>;

/// A fleet server: its name, config and address.
type Member = (String, ClientConfig, SocketAddr);

/// The async adapters: `spawn` gives (handle, events) on the runtime under test.
fn run_async(
    name: &str,
    secs: u64,
    spawn: &dyn Fn(ClientConfig, SocketAddr) -> (ami_async::Handle, ami_async::Events),
    spawn_tls: &dyn Fn(ClientConfig, SocketAddr) -> (ami_async::Handle, ami_async::Events),
) {
    // Backoff: refused, many seconds of backoff.
    {
        let cfg = base()
            .backoff_base(Duration::from_secs(2))
            .backoff_max(Duration::from_secs(30))
            .build()
            .unwrap();
        let (h, e) = spawn(cfg, refused());
        std::thread::sleep(Duration::from_millis(300));
        measure(&format!("{name}: backoff (refused)"), secs);
        drop((h, e));
    }
    // Breaker open.
    {
        let cfg = base()
            .backoff_base(Duration::from_millis(1))
            .backoff_max(Duration::from_millis(2))
            .breaker_threshold(2)
            .breaker_cooldown(Duration::from_secs(120))
            .build()
            .unwrap();
        let (h, e) = spawn(cfg, refused());
        std::thread::sleep(Duration::from_millis(300));
        println!("   status {:?}", h.status().get());
        measure(&format!("{name}: breaker open"), secs);
        drop((h, e));
    }
    // Connect hanging (backlog full).
    {
        let (addr, keep) = backlog_full();
        let cfg = base()
            .connect_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let (h, e) = spawn(cfg, addr);
        std::thread::sleep(Duration::from_millis(300));
        println!("   status {:?}", h.status().get());
        measure(&format!("{name}: connect hanging (backlog full)"), secs);
        drop((h, e, keep));
    }
    // No banner (listener never accepts).
    {
        let (addr, l) = silent();
        let cfg = base()
            .banner_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let (h, e) = spawn(cfg, addr);
        std::thread::sleep(Duration::from_millis(300));
        println!("   status {:?}", h.status().get());
        measure(&format!("{name}: awaiting banner (never accepted)"), secs);
        drop((h, e, l));
    }
    // TLS handshake that never completes.
    {
        let (addr, l) = silent();
        let cfg = base()
            .connect_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let (h, e) = spawn_tls(cfg, addr);
        std::thread::sleep(Duration::from_millis(300));
        println!("   status {:?}", h.status().get());
        measure(&format!("{name}: TLS handshake hanging"), secs);
        drop((h, e, l));
    }
    // Ready, idle (server reads, answers nothing after login; pings unanswered long).
    {
        let addr = fake("quiet");
        let cfg = base()
            .ping_interval(Duration::from_secs(60))
            .build()
            .unwrap();
        let (h, e) = spawn(cfg, addr);
        std::thread::sleep(Duration::from_millis(300));
        println!("   status {:?}", h.status().get());
        measure(&format!("{name}: ready, idle"), secs);
        drop((h, e));
    }
    // Event queue full, consumer stalled.
    {
        let addr = fake("flood");
        let cfg = base()
            .ping_interval(Duration::from_secs(60))
            .event_queue_cap(1000)
            .build()
            .unwrap();
        let (h, e) = spawn(cfg, addr);
        std::thread::sleep(Duration::from_millis(1500));
        println!("   status {:?}", h.status().get());
        measure(&format!("{name}: queue full, consumer stalled"), secs);
        println!("   stats dropped {:?}", h.stats().events_dropped);
        drop((h, e));
    }
    // Socket write blocked: server stopped reading, actions waiting to be written.
    {
        let addr = fake("deaf");
        let cfg = base()
            .ping_interval(Duration::from_secs(60))
            .pipeline_depth(200)
            .build()
            .unwrap();
        let (h, e) = spawn(cfg, addr);
        std::thread::sleep(Duration::from_millis(300));
        let mut keep: Keep = Vec::new();
        for _ in 0..100 {
            let h2 = h.clone();
            let fut = async move {
                let _ = h2
                    .send_with(filler(), SendOptions::timeout(Duration::from_secs(60)))
                    .await;
            };
            keep.push(Box::new(std::thread::spawn(move || {
                futures_lite::future::block_on(fut)
            })));
        }
        std::thread::sleep(Duration::from_millis(500));
        println!(
            "   status {:?} bytes_out {}",
            h.status().get(),
            h.stats().bytes_out
        );
        measure(&format!("{name}: write blocked (server not reading)"), secs);
        // The senders' threads hold handles: closing fails their actions, and they end.
        h.close();
        for t in keep {
            let _ = t
                .downcast::<std::thread::JoinHandle<()>>()
                .map(|t| t.join());
        }
        drop((h, e));
    }
    // Every handle dropped while an action is pending on a server that never answers.
    {
        let addr = fake("quiet");
        let cfg = base().build().unwrap();
        let (h, e) = spawn(cfg, addr);
        std::thread::sleep(Duration::from_millis(300));
        let h2 = h.clone();
        let t = std::thread::spawn(move || {
            futures_lite::future::block_on(futures_lite::future::or(
                async {
                    let _ = h2.send(Action::new("Ping")).await;
                },
                async {
                    async_io::Timer::after(Duration::from_millis(200)).await;
                },
            ))
        });
        t.join().unwrap();
        drop((h, e));
        std::thread::sleep(Duration::from_millis(300));
        measure(&format!("{name}: all handles dropped"), secs);
    }
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let which = std::env::args().nth(2).unwrap_or_default();
    let (pem, _) = ami_conformance::localhost_cert();
    measure("nothing running", secs);
    if which.is_empty() || which == "tokio" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let h2 = handle.clone();
        let pem2 = pem.clone();
        run_async(
            "tokio",
            secs,
            &move |cfg, addr| {
                let _g = handle.enter();
                ami_tokio::spawn(cfg, addr)
            },
            &move |cfg, addr| {
                let (h, e, d) = ami_async::session_tls::<ami_tokio::Tokio>(
                    cfg,
                    addr,
                    ami_conformance::client_tls(&pem2, "localhost"),
                )
                .unwrap();
                h2.spawn(d);
                (h, e)
            },
        );
        measure("tokio: all done", secs);
    }
    if which.is_empty() || which == "fleet" {
        run_fleets(secs);
    }
    if which.is_empty() || which == "mio" {
        run_mio(secs, &pem);
    }
    if which.is_empty() || which == "async-std" {
        let pem2 = pem.clone();
        run_async(
            "async-std",
            secs,
            &|cfg, addr| ami_async_std::run_on_thread(cfg, addr).unwrap(),
            &move |cfg, addr| {
                let (h, e, d) = ami_async::session_tls::<ami_async_std::AsyncIo>(
                    cfg,
                    addr,
                    ami_conformance::client_tls(&pem2, "localhost"),
                )
                .unwrap();
                std::thread::spawn(move || async_io::block_on(d));
                (h, e)
            },
        );
    }
}

/// One mio connection driven by the README loop for `secs`: loop turns per second, CPU.
fn mio_loop(
    label: &str,
    secs: u64,
    mut driver: ami_mio::MioDriver,
    conn: ami_mio::ConnId,
    drain: bool,
    send: usize,
) {
    let t0 = Instant::now();
    let mut sent = false;
    // Settle (connect, login, flood) first.
    while t0.elapsed() < Duration::from_millis(1500) {
        let r = driver.step(Instant::now()).unwrap();
        if !sent
            && send > 0
            && r.notices
                .iter()
                .any(|(_, n)| matches!(n, ami_mio::Notice::Ready { .. }))
        {
            for _ in 0..send {
                let _ = driver.send_with(
                    Instant::now(),
                    conn,
                    filler(),
                    SendOptions::timeout(Duration::from_secs(60)),
                );
            }
            sent = true;
        }
        if drain {
            while driver.poll_event(conn).is_some() {}
        }
        driver.wait(Some(Duration::from_millis(100))).unwrap();
    }
    let status = driver.client(conn).map(|c| format!("{:?}", c.status()));
    let (c0, w0) = proc_cpu();
    let t1 = Instant::now();
    let mut turns = 0u64;
    while t1.elapsed() < Duration::from_secs(secs) {
        driver.step(Instant::now()).unwrap();
        if drain {
            while driver.poll_event(conn).is_some() {}
        }
        driver.wait(Some(Duration::from_secs(secs))).unwrap();
        turns += 1;
    }
    let took = t1.elapsed().as_secs_f64();
    let (c1, w1) = proc_cpu();
    println!(
        "{label:<44} {:>8.4} CPU s/10 s  {:>8.1} wake-ups/s  {:>10.1} loop turns/s  ({})",
        (c1 - c0) * 10.0 / took,
        (w1 - w0) as f64 / took,
        turns as f64 / took,
        status.unwrap_or_default()
    );
}

fn run_mio(secs: u64, pem: &str) {
    let new = || ami_mio::MioDriver::new().unwrap();
    {
        let mut d = new();
        let cfg = base()
            .backoff_base(Duration::from_secs(2))
            .backoff_max(Duration::from_secs(30))
            .build()
            .unwrap();
        let c = d.add(Instant::now(), cfg, refused()).unwrap();
        mio_loop("mio: backoff (refused)", secs, d, c, true, 0);
    }
    {
        let mut d = new();
        let cfg = base()
            .backoff_base(Duration::from_millis(1))
            .backoff_max(Duration::from_millis(2))
            .breaker_threshold(2)
            .breaker_cooldown(Duration::from_secs(120))
            .build()
            .unwrap();
        let c = d.add(Instant::now(), cfg, refused()).unwrap();
        mio_loop("mio: breaker open", secs, d, c, true, 0);
    }
    {
        let (addr, keep) = backlog_full();
        let mut d = new();
        let cfg = base()
            .connect_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let c = d.add(Instant::now(), cfg, addr).unwrap();
        mio_loop("mio: connect hanging (backlog full)", secs, d, c, true, 0);
        drop(keep);
    }
    {
        let (addr, l) = silent();
        let mut d = new();
        let cfg = base()
            .banner_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let c = d.add(Instant::now(), cfg, addr).unwrap();
        mio_loop("mio: awaiting banner (never accepted)", secs, d, c, true, 0);
        drop(l);
    }
    {
        let (addr, l) = silent();
        let mut d = new();
        let cfg = base()
            .connect_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let tls = ami_mio::Tls {
            config: ami_async::tls::client_config_from_pem(pem.as_bytes()).unwrap(),
            server_name: "localhost".into(),
        };
        let c = d.add_tls(Instant::now(), cfg, addr, tls).unwrap();
        mio_loop("mio: TLS handshake hanging", secs, d, c, true, 0);
        drop(l);
    }
    {
        let mut d = new();
        let cfg = base()
            .ping_interval(Duration::from_secs(60))
            .build()
            .unwrap();
        let c = d.add(Instant::now(), cfg, fake("quiet")).unwrap();
        mio_loop("mio: ready, idle", secs, d, c, true, 0);
    }
    {
        let mut d = new();
        let cfg = base()
            .ping_interval(Duration::from_secs(60))
            .event_queue_cap(1000)
            .build()
            .unwrap();
        let c = d.add(Instant::now(), cfg, fake("flood")).unwrap();
        mio_loop("mio: queue full, consumer stalled", secs, d, c, false, 0);
    }
    {
        let mut d = new();
        let cfg = base()
            .ping_interval(Duration::from_secs(60))
            .pipeline_depth(200)
            .build()
            .unwrap();
        let c = d.add(Instant::now(), cfg, fake("deaf")).unwrap();
        mio_loop(
            "mio: write blocked (server not reading)",
            secs,
            d,
            c,
            true,
            100,
        );
    }
}

/// Servers in every waiting state at once in one fleet: (name, config, address).
fn fleet_members() -> (Vec<Member>, Keep) {
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut m = Vec::new();
    let only = std::env::var("FLEET_ONLY").unwrap_or_default();
    let want = |g: &str| only.is_empty() || only.split(',').any(|o| o == g);
    for i in 0..if want("breaker") { 20 } else { 0 } {
        let cfg = base()
            .backoff_base(Duration::from_millis(1))
            .backoff_max(Duration::from_millis(2))
            .breaker_threshold(2)
            .breaker_cooldown(Duration::from_secs(120))
            .build()
            .unwrap();
        m.push((format!("breaker{i}"), cfg, refused()));
    }
    if want("hang") {
        let (addr, k) = backlog_full();
        keep.push(Box::new(k));
        m.push((
            "hang".into(),
            base()
                .connect_timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            addr,
        ));
    }
    if want("nobanner") {
        let (addr, l) = silent();
        keep.push(Box::new(l));
        m.push((
            "nobanner".into(),
            base()
                .banner_timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            addr,
        ));
    }
    if want("flood") {
        m.push((
            "flood".into(),
            base()
                .ping_interval(Duration::from_secs(60))
                .event_queue_cap(1000)
                .build()
                .unwrap(),
            fake("flood"),
        ));
    }
    if want("deaf") {
        m.push((
            "deaf".into(),
            base()
                .ping_interval(Duration::from_secs(60))
                .pipeline_depth(200)
                .build()
                .unwrap(),
            fake("deaf"),
        ));
    }
    (m, keep)
}

fn run_fleets(secs: u64) {
    use ami_proto::fleet::{Budget, FleetConfig, Route};
    let mut config = FleetConfig::default();
    let mut budget = Budget::default();
    budget.connects_per_step = 1;
    config.budget = budget;
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (members, keep) = fleet_members();
        let (fh, fe) =
            rt.block_on(async { ami_tokio::fleet::spawn_fleet_sharded(config.clone(), 1) });
        for (name, cfg, addr) in members {
            fh.add(&name, cfg, addr).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1500));
        let mut keepf: Keep = Vec::new();
        for _ in 0..100 {
            let h2 = fh.clone();
            keepf.push(Box::new(std::thread::spawn(move || {
                futures_lite::future::block_on(async move {
                    let _ = h2
                        .send_with(
                            Route::Server("deaf"),
                            filler(),
                            SendOptions::timeout(Duration::from_secs(60)),
                        )
                        .await;
                })
            })));
        }
        std::thread::sleep(Duration::from_millis(500));
        for (n, s) in fh.statuses() {
            if !n.as_str().starts_with("breaker") || n.as_str() == "breaker0" {
                println!("   {n}: {s:?}");
            }
        }
        measure("tokio fleet: every state, stalled consumer", secs);
        fh.close();
        for t in keepf {
            let _ = t
                .downcast::<std::thread::JoinHandle<()>>()
                .map(|t| t.join());
        }
        measure("tokio fleet: closed", secs);
        drop((fh, fe, keep));
        measure("tokio fleet: all handles dropped", secs);
        drop(rt);
    }
    {
        let (members, keep) = fleet_members();
        let mut f = ami_mio::MioFleet::with_options(ami_mio::Options::default(), config).unwrap();
        for (name, cfg, addr) in members {
            f.add(Instant::now(), &name, cfg, addr).unwrap();
        }
        let t0 = Instant::now();
        let mut sent = false;
        while t0.elapsed() < Duration::from_millis(2000) {
            f.step(Instant::now()).unwrap();
            if !sent && t0.elapsed() > Duration::from_millis(1000) {
                for _ in 0..100 {
                    let _ = f.send_with(
                        Instant::now(),
                        Route::Server("deaf"),
                        filler(),
                        SendOptions::timeout(Duration::from_secs(60)),
                    );
                }
                sent = true;
            }
            f.wait(Some(Duration::from_millis(100))).unwrap();
        }
        let (c0, w0) = proc_cpu();
        let t1 = Instant::now();
        let mut turns = 0u64;
        while t1.elapsed() < Duration::from_secs(secs) {
            f.step(Instant::now()).unwrap();
            f.wait(Some(Duration::from_secs(secs))).unwrap();
            turns += 1;
        }
        let took = t1.elapsed().as_secs_f64();
        let (c1, w1) = proc_cpu();
        println!(
            "{:<44} {:>8.4} CPU s/10 s  {:>8.1} wake-ups/s  {:>10.1} loop turns/s",
            "mio fleet: every state, stalled consumer",
            (c1 - c0) * 10.0 / took,
            (w1 - w0) as f64 / took,
            turns as f64 / took,
        );
        for name in ["breaker0", "hang", "nobanner", "flood", "deaf"] {
            println!("   {name}: {:?}", f.status(name));
        }
        drop(keep);
    }
}
