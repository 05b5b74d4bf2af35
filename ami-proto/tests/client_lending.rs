//! Bytes lent to the transport: what an adapter that writes from a copy (an async write,
//! with the client's lock released) has been handed, as opposed to what the transport took.
//!
//! Lending decides what the client may still do with an action's bytes: it never
//! withdraws a lent byte (so the adapter's copy stays true), it withdraws at once the bytes
//! of a cancelled action none of whose bytes was handed out, and when the session is lost
//! an action whose last byte was never handed out fails `NotSent` (Asterisk runs an action
//! only once it has read the blank line that ends it), one handed out whole `Unknown`.
//! The property test drives random sends, lends, writes (from the copy, and straight from
//! `transmit` as `ami-mio` does), give-backs, cancels, answers, deadlines and lost links.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{
    Action, ActionError, ActionId, Client, ClientConfig, Decoder, DecoderLimits, DisconnectReason,
    Frame, Input, Notice, Outcome, Output, Phase, SendOptions,
};
use proptest::prelude::*;
use scripted::{id_of, login_ok, pong, Harness, Out, BANNER};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Ready, with a transport that takes nothing unless the test writes: every byte the
/// client encodes waits in `transmit` until the test lends or writes it.
fn stalled(t0: Instant) -> Harness {
    let cfg = ClientConfig::builder("admin", "s3cr3t")
        .events("call")
        .seed(3)
        .pipeline_depth(8)
        .ping_interval(secs(3600))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    h.take_all();
    h.room = Some(0);
    h
}

fn ping(h: &mut Harness) -> ActionId {
    h.send_with(Action::new("Ping"), SendOptions::timeout(secs(10)))
}

/// The wire bytes of the action `id` in `bytes` (which hold whole actions).
fn bytes_of(bytes: &[u8], id: &ActionId) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let needle = format!("ActionID: {id}\r\n");
    text.split_inclusive("\r\n\r\n")
        .find(|m| m.contains(&needle))
        .unwrap_or_else(|| panic!("{id} not in {text:?}"))
        .as_bytes()
        .to_vec()
}

#[test]
fn an_action_never_lent_fails_not_sent_when_its_session_is_lost() {
    let t0 = Instant::now();
    let mut h = stalled(t0);
    let a = ping(&mut h);
    assert!(
        !h.client.transmit().is_empty(),
        "encoded, waiting in transmit"
    );
    h.eof();
    assert_eq!(
        h.outcome(&a),
        &Err(ActionError::NotSent(DisconnectReason::Eof))
    );
}

#[test]
fn an_action_lent_but_not_written_fails_unknown_when_its_session_is_lost() {
    // The adapter holds a copy it may have written just before the link broke.
    let t0 = Instant::now();
    let mut h = stalled(t0);
    let a = ping(&mut h);
    let lent = h.client.lend_transmit().to_vec();
    assert_eq!(lent, h.client.transmit(), "everything not lent before");
    h.eof();
    assert_eq!(
        h.outcome(&a),
        &Err(ActionError::Unknown(DisconnectReason::Eof))
    );
}

#[test]
fn an_action_written_up_to_its_last_byte_fails_not_sent_and_one_written_whole_unknown() {
    let t0 = Instant::now();
    let mut h = stalled(t0);
    let a = ping(&mut h);
    let b = ping(&mut h);
    let len_a = bytes_of(h.client.transmit(), &a).len();
    // `a` whole, `b` all but its final newline: the server never saw `b`'s blank line.
    let len_b = bytes_of(h.client.transmit(), &b).len();
    h.client.advance_transmit(len_a + len_b - 1);
    h.eof();
    assert_eq!(
        h.outcome(&a),
        &Err(ActionError::Unknown(DisconnectReason::Eof))
    );
    assert_eq!(
        h.outcome(&b),
        &Err(ActionError::NotSent(DisconnectReason::Eof))
    );
}

#[test]
fn an_adapter_that_gives_its_copy_back_before_the_link_breaks_gets_not_sent() {
    let t0 = Instant::now();
    let mut h = stalled(t0);
    let a = ping(&mut h);
    h.client.lend_transmit();
    h.client.unlend_transmit();
    h.eof();
    assert_eq!(
        h.outcome(&a),
        &Err(ActionError::NotSent(DisconnectReason::Eof))
    );
}

