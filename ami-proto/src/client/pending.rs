//! Actions the client tracks, keyed by their counter, with their deadlines (see
//! [`Deadlines`]).
//!
//! Every operation is O(log n) or amortised O(1): the deadlines and the write queue use lazy
//! deletion (a stale deadline or queue slot is skipped when it surfaces, and both are
//! compacted once stale entries outnumber live ones), so 100,000 pending actions cost no
//! scan per tick.

use super::deadlines::Deadlines;
use super::output::Response;
use crate::wire::action::{Action, ActionId};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What the client does with an action's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A caller's action; `follow_up` is set for an action whose answer comes in an event
    /// after its response (an async Originate's OriginateResponse); `sync_originate` for an
    /// Originate without `Async: true`, which silences the server session while written
    /// (the heartbeat waits for it, and still after a cancel: see [`Stage::Abandoned`]).
    User {
        follow_up: Option<FollowUp>,
        sync_originate: bool,
    },
    /// Sent by the client itself; never reported as `Completed`.
    Internal(Internal),
}

/// What completes an action after its response, carrying its ActionID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FollowUp {
    pub(crate) by: FollowUpBy,
    /// How long the action may wait for it once answered.
    pub(crate) budget: Duration,
}

/// The message a follow-up is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowUpBy {
    /// An event of this name.
    Event(&'static str),
    /// A second response: the first only says the action was taken. res_xmpp's
    /// `JabberSend` answers "Attempting to send Jabber Message", then `Response: Success`
    /// or `Error` (with "Could not find Sender", or bare): whether the message was sent.
    Response,
}

impl FollowUp {
    /// An async Originate's: how the call ended, `Response: Success` when answered.
    pub(crate) const ORIGINATE: &'static str = "OriginateResponse";

    /// An async Originate's follow-up.
    pub(crate) fn is_originate(&self) -> bool {
        self.by == FollowUpBy::Event(Self::ORIGINATE)
    }

    /// Whether `msg`, an event with the action's ActionID, is this follow-up.
    pub(crate) fn is_event(&self, msg: &crate::Message) -> bool {
        match self.by {
            FollowUpBy::Event(name) => msg.first_value().is_some_and(|e| e.is_word(name)),
            FollowUpBy::Response => false,
        }
    }

    /// Whether the follow-up, not the response, says if the action succeeded (its
    /// `Response: Success`): an OriginateResponse, a second response. The other follow-ups
    /// carry data, the action having succeeded with its response.
    pub(crate) fn decides(&self) -> bool {
        self.is_originate() || self.by == FollowUpBy::Response
    }

