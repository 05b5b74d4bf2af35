//! `demo` (an embedded simulated Asterisk) and `bench` (events/s and actions/s).

use crate::connect;
use crate::status_line::StatusLine;
use crate::{Cli, Failure, EXIT_OTHER};
use ami_proto::{Action, ClientConfig, StreamItem};
use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use std::time::{Duration, Instant};

fn start_sim() -> Result<TcpFront, Failure> {
    TcpFront::start(SimConfig::default(), "127.0.0.1:0")
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the simulator: {e}")))
}

fn sim_config(events: &str) -> Result<ClientConfig, Failure> {
    ClientConfig::builder("admin", "amp111")
        .events(events)
        .build()
        .map_err(|e| Failure::new(EXIT_OTHER, e.to_string()))
}

/// Runs calls against an in-process simulated Asterisk on 127.0.0.1 and prints what happens.
pub(crate) async fn demo(duration: f64) -> Result<(), Failure> {
    let sim = start_sim()?;
    let addr = sim.local_addr();
    println!("simulated Asterisk listening on {addr}");
    let (ami, mut events) = ami_tokio::spawn(sim_config("on")?, addr);
    connect::first_ready(&ami, &format!("ami://admin@{addr}")).await?;
    println!("logged in as admin");

    let pong = ami
        .send(Action::new("Ping"))
        .await
        .map_err(|e| Failure::new(EXIT_OTHER, format!("Ping: {e}")))?;
    println!("Ping -> {}", pong.message().get_str("Ping").unwrap_or("?"));

    let status = StatusLine::new();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(duration.max(0.5));
    let exten = ["echo", "userevent", "busy", "wait10"];
    let mut calls = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut printed = 0usize;
    while Instant::now() < end {
        tokio::select! {
            _ = tick.tick() => {
                let ext = exten[calls % exten.len()];
                let originate = Action::new("Originate")
                    .field("Channel", format!("Local/{ext}@ami-test"))
                    .field("Application", "Wait")
                    .field("Data", "1")
                    .field("Async", "true")
                    .field("Timeout", "5000");
                calls += 1;
                let caller = ami.clone();
                tokio::spawn(async move {
                    match caller.send(originate).await {
                        Ok(r) => println!(
                            "call to {ext}: answered (Reason {})",
                            r.follow_up().and_then(|f| f.get_str("Reason")).unwrap_or("?")
                        ),
                        Err(e) => println!("call to {ext}: {e}"),
                    }
                });
                if calls % 4 == 0 {
                    if let Ok(list) = ami.send(Action::new("CoreShowChannels")).await {
                        println!("CoreShowChannels: {} live channels", list.items().len());
                    }
                }
            }
            item = events.recv() => match item {
                Some(StreamItem::Event(e)) => {
                    printed += 1;
                    if printed <= 40 {
                        println!(
                            "event {:<18} {}",
                            e.event().unwrap_or("?"),
                            e.get_str("Channel").unwrap_or("")
                        );
                    }
                    let s = ami.stats();
                    status.update(&format!(
                        "{:.1}s  events {}  actions {}  dropped {}",
                        started.elapsed().as_secs_f64(),
                        s.events_in,
                        s.actions_written,
                        s.events_dropped
                    ));
                }
                Some(StreamItem::Gap { dropped }) => eprintln!("gap: {dropped} events dropped"),
                Some(_) => {}
                None => break,
            },
        }
    }
    status.finish();
    ami.logoff().await;
    let s = ami.stats();
    println!(
        "done: {calls} calls, {} events received ({} shown), {} actions, {} dropped, \
         action latency p50 {:?} p99 {:?}",
        s.events_in,
        printed.min(40),
        s.actions_written,
        s.events_dropped,
        s.latency.quantile(0.5).unwrap_or_default(),
        s.latency.quantile(0.99).unwrap_or_default(),
    );
    drop(sim);
    Ok(())
}

/// Events kept outstanding in the embedded simulator's storm: enough to keep the socket
/// busy, small enough that the in-process server's buffers stay a few megabytes.
const STORM_OUTSTANDING: u64 = 20_000;
const STORM_CHUNK: usize = 10_000;

