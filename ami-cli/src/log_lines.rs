//! The libraries' `log` records as stderr lines:
//! `ami: 2026-12-06T04:50:01.123Z WARN ami_nats::publish: ...`.
//!
//! Each line carries when it was logged (UTC, to the millisecond): `ami bridge` runs for
//! weeks, and "when did the lease move, when did NATS go" must be answerable from its stderr
//! alone, wherever it was captured (a file, a pipe, a supervisor without timestamps).
//! Without a logger every record of ami-proto, the adapters and ami-nats vanished, and
//! `ami bridge` has no other voice: a lease lost, a publish JetStream refused, NATS gone.
//! Records are logged from inside the drivers' steps, so writing one must never wait on
//! stderr (a pipe nobody drains would stall the session): each record is formatted on the
//! caller's thread and handed to a writer thread through a bounded queue, and a record the
//! full queue cannot take is counted and said once the writer catches up. Every line is
//! shown terminal-safe ([`crate::terminal::cell`]) and cut at [`MAX_LINE`] bytes, and
//! every secret the command was given (the servers' AMI secrets, NATS passwords and
//! tokens) is replaced by `***` wherever it appears, whatever the library put in the
//! record.

use crate::terminal;
use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer thread at most: with [`MAX_LINE`], at most 1 MiB held.
pub(crate) const QUEUE: usize = 256;
/// Bytes of one line at most (its end cut, marked `...`).
pub(crate) const MAX_LINE: usize = 4096;
/// How long the command waits at its end for the queued lines to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// `--log`/`AMI_LOG`: which records are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Level {
    /// None.
    Off,
    /// Errors only (the default, except for `bridge`).
    Error,
    /// Errors and warnings. Most of these the commands already say in their own words.
    Warn,
    /// Also sessions and leases coming and going (the default for `bridge`).
    Info,
    /// Also every action sent and finished, connects and resyncs.
    Debug,
    /// Everything.
    Trace,
}

impl Level {
    fn filter(self) -> LevelFilter {
        match self {
            Level::Off => LevelFilter::Off,
            Level::Error => LevelFilter::Error,
            Level::Warn => LevelFilter::Warn,
            Level::Info => LevelFilter::Info,
            Level::Debug => LevelFilter::Debug,
            Level::Trace => LevelFilter::Trace,
        }
    }
}

enum Item {
    Line(String),
    Flush(SyncSender<()>),
}

/// The installed logger.
struct LogLines {
    level: LevelFilter,
    /// Longest first, so that a secret containing another is replaced whole.
    secrets: Vec<String>,
    queue: SyncSender<Item>,
    dropped: Arc<AtomicU64>,
}

/// Installs the logger at `level`, hiding `secrets`. Logging stays off if the writer
/// thread cannot start (said once on stderr).
pub(crate) fn install(level: Level, secrets: impl IntoIterator<Item = String>) {
    if level == Level::Off {
        return;
    }
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let behind = dropped.clone();
    let started = std::thread::Builder::new()
        .name("ami-log".into())
        .spawn(move || write_lines(&rx, &behind, &mut std::io::stderr()));
    if let Err(e) = started {
        terminal::say!("ami: log lines off: cannot start their writer thread: {e}");
        return;
    }
    let logger = LogLines {
        level: level.filter(),
        secrets: secret_list(secrets),
        queue: tx,
        dropped,
    };
    // Once per process: the logger lives as long as the program.
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(level.filter());
    }
}

fn secret_list(secrets: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v.dedup();
    v
}

/// Waits (at most [`FLUSH_WAIT`]) until the lines logged so far are written.
pub(crate) fn flush() {
    log::logger().flush();
}

/// The writer thread: one write per line; after each, the count of lines dropped meanwhile.
fn write_lines(rx: &Receiver<Item>, dropped: &AtomicU64, out: &mut dyn Write) {
    while let Ok(item) = rx.recv() {
        match item {
            Item::Line(line) => {
                let _ = out.write_all(line.as_bytes());
            }
            Item::Flush(done) => {
                let _ = done.try_send(());
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                out,
                "ami: {} {lost} log line(s) dropped: stderr was not taking them fast enough",
                utc(SystemTime::now())
            );
        }
    }
}

/// `2026-12-06T04:50:01.123Z`: RFC 3339, UTC, milliseconds.
fn utc(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

impl LogLines {
    fn line(&self, record: &Record<'_>, at: SystemTime) -> String {
        let mut text = record.args().to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        let mut line = format!(
            "ami: {} {} {}: {}",
            utc(at),
            record.level(),
            record.target(),
            terminal::cell(&text)
        );
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE - 3;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str("...");
        }
        line.push('\n');
        line
    }
}

