//! The caller's side: a cloneable `Handle` for actions and an `Events` stream.

use crate::driver::now;
use ami_proto::{
    Action, ActionId, AmiError, Client, DisconnectReason, Outcome, Response, SendOptions, Stats,
    Status, StreamItem,
};
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use tokio::sync::{oneshot, watch, Notify};

fn to_result(outcome: Outcome) -> Result<Response, AmiError> {
    outcome.into_result().map_err(AmiError::Action)
}

pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) waiters: HashMap<ActionId, oneshot::Sender<Outcome>>,
    pub(crate) event_waker: Option<Waker>,
    pub(crate) driver_done: bool,
}

pub(crate) struct Inner {
    shared: Mutex<Shared>,
    pub(crate) wake_driver: Notify,
    status: watch::Sender<Status>,
}

impl Inner {
    pub(crate) fn new(client: Client) -> Inner {
        Inner {
            shared: Mutex::new(Shared {
                client,
                waiters: HashMap::new(),
                event_waker: None,
                driver_done: false,
            }),
            wake_driver: Notify::new(),
            status: watch::Sender::new(Status::Connecting),
        }
    }

    /// Locks the shared state. A panic while holding the lock (only possible through a bug,
    /// since no user code runs under it) must not wedge every other caller: the poisoned
    /// state is still consistent at every await point, so it is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the core's status when it changed (watchers wake only on a change).
    pub(crate) fn set_status(&self, s: Status) {
        self.status.send_if_modified(|current| {
            let changed = *current != s;
            if changed {
                *current = s;
            }
            changed
        });
    }

    /// Publishes `Closed` if the session had not closed already (the driver ended early).
    pub(crate) fn mark_closed(&self) {
        self.status.send_if_modified(|s| {
            if matches!(s, Status::Closed { .. }) {
                return false;
            }
            *s = Status::Closed {
                reason: DisconnectReason::LocalClose,
            };
            true
        });
    }
}

/// A cloneable handle to one AMI session (across reconnects).
#[derive(Clone)]
pub struct Handle {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("status", &*self.inner.status.borrow())
            .finish()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The last handle gone lets the driver close an unused session.
        self.inner.wake_driver.notify_one();
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.inner.wake_driver.notify_one();
    }
}

/// Cancels the action in the core if the caller stops waiting for it.
struct CancelOnDrop<'a> {
    inner: &'a Inner,
    id: Option<ActionId>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut shared = self.inner.lock();
            shared.waiters.remove(&id);
            shared.client.cancel(now(), &id);
            drop(shared);
            self.inner.wake_driver.notify_one();
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
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut shared = self.inner.lock();
            if shared.driver_done {
                return Err(AmiError::Closed);
            }
            let id = shared.client.send_action_with(now(), action, options)?;
            shared.waiters.insert(id.clone(), tx);
            id
        };
        self.inner.wake_driver.notify_one();
        let mut guard = CancelOnDrop {
            inner: &self.inner,
            id: Some(id),
        };
        let outcome = rx.await;
        guard.id = None;
        match outcome {
            Ok(outcome) => to_result(outcome),
            Err(_) => Err(AmiError::Closed),
        }
    }

    /// Installs an event filter now and after every reconnect.
    pub async fn add_filter(&self, filter: &str) -> Result<Response, AmiError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut shared = self.inner.lock();
            let id = shared.client.add_filter(now(), filter)?;
            shared.waiters.insert(id, tx);
        }
        self.inner.wake_driver.notify_one();
        rx.await.map_err(|_| AmiError::Closed).and_then(to_result)
    }

    /// A watch on the session status (Connecting, Ready, Disconnected, Closed).
    pub fn status(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    /// Waits until the session is Ready, or returns the reason it closed.
    pub async fn wait_ready(&self) -> Result<(), DisconnectReason> {
        let mut rx = self.status();
        loop {
            match &*rx.borrow_and_update() {
                Status::Ready { .. } => return Ok(()),
                Status::Closed { reason } => return Err(reason.clone()),
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err(DisconnectReason::LocalClose);
            }
        }
    }

    /// Logs off and waits until the session has closed.
    pub async fn logoff(&self) {
        self.inner.lock().client.logoff(now());
        self.inner.wake_driver.notify_one();
        self.wait_closed().await;
    }

    /// Closes at once: pending actions fail, no Logoff is sent.
    pub fn close(&self) {
        self.inner.lock().client.close(now());
        self.inner.wake_driver.notify_one();
    }

    /// Waits until the session has closed for good.
    pub async fn wait_closed(&self) {
        let mut rx = self.status();
        loop {
            if matches!(&*rx.borrow_and_update(), Status::Closed { .. }) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// A snapshot of the core's counters.
    pub fn stats(&self) -> Stats {
        self.inner.lock().client.stats()
    }
}

/// The event stream of one session: events in order, and gap notices where the bounded
/// queue dropped events because this consumer was behind. Receiving never slows the reader.
pub struct Events {
    pub(crate) inner: Arc<Inner>,
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
