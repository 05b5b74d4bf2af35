//! Test helpers: drive a `SimServer` on virtual time and compare message shapes with the
//! recorded fixtures.
#![allow(dead_code)]

use ami_proto::{Decoder, DecoderLimits, Frame, Message, MessageKind};
use ami_sim::{SessionId, SimConfig, SimServer};
use std::time::{Duration, Instant};

pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/asterisk-22.10.1/"
);

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// One decoded server message, reduced to what a shape comparison needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// `Response: Success`, `Event: Newchannel`, or `banner`.
    pub first: String,
    /// Field names in order.
    pub keys: Vec<String>,
    /// The whole message.
    pub msg: Option<Message>,
}

impl Shape {
    pub fn get(&self, key: &str) -> Option<String> {
        self.msg
            .as_ref()
            .and_then(|m| m.get(key))
            .map(|v| v.to_str_lossy().into_owned())
    }
    pub fn is_event(&self, name: &str) -> bool {
        self.first == format!("Event: {name}")
    }
    pub fn event_name(&self) -> Option<&str> {
        self.first.strip_prefix("Event: ")
    }
}

/// Decodes what a server sent (banner first) into shapes.
pub fn shapes(bytes: &[u8]) -> Vec<Shape> {
    let mut d = Decoder::new(DecoderLimits::default());
    let mut out = Vec::new();
    let mut rest = bytes;
    loop {
        let n = d.feed(rest);
        rest = &rest[n..];
        while let Some(f) = d.decode() {
            match f {
                Ok(Frame::Banner(_)) => out.push(Shape {
                    first: "banner".into(),
                    keys: vec![],
                    msg: None,
                }),
                Ok(Frame::Message(m)) => {
                    let first = match m.kind() {
                        MessageKind::Response => {
                            format!("Response: {}", m.response().unwrap_or(""))
                        }
                        MessageKind::Event => format!("Event: {}", m.event().unwrap_or("")),
                        _ => format!(
                            "other: {:?}",
                            m.fields().next().map(|f| f.key_str().into_owned())
                        ),
                    };
                    let keys = m.fields().map(|f| f.key_str().into_owned()).collect();
                    out.push(Shape {
                        first,
                        keys,
                        msg: Some(m),
                    });
                }
                Err(e) => panic!("decode error {e}"),
            }
        }
        if rest.is_empty() {
            return out;
        }
    }
}

pub fn firsts(s: &[Shape]) -> Vec<String> {
    s.iter().map(|x| x.first.clone()).collect()
}

/// Asserts both sides have the same messages with the same field names in the same order.
pub fn assert_same_shapes(got: &[Shape], want: &[Shape], what: &str) {
    assert_eq!(firsts(got), firsts(want), "{what}: first lines differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.keys, w.keys,
            "{what}: keys of message {i} ({}) differ",
            w.first
        );
        let ga = g.get("ActionID");
        let wa = w.get("ActionID");
        assert_eq!(
            ga, wa,
            "{what}: ActionID of message {i} ({}) differs",
            w.first
        );
    }
}

/// Splits client bytes into CRLF messages (each with its terminating empty line).
pub fn split_messages(sent: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 4 <= sent.len() {
        if &sent[i..i + 4] == b"\r\n\r\n" {
            out.push(sent[start..i + 4].to_vec());
            start = i + 4;
            i += 4;
        } else {
            i += 1;
        }
    }
    if start < sent.len() {
        out.push(sent[start..].to_vec());
    }
    out
}

/// A simulated server with one recorded client session and a virtual clock.
pub struct Harness {
    pub sim: SimServer,
    pub t0: Instant,
    pub now: Instant,
    pub s: SessionId,
    pub got: Vec<u8>,
}

impl Harness {
    pub fn new(cfg: SimConfig) -> Harness {
        let t0 = Instant::now();
        let mut sim = SimServer::new(cfg, t0);
        let s = sim.accept(t0);
        let mut h = Harness {
            sim,
            t0,
            now: t0,
            s,
            got: Vec::new(),
        };
        h.drain();
        h
    }

    /// Reads everything the session has queued.
    pub fn drain(&mut self) {
        loop {
            let data = self.sim.transmit(self.s);
            if data.is_empty() {
                return;
            }
            self.got.extend_from_slice(data);
            let n = data.len();
            self.sim.advance_transmit(self.s, n);
        }
    }

    /// The client writes `bytes` now.
    pub fn send(&mut self, bytes: &[u8]) {
        self.sim.receive(self.s, self.now, bytes);
        self.drain();
    }

    /// Lets `d` of virtual time pass, firing every deadline in order and reading as we go.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.sim.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.sim.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
        self.sim.handle_timeout(end);
        self.drain();
    }

    pub fn shapes(&self) -> Vec<Shape> {
        shapes(&self.got)
    }

    /// Shapes received since `from` bytes.
    pub fn shapes_from(&self, from: usize) -> Vec<Shape> {
        let mut v = b"Asterisk Call Manager/11.0.0\r\n".to_vec();
        v.extend_from_slice(&self.got[from..]);
        let mut s = shapes(&v);
        s.remove(0);
        s
    }
}

/// Replays a fixture's client bytes in one write, lets `after` pass, and returns the shapes.
pub fn replay_all(name: &str, after: Duration) -> (Vec<Shape>, Vec<Shape>) {
    let sent = fixture(&format!("{name}.sent"));
    let raw = fixture(&format!("{name}.raw"));
    let mut h = Harness::new(SimConfig::default());
    h.send(&sent);
    h.advance(after);
    (h.shapes(), shapes(&raw))
}
