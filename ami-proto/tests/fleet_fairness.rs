//! Fairness of a fleet by bytes under capped budgets, and under reconnect storms (laws 4 and 9):
//! an adapter loop in virtual time over in-memory transports, reading with a [`Scheduler`]'s
//! per-turn and per-step byte and message budgets as a real adapter does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: a real epoch for virtual time
#![allow(clippy::needless_range_loop)] // one index walks several per-server arrays

#[path = "support/fleet_login.rs"]
mod fleet_login;

use ami_proto::fleet::*;
use ami_proto::{ClientConfig, ConnectFailure, Input, StreamItem};
use fleet_login::answer;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A legal event of exactly `len` bytes (at least 64): one long variable pads it.
fn event_of_len(name: &str, seq: u64, len: usize) -> Vec<u8> {
    let head = format!("Event: {name}\r\nSeq: {seq}\r\nVariable: ");
    let tail = "\r\n\r\n";
    let pad = len.saturating_sub(head.len() + tail.len());
    let mut e = head.into_bytes();
    e.resize(e.len() + pad, b'x');
    e.extend_from_slice(tail.as_bytes());
    e
}

/// A small deterministic generator (the run must be the same every time).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// One in-memory transport per server: bytes the server sent that the adapter has not read.
struct Loop {
    fleet: Fleet,
    scheduler: Scheduler,
    ids: Vec<ServerId>,
    inbound: Vec<VecDeque<u8>>,
    /// Bytes the adapter's loop read from each server.
    read: Vec<usize>,
    /// Most bytes one read call takes (the adapter's read buffer): a read may overshoot the
    /// turn's allowance by less than this, as the budget's docs allow.
    chunk: usize,
}

impl Loop {
    fn new(names: &[&str], budget: Budget, chunk: usize, config: &ClientConfig) -> Loop {
        let now = Instant::now();
        let mut fc = FleetConfig::default();
        fc.budget = budget;
        fc.seed = 7;
        let mut fleet = Fleet::new(fc);
        let ids = names
            .iter()
            .map(|n| fleet.add(now, n, config.clone()).unwrap())
            .collect();
        Loop {
            fleet,
            scheduler: Scheduler::new(budget),
            ids,
            inbound: vec![VecDeque::new(); names.len()],
            read: vec![0; names.len()],
            chunk,
        }
    }

    /// Connects open at once and greet; every write is answered into the server's inbound
    /// bytes, so the answers too wait for the server's turn.
    fn transport(&mut self, now: Instant) {
        loop {
            match self.fleet.poll_output() {
                FleetOutput::Wait(_) => break,
                FleetOutput::Connect(id) => {
                    self.fleet.handle_input(now, id, Input::Connected);
                    let i = self.ids.iter().position(|x| *x == id).unwrap();
                    self.inbound[i].extend(b"Asterisk Call Manager/11.0.0\r\n");
                }
                _ => {}
            }
        }
        for (i, id) in self.ids.iter().enumerate() {
            let wire = self.fleet.transmit(*id).to_vec();
            self.fleet.advance_transmit(*id, wire.len());
            self.inbound[i].extend(answer(&wire));
        }
    }

    /// One step of the adapter's read loop under the scheduler's budgets.
    fn read_step(&mut self, now: Instant) {
        let mut step = self.scheduler.begin(self.ids.len());
        for i in step.order() {
            let id = self.ids[i];
            if self.inbound[i].is_empty() || !self.fleet.wants_read(id) {
                continue;
            }
            let Some(mut turn) = step.turn(i) else {
                continue;
            };
            while !turn.is_spent() && !self.inbound[i].is_empty() {
                let n = self.chunk.min(self.inbound[i].len());
                let bytes: Vec<u8> = self.inbound[i].drain(..n).collect();
                let before = self.fleet.messages_in(id);
                self.fleet.handle_input(now, id, Input::Received(&bytes));
                let decoded = self.fleet.messages_in(id) - before;
                turn.charge(n, usize::try_from(decoded).unwrap());
                self.read[i] += n;
            }
            step.end_turn(turn);
        }
        self.scheduler.finish(step);
    }
}

