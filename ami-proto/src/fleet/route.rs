//! Routing actions: to a named server, or by a policy over the ready servers.

use super::name::ServerName;
use super::servers::Fleet;
use crate::{Action, ActionId, SendError, SendOptions};
use std::time::Instant;

/// Where an action goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route<'a> {
    /// The server with this name, whatever its status: a server that is not ready queues the
    /// action until it is, within the action's deadline (as a single `Client` does).
    Server(&'a str),
    /// Any ready server, chosen by the policy. Servers that are not ready (connecting,
    /// logging in, backing off, breaker open, closed) are skipped, and so are servers whose
    /// queues are full; when none is left the send fails with [`RouteError::NoServer`]:
    /// nothing is queued anywhere.
    Any(Policy),
}

/// How [`Route::Any`] picks a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// The next ready server after the one picked last, in slot order.
    RoundRobin,
    /// The ready server with the fewest actions pending (ties: round-robin order).
    FewestInFlight,
}

/// Where an action went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The server that took it; its [`FleetOutput::Completed`](super::FleetOutput::Completed)
    /// names this server.
    pub server: ServerName,
    /// The ActionID that server's client gave it.
    pub id: ActionId,
}

/// Why [`Fleet::send`] took no action. Nothing was queued on any server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// No server has this name.
    #[error("no server named {0:?} in the fleet")]
    UnknownServer(String),
    /// No server can take it now: none is ready, or every ready one is full.
    #[error(
        "no server can take the action: {ready} of {servers} servers ready, {full} of those full"
    )]
    NoServer {
        /// Servers in the fleet.
        servers: usize,
        /// Of those, ready.
        ready: usize,
        /// Of the ready ones, refused because a queue or the pending table was full.
        full: usize,
    },
    /// The server's client refused it (an invalid field, a reserved action, a full queue for
    /// a named server...).
    #[error("{server}: {error}")]
    Send {
        /// The server that refused.
        server: ServerName,
        /// Why.
        error: SendError,
    },
}

impl Fleet {
    /// Sends `action` where `route` says, with default options. Its result arrives once as
    /// [`FleetOutput::Completed`](super::FleetOutput::Completed) naming the server.
    pub fn send(
        &mut self,
        now: Instant,
        route: Route<'_>,
        action: Action,
    ) -> Result<Routed, RouteError> {
        self.send_with(now, route, action, SendOptions::default())
    }

    /// [`send`](Self::send) with options.
    pub fn send_with(
        &mut self,
        now: Instant,
        route: Route<'_>,
        action: Action,
        options: SendOptions,
    ) -> Result<Routed, RouteError> {
        let result = match route {
            Route::Server(name) => {
                let id = self
                    .id(name)
                    .ok_or_else(|| RouteError::UnknownServer(name.to_string()))?;
                self.send_on(now, id.index, action, options)
            }
            Route::Any(policy) => self.send_any(now, policy, action, options),
        };
        match &result {
            Ok(_) => self.counters.routed += 1,
            Err(RouteError::NoServer { .. }) => self.counters.no_server += 1,
            Err(_) => {}
        }
        result
    }

    /// Sends a copy of `action` to every server (the CLI's `--on all`): one result per
    /// server, in slot order.
    pub fn send_all(
        &mut self,
        now: Instant,
        action: &Action,
        options: SendOptions,
    ) -> Vec<Result<Routed, RouteError>> {
        let indices: Vec<usize> = self.servers().map(|(id, _)| id.index).collect();
        indices
            .into_iter()
            .map(|i| {
                let r = self.send_on(now, i, action.clone(), options);
                if r.is_ok() {
                    self.counters.routed += 1;
                }
                r
            })
            .collect()
    }

    fn send_on(
        &mut self,
        now: Instant,
        index: usize,
        action: Action,
        options: SendOptions,
    ) -> Result<Routed, RouteError> {
        let Some(s) = self.server_mut(index) else {
            return Err(RouteError::UnknownServer(String::new()));
        };
        let result = s.client.send_action_with(now, action, options);
        let server = s.name.clone();
        if result.is_ok() {
            s.counters.routed += 1;
        }
        self.touch(index);
        match result {
            Ok(id) => Ok(Routed { server, id }),
            Err(error) => Err(RouteError::Send { server, error }),
        }
    }

    /// True if slot `i` holds a server that takes routed work now.
    fn takes_work(&self, i: usize) -> bool {
        self.slots
            .get(i)
            .and_then(|slot| slot.server.as_ref())
            .is_some_and(|s| s.status.is_ready() && s.client.is_ready())
    }

    /// The fewest actions pending on any server that takes routed work now (ready, breaker
    /// closed); `None` when no server does. A router over several fleets asks each and sends
    /// [`Policy::FewestInFlight`] work to the fleet with the least.
    pub fn least_in_flight(&self) -> Option<usize> {
        (0..self.slots.len())
            .filter(|&i| self.takes_work(i))
            .filter_map(|i| self.slots.get(i)?.server.as_ref())
            .map(|s| s.client.pending_actions())
            .min()
    }

    /// Ready servers, fewest actions pending first (ties: round-robin order).
    fn by_load(&self) -> Vec<usize> {
        let n = self.slots.len();
        let start = if n == 0 { 0 } else { self.rr % n };
        let mut by_load: Vec<(usize, usize, usize)> = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| self.takes_work(i))
            .enumerate()
            .map(|(rank, i)| {
                let load = self
                    .slots
                    .get(i)
                    .and_then(|slot| slot.server.as_ref())
                    .map_or(usize::MAX, |s| s.client.pending_actions());
                (load, rank, i)
            })
            .collect();
        by_load.sort_unstable();
        by_load.into_iter().map(|(_, _, i)| i).collect()
    }

    fn send_any(
        &mut self,
        now: Instant,
        policy: Policy,
        action: Action,
        options: SendOptions,
    ) -> Result<Routed, RouteError> {
        // Round-robin walks the slots from the cursor and stops at the first ready server
        // that takes the action: O(1) slots per action when servers are ready, O(servers)
        // only when none is. Fewest-in-flight must see every ready server's load first.
        let n = self.slots.len();
        let start = if n == 0 { 0 } else { self.rr % n };
        let order: Box<dyn Iterator<Item = usize>> = match policy {
            Policy::RoundRobin => Box::new((0..n).map(move |k| (start + k) % n)),
            Policy::FewestInFlight => Box::new(self.by_load().into_iter()),
        };
        let (mut ready, mut full) = (0, 0);
        for index in order {
            if !self.takes_work(index) {
                continue;
            }
            ready += 1;
            match self.send_on(now, index, action.clone(), options) {
                Ok(routed) => {
                    self.rr = index + 1;
                    return Ok(routed);
                }
                Err(RouteError::Send {
                    error: SendError::QueueFull { .. } | SendError::Closed { .. },
                    ..
                }) => full += 1,
                Err(e) => return Err(e),
            }
        }
        Err(RouteError::NoServer {
            servers: self.len(),
            ready,
            full,
        })
    }
}
