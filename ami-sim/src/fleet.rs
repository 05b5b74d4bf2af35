//! Deterministic simulation of a fleet: one [`ami_proto::fleet::Fleet`] and many
//! [`SimServer`]s on one virtual clock, driven the way an adapter drives them (connects as
//! the fleet releases them, per-step read budgets from a [`Scheduler`]).
//!
//! The servers play roles ([`Role`]): one floods events, some restart every few seconds,
//! some are unreachable (half refuse at once, half never answer), the rest are quiet with
//! actions flowing. After every step the harness checks:
//!
//! - no ActionID crosses servers: every completion names the server the action was routed
//!   to, and a success carries a response with that ActionID which that server's simulator
//!   received;
//! - a quiet server loses no event, whatever the flooder does (no gap names it, and at the
//!   end every event its simulator delivered reached the consumer);
//! - a quiet server's action completes within a bound derived from the budgets
//!   ([`Scenario::latency_bound`]);
//! - every action completes exactly once (the fleet closes at the end, so none is left);
//! - connects started per step stay within `connects_per_step`;
//! - no server reconnects before the retry time its last status announced; a server that
//!   never comes up opens its breaker exactly at its `breaker_threshold`-th failure in a
//!   row (and every failure after it), and an open breaker waits at least
//!   `breaker_cooldown`;
//! - a server removed with actions pending (churn, [`Scenario::churn_per_mille`]) fails each
//!   of them once, typed (`NotSent` or `Unknown`), before its `Removed`; its transport is
//!   closed, and bytes reported later for its old [`ServerId`] change nothing;
//! - a cancel through the fleet of a quiet server's action in flight is taken, and the
//!   action ends `Cancelled`, once;
//! - `send_all` gives one result per server, each naming a different server of the fleet;
//! - a server added again under the same name gets a new ID, never reuses an ActionID of
//!   its earlier incarnations, and treats their answers (which Asterisk may still send, an
//!   `OriginateResponse` reaches every session) as unmatched, completing nothing;
//! - a quiet server logged off mid-run (most seeds) fails each action pending on it once:
//!   the server's answer for one it had written, `NotSent(Logoff)` for one still queued; a
//!   send to it is refused `Closed(Logoff)`; it is `Closed(Logoff)` within `logoff_timeout`
//!   and never connects again; no other server's action ends for a Logoff. Some seeds then
//!   log every server off: each pending action completes once, every server is closed
//!   within `logoff_timeout`, and none (up, backing off, or still connecting) connects
//!   again.

use crate::clock::later;
use crate::{SessionId, SimConfig, SimServer};
use ami_proto::fleet::{
    Budget, Fleet, FleetConfig, FleetOutput, Policy, Route, RouteError, Scheduler, ServerId,
    ServerStatus,
};
use ami_proto::{
    Action, ActionError, ActionId, ClientConfig, Decoder, DecoderLimits, DisconnectReason, Frame,
    Input, Outcome, SendError, StreamItem,
};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// What a simulated server does in the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Floods events every step.
    Flood,
    /// Restarts every few seconds.
    Flapping,
    /// Refuses every connect at once.
    Refusing,
    /// Never answers a connect (the client's connect timeout ends each attempt).
    BlackHole,
    /// Stays up; its actions and occasional events must flow unharmed.
    Quiet,
}

/// The shape of one run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Servers in all.
    pub servers: usize,
    /// Of those, flooding.
    pub flooding: usize,
    /// Of those, restarting every few seconds.
    pub flapping: usize,
    /// Of those, unreachable (half refuse, half never answer).
    pub unreachable: usize,
    /// Virtual time to run.
    pub duration: Duration,
    /// Virtual time per step.
    pub tick: Duration,
    /// Events each flooding server emits per step.
    pub flood_per_step: usize,
    /// Items the consumer takes from the merged stream per step.
    pub consumer_per_step: usize,
    /// Percent chance per step that a quiet server with nothing in flight sends an action.
    pub action_rate: u64,
    /// Percent chance per step that a quiet server emits one event.
    pub quiet_event_rate: u64,
    /// Percent chance per step of an extra action routed by policy.
    pub policy_rate: u64,
    /// The per-step budgets.
    pub budget: Budget,
    /// Chance per step, in thousandths, that a quiet or flapping server is removed (after a
    /// few more actions are sent to it, so that some are pending) and added again under the
    /// same name 100 to 1,500 ms later. One server is out at a time.
    pub churn_per_mille: u64,
}

impl Default for Scenario {
    /// Issue 11's scenario: 200 servers, one flooding, twenty flapping, fifty unreachable.
    fn default() -> Self {
        Scenario {
            servers: 200,
            flooding: 1,
            flapping: 20,
            unreachable: 50,
            duration: Duration::from_secs(10),
            tick: Duration::from_millis(5),
            flood_per_step: 200,
            consumer_per_step: 128,
            action_rate: 10,
            quiet_event_rate: 2,
            policy_rate: 20,
            budget: Budget::default(),
            churn_per_mille: 3,
        }
    }
}

impl Scenario {
    /// The scenario with `n` servers and the same proportions (at least one of each role).
    pub fn scaled(n: usize) -> Scenario {
        let n = n.max(5);
        Scenario {
            servers: n,
            flooding: 1,
            flapping: (n / 10).max(1),
            unreachable: (n / 4).max(2),
            ..Scenario::default()
        }
    }

    /// The longest a quiet server's action may take, from the budgets: written in the step it
    /// is sent, answered at once by the simulator, read at the server's next read turn. Turns
    /// rotate, and a step holds at least `k = read_bytes_per_step / read_bytes_per_conn` full
    /// turns, so every server reads within `ceil(servers / k)` steps; one more step covers
    /// an answer that lands just after the server's turn.
    pub fn latency_bound(&self) -> Duration {
        let b = self.budget;
        let k = (b.read_bytes_per_step / b.read_bytes_per_conn.max(1))
            .min(b.messages_per_step / b.messages_per_conn.max(1))
            .max(1);
        let steps = self.servers.div_ceil(k) + 1;
        self.tick
            .saturating_mul(u32::try_from(steps).unwrap_or(u32::MAX))
    }

