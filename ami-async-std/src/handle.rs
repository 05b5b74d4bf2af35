//! The caller's side: a cloneable `Handle` for actions, an `Events` stream and a
//! `StatusWatch`. All of it is one `std::sync::Mutex` around the core plus wakers; the lock
//! is never held across an await and no user code runs under it.

use crate::driver::now;
use ami_proto::{
    Action, ActionId, AmiError, Client, DisconnectReason, Notice, Outcome, Output, Response,
    SendError, SendOptions, Stats, Status, StreamItem,
};
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// One caller waiting for an action's outcome.
#[derive(Default)]
struct Waiter {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
}

/// What the driver must do about an output; everything else was delivered here.
pub(crate) enum Io {
    /// Open a transport.
    Connect,
    /// Drop the transport.
    Close,
    /// The session is over.
    Closed,
    /// Nothing more now; the next deadline.
    Wait(Option<Instant>),
    /// Delivered; poll the next output.
    Next,
}

pub(crate) struct Shared {
    pub(crate) client: Client,
    waiters: HashMap<ActionId, Waiter>,
    event_waker: Option<Waker>,
    driver_done: bool,
    driver_waker: Option<Waker>,
    driver_notified: bool,
    status: Status,
    status_version: u64,
    status_wakers: HashMap<u64, Waker>,
    next_watch: u64,
}

impl Shared {
    /// Hands one core output to the callers; returns what the driver has to do about it.
    /// Wakers to wake go to `wake`, to be woken once the lock is released.
    pub(crate) fn deliver(&mut self, output: Output, what: &str, wake: &mut Vec<Waker>) -> Io {
        match output {
            Output::Connect => Io::Connect,
            Output::Close => Io::Close,
            Output::Notice(Notice::Completed { id, outcome }) => {
                // No waiter: the caller stopped waiting, which is its choice.
                if let Some(w) = self.waiters.get_mut(&id) {
                    w.outcome = Some(outcome);
                    wake.extend(w.waker.take());
                }
                Io::Next
            }
            Output::Notice(Notice::Disconnected { reason, .. }) => {
                log::info!("AMI {what}: disconnected ({reason})");
                Io::Next
            }
            Output::Notice(Notice::Closed { .. }) => Io::Closed,
            Output::Wait(d) => Io::Wait(d),
            _ => Io::Next,
        }
    }

    /// Publishes the core's status if it changed since the last turn.
    pub(crate) fn publish_status(&mut self, wake: &mut Vec<Waker>) {
        let s = self.client.status();
        if s != self.status {
            self.set_status(s, wake);
        }
    }

    fn set_status(&mut self, s: Status, wake: &mut Vec<Waker>) {
        self.status = s;
        self.status_version += 1;
        wake.extend(self.status_wakers.drain().map(|(_, w)| w));
    }

    /// Wakes the event consumer if something is queued for it.
    pub(crate) fn wake_consumer(&mut self, wake: &mut Vec<Waker>) {
        if self.client.events_queued() > 0 {
            wake.extend(self.event_waker.take());
        }
    }

    /// The driver has stopped for good: every waiter, the consumer and the status watchers
    /// learn it.
    pub(crate) fn finish(&mut self, wake: &mut Vec<Waker>) {
        if !matches!(self.status, Status::Closed { .. }) {
            // Only when the driver was dropped before the core closed.
            let reason = DisconnectReason::LocalClose;
            self.set_status(Status::Closed { reason }, wake);
        }
        self.driver_done = true;
        wake.extend(self.waiters.values_mut().filter_map(|w| w.waker.take()));
        wake.extend(self.event_waker.take());
        wake.extend(self.status_wakers.drain().map(|(_, w)| w));
    }

    /// Asks the driver to run a turn (there is something to write, or a state change).
    fn notify_driver(&mut self) -> Option<Waker> {
        self.driver_notified = true;
        self.driver_waker.take()
    }

