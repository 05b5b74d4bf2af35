//! Measurement (not a test): the README loop against a loopback source that writes ~500-byte
//! events as fast as the socket takes them, side by side with a no-alloc frame splitter
//! reading the same kind of socket in the same run. Each mode runs in a child process, so
//! the peak RSS (VmHWM) is that consumer's alone.
//!
//! `cargo run --release -p ami-conformance --example stream_rate [EVENTS]`
//! (`AMI_STREAM_EVENT=fields` for events of twenty short fields instead of five lines)
//!
//! Modes: `raw` (frame splitter), `decoder` (the bare `ami_proto::Decoder` on the thread
//! that reads, no client, no queue, no second thread, each message in an allocation of its
//! own: what decoding alone costs, a ceiling for every client row), `split-handoff` (a
//! reader thread that only finds each read's last frame boundary and hands the complete
//! frames to the consumer's thread, which decodes them: no client, one copy, buffers
//! recycled; the hand-off between two threads with nothing else to do, which the README loop
//! also pays), `split-spin` (the same with a consumer that spins instead of sleeping while
//! the channel is empty: that hand-off without the consumer's wake-ups), `mio` (`ami-mio`'s loop: the whole client on one thread, events taken one at a
//! time), `tokio-recv` / `async-std-recv` (`recv()` per item, the README loop),
//! `tokio-1t-recv` (the same on a current-thread runtime, where the driver and
//! the loop share one thread), `tokio-thread-recv` (the loop on the multi-threaded runtime,
//! the driver on a thread of its own: `ami_tokio::run_on_thread`), `tokio-many` / `async-std-many` (`recv_many(4096)`), `tokio-stalled` (the
//! consumer reads nothing until the source is done: the queue's bound in memory).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_async::{Events, Handle};
use ami_conformance::threads::Snapshot;
use ami_proto::{ClientConfig, StreamItem};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const MODES: [&str; 12] = [
    "raw",
    "decoder",
    "split-handoff",
    "split-spin",
    "mio",
    "tokio-recv",
    "tokio-1t-recv",
    "tokio-thread-recv",
    "tokio-many",
    "async-std-recv",
    "async-std-many",
    "tokio-stalled",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    if let Some(mode) = args.iter().skip(1).find(|a| MODES.contains(&a.as_str())) {
        run(mode, n);
        return;
    }
    println!(
        "{n} events of {} bytes each, {} lines",
        event(0).len(),
        event(0).matches("\r\n").count() - 1
    );
    println!("| consumer | events/s | delivered | dropped | peak RSS | CPU by thread, s per s of the run (times preempted) |");
    println!("|---|---:|---:|---:|---:|---|");
    let exe = std::env::current_exe().unwrap();
    for mode in MODES {
        let out = std::process::Command::new(&exe)
            .arg(mode)
            .arg(n.to_string())
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// One ~500-byte event (the captures' average), `Seq` fixed-width so all are one size. By
/// default five lines, one of them 420 bytes of padding; with `AMI_STREAM_EVENT=fields`,
/// twenty fields of 10-40 bytes as in a channel event (the captures average 17 lines of
/// about 21 bytes), which costs a decoder per line far more than the splitter.
fn event(seq: usize) -> String {
    let mut head =
        format!("Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Bench\r\nSeq: {seq:08}\r\n");
    if std::env::var("AMI_STREAM_EVENT").is_ok_and(|v| v == "fields") {
        head.push_str(&format!(
            "Channel: PJSIP/trunk-provider-{seq:08x}\r\nChannelState: 6\r\n\
             ChannelStateDesc: Up\r\nCallerIDNum: 5551234567\r\nCallerIDName: Sales Desk\r\n\
             ConnectedLineNum: 1001\r\nConnectedLineName: Agent 1001\r\nLanguage: en\r\n\
             AccountCode: campaign-7\r\nContext: from-internal\r\nExten: 5551234567\r\n\
             Priority: 1\r\nUniqueid: 1733312345.{seq:08}\r\nLinkedid: 1733312345.{seq:08}\r\n\
             SystemName: pbx-east-1\r\n"
        ));
    }
    let pad = 500 - head.len() - "Pad: \r\n\r\n".len();
    format!("{head}Pad: {}\r\n\r\n", "x".repeat(pad))
}

/// The source: banner, a Login answered with success, then `n` events written as fast as
/// the socket takes them; then it waits for the client to hang up.
fn source(n: usize, wait_before_flood: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let source = std::thread::Builder::new().name("source".into());
    let _ = source.spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(b"Asterisk Call Manager/11.0.0\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let k = s.read(&mut buf).unwrap();
            assert!(k > 0, "client left before logging in");
            got.extend_from_slice(&buf[..k]);
        }
        let text = String::from_utf8_lossy(&got);
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("ActionID: "))
            .unwrap_or("1")
            .to_string();
        write!(
            s,
            "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
        )
        .unwrap();
        std::thread::sleep(wait_before_flood);
        let chunk: String = (0..1000).map(event).collect();
        let mut left = n;
        while left > 0 {
            let k = left.min(1000);
            if s.write_all(&chunk.as_bytes()[..k * 500]).is_err() {
                return;
            }
            left -= k;
        }
        // Keep the socket open until the client hangs up (what it sent is ignored).
        while s.read(&mut buf).map(|k| k > 0).unwrap_or(false) {}
    });
    addr
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn report(mode: &str, n: usize, delivered: usize, dropped: u64, took: Duration, threads: &str) {
    println!(
        "| {mode} | {:.0} k | {delivered} | {dropped} | {:.1} MiB | {threads} |",
        n as f64 / took.as_secs_f64() / 1e3,
        peak_rss_mib()
    );
}

