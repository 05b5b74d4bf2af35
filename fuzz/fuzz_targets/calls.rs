//! The call tracker fed by a real `Client`, as an application loop feeds it, against a server
//! whose channels the harness knows (the truth): channels created, changed, bridged and hung
//! up, snapshots answered from the truth or refused, floods that make the client drop events,
//! disconnects, time jumps, Originates through the tracker, resyncs asked for, in an order the
//! input picks. Checked:
//!
//! - nothing panics, and the tracker stays within `max_channels`;
//! - once the input is used up and the server is healthy and answers everything, the tracker
//!   ends live (not stale), and its view is the server's channels exactly: the same
//!   uniqueids, each with its linkedid (unless channels were met at `max_channels`: those
//!   are counted and not tracked until a later snapshot, as documented).
//!
//! `cargo +nightly fuzz run calls`; `FUZZ_TRACE=1` with a crash file prints each step.
#![no_main]

use ami_fuzz::Cursor;
use ami_proto::calls::{CallTracker, TrackerConfig};
use ami_proto::{
    Action, ActionId, Client, ClientConfig, Decoder, DecoderLimits, Input, Notice, Output,
};
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, VecDeque};
use std::io::ErrorKind;
use std::time::{Duration, Instant};

struct Harness {
    client: Client,
    tracker: CallTracker,
    now: Instant,
    connected: bool,
    /// The server's reading of what the client wrote, and what it owes an answer to.
    server: Decoder,
    owed: VecDeque<(String, String)>,
    /// The server's live channels: uniqueid -> (linkedid, state).
    truth: BTreeMap<String, (String, u8)>,
    next_uid: u32,
    /// Tracker requests in flight: token and ActionID.
    sent: Vec<(u64, ActionId)>,
    max_channels: usize,
    trace: bool,
}

fn block(uid: &str, linked: &str, state: u8) -> String {
    format!(
        "Channel: PJSIP/{uid}\r\nChannelState: {state}\r\nChannelStateDesc: x\r\nCallerIDNum: 100\r\n\
         CallerIDName: A\r\nContext: default\r\nExten: 200\r\nPriority: 1\r\nUniqueid: {uid}\r\nLinkedid: {linked}\r\n"
    )
}

impl Harness {
    fn new(cfg: &mut Cursor<'_>) -> Option<Harness> {
        let c = cfg.byte();
        let max_channels = 2 + usize::from(cfg.byte() % 16);
        let tracker = TrackerConfig::builder()
            .tag_prefix("t")
            .max_channels(max_channels)
            .max_buffered_events(1 + usize::from(cfg.byte() % 32))
            .max_updates(4 + usize::from(cfg.byte() % 32))
            .max_originates(1 + usize::from(c % 4))
            .build()
            .ok()?;
        let client = ClientConfig::builder("admin", "amp111")
            .seed(3)
            .ping_interval(Duration::from_secs(3600))
            .event_queue_cap(4 + usize::from(cfg.byte() % 64))
            .backoff_base(Duration::from_millis(10))
            .backoff_max(Duration::from_millis(100))
            .build()
            .ok()?;
        let now = Instant::now();
        Some(Harness {
            client: Client::new(client, now),
            tracker: CallTracker::new(tracker),
            now,
            connected: false,
            server: Decoder::without_banner(DecoderLimits::default()),
            owed: VecDeque::new(),
            truth: BTreeMap::new(),
            next_uid: 0,
            sent: Vec::new(),
            max_channels,
            trace: std::env::var_os("FUZZ_TRACE").is_some(),
        })
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.connected {
            self.client.handle_input(self.now, Input::Received(bytes));
        }
    }

