//! [`StatusWatch`]: the session's [`Status`], and a wait for its next change.

use crate::shared::Inner;
use ami_proto::Status;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

/// A watch on a session's [`Status`]: the current value, and a wait for the next change.
/// Like any watch it keeps only the latest value: a status that lasted less than one turn
/// of the watcher's task can be skipped. `Closed` is final and is never skipped. A watch does
/// not keep the session open.
pub struct StatusWatch {
    inner: Arc<Inner>,
    id: u64,
    seen: u64,
}

impl StatusWatch {
    pub(crate) fn new(inner: &Arc<Inner>) -> StatusWatch {
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
            if matches!(shared.status, Status::Closed { .. }) || shared.driver_done {
                return Poll::Ready(None);
            }
            shared.status_wakers.insert(self.id, cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Waits until the status satisfies `pred` (checking the current one first) and
    /// returns it. If the session closes without satisfying it, returns the `Closed`
    /// status. Cancel-safe: a wait given up (dropped) marks nothing as returned, so the next
    /// [`changed`](Self::changed) still returns a status this watch never returned.
    pub async fn wait_for(&mut self, mut pred: impl FnMut(&Status) -> bool) -> Status {
        // The version last looked at: `self.seen` moves only when a status is returned.
        let mut looked = None;
        poll_fn(|cx| {
            let (version, status, done) = {
                let mut shared = self.inner.lock();
                // Registered before the look: a change while `pred` runs (outside the lock,
                // since it is the caller's code) wakes this task.
                shared.status_wakers.insert(self.id, cx.waker().clone());
                (
                    shared.status_version,
                    shared.status.clone(),
                    shared.driver_done,
                )
            };
            if looked == Some(version) && !done {
                return Poll::Pending;
            }
            looked = Some(version);
            if pred(&status) || matches!(status, Status::Closed { .. }) || done {
                self.seen = version;
                self.inner.lock().status_wakers.remove(&self.id);
                return Poll::Ready(status);
            }
            Poll::Pending
        })
        .await
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
