//! Events wait in the client's queue as slices of the read buffer (no copy, no allocation
//! per event on the reader's side) and leave it owning their bytes; a read that is not
//! dense with events has them copied out at once, so queued events never keep a read's
//! allocation alive for a few bytes (issue 15, within issue 9's memory law).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{ClientConfig, Queued, StreamItem};
use scripted::Harness;
use std::time::Instant;

fn ready() -> Harness {
    let mut h = Harness::new(
        ClientConfig::builder("admin", "x").seed(3).build().unwrap(),
        Instant::now(),
    );
    h.ready();
    h.take_all();
    assert!(matches!(
        h.client.poll_event(),
        Some(StreamItem::Ready { .. })
    ));
    h
}

fn events(from: usize, n: usize, pad: usize) -> Vec<u8> {
    (from..from + n)
        .flat_map(|i| {
            format!(
                "Event: UserEvent\r\nSeq: {i:06}\r\nPad: {}\r\n\r\n",
                "x".repeat(pad)
            )
            .into_bytes()
        })
        .collect()
}

fn seq(item: StreamItem) -> String {
    match item {
        StreamItem::Event(m) => m.get_str("Seq").unwrap().to_string(),
        other => panic!("not an event: {other:?}"),
    }
}

#[test]
fn a_flood_reads_into_a_few_reused_allocations_and_events_come_out_whole() {
    let mut h = ready();
    h.feed(&events(0, 100, 400));
    let one_read = h.client.stats().decoder_allocated;
    // The first read's events are still queued: the second read needs another allocation.
    h.feed(&events(100, 100, 400));
    let two_reads = h.client.stats().decoder_allocated;
    assert!(two_reads > one_read, "{two_reads} <= {one_read}");
    // Taking the events out copies them; once they are gone, their allocations are reused.
    let mut got = Vec::new();
    while let Some(q) = h.client.poll_queued() {
        got.push(seq(q.into_item()));
    }
    assert_eq!(got.len(), 200);
    assert_eq!(got[199], "000199");
    for round in 0..20 {
        h.feed(&events(200 + round * 100, 100, 400));
        while let Some(item) = h.client.poll_event() {
            seq(item);
        }
    }
    assert!(
        h.client.stats().decoder_allocated <= two_reads,
        "{} > {two_reads}: a new allocation per read",
        h.client.stats().decoder_allocated
    );
}

#[test]
fn a_read_with_few_events_among_other_input_copies_them_out_and_keeps_its_buffer() {
    let mut h = ready();
    let junk = |i: usize| {
        format!(
            "Response: Success\r\nActionID: nobody-{i}\r\nPad: {}\r\n\r\n",
            "p".repeat(500)
        )
        .into_bytes()
    };
    for round in 0..50 {
        // One small event and 30 KiB of responses nobody asked for: as a slice, the event
        // would keep the whole read's allocation alive, and the next read would need another.
        let mut read = events(round, 1, 10);
        (0..60).for_each(|i| read.extend(junk(i)));
        h.feed(&read);
        let allocated = h.client.stats().decoder_allocated;
        assert!(allocated < 64 << 10, "round {round}: {allocated} bytes");
    }
    let items: Vec<StreamItem> = std::iter::from_fn(|| h.client.poll_queued())
        .map(Queued::into_item)
        .collect();
    let seqs: Vec<String> = items
        .into_iter()
        .filter(|i| matches!(i, StreamItem::Event(_)))
        .map(seq)
        .collect();
    assert_eq!(seqs, (0..50).map(|i| format!("{i:06}")).collect::<Vec<_>>());
}
