//! The simulated server: sessions, virtual time, event delivery and faults.

use crate::actions::{self, Outcome};
use crate::calls::channel::ChannelRow;
use crate::calls::{CallId, CallRequest, Effect, Engine, EngineConfig, Origin};
use crate::classes::ClassMask;
use crate::clock::{later, WallClock};
use crate::config::{SimConfig, SimConfigError};
use crate::events::{Event, EventBuilder};
use crate::faults::{with_foreign_id, Decision, Fault, Faults};
use crate::input::{Inbound, Request};
use crate::out;
use crate::rng::SimRng;
use crate::session::{Block, Session};
use crate::stats::SimStats;
use crate::storm::{self, Storm};
use crate::{CloseReason, SessionId, SessionState};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A simulated Asterisk AMI server on virtual time (sans-IO).
///
/// Nothing here reads a clock, opens a socket or spawns a thread: the caller passes `now` to
/// every method that can make time pass, moves bytes with [`receive`](Self::receive) /
/// [`transmit`](Self::transmit) / [`advance_transmit`](Self::advance_transmit), and calls
/// [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout) says
/// so. Every entry point that takes `now` first runs whatever fell due before it, in time
/// order, so skipping ahead is the same as stepping through.
///
/// See the [crate documentation](crate) for an example and the list of behaviours.
#[derive(Debug)]
pub struct SimServer {
    pub(crate) cfg: SimConfig,
    pub(crate) clock: WallClock,
    /// When the server (re)started: `Uptime` and `core show uptime`.
    pub(crate) started: Instant,
    /// The latest time seen.
    pub(crate) now: Instant,
    pub(crate) rng: SimRng,
    pub(crate) sessions: BTreeMap<u64, Session>,
    next_session: u64,
    pub(crate) engine: Engine,
    pub(crate) faults: Faults,
    pub(crate) stats: SimStats,
    down_until: Option<Instant>,
    pub(crate) booted: bool,
    boot_at: Option<Instant>,
    foreign_seq: u64,
    /// The session whose action is running: its events are held until the reply is out.
    busy: Option<SessionId>,
    /// Sessions to pump once the current step is over.
    wake: Vec<SessionId>,
    /// The storm helpers' rendering buffers, kept between storms.
    storm: Storm,
}

/// Everything a write needs besides the session (split borrows of the server).
struct Writer<'a> {
    cfg: &'a SimConfig,
    faults: &'a Faults,
    rng: &'a mut SimRng,
    stats: &'a mut SimStats,
    now: Instant,
}

impl Writer<'_> {
    /// Queues one reply or event for the client (a reply of several messages is as many
    /// writes, see [`OutBuf::write`](crate::out::OutBuf::write)), with the garbage, reset and
    /// backlog faults.
    fn write(&mut self, s: &mut Session, bytes: &[u8]) {
        if !s.is_open() || s.half_open || self.faults.is_half_open_all() || bytes.is_empty() {
            return;
        }
        if self.faults.has_garbage() {
            if let Some(junk) = self.faults.garbage_before(self.rng) {
                self.stats.faults_injected += 1;
                self.put(s, &junk);
            }
        }
        if s.reset_armed {
            s.reset_armed = false;
            let cut =
                self.rng
                    .range(1, bytes.len().saturating_sub(1).max(1) as u64) as usize;
            self.put(s, &bytes[..cut.min(bytes.len())]);
            s.was_reset = true;
            close_session(s, CloseReason::Fault, self.cfg, self.stats);
            return;
        }
        self.put(s, bytes);
        if s.backlog() > self.cfg.max_backlog {
            self.stats.slow_reader_closes += 1;
            close_session(s, CloseReason::SlowReader, self.cfg, self.stats);
        }
    }

    /// Delivers one broadcast event to a session that wants it: queued, or held while the
    /// session is busy (closing it when that passes its backlog cap).
    fn offer(
        &mut self,
        s: &mut Session,
        busy: Option<SessionId>,
        class: ClassMask,
        name: &str,
        bytes: &[u8],
    ) {
        if !s.wants(class, name, bytes) {
            return;
        }
        self.stats.events_delivered += 1;
        if s.block.is_some() || busy == Some(s.id) {
            if s.half_open || self.faults.is_half_open_all() {
                return;
            }
            s.held_bytes += bytes.len();
            s.held.push_back(bytes.to_vec());
            if s.backlog() > self.cfg.max_backlog {
                self.stats.slow_reader_closes += 1;
                close_session(s, CloseReason::SlowReader, self.cfg, self.stats);
            }
        } else {
            self.write(s, bytes);
        }
    }

    /// Whether writing `len` bytes (any number of messages) to the session now takes no
    /// fault, blocked write or backlog-cap decision: then [`put_fitting`](Self::put_fitting)
    /// does what writing them one by one would.
    fn fits(&self, s: &Session, len: usize) -> bool {
        s.is_open()
            && !s.half_open
            && !s.reset_armed
            && !self.faults.is_half_open_all()
            && !self.faults.has_garbage()
            && s.out.fits(len, self.cfg.socket_buffer)
            && s.backlog().saturating_add(len) <= self.cfg.max_backlog
    }

    /// Queues messages that [`fit`](Self::fits), back to back in `bytes`.
    fn put_fitting(&mut self, s: &mut Session, bytes: &[u8]) {
        s.out.write_fitting(bytes);
        self.stats.bytes_queued += bytes.len() as u64;
    }

    fn put(&mut self, s: &mut Session, bytes: &[u8]) {
        s.out.write(bytes, self.now, self.cfg.socket_buffer);
        self.stats.bytes_queued += bytes.len() as u64;
    }

    /// Delivers the events held while the session was busy.
    fn flush_held(&mut self, s: &mut Session) {
        while let Some(ev) = s.held.pop_front() {
            s.held_bytes -= ev.len();
            self.write(s, &ev);
            if !s.is_open() {
                break;
            }
        }
        s.held.clear();
        s.held_bytes = 0;
    }
}

