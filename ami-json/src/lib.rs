//! # ami-json: the JSON of AMI messages
//!
//! One schema, written by one encoder, for every place an AMI message leaves as JSON: the
//! lines of `ami listen` (and `ami action`, `ami decode`) and the bodies `ami bridge`
//! publishes on NATS. Strict JSON, one object per message, on one line:
//!
//! ```
//! use ami_proto::{Decoder, DecoderLimits, Frame};
//!
//! let mut d = Decoder::without_banner(DecoderLimits::default());
//! d.feed(b"Event: Newchannel\r\nCallerIDName: Alice\r\n\r\n");
//! let Some(Ok(Frame::Message(m))) = d.decode() else { unreachable!() };
//! assert_eq!(
//!     ami_json::message(&m),
//!     r#"{"type":"event","headers":[["Event","Newchannel"],["CallerIDName","Alice"]]}"#
//! );
//! ```
//!
//! ## Messages
//!
//! `{"type":K,"headers":[[key,value],...]}`: `K` is `event`, `response`, `action` or
//! `other`; `headers` keeps wire order and repeated keys, each header a two-element array.
//! Where the message comes from is added before `headers`:
//!
//! - `ami listen` over several servers: `"server":NAME` first ([`with_server`]);
//! - `ami bridge`: `"server"`, `"session"` and `"position"` ([`Place`], [`message_at`]).
//!
//! The value of an action's secret header (`Secret`, the MD5 `Key`, in any case) is `"***"`,
//! never the secret ([`push_headers`] says why only actions). An action is a message with
//! an `Action` header, first or further down, whatever its type (Asterisk reads it wherever
//! it is).
//!
//! Siblings that write other objects with this crate's escaping ([`to_string`]) and document
//! their own shapes: `ami decode --typed` (typed events, ami-types' `serde`), `ami calls`
//! (`calls`, `call`, `stale`, `resynced`, `call_ended`) and the replies to the bridge's
//! action requests (`{"type":"outcome",...}`, ami-nats' `actions` module), whose
//! `response`, `items`, `complete` and `follow_up` are [`push_headers`] lists.
//!
//! ## Bytes that are not UTF-8
//!
//! A key or value that is valid UTF-8 is a JSON string. One that is not (a caller name in
//! Latin-1, say) is an object instead, so nothing is lost and nothing is guessed:
//!
//! ```text
//! ["CallerIDName",{"base64":"Sm9z6Q==","lossy":"Jos\ufffd"}]
//! ```
//!
//! `base64` holds the exact bytes (standard alphabet, padded); `lossy` is the same text with
//! each invalid sequence replaced by U+FFFD, for display only. Readers: jq
//! `if type == "object" then .base64 | @base64d else . end` (jq's decoder yields text);
//! Python `base64.b64decode(v["base64"]) if isinstance(v, dict) else v.encode()`.
//!
//! ## Session markers
//!
//! `{"type":"session","state":S,...}` where the stream of one server changes session
//! ([`session`]; states in [`SessionState`]):
//!
//! | state | where | extra fields |
//! |---|---|---|
//! | `ready` | a session is up (logged in): the events after it are from it | `ami_version` |
//! | `lost` | the session was lost: what the server sent until the next `ready` is missed | `reason` |
//! | `lease_acquired` | (bridge) this bridge took the server's lease: its first item | `bridge`, `previous_bridge` if taken over |
//! | `lease_released` | (bridge) this bridge gave the server up cleanly: its last item | `bridge`, `reason`: `shutdown`, or why it could not use the server (`login_rejected`, `breaker_open`) |
//!
//! The bridge adds `"bridge"` to `ready` and `lost` too.
//!
//! ## Gaps
//!
//! `{"type":"gap",...,"reason":R,"dropped":N|null}` ([`gap`], reasons in [`GapReason`]):
//!
//! | reason | where | `dropped` |
//! |---|---|---|
//! | `overflow` | a bounded queue dropped events (`ami listen`: the client's or stdout's; the bridge: its backlog) | exactly `N` |
//! | `discarded` | the client threw away server input that may have been events (over a decoder limit, malformed) | `N` discards |
//! | `disconnected` | (bridge) the session was lost; `ami listen` says so with its `lost` marker alone | `null` (unknown) |
//! | `takeover` | (bridge) another bridge held the server before | `null` (unknown) |
//!
//! `ami listen` writes them without a place (`"server"` first with several servers, as its
//! other lines); the bridge with its [`Place`].
//!
//! ## Late answers
//!
//! `{"type":"late_answer",<place>,"action_id":ID,"idempotency_key":K|null,"response":[...]}`
//! ([`late_answer`]): (bridge) the server's answer to an action request that had ended
//! without it (answered `timed_out`, or `unknown` by a stop that gave up on it), what the
//! server actually did. `action_id` is the ActionID the bridge sent it with, `response` the
//! server's `Response:` message as a [`push_headers`] list, `idempotency_key` the request's
//! key, `null` when it had none or the bridge no longer knows the request (it forgot it at
//! its cap or after the grace period).
//!
//! ## How it is written
//!
//! Every string (key, value, server name, reason) is escaped by `serde_json`'s own string
//! serializer, so the escaping is the same strict JSON that serde_json parses back; only the
//! fixed object skeleton around the strings is written here. Through [`TerminalSafe`], what a
//! terminal would obey (C0, DEL, C1, bidirectional overrides) and U+2028/U+2029 (line ends
//! to some line splitters) are `\uXXXX` escapes: a line holds no control character and ends
//! only at its `\n`. Writing straight into one byte buffer keeps it at one allocation per
//! message (the bridge publishes ~100 k of them a second).
#![forbid(unsafe_code)]

