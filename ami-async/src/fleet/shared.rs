//! One shard's shared state: a core [`Fleet`] (the shard's servers) behind one
//! `std::sync::Mutex`, plus the waiters and wakers around it. std only; the runtime's clock
//! comes in as a function. The lock is never held across an await and no user code runs
//! under it.

use super::reads::ReadTally;
use super::watch::StatusLog;
use crate::shared::{lock, Waiter};
use ami_proto::fleet::{Fleet, FleetOutput, ServerId, ServerName, ServerStatus};
use ami_proto::ActionId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

/// One open (or opening) transport: its epoch tells the driver that a connection was
/// replaced (closed, then reconnected), so the old one stops without touching the core.
pub(crate) struct Conn {
    pub(crate) epoch: u64,
    /// Bytes wait in the core's transmit buffer.
    pub(crate) kick: bool,
    pub(crate) waker: Option<Waker>,
}

/// A transport the driver must open: for `server`, to `endpoint`, as connection `epoch`.
pub(crate) struct Open<E> {
    pub(crate) server: ServerId,
    pub(crate) endpoint: E,
    pub(crate) epoch: u64,
}

/// Wakers a drain named, to wake once the lock is released.
#[derive(Default)]
pub(crate) struct Io {
    pub(crate) wake: Vec<Waker>,
}

impl Io {
    /// Wakes everyone the drain named (call without the lock).
    pub(crate) fn wake_all(&mut self) {
        for w in self.wake.drain(..) {
            w.wake();
        }
    }
}

/// Where a connection task stands.
pub(crate) enum ConnState {
    /// Replaced or closed: stop, drop the socket, touch nothing.
    Gone,
    /// The core has bytes for it.
    Kicked,
}

pub(crate) struct Shared<E> {
    pub(crate) fleet: Fleet,
    /// Where each server is reached (by name: a removed server's ID is never reused).
    pub(crate) endpoints: HashMap<ServerName, E>,
    pub(crate) conns: HashMap<ServerId, Conn>,
    next_epoch: u64,
    /// Transports for the driver to open.
    pub(crate) opens: Vec<Open<E>>,
    pub(crate) waiters: HashMap<(ServerName, ActionId), Waiter>,
    pub(crate) event_waker: Option<Waker>,
    /// The fleet's next deadline, and a counter the timer task watches for changes.
    pub(crate) deadline: Option<Instant>,
    pub(crate) timer_version: u64,
    pub(crate) timer_waker: Option<Waker>,
    /// Servers whose next read waits for the stream's reader (`Fleet::wants_read`): a take
    /// that lets one of them read again wakes the driver.
    held: Vec<ServerId>,
    /// Batches the reader has taken: the driver compares it with what it saw last to tell a
    /// reader that is behind but taking (hold reads for it) from one that stopped (read on).
    pub(crate) reader_takes: u64,
    /// The fleet-wide status log (every shard's changes, in order).
    log: Arc<StatusLog>,
    /// Closed by the application, or every handle dropped: no more adds, and the stream
    /// ends once drained.
    pub(crate) closed: bool,
    /// The shard's driver ended: nothing will move any more.
    pub(crate) driver_done: bool,
    /// The driver's read counters of each server (kept across its connections).
    pub(crate) reads: HashMap<ServerName, Arc<ReadTally>>,
}

impl<E: Clone> Shared<E> {
    pub(crate) fn new(fleet: Fleet, log: Arc<StatusLog>) -> Shared<E> {
        Shared {
            fleet,
            endpoints: HashMap::new(),
            conns: HashMap::new(),
            next_epoch: 0,
            opens: Vec::new(),
            waiters: HashMap::new(),
            event_waker: None,
            deadline: None,
            timer_version: 0,
            timer_waker: None,
            held: Vec::new(),
            reader_takes: 0,
            log,
            closed: false,
            driver_done: false,
            reads: HashMap::new(),
        }
    }