    /// The driver's side of [`notify_driver`](Self::notify_driver).
    pub(crate) fn poll_notified(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::take(&mut self.driver_notified) {
            return Poll::Ready(());
        }
        match &mut self.driver_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

pub(crate) struct Inner {
    shared: Mutex<Shared>,
    /// Handles and event streams alive; the session closes when the last one goes.
    users: AtomicUsize,
    /// The target, for log records.
    pub(crate) what: String,
}

impl Inner {
    pub(crate) fn new(client: Client, what: String) -> Inner {
        Inner {
            shared: Mutex::new(Shared {
                client,
                waiters: HashMap::new(),
                event_waker: None,
                driver_done: false,
                driver_waker: None,
                driver_notified: false,
                status: Status::Connecting,
                status_version: 0,
                status_wakers: HashMap::new(),
                next_watch: 0,
            }),
            users: AtomicUsize::new(0),
            what,
        }
    }

    /// Locks the shared state. A panic while holding the lock (only possible through a bug,
    /// since no user code runs under it) must not wedge every other caller: the state is
    /// consistent between calls into the core, so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the core, then wakes the driver so that it acts on the change.
    fn with_client<R>(&self, f: impl FnOnce(&mut Client) -> R) -> R {
        let (r, waker) = {
            let mut shared = self.lock();
            let r = f(&mut shared.client);
            (r, shared.notify_driver())
        };
        if let Some(w) = waker {
            w.wake();
        }
        r
    }

    /// The driver stopped without finishing (its future was dropped): close the core, hand
    /// out what that produces (pending actions fail), and mark the session over.
    pub(crate) fn abandon(&self) {
        let mut wake = Vec::new();
        {
            let mut shared = self.lock();
            if shared.driver_done {
                return;
            }
            shared.client.close(now());
            loop {
                let output = shared.client.poll_output();
                if let Io::Wait(_) = shared.deliver(output, &self.what, &mut wake) {
                    break;
                }
            }
            shared.finish(&mut wake);
        }
        wake.into_iter().for_each(Waker::wake);
    }

    fn new_user(self: &Arc<Self>) -> Arc<Inner> {
        self.users.fetch_add(1, Ordering::Relaxed);
        self.clone()
    }

    fn drop_user(&self) {
        if self.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Nobody can send or receive any more: a session left running would reconnect
            // forever with no one to tell.
            self.with_client(|c| c.close(now()));
        }
    }

    /// Waits for the outcome of `id`, registered in `waiters` by the caller.
    async fn outcome(&self, id: &ActionId) -> Result<Outcome, AmiError> {
        poll_fn(|cx| {
            let mut shared = self.lock();
            let done = shared.driver_done;
            let Some(w) = shared.waiters.get_mut(id) else {
                return Poll::Ready(Err(AmiError::Closed));
            };
            if let Some(outcome) = w.outcome.take() {
                shared.waiters.remove(id);
                return Poll::Ready(Ok(outcome));
            }
            if done {
                shared.waiters.remove(id);
                return Poll::Ready(Err(AmiError::Closed));
            }
            match &mut w.waker {
                Some(old) if old.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

/// A cloneable handle to one AMI session (across reconnects). The session closes (as by
/// [`close`](Handle::close)) when the last `Handle` and the [`Events`] are all dropped.
pub struct Handle {
    pub(crate) inner: Arc<Inner>,
}

impl Handle {
    pub(crate) fn new(inner: &Arc<Inner>) -> Handle {
        Handle {
            inner: inner.new_user(),
        }
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        Handle::new(&self.inner)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.drop_user();
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("status", &self.inner.lock().status)
            .finish()
    }
}

/// Forgets the waiter, and cancels the action in the core, if the caller stops waiting.
struct CancelOnDrop<'a> {
    inner: &'a Inner,
    id: Option<ActionId>,
    cancel: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let cancel = self.cancel;
            self.inner.with_client(|c| {
                if cancel {
                    c.cancel(now(), &id);
                }
            });
            self.inner.lock().waiters.remove(&id);
        }
    }
}

impl Handle {
    /// Sends an action and waits for its outcome: lists gathered, an async Originate
    /// resolved with its `OriginateResponse`. Dropping the future cancels the action.
    pub async fn send(&self, action: Action) -> Result<Response, AmiError> {
        self.send_with(action, SendOptions::default()).await
    }

    /// [`send`](Self::send) with options (e.g. a deadline).
    pub async fn send_with(
        &self,
        action: Action,
        options: SendOptions,
    ) -> Result<Response, AmiError> {
        self.register(true, |c| c.send_action_with(now(), action, options))
            .await
    }

    /// Installs an event filter now and after every reconnect.
    pub async fn add_filter(&self, filter: &str) -> Result<Response, AmiError> {
        self.register(false, |c| c.add_filter(now(), filter)).await
    }

    /// Queues an action in the core with `send`, then waits for its outcome.
    async fn register(
        &self,
        cancel: bool,
        send: impl FnOnce(&mut Client) -> Result<ActionId, SendError>,
    ) -> Result<Response, AmiError> {
        let (id, waker) = {
            let mut shared = self.inner.lock();
            if shared.driver_done {
                return Err(AmiError::Closed);
            }
            let id = send(&mut shared.client)?;
            shared.waiters.insert(id.clone(), Waiter::default());
            (id, shared.notify_driver())
        };
        if let Some(w) = waker {
            w.wake();
        }
        let mut guard = CancelOnDrop {
            inner: &self.inner,
            id: Some(id),
            cancel,
        };
        let outcome = match &guard.id {
            Some(id) => self.inner.outcome(id).await,
            None => Err(AmiError::Closed),
        };
        guard.id = None;
        outcome?.into_result().map_err(AmiError::Action)
    }

    /// A watch on the session status (Connecting, Ready, Disconnected, Closed).
    pub fn status(&self) -> StatusWatch {
        StatusWatch::new(&self.inner)
    }

    /// Waits until the session is Ready, or returns the reason it closed.
    pub async fn wait_ready(&self) -> Result<(), DisconnectReason> {
        let mut watch = self.status();
        match watch
            .wait_for(|s| matches!(s, Status::Ready { .. } | Status::Closed { .. }))
            .await
        {
            Status::Ready { .. } => Ok(()),
            Status::Closed { reason } => Err(reason),
            _ => Err(DisconnectReason::LocalClose),
        }
    }

    /// Logs off and waits until the session has closed.
    pub async fn logoff(&self) {
        self.inner.with_client(|c| c.logoff(now()));
        self.wait_closed().await;
    }

    /// Closes at once: pending actions fail, no Logoff is sent.
    pub fn close(&self) {
        self.inner.with_client(|c| c.close(now()));
    }

    /// Waits until the session has closed for good.
    pub async fn wait_closed(&self) {
        self.status()
            .wait_for(|s| matches!(s, Status::Closed { .. }))
            .await;
    }

    /// A snapshot of the core's counters.
    pub fn stats(&self) -> Stats {
        self.inner.lock().client.stats()
    }
}

/// A watch on a session's [`Status`]: the current value, and a wait for the next change.
/// Like any watch it keeps only the latest value: a status that lasted less than one turn
/// of the watcher's task can be skipped. `Closed` is final and is never skipped.
pub struct StatusWatch {
    inner: Arc<Inner>,
    id: u64,
    seen: u64,
}

impl StatusWatch {
    fn new(inner: &Arc<Inner>) -> StatusWatch {
        let mut shared = inner.lock();
        shared.next_watch += 1;
        StatusWatch {
            inner: inner.clone(),
            id: shared.next_watch,
            seen: shared.status_version,
        }
    }

    /// The current status.
    pub fn get(&self) -> Status {
        self.inner.lock().status.clone()
    }

    /// Waits for a status newer than the last one this watch returned (or than the one
    /// current when it was created), and returns it. `None` once `Closed` has been
    /// returned: nothing follows it.
    pub async fn changed(&mut self) -> Option<Status> {
        poll_fn(|cx| {
            let mut shared = self.inner.lock();
            if shared.status_version != self.seen {
                self.seen = shared.status_version;
                return Poll::Ready(Some(shared.status.clone()));
            }
            if matches!(shared.status, Status::Closed { .. }) {
                return Poll::Ready(None);
            }
            shared.status_wakers.insert(self.id, cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Waits until the status satisfies `pred` (checking the current one first) and
    /// returns it. If the session closes without satisfying it, returns the `Closed`
    /// status.
    pub async fn wait_for(&mut self, mut pred: impl FnMut(&Status) -> bool) -> Status {
        let current = {
            let shared = self.inner.lock();
            self.seen = shared.status_version;
            shared.status.clone()
        };
        if pred(&current) || matches!(current, Status::Closed { .. }) {
            return current;
        }
        loop {
            match self.changed().await {
                Some(s) if pred(&s) || matches!(s, Status::Closed { .. }) => return s,
                Some(_) => {}
                None => return self.get(),
            }
        }
    }
}

impl Clone for StatusWatch {
    fn clone(&self) -> StatusWatch {
        let mut w = StatusWatch::new(&self.inner);
        w.seen = self.seen;
        w
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.inner.lock().status_wakers.remove(&self.id);
    }
}

impl std::fmt::Debug for StatusWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWatch")
            .field("status", &self.get())
            .finish()
    }
}

/// The event stream of one session: events in order, and gap notices where the bounded
/// queue dropped events because this consumer was behind. Receiving never slows the reader.
pub struct Events {
    pub(crate) inner: Arc<Inner>,
}

impl Events {
    pub(crate) fn new(inner: &Arc<Inner>) -> Events {
        Events {
            inner: inner.new_user(),
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.inner.drop_user();
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// The next item; `None` once the session has closed and the queue is empty.
    pub async fn recv(&mut self) -> Option<StreamItem> {
        poll_fn(|cx| {
            let mut shared = self.inner.lock();
            if let Some(item) = shared.client.poll_event() {
                return Poll::Ready(Some(item));
            }
            if shared.driver_done {
                return Poll::Ready(None);
            }
            shared.event_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Moves up to `max` items into `out` (waiting for at least one); returns how many, 0
    /// once the session has closed and the queue is empty. One lock for the whole batch.
    pub async fn recv_many(&mut self, out: &mut Vec<StreamItem>, max: usize) -> usize {
        poll_fn(|cx| {
            let mut shared = self.inner.lock();
            let n = shared.client.poll_events(out, max);
            if n > 0 || shared.driver_done {
                return Poll::Ready(n);
            }
            shared.event_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<StreamItem> {
        self.inner.lock().client.poll_event()
    }
}
