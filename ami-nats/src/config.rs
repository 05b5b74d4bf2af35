//! What a bridge is told: the NATS server, the Asterisk servers, names and limits.

use ami_proto::fleet::Policy;
use ami_proto::ClientConfig;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Longest server name accepted, in bytes (names travel in every subject and JSON body).
pub const MAX_SERVER_NAME_LEN: usize = 128;

/// The longest duration NATS carries: `i64::MAX` nanoseconds, its wire form.
const MAX_NATS_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// Most [`BridgeConfig::max_actions_in_flight`] accepted: the permits one tokio semaphore
/// can count.
pub const MAX_ACTIONS_IN_FLIGHT: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// Longest event-name token of a subject, in bytes. nats-server refuses a publish whose
/// line is over 4 KiB (and closes the connection), and the server chooses event names.
pub(crate) const MAX_EVENT_TOKEN_LEN: usize = 128;

/// One Asterisk server the bridge may serve.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub(crate) name: String,
    pub(crate) token: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) client: ClientConfig,
}

impl ServerSpec {
    /// A server named `name` (the `"server"` of every JSON body) at `host:port`, logged in
    /// with `client` (the secret stays inside it and never reaches a log line).
    pub fn new(
        name: impl Into<String>,
        host: impl Into<String>,
        port: u16,
        client: ClientConfig,
    ) -> Result<ServerSpec, BridgeConfigError> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_SERVER_NAME_LEN {
            return Err(BridgeConfigError::BadName(name));
        }
        if name.chars().any(char::is_control) {
            return Err(BridgeConfigError::BadName(name.escape_debug().to_string()));
        }
        let token = subject_token(&name);
        Ok(ServerSpec {
            name,
            token,
            host: host.into(),
            port,
            client,
        })
    }

    /// The name given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as one NATS subject token and KV key: every character outside
    /// `[A-Za-z0-9_-]` becomes `_`, so `10.0.0.7:5038` is `10_0_0_7_5038`.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// A server name as a subject token (see [`ServerSpec::token`]).
pub(crate) fn subject_token(name: &str) -> String {
    name.chars().map(token_char).collect()
}

/// `c` if it may stand in a subject token as it is, else `_`.
fn token_char(c: char) -> char {
    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
        c
    } else {
        '_'
    }
}

/// An AMI event name as one subject token, never empty and at most
/// [`MAX_EVENT_TOKEN_LEN`] bytes: an empty name becomes `_` (as a missing one does); a
/// longer one is cut and ends in `-` and a hash of the whole name, so two long names that
/// share their start still get two subjects. The body keeps the name as sent.
pub(crate) fn event_token(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    // Each character gives one byte of token, so a name of at most this many bytes fits.
    if name.len() <= MAX_EVENT_TOKEN_LEN {
        return subject_token(name);
    }
    const HASH_LEN: usize = 1 + 16;
    let mut token = subject_token_prefix(name, MAX_EVENT_TOKEN_LEN - HASH_LEN);
    let _ = std::fmt::Write::write_fmt(&mut token, format_args!("-{:016x}", fnv1a(name)));
    token
}

/// [`subject_token`] of the first `n` characters of `name` only (a long name is not copied
/// whole).
fn subject_token_prefix(name: &str, n: usize) -> String {
    name.chars().take(n).map(token_char).collect()
}

/// FNV-1a, 64 bits: stable across processes and Rust releases (std's hashers are not),
/// so a name's subject does not change when the bridge is rebuilt or restarted.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Limits of the JetStream stream the bridge creates when it is absent. An existing stream
/// is used as it is (an operator may have tuned it).
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Stream name. Default `AMI`.
    pub name: String,
    /// Oldest event kept. Default 24 h: a consumer down for a day can still catch up.
    pub max_age: Duration,
    /// Most bytes kept (oldest dropped first). Default 1 GiB.
    pub max_bytes: i64,
    /// How long JetStream remembers message IDs to drop a retried publish. Default 2 min:
    /// longer than any publish retry of the bridge (bounded by the lease TTL). nats-server
    /// keeps every ID of the window in memory (about 2 GiB after 150 s at 50 k events/s):
    /// at high rates a shorter window saves that memory. It may not be shorter than the
    /// lease TTL ([`Bridge::start`](crate::Bridge::start) refuses it).
    pub duplicate_window: Duration,
    /// File storage (default) survives a NATS restart; memory storage is faster.
    pub file_storage: bool,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            name: "AMI".into(),
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
            file_storage: true,
        }
    }
}

/// Everything a [`Bridge`](crate::Bridge) needs. Build with [`BridgeConfig::new`] and the
/// setters; [`Bridge::start`](crate::Bridge::start) refuses settings that cannot work. Its
/// `Debug` shows the NATS URL through [`redact_url`].
#[derive(Clone)]
pub struct BridgeConfig {
    pub(crate) nats_url: String,
    pub(crate) servers: Vec<ServerSpec>,
    pub(crate) stream: StreamLimits,
    pub(crate) lease_bucket: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) stand_aside: Duration,
    pub(crate) idempotency_bucket: String,
    pub(crate) idempotency_window: Duration,
    pub(crate) max_backlog: usize,
    pub(crate) max_backlog_bytes: usize,
    pub(crate) publish_window: usize,
    pub(crate) max_actions_in_flight: usize,
    pub(crate) max_late_answer_requests: usize,
    pub(crate) action_timeout: Duration,
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) bridge_id: Option<String>,
    pub(crate) any_policy: Policy,
}

impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Written out rather than derived: the URL may carry a password or token.
        f.debug_struct("BridgeConfig")
            .field("nats_url", &redact_url(&self.nats_url))
            .field("servers", &self.servers)
            .field("stream", &self.stream)
            .field("lease_bucket", &self.lease_bucket)
            .field("lease_ttl", &self.lease_ttl)
            .field("stand_aside", &self.stand_aside)
            .field("idempotency_bucket", &self.idempotency_bucket)
            .field("idempotency_window", &self.idempotency_window)
            .field("max_backlog", &self.max_backlog)
            .field("max_backlog_bytes", &self.max_backlog_bytes)
            .field("publish_window", &self.publish_window)
            .field("max_actions_in_flight", &self.max_actions_in_flight)
            .field("max_late_answer_requests", &self.max_late_answer_requests)
            .field("action_timeout", &self.action_timeout)
            .field("metrics", &self.metrics)
            .field("bridge_id", &self.bridge_id)
            .field("any_policy", &self.any_policy)
            .finish()
    }
}

/// A NATS URL (or a comma-separated list of them) fit for a log line: in each, the
/// password of `user:password@` becomes `***`, and so does a lone token (`token@`). The
/// user name, host and port stay. A raw comma in a password or token is part of it, not a
/// separator of the list: the user info runs from a URL's `scheme://` to the last `@`
/// before the next URL that starts with a scheme.
pub fn redact_url(url: &str) -> String {
    split_list(url)
        .into_iter()
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",")
}

