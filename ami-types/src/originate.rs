//! How an async Originate ended, read from its outcome: a dialer's one `match` instead of
//! telling a refused Originate from a failed call by hand.
//!
//! The client resolves an async Originate with its `OriginateResponse`: `Ok` when the call
//! was answered, [`ActionError::Server`] both when Asterisk refused the action (no call) and
//! when the call failed (busy, no answer: the failed `OriginateResponse` is the follow-up),
//! and other errors when how it ended was not seen. [`OriginateEnd::of`] sorts these out.
//!
//! ```
//! use ami_proto::{ActionError, Response};
//! use ami_types::originate::{DialReason, OriginateEnd};
//!
//! fn log_call(outcome: &Result<Response, ActionError>) {
//!     match OriginateEnd::of(outcome) {
//!         OriginateEnd::Answered(r) => println!("answered on {:?}", r.uniqueid()),
//!         OriginateEnd::AnsweredSync(_) => println!("answered"),
//!         OriginateEnd::Failed { reason: DialReason::Busy, .. } => println!("busy"),
//!         OriginateEnd::Failed { reason, .. } => println!("not answered: {reason}"),
//!         OriginateEnd::FailedWithoutReason(_) => println!("failed, may have rung"),
//!         OriginateEnd::Refused(r) => println!("no call: {:?}", r.text()),
//!         OriginateEnd::NotSent(_) => println!("never sent: safe to try again"),
//!         OriginateEnd::Placed(e) => println!("placed, end unknown: {e}"),
//!         OriginateEnd::InDoubt(e) => println!("may have been placed: {e}"),
//!         _ => println!("an end this version does not know"),
//!     }
//! }
//! # log_call(&Err(ActionError::Cancelled));
//! ```
//!
//! An async adapter's reply (`ami_tokio`, `ami_async_std`, their fleets) is a
//! `Result<Response, AmiError>`: its `Ok` and `AmiError::Action` go through
//! [`OriginateEnd::of_response`] and [`OriginateEnd::of_error`]; `AmiError::Send` and
//! `AmiError::Closed` never reached Asterisk (not sent, safe to try again):
//!
//! ```
//! use ami_proto::Response;
//! use ami_tokio::AmiError;
//! use ami_types::originate::OriginateEnd;
//!
//! /// How the call ended; `None`: the Originate never reached Asterisk.
//! fn end_of(result: &Result<Response, AmiError>) -> Option<OriginateEnd<'_>> {
//!     match result {
//!         Ok(r) => Some(OriginateEnd::of_response(r)),
//!         Err(AmiError::Action(e)) => Some(OriginateEnd::of_error(e)),
//!         Err(_) => None,
//!     }
//! }
//! # let reason = ami_proto::DisconnectReason::LocalClose;
//! # assert!(end_of(&Err(AmiError::Closed { reason })).is_none());
//! ```

use crate::event::FromEvent;
use crate::events::OriginateResponse;
use ami_proto::{ActionError, Phase, Response};
use std::fmt;

/// Why a dial ended, the `Reason` of an `OriginateResponse` (`pbx_dial_reason` in
/// Asterisk's `main/pbx.c`: the control frame that ended the dial).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DialReason {
    /// 0: the channel could not be created or the dial failed (no such endpoint, no route).
    Failed,
    /// 1: the far end hung up before answering.
    HungUp,
    /// 3: it rang and nobody answered before the Originate's `Timeout`.
    NoAnswer,
    /// 4: answered.
    Answered,
    /// 5: busy.
    Busy,
    /// 8: congestion (all circuits busy, a SIP 503...).
    Congestion,
    /// Any other code, as sent.
    Other(i64),
}

impl DialReason {
    /// The reason of a `Reason` code.
    pub fn from_code(code: i64) -> DialReason {
        match code {
            0 => DialReason::Failed,
            1 => DialReason::HungUp,
            3 => DialReason::NoAnswer,
            4 => DialReason::Answered,
            5 => DialReason::Busy,
            8 => DialReason::Congestion,
            other => DialReason::Other(other),
        }
    }

    /// Its `Reason` code.
    pub fn code(self) -> i64 {
        match self {
            DialReason::Failed => 0,
            DialReason::HungUp => 1,
            DialReason::NoAnswer => 3,
            DialReason::Answered => 4,
            DialReason::Busy => 5,
            DialReason::Congestion => 8,
            DialReason::Other(code) => code,
        }
    }
}

impl fmt::Display for DialReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = match self {
            DialReason::Failed => "failed",
            DialReason::HungUp => "hung up",
            DialReason::NoAnswer => "no answer",
            DialReason::Answered => "answered",
            DialReason::Busy => "busy",
            DialReason::Congestion => "congestion",
            DialReason::Other(code) => return write!(f, "reason {code}"),
        };
        write!(f, "{words} (reason {})", self.code())
    }
}