use ami_proto::{Message, MessageKind};
use std::io::Write;

/// Appends `s` as a JSON string (escaped by serde_json, through [`TerminalSafe`]).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    use serde::Serialize;
    // Writing to a Vec cannot fail, and a &str always serializes.
    let _ = s.serialize(&mut serde_json::Serializer::with_formatter(
        &mut *out,
        TerminalSafe,
    ));
}

/// serde_json's compact format, with every character a terminal would obey escaped as
/// `\uXXXX` inside strings: DEL, the C1 controls and the bidirectional overrides
/// ([`ami_proto::obeyed_by_terminals`]; serde_json escapes C0 itself) are valid in a JSON
/// string, and a `CallerIDName` a remote caller chose would otherwise reach the screen of
/// whoever reads the lines (`ami listen` on a terminal, `jq` output) and reorder or recolour
/// it. U+2028 and U+2029 are escaped too: valid in JSON, but Python's `str.splitlines()`,
/// JavaScript before ES2019 and log viewers end a line at them, and a consumer of one object
/// per line would get half an object. The parsed value is the same. For any `Serialize`
/// through `serde_json::Serializer::with_formatter(writer, TerminalSafe)`, or [`to_string`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TerminalSafe;

impl serde_json::ser::Formatter for TerminalSafe {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> std::io::Result<()>
    where
        W: ?Sized + std::io::Write,
    {
        // Only bytes from 0x7F up can start one: ASCII fragments, most of them, go as they are.
        if fragment.bytes().all(|b| b < 0x7f) {
            return writer.write_all(fragment.as_bytes());
        }
        let mut run = 0;
        for (i, c) in fragment.char_indices() {
            if ami_proto::obeyed_by_terminals(c) || matches!(c, '\u{2028}' | '\u{2029}') {
                writer.write_all(&fragment.as_bytes()[run..i])?;
                write!(writer, "\\u{:04x}", c as u32)?;
                run = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[run..])
    }
}

/// `value` as one line of compact JSON, written through [`TerminalSafe`].
pub fn to_string<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::new();
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out,
        TerminalSafe,
    ))?;
    Ok(into_string(out))
}

/// Appends `bytes` as JSON: a string when they are UTF-8, else
/// `{"base64":<exact bytes>,"lossy":<text with U+FFFD>}` (see the crate docs).
pub fn push_text(out: &mut Vec<u8>, bytes: &[u8]) {
    use serde::Serialize;
    match std::str::from_utf8(bytes) {
        Ok(s) => push_str(out, s),
        Err(_) => {
            let lossy = String::from_utf8_lossy(bytes);
            // Writing to a Vec cannot fail, and the object always serializes.
            let _ = NonUtf8 {
                bytes,
                lossy: &lossy,
            }
            .serialize(&mut serde_json::Serializer::with_formatter(
                &mut *out,
                TerminalSafe,
            ));
        }
    }
}

