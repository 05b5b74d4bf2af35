//! Measurement, not a test: what an idempotency key costs an action request through the
//! bridge. Pings one at a time over `ami.<server>.action` from one NATS client into one bridge
//! (nats-server with JetStream on the same box), alternating rounds without a key (the
//! baseline) and with a fresh key per request (claim, confirm, reply stored: three KV writes
//! around the action), so both see the same machine. The AMI server is a thread that
//! answers every action at once (`ami-sim`'s TCP front answers on a 1 ms poll, which would
//! hide what is measured here).
//!
//! ```text
//! cargo run --release -p ami-nats --example keyed_actions [REQUESTS_PER_ROUND] [ROUNDS]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use ami_nats::{BridgeConfig, ServerSpec};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use support::*;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let per_round = args.first().copied().unwrap_or(2000);
    let rounds = args.get(1).copied().unwrap_or(3);
    let Some(nats) = Nats::start() else {
        eprintln!("nats-server not found: nothing measured");
        return;
    };
    let asterisk = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = asterisk.local_addr().unwrap();
    std::thread::spawn(move || answer_everything(asterisk));
    let client = login().build().unwrap();
    let server = ServerSpec::new("pbx1", addr.ip().to_string(), addr.port(), client).unwrap();
    let bridge = TestBridge::start(BridgeConfig::new(nats.url(), vec![server]).bridge_id("bench"));
    wait_for(Duration::from_secs(10), "bridge serving pbx1", || {
        bridge.serving() == ["pbx1"]
    });
    let url = nats.url();
    println!("{per_round} Pings per round, one at a time; latency per request (µs)");
    println!("| round | keys | mean | p50 | p99 | max | requests/s |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    block(async {
        let client = async_nats::connect(&url).await.unwrap();
        // Warm-up: connections, the bucket, the session's first answers.
        for i in 0..200 {
            ping(&client, Some(&format!("warm-{i}"))).await;
        }
        for round in 0..rounds {
            for keyed in [false, true] {
                let mut took = Vec::with_capacity(per_round);
                let started = Instant::now();
                for i in 0..per_round {
                    let key = keyed.then(|| format!("r{round}-{i}"));
                    let t = Instant::now();
                    ping(&client, key.as_deref()).await;
                    took.push(t.elapsed());
                }
                let secs = started.elapsed().as_secs_f64();
                if keyed {
                    // The keys were claimed and their replies stored: a repeat is a duplicate.
                    let again = format!(
                        r#"{{"headers":[["Action","Ping"]],"idempotency_key":"r{round}-0"}}"#
                    );
                    let reply = client
                        .request("ami.pbx1.action", again.into())
                        .await
                        .unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
                    assert_eq!(v["outcome"], "duplicate", "{v}");
                }
                took.sort();
                let us = |d: Duration| d.as_secs_f64() * 1e6;
                let mean = took.iter().map(|d| us(*d)).sum::<f64>() / took.len() as f64;
                println!(
                    "| {round} | {} | {mean:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                    if keyed {
                        "a fresh one each"
                    } else {
                        "none (baseline)"
                    },
                    us(took[took.len() / 2]),
                    us(took[took.len() * 99 / 100]),
                    us(took[took.len() - 1]),
                    per_round as f64 / secs,
                );
            }
        }
    });
    bridge.shutdown();
}

/// One Ping request; panics unless it succeeded (a measurement of failures is no measurement).
async fn ping(client: &async_nats::Client, key: Option<&str>) {
    let body = match key {
        Some(k) => format!(r#"{{"headers":[["Action","Ping"]],"idempotency_key":"{k}"}}"#),
        None => r#"{"headers":[["Action","Ping"]]}"#.to_string(),
    };
    let reply = client
        .request("ami.pbx1.action", body.into())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["outcome"], "success", "{v}");
}

/// A minimal AMI server: a banner, then `Response: Success` with its ActionID to every
/// action, at once (Login, the bridge's own set-up actions and the Pings alike); a session
/// at a time, as many as come.
fn answer_everything(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut out = stream.try_clone().unwrap();
            if out.write_all(b"Asterisk Call Manager/9.0.0\r\n").is_err() {
                return;
            }
            let mut id = String::new();
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if let Some(v) = line.strip_prefix("ActionID: ") {
                    id = v.to_string();
                } else if line.is_empty() {
                    let answer =
                        format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n");
                    if out.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                    id.clear();
                }
            }
        });
    }
}
