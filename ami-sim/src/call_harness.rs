//! Deterministic simulation of the call tracker ([`ami_proto::calls::CallTracker`]): a client,
//! a tracker fed like an application feeds it, and the simulated Asterisk on one virtual
//! clock. Calls are placed (through the tracker and by other users) and hung up while faults
//! cut the link, drop events (a stalled consumer) and restart the server.
//!
//! Checks, every seed:
//! - whenever everything the server said has reached a live tracker, the tracker's channels
//!   equal the simulator's own table ([`SimServer::channel_table`]): Uniqueid, Linkedid,
//!   name, state, caller ID, context and extension;
//! - every Originate sent through the tracker ends resolved (a final state, or running with
//!   live channels), never pending or in doubt;
//! - the channels reported ended while unobserved are exactly those the tracker knew whose
//!   Hangup never reached it and that are gone from the simulator.
//!
//! `AMI_CALLS_TRACE=1` prints a run's boundaries, updates, faults and driver calls.

use crate::harness::{
    link_output, run_scenario, shuttle, Plan, Rng, Scenario, Violation, Violations,
};
use crate::{CallId, CallRequest, Fault, SessionId, SimConfig, SimServer};
use ami_proto::calls::{CallTracker, CallUpdate, OriginateState, TrackerConfig};
use ami_proto::{Action, ActionId, Client, ClientConfig, Notice, Output, OverflowPolicy};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What one seeded run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRunSummary {
    /// Originates sent through the tracker.
    pub originates: u64,
    /// Calls started by other users (the simulator's driver).
    pub driver_calls: u64,
    /// Calls hung up by the driver.
    pub hangups: u64,
    /// Sessions lost (link cuts, half-open links, restarts).
    pub outages: u64,
    /// Server restarts.
    pub restarts: u64,
    /// Gap notices (events dropped while the consumer stalled).
    pub gaps: u64,
    /// Resyncs the tracker completed.
    pub resyncs: u64,
    /// View checks against the simulator's table, and how many right after a resync.
    pub view_checks: u64,
    /// Of those, the first check after a resync.
    pub checks_after_resync: u64,
    /// View mismatches found (each is also a violation).
    pub mismatches: u64,
    /// Channels reported ended while unobserved.
    pub ended_unobserved: u64,
    /// Calls reported ended with some channel unobserved.
    pub calls_ended_unobserved: u64,
    /// Originates whose answer was lost (they went in doubt).
    pub in_doubt: u64,
    /// How the Originates ended: running, ended, failed, not_sent, not_running_now.
    pub resolved: BTreeMap<&'static str, u64>,
    /// How the Originates that went in doubt ended, the same way.
    pub in_doubt_resolved: BTreeMap<&'static str, u64>,
}

/// The scenario's length and rates.
#[derive(Debug, Clone)]
pub struct CallRunConfig {
    /// Virtual time to run; faults stop at 60 %, then the link heals.
    pub duration: Duration,
    /// Percent chance per step of a new Originate through the tracker.
    pub originate_rate: u64,
    /// Percent chance per step of a driver call or hangup.
    pub driver_rate: u64,
}

impl Default for CallRunConfig {
    fn default() -> Self {
        CallRunConfig {
            duration: Duration::from_secs(60),
            originate_rate: 3,
            driver_rate: 3,
        }
    }
}

fn client_config(seed: u64) -> ClientConfig {
    match ClientConfig::builder("admin", "amp111")
        .seed(seed)
        .event_queue_cap(96)
        .overflow(OverflowPolicy::DropOldest)
        .action_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(2))
        .pong_timeout(Duration::from_secs(2))
        .backoff_base(Duration::from_millis(50))
        .backoff_max(Duration::from_secs(2))
        .breaker_threshold(6)
        .breaker_cooldown(Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => unreachable!("scenario config is valid: {e}"),
    }
}

/// One client, one tracker, one simulated server.
pub struct CallHarness {
    rng: Rng,
    t0: Instant,
    now: Instant,
    server: SimServer,
    client: Client,
    tracker: CallTracker,
    session: Option<SessionId>,
    /// Tracker requests on the wire: ActionID to token.
    sent: BTreeMap<ActionId, u64>,
    consumer_paused_until: Option<Instant>,
    /// Uniqueids ever in the tracker's view.
    known: BTreeSet<String>,
    /// Uniqueids whose Hangup reached the tracker.
    hung_up: BTreeSet<String>,
    /// Driver calls that may still be up.
    driver_calls: Vec<CallId>,
    resynced_since_check: bool,
    /// Final states seen per Originate, and which went in doubt.
    finals: BTreeMap<String, OriginateState>,
    doubted: BTreeSet<String>,
    summary: CallRunSummary,
    violations: Violations,
    /// `AMI_CALLS_TRACE` set: print boundaries, updates, faults and driver calls.
    trace: bool,
}