    fn role(&self, i: usize) -> Role {
        let unreachable_from = self.flooding + self.flapping;
        if i < self.flooding {
            Role::Flood
        } else if i < unreachable_from {
            Role::Flapping
        } else if i < unreachable_from + self.unreachable {
            if (i - unreachable_from) % 2 == 0 {
                Role::Refusing
            } else {
                Role::BlackHole
            }
        } else {
            Role::Quiet
        }
    }
}

/// A broken law, with what replays it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seed {seed} at {at_ms} ms: {what}\n  replay: AMI_FLEET_SEED={seed} cargo test -p ami-sim --test fleet_dst -- replay_fleet_seed --exact --nocapture")]
pub struct Violation {
    /// The seed that reproduces it.
    pub seed: u64,
    /// Virtual milliseconds since the start.
    pub at_ms: u128,
    /// What went wrong.
    pub what: String,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Steps run.
    pub steps: u64,
    /// Actions accepted by the fleet.
    pub actions: u64,
    /// Of those, successes.
    pub successes: u64,
    /// Policy-routed sends refused with `NoServer`.
    pub no_server: u64,
    /// Events consumed from the merged stream.
    pub events: u64,
    /// Events reported lost in gaps (all the flooder's).
    pub events_lost: u64,
    /// The quiet servers' own UserEvents consumed (other events, such as login's, are not
    /// counted here).
    pub quiet_events: u64,
    /// Connects the fleet released.
    pub connects: u64,
    /// The most connects in one step.
    pub most_connects_in_a_step: usize,
    /// Restarts of the flapping servers.
    pub restarts: u64,
    /// Quiet servers' worst action latency, in virtual microseconds.
    pub quiet_worst_latency_us: u64,
    /// Status changes seen.
    pub status_changes: u64,
    /// Servers removed while the run went on (churn).
    pub removals: u64,
    /// Actions pending on a server when it was removed.
    pub pending_at_removal: u64,
    /// Answers of an earlier incarnation fed to a server added again under its name.
    pub stale_answers: u64,
    /// Times a server's breaker was seen open.
    pub breaker_opens: u64,
    /// Routed actions cancelled through the fleet.
    pub cancels: u64,
    /// `send_all` calls.
    pub broadcasts: u64,
    /// Servers logged off one by one (through `Fleet::with_client`).
    pub logoffs: u64,
    /// Actions pending on a server when it (or the whole fleet) was logged off.
    pub pending_at_logoff: u64,
    /// Runs that logged the whole fleet off (`Fleet::logoff_all`).
    pub logoff_alls: u64,
}

/// A server taken out of the fleet by the churn, waiting to be added again.
struct Out {
    /// When it is added again.
    back_at: Instant,
    /// Its ID before removal, to report late bytes with.
    old_id: ServerId,
}

struct Sim {
    role: Role,
    server: SimServer,
    session: Option<SessionId>,
    /// ActionIDs this simulator received (decoded from what the client wrote).
    tap: Decoder,
    received: HashSet<String>,
    next_restart: Option<Instant>,
    /// A quiet server's action in flight and when it was sent.
    in_flight: Option<(ActionId, Instant)>,
    /// Events emitted to this server's session while it was open (less those lost when it
    /// was removed).
    emitted: u64,
    /// Of those, consumed from the merged stream.
    consumed: u64,
    /// The fleet ID the open session was accepted for.
    conn: Option<ServerId>,
    /// Not to connect before this: the retry time of the last BackingOff/BreakerOpen status.
    not_before: Option<Instant>,
    /// Failed connects in a row (servers that never come up).
    failures: u32,
    /// Removed, and when it comes back.
    out: Option<Out>,
    /// Between `Fleet::remove` and its `Removed`: the actions pending at removal.
    removing: Option<Vec<ActionId>>,
    /// The gap a removal may report for it: at most this many events.
    gap_allowed: Option<u64>,
    /// ActionIDs of an earlier incarnation its simulator received: answered to the next
    /// incarnation once it is ready.
    stale: Vec<String>,
    /// Logged off (on its own, or with the whole fleet): when.
    logged_off: Option<Instant>,
}

/// SplitMix64 for the harness's own choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Every server's `logoff_timeout`: the longest a Logoff waits for its Goodbye.
const LOGOFF_TIMEOUT: Duration = Duration::from_secs(2);

/// Failed connects in a row that open a client's breaker.
const BREAKER_THRESHOLD: u32 = 5;
/// How long an open breaker waits at least.
const BREAKER_COOLDOWN: Duration = Duration::from_secs(2);

/// The config of every server's client: the queue small enough that the flood overflows it.
fn client_config() -> Option<ClientConfig> {
    ClientConfig::builder("admin", "amp111")
        .event_queue_cap(256)
        .connect_timeout(Duration::from_millis(500))
        .action_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(3))
        .pong_timeout(Duration::from_secs(3))
        .backoff_base(Duration::from_millis(50))
        .backoff_max(Duration::from_secs(1))
        .breaker_threshold(BREAKER_THRESHOLD)
        .breaker_cooldown(BREAKER_COOLDOWN)
        .logoff_timeout(LOGOFF_TIMEOUT)
        .build()
        .ok()
}

