//! Model-based property test of the client: random operation sequences (actions of several
//! kinds, every kind of server reply including broken and hostile ones, time, disconnects,
//! cancels, reconnects) against a model of what the server actually said.
//!
//! Checked after every step:
//! - every `Completed` is for an ID `send_action` returned, and comes once;
//! - a `LateAnswer` only for an action that ended (timed out, cancelled) before any response,
//!   once, after the server's first response to it;
//! - `Success` only when the server sent a success for that ID (for an async Originate, also
//!   an `OriginateResponse` with `Response: Success`; for a started list, its end);
//!   `ServerError` only after a server error; `ListOverflow` only past `max_list_items`;
//!   every other outcome only in the step that can
//!   cause it (timeouts when time moves, `Cancelled` on cancel, `Unknown` on a lost link,
//!   `NotSent` on close);
//! - `stats().pending` equals the sent-minus-completed count and stays under its cap;
//!   `in_flight <= pipeline_depth`, and while Ready nothing waits in the queue unless the
//!   pipeline is full; the event queue stays under `event_queue_cap`;
//! - an event that no live action claims reaches the stream (delivered, or counted in a gap),
//!   and an event for a live list or originate never does; in the end delivered + gaps ==
//!   everything offered to the stream, in order;
//! - no ActionID is ever written twice (across reconnects), and a response carrying an
//!   ActionID from an earlier connection, or a forged one, completes nothing;
//! - `Output::Wait` is always in the future after `handle_timeout`.
//!
//! After the last step, `close()` must complete every remaining action.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{
    Action, ActionError, ClientConfig, DisconnectReason, FullQueue, Input, Outcome, OverflowPolicy,
    SendError, StreamItem,
};
use proptest::prelude::*;
use scripted::{error, id_of, list_start, msg, originate_queued, pong, success, Harness, Out};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

// ----- operations ------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Reply {
    Success,
    Error,
    ListStart,
    ListItem,
    ListComplete,
    ListErrorAfterStart,
    OriginateResponse(bool),
    Duplicate,
}

#[derive(Debug, Clone)]
enum Op {
    SendPing,
    SendList,
    SendOriginate { timeout_s: u8 },
    Reply { pick: u8, how: Reply },
    Events { n: u8 },
    UserEventEcho { pick: u8 },
    ForeignResponse { pick: u8, mangle: u8 },
    StaleResponse { pick: u8 },
    UnknownFlood { n: u8 },
    Advance { ms: u32 },
    Eof,
    Cancel { pick: u8 },
    Reconnect,
    Consume { n: u8 },
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        4 => Just(Reply::Success),
        1 => Just(Reply::Error),
        3 => Just(Reply::ListStart),
        4 => Just(Reply::ListItem),
        3 => Just(Reply::ListComplete),
        1 => Just(Reply::ListErrorAfterStart),
        3 => any::<bool>().prop_map(Reply::OriginateResponse),
        1 => Just(Reply::Duplicate),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::SendPing),
        3 => Just(Op::SendList),
        3 => (1u8..=8).prop_map(|timeout_s| Op::SendOriginate { timeout_s }),
        18 => (any::<u8>(), reply()).prop_map(|(pick, how)| Op::Reply { pick, how }),
        3 => (1u8..=6).prop_map(|n| Op::Events { n }),
        1 => any::<u8>().prop_map(|pick| Op::UserEventEcho { pick }),
        1 => (any::<u8>(), 0u8..4).prop_map(|(pick, mangle)| Op::ForeignResponse { pick, mangle }),
        1 => any::<u8>().prop_map(|pick| Op::StaleResponse { pick }),
        1 => (1u8..=40).prop_map(|n| Op::UnknownFlood { n }),
        3 => (0u32..8_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Eof),
        2 => any::<u8>().prop_map(|pick| Op::Cancel { pick }),
        3 => Just(Op::Reconnect),
        2 => (1u8..=8).prop_map(|n| Op::Consume { n }),
    ]
}

#[derive(Debug, Clone)]
struct Cfg {
    seed: u64,
    pipeline_depth: usize,
    max_queued: usize,
    max_pending: usize,
    event_cap: usize,
    overflow: OverflowPolicy,
    max_list_items: usize,
}

