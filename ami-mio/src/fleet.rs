//! `MioFleet`: an [`ami_proto::fleet::Fleet`] on one [`mio::Poll`]. The core fleet decides
//! (names, routing, the merged stream, status, paced connects); this file only carries out
//! its connects and closes and runs the same socket code as [`MioDriver`](crate::MioDriver)
//! for each server, within the same per-step read budgets.

use crate::conn::{Conn, Link, ReadEnd, Target};
use crate::driver::{entropy, on_loop_thread, Options};
use crate::report::{poll_ready, UserReady};
use crate::resolver::{Lookup, ResolveFn, Resolver};
use crate::session::Session;
use crate::WAKER_TOKEN;
use ami_proto::fleet::{
    Fleet, FleetConfig, FleetError, FleetItem, FleetOutput, FleetStats, Route, RouteError, Routed,
    Scheduler, ServerId, ServerStatus,
};
use ami_proto::{Action, Client, ClientConfig, ConnectFailure, Input, SendOptions};
use mio::{Events, Poll, Registry, Token, Waker};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One server of the fleet, as its socket code sees it: every input goes to the core fleet,
/// which collects what the server's client produced.
struct Member<'a> {
    fleet: &'a mut Fleet,
    id: ServerId,
}

impl Session for Member<'_> {
    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.fleet.handle_input(now, self.id, input);
    }
    fn transmit(&self) -> &[u8] {
        self.fleet.transmit(self.id)
    }
    fn advance_transmit(&mut self, n: usize) {
        self.fleet.advance_transmit(self.id, n);
    }
    fn messages_in(&self) -> u64 {
        self.fleet.messages_in(self.id)
    }
    /// Nothing at once: the fleet's transport verbs are carried out after the server's turn.
    /// A session that ended mid-read ignores the rest of that read (its client has no
    /// transport any more), and the turn's budget bounds it.
    fn settle(&mut self, _conn: &mut Conn) {}
}

/// Why [`MioFleet::add_host`], `MioFleet::add_tls` or `MioFleet::add_host_tls` refused a
/// server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetAddError {
    /// The fleet refused it (bad or duplicate name, fleet full).
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The TLS settings were refused, or (for a host name) the resolver threads could not
    /// be started.
    #[error(transparent)]
    Tls(#[from] crate::AddError),
}

/// What one [`MioFleet::step`] hands back.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct FleetReport {
    /// News from the fleet, in order: [`FleetOutput::Status`] (the status watch),
    /// [`FleetOutput::Completed`] and [`FleetOutput::Removed`]. Transport verbs never
    /// appear here: the step carried them out.
    pub news: Vec<FleetOutput>,
    /// True when the merged stream has items: drain [`MioFleet::poll_event`].
    pub events: bool,
    /// Readiness of the caller's own sources.
    pub user: Vec<UserReady>,
    /// True when a budget stopped this step short; [`MioFleet::wait`] then returns at once.
    pub more: bool,
    /// True when the poll's [`waker`](MioFleet::waker) fired since the last step: your own
    /// `wake()` (so a loop fed by a channel looks at it only then) or a name lookup's answer.
    pub woken: bool,
}

/// Many Asterisk servers as one, on one [`mio::Poll`] in a loop that belongs to you.
///
/// The same two calls as [`MioDriver`](crate::MioDriver): [`step`](Self::step) never blocks,
/// [`wait`](Self::wait) is the only call that does. Between them, the application adds and
/// removes servers by name, routes actions ([`send`](Self::send)), and drains the merged
/// event stream ([`poll_event`](Self::poll_event)), whose items name their server. The
/// meaning of each is [`ami_proto::fleet`]'s; see there.
///
/// Servers are given by address ([`add`](Self::add)) or by `host:port`
/// ([`add_host`](Self::add_host)): names are resolved before a connect on helper threads,
/// as for [`MioDriver::add_host`](crate::MioDriver::add_host), never on the step.
pub struct MioFleet {
    poll: Poll,
    events: Events,
    fleet: Fleet,
    /// Per fleet slot: the server's ID and its socket.
    conns: Vec<Option<(ServerId, Conn)>>,
    scheduler: Scheduler,
    buf: Vec<u8>,
    waker: Arc<Waker>,
    woken: bool,
    /// The last [`wait`](Self::wait) polled and no step ran since: the next step need not
    /// poll again (one `epoll_wait` per wake instead of two).
    polled: bool,
    user: Vec<UserReady>,
    more: bool,
    /// Name lookups, started by the first [`add_host`](Self::add_host).
    resolver: Option<Resolver>,
    resolve: Arc<ResolveFn>,
    resolver_threads: usize,
    /// Servers whose name was answered while they waited to connect, in the order the
    /// answers came: a name's one lookup answers every server at it at once, and their
    /// connects start within the per-step connect budget, not all in one step.
    answered: VecDeque<ServerId>,
    /// The budget's `connects_per_step`, and the connects started in the current step.
    connects_per_step: usize,
    opened: usize,
}

