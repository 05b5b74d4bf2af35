//! Event storms rendered in bulk: the UserEvents of
//! [`SimServer::emit_user_events`](crate::SimServer::emit_user_events) and
//! [`emit_user_events_sized`](crate::SimServer::emit_user_events_sized).
//!
//! A storm's events differ only in their `Seq` number (and, for sized events, in the length
//! of `Pad`, which absorbs `Seq`'s extra digits). So the text before `Seq: ` and the padding
//! are rendered once per storm, and each event is that head, its digits and its tail copied
//! into one buffer: no allocation, formatting or builder per event. The buffer is delivered
//! a run of events at a time (at most [`Storm::RUN_BYTES`], so a storm of any length costs a
//! bounded scratch buffer), each session taking a whole run in one append when nothing in it
//! can change per event (see `SimServer::broadcast_run`).

use crate::classes::ClassMask;
use crate::events::EventBuilder;

/// The channel fields of a sized storm event (those of a Newchannel on Asterisk 22).
const STORM_CHANNEL: [(&str, &str); 14] = [
    ("Channel", "PJSIP/100-0000002a"),
    ("ChannelState", "6"),
    ("ChannelStateDesc", "Up"),
    ("CallerIDNum", "100"),
    ("CallerIDName", "Alice Example"),
    ("ConnectedLineNum", "200"),
    ("ConnectedLineName", "Bob Example"),
    ("Language", "en"),
    ("AccountCode", ""),
    ("Context", "from-internal"),
    ("Exten", "200"),
    ("Priority", "1"),
    ("Uniqueid", "1764633600.42"),
    ("Linkedid", "1764633600.42"),
];

/// The storm events' `Event:` name.
pub(crate) const NAME: &str = "UserEvent";
/// The storm events' class.
pub(crate) const CLASS: ClassMask = ClassMask::USER;

/// A storm being rendered: the shared text, and the current run of events.
#[derive(Debug, Default)]
pub(crate) struct Storm {
    /// Everything up to and including `Seq: `.
    head: Vec<u8>,
    /// For sized events: `\r\nPad: ` and the longest padding (that of a one-digit `Seq`).
    pad: Option<Vec<u8>>,
    /// The current run: events back to back.
    pub(crate) run: Vec<u8>,
    /// The end offset of each event of the run in `run`.
    pub(crate) ends: Vec<usize>,
}

impl Storm {
    /// Largest run rendered before it is delivered (a whole event always fits, however long).
    pub(crate) const RUN_BYTES: usize = 64 << 10;

    /// Sets the text up for plain events (`event_bytes: None`, about 75 bytes) or sized ones
    /// (the fields of a channel, then a `Pad` to `event_bytes`; a smaller size gets an
    /// empty `Pad`).
    pub(crate) fn prepare(&mut self, system_name: Option<&str>, event_bytes: Option<usize>) {
        let mut ev = EventBuilder::new(NAME, CLASS, system_name);
        if event_bytes.is_some() {
            for (k, v) in STORM_CHANNEL {
                ev.push(k, v);
            }
        }
        ev.push("UserEvent", "SimStorm");
        self.head = ev.unfinished();
        self.head.extend_from_slice(b"Seq: ");
        self.pad = event_bytes.map(|size| {
            const PAD: &[u8] = b"\r\nPad: ";
            // The length with an empty pad and a one-digit `Seq`.
            let base = self.head.len() + 1 + PAD.len() + b"\r\n\r\n".len();
            let mut pad = Vec::with_capacity(PAD.len() + size.saturating_sub(base));
            pad.extend_from_slice(PAD);
            pad.resize(PAD.len() + size.saturating_sub(base), b'x');
            pad
        });
        self.run.clear();
        self.ends.clear();
    }

