//! One JSON object per message: `{"type":"event"|"response","headers":[["Key","Value"],...]}`.
//!
//! Headers keep wire order and repeated keys. Bytes that are not UTF-8 are escaped, never
//! dropped: each invalid byte `0xNN` becomes `\udcNN` (Python's "surrogateescape"), which
//! is lossless and tells such bytes apart from any real character.

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

/// Appends `bytes` as a JSON string literal.
pub(crate) fn push_bytes(out: &mut String, mut bytes: &[u8]) {
    out.push('"');
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                push_str_escaped(out, s);
                break;
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                push_str_escaped(out, std::str::from_utf8(good).unwrap_or(""));
                let bad = e.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    let _ = write!(out, "\\udc{b:02x}");
                }
                bytes = &rest[bad..];
            }
        }
    }
    out.push('"');
}

/// The message as one JSON line (no trailing newline).
pub(crate) fn message(msg: &Message) -> String {
    let kind = match msg.kind() {
        MessageKind::Event => "event",
        MessageKind::Response => "response",
        MessageKind::Action => "action",
        _ => "other",
    };
    let mut out = String::with_capacity(msg.wire_bytes().len() + 64);
    out.push_str("{\"type\":\"");
    out.push_str(kind);
    out.push_str("\",\"headers\":[");
    for (i, f) in msg.fields().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        push_bytes(&mut out, f.key);
        out.push(',');
        push_bytes(&mut out, f.value.as_bytes());
        out.push(']');
    }
    out.push_str("]}");
    out
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
    pub(crate) fn typed_line(&mut self, m: &Message) -> String {
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
        let mut out = String::from("{\"type\":\"event\",\"event\":");
        push_bytes(&mut out, name.as_bytes());
        let _ = write!(out, ",\"known\":{},\"fields\":", event.spec().is_some());
        match serde_json::to_string(&event) {
            Ok(fields) => out.push_str(&fields),
            // Serialising a map of strings and numbers cannot fail; keep the line valid anyway.
            Err(_) => out.push_str("null"),
        }
        out.push('}');
        out
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

    #[test]
    fn keeps_order_and_repeated_keys() {
        let m = one(b"Response: Success\r\nOutput: a\r\nOutput: \"b\"\\\r\n\r\n");
        assert_eq!(
            message(&m),
            r#"{"type":"response","headers":[["Response","Success"],["Output","a"],["Output","\"b\"\\"]]}"#
        );
    }

    #[test]
    fn non_utf8_bytes_are_escaped_not_dropped() {
        let m = one(b"Event: Newchannel\r\nCallerIDName: Jos\xe9 \xff\r\n\r\n");
        let j = message(&m);
        assert!(j.contains(r#"["CallerIDName","Jos\udce9 \udcff"]"#), "{j}");
    }
}
