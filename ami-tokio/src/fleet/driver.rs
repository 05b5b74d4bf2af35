//! The tokio part of the fleet: one timer task (steps the core at its deadlines and opens
//! the transports it asks for) and one task per open transport (reads into the core, writes
//! what the core has for it). Every `if` here is about I/O; the core decides the rest.

use super::shared::{ConnState, Inner, Io, Open};
use super::Endpoint;
use crate::transport::{now, Tokio};
use ami_async::{Link, Transport};
use ami_proto::fleet::ServerId;
use ami_proto::Input;
use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

/// Read size per call: one syscall moves up to this much into a server's decoder. It is
/// also each connection's turn under the shared lock, so no server holds it for long.
const READ_CHUNK: usize = 64 << 10;

/// Ends the fleet's stream and wakes every waiter when the timer task ends for any reason
/// (closed, panicked, runtime shut down).
struct EndGuard(Arc<Inner<Endpoint>>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        let mut io = Io::default();
        self.0.lock().driver_ended(&mut io);
        io.wake_all();
    }
}

/// Steps the core: fires due timers (one step each time, which refills the connect budget)
/// and spawns a connection task for every transport the core asks for.
pub(crate) async fn run(inner: Arc<Inner<Endpoint>>) {
    let _end = EndGuard(inner.clone());
    loop {
        let (deadline, version, opens) = {
            let mut shared = inner.lock();
            if shared.closed && shared.conns.is_empty() {
                return;
            }
            (
                shared.deadline,
                shared.timer_version,
                std::mem::take(&mut shared.opens),
            )
        };
        for open in opens {
            tokio::spawn(connection(inner.clone(), open));
        }
        let changed = poll_fn(|cx| {
            let mut shared = inner.lock();
            if shared.timer_version != version || !shared.opens.is_empty() || shared.closed {
                return Poll::Ready(());
            }
            shared.timer_waker = Some(cx.waker().clone());
            Poll::Pending
        });
        tokio::select! {
            _ = sleep_until(deadline) => inner.call(|s| s.fleet.handle_timeout(now())),
            _ = changed => {}
        }
        if inner.lock().closed {
            // Let connection tasks see their transports are gone before checking again.
            tokio::task::yield_now().await;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Resolves when connection `epoch` of `server` is replaced or closed (`Gone`) or the core
/// has bytes for it (`Kicked`).
async fn next_state(inner: &Inner<Endpoint>, server: ServerId, epoch: u64) -> ConnState {
    poll_fn(
        |cx| match inner.lock().conn_state(server, epoch, cx.waker()) {
            Some(state) => Poll::Ready(state),
            None => Poll::Pending,
        },
    )
    .await
}

/// One transport: open it, then read and write until the core closes it.
async fn connection(inner: Arc<Inner<Endpoint>>, open: Open<Endpoint>) {
    let Open {
        server,
        endpoint,
        epoch,
    } = open;
    let mut opening = std::pin::pin!(ami_async::open::<Tokio>(
        &endpoint.target,
        #[cfg(feature = "tls")]
        endpoint.tls.as_ref(),
    ));
    // The core's connect timer may give up first: then the attempt is dropped. Bytes that
    // arrive meanwhile wait in the core; the loop below writes them once open.
    let opened = loop {
        tokio::select! {
            opened = &mut opening => break opened,
            state = next_state(&inner, server, epoch) => {
                if let ConnState::Gone = state {
                    return;
                }
            }
        }
    };
    let mut link: Link<_> = {
        let input = match &opened {
            Ok(_) => Input::Connected,
            Err(e) => Input::ConnectFailed(e.kind().into()),
        };
        let current = inner.call(|s| {
            if !s.is_current(server, epoch) {
                return false;
            }
            s.fleet.handle_input(now(), server, input);
            true
        });
        match opened {
            Ok(stream) if current => stream,
            Ok(_) => return,
            Err(e) => {
                log::debug!("AMI fleet {}: connect failed: {e}", endpoint.target);
                return;
            }
        }
    };
    let mut buf = vec![0u8; READ_CHUNK];
    // Bytes being written; the core's buffer is advanced only once they are written.
    let mut out: Vec<u8> = Vec::new();
    let mut out_pos = 0;
    let mut fetch = true;
    loop {
        if fetch && out_pos == out.len() {
            fetch = false;
            let more = inner.call(|s| {
                if !s.is_current(server, epoch) {
                    return None;
                }
                Some(s.fleet.transmit(server).to_vec())
            });
            let Some(more) = more else { return };
            out = more;
            out_pos = 0;
        }
        let step = poll_fn(|cx| {
            if let Some(state) = inner.lock().conn_state(server, epoch, cx.waker()) {
                return Poll::Ready(Step::State(state));
            }
            if out_pos < out.len() {
                if let Poll::Ready(r) = link.poll_write(cx, &out[out_pos..]) {
                    return Poll::Ready(Step::Wrote(r));
                }
            }
            if let Poll::Ready(Err(e)) = link.poll_flush(cx) {
                return Poll::Ready(Step::Wrote(Err(e)));
            }
            link.poll_read(cx, &mut buf).map(Step::Read)
        })
        .await;
        match step {
            Step::State(ConnState::Gone) => return,
            Step::State(ConnState::Kicked) => fetch = true,
            Step::Wrote(Ok(0)) => {
                report(
                    &inner,
                    server,
                    epoch,
                    Input::TransportError(io::ErrorKind::WriteZero),
                );
                return;
            }
            Step::Wrote(Ok(n)) => {
                out_pos += n;
                // The core counts bytes the socket took, as they are taken.
                inner.call(|s| {
                    if s.is_current(server, epoch) {
                        s.fleet.advance_transmit(server, n);
                    }
                });
                fetch = out_pos == out.len();
            }
            Step::Wrote(Err(e)) | Step::Read(Err(e)) => {
                report(&inner, server, epoch, Input::TransportError(e.kind()));
                return;
            }
            Step::Read(Ok(0)) => {
                report(&inner, server, epoch, Input::Eof);
                return;
            }
            Step::Read(Ok(n)) => report(&inner, server, epoch, Input::Received(&buf[..n])),
        }
    }
}

/// What one wait of a connection task ended with.
enum Step {
    State(ConnState),
    Wrote(io::Result<usize>),
    Read(io::Result<usize>),
}

/// Hands what happened on the transport to the core, if this connection is still current.
fn report(inner: &Inner<Endpoint>, server: ServerId, epoch: u64, input: Input<'_>) {
    inner.call(|s| {
        if s.is_current(server, epoch) {
            s.fleet.handle_input(now(), server, input);
        }
    });
}
