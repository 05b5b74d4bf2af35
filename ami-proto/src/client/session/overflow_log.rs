//! Logging event-queue overflows, rate-limited: a consumer that stalls for a moment every
//! few thousand events overflows the queue dozens of times a second, and two records per
//! overflow (full, room again) made 65 warnings a second, millions a day, out of one slow
//! consumer. Overflows less than 1 s apart form a burst: its first is logged in full, the
//! rest are summarised at most every 10 s, and what is left of a burst is said when the
//! next one opens. Every drop is still counted ([`Stats`], gap items in the stream).

use super::discards::{BURST_QUIET, BURST_SUMMARY_EVERY};
use super::*;

/// The current run of overflow episodes.
#[derive(Debug, Clone, Copy)]
pub(super) struct OverflowBurst {
    /// When the latest episode started.
    last: Instant,
    logged_at: Instant,
    /// Episodes begun in this burst so far.
    episodes: u64,
    /// Episodes ended since the last log line, and the events they dropped.
    unlogged: u64,
    unlogged_dropped: u64,
}

impl Client {
    /// Logs what the event queue says happened to its overflow episodes since the last
    /// look; called after every offer to the queue, when the client knows the time.
    pub(super) fn log_overflows(&mut self, now: Instant) {
        if !self.events.has_overflow_news() {
            return;
        }
        let news = self.events.take_overflow_news();
        let who = self.config.who();
        if news.ended > 0 {
            match &mut self.overflow_burst {
                Some(b) if b.episodes > 1 => {
                    b.unlogged += news.ended;
                    b.unlogged_dropped += news.ended_dropped;
                }
                _ => log::warn!(
                    "{who}: event queue has room again; {} events were dropped (overflows \
                     within 1 s of one another are summarised)",
                    news.ended_dropped
                ),
            }
        }
        let Some(full) = news.started else {
            return;
        };
        match &mut self.overflow_burst {
            Some(b) if now.saturating_duration_since(b.last) < BURST_QUIET => {
                b.last = now;
                b.episodes += 1;
                if b.unlogged > 0
                    && now.saturating_duration_since(b.logged_at) >= BURST_SUMMARY_EVERY
                {
                    log::warn!(
                        "{who}: event queue overflowed {} more times, {} more events dropped, \
                         in the last {} s: the consumer keeps falling behind",
                        b.unlogged,
                        b.unlogged_dropped,
                        now.saturating_duration_since(b.logged_at).as_secs()
                    );
                    (b.logged_at, b.unlogged, b.unlogged_dropped) = (now, 0, 0);
                }
            }
            previous => {
                if let Some(b) = previous.filter(|b| b.unlogged > 0) {
                    log::warn!(
                        "{who}: event queue overflowed {} more times, {} more events dropped",
                        b.unlogged,
                        b.unlogged_dropped
                    );
                }
                log::warn!(
                    "{who}: event queue full ({} events, {} of {} bytes): consumer is behind, \
                     dropping events ({:?})",
                    full.events,
                    full.bytes,
                    full.byte_cap,
                    full.policy
                );
                *previous = Some(OverflowBurst {
                    last: now,
                    logged_at: now,
                    episodes: 1,
                    unlogged: 0,
                    unlogged_dropped: 0,
                });
            }
        }
    }
}
