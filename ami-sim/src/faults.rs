//! Fault injection: knobs that stay set ([`Faults`] setters) and one-shot faults at given
//! virtual times ([`Fault`], scheduled with [`Faults::schedule`] or applied at once with
//! [`SimServer::inject`](crate::SimServer::inject)). Every random choice comes from the
//! server's seeded PRNG, so a run is reproducible from [`SimConfig::seed`](crate::SimConfig).

use crate::rng::SimRng;
use crate::SessionId;
use std::time::{Duration, Instant};

/// Which actions a fault applies to: by name (case-insensitive) or any, each time with a
/// probability.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionMatch {
    name: Option<String>,
    probability: f64,
}

impl ActionMatch {
    /// Every action, every time.
    pub fn any() -> ActionMatch {
        ActionMatch {
            name: None,
            probability: 1.0,
        }
    }

    /// Actions with this name (`Ping`, `originate`...), every time.
    pub fn named(name: &str) -> ActionMatch {
        ActionMatch {
            name: Some(name.to_string()),
            probability: 1.0,
        }
    }

    /// The same match, applied only with probability `p` (0.0 to 1.0) each time.
    pub fn with_probability(mut self, p: f64) -> ActionMatch {
        self.probability = p;
        self
    }

    fn hit(&self, action: &str, rng: &mut SimRng) -> bool {
        let name_ok = self
            .name
            .as_deref()
            .is_none_or(|n| n.eq_ignore_ascii_case(action.trim_end()));
        name_ok && rng.chance(self.probability)
    }
}

/// A one-shot fault.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// [`SimServer::restart`](crate::SimServer::restart): Shutdown event, close every
    /// session, refuse connections for `down_for`.
    Restart {
        /// How long connections are refused.
        down_for: Duration,
    },
    /// Broadcast `count` UserEvents at once (see
    /// [`SimServer::emit_user_events`](crate::SimServer::emit_user_events)).
    EventStorm {
        /// Number of events.
        count: usize,
    },
    /// The session (or every open session for `None`) goes silent: nothing more is sent and
    /// input is ignored, but the connection stays open.
    HalfOpen {
        /// The session, or all.
        session: Option<SessionId>,
    },
    /// Ends a [`Fault::HalfOpen`]: output resumes (what was "sent" meanwhile is lost).
    Resume {
        /// The session, or all.
        session: Option<SessionId>,
    },
    /// The connection is reset: the output still queued is cut at a random point inside it
    /// (inside the next message, if nothing is queued), the client can read up to the cut,
    /// and the session is closed with [`CloseReason::Fault`](crate::CloseReason::Fault).
    ResetMidMessage {
        /// The session, or every open session.
        session: Option<SessionId>,
    },
}

/// An endless, reproducible random schedule of one-shot faults for a simulator that runs a
/// long time (`ami sim --faults SEED`): restarts (down 0.5 to 3 s), stalls (every session
/// goes silent for 2 to 45 s, long enough to trip a client's heartbeat, then resumes) and
/// dropped connections (every session reset mid-message), one every 5 to 30 s after the
/// previous one has ended. Items are offsets from the start; the same seed always gives the
/// same schedule, so a run that broke a client can be replayed.
///
/// ```
/// use ami_sim::{Fault, FaultSchedule};
/// let first: Vec<_> = FaultSchedule::new(7).take(5).collect();
/// assert_eq!(first, FaultSchedule::new(7).take(5).collect::<Vec<_>>());
/// ```
#[derive(Debug, Clone)]
pub struct FaultSchedule {
    rng: SimRng,
    at: Duration,
    /// A stall in progress ends here.
    resume_at: Option<Duration>,
}

impl FaultSchedule {
    /// The schedule of `seed`.
    pub fn new(seed: u64) -> FaultSchedule {
        FaultSchedule {
            rng: SimRng::new(seed),
            at: Duration::ZERO,
            resume_at: None,
        }
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.range(lo, hi))
    }
}

impl Iterator for FaultSchedule {
    type Item = (Duration, Fault);

    fn next(&mut self) -> Option<(Duration, Fault)> {
        if let Some(at) = self.resume_at.take() {
            self.at = at;
            return Some((at, Fault::Resume { session: None }));
        }
        let gap = self.millis(5_000, 30_000);
        self.at += gap;
        let fault = match self.rng.range(0, 2) {
            0 => Fault::Restart {
                down_for: self.millis(500, 3_000),
            },
            1 => {
                let stall = self.millis(2_000, 45_000);
                self.resume_at = Some(self.at + stall);
                Fault::HalfOpen { session: None }
            }
            _ => Fault::ResetMidMessage { session: None },
        };
        Some((self.at, fault))
    }
}

/// What the fault settings decided for one action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) drop: bool,
    pub(crate) delay: Option<Duration>,
    pub(crate) duplicate: bool,
    pub(crate) foreign_id: bool,
}