/// A value that is not UTF-8, for any `serde` serialiser: the crate's
/// `{"base64":<exact bytes>,"lossy":<text>}` object, so that a typed view of the same
/// message (ami-types' `serde` output) keeps the bytes as [`push_text`] does. `lossy` is the
/// text a reader shows (for a C-escaped field, already unescaped); `bytes` are as sent.
#[derive(Debug, Clone, Copy)]
pub struct NonUtf8<'a> {
    /// The value's bytes as the server sent them.
    pub bytes: &'a [u8],
    /// The same value as text, invalid sequences replaced by U+FFFD.
    pub lossy: &'a str,
}

impl serde::Serialize for NonUtf8<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        let exact = base64::engine::general_purpose::STANDARD.encode(self.bytes);
        map.serialize_entry("base64", &exact)?;
        map.serialize_entry("lossy", self.lossy)?;
        map.end()
    }
}

/// What stands in the JSON for the value of a secret header of an action (see
/// [`push_headers`]). The same marker as every other place the project hides a secret.
pub const REDACTED: &str = "***";

/// Appends a message's headers: `[[key,value],...]`, wire order, repeated keys kept.
///
/// In an action (what a client sent: `ami decode` of a capture of both directions), the
/// value of a secret header ([`ami_proto::is_secret_key`]: `Login`'s `Secret`, the MD5
/// `Key`) is written as [`REDACTED`]: these lines are printed, piped and stored, and the
/// project promises no secret reaches them. The key stays, so a reader still sees that one
/// was sent. Events and responses are written whole: they come from the server, which never
/// echoes a login secret, and their `Key` is data (`DBGetResponse` and `DBGetTreeResponse`
/// carry the AstDB key there) that the bridge's consumers need.
///
/// An action is what Asterisk would run as one ([`Message::runs_as_action`]): a message
/// with an `Action` header, first or further down, whatever its first header, since
/// Asterisk reads `Action` wherever it is (a client may send its `ActionID`, or a
/// `Response` line, first).
pub fn push_headers(out: &mut Vec<u8>, msg: &Message) {
    // Asked only at a secret-named key: every event goes through here (the bridge's ~100 k
    // a second), and few carry one.
    let mut is_action = None;
    out.push(b'[');
    for (i, f) in msg.fields().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        push_text(out, f.key);
        out.push(b',');
        if is_secret(f.key) && *is_action.get_or_insert_with(|| msg.runs_as_action()) {
            push_str(out, REDACTED);
        } else {
            push_text(out, f.value.as_bytes());
        }
        out.push(b']');
    }
    out.push(b']');
}

/// Whether [`push_headers`] writes one of `msg`'s values as [`REDACTED`]: an action (see
/// [`Message::runs_as_action`]) with a `Secret` or `Key` header. A writer of its own (the
/// typed output of `ami decode`) uses this to leave such a message to this crate.
pub fn hides_a_secret(msg: &Message) -> bool {
    msg.fields().any(|f| is_secret(f.key)) && msg.runs_as_action()
}

/// Whether a header key names a secret. Surrounding blanks are ignored, so `Secret ` is one
/// too (hiding too much is the safe side); a key that is not UTF-8 cannot be `Secret`/`Key`.
fn is_secret(key: &[u8]) -> bool {
    std::str::from_utf8(key).is_ok_and(|k| ami_proto::is_secret_key(k.trim()))
}

/// The finished JSON as a `String`. Everything pushed is UTF-8 (serde_json's strings and
/// ASCII punctuation), so the lossy branch is never taken; it only avoids a panic path.
pub fn into_string(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The `"type"` of a message: `event`, `response`, `action` or `other`.
pub fn kind(msg: &Message) -> &'static str {
    match msg.kind() {
        MessageKind::Event => "event",
        MessageKind::Response => "response",
        MessageKind::Action => "action",
        _ => "other",
    }
}

/// A guess of the JSON's size, so one allocation usually holds it.
fn capacity(msg: &Message) -> usize {
    msg.wire_bytes().len() * 5 / 4 + 128
}

/// A message as `ami listen` writes it: `{"type":K,"headers":[...]}`.
pub fn message(msg: &Message) -> String {
    let mut out = Vec::with_capacity(capacity(msg));
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind(msg).as_bytes());
    out.extend_from_slice(b"\",\"headers\":");
    push_headers(&mut out, msg);
    out.push(b'}');
    into_string(out)
}

/// Where a message published by a bridge belongs: the server, the bridge's session of it
/// (one bridge's tenure of the server) and the position in that session (1, 2, 3...,
/// markers included, so a consumer sees exactly where something is missing).
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The server's name.
    pub server: &'a str,
    /// The session: `<bridge>-<lease revision>`.
    pub session: &'a str,
    /// The position within the session.
    pub position: u64,
}

