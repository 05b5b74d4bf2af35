//! # ami-sim: a simulated Asterisk AMI server on virtual time
//!
//! ```
//! use ami_sim::{SessionState, SimConfig, SimServer};
//! use std::time::{Duration, Instant};
//!
//! let t0 = Instant::now(); // the only clock: everything after is t0 + virtual durations
//! let mut sim = SimServer::new(SimConfig::default(), t0);
//! let s = sim.accept(t0);
//! assert_eq!(sim.transmit(s), b"Asterisk Call Manager/11.0.0\r\n");
//! let n = sim.transmit(s).len();
//! sim.advance_transmit(s, n);
//!
//! sim.receive(s, t0, b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\nEvents: off\r\n\r\n");
//! let reply = String::from_utf8_lossy(sim.transmit(s)).into_owned();
//! assert!(reply.starts_with("Response: Success\r\nMessage: Authentication accepted\r\n"));
//! let n = sim.transmit(s).len();
//! sim.advance_transmit(s, n);
//!
//! // A wrong password on another connection is answered after exactly 1 s of virtual time.
//! let bad = sim.accept(t0);
//! let n = sim.transmit(bad).len();
//! sim.advance_transmit(bad, n);
//! sim.receive(bad, t0, b"Action: Login\r\nUsername: admin\r\nSecret: nope\r\n\r\n");
//! assert!(sim.transmit(bad).is_empty());
//! assert_eq!(sim.poll_timeout(), Some(t0 + Duration::from_secs(1)));
//! sim.handle_timeout(t0 + Duration::from_secs(1));
//! assert!(sim.transmit(bad).starts_with(b"Response: Error\r\nMessage: Authentication failed"));
//! assert!(matches!(sim.session_state(bad), SessionState::Closed(_)));
//! ```
//!
//! [`SimServer`] is sans-IO: no sockets, no clock reads, no threads. The harness passes
//! `now: Instant` values (one real `Instant` plus virtual durations), feeds what a client
//! wrote with [`SimServer::receive`], pulls what the server sends with
//! [`SimServer::transmit`]/[`SimServer::advance_transmit`], and drives timers with
//! [`SimServer::poll_timeout`]/[`SimServer::handle_timeout`]. The [`tcp`] module puts a real
//! loopback socket in front of it for end-to-end tests.
//!
//! To test your own code against it, [`link::Link`] joins your [`ami_proto::Client`] to a
//! `SimServer` on virtual time, as an adapter would: Connect opens a session, bytes cross
//! both ways, restarts and faults make the client reconnect, and `step`/`run_until`/
//! `run_until_complete` move the clock from one deadline to the next, collecting the
//! client's notices for your assertions.
//!
//! ## What is simulated (Asterisk 22.10.1, AMI 11.0.0)
//!
//! Message shapes and field order follow the recordings in
//! `shared/fixtures/asterisk-22.10.1/`; values such as Uniqueid, Timestamp, Challenge and dates
//! come from the virtual clock and the seeded PRNG.
//!
//! * **Framing**: the banner; Asterisk's input rules byte for byte (CRLF or bare LF, a
//!   1022-byte line limit with the 1023-byte double error, 128 lines per message, every empty
//!   line handled as a message: "Missing action in request"). Each message is parsed with
//!   [`ami_proto::Decoder`].
//! * **Authentication**: plain and MD5 (`Challenge` → 9 digits; `Key` = lowercase hex
//!   md5(challenge‖secret)), "Must specify AuthType", failed logins answered after exactly
//!   1 s then closed, "Already authenticated", "Permission denied" before login except for
//!   Login/Logoff/Challenge, `authtimeout`, `authlimit`, `allowmultiplelogin=no`, `Events:` on
//!   Login, the inline FullyBooted and the SuccessfulAuth / InvalidPassword /
//!   InvalidAccountID / ChallengeResponseFailed security events.
//! * **Permissions and delivery**: `read=`/`write=` classes and event masks parsed like
//!   Asterisk ([`ClassMask`]; not its prefix matching of list items, see
//!   [`ClassMask::parse_list`]); an event reaches a session only if all its class bits are
//!   in both, and its filters pass.
//! * **Actions**: Login, Logoff, Challenge, Ping, Events, Filter, Command, Getvar, Setvar,
//!   Status, CoreShowChannels, QueueStatus, QueueSummary, UserEvent, Hangup, Originate,
//!   CoreSettings, CoreStatus, ListCommands. Others: "Invalid/unknown command".
//! * **Ordering**: one action at a time per session; events raised while a session is busy
//!   (its own action, a delayed reply, a sync Originate) are held and delivered after the
//!   reply. A sync Originate blocks the whole session until the call answers or fails.
//! * **Calls**: `Local/<exten>@ami-test` pairs running the fixtures' dialplan over virtual
//!   time with the events of the captures (Newchannel, VarSet, NewCallerid, Newexten,
//!   LocalBridge, DialBegin/End, Newstate, DeviceStateChange, OriginateResponse,
//!   HangupRequest, SoftHangupRequest, Hangup, Cdr, UserEvent, Queue*/Agent*). Start calls
//!   from a test with [`SimServer::originate_call`] and a [`CallRequest`]; the extensions
//!   are those of the fixtures' `ami-test` context (echo, wait10, hold, busy, congestion,
//!   noanswer, hangup, userevent, burst, setvar, queue, queue-wait, qagent, 100, 101).
//! * **Slow readers**: untransmitted output beyond `socket_buffer` is a blocked write; if it
//!   cannot finish within `write_timeout` (100 ms) the session is closed
//!   ([`CloseReason::SlowReader`]) keeping only what the kernel held, like Asterisk's
//!   `writetimeout`. Each message (an event, a list item, a response) is its own write
//!   with its own `write_timeout`, so a reader that keeps taking a long list in is kept.
//! * **Faults** ([`Faults`], [`Fault`]): transmit chunking, delayed/dropped/duplicated
//!   replies, foreign ActionIDs, garbage and over-long lines, non-UTF-8 caller names,
//!   half-open sessions, resets mid-message, restarts, event storms.
//!
//! ## Simplifications
//!
//! * `Hangup` `/regex/` matches a plain substring (filters are POSIX-style regular
//!   expressions, as in Asterisk). Masks and filters are applied when an event is generated
//!   (Asterisk applies them at delivery).
//! * Queue agents are synthetic snapshots, not dialled channels; bridges
//!   (BridgeCreate/Enter/Leave) and Local channel optimisation are not simulated; device
//!   state exists only for the `Local/...` devices of calls.
//! * Only a few CLI commands exist (`core show version|uptime|channels`,
//!   `manager show connected`, `dialplan show`); ListCommands lists the simulated actions
//!   the user may run, with the simulator's own synopses. Status prints fixed codec and group fields.
//! * The `echo` extension times out after `SimConfig::echo_timeout` (1 s; the recording
//!   setup used 5 s). Call events of one step are emitted at the same virtual instant.
//! * [`SimServer::advance_transmit`] takes no `now`: the write-timeout clock uses the
//!   latest time the server has seen.
//!
//! ## Bounded memory
//!
//! Per session: input waiting while the session is busy is capped by `max_input_backlog`
//! (excess dropped and counted; the [`tcp`] front stops reading instead), the line buffer by
//! Asterisk's 1024 bytes and 128 lines, output plus held events by `max_backlog` (then the
//! session is closed as a slow reader), filters by 1024 entries and 8 MiB of compiled
//! patterns (charged by size tier; a pattern over 256 KiB compiled, or past the budget, is
//! answered "did not compile").
//! Calls are capped by `max_calls`, each channel's variables by 1,024 and 128 KiB (a
//! `Setvar` past them is answered `Variable not set`), global variables by 4,096, and the
//! [`tcp`] front's connections by 1,024 (more are closed at once, counted in
//! `SimStats::sessions_refused`). Closed sessions keep a small record until
//! [`SimServer::forget`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod actions;
/// Deterministic simulation of the call tracker: calls, faults, and its view checked
/// against the simulator's own channel table.
pub mod call_harness;
mod calls;
mod classes;
mod clock;
mod config;
mod events;
mod faults;
mod filter;
pub mod fleet;
pub mod fleet_log;
pub mod flood;
/// Deterministic simulation harness: client and simulated server on one virtual clock.
pub mod harness;
pub mod hostile;
mod input;
pub mod link;
mod out;
mod rng;
mod server;
mod session;
mod stats;
mod storm;
pub mod tcp;

