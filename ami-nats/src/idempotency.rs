//! Idempotency keys in the JetStream KV bucket `ami_idempotency`.
//!
//! A request with a key holds it in two phases, each value naming this request alone
//! (`"owner":"<instance>-<n>"`), so that a process can always tell its own claim from
//! another request's:
//!
//! 1. it *claims* the key: creates it with a *claiming* value
//!    (`{"type":"pending","owner":"…","phase":"claiming"}`). Nothing has ever been sent
//!    under a claiming value;
//! 2. right before its action is sent it *confirms* the claim: a compare-and-set on the
//!    revision its claim was written at, to the *running* value (`"phase":"running"`).
//!    Only a confirmed claim sends. A confirm refused because the key changed (another
//!    request took the claiming value over, below) sends nothing; as the request that
//!    took it over may send nothing either (its deadline passes, its own confirm fails, a
//!    stop gives up on it, its bridge crashes), the request is then exactly a fresh one
//!    and claims the key again, a few rounds at most within its deadline, letting a
//!    claiming value it finds be confirmed for a moment before it takes it over (so that
//!    requests with one key do not keep taking it from one another). It is answered
//!    `duplicate` only when it finds a running value or a stored reply, `not_sent` when
//!    its rounds or its deadline run out first. A confirm that gets no answer, or fails
//!    otherwise, has sent nothing, but may land later: while the request's deadline
//!    allows, the key is read to find out. This request's running value there: it landed,
//!    the request is confirmed and sends; its claiming value still there: it is confirmed
//!    again (the same compare-and-set: at most one of the two lands, both write this
//!    request's running value); any other value, or none: it can no longer land, as
//!    after a take-over. Only when the deadline comes with the confirm still unknown is
//!    the request answered `not_sent`, its claim abandoned as below. Every store call of a
//!    claim or a confirm is bounded by the request's deadline (a write cut by it may
//!    still land: unknown, never taken as not landed), and a request with no time left
//!    claims nothing.
//!
//! Any request, on any bridge, that finds a *claiming* value takes it over: a
//! compare-and-set on that value's revision writes its own claiming value, which it then
//! confirms. This is what frees a claim whose writer can no longer free it: a `create` that
//! got no answer in time (NATS slow) and landed after its request was answered `not_sent`,
//! on a bridge that stopped, or a claim of a bridge that crashed before its confirm. It is
//! safe: the holder of a claiming value sends only once its confirm's compare-and-set on
//! that value's revision succeeds, and a take-over changes the revision, so of the holder
//! and the taker at most one sends (the holder's confirm is refused; the taker sends only
//! if its own confirm succeeds). The holder claiming again is a new claim, under the same
//! rule: every send follows a confirm that succeeded, and at most one confirm succeeds per
//! key until its value is freed or expires. Running values, the `pending` of bridges from before
//! the owned claims and the owned pending values of bridges from before the two phases
//! (no `phase`) are never taken over by another process: their action may be running.
//! Every pending value begins with `{"type":"pending"`, so bridges of older versions read
//! claiming and running values alike as a request running.
//!
//! Then:
//!
//! - while its action runs, the running value is written again (a compare-and-set on its
//!   revision) every third of the bucket's `max_age`, the idempotency window: the bucket
//!   expires entries by age, and a claim left alone for a window would vanish under an
//!   action still running (a long Originate), letting a retry place a second call;
//! - when the action ran, or may have run, the reply is stored in its place, and a retry
//!   is answered `duplicate` for the window; a `timed_out` reply whose answer the server
//!   sent late is replaced by that answer (`"late":true`, a compare-and-set on the
//!   reply's revision, see the `late` module);
//! - when it was answered `not_sent`, or `invalid_request` by the session (nothing reached
//!   Asterisk), the claim is *freed* (deleted, only while it still holds this request's own
//!   value, claiming or running), so the retry the answer invites (or the corrected
//!   request) runs.
//!
//! A claim whose write got no answer in time may still land afterwards: the request is
//! answered `not_sent` and its claim is *abandoned*: remembered here, freed as soon as
//! NATS answers (a delete on the revision it landed at; or, when it has not landed, a
//! delete marker on the key's current revision, so that a late `create`, which expects
//! that revision, fails), and meanwhile a retry reaching this process takes an abandoned
//! claim over instead of being refused as a duplicate. A claim is never freed once its
//! action may have reached Asterisk: only `not_sent` outcomes free, and only their own value.
//!
//! The cases left: a running value under which nothing was sent, which no other bridge
//! takes over. Its running value blocks a retry on another bridge (answered `duplicate`,
//! though nothing was sent) until this process frees it or, when it cannot (it stopped, or
//! NATS stayed away for the follow-up's attempts, some seconds), until the window ends.
//! It arises when a claim was, or may have been, confirmed, nothing was sent, and the
//! free that follows the `not_sent` answer does not get through:
//!
//! - a confirm whose outcome was still unknown when the request's deadline came (NATS
//!   did not answer from the confirm to the deadline), and which landed;
//! - a confirm in flight, or whose outcome was being found out, when a stop gave up on
//!   its request (NATS slower than the stop's flush): the stop answers `not_sent` and runs
//!   no follow-up;
//! - a confirm that was answered, after which the request's deadline had passed, or the
//!   session answered `not_sent` (a full queue, a lost connection): the claim is freed at
//!   once when NATS answers, else by a follow-up, which a stop gives up on and which stops
//!   trying after some seconds.
//!
//! Running values are deliberately given no expiry of their own (an age after which
//! another bridge would take them over): a bridge cut off from NATS while its Originate
//! runs cannot keep its claim fresh, and a retry taking the claim over would place the
//! call a second time. The window's own expiry of entries is kept at bay by the refresh
//! above for as long as NATS is reachable.

