//! Lines to stdout on a thread of their own, through a queue bounded in lines and in bytes,
//! so that a slow stdout never stops the session from reading (Asterisk drops a client that
//! does not read for 100 ms). When the queue is full an event is dropped and counted; the
//! count goes on stdout as a gap marker where the loss was (`{"type":"gap",...}`; with
//! several servers one per server, naming it, so each server's events add up) and on
//! stderr once per burst ([`Losses`]), as the adapters do for their own event queues. Markers
//! (session boundaries, the client's own gaps) are never dropped: they wait, in stream order
//! with the gaps, until stdout has room, and the events behind them wait with them (counted
//! as dropped), so that a script reading the lines can account for every event.
//!
//! Events are queued as the decoded [`Message`] and turned into JSON on the writer thread:
//! the queue is charged what each item keeps alive ([`Message::retained_bytes`], a line's
//! capacity), an event about to be dropped costs no formatting, and the session's thread
//! spends no time on JSON. An item stays charged until it is written (or gathered into the
//! next write, at most [`CHUNK`] bytes), so the bytes held are at most [`MAX_BYTES`], or one
//! item larger than that (a 15 MiB event) when nothing else is queued, plus the JSON of the
//! write under way.
//!
//! At exit the writer is given what is left of the command's grace; what it was handed and
//! could not write by then (a stdout nobody drains) is counted, events as not printed, said
//! on stderr with the other drops, so that a script can still account for every event.
//!
//! A stream that goes quiet writes nothing, so a reader that left (`ami listen | head -1`)
//! would be noticed only at the next event: while idle the writer looks each second whether
//! stdout's reader is gone (poll(2)), and ends as a closed pipe does.

use crate::losses::{Loss, Losses};
use crate::terminal::say;
use crate::{json, Failure, EXIT_OTHER};
use ami_proto::Message;
use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lines queued for stdout at most.
const MAX_LINES: usize = 4096;
/// Markers waiting for room at most (each a short line; a server that reconnects 500 times
/// while stdout is stalled is the only way to get there). Past it the oldest is not printed,
/// said on stderr.
const MAX_HELD_MARKERS: usize = 1024;
/// Bytes queued for stdout at most: 8 MiB, some 10,000 typical events, so a reader that
/// pauses for a moment loses nothing, while 256 KiB events cannot hold much memory here.
pub(crate) const MAX_BYTES: usize = 8 << 20;

/// One line of output.
#[derive(Debug)]
pub(crate) enum Line {
    /// Already written out (a session boundary).
    Text(String),
    /// A message, written as JSON ([`json::message`]), with `"server"` first when several
    /// servers are merged.
    Message {
        message: Message,
        server: Option<String>,
    },
}

impl Line {
    /// The heap bytes this line keeps alive while queued.
    fn cost(&self) -> usize {
        match self {
            Line::Text(t) => t.capacity(),
            Line::Message { message, server } => {
                message.retained_bytes() + server.as_ref().map_or(0, String::capacity)
            }
        }
    }

    /// The line's text, and for an event the server it came from (`Some(None)`: the one
    /// server), for the count of what was written.
    fn render(self) -> std::io::Result<(String, Option<Option<String>>)> {
        let json = |m: &Message| json::message(m).map_err(|f| std::io::Error::other(f.reason));
        Ok(match self {
            Line::Text(t) => (t, None),
            Line::Message {
                message,
                server: None,
            } => (json(&message)?, Some(None)),
            Line::Message {
                message,
                server: Some(server),
            } => (
                json::with_server(&json(&message)?, &server),
                Some(Some(server)),
            ),
        })
    }
}

/// Events counted by server (`None`: the one server), in the order each first came.
#[derive(Debug, Default)]
struct ByServer(Vec<(Option<String>, u64)>);

impl ByServer {
    /// Adds `n` to the count of `server`.
    fn add(&mut self, server: &Option<String>, n: u64) {
        match self.0.iter_mut().find(|(s, _)| s == server) {
            Some((_, count)) => *count += n,
            None => self.0.push((server.clone(), n)),
        }
    }

    /// Where `server` is counted (added with 0 if new).
    fn slot(&mut self, server: &Option<String>) -> usize {
        match self.0.iter().position(|(s, _)| s == server) {
            Some(i) => i,
            None => {
                self.0.push((server.clone(), 0));
                self.0.len() - 1
            }
        }
    }

