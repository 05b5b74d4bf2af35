//! `MioDriver`: many AMI clients on one `mio::Poll`.

use crate::conn::{ReadEnd, Target};
use crate::report::{poll_ready, ConnId, Report, UserReady};
use crate::resolver::{system_resolve, Lookup, ResolveFn, Resolver};
use crate::session::Owned;
use crate::{MAX_CONNS, WAKER_TOKEN};
use ami_proto::fleet::{Budget, Scheduler};
use ami_proto::{
    Action, ActionId, Client, ClientConfig, EventCopy, SendError, SendOptions, Stats, StreamItem,
};
use ami_proto::{ConnectFailure, DisconnectReason, Notice};

/// What [`MioDriver::send`] and its kin say for a connection no longer there: it was
/// removed, which closed its client.
const REMOVED: SendError = SendError::Closed {
    reason: DisconnectReason::LocalClose,
};
use mio::{Events, Poll, Registry, Token, Waker};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of a [`MioDriver`].
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// Per-step budgets; see [`Budget`] for the defaults and why.
    pub budget: Budget,
    /// Readiness events taken from the poll per call. Default 1,024; more wait for the next
    /// call (mio keeps them). At most [`MAX_EVENTS_CAPACITY`].
    pub events_capacity: usize,
    /// Size of the one read buffer shared by all connections. Default 64 KiB: one read
    /// per connection per turn at the default `read_bytes_per_conn` where 16 KiB took four
    /// (`ami --runtime mio bench` on 500-byte events: +5-7 % with one server, +9-14 % with
    /// ten); one buffer for every connection, so its size does not grow with the fleet.
    /// At most [`MAX_READ_CHUNK`].
    pub read_chunk: usize,
    /// Most threads resolving host names for [`MioDriver::add_host`] at once. Default 16;
    /// one starts on the first `add_host`, more as lookups of different names overlap (a
    /// lookup that hangs holds its thread, and the next name gets another instead of
    /// waiting behind it). A name has one lookup at a time, however many connections want
    /// it, so a name that hangs holds one thread.
    pub resolver_threads: usize,
    /// The name resolver run on those threads. Default: the system resolver.
    pub resolve: Arc<ResolveFn>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            budget: Budget::default(),
            events_capacity: 1024,
            read_chunk: 64 << 10,
            resolver_threads: 16,
            resolve: Arc::new(system_resolve),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("budget", &self.budget)
            .field("events_capacity", &self.events_capacity)
            .field("read_chunk", &self.read_chunk)
            .field("resolver_threads", &self.resolver_threads)
            .finish_non_exhaustive()
    }
}

/// Most readiness events [`Options::events_capacity`] may ask for: one per connection a
/// driver can hold ([`MAX_CONNS`]), a buffer of 12-16 MiB. A poll reports each ready source
/// once and leaves the rest for the next call, so more gains nothing, while the buffer is
/// allocated whole when the driver is made: the `int` that `epoll_wait` takes would allow
/// 24 GiB, and an allocation the system refuses aborts the process.
pub const MAX_EVENTS_CAPACITY: usize = MAX_CONNS;

/// Largest [`Options::read_chunk`], in bytes: 16 MiB. One read returns at most what the
/// socket's receive buffer holds (Linux's default ceiling, `tcp_rmem`, is 6 MiB), so a
/// larger buffer is never filled, while it is allocated whole when the driver is made:
/// a size the system refuses (anything up to `isize::MAX` is a valid request) aborts the
/// process.
pub const MAX_READ_CHUNK: usize = 16 << 20;

/// [`Options`] that cannot work. [`MioDriver::with_options`] and
/// [`MioFleet::with_options`](crate::MioFleet::with_options) refuse them with an
/// [`io::Error`] of kind [`InvalidInput`](io::ErrorKind::InvalidInput) carrying this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// `events_capacity` is over [`MAX_EVENTS_CAPACITY`].
    #[error("ami-mio options: events_capacity {0} is over {MAX_EVENTS_CAPACITY} (MAX_EVENTS_CAPACITY: one per connection a driver can hold)")]
    EventsCapacity(usize),
    /// `read_chunk` is over [`MAX_READ_CHUNK`] bytes.
    #[error(
        "ami-mio options: read_chunk {0} is over {MAX_READ_CHUNK} bytes (MAX_READ_CHUNK: no socket read returns more)"
    )]
    ReadChunk(usize),
}

