//! Events wait in the client's queue as slices of the read buffer (no copy, no allocation
//! per event on the reader's side) and leave it owning their bytes; a read that is not
//! dense with events has them copied out at once, so queued events never keep a read's
//! allocation alive for a few bytes (issue 15, within issue 9's memory law).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{
    ClientConfig, EventCopy, OverflowPolicy, Queued, StreamItem, READ_AHEAD_BYTES,
    READ_AHEAD_EVENTS,
};
use scripted::Harness;
use std::time::Instant;

fn ready() -> Harness {
    ready_with(ClientConfig::builder("admin", "x").seed(3).build().unwrap())
}

fn ready_with(config: ClientConfig) -> Harness {
    let mut h = Harness::new(config, Instant::now());
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
fn a_flood_into_a_full_queue_that_drops_its_oldest_still_reads_into_shared_allocations() {
    // Every event of the flood is queued, each in the place of an older one: the read is
    // as dense with queued events as any, so they stay slices (no copy per event).
    let config = ClientConfig::builder("admin", "x")
        .seed(3)
        .event_queue_cap(50)
        .overflow(OverflowPolicy::DropOldest)
        .build()
        .unwrap();
    let mut h = ready_with(config);
    h.feed(&events(0, 50, 400));
    h.feed(&events(50, 100, 400));
    let one_read = h.client.stats().decoder_allocated;
    // That read's events are still queued, as slices: the next read needs another allocation.
    h.feed(&events(150, 100, 400));
    let two_reads = h.client.stats().decoder_allocated;
    assert!(two_reads > one_read, "{two_reads} <= {one_read}");
    assert!(h.client.stats().events_dropped >= 150);
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

#[test]
fn events_copied_on_decode_leave_the_read_buffer_free_while_they_wait() {
    let config = ClientConfig::builder("admin", "x")
        .seed(3)
        .event_copy(EventCopy::OnDecode)
        .build()
        .unwrap();
    let mut h = ready_with(config);
    h.feed(&events(0, 100, 400));
    let one_read = h.client.stats().decoder_allocated;
    // Nothing queued shares the buffer, so every later read reuses it while all the
    // events wait (with `OnTake` each of these reads needed an allocation of its own).
    for round in 1..20 {
        h.feed(&events(round * 100, 100, 400));
        assert_eq!(h.client.stats().decoder_allocated, one_read, "read {round}");
    }
    let mut got = Vec::new();
    while let Some(q) = h.client.poll_queued() {
        got.push(seq(q.into_item()));
    }
    assert_eq!(got.len(), 2000);
    assert_eq!(got[1999], "001999");
    // Each queued event was counted at its own size, as with `OnTake`.
    assert_eq!(h.client.stats().event_queue_bytes, 0);
}

#[test]
fn an_adapters_preferred_event_copy_never_overrides_the_applications() {
    let default = ClientConfig::builder("admin", "x").build().unwrap();
    assert_eq!(default.event_copy(), EventCopy::OnTake);
    let preferred = default.prefer_event_copy(EventCopy::OnDecode);
    assert_eq!(preferred.event_copy(), EventCopy::OnDecode);
    let chosen = ClientConfig::builder("admin", "x")
        .event_copy(EventCopy::OnTake)
        .build()
        .unwrap()
        .prefer_event_copy(EventCopy::OnDecode);
    assert_eq!(chosen.event_copy(), EventCopy::OnTake);
}

/// Feeds events padded by `pad` bytes, 64 per read, while the client wants reads; returns
/// how many it fed.
fn feed_while_wanted(h: &mut Harness, pad: usize) -> usize {
    let mut queued = 0;
    while h.client.wants_read() {
        h.feed(&events(queued, 64, pad));
        queued += 64;
        assert!(queued < 64_000, "still wanted with {queued} events queued");
    }
    queued
}

/// The client wants reads until its queue holds `READ_AHEAD_BYTES` of events, far below half
/// its caps (then an adapter whose consumer runs apart may hold its next read, and the bytes
/// wait in the kernel instead), and again once the consumer has taken some out.
#[test]
fn reads_are_wanted_until_the_queue_holds_the_read_ahead() {
    let mut h = ready();
    let queued = feed_while_wanted(&mut h, 1000);
    assert!(
        !h.client.event_queue_half_full(),
        "the read-ahead, not the caps"
    );
    let bytes = h.client.events_queued_bytes();
    assert!(
        (READ_AHEAD_BYTES..READ_AHEAD_BYTES + 64 * 1100).contains(&bytes),
        "{bytes} bytes queued"
    );
    for _ in 0..queued / 4 {
        assert!(matches!(h.client.poll_event(), Some(StreamItem::Event(_))));
    }
    assert!(h.client.wants_read());
}

/// Small events reach `READ_AHEAD_EVENTS` long before the read-ahead's bytes.
#[test]
fn reads_of_small_events_are_wanted_until_the_queue_holds_the_read_ahead_in_events() {
    let mut h = ready();
    feed_while_wanted(&mut h, 0);
    assert_eq!(h.client.events_queued(), READ_AHEAD_EVENTS);
    assert!(h.client.events_queued_bytes() < READ_AHEAD_BYTES / 4);
    assert!(matches!(h.client.poll_event(), Some(StreamItem::Event(_))));
    assert!(h.client.wants_read());
}

#[test]
fn a_closed_event_stream_frees_the_queue_and_discards_events_counted_while_actions_go_on() {
    // A program that only sends actions drops its event stream (`let (ami, _) = spawn(..)`):
    // events must neither fill the queue (16 MiB by default) nor close a session whose
    // policy is to close on overflow, and every one is counted.
    let config = ClientConfig::builder("admin", "x")
        .seed(3)
        .event_queue_cap(8)
        .overflow(ami_proto::OverflowPolicy::CloseSession)
        .build()
        .unwrap();
    let mut h = ready_with(config);
    h.feed(&events(0, 5, 100));
    assert_eq!(h.client.events_queued(), 5);
    h.client.close_event_stream([]);
    assert_eq!(h.client.events_queued(), 0);
    assert_eq!(
        h.client.stats().event_queue_bytes,
        0,
        "the queued events are freed"
    );
    assert_eq!(h.client.stats().events_dropped, 5, "and counted");

    // Far more than the queue holds: no overflow, no disconnect, each one counted.
    h.feed(&events(5, 100, 100));
    assert!(h.client.is_ready(), "{:?}", h.log);
    let stats = h.client.stats();
    assert_eq!((stats.events_queued, stats.events_dropped), (5, 105));
    assert!(
        h.client.poll_event().is_none(),
        "nothing reaches a stream nobody reads"
    );

    // Actions still get their lists and their OriginateResponse, which are taken before the
    // stream.
    let list = h.send(ami_proto::Action::new("CoreShowChannels"));
    let m = h.take("CoreShowChannels");
    let id = scripted::id_of(&m).to_string();
    h.feed(&scripted::list_start(&id));
    h.feed(&scripted::list_item(&id, 1));
    h.feed(&scripted::list_complete(&id, 1));
    assert_eq!(h.outcome(&list).as_ref().unwrap().items().len(), 1);
    let originate = h.send(scripted::async_originate(5_000));
    let m = h.take("Originate");
    let id = scripted::id_of(&m).to_string();
    h.feed(&scripted::originate_queued(&id));
    h.feed(&scripted::originate_response(&id, true));
    assert!(h.outcome(&originate).is_ok());

    // A reconnect adds no markers either.
    h.eof();
    h.advance(std::time::Duration::from_secs(1));
    h.ready();
    h.feed(&events(105, 3, 10));
    assert!(h.client.poll_event().is_none());
    assert_eq!(h.client.stats().events_dropped, 108);
}

#[test]
fn the_event_queue_buffer_a_backlog_grew_is_counted_in_stats() {
    let mut h = ready();
    let before = h.client.stats().event_queue_allocated;
    // The consumer falls behind: a burst of 2,000 events waits in the queue.
    for read in events(0, 2000, 460).chunks(64 << 10) {
        h.feed(read);
    }
    let s = h.client.stats();
    assert_eq!(s.event_queue_len, 2000);
    assert!(before < 2000 * std::mem::size_of::<Queued>(), "{before}");
    assert!(
        s.event_queue_allocated >= 2000 * std::mem::size_of::<Queued>(),
        "{}",
        s.event_queue_allocated
    );
    // Taken: the buffer is kept for the next backlog (what a quiet fleet server holds).
    while let Some(item) = h.client.poll_event() {
        seq(item);
    }
    assert_eq!(
        h.client.stats().event_queue_allocated,
        s.event_queue_allocated
    );
}

/// Half the event queue's count cap says the consumer is behind, far below the read-ahead.
#[test]
fn a_queue_at_half_its_event_cap_is_half_full_and_wants_no_read() {
    let config = ClientConfig::builder("admin", "x")
        .seed(3)
        .event_queue_cap(8)
        .build()
        .unwrap();
    let mut h = ready_with(config);
    h.feed(&events(0, 3, 0));
    assert!(!h.client.event_queue_half_full());
    assert!(h.client.wants_read());
    h.feed(&events(3, 1, 0));
    assert!(h.client.event_queue_half_full());
    assert!(!h.client.wants_read());
}

/// A queue holding exactly `READ_AHEAD_BYTES` of events is at the read-ahead: no read is
/// wanted until the consumer takes one out.
#[test]
fn reads_are_not_wanted_once_the_queue_holds_exactly_the_read_ahead_in_bytes() {
    let queued_bytes = |pad: usize| {
        let mut h = ready();
        h.feed(&events(0, 1, pad));
        h.client.events_queued_bytes()
    };
    // An event's size grows with its padding, byte for byte: pad one to 1 KiB exactly.
    let base = queued_bytes(0);
    assert_eq!(queued_bytes(1), base + 1);
    let pad = 1024 - base;
    let mut h = ready();
    let n = READ_AHEAD_BYTES / 1024;
    for from in (0..n).step_by(64) {
        assert!(h.client.wants_read(), "{from} events queued");
        h.feed(&events(from, 64, pad));
    }
    assert_eq!(h.client.events_queued_bytes(), READ_AHEAD_BYTES);
    assert!(h.client.events_queued() < READ_AHEAD_EVENTS);
    assert!(!h.client.wants_read());
    assert!(matches!(h.client.poll_event(), Some(StreamItem::Event(_))));
    assert!(h.client.wants_read());
}

/// `has_stream_items` answers what `poll_event` would: true with an event queued, false once
/// it is taken.
#[test]
fn the_stream_has_items_exactly_while_an_event_waits_to_be_polled() {
    let mut h = ready();
    assert!(!h.client.has_stream_items());
    h.feed(&events(0, 1, 0));
    assert!(h.client.has_stream_items());
    assert_eq!(seq(h.client.poll_event().unwrap()), "000000");
    assert!(!h.client.has_stream_items());
    assert!(h.client.poll_event().is_none());
}

/// The batch takers return how many items they moved, which an adapter uses to count
/// what it hands out: exactly the items appended to `out`, for a whole queue handed over in
/// one move, a batch cut at its count, and one cut at its bytes.
#[test]
fn batch_takers_return_exactly_how_many_items_they_moved() {
    let mut h = ready();
    h.feed(&events(0, 10, 40));
    // Everything queued fits: the queue's buffer changes hands.
    let mut out = std::collections::VecDeque::new();
    assert_eq!(h.client.take_queued(&mut out, 64, usize::MAX), 10);
    assert_eq!(out.len(), 10);
    // Into a non-empty `out`, cut at the count: 4 more, appended.
    h.feed(&events(10, 10, 40));
    assert_eq!(h.client.take_queued(&mut out, 4, usize::MAX), 4);
    assert_eq!(out.len(), 14);
    // Cut at the bytes: the first event reaches the limit, so one.
    out.clear();
    assert_eq!(h.client.take_queued(&mut out, 64, 1), 1);
    assert_eq!(out.len(), 1);
    // Nothing queued: none.
    let mut rest = Vec::new();
    assert_eq!(h.client.poll_events(&mut rest, 64), 5);
    assert_eq!(h.client.poll_events(&mut rest, 64), 0);
    assert_eq!(rest.len(), 5);
    h.feed(&events(20, 3, 40));
    assert_eq!(h.client.poll_events(&mut rest, 2), 2);
    assert_eq!(rest.len(), 7);
    let seqs: Vec<String> = rest.into_iter().map(seq).collect();
    assert_eq!(
        seqs,
        ["000015", "000016", "000017", "000018", "000019", "000020", "000021"]
    );
    assert_eq!(h.client.take_queued(&mut out, 64, usize::MAX), 1);
}