/// How an async Originate ended; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum OriginateEnd<'a> {
    /// The call was answered: its `OriginateResponse` said `Success`.
    Answered(OriginateResponse<'a>),
    /// A sync Originate (refused unless `ClientConfig`'s `allow_sync_originate`) was
    /// answered: Asterisk says `Success` only once the call is, and sends no
    /// `OriginateResponse` for it.
    AnsweredSync(&'a Response),
    /// The call was placed and did not connect: its `OriginateResponse` said `Failure`.
    /// `reason` is [`DialReason::Failed`] when it carried no readable `Reason`.
    Failed {
        /// Why the dial ended.
        reason: DialReason,
        /// The `OriginateResponse` itself.
        response: OriginateResponse<'a>,
    },
    /// Asterisk answered `Originate failed` without an `OriginateResponse`: a sync
    /// Originate whose dial was tried and did not connect (it may have rung; Asterisk says
    /// no more), or, rarely, an async one it could not start for want of memory or a
    /// thread. Not a refusal of the request: sending it again may ring the callee again.
    FailedWithoutReason(&'a Response),
    /// Asterisk refused the Originate itself (`Response: Error`: a bad channel, a missing
    /// permission, a blacklisted application): no call was placed.
    Refused(&'a Response),
    /// Never sent (or withdrawn before any byte left): no call; safe to send again.
    NotSent(&'a ActionError),
    /// Asterisk accepted it ("Originate successfully queued"), so the call was placed, but
    /// how it ended was not seen: no `OriginateResponse` in time
    /// ([`ActionError::TimedOut`] in [`Phase::FollowUp`]) or the session was lost first
    /// ([`ActionError::FollowUpLost`]). Sending it again places a second call.
    Placed(&'a ActionError),
    /// Written, but nothing says whether Asterisk took it (a lost connection, a timeout
    /// before its response, a cancel after it was written): it may be ringing.
    InDoubt(&'a ActionError),
}

impl<'a> OriginateEnd<'a> {
    /// Sorts out an async Originate's outcome.
    pub fn of(outcome: &'a Result<Response, ActionError>) -> OriginateEnd<'a> {
        match outcome {
            Ok(r) => OriginateEnd::of_response(r),
            Err(e) => OriginateEnd::of_error(e),
        }
    }

    /// The end of an Originate that succeeded with response `r`: answered (its
    /// `OriginateResponse` is `r`'s follow-up), or a sync Originate's answer.
    pub fn of_response(r: &'a Response) -> OriginateEnd<'a> {
        match follow_up(r) {
            Some(response) => OriginateEnd::Answered(response),
            None => OriginateEnd::AnsweredSync(r),
        }
    }

    /// The end of an Originate that failed with `e`. With an async adapter, whose replies
    /// are `Result<Response, AmiError>`, this is the `AmiError::Action(e)` case; its other
    /// errors (refused before sending, the session's driver gone) never reached Asterisk:
    /// not sent, as the module docs show.
    pub fn of_error(e: &'a ActionError) -> OriginateEnd<'a> {
        match e {
            ActionError::Server(r) => match follow_up(r) {
                Some(response) => OriginateEnd::Failed {
                    reason: response
                        .reason()
                        .map_or(DialReason::Failed, DialReason::from_code),
                    response,
                },
                // The one error Asterisk sends after trying the dial (`action_originate`: a
                // sync dial that did not connect), so the call may have rung.
                None if r.text().is_some_and(|t| t.trim_end() == ORIGINATE_FAILED) => {
                    OriginateEnd::FailedWithoutReason(r)
                }
                None => OriginateEnd::Refused(r),
            },
            ActionError::NotSent(_)
            | ActionError::TimedOut {
                phase: Phase::Queued,
                ..
            } => OriginateEnd::NotSent(e),
            ActionError::FollowUpLost { .. }
            | ActionError::TimedOut {
                phase: Phase::FollowUp,
                ..
            } => OriginateEnd::Placed(e),
            _ => OriginateEnd::InDoubt(e),
        }
    }
}

/// The `Message` of `action_originate`'s error once the dial was tried (or, async, could
/// not be started); every refusal before that says what was wrong instead.
const ORIGINATE_FAILED: &str = "Originate failed";

/// The `OriginateResponse` a response carries as its follow-up.
fn follow_up(r: &Response) -> Option<OriginateResponse<'_>> {
    r.follow_up().and_then(OriginateResponse::from_event)
}