    /// Hands every core output to whom it is for: transports to open or drop, outcomes to
    /// waiters, status changes to the log, the next deadline to the timer task, bytes to
    /// write to their connection task, events to the consumer. Call after every core call.
    pub(crate) fn drain(&mut self, io: &mut Io) {
        loop {
            match self.fleet.poll_output() {
                FleetOutput::Connect(server) => {
                    let Some(endpoint) = self
                        .fleet
                        .name(server)
                        .and_then(|n| self.endpoints.get(n))
                        .cloned()
                    else {
                        continue;
                    };
                    self.next_epoch += 1;
                    let epoch = self.next_epoch;
                    if let Some(old) = self.conns.insert(
                        server,
                        Conn {
                            epoch,
                            kick: false,
                            waker: None,
                        },
                    ) {
                        io.wake.extend(old.waker);
                    }
                    // The driver opens transports (it alone polls I/O).
                    self.opens.push(Open {
                        server,
                        endpoint,
                        epoch,
                    });
                    io.wake.extend(self.timer_waker.take());
                }
                FleetOutput::Close(server) => {
                    if let Some(old) = self.conns.remove(&server) {
                        io.wake.extend(old.waker);
                    }
                }
                FleetOutput::Status { server, status } => {
                    // A stream whose fleet has no handle left ends once every server has
                    // closed for good: it looks again at each closing.
                    if matches!(status, ServerStatus::Closed { .. }) {
                        io.wake.extend(self.event_waker.take());
                    }
                    self.log.push(server, status, io)
                }
                FleetOutput::Completed {
                    server,
                    id,
                    outcome,
                } => {
                    // No waiter: the caller stopped waiting, which is its choice.
                    if let Some(w) = self.waiters.get_mut(&(server, id)) {
                        w.outcome = Some(outcome);
                        io.wake.extend(w.waker.take());
                    }
                }
                FleetOutput::Removed { server } => {
                    self.endpoints.remove(&server);
                    self.reads.remove(&server);
                }
                FleetOutput::Wait(deadline) => {
                    if deadline != self.deadline {
                        self.deadline = deadline;
                        self.timer_version += 1;
                        io.wake.extend(self.timer_waker.take());
                    }
                    break;
                }
                _ => {}
            }
        }
        while let Some(server) = self.fleet.poll_writable() {
            if let Some(c) = self.conns.get_mut(&server) {
                c.kick = true;
                io.wake.extend(c.waker.take());
            }
        }
        if self.fleet.has_events() || self.stream_over() {
            io.wake.extend(self.event_waker.take());
        }
    }

    /// True if `server` may be read now; false (and noted, so the reader's next take wakes
    /// the driver) while the reader is behind on it.
    pub(crate) fn hold_read(&mut self, server: ServerId) -> bool {
        if self.fleet.wants_read(server) {
            return true;
        }
        if !self.held.contains(&server) {
            self.held.push(server);
        }
        false
    }

    /// The read counters of `server` (fresh ones, counted nowhere, if it has no name).
    pub(crate) fn read_tally(&mut self, server: ServerId) -> Arc<ReadTally> {
        match self.fleet.name(server) {
            Some(name) => self.reads.entry(name.clone()).or_default().clone(),
            None => Arc::default(),
        }
    }

    /// The reader took items: counted, and once a held server may read again
    /// (`Fleet::wants_read`), the driver is told (`io` wakes it). Not at every take: a
    /// reader that is behind takes a batch at a time, and a wake-up per batch that finds the
    /// queue still too full cost the reader a fifth of its rate (`fleet_loopback`).
    pub(crate) fn reader_took(&mut self, io: &mut Io) {
        self.reader_takes = self.reader_takes.wrapping_add(1);
        if self.held.iter().any(|&s| self.fleet.wants_read(s)) {
            self.held.clear();
            io.wake.extend(self.timer_waker.take());
        }
    }

    /// True once the stream can bring nothing more: closed (or the driver gone) and drained.
    pub(crate) fn stream_over(&self) -> bool {
        (self.closed || self.driver_done) && !self.fleet.has_events() && self.conns.is_empty()
    }

