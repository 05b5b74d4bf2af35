//! Channels reached by events applied after a snapshot's mark but before its answer.
//!
//! Normally such events are held and applied after the snapshot. When more come than
//! `max_buffered_events` allows (a flood while the answer is on its way), holding them all
//! would need an unbounded buffer, and starting the snapshot over would never finish under a
//! steady flood. Instead the tracker applies them at once and remembers which channels they
//! reached: for those the view is newer than the snapshot, which then must not overwrite
//! them, nor bring back one they saw hang up.

use std::collections::BTreeMap;

/// What events after the mark did to one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Touch {
    /// Its `Newchannel` came after the mark: the snapshot cannot list it.
    pub(crate) born: bool,
    /// A `BridgeEnter` or `BridgeLeave` came after the mark: the view knows its bridge
    /// better than the snapshot. Otherwise the snapshot's bridge is taken (a bridge entered
    /// in a gap before the mark is only in the snapshot).
    pub(crate) bridged: bool,
}

/// The channels events after the mark reached. Bounded without a cap of its own: an entry is
/// a channel in the view (at most `max_channels`), or one that was in it at the mark and hung
/// up since (at most `max_channels` more); a channel born and gone after the mark is
/// forgotten, as no snapshot taken at the mark can list it.
#[derive(Debug, Default)]
pub(crate) struct AfterMark {
    touched: BTreeMap<String, Touch>,
}

impl AfterMark {
    /// Events after the mark reached this channel (`was`/`is`: in the view before and after
    /// the event; `bridge`: it was a bridge event).
    pub(crate) fn touch(&mut self, uniqueid: &str, was: bool, is: bool, bridge: bool) {
        if !was && !is {
            return;
        }
        let entry = self.touched.entry(uniqueid.to_string()).or_insert(Touch {
            born: !was,
            bridged: false,
        });
        entry.bridged |= bridge;
        if !is && entry.born {
            self.touched.remove(uniqueid);
        }
    }

    /// What events after the mark did to this channel, if any reached it.
    pub(crate) fn get(&self, uniqueid: &str) -> Option<Touch> {
        self.touched.get(uniqueid).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_born_and_gone_after_the_mark_is_forgotten_one_gone_is_kept() {
        let mut m = AfterMark::default();
        m.touch("new", false, true, false);
        m.touch("new", true, false, false);
        assert_eq!(m.get("new"), None, "no snapshot at the mark can list it");
        m.touch("old", true, true, true);
        m.touch("old", true, false, false);
        assert_eq!(
            m.get("old"),
            Some(Touch {
                born: false,
                bridged: true
            }),
            "the snapshot lists it: it must not come back"
        );
        m.touch("never", false, false, false);
        assert_eq!(m.get("never"), None);
    }
}
