//! Deterministic simulation: an ami-proto [`Client`](ami_proto::Client) and a [`SimServer`] joined by an
//! in-memory link on one virtual clock. A seed fixes everything: the workload, the fault
//! schedule, how bytes are split on the link, and the client's own jitter.
//!
//! After every step the harness checks the laws the client promises:
//! each ActionID completes exactly once; a success only from a success the server actually
//! sent (the harness decodes the server's bytes itself), and a list that succeeds holds
//! exactly the items the server sent in it, in order; nothing in flight survives a
//! disconnect; caps hold; every dropped event is accounted for by a gap notice; and the
//! client is Ready again after the server comes back.

use crate::clock::later;
use crate::{Fault, SessionId, SimConfig, SimServer};
use ami_proto::{
    Action, ActionError, ActionId, Client, ClientConfig, Decoder, DecoderLimits, DisconnectReason,
    Frame, Input, Notice, Outcome, Output, StreamItem,
};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// SplitMix64 for the harness's own choices (separate from the server's and the client's).
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Moves bytes once each way between `client` and its simulated `session`, in random pieces:
/// the link of every simulation here. `tap` sees what the server sent; an EOF from the server
/// ends the session. Returns whether anything moved.
pub(crate) fn shuttle(
    rng: &mut Rng,
    now: Instant,
    client: &mut Client,
    server: &mut SimServer,
    session: &mut Option<SessionId>,
    mut tap: impl FnMut(&[u8]),
) -> bool {
    let Some(s) = *session else {
        return false;
    };
    let mut moved = false;
    let out = client.transmit();
    if !out.is_empty() {
        let n = 1 + rng.below(out.len() as u64) as usize;
        let n = if rng.chance(70) { out.len() } else { n };
        let chunk = out[..n].to_vec();
        client.advance_transmit(n);
        server.receive(s, now, &chunk);
        moved = true;
    }
    let avail = server.transmit(s).len();
    if avail > 0 {
        let n = if rng.chance(60) {
            avail
        } else {
            1 + rng.below(avail as u64) as usize
        };
        let chunk = server.transmit(s)[..n].to_vec();
        server.advance_transmit(s, n);
        tap(&chunk);
        client.handle_input(now, Input::Received(&chunk));
        moved = true;
    } else if server.is_eof(s) {
        *session = None;
        server.forget(s);
        client.handle_input(now, Input::Eof);
        moved = true;
    }
    moved
}

/// Carries out an output that belongs to the link: `Connect` opens a session on the server
/// and reports it open, `Close` ends it. False for any other output.
pub(crate) fn link_output(
    output: &Output,
    now: Instant,
    client: &mut Client,
    server: &mut SimServer,
    session: &mut Option<SessionId>,
) -> bool {
    match output {
        Output::Connect => {
            *session = Some(server.accept(now));
            client.handle_input(now, Input::Connected);
            true
        }
        Output::Close => {
            if let Some(s) = session.take() {
                server.client_closed(s, now);
                server.forget(s);
            }
            true
        }
        _ => false,
    }
}

/// When a run ends and when its faults stop (at 60 %, so the client must settle after).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) end: Instant,
    pub(crate) quiet_from: Instant,
}

/// A seeded scenario over one client and one simulated server: the steps that differ
/// between simulations. [`run_scenario`] is the loop they share.
pub(crate) trait Scenario {
    /// The run's options.
    type Config;
    /// The harness's random choices, the virtual clock, and the two sides.
    fn parts(&mut self) -> (&mut Rng, &mut Instant, &mut Client, &mut SimServer);
    /// The violations found so far.
    fn violations(&mut self) -> &mut Violations;
    /// Moves outputs, bytes and items until nothing moves, checking as it goes.
    fn pump(&mut self);
    /// What the users do in one step.
    fn act(&mut self, cfg: &Self::Config, plan: &Plan);
    /// Injects one fault; returns how long until the next one.
    fn inject(&mut self) -> Duration;
    /// One step of the quiet part (faults over).
    fn quiet(&mut self, plan: &Plan);
    /// A check after every pump.
    fn check(&mut self) {}
    /// The end-of-run checks.
    fn finish(&mut self);
}

