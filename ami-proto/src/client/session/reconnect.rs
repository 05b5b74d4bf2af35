//! Ending a session: failing what was written, then backoff with jitter, the circuit breaker,
//! or closing for good.

use super::*;

impl Client {
    /// Ends the current session: fails what was written, schedules a reconnect or closes.
    pub(super) fn disconnect(&mut self, now: Instant, reason: DisconnectReason) {
        if self.state == State::Closed {
            return;
        }
        let had_transport = self.state != State::Backoff;
        if self.ready_since.is_some() {
            // Only a session that was announced `Ready` in the stream ends in it.
            self.events.session_lost(reason.clone());
        }
        log::info!("AMI session lost: {reason}");
        self.stats.disconnects_by_reason[reason.index()] += 1;
        if had_transport {
            self.outputs.push_back(Output::Close);
        }
        // Written actions may or may not have run: outcome unknown, reported in send order.
        for seq in self.pending.sorted_seqs() {
            match self.pending.stage(seq) {
                Some(Stage::Queued) | None => {}
                Some(Stage::Abandoned { .. }) => {
                    self.pending.remove(seq);
                }
                Some(_) => {
                    let Some(p) = self.pending.remove(seq) else {
                        continue;
                    };
                    self.sync_originates.remove(&seq);
                    if matches!(p.kind, Kind::User { .. }) {
                        self.emit_completed(p.id, Outcome::Unknown(reason.clone()));
                    }
                }
            }
        }
        self.last_loss = Some(reason.clone());
        self.connection += 1;
        self.prefix = self.rng.prefix();
        self.decoder.reset();
        self.transmit.clear();
        self.transmit_pos = 0;
        self.timers = [None; 6];
        self.heartbeat_outstanding = false;
        self.server_shutdown = false;
        self.reapply_left = 0;

        let final_reason = match &reason {
            DisconnectReason::Logoff | DisconnectReason::LocalClose => true,
            DisconnectReason::LoginRejected { .. } => !self.config.reconnect_on_auth_failure,
            _ => false,
        };
        if final_reason {
            self.state = State::Closed;
            self.fail_queued(now, reason.clone());
            log::info!("AMI client closed: {reason}");
            self.notify(Notice::Closed { reason });
            return;
        }
        if self
            .ready_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.config.stable_after)
        {
            self.failures = 0;
        }
        self.ready_since = None;
        self.failures = self.failures.saturating_add(1);
        let delay = self.backoff_delay();
        let retry_at = now + delay;
        self.state = State::Backoff;
        self.arm(Timer::Reconnect, retry_at);
        self.notify(Notice::Disconnected {
            reason,
            retry_at: Some(retry_at),
        });
    }

    /// Full jitter: uniform in `0..=min(max, base * 2^(failures-1))`; once `failures`
    /// reaches the breaker threshold, the cooldown plus up to one base of jitter.
    pub(super) fn backoff_delay(&mut self) -> Duration {
        let base = self.config.backoff_base.as_micros() as u64;
        if self.failures >= self.config.breaker_threshold {
            if self.failures == self.config.breaker_threshold {
                self.stats.breaker_opened += 1;
                log::warn!(
                    "AMI circuit breaker open after {} consecutive failures; next try in {:?}",
                    self.failures,
                    self.config.breaker_cooldown
                );
            }
            return self.config.breaker_cooldown
                + Duration::from_micros(self.rng.below_or_eq(base));
        }
        let max = self.config.backoff_max.as_micros() as u64;
        let shift = (self.failures - 1).min(40);
        let ceiling = base.saturating_mul(1u64 << shift).min(max);
        Duration::from_micros(self.rng.below_or_eq(ceiling))
    }
}
