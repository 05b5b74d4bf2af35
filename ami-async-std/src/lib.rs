//! # ami-async-std: an async AMI client for async-std and smol users
//!
//! A thin driver around [`ami_proto::Client`], built on the runtime-neutral `futures-io`
//! traits and `async-io` (`Async<TcpStream>`, `Timer`): the same reactor that async-std and
//! smol run on, without depending on either. (The `async-std` crate itself is discontinued
//! upstream, RUSTSEC-2025-0052; this crate does not pull it in.) One future owns the socket
//! and moves bytes and the clock into the core; every protocol decision (login,
//! correlation, heartbeat, reconnect, overflow) is the core's.
//!
//! ```no_run
//! use ami_proto::{Action, ClientConfig, StreamItem};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::builder("admin", "amp111").build()?;
//! let (ami, mut events, driver) = ami_async_std::spawn(config, ("127.0.0.1", 5038));
//! // Run the driver on your executor: `smol::spawn(driver).detach()` or
//! // `async_std::task::spawn(driver)`. Here it gets a thread of its own.
//! std::thread::spawn(move || async_io::block_on(driver));
//! async_io::block_on(async {
//!     ami.wait_ready().await?;
//!     let channels = ami.send(Action::new("CoreShowChannels")).await?;
//!     println!("{} channels", channels.items().len());
//!     while let Some(item) = events.recv().await {
//!         match item {
//!             StreamItem::Event(e) => println!("{}", e.event().unwrap_or("?")),
//!             StreamItem::Gap { dropped } => eprintln!("consumer behind: {dropped} events lost"),
//!             _ => {}
//!         }
//!     }
//!     Ok(())
//! })
//! # }
//! ```
//!
//! ## Running the driver
//!
//! [`spawn`] returns the [`Driver`] as a plain `Future + Send + 'static`: nothing happens
//! until an executor polls it. Spawn it on the executor you already have (smol,
//! async-std, `async_executor`, or `futures_lite::future::block_on` on a thread of its
//! own). [`run_on_thread`] does the last for you. The driver returns once the session has
//! closed for good: after [`Handle::logoff`], [`Handle::close`], a final failure (a
//! rejected login), or when the last [`Handle`] and the [`Events`] have been dropped.
//! Dropping the driver before that closes the session: pending actions fail, the status
//! becomes `Closed`.
//!
//! On a `smol::Executor` of your own, run your code as a task of it too
//! (`smol::block_on(ex.run(ex.spawn(work)))`), not as the future handed to `ex.run`:
//! smol polls that future only between batches of task runs, and a driver reading a flood
//! is a task that is always ready again, so a caller there waited ~100 ms per Ping where
//! a task of the same executor waited ~1 ms. A driver detached on such an executor stops
//! when nothing runs the executor any more (`ex.run` returned): keep it running for as
//! long as the session should live, or use `smol::spawn` (smol's global executor has
//! threads of its own) or [`run_on_thread`]. (`ami-async-std/tests/smol_*.rs` run sessions
//! and fleets on smol against hostile servers.)
//!
//! A caller that waits on one action at a time from plain threads gets its answers soonest
//! when it parks while it waits: with the driver on a thread of its own, callers in
//! `futures_lite::future::block_on` (a futex until woken) made 1.08 of a raw socket's
//! Ping rate at one in flight, callers in `async_io::block_on` 0.86, because a caller
//! that waits in async-io's reactor sees the driver's socket first and must pass each
//! wake-up on (`ping_rate`, `AMI_PING_ROUNDS=7`, clients `async-std-parked` and
//! `async-std`, 2026-12-04).
//!
//! The API is the same shape as `ami-tokio`'s: [`Handle::send`], [`Handle::send_with`],
//! [`Handle::add_filter`], [`Handle::set_event_mask`], [`Handle::status`],
//! [`Handle::wait_ready`], [`Handle::logoff`], [`Handle::close`], [`Handle::wait_closed`],
//! [`Handle::stats`];
//! [`Events::recv`], [`Events::recv_many`], [`Events::try_recv`]. The status watch is this
//! crate's own [`StatusWatch`] (no tokio `watch`).
//!
//! ## Time and names
//!
//! The clock is `std::time::Instant` (async-io's timers use it too). Host names are
//! resolved at every connect on the `blocking` thread pool, never on the driver (a connect
//! that finds a lookup of the name still running, its attempt timed out, waits for that
//! one rather than blocking one more thread); the resolved addresses are tried 250 ms apart and side by side, families alternating (RFC
//! 8305), as on every runtime. TLS (feature `tls`, `spawn_tls`) is `ami-async`'s
//! one implementation over rustls.
//!
//! Everything but the transport (handle, event stream, status watch, the driver loop, TLS,
//! the multi-server [`fleet`]) is `ami-async`'s, shared with `ami-tokio`.
#![forbid(unsafe_code)]

pub mod fleet;
mod transport;

#[cfg(feature = "tls")]
pub use ami_async::{rustls, rustls_pki_types};
#[cfg(feature = "tls")]
pub use ami_async::{tls::client_config_from_pem, Tls, TlsConfigError};
pub use ami_async::{AmiError, Driver, Events, Handle, Status, StatusWatch, Target};
pub use transport::AsyncIo;

use ami_proto::ClientConfig;

/// Creates a session: the action handle, the event stream, and the [`Driver`] future to
/// run on your executor. Reconnects are handled inside; see [`Handle::status`]. A config
/// without a seed gets one from the OS, so ActionID prefixes and reconnect jitter differ
/// between processes.
pub fn spawn(config: ClientConfig, target: impl Into<Target>) -> (Handle, Events, Driver) {
    ami_async::session::<AsyncIo>(config, target)
}

/// Like [`spawn`], over TLS (AMI's implicit TLS, usually port 5039).
///
/// # Errors
/// When the server name is neither a DNS name nor an IP address.
#[cfg(feature = "tls")]
pub fn spawn_tls(
    config: ClientConfig,
    target: impl Into<Target>,
    tls: Tls,
) -> Result<(Handle, Events, Driver), TlsConfigError> {
    ami_async::session_tls::<AsyncIo>(config, target, tls)
}

/// Like [`spawn`], with the driver on a dedicated thread (`async_io::block_on`), for
/// programs that have no executor to spare. The thread ends when the session closes.
///
/// # Errors
/// When the thread cannot be started.
pub fn run_on_thread(
    config: ClientConfig,
    target: impl Into<Target>,
) -> std::io::Result<(Handle, Events)> {
    let (handle, events, driver) = spawn(config, target);
    std::thread::Builder::new()
        .name("ami-driver".into())
        .spawn(move || async_io::block_on(driver))?;
    Ok((handle, events))
}
