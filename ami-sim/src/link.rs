//! One [`ami_proto::Client`] joined to a [`SimServer`] on virtual time: the adapter your
//! tests would otherwise write themselves.
//!
//! A [`Link`] does what a real adapter (`ami-tokio`, `ami-mio`) does around the sans-IO
//! client, with the simulator in place of the socket and a virtual clock in place of the real
//! one: the client's [`Output::Connect`] opens a new simulated session
//! ([`SimServer::accept`]; refused, [`ConnectFailure::Refused`], while the server is down
//! restarting), [`Output::Close`] closes it ([`SimServer::client_closed`]), bytes move both
//! ways with `transmit`/`advance_transmit` on both sides (no more than the session's
//! [`input_room`](SimServer::input_room) at a time, nothing buffered in between), an EOF
//! from the server is reported to the client, and the client reconnects by itself after a
//! restart or a fault.
//! Virtual time only moves when you ask: [`Link::step`] jumps to the next deadline of either
//! side, [`Link::run_until`]/[`Link::run_for`] run to an instant, and
//! [`Link::run_until_complete`] runs until one action's outcome is known. Nothing blocks and
//! nothing reads the real clock: the one `Instant` is the `start` you pass in, so a run is
//! the same for the same seeds ([`ClientConfigBuilder::seed`](ami_proto::ClientConfigBuilder::seed),
//! [`SimConfig::seed`]) and the same calls.
//!
//! The client's [`Notice`]s (Ready, Completed, Disconnected, Closed) are collected with the
//! virtual instant they came out at ([`Link::notices`], [`Link::take_notices`]). Events are
//! left in the client for your consumer: read them with
//! [`link.client_mut().poll_event()`](ami_proto::Client::poll_event). The link never reads
//! them, so a test that does not read them sees the client's bounded queue fill and
//! [`StreamItem::Gap`](ami_proto::StreamItem::Gap)s, exactly as a slow consumer would.
//!
//! ```
//! use ami_proto::{Action, ClientConfig, Notice, StreamItem};
//! use ami_sim::link::Link;
//! use ami_sim::{Fault, SimConfig};
//! use std::time::{Duration, Instant};
//!
//! let start = Instant::now(); // the only clock read: everything after is virtual
//! let config = ClientConfig::builder("admin", "amp111").seed(7).build()?;
//! let mut link = Link::with_configs(config, SimConfig::default(), start);
//!
//! // Login: Connect, banner and Login take no virtual time on the simulated link.
//! assert!(link.run_until_ready(start + Duration::from_secs(5)));
//!
//! // Ping.
//! let ping = link.send(Action::new("Ping"))?;
//! let pong = link.run_until_complete(&ping, link.now() + Duration::from_secs(5));
//! let pong = pong.ok_or("no answer to Ping")??;
//! assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
//!
//! // An async Originate completes with its OriginateResponse, once the call is answered.
//! let call = link.send(
//!     Action::new("Originate")
//!         .field("Channel", "Local/echo@ami-test")
//!         .field("Application", "Wait")
//!         .field("Data", "1")
//!         .field("Async", "true"),
//! )?;
//! let done = link.run_until_complete(&call, link.now() + Duration::from_secs(30));
//! let done = done.ok_or("no answer to Originate")??;
//! let follow_up = done.follow_up().ok_or("no OriginateResponse")?;
//! assert_eq!(follow_up.event(), Some("OriginateResponse"));
//! assert_eq!(follow_up.get_str("Response"), Some("Success"));
//!
//! // The call's events wait in the client for the consumer.
//! let mut events = Vec::new();
//! while let Some(item) = link.client_mut().poll_event() {
//!     if let StreamItem::Event(m) = item {
//!         events.push(m.event().unwrap_or_default().to_string());
//!     }
//! }
//! assert!(events.iter().any(|e| e == "Newchannel"));
//!
//! // Asterisk restarts: the client is told, waits out its backoff, and logs in again.
//! link.take_notices();
//! let restart_at = link.now();
//! link.inject(Fault::Restart { down_for: Duration::from_secs(2) });
//! assert!(!link.client().is_ready());
//! assert!(link.run_until_ready(restart_at + Duration::from_secs(60)));
//! assert!(link.now() >= restart_at + Duration::from_secs(2));
//! let notices = link.take_notices();
//! assert!(matches!(notices.first(), Some((_, Notice::Disconnected { .. }))));
//! assert!(matches!(notices.last(), Some((_, Notice::Ready { .. }))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::clock::later;
use crate::{CloseReason, Fault, SessionId, SessionState, SimConfig, SimServer};
use ami_proto::{
    Action, ActionId, Client, ClientConfig, ConnectFailure, Input, Notice, Outcome, Output,
    SendError, SendOptions,
};
use std::time::{Duration, Instant};

