//! Many Asterisk servers as one, without I/O.
//!
//! A dialer talks to tens or hundreds of servers. This module holds what that takes, as
//! state machines that read no clock and touch no socket (adapters and tests bring both):
//!
//! - [`Fleet`]: servers added and removed at run time under names the caller picks, each
//!   with its own [`Client`](crate::Client) (its own ActionID namespace, health, backoff and
//!   circuit breaker), and above them:
//!   - **one merged event stream** ([`Fleet::poll_event`]) whose items name their server.
//!     Each server's events wait in its own client's bounded queue, and the fleet takes one
//!     item from each server with items in turn. A server that floods overflows only its own
//!     queue, and every drop comes out as a gap naming it; a quiet server's next event is at
//!     most one rotation away. Memory: the sum of the servers' `event_queue_cap`s.
//!   - **routing** ([`Fleet::send`]): to a named server ([`Route::Server`]), or to any ready
//!     server by [`Policy`] (round-robin, fewest in flight). Servers that are not ready or
//!     whose breaker is open are skipped; when no server can take an action the send fails
//!     with [`RouteError::NoServer`] and nothing is queued.
//!   - **status** per server ([`ServerStatus`]: connecting, logging in, ready, backing off
//!     until T, breaker open until T, closed), every change once as
//!     [`FleetOutput::Status`] (the status watch), and **stats** per server and in total
//!     ([`Fleet::stats`]).
//!   - **paced connects**: at most `connects_per_step` [`FleetOutput::Connect`]s per step
//!     (a step is one [`Fleet::handle_timeout`]), oldest request first, so a hundred servers
//!     coming back at once cannot fill a step with socket opens, and every server waiting
//!     to connect gets its turn within `ceil(waiting / connects_per_step)` steps.
//! - [`Scheduler`]: per-step read budgets with a rotating start, for an adapter that reads
//!   many sockets in one loop.
//!
//! ## The run loop
//!
//! The same as one client's, with a server ID on the transport calls:
//!
//! 1. [`Fleet::handle_timeout`]`(now)` once per turn of the loop: due timers fire and a new
//!    step (and its connect budget) begins.
//! 2. Drain [`Fleet::poll_output`] until [`FleetOutput::Wait`]: `Connect(id)` and `Close(id)`
//!    are for the adapter; `Status`, `Completed` and `Removed` are news for the application.
//! 3. For each server with a transport: report what happened with
//!    [`Fleet::handle_input`], write [`Fleet::transmit`] and report what the transport took
//!    with [`Fleet::advance_transmit`]. An adapter that writes from a copy outside its
//!    borrow takes the copy with [`Fleet::lend_transmit`] (after
//!    [`Fleet::handle_server_timeout`]) and gives back what it drops unwritten with
//!    [`Fleet::unlend_transmit`]: lent bytes are never withdrawn, and an action whose last
//!    byte was never lent nor written fails `NotSent` when its session is lost.
//! 4. Hand the consumer [`Fleet::poll_event`] / [`Fleet::poll_events`] when it asks.
//! 5. Sleep until input, a call, or the deadline from `Wait`.
//!
//! ```
//! use ami_proto::fleet::{Fleet, FleetConfig, FleetOutput, Policy, Route, RouteError};
//! use ami_proto::{Action, ClientConfig};
//! use std::time::Instant;
//!
//! let now = Instant::now(); // the caller's clock; tests use virtual time
//! let mut config = FleetConfig::default();
//! config.budget.connects_per_step = 2;
//! let mut fleet = Fleet::new(config);
//! for name in ["east", "west", "south"] {
//!     fleet.add(now, name, ClientConfig::builder("admin", "amp111").build()?)?;
//! }
//!
//! // Nothing is ready yet: work that can go anywhere is refused, not queued.
//! let refused = fleet.send(now, Route::Any(Policy::RoundRobin), Action::new("Ping"));
//! assert!(matches!(refused, Err(RouteError::NoServer { ready: 0, .. })));
//! // A named server queues it until it is ready (within the action's deadline).
//! let ping = fleet.send(now, Route::Server("west"), Action::new("Ping"))?;
//! assert_eq!(ping.server.as_str(), "west");
//!
//! // Three servers want to connect; this step's budget lets two start.
//! fleet.handle_timeout(now);
//! let mut connects = Vec::new();
//! loop {
//!     match fleet.poll_output() {
//!         FleetOutput::Connect(id) => connects.push(fleet.name(id).cloned()),
//!         FleetOutput::Wait(_) => break,
//!         _ => {}
//!     }
//! }
//! assert_eq!(connects.len(), 2);
//! fleet.handle_timeout(now); // the next step: the third one
//! assert!(matches!(fleet.poll_output(), FleetOutput::Connect(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A full run against simulated servers is in `ami-sim`'s `fleet` harness.

mod name;
mod route;
mod scheduler;
mod servers;
mod stats;
mod status;
mod stream;
mod timers;

pub use name::{InvalidName, ServerId, ServerName, MAX_NAME_LEN};
pub use route::{Policy, Route, RouteError, Routed};
pub use scheduler::{Budget, Order, Scheduler, Step, Turn};
pub use servers::{Fleet, FleetConfig, FleetError, FleetOutput};
pub use stats::{FleetStats, ServerStats, STATUS_LABELS};
pub use status::ServerStatus;
pub use stream::{FleetItem, FleetQueued, MAX_REMOVAL_BYTES, MAX_REMOVAL_GAPS};
