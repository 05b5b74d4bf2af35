//! Many Asterisk servers as one, on tokio: [`ami_proto::fleet::Fleet`] driven by a timer
//! task and one task per open transport.
//!
//! [`spawn_fleet`] returns a [`FleetHandle`] (cloneable: add and remove servers by name,
//! send actions to a named server or by policy, status and stats) and the merged
//! [`FleetEvents`] stream, whose [`FleetItem`]s say which server each item came from.
//!
//! - **Fair stream.** Each server's events wait in its own bounded queue (its
//!   `ClientConfig::event_queue_cap`) and the stream takes from the servers in rotation: a
//!   server that floods loses its own events (a `StreamItem::Gap` naming it), never a quiet
//!   server's.
//! - **Routing.** [`Route::Server`] queues on that server until it is ready (within the
//!   action's deadline); [`Route::Any`] picks a ready server by [`Policy`] and fails with
//!   [`RouteError::NoServer`] when none can take it: nothing is queued anywhere.
//! - **Status.** [`FleetHandle::watch`] gives every status change once, in order
//!   (connecting, logging in, ready, backing off, breaker open, closed);
//!   [`FleetHandle::statuses`] the present.
//! - **Paced connects.** At most `budget.connects_per_step` transports open per step, so a
//!   hundred servers coming back at once cannot storm.
//! - **Closing.** The fleet closes (every server, no Logoff) on [`FleetHandle::close`] or
//!   when every handle and the stream are dropped; the stream ends once drained.
//!
//! ```no_run
//! use ami_proto::fleet::{FleetConfig, Policy, Route};
//! use ami_proto::{Action, ClientConfig, StreamItem};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (fleet, mut events) = ami_tokio::fleet::spawn_fleet(FleetConfig::default());
//! for (name, host) in [("east", "10.0.0.1"), ("west", "10.0.0.2")] {
//!     let config = ClientConfig::builder("admin", "amp111").build()?;
//!     fleet.add(name, config, (host, 5038))?;
//! }
//! // To one server by name, or to any ready one:
//! let reply = fleet.send(Route::Server("east"), Action::new("Ping")).await?;
//! println!("{}: {:?}", reply.server, reply.result.is_ok());
//! let reply = fleet.send(Route::Any(Policy::FewestInFlight), Action::new("Ping")).await?;
//! println!("went to {}", reply.server);
//! while let Some(item) = events.recv().await {
//!     match item.item {
//!         StreamItem::Event(e) => println!("{}: {}", item.server, e.event().unwrap_or("?")),
//!         StreamItem::Gap { dropped } => eprintln!("{}: {dropped} events lost", item.server),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The handle and stream (`handle.rs`, `shared.rs`) use std only apart from the clock; the
//! tokio part is the driver (`driver.rs`), so the same handle can serve another runtime.

mod driver;
mod handle;
mod shared;

pub use ami_proto::fleet::{
    FleetConfig, FleetItem, FleetStats, Policy, Route, RouteError, ServerName, ServerStatus,
};
pub use handle::{
    AddError, FleetEvents, FleetHandle, Reply, RouteFailed, StatusChange, StatusWatch,
};

use crate::Target;
use ami_proto::fleet::Fleet;
use std::sync::Arc;

/// Where one server is reached.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) target: Target,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::Tls>,
}

impl Endpoint {
    fn new(target: Target, #[cfg(feature = "tls")] tls: Option<crate::Tls>) -> Endpoint {
        Endpoint {
            target,
            #[cfg(feature = "tls")]
            tls,
        }
    }
}

/// Starts an empty fleet on the current tokio runtime: add servers with
/// [`FleetHandle::add`]. A config whose seed is the default gets one from the OS, so two
/// processes never share ActionID prefixes or reconnect jitter.
///
/// # Panics
/// Outside a tokio runtime (as `tokio::spawn` does).
pub fn spawn_fleet(config: FleetConfig) -> (FleetHandle, FleetEvents) {
    let mut config = config;
    if config.seed == FleetConfig::default().seed {
        config.seed = ami_async::entropy();
    }
    let inner = Arc::new(shared::Inner::new(Fleet::new(config)));
    tokio::spawn(driver::run(inner.clone()));
    (
        FleetHandle {
            inner: inner.clone(),
        },
        FleetEvents::new(inner),
    )
}
