//! The runtime: async-io's reactor and timers, `blocking`'s thread pool for name lookups.

use ami_async::{BoxFuture, Runtime, Timer, Transport};
use async_io::Async;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::FutureExt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The [`Runtime`] of this crate: `Async<TcpStream>`, `async_io::Timer`, and the system
/// monotonic clock (which async-io's timers use too).
#[derive(Debug, Clone, Copy)]
pub struct AsyncIo;

impl Runtime for AsyncIo {
    type Tcp = Tcp;
    type Timer = AsyncIoTimer;

    fn now() -> Instant {
        Instant::now()
    }

    fn resolve(host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(blocking::unblock(move || {
            (host.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect)
        }))
    }

    fn connect(addr: SocketAddr) -> BoxFuture<io::Result<Tcp>> {
        Box::pin(async move {
            let stream = Async::<TcpStream>::connect(addr).await?;
            stream.get_ref().set_nodelay(true)?;
            Ok(Tcp(stream))
        })
    }

    fn timer() -> AsyncIoTimer {
        AsyncIoTimer(async_io::Timer::never())
    }
}

/// A TCP stream on async-io's reactor.
#[derive(Debug)]
pub struct Tcp(Async<TcpStream>);

impl Transport for Tcp {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// async-io's timer.
#[derive(Debug)]
pub struct AsyncIoTimer(async_io::Timer);

impl Timer for AsyncIoTimer {
    fn set_at(&mut self, at: Instant) {
        self.0.set_at(at);
    }
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll(cx).map(|_| ())
    }
}