use crate::throttle::LogThrottle;
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The value an idempotency key held while its request ran, as bridges before the owned
/// claims wrote it (still read as pending).
const LEGACY_PENDING: &[u8] = b"pending";
/// How every pending value this bridge writes begins. JSON, so that a bridge from before
/// the owned claims, which quotes whatever is not `pending` as the original reply, still
/// answers with valid JSON during a rolling upgrade.
const PENDING_PREFIX: &[u8] = br#"{"type":"pending""#;

/// Whether `value` is a claim of a request that has not finished (no reply stored yet).
pub(crate) fn is_pending(value: &[u8]) -> bool {
    value == LEGACY_PENDING || value.starts_with(PENDING_PREFIX)
}

/// How an owned pending value begins, up to its owner.
const OWNED_PREFIX: &[u8] = br#"{"type":"pending","owner":""#;
/// How a claiming value ends, after its owner.
const CLAIMING_SUFFIX: &[u8] = br#"","phase":"claiming"}"#;

/// Whether `value` is a *claiming* value (see the module doc): a claim under which nothing
/// was sent, which any request with the key may take over. Strict: only the exact shape
/// [`Phase::Claiming`] writes, so that no running value, of this version or an older one,
/// is ever mistaken for one.
pub(crate) fn is_claiming(value: &[u8]) -> bool {
    value
        .strip_prefix(OWNED_PREFIX)
        .and_then(|rest| rest.strip_suffix(CLAIMING_SUFFIX))
        .is_some_and(|owner| !owner.is_empty() && !owner.contains(&b'"'))
}

/// The phase of a claim (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Created or taken over, not confirmed: nothing sent; anyone may take it over.
    Claiming,
    /// Confirmed: its action may be sent, or may have been; nobody else takes it over.
    Running,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Claiming => "claiming",
            Phase::Running => "running",
        }
    }
}

/// The pending value of `owner`'s claim in `phase`.
fn pending_value(owner: &str, phase: Phase) -> Bytes {
    Bytes::from(format!(
        r#"{{"type":"pending","owner":"{owner}","phase":"{}"}}"#,
        phase.name()
    ))
}

/// Whether `value` is one of `owner`'s pending values, in either phase (a write of its
/// confirm may have landed without its answer).
fn owned_by(owner: &str, value: &[u8]) -> bool {
    [Phase::Claiming, Phase::Running]
        .into_iter()
        .any(|phase| pending_value(owner, phase).as_ref() == value)
}

/// The owner of `value` when it is a pending value of this version, in either phase
/// (exactly as [`pending_value`] writes it), else `None`.
fn owner_of(value: &[u8]) -> Option<&str> {
    let rest = value.strip_prefix(OWNED_PREFIX)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let owner = std::str::from_utf8(&rest[..end]).ok()?;
    (!owner.is_empty() && owned_by(owner, value)).then_some(owner)
}

/// Most abandoned claims remembered at once (each is one request answered `not_sent`
/// while NATS was slow); the oldest make room, each counted
/// (`ami_bridge_idempotency_claims_forgotten_total`) and logged, rate-limited.
const ABANDONED_MAX: usize = 4096;
/// Attempts to free a claim, or store a reply, after the requester was answered.
const FOLLOW_UP_ATTEMPTS: u32 = 6;
/// The first pause between those attempts (doubling, up to [`FOLLOW_UP_MAX_PAUSE`]).
const FOLLOW_UP_PAUSE: Duration = Duration::from_millis(250);
const FOLLOW_UP_MAX_PAUSE: Duration = Duration::from_secs(2);
/// Follow-ups (a claim to free or a reply to store after the requester was answered) run
/// at most this many at once: while NATS is down each takes seconds, and requests keep
/// coming. Past it one is skipped, logged rate-limited: its key stays as it is until the
/// window ends (a retry reaching this process still takes an abandoned claim over).
const FOLLOW_UPS_MAX: usize = 1024;
/// Most bytes of replies that follow-ups hold at once. A reply is up to NATS's max payload
/// (a list action's answer on a busy PBX: a megabyte and more), so the count alone would
/// let a gigabyte wait on a bucket that takes no stores; this is as much as the bucket
/// holds in all (its `max_bytes`). Past it a follow-up is skipped like one over the count.
const FOLLOW_UPS_MAX_BYTES: usize = 64 << 20;

/// Room for follow-ups: at most [`FOLLOW_UPS_MAX`] at once, holding at most
/// [`FOLLOW_UPS_MAX_BYTES`] of replies between them.
#[derive(Debug)]
struct FollowUpRoom {
    count: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

/// One follow-up's share of the room: given back when dropped.
#[derive(Debug)]
pub(crate) struct FollowUpSlot {
    _count: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

impl FollowUpRoom {
    fn new(count: usize, max_bytes: usize) -> FollowUpRoom {
        FollowUpRoom {
            count: Arc::new(Semaphore::new(count)),
            bytes: Arc::new(Semaphore::new(max_bytes.min(Semaphore::MAX_PERMITS))),
            max_bytes: max_bytes.min(Semaphore::MAX_PERMITS),
        }
    }

