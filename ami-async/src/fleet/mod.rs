//! Many Asterisk servers as one, on any runtime: [`ami_proto::fleet::Fleet`] driven by one
//! [`FleetDriver`] future that opens, reads and writes every server's transport.
//!
//! [`start`] returns a [`FleetHandle`] (cloneable: add and remove servers by name, send
//! actions to a named server or by policy, status and stats), the merged [`FleetEvents`]
//! stream, whose [`FleetItem`]s say which server each item came from, and the driver to run
//! on the runtime. The adapters wrap it: `ami_tokio::fleet::spawn_fleet` spawns the driver
//! as a task, `ami_async_std::fleet::spawn_fleet` hands it to your executor.
//!
//! - **Fair stream.** Each server's events wait in its own bounded queue (its
//!   `ClientConfig::event_queue_cap`) and the stream takes from the servers in rotation: a
//!   server that floods loses its own events (a `StreamItem::Gap` naming it), never a quiet
//!   server's.
//! - **Fair reads.** The driver visits the servers whose transport is ready in rotation, one
//!   read (up to 64 KiB) per visit, so a flooding socket cannot keep the others waiting.
//! - **Routing.** [`Route::Server`] queues on that server until it is ready (within the
//!   action's deadline); [`Route::Any`] picks a ready server by [`Policy`] and fails with
//!   [`RouteError::NoServer`] when none can take it: nothing is queued anywhere.
//! - **Status.** [`FleetHandle::watch`] gives every status change once, in order
//!   (connecting, logging in, ready, backing off, breaker open, closed);
//!   [`FleetHandle::statuses`] the present.
//! - **Paced connects.** At most `budget.connects_per_step` transports open per step, so a
//!   hundred servers coming back at once cannot storm.
//! - **Closing.** The fleet closes (every server, no Logoff) on [`FleetHandle::close`] or
//!   when every handle and the stream are dropped; the stream ends once drained, and so
//!   does the driver.
//!
//! ```no_run
//! use ami_proto::fleet::{FleetConfig, Policy, Route};
//! use ami_proto::{Action, ClientConfig, StreamItem};
//!
//! # async fn run<R: ami_async::Runtime>(
//! #     spawn: impl Fn(ami_async::BoxFuture<()>),
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! //! // On tokio, `ami_tokio::fleet::spawn_fleet(FleetConfig::default())` does these two lines.
//! let (fleet, mut events, driver) = ami_async::fleet::start::<R>(FleetConfig::default());
//! spawn(Box::pin(driver));
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

mod driver;
mod handle;
mod shared;

pub use ami_proto::fleet::{
    FleetConfig, FleetItem, FleetStats, Policy, Route, RouteError, ServerName, ServerStatus,
};
pub use driver::FleetDriver;
pub use handle::{
    AddError, FleetEvents, FleetHandle, Reply, RouteFailed, StatusChange, StatusWatch,
};

use crate::{Runtime, Target};
use ami_proto::fleet::Fleet;
use std::sync::Arc;

/// Where one server is reached.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) target: Target,
    /// Checked when the server was added (the server name parsed once).
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsTarget>,
}

/// Creates an empty fleet on runtime `R`: the handle (add servers with
/// [`FleetHandle::add`]), the merged event stream, and the [`FleetDriver`] future to run on
/// that runtime. A config whose seed is the default gets one from the OS, so two processes
/// never share ActionID prefixes or reconnect jitter.
pub fn start<R: Runtime>(config: FleetConfig) -> (FleetHandle, FleetEvents, FleetDriver) {
    let mut config = config;
    if config.seed == FleetConfig::default().seed {
        config.seed = crate::entropy();
    }
    let inner = Arc::new(shared::Inner::new(Fleet::new(config), R::now));
    let driver = FleetDriver::new::<R>(inner.clone());
    (
        FleetHandle {
            inner: inner.clone(),
        },
        FleetEvents::new(inner),
        driver,
    )
}
