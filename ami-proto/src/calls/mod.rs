//! # A call tracker that survives faults
//!
//! [`CallTracker`] keeps a live view of an Asterisk server's channels and calls from the
//! event stream, and keeps it right across the faults a [`Client`](crate::Client) survives:
//! a gap in the stream, a reconnect, an Originate whose outcome became `Unknown`. Like the
//! rest of this crate it has no clock and does no I/O: it is fed stream items, action
//! answers and `now`, and hands back actions to send and updates to read.
//!
//! ```text
//!   stream items ── handle_item(now, &item) ───►┌─────────────┐── poll_request(): actions to send
//!   answers ─────── handle_reply(now, tok, r) ─►│ CallTracker │── poll_update(): calls ended,
//!   your Originates ─ originate(action) ───────►└─────────────┘   stale, resynced, originates
//!                                                  channels(), calls(), originate_state()
//! ```
//!
//! ## Run loop
//!
//! 1. Feed every [`StreamItem`] to [`CallTracker::handle_item`], in stream order.
//! 2. Send every [`TrackerRequest`] from [`CallTracker::poll_request`] **with its
//!    `options`** (they carry a stream mark), and hand its answer back to
//!    [`CallTracker::handle_reply`] with the request's token. If the client refuses it at
//!    send time, call [`CallTracker::send_failed`].
//! 3. Read [`CallUpdate`]s from [`CallTracker::poll_update`]; read the view any time.
//! 4. Call [`CallTracker::handle_timeout`] once [`CallTracker::poll_timeout`] is due, even
//!    when nothing else happens: the tracker's bounded waits (an answered Originate whose
//!    channel events have not come yet, a channel missing from a snapshot whose Hangup may
//!    still come; see [`TrackerConfigBuilder::event_grace`]) end then, not only at the next
//!    item or answer.
//!
//! ## Staying right across faults
//!
//! The view is *live* while every event reaches it. A [`StreamItem::Gap`] or a
//! [`StreamItem::Disconnected`] makes it *stale* ([`CallUpdate::Stale`]); the next `Ready` (or
//! the gap itself) starts a resync: the tracker asks for `CoreShowChannels` (and `Status` with
//! its tag variable when an Originate is in doubt). A gap while a snapshot is on its way
//! starts nothing new: before the snapshot's mark the snapshot covers it; after the mark one
//! more snapshot follows once this one is applied, however many gaps came. Each snapshot
//! action carries a stream mark, so the tracker knows exactly which events the server sent
//! before its answer and which after: events before the mark are applied as they come, the
//! snapshot is applied at the mark, and events after the mark that arrive before the answer
//! is in hand are held and applied after it. No event is lost or applied twice, and the snapshot never overwrites a
//! newer event. When more events come after the mark than `max_buffered_events` or
//! `max_buffered_bytes` (a flood while the answer is on its way), the snapshot is not
//! started over (under a steady flood the next one would overflow too, for ever): from
//! there events are applied at once, and
//! the channels they reach keep their newer state over the snapshot (`kept_newer`), one
//! they saw hang up is not brought back. Only events for channels the view does not hold
//! yet still wait for the snapshot, within the same cap; any dropped past it are counted
//! ([`TrackerStats::buffered_dropped`]) and one more snapshot follows
//! ([`StaleReason::BufferFull`]). Then it reconciles, and says so ([`CallUpdate::Resynced`]):
//! - channels in the view and in the snapshot continue (the snapshot's state wins: what
//!   changed during the outage was not seen, so an answer then has no time);
//! - channels in the view, gone from the snapshot, ended while unobserved
//!   ([`Ending::Unobserved`]: no cause, no end time, never made up). On the session whose
//!   events the view followed (a resync after a gap, say), Asterisk may write the snapshot
//!   before the `Hangup` of a channel that just hung up (the answer goes straight to the
//!   session, events through a queue that lags under load): such a channel leaves the view
//!   (which then equals the snapshot), but its end waits up to
//!   [`event_grace`](TrackerConfigBuilder::event_grace) for that `Hangup`
//!   ([`ResyncReport::waiting_for_hangup`]): it ends with its cause if the `Hangup` comes,
//!   unobserved if not (and its call ends then, not before). After a session change the
//!   events it missed are gone for good: it ends unobserved at once;
//! - channels new to it are adopted (`adopted`, no creation time).
//!
//! ## Originates never left in doubt
//!
//! [`CallTracker::originate`] adds a unique tag in a channel variable. The tracker links the
//! tag to the channels that carry it (their `VarSet`) and to the `OriginateResponse`'s
//! Uniqueid, and follows the call to its end ([`OriginateState`]): the call of those
//! channels (their Linkedid), which goes on when a Local pair carrying the tag optimizes
//! away. An answer that comes before the events of its channels (Asterisk writes it
//! straight to the session, channel events lag behind in its event queue) waits for them
//! up to [`event_grace`](TrackerConfigBuilder::event_grace). When the answer is lost
//! (`Unknown` after a disconnect, or a timeout), or its channels' events did not come within
//! the grace or may have been lost in a gap, the next snapshot looks for the tag with
//! `Status` `Variables`: it resolves to `Running` (now tracked) or `NotRunningNow` (it may
//! have run and ended while away), never to "failed" or "never ran".
//!
//! ## Limits
//!
//! Channels tracked, events held while a snapshot's answer is awaited, updates waiting and
//! Originates followed are
//! capped ([`TrackerConfigBuilder`]), and each text field a channel keeps to
//! [`MAX_FIELD_BYTES`]; what a cap turns away or cuts is counted in [`TrackerStats`]
//! and logged. A channel turned away at the cap is not taken in later when room frees (its
//! events name a channel the view does not hold, counted as unknown); the next resync
//! brings it in.
//!
//! ## Permissions
//!
//! The tracker's snapshots need the manager user's `write` classes: `CoreShowChannels`
//! needs `system` or `reporting`, `Status` (asked when an Originate is in doubt) `system`,
//! `call` or `reporting`, and `Originate` itself `originate`; its events need `read=call`
//! (and the session's event mask to let call events through). A least-privilege dialer user
//! with `write=originate` alone gets `Permission denied` for every snapshot: after three
//! refused tries the tracker stops asking and stays stale
//! ([`CallUpdate::Stale`] with [`StaleReason::SnapshotFailed`]), until the next `Ready`.
//!
//! ```
//! use ami_proto::calls::{CallTracker, CallUpdate, TrackerConfig};
//! use ami_proto::{ActionId, Client, ClientConfig, Input, Notice, Output};
//! use std::time::{Duration, Instant};
//!
//! let mut now = Instant::now(); // the caller's clock; tests use virtual time
//! let mut client = Client::new(ClientConfig::builder("admin", "amp111").seed(1).build()?, now);
//! let mut tracker = CallTracker::new(TrackerConfig::builder().tag_prefix("doc").build()?);
//!
//! // A scripted server: logs in, lists no channel, then one call comes and goes.
//! let mut calls_done = false;
//! let mut server = |wire: &str| -> String {
//!     let mut reply = String::new();
//!     for block in wire.split("\r\n\r\n").filter(|b| !b.is_empty()) {
//!         let id = block.lines().find_map(|l| l.strip_prefix("ActionID: ")).unwrap_or("");
//!         if block.starts_with("Action: Login") {
//!             reply += &format!("Response: Success\r\nActionID: {id}\r\n\r\n");
//!         } else if block.starts_with("Action: CoreShowChannels") {
//!             reply += &format!("Response: Success\r\nActionID: {id}\r\nEventList: start\r\n\r\n\
//!                 Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n");
//!         }
//!     }
//!     if reply.is_empty() && !calls_done {
//!         calls_done = true;
//!         let block = "ChannelState: 6\r\nCallerIDNum: 100\r\nContext: default\r\nExten: 200\r\n\
//!             Uniqueid: 1.1\r\nLinkedid: 1.1\r\nChannel: PJSIP/100-1\r\n";
//!         reply = format!("Event: Newchannel\r\n{block}\r\nEvent: Hangup\r\n{block}Cause: 16\r\n\r\n");
//!     }
//!     reply
//! };
//!
//! let mut pending: Vec<(u64, ActionId)> = Vec::new(); // tracker requests sent, by token
//! let mut ended = Vec::new();
//! for _round in 0..6 {
//!     loop {
//!         match client.poll_output() {
//!             Output::Connect => {
//!                 client.handle_input(now, Input::Connected);
//!                 client.handle_input(now, Input::Received(b"Asterisk Call Manager/11.0.0\r\n"));
//!             }
//!             Output::Notice(Notice::Completed { id, outcome }) => {
//!                 // Only the tracker's own requests are answered back to it.
//!                 if let Some(token) = pending.iter().position(|(_, i)| *i == id) {
//!                     let (token, _) = pending.swap_remove(token);
//!                     tracker.handle_reply(now, token, outcome);
//!                 }
//!             }
//!             Output::Wait(_) => break,
//!             _ => {}
//!         }
//!     }
//!     while let Some(item) = client.poll_event() {
//!         tracker.handle_item(now, &item);
//!     }
//!     while let Some(req) = tracker.poll_request() {
//!         let id = client.send_action_with(now, req.action, req.options)?;
//!         pending.push((req.token, id));
//!     }
//!     if tracker.poll_timeout().is_some_and(|at| at <= now) {
//!         tracker.handle_timeout(now);
//!     }
//!     while let Some(update) = tracker.poll_update() {
//!         if let CallUpdate::CallEnded(call) = update {
//!             ended.push(call);
//!         }
//!     }
//!     let wire = String::from_utf8_lossy(client.transmit()).into_owned();
//!     client.advance_transmit(wire.len());
//!     now += Duration::from_millis(10);
//!     client.handle_input(now, Input::Received(server(&wire).as_bytes()));
//! }
//! assert_eq!(ended.len(), 1);
//! assert_eq!(ended[0].cause(), Some(16));
//! assert!(!tracker.is_stale());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`StreamItem`]: crate::StreamItem
//! [`StreamItem::Gap`]: crate::StreamItem::Gap
//! [`StreamItem::Disconnected`]: crate::StreamItem::Disconnected

