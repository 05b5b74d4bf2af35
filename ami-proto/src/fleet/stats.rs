//! Fleet-wide counters: per server and in total.

use super::name::ServerName;
use super::servers::Fleet;
use super::status::ServerStatus;
use crate::{DisconnectReason, Latency, Outcome, Stats};

/// One server's figures, from [`Fleet::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// The server.
    pub name: ServerName,
    /// Where it is.
    pub status: ServerStatus,
    /// Its client's counters (bytes, messages, actions by outcome, disconnects by reason,
    /// latency...).
    pub client: Stats,
    /// Actions the fleet routed to it (by name or by policy).
    pub routed: u64,
    /// Events of the merged stream that came from it.
    pub events_delivered: u64,
    /// Events it lost, as reported by the gap notices of the merged stream.
    pub events_lost: u64,
    /// Connects the fleet let it start.
    pub connects_started: u64,
}

/// Sums over every server of the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Messages decoded.
    pub messages_in: u64,
    /// Events received.
    pub events_in: u64,
    /// Events dropped because the consumer was behind.
    pub events_dropped: u64,
    /// Actions written.
    pub actions_written: u64,
    /// Finished actions by outcome, indexed like [`Outcome::NAMES`].
    pub actions_by_outcome: [u64; 7],
    /// Session losses by reason, indexed like [`DisconnectReason::NAMES`].
    pub disconnects_by_reason: [u64; 13],
    /// Connects requested by the clients.
    pub connects: u64,
    /// Logins that reached Ready.
    pub logins: u64,
    /// Times a breaker opened.
    pub breaker_opened: u64,
    /// Actions pending now.
    pub pending: usize,
    /// Events queued now, over all servers.
    pub event_queue_len: usize,
    /// Action latency over all servers.
    pub latency: Latency,
}

impl Totals {
    fn add(&mut self, s: &Stats) {
        self.bytes_in += s.bytes_in;
        self.bytes_out += s.bytes_out;
        self.messages_in += s.messages_in;
        self.events_in += s.events_in;
        self.events_dropped += s.events_dropped;
        self.actions_written += s.actions_written;
        for (t, v) in self.actions_by_outcome.iter_mut().zip(s.actions_by_outcome) {
            *t += v;
        }
        for (t, v) in self
            .disconnects_by_reason
            .iter_mut()
            .zip(s.disconnects_by_reason)
        {
            *t += v;
        }
        self.connects += s.connects;
        self.logins += s.logins;
        self.breaker_opened += s.breaker_opened;
        self.pending += s.pending;
        self.event_queue_len += s.event_queue_len;
        self.latency.merge(&s.latency);
    }

    /// Finished actions with this outcome kind (see [`Outcome::NAMES`]).
    pub fn outcome_count(&self, name: &str) -> u64 {
        Outcome::NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.actions_by_outcome[i])
    }

    /// Session losses for this reason (see [`DisconnectReason::NAMES`]).
    pub fn disconnect_count(&self, name: &str) -> u64 {
        DisconnectReason::NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.disconnects_by_reason[i])
    }
}

/// A snapshot of a fleet, from [`Fleet::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// Each server, in slot order.
    pub servers: Vec<ServerStats>,
    /// Sums over the servers.
    pub total: Totals,
    /// Servers per status label (see [`ServerStatus::label`]), in the labels' order:
    /// connecting, logging in, ready, backing off, breaker open, closed.
    pub by_status: [usize; 6],
    /// Actions routed (by name or policy) and accepted.
    pub routed: u64,
    /// Sends refused with [`RouteError::NoServer`](super::RouteError::NoServer).
    pub no_server: u64,
    /// Connects the fleet let start.
    pub connects_started: u64,
    /// The most connects started in one step (never above `connects_per_step`).
    pub most_connects_in_a_step: usize,
    /// Steps that ended with connects still waiting for budget.
    pub steps_with_deferred_connects: u64,
    /// Status changes so far (a version number for a status watch).
    pub status_changes: u64,
    /// Events still queued for servers when they were removed (reported as gaps).
    pub events_lost_on_removal: u64,
    /// Entries in the fleet's timer heap, live and stale: at most about three per server
    /// (stale ones are dropped in bulk), however often deadlines move.
    pub timer_entries: usize,
    /// Servers added and removed so far.
    pub added: u64,
    /// See `added`.
    pub removed: u64,
}

/// The order of [`FleetStats::by_status`].
pub const STATUS_LABELS: [&str; 6] = [
    "connecting",
    "logging_in",
    "ready",
    "backing_off",
    "breaker_open",
    "closed",
];

impl Fleet {
    /// A snapshot of every server's counters and the fleet's own. Costs one `Client::stats`
    /// per server: meant for reporting, not for every step.
    pub fn stats(&self) -> FleetStats {
        let mut total = Totals::default();
        let mut by_status = [0usize; 6];
        let mut servers = Vec::with_capacity(self.len());
        for s in self.slots.iter().filter_map(|slot| slot.server.as_ref()) {
            let client = s.client.stats();
            total.add(&client);
            if let Some(i) = STATUS_LABELS.iter().position(|l| *l == s.status.label()) {
                by_status[i] += 1;
            }
            servers.push(ServerStats {
                name: s.name.clone(),
                status: s.status.clone(),
                client,
                routed: s.counters.routed,
                events_delivered: s.counters.events_delivered,
                events_lost: s.counters.events_lost,
                connects_started: s.counters.connects_started,
            });
        }
        let c = &self.counters;
        FleetStats {
            servers,
            total,
            by_status,
            routed: c.routed,
            no_server: c.no_server,
            connects_started: c.connects_started,
            most_connects_in_a_step: c.most_connects_in_a_step,
            steps_with_deferred_connects: c.steps_with_deferred_connects,
            status_changes: c.status_changes,
            events_lost_on_removal: c.events_lost_on_removal,
            timer_entries: self.timers.len(),
            added: c.added,
            removed: c.removed,
        }
    }

    /// Status changes so far: a cheap version number for a status watch (it moves exactly
    /// when a [`FleetOutput::Status`](super::FleetOutput::Status) is queued).
    pub fn status_version(&self) -> u64 {
        self.counters.status_changes
    }
}
