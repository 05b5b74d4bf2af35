//! A scripted AMI server for virtual-time client tests.
//!
//! [`Harness`] owns a [`Client`] and a clock that only moves when a test moves it. It drains
//! every output into a log, decodes every byte the client writes into server-side messages
//! (an inbox the test answers from), and offers builders for the replies a real Asterisk
//! sends (§3-§5, §7 of the protocol reference).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::{
    Action, ActionId, Client, ClientConfig, Decoder, DecoderLimits, DisconnectReason, Frame, Input,
    Message, Notice, Outcome, Output, SendError, SendOptions, StreamItem,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The banner of Asterisk 22 (AMI 11.0.0).
pub const BANNER: &[u8] = b"Asterisk Call Manager/11.0.0\r\n";

/// A copy of one [`Output`] (which is neither `Clone` nor `PartialEq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Connect,
    Close,
    Ready(String),
    Completed(ActionId, Outcome),
    Disconnected(DisconnectReason, Option<Instant>),
    Closed(DisconnectReason),
}

impl Out {
    pub fn completed(&self) -> Option<(&ActionId, &Outcome)> {
        match self {
            Out::Completed(id, o) => Some((id, o)),
            _ => None,
        }
    }
}

/// A client plus the server end of its transport, in virtual time.
pub struct Harness {
    pub client: Client,
    pub t0: Instant,
    pub now: Instant,
    /// Every output so far, in order.
    pub log: Vec<Out>,
    /// The last `Output::Wait` value seen.
    pub last_wait: Option<Instant>,
    /// Every message the client wrote, with the connection it was written on (1-based).
    pub written: Vec<(usize, Message)>,
    /// Messages written and not yet taken by the test.
    pub inbox: VecDeque<Message>,
    /// Connections opened so far (`Input::Connected` reported).
    pub connection: usize,
    /// How many more bytes the transport takes (`None`: everything it is offered). `Some(0)`
    /// is a server that stopped reading with the socket full; `None` again, it resumed.
    pub room: Option<usize>,
    /// When the transport took the first byte of each message in `written`, index for
    /// index: when it was sent, as the client's deadlines count.
    pub taken_at: Vec<Instant>,
    /// Whether every drain first fires what is due (`handle_timeout` once the last `Wait`
    /// deadline has passed), as an adapter step does before it writes (`ami-mio` calls
    /// `handle_timeout` before every write). Off: timer calls happen only when the test
    /// makes them, so a test can model a late timer.
    pub due_timers_first: bool,
    /// When the transport took the first byte of the message the server holds part of.
    partial_since: Option<Instant>,
    server: Decoder,
}

impl Harness {
    /// A client created at `t0`; its first output (`Connect`) is already drained.
    pub fn new(config: ClientConfig, t0: Instant) -> Harness {
        let client = Client::new(config, t0);
        let mut h = Harness {
            client,
            t0,
            now: t0,
            log: Vec::new(),
            last_wait: None,
            written: Vec::new(),
            inbox: VecDeque::new(),
            connection: 0,
            room: None,
            taken_at: Vec::new(),
            due_timers_first: false,
            partial_since: None,
            server: Decoder::without_banner(DecoderLimits::default()),
        };
        h.drain();
        h
    }

    /// `t0 + d`.
    pub fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    /// Drains outputs (until `Wait`) and written bytes; returns the new outputs.
    pub fn drain(&mut self) -> Vec<Out> {
        if self.due_timers_first && self.client.poll_timeout().is_some_and(|d| d <= self.now) {
            self.client.handle_timeout(self.now);
        }
        let mut new = Vec::new();
        loop {
            // An adapter that blocks asks `has_output` before it waits: it must say exactly
            // whether `poll_output` has something before its `Wait`.
            let said = self.client.has_output();
            let out = match self.client.poll_output() {
                Output::Wait(w) => {
                    assert!(!said, "has_output was true before a Wait");
                    self.last_wait = w;
                    break;
                }
                _ if !said => panic!("has_output was false before an output"),
                Output::Connect => Out::Connect,
                Output::Close => Out::Close,
                Output::Notice(Notice::Ready { ami_version }) => Out::Ready(ami_version),
                Output::Notice(Notice::Completed { id, outcome }) => Out::Completed(id, outcome),
                Output::Notice(Notice::Disconnected {
                    reason, retry_at, ..
                }) => Out::Disconnected(reason, retry_at),
                Output::Notice(Notice::Closed { reason }) => Out::Closed(reason),
                other => panic!("unknown output {other:?}"),
            };
            new.push(out);
        }
        let offered = self.client.transmit();
        let n = self
            .room
            .map_or(offered.len(), |room| room.min(offered.len()));
        let bytes = offered[..n].to_vec();
        self.client.advance_transmit(n);
        if let Some(room) = &mut self.room {
            *room -= n;
        }
        self.receive(&bytes);
        self.log.extend(new.iter().cloned());
        new
    }

