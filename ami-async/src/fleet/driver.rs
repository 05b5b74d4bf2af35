//! A shard's driver: one future, on any [`Runtime`], that steps the shard's core at its
//! deadlines, opens the transports it asks for, and reads and writes every open one. Every
//! `if` here is about I/O; the core decides the rest.
//!
//! One future per shard, not a task per server: the [`Runtime`] trait has no spawn, and one
//! future keeps the reads fair (the adapter spawns one per shard). Each transport gets a waker of its own that puts the server on a
//! ready list and wakes the driver, so a wake-up visits only the servers that have
//! something to do (not all of them), in the order they became ready, one read each per
//! round.

use super::reads::ReadTally;
use super::shared::{ConnState, Inner, Io, Open};
use super::Endpoint;
use crate::runtime::{Runtime, Timer, Transport};
use crate::shared::lock;
use crate::target::{self, Link};
use ami_proto::fleet::ServerId;
use ami_proto::Input;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

/// Read size per call: one read moves up to this much into a server's decoder; it is also
/// a server's turn in a round, so no server holds the driver for long.
const READ_CHUNK: usize = 64 << 10;

/// A server whose client does not want reads (`Fleet::wants_read`) waits for the stream's
/// reader before its next read for at most this long between the reader's takes; a hold
/// that runs out without a take means the reader stopped, and reads go on unheld until it
/// takes again (the session driver's rule).
use crate::driver::{relend, HoldSpan, Stall, HOLD_READ};

/// Rounds in one poll of the driver. After that many rounds that all found work, the driver
/// asks to be polled again and returns, so it never starves the other tasks of its
/// executor (the event consumer among them).
const ROUNDS_PER_POLL: u32 = 64;

/// Bytes read in one poll of the driver, after which it asks to be polled again and returns
/// (mid-round if need be: the servers not yet visited go first in the next poll). Rounds
/// alone let one flooding server hold the executor's thread for 64 full reads (4 MiB,
/// 20-25 ms of decoding), which every other task on that thread waited out. Two reads
/// (128 KiB, under half a millisecond) keep what one poll decoded in cache until the
/// stream's reader takes it: with 256 KiB, ten flooding servers read 14 % slower than one
/// on async-std (`fleet_loopback`), with 128 KiB 3-9 %; a yield costs a few microseconds.
const READ_BYTES_PER_POLL: usize = 128 << 10;

/// The future that runs the I/O of a fleet's shard (or of several shards, see
/// [`join`](Self::join)). It completes once the fleet is closed (by
/// [`FleetHandle::close`](super::FleetHandle::close) or when every handle and the stream
/// are dropped) and every transport is gone. Dropping it before that (its task aborted, its
/// runtime shut down) closes its shards' servers as dropping a session's driver closes its
/// session: each pending action fails once, `ActionError::NotSent` if it was never written
/// whole (safe to send again), `ActionError::Unknown` if it was (it may have run); each
/// server is `Closed`; the stream ends once drained, after each connected server's
/// `Disconnected`.
#[must_use = "no server is connected until the driver runs"]
pub struct FleetDriver {
    shards: Vec<ShardIo>,
}

/// One shard's I/O and state.
struct ShardIo {
    /// The I/O state, on the runtime it was made for; `None` once finished.
    pump: Option<Box<dyn Pumping>>,
    inner: Arc<Inner<Endpoint>>,
}