impl Place<'_> {
    /// Opens the object: `{"type":"<kind>","server":..,"session":..,"position":N`.
    fn open(&self, out: &mut Vec<u8>, kind: &str) {
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"server\":");
        push_str(out, self.server);
        out.extend_from_slice(b",\"session\":");
        push_str(out, self.session);
        let _ = write!(out, ",\"position\":{}", self.position);
    }
}

/// A message as a bridge publishes it: the [`message`] object with its [`Place`].
pub fn message_at(place: &Place<'_>, msg: &Message) -> String {
    let mut out = Vec::with_capacity(capacity(msg) + 64);
    place.open(&mut out, kind(msg));
    out.extend_from_slice(b",\"headers\":");
    push_headers(&mut out, msg);
    out.push(b'}');
    into_string(out)
}

/// A late answer as a bridge publishes it (see the crate docs): the server's `response` to
/// action `action_id`, sent for the request with `idempotency_key`, if it had one and the
/// bridge still knows it.
pub fn late_answer(
    place: &Place<'_>,
    action_id: &str,
    idempotency_key: Option<&str>,
    response: &Message,
) -> String {
    let mut out = Vec::with_capacity(capacity(response) + 128 + action_id.len());
    place.open(&mut out, "late_answer");
    out.extend_from_slice(b",\"action_id\":");
    push_str(&mut out, action_id);
    out.extend_from_slice(b",\"idempotency_key\":");
    match idempotency_key {
        Some(k) => push_str(&mut out, k),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"response\":");
    push_headers(&mut out, response);
    out.push(b'}');
    into_string(out)
}

/// The states of a session marker (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// A session is up; `ami_version` follows.
    Ready,
    /// The session was lost; `reason` follows.
    Lost,
    /// A bridge took the server's lease.
    LeaseAcquired,
    /// A bridge gave the server up cleanly.
    LeaseReleased,
}

impl SessionState {
    /// Its name in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            SessionState::Ready => "ready",
            SessionState::Lost => "lost",
            SessionState::LeaseAcquired => "lease_acquired",
            SessionState::LeaseReleased => "lease_released",
        }
    }
}

/// A session marker: `{"type":"session",<place>,"state":S,<extra as strings>}`; `place` is
/// `None` for `ami listen`.
pub fn session(place: Option<&Place<'_>>, state: SessionState, extra: &[(&str, &str)]) -> String {
    let mut out = Vec::with_capacity(200);
    match place {
        Some(p) => p.open(&mut out, "session"),
        None => out.extend_from_slice(b"{\"type\":\"session\""),
    }
    out.extend_from_slice(b",\"state\":\"");
    out.extend_from_slice(state.name().as_bytes());
    out.push(b'"');
    for (k, v) in extra {
        out.push(b',');
        push_str(&mut out, k);
        out.push(b':');
        push_str(&mut out, v);
    }
    out.push(b'}');
    into_string(out)
}

/// Why events are missing at a gap marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapReason {
    /// A bounded queue overflowed; the count is exact.
    Overflow,
    /// The AMI session was lost; what the server sent until the next login is unknown.
    Disconnected,
    /// Another bridge held the server before; what it did not publish is unknown.
    Takeover,
    /// The client threw away server input that may have been events: a message over a
    /// decoder limit or malformed (one per resync), or events that came before the session
    /// was ready. The count is of discards.
    Discarded,
}

impl GapReason {
    /// Its name in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            GapReason::Overflow => "overflow",
            GapReason::Disconnected => "disconnected",
            GapReason::Takeover => "takeover",
            GapReason::Discarded => "discarded",
        }
    }
}

/// A gap marker; `dropped: None` (JSON `null`) when the count cannot be known. `place` is
/// `None` for `ami listen`: `{"type":"gap","reason":R,"dropped":N}`.
pub fn gap(place: Option<&Place<'_>>, reason: GapReason, dropped: Option<u64>) -> String {
    let mut out = Vec::with_capacity(160);
    match place {
        Some(p) => p.open(&mut out, "gap"),
        None => out.extend_from_slice(b"{\"type\":\"gap\""),
    }
    out.extend_from_slice(b",\"reason\":\"");
    out.extend_from_slice(reason.name().as_bytes());
    out.push(b'"');
    match dropped {
        Some(n) => {
            let _ = write!(out, ",\"dropped\":{n}");
        }
        None => out.extend_from_slice(b",\"dropped\":null"),
    }
    out.push(b'}');
    into_string(out)
}