    /// The follow-up of an action other than Originate: an event Asterisk writes right
    /// after the response, with the ActionID, that holds the data the action asked for
    /// (res_fax's `FAXStats` and `FAXSession`, `WaitEvent`'s `WaitEventComplete`), left to
    /// the event stream it would never reach its caller; or the second response of an
    /// action answered twice, whose first says nothing of the result.
    pub(crate) fn of(action: &Action) -> Option<FollowUpBy> {
        if action.is("JabberSend") {
            return Some(FollowUpBy::Response);
        }
        [
            ("FAXStats", "FAXStats"),
            ("FAXSession", "FAXSession"),
            ("WaitEvent", "WaitEventComplete"),
        ]
        .into_iter()
        .find_map(|(name, event)| action.is(name).then_some(FollowUpBy::Event(event)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Internal {
    Challenge,
    Login,
    Reapply,
    /// A [`ClientConfigBuilder::prefilter`](crate::ClientConfigBuilder::prefilter): Ready does not wait
    /// for its answer.
    Prefilter,
    Heartbeat,
    Logoff,
}

/// Where the action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Waiting to be written.
    Queued,
    /// Written, no response yet.
    Written,
    /// `EventList: start` received; gathering items.
    List,
    /// Async Originate answered; waiting for `OriginateResponse`.
    FollowUp,
    /// Already reported (timed out, cancelled, overflowed); late answers are swallowed, but
    /// for the first response of one that ended unanswered (`Pending::answer_due`), which
    /// the stream reports.
    /// `blocking`: a sync Originate cancelled while written, whose call still blocks the
    /// server's session (the caller stopped waiting, the server did not) until it is
    /// answered or fails: the entry keeps the Originate's own deadline, which the heartbeat
    /// waits for, then is swallowed for a grace period like any other.
    Abandoned { list: bool, blocking: bool },
}

/// Generic over the instant type only so the table's unit tests can use plain numbers (the
/// core never reads a clock, not even in tests), as [`Deadlines`] is.
#[derive(Debug)]
pub(crate) struct Pending<T = Instant> {
    pub(crate) id: ActionId,
    pub(crate) kind: Kind,
    pub(crate) stage: Stage,
    /// Kept until written, then dropped.
    pub(crate) action: Option<Action>,
    pub(crate) deadline: T,
    pub(crate) written_at: Option<T>,
    /// At least one of its bytes was lent to the adapter or written. Until then a deadline
    /// that passes, or a cancel, withdraws them from the transmit buffer: nothing is sent
    /// after its deadline, and a cancelled action that never left is never sent.
    pub(crate) lent: bool,
    /// Occupies a pipeline slot (written, not fully answered).
    pub(crate) on_wire: bool,
    /// Boxed: most actions never gather anything, and a small entry is cheap to move.
    pub(crate) response: Option<Box<Response>>,
    pub(crate) list_bytes: usize,
    /// An `OriginateResponse` that arrived before the action's own response.
    pub(crate) early_follow_up: Option<Box<crate::Message>>,
    /// Abandoned list: when its last item was swallowed. Its grace period runs from there,
    /// so the items of a list that never ends stay swallowed while they keep coming.
    pub(crate) last_swallowed: Option<T>,
    /// Abandoned list: items swallowed (dropped and counted) since the action ended, said in
    /// the log when the entry goes.
    pub(crate) swallowed: u64,
    /// Abandoned before the server's first response was read (timed out or cancelled while
    /// written): that response, should it come, is the server's word on what it did, for
    /// the event stream ([`StreamItem::LateAnswer`](crate::StreamItem::LateAnswer)), once.
    pub(crate) answer_due: bool,
    /// Abandoned: the caller's [`SendOptions::with_mark`](crate::SendOptions::with_mark)
    /// value, which the late answer carries (the mark itself was streamed at completion).
    pub(crate) mark: Option<u64>,
}

impl<T> Pending<T> {
    /// The first of an action's two responses came ([`FollowUpBy::Response`]): the next
    /// response is its last, whatever happens to the action meanwhile.
    pub(crate) fn answered_first(&mut self) {
        if let Kind::User { follow_up, .. } = &mut self.kind {
            if follow_up.is_some_and(|f| f.by == FollowUpBy::Response) {
                *follow_up = None;
            }
        }
    }

    /// A queued entry with nothing written or gathered yet; set `action` (caller actions) or
    /// `stage` and `written_at` (internal actions, written at once) with struct update.
    pub(crate) fn new(id: ActionId, kind: Kind, deadline: T) -> Pending<T> {
        Pending {
            id,
            kind,
            stage: Stage::Queued,
            action: None,
            deadline,
            written_at: None,
            lent: false,
            on_wire: false,
            response: None,
            list_bytes: 0,
            early_follow_up: None,
            last_swallowed: None,
            swallowed: 0,
            answer_due: false,
            mark: None,
        }
    }

    /// An async Originate: completed by its `OriginateResponse`, a call event.
    fn is_async_originate(&self) -> bool {
        matches!(self.kind, Kind::User { follow_up: Some(f), .. } if f.is_originate())
    }

    pub(crate) fn is_sync_originate(&self) -> bool {
        matches!(
            self.kind,
            Kind::User {
                sync_originate: true,
                ..
            }
        )
    }
}

/// Hashes the client's own sequence numbers: they are never chosen by the peer, so a
/// multiplicative (Fibonacci) hash is safe and far cheaper than SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SeqHasher(u64);

impl std::hash::Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type SeqMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<SeqHasher>>;

/// Generic over the instant type for the same reason as [`Pending`].
#[derive(Debug)]
pub(crate) struct PendingTable<T = Instant> {
    map: SeqMap<Pending<T>>,
    queue: VecDeque<u64>,
    deadlines: Deadlines<T>,
    queued: usize,
    on_wire: usize,
    user: usize,
    /// Entries that are sync Originates (an index over their flag, kept by insert/remove).
    sync_originates: BTreeSet<u64>,
    /// Bytes the lists in progress hold together: the sum of their entries' `list_bytes`
    /// (kept by [`add_list_bytes`](Self::add_list_bytes), `set_stage` and `remove`).
    list_bytes: usize,
    /// Entries in [`Stage::Abandoned`] (not blocking), oldest (lowest sequence number)
    /// first: they count against no caller cap, so the client caps them itself by evicting
    /// the oldest (kept by `insert`, `set_stage` and `remove`, through `track_abandoned`).
    abandoned: BTreeSet<u64>,
    /// The same for `Stage::Abandoned { blocking: true }`: evicted only when no other
    /// abandoned entry is left, as evicting one ends its hold on the heartbeat while the
    /// server's session may still be blocked.
    blocking: BTreeSet<u64>,
}

impl<T: Ord> Default for PendingTable<T> {
    fn default() -> Self {
        PendingTable {
            map: SeqMap::default(),
            queue: VecDeque::new(),
            deadlines: Deadlines::default(),
            queued: 0,
            on_wire: 0,
            user: 0,
            sync_originates: BTreeSet::new(),
            list_bytes: 0,
            abandoned: BTreeSet::new(),
            blocking: BTreeSet::new(),
        }
    }
}

impl<T: Ord + Copy> PendingTable<T> {
    /// Caller actions tracked (all stages but abandoned).
    pub(crate) fn user_count(&self) -> usize {
        self.user
    }
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }
    /// Entries kept only to swallow the late answers of actions that ended.
    pub(crate) fn abandoned(&self) -> usize {
        self.abandoned.len() + self.blocking.len()
    }
    /// The abandoned entry to evict first: the oldest (lowest sequence number) that does
    /// not block the server's session, else the oldest that does.
    pub(crate) fn oldest_abandoned(&self) -> Option<u64> {
        self.abandoned
            .first()
            .or_else(|| self.blocking.first())
            .copied()
    }
    /// Moves `seq` between the abandoned indexes as its stage goes `from` -> `to` (`None`:
    /// not in the table).
    fn track_abandoned(&mut self, seq: u64, from: Option<Stage>, to: Option<Stage>) {
        let index = |stage: Option<Stage>| match stage {
            Some(Stage::Abandoned {
                blocking: false, ..
            }) => Some(false),
            Some(Stage::Abandoned { blocking: true, .. }) => Some(true),
            _ => None,
        };
        let (from, to) = (index(from), index(to));
        if from == to {
            return;
        }
        match from {
            Some(false) => self.abandoned.remove(&seq),
            Some(true) => self.blocking.remove(&seq),
            None => false,
        };
        match to {
            Some(false) => self.abandoned.insert(seq),
            Some(true) => self.blocking.insert(seq),
            None => false,
        };
    }
    /// Async Originates none of whose bytes was handed out yet (queued, or encoded and not
    /// lent), in the order sent. A walk over the table, for the rare undone mask change only.
    pub(crate) fn originates_unsent(&self) -> Vec<u64> {
        let mut seqs: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, p)| {
                (p.stage == Stage::Queued || (p.stage == Stage::Written && !p.lent))
                    && p.is_async_originate()
            })
            .map(|(seq, _)| *seq)
            .collect();
        seqs.sort_unstable();
        seqs
    }
    /// Async Originates not completed yet (queued, written, or waiting for their
    /// `OriginateResponse`): each needs call events to complete. A walk over the table, for
    /// the rare event mask change only.
    pub(crate) fn originates_waiting(&self) -> usize {
        self.map
            .values()
            .filter(|p| !matches!(p.stage, Stage::Abandoned { .. }) && p.is_async_originate())
            .count()
    }
    pub(crate) fn on_wire(&self) -> usize {
        self.on_wire
    }
    /// Bytes the lists in progress hold together.
    pub(crate) fn list_bytes(&self) -> usize {
        self.list_bytes
    }
    /// A list item of `bytes` joined the list of entry `seq`.
    pub(crate) fn add_list_bytes(&mut self, seq: u64, bytes: usize) {
        if let Some(p) = self.map.get_mut(&seq) {
            p.list_bytes += bytes;
            self.list_bytes += bytes;
        }
    }