/// A [`Pump`] with its runtime erased (the driver is not generic over it).
trait Pumping: Send {
    /// Moves what can be moved now; ready once the fleet is over.
    fn pump(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

impl FleetDriver {
    pub(crate) fn new<R: Runtime>(inner: Arc<Inner<Endpoint>>) -> FleetDriver {
        let pump = Pump::<R> {
            inner: inner.clone(),
            conns: HashMap::new(),
            ready: Arc::new(ReadyList::default()),
            due: Vec::new(),
            buf: vec![0u8; READ_CHUNK],
            read_this_poll: 0,
            timer: R::timer(),
            armed: false,
            armed_version: None,
            timer_after: None,
            held: Vec::new(),
            lending: Vec::new(),
            hold_timer: R::timer(),
            hold_at: None,
            hold_until: None,
            stall: Stall::default(),
        };
        FleetDriver {
            shards: vec![ShardIo {
                pump: Some(Box::new(pump)),
                inner,
            }],
        }
    }

    /// One future that drives every shard of `drivers` in turn, for an executor that runs
    /// one future (the shards then share its thread).
    pub fn join(drivers: impl IntoIterator<Item = FleetDriver>) -> FleetDriver {
        let mut shards = Vec::new();
        for mut d in drivers {
            shards.append(&mut d.shards);
        }
        FleetDriver { shards }
    }
}

impl Future for FleetDriver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut over = true;
        for shard in &mut self.shards {
            let done = match shard.pump.as_mut() {
                Some(pump) => pump.pump(cx).is_ready(),
                None => true,
            };
            // Drop the transports, then tell the callers.
            if done && shard.pump.take().is_some() {
                ended(&shard.inner);
            }
            over &= done;
        }
        if over {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for ShardIo {
    fn drop(&mut self) {
        // Drop the I/O first, then tell the callers (again, harmlessly, when it finished).
        self.pump = None;
        ended(&self.inner);
    }
}

impl std::fmt::Debug for FleetDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetDriver")
            .field("shards", &self.shards.len())
            .field(
                "finished",
                &self.shards.iter().filter(|s| s.pump.is_none()).count(),
            )
            .finish()
    }
}

/// Nothing will move any more: the shard's servers are closed (their pending actions fail,
/// `NotSent` or `Unknown` by what was written), and every waiter and watcher is woken to
/// find out.
fn ended(inner: &Inner<Endpoint>) {
    let mut io = Io::default();
    {
        let mut shared = inner.lock();
        shared.close_for_driver((inner.now)(), &mut io);
        shared.driver_ended(&mut io);
    }
    io.wake_all();
}

/// Servers whose transport woke, in the order they woke, and the driver's waker.
#[derive(Default)]
struct ReadyList {
    state: Mutex<ReadyState>,
}

#[derive(Default)]
struct ReadyState {
    servers: Vec<ServerId>,
    driver: Option<Waker>,
}

/// One transport's waker: puts its server on the ready list (once until visited) and wakes
/// the driver.
struct ConnWake {
    server: ServerId,
    queued: AtomicBool,
    list: Arc<ReadyList>,
}

impl Wake for ConnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let driver = {
            let mut state = lock(&self.list.state);
            state.servers.push(self.server);
            state.driver.take()
        };
        if let Some(w) = driver {
            w.wake();
        }
    }
}

/// One server's transport, opening or open.
struct ConnIo<R: Runtime> {
    epoch: u64,
    wake: Arc<ConnWake>,
    waker: Waker,
    opening: Option<target::Opening<R::Tcp>>,
    link: Option<Link<R::Tcp>>,
    /// A copy of the core's transmit bytes being written, lent by the core
    /// (`Fleet::lend_transmit`: it withdraws none of them, and counts an action none of
    /// whose bytes it lent as never sent); the core is told what was written after each
    /// write, so its byte counters count bytes the transport took. The unwritten rest is
    /// given back (`Fleet::unlend_transmit`) at the next visit, before a timer turn, before
    /// received bytes are handed in (they may end the session), and before a failure is
    /// reported.
    out: Vec<u8>,
    out_pos: usize,
    /// Listed in [`Pump::lending`].
    listed: bool,
    /// The core may have bytes for this transport.
    fetch: bool,
    /// Held: its next read waits for the stream's reader (or `HOLD_READ`).
    held: bool,
    /// Its run of held reads, at most `MAX_HOLD` in a row.
    span: HoldSpan,
    /// The server's read counters.
    tally: Arc<ReadTally>,
}

/// The fleet's I/O state.
struct Pump<R: Runtime> {
    inner: Arc<Inner<Endpoint>>,
    conns: HashMap<ServerId, ConnIo<R>>,
    ready: Arc<ReadyList>,
    /// Servers to visit this round.
    due: Vec<ServerId>,
    /// One read buffer for every transport: the driver reads one at a time.
    buf: Vec<u8>,
    /// Bytes read since this poll began (see [`READ_BYTES_PER_POLL`]).
    read_this_poll: usize,
    timer: R::Timer,
    armed: bool,
    /// The shared state's timer version the timer was armed for.
    armed_version: Option<u64>,
    /// The timer fired: its turn comes once this many servers at the head of `due` (the
    /// round's when it fired) have been visited, after their reads, so that a round the read
    /// budget cut does not fire deadlines before the reads of the servers it put off (they
    /// go first in the next poll: at most a poll per two of them).
    timer_after: Option<usize>,
    /// Servers whose next read waits for the stream's reader, and the timer that bounds it
    /// (`hold_timer`, armed at `hold_at`: the earliest of `hold_until` and the held servers'
    /// run ends, `HoldSpan::ends_at`).
    held: Vec<ServerId>,
    /// Servers that took a copy of lent bytes since the last timer turn (each at most
    /// once): the timer turn gives back what they hold unwritten, so that the deadlines it
    /// fires withdraw those bytes instead of letting them go out late.
    lending: Vec<ServerId>,
    hold_timer: R::Timer,
    /// When the hold timer fires; `None`: not armed.
    hold_at: Option<Instant>,
    /// `HOLD_READ` after the reader's last take (or the first hold since): a hold timer
    /// that fires then, without a take, means the reader stopped.
    hold_until: Option<Instant>,
    /// Whether the reader stopped taking (`Shared::reader_takes`, seen each round).
    stall: Stall,
}

