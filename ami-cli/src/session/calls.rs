//! What the two async runtimes share: in-flight actions as futures polled by `wait`, and one
//! wait over the adapter's three sources (completions, stream items, status) and a timer.

use super::{CallError, Change, Happening, Ticket};
use ami_proto::{Response, Status, StreamItem};
use futures_lite::future;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

type Call = Pin<Box<dyn Future<Output = Result<Response, CallError>> + Send>>;

/// Stream items taken per wait: one lock of the adapter per batch.
pub(super) const BATCH: usize = 1024;

/// The README loop, `while let Some(item) = events.recv().await`, counting into `count`
/// until `until` (looked at every 256 items) or the stream's end. The caller also bounds it
/// by a timer, for a stream that goes quiet.
pub(super) async fn recv_one_by_one(
    events: &mut ami_async::Events,
    until: std::time::Instant,
    count: &mut super::ItemCount,
) {
    loop {
        for _ in 0..256 {
            match events.recv().await {
                Some(item) => count.count(&item),
                None => return,
            }
        }
        if std::time::Instant::now() >= until {
            return;
        }
    }
}

/// Actions in flight on an async adapter, each the adapter's own `send` future (one
/// session's, or a fleet's: [`crate::fleet`] keeps its own).
#[derive(Default)]
pub(crate) struct Calls {
    next: Ticket,
    pending: Vec<(Ticket, Call)>,
}

impl Calls {
    pub(crate) fn push(
        &mut self,
        call: impl Future<Output = Result<Response, CallError>> + Send + 'static,
    ) -> Ticket {
        self.next += 1;
        self.pending.push((self.next, Box::pin(call)));
        self.next
    }

    /// Resolves once at least one call has finished; hands each finished one to `done`.
    /// Pending for ever while none is in flight.
    pub(crate) async fn finished_with(
        &mut self,
        mut done: impl FnMut(Ticket, Result<Response, CallError>),
    ) {
        poll_fn(|cx| {
            let mut any = false;
            self.pending
                .retain_mut(|(ticket, call)| match call.as_mut().poll(cx) {
                    Poll::Ready(result) => {
                        done(*ticket, result);
                        any = true;
                        false
                    }
                    Poll::Pending => true,
                });
            if any {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// [`finished_with`](Self::finished_with), each finished one moved to `out`.
    async fn finished(&mut self, out: &mut Vec<Happening>) {
        self.finished_with(|ticket, result| out.push(Happening::Completed { ticket, result }))
            .await
    }
}

/// What ended one wait.
pub(super) enum Woke {
    Calls,
    /// Stream items moved into the batch; 0 when the stream has ended.
    Items(usize),
    /// A new status; `None` when no status follows.
    Status(Option<Status>),
    Timer,
}

/// The state of one async session's wait, runtime-free.
#[derive(Default)]
pub(super) struct Waiting {
    pub(super) calls: Calls,
    pub(super) batch: Vec<StreamItem>,
    pub(super) items_open: bool,
    pub(super) status_open: bool,
    /// The status current when the session started: a watch reports only later changes,
    /// and the first login may already be done.
    initial: Option<Change>,
}

impl Waiting {
    pub(super) fn new(current: Status) -> Waiting {
        Waiting {
            items_open: true,
            status_open: true,
            initial: Change::from_status(current),
            ..Waiting::default()
        }
    }

    /// The status current at the start, reported by the first wait without waiting.
    pub(super) fn take_initial(&mut self, out: &mut Vec<Happening>) -> bool {
        match self.initial.take() {
            Some(c) => {
                out.push(Happening::Change(c));
                true
            }
            None => false,
        }
    }

    /// True when nothing but the timer could end a wait.
    pub(super) fn idle(&self) -> bool {
        !self.items_open && !self.status_open && self.calls.pending.is_empty()
    }

    /// Books what woke the wait: items then the status go to `out` after the completions.
    pub(super) fn absorb(&mut self, woke: Woke, out: &mut Vec<Happening>) {
        match woke {
            Woke::Items(0) => self.items_open = false,
            Woke::Status(None) => self.status_open = false,
            Woke::Status(Some(s)) => {
                out.extend(self.batch.drain(..).map(Happening::Item));
                if let Some(c) = Change::from_status(s) {
                    out.push(Happening::Change(c));
                }
            }
            Woke::Items(_) | Woke::Calls | Woke::Timer => {}
        }
        out.extend(self.batch.drain(..).map(Happening::Item));
    }
}

/// Races the calls against the runtime's three futures (each pending forever when its
/// source is closed).
pub(super) async fn race(
    calls: &mut Calls,
    out: &mut Vec<Happening>,
    items: impl Future<Output = usize>,
    status: impl Future<Output = Option<Status>>,
    timer: impl Future<Output = ()>,
) -> Woke {
    let calls = async {
        calls.finished(out).await;
        Woke::Calls
    };
    let items = async { Woke::Items(items.await) };
    let status = async { Woke::Status(status.await) };
    let timer = async {
        timer.await;
        Woke::Timer
    };
    future::or(calls, future::or(items, future::or(status, timer))).await
}
