//! Many Asterisk servers as one, on async-io: `ami-async`'s fleet (see [`ami_async::fleet`]
//! for the whole story), its one driver future handed to your executor.
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
    AddError, FleetConfig, FleetDriver, FleetEvents, FleetHandle, FleetItem, FleetStats, Policy,
    Reply, Route, RouteError, RouteFailed, ServerName, ServerStatus, StatusChange, StatusWatch,
};

use crate::AsyncIo;

/// Creates an empty fleet: the handle (add servers with [`FleetHandle::add`]), the merged
/// event stream, and the [`FleetDriver`] to run on your executor. A config whose seed is
/// the default gets one from the OS.
pub fn spawn_fleet(config: FleetConfig) -> (FleetHandle, FleetEvents, FleetDriver) {
    ami_async::fleet::start::<AsyncIo>(config)
}

/// Like [`spawn_fleet`], with the driver on a dedicated thread (`async_io::block_on`). The
/// thread ends when the fleet closes.
///
/// # Errors
/// When the thread cannot be started.
pub fn run_fleet_on_thread(config: FleetConfig) -> std::io::Result<(FleetHandle, FleetEvents)> {
    let (handle, events, driver) = spawn_fleet(config);
    std::thread::Builder::new()
        .name("ami-fleet".into())
        .spawn(move || async_io::block_on(driver))?;
    Ok((handle, events))
}
