//! Fleet-wide counters: per server and in total.

use super::name::ServerName;
use super::servers::Fleet;
use super::status::ServerStatus;
use crate::Stats;

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
    /// Events of the merged stream that came from it (and late answers, which its queue
    /// holds and counts as events: with `events_lost`, what its `events_queued` became).
    pub events_delivered: u64,
    /// Events it lost, as reported by the gap notices of the merged stream.
    pub events_lost: u64,
    /// Connects the fleet let it start.
    pub connects_started: u64,
}

/// A snapshot of a fleet, from [`Fleet::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// Each server, in slot order.
    pub servers: Vec<ServerStats>,
    /// Sums over the servers in the fleet now (counters and gauges; see [`Stats::merge`]): a
    /// removed server's counters leave it (its queued events: `events_lost_on_removal`).
    pub total: Stats,
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
    /// Events still queued for servers when they were removed (reported as gaps, unless
    /// `removal_gaps_dropped` says otherwise; with the drops of gap notices still queued,
    /// which their servers had counted as dropped).
    pub events_lost_on_removal: u64,
    /// Gap notices (and stream marks, late answers) of removed servers not queued for the
    /// reader because [`MAX_REMOVAL_GAPS`](super::MAX_REMOVAL_GAPS) waited already, or a late
    /// answer did not fit [`MAX_REMOVAL_BYTES`](super::MAX_REMOVAL_BYTES) (a gap's events are
    /// in `events_lost_on_removal` all the same).
    pub removal_gaps_dropped: u64,
    /// Entries in the fleet's timer heap, live and stale: at most twice the number of
    /// servers plus 64 (stale ones are dropped in bulk whenever they outnumber the live
    /// ones), however often deadlines move and however rarely the timer fires.
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
        let mut total = Stats::default();
        let mut by_status = [0usize; 6];
        let mut servers = Vec::with_capacity(self.len());
        for s in self.slots.iter().filter_map(|slot| slot.server.as_ref()) {
            let client = s.client.stats();
            total.merge(&client);
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
            removal_gaps_dropped: c.removal_gaps_dropped,
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