    fn get(&self, server: &Option<String>) -> u64 {
        self.0
            .iter()
            .find(|(s, _)| s == server)
            .map_or(0, |(_, n)| *n)
    }
}

/// What the writer has written, whole lines handed to stdout, shared with the command's
/// thread: at exit, what was queued and not written is counted as not printed.
#[derive(Debug, Default)]
struct Tally {
    events: ByServer,
    markers: u64,
    /// A write is under way: its lines are neither written nor not yet.
    writing: bool,
    /// The command gave up on stdout: nothing more is written.
    stopped: bool,
}

fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|e| e.into_inner())
}

/// The most one write hands to stdout: a pipe takes a write of up to PIPE_BUF (4 KiB on
/// Linux) whole or not at all, so a writer stuck on a pipe nobody drains has handed over
/// whole lines only, and the lines it holds are known: counted as not printed at exit. A
/// line longer than this goes alone, in as many writes as it takes.
const CHUNK: usize = 4096;

/// Whole lines gathered into writes of at most [`CHUNK`] bytes, each write's lines counted
/// in the [`Tally`] once it is done.
struct Chunks<'a> {
    out: std::io::StdoutLock<'static>,
    buf: Vec<u8>,
    events: ByServer,
    markers: u64,
    tally: &'a Mutex<Tally>,
}

impl Chunks<'_> {
    fn push(&mut self, line: Line) -> std::io::Result<()> {
        let (text, event) = line.render()?;
        if !self.buf.is_empty() && self.buf.len() + text.len() + 1 > CHUNK {
            self.flush()?;
        }
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.push(b'\n');
        match event {
            Some(server) => self.events.add(&server, 1),
            None => self.markers += 1,
        }
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what is gathered, unless the command gave up on stdout.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        {
            let mut t = lock(self.tally);
            if t.stopped {
                return Err(std::io::Error::other("stdout given up"));
            }
            t.writing = true;
        }
        let written = self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush());
        let mut t = lock(self.tally);
        t.writing = false;
        if written.is_ok() {
            for (server, n) in self.events.0.drain(..) {
                t.events.add(&server, n);
            }
            t.markers += std::mem::take(&mut self.markers);
        }
        drop(t);
        self.buf.clear();
        self.events.0.clear();
        self.markers = 0;
        written
    }
}

/// The stdout writer of `listen`.
pub(crate) struct Printer {
    tx: Option<SyncSender<Line>>,
    /// Bytes charged for the lines queued and the one being written.
    queued: Arc<AtomicUsize>,
    /// What waits for room, in stream order: markers, and runs of events dropped (each
    /// printed as a gap marker where it was).
    held: VecDeque<Held>,
    /// Markers in `held`.
    held_markers: usize,
    /// The drops, said on stderr once per burst.
    losses: Losses,
    done: Receiver<std::io::Result<()>>,
    /// The writer's result has been taken from `done` (it ended: stdout closed or failed).
    ended: bool,
    thread: Option<JoinHandle<()>>,
    /// What the writer has written.
    tally: Arc<Mutex<Tally>>,
    /// Events queued for the writer, by server.
    sent: ByServer,
    /// Markers queued for the writer.
    sent_markers: u64,
}

/// How long the writer waits for a line before it looks whether stdout's reader is gone.
const READER_CHECK: Duration = Duration::from_secs(1);