/// The run loop of every simulation here: act, inject faults until 60 % of `duration`,
/// pump, step the clock, pump, stop at the first violation, finish. `first_fault` is when
/// the first fault comes (drawn by the caller, so each scenario keeps its own schedule);
/// `faults: false` injects none.
pub(crate) fn run_scenario<S: Scenario>(
    s: &mut S,
    cfg: &S::Config,
    duration: Duration,
    first_fault: Duration,
    faults: bool,
) -> Vec<Violation> {
    let t0 = s.violations().t0;
    let plan = Plan {
        end: later(t0, duration),
        quiet_from: later(t0, duration.mul_f64(0.6)),
    };
    let mut next_fault = later(t0, first_fault);
    s.pump();
    while *s.parts().1 < plan.end {
        s.act(cfg, &plan);
        let now = *s.parts().1;
        if faults && now >= next_fault && now < plan.quiet_from {
            next_fault = later(now, s.inject());
        }
        if now >= plan.quiet_from {
            s.quiet(&plan);
        }
        s.pump();
        s.check();
        let (rng, now, client, server) = s.parts();
        step_clock(rng, now, client, server);
        s.pump();
        s.check();
        if !s.violations().list.is_empty() {
            break;
        }
    }
    s.finish();
    std::mem::take(&mut s.violations().list)
}

/// Moves virtual time to the next thing that can happen on either side, at most 50 ms on,
/// and fires what is due there.
pub(crate) fn step_clock(
    rng: &mut Rng,
    now: &mut Instant,
    client: &mut Client,
    server: &mut SimServer,
) {
    let mut next = *now + Duration::from_millis(1 + rng.below(50));
    for t in [client.poll_timeout(), server.poll_timeout()]
        .into_iter()
        .flatten()
    {
        if t > *now && t < next {
            next = t;
        }
    }
    *now = next;
    client.handle_timeout(next);
    server.handle_timeout(next);
}

/// A broken law, with enough context to debug it from the seed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seed {seed} at {at_ms} ms: {what}\n  replay: {replay}")]
pub struct Violation {
    /// The seed that reproduces it.
    pub seed: u64,
    /// Virtual milliseconds since the start.
    pub at_ms: u128,
    /// What went wrong.
    pub what: String,
    /// The command that replays the seed.
    pub replay: String,
}

/// The violations of one run: the first few, each with its replay line.
#[derive(Debug)]
pub(crate) struct Violations {
    seed: u64,
    /// The run's start.
    pub(crate) t0: Instant,
    replay: String,
    pub(crate) list: Vec<Violation>,
}

impl Violations {
    /// `replay` names the environment variable and the test that replay a seed.
    pub(crate) fn new(seed: u64, t0: Instant, env: &str, test: &str, case: &str) -> Violations {
        Violations {
            seed,
            t0,
            replay: format!(
                "{env}={seed} cargo test -p ami-sim --test {test} -- {case} --exact --nocapture"
            ),
            list: Vec::new(),
        }
    }

    /// Records one (the first eight are kept: later ones follow from them).
    pub(crate) fn push(&mut self, now: Instant, what: String) {
        if self.list.len() < 8 {
            self.list.push(Violation {
                seed: self.seed,
                at_ms: now.duration_since(self.t0).as_millis(),
                what,
                replay: self.replay.clone(),
            });
        }
    }
}

/// What one seeded run did, for reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Actions sent by the workload.
    pub actions: u64,
    /// Of those, completed with success.
    pub successes: u64,
    /// Times the client reached Ready.
    pub readies: u64,
    /// Disconnects seen.
    pub disconnects: u64,
    /// Events consumed.
    pub events: u64,
    /// Events reported lost in gap notices.
    pub gaps: u64,
    /// Faults injected.
    pub faults: u64,
    /// Actions sent once the link was healthy again (each must get a server answer).
    pub healthy_actions: u64,
}

/// Options for one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Virtual time to run.
    pub duration: Duration,
    /// Percent chance per step that the workload sends an action.
    pub action_rate: u64,
    /// Whether to inject faults.
    pub faults: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            duration: Duration::from_secs(60),
            action_rate: 8,
            faults: true,
        }
    }
}

