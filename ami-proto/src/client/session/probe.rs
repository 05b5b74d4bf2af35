//! Cheap questions about a client's state, for a fleet that routes and reports over many.

use super::*;

/// Bytes of queued events at which [`Client::wants_read`] says the consumer is behind,
/// whatever the caps (half of them otherwise: 32,768 events or 8 MiB by default); see also
/// [`READ_AHEAD_EVENTS`]. A consumer this far behind is the bottleneck, and decoding further
/// ahead only leaves events waiting in memory that has gone cold by the time they are taken,
/// and pins more read buffers, while the same bytes wait as well in the kernel's socket
/// buffer. Measured against half the caps: `stream_rate` (one session, 500-byte events, 3
/// runs) async-std `recv()` 3.22-3.33 -> 3.03-3.24 M events/s, peak RSS 15.9-16.0 -> 7.3-7.5
/// MiB; tokio 2.73-2.96 -> 2.62-2.83 M/s, 20.1-23.5 -> 9.4-9.9 MiB; `fleet_loopback`, ten
/// flooding servers (73-byte events): 4.2-4.6 -> 5.5-5.7 M events/s. 256 KiB starved a lone
/// session's hand-off (async-std 2.3 M/s) and a lone fleet server's 500-byte events (`ami
/// bench`, 1.30 vs 1.53 M/s); 4 MiB let ten servers' small events go cold again (5.0-5.2 M).
pub const READ_AHEAD_BYTES: usize = 2 << 20;

/// Queued events at which [`Client::wants_read`] says the consumer is behind, for small
/// events (2 MiB of 73-byte events are 17,000): four of a fleet reader's batches.
/// `fleet_loopback`, ten flooding servers: 5.3-5.5 M events/s with the bytes alone, 5.5-5.7
/// with this too.
pub const READ_AHEAD_EVENTS: usize = 4096;

impl Client {
    /// True while the circuit breaker is open: the last `breaker_threshold` sessions failed
    /// in a row, and the client waits the breaker cooldown before its next connect.
    pub fn is_breaker_open(&self) -> bool {
        self.state == State::Backoff && self.backoff.is_breaker_open()
    }

    /// Caller actions tracked now (queued, written, gathering, awaiting a follow-up); the
    /// same figure as `Stats::pending`, without building a snapshot.
    pub fn pending_actions(&self) -> usize {
        self.pending.user_count()
    }

    /// True while the event queue holds at least half of either of its caps (count or
    /// bytes): the consumer is behind. An adapter whose consumer runs apart from its reader
    /// may hold its next read for a while (bounded) so the consumer catches up, instead of
    /// decoding events only for the queue to drop them; [`wants_read`](Self::wants_read)
    /// adds a read-ahead in bytes and events to this.
    pub fn event_queue_half_full(&self) -> bool {
        self.events.len() >= self.config.event_queue_cap.div_ceil(2)
            || self.events.bytes() >= self.config.event_queue_bytes.div_ceil(2)
    }

    /// False while the consumer is behind: the event queue holds [`READ_AHEAD_BYTES`] or
    /// [`READ_AHEAD_EVENTS`] of events, or half of either of its caps. An adapter whose
    /// consumer runs apart from its reader may then hold its next read for a while (bounded,
    /// so that responses and heartbeats are still read when the consumer stalls, its queue
    /// then dropping as for any slow consumer), instead of decoding events only for them to
    /// wait, or for the queue to drop them.
    pub fn wants_read(&self) -> bool {
        !self.event_queue_half_full()
            && self.events.bytes() < READ_AHEAD_BYTES
            && self.events.len() < READ_AHEAD_EVENTS
    }

    /// Bytes the queued events will own once taken out (what `event_queue_bytes` caps).
    pub fn events_queued_bytes(&self) -> usize {
        self.events.bytes()
    }

    /// True when [`poll_event`](Self::poll_event) has an item (an event, a gap notice, or
    /// any other stream item). `events_queued` counts events only.
    pub fn has_stream_items(&self) -> bool {
        self.events.has_items()
    }
}
