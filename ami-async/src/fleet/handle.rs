//! The application's side of a fleet: [`FleetHandle`] (servers, actions, status, stats),
//! [`FleetEvents`] (the merged stream) and [`StatusWatch`]: std futures over the shared
//! state, on any runtime (the clock is the runtime's, kept in the shared state).

use super::shared::{Inner, Io, STATUS_LOG_CAP};
use super::Endpoint;
use crate::shared::Waiter;
use crate::AmiError;
use crate::Target;
use ami_proto::fleet::{
    FleetError, FleetItem, FleetStats, Route, RouteError, Routed, ServerName, ServerStatus,
};
use ami_proto::{Action, ClientConfig, Response, SendOptions};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

/// Why a server was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The fleet refused it (bad or duplicate name, fleet full).
    #[error(transparent)]
    Refused(FleetError),
    /// The fleet was closed.
    #[error("fleet closed")]
    Closed,
    /// The TLS server name is neither a DNS name nor an IP address.
    #[error("bad TLS server name: {0:?}")]
    TlsName(String),
}

/// Why [`FleetHandle::send`] took no action: nothing was queued on any server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteFailed {
    /// No server could take it (unknown name, none ready, the server's client refused it).
    #[error(transparent)]
    Route(RouteError),
    /// The fleet was closed or its driver is gone.
    #[error("fleet closed")]
    Closed,
}

/// The outcome of one routed action: which server took it, and how it ended there.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The server the action went to.
    pub server: ServerName,
    /// Its result on that server (an `AmiError::Send` when that server refused it).
    pub result: Result<Response, AmiError>,
}

/// A cloneable handle on a fleet of AMI servers: add and remove servers by
/// name, send actions routed by name or policy, watch status, read stats. The fleet closes
/// when every handle and the [`FleetEvents`] are dropped, or on [`close`](Self::close).
pub struct FleetHandle {
    pub(crate) inner: Arc<Inner<Endpoint>>,
}

impl Clone for FleetHandle {
    fn clone(&self) -> Self {
        self.inner.lock().users += 1;
        FleetHandle {
            inner: self.inner.clone(),
        }
    }
}

impl std::fmt::Debug for FleetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetHandle")
            .field("servers", &self.inner.lock().fleet.len())
            .finish()
    }
}

/// One user gone; the last one closes the fleet (nobody could use it any more).
fn leave(inner: &Inner<Endpoint>) {
    let mut io = Io::default();
    {
        let mut shared = inner.lock();
        shared.users = shared.users.saturating_sub(1);
        if shared.users == 0 && !shared.closed {
            shared.close((inner.now)(), &mut io);
        }
    }
    io.wake_all();
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        leave(&self.inner);
    }
}

/// Cancels the action in the core if the caller stops waiting for it.
struct CancelOnDrop<'a> {
    inner: &'a Inner<Endpoint>,
    key: Option<(ServerName, ami_proto::ActionId)>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some((server, id)) = self.key.take() {
            self.inner.call(|s| {
                s.waiters.remove(&(server.clone(), id.clone()));
                s.fleet.cancel((self.inner.now)(), server.as_str(), &id);
            });
        }
    }
}

impl FleetHandle {
    /// Adds a server under `name`, reached at `target`; it connects within the fleet's
    /// connect budget. Names: 1 to 128 bytes, no control characters, unique.
    pub fn add(
        &self,
        name: &str,
        config: ClientConfig,
        target: impl Into<Target>,
    ) -> Result<(), AddError> {
        self.add_endpoint(
            name,
            config,
            Endpoint {
                target: target.into(),
                #[cfg(feature = "tls")]
                tls: None,
            },
        )
    }

    /// [`add`](Self::add) over TLS (AMI's implicit TLS, usually port 5039).
    #[cfg(feature = "tls")]
    pub fn add_tls(
        &self,
        name: &str,
        config: ClientConfig,
        target: impl Into<Target>,
        tls: crate::Tls,
    ) -> Result<(), AddError> {
        let server_name = tls.server_name.clone();
        let tls = crate::tls::TlsTarget::new(tls).map_err(|_| AddError::TlsName(server_name))?;
        self.add_endpoint(
            name,
            config,
            Endpoint {
                target: target.into(),
                tls: Some(tls),
            },
        )
    }

    fn add_endpoint(
        &self,
        name: &str,
        config: ClientConfig,
        endpoint: Endpoint,
    ) -> Result<(), AddError> {
        self.inner.call(|s| {
            if s.closed || s.driver_done {
                return Err(AddError::Closed);
            }
            // The endpoint first: the add may ask for a connect at once.
            let key =
                ServerName::new(name).map_err(|e| AddError::Refused(FleetError::InvalidName(e)))?;
            if s.fleet.id(name).is_some() {
                return Err(AddError::Refused(FleetError::DuplicateName(key)));
            }
            s.endpoints.insert(key.clone(), endpoint);
            match s.fleet.add((self.inner.now)(), name, config) {
                Ok(_) => Ok(()),
                Err(e) => {
                    s.endpoints.remove(&key);
                    Err(AddError::Refused(e))
                }
            }
        })
    }

