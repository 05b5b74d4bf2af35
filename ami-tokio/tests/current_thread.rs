//! The README loop on a current-thread runtime, where the driver task and the loop (the
//! future `block_on` runs) share the one thread.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::{ClientConfig, StreamItem};
use ami_sim::flood::Flood;
use std::time::Duration;

/// tokio polls the future given to `block_on` only between batches of task polls, so a
/// driver that kept reading while the loop was behind decoded events only for the queue to
/// drop them: this loop kept 3-9 % of a flood. The driver now holds its reads (briefly,
/// while the loop keeps taking) once the consumer is behind (`Client::wants_read`).
#[test]
fn the_readme_loop_on_a_current_thread_runtime_keeps_up_with_a_flood() {
    const EVENTS: u64 = 200_000;
    let flood = Flood::start_sized(500).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = ClientConfig::builder("admin", "amp111")
            .ping_interval(Duration::from_secs(600))
            .build()
            .unwrap();
        let (ami, mut events) = ami_tokio::spawn(config, flood.addr());
        tokio::time::timeout(Duration::from_secs(60), async {
            let (mut got, mut dropped) = (0u64, 0u64);
            while got + dropped < EVENTS {
                match events.recv().await {
                    Some(StreamItem::Event(e)) if e.event() == Some("UserEvent") => got += 1,
                    Some(StreamItem::Gap { dropped: n }) => dropped += n,
                    Some(_) => {}
                    None => panic!("the stream ended"),
                }
            }
            assert_eq!(dropped, 0, "{got} events received, {dropped} dropped");
        })
        .await
        .expect("200,000 events within 60 s");
        ami.close();
    });
}
