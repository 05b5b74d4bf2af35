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
#![forbid(unsafe_code)]

mod driver;
pub mod fleet;
mod handle;
/// TLS configuration helpers (feature `tls`).
#[cfg(feature = "tls")]
pub mod tls_config;
mod transport;

pub use ami_proto::{AmiError, Status};
pub use handle::{Events, Handle};
pub use transport::Target;
#[cfg(feature = "tls")]
pub use transport::Tls;

use ami_proto::{Client, ClientConfig};
use std::sync::Arc;

/// Starts a session on the current tokio runtime: returns the action handle and the event
/// stream. Reconnects are handled inside; see [`Handle::status`].
///
/// # Panics
/// Outside a tokio runtime (as `tokio::spawn` does).
pub fn spawn(config: ClientConfig, target: impl Into<Target>) -> (Handle, Events) {
    start(
        config,
        target.into(),
        #[cfg(feature = "tls")]
        None,
    )
}

/// Like [`spawn`], over TLS (AMI's implicit TLS, usually port 5039).
#[cfg(feature = "tls")]
pub fn spawn_tls(config: ClientConfig, target: impl Into<Target>, tls: Tls) -> (Handle, Events) {
    start(config, target.into(), Some(tls))
}

fn start(
    config: ClientConfig,
    target: Target,
    #[cfg(feature = "tls")] tls: Option<Tls>,
) -> (Handle, Events) {
    let config = match config.seed() {
        Some(_) => config,
        None => config.with_seed(entropy()),
    };
    let client = Client::new(config, driver::now());
    let inner = Arc::new(handle::Inner::new(client));
    let driver = driver::Driver {
        inner: inner.clone(),
        target,
        #[cfg(feature = "tls")]
        tls,
    };
    tokio::spawn(driver.run());
    (
        Handle {
            inner: inner.clone(),
        },
        Events { inner },
    )
}

/// A seed from the OS: std's hasher keys are random per process.
fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