/// Rounds of [`Link::pump`] at one instant before it gives up for now. Every round moves
/// bytes both ways, so a conversation that has not settled after this many is a loop between
/// the two sides (a bug); stopping keeps the caller's test from hanging, and the next step
/// carries on.
const MAX_PUMP_ROUNDS: usize = 100_000;

/// Steps in a row that fire a deadline without virtual time moving, after which
/// [`Link::step`] moves the clock on by a millisecond. Only a deadline that handling does not
/// clear (a bug in either side) can cause that; without this guard a `run_until` would spin
/// forever at one instant.
const MAX_STALLED_STEPS: u32 = 1_000;

/// One client and one simulated server joined on a virtual clock. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct Link {
    client: Client,
    server: SimServer,
    start: Instant,
    now: Instant,
    /// The simulated session the client is connected to, if any.
    session: Option<SessionId>,
    /// The client's notices, with the instant each came out, until the caller takes them.
    notices: Vec<(Instant, Notice)>,
    /// Steps in a row that did not move the clock (see [`MAX_STALLED_STEPS`]).
    stalled: u32,
}

impl Link {
    /// Joins `client` to `server`, with virtual time starting at `start`. Give the client and
    /// the server the same `start` when you create them, so that all three agree on time.
    /// Nothing moves until the first [`pump`](Self::pump), [`step`](Self::step) or `run_*`.
    pub fn new(client: Client, server: SimServer, start: Instant) -> Link {
        Link {
            client,
            server,
            start,
            now: start,
            session: None,
            notices: Vec::new(),
            stalled: 0,
        }
    }

    /// A new [`Client`] with `client` and a new [`SimServer`] with `server`, both created at
    /// `start`. Panics as [`SimServer::new`] does if `server` cannot work.
    pub fn with_configs(client: ClientConfig, server: SimConfig, start: Instant) -> Link {
        Link::new(
            Client::new(client, start),
            SimServer::new(server, start),
            start,
        )
    }

    /// The client. Ask it anything ([`Client::is_ready`], [`Client::status`],
    /// [`Client::stats`]).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client, to read its events ([`Client::poll_event`]) or call it directly. A call
    /// that takes `now` should get [`now`](Self::now); what it queues moves on the next
    /// [`pump`](Self::pump), step or run.
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The simulated server.
    pub fn server(&self) -> &SimServer {
        &self.server
    }

    /// The simulated server, to inject faults ([`SimServer::faults`]), start calls or
    /// restart it. Pass [`now`](Self::now) where it takes `now`; the effects reach the
    /// client on the next [`pump`](Self::pump), step or run.
    pub fn server_mut(&mut self) -> &mut SimServer {
        &mut self.server
    }

    /// The virtual now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The `start` given at construction.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Virtual time since `start`.
    pub fn elapsed(&self) -> Duration {
        self.now.duration_since(self.start)
    }

    /// The simulated session the client is connected to now (None while it is not), for
    /// faults aimed at one session ([`Fault::HalfOpen`], [`Fault::ResetMidMessage`]).
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

    /// The client's notices so far, oldest first, each with the virtual instant it came
    /// out at. They are kept until [`take_notices`](Self::take_notices): a long test should
    /// take them now and then.
    pub fn notices(&self) -> &[(Instant, Notice)] {
        &self.notices
    }

    /// Takes the notices collected so far, leaving none.
    pub fn take_notices(&mut self) -> Vec<(Instant, Notice)> {
        std::mem::take(&mut self.notices)
    }