fn cfg() -> impl Strategy<Value = Cfg> {
    (
        any::<u64>(),
        1usize..=4,
        2usize..=8,
        0usize..=6,
        prop_oneof![1usize..=8, Just(1000)],
        prop_oneof![
            Just(OverflowPolicy::DropOldest),
            Just(OverflowPolicy::DropNewest)
        ],
        prop_oneof![Just(2usize), Just(100_000)],
    )
        .prop_map(
            |(seed, depth, queued, extra, event_cap, overflow, max_list_items)| Cfg {
                seed,
                pipeline_depth: depth,
                max_queued: queued,
                max_pending: depth.max(queued) + extra,
                event_cap,
                overflow,
                max_list_items,
            },
        )
}

// ----- the model -----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ping,
    List,
    Originate,
}

/// One user action as the server of the current connection sees it.
#[derive(Debug)]
struct Received {
    id: String,
    kind: Kind,
    responded: bool,
    error_sent: bool,
    list_open: bool,
    follow_up_sent: bool,
    /// The last response sent, and whether it was a success.
    last_response: Option<(Vec<u8>, bool)>,
}

/// What the server ever said about one ActionID, over the whole run.
#[derive(Debug, Default)]
struct Said {
    success_responses: u32,
    error_responses: u32,
    list_started: bool,
    list_completed: bool,
    originate_success: bool,
    originate_failure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Send,
    Feed,
    Time,
    Eof,
    Cancel(String),
    Final,
    Consume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Ready,
    Backoff,
    Closed,
}

struct Model {
    h: Harness,
    cfg: Cfg,
    /// IDs returned by send_action, with their kind.
    user: HashMap<String, Kind>,
    user_order: Vec<String>,
    completed: HashMap<String, Outcome>,
    said: HashMap<String, Said>,
    /// User actions received on the current connection.
    conn: Vec<Received>,
    /// Every ActionID the server received, all connections.
    all_received: HashSet<String>,
    /// ActionIDs received on earlier connections.
    stale: Vec<String>,
    server_connected: bool,
    phase: Phase,
    log_pos: usize,
    step: Step,
    event_seq: u64,
    offered: u64,
    /// OriginateResponses that came before their action's response, of actions that then
    /// ended unanswered outside a feed (timed out, cancelled, cut by a lost session): each
    /// may reach the stream then (while the session that got it is current).
    early_released: u64,
    /// First responses sent on the current connection for actions that had ended without
    /// one: each may reach the stream (or a gap) as a late answer, once.
    late_due: u64,
    /// Actions whose late answer reached the stream.
    late_seen: HashSet<String>,
    delivered: u64,
    gaps: u64,
    /// Discarded-input notices seen in the stream, summed.
    discards: u64,
    last_delivered_seq: u64,
    /// The stream said a session is up (`Ready`) and not yet that it was lost.
    session_up: bool,
    flood_n: u64,
}

fn list_event(id: &str, seq: u64, complete: bool) -> Vec<u8> {
    let seq = seq.to_string();
    if complete {
        msg(&[
            ("Event", "CoreShowChannelsComplete"),
            ("ActionID", id),
            ("EventList", "Complete"),
            ("ListItems", "0"),
            ("Seq", &seq),
        ])
    } else {
        msg(&[
            ("Event", "CoreShowChannel"),
            ("ActionID", id),
            ("Channel", "Local/1@ami-test-00000001;1"),
            ("Seq", &seq),
        ])
    }
}

fn originate_event(id: &str, seq: u64, ok: bool) -> Vec<u8> {
    let seq = seq.to_string();
    msg(&[
        ("Event", "OriginateResponse"),
        ("Privilege", "call,all"),
        ("ActionID", id),
        ("Response", if ok { "Success" } else { "Failure" }),
        ("Reason", if ok { "4" } else { "5" }),
        ("Seq", &seq),
    ])
}

/// How an event relates to the actions the client knows.
enum Claim {
    /// Nobody can claim it: it must reach the stream.
    Stream,
    /// It answers this user action: claimed while the action is live.
    Action(String),
}