    /// Room for one follow-up holding `bytes`, if there is. One larger than all the byte
    /// room takes all of it (it runs only alone: never left out for good).
    fn take(&self, bytes: usize) -> Option<FollowUpSlot> {
        let count = self.count.clone().try_acquire_owned().ok()?;
        let n = u32::try_from(bytes.min(self.max_bytes)).unwrap_or(u32::MAX);
        let bytes = match n {
            0 => None,
            n => Some(self.bytes.clone().try_acquire_many_owned(n).ok()?),
        };
        Some(FollowUpSlot {
            _count: count,
            _bytes: bytes,
        })
    }
}
/// Claims (create, take-over) tried at most this many times when the key changes under
/// them (deleted between a failed create and the read of what holds it, or taken over by
/// another request between that read and the take-over).
const CLAIM_ATTEMPTS: usize = 3;

/// How long a request that claims its key again (its first claim was taken over) lets
/// another request's claiming value be confirmed before it takes it over.
pub(crate) const CLAIM_PATIENCE: Duration = Duration::from_millis(200);
/// How many times, at most, one claim attempt waits for claiming values of others.
const CLAIM_WAITS: usize = 2;
/// The first pause before the key is read to find out whether a confirm without an answer
/// landed (doubling, up to [`CONFIRM_MAX_PAUSE`]).
const CONFIRM_PAUSE: Duration = Duration::from_millis(50);
const CONFIRM_MAX_PAUSE: Duration = Duration::from_secs(1);

/// Whether deadline `until` has passed.
fn passed(until: Option<Instant>) -> bool {
    until.is_some_and(|at| Instant::now() >= at)
}

/// `f`, unless deadline `until` comes first (`None`; a write cut so may still land).
async fn within<F: std::future::Future>(until: Option<Instant>, f: F) -> Option<F::Output> {
    match until {
        Some(at) => tokio::time::timeout_at(at, f).await.ok(),
        None => Some(f.await),
    }
}

/// Sleeps `pause`; `false` (at once) when deadline `until` comes first.
async fn pause_within(pause: Duration, until: Option<Instant>) -> bool {
    match until {
        Some(at) if Instant::now() + pause >= at => false,
        _ => {
            tokio::time::sleep(pause).await;
            true
        }
    }
}

/// What holds a key, as read by a claim.
enum Held {
    Value(async_nats::jetstream::kv::Entry),
    Nothing,
    Late,
    Unreadable(String),
}

/// The idempotency bucket, and the claims this process abandoned.
pub(crate) struct Keys {
    kv: Store,
    /// The bucket's `max_age` (the idempotency window as the bucket was created; zero: no
    /// expiry). A running claim is written again every third of it.
    window: Duration,
    /// This process's instance token: part of every claim's owner.
    instance: String,
    next: AtomicU64,
    /// (Key, owner) of each claim (and when it was abandoned) of a request answered
    /// `not_sent` whose claim may still hold the key, claiming or running: every one of
    /// them, as several requests with one key may be abandoned in one stall, and the key
    /// then holds whichever of their writes landed last.
    abandoned: Mutex<Abandoned>,
    /// Room for follow-ups ([`FOLLOW_UPS_MAX`], [`FOLLOW_UPS_MAX_BYTES`]).
    follow_ups: FollowUpRoom,
    /// The lines about follow-ups skipped for lack of room, and about abandoned claims
    /// forgotten to make room (kinds [`SKIPPED`] and [`FORGOTTEN`]).
    said: Mutex<LogThrottle<2>>,
    /// Follow-ups skipped for lack of room.
    skipped: Counter,
    /// Abandoned claims forgotten to make room.
    forgotten: Counter,
}

/// [`Keys::said`]'s kind for follow-ups skipped.
const SKIPPED: usize = 0;
/// [`Keys::said`]'s kind for abandoned claims forgotten.
const FORGOTTEN: usize = 1;

/// The claims this process abandoned, each with when: at most [`ABANDONED_MAX`].
#[derive(Debug, Default)]
struct Abandoned {
    claims: HashMap<(String, String), Instant>,
}

impl Abandoned {
    /// Remembers claim `id` (key, owner) as abandoned at `now`, first forgetting those
    /// abandoned `window` ago or longer (zero: none expire). Returns the claim forgotten to
    /// make room, if [`ABANDONED_MAX`] were remembered already: a retry of its key reaching
    /// this process can no longer take it over (it may be answered `duplicate` though
    /// nothing was sent), so the caller counts and says it.
    fn insert(
        &mut self,
        id: (String, String),
        now: Instant,
        window: Duration,
    ) -> Option<(String, String)> {
        if !window.is_zero() {
            // Expired with the bucket's entries: nothing of them is left to free.
            self.claims
                .retain(|_, at| now.saturating_duration_since(*at) < window);
        }
        let mut forgotten = None;
        if self.claims.len() >= ABANDONED_MAX && !self.claims.contains_key(&id) {
            let oldest = self
                .claims
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.claims.remove(&oldest);
                forgotten = Some(oldest);
            }
        }
        self.claims.insert(id, now);
        forgotten
    }
}

/// A claim this request holds, or may hold (a write of it got no answer).
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) key: String,
    /// This request's owner token (`<instance>-<n>`): its values are its alone.
    owner: String,
    /// The phase of the value it last wrote (a confirm without an answer is `Running`:
    /// it may have landed).
    phase: Phase,
    /// The revision it was last written at, when known (unknown after a write that got no
    /// answer: it may have landed).
    revision: Option<u64>,
}

