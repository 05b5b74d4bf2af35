//! Ending a session: failing what was written, a fresh connection, then backoff (see
//! [`Backoff`](crate::client::backoff::Backoff)) or closing for good.

use super::*;
use crate::repeats::Say;
use crate::wire::shown::Shown;

/// A streak of failed tries or refused logins is summarised at most this often.
pub(super) const STREAK_SUMMARY_EVERY: Duration = Duration::from_secs(15 * 60);

impl Client {
    /// Ends the current session: fails what was written, schedules a reconnect or closes.
    pub(super) fn disconnect(&mut self, now: Instant, reason: DisconnectReason) {
        if self.state == State::Closed {
            return;
        }
        // The caller asked to log off: whatever ends the session now (the pong or login
        // deadline, an overflow, a broken link) ends the client too. Without this a timer
        // armed before the Logoff would reconnect a client that refuses every action.
        let reason = match reason {
            DisconnectReason::Logoff | DisconnectReason::LocalClose => reason,
            other if self.logoff_requested => {
                log::info!(
                    "{who}: session lost while logging off: {other}",
                    who = self.config.who()
                );
                DisconnectReason::Logoff
            }
            other => other,
        };
        let had_transport = self.state != State::Backoff;
        // An OriginateResponse that came on this session before its action's response: the
        // action now ends unanswered, and the event goes to the stream ahead of the
        // session's end, where it came.
        for seq in self.pending.sorted_seqs() {
            if let Some(event) = self
                .pending
                .get_mut(seq)
                .and_then(|p| p.early_follow_up.take())
            {
                self.early_follow_up_released(now, *event);
            }
        }
        if self.conn.ready_since.is_some() {
            // Only a session that was announced `Ready` in the stream ends in it.
            self.events.session_lost(reason.clone());
        } else {
            // The login's own events waited for a Ready that never came.
            for _ in self.events.take_held() {
                self.discarded(now, Discard::BeforeReady);
            }
        }
        // Said as it was: an operator reading "session lost" for every refused connect of a
        // server that has been down for an hour looks for a session that never was.
        let who = self.config.who();
        match self.state {
            State::Connecting => self.unreachable(now, "could not connect", &reason),
            // Said by the refusal's own streak (`login_rejected`): counted here too, the
            // same refusals would be summed up twice, in two lines that read as two faults.
            _ if matches!(reason, DisconnectReason::LoginRejected { .. }) => {
                log::debug!("{who}: connection ended before the session was ready: {reason}");
            }
            State::AwaitBanner | State::LoggingIn | State::Configuring
                if self.conn.ready_since.is_none() =>
            {
                self.unreachable(
                    now,
                    "connection ended before the session was ready",
                    &reason,
                )
            }
            _ => log::info!("{who}: session lost: {reason}"),
        }
        self.stats.disconnects_by_reason.add(reason.kind());
        if had_transport {
            self.outputs.push_back(Output::Close);
        }
        // Written actions may or may not have run: outcome unknown, reported in send order.
        // But Asterisk runs an action only once it read its last byte (the blank line that
        // ends it), and the transport never had that byte of these: they did not run.
        let mut not_sent: Vec<u64> = self.conn.transmit.never_lent_whole().collect();
        not_sent.sort_unstable();
        for seq in self.pending.sorted_seqs() {
            match self.pending.stage(seq) {
                Some(Stage::Queued) | None => {}
                Some(Stage::Abandoned { .. }) => {
                    if not_sent.binary_search(&seq).is_ok() {
                        // Cancelled or timed out with its last byte never handed out: the
                        // server never ran it, nor what it would have changed.
                        self.undo_session_change(seq, super::changes::Undo::NeverSent);
                    }
                    self.pending.remove(seq);
                }
                Some(stage) => {
                    let Some(mut p) = self.pending.remove(seq) else {
                        continue;
                    };
                    if matches!(p.kind, Kind::User { .. }) {
                        let accepted = (stage == Stage::FollowUp)
                            .then(|| p.response.take())
                            .flatten();
                        let outcome = if not_sent.binary_search(&seq).is_ok() {
                            // "Safe to send again": what it would have changed in the
                            // session (a filter, the mask) did not happen either.
                            self.undo_session_change(seq, super::changes::Undo::NeverSent);
                            ActionError::NotSent(reason.clone())
                        } else if let Some(response) = accepted {
                            // Not unknown: the server said it took it (an async Originate's
                            // call is being placed); only how it ends is lost.
                            ActionError::FollowUpLost {
                                reason: reason.clone(),
                                response,
                            }
                        } else {
                            ActionError::Unknown(reason.clone())
                        };
                        self.emit_completed(p.id, Err(outcome));
                    }
                }
            }
        }
        self.last_loss = Some(reason.clone());
        let next = self.conn.next(self.rng.prefix());
        let ended = std::mem::replace(&mut self.conn, next);
        self.decoder.reset();
        self.timers.stop_all();
        // The connection's faults end with it: what their runs counted is said now.
        self.say_owed();

        let final_reason = match &reason {
            DisconnectReason::Logoff | DisconnectReason::LocalClose => true,
            // "Login Already In Use" is another session's hold on the login, which ends.
            DisconnectReason::LoginRejected { message } => {
                !self.config.reconnect_on_auth_failure && !super::login::is_login_in_use(message)
            }
            _ => false,
        };
        if final_reason {
            self.state = State::Closed;
            self.fail_queued(now, reason.clone());
            // What a streak of failed tries left unsaid is said before the end.
            self.streaks_cleared();
            log::info!("{who}: client closed: {reason}", who = self.config.who());
            self.notify(Notice::Closed { reason });
            return;
        }
        let stable = ended
            .ready_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.config.stable_after);
        let rng = &mut self.rng;
        let retry = self
            .backoff
            .session_lost(stable, |max| rng.below_or_eq(max));
        if retry.breaker_opened {
            self.stats.breaker_opened += 1;
            log::warn!(
                "{}: circuit breaker open after {} consecutive failures; next try in {:?}",
                self.config.who(),
                self.backoff.failures(),
                self.backoff.breaker_cooldown()
            );
        }
        let retry_at = now + retry.delay;
        self.state = State::Backoff;
        self.timers.set(Timer::Reconnect, retry_at);
        self.notify(Notice::Disconnected {
            reason,
            retry_at: Some(retry_at),
            breaker_open: self.backoff.is_breaker_open(),
        });
    }
}

