//! Client configuration: credentials, timers, caps and policies, checked when built.

use super::who::Who;
use crate::wire::action::MAX_LINE_LEN;
use crate::wire::limits::DecoderLimits;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Longest duration a setting accepts: a year. Every timer is `now` plus a setting, and
/// an `Instant` cannot hold `now + Duration::MAX`; a year is "never" for a timer while
/// staying far from that edge.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Longest name [`ClientConfigBuilder::name`] accepts, in bytes: the fleet's
/// ([`fleet::MAX_NAME_LEN`](crate::fleet::MAX_NAME_LEN)), so that every fleet server name is
/// a name its client accepts too.
pub const MAX_CLIENT_NAME_LEN: usize = crate::fleet::MAX_NAME_LEN;

/// Shortest decoder `max_line_len` a client accepts, in bytes: the `ActionID:` line that
/// echoes one of its own ActionIDs (an 8-character prefix, `-`, a counter of up to 20
/// digits) is the longest line of the exchanges a session cannot do without (the banner,
/// the Login answer, the heartbeat Ping's answer). With a shorter limit every such line is
/// refused: no banner is ever read, no action ever answered, and the client reconnects for
/// ever.
pub const MIN_DECODER_LINE_LEN: usize = "ActionID: ".len() + 8 + 1 + 20;

/// Fewest decoder `max_fields` a client accepts: the answer to its heartbeat Ping has four
/// (`Response`, `ActionID`, `Ping`, `Timestamp`). With fewer it is refused, and the session
/// is closed as dead at every `pong_timeout` (with two or fewer the Login answer itself is
/// refused, and no login ever succeeds).
pub const MIN_DECODER_FIELDS: usize = 4;

/// A secret that never reaches `Debug` output or a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }
    /// The secret itself; only the login code should call this.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the client proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthMethod {
    /// `Login` with `Username` and `Secret` in clear text (use TLS or a tunnel).
    #[default]
    Plain,
    /// `Challenge` with `AuthType: MD5`, then `Login` with `Key` = md5(challenge + secret).
    /// Never downgraded to plain: if the server refuses the challenge, login fails.
    Md5,
}

/// What to do when the event queue is full because the consumer is behind.
///
/// The reader never waits long for the consumer: Asterisk drops a client whose socket blocks
/// for 100 ms, so waiting would lose the whole connection instead of some events. (The async
/// adapters hold a read for at most 10 ms between the consumer's takes while it is behind
/// and taking; a consumer that stops taking meets this policy at once.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Drop the oldest queued event to make room; a gap notice is delivered in its place.
    #[default]
    DropOldest,
    /// Drop the arriving event; a gap notice follows the queued events.
    DropNewest,
    /// Close the session (reason [`DisconnectReason::EventOverflow`]) and reconnect.
    ///
    /// [`DisconnectReason::EventOverflow`]: crate::DisconnectReason::EventOverflow
    CloseSession,
}

/// When a decoded event gets an allocation of its own, which should follow the thread that
/// takes events out of the client.
///
/// Either way an event the application holds owns exactly its bytes and never pins a read
/// buffer; the two differ in which thread allocates and frees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EventCopy {
    /// When it is taken out of the queue. Events wait as slices of the read buffer (the
    /// reader allocates nothing per event) and the thread that takes one copies it, so one
    /// thread both allocates and frees it: right when the consumer runs on another thread
    /// than the reader (`ami-tokio`, `ami-async-std`), where a message allocated by one
    /// thread and freed by another costs the allocator a lock per event. The default.
    #[default]
    OnTake,
    /// As soon as it is decoded. Nothing is shared, so there is no reference count to keep
    /// per event and no read buffer held back: right when the same thread reads and takes
    /// events (an `ami-mio` loop, which chooses this unless the application did;
    /// `fleet_loopback` on mio: 17-20 % more events/s than `OnTake`).
    OnDecode,
}