impl Log for LogLines {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match self
            .queue
            .try_send(Item::Line(self.line(record, SystemTime::now())))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.queue.try_send(Item::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(FLUSH_WAIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logger(secrets: &[&str]) -> (LogLines, Receiver<Item>, Arc<AtomicU64>) {
        let (tx, rx) = mpsc::sync_channel(2);
        let dropped = Arc::new(AtomicU64::new(0));
        let l = LogLines {
            level: LevelFilter::Info,
            secrets: secret_list(secrets.iter().map(|s| s.to_string())),
            queue: tx,
            dropped: dropped.clone(),
        };
        (l, rx, dropped)
    }

    fn log(l: &LogLines, level: log::Level, text: &str) {
        l.log(
            &Record::builder()
                .level(level)
                .target("ami_nats::lease")
                .args(format_args!("{text}"))
                .build(),
        );
    }

    /// `line` with its timestamp checked and taken out.
    fn untimed(line: &str) -> String {
        let (stamp, rest) = line
            .strip_prefix("ami: ")
            .and_then(|l| l.split_once(' '))
            .unwrap_or_else(|| panic!("no timestamp: {line}"));
        let b = stamp.as_bytes();
        assert!(
            b.len() == 24 && b[10] == b'T' && b[19] == b'.' && stamp.ends_with('Z'),
            "{line}"
        );
        format!("ami: {rest}")
    }

    fn lines(rx: &Receiver<Item>) -> Vec<String> {
        rx.try_iter()
            .filter_map(|i| match i {
                Item::Line(l) => Some(untimed(&l)),
                Item::Flush(_) => None,
            })
            .collect()
    }

    #[test]
    fn each_line_says_when_in_utc_to_the_millisecond() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_531_841_880);
        assert_eq!(utc(at), "2026-12-06T04:37:21.880Z");
        assert_eq!(utc(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let (l, _, _) = logger(&[]);
        let record = Record::builder()
            .level(log::Level::Info)
            .target("ami_nats::bridge")
            .args(format_args!("pbx1: lease acquired"))
            .build();
        assert_eq!(
            l.line(&record, at),
            "ami: 2026-12-06T04:37:21.880Z INFO ami_nats::bridge: pbx1: lease acquired\n"
        );
    }

    #[test]
    fn a_record_becomes_one_line_with_its_level_and_target() {
        let (l, rx, _) = logger(&[]);
        log(
            &l,
            log::Level::Warn,
            "lease of server #0 not renewed in time",
        );
        log(&l, log::Level::Debug, "below the level: not shown");
        assert_eq!(
            lines(&rx),
            ["ami: WARN ami_nats::lease: lease of server #0 not renewed in time\n"]
        );
    }

    #[test]
    fn every_secret_given_is_hidden_wherever_a_record_holds_it() {
        let (l, rx, _) = logger(&["amp111", "amp1", "T0ken"]);
        log(
            &l,
            log::Level::Error,
            "login amp111 failed; nats://T0ken@h:4222 said amp1",
        );
        assert_eq!(
            lines(&rx),
            ["ami: ERROR ami_nats::lease: login *** failed; nats://***@h:4222 said ***\n"]
        );
    }

    #[test]
    fn control_characters_are_escaped_and_long_records_cut() {
        let (l, rx, _) = logger(&[]);
        log(&l, log::Level::Info, "a\nb\x1b[2J");
        log(&l, log::Level::Info, &"é".repeat(MAX_LINE));
        let got = lines(&rx);
        assert_eq!(got[0], "ami: INFO ami_nats::lease: a\\x0ab\\x1b[2J\n");
        assert!(got[1].len() <= MAX_LINE + 1, "{}", got[1].len());
        assert!(got[1].ends_with("...\n"));
    }

    #[test]
    fn a_full_queue_never_blocks_the_caller_and_its_drops_are_said() {
        let (l, rx, dropped) = logger(&[]);
        for i in 0..5 {
            log(&l, log::Level::Warn, &format!("record {i}"));
        }
        // The queue holds two; three were dropped, counted, and the logging thread went on.
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        drop(l);
        let mut out = Vec::new();
        write_lines(&rx, &dropped, &mut out);
        let out = String::from_utf8(out).unwrap();
        let out: Vec<String> = out.lines().map(untimed).collect();
        assert_eq!(
            out,
            [
                "ami: WARN ami_nats::lease: record 0",
                "ami: 3 log line(s) dropped: stderr was not taking them fast enough",
                "ami: WARN ami_nats::lease: record 1"
            ]
        );
    }
}