#[test]
fn cancelling_a_never_lent_action_removes_its_bytes_at_once_and_leaves_the_others_intact() {
    let t0 = Instant::now();
    let mut h = stalled(t0);
    let [a, b, c] = [ping(&mut h), ping(&mut h), ping(&mut h)];
    let before = h.client.transmit().to_vec();
    let (wa, wc) = (bytes_of(&before, &a), bytes_of(&before, &c));
    assert!(h.client.cancel(h.now, &b));
    h.drain();
    assert_eq!(h.outcome(&b), &Err(ActionError::Cancelled));
    assert_eq!(h.client.transmit(), [wa, wc].concat(), "b's bytes are gone");
    assert_eq!(h.client.stats().actions_withdrawn, 1);
    // The server reads again: a and c arrive whole, b never; their answers complete them.
    h.room = None;
    h.drain();
    let ids: Vec<String> = h.take_all().iter().map(|m| id_of(m).to_string()).collect();
    assert_eq!(ids, [a.as_str(), c.as_str()]);
    h.feed(&pong(a.as_str()));
    h.feed(&pong(c.as_str()));
    assert!(h.outcome(&a).is_ok() && h.outcome(&c).is_ok());
    assert_eq!(h.client.stats().pending, 0);
}

#[test]
fn cancelling_a_lent_action_keeps_its_bytes_until_the_adapter_gives_them_back() {
    let t0 = Instant::now();
    let mut h = stalled(t0);
    let a = ping(&mut h);
    let copy = h.client.lend_transmit().to_vec();
    let b = ping(&mut h);
    let wb = bytes_of(h.client.transmit(), &b);
    assert!(h.client.cancel(h.now, &a));
    h.drain();
    assert_eq!(h.outcome(&a), &Err(ActionError::Cancelled));
    assert_eq!(
        h.client.transmit(),
        [copy.clone(), wb.clone()].concat(),
        "the lent copy stays true"
    );
    // The adapter dropped its copy unwritten: a's bytes go now, b's stay.
    h.client.unlend_transmit();
    assert_eq!(h.client.transmit(), wb);
    assert_eq!(h.client.stats().actions_withdrawn, 1);
    assert_eq!(h.client.stats().pending, 1);
}

#[test]
fn a_lent_action_is_not_withdrawn_at_its_deadline_and_a_given_back_one_is() {
    let t0 = Instant::now();
    let mut h = stalled(t0);
    let a = h.send_with(Action::new("Ping"), SendOptions::timeout(secs(1)));
    h.client.lend_transmit();
    let b = h.send_with(Action::new("Ping"), SendOptions::timeout(secs(1)));
    let wa = bytes_of(h.client.transmit(), &a);
    let out = h.advance_to(t0 + secs(2));
    let timed_out = |phase| {
        Err(ActionError::TimedOut {
            phase,
            partial: None,
        })
    };
    // a may be on its way (lent): it stays and times out waiting for its answer.
    assert_eq!(
        out,
        [
            Out::Completed(a.clone(), timed_out(Phase::Response)),
            Out::Completed(b.clone(), timed_out(Phase::Queued)),
        ]
    );
    assert_eq!(h.client.transmit(), wa);
    // Given back unwritten, its bytes go too: nothing is sent after its deadline.
    h.client.unlend_transmit();
    assert!(h.client.transmit().is_empty());
    assert_eq!(h.client.stats().actions_withdrawn, 2);
}

// ----- the property ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Send a Ping with this timeout (s).
    Send(u8),
    /// The adapter lends what is new and appends it to its copy.
    Lend,
    /// The transport takes up to this many bytes of the copy.
    WriteCopy(u16),
    /// The adapter drops the unwritten rest of its copy.
    Unlend,
    /// A write straight from `transmit` (as `ami-mio` does), up to this many bytes.
    WriteDirect(u16),
    /// Cancel the n-th action sent (modulo).
    Cancel(u8),
    /// The server answers every Ping it read whole.
    Answer,
    /// Time moves on this many seconds and due deadlines fire.
    Tick(u8),
    /// The link breaks, and the client logs in again.
    Disconnect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..6).prop_map(Op::Send),
        2 => Just(Op::Lend),
        2 => (0u16..300).prop_map(Op::WriteCopy),
        1 => Just(Op::Unlend),
        1 => (0u16..300).prop_map(Op::WriteDirect),
        2 => any::<u8>().prop_map(Op::Cancel),
        1 => Just(Op::Answer),
        1 => (0u8..4).prop_map(Op::Tick),
        1 => Just(Op::Disconnect),
    ]
}