/// Everything a [`Client`](crate::Client) needs; build with [`ClientConfig::builder`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub(crate) username: String,
    pub(crate) secret: Secret,
    pub(crate) auth: AuthMethod,
    pub(crate) events: String,
    /// Installed at every login, before the session is announced Ready.
    pub(crate) filters: Vec<String>,
    /// Installed at every login; Ready does not wait for them.
    pub(crate) prefilters: Vec<String>,
    pub(crate) seed: Option<u64>,
    /// Shared, not copied: the event queue keeps one for its own log records.
    pub(crate) name: Option<Arc<str>>,
    pub(crate) decoder: DecoderLimits,
    pub(crate) connect_timeout: Duration,
    pub(crate) banner_timeout: Duration,
    pub(crate) login_timeout: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) pong_timeout: Duration,
    pub(crate) action_timeout: Duration,
    pub(crate) logoff_timeout: Duration,
    pub(crate) originate_margin: Duration,
    pub(crate) max_queued_actions: usize,
    pub(crate) max_pending_actions: usize,
    /// `None`: `max_pending_actions`.
    pub(crate) max_abandoned_actions: Option<usize>,
    pub(crate) pipeline_depth: usize,
    pub(crate) max_list_items: usize,
    pub(crate) max_list_bytes: usize,
    pub(crate) event_queue_cap: usize,
    pub(crate) event_queue_bytes: usize,
    pub(crate) overflow: OverflowPolicy,
    /// `None` until the application or an adapter chooses (see [`ClientConfig::prefer_event_copy`]).
    pub(crate) event_copy: Option<EventCopy>,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) stable_after: Duration,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) reconnect_on_auth_failure: bool,
    pub(crate) allow_sync_originate: bool,
}

impl ClientConfig {
    /// A builder with the documented defaults, for `username` and `secret`.
    pub fn builder(username: impl Into<String>, secret: impl Into<String>) -> ClientConfigBuilder {
        ClientConfigBuilder {
            config: ClientConfig {
                username: username.into(),
                secret: Secret::new(secret),
                auth: AuthMethod::Plain,
                events: "on".into(),
                filters: Vec::new(),
                prefilters: Vec::new(),
                seed: None,
                name: None,
                decoder: DecoderLimits::default(),
                connect_timeout: Duration::from_secs(5),
                banner_timeout: Duration::from_secs(5),
                login_timeout: Duration::from_secs(10),
                ping_interval: Duration::from_secs(20),
                pong_timeout: Duration::from_secs(10),
                action_timeout: Duration::from_secs(30),
                logoff_timeout: Duration::from_secs(5),
                originate_margin: Duration::from_secs(10),
                max_queued_actions: 10_000,
                max_pending_actions: 100_000,
                max_abandoned_actions: None,
                pipeline_depth: 64,
                max_list_items: 100_000,
                max_list_bytes: 32 << 20,
                event_queue_cap: 65_536,
                event_queue_bytes: DecoderLimits::default().max_message_memory(),
                overflow: OverflowPolicy::DropOldest,
                event_copy: None,
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_secs(30),
                stable_after: Duration::from_secs(30),
                breaker_threshold: 10,
                breaker_cooldown: Duration::from_secs(60),
                reconnect_on_auth_failure: false,
                allow_sync_originate: false,
            },
        }
    }

    /// The seed, if one was set.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }
    /// The same config with `seed` set (adapters use this to seed from OS entropy).
    pub fn with_seed(mut self, seed: u64) -> ClientConfig {
        self.seed = Some(seed);
        self
    }
    /// The name of this server in the client's log records, if one was set.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// The same config with `name` as the name in its log records ([`Fleet::add`] gives each
    /// unnamed client its server's fleet name). Not checked as
    /// [`ClientConfigBuilder::name`] is: the log records show it escaped whatever it holds.
    ///
    /// [`Fleet::add`]: crate::fleet::Fleet::add
    pub fn with_name(mut self, name: impl Into<String>) -> ClientConfig {
        self.name = Some(Arc::from(name.into()));
        self
    }
    /// The same config, named `name` unless it has a name already: how a fleet and the
    /// adapters name a client after its server (its fleet name, its target) while keeping a
    /// name the application chose.
    pub fn or_name(self, name: impl Into<String>) -> ClientConfig {
        match self.name {
            Some(_) => self,
            None => self.with_name(name),
        }
    }
    /// How the log records of a client with this config start: `AMI <name>` or `AMI`. On
    /// the config, not the client, so that a record can be written while another field of
    /// the client is borrowed.
    pub(crate) fn who(&self) -> Who<'_> {
        Who(self.name.as_deref())
    }
    /// When decoded events get their own allocation ([`EventCopy::OnTake`] unless chosen).
    pub fn event_copy(&self) -> EventCopy {
        self.event_copy.unwrap_or_default()
    }
    /// The same config with `copy` as its [`EventCopy`], unless the application chose one
    /// with [`ClientConfigBuilder::event_copy`]: an adapter knows which thread takes events
    /// out, the application may know better.
    pub fn prefer_event_copy(mut self, copy: EventCopy) -> ClientConfig {
        self.event_copy.get_or_insert(copy);
        self
    }
    /// The login user name.
    pub fn username(&self) -> &str {
        &self.username
    }
    /// The login method.
    pub fn auth(&self) -> AuthMethod {
        self.auth
    }
    /// The event mask sent with `Login` (`Events:`).
    pub fn events(&self) -> &str {
        &self.events
    }
    /// The decoder limits.
    pub fn decoder_limits(&self) -> &DecoderLimits {
        &self.decoder
    }
    /// Default deadline for one action (response and list phases together).
    pub fn action_timeout(&self) -> Duration {
        self.action_timeout
    }
    /// Largest number of events held for the consumer.
    pub fn event_queue_cap(&self) -> usize {
        self.event_queue_cap
    }
    /// Most bytes the events held for the consumer keep alive.
    pub fn event_queue_bytes(&self) -> usize {
        self.event_queue_bytes
    }
    /// Most bytes one list result keeps alive.
    pub fn max_list_bytes(&self) -> usize {
        self.max_list_bytes
    }
    /// Most actions tracked at once (queued, written or awaiting a follow-up event).
    pub fn max_pending_actions(&self) -> usize {
        self.max_pending_actions
    }
    /// Most ended actions tracked at once to swallow their late answers (see
    /// [`ClientConfigBuilder::max_abandoned_actions`]).
    pub fn max_abandoned_actions(&self) -> usize {
        self.max_abandoned_actions
            .unwrap_or(self.max_pending_actions)
    }
}

