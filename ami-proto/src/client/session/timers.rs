//! The session's timers: one small table indexed by a [`Timer`], so no file reaches into an
//! array by position and a new timer is one enum variant.

use std::time::Instant;

/// One session timer. Declaration order is firing order when several are due at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The transport asked for has not opened.
    Connect,
    /// No banner after the transport opened.
    Banner,
    /// Login (and filter re-application) not done.
    Login,
    /// Nothing received for a ping interval: time to send a Ping.
    Idle,
    /// The Ping (or anything else) not answered in time.
    Pong,
    /// Backoff over: connect again.
    Reconnect,
}

impl Timer {
    /// Every timer, in firing order.
    pub(super) const ALL: [Timer; 6] = [
        Timer::Connect,
        Timer::Banner,
        Timer::Login,
        Timer::Idle,
        Timer::Pong,
        Timer::Reconnect,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

/// When each [`Timer`] fires, if it is armed. Generic over the instant type only so its
/// unit tests can use plain numbers (the core never reads a clock, not even in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Timers<T = Instant>([Option<T>; Timer::ALL.len()]);

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers(std::array::from_fn(|_| None))
    }
}

impl<T: Copy + Ord> Timers<T> {
    /// Arms `timer` to fire at `at`, replacing any earlier setting.
    pub(super) fn set(&mut self, timer: Timer, at: T) {
        self.0[timer.slot()] = Some(at);
    }

    /// Disarms `timer`.
    pub(super) fn stop(&mut self, timer: Timer) {
        self.0[timer.slot()] = None;
    }

    /// Disarms every timer.
    pub(super) fn stop_all(&mut self) {
        self.0 = [None; Timer::ALL.len()];
    }

    /// When `timer` fires, if armed.
    pub(super) fn get(&self, timer: Timer) -> Option<T> {
        self.0[timer.slot()]
    }

    /// The earliest armed timer's instant.
    pub(super) fn next_deadline(&self) -> Option<T> {
        self.0.iter().flatten().min().copied()
    }

    /// True if `timer` is armed at or before `now`; it is then disarmed (it fires once).
    pub(super) fn expired(&mut self, timer: Timer, now: T) -> bool {
        let due = self.get(timer).is_some_and(|at| at <= now);
        if due {
            self.stop(timer);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_table_has_no_deadline() {
        let t = Timers::<u64>::default();
        assert_eq!(t.next_deadline(), None);
        assert!(Timer::ALL.iter().all(|&timer| t.get(timer).is_none()));
    }

    #[test]
    fn the_next_deadline_is_the_earliest_armed_timer() {
        let now = 100u64;
        let mut t = Timers::<u64>::default();
        t.set(Timer::Reconnect, now + 5);
        t.set(Timer::Idle, now + 2);
        assert_eq!(t.next_deadline(), Some(now + 2));
        t.stop(Timer::Idle);
        assert_eq!(t.next_deadline(), Some(now + 5));
        t.stop_all();
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn setting_a_timer_again_replaces_it() {
        let now = 100u64;
        let mut t = Timers::<u64>::default();
        t.set(Timer::Pong, now + 1);
        t.set(Timer::Pong, now + 9);
        assert_eq!(t.get(Timer::Pong), Some(now + 9));
        assert_eq!(t.next_deadline(), Some(now + 9));
    }

    #[test]
    fn a_timer_expires_once_at_or_after_its_instant_and_others_stay_armed() {
        let now = 100u64;
        let mut t = Timers::<u64>::default();
        t.set(Timer::Banner, now + 1);
        t.set(Timer::Login, now + 3);
        assert!(!t.expired(Timer::Banner, now));
        assert!(!t.expired(Timer::Connect, now + 10));
        assert!(t.expired(Timer::Banner, now + 1));
        assert!(!t.expired(Timer::Banner, now + 2));
        assert_eq!(t.get(Timer::Login), Some(now + 3));
    }

    #[test]
    fn all_lists_each_timer_once_in_slot_order() {
        for (i, timer) in Timer::ALL.iter().enumerate() {
            assert_eq!(timer.slot(), i);
        }
    }
}
