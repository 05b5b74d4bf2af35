//! Logging a fault that repeats: the one rate limit of the core's log lines.
//!
//! A fault that comes by the thousand a second (a consumer that keeps falling behind, a
//! server sending garbage) and one that comes every few seconds for hours (the same, a
//! little further apart; a login refused at every retry; a server that stays unreachable)
//! must neither write a line each time nor go unsaid. Occurrences form a *run*: the first
//! of a run is said in full, the rest are counted and summarised at most once per
//! [`SUMMARY_EVERY`], and what a run left unsaid is said when the next one opens.
//!
//! A run ends after [`QUIET`] without an occurrence, unless it *recurs*: an occurrence less
//! than [`SUMMARY_EVERY`] after the run's full line joins the run however long the gap,
//! and from then on the run ends only after a whole [`SUMMARY_EVERY`] of quiet. So a burst
//! that stops for a couple of seconds after a summary is said in full again, and a fault
//! that comes every 1.5 s for an hour costs one summary per 10 s, not a line each time.
//!
//! The clock is the caller's (`now`): the core never reads it. Counting is the caller's
//! too: every occurrence is still counted in the stats, whatever the log says of it.

use std::time::{Duration, Instant};

/// A run ends after this long without an occurrence (until it recurs).
pub(crate) const QUIET: Duration = Duration::from_secs(1);
/// While a run lasts, a summary line at most this often.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// What to say of an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Say {
    /// The first of a new run: say it in full. `left` is what the previous run left unsaid
    /// (occurrences and their extra count): say it first, if any.
    Full {
        /// The previous run's unsaid occurrences and extra count.
        left: Option<(u64, u64)>,
    },
    /// A summary is due: `unsaid` occurrences before this one, `extra` their extra count,
    /// over `over` since the run's last line. This one is said by the summary too.
    Summary {
        /// Occurrences not said since the run's last line (not counting this one).
        unsaid: u64,
        /// Their extra count (e.g. events dropped).
        extra: u64,
        /// Since the run's last line.
        over: Duration,
    },
    /// Only counted: add it with [`Repeats::unsaid`] if it is to be summarised.
    Counted,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    /// The latest occurrence.
    last: Instant,
    /// The run's full line.
    opened: Instant,
    /// The run's latest line (full or summary).
    said: Instant,
    /// Recurred after a gap: ends only after `SUMMARY_EVERY` of quiet.
    recurring: bool,
    /// Occurrences in this run.
    occurrences: u64,
    unsaid: u64,
    unsaid_extra: u64,
}

/// The runs of one kind of fault.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Repeats {
    run: Option<Run>,
    quiet: Duration,
    every: Duration,
}

impl Default for Repeats {
    /// Runs that end after [`QUIET`] (unless they recur), a summary per [`SUMMARY_EVERY`].
    fn default() -> Self {
        Repeats {
            run: None,
            quiet: QUIET,
            every: SUMMARY_EVERY,
        }
    }
}

impl Repeats {
    /// A *streak*: a state that persists until the caller ends it ([`reset`](Self::reset):
    /// it changed, or the fault cleared), however far apart its occurrences (a refused login
    /// retried every minute, a server unreachable for hours). Said when it starts, then a
    /// summary at most once per `every`.
    pub(crate) fn streak(every: Duration) -> Self {
        Repeats {
            run: None,
            quiet: Duration::MAX,
            every,
        }
    }

    /// One occurrence at `now`: what to say of it.
    pub(crate) fn occur(&mut self, now: Instant) -> Say {
        if let Some(r) = self.run.as_mut() {
            let gap = now.saturating_duration_since(r.last);
            let quiet = if r.recurring { self.every } else { self.quiet };
            let recurs = now.saturating_duration_since(r.opened) < self.every;
            if gap < quiet || recurs {
                r.recurring |= gap >= self.quiet;
                r.last = now;
                r.occurrences += 1;
                let over = now.saturating_duration_since(r.said);
                if over >= self.every {
                    r.said = now;
                    return Say::Summary {
                        unsaid: std::mem::take(&mut r.unsaid),
                        extra: std::mem::take(&mut r.unsaid_extra),
                        over,
                    };
                }
                return Say::Counted;
            }
        }
        let left = self
            .run
            .filter(|r| r.unsaid > 0 || r.unsaid_extra > 0)
            .map(|r| (r.unsaid, r.unsaid_extra));
        self.run = Some(Run {
            last: now,
            opened: now,
            said: now,
            recurring: false,
            occurrences: 1,
            unsaid: 0,
            unsaid_extra: 0,
        });
        Say::Full { left }
    }

    /// Adds `n` occurrences (and `extra`) the log has not said to the current run's next
    /// summary. Without a run (nothing occurred yet), there is nothing to add them to: the
    /// caller says them itself.
    pub(crate) fn unsaid(&mut self, n: u64, extra: u64) -> bool {
        match self.run.as_mut() {
            Some(r) => {
                r.unsaid += n;
                r.unsaid_extra += extra;
                true
            }
            None => false,
        }
    }

    /// Occurrences in the current run (0 before the first).
    pub(crate) fn occurrences(&self) -> u64 {
        self.run.map_or(0, |r| r.occurrences)
    }

    /// What the current run left unsaid, taken (for a line that ends it: a change of state,
    /// a close). `None` if nothing.
    pub(crate) fn take_unsaid(&mut self) -> Option<(u64, u64)> {
        let r = self.run.as_mut()?;
        if r.unsaid == 0 && r.unsaid_extra == 0 {
            return None;
        }
        Some((
            std::mem::take(&mut r.unsaid),
            std::mem::take(&mut r.unsaid_extra),
        ))
    }

    /// Ends the run (the fault changed or cleared): the next occurrence is said in full.
    /// Returns what the run left unsaid, to be said now.
    pub(crate) fn reset(&mut self) -> Option<(u64, u64)> {
        let left = self.take_unsaid();
        self.run = None;
        left
    }
}
