//! Actions as NATS requests.
//!
//! Request body, on `ami.<server>.action` (that server) or `ami.any.action` (any ready server
//! the answering bridge serves, round-robin):
//!
//! ```json
//! {"headers":[["Action","Originate"],["Channel","Local/100@ami-test"],["Async","true"]],
//!  "idempotency_key":"order-4711","timeout_ms":5000}
//! ```
//!
//! `headers` in order, the `Action` header naming the action (ActionIDs are the bridge's);
//! `idempotency_key` (optional, 1 to 128 of `[A-Za-z0-9_-]`) runs the request at most once per
//! key, across bridges, while it runs (however long) and for the idempotency window after
//! (see the `idempotency` module); `timeout_ms` (optional) bounds the wait,
//! counted from when the bridge received the request: the time its idempotency store (or a
//! bridge forwarding it) took comes out of it, and a request with none left is answered
//! `not_sent` without reaching Asterisk. A forwarded request carries its deadline as an
//! absolute time (header `Ami-Deadline-Ms`, epoch milliseconds): one that reaches the lease
//! holder past it (the forwarder's connection stalled) is answered `not_sent` and counted
//! in `ami_bridge_actions_expired_total`. A request published without a reply subject is not
//! run (nobody could be told its outcome), counted `not_sent` and as a lost reply
//! (`no_reply_subject`), and logged.
//!
//! Reply: `{"type":"outcome","server":S,"outcome":K,...}` where `S` is the server's name
//! (`null` for an `ami.any.action` request answered before a server was picked: refused,
//! late, no server ready, or a `duplicate` whose original names it) and `K` is `success`,
//! `server_error`, `timed_out` (written to Asterisk, no full answer in time: it may have run;
//! should its answer still come, it is published as a `late_answer` item and, with an
//! idempotency key, stored at the key in this reply's place, see the crate docs),
//! `list_overflow`, `list_incomplete` (items were dropped on the way in; those that arrived
//! are in `items`), `response_discarded` (Asterisk answered, but its answer was over the
//! client's limits or malformed and was thrown away: an error answer is thrown away too,
//! so whether it ran is not known), `not_sent` (never reached Asterisk, also when the deadline passed while
//! the action still waited to be written: safe to retry), `unknown` (may have run; with
//! `response` when Asterisk accepted it and only its follow-up was lost: an async Originate
//! whose call is being placed), `invalid_request` (refused before anything was sent,
//! and refused again if retried: a malformed request, `Login`, `Logoff`, `Challenge`, `Events`
//! and `Filter`, which the bridge's sessions depend on or which would mute a stream every
//! consumer reads, an async Originate on sessions whose event mask keeps its
//! OriginateResponse out),
//! `duplicate` (the key was used: `"original"` holds the first reply, absent while the first
//! is still running) or `reply_too_large` (the action ran, but its answer is over NATS's max
//! payload: `answer_outcome` holds the outcome it had, `items_left_out` the list items not
//! carried, and `response` and `complete` the server's first and last messages when those
//! fit; the loss is counted in `ami_bridge_action_replies_lost_total{reason="too_large"}`).
//! `response`, `items`, `complete` and `follow_up` hold the server's messages as header lists
//! when there are any; `error` says why when it failed.

use crate::bridge::Control;
use crate::idempotency::{Claim, Claimed, Confirmed, Keys};
use crate::throttle::LogThrottle;
use crate::upstream::ServerIx;
use ami_json::{into_string, push_headers, push_text};
use ami_proto::{Action, ActionError, ActionId, Message, Phase, Response, SendError, SendOptions};
use ami_tokio::AmiError;
use bytes::Bytes;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// Rounds of claiming a key for one request, each but the last ended by another request
/// taking its claim over before its confirm (see [`hold`]).
const CLAIM_ROUNDS: usize = 3;
/// Longest a request spends claiming its key, whatever its own deadline (see [`hold`]):
/// past it, NATS has not answered for a minute, and the request is answered `not_sent`.
const CLAIM_MAX_WAIT: Duration = Duration::from_secs(60);
/// Header of a forwarded request: the milliseconds left of its deadline when the first
/// bridge passed it on, so the holder gives it no more time than its requester still waits.
/// Counted from when the holder receives it: a forward that stalls on the way (the
/// forwarder's connection to NATS slow) would get its whole time again, hence
/// [`DEADLINE_MS`] too. Kept for holders from before it.
pub(crate) const REMAINING_MS: &str = "Ami-Remaining-Ms";
/// Header of a forwarded request: its deadline as milliseconds since the Unix epoch on the
/// forwarding bridge's clock. A holder receiving it past that refuses it (`not_sent`,
/// counted in `ami_bridge_actions_expired_total`), and never gives it more time than is
/// left of it, nor more than [`REMAINING_MS`] from receipt.
///
/// Clock skew between the two hosts moves that deadline: a holder whose clock is behind
/// the forwarder's by S may still send a request up to S after its requester's deadline
/// (never more than `Ami-Remaining-Ms` after receipt); one ahead by S refuses requests S
/// early, and when S exceeds the requests' timeouts it refuses every forwarded request,
/// logged (rate-limited) with how late it looked. With NTP, S is a few milliseconds; a relative
/// time alone cannot see the time a request spent on the way at all.
pub(crate) const DEADLINE_MS: &str = "Ami-Deadline-Ms";

/// When a request's answer is due: `timeout` (capped by `cap`) after the bridge received
/// it. `None` when that is too far to represent (no deadline worth arming).
fn deadline_of(received: Instant, timeout: Duration, cap: Option<Duration>) -> Option<Instant> {
    received.checked_add(cap.map_or(timeout, |c| c.min(timeout)))
}

/// What is left until `deadline` (all of `budget` when there is none).
fn left_until(deadline: Option<Instant>, budget: Duration) -> Duration {
    deadline.map_or(budget, |d| d.saturating_duration_since(Instant::now()))
}

/// Milliseconds since the Unix epoch on this host's clock (0 before it).
fn epoch_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The limits a forwarding bridge put on a request's time, read when it was received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Forwarded {
    /// The most time it may have from receipt: the least of [`REMAINING_MS`] and what is
    /// left until [`DEADLINE_MS`] (`None`: not forwarded, or by a bridge that set neither).
    cap: Option<Duration>,
    /// How long past its [`DEADLINE_MS`] it arrived, on this host's clock (`None`: not
    /// past it, or no such header).
    late_by: Option<Duration>,
}

/// The forwarding bridge's limits on `msg` ([`REMAINING_MS`], [`DEADLINE_MS`]), as of `now_ms`
/// (milliseconds since the Unix epoch here).
fn forwarded(msg: &async_nats::Message, now_ms: u128) -> Forwarded {
    let Some(headers) = msg.headers.as_ref() else {
        return Forwarded::default();
    };
    let number = |name: &str| headers.get(name)?.as_str().parse::<u64>().ok();
    let remaining = number(REMAINING_MS).map(Duration::from_millis);
    let (until_deadline, late_by) = match number(DEADLINE_MS).map(u128::from) {
        Some(deadline) if deadline > now_ms => {
            let left = u64::try_from(deadline - now_ms).unwrap_or(u64::MAX);
            (Some(Duration::from_millis(left)), None)
        }
        Some(deadline) => {
            let late = u64::try_from(now_ms - deadline).unwrap_or(u64::MAX);
            (Some(Duration::ZERO), Some(Duration::from_millis(late)))
        }
        None => (None, None),
    };
    let cap = match (remaining, until_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Forwarded { cap, late_by }
}

/// A parsed action request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRequest {
    /// The action to send.
    pub action: Action,
    /// At most one run per key within the window.
    pub idempotency_key: Option<String>,
    /// Deadline for the answer.
    pub timeout: Option<Duration>,
}

/// Why a request was refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not JSON, or not the documented shape.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// No `Action` header.
    #[error("no Action header")]
    NoAction,
    /// An action the bridge's sessions depend on (`Login`, `Logoff`, `Challenge`, `Events`),
    /// or one that would change what a session publishes for every consumer (`Filter`: a
    /// filter stays until the session ends, and a `!UserEvent` would mute its stream without
    /// a gap).
    #[error("action {0} is reserved to the bridge")]
    Reserved(String),
    /// A field would break the wire format or Asterisk's limits.
    #[error("invalid action: {0}")]
    Invalid(String),
    /// The idempotency key is empty, too long or has other characters than `[A-Za-z0-9_-]`.
    #[error("bad idempotency key")]
    BadKey,
}