/// Closes a session. What is queued stays readable (EOF after it), except that a slow
/// reader keeps only what the kernel already held, and a client close drops everything
/// (unless the client only shut down its sending side: then it still reads the rest).
fn close_session(s: &mut Session, reason: CloseReason, cfg: &SimConfig, stats: &mut SimStats) {
    if !s.is_open() {
        return;
    }
    log::debug!("ami-sim: session {} closed: {reason:?}", s.id.0);
    if reason == CloseReason::Logoff {
        stats.logoffs += 1;
    }
    s.state = SessionState::Closed(reason);
    s.inbox.clear();
    s.held.clear();
    s.held_bytes = 0;
    s.block = None;
    match reason {
        CloseReason::SlowReader => s.out.truncate_pending(cfg.socket_buffer),
        CloseReason::ClientClosed if !s.read_eof => s.out.clear(),
        _ => s.out.truncate_pending(usize::MAX),
    }
}

impl SimServer {
    /// A server that starts at `now` (the origin of its virtual clock).
    ///
    /// # Panics
    ///
    /// If `config` cannot work ([`SimConfig::validate`]): a test that writes its config out
    /// learns at once, not from a simulator that refuses every connection. A config that
    /// comes from input goes through [`try_new`](Self::try_new) or
    /// [`SimConfig::builder`].
    #[allow(clippy::panic)] // Documented above; `try_new` is the fallible form.
    pub fn new(config: SimConfig, now: Instant) -> SimServer {
        match SimServer::try_new(config, now) {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// A server that starts at `now`, or why `config` cannot work.
    pub fn try_new(config: SimConfig, now: Instant) -> Result<SimServer, SimConfigError> {
        config.validate()?;
        Ok(SimServer::from_valid(config, now))
    }

    fn from_valid(config: SimConfig, now: Instant) -> SimServer {
        let clock = WallClock::new(now, config.start_unix);
        let engine = Engine::new(
            EngineConfig {
                step: config.step_delay,
                echo_timeout: config.echo_timeout,
                system_name: config.system_name.clone(),
                max_calls: config.max_calls,
            },
            clock,
            now,
        );
        let booted = config.fully_booted;
        let boot_at = (!booted).then(|| later(now, config.boot_delay));
        SimServer {
            rng: SimRng::new(config.seed),
            cfg: config,
            clock,
            started: now,
            now,
            sessions: BTreeMap::new(),
            next_session: 1,
            engine,
            faults: Faults::default(),
            stats: SimStats::default(),
            down_until: None,
            booted,
            boot_at,
            foreign_seq: 0,
            busy: None,
            wake: Vec::new(),
            storm: Storm::default(),
        }
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The latest virtual time the server has seen.
    pub fn now(&self) -> Instant {
        self.now
    }

    fn writer(&mut self) -> (Writer<'_>, &mut BTreeMap<u64, Session>) {
        (
            Writer {
                cfg: &self.cfg,
                faults: &self.faults,
                rng: &mut self.rng,
                stats: &mut self.stats,
                now: self.now,
            },
            &mut self.sessions,
        )
    }

    /// Writes to one session.
    pub(crate) fn write_to(&mut self, sid: SessionId, bytes: &[u8]) {
        let (mut w, sessions) = self.writer();
        if let Some(s) = sessions.get_mut(&sid.0) {
            w.write(s, bytes);
        }
    }

    /// Closes one session.
    pub(crate) fn close(&mut self, sid: SessionId, reason: CloseReason) {
        if let Some(s) = self.sessions.get_mut(&sid.0) {
            close_session(s, reason, &self.cfg, &mut self.stats);
        }
    }

    /// A client connected. The banner is queued, unless the server is down (restarting) or
    /// `authlimit` unauthenticated sessions exist: then the session is closed at once with
    /// nothing to read.
    pub fn accept(&mut self, now: Instant) -> SessionId {
        let (local, peer) = crate::session::virtual_addresses(SessionId(self.next_session));
        self.accept_from(now, local, peer)
    }

    /// A connection the [`TcpFront`](crate::tcp::TcpFront) closed at once without showing
    /// it to the server (it holds its most connections already): counted as accepted and
    /// refused, as an `authlimit` refusal is.
    pub(crate) fn refused_by_front(&mut self) {
        self.stats.sessions_accepted += 1;
        self.stats.sessions_refused += 1;
    }

    /// [`accept`](Self::accept) for a real connection: `local` and `peer` are its two ends,
    /// which security events (`LocalAddress`, `RemoteAddress`) and `manager show connected`
    /// report as Asterisk does, so that a tool watching for failed logins sees the address
    /// that really tried.
    pub fn accept_from(&mut self, now: Instant, local: SocketAddr, peer: SocketAddr) -> SessionId {
        self.run_until(now);
        let sid = SessionId(self.next_session);
        self.next_session += 1;
        self.stats.sessions_accepted += 1;
        let mut s = Session::new(sid, self.now, local, peer);
        let down = self.down_until.is_some_and(|t| self.now < t);
        let unauth = self
            .sessions
            .values()
            .filter(|s| s.is_open() && !s.logged_in())
            .count();
        if down || unauth >= self.cfg.auth_limit {
            s.state = SessionState::Closed(if down {
                CloseReason::Shutdown
            } else {
                CloseReason::AuthLimit
            });
            self.stats.sessions_refused += 1;
            self.sessions.insert(sid.0, s);
            return sid;
        }
        self.sessions.insert(sid.0, s);
        let banner = format!("Asterisk Call Manager/{}\r\n", self.cfg.ami_version);
        self.write_to(sid, banner.as_bytes());
        self.settle();
        sid
    }

    /// Bytes the client wrote. Ignored for closed or half-open sessions, and after
    /// [`client_eof`](Self::client_eof).
    ///
    /// An idle session handles them as they come; what is left when it gets busy (a sync
    /// Originate, a delayed reply) waits in its input backlog, and bytes beyond
    /// `max_input_backlog` there are dropped and counted
    /// ([`SimStats::input_bytes_dropped`]), so the next message may arrive cut. A caller
    /// that reads a socket should read no more than [`input_room`](Self::input_room) and
    /// leave the rest to TCP flow control, as [`TcpFront`](crate::tcp::TcpFront) does.
    pub fn receive(&mut self, s: SessionId, now: Instant, bytes: &[u8]) {
        self.run_until(now);
        let mut rest = bytes;
        // A backlog's worth at a time: an idle session handles each piece before the next
        // is queued, so only what arrives while it is busy counts against the cap.
        while !rest.is_empty() {
            let room = self.input_room(s);
            if room == usize::MAX {
                // Closed, half-open or past EOF: ignored.
                return;
            }
            let take = room.min(rest.len());
            if take == 0 {
                self.stats.input_bytes_dropped += rest.len() as u64;
                log::warn!(
                    "ami-sim: session {} input backlog full; {} bytes dropped",
                    s.0,
                    rest.len()
                );
                return;
            }
            if let Some(sess) = self.sessions.get_mut(&s.0) {
                sess.inbox.extend(&rest[..take]);
            }
            rest = &rest[take..];
            self.pump(s);
            self.settle();
        }
    }

    /// How many bytes [`receive`](Self::receive) takes for session `s` now without dropping
    /// any: the room left in its input backlog (`max_input_backlog` less what waits there
    /// while the session is busy; at least 1 while it is idle, since an idle session takes
    /// input as it comes). 0 while a busy session's backlog is full: a front reading a
    /// socket then stops reading it, so that the client's bytes wait in the kernel and TCP
    /// flow control holds the client back, as with a busy Asterisk, which reads nothing
    /// until its action is done. `usize::MAX` when the input is ignored (closed, half-open,
    /// after EOF or unknown sessions): reading then only drains the socket.
    pub fn input_room(&self, s: SessionId) -> usize {
        let Some(sess) = self.sessions.get(&s.0) else {
            return usize::MAX;
        };
        if !sess.is_open() || sess.half_open || sess.read_eof || self.faults.is_half_open_all() {
            return usize::MAX;
        }
        let room = self.cfg.max_input_backlog.saturating_sub(sess.inbox.len());
        if sess.block.is_none() {
            room.max(1)
        } else {
            room
        }
    }

    /// Bytes queued for the client (at most the max-chunk fault's size). Empty while the
    /// session is half-open. After a close the rest stays readable, then this is empty (EOF).
    pub fn transmit(&self, s: SessionId) -> &[u8] {
        let Some(sess) = self.sessions.get(&s.0) else {
            return &[];
        };
        if sess.is_open() && (sess.half_open || self.faults.is_half_open_all()) {
            return &[];
        }
        let pending = sess.out.pending();
        match self.faults.max_chunk() {
            Some(n) => &pending[..n.min(pending.len())],
            None => pending,
        }
    }

    /// The client read `n` bytes of [`transmit`](Self::transmit) (clamped). The write
    /// timeout clock uses the latest time the server has seen.
    pub fn advance_transmit(&mut self, s: SessionId, n: usize) {
        let now = self.now;
        let window = self.cfg.socket_buffer;
        if let Some(sess) = self.sessions.get_mut(&s.0) {
            let n = n.min(sess.out.backlog());
            let taken = sess.out.advance(n, now, window);
            self.stats.bytes_transmitted += taken as u64;
        }
    }

    /// The client closed its end (or the connection broke). Queued output is dropped;
    /// calls it started go on.
    pub fn client_closed(&mut self, s: SessionId, now: Instant) {
        self.run_until(now);
        if let Some(sess) = self.sessions.get_mut(&s.0) {
            if sess.read_eof {
                // It had only shut down its sending side; now it reads nothing either.
                sess.read_eof = false;
                sess.out.clear();
            }
        }
        self.close(s, CloseReason::ClientClosed);
        self.settle();
    }

    /// The client shut down its sending side (the server read EOF) but may still read.
    /// Like Asterisk, which notices EOF only when it next reads, the session first handles
    /// every complete message already received (after a sync Originate or a delayed reply
    /// in progress, if any), then closes ([`CloseReason::ClientClosed`]) with its queued
    /// output still readable; [`is_eof`](Self::is_eof) once that is read. An unfinished
    /// last message is discarded. A half-open session closes at once, as on
    /// [`client_closed`](Self::client_closed).
    pub fn client_eof(&mut self, s: SessionId, now: Instant) {
        self.run_until(now);
        let half_all = self.faults.is_half_open_all();
        let Some(sess) = self.sessions.get_mut(&s.0) else {
            return;
        };
        if !sess.is_open() {
            return;
        }
        if sess.half_open || half_all {
            self.close(s, CloseReason::ClientClosed);
        } else {
            sess.read_eof = true;
            self.pump(s);
        }
        self.settle();
    }

    /// Whether the session is open, and why it closed.
    pub fn session_state(&self, s: SessionId) -> SessionState {
        self.sessions
            .get(&s.0)
            .map_or(SessionState::Unknown, |x| x.state)
    }

    /// True once the session is closed and everything readable was read: the client sees EOF.
    pub fn is_eof(&self, s: SessionId) -> bool {
        self.sessions
            .get(&s.0)
            .is_none_or(|x| !x.is_open() && x.out.backlog() == 0)
    }

    /// Forgets a closed session entirely (its id then reports [`SessionState::Unknown`]).
    /// Open sessions are kept. Use it to bound memory in long runs.
    pub fn forget(&mut self, s: SessionId) {
        if self.sessions.get(&s.0).is_some_and(|x| !x.is_open()) {
            self.sessions.remove(&s.0);
        }
    }

    /// Runs everything due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_until(now);
    }

    /// The next internal deadline: call steps, delayed replies, the 1 s auth-failure delay,
    /// auth timeouts, write timeouts, boot, planned faults.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline().map(|(t, _)| t)
    }

    /// Mutable access to the fault settings.
    pub fn faults(&mut self) -> &mut Faults {
        &mut self.faults
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        let mut s = self.stats;
        s.sessions_open = self.sessions.values().filter(|x| x.is_open()).count();
        let c = self.engine.counters;
        s.calls_started = c.started;
        s.calls_answered = c.answered;
        s.calls_failed = c.failed;
        s.calls_active = self.engine.active();
        s
    }

    /// Names of the live channels, oldest call first.
    pub fn channels(&self) -> Vec<String> {
        self.engine.channels().map(|c| c.name.clone()).collect()
    }

    /// The simulator's own channel table, oldest call first: what a client's call view
    /// must equal once every event has reached it.
    pub fn channel_table(&self) -> Vec<ChannelRow> {
        self.engine
            .channels()
            .map(|c| ChannelRow {
                uniqueid: c.uniqueid.clone(),
                linkedid: c.linkedid.clone(),
                name: c.name.clone(),
                state: c.state.code(),
                caller_id_num: String::from_utf8_lossy(c.cid_num_text()).into_owned(),
                context: c.context.clone(),
                exten: c.exten.clone(),
                variables: c.vars.clone(),
            })
            .collect()
    }

    /// Bytes of session `s` the client has not read yet, events held while it is busy
    /// included; 0 when everything the server said has been read.
    pub fn undelivered(&self, s: SessionId) -> usize {
        self.sessions.get(&s.0).map_or(0, |x| x.backlog())
    }

    /// Whether session `s` is half-open ([`Fault::HalfOpen`]): what it "sends" is lost
    /// until the client notices.
    pub fn is_half_open(&self, s: SessionId) -> bool {
        self.faults.is_half_open_all() || self.sessions.get(&s.0).is_some_and(|x| x.half_open)
    }

    /// Restarts Asterisk: `Event: Shutdown` (`Shutdown: Cleanly`, `Restart: True`) to every
    /// logged-in session that reads system events, every session closed
    /// ([`CloseReason::Shutdown`]), every call dropped, connections refused for `down_for`,
    /// then accepted again.
    pub fn restart(&mut self, now: Instant, down_for: Duration) {
        self.run_until(now);
        self.do_restart(down_for, true);
        self.settle();
    }

    fn do_restart(&mut self, down_for: Duration, restart: bool) {
        let ev = EventBuilder::new(
            "Shutdown",
            ClassMask::SYSTEM,
            self.cfg.system_name.as_deref(),
        )
        .field("Shutdown", "Cleanly")
        .field("Restart", if restart { "True" } else { "False" })
        .build();
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            let wants = self
                .sessions
                .get(&id)
                .is_some_and(|s| s.wants(ev.class, &ev.name, &ev.bytes));
            if wants {
                self.write_to(SessionId(id), &ev.bytes);
            }
            self.close(SessionId(id), CloseReason::Shutdown);
        }
        self.engine.clear();
        let up = later(self.now, down_for);
        self.down_until = Some(up);
        self.started = up;
        self.booted = self.cfg.fully_booted;
        self.boot_at = (!self.booted).then(|| later(up, self.cfg.boot_delay));
        self.stats.restarts += 1;
    }

