//! # ami-proto: the Asterisk Manager Interface as a state machine
//!
//! `ami-proto` is everything about AMI that is not I/O: the decoder, the encoder, login,
//! ActionID correlation, event lists, async Originate, timers, heartbeat and reconnect. It
//! owns **no socket, no clock, no thread and no runtime**. Bytes and `now: Instant` go in;
//! bytes to write, outputs, events and the next deadline come out. Nothing in it can block,
//! so the loop that drives it cannot be blocked by it. The adapters (`ami-tokio`,
//! `ami-async-std`, `ami-mio`) hold the sockets, timers, channels and the clock around it and
//! no protocol logic; tests drive it on virtual time with `ami-sim`.
//!
//! ```text
//!              handle_input(now, Received(bytes))        transmit() / advance_transmit(n)
//!   socket ──────────────────────────────►┌──────────┐──────────────────────────────► socket
//!   clock  ── handle_timeout(now) ───────►│  Client  │── poll_output(): Connect, Close,
//!   caller ── send_action(now, action) ──►└──────────┘   Wait(deadline) for the adapter;
//!                                               │        Notice(Ready | Completed |
//!                                               │        Disconnected | Closed) for the app
//!                                               ├──────► poll_event(): Event | Gap
//!                                               └──────► status(): where the session is
//! ```
//!
//! ## The run loop
//!
//! 1. Build a [`ClientConfig`] (the builder refuses settings that cannot work) and create a
//!    [`Client`] with the current time. Its first output is [`Output::Connect`].
//! 2. Drain [`Client::poll_output`] until it returns [`Output::Wait`]:
//!    - `Connect`: open a transport; report [`Input::Connected`] or [`Input::ConnectFailed`]
//!      with its [`ConnectFailure`];
//!    - `Close`: drop the transport;
//!    - `Notice(n)`: session news ([`Notice::Ready`], [`Notice::Completed`],
//!      [`Notice::Disconnected`], [`Notice::Closed`]): hand it to your application as it is.
//!
//!    [`Client::status`] answers "where is the session now" at any time, so an adapter that
//!    publishes a status needs no copy of these outputs.
//! 3. Write [`Client::transmit`] to the transport and report how much it took with
//!    [`Client::advance_transmit`] (partial writes are normal). Write from the slice
//!    itself; an adapter that writes from a copy later (an async write) takes its copy
//!    with [`Client::lend_transmit`] instead, and gives back what it drops unwritten with
//!    [`Client::unlend_transmit`]. The core withdraws the bytes of an action none of whose
//!    bytes was handed out (lent or written) when its deadline passes (nothing is sent
//!    after its deadline) or its caller cancels it, and fails it
//!    [`ActionError::NotSent`] when the session is lost before its last byte was handed out.
//! 4. Hand your consumer the events from [`Client::poll_event`] when it asks for them. The
//!    queue is bounded in events and in bytes; when the consumer is behind, events are
//!    dropped by the configured [`OverflowPolicy`] and a [`StreamItem::Gap`] says how many.
//!    Server input thrown away (over-long lines, huge or broken messages, messages nobody
//!    can use) shows up in stream order as [`StreamItem::Discarded`]. The reader never waits.
//!    Session boundaries travel in the same stream, in order between the events:
//!    [`StreamItem::Ready`] opens every session and [`StreamItem::Disconnected`] (with the
//!    reason) marks where one was lost, so a consumer knows where it missed events nobody
//!    can count. The answer to an action that ended without it (timed out, cancelled once
//!    written) comes here too, as [`StreamItem::LateAnswer`] with the action's ID: what the
//!    server did, while the action keeps its error. A program with no consumer at all (it
//!    only sends actions) says so with
//!    [`Client::close_event_stream`]: the queue then keeps nothing, and every event is
//!    counted as dropped.
//! 5. Sleep until bytes arrive ([`Input::Received`], [`Input::Eof`],
//!    [`Input::TransportError`]), the caller sends an action, or the deadline from `Wait`
//!    passes ([`Client::handle_timeout`]). Then go to 2.
//!
//! ```
//! use ami_proto::{Action, Client, ClientConfig, Input, Notice, Outcome, Output};
//! use std::time::{Duration, Instant};
//!
//! let config = ClientConfig::builder("admin", "amp111").seed(7).build()?;
//! let mut now = Instant::now(); // the caller's clock; tests use virtual time
//! let mut client = Client::new(config, now);
//! let ping = client.send_action(now, Action::new("Ping"))?; // queued until Ready
//!
//! // A scripted server: answer whatever the client wrote, echoing its ActionID.
//! let mut server = |wire: &[u8]| -> Vec<u8> {
//!     let text = String::from_utf8_lossy(wire);
//!     let mut reply = String::new();
//!     for block in text.split("\r\n\r\n").filter(|b| !b.is_empty()) {
//!         let id = block.lines().find_map(|l| l.strip_prefix("ActionID: ")).unwrap_or("");
//!         if block.starts_with("Action: Login") {
//!             reply += &format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n");
//!         } else if block.starts_with("Action: Ping") {
//!             reply += &format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nTimestamp: 1.5\r\n\r\n");
//!         }
//!     }
//!     reply.into_bytes()
//! };
//!
//! let mut pong = None;
//! for _round in 0..4 {
//!     loop {
//!         match client.poll_output() {
//!             Output::Connect => {
//!                 client.handle_input(now, Input::Connected);
//!                 client.handle_input(now, Input::Received(b"Asterisk Call Manager/11.0.0\r\n"));
//!             }
//!             Output::Notice(Notice::Completed { id, outcome }) if id == ping => {
//!                 pong = Some(outcome)
//!             }
//!             Output::Wait(_) => break,
//!             _ => {}
//!         }
//!     }
//!     let written = client.transmit().to_vec();
//!     client.advance_transmit(written.len());
//!     now += Duration::from_millis(1);
//!     let reply = server(&written);
//!     client.handle_input(now, Input::Received(&reply));
//! }
//! let Some(Ok(response)) = pong else { panic!("no pong: {pong:?}") };
//! assert_eq!(response.message().get_str("Ping"), Some("Pong"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Time
//!
//! Every call that changes state takes `now`. The client never reads a clock; randomness
//! (reconnect jitter, ActionID prefixes) comes from [`ClientConfigBuilder::seed`], so a test
//! with a fixed seed can assert exact reconnect times. Timers: connect, banner, login,
//! heartbeat idle, pong deadline, reconnect, and one deadline per action (O(1) per action
//! when actions share a timeout, O(log n) otherwise; stale entries are skipped lazily and
//! compacted). [`Output::Wait`] carries the earliest of them.
//!
//! ## Limits
//!
//! Every buffer and queue is capped, with a default and a reason in its doc:
//! [`DecoderLimits`] (line, message, fields, legacy `Follows` output, buffer), and in
//! [`ClientConfigBuilder`] the write queue, pending actions, pipeline depth, list items and
//! bytes, and the event queue in events and bytes. Memory is counted in bytes a message keeps
//! alive ([`Message::retained_bytes`]): a message handed to the application owns its own
//! bytes and never pins the larger read buffer it came from, so a slow consumer holding small
//! events holds only them. (Events still waiting in the queue are, by default, slices of the
//! read buffers they came in, copied out when taken ([`EventCopy::OnTake`]); the queue's byte
//! cap counts what each will own once taken, so a full queue can keep more than its cap
//! alive in shared read buffers. [`EventCopy::OnDecode`] copies at once.) Settings that cannot
//! work (a buffer below the largest message, a queue or list cap below one maximal message, a
//! zero cap, a pipeline larger than the pending table) are refused by `build()` with a typed
//! error.
//!
//! Liveness counts progress, not bytes: with no complete event or response for
//! `ping_interval` the client sends a Ping, and with none within `pong_timeout` after it the
//! session is closed and reconnected, however many bytes trickle in meanwhile.
//!
//! ## Action outcomes, across reconnects
//!
//! Each [`ActionId`] completes exactly once ([`Notice::Completed`]). Only a server message
//! makes an [`Outcome`] `Ok` or an [`ActionError::Server`]. Nothing is sent after its
//! deadline: an action whose deadline passes before any of its bytes was handed to the
//! transport (queued while the connection was down or the pipeline full, or encoded but
//! stuck behind a server that stopped reading) ends [`ActionError::TimedOut`] with
//! [`Phase::Queued`] and is never written later; one with some bytes handed out is finished
//! on the wire, so that the stream stays whole. After a disconnect, an action that was never written stays queued
//! until its deadline and is written on the next connection; one that was handed to the
//! transport whole fails at once with [`ActionError::Unknown`]: the server may or may not
//! have run it, and AMI actions are not idempotent (two Originates are two calls), so
//! nothing is re-sent automatically (an async Originate the server had already accepted
//! fails [`ActionError::FollowUpLost`] instead, with that acceptance: its call is being
//! placed, only how it ends is lost). One whose last byte was never handed out (written,
//! or lent to an adapter that writes from a copy) fails [`ActionError::NotSent`]: Asterisk
//! runs an action only once it read the blank line that ends it, so it is safe to resend.
//! ActionIDs carry a random per-connection prefix and a counter, so an answer from an older
//! connection, or another client's broadcast `OriginateResponse`, never matches: it is an
//! event of the stream, as is the `OriginateResponse` of an Originate cancelled or timed
//! out after it was written.
//!
//! A response the client has to throw away (over a [`DecoderLimits`] limit: a `Command`
//! with more `Output:` lines than `max_fields`, a legacy `Response: Follows` that never
//! ends; or not readable as a response) fails its action [`ActionError::ResponseDiscarded`]
//! as soon as it is read, with the reason, when it carried that action's `ActionID`: the
//! server answered, so the action does not wait for its deadline.
//!
//! A list is `Ok` only whole: one that lost an item to the decoder (over its size limits, or
//! broken) completes as [`ActionError::ListIncomplete`] with what did arrive, counted by the
//! decoder's drop, not by the server's `ListItems` (untruthful for some actions).
//!
//! ## Errors and panics
//!
//! Inputs never fail: what the server does wrong comes out as an output (a disconnect with a
//! reason, a counted decoder resync, an unmatched-response counter). Caller mistakes that
//! types cannot prevent are typed errors on the call ([`SendError`], [`EncodeError`],
//! [`ConfigError`]). No input from the network or the caller can make this crate panic; the
//! fuzz targets and property tests exercise that. Secrets (`Secret`, `Key`) never appear in
//! `Debug` output or log records.
//!
//! An error that wraps another ([`ActionError::NotSent`], [`SendError::Invalid`]...) names
//! it in its own message and keeps it in a field to match on, but does not return it from
//! `source()` as well: `{e}` alone says why, and a printer that walks the chain (anyhow's
//! `{:#}`) says each cause once. The other crates of the workspace do the same.
#![forbid(unsafe_code)]

