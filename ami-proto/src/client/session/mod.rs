//! `Client`: one logical AMI session against one server, across reconnects.

mod changes;
mod connection;
mod correlate;
mod discards;
mod login;
mod overflow_log;
mod probe;
pub use probe::{READ_AHEAD_BYTES, READ_AHEAD_EVENTS};
mod reconnect;
mod timers;
mod transmit;

use super::backoff::Backoff;
use super::config::{AuthMethod, ClientConfig, EventCopy, OverflowPolicy};
use super::events::{EventQueue, Offer, Queued};
use super::output::{
    ActionError, ConnectFailure, Discard, DisconnectReason, Notice, Outcome, OutcomeKind, Output,
    Phase, ReceivedOn, Response, Status, StreamItem,
};
use super::pending::{FollowUp, FollowUpBy, Internal, Kind, Pending, PendingTable, Stage};
use super::rng::Rng;
use super::stats::Stats;
use crate::repeats::Repeats;
use crate::wire::action::{Action, ActionId, EncodeError};
use crate::wire::decoder::{Decoder, Frame, BANNER_PREFIX};
use crate::wire::message::{Message, MessageKind};
use connection::Connection;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use thiserror::Error;
use timers::{Timer, Timers};

/// Seed used when the config sets none and no adapter supplied one.
const DEFAULT_SEED: u64 = 0x5eed_a111_0000_0001;

/// Clients made without a seed so far, in this process.
static UNSEEDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The seed of a client whose config has none: a different one for each such client of
/// the process. Two clients on one Asterisk that share a seed share ActionID prefixes,
/// and Asterisk writes an `OriginateResponse` (with its ActionID) to every session that
/// reads call events: the other client's pending Originate would take it as its own. An
/// unseeded client promises no reproducibility, so the order of creation may decide.
fn unseeded() -> u64 {
    let n = UNSEEDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut rng = Rng::new(DEFAULT_SEED ^ n);
    rng.next_u64()
}

/// Most filters the client remembers to re-apply after a reconnect.
pub const MAX_FILTERS: usize = 256;

/// What happened on the transport, reported by the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input<'a> {
    /// The transport asked for by [`Output::Connect`] is open.
    Connected,
    /// The TCP connection asked for by [`Output::Connect`] is open and the adapter is now
    /// completing a TLS handshake over it; [`Input::Connected`] follows when it is done. The
    /// connect timeout keeps running: a handshake that hangs ends the attempt as
    /// [`DisconnectReason::TlsHandshakeTimeout`], so the operator knows the network was fine.
    Handshaking,
    /// The transport could not be opened, for this cause.
    ConnectFailed(ConnectFailure),
    /// Bytes arrived from the server.
    Received(&'a [u8]),
    /// The server closed the connection (read returned 0).
    Eof,
    /// The transport failed.
    TransportError(std::io::ErrorKind),
}

/// What an action the application sends changes in the session beyond its own answer, so
/// that the client keeps it for every later login (as it keeps what
/// [`Client::add_filter`] and [`Client::set_event_mask`] send).
enum SessionChange {
    /// `Action: Events` with an `EventMask`: the Login's `Events` from now on.
    EventMask(String),
    /// `Action: Filter` adding a filter: re-applied after every reconnect.
    Filter(String),
}

impl SessionChange {
    /// Reads `action`; a mask that names no event class is refused (Asterisk would ignore
    /// it without a word). An empty mask or filter changes nothing: Asterisk refuses it
    /// (`Invalid event mask`, a filter it cannot add) and the session stays as it was.
    fn of(action: &Action) -> Result<Option<SessionChange>, SendError> {
        // Values as Asterisk reads them (leading blanks skipped): `EventMask:   ` is empty.
        let value = |key| action.get(key).map(crate::wire::action::header_value);
        if action.is("Events") {
            let Some(mask) = value("EventMask").filter(|m| !m.is_empty()) else {
                return Ok(None);
            };
            if let Some(class) = crate::client::event_mask::unknown_class(mask) {
                return Err(SendError::UnknownEventClass(class.to_string()));
            }
            return Ok(Some(SessionChange::EventMask(mask.to_string())));
        }
        if action.is("Filter")
            && value("Operation").is_some_and(|op| op.eq_ignore_ascii_case("Add"))
        {
            if let Some(filter) = value("Filter").filter(|f| !f.is_empty()) {
                return Ok(Some(SessionChange::Filter(filter.to_string())));
            }
        }
        Ok(None)
    }
}

/// The CLI command whose output is the table a raw-text action answers with
/// ([`SendError::UnmatchableAnswer`]).
fn raw_text_cli(action: &str) -> &'static str {
    if action.eq_ignore_ascii_case("Queues") {
        "queue show"
    } else {
        "iax2 show netstats"
    }
}

/// Why [`Client::send_action`] refused an action. Nothing was queued or written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SendError {
    /// The write queue or the pending table is at its cap.
    #[error("queue full: {what} is at its cap of {cap}")]
    QueueFull {
        /// Which cap.
        what: FullQueue,
        /// The cap.
        cap: usize,
    },
    /// A name or value would break the wire format or Asterisk's limits.
    #[error("invalid action: {0}")]
    Invalid(EncodeError),
    /// The action carries its own `ActionID`; the client assigns them so they never collide.
    #[error("the client assigns ActionIDs; remove the ActionID field")]
    ActionIdField,
    /// `Login`, `Challenge` and `Logoff` belong to the client (use [`Client::logoff`]).
    #[error("action {0} is managed by the client")]
    Reserved(String),
    /// `IAXnetstats`, and `Queues` on Asterisk 13 and 14, are answered with raw text lines,
    /// no `Response` and no `ActionID` (chan_iax2's `manager_iax2_show_netstats`,
    /// app_queue's `manager_queues_show`; Asterisk 15 and later know no `Queues`): nothing
    /// can match the answer to the action, which would only time out. `Command` with
    /// `iax2 show netstats` or `queue show` gives the same table as its output.
    #[error("action {0} is answered with raw text and no ActionID, which cannot be matched to it; send Command `{cli}` instead", cli = raw_text_cli(.0))]
    UnmatchableAnswer(String),
    /// `Originate` without `Async: true` blocks the whole session; enable
    /// `allow_sync_originate` to send one.
    #[error("sync Originate blocks the whole AMI session; send Async: true or enable allow_sync_originate")]
    SyncOriginateRefused,
    /// An async `Originate` completes with its `OriginateResponse`, a `call` event, and the
    /// session's event mask keeps `call` events out: the answer could never arrive, and the
    /// call would be placed while the action timed out. Ask for them (`on`, or a class list
    /// with `call`; [`ClientConfig::events`](crate::ClientConfig::events) or
    /// [`Client::set_event_mask`]).
    #[error("async Originate: its OriginateResponse is a call event, and the event mask `{mask}` keeps call events out; ask for them (events on, or a class list with call)")]
    FollowUpMasked {
        /// The session's event mask.
        mask: String,
    },
    /// An event mask names a class Asterisk does not know (it would ignore it without a
    /// word; class names are lowercase).
    #[error("the event mask names `{0}`, which is no event class (Asterisk would ignore it)")]
    UnknownEventClass(String),
    /// Too many filters to re-apply.
    #[error("at most {MAX_FILTERS} filters can be installed")]
    TooManyFilters,
    /// An event mask that keeps `call` events out, while async Originates wait for their
    /// `OriginateResponse` (a call event): from the moment the server applied it, their
    /// answers could never arrive, and each would time out although its call was placed.
    /// Change the mask once they have completed (or were cancelled), or keep `call` in it.
    /// The other way round, async Originates accepted under a mask change that then never
    /// takes effect are withdrawn unsent ([`ActionError::FollowUpMasked`](crate::ActionError::FollowUpMasked)).
    #[error("the event mask `{mask}` keeps call events out, and {originates} async Originate(s) wait for their OriginateResponse, a call event; change it once they have completed, or keep call in it")]
    MaskHidesFollowUps {
        /// The mask asked for.
        mask: String,
        /// Async Originates still waiting for their answer.
        originates: usize,
    },
    /// The client has stopped (logoff, close, or a final login rejection); `reason` says
    /// why, as [`Status::Closed`] does (a Logoff asked for and not yet done: `Logoff`).
    #[error("client is closed ({reason})")]
    Closed {
        /// Why the client stopped.
        reason: DisconnectReason,
    },
}

