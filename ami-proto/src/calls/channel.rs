//! One live channel as the tracker knows it, and how channels and calls end.

use super::originate::OriginateTag;
use crate::wire::message::Message;
use std::time::Instant;

/// A channel's state, as Asterisk numbers it (`ChannelState` / `ChannelStateDesc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelState {
    /// 0: allocated, not in use.
    Down,
    /// 1: reserved.
    Reserved,
    /// 2: off hook.
    OffHook,
    /// 3: digits dialled.
    Dialing,
    /// 4: the line is ringing (an incoming call being offered).
    Ring,
    /// 5: the remote end is ringing.
    Ringing,
    /// 6: answered.
    Up,
    /// 7: busy.
    Busy,
    /// 8: digits dialled while off hook.
    DialingOffHook,
    /// 9: about to ring.
    PreRing,
    /// A code this library does not know.
    Other(u8),
}

impl ChannelState {
    /// The state for Asterisk's numeric code.
    pub fn from_code(code: u8) -> ChannelState {
        match code {
            0 => ChannelState::Down,
            1 => ChannelState::Reserved,
            2 => ChannelState::OffHook,
            3 => ChannelState::Dialing,
            4 => ChannelState::Ring,
            5 => ChannelState::Ringing,
            6 => ChannelState::Up,
            7 => ChannelState::Busy,
            8 => ChannelState::DialingOffHook,
            9 => ChannelState::PreRing,
            other => ChannelState::Other(other),
        }
    }

    /// Asterisk's numeric code.
    pub fn code(self) -> u8 {
        match self {
            ChannelState::Down => 0,
            ChannelState::Reserved => 1,
            ChannelState::OffHook => 2,
            ChannelState::Dialing => 3,
            ChannelState::Ring => 4,
            ChannelState::Ringing => 5,
            ChannelState::Up => 6,
            ChannelState::Busy => 7,
            ChannelState::DialingOffHook => 8,
            ChannelState::PreRing => 9,
            ChannelState::Other(code) => code,
        }
    }

    /// Asterisk's name for the state (`ast_state2str`).
    pub fn name(self) -> &'static str {
        match self {
            ChannelState::Down => "Down",
            ChannelState::Reserved => "Rsrvd",
            ChannelState::OffHook => "OffHook",
            ChannelState::Dialing => "Dialing",
            ChannelState::Ring => "Ring",
            ChannelState::Ringing => "Ringing",
            ChannelState::Up => "Up",
            ChannelState::Busy => "Busy",
            ChannelState::DialingOffHook => "Dialing Offhook",
            ChannelState::PreRing => "Pre-ring",
            ChannelState::Other(_) => "Unknown",
        }
    }
}

/// A live channel: the fields of the channel block Asterisk puts in every channel event,
/// plus what the tracker observed about it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Channel {
    /// `Uniqueid`: the key.
    pub uniqueid: String,
    /// `Linkedid`: the call it belongs to (the Uniqueid of the channel that started it).
    pub linkedid: String,
    /// `Channel`, e.g. `PJSIP/100-00000001`.
    pub name: String,
    /// `ChannelState`.
    pub state: ChannelState,
    /// `CallerIDNum` (`<unknown>` as Asterisk prints it when unset).
    pub caller_id_num: String,
    /// `CallerIDName`, with Asterisk's C escapes undone (`O'Brien`, not `O\'Brien`; see
    /// [`unescape_c`](crate::unescape_c)); bytes that are not UTF-8 are replaced, never an
    /// error.
    pub caller_id_name: String,
    /// `ConnectedLineNum`.
    pub connected_line_num: String,
    /// `ConnectedLineName`, with Asterisk's C escapes undone, as `caller_id_name`.
    pub connected_line_name: String,
    /// `Context`.
    pub context: String,
    /// `Exten`.
    pub exten: String,
    /// `Priority`.
    pub priority: String,
    /// The bridge it is in (`BridgeUniqueid` of `BridgeEnter`, `BridgeId` of a snapshot).
    pub bridge: Option<String>,
    /// When it was created: when the tracker saw its `Newchannel`, or, for one first known
    /// from a snapshot (created while the tracker was not watching), the snapshot's
    /// `Duration` back from when the snapshot was applied (whole seconds: up to a second
    /// and the snapshot's round trip off). `None` when neither said.
    pub created: Option<Instant>,
    /// When the tracker saw it answered (state became Up); `None` if not answered, or
    /// answered while the tracker was not watching (then `state` is Up).
    pub answered: Option<Instant>,
    /// When the tracker last had word of it (an event, or a snapshot listing it).
    pub last_seen: Instant,
    /// First known from a snapshot rather than from its `Newchannel`.
    pub adopted: bool,
    /// The originate tag it carries (the tracker's tag variable), if any.
    pub originate: Option<OriginateTag>,
}