impl Client {
    /// A try that ended before a session was ready (`what`, for `reason`): said when a streak
    /// of them starts or its reason changes, then summarised with the count at most every
    /// [`STREAK_SUMMARY_EVERY`]; each try at debug. A server unreachable for hours costs a
    /// few lines an hour, not one per probe.
    fn unreachable(&mut self, now: Instant, what: &str, reason: &DisconnectReason) {
        let who = self.config.who();
        let said = format!("{what}: {reason}");
        if self.unreachable_with.as_deref() != Some(said.as_str()) {
            if let Some((n, _)) = self.unreachable_runs.reset() {
                if let Some(before) = &self.unreachable_with {
                    log::info!("{who}: {n} more time(s): {before}");
                }
            }
            self.unreachable_with = Some(said.clone());
        }
        match self.unreachable_runs.occur(now) {
            Say::Full { .. } => log::info!("{who}: {said}"),
            Say::Summary { unsaid, over, .. } => log::info!(
                "{who}: still failing: {} more time(s) in the last {} s: {said}",
                unsaid + 1,
                over.as_secs()
            ),
            Say::Counted => {
                self.unreachable_runs.unsaid(1, 0);
                log::debug!("{who}: {said}");
            }
        }
    }

    /// What the runs of repeated faults (discards, overflows, list items lost or dropped
    /// after their action ended) counted and have not said yet, said now: at a disconnect,
    /// at Ready and at the close, so that a fault that stopped after a few repeats is never
    /// left unsaid until the next one comes (which may be never).
    pub(super) fn say_owed(&mut self) {
        let who = self.config.who();
        if let Some((n, _)) = self.burst.take_unsaid() {
            log::warn!("{who}: {n} more server inputs discarded");
        }
        if let Some((times, dropped)) = self.overflow_burst.take_unsaid() {
            log::warn!(
                "{who}: event queue overflowed {times} more times, {dropped} more events dropped"
            );
        }
        if let Some((n, _)) = self.items_lost.take_unsaid() {
            log::warn!("{who}: lists lost {n} more item(s) on the way in");
        }
        if let Some((n, _)) = self.items_swallowed.take_unsaid() {
            log::warn!("{who}: {n} more item(s) of ended lists dropped after their action ended");
        }
        if let Some((n, _)) = self.evictions.take_unsaid() {
            log::warn!(
                "{who}: {n} more ended action(s) forgotten before their grace period ended \
                 (max_abandoned_actions)"
            );
        }
        if let Some((n, _)) = self.evicted_answers.take_unsaid() {
            log::warn!("{who}: {n} more answer(s) for forgotten ended actions dropped");
        }
    }

    /// A session became ready, or the client closed: the streaks of failed tries and
    /// refused logins are over; what they left unsaid is said now.
    pub(super) fn streaks_cleared(&mut self) {
        self.say_owed();
        let who = self.config.who();
        if let (Some((n, _)), Some(said)) =
            (self.unreachable_runs.reset(), self.unreachable_with.take())
        {
            log::info!("{who}: {n} more time(s) before this: {said}");
        }
        if let (Some((n, _)), Some(said)) = (self.refusals.reset(), self.refused_with.take()) {
            log::info!(
                "{who}: login was rejected {n} more time(s) before this: {}",
                Shown(&said)
            );
        }
        self.unreachable_with = None;
        self.refused_with = None;
    }
}
