//! Matching what the server sends to pending actions: responses, list items, follow-up
//! events, deadlines; each action completes exactly once.

use super::*;
use crate::client::events::LoginEvent;
use crate::repeats::Say;

impl Client {
    pub(super) fn on_message(&mut self, now: Instant, mut msg: Message) {
        self.stats.messages_in += 1;
        if msg.kind() != MessageKind::Event {
            // Only queued events stay slices of the read buffer; anything kept elsewhere (a
            // response in an outcome) gets its own allocation.
            msg.detach();
        }
        // Liveness counts progress, not bytes: only a complete event or response re-arms the
        // idle timer and cancels a pong deadline. A server that trickles an endless line, or
        // floods broken or foreign messages, still gets a Ping and is closed if it does not
        // answer it.
        if matches!(msg.kind(), MessageKind::Response | MessageKind::Event)
            && matches!(self.state, State::Ready | State::Configuring)
        {
            self.timers
                .set(Timer::Idle, now + self.config.ping_interval);
            self.timers.stop(Timer::Pong);
        }
        match msg.kind() {
            MessageKind::Response => self.on_response(now, msg),
            MessageKind::Event => self.on_event(now, msg),
            _ => {
                self.stats.unexpected += 1;
                let owner = msg
                    .action_id_value()
                    .and_then(|id| self.pending.lookup(id.as_bytes()));
                self.discarded(now, Discard::NotEventOrResponse);
                // Skipped input carrying a pending ActionID was meant for that action: an
                // item of its list, or its response (one glued behind a banner line sent
                // again mid-session).
                if let Some(seq) = owner {
                    self.list_item_lost(now, seq);
                    self.response_discarded(now, seq, Discard::NotEventOrResponse);
                }
            }
        }
    }

