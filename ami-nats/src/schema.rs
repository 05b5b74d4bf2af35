//! The JSON that crosses NATS: events, gap and session markers, action requests and replies.
//!
//! One schema, shared with `ami listen`: a message is `{"type":...,"headers":[[key,value],...]}`
//! with headers in wire order and repeated keys kept. A key or value that is not UTF-8 is an
//! object `{"base64":..,"lossy":..}` instead of a string, as `ami listen` writes it: the exact
//! bytes, and a display form with U+FFFD. The bridge adds where the item belongs:
//! `"server"`, `"session"` (one bridge's tenure of that server, see [`crate`] docs) and
//! `"position"` (1, 2, 3... within the session, markers included, so a consumer sees exactly
//! where something is missing).
//!
//! | subject | body |
//! |---|---|
//! | `ami.<server>.event.<Event>` | `{"type":"event","server":S,"session":ID,"position":N,"headers":[...]}` |
//! | `ami.<server>.gap` | `{"type":"gap",...,"reason":"overflow"\|"disconnected"\|"takeover","dropped":N\|null}` |
//! | `ami.<server>.session` | `{"type":"session",...,"state":"lease_acquired"\|"connected"\|"disconnected"\|"lease_released",...}` |
//!
//! `dropped` is `null` when the count cannot be known (events Asterisk sent while no session
//! was logged in). Action requests and replies are described in [`crate::ActionRequest`] and
//! [`crate::actions`].

use ami_proto::{Message, MessageKind};
use std::fmt::Write;

fn push_str_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Appends `bytes` as JSON the way `ami listen` writes them: a string when they are UTF-8,
/// else `{"base64":<exact bytes, standard alphabet, padded>,"lossy":<text with U+FFFD>}`.
pub fn push_json_bytes(out: &mut String, bytes: &[u8]) {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(s) => push_str(out, s),
        Err(_) => {
            out.push_str("{\"base64\":\"");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            out.push_str("\",\"lossy\":");
            push_str(out, &String::from_utf8_lossy(bytes));
            out.push('}');
        }
    }
}

fn push_str(out: &mut String, s: &str) {
    out.push('"');
    push_str_escaped(out, s);
    out.push('"');
}

/// Appends a message's headers as `[[key,value],...]`.
pub fn push_headers(out: &mut String, msg: &Message) {
    out.push('[');
    for (i, f) in msg.fields().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        push_json_bytes(out, f.key);
        out.push(',');
        push_json_bytes(out, f.value.as_bytes());
        out.push(']');
    }
    out.push(']');
}

/// The `"type"` of a message: `event`, `response`, `action` or `other`.
pub fn kind_name(msg: &Message) -> &'static str {
    match msg.kind() {
        MessageKind::Event => "event",
        MessageKind::Response => "response",
        MessageKind::Action => "action",
        _ => "other",
    }
}

/// A message as `ami listen` prints it: `{"type":"event","headers":[...]}`.
pub fn message_json(msg: &Message) -> String {
    let mut out = String::with_capacity(msg.wire_bytes().len() + 64);
    out.push_str("{\"type\":\"");
    out.push_str(kind_name(msg));
    out.push_str("\",\"headers\":");
    push_headers(&mut out, msg);
    out.push('}');
    out
}

/// Where a published item belongs: server, session and position.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place<'a> {
    pub(crate) server: &'a str,
    pub(crate) session: &'a str,
    pub(crate) position: u64,
}

impl Place<'_> {
    /// Opens the object: `{"type":"<kind>","server":..,"session":..,"position":N`.
    fn open(&self, out: &mut String, kind: &str) {
        out.push_str("{\"type\":\"");
        out.push_str(kind);
        out.push_str("\",\"server\":");
        push_json_bytes(out, self.server.as_bytes());
        out.push_str(",\"session\":");
        push_json_bytes(out, self.session.as_bytes());
        let _ = write!(out, ",\"position\":{}", self.position);
    }
}

/// An event as published: the listen line plus its place.
pub(crate) fn event(place: Place<'_>, msg: &Message) -> String {
    let mut out = String::with_capacity(msg.wire_bytes().len() * 5 / 4 + 128);
    place.open(&mut out, "event");
    out.push_str(",\"headers\":");
    push_headers(&mut out, msg);
    out.push('}');
    out
}

/// Why events are missing at a gap marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GapReason {
    /// A bounded queue overflowed; the count is exact.
    Overflow,
    /// The AMI session was lost; what Asterisk sent until the next login is unknown.
    Disconnected,
    /// Another bridge held the server before; what it did not publish is unknown.
    Takeover,
}

impl GapReason {
    fn name(self) -> &'static str {
        match self {
            GapReason::Overflow => "overflow",
            GapReason::Disconnected => "disconnected",
            GapReason::Takeover => "takeover",
        }
    }
}

/// A gap marker; `dropped: None` when the count cannot be known.
pub(crate) fn gap(place: Place<'_>, reason: GapReason, dropped: Option<u64>) -> String {
    let mut out = String::with_capacity(160);
    place.open(&mut out, "gap");
    out.push_str(",\"reason\":\"");
    out.push_str(reason.name());
    out.push('"');
    match dropped {
        Some(n) => {
            let _ = write!(out, ",\"dropped\":{n}");
        }
        None => out.push_str(",\"dropped\":null"),
    }
    out.push('}');
    out
}

/// A session marker: `state` plus extra string fields (`bridge`, `ami_version`, `reason`...).
pub(crate) fn session(place: Place<'_>, state: &str, extra: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(200);
    place.open(&mut out, "session");
    out.push_str(",\"state\":\"");
    out.push_str(state);
    out.push('"');
    for (k, v) in extra {
        out.push(',');
        push_json_bytes(&mut out, k.as_bytes());
        out.push(':');
        push_json_bytes(&mut out, v.as_bytes());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ami_proto::{Decoder, DecoderLimits, Frame};

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
    fn event_keeps_wire_order_and_repeated_keys() {
        let m = one(b"Event: VarSet\r\nVariable: a\r\nVariable: \"b\"\\\r\n\r\n");
        let j = event(PLACE, &m);
        assert_eq!(
            j,
            r#"{"type":"event","server":"pbx1","session":"b1-7","position":3,"headers":[["Event","VarSet"],["Variable","a"],["Variable","\"b\"\\"]]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["headers"][2][1], "\"b\"\\");
    }

    #[test]
    fn non_utf8_bytes_are_escaped_not_dropped() {
        let m = one(b"Event: Newchannel\r\nCallerIDName: Jos\xe9 \xff\r\n\r\n");
        let j = message_json(&m);
        assert!(
            j.contains(
                "[\"CallerIDName\",{\"base64\":\"Sm9z6SD/\",\"lossy\":\"Jos\u{fffd} \u{fffd}\"}]"
            ),
            "{j}"
        );
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["headers"][1][1]["base64"], "Sm9z6SD/");
    }

    #[test]
    fn gap_with_unknown_count_says_null() {
        let j = gap(PLACE, GapReason::Takeover, None);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["type"], "gap");
        assert_eq!(v["reason"], "takeover");
        assert!(v["dropped"].is_null());
        let j = gap(PLACE, GapReason::Overflow, Some(12));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["dropped"], 12);
    }

    #[test]
    fn session_marker_carries_extra_fields_as_strings() {
        let j = session(PLACE, "connected", &[("ami_version", "11.0.0")]);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["state"], "connected");
        assert_eq!(v["ami_version"], "11.0.0");
        assert_eq!(v["position"], 3);
    }
}
