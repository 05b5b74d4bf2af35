//! The client on a clock it does not own: `now` that jumps forward by hours (a suspended
//! laptop or VM resumed) and `now` smaller than an earlier one (an application's own virtual
//! clock, or a misuse). Neither may panic, fire a timer early, leave a deadline due after a
//! step handled everything due (an adapter would wake at once, again and again), or leave
//! nothing to wait for while something waits on time (an action would never time out).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{Action, ActionId, ClientConfig, ConnectFailure, Input, SendOptions, Status};
use proptest::prelude::*;
use scripted::{async_originate, id_of, list_start, originate_queued, pong, success, Harness, Out};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One step of a random schedule.
#[derive(Debug, Clone)]
enum Op {
    /// The connect asked for opens and the session logs in.
    Login,
    /// The connect asked for opens; no banner yet.
    Open,
    /// The connect asked for fails.
    Refused,
    /// Send a Ping with this timeout (ms).
    Send(u64),
    /// The server answers the oldest action it holds: a Ping with a Pong, a list with its
    /// start (its items never come), an Originate with its response (its OriginateResponse
    /// never comes).
    Answer,
    /// Send a list action (CoreShowChannels) with this timeout (ms).
    List(u64),
    /// Send an async Originate with this `Timeout` (ms).
    Originate(u64),
    /// Cancel the oldest action still pending.
    Cancel,
    /// Log off.
    Logoff,
    /// The server hangs up.
    Eof,
    /// Time moves on by this many ms.
    Forward(u64),
    /// Time jumps forward by this many minutes.
    Jump(u64),
    /// Time goes back by this many ms (never before the first instant).
    Back(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Login),
        1 => Just(Op::Open),
        1 => Just(Op::Refused),
        4 => (1u64..120_000).prop_map(Op::Send),
        3 => Just(Op::Answer),
        1 => (1u64..120_000).prop_map(Op::List),
        1 => (1u64..120_000).prop_map(Op::Originate),
        1 => Just(Op::Cancel),
        1 => Just(Op::Eof),
        4 => (0u64..20_000).prop_map(Op::Forward),
        1 => (1u64..600).prop_map(Op::Jump),
        2 => (0u64..7_200_000).prop_map(Op::Back),
        1 => Just(Op::Logoff),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_clock_that_jumps_or_goes_back_never_panics_busy_loops_or_forgets_a_deadline(
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        // Far enough from the first instant that time may go back hours.
        let t0 = Instant::now() + Duration::from_secs(86_400);
        let cfg = ClientConfig::builder("admin", "s3cr3t")
            .seed(11)
            .ping_interval(Duration::from_secs(20))
            .pong_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut h = Harness::new(cfg, t0);
        let mut connect_wanted = true;
        let mut open = false;
        let mut seen = h.log.len();
        let mut outcomes: HashMap<ActionId, usize> = HashMap::new();
        let mut sent: Vec<ActionId> = Vec::new();
        for op in &ops {
            match op {
                Op::Login if connect_wanted => {
                    connect_wanted = false;
                    open = true;
                    h.login();
                }
                Op::Open if connect_wanted => {
                    connect_wanted = false;
                    open = true;
                    h.connected();
                }
                Op::Refused if connect_wanted => {
                    connect_wanted = false;
                    h.input(Input::ConnectFailed(ConnectFailure::Refused));
                }
                Op::Send(ms) => {
                    let r = h.client.send_action_with(
                        h.now,
                        Action::new("Ping"),
                        SendOptions::timeout(Duration::from_millis(*ms)),
                    );
                    sent.extend(r.ok());
                    h.drain();
                }
                Op::Answer => {
                    if let Some(m) = h.inbox.pop_front() {
                        match m.action() {
                            Some("Ping") => h.feed(&pong(id_of(&m))),
                            Some("CoreShowChannels") => h.feed(&list_start(id_of(&m))),
                            Some("Originate") => h.feed(&originate_queued(id_of(&m))),
                            _ => h.feed(&success(id_of(&m), "ok")),
                        };
                    }
                }
                Op::List(ms) => {
                    let r = h.client.send_action_with(
                        h.now,
                        Action::new("CoreShowChannels"),
                        SendOptions::timeout(Duration::from_millis(*ms)),
                    );
                    sent.extend(r.ok());
                    h.drain();
                }
                Op::Originate(ms) => {
                    sent.extend(h.client.send_action(h.now, async_originate(*ms)).ok());
                    h.drain();
                }
                Op::Cancel => {
                    let pending: Vec<ActionId> = sent
                        .iter()
                        .filter(|id| !outcomes.contains_key(*id))
                        .cloned()
                        .collect();
                    if let Some(id) = pending.first() {
                        h.client.cancel(h.now, id);
                        h.drain();
                    }
                }
                Op::Logoff => {
                    h.client.logoff(h.now);
                    h.drain();
                }
                Op::Eof if open => {
                    open = false;
                    h.eof();
                }
                Op::Forward(ms) => h.now += Duration::from_millis(*ms),
                Op::Jump(min) => h.now += Duration::from_secs(min * 60),
                Op::Back(ms) => {
                    h.now = h
                        .now
                        .checked_sub(Duration::from_millis(*ms))
                        .filter(|t| *t >= h.t0 - Duration::from_secs(86_400))
                        .unwrap_or(h.now);
                }
                _ => {}
            }
            // The adapter's step: what is due fires, then it sleeps until the next deadline.
            let now = h.now;
            h.client.handle_timeout(now);
            h.drain();
            for out in &h.log[seen..] {
                match out {
                    Out::Connect => connect_wanted = true,
                    Out::Close => open = false,
                    // The connect asked for, if any, is over.
                    Out::Disconnected(..) | Out::Closed(_) => {
                        connect_wanted = false;
                        open = false;
                    }
                    Out::Completed(id, _) => *outcomes.entry(id.clone()).or_default() += 1,
                    _ => {}
                }
            }
            seen = h.log.len();
            let wait = h.client.poll_timeout();
            prop_assert!(
                wait.is_none_or(|d| d > now),
                "after {op:?}: a deadline {:?} at or before now is left after the step",
                wait.map(|d| now.saturating_duration_since(d))
            );
            let waiting_on_time = h.client.pending_actions() > 0
                || !matches!(h.client.status(), Status::Ready { .. } | Status::Closed { .. });
            prop_assert!(
                !waiting_on_time || wait.is_some(),
                "after {op:?}: {} actions pending, status {:?}, and no deadline",
                h.client.pending_actions(),
                h.client.status()
            );
            prop_assert!(
                outcomes.values().all(|n| *n == 1),
                "an action completed twice: {outcomes:?}"
            );
        }
    }
}

