//! What an adapter supplies: a clock, a timer, name lookup, and TCP streams. Everything else
//! (the driver loop, handles, the event stream, TLS) is written once in this crate.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// A boxed, sendable future: what [`Runtime`] hands back for lookups and connects.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An async runtime, as the driver needs it. Implemented by a marker type in each adapter
/// (`ami_tokio::Tokio`, `ami_async_std::AsyncIo`); all functions are associated, so the
/// driver holds no runtime value.
pub trait Runtime: Send + Sync + 'static {
    /// A connected TCP stream.
    type Tcp: Transport;
    /// A re-armable timer.
    type Timer: Timer;

    /// The current time on the runtime's clock (tokio's, so paused-time tests drive the core
    /// virtually).
    fn now() -> Instant;

    /// Resolves a host name without blocking the driver (on a thread pool, or the runtime's
    /// own resolver). Called at every connect, so DNS changes are picked up on reconnect,
    /// unless a lookup of the same name and port is still running (one whose connect timed
    /// out): that one is waited for instead, so a resolver that hangs holds one thread per
    /// name, not one per reconnect.
    fn resolve(host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>>;

    /// Connects to one address. The stream should have `TCP_NODELAY` set: AMI is small
    /// request/response messages, and Nagle only adds latency.
    fn connect(addr: SocketAddr) -> BoxFuture<io::Result<Self::Tcp>>;

    /// A timer that has not been armed.
    fn timer() -> Self::Timer;

    /// Whether the driver, woken by a caller's new action, lets the executor run the other
    /// ready tasks once before it writes, so that the actions of callers woken at the same
    /// time go out in one write. Worth it where a yield is cheap (tokio's scheduler); an
    /// executor that polls its reactor at every wake-up (async-io's `block_on`) pays more
    /// for the yield than the write it saves. Default: no.
    const YIELD_BEFORE_WRITE: bool = false;
}

/// A byte stream the driver polls. `Pending` must register the task's waker, as
/// `AsyncRead`/`AsyncWrite` do.
pub trait Transport: Send + Unpin + 'static {
    /// Reads into `buf`; `Ok(0)` is the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Writes some of `buf`; returns how many bytes the stream took.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Pushes out anything the stream buffered itself (TLS records); plain TCP has nothing.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Shuts the write side down.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// A handle that writes to this stream without waiting, from any thread, while the
    /// driver is not writing: a caller's new action then goes out from the caller's thread
    /// instead of waking the driver for it (a thread wake-up and a reactor round per action
    /// where the driver runs on a thread of its own). `None` (the default) where that cannot
    /// be done safely, such as TLS, whose record state the driver owns.
    fn direct_writer(&self) -> Option<Arc<dyn DirectWrite>> {
        None
    }
}

/// Writes to a connected stream without waiting (see [`Transport::direct_writer`]).
pub trait DirectWrite: Send + Sync {
    /// Writes some of `buf` now: how many bytes the stream took, `WouldBlock` when none.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

/// A one-shot timer that can be moved.
pub trait Timer: Send + Unpin + 'static {
    /// Arms the timer for `at` (replacing any earlier setting).
    fn set_at(&mut self, at: Instant);
    /// Ready once the armed instant has passed. Only polled while armed.
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}
