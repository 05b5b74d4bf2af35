//! Log lines of a repeating failure, at most one per interval per kind.
//!
//! Some failures come once per item or request: a stream that refuses every publish, items
//! or replies over NATS's max payload, subjects NATS will not take. A hostile or buggy peer
//! can make them come by the thousand a second, and a line each would flood the log. Every
//! one is still counted in the metrics; the log gets the first of a kind at once, then at
//! most one line per [`LOG_INTERVAL`] for that kind, with how many were not logged since
//! its last line.

use std::time::Duration;
use tokio::time::Instant;

/// Most one line per kind in this long.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What a line logged after `quiet` unlogged ones of its kind ends with: nothing, or how
/// many were not logged since the last such line.
pub(crate) fn more_since(quiet: u64) -> String {
    if quiet == 0 {
        String::new()
    } else {
        format!("; {quiet} more since the last such line")
    }
}

/// Per kind (`0..N`): when its last line was logged, and how many of it were not logged
/// since. The clock is the caller's (`now`), so the tests need no sleeps.
#[derive(Debug)]
pub(crate) struct LogThrottle<const N: usize> {
    interval: Duration,
    last: [Option<Instant>; N],
    quiet: [u64; N],
}

impl<const N: usize> Default for LogThrottle<N> {
    fn default() -> Self {
        LogThrottle::new(LOG_INTERVAL)
    }
}

impl<const N: usize> LogThrottle<N> {
    /// At most one line per kind per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            last: [None; N],
            quiet: [0; N],
        }
    }

    /// One occurrence of `kind` at `now`: `Some(n)` if it is to be logged now (`n` of the
    /// kind were not logged since its last line), `None` if it is only counted. A kind out
    /// of range is always logged (never silenced by a mistake here).
    pub(crate) fn note(&mut self, kind: usize, now: Instant) -> Option<u64> {
        let (Some(last), Some(quiet)) = (self.last.get_mut(kind), self.quiet.get_mut(kind)) else {
            return Some(0);
        };
        if last.is_some_and(|at| now.saturating_duration_since(at) < self.interval) {
            *quiet += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(quiet))
    }

    /// The kinds whose occurrences since their last line are due a summary line at `now`
    /// (their interval has passed), each with that count; they count as logged now. So a
    /// flood that stops is summed up after one interval, not only when it starts again.
    pub(crate) fn overdue(&mut self, now: Instant) -> Vec<(usize, u64)> {
        let mut due = Vec::new();
        for (kind, (last, quiet)) in self.last.iter_mut().zip(self.quiet.iter_mut()).enumerate() {
            if *quiet > 0
                && last.is_none_or(|at| now.saturating_duration_since(at) >= self.interval)
            {
                *last = Some(now);
                due.push((kind, std::mem::take(quiet)));
            }
        }
        due
    }

    /// Every kind with occurrences not logged since its last line, each with that count,
    /// whether its interval has passed or not: for the end, when no later line could carry
    /// them. They count as logged.
    pub(crate) fn take_all(&mut self) -> Vec<(usize, u64)> {
        self.quiet
            .iter_mut()
            .enumerate()
            .filter(|(_, quiet)| **quiet > 0)
            .map(|(kind, quiet)| (kind, std::mem::take(quiet)))
            .collect()
    }

    /// When the next summary line is due (`None`: nothing waits for one).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.last
            .iter()
            .zip(self.quiet.iter())
            .filter(|(_, quiet)| **quiet > 0)
            .filter_map(|(last, _)| last.and_then(|at| at.checked_add(self.interval)))
            .min()
    }
}

/// The end of a logged line that follows occurrences only counted: how many, and the
/// counter that has them all (empty when none were left unlogged).
pub(crate) fn unlogged(quiet: u64, counter: &str) -> String {
    if quiet == 0 {
        return String::new();
    }
    format!("; {quiet} more so since the last such line (counted in {counter}, not logged)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a throttle was told, as the log saw it: lines and the counts they carry.
    #[derive(Default)]
    struct Seen {
        lines: u64,
        /// Occurrences the lines stand for: each logged one plus the counts in the lines.
        accounted: u64,
    }

    #[test]
    fn a_kind_is_logged_at_once_then_at_most_once_an_interval_with_the_count_not_logged() {
        let mut log = LogThrottle::<2>::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.note(0, t0), Some(0), "the first is logged at once");
        for k in 1..=500u64 {
            assert_eq!(log.note(0, t0 + Duration::from_millis(k)), None);
        }
        // Another kind has its own line.
        assert_eq!(log.note(1, t0 + Duration::from_millis(1)), Some(0));
        assert_eq!(log.next_due(), Some(t0 + Duration::from_secs(10)));
        assert!(log.overdue(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(log.note(0, t0 + Duration::from_secs(10)), Some(500));
        assert_eq!(log.note(0, t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn a_flood_that_stops_is_summed_up_once_its_interval_has_passed() {
        let mut log = LogThrottle::<1>::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.note(0, t0), Some(0));
        assert_eq!(log.note(0, t0 + Duration::from_secs(1)), None);
        assert_eq!(log.note(0, t0 + Duration::from_secs(2)), None);
        assert_eq!(log.overdue(t0 + Duration::from_secs(10)), vec![(0, 2)]);
        // Summed up: nothing more is due, and the next one waits for the next interval.
        assert_eq!(log.next_due(), None);
        assert!(log.overdue(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(log.note(0, t0 + Duration::from_secs(11)), None);
        assert_eq!(log.note(0, t0 + Duration::from_secs(20)), Some(1));
    }

    #[test]
    fn every_occurrence_is_in_exactly_one_line_or_still_waiting_for_one() {
        let mut log = LogThrottle::<3>::new(Duration::from_millis(700));
        let t0 = Instant::now();
        let mut seen: [Seen; 3] = Default::default();
        let mut told = [0u64; 3];
        // A flood with gaps, over many intervals, on three kinds at different rates; the
        // summaries are taken now and then, as a caller's wake-ups would.
        for ms in 0..20_000u64 {
            let now = t0 + Duration::from_millis(ms);
            for kind in 0..3 {
                let every = [1, 7, 333][kind];
                let pause = ms % 5_000 > 3_000;
                if ms % every == 0 && !(pause && kind == 0) {
                    told[kind] += 1;
                    if let Some(quiet) = log.note(kind, now) {
                        seen[kind].lines += 1;
                        seen[kind].accounted += 1 + quiet;
                    }
                }
            }
            if ms % 97 == 0 {
                for (kind, quiet) in log.overdue(now) {
                    seen[kind].lines += 1;
                    seen[kind].accounted += quiet;
                }
            }
        }
        let end = t0 + Duration::from_secs(60);
        for (kind, quiet) in log.overdue(end) {
            seen[kind].lines += 1;
            seen[kind].accounted += quiet;
        }
        for kind in 0..3 {
            assert_eq!(seen[kind].accounted, told[kind], "kind {kind}");
            // At most one line an interval (plus the first and the last).
            assert!(
                seen[kind].lines <= 20_000 / 700 + 2,
                "kind {kind}: {} lines",
                seen[kind].lines
            );
        }
        assert_eq!(log.next_due(), None);
    }

    #[test]
    fn a_kind_out_of_range_is_logged_not_silenced() {
        let mut log = LogThrottle::<1>::default();
        let t0 = Instant::now();
        assert_eq!(log.note(5, t0), Some(0));
        assert_eq!(log.note(5, t0), Some(0));
    }
}