pub use calls::channel::ChannelRow;
pub use calls::{CallId, CallRequest, CallTarget, MAX_BURST};
pub use classes::ClassMask;
pub use config::{
    SimConfig, SimConfigBuilder, SimConfigError, SimUser, MAX_SYSTEM_NAME_LEN, MIN_MAX_BACKLOG,
};
pub use events::escape_c;
pub use faults::{ActionMatch, Fault, FaultPlan, FaultSchedule, Faults};
pub use server::SimServer;
pub use stats::SimStats;

/// The extensions of the simulated dialplan's one context, `ami-test`, in `dialplan show`
/// order: what a `Local/<exten>@ami-test` call can run (`T` is the timeout handler).
pub fn dialplan_extensions() -> &'static [&'static str] {
    &calls::dialplan::EXTENS
}

/// Identifies one client connection of a [`SimServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Whether a session is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Open.
    Open,
    /// Closed by the server or the client. Bytes still queued stay readable with
    /// [`SimServer::transmit`] (EOF after them), except what a reset or a slow-reader close
    /// discarded.
    Closed(CloseReason),
    /// No such session (never accepted, or forgotten).
    Unknown,
}

/// Why a session was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent Logoff (after `Response: Goodbye`).
    Logoff,
    /// Login failed (after the 1 s delay and "Authentication failed"), or
    /// "Login Already In Use".
    AuthFailed,
    /// No login within `auth_timeout`.
    AuthTimeout,
    /// The client did not read: a write did not finish within `write_timeout`, or the
    /// backlog passed `max_backlog`.
    SlowReader,
    /// Server shutdown or restart, or a connection while the server was down.
    Shutdown,
    /// `authlimit` unauthenticated sessions already existed.
    AuthLimit,
    /// A reset fault.
    Fault,
    /// The client closed the connection.
    ClientClosed,
}