    /// Is connection `epoch` of `server` still the current one? If so, takes its kick, and
    /// parks `waker` for the next change either way: a kick taken here may be stale (set
    /// while this very visit lent the bytes it then wrote), and a connection left without
    /// a waker would miss the kick of the next action queued, which then waited for the
    /// server's next bytes to wake it (no pipelining while an answer was slow).
    pub(crate) fn conn_state(
        &mut self,
        server: ServerId,
        epoch: u64,
        waker: &Waker,
    ) -> Option<ConnState> {
        match self.conns.get_mut(&server) {
            Some(c) if c.epoch == epoch => {
                if c.waker.is_none() {
                    c.waker = Some(waker.clone());
                }
                std::mem::take(&mut c.kick).then_some(ConnState::Kicked)
            }
            _ => Some(ConnState::Gone),
        }
    }

    /// True if connection `epoch` of `server` is the current one.
    pub(crate) fn is_current(&self, server: ServerId, epoch: u64) -> bool {
        self.conns.get(&server).is_some_and(|c| c.epoch == epoch)
    }

    /// Closes every server (no Logoff): pending actions fail now, the stream ends once
    /// drained.
    pub(crate) fn close(&mut self, now: Instant, io: &mut Io) {
        let over = self.closed || self.driver_done;
        self.closed = true;
        self.fleet.close_all(now);
        self.drain(io);
        io.wake.extend(self.timer_waker.take());
        io.wake.extend(self.event_waker.take());
        if !over {
            self.log.shard_over(io);
        }
    }

    /// The driver went (normally or not): the core is closed as a session's is when its
    /// driver goes (`Inner::finish`). A driver dropped mid-run (its task aborted, its
    /// runtime shut down) took its copies of lent bytes with it: what they held never left,
    /// so they are given back first and the close fails those actions `NotSent`, the ones
    /// written `Unknown`. The outcomes reach their waiters, the servers' `Closed` statuses
    /// the log, and their `Disconnected` items the stream, before it ends. After a driver
    /// that ran to its end every server is closed already, and this does nothing. Call
    /// [`driver_ended`](Self::driver_ended) next, under the same lock.
    pub(crate) fn close_for_driver(&mut self, now: Instant, io: &mut Io) {
        if self.driver_done {
            return;
        }
        let servers: Vec<ServerId> = self.fleet.servers().map(|(id, _)| id).collect();
        for server in servers {
            self.fleet.unlend_transmit(server);
        }
        self.fleet.close_all(now);
        self.drain(io);
    }

    /// The driver ended (normally or not): every waiter and watcher is woken to find out.
    pub(crate) fn driver_ended(&mut self, io: &mut Io) {
        if !(self.closed || self.driver_done) {
            self.log.shard_over(io);
        }
        self.driver_done = true;
        for w in self.waiters.values_mut() {
            io.wake.extend(w.waker.take());
        }
        for c in self.conns.values_mut() {
            io.wake.extend(c.waker.take());
        }
        self.conns.clear();
        io.wake.extend(self.event_waker.take());
    }
}

/// The shared state, its lock, and the runtime's clock.
pub(crate) struct Inner<E> {
    shared: Mutex<Shared<E>>,
    /// The runtime's clock (`Runtime::now`): handles are not generic over the runtime.
    pub(crate) now: fn() -> Instant,
}

impl<E: Clone> Inner<E> {
    pub(crate) fn new(fleet: Fleet, now: fn() -> Instant, log: Arc<StatusLog>) -> Inner<E> {
        Inner {
            shared: Mutex::new(Shared::new(fleet, log)),
            now,
        }
    }

    /// Locks the shared state (a poisoned lock is used as is: see [`lock`]).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared<E>> {
        lock(&self.shared)
    }

    /// Runs `f` under the lock, drains what it caused, then wakes whom it concerns outside
    /// the lock.
    pub(crate) fn call<R>(&self, f: impl FnOnce(&mut Shared<E>) -> R) -> R {
        let mut io = Io::default();
        let r = {
            let mut shared = self.lock();
            let r = f(&mut shared);
            shared.drain(&mut io);
            r
        };
        io.wake_all();
        r
    }
}
