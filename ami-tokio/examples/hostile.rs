//! Hostile AMI servers on 127.0.0.1, and the library measurements of issue 9 against them.
//!
//! ```text
//! # A server for `ami listen` / `ami action` measurements (prints its port, runs until killed):
//! cargo run --release -p ami-tokio --example hostile -- serve big|padded|padded-list|huge|silent|follows|trickle [PORT]
//! # Library measurements (each prints its figures and the process's peak RSS):
//! cargo run --release -p ami-tokio --example hostile -- unread [MIB] # 256 KiB events, Events never read, 10 s (MIB: event_queue_bytes)
//! cargo run --release -p ami-tokio --example hostile -- list        # CoreShowChannels: 100,000 items padded with 63 KiB junk
//! cargo run --release -p ami-tokio --example hostile -- huge        # three 15 MiB events, fast reader
//! cargo run --release -p ami-tokio --example hostile -- deadlines   # 100,000 Pings, 2 s timeout, silent server
//! ```
//!
//! The same `unread` measurement for the other adapters: `cargo run --release -p ami-mio
//! --example mio_hostile_unread` and `cargo run --release -p ami-async-std --example
//! async_std_hostile_unread`.
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
use ami_sim::hostile::{padded_event, peak_rss_mib, unread_summary, Hostile, HostileServer};
use std::future::Future;
use std::time::{Duration, Instant};

/// When each Ping (by its `X-Seq`) reached the silent server, in µs since `epoch`.
fn ping_arrivals(server: &HostileServer, epoch: Instant) -> Vec<(usize, u64)> {
    server
        .received()
        .iter()
        .filter_map(|r| {
            let seq: usize = r.action.get_str("X-Seq")?.parse().ok()?;
            Some((seq, (r.at - epoch).as_micros() as u64))
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

/// A server in a child process (this program with `serve`), so the peak RSS measured here is
/// the client's alone. Killed on drop.
struct External {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str) -> External {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["serve", name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    External {
        child,
        addr: ([127, 0, 0, 1], port).into(),
    }
}

fn config() -> ClientConfig {
    ClientConfig::builder("admin", "hostile").build().unwrap()
}

/// `queue_mib`: the event queue's byte cap (default: the library's).
async fn unread(queue_mib: Option<usize>) {
    let server = start("big");
    let config = match queue_mib {
        Some(mib) => ClientConfig::builder("admin", "hostile")
            .event_queue_bytes(mib << 20)
            .build()
            .unwrap(),
        None => config(),
    };
    let (ami, _events) = ami_tokio::spawn(config, server.addr);
    ami.wait_ready().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let s = ami.stats();
    println!(
        "unread Events, 256 KiB events, 10 s: {}",
        unread_summary(&s)
    );
}

async fn list() {
    let server = start("padded-list");
    let (ami, _events) = ami_tokio::spawn(config(), server.addr);
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
    let (ami, mut events) = ami_tokio::spawn(config(), server.addr);
    ami.wait_ready().await.unwrap();
    let mut got = 0;
    while got < 3 {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Some(StreamItem::Event(m))) => {
                got += 1;
                assert!(m.wire_bytes().len() > 15 << 20);
                let s = ami.stats();
                eprintln!(
                    "event {got}: queue {} bytes, decoder {} bytes allocated, RSS so far {:.1} MiB",
                    s.event_queue_bytes,
                    s.decoder_allocated,
                    peak_rss_mib()
                );
            }
            Ok(Some(other)) => eprintln!("{other:?}"),
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
    // In process: the server's arrival times are compared with the client's clock.
    let server = HostileServer::start(scenario("silent"), 0).unwrap();
    let (ami, _events) = ami_tokio::spawn(config(), server.local_addr());
    ami.wait_ready().await.unwrap();
    let timeout = Duration::from_secs(2);
    // Each send is polled once right here, which queues it: its deadline is at most
    // `queued_at + 2 s`, so a Ping that reaches the server later was written after it.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut pending = Vec::new();
    let mut queued_at = Vec::new();
    let mut refused = 0;
    for seq in 0..100_000 {
        let ping = Action::new("Ping").field("X-Seq", seq.to_string());
        let mut fut = Box::pin(ami.send_with(ping, SendOptions::timeout(timeout)));
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Err(ami_tokio::AmiError::Send(_))) => refused += 1,
            std::task::Poll::Ready(_) => {}
            std::task::Poll::Pending => pending.push(fut),
        }
        queued_at.push(epoch.elapsed().as_micros() as u64);
    }
    let mut timed_out = 0;
    for fut in pending {
        if fut.await.is_err() {
            timed_out += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrivals = ping_arrivals(&server, epoch);
    let limit = timeout.as_micros() as u64;
    let late = |slack: u64| {
        arrivals
            .iter()
            .filter(|(seq, at)| *at > queued_at[*seq] + limit + slack)
            .count()
    };
    println!(
        "100,000 Pings, 2 s timeout, silent server: {refused} refused (queue cap), \
         {timed_out} timed out; server received {}, arrived after their deadline: {} \
         (more than 10 ms after: {})",
        arrivals.len(),
        late(0),
        late(10_000)
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
        Some("unread") => rt.block_on(unread(args.get(1).and_then(|m| m.parse().ok()))),
        Some("list") => rt.block_on(list()),
        Some("huge") => rt.block_on(huge()),
        Some("deadlines") => rt.block_on(deadlines()),
        _ => eprintln!(
            "usage: hostile serve SCENARIO [PORT] | unread [QUEUE_MIB] | list | huge | deadlines"
        ),
    }
}