mod after_mark;
mod channel;
mod config;
mod originate;
mod view;

pub use channel::{
    CallEnd, Channel, ChannelState, EndedCall, EndedChannel, Ending, MAX_ENDED_PER_CALL,
    MAX_FIELD_BYTES,
};
pub use config::{TrackerConfig, TrackerConfigBuilder, TrackerConfigError};
pub use originate::{OriginateState, OriginateTag};

use crate::client::output::{ActionError, DisconnectReason, Response, StreamItem};
use crate::client::session::SendOptions;
use crate::wire::action::Action;
use crate::wire::message::Message;
use after_mark::AfterMark;
use originate::{answer_of, Answer, Record};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};
use thiserror::Error;
use view::{Effects, View};

/// The event classes the tracker reads, as an event mask for
/// [`ClientConfig::events`](crate::ClientConfig::events): channel, bridge and Originate
/// events are `call`, `VarSet` and `Newexten` are `dialplan`, and `system` brings
/// `FullyBooted` and `Shutdown`. A session that only tracks calls needs no other class, and
/// asking for these alone spares a busy server (and the client) its `agent`, `reporting`
/// (RTCP reports every few seconds per channel), `user` and `security` events: Asterisk
/// does not even build an event for a session whose mask lacks its class. Snapshot answers
/// are list items, which no mask holds back.
pub const EVENT_MASK: &str = "system,call,dialplan";

/// Tokens (and stream marks) of tracker requests start here, far from small numbers a caller
/// may use for marks of its own.
pub const TOKEN_BASE: u64 = 0x7472_6163_6b00_0000;

/// Snapshots the server refuses in a row (an error answer, a list over the client's caps)
/// before the tracker stops asking until the next session, gap or [`CallTracker::resync`].
/// A snapshot left unanswered until its deadline is asked again without limit.
const MAX_SNAPSHOT_ATTEMPTS: u32 = 3;

/// An action the tracker needs sent. Send it with `options` (they carry the stream mark the
/// tracker waits for) and report its answer with [`CallTracker::handle_reply`] and `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackerRequest {
    /// Names this request in [`CallTracker::handle_reply`] (and is its stream mark).
    pub token: u64,
    /// The action.
    pub action: Action,
    /// Send options: a stream mark equal to `token`.
    pub options: SendOptions,
}

/// Why the view may be behind the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StaleReason {
    /// No snapshot yet (the first session, or [`CallTracker::resync`]).
    Start,
    /// The session was lost.
    SessionLost(DisconnectReason),
    /// Events were dropped (the consumer was behind).
    Gap {
        /// How many.
        dropped: u64,
    },
    /// Events after a snapshot's mark, for channels the view did not hold yet, outgrew
    /// `max_buffered_events` before its answer: those past it were dropped (counted in
    /// [`TrackerStats::buffered_dropped`]) and one more snapshot follows this one.
    BufferFull,
    /// An Originate's answer was lost: look for its tag.
    OriginateInDoubt,
    /// The snapshot failed (a server error); `attempt` of the row.
    SnapshotFailed {
        /// Failed snapshots in a row.
        attempt: u32,
    },
}

