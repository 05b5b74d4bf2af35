//! Cheap questions about a client's state, for a fleet that routes and reports over many.

use super::*;

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
    /// decoding events only for the queue to drop them (see `Fleet::wants_read`).
    pub fn event_queue_half_full(&self) -> bool {
        self.events.len() >= self.config.event_queue_cap.div_ceil(2)
            || self.events.bytes() >= self.config.event_queue_bytes.div_ceil(2)
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
