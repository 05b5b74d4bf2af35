//! Logging event-queue overflows, rate-limited: a consumer that stalls for a moment every
//! few thousand events overflows the queue dozens of times a second, and two records per
//! overflow (full, room again) made 65 warnings a second, millions a day, out of one slow
//! consumer. Overflows form runs ([`Repeats`](crate::repeats::Repeats)): a run's first is logged in
//! full, the rest are summarised at most every 10 s, and what is left of a run is said when
//! the next one opens. Every drop is still counted ([`Stats`], gap items in the stream).

use super::*;
use crate::repeats::Say;

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
            let summarised = self.overflow_burst.occurrences() > 1
                && self.overflow_burst.unsaid(news.ended, news.ended_dropped);
            if !summarised {
                log::warn!(
                    "{who}: event queue has room again; {} events were dropped (overflows \
                     within 1 s of one another, or recurring within 10 s, are summarised)",
                    news.ended_dropped
                );
            }
        }
        let Some(full) = news.started else {
            return;
        };
        match self.overflow_burst.occur(now) {
            Say::Counted => {}
            Say::Summary {
                unsaid,
                extra,
                over,
            } => {
                if unsaid > 0 {
                    log::warn!(
                        "{who}: event queue overflowed {unsaid} more times, {extra} more events \
                         dropped, in the last {} s: the consumer keeps falling behind",
                        over.as_secs()
                    );
                }
            }
            Say::Full { left } => {
                if let Some((times, dropped)) = left {
                    log::warn!(
                        "{who}: event queue overflowed {times} more times, {dropped} more events \
                         dropped"
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
            }
        }
    }
}
