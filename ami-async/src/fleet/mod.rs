//! Many Asterisk servers as one, on any runtime: [`ami_proto::fleet::Fleet`] driven by
//! [`FleetDriver`] futures that open, read and write every server's transport.
//!
//! [`start`] returns a [`FleetHandle`] (cloneable: add and remove servers by name, send
//! actions to a named server or by policy, status and stats), the merged [`FleetEvents`]
//! stream, whose [`FleetItem`]s say which server each item came from, and the driver to run
//! on the runtime. [`start_sharded`] spreads the servers over several shards, each a core
//! fleet with a driver of its own, so that a runtime with several threads reads and decodes
//! them in parallel; the handle, the stream and the watch are still one fleet's. The
//! adapters wrap it: `ami_tokio::fleet::spawn_fleet` spawns one driver task per shard
//! ([`default_shards`]: one per core but one), `ami_async_std::fleet::spawn_fleet` hands one
//! driver to your executor and `run_fleet_on_thread` gives each shard a thread.
//!
//! - **Shards.** A server lives on the shard with the fewest servers when it is added.
//!   Names are one namespace, `max_servers` caps the whole fleet, and the shards' connect
//!   budgets are shares that add up to `connects_per_step` (so there are at most that many
//!   shards). Routing by policy walks the shards (round-robin from a rotating shard; fewest
//!   in flight from the shard with the least loaded ready server), stats add the shards up.
//!
//! - **Fair stream.** Each server's events wait in its own bounded queue (its
//!   `ClientConfig::event_queue_cap`) and the stream takes from the servers in rotation: a
//!   server that floods loses its own events (a `StreamItem::Gap` naming it), never a quiet
//!   server's.
//! - **Fair reads.** The driver visits the servers whose transport is ready in rotation, one
//!   read (up to 64 KiB) per visit, so a flooding socket cannot keep the others waiting.
//! - **Routing.** [`Route::Server`] queues on that server until it is ready (within the
//!   action's deadline); [`Route::Any`] picks a ready server by [`Policy`] and fails with
//!   [`RouteError::NoServer`] when none can take it: nothing is queued anywhere. A server
//!   is not ready as soon as it is added (it connects and logs in first):
//!   [`FleetHandle::wait_any_ready`] and [`FleetHandle::wait_ready`] wait for that, and say
//!   so ([`NeverReady`]) when it can never happen.
//! - **Per server.** What a single session's handle offers, by server name:
//!   [`FleetHandle::add_filter`], [`set_event_mask`](FleetHandle::set_event_mask),
//!   [`logoff`](FleetHandle::logoff), [`close_server`](FleetHandle::close_server),
//!   [`client_stats`](FleetHandle::client_stats),
//!   [`pending_actions`](FleetHandle::pending_actions); refused like a send to that name
//!   (unknown server, closed fleet, stopped driver). No caller's code runs under a shard's
//!   lock: it is every server of the shard's, so a closure that stalled or panicked there
//!   would stop them all.
//! - **Status.** [`FleetHandle::watch`] gives every status change once, in order
//!   (connecting, logging in, ready, backing off, breaker open, closed);
//!   [`FleetHandle::statuses`] the present; [`FleetHandle::wait_ready`] and
//!   [`FleetHandle::wait_any_ready`] wait for a server to be ready.
//! - **Paced connects.** At most `budget.connects_per_step` transports open per step, so a
//!   hundred servers to reconnect at once cannot take a step over; in time they are spread
//!   by each server's backoff with full jitter (100 ms to 30 s) and circuit breaker, not by
//!   the budget (steps run back to back while there is work: 300 servers dropped at once
//!   reconnect within about their first backoff, 100 ms).
//! - **Closing.** The fleet closes (every server, no Logoff) on [`FleetHandle::close`] or
//!   when every handle and the stream are dropped, or once no handle is left and every
//!   server has closed for good; the stream ends once drained, and so does the driver. A
//!   shard's driver dropped before that (its task aborted, its runtime shut down) closes
//!   that shard's servers as a session's dropped driver does: each pending action fails
//!   once, `NotSent` if it was never written whole, `Unknown` if it was; each server is
//!   `Closed`, and its `Disconnected` reaches the stream.
//!
//! ```no_run
//! use ami_proto::fleet::{FleetConfig, Policy, Route};
//! use ami_proto::{Action, ClientConfig, StreamItem};
//!
//! # async fn run<R: ami_async::Runtime>(
//! #     spawn: impl Fn(ami_async::BoxFuture<()>),
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! // On tokio, `ami_tokio::fleet::spawn_fleet(FleetConfig::default())` does these two lines.
//! let (fleet, mut events, driver) = ami_async::fleet::start::<R>(FleetConfig::default());
//! spawn(Box::pin(driver));
//! for (name, host) in [("east", "10.0.0.1"), ("west", "10.0.0.2")] {
//!     let config = ClientConfig::builder("admin", "amp111").build()?;
//!     fleet.add(name, config, (host, 5038))?;
//! }
//! // To one server by name (queued there until it is ready):
//! let reply = fleet.send(Route::Server("east"), Action::new("Ping")).await?;
//! println!("{}: {:?}", reply.server, reply.result.is_ok());
//! // Or to any ready one: a policy takes only ready servers, so wait for one first.
//! let first = fleet.wait_any_ready().await?;
//! println!("{first} is ready");
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
mod ops;
mod reads;
mod ready;
mod shards;
mod shared;
mod watch;

