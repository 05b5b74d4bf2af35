//! Action deadlines, earliest first: a FIFO for deadlines that arrive in order, a min-heap
//! for the others.
//!
//! Most actions share one timeout, so their deadlines (`now + timeout`) arrive in order:
//! those go to the back of a FIFO, O(1) in and out, where a heap paid O(log n) both ways
//! per action. A deadline earlier than the FIFO's last (a shorter timeout, a follow-up
//! budget, a grace period) goes to the heap. Entries are never removed when an action
//! ends: a stale entry is dropped when it surfaces (the caller says which entries are still
//! live), and both are compacted once stale entries outnumber live ones, so memory follows
//! the live actions, not the actions sent since the oldest live one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Deadlines keyed by an action's sequence number. Generic over the instant type only so
/// its unit tests can use plain numbers (the core never reads a clock, not even in tests).
#[derive(Debug)]
pub(crate) struct Deadlines<T> {
    /// Non-decreasing deadlines, in push order.
    fifo: VecDeque<(T, u64)>,
    heap: BinaryHeap<Reverse<(T, u64)>>,
}

impl<T> Default for Deadlines<T>
where
    T: Ord,
{
    fn default() -> Self {
        Deadlines {
            fifo: VecDeque::new(),
            heap: BinaryHeap::new(),
        }
    }
}

/// Entries kept before stale ones are worth a compaction pass.
const COMPACT_SLACK: usize = 64;

impl<T: Ord + Copy> Deadlines<T> {
    /// Adds a deadline for `seq`.
    pub(crate) fn push(&mut self, at: T, seq: u64) {
        if self.fifo.back().is_none_or(|&(last, _)| at >= last) {
            self.fifo.push_back((at, seq));
        } else {
            self.heap.push(Reverse((at, seq)));
        }
    }

    /// Entries held, live and stale.
    pub(crate) fn len(&self) -> usize {
        self.fifo.len() + self.heap.len()
    }

    /// The earliest entry for which `live(seq, at)` holds; stale entries in front of it are
    /// dropped on the way.
    pub(crate) fn peek(&mut self, live: impl Fn(u64, T) -> bool) -> Option<(T, u64)> {
        while let Some(&(at, seq)) = self.fifo.front() {
            if live(seq, at) {
                break;
            }
            self.fifo.pop_front();
        }
        while let Some(&Reverse((at, seq))) = self.heap.peek() {
            if live(seq, at) {
                break;
            }
            self.heap.pop();
        }
        match (self.fifo.front(), self.heap.peek()) {
            (Some(&a), Some(&Reverse(b))) => Some(a.min(b)),
            (Some(&a), None) => Some(a),
            (None, Some(&Reverse(b))) => Some(b),
            (None, None) => None,
        }
    }

    /// Removes `entry`, which [`peek`](Self::peek) just returned.
    pub(crate) fn pop(&mut self, entry: (T, u64)) {
        if self.fifo.front() == Some(&entry) {
            self.fifo.pop_front();
        } else if self.heap.peek() == Some(&Reverse(entry)) {
            self.heap.pop();
        }
    }

    /// Drops every stale entry once they outnumber the `live_count` live ones (plus some
    /// slack): amortised O(1) per push, and at most about twice the live entries held.
    pub(crate) fn compact(&mut self, live_count: usize, live: impl Fn(u64, T) -> bool) {
        if self.len() <= live_count.saturating_mul(2) + COMPACT_SLACK {
            return;
        }
        self.fifo.retain(|&(at, seq)| live(seq, at));
        self.heap.retain(|&Reverse((at, seq))| live(seq, at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Pops every entry live in `map` (seq -> deadline) at or before `now`.
    fn expire(d: &mut Deadlines<u64>, map: &mut HashMap<u64, u64>, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(entry) = d.peek(|seq, at| map.get(&seq) == Some(&at)) {
            if entry.0 > now {
                break;
            }
            d.pop(entry);
            map.remove(&entry.1);
            out.push(entry.1);
        }
        out
    }

    #[test]
    fn deadlines_in_and_out_of_order_expire_earliest_first() {
        let mut d = Deadlines::default();
        let mut map = HashMap::new();
        // Seq 1..=3 in order (the FIFO), 4 and 5 earlier than the last (the heap).
        for (seq, at) in [(1, 10), (2, 20), (3, 30), (4, 5), (5, 25)] {
            d.push(at, seq);
            map.insert(seq, at);
        }
        assert_eq!(expire(&mut d, &mut map, 4), Vec::<u64>::new());
        assert_eq!(expire(&mut d, &mut map, 20), [4, 1, 2]);
        assert_eq!(expire(&mut d, &mut map, 100), [5, 3]);
        assert_eq!(d.peek(|_, _| true), None);
    }

    #[test]
    fn a_moved_or_finished_deadline_never_fires() {
        let mut d = Deadlines::default();
        let mut map = HashMap::new();
        for seq in 1..=3 {
            d.push(seq * 10, seq);
            map.insert(seq, seq * 10);
        }
        // Seq 1 finished; seq 2 moved later (its old entry is stale).
        map.remove(&1);
        map.insert(2, 50);
        d.push(50, 2);
        assert_eq!(expire(&mut d, &mut map, 40), [3]);
        assert_eq!(expire(&mut d, &mut map, 50), [2]);
    }

    #[test]
    fn stale_entries_are_compacted_behind_a_long_lived_one() {
        let mut d = Deadlines::default();
        let mut map = HashMap::new();
        // One action that outlives 10,000 short ones which each finish at once.
        d.push(1_000_000, 0);
        map.insert(0, 1_000_000);
        for seq in 1..=10_000 {
            d.push(1_000_000 + seq, seq);
            map.insert(seq, 1_000_000 + seq);
            map.remove(&seq);
            d.compact(map.len(), |s, at| map.get(&s) == Some(&at));
            assert!(d.len() <= 2 * map.len() + COMPACT_SLACK + 1, "{}", d.len());
        }
        assert_eq!(expire(&mut d, &mut map, u64::MAX), [0]);
    }

    #[test]
    fn stale_out_of_order_entries_count_towards_compaction_too() {
        let mut d = Deadlines::default();
        let mut map = HashMap::new();
        // A long-lived action in the FIFO, then 10,000 short ones each earlier than it (so in
        // the heap), which each finish at once.
        d.push(u64::MAX, 0);
        map.insert(0, u64::MAX);
        for seq in 1..=10_000 {
            d.push(seq, seq);
            map.insert(seq, seq);
            map.remove(&seq);
            d.compact(map.len(), |s, at| map.get(&s) == Some(&at));
            assert!(d.len() <= 2 * map.len() + COMPACT_SLACK + 1, "{}", d.len());
        }
        assert_eq!(expire(&mut d, &mut map, u64::MAX), [0]);
    }

    #[test]
    fn a_popped_entry_is_gone_though_its_action_still_has_that_deadline() {
        let mut d = Deadlines::default();
        // Seq 1 in the FIFO, seq 2 (earlier) in the heap; both stay live throughout.
        d.push(10, 1);
        d.push(5, 2);
        let all_live = |_: u64, _: u64| true;
        for expected in [(5, 2), (10, 1)] {
            let entry = d.peek(all_live);
            assert_eq!(entry, Some(expected));
            d.pop(expected);
        }
        assert_eq!(d.peek(all_live), None);
        assert_eq!(d.len(), 0);
    }
}