impl Channel {
    /// A channel from the unprefixed channel block of `msg` (an event or a snapshot item);
    /// `None` without a `Uniqueid`.
    pub(crate) fn from_block(msg: &Message, now: Instant) -> Option<Channel> {
        let uniqueid = text(msg, "Uniqueid")?;
        if uniqueid.is_empty() {
            return None;
        }
        let mut ch = Channel {
            linkedid: uniqueid.clone(),
            uniqueid,
            name: String::new(),
            state: ChannelState::Down,
            caller_id_num: String::new(),
            caller_id_name: String::new(),
            connected_line_num: String::new(),
            connected_line_name: String::new(),
            context: String::new(),
            exten: String::new(),
            priority: String::new(),
            bridge: None,
            created: None,
            answered: None,
            last_seen: now,
            adopted: false,
            originate: None,
        };
        ch.update(msg, now, false);
        Some(ch)
    }

    /// Takes every block field `msg` carries. `observed`: the message is an event seen as it
    /// happened, so a change to Up is the answer time.
    pub(crate) fn update(&mut self, msg: &Message, now: Instant, observed: bool) {
        let slots: [(&str, &mut String); 10] = [
            ("Linkedid", &mut self.linkedid),
            ("Channel", &mut self.name),
            ("CallerIDNum", &mut self.caller_id_num),
            ("CallerIDName", &mut self.caller_id_name),
            ("ConnectedLineNum", &mut self.connected_line_num),
            ("ConnectedLineName", &mut self.connected_line_name),
            ("Context", &mut self.context),
            ("Exten", &mut self.exten),
            ("Priority", &mut self.priority),
            ("Uniqueid", &mut self.uniqueid),
        ];
        for (key, slot) in slots {
            if let Some(v) = text(msg, key) {
                if !v.is_empty() || key != "Linkedid" {
                    *slot = match key {
                        // The channel block C-escapes names (since Asterisk 13.5): a caller
                        // named O'Brien arrives as `O\'Brien`.
                        "CallerIDName" | "ConnectedLineName" => {
                            crate::wire::c_escape::unescape_c(&v).into_owned()
                        }
                        _ => v,
                    };
                }
            }
        }
        if let Some(code) = msg
            .get_str("ChannelState")
            .and_then(|c| c.trim().parse::<u8>().ok())
        {
            let state = ChannelState::from_code(code);
            if observed && state == ChannelState::Up && self.state != ChannelState::Up {
                self.answered.get_or_insert(now);
            }
            self.state = state;
        }
        self.last_seen = now;
    }
}

/// The `Uniqueid` of `msg` as the tracker keys channels: its text, bytes that are not UTF-8
/// replaced (the same key at every event of the channel, and in every snapshot); empty
/// without one.
pub(crate) fn uniqueid(msg: &Message) -> String {
    text(msg, "Uniqueid").unwrap_or_default()
}