impl std::fmt::Debug for MioFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MioFleet")
            .field("servers", &self.fleet.len())
            .finish_non_exhaustive()
    }
}

impl MioFleet {
    /// An empty fleet with default [`Options`] (budgets) and [`FleetConfig`].
    pub fn new() -> io::Result<MioFleet> {
        MioFleet::with_options(Options::default(), FleetConfig::default())
    }

    /// An empty fleet. `options.budget` is the fleet's budget (it replaces `config.budget`);
    /// `config.seed` is replaced with OS entropy, so two processes never share ActionID
    /// prefixes. Options that cannot work are refused as
    /// [`MioDriver::with_options`](crate::MioDriver::with_options) refuses them.
    pub fn with_options(options: Options, config: FleetConfig) -> io::Result<MioFleet> {
        let (events, buf) = options.buffers()?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), Token(WAKER_TOKEN))?);
        let mut config = config;
        config.budget = options.budget;
        config.max_servers = config.max_servers.min(crate::MAX_CONNS);
        config.seed = entropy();
        Ok(MioFleet {
            events,
            poll,
            fleet: Fleet::new(config),
            conns: Vec::new(),
            scheduler: Scheduler::new(options.budget),
            buf,
            waker,
            woken: false,
            polled: false,
            user: Vec::new(),
            more: false,
            resolver: None,
            resolve: options.resolve,
            resolver_threads: options.resolver_threads,
            answered: VecDeque::new(),
            connects_per_step: options.budget.connects_per_step,
            opened: 0,
        })
    }

    /// Adds a server named `name` at `addr`, at `now`; it connects during the next steps,
    /// within the fleet's per-step connect budget.
    pub fn add(
        &mut self,
        now: Instant,
        name: &str,
        config: ClientConfig,
        addr: SocketAddr,
    ) -> Result<ServerId, FleetError> {
        self.insert(now, name, config, Target::Addr(addr))
    }

    /// Adds a server named `name` at `host:port`, at `now`. The name is resolved on a helper
    /// thread before a connect ([`Options::resolve`], [`Options::resolver_threads`]), never
    /// on the step, one lookup per name at a time and its answer kept for 30 s, and its
    /// addresses are tried in turn, as
    /// [`MioDriver::add_host`](crate::MioDriver::add_host) does; a name that does not resolve
    /// is a failed connect (`HostNotFound`), retried with the fleet's backoff.
    ///
    /// # Errors
    /// The fleet refused the server, or the resolver threads could not be started.
    pub fn add_host(
        &mut self,
        now: Instant,
        name: &str,
        config: ClientConfig,
        host: impl Into<String>,
    ) -> Result<ServerId, FleetAddError> {
        if self.resolver.is_none() {
            let waker = Arc::clone(&self.waker);
            let resolver = Resolver::spawn(self.resolver_threads, waker, Arc::clone(&self.resolve))
                .map_err(crate::AddError::Resolver)?;
            self.resolver = Some(resolver);
        }
        Ok(self.insert(now, name, config, Target::Host(host.into()))?)
    }

    fn insert(
        &mut self,
        now: Instant,
        name: &str,
        config: ClientConfig,
        target: Target,
    ) -> Result<ServerId, FleetError> {
        let id = self.fleet.add(now, name, on_loop_thread(config))?;
        if self.conns.len() <= id.index() {
            self.conns.resize_with(id.index() + 1, || None);
        }
        let conn = Conn::new(target);
        if let Some(slot) = self.conns.get_mut(id.index()) {
            *slot = Some((id, conn));
        }
        Ok(id)
    }

    /// [`add`](Self::add) speaking AMI over TLS (feature `tls`), as
    /// [`MioDriver::add_tls`](crate::MioDriver::add_tls) does for one server.
    ///
    /// # Errors
    /// `tls.server_name` is neither a DNS name nor an IP address, or the fleet refused the
    /// server.
    #[cfg(feature = "tls")]
    pub fn add_tls(
        &mut self,
        now: Instant,
        name: &str,
        config: ClientConfig,
        addr: SocketAddr,
        tls: crate::Tls,
    ) -> Result<ServerId, FleetAddError> {
        let tls = crate::tls::TlsTarget::new(tls)?;
        let id = self.add(now, name, config, addr)?;
        self.set_tls(id, tls);
        Ok(id)
    }

    /// [`add_host`](Self::add_host) speaking AMI over TLS (feature `tls`): the name is
    /// resolved off the step and every address tried, as for a plain server.
    ///
    /// # Errors
    /// As [`add_tls`](Self::add_tls) and [`add_host`](Self::add_host).
    #[cfg(feature = "tls")]
    pub fn add_host_tls(
        &mut self,
        now: Instant,
        name: &str,
        config: ClientConfig,
        host: impl Into<String>,
        tls: crate::Tls,
    ) -> Result<ServerId, FleetAddError> {
        let tls = crate::tls::TlsTarget::new(tls)?;
        let id = self.add_host(now, name, config, host)?;
        self.set_tls(id, tls);
        Ok(id)
    }

    #[cfg(feature = "tls")]
    fn set_tls(&mut self, id: ServerId, tls: crate::tls::TlsTarget) {
        if let Some((_, conn)) = self.conns.get_mut(id.index()).and_then(Option::as_mut) {
            conn.tls = Some(tls);
        }
    }

    /// Removes the server named `name` (see [`Fleet::remove`]): its socket is closed, its
    /// pending actions complete, and [`FleetOutput::Removed`] follows in the next report.
    pub fn remove(&mut self, now: Instant, name: &str) -> bool {
        let Some(id) = self.fleet.id(name) else {
            return false;
        };
        let removed = self.fleet.remove(now, name);
        if let Some((_, mut conn)) = self.conns.get_mut(id.index()).and_then(Option::take) {
            conn.drop_link(self.poll.registry());
        }
        removed
    }

    /// Sends `action` where `route` says (see [`Fleet::send`]); it is written by the next
    /// step.
    pub fn send(
        &mut self,
        now: Instant,
        route: Route<'_>,
        action: Action,
    ) -> Result<Routed, RouteError> {
        self.fleet.send(now, route, action)
    }

    /// [`send`](Self::send) with options: a deadline of its own instead of the server's
    /// `action_timeout`, a stream mark.
    pub fn send_with(
        &mut self,
        now: Instant,
        route: Route<'_>,
        action: Action,
        options: SendOptions,
    ) -> Result<Routed, RouteError> {
        self.fleet.send_with(now, route, action, options)
    }

    /// Sends a copy of `action` to every server (see [`Fleet::send_all`]).
    pub fn send_all(&mut self, now: Instant, action: &Action) -> Vec<Result<Routed, RouteError>> {
        self.send_all_with(now, action, SendOptions::default())
    }

    /// [`send_all`](Self::send_all) with options, the same for every server.
    pub fn send_all_with(
        &mut self,
        now: Instant,
        action: &Action,
        options: SendOptions,
    ) -> Vec<Result<Routed, RouteError>> {
        self.fleet.send_all(now, action, options)
    }

    /// The next item of the merged stream (see [`Fleet::poll_event`]).
    pub fn poll_event(&mut self) -> Option<FleetItem> {
        self.fleet.poll_event()
    }

    /// Moves up to `max` items of the merged stream into `out` (see [`Fleet::poll_events`]).
    pub fn poll_events(&mut self, out: &mut Vec<FleetItem>, max: usize) -> usize {
        self.fleet.poll_events(out, max)
    }

    /// The merged stream will never be read (a program that only routes actions): no server
    /// keeps events from now on, servers added later included, each counted in its
    /// `Stats::events_dropped` (see [`Fleet::close_event_stream`]).
    pub fn close_event_stream(&mut self) {
        self.fleet.close_event_stream([]);
    }

    /// Where the server named `name` is.
    pub fn status(&self, name: &str) -> Option<&ServerStatus> {
        self.fleet.status(name)
    }

    /// Counters per server and in total.
    pub fn stats(&self) -> FleetStats {
        self.fleet.stats()
    }

    /// The core fleet, read-only (names, statuses, clients).
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Runs `f` on the client of the server named `name` (see [`Fleet::with_client`]).
    pub fn with_client<R>(
        &mut self,
        now: Instant,
        name: &str,
        f: impl FnOnce(&mut Client, Instant) -> R,
    ) -> Option<R> {
        self.fleet.with_client(now, name, f)
    }

    /// Closes every server at once (see [`Fleet::close_all`]); the next step closes the
    /// sockets and reports the outcomes.
    pub fn close_all(&mut self, now: Instant) {
        self.fleet.close_all(now);
    }

    /// The poll's registry, for the caller's own sources (tokens in [`USER_TOKENS`](crate::USER_TOKENS) only).
    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// A waker for this poll: another thread may call `wake()` to end a [`wait`](Self::wait)
    /// early.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Blocks until I/O is ready, the fleet's next deadline, or `timeout`; returns at once if
    /// the last step left work behind.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let now = Instant::now();
        let mut limit = timeout;
        if let Some(at) = self.fleet.poll_timeout() {
            let d = at.saturating_duration_since(now);
            limit = Some(limit.map_or(d, |l| l.min(d)));
        }
        // Outputs a call left (close_all, remove, with_client) are carried out by the next
        // step: sockets to close, outcomes and statuses to report.
        let mut busy = self.woken || self.more || !self.user.is_empty() || self.fleet.has_output();
        for (id, conn) in self.conns.iter().flatten() {
            busy |= conn.has_work(self.fleet.transmit(*id).is_empty());
            // When a connect's next address is due.
            if let Some(at) = conn.next_attempt {
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
        let conns = &mut self.conns;
        poll_ready(
            &mut self.poll,
            &mut self.events,
            timeout,
            &mut self.woken,
            &mut self.user,
            |token, ev| {
                if let Some((_, c)) = conns.get_mut(token).and_then(Option::as_mut) {
                    c.absorb(ev);
                }
            },
        )
    }

    /// One non-blocking round: polls with a zero timeout (unless the [`wait`](Self::wait)
    /// just before it polled), gives every server a read turn within the
    /// [`Budget`](crate::Budget) (rotating start), starts a fleet step at `now` (timers,
    /// connect budget), carries out the fleet's connects and closes, and writes what each
    /// server has to send. Never sleeps, never resolves a name.
    ///
    /// The reads come before the timers, so that after a late step (a slow handler stalled
    /// the loop) an answer that arrived before its deadline counts, as on the async
    /// runtimes; what is really overdue still fires in the same step, before anything is
    /// written.
    ///
    /// Pass `Instant::now()`.
    pub fn step(&mut self, now: Instant) -> io::Result<FleetReport> {
        if !std::mem::take(&mut self.polled) {
            self.poll_into(Some(Duration::ZERO))?;
        }
        let woken = std::mem::take(&mut self.woken);
        self.opened = 0;
        if woken {
            self.take_answers(now);
        }
        let mut report = FleetReport {
            user: std::mem::take(&mut self.user),
            woken,
            ..FleetReport::default()
        };
        let mut step = self.scheduler.begin(self.conns.len());
        // Input before timers: a connect that completed, a banner, a Pong or an action's
        // answer already in a socket must not be timed out because the step came late.
        // (What calls left for this step, a close_all's closes, is carried out with the
        // timers' outputs below: a closed client ignores what is read meanwhile.)
        let registry = self.poll.registry();
        for index in step.order() {
            let Some((id, conn)) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let mut member = Member {
                fleet: &mut self.fleet,
                id: *id,
            };
            conn.finish_connect(now, &mut member, registry, Token(index));
            if conn.readable && matches!(conn.link, Link::Open(_)) {
                match step.turn(index) {
                    Some(mut turn) => {
                        let end = conn.read(now, &mut member, &mut turn, &mut self.buf);
                        report.more |= end == ReadEnd::Budget;
                        step.end_turn(turn);
                    }
                    None => report.more = true,
                }
            }
        }
        self.fleet.handle_timeout(now);
        self.carry_out(now, &mut report);
        self.connect_answered(now);
        report.more |= !self.answered.is_empty();
        // Timers before writes: an action whose deadline passed is withdrawn, not written
        // late.
        for index in step.order() {
            let Some((id, conn)) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let mut member = Member {
                fleet: &mut self.fleet,
                id: *id,
            };
            conn.write(now, &mut member);
        }
        self.scheduler.finish(step);
        self.carry_out(now, &mut report);
        self.more = report.more;
        report.events = self.fleet.has_events();
        Ok(report)
    }

    /// Applies lookup answers to every server at the names answered: a connect waiting for
    /// one starts at the first address (within the step's connect budget, see
    /// [`connect_answered`](Self::connect_answered)), or fails (`HostNotFound`) when the
    /// name did not resolve. A server between attempts finds the answer kept for its next attempt (the
    /// resolver keeps it).
    fn take_answers(&mut self, now: Instant) {
        let Some(resolver) = self.resolver.as_mut() else {
            return;
        };
        let answers = resolver.take_answers(now);
        if answers.is_empty() {
            return;
        }
        for (id, conn) in self.conns.iter_mut().flatten() {
            let Target::Host(host) = &conn.target else {
                continue;
            };
            let Some(result) = answers.get(host) else {
                continue;
            };
            conn.resolving = false;
            if !conn.want_connect || conn.resolved.is_some() {
                continue;
            }
            let mut member = Member {
                fleet: &mut self.fleet,
                id: *id,
            };
            match result {
                Ok(addrs) => {
                    conn.resolved_to(addrs.clone());
                    self.answered.push_back(*id);
                }
                Err(_) => {
                    conn.want_connect = false;
                    let cause = ConnectFailure::HostNotFound;
                    member.handle_input(now, Input::ConnectFailed(cause));
                }
            }
        }
    }

    /// Starts the connects of servers whose name was answered ([`take_answers`](Self::take_answers)),
    /// within what the step's connect budget has left; the rest wait for the next steps.
    fn connect_answered(&mut self, now: Instant) {
        let registry = self.poll.registry();
        while self.opened < self.connects_per_step {
            let Some(id) = self.answered.pop_front() else {
                return;
            };
            let Some((_, conn)) = self
                .conns
                .get_mut(id.index())
                .and_then(Option::as_mut)
                .filter(|(known, _)| *known == id)
            else {
                continue;
            };
            // Still waiting for this connect (not closed, timed out or connected meanwhile).
            if !conn.want_connect || conn.resolved.is_none() || !matches!(conn.link, Link::Idle) {
                continue;
            }
            let mut member = Member {
                fleet: &mut self.fleet,
                id,
            };
            conn.start_connect(now, &mut member, registry, Token(id.index()));
            self.opened += 1;
        }
    }

    /// Drains the fleet's outputs: connects are started (the fleet already applied the
    /// per-step connect budget), closes drop sockets, news go to the report.
    fn carry_out(&mut self, now: Instant, report: &mut FleetReport) {
        let registry = self.poll.registry();
        loop {
            match self.fleet.poll_output() {
                FleetOutput::Wait(_) => return,
                FleetOutput::Connect(id) => {
                    let Some((_, conn)) = self
                        .conns
                        .get_mut(id.index())
                        .and_then(Option::as_mut)
                        .filter(|(known, _)| *known == id)
                    else {
                        continue;
                    };
                    conn.want_connect_now(registry);
                    let mut member = Member {
                        fleet: &mut self.fleet,
                        id,
                    };
                    if conn.resolved.is_some() {
                        conn.start_connect(now, &mut member, registry, Token(id.index()));
                        self.opened += 1;
                        continue;
                    }
                    // A host name: a recent answer starts the connect now; otherwise the
                    // answer of the name's lookup (joined, or started) starts it. One
                    // lookup per name at a time: asking again would tie up another
                    // resolver thread behind a lookup that may hang, until none is left
                    // for other names.
                    if conn.resolving {
                        continue;
                    }
                    let lookup = match (&conn.target, self.resolver.as_mut()) {
                        (Target::Host(host), Some(r)) => r.lookup(now, host),
                        (Target::Host(_), None) => Lookup::Unavailable,
                        (Target::Addr(_), _) => continue,
                    };
                    match lookup {
                        Lookup::Addrs(addrs) => {
                            conn.resolved_to(addrs);
                            conn.start_connect(now, &mut member, registry, Token(id.index()));
                            self.opened += 1;
                        }
                        Lookup::Pending => conn.resolving = true,
                        Lookup::Unavailable => {
                            log::warn!(
                                "ami-mio: no resolver thread left; connect to {} failed",
                                conn.target
                            );
                            conn.want_connect = false;
                            let cause = ConnectFailure::Other(io::ErrorKind::Other);
                            member.handle_input(now, Input::ConnectFailed(cause));
                        }
                    }
                }
                FleetOutput::Close(id) => {
                    if let Some((_, conn)) = self
                        .conns
                        .get_mut(id.index())
                        .and_then(Option::as_mut)
                        .filter(|(known, _)| *known == id)
                    {
                        conn.drop_link(registry);
                    }
                }
                news => report.news.push(news),
            }
        }
    }
}
