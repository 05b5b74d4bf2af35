//! One JSON object per message, written by serde_json (strict JSON):
//!
//! ```text
//! {"type":"event","headers":[["Event","Newchannel"],["CallerIDName","Alice"]]}
//! ```
//!
//! `type` is `event`, `response`, `action` or `other`. `headers` keeps wire order and
//! repeated keys, each header a two-element array `[key, value]`. `listen` also writes
//! session boundaries, `{"type":"session",...}` (see [`session_ready`]).
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

use crate::{Failure, EXIT_OTHER};
use ami_proto::{Message, MessageKind};
use base64::Engine;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// A key or value: a string when it is UTF-8, else `{"base64", "lossy"}`.
enum Text<'a> {
    Utf8(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Text<'a> {
    fn of(bytes: &'a [u8]) -> Text<'a> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Text::Utf8(s),
            Err(_) => Text::Bytes(bytes),
        }
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Text::Utf8(t) => s.serialize_str(t),
            Text::Bytes(b) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(b),
                )?;
                m.serialize_entry("lossy", &String::from_utf8_lossy(b))?;
                m.end()
            }
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    headers: Vec<[Text<'a>; 2]>,
}

/// The message as one JSON line (no trailing newline).
pub(crate) fn message(msg: &Message) -> Result<String, Failure> {
    let kind = match msg.kind() {
        MessageKind::Event => "event",
        MessageKind::Response => "response",
        MessageKind::Action => "action",
        _ => "other",
    };
    let line = Line {
        kind,
        headers: msg
            .fields()
            .map(|f| [Text::of(f.key), Text::of(f.value.as_bytes())])
            .collect(),
    };
    serde_json::to_string(&line)
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot write JSON: {e}")))
}

/// A session boundary as one JSON line: `{"type":"session","state":"ready","ami_version":V}`
/// where a session starts (the first line of `listen`, and after each reconnect), and
/// `{"type":"session","state":"lost","reason":TEXT}` where one was lost: events the server
/// sent between the two are missed and cannot be counted.
pub(crate) fn session_ready(ami_version: &str) -> String {
    serde_json::json!({"type": "session", "state": "ready", "ami_version": ami_version}).to_string()
}

/// See [`session_ready`].
pub(crate) fn session_lost(reason: &str) -> String {
    serde_json::json!({"type": "session", "state": "lost", "reason": reason}).to_string()
}

/// `line` (a JSON object) with `"server":NAME` first: `listen` and `action --on` over
/// several servers say which server each line came from.
pub(crate) fn with_server(line: &str, server: &str) -> String {
    let name = serde_json::Value::from(server).to_string();
    match line.strip_prefix('{') {
        Some(rest) if rest.starts_with('}') => format!("{{\"server\":{name}}}"),
        Some(rest) => format!("{{\"server\":{name},{rest}"),
        None => line.to_string(),
    }
}

/// `ami decode --typed`: events through `ami-types`, with counts of what did not type.
#[derive(Debug, Default)]
pub(crate) struct TypedReport {
    events: u64,
    unknown: u64,
    issues: u64,
}

impl TypedReport {
    /// The event as one JSON line: `{"type":"event","event":NAME,"known":BOOL,"fields":{..}}`
    /// with wire header names and typed values. Every field that does not parse as its
    /// declared type is reported on stderr (and printed as the string it was).
    pub(crate) fn typed_line(&mut self, m: &Message) -> Result<String, Failure> {
        #[derive(Serialize)]
        struct Typed<'a, F: Serialize> {
            #[serde(rename = "type")]
            kind: &'static str,
            event: &'a str,
            known: bool,
            fields: &'a F,
        }
        let event = ami_types::Event::from_message(m);
        self.events += 1;
        let name = event.name().unwrap_or("");
        if event.spec().is_none() {
            self.unknown += 1;
        }
        for issue in event.issues() {
            self.issues += 1;
            eprintln!("ami: {name}: {issue}");
        }
        let line = Typed {
            kind: "event",
            event: name,
            known: event.spec().is_some(),
            fields: &event,
        };
        serde_json::to_string(&line)
            .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot write JSON: {e}")))
    }
}

impl std::fmt::Display for TypedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events typed ({} of kinds the catalog does not know), {} fields did not parse as their declared type",
            self.events, self.unknown, self.issues
        )
    }
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

    fn parsed(wire: &[u8]) -> Value {
        serde_json::from_str(&message(&one(wire)).unwrap()).unwrap()
    }

    #[test]
    fn keeps_order_and_repeated_keys_and_escapes_quotes() {
        let m = one(b"Response: Success\r\nOutput: a\r\nOutput: \"b\"\\\r\n\r\n");
        assert_eq!(
            message(&m).unwrap(),
            r#"{"type":"response","headers":[["Response","Success"],["Output","a"],["Output","\"b\"\\"]]}"#
        );
    }

    #[test]
    fn non_utf8_values_read_back_byte_exact_through_a_strict_parser() {
        let v = parsed(b"Event: Newchannel\r\nCallerIDName: Jos\xe9 \xff\r\nExten: 100\r\n\r\n");
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
        let v = parsed("Event: X\r\nName: tab\there \u{1} é 😀\r\n\r\n".as_bytes());
        assert_eq!(v["headers"][1][1], "tab\there \u{1} é 😀");
    }
}