    /// The server decodes what the transport took now.
    fn receive(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // The first message completed here began when the partial one did, if any.
        let mut began = self.partial_since.take();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = self.server.feed(rest);
            rest = &rest[n..];
            while let Some(frame) = self.server.decode() {
                match frame {
                    Ok(Frame::Message(m)) => {
                        self.written.push((self.connection, m.clone()));
                        self.taken_at.push(began.take().unwrap_or(self.now));
                        self.inbox.push_back(m);
                    }
                    other => panic!("client wrote something odd: {other:?}"),
                }
            }
        }
        if self.server.buffered() > 0 {
            self.partial_since = Some(began.unwrap_or(self.now));
        }
    }

    /// The deadline of the last `Output::Wait`.
    pub fn wait(&self) -> Option<Instant> {
        self.last_wait
    }

    /// Moves the clock to `t` and fires what is due.
    pub fn advance_to(&mut self, t: Instant) -> Vec<Out> {
        assert!(t >= self.now, "virtual time never goes back");
        self.now = t;
        self.client.handle_timeout(t);
        self.drain()
    }

    /// Moves the clock by `d` and fires what is due.
    pub fn advance(&mut self, d: Duration) -> Vec<Out> {
        let t = self.now + d;
        self.advance_to(t)
    }

    /// Reports an input now.
    pub fn input(&mut self, input: Input<'_>) -> Vec<Out> {
        self.client.handle_input(self.now, input);
        self.drain()
    }

    /// The transport opened: a fresh server decoder, then `Input::Connected`.
    pub fn connected(&mut self) -> Vec<Out> {
        self.connection += 1;
        self.server = Decoder::without_banner(DecoderLimits::default());
        self.partial_since = None;
        self.inbox.clear();
        self.input(Input::Connected)
    }

    /// Bytes from the server.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Out> {
        self.client.handle_input(self.now, Input::Received(bytes));
        self.drain()
    }

    /// The server closed the connection.
    pub fn eof(&mut self) -> Vec<Out> {
        self.input(Input::Eof)
    }

    /// Takes the first unanswered message for `action` (case-insensitive).
    pub fn take(&mut self, action: &str) -> Message {
        let pos = self
            .inbox
            .iter()
            .position(|m| m.action().is_some_and(|a| a.eq_ignore_ascii_case(action)))
            .unwrap_or_else(|| panic!("client wrote no {action}; inbox: {:?}", self.inbox));
        self.inbox.remove(pos).unwrap()
    }

    /// Takes everything the client wrote since the last take.
    pub fn take_all(&mut self) -> Vec<Message> {
        self.inbox.drain(..).collect()
    }

    /// Names of the actions in the inbox, in order.
    pub fn inbox_actions(&self) -> Vec<String> {
        self.inbox
            .iter()
            .map(|m| m.action().unwrap_or("?").to_string())
            .collect()
    }

    /// From `Connect`: opens the transport, sends the banner and accepts the login (plain
    /// or MD5). Returns the outputs of the final step, which end with `Ready` when no filter
    /// has to be re-applied.
    pub fn login(&mut self) -> Vec<Out> {
        self.connected();
        self.feed(BANNER);
        if self.inbox.iter().any(|m| {
            m.action()
                .is_some_and(|a| a.eq_ignore_ascii_case("Challenge"))
        }) {
            let c = self.take("Challenge");
            self.feed(&challenge(id_of(&c), "123456789"));
        }
        let login = self.take("Login");
        self.feed(&login_ok(id_of(&login)))
    }

    /// The server hangs up; at the retry the client connects again, reads the banner and
    /// writes its Login, which is returned (unanswered).
    pub fn lose_and_reconnect_to_login(&mut self) -> Message {
        let retry = self
            .eof()
            .iter()
            .find_map(|o| match o {
                Out::Disconnected(_, Some(at)) => Some(*at),
                _ => None,
            })
            .expect("a retry after the loss");
        self.advance_to(retry);
        self.connected();
        self.feed(BANNER);
        self.take("Login")
    }

    /// [`login`](Self::login), then asserts the session is Ready.
    pub fn ready(&mut self) {
        let out = self.login();
        assert!(
            matches!(out.last(), Some(Out::Ready(_))),
            "not ready after login: {out:?}"
        );
    }

    /// A session Ready with its login events read: events on, pings an hour apart (none in
    /// a test), actions timing out after `action_timeout`, ActionIDs from `seed`.
    pub fn ready_now(seed: u64, action_timeout: Duration) -> Harness {
        let config = ClientConfig::builder("admin", "amp111")
            .events("on")
            .seed(seed)
            .ping_interval(Duration::from_secs(3600))
            .action_timeout(action_timeout)
            .build()
            .unwrap();
        let mut h = Harness::new(config, Instant::now());
        h.ready();
        h.events();
        h
    }

    /// Sends an action and drains; panics if the client refuses it.
    pub fn send(&mut self, action: Action) -> ActionId {
        let id = self.client.send_action(self.now, action).unwrap();
        self.drain();
        id
    }

    /// Sends an action with options and drains.
    pub fn send_with(&mut self, action: Action, options: SendOptions) -> ActionId {
        let id = self
            .client
            .send_action_with(self.now, action, options)
            .unwrap();
        self.drain();
        id
    }

    /// Tries to send an action and drains.
    pub fn try_send(&mut self, action: Action) -> Result<ActionId, SendError> {
        let r = self.client.send_action(self.now, action);
        self.drain();
        r
    }

    /// Every outcome reported for `id`.
    pub fn outcomes(&self, id: &ActionId) -> Vec<&Outcome> {
        self.log
            .iter()
            .filter_map(Out::completed)
            .filter(|(i, _)| *i == id)
            .map(|(_, o)| o)
            .collect()
    }

    /// The single outcome of `id`; panics unless it completed exactly once.
    pub fn outcome(&self, id: &ActionId) -> &Outcome {
        let all = self.outcomes(id);
        assert_eq!(all.len(), 1, "{id} completed {} times: {all:?}", all.len());
        all[0]
    }

    /// Everything in the event stream now.
    pub fn events(&mut self) -> Vec<StreamItem> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }
}

