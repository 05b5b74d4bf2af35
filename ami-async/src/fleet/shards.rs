//! The fleet as several shards: each shard is a core [`Fleet`] of its own (its servers,
//! behind its own lock, driven by its own [`FleetDriver`](super::FleetDriver)), so servers
//! on different shards are read and decoded in parallel. What makes them one fleet lives
//! here: one namespace of server names (which shard holds which), a fleet-wide server cap,
//! the connect budget split between the shards (their per-step shares add up to the
//! fleet's `connects_per_step`), routing by policy across shards, merged stats, and the
//! users that keep the fleet open. Lock order: the directory, then a shard, then the status
//! log; never the other way.

use super::reads::ReadCounters;
use super::shared::{Inner, Io};
use super::watch::StatusLog;
use super::{AddError, Endpoint, RouteFailed};
use crate::shared::{lock, Waiter};
use ami_proto::fleet::{
    Fleet, FleetConfig, FleetError, FleetStats, Policy, Route, RouteError, Routed, ServerName,
    ServerStatus,
};
use ami_proto::{Action, ClientConfig, SendOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One shard: its state (and, through it, its driver's wake-ups).
pub(crate) type Shard = Arc<Inner<Endpoint>>;

/// Every shard of one fleet and what ties them together.
pub(crate) struct Shards {
    pub(crate) shards: Vec<Shard>,
    pub(crate) log: Arc<StatusLog>,
    /// The runtime's clock.
    pub(crate) now: fn() -> Instant,
    max_servers: usize,
    dir: Mutex<Directory>,
}

struct Directory {
    /// Which shard holds each server.
    names: HashMap<ServerName, usize>,
    /// Servers per shard (a new server goes to the shard with the fewest).
    counts: Vec<usize>,
    /// Where [`Policy::RoundRobin`] work looks first.
    rr: usize,
    /// `Route::Any` sends no shard could take (a shard that could not counts its own
    /// refusal too, so the fleet-wide figure is kept here).
    no_server: u64,
    /// Handles and event streams alive (explicit count, not `Arc::strong_count`).
    users: usize,
    /// Handles alive: with none, no server can be added, reopened or told anything.
    handles: usize,
    closed: bool,
}

/// A shard's share of `budget` connects per step: the shares add up to `budget`.
fn connect_share(budget: usize, shards: usize, shard: usize) -> usize {
    budget / shards + usize::from(shard < budget % shards)
}

impl Shards {
    /// `shards` core fleets (at least one, at most `connects_per_step`, so every shard may
    /// start a connect in each of its steps), each with its share of the connect budget and
    /// a seed of its own (so no two servers share ActionID prefixes or jitter).
    pub(crate) fn new(config: FleetConfig, shards: usize, now: fn() -> Instant) -> Shards {
        let budget = config.budget.connects_per_step.max(1);
        let n = shards.clamp(1, budget);
        let log = Arc::new(StatusLog::new(n));
        let shards = (0..n)
            .map(|i| {
                let mut c = config.clone();
                c.budget.connects_per_step = connect_share(budget, n, i);
                // Shard 0 keeps the fleet's seed: one shard is exactly the unsharded fleet.
                c.seed = config
                    .seed
                    .wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                Arc::new(Inner::new(Fleet::new(c), now, log.clone()))
            })
            .collect();
        Shards {
            shards,
            log,
            now,
            max_servers: config.max_servers.max(1),
            dir: Mutex::new(Directory {
                names: HashMap::new(),
                counts: vec![0; n],
                rr: 0,
                no_server: 0,
                users: 2,
                handles: 1,
                closed: false,
            }),
        }
    }

    /// The shard holding the server named `name`.
    pub(crate) fn shard_of(&self, name: &str) -> Option<&Shard> {
        let i = *lock(&self.dir).names.get(name)?;
        self.shards.get(i)
    }

    /// The index of the shard holding the server named `name`.
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        lock(&self.dir).names.get(name).copied()
    }

    /// One more handle.
    pub(crate) fn join(&self) {
        let mut dir = lock(&self.dir);
        dir.users += 1;
        dir.handles += 1;
    }

    /// One handle gone. The last user closes the fleet (nobody could use it any more), and
    /// so does the last handle when every server has already closed for good.
    pub(crate) fn leave_handle(&self) {
        if !self.leave(true) {
            self.close_if_finished();
        }
    }

    /// The event stream gone; if it was the last user, the fleet closes.
    pub(crate) fn leave_stream(&self) {
        self.leave(false);
    }

    /// One user gone (a handle, or the stream); the last one closes the fleet (nobody could
    /// use it any more). True if it did.
    fn leave(&self, handle: bool) -> bool {
        let last = {
            let mut dir = lock(&self.dir);
            if handle {
                dir.handles = dir.handles.saturating_sub(1);
            }
            dir.users = dir.users.saturating_sub(1);
            dir.users == 0 && !dir.closed
        };
        if last {
            self.close();
        }
        last
    }

    /// Closes the fleet if nothing more can ever come from it: no handle is left (so no
    /// server can be added or reopened) and every server has closed for good (logged off,
    /// closed, its login refused for good), or there is none. The event stream then ends
    /// once drained instead of waiting for ever. True if it closed the fleet now.
    pub(crate) fn close_if_finished(&self) -> bool {
        {
            let dir = lock(&self.dir);
            if dir.closed || dir.handles > 0 {
                return false;
            }
            for shard in &self.shards {
                let s = shard.lock();
                if s.closed || s.driver_done {
                    continue;
                }
                let open = s.fleet.servers().any(|(_, name)| {
                    !matches!(
                        s.fleet.status(name.as_str()),
                        Some(ServerStatus::Closed { .. }) | None
                    )
                });
                if open {
                    return false;
                }
            }
        }
        self.close();
        true
    }

    /// Closes every shard (no Logoff): pending actions fail, the stream ends once drained.
    pub(crate) fn close(&self) {
        lock(&self.dir).closed = true;
        let now = (self.now)();
        for shard in &self.shards {
            let mut io = Io::default();
            shard.lock().close(now, &mut io);
            io.wake_all();
        }
    }

    /// Adds a server on the shard with the fewest; names are unique fleet-wide and the
    /// fleet holds at most `max_servers`.
    pub(crate) fn add(
        &self,
        name: &str,
        config: ClientConfig,
        endpoint: Endpoint,
    ) -> Result<(), AddError> {
        let key =
            ServerName::new(name).map_err(|e| AddError::Refused(FleetError::InvalidName(e)))?;
        let mut dir = lock(&self.dir);
        if dir.closed {
            return Err(AddError::Closed);
        }
        if dir.names.contains_key(name) {
            return Err(AddError::Refused(FleetError::DuplicateName(key)));
        }
        if dir.names.len() >= self.max_servers {
            return Err(AddError::Refused(FleetError::Full {
                cap: self.max_servers,
            }));
        }
        // A name whose removed server's last items still wait on a shard goes back there:
        // the reader takes the shards in turn, and on another one the new session's items
        // could go before the old one's last gap and marks.
        let back = self
            .shards
            .iter()
            .position(|s| s.lock().fleet.holds_removed(name));
        let (i, _) = dir
            .counts
            .iter()
            .enumerate()
            .min_by_key(|&(i, c)| (back != Some(i), *c, i))
            .unwrap_or((0, &0));
        let Some(shard) = self.shards.get(i) else {
            return Err(AddError::Closed);
        };
        // Each shard's fleet tells a name added again from its earlier self by its count of
        // additions; a name may come back on another shard with the same count, so a seed
        // the config gives takes the shard's index too (one shard: as given).
        let config = match config.seed() {
            Some(seed) if i > 0 => {
                config.with_seed(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            }
            _ => config,
        };
        shard.call(|s| {
            if s.closed || s.driver_done {
                return Err(AddError::Closed);
            }
            // The endpoint first: the add may ask for a connect at once.
            s.endpoints.insert(key.clone(), endpoint);
            match s.fleet.add((self.now)(), name, config) {
                Ok(_) => Ok(()),
                Err(e) => {
                    s.endpoints.remove(&key);
                    Err(AddError::Refused(e))
                }
            }
        })?;
        dir.names.insert(key, i);
        if let Some(c) = dir.counts.get_mut(i) {
            *c += 1;
        }
        Ok(())
    }

    /// Removes the server named `name` from its shard. False if there is no such server.
    pub(crate) fn remove(&self, name: &str) -> bool {
        let mut dir = lock(&self.dir);
        let Some(&i) = dir.names.get(name) else {
            return false;
        };
        let removed = self
            .shards
            .get(i)
            .is_some_and(|shard| shard.call(|s| s.fleet.remove((self.now)(), name)));
        if removed {
            dir.names.remove(name);
            if let Some(c) = dir.counts.get_mut(i) {
                *c = c.saturating_sub(1);
            }
        }
        removed
    }

    /// Sends `action` on one shard and registers its waiter there.
    fn send_on(
        &self,
        shard: &Shard,
        route: Route<'_>,
        action: Action,
        options: SendOptions,
    ) -> Result<Routed, RouteFailed> {
        shard.call(|s| {
            if s.closed || s.driver_done {
                return Err(RouteFailed::Closed);
            }
            let routed = s
                .fleet
                .send_with((self.now)(), route, action, options)
                .map_err(RouteFailed::Route)?;
            s.waiters.insert(
                (routed.server.clone(), routed.id.clone()),
                Waiter::default(),
            );
            Ok(routed)
        })
    }

    /// Sends `action` where `route` says: a named server's shard, or for a policy the
    /// shards in the policy's order (round-robin: from a rotating shard; fewest in flight:
    /// the shard whose least-loaded ready server has the fewest first), each shard picking
    /// among its own servers by the same policy. `NoServer` adds up every shard's refusal.
    pub(crate) fn send(
        &self,
        route: Route<'_>,
        action: Action,
        options: SendOptions,
    ) -> Result<(Shard, Routed), RouteFailed> {
        let policy = match route {
            Route::Server(name) => {
                let shard = self.shard_of(name).cloned().ok_or_else(|| {
                    RouteFailed::Route(RouteError::UnknownServer(name.to_string()))
                })?;
                let routed = self.send_on(&shard, route, action, options)?;
                return Ok((shard, routed));
            }
            Route::Any(policy) => Some(policy),
            _ => None,
        };
        let n = self.shards.len();
        let start = lock(&self.dir).rr % n;
        let mut order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        if policy == Some(Policy::FewestInFlight) {
            // Stable: ties keep the rotating order.
            order.sort_by_key(|&i| {
                self.shards
                    .get(i)
                    .and_then(|s| s.lock().fleet.least_in_flight())
                    .unwrap_or(usize::MAX)
            });
        }
        let (mut servers, mut ready, mut full) = (0, 0, 0);
        for i in order {
            let Some(shard) = self.shards.get(i) else {
                continue;
            };
            match self.send_on(shard, route, action.clone(), options) {
                Ok(routed) => {
                    lock(&self.dir).rr = i + 1;
                    return Ok((shard.clone(), routed));
                }
                Err(RouteFailed::Route(RouteError::NoServer {
                    servers: s,
                    ready: r,
                    full: f,
                })) => {
                    servers += s;
                    ready += r;
                    full += f;
                }
                Err(RouteFailed::Closed) => {}
                Err(e) => return Err(e),
            }
        }
        let mut dir = lock(&self.dir);
        if dir.closed {
            return Err(RouteFailed::Closed);
        }
        dir.no_server += 1;
        Err(RouteFailed::Route(RouteError::NoServer {
            servers,
            ready,
            full,
        }))
    }

    /// `f` of every server that has a value, shard by shard, each in slot order.
    fn per_server<T>(
        &self,
        f: impl Fn(&super::shared::Shared<Endpoint>, &ServerName) -> Option<T>,
    ) -> Vec<(ServerName, T)> {
        let mut all = Vec::new();
        for shard in &self.shards {
            let s = shard.lock();
            all.extend(
                s.fleet
                    .servers()
                    .filter_map(|(_, n)| Some((n.clone(), f(&s, n)?))),
            );
        }
        all
    }

    /// Every server and where it is now, shard by shard, each in slot order.
    pub(crate) fn statuses(&self) -> Vec<(ServerName, ServerStatus)> {
        self.per_server(|s, n| s.fleet.status(n.as_str()).cloned())
    }

    /// The driver's read counters of every server that has had a transport.
    pub(crate) fn read_counters(&self) -> Vec<(ServerName, ReadCounters)> {
        self.per_server(|s, n| Some(s.reads.get(n)?.snapshot()))
    }

    /// Every shard's stats as one fleet's: servers shard by shard, counters summed. The
    /// most connects in one step is the sum of the shards' own (each shard steps on its own
    /// clock, so that sum bounds any moment's), never above `connects_per_step`.
    pub(crate) fn stats(&self) -> FleetStats {
        let mut shards = self.shards.iter().map(|s| s.lock().fleet.stats());
        let Some(mut all) = shards.next() else {
            return Fleet::new(FleetConfig::default()).stats();
        };
        for s in shards {
            all.servers.extend(s.servers);
            all.total.merge(&s.total);
            for (a, b) in all.by_status.iter_mut().zip(s.by_status) {
                *a += b;
            }
            all.routed += s.routed;
            all.connects_started += s.connects_started;
            all.most_connects_in_a_step += s.most_connects_in_a_step;
            all.steps_with_deferred_connects += s.steps_with_deferred_connects;
            all.status_changes += s.status_changes;
            all.events_lost_on_removal += s.events_lost_on_removal;
            all.removal_gaps_dropped += s.removal_gaps_dropped;
            all.timer_entries += s.timer_entries;
            all.added += s.added;
            all.removed += s.removed;
        }
        all.no_server = lock(&self.dir).no_server;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint {
            target: ("127.0.0.1", 5038).into(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    fn config() -> ClientConfig {
        ClientConfig::builder("admin", "amp111").build().unwrap()
    }

    /// Transports each shard was asked to open so far.
    fn opens(shards: &Shards) -> Vec<usize> {
        shards.shards.iter().map(|s| s.lock().opens.len()).collect()
    }

    #[test]
    fn a_seeded_name_added_again_on_any_shard_never_reuses_action_ids() {
        // A name removed and added again may land on another shard, whose fleet has counted
        // as many additions as the first had: its IDs must still be new.
        let shards = Shards::new(FleetConfig::default(), 2, Instant::now);
        let seeded = ClientConfig::builder("admin", "amp111")
            .seed(7)
            .build()
            .unwrap();
        let mut prefixes = Vec::new();
        let mut on = Vec::new();
        for k in 0..8 {
            // A new server goes to the shard with the fewest (the first of equals): with a
            // filler added after each round, "pbx" lands on shard 0 and 1 in turn, each
            // time as its shard's addition number k / 2 * 2 + 1.
            shards.add("pbx", seeded.clone(), endpoint()).unwrap();
            let shard = shards.index_of("pbx").unwrap();
            on.push(shard);
            prefixes.push(shards.shards[shard].call(|s| {
                s.fleet
                    .client("pbx")
                    .unwrap()
                    .action_id_prefix()
                    .to_string()
            }));
            assert!(shards.remove("pbx"));
            shards
                .add(&format!("filler{k}"), config(), endpoint())
                .unwrap();
        }
        assert_eq!(on, [0, 1, 0, 1, 0, 1, 0, 1]);
        let mut distinct = prefixes.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), prefixes.len(), "{prefixes:?} on {on:?}");
    }

    #[test]
    fn each_shard_starts_its_share_of_the_fleet_connect_budget_per_step() {
        let mut fleet = FleetConfig::default();
        fleet.budget.connects_per_step = 3;
        fleet.max_servers = 13;
        // More shards than connects per step: capped, each may connect every step.
        let shards = Shards::new(fleet, 8, Instant::now);
        assert_eq!(shards.shards.len(), 3);
        for i in 0..12 {
            shards.add(&format!("s{i}"), config(), endpoint()).unwrap();
        }
        // Four servers each, one connect per shard and step: three fleet-wide.
        assert_eq!(opens(&shards), [1, 1, 1]);
        for step in 2..=4 {
            for shard in &shards.shards {
                shard.call(|s| s.fleet.handle_timeout(Instant::now()));
            }
            assert_eq!(opens(&shards), [step, step, step]);
        }
        let stats = shards.stats();
        assert_eq!(stats.most_connects_in_a_step, 3);
        assert_eq!(stats.servers.len(), 12);
        // One namespace and one cap for every shard.
        let again = shards.add("s4", config(), endpoint());
        assert!(
            matches!(again, Err(AddError::Refused(FleetError::DuplicateName(_)))),
            "{again:?}"
        );
        shards.add("s12", config(), endpoint()).unwrap();
        let full = shards.add("s13", config(), endpoint());
        assert!(
            matches!(full, Err(AddError::Refused(FleetError::Full { cap: 13 }))),
            "{full:?}"
        );
        assert!(shards.remove("s4"));
        assert!(shards.shard_of("s4").is_none());
        shards.add("s13", config(), endpoint()).unwrap();
    }

    #[test]
    fn connect_shares_add_up_to_the_budget_and_differ_by_at_most_one() {
        for budget in 1..40 {
            for shards in 1..=budget {
                let shares: Vec<usize> = (0..shards)
                    .map(|i| connect_share(budget, shards, i))
                    .collect();
                assert_eq!(shares.iter().sum::<usize>(), budget);
                assert!(shares.iter().all(|&s| s >= 1));
                let (lo, hi) = (shares.iter().min(), shares.iter().max());
                assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1));
            }
        }
    }
}