/// Fault settings of a [`SimServer`](crate::SimServer). All off by default.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    max_chunk: Option<usize>,
    delays: Vec<(ActionMatch, Duration)>,
    drops: Vec<ActionMatch>,
    duplicates: Vec<ActionMatch>,
    foreign_ids: Vec<ActionMatch>,
    garbage: Option<(f64, Vec<u8>)>,
    overlong: Option<(f64, usize)>,
    non_utf8_caller_names: bool,
    half_open_all: bool,
    plan: Vec<(Instant, Fault)>,
}

/// The fault plan: one-shot faults at virtual times.
pub type FaultPlan = Vec<(Instant, Fault)>;

impl Faults {
    /// `transmit()` returns at most `n` bytes at a time (`None`: no limit), so the client
    /// sees messages split at arbitrary bytes. `Some(0)` is treated as 1. Through the
    /// [`TcpFront`](crate::tcp::TcpFront) each socket write is then at most `n` bytes, but
    /// the client's kernel may join them again: reads that small are guaranteed only to a
    /// caller of the sans-IO [`SimServer::transmit`](crate::SimServer::transmit).
    pub fn set_max_chunk(&mut self, n: Option<usize>) -> &mut Self {
        self.max_chunk = n.map(|n| n.max(1));
        self
    }

    /// Delays the reply of matching actions by `d`. The action runs at once; the session is
    /// busy until the reply goes out (later actions wait, events are held), as if the
    /// handler were slow. A sync Originate's reply is not delayed further (it already
    /// waits for its call).
    pub fn delay_replies(&mut self, which: ActionMatch, d: Duration) -> &mut Self {
        self.delays.push((which, d));
        self
    }

    /// Matching actions are swallowed: never run, never answered.
    pub fn drop_actions(&mut self, which: ActionMatch) -> &mut Self {
        self.drops.push(which);
        self
    }

    /// The reply of matching actions is sent twice.
    pub fn duplicate_replies(&mut self, which: ActionMatch) -> &mut Self {
        self.duplicates.push(which);
        self
    }

    /// The reply of matching actions carries a foreign ActionID (`foreign-<n>`), added when
    /// the action had none.
    pub fn foreign_action_ids(&mut self, which: ActionMatch) -> &mut Self {
        self.foreign_ids.push(which);
        self
    }

    /// Before each message sent, with probability `p`, a garbage block is sent: `line`
    /// (no colon needed) followed by an empty line. `p = 0` turns it off.
    pub fn garbage_lines(&mut self, p: f64, line: &[u8]) -> &mut Self {
        self.garbage = (p > 0.0).then(|| (p, line.to_vec()));
        self
    }

    /// Before each message sent, with probability `p`, an over-long header line of `len`
    /// bytes (`X-Overlong: xxx...`) and an empty line are sent. `p = 0` turns it off.
    pub fn overlong_lines(&mut self, p: f64, len: usize) -> &mut Self {
        self.overlong = (p > 0.0).then_some((p, len));
        self
    }

    /// Calls started from now on get a CallerIDName with non-UTF-8 (Latin-1) bytes.
    pub fn non_utf8_caller_names(&mut self, on: bool) -> &mut Self {
        self.non_utf8_caller_names = on;
        self
    }

    /// Every session (present and future) is silently half-open while this is set.
    pub fn half_open_all(&mut self, on: bool) -> &mut Self {
        self.half_open_all = on;
        self
    }

    /// Schedules a one-shot fault at virtual time `at` (applied by the first
    /// `handle_timeout`, `receive`... at or after it; [`SimServer::poll_timeout`] reports it).
    ///
    /// [`SimServer::poll_timeout`]: crate::SimServer::poll_timeout
    pub fn schedule(&mut self, at: Instant, fault: Fault) -> &mut Self {
        let pos = self.plan.partition_point(|(t, _)| *t <= at);
        self.plan.insert(pos, (at, fault));
        self
    }

    /// Schedules every entry of a plan.
    pub fn schedule_plan(&mut self, plan: FaultPlan) -> &mut Self {
        for (at, fault) in plan {
            self.schedule(at, fault);
        }
        self
    }

    /// Turns every fault off and empties the plan.
    pub fn clear(&mut self) -> &mut Self {
        *self = Faults::default();
        self
    }

    /// The current transmit chunk limit.
    pub fn max_chunk(&self) -> Option<usize> {
        self.max_chunk
    }

    /// Whether all sessions are half-open.
    pub fn is_half_open_all(&self) -> bool {
        self.half_open_all
    }

    /// Whether new calls get non-UTF-8 caller names.
    pub fn is_non_utf8_caller_names(&self) -> bool {
        self.non_utf8_caller_names
    }

