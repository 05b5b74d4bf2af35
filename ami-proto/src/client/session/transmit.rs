//! The bytes encoded for one connection and not yet taken by the transport, with where each
//! action's bytes lie, so that an action none of whose bytes the transport has taken can be
//! withdrawn when its deadline passes (nothing is sent after its deadline).
//!
//! Taken means handed to [`advance_transmit`](Transmit::advance): from then on the bytes
//! may be on the wire, and an action with any byte taken is finished on the wire, since
//! cutting it short would corrupt the stream for every action behind it.

use std::collections::VecDeque;

/// Taken bytes kept before compacting the buffer's front.
const COMPACT_AFTER: usize = 64 << 10;

/// Where one action's bytes lie in the buffer (`start..end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    seq: u64,
    start: usize,
    end: usize,
}

/// The transmit buffer. Every byte from the taken position on belongs to exactly one span,
/// in buffer order, and a span starts before the taken position exactly when the transport
/// has taken some of it (compaction never cuts into a span, so this stays true).
#[derive(Debug, Default)]
pub(super) struct Transmit {
    buf: Vec<u8>,
    pos: usize,
    /// Actions with bytes not yet taken, in buffer order: one per action encoded since, so
    /// at most the pipeline depth plus the client's own few.
    spans: VecDeque<Span>,
    /// Actions to withdraw at the next [`flush_withdrawn`](Transmit::flush_withdrawn).
    withdrawn: Vec<u64>,
}

impl Transmit {
    /// Bytes encoded and not yet taken.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Appends the bytes `encode` writes as action `seq`'s; returns what `encode` returned.
    /// An `encode` that writes nothing (it refused the action) records nothing.
    pub(super) fn push<R>(&mut self, seq: u64, encode: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let start = self.buf.len();
        let r = encode(&mut self.buf);
        let end = self.buf.len();
        if end > start {
            self.spans.push_back(Span { seq, start, end });
        }
        r
    }

    /// Marks up to `n` bytes as taken by the transport; returns how many were. `first_taken`
    /// hears of each action whose first byte this took, once per action, in order.
    pub(super) fn advance(&mut self, n: usize, mut first_taken: impl FnMut(u64)) -> usize {
        let n = n.min(self.buf.len() - self.pos);
        if n == 0 {
            return 0;
        }
        let (from, to) = (self.pos, self.pos + n);
        self.pos = to;
        while let Some(&s) = self.spans.front() {
            if s.start >= to {
                break;
            }
            if s.start >= from {
                first_taken(s.seq);
            }
            if s.end > to {
                // Partly taken: the rest goes out as it is.
                break;
            }
            self.spans.pop_front();
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            self.spans.clear();
        } else {
            // Never into a partly taken action: its start must stay before `pos`.
            let cut = self
                .spans
                .front()
                .map_or(self.pos, |s| s.start.min(self.pos));
            if cut > COMPACT_AFTER {
                self.buf.drain(..cut);
                self.pos -= cut;
                for s in &mut self.spans {
                    s.start -= cut;
                    s.end -= cut;
                }
            }
        }
        n
    }

    /// Asks for action `seq`'s bytes to be withdrawn at the next
    /// [`flush_withdrawn`](Self::flush_withdrawn), unless the transport has taken any.
    pub(super) fn withdraw(&mut self, seq: u64) {
        self.withdrawn.push(seq);
    }

