//! The live view: channels by Uniqueid, calls by Linkedid, and what events do to them.

use super::channel::{
    fields_over_cap, text, uniqueid, CallEnd, Channel, EndedCall, EndedChannel, Ending,
    MAX_ENDED_PER_CALL, MAX_FIELD_BYTES,
};
use super::originate::OriginateTag;
use super::Tracker;
use crate::wire::message::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// The channels of one Linkedid: those live, and those already ended.
#[derive(Debug, Default)]
struct CallEntry {
    live: BTreeSet<String>,
    ended: Vec<EndedChannel>,
    not_kept: u64,
    moved: u64,
    /// Folded from every channel that ended, kept or not: the last may be one not kept.
    end: Option<CallEnd>,
    /// The cause of the last channel that ended in it (None: unseen, or none given).
    last_cause: Option<u16>,
    /// Its channels detached from the view, waiting for their Hangup: it has not ended
    /// while any is.
    detached: usize,
}

/// What one event did, for the tracker to act on.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Calls whose last channel ended.
    pub(crate) calls_ended: Vec<EndedCall>,
    /// Channels that ended (Uniqueid, cause, originate tag), for originate bookkeeping.
    pub(crate) channels_ended: Vec<(String, Option<u16>, Option<OriginateTag>)>,
    /// A channel now carries this tag value.
    pub(crate) tagged: Option<(String, String)>,
    /// The event's channel, held by the view after it.
    pub(crate) seen: Option<String>,
}

/// Channels and calls.
#[derive(Debug)]
pub(crate) struct View {
    channels: BTreeMap<String, Channel>,
    calls: BTreeMap<String, CallEntry>,
    max_channels: usize,
    tag_variable: String,
    /// The server's name in log records.
    name: Option<std::sync::Arc<str>>,
    /// Channels not tracked because the cap was reached.
    pub(crate) over_cap: u64,
    cap_episode: bool,
    /// Channel events for a channel the view does not hold.
    pub(crate) unknown: u64,
    /// Live channels that moved to another call since last taken: (from, to) Linkedids.
    moves: Vec<(String, String)>,
    /// Fields cut to `MAX_FIELD_BYTES`.
    pub(crate) cut: u64,
    /// Channels a snapshot no longer listed, out of the view, waiting for their Hangup (at
    /// most the channels the view held).
    detached: BTreeMap<String, Channel>,
}

impl View {
    pub(crate) fn new(
        max_channels: usize,
        tag_variable: String,
        name: Option<std::sync::Arc<str>>,
    ) -> View {
        View {
            name,
            channels: BTreeMap::new(),
            calls: BTreeMap::new(),
            max_channels,
            tag_variable,
            over_cap: 0,
            cap_episode: false,
            unknown: 0,
            moves: Vec::new(),
            cut: 0,
            detached: BTreeMap::new(),
        }
    }

    /// Counts the kept fields of `msg` that are cut to `MAX_FIELD_BYTES`; says so once.
    pub(crate) fn note_cut(&mut self, msg: &Message) {
        let n = fields_over_cap(msg);
        if n > 0 {
            if self.cut == 0 {
                log::warn!(
                    "{who}: a field over {MAX_FIELD_BYTES} bytes; such fields are cut (counted in fields_cut, said once)", who = Tracker(self.name.as_deref())
                );
            }
            self.cut = self.cut.saturating_add(n);
        }
    }

