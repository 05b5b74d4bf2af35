//! The fleet's next deadlines: one min-heap over every server's next wake-up, so a step costs
//! the servers that are due, not all of them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Entries are `(deadline, slot index, generation)`. A server whose deadline moves pushes a
/// new entry and leaves the old one behind; an entry is live only while it matches the
/// server's current deadline, which the fleet checks when it pops. Stale entries are dropped
/// in bulk once they outnumber the live ones, so the heap stays within a small multiple of
/// the fleet size however often deadlines move (every byte received re-arms the heartbeat).
#[derive(Debug, Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl TimerHeap {
    pub(crate) fn push(&mut self, at: Instant, index: usize, generation: u64) {
        self.heap.push(Reverse((at, index, generation)));
    }

    /// The earliest entry, live or stale.
    pub(crate) fn peek(&self) -> Option<(Instant, usize, u64)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    /// Removes the earliest entry.
    pub(crate) fn pop(&mut self) -> Option<(Instant, usize, u64)> {
        self.heap.pop().map(|Reverse(e)| e)
    }

    /// True when a rebuild from the live deadlines would shrink the heap a lot.
    pub(crate) fn needs_compaction(&self, live: usize) -> bool {
        self.heap.len() > 2 * live + 64
    }

    /// Replaces every entry with `live`.
    pub(crate) fn rebuild(&mut self, live: impl Iterator<Item = (Instant, usize, u64)>) {
        self.heap = live.map(Reverse).collect();
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}
