//! The fleet against servers that say anything: up to four servers added and removed at run
//! time, actions routed by name or by policy, each server fed answers to ActionIDs that any
//! server wrote (its own or another's), raw bytes, floods, disconnects and time jumps, in an
//! order the fuzzer picks. Checked after every step:
//!
//! - nothing panics;
//! - an action completes at most once, on the server it was routed to (an answer carrying
//!   another server's ActionID never completes anything: ActionIDs never cross servers);
//! - an action completes from the server's word (`Ok`, or `ActionError::Server`) only if that
//!   server sent a message carrying its ActionID: no synthetic success;
//! - no ActionID is written twice, by one server or by two;
//! - connects started in one step stay within the budget;
//! - after `close_all`, every routed action has completed exactly once.
//!
//! `cargo +nightly fuzz run fleet`; `FUZZ_TRACE=1` with a crash file prints each step.
#![no_main]

use ami_fuzz::Cursor;
use ami_proto::fleet::{Fleet, FleetConfig, FleetOutput, Policy, Route, ServerId};
use ami_proto::{
    Action, ActionError, ActionId, ClientConfig, ConnectFailure, Decoder, Frame, Input, SendOptions,
};
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::time::{Duration, Instant};

const NAMES: [&str; 4] = ["s0", "s1", "s2", "s3"];

struct Harness {
    fleet: Fleet,
    now: Instant,
    connects_per_step: usize,
    /// Whether each server's connects succeed, and whether its transport is open.
    opens: [bool; 4],
    open: HashSet<ServerId>,
    /// Every ActionID written, by which server, in order.
    written: Vec<(String, String)>,
    seen_written: HashSet<String>,
    /// Routed actions by (server, ID), and how often each completed.
    routed: HashMap<(String, ActionId), u32>,
    /// What each server's client decodes of its current connection, decoded apart with the
    /// same limits, by server name; and the ActionIDs each server sent (on any connection).
    views: HashMap<String, Decoder>,
    answered: HashMap<String, HashSet<String>>,
    trace: bool,
}

fn client_config(b: u8) -> ClientConfig {
    let builder = ClientConfig::builder("admin", "amp111")
        .backoff_base(Duration::from_millis(1 + u64::from(b % 8) * 10))
        .backoff_max(Duration::from_millis(200))
        .breaker_threshold(1 + u32::from(b % 4))
        .breaker_cooldown(Duration::from_secs(1))
        .event_queue_cap(1 + usize::from(b % 16))
        .max_pending_actions(8)
        .max_queued_actions(8)
        .pipeline_depth(1 + usize::from(b % 4))
        .max_list_items(4);
    match builder.build() {
        Ok(c) => c,
        Err(e) => panic!("a valid config was refused: {e}"),
    }
}

impl Harness {
    fn new(cfg: &mut Cursor<'_>) -> Harness {
        let mut config = FleetConfig::default();
        let connects_per_step = 1 + usize::from(cfg.byte() % 3);
        config.budget.connects_per_step = connects_per_step;
        config.seed = u64::from(cfg.byte());
        Harness {
            fleet: Fleet::new(config),
            now: Instant::now(),
            connects_per_step,
            opens: [true; 4],
            open: HashSet::new(),
            written: Vec::new(),
            seen_written: HashSet::new(),
            routed: HashMap::new(),
            views: HashMap::new(),
            answered: HashMap::new(),
            trace: std::env::var_os("FUZZ_TRACE").is_some(),
        }
    }

    fn index(&self, id: ServerId) -> Option<usize> {
        let name = self.fleet.name(id)?;
        NAMES.iter().position(|n| *n == name.as_str())
    }