    pub(super) fn on_response(&mut self, now: Instant, msg: Message) {
        let is_error = msg.first_value().is_some_and(|r| r.is_word("Error"));
        // Asterisk refuses every action while it shuts down: whatever this answers (an
        // action awaited, one its caller stopped waiting for, one long forgotten), the EOF
        // (or reset) that follows is the server's shutdown, not a failure, and the refusal
        // is not the action's own (what it changed in the session is kept).
        let shutdown_refusal = is_error && response_text_is_shutdown(&msg);
        if shutdown_refusal {
            self.conn.server_shutdown = true;
        }
        let Some(seq) = msg
            .action_id_value()
            .and_then(|id| self.pending.lookup(id.as_bytes()))
        else {
            if msg
                .action_id_value()
                .is_some_and(|id| self.is_evicted(id.as_bytes()))
            {
                self.evicted_answer(now, &msg);
                return;
            }
            self.stats.unmatched += 1;
            self.discarded(now, Discard::UnmatchedResponse);
            return;
        };
        let Some(p) = self.pending.get_mut(seq) else {
            return;
        };
        let list_start = msg.get("EventList").is_some_and(|v| v.is_word("start"));
        match (p.kind, p.stage) {
            (Kind::Internal(which), _) => self.on_internal_response(now, seq, which, msg),
            (Kind::User { .. }, Stage::Written) if list_start && !is_error => {
                p.response = Some(Box::new(Response::new(msg)));
                self.pending.set_stage(seq, Stage::List, true);
            }
            (Kind::User { follow_up, .. }, Stage::Written) => {
                if let Some(at) = p.written_at {
                    self.stats.latency.record(now.saturating_duration_since(at));
                }
                let mut response = Response::new(msg);
                if is_error {
                    if !shutdown_refusal {
                        self.undo_session_change(seq, changes::Undo::Refused);
                    }
                    self.finish(now, seq, Err(ActionError::Server(Box::new(response))));
                } else if let Some(f) = follow_up {
                    match p.early_follow_up.take() {
                        Some(ev) => {
                            response.follow_up = Some(ev);
                            let outcome = follow_up_outcome(f, response);
                            self.finish(now, seq, outcome);
                        }
                        None => {
                            p.response = Some(Box::new(response));
                            self.pending.set_stage(seq, Stage::FollowUp, false);
                            self.pending.set_deadline(seq, now + f.budget);
                        }
                    }
                } else {
                    self.finish(now, seq, Ok(response));
                }
            }
            (Kind::User { .. }, Stage::List) => {
                // A second response ends the list: CoreShowChannelMap sends Error after start
                // and never completes; PJSIPShowEndpoint sends an Error and then its Complete.
                // The entry stays abandoned to swallow a late Complete, without holding a
                // pipeline slot.
                let mut response = p
                    .response
                    .take()
                    .map_or_else(|| Response::new(msg.clone()), |r| *r);
                // Not an `EventList: Complete`: the list did not complete, whatever the
                // second response says (Asterisk's are Errors), so it is never a success.
                response.response = msg;
                self.report(
                    now,
                    seq,
                    Err(ActionError::Server(Box::new(response))),
                    false,
                );
            }
            (Kind::User { follow_up, .. }, Stage::Abandoned { .. }) => {
                self.stats.late_answers_dropped += 1;
                // Its first response: what the server did, for the stream (the action keeps
                // the outcome it got). Only from a Ready session: before its `Ready` it would
                // read as the next session's.
                let late = std::mem::take(&mut p.answer_due)
                    .then(|| (p.id.clone(), p.mark.take()))
                    .filter(|_| self.conn.ready_since.is_some());
                log::debug!(
                    "{}: late response for {} {}: the action had ended",
                    self.config.who(),
                    p.id,
                    if late.is_some() {
                        "reported in the event stream"
                    } else {
                        "dropped"
                    }
                );
                if is_error && !shutdown_refusal {
                    // Refused after its caller stopped waiting (timed out, cancelled): what
                    // it changed in the session is not kept either.
                    self.undo_session_change(seq, changes::Undo::Refused);
                }
                if list_start && !is_error {
                    let stage = Stage::Abandoned {
                        list: true,
                        blocking: false,
                    };
                    self.pending.set_stage(seq, stage, false);
                } else if !is_error && follow_up.is_some_and(|f| f.by == FollowUpBy::Response) {
                    // Its result comes next, in a second response: swallowed with it (the
                    // entry goes then, or at its grace), not counted as a stray response.
                    self.pending.answered_first(seq);
                } else if !is_error && follow_up.is_some_and(|f| !f.is_originate()) {
                    // Its data comes next, in an event of its own (FAXStats): swallowed with
                    // it, as the rest of a cancelled action's answer is; the entry goes then,
                    // or at its grace.
                } else {
                    // A cancelled sync Originate's answer ends its hold on the heartbeat with
                    // it: the session it blocked is free again.
                    self.pending.remove(seq);
                }
                // Last: a queue full under `CloseSession` ends the session, and the entry
                // with it.
                if let Some((id, mark)) = late {
                    self.queue_late_answer(now, id, mark, msg);
                }
            }
            (
                Kind::User {
                    follow_up: Some(f), ..
                },
                Stage::FollowUp,
            ) if f.by == FollowUpBy::Response => {
                if let Some(mut response) = p.response.take().map(|r| *r) {
                    response.follow_up = Some(Box::new(msg));
                    let outcome = follow_up_outcome(f, response);
                    self.finish(now, seq, outcome);
                }
            }
            (Kind::User { .. }, _) => {
                // A second response to an action that had its own (an async Originate
                // waiting for its OriginateResponse): nothing waits for it, so it is an
                // unmatched response, counted and reported like any other.
                log::debug!(
                    "{}: duplicate response for {} discarded",
                    self.config.who(),
                    p.id
                );
                self.stats.unmatched += 1;
                self.discarded(now, Discard::UnmatchedResponse);
            }
        }
    }