// By hand, not `#[from]`, which would make the encoding error its `source()` as well:
// the message names it already, and a chain printer would say it twice.
impl From<EncodeError> for SendError {
    fn from(e: EncodeError) -> SendError {
        SendError::Invalid(e)
    }
}

/// Which cap refused an action, in [`SendError::QueueFull`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FullQueue {
    /// `max_pending_actions`: caller actions tracked (queued, written or gathering).
    Pending,
    /// `max_queued_actions`: caller actions waiting to be written.
    Queued,
    /// Stream marks: marks waiting in the event stream plus marked actions pending, capped
    /// by `event_queue_cap`.
    StreamMarks,
}

impl FullQueue {
    /// The name of the cap, as the config calls it (`stream_marks` for marks).
    pub fn as_str(self) -> &'static str {
        match self {
            FullQueue::Pending => "max_pending_actions",
            FullQueue::Queued => "max_queued_actions",
            FullQueue::StreamMarks => "stream_marks",
        }
    }
}

impl std::fmt::Display for FullQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Options for one action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// Deadline for the response (and list) phase; default: the config's `action_timeout`.
    /// A longer one than [`MAX_SETTING_DURATION`](crate::MAX_SETTING_DURATION) (a year) is
    /// taken as that: a deadline is `now` plus this, and `Duration::MAX` means "no deadline
    /// worth arming", not an overflow.
    pub timeout: Option<Duration>,
    /// Put a [`StreamItem::Mark`] with this value in the event stream where the action
    /// completes, so a consumer knows which events came before its answer. See
    /// [`SendOptions::with_mark`].
    pub mark: Option<u64>,
    /// Carried to the action's late answer only, without a stream mark. See
    /// [`SendOptions::with_answer_mark`].
    pub answer_mark: Option<u64>,
}

impl SendOptions {
    /// Options with a deadline.
    pub fn timeout(timeout: Duration) -> SendOptions {
        SendOptions {
            timeout: Some(timeout),
            mark: None,
            answer_mark: None,
        }
    }

    /// Also put `StreamItem::Mark { mark }` in the event stream when the action completes
    /// (whatever the outcome), after every event that arrived before its answer and before
    /// every event after it. A state kept from events (a call view) uses it to line a
    /// snapshot's answer up with the events around it. Marks are never dropped; a marked
    /// action is refused ([`SendError::QueueFull`], [`FullQueue::StreamMarks`]) while marks waiting in the
    /// stream plus marked actions pending reach `event_queue_cap`.
    pub fn with_mark(mut self, mark: u64) -> SendOptions {
        self.mark = Some(mark);
        self
    }

    /// Carry `mark` to the action's [`StreamItem::LateAnswer`](crate::StreamItem::LateAnswer)
    /// (and to [`Client::unclaimed`]'s), as [`with_mark`](Self::with_mark) does, but put no
    /// `StreamItem::Mark` in the event stream: for a caller that never sees the ActionID
    /// (an async adapter's `send_with`) and only needs to recognise a late answer. It takes
    /// no place in the event queue, so a consumer that stops reading events cannot make
    /// such actions refused. A [`with_mark`](Self::with_mark) value, if also given, is the
    /// one the late answer carries.
    pub fn with_answer_mark(mut self, mark: u64) -> SendOptions {
        self.answer_mark = Some(mark);
        self
    }