fn write_all(
    rx: Receiver<Line>,
    queued: &AtomicUsize,
    tally: &Mutex<Tally>,
) -> std::io::Result<()> {
    let mut out = Chunks {
        out: std::io::stdout().lock(),
        buf: Vec::with_capacity(CHUNK),
        events: ByServer::default(),
        markers: 0,
        tally,
    };
    loop {
        let line = match rx.recv_timeout(READER_CHECK) {
            Ok(line) => line,
            // A quiet stream writes nothing, so a reader that left (`ami listen | head -1`)
            // would be noticed only at the next event: looked for while idle.
            Err(RecvTimeoutError::Timeout) if reader_gone(&out.out) => {
                return Err(ErrorKind::BrokenPipe.into())
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = Some(line);
        // Write what is queued in writes of whole lines: a few syscalls per batch, not one
        // per line.
        while let Some(line) = next {
            let cost = line.cost();
            out.push(line)?;
            // Released once gathered (and freed); what is gathered is at most a chunk, or
            // the one line being written.
            queued.fetch_sub(cost, Ordering::AcqRel);
            next = rx.try_recv().ok();
        }
        out.flush()?;
    }
    out.flush()
}

/// Whether the reader of a pipe (or socket, or terminal) on `out` is gone: poll(2) says
/// POLLERR for a pipe's write end once its last reader closed, POLLHUP for a socket or
/// terminal hung up. Never for a file, and `false` whenever poll cannot tell.
#[cfg(unix)]
pub(crate) fn reader_gone(out: &impl std::os::fd::AsFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(out, PollFlags::OUT)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0)
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}

#[cfg(not(unix))]
pub(crate) fn reader_gone<T>(_: &T) -> bool {
    false
}

impl Printer {
    pub(crate) fn start() -> Result<Printer, Failure> {
        let (tx, rx) = mpsc::sync_channel::<Line>(MAX_LINES);
        let (done_tx, done) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let tally = Arc::new(Mutex::new(Tally::default()));
        let t = tally.clone();
        let thread = std::thread::Builder::new()
            .name("ami-stdout".into())
            .spawn(move || {
                let _ = done_tx.send(write_all(rx, &q, &t));
            })
            .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the writer: {e}")))?;
        Ok(Printer {
            tx: Some(tx),
            queued,
            held: VecDeque::new(),
            held_markers: 0,
            losses: Losses::default(),
            done,
            ended: false,
            thread: Some(thread),
            tally,
            sent: ByServer::default(),
            sent_markers: 0,
        })
    }

    /// Queues one line. An event that finds no room is dropped (counted, and marked in
    /// the output where it was); a marker that finds none waits. Fails only when stdout
    /// failed; a closed pipe (`ami listen | head`) ends the command quietly.
    pub(crate) fn line(&mut self, mut line: Line) -> Result<Flow, Failure> {
        if self.tx.is_none() {
            return Ok(Flow::Stop);
        }
        if let Line::Text(t) = &mut line {
            t.shrink_to_fit();
        }
        if !self.flush_held() {
            return self.result().map(|()| Flow::Stop);
        }
        if !self.held.is_empty() {
            // Older lines still wait: this one goes behind them.
            self.hold(line);
            return Ok(Flow::Go);
        }
        match self.enqueue(line) {
            Sent::Queued => Ok(Flow::Go),
            Sent::Full(line) => {
                self.hold(line);
                Ok(Flow::Go)
            }
            Sent::Closed => self.result().map(|()| Flow::Stop),
        }
    }

    /// Keeps a line that found no room: a marker waits in order; an event is dropped,
    /// counted in the run of drops at the back.
    fn hold(&mut self, line: Line) {
        match line {
            Line::Text(text) => {
                if self.held_markers >= MAX_HELD_MARKERS {
                    if let Some(i) = self.held.iter().position(|h| matches!(h, Held::Marker(_))) {
                        // Said whole, so that what it told (a gap's count of events, a
                        // session lost) is not lost with it.
                        if let Some(Held::Marker(lost)) = self.held.remove(i) {
                            say!("ami: stdout too slow: this marker was not printed: {lost}");
                        }
                        self.held_markers -= 1;
                    }
                }
                self.held.push_back(Held::Marker(text));
                self.held_markers += 1;
            }
            Line::Message { server, .. } => match self.held.back_mut() {
                Some(Held::Dropped(run)) => match run.iter_mut().find(|(s, _)| *s == server) {
                    Some((_, n)) => *n += 1,
                    None => run.push((server, 1)),
                },
                _ => self.held.push_back(Held::Dropped(vec![(server, 1)])),
            },
        }
    }

    /// Queues what waits, oldest first, while there is room. False when stdout is gone.
    fn flush_held(&mut self) -> bool {
        loop {
            let line = match self.held.front() {
                None => return true,
                Some(Held::Marker(text)) => Line::Text(text.clone()),
                Some(Held::Dropped(run)) => match run.first() {
                    Some((server, n)) => Line::Text(gap_line(server.as_deref(), *n)),
                    None => {
                        self.held.pop_front();
                        continue;
                    }
                },
            };
            match self.enqueue(line) {
                Sent::Queued => {}
                Sent::Full(_) => return true,
                Sent::Closed => return false,
            }
            // Out: the marker, or the first server's count of the run.
            let done = match self.held.front_mut() {
                Some(Held::Marker(_)) => {
                    self.held_markers -= 1;
                    true
                }
                Some(Held::Dropped(run)) => {
                    if !run.is_empty() {
                        let (server, n) = run.remove(0);
                        let server = server.as_deref().unwrap_or("");
                        self.losses
                            .note(server, Loss::NotPrinted, n, Instant::now());
                    }
                    run.is_empty()
                }
                None => false,
            };
            if done {
                self.held.pop_front();
            }
        }
    }

    /// Queues `line` if the queue has room in lines and bytes.
    fn enqueue(&mut self, line: Line) -> Sent {
        let Some(tx) = &self.tx else {
            return Sent::Closed;
        };
        let cost = line.cost();
        // Over the cap only when nothing else is queued: one line larger than the whole cap
        // (a 15 MiB event) is still printed, alone.
        let held = self.queued.fetch_add(cost, Ordering::AcqRel);
        if !admits(held, cost) {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            return Sent::Full(line);
        }
        // Where the line is counted once queued (looked up now: the line moves).
        let slot = match &line {
            Line::Message { server, .. } => Some(self.sent.slot(server)),
            Line::Text(_) => None,
        };
        match tx.try_send(line) {
            Ok(()) => {
                match slot {
                    Some(i) => self.sent.0[i].1 += 1,
                    None => self.sent_markers += 1,
                }
                Sent::Queued
            }
            Err(TrySendError::Full(line)) => {
                self.queued.fetch_sub(cost, Ordering::AcqRel);
                Sent::Full(line)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(cost, Ordering::AcqRel);
                self.tx = None;
                Sent::Closed
            }
        }
    }

    /// The writer's end if it ended on its own (stdout closed or failed) while nothing was
    /// offered to it: a quiet stream's command looks after each wait. `None` while it writes
    /// on.
    pub(crate) fn ended_early(&mut self) -> Option<Result<(), Failure>> {
        if self.ended {
            return None;
        }
        let end = self.done.try_recv().ok()?;
        self.ended = true;
        self.tx = None;
        Some(stdout_end(&end))
    }

    /// The writer's end, once it ended: a closed pipe (`ami listen | head`) is a quiet end,
    /// any other error a failure. Waits at most `grace` for it; `None` if it is still
    /// writing then.
    fn ended(&mut self, grace: Duration) -> Option<Result<(), Failure>> {
        if self.ended {
            return Some(Ok(()));
        }
        let end = match self.done.recv_timeout(grace) {
            Ok(r) => r,
            // The writer is gone without a word (it cannot panic on its own input, but a
            // gone writer is not a stdout that does not drain either).
            Err(RecvTimeoutError::Disconnected) => Ok(()),
            Err(RecvTimeoutError::Timeout) => return None,
        };
        self.ended = true;
        Some(stdout_end(&end))
    }

    fn result(&mut self) -> Result<(), Failure> {
        self.ended(Duration::from_secs(1)).unwrap_or(Ok(()))
    }

    /// Writes what is queued, waiting until `until` at most for a stdout that does not drain
    /// (the command's end began a grace before: the Logoff and this share it). What could
    /// not be written then is counted: events as not printed, with the other stdout losses.
    pub(crate) fn finish(mut self, until: Instant) -> Result<(), Failure> {
        // What still waits goes out as the writer makes room, until then.
        while self.flush_held() && !self.held.is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        for h in std::mem::take(&mut self.held) {
            match h {
                Held::Dropped(run) => {
                    for (server, n) in run {
                        let server = server.as_deref().unwrap_or("");
                        self.losses
                            .note(server, Loss::NotPrinted, n, Instant::now());
                    }
                }
                Held::Marker(_) => {
                    say!("ami: a session or gap marker was not printed (stdout not draining)")
                }
            }
        }
        self.tx = None;
        let end = match self.ended(until.saturating_duration_since(Instant::now())) {
            Some(end) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                end
            }
            None => {
                self.count_unwritten();
                Ok(())
            }
        };
        self.losses.finish();
        end
    }

    /// Stops a writer stuck on a stdout that does not drain, and counts what it was handed
    /// and did not write: events as not printed (by server, as the other drops), markers
    /// said on stderr.
    fn count_unwritten(&mut self) {
        // A write under way may still finish (a stdout that drains, slowly): looked at
        // again for a moment, so that its lines are not counted as lost and printed both.
        let mut tries = 0;
        let (written, written_markers) = loop {
            let mut t = lock(&self.tally);
            t.stopped = true;
            if !t.writing || tries >= 10 {
                // Stopped stays set: the writer writes nothing more.
                break (std::mem::take(&mut t.events), t.markers);
            }
            drop(t);
            tries += 1;
            std::thread::sleep(Duration::from_millis(1));
        };
        let now = Instant::now();
        for (server, n) in &self.sent.0 {
            let lost = n.saturating_sub(written.get(server));
            if lost > 0 {
                let server = server.as_deref().unwrap_or("");
                self.losses.note(server, Loss::NotPrinted, lost, now);
            }
        }
        let markers = self.sent_markers.saturating_sub(written_markers);
        if markers > 0 {
            say!("ami: {markers} session or gap marker(s) not printed (stdout not draining)");
        }
    }
}

