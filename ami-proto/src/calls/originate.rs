//! Originates sent through the tracker: a tag in a channel variable, and their states from
//! sent to resolved.

use crate::client::output::{ActionError, Phase, Response};
use std::collections::BTreeSet;
use std::time::Instant;

/// The unique tag an Originate sent through the tracker carries in the tracker's channel
/// variable (see [`TrackerConfigBuilder::tag_variable`](super::TrackerConfigBuilder::tag_variable)).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OriginateTag(pub(crate) String);

impl OriginateTag {
    /// The tag's text, as set in the channel variable.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OriginateTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an Originate sent through the tracker stands. The final states are `Failed`,
/// `NotSent`, `Ended` and `NotRunningNow`; every Originate reaches one of them or `Running`,
/// and a `Running` one reaches `Ended` when its call ends: when no channel carrying its tag
/// is live and no channel of their call (their `Linkedid`, or one a live channel of it moved
/// to) is live either. A Local channel's pair (`;1`/`;2`, which carry the tag) optimized
/// away hangs up while the channels it joined talk on in the same call: the Originate runs
/// on until they end.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginateState {
    /// Handed to the caller to send; no answer yet. Or answered Success before any event of
    /// its channels: Asterisk writes the answer straight to the session while channel events
    /// come through its event queue, which lags under load. It becomes `Running` when they
    /// come (a channel with its tag, or the answer's Uniqueid), and `InDoubt` when none
    /// came within [`event_grace`](super::TrackerConfigBuilder::event_grace) or events were
    /// lost meanwhile (a gap, a reconnect).
    Pending,
    /// Its answer was lost (the link broke after it was written, or it timed out): the
    /// tracker looks for its tag in the next snapshot.
    InDoubt,
    /// Its channels are live and tracked.
    Running {
        /// Uniqueids of the live channels carrying its tag. Empty once those are gone while
        /// other channels of its call are live (a Local pair optimized away): its call goes
        /// on without them.
        channels: Vec<String>,
    },
    /// The server said it failed: `Response: Error`, or an `OriginateResponse` with
    /// `Response: Failure` (`reason` is its `Reason` code).
    Failed {
        /// `Reason` of the `OriginateResponse` (0 no such channel, 1 hung up, 3 no answer,
        /// 5 busy, 8 congestion), when there was one.
        reason: Option<u8>,
        /// The response's `Message`, when there was one.
        message: Option<String>,
    },
    /// Never written to the server: safe to send again.
    NotSent,
    /// It ran and its call ended: every channel carrying its tag, and every channel of
    /// their call, has ended.
    Ended {
        /// Hangup cause of the last channel of its call to end (how the call ended: not the
        /// cause 16 of a Local pair optimized away midway), if its Hangup was seen with one.
        cause: Option<u16>,
        /// Some channel of it (of its call) ended while the tracker could not see.
        unobserved: bool,
    },
    /// After its answer was lost, a snapshot found no live channel carrying its tag. It is
    /// not running now: it may have run and ended while the tracker was away, or never have
    /// started. The tracker cannot tell which, and says no more than that.
    NotRunningNow,
}

impl OriginateState {
    /// True for the states an Originate never leaves.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            OriginateState::Failed { .. }
                | OriginateState::NotSent
                | OriginateState::Ended { .. }
                | OriginateState::NotRunningNow
        )
    }
}

/// One Originate's bookkeeping.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) state: OriginateState,
    /// Live channels carrying the tag.
    pub(crate) live: BTreeSet<String>,
    /// Linkedids of its call: those of the channels that carried the tag, and those its
    /// channels moved to; each until that call has no live channel left. A Local pair
    /// optimized away leaves no tagged channel while its call goes on under this Linkedid.
    pub(crate) calls: BTreeSet<String>,
    /// Some channel of its call ended: the cause of the last one to end (None if unseen or
    /// without one).
    pub(crate) last_end: Option<Option<u16>>,
    /// Some channel of it ended while the tracker could not see.
    unobserved: bool,
    /// Answered (Success) before any event of its channels: until when those events are
    /// awaited before the answer counts as lost ([`OriginateState::InDoubt`]).
    pub(crate) wait_until: Option<Instant>,
    /// The answered Uniqueid, while awaited.
    pub(crate) uid: Option<String>,
}

/// What an Originate's answer says.
pub(crate) enum Answer {
    /// Answered (the `OriginateResponse` said Success): the `;1` channel's Uniqueid.
    Running(Option<String>),
    Failed {
        reason: Option<u8>,
        message: Option<String>,
    },
    NotSent,
    InDoubt,
}

pub(crate) fn answer_of(reply: &Result<Response, ActionError>) -> Answer {
    match reply {
        Ok(r) => Answer::Running(
            r.follow_up()
                .map(super::channel::uniqueid)
                .filter(|u| !u.is_empty() && !u.starts_with('<')),
        ),
        Err(ActionError::Server(r)) => Answer::Failed {
            reason: r
                .follow_up()
                .and_then(|f| f.get_str("Reason"))
                .and_then(|v| v.trim().parse().ok()),
            message: r.text().map(str::to_owned),
        },
        Err(ActionError::NotSent(_))
        | Err(ActionError::TimedOut {
            phase: Phase::Queued,
            ..
        }) => Answer::NotSent,
        // Written and no word back (lost link, timeout, cancelled after writing): it may
        // be running.
        Err(_) => Answer::InDoubt,
    }
}

