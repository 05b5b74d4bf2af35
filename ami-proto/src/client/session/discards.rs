//! Reporting discarded server input: counted, logged once per burst, and placed in the event
//! stream where it happened; charged to the list it may have been an item of, so that list
//! cannot complete as if whole; and, when it was an action's response, failing that action
//! at once instead of at its deadline.

use super::*;
use crate::client::output::Discard;
use crate::repeats::Say;
use crate::wire::decoder::{DecodeError, DroppedOwner};

impl Client {
    /// Server input was thrown away: counts it, logs the first of a burst (and a summary at
    /// most every 10 s while it lasts), and puts a notice in the event stream.
    pub(super) fn discarded(&mut self, now: Instant, reason: Discard) {
        self.stats.discarded += 1;
        self.events.discarded(reason, 1);
        if let Discard::Malformed(_) = reason {
            // The decoder's own drop, not the server's ListItems (which some actions do not
            // fill in truthfully), decides that a list lost an item.
            match self.decoder.last_dropped().clone() {
                DroppedOwner::NoList | DroppedOwner::Response(None) => {}
                DroppedOwner::Response(Some(id)) => {
                    if let Some(seq) = self.pending.lookup(&id) {
                        self.response_discarded(now, seq, reason);
                    }
                }
                DroppedOwner::Id(id) => {
                    if let Some(seq) = self.pending.lookup(&id) {
                        self.list_item_lost(now, seq);
                    }
                }
                // Its ActionID was never read: any list in progress may have lost it.
                DroppedOwner::Unknown => {
                    for seq in self.pending.sorted_seqs() {
                        self.list_item_lost(now, seq);
                    }
                }
            }
        }
        let who = self.config.who();
        match self.burst.occur(now) {
            Say::Counted => {
                self.burst.unsaid(1, 0);
            }
            Say::Summary { unsaid, over, .. } => log::warn!(
                "{who}: {} more server inputs discarded in the last {} s (latest: {reason})",
                unsaid + 1,
                over.as_secs()
            ),
            Say::Full { left } => {
                if let Some((n, _)) = left {
                    log::warn!("{who}: {n} more server inputs discarded");
                }
                log::warn!(
                    "{who}: server input discarded: {reason} (counted in Stats and reported in \
                     the event stream; further discards in this burst are summarised)"
                );
            }
        }
    }
}

impl Client {
    /// The response of action `seq` was thrown away for `reason` (the discard itself is
    /// counted and reported by [`discarded`](Client::discarded)): if the action was waiting
    /// for it, it fails [`ActionError::ResponseDiscarded`] now. The server answered, so
    /// waiting on to its deadline would only report "no response arrived in time" later. It
    /// ends as a timed-out action does: the entry stays for the grace period, to swallow a
    /// late duplicate, and an async Originate's `OriginateResponse` goes to the stream.
    pub(super) fn response_discarded(&mut self, now: Instant, seq: u64, reason: Discard) {
        let Some(p) = self.pending.get_mut(seq) else {
            return;
        };
        if let Stage::Abandoned { .. } = p.stage {
            // The late answer came, unreadable: a later response would not be the first.
            p.answer_due = false;
        }
        if let Stage::Abandoned { blocking: true, .. } = p.stage {
            // A cancelled sync Originate's late answer: its call ended, and with it the
            // server's silence, so its hold on the heartbeat ends too (as it does when that
            // answer is read). The entry swallows what may follow for a grace period, as
            // for an answer discarded while awaited.
            let stage = Stage::Abandoned {
                list: true,
                blocking: false,
            };
            let grace = self.config.action_timeout;
            self.pending.set_stage(seq, stage, false);
            self.pending.set_deadline(seq, now + grace);
            return;
        }
        let awaited = match (p.kind, p.stage) {
            (Kind::User { .. }, Stage::Written) => true,
            // The second response of an action answered twice (JabberSend) is its answer.
            (
                Kind::User {
                    follow_up: Some(f), ..
                },
                Stage::FollowUp,
            ) => f.by == FollowUpBy::Response,
            // A list already started, a follow-up event awaited: not the response it waits
            // for. The client's own actions keep their own deadlines.
            _ => false,
        };
        if !awaited {
            return;
        }
        // The discarded response may have been a list's start: the items that follow carry
        // the ActionID and nobody waits for them, so they are swallowed (and counted) like
        // the rest of any ended list, not streamed as if they were live events. Not for an
        // action whose ActionID comes back in an event that is not its answer (an async
        // Originate's OriginateResponse goes to the stream, as for any ended Originate) or
        // that has a follow-up of its own. (A UserEvent's echo never reaches a pending
        // action: `on_event` streams every UserEvent.)
        let maybe_list = matches!(
            p.kind,
            Kind::User {
                follow_up: None,
                ..
            }
        );
        log::warn!(
            "{}: the response to {} was discarded ({reason}); the action fails now",
            self.config.who(),
            p.id
        );
        self.report(
            now,
            seq,
            Err(ActionError::ResponseDiscarded { reason }),
            false,
        );
        if maybe_list {
            self.pending.set_stage(
                seq,
                Stage::Abandoned {
                    list: true,
                    blocking: false,
                },
                false,
            );
        }
    }

    /// The decoder found, in the lines it skipped after dropping a response, that response's
    /// `ActionID`: the discard, counted when it happened, was this action's answer.
    pub(super) fn late_response_id(&mut self, now: Instant, id: &[u8], err: DecodeError) {
        if let Some(seq) = self.pending.lookup(id) {
            self.response_discarded(now, seq, Discard::Malformed(err));
        }
    }

    /// An item of action `seq`'s list, if it is collecting one, was dropped on the way in:
    /// counted in its response, so the list completes as
    /// [`ActionError::ListIncomplete`](crate::ActionError::ListIncomplete).
    pub(super) fn list_item_lost(&mut self, now: Instant, seq: u64) {
        let Some(p) = self.pending.get_mut(seq) else {
            return;
        };
        if p.stage != Stage::List {
            return;
        }
        let Some(response) = p.response.as_mut() else {
            return;
        };
        response.items_dropped += 1;
        let so_far = response.items_dropped;
        let who = self.config.who();
        match self.items_lost.occur(now) {
            Say::Counted => {
                self.items_lost.unsaid(1, 0);
            }
            Say::Summary { unsaid, over, .. } => log::warn!(
                "{who}: lists lost {} more item(s) on the way in, in the last {} s (latest: the \
                 list for {}, {so_far} so far); they will complete as incomplete",
                unsaid + 1,
                over.as_secs(),
                p.id
            ),
            Say::Full { left } => {
                if let Some((n, _)) = left {
                    log::warn!("{who}: lists lost {n} more item(s) on the way in");
                }
                log::warn!(
                    "{who}: list for {} lost an item on the way in ({so_far} so far); it will \
                     complete as incomplete (further losses are summarised)",
                    p.id
                );
            }
        }
    }
}
