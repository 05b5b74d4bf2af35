//! One JSON object per message, in the schema of the crate `ami-json` (shared with
//! `ami bridge`, which publishes the same objects on NATS; its docs are the reference):
//!
//! ```text
//! {"type":"event","headers":[["Event","Newchannel"],["CallerIDName","Alice"]]}
//! ```
//!
//! `type` is `event`, `response`, `action` or `other`. `headers` keeps wire order and
//! repeated keys, each header a two-element array `[key, value]`. A key or value that is not
//! UTF-8 is `{"base64":<exact bytes>,"lossy":<text with U+FFFD>}` instead of a string.
//! `listen` also writes session boundaries, `{"type":"session",...}` (see [`session_ready`]).
//! `decode --typed` writes typed events through serde ([`TypedReport`]).

use crate::terminal::say;
use crate::{Failure, EXIT_OTHER};
use ami_json::SessionState;
use ami_proto::Message;
use serde::Serialize;

/// The message as one JSON line (no trailing newline).
pub(crate) fn message(msg: &Message) -> Result<String, Failure> {
    Ok(ami_json::message(msg))
}

/// A session boundary as one JSON line: `{"type":"session","state":"ready","ami_version":V}`
/// where a session starts (the first line of `listen`, and after each reconnect), and
/// `{"type":"session","state":"lost","reason":TEXT}` where one was lost: events the server
/// sent between the two are missed and cannot be counted.
pub(crate) fn session_ready(ami_version: &str) -> String {
    ami_json::session(None, SessionState::Ready, &[("ami_version", ami_version)])
}

/// See [`session_ready`].
pub(crate) fn session_lost(reason: &str) -> String {
    ami_json::session(None, SessionState::Lost, &[("reason", reason)])
}

/// `{"type":"gap","reason":"overflow","dropped":N}`: `dropped` events are missing here in
/// the stream (a queue of the client's or of stdout's overflowed; the count is exact).
pub(crate) fn gap(dropped: u64) -> String {
    ami_json::gap(None, ami_json::GapReason::Overflow, Some(dropped))
}

/// A gap marker for server input the client threw away that may have been events
/// ([`ami_proto::Discard::may_be_events`]): `{"type":"gap","reason":"discarded","dropped":N}`.
pub(crate) fn discarded_gap(count: u64) -> String {
    ami_json::gap(None, ami_json::GapReason::Discarded, Some(count))
}

/// `line` (a JSON object) with `"server":NAME` first: `listen` and `action --on` over
/// several servers say which server each line came from.
pub(crate) fn with_server(line: &str, server: &str) -> String {
    ami_json::with_server(line, server)
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
            say!("ami: {name}: {issue}");
        }
        let line = Typed {
            kind: "event",
            event: name,
            known: event.spec().is_some(),
            fields: &event,
        };
        ami_json::to_string(&line)
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
    use serde_json::{json, Value};

    #[test]
    fn listen_markers_are_the_shared_schema_read_back_by_a_strict_parser() {
        let v: Value = serde_json::from_str(&with_server(&session_lost("eof"), "a:1")).unwrap();
        assert_eq!(
            v,
            json!({"server": "a:1", "type": "session", "state": "lost", "reason": "eof"})
        );
        let v: Value = serde_json::from_str(&session_ready("11.0.0")).unwrap();
        assert_eq!(
            v,
            json!({"type": "session", "state": "ready", "ami_version": "11.0.0"})
        );
    }
}
