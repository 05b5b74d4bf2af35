//! The bytes encoded for one connection and not yet written, with where each action's
//! bytes lie, so that an action none of whose bytes were handed to the transport can be
//! withdrawn (its deadline passed, or its caller cancelled it): nothing is sent after its
//! deadline, and a cancelled action that never left is never sent.
//!
//! Two positions split the buffer. Written: reported by
//! [`advance`](Transmit::advance), beyond recall. Lent: handed to an adapter that writes
//! from a copy outside the core's borrow (an async write) with [`lend`](Transmit::lend),
//! and only ever written or given back with [`unlend`](Transmit::unlend). An adapter that
//! writes straight from [`bytes`](Transmit::bytes) lends nothing: for it, lent is written.
//! Only bytes past the lent position are withdrawn, so a lent copy never goes stale; and an
//! action with any byte lent or written is finished on the wire once written, since cutting
//! it short would corrupt the stream for every action behind it.

use std::collections::VecDeque;

/// Written bytes kept before compacting the buffer's front.
const COMPACT_AFTER: usize = 64 << 10;

/// Where one action's bytes lie in the buffer (`start..end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    seq: u64,
    start: usize,
    end: usize,
}

/// The transmit buffer. Every byte from the written position on belongs to exactly one
/// span, in buffer order, and a span starts before the written (lent) position exactly
/// when some of it was written (lent); compaction never cuts into a span, so this stays
/// true. `pos <= lent <= buf.len()`.
#[derive(Debug, Default)]
pub(super) struct Transmit {
    buf: Vec<u8>,
    /// Written up to here.
    pos: usize,
    /// Lent up to here (at least `pos`).
    lent: usize,
    /// Actions with bytes not yet written, in buffer order: one per action encoded since,
    /// so at most the pipeline depth plus the client's own few.
    spans: VecDeque<Span>,
    /// Actions to withdraw at the next [`flush_withdrawn`](Transmit::flush_withdrawn).
    withdrawn: Vec<u64>,
}

impl Transmit {
    /// Bytes encoded and not yet written (lent or not).
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Whether any byte is neither written nor lent: what a lending adapter has yet to take.
    pub(super) fn has_unlent(&self) -> bool {
        self.buf.len() > self.lent
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

    /// Lends every byte not lent yet and returns them (the bytes past what was lent
    /// before). `first_lent` hears of each action whose first byte this lent.
    pub(super) fn lend(&mut self, mut first_lent: impl FnMut(u64)) -> &[u8] {
        let from = self.lent;
        for s in self.spans.iter().rev() {
            if s.start < from {
                break;
            }
            first_lent(s.seq);
        }
        self.lent = self.buf.len();
        &self.buf[from..]
    }

    /// Gives back every lent byte not written: the adapter dropped its copy. `unlent` hears
    /// of each action none of whose bytes are written any more, and which was lent.
    pub(super) fn unlend(&mut self, mut unlent: impl FnMut(u64)) {
        if self.lent == self.pos {
            return;
        }
        for s in &self.spans {
            if s.start >= self.lent {
                break;
            }
            if s.start >= self.pos {
                unlent(s.seq);
            }
        }
        self.lent = self.pos;
    }

    /// Actions whose last byte was never lent (nor written), in buffer order: on this
    /// connection the server cannot have read them whole, so it cannot have run them.
    pub(super) fn never_lent_whole(&self) -> impl Iterator<Item = u64> + '_ {
        let lent = self.lent;
        self.spans
            .iter()
            .rev()
            .take_while(move |s| s.end > lent)
            .map(|s| s.seq)
    }