fn config() -> ClientConfig {
    ClientConfig::builder("admin", "x")
        .ping_interval(Duration::from_secs(600))
        .build()
        .unwrap()
}

fn run(mode: &str, n: usize) {
    let stalled = mode.ends_with("stalled");
    let addr = source(
        n,
        if stalled {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        },
    );
    if mode == "raw" {
        return raw(addr, n);
    }
    if mode == "decoder" {
        return decoder(addr, n);
    }
    if mode == "mio" {
        return mio(addr, n);
    }
    if mode == "split-handoff" || mode == "split-spin" {
        return split_handoff(addr, n, mode);
    }
    if mode.starts_with("tokio") {
        let rt = if mode.starts_with("tokio-1t") {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        };
        rt.block_on(async {
            let (ami, events) = if mode == "tokio-thread-recv" {
                ami_tokio::run_on_thread(config(), addr).unwrap()
            } else {
                ami_tokio::spawn(config(), addr)
            };
            consume(mode, n, ami, events).await;
        });
    } else {
        let (ami, events) = ami_async_std::run_on_thread(config(), addr).unwrap();
        async_io::block_on(consume(mode, n, ami, events));
    }
}

/// Events received, events reported lost, and when the first arrived (with the threads'
/// use of CPU then).
#[derive(Default)]
struct Tally {
    got: usize,
    dropped: u64,
    start: Option<Instant>,
    threads: Snapshot,
}

impl Tally {
    fn count(&mut self, item: &StreamItem) {
        match item {
            StreamItem::Event(m) if m.event() == Some("UserEvent") => {
                if self.start.is_none() {
                    self.threads = Snapshot::now();
                    self.start = Some(Instant::now());
                }
                self.got += 1;
            }
            StreamItem::Gap { dropped } => self.dropped += dropped,
            _ => {}
        }
    }

    fn done(&self, n: usize) -> bool {
        self.got + self.dropped as usize >= n
    }
}

/// Reads until every event of the source was either received or reported lost.
async fn consume(mode: &str, n: usize, ami: Handle, mut events: Events) {
    ami.wait_ready().await.unwrap();
    let mut t = Tally::default();
    if mode.ends_with("stalled") {
        // Read nothing until the reader has taken in the whole flood.
        while ami.stats().events_in < n as u64 {
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
        let s = ami.stats();
        eprintln!(
            "stalled: queue {} events, {} bytes; decoder {} bytes allocated; RSS {:.1} MiB",
            s.event_queue_len,
            s.event_queue_bytes,
            s.decoder_allocated,
            peak_rss_mib()
        );
        while let Some(item) = events.try_recv() {
            t.count(&item);
        }
        println!(
            "| {mode} (reads after the flood) | - | {} | {} | {:.1} MiB | - |",
            t.got,
            t.dropped,
            peak_rss_mib()
        );
        return;
    }
    if mode.ends_with("many") {
        let mut batch = Vec::with_capacity(4096);
        while !t.done(n) {
            batch.clear();
            if events.recv_many(&mut batch, 4096).await == 0 {
                break;
            }
            batch.iter().for_each(|item| t.count(item));
        }
    } else {
        // The README loop.
        while !t.done(n) {
            let Some(item) = events.recv().await else {
                break;
            };
            t.count(&item);
        }
    }
    let took = t.start.map_or(Duration::from_nanos(1), |s| s.elapsed());
    report(
        mode,
        n,
        t.got,
        t.dropped,
        took,
        &t.threads.report_since(took),
    );
    ami.close();
}

/// The baseline: a raw socket, one 64 KiB buffer, frames counted by their blank line.
/// A plain socket to the source, logged in (the source answers any Login).
fn logged_in(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"Action: Login\r\nActionID: 1\r\nUsername: admin\r\nSecret: x\r\n\r\n")
        .unwrap();
    s
}

