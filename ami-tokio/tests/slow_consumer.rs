//! A consumer slower than its server but still taking: reads wait for it (each take
//! restarts a 10 ms hold) at most `MAX_HOLD` in a row, then go on while it stays behind,
//! its queue dropping the oldest (counted). Reads held for as long as its backlog lasts
//! blocked Asterisk's writes to the session for hundreds of milliseconds, past Asterisk's
//! `writetimeout` (100 ms by default), which ends the session (stalled-consumer probe).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

use ami_proto::{ClientConfig, StreamItem};
use ami_sim::flood::Flood;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_behind_but_taking_does_not_keep_the_servers_writes_waiting() {
    // 60 KiB events: a batch the consumer takes holds a few, so it takes every few ms.
    let flood = Flood::start_sized(60 << 10).unwrap();
    let config = ClientConfig::builder("admin", "amp111").build().unwrap();
    let (ami, mut events) = ami_tokio::spawn(config, flood.addr());
    tokio::time::timeout(Duration::from_secs(10), ami.wait_ready())
        .await
        .expect("ready in time")
        .unwrap();
    let started = Instant::now();
    let mut delivered = 0u64;
    let mut gaps = 0u64;
    while started.elapsed() < Duration::from_millis(800) {
        match events.recv().await {
            Some(StreamItem::Event(_)) => delivered += 1,
            Some(StreamItem::Gap { dropped }) => gaps += dropped,
            Some(_) => {}
            None => panic!("the session ended"),
        }
        // 1 ms per event: far slower than the flood.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stats = ami.stats();
    println!(
        "slow consumer: {delivered} delivered, {} read, {} dropped, {gaps} in gap notices",
        stats.events_in, stats.events_dropped
    );
    // The socket was read on: far more came in than the consumer took, and what its queue
    // could not keep was dropped and counted (reads held for the consumer would have kept
    // nearly everything waiting in the server's socket instead).
    assert!(
        stats.events_in > 4 * delivered.max(1),
        "read {} for {delivered} delivered: reads waited for the consumer",
        stats.events_in
    );
    assert!(stats.events_dropped > 0, "{stats:?}");
    assert!(gaps <= stats.events_dropped, "{gaps} > {stats:?}");
    assert_eq!(stats.logins, 1, "the session stayed up: {stats:?}");
}

/// The fleet's reader takes up to 1,024 items a batch, so a slow one stops taking for more
/// than a hold and its servers are read on as for a stalled reader; this guards that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_reader_slower_than_its_server_loses_counted_events_not_the_session() {
    use ami_proto::fleet::FleetConfig;
    let flood = Flood::start_sized(60 << 10).unwrap();
    let config = ClientConfig::builder("admin", "amp111").build().unwrap();
    let (fleet, mut events) = ami_tokio::fleet::spawn_fleet(FleetConfig::default());
    fleet.add("flood", config, flood.addr()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), fleet.wait_ready("flood"))
        .await
        .expect("ready in time")
        .unwrap();
    let started = Instant::now();
    let mut delivered = 0u64;
    while started.elapsed() < Duration::from_millis(800) {
        match events.recv().await.map(|i| i.item) {
            Some(StreamItem::Event(_)) => delivered += 1,
            Some(_) => {}
            None => panic!("the fleet ended"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stats = fleet.client_stats("flood").unwrap();
    assert!(
        stats.events_in > 4 * delivered.max(1),
        "read {} for {delivered} delivered: reads waited for the reader",
        stats.events_in
    );
    assert!(stats.events_dropped > 0, "{stats:?}");
    assert_eq!(stats.logins, 1, "the session stayed up: {stats:?}");
}