impl<R: Runtime> Pumping for Pump<R> {
    fn pump(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.read_this_poll = 0;
        'rounds: for _ in 0..ROUNDS_PER_POLL {
            // Wakers first, then the state they guard: no wake-up falls in between.
            lock(&self.ready.state).driver = Some(cx.waker().clone());
            let (deadline, version, opens, takes) = {
                let mut shared = self.inner.lock();
                if shared.closed && shared.conns.is_empty() {
                    drop(shared);
                    // Closed at once (`close`, or the last user gone): the transports still
                    // held are shut down, as a removed server's is, so that each server reads
                    // the end of the stream (TLS: close_notify), not a connection cut off.
                    for (_, conn) in self.conns.drain() {
                        target::shut_down(conn.link);
                    }
                    return Poll::Ready(());
                }
                shared.timer_waker = Some(cx.waker().clone());
                (
                    shared.deadline,
                    shared.timer_version,
                    std::mem::take(&mut shared.opens),
                    shared.reader_takes,
                )
            };
            for open in opens {
                self.open(open);
            }
            let mut worked = self.hold_turn(cx, takes);
            if self.armed_version != Some(version) {
                self.armed_version = Some(version);
                self.armed = deadline.is_some();
                if let Some(d) = deadline {
                    self.timer.set_at(d);
                }
            }
            let fired =
                self.timer_after.is_none() && self.armed && self.timer.poll_fired(cx).is_ready();
            if fired {
                // Re-armed at the next turn even if the deadline did not move.
                self.armed = false;
                self.armed_version = None;
                worked = true;
            }
            self.due.append(&mut lock(&self.ready.state).servers);
            if fired {
                self.timer_after = Some(self.due.len());
            }
            if self.due.is_empty() && !worked {
                return Poll::Pending;
            }
            let mut due = std::mem::take(&mut self.due).into_iter();
            let mut cut = false;
            while let Some(server) = due.next() {
                if !self.visit(server) {
                    if let Some(conn) = self.conns.remove(&server) {
                        target::shut_down(conn.link);
                    }
                }
                if let Some(left) = self.timer_after.as_mut() {
                    *left = left.saturating_sub(1);
                }
                if self.read_this_poll >= READ_BYTES_PER_POLL {
                    // The rest of the round goes first next time, before newer wake-ups.
                    self.due.extend(due);
                    cut = true;
                    break;
                }
            }
            if self.timer_after == Some(0) {
                // After the reads of the servers due when it fired, as the session driver
                // does: the timer fires late (a VM resumed, a busy executor) together with
                // sockets that hold answers from before the deadlines; those answers count.
                // A round cut by the read budget puts the rest off to the next poll, where
                // they go first, so a flood cannot keep the deadlines from firing.
                self.timer_after = None;
                // Re-armed at the next turn, from what the turn leaves.
                self.armed = false;
                self.armed_version = None;
                self.timer_turn();
            }
            if cut {
                break 'rounds;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<R: Runtime> Pump<R> {
    /// Held servers go back in line when the reader took items (a server still behind is
    /// held again, for a new `HOLD_READ`), or once the hold timer fires: `HOLD_READ` after
    /// the last take without one, the reader stopped, and every held server reads on; at the
    /// end of a server's run of held reads (`MAX_HOLD` in a row, however often the reader
    /// takes), that server reads on, its run spent, and the reader is not stalled (the
    /// session driver's rule, `decide_hold`). True if a server went back in line or the
    /// timer was armed again (the next round polls it).
    fn hold_turn(&mut self, cx: &mut Context<'_>, takes: u64) -> bool {
        let took = self.stall.took(takes);
        let fired = self.hold_at.is_some() && self.hold_timer.poll_fired(cx).is_ready();
        if fired {
            self.hold_at = None;
        }
        if took {
            self.hold_at = None;
            self.hold_until = None;
            return self.release(|_| true);
        }
        if !fired {
            return false;
        }
        let now = R::now();
        if self.hold_until.is_none_or(|until| now >= until) {
            // Without a take, the reader stopped: reads go on (the queues drop their
            // oldest, counted as gaps), so that no socket backs up into its server and no
            // response waits behind events nobody is reading.
            self.stall.ran_out(false);
            self.hold_until = None;
            self.release(|_| true);
            return true;
        }
        // A run of held reads ended before `HOLD_READ` since the last take: its server reads
        // on (`HoldSpan::may_hold` finds the run spent), the others wait on.
        self.release(|conn| conn.span.ends_at().is_none_or(|end| now >= end));
        if self.held.is_empty() {
            // Nobody waits: the next hold starts a new `HOLD_READ`.
            self.hold_until = None;
            return true;
        }
        let next = self
            .held
            .iter()
            .filter_map(|server| self.conns.get(server)?.span.ends_at())
            .chain(self.hold_until)
            .min();
        if let Some(at) = next {
            self.hold_at = Some(at);
            self.hold_timer.set_at(at);
        }
        true
    }

    /// Puts the held servers that `done` picks back in line (each is visited this round);
    /// true if there were any.
    fn release(&mut self, done: impl Fn(&ConnIo<R>) -> bool) -> bool {
        let Pump {
            held, conns, due, ..
        } = self;
        let mut released = false;
        held.retain(|server| match conns.get_mut(server) {
            Some(conn) if done(conn) => {
                conn.held = false;
                due.push(*server);
                released = true;
                false
            }
            Some(_) => true,
            None => false,
        });
        released
    }

    /// A server was just held, its run of held reads ending at `ends_at`: the hold timer is
    /// armed at the earliest of `HOLD_READ` after the reader's last take (or this first
    /// hold since) and the end of each held server's run (`MAX_HOLD` in a row).
    ///
    /// On the hold fields alone (not `&mut self`), so that a visit holding its connection
    /// can call it.
    fn arm_hold(
        (hold_until, hold_at, hold_timer): (
            &mut Option<Instant>,
            &mut Option<Instant>,
            &mut R::Timer,
        ),
        ends_at: Option<Instant>,
        now: Instant,
    ) {
        let until = *hold_until.get_or_insert(now + HOLD_READ);
        let at = ends_at.map_or(until, |end| end.min(until));
        if hold_at.is_none_or(|armed| at < armed) {
            *hold_at = Some(at);
            hold_timer.set_at(at);
        }
    }

    /// The fleet's deadlines fire. The copies of lent bytes still unwritten (their sockets
    /// are full) are given back first, so that an action whose deadline passed while it
    /// waited there is withdrawn and times out unsent; their servers are visited again to
    /// take fresh copies.
    fn timer_turn(&mut self) {
        let Pump {
            inner,
            conns,
            lending,
            due,
            ..
        } = self;
        inner.call(|s| {
            for server in lending.drain(..) {
                let Some(conn) = conns.get_mut(&server) else {
                    continue;
                };
                conn.listed = false;
                if conn.out_pos == conn.out.len() {
                    continue;
                }
                if s.is_current(server, conn.epoch) {
                    s.fleet.unlend_transmit(server);
                }
                conn.out.clear();
                conn.out_pos = 0;
                conn.fetch = true;
                due.push(server);
            }
            s.fleet.handle_timeout(R::now());
        });
    }

    /// A transport the core asked for: starts opening it (replacing an older one).
    fn open(&mut self, open: Open<Endpoint>) {
        let Open {
            server,
            endpoint,
            epoch,
        } = open;
        let wake = Arc::new(ConnWake {
            server,
            queued: AtomicBool::new(true),
            list: self.ready.clone(),
        });
        let tally = self.inner.lock().read_tally(server);
        let opening = target::Opening::start::<R>(
            &endpoint.target,
            #[cfg(feature = "tls")]
            endpoint.tls,
        );
        let replaced = self.conns.insert(
            server,
            ConnIo {
                epoch,
                waker: Waker::from(wake.clone()),
                wake,
                opening: Some(opening),
                link: None,
                out: Vec::new(),
                out_pos: 0,
                listed: false,
                fetch: true,
                held: false,
                span: HoldSpan::default(),
                tally,
            },
        );
        if let Some(old) = replaced {
            target::shut_down(old.link);
        }
        self.due.push(server);
    }

    /// One turn for one server: finish opening, write what the core has, read once.
    /// False once the transport is gone (closed by the core, replaced, or failed).
    fn visit(&mut self, server: ServerId) -> bool {
        let Some(conn) = self.conns.get_mut(&server) else {
            return true;
        };
        conn.wake.queued.store(false, Ordering::Release);
        conn.tally.visit();
        let inner = &*self.inner;
        let epoch = conn.epoch;
        let waker = conn.waker.clone();
        let mut cx = Context::from_waker(&waker);
        while let Some(opening) = conn.opening.as_mut() {
            let opened = match opening.poll_open(&mut cx) {
                Poll::Pending => {
                    // The core's connect timer may give up first: then it closes this one.
                    return !matches!(
                        inner.lock().conn_state(server, epoch, &waker),
                        Some(ConnState::Gone)
                    );
                }
                Poll::Ready(target::Opened::Handshaking) => {
                    if !report::<R>(inner, server, epoch, Input::Handshaking) {
                        return false;
                    }
                    continue;
                }
                Poll::Ready(target::Opened::Done(opened)) => opened,
            };
            conn.opening = None;
            let input = match &opened {
                Ok(_) => Input::Connected,
                Err(e) => {
                    // The one record that carries the OS error: it says which server. The
                    // core says the failure itself (rate-limited, at info).
                    let name = inner.lock().fleet.name(server).cloned();
                    match name {
                        Some(name) => log::debug!("AMI {name}: connect failed: {e}"),
                        None => log::debug!("AMI fleet: connect failed: {e}"),
                    }
                    Input::ConnectFailed(target::connect_failure(e))
                }
            };
            if !report::<R>(inner, server, epoch, input) {
                return false;
            }
            match opened {
                Ok(link) => conn.link = Some(link),
                Err(_) => return false,
            }
        }
        let Some(link) = conn.link.as_mut() else {
            return false;
        };
        // The read comes first, before anything fires the server's deadlines (the lends
        // below do, so that nothing due is written): a visit that comes late (a VM resumed,
        // a busy executor) finds answers from before those deadlines in the socket, and
        // they count, as in the session driver.
        let mut read = false;
        if !conn.held {
            let now = R::now();
            let hold = if self.stall.is_stalled() {
                conn.span.read();
                false
            } else {
                let behind = !inner.lock().hold_read(server);
                conn.span.may_hold(behind, now)
            };
            if hold {
                // The reader is behind on this server but taking: wait for it (bounded:
                // `HOLD_READ` between its takes, `MAX_HOLD` in a row).
                conn.held = true;
                conn.tally.hold();
                let ends_at = conn.span.ends_at();
                self.held.push(server);
                let hold = (
                    &mut self.hold_until,
                    &mut self.hold_at,
                    &mut self.hold_timer,
                );
                Self::arm_hold(hold, ends_at, now);
            } else {
                match link.poll_read(&mut cx, &mut self.buf) {
                    Poll::Ready(Ok(0)) => {
                        lost::<R>(inner, server, epoch, Input::Eof);
                        return false;
                    }
                    Poll::Ready(Ok(n)) => {
                        read = true;
                        self.read_this_poll += n;
                        conn.tally.read(n);
                        let input = Input::Received(&self.buf[..n]);
                        let current = if conn.out_pos < conn.out.len() {
                            // The input may end the session (an event queue overflowing
                            // under `CloseSession`, a protocol error): the copy's
                            // unwritten bytes go back to the core first, as at a visit,
                            // so that the actions whose last byte they hold fail
                            // `NotSent`, not `Unknown`.
                            lend::<R>(
                                inner,
                                server,
                                epoch,
                                Some(input),
                                (&mut conn.out, &mut conn.out_pos, &mut conn.listed),
                                &mut self.lending,
                            )
                        } else {
                            report::<R>(inner, server, epoch, input)
                        };
                        if !current {
                            return false;
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        lost::<R>(inner, server, epoch, Input::TransportError(e.kind()));
                        return false;
                    }
                    Poll::Pending => conn.tally.empty(),
                }
            }
        }
        // Left unwritten at the last visit: given back, so that what came due or
        // was cancelled since is withdrawn before the write below, and lent again.
        if conn.out_pos < conn.out.len()
            && !lend::<R>(
                inner,
                server,
                epoch,
                None,
                (&mut conn.out, &mut conn.out_pos, &mut conn.listed),
                &mut self.lending,
            )
        {
            conn.out.clear();
            conn.out_pos = 0;
            return false;
        }
        loop {
            match inner.lock().conn_state(server, epoch, &waker) {
                Some(ConnState::Gone) => return false,
                Some(ConnState::Kicked) => conn.fetch = true,
                None => {}
            }
            if conn.fetch && conn.out_pos == conn.out.len() {
                conn.fetch = false;
                if !lend::<R>(
                    inner,
                    server,
                    epoch,
                    None,
                    (&mut conn.out, &mut conn.out_pos, &mut conn.listed),
                    &mut self.lending,
                ) {
                    return false;
                }
            }
            if conn.out_pos < conn.out.len() {
                match link.poll_write(&mut cx, &conn.out[conn.out_pos..]) {
                    Poll::Ready(Ok(0)) => {
                        let input = Input::TransportError(io::ErrorKind::WriteZero);
                        lost::<R>(inner, server, epoch, input);
                        return false;
                    }
                    Poll::Ready(Ok(n)) => {
                        conn.out_pos += n;
                        conn.fetch = conn.out_pos == conn.out.len();
                        // The core counts bytes the transport took, as they are taken.
                        inner.call(|s| {
                            if s.is_current(server, epoch) {
                                s.fleet.advance_transmit(server, n);
                            }
                        });
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        lost::<R>(inner, server, epoch, Input::TransportError(e.kind()));
                        return false;
                    }
                    Poll::Pending => {}
                }
            }
            if let Poll::Ready(Err(e)) = link.poll_flush(&mut cx) {
                lost::<R>(inner, server, epoch, Input::TransportError(e.kind()));
                return false;
            }
            if read {
                // One read per round: come back after the other ready servers.
                conn.wake.wake_by_ref();
            }
            return true;
        }
    }
}

/// Gives back what the connection's copy (`out[out_pos..]`) holds unwritten (nothing, once
/// it is all written), hands the core `input` if any, fires `server`'s due deadlines (nothing
/// due is lent, so nothing due is written), and lends what is to be written now into the
/// copy ([`relend`]: kept while nothing was withdrawn, so a read while the socket is full
/// copies only new bytes). A copy left holding bytes is listed in `lending` for the timer
/// turn. False if the connection is no longer the server's current one (the copy is then
/// untouched, and `input` dropped).
///
/// Nothing is being written meanwhile (the driver reports each write the transport took
/// as soon as it returns), so the bytes given back never left: an `input` that ends the session fails the
/// actions whose last byte they hold `NotSent`, as a lost transport does ([`lost`]). The
/// session's next connection starts with nothing to lend, so the copy is then emptied.
fn lend<R: Runtime>(
    inner: &Inner<Endpoint>,
    server: ServerId,
    epoch: u64,
    input: Option<Input<'_>>,
    (out, out_pos, listed): (&mut Vec<u8>, &mut usize, &mut bool),
    lending: &mut Vec<ServerId>,
) -> bool {
    let current = inner.call(|s| {
        if !s.is_current(server, epoch) {
            return false;
        }
        let withdrawn = s.fleet.actions_withdrawn(server);
        s.fleet.unlend_transmit(server);
        if let Some(input) = input {
            s.fleet.handle_input(R::now(), server, input);
        }
        s.fleet.handle_server_timeout(R::now(), server);
        let kept = s.fleet.actions_withdrawn(server) == withdrawn;
        relend(out, out_pos, s.fleet.lend_transmit(server), kept);
        true
    });
    if current && *out_pos < out.len() && !*listed {
        *listed = true;
        lending.push(server);
    }
    current
}

/// Reports a transport that failed or ended, if it is still the server's current one: the
/// lent bytes it did not write are given back first (they never left, so the actions
/// whose last byte they held fail `NotSent`, not `Unknown`).
fn lost<R: Runtime>(inner: &Inner<Endpoint>, server: ServerId, epoch: u64, input: Input<'_>) {
    inner.call(|s| {
        if s.is_current(server, epoch) {
            s.fleet.unlend_transmit(server);
            s.fleet.handle_input(R::now(), server, input);
        }
    });
}

/// Hands what happened on a transport to the core if that transport is still the server's
/// current one; false if it is not (it must stop without touching the core).
fn report<R: Runtime>(
    inner: &Inner<Endpoint>,
    server: ServerId,
    epoch: u64,
    input: Input<'_>,
) -> bool {
    inner.call(|s| {
        if !s.is_current(server, epoch) {
            return false;
        }
        s.fleet.handle_input(R::now(), server, input);
        true
    })
}
