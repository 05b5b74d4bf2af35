//! The caller's side for actions: a cloneable [`Handle`] and the [`AmiError`] it returns.

use crate::shared::{Inner, Slot};
use crate::status::StatusWatch;
use ami_proto::{
    Action, ActionError, ActionId, Client, DisconnectReason, Response, SendError, SendOptions,
    Stats, Status,
};
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Instant;

/// Why an action sent through an async adapter did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmiError {
    /// Refused before sending (invalid field, queue full, client closed...).
    #[error(transparent)]
    Send(#[from] SendError),
    /// Sent, but it did not succeed: a server error, a timeout, a lost connection...
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The session's driver is gone (the session closed, or the driver was dropped);
    /// `reason` is the session's `Status::Closed` reason (`LocalClose` when the driver went
    /// away on its own: dropped, or its runtime shut down).
    #[error("client closed ({reason})")]
    Closed {
        /// Why the session closed.
        reason: DisconnectReason,
    },
}

/// A cloneable handle to one AMI session (across reconnects). The session closes when the
/// last handle and the [`Events`](crate::Events) are gone: at once, as [`close`](Self::close)
/// does, without a Logoff (Asterisk logs a disconnect, not a logoff); call
/// [`logoff`](Self::logoff) first for a clean end.
pub struct Handle {
    pub(crate) inner: Arc<Inner>,
}

impl Handle {
    pub(crate) fn new(inner: &Arc<Inner>) -> Handle {
        inner.add_user();
        Handle {
            inner: inner.clone(),
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
            .field("target", &self.inner.what)
            .field("status", &self.inner.lock().status)
            .finish()
    }
}

/// Cancels the action in the core if the caller stops waiting for it; an outcome that had
/// come but was never taken goes back to the core (`Client::unclaimed`: the server's answer
/// reaches the event stream as a `LateAnswer` under the action's mark, and an async
/// Originate's `OriginateResponse` after it).
struct CancelOnDrop<'a> {
    inner: &'a Inner,
    slot: &'a Slot,
    id: Option<ActionId>,
    /// The caller's `SendOptions::with_mark` value: the core forgets it once the action
    /// completes, and the late answer an unclaimed outcome becomes carries it.
    mark: Option<u64>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let now = (self.inner.now)();
            let mut shared = self.inner.lock();
            // Under the core lock the driver fills no slot: once the waiter is gone, the
            // slot holds what came, or nothing will.
            shared.waiters.remove(&id);
            match self.slot.take() {
                Some(outcome) => shared.client.unclaimed(now, &id, self.mark, outcome),
                None => {
                    shared.client.cancel(now, &id);
                }
            }
            drop(shared);
            self.inner.bell.ring();
        }
    }
}

impl Handle {
    /// Sends an action and waits for its outcome: lists gathered, an async Originate
    /// resolved with its `OriginateResponse`. Dropping the future cancels the action (see
    /// [`Client::cancel`](ami_proto::Client::cancel)): one not yet written never goes out,
    /// but one already written runs, and an Originate's call is still placed; its
    /// `OriginateResponse` then arrives in the event stream (also when the future is dropped
    /// after its outcome came, unread, as a `select!` that took another branch does).
    ///
    /// An action dropped (or timed out) after it was written may still run: the server's
    /// answer, if it comes, arrives in the event stream as
    /// [`StreamItem::LateAnswer`](ami_proto::StreamItem::LateAnswer); so does the answer
    /// that had come when the future was dropped before it was polled again (a
    /// `tokio::time::timeout` elapsing in that window). Its ActionID is never handed to
    /// this caller; send with [`SendOptions::with_mark`] (through
    /// [`send_with`](Self::send_with)) to recognise it by its mark.
    pub async fn send(&self, action: Action) -> Result<Response, AmiError> {
        self.send_with(action, SendOptions::default()).await
    }

    /// [`send`](Self::send) with options (e.g. a deadline).
    pub async fn send_with(
        &self,
        action: Action,
        options: SendOptions,
    ) -> Result<Response, AmiError> {
        self.submit(options.late_answer_mark(), |c, now| {
            c.send_action_with(now, action, options)
        })
        .await
    }

    /// Installs an event filter now and after every reconnect. One the server refuses, or
    /// whose future is dropped before any of its action left, is not kept.
    pub async fn add_filter(&self, filter: &str) -> Result<Response, AmiError> {
        self.submit(None, |c, now| c.add_filter(now, filter)).await
    }

    /// Changes the session's event mask now (`Action: Events`) and for every later login
    /// (see [`Client::set_event_mask`]), and waits for the server's answer: how a session
    /// configured without `call` events starts taking async Originates (whose
    /// `OriginateResponse` is a `call` event) without being rebuilt. The new mask is the
    /// session's as soon as it is queued: later sends are checked against it. A mask the
    /// server refuses, or whose future is dropped before any of its action left, gives way
    /// to the one before it. A mask that keeps `call` events out is refused while async
    /// Originates wait for their `OriginateResponse`. Fails at once when the driver is
    /// gone, as [`add_filter`](Self::add_filter) does.
    pub async fn set_event_mask(&self, mask: &str) -> Result<Response, AmiError> {
        self.submit(None, |c, now| c.set_event_mask(now, mask))
            .await
    }

    /// Queues an action through `f` and waits for its outcome. Fails at once when the
    /// driver is gone, whatever the action. `mark` is the one `f` sends it with, for the
    /// late answer its outcome becomes if this future is dropped with the outcome unread.
    async fn submit(
        &self,
        mark: Option<u64>,
        f: impl FnOnce(&mut Client, Instant) -> Result<ActionId, SendError>,
    ) -> Result<Response, AmiError> {
        let slot = Arc::new(Slot::default());
        let (id, wake_driver) = {
            let mut shared = self.inner.lock();
            if shared.driver_done {
                return Err(shared.closed_error());
            }
            let id = f(&mut shared.client, (self.inner.now)())?;
            shared.waiters.insert(id.clone(), Arc::clone(&slot));
            // A lone action goes out from this thread when it can; the driver is woken
            // only for what is left to it.
            (id, shared.write_direct())
        };
        if wake_driver {
            self.inner.bell.ring();
        }
        let mut guard = CancelOnDrop {
            inner: &self.inner,
            slot: &slot,
            id: Some(id),
            mark,
        };
        let outcome = poll_fn(|cx| slot.poll(cx)).await;
        guard.id = None;
        match outcome {
            Some(o) => o.map_err(AmiError::Action),
            None => Err(self.inner.lock().closed_error()),
        }
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

    /// Logs off and waits until the session has closed: on Asterisk's `Goodbye`, or after
    /// the config's `logoff_timeout` (5 s) from a server that stopped answering. The
    /// transport is then shut down cleanly (TLS `close_notify`, TCP FIN).
    pub async fn logoff(&self) {
        self.inner.with_client(|c, now| c.logoff(now));
        self.wait_closed().await;
    }

    /// Closes at once: pending actions fail, no Logoff is sent.
    pub fn close(&self) {
        self.inner.with_client(|c, now| c.close(now));
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
