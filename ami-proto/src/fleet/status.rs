//! Where each server of a fleet is.

use crate::DisconnectReason;
use std::fmt;
use std::time::Instant;

/// Where one server of a [`Fleet`](super::Fleet) is. Every change comes out once as
/// [`FleetOutput::Status`](super::FleetOutput::Status) (the status watch), and
/// [`Fleet::status`](super::Fleet::status) answers at any time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerStatus {
    /// The client asked for a transport; it may be waiting for the fleet's per-step connect
    /// budget, or the adapter is opening it.
    Connecting,
    /// The transport is open: waiting for the banner, logging in, re-applying filters.
    LoggingIn,
    /// Logged in: actions flow and events arrive. Only ready servers take routed work.
    Ready {
        /// The AMI version from the banner.
        ami_version: String,
    },
    /// The session was lost; the next connect starts at `until` (backoff with jitter).
    BackingOff {
        /// When the next connect starts.
        until: Instant,
        /// Why the session was lost.
        reason: DisconnectReason,
    },
    /// As `BackingOff`, after `breaker_threshold` failures in a row: the client waits the
    /// breaker cooldown, and routing skips the server.
    BreakerOpen {
        /// When the next (probing) connect starts.
        until: Instant,
        /// Why the last session was lost.
        reason: DisconnectReason,
    },
    /// Stopped for good (logoff, close, removal, or a final login rejection).
    Closed {
        /// Why.
        reason: DisconnectReason,
    },
}

impl ServerStatus {
    /// True when the server takes actions now.
    pub fn is_ready(&self) -> bool {
        matches!(self, ServerStatus::Ready { .. })
    }

    /// A short stable label: `connecting`, `logging_in`, `ready`, `backing_off`,
    /// `breaker_open`, `closed`.
    pub fn label(&self) -> &'static str {
        match self {
            ServerStatus::Connecting => "connecting",
            ServerStatus::LoggingIn => "logging_in",
            ServerStatus::Ready { .. } => "ready",
            ServerStatus::BackingOff { .. } => "backing_off",
            ServerStatus::BreakerOpen { .. } => "breaker_open",
            ServerStatus::Closed { .. } => "closed",
        }
    }
}

/// The label, plus the AMI version or the reason where there is one (the time of the next
/// try is an `Instant`, which has no text form: see the variant).
impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerStatus::Ready { ami_version } => write!(f, "ready (AMI {ami_version})"),
            ServerStatus::BackingOff { reason, .. }
            | ServerStatus::BreakerOpen { reason, .. }
            | ServerStatus::Closed { reason } => write!(f, "{} ({reason})", self.label()),
            other => f.write_str(other.label()),
        }
    }
}