/// What a resync found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResyncReport {
    /// Channels in the view and in the snapshot.
    pub continued: usize,
    /// Channels in the view, gone from the snapshot, whose Hangup was never seen (after a
    /// session change: the events they missed are gone for good).
    pub ended_unobserved: usize,
    /// Channels in the view, gone from a snapshot on the same session: they leave the view,
    /// and their end waits up to `event_grace` for their `Hangup`, which the server may send
    /// just after the snapshot; without it they end unobserved then (counted in
    /// [`TrackerStats::ended_unobserved`] from the snapshot on, unless their `Hangup` comes).
    pub waiting_for_hangup: usize,
    /// Channels first known from the snapshot.
    pub adopted: usize,
    /// Events that came after the snapshot's mark but before its answer was in hand, held
    /// and applied after it.
    pub replayed: usize,
    /// Channels in the snapshot that events after its mark reached before its answer was in
    /// hand, applied at once because more came than `max_buffered_events`: the view was
    /// newer than the snapshot for them and kept (one that hung up stays ended).
    pub kept_newer: usize,
}

/// News from the tracker, from [`CallTracker::poll_update`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallUpdate {
    /// From here the view may be behind the server, until [`CallUpdate::Resynced`].
    Stale(StaleReason),
    /// A snapshot was reconciled: the view is live again.
    Resynced(ResyncReport),
    /// A call has no live channel left: its last channel ended, or moved to another call.
    CallEnded(EndedCall),
    /// An Originate sent through the tracker changed state.
    Originate {
        /// Its tag.
        tag: OriginateTag,
        /// Its new state.
        state: OriginateState,
    },
}

/// Why [`CallTracker::originate`] refused an action.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TrackerError {
    /// The action is not an Originate.
    #[error("not an Originate")]
    NotOriginate,
    /// `max_originates` are followed already.
    #[error("{0} Originates are followed already (max_originates)")]
    TooManyOriginates(usize),
}

/// Counters of one tracker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackerStats {
    /// Channels tracked now.
    pub channels: usize,
    /// Live calls now.
    pub calls: usize,
    /// Resyncs started.
    pub resyncs: u64,
    /// Resyncs completed.
    pub resynced: u64,
    /// Channels reported ended while unobserved. One gone from a snapshot on the same
    /// session is counted when the snapshot shows it gone, and no more if its `Hangup` comes
    /// within `event_grace` after all.
    pub ended_unobserved: u64,
    /// Channels not tracked because `max_channels` was reached.
    pub channels_over_cap: u64,
    /// Channel events for a channel not in the view (ignored).
    pub unknown_channel_events: u64,
    /// Times the events held after a snapshot's mark outgrew `max_buffered_events` (or
    /// `max_buffered_bytes`): from there until its answer, events were applied at once (the
    /// snapshot kept in flight).
    pub buffer_overflows: u64,
    /// Events dropped after a snapshot's mark because `max_buffered_events` (or
    /// `max_buffered_bytes`) were held already, all for channels the view did not hold yet
    /// (a [`StaleReason::BufferFull`] snapshot followed).
    pub buffered_dropped: u64,
    /// Updates dropped because `max_updates` were waiting.
    pub updates_dropped: u64,
    /// Snapshots that failed.
    pub snapshot_failures: u64,
    /// Text fields cut to [`MAX_FIELD_BYTES`] (a caller name of any length, say).
    pub fields_cut: u64,
}

#[derive(Debug)]
enum Purpose {
    Channels(u64),
    Tags(u64),
    Originate(OriginateTag),
}

#[derive(Debug)]
struct InFlight {
    purpose: Purpose,
    reply: Option<Result<Response, ActionError>>,
    marked: bool,
    /// The client refused it at send ([`CallTracker::send_failed`]): no session change
    /// needs to follow.
    refused: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Tags {
    NotAsked,
    Asked,
    Got,
}

#[derive(Debug)]
struct Resync {
    epoch: u64,
    /// The CoreShowChannels snapshot has been applied (at its mark); what it found.
    applied: Option<ResyncReport>,
    /// Its mark has been read: events from here on come after the snapshot.
    marked: bool,
    tags: Tags,
    /// Events after its mark were lost (this many): once it is in, another is needed.
    again: Option<u64>,
    /// Of those, dropped because the held events were at `max_buffered_events`.
    dropped_held: u64,
    /// Set once the events held after its mark outgrew `max_buffered_events`: from then
    /// on they are applied at once, and this says which channels they reached.
    after_mark: Option<AfterMark>,
}

#[derive(Debug)]
enum Sync {
    /// No session (not yet up, or lost): the next `Ready` starts a resync.
    Down,
    /// Every event reaches the view.
    Live,
    /// A snapshot is in flight. Events before its mark are applied; events after it are held
    /// until its answer is in hand.
    Resyncing(Box<Resync>),
    /// Snapshots kept failing: events are applied as they come, the view stays stale until
    /// the next session, gap or `resync`.
    Stuck,
}

/// A sans-IO view of live channels and calls, kept right across gaps and reconnects. See the
/// [module docs](self).
#[derive(Debug)]
pub struct CallTracker {
    config: TrackerConfig,
    view: View,
    sync: Sync,
    epoch: u64,
    attempts: u32,
    /// Events after a snapshot's mark, before its answer, with when they arrived.
    held: VecDeque<(Instant, Message)>,
    /// The `retained_bytes` of the messages in `held`.
    held_bytes: usize,
    inflight: BTreeMap<u64, InFlight>,
    requests: VecDeque<TrackerRequest>,
    updates: VecDeque<CallUpdate>,
    updates_episode: bool,
    originates: BTreeMap<OriginateTag, Record>,
    /// Uniqueids of answered Originates whose channel events are awaited, with their tag.
    answered_uids: BTreeMap<String, OriginateTag>,
    /// Channels a snapshot on the same session no longer listed, awaiting their Hangup
    /// (kept in the view): until when, and when the snapshot showed them gone. At most the
    /// view's channels.
    missing: BTreeMap<String, (Instant, Instant)>,
    /// No snapshot applied yet on this session.
    fresh_session: bool,
    /// The earliest end of such a wait.
    next_expiry: Option<Instant>,
    next_token: u64,
    next_tag: u64,
    stats: TrackerStats,
}

impl CallTracker {
    /// A tracker with an empty, stale view. It starts a resync at the next `Ready` stream
    /// item; one created on a session already up calls [`resync`](Self::resync).
    pub fn new(config: TrackerConfig) -> CallTracker {
        let view = View::new(
            config.max_channels,
            config.tag_variable.clone(),
            config.name.clone(),
        );
        CallTracker {
            config,
            view,
            sync: Sync::Down,
            epoch: 0,
            attempts: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            inflight: BTreeMap::new(),
            requests: VecDeque::new(),
            updates: VecDeque::new(),
            updates_episode: false,
            originates: BTreeMap::new(),
            answered_uids: BTreeMap::new(),
            missing: BTreeMap::new(),
            fresh_session: true,
            next_expiry: None,
            next_token: TOKEN_BASE,
            next_tag: 0,
            stats: TrackerStats::default(),
        }
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Feeds one stream item, in stream order.
    ///
    /// The item counts before the waits `now` finds over: it was read by `now`, and after a
    /// clock jump (a VM resumed) or a slow turn the Hangup or channel event a wait is for
    /// comes in the very turn that finds the wait over. Ended first, that wait would drop a
    /// Hangup's cause or doubt an Originate whose channel is in hand. Likewise a snapshot
    /// in hand (see [`handle_reply`](Self::handle_reply)).
    pub fn handle_item(&mut self, now: Instant, item: &StreamItem) {
        self.apply_item(now, item);
        self.expire_unless_completing(now);
    }

    fn apply_item(&mut self, now: Instant, item: &StreamItem) {
        match item {
            StreamItem::Event(msg) => self.event(now, msg),
            StreamItem::Gap { dropped } => self.gap(*dropped),
            // Input the decoder threw away may have been an event this view needed: treat it
            // like a gap. Skipped non-events and unmatched responses change nothing here.
            StreamItem::Discarded {
                reason: crate::Discard::Malformed(_),
                count,
            } => self.gap(*count),
            StreamItem::Discarded { .. } => {}
            StreamItem::Ready { .. } => {
                self.fresh_session = true;
                self.attempts = 0;
                self.start_resync(StaleReason::Start);
            }
            StreamItem::Disconnected { reason } => {
                if !matches!(self.sync, Sync::Down) {
                    self.sync = Sync::Down;
                    self.apply_held();
                    self.update(CallUpdate::Stale(StaleReason::SessionLost(reason.clone())));
                }
            }
            // The answer to an action that ended without it (a snapshot that timed out
            // failed then, and was retried): what it changed in calls comes as events.
            StreamItem::LateAnswer { .. } => {}
            StreamItem::Mark { mark } => {
                if let Some(f) = self.inflight.get_mut(mark) {
                    f.marked = true;
                    if let (Purpose::Channels(epoch), Sync::Resyncing(r)) =
                        (&f.purpose, &mut self.sync)
                    {
                        r.marked |= r.epoch == *epoch;
                    }
                    self.try_complete(now, *mark);
                }
            }
        }
    }

    /// When the tracker next needs [`handle_timeout`](Self::handle_timeout): the end of its
    /// earliest bounded wait (an answered Originate awaiting its channel's events, a channel
    /// missing from a snapshot awaiting its Hangup), or `None` when nothing waits. It has no
    /// clock: without this call a wait ends only at the next item or answer, which a quiet
    /// server may not send for hours.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_expiry
    }