    /// Marks up to `n` bytes as written; returns how many were. `first_written` hears of
    /// each action whose first byte this wrote, once per action, in order. Written bytes
    /// count as lent: an adapter that writes from [`bytes`](Self::bytes) never lends.
    pub(super) fn advance(&mut self, n: usize, mut first_written: impl FnMut(u64)) -> usize {
        let n = n.min(self.buf.len() - self.pos);
        if n == 0 {
            return 0;
        }
        let (from, to) = (self.pos, self.pos + n);
        self.pos = to;
        self.lent = self.lent.max(to);
        while let Some(&s) = self.spans.front() {
            if s.start >= to {
                break;
            }
            if s.start >= from {
                first_written(s.seq);
            }
            if s.end > to {
                // Partly written: the rest goes out as it is.
                break;
            }
            self.spans.pop_front();
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            self.lent = 0;
            self.spans.clear();
        } else {
            // Never into a partly written action: its start must stay before `pos`.
            let cut = self
                .spans
                .front()
                .map_or(self.pos, |s| s.start.min(self.pos));
            if cut > COMPACT_AFTER {
                self.buf.drain(..cut);
                self.pos -= cut;
                self.lent -= cut;
                for s in &mut self.spans {
                    s.start -= cut;
                    s.end -= cut;
                }
            }
        }
        n
    }

    /// Asks for action `seq`'s bytes to be withdrawn at the next
    /// [`flush_withdrawn`](Self::flush_withdrawn), unless any of them is lent or written.
    pub(super) fn withdraw(&mut self, seq: u64) {
        self.withdrawn.push(seq);
    }