impl Options {
    /// The readiness events buffer and the read buffer these options ask for (each at
    /// least its floor), or why they cannot be made: checked before allocating, where an
    /// impossible size would panic.
    pub(crate) fn buffers(&self) -> io::Result<(Events, Vec<u8>)> {
        let invalid = |e: OptionsError| io::Error::new(io::ErrorKind::InvalidInput, e);
        if self.events_capacity > MAX_EVENTS_CAPACITY {
            return Err(invalid(OptionsError::EventsCapacity(self.events_capacity)));
        }
        if self.read_chunk > MAX_READ_CHUNK {
            return Err(invalid(OptionsError::ReadChunk(self.read_chunk)));
        }
        Ok((
            Events::with_capacity(self.events_capacity.max(1)),
            vec![0; self.read_chunk.max(512)],
        ))
    }
}

/// Why [`MioDriver::add`], [`MioDriver::add_host`] (or their TLS forms) refused a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The driver holds [`MAX_CONNS`] connections already.
    #[error("a MioDriver holds at most {MAX_CONNS} connections")]
    Full,
    /// The name resolver threads (started by the first `add_host`) could not be started.
    #[error("could not start the name resolver threads: {0}")]
    Resolver(io::Error),
    /// `Tls::server_name` is neither a DNS name nor an IP address.
    #[error("bad TLS server name {name:?}")]
    TlsServerName {
        /// The name given.
        name: String,
    },
}

#[derive(Debug)]
struct Slot {
    generation: u64,
    conn: Option<Owned>,
}

/// Drives any number of AMI [`Client`]s from one [`mio::Poll`].
///
/// Two calls, never mixed up:
///
/// - [`step`](Self::step) never blocks: it polls with a zero timeout, does the ready I/O within
///   the per-step [`Budget`], feeds `now` to every client and returns a [`Report`].
/// - [`wait`](Self::wait) blocks in `mio::Poll::poll` until I/O is ready, the earliest client
///   deadline, or the caller's timeout. It does no I/O of its own; the next `step` does it.
///
/// The caller may register its own sources on [`registry`](Self::registry) with tokens in
/// [`USER_TOKENS`](crate::USER_TOKENS); their readiness comes back in [`Report::user`].
pub struct MioDriver {
    poll: Poll,
    events: Events,
    slots: Vec<Slot>,
    free: Vec<usize>,
    next_generation: u64,
    scheduler: Scheduler,
    buf: Vec<u8>,
    waker: Arc<Waker>,
    woken: bool,
    /// The last [`wait`](Self::wait) polled and no step ran since: the next step need not
    /// poll again (one `epoll_wait` per wake instead of two).
    polled: bool,
    resolver: Option<Resolver>,
    options: Options,
    notices: Vec<(ConnId, Notice)>,
    user: Vec<UserReady>,
}