    pub(crate) fn insert(&mut self, seq: u64, p: Pending<T>) {
        self.deadlines.push(p.deadline, seq);
        let queued = p.stage == Stage::Queued;
        if matches!(p.kind, Kind::User { .. }) {
            self.user += 1;
        }
        if p.is_sync_originate() {
            self.sync_originates.insert(seq);
        }
        self.track_abandoned(seq, None, Some(p.stage));
        // In the map before its queue slot: the clean-up below keeps only slots whose entry
        // is there and still queued, and it once dropped the slot of the action being added
        // (never written, never failed by a close).
        self.map.insert(seq, p);
        if queued {
            self.queue.push_back(seq);
            self.queued += 1;
            if self.queue.len() > self.queued.saturating_mul(2) + 64 {
                // Slots of actions that left the queue unwritten (cancelled, timed out).
                let map = &self.map;
                self.queue
                    .retain(|s| map.get(s).is_some_and(|p| p.stage == Stage::Queued));
            }
        }
        self.compact_deadlines();
    }

    /// Whether a deadline entry is the entry's current deadline.
    fn is_live(map: &SeqMap<Pending<T>>, seq: u64, at: T) -> bool {
        map.get(&seq).is_some_and(|p| p.deadline == at)
    }

    fn compact_deadlines(&mut self) {
        let map = &self.map;
        self.deadlines
            .compact(map.len(), |seq, at| Self::is_live(map, seq, at));
    }

    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut Pending<T>> {
        self.map.get_mut(&seq)
    }

