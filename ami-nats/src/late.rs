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
//! The request's task and the publisher are both woken by the completion that ends the
//! action (`TimedOut`, then the answer): on a multi-threaded runtime the publisher may read
//! the answer before the request's task has recorded its `timed_out` reply. The answer is
//! then published at once, as always, and kept in the entry (counted in its bytes) until
//! the request's reply is known: `timed_out` starts its store there and then; any other
//! reply (`unknown`, `reply_too_large`...) forgets it, counted as `not_timed_out` as a
//! late answer read after such a reply is. Each entry is taken out when its store starts,
//! so no answer is stored twice.
//!
//! Bounded: at most [`BridgeConfig::max_late_answer_requests`](crate::BridgeConfig::max_late_answer_requests)
//! requests and [`MAX_BYTES`] bytes are kept; an entry lives while its action runs and for
//! the core's own grace period after it ended (the server's `action_timeout`, within which
//! the core still recognises a late answer), plus [`MARGIN`]. At the cap the oldest entry
//! is dropped, counted in `ami_bridge_late_answer_requests_dropped_total` and logged (at
//! powers of two of the count); its late answer is still published, with
//! `"idempotency_key":null`, and its key keeps the `timed_out` reply. A late answer kept
//! waiting for its request's reply and forgotten so, or at the end of the grace period, is
//! never stored: counted as `failed` and logged.

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
/// Most bytes kept for them (keys, stored replies, and late answers read before their
/// request's reply was known, for the moment until it is): with the default count and the
/// longest keys and replies of a `timed_out`, about half of it.
pub(crate) const MAX_BYTES: usize = 2 << 20;
/// What an entry costs besides its key, stored reply and kept late answer.
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
struct Request {
    /// Its idempotency key, if it had one.
    key: Option<String>,
    /// The `timed_out` reply stored (or being stored) at the key, if it was answered so.
    timed_out: Option<TimedOut>,
    /// Its reply is known and is not `timed_out` ([`LateAnswers::not_timed_out`]): a late
    /// answer is published only.
    settled: bool,
    /// Its late answer as it is to be stored at the key ([`crate::actions::late_reply`]),
    /// when it was read before the request's reply was known (see [`Entries::take`]).
    parked: Option<Bytes>,
    /// Forgotten after this.
    expires: Instant,
}

/// A `timed_out` reply of a request with a key, as stored at the key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TimedOut {
    /// The server the action went to (the `"server"` of the stored answer).
    server: String,
    /// The reply, byte for byte: the key is replaced only while it holds exactly this.
    reply: Bytes,
    /// The revision it was stored at, once NATS said so.
    revision: Option<u64>,
}

/// A late answer to store at its request's key in place of the `timed_out` reply there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Replacement {
    /// The request's idempotency key.
    key: String,
    /// The reply to replace (compare-and-set).
    timed_out: TimedOut,
    /// The late answer's reply ([`crate::actions::late_reply`]).
    answer: Bytes,
}

/// What the publisher learns of the request a late answer belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Taken {
    /// Its idempotency key, if it had one (published with the answer).
    pub(crate) key: Option<String>,
}

/// What one change of the entries leaves to do outside the lock: a store to start, and
/// what to count and log.
#[derive(Debug, Default, PartialEq, Eq)]
struct Done {
    /// A late answer to store at its key now.
    replace: Option<Replacement>,
    /// Requests dropped at the cap.
    dropped: u64,
    /// Keys of requests whose late answer is published only: their reply was not
    /// `timed_out` (`unknown`, `reply_too_large`...), so the key keeps it.
    not_timed_out: Vec<String>,
    /// Keys whose parked late answer was forgotten (dropped at the cap, or its request's
    /// grace period ended) before the request's reply was known: never stored.
    lost: Vec<String>,
}

impl Request {
    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD
            + self.key.as_ref().map_or(0, String::len)
            + self
                .timed_out
                .as_ref()
                .map_or(0, |t| t.server.len() + t.reply.len())
            + self.parked.as_ref().map_or(0, Bytes::len)
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

    /// Drops request `mark` at the cap: counted, and its parked late answer, if any, lost.
    fn evict(&mut self, mark: u64, done: &mut Done) {
        if let Some(r) = self.remove(mark) {
            done.dropped += 1;
            if let (Some(key), Some(_)) = (r.key, r.parked) {
                done.lost.push(key);
            }
        }
    }

