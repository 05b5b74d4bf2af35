//! Late answers: the server's answer to an action request that ended without it.
//!
//! A request answered `timed_out` (written, no answer in time: "it may have run"), or
//! given up by a stop once written, may still be answered by Asterisk moments later. The
//! core reports that answer once, in the server's event stream, as
//! [`StreamItem::LateAnswer`](ami_proto::StreamItem::LateAnswer) with the mark the action
//! was sent with. Every action the bridge sends carries an answer mark of its own
//! (`SendOptions::with_answer_mark`: nothing in the event stream, no place in the event
//! queue, so a publisher held at its backlog cap cannot get actions refused), unique in
//! this process, and [`LateAnswers`] keeps, per mark, what a late answer needs: the request's
//! idempotency key and, once it is known, the `timed_out` reply stored there.
//!
//! The publisher then publishes the answer on the server's event subject
//! (`ami.<server>.event.late_answer`, de-duplicated like every item of the session) and,
//! when the key still holds this request's `timed_out` reply, replaces it (compare-and-set
//! on its revision: any other write meanwhile wins) with the server's real answer marked
//! `"late":true`, so a retry with the key is answered `duplicate` with what the server
//! did. That store runs in a task of its own, bounded in time and in number at once: it
//! never holds the publishing up.
//!
//! Bounded: at most [`BridgeConfig::max_late_answer_requests`](crate::BridgeConfig::max_late_answer_requests)
//! requests and [`MAX_BYTES`] bytes are kept; an entry lives while its action runs and for
//! the core's own grace period after it ended (the server's `action_timeout`, within which
//! the core still recognises a late answer), plus [`MARGIN`]. At the cap the oldest entry
//! is dropped, counted in `ami_bridge_late_answer_requests_dropped_total` and logged (at
//! powers of two of the count); its late answer is still published, with
//! `"idempotency_key":null`, and its key keeps the `timed_out` reply.

use crate::idempotency::is_pending;
use async_nats::jetstream::kv::{Store, UpdateErrorKind};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Default most requests kept for their late answers.
pub(crate) const DEFAULT_MAX_REQUESTS: usize = 4096;
/// Most bytes kept for them (keys and stored replies): with the default count and the
/// longest keys and replies of a `timed_out`, about half of it.
pub(crate) const MAX_BYTES: usize = 2 << 20;
/// What an entry costs besides its key and stored reply.
const ENTRY_OVERHEAD: usize = 96;
/// Kept past the core's grace period: the core checks its deadlines at its own ticks, and
/// the stream item may wait in its queue a moment before the publisher reads it.
pub(crate) const MARGIN: Duration = Duration::from_secs(2);
/// Longest one store of a late answer at its key may take (NATS slow): then given up,
/// counted and logged; the key keeps its `timed_out` reply.
pub(crate) const STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// Stores of late answers under way at once; one more is given up at once (counted and
/// logged): each holds the server's response.
const STORES_AT_ONCE: usize = 64;
/// How often a store looks at the key again while the `timed_out` reply it is to replace
/// has not landed yet (its requester's store still under way).
const STORE_POLL: Duration = Duration::from_millis(50);

/// What is kept of one request for its late answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// Its idempotency key, if it had one.
    pub(crate) key: Option<String>,
    /// The `timed_out` reply stored (or being stored) at the key, if it was answered so.
    pub(crate) timed_out: Option<TimedOut>,
    /// Forgotten after this.
    expires: Instant,
}

/// A `timed_out` reply of a request with a key, as stored at the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimedOut {
    /// The server the action went to (the `"server"` of the stored answer).
    pub(crate) server: String,
    /// The reply, byte for byte: the key is replaced only while it holds exactly this.
    pub(crate) reply: Bytes,
    /// The revision it was stored at, once NATS said so.
    pub(crate) revision: Option<u64>,
}

impl Request {
    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD
            + self.key.as_ref().map_or(0, String::len)
            + self
                .timed_out
                .as_ref()
                .map_or(0, |t| t.server.len() + t.reply.len())
    }
}

/// The requests kept, by mark (in the order they were sent).
#[derive(Debug)]
struct Entries {
    map: BTreeMap<u64, Request>,
    bytes: usize,
    max: usize,
    /// Registrations since expired entries were last swept out.
    since_sweep: usize,
}