/// How writing to stdout ended, for the command: a closed pipe (`ami listen | head`) is how
/// a pipeline says "enough", a quiet end; any other error a failure.
pub(crate) fn stdout_end(end: &std::io::Result<()>) -> Result<(), Failure> {
    match end {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(Failure::new(
            EXIT_OTHER,
            format!("cannot write to stdout: {e}"),
        )),
        _ => Ok(()),
    }
}

/// Writes one line to stdout for a command that prints a few lines as it goes (`demo`,
/// `bench`): `Ok(false)` once stdout's reader has gone (`ami demo | head -1`), which ends
/// the command quietly, as a closed pipe ends every command ([`stdout_end`]); never the
/// panic of `println!`.
pub(crate) fn print_line(line: std::fmt::Arguments<'_>) -> Result<bool, Failure> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) => stdout_end(&Err(e)).map(|()| false),
    }
}

/// The gap marker for `dropped` events of `server` (`None`: the one server).
fn gap_line(server: Option<&str>, dropped: u64) -> String {
    match server {
        Some(server) => json::with_server(&json::gap(dropped), server),
        None => json::gap(dropped),
    }
}

/// Whether a line of `cost` bytes fits when `held` bytes are charged: within the cap, or
/// alone (one line larger than the whole cap still prints).
fn admits(held: usize, cost: usize) -> bool {
    held == 0 || held + cost <= MAX_BYTES
}