    pub(super) fn on_event(&mut self, now: Instant, mut msg: Message) {
        self.stats.events_in += 1;
        // A `UserEvent` is never part of an answer (no list has it as items or end, and no
        // action waits for it), and its ActionID is whatever its raiser sent
        // (`action_userevent` copies the headers): any client with `write=user` could name
        // one of ours, which are sequential, and end a pending list or add to it.
        if let Some(seq) = msg
            .action_id_value()
            .and_then(|id| self.pending.lookup(id.as_bytes()))
            .filter(|_| !msg.first_value().is_some_and(|e| e.is_word("UserEvent")))
        {
            // A list item or follow-up is kept by its action: its own allocation.
            msg.detach();
            if self.claim_event(now, seq, &msg) {
                return;
            }
        } else if self.conn.evicted_through > 0
            // Checked first: the ActionID scan below is a second pass over the headers of
            // every event, and no entry of this connection was evicted in the common case.
            && msg
                .action_id_value()
                .is_some_and(|id| self.is_evicted(id.as_bytes()))
            && !msg.first_value().is_some_and(|e| {
                // A UserEvent's ActionID is its raiser's; an OriginateResponse says how a
                // call ended, and goes to the stream whenever it comes (see `claim_event`).
                e.is_word("UserEvent") || e.is_word(FollowUp::ORIGINATE)
            })
        {
            // An item of a list (or a follow-up) of an action whose entry was evicted: its
            // answer, which nobody waits for, not an event of the stream.
            self.evicted_answer(now, &msg);
            return;
        }
        // An event: its first value is its name (checked as bytes, once per event).
        if msg.first_value().is_some_and(|e| e.is_word("Shutdown")) {
            self.conn.server_shutdown = true;
        }
        if self.conn.ready_since.is_none() {
            let login_event = (self.state == State::Configuring)
                .then(|| login_event(&msg, &self.config.username))
                .flatten();
            if let Some(kind) = login_event {
                // Asterisk writes these inline after the login's Success, before any
                // filter can exist, so a session that adds its filters after login gets
                // them too: they wait for Ready instead of being discarded (and counted as
                // possible losses) at every login.
                msg.detach();
                if self.events.hold_until_ready(kind, msg) {
                    self.discarded(now, Discard::BeforeReady);
                }
                return;
            }
            // The session is not announced yet: a reconnect still re-applying its filters
            // (or a server sending events before the login's answer). Ready must come first
            // in the stream, and these events may not have passed the filters.
            self.discarded(now, Discard::BeforeReady);
            return;
        }
        self.queue_event(now, msg);
    }

    /// Offers an event of the Ready session to the stream.
    pub(super) fn queue_event(&mut self, now: Instant, msg: Message) {
        let shared = msg.shared_bytes();
        match self.events.offer(msg) {
            Offer::Queued => {
                self.stats.events_queued += 1;
                self.read_shared += shared;
            }
            Offer::Dropped => {
                if self.config.overflow == OverflowPolicy::DropOldest {
                    // Queued in the place of older events.
                    self.read_shared += shared;
                }
            }
            Offer::Overflow => self.disconnect(now, DisconnectReason::EventOverflow),
            Offer::Unread => {}
        }
        self.log_overflows(now);
    }

    /// Offers the first response of an action that had ended without it (or whose outcome
    /// its caller never took: [`Client::unclaimed`]) to the stream
    /// ([`StreamItem::LateAnswer`]), under the queue's caps and overflow policy.
    pub(super) fn queue_late_answer(
        &mut self,
        now: Instant,
        id: ActionId,
        mark: Option<u64>,
        msg: Message,
    ) {
        match self.events.late_answer(id, mark, msg) {
            Offer::Queued => self.stats.events_queued += 1,
            Offer::Dropped | Offer::Unread => {}
            Offer::Overflow => self.disconnect(now, DisconnectReason::EventOverflow),
        }
        self.log_overflows(now);
    }

