//! Many Asterisk servers as one, on tokio: `ami-async`'s fleet (see [`ami_async::fleet`] for
//! the whole story) with its drivers spawned as tokio tasks, one per shard.
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
//! // A policy takes only ready servers: wait until one is (connected, logged in).
//! fleet.wait_any_ready().await?;
//! let reply = fleet.send(Route::Any(Policy::FewestInFlight), Action::new("Ping")).await?;
//! println!("went to {}", reply.server);
//! while let Some(item) = events.recv().await {
//!     if let StreamItem::Event(e) = item.item {
//!         println!("{}: {}", item.server, e.event().unwrap_or("?"));
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub use ami_async::fleet::{
    AddError, FleetConfig, FleetEvents, FleetHandle, FleetItem, FleetStats, NeverReady, Policy,
    Reply, Route, RouteError, RouteFailed, ServerName, ServerStatus, StatusChange, StatusWatch,
};

use crate::Tokio;

/// Starts an empty fleet on the current tokio runtime, one driver task per shard
/// ([`ami_async::fleet::default_shards`]: one per core but one), so the runtime's workers
/// read the servers in parallel: add servers with [`FleetHandle::add`]. A config whose seed is the
/// default gets one from the OS.
///
/// # Panics
/// Outside a tokio runtime (as `tokio::spawn` does).
pub fn spawn_fleet(config: FleetConfig) -> (FleetHandle, FleetEvents) {
    spawn_fleet_sharded(config, ami_async::fleet::default_shards())
}

/// [`spawn_fleet`] with `shards` shards (see [`ami_async::fleet::start_sharded`]).
///
/// # Panics
/// Outside a tokio runtime (as `tokio::spawn` does).
pub fn spawn_fleet_sharded(config: FleetConfig, shards: usize) -> (FleetHandle, FleetEvents) {
    let (handle, events, drivers) = ami_async::fleet::start_sharded::<Tokio>(config, shards);
    for driver in drivers {
        tokio::spawn(driver);
    }
    (handle, events)
}