    /// Ends the waits due at `now` (see [`poll_timeout`](Self::poll_timeout)): an Originate
    /// whose channel did not show becomes `InDoubt` (and a resync looks for it), a channel
    /// whose Hangup did not come ends unobserved. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
    }

    /// The answer to request `token`: `outcome` from a [`Client`](crate::Client),
    /// or an async adapter's result. Unknown tokens are ignored.
    ///
    /// Like an item, the answer counts before the waits `now` finds over: a snapshot read in
    /// the turn that ends a missing channel's grace and that lists the channel again brings
    /// it back (no call end, no adoption anew).
    pub fn handle_reply(&mut self, now: Instant, token: u64, reply: Result<Response, ActionError>) {
        if let Some(f) = self.inflight.get_mut(&token) {
            f.reply = Some(reply);
            self.try_complete(now, token);
        }
        self.expire_unless_completing(now);
    }

    /// Ends the waits due at `now`, unless a request has its answer without its stream mark,
    /// or its mark without its answer: the client hands both out at once, so the other was
    /// read by `now` too and comes next; the waits end once it is applied (or at
    /// [`handle_timeout`](Self::handle_timeout), which does not wait for it).
    fn expire_unless_completing(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|at| now < at) {
            return;
        }
        if self
            .inflight
            .values()
            .any(|f| f.marked != f.reply.is_some())
        {
            return;
        }
        self.expire(now);
    }

    /// Request `token` could not be handed to the client (refused at send, or the session
    /// is gone): no answer and no mark will come.
    pub fn send_failed(&mut self, now: Instant, token: u64) {
        if let Some(f) = self.inflight.get_mut(&token) {
            f.reply = Some(Err(ActionError::NotSent(DisconnectReason::LocalClose)));
            f.marked = true;
            f.refused = true;
            self.try_complete(now, token);
        }
    }

    /// Starts a resync now (for a tracker created on a session already up).
    pub fn resync(&mut self) {
        self.attempts = 0;
        self.start_resync(StaleReason::Start);
    }

    /// Tags `action` (an Originate) and queues it as a request; follow it with
    /// [`originate_state`](Self::originate_state) and [`CallUpdate::Originate`].
    pub fn originate(&mut self, action: Action) -> Result<OriginateTag, TrackerError> {
        if !action.is("Originate") {
            return Err(TrackerError::NotOriginate);
        }
        if self.originates.len() >= self.config.max_originates {
            return Err(TrackerError::TooManyOriginates(self.config.max_originates));
        }
        self.next_tag += 1;
        let tag = OriginateTag(format!("{}-{}", self.config.tag_prefix, self.next_tag));
        let action = action.field(
            "Variable",
            format!("{}={}", self.config.tag_variable, tag.0),
        );
        self.originates.insert(tag.clone(), Record::new());
        self.request(Purpose::Originate(tag.clone()), action);
        Ok(tag)
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next action to send.
    pub fn poll_request(&mut self) -> Option<TrackerRequest> {
        self.requests.pop_front()
    }

    /// The next update.
    pub fn poll_update(&mut self) -> Option<CallUpdate> {
        self.updates.pop_front()
    }

    /// True unless every event since the last snapshot reached the view.
    pub fn is_stale(&self) -> bool {
        !matches!(self.sync, Sync::Live)
    }

    /// True while a snapshot is in flight.
    pub fn is_resyncing(&self) -> bool {
        matches!(self.sync, Sync::Resyncing(_))
    }

    /// Live channels, by Uniqueid.
    pub fn channels(&self) -> impl ExactSizeIterator<Item = &Channel> {
        self.view.channels()
    }

    /// One live channel.
    pub fn channel(&self, uniqueid: &str) -> Option<&Channel> {
        self.view.channel(uniqueid)
    }

    /// Live calls: each Linkedid with its live channels.
    pub fn calls(&self) -> impl Iterator<Item = (&str, Vec<&Channel>)> {
        self.view.calls()
    }

    /// The live channels of the call with this Linkedid.
    pub fn call(&self, linkedid: &str) -> Option<Vec<&Channel>> {
        self.view.call(linkedid)
    }

    /// Where an Originate stands; `None` once it reached a final state (reported as an
    /// update) or for a tag not from this tracker.
    pub fn originate_state(&self, tag: &OriginateTag) -> Option<&OriginateState> {
        self.originates.get(tag).map(|r| &r.state)
    }

    /// Originates followed now (not yet in a final state).
    pub fn originates(&self) -> impl Iterator<Item = (&OriginateTag, &OriginateState)> {
        self.originates.iter().map(|(t, r)| (t, &r.state))
    }

    /// The counters.
    pub fn stats(&self) -> TrackerStats {
        let mut s = self.stats.clone();
        s.channels = self.view.len();
        s.calls = self.view.call_count();
        s.channels_over_cap = self.view.over_cap;
        s.unknown_channel_events = self.view.unknown;
        s.fields_cut = self.view.cut;
        s
    }

    /// The configuration.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    // ----- internals ----------------------------------------------------------------------

    fn update(&mut self, update: CallUpdate) {
        if self.updates.len() >= self.config.max_updates {
            self.updates.pop_front();
            self.stats.updates_dropped += 1;
            if !self.updates_episode {
                self.updates_episode = true;
                log::warn!(
                    "{who}: {} updates unread; dropping the oldest (counted)",
                    self.config.max_updates,
                    who = Tracker(self.config.name.as_deref())
                );
            }
        } else {
            self.updates_episode = false;
        }
        self.updates.push_back(update);
    }

    fn request(&mut self, purpose: Purpose, action: Action) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.inflight.insert(
            token,
            InFlight {
                purpose,
                reply: None,
                marked: false,
                refused: false,
            },
        );
        self.requests.push_back(TrackerRequest {
            token,
            action,
            options: SendOptions::default().with_mark(token),
        });
        token
    }

    fn tags_request(&mut self, epoch: u64) {
        let action = Action::new("Status").field("Variables", self.config.tag_variable.clone());
        self.request(Purpose::Tags(epoch), action);
    }

    fn start_resync(&mut self, reason: StaleReason) {
        // Events held for an earlier snapshot were seen: they count, in order.
        self.apply_held();
        self.epoch += 1;
        self.stats.resyncs += 1;
        log::debug!(
            "{who}: resync ({reason:?})",
            who = Tracker(self.config.name.as_deref())
        );
        self.update(CallUpdate::Stale(reason));
        let epoch = self.epoch;
        // Answered Originates whose channel events are still awaited: those events may be
        // among the lost ones, so look for their tag too.
        let awaiting: Vec<OriginateTag> = self
            .originates
            .iter()
            .filter(|(_, r)| r.wait_until.is_some())
            .map(|(t, _)| t.clone())
            .collect();
        for tag in awaiting {
            if let Some(state) = self.originates.get_mut(&tag).and_then(Record::doubt) {
                self.forget_awaited(&tag);
                self.update(CallUpdate::Originate { tag, state });
            }
        }
        self.request(Purpose::Channels(epoch), Action::new("CoreShowChannels"));
        let mut tags = Tags::NotAsked;
        if self
            .originates
            .values()
            .any(|r| r.state == OriginateState::InDoubt)
        {
            self.tags_request(epoch);
            tags = Tags::Asked;
        }
        self.sync = Sync::Resyncing(Box::new(Resync {
            epoch,
            applied: None,
            marked: false,
            tags,
            again: None,
            dropped_held: 0,
            after_mark: None,
        }));
    }

    /// `dropped` events were lost here in the stream.
    fn gap(&mut self, dropped: u64) {
        match &mut self.sync {
            Sync::Down => {}
            // Before the snapshot's mark: the snapshot is taken after the lost events and
            // shows what they did. Asking again here would throw away a snapshot that is
            // right, and a gap during every round trip would then keep the view stale.
            Sync::Resyncing(r) if !r.marked => {
                log::debug!(
                    "{who}: {dropped} events lost before the snapshot",
                    who = Tracker(self.config.name.as_deref())
                );
            }
            // After it: the view will miss them, so one more snapshot once this one is in;
            // one, however many gaps come, so the snapshots in flight stay one.
            Sync::Resyncing(r) => {
                r.again = Some(r.again.unwrap_or(0).saturating_add(dropped));
            }
            Sync::Live | Sync::Stuck => self.start_resync(StaleReason::Gap { dropped }),
        }
    }

    fn event(&mut self, now: Instant, msg: &Message) {
        let (hold, flooded) = match &self.sync {
            Sync::Resyncing(r) if r.marked && r.applied.is_none() => (true, r.after_mark.is_some()),
            _ => (false, false),
        };
        if !hold {
            let fx = self.view.apply(now, msg);
            return self.effects(fx);
        }
        if !flooded {
            if self.hold(now, msg) {
                return;
            }
            // Starting the snapshot over would throw away one that is on its way, and under
            // a steady flood every next one would overflow too: the resync would never end.
            // Apply what comes at once instead, and let the snapshot yield to it.
            self.stats.buffer_overflows += 1;
            log::warn!(
                "{who}: over {} events or {} bytes after a snapshot's mark and no answer yet; applying them at once (counted)",
                self.config.max_buffered, self.config.max_buffered_bytes,
                who = Tracker(self.config.name.as_deref())
            );
            if let Sync::Resyncing(r) = &mut self.sync {
                r.after_mark = Some(AfterMark::default());
            }
            self.held_bytes = 0;
            for (at, held) in std::mem::take(&mut self.held) {
                self.event_after_mark(at, &held);
            }
        }
        self.event_after_mark(now, msg);
    }

    /// An event after the snapshot's mark, once they are applied at once. One for a channel
    /// the view does not hold (created before the mark, while the view was behind) waits
    /// for the snapshot to bring the channel in, within `max_buffered`; past it it is
    /// dropped, counted, and one more snapshot follows.
    fn event_after_mark(&mut self, now: Instant, msg: &Message) {
        let uid = channel::uniqueid(msg);
        let name = msg.event().map_or("", str::trim);
        let was = self.view.channel(&uid).is_some();
        if !uid.is_empty() && !was && !name.eq_ignore_ascii_case("Newchannel") {
            if self.hold(now, msg) {
                return;
            }
            self.stats.buffered_dropped += 1;
            if let Sync::Resyncing(r) = &mut self.sync {
                if r.dropped_held == 0 {
                    log::warn!(
                        "{who}: {} events ({} bytes) for channels not yet in the view held after a snapshot's mark; dropping more (counted), one more snapshot will follow",
                        self.held.len(), self.held_bytes,
                        who = Tracker(self.config.name.as_deref())
                    );
                }
                r.dropped_held += 1;
                r.again = Some(r.again.unwrap_or(0).saturating_add(1));
            }
            return;
        }
        let fx = self.view.apply(now, msg);
        let is = self.view.channel(&uid).is_some();
        let bridge =
            name.eq_ignore_ascii_case("BridgeEnter") || name.eq_ignore_ascii_case("BridgeLeave");
        // Only an event with a channel block (its state) or one that ended the channel
        // makes the view newer than the snapshot for it; others naming its Uniqueid (an
        // OriginateResponse of another client, a Rename) say nothing of its state, and the
        // snapshot's state must not be thrown away for them.
        let state_news = msg.get("ChannelState").is_some() || (was && !is);
        if let Sync::Resyncing(r) = &mut self.sync {
            if let Some(after) = &mut r.after_mark {
                if state_news {
                    after.touch(&uid, was, is, bridge);
                }
            }
        }
        self.effects(fx);
    }

    /// Holds an event until the snapshot's answer, if the held events stay within
    /// `max_buffered_events` and `max_buffered_bytes` (each a whole message, which may be
    /// large: the count alone would let 65,536 events of 1 MiB be held).
    fn hold(&mut self, now: Instant, msg: &Message) -> bool {
        let bytes = msg.retained_bytes();
        if self.held.len() >= self.config.max_buffered
            || self.held_bytes.saturating_add(bytes) > self.config.max_buffered_bytes
        {
            return false;
        }
        self.held_bytes += bytes;
        self.held.push_back((now, msg.clone()));
        true
    }

    /// Applies the held events in order (their snapshot will not be used).
    fn apply_held(&mut self) {
        self.held_bytes = 0;
        while let Some((at, msg)) = self.held.pop_front() {
            let fx = self.view.apply(at, &msg);
            self.effects(fx);
        }
    }

    /// Acts on what an event did: calls ended, originates linked or ended.
    fn effects(&mut self, fx: Effects) {
        self.follow_moves();
        if let Some((uid, value)) = fx.tagged {
            let tag = OriginateTag(value);
            self.view.set_originate(&uid, &tag);
            self.link(&tag, &uid);
        }
        for (uid, cause, tag) in fx.channels_ended {
            if self.missing.remove(&uid).is_some() {
                // Its Hangup came behind the snapshot: seen after all.
                self.stats.ended_unobserved = self.stats.ended_unobserved.saturating_sub(1);
            }
            if let Some(tag) = tag {
                self.originate_channel_ended(&tag, &uid, cause, false);
            }
        }
        // An answered Originate's channel, seen after its answer.
        if let Some(uid) = fx.seen {
            if let Some(tag) = self.answered_uids.remove(&uid) {
                if self.view.set_originate(&uid, &tag) {
                    self.link(&tag, &uid);
                }
            }
        }
        for call in fx.calls_ended {
            self.call_ended(call);
        }
    }

    /// Originates follow their call to the Linkedids its live channels move to.
    fn follow_moves(&mut self) {
        for (from, to) in self.view.take_moves() {
            for r in self.originates.values_mut() {
                r.moved(&from, &to);
            }
        }
    }

    /// A call has no live channel left: Originates whose call it was may end with it.
    fn call_ended(&mut self, call: EndedCall) {
        self.follow_moves();
        let tags: Vec<OriginateTag> = self
            .originates
            .iter()
            .filter(|(_, r)| r.calls.contains(&call.linkedid))
            .map(|(t, _)| t.clone())
            .collect();
        let ended_here = call.ended() != CallEnd::Moved;
        for tag in tags {
            let change = self.originates.get_mut(&tag).and_then(|r| {
                r.call_ended(
                    &call.linkedid,
                    call.last_cause,
                    call.unobserved(),
                    ended_here,
                )
            });
            self.originate_changed(&tag, change);
        }
        self.update(CallUpdate::CallEnded(call));
    }

    fn link(&mut self, tag: &OriginateTag, uid: &str) {
        let Some(linkedid) = self.view.channel(uid).map(|c| c.linkedid.clone()) else {
            return;
        };
        let mut was_awaited = false;
        let change = self.originates.get_mut(tag).and_then(|r| {
            was_awaited = r.uid.is_some();
            r.link(uid, &linkedid)
        });
        if was_awaited && self.originates.get(tag).is_some_and(|r| r.uid.is_none()) {
            // Linked by another channel than the answered one: that Uniqueid is awaited no
            // more.
            self.forget_awaited(tag);
        }
        self.originate_changed(tag, change);
    }

    /// Answered Originates whose channel events did not come within the grace: their
    /// answer's channel may have been lost (not tracked, its events dropped): in doubt.
    fn expire(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|at| now < at) {
            return;
        }
        self.next_expiry = None;
        let mut due = Vec::new();
        for (tag, r) in &self.originates {
            match r.wait_until {
                Some(at) if at <= now => due.push(tag.clone()),
                Some(at) => {
                    self.next_expiry = Some(self.next_expiry.map_or(at, |n| n.min(at)));
                }
                None => {}
            }
        }
        let gone: Vec<(String, Instant)> = self
            .missing
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(u, (_, noticed))| (u.clone(), *noticed))
            .collect();
        if let Some(at) = self
            .missing
            .values()
            .map(|(at, _)| *at)
            .filter(|at| *at > now)
            .min()
        {
            self.next_expiry = Some(self.next_expiry.map_or(at, |n| n.min(at)));
        }
        if !gone.is_empty() {
            log::debug!(
                "{who}: {} channels missing from the last snapshot, no Hangup within {:?}: ended unobserved",
                gone.len(),
                self.config.event_grace, who = Tracker(self.config.name.as_deref())
            );
        }
        for linkedid in self.end_detached(gone) {
            if let Some(call) = self.view.settle(&linkedid) {
                self.call_ended(call);
            }
        }
        for tag in due {
            log::debug!(
                "{who}: Originate {tag} answered, no event of its channel within {:?}: in doubt",
                self.config.event_grace,
                who = Tracker(self.config.name.as_deref())
            );
            let change = self.originates.get_mut(&tag).and_then(Record::doubt);
            self.forget_awaited(&tag);
            self.originate_changed(&tag, change);
        }
    }

    fn forget_awaited(&mut self, tag: &OriginateTag) {
        self.answered_uids.retain(|_, t| t != tag);
    }

    fn originate_channel_ended(
        &mut self,
        tag: &OriginateTag,
        uid: &str,
        cause: Option<u16>,
        unobserved: bool,
    ) {
        let view = &self.view;
        let change = self.originates.get_mut(tag).and_then(|r| {
            let call_live = r.calls.iter().any(|l| view.call(l).is_some());
            r.channel_ended(uid, cause, unobserved, call_live)
        });
        self.originate_changed(tag, change);
    }

    fn originate_changed(&mut self, tag: &OriginateTag, change: Option<OriginateState>) {
        let Some(state) = change else {
            return;
        };
        if state.is_final() {
            if let Some(r) = self.originates.remove(tag) {
                if let Some(uid) = r.uid {
                    self.answered_uids.remove(&uid);
                }
            }
        }
        let in_doubt = state == OriginateState::InDoubt;
        self.update(CallUpdate::Originate {
            tag: tag.clone(),
            state,
        });
        if in_doubt {
            match &mut self.sync {
                Sync::Live => self.start_resync(StaleReason::OriginateInDoubt),
                Sync::Resyncing(r) if r.tags == Tags::NotAsked => {
                    r.tags = Tags::Asked;
                    let epoch = r.epoch;
                    self.tags_request(epoch);
                }
                // Down: the next Ready asks; Stuck: snapshots fail anyway.
                _ => {}
            }
        }
    }

    fn try_complete(&mut self, now: Instant, token: u64) {
        let ready = self
            .inflight
            .get(&token)
            .is_some_and(|f| f.marked && f.reply.is_some());
        if !ready {
            return;
        }
        let Some(InFlight {
            purpose,
            reply: Some(reply),
            refused,
            ..
        }) = self.inflight.remove(&token)
        else {
            return;
        };
        match purpose {
            Purpose::Originate(tag) => {
                let answer = answer_of(&reply);
                if let Answer::Running(Some(uid)) = &answer {
                    if self.view.set_originate(uid, &tag) {
                        self.link(&tag, uid);
                    }
                }
                let grace = self.config.event_grace;
                let live = matches!(self.sync, Sync::Live);
                let change = self.originates.get_mut(&tag).and_then(|r| {
                    let change = r.answered(answer, now, grace);
                    if r.wait_until.is_some() && !live {
                        // The view is behind (events were lost, a snapshot is on its way):
                        // its channel's events may be among the lost ones.
                        return r.doubt();
                    }
                    change
                });
                if let Some(r) = self.originates.get(&tag) {
                    if let Some(at) = r.wait_until {
                        self.next_expiry = Some(self.next_expiry.map_or(at, |n| n.min(at)));
                        if let Some(uid) = &r.uid {
                            self.answered_uids.insert(uid.clone(), tag.clone());
                        }
                    }
                }
                self.originate_changed(&tag, change);
            }
            Purpose::Channels(epoch) | Purpose::Tags(epoch) => {
                let current = matches!(&self.sync, Sync::Resyncing(r) if r.epoch == epoch);
                if !current {
                    return;
                }
                let resp = match reply {
                    Ok(resp) => resp,
                    Err(e) => return self.snapshot_failed(e, refused),
                };
                if matches!(purpose, Purpose::Channels(_)) {
                    let after = match &mut self.sync {
                        Sync::Resyncing(r) => r.after_mark.take(),
                        _ => None,
                    };
                    let mut report = self.apply_snapshot(now, &resp, &after.unwrap_or_default());
                    report.replayed = self.held.len();
                    self.apply_held();
                    if let Sync::Resyncing(r) = &mut self.sync {
                        r.applied = Some(report);
                    }
                } else {
                    self.link_tags(&resp);
                    if let Sync::Resyncing(r) = &mut self.sync {
                        r.tags = Tags::Got;
                    }
                }
                let done = matches!(&self.sync, Sync::Resyncing(r) if r.applied.is_some() && r.tags != Tags::Asked);
                if done {
                    if let Sync::Resyncing(r) = std::mem::replace(&mut self.sync, Sync::Live) {
                        match r.again {
                            // Not live: in-doubt Originates stay in doubt (their channels'
                            // events may be among those lost) and the next one asks again.
                            Some(dropped) => {
                                self.attempts = 0;
                                self.start_resync(if r.dropped_held > 0 {
                                    StaleReason::BufferFull
                                } else {
                                    StaleReason::Gap { dropped }
                                });
                            }
                            None => self.finish_resync(*r),
                        }
                    }
                }
            }
        }
    }

    /// A snapshot (or tag lookup) failed; `refused`: the client refused it at send (a full
    /// queue, a driver gone), as opposed to the client failing it.
    fn snapshot_failed(&mut self, error: ActionError, refused: bool) {
        self.stats.snapshot_failures += 1;
        if let ActionError::TimedOut { .. } = error {
            // No answer in time (a lost action, a slow server): ask again; each try costs a
            // whole action timeout, so this cannot spin.
            log::warn!(
                "{who}: snapshot unanswered ({error}); asking again",
                who = Tracker(self.config.name.as_deref())
            );
            return self.start_resync(StaleReason::SnapshotFailed {
                attempt: self.attempts,
            });
        }
        self.attempts += 1;
        log::warn!(
            "{who}: snapshot failed ({error}); attempt {} of {MAX_SNAPSHOT_ATTEMPTS}",
            self.attempts,
            who = Tracker(self.config.name.as_deref())
        );
        if !refused && matches!(error, ActionError::Unknown(_) | ActionError::NotSent(_)) {
            // The session is going or gone: its Disconnected item (or the next Ready) leads.
            // A request refused at send is not that: the session may be up and then no such
            // item comes, so it counts as a failed attempt below instead of a wait that
            // could last for good.
            return;
        }
        if self.attempts < MAX_SNAPSHOT_ATTEMPTS {
            self.start_resync(StaleReason::SnapshotFailed {
                attempt: self.attempts,
            });
        } else {
            // Apply what was held, in order, and stay stale.
            self.sync = Sync::Stuck;
            self.apply_held();
            self.update(CallUpdate::Stale(StaleReason::SnapshotFailed {
                attempt: self.attempts,
            }));
        }
    }

    /// Applies the CoreShowChannels snapshot at its point in the stream: every event before
    /// it has been applied, and after it only those that reached the channels in `after`,
    /// which are newer than the snapshot and keep their state.
    fn apply_snapshot(
        &mut self,
        now: Instant,
        channels: &Response,
        after: &AfterMark,
    ) -> ResyncReport {
        let snapshot: BTreeMap<String, &Message> = channels
            .items()
            .iter()
            .map(|m| (channel::uniqueid(m), m))
            .filter(|(u, _)| !u.is_empty())
            .collect();
        let mut report = ResyncReport::default();
        // Calls are ended only once the whole snapshot is in: a call whose channels all
        // left the view may still be live in it, through channels adopted or moved into it
        // below, and must then be neither ended now nor a second time later.
        let mut touched = BTreeSet::new();
        // Gone while unobserved: a Hangup seen before the snapshot would have removed it.
        // Ended first, so that at the channel cap they make room for the adopted.
        // On the session whose events the view followed, a channel that hung up just before
        // the snapshot may be missing from it while its Hangup, behind in the server's
        // event queue, is still on its way: it waits `event_grace` for it. After a session
        // change the events it missed are gone for good: it ends unobserved now.
        let grace = !std::mem::replace(&mut self.fresh_session, false)
            && !self.config.event_grace.is_zero();
        let deadline = now.checked_add(self.config.event_grace).unwrap_or(now);
        // Detached by an earlier snapshot: listed again, back in the view; after a session
        // change, their Hangup will not come.
        let detached: Vec<(String, Instant)> = self
            .missing
            .iter()
            .map(|(u, (_, n))| (u.clone(), *n))
            .collect();
        let mut gone = Vec::new();
        for (uid, noticed) in detached {
            if snapshot.contains_key(&uid) {
                if self.missing.remove(&uid).is_some() {
                    // Counted ended unobserved when it went missing: it is live after all.
                    self.stats.ended_unobserved = self.stats.ended_unobserved.saturating_sub(1);
                }
                self.view.reattach(&uid);
            } else if !grace {
                gone.push((uid, noticed));
            }
        }
        touched.extend(self.end_detached(gone));
        for uid in self.view.uniqueids() {
            // Reached after the mark: alive then, and born after it if not in the snapshot.
            if snapshot.contains_key(&uid) || after.get(&uid).is_some() {
                continue;
            }
            if grace && self.view.detach(&uid) {
                // Out of the view (which then equals the snapshot), counted as ended
                // unobserved until its Hangup comes.
                self.missing.insert(uid, (deadline, now));
                self.next_expiry = Some(self.next_expiry.map_or(deadline, |n| n.min(deadline)));
                self.stats.ended_unobserved += 1;
                report.waiting_for_hangup += 1;
                continue;
            }
            if let Some(linkedid) = self.end_unobserved(&uid, now) {
                touched.insert(linkedid);
                report.ended_unobserved += 1;
            }
        }
        // Continued and adopted.
        for (uid, item) in &snapshot {
            self.view.note_cut(item);
            let bridge = channel::text(item, "BridgeId").filter(|b| !b.is_empty());
            if let Some(touch) = after.get(uid) {
                // Newer in the view; gone from it means it hung up after the mark. Its
                // channel block came with every event since; only the bridge may be news.
                if !touch.bridged {
                    self.view
                        .modify_unsettled(uid, |ch| ch.bridge = bridge.clone());
                }
                report.kept_newer += 1;
                continue;
            }
            // A channel the tracker did not see created is as old as the snapshot says.
            let created = listed_since(item, now);
            let known = self.view.modify_unsettled(uid, |ch| {
                ch.update(item, now, false);
                ch.bridge = bridge.clone();
                ch.created = ch.created.or(created);
            });
            if let Some(left) = known {
                touched.extend(left);
                report.continued += 1;
            } else if let Some(mut ch) = Channel::from_block(item, now) {
                ch.adopted = true;
                ch.created = created;
                ch.bridge = bridge;
                if self.view.insert(ch) {
                    report.adopted += 1;
                }
            }
        }
        for linkedid in touched {
            if let Some(call) = self.view.settle(&linkedid) {
                self.call_ended(call);
            }
        }
        // Channels the snapshot moved to another call take their Originates along.
        self.follow_moves();
        report
    }

    /// Ends a channel the server no longer lists, unobserved (noticed then): its call's
    /// Linkedid, for the caller to settle.
    fn end_unobserved(&mut self, uid: &str, noticed: Instant) -> Option<String> {
        let ch = self.view.channel(uid)?;
        let (last_seen, tag) = (ch.last_seen, ch.originate.clone());
        let ending = Ending::Unobserved { last_seen, noticed };
        let linkedid = self.view.end_unsettled(uid, ending)?;
        self.stats.ended_unobserved += 1;
        if let Some(tag) = tag {
            self.originate_channel_ended(&tag, uid, None, true);
        }
        Some(linkedid)
    }

    /// Ends detached channels whose Hangup did not come (each noticed gone then),
    /// unobserved (counted when detached): the Linkedids of their calls, to settle.
    fn end_detached(&mut self, gone: Vec<(String, Instant)>) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        for (uid, noticed) in gone {
            self.missing.remove(&uid);
            let Some(ch) = self.view.detached(&uid) else {
                continue;
            };
            // Events of it that lagged behind the snapshot were sent before it: it was last
            // known alive no later than the snapshot.
            let (last_seen, tag) = (ch.last_seen.min(noticed), ch.originate.clone());
            let ending = Ending::Unobserved { last_seen, noticed };
            touched.extend(self.view.end_detached(&uid, ending));
            if let Some(tag) = tag {
                self.originate_channel_ended(&tag, &uid, None, true);
            }
        }
        touched
    }

    /// Links the channels a `Status` snapshot lists with one of the tracker's tags.
    fn link_tags(&mut self, status: &Response) {
        let mut found = Vec::new();
        for item in status.items() {
            let uid = channel::uniqueid(item);
            if uid.is_empty() {
                continue;
            }
            for v in item.get_all("Variable") {
                let v = v.to_str_lossy();
                if let Some((name, value)) = v.split_once('=') {
                    if name.eq_ignore_ascii_case(&self.config.tag_variable) && !value.is_empty() {
                        found.push((uid.clone(), OriginateTag(value.to_string())));
                    }
                }
            }
        }
        for (uid, tag) in found {
            if self.view.set_originate(&uid, &tag) {
                self.link(&tag, &uid);
            }
        }
    }

    /// Both snapshots are in: in-doubt Originates are resolved, the view is live.
    fn finish_resync(&mut self, r: Resync) {
        let report = r.applied.unwrap_or_default();
        if r.tags != Tags::NotAsked {
            // What the snapshot says now is all the tracker can know.
            let tags: Vec<OriginateTag> = self
                .originates
                .iter()
                .filter(|(_, rec)| rec.state == OriginateState::InDoubt)
                .map(|(t, _)| t.clone())
                .collect();
            for tag in tags {
                let change = self.originates.get_mut(&tag).and_then(Record::resolve);
                self.originate_changed(&tag, change);
            }
        }
        self.attempts = 0;
        self.stats.resynced += 1;
        log::debug!(
            "{who}: resynced {report:?}",
            who = Tracker(self.config.name.as_deref())
        );
        self.update(CallUpdate::Resynced(report));
    }
}

/// When a channel a snapshot lists was created: `now` less the item's `Duration`
/// (`HH:MM:SS`, hours past 99 for a long call). `None` without one, or one that does not
/// parse, or one longer than `now` can go back.
fn listed_since(item: &Message, now: Instant) -> Option<Instant> {
    let text = item.get_str("Duration")?;
    let mut parts = text.trim().splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (parts.next()??, parts.next()??, parts.next()??);
    if m >= 60 || sec >= 60 {
        return None;
    }
    let secs = h.checked_mul(3600)?.checked_add(m * 60 + sec)?;
    now.checked_sub(Duration::from_secs(secs))
}

/// How the tracker's log records start: `AMI <name>: call tracker` with a name
/// ([`TrackerConfigBuilder::name`]), else `AMI call tracker`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tracker<'a>(pub(crate) Option<&'a str>);

impl std::fmt::Display for Tracker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(name) => write!(f, "AMI {}: call tracker", crate::Shown(name)),
            None => f.write_str("AMI call tracker"),
        }
    }
}