/// A fleet and its simulated servers on one virtual clock.
pub struct FleetHarness {
    seed: u64,
    scenario: Scenario,
    rng: Rng,
    t0: Instant,
    now: Instant,
    /// The fleet under test.
    pub fleet: Fleet,
    scheduler: Scheduler,
    sims: Vec<Sim>,
    ids: Vec<ServerId>,
    names: Vec<String>,
    by_name: HashMap<String, usize>,
    /// Which simulator a fleet slot belongs to (a slot freed by a removal may be reused).
    by_slot: HashMap<usize, usize>,
    /// Every ActionID accepted, with the server it was routed to and its completions.
    sent: HashMap<ActionId, (usize, u32)>,
    connects_this_step: usize,
    /// Actions cancelled through the fleet: each must end `Cancelled`.
    cancelled: HashSet<ActionId>,
    closing: bool,
    /// When one quiet server is logged off (most seeds), and when the whole fleet is (some).
    logoff_one_at: Option<Instant>,
    logoff_all_at: Option<Instant>,
    /// The whole fleet was logged off.
    all_logged_off: bool,
    /// Actions pending on a quiet server when it was logged off: each ends with the
    /// server's answer (it had been written) or `NotSent(Logoff)` (it had not).
    cut_by_logoff: HashSet<ActionId>,
    /// What the run did.
    pub summary: Summary,
    violations: Vec<Violation>,
}

impl FleetHarness {
    /// A fleet of `scenario.servers` servers, none connected yet. Everything follows from
    /// `seed`; `t0` is the epoch of the virtual clock.
    pub fn new(seed: u64, t0: Instant, scenario: Scenario) -> FleetHarness {
        let mut config = FleetConfig::default();
        config.budget = scenario.budget;
        config.seed = seed;
        let mut fleet = Fleet::new(config);
        let mut rng = Rng(seed ^ 0xf1ee_7000);
        // Drawn apart, so that the seed's other choices stay what they were.
        let mut own = Rng(seed ^ 0x1060_ff00);
        let span = |r: &mut Rng, from: f64, to: f64| {
            let d = scenario.duration.mul_f64(from)
                + scenario
                    .duration
                    .mul_f64(to - from)
                    .mul_f64(r.below(1000) as f64 / 1000.0);
            t0 + d
        };
        let logoff_one_at = own.chance(70).then(|| span(&mut own, 0.2, 0.5));
        // Early enough that every client has closed by the end.
        let logoff_all_at = own.chance(30).then(|| {
            let latest = scenario
                .duration
                .saturating_sub(LOGOFF_TIMEOUT + scenario.tick * 4);
            span(&mut own, 0.5, 0.75).min(t0 + latest)
        });
        let mut h = FleetHarness {
            seed,
            rng: Rng(0),
            t0,
            now: t0,
            fleet: Fleet::new(FleetConfig::default()),
            scheduler: Scheduler::new(scenario.budget),
            sims: Vec::new(),
            ids: Vec::new(),
            names: Vec::new(),
            by_name: HashMap::new(),
            by_slot: HashMap::new(),
            sent: HashMap::new(),
            connects_this_step: 0,
            cancelled: HashSet::new(),
            closing: false,
            logoff_one_at,
            logoff_all_at,
            all_logged_off: false,
            cut_by_logoff: HashSet::new(),
            summary: Summary::default(),
            violations: Vec::new(),
            scenario,
        };
        for i in 0..h.scenario.servers {
            let role = h.scenario.role(i);
            let name = format!("pbx{i:04}");
            let Some(cfg) = client_config() else {
                h.violate("the client config was refused".into());
                break;
            };
            match fleet.add(t0, &name, cfg) {
                Ok(id) => {
                    h.by_slot.insert(id.index(), i);
                    h.ids.push(id);
                }
                Err(e) => {
                    h.violate(format!("add {name}: {e}"));
                    break;
                }
            }
            let sim_config = SimConfig {
                seed: seed.wrapping_mul(1000).wrapping_add(i as u64),
                ..SimConfig::default()
            };
            let next_restart = (role == Role::Flapping)
                .then(|| t0 + Duration::from_millis(1000 + rng.below(4000)));
            h.sims.push(Sim {
                role,
                server: SimServer::new(sim_config, t0),
                session: None,
                tap: Decoder::without_banner(DecoderLimits::default()),
                received: HashSet::new(),
                next_restart,
                in_flight: None,
                emitted: 0,
                consumed: 0,
                conn: None,
                not_before: None,
                failures: 0,
                out: None,
                removing: None,
                gap_allowed: None,
                stale: Vec::new(),
                logged_off: None,
            });
            h.by_name.insert(name.clone(), i);
            h.names.push(name);
        }
        h.fleet = fleet;
        h.rng = rng;
        h
    }

    fn violate(&mut self, what: String) {
        self.violations.push(Violation {
            seed: self.seed,
            at_ms: self.now.duration_since(self.t0).as_millis(),
            what,
        });
    }

    /// Runs the scenario; returns the violations (empty: every law held).
    pub fn run(&mut self) -> Vec<Violation> {
        while self.advance() {}
        self.finish()
    }

    /// Runs one step and moves the virtual clock on by a tick. False once the scenario's
    /// time is over or a law broke: then call [`finish`](Self::finish).
    pub fn advance(&mut self) -> bool {
        if self.now >= later(self.t0, self.scenario.duration) || !self.violations.is_empty() {
            return false;
        }
        self.step();
        self.summary.steps += 1;
        self.now = later(self.now, self.scenario.tick);
        true
    }

    /// One turn of the loop at `self.now`.
    fn step(&mut self) {
        let now = self.now;
        self.fleet.handle_timeout(now);
        self.connects_this_step = 0;
        for sim in &mut self.sims {
            if sim.server.poll_timeout().is_some_and(|t| t <= now) {
                sim.server.handle_timeout(now);
            }
        }
        self.logoffs();
        if !self.all_logged_off {
            self.faults_and_load();
            self.churn();
        }
        self.drain_outputs();
        self.transport();
        self.drain_outputs();
        self.consume();
        self.check_latency();
    }