impl ActionRequest {
    /// Parses and checks a request body.
    pub fn parse(body: &[u8]) -> Result<ActionRequest, RequestError> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| RequestError::Malformed(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| RequestError::Malformed("not an object".into()))?;
        let headers = obj
            .get("headers")
            .and_then(|h| h.as_array())
            .ok_or_else(|| RequestError::Malformed("no \"headers\" array".into()))?;
        let mut pairs = Vec::with_capacity(headers.len());
        for h in headers {
            match h.as_array().map(|a| a.as_slice()) {
                Some([k, v]) => match (k.as_str(), v.as_str()) {
                    (Some(k), Some(v)) => pairs.push((k, v)),
                    _ => {
                        return Err(RequestError::Malformed(
                            "a header is not two strings".into(),
                        ))
                    }
                },
                _ => {
                    return Err(RequestError::Malformed(
                        "a header is not a [key, value] pair".into(),
                    ))
                }
            }
        }
        let name = pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Action"))
            .map(|(_, v)| *v)
            .ok_or(RequestError::NoAction)?;
        if ["login", "logoff", "challenge", "events", "filter"]
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r))
        {
            return Err(RequestError::Reserved(name.to_string()));
        }
        let mut action = Action::new(name);
        for (k, v) in pairs
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("Action"))
        {
            action.push(*k, *v);
        }
        // Checked as the session will write it, with the ActionID the bridge adds (a line
        // of its own; the ID's length does not matter, only that it is there): a request
        // with no room left for it is refused here, before its idempotency key is claimed
        // and it is routed or forwarded, not by the session afterwards.
        let id = ActionId::new("ami-nats").ok();
        action
            .validate(id.as_ref())
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        let idempotency_key = match obj.get("idempotency_key") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(k))
                if !k.is_empty()
                    && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Some(k.clone())
            }
            Some(_) => return Err(RequestError::BadKey),
        };
        let timeout = match obj.get("timeout_ms") {
            None | Some(serde_json::Value::Null) => None,
            Some(t) => Some(Duration::from_millis(t.as_u64().ok_or_else(|| {
                RequestError::Malformed("timeout_ms is not a whole number".into())
            })?)),
        };
        Ok(ActionRequest {
            action,
            idempotency_key,
            timeout,
        })
    }

    /// The request as a body [`parse`](Self::parse) reads back as this same request: the
    /// `Action` header first, then the fields in order, the key and the timeout. No larger
    /// than the action's own limits allow (128 lines of at most 1 KiB), whatever the body it
    /// was parsed from held besides (whitespace, unknown members): a bridge forwarding a
    /// request passes this on and lets the requester's body go.
    pub fn to_body(&self) -> Vec<u8> {
        let headers: Vec<[&str; 2]> = std::iter::once(["Action", self.action.name()])
            .chain(self.action.fields().map(|(k, v)| [k, v]))
            .collect();
        let mut body = serde_json::Map::new();
        body.insert("headers".into(), serde_json::json!(headers));
        if let Some(key) = &self.idempotency_key {
            body.insert("idempotency_key".into(), key.as_str().into());
        }
        if let Some(t) = self.timeout {
            // Read from a whole number of milliseconds of a u64: it fits back.
            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            body.insert("timeout_ms".into(), ms.into());
        }
        serde_json::Value::Object(body).to_string().into_bytes()
    }
}

/// Builds a reply body.
struct Reply {
    out: Vec<u8>,
}

impl Reply {
    fn new(server: Option<&str>, outcome: &str) -> Reply {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"type\":\"outcome\",\"server\":");
        match server {
            Some(s) => push_text(&mut out, s.as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        let _ = write!(out, ",\"outcome\":\"{outcome}\"");
        Reply { out }
    }
    fn error(mut self, e: &str) -> Reply {
        self.out.extend_from_slice(b",\"error\":");
        push_text(&mut self.out, e.as_bytes());
        self
    }
    fn message(mut self, key: &str, m: Option<&Message>) -> Reply {
        if let Some(m) = m {
            let _ = write!(self.out, ",\"{key}\":");
            push_headers(&mut self.out, m);
        }
        self
    }
    fn response(self, r: &Response) -> Reply {
        let mut me = self
            .message("response", Some(r.message()))
            .message("complete", r.complete())
            .message("follow_up", r.follow_up());
        if !r.items().is_empty() {
            me.out.extend_from_slice(b",\"items\":[");
            for (i, m) in r.items().iter().enumerate() {
                if i > 0 {
                    me.out.push(b',');
                }
                push_headers(&mut me.out, m);
            }
            me.out.push(b']');
        }
        me
    }
    fn raw(mut self, key: &str, json: &str) -> Reply {
        let _ = write!(self.out, ",\"{key}\":{json}");
        self
    }
    fn finish(mut self) -> String {
        self.out.push(b'}');
        into_string(self.out)
    }
}

/// The outcome kind and reply of a finished send.
fn outcome_reply(server: &str, result: &Result<Response, AmiError>) -> (&'static str, String) {
    let (kind, reply) = match result {
        Ok(r) => ("success", Reply::new(Some(server), "success").response(r)),
        Err(AmiError::Action(e)) => {
            let kind = match e {
                ActionError::Server(_) => "server_error",
                // Its deadline passed while it waited unwritten in the session's queue:
                // Asterisk never saw it, so a retry is safe (and its key is freed).
                ActionError::TimedOut {
                    phase: Phase::Queued,
                    ..
                } => "not_sent",
                ActionError::TimedOut { .. } => "timed_out",
                ActionError::ListOverflow { .. } => "list_overflow",
                ActionError::ListIncomplete { .. } => "list_incomplete",
                ActionError::ResponseDiscarded { .. } => "response_discarded",
                ActionError::NotSent(_) | ActionError::FollowUpMasked { .. } => "not_sent",
                // Cancelled among them: it says nothing of whether its bytes had left (the bridge cancels none of its
                // own; its future is gone when it would): it may have run.
                _ => "unknown",
            };
            let mut reply = Reply::new(Some(server), kind).error(&e.to_string());
            if let Some(r) = e.response() {
                reply = reply.response(r);
            }
            (kind, reply)
        }
        Err(AmiError::Send(
            e @ (SendError::Invalid(_)
            | SendError::ActionIdField
            | SendError::Reserved(_)
            | SendError::UnmatchableAnswer(_)
            | SendError::SyncOriginateRefused
            // Its OriginateResponse could never arrive on this bridge's sessions: the same
            // request would be refused again, so no retry invitation (`not_sent`).
            | SendError::FollowUpMasked { .. }),
        )) => (
            "invalid_request",
            Reply::new(Some(server), "invalid_request").error(&e.to_string()),
        ),
        Err(e) => (
            "not_sent",
            Reply::new(Some(server), "not_sent").error(&e.to_string()),
        ),
    };
    (kind, reply.finish())
}

/// The server's answer in `result`, when there is one (also a refusal's, or a partial list).
fn answer_of(result: &Result<Response, AmiError>) -> Option<&Response> {
    match result {
        Ok(r) => Some(r),
        Err(AmiError::Action(e)) => e.response(),
        _ => None,
    }
}

/// NATS's max payload when a message of `len` bytes is over it (`None` when it fits, or
/// when the max is not known yet, before the first connect: NATS itself refuses then).
fn over_max_payload(control: &Control, len: usize) -> Option<usize> {
    let max = control.nats.server_info().max_payload;
    (max != 0 && len > max).then_some(max)
}

/// The reply to send and its outcome kind: `kind` and `body`, or, when `body` is over
/// NATS's max payload (NATS would refuse to carry it and the requester would wait for it
/// until its own timeout, without a word), `reply_too_large` and a [`too_large_reply`] in
/// its place, the loss of the whole reply counted and logged like any lost reply.
fn within_max_payload(
    control: &Control,
    server: &str,
    kind: &'static str,
    result: &Result<Response, AmiError>,
    body: String,
) -> (&'static str, String) {
    let Some(max) = over_max_payload(control, body.len()) else {
        return (kind, body);
    };
    control.metrics.reply_lost(ReplyLoss::TooLarge);
    let why = format_args!(
        "the answer to an action on {server} ({} bytes) is over NATS's max payload ({max} bytes); the requester got reply_too_large in its place",
        body.len()
    );
    if let Some(line) = control
        .lock_reply_log()
        .lost(ReplyLoss::TooLarge, &why, Instant::now())
    {
        log::warn!("{line}");
    }
    let reply = too_large_reply(server, kind, answer_of(result), body.len(), max);
    ("reply_too_large", reply)
}

/// The reply that stands for one of `size` bytes over NATS's max payload `max`: outcome
/// `reply_too_large` (never the action's own outcome: a list without its items is no
/// success), the outcome the action had in `answer_outcome` (it ran: a retry runs it
/// again), how many list items were left out, and the server's response and list end when
/// those fit.
fn too_large_reply(
    server: &str,
    kind: &str,
    answer: Option<&Response>,
    size: usize,
    max: usize,
) -> String {
    let items = answer.map_or(0, |r| r.items().len());
    let why = format!(
        "the action's answer ({size} bytes as JSON, {items} list items) is over NATS's max payload ({max} bytes): it ran ({kind}) but cannot be carried back; ask for less (a narrower list action) or raise max_payload"
    );
    let head = || {
        Reply::new(Some(server), "reply_too_large")
            .raw("answer_outcome", &format!("\"{kind}\""))
            .raw("items_left_out", &items.to_string())
            .error(&why)
    };
    let with_answer = match answer {
        Some(r) => head()
            .message("response", Some(r.message()))
            .message("complete", r.complete())
            .finish(),
        None => head().finish(),
    };
    if with_answer.len() <= max {
        with_answer
    } else {
        head().finish()
    }
}

/// What is left to do for a request once its requester was answered: the idempotency
/// store's part, when it could not be done before the reply (NATS slow).
#[derive(Debug)]
#[must_use]
pub(crate) enum After {
    /// Nothing.
    Nothing,
    /// Free the key's claim: the request was answered `not_sent`.
    Free(Claim),
    /// Store the reply in place of the key's claim: the action ran, or may have.
    Store(Claim, Bytes),
}

impl After {
    /// Does it, trying a few times over some seconds (see [`Keys::free`], [`Keys::store`]).
    pub(crate) async fn run(self, keys: &Keys) {
        match self {
            After::Nothing => {}
            After::Free(claim) => keys.free(claim).await,
            After::Store(claim, reply) => keys.store(claim, reply).await,
        }
    }

