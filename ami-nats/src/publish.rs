//! From the merged AMI stream to JetStream, in one task: every item gets its subject, JSON
//! body and message ID, waits in a bounded backlog, and is published with up to `window`
//! acks outstanding. When NATS fails (an error ack, or the first outstanding ack not back
//! within the ack timeout) the publisher goes back to the first unacknowledged item and
//! publishes again from there, in order, with the same message IDs (JetStream drops the
//! copies it already stored).
//!
//! Why not the JetStream context's `send_publish`: it makes every publish a request of its
//! own (a fresh inbox, a oneshot channel, a semaphore permit, a timer, a map entry in the
//! connection task, the ack parsed as JSON): about a third of the bridge's CPU per event.
//! Here every publish carries the reply subject `<inbox>.<n>` and all acks arrive on one
//! wildcard subscription, where `n` finds the item directly. The acks are the ones
//! JetStream sends for any publish that has a reply subject: nothing the protocol does not
//! promise.

use crate::ack::{parse_ack, Ack, RefusalLog};
use crate::config::ServerSpec;
use crate::metrics::Metrics;
use crate::shown::Remote;
use crate::throttle::LogThrottle;
use crate::upstream::{Merged, ServerIx, UpItem};
use ami_json::{GapReason, Place, SessionState};
use ami_proto::StreamItem;
use async_nats::{HeaderMap, HeaderValue, Subject};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// An instant on two clocks: the monotonic one (which the lease's timing rests on) and the
/// wall clock. A renewal deadline is counted on both, and has passed once either says so:
/// the monotonic clock does not count the time a process was suspended (a host suspended,
/// a VM paused, as its guest sees it), the wall clock does once it is set right (at the
/// resume, or by NTP). A wall clock stepped forward only ends a term early (the lease,
/// untouched meanwhile, is taken back at once); one stepped back leaves the monotonic
/// deadline in force.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    mono: Instant,
    wall: SystemTime,
}

impl Stamp {
    /// Now, on both clocks.
    pub(crate) fn now() -> Stamp {
        Stamp {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// `d` later on both clocks (as far as each can count).
    pub(crate) fn after(self, d: Duration) -> Stamp {
        Stamp {
            mono: self.mono.checked_add(d).unwrap_or(self.mono),
            wall: self.wall.checked_add(d).unwrap_or(self.wall),
        }
    }
}

/// The lease term each server is served under now (0: not served by this bridge), and the
/// instant by which that term must be renewed. Items of an older term are discarded, never
/// published: that is what keeps a server from being served twice once its lease is gone.
/// So are those of a term whose renewal deadline has passed, though the control task that
/// ends such a term (every 25 ms) has not run yet: the publisher reads the deadline itself,
/// at each publish, so a process stalled past it (CPU starvation, SIGSTOP, suspended, a
/// NATS client whose queue kept a publish waiting) publishes nothing more under that term
/// once it runs again, whichever of its tasks runs first.
#[derive(Debug)]
pub(crate) struct Terms {
    terms: Vec<AtomicU64>,
    /// Per server: the renewal deadline on the monotonic clock, in nanoseconds after
    /// `base` (`u64::MAX`: none).
    fences: Vec<AtomicU64>,
    /// Per server: the renewal deadline on the wall clock, in nanoseconds after the Unix
    /// epoch (`u64::MAX`: none).
    wall_fences: Vec<AtomicU64>,
    /// Per server: a term found past its deadline (0: none). Once found so it stays so,
    /// whatever the clocks say next (a wall clock stepped back) and whatever a renewal
    /// checked an instant earlier stores: an item of it may have been dropped then, which
    /// its session's positions would skip without a gap, so the term must end.
    lapsed: Vec<AtomicU64>,
    base: Instant,
}

/// A renewal deadline as stored in [`Terms`]: none.
const NO_FENCE: u64 = u64::MAX;

/// `at` in nanoseconds after the Unix epoch (one before it as the epoch; one too far ahead
/// for a `u64` as no deadline).
fn wall_nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(NO_FENCE))
}

