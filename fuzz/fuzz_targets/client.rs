//! The client session state machine against a server that says anything: well-formed
//! answers to the actions the client really sent (found in its transmit bytes), raw bytes
//! with those ActionIDs spliced in, event floods, disconnects and time jumps, in an order the
//! fuzzer picks. Checked after every step:
//!
//! - nothing panics (input from the network never reaches a panic);
//! - an action completes at most once, and only one the caller sent;
//! - an action completes from the server's word (`Ok`, or `ActionError::Server`) only if the
//!   server sent a message carrying its ActionID: no synthetic success;
//! - every ActionID the client writes is new (never reused within or across connections);
//! - queues stay within their caps: events in count and bytes, pending actions, the decoder's
//!   buffer;
//! - after `close`, every action the caller sent has completed exactly once.
//!
//! `cargo +nightly fuzz run client`; `FUZZ_TRACE=1` with a crash file as the argument
//! prints each step and outcome.
#![no_main]

use ami_fuzz::Cursor;
use ami_proto::{
    Action, ActionError, ActionId, Client, ClientConfig, ConnectFailure, Decoder, DecoderLimits,
    Frame, Input, Notice, Output, SendOptions, StreamItem,
};
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::time::{Duration, Instant};

struct Harness {
    client: Client,
    now: Instant,
    limits: DecoderLimits,
    event_cap: usize,
    event_bytes: usize,
    max_pending: usize,
    /// ActionIDs the client wrote, oldest first (internal ones too: Login, Ping...).
    written: Vec<String>,
    seen_written: HashSet<String>,
    /// Actions the caller sent, and how often each completed.
    sent: HashMap<ActionId, u32>,
    /// What the client's decoder sees of the current connection, decoded apart with the same
    /// limits, to learn which ActionIDs the server sent.
    server_view: Decoder,
    /// ActionIDs of every message the server sent (on any connection).
    answered: HashSet<String>,
    /// Whether the next connect succeeds and the banner follows it.
    connects_ok: bool,
    banner: bool,
    connected: bool,
    /// `logoff` was called: the client must never connect again.
    logged_off: bool,
    /// The stream's last session boundary was a `Ready`: an event may follow.
    in_session: bool,
    /// `FUZZ_TRACE` set: each step and outcome on stderr, for reading a crash.
    trace: bool,
}

impl Harness {
    fn new(cfg: &mut Cursor<'_>) -> Option<Harness> {
        let now = Instant::now();
        let c = cfg.byte();
        let max_message = 256 + 64 * usize::from(cfg.byte());
        let limits = DecoderLimits::builder()
            .max_line_len(64 + usize::from(cfg.byte()) * 8)
            .max_message_len(max_message)
            .max_fields(4 + usize::from(cfg.byte() % 64))
            .max_follows_len(max_message)
            .buffer_cap(max_message + 2 + 64 * usize::from(cfg.byte()))
            .build()
            .ok()?;
        let event_cap = 1 + usize::from(cfg.byte() % 32);
        let event_bytes = limits.max_message_memory() * (1 + usize::from(c & 3));
        let max_pending = 4 + usize::from(cfg.byte() % 16);
        let overflow = match c >> 6 {
            0 => ami_proto::OverflowPolicy::DropNewest,
            1 => ami_proto::OverflowPolicy::CloseSession,
            _ => ami_proto::OverflowPolicy::DropOldest,
        };
        let config = ClientConfig::builder("admin", "secret")
            .decoder(limits)
            .event_queue_cap(event_cap)
            .event_queue_bytes(event_bytes)
            .max_pending_actions(max_pending)
            .max_queued_actions(max_pending)
            .pipeline_depth(1 + usize::from(cfg.byte() % 8))
            .max_list_items(1 + usize::from(cfg.byte() % 16))
            .max_list_bytes(limits.max_message_memory() * 2)
            .overflow(overflow)
            .allow_sync_originate(c & 4 != 0)
            .reconnect_on_auth_failure(c & 8 != 0)
            .auth(if c & 2 != 0 {
                ami_proto::AuthMethod::Md5
            } else {
                ami_proto::AuthMethod::Plain
            })
            .event_copy(if c & 1 != 0 {
                ami_proto::EventCopy::OnDecode
            } else {
                ami_proto::EventCopy::OnTake
            })
            .seed(u64::from(cfg.byte()))
            .build()
            .ok()?;
        Some(Harness {
            client: Client::new(config, now),
            now,
            limits,
            event_cap,
            event_bytes,
            max_pending,
            written: Vec::new(),
            seen_written: HashSet::new(),
            sent: HashMap::new(),
            server_view: Decoder::new(limits),
            answered: HashSet::new(),
            connects_ok: c & 16 == 0,
            banner: c & 32 == 0,
            connected: false,
            logged_off: false,
            in_session: false,
            trace: std::env::var_os("FUZZ_TRACE").is_some(),
        })
    }

