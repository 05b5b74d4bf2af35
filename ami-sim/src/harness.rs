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
//!
//! And (`Extras`, each in some seeds, drawn apart from the choices above):
//! - sync Originates (`allow_sync_originate`), some ringing past the heartbeat's silence
//!   bound, some cancelled while the server is blocked on their call: none times out before
//!   `max(action_timeout, Timeout + originate_margin)`, and the heartbeat gives up no session
//!   whose server is blocked on such a call (cancelled or not) before that deadline, nor
//!   waits for one past its response (a cancelled one's late response included) or its
//!   connection;
//! - async Originates' outcomes handed back with `Client::unclaimed`: while its session is
//!   still the current one, exactly one late answer offered to the stream when the outcome
//!   holds the server's answer (`Ok`, `Server`), and one event (the `OriginateResponse`)
//!   more when it carries one; none otherwise;
//! - filters added in batches up to `MAX_FILTERS`: `TooManyFilters` exactly when the client
//!   holds that many, and every login re-applies the filters held, in the order added (none
//!   refused, none that never left);
//! - `Stats::list_items_dropped` equals, exactly, the items the harness saw the client
//!   receive past a list's cap or after its action ended (until its `Complete`, or a grace
//!   period without an item);
//! - stream marks, flooded while the consumer stalls: `QueueFull(StreamMarks)` exactly at
//!   `event_queue_cap` marks held, each completed marked action's mark streamed once, in
//!   completion order, and every run of notices drained together in canonical form;
//! - every retry time against the backoff policy (full jitter below the doubling ceiling,
//!   the breaker open from `breaker_threshold` failures in a row and then the cooldown,
//!   `breaker_opened` counted once per opening), and no connect before it.

use crate::clock::later;
use crate::{ClassMask, Fault, SessionId, SimConfig, SimServer};
use ami_proto::{
    Action, ActionError, ActionId, AuthMethod, Client, ClientConfig, Decoder, DecoderLimits,
    DisconnectReason, Frame, FullQueue, Input, Notice, Outcome, Output, Phase, SendError,
    SendOptions, Status, StreamItem, MAX_FILTERS,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// SplitMix64 for the harness's own choices (separate from the server's and the client's).
#[derive(Debug, Clone, Default)]
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
    /// Sync Originates sent.
    pub sync_originates: u64,
    /// Sync Originates cancelled after they were written whose late response came on
    /// their connection: the silence bound stopped waiting for them then.
    pub sync_answered_after_cancel: u64,
    /// Outcomes handed back with `Client::unclaimed`.
    pub unclaimed: u64,
    /// Filters refused `TooManyFilters`, each at the limit.
    pub filters_refused: u64,
    /// Stream marks consumed, each matched to its action's completion.
    pub marks: u64,
    /// List items the client dropped, matched exactly by `Stats::list_items_dropped`.
    pub list_items_dropped: u64,
    /// Lost sessions whose retry time was checked against the backoff policy.
    pub backoff_checks: u64,
    /// Abandoned entries the client evicted at `max_abandoned_actions`.
    pub abandoned_evicted: u64,
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
    /// Actions of the current connection that ended (the harness saw their completion)
    /// other than with success, with when the client forgets them unless items of their
    /// list keep coming: a list the server starts for one before then is already ended.
    ended: HashMap<String, Instant>,
    /// List items the client must have dropped (`Stats::list_items_dropped`): every item
    /// past the cap of a list that overflowed, and every item of a list that came after its
    /// action ended (cancelled, timed out) while the client still swallows them: until the
    /// list's `Complete`, or a grace period (`action_timeout`) after the action ended and
    /// after the last item passes with no item (later ones are events of the stream).
    dropped: u64,
    /// A cancelled sync Originate, by ActionID, and when the server's response to it came:
    /// the call it blocked the server's session on had ended then.
    sync_cancelled: Option<(String, Option<Instant>)>,
}

/// The harness client's `action_timeout`: also the grace period for which an ended
/// action's late answer (its list's items) is swallowed.
const GRACE: Duration = Duration::from_secs(5);

/// One list as the server sent it.
#[derive(Debug, Default)]
struct ServerList {
    /// Each item's bytes, as sent.
    items: Vec<Vec<u8>>,
    /// The server sent its `EventList: Complete` event.
    completed: bool,
    /// Its action ended without success: the items that follow are the client's to drop
    /// until this (moved on by each one), then the stream's.
    ended: Option<Instant>,
}