    /// Restarts, floods, quiet events and actions.
    fn faults_and_load(&mut self) {
        let now = self.now;
        for i in 0..self.sims.len() {
            let role = self.sims[i].role;
            match role {
                Role::Flapping => {
                    let sim = &mut self.sims[i];
                    if sim.next_restart.is_some_and(|t| now >= t) {
                        let down = Duration::from_millis(300 + self.rng.below(1200));
                        sim.server.restart(now, down);
                        sim.next_restart =
                            Some(now + down + Duration::from_millis(2000 + self.rng.below(3000)));
                        self.summary.restarts += 1;
                    }
                }
                Role::Flood => {
                    if self.sims[i].session.is_some() {
                        let n = self.scenario.flood_per_step;
                        self.sims[i].server.emit_user_events(now, n);
                    }
                }
                Role::Quiet => self.quiet_load(i),
                Role::Refusing | Role::BlackHole => {}
            }
        }
        if self.rng.chance(self.scenario.policy_rate) {
            let policy = if self.rng.chance(50) {
                Policy::RoundRobin
            } else {
                Policy::FewestInFlight
            };
            let ready = self
                .names
                .iter()
                .any(|n| self.fleet.status(n).is_some_and(ServerStatus::is_ready));
            match self
                .fleet
                .send(now, Route::Any(policy), Action::new("Ping"))
            {
                Ok(r) => {
                    let Some(&i) = self.by_name.get(r.server.as_str()) else {
                        self.violate(format!("routed to unknown server {}", r.server));
                        return;
                    };
                    if !self
                        .fleet
                        .status(r.server.as_str())
                        .is_some_and(ServerStatus::is_ready)
                    {
                        self.violate(format!("{policy:?} picked {} which is not ready", r.server));
                    }
                    self.note_sent(r.id, i);
                }
                Err(RouteError::NoServer { ready: 0, .. }) if !ready => self.summary.no_server += 1,
                Err(e) => self.violate(format!("{policy:?} refused with ready servers: {e}")),
            }
        }
    }

    fn quiet_load(&mut self, i: usize) {
        if self.sims[i].logged_off.is_some() {
            return;
        }
        let now = self.now;
        let ready = self
            .fleet
            .status(&self.names[i])
            .is_some_and(ServerStatus::is_ready);
        if ready
            && self.sims[i].session.is_some()
            && self.rng.chance(self.scenario.quiet_event_rate)
        {
            self.sims[i].server.emit_user_events(now, 1);
            self.sims[i].emitted += 1;
        }
        if !ready || self.sims[i].in_flight.is_some() || !self.rng.chance(self.scenario.action_rate)
        {
            return;
        }
        let action = match self.rng.below(3) {
            0 => Action::new("Ping"),
            1 => Action::new("Getvar").field("Variable", "EPOCH"),
            _ => Action::new("CoreStatus"),
        };
        match self.fleet.send(now, Route::Server(&self.names[i]), action) {
            Ok(r) => {
                if r.server.as_str() != self.names[i] {
                    self.violate(format!(
                        "sent to {} but routed to {}",
                        self.names[i], r.server
                    ));
                }
                self.sims[i].in_flight = Some((r.id.clone(), now));
                self.note_sent(r.id, i);
            }
            Err(e) => self.violate(format!("{} refused an action: {e}", self.names[i])),
        }
    }

    fn drain_outputs(&mut self) {
        loop {
            match self.fleet.poll_output() {
                FleetOutput::Wait(_) => return,
                FleetOutput::Connect(id) => self.connect(id),
                FleetOutput::Close(id) => {
                    let now = self.now;
                    // Only the transport opened for this ID: a Close for an earlier one has
                    // nothing left to close.
                    if let Some(sim) = self.sims.iter_mut().find(|s| s.conn == Some(id)) {
                        sim.conn = None;
                        if let Some(s) = sim.session.take() {
                            sim.server.client_closed(s, now);
                            sim.server.forget(s);
                        }
                    }
                }
                FleetOutput::Completed {
                    server,
                    id,
                    outcome,
                } => self.completed(server.as_str(), id, outcome),
                FleetOutput::Status { server, status } => {
                    self.summary.status_changes += 1;
                    self.status(server.as_str(), &status);
                }
                FleetOutput::Removed { server } => self.removed(server.as_str()),
                other => self.violate(format!("unexpected output {other:?}")),
            }
        }
    }

    fn connect(&mut self, id: ServerId) {
        self.connects_this_step += 1;
        self.summary.connects += 1;
        self.summary.most_connects_in_a_step = self
            .summary
            .most_connects_in_a_step
            .max(self.connects_this_step);
        if self.connects_this_step > self.scenario.budget.connects_per_step.max(1) {
            let n = self.connects_this_step;
            self.violate(format!("{n} connects in one step"));
        }
        let now = self.now;
        let Some(i) = self.by_slot.get(&id.index()).copied() else {
            self.violate(format!("connect for unknown {id:?}"));
            return;
        };
        if let Some(at) = self.sims[i].logged_off {
            let after = now.duration_since(at);
            self.violate(format!(
                "{} connected {after:?} after it was logged off",
                self.names[i]
            ));
        }
        if self.ids[i] != id || self.sims[i].out.is_some() {
            self.violate(format!(
                "connect for {id:?}, not the live ID of {}",
                self.names[i]
            ));
            return;
        }
        if let Some(t) = self.sims[i].not_before.take() {
            if now < t {
                let early = t.duration_since(now);
                self.violate(format!(
                    "{} reconnected {early:?} before its retry time",
                    self.names[i]
                ));
            }
        }
        let sim = &mut self.sims[i];
        match sim.role {
            Role::Refusing => {
                let refused = Input::ConnectFailed(ami_proto::ConnectFailure::Refused);
                self.fleet.handle_input(now, id, refused)
            }
            Role::BlackHole => {}
            _ => {
                sim.session = Some(sim.server.accept(now));
                sim.conn = Some(id);
                sim.tap = Decoder::without_banner(DecoderLimits::default());
                self.fleet.handle_input(now, id, Input::Connected);
            }
        }
    }