pub use ami_proto::fleet::{
    FleetConfig, FleetItem, FleetStats, Policy, Route, RouteError, ServerName, ServerStatus,
};
pub use driver::FleetDriver;
pub use handle::{AddError, FleetEvents, FleetHandle, Reply, RouteFailed};
pub use reads::ReadCounters;
pub use ready::NeverReady;
pub use watch::{StatusChange, StatusWatch};

use crate::{Runtime, Target};
use std::sync::Arc;

/// Where one server is reached.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) target: Target,
    /// Checked when the server was added (the server name parsed once).
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsTarget>,
}

/// Creates an empty fleet on runtime `R`, one shard: the handle (add servers with
/// [`FleetHandle::add`]), the merged event stream, and the [`FleetDriver`] future to run on
/// that runtime. A config whose seed is the default gets one from the OS, so two processes
/// never share ActionID prefixes or reconnect jitter.
pub fn start<R: Runtime>(config: FleetConfig) -> (FleetHandle, FleetEvents, FleetDriver) {
    let (handle, events, drivers) = start_sharded::<R>(config, 1);
    (handle, events, FleetDriver::join(drivers))
}

/// [`start`] with the servers spread over `shards` shards (at least 1, at most the
/// budget's `connects_per_step`): one [`FleetDriver`] per shard, to run on as many tasks or
/// threads as the runtime gives, so servers on different shards are read in parallel.
pub fn start_sharded<R: Runtime>(
    config: FleetConfig,
    shards: usize,
) -> (FleetHandle, FleetEvents, Vec<FleetDriver>) {
    let mut config = config;
    if config.seed == FleetConfig::default().seed {
        config.seed = crate::entropy();
    }
    let shards = Arc::new(shards::Shards::new(config, shards, R::now));
    let drivers = shards
        .shards
        .iter()
        .map(|shard| FleetDriver::new::<R>(shard.clone()))
        .collect();
    (
        FleetHandle {
            shards: shards.clone(),
        },
        FleetEvents::new(shards),
        drivers,
    )
}

/// The shards an adapter that can run drivers in parallel starts with: one per available
/// core but one (at least 1), which is left to the application reading the merged stream;
/// [`start_sharded`] caps it at `connects_per_step`.
///
/// Why not one per core: the reader of the stream needs a core too. Measured on 2 cores
/// with 10 flooding servers (ami-cli's `fleet_loopback` example, `AMI_FLEET_SHARDS`): 2
/// shards 0.8-1.2 M events/s, 1 shard 0.7-1.7 M in the same minutes; no gain.
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}