    /// Finds the entry for a received ActionID; IDs with another prefix never match. Works
    /// on the bytes as received: no UTF-8 check, no string parse (once per response and
    /// per event that carries an ActionID). Spaces and tabs around the value are ignored
    /// (Asterisk echoes it verbatim, a proxy may pad it or put a tab after the colon): the
    /// client's IDs never hold one, so no other ID can match by it.
    pub(crate) fn lookup(&self, action_id: &[u8]) -> Option<u64> {
        let action_id = crate::wire::message::trim_blanks(action_id);
        let (_, seq) = Self::parse_id(action_id)?;
        let p = self.map.get(&seq)?;
        (p.id.as_bytes() == action_id).then_some(seq)
    }

    /// Splits a received ActionID (blanks around it ignored) shaped as the client's own,
    /// `<prefix>-<seq>`, into its prefix and sequence number; `None` for any other shape.
    pub(crate) fn parse_id(action_id: &[u8]) -> Option<(&[u8], u64)> {
        let action_id = crate::wire::message::trim_blanks(action_id);
        let dash = action_id.iter().rposition(|&b| b == b'-')?;
        let digits = &action_id[dash + 1..];
        if digits.is_empty() {
            return None;
        }
        let mut seq = 0u64;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            seq = seq.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        Some((&action_id[..dash], seq))
    }

    /// Pops the next queued action still waiting to be written. It stays `Queued` (and
    /// counted) until the caller moves it on with [`set_stage`](Self::set_stage).
    pub(crate) fn pop_queued(&mut self) -> Option<u64> {
        while let Some(seq) = self.queue.pop_front() {
            if self.map.get(&seq).is_some_and(|p| p.stage == Stage::Queued) {
                return Some(seq);
            }
        }
        None
    }

    pub(crate) fn set_deadline(&mut self, seq: u64, deadline: T) {
        if let Some(p) = self.map.get_mut(&seq) {
            p.deadline = deadline;
            self.deadlines.push(deadline, seq);
            self.compact_deadlines();
        }
    }

    /// See [`Pending::answered_first`].
    pub(crate) fn answered_first(&mut self, seq: u64) {
        if let Some(p) = self.map.get_mut(&seq) {
            p.answered_first();
        }
    }

    /// Moves an entry to a new stage, keeping the counters right.
    pub(crate) fn set_stage(&mut self, seq: u64, stage: Stage, on_wire: bool) {
        let Some(p) = self.map.get_mut(&seq) else {
            return;
        };
        if p.stage == Stage::Queued && stage != Stage::Queued {
            // Its queue slot is skipped lazily.
            self.queued -= 1;
        }
        if matches!(p.kind, Kind::User { .. }) {
            let was_counted = !matches!(p.stage, Stage::Abandoned { .. });
            let is_counted = !matches!(stage, Stage::Abandoned { .. });
            if was_counted && !is_counted {
                self.user -= 1;
            }
            if p.on_wire != on_wire {
                if on_wire {
                    self.on_wire += 1;
                } else {
                    self.on_wire -= 1;
                }
            }
        }
        if stage != Stage::List {
            // Its items left with its outcome, or never came.
            self.list_bytes -= std::mem::take(&mut p.list_bytes);
        }
        p.on_wire = on_wire;
        let from = std::mem::replace(&mut p.stage, stage);
        self.track_abandoned(seq, Some(from), Some(stage));
    }