    fn completed(&mut self, server: &str, id: ActionId, outcome: Outcome) {
        let Some(&(routed_to, done)) = self.sent.get(&id) else {
            self.violate(format!("{server} completed {id}, which was never sent"));
            return;
        };
        if done > 0 {
            self.violate(format!("{id} completed twice"));
        }
        self.sent.insert(id.clone(), (routed_to, done + 1));
        if self.names.get(routed_to).map(String::as_str) != Some(server) {
            self.violate(format!(
                "{id} was routed to {} but completed on {server}",
                self.names[routed_to]
            ));
            return;
        }
        let cut = self.cut_by_logoff.remove(&id);
        if cut
            && !self.cancelled.contains(&id)
            && !matches!(
                outcome,
                Ok(_)
                    | Err(ActionError::Server(_))
                    | Err(ActionError::NotSent(DisconnectReason::Logoff))
            )
        {
            self.violate(format!(
                "{id}, pending on {server} when it was logged off, ended {outcome:?}"
            ));
        }
        let logoff_reason = matches!(
            &outcome,
            Err(ActionError::NotSent(DisconnectReason::Logoff)
                | ActionError::Unknown(DisconnectReason::Logoff))
        );
        if logoff_reason && self.sims[routed_to].logged_off.is_none() {
            self.violate(format!(
                "{id} on {server}, which was not logged off, ended {outcome:?}"
            ));
        }
        let cancelled = self.cancelled.remove(&id);
        if cancelled && !matches!(outcome, Err(ActionError::Cancelled)) {
            self.violate(format!("{id} was cancelled but ended {outcome:?}"));
        }
        let sim = &mut self.sims[routed_to];
        let removing = sim.removing.is_some();
        if removing
            && !matches!(
                outcome,
                Err(ActionError::NotSent(_) | ActionError::Unknown(_))
            )
        {
            self.violate(format!(
                "{id} pending on removed {server} ended {outcome:?}"
            ));
            return;
        }
        let sim = &mut self.sims[routed_to];
        if let Some((want, at)) = &sim.in_flight {
            if *want == id {
                let latency = self.now.duration_since(*at);
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.summary.quiet_worst_latency_us = self.summary.quiet_worst_latency_us.max(us);
                sim.in_flight = None;
                let logged_off = sim.logged_off.is_some();
                if !self.closing && !removing && !cancelled && !logged_off && outcome.is_err() {
                    self.violate(format!("quiet {server}'s {id} failed: {outcome:?}"));
                }
            }
        }
        if let Ok(r) = &outcome {
            self.summary.successes += 1;
            if r.message().action_id() != Some(id.as_str()) {
                self.violate(format!("{id} succeeded with a response for another action"));
            }
            if !self.sims[routed_to].received.contains(id.as_str()) {
                self.violate(format!(
                    "{id} succeeded but {server}'s simulator never got it"
                ));
            }
        }
    }

    /// A server's new status: its retry time, and the breaker law for servers that never
    /// come up (each attempt fails, so the failures in a row are the attempts).
    fn status(&mut self, server: &str, status: &ServerStatus) {
        let Some(&i) = self.by_name.get(server) else {
            return;
        };
        let now = self.now;
        let (until, breaker) = match status {
            ServerStatus::BackingOff { until, .. } => (*until, false),
            ServerStatus::BreakerOpen { until, .. } => (*until, true),
            _ => return,
        };
        self.sims[i].not_before = Some(until);
        if breaker {
            self.summary.breaker_opens += 1;
            let wait = until.saturating_duration_since(now);
            if wait < BREAKER_COOLDOWN {
                self.violate(format!("{server}'s breaker opened for only {wait:?}"));
            }
        }
        if matches!(self.sims[i].role, Role::Refusing | Role::BlackHole) {
            let sim = &mut self.sims[i];
            sim.failures += 1;
            let n = sim.failures;
            if breaker != (n >= BREAKER_THRESHOLD) {
                let what = if breaker { "opened" } else { "stayed shut" };
                self.violate(format!("{server}'s breaker {what} at failure {n} in a row"));
            }
        }
    }

    /// Removes a server now and then, and adds it again when its time comes; cancels a
    /// routed action, or sends one to every server, now and then.
    fn churn(&mut self) {
        let now = self.now;
        match self.rng.below(1000) {
            0..=19 => self.cancel_one(),
            20 => self.broadcast(),
            _ => {}
        }
        if let Some(i) = self
            .sims
            .iter()
            .position(|s| s.out.as_ref().is_some_and(|o| now >= o.back_at))
        {
            self.add_again(i);
        }
        if self.sims.iter().any(|s| s.out.is_some())
            || self.rng.below(1000) >= self.scenario.churn_per_mille
        {
            return;
        }
        let candidates: Vec<usize> = (0..self.sims.len())
            .filter(|&i| {
                matches!(self.sims[i].role, Role::Quiet | Role::Flapping)
                    && self.sims[i].logged_off.is_none()
            })
            .collect();
        let Some(&i) = candidates.get(self.rng.below(candidates.len() as u64) as usize) else {
            return;
        };
        self.remove(i);
    }

    /// Cancels a random quiet server's action in flight (written; its answer is on its way
    /// or read already), through the fleet.
    fn cancel_one(&mut self) {
        let i = self.rng.below(self.sims.len() as u64) as usize;
        let Some((id, _)) = self.sims[i].in_flight.clone() else {
            return;
        };
        let name = self.names[i].clone();
        self.drain_outputs(); // a completion not yet collected would make the cancel late
        if self.sims[i].in_flight.is_none() {
            return;
        }
        self.cancelled.insert(id.clone());
        if self.fleet.cancel(self.now, &name, &id) {
            self.summary.cancels += 1;
        } else {
            self.cancelled.remove(&id);
            self.violate(format!(
                "{name}'s {id} is pending but the fleet's cancel refused it"
            ));
        }
        self.drain_outputs();
        if self.cancelled.contains(&id) {
            self.violate(format!(
                "{name}'s {id} was cancelled but did not complete at once"
            ));
        }
    }

