//! Small hostile AMI servers on loopback, for adapter tests and measurements.
//!
//! Where [`TcpFront`](crate::tcp::TcpFront) is a well-behaved Asterisk with faults, a
//! [`HostileServer`] logs any user in and then misbehaves in one chosen way
//! ([`Hostile`]): floods of large events, events padded with messages the client must skip,
//! a padded event list, huge events, silence, a raw script, or a trickle of bytes. It records
//! every action the client wrote after login, with its arrival time, so a test can check what
//! reached the server and when. One thread per connection; binds 127.0.0.1 only.

use crate::out::Msg;
use ami_proto::{Decoder, DecoderLimits, Frame, Message};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The banner of Asterisk 22.
const BANNER: &[u8] = b"Asterisk Call Manager/11.0.0\r\n";
/// Most actions recorded; later ones are only counted.
const MAX_RECORDED: usize = 1_000_000;
/// How often blocked reads and the acceptor look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// How a [`HostileServer`] misbehaves after login.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Hostile {
    /// Events with `size` bytes of padding each, as fast as the client reads.
    BigEvents {
        /// Padding per event.
        size: usize,
    },
    /// Small events, each followed by a message of `pad` bytes that is neither event nor
    /// response (the client must skip it).
    PaddedEvents {
        /// Size of each skipped message.
        pad: usize,
    },
    /// Answers `CoreShowChannels` with `items` list items, each followed by a skipped
    /// message of `pad` bytes; other actions get `Success`.
    PaddedList {
        /// List items.
        items: u64,
        /// Size of the skipped message after each item.
        pad: usize,
    },
    /// `count` events of `size` bytes of padding, then quiet (actions get `Success`).
    Huge {
        /// Events sent.
        count: u64,
        /// Padding per event.
        size: usize,
    },
    /// Answers nothing after login; records every action.
    Silent,
    /// Writes these bytes after login, then answers every action with `Success`.
    Script(Vec<u8>),
    /// Writes these bytes right behind the login's answer and hangs up at once: the answer,
    /// the bytes and the end of the stream reach the client together.
    HangUp(Vec<u8>),
    /// Starts an event and never ends it: one more byte every `every`.
    Trickle {
        /// Time between bytes.
        every: Duration,
    },
}

/// One action the server received after login.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it was read.
    pub at: Instant,
    /// The action.
    pub action: Message,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    connections: AtomicUsize,
    received: Mutex<Vec<Received>>,
}

