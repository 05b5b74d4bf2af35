//! What an action changes in the session beyond its own answer (the event mask, the filters
//! re-applied at every login), and undoing it when the server never took it: an action
//! withdrawn unsent (cancelled, or past its deadline before any byte left), or one the server
//! refused.

use super::*;

/// Why a session change is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Undo {
    /// Its action never left: the server never saw it.
    NeverSent,
    /// The server answered its action with an error: Asterisk left the session as it was.
    Refused,
}

impl Client {
    /// Takes the mask an `Events` action (`seq`) sets, keeping the one it replaces so that
    /// it can be restored if the server never takes the new one.
    pub(super) fn change_mask(&mut self, seq: u64, mask: String) {
        // Changes whose actions are gone (answered, or past their grace) are for good.
        let pending = &self.pending;
        self.mask_changes
            .retain(|(s, _)| pending.stage(*s).is_some());
        let previous = std::mem::replace(&mut self.config.events, mask);
        self.mask_changes.push((seq, previous));
    }

    /// Undoes what action `seq` changed in the session, if anything: its filter is no longer
    /// re-applied at later logins, and its mask gives way to the one before it (or, when a
    /// later mask change is still pending, becomes what that one restores if it is undone
    /// too).
    pub(super) fn undo_session_change(&mut self, seq: u64, why: Undo) {
        if let Some(i) = self.filters.iter().position(|(_, s)| *s == seq) {
            let (filter, _) = self.filters.remove(i);
            match why {
                Undo::Refused => log::warn!(
                    "{}: the server refused the filter {}; it is not re-applied at later logins",
                    self.config.who(),
                    crate::Shown(&filter)
                ),
                Undo::NeverSent => log::debug!(
                    "{}: the filter {} was never sent; it is not installed",
                    self.config.who(),
                    crate::Shown(&filter)
                ),
            }
        }
        let Some(i) = self.mask_changes.iter().position(|(s, _)| *s == seq) else {
            return;
        };
        let (_, previous) = self.mask_changes.remove(i);
        match self.mask_changes.get_mut(i) {
            // A later change stands; undoing it would now restore what this one replaced.
            Some((_, later_previous)) => *later_previous = previous,
            None => {
                log::warn!(
                    "{}: the event mask change was {}; the mask stays {}",
                    self.config.who(),
                    match why {
                        Undo::NeverSent => "never sent",
                        Undo::Refused => "refused by the server",
                    },
                    crate::Shown(&previous)
                );
                self.config.events = previous;
                // Async Originates accepted under the mask that never took effect: their
                // answers are call events again kept out (withdrawn at the next pump).
                if !crate::client::event_mask::admits_call(&self.config.events) {
                    self.originates_masked = true;
                }
            }
        }
    }

    /// Withdraws every async Originate none of whose bytes was handed out, now that the
    /// session's mask keeps its `OriginateResponse` out (see [`undo_session_change`]): sent,
    /// each would time out while its call was placed. Those already handed out stay (the
    /// server may run them); their answer can only time out.
    ///
    /// [`undo_session_change`]: Self::undo_session_change
    pub(super) fn withdraw_masked_originates(&mut self) {
        self.originates_masked = false;
        if crate::client::event_mask::admits_call(&self.config.events) {
            return;
        }
        for seq in self.pending.originates_unsent() {
            if self.pending.stage(seq) == Some(Stage::Written) {
                self.conn.transmit.withdraw(seq);
                self.conn.transmit.flush_withdrawn();
                self.stats.actions_withdrawn += 1;
            }
            log::warn!(
                "{}: an async Originate withdrawn unsent: the event mask {} keeps its OriginateResponse out",
                self.config.who(),
                crate::Shown(&self.config.events)
            );
            // Not `finish`: this runs inside the pump, which must not start again here.
            if let Some(p) = self.pending.remove(seq) {
                let mask = self.config.events.clone();
                self.emit_completed(p.id, Err(ActionError::FollowUpMasked { mask }));
            }
        }
    }
}