    /// The bytes it holds while it waits on NATS (the reply to store).
    pub(crate) fn held_bytes(&self) -> usize {
        match self {
            After::Store(_, reply) => reply.len(),
            After::Nothing | After::Free(_) => 0,
        }
    }

    /// The idempotency key it is about, if any.
    pub(crate) fn key(&self) -> Option<&str> {
        match self {
            After::Nothing => None,
            After::Free(c) | After::Store(c, _) => Some(&c.key),
        }
    }
}

/// Whether a request's action may have left this bridge: marked right before it is written
/// to Asterisk, or passed on to another bridge. A stop that gives up on a request before
/// its reply went out reads it to answer truthfully: `not_sent` while it is not marked
/// (nothing left the bridge; its key holds at most a claiming value, which a retry on any
/// bridge takes over, or, the residual case of the `idempotency` module, a running value
/// of a confirm in flight or being found out), `unknown` once it is (it may have run).
/// It also keeps the answer mark the action is sent with, so that a stop that answers the
/// request itself tells the late answers' bookkeeping ([`crate::late`]) what the key holds.
#[derive(Debug, Default)]
pub(crate) struct Sending {
    begun: AtomicBool,
    /// The late-answer mark (0: none yet).
    mark: AtomicU64,
}

impl Sending {
    /// From here on the action may reach Asterisk.
    fn begin(&self) {
        // Read by the same task (the stop's give-up branch of its `select!`): no ordering
        // with other memory is needed.
        self.begun.store(true, Ordering::Relaxed);
    }

    /// Whether the action may have reached Asterisk.
    pub(crate) fn begun(&self) -> bool {
        self.begun.load(Ordering::Relaxed)
    }

    /// The action is sent with late-answer mark `mark`.
    fn marked(&self, mark: u64) {
        self.mark.store(mark, Ordering::Relaxed);
    }

    /// The late-answer mark the action was sent with, if it got that far.
    pub(crate) fn mark(&self) -> Option<u64> {
        Some(self.mark.load(Ordering::Relaxed)).filter(|m| *m != 0)
    }
}

/// Answers one request message, received at `received`. `to`: the server of the subject,
/// `None` for `ami.any.action`. `sending` is marked once the action may reach Asterisk.
/// Returns what is left to do after the reply.
pub(crate) async fn handle(
    control: Arc<Control>,
    to: Option<ServerIx>,
    msg: async_nats::Message,
    received: Instant,
    sending: &Sending,
) -> After {
    let Some(reply_to) = msg.reply.clone() else {
        without_reply(&control, to);
        return After::Nothing;
    };
    // Only the body goes on (and only until it is parsed, see `answer`): the rest of the
    // message (its NATS headers, up to the max payload) is let go before the action runs.
    let (limits, payload) = {
        let msg = msg;
        (forwarded(&msg, epoch_ms()), msg.payload)
    };
    answer_and_reply(&control, to, reply_to, payload, received, limits, sending).await
}

/// [`handle`] once the request message is taken apart: its reply subject, its body and
/// the limits a forwarding bridge put on its time.
async fn answer_and_reply(
    control: &Control,
    to: Option<ServerIx>,
    reply_to: async_nats::Subject,
    payload: Bytes,
    received: Instant,
    limits: Forwarded,
    sending: &Sending,
) -> After {
    let (server, kind, body, after) = answer(control, to, payload, received, limits, sending).await;
    control
        .metrics
        .action(server.as_deref().unwrap_or(""), kind);
    send_reply(control, reply_to, Bytes::from(body)).await;
    after
}

/// A request without a reply subject (published, not sent as a request: a client bug, or a
/// fire-and-forget that cannot be told its outcome): not run, counted as `not_sent` in
/// `ami_bridge_actions_total` and as a lost reply (`no_reply_subject`), and logged
/// rate-limited like every lost reply.
pub(crate) fn without_reply(control: &Control, to: Option<ServerIx>) {
    let server = to
        .and_then(|ix| control.servers.get(ix))
        .map(|s| s.name.as_str());
    control.metrics.action(server.unwrap_or(""), "not_sent");
    control.metrics.reply_lost(ReplyLoss::NoReplySubject);
    let why = format_args!(
        "an action request on {} has no reply subject (published, not requested): not run",
        server.map_or("ami.any.action", |s| s)
    );
    let line = control
        .lock_reply_log()
        .lost(ReplyLoss::NoReplySubject, &why, Instant::now());
    if let Some(line) = line {
        log::warn!("{line}");
    }
}

/// Why a reply did not reach its requester (the `reason` of the lost-replies counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyLoss {
    /// The reply is over NATS's max payload (a long list, a large response).
    TooLarge,
    /// The requester's reply subject is one NATS does not accept.
    InvalidSubject,
    /// Anything else (the connection to NATS is gone).
    Other,
    /// The request had no reply subject: nobody to answer (it was not run).
    NoReplySubject,
}

impl ReplyLoss {
    /// Every reason, in the order of [`ReplyLoss::index`].
    pub(crate) const ALL: [ReplyLoss; 4] = [
        ReplyLoss::TooLarge,
        ReplyLoss::InvalidSubject,
        ReplyLoss::Other,
        ReplyLoss::NoReplySubject,
    ];

    /// Its place in [`ReplyLoss::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The `reason` label of the counter.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ReplyLoss::TooLarge => "too_large",
            ReplyLoss::InvalidSubject => "invalid_subject",
            ReplyLoss::Other => "other",
            ReplyLoss::NoReplySubject => "no_reply_subject",
        }
    }

    fn of(kind: async_nats::client::PublishErrorKind) -> ReplyLoss {
        match kind {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded => ReplyLoss::TooLarge,
            async_nats::client::PublishErrorKind::InvalidSubject => ReplyLoss::InvalidSubject,
            _ => ReplyLoss::Other,
        }
    }
}