/// The server's successes, as decoded by the harness from the bytes it delivered.
#[derive(Debug, Default)]
struct Tap {
    decoder: Option<Decoder>,
    /// ActionIDs for which the server sent `Response: Success` (or `Goodbye`).
    success: HashSet<String>,
    /// ActionIDs for which the server sent an `OriginateResponse` with `Response: Success`.
    originate_success: HashSet<String>,
    /// The lists the server answered with (`EventList: start`), by ActionID: the first
    /// one's items, and whether it completed them. A list action that succeeds delivers
    /// exactly these, in this order.
    lists: HashMap<String, ServerList>,
}

/// One list as the server sent it.
#[derive(Debug, Default)]
struct ServerList {
    /// Each item's bytes, as sent.
    items: Vec<Vec<u8>>,
    /// The server sent its `EventList: Complete` event.
    completed: bool,
}

impl Tap {
    fn reset(&mut self) {
        self.decoder = Some(Decoder::new(DecoderLimits::default()));
        // The lists of the connection that ended can complete no more (some answered
        // actions that had already ended, never removed by a completion).
        self.lists.clear();
    }
    fn see(&mut self, bytes: &[u8]) {
        let Some(d) = self.decoder.as_mut() else {
            return;
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = d.feed(rest);
            rest = &rest[n..];
            while let Some(f) = d.decode() {
                let Ok(Frame::Message(m)) = f else { continue };
                let Some(id) = m.action_id() else { continue };
                let ok = m.get_str("Response").is_some_and(|r| {
                    r.eq_ignore_ascii_case("Success") || r.eq_ignore_ascii_case("Goodbye")
                });
                let list_field = m.get("EventList").map(|v| v.trim());
                if m.event()
                    .is_some_and(|e| e.eq_ignore_ascii_case("OriginateResponse"))
                {
                    if ok {
                        self.originate_success.insert(id.to_string());
                    }
                } else if m.response().is_some() && ok {
                    self.success.insert(id.to_string());
                    if list_field.is_some_and(|v| v.is_word("start")) {
                        // A second answer (a duplicated reply) starts no second list.
                        self.lists.entry(id.to_string()).or_default();
                    }
                } else if m.event().is_some() {
                    if let Some(list) = self.lists.get_mut(id).filter(|l| !l.completed) {
                        if list_field.is_some_and(|v| v.is_word("Complete")) {
                            list.completed = true;
                        } else {
                            list.items.push(m.wire_bytes().to_vec());
                        }
                    }
                }
            }
        }
    }
}

/// One client and one simulated server on a virtual clock.
pub struct Harness {
    rng: Rng,
    t0: Instant,
    /// The virtual now.
    pub now: Instant,
    /// The simulated server.
    pub server: SimServer,
    /// The client under test.
    pub client: Client,
    session: Option<SessionId>,
    tap: Tap,
    /// Every ActionID sent, with how many times it completed.
    completions: HashMap<ActionId, u32>,
    /// ActionIDs that are async Originates.
    originates: HashSet<ActionId>,
    /// Events popped from the stream and gap totals.
    consumed: u64,
    gap_total: u64,
    /// Steps during which the consumer does not read (a slow consumer).
    consumer_paused_until: Option<Instant>,
    /// When the server is expected to be reachable again (after a restart).
    server_back_at: Option<Instant>,
    ready: bool,
    /// The stream said a session is up (a `Ready` item not yet followed by `Disconnected`).
    stream_session_up: bool,
    last_ready: Option<Instant>,
    /// From this instant on the link is healthy: new actions must get a server answer.
    healthy_from: Option<Instant>,
    /// Actions sent while healthy.
    healthy_actions: HashSet<ActionId>,
    closing: bool,
    /// Results.
    pub summary: RunSummary,
    violations: Violations,
    client_config: ClientConfig,
}

/// The client config every run uses: small caps so the limits are exercised.
pub fn client_config(seed: u64) -> ClientConfig {
    match ClientConfig::builder("admin", "amp111")
        .seed(seed)
        .event_queue_cap(256)
        .pipeline_depth(8)
        .max_queued_actions(64)
        .max_pending_actions(128)
        .max_list_items(500)
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
        Err(e) => unreachable!("harness config is valid: {e}"),
    }
}

