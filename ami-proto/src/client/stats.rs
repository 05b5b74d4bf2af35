//! `Stats`: a snapshot of what the client has seen and done.

use super::output::{DisconnectReason, Outcome};
use crate::wire::decoder::DecoderStats;
use std::time::Duration;

/// Counters and gauges of one [`Client`](crate::Client), from [`Client::stats`].
///
/// [`Client::stats`]: crate::Client::stats
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes received from the server.
    pub bytes_in: u64,
    /// Bytes handed to the transport (acknowledged with `advance_transmit`).
    pub bytes_out: u64,
    /// Messages decoded.
    pub messages_in: u64,
    /// Events received (all, including list items and follow-ups).
    pub events_in: u64,
    /// Events queued for the consumer.
    pub events_queued: u64,
    /// Events dropped because the consumer was behind (each one also reaches the stream as
    /// part of a gap notice).
    pub events_dropped: u64,
    /// List items dropped after a list overflowed, or for an action already abandoned.
    pub list_items_dropped: u64,
    /// Responses and list events whose ActionID matched nothing pending.
    pub unmatched: u64,
    /// Messages that were neither response nor event.
    pub unexpected: u64,
    /// Server inputs thrown away, all reasons: decoder errors (see `decoder`), messages that
    /// were neither response nor event, unmatched responses. Each one also reached the event
    /// stream as part of a [`StreamItem::Discarded`](crate::StreamItem::Discarded) notice.
    pub discarded: u64,
    /// Actions written to the transport.
    pub actions_written: u64,
    /// Finished actions by outcome, indexed like [`Outcome::NAMES`].
    pub actions_by_outcome: [u64; 7],
    /// Session losses by reason, indexed like [`DisconnectReason::NAMES`].
    pub disconnects_by_reason: [u64; 13],
    /// Transport opens requested.
    pub connects: u64,
    /// Times the session reached Ready.
    pub logins: u64,
    /// Times the circuit breaker opened.
    pub breaker_opened: u64,
    /// The decoder's counters (limits broken, bytes discarded, stray blank lines).
    pub decoder: DecoderStats,
    /// Caller actions tracked now (queued, written, gathering, awaiting a follow-up).
    pub pending: usize,
    /// Caller actions waiting to be written.
    pub queued: usize,
    /// Caller actions written and not fully answered.
    pub in_flight: usize,
    /// Events waiting for the consumer.
    pub event_queue_len: usize,
    /// Bytes kept alive by the events waiting for the consumer (never above the config's
    /// `event_queue_bytes`).
    pub event_queue_bytes: usize,
    /// Bytes the decoder's read buffer has allocated (never above its `buffer_cap`).
    pub decoder_allocated: usize,
    /// Bytes held by the decoder (never above its `buffer_cap`).
    pub decoder_buffered: usize,
    /// Bytes encoded and not yet taken by the transport (bounded by the pipeline depth).
    pub transmit_pending: usize,
    /// Time from write to the server's answer, for actions the server answered.
    pub latency: Latency,
}

impl Stats {
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

/// A latency summary: exact count, min, max and mean; percentiles from power-of-two buckets
/// (each reported as its bucket's upper bound, so at most 2x high).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latency {
    count: u64,
    sum_us: u128,
    min_us: u64,
    max_us: u64,
    buckets: [u64; 40],
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            count: 0,
            sum_us: 0,
            min_us: u64::MAX,
            max_us: 0,
            buckets: [0; 40],
        }
    }
}

impl Latency {
    pub(crate) fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.count += 1;
        self.sum_us += u128::from(us);
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
        let bucket = (64 - us.leading_zeros() as usize).min(39);
        self.buckets[bucket] += 1;
    }
    /// Adds `other`'s measurements to these (fleet-wide totals).
    pub fn merge(&mut self, other: &Latency) {
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
        for (b, o) in self.buckets.iter_mut().zip(other.buckets) {
            *b += o;
        }
    }
    /// Answers measured.
    pub fn count(&self) -> u64 {
        self.count
    }
    /// Shortest.
    pub fn min(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.min_us))
    }
    /// Longest.
    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.max_us))
    }
    /// Mean.
    pub fn mean(&self) -> Option<Duration> {
        let mean = self.sum_us.checked_div(u128::from(self.count))?;
        Some(Duration::from_micros(
            u64::try_from(mean).unwrap_or(u64::MAX),
        ))
    }
    /// Upper bound of the bucket holding the `q` quantile (`q` in 0..=1).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let upper = if i == 0 { 0 } else { (1u64 << i) - 1 };
                return Some(Duration::from_micros(upper.min(self.max_us)));
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary() {
        let mut l = Latency::default();
        assert_eq!(l.mean(), None);
        for ms in [1u64, 2, 3, 100] {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.count(), 4);
        assert_eq!(l.min(), Some(Duration::from_millis(1)));
        assert_eq!(l.max(), Some(Duration::from_millis(100)));
        assert_eq!(l.mean(), Some(Duration::from_micros(26_500)));
        let p50 = l.quantile(0.5).unwrap();
        assert!(p50 >= Duration::from_millis(2) && p50 <= Duration::from_millis(4));
        assert_eq!(l.quantile(1.0), Some(Duration::from_millis(100)));
    }
}