    /// Removes the server named `name` (no Logoff): its pending actions fail, events still
    /// queued for it become one gap naming it. False if there is no such server.
    pub fn remove(&self, name: &str) -> bool {
        self.inner
            .call(|s| s.fleet.remove((self.inner.now)(), name))
    }

    /// Sends `action` where `route` says and waits for its outcome. `Err` means no server
    /// took it (nothing was queued); otherwise the [`Reply`] names the server and holds the
    /// result there. Dropping the future cancels the action.
    pub async fn send(&self, route: Route<'_>, action: Action) -> Result<Reply, RouteFailed> {
        self.send_with(route, action, SendOptions::default()).await
    }

    /// [`send`](Self::send) with options (e.g. a deadline).
    pub async fn send_with(
        &self,
        route: Route<'_>,
        action: Action,
        options: SendOptions,
    ) -> Result<Reply, RouteFailed> {
        let routed = self.inner.call(|s| {
            if s.closed || s.driver_done {
                return Err(RouteFailed::Closed);
            }
            let routed = s
                .fleet
                .send_with((self.inner.now)(), route, action, options)
                .map_err(RouteFailed::Route)?;
            s.waiters.insert(
                (routed.server.clone(), routed.id.clone()),
                Waiter::default(),
            );
            Ok(routed)
        })?;
        Ok(self.wait(routed).await)
    }

    /// Sends a copy of `action` to every server (the CLI's `--on all`) and waits for all of
    /// them: one reply per server, in the fleet's slot order.
    pub async fn send_all(&self, action: Action) -> Vec<Reply> {
        let results = self.inner.call(|s| {
            if s.closed || s.driver_done {
                return Vec::new();
            }
            let results = s
                .fleet
                .send_all((self.inner.now)(), &action, SendOptions::default());
            for r in results.iter().flatten() {
                s.waiters
                    .insert((r.server.clone(), r.id.clone()), Waiter::default());
            }
            results
        });
        let mut replies = Vec::with_capacity(results.len());
        for r in results {
            replies.push(match r {
                Ok(routed) => self.wait(routed).await,
                Err(RouteError::Send { server, error }) => Reply {
                    server,
                    result: Err(AmiError::Send(error)),
                },
                // Only a server removed meanwhile gets here: nothing was sent.
                Err(_) => continue,
            });
        }
        replies
    }