    /// Whether the server is down at `now` (restarting: connections refused, no calls).
    pub fn is_down(&mut self, now: Instant) -> bool {
        self.run_until(now);
        self.down_until.is_some_and(|t| self.now < t)
    }

    /// Starts a call as if another connection had sent an async Originate (a "driver").
    /// `None` when `maxcalls` is reached, or while the server is down (a restarting
    /// Asterisk places no calls).
    pub fn originate_call(&mut self, now: Instant, req: CallRequest) -> Option<CallId> {
        if self.is_down(now) {
            return None;
        }
        let (cid_name, cid_num) = match &req.caller_id {
            Some(c) => crate::calls::channel::parse_callerid(c),
            None => (None, None),
        };
        let origin = Origin {
            session: None,
            action_id: req.action_id.clone(),
            sync: false,
            report: req.report,
            target: req.target.clone(),
            cid_num,
            cid_name,
            timeout: req.timeout,
            channel_id: req.channel_id.clone(),
            other_channel_id: None,
            vars: req.variables.clone(),
            account: String::new(),
        };
        let origin = self.apply_cid_fault(origin);
        let mut fx = Vec::new();
        let id = self
            .engine
            .originate(self.now, &req.channel, origin, &mut fx)
            .ok();
        self.apply_effects(fx);
        self.settle();
        id
    }