    /// Sends one Ping to every server: one result each, in slot order.
    fn broadcast(&mut self) {
        let now = self.now;
        self.summary.broadcasts += 1;
        let results =
            self.fleet
                .send_all(now, &Action::new("Ping"), ami_proto::SendOptions::default());
        let servers = self.fleet.len();
        if results.len() != servers {
            let n = results.len();
            self.violate(format!("send_all gave {n} results for {servers} servers"));
        }
        let mut seen = HashSet::new();
        for r in results {
            let server = match r {
                Ok(r) => {
                    let Some(&i) = self.by_name.get(r.server.as_str()) else {
                        self.violate(format!("send_all routed to unknown {}", r.server));
                        continue;
                    };
                    self.note_sent(r.id, i);
                    r.server
                }
                Err(RouteError::Send {
                    server,
                    error:
                        SendError::Closed {
                            reason: DisconnectReason::Logoff,
                        },
                }) if self
                    .by_name
                    .get(server.as_str())
                    .is_some_and(|&i| self.sims[i].logged_off.is_some()) =>
                {
                    server
                }
                Err(RouteError::Send { server, error }) => {
                    self.violate(format!("send_all: {server} refused a Ping: {error}"));
                    server
                }
                Err(e) => {
                    self.violate(format!("send_all: {e}"));
                    continue;
                }
            };
            if self.fleet.id(server.as_str()).is_none() || !seen.insert(server.clone()) {
                self.violate(format!(
                    "send_all answered for {server} twice or not in the fleet"
                ));
            }
        }
    }

    /// Removes server `i` with actions pending, and checks how they and its transport end.
    fn remove(&mut self, i: usize) {
        let now = self.now;
        let name = self.names[i].clone();
        // More actions, so that some are queued, some written, some answered but unread.
        for _ in 0..self.rng.below(4) {
            match self
                .fleet
                .send(now, Route::Server(&name), Action::new("Ping"))
            {
                Ok(r) => {
                    self.note_sent(r.id, i);
                }
                // Its client's queue may be full (a server down for a while); nothing else
                // refuses a Ping.
                Err(RouteError::Send {
                    error: ami_proto::SendError::QueueFull { .. },
                    ..
                }) => {}
                Err(e) => self.violate(format!("{name} refused an action: {e}")),
            }
        }
        // Half the time they reach the server first: written, their answers on the way.
        if let Some(s) = self.sims[i].session.filter(|_| self.rng.chance(50)) {
            self.write(i, s);
        }
        self.drain_outputs();
        let pending = self.pending_on(i);
        self.summary.pending_at_removal += pending.len() as u64;
        let sim = &mut self.sims[i];
        sim.stale = pending
            .iter()
            .filter(|id| sim.received.contains(id.as_str()))
            .map(|id| id.as_str().to_string())
            .collect();
        sim.removing = Some(pending.clone());
        let lost_before = self.fleet.stats().events_lost_on_removal;
        if !self.fleet.remove(now, &name) {
            self.violate(format!("{name} could not be removed"));
            return;
        }
        let lost = self.fleet.stats().events_lost_on_removal - lost_before;
        self.summary.removals += 1;
        self.drain_outputs();
        if self.sims[i].removing.is_some() {
            self.violate(format!("{name} was removed without FleetOutput::Removed"));
        }
        if self.sims[i].session.is_some() {
            self.violate(format!(
                "{name} was removed but its transport was never closed"
            ));
        }
        let sim = &mut self.sims[i];
        // What was not consumed is lost with the server (queued in its client, or still
        // on its way); only what its client had queued is reported, as one gap.
        sim.emitted = sim.consumed;
        sim.gap_allowed = (lost > 0).then_some(lost);
        sim.in_flight = None;
        sim.not_before = None;
        let old_id = self.ids[i];
        sim.out = Some(Out {
            back_at: now + Duration::from_millis(100 + self.rng.below(1400)),
            old_id,
        });
        // Bytes an adapter still reports for the old ID (a read that raced the removal):
        // ignored, so nothing may complete (a completion here would be a second one).
        let late = stale_answers(&self.sims[i].stale);
        self.fleet.handle_input(now, old_id, Input::Received(&late));
        self.fleet.handle_input(now, old_id, Input::Eof);
        if !self.fleet.transmit(old_id).is_empty() {
            self.violate(format!("{name}'s old ID still has bytes to write"));
        }
        self.drain_outputs();
    }

    /// `Removed` for `server`: every action pending at its removal completed before it.
    fn removed(&mut self, server: &str) {
        let Some(&i) = self.by_name.get(server) else {
            self.violate(format!("unknown {server} removed"));
            return;
        };
        let Some(pending) = self.sims[i].removing.take() else {
            self.violate(format!("{server} removed unasked"));
            return;
        };
        for id in pending {
            let done = self.sent.get(&id).map_or(0, |(_, n)| *n);
            if done != 1 {
                self.violate(format!(
                    "{id} pending on removed {server} completed {done} times before Removed"
                ));
            }
        }
    }

    /// Logs one quiet server off when its time comes (with a few more actions sent to it
    /// first, so that some are queued, some written), then, in some seeds, every server.
    fn logoffs(&mut self) {
        let now = self.now;
        if self.logoff_one_at.is_some_and(|t| now >= t) {
            let ready: Vec<usize> = (0..self.sims.len())
                .filter(|&i| {
                    let sim = &self.sims[i];
                    sim.role == Role::Quiet
                        && sim.out.is_none()
                        && sim.removing.is_none()
                        && sim.logged_off.is_none()
                        && self
                            .fleet
                            .status(&self.names[i])
                            .is_some_and(ServerStatus::is_ready)
                })
                .collect();
            if let Some(&i) = ready.get(self.rng.below(ready.len() as u64) as usize) {
                self.logoff_one_at = None;
                self.log_off_one(i);
            }
        }
        if self.logoff_all_at.is_some_and(|t| now >= t) {
            self.logoff_all_at = None;
            self.log_off_all();
        }
        self.check_logged_off();
    }

    /// The actions pending on server `i` now, sorted.
    fn pending_on(&self, i: usize) -> Vec<ActionId> {
        let mut pending: Vec<ActionId> = self
            .sent
            .iter()
            .filter(|(_, (to, n))| *to == i && *n == 0)
            .map(|(id, _)| id.clone())
            .collect();
        pending.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        pending
    }