    fn sweep(&mut self, now: Instant, done: &mut Done) {
        let expired: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(mark, _)| *mark)
            .collect();
        for mark in expired {
            // Its grace period is over: not a drop at the cap, but a parked answer in it
            // is never stored.
            if let Some(Request {
                key: Some(key),
                parked: Some(_),
                ..
            }) = self.remove(mark)
            {
                done.lost.push(key);
            }
        }
        self.since_sweep = 0;
    }

    /// Makes room for `extra` more bytes of request `mark` under the byte cap, dropping the
    /// oldest other requests; one that cannot fit even alone is dropped itself: whether it
    /// is still kept.
    fn grow(&mut self, mark: u64, extra: usize, done: &mut Done) -> bool {
        while self.map.contains_key(&mark) && self.bytes + extra > MAX_BYTES {
            // The oldest other request; only this one left, it does not fit.
            let victim = self
                .map
                .keys()
                .copied()
                .find(|k| *k != mark)
                .unwrap_or(mark);
            self.evict(victim, done);
        }
        self.map.contains_key(&mark)
    }

    /// Keeps the `timed_out` reply of request `mark` ([`LateAnswers::timed_out`]); when its
    /// late answer was already read (parked), that answer is to be stored now, and the
    /// request is done with.
    fn set_timed_out(
        &mut self,
        mark: u64,
        server: &str,
        reply: &Bytes,
        revision: Option<u64>,
    ) -> Done {
        let mut done = Done::default();
        let Some(r) = self.map.get_mut(&mark) else {
            return done;
        };
        if let Some(t) = r.timed_out.as_mut() {
            t.revision = revision.or(t.revision);
            return done;
        }
        let timed_out = TimedOut {
            server: server.to_string(),
            reply: reply.clone(),
            revision,
        };
        if r.parked.is_some() {
            if let Some(Request {
                key: Some(key),
                parked: Some(answer),
                ..
            }) = self.remove(mark)
            {
                done.replace = Some(Replacement {
                    key,
                    timed_out,
                    answer,
                });
            }
            return done;
        }
        let extra = server.len() + reply.len();
        if self.grow(mark, extra, &mut done) {
            if let Some(r) = self.map.get_mut(&mark) {
                r.timed_out = Some(timed_out);
                self.bytes += extra;
            }
        }
        done
    }

    /// Request `mark` was answered otherwise than `timed_out` ([`LateAnswers::not_timed_out`]):
    /// a late answer read already (parked) is published only, and forgotten now.
    fn settle(&mut self, mark: u64) -> Done {
        let mut done = Done::default();
        let Some(r) = self.map.get_mut(&mark) else {
            return done;
        };
        if r.parked.is_none() {
            r.settled = true;
            return done;
        }
        if let Some(Request { key: Some(key), .. }) = self.remove(mark) {
            done.not_timed_out.push(key);
        }
        done
    }

    /// The request a late answer sent with `mark` belongs to, when it is known. `answer`
    /// is that answer as it would be stored at the request's key (needed only when it has
    /// one). A request without a key, or whose reply is known, is taken out (the core
    /// reports its late answer once); one with a key whose `timed_out` reply is recorded
    /// has the answer stored in its place. One with a key whose reply is not known yet (the
    /// publisher read the answer before the request's task, woken by the same completion,
    /// recorded its `timed_out`) keeps the answer until it is: then stored at once
    /// ([`Entries::set_timed_out`]), or forgotten if the reply is another
    /// ([`Entries::settle`]).
    fn take(&mut self, mark: u64, now: Instant, answer: Option<Bytes>) -> (Option<Taken>, Done) {
        let mut done = Done::default();
        let Some(r) = self.map.get(&mark) else {
            return (None, done);
        };
        if r.expires <= now {
            if let Some(Request {
                key: Some(key),
                parked: Some(_),
                ..
            }) = self.remove(mark)
            {
                done.lost.push(key);
            }
            return (None, done);
        }
        let taken = Taken { key: r.key.clone() };
        let Some(key) = r.key.clone() else {
            self.remove(mark);
            return (Some(taken), done);
        };
        if r.parked.is_some() {
            // Reported once by the core; kept as first read should it come again.
            return (Some(taken), done);
        }
        if r.settled {
            self.remove(mark);
            done.not_timed_out.push(key);
            return (Some(taken), done);
        }
        if let Some(timed_out) = r.timed_out.clone() {
            self.remove(mark);
            if let Some(answer) = answer {
                done.replace = Some(Replacement {
                    key,
                    timed_out,
                    answer,
                });
            }
            return (Some(taken), done);
        }
        // Its reply is not known yet. (`answer` is always given for a request with a key:
        // see `LateAnswers::take`.)
        let Some(answer) = answer else {
            self.remove(mark);
            return (Some(taken), done);
        };
        if self.grow(mark, answer.len(), &mut done) {
            if let Some(r) = self.map.get_mut(&mark) {
                self.bytes += answer.len();
                r.parked = Some(answer);
            }
        } else {
            done.lost.push(key);
        }
        (Some(taken), done)
    }

    /// Drops the oldest entries until `extra` more bytes and one more entry fit.
    fn make_room(&mut self, extra: usize, done: &mut Done) {
        while !self.map.is_empty() && (self.map.len() >= self.max || self.bytes + extra > MAX_BYTES)
        {
            if let Some(mark) = self.map.keys().next().copied() {
                self.evict(mark, done);
            }
        }
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
    /// Late answers not stored because NATS failed, was too slow, or too many stores ran,
    /// or because one read before its request's reply was known was forgotten first.
    pub(crate) failed: Counter,
    /// Late answers not stored because their request was answered otherwise than
    /// `timed_out` (`unknown`, `reply_too_large`...): the key keeps that reply.
    pub(crate) not_timed_out: Counter,
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
    pub(crate) fn register(
        self: &Arc<Self>,
        key: Option<&str>,
        now: Instant,
        until: Instant,
    ) -> u64 {
        let mark = self.next.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            key: key.map(str::to_string),
            timed_out: None,
            settled: false,
            parked: None,
            expires: until,
        };
        let cost = request.bytes();
        let mut done = Done::default();
        {
            let mut e = lock(&self.entries);
            e.since_sweep += 1;
            if e.since_sweep >= 64 || e.map.len() >= e.max {
                e.sweep(now, &mut done);
            }
            e.make_room(cost, &mut done);
            e.bytes += cost;
            e.map.insert(mark, request);
        }
        self.finish(done);
        mark
    }

    /// Starts, counts and logs what a change of the entries left to do (outside the lock).
    fn finish(self: &Arc<Self>, done: Done) {
        let Done {
            replace,
            dropped,
            not_timed_out,
            lost,
        } = done;
        self.dropped(dropped);
        for key in lost {
            self.failed(
                &key,
                "its request was forgotten (the cap, or its grace period over) before its timed_out reply was known",
            );
        }
        for key in not_timed_out {
            self.counters.not_timed_out.inc();
            let total = self.counters.not_timed_out.get();
            // Logged at powers of two of the count, as `failed`: a stop that answers many
            // requests `unknown` costs a few lines.
            if total.is_power_of_two() {
                log::info!(
                    "idempotency key {key}: its request was answered otherwise than timed_out; the late answer is published only, the key keeps its reply ({total} so far, counted in ami_bridge_late_answers_stored_total{{result=\"not_timed_out\"}}, logged at powers of two)"
                );
            }
        }
        if let Some(r) = replace {
            self.store(r);
        }
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
    pub(crate) fn ended(self: &Arc<Self>, mark: u64, late_possible: bool, until: Instant) {
        let done = {
            let mut e = lock(&self.entries);
            if !late_possible {
                // Its reply cannot be `timed_out` with a late answer to come.
                let done = e.settle(mark);
                e.remove(mark);
                done
            } else {
                if let Some(r) = e.map.get_mut(&mark) {
                    r.expires = until;
                }
                Done::default()
            }
        };
        self.finish(done);
    }

    /// The request sent with `mark` was answered `timed_out` on `server`, and `reply` is
    /// (being) stored at its key; `revision` once NATS said where. Older requests make room
    /// for it under the byte cap (dropped, counted and logged); one that cannot fit even
    /// alone is dropped itself. When its late answer was read already, that answer's store
    /// starts now.
    pub(crate) fn timed_out(
        self: &Arc<Self>,
        mark: u64,
        server: &str,
        reply: &Bytes,
        revision: Option<u64>,
    ) {
        let done = lock(&self.entries).set_timed_out(mark, server, reply, revision);
        self.finish(done);
    }

    /// The request sent with `mark` had an idempotency key and was answered otherwise
    /// than `timed_out` (or not at all): its key keeps that reply, and a late answer to it
    /// is published only.
    pub(crate) fn not_timed_out(self: &Arc<Self>, mark: u64) {
        let done = lock(&self.entries).settle(mark);
        self.finish(done);
    }

    /// The request a late answer sent with `mark` belongs to (its answer is reported
    /// once); `None` when it is not known (never, or no longer: expired, dropped at the
    /// cap). `answer` gives the answer as it would be stored at the key (asked only for a
    /// request with one); its store starts here when it is due (see [`Entries::take`]).
    pub(crate) fn take(
        self: &Arc<Self>,
        mark: Option<u64>,
        now: Instant,
        answer: impl FnOnce() -> Bytes,
    ) -> Option<Taken> {
        let mark = mark?;
        // Built outside the lock, and only for a request with a key (its key never
        // changes; should the request be gone by the take, it is not used).
        let keyed = lock(&self.entries)
            .map
            .get(&mark)
            .is_some_and(|r| r.key.is_some());
        let answer = keyed.then(answer);
        let (taken, done) = lock(&self.entries).take(mark, now, answer);
        self.finish(done);
        taken
    }

    /// Stores a late answer at its key in place of its `timed_out` reply, in a task of its
    /// own: never waits here.
    fn store(self: &Arc<Self>, replacement: Replacement) {
        let Replacement {
            key,
            timed_out,
            answer,
        } = replacement;
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
            settled: false,
            parked: None,
            expires,
        }
    }

    fn insert(e: &mut Entries, mark: u64, r: Request) -> u64 {
        let mut done = Done::default();
        e.make_room(r.bytes(), &mut done);
        e.bytes += r.bytes();
        e.map.insert(mark, r);
        done.dropped
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
        assert_eq!(e.set_timed_out(1, "pbx1", &reply, None).dropped, 1);
        assert_eq!(e.map.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert!(e.bytes <= MAX_BYTES);
        // Its revision comes later; nothing else changes.
        let bytes = e.bytes;
        assert_eq!(e.set_timed_out(1, "pbx1", &reply, Some(9)), Done::default());
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
        assert_eq!(e.set_timed_out(4, "pbx1", &huge, None).dropped, 1);
        assert!(e.map.is_empty());
        assert_eq!(e.bytes, 0);
    }

    #[test]
    fn expired_requests_are_swept_out_and_free_their_bytes() {
        let now = Instant::now();
        let mut e = entries(10);
        insert(&mut e, 1, request("a", now + Duration::from_secs(1)));
        insert(&mut e, 2, request("b", now + Duration::from_secs(60)));
        let mut done = Done::default();
        e.sweep(now + Duration::from_secs(2), &mut done);
        assert_eq!(done, Done::default(), "expiry is no drop at the cap");
        assert_eq!(e.map.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(e.bytes, ENTRY_OVERHEAD + 1);
    }

    fn timed_out(server: &str, reply: &Bytes, revision: Option<u64>) -> TimedOut {
        TimedOut {
            server: server.to_string(),
            reply: reply.clone(),
            revision,
        }
    }

    /// The publisher may read a late answer before the request's task, woken by the same
    /// completion (`TimedOut`), records its `timed_out` reply (a multi-threaded runtime runs
    /// both at once): the answer is still stored at the key, once, when it is.
    #[test]
    fn a_late_answer_read_before_its_timed_out_reply_is_recorded_is_stored_once_it_is() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut e = entries(16);
        insert(&mut e, 1, request("k1", later));
        let answer = Bytes::from_static(br#"{"type":"outcome","outcome":"success","late":true}"#);
        let (taken, done) = e.take(1, now, Some(answer.clone()));
        assert_eq!(
            taken,
            Some(Taken {
                key: Some("k1".into())
            }),
            "published with its key"
        );
        assert_eq!(done, Done::default(), "nothing to store yet");
        let reply = Bytes::from_static(br#"{"type":"outcome","outcome":"timed_out"}"#);
        let done = e.set_timed_out(1, "pbx1", &reply, None);
        assert_eq!(
            done.replace,
            Some(Replacement {
                key: "k1".into(),
                timed_out: timed_out("pbx1", &reply, None),
                answer,
            }),
            "stored once the timed_out reply is known"
        );
        assert_eq!(e.bytes, 0, "the request is done with: {:?}", e.map);
        // The revision that comes next, and a second report, start nothing more.
        assert_eq!(e.set_timed_out(1, "pbx1", &reply, Some(3)), Done::default());
        assert_eq!(e.take(1, now, None), (None, Done::default()));
    }

    #[test]
    fn a_late_answer_read_after_its_timed_out_reply_is_stored_at_once_and_only_then() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut e = entries(16);
        insert(&mut e, 1, request("k1", later));
        let reply = Bytes::from_static(b"timed_out");
        assert_eq!(e.set_timed_out(1, "pbx1", &reply, None), Done::default());
        assert_eq!(e.set_timed_out(1, "pbx1", &reply, Some(4)), Done::default());
        let answer = Bytes::from_static(b"late");
        let (taken, done) = e.take(1, now, Some(answer.clone()));
        assert_eq!(taken.and_then(|t| t.key).as_deref(), Some("k1"));
        assert_eq!(
            done.replace,
            Some(Replacement {
                key: "k1".into(),
                timed_out: timed_out("pbx1", &reply, Some(4)),
                answer,
            })
        );
        assert_eq!(e.bytes, 0);
        assert_eq!(e.set_timed_out(1, "pbx1", &reply, Some(5)), Done::default());
    }

    #[test]
    fn a_request_without_a_key_is_taken_out_and_keeps_no_answer() {
        let now = Instant::now();
        let mut e = entries(16);
        let mut r = request("", now + Duration::from_secs(60));
        r.key = None;
        insert(&mut e, 1, r);
        let (taken, done) = e.take(1, now, Some(Bytes::from_static(b"late")));
        assert_eq!(taken, Some(Taken { key: None }));
        assert_eq!(done, Done::default());
        assert!(e.map.is_empty());
        assert_eq!(e.bytes, 0);
    }

    /// A reply other than `timed_out` (`unknown` after a stop, `reply_too_large`) stays at
    /// the key: the late answer is published only, whichever came first, counted alike.
    #[test]
    fn a_late_answer_to_a_request_answered_otherwise_is_published_only_whichever_came_first() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let answer = Bytes::from_static(b"late");
        // The answer first: kept, then forgotten when the reply is known.
        let mut e = entries(16);
        insert(&mut e, 1, request("k1", later));
        let (taken, done) = e.take(1, now, Some(answer.clone()));
        assert_eq!(taken.and_then(|t| t.key).as_deref(), Some("k1"));
        assert_eq!(done, Done::default());
        assert_eq!(
            e.bytes,
            ENTRY_OVERHEAD + 2 + answer.len(),
            "counted in the cap"
        );
        let done = e.settle(1);
        assert_eq!(done.not_timed_out, ["k1"]);
        assert_eq!(done.replace, None);
        assert!(e.map.is_empty());
        assert_eq!(e.bytes, 0);
        // The reply first: the answer is never kept.
        insert(&mut e, 2, request("k2", later));
        assert_eq!(e.settle(2), Done::default());
        let (taken, done) = e.take(2, now, Some(answer));
        assert_eq!(taken.and_then(|t| t.key).as_deref(), Some("k2"));
        assert_eq!(done.not_timed_out, ["k2"]);
        assert_eq!(done.replace, None);
        assert!(e.map.is_empty());
        assert_eq!(e.bytes, 0);
        // A timed_out recorded after it changes nothing.
        assert_eq!(
            e.set_timed_out(2, "pbx1", &Bytes::from_static(b"t"), None),
            Done::default()
        );
    }

    #[test]
    fn a_kept_late_answer_forgotten_at_the_cap_or_at_expiry_is_freed_and_reported_lost() {
        let now = Instant::now();
        let answer = Bytes::from(vec![b'a'; 1000]);
        let mut e = entries(2);
        insert(&mut e, 1, request("k1", now + Duration::from_secs(1)));
        insert(&mut e, 2, request("k2", now + Duration::from_secs(60)));
        assert_eq!(e.take(1, now, Some(answer.clone())).1, Done::default());
        assert_eq!(e.take(2, now, Some(answer.clone())).1, Done::default());
        // Expiry: not a drop at the cap, but the answer is never stored.
        let mut done = Done::default();
        e.sweep(now + Duration::from_secs(2), &mut done);
        assert_eq!(done.lost, ["k1"]);
        assert_eq!(done.dropped, 0);
        assert_eq!(e.bytes, ENTRY_OVERHEAD + 2 + answer.len());
        // The cap: dropped and lost.
        insert(&mut e, 3, request("k3", now + Duration::from_secs(60)));
        let mut done = Done::default();
        e.make_room(ENTRY_OVERHEAD + 2, &mut done);
        assert_eq!((done.dropped, done.lost), (1, vec!["k2".to_string()]));
        assert_eq!(e.map.keys().copied().collect::<Vec<_>>(), [3]);
        assert_eq!(e.bytes, ENTRY_OVERHEAD + 2);
        // An answer that cannot fit even alone drops its request: published, never stored.
        let huge = Bytes::from(vec![b'a'; MAX_BYTES]);
        let (taken, done) = e.take(3, now, Some(huge));
        assert_eq!(taken.and_then(|t| t.key).as_deref(), Some("k3"));
        assert_eq!((done.dropped, done.lost), (1, vec!["k3".to_string()]));
        assert!(e.map.is_empty());
        assert_eq!(e.bytes, 0);
        assert_eq!(
            e.set_timed_out(3, "pbx1", &Bytes::from_static(b"t"), None),
            Done::default()
        );
    }

    /// Whatever the order of registrations, takes, replies, endings and expiries, the
    /// byte count is exactly what the entries hold and within the cap, and each late answer
    /// taken ends in exactly one of: a store started, published only, or lost.
    #[test]
    fn the_byte_count_never_drifts_and_each_answer_ends_once_whatever_the_order() {
        let start = Instant::now();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut e = entries(8);
        let (mut marks, mut parked, mut ended) = (0u64, 0usize, 0usize);
        for step in 0..20_000u64 {
            let now = start + Duration::from_millis(step);
            let mark = 1 + next(marks.max(1));
            let mut done = Done::default();
            match next(7) {
                0 | 1 => {
                    marks += 1;
                    let len = usize::try_from(next(MAX_BYTES as u64 / 6)).unwrap();
                    let mut r = request(&"k".repeat(len), now + Duration::from_millis(next(400)));
                    if next(4) == 0 {
                        r.key = None;
                    }
                    e.sweep(now, &mut done);
                    e.make_room(r.bytes(), &mut done);
                    e.bytes += r.bytes();
                    e.map.insert(marks, r);
                }
                2 => {
                    let len = usize::try_from(next(MAX_BYTES as u64 / 4)).unwrap();
                    let keyed = e.map.get(&mark).is_some_and(|r| r.key.is_some());
                    let was_parked = e.map.get(&mark).is_some_and(|r| r.parked.is_some());
                    let (taken, d) = e.take(mark, now, keyed.then(|| Bytes::from(vec![b'a'; len])));
                    if keyed && !was_parked && taken.is_some() {
                        parked += 1;
                    }
                    done = d;
                }
                3 => {
                    let len = usize::try_from(next(MAX_BYTES as u64 / 4)).unwrap();
                    let revision = (next(2) == 0).then_some(step);
                    done = e.set_timed_out(mark, "pbx1", &Bytes::from(vec![b't'; len]), revision);
                }
                4 => done = e.settle(mark),
                5 => {
                    done = e.settle(mark);
                    e.remove(mark);
                }
                _ => e.sweep(now, &mut done),
            }
            ended +=
                usize::from(done.replace.is_some()) + done.not_timed_out.len() + done.lost.len();
            let held: usize = e.map.values().map(Request::bytes).sum();
            assert_eq!(e.bytes, held, "step {step}");
            assert!(e.bytes <= MAX_BYTES, "step {step}");
            assert!(e.map.len() <= 8, "step {step}");
        }
        // What is still kept ends there when its request is forgotten.
        let mut done = Done::default();
        e.sweep(start + Duration::from_secs(3600), &mut done);
        ended += done.lost.len();
        assert_eq!(parked, ended, "answers taken, and ended");
        assert_eq!(e.bytes, 0);
    }

    #[test]
    fn a_kept_late_answer_pushes_older_requests_out_under_the_byte_cap() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut e = entries(usize::MAX);
        let third = "k".repeat(MAX_BYTES / 3 - ENTRY_OVERHEAD);
        insert(&mut e, 1, request(&third, later));
        insert(&mut e, 2, request(&third, later));
        insert(&mut e, 3, request("own", later));
        let answer = Bytes::from(vec![b'a'; MAX_BYTES / 3]);
        let (_, done) = e.take(3, now, Some(answer.clone()));
        assert_eq!((done.dropped, done.lost.len()), (1, 0));
        assert_eq!(e.map.keys().copied().collect::<Vec<_>>(), [2, 3]);
        assert!(e.bytes <= MAX_BYTES);
        let done = e.set_timed_out(3, "pbx1", &Bytes::from_static(b"t"), None);
        assert_eq!(done.replace.map(|r| r.answer), Some(answer));
        assert_eq!(e.bytes, ENTRY_OVERHEAD + third.len());
    }
}