/// Builds a [`ClientConfig`]; [`build`](Self::build) refuses settings that cannot work.
#[derive(Debug, Clone)]
pub struct ClientConfigBuilder {
    config: ClientConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            }
        )*
    };
}

impl ClientConfigBuilder {
    /// When decoded events get their own allocation. Default: what the adapter prefers
    /// ([`EventCopy::OnDecode`] on `ami-mio`, [`EventCopy::OnTake`] elsewhere); choose
    /// `OnTake` on `ami-mio` when the loop's thread hands events to other threads.
    pub fn event_copy(mut self, copy: EventCopy) -> Self {
        self.config.event_copy = Some(copy);
        self
    }

    setters! {
        /// Login method. Default: plain.
        auth: AuthMethod;
        /// Decoder limits. Default: [`DecoderLimits::default`].
        decoder: DecoderLimits;
        /// Time allowed for the transport to open. Default 5 s.
        connect_timeout: Duration;
        /// Time allowed for the banner after connect. Default 5 s.
        banner_timeout: Duration;
        /// Time allowed for login after the banner (a rejected login takes Asterisk 1 s).
        /// Default 10 s.
        login_timeout: Duration;
        /// Time without a complete event or response after which a Ping is sent (bytes that
        /// do not complete a message do not count: a trickle is not life). Default 20 s:
        /// Asterisk has no keepalive of its own and the reference suggests 15-30 s.
        ping_interval: Duration;
        /// Time allowed after a heartbeat Ping for a complete message (its answer or any
        /// other event or response) before the session is closed. Default 10 s.
        pong_timeout: Duration;
        /// Default deadline per action (response and list). Default 30 s.
        action_timeout: Duration;
        /// Time a [`logoff`](crate::Client::logoff) waits for Asterisk's `Goodbye` (or its
        /// hang-up) before closing anyway. Default 5 s: Asterisk answers at once unless it
        /// is stuck, and a program shutting down should not wait `action_timeout` for a
        /// server that stopped answering.
        logoff_timeout: Duration;
        /// Added to an Originate's own `Timeout` (ms, 30 s if absent) to get the deadline of
        /// its `OriginateResponse` (async) or its response (sync). Default 10 s.
        originate_margin: Duration;
        /// Actions waiting to be written (before Ready, or behind a full pipeline). Default
        /// 10,000.
        max_queued_actions: usize;
        /// Caller actions tracked at once, all phases until they end. Default 100,000
        /// (about 200 bytes each). Those that ended and are kept for their late answers
        /// are capped apart ([`max_abandoned_actions`](Self::max_abandoned_actions)).
        max_pending_actions: usize;
        /// Actions written but unanswered. Default 64: Asterisk answers in order, so deeper
        /// pipelines only add latency to later actions.
        pipeline_depth: usize;
        /// Items gathered for one event list. Default 100,000.
        max_list_items: usize;
        /// Bytes the event lists in progress keep alive together (each item's
        /// [`retained_bytes`](crate::Message::retained_bytes)): one list may take all of it,
        /// and lists gathered at once share it, so a server that answers every pipelined
        /// action with a huge list still costs the session this much, not `pipeline_depth`
        /// times it. The list whose item would pass it fails
        /// [`ListOverflow`](crate::ActionError::ListOverflow). Default 32 MiB: 1000 channels
        /// take about 1 MB, so this is some 30,000 channels; at least one maximal message
        /// ([`DecoderLimits::max_message_memory`]).
        max_list_bytes: usize;
        /// Events held for the consumer. Default 65,536 (a few seconds of a busy dialer).
        event_queue_cap: usize;
        /// Bytes the events held for the consumer keep alive (each event's
        /// [`retained_bytes`](crate::Message::retained_bytes)), whatever their count: with
        /// 256 KiB events the count cap alone would allow 16 GiB. Default: one maximal message
        /// of the default decoder limits (about 16 MiB, some 20,000 typical 800-byte events),
        /// the least that is accepted ([`DecoderLimits::max_message_memory`]); a consumer that
        /// never reads then holds at most that much, plus what the allocator keeps. Drops follow the overflow policy
        /// and are reported as gaps, as for the count cap.
        event_queue_bytes: usize;
        /// What to do when the event queue is full. Default: drop oldest.
        overflow: OverflowPolicy;
        /// First reconnect backoff ceiling; doubles per consecutive failure. Default 100 ms;
        /// at least 1 µs (the backoff counts in microseconds).
        backoff_base: Duration;
        /// Largest reconnect backoff ceiling. Default 30 s.
        backoff_max: Duration;
        /// Time Ready must last before the failure count resets. Default 30 s.
        stable_after: Duration;
        /// Consecutive failures that open the circuit breaker. Default 10.
        breaker_threshold: u32;
        /// How long an open breaker waits before one trial connect. Default 60 s.
        breaker_cooldown: Duration;
        /// Reconnect after "Authentication failed" (default false: a wrong password does not
        /// get better by retrying, and Asterisk logs each attempt as a security event).
        /// "Login Already In Use" (`allowmultiplelogin=no`, the user logged in on another
        /// session, perhaps this client's own, half-open) is retried with backoff either way.
        reconnect_on_auth_failure: bool;
        /// Accept `Originate` without `Async: true`. Default false: a sync Originate blocks the
        /// whole AMI session until the call is answered.
        allow_sync_originate: bool;
    }