/// A hostile AMI server on `127.0.0.1`; stopped on drop.
#[derive(Debug)]
pub struct HostileServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl HostileServer {
    /// Binds `127.0.0.1:port` (0 for any) and starts serving `hostile`.
    pub fn start(hostile: Hostile, port: u16) -> io::Result<HostileServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("ami-sim-hostile".into())
                .spawn(move || accept(&listener, &shared, &hostile))?
        };
        Ok(HostileServer {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Actions received after login so far (the first million).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// How many actions named `name` (case-insensitive) were received after login.
    pub fn received_count(&self, name: &str) -> usize {
        lock(&self.shared.received)
            .iter()
            .filter(|r| {
                r.action
                    .action()
                    .is_some_and(|a| a.eq_ignore_ascii_case(name))
            })
            .count()
    }

    /// Stops accepting and tells connection threads to end. Also done on drop.
    pub fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Peak resident set size of this process in MiB (`VmHWM` in `/proc/self/status`; 0 where
/// that is not available), for the hostile-server measurement examples of the adapters.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The figures of an unread-events measurement: events in, queued (count and bytes),
/// dropped, and this process's peak RSS.
pub fn unread_summary(stats: &ami_proto::Stats) -> String {
    format!(
        "{} events in, {} queued now ({} bytes), {} dropped; peak RSS {:.1} MiB",
        stats.events_in,
        stats.event_queue_len,
        stats.event_queue_bytes,
        stats.events_dropped,
        peak_rss_mib()
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>, hostile: &Hostile) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let (shared, hostile) = (Arc::clone(shared), hostile.clone());
                let _ = std::thread::Builder::new()
                    .name("ami-sim-hostile-conn".into())
                    .spawn(move || {
                        let _ = serve(stream, &shared, &hostile);
                    });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// One `Key: Value` message with its blank line.
pub fn message(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .fold(Msg::default(), |m, (k, v)| m.field(k, v))
        .end()
}

/// Longest padding line: large events stay legal (within the default line and field limits).
const PAD_LINE: usize = 64 << 10;

/// An event with a `Seq` and `pad` bytes of padding, in `Pad:` lines of at most 64 KiB.
pub fn padded_event(name: &str, seq: u64, pad: usize) -> Vec<u8> {
    let line = "p".repeat(pad.clamp(0, PAD_LINE));
    let mut fields = vec![("Event", name), ("Privilege", "call,all")];
    let seq = seq.to_string();
    fields.push(("Seq", &seq));
    let mut left = pad;
    loop {
        let n = left.min(PAD_LINE);
        fields.push(("Pad", &line[..n]));
        left -= n;
        if left == 0 {
            break;
        }
    }
    message(&fields)
}

/// A message of about `size` bytes that is neither event nor response.
pub fn junk(size: usize) -> Vec<u8> {
    message(&[("Junk", "skip me"), ("Pad", &"j".repeat(size))])
}

/// An event `A` (Seq 0), a message to skip, a legacy `Response: Follows` that never ends,
/// then `events` events `After` (Seq 1 to `events`): what a client must report (the skip and
/// the broken output, in order) and survive (every later event delivered).
pub fn broken_follows_script(events: u64) -> Vec<u8> {
    let mut script = padded_event("A", 0, 0);
    script.extend(junk(100));
    script.extend_from_slice(
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: x-1\r\nSystem uptime: 1 hour\n\n",
    );
    for i in 1..=events {
        script.extend(padded_event("After", i, 0));
    }
    script
}

struct Reader {
    stream: TcpStream,
    decoder: Decoder,
    shared: Arc<Shared>,
}

impl Reader {
    /// The next batch of actions; `None` at EOF, on error or when stopped.
    fn actions(&mut self) -> Option<Vec<Message>> {
        let mut buf = [0u8; 16 << 10];
        let n = loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return None;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => break n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        };
        let at = Instant::now();
        let mut out = Vec::new();
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let k = self.decoder.feed(rest);
            rest = &rest[k..];
            while let Some(frame) = self.decoder.decode() {
                if let Ok(Frame::Message(m)) = frame {
                    out.push(m);
                }
            }
        }
        let mut log = lock(&self.shared.received);
        for m in &out {
            if log.len() < MAX_RECORDED && !is_login(m) {
                log.push(Received {
                    at,
                    action: m.clone(),
                });
            }
        }
        Some(out)
    }
}

fn is_login(m: &Message) -> bool {
    m.action().is_some_and(|a| a.eq_ignore_ascii_case("Login"))
}

fn reply(action: &Message) -> Vec<u8> {
    let id = action.action_id().unwrap_or("");
    if action
        .action()
        .is_some_and(|a| a.eq_ignore_ascii_case("Logoff"))
    {
        return message(&[("Response", "Goodbye"), ("ActionID", id)]);
    }
    message(&[("Response", "Success"), ("ActionID", id), ("Ping", "Pong")])
}

fn serve(mut stream: TcpStream, shared: &Arc<Shared>, hostile: &Hostile) -> io::Result<()> {
    stream.set_read_timeout(Some(POLL))?;
    stream.write_all(BANNER)?;
    let mut reader = Reader {
        stream: stream.try_clone()?,
        decoder: Decoder::without_banner(DecoderLimits::default()),
        shared: Arc::clone(shared),
    };
    // Log in whoever asks.
    while let Some(actions) = reader.actions() {
        if let Some(login) = actions.iter().find(|a| is_login(a)) {
            let id = login.action_id().unwrap_or("");
            stream.write_all(&message(&[
                ("Response", "Success"),
                ("ActionID", id),
                ("Message", "Authentication accepted"),
            ]))?;
            break;
        }
    }
    let stopped = || shared.stop.load(Ordering::SeqCst);
    match hostile {
        Hostile::HangUp(bytes) => {
            stream.write_all(bytes)?;
            // Both handles of the socket go when this returns: the connection closes.
            drop(reader);
        }
        Hostile::Silent => while reader.actions().is_some() {},
        Hostile::PaddedList { items, pad } => {
            let junk = junk(*pad);
            while let Some(actions) = reader.actions() {
                for a in actions {
                    if !a
                        .action()
                        .is_some_and(|n| n.eq_ignore_ascii_case("CoreShowChannels"))
                    {
                        stream.write_all(&reply(&a))?;
                        continue;
                    }
                    let id = a.action_id().unwrap_or("");
                    stream.write_all(&message(&[
                        ("Response", "Success"),
                        ("ActionID", id),
                        ("EventList", "start"),
                        ("Message", "Channels will follow"),
                    ]))?;
                    for i in 0..*items {
                        let channel = format!("PJSIP/{i}-00000001");
                        stream.write_all(&message(&[
                            ("Event", "CoreShowChannel"),
                            ("ActionID", id),
                            ("Channel", &channel),
                            ("ChannelState", "6"),
                            ("ChannelStateDesc", "Up"),
                            ("CallerIDNum", "1000"),
                            ("Context", "from-internal"),
                            ("Application", "Dial"),
                            ("Duration", "00:01:00"),
                        ]))?;
                        stream.write_all(&junk)?;
                    }
                    stream.write_all(&message(&[
                        ("Event", "CoreShowChannelsComplete"),
                        ("ActionID", id),
                        ("EventList", "Complete"),
                        ("ListItems", &items.to_string()),
                    ]))?;
                }
            }
        }
        other => {
            // Answer actions on a second thread; this one writes the scenario.
            let answer = std::thread::spawn(move || {
                while let Some(actions) = reader.actions() {
                    for a in actions {
                        if reader.stream.write_all(&reply(&a)).is_err() {
                            return;
                        }
                    }
                }
            });
            let r = write_scenario(&mut stream, other, &stopped);
            let _ = answer.join();
            r?;
        }
    }
    Ok(())
}

fn write_scenario(
    stream: &mut TcpStream,
    hostile: &Hostile,
    stopped: &dyn Fn() -> bool,
) -> io::Result<()> {
    match hostile {
        Hostile::BigEvents { size } => {
            let mut seq = 0;
            while !stopped() {
                stream.write_all(&padded_event("Big", seq, *size))?;
                seq += 1;
            }
        }
        Hostile::PaddedEvents { pad } => {
            let junk = junk(*pad);
            let mut seq = 0;
            while !stopped() {
                stream.write_all(&padded_event("Small", seq, 0))?;
                stream.write_all(&junk)?;
                seq += 1;
            }
        }
        Hostile::Huge { count, size } => {
            for seq in 0..*count {
                stream.write_all(&padded_event("Huge", seq, *size))?;
            }
        }
        Hostile::Script(bytes) => stream.write_all(bytes)?,
        Hostile::Trickle { every } => {
            stream.write_all(b"Event: Slow\r\nData: ")?;
            while !stopped() {
                std::thread::sleep(*every);
                stream.write_all(b"x")?;
            }
        }
        Hostile::Silent | Hostile::PaddedList { .. } | Hostile::HangUp(_) => {}
    }
    Ok(())
}
