//! A driver dropped at one of its await points (its task aborted, its runtime shut down)
//! never loses an I/O result it had: a write the transport took is never reported as never
//! sent. Runs the public `Driver` on a scripted runtime (the public `Runtime`/`Transport`/
//! `Timer` traits), polled by hand, so every step is deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_async::{BoxFuture, Runtime, Timer, Transport};
use ami_proto::{Action, ActionError, ClientConfig, Status};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

#[derive(Default)]
struct Wire {
    incoming: VecDeque<u8>,
    written: Vec<u8>,
    /// Writes are taken whole (login phase).
    open: bool,
    /// `poll_write` calls so far, and the call that takes the whole buffer.
    write_calls: u64,
    accept_at: Option<u64>,
    /// Reads always find an event (a server that floods).
    flood: bool,
    flooded: u64,
}

static WIRE: Mutex<Option<Arc<Mutex<Wire>>>> = Mutex::new(None);

struct Scripted;
struct Tcp(Arc<Mutex<Wire>>);
struct Never;

impl Runtime for Scripted {
    type Tcp = Tcp;
    type Timer = Never;
    fn now() -> Instant {
        Instant::now()
    }
    fn resolve(_: String, _: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(async { Err(io::ErrorKind::NotFound.into()) })
    }
    fn connect(_: SocketAddr) -> BoxFuture<io::Result<Tcp>> {
        let wire = WIRE.lock().unwrap().clone();
        Box::pin(async move { wire.map(Tcp).ok_or(io::ErrorKind::NotFound.into()) })
    }
    fn timer() -> Never {
        Never
    }
}

impl Timer for Never {
    fn set_at(&mut self, _: Instant) {}
    fn poll_fired(&mut self, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Transport for Tcp {
    fn poll_read(&mut self, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut w = self.0.lock().unwrap();
        if w.incoming.is_empty() && w.flood {
            w.flooded += 1;
            let e = format!(
                "Event: UserEvent\r\nUserEvent: F\r\nSeq: {}\r\n\r\n",
                w.flooded
            );
            w.incoming.extend(e.bytes());
        }
        if w.incoming.is_empty() {
            return Poll::Pending;
        }
        let n = buf.len().min(w.incoming.len());
        for (b, x) in buf.iter_mut().zip(w.incoming.drain(..n)) {
            *b = x;
        }
        Poll::Ready(Ok(n))
    }
    fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut w = self.0.lock().unwrap();
        w.write_calls += 1;
        if w.open || w.accept_at == Some(w.write_calls) {
            w.written.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Poll::Pending
    }
    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn poll<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// The driver runs up to 64 busy turns and then yields once, holding what the last source
/// reported (`woke`) until its next turn. A `Wrote(n)` held there is lost if the driver is
/// dropped during the yield (its task aborted, its runtime shut down): `Inner::finish`
/// then gives the "unwritten" rest back and closes, and an action whose every byte the
/// transport took fails `NotSent` ("safe to send again"): an Originate re-sent on that
/// word is a second call.
#[test]
fn an_action_the_transport_took_whole_is_not_reported_not_sent_when_the_driver_is_dropped_mid_run()
{
    let wire = Arc::new(Mutex::new(Wire {
        open: true,
        ..Wire::default()
    }));
    wire.lock()
        .unwrap()
        .incoming
        .extend(b"Asterisk Call Manager/11.0.0\r\n");
    *WIRE.lock().unwrap() = Some(wire.clone());
    let config = ClientConfig::builder("admin", "amp111")
        .seed(7)
        .build()
        .unwrap();
    let addr: SocketAddr = "127.0.0.1:5038".parse().unwrap();
    let (ami, _events, driver) = ami_async::session::<Scripted>(config, addr);
    let mut driver = Box::pin(driver);
    for _ in 0..4 {
        let _ = poll(driver.as_mut());
    }
    let login = String::from_utf8(wire.lock().unwrap().written.clone()).unwrap();
    let id = login
        .lines()
        .find_map(|l| l.strip_prefix("ActionID: "))
        .expect("the Login was written")
        .to_string();
    wire.lock().unwrap().incoming.extend(
        format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n")
            .bytes(),
    );
    for _ in 0..4 {
        let _ = poll(driver.as_mut());
    }
    assert!(matches!(ami.status().get(), Status::Ready { .. }));
    let before = {
        let mut w = wire.lock().unwrap();
        w.open = false;
        w.flood = true;
        w.written.len()
    };

    // The caller's action: queued, then lent to the driver, whose write waits.
    let originate = Action::new("Originate")
        .field("Channel", "Local/100@ami-test")
        .field("Application", "Wait")
        .field("Data", "1")
        .field("Async", "true");
    let mut send = Box::pin(ami.send(originate));
    let first = poll(send.as_mut());
    assert!(first.is_pending(), "{first:?}");
    assert!(
        poll(driver.as_mut()).is_pending(),
        "64 busy turns, then a yield"
    );
    assert_eq!(
        wire.lock().unwrap().written.len(),
        before,
        "nothing written yet"
    );

    // In the next run of busy turns the transport takes the whole action at the 64th
    // write attempt: the run ends with that write held across the yield.
    {
        let mut w = wire.lock().unwrap();
        w.accept_at = Some(w.write_calls + 64);
    }
    assert!(poll(driver.as_mut()).is_pending());
    let (written, bytes_out) = {
        let w = wire.lock().unwrap();
        (w.written.len() - before, ami.stats().bytes_out)
    };
    let on_wire = String::from_utf8_lossy(&wire.lock().unwrap().written[before..]).into_owned();
    assert!(
        on_wire.starts_with("Action: Originate") && on_wire.ends_with("\r\n\r\n"),
        "the transport took the whole Originate: {on_wire:?}"
    );

    // The driver's task is aborted now (dropped at its await point).
    drop(driver);
    let outcome = match poll(send.as_mut()) {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("the send hangs after the driver was dropped"),
    };
    assert!(
        !matches!(
            outcome,
            Err(ami_async::AmiError::Action(ActionError::NotSent(_)))
        ),
        "all {written} bytes of the Originate were taken by the transport (bytes_out counted \
         {bytes_out} in all), yet it failed NotSent, 'safe to send again': {outcome:?}"
    );
}