    /// Renders events `seq..` into a fresh run until it holds [`RUN_BYTES`](Self::RUN_BYTES)
    /// or event `end - 1`; returns the next `seq`.
    pub(crate) fn render(&mut self, mut seq: usize, end: usize) -> usize {
        self.run.clear();
        self.ends.clear();
        while seq < end && self.run.len() < Self::RUN_BYTES {
            self.run.extend_from_slice(&self.head);
            let digits = push_decimal(&mut self.run, seq);
            if let Some(pad) = &self.pad {
                // Each digit of `Seq` past the first takes a byte off the pad.
                let cut = (digits - 1).min(pad.len() - b"\r\nPad: ".len());
                self.run.extend_from_slice(&pad[..pad.len() - cut]);
            }
            self.run.extend_from_slice(b"\r\n\r\n");
            self.ends.push(self.run.len());
            seq += 1;
        }
        seq
    }

    /// The events of the current run, in order.
    pub(crate) fn events(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| &self.run[a..b])
    }
}

/// Appends `n` in decimal; returns how many digits.
fn push_decimal(out: &mut Vec<u8>, mut n: usize) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    digits.len() - i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A storm event as the event builder lays it out, field by field (what the bulk
    /// rendering must reproduce byte for byte).
    fn built(system_name: Option<&str>, seq: usize, pad: Option<usize>) -> Vec<u8> {
        let mut ev = EventBuilder::new(NAME, CLASS, system_name);
        if pad.is_some() {
            for (k, v) in STORM_CHANNEL {
                ev.push(k, v);
            }
        }
        ev.push("UserEvent", "SimStorm");
        ev.push("Seq", seq.to_string());
        if let Some(pad) = pad {
            ev.push("Pad", "x".repeat(pad));
        }
        ev.build().bytes
    }

    fn render_all(storm: &mut Storm, n: usize) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        let mut seq = 0;
        while seq < n {
            seq = storm.render(seq, n);
            assert_eq!(storm.ends.len(), storm.events().count());
            all.extend(storm.events().map(<[u8]>::to_vec));
        }
        all
    }

    #[test]
    fn plain_storm_events_are_the_builders_bytes() {
        for sys in [None, Some("pbx-1")] {
            let mut storm = Storm::default();
            storm.prepare(sys, None);
            let all = render_all(&mut storm, 2_500);
            assert_eq!(all.len(), 2_500);
            for (i, ev) in all.iter().enumerate() {
                assert_eq!(ev, &built(sys, i, None), "event {i}");
            }
        }
    }

    #[test]
    fn sized_storm_events_are_the_builders_bytes_and_keep_their_size() {
        let mut storm = Storm::default();
        storm.prepare(Some("pbx-1"), Some(500));
        let base = built(Some("pbx-1"), 0, Some(0)).len();
        let all = render_all(&mut storm, 12_000);
        for (i, ev) in all.iter().enumerate() {
            let extra = i.max(1).ilog10() as usize;
            assert_eq!(
                ev,
                &built(Some("pbx-1"), i, Some(500 - base - extra)),
                "{i}"
            );
            assert_eq!(ev.len(), 500);
        }
        // Smaller than the fields: an empty pad, whatever the digits.
        storm.prepare(None, Some(10));
        let all = render_all(&mut storm, 120);
        assert_eq!(all[0], built(None, 0, Some(0)));
        assert_eq!(all[119], built(None, 119, Some(0)));
    }

    #[test]
    fn a_run_stops_at_its_byte_budget_but_always_holds_one_event() {
        let mut storm = Storm::default();
        storm.prepare(None, Some(Storm::RUN_BYTES * 2));
        assert_eq!(storm.render(0, 3), 1);
        assert_eq!(storm.ends, [Storm::RUN_BYTES * 2]);
        storm.prepare(None, Some(1000));
        let next = storm.render(0, 1_000);
        assert_eq!(next, Storm::RUN_BYTES.div_ceil(1000));
        assert!(storm.run.len() >= Storm::RUN_BYTES && storm.run.len() < Storm::RUN_BYTES + 1000);
    }
}
