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
//!
//! It also cuts the client's own bytes into actions as they are handed out (written, or
//! lent on a link that writes as an async adapter does), and checks: no byte of an action
//! goes out after it completed (its deadline, a cancel, a disconnect); no action is written
//! twice; `NotSent` and a never-written timeout only for actions whose last byte never
//! left, `Unknown` only for one that left whole. A list ends `ListOverflow` only past
//! `max_list_items`; a Ready session hears from the server within `ping_interval` +
//! `pong_timeout` or is given up; and at every Ready the server applies the event mask the
//! client holds (changed at run time, re-applied by the Login). Actions are cancelled at
//! any stage, some have short deadlines of their own, and half the seeds log in by MD5.
//!
//! Some seeds also: add event filters at run time (valid ones, and ones the server cannot
//! compile), and at every Ready the login must have re-applied exactly the filters kept,
//! none refused, and the server must hold them; log off mid-run (queued actions fail
//! `NotSent(Logoff)`, accepted Originates never end `NotSent`/`Unknown`, sends are refused
//! `Closed(Logoff)`, the client closes for `Logoff` within `logoff_timeout`, nothing is
//! pending then, and it never reconnects); and send bursts that fill the write queue, where
//! `QueueFull` must name a cap that the client's counts really reached.

use crate::clock::later;
use crate::{ClassMask, Fault, SessionId, SimConfig, SimServer};
use ami_proto::{
    Action, ActionError, ActionId, AuthMethod, Client, ClientConfig, Decoder, DecoderLimits,
    DisconnectReason, Frame, FullQueue, Input, Notice, Outcome, Output, Phase, SendError,
    SendOptions, StreamItem,
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
    tap: impl FnMut(&[u8]),
) -> bool {
    shuttle_tapped(rng, now, client, server, session, None, tap, |_| {})
}

