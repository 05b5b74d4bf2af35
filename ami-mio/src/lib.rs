//! # ami-mio
//!
//! Drives one or many [`ami_proto::Client`]s (Asterisk Manager Interface sessions) from one
//! [`mio::Poll`], inside an event loop that belongs to you.
//!
//! The adapter is thin: it owns sockets, the poll and the clock, and pumps bytes and time into
//! the sans-IO core. When to ping, when to reconnect and how an action ended are decided by
//! `ami-proto`; this crate only carries out [`ami_proto::Output::Connect`] and
//! [`ami_proto::Output::Close`] and passes the core's [`Notice`]s on as they are.
//!
//! ## The run loop: two calls
//!
//! 1. [`MioDriver::step`]`(now)` never blocks. It polls mio with a zero timeout, does the
//!    ready I/O (connect completion, reads, writes), feeds `now` to every client, starts the
//!    connects the clients asked for, and returns a [`Report`]: completed actions and session
//!    notices, which connections have events queued, and readiness of your own sources.
//! 2. [`MioDriver::wait`]`(timeout)` blocks in `mio::Poll::poll` until I/O is ready, the
//!    earliest client deadline (heartbeat, action deadline, reconnect), or your `timeout`
//!    (your own timer). It returns at once when the last step left work behind.
//!
//! ```no_run
//! use ami_mio::{MioDriver, Notice};
//! use ami_proto::{Action, ClientConfig};
//! use std::time::{Duration, Instant};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut driver = MioDriver::new()?;
//! let config = ClientConfig::builder("admin", "secret").build()?;
//! let pbx = driver.add(Instant::now(), config, "127.0.0.1:5038".parse()?)?;
//! let mut pinged = false;
//! loop {
//!     let report = driver.step(Instant::now())?;
//!     for (conn, notice) in report.notices {
//!         match notice {
//!             Notice::Ready { .. } if conn == pbx && !pinged => {
//!                 driver.send(Instant::now(), pbx, Action::new("Ping"))?;
//!                 pinged = true;
//!             }
//!             Notice::Completed { outcome, .. } => {
//!                 println!("ping: {}", outcome.is_ok());
//!                 return Ok(());
//!             }
//!             // Closed for good (a rejected login, say): no Ready will ever come.
//!             Notice::Closed { reason } => return Err(reason.into()),
//!             other => println!("{other:?}"),
//!         }
//!     }
//!     for conn in report.events {
//!         while let Some(event) = driver.poll_event(conn) {
//!             println!("{event:?}");
//!         }
//!     }
//!     driver.wait(Some(Duration::from_secs(1)))?;
//! }
//! # }
//! ```
//!
//! ## Many servers, one loop
//!
//! Each step gives every connection a turn, starting one place further each time, within an
//! [`ami_proto::fleet::Budget`]: bytes and messages per connection and per step, and connects
//! started per step. A connection whose budget ran out keeps its place: the next step reads on
//! without waiting for new readiness (mio is edge-triggered). So a server flooding events
//! cannot starve a quiet one, and a hundred servers reconnecting at once cannot take a whole
//! step.
//!
//! ## A fleet: many servers as one
//!
//! [`MioFleet`] puts an [`ami_proto::fleet::Fleet`] on the same kind of loop: servers added
//! and removed by name, one merged event stream whose items name their server (fair: a
//! flooding server overflows only its own queue, as gaps naming it), actions routed to a
//! named server or by policy over the ready ones (`RouteError::NoServer` when none can take
//! it), a status per server reported on every change, and connects paced per step. It runs
//! the same socket code as [`MioDriver`], within the same [`Budget`].
//!
//! ## Addresses and names
//!
//! [`MioDriver::add`] takes a [`std::net::SocketAddr`]: resolve names with your own resolver
//! and hand the address in. [`MioDriver::add_host`] takes `host:port` and resolves it before
//! a connect on helper threads ([`Options::resolve`], [`Options::resolver_threads`]) that
//! hand the answer back through a channel and a [`mio::Waker`]; a slow lookup never delays a
//! step, and a lookup that hangs holds one thread, not the other names (threads start as
//! lookups overlap; a name has one lookup at a time, shared by every connection to it, even
//! one added after the connection that asked was removed). An answer serves every connect
//! to the name for 30 s, so one slower than the connect timeout serves the next attempt
//! instead of being asked for again; after that the name is asked again, to follow a name
//! moved to another address. [`MioFleet::add_host`] does the same for a fleet's servers.
//! Every address of the name is tried until one connects, as RFC 8305 has it: families
//! alternating, each attempt alone for [`ami_proto::CONNECT_ATTEMPT_DELAY`] (or until it
//! fails) before the next starts beside it, the first connected socket kept (a dual-stack
//! host whose first address refuses, or drops SYNs, still connects); the core's connect
//! timeout covers the lookup and all the attempts.
//!
//! ## Time
//!
//! The clock is yours: every call that changes a client's state takes `now`
//! ([`MioDriver::step`], `add*`, [`MioDriver::send`], [`MioDriver::send_with`],
//! [`MioDriver::add_filter`], [`MioDriver::set_event_mask`], [`MioDriver::cancel`],
//! [`MioDriver::logoff`], [`MioDriver::close`], [`MioDriver::remove`], and the same on
//! [`MioFleet`]), so a loop that reads the clock once per round feeds one consistent time
//! to everything it does in that round. Only [`MioDriver::wait`], which changes nothing,
//! reads the clock itself to turn deadlines into a poll timeout.
//!
//! ## Your own sources
//!
//! Register sockets, pipes or anything mio supports on [`MioDriver::registry`] with tokens
//! in [`USER_TOKENS`]. Their readiness comes back in [`Report::user`]; reading them is yours.
//!
//! ## TLS
//!
//! With the cargo feature `tls`, `MioDriver::add_tls` and `MioDriver::add_host_tls` speak AMI
//! over TLS (implicit TLS, usually port 5039) with rustls. rustls's `ClientConnection` is
//! sans-IO like the AMI core, so the handshake and every record go through the same
//! non-blocking reads and writes as plain TCP inside [`MioDriver::step`]: no thread, no
//! blocking call, partial writes and `WouldBlock` handled as for plain sockets, and the
//! ciphertext read counts toward the per-step [`Budget`]. The core is told the transport is
//! connected only once the handshake is done, as on the async runtimes: a handshake that
//! fails (an untrusted certificate, a certificate for another name, a port that does not
//! speak TLS) is a failed connect with a TLS reason
//! (`DisconnectReason::ConnectFailed(ConnectFailure::Tls)`), one that hangs ends with the
//! core's connect timeout, and a bad record later is a transport error; the core reports
//! [`Notice::Disconnected`] and decides about reconnecting.
//! `client_config_from_pem` builds a rustls configuration trusting the CA certificates of a
//! PEM bundle; `Tls` has the same shape as `ami_tokio::Tls`. The crate re-exports `rustls`
//! and `rustls_pki_types` for building other configurations.
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::time::Instant;
//! # let mut driver = ami_mio::MioDriver::new()?;
//! # let config = ami_proto::ClientConfig::builder("admin", "secret").build()?;
//! let tls = ami_mio::Tls {
//!     config: ami_mio::client_config_from_pem(&std::fs::read("ca.pem")?)?,
//!     server_name: "pbx.example.com".into(),
//! };
//! let pbx = driver.add_tls(Instant::now(), config, "192.0.2.10:5039".parse()?, tls)?;
//! // From here on as over plain TCP: `step`, `wait`, and actions sent to `pbx`.
//! driver.send(Instant::now(), pbx, ami_proto::Action::new("Ping"))?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tls"))]
//! # fn main() {}
//! ```
//!
//! ## A slow handler
//!
//! Keep calling [`MioDriver::step`] and [`MioDriver::wait`] while your code handles events:
//! Asterisk drops a client whose socket it cannot write to for 100 ms (`writetimeout`). Hand
//! slow work to another thread through a bounded queue that the loop never waits on (drop
//! and count when it is full), as `examples/slow_handler.rs` does. Events you do not take
//! with [`MioDriver::poll_event`] in time are dropped by the core's bounded queue and
//! reported as [`ami_proto::StreamItem::Gap`]s, never by stopping the reads. A step that
//! comes late all the same reads what the sockets hold before it fires the timers: a Pong
//! or an action's answer that arrived before its deadline counts, and only what is really
//! overdue times out.
//!
//! ## Errors and panics
//!
//! Nothing the network sends can make this crate panic. [`MioDriver::step`] and
//! [`MioDriver::wait`] fail only when the poll itself fails (an OS error); socket errors are
//! reported to the core, which turns them into [`Notice::Disconnected`].
#![forbid(unsafe_code)]
// The examples are meant to be pasted: one that warns (an unused variable) fails its test.
#![doc(test(attr(deny(warnings))))]

mod conn;
mod driver;
mod fleet;
mod report;
mod resolver;
mod session;
#[cfg(feature = "tls")]
mod tls;

pub use ami_proto;
pub use ami_proto::fleet::Budget;
pub use ami_proto::Notice;
pub use driver::{AddError, MioDriver, Options, OptionsError, MAX_EVENTS_CAPACITY, MAX_READ_CHUNK};
pub use fleet::{FleetAddError, FleetReport, MioFleet};
pub use report::{ConnId, Report, UserReady};
pub use resolver::{system_resolve, ResolveFn};
#[cfg(feature = "tls")]
pub use tls::{client_config_from_pem, Tls, TlsConfigError};
#[cfg(feature = "tls")]
pub use {rustls, rustls_pki_types};

/// Most connections one driver holds; their tokens are `0..MAX_CONNS`.
pub const MAX_CONNS: usize = 1 << 20;

/// The token of the driver's [`mio::Waker`].
pub const WAKER_TOKEN: usize = usize::MAX - 1;

/// Tokens reserved for the caller's own sources registered on [`MioDriver::registry`].
pub const USER_TOKENS: std::ops::Range<usize> = (1 << 24)..WAKER_TOKEN;