    /// Forgets an entry; the returned value keeps the stage it had (and is off the wire).
    /// One lookup: the counters move as [`set_stage`](Self::set_stage) to an abandoned,
    /// off-the-wire stage would move them.
    pub(crate) fn remove(&mut self, seq: u64) -> Option<Pending<T>> {
        let mut p = self.map.remove(&seq)?;
        if p.stage == Stage::Queued {
            self.queued -= 1;
        }
        if matches!(p.kind, Kind::User { .. }) {
            if !matches!(p.stage, Stage::Abandoned { .. }) {
                self.user -= 1;
            }
            if p.on_wire {
                self.on_wire -= 1;
            }
        }
        p.on_wire = false;
        self.list_bytes -= std::mem::take(&mut p.list_bytes);
        if p.is_sync_originate() {
            self.sync_originates.remove(&seq);
        }
        self.track_abandoned(seq, Some(p.stage), None);
        Some(p)
    }

    /// The earliest live deadline; stale entries are dropped on the way.
    pub(crate) fn next_deadline(&mut self) -> Option<T> {
        let map = &self.map;
        self.deadlines
            .peek(|seq, at| Self::is_live(map, seq, at))
            .map(|(at, _)| at)
    }

    /// Pops one entry whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: T) -> Option<u64> {
        let map = &self.map;
        let entry = self.deadlines.peek(|seq, at| Self::is_live(map, seq, at))?;
        if entry.0 > now {
            return None;
        }
        self.deadlines.pop(entry);
        Some(entry.1)
    }

    /// All entries' sequence numbers, sorted, so failures are reported in send order.
    pub(crate) fn sorted_seqs(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.map.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn stage(&self, seq: u64) -> Option<Stage> {
        self.map.get(&seq).map(|p| p.stage)
    }

    /// While sync Originates block the server session (written, or cancelled while written
    /// and not answered yet), the latest of their deadlines. One that timed out is not
    /// waited for: its deadline, the longest its call could ring, has passed.
    pub(crate) fn sync_originate_deadline(&self) -> Option<T> {
        self.sync_originates
            .iter()
            .filter_map(|s| self.map.get(s))
            .filter(|p| {
                matches!(
                    p.stage,
                    Stage::Written | Stage::Abandoned { blocking: true, .. }
                )
            })
            .map(|p| p.deadline)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "abcd1234";

    /// A caller's action queued at `deadline` (plain numbers stand for instants).
    fn user(seq: u64, deadline: u64) -> Pending<u64> {
        Pending::new(
            ActionId::generated(PREFIX, seq),
            Kind::User {
                follow_up: None,
                sync_originate: false,
            },
            deadline,
        )
    }

    /// An async Originate queued at `deadline`.
    fn async_originate(seq: u64, deadline: u64) -> Pending<u64> {
        Pending {
            kind: Kind::User {
                follow_up: Some(FollowUp {
                    by: FollowUpBy::Event(FollowUp::ORIGINATE),
                    budget: Duration::from_secs(30),
                }),
                sync_originate: false,
            },
            ..user(seq, deadline)
        }
    }

    #[test]
    fn cancelled_queued_actions_leave_no_unbounded_trail_of_queue_slots() {
        let mut table = PendingTable::<u64>::default();
        // The server is not reading: 200 actions wait; the caller cancels all but ten, then
        // sends and cancels, unwritten, thousands of others. Each cancel leaves a stale
        // slot behind.
        for seq in 0..200 {
            table.insert(seq, user(seq, 1_000));
        }
        for seq in 10..200 {
            table.remove(seq);
        }
        for seq in 200..5_000 {
            table.insert(seq, user(seq, 1_000));
            assert!(
                table.queue.len() <= 2 * table.queued() + 64,
                "{} queue slots for {} queued actions",
                table.queue.len(),
                table.queued()
            );
            table.remove(seq);
        }
        // The compaction kept every live slot, in the order sent.
        let order: Vec<u64> = std::iter::from_fn(|| {
            let seq = table.pop_queued()?;
            table.set_stage(seq, Stage::Written, true);
            Some(seq)
        })
        .collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn an_action_added_when_the_queue_compacts_keeps_its_slot() {
        let mut table = PendingTable::<u64>::default();
        for seq in 0..100 {
            table.insert(seq, user(seq, 1_000));
        }
        for seq in 0..100 {
            table.set_stage(
                seq,
                Stage::Abandoned {
                    list: false,
                    blocking: false,
                },
                false,
            );
        }
        table.insert(100, user(100, 1_000));
        assert_eq!(table.queue.len(), 1, "the stale slots went");
        assert_eq!(table.pop_queued(), Some(100));
        assert_eq!(table.pop_queued(), None);
    }

    #[test]
    fn received_action_ids_find_only_their_own_entry() {
        let mut table = PendingTable::<u64>::default();
        table.insert(7, user(7, 1_000));
        table.insert(12, user(12, 1_000));
        assert_eq!(table.lookup(b"abcd1234-7"), Some(7));
        assert_eq!(table.lookup(b" \tabcd1234-12 "), Some(12));
        // Another connection's prefix, the same sequence number.
        assert_eq!(table.lookup(b"zzzz9999-7"), None);
        assert_eq!(table.lookup(b"abcd1234-8"), None);
        assert_eq!(
            table.lookup(b"abcd1234-07"),
            None,
            "not the ID the client wrote"
        );
        table.remove(7);
        assert_eq!(table.lookup(b"abcd1234-7"), None);
    }

    #[test]
    fn only_ids_shaped_prefix_dash_digits_parse() {
        type Table = PendingTable<u64>;
        assert_eq!(Table::parse_id(b"abc-12"), Some((&b"abc"[..], 12)));
        assert_eq!(Table::parse_id(b" abc-12\t"), Some((&b"abc"[..], 12)));
        // The last dash splits: a prefix may hold one.
        assert_eq!(Table::parse_id(b"a-b-7"), Some((&b"a-b"[..], 7)));
        assert_eq!(Table::parse_id(b"-0"), Some((&b""[..], 0)));
        assert_eq!(
            Table::parse_id(b"p-18446744073709551615"),
            Some((&b"p"[..], u64::MAX))
        );
        for bad in [
            &b"abc"[..],
            b"abc-",
            b"abc-1x",
            b"abc-x1",
            b"abc-+1",
            b"abc-1 2",
            b"p-18446744073709551616",
            b"p-99999999999999999999",
        ] {
            assert_eq!(
                Table::parse_id(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_moved_deadline_replaces_the_old_one() {
        let mut table = PendingTable::<u64>::default();
        table.insert(1, user(1, 100));
        table.insert(2, user(2, 200));
        table.set_deadline(1, 300);
        assert_eq!(table.next_deadline(), Some(200));
        assert_eq!(table.pop_expired(250), Some(2));
        table.remove(2);
        assert_eq!(
            table.pop_expired(250),
            None,
            "100 is no longer 1's deadline"
        );
        assert_eq!(table.pop_expired(300), Some(1));
        // Moving the deadline of an entry not in the table adds nothing.
        table.remove(1);
        table.set_deadline(9, 50);
        assert_eq!(table.next_deadline(), None);
        assert_eq!(table.deadlines.len(), 0);
    }

    #[test]
    fn deadlines_of_ended_actions_are_compacted_away() {
        let mut table = PendingTable::<u64>::default();
        table.insert(0, user(0, 1));
        for seq in 1..2_000 {
            table.insert(seq, user(seq, seq + 10));
            assert!(
                table.deadlines.len() <= 2 * 2 + 64,
                "{}",
                table.deadlines.len()
            );
            table.remove(seq);
        }
        // Moved deadlines leave stale entries too.
        for at in 2..2_000 {
            table.set_deadline(0, at);
            assert!(table.deadlines.len() <= 2 + 64, "{}", table.deadlines.len());
        }
        assert_eq!(table.next_deadline(), Some(1_999));
    }

    #[test]
    fn async_originates_are_listed_while_unsent_and_counted_while_uncompleted() {
        let mut table = PendingTable::<u64>::default();
        table.insert(5, async_originate(5, 1_000));
        table.insert(3, async_originate(3, 1_000));
        table.insert(4, user(4, 1_000));
        table.insert(6, async_originate(6, 1_000));
        table.insert(8, async_originate(8, 1_000));
        table.insert(9, async_originate(9, 1_000));
        assert_eq!(table.originates_unsent(), [3, 5, 6, 8, 9]);
        assert_eq!(table.originates_waiting(), 5);
        // 3 encoded, not lent: still unsent. 5 lent: sent. 6 answered, waiting for its
        // OriginateResponse. 8 abandoned (cancelled).
        table.set_stage(3, Stage::Written, true);
        table.set_stage(5, Stage::Written, true);
        if let Some(p) = table.get_mut(5) {
            p.lent = true;
        }
        table.set_stage(6, Stage::FollowUp, false);
        table.set_stage(
            8,
            Stage::Abandoned {
                list: false,
                blocking: false,
            },
            false,
        );
        assert_eq!(table.originates_unsent(), [3, 9]);
        assert_eq!(table.originates_waiting(), 4);
    }
}