    pub(crate) fn next_planned(&self) -> Option<Instant> {
        self.plan.first().map(|(t, _)| *t)
    }

    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Fault)> {
        if self.plan.first().is_some_and(|(t, _)| *t <= now) {
            Some(self.plan.remove(0))
        } else {
            None
        }
    }

    pub(crate) fn decide(&self, action: &str, rng: &mut SimRng) -> Decision {
        let mut d = Decision::default();
        if self.drops.iter().any(|m| m.hit(action, rng)) {
            d.drop = true;
            return d;
        }
        for (m, delay) in &self.delays {
            if m.hit(action, rng) {
                d.delay = Some(d.delay.map_or(*delay, |x| x.max(*delay)));
            }
        }
        d.duplicate = self.duplicates.iter().any(|m| m.hit(action, rng));
        d.foreign_id = self.foreign_ids.iter().any(|m| m.hit(action, rng));
        d
    }

    /// Garbage to send before the next message, if a garbage fault fires.
    pub(crate) fn garbage_before(&self, rng: &mut SimRng) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        if let Some((p, line)) = &self.garbage {
            if rng.chance(*p) {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n\r\n");
            }
        }
        if let Some((p, len)) = self.overlong {
            if rng.chance(p) {
                out.extend_from_slice(b"X-Overlong: ");
                out.resize(out.len() + len.saturating_sub(12), b'x');
                out.extend_from_slice(b"\r\n\r\n");
            }
        }
        (!out.is_empty()).then_some(out)
    }

    pub(crate) fn has_garbage(&self) -> bool {
        self.garbage.is_some() || self.overlong.is_some()
    }
}

/// Rewrites (or adds) the ActionID of the first message in `reply`.
pub(crate) fn with_foreign_id(reply: &[u8], foreign: &str) -> Vec<u8> {
    let first_end = reply
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(reply.len(), |p| p + 2);
    let msg_end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(reply.len(), |p| p + 2);
    let mut out = Vec::with_capacity(reply.len() + foreign.len() + 12);
    let line = format!("ActionID: {foreign}\r\n");
    // Look for an ActionID line inside the first message.
    let mut pos = first_end;
    let mut replaced = false;
    while pos < msg_end {
        let end = reply[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(reply.len(), |p| pos + p + 2);
        if reply[pos..end].starts_with(b"ActionID:") {
            out.extend_from_slice(&reply[..pos]);
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(&reply[end..]);
            replaced = true;
            break;
        }
        pos = end;
    }
    if !replaced {
        out.extend_from_slice(&reply[..first_end]);
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(&reply[first_end..]);
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_fault_schedule_is_reproducible_and_each_stall_ends() {
        let a: Vec<_> = FaultSchedule::new(42).take(200).collect();
        assert_eq!(a, FaultSchedule::new(42).take(200).collect::<Vec<_>>());
        assert_ne!(a, FaultSchedule::new(43).take(200).collect::<Vec<_>>());
        let mut last = Duration::ZERO;
        let mut stalled = false;
        let (mut restarts, mut stalls, mut resets) = (0, 0, 0);
        for (at, fault) in &a {
            assert!(*at >= last, "in time order");
            match fault {
                Fault::Resume { session: None } => {
                    assert!(stalled, "a resume ends a stall");
                    stalled = false;
                }
                other => {
                    assert!(!stalled, "nothing else during a stall: {other:?}");
                    let gap = *at - last;
                    assert!((5..=30).contains(&gap.as_secs()), "{gap:?}");
                    match other {
                        Fault::Restart { down_for } => {
                            assert!(*down_for <= Duration::from_secs(3));
                            restarts += 1;
                        }
                        Fault::HalfOpen { session: None } => {
                            stalled = true;
                            stalls += 1;
                        }
                        Fault::ResetMidMessage { session: None } => resets += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            last = *at;
        }
        assert!(
            restarts > 20 && stalls > 20 && resets > 20,
            "{restarts} {stalls} {resets}"
        );
    }

    use super::*;

    #[test]
    fn foreign_id_rewrites_or_adds() {
        let r = b"Response: Success\r\nActionID: mine\r\nPing: Pong\r\n\r\n";
        assert_eq!(
            with_foreign_id(r, "f-1"),
            b"Response: Success\r\nActionID: f-1\r\nPing: Pong\r\n\r\n"
        );
        let r = b"Response: Success\r\nPing: Pong\r\n\r\n";
        assert_eq!(
            with_foreign_id(r, "f-2"),
            b"Response: Success\r\nActionID: f-2\r\nPing: Pong\r\n\r\n"
        );
    }

    #[test]
    fn decisions_follow_matches() {
        let mut f = Faults::default();
        let mut rng = SimRng::new(1);
        f.drop_actions(ActionMatch::named("ping"))
            .delay_replies(ActionMatch::any(), Duration::from_millis(5));
        assert!(f.decide("Ping", &mut rng).drop);
        let d = f.decide("Status", &mut rng);
        assert!(!d.drop);
        assert_eq!(d.delay, Some(Duration::from_millis(5)));
        let mut never = Faults::default();
        never.duplicate_replies(ActionMatch::any().with_probability(0.0));
        assert!(!never.decide("Ping", &mut rng).duplicate);
    }
}