    /// Gives an event with a pending ActionID to its action; false if the action does not
    /// want it (e.g. the `UserEvent` that echoes a UserEvent action's ActionID).
    pub(super) fn claim_event(&mut self, now: Instant, seq: u64, msg: &Message) -> bool {
        let max_items = self.config.max_list_items;
        let max_bytes = self.config.max_list_bytes;
        let held = self.pending.list_bytes();
        let Some(p) = self.pending.get_mut(seq) else {
            return false;
        };
        let is_complete = msg.get("EventList").is_some_and(|v| v.is_word("Complete"));
        let is_follow_up = |f: &FollowUp| f.is_event(msg);
        match (p.kind, p.stage) {
            (Kind::User { .. }, Stage::List) => {
                let Some(response) = p.response.as_mut() else {
                    return false;
                };
                if is_complete {
                    response.complete = Some(Box::new(msg.clone()));
                    if let Some(response) = p.response.take().map(|r| *r) {
                        if let Some(at) = p.written_at {
                            self.stats.latency.record(now.saturating_duration_since(at));
                        }
                        if let Some(declared) = miscounted(&response) {
                            self.stats.list_count_mismatches += 1;
                            log::warn!(
                                "{}: list for {} completed with {} item(s) where the server \
                                 counted {declared} (ListItems): items may have been lost \
                                 unseen",
                                self.config.who(),
                                p.id,
                                response.items.len() as u64 + response.items_dropped
                            );
                        }
                        self.finish(now, seq, list_outcome(response));
                    }
                    return true;
                }
                let size = msg.retained_bytes();
                // The lists in progress share the byte budget (`held`): every list's items
                // count.
                if response.items.len() >= max_items || held + size > max_bytes {
                    let (items, bytes) = (response.items.len(), p.list_bytes);
                    log::warn!(
                        "{}: list for {} overflowed ({items} items, {bytes} bytes; {held} \
                         bytes held by all lists in progress); dropping the rest",
                        self.config.who(),
                        p.id
                    );
                    self.stats.list_items_dropped += 1;
                    p.swallowed = 1;
                    p.last_swallowed = Some(now);
                    // The server is still sending the list: it keeps its pipeline slot.
                    self.report(
                        now,
                        seq,
                        Err(ActionError::ListOverflow { items, bytes }),
                        true,
                    );
                    return true;
                }
                response.items.push(msg.clone());
                self.pending.add_list_bytes(seq, size);
                true
            }
            (Kind::User { .. }, Stage::Abandoned { list: true, .. }) => {
                if is_complete {
                    self.stats.late_answers_dropped += 1;
                    if let Some(p) = self.pending.remove(seq) {
                        self.log_swallowed(&p, "its Complete came");
                    }
                } else {
                    self.stats.list_items_dropped += 1;
                    let first = p.swallowed == 0;
                    p.swallowed += 1;
                    let who = self.config.who();
                    // The first item of every list is said; the rest, rate-limited, with the
                    // count so far: a list that never ends is never said "when it ends".
                    match self.items_swallowed.occur(now) {
                        Say::Full { left } => {
                            if let Some((n, _)) = left {
                                log::warn!(
                                    "{who}: {n} more item(s) of ended lists dropped after their \
                                     action ended"
                                );
                            }
                            log::warn!(
                                "{who}: items of the list for {} still come after the action \
                                 ended ({} item(s) so far); dropped and counted \
                                 (Stats::list_items_dropped)",
                                p.id,
                                p.swallowed
                            );
                        }
                        Say::Summary { unsaid, over, .. } => log::warn!(
                            "{who}: {} more item(s) of ended lists dropped in the last {} s \
                             (latest: the list for {}, {} item(s) so far); the server keeps \
                             sending them (Stats::list_items_dropped)",
                            unsaid + 1,
                            over.as_secs(),
                            p.id,
                            p.swallowed
                        ),
                        Say::Counted if first => log::warn!(
                            "{who}: items of the list for {} still come after the action ended; \
                             dropped and counted (Stats::list_items_dropped)",
                            p.id
                        ),
                        Say::Counted => {
                            self.items_swallowed.unsaid(1, 0);
                        }
                    }
                    // An endless list keeps its entry (and its swallowing) alive for as long
                    // as its items keep coming: `expire` moves the deadline past the last
                    // one. One store per item, no deadline entry pushed per item.
                    p.last_swallowed = Some(now);
                }
                true
            }
            (
                Kind::User {
                    follow_up: Some(f), ..
                },
                Stage::FollowUp,
            ) if is_follow_up(&f) => {
                if let Some(mut response) = p.response.take().map(|r| *r) {
                    response.follow_up = Some(Box::new(msg.clone()));
                    let outcome = follow_up_outcome(f, response);
                    self.finish(now, seq, outcome);
                }
                true
            }
            (
                Kind::User {
                    follow_up: Some(f), ..
                },
                Stage::Written,
            ) if is_follow_up(&f) => {
                p.early_follow_up = Some(Box::new(msg.clone()));
                true
            }
            // A cancelled or timed-out action's data event (FAXStats...): part of its answer,
            // which nobody waits for; no event for the stream.
            (
                Kind::User {
                    follow_up: Some(f), ..
                },
                Stage::Abandoned { list: false, .. },
            ) if !f.is_originate() && is_follow_up(&f) => {
                self.stats.late_answers_dropped += 1;
                log::debug!(
                    "{}: late {} for {} dropped: the action had ended",
                    self.config.who(),
                    msg.first_value()
                        .map_or_else(String::new, |e| e.to_str_lossy().into_owned()),
                    p.id
                );
                self.pending.remove(seq);
                true
            }
            // Cancelled or timed out: nobody waits for it any more, but it says how a call
            // that may be ringing ended. It goes to the stream, as it goes to every other
            // session that reads call events; the entry stays to swallow a late Response.
            _ => false,
        }
    }