/// Flooders send 32-64 KiB events (legal: far under the line and message limits) as fast as
/// the loop reads them; small servers send one ~500-byte event per tick. The step's byte
/// budget fits about two flooder turns, so the flooders alone could spend every step. Each
/// small server's events still come out of the merged stream within a bounded number of
/// ticks, none is lost, and the flooders are not starved either: the byte budget shares the
/// loop, not only the count of turns.
#[test]
fn small_servers_events_come_out_within_bounded_ticks_next_to_servers_flooding_large_events() {
    for seed in 1..=4u64 {
        let mut rng = Lcg(seed);
        let flooders = 3;
        let names = ["f0", "f1", "f2", "s0", "s1", "s2", "s3"];
        let n = names.len();
        let mut budget = Budget::default();
        budget.read_bytes_per_conn = 16 << 10;
        budget.messages_per_conn = 64;
        budget.read_bytes_per_step = 32 << 10;
        budget.messages_per_step = 128;
        let config = ClientConfig::builder("admin", "amp111")
            .event_queue_cap(64)
            .build()
            .unwrap();
        let mut lp = Loop::new(&names, budget, 8 << 10, &config);
        let start = Instant::now();
        // Ticks at which each small server sent its events not yet seen in the stream.
        let mut sent: Vec<VecDeque<u64>> = vec![VecDeque::new(); n];
        let mut worst = vec![0u64; n];
        let mut delivered = vec![0u64; n];
        let mut small_bytes_sent = 0usize;
        let mut seq = 0u64;
        let ticks = 400u64;
        for t in 0..ticks {
            let now = start + Duration::from_millis(t);
            lp.fleet.handle_timeout(now);
            lp.transport(now);
            let ready = lp
                .fleet
                .servers()
                .all(|(_, name)| lp.fleet.status(name.as_str()).is_some_and(|s| s.is_ready()));
            if ready && t < ticks - 50 {
                for i in 0..flooders {
                    while lp.inbound[i].len() < 256 << 10 {
                        let len = (32 << 10) + usize::try_from(rng.next(32 << 10)).unwrap();
                        seq += 1;
                        lp.inbound[i].extend(event_of_len("Flood", seq, len));
                    }
                }
                for i in flooders..n {
                    let len = 450 + usize::try_from(rng.next(100)).unwrap();
                    seq += 1;
                    lp.inbound[i].extend(event_of_len("Small", seq, len));
                    small_bytes_sent += len;
                    sent[i].push_back(t);
                }
            }
            lp.read_step(now);
            lp.transport(now);
            // The reader takes a batch a tick: enough for a few rotations, not the floods.
            for _ in 0..4 * n {
                let Some(item) = lp.fleet.poll_event() else {
                    break;
                };
                let i = names
                    .iter()
                    .position(|x| *x == item.server.as_str())
                    .unwrap();
                match item.item {
                    StreamItem::Event(_) => {
                        delivered[i] += 1;
                        if i >= flooders {
                            let at = sent[i].pop_front().unwrap();
                            worst[i] = worst[i].max(t - at);
                        }
                    }
                    StreamItem::Gap { dropped } if i >= flooders => {
                        panic!("small server {} lost {dropped} events", names[i])
                    }
                    _ => {}
                }
            }
        }
        // ceil(n / k) steps with k >= 1 turns a step, and the reader's batch covers a rotation.
        let bound = u64::try_from(n).unwrap();
        for i in flooders..n {
            assert!(
                sent[i].is_empty(),
                "seed {seed}: {} still has {} events unseen; read {:?}",
                names[i],
                sent[i].len(),
                lp.read
            );
            assert!(
                worst[i] <= bound,
                "seed {seed}: {} waited {} ticks for an event (bound {bound}); read {:?}",
                names[i],
                worst[i],
                lp.read
            );
        }
        let small_read: usize = lp.read[flooders..].iter().sum();
        assert!(
            small_read >= small_bytes_sent,
            "small servers' bytes left unread"
        );
        for i in 0..flooders {
            assert!(
                delivered[i] > 20 && lp.read[i] > 1 << 20,
                "seed {seed}: flooder {} starved: {} events, {} bytes",
                names[i],
                delivered[i],
                lp.read[i]
            );
        }
        // The flooders share the bytes among themselves within one turn's allowance or so.
        let (lo, hi) = (
            lp.read[..flooders].iter().min().copied().unwrap(),
            lp.read[..flooders].iter().max().copied().unwrap(),
        );
        assert!(
            hi - lo <= 4 * (budget.read_bytes_per_conn + (8 << 10)),
            "{:?}",
            lp.read
        );
    }
}

