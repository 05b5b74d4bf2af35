//! A call tracker fed by a real [`Client`](ami_proto::Client) against the scripted server,
//! as an application loop would: the harness the call-tracking tests share.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::scripted::{id_of, Harness, Out};
use ami_proto::calls::{CallTracker, CallUpdate, EndedCall, TrackerConfig};
use ami_proto::{ActionId, ClientConfig};
use std::time::{Duration, Instant};

pub fn block(uid: &str, linked: &str, state: u8) -> String {
    format!(
        "Channel: PJSIP/{uid}\r\nChannelState: {state}\r\nChannelStateDesc: x\r\nCallerIDNum: 100\r\n\
         CallerIDName: Alice\r\nContext: default\r\nExten: 200\r\nPriority: 1\r\nUniqueid: {uid}\r\nLinkedid: {linked}\r\n"
    )
}

/// An event's bytes.
pub fn ev(name: &str, uid: &str, linked: &str, state: u8, extra: &str) -> Vec<u8> {
    let extra: String = extra.lines().map(|l| format!("{l}\r\n")).collect();
    format!("Event: {name}\r\n{}{extra}\r\n", block(uid, linked, state)).into_bytes()
}

/// A whole list answer: start, one item per channel (with `extra` lines), complete.
pub fn list(id: &str, item: &str, chans: &[(&str, &str, u8)], extra: &str) -> Vec<u8> {
    let extra: String = extra.lines().map(|l| format!("{l}\r\n")).collect();
    let mut out = format!("Response: Success\r\nActionID: {id}\r\nEventList: start\r\n\r\n");
    for (uid, linked, state) in chans {
        out += &format!(
            "Event: {item}\r\nActionID: {id}\r\n{}{extra}\r\n",
            block(uid, linked, *state)
        );
    }
    out += &format!(
        "Event: {item}Complete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: {}\r\n\r\n",
        chans.len()
    );
    out.into_bytes()
}

/// A tracker fed by a client, as an application loop would.
pub struct T {
    pub h: Harness,
    pub tr: CallTracker,
    /// Tracker requests sent: token and ActionID.
    pub sent: Vec<(u64, ActionId)>,
    /// Feed stream items before answers (as an async adapter may, when the consumer task
    /// runs before the task awaiting the answer).
    pub items_first: bool,
    pub seen: usize,
    pub updates: Vec<CallUpdate>,
}

impl T {
    pub fn new() -> T {
        T::with(TrackerConfig::builder().tag_prefix("t").build().unwrap())
    }
    pub fn with(config: TrackerConfig) -> T {
        let client = ClientConfig::builder("admin", "amp111")
            .seed(3)
            .ping_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        T::with_client(client, config)
    }
    /// A tracker fed by a client of `client`'s config.
    pub fn with_client(client: ClientConfig, config: TrackerConfig) -> T {
        // As an application does: the tracker says which server it is about, by its client's
        // name.
        let config = match client.name() {
            Some(name) => config.or_name(name),
            None => config,
        };
        let mut t = T {
            h: Harness::new(client, Instant::now()),
            tr: CallTracker::new(config),
            sent: Vec::new(),
            items_first: false,
            seen: 0,
            updates: Vec::new(),
        };
        t.h.ready();
        t.pump();
        t
    }
    /// One turn of the application loop: answers, stream items, requests.
    pub fn pump(&mut self) {
        loop {
            let now = self.h.now;
            let mut progressed = false;
            if self.items_first {
                for item in self.h.events() {
                    self.tr.handle_item(now, &item);
                    progressed = true;
                }
            }
            let log: Vec<Out> = self.h.log[self.seen..].to_vec();
            self.seen = self.h.log.len();
            for out in log {
                if let Out::Completed(id, outcome) = out {
                    if let Some(k) = self.sent.iter().position(|(_, i)| *i == id) {
                        let (token, _) = self.sent.swap_remove(k);
                        self.tr.handle_reply(now, token, outcome);
                        progressed = true;
                    }
                }
            }
            for item in self.h.events() {
                self.tr.handle_item(now, &item);
                progressed = true;
            }
            if self.tr.poll_timeout().is_some_and(|at| at <= now) {
                self.tr.handle_timeout(now);
                progressed = true;
            }
            while let Some(req) = self.tr.poll_request() {
                let id = self.h.send_with(req.action, req.options);
                self.sent.push((req.token, id));
                progressed = true;
            }
            self.updates
                .extend(std::iter::from_fn(|| self.tr.poll_update()));
            if !progressed {
                return;
            }
        }
    }
    pub fn tick(&mut self) {
        self.h.advance(Duration::from_secs(1));
    }
    /// Server bytes, then one application turn.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.tick();
        self.h.feed(bytes);
        self.pump();
    }
    /// The ActionID of the tracker's unanswered `action`.
    pub fn take(&mut self, action: &str) -> String {
        id_of(&self.h.take(action)).to_string()
    }
    /// Answers the pending CoreShowChannels with these channels.
    pub fn channels(&mut self, chans: &[(&str, &str, u8)], extra: &str) {
        let id = self.take("CoreShowChannels");
        self.feed(&list(&id, "CoreShowChannel", chans, extra));
    }
    pub fn drain_updates(&mut self) -> Vec<CallUpdate> {
        std::mem::take(&mut self.updates)
    }
    pub fn ended(&mut self) -> Vec<EndedCall> {
        self.drain_updates()
            .into_iter()
            .filter_map(|u| match u {
                CallUpdate::CallEnded(c) => Some(c),
                _ => None,
            })
            .collect()
    }
    /// The server's first snapshot: no channel.
    pub fn live(&mut self) {
        assert!(self.tr.is_resyncing(), "Ready starts a resync");
        self.channels(&[], "");
        assert!(!self.tr.is_stale());
        self.drain_updates();
    }
}