    /// Says how many items of an ended action's list were dropped after it ended, once the
    /// entry that swallowed them goes (`why`).
    fn log_swallowed(&self, p: &Pending, why: &str) {
        if p.swallowed > 0 {
            log::warn!(
                "{}: {} item(s) of the list for {} dropped after the action ended ({why})",
                self.config.who(),
                p.swallowed,
                p.id
            );
        }
    }

    /// Reports an outcome and forgets the action.
    pub(super) fn finish(&mut self, now: Instant, seq: u64, outcome: Outcome) {
        if let Some(p) = self.pending.remove(seq) {
            if matches!(p.kind, Kind::User { .. }) && !matches!(p.stage, Stage::Abandoned { .. }) {
                self.emit_completed(p.id, outcome);
            }
        }
        self.pump(now);
    }

    /// Reports an outcome but keeps the entry (abandoned) to swallow late answers until its
    /// deadline. `on_wire`: the server is still answering, so the pipeline slot stays taken.
    pub(super) fn report(&mut self, now: Instant, seq: u64, outcome: Outcome, on_wire: bool) {
        self.report_until(now, seq, outcome, on_wire, None);
    }

    /// [`report`](Self::report); with `blocking`, the entry of a sync Originate cancelled
    /// while written keeps blocking the heartbeat until that deadline (its own), then gets
    /// its grace period (see [`Stage::Abandoned`]).
    pub(super) fn report_until(
        &mut self,
        now: Instant,
        seq: u64,
        outcome: Outcome,
        on_wire: bool,
        blocking: Option<Instant>,
    ) {
        let grace = self.config.action_timeout;
        let Some(p) = self.pending.get_mut(seq) else {
            return;
        };
        if matches!(p.stage, Stage::Abandoned { .. }) {
            return;
        }
        let id = p.id.clone();
        let list = p.stage == Stage::List;
        // Written, no response read: the server may still answer, and its answer says what it
        // did. A response thrown away (`ResponseDiscarded`) was that answer already.
        p.answer_due = p.stage == Stage::Written
            && !matches!(outcome, Err(ActionError::ResponseDiscarded { .. }));
        if p.answer_due && !(self.marks.is_empty() && self.answer_marks.is_empty()) {
            p.mark = self
                .marks
                .get(&id)
                .or_else(|| self.answer_marks.get(&id))
                .copied();
        }
        if p.stage == Stage::FollowUp {
            // Its first answer came: a second response that comes late is its last.
            p.answered_first();
        }
        p.response = None;
        p.action = None;
        // An OriginateResponse that came before the action's own response: nobody waits for
        // it now, and it says how a call that may be ringing ended; it goes to the stream,
        // as it would have had it come after.
        let early = p.early_follow_up.take();
        let stage = Stage::Abandoned {
            list,
            blocking: blocking.is_some(),
        };
        self.pending.set_stage(seq, stage, on_wire);
        self.pending
            .set_deadline(seq, blocking.unwrap_or(now + grace));
        self.evict_abandoned(now);
        self.emit_completed(id, outcome);
        if let Some(event) = early {
            self.early_follow_up_released(now, *event);
        }
        self.pump(now);
    }