/// Most bytes of one text field the tracker keeps (a channel's name, caller ID, context,
/// a bridge id, a cause text...): Asterisk's own are far shorter (a Uniqueid is at most 149
/// characters), and a longer one (a caller's SIP display name of any length) is cut here, at
/// a character boundary, so that each channel costs about 1 KiB whatever the server sends.
/// Cut fields are counted ([`TrackerStats::fields_cut`](super::TrackerStats::fields_cut)).
pub const MAX_FIELD_BYTES: usize = 256;

/// The fields the tracker keeps, whose length [`MAX_FIELD_BYTES`] caps.
const KEPT: [&str; 14] = [
    "Uniqueid",
    "Linkedid",
    "Channel",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Context",
    "Exten",
    "Priority",
    "Cause-txt",
    "Newname",
    "BridgeUniqueid",
    "BridgeId",
];

/// How many fields of `msg` the tracker keeps are longer than [`MAX_FIELD_BYTES`].
pub(crate) fn fields_over_cap(msg: &Message) -> u64 {
    msg.fields()
        .filter(|f| f.value.as_bytes().len() > MAX_FIELD_BYTES)
        .filter(|f| {
            KEPT.iter()
                .any(|k| f.key.eq_ignore_ascii_case(k.as_bytes()))
        })
        .count() as u64
}

/// A field as text, cut to [`MAX_FIELD_BYTES`]; bytes that are not UTF-8 are replaced.
pub(crate) fn text(msg: &Message, key: &str) -> Option<String> {
    msg.get(key).map(|v| {
        let bytes = v.as_bytes();
        let bytes = &bytes[..bytes.len().min(MAX_FIELD_BYTES)];
        let mut s = String::from_utf8_lossy(bytes).into_owned();
        if s.len() > MAX_FIELD_BYTES {
            // A replacement character made it longer: cut at a character boundary.
            let mut end = MAX_FIELD_BYTES;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s
    })
}

/// How a channel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// Its `Hangup` event was seen.
    Hangup {
        /// When the tracker received it.
        at: Instant,
        /// `Cause` (Q.850), if the event carried one.
        cause: Option<u16>,
        /// `Cause-txt`.
        cause_txt: Option<String>,
    },
    /// It was gone from the snapshot taken after an outage or a gap: it ended while the
    /// tracker could not see. Its cause and end time are unknown, and never made up.
    Unobserved {
        /// When the tracker last had word of it alive.
        last_seen: Instant,
        /// When the snapshot showed it gone.
        noticed: Instant,
    },
}

/// A channel that ended, with how.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndedChannel {
    /// The channel as last known.
    pub channel: Channel,
    /// How it ended.
    pub ending: Ending,
}

/// When a call ended, as far as the tracker knows: [`EndedCall::ended`]. Each case is its
/// own variant so that "unknown" can never be read as "no end" or the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallEnd {
    /// Every channel that ended in it was seen hanging up; the latest `Hangup` was received
    /// at this time.
    Seen(Instant),
    /// At least one of its channels ended while the tracker could not see (a gap, an
    /// outage): the end time is unknown and never made up. The call ended after
    /// `last_seen` (the latest word the tracker had of any of its channels: a `Hangup`
    /// seen, or a sign of life of one that ended unseen) and before `noticed` (when a
    /// snapshot showed the last such channel gone).
    Unobserved {
        /// The call ended after this.
        last_seen: Instant,
        /// The call had ended by this.
        noticed: Instant,
    },
    /// None of its channels ended in it: every one moved to another call while live
    /// ([`EndedCall::channels_moved`]) and lives on there. It has no end of its own.
    Moved,
}

impl CallEnd {
    /// The end time if it was seen; `None` for [`CallEnd::Unobserved`] and
    /// [`CallEnd::Moved`] (match on the variant to tell those apart).
    pub fn seen(self) -> Option<Instant> {
        match self {
            CallEnd::Seen(at) => Some(at),
            _ => None,
        }
    }

