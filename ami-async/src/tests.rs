//! Unit tests of this crate's own pieces on a scripted in-memory transport: writes counted
//! as the transport takes them, the batched hand-over, and the `Stream` impl. The driver is
//! polled by hand on the test thread, so every step is deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::runtime::{BoxFuture, DirectWrite, Runtime, Timer, Transport};
use crate::shared::BATCH_ITEMS;
use crate::{Driver, Events, Handle};
use ami_proto::{ClientConfig, Status, StreamItem};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// The server's side of the in-memory link.
#[derive(Default)]
struct Wire {
    /// Bytes the client will read.
    incoming: VecDeque<u8>,
    /// Bytes the client wrote (that the transport took).
    written: Vec<u8>,
    /// How many more bytes the transport takes before it reports `Pending`.
    budget: usize,
    /// Writes the transport took (calls that took bytes).
    writes: usize,
    /// The transport offers callers a direct writer (as plain TCP on async-io does).
    direct: bool,
    /// Writes made through the direct writer.
    direct_writes: usize,
    /// The direct writer takes nothing and says `Ok(0)` (not the `WouldBlock` the trait
    /// asks for), as a misbehaving stream might.
    direct_takes_nothing: bool,
    /// The server floods: a read that finds nothing gets a fresh event, so the socket is
    /// never found empty.
    flood: bool,
    /// Events the flood made.
    flooded: u64,
    /// Times the client shut the transport down (`poll_close`: TLS close_notify, TCP FIN).
    closes: usize,
    /// The server closed its end: once `incoming` is drained, reads find the end of the
    /// stream.
    eof: bool,
    /// The connection was reset: reads fail.
    reset: bool,
    /// Who last found nothing to read, or no room to write: woken by [`Wire::wake`] (the
    /// fleet's driver visits a transport only when it is woken).
    wakers: Vec<Waker>,
}

impl Wire {
    /// Wakes whoever waits for this wire (after the test gave it input or room).
    fn wake(wire: &Mutex<Wire>) {
        let wakers = std::mem::take(&mut wire.lock().unwrap().wakers);
        wakers.into_iter().for_each(Waker::wake);
    }
}

thread_local! {
    /// The wire the next connect on this thread gets.
    static WIRE: RefCell<Option<Arc<Mutex<Wire>>>> = const { RefCell::new(None) };
    /// How far this thread's clock runs ahead of the real one: a test moves time on
    /// without sleeping.
    static AHEAD: std::cell::Cell<std::time::Duration> = const { std::cell::Cell::new(std::time::Duration::ZERO) };
}

struct Scripted;
struct ScriptedTcp(Arc<Mutex<Wire>>);
struct NeverTimer;

impl Runtime for Scripted {
    type Tcp = ScriptedTcp;
    type Timer = NeverTimer;
    fn now() -> Instant {
        Instant::now() + AHEAD.with(|a| a.get())
    }
    fn resolve(_: String, _: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(async { Err(io::ErrorKind::NotFound.into()) })
    }
    fn connect(_: SocketAddr) -> BoxFuture<io::Result<ScriptedTcp>> {
        let wire = WIRE.with(|w| w.borrow().clone());
        Box::pin(async move { wire.map(ScriptedTcp).ok_or(io::ErrorKind::NotFound.into()) })
    }
    fn timer() -> NeverTimer {
        NeverTimer
    }
    // As tokio's: the yield before a write is exercised here.
    const YIELD_BEFORE_WRITE: bool = true;
}