    /// Keeps the abandoned entries within `max_abandoned_actions`, forgetting the oldest
    /// (lowest sequence number: the server answers in order, so its answer is the likeliest
    /// to have come already), one that blocks the heartbeat last. They count against no
    /// caller cap, and each written action that is cancelled frees its pipeline slot at
    /// once: without this, a caller that cancels every action against a slow server would
    /// leave one per action for the grace period. Removing the entry keeps the table's counters right and ends a
    /// cancelled sync Originate's hold on the heartbeat (`sync_originate_deadline` counts
    /// only entries in the table); lent bytes of it given back later are withdrawn
    /// (`unlend_transmit`), and its answers are still dropped and counted
    /// ([`is_evicted`](Self::is_evicted)). [`report_until`](Self::report_until) is the only
    /// way into `Stage::Abandoned`, and calls this.
    pub(super) fn evict_abandoned(&mut self, now: Instant) {
        let cap = self.config.max_abandoned_actions();
        while self.pending.abandoned() > cap {
            let Some(seq) = self.pending.oldest_abandoned() else {
                break;
            };
            let Some(p) = self.pending.remove(seq) else {
                break;
            };
            self.stats.abandoned_evicted += 1;
            self.conn.evicted_through = self.conn.evicted_through.max(seq);
            let who = self.config.who();
            match self.evictions.occur(now) {
                Say::Counted => {
                    self.evictions.unsaid(1, 0);
                }
                Say::Summary { unsaid, over, .. } => log::warn!(
                    "{who}: {} more ended action(s) forgotten before their grace period ended \
                     in the last {} s (latest: {}): {cap} are tracked for their late answers \
                     (max_abandoned_actions; Stats::abandoned_evicted)",
                    unsaid + 1,
                    over.as_secs(),
                    p.id
                ),
                Say::Full { left } => {
                    if let Some((n, _)) = left {
                        log::warn!(
                            "{who}: {n} more ended action(s) forgotten before their grace \
                             period ended (max_abandoned_actions)"
                        );
                    }
                    log::warn!(
                        "{who}: ended action {} forgotten before its grace period ended: {cap} \
                         ended actions are tracked for their late answers \
                         (max_abandoned_actions); its answers will be dropped and counted \
                         (Stats::abandoned_evicted, Stats::evicted_answers_dropped; further \
                         evictions are summarised)",
                        p.id
                    );
                }
            }
            self.log_swallowed(&p, "its entry was evicted");
        }
    }

    /// Whether `action_id`, which matches nothing pending, is that of an action of this
    /// connection at or below the newest evicted entry (see `Connection::evicted_through`):
    /// an answer to an action that ended. Actions queued across a reconnect keep an older
    /// prefix and are not recognised (their answers are unmatched, their items events).
    pub(super) fn is_evicted(&self, action_id: &[u8]) -> bool {
        self.conn.evicted_through > 0
            && <PendingTable>::parse_id(action_id).is_some_and(|(prefix, seq)| {
                seq <= self.conn.evicted_through && prefix == self.conn.prefix.as_bytes()
            })
    }

    /// An answer (`msg`) for an action whose abandoned entry was evicted: dropped, counted
    /// and logged (rate-limited), never streamed nor counted as a stray.
    fn evicted_answer(&mut self, now: Instant, msg: &Message) {
        self.stats.evicted_answers_dropped += 1;
        let who = self.config.who();
        let id = msg.action_id().unwrap_or("?");
        match self.evicted_answers.occur(now) {
            Say::Counted => {
                self.evicted_answers.unsaid(1, 0);
            }
            Say::Summary { unsaid, over, .. } => log::warn!(
                "{who}: {} more answer(s) for ended actions forgotten at max_abandoned_actions \
                 dropped in the last {} s (latest: for {}; Stats::evicted_answers_dropped)",
                unsaid + 1,
                over.as_secs(),
                crate::Shown(id)
            ),
            Say::Full { left } => {
                if let Some((n, _)) = left {
                    log::warn!("{who}: {n} more answer(s) for forgotten ended actions dropped");
                }
                log::warn!(
                    "{who}: an answer for {}, an ended action forgotten at \
                     max_abandoned_actions, dropped (Stats::evicted_answers_dropped; further \
                     ones are summarised)",
                    crate::Shown(id)
                );
            }
        }
    }

    /// The early follow-up of an action that ended before its response: an
    /// `OriginateResponse` goes to the stream ([`release_follow_up`](Self::release_follow_up));
    /// another follow-up's data (FAXStats...) was its caller's alone and is dropped, counted.
    pub(super) fn early_follow_up_released(&mut self, now: Instant, event: Message) {
        // It came on this connection: the entries of an older one ended with it.
        if !self.release_follow_up(now, event, self.conn.received_on()) {
            self.stats.late_answers_dropped += 1;
        }
    }

    /// A follow-up event nobody will take: an `OriginateResponse` goes to the event stream,
    /// as a late one does (the call was placed; it says how it ended), while the session
    /// that received it is the current one and Ready (after a reconnect it would follow the
    /// new session's `Ready`, as if this session had sent it). `received_on`: the connection
    /// that received it (not told by its ActionID's prefix: an action queued when its
    /// session was lost keeps its ID on the next connection). True if it went there.
    pub(super) fn release_follow_up(
        &mut self,
        now: Instant,
        event: Message,
        received_on: ReceivedOn,
    ) -> bool {
        let originate = event
            .first_value()
            .is_some_and(|name| name.is_word(FollowUp::ORIGINATE));
        let current = received_on == self.conn.received_on();
        if !(originate && current && self.conn.ready_since.is_some()) {
            return false;
        }
        log::debug!(
            "{}: the OriginateResponse of {} goes to the event stream: nobody waits for it",
            self.config.who(),
            event.action_id().unwrap_or("?")
        );
        self.queue_event(now, event);
        true
    }

