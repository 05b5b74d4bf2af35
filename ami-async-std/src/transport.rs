//! The runtime: async-io's reactor and timers, `blocking`'s thread pool for name lookups.

use ami_async::{BoxFuture, DirectWrite, Runtime, Timer, Transport};
use async_io::Async;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::FutureExt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
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
            Ok(Tcp::new(stream))
        })
    }

    fn timer() -> AsyncIoTimer {
        AsyncIoTimer(async_io::Timer::never())
    }
}

/// A TCP stream on async-io's reactor.
#[derive(Debug)]
pub struct Tcp {
    /// Shared with the callers' [`DirectWrite`]rs: `&Async<TcpStream>` reads and writes.
    io: Arc<Async<TcpStream>>,
    read: ReadState,
}

impl Tcp {
    fn new(io: Async<TcpStream>) -> Tcp {
        Tcp {
            io: Arc::new(io),
            read: ReadState::Unknown,
        }
    }
}

/// Writes from a caller's thread: the socket is non-blocking, so a full send buffer is
/// `WouldBlock` at once and the driver writes instead.
struct DirectTcp(Arc<Async<TcpStream>>);

impl DirectWrite for DirectTcp {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut stream: &TcpStream = self.0.get_ref();
        stream.write(buf)
    }
}

/// What the last read said about the socket. async-io's `poll_read` always tries the read
/// first; after a read that emptied the socket that try ends in EAGAIN, one syscall per
/// round trip for nothing. So after a short read this transport waits for readiness first,
/// as tokio does.
#[derive(Debug, Clone, Copy)]
enum ReadState {
    /// Read first.
    Unknown,
    /// The last read returned less than asked: the socket was empty then. A readiness the
    /// reactor reported before that read is stale and is looked at once, not trusted.
    Drained,
    /// Waiting for a readiness reported after the socket was found empty.
    Waiting,
}

impl Transport for Tcp {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if let ReadState::Drained = self.read {
            // Consumes a stale readiness (or registers interest); either way wait below. If
            // it was fresh, re-arming the one-shot interest reports it again at once.
            if let Poll::Ready(Err(e)) = self.io.poll_readable(cx) {
                return Poll::Ready(Err(e));
            }
            self.read = ReadState::Waiting;
        }
        if let ReadState::Waiting = self.read {
            match self.io.poll_readable(cx) {
                Poll::Ready(Ok(())) => self.read = ReadState::Unknown,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let r = Pin::new(&mut &*self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 && n < buf.len() {
                self.read = ReadState::Drained;
            }
        }
        r
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.io).poll_write(cx, buf)
    }
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.io).poll_close(cx)
    }
    fn direct_writer(&self) -> Option<Arc<dyn DirectWrite>> {
        Some(Arc::new(DirectTcp(Arc::clone(&self.io))))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::future::poll_fn;
    use std::io::Write;
    use std::time::Duration;

    /// Reads once through the transport, failing after 5 s instead of hanging.
    fn read(tcp: &mut Tcp) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = async_io::block_on(futures_lite::future::or(
            async { Some(poll_fn(|cx| tcp.poll_read(cx, &mut buf)).await.unwrap()) },
            async {
                async_io::Timer::after(Duration::from_secs(5)).await;
                None
            },
        ))
        .expect("the bytes were never read");
        buf[..n].to_vec()
    }

    #[test]
    fn bytes_that_arrive_after_a_short_read_are_read_whenever_they_come() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tcp = async_io::block_on(AsyncIo::connect(addr)).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(b"one").unwrap();
        assert_eq!(read(&mut tcp), b"one");
        assert!(matches!(tcp.read, ReadState::Drained));
        // Bytes already waiting when the transport looks again (the readiness it saw before
        // the short read is stale, this one is not)...
        server.write_all(b"two").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(read(&mut tcp), b"two");
        // ...and bytes that come only while it waits.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            server.write_all(b"three").unwrap();
            server
        });
        assert_eq!(read(&mut tcp), b"three");
        drop(writer.join().unwrap());
        // The end of the stream after a short read.
        assert_eq!(read(&mut tcp), b"");
    }
}
