//! Hostile AMI servers on 127.0.0.1, and the library measurements of issue 9 against them.
//!
//! ```text
//! # A server for `ami listen` / `ami action` measurements (prints its port, runs until killed):
//! cargo run --release -p ami-tokio --example hostile -- serve big|padded|padded-list|huge|silent|follows|trickle [PORT]
//! # Library measurements (each prints its figures and the process's peak RSS):
//! cargo run --release -p ami-tokio --example hostile -- unread      # 256 KiB events, Events never read, 10 s
//! cargo run --release -p ami-tokio --example hostile -- list        # CoreShowChannels: 100,000 items padded with 63 KiB junk
//! cargo run --release -p ami-tokio --example hostile -- huge        # three 15 MiB events, fast reader
//! cargo run --release -p ami-tokio --example hostile -- deadlines   # 100,000 Pings, 2 s timeout, silent server
//! ```
//!
//! Every server logs in any user, then misbehaves in one way. Scenarios: `big` floods 256 KiB
//! events; `padded` sends small events each followed by a 63 KiB message that is neither event
//! nor response; `padded-list` answers CoreShowChannels with 100,000 items, each followed by
//! 63 KiB of such junk; `huge` sends three 15 MiB events; `silent` answers nothing after
//! login and records when each Ping arrived; `follows` sends a legacy `Response: Follows`
//! without `--END COMMAND--`, then 20,000 events; `trickle` sends an endless line, one byte
//! a second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a measurement tool

use ami_proto::{Action, ClientConfig, SendOptions, StreamItem};
use ami_sim::hostile::{padded_event, Hostile, HostileServer};
use std::time::{Duration, Instant};

/// Arrival of each Ping at the silent server minus the client's `X-Sent` stamp, in µs.
fn ping_delays(server: &HostileServer, epoch: Instant) -> Vec<u64> {
    server
        .received()
        .iter()
        .filter_map(|r| {
            let sent: u64 = r.action.get_str("X-Sent")?.parse().ok()?;
            Some((r.at - epoch).as_micros() as u64 - sent)
        })
        .collect()
}

fn scenario(name: &str) -> Hostile {
    match name {
        "big" => Hostile::BigEvents { size: 256 << 10 },
        "padded" => Hostile::PaddedEvents { pad: 63 << 10 },
        "padded-list" => Hostile::PaddedList {
            items: 100_000,
            pad: 63 << 10,
        },
        "huge" => Hostile::Huge {
            count: 3,
            size: 15 << 20,
        },
        "silent" => Hostile::Silent,
        "follows" => {
            let mut wire = b"Response: Follows\r\nPrivilege: Command\r\nActionID: x-1\r\n\
System uptime: 1 hour\n\n"
                .to_vec();
            for i in 0..20_000 {
                wire.extend(padded_event("After", i, 0));
            }
            Hostile::Script(wire)
        }
        "trickle" => Hostile::Trickle {
            every: Duration::from_secs(1),
        },
        other => panic!("unknown scenario {other}"),
    }
}

fn start(name: &str) -> HostileServer {
    HostileServer::start(scenario(name), 0).unwrap()
}

/// Peak resident set size of this process, from /proc (Linux).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn config() -> ClientConfig {
    ClientConfig::builder("admin", "hostile").build().unwrap()
}

async fn unread() {
    let server = start("big");
    let (ami, _events) = ami_tokio::spawn(config(), server.local_addr());
    ami.wait_ready().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let s = ami.stats();
    println!(
        "unread Events, 256 KiB events, 10 s: {} events in, {} queued now ({} bytes), \
         {} dropped; peak RSS {:.1} MiB",
        s.events_in,
        s.event_queue_len,
        s.event_queue_bytes,
        s.events_dropped,
        peak_rss_mib()
    );
}

async fn list() {
    let server = start("padded-list");
    let (ami, _events) = ami_tokio::spawn(config(), server.local_addr());
    ami.wait_ready().await.unwrap();
    let t = Instant::now();
    let r = ami
        .send_with(
            Action::new("CoreShowChannels"),
            SendOptions::timeout(Duration::from_secs(600)),
        )
        .await;
    let outcome = match &r {
        Ok(resp) => format!("{} items", resp.items().len()),
        Err(e) => e.to_string(),
    };
    println!(
        "CoreShowChannels, 100,000 items padded with 63 KiB: {outcome} in {:.1} s; \
         peak RSS {:.1} MiB",
        t.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
}

async fn huge() {
    let server = start("huge");
    let (ami, mut events) = ami_tokio::spawn(config(), server.local_addr());
    ami.wait_ready().await.unwrap();
    let mut got = 0;
    while got < 3 {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Some(StreamItem::Event(m))) => {
                got += 1;
                assert!(m.len() > 15 << 20);
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    println!(
        "three 15 MiB events, fast reader: {got} received; peak RSS {:.1} MiB",
        peak_rss_mib()
    );
}

async fn deadlines() {
    let epoch = Instant::now();
    let server = start("silent");
    let (ami, _events) = ami_tokio::spawn(config(), server.local_addr());
    ami.wait_ready().await.unwrap();
    let timeout = Duration::from_secs(2);
    let mut tasks = Vec::new();
    for _ in 0..100_000 {
        let ami = ami.clone();
        tasks.push(tokio::spawn(async move {
            let sent = epoch.elapsed().as_micros().to_string();
            let ping = Action::new("Ping").field("X-Sent", sent);
            ami.send_with(ping, SendOptions::timeout(timeout)).await
        }));
    }
    let mut refused = 0;
    let mut timed_out = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(ami_tokio::AmiError::Send(_)) => refused += 1,
            Err(_) => timed_out += 1,
            Ok(_) => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delays = ping_delays(&server, epoch);
    let limit = timeout.as_micros() as u64;
    let late = delays.iter().filter(|d| **d > limit).count();
    println!(
        "100,000 Pings, 2 s timeout, silent server: {refused} refused (queue cap), \
         {timed_out} timed out; server received {}, {late} of them after their deadline",
        delays.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let scenario = args.get(1).map_or("big", String::as_str);
            let port = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(0);
            let server = HostileServer::start(self::scenario(scenario), port).unwrap();
            println!("{}", server.local_addr().port());
            std::thread::sleep(Duration::from_secs(u64::MAX >> 2));
        }
        Some("unread") => rt.block_on(unread()),
        Some("list") => rt.block_on(list()),
        Some("huge") => rt.block_on(huge()),
        Some("deadlines") => rt.block_on(deadlines()),
        _ => eprintln!("usage: hostile serve SCENARIO [PORT] | unread | list | huge | deadlines"),
    }
}
