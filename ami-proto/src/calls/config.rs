//! The tracker's limits and names, checked when built.

use std::time::Duration;
use thiserror::Error;

/// Why a [`TrackerConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TrackerConfigError {
    /// A cap of zero cannot work.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The tag prefix or variable name is empty, too long, or has characters other than
    /// ASCII letters, digits, `_`, `-` and `.` (it travels inside an AMI header value).
    #[error("{0} must be 1 to 32 characters of A-Z a-z 0-9 _ - .")]
    BadName(&'static str),
    /// A duration longer than [`MAX_SETTING_DURATION`](crate::MAX_SETTING_DURATION) (a
    /// year): a wait ends at `now` plus it, which an `Instant` cannot hold.
    #[error("{0} must be at most a year (MAX_SETTING_DURATION)")]
    TooLong(&'static str),
}

/// Limits and names of a [`CallTracker`](super::CallTracker), from [`TrackerConfig::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerConfig {
    pub(crate) max_channels: usize,
    pub(crate) max_buffered: usize,
    pub(crate) max_buffered_bytes: usize,
    pub(crate) max_updates: usize,
    pub(crate) max_originates: usize,
    pub(crate) tag_variable: String,
    pub(crate) tag_prefix: String,
    pub(crate) event_grace: Duration,
    /// The server's name in the tracker's log records (`AMI <name>: call tracker: ...`).
    pub(crate) name: Option<std::sync::Arc<str>>,
}

/// Builds a [`TrackerConfig`].
#[derive(Debug, Clone)]
pub struct TrackerConfigBuilder {
    config: TrackerConfig,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_channels: 20_000,
            max_buffered: 65_536,
            max_buffered_bytes: 32 << 20,
            max_updates: 65_536,
            max_originates: 10_000,
            tag_variable: "AMIRS_ORIGINATE".to_string(),
            tag_prefix: "amirs".to_string(),
            event_grace: Duration::from_secs(5),
            name: None,
        }
    }
}

impl TrackerConfig {
    /// A builder with the defaults.
    pub fn builder() -> TrackerConfigBuilder {
        TrackerConfigBuilder {
            config: TrackerConfig::default(),
        }
    }

    /// The name of the server in the tracker's log records, if one was set.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The same config with `name` as the server's name in its log records, as
    /// [`ClientConfig::with_name`](crate::ClientConfig::with_name) names a client: a process
    /// tracking the calls of many servers writes every record to one log.
    pub fn with_name(mut self, name: impl Into<String>) -> TrackerConfig {
        self.name = Some(std::sync::Arc::from(name.into()));
        self
    }

    /// The same config named `name` unless it has a name already (as
    /// [`ClientConfig::or_name`](crate::ClientConfig::or_name)): how an application names the
    /// tracker after the client that feeds it, keeping a name it chose.
    pub fn or_name(self, name: impl Into<String>) -> TrackerConfig {
        match self.name {
            Some(_) => self,
            None => self.with_name(name),
        }
    }

    /// Most channels tracked.
    pub fn max_channels(&self) -> usize {
        self.max_channels
    }

    /// The channel variable that carries originate tags.
    pub fn tag_variable(&self) -> &str {
        &self.tag_variable
    }
}

