//! # ami-tokio: an async AMI client on tokio
//!
//! A thin driver around [`ami_proto::Client`]: one task owns the socket and moves bytes and
//! tokio's time into the core; every protocol decision (login, correlation, heartbeat,
//! reconnect, overflow) is the core's. Time comes from tokio's clock, so tests with paused
//! time run the real timers virtually.
//!
//! ```no_run
//! use ami_proto::{Action, ClientConfig, StreamItem};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::builder("admin", "amp111").build()?;
//! let (ami, mut events) = ami_tokio::spawn(config, ("127.0.0.1", 5038));
//! ami.wait_ready().await?;
//! let channels = ami.send(Action::new("CoreShowChannels")).await?;
//! println!("{} channels", channels.items().len());
//! while let Some(item) = events.recv().await {
//!     match item {
//!         StreamItem::Event(e) => println!("{}", e.event().unwrap_or("?")),
//!         StreamItem::Gap { dropped } => eprintln!("consumer behind: {dropped} events lost"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Running the driver
//!
//! [`spawn`] runs the session's driver as a tokio task ([`run_on_thread`]: on a thread of its
//! own, for one session with a heavy event stream); it ends once the session has closed
//! for good: after [`Handle::logoff`], [`Handle::close`], a final failure (a rejected
//! login), or when the last [`Handle`] and the [`Events`] have been dropped.
//!
//! Everything but the runtime (handle, event stream, status watch, the driver loop, TLS)
//! is `ami-async`'s, shared with `ami-async-std`, and so is the multi-server [`fleet`].
#![forbid(unsafe_code)]

pub mod fleet;
mod transport;

#[cfg(feature = "tls")]
pub use ami_async::{rustls, rustls_pki_types};
#[cfg(feature = "tls")]
pub use ami_async::{tls::client_config_from_pem, Tls, TlsConfigError};
pub use ami_async::{AmiError, Events, Handle, Status, StatusWatch, Target};
pub use transport::Tokio;

/// The README's Rust examples (the README loop and the fleet), compiled by `cargo test` as
/// this crate's doc tests so that the first code a newcomer copies keeps compiling.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;

use ami_proto::{ClientConfig, EventCopy};

/// Starts a session on the current tokio runtime: returns the action handle and the event
/// stream. Reconnects are handled inside; see [`Handle::status`]. A config without a seed
/// gets one from the OS, so ActionID prefixes and reconnect jitter differ between processes.
///
/// The driver is a task of this runtime: a consumer that blocks its worker thread (a
/// `std::thread::sleep`, a synchronous database call) can hold the driver up with it, and
/// with the driver nothing reads the socket, so Asterisk's writes block and its
/// `writetimeout` (100 ms by default) ends the session. Give blocking work to
/// `tokio::task::spawn_blocking`, or start the session with [`run_on_thread`], whose driver
/// no consumer can block (measured: a consumer blocking 3 s lost the session on `spawn` in 4
/// runs of 4, never on `run_on_thread`).
///
/// # Panics
/// Outside a tokio runtime (as `tokio::spawn` does).
pub fn spawn(config: ClientConfig, target: impl Into<Target>) -> (Handle, Events) {
    let (handle, events, driver) = ami_async::session::<Tokio>(for_this_runtime(config), target);
    tokio::spawn(driver);
    (handle, events)
}

/// Like [`spawn`], with the driver on a thread of its own (a current-thread tokio runtime
/// that runs nothing else), so that a busy multi-threaded runtime never moves it between
/// workers or makes it wait behind other tasks: for one session whose event stream is
/// heavy. Callers and the event stream may be on any runtime or thread. The thread ends
/// when the session closes, as the task of [`spawn`] does.
///
/// On 2 cores with the README loop on a multi-threaded runtime, 500-byte events from a
/// loopback flood: 3.03-3.49 M events/s against 2.80-2.86 M/s for [`spawn`] in the same
/// minutes (`stream_rate`, modes `tokio-thread-recv` and `tokio-recv`). A fleet of many
/// servers wants [`fleet`] instead, which shares its threads.
///
/// # Errors
/// When the thread or its runtime cannot be started.
pub fn run_on_thread(
    config: ClientConfig,
    target: impl Into<Target>,
) -> std::io::Result<(Handle, Events)> {
    // The consumer is on another thread: events stay shared slices until it copies them.
    let (handle, events, driver) = ami_async::session::<Tokio>(config, target);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("ami-driver".into())
        .spawn(move || rt.block_on(driver))?;
    Ok((handle, events))
}

/// Like [`spawn`], over TLS (AMI's implicit TLS, usually port 5039).
///
/// # Errors
/// When the server name is neither a DNS name nor an IP address.
///
/// # Panics
/// Outside a tokio runtime (as `tokio::spawn` does).
#[cfg(feature = "tls")]
pub fn spawn_tls(
    config: ClientConfig,
    target: impl Into<Target>,
    tls: Tls,
) -> Result<(Handle, Events), TlsConfigError> {
    let (handle, events, driver) =
        ami_async::session_tls::<Tokio>(for_this_runtime(config), target, tls)?;
    tokio::spawn(driver);
    Ok((handle, events))
}

/// `config` for a session on the current runtime: on a current-thread runtime the driver
/// and whoever reads [`Events`] share the one thread, so events are copied as they are
/// decoded ([`EventCopy::OnDecode`], as `ami-mio` does) unless the application chose; on a
/// multi-thread runtime they stay slices until taken, copied by the reader's thread.
fn for_this_runtime(config: ClientConfig) -> ClientConfig {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => {
            config.prefer_event_copy(EventCopy::OnDecode)
        }
        _ => config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        ClientConfig::builder("admin", "x").build().unwrap()
    }

    #[test]
    fn a_current_thread_runtime_copies_events_on_decode_unless_the_application_chose() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _in = rt.enter();
        assert_eq!(for_this_runtime(config()).event_copy(), EventCopy::OnDecode);
        let chosen = ClientConfig::builder("admin", "x")
            .event_copy(EventCopy::OnTake)
            .build()
            .unwrap();
        assert_eq!(for_this_runtime(chosen).event_copy(), EventCopy::OnTake);
    }

    #[test]
    fn a_multi_thread_runtime_leaves_events_to_be_copied_by_their_reader() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let _in = rt.enter();
        assert_eq!(for_this_runtime(config()).event_copy(), EventCopy::OnTake);
    }
}