    fn log_off_one(&mut self, i: usize) {
        let now = self.now;
        let name = self.names[i].clone();
        for _ in 0..self.rng.below(5) {
            match self
                .fleet
                .send(now, Route::Server(&name), Action::new("Ping"))
            {
                Ok(r) => self.note_sent(r.id, i),
                Err(e) => self.violate(format!("{name} refused an action: {e}")),
            }
        }
        if let Some(s) = self.sims[i].session.filter(|_| self.rng.chance(50)) {
            self.write(i, s);
        }
        self.drain_outputs();
        let pending = self.pending_on(i);
        self.summary.logoffs += 1;
        self.summary.pending_at_logoff += pending.len() as u64;
        self.cut_by_logoff.extend(pending);
        self.sims[i].logged_off = Some(now);
        self.fleet.with_client(now, &name, |c, now| c.logoff(now));
        match self
            .fleet
            .send(now, Route::Server(&name), Action::new("Ping"))
        {
            Err(RouteError::Send {
                error:
                    SendError::Closed {
                        reason: DisconnectReason::Logoff,
                    },
                ..
            }) => {}
            Ok(r) => {
                self.violate(format!("{name} took {} after its logoff", r.id));
                self.note_sent(r.id, i);
            }
            Err(e) => self.violate(format!("{name} refused a send after logoff with {e}")),
        }
        self.drain_outputs();
    }

    fn log_off_all(&mut self) {
        let now = self.now;
        self.all_logged_off = true;
        self.summary.logoff_alls += 1;
        for i in 0..self.sims.len() {
            if self.sims[i].out.is_some() {
                continue; // removed: not in the fleet
            }
            let pending = self.pending_on(i);
            self.summary.pending_at_logoff += pending.len() as u64;
            if self.sims[i].role == Role::Quiet && self.sims[i].logged_off.is_none() {
                self.cut_by_logoff.extend(pending);
            }
            if self.sims[i].logged_off.is_none() {
                self.sims[i].logged_off = Some(now);
            }
        }
        self.fleet.logoff_all(now);
        self.drain_outputs();
    }

    /// A server logged off is closed, for `Logoff`, within `logoff_timeout`.
    fn check_logged_off(&mut self) {
        let late = LOGOFF_TIMEOUT + self.scenario.tick;
        let now = self.now;
        let open: Vec<String> = (0..self.sims.len())
            .filter(|&i| self.sims[i].logged_off.is_some_and(|at| now > at + late))
            .filter(|&i| {
                !matches!(
                    self.fleet.status(&self.names[i]),
                    Some(ServerStatus::Closed {
                        reason: DisconnectReason::Logoff
                    }) | None
                )
            })
            .map(|i| {
                format!(
                    "{} ({:?})",
                    self.names[i],
                    self.fleet.status(&self.names[i])
                )
            })
            .collect();
        if let Some(first) = open.first() {
            self.violate(format!(
                "{} servers not closed {late:?} after their logoff, e.g. {first}",
                open.len()
            ));
        }
    }

    /// Adds removed server `i` again under its name.
    fn add_again(&mut self, i: usize) {
        if self.all_logged_off {
            return;
        }
        let now = self.now;
        let name = self.names[i].clone();
        let Some(out) = self.sims[i].out.take() else {
            return;
        };
        let Some(cfg) = client_config() else {
            self.violate("the client config was refused".into());
            return;
        };
        match self.fleet.add(now, &name, cfg) {
            Ok(id) => {
                if id == out.old_id {
                    self.violate(format!("{name} came back with its old ID {id:?}"));
                }
                self.by_slot.retain(|_, s| *s != i);
                self.by_slot.insert(id.index(), i);
                self.ids[i] = id;
            }
            Err(e) => self.violate(format!("adding {name} again: {e}")),
        }
    }

    /// Records an accepted action; an ActionID accepted before (on any server, in any
    /// incarnation) could complete the wrong action.
    fn note_sent(&mut self, id: ActionId, i: usize) {
        self.summary.actions += 1;
        if self.sent.insert(id.clone(), (i, 0)).is_some() {
            self.violate(format!("ActionID {id} was handed out twice"));
        }
    }

    /// Feeds server `i`'s new incarnation the answers to its earlier incarnation's actions,
    /// as Asterisk may still send them: each must count as unmatched, completing nothing.
    fn feed_stale(&mut self, i: usize) {
        let name = &self.names[i];
        if self.sims[i].stale.is_empty()
            || !self.fleet.status(name).is_some_and(ServerStatus::is_ready)
        {
            return;
        }
        let stale = std::mem::take(&mut self.sims[i].stale);
        let unmatched = |f: &Fleet| f.client(name).map_or(0, |c| c.stats().unmatched);
        let before = unmatched(&self.fleet);
        let bytes = stale_answers(&stale);
        self.fleet
            .handle_input(self.now, self.ids[i], Input::Received(&bytes));
        let after = unmatched(&self.fleet);
        self.summary.stale_answers += stale.len() as u64;
        if after - before != stale.len() as u64 {
            let what = format!(
                "{name} took {} of {} earlier incarnation's answers as its own",
                stale.len() as u64 - (after - before),
                stale.len()
            );
            self.violate(what);
        }
    }

    /// Writes and reads for every connected server, reads within the step's budget.
    fn transport(&mut self) {
        let now = self.now;
        let mut step = self.scheduler.begin(self.sims.len());
        for i in step.order() {
            let id = self.ids[i];
            let Some(s) = self.sims[i].session else {
                continue;
            };
            let Some(mut turn) = step.turn(i) else {
                self.write(i, s);
                continue;
            };
            loop {
                let sim = &mut self.sims[i];
                let pending = sim.server.transmit(s).len();
                if pending == 0 {
                    if !sim.stale.is_empty() {
                        // Between two whole messages: answers of an earlier incarnation.
                        self.feed_stale(i);
                    }
                    let sim = &mut self.sims[i];
                    if sim.server.is_eof(s) {
                        sim.server.forget(s);
                        sim.session = None;
                        self.fleet.handle_input(now, id, Input::Eof);
                    }
                    break;
                }
                if turn.is_spent() {
                    break;
                }
                let n = pending.min(turn.bytes_left()).min(16 << 10);
                let chunk = sim.server.transmit(s)[..n].to_vec();
                sim.server.advance_transmit(s, n);
                let before = self.fleet.messages_in(id);
                self.fleet.handle_input(now, id, Input::Received(&chunk));
                let messages = self.fleet.messages_in(id) - before;
                turn.charge(n, usize::try_from(messages).unwrap_or(usize::MAX));
                if self.sims[i].session.is_none() {
                    break; // the client closed mid-read
                }
            }
            step.end_turn(turn);
            self.write(i, s);
        }
        self.scheduler.finish(step);
    }