/// What became of a line offered to the queue.
enum Sent {
    Queued,
    /// No room in lines or bytes: the line, given back.
    Full(Line),
    /// The writer is gone (stdout closed or failed).
    Closed,
}

/// A line waiting for room in the queue.
enum Held {
    /// A run of events dropped here, counted by server (`None`: the one server) in the
    /// order of their first drop: printed as one gap marker per server, each naming its
    /// server when several are merged.
    Dropped(Vec<(Option<String>, u64)>),
    /// A marker, printed as it is.
    Marker(String),
}

/// Whether the command goes on after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Go,
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_event_is_charged_what_it_keeps_alive() {
        let mut d = ami_proto::Decoder::without_banner(ami_proto::DecoderLimits::default());
        let wire = format!("Event: Big\r\nPad: {}\r\n\r\n", "x".repeat(300_000));
        d.feed(wire.as_bytes());
        let Some(Ok(ami_proto::Frame::Message(m))) = d.decode() else {
            panic!("no message");
        };
        let kept = m.retained_bytes();
        assert!(kept >= wire.len());
        let line = Line::Message {
            message: m,
            server: Some("pbx1".into()),
        };
        assert_eq!(line.cost(), kept + 4);
        let mut text = String::with_capacity(1 << 20);
        text.push_str("{}");
        assert_eq!(Line::Text(text).cost(), 1 << 20, "capacity, not length");
    }

    #[test]
    fn the_byte_cap_admits_one_larger_line_only_alone() {
        assert!(admits(0, 15 << 20));
        assert!(!admits(1, 15 << 20));
        assert!(admits(MAX_BYTES - 100, 100));
        assert!(!admits(MAX_BYTES - 100, 101));
    }
}