impl Entries {
    fn remove(&mut self, mark: u64) -> Option<Request> {
        let r = self.map.remove(&mark)?;
        self.bytes = self.bytes.saturating_sub(r.bytes());
        Some(r)
    }

    fn sweep(&mut self, now: Instant) {
        let mut freed = 0;
        self.map.retain(|_, r| {
            let keep = r.expires > now;
            if !keep {
                freed += r.bytes();
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        self.since_sweep = 0;
    }

    /// Keeps the `timed_out` reply of request `mark` ([`LateAnswers::timed_out`]): how
    /// many requests were dropped to make room.
    fn set_timed_out(
        &mut self,
        mark: u64,
        server: &str,
        reply: &Bytes,
        revision: Option<u64>,
    ) -> u64 {
        let Some(r) = self.map.get_mut(&mark) else {
            return 0;
        };
        if let Some(t) = r.timed_out.as_mut() {
            t.revision = revision.or(t.revision);
            return 0;
        }
        let extra = server.len() + reply.len();
        let mut dropped = 0;
        while self.bytes + extra > MAX_BYTES {
            // The oldest other request; only this one left, it does not fit.
            let victim = self
                .map
                .keys()
                .copied()
                .find(|k| *k != mark)
                .unwrap_or(mark);
            self.remove(victim);
            dropped += 1;
            if victim == mark {
                break;
            }
        }
        if let Some(r) = self.map.get_mut(&mark) {
            r.timed_out = Some(TimedOut {
                server: server.to_string(),
                reply: reply.clone(),
                revision,
            });
            self.bytes += extra;
        }
        dropped
    }

    /// Drops the oldest entries until `extra` more bytes and one more entry fit: how many.
    fn make_room(&mut self, extra: usize) -> u64 {
        let mut dropped = 0;
        while !self.map.is_empty() && (self.map.len() >= self.max || self.bytes + extra > MAX_BYTES)
        {
            if let Some((_, r)) = self.map.pop_first() {
                self.bytes = self.bytes.saturating_sub(r.bytes());
                dropped += 1;
            }
        }
        dropped
    }
}

/// The counters of late answers (the bridge's metrics).
#[derive(Debug, Clone, Default)]
pub(crate) struct LateCounters {
    /// Requests forgotten at the cap before their grace period ended.
    pub(crate) dropped: Counter,
    /// Late answers stored at their key.
    pub(crate) stored: Counter,
    /// Late answers not stored because the key no longer held the `timed_out` reply.
    pub(crate) superseded: Counter,
    /// Late answers not stored because NATS failed, was too slow, or too many stores ran.
    pub(crate) failed: Counter,
}

/// The requests that may still get a late answer (see the module doc).
pub(crate) struct LateAnswers {
    entries: Mutex<Entries>,
    next: AtomicU64,
    kv: Store,
    stores: Arc<Semaphore>,
    counters: LateCounters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only map inserts and removes run under the lock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LateAnswers {
    /// Keeps at most `max` requests; stores late answers in `kv` (the idempotency bucket).
    pub(crate) fn new(kv: Store, max: usize, counters: LateCounters) -> LateAnswers {
        LateAnswers {
            entries: Mutex::new(Entries {
                map: BTreeMap::new(),
                bytes: 0,
                max: max.max(1),
                since_sweep: 0,
            }),
            next: AtomicU64::new(1),
            kv,
            stores: Arc::new(Semaphore::new(STORES_AT_ONCE)),
            counters,
        }
    }

    /// A request with `key` whose action is about to be sent, kept until `until` at the
    /// latest: the mark to send it with.
    pub(crate) fn register(&self, key: Option<&str>, now: Instant, until: Instant) -> u64 {
        let mark = self.next.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            key: key.map(str::to_string),
            timed_out: None,
            expires: until,
        };
        let cost = request.bytes();
        let dropped = {
            let mut e = lock(&self.entries);
            e.since_sweep += 1;
            if e.since_sweep >= 64 || e.map.len() >= e.max {
                e.sweep(now);
            }
            let dropped = e.make_room(cost);
            e.bytes += cost;
            e.map.insert(mark, request);
            dropped
        };
        self.dropped(dropped);
        mark
    }

    /// Counts and logs `n` requests dropped at the cap.
    fn dropped(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.counters.dropped.inc_by(n);
        let total = self.counters.dropped.get();
        // Logged at powers of two of the count: a flood of requests costs a few lines.
        if (total.saturating_sub(n) + 1..=total).any(u64::is_power_of_two) {
            log::warn!(
                "{n} action request(s) forgotten before their late-answer grace period ended (at most {} kept, {MAX_BYTES} bytes): a late answer to one is still published, with idempotency_key null, and its key keeps its timed_out reply ({total} so far, counted in ami_bridge_late_answer_requests_dropped_total, logged at powers of two)",
                self.max()
            );
        }
    }

    fn max(&self) -> usize {
        lock(&self.entries).max
    }

    /// The action sent with `mark` ended: kept until `until` if a late answer may still
    /// come for it (`late_possible`), else forgotten now.
    pub(crate) fn ended(&self, mark: u64, late_possible: bool, until: Instant) {
        let mut e = lock(&self.entries);
        if !late_possible {
            e.remove(mark);
        } else if let Some(r) = e.map.get_mut(&mark) {
            r.expires = until;
        }
    }

    /// The request sent with `mark` was answered `timed_out` on `server`, and `reply` is
    /// (being) stored at its key; `revision` once NATS said where. Older requests make room
    /// for it under the byte cap (dropped, counted and logged); one that cannot fit even
    /// alone is dropped itself.
    pub(crate) fn timed_out(&self, mark: u64, server: &str, reply: &Bytes, revision: Option<u64>) {
        let dropped = lock(&self.entries).set_timed_out(mark, server, reply, revision);
        self.dropped(dropped);
    }

    /// The request a late answer sent with `mark` belongs to, taken out (its answer is
    /// reported once); `None` when it is not known (never, or no longer: expired, dropped
    /// at the cap).
    pub(crate) fn take(&self, mark: Option<u64>, now: Instant) -> Option<Request> {
        let r = lock(&self.entries).remove(mark?)?;
        (r.expires > now).then_some(r)
    }

    /// Stores `answer` (a late answer's reply, [`crate::actions::late_reply`]) at `key` in
    /// place of `timed_out`, in a task of its own: never waits here.
    pub(crate) fn store(self: &Arc<Self>, key: String, timed_out: TimedOut, answer: Bytes) {
        let Ok(permit) = Arc::clone(&self.stores).try_acquire_owned() else {
            self.failed(&key, "too many late answers being stored at once");
            return;
        };
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = permit;
            let outcome =
                tokio::time::timeout(STORE_TIMEOUT, me.replace(&key, &timed_out, answer)).await;
            match outcome {
                Ok(Ok(true)) => {
                    me.counters.stored.inc();
                }
                Ok(Ok(false)) => {
                    me.counters.superseded.inc();
                    log::info!(
                        "idempotency key {key}: its timed_out reply changed before the late answer came; the change is kept"
                    );
                }
                Ok(Err(e)) => me.failed(&key, &e),
                Err(_) => me.failed(
                    &key,
                    &format!("NATS did not answer within {STORE_TIMEOUT:?}"),
                ),
            }
        });
    }

    fn failed(&self, key: &str, why: &str) {
        self.counters.failed.inc();
        let total = self.counters.failed.get();
        if total.is_power_of_two() {
            log::warn!(
                "idempotency key {key}: the late answer was not stored at the key ({why}); a retry is answered duplicate with the timed_out reply ({total} so far, counted in ami_bridge_late_answers_stored_total{{result=\"failed\"}}, logged at powers of two)"
            );
        }
    }

    /// Replaces `timed_out` at `key` with `answer`: `Ok(true)` when stored, `Ok(false)`
    /// when the key holds something else (a concurrent change wins).
    async fn replace(
        &self,
        key: &str,
        timed_out: &TimedOut,
        answer: Bytes,
    ) -> Result<bool, String> {
        let revision = match timed_out.revision {
            Some(r) => r,
            None => loop {
                // The requester's own store of its reply may still be under way.
                match self.kv.entry(key).await.map_err(|e| e.to_string())? {
                    Some(e)
                        if e.operation == async_nats::jetstream::kv::Operation::Put
                            && e.value == timed_out.reply =>
                    {
                        break e.revision
                    }
                    Some(e)
                        if e.operation == async_nats::jetstream::kv::Operation::Put
                            && is_pending(&e.value) =>
                    {
                        tokio::time::sleep(STORE_POLL).await;
                    }
                    _ => return Ok(false),
                }
            },
        };
        match self.kv.update(key, answer, revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(max: usize) -> Entries {
        Entries {
            map: BTreeMap::new(),
            bytes: 0,
            max,
            since_sweep: 0,
        }
    }

    fn request(key: &str, expires: Instant) -> Request {
        Request {
            key: Some(key.to_string()),
            timed_out: None,
            expires,
        }
    }

    fn insert(e: &mut Entries, mark: u64, r: Request) -> u64 {
        let dropped = e.make_room(r.bytes());
        e.bytes += r.bytes();
        e.map.insert(mark, r);
        dropped
    }

    #[test]
    fn at_the_count_cap_the_oldest_request_is_dropped_and_counted() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut e = entries(2);
        assert_eq!(insert(&mut e, 1, request("a", later)), 0);
        assert_eq!(insert(&mut e, 2, request("b", later)), 0);
        assert_eq!(insert(&mut e, 3, request("c", later)), 1);
        assert_eq!(e.map.keys().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(e.bytes, 2 * (ENTRY_OVERHEAD + 1));
    }

    #[test]
    fn at_the_byte_cap_the_oldest_requests_are_dropped_whatever_their_count() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut e = entries(usize::MAX);
        // Three fit exactly, whatever the count allows.
        let big = "k".repeat(MAX_BYTES / 3 - ENTRY_OVERHEAD);
        for mark in 1..=3 {
            assert_eq!(insert(&mut e, mark, request(&big, later)), 0);
        }
        assert_eq!(insert(&mut e, 4, request(&big, later)), 1);
        assert!(e.bytes <= MAX_BYTES);
        assert_eq!(e.map.keys().copied().collect::<Vec<_>>(), [2, 3, 4]);
        let bigger = "k".repeat(MAX_BYTES / 2);
        assert_eq!(insert(&mut e, 5, request(&bigger, later)), 2);
        assert_eq!(e.map.keys().copied().collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn a_timed_out_reply_kept_under_the_byte_cap_pushes_older_requests_out_never_itself_first() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut e = entries(usize::MAX);
        let third = "k".repeat(MAX_BYTES / 3 - ENTRY_OVERHEAD);
        insert(&mut e, 1, request("own", later));
        insert(&mut e, 2, request(&third, later));
        insert(&mut e, 3, request(&third, later));
        let reply = Bytes::from(vec![b'x'; MAX_BYTES / 3]);
        assert_eq!(e.set_timed_out(1, "pbx1", &reply, None), 1);
        assert_eq!(e.map.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert!(e.bytes <= MAX_BYTES);
        // Its revision comes later; nothing else changes.
        let bytes = e.bytes;
        assert_eq!(e.set_timed_out(1, "pbx1", &reply, Some(9)), 0);
        assert_eq!(e.bytes, bytes);
        let kept = e.map.get(&1).and_then(|r| r.timed_out.clone()).unwrap();
        assert_eq!((kept.server.as_str(), kept.revision), ("pbx1", Some(9)));
        // Removing it frees all it held.
        e.remove(1);
        e.remove(3);
        assert_eq!(e.bytes, 0);
        // One that cannot fit even alone is dropped itself.
        insert(&mut e, 4, request("own", later));
        let huge = Bytes::from(vec![b'x'; MAX_BYTES]);
        assert_eq!(e.set_timed_out(4, "pbx1", &huge, None), 1);
        assert!(e.map.is_empty());
        assert_eq!(e.bytes, 0);
    }

    #[test]
    fn expired_requests_are_swept_out_and_free_their_bytes() {
        let now = Instant::now();
        let mut e = entries(10);
        insert(&mut e, 1, request("a", now + Duration::from_secs(1)));
        insert(&mut e, 2, request("b", now + Duration::from_secs(60)));
        e.sweep(now + Duration::from_secs(2));
        assert_eq!(e.map.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(e.bytes, ENTRY_OVERHEAD + 1);
    }
}