impl Terms {
    pub(crate) fn new(servers: usize) -> Terms {
        Terms {
            terms: (0..servers).map(|_| AtomicU64::new(0)).collect(),
            fences: (0..servers).map(|_| AtomicU64::new(NO_FENCE)).collect(),
            wall_fences: (0..servers).map(|_| AtomicU64::new(NO_FENCE)).collect(),
            lapsed: (0..servers).map(|_| AtomicU64::new(0)).collect(),
            base: Instant::now(),
        }
    }
    /// `ix` is served under `term` from now on, with no renewal deadline (tests only; the
    /// bridge starts a term with [`start`](Self::start)).
    #[cfg(test)]
    pub(crate) fn set(&self, ix: ServerIx, term: u64) {
        self.store_fence(ix, NO_FENCE, NO_FENCE);
        if let Some(l) = self.lapsed.get(ix) {
            l.store(0, Ordering::SeqCst);
        }
        if let Some(t) = self.terms.get(ix) {
            t.store(term, Ordering::SeqCst);
        }
    }
    /// `ix` is served under `term` from now on, until `fence_at` unless it is renewed.
    pub(crate) fn start(&self, ix: ServerIx, term: u64, fence_at: Stamp) {
        // The deadline first: the term is never current with the previous term's.
        self.store_fence(ix, self.nanos(fence_at.mono), wall_nanos(fence_at.wall));
        if let Some(l) = self.lapsed.get(ix) {
            l.store(0, Ordering::SeqCst);
        }
        if let Some(t) = self.terms.get(ix) {
            t.store(term, Ordering::SeqCst);
        }
    }
    /// `term` of `ix` was renewed: it must be renewed again by `fence_at`. Nothing if `ix`
    /// is no longer served under `term` (the caller holds the lock under which terms start
    /// and end), nor if its deadline passed already: the publisher may have dropped items
    /// of it since, which its session's positions would skip without a gap marker (and a
    /// publisher that found it passed just after this looked keeps it passed). Such a
    /// term ends (the control task's next look), and the lease, still this bridge's, is
    /// taken again as a new term.
    pub(crate) fn renewed(&self, ix: ServerIx, term: u64, fence_at: Stamp) {
        if self.may_publish(ix, term, Stamp::now()) {
            self.store_fence(ix, self.nanos(fence_at.mono), wall_nanos(fence_at.wall));
        }
    }
    /// Clears `ix` if it is still at `term`.
    pub(crate) fn clear(&self, ix: ServerIx, term: u64) {
        if let Some(t) = self.terms.get(ix) {
            let _ = t.compare_exchange(term, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
    /// The term `ix` is served under now (0: not served).
    pub(crate) fn current(&self, ix: ServerIx) -> u64 {
        self.terms.get(ix).map_or(0, |t| t.load(Ordering::SeqCst))
    }
    pub(crate) fn is_current(&self, ix: ServerIx, term: u64) -> bool {
        term != 0
            && self
                .terms
                .get(ix)
                .is_some_and(|t| t.load(Ordering::SeqCst) == term)
    }
    /// Whether an item of `ix` under `term` may be published at `now`: the term is
    /// current and its renewal deadline has not passed, now or at an earlier look (a
    /// current term found past its deadline is remembered as such: see `lapsed`).
    pub(crate) fn may_publish(&self, ix: ServerIx, term: u64, now: Stamp) -> bool {
        if !self.is_current(ix, term) {
            return false;
        }
        let Some(lapsed) = self.lapsed.get(ix) else {
            return false;
        };
        if lapsed.load(Ordering::SeqCst) == term {
            return false;
        }
        let ahead = self
            .fences
            .get(ix)
            .is_some_and(|f| self.nanos(now.mono) < f.load(Ordering::SeqCst))
            && self
                .wall_fences
                .get(ix)
                .is_some_and(|f| wall_nanos(now.wall) < f.load(Ordering::SeqCst));
        if !ahead {
            // Terms are lease revisions, never reused: remembering one that ended
            // meanwhile touches no later term.
            lapsed.store(term, Ordering::SeqCst);
        }
        ahead
    }
    /// Whether `ix` may be acted on at `now` (an action sent to it, a request for it
    /// answered here rather than forwarded): as for publishing, its current term's renewal
    /// deadline has not passed. Past it, another bridge may already hold the lease and
    /// send its own actions to the same server.
    pub(crate) fn may_act(&self, ix: ServerIx, now: Stamp) -> bool {
        self.may_publish(ix, self.current(ix), now)
    }
    /// The servers whose term's renewal deadline has passed at `now`, with that term.
    pub(crate) fn expired(&self, now: Stamp) -> Vec<(ServerIx, u64)> {
        (0..self.terms.len())
            .filter_map(|ix| {
                let term = self.current(ix);
                (term != 0 && !self.may_publish(ix, term, now)).then_some((ix, term))
            })
            .collect()
    }
    fn store_fence(&self, ix: ServerIx, mono: u64, wall: u64) {
        if let Some(f) = self.fences.get(ix) {
            f.store(mono, Ordering::SeqCst);
        }
        if let Some(f) = self.wall_fences.get(ix) {
            f.store(wall, Ordering::SeqCst);
        }
    }
    /// `at` in nanoseconds after `base` (an instant before it as `base`; one too far ahead
    /// for a `u64` as no deadline).
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(NO_FENCE)
    }
}

/// One encoded item, from the backlog until JetStream acknowledged it.
#[derive(Debug)]
struct Outgoing {
    ix: ServerIx,
    term: u64,
    subject: Subject,
    /// The message ID is `id_prefix` (the tenure's, shared) and `position`, written out
    /// only into the header of each publish: one allocation per publish, not two.
    id_prefix: Arc<str>,
    position: u64,
    payload: Bytes,
    /// The reply number of its latest publish (valid while it is within the window).
    seq: u64,
    /// When it was last published (the ack deadline of the window's first item).
    sent_at: Instant,
    acked: bool,
    /// Told once JetStream stored it (a `lease_released` marker: the lease is written
    /// `released` only after that).
    on_ack: Option<oneshot::Sender<()>>,
}

impl Outgoing {
    /// What it holds against the backlog's byte cap.
    fn cost(&self) -> usize {
        self.payload.len() + self.subject.len()
    }

    /// `<server token>.<session>.<position>`: the same for every publish of the item, so
    /// JetStream stores a retried one once.
    fn msg_id(&self) -> String {
        let mut id = String::with_capacity(self.id_prefix.len() + 20);
        id.push_str(&self.id_prefix);
        let _ = write!(id, "{}", self.position);
        id
    }
}

/// A bridge's tenure of one server: the `session` of the JSON and message IDs.
struct Tenure {
    /// The lease term it is served under.
    term: u64,
    session: String,
    /// `<server token>.<session>.`: a message ID is this plus the position.
    id_prefix: Arc<str>,
    position: u64,
}

/// Most distinct event names whose subject is kept per server (every known Asterisk event
/// fits; a server sending more names gets its subjects built each time, not cached).
const SUBJECT_CACHE: usize = 1024;
/// Most bytes of names and subjects kept per server.
const SUBJECT_CACHE_BYTES: usize = 128 * 1024;

/// The subjects of one server's event names, so the hot path builds each once.
#[derive(Default)]
struct SubjectCache {
    map: HashMap<String, Subject>,
    /// Bytes of the names and subjects in `map` (see [`SUBJECT_CACHE_BYTES`]).
    bytes: usize,
}

impl SubjectCache {
    /// The subject of event `name` on the server whose token is `token`.
    fn subject(&mut self, token: &str, name: &str) -> Subject {
        if let Some(s) = self.map.get(name) {
            return s.clone();
        }
        let s = Subject::from(format!(
            "ami.{token}.event.{}",
            crate::config::event_token(name)
        ));
        // The server chooses the names: a count cap alone would let a few thousand long
        // ones hold megabytes. Names over the token length are no Asterisk event's, so
        // they are never worth their room here.
        let cost = name.len() + s.len();
        if self.map.len() < SUBJECT_CACHE
            && name.len() <= crate::config::MAX_EVENT_TOKEN_LEN
            && self.bytes + cost <= SUBJECT_CACHE_BYTES
        {
            self.bytes += cost;
            self.map.insert(name.to_string(), s.clone());
        }
        s
    }
}

/// What the publisher needs; [`Publisher::run`] is the task.
pub(crate) struct Publisher {
    pub(crate) client: async_nats::Client,
    pub(crate) servers: Arc<[ServerSpec]>,
    pub(crate) bridge_id: String,
    pub(crate) terms: Arc<Terms>,
    pub(crate) metrics: Arc<Metrics>,
    /// Items held at most: encoded and not yet acknowledged, the window included.
    pub(crate) max_backlog: usize,
    /// Bytes of events held at most (see [`Outgoing::cost`]; markers are always taken).
    pub(crate) max_backlog_bytes: usize,
    /// Publishes awaiting their ack at most.
    pub(crate) window: usize,
    /// How long the first outstanding ack may take before the window is published again.
    pub(crate) ack_timeout: Duration,
    /// The stream the items go into: an ack that names another is none of its.
    pub(crate) stream: String,
    /// The action requests that may still get a late answer, by the mark their action was
    /// sent with (`None`: none is known, a publisher tested alone).
    pub(crate) late: Option<Arc<crate::late::LateAnswers>>,
}

/// Bytes kept free under the byte cap for an overflow gap marker (its subject and body
/// are well under this: names are at most 128 bytes, the session under 100).
const GAP_ROOM: usize = 1024;

/// Most items taken from the merged stream per wake.
const BATCH: usize = 1024;
/// Bytes of the buffers that reply subjects and JSON bodies are cut from: one allocation
/// serves hundreds of items instead of one or two per item; a buffer is freed once the
/// last item cut from it is acknowledged and written.
const SLAB: usize = 64 * 1024;

/// Byte strings cut one after another from a shared buffer (see [`SLAB`]).
struct Slab(BytesMut);

impl Slab {
    fn new() -> Slab {
        Slab(BytesMut::new())
    }

    /// Room for `n` more bytes: a fresh buffer when the current one is short (the old one
    /// lives on in the items cut from it).
    fn room(&mut self, n: usize) -> &mut BytesMut {
        if self.0.capacity() - self.0.len() < n {
            self.0 = BytesMut::with_capacity(SLAB.max(n));
        }
        &mut self.0
    }

    /// What was written since the last cut.
    fn cut(&mut self) -> Bytes {
        self.0.split().freeze()
    }

    /// `bytes` as one cut.
    fn copy(&mut self, bytes: &[u8]) -> Bytes {
        self.room(bytes.len()).extend_from_slice(bytes);
        self.cut()
    }

    /// The reply subject `<prefix><n>` (ASCII, so always a valid subject).
    fn reply(&mut self, prefix: &str, n: u64) -> Subject {
        let buf = self.room(prefix.len() + 20);
        buf.extend_from_slice(prefix.as_bytes());
        let _ = write!(buf, "{n}");
        Subject::try_from(self.cut()).unwrap_or_else(|_| Subject::from(format!("{prefix}{n}")))
    }
}
/// Longest pause between publish retries while NATS is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(50);

/// The encoded items waiting for JetStream, with what they hold against the byte cap and
/// the buffer their bodies are cut from: what a [`Sink`] appends to.
struct Backlog {
    items: VecDeque<Outgoing>,
    /// The sum of the items' [`Outgoing::cost`].
    bytes: usize,
    /// JSON bodies are copied here (saves the second allocation of `Bytes::from(String)`).
    bodies: Slab,
}

/// The publisher's state: the backlog (of whose items the first `sent` are published and
/// awaiting acks) and the encoder's per-server state.
struct State {
    backlog: Backlog,
    /// Per server: events dropped at the byte cap since its last gap marker.
    overflow: Vec<u64>,
    /// An event did not fit since an item last left: nothing more is taken until one
    /// does (the sessions' own bounded queues then hold, drop and count), or every event
    /// of a batch taken would be dropped here.
    full: bool,
    sent: usize,
    next_seq: u64,
    tenures: Vec<Option<Tenure>>,
    subjects: Vec<SubjectCache>,
    /// Reply subjects are cut from here.
    replies: Slab,
    backoff: Duration,
    /// No publishing before this instant (after a failure).
    paused_until: Option<Instant>,
    /// The rate-limited lines about dropped items.
    drops: DropLog,
    /// Where what is still held when the publisher ends is counted.
    metrics: Arc<Metrics>,
    /// Per server: items just dropped from the backlog, or when encoded, because their lease
    /// term ended (counted already; logged once per round by `say_lease_gone`).
    lease_gone: Vec<u64>,
    /// Per server: events of the gaps among those items (a session's final gap holds what
    /// its AMI session still had queued when it left the fleet), said with them.
    lease_gone_events: Vec<u64>,
}

/// The publisher ends (the bridge's stop aborted it, or the NATS client closed) with items
/// JetStream never acknowledged: they are lost. Counted per server in `discarded`, and
/// said in one line with their number: what a consumer will find missing at the end of
/// each session, whatever the log level of the rest.
impl Drop for State {
    fn drop(&mut self) {
        // Those dropped for an ended lease term in a round cut short by the end (counted
        // already, not logged yet) are said here too.
        let gone: u64 = self.lease_gone.iter().sum();
        let gone_events: u64 = self.lease_gone_events.iter().sum();
        let n = self.backlog.items.len() as u64 + gone;
        if n == 0 {
            return;
        }
        for o in &self.backlog.items {
            self.metrics.discarded(o.ix);
        }
        self.metrics.backlog.set(0);
        self.metrics.backlog_bytes.set(0);
        let in_gaps = if gone_events > 0 {
            format!(", and {gone_events} events of the gaps among them (counted in ami_bridge_events_dropped_total)")
        } else {
            String::new()
        };
        log::warn!(
            "{n} items (events and markers, {} bytes) never stored in JetStream: the bridge stopped before NATS took them (counted in ami_bridge_discarded_total){in_gaps}",
            self.backlog.bytes
        );
    }
}

/// Most items [`Input`] takes out of the merged stream to count when the publisher ends:
/// the sessions are closed by then (their queues bounded), so only a bug reaches it; the
/// count is then a lower bound, never an endless loop in a `Drop`.
const MAX_UNREAD_COUNTED: usize = 1 << 22;

/// The publisher's input. When the publisher ends (a stop aborts it; NATS down and its
/// backlog full, it had stopped taking items) what the merged stream still holds is lost:
/// the events each session still had queued (its final gap, once it left the fleet), its
/// markers. Counted and said per server by `Drop`, as the backlog's items are by
/// [`State`]'s.
struct Input {
    merged: Merged,
    servers: Arc<[ServerSpec]>,
    metrics: Arc<Metrics>,
}

impl Drop for Input {
    fn drop(&mut self) {
        let n = self.servers.len();
        // Per server: events (taken one by one, or in a gap), and the other items.
        let mut events = vec![0u64; n];
        let mut others = vec![0u64; n];
        for (ix, item) in self.merged.take_unread(MAX_UNREAD_COUNTED) {
            let (Some(e), Some(o)) = (events.get_mut(ix), others.get_mut(ix)) else {
                continue;
            };
            if let UpItem::Stream(StreamItem::Mark { .. }) = item {
                // A stream mark (where an action completed): never to be published.
                continue;
            }
            self.metrics.discarded(ix);
            match item {
                UpItem::Stream(StreamItem::Event(_)) => *e += 1,
                UpItem::Stream(StreamItem::Gap { dropped }) => {
                    // Never read from the session: dropped, as the gap says.
                    self.metrics.dropped(ix, dropped);
                    *e += dropped;
                    *o += 1;
                }
                _ => *o += 1,
            }
        }
        for (ix, spec) in self.servers.iter().enumerate() {
            let e = events.get(ix).copied().unwrap_or(0);
            let o = others.get(ix).copied().unwrap_or(0);
            if e + o > 0 {
                log::warn!(
                    "{}: {e} events and {o} other items (gaps, session and lease markers, late answers to actions) never stored in JetStream: the bridge stopped before its publisher took them from the AMI session (counted in ami_bridge_discarded_total, the gaps' events in ami_bridge_events_dropped_total)",
                    spec.name
                );
            }
        }
    }
}

/// The publisher's rate-limited lines about items it drops: final refusals per
/// [`Refusal`](crate::ack::Refusal), items NATS can never take per [`Unpublishable`]. What is
/// still owed when the publisher ends (its task finished, or aborted by the bridge's
/// shutdown) is logged then, by `Drop`: a count that no later line would carry is never left
/// unsaid.
#[derive(Default)]
struct DropLog {
    refusals: RefusalLog,
    unpublishable: LogThrottle<{ Unpublishable::ALL.len() }>,
    /// Answers on the ack inbox that make the window go again or are ignored, per
    /// [`AckTrouble`]: a full stream refuses every retry round as long as it stays full.
    acks: LogThrottle<{ AckTrouble::ALL.len() }>,
}

/// Answers on the ack inbox that are logged rate-limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckTrouble {
    /// JetStream did not store a publish for now (it is published again).
    Failed,
    /// Not an answer of the bridge's stream (ignored; see [`Ack::Foreign`]).
    Foreign,
}

impl AckTrouble {
    /// Every kind, in the order of [`AckTrouble::index`].
    const ALL: [AckTrouble; 2] = [AckTrouble::Failed, AckTrouble::Foreign];