impl Claim {
    /// The revision it was last written at (its stored reply's, once stored), when known.
    pub(crate) fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// The value it last wrote.
    fn value(&self) -> Bytes {
        pending_value(&self.owner, self.phase)
    }

    /// Whether `value` is this claim's, in either phase.
    fn holds(&self, value: &[u8]) -> bool {
        owned_by(&self.owner, value)
    }
}

/// What claiming a key gave.
pub(crate) enum Claimed {
    /// This request holds the key with a claiming value: it may run once it confirms it
    /// ([`Keys::confirm`]).
    Held(Claim),
    /// Another request holds it: its stored reply, or a pending value (it is running, or
    /// an older bridge's request whose phase is unknown).
    Taken(Bytes),
    /// The request's deadline passed before the claim was settled: nothing may run. With
    /// the claim when a write of it, cut by the deadline, may still land (it is to be
    /// freed, [`Keys::abandon`]); `None` when none was under way.
    Late(Option<Claim>),
    /// The store did not answer, or failed: nothing may run. With the claim when a write
    /// of it may have landed (it is to be freed, [`Keys::abandon`]). `None` when the key
    /// was found held by a value that could then not be read, or kept changing under
    /// every attempt: no write of the claim is known to be in the key, and none is to be
    /// freed; but async-nats answers a `create` with `AlreadyExists` also when its write
    /// got no answer and its own read then found a value, which may be that write landed
    /// late: then the key holds this request's claiming value, which any request with the
    /// key takes over (a retry reaching this process as well).
    Failed(String, Option<Claim>),
}

/// What confirming a claim gave.
#[derive(Debug)]
pub(crate) enum Confirmed {
    /// The key holds this request's running value: its action may be sent.
    Running,
    /// The key no longer holds this request's claim, and its confirm can no longer land:
    /// another request took the claiming value over (or it was freed or expired). Nothing
    /// was sent under this claim and nothing of it is in the key to free. Whether the
    /// request now holding the key sends is not known (it may send nothing: its deadline
    /// passes, its own confirm fails, a stop gives up on it, its bridge crashes): this
    /// request is then exactly a fresh one with its key, and may claim it again.
    TakenOver,
    /// The request's deadline passed while whether the confirm landed was still unknown
    /// (NATS did not answer, or failed, every time it was asked): nothing may be sent. The
    /// running value may have landed, or still land: the claim is to be freed
    /// ([`Keys::abandon`]).
    Failed(String),
}