    /// Folds in one more channel's ending.
    pub(crate) fn with(end: Option<CallEnd>, ending: &Ending) -> CallEnd {
        let (seen, unseen) = match *ending {
            Ending::Hangup { at, .. } => (at, None),
            Ending::Unobserved { last_seen, noticed } => (last_seen, Some(noticed)),
        };
        match (end, unseen) {
            (Some(CallEnd::Seen(a)), None) => CallEnd::Seen(a.max(seen)),
            (Some(CallEnd::Unobserved { last_seen, noticed }), n) => CallEnd::Unobserved {
                last_seen: last_seen.max(seen),
                noticed: n.map_or(noticed, |n| n.max(noticed)),
            },
            (Some(CallEnd::Seen(a)), Some(noticed)) => CallEnd::Unobserved {
                last_seen: a.max(seen),
                noticed,
            },
            (None | Some(CallEnd::Moved), None) => CallEnd::Seen(seen),
            (None | Some(CallEnd::Moved), Some(noticed)) => CallEnd::Unobserved {
                last_seen: seen,
                noticed,
            },
        }
    }
}

/// A call (the channels sharing a `Linkedid`) with no live channel left: its last channel
/// ended, or moved to another call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndedCall {
    /// The call's `Linkedid`.
    pub linkedid: String,
    /// Its channels in the order they ended (at most [`MAX_ENDED_PER_CALL`]; more are counted
    /// in `channels_not_kept`).
    pub channels: Vec<EndedChannel>,
    /// Ended channels beyond [`MAX_ENDED_PER_CALL`], not kept.
    pub channels_not_kept: u64,
    /// Channels that left it for another call while live (their `Linkedid` changed: a
    /// transfer, a bridge with an older call, a Local channel optimised away). They are not
    /// in `channels`: they end with the call they joined. A call all of whose channels moved
    /// ends with `channels` empty.
    pub channels_moved: u64,
    /// Folded from every channel that ended in it, those not kept too.
    pub(crate) end: CallEnd,
    /// The cause of the last channel that ended in it (those not kept too); `None` if it
    /// ended unseen or without one.
    pub(crate) last_cause: Option<u16>,
}

/// Most ended channels one call keeps while other channels of it are still live (a long call
/// with many transfers); past it they are counted, not kept.
pub const MAX_ENDED_PER_CALL: usize = 64;

impl EndedCall {
    /// The earliest observed creation of its channels.
    pub fn created(&self) -> Option<Instant> {
        self.channels.iter().filter_map(|c| c.channel.created).min()
    }

    /// The earliest observed answer of its channels.
    pub fn answered(&self) -> Option<Instant> {
        self.channels
            .iter()
            .filter_map(|c| c.channel.answered)
            .min()
    }

    /// When it ended: seen (the latest `Hangup` of its channels, those beyond
    /// [`MAX_ENDED_PER_CALL`] included), unknown because a channel ended unobserved (with the
    /// bounds the tracker has), or no end of its own because every channel moved away.
    pub fn ended(&self) -> CallEnd {
        self.end
    }

    /// The hangup cause: the originating channel's (Uniqueid = Linkedid) if its Hangup was
    /// seen, else the first seen cause; `None` if no Hangup with a cause was seen.
    pub fn cause(&self) -> Option<u16> {
        let cause_of = |c: &EndedChannel| match c.ending {
            Ending::Hangup { cause, .. } => cause,
            Ending::Unobserved { .. } => None,
        };
        self.channels
            .iter()
            .find(|c| c.channel.uniqueid == self.linkedid)
            .and_then(cause_of)
            .or_else(|| self.channels.iter().find_map(cause_of))
    }

    /// True if any of its channels ended while the tracker could not see (those beyond
    /// [`MAX_ENDED_PER_CALL`] included): then [`ended`](Self::ended) is
    /// [`CallEnd::Unobserved`].
    pub fn unobserved(&self) -> bool {
        matches!(self.end, CallEnd::Unobserved { .. })
    }
}