    /// Runs the client's outputs until it waits, playing the transport, and checks the
    /// invariants.
    fn settle(&mut self) {
        let mut waited = false;
        for _ in 0..100_000 {
            match self.client.poll_output() {
                Output::Connect => {
                    assert!(!self.logged_off, "a connect after logoff");
                    if self.connects_ok {
                        self.client.handle_input(self.now, Input::Connected);
                        self.connected = true;
                        self.server_view = Decoder::new(self.limits);
                        if self.banner {
                            self.feed(b"Asterisk Call Manager/11.0.0\r\n");
                        }
                    } else {
                        self.client
                            .handle_input(self.now, Input::ConnectFailed(ConnectFailure::Refused));
                    }
                }
                Output::Close => self.connected = false,
                Output::Notice(Notice::Completed { id, outcome }) => {
                    if self.trace {
                        eprintln!("  completed {id}: {outcome:?}");
                    }
                    ami_fuzz::complete_once(&mut self.sent, &id);
                    if matches!(outcome, Ok(_) | Err(ActionError::Server(_))) {
                        assert!(
                            self.answered.contains(id.as_str()),
                            "{id} completed from an answer the server never sent: {outcome:?}"
                        );
                    }
                }
                Output::Wait(_) => {
                    waited = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(waited, "the client never stops producing output");
        self.collect_written();
        self.check_bounds();
    }

    /// Takes what the client wrote, recording the ActionIDs in it.
    fn collect_written(&mut self) {
        let out = self.client.transmit();
        if out.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(out).into_owned();
        let n = out.len();
        self.client.advance_transmit(n);
        assert!(
            !text.contains("\r\n\r\n\r\n"),
            "an empty line inside what the client wrote: {text:?}"
        );
        assert!(
            !text.contains("bad\r\nAction"),
            "a filter's CR/LF reached the wire: {text:?}"
        );
        for line in text.split("\r\n") {
            if let Some(id) = line.strip_prefix("ActionID: ") {
                // Never written twice, on one connection or across reconnects: an answer to
                // an old ID can then never complete a new action.
                assert!(
                    self.seen_written.insert(id.to_string()),
                    "ActionID {id} written twice"
                );
                self.written.push(id.to_string());
            }
        }
    }

    fn check_bounds(&self) {
        let s = self.client.stats();
        assert!(
            s.event_queue_len <= self.event_cap,
            "{} events queued",
            s.event_queue_len
        );
        assert!(
            s.event_queue_bytes <= self.event_bytes,
            "{} event bytes queued",
            s.event_queue_bytes
        );
        assert!(
            self.client.pending_actions() <= self.max_pending,
            "{} actions pending",
            self.client.pending_actions()
        );
        // Abandoned entries are capped apart, by default at max_pending_actions.
        assert!(
            s.abandoned_actions <= self.max_pending,
            "{} abandoned entries",
            s.abandoned_actions
        );
        // The buffer, its spare room and the arena of one read's worth of slices at most.
        let cap = self.limits.buffer_cap();
        assert!(
            s.decoder_allocated <= 4 * cap + (256 << 10),
            "decoder holds {} bytes (cap {cap})",
            s.decoder_allocated
        );
    }

    fn id(&self, pick: u8) -> String {
        if self.written.is_empty() {
            return "none".to_string();
        }
        let k = usize::from(pick) % self.written.len();
        self.written[self.written.len() - 1 - k].clone()
    }

    fn feed(&mut self, bytes: &[u8]) {
        if !self.connected {
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = self.server_view.feed(rest);
            rest = &rest[n..];
            while let Some(frame) = self.server_view.decode() {
                if let Ok(Frame::Message(m)) = frame {
                    if let Some(id) = m.action_id() {
                        self.answered.insert(id.to_string());
                    }
                }
            }
        }
        self.client.handle_input(self.now, Input::Received(bytes));
    }

    fn send(&mut self, kind: u8, arg: u8) {
        let action = match kind % 6 {
            0 => Action::new("Ping"),
            1 => Action::new("CoreShowChannels"),
            2 => Action::new("Originate")
                .field("Channel", "Local/100@default")
                .field("Application", "Playback")
                .field("Async", if arg & 1 == 0 { "true" } else { "false" }),
            3 => Action::new("Command").field("Command", "core show uptime"),
            4 => Action::new("UserEvent").field("UserEvent", "Fuzz"),
            _ => Action::new("QueueStatus"),
        };
        let options = SendOptions::timeout(Duration::from_millis(1 + 40 * u64::from(arg)));
        let r = self.client.send_action_with(self.now, action, options);
        if self.trace {
            eprintln!("  send {kind}: {r:?}");
        }
        if let Ok(id) = r {
            assert!(
                self.sent.insert(id.clone(), 0).is_none(),
                "{id} returned twice"
            );
        }
    }

    /// A well-formed message for the action `id`, shaped by `how`.
    fn answer(&self, id: &str, how: u8, seq: u8) -> String {
        match how % 12 {
            0 => format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n"),
            1 => format!("Response: Error\r\nActionID: {id}\r\nMessage: No such thing\r\n\r\n"),
            2 => format!(
                "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: follows\r\n\r\n"
            ),
            3 => format!(
                "Event: CoreShowChannel\r\nActionID: {id}\r\nChannel: PJSIP/{seq}\r\n\r\n"
            ),
            4 => format!(
                "Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: {seq}\r\n\r\n"
            ),
            5 => format!(
                "Response: Follows\r\nPrivilege: Command\r\nActionID: {id}\r\nline {seq}\n--END COMMAND--\r\n\r\n"
            ),
            6 => format!(
                "Event: OriginateResponse\r\nActionID: {id}\r\nResponse: {}\r\nChannel: Local/100\r\n\r\n",
                if seq & 1 == 0 { "Success" } else { "Failure" }
            ),
            7 => format!("Response: Goodbye\r\nActionID: {id}\r\nMessage: Thanks\r\n\r\n"),
            8 => format!(
                "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
            ),
            9 => format!("Event: UserEvent\r\nActionID: {id}\r\nUserEvent: Fuzz\r\n\r\n"),
            10 => format!(
                "Response: Success\r\nActionID: {id}\r\nChallenge: {seq:09}\r\n\r\n"
            ),
            _ => format!(
                "Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n"
            ),
        }
    }

    fn step(&mut self, input: &mut Cursor<'_>) {
        let op = input.byte();
        if self.trace {
            eprintln!(
                "op {} (connected {}, pending {}, status {:?})",
                op % 13,
                self.connected,
                self.client.pending_actions(),
                self.client.status()
            );
        }
        match op % 13 {
            0 | 1 => {
                let (kind, arg) = (input.byte(), input.byte());
                self.send(kind, arg);
            }
            2..=4 => {
                let (pick, how, seq) = (input.byte(), input.byte(), input.byte());
                let text = self.answer(&self.id(pick), how, seq);
                self.feed(text.as_bytes());
            }
            5 => {
                // Raw bytes; 0xFF followed by a pick splices in a written ActionID.
                let n = usize::from(input.byte());
                let raw = input.take(n).to_vec();
                let mut wire = Vec::with_capacity(raw.len());
                let mut at = 0;
                while at < raw.len() {
                    if raw[at] == 0xFF && at + 1 < raw.len() {
                        wire.extend_from_slice(self.id(raw[at + 1]).as_bytes());
                        at += 2;
                    } else {
                        wire.push(raw[at]);
                        at += 1;
                    }
                }
                // Read in two parts, so a message split across reads is exercised.
                let cut = usize::from(input.byte()) % (wire.len() + 1);
                self.feed(&wire[..cut]);
                self.feed(&wire[cut..]);
            }
            6 => {
                // A burst of plain events, some of them large.
                let (n, size) = (input.byte() % 64, input.byte());
                let pad = "x".repeat(usize::from(size) * 4);
                let mut wire = String::new();
                for k in 0..n {
                    wire.push_str(&format!(
                        "Event: Newchannel\r\nPrivilege: call,all\r\nSeq: {k}\r\nPad: {pad}\r\n\r\n"
                    ));
                }
                self.feed(wire.as_bytes());
            }
            7 => {
                let ms = u64::from(input.byte()) * u64::from(input.byte()) * 4;
                self.now += Duration::from_millis(ms);
                self.client.handle_timeout(self.now);
            }
            8 => {
                let how = input.byte();
                self.connects_ok = how & 1 == 0;
                self.banner = how & 2 == 0;
                if self.connected {
                    let input = match how % 3 {
                        0 => Input::Eof,
                        1 => Input::TransportError(ErrorKind::ConnectionReset),
                        _ => Input::TransportError(ErrorKind::BrokenPipe),
                    };
                    self.connected = false;
                    self.client.handle_input(self.now, input);
                }
            }
            9 => {
                let n = usize::from(input.byte());
                for _ in 0..n {
                    match self.client.poll_queued() {
                        Some(q) => match q.into_item() {
                            StreamItem::Event(m) => {
                                assert!(!m.is_empty());
                                assert!(self.in_session, "an event before its session's Ready");
                            }
                            StreamItem::Ready { .. } => self.in_session = true,
                            StreamItem::Disconnected { .. } => self.in_session = false,
                            _ => {}
                        },
                        None => break,
                    }
                }
            }
            10 => {
                let pick = usize::from(input.byte());
                let ids: Vec<ActionId> = self.sent.keys().cloned().collect();
                if !ids.is_empty() {
                    self.client.cancel(self.now, &ids[pick % ids.len()]);
                }
            }
            11 => {
                let what = input.byte();
                let r = match what % 4 {
                    0 => {
                        self.client.logoff(self.now);
                        self.logged_off = true;
                        None
                    }
                    1 => Some(self.client.add_filter(self.now, "Event: Newchannel")),
                    2 => Some(self.client.add_filter(self.now, "!Event: VarSet")),
                    _ => Some(self.client.add_filter(self.now, "bad\r\nAction: Logoff")),
                };
                if self.trace {
                    eprintln!("  logoff or filter {}: {r:?}", what % 4);
                }
                if let Some(Ok(id)) = r {
                    assert!(
                        self.sent.insert(id.clone(), 0).is_none(),
                        "{id} returned twice"
                    );
                }
            }
            _ => {
                let mask = ["on", "off", "call,user"][usize::from(input.byte() % 3)];
                let r = self.client.set_event_mask(self.now, mask);
                if self.trace {
                    eprintln!("  events {mask}: {r:?}");
                }
                if let Ok(id) = r {
                    assert!(
                        self.sent.insert(id.clone(), 0).is_none(),
                        "{id} returned twice"
                    );
                }
            }
        }
        self.settle();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor(data);
    let Some(mut h) = Harness::new(&mut input) else {
        return;
    };
    h.settle();
    let mut steps = 0;
    while !input.is_empty() && steps < 512 {
        h.step(&mut input);
        steps += 1;
    }
    h.client.close(h.now);
    h.settle();
    // Whatever the client still wanted to say after close goes nowhere.
    while h.client.poll_event().is_some() {}
    for (id, n) in &h.sent {
        assert_eq!(*n, 1, "{id} completed {n} times by the end");
    }
});