/// The decoder alone: reads as `raw` does, decodes every message (each gets its own
/// allocation, as an event has once the consumer holds it), counts the events.
fn decoder(addr: SocketAddr, n: usize) {
    use ami_proto::{Decoder, DecoderLimits, Frame};
    let mut s = logged_in(addr);
    let mut decoder = Decoder::new(DecoderLimits::default());
    let mut buf = vec![0u8; 64 << 10];
    let (mut got, mut start) = (0usize, None);
    while got < n {
        let k = s.read(&mut buf).unwrap();
        assert!(k > 0, "source closed early");
        start.get_or_insert_with(|| (Instant::now(), Snapshot::now()));
        let mut rest = &buf[..k];
        while !rest.is_empty() {
            rest = &rest[decoder.feed(rest)..];
            while let Some(frame) = decoder.decode() {
                if let Frame::Message(m) = frame.unwrap() {
                    got += usize::from(m.event() == Some("UserEvent"));
                }
            }
        }
    }
    let (t0, before) = start.unwrap();
    let took = t0.elapsed();
    report("decoder", n, got, 0, took, &before.report_since(took));
}

/// The whole client on one thread: `ami-mio`'s loop, events taken one at a time.
fn mio(addr: SocketAddr, n: usize) {
    let mut driver = ami_mio::MioDriver::new().unwrap();
    let conn = driver.add(Instant::now(), config(), addr).unwrap();
    let mut t = Tally::default();
    while !t.done(n) {
        let report = driver.step(Instant::now()).unwrap();
        if report.events.contains(&conn) {
            while let Some(item) = driver.poll_event(conn) {
                t.count(&item);
            }
        }
        driver.wait(Some(Duration::from_millis(100))).unwrap();
    }
    let took = t.start.map_or(Duration::from_nanos(1), |s| s.elapsed());
    report(
        "mio",
        n,
        t.got,
        t.dropped,
        took,
        &t.threads.report_since(took),
    );
}

/// The floor of any design that reads on one thread and decodes on another, without a
/// client: the reader only finds the last frame boundary of each read and hands the complete
/// frames over (one copy, buffers recycled, a bounded channel); the consumer decodes them.
///
/// `split-spin`: the same, but the consumer never sleeps while the reader is behind: it
/// polls the channel (up to ~100,000 spins) before it blocks. A hand-off with no wake-up
/// latency on the consumer's side, the best case of that design on this machine.
fn split_handoff(addr: SocketAddr, n: usize, mode: &str) {
    let spins: u32 = if mode == "split-spin" { 100_000 } else { 0 };
    use ami_proto::{Decoder, DecoderLimits, Frame};
    use std::sync::mpsc;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(64);
    let (give_back, given_back) = mpsc::channel::<Vec<u8>>();
    let mut s = logged_in(addr);
    let reader = std::thread::Builder::new().name("reader".into());
    let _ = reader.spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        // The start of a frame that the last read cut off.
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let k = match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(k) => k,
            };
            let Some(last) = memchr::memmem::rfind(&buf[..k], b"\r\n\r\n") else {
                carry.extend_from_slice(&buf[..k]);
                continue;
            };
            let end = last + 4;
            let mut chunk = given_back
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(96 << 10));
            chunk.clear();
            chunk.extend_from_slice(&carry);
            chunk.extend_from_slice(&buf[..end]);
            carry.clear();
            carry.extend_from_slice(&buf[end..k]);
            if tx.send(chunk).is_err() {
                return;
            }
        }
    });
    let mut decoder = Decoder::new(DecoderLimits::default());
    let (mut got, mut start) = (0usize, None);
    while got < n {
        let mut tried = 0;
        let chunk = loop {
            match rx.try_recv() {
                Ok(chunk) => break chunk,
                Err(mpsc::TryRecvError::Empty) if tried < spins => {
                    tried += 1;
                    std::hint::spin_loop();
                }
                Err(_) => break rx.recv().unwrap(),
            }
        };
        start.get_or_insert_with(|| (Instant::now(), Snapshot::now()));
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            rest = &rest[decoder.feed(rest)..];
            while let Some(frame) = decoder.decode() {
                if let Frame::Message(m) = frame.unwrap() {
                    got += usize::from(m.event() == Some("UserEvent"));
                }
            }
        }
        let _ = give_back.send(chunk);
    }
    let (t0, before) = start.unwrap();
    let took = t0.elapsed();
    report(mode, n, got, 0, took, &before.report_since(took));
}

fn raw(addr: SocketAddr, n: usize) {
    let mut s = logged_in(addr);
    let mut buf = vec![0u8; 64 << 10];
    let finder = memchr::memmem::Finder::new(b"\r\n\r\n");
    // Frames seen (the login response is the first), and the tail of the last read so a
    // separator split across two reads is still found.
    let (mut frames, mut carry) = (0usize, [0u8; 3]);
    let mut start = None;
    let mut before = Snapshot::default();
    while frames < n + 1 {
        let k = s.read(&mut buf[3..]).unwrap();
        assert!(k > 0, "source closed early");
        if start.is_none() {
            before = Snapshot::now();
            start = Some(Instant::now());
        }
        buf[..3].copy_from_slice(&carry);
        frames += finder.find_iter(&buf[..3 + k]).count();
        carry.copy_from_slice(&buf[k..k + 3]);
    }
    let took = start.map_or(Duration::from_nanos(1), |t: Instant| t.elapsed());
    report("raw", n, n, 0, took, &before.report_since(took));
}