    /// The non-UTF-8 caller name fault, applied to a new call.
    pub(crate) fn apply_cid_fault(&mut self, mut origin: Origin) -> Origin {
        if self.faults.is_non_utf8_caller_names() {
            self.stats.faults_injected += 1;
            origin.cid_name = Some(b"Jos\xe9 Garc\xeda".to_vec());
            if origin.cid_num.is_none() {
                origin.cid_num = Some("5550100".to_string());
            }
        }
        origin
    }

    /// Hangs up a call started with [`originate_call`](Self::originate_call) (or any call).
    /// False when it is already over.
    pub fn hangup_call(&mut self, now: Instant, id: CallId) -> bool {
        self.run_until(now);
        let mut fx = Vec::new();
        let found = self.engine.hangup_call(self.now, id, &mut fx);
        self.apply_effects(fx);
        self.settle();
        found
    }

    /// Broadcasts `n` UserEvents (`UserEvent: SimStorm`, `Seq: i`) at once: an event storm.
    pub fn emit_user_events(&mut self, now: Instant, n: usize) {
        self.emit_user_events_from(now, 0, n);
    }

    /// Like [`emit_user_events`](Self::emit_user_events), numbered `first..first + n`: a
    /// steady stream made of many small storms keeps one running `Seq`, so whoever reads it
    /// can tell a lost event from a new storm.
    pub fn emit_user_events_from(&mut self, now: Instant, first: usize, n: usize) {
        self.run_until(now);
        self.storm(first, first.saturating_add(n), None);
        self.settle();
    }

