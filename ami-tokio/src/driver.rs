//! The driver task: moves bytes and time between the transport and the core. No protocol
//! decisions are made here; every `if` is about I/O.

use crate::handle::Inner;
use crate::transport::{self, Stream, Target};
use ami_proto::{Input, Notice, Output};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

/// Read size per call: one syscall moves up to this much into the decoder.
const READ_CHUNK: usize = 64 << 10;

/// The current time from tokio's clock, so paused-time tests drive the core virtually.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

pub(crate) struct Driver {
    pub(crate) inner: Arc<Inner>,
    pub(crate) target: Target,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::transport::Tls>,
}

async fn read_some(r: Option<&mut ReadHalf<Stream>>, buf: &mut [u8]) -> io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn write_some(w: Option<&mut WriteHalf<Stream>>, buf: &[u8]) -> io::Result<usize> {
    match w {
        Some(w) if !buf.is_empty() => w.write(buf).await,
        _ => std::future::pending().await,
    }
}

async fn connect_done(c: Option<&mut Connecting>) -> io::Result<Stream> {
    match c {
        Some(c) => c.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Runs when the driver ends for any reason (closed, panicked, runtime shut down): callers
/// still waiting get `AmiError::Closed` instead of hanging, and the event stream ends.
struct EndGuard(Arc<Inner>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        let mut shared = self.0.lock();
        shared.driver_done = true;
        // Dropping the senders wakes every waiting `send` with an error.
        shared.waiters.clear();
        if let Some(w) = shared.event_waker.take() {
            w.wake();
        }
        drop(shared);
        self.0.mark_closed();
    }
}

impl Driver {
    pub(crate) async fn run(self) {
        let _end = EndGuard(self.inner.clone());
        let mut reader: Option<ReadHalf<Stream>> = None;
        let mut writer: Option<WriteHalf<Stream>> = None;
        let mut connecting: Option<Connecting> = None;
        let mut out: Vec<u8> = Vec::new();
        let mut out_pos = 0;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let mut finished = false;
            let deadline = {
                let mut shared = self.inner.lock();
                let deadline = loop {
                    match shared.client.poll_output() {
                        Output::Connect => {
                            let target = self.target.clone();
                            #[cfg(feature = "tls")]
                            let tls = self.tls.clone();
                            connecting = Some(Box::pin(async move {
                                #[cfg(feature = "tls")]
                                return transport::open(&target, tls.as_ref()).await;
                                #[cfg(not(feature = "tls"))]
                                transport::open(&target).await
                            }));
                        }
                        Output::Close => {
                            reader = None;
                            writer = None;
                            connecting = None;
                            out.clear();
                            out_pos = 0;
                        }
                        Output::Notice(Notice::Completed { id, outcome }) => {
                            if let Some(tx) = shared.waiters.remove(&id) {
                                // The caller may have stopped waiting; that is its choice.
                                let _ = tx.send(outcome);
                            }
                        }
                        Output::Notice(Notice::Disconnected { reason, .. }) => {
                            log::info!("AMI {}: disconnected ({reason})", self.target);
                        }
                        Output::Notice(Notice::Closed { .. }) => finished = true,
                        Output::Wait(d) => break d,
                        _ => {}
                    }
                };
                self.inner.set_status(shared.client.status());
                if out_pos == out.len() && writer.is_some() {
                    out.clear();
                    out_pos = 0;
                    out.extend_from_slice(shared.client.transmit());
                    let n = out.len();
                    shared.client.advance_transmit(n);
                }
                if shared.client.events_queued() > 0 {
                    if let Some(w) = shared.event_waker.take() {
                        w.wake();
                    }
                }
                if finished {
                    shared.driver_done = true;
                    if let Some(w) = shared.event_waker.take() {
                        w.wake();
                    }
                }
                deadline
            };
            // Nobody holds a Handle or the Events any more: close instead of reconnecting
            // forever for no one (the guard above and this task hold the other references).
            if !finished && Arc::strong_count(&self.inner) <= 2 {
                self.inner.lock().client.close(now());
                continue;
            }
            if finished {
                if let Some(w) = writer.as_mut() {
                    // Best effort: a Logoff may still be in the buffer.
                    let _ = w.write_all(&out[out_pos..]).await;
                    let _ = w.shutdown().await;
                }
                return;
            }
            tokio::select! {
                biased;
                opened = connect_done(connecting.as_mut()) => {
                    connecting = None;
                    let input = match opened {
                        Ok(stream) => {
                            let (r, w) = tokio::io::split(stream);
                            reader = Some(r);
                            writer = Some(w);
                            Input::Connected
                        }
                        Err(e) => {
                            log::debug!("AMI {}: connect failed: {e}", self.target);
                            Input::ConnectFailed
                        }
                    };
                    self.inner.lock().client.handle_input(now(), input);
                }
                written = write_some(writer.as_mut(), &out[out_pos..]) => match written {
                    Ok(n) => out_pos += n,
                    Err(e) => {
                        reader = None;
                        writer = None;
                        self.inner.lock().client.handle_input(now(), Input::TransportError(e.kind()));
                    }
                },
                read = read_some(reader.as_mut(), &mut buf) => {
                    let mut shared = self.inner.lock();
                    match read {
                        Ok(0) => {
                            reader = None;
                            writer = None;
                            shared.client.handle_input(now(), Input::Eof);
                        }
                        Ok(n) => shared.client.handle_input(now(), Input::Received(&buf[..n])),
                        Err(e) => {
                            reader = None;
                            writer = None;
                            shared.client.handle_input(now(), Input::TransportError(e.kind()));
                        }
                    }
                }
                _ = sleep_until(deadline) => self.inner.lock().client.handle_timeout(now()),
                _ = self.inner.wake_driver.notified() => {}
            }
        }
    }
}