impl Harness {
    /// A harness for `seed`, at virtual time `t0`.
    pub fn new(seed: u64, t0: Instant) -> Harness {
        let sim = SimConfig {
            seed: seed ^ 0xa5a5_5a5a,
            ..SimConfig::default()
        };
        let server = SimServer::new(sim, t0);
        let client_config = client_config(seed);
        let client = Client::new(client_config.clone(), t0);
        Harness {
            rng: Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d)),
            t0,
            now: t0,
            server,
            client,
            session: None,
            tap: Tap::default(),
            completions: HashMap::new(),
            originates: HashSet::new(),
            consumed: 0,
            gap_total: 0,
            consumer_paused_until: None,
            server_back_at: None,
            ready: false,
            stream_session_up: false,
            last_ready: None,
            healthy_from: None,
            healthy_actions: HashSet::new(),
            closing: false,
            summary: RunSummary::default(),
            violations: Violations::new(seed, t0, "AMI_DST_SEED", "dst", "replay_seed"),
            client_config,
        }
    }

    fn violate(&mut self, what: String) {
        self.violations.push(self.now, what);
    }

    /// Drains the client's outputs, moving bytes both ways, and checks the laws.
    fn pump(&mut self) {
        for _ in 0..64 {
            let mut progressed = false;
            loop {
                let output = self.client.poll_output();
                let link = &mut self.session;
                if link_output(&output, self.now, &mut self.client, &mut self.server, link) {
                    if matches!(output, Output::Connect) {
                        self.tap.reset();
                    }
                    progressed = true;
                    continue;
                }
                match output {
                    Output::Notice(Notice::Ready { .. }) => {
                        self.ready = true;
                        self.last_ready = Some(self.now);
                        self.summary.readies += 1;
                    }
                    Output::Notice(Notice::Completed { id, outcome }) => {
                        self.on_completed(id, outcome)
                    }
                    Output::Notice(Notice::Disconnected { .. }) => {
                        self.ready = false;
                        self.summary.disconnects += 1;
                        let s = self.client.stats();
                        if s.in_flight != 0 || s.pending != s.queued {
                            self.violate(format!(
                                "after a disconnect {} actions are still in flight ({} pending, {} queued)",
                                s.in_flight, s.pending, s.queued
                            ));
                        }
                    }
                    Output::Notice(Notice::Closed { reason }) => {
                        self.ready = false;
                        if !matches!(
                            reason,
                            DisconnectReason::LocalClose | DisconnectReason::Logoff
                        ) {
                            self.violate(format!("client closed for good: {reason}"));
                        }
                    }
                    Output::Wait(_) => break,
                    _ => {}
                }
                progressed = true;
            }
            let tap = &mut self.tap;
            progressed |= shuttle(
                &mut self.rng,
                self.now,
                &mut self.client,
                &mut self.server,
                &mut self.session,
                |chunk| tap.see(chunk),
            );
            self.consume();
            self.check_caps();
            if !progressed {
                return;
            }
        }
    }

    fn consume(&mut self) {
        if self.consumer_paused_until.is_some_and(|t| self.now < t) {
            return;
        }
        while let Some(item) = self.client.poll_event() {
            match item {
                StreamItem::Event(_) => self.consumed += 1,
                StreamItem::Gap { dropped } => {
                    if dropped == 0 {
                        self.violate("gap notice with zero events".into());
                    }
                    self.gap_total += dropped;
                }
                // Session boundaries alternate, Ready first, and match the outputs.
                StreamItem::Ready { .. } => {
                    if self.stream_session_up {
                        self.violate("two Ready stream items with no loss between".into());
                    }
                    self.stream_session_up = true;
                }
                StreamItem::Disconnected { .. } => {
                    if !self.stream_session_up {
                        self.violate("a Disconnected stream item with no Ready before".into());
                    }
                    self.stream_session_up = false;
                }
                _ => {}
            }
        }
    }

    fn check_caps(&mut self) {
        let s = self.client.stats();
        let (max_pending, event_cap) = (
            self.client_config.max_pending_actions(),
            self.client_config.event_queue_cap(),
        );
        if s.pending > max_pending {
            self.violate(format!("pending {} over its cap", s.pending));
        }
        if s.in_flight > 8 {
            self.violate(format!("in flight {} over the pipeline depth", s.in_flight));
        }
        let decoder_cap = self.client_config.decoder_limits().buffer_cap();
        if s.decoder_buffered > decoder_cap {
            self.violate(format!(
                "decoder holds {} bytes, over its cap",
                s.decoder_buffered
            ));
        }
        // Written actions are bounded by the pipeline (8) plus internal ones; each at most
        // Asterisk's 128 lines of 1024 bytes.
        if s.transmit_pending > 16 * 128 * 1024 {
            self.violate(format!("transmit buffer {} bytes", s.transmit_pending));
        }
        if s.event_queue_len > event_cap {
            self.violate(format!("event queue {} over its cap", s.event_queue_len));
        }
        if s.event_queue_bytes > self.client_config.event_queue_bytes() {
            self.violate(format!("event queue holds {} bytes", s.event_queue_bytes));
        }
        if s.decoder_allocated > decoder_cap {
            self.violate(format!("decoder allocated {} bytes", s.decoder_allocated));
        }
    }

    fn on_completed(&mut self, id: ActionId, outcome: Outcome) {
        let n = self.completions.entry(id.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            let what = format!("{id} completed {n} times");
            self.violate(what);
            return;
        }
        if !self.closing && self.healthy_actions.contains(&id) {
            let answered = matches!(
                outcome,
                Ok(_) | Err(ActionError::Server(_)) | Err(ActionError::Cancelled)
            );
            if !answered {
                self.violate(format!(
                    "{id} was sent on a healthy link but ended {outcome:?}"
                ));
            }
        }
        if let Ok(resp) = &outcome {
            self.summary.successes += 1;
            if resp.message().action_id() != Some(id.as_str()) {
                self.violate(format!("{id} succeeded with another action's response"));
            }
            let server_said = if self.originates.contains(&id) {
                self.tap.originate_success.contains(id.as_str())
                    && self.tap.success.contains(id.as_str())
            } else {
                self.tap.success.contains(id.as_str())
            };
            if !server_said {
                self.violate(format!(
                    "{id} succeeded but the server never sent that success"
                ));
            }
        }
        if let Some(list) = self.tap.lists.remove(id.as_str()) {
            if let Ok(resp) = &outcome {
                let delivered = resp.items().iter().map(|m| m.wire_bytes());
                if !list.completed {
                    self.violate(format!(
                        "{id}: a list succeeded that the server never completed"
                    ));
                } else if resp.items_dropped() == 0
                    && delivered.ne(list.items.iter().map(Vec::as_slice))
                {
                    self.violate(format!(
                        "{id}: the list delivered {} items, not the {} the server sent, in order",
                        resp.items().len(),
                        list.items.len()
                    ));
                }
            }
        }
    }

    /// Sends one random action, as a dialer would.
    fn workload(&mut self) {
        let action = match self.rng.below(10) {
            0..=2 => Action::new("Ping"),
            3 => Action::new("CoreShowChannels"),
            4 => Action::new("Status"),
            5 => Action::new("Command").field("Command", "core show version"),
            6 => Action::new("UserEvent").field("UserEvent", "Dst"),
            7 => Action::new("Getvar").field("Variable", "EPOCH"),
            _ => {
                let exten =
                    ["echo", "busy", "userevent", "wait10", "nosuch"][self.rng.below(5) as usize];
                Action::new("Originate")
                    .field("Channel", format!("Local/{exten}@ami-test"))
                    .field("Application", "Wait")
                    .field("Data", "1")
                    .field("Timeout", "3000")
                    .field("Async", "true")
            }
        };
        let is_originate = action.is("Originate");
        match self.client.send_action(self.now, action) {
            Ok(id) => {
                self.summary.actions += 1;
                if is_originate {
                    self.originates.insert(id.clone());
                }
                if self.healthy_from.is_some_and(|t| self.now >= t) {
                    self.healthy_actions.insert(id.clone());
                }
                self.completions.entry(id.clone()).or_insert(0);
                if self.rng.chance(3) {
                    self.client.cancel(self.now, &id);
                }
            }
            Err(ami_proto::SendError::QueueFull { .. }) => {}
            Err(e) => self.violate(format!("send_action refused a valid action: {e}")),
        }
    }

    fn inject_fault(&mut self) {
        self.summary.faults += 1;
        let now = self.now;
        match self.rng.below(12) {
            0 => {
                let down = Duration::from_millis(200 + self.rng.below(3000));
                self.server_back_at = Some(now + down);
                self.server.inject(now, Fault::Restart { down_for: down });
            }
            1 => self.server.inject(
                now,
                Fault::EventStorm {
                    count: 500 + self.rng.below(3000) as usize,
                },
            ),
            2 => {
                if let Some(s) = self.session {
                    self.server
                        .inject(now, Fault::ResetMidMessage { session: Some(s) });
                }
            }
            3 => {
                if let Some(s) = self.session {
                    self.server
                        .inject(now, Fault::HalfOpen { session: Some(s) });
                }
            }
            4 => {
                self.server
                    .faults()
                    .set_max_chunk(Some(1 + self.rng.below(64) as usize));
            }
            5 => {
                self.server.faults().delay_replies(
                    crate::ActionMatch::any().with_probability(0.3),
                    Duration::from_millis(self.rng.below(8000)),
                );
            }
            6 => {
                self.server
                    .faults()
                    .drop_actions(crate::ActionMatch::any().with_probability(0.1));
            }
            7 => {
                self.server
                    .faults()
                    .duplicate_replies(crate::ActionMatch::any().with_probability(0.2));
            }
            8 => {
                self.server
                    .faults()
                    .foreign_action_ids(crate::ActionMatch::any().with_probability(0.2));
            }
            9 => {
                self.server
                    .faults()
                    .garbage_lines(0.05, b"%%garbage%% no colon here");
                self.server.faults().overlong_lines(0.02, 5000);
            }
            10 => {
                self.server.faults().non_utf8_caller_names(true);
            }
            _ => {
                self.consumer_paused_until =
                    Some(now + Duration::from_millis(self.rng.below(4000)));
            }
        }
    }

    /// Runs the seeded scenario; returns the violations found (empty: every law held).
    pub fn run(&mut self, cfg: &RunConfig) -> Vec<Violation> {
        let first_fault = Duration::from_millis(500 + self.rng.below(5000));
        run_scenario(self, cfg, cfg.duration, first_fault, cfg.faults)
    }
}