    /// Its place in [`AckTrouble::ALL`] (its log throttle's kind).
    fn index(self) -> usize {
        self as usize
    }

    /// The summary of `n` not logged since the last such line.
    fn summary(self, n: u64) -> String {
        match self {
            AckTrouble::Failed => format!(
                "JetStream refused a publish {n} more times since the last such line (published again; retries counted in publish_retries)"
            ),
            AckTrouble::Foreign => format!(
                "{n} more replies on the publish ack inbox that are no ack of the bridge's stream since the last such line (ignored)"
            ),
        }
    }
}

impl DropLog {
    /// When the next summary is due.
    fn next_due(&self) -> Option<Instant> {
        [
            self.refusals.next_due(),
            self.unpublishable.next_due(),
            self.acks.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The summaries whose interval since their kind's last line has passed at `now`: a
    /// flood that stopped is summed up, not left unsaid.
    fn due(&mut self, now: Instant) -> Vec<String> {
        Self::summaries(
            self.refusals.overdue(now),
            self.unpublishable.overdue(now),
            self.acks.overdue(now),
        )
    }

    /// Every summary still owed, due or not.
    fn pending(&mut self) -> Vec<String> {
        Self::summaries(
            self.refusals.take_all(),
            self.unpublishable.take_all(),
            self.acks.take_all(),
        )
    }

    fn summaries(
        refusals: Vec<(usize, u64)>,
        unpublishable: Vec<(usize, u64)>,
        acks: Vec<(usize, u64)>,
    ) -> Vec<String> {
        let refused = refusals.into_iter().map(|(i, n)| {
            let reason = crate::ack::Refusal::ALL.get(i).map_or("?", |r| r.label());
            format!(
                "{n} more items JetStream refuses for good ({reason}) since the last such line, dropped (counted in publish_refused, not logged)"
            )
        });
        let never = unpublishable.into_iter().map(|(i, n)| {
            let why = Unpublishable::ALL.get(i).map_or("?", |u| u.words());
            format!(
                "{n} more items that can never be published ({why}) since the last such line, dropped (counted in discarded, not logged)"
            )
        });
        let acks = acks.into_iter().map(|(i, n)| {
            AckTrouble::ALL
                .get(i)
                .map_or_else(|| format!("{n} more ack troubles"), |k| k.summary(n))
        });
        refused.chain(never).chain(acks).collect()
    }
}

impl Drop for DropLog {
    fn drop(&mut self) {
        for line in self.pending() {
            log::warn!("{line}");
        }
    }
}

/// Why NATS can never take an item (the client refuses it before it is sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unpublishable {
    /// Over the server's max payload.
    TooLarge,
    /// A subject NATS does not accept.
    InvalidSubject,
}

impl Unpublishable {
    /// Every kind, in the order of [`Unpublishable::index`].
    const ALL: [Unpublishable; 2] = [Unpublishable::TooLarge, Unpublishable::InvalidSubject];

    /// Its place in [`Unpublishable::ALL`] (its log throttle's kind).
    fn index(self) -> usize {
        self as usize
    }

    /// The kind of a publish error, if it is one that no retry can mend.
    fn of(kind: async_nats::client::PublishErrorKind) -> Option<Unpublishable> {
        match kind {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                Some(Unpublishable::TooLarge)
            }
            async_nats::client::PublishErrorKind::InvalidSubject => {
                Some(Unpublishable::InvalidSubject)
            }
            _ => None,
        }
    }

    /// Words for log lines.
    fn words(self) -> &'static str {
        match self {
            Unpublishable::TooLarge => "over NATS's max payload",
            Unpublishable::InvalidSubject => "a subject NATS does not accept",
        }
    }
}

impl State {
    /// Takes item `i` out of the backlog, and its bytes off the count.
    fn remove(&mut self, i: usize) -> Option<Outgoing> {
        let o = self.backlog.items.remove(i)?;
        self.backlog.bytes = self.backlog.bytes.saturating_sub(o.cost());
        self.full = false;
        Some(o)
    }
}

