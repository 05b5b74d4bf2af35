//! The README loop on a current-thread runtime, where the driver task and the loop (the
//! future `block_on` runs) share the one thread.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::{ClientConfig, StreamItem};
use ami_sim::flood::Flood;
use ami_tokio::Events;
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
            let (got, dropped) = take_flood(&mut events, EVENTS).await;
            assert_eq!(dropped, 0, "{got} events received, {dropped} dropped");
        })
        .await
        .expect("200,000 events within 60 s");
        ami.close();
    });
}

/// The driver on a thread of its own, the loop on a multi-threaded runtime: every event of a
/// flood arrives, actions complete, and closing the session ends the driver's thread.
///
/// The driver holds its reads for a consumer that is behind only while it keeps taking
/// (`HOLD_READ`, 10 ms between takes): a loop thread descheduled longer than that, as on a
/// CI machine running other builds on its two cores, is a stalled consumer, and the drops
/// that follow are by design (counted). So a lossless flood is asked of one of three runs,
/// each on a fresh session; every run must account for every event and end its thread.
#[test]
fn a_session_run_on_its_own_thread_keeps_up_and_its_thread_ends_at_close() {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let (got, dropped) = flood_on_its_own_thread();
        runs.push((got, dropped));
        if dropped == 0 {
            return;
        }
    }
    panic!("every run lost events (received, dropped): {runs:?}");
}

/// One session of [`a_session_run_on_its_own_thread_keeps_up_and_its_thread_ends_at_close`]:
/// a Ping answered, a flood of 200,000 events read (received, reported lost), the driver's
/// thread gone after close.
fn flood_on_its_own_thread() -> (u64, u64) {
    const EVENTS: u64 = 200_000;
    let flood = Flood::start_sized(500).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    let before = threads();
    let taken = rt.block_on(async {
        let config = ClientConfig::builder("admin", "amp111")
            .ping_interval(Duration::from_secs(600))
            .build()
            .unwrap();
        let (ami, mut events) = ami_tokio::run_on_thread(config, flood.addr()).unwrap();
        tokio::time::timeout(Duration::from_secs(60), async {
            ami.wait_ready().await.unwrap();
            let pong = ami.send(ami_proto::Action::new("Ping")).await.unwrap();
            assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
            let taken = take_flood(&mut events, EVENTS).await;
            ami.close();
            while events.recv().await.is_some() {}
            taken
        })
        .await
        .expect("200,000 events within 60 s, then the end of the stream")
    });
    if before > 0 {
        // The driver's thread is gone once the stream has ended (give it a moment to exit).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while threads() > before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            threads() <= before,
            "{} threads, {before} before",
            threads()
        );
    }
    taken
}

/// Reads the flood's events until `n` have arrived or been reported lost: (received, lost).
async fn take_flood(events: &mut Events, n: u64) -> (u64, u64) {
    let (mut got, mut dropped) = (0u64, 0u64);
    while got + dropped < n {
        match events.recv().await {
            Some(StreamItem::Event(e)) if e.event() == Some("UserEvent") => got += 1,
            Some(StreamItem::Gap { dropped: k }) => dropped += k,
            Some(_) => {}
            None => panic!("the stream ended"),
        }
    }
    (got, dropped)
}
