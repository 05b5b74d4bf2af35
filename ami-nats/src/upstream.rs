//! The AMI side of the bridge, behind a small interface: start and stop serving a server,
//! one merged stream of `(server, item)`, actions sent to a named server or to any ready one,
//! per-server status.
//!
//! Interim implementation: one `ami-tokio` session per served server, each forwarded into the
//! merged channel by a small task. When a fleet lands in the async layer this file is the only
//! one that changes.

use crate::config::ServerSpec;
use ami_proto::{Action, Response, SendOptions, Status, StreamItem};
use ami_tokio::AmiError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A server's index in the bridge's configuration.
pub(crate) type ServerIx = usize;

/// One item of the merged stream.
#[derive(Debug)]
pub(crate) enum UpItem {
    /// An item of the AMI session's stream: an event, a counted gap, a session boundary.
    Stream(StreamItem),
    /// This bridge took the server's lease (the first item of a tenure); `previous` names
    /// the bridge that held it before, if its lease had to be taken over.
    LeaseAcquired { previous: Option<String> },
}

/// What arrives on the merged channel: the server, the lease term it was served under, the item.
pub(crate) type Tagged = (ServerIx, u64, UpItem);

struct Serving {
    handle: ami_tokio::Handle,
    forwarder: JoinHandle<()>,
}

/// The served servers and the merged stream's sender.
pub(crate) struct Upstream {
    serving: Mutex<BTreeMap<ServerIx, Serving>>,
    merged: mpsc::Sender<Tagged>,
    round_robin: AtomicUsize,
}

/// Why an action could not be handed to a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    /// This bridge does not serve that server (now).
    #[error("this bridge does not serve that server")]
    NotServed,
    /// No served server is ready.
    #[error("no server served by this bridge is ready")]
    NoneReady,
}

impl Upstream {
    /// An upstream whose merged stream goes to `merged` (bounded: a full channel makes the
    /// forwarders wait, so the sessions' own bounded queues drop and count).
    pub(crate) fn new(merged: mpsc::Sender<Tagged>) -> Upstream {
        Upstream {
            serving: Mutex::new(BTreeMap::new()),
            merged,
            round_robin: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ServerIx, Serving>> {
        // Only map inserts/removes run under the lock; a poisoned map is still consistent.
        self.serving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts serving `spec` under lease `term` (a no-op if it is served already).
    pub(crate) fn add(&self, ix: ServerIx, term: u64, spec: &ServerSpec) {
        let mut serving = self.lock();
        if serving.contains_key(&ix) {
            return;
        }
        let (handle, events) =
            ami_tokio::spawn(spec.client.clone(), (spec.host.as_str(), spec.port));
        let forwarder = tokio::spawn(forward(ix, term, events, self.merged.clone()));
        serving.insert(ix, Serving { handle, forwarder });
    }

    /// Stops serving: the session closes at once (pending actions fail), nothing more of it
    /// enters the merged stream.
    pub(crate) fn remove(&self, ix: ServerIx) {
        if let Some(s) = self.lock().remove(&ix) {
            s.forwarder.abort();
            s.handle.close();
        }
    }

    /// The served servers and their status.
    pub(crate) fn statuses(&self) -> Vec<(ServerIx, Status)> {
        self.lock()
            .iter()
            .map(|(ix, s)| (*ix, s.handle.status().get()))
            .collect()
    }

    /// Picks the server for a request: `Some(ix)` names one, `None` means any ready server
    /// (round-robin over the ready ones this bridge serves).
    pub(crate) fn route(
        &self,
        to: Option<ServerIx>,
    ) -> Result<(ServerIx, ami_tokio::Handle), RouteError> {
        let serving = self.lock();
        if let Some(ix) = to {
            return serving
                .get(&ix)
                .map(|s| (ix, s.handle.clone()))
                .ok_or(RouteError::NotServed);
        }
        let ready: Vec<(ServerIx, &Serving)> = serving
            .iter()
            .filter(|(_, s)| matches!(s.handle.status().get(), Status::Ready { .. }))
            .map(|(ix, s)| (*ix, s))
            .collect();
        if ready.is_empty() {
            return Err(RouteError::NoneReady);
        }
        let n = self.round_robin.fetch_add(1, Ordering::Relaxed) % ready.len();
        Ok((ready[n].0, ready[n].1.handle.clone()))
    }

    /// Sends `action` on a routed session and waits for its outcome.
    pub(crate) async fn send(
        handle: &ami_tokio::Handle,
        action: Action,
        options: SendOptions,
    ) -> Result<Response, AmiError> {
        handle.send_with(action, options).await
    }

    /// Closes every session.
    pub(crate) fn close_all(&self) {
        let all = std::mem::take(&mut *self.lock());
        for (_, s) in all {
            s.forwarder.abort();
            s.handle.close();
        }
    }
}

/// Moves one session's items into the merged stream, in order: events, counted gaps and
/// the session boundaries (`Ready`, `Disconnected`) the core puts between them.
async fn forward(
    ix: ServerIx,
    term: u64,
    mut events: ami_tokio::Events,
    merged: mpsc::Sender<Tagged>,
) {
    let mut batch = Vec::with_capacity(256);
    while events.recv_many(&mut batch, 256).await > 0 {
        for item in batch.drain(..) {
            if merged.send((ix, term, UpItem::Stream(item))).await.is_err() {
                return;
            }
        }
    }
}
