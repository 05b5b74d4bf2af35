//! What a pending action request holds in memory: its action, as Asterisk's limits bound
//! it (128 lines of at most 1 KiB), not the whole body its requester sent (up to NATS's max
//! payload, whitespace and all) for as long as the action runs. Alone in its binary: it
//! reads the process's resident memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use std::time::Duration;
use support::*;

/// Resident memory of this process, in MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// Set in the copy of this test binary that measures.
const CHILD: &str = "AMI_NATS_RSS_CHILD";

/// Whether this is the copy that measures; else runs test `name` in such a copy, whose
/// glibc malloc gives every block of 128 KiB or more back to the system when it is freed:
/// resident memory is then what is held, not what the allocator kept of freed 1 MiB bodies
/// (tens of MiB of noise).
fn measuring(name: &str) -> bool {
    if !std::path::Path::new("/proc/self/statm").exists() {
        return false;
    }
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture"])
        .env(CHILD, "1")
        .env("MALLOC_MMAP_THRESHOLD_", "131072")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    eprintln!("{text}");
    false
}

/// A valid Ping, padded with JSON whitespace to nearly NATS's max payload (1 MiB).
fn padded_ping() -> bytes::Bytes {
    let mut body = r#"{"headers":[["Action","Ping"]],"timeout_ms":60000}"#.to_string();
    body.push_str(&" ".repeat(1_000_000));
    bytes::Bytes::from(body)
}

/// Publishes `n` copies of `body` on `ami.pbx1.action`, each with a reply subject.
fn send(url: &str, body: &bytes::Bytes, n: usize) {
    block(async {
        let nc = async_nats::connect(url).await.unwrap();
        for _ in 0..n {
            nc.publish_with_reply("ami.pbx1.action", nc.new_inbox(), body.clone())
                .await
                .unwrap();
        }
        nc.flush().await.unwrap();
    })
}

#[test]
fn pending_requests_padded_to_the_max_payload_hold_only_their_action() {
    if !measuring("pending_requests_padded_to_the_max_payload_hold_only_their_action") {
        return;
    }
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    // A server that never answers: every request's action stays pending.
    const N: usize = 48;
    let (srv, bridge) = silent_pbx1_with_slots(&nats, N);
    let body = padded_ping();
    // Settle once with one padded request, so the buffers every request passes through
    // (the connection's read buffer, the test client's writes) are counted in the base.
    send(&url, &body, 1);
    wait_for(Duration::from_secs(10), "the first Ping written", || {
        srv.received_count("Ping") == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    let base = rss_mib();
    send(&url, &body, N - 1);
    wait_for(Duration::from_secs(20), "every Ping written", || {
        srv.received_count("Ping") == N
    });
    std::thread::sleep(Duration::from_millis(300));
    let held = rss_mib() - base;
    eprintln!("{N} pending padded requests: +{held:.1} MiB resident");
    // Each action is a few bytes: what they hold is noise, far below the bodies' 47 MiB.
    assert!(
        held < 16.0,
        "{N} pending requests hold {held:.1} MiB: their whole bodies, not their actions"
    );
    bridge.kill();
}

#[test]
fn requests_a_standby_forwards_hold_only_their_action_while_the_holder_runs_them() {
    if !measuring("requests_a_standby_forwards_hold_only_their_action_while_the_holder_runs_them") {
        return;
    }
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    // The lease of pbx1 held by another process ("fake", instance "inst"), written before
    // the bridge starts, in the bucket laid out as the bridge lays it out: the bridge is a
    // standby and forwards every request on ami.pbx1.action to that process's subject.
    block(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "KV_ami_leases".into(),
            subjects: vec!["$KV.ami_leases.>".into()],
            max_messages_per_subject: 1,
            max_bytes: 1 << 20,
            storage: async_nats::jetstream::stream::StorageType::File,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
        let kv = js.get_key_value("ami_leases").await.unwrap();
        kv.put("pbx1", "held fake inst".into()).await.unwrap();
    });
    // That process takes the forwarded requests and never answers them (an action that
    // runs long), so the bridge waits on each for its whole time.
    let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = {
        let (url, forwarded, stop) = (url.clone(), forwarded.clone(), stop.clone());
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            block(async move {
                use futures_util::StreamExt;
                let nc = async_nats::connect(&url).await.unwrap();
                let mut sub = nc.subscribe("ami.bridge.fake_inst.action").await.unwrap();
                nc.flush().await.unwrap();
                ready_tx.send(()).unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(Some(_)) =
                        tokio::time::timeout(Duration::from_millis(50), sub.next()).await
                    {
                        forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        });
        ready.recv().unwrap();
        t
    };
    const N: usize = 48;
    let bridge = TestBridge::start(
        BridgeConfig::new(
            url.clone(),
            vec![spec("pbx1", &sim(), login().build().unwrap())],
        )
        .lease_ttl(Duration::from_secs(60))
        .max_actions_in_flight(N),
    );
    let body = padded_ping();
    let count = || forwarded.load(std::sync::atomic::Ordering::Relaxed);
    send(&url, &body, 1);
    wait_for(
        Duration::from_secs(10),
        "the first request forwarded",
        || count() == 1,
    );
    std::thread::sleep(Duration::from_millis(300));
    let base = rss_mib();
    send(&url, &body, N - 1);
    wait_for(Duration::from_secs(20), "every request forwarded", || {
        count() == N
    });
    std::thread::sleep(Duration::from_millis(300));
    let held = rss_mib() - base;
    eprintln!("{N} padded requests waiting on the holder: +{held:.1} MiB resident");
    assert!(bridge.serving().is_empty(), "the bridge took the lease");
    assert!(
        held < 16.0,
        "{N} forwarded requests hold {held:.1} MiB: their whole bodies, not their actions"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    holder.join().unwrap();
    bridge.kill();
}
