//! Many Asterisk servers as one, on async-io: `ami-async`'s fleet (see [`ami_async::fleet`]
//! for the whole story), its driver future handed to your executor
//! ([`spawn_fleet`]), or one driver per shard on threads of their own
//! ([`run_fleet_on_thread`]) so the servers are read in parallel.
//!
//! ```no_run
//! use ami_proto::fleet::{FleetConfig, Route};
//! use ami_proto::{Action, ClientConfig, StreamItem};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (fleet, mut events, driver) = ami_async_std::fleet::spawn_fleet(FleetConfig::default());
//! // Or `smol::spawn(driver).detach()`, `async_std::task::spawn(driver)`.
//! std::thread::spawn(move || async_io::block_on(driver));
//! for (name, host) in [("east", "10.0.0.1"), ("west", "10.0.0.2")] {
//!     let config = ClientConfig::builder("admin", "amp111").build()?;
//!     fleet.add(name, config, (host, 5038))?;
//! }
//! async_io::block_on(async {
//!     let reply = fleet.send(Route::Server("east"), Action::new("Ping")).await?;
//!     println!("{}: {}", reply.server, reply.result.is_ok());
//!     while let Some(item) = events.recv().await {
//!         if let StreamItem::Event(e) = item.item {
//!             println!("{}: {}", item.server, e.event().unwrap_or("?"));
//!         }
//!     }
//!     Ok(())
//! })
//! # }
//! ```

pub use ami_async::fleet::{
    AddError, FleetConfig, FleetDriver, FleetEvents, FleetHandle, FleetItem, FleetStats,
    NeverReady, Policy, Reply, Route, RouteError, RouteFailed, ServerName, ServerStatus,
    StatusChange, StatusWatch,
};

use crate::AsyncIo;

/// Creates an empty fleet: the handle (add servers with [`FleetHandle::add`]), the merged
/// event stream, and the [`FleetDriver`] to run on your executor. A config whose seed is
/// the default gets one from the OS.
pub fn spawn_fleet(config: FleetConfig) -> (FleetHandle, FleetEvents, FleetDriver) {
    ami_async::fleet::start::<AsyncIo>(config)
}

/// [`spawn_fleet`] with the servers spread over `shards` shards, one driver each (see
/// [`ami_async::fleet::start_sharded`]): spawn each on a task or thread of its own so the
/// shards are read in parallel.
pub fn spawn_fleet_sharded(
    config: FleetConfig,
    shards: usize,
) -> (FleetHandle, FleetEvents, Vec<FleetDriver>) {
    ami_async::fleet::start_sharded::<AsyncIo>(config, shards)
}

/// Like [`spawn_fleet`], with one shard per core but one
/// ([`ami_async::fleet::default_shards`]), each driver on a dedicated thread
/// (`async_io::block_on`). The threads end when the fleet closes.
///
/// # Errors
/// When a thread cannot be started (the fleet is then closed).
pub fn run_fleet_on_thread(config: FleetConfig) -> std::io::Result<(FleetHandle, FleetEvents)> {
    run_fleet_on_threads(config, ami_async::fleet::default_shards())
}

/// [`run_fleet_on_thread`] with `shards` shards, a thread each.
///
/// # Errors
/// When a thread cannot be started (the fleet is then closed).
pub fn run_fleet_on_threads(
    config: FleetConfig,
    shards: usize,
) -> std::io::Result<(FleetHandle, FleetEvents)> {
    let (handle, events, drivers) = spawn_fleet_sharded(config, shards);
    for (i, driver) in drivers.into_iter().enumerate() {
        std::thread::Builder::new()
            .name(format!("ami-fleet-{i}"))
            .spawn(move || async_io::block_on(driver))
            .inspect_err(|_| handle.close())?;
    }
    Ok((handle, events))
}