/// The log lines of lost replies, rate-limited per [`ReplyLoss`]: the first of a reason at
/// once, then at most one line per interval with how many were not logged since. The
/// summary of a flood that stopped is written by the bridge's periodic tick once its
/// interval has passed ([`due`](Self::due)) and by its shutdown ([`pending`](Self::pending)),
/// so it never waits for a next loss that may not come. The clock is the caller's. Requests
/// forwarded to this bridge that arrived past their deadline are logged the same way (a
/// stalled forwarder, or a clock skewed past the requests' timeouts, sends them by the
/// thousand).
#[derive(Debug, Default)]
pub(crate) struct ReplyLossLog {
    throttle: LogThrottle<{ ReplyLoss::ALL.len() }>,
    expired: LogThrottle<1>,
    /// Requests refused because `max_actions_in_flight` run already: each is answered
    /// `not_sent`, but none is run, and a flood of them is what an operator must hear of.
    busy: LogThrottle<1>,
}

impl ReplyLossLog {
    /// A log of lost replies with at most one line per reason per `interval`.
    #[cfg(test)]
    fn new(interval: Duration) -> Self {
        ReplyLossLog {
            throttle: LogThrottle::new(interval),
            expired: LogThrottle::new(interval),
            busy: LogThrottle::new(interval),
        }
    }

    /// A forwarded request refused at `now` for arriving past its deadline (`line` says
    /// so): the line to log now, if any.
    pub(crate) fn expired(&mut self, line: &dyn std::fmt::Display, now: Instant) -> Option<String> {
        let quiet = self.expired.note(0, now)?;
        let rest = crate::throttle::unlogged(quiet, "actions_expired");
        Some(format!("{line}{rest}"))
    }

    /// A request refused at `now` because `max` run already: the line to log now, if any.
    pub(crate) fn busy(&mut self, max: usize, now: Instant) -> Option<String> {
        let quiet = self.busy.note(0, now)?;
        let rest = crate::throttle::more_since(quiet);
        Some(format!(
            "action request refused (answered not_sent, not run): {max} actions in flight already (max_actions_in_flight){rest}"
        ))
    }

    /// A reply lost for `why` (NATS said `error`) at `now`: the line to log now, if any.
    pub(crate) fn lost(
        &mut self,
        why: ReplyLoss,
        error: &dyn std::fmt::Display,
        now: Instant,
    ) -> Option<String> {
        let quiet = self.throttle.note(why.index(), now)?;
        let rest = crate::throttle::unlogged(quiet, "action_replies_lost");
        Some(format!("action reply not sent: {error}{rest}"))
    }

    /// The summary lines due at `now`: the reasons whose losses were only counted and whose
    /// interval since their last line has passed.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<String> {
        let mut lines = Self::summaries(self.throttle.overdue(now));
        lines.extend(Self::expired_summary(self.expired.overdue(now)));
        lines.extend(Self::busy_summary(self.busy.overdue(now)));
        lines
    }

    /// Every summary line still owed, due or not: for the bridge's end, after which no
    /// later line could carry the counts.
    pub(crate) fn pending(&mut self) -> Vec<String> {
        let mut lines = Self::summaries(self.throttle.take_all());
        lines.extend(Self::expired_summary(self.expired.take_all()));
        lines.extend(Self::busy_summary(self.busy.take_all()));
        lines
    }

    fn expired_summary(counts: Vec<(usize, u64)>) -> Vec<String> {
        counts
            .into_iter()
            .map(|(_, n)| format!("{n} more forwarded action requests refused for arriving past their deadline since the last such line (counted in actions_expired, not logged)"))
            .collect()
    }

    fn busy_summary(counts: Vec<(usize, u64)>) -> Vec<String> {
        counts
            .into_iter()
            .map(|(_, n)| format!("{n} more action requests refused (answered not_sent, not run) with too many actions in flight since the last such line (counted in actions as not_sent, not logged)"))
            .collect()
    }

    fn summaries(counts: Vec<(usize, u64)>) -> Vec<String> {
        counts
            .into_iter()
            .map(|(i, n)| {
                let reason = ReplyLoss::ALL.get(i).map_or("?", |r| r.label());
                format!("{n} more action replies not sent ({reason}) since the last such line (counted in action_replies_lost, not logged)")
            })
            .collect()
    }
}

/// Publishes a reply to the requester (who then times out if it cannot be sent). A lost
/// reply is counted by reason, and logged rate-limited: requests with huge answers or bad
/// reply subjects may come by the thousand, and a line each would flood the log.
async fn send_reply(control: &Control, reply_to: async_nats::Subject, body: Bytes) {
    let Err(e) = control.nats.publish(reply_to, body).await else {
        return;
    };
    let why = ReplyLoss::of(e.kind());
    control.metrics.reply_lost(why);
    let line = control.lock_reply_log().lost(why, &e, Instant::now());
    if let Some(line) = line {
        log::warn!("{line}");
    }
}

/// Answers a request with `kind` and `why` without running it, and counts it.
pub(crate) async fn answer_unrun(
    control: &Control,
    server: Option<&str>,
    kind: &'static str,
    why: &str,
    reply_to: async_nats::Subject,
) {
    control.metrics.action(server.unwrap_or(""), kind);
    let body = Reply::new(server, kind).error(why).finish();
    send_reply(control, reply_to, Bytes::from(body)).await;
}

/// Answers a request `not_sent` without looking at it (nothing reaches Asterisk, so the
/// requester may retry): used when this bridge cannot take it, e.g. a request delivered to
/// a subscription the bridge is leaving.
pub(crate) async fn refuse(
    control: &Control,
    server: Option<&str>,
    why: &str,
    msg: &async_nats::Message,
) {
    let Some(reply_to) = msg.reply.clone() else {
        // `serve_actions` takes these out before they get here; counted and logged alike.
        control.metrics.action(server.unwrap_or(""), "not_sent");
        control.metrics.reply_lost(ReplyLoss::NoReplySubject);
        let line = control
            .lock_reply_log()
            .lost(ReplyLoss::NoReplySubject, &why, Instant::now());
        if let Some(line) = line {
            log::warn!("{line}");
        }
        return;
    };
    answer_unrun(control, server, "not_sent", why, reply_to).await;
}

/// A request that reached a bridge not serving its server (`to`), or serving none or none
/// ready (`ami.any.action`, `to` is `None`): passed on to the bridge holding that server's
/// lease (any other lease for `ami.any.action`) on that process's own subject (see
/// `Control::direct_subject`: the bridge ID and instance token of the lease value),
/// whose reply goes back to the requester as it is. Holders that are gone (no responders)
/// are skipped; a forwarded request without an answer in time is `unknown` (it may have
/// run); no holder at all, or no time left of its deadline, is `not_sent`. `sending` is
/// marked once the request is passed on (the holder may run it), or by [`handle`] when it
/// is answered here.
pub(crate) async fn forward(
    control: Arc<Control>,
    to: Option<ServerIx>,
    msg: async_nats::Message,
    received: Instant,
    sending: &Sending,
) -> After {
    let Some(reply_to) = msg.reply.clone() else {
        without_reply(&control, to);
        return After::Nothing;
    };
    let named = to
        .and_then(|ix| control.servers.get(ix))
        .map(|s| s.name.clone());
    let req = match ActionRequest::parse(&msg.payload) {
        Ok(r) => r,
        // Refused here as anywhere.
        Err(_) => return handle(control, to, msg, received, sending).await,
    };
    let limits = forwarded(&msg, epoch_ms());
    // The requester's body and NATS headers are its to size (up to the max payload each),
    // and the holder may take the action's whole time to answer: what is passed on, and
    // held meanwhile, is the request re-encoded, bounded by the action's limits.
    drop(msg);
    let body = Bytes::from(req.to_body());
    let budget = req.timeout.unwrap_or(control.action_timeout);
    let deadline = deadline_of(received, budget, limits.cap);
    let mut holders = match lease_holders(&control, to).await {
        Ok(h) => h,
        Err(e) => {
            let why = format!("this bridge does not serve it and cannot read the leases: {e}; nothing was sent: retry");
            answer_unrun(&control, named.as_deref(), "not_sent", &why, reply_to).await;
            return After::Nothing;
        }
    };
    // Spread the forwarded requests over the holders.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if !holders.is_empty() {
        let n = holders.len();
        holders.rotate_left(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n);
    }
    for holder in holders {
        // The holder gets what is left of the deadline (the lease look-ups took some),
        // and the wait here adds room for its idempotency store and the reply.
        let left = left_until(deadline, budget);
        if left.is_zero() {
            let why = format!("the request's deadline ({budget:?}) passed before it could be forwarded to the bridge serving it; nothing was sent");
            answer_unrun(&control, named.as_deref(), "not_sent", &why, reply_to).await;
            return After::Nothing;
        }
        let wait = left.saturating_add(Duration::from_secs(2));
        let subject = holder.subject();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(REMAINING_MS, left.as_millis().to_string());
        // The same deadline on this host's clock: the holder refuses the request if it
        // arrives past it (this bridge's connection to NATS stalled on the way), where the
        // relative time alone would give it all of `left` again from its arrival.
        headers.insert(
            DEADLINE_MS,
            epoch_ms().saturating_add(left.as_millis()).to_string(),
        );
        if let Some(spec) = to.and_then(|ix| control.servers.get(ix)) {
            headers.insert(crate::bridge::FORWARDED_FOR, spec.token());
        }
        let request = async_nats::Request::new()
            .payload(body.clone())
            .headers(headers)
            .timeout(Some(wait));
        // The holder may run it from here on (even when its answer is lost).
        sending.begin();
        match control.nats.send_request(subject, request).await {
            Ok(answer) => {
                send_reply(&control, reply_to, answer.payload).await;
                return After::Nothing;
            }
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => continue,
            Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
                let why = format!(
                    "forwarded to bridge {holder}, which did not answer within {wait:?}: it may have run"
                );
                answer_unrun(&control, named.as_deref(), "unknown", &why, reply_to).await;
                return After::Nothing;
            }
            Err(e) => {
                let why =
                    format!("forwarding to bridge {holder} failed: {e}; nothing was sent: retry");
                answer_unrun(&control, named.as_deref(), "not_sent", &why, reply_to).await;
                return After::Nothing;
            }
        }
    }
    if to.is_none() && control.serves_any() {
        // No other bridge to take it: answered here, with why none of this bridge's
        // servers can take it.
        return answer_and_reply(&control, to, reply_to, body, received, limits, sending).await;
    }
    let why = match &named {
        Some(_) => "no bridge serves this server now; nothing was sent: retry",
        None => "no bridge serves a server now; nothing was sent: retry",
    };
    answer_unrun(&control, named.as_deref(), "not_sent", why, reply_to).await;
    After::Nothing
}