    /// Actions that ended (cancelled, timed out, a list overflowed) after their bytes were
    /// handed out, tracked at once so that their late answers are swallowed for a grace
    /// period (`action_timeout`; a cancelled sync Originate's until its own deadline) rather
    /// than taken for strays (the first response of one that ended unanswered is reported as
    /// [`StreamItem::LateAnswer`](crate::StreamItem::LateAnswer)) ([`Stats::abandoned_actions`](crate::Stats::abandoned_actions)).
    /// They count against no other cap: a caller that cancels every action it sends (a
    /// timeout around each send) against a slow server frees a pipeline slot with each,
    /// and would otherwise leave an entry per action for the grace period. At the cap the
    /// oldest is forgotten ([`Stats::abandoned_evicted`](crate::Stats::abandoned_evicted),
    /// logged): its late answers are still dropped and counted
    /// ([`Stats::evicted_answers_dropped`](crate::Stats::evicted_answers_dropped)), and a
    /// cancelled sync Originate's hold on the heartbeat ends with it. Default:
    /// `max_pending_actions` (about 200 bytes each); at least 1.
    pub fn max_abandoned_actions(mut self, cap: usize) -> Self {
        self.config.max_abandoned_actions = Some(cap);
        self
    }

    /// Seed for ActionID prefixes and reconnect jitter; a fixed seed makes every time and
    /// ID reproducible. Unset, the adapters seed from OS entropy so that two processes never
    /// share ActionID prefixes (a bare [`Client`](crate::Client) then takes a seed of its
    /// own, different for each client of the process). Never give two clients of one
    /// Asterisk the same seed: they would share ActionID prefixes, and Asterisk writes an
    /// `OriginateResponse` to every session reading call events, so one client's pending
    /// Originate would take the other's as its own. (A fleet mixes each server's name and
    /// its count of additions into a seed its config gives, so one seeded config can serve
    /// every server, and a name removed and added again starts new IDs.)
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// A name for this server, used in log records only: each one the client emits starts
    /// `AMI <name>:` instead of `AMI:`, so that the records of many clients in one process
    /// (a [`Fleet`](crate::fleet::Fleet) names its clients itself) say which server they are
    /// about. 1 to [`MAX_CLIENT_NAME_LEN`] bytes, no control characters (checked by
    /// [`build`](Self::build)). Default: none.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(Arc::from(name.into()));
        self
    }

    /// Event mask sent with `Login` (`Events:`): `on`, `off`, or a class list such as
    /// `call,user` (lowercase, no spaces, as Asterisk parses it). Default `on`.
    pub fn events(mut self, mask: impl Into<String>) -> Self {
        self.config.events = mask.into();
        self
    }

    /// An event filter (`Action: Filter`, `Operation: Add`, this `Filter:`) installed at
    /// every login, before the session is announced Ready, so that no event the filters
    /// keep out reaches the stream, from the first session on; repeatable. Legacy syntax:
    /// a POSIX extended regular expression over the whole event text, a leading `!`
    /// excluding (`^Event: Hangup[[:space:]]`). Asterisk requires `write=system` for it; a
    /// server that refuses it is logged (warn) and the session goes on unfiltered. At most
    /// [`MAX_FILTERS`](crate::MAX_FILTERS), with those added later by
    /// [`Client::add_filter`](crate::Client::add_filter). The client cannot read a
    /// filter's regular expression: a session that sends async Originates must let their
    /// `OriginateResponse` through its filters (the event mask it checks itself,
    /// [`SendError::FollowUpMasked`](crate::SendError::FollowUpMasked)).
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.config.filters.push(filter.into());
        self
    }

    /// A filter that cuts traffic, not the stream: sent at every login right behind the
    /// Login itself (Asterisk handles the two back to back, so it is in place almost at
    /// once), and the session is Ready without waiting for its answer, so the few events
    /// the server sends before it applies the filter still arrive (and a refusal, for a
    /// user without `write=system`, leaves the session unfiltered, logged at warn). For an application that filters the stream itself
    /// (`ami listen --event`): the server sends less, and nothing is lost to the window in
    /// which the filter is not in place yet. Repeatable, at most
    /// [`MAX_FILTERS`](crate::MAX_FILTERS).
    pub fn prefilter(mut self, filter: impl Into<String>) -> Self {
        self.config.prefilters.push(filter.into());
        self
    }

    /// Checks the settings against each other and returns the config.
    pub fn build(self) -> Result<ClientConfig, ConfigError> {
        let c = self.config;
        check_text("username", "Username", &c.username)?;
        check_text("secret", "Secret", c.secret.expose())?;
        check_text("events", "Events", &c.events)?;
        for f in c.filters.iter().chain(&c.prefilters) {
            let why = if f.is_empty() {
                "must not be empty"
            } else if f.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                "must not contain CR, LF or NUL"
            } else if "Filter: ".len() + f.len() + 2 > MAX_LINE_LEN {
                "is too long: its Filter line must fit Asterisk's 1024 bytes"
            } else {
                continue;
            };
            return Err(ConfigError::Invalid {
                setting: "filter",
                why,
            });
        }
        if c.filters.len().max(c.prefilters.len()) > crate::MAX_FILTERS {
            return Err(ConfigError::Invalid {
                setting: "filter",
                why: "is given more times than the client can re-apply (MAX_FILTERS)",
            });
        }
        if let Some(name) = &c.name {
            check_name(name)?;
        }
        if c.events.contains(' ') {
            return Err(ConfigError::Invalid {
                setting: "events",
                why: "Asterisk parses the mask without spaces",
            });
        }
        if let Some(class) = crate::client::event_mask::unknown_class(&c.events) {
            return Err(ConfigError::UnknownEventClass {
                class: class.to_string(),
            });
        }
        let nonzero_durations = [
            ("connect_timeout", c.connect_timeout),
            ("banner_timeout", c.banner_timeout),
            ("login_timeout", c.login_timeout),
            ("ping_interval", c.ping_interval),
            ("pong_timeout", c.pong_timeout),
            ("action_timeout", c.action_timeout),
            ("logoff_timeout", c.logoff_timeout),
            ("backoff_base", c.backoff_base),
            ("breaker_cooldown", c.breaker_cooldown),
        ];
        for (setting, d) in nonzero_durations {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    setting,
                    why: "must be greater than zero",
                });
            }
        }
        let all_durations = nonzero_durations.into_iter().chain([
            ("originate_margin", c.originate_margin),
            ("backoff_max", c.backoff_max),
            ("stable_after", c.stable_after),
        ]);
        for (setting, d) in all_durations {
            if d > MAX_SETTING_DURATION {
                return Err(ConfigError::Invalid {
                    setting,
                    why: "must be at most a year (MAX_SETTING_DURATION)",
                });
            }
        }
        let nonzero_caps = [
            ("max_queued_actions", c.max_queued_actions),
            ("max_pending_actions", c.max_pending_actions),
            ("max_abandoned_actions", c.max_abandoned_actions()),
            ("pipeline_depth", c.pipeline_depth),
            ("max_list_items", c.max_list_items),
            ("max_list_bytes", c.max_list_bytes),
            ("event_queue_cap", c.event_queue_cap),
            ("event_queue_bytes", c.event_queue_bytes),
        ];
        for (setting, n) in nonzero_caps {
            if n == 0 {
                return Err(ConfigError::Invalid {
                    setting,
                    why: "must be at least 1",
                });
            }
        }
        // The backoff counts in whole microseconds: a shorter base rounds to zero, and
        // zero doubled stays zero, so every reconnect would start at once.
        if c.backoff_base < Duration::from_micros(1) {
            return Err(ConfigError::Invalid {
                setting: "backoff_base",
                why: "must be at least 1 µs: the backoff counts in microseconds, and a shorter base is no backoff at all",
            });
        }
        if c.backoff_max < c.backoff_base {
            return Err(ConfigError::Invalid {
                setting: "backoff_max",
                why: "must not be below backoff_base",
            });
        }
        if c.breaker_threshold == 0 {
            return Err(ConfigError::Invalid {
                setting: "breaker_threshold",
                why: "must be at least 1",
            });
        }
        if c.pipeline_depth > c.max_pending_actions || c.max_queued_actions > c.max_pending_actions
        {
            return Err(ConfigError::Invalid {
                setting: "max_pending_actions",
                why: "must cover pipeline_depth and max_queued_actions",
            });
        }
        // The login exchange itself must fit through the pipeline and the decoder.
        if c.decoder.max_message_len() < 256 {
            return Err(ConfigError::Invalid {
                setting: "decoder.max_message_len",
                why: "must be at least 256 bytes to hold a login response",
            });
        }
        // So must its lines and fields, and the heartbeat's answer: a decoder that refuses
        // them leaves a session that never logs in or is closed at every heartbeat.
        if c.decoder.max_line_len() < MIN_DECODER_LINE_LEN {
            return Err(ConfigError::Invalid {
                setting: "decoder.max_line_len",
                why: "must be at least 39 bytes to hold the ActionID line of an answer (MIN_DECODER_LINE_LEN)",
            });
        }
        if c.decoder.max_fields() < MIN_DECODER_FIELDS {
            return Err(ConfigError::Invalid {
                setting: "decoder.max_fields",
                why: "must be at least 4 to hold the heartbeat Ping's answer (MIN_DECODER_FIELDS)",
            });
        }
        let one_message = c.decoder.max_message_memory();
        if c.event_queue_bytes < one_message {
            return Err(ConfigError::Invalid {
                setting: "event_queue_bytes",
                why: "must hold one maximal message (decoder max_message_memory)",
            });
        }
        if c.max_list_bytes < one_message {
            return Err(ConfigError::Invalid {
                setting: "max_list_bytes",
                why: "must hold one maximal message (decoder max_message_memory)",
            });
        }
        Ok(c)
    }
}