/// A client with its transport in the test's hands, and what it handed out.
struct Rig {
    client: Client,
    now: Instant,
    /// The adapter's copy: lent bytes not written yet.
    copy: Vec<u8>,
    /// Bytes of this connection handed to the transport and kept: written, or lent and
    /// not given back. A prefix of what the client will write, if it writes on.
    handed: Vec<u8>,
    /// Actions of this connection whose last byte is in `handed`.
    handed_whole: HashSet<String>,
    /// Actions of this connection the server read whole, not yet answered.
    read: Vec<String>,
    server: Decoder,
    sent: Vec<ActionId>,
    outcomes: HashMap<ActionId, Vec<Outcome>>,
}

impl Rig {
    fn new(t0: Instant) -> Rig {
        let cfg = ClientConfig::builder("admin", "s3cr3t")
            .events("call")
            .seed(11)
            .pipeline_depth(4)
            .ping_interval(secs(3600))
            .build()
            .unwrap();
        let mut rig = Rig {
            client: Client::new(cfg, t0),
            now: t0,
            copy: Vec::new(),
            handed: Vec::new(),
            handed_whole: HashSet::new(),
            read: Vec::new(),
            server: Decoder::without_banner(DecoderLimits::default()),
            sent: Vec::new(),
            outcomes: HashMap::new(),
        };
        rig.log_in();
        rig
    }

    /// Drains outputs; true if the client asked for a connection.
    fn drain(&mut self) -> bool {
        let (mut connect, mut closed) = (false, false);
        loop {
            match self.client.poll_output() {
                Output::Wait(_) => break,
                Output::Connect => connect = true,
                // The outcomes of the lost session follow: checked against it first.
                Output::Close => closed = true,
                Output::Notice(Notice::Completed { id, outcome }) => {
                    if let Err(ActionError::NotSent(_)) = &outcome {
                        assert!(
                            !self.handed_whole.contains(id.as_str()),
                            "{id} failed NotSent with its last byte handed out"
                        );
                    }
                    self.outcomes.entry(id).or_default().push(outcome);
                }
                _ => {}
            }
        }
        if closed {
            // This connection is over: what the adapter held goes with it.
            self.copy.clear();
            self.handed.clear();
            self.handed_whole.clear();
            self.read.clear();
            self.server = Decoder::without_banner(DecoderLimits::default());
        }
        connect
    }

    /// From a `Connect`: the transport opens, the Login is written whole and accepted.
    fn log_in(&mut self) {
        for _ in 0..1000 {
            if self.drain() {
                break;
            }
            self.now += secs(1);
            self.client.handle_timeout(self.now);
        }
        self.client.handle_input(self.now, Input::Connected);
        self.client.handle_input(self.now, Input::Received(BANNER));
        self.drain();
        let login = self.client.transmit().to_vec();
        self.client.advance_transmit(login.len());
        let mut d = Decoder::without_banner(DecoderLimits::default());
        d.feed(&login);
        let Some(Ok(Frame::Message(m))) = d.decode() else {
            panic!("no Login in {login:?}");
        };
        let ok = login_ok(id_of(&m));
        self.client.handle_input(self.now, Input::Received(&ok));
        self.drain();
        assert!(self.client.is_ready());
    }