impl Publisher {
    /// Runs until the merged stream ends and everything taken from it is acknowledged (or
    /// until aborted).
    pub(crate) async fn run(self, merged: Merged) {
        // First: what the merged stream holds is counted however soon the task ends.
        let mut input = Input {
            merged,
            servers: self.servers.clone(),
            metrics: self.metrics.clone(),
        };
        let inbox = self.client.new_inbox();
        let mut acks = loop {
            match self.client.subscribe(format!("{inbox}.*")).await {
                Ok(sub) => break sub,
                Err(e) => {
                    log::warn!("NATS: cannot subscribe to publish acks: {e}");
                    tokio::time::sleep(MAX_BACKOFF).await;
                }
            }
        };
        let reply_prefix = format!("{inbox}.");
        let n = self.servers.len();
        let mut st = State {
            backlog: Backlog {
                items: VecDeque::with_capacity(self.max_backlog.min(BATCH * 4)),
                bytes: 0,
                bodies: Slab::new(),
            },
            overflow: vec![0; n],
            full: false,
            sent: 0,
            next_seq: 0,
            tenures: (0..n).map(|_| None).collect(),
            subjects: (0..n).map(|_| SubjectCache::default()).collect(),
            replies: Slab::new(),
            backoff: MIN_BACKOFF,
            paused_until: None,
            drops: DropLog::default(),
            metrics: self.metrics.clone(),
            lease_gone: vec![0; n],
            lease_gone_events: vec![0; n],
        };
        let mut batch = Vec::with_capacity(BATCH);
        let mut closed = false;
        loop {
            self.send(&mut st, &reply_prefix).await;
            self.metrics
                .backlog
                .set(i64::try_from(st.backlog.items.len()).unwrap_or(i64::MAX));
            self.metrics
                .backlog_bytes
                .set(i64::try_from(st.backlog.bytes).unwrap_or(i64::MAX));
            if closed && st.backlog.items.is_empty() {
                return;
            }
            let room = if st.full || st.backlog.bytes >= self.max_backlog_bytes {
                0
            } else {
                self.max_backlog
                    .saturating_sub(st.backlog.items.len())
                    .min(BATCH)
            };
            // The next instant something must happen without an ack or an item arriving.
            let deadline = st.paused_until.or_else(|| self.ack_due(&st));
            // A summary of the drops not logged since their last line is due too.
            let deadline = [deadline, st.drops.next_due()].into_iter().flatten().min();
            tokio::select! {
                biased;
                ack = acks.next() => match ack {
                    Some(m) => {
                        self.on_ack(&mut st, &reply_prefix, &m);
                        // Take the acks already here without going through the scheduler.
                        while let Some(Some(m)) = futures_util::FutureExt::now_or_never(acks.next()) {
                            self.on_ack(&mut st, &reply_prefix, &m);
                        }
                    }
                    None => {
                        // The client closed (the bridge is stopping).
                        return;
                    }
                },
                got = input.merged.recv_many(&mut batch, room), if room > 0 && !closed => {
                    if got == 0 {
                        closed = true;
                    }
                    for (ix, term, item) in batch.drain(..) {
                        self.encode(&mut st, ix, term, item);
                    }
                    self.overflow_gaps(&mut st);
                    self.say_lease_gone(&mut st);
                }
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    for line in st.drops.due(now) {
                        log::warn!("{line}");
                    }
                    // The wake may be a summary's only: the pause or the ack wait must
                    // really be over before anything is resumed or published again.
                    match st.paused_until {
                        Some(at) => {
                            if at <= now {
                                st.paused_until = None;
                            }
                        }
                        None => {
                            if self.ack_due(&st).is_some_and(|at| at <= now) {
                                log::warn!("NATS: publish not acknowledged within {:?}; publishing again from the first unacknowledged item", self.ack_timeout);
                                self.fail(&mut st);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Publishes from the backlog while the window has room (and no failure pause is on).
    async fn send(&self, st: &mut State, reply_prefix: &str) {
        if st.paused_until.is_some() {
            return;
        }
        // One clock read per round: the ack deadline needs no finer grain than that.
        let now = Instant::now();
        while st.sent < st.backlog.items.len() && st.sent < self.window {
            let Some(o) = st.backlog.items.get_mut(st.sent) else {
                break;
            };
            // The clock read again for each: a publish may wait long for room in the NATS
            // client's queue (NATS slow), and the next must not go out on an instant read
            // before that wait, with its term's renewal deadline passed meanwhile.
            if !self.terms.may_publish(o.ix, o.term, Stamp::now()) {
                self.metrics.discarded(o.ix);
                if let Some(n) = st.lease_gone.get_mut(o.ix) {
                    *n += 1;
                }
                st.remove(st.sent);
                continue;
            }
            o.seq = st.next_seq;
            o.sent_at = now;
            o.acked = false;
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", HeaderValue::from(o.msg_id()));
            let reply = st.replies.reply(reply_prefix, st.next_seq);
            let r = self
                .client
                .publish_with_reply_and_headers(
                    o.subject.clone(),
                    reply,
                    headers,
                    o.payload.clone(),
                )
                .await;
            match r {
                Ok(()) => {
                    st.next_seq += 1;
                    st.sent += 1;
                }
                Err(e) => {
                    if let Some(why) = Unpublishable::of(e.kind()) {
                        // It can never be sent: counted, and logged rate-limited (one per
                        // item would let a flood of them flood the log), instead of being
                        // retried for ever in front of everything behind it.
                        self.metrics.discarded(o.ix);
                        if let Some(quiet) = st.drops.unpublishable.note(why.index(), now) {
                            log::warn!(
                                "{}: item {} can never be published ({}), dropped: {e}{}",
                                self.server_name(o.ix),
                                o.msg_id(),
                                why.words(),
                                crate::throttle::unlogged(quiet, "discarded")
                            );
                        }
                        st.remove(st.sent);
                        continue;
                    }
                    log::warn!("NATS publish failed: {e}");
                    self.fail(st);
                    self.say_lease_gone(st);
                    return;
                }
            }
        }
        self.say_lease_gone(st);
    }

    /// Logs the items just dropped because their lease term ended before NATS took them
    /// (released at a stop, given up, or lost), one line per server: they come by the
    /// thousand when a stop or a lost lease finds a backlog, all at once.
    fn say_lease_gone(&self, st: &mut State) {
        for (ix, n) in st.lease_gone.iter_mut().enumerate() {
            if *n > 0 {
                let events = st.lease_gone_events.get_mut(ix).map_or(0, std::mem::take);
                let in_gaps = if events > 0 {
                    format!("; {events} events of the gaps among them, which its AMI session held when it stopped serving it (counted in ami_bridge_events_dropped_total)")
                } else {
                    String::new()
                };
                log::warn!(
                    "{}: {n} items never stored in JetStream: this bridge stopped serving it (lease released or lost, or its renewal deadline passed) before NATS took them (counted in ami_bridge_discarded_total){in_gaps}",
                    self.server_name(ix)
                );
                *n = 0;
            }
        }
    }

    /// Counts `item` of server `ix`, dropped because its lease term ended, for
    /// [`say_lease_gone`](Self::say_lease_gone): a gap stands for its events, never
    /// published nor counted otherwise.
    fn lease_gone(&self, st: &mut State, ix: ServerIx, item: &UpItem) {
        self.metrics.discarded(ix);
        if let Some(n) = st.lease_gone.get_mut(ix) {
            *n += 1;
        }
        if let UpItem::Stream(StreamItem::Gap { dropped }) = item {
            self.metrics.dropped(ix, *dropped);
            if let Some(n) = st.lease_gone_events.get_mut(ix) {
                *n += dropped;
            }
        }
    }

    /// When the oldest unacknowledged publish is due its ack (`None`: none is in flight).
    fn ack_due(&self, st: &State) -> Option<Instant> {
        st.backlog
            .items
            .front()
            .filter(|_| st.sent > 0)
            .map(|o| o.sent_at + self.ack_timeout)
    }

    fn server_name(&self, ix: ServerIx) -> &str {
        self.servers.get(ix).map_or("?", |s| s.name.as_str())
    }

    /// Everything not acknowledged goes again, in order, with the same message IDs, after a
    /// pause that doubles while failures go on.
    fn fail(&self, st: &mut State) {
        self.metrics.publish_retries.inc();
        st.sent = 0;
        st.paused_until = Some(Instant::now() + st.backoff);
        st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
    }

    fn on_ack(&self, st: &mut State, reply_prefix: &str, m: &async_nats::Message) {
        let Some(seq) = m
            .subject
            .as_str()
            .strip_prefix(reply_prefix)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return;
        };
        // Within the window the numbers are consecutive from the first item's.
        let Some(first) = st
            .backlog
            .items
            .front()
            .filter(|_| st.sent > 0)
            .map(|o| o.seq)
        else {
            return;
        };
        let Some(i) = seq.checked_sub(first).and_then(|i| usize::try_from(i).ok()) else {
            return; // an ack of a publish made before the last failure: sent again since
        };
        if i >= st.sent {
            return;
        }
        let ack = parse_ack(m.status, &m.payload, &self.stream);
        match ack {
            Ack::Stored { .. } | Ack::Refused { .. } => {
                let Some(o) = st.backlog.items.get_mut(i) else {
                    return;
                };
                if o.seq != seq || o.acked {
                    return;
                }
                o.acked = true;
                match ack {
                    Ack::Stored { duplicate } => self.metrics.published(o.ix, duplicate),
                    Ack::Refused { reason, err_code } => {
                        // Sending it again would be refused again, in front of everything
                        // behind it: it is dropped, counted and logged, and the window
                        // moves on.
                        self.metrics.discarded(o.ix);
                        self.metrics.refused(o.ix, reason);
                        if let Some(quiet) = st.drops.refusals.note(reason.index(), Instant::now())
                        {
                            log::warn!(
                                "{}: JetStream refuses item {} for good ({}, err_code {err_code}), dropped: {}{}",
                                self.server_name(o.ix),
                                o.msg_id(),
                                reason.label(),
                                Remote(&m.payload),
                                crate::throttle::unlogged(quiet, "publish_refused")
                            );
                        }
                    }
                    Ack::Failed(_) | Ack::Foreign => {}
                }
                while st.backlog.items.front().is_some_and(|o| o.acked) {
                    if let Some(done) = st.remove(0).and_then(|o| o.on_ack) {
                        let _ = done.send(());
                    }
                    st.sent -= 1;
                }
                st.backoff = MIN_BACKOFF;
            }
            Ack::Failed(why) => {
                // Once per retry round for as long as the stream refuses (a full one: for
                // hours): rate-limited like the other repeated conditions.
                let kind = AckTrouble::Failed.index();
                if let Some(quiet) = st.drops.acks.note(kind, Instant::now()) {
                    let more = crate::throttle::more_since(quiet);
                    log::warn!("JetStream refused a publish: {why}{more}");
                }
                if st.paused_until.is_none() {
                    self.fail(st);
                }
            }
            Ack::Foreign => {
                // Someone who reads the event subjects answered one (by mistake, or to
                // make the bridge take an item as stored that JetStream never stored).
                let kind = AckTrouble::Foreign.index();
                if let Some(quiet) = st.drops.acks.note(kind, Instant::now()) {
                    let more = crate::throttle::more_since(quiet);
                    log::warn!(
                        "a reply on the publish ack inbox is no ack of stream {} (someone answers the event subjects?), ignored: {}{more}",
                        self.stream,
                        Remote(&m.payload)
                    );
                }
            }
        }
    }

    /// Publishes the gap of every server's events dropped at the byte cap now: the next
    /// item of that server, which would carry it otherwise, may be long in coming.
    fn overflow_gaps(&self, st: &mut State) {
        for (ix, spec) in self.servers.iter().enumerate() {
            let (Some(Some(tenure)), Some(overflow)) = (
                st.tenures.get_mut(ix).map(Option::as_mut),
                st.overflow.get_mut(ix),
            ) else {
                continue;
            };
            if *overflow == 0 {
                continue;
            }
            let term = tenure.term;
            let mut sink = Sink::new(&mut st.backlog, tenure, spec, ix, term);
            let subject = Subject::from(format!("ami.{}.gap", spec.token));
            overflow_gap(&self.metrics, &mut sink, overflow, subject);
        }
    }

    /// Counts a late answer of server `ix` (`spec`) sent with `mark`: the idempotency key
    /// of its request, when that is known and had one. When the key holds (or is about to
    /// hold) the request's `timed_out` reply, the answer is stored there in its place (a
    /// task of its own: nothing here waits on NATS; see the `late` module).
    fn late_answer(
        &self,
        ix: ServerIx,
        spec: &ServerSpec,
        mark: Option<u64>,
        response: &ami_proto::Message,
    ) -> Option<String> {
        let taken = self.late.as_ref().and_then(|late| {
            late.take(mark, Instant::now(), || {
                bytes::Bytes::from(crate::actions::late_reply(&spec.name, response))
            })
        });
        self.metrics.late_answer(ix, taken.is_some());
        taken.and_then(|t| t.key)
    }

    /// Encodes one merged item into the backlog (a lost session gives a marker and a gap).
    fn encode(&self, st: &mut State, ix: ServerIx, term: u64, item: UpItem) {
        let Some(spec) = self.servers.get(ix) else {
            return;
        };
        if let UpItem::Stream(StreamItem::Mark { .. }) = item {
            // The bridge's actions carry answer marks, which put nothing in the stream (see
            // the `late` module); a stream mark, should one come, says where an action
            // completed: nothing to publish, and nothing lost when its term has ended.
            return;
        }
        if !self.terms.is_current(ix, term) {
            // Logged with those dropped from the backlog for an ended term.
            self.lease_gone(st, ix, &item);
            return;
        }
        let (Some(tenure_slot), Some(subjects)) = (st.tenures.get_mut(ix), st.subjects.get_mut(ix))
        else {
            return;
        };
        if let UpItem::LeaseAcquired { .. } = item {
            let session = format!("{}-{term}", self.bridge_id);
            *tenure_slot = Some(Tenure {
                term,
                id_prefix: format!("{}.{session}.", spec.token).into(),
                session,
                position: 0,
            });
        }
        let Some(tenure) = tenure_slot.as_mut() else {
            // Nothing of a server is published outside a tenure (after its lease_released).
            self.lease_gone(st, ix, &item);
            return;
        };
        let Some(overflow) = st.overflow.get_mut(ix) else {
            return;
        };
        if let UpItem::LeaseAcquired { .. } = item {
            if *overflow > 0 {
                // Counted when dropped; the session they belonged to is over, and the
                // takeover or the lease markers tell consumers where it ended.
                log::warn!(
                    "{}: {} events dropped at the backlog's byte cap in a session that ended before their gap was published",
                    spec.name,
                    *overflow
                );
                *overflow = 0;
            }
        }
        let token = &spec.token;
        let mut sink = Sink::new(&mut st.backlog, tenure, spec, ix, term);
        let gap_subject = || Subject::from(format!("ami.{token}.gap"));
        // An event (or a late answer, as large as any response) is measured before it takes
        // a position: one that does not fit is dropped (counted, and published as a gap
        // before the next item of its server), never held past the cap. Markers always
        // fit: they are small and few.
        let event = match &item {
            UpItem::Stream(StreamItem::Event(_) | StreamItem::LateAnswer { .. }) => {
                let mut place = sink.next_place();
                if *overflow > 0 {
                    place.position += 1;
                }
                let (subject, body) = match &item {
                    UpItem::Stream(StreamItem::LateAnswer { id, mark, response }) => {
                        // Published whether or not its request is still known: what the
                        // server did is news to whoever was told `timed_out`.
                        let key = self.late_answer(ix, spec, *mark, response);
                        let subject = Subject::from(format!("ami.{token}.event.late_answer"));
                        let body =
                            ami_json::late_answer(&place, id.as_str(), key.as_deref(), response);
                        (subject, body)
                    }
                    UpItem::Stream(StreamItem::Event(msg)) => {
                        self.metrics.event(ix);
                        let name = msg.event().unwrap_or("_");
                        let subject = subjects.subject(token, name);
                        (subject, ami_json::message_at(&place, msg))
                    }
                    _ => return,
                };
                // Room is kept for the gap that a drop brings, so it fits too.
                if sink.backlog.bytes + body.len() + subject.len() + GAP_ROOM
                    > self.max_backlog_bytes
                {
                    if *overflow == 0 {
                        log::warn!(
                            "{}: backlog at its byte cap ({} bytes): dropping events until NATS takes some (counted; an overflow gap follows)",
                            spec.name,
                            self.max_backlog_bytes
                        );
                    }
                    *overflow += 1;
                    self.metrics.dropped(ix, 1);
                    // With nothing held, an ack would never come to clear it: an event
                    // that does not fit an empty backlog is only dropped.
                    st.full = sink.backlog.bytes > 0;
                    return;
                }
                Some((subject, body))
            }
            _ => None,
        };
        overflow_gap(&self.metrics, &mut sink, overflow, gap_subject());
        let bridge = self.bridge_id.as_str();
        let session_subject = || Subject::from(format!("ami.{token}.session"));
        match item {
            UpItem::Stream(StreamItem::Event(_) | StreamItem::LateAnswer { .. }) => {
                if let Some((subject, body)) = event {
                    sink.push(subject, &body);
                }
            }
            UpItem::Stream(StreamItem::Gap { dropped }) => {
                self.metrics.gap(ix, "overflow", dropped);
                sink.add(gap_subject(), &|p| {
                    ami_json::gap(Some(&p), GapReason::Overflow, Some(dropped))
                });
            }
            UpItem::Stream(StreamItem::Ready { ami_version }) => {
                sink.add(session_subject(), &|p| {
                    ami_json::session(
                        Some(&p),
                        SessionState::Ready,
                        &[("bridge", bridge), ("ami_version", &ami_version)],
                    )
                });
            }
            UpItem::Stream(StreamItem::Disconnected { reason }) => {
                let reason = reason.to_string();
                sink.add(session_subject(), &|p| {
                    ami_json::session(
                        Some(&p),
                        SessionState::Lost,
                        &[("bridge", bridge), ("reason", &reason)],
                    )
                });
                self.metrics.gap(ix, "disconnected", 0);
                sink.add(gap_subject(), &|p| {
                    ami_json::gap(Some(&p), GapReason::Disconnected, None)
                });
            }
            UpItem::Stream(StreamItem::Discarded { reason, count }) => {
                // The client logs each burst; here it is counted, and what may have been
                // events is marked in the stream where it was, as the other gaps are.
                self.metrics.input_discarded(ix, &reason, count);
                if reason.may_be_events() {
                    self.metrics.gap(ix, "discarded", 0);
                    sink.add(gap_subject(), &|p| {
                        ami_json::gap(Some(&p), GapReason::Discarded, Some(count))
                    });
                }
            }
            // Marks are taken out above; what else the core may add is not for consumers.
            UpItem::Stream(_) => {}
            UpItem::LeaseReleased { done, reason } => {
                sink.add(session_subject(), &|p| {
                    ami_json::session(
                        Some(&p),
                        SessionState::LeaseReleased,
                        &[("bridge", bridge), ("reason", reason)],
                    )
                });
                if let Some(last) = sink.backlog.items.back_mut() {
                    last.on_ack = done;
                }
                // The tenure is over: its marker was its last item.
                *tenure_slot = None;
            }
            UpItem::LeaseAcquired { previous } => {
                let mut extra = vec![("bridge", bridge)];
                if let Some(prev) = &previous {
                    extra.push(("previous_bridge", prev.as_str()));
                }
                sink.add(session_subject(), &|p| {
                    ami_json::session(Some(&p), SessionState::LeaseAcquired, &extra)
                });
                if previous.is_some() {
                    self.metrics.gap(ix, "takeover", 0);
                    sink.add(gap_subject(), &|p| {
                        ami_json::gap(Some(&p), GapReason::Takeover, None)
                    });
                }
            }
        }
    }
}

/// Publishes the gap of the events dropped at the byte cap (`overflow` of them, then 0)
/// as `sink`'s next item, if any were.
fn overflow_gap(metrics: &Metrics, sink: &mut Sink<'_>, overflow: &mut u64, subject: Subject) {
    if *overflow == 0 {
        return;
    }
    let n = std::mem::take(overflow);
    log::warn!(
        "{}: {n} events dropped at the backlog's byte cap; published as an overflow gap",
        sink.server
    );
    metrics.gap(sink.ix, "overflow", 0);
    sink.add(subject, &|p| {
        ami_json::gap(Some(&p), GapReason::Overflow, Some(n))
    });
}

/// Where `encode` puts one server's items: each takes the next position of its tenure.
struct Sink<'a> {
    backlog: &'a mut Backlog,
    tenure: &'a mut Tenure,
    server: &'a str,
    ix: ServerIx,
    term: u64,
}

impl<'a> Sink<'a> {
    /// The sink of server `ix` (`spec`) in its tenure `tenure`, for items of lease `term`.
    fn new(
        backlog: &'a mut Backlog,
        tenure: &'a mut Tenure,
        spec: &'a ServerSpec,
        ix: ServerIx,
        term: u64,
    ) -> Sink<'a> {
        Sink {
            backlog,
            tenure,
            server: &spec.name,
            ix,
            term,
        }
    }

    /// The place the next item takes.
    fn next_place(&self) -> Place<'_> {
        Place {
            server: self.server,
            session: &self.tenure.session,
            position: self.tenure.position + 1,
        }
    }

    /// Adds an item whose body was written for [`next_place`](Self::next_place).
    fn push(&mut self, subject: Subject, body: &str) {
        self.tenure.position += 1;
        let payload = self.backlog.bodies.copy(body.as_bytes());
        self.backlog.bytes += payload.len() + subject.len();
        self.backlog.items.push_back(Outgoing {
            ix: self.ix,
            term: self.term,
            subject,
            id_prefix: self.tenure.id_prefix.clone(),
            position: self.tenure.position,
            payload,
            seq: 0,
            sent_at: Instant::now(),
            acked: false,
            on_ack: None,
        });
    }

    /// Adds an item with the body `body` writes for its place.
    fn add(&mut self, subject: Subject, body: &dyn Fn(Place<'_>) -> String) {
        let text = body(self.next_place());
        self.push(subject, &text);
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_only_counted_are_summed_up_when_due_or_else_when_the_log_ends() {
        let mut log = DropLog::default();
        let t0 = Instant::now();
        let too_large = Unpublishable::TooLarge.index();
        assert!(
            log.unpublishable.note(too_large, t0).is_some(),
            "the first at once"
        );
        for ms in 1..=4 {
            let at = t0 + Duration::from_millis(ms);
            assert_eq!(log.unpublishable.note(too_large, at), None);
        }
        assert!(
            log.due(t0 + Duration::from_secs(1)).is_empty(),
            "not due yet"
        );
        assert_eq!(
            log.pending(),
            ["4 more items that can never be published (over NATS's max payload) since the last such line, dropped (counted in discarded, not logged)"]
        );
        assert!(log.pending().is_empty(), "said once");
    }

    #[test]
    fn unpublishable_kinds_are_told_apart_and_each_has_its_own_place() {
        use async_nats::client::PublishErrorKind;
        assert_eq!(
            Unpublishable::of(PublishErrorKind::MaxPayloadExceeded),
            Some(Unpublishable::TooLarge)
        );
        assert_eq!(
            Unpublishable::of(PublishErrorKind::InvalidSubject),
            Some(Unpublishable::InvalidSubject)
        );
        assert_eq!(Unpublishable::of(PublishErrorKind::Send), None);
        for (i, u) in Unpublishable::ALL.iter().enumerate() {
            assert_eq!(u.index(), i);
        }
    }

    #[test]
    fn over_long_event_names_get_bounded_subjects_that_still_tell_them_apart() {
        let mut cache = SubjectCache::default();
        let a = format!("{}a", "x".repeat(5000));
        let b = format!("{}b", "x".repeat(5000));
        let (sa, sb) = (cache.subject("pbx1", &a), cache.subject("pbx1", &b));
        assert_ne!(sa, sb);
        for s in [&sa, &sb] {
            let token = s.as_str().strip_prefix("ami.pbx1.event.").unwrap_or("");
            assert!(
                !token.is_empty() && token.len() <= crate::config::MAX_EVENT_TOKEN_LEN,
                "a token of {} bytes",
                token.len()
            );
        }
        assert_eq!(cache.subject("pbx1", "").as_str(), "ami.pbx1.event._");
    }

    #[test]
    fn a_server_sending_many_distinct_long_event_names_cannot_grow_the_subject_cache_past_its_byte_cap(
    ) {
        let mut cache = SubjectCache::default();
        for i in 0..SUBJECT_CACHE * 2 {
            let name = format!("{i}-{}", "x".repeat(4000));
            let _ = cache.subject("pbx1", &name);
        }
        // Measured from the entries themselves, not from the cache's own count.
        let held: usize = cache.map.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(
            held <= SUBJECT_CACHE_BYTES,
            "{held} bytes held, cap {SUBJECT_CACHE_BYTES}"
        );
    }
    /// Lines of the log that name `needle`: a logger of its own for this test binary (the
    /// other tests' lines are kept too, and told apart by the server's name).
    fn logged(needle: &str) -> Vec<String> {
        struct Keep(std::sync::Mutex<Vec<String>>);
        impl log::Log for Keep {
            fn enabled(&self, _: &log::Metadata<'_>) -> bool {
                true
            }
            fn log(&self, record: &log::Record<'_>) {
                let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
                lines.push(record.args().to_string());
            }
            fn flush(&self) {}
        }
        static KEEP: Keep = Keep(std::sync::Mutex::new(Vec::new()));
        if log::set_logger(&KEEP).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
        let lines = KEEP.0.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// A publisher of one server named `name` to a NATS that never answers (nothing is
    /// published, nothing needs to be), fed through the returned markers channel: its task,
    /// that channel, its metrics, the fleet (to close) and that NATS's listener (kept open
    /// while the test runs).
    async fn quiet_publisher(
        name: &str,
    ) -> (
        tokio::task::JoinHandle<()>,
        tokio::sync::mpsc::Sender<crate::upstream::Tagged>,
        Arc<Metrics>,
        crate::upstream::Upstream,
        tokio::net::TcpListener,
    ) {
        let login = ami_proto::ClientConfig::builder("admin", "amp111")
            .build()
            .unwrap();
        let spec = ServerSpec::new(name, "127.0.0.1", 5038, login).unwrap();
        let servers: Arc<[ServerSpec]> = vec![spec].into();
        let terms = Arc::new(Terms::new(1));
        let (markers_tx, markers) = tokio::sync::mpsc::channel(16);
        let (upstream, merged) = crate::upstream::Upstream::start(
            servers.clone(),
            ami_tokio::fleet::Policy::RoundRobin,
            markers,
            terms.clone(),
        );
        let quiet = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(format!("nats://{}", quiet.local_addr().unwrap()))
            .await
            .unwrap();
        let metrics = Arc::new(Metrics::new(&servers, "b1", 1000, 1 << 20));
        let publisher = Publisher {
            client,
            servers,
            bridge_id: "b1".to_string(),
            terms,
            metrics: metrics.clone(),
            max_backlog: 1000,
            max_backlog_bytes: 1 << 20,
            window: 16,
            ack_timeout: Duration::from_secs(2),
            stream: "AMI".to_string(),
            late: None,
        };
        let task = tokio::spawn(publisher.run(merged));
        (task, markers_tx, metrics, upstream, quiet)
    }

    /// Waits up to 5 s for a line naming `needle`; whether one came.
    async fn said(needle: &str) -> bool {
        let said = async {
            while logged(needle).is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), said)
            .await
            .is_ok()
    }

    /// An item of a lease term that ended while it was on its way through the merged
    /// stream (what the stream had taken of a server when its lease was lost) is dropped
    /// when it is encoded: counted, and logged as those dropped from the backlog are. It
    /// was only counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_item_of_an_ended_term_dropped_at_encoding_is_counted_and_logged() {
        use ami_proto::{Decoder, DecoderLimits, Frame};
        let _ = logged("");
        let (task, markers_tx, metrics, upstream, _quiet) = quiet_publisher("pbx-ended-term").await;
        let mut decoder = Decoder::without_banner(DecoderLimits::default());
        decoder.feed(b"Event: Hangup\r\nUniqueid: 1\r\n\r\n");
        let Some(Ok(Frame::Message(event))) = decoder.decode() else {
            panic!("an event");
        };
        // Term 0: the server is not served (its lease was lost after the item was taken).
        markers_tx
            .send((0, 0, UpItem::Stream(StreamItem::Event(event))))
            .await
            .unwrap();
        let said = said("pbx-ended-term").await;
        let counted = metrics.discarded_total(0);
        task.abort();
        upstream.close_all();
        assert_eq!(counted, 1, "the dropped item is counted");
        assert!(said, "the dropped item was not logged");
    }

    /// The final gap of a session whose lease term ended (the events its AMI session still
    /// held when its server left the fleet, at a stop or a lost lease, with the publisher
    /// behind) stands for its events: dropped at encoding, they are counted in
    /// `ami_bridge_events_dropped_total` and said with their number. It was counted as one
    /// discarded item, its events neither counted nor said.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gap_of_an_ended_term_dropped_at_encoding_counts_and_says_its_events() {
        let _ = logged("");
        let (task, markers_tx, metrics, upstream, _quiet) = quiet_publisher("pbx-ended-gap").await;
        markers_tx
            .send((0, 0, UpItem::Stream(StreamItem::Gap { dropped: 480 })))
            .await
            .unwrap();
        let said = said("pbx-ended-gap").await;
        let dropped = metrics.dropped_total(0);
        task.abort();
        upstream.close_all();
        let lines = logged("pbx-ended-gap");
        assert!(said, "the dropped gap was not logged");
        assert_eq!(dropped, 480, "the gap's events are counted dropped");
        assert!(
            lines.iter().any(|l| l.contains("480 events")),
            "the gap's events are said: {lines:?}"
        );
    }

    /// A NATS server just enough for a client to connect and publish to: it sends its INFO,
    /// answers each PING, acknowledges nothing, and keeps the subject of every publish it
    /// is sent, with when it came.
    struct RecordingNats {
        url: String,
        publishes: Arc<std::sync::Mutex<Vec<(String, Instant)>>>,
    }

    impl RecordingNats {
        async fn start() -> RecordingNats {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("nats://{}", listener.local_addr().unwrap());
            let publishes = Arc::new(std::sync::Mutex::new(Vec::new()));
            let kept = publishes.clone();
            tokio::spawn(async move {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let info = r#"INFO {"server_id":"rec","server_name":"rec","version":"2.10.0","proto":1,"headers":true,"max_payload":1048576,"host":"127.0.0.1","port":4222}"#;
                if socket
                    .write_all(format!("{info}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let mut pongs = 0;
                    while let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                        let line = String::from_utf8_lossy(&buf[..end]).to_string();
                        let words: Vec<&str> = line.split_whitespace().collect();
                        let mut used = end + 2;
                        match words.first().copied() {
                            Some("HPUB") | Some("PUB") => {
                                let len: usize = words.last().unwrap().parse().unwrap();
                                if buf.len() < used + len + 2 {
                                    break;
                                }
                                used += len + 2;
                                let mut kept = kept.lock().unwrap();
                                kept.push((words[1].to_string(), Instant::now()));
                            }
                            Some("PING") => pongs += 1,
                            _ => {}
                        }
                        buf.drain(..used);
                    }
                    for _ in 0..pongs {
                        if socket.write_all(b"PONG\r\n").await.is_err() {
                            return;
                        }
                    }
                }
            });
            RecordingNats { url, publishes }
        }

        /// When each publish on `subject` came.
        fn on(&self, subject: &str) -> Vec<Instant> {
            let kept = self.publishes.lock().unwrap();
            kept.iter()
                .filter(|(s, _)| s == subject)
                .map(|(_, at)| *at)
                .collect()
        }
    }

    /// A publisher of one server (`name`) to a [`RecordingNats`], fed through the returned
    /// sender, with `window` publishes in flight at most, each awaiting its ack for
    /// `ack_timeout`.
    struct FenceRig {
        nats: RecordingNats,
        terms: Arc<Terms>,
        metrics: Arc<Metrics>,
        items: tokio::sync::mpsc::Sender<crate::upstream::Tagged>,
        upstream: crate::upstream::Upstream,
        task: tokio::task::JoinHandle<()>,
    }

    impl FenceRig {
        async fn start(name: &str, window: usize, ack_timeout: Duration) -> FenceRig {
            let login = ami_proto::ClientConfig::builder("admin", "amp111")
                .build()
                .unwrap();
            let spec = ServerSpec::new(name, "127.0.0.1", 5038, login).unwrap();
            let servers: Arc<[ServerSpec]> = vec![spec].into();
            let terms = Arc::new(Terms::new(1));
            let (items, markers) = tokio::sync::mpsc::channel(16);
            let (upstream, merged) = crate::upstream::Upstream::start(
                servers.clone(),
                ami_tokio::fleet::Policy::RoundRobin,
                markers,
                terms.clone(),
            );
            let nats = RecordingNats::start().await;
            let client = async_nats::connect(&nats.url).await.unwrap();
            let metrics = Arc::new(Metrics::new(&servers, "b1", 1000, 1 << 20));
            let publisher = Publisher {
                client,
                servers,
                bridge_id: "b1".to_string(),
                terms: terms.clone(),
                metrics: metrics.clone(),
                max_backlog: 1000,
                max_backlog_bytes: 1 << 20,
                window,
                ack_timeout,
                stream: "AMI".to_string(),
                late: None,
            };
            let task = tokio::spawn(publisher.run(merged));
            FenceRig {
                nats,
                terms,
                metrics,
                items,
                upstream,
                task,
            }
        }

        async fn acquired(&self, term: u64) {
            let marker = UpItem::LeaseAcquired { previous: None };
            self.items.send((0, term, marker)).await.unwrap();
        }

        async fn event(&self, term: u64) {
            use ami_proto::{Decoder, DecoderLimits, Frame};
            let mut decoder = Decoder::without_banner(DecoderLimits::default());
            decoder.feed(b"Event: Hangup\r\nUniqueid: 1\r\n\r\n");
            let Some(Ok(Frame::Message(event))) = decoder.decode() else {
                panic!("an event");
            };
            let item = UpItem::Stream(StreamItem::Event(event));
            self.items.send((0, term, item)).await.unwrap();
        }

        /// Waits (5 s at most) until `done` holds.
        async fn until(&self, what: &str, done: impl Fn(&FenceRig) -> bool) {
            let waited = async {
                while !done(self) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), waited)
                .await
                .is_err()
            {
                panic!("not within 5 s: {what}");
            }
        }

        fn end(self) {
            self.task.abort();
            self.upstream.close_all();
        }
    }

    /// The server's answer to an action request that ended without it (its `timeout_ms`
    /// passed, a stop gave up on it) reaches the merged stream as a late answer. It was
    /// thrown away (counted as discarded server input): now it is published on the
    /// server's event subject where it came, in stream order, also when its request is
    /// not known (here: no request is), and counted as such.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_answer_is_published_in_stream_order_even_when_its_request_is_unknown() {
        use ami_proto::{ActionId, Decoder, DecoderLimits, Frame};
        let rig = FenceRig::start("pbx-late-answer", 16, Duration::from_secs(60)).await;
        rig.terms.set(0, 3);
        rig.acquired(3).await;
        for (id, said) in [("b1-41", "Success"), ("b1-42", "Error")] {
            let mut decoder = Decoder::without_banner(DecoderLimits::default());
            let bytes = format!("Response: {said}\r\nActionID: {id}\r\nMessage: late\r\n\r\n");
            decoder.feed(bytes.as_bytes());
            let Some(Ok(Frame::Message(response))) = decoder.decode() else {
                panic!("a response");
            };
            let item = UpItem::Stream(StreamItem::LateAnswer {
                id: ActionId::new(id).unwrap(),
                mark: Some(7),
                response: Box::new(response),
            });
            rig.items.send((0, 3, item)).await.unwrap();
        }
        rig.event(3).await;
        rig.until("the event after the late answers is published", |r| {
            !r.nats.on("ami.pbx-late-answer.event.Hangup").is_empty()
        })
        .await;
        let published: Vec<String> = {
            let kept = rig.nats.publishes.lock().unwrap();
            kept.iter().map(|(s, _)| s.clone()).collect()
        };
        let rendered = rig.metrics.render();
        rig.end();
        assert_eq!(
            published,
            [
                "ami.pbx-late-answer.session",
                "ami.pbx-late-answer.event.late_answer",
                "ami.pbx-late-answer.event.late_answer",
                "ami.pbx-late-answer.event.Hangup"
            ],
        );
        assert!(
            rendered.contains(
                "ami_bridge_late_answers_total{server=\"pbx-late-answer\",request=\"unknown\"} 2"
            ),
            "{rendered}"
        );
        assert!(
            !rendered.contains("reason=\"late_answer\""),
            "nothing is discarded: {rendered}"
        );
    }