impl Scenario for Harness {
    type Config = RunConfig;

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
        Harness::pump(self);
    }

    fn act(&mut self, cfg: &RunConfig, _: &Plan) {
        if self.ready && self.rng.chance(cfg.action_rate) {
            self.workload();
        }
    }

    fn inject(&mut self) -> Duration {
        self.inject_fault();
        Duration::from_millis(500 + self.rng.below(6000))
    }

    fn quiet(&mut self, plan: &Plan) {
        if self.healthy_from.is_some() {
            return;
        }
        // The last 40 %: faults off, so the client must come back and settle. Ten seconds
        // covers a half-open link's detection and the longest backoff.
        self.server.faults().clear();
        self.consumer_paused_until = None;
        let settle = self
            .server_back_at
            .map_or(plan.quiet_from, |t| t.max(plan.quiet_from));
        self.healthy_from = Some(settle + Duration::from_secs(10));
    }

    fn finish(&mut self) {
        if cfg_ready_expected(self.server_back_at, self.now) && !self.ready {
            let what = format!(
                "not Ready at the end although the server is up (last Ready {:?} ms)",
                self.last_ready
                    .map(|t| t.duration_since(self.t0).as_millis())
            );
            self.violate(what);
        }
        self.closing = true;
        self.client.close(self.now);
        self.pump();
        self.consumer_paused_until = None;
        self.consume();
        let not_done: Vec<_> = self
            .completions
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| id.to_string())
            .collect();
        if !not_done.is_empty() {
            self.violate(format!(
                "{} actions never completed, e.g. {}",
                not_done.len(),
                not_done[0]
            ));
        }
        let s = self.client.stats();
        let offered = s.events_queued + s.events_dropped;
        if offered != self.consumed + self.gap_total {
            self.violate(format!(
                "event accounting: {} offered ({} queued + {} dropped) but {} consumed + {} in gaps",
                offered, s.events_queued, s.events_dropped, self.consumed, self.gap_total
            ));
        }
        self.summary.healthy_actions = self.healthy_actions.len() as u64;
        self.summary.events = self.consumed;
        self.summary.gaps = self.gap_total;
    }
}

fn cfg_ready_expected(back_at: Option<Instant>, now: Instant) -> bool {
    back_at.is_none_or(|t| now > t + Duration::from_secs(10))
}

/// Runs one seed with the default scenario.
pub fn run_seed(seed: u64) -> (RunSummary, Vec<Violation>) {
    let t0 = Instant::now();
    let mut h = Harness::new(seed, t0);
    let v = h.run(&RunConfig::default());
    (h.summary.clone(), v)
}