    /// The value this action's late answer carries: its [`mark`](Self::mark), else its
    /// [`answer_mark`](Self::answer_mark).
    pub fn late_answer_mark(&self) -> Option<u64> {
        self.mark.or(self.answer_mark)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Output::Connect emitted; waiting for Input::Connected.
    Connecting,
    AwaitBanner,
    /// Challenge or Login sent.
    LoggingIn,
    /// Logged in; re-applying filters.
    Configuring,
    Ready,
    /// Logoff sent; waiting for Goodbye or EOF.
    LoggingOff,
    /// Disconnected; a reconnect is scheduled.
    Backoff,
    Closed,
}

/// A sans-IO AMI client: bytes and time in; bytes, outputs and events out.
///
/// See the [crate docs](crate) for the run loop. Every method that changes state takes `now`;
/// the client never reads a clock, never touches a socket, never blocks. `Debug` shows state
/// and counters, never buffers (the unsent Login holds the secret).
pub struct Client {
    config: ClientConfig,
    state: State,
    timers: Timers,
    rng: Rng,
    counter: u64,
    /// Per-connection state, replaced whole when a session ends.
    conn: Connection,
    decoder: Decoder,
    pending: PendingTable,
    outputs: VecDeque<Output>,
    events: EventQueue,
    /// Installed filters, with the sequence number of the caller's own Filter action.
    filters: Vec<(String, u64)>,
    /// Event masks set by actions that may still be undone (see `changes`): the action's
    /// sequence number and the mask it replaced. At most one per pending action.
    mask_changes: Vec<(u64, String)>,
    /// A mask change was undone and the mask it gave way to keeps call events out: the
    /// next pump withdraws the async Originates not handed out yet.
    originates_masked: bool,
    logoff_requested: bool,
    backoff: Backoff,
    /// Marks of pending marked actions (see [`SendOptions::with_mark`]).
    marks: HashMap<ActionId, u64>,
    /// [`SendOptions::with_answer_mark`] values of pending actions without a stream mark.
    answer_marks: HashMap<ActionId, u64>,
    /// Why the last session ended, for [`Client::status`] while in backoff or closed.
    last_loss: Option<DisconnectReason>,
    stats: Stats,
    /// The runs of discarded server input, for their rate-limited log.
    burst: Repeats,
    /// The runs of event-queue overflows, for their rate-limited log.
    overflow_burst: Repeats,
    /// The runs of list items lost on the way in (any list), for their rate-limited log.
    items_lost: Repeats,
    /// The runs of items of ended lists that still come, for their rate-limited log.
    items_swallowed: Repeats,
    /// The runs of abandoned entries evicted at `max_abandoned_actions`, for their
    /// rate-limited log.
    evictions: Repeats,
    /// The runs of answers that came for evicted entries, for their rate-limited log.
    evicted_answers: Repeats,
    /// The runs of refused logins, for their rate-limited log, and the latest refusal said.
    refusals: Repeats,
    refused_with: Option<String>,
    /// The streak of tries that ended before a session was ready, and what they said.
    unreachable_runs: Repeats,
    unreachable_with: Option<String>,
    /// Bytes of the events queued during the current read that still share the decoder's
    /// buffers (see [`Message::detach`]).
    read_shared: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state)
            .field("username", &self.config.username)
            .field("connection", &self.conn.generation)
            .field("prefix", &self.conn.prefix)
            .field("transmit_len", &self.conn.transmit.bytes().len())
            .field("pending", &self.pending.user_count())
            .field("events_queued", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// How far `Timeout` (ms) in an Originate is trusted for a deadline: one day.
const MAX_ORIGINATE_TIMEOUT_MS: u64 = 86_400_000;

fn originate_budget(action: &Action, margin: Duration) -> Duration {
    let ms = action
        .get("Timeout")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(30_000)
        .min(MAX_ORIGINATE_TIMEOUT_MS);
    Duration::from_millis(ms) + margin
}

impl Client {
    /// A client that asks for its first connect right away (the first output is
    /// [`Output::Connect`]).
    pub fn new(config: ClientConfig, now: Instant) -> Client {
        let mut rng = Rng::new(config.seed.unwrap_or_else(unseeded));
        let prefix = rng.prefix();
        let events = EventQueue::new(
            config.event_queue_cap,
            config.event_queue_bytes,
            config.overflow,
            config.name.clone(),
        );
        let mut decoder = Decoder::new(config.decoder);
        decoder.set_log_name(config.name.clone());
        if config.event_copy() == EventCopy::OnTake {
            // Events wait in the queue as slices of the read buffer; whoever takes one out
            // copies it (see `Queued`), and `receive` checks that the slices pin little else.
            decoder.share_messages();
        }
        let backoff = Backoff::new(&config);
        // Sequence 0 is no action's: each is installed by the first login.
        let filters = config.filters.iter().map(|f| (f.clone(), 0)).collect();
        let mut client = Client {
            config,
            state: State::Backoff,
            timers: Timers::default(),
            rng,
            counter: 0,
            conn: Connection::first(prefix),
            decoder,
            pending: PendingTable::default(),
            outputs: VecDeque::new(),
            events,
            filters,
            mask_changes: Vec::new(),
            originates_masked: false,
            logoff_requested: false,
            backoff,
            marks: HashMap::new(),
            answer_marks: HashMap::new(),
            last_loss: None,
            stats: Stats::default(),
            burst: Repeats::default(),
            overflow_burst: Repeats::default(),
            items_lost: Repeats::default(),
            items_swallowed: Repeats::default(),
            evictions: Repeats::default(),
            evicted_answers: Repeats::default(),
            refusals: Repeats::streak(reconnect::STREAK_SUMMARY_EVERY),
            refused_with: None,
            unreachable_runs: Repeats::streak(reconnect::STREAK_SUMMARY_EVERY),
            unreachable_with: None,
            read_shared: 0,
        };
        client.start_connect(now);
        client
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// True once logged in (and filters re-applied), until the session is lost.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// True when the client has stopped for good.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Why the client refuses new actions: the reason it closed for, or `Logoff` while a
    /// Logoff asked for is under way.
    fn closed_reason(&self) -> DisconnectReason {
        if self.state != State::Closed && self.logoff_requested {
            return DisconnectReason::Logoff;
        }
        self.last_reason()
    }

    /// The reason of the last loss, or `LocalClose` before any (what `Status` reports).
    fn last_reason(&self) -> DisconnectReason {
        self.last_loss
            .clone()
            .unwrap_or(DisconnectReason::LocalClose)
    }

    /// Where the session is now. The [`Notice`]s say what happened; this says where that
    /// left the session, so an adapter can publish it without mirroring the outputs.
    pub fn status(&self) -> Status {
        let reason = || self.last_reason();
        match self.state {
            State::Connecting | State::AwaitBanner | State::LoggingIn | State::Configuring => {
                Status::Connecting
            }
            State::Ready | State::LoggingOff => Status::Ready {
                ami_version: self.conn.ami_version.clone(),
            },
            State::Backoff => Status::Disconnected {
                reason: reason(),
                retry_at: self.timers.get(Timer::Reconnect),
                breaker_open: self.backoff.is_breaker_open(),
            },
            State::Closed => Status::Closed { reason: reason() },
        }
    }

    /// The ActionID prefix of the current connection.
    pub fn action_id_prefix(&self) -> &str {
        &self.conn.prefix
    }

    // ----- inputs ---------------------------------------------------------------------

    /// Reports what happened on the transport. Never fails: problems caused by the server
    /// come out as outputs.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Connected => {
                if self.state == State::Connecting {
                    self.state = State::AwaitBanner;
                    self.timers.stop_all();
                    self.timers
                        .set(Timer::Banner, now + self.config.banner_timeout);
                    log::debug!(
                        "{who}: transport open; waiting for banner",
                        who = self.config.who()
                    );
                }
            }
            Input::Handshaking => {
                if self.state == State::Connecting {
                    self.conn.handshaking = true;
                    log::debug!(
                        "{who}: TCP connection open; TLS handshake under way",
                        who = self.config.who()
                    );
                }
            }
            Input::ConnectFailed(cause) => {
                if self.state == State::Connecting {
                    self.disconnect(now, DisconnectReason::ConnectFailed(cause));
                }
            }
            Input::Received(bytes) => self.receive(now, bytes),
            Input::Eof => {
                if self.has_transport() {
                    let reason = self.eof_reason();
                    self.disconnect(now, reason);
                }
            }
            Input::TransportError(kind) => {
                if self.has_transport() || self.state == State::Connecting {
                    let reason = if self.logoff_requested {
                        DisconnectReason::Logoff
                    } else if self.conn.server_shutdown {
                        // After `Event: Shutdown` a reset is how the shutdown ends when
                        // Asterisk closes with actions of ours still unread.
                        DisconnectReason::ServerShutdown
                    } else {
                        DisconnectReason::TransportError(kind)
                    };
                    self.disconnect(now, reason);
                }
            }
        }
    }

