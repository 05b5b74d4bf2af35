//! Reconnect backoff with full jitter and a circuit breaker, as a pure value: no clock, no
//! random source of its own (the caller passes the jitter draw), so every delay is testable.

use super::config::ClientConfig;
use std::time::Duration;

/// Consecutive failed sessions and the policy that turns them into a delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    failures: u32,
}

/// The wait before the next connect, from [`Backoff::session_lost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retry {
    /// How long to wait.
    pub(crate) delay: Duration,
    /// True on the failure that opened the circuit breaker (once per opening).
    pub(crate) breaker_opened: bool,
}

impl Backoff {
    /// The policy of a client's config, with no failures yet.
    pub(crate) fn new(config: &ClientConfig) -> Backoff {
        Backoff {
            base: config.backoff_base,
            max: config.backoff_max,
            breaker_threshold: config.breaker_threshold,
            breaker_cooldown: config.breaker_cooldown,
            failures: 0,
        }
    }

    /// Failed sessions in a row (a session that stayed up long enough resets the run).
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// The breaker cooldown, for log lines.
    pub(crate) fn breaker_cooldown(&self) -> Duration {
        self.breaker_cooldown
    }

    /// True once the failures in a row reach the breaker threshold.
    pub(crate) fn is_breaker_open(&self) -> bool {
        self.failures >= self.breaker_threshold
    }

    /// A session ended (or a connect failed). `stable`: it had been ready for at least the
    /// config's `stable_after`, which forgets the earlier failures. `jitter(max)` must return
    /// a value uniform in `0..=max` (microseconds).
    ///
    /// Full jitter: uniform in `0..=min(max, base * 2^(failures-1))`; once the failures reach
    /// the breaker threshold, the cooldown plus up to one base of jitter.
    pub(crate) fn session_lost(&mut self, stable: bool, jitter: impl FnOnce(u64) -> u64) -> Retry {
        if stable {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        let base = self.base.as_micros() as u64;
        if self.is_breaker_open() {
            return Retry {
                delay: self.breaker_cooldown + Duration::from_micros(jitter(base)),
                breaker_opened: self.failures == self.breaker_threshold,
            };
        }
        let max = self.max.as_micros() as u64;
        let shift = (self.failures - 1).min(40);
        let ceiling = base.saturating_mul(1u64 << shift).min(max);
        Retry {
            delay: Duration::from_micros(jitter(ceiling)),
            breaker_opened: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            breaker_threshold: 6,
            breaker_cooldown: Duration::from_secs(60),
            failures: 0,
        }
    }

    /// The highest delay the jitter allows (the draw returns its bound).
    fn ceilings(b: &mut Backoff, n: usize) -> Vec<Duration> {
        (0..n)
            .map(|_| b.session_lost(false, |max| max).delay)
            .collect()
    }

    #[test]
    fn the_ceiling_doubles_from_base_up_to_max() {
        let mut b = policy();
        let ms = Duration::from_millis;
        assert_eq!(
            ceilings(&mut b, 5),
            [ms(100), ms(200), ms(400), ms(800), ms(1000)]
        );
    }

    #[test]
    fn the_delay_is_the_jitter_draw_below_the_ceiling() {
        let mut b = policy();
        let mut asked = 0;
        let retry = b.session_lost(false, |max| {
            asked = max;
            max / 4
        });
        assert_eq!(asked, 100_000);
        assert_eq!(retry.delay, Duration::from_micros(25_000));
        assert_eq!(b.session_lost(false, |_| 0).delay, Duration::ZERO);
    }

    #[test]
    fn the_breaker_opens_once_at_the_threshold_then_waits_the_cooldown() {
        let mut b = policy();
        let opened: Vec<bool> = (0..8)
            .map(|_| b.session_lost(false, |max| max).breaker_opened)
            .collect();
        assert_eq!(
            opened,
            [false, false, false, false, false, true, false, false]
        );
        assert!(b.is_breaker_open());
        // What the breaker's log line says: the failures in a row, the cooldown.
        assert_eq!(b.failures(), 8);
        assert_eq!(b.breaker_cooldown(), Duration::from_secs(60));
        let retry = b.session_lost(false, |max| max);
        assert_eq!(
            retry.delay,
            Duration::from_secs(60) + Duration::from_millis(100)
        );
    }

    #[test]
    fn a_stable_session_forgets_earlier_failures() {
        let mut b = policy();
        ceilings(&mut b, 7);
        assert!(b.is_breaker_open());
        let retry = b.session_lost(true, |max| max);
        assert_eq!(b.failures(), 1);
        assert!(!b.is_breaker_open());
        assert_eq!(retry.delay, Duration::from_millis(100));
    }

    #[test]
    fn a_huge_failure_count_neither_overflows_nor_exceeds_max() {
        let mut b = Backoff {
            breaker_threshold: u32::MAX,
            ..policy()
        };
        b.failures = u32::MAX - 3;
        for _ in 0..2 {
            assert_eq!(
                b.session_lost(false, |max| max).delay,
                Duration::from_secs(1)
            );
        }
    }
}
