//! The runtime: tokio's clock, timers, resolver and TCP streams.

use ami_async::{BoxFuture, Runtime, Timer, Transport};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The [`Runtime`] of this crate: tokio's `TcpStream`, `Sleep` and clock (so tests with
/// paused time drive the core's timers virtually).
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

impl Runtime for Tokio {
    type Tcp = Tcp;
    type Timer = TokioTimer;

    fn now() -> Instant {
        now()
    }

    fn resolve(host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }

    fn connect(addr: SocketAddr) -> BoxFuture<io::Result<Tcp>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Tcp(stream))
        })
    }

    fn timer() -> TokioTimer {
        TokioTimer(None)
    }

    const YIELD_BEFORE_WRITE: bool = true;
}

/// The current time from tokio's clock.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A TCP stream on tokio's reactor.
#[derive(Debug)]
pub struct Tcp(TcpStream);

impl Transport for Tcp {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        Pin::new(&mut self.0)
            .poll_read(cx, &mut buf)
            .map_ok(|()| buf.filled().len())
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// tokio's timer, created at its first arming (so that creating a session needs no timer
/// driver until it runs).
#[derive(Debug)]
pub struct TokioTimer(Option<Pin<Box<tokio::time::Sleep>>>);

impl Timer for TokioTimer {
    fn set_at(&mut self, at: Instant) {
        let at = tokio::time::Instant::from_std(at);
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}
