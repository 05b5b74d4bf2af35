//! The session for `--runtime tokio` and `--runtime async-std`: both adapters hand out the
//! same `ami_async` handle and event stream, so one `Session` serves both; what differs (how
//! this thread blocks on a future, and a timer) is the runtime's [`Exec`].

use super::calls::{race, recv_one_by_one, Waiting, BATCH};
use super::{CallError, Happening, ItemCount, Session, Ticket};
use crate::{Failure, EXIT_OTHER};
use ami_async::{Events, Handle, StatusWatch};
use ami_proto::{Action, SendOptions, Stats};
use futures_lite::future;
use std::future::{pending, Future};
use std::time::{Duration, Instant};

/// How the CLI's thread waits on a runtime.
pub(crate) trait Exec {
    /// Runs `f` to completion on this thread.
    fn block_on<F: Future>(&self, f: F) -> F::Output;
    /// Completes at `at` (created and polled inside [`block_on`](Self::block_on)).
    async fn sleep_until(at: Instant);
}

/// `f`'s output, unless `at` comes first.
async fn within<E: Exec, T>(at: Instant, f: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(f.await) }, async {
        E::sleep_until(at).await;
        None
    })
    .await
}

/// One session on an async runtime, its calls and stream waited for by [`Exec::block_on`].
pub(crate) struct RuntimeSession<E: Exec> {
    exec: E,
    handle: Handle,
    events: Events,
    status: StatusWatch,
    waiting: Waiting,
}

impl<E: Exec> RuntimeSession<E> {
    /// The session of a handle and stream the runtime's adapter started.
    pub(crate) fn new(exec: E, handle: Handle, events: Events) -> RuntimeSession<E> {
        let status = handle.status();
        let current = status.get();
        RuntimeSession {
            exec,
            handle,
            events,
            status,
            waiting: Waiting::new(current),
        }
    }
}

impl<E: Exec> Session for RuntimeSession<E> {
    fn send_with(&mut self, action: Action, options: SendOptions) -> Ticket {
        let handle = self.handle.clone();
        self.waiting.calls.push(async move {
            handle
                .send_with(action, options)
                .await
                .map_err(CallError::from)
        })
    }

    fn wait(&mut self, until: Option<Instant>, out: &mut Vec<Happening>) -> Result<(), Failure> {
        if self.waiting.take_initial(out) {
            return Ok(());
        }
        if self.waiting.idle() && until.is_none() {
            return Err(Failure::new(EXIT_OTHER, "the session ended"));
        }
        let RuntimeSession {
            exec,
            events,
            status,
            waiting,
            ..
        } = self;
        let Waiting {
            calls,
            batch,
            items_open,
            status_open,
            ..
        } = waiting;
        let woke = exec.block_on(async {
            let items = async {
                if !*items_open {
                    return pending().await;
                }
                events.recv_many(batch, BATCH).await
            };
            let status = async {
                if !*status_open {
                    return pending().await;
                }
                status.changed().await
            };
            let timer = async {
                match until {
                    Some(t) => E::sleep_until(t).await,
                    None => pending().await,
                }
            };
            race(calls, out, items, status, timer).await
        });
        self.waiting.absorb(woke, out);
        Ok(())
    }

    fn logoff(&mut self, grace: Duration, out: &mut Vec<Happening>) {
        let deadline = Instant::now() + grace;
        // The handle's logoff sends the Logoff at its first poll, then waits for the close;
        // the waiting is done here, over the stream, whose end says the same: everything
        // the server wrote before its Goodbye was handed out.
        self.exec.block_on(future::poll_once(self.handle.logoff()));
        while self.waiting.items_open && Instant::now() < deadline {
            if self.wait(Some(deadline), out).is_err() {
                break;
            }
        }
        if self.waiting.items_open {
            // No Goodbye within the grace: closed, and what had arrived is still kept.
            self.handle.close();
            out.extend(self.waiting.batch.drain(..).map(Happening::Item));
            while let Some(item) = self.events.try_recv() {
                out.push(Happening::Item(item));
            }
        }
    }

    fn close(&mut self) {
        self.handle.close();
    }

    fn stats(&self) -> Stats {
        self.handle.stats()
    }

    fn read_one_by_one(&mut self, until: Instant) -> Result<ItemCount, Failure> {
        let mut count = ItemCount::default();
        let events = &mut self.events;
        self.exec.block_on(async {
            within::<E, _>(until, recv_one_by_one(events, until, &mut count)).await;
        });
        Ok(count)
    }
}