impl Tap {
    fn reset(&mut self) {
        self.decoder = Some(Decoder::new(DecoderLimits::default()));
        // The lists of the connection that ended can complete no more (some answered
        // actions that had already ended, never removed by a completion).
        self.lists.clear();
        self.ended.clear();
    }
    fn see(&mut self, now: Instant, bytes: &[u8]) {
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
                if let Some((_, answered @ None)) = self
                    .sync_cancelled
                    .as_mut()
                    .filter(|(watched, _)| m.response().is_some() && watched == id)
                {
                    *answered = Some(now);
                }
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
                        let ended = self.ended.get(id).copied();
                        // Forgotten: an unmatched response, its items events.
                        if ended.is_none_or(|until| now < until) {
                            self.lists
                                .entry(id.to_string())
                                .or_insert_with(|| ServerList {
                                    ended,
                                    ..ServerList::default()
                                });
                        }
                    }
                } else if m.event().is_some() {
                    if let Some(list) = self.lists.get_mut(id).filter(|l| !l.completed) {
                        if list_field.is_some_and(|v| v.is_word("Complete")) {
                            list.completed = true;
                        } else {
                            match list.ended {
                                Some(until) if now < until => {
                                    self.dropped += 1;
                                    list.ended = Some(now + GRACE);
                                }
                                // Forgotten: the rest are events of the stream.
                                Some(_) => {
                                    self.lists.remove(id);
                                    continue;
                                }
                                None => {}
                            }
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
    /// Their `Filter:` values, in order.
    filter_texts: Vec<String>,
}

impl Wire {
    /// A new connection: the rest of the last one's partial action never goes out.
    fn reset(&mut self) {
        self.base = self.out;
        self.buf.clear();
        self.scan = 0;
        self.filters = 0;
        self.filter_texts.clear();
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
            let text = self.buf[start..end]
                .split(|b| *b == b'\n')
                .filter_map(|line| {
                    let line = std::str::from_utf8(line).ok()?;
                    let (k, v) = line.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("Filter")
                        .then(|| v.trim().to_string())
                })
                .next();
            self.filter_texts.extend(text);
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
    /// The behaviours some seeds add, see [`Extras`].
    extra: Extras,
}

/// Behaviours a seed may add, drawn apart from the others (so that a seed's other choices
/// stay what they were), with the harness's model of each.
#[derive(Debug, Default)]
struct Extras {
    rng: Rng,
    /// Sends synchronous Originates (`allow_sync_originate`), one at a time: each blocks
    /// the server session until its call is answered or fails.
    sync: bool,
    /// The sync Originate open, and the deadline the client owes it: never `TimedOut`
    /// before it.
    sync_open: Option<(ActionId, Instant)>,
    /// The latest deadline of a sync Originate sent.
    sync_until: Option<Instant>,
    /// The last few sync Originates: when each was sent, completed, and its deadline. One
    /// open when the heartbeat Ping goes out (the link idle for `ping_interval`) silences
    /// the server legitimately: the pong deadline is then its deadline, if later. One
    /// cancelled stays open (the server is blocked on its call all the same, if it got it)
    /// until its response comes or its connection closes, no longer: the client waits for
    /// its deadline only while it may still be answered there.
    sync_log: VecDeque<(Instant, Option<Instant>, Instant)>,
    /// A sync Originate cancelled after it was written still blocks the server until its
    /// call ends: the next one waits for its deadline, so that one at most blocks it.
    sync_gate: Option<Instant>,
    /// When the cancelled sync Originate was sent (its entry in `sync_log`), while it
    /// stays open there.
    sync_held: Option<Instant>,
    /// When the client last closed a transport: whether the server's session was blocked
    /// on a sync Originate's call then.
    blocked_at_close: bool,
    /// Hands some async Originates' outcomes back ([`Client::unclaimed`]).
    unclaims: bool,
    /// Adds filters in batches until the client refuses one for [`MAX_FILTERS`].
    filter_flood: bool,
    /// Every filter added, in order, with what the client must hold of it.
    filter_order: Vec<FilterEntry>,
    /// `filter_order`'s index of each filter action not completed yet.
    filter_slot: HashMap<ActionId, usize>,
    /// Sends some actions with a stream mark, and floods marked Pings while the consumer
    /// stalls, so that the marks cap is reached.
    marking: bool,
    next_mark: u64,
    /// Marked actions not completed yet, with their mark.
    marked_open: HashMap<ActionId, u64>,
    /// Marks of completed marked actions, in completion order, not yet met in the stream.
    marks_due: VecDeque<u64>,
    /// Marks met in the stream before their completion was drained.
    marks_early: VecDeque<u64>,
    /// Marks completed, and marks consumed from the stream.
    marks_completed: u64,
    marks_consumed: u64,
    /// Until when a mark flood runs.
    mark_flood_until: Option<Instant>,
    /// The backoff model: failed sessions in a row, when the current session became Ready,
    /// and the retry time the last `Disconnected` announced.
    failures: u32,
    /// Whether `failures` is known: a session Ready for about `stable_after` (its Ready
    /// drained late, see `drained_at`) may or may not have reset it.
    failures_known: bool,
    /// When the current session became Ready: at the earliest, and when drained.
    ready_at: Option<(Instant, Instant)>,
    retry_at: Option<Instant>,
    breakers_opened: u64,
    /// The last time a pump drained every output: an output drained later was emitted at
    /// or after it (a pump that hits its round limit leaves some for a later instant).
    drained_at: Option<Instant>,
}

/// One filter added at run time, as [`Extras::filter_order`] keeps it.
#[derive(Debug)]
struct FilterEntry {
    text: String,
    state: FilterState,
}

/// What the client holds of a filter it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterState {
    /// Its action has not completed.
    Open,
    /// Accepted, or handed out whole and its answer lost: kept, re-applied at every login.
    Kept,
    /// Its answer was lost (cancelled, timed out): kept unless none of it was handed out or
    /// the server's late answer refuses it, which the harness learns at the next login
    /// (re-applied, or not).
    Unsure,
    /// Refused by the server or never sent: not kept.
    Gone,
}

/// The harness client's `stable_after` (the default): a session Ready this long forgets
/// the failures before it.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// The harness client's backoff policy.
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const BREAKER_THRESHOLD: u32 = 6;
const BREAKER_COOLDOWN: Duration = Duration::from_secs(3);
/// The harness client's `originate_margin` (the default).
const ORIGINATE_MARGIN: Duration = Duration::from_secs(10);

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
    client_config_with(seed, 500, AuthMethod::Plain, false, None)
}

/// [`client_config`] with a list item cap and a login method.
fn client_config_with(
    seed: u64,
    max_list_items: usize,
    auth: AuthMethod,
    sync_originate: bool,
    max_abandoned: Option<usize>,
) -> ClientConfig {
    let builder = ClientConfig::builder("admin", "amp111");
    let builder = match max_abandoned {
        Some(cap) => builder.max_abandoned_actions(cap),
        None => builder,
    };
    match builder
        .auth(auth)
        .allow_sync_originate(sync_originate)
        .seed(seed)
        .event_queue_cap(256)
        .pipeline_depth(8)
        .max_queued_actions(MAX_QUEUED_ACTIONS)
        .max_pending_actions(128)
        .max_list_items(max_list_items)
        .action_timeout(GRACE)
        .ping_interval(PING_INTERVAL)
        .pong_timeout(PONG_TIMEOUT)
        .backoff_base(BACKOFF_BASE)
        .backoff_max(BACKOFF_MAX)
        .breaker_threshold(BREAKER_THRESHOLD)
        .breaker_cooldown(BREAKER_COOLDOWN)
        .stable_after(STABLE_AFTER)
        .originate_margin(ORIGINATE_MARGIN)
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
        let mut extra = Extras {
            rng: Rng(seed ^ 0x6a95_0d57),
            failures_known: true,
            ..Extras::default()
        };
        extra.sync = extra.rng.chance(15);
        extra.unclaims = extra.rng.chance(30);
        extra.filter_flood = extra.rng.chance(2);
        extra.marking = extra.rng.chance(10);
        // One seed in five (not those with sync Originates, whose silence bound assumes
        // their hold lasts) keeps only two abandoned entries, so that evictions happen:
        // drawn apart so that the other choices of a seed stay what they were.
        let max_abandoned = (!extra.sync && Rng(seed ^ 0xabad_0e55).chance(20)).then_some(2);
        let client_config =
            client_config_with(seed, max_list_items, auth, extra.sync, max_abandoned);
        let client = Client::new(client_config.clone(), t0);
        // One seed in twelve logs off mid-run, drawn apart so that the other choices of
        // a seed stay what they were.
        let mut own = Rng(seed ^ 0x1060_ff00);
        let logoff_at = own
            .chance(8)
            .then(|| t0 + Duration::from_millis(3_000 + own.below(50_000)));
        let filters = own.chance(10) || extra.filter_flood;
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
            extra,
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
                if matches!(output, Output::Connect) {
                    if self.logged_off.is_some() {
                        self.violate("the client reconnected after it logged off".into());
                    }
                    self.check_reconnect_time();
                }
                if matches!(output, Output::Close) {
                    self.extra.blocked_at_close = self.blocked_on_a_call();
                    // Its answer can no longer come where the client waits for it.
                    self.sync_hold_ended(self.now);
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
                        let earliest = self.extra.drained_at.unwrap_or(self.t0);
                        self.extra.ready_at = Some((earliest, self.now));
                        self.check_mask();
                        self.check_filters();
                    }
                    Output::Notice(Notice::Completed { id, outcome }) => {
                        self.on_completed(id, outcome)
                    }
                    Output::Notice(Notice::Disconnected {
                        reason,
                        retry_at,
                        breaker_open,
                    }) => {
                        self.ready = false;
                        self.check_backoff(retry_at, breaker_open);
                        self.summary.disconnects += 1;
                        if matches!(reason, DisconnectReason::HeartbeatTimeout) {
                            self.summary.heartbeat_timeouts += 1;
                            self.check_heartbeat_waited();
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
            let (tap, wire, now) = (&mut self.tap, &mut self.wire, self.now);
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
                    tap.see(now, chunk);
                },
                |chunk| wire.see(chunk),
            );
            if received {
                self.last_rx = self.now;
                if let Some((_, Some(at))) = self.tap.sync_cancelled {
                    self.summary.sync_answered_after_cancel += 1;
                    self.sync_hold_ended(at);
                }
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
            if !self.client.has_output() {
                self.extra.drained_at = Some(self.now);
            }
            if !progressed {
                return;
            }
        }
    }

    fn consume(&mut self) {
        if self.consumer_paused_until.is_some_and(|t| self.now < t) {
            return;
        }
        // Items drained together were in the queue together: each run of notices between
        // two events or marks is in canonical form, at most seven session boundaries and
        // gaps, and one discard notice per reason in each segment between boundaries.
        let mut run = 0usize;
        let mut discards: HashSet<String> = HashSet::new();
        while let Some(item) = self.client.poll_event() {
            match &item {
                StreamItem::Event(_) | StreamItem::Mark { .. } | StreamItem::LateAnswer { .. } => {
                    run = 0;
                    discards.clear();
                }
                StreamItem::Discarded { reason, .. } => {
                    let first = discards.insert(format!("{reason:?}"));
                    if !first {
                        self.violate(format!("two {reason:?} discard notices in one segment"));
                    }
                }
                StreamItem::Ready { .. } | StreamItem::Disconnected { .. } => {
                    run += 1;
                    discards.clear();
                }
                StreamItem::Gap { .. } => run += 1,
                _ => {}
            }
            if run > 7 {
                self.violate(format!("{run} session boundaries and gaps in a row"));
            }
            match item {
                StreamItem::Mark { mark } => {
                    self.extra.marks_consumed += 1;
                    self.summary.marks += 1;
                    self.extra.marks_early.push_back(mark);
                    self.match_marks();
                }
                // A late answer is queued (and counted in `events_queued`) as an event is.
                StreamItem::Event(_) | StreamItem::LateAnswer { .. } => self.consumed += 1,
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
        if s.abandoned_actions > self.client_config.max_abandoned_actions() {
            self.violate(format!(
                "abandoned entries {} over max_abandoned_actions",
                s.abandoned_actions
            ));
        }
        self.summary.abandoned_evicted = s.abandoned_evicted;
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
        // Actions still open are queued, not part of the login: the order holds regardless.
        if !self.extra.filter_order.is_empty() {
            self.check_filter_order();
        }
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
        // Its mark, before the marks model forgets it: as an adapter keeps its caller's.
        let mark = self.extra.marked_open.get(&id).copied();
        self.extras_completed(&id, &outcome);
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
        if outcome.is_err() {
            // Whatever of its list still comes, the client drops and counts.
            let until = self.now + GRACE;
            let seen = match self.tap.lists.get_mut(id.as_str()) {
                Some(list) => {
                    list.ended = Some(until);
                    Some(list.items.len())
                }
                None => {
                    self.tap.ended.insert(id.to_string(), until);
                    None
                }
            };
            if let (Some(seen), Err(ActionError::ListOverflow { items, .. })) = (seen, &outcome) {
                self.summary.list_overflows += 1;
                // The cap, not a short list, ended it: the server sent an item past the cap.
                let cap = self.max_list_items;
                if *items > cap || seen <= *items {
                    self.violate(format!(
                        "{id}: overflow at {items} items (cap {cap}) after the server sent {seen}"
                    ));
                }
                // The item past the cap and any read with it: dropped, not gathered.
                self.tap.dropped += seen.saturating_sub(*items) as u64;
            }
        } else if let Some(list) = self.tap.lists.remove(id.as_str()) {
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
        self.unclaim(&id, mark, outcome);
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
        let sent = if self.extra.marking && self.extra.rng.chance(30) {
            self.send_marked(action, options)
        } else {
            self.client.send_action_with(self.now, action, options)
        };
        match sent {
            Err(SendError::QueueFull {
                what: FullQueue::StreamMarks,
                ..
            }) => {} // checked by send_marked
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
        match self.add_tracked_filter(valid) {
            Ok(id) => {
                self.filter_actions.insert(id.clone(), valid);
                // Not held to the healthy-link law: a filter the server cannot compile is
                // refused whatever the link.
                self.track_sent(&id, false);
            }
            Err(SendError::TooManyFilters) => {}
            Err(SendError::QueueFull { what, cap }) => self.check_full(what, cap),
            Err(SendError::Closed {
                reason: DisconnectReason::Logoff,
            }) if self.logged_off.is_some() => {}
            Err(e) => self.violate(format!("add_filter refused: {e}")),
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

/// The behaviours of [`Extras`] and their checks.
impl Harness {
    /// A connect comes no earlier than the retry time the last `Disconnected` announced.
    fn check_reconnect_time(&mut self) {
        if let Some(at) = self.extra.retry_at.take() {
            if self.now < at {
                let early = at.duration_since(self.now);
                self.violate(format!(
                    "reconnected {early:?} before the announced retry time"
                ));
            }
        }
        self.extra.ready_at = None;
    }

    /// A lost session's retry time follows the backoff policy from the harness's own count
    /// of failures in a row (reset by a session Ready for `stable_after`): full jitter below
    /// `min(backoff_max, backoff_base * 2^(failures-1))`; from the `breaker_threshold`-th
    /// failure on, the breaker is open (and said so) and the wait is the cooldown plus at
    /// most one base of jitter; `Stats::breaker_opened` counts each opening once.
    fn check_backoff(&mut self, retry_at: Option<Instant>, breaker_open: bool) {
        let now = self.now;
        // The loss came at or after the last full drain, and at or before now.
        let since = self.extra.drained_at.unwrap_or(self.t0);
        let lasted = |t: Instant| now.saturating_duration_since(t) >= STABLE_AFTER;
        let (surely, maybe) = self
            .extra
            .ready_at
            .map_or((false, false), |(earliest, drained)| {
                (lasted(drained), lasted(earliest))
            });
        self.extra.ready_at = None;
        if surely {
            self.extra.failures_known = true;
        } else if maybe {
            self.extra.failures_known = false;
        }
        self.extra.failures = if surely { 1 } else { self.extra.failures + 1 };
        let n = self.extra.failures;
        let Some(at) = retry_at else {
            self.violate("a session was lost with no retry time".into());
            return;
        };
        self.extra.retry_at = Some(at);
        if !self.extra.failures_known {
            self.extra.breakers_opened = self.client.stats().breaker_opened;
            return;
        }
        // At most `delay`, at least `least` after the loss.
        let delay = at.saturating_duration_since(since);
        let least = at.saturating_duration_since(now);
        let open = n >= BREAKER_THRESHOLD;
        if breaker_open != open {
            self.violate(format!(
                "failure {n} in a row: breaker said {breaker_open}, the threshold is {BREAKER_THRESHOLD}"
            ));
        }
        let (low, high) = if open {
            (BREAKER_COOLDOWN, BREAKER_COOLDOWN + BACKOFF_BASE)
        } else {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1u32 << (n - 1).min(20))
                .min(BACKOFF_MAX);
            (Duration::ZERO, ceiling)
        };
        if delay < low || least > high {
            self.violate(format!(
                "failure {n} in a row: retry in {least:?}..={delay:?}, outside {low:?}..={high:?}"
            ));
        }
        if n == BREAKER_THRESHOLD {
            self.extra.breakers_opened += 1;
        }
        self.summary.backoff_checks += 1;
        let counted = self.client.stats().breaker_opened;
        if counted != self.extra.breakers_opened {
            let want = self.extra.breakers_opened;
            self.violate(format!(
                "breaker_opened {counted}, but it opened {want} times"
            ));
        }
    }

    /// Hands back some async Originates' outcomes, as an adapter whose caller went away
    /// does. `Client::unclaimed` promises: while the session that received it is the
    /// current one, the server's answer an outcome holds goes to the event stream as a late
    /// answer, and the `OriginateResponse` it carries after it (one stream item offered
    /// each: queued, or dropped into a gap), and nothing else of the outcome does; the
    /// event accounting at the end then holds with them.
    fn unclaim(&mut self, id: &ActionId, mark: Option<u64>, outcome: Outcome) {
        if !self.extra.unclaims || !self.originates.contains(id) || !self.extra.rng.chance(50) {
            return;
        }
        let (answer, carries) = match &outcome {
            Ok(r) => (true, r.follow_up().is_some()),
            Err(ActionError::Server(r)) => (true, r.follow_up().is_some()),
            Err(_) => (false, false),
        };
        // Outputs are drained in order: a session that ended after this completion has
        // said so already in the client's state, and none can have started since.
        let current = matches!(self.client.status(), Status::Ready { .. });
        let offered = |c: &Client| {
            let s = c.stats();
            s.events_queued + s.events_dropped
        };
        let before = offered(&self.client);
        self.summary.unclaimed += 1;
        self.client.unclaimed(self.now, id, mark, outcome);
        let added = offered(&self.client) - before;
        let want = if current {
            u64::from(answer) + u64::from(carries)
        } else {
            0
        };
        if added != want {
            self.violate(format!(
                "{id} handed back (answer {answer}, follow-up {carries}, session current {current}): {added} stream items offered, not {want} (connection prefix {})",
                self.client.action_id_prefix()
            ));
        }
    }

    /// What a completion means for the extras' models.
    fn extras_completed(&mut self, id: &ActionId, outcome: &Outcome) {
        if let Some((open, deadline)) = self.extra.sync_open.take() {
            if open != *id {
                self.extra.sync_open = Some((open, deadline));
            } else {
                if matches!(outcome, Err(ActionError::Cancelled)) {
                    // The server is blocked all the same until the call ends: open until
                    // its response comes (`Tap::sync_cancelled`).
                    self.extra.sync_gate = Some(deadline);
                    self.extra.sync_held = self.extra.sync_log.back().map(|e| e.0);
                    self.tap.sync_cancelled = Some((id.to_string(), None));
                } else if let Some(entry) = self.extra.sync_log.back_mut() {
                    entry.1 = Some(self.now);
                }
                if matches!(outcome, Err(ActionError::TimedOut { .. })) && self.now < deadline {
                    let early = deadline.duration_since(self.now);
                    self.violate(format!(
                        "sync Originate {id} timed out {early:?} before its deadline (its ring timeout plus originate_margin)"
                    ));
                }
            }
        }
        if let Some(mark) = self.extra.marked_open.remove(id) {
            self.extra.marks_completed += 1;
            self.extra.marks_due.push_back(mark);
            self.match_marks();
        }
        if let Some(slot) = self.extra.filter_slot.remove(id) {
            let whole = self.wire.whole.contains(id.as_str());
            let entry = &mut self.extra.filter_order[slot];
            entry.state = match outcome {
                Ok(_) => FilterState::Kept,
                Err(ActionError::Server(_))
                | Err(ActionError::NotSent(_))
                | Err(ActionError::TimedOut {
                    phase: Phase::Queued,
                    ..
                }) => FilterState::Gone,
                // Handed out whole and its connection gone: no answer can come now, and
                // the client keeps it, whatever the server did with it.
                Err(ActionError::Unknown(_)) if whole => FilterState::Kept,
                // Cancelled (withdrawn if none of it was handed out) or timed out: kept,
                // unless none of it left or a late refusal comes on this connection.
                Err(_) => FilterState::Unsure,
            };
        }
    }

    /// The cancelled sync Originate no longer keeps the server silent as far as the client
    /// knows: its response came, or its connection closed, `at`.
    fn sync_hold_ended(&mut self, at: Instant) {
        self.tap.sync_cancelled = None;
        if let Some(sent) = self.extra.sync_held.take() {
            for entry in self.extra.sync_log.iter_mut().filter(|e| e.0 == sent) {
                entry.1.get_or_insert(at);
            }
        }
    }

    /// Whether the server's session is blocked on a sync Originate's call (and nothing
    /// else keeps it silent: a half-open link).
    fn blocked_on_a_call(&self) -> bool {
        self.session.is_some_and(|s| {
            !self.server.is_half_open(s)
                && self
                    .server
                    .session(s)
                    .is_some_and(|x| matches!(x.block, Some(crate::session::Block::Call)))
        })
    }

    /// The heartbeat never gives up a session whose server is blocked on the call of a sync
    /// Originate (cancelled or not) written before its Ping, before that Originate's
    /// deadline: the pong deadline is the later of the two. (One written after the Ping
    /// does not extend it: a Ping that went unanswered before is the link's, not the call's.)
    fn check_heartbeat_waited(&mut self) {
        if !self.extra.blocked_at_close {
            return;
        }
        // The Ping went out `pong_timeout` before, unless a sync Originate's deadline
        // already extended its wait (then it went out earlier still).
        let Some(ping_at) = self.now.checked_sub(PONG_TIMEOUT) else {
            return;
        };
        let owed = self
            .extra
            .sync_log
            .iter()
            .filter(|(sent, done, deadline)| {
                *sent < ping_at && done.is_none_or(|d| d > ping_at) && self.now < *deadline
            })
            .map(|(sent, _, deadline)| (*sent, *deadline))
            .next_back();
        if let Some((sent, deadline)) = owed {
            let early = deadline.duration_since(self.now);
            let at = sent.duration_since(self.t0);
            self.violate(format!(
                "the heartbeat gave up a session blocked on the call of the sync Originate sent at {at:?}, {early:?} before its deadline"
            ));
        }
    }

    /// Marks come out of the stream in the order their actions completed, each once.
    fn match_marks(&mut self) {
        while !self.extra.marks_due.is_empty() && !self.extra.marks_early.is_empty() {
            let (due, met) = (
                self.extra.marks_due.pop_front(),
                self.extra.marks_early.pop_front(),
            );
            if due != met {
                self.violate(format!(
                    "the stream gave mark {met:?} where the completions say {due:?}"
                ));
            }
        }
    }

    /// A marked send: refused `QueueFull(StreamMarks)` exactly when marks waiting in the
    /// stream plus marked actions pending reach `event_queue_cap`, else accepted.
    fn send_marked(&mut self, action: Action, options: SendOptions) -> Result<ActionId, SendError> {
        let mark = self.extra.next_mark;
        self.extra.next_mark += 1;
        let exact = !self.client.has_output();
        // A mark may be read from the stream before the harness takes its action's
        // Completed notice (`marks_early`): it is then still in `marked_open` and already
        // consumed, and counts for neither; so the sum, not `completed - consumed` alone
        // (which is then negative), is what waits.
        let sent = self.extra.marked_open.len() as u64 + self.extra.marks_completed;
        let held = match sent.checked_sub(self.extra.marks_consumed) {
            Some(held) => held as usize,
            None => {
                self.violate(format!(
                    "{} marks read from the stream, but only {sent} marked actions sent",
                    self.extra.marks_consumed
                ));
                0
            }
        };
        let cap = self.client_config.event_queue_cap();
        let result = self
            .client
            .send_action_with(self.now, action, options.with_mark(mark));
        match &result {
            Ok(id) => {
                if exact && held >= cap {
                    self.violate(format!(
                        "a marked action was accepted with {held} marks held (cap {cap})"
                    ));
                }
                self.extra.marked_open.insert(id.clone(), mark);
            }
            Err(SendError::QueueFull {
                what: FullQueue::StreamMarks,
                cap: named,
            }) => {
                self.summary.queue_full += 1;
                if *named != cap || (exact && held < cap) {
                    self.violate(format!(
                        "QueueFull(StreamMarks, cap {named}) with {held} marks held (cap {cap})"
                    ));
                }
            }
            Err(_) => {}
        }
        result
    }

    /// A flood of marked Pings while the consumer stalls: the marks pile up in the stream
    /// until the cap refuses more.
    fn mark_flood(&mut self) {
        for _ in 0..4 {
            match self.send_marked(Action::new("Ping"), SendOptions::default()) {
                Ok(id) => self.track_sent(&id, false),
                Err(SendError::QueueFull {
                    what: FullQueue::StreamMarks,
                    ..
                }) => {}
                Err(SendError::QueueFull { what, cap }) => self.check_full(what, cap),
                Err(SendError::Closed {
                    reason: DisconnectReason::Logoff,
                }) if self.logged_off.is_some() => {}
                Err(e) => self.violate(format!("a marked Ping was refused: {e}")),
            }
        }
    }

    /// Sends one sync Originate (none other open): its response comes only once the call
    /// is answered (`echo`) or fails (`busy`, or `noanswer` at the ring timeout). The
    /// client owes it `max(action_timeout, Timeout + originate_margin)`.
    fn sync_originate(&mut self) {
        let exten = ["echo", "busy", "noanswer", "nosuch"][self.extra.rng.below(4) as usize];
        // While faults run, some ring longer than the heartbeat's silence bound (4 s): the
        // server is silent all that time, and the session must survive it. Later, short
        // ones only: actions queued behind a long one would outlive their deadlines.
        let long = self.healthy_from.is_none() && self.extra.rng.chance(30);
        let ring = if long {
            Duration::from_millis(4_000 + self.extra.rng.below(5_000))
        } else {
            Duration::from_millis(500 + self.extra.rng.below(2_000))
        };
        let action = Action::new("Originate")
            .field("Channel", format!("Local/{exten}@ami-test"))
            .field("Application", "Wait")
            .field("Data", "1")
            .field("Timeout", ring.as_millis().to_string());
        match self.client.send_action(self.now, action) {
            Ok(id) => {
                let timeout = self.client_config.action_timeout();
                let deadline = self.now + timeout.max(ring + ORIGINATE_MARGIN);
                self.extra.sync_open = Some((id.clone(), deadline));
                self.extra.sync_until =
                    Some(self.extra.sync_until.map_or(deadline, |t| t.max(deadline)));
                if self.extra.sync_log.len() == 4 {
                    self.extra.sync_log.pop_front();
                }
                self.extra.sync_log.push_back((self.now, None, deadline));
                self.summary.sync_originates += 1;
                self.track_sent(&id, true);
            }
            Err(SendError::QueueFull { what, cap }) => self.check_full(what, cap),
            Err(SendError::Closed {
                reason: DisconnectReason::Logoff,
            }) if self.logged_off.is_some() => {}
            Err(e) => self.violate(format!("a sync Originate was refused: {e}")),
        }
    }

    /// What the extras do in one step.
    fn act_extras(&mut self) {
        let now = self.now;
        // None while the link heals: one written on a dead link would put its detection
        // past the start of the healthy part.
        let healing = self.healthy_from.is_some_and(|t| now < t);
        if self.extra.sync
            && self.ready
            && !healing
            && self.extra.sync_open.is_none()
            && self.extra.sync_gate.is_none_or(|t| now >= t)
            && self.extra.rng.chance(2)
        {
            self.sync_originate();
        }
        if self.extra.filter_flood
            && self.ready
            && self.filter_actions.is_empty()
            && self.extra.rng.chance(5)
        {
            self.filter_batch();
        }
        if self.extra.marking {
            if self.extra.mark_flood_until.is_none() && self.extra.rng.below(500) == 0 {
                let until = now + Duration::from_millis(2000 + self.extra.rng.below(4000));
                self.extra.mark_flood_until = Some(until);
                self.consumer_paused_until = Some(until);
            }
            match self.extra.mark_flood_until {
                Some(t) if now >= t => self.extra.mark_flood_until = None,
                Some(_) if self.ready => self.mark_flood(),
                _ => {}
            }
        }
    }

    /// Filters the client holds by the model: at least `.0`, at most `.1`.
    fn filters_held(&self) -> (usize, usize) {
        let count = |f: fn(FilterState) -> bool| {
            self.extra
                .filter_order
                .iter()
                .filter(|e| f(e.state))
                .count()
        };
        let sure = count(|s| matches!(s, FilterState::Open | FilterState::Kept));
        (sure, sure + count(|s| s == FilterState::Unsure))
    }

    /// Adds a filter the harness tracks by its text: `valid` ones let every event through.
    /// Refused `TooManyFilters` exactly when the client holds [`MAX_FILTERS`].
    fn add_tracked_filter(&mut self, valid: bool) -> Result<ActionId, SendError> {
        let n = self.extra.filter_order.len();
        let text = if valid {
            format!("!Event: NoSuchEvent{n}")
        } else {
            format!("!Event: (unclosed{n}")
        };
        let (low, high) = self.filters_held();
        let result = self.client.add_filter(self.now, &text);
        match &result {
            Ok(id) => {
                if low >= MAX_FILTERS {
                    self.violate(format!("filter {n} accepted with {low} held"));
                }
                self.extra.filter_slot.insert(id.clone(), n);
                self.extra.filter_order.push(FilterEntry {
                    text,
                    state: FilterState::Open,
                });
            }
            Err(SendError::TooManyFilters) => {
                self.summary.filters_refused += 1;
                if high < MAX_FILTERS {
                    self.violate(format!(
                        "filter {n} refused TooManyFilters with {low}..={high} held"
                    ));
                }
            }
            Err(_) => {}
        }
        result
    }

    /// A batch of filters (some seeds), until the client refuses one.
    fn filter_batch(&mut self) {
        for _ in 0..1 + self.extra.rng.below(60) {
            let valid = self.extra.rng.chance(90);
            match self.add_tracked_filter(valid) {
                Ok(id) => {
                    self.filter_actions.insert(id.clone(), valid);
                    self.track_sent(&id, false);
                }
                Err(SendError::TooManyFilters) => return,
                Err(SendError::QueueFull { what, cap }) => {
                    self.check_full(what, cap);
                    return;
                }
                Err(SendError::Closed {
                    reason: DisconnectReason::Logoff,
                }) if self.logged_off.is_some() => return,
                Err(e) => {
                    self.violate(format!("a filter was refused: {e}"));
                    return;
                }
            }
        }
    }

    /// The login re-applied the filters the client holds, in the order they were added:
    /// every one kept, perhaps an unsure one (then known kept), and nothing else.
    fn check_filter_order(&mut self) {
        let sent = std::mem::take(&mut self.wire.filter_texts);
        let mut next = sent.iter().peekable();
        let mut missing = None;
        for entry in &mut self.extra.filter_order {
            let held = matches!(entry.state, FilterState::Kept | FilterState::Unsure);
            if !held {
                continue;
            }
            if next.peek().is_some_and(|t| **t == entry.text) {
                next.next();
                entry.state = FilterState::Kept;
            } else if entry.state == FilterState::Unsure {
                entry.state = FilterState::Gone;
            } else if missing.is_none() {
                missing = Some(entry.text.clone());
            }
        }
        let extra = next.next().cloned();
        self.wire.filter_texts = sent;
        if let Some(text) = missing {
            self.violate(format!(
                "the login did not re-apply the kept filter {text:?} in its place"
            ));
        }
        if let Some(text) = extra {
            self.violate(format!(
                "the login re-applied {text:?}, which the client does not hold there"
            ));
        }
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
        self.act_extras();
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
        // A sync Originate silences the server until its call is answered or fails: one
        // open when the Ping goes out makes the heartbeat wait for its deadline.
        let bound = PING_INTERVAL + PONG_TIMEOUT;
        let ping_at = self.last_rx + PING_INTERVAL;
        let quiet_until = self
            .extra
            .sync_log
            .iter()
            .filter(|(sent, done, _)| *sent < ping_at && done.is_none_or(|d| d >= ping_at))
            .map(|(_, _, deadline)| *deadline)
            .fold(self.last_rx + bound, Instant::max);
        if self.logged_off.is_none()
            && self.ready
            && self.session.is_some()
            && self.now > quiet_until
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
        // A sync Originate written on a dead link delays its detection to its deadline.
        let settle = self
            .server_back_at
            .map_or(plan.quiet_from, |t| t.max(plan.quiet_from))
            .max(self.extra.sync_until.unwrap_or(plan.quiet_from));
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
        // An evicted list's items, and those of any list forgotten at or below the newest
        // evicted entry, are counted in `evicted_answers_dropped` instead.
        let evicted = s.abandoned_evicted > 0;
        let accounted = if evicted {
            s.list_items_dropped <= self.tap.dropped
                && self.tap.dropped <= s.list_items_dropped + s.evicted_answers_dropped
        } else {
            s.list_items_dropped == self.tap.dropped
        };
        if !accounted {
            self.violate(format!(
                "list_items_dropped {} (evicted_answers_dropped {}) but {} list items were dropped (past a cap, or after their action ended)",
                s.list_items_dropped, s.evicted_answers_dropped, self.tap.dropped
            ));
        }
        self.summary.list_items_dropped = self.tap.dropped;
        if !self.extra.marks_due.is_empty() || !self.extra.marks_early.is_empty() {
            self.violate(format!(
                "marks never streamed: {:?}; streamed with no completion: {:?}",
                self.extra.marks_due, self.extra.marks_early
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
