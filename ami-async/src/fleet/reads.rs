//! Per-server counters of the fleet driver's reads (a diagnostic): how often each server's
//! transport was visited, read, found empty or held for the stream's reader. Fair reads mean
//! servers that always have input get the same number of reads; these counters show it.

use std::sync::atomic::{AtomicU64, Ordering};

/// One server's driver counters, over all its connections so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadCounters {
    /// Turns the driver gave the server (one read at most each).
    pub visits: u64,
    /// Reads that brought bytes.
    pub reads: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Reads that found nothing (the transport's waker then brings it back).
    pub empty: u64,
    /// Turns spent waiting for the stream's reader instead of reading (the server's client
    /// did not want reads: its event queue held `READ_AHEAD_BYTES` or half a cap).
    pub holds: u64,
}

/// The live counters, written by the driver only (relaxed atomics: a snapshot may be a
/// moment old, never torn per field).
#[derive(Debug, Default)]
pub(crate) struct ReadTally {
    visits: AtomicU64,
    reads: AtomicU64,
    bytes: AtomicU64,
    empty: AtomicU64,
    holds: AtomicU64,
}

impl ReadTally {
    pub(crate) fn visit(&self) {
        self.visits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self, n: usize) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn empty(&self) {
        self.empty.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hold(&self) {
        self.holds.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ReadCounters {
        ReadCounters {
            visits: self.visits.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            empty: self.empty.load(Ordering::Relaxed),
            holds: self.holds.load(Ordering::Relaxed),
        }
    }
}
