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
//! The API is the same shape as `ami-tokio`'s: [`Handle::send`], [`Handle::send_with`],
//! [`Handle::add_filter`], [`Handle::status`], [`Handle::wait_ready`],
//! [`Handle::logoff`], [`Handle::close`], [`Handle::wait_closed`], [`Handle::stats`];
//! [`Events::recv`], [`Events::recv_many`], [`Events::try_recv`]. The status watch is this
//! crate's own [`StatusWatch`] (no tokio `watch`).
//!
//! ## Time and names
//!
//! The clock is `std::time::Instant` (async-io's timers use it too). Host names are
//! resolved at every connect on the `blocking` thread pool, never on the driver. There is
//! no TLS in this adapter: use `ami-tokio` (feature `tls`) for `amis://`.
#![forbid(unsafe_code)]

mod driver;
mod handle;
mod transport;

pub use ami_proto::{AmiError, Status};
pub use handle::{Events, Handle, StatusWatch};
pub use transport::Target;

use ami_proto::{Client, ClientConfig};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The future that runs one session's I/O. Poll it on any executor that runs async-io's
/// reactor (smol, async-std, or `block_on`); it completes when the session has closed.
#[must_use = "nothing is sent or received until the driver runs"]
pub struct Driver {
    run: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    inner: Arc<handle::Inner>,
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(run) = self.run.as_mut() else {
            return Poll::Ready(());
        };
        let done = run.as_mut().poll(cx);
        if done.is_ready() {
            self.run = None;
        }
        done
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Drop the I/O first, then tell the callers (a no-op when the run finished).
        self.run = None;
        self.inner.abandon();
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("target", &self.inner.what)
            .field("finished", &self.run.is_none())
            .finish()
    }
}

/// Creates a session: the action handle, the event stream, and the [`Driver`] future to
/// run on your executor. Reconnects are handled inside; see [`Handle::status`]. A config
/// without a seed gets one from the OS, so ActionID prefixes and reconnect jitter differ
/// between processes.
pub fn spawn(config: ClientConfig, target: impl Into<Target>) -> (Handle, Events, Driver) {
    let target = target.into();
    let config = match config.seed() {
        Some(_) => config,
        None => config.with_seed(entropy()),
    };
    let client = Client::new(config, driver::now());
    let inner = Arc::new(handle::Inner::new(client, target.to_string()));
    let handle = Handle::new(&inner);
    let events = Events::new(&inner);
    let driver = Driver {
        run: Some(Box::pin(driver::run(inner.clone(), target))),
        inner,
    };
    (handle, events, driver)
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