    /// The outcome of action `id`, if its [`Notice::Completed`] is among the collected
    /// notices (not yet taken).
    pub fn outcome(&self, id: &ActionId) -> Option<&Outcome> {
        completed(&self.notices, id)
    }

    /// Queues `action` at the virtual now and moves what that makes move. Its result comes
    /// as a [`Notice::Completed`] with the returned ID ([`run_until_complete`](Self::run_until_complete)
    /// waits for it).
    pub fn send(&mut self, action: Action) -> Result<ActionId, SendError> {
        self.send_with(action, SendOptions::default())
    }

    /// [`send`](Self::send) with options (a timeout of its own, a mark).
    pub fn send_with(
        &mut self,
        action: Action,
        options: SendOptions,
    ) -> Result<ActionId, SendError> {
        let id = self.client.send_action_with(self.now, action, options)?;
        self.pump();
        Ok(id)
    }

    /// Injects `fault` into the server at the virtual now ([`SimServer::inject`]) and moves
    /// what that makes move, so that, say, a restart's disconnect is already reported.
    pub fn inject(&mut self, fault: Fault) {
        self.server.inject(self.now, fault);
        self.pump();
    }

    /// Closes the client at once, without Logoff ([`Client::close`]): every pending action
    /// fails, the session is closed, and [`Notice::Closed`] is collected.
    pub fn close(&mut self) {
        self.client.close(self.now);
        self.pump();
    }

    /// Logs off ([`Client::logoff`]); run on (a step or two) for the server's Goodbye.
    pub fn logoff(&mut self) {
        self.client.logoff(self.now);
        self.pump();
    }

    /// Moves everything that can move at the virtual now, without moving the clock: the
    /// client's outputs (Connect, Close, notices) are carried out or collected and bytes
    /// cross both ways until neither side has anything more. Every step and run does this;
    /// call it yourself after using [`client_mut`](Self::client_mut) or
    /// [`server_mut`](Self::server_mut) if you want to look at the result at the same instant.
    pub fn pump(&mut self) {
        for _ in 0..MAX_PUMP_ROUNDS {
            let mut moved = false;
            loop {
                match self.client.poll_output() {
                    Output::Connect => {
                        self.connect();
                        moved = true;
                    }
                    Output::Close => {
                        if let Some(s) = self.session.take() {
                            self.server.client_closed(s, self.now);
                            self.server.forget(s);
                        }
                        moved = true;
                    }
                    Output::Notice(n) => {
                        self.notices.push((self.now, n));
                        moved = true;
                    }
                    Output::Wait(_) => break,
                    // Outputs a newer core may add are for an adapter that knows them; this
                    // link does not, and poll_output still ends with Wait.
                    _ => {}
                }
            }
            moved |= self.transfer();
            if !moved {
                return;
            }
        }
        log::warn!(
            "ami-sim link: still moving after {MAX_PUMP_ROUNDS} rounds at {:?}; continuing at the next step",
            self.elapsed()
        );
    }

    /// Opens a simulated session for the client's Connect. While the server is down
    /// (restarting) Asterisk's port is closed, so the connect is refused, as a real
    /// adapter would report it; the simulator's own record of the attempt is dropped.
    fn connect(&mut self) {
        let s = self.server.accept(self.now);
        let refused = matches!(
            self.server.session_state(s),
            SessionState::Closed(CloseReason::Shutdown)
        ) && self.server.transmit(s).is_empty();
        if refused {
            self.server.forget(s);
            self.client
                .handle_input(self.now, Input::ConnectFailed(ConnectFailure::Refused));
        } else {
            self.session = Some(s);
            self.client.handle_input(self.now, Input::Connected);
        }
    }