impl std::fmt::Debug for MioDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MioDriver")
            .field("connections", &(self.slots.len() - self.free.len()))
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl MioDriver {
    /// A driver with default [`Options`].
    pub fn new() -> io::Result<MioDriver> {
        MioDriver::with_options(Options::default())
    }

    /// A driver with `options`, or an [`InvalidInput`](io::ErrorKind::InvalidInput) error
    /// carrying an [`OptionsError`] if they cannot work.
    pub fn with_options(options: Options) -> io::Result<MioDriver> {
        let (events, buf) = options.buffers()?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), Token(WAKER_TOKEN))?);
        Ok(MioDriver {
            events,
            poll,
            slots: Vec::new(),
            free: Vec::new(),
            next_generation: 0,
            scheduler: Scheduler::new(options.budget),
            buf,
            waker,
            woken: false,
            polled: false,
            resolver: None,
            options,
            notices: Vec::new(),
            user: Vec::new(),
        })
    }

    /// Adds a client for the server at `addr`, created at `now`. It connects during the next
    /// steps.
    pub fn add(
        &mut self,
        now: Instant,
        config: ClientConfig,
        addr: SocketAddr,
    ) -> Result<ConnId, AddError> {
        self.insert(now, config, Target::Addr(addr))
    }

    /// Adds a client for `host:port`, created at `now`. The name is resolved on a helper
    /// thread before a connect, never on the loop; the core's connect timeout covers the
    /// lookup. One lookup of a name serves every connection to it, and its answer serves
    /// their connects for 30 s (one that came too late for the attempt that asked serves the
    /// next), after which the name is asked again. Every address the name has is tried until
    /// one connects, a new attempt beside the running ones every
    /// [`ami_proto::CONNECT_ATTEMPT_DELAY`] (families alternating): a dual-stack host whose
    /// first address is unreachable still connects.
    pub fn add_host(
        &mut self,
        now: Instant,
        config: ClientConfig,
        host: impl Into<String>,
    ) -> Result<ConnId, AddError> {
        if self.resolver.is_none() {
            self.resolver = Some(
                Resolver::spawn(
                    self.options.resolver_threads,
                    Arc::clone(&self.waker),
                    Arc::clone(&self.options.resolve),
                )
                .map_err(AddError::Resolver)?,
            );
        }
        self.insert(now, config, Target::Host(host.into()))
    }

    /// Adds a client for the server at `addr`, speaking AMI over TLS (implicit TLS, usually
    /// port 5039; feature `tls`). The handshake runs inside [`step`](Self::step) like any other
    /// I/O and is part of the connect: bounded by the core's connect timeout, and the core is
    /// told `Connected` only once it is done. A failed handshake, such as a certificate that
    /// is not trusted or not for `tls.server_name`, or a port that does not speak TLS, is a
    /// failed connect as on the async runtimes: [`Notice::Disconnected`] with
    /// [`DisconnectReason::ConnectFailed`](ami_proto::DisconnectReason::ConnectFailed)`(`[`ConnectFailure::Tls`](ami_proto::ConnectFailure::Tls)`)`,
    /// and the core's usual reconnect backoff.
    ///
    /// Fails with [`AddError::TlsServerName`] if `tls.server_name` is neither a DNS name nor
    /// an IP address, and with [`AddError::Full`] when the driver is full.
    #[cfg(feature = "tls")]
    pub fn add_tls(
        &mut self,
        now: Instant,
        config: ClientConfig,
        addr: SocketAddr,
        tls: crate::Tls,
    ) -> Result<ConnId, AddError> {
        let tls = crate::tls::TlsTarget::new(tls)?;
        let id = self.insert(now, config, Target::Addr(addr))?;
        if let Some(c) = self.conn_mut(id) {
            c.conn.tls = Some(tls);
        }
        Ok(id)
    }

    /// [`add_host`](Self::add_host) over TLS: `host:port` is resolved off the loop before a
    /// connect, as there, then the session is as in [`add_tls`](Self::add_tls). The
    /// certificate is checked against `tls.server_name`, not against `host`.
    #[cfg(feature = "tls")]
    pub fn add_host_tls(
        &mut self,
        now: Instant,
        config: ClientConfig,
        host: impl Into<String>,
        tls: crate::Tls,
    ) -> Result<ConnId, AddError> {
        let tls = crate::tls::TlsTarget::new(tls)?;
        let id = self.add_host(now, config, host)?;
        if let Some(c) = self.conn_mut(id) {
            c.conn.tls = Some(tls);
        }
        Ok(id)
    }

    fn insert(
        &mut self,
        now: Instant,
        config: ClientConfig,
        target: Target,
    ) -> Result<ConnId, AddError> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < MAX_CONNS => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                self.slots.len() - 1
            }
            None => return Err(AddError::Full),
        };
        self.next_generation += 1;
        let id = ConnId {
            index,
            generation: self.next_generation,
        };
        // Unseeded configs get OS entropy: clients must not share ActionID prefixes or
        // reconnect jitter (shared jitter keeps a fleet's reconnects in lockstep).
        let config = match config.seed() {
            Some(_) => config,
            None => config.with_seed(entropy()),
        };
        // Unless the application named it, the client is named after its target, so that
        // its log records say which server they are about.
        let config = config.or_name(target.to_string());
        let mut conn = Owned::new(Client::new(on_loop_thread(config), now), target);
        conn.drain(id, self.poll.registry(), &mut self.notices);
        if let Some(slot) = self.slots.get_mut(index) {
            slot.generation = id.generation;
            slot.conn = Some(conn);
        }
        Ok(id)
    }

    /// Removes a connection at `now`: it is closed at once (no Logoff) and its ID is retired.
    /// Events it still held for [`poll_event`](Self::poll_event) are dropped, and one log
    /// line says how many (its [`Stats`] go with it). Returns false if `conn` was already
    /// gone.
    pub fn remove(&mut self, now: Instant, conn: ConnId) -> bool {
        let registry = self.poll.registry();
        let Some(slot) = self.slots.get_mut(conn.index) else {
            return false;
        };
        if slot.generation != conn.generation {
            return false;
        }
        let Some(mut c) = slot.conn.take() else {
            return false;
        };
        // Nobody can read its events any more: the ones it holds are counted and said, as
        // for a stream the application closed, before its counters go with it.
        if c.client.has_stream_items() {
            c.client.close_event_stream(std::iter::empty());
        }
        c.client.close(now);
        c.drain(conn, registry, &mut self.notices);
        slot.generation = 0;
        self.free.push(conn.index);
        true
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Owned> {
        self.slots
            .get_mut(id.index)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.conn.as_mut())
    }

    /// Queues an action at `now` (its deadline counts from then); it is written by the next
    /// [`step`](Self::step). The result arrives once as [`Notice::Completed`] with the
    /// returned ID. A removed `conn` gives [`SendError::Closed`] (`LocalClose`).
    pub fn send(
        &mut self,
        now: Instant,
        conn: ConnId,
        action: Action,
    ) -> Result<ActionId, SendError> {
        self.send_with(now, conn, action, SendOptions::default())
    }

    /// [`send`](Self::send) with options (a deadline of its own).
    pub fn send_with(
        &mut self,
        now: Instant,
        conn: ConnId,
        action: Action,
        options: SendOptions,
    ) -> Result<ActionId, SendError> {
        let c = self.conn_mut(conn).ok_or(REMOVED)?;
        c.client.send_action_with(now, action, options)
    }

    /// Installs an event filter on `conn` at `now`, for this session and every reconnect
    /// (see [`Client::add_filter`]): the filter's `Action: Filter` is written by the next
    /// [`step`](Self::step) and its answer arrives as [`Notice::Completed`] with the
    /// returned ID, as for [`send`](Self::send). [`client`](Self::client) is read-only, so
    /// this is the way to add a filter after `add`. A removed `conn` gives
    /// [`SendError::Closed`]; the client's own refusals (too many filters, a bad field)
    /// come as they are.
    pub fn add_filter(
        &mut self,
        now: Instant,
        conn: ConnId,
        filter: &str,
    ) -> Result<ActionId, SendError> {
        let c = self.conn_mut(conn).ok_or(REMOVED)?;
        c.client.add_filter(now, filter)
    }

    /// Changes `conn`'s event mask at `now`, for this session (`Action: Events`, written by
    /// the next [`step`](Self::step)) and every later login (see
    /// [`Client::set_event_mask`]); its answer arrives as [`Notice::Completed`] with the
    /// returned ID. The mask is the client's as soon as it is queued: a session configured
    /// without `call` events takes async Originates from then on. Refused as
    /// [`add_filter`](Self::add_filter) is, and a mask that keeps `call` events out while
    /// async Originates wait for their `OriginateResponse`.
    pub fn set_event_mask(
        &mut self,
        now: Instant,
        conn: ConnId,
        mask: &str,
    ) -> Result<ActionId, SendError> {
        let c = self.conn_mut(conn).ok_or(REMOVED)?;
        c.client.set_event_mask(now, mask)
    }

    /// Cancels a pending action at `now` (see [`Client::cancel`]). False if unknown.
    pub fn cancel(&mut self, now: Instant, conn: ConnId, id: &ActionId) -> bool {
        self.conn_mut(conn)
            .is_some_and(|c| c.client.cancel(now, id))
    }

    /// The next event (or gap notice) of `conn`'s stream.
    pub fn poll_event(&mut self, conn: ConnId) -> Option<StreamItem> {
        self.conn_mut(conn)?.client.poll_event()
    }

    /// `conn`'s events will never be read (a program that only sends actions): it keeps
    /// none from now on, each counted in its [`Stats::events_dropped`] (see
    /// [`Client::close_event_stream`]). False if `conn` is unknown.
    pub fn close_event_stream(&mut self, conn: ConnId) -> bool {
        self.conn_mut(conn)
            .map(|c| c.client.close_event_stream([]))
            .is_some()
    }

    /// Logs `conn` off at `now` (see [`Client::logoff`]); the Logoff is written by the next
    /// step.
    pub fn logoff(&mut self, now: Instant, conn: ConnId) -> bool {
        let registry = self.poll.registry();
        let Some(c) = self
            .slots
            .get_mut(conn.index)
            .filter(|s| s.generation == conn.generation)
            .and_then(|s| s.conn.as_mut())
        else {
            return false;
        };
        c.client.logoff(now);
        c.drain(conn, registry, &mut self.notices);
        true
    }

    /// Closes `conn` at `now`, at once, without Logoff (see [`Client::close`]); it stays
    /// listed until [`remove`](Self::remove)d.
    pub fn close(&mut self, now: Instant, conn: ConnId) -> bool {
        let registry = self.poll.registry();
        let Some(c) = self
            .slots
            .get_mut(conn.index)
            .filter(|s| s.generation == conn.generation)
            .and_then(|s| s.conn.as_mut())
        else {
            return false;
        };
        c.client.close(now);
        c.drain(conn, registry, &mut self.notices);
        true
    }

    /// A snapshot of `conn`'s counters.
    pub fn stats(&self, conn: ConnId) -> Option<Stats> {
        self.client(conn).map(Client::stats)
    }

    /// The core client of `conn`, read-only (state, config, stats).
    pub fn client(&self, conn: ConnId) -> Option<&Client> {
        self.slots
            .get(conn.index)
            .filter(|s| s.generation == conn.generation)
            .and_then(|s| s.conn.as_ref())
            .map(|c| &c.client)
    }

    /// The IDs of all connections.
    pub fn connections(&self) -> Vec<ConnId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.conn.is_some())
            .map(|(index, s)| ConnId {
                index,
                generation: s.generation,
            })
            .collect()
    }

    /// The poll's registry, for the caller's own sources. Use tokens in [`USER_TOKENS`](crate::USER_TOKENS) only.
    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// A waker for this poll: another thread may call `wake()` to end a [`wait`](Self::wait)
    /// early.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Blocks until I/O is ready, the earliest client deadline passes, or `timeout` (None: no
    /// limit of the caller's) elapses; returns at once if the last step left work behind.
    ///
    /// This is the only call that blocks. Readiness is remembered; call [`step`](Self::step)
    /// next to act on it.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let now = Instant::now();
        let mut limit = timeout;
        let mut busy = self.woken || !self.notices.is_empty() || !self.user.is_empty();
        for c in self.slots.iter_mut().filter_map(|s| s.conn.as_mut()) {
            // Outputs a call left (a cancel's outcome) are carried out by the next step.
            busy |= c.has_work() || c.client.has_output();
            // The core's deadline, and when a connect's next address is due.
            for at in [c.client.poll_timeout(), c.conn.next_attempt]
                .into_iter()
                .flatten()
            {
                let d = at.saturating_duration_since(now);
                limit = Some(limit.map_or(d, |l| l.min(d)));
            }
        }
        if busy {
            // The next step polls (without waiting) and acts on the work left.
            return Ok(());
        }
        self.poll_into(limit)?;
        self.polled = true;
        Ok(())
    }

    fn poll_into(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let slots = &mut self.slots;
        poll_ready(
            &mut self.poll,
            &mut self.events,
            timeout,
            &mut self.woken,
            &mut self.user,
            |token, ev| {
                if let Some(c) = slots.get_mut(token).and_then(|s| s.conn.as_mut()) {
                    c.conn.absorb(ev);
                }
            },
        )
    }

    /// One non-blocking round: polls with a zero timeout (unless the [`wait`](Self::wait)
    /// just before it polled), then gives every connection its
    /// turn within the [`Budget`] (starting one place further each step): connect
    /// completion, reads, timers at `now`, outputs, writes; then starts the connects the
    /// budget allows. Never sleeps, never resolves a name, never touches a file.
    ///
    /// What the sockets already hold is read before the timers fire, so that after a late
    /// step (a slow handler stalled the loop) an answer that arrived before its deadline
    /// counts, as on the async runtimes; what is really overdue still fires in the same
    /// step, before anything is written.
    ///
    /// Pass `Instant::now()`.
    pub fn step(&mut self, now: Instant) -> io::Result<Report> {
        if !std::mem::take(&mut self.polled) {
            self.poll_into(Some(Duration::ZERO))?;
        }
        let woken = std::mem::take(&mut self.woken);
        if woken {
            self.take_answers(now);
        }
        let registry = self.poll.registry();
        let mut report = Report {
            notices: std::mem::take(&mut self.notices),
            user: std::mem::take(&mut self.user),
            woken,
            ..Report::default()
        };
        let mut step = self.scheduler.begin(self.slots.len());
        for index in step.order() {
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            let id = ConnId {
                index,
                generation: slot.generation,
            };
            let Some(c) = slot.conn.as_mut() else {
                continue;
            };
            // Input before timers: a connect that completed, a banner, a Pong or an action's
            // answer already in the socket must not be timed out because the step came late.
            c.finish_connect(now, id, registry, &mut report.notices);
            if c.conn.readable && c.is_open() {
                match step.turn(index) {
                    Some(mut turn) => {
                        let end = c.read(
                            now,
                            &mut turn,
                            &mut self.buf,
                            id,
                            registry,
                            &mut report.notices,
                        );
                        report.more |= end == ReadEnd::Budget;
                        step.end_turn(turn);
                    }
                    None => report.more = true,
                }
            }
            c.drain(id, registry, &mut report.notices);
            // Timers before writes: an action whose deadline passed is withdrawn, not
            // written late.
            c.client.handle_timeout(now);
            c.drain(id, registry, &mut report.notices);
            c.write(now, id, registry, &mut report.notices);
            c.drain(id, registry, &mut report.notices);
            // Any stream item, not only events: a connection whose queue holds only a
            // `Ready`, `Disconnected` or `Discarded` marker must be drained too.
            if c.client.has_stream_items() {
                report.events.push(id);
            }
        }
        for index in step.connect_order() {
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            let id = ConnId {
                index,
                generation: slot.generation,
            };
            let Some(c) = slot.conn.as_mut().filter(|c| c.conn.want_connect) else {
                continue;
            };
            if c.conn.resolved.is_none() {
                // Waiting for the lookup under way: its answer clears `resolving`.
                if c.conn.resolving {
                    continue;
                }
                let lookup = match (&c.conn.target, self.resolver.as_mut()) {
                    (Target::Host(host), Some(r)) => r.lookup(now, host),
                    (Target::Host(_), None) => Lookup::Unavailable,
                    (Target::Addr(_), _) => continue,
                };
                match lookup {
                    Lookup::Addrs(addrs) => c.conn.resolved_to(addrs),
                    Lookup::Pending => {
                        c.conn.resolving = true;
                        continue;
                    }
                    Lookup::Unavailable => {
                        log::warn!(
                            "ami-mio: no resolver thread left; connect to {} failed",
                            c.conn.target
                        );
                        c.conn.want_connect = false;
                        let cause = ConnectFailure::Other(io::ErrorKind::Other);
                        c.client
                            .handle_input(now, ami_proto::Input::ConnectFailed(cause));
                        c.drain(id, registry, &mut report.notices);
                        continue;
                    }
                }
            }
            if !step.take_connect(index) {
                report.more = true;
                continue;
            }
            c.start_connect(now, id, registry, &mut report.notices);
            c.drain(id, registry, &mut report.notices);
        }
        self.scheduler.finish(step);
        Ok(report)
    }

    /// Applies lookup answers to every connection to the names answered: an address lets
    /// a connect waiting for it start; a failure is reported to such a client as a failed
    /// connect. A connection between attempts finds the answer kept for its next attempt
    /// (the resolver keeps it).
    fn take_answers(&mut self, now: Instant) {
        let Some(resolver) = self.resolver.as_mut() else {
            return;
        };
        let answers = resolver.take_answers(now);
        if answers.is_empty() {
            return;
        }
        for c in self.slots.iter_mut().filter_map(|s| s.conn.as_mut()) {
            let Target::Host(host) = &c.conn.target else {
                continue;
            };
            let Some(result) = answers.get(host) else {
                continue;
            };
            c.conn.resolving = false;
            if !c.conn.want_connect || c.conn.resolved.is_some() {
                continue;
            }
            match result {
                Ok(addrs) => c.conn.resolved_to(addrs.clone()),
                Err(_) => {
                    c.conn.want_connect = false;
                    let cause = ConnectFailure::HostNotFound;
                    c.client
                        .handle_input(now, ami_proto::Input::ConnectFailed(cause));
                }
            }
        }
    }
}