/// A value the client sends in the Login action under `header`: it must fit one line that
/// Asterisk reads whole, or the Login could never be written and every connect would end
/// in a login timeout.
fn check_text(setting: &'static str, header: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::Invalid {
            setting,
            why: "must not be empty",
        });
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(ConfigError::Invalid {
            setting,
            why: "must not contain CR, LF or NUL",
        });
    }
    if header.len() + 2 + value.len() + 2 > MAX_LINE_LEN {
        return Err(ConfigError::Invalid {
            setting,
            why: "is too long: the Login line holding it must fit Asterisk's 1024 bytes",
        });
    }
    Ok(())
}

/// The client's name starts its log lines: a control character in it (CR, LF, an escape)
/// would forge or garble records, an empty one would read as no name.
fn check_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::Invalid {
            setting: "name",
            why: "must not be empty",
        });
    }
    if name.len() > MAX_CLIENT_NAME_LEN {
        return Err(ConfigError::Invalid {
            setting: "name",
            why: "must be at most 128 bytes (MAX_CLIENT_NAME_LEN)",
        });
    }
    if name.chars().any(char::is_control) {
        return Err(ConfigError::Invalid {
            setting: "name",
            why: "must not contain control characters",
        });
    }
    Ok(())
}

/// A [`ClientConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// One setting is out of range or conflicts with another.
    #[error("invalid client config: {setting} {why}")]
    Invalid {
        /// The setting at fault.
        setting: &'static str,
        /// Why it cannot work.
        why: &'static str,
    },
    /// The event mask names a class Asterisk does not know: it would ignore it without a
    /// word, and the session would not get the events it was meant for.
    #[error("invalid client config: events names `{class}`, which is no event class (Asterisk would ignore it); classes are lowercase: system, call, agent, user, dialplan, reporting, security, cdr, dtmf, ... or on/off")]
    UnknownEventClass {
        /// The name at fault.
        class: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        assert!(ClientConfig::builder("admin", "amp111").build().is_ok());
    }

    #[test]
    fn credentials_or_an_event_mask_too_long_for_one_login_line_are_refused_at_build() {
        let secret = "s".repeat(MAX_LINE_LEN);
        let long = "x".repeat(MAX_LINE_LEN);
        let cases = [
            (ClientConfig::builder(long.as_str(), "x"), "username"),
            (ClientConfig::builder("a", secret.as_str()), "secret"),
            (
                ClientConfig::builder("a", "x").events(long.as_str()),
                "events",
            ),
        ];
        for (b, setting) in cases {
            let err = b.build().unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { setting: s, .. } if s == setting),
                "{err}"
            );
            assert!(!err.to_string().contains("sss"), "no secret in {err}");
        }
        // The longest values that still fit one line ("Secret: " + value + CRLF) build.
        let fits = "s".repeat(MAX_LINE_LEN - "Secret: \r\n".len());
        assert!(ClientConfig::builder("a", fits.as_str()).build().is_ok());
        let over = "s".repeat(fits.len() + 1);
        assert!(ClientConfig::builder("a", over.as_str()).build().is_err());
    }

    #[test]
    fn a_duration_setting_beyond_a_year_is_refused_at_build_instead_of_overflowing_a_timer() {
        let b = || ClientConfig::builder("a", "x");
        let cases = [
            (b().connect_timeout(Duration::MAX), "connect_timeout"),
            (b().action_timeout(Duration::MAX), "action_timeout"),
            (b().originate_margin(Duration::MAX), "originate_margin"),
            (b().breaker_cooldown(Duration::MAX), "breaker_cooldown"),
            (b().backoff_max(Duration::MAX), "backoff_max"),
            (b().stable_after(Duration::MAX), "stable_after"),
            (
                b().pong_timeout(MAX_SETTING_DURATION + Duration::from_secs(1)),
                "pong_timeout",
            ),
        ];
        for (builder, setting) in cases {
            let err = builder.build().unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { setting: s, .. } if s == setting),
                "{err}"
            );
        }
        assert!(b().action_timeout(MAX_SETTING_DURATION).build().is_ok());
    }

    #[test]
    fn impossible_configs_are_refused_with_the_setting_named() {
        let cases = [
            ClientConfig::builder("", "x"),
            ClientConfig::builder("a\r\nAction: Command", "x"),
            ClientConfig::builder("a", "x").pipeline_depth(0),
            ClientConfig::builder("a", "x").event_queue_cap(0),
            ClientConfig::builder("a", "x").max_abandoned_actions(0),
            ClientConfig::builder("a", "x").ping_interval(Duration::ZERO),
            ClientConfig::builder("a", "x")
                .backoff_base(Duration::from_secs(2))
                .backoff_max(Duration::from_secs(1)),
            ClientConfig::builder("a", "x")
                .max_pending_actions(10)
                .pipeline_depth(20),
            ClientConfig::builder("a", "x").events("call, user"),
            ClientConfig::builder("a", "x").event_queue_bytes(1 << 20),
            ClientConfig::builder("a", "x").max_list_bytes(16 << 20),
        ];
        for b in cases {
            let err = b.build().unwrap_err();
            assert!(err.to_string().starts_with("invalid client config: "));
        }
    }

    #[test]
    fn a_decoder_that_cannot_read_the_banner_login_or_heartbeat_answer_is_refused_at_build() {
        let decoder = |line: usize, fields: usize| {
            DecoderLimits::builder()
                .max_message_len(256)
                .max_line_len(line)
                .max_fields(fields)
                .buffer_cap(1024)
                .build()
                .unwrap()
        };
        // Before: each built, then never logged in (a 16-byte line refuses the banner; two
        // fields refuse the Login answer) or was closed at every heartbeat (three fields
        // refuse the Ping answer).
        let cases = [
            (decoder(16, 10), "decoder.max_line_len"),
            (
                decoder(MIN_DECODER_LINE_LEN - 1, 10),
                "decoder.max_line_len",
            ),
            (decoder(256, 2), "decoder.max_fields"),
            (decoder(256, MIN_DECODER_FIELDS - 1), "decoder.max_fields"),
        ];
        for (limits, setting) in cases {
            let err = ClientConfig::builder("a", "x")
                .decoder(limits)
                .build()
                .unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { setting: s, .. } if s == setting),
                "{limits:?}: {err}"
            );
        }
        // The smallest that works (shown end to end in ami-sim's config_limits tests).
        let smallest = decoder(MIN_DECODER_LINE_LEN, MIN_DECODER_FIELDS);
        assert!(ClientConfig::builder("a", "x")
            .decoder(smallest)
            .build()
            .is_ok());
    }

    #[test]
    fn a_backoff_base_below_the_backoffs_microsecond_resolution_is_refused_at_build() {
        // Before: it built, and every reconnect started at once (the base rounds to 0 µs,
        // and 0 doubled stays 0) until the breaker opened.
        let err = ClientConfig::builder("a", "x")
            .backoff_base(Duration::from_nanos(500))
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: "backoff_base",
                    ..
                }
            ),
            "{err}"
        );
        assert!(ClientConfig::builder("a", "x")
            .backoff_base(Duration::from_micros(1))
            .build()
            .is_ok());
    }

    #[test]
    fn an_empty_overlong_or_control_character_name_is_refused_at_build() {
        let too_long = "n".repeat(MAX_CLIENT_NAME_LEN + 1);
        let cases = [
            ("", "must not be empty"),
            (too_long.as_str(), "must be at most 128 bytes"),
            ("pbx\neast", "must not contain control characters"),
            ("pbx\x1b[31m", "must not contain control characters"),
        ];
        for (name, why) in cases {
            let err = ClientConfig::builder("a", "x")
                .name(name)
                .build()
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        setting: "name",
                        ..
                    }
                ),
                "{name:?}: {err}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid client config: name {why}")),
                "{name:?}: {err}"
            );
        }
        let longest = "n".repeat(MAX_CLIENT_NAME_LEN);
        let c = ClientConfig::builder("a", "x")
            .name(longest.as_str())
            .build()
            .unwrap();
        assert_eq!(c.name(), Some(longest.as_str()));
        let c = ClientConfig::builder("a", "x")
            .name("pbx-east")
            .build()
            .unwrap();
        assert_eq!(c.name(), Some("pbx-east"));
        assert_eq!(c.clone().or_name("west").name(), Some("pbx-east"));
        assert_eq!(c.with_name("west").name(), Some("west"));
        let unnamed = ClientConfig::builder("a", "x").build().unwrap();
        assert_eq!(unnamed.or_name("west").name(), Some("west"));
        assert_eq!(
            ClientConfig::builder("a", "x").build().unwrap().name(),
            None
        );
    }

    /// Each limit is a bound, not an exclusion: a setting exactly at it builds, one past it
    /// is refused with that setting named.
    #[test]
    fn settings_exactly_at_their_limits_build_and_one_past_is_refused() {
        let refused = |b: ClientConfigBuilder, setting: &str| {
            let err = b.build().unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { setting: s, .. } if s == setting),
                "{setting}: {err}"
            );
        };
        let b = || ClientConfig::builder("a", "x");
        // A backoff that never grows is a backoff.
        let base = Duration::from_millis(250);
        assert!(b().backoff_base(base).backoff_max(base).build().is_ok());
        // The pending cap may be all pipeline, or all queue.
        assert!(b()
            .max_pending_actions(64)
            .pipeline_depth(64)
            .max_queued_actions(64)
            .build()
            .is_ok());
        // Either one over the pending cap is refused, the other being within it.
        refused(
            b().max_pending_actions(64)
                .pipeline_depth(65)
                .max_queued_actions(1),
            "max_pending_actions",
        );
        refused(
            b().max_pending_actions(64)
                .pipeline_depth(1)
                .max_queued_actions(65),
            "max_pending_actions",
        );
        // A list budget of exactly one maximal message.
        let one_message = DecoderLimits::default().max_message_memory();
        assert!(b().max_list_bytes(one_message).build().is_ok());
        refused(b().max_list_bytes(one_message - 1), "max_list_bytes");
        refused(b().event_queue_bytes(one_message - 1), "event_queue_bytes");
        // MAX_FILTERS filters (and prefilters) build; one more is refused.
        let with_filters = |n: usize, pre: bool| {
            (0..n).fold(b(), |b, i| {
                let f = format!("^Event: E{i}[[:space:]]");
                if pre {
                    b.prefilter(f)
                } else {
                    b.filter(f)
                }
            })
        };
        for pre in [false, true] {
            assert!(with_filters(crate::MAX_FILTERS, pre).build().is_ok());
            refused(with_filters(crate::MAX_FILTERS + 1, pre), "filter");
        }
        // The longest filter whose line ("Filter: " + filter + CRLF) fits builds.
        let longest = "f".repeat(MAX_LINE_LEN - "Filter: \r\n".len());
        assert!(b().filter(longest.as_str()).build().is_ok());
        refused(b().filter(format!("{longest}f")), "filter");
        // Each of CR, LF and NUL alone is refused, in a filter as in a Login value.
        for bad in ["", "a\rb", "a\nb", "a\0b"] {
            refused(b().filter(bad), "filter");
            refused(b().prefilter(bad), "filter");
            refused(ClientConfig::builder(bad, "x"), "username");
            refused(ClientConfig::builder("a", bad), "secret");
            refused(b().events(bad), "events");
        }
        refused(b().breaker_threshold(0), "breaker_threshold");
    }

    #[test]
    fn secret_is_redacted_in_debug() {
        let c = ClientConfig::builder("admin", "amp111").build().unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("amp111"));
        assert!(dbg.contains("<redacted>"));
    }
}
