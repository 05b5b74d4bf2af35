//! The driver: moves bytes and time between the transport and the core. No protocol
//! decisions are made here; every `if` is about I/O.

use crate::handle::{Inner, Io};
use crate::transport::{self, Target};
use ami_proto::Input;
use async_io::{Async, Timer};
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use std::future::{poll_fn, Future};
use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Read size per call: one syscall moves up to this much into the decoder.
const READ_CHUNK: usize = 64 << 10;

/// Turns in a row that found work without waiting, after which the driver yields to its
/// executor once, so that a socket that is always readable cannot starve the other tasks
/// of a single-threaded executor.
const TURNS_BEFORE_YIELD: u32 = 64;

/// How long the driver may spend writing out what is left (a Logoff) once the session has
/// closed, before it drops the socket anyway.
const FINAL_FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// The clock the core runs on: the system's monotonic clock, as async-io's timers use.
pub(crate) fn now() -> Instant {
    Instant::now()
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<Async<TcpStream>>> + Send>>;

/// What woke the driver.
enum Woke {
    Opened(io::Result<Async<TcpStream>>),
    Wrote(io::Result<usize>),
    Read(io::Result<usize>),
    Deadline,
    Notified,
}

/// The I/O state of one session.
struct Pump {
    inner: Arc<Inner>,
    target: Target,
    stream: Option<Async<TcpStream>>,
    connecting: Option<Connecting>,
    out: Vec<u8>,
    out_pos: usize,
    buf: Vec<u8>,
    timer: Timer,
    armed: Option<Instant>,
}

impl Pump {
    /// Drains the core's outputs, takes its bytes to write, wakes whoever has news. Returns
    /// the next deadline, or `None` once the session is over.
    fn drain(&mut self, wake: &mut Vec<Waker>) -> Option<Option<Instant>> {
        let inner = self.inner.clone();
        let mut shared = inner.lock();
        let mut finished = false;
        let deadline = loop {
            let output = shared.client.poll_output();
            match shared.deliver(output, &inner.what, wake) {
                Io::Connect => {
                    let target = self.target.clone();
                    self.connecting = Some(Box::pin(async move { transport::open(&target).await }));
                }
                Io::Close => {
                    self.stream = None;
                    self.connecting = None;
                    self.out.clear();
                    self.out_pos = 0;
                }
                Io::Closed => finished = true,
                Io::Wait(d) => break d,
                Io::Next => {}
            }
        };
        shared.publish_status(wake);
        if self.out_pos == self.out.len() && self.stream.is_some() {
            self.out.clear();
            self.out_pos = 0;
            self.out.extend_from_slice(shared.client.transmit());
            let n = self.out.len();
            shared.client.advance_transmit(n);
        }
        shared.wake_consumer(wake);
        if finished {
            shared.finish(wake);
            return None;
        }
        Some(deadline)
    }

    /// Polls every source, in priority order: connect, write, read, deadline, callers.
    fn poll_sources(&mut self, cx: &mut Context<'_>) -> Poll<Woke> {
        if let Some(c) = self.connecting.as_mut() {
            if let Poll::Ready(r) = c.as_mut().poll(cx) {
                return Poll::Ready(Woke::Opened(r));
            }
        }
        if let Some(s) = self.stream.as_mut() {
            if self.out_pos < self.out.len() {
                if let Poll::Ready(r) = Pin::new(&mut *s).poll_write(cx, &self.out[self.out_pos..])
                {
                    return Poll::Ready(Woke::Wrote(r));
                }
            }
            if let Poll::Ready(r) = Pin::new(s).poll_read(cx, &mut self.buf) {
                return Poll::Ready(Woke::Read(r));
            }
        }
        if self.armed.is_some() && Pin::new(&mut self.timer).poll(cx).is_ready() {
            self.armed = None;
            return Poll::Ready(Woke::Deadline);
        }
        self.inner.lock().poll_notified(cx).map(|()| Woke::Notified)
    }

    /// Reports what happened to the core.
    fn handle(&mut self, woke: Woke) {
        let input_error = |e: io::Error| Input::TransportError(e.kind());
        match woke {
            Woke::Opened(opened) => {
                self.connecting = None;
                let input = match opened {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        Input::Connected
                    }
                    Err(e) => {
                        log::debug!("AMI {}: connect failed: {e}", self.target);
                        Input::ConnectFailed
                    }
                };
                self.inner.lock().client.handle_input(now(), input);
            }
            Woke::Wrote(Ok(0)) => {
                self.stream = None;
                let e = io::Error::from(io::ErrorKind::WriteZero);
                self.inner.lock().client.handle_input(now(), input_error(e));
            }
            Woke::Wrote(Ok(n)) => self.out_pos += n,
            Woke::Wrote(Err(e)) => {
                self.stream = None;
                self.inner.lock().client.handle_input(now(), input_error(e));
            }
            Woke::Read(Ok(0)) => {
                self.stream = None;
                self.inner.lock().client.handle_input(now(), Input::Eof);
            }
            Woke::Read(Ok(n)) => {
                let bytes = &self.buf[..n];
                self.inner
                    .lock()
                    .client
                    .handle_input(now(), Input::Received(bytes));
            }
            Woke::Read(Err(e)) => {
                self.stream = None;
                self.inner.lock().client.handle_input(now(), input_error(e));
            }
            Woke::Deadline => self.inner.lock().client.handle_timeout(now()),
            Woke::Notified => {}
        }
    }

    fn arm(&mut self, deadline: Option<Instant>) {
        if deadline != self.armed {
            match deadline {
                Some(d) => self.timer.set_at(d),
                None => self.timer = Timer::never(),
            }
            self.armed = deadline;
        }
    }

    /// Best effort: a Logoff may still be waiting to be written.
    async fn flush_and_shut(&mut self) {
        if let Some(mut s) = self.stream.take() {
            let rest = &self.out[self.out_pos..];
            let write = async {
                let _ = s.write_all(rest).await;
                let _ = s.close().await;
            };
            futures_lite::future::or(write, async {
                Timer::after(FINAL_FLUSH_LIMIT).await;
            })
            .await;
        }
    }
}

pub(crate) async fn run(inner: Arc<Inner>, target: Target) {
    let mut pump = Pump {
        inner,
        target,
        stream: None,
        connecting: None,
        out: Vec::new(),
        out_pos: 0,
        buf: vec![0u8; READ_CHUNK],
        timer: Timer::never(),
        armed: None,
    };
    let mut wake = Vec::new();
    let mut busy_turns = 0u32;
    loop {
        let deadline = pump.drain(&mut wake);
        wake.drain(..).for_each(Waker::wake);
        let Some(deadline) = deadline else {
            pump.flush_and_shut().await;
            return;
        };
        pump.arm(deadline);
        let mut waited = false;
        let woke = poll_fn(|cx| {
            let r = pump.poll_sources(cx);
            waited |= r.is_pending();
            r
        })
        .await;
        pump.handle(woke);
        busy_turns = if waited { 0 } else { busy_turns + 1 };
        if busy_turns >= TURNS_BEFORE_YIELD {
            busy_turns = 0;
            futures_lite::future::yield_now().await;
        }
    }
}