/// Servers whose connects always fail next to healthy servers that keep losing their
/// sessions: with one connect a step, each healthy server is connecting again within a
/// bounded number of steps of its client asking, however often the failing ones ask
/// (reconnect storms cannot take the steps for themselves).
#[test]
fn failing_reconnects_cannot_keep_healthy_servers_from_their_connects() {
    let names = ["d0", "d1", "d2", "d3", "d4", "d5", "h0", "h1"];
    let dead = 6;
    let n = names.len();
    let mut budget = Budget::default();
    budget.connects_per_step = 1;
    let config = ClientConfig::builder("admin", "amp111")
        .backoff_base(Duration::from_micros(1))
        .backoff_max(Duration::from_micros(2))
        .breaker_threshold(1_000_000)
        .build()
        .unwrap();
    let mut lp = Loop::new(&names, budget, 64 << 10, &config);
    let start = Instant::now();
    let mut asked_at: Vec<Option<u64>> = vec![None; n];
    let mut worst = 0u64;
    let mut connects = vec![0u64; n];
    for t in 0..2_000u64 {
        let now = start + Duration::from_millis(t);
        lp.fleet.handle_timeout(now);
        loop {
            match lp.fleet.poll_output() {
                FleetOutput::Wait(_) => break,
                FleetOutput::Connect(id) => {
                    let i = lp.ids.iter().position(|x| *x == id).unwrap();
                    connects[i] += 1;
                    if i < dead {
                        lp.fleet.handle_input(
                            now,
                            id,
                            Input::ConnectFailed(ConnectFailure::Refused),
                        );
                    } else {
                        let since = asked_at[i].take().unwrap_or(t);
                        worst = worst.max(t - since);
                        lp.fleet.handle_input(now, id, Input::Connected);
                        lp.inbound[i].extend(b"Asterisk Call Manager/11.0.0\r\n");
                    }
                }
                FleetOutput::Status {
                    server,
                    status: ServerStatus::Connecting,
                } => {
                    let i = names.iter().position(|x| *x == server.as_str()).unwrap();
                    asked_at[i].get_or_insert(t);
                }
                _ => {}
            }
        }
        lp.transport(now);
        lp.read_step(now);
        lp.transport(now);
        // Every 25 ticks the healthy servers lose their sessions.
        if t % 25 == 24 {
            for i in dead..n {
                let id = lp.ids[i];
                if lp.fleet.status(names[i]).is_some_and(|s| s.is_ready()) {
                    lp.fleet.handle_input(now, id, Input::Eof);
                    lp.inbound[i].clear();
                }
            }
        }
    }
    for i in dead..n {
        assert!(
            connects[i] >= 50,
            "{} connected {} times",
            names[i],
            connects[i]
        );
    }
    // The connect queue is oldest first and holds each server once: n steps at most.
    let bound = u64::try_from(n).unwrap();
    assert!(
        worst <= bound,
        "a healthy server waited {worst} steps to connect; {connects:?}"
    );
}
