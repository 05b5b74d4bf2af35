//! Where the per-event time of the event stream goes, without sockets: stream_rate's
//! ~500-byte events fed to the decoder and to the core in 64 KiB reads, as the minimum of
//! interleaved runs.
//!
//! ```text
//! cargo run --release -p ami-benches --example stream_cost
//! ```
//!
//! Rows: the decoder alone (decode, drop); the core (`Client::handle_input`, `poll_event`,
//! drop); and the core with the items dropped on another thread, batch by batch, as an async
//! consumer does (the cost of freeing on another thread than the one that allocated).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // a measurement: the real clock

use ami_proto::{
    Client, ClientConfig, Decoder, DecoderLimits, Frame, Input, Output, Queued, StreamItem,
};
use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EVENTS: usize = 200_000;
const READ: usize = 64 << 10;

/// stream_rate's event: ~500 bytes, five fields.
fn event(seq: usize) -> String {
    let head =
        format!("Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Bench\r\nSeq: {seq:08}\r\n");
    let pad = 500 - head.len() - "Pad: \r\n\r\n".len();
    format!("{head}Pad: {}\r\n\r\n", "x".repeat(pad))
}

fn decoder_only(data: &[u8]) -> usize {
    let mut d = Decoder::without_banner(DecoderLimits::default());
    let mut n = 0;
    for chunk in data.chunks(READ) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let k = d.feed(rest);
            rest = &rest[k..];
            while let Some(f) = d.decode() {
                if let Ok(Frame::Message(m)) = f {
                    n += black_box(m).len();
                }
            }
        }
    }
    n
}

/// A client logged in against a scripted server, ready for events.
fn ready_client(now: Instant) -> Client {
    let config = ClientConfig::builder("admin", "x")
        .ping_interval(Duration::from_secs(600))
        .build()
        .unwrap();
    let mut c = Client::new(config, now);
    assert!(matches!(c.poll_output(), Output::Connect));
    c.handle_input(now, Input::Connected);
    c.handle_input(now, Input::Received(b"Asterisk Call Manager/11.0.0\r\n"));
    while !matches!(c.poll_output(), Output::Wait(_)) {}
    let sent = String::from_utf8_lossy(c.transmit()).to_string();
    let n = c.transmit().len();
    c.advance_transmit(n);
    let id = sent
        .lines()
        .find_map(|l| l.strip_prefix("ActionID: "))
        .unwrap()
        .to_string();
    let ok =
        format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n");
    c.handle_input(now, Input::Received(ok.as_bytes()));
    while !matches!(c.poll_output(), Output::Wait(_)) {}
    while c.poll_event().is_some() {}
    c
}

fn core_same_thread(data: &[u8]) -> usize {
    let now = Instant::now();
    let mut c = ready_client(now);
    let mut n = 0;
    for chunk in data.chunks(READ) {
        c.handle_input(now, Input::Received(chunk));
        while let Some(item) = c.poll_event() {
            n += usize::from(matches!(black_box(item), StreamItem::Event(_)));
        }
    }
    n
}

fn core_other_thread(data: &[u8]) -> usize {
    let now = Instant::now();
    let mut c = ready_client(now);
    let (tx, rx) = mpsc::sync_channel::<Vec<StreamItem>>(4);
    let consumer = std::thread::spawn(move || {
        let mut n = 0;
        for batch in rx {
            for item in batch {
                n += usize::from(matches!(black_box(item), StreamItem::Event(_)));
            }
        }
        n
    });
    for chunk in data.chunks(READ) {
        c.handle_input(now, Input::Received(chunk));
        let mut batch = Vec::with_capacity(256);
        c.poll_events(&mut batch, usize::MAX);
        tx.send(batch).unwrap();
    }
    drop(tx);
    consumer.join().unwrap()
}

/// As [`core_other_thread`], with the events copied out on the consumer's thread
/// (`poll_queued`, `Queued::into_item`), as `ami-async` does.
fn core_queued_other_thread(data: &[u8]) -> usize {
    let now = Instant::now();
    let mut c = ready_client(now);
    let (tx, rx) = mpsc::sync_channel::<Vec<Queued>>(4);
    let consumer = std::thread::spawn(move || {
        let mut n = 0;
        for batch in rx {
            for item in batch {
                n += usize::from(matches!(black_box(item.into_item()), StreamItem::Event(_)));
            }
        }
        n
    });
    for chunk in data.chunks(READ) {
        c.handle_input(now, Input::Received(chunk));
        let mut batch = Vec::with_capacity(256);
        while let Some(item) = c.poll_queued() {
            batch.push(item);
        }
        tx.send(batch).unwrap();
    }
    drop(tx);
    consumer.join().unwrap()
}

type Run<'a> = (&'a str, &'a dyn Fn(&[u8]) -> usize);

fn main() {
    let data: Vec<u8> = (0..EVENTS).flat_map(|i| event(i).into_bytes()).collect();
    let runs: [Run<'_>; 4] = [
        ("decoder: decode, drop", &decoder_only),
        ("core: handle_input, poll_event, drop", &core_same_thread),
        ("core, items dropped on another thread", &core_other_thread),
        (
            "core, poll_queued, into_item on another",
            &core_queued_other_thread,
        ),
    ];
    let mut best = [Duration::MAX; 4];
    // `stream_cost N` runs row N alone (for a profiler).
    let only: Option<usize> = std::env::args().nth(1).and_then(|a| a.parse().ok());
    for _ in 0..15 {
        for (i, (_, run)) in runs.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let t = Instant::now();
            black_box(run(black_box(&data)));
            best[i] = best[i].min(t.elapsed());
        }
    }
    for (i, (name, _)) in runs.iter().enumerate() {
        let ns = best[i].as_nanos() as f64 / EVENTS as f64;
        println!("{name:<40} {ns:>6.0} ns/event");
    }
}