    /// `n` more bytes were handed out: the server side decodes what is whole.
    fn hand(&mut self, bytes: &[u8]) {
        self.handed.extend_from_slice(bytes);
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = self.server.feed(rest);
            rest = &rest[n..];
            while let Some(frame) = self.server.decode() {
                if let Ok(Frame::Message(m)) = frame {
                    self.handed_whole.insert(id_of(&m).to_string());
                }
            }
        }
    }

    /// Bytes from the front of the copy were written: the server read whatever they end.
    fn written(&mut self, n: usize) {
        let mut d = Decoder::without_banner(DecoderLimits::default());
        // Whole actions among the bytes written so far on this connection: the handed
        // stream's prefix up to the written length.
        let written_len = self.handed.len() - self.copy.len() + n;
        d.feed(&self.handed[..written_len]);
        let mut whole = Vec::new();
        while let Some(Ok(Frame::Message(m))) = d.decode() {
            whole.push(id_of(&m).to_string());
        }
        for id in whole {
            if !self.read.contains(&id) && !self.answered(&id) {
                self.read.push(id);
            }
        }
        self.copy.drain(..n);
    }

    fn answered(&self, id: &str) -> bool {
        self.outcomes.keys().any(|k| k.as_str() == id)
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Send(s) => {
                let options = SendOptions::timeout(secs(u64::from(s)));
                if let Ok(id) = self
                    .client
                    .send_action_with(self.now, Action::new("Ping"), options)
                {
                    self.sent.push(id);
                }
            }
            Op::Lend => {
                let new = self.client.lend_transmit().to_vec();
                self.copy.extend_from_slice(&new);
                self.hand(&new);
            }
            Op::WriteCopy(n) => {
                let n = usize::from(n).min(self.copy.len());
                self.client.advance_transmit(n);
                self.written(n);
            }
            Op::Unlend => {
                self.client.unlend_transmit();
                let keep = self.handed.len() - self.copy.len();
                self.handed.truncate(keep);
                self.copy.clear();
                // Decoded again from what is kept: a given-back action is not handed out.
                let kept = std::mem::take(&mut self.handed);
                self.handed_whole.clear();
                self.server = Decoder::without_banner(DecoderLimits::default());
                self.hand(&kept);
            }
            Op::WriteDirect(n) => {
                let bytes = self.client.transmit().to_vec();
                let n = usize::from(n).min(bytes.len());
                self.client.advance_transmit(n);
                // What was lent is written first; the rest is handed out only now.
                let lent = self.copy.len().min(n);
                let fresh = bytes[lent..n].to_vec();
                self.hand(&fresh);
                self.copy.extend_from_slice(&fresh);
                self.written(n);
            }
            Op::Cancel(k) => {
                if !self.sent.is_empty() {
                    let id = self.sent[usize::from(k) % self.sent.len()].clone();
                    self.client.cancel(self.now, &id);
                }
            }
            Op::Answer => {
                for id in std::mem::take(&mut self.read) {
                    self.client
                        .handle_input(self.now, Input::Received(&pong(&id)));
                }
            }
            Op::Tick(s) => {
                self.now += secs(u64::from(s));
                self.client.handle_timeout(self.now);
            }
            Op::Disconnect => {
                self.client.handle_input(self.now, Input::Eof);
                self.drain();
                self.log_in();
            }
        }
        self.drain();
        // The copy is what the client still holds from the front of its buffer: lent bytes
        // never move, whatever was withdrawn around them.
        assert!(
            self.client.transmit().starts_with(&self.copy),
            "the lent copy went stale"
        );
    }
}

fn run(ops: &[Op]) {
    let mut rig = Rig::new(Instant::now());
    for op in ops {
        rig.step(op);
    }
    rig.client.close(rig.now);
    rig.drain();
    for id in &rig.sent {
        let got = rig.outcomes.get(id).map_or(0, Vec::len);
        assert_eq!(
            got,
            1,
            "{id} completed {got} times: {:?}",
            rig.outcomes.get(id)
        );
    }
    assert_eq!(
        rig.outcomes.len(),
        rig.sent.len(),
        "only sent actions complete"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_action_completes_once_and_not_sent_only_if_its_last_byte_was_never_handed_out(
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(&ops);
    }
}

/// A fixed sequence through every operation, so a regression shows up without proptest's
/// search: a lent action cancelled and given back, a partly written one lost with its link.
#[test]
fn a_scripted_run_through_every_operation_completes_each_action_once() {
    use Op::*;
    run(&[
        Send(5),
        Send(5),
        Lend,
        Send(5),
        Cancel(0),
        Cancel(2),
        WriteCopy(10),
        Unlend,
        Lend,
        WriteCopy(1000),
        Answer,
        Send(1),
        Send(5),
        WriteDirect(20),
        Tick(2),
        Lend,
        Disconnect,
        Send(5),
        Lend,
        WriteCopy(5),
        Tick(3),
        Unlend,
        WriteDirect(1000),
        Answer,
    ]);
}