    fn eof_reason(&self) -> DisconnectReason {
        if self.logoff_requested {
            DisconnectReason::Logoff
        } else if self.conn.server_shutdown {
            DisconnectReason::ServerShutdown
        } else {
            DisconnectReason::Eof
        }
    }

    fn has_transport(&self) -> bool {
        matches!(
            self.state,
            State::AwaitBanner
                | State::LoggingIn
                | State::Configuring
                | State::Ready
                | State::LoggingOff
        )
    }

    fn receive(&mut self, now: Instant, mut bytes: &[u8]) {
        if !self.has_transport() {
            return;
        }
        self.stats.bytes_in += bytes.len() as u64;
        let connection = self.conn.generation;
        self.read_shared = 0;
        let queued_before = self.events.pushed();
        'read: while !bytes.is_empty() {
            let n = self.decoder.feed(bytes);
            bytes = &bytes[n..];
            loop {
                let frame = self.decoder.decode();
                // Found while skipping the rest of a dropped response, so before the frame
                // that follows it: an action's failure never comes after a later answer.
                if let Some((id, err)) = self.decoder.take_late_response_id() {
                    self.late_response_id(now, &id, err);
                }
                let Some(frame) = frame else {
                    break;
                };
                match frame {
                    Ok(Frame::Banner(b)) => self.on_banner(now, b.version().map(str::to_owned)),
                    Ok(Frame::Message(m)) => self.on_message(now, m),
                    Err(e) => self.discarded(now, Discard::Malformed(e)),
                }
                if self.conn.generation != connection {
                    // The session ended inside this read; the rest belongs to a dead link.
                    break 'read;
                }
            }
        }
        self.check_pinned(queued_before);
        if self.conn.generation == connection {
            // Answers free pipeline slots; fill them before the caller writes.
            self.pump(now);
        }
    }

    /// After a read: the events it queued as slices of the read buffer may keep the
    /// buffer's allocations alive (the buffer and its field-table arena, sized to the read).
    /// When those events are at least three quarters of what they keep alive, they stay
    /// slices (a flood of events: no copy, no allocation per event on the reader's side);
    /// otherwise (a few events among responses, list items or skipped input) they are
    /// copied out now, so queued events never pin much more than their own bytes.
    fn check_pinned(&mut self, queued_before: u64) {
        let (cut, pinned) = self.decoder.pinned();
        if cut == 0 {
            return;
        }
        if self.read_shared.saturating_mul(4) >= pinned.saturating_mul(3) {
            self.decoder.seal();
        } else {
            let n = self.events.pushed() - queued_before;
            self.events
                .detach_last(usize::try_from(n).unwrap_or(usize::MAX));
            self.decoder.unshare();
        }
        self.read_shared = 0;
    }

    /// Fires every timer and action deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in Timer::ALL {
            if !self.timers.expired(timer, now) {
                continue;
            }
            match timer {
                Timer::Connect => {
                    let reason = if self.conn.handshaking {
                        DisconnectReason::TlsHandshakeTimeout
                    } else {
                        DisconnectReason::ConnectTimeout
                    };
                    self.disconnect(now, reason)
                }
                Timer::Banner => self.disconnect(now, DisconnectReason::BannerTimeout),
                Timer::Login if self.state == State::Configuring => {
                    // Logged in; only filters are unanswered. The login did not time out,
                    // and a server that keeps a Filter unanswered must not keep the session
                    // from ever being Ready.
                    self.filters_unanswered(now);
                }
                Timer::Login => self.disconnect(now, DisconnectReason::LoginTimeout),
                Timer::Idle => self.heartbeat(now),
                Timer::Pong => {
                    log::warn!(
                        "{who}: heartbeat: nothing received within the pong deadline",
                        who = self.config.who()
                    );
                    self.disconnect(now, DisconnectReason::HeartbeatTimeout)
                }
                Timer::Reconnect => self.start_connect(now),
            }
        }
        while let Some(seq) = self.pending.pop_expired(now) {
            self.expire(now, seq);
        }
        self.pump(now);
        // Once for every action that expired unsent: one pass over the buffer.
        self.conn.transmit.flush_withdrawn();
    }

    // ----- outputs --------------------------------------------------------------------

    /// The next output; drain until [`Output::Wait`].
    pub fn poll_output(&mut self) -> Output {
        match self.outputs.pop_front() {
            Some(o) => o,
            None => Output::Wait(self.poll_timeout()),
        }
    }

    /// True when [`poll_output`](Self::poll_output) has something before its `Wait`.
    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// The next deadline at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let timers = self.timers.next_deadline();
        let actions = self.pending.next_deadline();
        match (timers, actions) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bytes to write to the transport, for an adapter that writes straight from this slice
    /// while it holds the client (`&mut`) and reports each write at once with
    /// [`advance_transmit`](Self::advance_transmit); a partial write is fine. An adapter that
    /// writes from a copy, or outside that borrow (an async write), takes its bytes with
    /// [`lend_transmit`](Self::lend_transmit) instead.
    ///
    /// Nothing is sent after its deadline: when an action's deadline passes before any of
    /// its bytes was handed out (written, or lent), [`handle_timeout`](Self::handle_timeout)
    /// withdraws them from here and the action completes `TimedOut` in [`Phase::Queued`],
    /// never written; a [`cancel`](Self::cancel) withdraws them at once. An action with any
    /// byte handed out is finished on the wire (cutting it short would corrupt the stream
    /// for every action behind it) and times out in its own phase. Bytes the transport took
    /// (into the kernel's socket buffer, or a TLS session's) are beyond recall. Once the
    /// [`Output::Wait`] deadline has passed, call `handle_timeout` before writing again: the
    /// core has no clock, so bytes written before a due deadline is handled go out that
    /// much late.
    pub fn transmit(&self) -> &[u8] {
        self.conn.transmit.bytes()
    }

    /// Whether [`transmit`](Self::transmit) holds bytes not lent (nor written): what
    /// [`lend_transmit`](Self::lend_transmit) would return. For an adapter that never lends,
    /// whether there is anything to write.
    pub(crate) fn has_unlent_transmit(&self) -> bool {
        self.conn.transmit.has_unlent()
    }

    /// Lends the adapter every byte of [`transmit`](Self::transmit) not lent before, and
    /// returns them: append them to the copy being written. For an adapter that writes
    /// outside its borrow of the client (an async write from a copy, with the client's lock
    /// released). The core never withdraws a lent byte, so the copy never goes stale; report
    /// each write with [`advance_transmit`](Self::advance_transmit) as before. An adapter that
    /// drops the unwritten rest of its copy (the write failed, or it wants bytes whose
    /// deadline passed withdrawn, or a cancelled action's) gives them back with
    /// [`unlend_transmit`](Self::unlend_transmit) first.
    ///
    /// Lent bytes are what decides an action's fate when its session is lost: one whose last
    /// byte was never lent (nor written) cannot have reached the server whole, so it fails
    /// [`ActionError::NotSent`] (safe to send again); one whose bytes were all lent may have
    /// run, and fails [`ActionError::Unknown`]. The core cannot tell lent from written, so an
    /// adapter that is not writing at that moment gives back its unwritten rest before any
    /// call that may end the session: [`handle_input`](Self::handle_input) (received bytes
    /// end it too: an event queue overflowing under `CloseSession`, a protocol error),
    /// [`handle_timeout`](Self::handle_timeout), [`close`](Self::close); then those actions
    /// fail `NotSent`, exactly. Call `handle_timeout` first whenever
    /// [`poll_timeout`](Self::poll_timeout) is at or before now, so that no byte of an action
    /// already due is lent.
    pub fn lend_transmit(&mut self) -> &[u8] {
        let Client { conn, pending, .. } = self;
        conn.transmit.lend(|seq| {
            if let Some(p) = pending.get_mut(seq) {
                p.lent = true;
            }
        })
    }

    /// Gives back the lent bytes of [`transmit`](Self::transmit) not reported written: the
    /// adapter dropped the rest of its copy and will not write it. Its actions are the
    /// core's again: a deadline or a [`cancel`](Self::cancel) withdraws them, a session lost
    /// fails them [`ActionError::NotSent`], and a cancelled one (lent when it was cancelled)
    /// is withdrawn now, as is one the client no longer tracks (past its deadline or its
    /// grace period, or forgotten at `max_abandoned_actions`). The next [`lend_transmit`](Self::lend_transmit) lends again what is
    /// left, from the first unwritten byte. A no-op when nothing is lent beyond what was
    /// written.
    pub fn unlend_transmit(&mut self) {
        let Client {
            config,
            conn,
            pending,
            stats,
            ..
        } = self;
        let who = config.who();
        let mut gone = Vec::new();
        conn.transmit.unlend(|seq| {
            let Some(p) = pending.get_mut(seq) else {
                // Its entry is gone while its bytes were lent (an abandoned entry evicted at
                // `max_abandoned_actions`, or past its grace; a client's own action past its
                // deadline): nobody waits for it, and it must not go out now.
                gone.push(seq);
                return;
            };
            p.lent = false;
            if matches!(p.stage, Stage::Abandoned { .. }) {
                // Its caller was told (cancelled, or timed out while lent): nothing will
                // answer bytes that never leave, so the entry goes with them.
                gone.push(seq);
            }
        });
        if gone.is_empty() {
            return;
        }
        for seq in gone {
            match pending.remove(seq) {
                Some(p) => log::debug!(
                    "{who}: action {} withdrawn: given back unsent after it ended",
                    p.id
                ),
                None => log::debug!(
                    "{who}: action #{seq} withdrawn: given back unsent after it was forgotten"
                ),
            }
            conn.transmit.withdraw(seq);
            stats.actions_withdrawn += 1;
        }
        conn.transmit.flush_withdrawn();
    }

    /// Marks `n` bytes of [`transmit`](Self::transmit) as written: taken by the transport
    /// (counted in [`Stats::bytes_out`]). From then on the actions they belong to are
    /// finished on the wire, whatever their deadlines. Written bytes count as lent (an
    /// adapter that writes straight from `transmit` never lends).
    pub fn advance_transmit(&mut self, n: usize) {
        let Client {
            conn,
            pending,
            stats,
            ..
        } = self;
        let n = conn.transmit.advance(n, |seq| {
            if let Some(p) = pending.get_mut(seq) {
                p.lent = true;
                if matches!(p.kind, Kind::User { .. }) {
                    stats.actions_written += 1;
                }
            }
        });
        stats.bytes_out += n as u64;
    }

    /// Actions withdrawn from [`transmit`](Self::transmit) so far, never sent: their
    /// deadline passed, or their caller cancelled them, while none of their bytes was
    /// handed out (also [`Stats::actions_withdrawn`]). Lent bytes are never withdrawn, so an
    /// adapter writing from a copy it took with [`lend_transmit`](Self::lend_transmit) need
    /// not watch this.
    pub fn actions_withdrawn(&self) -> u64 {
        self.stats.actions_withdrawn
    }

    /// The next item of the event stream: an event, a gap notice where events were dropped,
    /// or a session boundary (`Ready`, `Disconnected`). The queue is bounded; the reader
    /// never waits for this call.
    pub fn poll_event(&mut self) -> Option<StreamItem> {
        self.events.pop_queued().map(Queued::into_item)
    }

    /// The next item of the event stream as it waits in the queue: an event in it may still
    /// share the buffer it was read into, and [`Queued::into_item`] copies it out. For an
    /// adapter whose consumer runs on another thread than the reader: take items under the
    /// lock with this, call `into_item` on the consumer's thread, so that each event is
    /// allocated and freed by one thread. Otherwise the same as
    /// [`poll_event`](Self::poll_event).
    pub fn poll_queued(&mut self) -> Option<Queued> {
        self.events.pop_queued()
    }

    /// Moves up to `max_items` items of the event stream, as they wait in the queue (see
    /// [`poll_queued`](Self::poll_queued)), to the back of `out`, stopping once their events'
    /// wire bytes reach `max_bytes`; returns how many. The same items, in the same order,
    /// as that many `poll_queued` calls; but when `out` is empty and everything queued is
    /// within both limits, the queue's buffer itself is handed over in one move: an adapter
    /// whose reader runs on its own thread then hands a read's worth of events to its
    /// consumer without moving them one by one under its locks.
    pub fn take_queued(
        &mut self,
        out: &mut std::collections::VecDeque<Queued>,
        max_items: usize,
        max_bytes: usize,
    ) -> usize {
        self.events.take_batch(out, max_items, max_bytes)
    }

    /// Messages decoded so far (a cheap counter for per-step message budgets).
    pub fn messages_in(&self) -> u64 {
        self.stats.messages_in
    }

    /// Moves up to `max` stream items into `out` and returns how many: one call for a batch,
    /// so an adapter takes its lock once per batch instead of once per event.
    pub fn poll_events(&mut self, out: &mut Vec<StreamItem>, max: usize) -> usize {
        crate::client::events::take_into(out, max, || self.poll_event())
    }

    /// The application will never read the event stream again (`ami-async` calls this when
    /// its `Events` is dropped, e.g. `let (ami, _) = ami_tokio::spawn(..)` by a program that
    /// only sends actions). What the queue holds is freed now, and `unread` (items the
    /// adapter had taken out of the queue, [`poll_queued`](Self::poll_queued) /
    /// [`take_queued`](Self::take_queued), that nobody will read either) is given back; their
    /// events are counted in [`Stats::events_dropped`]. From here on events are discarded as
    /// they arrive, counted, without a gap or an overflow warning (nobody is behind), and
    /// session markers and marks are not kept. One log line says so. Actions are not
    /// affected: list items, an async Originate's `OriginateResponse` and answers are taken
    /// by their actions before the stream.
    pub fn close_event_stream(&mut self, unread: impl IntoIterator<Item = Queued>) {
        let handed = self.close_reader(unread);
        if let Some(freed) = handed {
            log::info!(
                "{who}: event stream closed by the application: {freed} events not read freed; \
                 events from now on are discarded as they arrive (counted in \
                 Stats::events_dropped)",
                who = self.config.who()
            );
        }
    }

    /// `n` events taken out of the queue that nobody will read: counted as dropped.
    pub(crate) fn count_unread(&mut self, n: u64) {
        self.events.count_unread(n);
    }

    /// [`close_event_stream`](Self::close_event_stream) without its log line (a fleet says
    /// it once for all its servers): the events freed, `None` if the stream was closed
    /// already (`unread` is still counted).
    pub(crate) fn close_reader(&mut self, unread: impl IntoIterator<Item = Queued>) -> Option<u64> {
        // A late answer counts as an event does: the queue held and capped it as one.
        let handed = unread
            .into_iter()
            .filter(|q| matches!(q.0, StreamItem::Event(_) | StreamItem::LateAnswer { .. }))
            .count() as u64;
        self.events.count_unread(handed);
        if self.events.is_unread() {
            return None;
        }
        Some(self.events.close_reader() + handed)
    }

    /// Events waiting in the queue.
    pub fn events_queued(&self) -> usize {
        self.events.len()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.decoder = self.decoder.stats();
        s.pending = self.pending.user_count();
        s.abandoned_actions = self.pending.abandoned();
        s.queued = self.pending.queued();
        s.in_flight = self.pending.on_wire();
        s.event_queue_len = self.events.len();
        s.event_queue_bytes = self.events.bytes();
        s.event_queue_allocated = self.events.allocated();
        s.decoder_allocated = self.decoder.allocated();
        s.decoder_buffered = self.decoder.buffered();
        s.transmit_pending = self.conn.transmit.bytes().len();
        s.events_dropped = self.events.dropped_total;
        s
    }

    // ----- caller actions ---------------------------------------------------------------

    /// Queues an action; it is written when the session is Ready and the pipeline has room.
    /// Its result arrives once as [`Notice::Completed`] with the returned ID.
    pub fn send_action(&mut self, now: Instant, action: Action) -> Result<ActionId, SendError> {
        self.send_action_with(now, action, SendOptions::default())
    }

    /// [`send_action`](Self::send_action) with options.
    pub fn send_action_with(
        &mut self,
        now: Instant,
        action: Action,
        options: SendOptions,
    ) -> Result<ActionId, SendError> {
        if self.state == State::Closed || self.logoff_requested {
            return Err(SendError::Closed {
                reason: self.closed_reason(),
            });
        }
        for reserved in ["Login", "Logoff", "Challenge"] {
            if action.is(reserved) {
                return Err(SendError::Reserved(reserved.to_string()));
            }
        }
        if action.get("ActionID").is_some() {
            return Err(SendError::ActionIdField);
        }
        if action.is("IAXnetstats") || action.is("Queues") {
            return Err(SendError::UnmatchableAnswer(action.name().to_string()));
        }
        let mut follow_up = None;
        let mut timeout = options
            .timeout
            .unwrap_or(self.config.action_timeout)
            .min(super::config::MAX_SETTING_DURATION);
        let mut sync = false;
        if action.is("Originate") {
            let budget = originate_budget(&action, self.config.originate_margin);
            if action.expects_originate_response() {
                follow_up = Some(FollowUp {
                    by: FollowUpBy::Event(FollowUp::ORIGINATE),
                    budget,
                });
            } else if self.config.allow_sync_originate {
                sync = true;
                timeout = timeout.max(budget);
            } else {
                return Err(SendError::SyncOriginateRefused);
            }
        } else if let Some(by) = FollowUp::of(&action) {
            // Written in the same breath as the response: its own deadline is enough.
            follow_up = Some(FollowUp {
                by,
                budget: timeout,
            });
        }
        if self.pending.user_count() >= self.config.max_pending_actions {
            return Err(SendError::QueueFull {
                what: FullQueue::Pending,
                cap: self.config.max_pending_actions,
            });
        }
        if self.pending.queued() >= self.config.max_queued_actions {
            return Err(SendError::QueueFull {
                what: FullQueue::Queued,
                cap: self.config.max_queued_actions,
            });
        }
        if options.mark.is_some()
            && self.events.marks() + self.marks.len() >= self.config.event_queue_cap
        {
            return Err(SendError::QueueFull {
                what: FullQueue::StreamMarks,
                cap: self.config.event_queue_cap,
            });
        }
        let (seq, id) = self.next_id();
        action.validate(Some(&id))?;
        // After the validation: an action that would break the wire is refused as that,
        // whatever else is wrong with it.
        // An OriginateResponse is a call event, which the mask can keep out; the others are
        // written to the session directly, past the mask.
        if follow_up.is_some_and(|f| f.is_originate())
            && !crate::client::event_mask::admits_call(&self.config.events)
        {
            return Err(SendError::FollowUpMasked {
                mask: self.config.events.clone(),
            });
        }
        let session_change = SessionChange::of(&action)?;
        if matches!(session_change, Some(SessionChange::Filter(_)))
            && self.filters.len() >= MAX_FILTERS
        {
            return Err(SendError::TooManyFilters);
        }
        if let Some(SessionChange::EventMask(mask)) = &session_change {
            let originates = self.pending.originates_waiting();
            if originates > 0 && !crate::client::event_mask::admits_call(mask) {
                return Err(SendError::MaskHidesFollowUps {
                    mask: mask.clone(),
                    originates,
                });
            }
        }
        if let Some(mark) = options.mark {
            self.marks.insert(id.clone(), mark);
        } else if let Some(mark) = options.answer_mark {
            self.answer_marks.insert(id.clone(), mark);
        }
        log::debug!(
            "{who}: action {} queued as {id}",
            action.name(),
            who = self.config.who()
        );
        let kind = Kind::User {
            follow_up,
            sync_originate: sync,
        };
        self.pending.insert(
            seq,
            Pending {
                action: Some(action),
                ..Pending::new(id.clone(), kind, now + timeout)
            },
        );
        // Kept for every later login, whichever way the action came: a mask the core does
        // not know would still refuse async Originates, and a filter it does not know would
        // be gone after the next reconnect without a word.
        match session_change {
            Some(SessionChange::EventMask(mask)) => self.change_mask(seq, mask),
            Some(SessionChange::Filter(filter)) => self.filters.push((filter, seq)),
            None => {}
        }
        self.pump(now);
        Ok(id)
    }

    /// Cancels an action; it completes [`ActionError::Cancelled`] now. Returns false if `id`
    /// is not a pending action of the caller's.
    ///
    /// One none of whose bytes was handed out (queued, or encoded but neither written nor
    /// lent: see [`lend_transmit`](Self::lend_transmit)) never goes out: its bytes leave
    /// [`transmit`](Self::transmit) at once, the others' stay as they were. One with bytes
    /// handed out may reach the server whole (cutting it short would corrupt the stream):
    /// its late response and list items are swallowed until its grace period
    /// (`action_timeout`, counted from the last item of a list that keeps coming) ends
    /// (its first response, the server's word on what it did, is reported in the event
    /// stream as [`StreamItem::LateAnswer`]; the action stays `Cancelled`)
    /// (a sync Originate's response until its own deadline, then for a grace period: its
    /// call blocks the server's session that long, and the heartbeat waits for it too),
    /// while an async Originate's `OriginateResponse` goes to the event stream, whenever it
    /// comes (the call may ring: that event says how it ended, as it does to every other
    /// session reading call events); should the adapter give its lent bytes back unwritten
    /// ([`unlend_transmit`](Self::unlend_transmit)), they are withdrawn then. The same holds
    /// for an action that timed out. Such entries are capped by
    /// [`max_abandoned_actions`](crate::ClientConfigBuilder::max_abandoned_actions): past it
    /// the oldest is forgotten early, and its late answers are dropped and counted
    /// ([`Stats::evicted_answers_dropped`]) all the same.
    ///
    /// The client's own actions (its Login, the heartbeat's Ping, the Logoff, filters it
    /// re-applies) are not the caller's to cancel: false, and they go on.
    pub fn cancel(&mut self, now: Instant, id: &ActionId) -> bool {
        let Some(seq) = self.pending.lookup(id.as_bytes()) else {
            return false;
        };
        if !self
            .pending
            .get_mut(seq)
            .is_some_and(|p| matches!(p.kind, Kind::User { .. }))
        {
            return false;
        }
        match self.pending.stage(seq) {
            Some(Stage::Queued) => {
                self.undo_session_change(seq, changes::Undo::NeverSent);
                self.finish(now, seq, Err(ActionError::Cancelled));
                true
            }
            Some(Stage::Written)
                if self
                    .pending
                    .get_mut(seq)
                    .is_some_and(|p| !p.lent && matches!(p.kind, Kind::User { .. })) =>
            {
                // Nobody holds a copy of unlent bytes: they can go now, and with them any
                // chance of an answer, so the entry goes too.
                self.conn.transmit.withdraw(seq);
                self.conn.transmit.flush_withdrawn();
                self.stats.actions_withdrawn += 1;
                log::debug!(
                    "{who}: action {id} withdrawn: cancelled before any of it was handed out",
                    who = self.config.who()
                );
                self.undo_session_change(seq, changes::Undo::NeverSent);
                self.finish(now, seq, Err(ActionError::Cancelled));
                true
            }
            Some(stage @ (Stage::Written | Stage::List | Stage::FollowUp)) => {
                // A written sync Originate still blocks the server's session until its call
                // is answered or fails: the heartbeat must not take that silence for a
                // dead link now that nobody waits for the answer. Its entry keeps the
                // Originate's deadline, and with it the heartbeat's wait, until its late
                // answer comes or the entry ends otherwise (the link lost, its bytes given
                // back unwritten).
                let blocking = self
                    .pending
                    .get_mut(seq)
                    .filter(|p| stage == Stage::Written && p.is_sync_originate())
                    .map(|p| p.deadline);
                self.report_until(now, seq, Err(ActionError::Cancelled), false, blocking);
                true
            }
            _ => false,
        }
    }

    /// Takes back the outcome of an action whose caller will never take it (an async
    /// adapter's future dropped after the outcome had come, before it was polled), so that
    /// what it carried is not lost unsaid. `id` is the action's ID and `mark` the
    /// [`SendOptions::with_mark`] value it was sent with (forgotten here once it completed,
    /// so the caller gives it back).
    ///
    /// An outcome that holds the server's answer (`Ok`, [`ActionError::Server`], or one
    /// that failed after the answer came: [`ActionError::TimedOut`] in a list or follow-up
    /// phase, [`ActionError::ListIncomplete`]) puts its first response in the event stream
    /// as [`StreamItem::LateAnswer`] with `id` and `mark`, as the answer to an action
    /// cancelled before it came would be: what the server did, for a caller that never
    /// read it. It is queued as such a late answer is
    /// (caps, overflow policy), but not counted in `Stats::late_answers_dropped`: it came
    /// in time. Then an async Originate's `OriginateResponse` goes to the event stream as an
    /// event, as it does for an Originate cancelled before its answer came (the call was
    /// placed; that event says how it ended). Both only while the session that received
    /// them is still the current one and Ready: after a reconnect they would follow the new
    /// session's `Ready`, as if this session had sent them (so an async Originate's
    /// [`ActionError::FollowUpLost`], whose session is gone, reports nothing). They take
    /// their place in the stream now, after the events that came after them. Any other
    /// outcome (timed out before the response, cancelled, never sent, unknown, a list
    /// overflow) holds no answer to report (a late one, if it comes, is reported on its
    /// own); anything else an outcome holds (list items, the `Complete`) was its caller's
    /// alone and goes with it (the action is counted by its outcome already).
    pub fn unclaimed(&mut self, now: Instant, id: &ActionId, mark: Option<u64>, outcome: Outcome) {
        let answer = match outcome {
            Ok(response) => response,
            Err(ActionError::Server(response))
            | Err(ActionError::TimedOut {
                partial: Some(response),
                ..
            })
            | Err(ActionError::ListIncomplete {
                partial: response, ..
            }) => *response,
            Err(_) => return,
        };
        let Response {
            response,
            follow_up,
            received_on,
            ..
        } = answer;
        if received_on != self.conn.received_on() || self.conn.ready_since.is_none() {
            return;
        }
        log::debug!(
            "{}: the answer to {id} goes to the event stream: its caller never took it",
            self.config.who()
        );
        self.queue_late_answer(now, id.clone(), mark, response);
        // After its answer, as it came; not at all if that answer closed the session
        // (close-session overflow): `release_follow_up` checks the session again.
        if let Some(event) = follow_up {
            self.release_follow_up(now, *event, received_on);
        }
    }

    /// Installs an event filter (`Action: Filter`, `Operation: Add`) now and after every
    /// reconnect. Filters can only be removed by reconnecting, as in Asterisk. The same
    /// action sent through [`send_action`](Self::send_action) is kept the same way; one the
    /// server refuses (an empty filter, a regex it cannot compile) is not kept, nor one whose
    /// action never left (cancelled, or past its deadline, before any of it was handed out).
    pub fn add_filter(&mut self, now: Instant, filter: &str) -> Result<ActionId, SendError> {
        let action = Action::new("Filter")
            .field("Operation", "Add")
            .field("Filter", filter);
        self.send_action(now, action)
    }

    /// Changes the event mask now (`Action: Events`) and for every later login. The same
    /// action sent through [`send_action`](Self::send_action) is kept the same way. The new
    /// mask is the session's from the moment it is queued (later sends are checked against
    /// it); if the server refuses it, or its action never leaves (cancelled, or past its
    /// deadline, before any of it was handed out), the mask it replaced comes back. A mask
    /// that keeps `call` events out is refused while async Originates wait for their
    /// `OriginateResponse` ([`SendError::MaskHidesFollowUps`]).
    pub fn set_event_mask(&mut self, now: Instant, mask: &str) -> Result<ActionId, SendError> {
        self.send_action(now, Action::new("Events").field("EventMask", mask))
    }

    /// Logs off: queued actions are not sent, written ones still get their responses, then
    /// `Logoff` is sent and the client closes on `Goodbye` (or EOF), or after
    /// `logoff_timeout` (5 s) without either. No reconnect follows.
    /// An async Originate whose call is still being placed is not waited for (its ring
    /// timeout can be long): unless its `OriginateResponse` comes before the server's
    /// Goodbye, it fails [`ActionError::FollowUpLost`] with the server's acceptance. To learn
    /// how such calls end, await them before logging off.
    pub fn logoff(&mut self, now: Instant) {
        if self.state == State::Closed || self.logoff_requested {
            return;
        }
        self.logoff_requested = true;
        self.fail_queued(now, DisconnectReason::Logoff);
        if matches!(self.state, State::Ready | State::Configuring) {
            self.state = State::LoggingOff;
            self.send_internal(now, Internal::Logoff, Action::new("Logoff"));
        } else {
            self.disconnect(now, DisconnectReason::Logoff);
        }
    }

    /// Closes at once, without Logoff: every pending action fails now.
    pub fn close(&mut self, now: Instant) {
        if self.state != State::Closed {
            self.logoff_requested = false;
            self.disconnect(now, DisconnectReason::LocalClose);
        }
    }

    // ----- internals ------------------------------------------------------------------

    fn next_id(&mut self) -> (u64, ActionId) {
        self.counter += 1;
        let seq = self.counter;
        (seq, ActionId::generated(&self.conn.prefix, seq))
    }

    fn start_connect(&mut self, now: Instant) {
        self.state = State::Connecting;
        self.stats.connects += 1;
        self.timers.stop_all();
        self.timers
            .set(Timer::Connect, now + self.config.connect_timeout);
        self.outputs.push_back(Output::Connect);
    }

    /// Queues news for the application.
    fn notify(&mut self, notice: Notice) {
        self.outputs.push_back(Output::Notice(notice));
    }

    fn send_internal(&mut self, now: Instant, which: Internal, action: Action) {
        let (seq, id) = self.next_id();
        let name = action.name().to_string();
        if let Err(e) = self
            .conn
            .transmit
            .push(seq, |buf| action.encode(Some(&id), buf))
        {
            // Only reachable through config values, which the builder checks.
            log::error!(
                "{who}: cannot encode internal {name}: {e}",
                who = self.config.who()
            );
            return;
        }
        log::debug!(
            "{who}: internal {name} sent as {id}",
            who = self.config.who()
        );
        let timeout = match which {
            Internal::Logoff => self.config.logoff_timeout,
            _ => self.config.action_timeout,
        };
        let deadline = now + timeout;
        self.pending.insert(
            seq,
            Pending {
                stage: Stage::Written,
                written_at: Some(now),
                ..Pending::new(id, Kind::Internal(which), deadline)
            },
        );
    }

    /// Writes queued actions while the session is Ready and the pipeline has room.
    fn pump(&mut self, now: Instant) {
        if self.originates_masked {
            self.withdraw_masked_originates();
        }
        if self.state != State::Ready {
            return;
        }
        while self.pending.on_wire() < self.config.pipeline_depth {
            // A mask change that expired unwritten just below may have brought back a mask
            // that keeps call events out: the Originates queued behind it must not go.
            if self.originates_masked {
                self.withdraw_masked_originates();
            }
            let Some(seq) = self.pending.pop_queued() else {
                break;
            };
            let Some(p) = self.pending.get_mut(seq) else {
                continue;
            };
            if p.deadline <= now {
                // Its deadline passed while it waited (its deadline has not surfaced yet): an
                // action is never written after its caller was told, or could be told, that
                // it timed out. It ends unwritten and the slot goes to the next one.
                self.expire_unwritten(seq);
                continue;
            }
            let Some(action) = p.action.take() else {
                self.pending.remove(seq);
                continue;
            };
            p.written_at = Some(now);
            // `send_action_with` validated it with this ID before queueing it.
            let id = &p.id;
            self.conn
                .transmit
                .push(seq, |buf| action.encode_validated(Some(id), buf));
            self.pending.set_stage(seq, Stage::Written, true);
        }
    }
}