impl Record {
    pub(crate) fn new() -> Record {
        Record {
            state: OriginateState::Pending,
            live: BTreeSet::new(),
            calls: BTreeSet::new(),
            last_end: None,
            unobserved: false,
            wait_until: None,
            uid: None,
        }
    }

    fn running(&self) -> OriginateState {
        OriginateState::Running {
            channels: self.live.iter().cloned().collect(),
        }
    }

    fn ended(&self) -> Option<OriginateState> {
        self.last_end.map(|cause| OriginateState::Ended {
            cause,
            unobserved: self.unobserved,
        })
    }

    /// Neither a channel carrying the tag nor any channel of its call is live.
    fn gone(&self) -> bool {
        self.live.is_empty() && self.calls.is_empty()
    }

    /// A channel carrying the tag is live, in the call `linkedid`. Returns the new state if
    /// it changed.
    pub(crate) fn link(&mut self, uniqueid: &str, linkedid: &str) -> Option<OriginateState> {
        self.calls.insert(linkedid.to_string());
        if !self.live.insert(uniqueid.to_string()) {
            return None;
        }
        match self.state {
            OriginateState::Running { .. } | OriginateState::InDoubt => self.set(self.running()),
            // Answered first, its channel's events after: now it is seen.
            OriginateState::Pending if self.wait_until.is_some() => {
                self.wait_until = None;
                self.uid = None;
                self.set(self.running())
            }
            _ => None,
        }
    }

    /// A live channel of the call `from` moved to the call `to` (its Linkedid changed): the
    /// call goes on there.
    pub(crate) fn moved(&mut self, from: &str, to: &str) {
        if self.calls.contains(from) {
            self.calls.insert(to.to_string());
        }
    }

    /// A channel carrying the tag ended; `call_live`: some channel of its call is still
    /// live (then it is still running), else the end of its call follows.
    pub(crate) fn channel_ended(
        &mut self,
        uniqueid: &str,
        cause: Option<u16>,
        unobserved: bool,
        call_live: bool,
    ) -> Option<OriginateState> {
        if !self.live.remove(uniqueid) {
            return None;
        }
        self.unobserved |= unobserved;
        if self.last_end.is_none() || self.live.is_empty() {
            self.last_end = Some(cause);
        }
        match self.state {
            OriginateState::Running { .. } if !self.live.is_empty() || call_live => {
                self.set(self.running())
            }
            OriginateState::Running { .. } if self.calls.is_empty() => {
                let ended = self.ended()?;
                self.set(ended)
            }
            _ => None,
        }
    }

    /// The call `linkedid` has no live channel left; `cause` of its last channel to end,
    /// `unobserved` if any of its channels ended unseen.
    pub(crate) fn call_ended(
        &mut self,
        linkedid: &str,
        cause: Option<u16>,
        unobserved: bool,
        ended_here: bool,
    ) -> Option<OriginateState> {
        if !self.calls.remove(linkedid) {
            return None;
        }
        if ended_here {
            self.unobserved |= unobserved;
            self.last_end = Some(cause);
        }
        match self.state {
            OriginateState::Running { .. } if self.gone() && self.last_end.is_some() => {
                let ended = self.ended()?;
                self.set(ended)
            }
            _ => None,
        }
    }

    /// The action's answer arrived (all events before it already applied), at `now`;
    /// `grace`: how long the events of its channels are awaited after a Success answer.
    pub(crate) fn answered(
        &mut self,
        answer: Answer,
        now: Instant,
        grace: std::time::Duration,
    ) -> Option<OriginateState> {
        let next = match answer {
            Answer::Running(_) | Answer::InDoubt if !self.gone() => self.running(),
            Answer::Running(_) | Answer::InDoubt if self.last_end.is_some() => self.ended()?,
            // Answered Success, no event of its channels yet: the answer is written straight
            // to the session, channel events come through the server's event queue and may
            // come after it. Await them; only their absence past `grace` is a loss.
            Answer::Running(uid) => {
                self.wait_until = Some(now.checked_add(grace).unwrap_or(now));
                self.uid = uid;
                return None;
            }
            // No answer: find it in a snapshot.
            Answer::InDoubt => OriginateState::InDoubt,
            Answer::Failed { reason, message } => OriginateState::Failed { reason, message },
            Answer::NotSent => OriginateState::NotSent,
        };
        self.set(next)
    }

    /// Its awaited channel events did not come (or may have been lost): in doubt.
    pub(crate) fn doubt(&mut self) -> Option<OriginateState> {
        self.wait_until.take()?;
        self.uid = None;
        self.set(OriginateState::InDoubt)
    }

    /// A snapshot after the answer was lost: resolve an in-doubt Originate.
    pub(crate) fn resolve(&mut self) -> Option<OriginateState> {
        if self.state != OriginateState::InDoubt {
            return None;
        }
        if self.gone() {
            self.set(OriginateState::NotRunningNow)
        } else {
            self.set(self.running())
        }
    }

    fn set(&mut self, state: OriginateState) -> Option<OriginateState> {
        if self.state == state {
            return None;
        }
        self.state = state.clone();
        Some(state)
    }
}