    /// Moves bytes once each way. Returns whether anything moved.
    fn transfer(&mut self) -> bool {
        let Some(s) = self.session else {
            return false;
        };
        let mut moved = false;
        // Client to server, no more than the session takes without dropping: the rest waits
        // in the client, as TCP flow control would hold it back from a busy Asterisk.
        let out = self.client.transmit();
        let n = out.len().min(self.server.input_room(s));
        if n > 0 {
            self.server.receive(s, self.now, &out[..n]);
            self.client.advance_transmit(n);
            moved = true;
        }
        // Server to client, straight from the server's buffer (nothing copied or held here).
        let input = self.server.transmit(s);
        if !input.is_empty() {
            let n = input.len();
            self.client.handle_input(self.now, Input::Received(input));
            self.server.advance_transmit(s, n);
            moved = true;
        } else if self.server.is_eof(s) {
            // Closed by the server and all of it read: the client sees EOF, and the closed
            // session's record is dropped so long runs stay bounded.
            self.session = None;
            self.server.forget(s);
            self.client.handle_input(self.now, Input::Eof);
            moved = true;
        }
        moved
    }

    /// The earliest deadline of either side: the client's next timer or the server's next
    /// due work (delayed replies, call steps, planned faults, the end of a restart).
    pub fn next_deadline(&mut self) -> Option<Instant> {
        match (self.client.poll_timeout(), self.server.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves what can move now, then advances virtual time to the next deadline of either
    /// side (not before now), fires it on both sides and moves what follows. Returns the new
    /// virtual now, or None when neither side has a deadline (only a call can wake them; a
    /// closed client, say): then the clock stays.
    pub fn step(&mut self) -> Option<Instant> {
        self.pump();
        let due = self.next_deadline()?;
        let mut at = due.max(self.now);
        if at == self.now {
            self.stalled += 1;
            if self.stalled > MAX_STALLED_STEPS {
                log::warn!(
                    "ami-sim link: a deadline at {:?} keeps coming back; moving the clock on",
                    self.elapsed()
                );
                at = later(self.now, Duration::from_millis(1));
            }
        }
        self.advance_to(at);
        Some(self.now)
    }

    /// Sets the clock to `at`, fires what is due on both sides, and moves what follows.
    fn advance_to(&mut self, at: Instant) {
        if at > self.now {
            self.stalled = 0;
            self.now = at;
        }
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.pump();
    }

    /// Runs every deadline up to `until`, in order, and ends with the clock at `until`
    /// (or where it is, if that is later).
    pub fn run_until(&mut self, until: Instant) {
        self.run_until_with(until, |_| false);
    }

    /// [`run_until`](Self::run_until) `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(later(self.now, d));
    }

    /// Runs step by step until `done` says so, checking it after every move, or until
    /// `limit`. Returns whether `done` said so; the clock stays where it did (at `limit`
    /// otherwise).
    pub fn run_until_with(
        &mut self,
        limit: Instant,
        mut done: impl FnMut(&mut Link) -> bool,
    ) -> bool {
        loop {
            self.pump();
            if done(self) {
                return true;
            }
            if self.now >= limit {
                return false;
            }
            match self.next_deadline() {
                Some(t) if t <= limit => {
                    self.step();
                }
                _ => self.advance_to(limit),
            }
        }
    }

    /// Runs until the client is Ready, or until `limit`; returns whether it is.
    pub fn run_until_ready(&mut self, limit: Instant) -> bool {
        self.run_until_with(limit, |link| link.client.is_ready())
    }

    /// Runs until action `id` completes, or until `limit`, and returns its outcome (None at
    /// the limit). A completion already among the collected notices is returned at once.
    /// The clock stays at the instant it completed.
    pub fn run_until_complete(&mut self, id: &ActionId, limit: Instant) -> Option<Outcome> {
        let mut outcome = None;
        // Only notices not yet looked at are searched, so a long wait stays linear.
        let mut seen = 0;
        self.run_until_with(limit, |link| {
            outcome = link
                .notices
                .get(seen..)
                .and_then(|fresh| completed(fresh, id))
                .cloned();
            seen = link.notices.len();
            outcome.is_some()
        });
        outcome
    }
}

/// The outcome of `id` among `notices`, if it completed there.
fn completed<'a>(notices: &'a [(Instant, Notice)], id: &ActionId) -> Option<&'a Outcome> {
    notices.iter().rev().find_map(|(_, n)| match n {
        Notice::Completed { id: done, outcome } if done == id => Some(outcome),
        _ => None,
    })
}
