//! Originates sent through the tracker: a tag in a channel variable, and their states from
//! sent to resolved.

use crate::client::output::{ActionError, Phase, Response};
use std::collections::BTreeSet;

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
/// and a `Running` one reaches `Ended` when its call ends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginateState {
    /// Handed to the caller to send; no answer yet.
    Pending,
    /// Its answer was lost (the link broke after it was written, or it timed out): the
    /// tracker looks for its tag in the next snapshot.
    InDoubt,
    /// Its channels are live and tracked.
    Running {
        /// Uniqueids of the live channels carrying its tag.
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
    /// It ran and every channel carrying its tag has ended.
    Ended {
        /// Hangup cause of the last channel, if its Hangup was seen.
        cause: Option<u16>,
        /// Some channel of it ended while the tracker could not see.
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
    /// The last channel end seen: cause, unobserved.
    pub(crate) last_end: Option<(Option<u16>, bool)>,
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
                .and_then(|f| f.get_str("Uniqueid"))
                .filter(|u| !u.is_empty() && !u.starts_with('<'))
                .map(str::to_owned),
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
            last_end: None,
        }
    }

    fn running(&self) -> OriginateState {
        OriginateState::Running {
            channels: self.live.iter().cloned().collect(),
        }
    }

    fn ended(&self) -> Option<OriginateState> {
        self.last_end
            .map(|(cause, unobserved)| OriginateState::Ended { cause, unobserved })
    }

    /// A channel carrying the tag is live. Returns the new state if it changed.
    pub(crate) fn link(&mut self, uniqueid: &str) -> Option<OriginateState> {
        if !self.live.insert(uniqueid.to_string()) {
            return None;
        }
        match self.state {
            OriginateState::Running { .. } | OriginateState::InDoubt => self.set(self.running()),
            _ => None,
        }
    }

    /// A channel carrying the tag ended.
    pub(crate) fn channel_ended(
        &mut self,
        uniqueid: &str,
        cause: Option<u16>,
        unobserved: bool,
    ) -> Option<OriginateState> {
        if !self.live.remove(uniqueid) {
            return None;
        }
        self.last_end = Some((cause, unobserved));
        match self.state {
            OriginateState::Running { .. } if self.live.is_empty() => {
                let ended = self.ended()?;
                self.set(ended)
            }
            OriginateState::Running { .. } => self.set(self.running()),
            _ => None,
        }
    }

    /// The action's answer arrived (all events before it already applied).
    pub(crate) fn answered(&mut self, answer: Answer) -> Option<OriginateState> {
        let next = match answer {
            Answer::Running(_) | Answer::InDoubt if !self.live.is_empty() => self.running(),
            Answer::Running(_) | Answer::InDoubt if self.last_end.is_some() => self.ended()?,
            // Answered, but no channel of it was seen: find it in a snapshot.
            Answer::Running(_) | Answer::InDoubt => OriginateState::InDoubt,
            Answer::Failed { reason, message } => OriginateState::Failed { reason, message },
            Answer::NotSent => OriginateState::NotSent,
        };
        self.set(next)
    }

    /// A snapshot after the answer was lost: resolve an in-doubt Originate.
    pub(crate) fn resolve(&mut self) -> Option<OriginateState> {
        if self.state != OriginateState::InDoubt {
            return None;
        }
        if self.live.is_empty() {
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