fn good_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl TrackerConfigBuilder {
    /// Most channels tracked at once (default 20 000, about 1 KiB each, at most about 3 KiB:
    /// each of its text fields is cut to [`MAX_FIELD_BYTES`](super::MAX_FIELD_BYTES)). New channels past it
    /// are not tracked, and counted ([`TrackerStats::channels_over_cap`](super::TrackerStats)).
    pub fn max_channels(mut self, n: usize) -> Self {
        self.config.max_channels = n;
        self
    }

    /// Most events held while a snapshot is in flight (default 65 536; each is one shared
    /// message). Past it events are applied at once and the snapshot yields to the channels
    /// they reach (counted in `buffer_overflows`); only events for channels not yet in the
    /// view still wait, within this cap, and those past it are dropped, counted in
    /// `buffered_dropped`, and one more snapshot follows.
    pub fn max_buffered_events(mut self, n: usize) -> Self {
        self.config.max_buffered = n;
        self
    }

    /// Most bytes of events held while a snapshot is in flight (each event's
    /// [`retained_bytes`](crate::Message::retained_bytes); default 32 MiB, as the client's
    /// `max_list_bytes` for the snapshot itself). Reaching it does what reaching
    /// [`max_buffered_events`](Self::max_buffered_events) does: events held whole may be
    /// large, and the count alone would let 65,536 of them hold gigabytes.
    pub fn max_buffered_bytes(mut self, n: usize) -> Self {
        self.config.max_buffered_bytes = n;
        self
    }

    /// Most updates waiting for [`CallTracker::poll_update`](super::CallTracker::poll_update)
    /// (default 65 536). Past it the oldest is dropped, counted and logged.
    pub fn max_updates(mut self, n: usize) -> Self {
        self.config.max_updates = n;
        self
    }

    /// Most Originates followed at once (default 10 000); past it
    /// [`CallTracker::originate`](super::CallTracker::originate) refuses.
    pub fn max_originates(mut self, n: usize) -> Self {
        self.config.max_originates = n;
        self
    }

    /// The channel variable carrying originate tags (default `AMIRS_ORIGINATE`), sent as the
    /// Originate's `Variable`. Asterisk before 18.17.0 and 20.2.0 (all of 13, 16 and 19)
    /// drops an Originate's own variables when the manager user has `setvar=` in
    /// manager.conf (ASTERISK-30351, `action_originate`): the tag is then lost, so an
    /// Originate whose answer was lost resolves `NotRunningNow` even while its call rings.
    /// On such servers, give the tracker's manager user no `setvar=`.
    pub fn tag_variable(mut self, name: &str) -> Self {
        name.clone_into(&mut self.config.tag_variable);
        self
    }

    /// How long events that Asterisk sends behind a direct answer are awaited (default 5 s).
    /// Asterisk writes an action's answer (an `OriginateResponse`, a `CoreShowChannels`
    /// list) straight to the session, while channel events reach it through its event
    /// queue, which lags under load: an Originate answered Success before any event of its
    /// channel waits this long for them before it counts as [in doubt](super::OriginateState::InDoubt),
    /// and a channel a snapshot on the same session no longer lists leaves the view but waits
    /// this long for its `Hangup` before it is reported ended unobserved. The tracker has no clock: a wait
    /// ends at the first input (`handle_item`, `handle_reply`) at or past it; an item is applied
    /// first, so the `Hangup` or channel event a wait is for counts in the turn that finds the
    /// wait over (a late turn, a clock that jumped). Zero: a channel
    /// gone from a snapshot ends unobserved at once, and an answered Originate is in doubt
    /// at the first input after its answer without its channel. At most
    /// [`MAX_SETTING_DURATION`](crate::MAX_SETTING_DURATION) (a year), checked by `build`.
    pub fn event_grace(mut self, grace: Duration) -> Self {
        self.config.event_grace = grace;
        self
    }

    /// The server's name in the tracker's log records (`AMI <name>: call tracker: ...`),
    /// usually the name of the client that feeds it. Default: none.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(std::sync::Arc::from(name.into()));
        self
    }

    /// The prefix of originate tags (default `amirs`). Make it unique per tracker instance
    /// and process run (a host name and start time, say): tags are `<prefix>-<counter>`, and
    /// a tracker takes any live channel carrying one of its tags as its own.
    pub fn tag_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.config.tag_prefix);
        self
    }

    /// The config, or why it cannot work.
    pub fn build(self) -> Result<TrackerConfig, TrackerConfigError> {
        let c = self.config;
        for (name, v) in [
            ("max_channels", c.max_channels),
            ("max_buffered_events", c.max_buffered),
            ("max_buffered_bytes", c.max_buffered_bytes),
            ("max_updates", c.max_updates),
            ("max_originates", c.max_originates),
        ] {
            if v == 0 {
                return Err(TrackerConfigError::Zero(name));
            }
        }
        if !good_name(&c.tag_variable) {
            return Err(TrackerConfigError::BadName("tag_variable"));
        }
        if !good_name(&c.tag_prefix) {
            return Err(TrackerConfigError::BadName("tag_prefix"));
        }
        // A wait ends at `now + event_grace`: one an `Instant` cannot hold (`Duration::MAX`
        // meant as "for ever") would saturate to `now` and end every wait at once.
        if c.event_grace > crate::MAX_SETTING_DURATION {
            return Err(TrackerConfigError::TooLong("event_grace"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_that_cannot_work_are_refused() {
        assert_eq!(
            TrackerConfig::builder().max_channels(0).build(),
            Err(TrackerConfigError::Zero("max_channels"))
        );
        assert_eq!(
            TrackerConfig::builder().max_buffered_bytes(0).build(),
            Err(TrackerConfigError::Zero("max_buffered_bytes"))
        );
        assert_eq!(
            TrackerConfig::builder().tag_variable("A B").build(),
            Err(TrackerConfigError::BadName("tag_variable"))
        );
        assert_eq!(
            TrackerConfig::builder()
                .tag_prefix("x\r\nAction: Hangup")
                .build(),
            Err(TrackerConfigError::BadName("tag_prefix"))
        );
        assert_eq!(
            TrackerConfig::builder().event_grace(Duration::MAX).build(),
            Err(TrackerConfigError::TooLong("event_grace"))
        );
        assert!(TrackerConfig::builder()
            .tag_prefix("node-1.a")
            .build()
            .is_ok());
    }
}