impl CallHarness {
    /// A scenario for `seed` at virtual time `t0`.
    pub fn new(seed: u64, t0: Instant) -> CallHarness {
        let sim = SimConfig {
            seed: seed ^ 0x5eed_ca11,
            ..SimConfig::default()
        };
        let tracker = match TrackerConfig::builder()
            .tag_prefix(&format!("dst{seed}"))
            .build()
        {
            Ok(c) => CallTracker::new(c),
            Err(e) => unreachable!("scenario tracker config is valid: {e}"),
        };
        CallHarness {
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xca11),
            t0,
            now: t0,
            server: SimServer::new(sim, t0),
            client: Client::new(client_config(seed), t0),
            tracker,
            session: None,
            sent: BTreeMap::new(),
            consumer_paused_until: None,
            known: BTreeSet::new(),
            hung_up: BTreeSet::new(),
            driver_calls: Vec::new(),
            resynced_since_check: false,
            finals: BTreeMap::new(),
            doubted: BTreeSet::new(),
            summary: CallRunSummary::default(),
            violations: Violations::new(
                seed,
                t0,
                "AMI_CALLS_SEED",
                "calls_dst",
                "replay_calls_seed",
            ),
            trace: std::env::var_os("AMI_CALLS_TRACE").is_some(),
        }
    }

    fn violate(&mut self, what: String) {
        self.violations.push(self.now, what);
    }

    /// Moves bytes, outputs, stream items, answers and requests until nothing moves.
    fn pump(&mut self) {
        for _ in 0..256 {
            let mut progressed = false;
            loop {
                let output = self.client.poll_output();
                let link = &mut self.session;
                if link_output(&output, self.now, &mut self.client, &mut self.server, link) {
                    progressed = true;
                    continue;
                }
                match output {
                    Output::Notice(Notice::Completed { id, outcome }) => {
                        if let Some(token) = self.sent.remove(&id) {
                            self.tracker.handle_reply(self.now, token, outcome);
                        }
                    }
                    Output::Notice(Notice::Disconnected { .. }) => self.summary.outages += 1,
                    Output::Wait(_) => break,
                    _ => {}
                }
                progressed = true;
            }
            progressed |= shuttle(
                &mut self.rng,
                self.now,
                &mut self.client,
                &mut self.server,
                &mut self.session,
                |_| {},
            );
            progressed |= self.consume();
            while let Some(req) = self.tracker.poll_request() {
                match self
                    .client
                    .send_action_with(self.now, req.action, req.options)
                {
                    Ok(id) => {
                        self.sent.insert(id, req.token);
                    }
                    Err(_) => self.tracker.send_failed(self.now, req.token),
                }
                progressed = true;
            }
            self.read_updates();
            for ch in self.tracker.channels() {
                if !self.known.contains(&ch.uniqueid) {
                    self.known.insert(ch.uniqueid.clone());
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn consume(&mut self) -> bool {
        if self.consumer_paused_until.is_some_and(|t| self.now < t) {
            return false;
        }
        let mut any = false;
        while let Some(item) = self.client.poll_event() {
            any = true;
            match &item {
                ami_proto::StreamItem::Event(m)
                    if m.event().is_some_and(|e| e.eq_ignore_ascii_case("Hangup")) =>
                {
                    if let Some(u) = m.get_str("Uniqueid") {
                        self.hung_up.insert(u.to_string());
                    }
                }
                ami_proto::StreamItem::Gap { .. } => self.summary.gaps += 1,
                _ => {}
            }
            if self.trace {
                let at = self.now.duration_since(self.t0).as_millis();
                match &item {
                    ami_proto::StreamItem::Event(m) => {
                        let n = m.event().unwrap_or("?");
                        if ["Newchannel", "Hangup", "Shutdown"].contains(&n) {
                            eprintln!("{at} ev {n} {}", m.get_str("Uniqueid").unwrap_or(""));
                        }
                    }
                    other => eprintln!("{at} item {other:?}"),
                }
            }
            self.tracker.handle_item(self.now, &item);
        }
        any
    }

    fn read_updates(&mut self) {
        while let Some(u) = self.tracker.poll_update() {
            if self.trace {
                eprintln!(
                    "{} update {u:?}",
                    self.now.duration_since(self.t0).as_millis()
                );
            }
            match u {
                CallUpdate::Resynced(_) => {
                    self.summary.resyncs += 1;
                    self.resynced_since_check = true;
                }
                CallUpdate::CallEnded(call) if call.unobserved() => {
                    self.summary.calls_ended_unobserved += 1;
                }
                CallUpdate::Originate { tag, state } => {
                    let tag = tag.to_string();
                    if state == OriginateState::InDoubt && self.doubted.insert(tag.clone()) {
                        self.summary.in_doubt += 1;
                    }
                    if state == OriginateState::NotRunningNow {
                        let carrying = self.server.channel_table().into_iter().find(|r| {
                            r.variables
                                .iter()
                                .any(|(k, v)| k == "AMIRS_ORIGINATE" && *v == tag)
                        });
                        if let Some(row) = carrying {
                            self.violate(format!(
                                "{tag} resolved not running, but {} carries its tag",
                                row.uniqueid
                            ));
                        }
                    }
                    if state.is_final() {
                        if let Some(before) = self.finals.insert(tag.clone(), state.clone()) {
                            self.violate(format!("{tag} final twice: {before:?} then {state:?}"));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// True when every byte the server sent has been read and every item fed, the tracker
    /// is live and nothing of its own is on the wire: its view must equal the server's.
    fn quiescent(&self) -> bool {
        let Some(s) = self.session else {
            return false;
        };
        self.client.is_ready()
            && !self.server.is_half_open(s)
            && self.server.undelivered(s) == 0
            && self.client.transmit().is_empty()
            && self.client.events_queued() == 0
            && !self.tracker.is_stale()
            && self.consumer_paused_until.is_none_or(|t| self.now >= t)
    }

    fn check_view(&mut self) {
        if !self.quiescent() {
            return;
        }
        self.summary.view_checks += 1;
        if std::mem::take(&mut self.resynced_since_check) {
            self.summary.checks_after_resync += 1;
        }
        let table = self.server.channel_table();
        let mine: BTreeMap<&str, _> = self
            .tracker
            .channels()
            .map(|c| (c.uniqueid.as_str(), c))
            .collect();
        let mut diffs = Vec::new();
        for row in &table {
            match mine.get(row.uniqueid.as_str()) {
                None => diffs.push(format!("{} ({}) missing", row.uniqueid, row.name)),
                Some(c) => {
                    let theirs = (
                        &row.linkedid,
                        &row.name,
                        row.state,
                        &row.caller_id_num,
                        &row.context,
                        &row.exten,
                    );
                    let ours = (
                        &c.linkedid,
                        &c.name,
                        c.state.code(),
                        &c.caller_id_num,
                        &c.context,
                        &c.exten,
                    );
                    if theirs != ours {
                        diffs.push(format!(
                            "{}: server {theirs:?}, tracker {ours:?}",
                            row.uniqueid
                        ));
                    }
                }
            }
        }
        let theirs: BTreeSet<&str> = table.iter().map(|r| r.uniqueid.as_str()).collect();
        for uid in mine.keys() {
            if !theirs.contains(uid) {
                let c = mine[uid];
                diffs.push(format!(
                    "{uid} tracked but not on the server (last seen {} ms, adopted {}, hangup fed {})",
                    c.last_seen.duration_since(self.t0).as_millis(),
                    c.adopted,
                    self.hung_up.contains(*uid)
                ));
            }
        }
        if !diffs.is_empty() {
            self.summary.mismatches += 1;
            let n = diffs.len();
            diffs.truncate(4);
            self.violate(format!(
                "view differs from the server in {n} ways: {diffs:?}"
            ));
        }
    }

    fn originate(&mut self) {
        let (exten, data) = [
            ("wait10", "3"),
            ("hold", "30"),
            ("echo", "2"),
            ("busy", "1"),
            ("hangup", "1"),
            ("noanswer", "1"),
            ("100", "5"),
        ][self.rng.below(7) as usize];
        let action = Action::new("Originate")
            .field("Channel", format!("Local/{exten}@ami-test"))
            .field("Application", "Wait")
            .field("Data", data)
            .field("Timeout", "3000")
            .field("CallerID", format!("DST <{}>", 6000 + self.rng.below(1000)))
            .field("Async", "true");
        if self.tracker.originate(action).is_ok() {
            self.summary.originates += 1;
        }
    }

    fn driver(&mut self) {
        if self.driver_calls.is_empty() || self.rng.chance(55) {
            let exten = ["wait10", "hold", "echo", "100", "101"][self.rng.below(5) as usize];
            let mut req = CallRequest::new(
                &format!("Local/{exten}@ami-test"),
                1 + self.rng.below(20) as u32,
            );
            req.caller_id = Some(format!("Driver <{}>", 7000 + self.rng.below(1000)));
            if self.trace {
                eprintln!(
                    "{} driver call {req:?}",
                    self.now.duration_since(self.t0).as_millis()
                );
            }
            if let Some(id) = self.server.originate_call(self.now, req) {
                self.summary.driver_calls += 1;
                self.driver_calls.push(id);
            }
        } else {
            let k = self.rng.below(self.driver_calls.len() as u64) as usize;
            let id = self.driver_calls.swap_remove(k);
            if self.server.hangup_call(self.now, id) {
                self.summary.hangups += 1;
            }
        }
    }

    fn fault(&mut self) {
        let now = self.now;
        let which = self.rng.below(6);
        if self.trace {
            eprintln!("{} fault {which}", now.duration_since(self.t0).as_millis());
        }
        match which {
            0 => {
                let down = Duration::from_millis(200 + self.rng.below(2000));
                self.server.inject(now, Fault::Restart { down_for: down });
                self.summary.restarts += 1;
            }
            1 => {
                if let Some(s) = self.session {
                    self.server
                        .inject(now, Fault::ResetMidMessage { session: Some(s) });
                }
            }
            2 => {
                if let Some(s) = self.session {
                    self.server
                        .inject(now, Fault::HalfOpen { session: Some(s) });
                }
            }
            3 => {
                self.server.faults().delay_replies(
                    crate::ActionMatch::any().with_probability(0.3),
                    Duration::from_millis(self.rng.below(3000)),
                );
            }
            _ => {
                // A stalled consumer: the client's queue overflows and drops events.
                self.consumer_paused_until =
                    Some(now + Duration::from_millis(200 + self.rng.below(3000)));
            }
        }
    }

    /// What the run did.
    pub fn summary(&self) -> &CallRunSummary {
        &self.summary
    }

    /// Runs the scenario; returns the violations (empty: every promise held).
    pub fn run(&mut self, cfg: &CallRunConfig) -> Vec<Violation> {
        let first_fault = Duration::from_millis(1000 + self.rng.below(4000));
        run_scenario(self, cfg, cfg.duration, first_fault, true)
    }
}

impl Scenario for CallHarness {
    type Config = CallRunConfig;

    fn parts(&mut self) -> (&mut Rng, &mut Instant, &mut Client, &mut SimServer) {
        (
            &mut self.rng,
            &mut self.now,
            &mut self.client,
            &mut self.server,
        )
    }

    fn violations(&mut self) -> &mut Violations {
        &mut self.violations
    }

    fn pump(&mut self) {
        CallHarness::pump(self);
    }

    fn act(&mut self, cfg: &CallRunConfig, plan: &Plan) {
        // The last ten seconds place nothing new, so every Originate can be resolved.
        let placing = self.now + Duration::from_secs(10) < plan.end;
        if placing && self.client.is_ready() && self.rng.chance(cfg.originate_rate) {
            self.originate();
        }
        if self.rng.chance(cfg.driver_rate) {
            self.driver();
        }
    }

    fn inject(&mut self) -> Duration {
        self.fault();
        Duration::from_millis(500 + self.rng.below(5000))
    }

    fn quiet(&mut self, _: &Plan) {
        self.server.faults().clear();
    }

    fn check(&mut self) {
        self.check_view();
    }

    fn finish(&mut self) {
        if !self.quiescent() {
            let what = format!(
                "not settled at the end: ready {}, stale {}, queued events {}",
                self.client.is_ready(),
                self.tracker.is_stale(),
                self.client.events_queued()
            );
            self.violate(what);
            return;
        }
        let name_of = |state: &OriginateState| match state {
            OriginateState::Running { .. } => "running",
            OriginateState::Ended { .. } => "ended",
            OriginateState::Failed { .. } => "failed",
            OriginateState::NotSent => "not_sent",
            OriginateState::NotRunningNow => "not_running_now",
            _ => "unresolved",
        };
        for tag in &self.doubted {
            let name = match self.finals.get(tag) {
                Some(state) => name_of(state),
                None => "running",
            };
            *self.summary.in_doubt_resolved.entry(name).or_insert(0) += 1;
        }
        for (tag, state) in self.tracker.originates() {
            if !matches!(state, OriginateState::Running { .. }) {
                let what = format!("{tag} left {state:?} at the end");
                self.violations.push(self.now, what);
            }
            *self.summary.resolved.entry("running").or_insert(0) += 1;
        }
        for state in self.finals.values() {
            *self.summary.resolved.entry(name_of(state)).or_insert(0) += 1;
        }
        let resolved: u64 = self.summary.resolved.values().sum();
        if resolved != self.summary.originates {
            let what = format!(
                "{} Originates sent, {resolved} resolved",
                self.summary.originates
            );
            self.violate(what);
        }
        // Channels the tracker knew, gone from the server, whose Hangup it never got.
        let live: BTreeSet<String> = self
            .server
            .channel_table()
            .into_iter()
            .map(|r| r.uniqueid)
            .collect();
        let expected = self
            .known
            .iter()
            .filter(|u| !self.hung_up.contains(*u) && !live.contains(*u))
            .count() as u64;
        self.summary.ended_unobserved = self.tracker.stats().ended_unobserved;
        if expected != self.summary.ended_unobserved {
            let what = format!(
                "{} channels reported ended while unobserved, {expected} really ended unseen",
                self.summary.ended_unobserved
            );
            self.violate(what);
        }
    }
}

/// Runs one seed with the default scenario.
pub fn run_calls_seed(seed: u64) -> (CallRunSummary, Vec<Violation>) {
    let mut h = CallHarness::new(seed, Instant::now());
    let v = h.run(&CallRunConfig::default());
    (h.summary.clone(), v)
}

/// A short script for the adapters' loopback tests of the call tracker against a
/// [`TcpFront`](crate::tcp::TcpFront), written once for every adapter: a call placed through
/// the tracker is followed to its end; a call by another user is seen; the server restarts
/// with it up, and the tracker reports it ended while unobserved and ends up equal to the
/// server's table.
///
/// The test feeds the tracker as an application does (stream items, answers, requests) and
/// calls [`advance`](Self::advance) after each round; `Ok(true)` means done.
#[derive(Debug, Default)]
pub struct TrackerScript {
    stage: u8,
    tag: Option<ami_proto::calls::OriginateTag>,
    seen_running: bool,
    restart_mark: usize,
}

impl TrackerScript {
    /// A script at its start.
    pub fn new() -> TrackerScript {
        TrackerScript::default()
    }

    /// Moves the script on once `tracker` (and the `updates` it produced so far, in order)
    /// reach the next stage; `Err` names a broken promise.
    pub fn advance(
        &mut self,
        tracker: &mut CallTracker,
        updates: &[CallUpdate],
        front: &crate::tcp::TcpFront,
    ) -> Result<bool, String> {
        match self.stage {
            0 if !tracker.is_stale() => {
                let action = Action::new("Originate")
                    .field("Channel", "Local/wait10@ami-test")
                    .field("Application", "Wait")
                    .field("Data", "1")
                    .field("Async", "true");
                self.tag = Some(tracker.originate(action).map_err(|e| e.to_string())?);
                self.stage = 1;
            }
            1 => {
                for u in updates {
                    if let CallUpdate::Originate { tag, state } = u {
                        if Some(tag) != self.tag.as_ref() {
                            continue;
                        }
                        match state {
                            OriginateState::Running { .. } => self.seen_running = true,
                            OriginateState::Ended {
                                unobserved: false, ..
                            } if self.seen_running => {
                                front.with_server(|srv, now| {
                                    srv.originate_call(
                                        now,
                                        CallRequest::new("Local/hold@ami-test", 60),
                                    )
                                });
                                self.stage = 2;
                            }
                            OriginateState::Pending => {}
                            other => return Err(format!("the Originate ended {other:?}")),
                        }
                    }
                }
            }
            2 if tracker.channels().len() == 2 && !tracker.is_stale() => {
                self.restart_mark = updates.len();
                front.restart(Duration::from_millis(300));
                self.stage = 3;
            }
            3 if !tracker.is_stale() => {
                let after = &updates[self.restart_mark.min(updates.len())..];
                let resynced = after
                    .iter()
                    .any(|u| matches!(u, CallUpdate::Resynced(r) if r.ended_unobserved == 2));
                if !resynced {
                    return Ok(false);
                }
                let unseen = after.iter().any(|u| {
                    matches!(u, CallUpdate::CallEnded(c) if c.unobserved() && c.cause().is_none())
                });
                if !unseen {
                    return Err("the call that died with the server was not reported".into());
                }
                let table: BTreeSet<String> = front
                    .with_server(|srv, _| srv.channel_table())
                    .into_iter()
                    .map(|r| r.uniqueid)
                    .collect();
                let mine: BTreeSet<String> =
                    tracker.channels().map(|c| c.uniqueid.clone()).collect();
                if table != mine {
                    return Err(format!("view {mine:?} but the server has {table:?}"));
                }
                return Ok(true);
            }
            _ => {}
        }
        Ok(false)
    }
}
