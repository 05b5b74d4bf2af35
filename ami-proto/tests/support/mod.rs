//! Shared test support: fixture loading and a transcript replayer that drives a `Client`
//! with the exact bytes a real Asterisk sent.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::{
    Action, ActionId, Client, Decoder, DecoderLimits, Frame, Input, Message, Notice, Outcome,
    Output, StreamItem,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../shared/fixtures/asterisk-22.10.1/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Decodes a byte stream into its messages (the banner, if any, is skipped).
pub fn messages(bytes: &[u8], banner: bool) -> Vec<Message> {
    let limits = DecoderLimits::default();
    let mut d = if banner {
        Decoder::new(limits)
    } else {
        Decoder::without_banner(limits)
    };
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = d.feed(rest);
        rest = &rest[n..];
        while let Some(f) = d.decode() {
            if let Ok(Frame::Message(m)) = f {
                out.push(m);
            }
        }
    }
    out
}

/// Rebuilds a message's wire bytes with `ActionID` replaced through `map`.
pub fn rewrite(msg: &Message, map: &HashMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    for f in msg.fields() {
        out.extend_from_slice(f.key);
        if !f.key.is_empty() {
            out.extend_from_slice(b": ");
        }
        let value = f.value.as_bytes();
        let mapped = if f.key.eq_ignore_ascii_case(b"ActionID") {
            std::str::from_utf8(value)
                .ok()
                .and_then(|v| map.get(v))
                .map(|v| v.as_bytes())
        } else {
            None
        };
        out.extend_from_slice(mapped.unwrap_or(value));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What the caller does when the transcript needs the client's next action.
pub enum Step {
    Send(Action),
    Logoff,
}

/// Everything the client produced during a replay.
#[derive(Default)]
pub struct Record {
    pub completed: Vec<(ActionId, Outcome)>,
    pub events: Vec<StreamItem>,
    pub ready: usize,
    pub closed: Option<ami_proto::DisconnectReason>,
    pub disconnected: Vec<ami_proto::DisconnectReason>,
    /// Every action the client wrote, decoded.
    pub written: Vec<Message>,
    pub ids: Vec<ActionId>,
}

pub struct Replay {
    pub client: Client,
    pub now: Instant,
    pub record: Record,
    /// Fixture ActionID -> client ActionID.
    pub map: HashMap<String, String>,
    sent: Vec<Message>,
    matched: usize,
    steps: std::collections::VecDeque<Step>,
}

impl Replay {
    pub fn new(client: Client, now: Instant, sent_fixture: &str, steps: Vec<Step>) -> Replay {
        let sent = messages(&fixture(sent_fixture), false);
        let mut r = Replay {
            client,
            now,
            record: Record::default(),
            map: HashMap::new(),
            sent,
            matched: 0,
            steps: steps.into(),
        };
        r.drain();
        r
    }

    /// Drains outputs and written bytes; matches written actions to the fixture's.
    pub fn drain(&mut self) {
        loop {
            match self.client.poll_output() {
                Output::Connect => self.client.handle_input(self.now, Input::Connected),
                Output::Close => {}
                Output::Notice(Notice::Ready { .. }) => self.record.ready += 1,
                Output::Notice(Notice::Completed { id, outcome }) => {
                    self.record.completed.push((id, outcome))
                }
                Output::Notice(Notice::Disconnected { reason, .. }) => {
                    self.record.disconnected.push(reason)
                }
                Output::Notice(Notice::Closed { reason }) => self.record.closed = Some(reason),
                Output::Wait(_) => break,
                _ => {}
            }
        }
        while let Some(item) = self.client.poll_event() {
            self.record.events.push(item);
        }
        let bytes = self.client.transmit().to_vec();
        self.client.advance_transmit(bytes.len());
        for m in messages(&bytes, false) {
            let fixture_msg = self
                .sent
                .get(self.matched)
                .unwrap_or_else(|| panic!("client wrote more actions than the fixture: {m:?}"));
            assert_eq!(
                m.action().map(str::to_ascii_lowercase),
                fixture_msg.action().map(str::to_ascii_lowercase),
                "action #{} differs from the fixture",
                self.matched
            );
            if let (Some(theirs), Some(ours)) = (fixture_msg.action_id(), m.action_id()) {
                self.map.insert(theirs.to_string(), ours.to_string());
            }
            self.matched += 1;
            self.record.written.push(m);
        }
    }

    /// Feeds every server message of the `.raw` fixture, acting through `steps` whenever a
    /// message answers an action the client has not written yet.
    pub fn play(&mut self, raw_fixture: &str, gap: Duration) {
        let raw = fixture(raw_fixture);
        let banner_end = raw.iter().position(|&b| b == b'\n').unwrap() + 1;
        self.feed(&raw[..banner_end]);
        let replies = messages(&raw, true);
        for msg in replies {
            if let Some(theirs) = msg.action_id() {
                while !self.map.contains_key(theirs) {
                    let Some(step) = self.steps.pop_front() else {
                        break;
                    };
                    match step {
                        Step::Send(a) => {
                            let id = self.client.send_action(self.now, a).unwrap();
                            self.record.ids.push(id);
                        }
                        Step::Logoff => self.client.logoff(self.now),
                    }
                    self.drain();
                }
            }
            self.now += gap;
            self.client.handle_timeout(self.now);
            let bytes = rewrite(&msg, &self.map);
            self.feed(&bytes);
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.client.handle_input(self.now, Input::Received(bytes));
        self.drain();
    }

    pub fn eof(&mut self) {
        self.client.handle_input(self.now, Input::Eof);
        self.drain();
    }

    pub fn outcome(&self, id: &ActionId) -> &Outcome {
        let all: Vec<_> = self
            .record
            .completed
            .iter()
            .filter(|(i, _)| i == id)
            .collect();
        assert_eq!(all.len(), 1, "{id} completed {} times", all.len());
        &all[0].1
    }
}

pub fn at(start: Instant, ms: u64) -> Instant {
    start + Duration::from_millis(ms)
}