    pub(super) fn emit_completed(&mut self, id: ActionId, mut outcome: Outcome) {
        // An answer is completed on the connection that delivered it (a session lost
        // fails every action it holds, so one that timed out after its answer came, or a
        // list found incomplete, had it on this connection too).
        match &mut outcome {
            Ok(r) => r.received_on = self.conn.received_on(),
            Err(ActionError::Server(r))
            | Err(ActionError::TimedOut {
                partial: Some(r), ..
            })
            | Err(ActionError::ListIncomplete { partial: r, .. }) => {
                r.received_on = self.conn.received_on();
            }
            Err(_) => {}
        }
        let kind = OutcomeKind::of(&outcome);
        self.stats.actions_by_outcome.add(kind);
        log::debug!(
            "{who}: action {id} finished: {kind}",
            who = self.config.who()
        );
        // Most sessions never mark an action: no hashing of every ID for an empty map.
        if !self.marks.is_empty() {
            if let Some(mark) = self.marks.remove(&id) {
                self.events.mark(mark);
            }
        }
        if !self.answer_marks.is_empty() {
            self.answer_marks.remove(&id);
        }
        self.notify(Notice::Completed { id, outcome });
    }

    pub(super) fn expire(&mut self, now: Instant, seq: u64) {
        let Some(p) = self.pending.get_mut(seq) else {
            return;
        };
        // Encoded, but not a byte of it was lent or written: it never will be. The bytes go
        // when `handle_timeout` flushes, so an action past its deadline is not sent later,
        // when a server that stopped reading resumes (a timed-out Originate that still
        // rang would be a duplicate call once the caller tried again).
        let unsent = p.stage != Stage::Queued && !p.lent;
        if unsent {
            log::debug!(
                "{}: action {} withdrawn: its deadline passed before any of it was handed out",
                self.config.who(),
                p.id
            );
            self.conn.transmit.withdraw(seq);
            self.stats.actions_withdrawn += 1;
        }
        match (p.kind, p.stage) {
            (Kind::Internal(which), _) => {
                self.pending.remove(seq);
                match which {
                    // Unanswered, but other messages kept coming (they cancel the pong
                    // deadline): allow the next Ping.
                    Internal::Heartbeat => self.conn.heartbeat_outstanding = false,
                    // No Goodbye and no EOF in time: close anyway.
                    Internal::Logoff => self.disconnect(now, DisconnectReason::Logoff),
                    // Its count of filters still to apply must move, or Ready never comes.
                    Internal::Reapply => self.filter_timed_out(now),
                    Internal::Prefilter => {
                        self.stats.filters_failed += 1;
                        log::warn!(
                            "{}: the server did not answer a traffic filter in time; the \
                             session goes on, maybe unfiltered",
                            self.config.who()
                        );
                    }
                    _ => {}
                }
            }
            (_, Stage::Abandoned { blocking: true, .. }) => {
                // Its call should have ended by now (its deadline allows for the longest
                // ring): the server's session is not waited for any more, and a late answer
                // is swallowed for a grace period, as a timed-out Originate's is.
                let grace = self.config.action_timeout;
                log::debug!(
                    "{}: cancelled sync Originate {} not answered by its deadline",
                    self.config.who(),
                    p.id
                );
                let stage = Stage::Abandoned {
                    list: false,
                    blocking: false,
                };
                let on_wire = p.on_wire;
                self.pending.set_stage(seq, stage, on_wire);
                self.pending.set_deadline(seq, now + grace);
            }
            (_, Stage::Abandoned { list, .. }) => {
                // A list that is still streaming items (an endless one that overflowed) is
                // still the server's answer: its items stay swallowed, and counted, until a
                // whole grace period passes without one.
                let grace = self.config.action_timeout;
                match p.last_swallowed.map(|at| at + grace) {
                    Some(until) if list && until > now => self.pending.set_deadline(seq, until),
                    _ => {
                        if let Some(p) = self.pending.remove(seq) {
                            self.log_swallowed(&p, "no more came for a grace period");
                        }
                    }
                }
            }
            (Kind::User { .. }, Stage::Queued) => {
                self.expire_unwritten(seq);
                self.pump(now);
            }
            (Kind::User { .. }, Stage::Written) if unsent => {
                // Never sent, so the caller may safely send it again.
                self.expire_unwritten(seq);
                self.pump(now);
            }
            (Kind::User { .. }, stage) => {
                let phase = match stage {
                    Stage::List => Phase::List,
                    Stage::FollowUp => Phase::FollowUp,
                    _ => Phase::Response,
                };
                let partial = p.response.take();
                log::debug!("{}: action {} timed out ({phase})", self.config.who(), p.id);
                self.report(
                    now,
                    seq,
                    Err(ActionError::TimedOut { phase, partial }),
                    false,
                );
            }
        }
    }