impl Model {
    fn new(cfg: Cfg) -> Model {
        let config = ClientConfig::builder("admin", "s3cr3t-Pa55")
            .events("on")
            .seed(cfg.seed)
            .pipeline_depth(cfg.pipeline_depth)
            .max_queued_actions(cfg.max_queued)
            .max_pending_actions(cfg.max_pending)
            .event_queue_cap(cfg.event_cap)
            .overflow(cfg.overflow)
            .max_list_items(cfg.max_list_items)
            .action_timeout(Duration::from_secs(5))
            .originate_margin(Duration::from_secs(1))
            .ping_interval(Duration::from_secs(4))
            .pong_timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(2))
            .backoff_base(Duration::from_millis(100))
            .backoff_max(Duration::from_secs(2))
            .breaker_cooldown(Duration::from_secs(10))
            .build()
            .unwrap();
        let h = Harness::new(config, Instant::now());
        let mut m = Model {
            h,
            cfg,
            user: HashMap::new(),
            user_order: Vec::new(),
            completed: HashMap::new(),
            said: HashMap::new(),
            conn: Vec::new(),
            all_received: HashSet::new(),
            stale: Vec::new(),
            server_connected: false,
            phase: Phase::Backoff,
            log_pos: 0,
            step: Step::Time,
            event_seq: 0,
            offered: 0,
            early_released: 0,
            late_due: 0,
            late_seen: HashSet::new(),
            delivered: 0,
            gaps: 0,
            discards: 0,
            last_delivered_seq: 0,
            session_up: false,
            flood_n: 0,
        };
        m.settle();
        m
    }

    fn now(&self) -> Instant {
        self.h.now
    }

    fn next_seq(&mut self) -> u64 {
        self.event_seq += 1;
        self.event_seq
    }

    // ----- outputs and the server's automatic answers --------------------------------------

    /// Checks new outputs, then answers Login and heartbeat Pings, until quiet.
    fn settle(&mut self) {
        loop {
            self.check_outputs();
            if self.h.inbox.is_empty() {
                break;
            }
            for m in self.h.take_all() {
                let id = id_of(&m).to_string();
                assert!(
                    self.all_received.insert(id.clone()),
                    "ActionID {id} written twice"
                );
                let action = m.action().unwrap().to_ascii_lowercase();
                if !self.server_connected {
                    continue;
                }
                match (action.as_str(), self.user.get(&id)) {
                    ("login", None) => {
                        self.h.feed(&scripted::login_ok(&id));
                    }
                    ("ping", None) => {
                        self.h.feed(&pong(&id));
                    }
                    (_, Some(kind)) => self.conn.push(Received {
                        id,
                        kind: *kind,
                        responded: false,
                        error_sent: false,
                        list_open: false,
                        follow_up_sent: false,
                        last_response: None,
                    }),
                    (other, None) => panic!("unexpected internal action {other}"),
                }
            }
        }
    }

    fn check_outputs(&mut self) {
        while self.log_pos < self.h.log.len() {
            let out = self.h.log[self.log_pos].clone();
            self.log_pos += 1;
            match out {
                Out::Connect => self.phase = Phase::Connecting,
                Out::Ready(_) => {
                    assert!(self.server_connected);
                    self.phase = Phase::Ready;
                }
                Out::Close => {
                    if self.server_connected {
                        self.server_connected = false;
                        for r in self.conn.drain(..) {
                            self.stale.push(r.id);
                        }
                    }
                }
                Out::Disconnected(reason, retry) => {
                    assert!(retry.is_some());
                    match (&self.step, &reason) {
                        (Step::Eof, DisconnectReason::Eof)
                        | (Step::Time, DisconnectReason::ConnectTimeout) => {}
                        other => panic!("unexpected disconnect {other:?}"),
                    }
                    self.phase = Phase::Backoff;
                }
                Out::Closed(reason) => {
                    assert_eq!(self.step, Step::Final);
                    assert_eq!(reason, DisconnectReason::LocalClose);
                    self.phase = Phase::Closed;
                }
                Out::Completed(id, outcome) => self.check_completed(id.as_str(), outcome),
            }
        }
    }

    fn check_completed(&mut self, id: &str, outcome: Outcome) {
        if self.step != Step::Feed {
            let early = self.said.get(id).is_some_and(|s| {
                (s.originate_success || s.originate_failure)
                    && s.success_responses == 0
                    && s.error_responses == 0
            });
            self.early_released += u64::from(early);
        }
        let kind = *self
            .user
            .get(id)
            .unwrap_or_else(|| panic!("Completed for {id}, never returned by send_action"));
        if let Some(prev) = self.completed.get(id) {
            panic!("{id} completed twice: {prev:?} then {outcome:?}");
        }
        let answer = match &outcome {
            Ok(r) => Some(r),
            Err(e) => e.response(),
        };
        if let Some(r) = answer {
            assert_eq!(r.message().action_id(), Some(id), "answer for another ID");
        }
        let said = self.said.get(id);
        let step = &self.step;
        match &outcome {
            Ok(r) => {
                assert_eq!(*step, Step::Feed, "success without a server message");
                let s = said.unwrap_or_else(|| panic!("synthetic success for {id}"));
                let ok = match kind {
                    Kind::Ping => s.success_responses >= 1,
                    // Only its Complete completes a list: a second response ends it as a
                    // server error, whatever it says.
                    Kind::List if s.list_started => s.list_completed,
                    Kind::List => s.success_responses >= 1,
                    Kind::Originate => {
                        s.success_responses >= 1 && s.originate_success && r.follow_up().is_some()
                    }
                };
                assert!(ok, "synthetic success for {id} ({kind:?}): {s:?}");
            }
            Err(ActionError::Server(_)) => {
                assert_eq!(*step, Step::Feed);
                let s = said.unwrap_or_else(|| panic!("synthetic error for {id}"));
                let second_response = s.list_started && s.success_responses >= 2;
                assert!(
                    s.error_responses >= 1 || s.originate_failure || second_response,
                    "{s:?}"
                );
            }
            Err(ActionError::TimedOut { .. }) => assert_eq!(*step, Step::Time, "{outcome:?}"),
            Err(ActionError::Cancelled) => assert_eq!(*step, Step::Cancel(id.to_string())),
            Err(ActionError::Unknown(reason)) => match step {
                Step::Eof => assert_eq!(*reason, DisconnectReason::Eof),
                Step::Final => assert_eq!(*reason, DisconnectReason::LocalClose),
                other => panic!("Unknown({reason:?}) during {other:?}"),
            },
            Err(ActionError::FollowUpLost { reason, response }) => {
                match step {
                    Step::Eof => assert_eq!(*reason, DisconnectReason::Eof),
                    Step::Final => assert_eq!(*reason, DisconnectReason::LocalClose),
                    other => panic!("FollowUpLost({reason:?}) during {other:?}"),
                }
                // Only an acceptance the server sent: never one made up.
                assert_eq!(kind, Kind::Originate);
                let s = said.unwrap_or_else(|| panic!("synthetic acceptance for {id}"));
                assert!(s.success_responses >= 1, "{s:?}");
                assert!(response.follow_up().is_none());
            }
            Err(ActionError::ListOverflow { items, .. }) => {
                assert_eq!(*step, Step::Feed);
                assert_eq!(kind, Kind::List);
                assert_eq!(*items, self.cfg.max_list_items);
            }
            Err(ActionError::NotSent(reason)) => {
                assert_eq!(*step, Step::Final);
                assert_eq!(*reason, DisconnectReason::LocalClose);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
        self.completed.insert(id.to_string(), outcome);
    }

    fn check_invariants(&mut self) {
        let s = self.h.client.stats();
        assert!(s.pending <= self.cfg.max_pending, "{s:?}");
        assert_eq!(
            s.pending,
            self.user.len() - self.completed.len(),
            "pending = sent - completed"
        );
        assert!(s.in_flight <= self.cfg.pipeline_depth, "{s:?}");
        if self.h.client.is_ready() && s.queued > 0 {
            assert_eq!(
                s.in_flight, self.cfg.pipeline_depth,
                "an action waits while the pipeline has room: {s:?}"
            );
        }
        assert!(s.queued <= self.cfg.max_queued, "{s:?}");
        assert!(self.h.client.events_queued() <= self.cfg.event_cap);
        assert!(s.event_queue_len <= self.cfg.event_cap);
        // Outside feeds, only an early OriginateResponse of an action that ended unanswered
        // reaches the stream, at most one per such action.
        let released = (s.events_queued + s.events_dropped).saturating_sub(self.offered);
        assert!(
            released <= self.early_released + self.late_due,
            "{released} events offered outside a feed, {} early OriginateResponses released, \
             {} late answers possible",
            self.early_released,
            self.late_due
        );
        self.offered += released;
        self.early_released = 0;
        self.late_due = 0;
        assert_eq!(
            s.events_queued + s.events_dropped,
            self.offered,
            "events offered to the stream"
        );
    }

    // ----- server sends ------------------------------------------------------------------------

    fn feed(&mut self, bytes: &[u8]) {
        self.step = Step::Feed;
        self.h.feed(bytes);
        self.settle();
    }

    fn offered_now(&self) -> u64 {
        let s = self.h.client.stats();
        s.events_queued + s.events_dropped
    }

    fn feed_event(&mut self, bytes: &[u8], claim: Claim) {
        let before = self.offered_now();
        let live = match &claim {
            Claim::Action(id) => !self.completed.contains_key(id),
            Claim::Stream => false,
        };
        self.feed(bytes);
        let delta = self.offered_now() - before;
        match claim {
            Claim::Stream => assert_eq!(delta, 1, "an unclaimed event must reach the stream"),
            Claim::Action(id) if live => {
                assert_eq!(delta, 0, "event for live action {id} leaked to the stream")
            }
            Claim::Action(_) => assert!(delta <= 1),
        }
        self.offered += delta;
    }

    fn said(&mut self, id: &str) -> &mut Said {
        self.said.entry(id.to_string()).or_default()
    }

    fn reply(&mut self, pick: u8, how: Reply) {
        if !self.server_connected {
            return;
        }
        let candidates: Vec<usize> = (0..self.conn.len())
            .filter(|&i| {
                let r = &self.conn[i];
                match how {
                    Reply::Success | Reply::Error => !r.responded,
                    Reply::ListStart => r.kind == Kind::List && !r.responded,
                    Reply::ListItem | Reply::ListComplete | Reply::ListErrorAfterStart => {
                        r.list_open
                    }
                    Reply::OriginateResponse(_) => {
                        r.kind == Kind::Originate && !r.follow_up_sent && !r.error_sent
                    }
                    Reply::Duplicate => r.last_response.is_some(),
                }
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let i = candidates[pick as usize % candidates.len()];
        let id = self.conn[i].id.clone();
        let kind = self.conn[i].kind;
        // The first response to an action that ended without one may be a late answer.
        let first = !self.conn[i].responded && self.completed.contains_key(&id);
        if first
            && matches!(
                how,
                Reply::Success | Reply::Error | Reply::ListErrorAfterStart | Reply::ListStart
            )
        {
            self.late_due += 1;
        }
        match how {
            Reply::Success => {
                let bytes = match kind {
                    Kind::Ping => pong(&id),
                    Kind::List => success(&id, "No users defined"),
                    Kind::Originate => originate_queued(&id),
                };
                self.said(&id).success_responses += 1;
                let r = &mut self.conn[i];
                r.responded = true;
                r.last_response = Some((bytes.clone(), true));
                self.feed(&bytes);
            }
            Reply::Error | Reply::ListErrorAfterStart => {
                let bytes = error(&id, "Permission denied");
                self.said(&id).error_responses += 1;
                let r = &mut self.conn[i];
                r.responded = true;
                r.error_sent = true;
                r.list_open = false;
                r.last_response = Some((bytes.clone(), false));
                self.feed(&bytes);
            }
            Reply::ListStart => {
                let bytes = list_start(&id);
                let said = self.said(&id);
                said.success_responses += 1;
                said.list_started = true;
                let r = &mut self.conn[i];
                r.responded = true;
                r.list_open = true;
                r.last_response = Some((bytes.clone(), true));
                self.feed(&bytes);
            }
            Reply::ListItem | Reply::ListComplete => {
                let complete = matches!(how, Reply::ListComplete);
                if complete {
                    self.said(&id).list_completed = true;
                    self.conn[i].list_open = false;
                }
                let seq = self.next_seq();
                self.feed_event(&list_event(&id, seq, complete), Claim::Action(id));
            }
            Reply::OriginateResponse(ok) => {
                if ok {
                    self.said(&id).originate_success = true;
                } else {
                    self.said(&id).originate_failure = true;
                }
                self.conn[i].follow_up_sent = true;
                let seq = self.next_seq();
                self.feed_event(&originate_event(&id, seq, ok), Claim::Action(id));
            }
            Reply::Duplicate => {
                let (bytes, ok) = self.conn[i].last_response.clone().unwrap();
                if ok {
                    self.said(&id).success_responses += 1;
                } else {
                    self.said(&id).error_responses += 1;
                }
                self.feed(&bytes);
            }
        }
    }

    /// A response and an event under an ActionID that must match nothing.
    fn forged(&mut self, forged_id: &str) {
        let completions = self.completed.len();
        let unmatched = self.h.client.stats().unmatched;
        self.feed(&success(forged_id, "not yours"));
        assert_eq!(
            self.completed.len(),
            completions,
            "{forged_id} completed something"
        );
        assert_eq!(self.h.client.stats().unmatched, unmatched + 1);
        let seq = self.next_seq();
        let ev = msg(&[
            ("Event", "UserEvent"),
            ("ActionID", forged_id),
            ("Seq", &seq.to_string()),
        ]);
        self.feed_event(&ev, Claim::Stream);
    }

    // ----- time and connections ---------------------------------------------------------------

    fn advance(&mut self, d: Duration) {
        self.step = Step::Time;
        let target = self.now() + d;
        for _ in 0..10_000 {
            match self.h.wait() {
                Some(w) if w <= target => {
                    let t = w.max(self.now());
                    self.h.advance_to(t);
                    self.settle();
                    self.step = Step::Time;
                    if let Some(next) = self.h.wait() {
                        assert!(next > t, "Wait({next:?}) not after handle_timeout({t:?})");
                    }
                }
                _ => break,
            }
        }
        self.h.advance_to(target);
        self.settle();
    }

    fn reconnect(&mut self) {
        for _ in 0..100 {
            match self.phase {
                Phase::Ready | Phase::Closed => return,
                Phase::Connecting => {
                    self.step = Step::Feed;
                    self.server_connected = true;
                    self.h.connected();
                    self.settle();
                    self.h.feed(scripted::BANNER);
                    self.settle();
                    assert_eq!(self.phase, Phase::Ready, "login answered at once");
                }
                Phase::Backoff => {
                    let w = self.h.wait().expect("a reconnect is scheduled");
                    let d = w.saturating_duration_since(self.now());
                    self.advance(d);
                }
            }
        }
        panic!("never got Ready");
    }

    // ----- one operation ------------------------------------------------------------------------

    fn apply(&mut self, op: &Op) {
        match op {
            Op::SendPing => self.send(Kind::Ping, Action::new("Ping")),
            Op::SendList => self.send(Kind::List, Action::new("CoreShowChannels")),
            Op::SendOriginate { timeout_s } => self.send(
                Kind::Originate,
                scripted::async_originate(u64::from(*timeout_s) * 1000),
            ),
            Op::Reply { pick, how } => self.reply(*pick, *how),
            Op::Events { n } => {
                if self.server_connected {
                    for _ in 0..*n {
                        let seq = self.next_seq();
                        self.feed_event(&scripted::event("Newchannel", seq), Claim::Stream);
                    }
                }
            }
            Op::UserEventEcho { pick } => {
                // A UserEvent echoes the ActionID of a plain action: never claimed.
                let pings: Vec<String> = self
                    .user_order
                    .iter()
                    .filter(|id| self.user[*id] == Kind::Ping)
                    .cloned()
                    .collect();
                if self.server_connected && !pings.is_empty() {
                    let id = pings[*pick as usize % pings.len()].clone();
                    let seq = self.next_seq();
                    let ev = msg(&[
                        ("Event", "UserEvent"),
                        ("ActionID", &id),
                        ("Seq", &seq.to_string()),
                    ]);
                    self.feed_event(&ev, Claim::Stream);
                }
            }
            Op::ForeignResponse { pick, mangle } => {
                if !self.server_connected || self.user_order.is_empty() {
                    return;
                }
                let id = self.user_order[*pick as usize % self.user_order.len()].clone();
                let (prefix, counter) = id.rsplit_once('-').unwrap();
                let forged = match mangle {
                    0 => format!("ZZZZZZZZ-{counter}"),
                    1 => format!("{id}x"),
                    2 => format!("{prefix}-0{counter}"),
                    _ => format!("foreign-{counter}"),
                };
                self.forged(&forged);
            }
            Op::StaleResponse { pick } => {
                if self.server_connected && !self.stale.is_empty() {
                    let id = self.stale[*pick as usize % self.stale.len()].clone();
                    self.forged(&id);
                }
            }
            Op::UnknownFlood { n } => {
                if !self.server_connected {
                    return;
                }
                let unmatched = self.h.client.stats().unmatched;
                let completions = self.completed.len();
                for _ in 0..*n {
                    self.flood_n += 1;
                    let id = format!("flood-{}", self.flood_n);
                    self.feed(&success(&id, "?"));
                    let seq = self.next_seq();
                    let ev = msg(&[
                        ("Event", "VarSet"),
                        ("ActionID", &id),
                        ("Seq", &seq.to_string()),
                    ]);
                    self.feed_event(&ev, Claim::Stream);
                }
                assert_eq!(self.h.client.stats().unmatched, unmatched + u64::from(*n));
                assert_eq!(self.completed.len(), completions);
            }
            Op::Advance { ms } => self.advance(Duration::from_millis(u64::from(*ms))),
            Op::Eof => {
                if self.server_connected {
                    self.step = Step::Eof;
                    self.h.input(Input::Eof);
                    self.settle();
                    assert!(!self.server_connected);
                }
            }
            Op::Cancel { pick } => {
                if self.user_order.is_empty() {
                    return;
                }
                let id = self.user_order[*pick as usize % self.user_order.len()].clone();
                let live = !self.completed.contains_key(&id);
                self.step = Step::Cancel(id.clone());
                let action_id = ami_proto::ActionId::new(&id).unwrap();
                let cancelled = self.h.client.cancel(self.h.now, &action_id);
                self.h.drain();
                self.settle();
                assert_eq!(cancelled, live, "cancel({id}) returned {cancelled}");
                if live {
                    assert_eq!(self.completed.get(&id), Some(&Err(ActionError::Cancelled)));
                }
            }
            Op::Reconnect => self.reconnect(),
            Op::Consume { n } => {
                self.step = Step::Consume;
                for _ in 0..*n {
                    match self.h.client.poll_event() {
                        Some(item) => self.observe(item),
                        None => break,
                    }
                }
            }
        }
    }

    fn send(&mut self, kind: Kind, action: Action) {
        self.step = Step::Send;
        let s = self.h.client.stats();
        let r = self.h.client.send_action(self.h.now, action);
        let expected_full = if s.pending >= self.cfg.max_pending {
            Some(FullQueue::Pending)
        } else if s.queued >= self.cfg.max_queued {
            Some(FullQueue::Queued)
        } else {
            None
        };
        match (r, expected_full) {
            (Ok(id), None) => {
                let id = id.as_str().to_string();
                assert!(!self.user.contains_key(&id), "ID {id} returned twice");
                self.user.insert(id.clone(), kind);
                self.user_order.push(id);
            }
            (Err(SendError::QueueFull { what, .. }), Some(cap)) => assert_eq!(what, cap),
            (r, cap) => panic!("send_action gave {r:?}, expected full: {cap:?}; {s:?}"),
        }
        self.h.drain();
        self.settle();
    }

    fn observe(&mut self, item: StreamItem) {
        match item {
            StreamItem::Event(m) => {
                self.delivered += 1;
                let seq: u64 = m.get_str("Seq").unwrap().parse().unwrap();
                // An OriginateResponse that came before its action's response was held
                // for the action; one that ended unanswered lets it go later, after events
                // that came after it (the one exception to wire order).
                let held = m.event() == Some("OriginateResponse") && seq < self.last_delivered_seq;
                if !held {
                    assert!(seq > self.last_delivered_seq, "stream out of order");
                    self.last_delivered_seq = seq;
                }
            }
            StreamItem::Gap { dropped } => {
                assert!(dropped > 0);
                self.gaps += dropped;
            }
            // Boundaries alternate, starting with Ready.
            StreamItem::Ready { .. } => {
                assert!(!self.session_up, "two Ready with no loss between");
                self.session_up = true;
            }
            StreamItem::Disconnected { .. } => {
                assert!(self.session_up, "a loss with no Ready before it");
                self.session_up = false;
            }
            StreamItem::Discarded { count, .. } => {
                assert!(count > 0);
                self.discards += count;
            }
            // Once per action, only for one that ended without the server's answer: never a
            // success, nor an answer it got.
            StreamItem::LateAnswer { id, .. } => {
                let id = id.as_str().to_string();
                assert!(
                    matches!(
                        self.completed.get(&id),
                        Some(Err(
                            ActionError::TimedOut { partial: None, .. } | ActionError::Cancelled
                        ))
                    ),
                    "late answer for {id}: {:?}",
                    self.completed.get(&id)
                );
                assert!(self.late_seen.insert(id), "a second late answer");
                self.delivered += 1;
            }
            other => panic!("{other:?}"),
        }
    }

    fn finish(&mut self) {
        self.step = Step::Final;
        self.h.client.close(self.h.now);
        self.h.drain();
        self.settle();
        self.check_invariants();
        assert!(self.h.client.is_closed());
        for id in &self.user_order {
            assert!(self.completed.contains_key(id), "{id} never completed");
        }
        assert_eq!(self.completed.len(), self.user.len());
        assert_eq!(self.h.client.stats().pending, 0);
        while let Some(item) = self.h.client.poll_event() {
            self.observe(item);
        }
        assert_eq!(
            self.delivered + self.gaps,
            self.offered,
            "every event offered to the stream is delivered or counted in a gap"
        );
        assert_eq!(self.gaps, self.h.client.stats().events_dropped);
        assert_eq!(self.discards, self.h.client.stats().discarded);
        assert_eq!(self.h.wait(), None);
    }
}

fn run(cfg: Cfg, ops: &[Op]) {
    let mut m = Model::new(cfg);
    m.apply(&Op::Reconnect);
    m.check_invariants();
    for op in ops {
        m.apply(op);
        m.check_invariants();
    }
    m.finish();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_sessions_keep_every_client_invariant(
        cfg in cfg(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(cfg, &ops);
    }
}

/// A fixed, busy sequence through every operation, so a regression shows up even without
/// proptest's search.
#[test]
fn scripted_session_through_every_operation_keeps_the_invariants() {
    let cfg = Cfg {
        seed: 3,
        pipeline_depth: 2,
        max_queued: 4,
        max_pending: 6,
        event_cap: 3,
        overflow: OverflowPolicy::DropOldest,
        max_list_items: 2,
    };
    use Op::*;
    let ops = [
        SendPing,
        SendList,
        SendOriginate { timeout_s: 2 },
        Reply {
            pick: 1,
            how: self::Reply::ListStart,
        },
        Reply {
            pick: 0,
            how: self::Reply::ListItem,
        },
        Events { n: 5 },
        Reply {
            pick: 0,
            how: self::Reply::Success,
        },
        Reply {
            pick: 0,
            how: self::Reply::OriginateResponse(true),
        },
        Reply {
            pick: 0,
            how: self::Reply::ListComplete,
        },
        Consume { n: 2 },
        UserEventEcho { pick: 0 },
        ForeignResponse { pick: 0, mangle: 0 },
        ForeignResponse { pick: 1, mangle: 2 },
        SendPing,
        SendPing,
        Eof,
        StaleResponse { pick: 0 },
        Reconnect,
        StaleResponse { pick: 0 },
        Reply {
            pick: 0,
            how: self::Reply::Duplicate,
        },
        SendList,
        Cancel { pick: 5 },
        Reply {
            pick: 0,
            how: self::Reply::Success,
        },
        Reply {
            pick: 0,
            how: self::Reply::Duplicate,
        },
        UnknownFlood { n: 10 },
        Advance { ms: 11_000 },
        Consume { n: 8 },
    ];
    run(cfg, &ops);
}

/// proptest's shrink of a list overflow that took its pipeline slot twice (in_flight 2 with
/// pipeline_depth 1), kept as a fixed case.
#[test]
fn list_overflow_behind_a_full_pipeline_keeps_the_invariants() {
    let cfg = Cfg {
        seed: 0,
        pipeline_depth: 1,
        max_queued: 2,
        max_pending: 3,
        event_cap: 1,
        overflow: OverflowPolicy::DropOldest,
        max_list_items: 2,
    };
    let item = Op::Reply {
        pick: 0,
        how: Reply::ListItem,
    };
    let ops = [
        Op::SendList,
        Op::SendPing,
        Op::SendPing,
        Op::Reply {
            pick: 0,
            how: Reply::ListStart,
        },
        Op::Cancel { pick: 7 },
        Op::Cancel { pick: 1 },
        Op::SendPing,
        item.clone(),
        Op::SendPing,
        item.clone(),
        item,
    ];
    run(cfg, &ops);
}