/// Events/s with a trivial consumer. Against the embedded simulator the server pushes event
/// storms; against a real server (`--server`), pipelined UserEvent actions make the events
/// (each one round trip), so that figure is also actions/s.
pub(crate) async fn bench(cli: &Cli, duration: f64) -> Result<(), Failure> {
    let duration = Duration::from_secs_f64(duration.max(0.5));
    match &cli.server {
        None => bench_embedded(duration).await,
        Some(_) => bench_server(cli, duration).await,
    }
}

async fn bench_embedded(duration: Duration) -> Result<(), Failure> {
    let sim = start_sim()?;
    let addr = sim.local_addr();
    let (ami, mut events) = ami_tokio::spawn(sim_config("user")?, addr);
    connect::first_ready(&ami, &format!("ami://admin@{addr}")).await?;
    let status = StatusLine::new();
    let started = Instant::now();
    let mut last_status = started;
    let (mut injected, mut received, mut gaps) = (0u64, 0u64, 0u64);
    let mut batch = Vec::with_capacity(4096);
    while started.elapsed() < duration {
        if injected.saturating_sub(received + gaps) < STORM_OUTSTANDING {
            sim.with_server(|s, now| s.emit_user_events(now, STORM_CHUNK));
            injected += STORM_CHUNK as u64;
        }
        let wait = events.recv_many(&mut batch, 4096);
        match tokio::time::timeout(Duration::from_millis(100), wait).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => continue,
        }
        for item in batch.drain(..) {
            match item {
                StreamItem::Event(_) => received += 1,
                StreamItem::Gap { dropped } => gaps += dropped,
                _ => {}
            }
        }
        if last_status.elapsed() > Duration::from_millis(250) {
            last_status = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            status.update(&format!(
                "{secs:.1}s  {:.0} events/s  received {received}  dropped {gaps}",
                received as f64 / secs
            ));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    status.finish();
    let stats = ami.stats();
    println!(
        "events: {received} in {secs:.2}s = {:.0}/s with a trivial consumer (dropped {gaps}, \
         {} bytes in, {} decode errors)",
        received as f64 / secs,
        stats.bytes_in,
        stats.decoder.lines_too_long
            + stats.decoder.messages_too_large
            + stats.decoder.too_many_fields
    );
    ami.close();
    drop(sim);
    Ok(())
}

async fn bench_server(cli: &Cli, duration: Duration) -> Result<(), Failure> {
    let (ami, mut events) = connect::open(cli, "user").await?;
    let status = StatusLine::new();

    // Actions: keep 64 UserEvent actions in flight; each also yields one event.
    let actions_done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..64 {
        let ami = ami.clone();
        let done = actions_done.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let a = Action::new("UserEvent")
                    .field("UserEvent", "AmiBench")
                    .field("Worker", w.to_string());
                if ami.send(a).await.is_err() {
                    break;
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    let mut received = 0u64;
    let mut gaps = 0u64;
    let mut batch = Vec::with_capacity(4096);
    let mut last_status = started;
    while started.elapsed() < duration {
        let n = match tokio::time::timeout(
            Duration::from_millis(100),
            events.recv_many(&mut batch, 4096),
        )
        .await
        {
            Ok(n) => n,
            Err(_) => continue,
        };
        if n == 0 {
            break;
        }
        for item in batch.drain(..) {
            match item {
                StreamItem::Event(_) => received += 1,
                StreamItem::Gap { dropped } => gaps += dropped,
                _ => {}
            }
        }
        if last_status.elapsed() > Duration::from_millis(250) {
            last_status = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            status.update(&format!(
                "{secs:.1}s  {:.0} events/s  {:.0} actions/s  dropped {gaps}",
                received as f64 / secs,
                actions_done.load(std::sync::atomic::Ordering::Relaxed) as f64 / secs
            ));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    status.finish();
    let actions = actions_done.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "events: {received} in {secs:.2}s = {:.0}/s (dropped {gaps}); actions: {actions} = {:.0}/s",
        received as f64 / secs,
        actions as f64 / secs
    );
    ami.close();
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}