/// A bridge process holding a lease, as its value names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    bridge: String,
    /// `None` when the value has no instance token (a bridge from before it).
    instance: Option<String>,
}

impl Holder {
    /// The subject the process answers forwarded requests on.
    fn subject(&self) -> String {
        Control::direct_subject(&self.bridge, self.instance.as_deref())
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.instance {
            Some(instance) => write!(f, "{} (instance {instance})", self.bridge),
            None => write!(f, "{}", self.bridge),
        }
    }
}

/// Processes other than this one holding the lease of `to` (of any server in the bucket
/// when `None`), from the lease bucket. Another process started under this bridge's ID is another
/// holder: only the bridge ID and the instance together name this process (a value without
/// an instance is never this process's).
async fn lease_holders(control: &Control, to: Option<ServerIx>) -> Result<Vec<Holder>, String> {
    let key_of = |ix: ServerIx| control.servers.get(ix).map(|spec| spec.token().to_string());
    // From the lease loop's watch when it is current: no bucket listing per request.
    let seen = {
        let view = crate::lease::lock_view(&control.lease_view);
        match to {
            Some(ix) => key_of(ix).and_then(|key| {
                let value = view.value(&key)?;
                Some(value.map(|v| (key, v)).into_iter().collect::<Vec<_>>())
            }),
            None => view.all(),
        }
    };
    if let Some(values) = seen {
        return Ok(holders_in(control, values));
    }
    let keys: Vec<String> = match to {
        Some(ix) => key_of(ix).into_iter().collect(),
        // Any server: every lease in the bucket, also those of servers this bridge is not
        // configured with (another bridge's ready server can take `ami.any.action`).
        None => tokio::time::timeout(Duration::from_secs(2), async {
            let keys = control.leases.keys().await.map_err(|e| e.to_string())?;
            futures_util::TryStreamExt::try_collect::<Vec<String>>(keys)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| "timed out".to_string())??,
    };
    let mut values = Vec::new();
    for key in keys {
        let v = tokio::time::timeout(Duration::from_secs(2), control.leases.get(key.as_str()))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        values.extend(v.map(|v| (key, v)));
    }
    Ok(holders_in(control, values))
}

/// The processes other than this one that `values` (lease keys and values) say hold a
/// lease, each once.
fn holders_in(control: &Control, values: Vec<(String, Bytes)>) -> Vec<Holder> {
    let mut holders: Vec<Holder> = Vec::new();
    for (_, v) in values {
        if let Some(lease) = crate::lease::LeaseValue::parse(&v) {
            let me = lease.bridge == control.bridge_id
                && lease.instance == Some(control.instance.as_str());
            let who = Holder {
                bridge: lease.bridge.to_string(),
                instance: lease.instance.map(str::to_string),
            };
            if lease.held && !me && !holders.contains(&who) {
                holders.push(who);
            }
        }
    }
    holders
}

/// The reply to a request received at `received` (its time limited by the bridge that
/// forwarded it, see [`Forwarded`]): server, outcome kind, body, and what is left to do
/// once the requester is answered. `sending` is marked right before the action is sent.
async fn answer(
    control: &Control,
    to: Option<ServerIx>,
    payload: Bytes,
    received: Instant,
    limits: Forwarded,
    sending: &Sending,
) -> (Option<String>, &'static str, String, After) {
    let name_of = |ix: ServerIx| control.servers.get(ix).map(|s| s.name.clone());
    let named = to.and_then(name_of);
    let parsed = ActionRequest::parse(&payload);
    // The body is the requester's to size (up to NATS's max payload, padding and all);
    // the action parsed from it is bounded by Asterisk's limits. Held for as long as the
    // action runs, the bodies of `max_actions_in_flight` requests would be that many
    // max payloads; let go now, a pending request holds its action alone.
    drop(payload);
    let req = match parsed {
        Ok(r) => r,
        Err(e) => {
            let body = Reply::new(named.as_deref(), "invalid_request")
                .error(&e.to_string())
                .finish();
            return (named, "invalid_request", body, After::Nothing);
        }
    };
    // The requester's time counts from when the request arrived: what the idempotency
    // store takes is not given again to the action.
    let budget = req.timeout.unwrap_or(control.action_timeout);
    let deadline = deadline_of(received, budget, limits.cap);
    if let Some(late) = limits.late_by {
        // Forwarded, and arrived past its deadline: its requester has been answered, or
        // has given up. Nothing is claimed, nothing sent.
        control.metrics.actions_expired.inc();
        let why = format!(
            "forwarded by another bridge, it arrived {late:?} past its deadline (on this host's clock); nothing was sent"
        );
        let line = control.lock_reply_log().expired(
            &format_args!("action request refused: {why}"),
            Instant::now(),
        );
        if let Some(line) = line {
            log::warn!("{line}");
        }
        let body = Reply::new(named.as_deref(), "not_sent")
            .error(&why)
            .finish();
        return (named, "not_sent", body, After::Nothing);
    }
    if let Err(e) = control.upstream.check(to) {
        let body = Reply::new(named.as_deref(), "not_sent")
            .error(&e.to_string())
            .finish();
        return (named, "not_sent", body, After::Nothing);
    }
    let past_deadline = || {
        Reply::new(named.as_deref(), "not_sent")
            .error(&format!(
                "the request's deadline ({budget:?}) passed before the action could be sent; nothing was sent"
            ))
            .finish()
    };
    let mut claim = None;
    if let Some(key) = &req.idempotency_key {
        match hold(control, key, deadline).await {
            Ok(c) => claim = Some(c),
            Err(Unheld::Taken(value)) => {
                return (
                    named.clone(),
                    "duplicate",
                    duplicate(control, named.as_deref(), Some(value)),
                    After::Nothing,
                );
            }
            Err(Unheld::Late(after)) => return (named.clone(), "not_sent", past_deadline(), after),
            Err(Unheld::Failed(e, after)) => {
                let body = Reply::new(named.as_deref(), "not_sent")
                    .error(&format!(
                        "idempotency store unavailable: {e}; nothing was sent: retry"
                    ))
                    .finish();
                return (named, "not_sent", body, after);
            }
        }
    }
    // Counted again: the confirm took some of it.
    let left = left_until(deadline, budget);
    if left.is_zero() {
        let after = release(control, claim).await;
        return (named.clone(), "not_sent", past_deadline(), after);
    }
    // Kept, by the mark the action is sent with, for the server's answer should it come
    // after the request ended without it (see the `late` module): while it runs, and
    // for the core's grace period after (the server's `action_timeout`).
    let now = Instant::now();
    let mark = control.late.register(
        req.idempotency_key.as_deref(),
        now,
        later(now, left.saturating_add(late_grace(control, to))),
    );
    sending.marked(mark);
    let options = SendOptions::timeout(left).with_answer_mark(mark);
    // Terms past their renewal deadline end now, not at the control task's next look:
    // their servers leave the fleet, so `ami.any.action` goes to one still served (the
    // send itself refuses a server found past its deadline, named or picked).
    control.fence_expired();
    sending.begin();
    let send = control.upstream.send(to, req.action, options);
    let sent = match claim.as_mut() {
        // The claim is kept from expiring while the action runs, however long it takes.
        Some(c) => control.keys.hold_while(c, send).await,
        None => send.await,
    };
    let (server, result) = match sent {
        Ok((ix, result)) => {
            let late_possible = matches!(
                &result,
                Err(AmiError::Action(
                    ActionError::TimedOut {
                        phase: Phase::Response,
                        ..
                    } | ActionError::Cancelled
                ))
            );
            let until = later(Instant::now(), late_grace(control, Some(ix)));
            control.late.ended(mark, late_possible, until);
            (name_of(ix).unwrap_or_default(), result)
        }
        Err(e) => {
            control.late.ended(mark, false, Instant::now());
            let after = release(control, claim).await;
            let body = Reply::new(named.as_deref(), "not_sent")
                .error(&e.to_string())
                .finish();
            return (named, "not_sent", body, after);
        }
    };
    let (kind, body) = outcome_reply(&server, &result);
    let (replied, body) = within_max_payload(control, &server, kind, &result, body);
    if claim.is_some() && replied != "timed_out" {
        // Only a timed_out reply at the key is replaced by a late answer (see the `late`
        // module): one read already is published only.
        control.late.not_timed_out(mark);
    }
    let after = match claim {
        None => After::Nothing,
        // The session refused it, or its deadline passed, before writing it (full queue,
        // lost connection, a pipeline that stayed full): the reply invites a retry, which
        // a stored not_sent would answer as a duplicate. Likewise a request the session
        // found invalid (a field of its own `ActionID`, a sync Originate...): nothing was
        // written, and the corrected request its requester sends next under the same key
        // must run, not be answered a duplicate of the refusal for the whole window.
        Some(c) if kind == "not_sent" || kind == "invalid_request" => {
            release(control, Some(c)).await
        }
        Some(mut c) => {
            // Stored before the reply, so a retry that follows it finds it; when NATS does
            // not take it now, tried again after the reply (the key meanwhile still holds
            // the claim: a retry is a duplicate, as it must be, the action ran).
            let stored = Bytes::from(body.clone());
            // A late answer replaces exactly this reply at the key (see the `late` module);
            // one read before this line is stored from here.
            let timed_out = replied == "timed_out";
            if timed_out {
                control.late.timed_out(mark, &server, &stored, None);
            }
            match control.keys.store_once(&mut c, &stored).await {
                Ok(()) => {
                    if timed_out {
                        control.late.timed_out(mark, &server, &stored, c.revision());
                    }
                    After::Nothing
                }
                Err(_) => After::Store(c, stored),
            }
        }
    };
    (Some(server), replied, body, after)
}

/// How long after an action on `to` ended the core still reports its late answer (the
/// server's `action_timeout`; the longest of the servers' for `ami.any.action`), with
/// [`crate::late::MARGIN`].
fn late_grace(control: &Control, to: Option<ServerIx>) -> Duration {
    let grace = |s: &crate::config::ServerSpec| s.client.action_timeout();
    let core = match to.and_then(|ix| control.servers.get(ix)) {
        Some(spec) => grace(spec),
        None => control.servers.iter().map(grace).max().unwrap_or_default(),
    };
    core.saturating_add(crate::late::MARGIN)
}

/// `d` after `now`, at most four years (a `timeout_ms` of u64::MAX is no deadline worth
/// keeping an entry for: the core takes any over a year as a year).
fn later(now: Instant, d: Duration) -> Instant {
    let d = d.min(ami_proto::MAX_SETTING_DURATION.saturating_mul(4));
    // An `Instant` holds centuries past boot: `now` only where it cannot hold four years.
    now.checked_add(d).unwrap_or(now)
}

/// The reply stored at an idempotency key in place of its request's `timed_out` reply
/// once the server's `response` came late: `success` (or `server_error` for `Response:
/// Error`) with `"late":true` and the response, as the request would have been answered
/// had it come in time (an async Originate's follow-up is not awaited: it comes as an
/// event). A retry with the key is answered `duplicate` with it.
pub(crate) fn late_reply(server: &str, response: &Message) -> String {
    let error = response
        .response()
        .is_some_and(|r| r.eq_ignore_ascii_case("Error"));
    let reply = if error {
        let said = response.get_str("Message").unwrap_or("");
        Reply::new(Some(server), "server_error").error(&format!("server error: {said}"))
    } else {
        Reply::new(Some(server), "success")
    };
    reply
        .raw("late", "true")
        .message("response", Some(response))
        .finish()
}

/// The reply to a request whose idempotency key another request holds: with that request's
/// reply as `original` when it finished (and it fits), else saying it is running or ran.
fn duplicate(control: &Control, named: Option<&str>, value: Option<Bytes>) -> String {
    // For `ami.any.action` the server is in the original reply.
    let reply = || Reply::new(named, "duplicate");
    // Spliced in as it is stored, so only a JSON object: anything else (a value put by
    // hand, a stored reply cut short) would make this whole reply unreadable.
    let original = value
        .filter(|v| !crate::idempotency::is_pending(v))
        .and_then(|v| String::from_utf8(v.to_vec()).ok())
        .filter(|v| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(v).is_ok());
    let Some(orig) = original else {
        return reply()
            .error("a request with this idempotency key is running or ran")
            .finish();
    };
    let whole = reply().raw("original", &orig).finish();
    match over_max_payload(control, whole.len()) {
        // The first reply fitted, itself wrapped in this one does not: said, never a
        // silence until the requester gives up.
        Some(max) => reply()
            .error(&format!(
                "a request with this idempotency key ran; its reply ({} bytes) does not fit in this answer under NATS's max payload ({max} bytes)",
                orig.len()
            ))
            .finish(),
        None => whole,
    }
}

/// Why a request with an idempotency key may not send.
enum Unheld {
    /// Another request holds the key: its running value or its stored reply (`duplicate`).
    Taken(Bytes),
    /// The request's deadline passed first (`not_sent`).
    Late(After),
    /// The store did not answer, or failed (`not_sent`).
    Failed(String, After),
}

/// Claims one request's `key` and confirms the claim, within its `deadline`: `Ok` with
/// the claim once it is confirmed (the action may be sent).
///
/// A claim taken over before its confirm ([`Confirmed::TakenOver`]) sent nothing, and the
/// request that took it may send nothing either (its deadline passes, its own confirm
/// fails, a stop gives up on it, its bridge crashes): the request is then exactly a fresh
/// one, and claims the key again, patiently ([`crate::idempotency::CLAIM_PATIENCE`]), a
/// few rounds at most. It is a `duplicate` only when it finds the key holding a running
/// value or a stored reply; rounds or deadline run out with no claim confirmed, it is
/// `not_sent` (nothing of it is in the key).
async fn hold(control: &Control, key: &str, deadline: Option<Instant>) -> Result<Claim, Unheld> {
    let keys = &control.keys;
    // Claiming gets at most CLAIM_MAX_WAIT whatever the request's own deadline (a
    // `timeout_ms` of hours, or too long to be a deadline at all): a confirm whose answer
    // was lost is otherwise looked for as long as NATS stays away, holding one of the
    // bridge's action slots, and the call placed long after anyone expects it.
    let deadline = claim_deadline(deadline, Instant::now());
    for round in 0..CLAIM_ROUNDS {
        // A request with no time left claims nothing (it would take another request's
        // claiming value over for nothing).
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Unheld::Late(After::Nothing));
        }
        let patience = if round == 0 {
            Duration::ZERO
        } else {
            crate::idempotency::CLAIM_PATIENCE
        };
        let mut c = match keys.claim(key, patience, deadline).await {
            Claimed::Held(c) => c,
            Claimed::Taken(value) => return Err(Unheld::Taken(value)),
            // A write of the claim may land later: it is freed once NATS answers, and a
            // retry reaching this bridge before that takes it over (a retry elsewhere
            // takes the claiming value over). No claim: nothing of this request's is known
            // to be in the key, nothing to free.
            Claimed::Late(c) => return Err(Unheld::Late(abandoned(control, c))),
            Claimed::Failed(e, c) => return Err(Unheld::Failed(e, abandoned(control, c))),
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Unheld::Late(release(control, Some(c)).await));
        }
        // Only a confirmed claim sends: until the confirm, another request may take the
        // claiming value over (see the `idempotency` module).
        match keys.confirm(&mut c, deadline).await {
            Confirmed::Running => return Ok(c),
            Confirmed::TakenOver => {
                log::debug!("idempotency key {key}: this request's claim was taken over before its confirm (nothing sent): claimed again");
            }
            // The confirm may land later: freed like a claim whose create got no answer.
            Confirmed::Failed(e) => {
                let after = abandoned(control, Some(c));
                return Err(if deadline.is_some_and(|d| Instant::now() >= d) {
                    Unheld::Late(after)
                } else {
                    Unheld::Failed(e, after)
                });
            }
        }
    }
    Err(Unheld::Failed(
        format!("this request's claim of the key was taken over by other requests with it {CLAIM_ROUNDS} times before it could be confirmed, and none of them is known to have sent"),
        After::Nothing,
    ))
}