    /// Removes the bytes of the actions [`withdraw`](Self::withdraw) named that the transport
    /// has not started on; returns how many bytes went. One pass over what is untaken,
    /// however many actions go at once (a deadline shared by a whole stalled pipeline).
    pub(super) fn flush_withdrawn(&mut self) -> usize {
        if self.withdrawn.is_empty() {
            return 0;
        }
        self.withdrawn.sort_unstable();
        let (withdrawn, buf, pos) = (&self.withdrawn, &mut self.buf, self.pos);
        let mut shift = 0;
        self.spans.retain_mut(|s| {
            if s.start >= pos && withdrawn.binary_search(&s.seq).is_ok() {
                shift += s.end - s.start;
                return false;
            }
            if shift > 0 {
                buf.copy_within(s.start..s.end, s.start - shift);
                s.start -= shift;
                s.end -= shift;
            }
            true
        });
        let len = buf.len() - shift;
        buf.truncate(len);
        self.withdrawn.clear();
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(actions: &[(u64, &[u8])]) -> Transmit {
        let mut t = Transmit::default();
        for (seq, bytes) in actions {
            t.push(*seq, |b| b.extend_from_slice(bytes));
        }
        t
    }

    fn advance(t: &mut Transmit, n: usize) -> (usize, Vec<u64>) {
        let mut first = Vec::new();
        let taken = t.advance(n, |s| first.push(s));
        (taken, first)
    }

    #[test]
    fn partial_writes_advance_through_the_bytes_and_name_each_action_once() {
        let mut t = filled(&[(1, b"abc"), (2, b"def")]);
        assert_eq!(advance(&mut t, 2), (2, vec![1]));
        assert_eq!(t.bytes(), b"cdef");
        assert_eq!(advance(&mut t, 1), (1, vec![]));
        assert_eq!(advance(&mut t, 100), (3, vec![2]));
        assert!(t.bytes().is_empty());
        assert_eq!(advance(&mut t, 1), (0, vec![]));
    }

    #[test]
    fn an_untaken_action_is_withdrawn_and_the_ones_around_it_stay_intact() {
        let mut t = filled(&[(1, b"AAAA"), (2, b"BBBB"), (3, b"CCCC")]);
        advance(&mut t, 2);
        t.withdraw(2);
        assert_eq!(t.flush_withdrawn(), 4);
        assert_eq!(t.bytes(), b"AACCCC");
        // The next action lands after what is left, and the transport names it in turn.
        t.push(4, |b| b.extend_from_slice(b"DD"));
        assert_eq!(advance(&mut t, 3), (3, vec![3]));
        assert_eq!(t.bytes(), b"CCCDD");
        assert_eq!(advance(&mut t, 5), (5, vec![4]));
    }

    #[test]
    fn a_partly_taken_action_is_never_withdrawn() {
        let mut t = filled(&[(1, b"AAAA"), (2, b"BBBB")]);
        advance(&mut t, 1);
        t.withdraw(1);
        assert_eq!(t.flush_withdrawn(), 0);
        assert_eq!(t.bytes(), b"AAABBBB");
    }

    #[test]
    fn withdrawing_everything_left_empties_the_buffer() {
        let mut t = filled(&[(1, b"AAAA"), (2, b"BB"), (3, b"CC")]);
        advance(&mut t, 4);
        t.withdraw(3);
        t.withdraw(2);
        assert_eq!(t.flush_withdrawn(), 4);
        assert!(t.bytes().is_empty());
        assert_eq!(advance(&mut t, 1), (0, vec![]));
    }

    #[test]
    fn compaction_keeps_a_partly_taken_action_partly_taken() {
        let big = vec![b'x'; COMPACT_AFTER + 10];
        let mut t = filled(&[(1, &big), (2, b"tail"), (3, b"more")]);
        // Into the second action, past the compaction threshold.
        let (_, first) = advance(&mut t, big.len() + 2);
        assert_eq!(first, vec![1, 2]);
        assert_eq!(t.bytes(), b"ilmore");
        t.withdraw(2);
        t.withdraw(3);
        assert_eq!(t.flush_withdrawn(), 4, "only the untaken action goes");
        assert_eq!(t.bytes(), b"il");
    }

    #[test]
    fn an_action_that_encodes_nothing_leaves_no_span() {
        let mut t = Transmit::default();
        assert!(!t.push(1, |_| false));
        t.withdraw(1);
        assert_eq!(t.flush_withdrawn(), 0);
        assert!(t.bytes().is_empty());
    }
}