    /// One application turn, repeated until nothing moves: the client's outputs (transport
    /// played here), answers to the tracker's requests, stream items, new requests.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut progressed = false;
            loop {
                match self.client.poll_output() {
                    Output::Connect => {
                        self.connected = true;
                        self.server = Decoder::without_banner(DecoderLimits::default());
                        self.owed.clear();
                        self.client.handle_input(self.now, Input::Connected);
                        self.client.handle_input(
                            self.now,
                            Input::Received(b"Asterisk Call Manager/11.0.0\r\n"),
                        );
                    }
                    Output::Close => self.connected = false,
                    Output::Notice(Notice::Completed { id, outcome }) => {
                        if let Some(k) = self.sent.iter().position(|(_, i)| *i == id) {
                            let (token, _) = self.sent.swap_remove(k);
                            self.tracker.handle_reply(self.now, token, outcome);
                            progressed = true;
                        }
                    }
                    Output::Wait(_) => break,
                    _ => {}
                }
            }
            let out = self.client.transmit().to_vec();
            self.client.advance_transmit(out.len());
            ami_fuzz::read_actions(&mut self.server, &out, self.trace, &mut self.owed);
            while let Some(item) = self.client.poll_event() {
                self.tracker.handle_item(self.now, &item);
                progressed = true;
            }
            while let Some(req) = self.tracker.poll_request() {
                match self
                    .client
                    .send_action_with(self.now, req.action, req.options)
                {
                    Ok(id) => self.sent.push((req.token, id)),
                    Err(e) => {
                        if self.trace {
                            eprintln!("  request {} refused: {e}", req.token);
                        }
                        self.tracker.send_failed(self.now, req.token);
                    }
                }
                progressed = true;
            }
            while let Some(u) = self.tracker.poll_update() {
                if self.trace {
                    eprintln!("  update {u:?}");
                }
            }
            assert!(
                self.tracker.stats().channels <= self.max_channels,
                "{} channels tracked (max {})",
                self.tracker.stats().channels,
                self.max_channels
            );
            if !progressed {
                return;
            }
        }
    }

    fn pick_uid(&self, b: u8) -> Option<String> {
        if self.truth.is_empty() {
            return None;
        }
        self.truth
            .keys()
            .nth(usize::from(b) % self.truth.len())
            .cloned()
    }

    /// A channel event on the server, kept in the truth.
    fn channel_event(&mut self, what: u8, a: u8, b: u8) {
        let text = match what % 5 {
            0 => {
                self.next_uid += 1;
                let uid = format!("u{}", self.next_uid);
                let linked = self
                    .pick_uid(a)
                    .filter(|_| b & 1 == 1)
                    .unwrap_or(uid.clone());
                let linked = self
                    .truth
                    .get(&linked)
                    .map_or(linked.clone(), |(l, _)| l.clone());
                self.truth.insert(uid.clone(), (linked.clone(), 0));
                format!("Event: Newchannel\r\n{}\r\n", block(&uid, &linked, 0))
            }
            1 => {
                let Some(uid) = self.pick_uid(a) else { return };
                let state = b % 8;
                let linked = match self.truth.get_mut(&uid) {
                    Some(entry) => {
                        entry.1 = state;
                        entry.0.clone()
                    }
                    None => return,
                };
                format!("Event: Newstate\r\n{}\r\n", block(&uid, &linked, state))
            }
            2 => {
                let Some(uid) = self.pick_uid(a) else { return };
                let Some((linked, state)) = self.truth.remove(&uid) else {
                    return;
                };
                format!(
                    "Event: Hangup\r\n{}Cause: 16\r\nCause-txt: Normal Clearing\r\n\r\n",
                    block(&uid, &linked, state)
                )
            }
            3 => {
                let (Some(x), Some(y)) = (self.pick_uid(a), self.pick_uid(b)) else {
                    return;
                };
                let (lx, sx) = self.truth.get(&x).cloned().unwrap_or_default();
                let (ly, sy) = self.truth.get(&y).cloned().unwrap_or_default();
                let dest: String = block(&y, &ly, sy)
                    .lines()
                    .map(|l| format!("Dest{l}\r\n"))
                    .collect();
                format!(
                    "Event: DialBegin\r\n{}{dest}DialString: 200\r\n\r\n",
                    block(&x, &lx, sx)
                )
            }
            _ => {
                let Some(uid) = self.pick_uid(a) else { return };
                let (linked, state) = self.truth.get(&uid).cloned().unwrap_or_default();
                format!(
                    "Event: VarSet\r\n{}Variable: X\r\nValue: {b}\r\n\r\n",
                    block(&uid, &linked, state)
                )
            }
        };
        if self.trace {
            eprintln!(
                "  server sends {:?}",
                text.lines()
                    .take(1)
                    .chain(text.lines().filter(|l| l.starts_with("Uniqueid")
                        || l.starts_with("Linkedid")
                        || l.starts_with("DestUniqueid")))
                    .collect::<Vec<_>>()
            );
        }
        self.feed(text.as_bytes());
    }

    /// Answers the oldest action owed: snapshots from the truth (or refused), logins
    /// accepted, anything else a plain success.
    fn answer_one(&mut self, refuse: bool) {
        let Some((id, name)) = self.owed.pop_front() else {
            return;
        };
        let text = match name.as_str() {
            "Login" => format!(
                "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
            ),
            "CoreShowChannels" if refuse => {
                format!("Response: Error\r\nActionID: {id}\r\nMessage: No\r\n\r\n")
            }
            "CoreShowChannels" => {
                let mut out =
                    format!("Response: Success\r\nActionID: {id}\r\nEventList: start\r\n\r\n");
                for (uid, (linked, state)) in &self.truth {
                    out += &format!(
                        "Event: CoreShowChannel\r\nActionID: {id}\r\n{}\r\n",
                        block(uid, linked, *state)
                    );
                }
                out += &format!(
                    "Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: {}\r\n\r\n",
                    self.truth.len()
                );
                out
            }
            _ if refuse => format!("Response: Error\r\nActionID: {id}\r\nMessage: No\r\n\r\n"),
            _ => format!("Response: Success\r\nActionID: {id}\r\nMessage: Queued\r\n\r\n"),
        };
        self.feed(text.as_bytes());
    }

    fn step(&mut self, input: &mut Cursor<'_>) {
        let op = input.byte();
        if self.trace {
            eprintln!(
                "op {} ({} channels on the server)",
                op % 9,
                self.truth.len()
            );
        }
        match op % 9 {
            0..=2 => {
                let (what, a, b) = (input.byte(), input.byte(), input.byte());
                self.channel_event(what, a, b);
            }
            3 | 4 => {
                let refuse = input.byte() & 3 == 3;
                self.answer_one(refuse);
            }
            5 => {
                let n = input.byte() % 64;
                let mut text = String::new();
                for k in 0..n {
                    text += &format!("Event: UserEvent\r\nUserEvent: Flood\r\nSeq: {k}\r\n\r\n");
                }
                self.feed(text.as_bytes());
            }
            6 => {
                if self.connected {
                    self.connected = false;
                    let input = if input.byte() & 1 == 0 {
                        Input::Eof
                    } else {
                        Input::TransportError(ErrorKind::ConnectionReset)
                    };
                    self.client.handle_input(self.now, input);
                }
            }
            7 => {
                let ms = u64::from(input.byte()) * 10;
                self.now += Duration::from_millis(ms);
                self.client.handle_timeout(self.now);
            }
            _ => match input.byte() % 3 {
                0 => self.tracker.resync(),
                _ => {
                    let action = Action::new("Originate")
                        .field("Channel", "Local/100@default")
                        .field("Application", "Playback")
                        .field("Async", "true");
                    let _ = self.tracker.originate(action);
                }
            },
        }
        self.pump();
        if self.trace {
            let view: Vec<String> = self
                .tracker
                .channels()
                .map(|c| format!("{}@{}", c.uniqueid, c.linkedid))
                .collect();
            eprintln!("  view {view:?}, stale {}", self.tracker.is_stale());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor(data);
    let Some(mut h) = Harness::new(&mut input) else {
        return;
    };
    h.pump();
    let mut steps = 0;
    while !input.is_empty() && steps < 400 {
        h.step(&mut input);
        steps += 1;
    }
    // The end: the server answers everything, snapshots from the truth; time moves on. A
    // tracker that gave up after failed snapshots in a row (it waits for a new session, a gap
    // or `resync`) is asked again, as an application would, now and then.
    let mut asks = 0;
    for _ in 0..2_000 {
        h.pump();
        if !h.owed.is_empty() {
            while !h.owed.is_empty() {
                h.answer_one(false);
            }
            continue;
        }
        if h.client.is_ready() && h.sent.is_empty() {
            if !h.tracker.is_stale() {
                break;
            }
            if asks < 50 && !h.tracker.is_resyncing() {
                asks += 1;
                h.tracker.resync();
            }
        }
        if h.trace {
            eprintln!(
                "end: ready {}, stale {}, resyncing {}, in flight {}, owed {}",
                h.client.is_ready(),
                h.tracker.is_stale(),
                h.tracker.is_resyncing(),
                h.sent.len(),
                h.owed.len()
            );
        }
        h.now += Duration::from_millis(50);
        h.client.handle_timeout(h.now);
    }
    // A channel met at the cap is not tracked (counted in `channels_over_cap`, as
    // documented), and the view does not learn it until the next snapshot.
    if h.truth.len() > h.max_channels || h.tracker.stats().channels_over_cap > 0 {
        return;
    }
    assert!(
        !h.tracker.is_stale(),
        "the tracker is still stale with a healthy server that answered everything"
    );
    let view: BTreeMap<String, String> = h
        .tracker
        .channels()
        .map(|c| (c.uniqueid.clone(), c.linkedid.clone()))
        .collect();
    let truth: BTreeMap<String, String> = h
        .truth
        .iter()
        .map(|(u, (l, _))| (u.clone(), l.clone()))
        .collect();
    assert_eq!(
        view, truth,
        "the tracker's view is not the server's channels"
    );
});