/// The ActionID of a message the client wrote.
pub fn id_of(m: &Message) -> &str {
    m.action_id()
        .expect("every client action carries an ActionID")
}

/// One message from `Key: Value` pairs, CRLF-terminated, with the blank line.
pub fn msg(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub fn login_ok(id: &str) -> Vec<u8> {
    msg(&[
        ("Response", "Success"),
        ("ActionID", id),
        ("Message", "Authentication accepted"),
    ])
}

pub fn challenge(id: &str, challenge: &str) -> Vec<u8> {
    msg(&[
        ("Response", "Success"),
        ("ActionID", id),
        ("Challenge", challenge),
    ])
}

pub fn pong(id: &str) -> Vec<u8> {
    msg(&[
        ("Response", "Success"),
        ("ActionID", id),
        ("Ping", "Pong"),
        ("Timestamp", "1.0"),
    ])
}

pub fn success(id: &str, message: &str) -> Vec<u8> {
    msg(&[
        ("Response", "Success"),
        ("ActionID", id),
        ("Message", message),
    ])
}

pub fn error(id: &str, message: &str) -> Vec<u8> {
    msg(&[
        ("Response", "Error"),
        ("ActionID", id),
        ("Message", message),
    ])
}

pub fn goodbye(id: &str) -> Vec<u8> {
    msg(&[
        ("Response", "Goodbye"),
        ("ActionID", id),
        ("Message", "Thanks for all the fish."),
    ])
}

pub fn list_start(id: &str) -> Vec<u8> {
    msg(&[
        ("Response", "Success"),
        ("ActionID", id),
        ("EventList", "start"),
        ("Message", "Channels will follow"),
    ])
}

pub fn list_item(id: &str, n: usize) -> Vec<u8> {
    let channel = format!("Local/{n}@ami-test-00000001;1");
    msg(&[
        ("Event", "CoreShowChannel"),
        ("ActionID", id),
        ("Channel", &channel),
        ("ChannelState", "6"),
    ])
}

pub fn list_complete(id: &str, items: usize) -> Vec<u8> {
    let n = items.to_string();
    msg(&[
        ("Event", "CoreShowChannelsComplete"),
        ("ActionID", id),
        ("EventList", "Complete"),
        ("ListItems", &n),
    ])
}

pub fn originate_queued(id: &str) -> Vec<u8> {
    success(id, "Originate successfully queued")
}

pub fn originate_response(id: &str, ok: bool) -> Vec<u8> {
    msg(&[
        ("Event", "OriginateResponse"),
        ("Privilege", "call,all"),
        ("ActionID", id),
        ("Response", if ok { "Success" } else { "Failure" }),
        ("Channel", "Local/100@ami-test"),
        ("Reason", if ok { "4" } else { "5" }),
        ("Uniqueid", "1700000000.1"),
    ])
}

/// An ordinary async event (no ActionID).
pub fn event(name: &str, seq: u64) -> Vec<u8> {
    let seq = seq.to_string();
    msg(&[("Event", name), ("Privilege", "call,all"), ("Seq", &seq)])
}

/// An async Originate (`Async: true`) with `Timeout` in ms.
pub fn async_originate(timeout_ms: u64) -> Action {
    Action::new("Originate")
        .field("Channel", "Local/100@ami-test")
        .field("Application", "Wait")
        .field("Data", "1")
        .field("Timeout", timeout_ms.to_string())
        .field("Async", "true")
}

/// A stream item as a short label: event name and `Seq`, `gapN`, `ready` or `down:<reason>`.
pub fn stream_label(item: &StreamItem) -> String {
    match item {
        StreamItem::Event(m) => format!(
            "{}{}",
            m.event().unwrap_or("?"),
            m.get_str("Seq").unwrap_or("")
        ),
        StreamItem::Gap { dropped } => format!("gap{dropped}"),
        StreamItem::Ready { .. } => "ready".to_string(),
        StreamItem::Mark { mark } => format!("mark{mark}"),
        StreamItem::Disconnected { reason } => format!("down:{reason}"),
        other => format!("{other:?}"),
    }
}