/// Whether a key is now free of a claim.
enum Freed {
    /// Deleted, or it never landed and cannot land any more, or another value holds it.
    Done,
    /// NATS did not answer, or the key changed meanwhile: try again.
    Again(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only map inserts and removes run under the lock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Keys {
    /// The keys of bucket `kv`, whose entries live `window` (its `max_age`).
    /// `skipped` and `forgotten` count follow-ups skipped for lack of room and abandoned
    /// claims forgotten to make room (the bridge's metrics).
    pub(crate) fn new(
        kv: Store,
        window: Duration,
        instance: &str,
        skipped: Counter,
        forgotten: Counter,
    ) -> Keys {
        Keys {
            kv,
            window,
            instance: instance.to_string(),
            next: AtomicU64::new(0),
            abandoned: Mutex::default(),
            follow_ups: FollowUpRoom::new(FOLLOW_UPS_MAX, FOLLOW_UPS_MAX_BYTES),
            said: Mutex::default(),
            skipped,
            forgotten,
        }
    }

    /// Room for one follow-up of `key` holding `bytes` (its reply), or `None` (counted,
    /// logged rate-limited) when [`FOLLOW_UPS_MAX`] run already, or the replies they hold
    /// leave less than `bytes` of [`FOLLOW_UPS_MAX_BYTES`].
    pub(crate) fn follow_up_slot(&self, key: &str, bytes: usize) -> Option<FollowUpSlot> {
        if let Some(slot) = self.follow_ups.take(bytes) {
            return Some(slot);
        }
        self.skipped.inc();
        let quiet = lock(&self.said).note(SKIPPED, Instant::now());
        if let Some(quiet) = quiet {
            let more = crate::throttle::more_since(quiet);
            log::warn!(
                "idempotency key {key}: not brought up to date after its reply ({FOLLOW_UPS_MAX} such updates, or {FOLLOW_UPS_MAX_BYTES} bytes of their replies, wait on NATS already): it stays as it is until the window ends{more}"
            );
        }
        None
    }

    /// A new owner token: one per request, so no request ever finds its own claim.
    fn new_owner(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.instance)
    }

    /// Claims `key` for one request, with a claiming value (see the module doc): created,
    /// or written over another request's claiming value or over an abandoned claim of
    /// this process. Every store call is bounded by the request's deadline `until`.
    ///
    /// `patience`: how long to let another request's claiming value be confirmed before
    /// taking it over (zero: at once). A request that claims again after its own claim was
    /// taken over ([`Confirmed::TakenOver`]) is patient, so that requests with one key do
    /// not keep taking the key from one another: the holder's confirm is one round trip.
    pub(crate) async fn claim(
        &self,
        key: &str,
        patience: Duration,
        until: Option<Instant>,
    ) -> Claimed {
        let claim = Claim {
            key: key.to_string(),
            owner: self.new_owner(),
            phase: Phase::Claiming,
            revision: None,
        };
        let value = claim.value();
        'attempts: for _ in 0..CLAIM_ATTEMPTS {
            // Every earlier attempt was refused (nothing of it landed): nothing to free.
            if passed(until) {
                return Claimed::Late(None);
            }
            match within(until, self.kv.create(key, value.clone())).await {
                Some(Ok(revision)) => {
                    return Claimed::Held(Claim {
                        revision: Some(revision),
                        ..claim
                    })
                }
                Some(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => {}
                // It may have landed: to be freed.
                Some(Err(e)) => return Claimed::Failed(e.to_string(), Some(claim)),
                None => return Claimed::Late(Some(claim)),
            }
            let mut entry = match self.holder(key, until).await {
                Held::Value(e) => e,
                Held::Nothing => continue,
                Held::Late => return Claimed::Late(None),
                Held::Unreadable(e) => return Claimed::Failed(e, None),
            };
            let mut waits = 0;
            while !patience.is_zero()
                && waits < CLAIM_WAITS
                && is_claiming(&entry.value)
                && !self.is_abandoned(key, &entry.value)
            {
                // Another request's claim: it is confirmed within a round trip, unless its
                // request sends nothing after all (gone, past its deadline).
                waits += 1;
                if !pause_within(patience, until).await {
                    return Claimed::Late(None);
                }
                match self.holder(key, until).await {
                    // Not confirmed meanwhile: taken over below.
                    Held::Value(again) if again.revision == entry.revision => break,
                    Held::Value(again) => entry = again,
                    Held::Nothing => continue 'attempts,
                    Held::Late => return Claimed::Late(None),
                    Held::Unreadable(e) => return Claimed::Failed(e, None),
                }
            }
            let claiming = is_claiming(&entry.value);
            if !claiming && !self.is_abandoned(key, &entry.value) {
                return Claimed::Taken(entry.value);
            }
            if passed(until) {
                return Claimed::Late(None);
            }
            // A claiming value (nothing was sent under it, and its holder sends only once
            // its confirm, a compare-and-set on this revision, succeeds), or a claim of a
            // request of this process answered `not_sent` (nothing ran under it, and its
            // retry is what the answer invited). Taken over with a compare-and-set on its
            // revision: of its holder and this request, at most one will send.
            match within(until, self.kv.update(key, value.clone(), entry.revision)).await {
                Some(Ok(revision)) => {
                    if let Some(owner) = owner_of(&entry.value) {
                        lock(&self.abandoned)
                            .claims
                            .remove(&(key.to_string(), owner.to_string()));
                    }
                    if claiming {
                        log::info!("idempotency key {key}: a claim under which nothing was sent is taken over by a request with the same key");
                    } else {
                        log::info!("idempotency key {key}: the claim of a request answered not_sent is taken over by its retry");
                    }
                    return Claimed::Held(Claim {
                        revision: Some(revision),
                        ..claim
                    });
                }
                // Written meanwhile (confirmed, taken over by another, freed): look again.
                Some(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                // It may have landed: to be freed.
                Some(Err(e)) => return Claimed::Failed(e.to_string(), Some(claim)),
                None => return Claimed::Late(Some(claim)),
            }
        }
        // Every attempt found the key changed under it (other requests with this key
        // claiming it at once): none of this request's writes landed.
        Claimed::Failed("the key kept changing while it was claimed".into(), None)
    }

    /// What holds `key` after a `create` found it taken, read within `until`.
    async fn holder(&self, key: &str, until: Option<Instant>) -> Held {
        match within(until, self.kv.entry(key)).await {
            Some(Ok(Some(e))) if e.operation == Operation::Put => Held::Value(e),
            // Deleted (or expired) since the create failed: create again.
            Some(Ok(_)) => Held::Nothing,
            // The key holds a value, whose it is not known: nothing may run (it may be a
            // request running), and no write of this request's is known to be there: the
            // create found the key taken. (async-nats answers `AlreadyExists` also when
            // its create's write got no answer and its own read then found a value, which
            // may be that write, landed late: a claiming value, which a retry on any
            // bridge takes over. Not abandoned either way: a retry here takes it over all
            // the same.)
            Some(Err(e)) => Held::Unreadable(format!("cannot read what holds the key: {e}")),
            None => Held::Late,
        }
    }

    /// Confirms `claim` (held with a claiming value) right before its action is sent: a
    /// compare-and-set on the revision its claiming value was written at, to its running
    /// value. Only a claim confirmed ([`Confirmed::Running`]) may send.
    ///
    /// A confirm that gets no answer (NATS slow), or fails otherwise, has sent nothing, but
    /// may land later: until the request's deadline `until` it is found out, instead of
    /// given up on at once. The key is read: this request's running value there means it
    /// landed (confirmed after all); its claiming value still there, that it has not (yet):
    /// it is written again with the same compare-and-set (of the two, at most one lands,
    /// and both are this request's running value); any other value or none, that it never
    /// will ([`Confirmed::TakenOver`]). Every store call is bounded by `until`; one cut by
    /// it may still land, and counts as unknown.
    pub(crate) async fn confirm(&self, claim: &mut Claim, until: Option<Instant>) -> Confirmed {
        let Some(revision) = claim.revision else {
            // Not reached: a held claim knows its revision. Nothing is sent on a guess.
            return Confirmed::Failed("the claim's revision is not known".into());
        };
        let key = claim.key.clone();
        let claiming = pending_value(&claim.owner, Phase::Claiming);
        let running = pending_value(&claim.owner, Phase::Running);
        // Why whether a write of the confirm landed is not known, once it is not.
        let mut unknown: Option<String> = None;
        let mut write = true;
        let mut pause = CONFIRM_PAUSE;
        loop {
            if write {
                if unknown.is_some() && passed(until) {
                    break;
                }
                match within(
                    until,
                    self.kv.update(key.as_str(), running.clone(), revision),
                )
                .await
                {
                    Some(Ok(r)) => {
                        claim.phase = Phase::Running;
                        claim.revision = Some(r);
                        if unknown.is_some() {
                            log::info!("idempotency key {key}: its claim is confirmed at a second attempt, the first having got no answer");
                        }
                        return Confirmed::Running;
                    }
                    // The key changed: taken over, when no earlier write of this confirm
                    // may have landed; else read below.
                    Some(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        if unknown.is_none() {
                            return Confirmed::TakenOver;
                        }
                    }
                    Some(Err(e)) => {
                        // It may have landed: from now on the claim is freed as possibly
                        // running (its claiming value, still at `revision` if the confirm
                        // did not land, is freed the same way: both are this request's).
                        claim.phase = Phase::Running;
                        unknown = Some(e.to_string());
                    }
                    None => {
                        claim.phase = Phase::Running;
                        return Confirmed::Failed(
                            "its claim's confirm got no answer before the request's deadline"
                                .into(),
                        );
                    }
                }
            }
            // Whether it landed is read from the key, paced while NATS fails fast.
            let why = unknown.clone().unwrap_or_default();
            if !pause_within(pause, until).await {
                break;
            }
            pause = (pause * 2).min(CONFIRM_MAX_PAUSE);
            match within(until, self.kv.entry(key.as_str())).await {
                Some(Ok(Some(e))) if e.operation == Operation::Put && e.value == running => {
                    claim.revision = Some(e.revision);
                    log::info!("idempotency key {key}: its claim's confirm got no answer ({why}), and is found to have landed");
                    return Confirmed::Running;
                }
                Some(Ok(Some(e))) if e.operation == Operation::Put && e.value == claiming => {
                    // Not landed yet: confirmed again on the same revision.
                    write = e.revision == revision;
                    if !write {
                        // Not reached: this claiming value was written once, at `revision`.
                        return Confirmed::Failed(format!(
                            "its claim moved to revision {} unconfirmed",
                            e.revision
                        ));
                    }
                }
                // Another request's value, or none: the key moved past `revision`, and a
                // confirm on it can never land.
                Some(Ok(_)) => return Confirmed::TakenOver,
                // Read again.
                Some(Err(e)) => {
                    unknown = Some(format!("{why}; then the key could not be read: {e}"));
                    write = false;
                }
                None => break,
            }
        }
        Confirmed::Failed(format!(
            "whether its claim's confirm landed was still unknown at the request's deadline ({})",
            unknown.unwrap_or_default()
        ))
    }

    fn is_abandoned(&self, key: &str, value: &[u8]) -> bool {
        owner_of(value).is_some_and(|owner| {
            lock(&self.abandoned)
                .claims
                .contains_key(&(key.to_string(), owner.to_string()))
        })
    }

    /// `claim`'s request was answered `not_sent` while its claim may hold the key: until it
    /// is freed ([`free`](Self::free)), a retry reaching this process takes it over, also
    /// when a confirm of it may have landed (nothing was sent under it).
    pub(crate) fn abandon(&self, claim: &Claim) {
        let now = Instant::now();
        let id = (claim.key.clone(), claim.owner.clone());
        let forgotten = lock(&self.abandoned).insert(id, now, self.window);
        if let Some((key, _)) = forgotten {
            self.forgotten.inc();
            if let Some(quiet) = lock(&self.said).note(FORGOTTEN, now) {
                let more = crate::throttle::more_since(quiet);
                log::warn!(
                    "idempotency key {key}: its abandoned claim forgotten ({ABANDONED_MAX} remembered already): a retry of it may now be answered duplicate until the window ends, though nothing was sent{more}"
                );
            }
        }
    }

    /// One attempt to free `claim` (its request answered `not_sent`, nothing sent): `Ok`
    /// once the key no longer holds it and a late write of it can no longer land; `Err`
    /// says why not yet (NATS slow, or the key changed meanwhile).
    pub(crate) async fn free_once(&self, claim: &mut Claim) -> Result<(), String> {
        match self.try_free(claim).await {
            Freed::Done => {
                lock(&self.abandoned)
                    .claims
                    .remove(&(claim.key.clone(), claim.owner.clone()));
                Ok(())
            }
            Freed::Again(why) => Err(why),
        }
    }

    async fn try_free(&self, claim: &mut Claim) -> Freed {
        let key = claim.key.as_str();
        if let Some(revision) = claim.revision {
            match self.kv.delete_expect_revision(key, Some(revision)).await {
                Ok(()) => return Freed::Done,
                // Written since (a write of this claim whose answer was lost, or another
                // request's): read what holds the key.
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(e) => {
                    // The delete may have landed: the revision is unknown now.
                    claim.revision = None;
                    return Freed::Again(e.to_string());
                }
            }
        }
        let current = match self.kv.entry(key).await {
            Ok(Some(e)) if e.operation == Operation::Put => {
                if !claim.holds(&e.value) {
                    // Another request's claim or reply: not this one's to free.
                    return Freed::Done;
                }
                e.revision
            }
            // A delete marker: this claim is not there. One more marker on its revision
            // makes a late create of this claim (which expects that revision) fail.
            Ok(Some(e)) => e.revision,
            // Nothing at all: likewise, a marker where a late create expects none.
            Ok(None) => 0,
            Err(e) => return Freed::Again(e.to_string()),
        };
        match self.kv.delete_expect_revision(key, Some(current)).await {
            Ok(()) => Freed::Done,
            // It may have landed: the next attempt reads the key again.
            Err(e) => Freed::Again(e.to_string()),
        }
    }

    /// Frees `claim` after its requester was answered `not_sent`, trying a few times over
    /// some seconds while NATS is slow; logged when it cannot (the key then blocks a retry
    /// elsewhere as a duplicate until the window ends, though nothing ran).
    pub(crate) async fn free(&self, mut claim: Claim) {
        let mut pause = FOLLOW_UP_PAUSE;
        let mut last = String::new();
        for attempt in 0..FOLLOW_UP_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(FOLLOW_UP_MAX_PAUSE);
            }
            match self.free_once(&mut claim).await {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        log::warn!(
            "idempotency key {}: not freed after a not_sent answer ({last}); a retry reaching another bridge is answered duplicate until the window ends, though nothing ran",
            claim.key
        );
    }

    /// One attempt to store `reply` in place of `claim` (its action ran, or may have). A
    /// plain put, no compare-and-set: the claim was kept alive while the action ran (a loss
    /// of it is logged then), and the header a compare-and-set adds would push a reply
    /// that just fits NATS's max payload over it, leaving the key pending and the retry
    /// without its original.
    pub(crate) async fn store_once(&self, claim: &mut Claim, reply: &Bytes) -> Result<(), String> {
        match self.kv.put(claim.key.as_str(), reply.clone()).await {
            Ok(revision) => {
                claim.revision = Some(revision);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stores `reply` in place of `claim`, trying a few times after the requester was
    /// answered. When it cannot, the key keeps its pending value until the window ends:
    /// still one run per key, a retry is answered `duplicate` without the original.
    ///
    /// Each try reads the key first and writes only while it holds a pending value (or
    /// nothing): a write that failed may have landed all the same (NATS slow, its answer
    /// lost), and a final value found there (this reply, or a late answer that has since
    /// replaced its `timed_out`, see the `late` module) is never overwritten.
    pub(crate) async fn store(&self, mut claim: Claim, reply: Bytes) {
        let mut pause = FOLLOW_UP_PAUSE;
        let mut last = String::new();
        for attempt in 0..FOLLOW_UP_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(FOLLOW_UP_MAX_PAUSE);
            }
            match self.kv.entry(claim.key.as_str()).await {
                Ok(Some(e)) if e.operation == Operation::Put && !is_pending(&e.value) => {
                    if e.value != reply {
                        log::info!(
                            "idempotency key {}: holds a final value written since its result's first store failed (a late answer, say); kept",
                            claim.key
                        );
                    }
                    return;
                }
                // Pending, or nothing there: written below.
                Ok(_) => {}
                // What the key holds is not known (NATS slow or down): not written blind,
                // tried again at the next attempt. A write now could land after a final
                // value written meanwhile, as a read that waits its timeout lets happen.
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            }
            match self.store_once(&mut claim, &reply).await {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        log::warn!(
            "idempotency key {}: result not stored ({last}); it stays pending until the window ends: a retry is answered duplicate without the original",
            claim.key
        );
    }

    /// Runs `action` while `claim` (confirmed: running) holds its key, writing its running
    /// value again every third of the window so it does not expire under an action still
    /// running. A claim lost
    /// meanwhile (NATS unreachable for most of a window) is logged: a retry may then run.
    pub(crate) async fn hold_while<F: std::future::Future>(
        &self,
        claim: &mut Claim,
        action: F,
    ) -> F::Output {
        if self.window.is_zero() {
            return action.await;
        }
        let every = self.window / 3;
        tokio::pin!(action);
        let refresh = async {
            let mut at = Instant::now() + every;
            loop {
                tokio::time::sleep_until(at).await;
                at += every;
                // Bounded by the next refresh: a write that hangs is given up, its
                // revision then unknown.
                match tokio::time::timeout(every, self.refresh(claim)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(lost)) => {
                        log::warn!(
                            "idempotency key {}: its claim was lost while its action runs ({lost}): a retry with it may run the action again",
                            claim.key
                        );
                        return;
                    }
                    Err(_) => claim.revision = None,
                }
            }
        };
        tokio::select! {
            biased;
            out = &mut action => out,
            () = refresh => action.await,
        }
    }

    /// Writes `claim`'s running value again (a compare-and-set on the revision its confirm,
    /// or the last refresh, wrote it at). `Err` when the key no longer holds it (it
    /// expired, or another request took it): nothing more to keep. NATS failing is no loss
    /// yet (`Ok`).
    async fn refresh(&self, claim: &mut Claim) -> Result<(), String> {
        let key = claim.key.as_str();
        let value = claim.value();
        if let Some(revision) = claim.revision {
            claim.revision = None;
            match self.kv.update(key, value.clone(), revision).await {
                Ok(r) => {
                    claim.revision = Some(r);
                    return Ok(());
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(_) => return Ok(()),
            }
        }
        match self.kv.entry(key).await {
            Ok(Some(e)) if e.operation == Operation::Put && e.value == value => {
                if let Ok(r) = self.kv.update(key, value, e.revision).await {
                    claim.revision = Some(r);
                }
                Ok(())
            }
            Ok(Some(e)) if e.operation == Operation::Put => {
                Err("another request's value holds the key".into())
            }
            Ok(_) => Err("the key expired or was deleted".into()),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_ups_hold_at_most_their_byte_cap_of_replies_not_only_their_count() {
        let room = FollowUpRoom::new(FOLLOW_UPS_MAX, FOLLOW_UPS_MAX_BYTES);
        // Replies of NATS's default max payload, a bucket that takes no stores: as many
        // follow-ups as the count allows would hold a gigabyte.
        let reply = 1 << 20;
        let mut held = Vec::new();
        for _ in 0..FOLLOW_UPS_MAX {
            if let Some(slot) = room.take(reply) {
                held.push(slot);
            }
        }
        assert_eq!(held.len() * reply, FOLLOW_UPS_MAX_BYTES, "bytes held");
        // Small ones (a claim to free holds nothing) still have their count.
        assert!(room.take(0).is_some());
        // Room given back is taken again.
        held.pop();
        assert!(room.take(reply).is_some());
        // One over the whole byte room runs alone, never left out for good.
        drop(held);
        assert!(room.take(FOLLOW_UPS_MAX_BYTES * 2).is_some());
    }

    #[test]
    fn follow_ups_past_their_count_are_refused_whatever_their_size() {
        let room = FollowUpRoom::new(2, 1 << 20);
        let a = room.take(0);
        let b = room.take(10);
        assert!(a.is_some() && b.is_some());
        assert!(room.take(0).is_none());
    }

    #[test]
    fn an_abandoned_claim_forgotten_to_make_room_is_told_to_the_caller_oldest_first() {
        let t0 = Instant::now();
        let window = Duration::from_secs(3600);
        let mut a = Abandoned::default();
        let id = |n: usize| (format!("key-{n}"), format!("owner-{n}"));
        for n in 0..ABANDONED_MAX {
            let at = t0 + Duration::from_millis(n as u64);
            assert_eq!(a.insert(id(n), at, window), None, "room for claim {n}");
        }
        // Full: the next one makes room by forgetting the oldest, which the caller counts.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(a.insert(id(ABANDONED_MAX), later, window), Some(id(0)));
        assert_eq!(a.insert(id(ABANDONED_MAX + 1), later, window), Some(id(1)));
        assert_eq!(a.claims.len(), ABANDONED_MAX);
        // One already remembered takes no room.
        assert_eq!(a.insert(id(5), later, window), None);
        // Once the window has passed, the old ones expire with the bucket's entries:
        // nothing is forgotten early.
        let past = t0 + window + Duration::from_secs(5);
        assert_eq!(a.insert(id(ABANDONED_MAX + 2), past, window), None);
        assert_eq!(
            a.claims.len(),
            4,
            "the three of 10 s (id 5 again among them) and this one"
        );
    }

    #[test]
    fn pending_values_old_and_new_are_told_from_replies() {
        assert!(is_pending(b"pending"));
        assert!(is_pending(br#"{"type":"pending","owner":"ab-1"}"#));
        assert!(!is_pending(
            br#"{"type":"outcome","server":"pbx1","outcome":"success"}"#
        ));
        assert!(!is_pending(b"pending2"));
        // Both phases of a claim are pending to every version.
        for phase in [Phase::Claiming, Phase::Running] {
            assert!(is_pending(&pending_value("ab-1", phase)));
        }
    }

    #[test]
    fn only_claiming_values_are_told_apart_as_claiming() {
        assert!(is_claiming(&pending_value(
            "0123456789abcdef-7",
            Phase::Claiming
        )));
        // Running values, old owned values without a phase, the legacy `pending` and
        // replies may all stand for an action that runs: never taken over.
        for value in [
            pending_value("0123456789abcdef-7", Phase::Running).as_ref(),
            br#"{"type":"pending","owner":"ab-1"}"#,
            b"pending",
            br#"{"type":"outcome","server":"pbx1","outcome":"success"}"#,
            br#"{"type":"pending","owner":"","phase":"claiming"}"#,
            br#"{"type":"pending","owner":"a","b","phase":"claiming"}"#,
            br#"{"type":"pending","owner":"ab-1","phase":"claiming"} "#,
        ] {
            assert!(!is_claiming(value), "{}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn a_claim_holds_its_values_in_both_phases_and_no_other_owners() {
        let claim = Claim {
            key: "k".into(),
            owner: "ab-1".into(),
            phase: Phase::Claiming,
            revision: Some(1),
        };
        assert!(claim.holds(&pending_value("ab-1", Phase::Claiming)));
        assert!(claim.holds(&pending_value("ab-1", Phase::Running)));
        assert!(!claim.holds(&pending_value("ab-10", Phase::Claiming)));
        assert!(!claim.holds(br#"{"type":"pending","owner":"ab-1"}"#));
    }
}
