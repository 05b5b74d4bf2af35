//! A client's warnings about a consumer that falls behind are rate-limited: a consumer that
//! stalls for a moment every few thousand events overflows the event queue dozens of times
//! a second, and two records per overflow (full, room again) made a log of millions of
//! lines a day out of one slow consumer. The first overflow of a burst is logged in full,
//! the rest summarised; every drop is still counted (`Stats`, gap items).
//!
//! One test function: the logger is process-global.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/log_capture.rs"]
mod log_capture;
#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{ClientConfig, StreamItem};
use scripted::{event, Harness};
use std::time::{Duration, Instant};

fn queue_records() -> Vec<String> {
    log_capture::take(|_| true)
        .into_iter()
        .map(|r| r.message)
        .filter(|m| m.contains("event queue"))
        .collect()
}

/// One overflow: four events into a queue of two, then the consumer drains it. Returns the
/// events dropped, as the gap items say.
fn overflow_once(h: &mut Harness, seq: &mut u64) -> u64 {
    for _ in 0..4 {
        h.feed(&event("Newchannel", *seq));
        *seq += 1;
    }
    h.events()
        .iter()
        .map(|i| match i {
            StreamItem::Gap { dropped } => *dropped,
            _ => 0,
        })
        .sum()
}

#[test]
fn overflows_in_quick_succession_are_logged_as_one_burst_with_summaries() {
    log_capture::install(log::LevelFilter::Warn);
    let config = ClientConfig::builder("admin", "amp111")
        .name("pbx1")
        .event_queue_cap(2)
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut h = Harness::new(config, Instant::now());
    h.ready();
    queue_records();
    let mut seq = 0;
    let mut dropped = 0;

    // 1,200 overflows, one every 10 ms: 12 s of a consumer that keeps falling behind.
    for _ in 0..1200 {
        dropped += overflow_once(&mut h, &mut seq);
        h.advance(Duration::from_millis(10));
    }
    let burst = queue_records();
    assert_eq!(dropped, 2400, "every drop is still counted in the stream");
    assert_eq!(h.client.stats().events_dropped, 2400);
    // The first overflow in full (full, room again), then one summary at 10 s: not 2,400
    // records.
    assert_eq!(burst.len(), 3, "{burst:#?}");
    assert!(
        burst[0].starts_with("AMI pbx1: event queue full"),
        "{burst:?}"
    );
    assert!(
        burst[1].contains("room again; 2 events were dropped"),
        "{burst:?}"
    );
    assert!(
        burst[2].contains("overflowed 999 more times, 1998 more events dropped"),
        "{burst:?}"
    );

    // Quiet for 2 s: the burst is over. The next overflow says the rest of the last burst
    // and opens a new one, in full again.
    h.advance(Duration::from_secs(2));
    overflow_once(&mut h, &mut seq);
    // The next event that fits ends the episode ("room again").
    h.feed(&event("Newchannel", seq));
    let next = queue_records();
    assert_eq!(next.len(), 3, "{next:#?}");
    assert!(
        next[0].contains("overflowed 200 more times, 400 more events dropped"),
        "{next:?}"
    );
    assert!(next[1].contains("event queue full"), "{next:?}");
    assert!(next[2].contains("room again"), "{next:?}");
}