/// [`shuttle`], with `sent` seeing each piece of the client's bytes as it is handed out
/// (before the server reads it). With `copy`, the link writes as an async adapter does:
/// it lends every byte the client has ([`Client::lend_transmit`]) into `copy` (handed out
/// then) and writes a piece of `copy`; the rest waits for the next call (the caller
/// empties `copy` when the connection ends).
#[allow(clippy::too_many_arguments)]
pub(crate) fn shuttle_tapped(
    rng: &mut Rng,
    now: Instant,
    client: &mut Client,
    server: &mut SimServer,
    session: &mut Option<SessionId>,
    copy: Option<&mut Vec<u8>>,
    mut tap: impl FnMut(&[u8]),
    mut sent: impl FnMut(&[u8]),
) -> bool {
    let Some(s) = *session else {
        return false;
    };
    let mut moved = false;
    if let Some(copy) = copy {
        let lent = client.lend_transmit();
        if !lent.is_empty() {
            sent(lent);
            copy.extend_from_slice(lent);
        }
        if !copy.is_empty() {
            let n = 1 + rng.below(copy.len() as u64) as usize;
            let n = if rng.chance(70) { copy.len() } else { n };
            client.advance_transmit(n);
            server.receive(s, now, &copy[..n]);
            copy.drain(..n);
            moved = true;
        }
    } else if !client.transmit().is_empty() {
        let out = client.transmit();
        let n = 1 + rng.below(out.len() as u64) as usize;
        let n = if rng.chance(70) { out.len() } else { n };
        let chunk = out[..n].to_vec();
        client.advance_transmit(n);
        sent(&chunk);
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
    /// Cancels of an action some of whose bytes had been handed out (written, answered
    /// with a list under way, or waiting for its follow-up).
    pub late_cancels: u64,
    /// Actions that completed `NotSent`, `Unknown` or timed out never written, each
    /// checked against the bytes handed out.
    pub unsent_checked: u64,
    /// Lists ended by `max_list_items`.
    pub list_overflows: u64,
    /// Sessions Ready whose server-side event mask was checked against the client's.
    pub mask_checks: u64,
    /// Of those, the ones after the run had changed the mask at run time (the others check
    /// only the configured mask).
    pub changed_mask_checks: u64,
    /// Sessions given up by the heartbeat (the silence bound's check is vacuous without).
    pub heartbeat_timeouts: u64,
    /// Runs that logged off mid-run.
    pub logoffs: u64,
    /// Sessions Ready whose server-side filters were checked against those kept.
    pub filter_checks: u64,
    /// `QueueFull` refusals, each checked against the cap it names.
    pub queue_full: u64,
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

/// How a caller action completed, as far as its bytes are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// `NotSent`: its last byte was never handed out.
    NotSent,
    /// `TimedOut` in `Phase::Queued`: none of its bytes was handed out.
    NeverWritten,
    /// Any other outcome.
    Other,
}

/// The client's bytes as they were handed out (before the server reads them), cut into
/// actions by the harness, with where each began and ended in the stream of all bytes
/// handed out on every connection. It proves that nothing goes out after its action
/// completed (a deadline, a cancel, a disconnect), that no action is written twice (never
/// re-sent on a new connection), and that `NotSent` and `Unknown` tell the truth about
/// whether the action's last byte left.
#[derive(Debug, Default)]
struct Wire {
    /// The current connection's bytes not yet cut into a whole action.
    buf: Vec<u8>,
    /// Where in `buf` the search for the blank line that ends an action resumes.
    scan: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Bytes handed out so far, all connections.
    out: u64,
    /// ActionIDs whose whole action (its blank line included) was handed out.
    whole: HashSet<String>,
    /// Caller actions that completed: the stream offset then, and how.
    done: HashMap<String, (u64, Done)>,
    /// Broken laws found while cutting, for the harness to report.
    found: Vec<String>,
    /// `Filter` actions handed out whole on the current connection.
    filters: usize,
}

impl Wire {
    /// A new connection: the rest of the last one's partial action never goes out.
    fn reset(&mut self) {
        self.base = self.out;
        self.buf.clear();
        self.scan = 0;
        self.filters = 0;
    }

    fn completed(&mut self, id: &str, how: Done) {
        self.done.insert(id.to_string(), (self.out, how));
    }

    fn see(&mut self, bytes: &[u8]) {
        self.out += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(at) = self.buf[self.scan.max(start)..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            let end = self.scan.max(start) + at + 4;
            self.action(start, end);
            start = end;
            self.scan = end;
        }
        self.buf.drain(..start);
        self.base += start as u64;
        self.scan = self.buf.len().saturating_sub(3);
    }

    /// One whole action, `buf[start..end]`.
    fn action(&mut self, start: usize, end: usize) {
        let id = self.buf[start..end]
            .split(|b| *b == b'\n')
            .filter_map(|line| {
                let line = std::str::from_utf8(line).ok()?;
                let (k, v) = line.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("ActionID")
                    .then(|| v.trim().to_string())
            })
            .next();
        let Some(id) = id else {
            return;
        };
        // The client writes the Action line first.
        if self.buf[start..end]
            .split(|b| *b == b'\n')
            .next()
            .is_some_and(|line| line.trim_ascii().eq_ignore_ascii_case(b"Action: Filter"))
        {
            self.filters += 1;
        }
        let (first, last) = (self.base + start as u64, self.base + end as u64);
        if !self.whole.insert(id.clone()) {
            self.found.push(format!(
                "{id} was written twice (an action is never re-sent)"
            ));
        }
        match self.done.get(&id) {
            Some((at, _)) if first >= *at => self.found.push(format!(
                "{id}: its first byte was handed out at {first}, after it completed at {at}"
            )),
            Some((at, Done::NeverWritten)) => self.found.push(format!(
                "{id} timed out never written, but its bytes went out from {first} (completed at {at})"
            )),
            Some((at, Done::NotSent)) if last <= *at => self.found.push(format!(
                "{id} failed NotSent, but its last byte was handed out at {last} (completed at {at})"
            )),
            _ => {}
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
    /// The client's bytes as handed out.
    wire: Wire,
    /// When the client last received a byte, or became Ready: the heartbeat bound counts
    /// from here.
    last_rx: Instant,
    /// Whether this run changes the event mask at run time (a third of the seeds: a mask
    /// that keeps events out spares the run the event storms, which the others keep).
    masks: bool,
    /// For a run whose link lends (see [`shuttle_tapped`]): the bytes lent, not yet written.
    lent: Option<Vec<u8>>,
    /// Caller actions not completed yet, in the order sent (a cancel picks one).
    open: Vec<ActionId>,
    /// `Events` actions (event mask changes) not completed yet.
    mask_actions: HashSet<ActionId>,
    /// Whether a run-time mask change was accepted.
    mask_changed: bool,
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
    /// The client's `max_list_items`.
    max_list_items: usize,
    /// Whether this run adds event filters at run time (some seeds), see
    /// [`Harness::add_filter`].
    filters: bool,
    /// Whether this run sends bursts that fill the write queue (one seed in twenty: each
    /// burst costs a hundred actions), see [`Harness::burst`].
    bursts: bool,
    /// `Filter` actions not completed yet, and whether the server can compile each.
    filter_actions: HashMap<ActionId, bool>,
    /// Filters the server must hold at every Ready: at least `.0` (accepted), at most
    /// `.0 + .1` (`.1`: sent, then their answer was lost, so either may be true).
    filters_kept: (usize, usize),
    /// The client's `filters_failed` at the last Ready.
    filters_failed: u64,
    /// When this run logs off mid-run (some seeds), see [`Harness::log_off`].
    logoff_at: Option<Instant>,
    /// When it logged off.
    logged_off: Option<Instant>,
    /// Async Originates accepted but not answered when it logged off: none may end
    /// `NotSent` or `Unknown`.
    follow_ups_cut: HashSet<ActionId>,
}

/// The longest a Logoff waits for `Goodbye` (the client's `logoff_timeout`, default 5 s).
const LOGOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// The harness client's heartbeat: a Ping after this long without a byte from the server...
const PING_INTERVAL: Duration = Duration::from_secs(2);
/// ...and the session given up if nothing comes within this after it.
const PONG_TIMEOUT: Duration = Duration::from_secs(2);

/// The harness client's `max_queued_actions`.
const MAX_QUEUED_ACTIONS: usize = 64;

/// The client config every run uses: small caps so the limits are exercised.
pub fn client_config(seed: u64) -> ClientConfig {
    client_config_with(seed, 500, AuthMethod::Plain)
}

/// [`client_config`] with a list item cap and a login method.
fn client_config_with(seed: u64, max_list_items: usize, auth: AuthMethod) -> ClientConfig {
    match ClientConfig::builder("admin", "amp111")
        .auth(auth)
        .seed(seed)
        .event_queue_cap(256)
        .pipeline_depth(8)
        .max_queued_actions(MAX_QUEUED_ACTIONS)
        .max_pending_actions(128)
        .max_list_items(max_list_items)
        .action_timeout(Duration::from_secs(5))
        .ping_interval(PING_INTERVAL)
        .pong_timeout(PONG_TIMEOUT)
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
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        // Half the seeds log in by MD5 challenge; a third cap lists at a few items, so that
        // lists of the live channels overflow.
        let auth = if rng.chance(50) {
            AuthMethod::Md5
        } else {
            AuthMethod::Plain
        };
        let lent = rng.chance(50).then(Vec::new);
        let masks = rng.chance(33);
        let max_list_items = if rng.chance(33) {
            1 + rng.below(3) as usize
        } else {
            500
        };
        let client_config = client_config_with(seed, max_list_items, auth);
        let client = Client::new(client_config.clone(), t0);
        // One seed in twelve logs off mid-run, drawn apart so that the other choices of
        // a seed stay what they were.
        let mut own = Rng(seed ^ 0x1060_ff00);
        let logoff_at = own
            .chance(8)
            .then(|| t0 + Duration::from_millis(3_000 + own.below(50_000)));
        let filters = own.chance(10);
        let bursts = own.chance(5);
        Harness {
            rng,
            t0,
            now: t0,
            server,
            client,
            session: None,
            tap: Tap::default(),
            wire: Wire::default(),
            last_rx: t0,
            masks,
            lent,
            open: Vec::new(),
            mask_actions: HashSet::new(),
            mask_changed: false,
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
            max_list_items,
            filters,
            bursts,
            filter_actions: HashMap::new(),
            filters_kept: (0, 0),
            filters_failed: 0,
            logoff_at,
            logged_off: None,
            follow_ups_cut: HashSet::new(),
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
                if matches!(output, Output::Connect) && self.logged_off.is_some() {
                    self.violate("the client reconnected after it logged off".into());
                }
                let link = &mut self.session;
                if link_output(&output, self.now, &mut self.client, &mut self.server, link) {
                    // A connection ends or begins: the copy of the last one is dropped.
                    if let Some(copy) = self.lent.as_mut() {
                        copy.clear();
                    }
                    if matches!(output, Output::Connect) {
                        self.tap.reset();
                        self.wire.reset();
                    }
                    progressed = true;
                    continue;
                }
                match output {
                    Output::Notice(Notice::Ready { .. }) => {
                        self.ready = true;
                        self.last_ready = Some(self.now);
                        self.summary.readies += 1;
                        self.last_rx = self.now;
                        self.check_mask();
                        self.check_filters();
                    }
                    Output::Notice(Notice::Completed { id, outcome }) => {
                        self.on_completed(id, outcome)
                    }
                    Output::Notice(Notice::Disconnected { reason, .. }) => {
                        self.ready = false;
                        self.summary.disconnects += 1;
                        if matches!(reason, DisconnectReason::HeartbeatTimeout) {
                            self.summary.heartbeat_timeouts += 1;
                        }
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
                        let pending = self.client.stats().pending;
                        if pending != 0 {
                            self.violate(format!(
                                "closed ({reason}) with {pending} actions pending"
                            ));
                        }
                        if self.logged_off.is_some()
                            && !self.closing
                            && reason != DisconnectReason::Logoff
                        {
                            self.violate(format!("logged off, but closed for {reason}"));
                        }
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
            let (tap, wire) = (&mut self.tap, &mut self.wire);
            let mut received = false;
            progressed |= shuttle_tapped(
                &mut self.rng,
                self.now,
                &mut self.client,
                &mut self.server,
                &mut self.session,
                self.lent.as_mut(),
                |chunk| {
                    received = true;
                    tap.see(chunk);
                },
                |chunk| wire.see(chunk),
            );
            if received {
                self.last_rx = self.now;
            }
            if self.session.is_none() {
                if let Some(copy) = self.lent.as_mut() {
                    copy.clear();
                }
            }
            for what in std::mem::take(&mut self.wire.found) {
                self.violate(what);
            }
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

    /// A new session's event mask on the server is the one the client holds (set at run
    /// time, re-applied by the Login), unless a mask change is still on its way.
    fn check_mask(&mut self) {
        if !self.mask_actions.is_empty() {
            return;
        }
        let Some(s) = self.session else {
            return;
        };
        let Some(server_mask) = self.server.session(s).map(|s| s.events) else {
            return;
        };
        let mask = self.client.config().events().to_string();
        self.summary.mask_checks += 1;
        if self.mask_changed {
            self.summary.changed_mask_checks += 1;
        }
        if ClassMask::parse(&mask) != Some(server_mask) {
            self.violate(format!(
                "Ready with the event mask {mask:?}, but the server applies {server_mask:?}"
            ));
        }
    }

    /// A new session holds the filters the client kept: every one the server accepted
    /// (re-applied at each login) but those whose re-application the client counted as
    /// failed (unanswered in time: a dropped or delayed action), none it refused, none that
    /// never left.
    fn check_filters(&mut self) {
        let failed = self.client.stats().filters_failed;
        let failed_now = (failed - self.filters_failed) as usize;
        self.filters_failed = failed;
        if !self.filter_actions.is_empty() {
            return;
        }
        let Some(held) = self
            .session
            .and_then(|s| self.server.session(s))
            .map(|s| s.filters.len())
        else {
            return;
        };
        let (kept, unsure) = self.filters_kept;
        self.summary.filter_checks += 1;
        // The login re-applied exactly the filters kept: a refused one is not sent again.
        let sent = self.wire.filters;
        if sent < kept || sent > kept + unsure {
            self.violate(format!(
                "the login re-applied {sent} filters, but {kept} were accepted ({unsure} more unsure)"
            ));
        }
        if held + failed_now < kept || held > kept + unsure {
            self.violate(format!(
                "Ready with {held} filters on the server, but {kept} were accepted ({unsure} more unsure, {failed_now} failed to re-apply)"
            ));
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
        self.open.retain(|o| *o != id);
        self.mask_actions.remove(&id);
        let filter = if self.filter_actions.is_empty() {
            None // spares a lookup per completion in the runs without filters
        } else {
            self.filter_actions.remove(&id)
        };
        if let Some(valid) = filter {
            match &outcome {
                Ok(_) if valid => self.filters_kept.0 += 1,
                Ok(_) => self.violate(format!("{id}: a filter that cannot compile succeeded")),
                Err(ActionError::Server(_)) if !valid => {}
                Err(ActionError::Server(e)) => {
                    self.violate(format!("{id}: a valid filter was refused: {e:?}"))
                }
                // Never left: not applied, not kept.
                Err(ActionError::NotSent(_))
                | Err(ActionError::TimedOut {
                    phase: Phase::Queued,
                    ..
                }) => {}
                // Handed out, answer lost (cancelled, timed out, session lost): the server
                // may hold it, and the client keeps it, even one the server cannot compile,
                // which it cannot tell.
                _ => self.filters_kept.1 += 1,
            }
        }
        let how = match &outcome {
            Err(ActionError::NotSent(_)) => Done::NotSent,
            // Withdrawn before any of it was handed out (the mask it was accepted under
            // never took effect): as strict as a never-written timeout.
            Err(ActionError::TimedOut {
                phase: Phase::Queued,
                ..
            })
            | Err(ActionError::FollowUpMasked { .. }) => Done::NeverWritten,
            _ => Done::Other,
        };
        if how != Done::Other || matches!(outcome, Err(ActionError::Unknown(_))) {
            self.summary.unsent_checked += 1;
        }
        let whole = self.wire.whole.contains(id.as_str());
        match &outcome {
            Err(ActionError::NotSent(_)) if whole => self.violate(format!(
                "{id} failed NotSent, but it had been handed out whole"
            )),
            Err(ActionError::TimedOut {
                phase: Phase::Queued,
                ..
            })
            | Err(ActionError::FollowUpMasked { .. })
                if whole =>
            {
                self.violate(format!(
                    "{id} ended {outcome:?} (never written), but it had been handed out whole"
                ))
            }
            Err(ActionError::Unknown(_)) if !whole => self.violate(format!(
                "{id} failed Unknown, but its last byte was never handed out"
            )),
            _ => {}
        }
        self.wire.completed(id.as_str(), how);
        // Accepted, so never NotSent nor Unknown: FollowUpLost when the session ends first,
        // or its real answer when the OriginateResponse comes before the Goodbye.
        if !self.follow_ups_cut.is_empty()
            && self.follow_ups_cut.remove(&id)
            && matches!(
                outcome,
                Err(ActionError::NotSent(_)) | Err(ActionError::Unknown(_))
            )
        {
            self.violate(format!(
                "{id}, an Originate waiting for its OriginateResponse at logoff, ended {outcome:?}"
            ));
        }
        // After a logoff, what was still queued is not sent (the wire tap checks that
        // NotSent tells the truth); what was written is answered.
        let logged_off = self.logged_off.is_some()
            && matches!(
                outcome,
                Err(ActionError::NotSent(DisconnectReason::Logoff))
                    | Err(ActionError::FollowUpLost { .. })
            );
        if !self.closing && !logged_off && self.healthy_actions.contains(&id) {
            let answered = matches!(
                outcome,
                Ok(_)
                    | Err(ActionError::Server(_))
                    | Err(ActionError::Cancelled)
                    | Err(ActionError::ListOverflow { .. })
                    // The mask change it relied on was cancelled or refused: a client-side
                    // outcome, as a cancel is.
                    | Err(ActionError::FollowUpMasked { .. })
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
            if let Err(ActionError::ListOverflow { items, .. }) = &outcome {
                self.summary.list_overflows += 1;
                // The cap, not a short list, ended it: the server sent an item past the cap.
                let cap = self.max_list_items;
                if *items > cap || list.items.len() <= *items {
                    self.violate(format!(
                        "{id}: overflow at {items} items (cap {cap}) after the server sent {}",
                        list.items.len()
                    ));
                }
            }
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
        // Some actions get a deadline of their own, short enough to pass while they wait
        // in the queue or in the transmit buffer.
        let options = if self.rng.chance(15) {
            SendOptions::timeout(Duration::from_millis(1 + self.rng.below(2000)))
        } else {
            SendOptions::default()
        };
        match self.client.send_action_with(self.now, action, options) {
            Ok(id) => {
                if is_originate {
                    self.originates.insert(id.clone());
                }
                // One with a short deadline of its own may time out on any link.
                self.track_sent(&id, options.timeout.is_none());
                if self.rng.chance(3) && self.client.cancel(self.now, &id) {
                    // Completed now; its notice comes with the next outputs.
                    self.open.retain(|o| *o != id);
                }
            }
            Err(SendError::QueueFull { what, cap }) => self.check_full(what, cap),
            Err(SendError::Closed {
                reason: DisconnectReason::Logoff,
            }) if self.logged_off.is_some() => {}
            // An async Originate's answer is a call event: refused while the mask keeps
            // call events out, and only then.
            Err(SendError::FollowUpMasked { mask })
                if is_originate
                    && !ClassMask::parse(&mask).is_some_and(|m| m.contains(ClassMask::CALL)) => {}
            Err(e) => self.violate(format!("send_action refused a valid action: {e}")),
        }
    }

    /// Records a caller action the client took: counted, open until it completes, and
    /// (`may_be_healthy`, sent once the link has healed) held to the healthy-link law.
    fn track_sent(&mut self, id: &ActionId, may_be_healthy: bool) {
        self.summary.actions += 1;
        self.open.push(id.clone());
        if may_be_healthy && self.healthy_from.is_some_and(|t| self.now >= t) {
            self.healthy_actions.insert(id.clone());
        }
        self.completions.entry(id.clone()).or_insert(0);
    }

    /// Changes the event mask at run time.
    fn change_mask(&mut self) {
        let mask =
            ["on", "off", "call,user", "user", "call", "system,user"][self.rng.below(6) as usize];
        match self.client.set_event_mask(self.now, mask) {
            Ok(id) => {
                self.mask_actions.insert(id.clone());
                self.mask_changed = true;
                self.track_sent(&id, true);
            }
            Err(SendError::QueueFull { what, cap }) => self.check_full(what, cap),
            Err(SendError::Closed {
                reason: DisconnectReason::Logoff,
            }) if self.logged_off.is_some() => {}
            // Refused only for a mask that keeps call events out, while async Originates
            // wait for their answer (a call event), and exactly as many as are still open.
            Err(SendError::MaskHidesFollowUps { originates, .. }) => {
                let open = self
                    .open
                    .iter()
                    .filter(|id| self.originates.contains(*id))
                    .count();
                let admits_call =
                    ClassMask::parse(mask).is_some_and(|m| m.contains(ClassMask::CALL));
                if admits_call || originates == 0 || originates != open {
                    self.violate(format!(
                        "set_event_mask({mask}) refused for {originates} waiting Originate(s), {open} open"
                    ));
                }
            }
            Err(e) => self.violate(format!("set_event_mask({mask}) refused: {e}")),
        }
    }

    /// Cancels one caller action still pending, at whatever stage it is (queued, written,
    /// answered with a list under way, waiting for an Originate's follow-up).
    fn cancel_one(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let id = self.open[self.rng.below(self.open.len() as u64) as usize].clone();
        let undrained = self.client.has_output();
        let handed_out = self.wire.whole.contains(id.as_str());
        if self.client.cancel(self.now, &id) {
            if handed_out {
                self.summary.late_cancels += 1;
            }
            self.open.retain(|o| *o != id);
        } else if !undrained {
            // With outputs not yet drained (a pump that hit its round limit), its
            // completion may be among them: too late to cancel, and rightly refused.
            self.violate(format!("{id} is pending but cancel refused it"));
        }
    }

    /// A burst of Pings, as a dialer catching up would send: enough to fill the write
    /// queue, so that `QueueFull` comes (and is checked) where the caps are.
    fn burst(&mut self) {
        let n = 70 + self.rng.below(80);
        for _ in 0..n {
            match self.client.send_action(self.now, Action::new("Ping")) {
                Ok(id) => self.track_sent(&id, true),
                Err(SendError::QueueFull { what, cap }) => self.check_full(what, cap),
                Err(SendError::Closed {
                    reason: DisconnectReason::Logoff,
                }) if self.logged_off.is_some() => {}
                Err(e) => self.violate(format!("send_action refused a Ping: {e}")),
            }
        }
    }

    /// `QueueFull` only when the cap it names is really reached, by the client's count;
    /// for the write queue also by the harness's (a queued action is open, not completed).
    fn check_full(&mut self, what: FullQueue, cap: usize) {
        self.summary.queue_full += 1;
        let s = self.client.stats();
        let open = self.open.len();
        let (want, counted, own_ok) = match what {
            FullQueue::Queued => (MAX_QUEUED_ACTIONS, s.queued, open >= cap),
            // Cancelled actions whose list still streams stay the client's to count: the
            // harness's open actions bound nothing here.
            FullQueue::Pending => (self.client_config.max_pending_actions(), s.pending, true),
            other => {
                self.violate(format!(
                    "QueueFull for {other:?}, which this run never uses"
                ));
                return;
            }
        };
        if cap != want || counted < cap || !own_ok {
            self.violate(format!(
                "QueueFull({what:?}, cap {cap}) with {counted} counted by the client, {open} open (configured cap {want})"
            ));
        }
    }

    /// Adds an event filter that lets every event through (so the run's other laws hold),
    /// or one the server cannot compile, which must not be kept.
    fn add_filter(&mut self) {
        let valid = self.rng.chance(75);
        let filter = if valid {
            "!Event: NoSuchEventAnywhere"
        } else {
            "!Event: (unclosed"
        };
        match self.client.add_filter(self.now, filter) {
            Ok(id) => {
                self.filter_actions.insert(id.clone(), valid);
                // Not held to the healthy-link law: a filter the server cannot compile is
                // refused whatever the link.
                self.track_sent(&id, false);
            }
            Err(SendError::QueueFull { what, cap }) => self.check_full(what, cap),
            Err(SendError::Closed {
                reason: DisconnectReason::Logoff,
            }) if self.logged_off.is_some() => {}
            Err(e) => self.violate(format!("add_filter({filter}) refused: {e}")),
        }
    }

    /// Logs off mid-run: queued actions fail `NotSent(Logoff)`, written ones are answered,
    /// async Originates still waiting for their `OriginateResponse` end `FollowUpLost` (or
    /// with that response, if it comes before the `Goodbye`), never `NotSent`/`Unknown`,
    /// new actions are refused, and the client closes (for `Logoff`) within
    /// `logoff_timeout` and never reconnects (checked in `pump` and `check`).
    fn log_off(&mut self) {
        let now = self.now;
        self.logged_off = Some(now);
        self.summary.logoffs += 1;
        // Accepted (the server said so on a link still up) and not answered yet.
        self.follow_ups_cut = self
            .open
            .iter()
            .filter(|id| {
                self.originates.contains(*id)
                    && self.tap.success.contains(id.as_str())
                    && self.session.is_some()
            })
            .cloned()
            .collect();
        self.client.logoff(now);
        match self.client.send_action(now, Action::new("Ping")) {
            Err(SendError::Closed {
                reason: DisconnectReason::Logoff,
            }) => {}
            Ok(id) => {
                self.violate(format!("an action ({id}) was accepted after logoff"));
                self.completions.insert(id.clone(), 0);
                self.open.push(id);
            }
            Err(e) => self.violate(format!("after logoff a send was refused with {e}")),
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
        if self.logged_off.is_none() && self.logoff_at.is_some_and(|t| self.now >= t) {
            self.log_off();
        }
        if self.ready && self.rng.chance(cfg.action_rate) {
            self.workload();
        }
        if self.masks && self.ready && self.rng.chance(1) {
            self.change_mask();
        }
        if self.filters && self.ready && self.rng.chance(1) {
            self.add_filter();
        }
        if self.bursts && self.rng.below(2000) == 0 {
            self.burst();
        }
        if self.rng.chance(2) {
            self.cancel_one();
        }
    }

    fn inject(&mut self) -> Duration {
        self.inject_fault();
        Duration::from_millis(500 + self.rng.below(6000))
    }

    /// The heartbeat: a Ready session that hears nothing (a half-open link, a server that
    /// stopped answering) is given up within `ping_interval` + `pong_timeout` of the last
    /// byte received: the Ping goes out when the link has been idle that long, and its
    /// answer (or any byte) is due within the pong deadline.
    fn check(&mut self) {
        if let Some(t) = self.logged_off {
            let bound = LOGOFF_TIMEOUT + Duration::from_millis(100);
            if !self.client.is_closed() && self.now > t + bound {
                let late = self.now.duration_since(t);
                self.violate(format!("still not closed {late:?} after logoff"));
            }
        }
        // Logging off, the wait for Goodbye is bounded by `logoff_timeout` instead (above).
        let bound = PING_INTERVAL + PONG_TIMEOUT;
        if self.logged_off.is_none()
            && self.ready
            && self.session.is_some()
            && self.now > self.last_rx + bound
        {
            let silent = self.now.duration_since(self.last_rx);
            self.violate(format!(
                "Ready and connected after {silent:?} without a byte from the server (bound {bound:?})"
            ));
        }
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
        if self.logged_off.is_none()
            && cfg_ready_expected(self.server_back_at, self.now)
            && !self.ready
        {
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