    /// Runs the fleet's outputs until it waits, playing each transport, then takes what
    /// each server wrote.
    fn settle(&mut self) {
        let mut waited = false;
        for _ in 0..100_000 {
            match self.fleet.poll_output() {
                FleetOutput::Connect(id) => {
                    let ok = self.index(id).is_some_and(|k| self.opens[k]);
                    if ok {
                        self.open.insert(id);
                        self.fleet.handle_input(self.now, id, Input::Connected);
                        if let Some(name) = self.fleet.name(id) {
                            let limits = *client_config(0).decoder_limits();
                            self.views
                                .insert(name.as_str().to_string(), Decoder::new(limits));
                        }
                        self.receive(id, b"Asterisk Call Manager/11.0.0\r\n");
                    } else {
                        self.fleet.handle_input(
                            self.now,
                            id,
                            Input::ConnectFailed(ConnectFailure::Refused),
                        );
                    }
                }
                FleetOutput::Close(id) => {
                    self.open.remove(&id);
                }
                FleetOutput::Completed {
                    server,
                    id,
                    outcome,
                } => {
                    if self.trace {
                        eprintln!("  completed {server}/{id}: {outcome:?}");
                    }
                    let key = (server.as_str().to_string(), id);
                    ami_fuzz::complete_once(&mut self.routed, &key);
                    if matches!(outcome, Ok(_) | Err(ActionError::Server(_))) {
                        let (server, id) = &key;
                        assert!(
                            self.answered
                                .get(server)
                                .is_some_and(|ids| ids.contains(id.as_str())),
                            "{server}/{id} completed from an answer {server} never sent: {outcome:?}"
                        );
                    }
                }
                FleetOutput::Wait(_) => {
                    waited = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(waited, "the fleet never stops producing output");
        let servers: Vec<(ServerId, String)> = self
            .fleet
            .servers()
            .map(|(id, name)| (id, name.as_str().to_string()))
            .collect();
        for (id, name) in servers {
            let out = self.fleet.transmit(id);
            if out.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(out).into_owned();
            let n = out.len();
            self.fleet.advance_transmit(id, n);
            for line in text.split("\r\n") {
                if let Some(action_id) = line.strip_prefix("ActionID: ") {
                    assert!(
                        self.seen_written.insert(action_id.to_string()),
                        "ActionID {action_id} written twice ({name})"
                    );
                    self.written.push((name.clone(), action_id.to_string()));
                }
            }
        }
        let stats = self.fleet.stats();
        assert!(
            stats.most_connects_in_a_step <= self.connects_per_step,
            "{} connects in one step (budget {})",
            stats.most_connects_in_a_step,
            self.connects_per_step
        );
    }

    /// An ActionID some server wrote (any server's).
    fn written_id(&self, pick: u8) -> String {
        if self.written.is_empty() {
            return "none-1".to_string();
        }
        let k = usize::from(pick) % self.written.len();
        self.written[self.written.len() - 1 - k].1.clone()
    }

    fn feed(&mut self, k: usize, bytes: &[u8]) {
        let Some(id) = self.fleet.id(NAMES[k]) else {
            return;
        };
        if self.open.contains(&id) {
            self.receive(id, bytes);
        }
    }

    /// Hands `bytes` to server `id`'s open connection, noting the ActionIDs they carry.
    fn receive(&mut self, id: ServerId, bytes: &[u8]) {
        if let Some(name) = self.fleet.name(id) {
            let name = name.as_str().to_string();
            if let Some(view) = self.views.get_mut(&name) {
                let answered = self.answered.entry(name).or_default();
                let mut rest = bytes;
                while !rest.is_empty() {
                    let n = view.feed(rest);
                    rest = &rest[n..];
                    while let Some(frame) = view.decode() {
                        if let Ok(Frame::Message(m)) = frame {
                            if let Some(action_id) = m.action_id() {
                                answered.insert(action_id.to_string());
                            }
                        }
                    }
                }
            }
        }
        self.fleet
            .handle_input(self.now, id, Input::Received(bytes));
    }

    fn answer(id: &str, how: u8, seq: u8) -> String {
        match how % 7 {
            0 => format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n"),
            1 => format!("Response: Error\r\nActionID: {id}\r\nMessage: No\r\n\r\n"),
            2 => format!(
                "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
            ),
            3 => format!(
                "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: follows\r\n\r\n"
            ),
            4 => format!("Event: QueueMember\r\nActionID: {id}\r\nSeq: {seq}\r\n\r\n"),
            5 => format!(
                "Event: QueueStatusComplete\r\nActionID: {id}\r\nEventList: Complete\r\n\r\n"
            ),
            _ => format!("Response: Goodbye\r\nActionID: {id}\r\n\r\n"),
        }
    }

    fn step(&mut self, input: &mut Cursor<'_>) {
        let op = input.byte();
        let k = usize::from(input.byte() % 4);
        if self.trace {
            eprintln!("op {} on {}", op % 10, NAMES[k]);
        }
        match op % 10 {
            0 => {
                let b = input.byte();
                let r = self.fleet.add(self.now, NAMES[k], client_config(b));
                if self.trace {
                    eprintln!("  add: {r:?}");
                }
            }
            1 => {
                self.fleet.remove(self.now, NAMES[k]);
            }
            2 | 3 => {
                let how = input.byte();
                let route = match how % 3 {
                    0 => Route::Server(NAMES[k]),
                    1 => Route::Any(Policy::RoundRobin),
                    _ => Route::Any(Policy::FewestInFlight),
                };
                let action = if how & 4 == 0 {
                    Action::new("Ping")
                } else {
                    Action::new("QueueStatus")
                };
                let options = SendOptions::timeout(Duration::from_millis(1 + 20 * u64::from(how)));
                let r = self.fleet.send_with(self.now, route, action, options);
                if self.trace {
                    eprintln!("  send: {r:?}");
                }
                if let Ok(routed) = r {
                    let key = (routed.server.as_str().to_string(), routed.id.clone());
                    assert!(
                        self.routed.insert(key, 0).is_none(),
                        "{} routed twice",
                        routed.id
                    );
                }
            }
            4 | 5 => {
                let (pick, how, seq) = (input.byte(), input.byte(), input.byte());
                let text = Self::answer(&self.written_id(pick), how, seq);
                self.feed(k, text.as_bytes());
            }
            6 => {
                let n = usize::from(input.byte());
                let raw = input.take(n).to_vec();
                let mut wire = Vec::with_capacity(raw.len());
                let mut at = 0;
                while at < raw.len() {
                    if raw[at] == 0xFF && at + 1 < raw.len() {
                        wire.extend_from_slice(self.written_id(raw[at + 1]).as_bytes());
                        at += 2;
                    } else {
                        wire.push(raw[at]);
                        at += 1;
                    }
                }
                self.feed(k, &wire);
            }
            7 => {
                let ms = u64::from(input.byte()) * u64::from(input.byte());
                self.now += Duration::from_millis(ms);
                self.fleet.handle_timeout(self.now);
            }
            8 => {
                let how = input.byte();
                self.opens[k] = how & 1 == 0;
                if let Some(id) = self.fleet.id(NAMES[k]) {
                    if self.open.remove(&id) {
                        let input = if how & 2 == 0 {
                            Input::Eof
                        } else {
                            Input::TransportError(ErrorKind::ConnectionReset)
                        };
                        self.fleet.handle_input(self.now, id, input);
                    }
                }
            }
            _ => {
                let n = usize::from(input.byte());
                for _ in 0..n {
                    match self.fleet.poll_queued() {
                        Some(q) => {
                            let item = q.into_item();
                            assert!(NAMES.contains(&item.server.as_str()));
                        }
                        None => break,
                    }
                }
            }
        }
        self.settle();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor(data);
    let mut h = Harness::new(&mut input);
    h.settle();
    let mut steps = 0;
    while !input.is_empty() && steps < 512 {
        h.step(&mut input);
        steps += 1;
    }
    h.fleet.close_all(h.now);
    h.settle();
    for ((server, id), n) in &h.routed {
        assert_eq!(*n, 1, "{server}/{id} completed {n} times by the end");
    }
});