/// One step of a random fleet schedule; `usize`s pick a server.
#[derive(Debug, Clone)]
enum FleetOp {
    /// The server's connect, if asked for, opens and it logs in.
    Login(usize),
    /// The server's connect, if asked for, fails.
    Refused(usize),
    /// The server answers the oldest action it holds (a Ping: a Pong).
    Answer(usize),
    /// The server hangs up.
    Eof(usize),
    /// A Ping for the server with this timeout (ms).
    Send(usize, u64),
    /// Time moves on by this many ms.
    Forward(u64),
    /// Time jumps forward by this many minutes.
    Jump(u64),
    /// Time goes back by this many ms.
    Back(u64),
}

fn fleet_op() -> impl Strategy<Value = FleetOp> {
    let s = 0usize..3;
    prop_oneof![
        3 => s.clone().prop_map(FleetOp::Login),
        1 => s.clone().prop_map(FleetOp::Refused),
        3 => s.clone().prop_map(FleetOp::Answer),
        1 => s.clone().prop_map(FleetOp::Eof),
        4 => (s, 1u64..120_000).prop_map(|(i, ms)| FleetOp::Send(i, ms)),
        4 => (0u64..20_000).prop_map(FleetOp::Forward),
        1 => (1u64..600).prop_map(FleetOp::Jump),
        2 => (0u64..7_200_000).prop_map(FleetOp::Back),
    ]
}