    /// The moves of live channels to another call since the last call (at most one per
    /// channel change the caller applied since).
    pub(crate) fn take_moves(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.moves)
    }

    pub(crate) fn channel(&self, uniqueid: &str) -> Option<&Channel> {
        self.channels.get(uniqueid)
    }

    pub(crate) fn channels(&self) -> impl ExactSizeIterator<Item = &Channel> {
        self.channels.values()
    }

    pub(crate) fn uniqueids(&self) -> Vec<String> {
        self.channels.keys().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.channels.len()
    }

    pub(crate) fn call_count(&self) -> usize {
        self.calls.values().filter(|c| !c.live.is_empty()).count()
    }

    /// Live calls: Linkedid and its live channels.
    pub(crate) fn calls(&self) -> impl Iterator<Item = (&str, Vec<&Channel>)> {
        self.calls
            .iter()
            .filter(|(_, c)| !c.live.is_empty())
            .map(|(id, c)| {
                let chans = c.live.iter().filter_map(|u| self.channels.get(u)).collect();
                (id.as_str(), chans)
            })
    }

    pub(crate) fn call(&self, linkedid: &str) -> Option<Vec<&Channel>> {
        let c = self.calls.get(linkedid).filter(|c| !c.live.is_empty())?;
        Some(c.live.iter().filter_map(|u| self.channels.get(u)).collect())
    }

    /// Adds a channel; false (counted, logged once per episode) at the cap.
    pub(crate) fn insert(&mut self, ch: Channel) -> bool {
        if self.channels.len() >= self.max_channels {
            self.over_cap += 1;
            if !self.cap_episode {
                self.cap_episode = true;
                log::warn!(
                    "{who}: {} channels tracked, at its cap; new channels are not tracked (counted)",
                    self.max_channels, who = Tracker(self.name.as_deref())
                );
            }
            return false;
        }
        self.cap_episode = false;
        self.calls
            .entry(ch.linkedid.clone())
            .or_default()
            .live
            .insert(ch.uniqueid.clone());
        self.channels.insert(ch.uniqueid.clone(), ch);
        true
    }

    /// Applies `f` to a channel; false if the view does not hold it. A changed Linkedid moves
    /// the channel to that call, and the call it left ends (into `ended`) if that was its
    /// last live channel: nothing else would ever end it.
    pub(crate) fn modify(
        &mut self,
        uniqueid: &str,
        ended: &mut Vec<EndedCall>,
        f: impl FnOnce(&mut Channel),
    ) -> bool {
        match self.modify_unsettled(uniqueid, f) {
            None => false,
            Some(left) => {
                if let Some(left) = left {
                    ended.extend(self.settle(&left));
                }
                true
            }
        }
    }

    /// [`modify`](Self::modify) without ending the call the channel left: `None` if the view
    /// does not hold the channel, else the Linkedid it left, if it moved. The caller must
    /// [`settle`](Self::settle) that call, or it stays in the index for good.
    pub(crate) fn modify_unsettled(
        &mut self,
        uniqueid: &str,
        f: impl FnOnce(&mut Channel),
    ) -> Option<Option<String>> {
        let ch = self.channels.get_mut(uniqueid)?;
        let before = ch.linkedid.clone();
        f(ch);
        if ch.linkedid == before {
            return Some(None);
        }
        let after = ch.linkedid.clone();
        if let Some(old) = self.calls.get_mut(&before) {
            old.live.remove(uniqueid);
            old.moved += 1;
        }
        self.calls
            .entry(after.clone())
            .or_default()
            .live
            .insert(uniqueid.to_string());
        self.moves.push((before.clone(), after));
        Some(Some(before))
    }

    /// Sets a channel's originate tag; false if the view does not hold it.
    pub(crate) fn set_originate(&mut self, uniqueid: &str, tag: &OriginateTag) -> bool {
        let Some(ch) = self.channels.get_mut(uniqueid) else {
            return false;
        };
        ch.originate = Some(tag.clone());
        true
    }

    /// Ends a channel; returns its call if that was the call's last live channel.
    pub(crate) fn end(&mut self, uniqueid: &str, ending: Ending) -> Option<EndedCall> {
        let linkedid = self.end_unsettled(uniqueid, ending)?;
        self.settle(&linkedid)
    }

    /// [`end`](Self::end) without ending its call: the call's Linkedid, for the caller to
    /// [`settle`](Self::settle); `None` if the view does not hold the channel.
    pub(crate) fn end_unsettled(&mut self, uniqueid: &str, ending: Ending) -> Option<String> {
        let channel = self.channels.remove(uniqueid)?;
        let linkedid = channel.linkedid.clone();
        let entry = self.calls.entry(linkedid.clone()).or_default();
        entry.live.remove(uniqueid);
        entry.end = Some(CallEnd::with(entry.end, &ending));
        entry.last_cause = match ending {
            Ending::Hangup { cause, .. } => cause,
            // An end seen only as a channel's absence says nothing of when it ended (it may
            // be applied after a later channel's observed Hangup): it never erases a cause.
            Ending::Unobserved { .. } => entry.last_cause,
        };
        if entry.ended.len() < MAX_ENDED_PER_CALL {
            entry.ended.push(EndedChannel { channel, ending });
        } else {
            entry.not_kept += 1;
        }
        Some(linkedid)
    }

    /// Takes a channel out of the view (and out of its call's live channels) without ending
    /// it: it waits for its Hangup ([`end_detached`](Self::end_detached)). False if the view
    /// does not hold it.
    pub(crate) fn detach(&mut self, uniqueid: &str) -> bool {
        let Some(ch) = self.channels.remove(uniqueid) else {
            return false;
        };
        let entry = self.calls.entry(ch.linkedid.clone()).or_default();
        entry.live.remove(uniqueid);
        entry.detached += 1;
        self.detached.insert(uniqueid.to_string(), ch);
        true
    }

    /// A detached channel, back in the view (a later snapshot lists it).
    pub(crate) fn reattach(&mut self, uniqueid: &str) {
        let Some(ch) = self.detached.remove(uniqueid) else {
            return;
        };
        let entry = self.calls.entry(ch.linkedid.clone()).or_default();
        entry.detached = entry.detached.saturating_sub(1);
        entry.live.insert(uniqueid.to_string());
        self.channels.insert(uniqueid.to_string(), ch);
    }

    /// A detached channel.
    pub(crate) fn detached(&self, uniqueid: &str) -> Option<&Channel> {
        self.detached.get(uniqueid)
    }

    /// Ends a detached channel: its call's Linkedid, for the caller to settle.
    pub(crate) fn end_detached(&mut self, uniqueid: &str, ending: Ending) -> Option<String> {
        let ch = self.detached.remove(uniqueid)?;
        let linkedid = ch.linkedid.clone();
        if let Some(entry) = self.calls.get_mut(&linkedid) {
            entry.detached = entry.detached.saturating_sub(1);
        }
        // Back in for a moment, to end as any other channel.
        self.calls
            .entry(linkedid.clone())
            .or_default()
            .live
            .insert(uniqueid.to_string());
        self.channels.insert(uniqueid.to_string(), ch);
        self.end_unsettled(uniqueid, ending)
    }

    /// Removes the call `linkedid` once no live channel is left in it (nor one detached,
    /// waiting for its Hangup), and returns it.
    pub(crate) fn settle(&mut self, linkedid: &str) -> Option<EndedCall> {
        let entry = self.calls.get(linkedid)?;
        if !entry.live.is_empty() || entry.detached > 0 {
            return None;
        }
        let entry = self.calls.remove(linkedid)?;
        Some(EndedCall {
            linkedid: linkedid.to_string(),
            channels: entry.ended,
            channels_not_kept: entry.not_kept,
            channels_moved: entry.moved,
            end: entry.end.unwrap_or(CallEnd::Moved),
            last_cause: entry.last_cause,
        })
    }

    /// Applies one event seen at `now`.
    pub(crate) fn apply(&mut self, now: Instant, msg: &Message) -> Effects {
        self.note_cut(msg);
        let mut fx = self.apply_event(now, msg);
        let uid = uniqueid(msg);
        if !uid.is_empty() && self.channels.contains_key(&uid) {
            fx.seen = Some(uid);
        }
        fx
    }

    fn apply_event(&mut self, now: Instant, msg: &Message) -> Effects {
        let mut fx = Effects::default();
        // Compared trimmed, as the client compares the words it acts on (`Value::is_word`).
        let Some(name) = msg.event().map(str::trim) else {
            return fx;
        };
        let uid = uniqueid(msg);
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("Newchannel") {
            if self.channels.contains_key(&uid) {
                // Seen in a snapshot first: its creation is observed after all.
                self.modify(&uid, &mut fx.calls_ended, |ch| {
                    ch.update(msg, now, true);
                    if ch.adopted {
                        ch.adopted = false;
                        ch.created = Some(now);
                    }
                });
            } else if let Some(mut ch) = Channel::from_block(msg, now) {
                ch.created = Some(now);
                if ch.state == super::ChannelState::Up {
                    ch.answered = Some(now);
                }
                self.insert(ch);
            }
            return fx;
        }
        if is("Hangup") {
            let cause = msg.get_str("Cause").and_then(|c| c.trim().parse().ok());
            let ending = Ending::Hangup {
                at: now,
                cause,
                cause_txt: text(msg, "Cause-txt"),
            };
            if let Some(tag) = self.channels.get(&uid).map(|c| c.originate.clone()) {
                fx.calls_ended.extend(self.end(&uid, ending));
                fx.channels_ended.push((uid, cause, tag));
            } else if let Some(tag) = self.detached.get(&uid).map(|c| c.originate.clone()) {
                // Its Hangup, behind the snapshot that no longer listed it.
                if let Some(linkedid) = self.end_detached(&uid, ending) {
                    fx.calls_ended.extend(self.settle(&linkedid));
                }
                fx.channels_ended.push((uid, cause, tag));
            } else {
                self.unknown += 1;
            }
            return fx;
        }
        if is("VarSet") {
            let var = msg.get_str("Variable").unwrap_or("");
            if var.eq_ignore_ascii_case(&self.tag_variable) {
                let value = text(msg, "Value").unwrap_or_default();
                if self.channels.contains_key(&uid) && !value.is_empty() {
                    fx.tagged = Some((uid.clone(), value));
                }
            }
        }
        if is("Rename") {
            // Rename carries no channel block (no ChannelState, and `Channel` is the old
            // name), so the block gate below would drop it: only its new name is news.
            if let Some(name) = text(msg, "Newname").filter(|n| !n.is_empty()) {
                let known = self.modify(&uid, &mut fx.calls_ended, |ch| {
                    ch.name = name;
                    ch.last_seen = now;
                });
                if !known {
                    self.unknown += 1;
                }
            }
            return fx;
        }
        // Only events with a channel block describe the channel: others naming a Uniqueid
        // (an OriginateResponse, say) carry fields that are not its state.
        if msg.get("ChannelState").is_none() || uid.is_empty() {
            return fx;
        }
        let bridge = if is("BridgeEnter") {
            Some(text(msg, "BridgeUniqueid"))
        } else if is("BridgeLeave") {
            Some(None)
        } else {
            None
        };
        let known = self.modify(&uid, &mut fx.calls_ended, |ch| {
            ch.update(msg, now, true);
            if let Some(b) = bridge {
                ch.bridge = b;
            }
        });
        // One detached waits for its Hangup: what came before it is old news.
        if !known && !self.detached.contains_key(&uid) {
            self.unknown += 1;
        }
        fx
    }
}
