//! # ami-async: the async AMI client, written once for every runtime
//!
//! Everything the async adapters share lives here: the [`Handle`] for actions (waiters,
//! cancellation when a caller stops waiting, close when the last handle and the [`Events`]
//! are gone), the [`Events`] stream (batched hand-over; also a `futures_core::Stream`), the
//! [`StatusWatch`], the [`AmiError`] type, the [`Driver`] loop that pumps a transport into
//! [`ami_proto::Client`], and TLS (feature `tls`). An adapter (`ami-tokio`,
//! `ami-async-std`) supplies only a [`Runtime`]: its clock, a timer, name lookup and TCP
//! streams.
//!
//! ```no_run
//! use ami_async::{Events, Handle};
//! use ami_proto::{Action, StreamItem};
//!
//! // `ami` and `events` come from an adapter: `ami_tokio::spawn` or `ami_async_std::spawn`.
//! async fn run(ami: Handle, mut events: Events) -> Result<(), Box<dyn std::error::Error>> {
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
//! }
//! ```
#![forbid(unsafe_code)]

mod driver;
mod events;
pub mod fleet;
mod handle;
mod resolve;
mod runtime;
mod shared;
mod status;
mod target;
#[cfg(test)]
mod tests;
/// TLS settings and a rustls configuration from PEM (feature `tls`).
#[cfg(feature = "tls")]
pub mod tls;

pub use ami_proto::Status;
pub use driver::Driver;
pub use events::Events;
pub use handle::{AmiError, Handle};
pub use runtime::{BoxFuture, DirectWrite, Runtime, Timer, Transport};
pub use status::StatusWatch;
pub use target::Target;
#[cfg(feature = "tls")]
pub use tls::{Tls, TlsConfigError};
/// The rustls this crate builds on, for configurations [`client_config_from_pem`](tls::client_config_from_pem)
/// does not make (client certificates, the system's roots): a [`Tls`] takes any
/// `rustls::ClientConfig` of this version.
#[cfg(feature = "tls")]
pub use {rustls, rustls_pki_types};

use ami_proto::{Client, ClientConfig};
use shared::Inner;

/// Creates a session on runtime `R`: the action handle, the event stream, and the
/// [`Driver`] future to run on that runtime. A config without a seed gets one from the OS,
/// so ActionID prefixes and reconnect jitter differ between processes.
pub fn session<R: Runtime>(
    config: ClientConfig,
    target: impl Into<Target>,
) -> (Handle, Events, Driver) {
    start::<R>(
        config,
        target.into(),
        #[cfg(feature = "tls")]
        None,
    )
}

/// Like [`session`], over TLS (AMI's implicit TLS, usually port 5039).
///
/// # Errors
/// When the server name is neither a DNS name nor an IP address.
#[cfg(feature = "tls")]
pub fn session_tls<R: Runtime>(
    config: ClientConfig,
    target: impl Into<Target>,
    tls: Tls,
) -> Result<(Handle, Events, Driver), TlsConfigError> {
    let tls = tls::TlsTarget::new(tls)?;
    Ok(start::<R>(config, target.into(), Some(tls)))
}

fn start<R: Runtime>(
    config: ClientConfig,
    target: Target,
    #[cfg(feature = "tls")] tls: Option<tls::TlsTarget>,
) -> (Handle, Events, Driver) {
    let config = match config.seed() {
        Some(_) => config,
        None => config.with_seed(entropy()),
    };
    // Unless the application named it, the client is named after its target, so that its
    // log records say which server they are about (a fleet does the same with its names).
    let config = config.or_name(target.to_string());
    let client = Client::new(config, R::now());
    let inner = Inner::new(client, R::now, target.to_string());
    let handle = Handle::new(&inner);
    let events = Events::new(&inner);
    let driver = Driver::new::<R>(
        inner,
        target,
        #[cfg(feature = "tls")]
        tls,
    );
    (handle, events, driver)
}

/// A seed from the OS (std's hasher keys are random per process), for configs that came
/// without one: ActionID prefixes and reconnect jitter then differ between processes.
pub fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