    /// Removes the bytes of the actions [`withdraw`](Self::withdraw) named none of whose
    /// bytes is lent or written; returns how many bytes went. One pass over what is not
    /// lent, however many actions go at once (a deadline shared by a whole stalled
    /// pipeline). Lent bytes never move, so a lent copy stays true.
    pub(super) fn flush_withdrawn(&mut self) -> usize {
        if self.withdrawn.is_empty() {
            return 0;
        }
        self.withdrawn.sort_unstable();
        let (withdrawn, buf, lent) = (&self.withdrawn, &mut self.buf, self.lent);
        let mut shift = 0;
        self.spans.retain_mut(|s| {
            if s.start >= lent && withdrawn.binary_search(&s.seq).is_ok() {
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
            self.lent = 0;
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
        let written = t.advance(n, |s| first.push(s));
        (written, first)
    }

    fn lend(t: &mut Transmit) -> (Vec<u8>, Vec<u64>) {
        let mut first = Vec::new();
        let bytes = t.lend(|s| first.push(s)).to_vec();
        first.sort_unstable();
        (bytes, first)
    }

    fn unlend(t: &mut Transmit) -> Vec<u64> {
        let mut back = Vec::new();
        t.unlend(|s| back.push(s));
        back
    }

    fn never_lent_whole(t: &Transmit) -> Vec<u64> {
        let mut v: Vec<u64> = t.never_lent_whole().collect();
        v.sort_unstable();
        v
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
    fn an_unwritten_action_is_withdrawn_and_the_ones_around_it_stay_intact() {
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
    fn a_partly_written_action_is_never_withdrawn() {
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
    fn compaction_keeps_a_partly_written_action_partly_written() {
        let big = vec![b'x'; COMPACT_AFTER + 10];
        let mut t = filled(&[(1, &big), (2, b"tail"), (3, b"more")]);
        // Into the second action, past the compaction threshold.
        let (_, first) = advance(&mut t, big.len() + 2);
        assert_eq!(first, vec![1, 2]);
        assert_eq!(t.bytes(), b"ilmore");
        t.withdraw(2);
        t.withdraw(3);
        assert_eq!(t.flush_withdrawn(), 4, "only the unwritten action goes");
        assert_eq!(t.bytes(), b"il");
    }

    #[test]
    fn an_action_that_encodes_nothing_leaves_no_span() {
        let mut t = Transmit::default();
        assert!(!t.push(1, |_| false));
        t.withdraw(1);
        assert_eq!(t.flush_withdrawn(), 0);
        assert!(t.bytes().is_empty());
        // Nor is it named as lent or written with the bytes of the action after it.
        assert!(!t.push(2, |_| false));
        t.push(3, |b| b.extend_from_slice(b"CC"));
        assert_eq!(lend(&mut t), (b"CC".to_vec(), vec![3]));
        assert_eq!(advance(&mut t, 2), (2, vec![3]));
    }

    #[test]
    fn lending_hands_out_only_new_bytes_and_names_each_action_once() {
        let mut t = filled(&[(1, b"AAAA"), (2, b"BB")]);
        assert_eq!(lend(&mut t), (b"AAAABB".to_vec(), vec![1, 2]));
        assert_eq!(lend(&mut t), (Vec::new(), vec![]));
        t.push(3, |b| b.extend_from_slice(b"CC"));
        assert_eq!(lend(&mut t), (b"CC".to_vec(), vec![3]));
        // Lending is not writing: the bytes stay until the transport took them.
        assert_eq!(t.bytes(), b"AAAABBCC");
        assert_eq!(advance(&mut t, 8), (8, vec![1, 2, 3]));
        assert!(t.bytes().is_empty());
    }

    #[test]
    fn a_lent_action_is_never_withdrawn_until_it_is_given_back() {
        let mut t = filled(&[(1, b"AAAA"), (2, b"BBBB")]);
        lend(&mut t);
        t.push(3, |b| b.extend_from_slice(b"CCCC"));
        t.withdraw(2);
        t.withdraw(3);
        assert_eq!(t.flush_withdrawn(), 4, "only the action never lent goes");
        assert_eq!(t.bytes(), b"AAAABBBB", "the lent copy stays true");
        advance(&mut t, 2);
        // The copy was dropped with two bytes written: the rest is the core's again.
        assert_eq!(unlend(&mut t), vec![2], "action 1 is partly written");
        t.withdraw(1);
        t.withdraw(2);
        assert_eq!(t.flush_withdrawn(), 4);
        assert_eq!(t.bytes(), b"AA");
    }

    #[test]
    fn an_action_whose_last_byte_was_never_lent_is_named_as_never_lent_whole() {
        let mut t = filled(&[(1, b"AAAA"), (2, b"BBBB")]);
        assert_eq!(never_lent_whole(&t), vec![1, 2]);
        advance(&mut t, 3);
        assert_eq!(
            never_lent_whole(&t),
            vec![1, 2],
            "written up to the last byte only"
        );
        advance(&mut t, 1);
        assert_eq!(never_lent_whole(&t), vec![2]);
        lend(&mut t);
        assert_eq!(never_lent_whole(&t), Vec::<u64>::new());
        t.push(3, |b| b.extend_from_slice(b"C"));
        assert_eq!(never_lent_whole(&t), vec![3]);
    }

    #[test]
    fn compaction_keeps_the_lent_position_on_its_byte() {
        let big = vec![b'x'; COMPACT_AFTER + 10];
        let mut t = filled(&[(1, &big), (2, b"tail")]);
        lend(&mut t);
        t.push(3, |b| b.extend_from_slice(b"more"));
        advance(&mut t, big.len() + 1);
        assert_eq!(never_lent_whole(&t), vec![3]);
        t.withdraw(2);
        t.withdraw(3);
        assert_eq!(t.flush_withdrawn(), 4);
        assert_eq!(t.bytes(), b"ail");
    }

    #[test]
    fn written_bytes_are_let_go_past_the_threshold_while_later_ones_wait() {
        let big = vec![b'x'; COMPACT_AFTER + 10];
        let mut t = filled(&[(1, &big), (2, b"tail")]);
        advance(&mut t, big.len());
        assert_eq!(t.bytes(), b"tail");
        // A transport that never drains the buffer whole must not keep all it ever wrote.
        assert_eq!(t.buf.len(), 4, "the written action's bytes are dropped");
        assert_eq!(advance(&mut t, 4), (4, vec![2]));
    }
}