/// `config` as this crate's clients run it: events are copied out as they are decoded
/// (the loop's thread both reads and takes them, so sharing the read buffer until they are
/// taken would only add a reference count per event), unless the application chose.
pub(crate) fn on_loop_thread(config: ClientConfig) -> ClientConfig {
    config.prefer_event_copy(EventCopy::OnDecode)
}

/// A seed from the OS: std's hasher keys are random per process and per call.
pub(crate) fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_of_the_loop_copy_events_on_decode_unless_the_application_chose() {
        let config = |b: ami_proto::ClientConfigBuilder| on_loop_thread(b.build().unwrap());
        let plain = config(ClientConfig::builder("admin", "x"));
        assert_eq!(plain.event_copy(), EventCopy::OnDecode);
        let chosen = config(ClientConfig::builder("admin", "x").event_copy(EventCopy::OnTake));
        assert_eq!(chosen.event_copy(), EventCopy::OnTake);
    }

    #[test]
    fn a_client_is_named_after_its_target_in_its_log_records_unless_the_application_named_it() {
        let mut driver = MioDriver::new().unwrap();
        let now = Instant::now();
        let plain = ClientConfig::builder("admin", "x").build().unwrap();
        let named = ClientConfig::builder("admin", "x")
            .name("pbx-east")
            .build()
            .unwrap();
        let by_addr = driver
            .add(now, plain.clone(), "127.0.0.1:5038".parse().unwrap())
            .unwrap();
        let by_host = driver.add_host(now, plain, "pbx.example:5038").unwrap();
        let chosen = driver
            .add(now, named, "127.0.0.1:5039".parse().unwrap())
            .unwrap();
        let name = |id| driver.client(id).and_then(|c| c.config().name());
        assert_eq!(name(by_addr), Some("127.0.0.1:5038"));
        assert_eq!(name(by_host), Some("pbx.example:5038"));
        assert_eq!(name(chosen), Some("pbx-east"));
    }
}