    async fn wait(&self, routed: Routed) -> Reply {
        let key = (routed.server, routed.id);
        let mut guard = CancelOnDrop {
            inner: &self.inner,
            key: Some(key.clone()),
        };
        let outcome = poll_fn(|cx| {
            let mut shared = self.inner.lock();
            let done = shared.driver_done;
            let Some(w) = shared.waiters.get_mut(&key) else {
                return Poll::Ready(None);
            };
            if let Some(outcome) = w.outcome.take() {
                shared.waiters.remove(&key);
                return Poll::Ready(Some(outcome));
            }
            if done {
                shared.waiters.remove(&key);
                return Poll::Ready(None);
            }
            w.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        guard.key = None;
        Reply {
            server: key.0,
            result: match outcome {
                Some(o) => o.map_err(AmiError::Action),
                None => Err(AmiError::Closed),
            },
        }
    }

    /// Where the server named `name` is now.
    pub fn status(&self, name: &str) -> Option<ServerStatus> {
        self.inner.lock().fleet.status(name).cloned()
    }

    /// Every server and where it is now, in slot order.
    pub fn statuses(&self) -> Vec<(ServerName, ServerStatus)> {
        let shared = self.inner.lock();
        shared
            .fleet
            .servers()
            .filter_map(|(_, n)| Some((n.clone(), shared.fleet.status(n.as_str())?.clone())))
            .collect()
    }

    /// A watch on status changes from now on: every change once, in order.
    pub fn watch(&self) -> StatusWatch {
        let mut shared = self.inner.lock();
        shared.next_watch += 1;
        StatusWatch {
            inner: self.inner.clone(),
            id: shared.next_watch,
            next: shared.status_first + shared.status_log.len() as u64,
        }
    }

    /// Per-server and total counters and latency.
    pub fn stats(&self) -> FleetStats {
        self.inner.lock().fleet.stats()
    }

    /// Runs `f` on the client of the server named `name` (add a filter, change the event
    /// mask...). `None` if there is no such server.
    pub fn with_client<R>(
        &self,
        name: &str,
        f: impl FnOnce(&mut ami_proto::Client, std::time::Instant) -> R,
    ) -> Option<R> {
        self.inner
            .call(|s| s.fleet.with_client((self.inner.now)(), name, f))
    }

    /// Logs every server off; each closes after its Goodbye.
    pub fn logoff_all(&self) {
        self.inner.call(|s| s.fleet.logoff_all((self.inner.now)()));
    }

    /// Closes the fleet at once (no Logoff): pending actions fail, the event stream ends
    /// once drained, no server can be added any more.
    pub fn close(&self) {
        let mut io = Io::default();
        self.inner.lock().close((self.inner.now)(), &mut io);
        io.wake_all();
    }
}

/// The merged event stream: items from every server, each naming its server, taken from the
/// servers in rotation so a flooding server cannot push out a quiet one's events (it loses
/// its own, counted as gaps naming it). Ends once the fleet is closed and drained.
pub struct FleetEvents {
    pub(crate) inner: Arc<Inner<Endpoint>>,
    buf: VecDeque<FleetItem>,
    batch: Vec<FleetItem>,
}

impl FleetEvents {
    pub(crate) fn new(inner: Arc<Inner<Endpoint>>) -> FleetEvents {
        FleetEvents {
            inner,
            buf: VecDeque::new(),
            batch: Vec::new(),
        }
    }
}

impl std::fmt::Debug for FleetEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetEvents")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Drop for FleetEvents {
    fn drop(&mut self) {
        leave(&self.inner);
    }
}

impl FleetEvents {
    /// The next item; `None` once the fleet is closed and every queue is empty. Items are
    /// taken from the core in batches under one lock and handed out from here.
    pub async fn recv(&mut self) -> Option<FleetItem> {
        if let Some(item) = self.buf.pop_front() {
            return Some(item);
        }
        let FleetEvents { inner, buf, batch } = self;
        // A consumer that always finds items would never give its thread back (this future
        // is not the runtime's, so no runtime budget applies): one turn per batch lets the
        // connection tasks on the same thread read.
        let mut yielded = false;
        poll_fn(|cx| {
            if !yielded {
                yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut shared = inner.lock();
            let n = shared.fleet.poll_events(batch, super::shared::EVENT_BATCH);
            if n > 0 {
                buf.extend(batch.drain(..));
                return Poll::Ready(buf.pop_front());
            }
            if shared.stream_over() {
                return Poll::Ready(None);
            }
            shared.event_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Moves up to `max` items into `out` (waiting for at least one); returns how many, 0
    /// once the fleet is closed and drained.
    pub async fn recv_many(&mut self, out: &mut Vec<FleetItem>, max: usize) -> usize {
        let Some(first) = self.recv().await else {
            return 0;
        };
        out.push(first);
        let mut n = 1;
        while n < max {
            match self.try_recv() {
                Some(item) => {
                    out.push(item);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// The next item if one is queued (taken with a batch under one lock, like `recv`).
    pub fn try_recv(&mut self) -> Option<FleetItem> {
        if self.buf.is_empty() {
            let n = self
                .inner
                .lock()
                .fleet
                .poll_events(&mut self.batch, super::shared::EVENT_BATCH);
            if n > 0 {
                self.buf.extend(self.batch.drain(..));
            }
        }
        self.buf.pop_front()
    }
}

/// What a [`StatusWatch`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusChange {
    /// A server's status changed.
    Changed {
        /// Which server.
        server: ServerName,
        /// Its new status.
        status: ServerStatus,
    },
    /// This watch fell more than 4,096 changes behind: that many were dropped (counted,
    /// never silent). [`FleetHandle::statuses`] gives the present.
    Lagged(u64),
}

/// Status changes of every server, in order, from the moment the watch was made.
pub struct StatusWatch {
    inner: Arc<Inner<Endpoint>>,
    id: u64,
    next: u64,
}

impl std::fmt::Debug for StatusWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWatch")
            .field("next", &self.next)
            .finish()
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.inner.lock().status_wakers.remove(&self.id);
    }
}

impl StatusWatch {
    /// The next change; `None` once the fleet is closed and every change was seen.
    pub async fn changed(&mut self) -> Option<StatusChange> {
        poll_fn(|cx| {
            let mut shared = self.inner.lock();
            if self.next < shared.status_first {
                let lost = shared.status_first - self.next;
                self.next = shared.status_first;
                log::warn!("AMI fleet: a status watch lost {lost} changes (cap {STATUS_LOG_CAP})");
                return Poll::Ready(Some(StatusChange::Lagged(lost)));
            }
            let at = (self.next - shared.status_first) as usize;
            if let Some((server, status)) = shared.status_log.get(at) {
                self.next += 1;
                return Poll::Ready(Some(StatusChange::Changed {
                    server: server.clone(),
                    status: status.clone(),
                }));
            }
            // Closing logs every server's last change at once: nothing can follow.
            if shared.closed || shared.driver_done {
                return Poll::Ready(None);
            }
            shared.status_wakers.insert(self.id, cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
