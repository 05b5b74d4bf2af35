//! `Stats`: a snapshot of what the client has seen and done.

use super::counts::Counts;
use super::output::{DisconnectKind, OutcomeKind};
use crate::wire::decoder::DecoderStats;
use std::time::Duration;

/// Counters and gauges of one [`Client`](crate::Client), from [`Client::stats`].
///
/// [`Client::stats`]: crate::Client::stats
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// AMI bytes received from the server (what `Input::Received` carried on an open
    /// transport): over TLS, the decrypted plaintext, not the ciphertext read from the socket.
    pub bytes_in: u64,
    /// AMI bytes handed to the transport: what the adapter acknowledged with
    /// `advance_transmit`. Over plain TCP, bytes the socket took. Over TLS, plaintext the
    /// TLS session took, which may still wait, encrypted, in that session's own bounded
    /// buffer for the socket: not the ciphertext written (records, handshake and alerts
    /// add to that), nor proof that it left the machine.
    pub bytes_out: u64,
    /// Messages decoded.
    pub messages_in: u64,
    /// Events received (all, including list items and follow-ups).
    pub events_in: u64,
    /// Events queued for the consumer, and [late answers](crate::StreamItem::LateAnswer),
    /// which the queue holds as events.
    pub events_queued: u64,
    /// Events dropped because the consumer was behind (each one also reaches the stream as
    /// part of a gap notice), and late answers dropped so.
    pub events_dropped: u64,
    /// List items dropped after a list overflowed, or for an action already abandoned.
    pub list_items_dropped: u64,
    /// Lists that completed with another number of items than their `ListItems` declared
    /// (each one logged): items may have been lost where the client could not see it. The
    /// list still completes as what arrived.
    pub list_count_mismatches: u64,
    /// Answers that came for an action after it had ended (timed out, cancelled, overflowed)
    /// and were dropped, since nobody waits for them: late responses, a late list's
    /// `Complete`, a late follow-up event (`FAXStats`...). A late list's items are counted in
    /// `list_items_dropped`, and a late `OriginateResponse` goes to the event stream. The
    /// first response of an action that ended without it is counted here too, and also
    /// reported in the event stream as [`StreamItem::LateAnswer`](crate::StreamItem::LateAnswer)
    /// (the action keeps its outcome).
    pub late_answers_dropped: u64,
    /// Abandoned entries (see `abandoned_actions`) forgotten before their grace period
    /// ended because `max_abandoned_actions` of them were tracked already: the oldest goes
    /// first. Each is logged (rate-limited); its late answers, if any come, are counted in
    /// `evicted_answers_dropped`.
    pub abandoned_evicted: u64,
    /// Answers (responses, list items, follow-up events) that came for an action whose
    /// abandoned entry had been evicted (`abandoned_evicted`), dropped since nobody waits
    /// for them: not counted as unmatched responses, nor streamed as events. Once an entry
    /// was evicted on a connection, every answer carrying an ActionID of that connection
    /// up to the evicted one's that matches nothing pending is counted here (the client no
    /// longer tells an entry evicted from one that ended its grace period). A late
    /// `OriginateResponse` still goes to the event stream.
    pub evicted_answers_dropped: u64,
    /// Responses whose ActionID matched nothing pending, and second responses to an action
    /// that had its own (an async Originate waiting for its `OriginateResponse`).
    pub unmatched: u64,
    /// Messages that were neither response nor event.
    pub unexpected: u64,
    /// Server inputs thrown away, all reasons: decoder errors (see `decoder`), messages that
    /// were neither response nor event, unmatched responses. Each one also reached the event
    /// stream as part of a [`StreamItem::Discarded`](crate::StreamItem::Discarded) notice.
    pub discarded: u64,
    /// Caller actions written: the transport took at least their first byte.
    pub actions_written: u64,
    /// Actions whose encoded bytes were withdrawn from the transmit buffer and never sent,
    /// none of them being handed out (written, or lent to an adapter that writes from a
    /// copy): the caller's and the client's own (Login, heartbeat Ping, Logoff, filters)
    /// whose deadline passed meanwhile (the server had stopped reading, or the transport was
    /// slow; a caller's action completed `TimedOut` in
    /// [`Phase::Queued`](crate::Phase::Queued)), caller actions cancelled meanwhile, and
    /// caller actions that ended (cancelled, timed out) while lent and were then given back
    /// unwritten (`Client::unlend_transmit`).
    pub actions_withdrawn: u64,
    /// Finished actions by outcome kind.
    pub actions_by_outcome: Counts<OutcomeKind>,
    /// Session losses by reason kind.
    pub disconnects_by_reason: Counts<DisconnectKind>,
    /// Transport opens requested.
    pub connects: u64,
    /// Times the session reached Ready.
    pub logins: u64,
    /// Times the circuit breaker opened.
    pub breaker_opened: u64,
    /// Filters the client installs itself at a login (configured with
    /// `ClientConfigBuilder::filter` or `prefilter`, or added before and re-applied) that
    /// the server refused (a user without `write=system`) or did not answer in time: each
    /// such session went on, maybe unfiltered. Also logged at warn; here for an
    /// application with no logger.
    pub filters_failed: u64,
    /// The decoder's counters (limits broken, bytes discarded, stray blank lines).
    pub decoder: DecoderStats,
    /// Caller actions tracked now (queued, written, gathering, awaiting a follow-up).
    pub pending: usize,
    /// Actions that ended (cancelled, timed out, overflowed) after their bytes were handed
    /// out, still tracked to swallow their late answers for a grace period: not counted in
    /// `pending`, capped by the config's `max_abandoned_actions`.
    pub abandoned_actions: usize,
    /// Caller actions waiting for room in the pipeline (`pipeline_depth`) or for the
    /// session to be ready: not encoded yet.
    pub queued: usize,
    /// Caller actions encoded into the transmit buffer and not fully answered: in the
    /// pipeline. Some of their bytes may not have reached the transport yet (while the
    /// server does not read, see `transmit_pending`); an action none of whose bytes left
    /// still fails `NotSent` if the session ends.
    pub in_flight: usize,
    /// Events waiting for the consumer.
    pub event_queue_len: usize,
    /// Bytes kept alive by the events waiting for the consumer (never above the config's
    /// `event_queue_bytes`).
    pub event_queue_bytes: usize,
    /// Bytes the event queue's own buffer has allocated (its capacity in items times an
    /// item's size, apart from the events' bytes in `event_queue_bytes`): grown by a backlog
    /// the consumer fell behind on (at most `event_queue_cap` items) and kept for the next
    /// one, so a quiet server still holds its largest backlog's buffer.
    pub event_queue_allocated: usize,
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
    /// Finished actions of this kind.
    pub fn outcome_count(&self, kind: OutcomeKind) -> u64 {
        self.actions_by_outcome.get(kind)
    }

    /// Session losses of this kind.
    pub fn disconnect_count(&self, kind: DisconnectKind) -> u64 {
        self.disconnects_by_reason.get(kind)
    }

    /// Adds `other`'s counters and gauges to these: the sum over a fleet's servers.
    pub fn merge(&mut self, other: &Stats) {
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.messages_in += other.messages_in;
        self.events_in += other.events_in;
        self.events_queued += other.events_queued;
        self.events_dropped += other.events_dropped;
        self.list_items_dropped += other.list_items_dropped;
        self.list_count_mismatches += other.list_count_mismatches;
        self.late_answers_dropped += other.late_answers_dropped;
        self.abandoned_evicted += other.abandoned_evicted;
        self.evicted_answers_dropped += other.evicted_answers_dropped;
        self.unmatched += other.unmatched;
        self.unexpected += other.unexpected;
        self.discarded += other.discarded;
        self.actions_written += other.actions_written;
        self.actions_withdrawn += other.actions_withdrawn;
        self.actions_by_outcome.merge(&other.actions_by_outcome);
        self.disconnects_by_reason
            .merge(&other.disconnects_by_reason);
        self.connects += other.connects;
        self.logins += other.logins;
        self.breaker_opened += other.breaker_opened;
        self.filters_failed += other.filters_failed;
        self.decoder.merge(&other.decoder);
        self.pending += other.pending;
        self.abandoned_actions += other.abandoned_actions;
        self.queued += other.queued;
        self.in_flight += other.in_flight;
        self.event_queue_len += other.event_queue_len;
        self.event_queue_bytes += other.event_queue_bytes;
        self.event_queue_allocated += other.event_queue_allocated;
        self.decoder_allocated += other.decoder_allocated;
        self.decoder_buffered += other.decoder_buffered;
        self.transmit_pending += other.transmit_pending;
        self.latency.merge(&other.latency);
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
    fn merge_sums_counters_gauges_and_latency() {
        let mut a = Stats {
            bytes_in: 10,
            pending: 2,
            ..Stats::default()
        };
        a.actions_by_outcome.add(crate::OutcomeKind::Success);
        a.latency.record(Duration::from_millis(1));
        let mut b = Stats {
            bytes_in: 5,
            pending: 1,
            ..Stats::default()
        };
        b.actions_by_outcome.add(crate::OutcomeKind::Success);
        b.disconnects_by_reason.add(crate::DisconnectKind::Eof);
        b.decoder.messages = 7;
        b.latency.record(Duration::from_millis(3));
        a.merge(&b);
        assert_eq!((a.bytes_in, a.pending, a.decoder.messages), (15, 3, 7));
        assert_eq!(a.outcome_count(crate::OutcomeKind::Success), 2);
        assert_eq!(a.disconnect_count(crate::DisconnectKind::Eof), 1);
        assert_eq!(a.latency.count(), 2);
        assert_eq!(a.latency.max(), Some(Duration::from_millis(3)));
    }

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

    #[test]
    fn merging_a_server_twice_doubles_every_counter_and_gauge() {
        let mut one = Stats::default();
        let mut n = 0u64;
        // Distinct values, so a field summed into another's place shows too.
        macro_rules! set_each {
            ($($field:ident),* $(,)?) => {
                $(n += 1; one.$field = n as _;)*
            };
        }
        macro_rules! doubled_each {
            ($twice:expr, $($field:ident),* $(,)?) => {
                $(assert_eq!($twice.$field, 2 * one.$field, stringify!($field));)*
            };
        }
        // Every field, listed once for both uses below.
        macro_rules! with_every_field {
            ($mac:ident $(, $arg:expr)?) => {
                $mac!(
                    $($arg,)?
                    bytes_in,
                    bytes_out,
                    messages_in,
                    events_in,
                    events_queued,
                    events_dropped,
                    list_items_dropped,
                    list_count_mismatches,
                    late_answers_dropped,
                    abandoned_evicted,
                    evicted_answers_dropped,
                    unmatched,
                    unexpected,
                    discarded,
                    actions_written,
                    actions_withdrawn,
                    connects,
                    logins,
                    breaker_opened,
                    filters_failed,
                    pending,
                    abandoned_actions,
                    queued,
                    in_flight,
                    event_queue_len,
                    event_queue_bytes,
                    event_queue_allocated,
                    decoder_allocated,
                    decoder_buffered,
                    transmit_pending,
                )
            };
        }
        with_every_field!(set_each);
        one.actions_by_outcome.add(crate::OutcomeKind::Success);
        one.disconnects_by_reason.add(crate::DisconnectKind::Eof);
        one.decoder.messages = 7;
        for ms in [1, 3, 40] {
            one.latency.record(Duration::from_millis(ms));
        }
        let mut twice = Stats::default();
        twice.merge(&one);
        twice.merge(&one);
        with_every_field!(doubled_each, twice);
        assert_eq!(twice.outcome_count(crate::OutcomeKind::Success), 2);
        assert_eq!(twice.outcome_count(crate::OutcomeKind::Cancelled), 0);
        assert_eq!(twice.disconnect_count(crate::DisconnectKind::Eof), 2);
        assert_eq!(
            twice.disconnect_count(crate::DisconnectKind::ConnectFailed),
            0
        );
        assert_eq!(twice.decoder.messages, 14);
        let mut latency = Latency::default();
        for ms in [1, 3, 40, 1, 3, 40] {
            latency.record(Duration::from_millis(ms));
        }
        assert_eq!(
            twice.latency, latency,
            "the same as every answer measured in one"
        );
        assert_eq!(twice.latency.mean(), Some(Duration::from_micros(14_666)));
    }

    #[test]
    fn latency_quantiles_are_the_upper_bound_of_their_power_of_two_bucket() {
        let empty = Latency::default();
        assert_eq!(
            (empty.min(), empty.max(), empty.mean(), empty.quantile(0.5)),
            (None, None, None, None)
        );
        let mut l = Latency::default();
        // 1000 us in [512, 1024), 2000 and 2047 in [1024, 2048), 3000 in [2048, 4096).
        for us in [1_000u64, 2_000, 2_047, 3_000] {
            l.record(Duration::from_micros(us));
        }
        let q = |q| l.quantile(q).map(|d| d.as_micros());
        assert_eq!(q(0.0), Some(1_023), "the first answer's bucket");
        assert_eq!(q(0.25), Some(1_023));
        assert_eq!(q(0.5), Some(2_047));
        assert_eq!(q(0.75), Some(2_047));
        assert_eq!(q(1.0), Some(3_000), "never above the longest");
        let mut instant = Latency::default();
        instant.record(Duration::ZERO);
        assert_eq!(instant.quantile(1.0), Some(Duration::ZERO));
        assert_eq!(instant.min(), Some(Duration::ZERO));
    }
}
