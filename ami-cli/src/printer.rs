//! Lines to stdout on a thread of their own, through a bounded queue, so that a slow
//! stdout never stops the session from reading (Asterisk drops a client that does not read
//! for 100 ms). When the queue is full a line is dropped and counted, and the count is
//! said on stderr as a gap, as the adapters do for their own event queues.

use crate::{Failure, EXIT_OTHER};
use std::io::{BufWriter, ErrorKind, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Lines queued for stdout at most.
const MAX_LINES: usize = 4096;
/// Bytes queued for stdout at most (a few large events must not hold much memory).
const MAX_BYTES: usize = 8 << 20;

/// The stdout writer of `listen`.
pub(crate) struct Printer {
    tx: Option<SyncSender<String>>,
    queued: Arc<AtomicUsize>,
    /// Lines dropped since the last gap was reported.
    dropped: u64,
    done: Receiver<std::io::Result<()>>,
    thread: Option<JoinHandle<()>>,
}

fn write_all(rx: Receiver<String>, queued: &AtomicUsize) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    while let Ok(line) = rx.recv() {
        let mut next = Some(line);
        // Write what is queued, then flush once: one syscall per batch, not per line.
        while let Some(line) = next {
            queued.fetch_sub(line.len(), Ordering::Relaxed);
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            next = rx.try_recv().ok();
        }
        out.flush()?;
    }
    out.flush()
}

impl Printer {
    pub(crate) fn start() -> Result<Printer, Failure> {
        let (tx, rx) = mpsc::sync_channel::<String>(MAX_LINES);
        let (done_tx, done) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let thread = std::thread::Builder::new()
            .name("ami-stdout".into())
            .spawn(move || {
                let _ = done_tx.send(write_all(rx, &q));
            })
            .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the writer: {e}")))?;
        Ok(Printer {
            tx: Some(tx),
            queued,
            dropped: 0,
            done,
            thread: Some(thread),
        })
    }

    /// Queues one line; drops it (counted) when the queue is full. Fails only when stdout
    /// failed; a closed pipe (`ami listen | head`) ends the command quietly.
    pub(crate) fn line(&mut self, line: String) -> Result<Flow, Failure> {
        let Some(tx) = &self.tx else {
            return Ok(Flow::Stop);
        };
        if self.queued.load(Ordering::Relaxed) + line.len() > MAX_BYTES {
            self.dropped += 1;
            return Ok(Flow::Go);
        }
        let len = line.len();
        match tx.try_send(line) {
            Ok(()) => {
                self.queued.fetch_add(len, Ordering::Relaxed);
                self.report_gap();
                Ok(Flow::Go)
            }
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                Ok(Flow::Go)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.tx = None;
                self.result().map(|()| Flow::Stop)
            }
        }
    }

    fn report_gap(&mut self) {
        if self.dropped > 0 {
            eprintln!(
                "ami: gap: {} events not printed (stdout too slow)",
                self.dropped
            );
            self.dropped = 0;
        }
    }

    fn result(&mut self) -> Result<(), Failure> {
        match self.done.recv_timeout(Duration::from_secs(1)) {
            Ok(Err(e)) if e.kind() != ErrorKind::BrokenPipe => Err(Failure::new(
                EXIT_OTHER,
                format!("cannot write to stdout: {e}"),
            )),
            _ => Ok(()),
        }
    }

    /// Writes what is queued, waiting at most `grace` for a stdout that does not drain.
    pub(crate) fn finish(mut self, grace: Duration) -> Result<(), Failure> {
        self.report_gap();
        self.tx = None;
        match self.done.recv_timeout(grace) {
            Ok(Err(e)) if e.kind() != ErrorKind::BrokenPipe => Err(Failure::new(
                EXIT_OTHER,
                format!("cannot write to stdout: {e}"),
            )),
            Ok(_) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                Ok(())
            }
            Err(_) => {
                let left = self.queued.load(Ordering::Relaxed);
                eprintln!("ami: stdout is not draining; {left} bytes of output not written");
                Ok(())
            }
        }
    }
}

/// Whether the command goes on after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Go,
    Stop,
}