/// One scripted server of the fleet test: whether a connect is asked for or open, and a
/// decoder of what the client wrote.
struct Peer {
    wanted: bool,
    open: bool,
    decoder: ami_proto::Decoder,
    inbox: std::collections::VecDeque<ami_proto::Message>,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            wanted: false,
            open: false,
            decoder: ami_proto::Decoder::without_banner(ami_proto::DecoderLimits::default()),
            inbox: Default::default(),
        }
    }

    /// Takes every byte the server's client has to write into the inbox.
    fn take(&mut self, fleet: &mut ami_proto::fleet::Fleet, id: ami_proto::fleet::ServerId) {
        let bytes = fleet.transmit(id).to_vec();
        fleet.advance_transmit(id, bytes.len());
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = self.decoder.feed(rest);
            rest = &rest[n..];
            while let Some(frame) = self.decoder.decode() {
                if let Ok(ami_proto::Frame::Message(m)) = frame {
                    self.inbox.push_back(m);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_fleet_on_a_clock_that_jumps_or_goes_back_never_busy_loops_or_forgets_a_deadline(
        ops in proptest::collection::vec(fleet_op(), 1..150),
    ) {
        use ami_proto::fleet::{Fleet, FleetConfig, FleetOutput, Route, ServerStatus};
        let t0 = Instant::now() + Duration::from_secs(86_400);
        let mut now = t0;
        let mut fleet = Fleet::new(FleetConfig::default());
        let names = ["a", "b", "c"];
        let mut ids = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let cfg = ClientConfig::builder("admin", "s3cr3t")
                .seed(20 + i as u64)
                .ping_interval(Duration::from_secs(20))
                .pong_timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            ids.push(fleet.add(now, name, cfg).unwrap());
        }
        let mut peers: Vec<Peer> = names.iter().map(|_| Peer::new()).collect();
        let mut outcomes: HashMap<ActionId, usize> = HashMap::new();
        for op in std::iter::once(&FleetOp::Forward(0)).chain(&ops) {
            match *op {
                FleetOp::Login(i) if peers[i].wanted => {
                    let (p, id) = (&mut peers[i], ids[i]);
                    p.wanted = false;
                    p.open = true;
                    p.decoder = ami_proto::Decoder::without_banner(Default::default());
                    p.inbox.clear();
                    fleet.handle_input(now, id, Input::Connected);
                    fleet.handle_input(now, id, Input::Received(b"Asterisk Call Manager/11.0.0\r\n"));
                    p.take(&mut fleet, id);
                    if let Some(login) = p.inbox.pop_front() {
                        let ok = scripted::login_ok(id_of(&login));
                        fleet.handle_input(now, id, Input::Received(&ok));
                    }
                }
                FleetOp::Refused(i) if peers[i].wanted => {
                    peers[i].wanted = false;
                    fleet.handle_input(now, ids[i], Input::ConnectFailed(ConnectFailure::Refused));
                }
                FleetOp::Answer(i) if peers[i].open => {
                    peers[i].take(&mut fleet, ids[i]);
                    if let Some(m) = peers[i].inbox.pop_front() {
                        let answer = match m.action() {
                            Some("Ping") => pong(id_of(&m)),
                            _ => success(id_of(&m), "ok"),
                        };
                        fleet.handle_input(now, ids[i], Input::Received(&answer));
                    }
                }
                FleetOp::Eof(i) if peers[i].open => {
                    peers[i].open = false;
                    fleet.handle_input(now, ids[i], Input::Eof);
                }
                FleetOp::Send(i, ms) => {
                    let _ = fleet.send_with(
                        now,
                        Route::Server(names[i]),
                        Action::new("Ping"),
                        SendOptions::timeout(Duration::from_millis(ms)),
                    );
                }
                FleetOp::Forward(ms) => now += Duration::from_millis(ms),
                FleetOp::Jump(min) => now += Duration::from_secs(min * 60),
                FleetOp::Back(ms) => {
                    now = now
                        .checked_sub(Duration::from_millis(ms))
                        .filter(|t| *t >= t0 - Duration::from_secs(86_400))
                        .unwrap_or(now);
                }
                _ => {}
            }
            // The adapter's step: what is due fires, the outputs are carried out, then it
            // sleeps until the fleet's next deadline.
            fleet.handle_timeout(now);
            let wait = loop {
                match fleet.poll_output() {
                    FleetOutput::Wait(w) => break w,
                    FleetOutput::Connect(id) => {
                        let i = ids.iter().position(|x| *x == id).unwrap();
                        peers[i].wanted = true;
                        peers[i].open = false;
                    }
                    FleetOutput::Close(id) => {
                        let i = ids.iter().position(|x| *x == id).unwrap();
                        peers[i].open = false;
                    }
                    FleetOutput::Completed { id, .. } => {
                        *outcomes.entry(id).or_default() += 1;
                    }
                    _ => {}
                }
            };
            for (i, id) in ids.iter().enumerate() {
                if peers[i].open {
                    peers[i].take(&mut fleet, *id);
                }
            }
            prop_assert!(
                wait.is_none_or(|d| d > now),
                "after {op:?}: a deadline {:?} at or before now is left after the step",
                wait.map(|d| now.saturating_duration_since(d))
            );
            let waiting_on_time = names.iter().any(|n| {
                let pending = fleet.client(n).is_some_and(|c| c.pending_actions() > 0);
                let status = fleet.status(n);
                pending || !matches!(status, Some(ServerStatus::Ready { .. } | ServerStatus::Closed { .. }))
            });
            prop_assert!(
                !waiting_on_time || wait.is_some(),
                "after {op:?}: a server waits on time and the fleet has no deadline"
            );
            prop_assert!(
                outcomes.values().all(|n| *n == 1),
                "an action completed twice: {outcomes:?}"
            );
        }
    }
}