    /// Completes a never written action (queued, or withdrawn unsent from the transmit
    /// buffer) as timed out in [`Phase::Queued`], without pumping: [`pump`](Client::pump)
    /// calls this for actions whose deadline passed.
    pub(super) fn expire_unwritten(&mut self, seq: u64) {
        self.undo_session_change(seq, changes::Undo::NeverSent);
        if let Some(p) = self.pending.remove(seq) {
            log::debug!(
                "{}: action {} timed out before it was written",
                self.config.who(),
                p.id
            );
            if matches!(p.kind, Kind::User { .. }) {
                let outcome = Err(ActionError::TimedOut {
                    phase: Phase::Queued,
                    partial: None,
                });
                self.emit_completed(p.id, outcome);
            }
        }
    }

    pub(super) fn fail_queued(&mut self, now: Instant, reason: DisconnectReason) {
        while let Some(seq) = self.pending.pop_queued() {
            self.undo_session_change(seq, changes::Undo::NeverSent);
            self.pending.set_stage(seq, Stage::Written, false);
            self.finish(now, seq, Err(ActionError::NotSent(reason.clone())));
        }
    }
}

/// Whether a response says the server is shutting down (it refuses everything then).
fn response_text_is_shutdown(msg: &Message) -> bool {
    msg.get_str("Message")
        .is_some_and(super::login::is_shutting_down)
}

/// A list that ended: whole, or [`ActionError::ListIncomplete`] if items of it were dropped.
fn list_outcome(response: Response) -> Outcome {
    if response.items_dropped == 0 {
        return Ok(response);
    }
    Err(ActionError::ListIncomplete {
        items: response.items.len(),
        dropped: response.items_dropped,
        partial: Box::new(response),
    })
}

/// The item count the server declared in a list's Complete (`ListItems`; `Items` on older
/// StatusComplete), when it differs from the items that arrived (kept or dropped by the
/// decoder): a sign of items lost where the client could not see it. `None` when they
/// agree or the server declared none.
fn miscounted(response: &Response) -> Option<u64> {
    let complete = response.complete.as_deref()?;
    let declared = complete
        .get("ListItems")
        .or_else(|| complete.get("Items"))?
        .trim()
        .as_str()?
        .parse::<u64>()
        .ok()?;
    let arrived = response.items.len() as u64 + response.items_dropped;
    (declared != arrived).then_some(declared)
}

/// An action completed by its follow-up: an OriginateResponse says whether the call was
/// answered (`Response: Success`), a second response whether the action did what it was
/// taken for; the other follow-ups carry data, the action having succeeded with its
/// response.
fn follow_up_outcome(f: FollowUp, response: Response) -> Outcome {
    if !f.decides() {
        return Ok(response);
    }
    let ok = response
        .follow_up
        .as_ref()
        .and_then(|m| m.get("Response"))
        .is_some_and(|r| r.is_word("Success"));
    if ok {
        Ok(response)
    } else {
        Err(ActionError::Server(Box::new(response)))
    }
}

/// Which of the events Asterisk writes right after a login's Success `msg` is (no
/// ActionID): `FullyBooted`, or the `SuccessfulAuth` of `username`'s login (another
/// session's, logging in at the same moment, is an ordinary event).
fn login_event(msg: &Message, username: &str) -> Option<LoginEvent> {
    if msg.action_id_value().is_some() {
        return None;
    }
    let name = msg.first_value()?;
    if name.is_word("FullyBooted") {
        Some(LoginEvent::FullyBooted)
    } else if name.is_word("SuccessfulAuth") && msg.get_str("AccountID") == Some(username) {
        Some(LoginEvent::SuccessfulAuth)
    } else {
        None
    }
}