    /// Writes everything server `i`'s client has to send (the simulator takes it all). It
    /// runs after the read, so answers are read at the server's next turn, as readiness
    /// reaches a real loop in its next poll.
    fn write(&mut self, i: usize, s: SessionId) {
        let id = self.ids[i];
        let wire = self.fleet.transmit(id).to_vec();
        if !wire.is_empty() {
            self.fleet.advance_transmit(id, wire.len());
            let sim = &mut self.sims[i];
            tap(&mut sim.tap, &mut sim.received, &wire);
            sim.server.receive(s, self.now, &wire);
        }
    }

    fn consume(&mut self) {
        for _ in 0..self.scenario.consumer_per_step {
            let Some(item) = self.fleet.poll_event() else {
                break;
            };
            let Some(&i) = self.by_name.get(item.server.as_str()) else {
                self.violate(format!("item from unknown server {}", item.server));
                continue;
            };
            if let StreamItem::Event(m) = &item.item {
                self.summary.events += 1;
                if self.sims[i].role == Role::Quiet && m.get_str("UserEvent") == Some("SimStorm") {
                    self.summary.quiet_events += 1;
                    self.sims[i].consumed += 1;
                }
            } else if let StreamItem::Gap { dropped } = &item.item {
                self.summary.events_lost += dropped;
                // A removal loses the events still queued, in one gap naming the server.
                let allowed = self.sims[i].gap_allowed.take();
                if allowed == Some(*dropped) {
                    continue;
                }
                if self.sims[i].role != Role::Flood {
                    self.violate(format!("{} lost {dropped} events", item.server));
                }
            }
        }
    }

    fn check_latency(&mut self) {
        let bound = self.scenario.latency_bound();
        let now = self.now;
        let late: Vec<String> = self
            .sims
            .iter()
            .zip(&self.names)
            .filter_map(|(sim, name)| {
                let (id, at) = sim.in_flight.as_ref()?;
                let age = now.duration_since(*at);
                (age > bound).then(|| format!("{name}'s {id} waited {age:?} (bound {bound:?})"))
            })
            .collect();
        for what in late {
            self.violate(what);
        }
    }

    /// Ends the run: quiet servers' last bytes are read, the fleet closes (every pending
    /// action completes), the stream is drained, and the end-of-run laws are checked.
    /// Returns every violation found.
    pub fn finish(&mut self) -> Vec<Violation> {
        self.closing = true;
        let now = self.now;
        self.settle_quiet();
        self.fleet.close_all(now);
        self.drain_outputs();
        self.consume_all();
        let never: Vec<&ActionId> = self
            .sent
            .iter()
            .filter(|(_, (_, n))| *n == 0)
            .map(|(id, _)| id)
            .collect();
        if let Some(id) = never.first() {
            let what = format!("{} actions never completed, e.g. {id}", never.len());
            self.violate(what);
        }
        let emitted: u64 = self
            .sims
            .iter()
            .filter(|s| s.role == Role::Quiet)
            .map(|s| s.emitted)
            .sum();
        if emitted != self.summary.quiet_events {
            let what = format!(
                "quiet servers emitted {emitted} events, the consumer got {}",
                self.summary.quiet_events
            );
            self.violate(what);
        }
        let stats = self.fleet.stats();
        if stats.most_connects_in_a_step > self.scenario.budget.connects_per_step.max(1) {
            self.violate(format!(
                "the fleet counted {} connects in a step",
                stats.most_connects_in_a_step
            ));
        }
        std::mem::take(&mut self.violations)
    }

    /// Reads everything the quiet servers' simulators still hold, without budget, so the
    /// end-of-run count of their events is exact.
    fn settle_quiet(&mut self) {
        let now = self.now;
        for i in 0..self.sims.len() {
            let id = self.ids[i];
            let sim = &mut self.sims[i];
            let (Role::Quiet, Some(s)) = (sim.role, sim.session) else {
                continue;
            };
            let rest = sim.server.transmit(s).to_vec();
            sim.server.advance_transmit(s, rest.len());
            self.fleet.handle_input(now, id, Input::Received(&rest));
        }
        self.drain_outputs();
        self.consume_all();
    }

    fn consume_all(&mut self) {
        while self.fleet.has_events() {
            let before = self.summary.events + self.summary.events_lost;
            self.consume();
            if self.summary.events + self.summary.events_lost == before {
                break;
            }
        }
    }
}

/// Success responses to `ids`, as a server sends them.
fn stale_answers(ids: &[String]) -> Vec<u8> {
    ids.iter()
        .flat_map(|id| {
            format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n").into_bytes()
        })
        .collect()
}

/// Records the ActionIDs of what the client wrote to one simulator.
fn tap(decoder: &mut Decoder, received: &mut HashSet<String>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let n = decoder.feed(bytes);
        bytes = &bytes[n..];
        while let Some(frame) = decoder.decode() {
            if let Ok(Frame::Message(m)) = frame {
                if let Some(id) = m.action_id() {
                    received.insert(id.to_string());
                }
            }
        }
        if n == 0 {
            break;
        }
    }
}

/// Runs `scenario` with `seed`.
pub fn run_seed(seed: u64, scenario: Scenario) -> (Summary, Vec<Violation>) {
    let mut h = FleetHarness::new(seed, Instant::now(), scenario);
    let v = h.run();
    (h.summary.clone(), v)
}