    /// A `Mark` item (where a marked action completed; the bridge's own actions carry answer
    /// marks, which put none in the stream) is nothing to publish, and no item lost either,
    /// also when its term has ended (no `discarded` count, no line).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_marks_of_the_bridges_own_actions_are_neither_published_nor_counted_as_discarded() {
        let rig = FenceRig::start("pbx-marks", 16, Duration::from_secs(60)).await;
        rig.terms.set(0, 3);
        rig.acquired(3).await;
        for (term, mark) in [(3, 1), (3, 2), (2, 3)] {
            let item = UpItem::Stream(StreamItem::Mark { mark });
            rig.items.send((0, term, item)).await.unwrap();
        }
        rig.event(3).await;
        rig.until("the event after the marks is published", |r| {
            !r.nats.on("ami.pbx-marks.event.Hangup").is_empty()
        })
        .await;
        let published = rig.nats.publishes.lock().unwrap().len();
        let rendered = rig.metrics.render();
        rig.end();
        assert_eq!(published, 2, "the lease marker and the event");
        assert!(
            rendered.contains("ami_bridge_discarded_total{server=\"pbx-marks\"} 0"),
            "{rendered}"
        );
    }

    /// The control task ends a term whose renewal deadline passed only every 25 ms, and
    /// not at all while the process is stalled (or this task runs first once it runs
    /// again): until then the term is still current. An item of it reaching the publisher
    /// meanwhile is not published: dropped, counted and logged like one of an ended term.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_item_of_a_term_past_its_renewal_deadline_is_not_published_before_the_term_is_ended()
    {
        let _ = logged("");
        let rig = FenceRig::start("pbx-fence-new", 16, Duration::from_secs(60)).await;
        rig.terms
            .start(0, 7, Stamp::now().after(Duration::from_secs(60)));
        rig.acquired(7).await;
        rig.until("the lease_acquired marker is published", |r| {
            !r.nats.on("ami.pbx-fence-new.session").is_empty()
        })
        .await;
        // The last renewal's deadline passed (its answer came late, or the process stood
        // still); nothing has ended the term.
        rig.terms.renewed(0, 7, Stamp::now());
        assert!(rig.terms.is_current(0, 7));
        rig.event(7).await;
        rig.until("the event is published or dropped", |r| {
            r.metrics.discarded_total(0) > 0
                || !r.nats.on("ami.pbx-fence-new.event.Hangup").is_empty()
        })
        .await;
        let published = rig.nats.on("ami.pbx-fence-new.event.Hangup");
        let counted = rig.metrics.discarded_total(0);
        rig.end();
        assert!(
            published.is_empty(),
            "an event of term 7 was published after its renewal deadline"
        );
        assert_eq!(counted, 1, "the dropped event is counted");
        assert!(
            !logged("pbx-fence-new: 1 items never stored").is_empty(),
            "the dropped event is logged"
        );
    }

    /// Items taken under a term while its deadline was ahead and still held when it passes
    /// (waiting behind the window, or published and not acknowledged) are not published
    /// again after it: the publisher's retries go on every ack timeout, for as long as NATS
    /// does not acknowledge them, and JetStream would store each one the first time it
    /// takes it, however late.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn items_held_when_their_terms_renewal_deadline_passes_are_dropped_not_published_again() {
        let _ = logged("");
        let rig = FenceRig::start("pbx-fence-held", 1, Duration::from_millis(100)).await;
        let deadline = Instant::now() + Duration::from_secs(1);
        rig.terms.start(
            0,
            9,
            Stamp {
                mono: deadline,
                wall: SystemTime::now() + Duration::from_secs(1),
            },
        );
        rig.acquired(9).await;
        rig.event(9).await;
        rig.until("the lease_acquired marker is published", |r| {
            !r.nats.on("ami.pbx-fence-held.session").is_empty()
        })
        .await;
        // Unacknowledged, the marker goes again after each ack timeout, the event waiting
        // behind it: both are dropped at the first retry after the deadline.
        rig.until("the marker and the event are dropped", |r| {
            r.metrics.discarded_total(0) >= 2
        })
        .await;
        // Long enough for the retries (their pause doubles up to 2 s) to go on if they do.
        tokio::time::sleep_until(deadline + Duration::from_millis(3500)).await;
        // A publish decided just before the deadline may come a little after it.
        let late: Vec<Duration> = rig
            .nats
            .publishes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at > deadline + Duration::from_millis(200))
            .map(|(_, at)| *at - deadline)
            .collect();
        let counted = rig.metrics.discarded_total(0);
        rig.end();
        assert!(
            late.is_empty(),
            "published after the renewal deadline of their term (time after it): {late:?}"
        );
        assert_eq!(counted, 2, "the marker and the event are counted");
        assert!(
            !logged("pbx-fence-held: ").is_empty(),
            "the dropped items are logged"
        );
    }

    /// A renewal deadline is counted on both clocks: a process whose monotonic clock stood
    /// still while it was suspended (its deadline there still ahead) but whose wall clock
    /// says the deadline passed publishes nothing more of that term, and the control task
    /// ends the term; so does one whose monotonic deadline passed, whatever the wall clock
    /// says (set back).
    #[test]
    fn a_term_whose_deadline_passed_on_either_clock_may_not_publish_and_is_expired() {
        let terms = Terms::new(3);
        let now = Stamp::now();
        let ahead = Duration::from_secs(30);
        let behind = |t: SystemTime| t - Duration::from_secs(1);
        let both_ahead = now.after(ahead);
        let wall_passed = Stamp {
            mono: now.mono + ahead,
            wall: behind(now.wall),
        };
        let mono_passed = Stamp {
            mono: now.mono,
            wall: now.wall + ahead,
        };
        terms.start(0, 5, both_ahead);
        terms.start(1, 6, wall_passed);
        terms.start(2, 7, mono_passed);
        assert!(terms.may_publish(0, 5, now));
        assert!(!terms.may_publish(0, 4, now), "an older term never");
        assert!(!terms.may_publish(1, 6, now), "wall-clock deadline passed");
        assert!(!terms.may_publish(2, 7, now), "monotonic deadline passed");
        assert_eq!(terms.expired(now), vec![(1, 6), (2, 7)]);
        // A renewal moves both deadlines while they are ahead; one of a term past its
        // deadline, or of an ended one, moves nothing.
        terms.start(0, 5, now.after(Duration::from_secs(1)));
        terms.renewed(0, 5, both_ahead);
        assert!(terms.may_publish(0, 5, now.after(Duration::from_secs(2))));
        terms.renewed(1, 6, both_ahead);
        assert!(
            !terms.may_publish(1, 6, now),
            "a term past its deadline revived"
        );
        terms.clear(2, 7);
        terms.start(2, 8, mono_passed);
        terms.renewed(2, 7, both_ahead);
        assert!(
            !terms.may_publish(2, 8, now),
            "term 7's renewal moved term 8's deadline"
        );
        assert_eq!(terms.expired(now), vec![(1, 6), (2, 8)]);
    }

    /// Once an item of a term was dropped because its renewal deadline had passed, the
    /// term must end (its session skipped that item without a gap marker), whatever the
    /// clocks say next. Two ways it went on: the wall clock stepped forward past the
    /// deadline (the publisher dropped an item) and back again before the control task
    /// looked; and a renewal whose answer came just at the deadline, checked by
    /// [`Terms::renewed`] on a clock read an instant before the publisher's and stored just
    /// after the publisher dropped an item.
    #[test]
    fn a_term_an_item_was_dropped_from_for_its_deadline_ends_whatever_the_clocks_say_next() {
        let terms = Terms::new(2);
        let now = Stamp::now();
        let ahead = Duration::from_secs(30);
        // Server 0: the wall clock stepped forward past the deadline, then back.
        terms.start(0, 5, now.after(Duration::from_secs(1)));
        let stepped = Stamp {
            mono: now.mono,
            wall: now.wall + Duration::from_secs(2),
        };
        assert!(!terms.may_publish(0, 5, stepped), "the item is dropped");
        assert!(
            !terms.may_publish(0, 5, now),
            "the term went on after an item of it was dropped (wall clock stepped back)"
        );
        // Server 1: the renewer read the clock just before the deadline, the publisher
        // just after it, and dropped an item before the renewal was stored.
        terms.start(1, 6, now.after(Duration::from_secs(1)));
        let just_after = now.after(Duration::from_millis(1500));
        assert!(!terms.may_publish(1, 6, just_after), "the item is dropped");
        terms.renewed(1, 6, now.after(ahead));
        assert_eq!(
            terms.expired(just_after),
            vec![(0, 5), (1, 6)],
            "a term an item was dropped from for its deadline is not ended"
        );
    }
}