/// `line` (a JSON object) with `"server":NAME` first: `ami listen` and `ami action --on`
/// over several servers say which server each line came from.
pub fn with_server(line: &str, server: &str) -> String {
    let mut out = Vec::with_capacity(line.len() + server.len() + 16);
    out.extend_from_slice(b"{\"server\":");
    push_str(&mut out, server);
    match line.strip_prefix('{') {
        Some(rest) if rest.starts_with('}') => out.push(b'}'),
        Some(rest) => {
            out.push(b',');
            out.extend_from_slice(rest.as_bytes());
        }
        None => return line.to_string(),
    }
    into_string(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use ami_proto::{Decoder, DecoderLimits, Frame};
    use serde_json::{json, Value};

    fn one(wire: &[u8]) -> Message {
        let mut d = Decoder::without_banner(DecoderLimits::default());
        d.feed(wire);
        match d.decode() {
            Some(Ok(Frame::Message(m))) => m,
            other => panic!("{other:?}"),
        }
    }

    const PLACE: Place<'static> = Place {
        server: "pbx1",
        session: "b1-7",
        position: 3,
    };

    #[test]
    fn a_late_answer_carries_its_place_action_id_key_and_response_headers() {
        let m = one(b"Response: Success\r\nActionID: b1-7\r\nMessage: Redirect \"ok\"\r\n\r\n");
        let keyed: Value =
            serde_json::from_str(&late_answer(&PLACE, "b1-7", Some("k-1"), &m)).unwrap();
        assert_eq!(
            keyed,
            json!({"type":"late_answer","server":"pbx1","session":"b1-7","position":3,
                   "action_id":"b1-7","idempotency_key":"k-1",
                   "response":[["Response","Success"],["ActionID","b1-7"],["Message","Redirect \"ok\""]]})
        );
        let unknown: Value = serde_json::from_str(&late_answer(&PLACE, "b1-7", None, &m)).unwrap();
        assert_eq!(unknown["idempotency_key"], Value::Null);
    }

    #[test]
    fn keeps_order_and_repeated_keys_and_escapes_quotes() {
        let m = one(b"Response: Success\r\nOutput: a\r\nOutput: \"b\"\\\r\n\r\n");
        assert_eq!(
            message(&m),
            r#"{"type":"response","headers":[["Response","Success"],["Output","a"],["Output","\"b\"\\"]]}"#
        );
    }

    #[test]
    fn characters_a_terminal_would_obey_are_escaped_and_read_back_the_same() {
        // A remote caller's name with a right-to-left override, a C1 CSI and a DEL.
        let name = "Bob \u{202e}gnp.exe\u{9b}31m\u{7f} Jos\u{e9}";
        let wire = format!("Event: Newchannel\r\nCallerIDName: {name}\r\n\r\n");
        let line = message(&one(wire.as_bytes()));
        assert!(
            line.contains(r#""Bob \u202egnp.exe\u009b31m\u007f José""#),
            "{line}"
        );
        assert!(
            !line.contains('\u{202e}') && !line.contains('\u{9b}'),
            "{line}"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["headers"][1][1], name);
        // Plain text, accents included, is written as it is.
        let plain = message(&one("Event: X\r\nName: José\r\n\r\n".as_bytes()));
        assert!(plain.contains("José"), "{plain}");
    }

    #[test]
    fn non_utf8_values_read_back_byte_exact_through_a_strict_parser() {
        use base64::Engine;
        let m = one(b"Event: Newchannel\r\nCallerIDName: Jos\xe9 \xff\r\nExten: 100\r\n\r\n");
        let v: Value = serde_json::from_str(&message(&m)).unwrap();
        assert_eq!(
            v,
            json!({"type": "event", "headers": [
                ["Event", "Newchannel"],
                ["CallerIDName", {"base64": "Sm9z6SD/", "lossy": "Jos\u{fffd} \u{fffd}"}],
                ["Exten", "100"],
            ]})
        );
        let b64 = v["headers"][1][1]["base64"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(bytes, b"Jos\xe9 \xff");
    }

    #[test]
    fn control_characters_and_unicode_survive_a_round_trip() {
        let m = one("Event: X\r\nName: tab\there \u{1}\u{1f} é 😀 \"q\"\r\n\r\n".as_bytes());
        let v: Value = serde_json::from_str(&message(&m)).unwrap();
        assert_eq!(v["headers"][1][1], "tab\there \u{1}\u{1f} é 😀 \"q\"");
    }

    #[test]
    fn bridge_event_carries_its_place_before_the_headers() {
        let m = one(b"Event: VarSet\r\nVariable: a\r\nVariable: b\r\n\r\n");
        assert_eq!(
            message_at(&PLACE, &m),
            r#"{"type":"event","server":"pbx1","session":"b1-7","position":3,"headers":[["Event","VarSet"],["Variable","a"],["Variable","b"]]}"#
        );
    }

    #[test]
    fn gap_with_unknown_count_says_null() {
        let v: Value = serde_json::from_str(&gap(Some(&PLACE), GapReason::Takeover, None)).unwrap();
        assert_eq!(v["type"], "gap");
        assert_eq!(v["reason"], "takeover");
        assert!(v["dropped"].is_null());
        let v: Value =
            serde_json::from_str(&gap(Some(&PLACE), GapReason::Overflow, Some(12))).unwrap();
        assert_eq!(v["dropped"], 12);
        assert_eq!(
            gap(None, GapReason::Overflow, Some(7)),
            r#"{"type":"gap","reason":"overflow","dropped":7}"#
        );
    }

    #[test]
    fn session_markers_of_listen_and_bridge_share_states_and_fields() {
        let listen = session(None, SessionState::Ready, &[("ami_version", "11.0.0")]);
        assert_eq!(
            listen,
            r#"{"type":"session","state":"ready","ami_version":"11.0.0"}"#
        );
        let bridge = session(
            Some(&PLACE),
            SessionState::Ready,
            &[("bridge", "b1"), ("ami_version", "11.0.0")],
        );
        let v: Value = serde_json::from_str(&bridge).unwrap();
        assert_eq!(v["state"], "ready");
        assert_eq!(v["ami_version"], "11.0.0");
        assert_eq!(v["position"], 3);
        let lost = session(
            None,
            SessionState::Lost,
            &[("reason", "a \"quoted\"\nreason")],
        );
        let v: Value = serde_json::from_str(&lost).unwrap();
        assert_eq!(v["reason"], "a \"quoted\"\nreason");
    }

    /// A header value back from its JSON: the string's bytes, or the base64's.
    fn bytes_of(v: &Value) -> Vec<u8> {
        use base64::Engine;
        match v {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Object(o) => base64::engine::general_purpose::STANDARD
                .decode(o["base64"].as_str().unwrap())
                .unwrap(),
            other => panic!("{other}"),
        }
    }

    proptest::proptest! {
        /// Whatever bytes a server sends in a value (UTF-8 or not, control characters,
        /// quotes), a strict JSON parser gets every header back byte-exact, in order.
        #[test]
        fn every_header_reads_back_byte_exact(
            values in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![0x20u8..=0xff, proptest::strategy::Just(b'\t'), 0u8..0x09], 0..24),
                1..6)
        ) {
            use proptest::prelude::*;
            let mut wire = b"Event: P\r\n".to_vec();
            for (i, v) in values.iter().enumerate() {
                wire.extend_from_slice(format!("K{i}: ").as_bytes());
                wire.extend_from_slice(v);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            let m = one(&wire);
            let v: Value = serde_json::from_str(&message_at(&PLACE, &m)).unwrap();
            let headers = v["headers"].as_array().unwrap();
            prop_assert_eq!(headers.len(), m.fields().count());
            for (h, f) in headers.iter().zip(m.fields()) {
                prop_assert_eq!(bytes_of(&h[0]), f.key.to_vec());
                prop_assert_eq!(bytes_of(&h[1]), f.value.as_bytes().to_vec());
            }
        }
    }

    /// Bytes a hostile server (or a corrupt capture) may send: anything at all, with the
    /// pieces of AMI framing and the names that change the JSON (kinds, secrets) common
    /// enough that the decoder yields many messages of every kind.
    fn hostile_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 1..12),
            2 => proptest::collection::vec(
                prop_oneof![0u8..0x20, Just(0x7f), 0x80u8..=0xff, Just(b'"'), Just(b'\\')],
                1..6),
            1 => proptest::sample::select(vec![
                "\u{2028}", "\u{2029}", "\u{202e}", "\u{85}", "\u{9b}", "\u{feff}", "\u{fffd}",
                "😀", "é",
            ]).prop_map(|s| s.as_bytes().to_vec()),
            4 => proptest::sample::select(vec![
                "\r\n", "\r\n", "\n", "\r", ": ", ":", "\r\n\r\n", "Event: ", "Response: ",
                "Action: ", "action: ", "ActionID: ", "Secret: ", "secret:", "KEY: ", " Key : ",
                "Output: ", "Message: ",
            ]).prop_map(|s| s.as_bytes().to_vec()),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    /// Whether `m` is, as Asterisk would read it, an action: the messages whose secrets the
    /// JSON hides (an `Action` header anywhere, whatever the first).
    fn read_as_action(m: &Message) -> bool {
        m.kind() == MessageKind::Action
            || m.fields()
                .any(|f| f.key.trim_ascii().eq_ignore_ascii_case(b"Action"))
    }

    /// Checks one JSON line of `m` as a strict consumer would; `place` when it is a bridge's.
    fn check_line(
        line: &str,
        m: &Message,
        place: Option<&Place<'_>>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        use proptest::prelude::*;
        // One line, nothing a terminal or a line splitter would act on, whatever was sent.
        for c in line.chars() {
            prop_assert!(
                !(c.is_control()
                    || ami_proto::obeyed_by_terminals(c)
                    || matches!(c, '\u{2028}' | '\u{2029}')),
                "{:?} in {}",
                c,
                line
            );
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| TestCaseError::fail(format!("{e}: {line}")))?;
        prop_assert_eq!(&v["type"], kind(m));
        if let Some(p) = place {
            prop_assert_eq!(&v["server"], p.server);
            prop_assert_eq!(&v["session"], p.session);
            prop_assert_eq!(&v["position"], p.position);
        }
        let headers = v["headers"].as_array().unwrap();
        prop_assert_eq!(headers.len(), m.fields().count());
        for (h, f) in headers.iter().zip(m.fields()) {
            prop_assert_eq!(h.as_array().map(Vec::len), Some(2));
            prop_assert_eq!(bytes_of(&h[0]), f.key.to_vec());
            let secret = read_as_action(m)
                && std::str::from_utf8(f.key).is_ok_and(|k| ami_proto::is_secret_key(k.trim()));
            if secret {
                prop_assert_eq!(&h[1], REDACTED);
            } else {
                prop_assert_eq!(bytes_of(&h[1]), f.value.as_bytes().to_vec());
            }
            // A value that is not UTF-8 also shows as its lossy text.
            if let Value::Object(o) = &h[1] {
                prop_assert!(std::str::from_utf8(f.value.as_bytes()).is_err() || secret);
                prop_assert_eq!(&o["lossy"], &*String::from_utf8_lossy(f.value.as_bytes()));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

        /// Whatever bytes arrive, every message the decoder makes of them is written as
        /// strict JSON on one line that gives back its kind, place and every key and value
        /// byte-exact (a string, or `{"base64","lossy"}`), but an action's secrets.
        #[test]
        fn any_bytes_decode_to_strict_json_that_reads_back_byte_exact(wire in hostile_bytes()) {
            let mut d = Decoder::without_banner(DecoderLimits::default());
            let mut rest: &[u8] = &wire;
            let mut messages = Vec::new();
            // A blank line at the end, so a message left open is decoded too.
            for chunk in [&mut rest, &mut &b"\r\n\r\n"[..]] {
                while !chunk.is_empty() {
                    let n = d.feed(chunk);
                    *chunk = &chunk[n..];
                    while let Some(frame) = d.decode() {
                        if let Ok(Frame::Message(m)) = frame {
                            messages.push(m);
                        }
                    }
                }
            }
            for m in &messages {
                check_line(&message(m), m, None)?;
                check_line(&message_at(&PLACE, m), m, Some(&PLACE))?;
            }
        }
    }

    /// A capture of a client's side: a plain login and an MD5 login.
    const LOGINS: [&[u8]; 2] = [
        b"Action: Login\r\nActionID: 1\r\nUsername: admin\r\nSecret: TOPSECRET1\r\n\r\n",
        b"Action: Login\r\nAuthType: MD5\r\nUsername: admin\r\nkey: 0123456789abcdef0123456789abcdef\r\n\r\n",
    ];

    #[test]
    fn an_actions_secret_and_md5_key_are_written_as_the_redaction_marker() {
        for wire in LOGINS {
            let m = one(wire);
            for line in [message(&m), message_at(&PLACE, &m)] {
                assert!(
                    !line.contains("TOPSECRET1") && !line.contains("0123456789abcdef"),
                    "{line}"
                );
                let v: Value = serde_json::from_str(&line).unwrap();
                let headers = v["headers"].as_array().unwrap();
                // The header is still there, in its place, with the marker as its value.
                let secret = headers
                    .iter()
                    .find(|h| ami_proto::is_secret_key(h[0].as_str().unwrap()))
                    .unwrap();
                assert_eq!(secret[1], REDACTED, "{line}");
                assert_eq!(headers.len(), m.fields().count());
                assert!(headers.contains(&json!(["Username", "admin"])), "{line}");
            }
        }
        // Not UTF-8 either way: the bytes are not shown in base64 instead.
        let m = one(b"Action: Login\r\nSecret: S\xe9CRET\r\n\r\n");
        let line = message(&m);
        assert!(line.contains(r#"["Secret","***"]"#), "{line}");
        assert!(!line.contains("base64"), "{line}");
    }

    #[test]
    fn an_actions_secret_is_masked_whatever_header_comes_first() {
        // Asterisk reads `Action` wherever it is in the message, so a client may send its
        // ActionID first: the decoder then calls the message `other`, but it is a Login.
        for wire in [
            &b"ActionID: 1\r\nAction: Login\r\nUsername: admin\r\nSecret: TOPSECRET1\r\n\r\n"[..],
            b"ActionID: 2\r\naction: login\r\nAuthType: MD5\r\nKEY: 0123456789abcdef\r\n\r\n",
        ] {
            let m = one(wire);
            for line in [message(&m), message_at(&PLACE, &m)] {
                assert!(
                    !line.contains("TOPSECRET1") && !line.contains("0123456789abcdef"),
                    "{line}"
                );
                assert!(line.contains(r#""***""#), "{line}");
            }
        }
        // A server's message of no known kind without an Action header is data, as sent.
        let m = one(b"Foo: bar\r\nKey: 5551234\r\n\r\n");
        assert!(message(&m).contains(r#"["Key","5551234"]"#));
    }

    #[test]
    fn an_actions_secret_is_masked_when_its_first_header_is_response_or_event() {
        // Asterisk runs `Action: Login` whatever line comes first; in a capture of what a
        // client sent, the decoder calls these a response and an event.
        for wire in [
            &b"Response: x\r\nAction: Login\r\nUsername: admin\r\nSecret: TOPSECRET1\r\n\r\n"[..],
            b"Event: x\r\naction: login\r\nAuthType: MD5\r\nKEY: TOPSECRET1\r\n\r\n",
        ] {
            let m = one(wire);
            for line in [message(&m), message_at(&PLACE, &m)] {
                assert!(!line.contains("TOPSECRET1"), "{line}");
                assert!(line.contains(r#""***""#), "{line}");
            }
        }
    }

    #[test]
    fn line_and_paragraph_separators_are_escaped_so_no_line_splitter_cuts_an_object() {
        // U+2028 and U+2029 end a line for Python's str.splitlines(), JavaScript before
        // ES2019 and many log viewers: one object per line holds only if they are escaped.
        let name = "a\u{2028}b\u{2029}c\u{85}d";
        let wire = format!("Event: Newchannel\r\nCallerIDName: {name}\r\n\r\n");
        let m = one(wire.as_bytes());
        for line in [message(&m), message_at(&PLACE, &m)] {
            assert!(
                !line.contains('\u{2028}') && !line.contains('\u{2029}'),
                "{line:?}"
            );
            assert!(line.contains(r#""a\u2028b\u2029c\u0085d""#), "{line}");
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["headers"][1][1], name);
        }
    }

    #[test]
    fn an_events_key_header_is_data_and_written_whole() {
        // DBGetResponse's `Key` is the AstDB key a consumer asked for, not a credential.
        let m =
            one(b"Event: DBGetResponse\r\nFamily: cidname\r\nKey: 5551234\r\nVal: Alice\r\n\r\n");
        assert!(message(&m).contains(r#"["Key","5551234"]"#));
    }

    #[test]
    fn with_server_puts_the_name_first() {
        assert_eq!(
            with_server(r#"{"type":"event","headers":[]}"#, "10.0.0.1:5038"),
            r#"{"server":"10.0.0.1:5038","type":"event","headers":[]}"#
        );
        assert_eq!(with_server("{}", "a\"b"), r#"{"server":"a\"b"}"#);
    }
}