    /// Like [`emit_user_events`](Self::emit_user_events), each event `event_bytes` long on
    /// the wire (a busy Asterisk's events average about 500 bytes; the plain storm's are
    /// about 75): the fields of a channel, as most events carry, then a `Pad` field to the
    /// size (a smaller size gets an empty `Pad`).
    pub fn emit_user_events_sized(&mut self, now: Instant, n: usize, event_bytes: usize) {
        self.run_until(now);
        self.storm(0, n, Some(event_bytes));
        self.settle();
    }

    /// Renders and broadcasts a storm of events `first..end`, a run of events at a time
    /// (see [`Storm`]).
    fn storm(&mut self, first: usize, end: usize, event_bytes: Option<usize>) {
        if self.storm_readers() == 0 {
            // Emitted to nobody: rendering them would only burn the CPU (`ami sim` with no
            // client spent a core on it).
            self.stats.events_emitted += end.saturating_sub(first) as u64;
            return;
        }
        let mut storm = std::mem::take(&mut self.storm);
        storm.prepare(self.cfg.system_name.as_deref(), event_bytes);
        let mut seq = first;
        while seq < end {
            seq = storm.render(seq, end);
            self.broadcast_run(&storm);
        }
        self.storm = storm;
    }

    /// Sessions that a storm of UserEvents reaches now (logged in, events on, reading the
    /// `user` class). With none, [`emit_user_events`](Self::emit_user_events) and its kin
    /// only count the events.
    pub fn storm_readers(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.reads(storm::CLASS))
            .count()
    }

    /// Applies a one-shot fault now.
    pub fn inject(&mut self, now: Instant, fault: Fault) {
        self.run_until(now);
        self.apply_fault(fault);
        self.settle();
    }

    fn targets(&self, session: Option<SessionId>) -> Vec<u64> {
        match session {
            Some(s) => vec![s.0],
            None => self
                .sessions
                .iter()
                .filter(|(_, s)| s.is_open())
                .map(|(id, _)| *id)
                .collect(),
        }
    }

    fn apply_fault(&mut self, fault: Fault) {
        self.stats.faults_injected += 1;
        log::debug!("ami-sim: fault {fault:?}");
        match fault {
            Fault::Restart { down_for } => self.do_restart(down_for, true),
            Fault::EventStorm { count } => self.storm(0, count, None),
            Fault::HalfOpen { session } => {
                for id in self.targets(session) {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.half_open = true;
                    }
                }
            }
            Fault::Resume { session } => {
                for id in self.targets(session) {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.half_open = false;
                    }
                    self.wake.push(SessionId(id));
                }
            }
            Fault::ResetMidMessage { session } => {
                for id in self.targets(session) {
                    let Some(s) = self.sessions.get_mut(&id) else {
                        continue;
                    };
                    if !s.is_open() {
                        continue;
                    }
                    let backlog = s.out.backlog();
                    if backlog >= 2 {
                        let cut = self.rng.range(1, backlog as u64 - 1) as usize;
                        s.out.truncate_pending(cut);
                        s.was_reset = true;
                        close_session(s, CloseReason::Fault, &self.cfg, &mut self.stats);
                    } else {
                        s.reset_armed = true;
                    }
                }
            }
        }
    }

    // ----- time -----

    fn next_deadline(&self) -> Option<(Instant, Due)> {
        let mut best: Option<(Instant, Due)> = None;
        let mut offer = |t: Instant, d: Due| {
            if best.as_ref().is_none_or(|(b, _)| t < *b) {
                best = Some((t, d));
            }
        };
        if let Some(t) = self.faults.next_planned() {
            offer(t, Due::Plan);
        }
        if let Some(t) = self.boot_at {
            offer(t, Due::Boot);
        }
        let half_all = self.faults.is_half_open_all();
        for (id, s) in &self.sessions {
            if !s.is_open() {
                continue;
            }
            if let Some(Block::Until { at, .. }) = &s.block {
                offer(*at, Due::Reply(*id));
            }
            if !s.logged_in() {
                offer(
                    later(s.accepted, self.cfg.auth_timeout),
                    Due::AuthTimeout(*id),
                );
            }
            // A half-open session sends nothing, so it has no write in progress either.
            if !(s.half_open || half_all) {
                if let Some(t) = s.out.deadline(self.cfg.write_timeout) {
                    offer(t, Due::SlowReader(*id));
                }
            }
        }
        if let Some(t) = self.engine.next_deadline() {
            offer(t, Due::Call);
        }
        best
    }

    fn run_until(&mut self, now: Instant) {
        // A generous bound on work per call, so a bug cannot spin forever.
        let mut budget: u64 = 50_000_000;
        while let Some((t, due)) = self.next_deadline() {
            if t > now || budget == 0 {
                break;
            }
            budget -= 1;
            if t > self.now {
                self.now = t;
            }
            self.fire(due);
            self.settle();
        }
        if now > self.now {
            self.now = now;
        }
    }

    fn fire(&mut self, due: Due) {
        let now = self.now;
        match due {
            Due::Plan => {
                if let Some((_, fault)) = self.faults.pop_due(now) {
                    self.apply_fault(fault);
                }
            }
            Due::Boot => {
                self.boot_at = None;
                self.booted = true;
                let ev = EventBuilder::new("FullyBooted", ClassMask::SYSTEM, None)
                    .field("Status", "Fully Booted")
                    .field("Uptime", self.uptime().to_string())
                    .field("LastReload", self.uptime().to_string())
                    .build();
                self.broadcast(&ev);
            }
            Due::Reply(id) => {
                let sid = SessionId(id);
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                let Some(Block::Until { reply, close, .. }) = s.block.take() else {
                    return;
                };
                self.write_to(sid, &reply);
                match close {
                    Some(reason) => self.close(sid, reason),
                    None => self.finish_busy(sid),
                }
            }
            Due::AuthTimeout(id) => self.close(SessionId(id), CloseReason::AuthTimeout),
            Due::SlowReader(id) => {
                self.stats.slow_reader_closes += 1;
                self.close(SessionId(id), CloseReason::SlowReader);
            }
            Due::Call => {
                let mut fx = Vec::new();
                self.engine.fire_one(now, &mut fx);
                self.apply_effects(fx);
            }
        }
    }

    /// Seconds since the server (re)started.
    pub(crate) fn uptime(&self) -> u64 {
        self.now.saturating_duration_since(self.started).as_secs()
    }

    // ----- events -----

    /// Broadcasts an event to every session that reads its class and passes its filters.
    pub(crate) fn broadcast(&mut self, ev: &Event) {
        self.stats.events_emitted += 1;
        let busy = self.busy;
        let (mut w, sessions) = self.writer();
        for s in sessions.values_mut() {
            w.offer(s, busy, ev.class, &ev.name, &ev.bytes);
        }
    }

    /// Broadcasts a storm's current run. The class decision is taken once per session for
    /// the run (every storm event has the same class and name); a session without filters
    /// that is not busy and takes the whole run without a blocked write, a fault or its
    /// backlog cap gets it in one append, which is what the events one by one would do.
    /// Any other session gets them one by one (filters see each event's text).
    fn broadcast_run(&mut self, storm: &Storm) {
        let n = storm.ends.len() as u64;
        self.stats.events_emitted += n;
        let busy = self.busy;
        let (mut w, sessions) = self.writer();
        for s in sessions.values_mut() {
            if !s.reads(storm::CLASS) {
                continue;
            }
            let held = s.block.is_some() || busy == Some(s.id);
            if !held && s.filters.is_empty() && w.fits(s, storm.run.len()) {
                w.stats.events_delivered += n;
                w.put_fitting(s, &storm.run);
                continue;
            }
            for ev in storm.events() {
                w.offer(s, busy, storm::CLASS, storm::NAME, ev);
            }
        }
    }

    /// Broadcasts a `Burst`'s `n` UserEvents, `head` then `Seq: i`, one at a time. Once no
    /// session reads user events (none did, or the burst closed them all as slow readers)
    /// the rest are counted, not built, as a storm's are: they would reach nobody.
    fn broadcast_burst(&mut self, head: Vec<u8>, n: usize) {
        let head_len = head.len();
        let mut ev = Event {
            name: "UserEvent".to_string(),
            class: ClassMask::USER,
            bytes: head,
        };
        for seq in 0..n {
            if !self.sessions.values().any(|s| s.reads(ClassMask::USER)) {
                self.stats.events_emitted += (n - seq) as u64;
                return;
            }
            ev.bytes.truncate(head_len);
            ev.bytes.extend_from_slice(b"Seq: ");
            ev.bytes.extend_from_slice(seq.to_string().as_bytes());
            ev.bytes.extend_from_slice(b"\r\n\r\n");
            self.broadcast(&ev);
        }
    }

    /// Broadcasts call events and answers sync Originates.
    pub(crate) fn apply_effects(&mut self, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::Event(ev) => self.broadcast(&ev),
                Effect::Burst { head, n } => self.broadcast_burst(head, n),
                Effect::SyncDone {
                    session,
                    action_id,
                    ok,
                } => {
                    let blocked = self
                        .sessions
                        .get(&session.0)
                        .is_some_and(|s| s.is_open() && matches!(s.block, Some(Block::Call)));
                    if !blocked {
                        continue;
                    }
                    if let Some(s) = self.sessions.get_mut(&session.0) {
                        s.block = None;
                    }
                    let reply = if ok {
                        out::ack(action_id.as_deref(), "Originate successfully queued")
                    } else {
                        out::error(action_id.as_deref(), "Originate failed")
                    };
                    self.write_to(session, &reply);
                    self.finish_busy(session);
                }
            }
        }
    }

    /// The session is idle again: deliver held events, then read its next actions (later).
    fn finish_busy(&mut self, sid: SessionId) {
        let (mut w, sessions) = self.writer();
        if let Some(s) = sessions.get_mut(&sid.0) {
            w.flush_held(s);
        }
        self.wake.push(sid);
    }

    /// Pumps the sessions that became idle.
    fn settle(&mut self) {
        while let Some(sid) = self.wake.pop() {
            self.pump(sid);
        }
    }

    // ----- actions -----

    /// Handles the client's input until it runs out or the session gets busy.
    fn pump(&mut self, sid: SessionId) {
        loop {
            let half_all = self.faults.is_half_open_all();
            let Some(s) = self.sessions.get_mut(&sid.0) else {
                return;
            };
            if !s.is_open() || s.block.is_some() || s.half_open || half_all {
                return;
            }
            let Some(inbound) = s.framer.next(&mut s.inbox) else {
                if s.read_eof {
                    // Every complete message is handled: now the session notices EOF.
                    close_session(s, CloseReason::ClientClosed, &self.cfg, &mut self.stats);
                }
                return;
            };
            self.stats.actions += 1;
            match inbound {
                Inbound::TooManyLines(lines) => {
                    let id = Request::action_id_in(&lines);
                    let reply = out::error(
                        id.as_deref(),
                        "Too many lines in message or allocation failure",
                    );
                    self.write_to(sid, &reply);
                }
                Inbound::LineTooLong(lines) => {
                    let id = Request::action_id_in(&lines);
                    let reply = out::error(id.as_deref(), "Failed to parse message: line too long");
                    self.write_to(sid, &reply);
                }
                Inbound::Message(lines) => {
                    let req = s.parser.parse(lines);
                    self.process(sid, &req);
                }
            }
        }
    }

    fn process(&mut self, sid: SessionId, req: &Request) {
        let now = self.now;
        let Some(action) = req.action() else {
            let reply = out::error(req.action_id().as_deref(), "Missing action in request");
            self.write_to(sid, &reply);
            return;
        };
        let decision = self.faults.decide(&action, &mut self.rng);
        if decision.drop {
            self.stats.actions_dropped += 1;
            self.stats.faults_injected += 1;
            return;
        }
        self.busy = Some(sid);
        let outcome = actions::dispatch(self, sid, req, &action, now);
        self.busy = None;
        self.apply_outcome(sid, outcome, decision);
    }

    fn transform(&mut self, reply: Vec<u8>, d: Decision) -> Vec<u8> {
        let mut reply = reply;
        if d.foreign_id {
            self.foreign_seq += 1;
            self.stats.faults_injected += 1;
            reply = with_foreign_id(&reply, &format!("foreign-{}", self.foreign_seq));
        }
        if d.duplicate {
            self.stats.faults_injected += 1;
            let copy = reply.clone();
            reply.extend_from_slice(&copy);
        }
        reply
    }

    fn apply_outcome(&mut self, sid: SessionId, outcome: Outcome, d: Decision) {
        let now = self.now;
        if d.delay.is_some() {
            self.stats.faults_injected += 1;
        }
        let (reply, at, close) = match outcome {
            Outcome::Reply(r) => (r, now, None),
            Outcome::Close(r, reason) => (r, now, Some(reason)),
            Outcome::Later { at, reply, close } => (reply, at, close),
            Outcome::WaitCall => {
                if let Some(s) = self.sessions.get_mut(&sid.0) {
                    if s.is_open() {
                        s.block = Some(Block::Call);
                    }
                }
                return;
            }
        };
        let reply = self.transform(reply, d);
        let at = later(at, d.delay.unwrap_or(Duration::ZERO));
        if at > now {
            if let Some(s) = self.sessions.get_mut(&sid.0) {
                if s.is_open() {
                    s.block = Some(Block::Until { at, reply, close });
                }
            }
            return;
        }
        self.write_to(sid, &reply);
        match close {
            Some(reason) => self.close(sid, reason),
            None => {
                let (mut w, sessions) = self.writer();
                if let Some(s) = sessions.get_mut(&sid.0) {
                    w.flush_held(s);
                }
            }
        }
    }

    /// Starts an originated call for a session's action.
    pub(crate) fn start_call(
        &mut self,
        dial: &str,
        origin: Origin,
    ) -> Result<CallId, crate::calls::StartError> {
        let origin = self.apply_cid_fault(origin);
        let mut fx = Vec::new();
        let r = self.engine.originate(self.now, dial, origin, &mut fx);
        self.apply_effects(fx);
        r
    }

    /// Session by id.
    pub(crate) fn session(&self, sid: SessionId) -> Option<&Session> {
        self.sessions.get(&sid.0)
    }

    /// Session by id, mutable.
    pub(crate) fn session_mut(&mut self, sid: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(&sid.0)
    }

    /// A fresh MD5 challenge (9 digits).
    pub(crate) fn challenge(&mut self) -> String {
        self.rng.range(100_000_000, 999_999_999).to_string()
    }
}

/// What fell due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Plan,
    Boot,
    Reply(u64),
    AuthTimeout(u64),
    SlowReader(u64),
    Call,
}