mod repeats;
mod wire;

pub use wire::action::{
    is_secret_key, Action, ActionId, EncodeError, InvalidActionId, MAX_ACTION_ID_LEN, MAX_LINES,
    MAX_LINE_LEN,
};
pub use wire::c_escape::unescape_c;
pub use wire::decoder::{Banner, DecodeError, Decoder, DecoderStats, Frame, BANNER_PREFIX};
pub use wire::limits::{
    DecoderLimits, DecoderLimitsBuilder, LimitsError, DEFAULT_BUFFER_CAP, DEFAULT_MAX_FIELDS,
    DEFAULT_MAX_FOLLOWS_LEN, DEFAULT_MAX_LINE_LEN, DEFAULT_MAX_MESSAGE_LEN,
};
pub use wire::message::{Field, Message, MessageKind, Value};
pub use wire::shown::{escape_controls, obeyed_by_terminals, Shown};
pub use wire::variable::{variable_pair, InvalidVariable};

pub mod calls;
mod client;
pub mod fleet;

pub use client::addresses::{interleave_families, CONNECT_ATTEMPT_DELAY};
pub use client::config::{
    AuthMethod, ClientConfig, ClientConfigBuilder, ConfigError, EventCopy, OverflowPolicy, Secret,
    MAX_CLIENT_NAME_LEN, MAX_SETTING_DURATION, MIN_DECODER_FIELDS, MIN_DECODER_LINE_LEN,
};
pub use client::counts::{Counted, Counts};
pub use client::events::Queued;
pub use client::output::{
    ActionError, Discard, DisconnectReason, Notice, Outcome, Output, Phase, Response, Status,
    StreamItem,
};
pub use client::output::{CertificateProblem, ConnectFailure, DisconnectKind, OutcomeKind};
pub use client::session::{
    Client, FullQueue, Input, SendError, SendOptions, MAX_FILTERS, READ_AHEAD_BYTES,
    READ_AHEAD_EVENTS,
};
pub use client::stats::{Latency, Stats};