impl Transport for ScriptedTcp {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut w = self.0.lock().unwrap();
        if w.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if w.incoming.is_empty() && w.flood {
            w.flooded += 1;
            let event = format!(
                "Event: UserEvent\r\nUserEvent: T\r\nSeq: {}\r\n\r\n",
                w.flooded
            );
            w.incoming.extend(event.bytes());
        }
        if w.incoming.is_empty() && w.eof {
            return Poll::Ready(Ok(0));
        }
        if w.incoming.is_empty() {
            w.wakers.push(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(w.incoming.len());
        for (b, x) in buf.iter_mut().zip(w.incoming.drain(..n)) {
            *b = x;
        }
        Poll::Ready(Ok(n))
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut w = self.0.lock().unwrap();
        let n = buf.len().min(w.budget);
        if n == 0 {
            w.wakers.push(cx.waker().clone());
            return Poll::Pending;
        }
        w.budget -= n;
        w.writes += 1;
        w.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.lock().unwrap().closes += 1;
        Poll::Ready(Ok(()))
    }
    fn direct_writer(&self) -> Option<Arc<dyn DirectWrite>> {
        let direct = self.0.lock().unwrap().direct;
        direct.then(|| Arc::new(ScriptedDirect(self.0.clone())) as Arc<dyn DirectWrite>)
    }
}

struct ScriptedDirect(Arc<Mutex<Wire>>);

impl DirectWrite for ScriptedDirect {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.0.lock().unwrap();
        if w.direct_takes_nothing {
            return Ok(0);
        }
        let n = buf.len().min(w.budget);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        w.budget -= n;
        w.direct_writes += 1;
        w.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Timer for NeverTimer {
    fn set_at(&mut self, _: Instant) {}
    fn poll_fired(&mut self, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

/// [`Scripted`] with a timer that fires once the scripted clock has passed its instant, as
/// a runtime's timer does after the clock jumped (a VM resumed): the timer and the socket
/// are then ready together.
struct Timed;
struct ClockTimer(Option<Instant>);

impl Runtime for Timed {
    type Tcp = ScriptedTcp;
    type Timer = ClockTimer;
    fn now() -> Instant {
        Scripted::now()
    }
    fn resolve(host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Scripted::resolve(host, port)
    }
    fn connect(addr: SocketAddr) -> BoxFuture<io::Result<ScriptedTcp>> {
        Scripted::connect(addr)
    }
    fn timer() -> ClockTimer {
        ClockTimer(None)
    }
    const YIELD_BEFORE_WRITE: bool = true;
}

impl Timer for ClockTimer {
    fn set_at(&mut self, at: Instant) {
        self.0 = Some(at);
    }
    fn poll_fired(&mut self, _: &mut Context<'_>) -> Poll<()> {
        match self.0 {
            Some(at) if Timed::now() >= at => {
                self.0 = None;
                Poll::Ready(())
            }
            _ => Poll::Pending,
        }
    }
}

const BANNER: &str = "Asterisk Call Manager/11.0.0\r\n";

struct Rig {
    wire: Arc<Mutex<Wire>>,
    handle: Handle,
    events: Events,
    driver: Driver,
}

impl Rig {
    fn new(budget: usize, cap: usize) -> Rig {
        Rig::with_wire(
            Wire {
                budget,
                ..Wire::default()
            },
            cap,
        )
    }

    /// A logged-in client whose transport takes every byte and offers a direct writer.
    fn direct() -> Rig {
        let mut rig = Rig::with_wire(
            Wire {
                budget: usize::MAX,
                direct: true,
                ..Wire::default()
            },
            1024,
        );
        rig.log_in();
        rig
    }

    fn with_wire(wire: Wire, cap: usize) -> Rig {
        let config = ClientConfig::builder("admin", "amp111")
            .seed(7)
            .event_queue_cap(cap)
            .build()
            .unwrap();
        Rig::with_config(wire, config)
    }

    fn with_config(wire: Wire, config: ClientConfig) -> Rig {
        Rig::with_config_on::<Scripted>(wire, config)
    }

    /// [`with_config`](Self::with_config) on runtime `R`.
    fn with_config_on<R: Runtime>(wire: Wire, config: ClientConfig) -> Rig {
        let wire = Arc::new(Mutex::new(wire));
        wire.lock().unwrap().incoming.extend(BANNER.bytes());
        WIRE.with(|w| *w.borrow_mut() = Some(wire.clone()));
        let addr: SocketAddr = "127.0.0.1:5038".parse().unwrap();
        let (handle, events, driver) = crate::session::<R>(config, addr);
        Rig {
            wire,
            handle,
            events,
            driver,
        }
    }

    /// Polls the driver until it waits (it yields after a run of busy turns: poll again)
    /// or finishes.
    fn spin(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..8 {
            if Pin::new(&mut self.driver).poll(&mut cx).is_ready() {
                return;
            }
        }
    }

    fn written(&self) -> String {
        String::from_utf8_lossy(&self.wire.lock().unwrap().written).into_owned()
    }

    fn send(&self, text: &str) {
        self.wire.lock().unwrap().incoming.extend(text.bytes());
    }

    /// Answers the Login the client wrote, and spins until Ready.
    fn log_in(&mut self) {
        self.spin();
        let written = self.written();
        let id = written
            .lines()
            .find_map(|l| l.strip_prefix("ActionID: "))
            .expect("a Login with an ActionID");
        self.send(&format!(
            "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
        ));
        self.spin();
        assert!(matches!(self.handle.status().get(), Status::Ready { .. }));
    }

    fn storm(&self, n: usize) {
        let mut text = String::new();
        for i in 0..n {
            text += &format!("Event: UserEvent\r\nUserEvent: T\r\nSeq: {i}\r\n\r\n");
        }
        self.send(&text);
    }
}

fn seq(item: &StreamItem) -> Option<u64> {
    match item {
        StreamItem::Event(m) => m.get_str("Seq").and_then(|s| s.parse().ok()),
        _ => None,
    }
}

#[test]
fn bytes_out_counts_only_what_the_transport_took() {
    let mut rig = Rig::new(7, 100);
    rig.spin();
    // The Login is longer than 7 bytes: the transport took 7 and then said Pending.
    assert_eq!(rig.written().len(), 7);
    assert_eq!(rig.handle.stats().bytes_out, 7);
    rig.wire.lock().unwrap().budget = usize::MAX;
    rig.spin();
    let written = rig.written();
    assert!(written.contains("Action: Login"), "{written}");
    assert!(written.ends_with("\r\n\r\n"), "{written}");
    assert_eq!(rig.handle.stats().bytes_out, written.len() as u64);
}

#[test]
fn a_session_whose_events_were_dropped_keeps_none_and_counts_them_while_actions_go_on() {
    // `let (ami, _) = spawn(..)`: a program that only sends actions. Its session must not
    // fill a queue (and the hand-off) with events for nobody, nor warn that a consumer is
    // behind; every event is counted, and actions still complete.
    const N: usize = 3 * BATCH_ITEMS;
    const READ: usize = 10;
    let mut rig = Rig::new(usize::MAX, 10 * N);
    rig.log_in();
    rig.storm(N);
    rig.spin();
    // The consumer reads a few events: then one batch waits in its own buffer, the next in
    // the hand-off, the rest in the core's queue.
    let mut cx = Context::from_waker(Waker::noop());
    let mut read = 0;
    for _ in 0..100 {
        match rig.events.poll_recv(&mut cx) {
            Poll::Ready(Some(item)) => read += usize::from(seq(&item).is_some()),
            Poll::Ready(None) => panic!("ended"),
            Poll::Pending => rig.spin(),
        }
        if read == READ {
            break;
        }
    }
    assert_eq!(read, READ);
    rig.spin();
    assert_eq!(
        rig.events.inner.handoff().items.len(),
        BATCH_ITEMS,
        "a batch handed over"
    );
    assert!(
        !rig.events.local.is_empty(),
        "and one in the consumer's buffer"
    );
    let Rig {
        wire,
        handle,
        events,
        mut driver,
    } = rig;
    let inner = events.inner.clone();
    drop(events);
    let mut spin = || {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..8 {
            assert!(Pin::new(&mut driver).poll(&mut cx).is_pending());
        }
    };
    spin();
    assert!(
        inner.handoff().items.is_empty(),
        "the hand-off's batch is freed"
    );
    let stats = handle.stats();
    assert_eq!((stats.event_queue_len, stats.event_queue_bytes), (0, 0));
    assert_eq!(
        stats.events_dropped as usize,
        N - READ,
        "every event nobody read is counted: in the queue, the hand-off and the buffer"
    );

    let more: String = (0..N)
        .map(|i| format!("Event: UserEvent\r\nUserEvent: T\r\nSeq: {i}\r\n\r\n"))
        .collect();
    wire.lock().unwrap().incoming.extend(more.bytes());
    let mut ping = Box::pin(handle.send(ami_proto::Action::new("Ping")));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    spin();
    let written = String::from_utf8_lossy(&wire.lock().unwrap().written).into_owned();
    let id = written
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("Action: Ping"))
        .find_map(|b| b.lines().find_map(|l| l.strip_prefix("ActionID: ")))
        .expect("the Ping was written")
        .to_string();
    wire.lock()
        .unwrap()
        .incoming
        .extend(format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n").bytes());
    spin();
    assert!(matches!(ping.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    let stats = handle.stats();
    assert_eq!((stats.event_queue_len, stats.event_queue_bytes), (0, 0));
    assert_eq!(stats.events_dropped as usize, 2 * N - READ);
    assert!(inner.handoff().items.is_empty());
}

#[test]
fn the_hand_off_holds_one_batch_and_the_consumer_pulls_the_rest_through_in_order() {
    const N: usize = 3 * BATCH_ITEMS + 100;
    let mut rig = Rig::new(usize::MAX, 10 * N);
    rig.log_in();
    rig.storm(N);
    rig.spin();
    assert_eq!(rig.handle.stats().events_in as usize, N, "all read");
    {
        let h = rig.events.inner.handoff();
        assert!(h.items.len() <= BATCH_ITEMS, "{}", h.items.len());
        assert!(h.backlog, "the core still holds items");
    }
    let mut cx = Context::from_waker(Waker::noop());
    let mut seqs = Vec::new();
    let mut pending = 0;
    while seqs.len() < N {
        match rig.events.poll_recv(&mut cx) {
            Poll::Ready(Some(item)) => seqs.extend(seq(&item)),
            Poll::Ready(None) => panic!("ended after {}", seqs.len()),
            Poll::Pending => {
                // Only the driver moves the next batch, after the consumer rang.
                pending += 1;
                assert!(pending < 100, "stuck after {}", seqs.len());
                assert!(rig.events.inner.bell.rung_for_test());
                rig.spin();
            }
        }
    }
    assert_eq!(seqs, (0..N as u64).collect::<Vec<_>>());
    // One wait per batch at most, never one per item.
    assert!(pending <= N / BATCH_ITEMS + 1, "{pending}");
    assert_eq!(rig.handle.stats().events_dropped, 0);
}

#[test]
fn events_as_a_stream_yield_the_same_items_and_end_when_the_session_closes() {
    use futures_core::Stream;
    const N: usize = BATCH_ITEMS + 10;
    let mut rig = Rig::new(usize::MAX, 10 * N);
    rig.log_in();
    rig.storm(N);
    rig.spin();
    rig.handle.close();
    rig.spin();
    let mut cx = Context::from_waker(Waker::noop());
    let mut seqs = Vec::new();
    let mut tries = 0;
    loop {
        match Pin::new(&mut rig.events).poll_next(&mut cx) {
            Poll::Ready(Some(item)) => seqs.extend(seq(&item)),
            Poll::Ready(None) => break,
            Poll::Pending => {
                tries += 1;
                assert!(tries < 100, "stuck after {}", seqs.len());
                rig.spin();
            }
        }
    }
    assert_eq!(seqs, (0..N as u64).collect::<Vec<_>>());
    assert!(matches!(rig.handle.status().get(), Status::Closed { .. }));
}

#[test]
fn recv_many_takes_at_most_max_and_try_recv_reaches_into_the_core() {
    const N: usize = 50;
    let mut rig = Rig::new(usize::MAX, 1000);
    rig.log_in();
    while rig.events.try_recv().is_some() {}
    rig.storm(N);
    rig.spin();
    let mut out = Vec::new();
    let n = futures_lite_block_on(rig.events.recv_many(&mut out, 20));
    assert_eq!(n, 20);
    let mut rest: Vec<u64> = out.iter().filter_map(seq).collect();
    while let Some(item) = rig.events.try_recv() {
        rest.extend(seq(&item));
    }
    assert_eq!(rest, (0..N as u64).collect::<Vec<_>>());
    assert_eq!(futures_lite_block_on(rig.events.recv_many(&mut out, 0)), 0);
}

#[test]
fn a_take_straight_from_the_core_counts_and_lets_a_holding_driver_read_again() {
    // More than the read-ahead (in events or bytes) beyond the first batch: the driver holds.
    const N: usize = BATCH_ITEMS + 2 * ami_proto::READ_AHEAD_EVENTS;
    let mut rig = Rig::new(usize::MAX, 10 * N);
    rig.log_in();
    // The session's own news first (its connect), so that the storm's first batch is handed
    // over.
    while rig.events.try_recv().is_some() {}
    rig.spin();
    rig.storm(N);
    rig.spin();
    let read = rig.handle.stats().events_in;
    assert!(
        (read as usize) < N,
        "held before the end of the storm: {read}"
    );
    rig.send("Event: UserEvent\r\nUserEvent: T\r\nSeq: 999999\r\n\r\n");
    rig.spin();
    assert_eq!(
        rig.handle.stats().events_in,
        read,
        "the driver holds its reads"
    );
    // The hand-off's batch is gone (as with a consumer whose ring the driver has answered),
    // and the consumer takes the next batch straight from the core.
    let handed = std::mem::take(&mut rig.events.inner.handoff().items);
    assert_eq!(handed.len(), BATCH_ITEMS);
    rig.events.inner.bell.clear();
    let takes = rig.events.inner.handoff().takes;
    let first = rig.events.try_recv().expect("an event from the core");
    assert_eq!(seq(&first), Some(BATCH_ITEMS as u64));
    assert_eq!(
        rig.events.inner.handoff().takes,
        takes + 1,
        "the take counts"
    );
    assert!(
        rig.events.inner.bell.rung_for_test(),
        "the holding driver hears of it"
    );
    rig.spin();
    assert!(
        rig.handle.stats().events_in > read,
        "the driver reads again"
    );
}

/// Polls a future that must be ready at once.
fn futures_lite_block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("not ready"),
    }
}

#[test]
fn a_sessions_client_is_named_after_its_target_unless_the_application_named_it() {
    let rig = Rig::new(usize::MAX, 64);
    let name = |rig: &Rig| {
        rig.handle
            .inner
            .lock()
            .client
            .config()
            .name()
            .map(str::to_string)
    };
    assert_eq!(name(&rig).as_deref(), Some("127.0.0.1:5038"));
    let named = ClientConfig::builder("admin", "amp111")
        .seed(7)
        .name("pbx-east")
        .build()
        .unwrap();
    let rig = Rig::with_config(Wire::default(), named);
    assert_eq!(name(&rig).as_deref(), Some("pbx-east"));
}

#[test]
fn add_filter_and_set_event_mask_on_a_dead_driver_fail_at_once() {
    let rig = Rig::new(usize::MAX, 100);
    let Rig { handle, driver, .. } = rig;
    drop(driver);
    assert_eq!(
        futures_lite_block_on(handle.add_filter("Event: Hangup")),
        Err(crate::AmiError::Closed {
            reason: ami_proto::DisconnectReason::LocalClose
        })
    );
    assert_eq!(
        futures_lite_block_on(handle.set_event_mask("call")),
        Err(crate::AmiError::Closed {
            reason: ami_proto::DisconnectReason::LocalClose
        })
    );
}

/// An async Originate: its answer is an `OriginateResponse`, a `call` event.
fn async_originate() -> ami_proto::Action {
    ami_proto::Action::new("Originate")
        .field("Channel", "Local/100@default")
        .field("Application", "Wait")
        .field("Data", "1")
        .field("Async", "true")
}

#[test]
fn set_event_mask_lets_async_originates_through_and_the_next_login_asks_for_the_new_mask() {
    use ami_proto::SendError;
    use std::time::Duration;
    let config = ClientConfig::builder("admin", "amp111")
        .seed(7)
        .events("system")
        .build()
        .unwrap();
    let wire = Wire {
        budget: usize::MAX,
        ..Wire::default()
    };
    let mut rig = Rig::with_config(wire, config);
    rig.log_in();
    assert!(
        rig.written().contains("Events: system\r\n"),
        "{}",
        rig.written()
    );
    let handle = rig.handle.clone();
    let refused = futures_lite_block_on(handle.send(async_originate()));
    assert!(
        matches!(
            refused,
            Err(crate::AmiError::Send(SendError::FollowUpMasked { .. }))
        ),
        "{refused:?}"
    );

    let mut cx = Context::from_waker(Waker::noop());
    let mut mask = Box::pin(handle.set_event_mask("call"));
    assert!(mask.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    let written = rig.written();
    let action = &written[written
        .rfind("Action: Events\r\n")
        .expect("an Events action")..];
    assert!(action.contains("EventMask: call\r\n"), "{action}");
    let id = action
        .lines()
        .find_map(|l| l.strip_prefix("ActionID: "))
        .expect("an ActionID");
    rig.send(&format!(
        "Response: Success\r\nActionID: {id}\r\nEvents: On\r\n\r\n"
    ));
    rig.spin();
    assert!(
        matches!(mask.as_mut().poll(&mut cx), Poll::Ready(Ok(_))),
        "the server's answer"
    );
    // The same Originate is queued now (its caller waits for the OriginateResponse).
    let mut call = Box::pin(handle.send(async_originate()));
    assert!(
        call.as_mut().poll(&mut cx).is_pending(),
        "queued, not refused"
    );
    drop(call);

    // The server hangs up; the next session's Login asks for the new mask.
    rig.wire.lock().unwrap().eof = true;
    Wire::wake(&rig.wire);
    rig.spin();
    assert!(!matches!(rig.handle.status().get(), Status::Ready { .. }));
    let before = rig.written().len();
    {
        let mut w = rig.wire.lock().unwrap();
        w.eof = false;
        w.incoming.extend(BANNER.bytes());
    }
    // Past the reconnect backoff (the scripted timer never fires: a ring makes the turn
    // that looks at the clock).
    AHEAD.with(|a| a.set(Duration::from_secs(10)));
    rig.handle.inner.bell.ring();
    rig.spin();
    let login = rig.written()[before..].to_string();
    AHEAD.with(|a| a.set(Duration::ZERO));
    assert!(login.starts_with("Action: Login\r\n"), "{login:?}");
    assert!(login.contains("Events: call\r\n"), "{login:?}");
}

#[test]
fn the_last_user_gone_closes_the_session_a_status_watch_does_not_count() {
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let watch = rig.handle.status();
    let clone = rig.handle.clone();
    let Rig {
        handle,
        events,
        mut driver,
        ..
    } = rig;
    drop(handle);
    drop(events);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        Pin::new(&mut driver).poll(&mut cx).is_pending(),
        "a clone is left"
    );
    assert!(matches!(watch.get(), Status::Ready { .. }));
    drop(clone);
    // Only the watch is left: the driver closes the session and finishes.
    assert!(Pin::new(&mut driver).poll(&mut cx).is_ready());
    assert!(matches!(watch.get(), Status::Closed { .. }));
}

/// The crate docs once said the session closes "when the last handle goes": it does not
/// while its [`Events`] are still read, since a program may keep only its event stream.
#[test]
fn the_last_handle_gone_keeps_the_session_while_its_events_are_still_held() {
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let watch = rig.handle.status();
    let Rig {
        handle,
        events,
        mut driver,
        ..
    } = rig;
    drop(handle);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        Pin::new(&mut driver).poll(&mut cx).is_pending(),
        "the events are still held"
    );
    assert!(matches!(watch.get(), Status::Ready { .. }));
    drop(events);
    assert!(Pin::new(&mut driver).poll(&mut cx).is_ready());
    assert!(matches!(watch.get(), Status::Closed { .. }));
}

#[test]
fn a_session_the_core_closes_shuts_its_transport_down_before_dropping_it() {
    // Logged off: the Goodbye ends the session, and the server must read the end of the
    // stream (TLS: close_notify), not a connection cut off.
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let handle = rig.handle.clone();
    let mut logoff = Box::pin(handle.logoff());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(logoff.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    let written = rig.written();
    let logoff_at = written.find("Action: Logoff").expect("a Logoff written");
    let id = written[logoff_at..]
        .lines()
        .find_map(|l| l.strip_prefix("ActionID: "))
        .expect("the Logoff's ActionID")
        .to_string();
    assert_eq!(rig.wire.lock().unwrap().closes, 0);
    rig.send(&format!(
        "Response: Goodbye\r\nActionID: {id}\r\nMessage: Thanks for all the fish.\r\n\r\n"
    ));
    rig.spin();
    assert!(matches!(rig.handle.status().get(), Status::Closed { .. }));
    assert_eq!(rig.wire.lock().unwrap().closes, 1);

    // Closed at once by the last user's going: shut down too.
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let Rig {
        wire,
        handle,
        events,
        mut driver,
    } = rig;
    drop((handle, events));
    assert!(Pin::new(&mut driver).poll(&mut cx).is_ready());
    assert_eq!(wire.lock().unwrap().closes, 1);
}

#[test]
fn a_fleet_server_removed_shuts_its_transport_down_before_dropping_it() {
    let (wire, fleet, _events, mut driver) = ready_fleet(seeded());
    assert_eq!(wire.lock().unwrap().closes, 0);
    fleet.remove("pbx");
    spin_fleet(&mut driver);
    assert_eq!(wire.lock().unwrap().closes, 1);
}

#[test]
fn a_name_that_does_not_resolve_is_reported_as_host_not_found() {
    let config = ClientConfig::builder("admin", "amp111")
        .seed(7)
        .build()
        .unwrap();
    // The scripted resolver knows no names.
    let (handle, _events, mut driver) = crate::session::<Scripted>(config, ("pbx.invalid", 5038));
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..8 {
        let _ = Pin::new(&mut driver).poll(&mut cx);
    }
    let status = handle.status().get();
    assert!(
        matches!(
            status,
            Status::Disconnected {
                reason: ami_proto::DisconnectReason::ConnectFailed(
                    ami_proto::ConnectFailure::HostNotFound
                ),
                ..
            }
        ),
        "{status:?}"
    );
}

#[test]
fn a_waiting_caller_takes_its_outcome_without_the_core_lock() {
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let handle = rig.handle.clone();
    let mut ping = Box::pin(handle.send(ami_proto::Action::new("Ping")));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    let written = rig.written();
    let id = written
        .rsplit("Action: Ping")
        .next()
        .and_then(|tail| tail.lines().find_map(|l| l.strip_prefix("ActionID: ")))
        .expect("a Ping with an ActionID")
        .to_string();
    rig.send(&format!(
        "Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n"
    ));
    rig.spin();
    // The driver left the outcome in the caller's own slot: polling it needs no core lock
    // (one core lock per action, to send it; polls never contend with the driver).
    let core = rig.handle.inner.lock();
    match ping.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(r)) => assert_eq!(r.message().get_str("Ping"), Some("Pong")),
        other => panic!("{other:?}"),
    }
    drop(core);
}

/// The ActionIDs of the Pings written so far, in order.
fn ping_ids(written: &str) -> Vec<String> {
    written
        .split("Action: Ping")
        .skip(1)
        .filter_map(|tail| tail.lines().find_map(|l| l.strip_prefix("ActionID: ")))
        .map(str::to_string)
        .collect()
}

#[test]
fn callers_woken_together_get_their_next_actions_into_one_write() {
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let mut cx = Context::from_waker(Waker::noop());
    let handle = rig.handle.clone();
    let ping = || {
        let h = handle.clone();
        Box::pin(async move { h.send(ami_proto::Action::new("Ping")).await })
    };
    let mut first: Vec<_> = (0..3).map(|_| ping()).collect();
    for f in &mut first {
        assert!(f.as_mut().poll(&mut cx).is_pending());
    }
    rig.spin();
    let ids = ping_ids(&rig.written());
    assert_eq!(ids.len(), 3);
    for id in &ids {
        rig.send(&format!(
            "Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n"
        ));
    }
    rig.spin();
    for f in &mut first {
        assert!(matches!(f.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    }
    // The three callers were woken by one turn. The first queues its next Ping and rings:
    // the driver yields instead of writing it alone...
    let writes = rig.wire.lock().unwrap().writes;
    let mut next: Vec<_> = (0..3).map(|_| ping()).collect();
    assert!(next[0].as_mut().poll(&mut cx).is_pending());
    let mut pin = Pin::new(&mut rig.driver);
    assert!(pin.as_mut().poll(&mut cx).is_pending());
    assert_eq!(rig.wire.lock().unwrap().writes, writes, "written alone");
    // ...so that the other two queue theirs, and all three go out in one write.
    for f in &mut next[1..] {
        assert!(f.as_mut().poll(&mut cx).is_pending());
    }
    rig.spin();
    assert_eq!(rig.wire.lock().unwrap().writes, writes + 1);
    assert_eq!(ping_ids(&rig.written()).len(), 6);
}

/// A lone action goes out from the caller's thread when the transport offers a direct
/// writer (no driver wake-up); with another action in flight, or bytes the driver has not
/// finished writing, the caller leaves the write to the driver (one write for many actions,
/// and the bytes in order).
#[test]
fn a_lone_action_is_written_by_its_caller_and_busier_ones_by_the_driver() {
    let mut rig = Rig::direct();
    let _ = rig.events.inner.bell.rung_for_test();
    let mut cx = Context::from_waker(Waker::noop());
    let handle = rig.handle.clone();
    let mut first = Box::pin(handle.send(ami_proto::Action::new("Ping")));
    assert!(first.as_mut().poll(&mut cx).is_pending());
    assert_eq!(rig.wire.lock().unwrap().direct_writes, 1);
    assert!(rig.written().ends_with("\r\n\r\n") && rig.written().contains("Action: Ping"));
    assert!(
        !rig.events.inner.bell.rung_for_test(),
        "the driver was not woken"
    );
    // A second action while the first is in flight: the driver writes it.
    let mut second = Box::pin(handle.send(ami_proto::Action::new("CoreStatus")));
    assert!(second.as_mut().poll(&mut cx).is_pending());
    assert!(!rig.written().contains("CoreStatus"));
    assert!(rig.events.inner.bell.rung_for_test());
    rig.spin();
    assert!(rig.written().contains("CoreStatus"));
    assert_eq!(rig.wire.lock().unwrap().direct_writes, 1);
    // Both answered: each completes from what the server sent.
    let ids: Vec<String> = rig
        .written()
        .lines()
        .filter_map(|l| l.strip_prefix("ActionID: ").map(str::to_string))
        .collect();
    for id in &ids[1..] {
        rig.send(&format!("Response: Success\r\nActionID: {id}\r\n\r\n"));
    }
    rig.spin();
    assert!(matches!(first.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    assert!(matches!(second.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
}

#[test]
fn an_action_deadline_fires_while_the_server_keeps_the_socket_readable() {
    use ami_proto::{Action, ActionError, SendOptions};
    use std::time::Duration;
    let mut rig = Rig::new(usize::MAX, 64);
    rig.log_in();
    rig.wire.lock().unwrap().flood = true;
    let handle = rig.handle.clone();
    let mut ping = Box::pin(handle.send_with(
        Action::new("Ping"),
        SendOptions::timeout(Duration::from_millis(20)),
    ));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    // Past the deadline. The scripted timer never fires: only a turn that looks at the
    // clock itself can see the deadline while every poll of the socket finds an event.
    AHEAD.with(|a| a.set(Duration::from_secs(1)));
    let mut outcome = None;
    for _ in 0..64 {
        rig.spin();
        while rig.events.try_recv().is_some() {}
        if let Poll::Ready(r) = ping.as_mut().poll(&mut cx) {
            outcome = Some(r);
            break;
        }
    }
    AHEAD.with(|a| a.set(Duration::ZERO));
    let flooded = rig.wire.lock().unwrap().flooded;
    match outcome {
        Some(Err(crate::AmiError::Action(ActionError::TimedOut { .. }))) => {}
        other => panic!("after {flooded} flooded events: {other:?}"),
    }
}

/// The ActionID the core gave the action `send` queued (the one it wrote last).
fn last_id(rig: &Rig) -> String {
    let shared = rig.handle.inner.lock();
    let text = String::from_utf8_lossy(shared.client.transmit()).into_owned();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("ActionID: "))
        .expect("an action waits in transmit")
        .to_string()
}

#[test]
fn a_cancelled_action_the_driver_had_not_lent_never_reaches_the_server() {
    use ami_proto::Action;
    let mut rig = Rig::new(usize::MAX, 64);
    rig.log_in();
    // The server stops reading: the driver lends the first Ping and holds it unwritten.
    rig.wire.lock().unwrap().budget = 0;
    let handle = rig.handle.clone();
    let mut cx = Context::from_waker(Waker::noop());
    let mut first = Box::pin(handle.send(Action::new("Ping")));
    assert!(first.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    // The second is queued between two turns of the driver, and its caller gives up
    // before the driver looked: the cancel finds its bytes never lent.
    let mut second = Box::pin(handle.send(Action::new("Ping")));
    assert!(second.as_mut().poll(&mut cx).is_pending());
    let cancelled = last_id(&rig);
    drop(second);
    rig.wire.lock().unwrap().budget = usize::MAX;
    rig.spin();
    let written = rig.written();
    assert_eq!(ping_ids(&written).len(), 1, "{written}");
    assert!(
        !written.contains(&cancelled),
        "the cancelled action went out: {written}"
    );
    assert_eq!(rig.handle.stats().actions_withdrawn, 1);
    drop(first);
}

#[test]
fn an_action_whose_deadline_passes_while_its_lent_copy_waits_is_withdrawn_not_written_late() {
    use ami_proto::{Action, ActionError, Phase, SendOptions};
    use std::time::Duration;
    let mut rig = Rig::new(usize::MAX, 64);
    rig.log_in();
    rig.wire.lock().unwrap().budget = 0;
    let handle = rig.handle.clone();
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(handle.send_with(
        Action::new("Ping"),
        SendOptions::timeout(Duration::from_millis(20)),
    ));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    let id = last_id(&rig);
    rig.spin();
    // Past the deadline, and the socket takes bytes again before any timer fired (the
    // scripted timer never does): the driver's copy is due, and must not be written.
    AHEAD.with(|a| a.set(Duration::from_secs(1)));
    rig.wire.lock().unwrap().budget = usize::MAX;
    rig.spin();
    let outcome = ping.as_mut().poll(&mut cx);
    AHEAD.with(|a| a.set(Duration::ZERO));
    let written = rig.written();
    assert!(
        !written.contains(&id),
        "written after its deadline: {written}"
    );
    match outcome {
        Poll::Ready(Err(crate::AmiError::Action(ActionError::TimedOut { phase, .. }))) => {
            assert_eq!(phase, Phase::Queued, "timed out unsent");
        }
        other => panic!("{other:?}"),
    }
}

/// A one-server fleet on the scripted transport, its server "pbx" logged in and ready
/// (`config` is its client's), every write taken.
fn ready_fleet(
    config: ClientConfig,
) -> (
    Arc<Mutex<Wire>>,
    crate::fleet::FleetHandle,
    crate::fleet::FleetEvents,
    crate::fleet::FleetDriver,
) {
    let (wire, fleet, events, mut driver) = logging_in_fleet(config);
    answer_login(&wire, &mut driver);
    assert!(fleet.status("pbx").is_some_and(|s| s.is_ready()));
    (wire, fleet, events, driver)
}

/// [`ready_fleet`] up to the Login: "pbx" is added, connected and has written its Login,
/// which nobody has answered yet.
fn logging_in_fleet(
    config: ClientConfig,
) -> (
    Arc<Mutex<Wire>>,
    crate::fleet::FleetHandle,
    crate::fleet::FleetEvents,
    crate::fleet::FleetDriver,
) {
    logging_in_fleet_on::<Scripted>(config)
}

/// [`logging_in_fleet`] on runtime `R`.
fn logging_in_fleet_on<R: Runtime>(
    config: ClientConfig,
) -> (
    Arc<Mutex<Wire>>,
    crate::fleet::FleetHandle,
    crate::fleet::FleetEvents,
    crate::fleet::FleetDriver,
) {
    use ami_proto::fleet::FleetConfig;
    let wire = Arc::new(Mutex::new(Wire {
        budget: usize::MAX,
        ..Wire::default()
    }));
    wire.lock().unwrap().incoming.extend(BANNER.bytes());
    WIRE.with(|w| *w.borrow_mut() = Some(wire.clone()));
    let (fleet, events, mut driver) = crate::fleet::start::<R>(FleetConfig::default());
    let addr: SocketAddr = "127.0.0.1:5038".parse().unwrap();
    fleet.add("pbx", config, addr).unwrap();
    spin_fleet(&mut driver);
    (wire, fleet, events, driver)
}

/// Answers the Login on `wire` and spins the fleet's driver.
fn answer_login(wire: &Mutex<Wire>, driver: &mut crate::fleet::FleetDriver) {
    let written = String::from_utf8_lossy(&wire.lock().unwrap().written).into_owned();
    let id = written
        .lines()
        .find_map(|l| l.strip_prefix("ActionID: "))
        .expect("a Login with an ActionID")
        .to_string();
    wire.lock().unwrap().incoming.extend(
        format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n")
            .bytes(),
    );
    Wire::wake(wire);
    spin_fleet(driver);
}

/// The README's fleet example: a send by policy right after `add` finds no server ready;
/// after `wait_any_ready` it goes out.
#[test]
fn a_send_by_policy_waits_for_wait_any_ready_not_for_add() {
    use crate::fleet::{Policy, Route, RouteError, RouteFailed};
    use ami_proto::Action;
    let (wire, fleet, _events, mut driver) = logging_in_fleet(seeded());
    let mut cx = Context::from_waker(Waker::noop());
    let ping = || Action::new("Ping");
    let mut early = Box::pin(fleet.send(Route::Any(Policy::FewestInFlight), ping()));
    match early.as_mut().poll(&mut cx) {
        Poll::Ready(Err(RouteFailed::Route(RouteError::NoServer { servers, ready, .. }))) => {
            assert_eq!((servers, ready), (1, 0));
        }
        other => panic!("{other:?}"),
    }
    let mut any = Box::pin(fleet.wait_any_ready());
    assert!(any.as_mut().poll(&mut cx).is_pending(), "logging in");
    answer_login(&wire, &mut driver);
    let Poll::Ready(Ok(name)) = any.as_mut().poll(&mut cx) else {
        panic!("a ready server");
    };
    assert_eq!(name.as_str(), "pbx");
    let mut ping = Box::pin(fleet.send(Route::Any(Policy::FewestInFlight), ping()));
    assert!(ping.as_mut().poll(&mut cx).is_pending(), "routed to pbx");
    spin_fleet(&mut driver);
    let written = String::from_utf8_lossy(&wire.lock().unwrap().written).into_owned();
    let action = &written[written.rfind("Action: Ping\r\n").expect("the Ping written")..];
    let id = action
        .lines()
        .find_map(|l| l.strip_prefix("ActionID: "))
        .expect("an ActionID");
    wire.lock()
        .unwrap()
        .incoming
        .extend(format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n").bytes());
    Wire::wake(&wire);
    spin_fleet(&mut driver);
    let Poll::Ready(Ok(reply)) = ping.as_mut().poll(&mut cx) else {
        panic!("the Ping's reply");
    };
    assert_eq!(reply.server.as_str(), "pbx");
    assert!(reply.result.is_ok(), "{:?}", reply.result);
}

/// Polls a fleet's driver a few times (it yields after a run of busy rounds).
fn spin_fleet(driver: &mut crate::fleet::FleetDriver) {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..8 {
        assert!(Pin::new(&mut *driver).poll(&mut cx).is_pending());
    }
}

#[test]
fn a_fleet_server_never_sends_a_cancelled_action_its_driver_had_not_lent() {
    use ami_proto::fleet::Route;
    use ami_proto::Action;
    let config = seeded();
    let (wire, fleet, _events, mut driver) = ready_fleet(config);
    let mut cx = Context::from_waker(Waker::noop());
    // The server stops reading: the driver lends the first action and holds it unwritten.
    wire.lock().unwrap().budget = 0;
    let first = Action::new("UserEvent").field("UserEvent", "Kept");
    let mut first = Box::pin(fleet.send(Route::Server("pbx"), first));
    assert!(first.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    // The second is queued between two visits, and its caller gives up before the driver
    // looked: the cancel finds its bytes never lent.
    let second = Action::new("UserEvent").field("UserEvent", "Victim");
    let mut second = Box::pin(fleet.send(Route::Server("pbx"), second));
    assert!(second.as_mut().poll(&mut cx).is_pending());
    drop(second);
    wire.lock().unwrap().budget = usize::MAX;
    Wire::wake(&wire);
    spin_fleet(&mut driver);
    let written = String::from_utf8_lossy(&wire.lock().unwrap().written).into_owned();
    assert!(written.contains("UserEvent: Kept"), "{written}");
    assert!(
        !written.contains("UserEvent: Victim"),
        "the cancelled action went out: {written}"
    );
    assert_eq!(fleet.stats().total.actions_withdrawn, 1);
    drop(first);
}

/// Counts the times it is woken (here and in the fleet handle's tests).
#[derive(Default)]
pub(crate) struct CountingWaker(pub(crate) std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_fleet_driver_whose_server_stopped_reading_mid_action_waits_instead_of_spinning() {
    use ami_proto::fleet::Route;
    use ami_proto::Action;
    let (wire, fleet, _events, mut driver) = ready_fleet(seeded());
    let mut cx = Context::from_waker(Waker::noop());
    // The socket takes the first 10 bytes of the action, then is full: the rest of the
    // driver's copy waits for room the server never makes.
    wire.lock().unwrap().budget = 10;
    let before = wire.lock().unwrap().written.len();
    let mut ping = Box::pin(fleet.send(Route::Server("pbx"), Action::new("Ping")));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    assert_eq!(wire.lock().unwrap().written.len(), before + 10);
    // Nothing changes from here on: a driver that has nothing to do must not wake itself
    // (each visit giving back its unwritten copy and lending it again once woke it for the
    // next visit: a busy loop for as long as the server did not read).
    let wakes = Arc::new(CountingWaker::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    for _ in 0..4 {
        assert!(Pin::new(&mut driver).poll(&mut cx).is_pending());
    }
    let woken = wakes.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        woken <= 1,
        "the driver woke itself {woken} times with nothing to do"
    );
    // Room again: the rest goes out and the Ping completes.
    wire.lock().unwrap().budget = usize::MAX;
    Wire::wake(&wire);
    spin_fleet(&mut driver);
    let written = String::from_utf8_lossy(&wire.lock().unwrap().written).into_owned();
    assert!(written.ends_with("\r\n\r\n"), "{written}");
    drop(ping);
}

#[test]
fn a_session_driver_whose_server_stopped_reading_mid_action_waits_instead_of_spinning() {
    use ami_proto::Action;
    let mut rig = Rig::new(usize::MAX, 64);
    rig.log_in();
    let mut cx = Context::from_waker(Waker::noop());
    // The socket takes the first 10 bytes of the action, then is full.
    rig.wire.lock().unwrap().budget = 10;
    let before = rig.written().len();
    let handle = rig.handle.clone();
    let mut ping = Box::pin(handle.send(Action::new("Ping")));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    assert_eq!(rig.written().len(), before + 10);
    let wakes = Arc::new(CountingWaker::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    for _ in 0..4 {
        assert!(Pin::new(&mut rig.driver).poll(&mut cx).is_pending());
    }
    let woken = wakes.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        woken <= 1,
        "the driver woke itself {woken} times with nothing to do"
    );
    rig.wire.lock().unwrap().budget = usize::MAX;
    Wire::wake(&rig.wire);
    rig.spin();
    assert!(rig.written().ends_with("\r\n\r\n"));
    drop(ping);
}

/// The tests' client config, with a fixed seed.
fn seeded() -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .seed(7)
        .build()
        .unwrap()
}

/// A session whose event queue holds 4 events and closes when it overflows: received data
/// that ends the session.
fn closes_on_overflow() -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .seed(7)
        .event_queue_cap(4)
        .overflow(ami_proto::OverflowPolicy::CloseSession)
        .build()
        .unwrap()
}

#[test]
fn a_fleet_action_lent_but_unwritten_fails_not_sent_when_received_events_overflow_the_queue() {
    use ami_proto::fleet::Route;
    use ami_proto::{Action, ActionError, DisconnectReason};
    let config = closes_on_overflow();
    let (wire, fleet, _events, mut driver) = ready_fleet(config);
    let mut cx = Context::from_waker(Waker::noop());
    // The server stops reading: the driver lends the action and holds it, all unwritten.
    wire.lock().unwrap().budget = 0;
    let before = wire.lock().unwrap().written.len();
    let action = Action::new("UserEvent").field("UserEvent", "Held");
    let mut action = Box::pin(fleet.send(Route::Server("pbx"), action));
    assert!(action.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    // Nobody reads the stream: the events the server sends overflow the queue, and the
    // core ends the session while it handles the bytes they came in.
    let mut storm = String::new();
    for i in 0..16 {
        storm += &format!("Event: UserEvent\r\nUserEvent: T\r\nSeq: {i}\r\n\r\n");
    }
    wire.lock().unwrap().incoming.extend(storm.bytes());
    Wire::wake(&wire);
    spin_fleet(&mut driver);
    assert_eq!(
        wire.lock().unwrap().written.len(),
        before,
        "nothing was written"
    );
    let reply = match action.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(reply)) => reply,
        other => panic!("the session did not end: {other:?}"),
    };
    match reply.result {
        Err(crate::AmiError::Action(ActionError::NotSent(DisconnectReason::EventOverflow))) => {}
        other => panic!("its last byte never left, yet: {other:?}"),
    }
}

#[test]
fn a_fleet_driver_reading_while_its_copy_waits_copies_each_lent_byte_once() {
    use crate::driver::RELENT;
    use ami_proto::fleet::Route;
    use ami_proto::Action;
    let config = seeded();
    let (wire, fleet, _events, mut driver) = ready_fleet(config);
    let mut cx = Context::from_waker(Waker::noop());
    let event = |seq: u32| {
        let mut w = wire.lock().unwrap();
        w.incoming
            .extend(format!("Event: UserEvent\r\nUserEvent: T\r\nSeq: {seq}\r\n\r\n").bytes());
        drop(w);
        Wire::wake(&wire);
    };
    wire.lock().unwrap().budget = 0;
    let before = wire.lock().unwrap().written.len();
    RELENT.with(|c| c.set(0));
    let first = Action::new("UserEvent").field("UserEvent", "First");
    let mut first = Box::pin(fleet.send(Route::Server("pbx"), first));
    assert!(first.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    // Reads while the whole copy waits, then while part of it is written: each gives the
    // copy back and lends it again, and the copy is kept.
    event(1);
    spin_fleet(&mut driver);
    let second = Action::new("UserEvent").field("UserEvent", "Second");
    let mut second = Box::pin(fleet.send(Route::Server("pbx"), second));
    assert!(second.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    event(2);
    wire.lock().unwrap().budget = 10;
    Wire::wake(&wire);
    spin_fleet(&mut driver);
    event(3);
    spin_fleet(&mut driver);
    wire.lock().unwrap().budget = usize::MAX;
    Wire::wake(&wire);
    spin_fleet(&mut driver);
    let written = wire.lock().unwrap().written[before..].to_vec();
    let text = String::from_utf8_lossy(&written).into_owned();
    assert_eq!(text.matches("UserEvent: First").count(), 1, "{text}");
    assert_eq!(text.matches("UserEvent: Second").count(), 1, "{text}");
    assert!(text.find("First") < text.find("Second"), "{text}");
    assert_eq!(
        RELENT.with(|c| c.get()),
        written.len(),
        "every byte written was copied once, however many reads it waited through"
    );
    assert_eq!(fleet.stats().total.events_in, 3);
}

#[test]
fn a_session_action_lent_but_unwritten_fails_not_sent_when_received_events_overflow_the_queue() {
    use ami_proto::{Action, ActionError, DisconnectReason};
    let config = closes_on_overflow();
    let mut rig = Rig::with_config(
        Wire {
            budget: usize::MAX,
            ..Wire::default()
        },
        config,
    );
    rig.log_in();
    // The server stops reading: the driver lends the Ping and holds it, all unwritten.
    rig.wire.lock().unwrap().budget = 0;
    let before = rig.written().len();
    let handle = rig.handle.clone();
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(handle.send(Action::new("Ping")));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    rig.storm(16);
    rig.spin();
    assert_eq!(rig.written().len(), before, "nothing was written");
    match ping.as_mut().poll(&mut cx) {
        Poll::Ready(Err(crate::AmiError::Action(ActionError::NotSent(
            DisconnectReason::EventOverflow,
        )))) => {}
        other => panic!("its last byte never left, yet: {other:?}"),
    }
}

#[test]
fn a_fleet_whose_merged_stream_was_dropped_keeps_no_events_and_counts_them() {
    let config = seeded();
    let (wire, fleet, mut events, mut driver) = ready_fleet(config);
    let storm = |from: usize| {
        let text: String = (from..from + 50)
            .map(|i| format!("Event: UserEvent\r\nUserEvent: T\r\nSeq: {i}\r\n\r\n"))
            .collect();
        wire.lock().unwrap().incoming.extend(text.bytes());
        Wire::wake(&wire);
    };
    storm(0);
    spin_fleet(&mut driver);
    // The reader takes a batch and reads 5 events of it: the rest waits in its buffer.
    let mut read = 0;
    while read < 5 {
        match events.try_recv() {
            Some(item) => read += usize::from(matches!(item.item, StreamItem::Event(_))),
            None => panic!("only {read} events"),
        }
    }
    assert!(!events.buf.is_empty(), "taken, not read yet");
    drop(events);
    storm(50);
    spin_fleet(&mut driver);
    let total = fleet.stats().total;
    assert_eq!((total.event_queue_len, total.event_queue_bytes), (0, 0));
    assert_eq!(total.events_in, 100);
    assert_eq!(
        total.events_dropped, 95,
        "each event nobody read is counted, those the reader held too"
    );
}

#[test]
fn a_fleet_server_writes_each_new_action_while_earlier_ones_wait_for_their_answers() {
    use ami_proto::fleet::Route;
    use ami_proto::Action;
    let (wire, fleet, _events, mut driver) = ready_fleet(seeded());
    let mut cx = Context::from_waker(Waker::noop());
    let mut pending = Vec::new();
    for i in 0..3 {
        let ping = Action::new("UserEvent").field("UserEvent", format!("P{i}"));
        let mut send = Box::pin(fleet.send(Route::Server("pbx"), ping));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        pending.push(send);
        // The server answers nothing: each action must still go out at once (pipelined),
        // not when the previous one's answer comes.
        spin_fleet(&mut driver);
        let written = String::from_utf8_lossy(&wire.lock().unwrap().written).into_owned();
        assert!(
            written.contains(&format!("UserEvent: P{i}")),
            "action {i} not written while earlier ones wait: {written}"
        );
    }
}

// ---- a hold timer that fires, on a clock the test moves ----

thread_local! {
    /// `Clocked`'s time zero: fixed once per thread, so that its clock moves only when the
    /// test moves `AHEAD`. A real clock under it made the hold tests flaky on a loaded
    /// machine: a few ms of decoding or descheduling crossed `MAX_HOLD` (30 ms) early.
    static CLOCKED_ZERO: Instant = Instant::now();
}

/// A runtime on a virtual clock: its time is `CLOCKED_ZERO` plus `AHEAD`, and its timers
/// fire once the test moves that clock past them.
struct Clocked;
struct ClockedTimer(Option<Instant>);

impl Runtime for Clocked {
    type Tcp = ScriptedTcp;
    type Timer = ClockedTimer;
    fn now() -> Instant {
        CLOCKED_ZERO.with(|zero| *zero) + AHEAD.with(|a| a.get())
    }
    fn resolve(h: String, p: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Scripted::resolve(h, p)
    }
    fn connect(a: SocketAddr) -> BoxFuture<io::Result<ScriptedTcp>> {
        Scripted::connect(a)
    }
    fn timer() -> ClockedTimer {
        ClockedTimer(None)
    }
    const YIELD_BEFORE_WRITE: bool = true;
}

impl Timer for ClockedTimer {
    fn set_at(&mut self, at: Instant) {
        self.0 = Some(at);
    }
    fn poll_fired(&mut self, _: &mut Context<'_>) -> Poll<()> {
        match self.0 {
            Some(at) if Clocked::now() >= at => {
                self.0 = None;
                Poll::Ready(())
            }
            _ => Poll::Pending,
        }
    }
}

fn clocked_rig() -> Rig {
    let wire = Arc::new(Mutex::new(Wire {
        budget: usize::MAX,
        ..Wire::default()
    }));
    wire.lock().unwrap().incoming.extend(BANNER.bytes());
    WIRE.with(|w| *w.borrow_mut() = Some(wire.clone()));
    let config = ClientConfig::builder("admin", "amp111")
        .seed(7)
        .event_queue_cap(1_000_000)
        .build()
        .unwrap();
    let addr: SocketAddr = "127.0.0.1:5038".parse().unwrap();
    let (handle, events, driver) = crate::session::<Clocked>(config, addr);
    Rig {
        wire,
        handle,
        events,
        driver,
    }
}

fn advance_to(ms: u64) {
    AHEAD.with(|a| a.set(std::time::Duration::from_millis(ms)));
}

/// One take of a consumer: what it had is handled, and it takes the next batch.
fn take_one_batch(rig: &mut Rig) {
    rig.events.local.clear();
    assert!(rig.events.try_recv().is_some(), "the consumer is behind");
}

/// `n` tiny events: one 64 KiB read brings far more than a batch.
fn tiny_storm(rig: &Rig, n: usize) {
    rig.send(&"Event: A\r\n\r\n".repeat(n));
}

#[test]
fn a_consumer_still_behind_after_max_hold_is_read_on_until_it_caught_up() {
    AHEAD.with(|a| a.set(std::time::Duration::ZERO));
    let mut rig = clocked_rig();
    rig.log_in();
    while rig.events.try_recv().is_some() {}
    rig.spin();
    tiny_storm(&rig, 20_000);
    rig.spin();
    let behind = |rig: &Rig| !rig.events.inner.lock().client.wants_read();
    let read = |rig: &Rig| rig.handle.stats().events_in;
    println!("t=0: read {} behind {}", read(&rig), behind(&rig));
    // The consumer takes a batch every 8 ms and stays behind: reads wait for it
    // (HOLD_READ restarts at each take), at most MAX_HOLD (30 ms) in a row.
    for t in [8, 16, 24, 32] {
        advance_to(t);
        take_one_batch(&mut rig);
        rig.spin();
        println!("t={t}: read {} behind {}", read(&rig), behind(&rig));
    }
    let before = read(&rig);
    // The run that began at 8 ms ends at 38 ms.
    advance_to(39);
    rig.spin();
    println!("t=39: read {} behind {}", read(&rig), behind(&rig));
    assert!(read(&rig) > before, "the span ran out: reads go on");
    // "A consumer still behind after this is slower than the server: reads then go on
    // until it has caught up" (MAX_HOLD's doc). It takes again, still far behind, and the
    // server sends more.
    advance_to(41);
    take_one_batch(&mut rig);
    assert!(behind(&rig), "still behind");
    let at_41 = read(&rig);
    tiny_storm(&rig, 20_000);
    rig.spin();
    rig.spin();
    println!("t=41: read {} behind {}", read(&rig), behind(&rig));
    assert_eq!(
        read(&rig),
        at_41 + 20_000,
        "still behind after a spent 30 ms span, yet the next take started a new run of \
         held reads: the server's new events wait in its socket"
    );
    // For comparison: the socket is read on at once when the driver is not holding.
    advance_to(80);
    rig.spin();
    println!(
        "t=80 (no take since 41): read {} behind {}",
        read(&rig),
        behind(&rig)
    );
}

/// A session driver dropped mid-run (its task aborted, its runtime shut down) fails an
/// action it wrote `Unknown` (it may have run) and one that never left `NotSent`, never
/// `AmiError::Closed`: `Closed` is for an action refused before it was queued, and the NATS
/// bridge answers it `not_sent`, inviting a retry that would run a written action twice.
#[test]
fn a_session_driver_dropped_mid_run_fails_a_written_action_unknown_not_closed() {
    use ami_proto::{Action, ActionError, DisconnectReason};
    let mut rig = Rig::new(usize::MAX, 64);
    rig.log_in();
    let mut cx = Context::from_waker(Waker::noop());
    let handle = rig.handle.clone();
    let mut written = Box::pin(handle.send(Action::new("Ping")));
    assert!(written.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    assert!(rig.written().contains("Action: Ping"), "{}", rig.written());
    // The server stopped reading: this one never leaves.
    rig.wire.lock().unwrap().budget = 0;
    let held = Action::new("UserEvent").field("UserEvent", "Held");
    let mut held = Box::pin(handle.send(held));
    assert!(held.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    assert!(!rig.written().contains("Held"));
    let Rig { driver, .. } = rig;
    drop(driver);
    match written.as_mut().poll(&mut cx) {
        Poll::Ready(Err(crate::AmiError::Action(ActionError::Unknown(
            DisconnectReason::LocalClose,
        )))) => {}
        other => panic!("the written Ping may have run, yet: {other:?}"),
    }
    match held.as_mut().poll(&mut cx) {
        Poll::Ready(Err(crate::AmiError::Action(ActionError::NotSent(
            DisconnectReason::LocalClose,
        )))) => {}
        other => panic!("the held action never left, yet: {other:?}"),
    }
    // Only now, with the driver gone before it was queued, is an action `Closed`.
    assert!(matches!(
        futures_lite_block_on(handle.send(Action::new("Ping"))),
        Err(crate::AmiError::Closed { .. })
    ));
}

/// A fleet driver dropped mid-run (its task aborted, its runtime shut down) ends its
/// servers as a session's driver does: the action it wrote fails `Unknown` (it may have
/// run), the one its copy held unwritten `NotSent` (safe to send again), the server is
/// `Closed` with nothing pending, and the merged stream ends with its `Disconnected`.
#[test]
fn a_fleet_driver_dropped_mid_run_fails_each_action_by_whether_it_left_and_closes_its_servers() {
    use ami_proto::fleet::{Route, ServerStatus};
    use ami_proto::{Action, ActionError, DisconnectReason};
    let (wire, fleet, mut events, mut driver) = ready_fleet(seeded());
    let mut cx = Context::from_waker(Waker::noop());
    while events.try_recv().is_some() {}
    // Written whole: the server may run it.
    let mut written = Box::pin(fleet.send(Route::Server("pbx"), Action::new("Ping")));
    assert!(written.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    assert!(String::from_utf8_lossy(&wire.lock().unwrap().written).contains("Action: Ping"));
    // Lent to the driver's copy, never written: the server stopped reading.
    wire.lock().unwrap().budget = 0;
    let held = Action::new("UserEvent").field("UserEvent", "Held");
    let mut held = Box::pin(fleet.send(Route::Server("pbx"), held));
    assert!(held.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    assert!(!String::from_utf8_lossy(&wire.lock().unwrap().written).contains("Held"));
    drop(driver);
    let result = |f: Poll<Result<crate::fleet::Reply, crate::fleet::RouteFailed>>| match f {
        Poll::Ready(Ok(reply)) => reply.result,
        other => panic!("a pending action hangs: {other:?}"),
    };
    match result(written.as_mut().poll(&mut cx)) {
        Err(crate::AmiError::Action(ActionError::Unknown(DisconnectReason::LocalClose))) => {}
        other => panic!("the written Ping may have run, yet: {other:?}"),
    }
    match result(held.as_mut().poll(&mut cx)) {
        Err(crate::AmiError::Action(ActionError::NotSent(DisconnectReason::LocalClose))) => {}
        other => panic!("the held action never left, yet: {other:?}"),
    }
    let status = fleet.status("pbx");
    assert!(
        matches!(status, Some(ServerStatus::Closed { .. })),
        "the server's driver is gone, yet it is {status:?}"
    );
    assert!(fleet
        .statuses()
        .iter()
        .all(|(_, s)| matches!(s, ServerStatus::Closed { .. })));
    assert_eq!(fleet.stats().total.pending, 0, "pending actions reported");
    let mut tail = Vec::new();
    let mut ended = false;
    for _ in 0..16 {
        match events.poll_recv(&mut cx) {
            Poll::Ready(Some(item)) => tail.push(item.item),
            Poll::Ready(None) => {
                ended = true;
                break;
            }
            Poll::Pending => {}
        }
    }
    assert!(ended, "the stream did not end: {tail:?}");
    assert!(
        matches!(tail.last(), Some(StreamItem::Disconnected { .. })),
        "the stream ends with the server's Disconnected: {tail:?}"
    );
}

/// The fleet's held reads follow the session's rule: a server is held at most `MAX_HOLD`
/// in a row, however often the reader takes (each take restarts `HOLD_READ`, but the hold
/// timer is capped at the run's end, and a timer that fires there does not mark the reader
/// stalled).
#[test]
fn a_fleet_server_is_held_at_most_max_hold_in_a_row_while_the_reader_takes() {
    use ami_proto::fleet::FleetConfig;
    AHEAD.with(|a| a.set(std::time::Duration::ZERO));
    let wire = Arc::new(Mutex::new(Wire {
        budget: usize::MAX,
        ..Wire::default()
    }));
    wire.lock().unwrap().incoming.extend(BANNER.bytes());
    WIRE.with(|w| *w.borrow_mut() = Some(wire.clone()));
    let (fleet, mut events, mut driver) = crate::fleet::start::<Clocked>(FleetConfig::default());
    let addr: SocketAddr = "127.0.0.1:5038".parse().unwrap();
    let config = ClientConfig::builder("admin", "amp111")
        .seed(7)
        .event_queue_cap(1_000_000)
        .build()
        .unwrap();
    fleet.add("pbx", config, addr).unwrap();
    spin_fleet(&mut driver);
    answer_login(&wire, &mut driver);
    assert!(fleet.status("pbx").is_some_and(|s| s.is_ready()));
    while events.try_recv().is_some() {}
    spin_fleet(&mut driver);
    let read = |fleet: &crate::fleet::FleetHandle| fleet.client_stats("pbx").unwrap().events_in;
    // A storm of tiny events: each 64 KiB read brings ~5,000, a take 1,024.
    wire.lock()
        .unwrap()
        .incoming
        .extend("Event: A\r\n\r\n".repeat(60_000).bytes());
    Wire::wake(&wire);
    spin_fleet(&mut driver);
    // Two takes at t=0: the server reads once more and is held again, far behind.
    for _ in 0..2 {
        events.buf.clear();
        assert!(events.try_recv().is_some());
        spin_fleet(&mut driver);
    }
    let held_since = read(&fleet);
    // The reader takes a batch every 8 ms or less and stays behind.
    for t in [8, 16, 24, 29] {
        advance_to(t);
        events.buf.clear();
        assert!(events.try_recv().is_some(), "behind");
        spin_fleet(&mut driver);
    }
    assert_eq!(
        read(&fleet),
        held_since,
        "held from t=0 on (the reader is behind)"
    );
    // 31 ms after the run of held reads began: MAX_HOLD (30 ms) is over, reads go on,
    // though the last take (29 ms) is under HOLD_READ ago.
    advance_to(31);
    spin_fleet(&mut driver);
    let at_31 = read(&fleet);
    assert!(
        at_31 > held_since,
        "the server's reads were held 31 ms in a row (MAX_HOLD is {:?})",
        crate::driver::MAX_HOLD,
    );
    // The run ended at its span's end, not because the reader stopped: its next take
    // while still behind does not start a new run (reads go on until it caught up), and
    // no take since does not stall it either.
    advance_to(33);
    events.buf.clear();
    assert!(events.try_recv().is_some(), "still behind");
    wire.lock()
        .unwrap()
        .incoming
        .extend("Event: A\r\n\r\n".repeat(10_000).bytes());
    Wire::wake(&wire);
    let at_33 = read(&fleet);
    spin_fleet(&mut driver);
    assert!(read(&fleet) > at_33, "a spent run holds no more reads");
    AHEAD.with(|a| a.set(std::time::Duration::ZERO));
}

/// The last ActionID written on `wire`.
fn last_written_id(wire: &Mutex<Wire>) -> String {
    let written = String::from_utf8_lossy(&wire.lock().unwrap().written).into_owned();
    written
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("ActionID: "))
        .expect("an action was written")
        .to_string()
}

/// A Pong for the Ping `id`.
fn pong(id: &str) -> String {
    format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nTimestamp: 1.0\r\n\r\n")
}

/// Rule: a turn that comes late (the clock jumped: a VM suspended for hours resumed) reads
/// what the socket holds before it fires the deadlines that passed meanwhile: an answer
/// from before its deadline completes its action. (The session driver's turn does.)
#[test]
fn a_session_answer_already_in_the_socket_when_the_clock_jumps_past_its_deadline_completes_it() {
    use ami_proto::{Action, SendOptions};
    use std::time::Duration;
    let wire = Wire {
        budget: usize::MAX,
        ..Wire::default()
    };
    let mut rig = Rig::with_config_on::<Timed>(wire, seeded());
    rig.log_in();
    let handle = rig.handle.clone();
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(handle.send_with(
        Action::new("Ping"),
        SendOptions::timeout(Duration::from_secs(5)),
    ));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    let id = last_written_id(&rig.wire);
    // A VM suspended for two hours resumes: the answer is in the socket and the action's
    // deadline long past, both at the first turn.
    AHEAD.with(|a| a.set(Duration::from_secs(2 * 3600)));
    rig.send(&pong(&id));
    Wire::wake(&rig.wire);
    rig.spin();
    let outcome = ping.as_mut().poll(&mut cx);
    AHEAD.with(|a| a.set(Duration::ZERO));
    assert!(
        matches!(outcome, Poll::Ready(Ok(_))),
        "the server answered: {outcome:?}"
    );
}

/// Rule as above, for the fleet's driver, whose timer and socket are then ready together.
#[test]
fn a_fleet_answer_already_in_the_socket_when_the_clock_jumps_past_its_deadline_completes_it() {
    use ami_proto::fleet::Route;
    use ami_proto::{Action, SendOptions};
    use std::time::Duration;
    let (wire, fleet, _events, mut driver) = logging_in_fleet_on::<Timed>(seeded());
    answer_login(&wire, &mut driver);
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(fleet.send_with(
        Route::Server("pbx"),
        Action::new("Ping"),
        SendOptions::timeout(Duration::from_secs(5)),
    ));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    let id = last_written_id(&wire);
    // As above: the answer is in the socket and the deadline long past at the first visit.
    AHEAD.with(|a| a.set(Duration::from_secs(2 * 3600)));
    wire.lock().unwrap().incoming.extend(pong(&id).bytes());
    Wire::wake(&wire);
    spin_fleet(&mut driver);
    let outcome = ping.as_mut().poll(&mut cx);
    AHEAD.with(|a| a.set(Duration::ZERO));
    assert!(
        matches!(&outcome, Poll::Ready(Ok(reply)) if reply.result.is_ok()),
        "the server answered: {outcome:?}"
    );
}

/// As above, with a caller's new action for the same server waking the driver at the
/// same moment: the visit that writes it (and fires the server's deadlines first, so that
/// nothing due is written) reads the socket before.
#[test]
fn a_fleet_answer_already_in_the_socket_counts_when_a_new_action_comes_with_the_clock_jump() {
    use ami_proto::fleet::Route;
    use ami_proto::{Action, SendOptions};
    use std::time::Duration;
    let (wire, fleet, _events, mut driver) = logging_in_fleet_on::<Timed>(seeded());
    answer_login(&wire, &mut driver);
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(fleet.send_with(
        Route::Server("pbx"),
        Action::new("Ping"),
        SendOptions::timeout(Duration::from_secs(5)),
    ));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    let id = last_written_id(&wire);
    AHEAD.with(|a| a.set(Duration::from_secs(2 * 3600)));
    wire.lock().unwrap().incoming.extend(pong(&id).bytes());
    Wire::wake(&wire);
    let mut second = Box::pin(fleet.send(Route::Server("pbx"), Action::new("Ping")));
    assert!(second.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    let outcome = ping.as_mut().poll(&mut cx);
    AHEAD.with(|a| a.set(Duration::ZERO));
    assert!(
        matches!(&outcome, Poll::Ready(Ok(reply)) if reply.result.is_ok()),
        "the server answered: {outcome:?}"
    );
}

/// Adds server `name`, on a wire of its own that takes every write, to a running fleet, and
/// logs it in.
fn add_ready_server(
    fleet: &crate::fleet::FleetHandle,
    driver: &mut crate::fleet::FleetDriver,
    name: &str,
) -> Arc<Mutex<Wire>> {
    add_ready_server_with(fleet, driver, name, seeded())
}

/// As `add_ready_server`, with the server's own `config`.
fn add_ready_server_with(
    fleet: &crate::fleet::FleetHandle,
    driver: &mut crate::fleet::FleetDriver,
    name: &str,
    config: ClientConfig,
) -> Arc<Mutex<Wire>> {
    let wire = Arc::new(Mutex::new(Wire {
        budget: usize::MAX,
        ..Wire::default()
    }));
    wire.lock().unwrap().incoming.extend(BANNER.bytes());
    WIRE.with(|w| *w.borrow_mut() = Some(wire.clone()));
    let addr: SocketAddr = "127.0.0.1:5038".parse().unwrap();
    fleet.add(name, config, addr).unwrap();
    spin_fleet(driver);
    answer_login(&wire, driver);
    assert!(fleet.status(name).is_some_and(|s| s.is_ready()), "{name}");
    wire
}

/// Queues more than a read's worth (`READ_CHUNK`) of events on `wire` and wakes it.
fn queue_over_a_read(wire: &Mutex<Wire>) {
    let mut text = String::new();
    for i in 0..2000 {
        text += &format!("Event: UserEvent\r\nUserEvent: T\r\nSeq: {i}\r\n\r\n");
    }
    assert!(text.len() > 64 << 10);
    wire.lock().unwrap().incoming.extend(text.bytes());
    Wire::wake(wire);
}

/// Rule as above, with other servers ready first whose reads fill the driver's read budget
/// of a poll: the servers that round put off are read (first, in the next poll) before the
/// deadlines fire, so one server's backlog does not fail another's answered action.
#[test]
fn a_fleet_answer_already_in_the_socket_counts_when_other_servers_fill_the_read_budget_at_the_clock_jump(
) {
    use ami_proto::fleet::{FleetConfig, Route};
    use ami_proto::{Action, SendOptions};
    use std::time::Duration;
    let (fleet, mut events, mut driver) = crate::fleet::start::<Timed>(FleetConfig::default());
    let busy = [
        add_ready_server(&fleet, &mut driver, "busy1"),
        add_ready_server(&fleet, &mut driver, "busy2"),
    ];
    let pbx = add_ready_server(&fleet, &mut driver, "pbx");
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(fleet.send_with(
        Route::Server("pbx"),
        Action::new("Ping"),
        SendOptions::timeout(Duration::from_secs(5)),
    ));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    let id = last_written_id(&pbx);
    // The VM resumes: the busy servers' sockets hold more than a read each, and pbx's the
    // answer, all ready (in that order) at the first turn, the deadline long past.
    AHEAD.with(|a| a.set(Duration::from_secs(2 * 3600)));
    for wire in &busy {
        queue_over_a_read(wire);
    }
    pbx.lock().unwrap().incoming.extend(pong(&id).bytes());
    Wire::wake(&pbx);
    let mut outcome = Poll::Pending;
    for _ in 0..8 {
        assert!(Pin::new(&mut driver).poll(&mut cx).is_pending());
        while events.try_recv().is_some() {}
        outcome = ping.as_mut().poll(&mut cx);
        if outcome.is_ready() {
            break;
        }
    }
    AHEAD.with(|a| a.set(Duration::ZERO));
    assert!(
        matches!(&outcome, Poll::Ready(Ok(reply)) if reply.result.is_ok()),
        "the server answered: {outcome:?}"
    );
}

/// The deadlines that fire after the reads of the servers a cut round put off still fire
/// while other servers flood every poll past the read budget.
#[test]
fn a_fleet_deadline_fires_while_other_servers_flood_every_poll_past_the_read_budget() {
    use ami_proto::fleet::{FleetConfig, Route};
    use ami_proto::{Action, ActionError, SendOptions};
    use std::time::Duration;
    let (fleet, mut events, mut driver) = crate::fleet::start::<Timed>(FleetConfig::default());
    let busy = [
        add_ready_server(&fleet, &mut driver, "busy1"),
        add_ready_server(&fleet, &mut driver, "busy2"),
        add_ready_server(&fleet, &mut driver, "busy3"),
    ];
    let _quiet = add_ready_server(&fleet, &mut driver, "pbx");
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(fleet.send_with(
        Route::Server("pbx"),
        Action::new("Ping"),
        SendOptions::timeout(Duration::from_secs(5)),
    ));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    AHEAD.with(|a| a.set(Duration::from_secs(10)));
    for wire in &busy {
        wire.lock().unwrap().flood = true;
        for _ in 0..8 {
            queue_over_a_read(wire);
        }
    }
    let mut outcome = Poll::Pending;
    let mut polls = 0;
    while outcome.is_pending() && polls < 16 {
        assert!(Pin::new(&mut driver).poll(&mut cx).is_pending());
        polls += 1;
        while events.try_recv().is_some() {}
        outcome = ping.as_mut().poll(&mut cx);
    }
    AHEAD.with(|a| a.set(Duration::ZERO));
    let left: usize = busy.iter().map(|w| w.lock().unwrap().incoming.len()).sum();
    assert!(left > 0, "every poll found more than its read budget");
    assert!(
        matches!(&outcome, Poll::Ready(Ok(reply)) if matches!(
            reply.result,
            Err(crate::AmiError::Action(ActionError::TimedOut { .. }))
        )),
        "after {polls} polls: {outcome:?}"
    );
}

/// A late answer as the tests below read it: (ActionID, mark, Message).
type Late = (String, Option<u64>, Option<String>);

/// A Redirect sent with `mark` and written; its future dropped before its answer came
/// (`dropped_first`), or after the driver put that answer in its slot, unpolled. Returns
/// the rig, the Redirect's ActionID, the stream's items and the late answers among them.
fn redirect_dropped_around_its_answer(
    mark: u64,
    dropped_first: bool,
) -> (Rig, String, Vec<StreamItem>, Vec<Late>) {
    use ami_proto::{Action, SendOptions};
    let mut rig = Rig::new(usize::MAX, 64);
    rig.log_in();
    while rig.events.try_recv().is_some() {}
    let handle = rig.handle.clone();
    let mut cx = Context::from_waker(Waker::noop());
    let redirect = Action::new("Redirect")
        .field("Channel", "PJSIP/agent-0001")
        .field("Exten", "200")
        .field("Context", "agents")
        .field("Priority", "1");
    let mut sent = Box::pin(handle.send_with(redirect, SendOptions::default().with_mark(mark)));
    assert!(sent.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    let written = rig.written();
    let id = written
        .split("Action: Redirect")
        .nth(1)
        .and_then(|tail| tail.lines().find_map(|l| l.strip_prefix("ActionID: ")))
        .expect("the Redirect went out")
        .to_string();
    let answer =
        format!("Response: Success\r\nActionID: {id}\r\nMessage: Redirect successful\r\n\r\n");
    if dropped_first {
        drop(sent);
        rig.send(&answer);
        rig.spin();
    } else {
        rig.send(&answer);
        rig.spin();
        drop(sent);
        rig.spin();
    }
    let items: Vec<StreamItem> = std::iter::from_fn(|| rig.events.try_recv()).collect();
    let late = items
        .iter()
        .filter_map(|i| match i {
            StreamItem::LateAnswer { id, mark, response } => Some((
                id.as_str().to_string(),
                *mark,
                response.get_str("Message").map(str::to_string),
            )),
            _ => None,
        })
        .collect();
    (rig, id, items, late)
}

#[test]
fn a_dropped_futures_late_answer_reaches_the_event_stream_under_its_mark() {
    // A dialer's `send_with` future dropped (a select! that timed out first) once its
    // Redirect was written: the action is cancelled, but the server runs it; its answer,
    // when it comes, is the stream's, recognised by the mark the caller chose, since an
    // async caller never sees the ActionID.
    let (rig, id, items, late) = redirect_dropped_around_its_answer(5, true);
    assert_eq!(
        late,
        [(id, Some(5), Some("Redirect successful".to_string()))],
        "{items:?}"
    );
    assert!(
        matches!(items.first(), Some(StreamItem::Mark { mark: 5 })),
        "the mark where the action ended, then its late answer: {items:?}"
    );
    assert_eq!(rig.handle.stats().late_answers_dropped, 1);
}

#[test]
fn an_answer_in_the_slot_of_a_future_dropped_before_its_next_poll_reaches_the_event_stream_under_its_mark(
) {
    // `tokio::time::timeout` elapsing (or a `select!` taking another branch) after the
    // driver put the answer in the slot, before the future was polled again: the caller
    // never reads its result, so the stream says what the server did, as for a late answer.
    let (rig, id, items, late) = redirect_dropped_around_its_answer(7, false);
    assert_eq!(
        late,
        [(id, Some(7), Some("Redirect successful".to_string()))],
        "{items:?}"
    );
    assert!(
        matches!(items.first(), Some(StreamItem::Mark { mark: 7 })),
        "the mark where the action completed, then its answer: {items:?}"
    );
    // It came in time: no late answer on the wire.
    assert_eq!(rig.handle.stats().late_answers_dropped, 0);
}

/// A waker that counts its wakes: which of two tasks a wake-up reached.
struct CountingWake(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A counting waker and its count.
fn counting_waker() -> (Waker, impl Fn() -> usize) {
    let count = Arc::new(CountingWake(std::sync::atomic::AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    (waker, move || {
        count.0.load(std::sync::atomic::Ordering::SeqCst)
    })
}

#[test]
fn a_recv_polled_again_from_another_task_wakes_that_task_when_a_batch_comes() {
    // A consumer whose `recv` moved (a `select!` in a new task, a stream handed on): the
    // hand-over must wake the task that polled last, not the one that polled first.
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    while rig.events.try_recv().is_some() {}
    rig.spin();
    let (first, first_wakes) = counting_waker();
    let (second, second_wakes) = counting_waker();
    assert!(rig
        .events
        .poll_recv(&mut Context::from_waker(&first))
        .is_pending());
    assert!(rig
        .events
        .poll_recv(&mut Context::from_waker(&second))
        .is_pending());
    rig.storm(1);
    rig.spin();
    assert_eq!(second_wakes(), 1, "the task that polled last is woken");
    assert_eq!(first_wakes(), 0);
    match rig.events.poll_recv(&mut Context::from_waker(&second)) {
        Poll::Ready(Some(item)) => assert_eq!(seq(&item), Some(0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_take_straight_from_the_core_rings_only_a_driver_that_holds_its_reads() {
    // A consumer below the read-ahead: the driver reads on anyway, so a take from the core
    // costs it no extra turn.
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    while rig.events.try_recv().is_some() {}
    rig.spin();
    rig.storm(3);
    rig.spin();
    rig.storm(3);
    rig.spin();
    assert!(rig.handle.inner.lock().client.wants_read(), "not holding");
    // The hand-off's batch gone by hand: the next try_recv takes from the core.
    let handed = std::mem::take(&mut rig.events.inner.handoff().items);
    assert_eq!(handed.len(), 3);
    rig.events.inner.bell.clear();
    let first = rig.events.try_recv().expect("an event from the core");
    assert_eq!(seq(&first), Some(0));
    assert!(
        !rig.events.inner.bell.rung_for_test(),
        "a driver that reads on needs no ring"
    );
}

#[test]
fn a_send_polled_again_from_another_task_wakes_that_task_when_its_answer_comes() {
    // A send future moved between tasks (polled by a new waker): the answer wakes the task
    // that polled last, or the future would wait for ever.
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let handle = rig.handle.clone();
    let mut ping = Box::pin(handle.send(ami_proto::Action::new("Ping")));
    let (first, first_wakes) = counting_waker();
    let (second, second_wakes) = counting_waker();
    assert!(ping
        .as_mut()
        .poll(&mut Context::from_waker(&first))
        .is_pending());
    rig.spin();
    assert!(ping
        .as_mut()
        .poll(&mut Context::from_waker(&second))
        .is_pending());
    let id = last_written_id(&rig.wire);
    rig.send(&pong(&id));
    rig.spin();
    assert_eq!(second_wakes(), 1, "the task that polled last is woken");
    assert_eq!(first_wakes(), 0);
    assert!(matches!(
        ping.as_mut().poll(&mut Context::from_waker(&second)),
        Poll::Ready(Ok(_))
    ));
}

#[test]
fn a_waiter_left_without_an_outcome_learns_that_the_driver_stopped() {
    // The core's close completes every action it knows; a waiter it does not (a slot the
    // close missed) must still end when the driver goes, not wait for ever.
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let slot = Arc::new(crate::shared::Slot::default());
    let id = ami_proto::ActionId::new("nobody-1").unwrap();
    rig.handle.inner.lock().waiters.insert(id, slot.clone());
    let (waker, wakes) = counting_waker();
    assert!(slot.poll(&mut Context::from_waker(&waker)).is_pending());
    let Rig { driver, handle, .. } = rig;
    drop(driver);
    assert_eq!(wakes(), 1, "woken when the driver stopped");
    assert!(matches!(
        slot.poll(&mut Context::from_waker(&waker)),
        Poll::Ready(None)
    ));
    assert!(handle.inner.lock().waiters.is_empty());
}

#[test]
fn a_lone_action_due_before_the_drivers_timer_wakes_the_driver_to_arm_it_earlier() {
    // Written by its caller, the action's deadline is still the driver's to keep: one
    // earlier than the driver's timer rings it, or the timeout would fire only when that
    // timer does.
    use ami_proto::{Action, SendOptions};
    use std::time::Duration;
    let mut rig = Rig::direct();
    let timer = rig.handle.inner.lock().driver_timer.expect("armed");
    rig.events.inner.bell.clear();
    let handle = rig.handle.clone();
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(handle.send_with(
        Action::new("Ping"),
        SendOptions::timeout(Duration::from_millis(1)),
    ));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        rig.wire.lock().unwrap().direct_writes,
        1,
        "written by its caller"
    );
    let due = rig
        .handle
        .inner
        .lock()
        .client
        .poll_timeout()
        .expect("a deadline");
    assert!(due < timer, "{due:?} {timer:?}");
    assert!(
        rig.events.inner.bell.rung_for_test(),
        "the driver is woken to arm its timer earlier"
    );
    rig.spin();
    assert_eq!(rig.handle.inner.lock().driver_timer, Some(due));
}

#[test]
fn a_fleet_action_due_before_the_drivers_armed_timer_times_out_at_its_own_deadline() {
    // The fleet's driver arms its timer again only when the shared timer version moves: an
    // action due before the deadline the timer is armed for (the heartbeat's) must move
    // it, or the action would time out only when that later timer fires. Nothing else
    // wakes the driver here (the socket stays quiet), so only the timer can time it out.
    use ami_proto::fleet::Route;
    use ami_proto::{Action, ActionError, SendOptions};
    use std::time::Duration;
    advance_to(0);
    let (wire, fleet, _events, mut driver) = logging_in_fleet_on::<Clocked>(seeded());
    answer_login(&wire, &mut driver);
    assert!(fleet.status("pbx").is_some_and(|s| s.is_ready()));
    let timeout = Duration::from_secs(1);
    let armed = fleet.shards.shards[0].lock().deadline;
    let due = Clocked::now() + timeout;
    assert!(
        armed.is_some_and(|at| at > due + timeout),
        "the driver's timer is armed well after the action's deadline: {armed:?}"
    );
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(fleet.send_with(
        Route::Server("pbx"),
        Action::new("Ping"),
        SendOptions::timeout(timeout),
    ));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    spin_fleet(&mut driver);
    let written = String::from_utf8_lossy(&wire.lock().unwrap().written).into_owned();
    assert!(
        written.contains("Action: Ping\r\n"),
        "the Ping written: {written}"
    );
    advance_to(999);
    spin_fleet(&mut driver);
    assert!(
        ping.as_mut().poll(&mut cx).is_pending(),
        "not timed out before its deadline"
    );
    advance_to(1000);
    spin_fleet(&mut driver);
    let outcome = ping.as_mut().poll(&mut cx);
    advance_to(0);
    assert!(
        matches!(&outcome, Poll::Ready(Ok(reply)) if matches!(
            reply.result,
            Err(crate::AmiError::Action(ActionError::TimedOut { .. }))
        )),
        "at its own deadline: {outcome:?}"
    );
}

#[test]
fn a_session_action_due_before_the_drivers_armed_timer_times_out_at_its_own_deadline() {
    // The session driver's sibling of the fleet test above: its timer, armed for the
    // heartbeat, is armed earlier for an action due first. The socket stays quiet, so only
    // the timer can time the action out.
    use ami_proto::{Action, ActionError, SendOptions};
    use std::time::Duration;
    advance_to(0);
    let mut rig = clocked_rig();
    rig.log_in();
    let timeout = Duration::from_secs(1);
    let armed = rig.handle.inner.lock().driver_timer;
    let due = Clocked::now() + timeout;
    assert!(
        armed.is_some_and(|at| at > due + timeout),
        "the driver's timer is armed well after the action's deadline: {armed:?}"
    );
    let handle = rig.handle.clone();
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(handle.send_with(Action::new("Ping"), SendOptions::timeout(timeout)));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    assert!(
        rig.written().contains("Action: Ping\r\n"),
        "the Ping written"
    );
    advance_to(999);
    rig.spin();
    assert!(
        ping.as_mut().poll(&mut cx).is_pending(),
        "not timed out before its deadline"
    );
    advance_to(1000);
    rig.spin();
    let outcome = ping.as_mut().poll(&mut cx);
    advance_to(0);
    assert!(
        matches!(
            outcome,
            Poll::Ready(Err(crate::AmiError::Action(ActionError::TimedOut { .. })))
        ),
        "at its own deadline: {outcome:?}"
    );
}

#[test]
fn a_direct_writer_that_takes_nothing_leaves_the_bytes_to_the_driver() {
    // `Ok(0)` from a direct write must not be taken as progress: the caller would spin under
    // the core lock for ever.
    let mut rig = Rig::with_wire(
        Wire {
            budget: usize::MAX,
            direct: true,
            direct_takes_nothing: true,
            ..Wire::default()
        },
        1024,
    );
    rig.log_in();
    rig.events.inner.bell.clear();
    let handle = rig.handle.clone();
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(handle.send(ami_proto::Action::new("Ping")));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    assert!(!rig.written().contains("Action: Ping"));
    assert!(
        rig.events.inner.bell.rung_for_test(),
        "the driver writes it"
    );
    rig.spin();
    assert!(rig.written().contains("Action: Ping"));
}

#[test]
fn handles_events_and_watches_debug_print_what_they_are_about() {
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let handle = format!("{:?}", rig.handle);
    assert!(
        handle.contains("Handle") && handle.contains("127.0.0.1:5038") && handle.contains("Ready"),
        "{handle}"
    );
    rig.storm(2);
    rig.spin();
    assert!(rig.events.try_recv().is_some());
    let events = format!("{:?}", rig.events);
    assert!(
        events.contains("Events") && events.contains("buffered"),
        "{events}"
    );
    let watch = format!("{:?}", rig.handle.status());
    assert!(
        watch.contains("StatusWatch") && watch.contains("Ready"),
        "{watch}"
    );
    let driver = format!("{:?}", rig.driver);
    assert!(
        driver.contains("Driver") && driver.contains("finished: false"),
        "{driver}"
    );
}

#[test]
fn a_status_watch_returns_each_change_once_and_nothing_after_closed() {
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let mut watch = rig.handle.status();
    let (waker, wakes) = counting_waker();
    {
        let mut next = std::pin::pin!(watch.changed());
        assert!(
            next.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending(),
            "no change since the watch was made"
        );
        rig.handle.close();
        rig.spin();
        assert_eq!(wakes(), 1, "the change wakes the watcher");
        match next.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Some(Status::Closed { .. })) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        futures_lite_block_on(watch.changed()),
        None,
        "Closed is last"
    );
}

#[test]
fn wait_for_returns_at_once_a_status_that_already_satisfies_it() {
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let mut watch = rig.handle.status();
    assert!(matches!(
        futures_lite_block_on(watch.wait_for(|s| matches!(s, Status::Ready { .. }))),
        Status::Ready { .. }
    ));
    assert_eq!(futures_lite_block_on(rig.handle.wait_ready()), Ok(()));
}

#[test]
fn a_status_watch_given_up_while_waiting_leaves_no_waker_behind() {
    // `timeout(d, ami.wait_closed())` in a loop: each watch given up must take its waker
    // with it, or the session keeps one per try until the status next changes.
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..3 {
        let mut watch = rig.handle.status();
        let mut next = Box::pin(watch.changed());
        assert!(next.as_mut().poll(&mut cx).is_pending());
        drop(next);
        drop(watch);
        let mut closed = Box::pin(rig.handle.wait_closed());
        assert!(closed.as_mut().poll(&mut cx).is_pending());
    }
    assert!(rig.handle.inner.lock().status_wakers.is_empty());
}

#[test]
fn a_session_driver_reading_while_its_copy_waits_copies_each_lent_byte_once() {
    // As the fleet's driver: a server that stops reading must not cost a copy of every
    // unwritten byte at each turn.
    use crate::driver::RELENT;
    use ami_proto::Action;
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    rig.wire.lock().unwrap().budget = 0;
    let before = rig.wire.lock().unwrap().written.len();
    RELENT.with(|c| c.set(0));
    let mut cx = Context::from_waker(Waker::noop());
    let handle = rig.handle.clone();
    let first = Action::new("UserEvent").field("UserEvent", "First");
    let mut first = Box::pin(handle.send(first));
    assert!(first.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    rig.storm(1);
    rig.spin();
    let second = Action::new("UserEvent").field("UserEvent", "Second");
    let mut second = Box::pin(handle.send(second));
    assert!(second.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    rig.storm(1);
    rig.wire.lock().unwrap().budget = 10;
    rig.spin();
    rig.storm(1);
    rig.spin();
    rig.wire.lock().unwrap().budget = usize::MAX;
    rig.handle.inner.bell.ring();
    rig.spin();
    let written = rig.wire.lock().unwrap().written[before..].to_vec();
    let text = String::from_utf8_lossy(&written).into_owned();
    assert_eq!(text.matches("UserEvent: First").count(), 1, "{text}");
    assert_eq!(text.matches("UserEvent: Second").count(), 1, "{text}");
    assert_eq!(
        RELENT.with(|c| c.get()),
        written.len(),
        "every byte written was copied once, however many reads it waited through"
    );
}

#[test]
fn a_lost_connection_is_let_go_by_the_callers_direct_writer_too() {
    // The direct writer shares the stream: kept after the link went, it would hold the
    // server's closed connection open through the reconnect backoff.
    let mut rig = Rig::direct();
    assert!(rig.handle.inner.lock().direct.is_some());
    // The test's two references, the link's and the direct writer's.
    assert_eq!(Arc::strong_count(&rig.wire), 4);
    rig.wire.lock().unwrap().eof = true;
    rig.spin();
    assert!(matches!(
        rig.handle.status().get(),
        Status::Disconnected { .. }
    ));
    assert!(rig.handle.inner.lock().direct.is_none());
    assert_eq!(
        Arc::strong_count(&rig.wire),
        2,
        "nothing holds the lost stream"
    );
}

#[test]
fn a_driver_whose_socket_never_runs_dry_yields_to_its_executor() {
    // On a one-thread executor a server that floods must not keep the driver's poll going
    // for ever: after a run of busy turns it returns Pending and wakes itself.
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    // Nobody reads events: the core keeps none, so reads are never held for a consumer.
    drop(rig.events);
    rig.wire.lock().unwrap().flood = true;
    let (waker, wakes) = counting_waker();
    let polled = Pin::new(&mut rig.driver).poll(&mut Context::from_waker(&waker));
    assert!(polled.is_pending());
    assert_eq!(wakes(), 1, "it asks to be polled again at once");
    let flooded = rig.wire.lock().unwrap().flooded;
    assert!(
        (crate::driver::TURNS_BEFORE_YIELD as u64..=crate::driver::TURNS_BEFORE_YIELD as u64 + 2)
            .contains(&flooded),
        "{flooded} reads in one poll: a yield after a run of busy turns, not after each"
    );
}

#[test]
fn a_connection_the_core_gives_up_on_is_shut_down_at_once_not_at_the_next_connect() {
    // A server that stopped answering (the heartbeat went unanswered): the core drops the
    // connection and reconnects after a backoff. The old transport is shut down then (the
    // server reads the end of the stream), not kept, read from, until the new one opens.
    use std::time::Duration;
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let mut step = 0;
    while !matches!(rig.handle.status().get(), Status::Disconnected { .. }) {
        step += 1;
        assert!(step < 10, "still {:?}", rig.handle.status().get());
        AHEAD.with(|a| a.set(Duration::from_secs(600 * step)));
        rig.handle.inner.bell.ring();
        rig.spin();
    }
    let closes = rig.wire.lock().unwrap().closes;
    AHEAD.with(|a| a.set(Duration::ZERO));
    assert_eq!(closes, 1, "shut down when the core let it go");
}

#[test]
fn a_caller_never_writes_while_the_driver_holds_unwritten_bytes() {
    // The driver's copy holds the rest of an action it began to write (its caller gave up,
    // so no action is in flight): a new action's bytes must follow those, not cut into them.
    use ami_proto::Action;
    let mut rig = Rig::direct();
    let before = rig.written().len();
    let direct_before = rig.wire.lock().unwrap().direct_writes;
    rig.wire.lock().unwrap().budget = 10;
    let mut cx = Context::from_waker(Waker::noop());
    let handle = rig.handle.clone();
    let first = Action::new("UserEvent").field("UserEvent", "First");
    let mut first = Box::pin(handle.send(first));
    assert!(first.as_mut().poll(&mut cx).is_pending());
    rig.spin();
    assert!(
        !rig.written()[before..].contains("First"),
        "not all written"
    );
    drop(first);
    // The stream has room again, but the driver has not yet been polled.
    rig.wire.lock().unwrap().budget = usize::MAX;
    let second = Action::new("UserEvent").field("UserEvent", "Second");
    let mut second = Box::pin(handle.send(second));
    assert!(second.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        rig.wire.lock().unwrap().direct_writes,
        direct_before + 1,
        "only the first action's start went out directly"
    );
    rig.spin();
    let written = rig.written()[before..].to_string();
    assert_eq!(
        written.matches("UserEvent: First").count(),
        1,
        "{written:?}"
    );
    assert_eq!(
        written.matches("UserEvent: Second").count(),
        1,
        "{written:?}"
    );
    assert!(
        written.starts_with("Action: UserEvent\r\n")
            && written.find("First") < written.find("Second"),
        "{written:?}"
    );
    assert_eq!(
        written.matches("Action: UserEvent\r\n").count(),
        2,
        "{written:?}"
    );
}

#[test]
fn a_fleet_closes_when_its_last_handle_and_its_stream_are_gone_and_not_before() {
    let (_wire, fleet, events, mut driver) = ready_fleet(seeded());
    let clone = fleet.clone();
    let watch = fleet.watch();
    drop(fleet);
    drop(events);
    // The driver goes on (spin_fleet checks it is still pending).
    spin_fleet(&mut driver);
    assert!(
        clone.status("pbx").is_some_and(|s| s.is_ready()),
        "a clone is left"
    );
    drop(clone);
    // Only the watch is left: the fleet closes and its driver ends.
    let mut cx = Context::from_waker(Waker::noop());
    assert!(Pin::new(&mut driver).poll(&mut cx).is_ready());
    drop(watch);
}

#[test]
fn a_fleet_whose_stream_went_first_closes_when_its_last_handle_goes() {
    let (_wire, fleet, events, mut driver) = ready_fleet(seeded());
    drop(events);
    spin_fleet(&mut driver);
    assert!(fleet.status("pbx").is_some_and(|s| s.is_ready()));
    drop(fleet);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(Pin::new(&mut driver).poll(&mut cx).is_ready());
}

#[test]
fn a_fleet_closed_by_its_last_users_going_shuts_its_transports_down() {
    // As a session closed that way, and as a server removed: the server reads the end of
    // the stream (TLS: close_notify), not a connection cut off.
    let (wire, fleet, events, mut driver) = ready_fleet(seeded());
    assert_eq!(wire.lock().unwrap().closes, 0);
    drop((fleet, events));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(Pin::new(&mut driver).poll(&mut cx).is_ready());
    assert_eq!(wire.lock().unwrap().closes, 1);
}

#[test]
fn a_read_that_fails_ends_the_connection() {
    // A reset connection: the core hears of it (Disconnected, then a reconnect) and the
    // driver lets the broken transport go instead of reading it again.
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    rig.wire.lock().unwrap().reset = true;
    rig.spin();
    match rig.handle.status().get() {
        Status::Disconnected { reason, .. } => assert!(
            matches!(
                reason,
                ami_proto::DisconnectReason::TransportError(io::ErrorKind::ConnectionReset)
            ),
            "{reason:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(Arc::strong_count(&rig.wire), 2, "the transport was let go");
}

#[test]
fn a_fleet_whose_driver_is_gone_refuses_adds_and_sends_as_closed() {
    use crate::fleet::{AddError, Route, RouteFailed};
    let (_wire, fleet, _events, driver) = ready_fleet(seeded());
    drop(driver);
    let addr: SocketAddr = "127.0.0.1:5038".parse().unwrap();
    assert!(matches!(
        fleet.add("other", seeded(), addr),
        Err(AddError::Closed)
    ));
    let sent =
        futures_lite_block_on(fleet.send(Route::Server("pbx"), ami_proto::Action::new("Ping")));
    assert!(matches!(sent, Err(RouteFailed::Closed)), "{sent:?}");
    let all = futures_lite_block_on(fleet.send_all(ami_proto::Action::new("Ping")));
    assert!(all.is_empty(), "{all:?}");
}

/// A fleet of two shards, server "a" on one and "b" on the other, both ready; one driver
/// runs both shards.
fn two_shard_fleet() -> (
    crate::fleet::FleetHandle,
    crate::fleet::FleetEvents,
    crate::fleet::FleetDriver,
    [Arc<Mutex<Wire>>; 2],
) {
    use ami_proto::fleet::FleetConfig;
    let (fleet, events, drivers) =
        crate::fleet::start_sharded::<Scripted>(FleetConfig::default(), 2);
    let mut driver = crate::fleet::FleetDriver::join(drivers);
    assert_eq!(fleet.shards(), 2);
    let a = add_ready_server(&fleet, &mut driver, "a");
    let b = add_ready_server(&fleet, &mut driver, "b");
    (fleet, events, driver, [a, b])
}

/// Sends a Ping by `route`, and lets whichever server it went to leave it unanswered
/// (`answer` false) or answer it; returns the server it went to, and the pending send.
fn ping_by(
    fleet: &crate::fleet::FleetHandle,
    driver: &mut crate::fleet::FleetDriver,
    wires: &[Arc<Mutex<Wire>>; 2],
    route: ami_proto::fleet::Route<'_>,
    answer: bool,
) -> String {
    let before: Vec<usize> = wires
        .iter()
        .map(|w| w.lock().unwrap().written.len())
        .collect();
    let mut cx = Context::from_waker(Waker::noop());
    let mut send = Box::pin(fleet.send(route, ami_proto::Action::new("Ping")));
    assert!(send.as_mut().poll(&mut cx).is_pending());
    spin_fleet(driver);
    let took: Vec<usize> = (0..2)
        .filter(|&i| wires[i].lock().unwrap().written.len() > before[i])
        .collect();
    assert_eq!(took.len(), 1, "one server took it");
    let server = ["a", "b"][took[0]].to_string();
    if !answer {
        // Left in flight: the future is forgotten, so the action is not cancelled.
        std::mem::forget(send);
        return server;
    }
    let wire = &wires[took[0]];
    let id = last_written_id(wire);
    wire.lock().unwrap().incoming.extend(pong(&id).bytes());
    Wire::wake(wire);
    spin_fleet(driver);
    match send.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(reply)) => assert_eq!(reply.server.as_str(), server),
        other => panic!("{other:?}"),
    }
    server
}

#[test]
fn a_sharded_fleet_routes_by_name_to_the_shard_that_holds_the_server() {
    use ami_proto::fleet::Route;
    let (fleet, _events, mut driver, wires) = two_shard_fleet();
    for name in ["b", "a", "b"] {
        assert_eq!(
            ping_by(&fleet, &mut driver, &wires, Route::Server(name), true),
            name
        );
    }
}

#[test]
fn a_sharded_fleet_takes_turns_across_its_shards_by_round_robin() {
    use ami_proto::fleet::{Policy, Route};
    let (fleet, _events, mut driver, wires) = two_shard_fleet();
    let went: Vec<String> = (0..4)
        .map(|_| {
            ping_by(
                &fleet,
                &mut driver,
                &wires,
                Route::Any(Policy::RoundRobin),
                true,
            )
        })
        .collect();
    assert!(
        went == ["a", "b", "a", "b"] || went == ["b", "a", "b", "a"],
        "{went:?}"
    );
}

#[test]
fn a_sharded_fleet_sends_fewest_in_flight_work_to_the_least_loaded_shard() {
    use ami_proto::fleet::{Policy, Route};
    let (fleet, _events, mut driver, wires) = two_shard_fleet();
    let fewest = Route::Any(Policy::FewestInFlight);
    // Whichever takes the first keeps it in flight: the next two go to the other one,
    // wherever the rotation points.
    let busy = ping_by(&fleet, &mut driver, &wires, fewest, false);
    for _ in 0..2 {
        assert_ne!(ping_by(&fleet, &mut driver, &wires, fewest, true), busy);
    }
}

#[test]
fn a_sharded_fleets_statuses_stats_and_refusals_add_up_its_shards() {
    use crate::fleet::RouteFailed;
    use ami_proto::fleet::{Policy, Route, RouteError};
    let (fleet, _events, mut driver, wires) = two_shard_fleet();
    for _ in 0..2 {
        ping_by(
            &fleet,
            &mut driver,
            &wires,
            Route::Any(Policy::RoundRobin),
            true,
        );
    }
    let mut names: Vec<String> = fleet
        .statuses()
        .into_iter()
        .map(|(n, s)| {
            assert!(s.is_ready(), "{n}: {s:?}");
            n.as_str().to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(fleet.read_counters().len(), 2);
    // Both closed (they stay in the fleet): a send by policy finds no server on either
    // shard, and says so once, with both shards' servers counted.
    fleet.close_server("a").unwrap();
    fleet.close_server("b").unwrap();
    spin_fleet(&mut driver);
    let refused = futures_lite_block_on(fleet.send(
        Route::Any(Policy::RoundRobin),
        ami_proto::Action::new("Ping"),
    ));
    match refused {
        Err(RouteFailed::Route(RouteError::NoServer { servers, ready, .. })) => {
            assert_eq!((servers, ready), (2, 0));
        }
        other => panic!("{other:?}"),
    }
    // Both closed (in `by_status`), then both removed (in `removed`).
    assert_stats_add_up(&fleet);
    assert!(fleet.remove("a") && fleet.remove("b"));
    assert_stats_add_up(&fleet);
    let all = fleet.stats();
    assert_eq!((all.added, all.removed, all.routed), (2, 2, 2));
    assert_eq!(all.no_server, 1, "one refusal, though both shards refused");
}

#[test]
fn a_sharded_fleets_refusal_counts_the_ready_but_full_servers_of_every_shard() {
    // Each server holds one action at most: one unanswered Ping each fills both, and a
    // send by policy then finds them ready and full on both shards.
    use crate::fleet::RouteFailed;
    use ami_proto::fleet::{FleetConfig, Policy, Route, RouteError};
    let (fleet, _events, drivers) =
        crate::fleet::start_sharded::<Scripted>(FleetConfig::default(), 2);
    let mut driver = crate::fleet::FleetDriver::join(drivers);
    let one = || {
        ClientConfig::builder("admin", "amp111")
            .seed(7)
            .pipeline_depth(1)
            .max_queued_actions(1)
            .max_pending_actions(1)
            .build()
            .unwrap()
    };
    let wires = [
        add_ready_server_with(&fleet, &mut driver, "a", one()),
        add_ready_server_with(&fleet, &mut driver, "b", one()),
    ];
    let mut busy: Vec<String> = (0..2)
        .map(|_| {
            ping_by(
                &fleet,
                &mut driver,
                &wires,
                Route::Any(Policy::RoundRobin),
                false,
            )
        })
        .collect();
    busy.sort();
    assert_eq!(busy, ["a", "b"]);
    let refused = futures_lite_block_on(fleet.send(
        Route::Any(Policy::RoundRobin),
        ami_proto::Action::new("Ping"),
    ));
    match refused {
        Err(RouteFailed::Route(RouteError::NoServer {
            servers,
            ready,
            full,
        })) => assert_eq!((servers, ready, full), (2, 2, 2)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_sharded_fleets_stats_add_up_counters_that_moved_on_every_shard() {
    // The counters `a_sharded_fleets_statuses_stats_and_refusals_add_up_its_shards` leaves
    // at zero, moved on both shards, so a wrong sum shows.
    use ami_proto::fleet::FleetConfig;
    let (fleet, _events, mut driver, [a, b]) = two_shard_fleet();
    // Events read from the wires but never taken by the stream: lost when their servers go.
    fleet_events_on(&a, 3);
    fleet_events_on(&b, 4);
    spin_fleet(&mut driver);
    let per = |fleet: &crate::fleet::FleetHandle| -> Vec<_> {
        fleet
            .shards
            .shards
            .iter()
            .map(|s| s.lock().fleet.stats())
            .collect()
    };
    assert!(
        per(&fleet).iter().all(|s| s.timer_entries > 0),
        "ready servers' timers"
    );
    assert_stats_add_up(&fleet);
    assert!(fleet.remove("a") && fleet.remove("b"));
    spin_fleet(&mut driver);
    let lost: Vec<u64> = per(&fleet)
        .iter()
        .map(|s| s.events_lost_on_removal)
        .collect();
    assert!(lost.iter().all(|&n| n > 0), "{lost:?}");
    assert_stats_add_up(&fleet);
    // One connect per step on each shard, two servers added on each at once: each shard
    // ends a step with a connect deferred.
    let mut config = FleetConfig::default();
    config.budget.connects_per_step = 2;
    let (paced, _events, drivers) = crate::fleet::start_sharded::<Scripted>(config, 2);
    let mut driver = crate::fleet::FleetDriver::join(drivers);
    let addr: SocketAddr = "127.0.0.1:5038".parse().unwrap();
    for name in ["a", "b", "c", "d"] {
        paced.add(name, seeded(), addr).unwrap();
    }
    spin_fleet(&mut driver);
    // The next step of each shard (the scripted timer never fires) finds one deferred.
    for shard in &paced.shards.shards {
        shard.lock().fleet.handle_timeout(Instant::now());
    }
    let deferred: Vec<u64> = per(&paced)
        .iter()
        .map(|s| s.steps_with_deferred_connects)
        .collect();
    assert!(deferred.iter().all(|&n| n > 0), "{deferred:?}");
    assert_stats_add_up(&paced);
    // Servers removed with a marked action the close ended, a pair (one on each shard) at
    // a time, the stream never read: past `MAX_REMOVAL_GAPS` marks waiting, each shard
    // drops the next ones.
    let (fleet, _events, _drivers) =
        crate::fleet::start_sharded::<Scripted>(FleetConfig::default(), 2);
    let marked = ami_proto::SendOptions::default().with_mark(1);
    for k in 0..=ami_proto::fleet::MAX_REMOVAL_GAPS {
        let pair = [format!("x{k}"), format!("y{k}")];
        for name in &pair {
            fleet.add(name, seeded(), addr).unwrap();
        }
        for (shard, name) in fleet.shards.shards.iter().zip(&pair) {
            let mut s = shard.lock();
            let route = ami_proto::fleet::Route::Server(name);
            let ping = ami_proto::Action::new("Ping");
            assert!(s
                .fleet
                .send_with(Instant::now(), route, ping, marked)
                .is_ok());
        }
        for name in &pair {
            assert!(fleet.remove(name));
        }
    }
    let dropped: Vec<u64> = per(&fleet).iter().map(|s| s.removal_gaps_dropped).collect();
    assert!(dropped.iter().all(|&n| n > 0), "{dropped:?}");
    assert_stats_add_up(&fleet);
}

#[test]
fn a_sharded_fleets_stream_takes_the_shard_after_the_last_one_read_when_one_between_is_empty() {
    // Three shards, "a", "b", "c" in turn. After a batch from the first, the second is
    // empty: the stream goes on to the third, not back to the first.
    use ami_proto::fleet::FleetConfig;
    let (fleet, mut events, drivers) =
        crate::fleet::start_sharded::<Scripted>(FleetConfig::default(), 3);
    let mut driver = crate::fleet::FleetDriver::join(drivers);
    let [a, _b, c] = ["a", "b", "c"].map(|n| add_ready_server(&fleet, &mut driver, n));
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        assert!(fleet.shards.shards[i].lock().fleet.status(name).is_some());
    }
    while events.try_recv().is_some() {}
    fleet_events_on(&a, 1);
    spin_fleet(&mut driver);
    let item = events.try_recv().expect("a's event");
    assert_eq!(item.server.as_str(), "a");
    while events.try_recv().is_some() {}
    fleet_events_on(&a, 1);
    fleet_events_on(&c, 1);
    spin_fleet(&mut driver);
    let item = events.try_recv().expect("an event");
    assert_eq!(
        item.server.as_str(),
        "c",
        "the shard after b's, in rotation"
    );
}

#[test]
fn a_name_added_again_goes_back_to_the_shard_where_its_removed_servers_items_wait() {
    // "a"'s events wait unread on the first shard when it is removed; that shard then holds
    // more servers than the second, yet "a" added again goes there, so its new items
    // cannot pass its old ones.
    let (fleet, _events, mut driver, [a, _b]) = two_shard_fleet();
    fleet_events_on(&a, 3);
    spin_fleet(&mut driver);
    assert!(fleet.remove("a"));
    spin_fleet(&mut driver);
    assert!(fleet.shards.shards[0].lock().fleet.holds_removed("a"));
    let addr: SocketAddr = "127.0.0.1:5038".parse().unwrap();
    for name in ["c", "d"] {
        fleet.add(name, seeded(), addr).unwrap();
    }
    let on = |name: &str| -> Vec<usize> {
        (0..2)
            .filter(|&i| fleet.shards.shards[i].lock().fleet.status(name).is_some())
            .collect()
    };
    assert_eq!((on("c"), on("d")), (vec![0], vec![0]), "the emptier shard");
    fleet.add("a", seeded(), addr).unwrap();
    assert_eq!(on("a"), [0], "back on its old shard, the fuller one");
}

/// A fleet's stats are its shards' added up.
fn assert_stats_add_up(fleet: &crate::fleet::FleetHandle) {
    let per: Vec<_> = fleet
        .shards
        .shards
        .iter()
        .map(|s| s.lock().fleet.stats())
        .collect();
    let all = fleet.stats();
    let sum = |f: fn(&ami_proto::fleet::FleetStats) -> u64| per.iter().map(f).sum::<u64>();
    let sum_usize =
        |f: fn(&ami_proto::fleet::FleetStats) -> usize| per.iter().map(f).sum::<usize>();
    assert_eq!(all.servers.len(), sum_usize(|s| s.servers.len()));
    assert_eq!(all.added, sum(|s| s.added));
    assert_eq!(all.removed, sum(|s| s.removed));
    assert_eq!(all.routed, sum(|s| s.routed));
    assert_eq!(all.connects_started, sum(|s| s.connects_started));
    assert_eq!(all.status_changes, sum(|s| s.status_changes));
    assert_eq!(
        all.events_lost_on_removal,
        sum(|s| s.events_lost_on_removal)
    );
    assert_eq!(all.removal_gaps_dropped, sum(|s| s.removal_gaps_dropped));
    assert_eq!(
        all.steps_with_deferred_connects,
        sum(|s| s.steps_with_deferred_connects)
    );
    assert_eq!(
        all.most_connects_in_a_step,
        sum_usize(|s| s.most_connects_in_a_step)
    );
    assert_eq!(all.timer_entries, sum_usize(|s| s.timer_entries));
    for (i, n) in all.by_status.iter().enumerate() {
        assert_eq!(*n, per.iter().map(|s| s.by_status[i]).sum::<usize>());
    }
}

#[test]
fn a_driver_polled_again_from_another_task_is_woken_there_by_a_callers_ring() {
    // The driver's future moved (a `select!`, a join of futures): a caller's new action
    // must wake the task that polled it last.
    let mut rig = Rig::new(usize::MAX, 100);
    rig.log_in();
    let (first, first_wakes) = counting_waker();
    let (second, second_wakes) = counting_waker();
    assert!(Pin::new(&mut rig.driver)
        .poll(&mut Context::from_waker(&first))
        .is_pending());
    assert!(Pin::new(&mut rig.driver)
        .poll(&mut Context::from_waker(&second))
        .is_pending());
    let handle = rig.handle.clone();
    let mut ping = Box::pin(handle.send(ami_proto::Action::new("Ping")));
    assert!(ping
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending());
    assert_eq!(second_wakes(), 1, "the task that polled last is woken");
    assert_eq!(first_wakes(), 0);
}

#[test]
fn a_due_action_withdrawn_from_a_waiting_copy_is_not_written_when_a_longer_one_follows() {
    // The copy held the due Ping; the core withdrew it and now lends a longer action: the
    // copy is taken afresh, not kept as if its bytes still began what the core lends.
    use ami_proto::{Action, SendOptions};
    use std::time::Duration;
    let mut rig = Rig::new(usize::MAX, 64);
    rig.log_in();
    rig.wire.lock().unwrap().budget = 0;
    let before = rig.written().len();
    let handle = rig.handle.clone();
    let mut cx = Context::from_waker(Waker::noop());
    let mut ping = Box::pin(handle.send_with(
        Action::new("Ping"),
        SendOptions::timeout(Duration::from_millis(20)),
    ));
    assert!(ping.as_mut().poll(&mut cx).is_pending());
    let id = last_id(&rig);
    rig.spin();
    AHEAD.with(|a| a.set(Duration::from_secs(1)));
    let long = Action::new("UserEvent").field("UserEvent", "L".repeat(200));
    let mut long = Box::pin(handle.send(long));
    assert!(long.as_mut().poll(&mut cx).is_pending());
    rig.wire.lock().unwrap().budget = usize::MAX;
    rig.spin();
    AHEAD.with(|a| a.set(Duration::ZERO));
    let written = rig.written()[before..].to_string();
    assert!(
        !written.contains(&id),
        "written after its deadline: {written}"
    );
    assert!(
        written.starts_with("Action: UserEvent\r\n") && written.contains(&"L".repeat(200)),
        "{written:?}"
    );
}

/// `n` events on `wire`, for the fleet's driver to read.
fn fleet_events_on(wire: &Mutex<Wire>, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        text += &format!("Event: UserEvent\r\nUserEvent: T\r\nSeq: {i}\r\n\r\n");
    }
    wire.lock().unwrap().incoming.extend(text.bytes());
    Wire::wake(wire);
}

#[test]
fn a_sharded_fleets_stream_takes_from_every_shard_in_turn() {
    let (fleet, mut events, mut driver, [a, b]) = two_shard_fleet();
    while events.try_recv().is_some() {}
    // Only the second shard's server has events: the stream finds them there.
    fleet_events_on(&b, 3);
    spin_fleet(&mut driver);
    let first = events.try_recv().expect("b's events reach the stream");
    assert_eq!(first.server.as_str(), "b");
    while events.try_recv().is_some() {}
    // Both have more than a batch: the shards take turns, batch by batch.
    fleet_events_on(&a, 2000);
    fleet_events_on(&b, 2000);
    spin_fleet(&mut driver);
    let mut turns: Vec<String> = Vec::new();
    for item in std::iter::from_fn(|| events.try_recv()).take(3000) {
        if turns.last().map(String::as_str) != Some(item.server.as_str()) {
            turns.push(item.server.as_str().to_string());
        }
    }
    assert!(turns.len() >= 3, "{turns:?}");
    let shown = format!("{fleet:?} {events:?}");
    assert!(
        shown.contains("FleetHandle")
            && shown.contains("servers: 2")
            && shown.contains("FleetEvents"),
        "{shown}"
    );
}

#[test]
fn a_fleet_stream_gives_its_thread_back_before_each_new_batch() {
    // A consumer that always finds items would never let the drivers on its thread read:
    // the stream yields once (waking itself) before it takes a batch.
    let (wire, _fleet, mut events, mut driver) = ready_fleet(seeded());
    while events.try_recv().is_some() {}
    fleet_events_on(&wire, 3);
    spin_fleet(&mut driver);
    let (waker, wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(events.poll_recv(&mut cx).is_pending(), "a yield first");
    assert_eq!(wakes(), 1, "and a wake to come back at once");
    for _ in 0..3 {
        assert!(matches!(events.poll_recv(&mut cx), Poll::Ready(Some(_))));
    }
}

#[test]
fn a_removed_fleet_server_leaves_no_endpoint_or_read_counters_behind() {
    // Servers added and removed again and again must not grow the shard's maps.
    let (_wire, fleet, _events, mut driver) = ready_fleet(seeded());
    assert_eq!(fleet.read_counters().len(), 1);
    assert!(fleet.remove("pbx"));
    spin_fleet(&mut driver);
    let shard = fleet.shards.shards[0].lock();
    assert!(shard.endpoints.is_empty());
    assert!(shard.reads.is_empty());
}

#[test]
fn a_fleet_stream_waiting_for_events_is_woken_when_some_arrive() {
    let (wire, _fleet, mut events, mut driver) = ready_fleet(seeded());
    while events.try_recv().is_some() {}
    let (waker, wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    // The first poll yields (waking itself), the next one waits.
    assert!(events.poll_recv(&mut cx).is_pending());
    assert!(events.poll_recv(&mut cx).is_pending());
    let before = wakes();
    fleet_events_on(&wire, 1);
    spin_fleet(&mut driver);
    assert!(wakes() > before, "the waiting reader is woken");
    assert!(matches!(events.poll_recv(&mut cx), Poll::Ready(Some(_))));
}
