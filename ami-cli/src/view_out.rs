//! The output of a live view (`ami calls --watch`) on a thread of its own, so that a stdout
//! that does not drain never stops the session from reading: on `ami-mio` the session runs
//! on the command's own thread, and Asterisk drops a client that does not read for 100 ms.
//!
//! Two kinds of output, treated as what they are:
//! - a **view** (the whole table on a terminal, or the `{"type":"calls",...}` line) is a
//!   snapshot: a newer one makes an unwritten older one worthless, so at most one waits, and
//!   a stalled reader gets the newest view once it reads again, never a backlog of old ones;
//! - **news** (`call_ended`, `stale`, `resynced` lines) are events: they wait in order up to
//!   [`MAX_NEWS_BYTES`]; past it a line is dropped, counted, marked where it was with a gap
//!   line (`{"type":"gap","reason":"overflow","dropped":N}`) and said on stderr once per
//!   burst ([`Losses`]).
//!
//! News queued before a view is written before it, news queued after it after it: a reader
//! sees each `call_ended` next to the view it belongs with.

use crate::losses::{Loss, Losses};
use crate::printer::stdout_end;
use crate::terminal::say;
use crate::{json, Failure, EXIT_OTHER};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// News bytes waiting for stdout at most: some 10,000 `call_ended` lines, so a reader that
/// pauses for a while loses none, while the memory stays small.
pub(crate) const MAX_NEWS_BYTES: usize = 2 << 20;

/// One piece of waiting news.
enum News {
    Line(String),
    /// A run of news lines dropped here (stdout too slow).
    Dropped(u64),
}