/// The deadline of claiming for a request whose own deadline is `deadline`: the earlier of
/// it and [`CLAIM_MAX_WAIT`] from `now`.
fn claim_deadline(deadline: Option<Instant>, now: Instant) -> Option<Instant> {
    match (deadline, now.checked_add(CLAIM_MAX_WAIT)) {
        (Some(d), Some(cap)) => Some(d.min(cap)),
        (d, cap) => d.or(cap),
    }
}

/// A claim a write of which may land after its request is answered `not_sent`: abandoned,
/// to be freed after the reply.
fn abandoned(control: &Control, claim: Option<Claim>) -> After {
    match claim {
        Some(c) => {
            control.keys.abandon(&c);
            After::Free(c)
        }
        None => After::Nothing,
    }
}

/// Frees `claim` after its request was not sent, so a retry with its key runs: at once when
/// NATS answers, else after the reply ([`After::Free`]), the claim meanwhile taken over by
/// a retry reaching this bridge.
async fn release(control: &Control, claim: Option<Claim>) -> After {
    let Some(mut claim) = claim else {
        return After::Nothing;
    };
    match control.keys.free_once(&mut claim).await {
        Ok(()) => After::Nothing,
        Err(_) => {
            control.keys.abandon(&claim);
            After::Free(claim)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lose(log: &mut ReplyLossLog, at: Instant) -> Option<String> {
        log.lost(ReplyLoss::TooLarge, &"maximum payload exceeded", at)
    }

    #[test]
    fn lost_replies_only_counted_are_summed_up_once_the_interval_passes_without_another_loss() {
        let mut log = ReplyLossLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let first = lose(&mut log, t0).expect("the first is logged at once");
        assert_eq!(first, "action reply not sent: maximum payload exceeded");
        for ms in 1..=3 {
            assert_eq!(lose(&mut log, t0 + Duration::from_millis(ms)), None);
        }
        // No loss follows. The bridge's tick asks every 250 ms: nothing before the
        // interval, then one line with the count, then nothing more.
        let mut lines = Vec::new();
        let mut at = t0;
        while at <= t0 + Duration::from_secs(30) {
            let due = log.due(at);
            if !due.is_empty() {
                lines.push((at - t0, due));
            }
            at += Duration::from_millis(250);
        }
        assert_eq!(
            lines,
            [(
                Duration::from_secs(10),
                vec!["3 more action replies not sent (too_large) since the last such line (counted in action_replies_lost, not logged)".to_string()]
            )]
        );
        assert!(log.pending().is_empty(), "nothing left owed");
    }

    #[test]
    fn the_bridges_end_sums_up_lost_replies_whose_interval_has_not_passed() {
        let mut log = ReplyLossLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(lose(&mut log, t0).is_some());
        assert_eq!(lose(&mut log, t0 + Duration::from_secs(1)), None);
        assert_eq!(
            log.lost(
                ReplyLoss::Other,
                &"disconnected",
                t0 + Duration::from_secs(2)
            ),
            Some("action reply not sent: disconnected".to_string())
        );
        assert!(log.due(t0 + Duration::from_secs(3)).is_empty());
        assert_eq!(
            log.pending(),
            ["1 more action replies not sent (too_large) since the last such line (counted in action_replies_lost, not logged)"]
        );
        assert!(log.pending().is_empty());
    }

    #[test]
    fn parses_headers_in_order_with_key_and_timeout() {
        let r = ActionRequest::parse(
            br#"{"headers":[["Action","Originate"],["Channel","Local/100@ami-test"],["Variable","a=1"],["Variable","b=2"]],"idempotency_key":"k-1","timeout_ms":1500}"#,
        )
        .unwrap();
        assert_eq!(r.action.name(), "Originate");
        let vars: Vec<_> = r
            .action
            .fields()
            .filter(|(k, _)| *k == "Variable")
            .collect();
        assert_eq!(vars, vec![("Variable", "a=1"), ("Variable", "b=2")]);
        assert_eq!(r.idempotency_key.as_deref(), Some("k-1"));
        assert_eq!(r.timeout, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn a_request_re_encoded_reads_back_the_same_without_what_its_body_held_besides() {
        let padded = format!(
            r#"{{"extra":"{}","headers":[["Channel","Local/100@ami-test"],["action","Originate"],["Variable","a=1"],["Action","Ping"],["Variable","b=\"2\""]],"timeout_ms":1500,"idempotency_key":"k-1"}}{}"#,
            "x".repeat(10_000),
            " ".repeat(10_000)
        );
        let r = ActionRequest::parse(padded.as_bytes()).unwrap();
        let body = r.to_body();
        assert!(body.len() < 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(ActionRequest::parse(&body), Ok(r));
        let bare = ActionRequest::parse(br#"{"headers":[["Action","Ping"]]}"#).unwrap();
        assert_eq!(bare.to_body(), br#"{"headers":[["Action","Ping"]]}"#);
        let longest = ActionRequest::parse(
            format!(
                r#"{{"headers":[["Action","Ping"]],"timeout_ms":{}}}"#,
                u64::MAX
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(ActionRequest::parse(&longest.to_body()), Ok(longest));
    }

    #[test]
    fn a_request_with_no_room_left_for_the_bridges_action_id_is_refused_before_its_key_is_claimed()
    {
        // `Action` and 127 fields: 128 lines, Asterisk's most; the session adds the
        // ActionID, a 129th, and refuses it. Refused here, before its idempotency key is
        // claimed and the request routed or forwarded.
        let fields = vec![r#"["Variable","a=1"]"#; 127].join(",");
        let body =
            format!(r#"{{"headers":[["Action","Originate"],{fields}],"idempotency_key":"k-128"}}"#);
        assert!(
            matches!(
                ActionRequest::parse(body.as_bytes()),
                Err(RequestError::Invalid(e)) if e.contains("129 lines")
            ),
            "{:?}",
            ActionRequest::parse(body.as_bytes()).map(|r| r.action.fields().len())
        );
        let fits = vec![r#"["Variable","a=1"]"#; 126].join(",");
        let body = format!(r#"{{"headers":[["Action","Originate"],{fits}]}}"#);
        let r = ActionRequest::parse(body.as_bytes()).unwrap();
        let mut out = Vec::new();
        let id = ami_proto::ActionId::new("b1-42").unwrap();
        assert!(r.action.encode(Some(&id), &mut out).is_ok());
    }

    #[test]
    fn malformed_requests_are_refused() {
        for body in [
            &b"not json"[..],
            br#"[1,2]"#,
            br#"{"headers":"Ping"}"#,
            br#"{"headers":[["Action"]]}"#,
            br#"{"headers":[["Channel","x"]]}"#,
            br#"{"headers":[["Action","Logoff"]]}"#,
            br#"{"headers":[["Action","Ping"],["X","a\r\nAction: Originate"]]}"#,
            br#"{"headers":[["Action","Ping"]],"idempotency_key":"a b"}"#,
            br#"{"headers":[["Action","Ping"]],"timeout_ms":-1}"#,
        ] {
            assert!(
                ActionRequest::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_deadline_counts_from_receipt_capped_by_a_forwarder_and_never_overflows() {
        let received = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(deadline_of(received, second, None), Some(received + second));
        assert_eq!(
            deadline_of(received, second, Some(Duration::from_millis(300))),
            Some(received + Duration::from_millis(300))
        );
        assert_eq!(
            deadline_of(received, second, Some(Duration::from_secs(9))),
            Some(received + second)
        );
        // `timeout_ms` is the requester's: the longest is a deadline or none, never a panic.
        let longest = Duration::from_millis(u64::MAX);
        let _ = deadline_of(received, longest, None);
        assert_eq!(deadline_of(received, Duration::MAX, None), None);
        assert_eq!(left_until(None, longest), longest);
        assert_eq!(left_until(Some(received), second), Duration::ZERO);
    }

    #[test]
    fn claiming_takes_at_most_a_minute_whatever_the_requests_deadline() {
        let now = Instant::now();
        let cap = now + CLAIM_MAX_WAIT;
        // A `timeout_ms` of u64::MAX is a deadline on Linux (no overflow): capped all the same.
        let huge = deadline_of(now, Duration::from_millis(u64::MAX), None);
        assert_eq!(claim_deadline(huge, now), Some(cap));
        assert_eq!(claim_deadline(None, now), Some(cap));
        let soon = now + Duration::from_secs(5);
        assert_eq!(claim_deadline(Some(soon), now), Some(soon));
    }

    #[test]
    fn a_forwarded_deadline_caps_the_time_and_one_already_past_is_late() {
        let msg = |headers: &[(&str, &str)]| {
            let mut h = async_nats::HeaderMap::new();
            for (k, v) in headers {
                h.insert(*k, *v);
            }
            async_nats::Message {
                subject: "ami.bridge.b_i.action".into(),
                reply: None,
                payload: Bytes::new(),
                headers: Some(h),
                status: None,
                description: None,
                length: 0,
            }
        };
        let now = 1_000_000u128;
        assert_eq!(forwarded(&msg(&[]), now), Forwarded::default());
        // An older forwarder: the relative time alone.
        let relative = forwarded(&msg(&[(REMAINING_MS, "1500")]), now);
        assert_eq!(relative.cap, Some(Duration::from_millis(1500)));
        assert_eq!(relative.late_by, None);
        // The lesser of the two.
        let both = forwarded(
            &msg(&[(REMAINING_MS, "1500"), (DEADLINE_MS, "1000400")]),
            now,
        );
        assert_eq!(both.cap, Some(Duration::from_millis(400)));
        assert_eq!(both.late_by, None);
        // Arrived after its deadline (a stalled forward): no time, and how late.
        let late = forwarded(
            &msg(&[(REMAINING_MS, "2000"), (DEADLINE_MS, "995000")]),
            now,
        );
        assert_eq!(late.cap, Some(Duration::ZERO));
        assert_eq!(late.late_by, Some(Duration::from_secs(5)));
        // Garbage is ignored, never a panic.
        let odd = forwarded(&msg(&[(REMAINING_MS, "-1"), (DEADLINE_MS, "soon")]), now);
        assert_eq!(odd, Forwarded::default());
    }

    #[test]
    fn an_action_timed_out_before_it_was_written_is_not_sent_and_one_written_is_timed_out() {
        let queued: Result<Response, AmiError> = Err(AmiError::Action(ActionError::TimedOut {
            phase: Phase::Queued,
            partial: None,
        }));
        assert_eq!(outcome_reply("pbx1", &queued).0, "not_sent");
        let written: Result<Response, AmiError> = Err(AmiError::Action(ActionError::TimedOut {
            phase: Phase::Response,
            partial: None,
        }));
        assert_eq!(outcome_reply("pbx1", &written).0, "timed_out");
    }

    #[test]
    fn a_cancelled_action_is_answered_unknown_never_safe_to_retry() {
        // Cancelled says nothing of whether the action's bytes had left (Client::cancel):
        // one already written may have run, so "not_sent" (retry) could run it twice.
        let cancelled: Result<Response, AmiError> = Err(AmiError::Action(ActionError::Cancelled));
        assert_eq!(outcome_reply("pbx1", &cancelled).0, "unknown");
    }

    #[test]
    fn lost_replies_are_told_apart_by_reason_each_in_its_own_place() {
        use async_nats::client::PublishErrorKind;
        assert_eq!(
            ReplyLoss::of(PublishErrorKind::MaxPayloadExceeded),
            ReplyLoss::TooLarge
        );
        assert_eq!(
            ReplyLoss::of(PublishErrorKind::InvalidSubject),
            ReplyLoss::InvalidSubject
        );
        assert_eq!(ReplyLoss::of(PublishErrorKind::Send), ReplyLoss::Other);
        for (i, r) in ReplyLoss::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn a_filter_request_is_refused_it_would_mute_the_stream_every_consumer_reads() {
        for name in ["Filter", "filter", "FILTER"] {
            let body = format!(
                r#"{{"headers":[["Action","{name}"],["Operation","Add"],["Filter","!UserEvent: X"]]}}"#
            );
            assert_eq!(
                ActionRequest::parse(body.as_bytes()),
                Err(RequestError::Reserved(name.to_string()))
            );
        }
    }

    #[test]
    fn an_async_originate_the_event_mask_refuses_is_an_invalid_request_not_a_retry() {
        // `not_sent` invites a retry, which the same mask refuses again, for ever.
        let masked: Result<Response, AmiError> = Err(AmiError::Send(SendError::FollowUpMasked {
            mask: "system".into(),
        }));
        let (kind, body) = outcome_reply("pbx1", &masked);
        assert_eq!(kind, "invalid_request");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["outcome"], "invalid_request");
        assert!(v["error"].as_str().unwrap().contains("event mask `system`"));
    }

    #[test]
    fn a_reply_too_large_keeps_within_the_max_payload_and_says_what_the_action_had() {
        // No answer to keep (a timeout's), or a max too small even for the server's
        // first message: the reply is the outcome and the reason alone, still parseable.
        let body = too_large_reply("pbx1", "timed_out", None, 2_000_000, 1 << 20);
        assert!(body.len() <= 1 << 20);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["outcome"], "reply_too_large");
        assert_eq!(v["answer_outcome"], "timed_out");
        assert_eq!(v["items_left_out"], 0);
        assert!(v.get("response").is_none());
        let error = v["error"].as_str().unwrap();
        assert!(error.contains("2000000 bytes") && error.contains("(1048576 bytes)"));
    }

    #[test]
    fn a_late_answer_is_stored_as_the_outcome_it_would_have_had_marked_late() {
        use ami_proto::{Decoder, DecoderLimits, Frame};
        let read = |wire: &str| {
            let mut d = Decoder::without_banner(DecoderLimits::default());
            d.feed(wire.as_bytes());
            match d.decode() {
                Some(Ok(Frame::Message(m))) => m,
                other => panic!("{other:?}"),
            }
        };
        let ok =
            read("Response: Success\r\nActionID: b1-1\r\nMessage: Redirect successful\r\n\r\n");
        let v: serde_json::Value = serde_json::from_str(&late_reply("pbx1", &ok)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"outcome","server":"pbx1","outcome":"success","late":true,
                "response":[["Response","Success"],["ActionID","b1-1"],["Message","Redirect successful"]]})
        );
        let refused = read("Response: Error\r\nActionID: b1-2\r\nMessage: No such channel\r\n\r\n");
        let v: serde_json::Value = serde_json::from_str(&late_reply("pbx1", &refused)).unwrap();
        assert_eq!(v["outcome"], "server_error");
        assert_eq!(v["late"], true);
        assert_eq!(v["error"], "server error: No such channel");
        assert_eq!(v["response"][0], serde_json::json!(["Response", "Error"]));
    }

    #[test]
    fn reply_names_the_outcome_kind() {
        let r: Result<Response, AmiError> = Err(AmiError::Action(ActionError::NotSent(
            ami_proto::DisconnectReason::Eof,
        )));
        let (kind, body) = outcome_reply("pbx1", &r);
        assert_eq!(kind, "not_sent");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["outcome"], "not_sent");
        assert_eq!(v["server"], "pbx1");
    }
}