/// The password or token of each URL of a comma-separated NATS URL list, as written in it:
/// what a log line must never show (`ami bridge` hides them from every line it prints).
pub fn url_secrets(url: &str) -> Vec<String> {
    split_list(url)
        .into_iter()
        .filter_map(|one| {
            let (start, end) = secret_span(one)?;
            one.get(start..end).map(str::to_string)
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The URLs of a comma-separated NATS URL list, each as written (blanks kept), so that
/// joining them with `,` gives the list back.
///
/// The user info is found before the list is split: a comma between a URL's `scheme://` and
/// the last `@` before the next URL that starts with a scheme (or the end of the list)
/// belongs to the password or token. Split first, `nats://u:P1,P2@h` became the URLs
/// `nats://u:P1` and `P2@h`, and `P1` was shown in errors and `Debug`, missed by
/// [`url_secrets`] and even looked up as a host name. A URL without a scheme that follows
/// one with a scheme is read as part of its user info when an `@` comes after it (the list
/// cannot tell `nats://h1,u:p@h2` from a password `h1,u:p`): hiding too much is the safe side.
fn split_list(list: &str) -> Vec<&str> {
    // Where a URL with a scheme starts: the list's start, or just after a comma.
    let mut starts: Vec<usize> = list
        .match_indices(',')
        .map(|(i, _)| i + 1)
        .filter(|&i| {
            list.get(i..)
                .is_some_and(|rest| scheme_len(rest.trim_start()).is_some())
        })
        .collect();
    starts.insert(0, 0);
    let mut urls = Vec::new();
    for (k, &from) in starts.iter().enumerate() {
        // Each stretch ends at the comma before the next start (dropped) or at the end.
        let to = starts.get(k + 1).map_or(list.len(), |&next| next - 1);
        let Some(stretch) = list.get(from..to) else {
            continue;
        };
        // Up to the stretch's last `@` is one URL's user info; the commas after it separate
        // URLs without a scheme (`nats://u:p@h1:1,h2:2`).
        let host_from = stretch.rfind('@').map_or(0, |at| at + 1);
        match stretch.get(host_from..).and_then(|hosts| hosts.find(',')) {
            Some(comma) => {
                let comma = host_from + comma;
                urls.push(stretch.get(..comma).unwrap_or(stretch));
                urls.extend(stretch.get(comma + 1..).unwrap_or("").split(','));
            }
            None => urls.push(stretch),
        }
    }
    urls
}

/// The length of the `scheme://` that `url` starts with (`nats://`, `tls://`, `ws://`): a
/// letter, then letters, digits, `+`, `-` or `.`, as RFC 3986 has it. A `://` later in the
/// text (inside a password) is no scheme.
fn scheme_len(url: &str) -> Option<usize> {
    let name = url
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(url.len());
    let first_is_letter = url.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    (first_is_letter && url.get(name..)?.starts_with("://")).then_some(name + 3)
}

/// Where the password (or the token, when the user info has no `:`) sits in one URL.
fn secret_span(url: &str) -> Option<(usize, usize)> {
    let blanks = url.len() - url.trim_start().len();
    let start = blanks + url.get(blanks..).and_then(scheme_len).unwrap_or(0);
    let rest = url.get(start..)?;
    // The last `@`, not the first after the host: a password written with a raw `/`, `?`
    // or `#` must not end the search early and be shown. A NATS URL has no path, so an
    // `@` after the host (over-redacting) is the safe side to err on.
    let at = rest.rfind('@')?;
    let userinfo = rest.get(..at)?;
    Some(match userinfo.find(':') {
        Some(colon) => (start + colon + 1, start + at),
        None => (start, start + at),
    })
}

/// Credentials for NATS, from the user info of the URLs (async-nats reads none there).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum NatsAuth {
    /// No user info in any URL.
    None,
    /// `user:password@`, percent-decoded.
    UserPassword(String, String),
    /// `token@`, percent-decoded.
    Token(String),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword(user, _) => write!(f, "UserPassword({user:?}, <redacted>)"),
            NatsAuth::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// The servers of a NATS URL or comma-separated list of them, without their user info, and
/// the credentials that user info gave. The credentials are the same for every server
/// (one connection presents one set): a URL without user info uses those of the others,
/// two URLs with different ones are refused. A secret may hold a raw `@`, `/`, `?`, `#` or
/// `,` (the last `@` ends it, as for [`redact_url`]) or percent-escapes (`%40` is `@`).
/// Errors show the URL through [`redact_url`].
pub(crate) fn nats_servers(
    url: &str,
) -> Result<(Vec<async_nats::ServerAddr>, NatsAuth), BridgeConfigError> {
    let mut addrs = Vec::new();
    let mut auth = NatsAuth::None;
    for one in split_list(url).into_iter().map(str::trim) {
        let bad = |why: &dyn std::fmt::Display| {
            BridgeConfigError::NatsUrl(format!("{:?}: {why}", redact_one(one)))
        };
        if one.is_empty() {
            return Err(bad(&"empty URL in the list"));
        }
        let (scheme, rest) = match scheme_len(one) {
            Some(n) => one.split_at(n),
            None => ("nats://", one),
        };
        let (this_auth, host) = match rest.rfind('@') {
            None => (NatsAuth::None, rest),
            Some(at) => {
                let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
                let decode = |s: &str| {
                    percent_decode(s)
                        .ok_or_else(|| bad(&"user info is not UTF-8 once percent-decoded"))
                };
                let a = match userinfo.split_once(':') {
                    Some((user, password)) => {
                        NatsAuth::UserPassword(decode(user)?, decode(password)?)
                    }
                    None => NatsAuth::Token(decode(userinfo)?),
                };
                (a, host)
            }
        };
        let addr: async_nats::ServerAddr =
            format!("{scheme}{host}").parse().map_err(|e| bad(&e))?;
        addrs.push(addr);
        match (&auth, this_auth) {
            (_, NatsAuth::None) => {}
            (NatsAuth::None, a) => auth = a,
            (known, a) if *known == a => {}
            _ => return Err(BridgeConfigError::NatsCredentials),
        }
    }
    Ok((addrs, auth))
}

/// `%XX` escapes decoded (a `%` not followed by two hex digits stays as it is); `None`
/// when the bytes are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|&h| char::from(h).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits: at most 0xff.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(u8::MAX));
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn redact_one(url: &str) -> String {
    match secret_span(url) {
        Some((from, to)) => format!(
            "{}***{}",
            url.get(..from).unwrap_or(""),
            url.get(to..).unwrap_or("")
        ),
        None => url.to_string(),
    }
}

impl BridgeConfig {
    /// A bridge to the NATS server at `nats_url` (e.g. `nats://127.0.0.1:4222`, or a
    /// comma-separated list; `user:password@` or `token@` in a URL log in, see
    /// [the crate docs](crate#nats-url-and-credentials)) for `servers`.
    pub fn new(nats_url: impl Into<String>, servers: Vec<ServerSpec>) -> BridgeConfig {
        BridgeConfig {
            nats_url: nats_url.into(),
            servers,
            stream: StreamLimits::default(),
            lease_bucket: "ami_leases".into(),
            lease_ttl: Duration::from_secs(10),
            stand_aside: Duration::from_secs(60),
            idempotency_bucket: "ami_idempotency".into(),
            idempotency_window: Duration::from_secs(600),
            max_backlog: 65_536,
            max_backlog_bytes: 64 << 20,
            publish_window: 1024,
            max_actions_in_flight: 256,
            max_late_answer_requests: crate::late::DEFAULT_MAX_REQUESTS,
            action_timeout: Duration::from_secs(30),
            metrics: None,
            bridge_id: None,
            any_policy: Policy::RoundRobin,
        }
    }

    /// Stream name and limits (used when the bridge creates the stream).
    pub fn stream(mut self, limits: StreamLimits) -> Self {
        self.stream = limits;
        self
    }

    /// Lease time-to-live (default 10 s): a dead bridge's servers are taken over within
    /// about this long, and a bridge that cannot renew stops serving before it runs out.
    /// At least 1 s (KV expiry works in whole seconds), at most a year
    /// ([`MAX_SETTING_DURATION`](ami_proto::MAX_SETTING_DURATION)).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long a bridge keeps out of a server's lease after giving it up because it could
    /// not use the server (default 60 s): its login was rejected for good, or its circuit
    /// breaker opened (the server unreachable from here). The lease is written `released`
    /// at once, so a bridge that can reach the server and log in takes it; after this long
    /// this bridge competes for it again (a password fixed meanwhile is tried, with no
    /// restart). At least 1 s: shorter, a lone bridge would re-take the lease it just left
    /// and hammer a server that refuses it. At most a year
    /// ([`MAX_SETTING_DURATION`](ami_proto::MAX_SETTING_DURATION)), as the lease TTL.
    pub fn stand_aside(mut self, cooldown: Duration) -> Self {
        self.stand_aside = cooldown;
        self
    }

    /// Names of the lease and idempotency KV buckets (defaults `ami_leases`, `ami_idempotency`).
    pub fn buckets(mut self, lease: impl Into<String>, idempotency: impl Into<String>) -> Self {
        self.lease_bucket = lease.into();
        self.idempotency_bucket = idempotency.into();
        self
    }

    /// How long an idempotency key blocks a second run after its request finished (default
    /// 10 min): the `max_age` of the idempotency bucket when the bridge creates it (an
    /// existing bucket keeps its own). A request still running holds its key however long
    /// it runs: its claim is written again every third of the window, so it never expires
    /// under an action in flight. At least 1 s
    /// ([`Bridge::start`](crate::Bridge::start) refuses less): shorter, the claim would
    /// have to be written again faster than a slow NATS answers.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// Items (events and markers) held while NATS is slow or down (default 65,536). When it
    /// is full the bridge stops taking events from the AMI sessions, whose own bounded queues
    /// then drop and count (published as `overflow` gaps); Asterisk is never stalled. Memory
    /// is bounded by [`max_backlog_bytes`](Self::max_backlog_bytes) too.
    pub fn max_backlog(mut self, items: usize) -> Self {
        self.max_backlog = items;
        self
    }

    /// Bytes of encoded events held while NATS is slow or down (default 64 MiB). At the cap
    /// the bridge stops taking events from the AMI sessions, as at [`max_backlog`]; an
    /// event taken that does not fit is dropped, counted (`ami_bridge_events_dropped`),
    /// logged and published as an `overflow` gap. Session and gap markers are always held
    /// (a few hundred bytes each). At least the largest message any server's decoder
    /// accepts ([`Bridge::start`](crate::Bridge::start) refuses less): a smaller cap would
    /// drop every event that large.
    ///
    /// [`max_backlog`]: Self::max_backlog
    pub fn max_backlog_bytes(mut self, bytes: usize) -> Self {
        self.max_backlog_bytes = bytes;
        self
    }

    /// Publishes awaiting their JetStream ack at once (default 1024).
    pub fn publish_window(mut self, n: usize) -> Self {
        self.publish_window = n;
        self
    }

    /// Action requests run at once; more are answered `not_sent` at once (default 256, at
    /// most [`MAX_ACTIONS_IN_FLIGHT`]). A request in flight holds its parsed action (at most
    /// 128 lines of 1 KiB, Asterisk's limits), not the body it came in (up to NATS's max
    /// payload).
    pub fn max_actions_in_flight(mut self, n: usize) -> Self {
        self.max_actions_in_flight = n;
        self
    }

    /// Action requests kept for the server's late answer (see the crate docs, "Late
    /// answers"): those running, and those that ended without their answer, each until the
    /// core's grace period for it ends (the server's `action_timeout` after it ended).
    /// Default 4,096, and at most 2 MiB of keys, stored replies and late answers waiting
    /// for their request's reply, whatever the count; at
    /// the cap the oldest is forgotten, counted in
    /// `ami_bridge_late_answer_requests_dropped_total` and logged: its late answer is
    /// still published, without its idempotency key, and not stored at the key (one read
    /// before, still waiting for its request's reply, is counted as `failed`).
    pub fn max_late_answer_requests(mut self, n: usize) -> Self {
        self.max_late_answer_requests = n;
        self
    }

    /// Default deadline of an action request without `timeout_ms` (default 30 s).
    pub fn action_timeout(mut self, timeout: Duration) -> Self {
        self.action_timeout = timeout;
        self
    }

    /// Serve Prometheus text metrics on `addr` (e.g. `127.0.0.1:9185`).
    pub fn metrics(mut self, addr: SocketAddr) -> Self {
        self.metrics = Some(addr);
        self
    }

    /// How a request on `ami.any.action` picks among the ready servers this bridge serves
    /// (the fleet's routing policy; default round-robin).
    pub fn any_policy(mut self, policy: Policy) -> Self {
        self.any_policy = policy;
        self
    }

    /// The bridge's name in leases, session IDs and metrics (default: random per process).
    pub fn bridge_id(mut self, id: impl Into<String>) -> Self {
        self.bridge_id = Some(id.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BridgeConfigError> {
        nats_servers(&self.nats_url)?;
        if self.servers.is_empty() {
            return Err(BridgeConfigError::NoServers);
        }
        let mut tokens: HashMap<&str, &str> = HashMap::new();
        for s in &self.servers {
            if s.token == "any" {
                return Err(BridgeConfigError::Reserved(s.name.clone()));
            }
            if let Some(other) = tokens.insert(&s.token, &s.name) {
                return Err(BridgeConfigError::SameToken {
                    a: other.to_string(),
                    b: s.name.clone(),
                });
            }
        }
        let zero = |n: usize, what: &'static str| {
            if n == 0 {
                Err(BridgeConfigError::Zero(what))
            } else {
                Ok(())
            }
        };
        zero(self.max_backlog, "max_backlog")?;
        if let Some(largest) = self
            .servers
            .iter()
            .map(|s| s.client.decoder_limits().max_message_len())
            .max()
            .filter(|&largest| self.max_backlog_bytes < largest)
        {
            return Err(BridgeConfigError::BacklogBytes {
                cap: self.max_backlog_bytes,
                largest,
            });
        }
        zero(self.publish_window, "publish_window")?;
        zero(self.max_actions_in_flight, "max_actions_in_flight")?;
        zero(self.max_late_answer_requests, "max_late_answer_requests")?;
        if self.lease_bucket == self.idempotency_bucket {
            return Err(BridgeConfigError::SameBucket(self.lease_bucket.clone()));
        }
        // Each action in flight holds a permit of one tokio semaphore, which panics when
        // made with more than it can count (`usize::MAX` meant as "no limit", say).
        if self.max_actions_in_flight > MAX_ACTIONS_IN_FLIGHT {
            return Err(BridgeConfigError::TooMany {
                setting: "max_actions_in_flight",
                value: self.max_actions_in_flight,
                max: MAX_ACTIONS_IN_FLIGHT,
            });
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(BridgeConfigError::LeaseTtl(self.lease_ttl));
        }
        if self.stand_aside < Duration::from_secs(1) {
            return Err(BridgeConfigError::StandAside(self.stand_aside));
        }
        // Both are added to an `Instant` by the lease task (the end of a stand-aside, a
        // renewal's fence): one an `Instant` cannot hold (`Duration::MAX` meant as "for
        // ever") would panic that task, and with it every lease of the bridge.
        for (setting, value) in [
            ("lease_ttl", self.lease_ttl),
            ("stand_aside", self.stand_aside),
        ] {
            if value > ami_proto::MAX_SETTING_DURATION {
                return Err(BridgeConfigError::TooLong { setting, value });
            }
        }
        // NATS reads these as i64 nanoseconds, and async-nats casts a `Duration` to that
        // with `as`: a longer one would be cut silently to its low 64 bits (a duplicate
        // window of 18,446,744,074 s made a stream that spots duplicates for 0.29 s only).
        for (setting, value) in [
            ("stream.max_age", self.stream.max_age),
            ("stream.duplicate_window", self.stream.duplicate_window),
            ("idempotency_window", self.idempotency_window),
        ] {
            if value > MAX_NATS_DURATION {
                return Err(BridgeConfigError::TooLongForNats { setting, value });
            }
        }
        if self.idempotency_window < Duration::from_secs(1) {
            return Err(BridgeConfigError::IdempotencyWindow(
                self.idempotency_window,
            ));
        }
        // A publish is retried while the lease is held; a window shorter than the lease
        // could let a retry of a stored message through as a second copy.
        if self.stream.duplicate_window < self.lease_ttl {
            return Err(BridgeConfigError::DuplicateWindow {
                window: self.stream.duplicate_window,
                ttl: self.lease_ttl,
            });
        }
        if let Some(id) = &self.bridge_id {
            if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_graphic()) {
                return Err(BridgeConfigError::BadName(id.clone()));
            }
        }
        Ok(())
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeConfigError {
    /// No server given.
    #[error("no Asterisk server given")]
    NoServers,
    /// A NATS URL of the list cannot be read (shown with its password or token as `***`).
    #[error("bad NATS URL {0}")]
    NatsUrl(String),
    /// Two NATS URLs of the list carry different credentials.
    #[error("the NATS URLs carry different credentials (one connection presents one set)")]
    NatsCredentials,
    /// A name is empty, too long or holds control characters.
    #[error("bad name {0:?}")]
    BadName(String),
    /// Two names map to the same subject token.
    #[error("servers {a:?} and {b:?} map to the same NATS subject token")]
    SameToken {
        /// First name.
        a: String,
        /// Second name.
        b: String,
    },
    /// `any` is the routing subject `ami.any.action`.
    #[error("server name {0:?} is reserved (ami.any.action)")]
    Reserved(String),
    /// The lease and idempotency buckets have the same name: one bucket, made with the
    /// first's limits, would hold both, and a request key per action would fill the
    /// lease bucket's bytes until no lease could be written.
    #[error("the lease and idempotency buckets are both {0:?}: give each its own")]
    SameBucket(String),
    /// A cap is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The backlog's byte cap is below the largest message a server's decoder accepts.
    #[error("max_backlog_bytes {cap} is below the largest AMI message accepted ({largest} bytes)")]
    BacklogBytes {
        /// The cap given.
        cap: usize,
        /// The largest `max_message_len` of the servers' decoder limits.
        largest: usize,
    },
    /// The lease TTL is under a second.
    #[error("lease TTL {0:?} is under 1 s")]
    LeaseTtl(Duration),
    /// The stand-aside time after giving a lease up is under a second.
    #[error("stand-aside time {0:?} is under 1 s")]
    StandAside(Duration),
    /// A duration is longer than [`MAX_SETTING_DURATION`](ami_proto::MAX_SETTING_DURATION)
    /// (a year): the bridge adds it to an `Instant`, which cannot hold any duration.
    #[error("{setting} {value:?} is over a year (MAX_SETTING_DURATION)")]
    TooLong {
        /// The setting at fault.
        setting: &'static str,
        /// The value given.
        value: Duration,
    },
    /// A duration NATS cannot carry: over `i64::MAX` nanoseconds (about 292 years).
    #[error(
        "{setting} {value:?} is over what NATS can carry (i64::MAX nanoseconds, about 292 years)"
    )]
    TooLongForNats {
        /// The setting at fault.
        setting: &'static str,
        /// The value given.
        value: Duration,
    },
    /// A count is over what the bridge can hold (see [`MAX_ACTIONS_IN_FLIGHT`]).
    #[error("{setting} {value} is over {max}")]
    TooMany {
        /// The setting at fault.
        setting: &'static str,
        /// The value given.
        value: usize,
        /// The most it may be.
        max: usize,
    },
    /// The idempotency window is under a second (zero included: a bucket that never
    /// expires would fill up, and then refuse every request with a key).
    #[error("idempotency window {0:?} is under 1 s")]
    IdempotencyWindow(Duration),
    /// The stream's duplicate window is shorter than the lease TTL.
    #[error("duplicate window {window:?} is shorter than the lease TTL {ttl:?}")]
    DuplicateWindow {
        /// The window given.
        window: Duration,
        /// The lease TTL given.
        ttl: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use ami_proto::DEFAULT_MAX_MESSAGE_LEN;

    fn spec(name: &str) -> ServerSpec {
        let c = ClientConfig::builder("a", "b").build().unwrap();
        ServerSpec::new(name, "127.0.0.1", 5038, c).unwrap()
    }

    #[test]
    fn url_secrets_are_the_passwords_and_tokens_redact_url_hides() {
        let urls = "nats://a:p@ss/w0rd@h1:4222,tls://T0ken@h2:4222,h3:4222,nats://u:@h4:1";
        assert_eq!(url_secrets(urls), ["p@ss/w0rd", "T0ken"]);
        assert_eq!(
            redact_url(urls),
            "nats://a:***@h1:4222,tls://***@h2:4222,h3:4222,nats://u:***@h4:1"
        );
        assert!(url_secrets("nats://127.0.0.1:4222").is_empty());
    }

    #[test]
    fn nats_url_credentials_are_taken_percent_decoded_and_the_list_is_every_server() {
        let (addrs, auth) = nats_servers("nats://u:Sup%40er/Se#cret@127.0.0.1:4240").unwrap();
        assert_eq!(
            auth,
            NatsAuth::UserPassword("u".into(), "Sup@er/Se#cret".into())
        );
        assert_eq!(addrs.len(), 1);
        assert!(!addrs[0].has_user_pass());
        assert_eq!((addrs[0].host(), addrs[0].port()), ("127.0.0.1", 4240));
        let (addrs, auth) = nats_servers("nats://T0ken@h1:1, nats://h2:2,h3").unwrap();
        assert_eq!(auth, NatsAuth::Token("T0ken".into()));
        let hosts: Vec<_> = addrs
            .iter()
            .map(|a| (a.host().to_string(), a.port()))
            .collect();
        assert_eq!(
            hosts,
            [("h1".into(), 1), ("h2".into(), 2), ("h3".into(), 4222)]
        );
        assert_eq!(nats_servers("nats://h:1").unwrap().1, NatsAuth::None);
        assert!(!format!("{auth:?}").contains("T0ken"));
        assert_eq!(
            nats_servers("nats://a:x@h1:1,nats://a:y@h2:2").unwrap_err(),
            BridgeConfigError::NatsCredentials
        );
        let bad = nats_servers("nats://u:S3cret@h1:99999")
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("u:***@h1:99999") && !bad.contains("S3cret"),
            "{bad}"
        );
        assert!(nats_servers("nats://h1:1,").is_err());
    }

    #[test]
    fn host_port_names_become_one_subject_token() {
        assert_eq!(spec("10.0.0.7:5038").token(), "10_0_0_7_5038");
        assert_eq!(spec("pbx-east_1").token(), "pbx-east_1");
        assert_eq!(spec("a.*>b c").token(), "a___b_c");
    }

    #[test]
    fn names_that_collide_as_tokens_are_refused() {
        let c = BridgeConfig::new("nats://x", vec![spec("a.b"), spec("a:b")]);
        assert!(matches!(
            c.validate(),
            Err(BridgeConfigError::SameToken { .. })
        ));
    }

    #[test]
    fn a_configs_debug_output_shows_no_password_or_token_of_the_nats_url() {
        for url in [
            "nats://alice:s3cret@127.0.0.1:4222",
            "nats://s3cret@127.0.0.1:4222",
            "tls://alice:s3cret@nats.example:4222",
            "alice:s3cret@127.0.0.1:4222",
            "nats://alice:s3c/r#et@127.0.0.1:4222",
        ] {
            let shown = format!("{:?}", BridgeConfig::new(url, vec![spec("a")]));
            assert!(!shown.contains("s3c"), "{shown}");
            assert!(shown.contains("127.0.0.1:4222") || shown.contains("nats.example:4222"));
        }
        let plain = format!(
            "{:?}",
            BridgeConfig::new("nats://127.0.0.1:4222", vec![spec("a")])
        );
        assert!(plain.contains("nats://127.0.0.1:4222"), "{plain}");
        assert_eq!(
            redact_url("nats://alice:s3cret@h:4222,nats://t0k@g:4222"),
            "nats://alice:***@h:4222,nats://***@g:4222"
        );
    }

    /// NATS URLs whose password or token holds raw commas: `NPART`/`TOKPART` must never
    /// show, whole or in part.
    const COMMA_SECRETS: [&str; 5] = [
        "nats://nuser:NPART1,NPART2@127.0.0.1:4222",
        "nats://TOKPART1,TOKPART2@127.0.0.1:4222",
        "nats://nuser:NPART1,,NPART2,@127.0.0.1:4222,nats://127.0.0.1:4223",
        "nats://127.0.0.1:4223, tls://TOKPART1,TOKPART2@127.0.0.1:4222,127.0.0.1:4224",
        "nuser:NPART1,NPART2@127.0.0.1:4222",
    ];

    fn shows_no_part_of_the_secret(shown: &str) -> bool {
        !shown.contains("PART")
    }

    #[test]
    fn a_comma_in_a_password_or_token_is_part_of_it_for_redact_url() {
        assert_eq!(
            redact_url("nats://nuser:NPART1,NPART2@127.0.0.1:4222"),
            "nats://nuser:***@127.0.0.1:4222"
        );
        assert_eq!(
            redact_url("nats://TOKPART1,TOKPART2@h:4222"),
            "nats://***@h:4222"
        );
        assert_eq!(
            redact_url(COMMA_SECRETS[3]),
            "nats://127.0.0.1:4223, tls://***@127.0.0.1:4222,127.0.0.1:4224"
        );
        for url in COMMA_SECRETS {
            let shown = redact_url(url);
            assert!(shows_no_part_of_the_secret(&shown), "{shown}");
        }
    }

    #[test]
    fn a_comma_in_a_password_or_token_is_part_of_it_for_url_secrets() {
        assert_eq!(url_secrets(COMMA_SECRETS[0]), ["NPART1,NPART2"]);
        assert_eq!(url_secrets(COMMA_SECRETS[1]), ["TOKPART1,TOKPART2"]);
        assert_eq!(url_secrets(COMMA_SECRETS[2]), ["NPART1,,NPART2,"]);
        assert_eq!(url_secrets(COMMA_SECRETS[3]), ["TOKPART1,TOKPART2"]);
        assert_eq!(url_secrets(COMMA_SECRETS[4]), ["NPART1,NPART2"]);
    }

    #[test]
    fn a_comma_in_a_password_or_token_is_part_of_it_for_a_configs_debug_output() {
        for url in COMMA_SECRETS {
            let shown = format!("{:?}", BridgeConfig::new(url, vec![spec("a")]));
            assert!(shows_no_part_of_the_secret(&shown), "{shown}");
            assert!(shown.contains("127.0.0.1:4222"), "{shown}");
        }
    }

    #[test]
    fn a_comma_in_a_password_or_token_is_part_of_it_when_the_url_is_read() {
        let (addrs, auth) = nats_servers(COMMA_SECRETS[0]).unwrap();
        assert_eq!(
            auth,
            NatsAuth::UserPassword("nuser".into(), "NPART1,NPART2".into())
        );
        // One server, and no half of the secret taken for a host name to look up.
        let hosts: Vec<_> = addrs.iter().map(|a| a.host().to_string()).collect();
        assert_eq!(hosts, ["127.0.0.1"]);
        let (addrs, auth) = nats_servers(COMMA_SECRETS[3]).unwrap();
        assert_eq!(auth, NatsAuth::Token("TOKPART1,TOKPART2".into()));
        let ports: Vec<_> = addrs.iter().map(|a| a.port()).collect();
        assert_eq!(ports, [4223, 4222, 4224]);
        // An error about such a URL shows it redacted.
        for bad in [
            "nats://nuser:NPART1,NPART2@127.0.0.1:99999",
            "nats://TOKPART1,TOKPART2@127.0.0.1:99999",
            "nats://h:1,nats://nuser:NPART1,NPART2@127.0.0.1:99999",
        ] {
            let e = nats_servers(bad).unwrap_err().to_string();
            assert!(shows_no_part_of_the_secret(&e), "{e}");
            assert!(e.contains("***@127.0.0.1:99999"), "{e}");
        }
    }

    #[test]
    fn a_scheme_is_only_what_a_url_starts_with() {
        assert_eq!(scheme_len("nats://h"), Some(7));
        assert_eq!(scheme_len("ws+x.y-z://h"), Some(11));
        assert_eq!(scheme_len("u:pa://ss@h"), None);
        assert_eq!(scheme_len("1x://h"), None);
        assert_eq!(scheme_len("h:4222"), None);
        // A `://` inside a password is no scheme: the whole password is hidden.
        assert_eq!(redact_url("u:pa://ss@h:1"), "u:***@h:1");
        assert_eq!(url_secrets("nats://u:pa://ss@h:1"), ["pa://ss"]);
    }

    #[test]
    fn a_list_splits_back_into_the_urls_it_was_joined_from() {
        for list in [
            "",
            "nats://h1:1,",
            "nats://a:p@h1:1, tls://T@h2:2,h3:3,nats://h4",
            "nats://u:P1,P2@h1:1,h2:2",
        ] {
            assert_eq!(split_list(list).join(","), list);
        }
        assert_eq!(
            split_list("nats://u:P1,P2@h1:1,h2:2, tls://h3"),
            ["nats://u:P1,P2@h1:1", "h2:2", " tls://h3"]
        );
        assert_eq!(split_list("h1,h2"), ["h1", "h2"]);
    }

    #[test]
    fn a_backlog_byte_cap_below_the_largest_message_a_server_accepts_is_refused() {
        let ok = BridgeConfig::new("nats://x", vec![spec("a")]);
        assert_eq!(ok.validate(), Ok(()), "the defaults fit together");
        let largest = DEFAULT_MAX_MESSAGE_LEN;
        assert_eq!(
            ok.clone().max_backlog_bytes(largest - 1).validate(),
            Err(BridgeConfigError::BacklogBytes {
                cap: largest - 1,
                largest
            })
        );
        assert_eq!(ok.max_backlog_bytes(largest).validate(), Ok(()));
    }

    #[test]
    fn unworkable_settings_are_refused() {
        let ok = BridgeConfig::new("nats://x", vec![spec("a")]);
        assert_eq!(ok.validate(), Ok(()));
        assert!(ok.clone().max_backlog(0).validate().is_err());
        assert_eq!(
            ok.clone().buckets("ami_kv", "ami_kv").validate(),
            Err(BridgeConfigError::SameBucket("ami_kv".into()))
        );
        assert_eq!(ok.clone().buckets("a", "b").validate(), Ok(()));
        assert_eq!(
            ok.clone()
                .max_actions_in_flight(MAX_ACTIONS_IN_FLIGHT + 1)
                .validate(),
            Err(BridgeConfigError::TooMany {
                setting: "max_actions_in_flight",
                value: MAX_ACTIONS_IN_FLIGHT + 1,
                max: MAX_ACTIONS_IN_FLIGHT
            })
        );
        assert_eq!(
            ok.clone()
                .max_actions_in_flight(MAX_ACTIONS_IN_FLIGHT)
                .validate(),
            Ok(())
        );
        let over_nats = MAX_NATS_DURATION + Duration::from_nanos(1);
        assert_eq!(
            ok.clone().idempotency_window(over_nats).validate(),
            Err(BridgeConfigError::TooLongForNats {
                setting: "idempotency_window",
                value: over_nats
            })
        );
        assert_eq!(
            ok.clone().idempotency_window(MAX_NATS_DURATION).validate(),
            Ok(())
        );
        assert!(ok
            .clone()
            .lease_ttl(Duration::from_millis(10))
            .validate()
            .is_err());
        assert_eq!(
            ok.clone()
                .stand_aside(Duration::from_millis(999))
                .validate(),
            Err(BridgeConfigError::StandAside(Duration::from_millis(999)))
        );
        // Before: accepted, and the lease task panicked ("overflow when adding duration to
        // instant") at the first login rejected, when it computed the stand-aside's end.
        assert_eq!(
            ok.clone().stand_aside(Duration::MAX).validate(),
            Err(BridgeConfigError::TooLong {
                setting: "stand_aside",
                value: Duration::MAX
            })
        );
        let long = StreamLimits {
            duplicate_window: Duration::MAX,
            ..StreamLimits::default()
        };
        assert_eq!(
            ok.clone().stream(long).lease_ttl(Duration::MAX).validate(),
            Err(BridgeConfigError::TooLong {
                setting: "lease_ttl",
                value: Duration::MAX
            })
        );
        assert!(ok
            .clone()
            .stand_aside(ami_proto::MAX_SETTING_DURATION)
            .validate()
            .is_ok());
        for window in [Duration::ZERO, Duration::from_millis(999)] {
            assert_eq!(
                ok.clone().idempotency_window(window).validate(),
                Err(BridgeConfigError::IdempotencyWindow(window))
            );
        }
        assert!(ok
            .clone()
            .idempotency_window(Duration::from_secs(1))
            .validate()
            .is_ok());
        let short = StreamLimits {
            duplicate_window: Duration::from_secs(5),
            ..StreamLimits::default()
        };
        assert_eq!(
            ok.clone()
                .stream(short)
                .lease_ttl(Duration::from_secs(10))
                .validate(),
            Err(BridgeConfigError::DuplicateWindow {
                window: Duration::from_secs(5),
                ttl: Duration::from_secs(10)
            })
        );
        assert!(BridgeConfig::new("nats://x", vec![spec("any")])
            .validate()
            .is_err());
        assert!(BridgeConfig::new("nats://x", vec![]).validate().is_err());
        let c = ClientConfig::builder("a", "b").build().unwrap();
        assert!(ServerSpec::new("bad\r\nname", "h", 1, c).is_err());
    }
}