/// What waits for the writer thread.
#[derive(Default)]
struct Pending {
    news: VecDeque<News>,
    /// Bytes of the lines in `news`.
    news_bytes: usize,
    /// The newest unwritten view, after the first `.0` entries of `news`.
    view: Option<(usize, String)>,
    /// No more output comes: the writer writes what waits, then ends.
    closing: bool,
    /// The writer ended: stdout closed (a quiet end) or failed.
    ended: Option<std::io::Result<()>>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    /// The pending output; a writer that panicked while holding it left it consistent
    /// (every change is one assignment), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer of a live view's output; see the module docs.
pub(crate) struct ViewOut {
    shared: Arc<Shared>,
    /// News lines dropped, said on stderr once per burst.
    losses: Losses,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

/// Whether the command goes on after handing output over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Go,
    /// stdout was closed (`ami calls --watch | head`): end quietly.
    Stop,
}

fn write_batch(
    out: &mut impl Write,
    news: VecDeque<News>,
    view: Option<(usize, String)>,
) -> std::io::Result<()> {
    let (at, view) = match view {
        Some((at, v)) => (at, Some(v)),
        None => (usize::MAX, None),
    };
    let mut view = view;
    for (i, n) in news.into_iter().enumerate() {
        if i == at {
            if let Some(v) = view.take() {
                out.write_all(v.as_bytes())?;
            }
        }
        match n {
            News::Line(l) => out.write_all(l.as_bytes())?,
            News::Dropped(n) => {
                out.write_all(json::gap(n).as_bytes())?;
                out.write_all(b"\n")?;
            }
        }
    }
    if let Some(v) = view {
        out.write_all(v.as_bytes())?;
    }
    out.flush()
}

/// How long the writer waits for output before it looks whether stdout's reader is gone.
const READER_CHECK: Duration = Duration::from_secs(1);

/// Writes what is handed over until closing. `gone` says whether stdout's reader left: a
/// view that does not change writes nothing (`ami calls --watch | head -1` on a quiet
/// server), so while idle the writer asks it each [`READER_CHECK`] and ends as a closed
/// pipe does.
fn run_writer(
    shared: &Shared,
    mut out: impl Write,
    gone: impl Fn() -> bool,
) -> std::io::Result<()> {
    loop {
        let (news, view) = {
            let mut p = shared.lock();
            while p.news.is_empty() && p.view.is_none() && !p.closing {
                let (next, waited) = shared
                    .wake
                    .wait_timeout(p, READER_CHECK)
                    .unwrap_or_else(|e| e.into_inner());
                p = next;
                if waited.timed_out() && p.news.is_empty() && p.view.is_none() && gone() {
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
            }
            if p.news.is_empty() && p.view.is_none() {
                return Ok(());
            }
            p.news_bytes = 0;
            (std::mem::take(&mut p.news), p.view.take())
        };
        write_batch(&mut out, news, view)?;
    }
}

impl ViewOut {
    /// Starts the writer on stdout.
    pub(crate) fn start() -> Result<ViewOut, Failure> {
        ViewOut::start_on(std::io::stdout(), Losses::default(), || {
            crate::printer::reader_gone(&std::io::stdout())
        })
    }

    fn start_on(
        out: impl Write + Send + 'static,
        losses: Losses,
        gone: impl Fn() -> bool + Send + 'static,
    ) -> Result<ViewOut, Failure> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let (done_tx, done) = mpsc::channel();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ami-stdout".into())
            .spawn(move || {
                let result = run_writer(&s, out, gone);
                s.lock().ended = Some(result);
                let _ = done_tx.send(());
            })
            .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the writer: {e}")))?;
        Ok(ViewOut {
            shared,
            losses,
            done,
            thread: Some(thread),
        })
    }

    /// Hands over news lines (each ending in a newline) and, when it changed, the view. A
    /// new view replaces one not written yet; news past [`MAX_NEWS_BYTES`] is dropped and
    /// counted. Fails only when stdout failed.
    pub(crate) fn show(
        &mut self,
        news: Vec<String>,
        view: Option<String>,
    ) -> Result<Flow, Failure> {
        let mut dropped = 0;
        {
            let mut p = self.shared.lock();
            if let Some(end) = &p.ended {
                return stdout_end(end).map(|()| Flow::Stop);
            }
            for line in news {
                if p.news_bytes + line.len() > MAX_NEWS_BYTES {
                    dropped += 1;
                    match p.news.back_mut() {
                        Some(News::Dropped(n)) => *n += 1,
                        _ => p.news.push_back(News::Dropped(1)),
                    }
                } else {
                    p.news_bytes += line.len();
                    p.news.push_back(News::Line(line));
                }
            }
            if let Some(v) = view {
                let at = p.news.len();
                p.view = Some((at, v));
            }
        }
        self.shared.wake.notify_one();
        let now = Instant::now();
        if dropped > 0 {
            self.losses.note("", Loss::UpdatesNotPrinted, dropped, now);
        } else {
            self.losses.tick(now);
        }
        Ok(Flow::Go)
    }

    /// Whether the writer ended because stdout's reader left (or it failed): the view has
    /// nobody to show to.
    pub(crate) fn ended(&self) -> bool {
        self.shared.lock().ended.is_some()
    }

    /// Writes what waits, giving a stdout that does not drain at most `grace`.
    pub(crate) fn finish(mut self, grace: Duration) -> Result<(), Failure> {
        self.losses.finish();
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        match self.done.recv_timeout(grace) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                match self.shared.lock().ended.take() {
                    Some(end) => stdout_end(&end),
                    None => Ok(()),
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                say!("ami: stdout is not draining; the last view was not written");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    /// A stdout that blocks while the test holds the gate, and says when a write first
    /// waits on it.
    struct Gated {
        gate: Arc<Mutex<()>>,
        entered: mpsc::Sender<()>,
        said_entered: bool,
        written: Arc<Mutex<Vec<u8>>>,
        fail_with: Option<ErrorKind>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.said_entered {
                self.said_entered = true;
                let _ = self.entered.send(());
            }
            let _held = self.gate.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(kind) = self.fail_with {
                return Err(kind.into());
            }
            self.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Rig {
        out: ViewOut,
        gate: Arc<Mutex<()>>,
        entered: mpsc::Receiver<()>,
        written: Arc<Mutex<Vec<u8>>>,
        said: Arc<Mutex<Vec<String>>>,
    }

    fn rig(fail_with: Option<ErrorKind>) -> Rig {
        let gate = Arc::new(Mutex::new(()));
        let written = Arc::new(Mutex::new(Vec::new()));
        let said = Arc::new(Mutex::new(Vec::new()));
        let (entered_tx, entered) = mpsc::channel();
        let keep = said.clone();
        let losses =
            Losses::with_sink(move |l| keep.lock().unwrap_or_else(|e| e.into_inner()).push(l));
        let out = ViewOut::start_on(
            Gated {
                gate: gate.clone(),
                entered: entered_tx,
                said_entered: false,
                written: written.clone(),
                fail_with,
            },
            losses,
            || false,
        )
        .unwrap_or_else(|f| panic!("{}", f.reason));
        Rig {
            out,
            gate,
            entered,
            written,
            said,
        }
    }

    #[test]
    fn a_view_whose_reader_left_ends_while_nothing_changes() {
        // `ami calls --watch | head -1` on a quiet server: nothing more is written, so the
        // reader's going must be looked for.
        let left = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = left.clone();
        let mut out = ViewOut::start_on(Vec::new(), Losses::default(), move || {
            flag.load(std::sync::atomic::Ordering::SeqCst)
        })
        .unwrap_or_else(|f| panic!("{}", f.reason));
        assert_eq!(
            out.show(Vec::new(), Some("view\n".into())).ok(),
            Some(Flow::Go)
        );
        std::thread::sleep(READER_CHECK + Duration::from_millis(200));
        assert!(!out.ended(), "a reader still there");
        left.store(true, std::sync::atomic::Ordering::SeqCst);
        let until = Instant::now() + READER_CHECK * 3;
        while !out.ended() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(out.ended(), "the writer saw the reader leave");
        // A closed pipe is a quiet end, not a failure.
        assert!(out.finish(Duration::from_secs(1)).is_ok());
    }

    fn text(v: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8_lossy(&v.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    fn lines(n: &[&str]) -> Vec<String> {
        n.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn a_stalled_stdout_gets_the_newest_view_with_every_news_line_in_place() {
        let mut r = rig(None);
        let stalled = r.gate.lock().unwrap_or_else(|e| e.into_inner());
        let go = |out: &mut ViewOut, news: &[&str], view: Option<&str>| {
            let flow = out.show(lines(news), view.map(|v| format!("{v}\n")));
            assert_eq!(flow.unwrap_or_else(|f| panic!("{}", f.reason)), Flow::Go);
        };
        go(&mut r.out, &["ended a"], Some("view 1"));
        // The writer holds that batch, blocked on stdout, before anything else comes.
        r.entered
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the writer never wrote: {e}"));
        go(&mut r.out, &["ended b"], Some("view 2"));
        go(&mut r.out, &[], Some("view 3"));
        go(&mut r.out, &["ended c"], None);
        go(&mut r.out, &["stale"], Some("view 4"));
        go(&mut r.out, &["resynced"], None);
        drop(stalled);
        let end = r.out.finish(Duration::from_secs(10));
        assert!(end.is_ok());
        assert_eq!(
            text(&r.written),
            "ended a\nview 1\nended b\nended c\nstale\nview 4\nresynced\n",
            "views 2 and 3 were superseded while stdout was stalled; no news line was lost"
        );
        assert!(r.said.lock().unwrap_or_else(|e| e.into_inner()).is_empty());
    }

    #[test]
    fn news_past_the_byte_cap_is_dropped_counted_marked_where_it_was_and_said_once() {
        let mut r = rig(None);
        let stalled = r.gate.lock().unwrap_or_else(|e| e.into_inner());
        let flow = r.out.show(lines(&["first"]), None);
        assert!(matches!(flow, Ok(Flow::Go)));
        r.entered
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the writer never wrote: {e}"));
        let line = format!(
            "{{\"type\":\"call_ended\",\"pad\":\"{}\"}}\n",
            "x".repeat(969)
        );
        assert_eq!(line.len(), 1000);
        let fits = MAX_NEWS_BYTES / line.len();
        for _ in 0..fits + 500 {
            let flow = r.out.show(vec![line.clone()], Some("view\n".to_string()));
            assert!(matches!(flow, Ok(Flow::Go)));
        }
        let flow = r.out.show(Vec::new(), Some("last view\n".to_string()));
        assert!(matches!(flow, Ok(Flow::Go)));
        drop(stalled);
        let end = r.out.finish(Duration::from_secs(10));
        assert!(end.is_ok());
        let written = text(&r.written);
        let out: Vec<&str> = written.lines().collect();
        assert_eq!(out[0], "first");
        assert_eq!(out.len(), 1 + fits + 2, "the kept news, one gap, the view");
        assert!(out[1..=fits].iter().all(|l| l.len() == 999));
        let gap: serde_json::Value =
            serde_json::from_str(out[fits + 1]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gap["type"], "gap");
        assert_eq!(gap["dropped"], 500);
        assert_eq!(out[fits + 2], "last view");
        let said = r.said.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(said.len(), 2, "{said:?}");
        assert_eq!(
            said[0],
            "ami: gap: 1 call updates not printed (stdout too slow)"
        );
        assert_eq!(
            said[1],
            "ami: gap: 499 more call updates not printed in that burst (stdout too slow)"
        );
    }

    #[test]
    fn a_closed_stdout_stops_the_view_quietly_and_a_failed_one_is_a_failure() {
        for (kind, fails) in [(ErrorKind::BrokenPipe, false), (ErrorKind::Other, true)] {
            let mut r = rig(Some(kind));
            let mut stopped = false;
            for _ in 0..1000 {
                match r.out.show(lines(&["news"]), None) {
                    Ok(Flow::Go) => std::thread::sleep(Duration::from_millis(5)),
                    Ok(Flow::Stop) => {
                        stopped = true;
                        break;
                    }
                    Err(f) => {
                        assert!(fails, "{kind:?}: {}", f.reason);
                        assert!(f.reason.contains("cannot write to stdout"), "{}", f.reason);
                        stopped = true;
                        break;
                    }
                }
            }
            assert!(stopped, "{kind:?}: the view went on");
            assert_eq!(
                r.out.finish(Duration::from_secs(10)).is_err(),
                fails,
                "{kind:?}"
            );
        }
    }
}
