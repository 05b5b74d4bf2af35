//! Virtual wall-clock: maps the harness's `Instant`s to Unix time and formats dates the way
//! Asterisk prints them. Nothing here reads a real clock.

use std::time::{Duration, Instant};

/// The simulated wall clock: `start_unix` since the epoch at the instant `origin`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    origin: Instant,
    start_unix: Duration,
}

impl WallClock {
    pub(crate) fn new(origin: Instant, start_unix: Duration) -> WallClock {
        WallClock { origin, start_unix }
    }

    /// Time since the epoch at `now` (instants before the origin count as the origin).
    pub(crate) fn unix(&self, now: Instant) -> Duration {
        // Saturating: a `start_unix` near `Duration::MAX` stops the clock rather than panic.
        self.start_unix
            .saturating_add(now.saturating_duration_since(self.origin))
    }

    /// Whole seconds since the epoch at `now`.
    pub(crate) fn secs(&self, now: Instant) -> u64 {
        self.unix(now).as_secs()
    }

    /// `1795423201.874039`: Ping's `Timestamp`.
    pub(crate) fn timestamp(&self, now: Instant) -> String {
        let t = self.unix(now);
        format!("{}.{:06}", t.as_secs(), t.subsec_micros())
    }

    /// `2026-11-23T08:38:28.933+0000`: security events' `EventTV`.
    pub(crate) fn event_tv(&self, now: Instant) -> String {
        let t = self.unix(now);
        let (y, mo, d, h, mi, s) = civil(t.as_secs());
        format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}+0000",
            t.subsec_millis()
        )
    }

    /// `2026-11-23 08:38:30`: Cdr times.
    pub(crate) fn cdr_time(&self, now: Instant) -> String {
        let (y, mo, d, h, mi, s) = civil(self.secs(now));
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
    }

    /// (`2026-11-23`, `08:38:25`): CoreStatus dates.
    pub(crate) fn date_and_time(&self, now: Instant) -> (String, String) {
        let (y, mo, d, h, mi, s) = civil(self.secs(now));
        (
            format!("{y:04}-{mo:02}-{d:02}"),
            format!("{h:02}:{mi:02}:{s:02}"),
        )
    }
}

/// `now + d`, saturating: when `d` is too large for an `Instant` (`Duration::MAX` as
/// "never"), the latest instant the platform can represent past `now`, a deadline that never
/// comes. Every deadline the simulator computes from a caller's duration goes through here,
/// because `Instant + Duration` panics on overflow.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    if let Some(t) = now.checked_add(d) {
        return t;
    }
    // How far an `Instant` reaches differs by platform, so find it: halve the step on each
    // overflow. A step succeeds at most once per size (twice would be the previous size,
    // which failed), so this ends within about 2 x 94 tries.
    let mut t = now;
    let mut step = d;
    while !step.is_zero() {
        match t.checked_add(step) {
            Some(next) => t = next,
            None => step /= 2,
        }
    }
    t
}

/// Splits Unix seconds into UTC (year, month, day, hour, minute, second), proleptic
/// Gregorian calendar, using the days-from-civil inverse computed in 400-year eras.
pub(crate) fn civil(unix: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    let (h, mi, s) = (
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    );
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month index from March
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, h, mi, s)
}

/// `1 minute, 5 seconds`: Asterisk's uptime phrasing (`core show uptime`).
pub(crate) fn uptime_phrase(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "day"),
        ((secs % 86_400) / 3600, "hour"),
        ((secs % 3600) / 60, "minute"),
        (secs % 60, "second"),
    ];
    let mut out: Vec<String> = Vec::new();
    for (n, unit) in parts {
        if n > 0 || (unit == "second" && out.is_empty()) {
            let plural = if n == 1 { "" } else { "s" };
            out.push(format!("{n} {unit}{plural}"));
        }
    }
    out.join(", ")
}

/// `00:01:05`: CoreShowChannel `Duration`.
pub(crate) fn hms(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        // 2026-11-23 08:38:28 UTC, the fixtures' recording day.
        assert_eq!(civil(1_795_423_108), (2026, 11, 23, 8, 38, 28));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    }

    #[test]
    fn later_saturates_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let far = later(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(1_000_000_000));
        // Saturated: as far as the platform goes, and never before `now`.
        assert!(later(far, Duration::MAX) >= far);
        assert_eq!(later(far, Duration::ZERO), far);
    }

    #[test]
    fn a_clock_started_at_the_end_of_time_stops_there() {
        let now = Instant::now();
        let c = WallClock::new(now, Duration::MAX);
        assert_eq!(c.unix(now + Duration::from_secs(9)), Duration::MAX);
    }

    #[test]
    fn phrases() {
        assert_eq!(uptime_phrase(65), "1 minute, 5 seconds");
        assert_eq!(uptime_phrase(0), "0 seconds");
        assert_eq!(hms(3725), "01:02:05");
    }
}
