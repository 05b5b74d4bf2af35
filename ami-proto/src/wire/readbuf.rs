//! The decoder's read buffer, managed so that a message an application holds never pins
//! more memory than its own bytes.
//!
//! A message cut out of a shared buffer as a slice (`BytesMut::split_to`) keeps the whole
//! allocation alive as long as it lives: one small event kept by a slow consumer held a
//! 64 KiB+ read buffer, and a queue of them held gigabytes. So a message handed to anyone is
//! either copied out (small ones: one `memcpy` of its own size), or, when it is large and
//! fills the front of the buffer, takes the allocation itself, trimmed to its length.
//!
//! The client's events are the one exception, and only on their way through its queue:
//! they are cut out as slices ([`ReadBuf::take_shared`]), so the reader allocates nothing per
//! event, and whoever takes one out of the queue copies it
//! ([`Message::detach`](super::message::Message::detach)). Each read's slices fill
//! allocations of their own (the buffer is sealed after the read), and the client copies a
//! read's events out at once unless they are most of what those allocations hold
//! ([`ReadBuf::pinned`]): queued events never keep much more than their own bytes alive.

use bytes::{Buf, Bytes, BytesMut};
use std::ops::Deref;

/// First allocation; the buffer grows on demand up to the decoder's cap.
const INITIAL_CAPACITY: usize = 16 << 10;
/// Messages at least this long are never cut out as shared slices of the read buffer: each
/// gets an allocation of its own at once (copied, or handed the buffer's allocation).
const SHARE_MAX: usize = 64 << 10;
/// Messages at least this long that start at the front of the buffer take the allocation
/// instead of being copied: copying them would briefly double the peak for very large
/// messages. Below it a copy is cheaper than what the hand-over costs: a fresh buffer that
/// regrows by doubling for the next message, each step past the allocator's mmap threshold
/// (128 KiB) an mremap, and page faults on every new page (200 kB events: 2x the events/s
/// on tokio, `ami bench --event-bytes 200000`).
const HAND_OVER_MIN: usize = 1 << 20;
/// An empty buffer larger than this is given back after a large message, so one 16 MiB
/// message does not keep 16 MiB allocated for the rest of the session.
const SHRINK_ABOVE: usize = 256 << 10;
/// Smallest allocation of the field-table arena (tables of shared messages).
const SPAN_CAPACITY: usize = 4 << 10;
/// Sealed allocations kept for reuse once their slices are gone, per arena: a flooding
/// connection then reads into the same few allocations instead of a fresh one per read
/// (which the allocator gives back to the system and faults in again). Kept only while
/// reads are dense with events.
const RETIRED_MAX: usize = 4;

/// One growable allocation that slices are cut from, with the bookkeeping for sealing
/// and reuse.
#[derive(Debug, Default)]
struct Arena {
    buf: BytesMut,
    /// Capacity of the current allocation.
    alloc: usize,
    /// Bytes cut out as shared slices in the current read.
    shared: usize,
    /// Bytes of the allocations that hold the current read's slices.
    pinned: usize,
    /// The current allocation holds an earlier read's slices: the next append looks for
    /// another one unless every slice is gone.
    sealed: bool,
    /// Earlier allocations that held slices (emptied handles, with their sizes), reused once
    /// their slices are gone.
    retired: Vec<(BytesMut, usize)>,
}

impl Arena {
    fn with_capacity(n: usize) -> Arena {
        Arena {
            buf: BytesMut::with_capacity(n),
            alloc: n,
            ..Arena::default()
        }
    }

    /// Makes room for `more` bytes after the unconsumed ones; a new allocation gets
    /// `size(needed)` bytes (at least what is needed).
    fn reserve(&mut self, more: usize, size: impl FnOnce(usize) -> usize) {
        if self.sealed {
            // Asking for one byte more than the spare room succeeds only when no slice of
            // the allocation is left (it may then move the unconsumed bytes to the front).
            let spare = self.buf.capacity() - self.buf.len();
            if self.buf.try_reclaim(spare + 1) {
                self.sealed = false;
            }
        }
        if !self.sealed && self.buf.try_reclaim(more) {
            return;
        }
        let needed = self.buf.len() + more;
        let size = size(needed).max(needed);
        if !self.sealed && self.shared == 0 {
            // No slice of this allocation is alive: grow it in place (the allocator may
            // extend it or move it without holding both), so a message growing to 16 MiB
            // never has two large buffers alive at once.
            let mut v: Vec<u8> = std::mem::take(&mut self.buf).into();
            v.reserve_exact(size - v.len());
            self.alloc = v.capacity();
            self.buf = BytesMut::from(Bytes::from(v));
            return;
        }
        let (mut next, got) = self
            .reuse(size)
            .unwrap_or_else(|| (BytesMut::with_capacity(size), size));
        next.extend_from_slice(&self.buf);
        let mut old = std::mem::replace(&mut self.buf, next);
        let held = std::mem::replace(&mut self.alloc, got);
        if self.sealed || self.shared > 0 {
            // The old allocation still holds slices: kept for reuse once they are gone.
            if self.retired.len() < RETIRED_MAX {
                old.clear();
                self.retired.push((old, held));
            }
        }
        if self.shared > 0 {
            // Mid-read: this read's slices now span both allocations.
            self.pinned += got;
        }
        self.sealed = false;
    }

    /// A retired allocation of at least `size` bytes whose slices are all gone.
    fn reuse(&mut self, size: usize) -> Option<(BytesMut, usize)> {
        let at = self
            .retired
            .iter_mut()
            .position(|(b, n)| *n >= size && b.try_reclaim(size))?;
        Some(self.retired.swap_remove(at))
    }

    /// `n` bytes were cut out as a shared slice.
    fn cut(&mut self, n: usize) {
        if self.shared == 0 {
            self.pinned = self.alloc;
        }
        self.shared += n;
    }

    /// The end of a read whose slices stay shared.
    fn seal(&mut self) {
        if self.shared > 0 {
            self.sealed = true;
        }
        self.shared = 0;
        self.pinned = 0;
    }

    /// The end of a read whose slices were all copied out: nothing is shared, and no spare
    /// allocation is kept (reads are not dense with events).
    fn unshare(&mut self) {
        self.shared = 0;
        self.pinned = 0;
        self.sealed = false;
        self.retired.clear();
    }

    fn allocated(&self) -> usize {
        self.alloc + self.retired.iter().map(|(_, n)| n).sum::<usize>()
    }
}

/// Bytes read and not yet consumed, and the arena for the field tables of shared messages.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    bytes: Arena,
    /// Bytes removed from the front so far: an index into the buffer stays meaningful only
    /// while this is unchanged (the decoder's line-end cache checks it).
    dropped: u64,
    /// Most bytes ever held (the decoder's `buffer_cap`); growth never allocates past it.
    cap: usize,
    spans: Arena,
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes.buf
    }
}

impl ReadBuf {
    pub(crate) fn new(cap: usize) -> ReadBuf {
        ReadBuf {
            bytes: Arena::with_capacity(INITIAL_CAPACITY.min(cap)),
            dropped: 0,
            cap,
            spans: Arena::default(),
        }
    }

    /// Bytes removed from the front since creation.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes allocated (what the buffer costs in memory, whatever it holds).
    pub(crate) fn allocated(&self) -> usize {
        self.bytes.allocated() + self.spans.allocated()
    }

    /// Appends `input`; the caller keeps `len() + input.len()` within the cap.
    pub(crate) fn extend_from_slice(&mut self, input: &[u8]) {
        let (len, cap) = (self.bytes.buf.len(), self.cap);
        // Sized to need when a read's slices fill their own allocation, doubled when one
        // message outgrows it, never past the cap.
        self.bytes.reserve(input.len(), |needed| {
            needed
                .max(len.saturating_mul(2))
                .max(INITIAL_CAPACITY)
                .min(cap)
        });
        self.bytes.buf.extend_from_slice(input);
    }

    /// Drops the first `n` bytes.
    pub(crate) fn advance(&mut self, n: usize) {
        let n = n.min(self.bytes.buf.len());
        self.bytes.buf.advance(n);
        self.dropped += n as u64;
        let idle = self.bytes.shared == 0 && !self.bytes.sealed;
        if self.bytes.buf.is_empty() && self.bytes.alloc > SHRINK_ABOVE && idle {
            self.bytes = Arena::with_capacity(INITIAL_CAPACITY.min(self.cap));
        }
    }

    /// Removes the first `n` bytes and returns them, followed by `table`, as `Bytes` that own
    /// exactly their allocation (see the module docs): a message and its field table in one.
    pub(crate) fn take(&mut self, n: usize, table: &[u8]) -> Bytes {
        let n = n.min(self.len());
        if n < HAND_OVER_MIN || self.bytes.shared > 0 || self.bytes.sealed {
            // Small, or the allocation also backs shared slices: a copy of its own (exactly
            // the capacity asked for, so `Bytes` takes it without a second allocation).
            let mut v = Vec::with_capacity(n + table.len());
            v.extend_from_slice(&self.bytes.buf[..n]);
            v.extend_from_slice(table);
            self.advance(n);
            return Bytes::from(v);
        }
        // The bytes read past the message move to a fresh buffer; the message keeps the
        // allocation (without a copy: nothing else shares it), trimmed to its length.
        self.dropped += n as u64;
        let rest = &self.bytes.buf[n..];
        let mut fresh = Arena::with_capacity(INITIAL_CAPACITY.min(self.cap).max(rest.len()));
        fresh.buf.extend_from_slice(rest);
        self.bytes.buf.truncate(n);
        let taken = std::mem::replace(&mut self.bytes, fresh).buf;
        let mut taken: Vec<u8> = taken.into();
        taken.reserve_exact(table.len());
        taken.extend_from_slice(table);
        // Shrinking a large allocation is done in place by the allocator: no copy.
        taken.shrink_to_fit();
        Bytes::from(taken)
    }

    /// Removes the first `n` bytes as a slice of the shared allocation (no copy), with the
    /// encoded field table `table` as a slice of the shared arena; the flag says whether
    /// they are shared. A large message is taken as by [`take`](Self::take), its table in
    /// the same allocation (the second `Bytes` is then empty): it never shares.
    pub(crate) fn take_shared(&mut self, n: usize, table: &[u8]) -> (Bytes, Bytes, bool) {
        let n = n.min(self.len());
        if n >= SHARE_MAX {
            return (self.take(n, table), Bytes::new(), false);
        }
        let bytes = self.take_shared_bytes(n);
        // Room for about a read's worth of tables at once.
        let hint = self.bytes.alloc / 4;
        self.spans
            .reserve(table.len(), |needed| needed.max(hint).max(SPAN_CAPACITY));
        self.spans.buf.extend_from_slice(table);
        self.spans.cut(table.len());
        (bytes, self.spans.buf.split().freeze(), true)
    }

    /// Whether [`take_shared`](Self::take_shared) would cut the first `n` bytes out as a
    /// shared slice (a large message is taken as by [`take`](Self::take) instead).
    pub(crate) fn shares(&self, n: usize) -> bool {
        n.min(self.len()) < SHARE_MAX
    }

    /// Removes the first `n` bytes as a slice of the shared allocation (no copy), without a
    /// field table: for a message that [`shares`](Self::shares).
    pub(crate) fn take_shared_bytes(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len());
        let bytes = self.bytes.buf.split_to(n).freeze();
        self.dropped += n as u64;
        self.bytes.cut(n);
        bytes
    }

    /// At the end of a read: bytes of the shared slices cut out in it, and bytes of the
    /// allocations those slices keep alive.
    pub(crate) fn pinned(&self) -> (usize, usize) {
        if self.bytes.shared == 0 {
            return (0, 0);
        }
        (
            self.bytes.shared + self.spans.shared,
            self.bytes.pinned + self.spans.pinned,
        )
    }

    /// The end of a read whose shared slices stay shared: the allocations are sealed, so
    /// that later reads' slices never land in them (unless every slice is gone by then).
    pub(crate) fn seal(&mut self) {
        self.bytes.seal();
        self.spans.seal();
    }

    /// The end of a read whose shared slices were all detached (copied out): the
    /// allocations are the decoder's alone again, and reused; no spare ones are kept.
    pub(crate) fn unshare(&mut self) {
        self.bytes.unshare();
        self.spans.unshare();
    }

    /// Forgets everything (a new connection), giving back a large allocation.
    pub(crate) fn clear(&mut self) {
        let len = self.len();
        self.advance(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_message_is_copied_and_owns_only_its_bytes() {
        let mut b = ReadBuf::new(1 << 20);
        b.extend_from_slice(b"Event: A\r\n\r\nEvent: B\r\n");
        let a = b.take(12, &[]);
        assert_eq!(&a[..], b"Event: A\r\n\r\n");
        assert_eq!(&b[..], b"Event: B\r\n");
        // A copy: the read buffer's allocation is not shared with `a`.
        let before = b.allocated();
        drop(a);
        assert_eq!(b.allocated(), before);
    }

    #[test]
    fn a_message_under_a_mebibyte_is_copied_and_the_buffer_kept_for_the_next() {
        // 200 kB: handing the allocation over made the next message regrow a fresh buffer
        // from 16 KiB (mremaps and page faults per message).
        let mut b = ReadBuf::new(4 << 20);
        let big = vec![b'x'; 200_000];
        b.extend_from_slice(&big);
        b.extend_from_slice(b"tail");
        let kept = b.allocated();
        let m = b.take(big.len(), &[1, 2, 3]);
        assert_eq!(m.len(), big.len() + 3);
        assert_eq!(&b[..], b"tail");
        assert_eq!(b.allocated(), kept, "the read buffer keeps its allocation");
        assert!(b.allocated() >= big.len());
    }

    #[test]
    fn large_message_at_the_front_takes_the_allocation_trimmed() {
        for len in [HAND_OVER_MIN, HAND_OVER_MIN * 2] {
            let mut b = ReadBuf::new(4 << 20);
            let big = vec![b'x'; len];
            b.extend_from_slice(&big);
            b.extend_from_slice(b"tail");
            let m = b.take(big.len(), &[1, 2, 3]);
            // The message, then its field table, in the one allocation.
            assert_eq!(m.len(), big.len() + 3);
            assert_eq!(&m[big.len()..], &[1, 2, 3]);
            assert_eq!(&b[..], b"tail");
            assert!(
                b.allocated() <= INITIAL_CAPACITY,
                "{len} bytes: a fresh small buffer"
            );
            // Indexes into the buffer from before the take must be seen as stale.
            assert_eq!(b.dropped(), len as u64);
        }
    }

    #[test]
    fn growth_never_exceeds_the_cap_and_empty_large_buffer_shrinks() {
        let cap = 600 << 10;
        let mut b = ReadBuf::new(cap);
        let chunk = vec![b'y'; 100 << 10];
        for _ in 0..6 {
            b.extend_from_slice(&chunk);
            assert!(b.allocated() <= cap, "{} > {cap}", b.allocated());
        }
        b.advance(1);
        b.advance(usize::MAX);
        assert!(b.allocated() <= INITIAL_CAPACITY);
    }

    #[test]
    fn a_sealed_allocation_is_not_written_while_its_slices_live() {
        let mut b = ReadBuf::new(1 << 20);
        b.extend_from_slice(b"Event: A\r\n\r\nEvent: B");
        let (a, table, shared) = b.take_shared(12, &[7; 16]);
        assert!(shared);
        let (cut, pinned) = b.pinned();
        assert_eq!(cut, 12 + 16);
        assert!(pinned >= INITIAL_CAPACITY);
        b.seal();
        b.extend_from_slice(b"\r\n\r\n");
        assert_eq!(&a[..], b"Event: A\r\n\r\n");
        assert_eq!(&table[..], &[7; 16]);
        assert_eq!(&b[..], b"Event: B\r\n\r\n");
        // A fresh allocation: the slice's allocation is not the buffer's any more.
        let base = a.as_ptr() as usize;
        let now = b.as_ptr() as usize;
        assert!(now < base || now >= base + INITIAL_CAPACITY);
    }

    #[test]
    fn a_sealed_allocation_is_reused_once_its_slices_are_gone() {
        let mut b = ReadBuf::new(1 << 20);
        b.extend_from_slice(&[b'x'; 600]);
        let (a, _, _) = b.take_shared(500, &[0; 16]);
        b.seal();
        b.extend_from_slice(&[b'y'; 600]);
        let (c, _, _) = b.take_shared(600, &[0; 16]);
        b.seal();
        drop(a);
        drop(c);
        // Both allocations are free again; the next reads land in one of them.
        b.extend_from_slice(&[b'z'; 600]);
        let allocated = b.allocated();
        let (d, _, _) = b.take_shared(500, &[0; 16]);
        b.seal();
        drop(d);
        b.extend_from_slice(&[b'w'; 600]);
        assert_eq!(b.allocated(), allocated, "no new allocation");
    }

    #[test]
    fn unshared_reads_keep_no_spare_allocations() {
        let mut b = ReadBuf::new(1 << 20);
        b.extend_from_slice(&[b'x'; 500]);
        let (a, _, _) = b.take_shared(500, &[0; 16]);
        b.seal();
        b.extend_from_slice(&[b'y'; 500]);
        let (c, _, _) = b.take_shared(500, &[0; 16]);
        // The client copied this read's event out (a sparse read): nothing is shared, and
        // the retired allocation is let go.
        drop(c);
        b.unshare();
        drop(a);
        assert_eq!(b.pinned(), (0, 0));
        assert!(
            b.allocated() <= INITIAL_CAPACITY + SPAN_CAPACITY,
            "{}",
            b.allocated()
        );
    }

    #[test]
    fn compaction_keeps_unconsumed_bytes_in_order() {
        let mut b = ReadBuf::new(64);
        b.extend_from_slice(&[1; 10]);
        b.extend_from_slice(&[2; 10]);
        b.advance(15);
        b.extend_from_slice(&[3; 50]);
        assert_eq!(b.len(), 55);
        assert_eq!(&b[..5], &[2; 5]);
        assert!(b[5..].iter().all(|&x| x == 3));
        assert!(b.allocated() <= 64);
    }

    #[test]
    fn an_emptied_buffer_up_to_the_shrink_threshold_keeps_its_allocation() {
        for size in [100 << 10, SHRINK_ABOVE] {
            let mut b = ReadBuf::new(4 << 20);
            b.extend_from_slice(&vec![b'x'; size]);
            let kept = b.allocated();
            assert!(kept > INITIAL_CAPACITY && kept <= SHRINK_ABOVE, "{kept}");
            b.advance(usize::MAX);
            // Regrowing from 16 KiB for each message of this size costs more than it keeps.
            assert_eq!(b.allocated(), kept, "{size} bytes");
        }
    }

    #[test]
    fn a_sealed_allocation_is_written_again_once_its_slices_are_gone() {
        let mut b = ReadBuf::new(1 << 20);
        // A read that ends inside a message: its start waits in the sealed allocation.
        b.extend_from_slice(&[b'x'; 1000]);
        let (a, table, _) = b.take_shared(600, &[0; 16]);
        b.seal();
        let allocated = b.allocated();
        drop((a, table));
        b.extend_from_slice(&[b'y'; 10]);
        assert_eq!(b.allocated(), allocated, "no new allocation");
        assert_eq!(b.len(), 410);
    }

    #[test]
    fn a_read_whose_slices_outgrow_their_allocation_pins_and_counts_both() {
        let mut b = ReadBuf::new(1 << 20);
        b.extend_from_slice(&[b'x'; 600]);
        let (a, _, _) = b.take_shared(500, &[0; 16]);
        // The same read goes on past the allocation `a` lives in.
        b.extend_from_slice(&vec![b'y'; INITIAL_CAPACITY]);
        let (cut, pinned) = b.pinned();
        assert_eq!(cut, 500 + 16);
        assert!(pinned >= 2 * INITIAL_CAPACITY, "{pinned}");
        assert_eq!(b.allocated(), pinned, "both allocations are counted, once");
        assert_eq!(&a[..], &[b'x'; 500]);
        assert_eq!(b.len(), 100 + INITIAL_CAPACITY);
    }

    #[test]
    fn a_retired_allocation_is_reused_once_free_and_never_while_pinned() {
        let mut b = ReadBuf::new(1 << 20);
        b.extend_from_slice(&[b'x'; 600]);
        let (a, _, _) = b.take_shared(600, &[0; 16]);
        b.seal();
        b.extend_from_slice(&[b'y'; 600]);
        let (c, _, _) = b.take_shared(600, &[0; 16]);
        b.seal();
        // Both allocations pinned: the next read needs a third.
        let two = b.allocated();
        b.extend_from_slice(&[b'z'; 600]);
        let (d, _, _) = b.take_shared(600, &[0; 16]);
        b.seal();
        assert_eq!(b.allocated(), two + INITIAL_CAPACITY, "a third allocation");
        assert_eq!(&a[..], &[b'x'; 600]);
        // The first is free again while the third is pinned: the next read reuses it.
        drop(a);
        let three = b.allocated();
        b.extend_from_slice(&[b'w'; 600]);
        assert_eq!(b.allocated(), three, "no new allocation");
        assert_eq!((&c[..], &d[..]), (&[b'y'; 600][..], &[b'z'; 600][..]));
    }

    #[test]
    fn sealed_allocations_kept_for_reuse_are_capped() {
        let mut b = ReadBuf::new(1 << 20);
        // A consumer that holds every event: each read pins its allocation.
        let held: Vec<Bytes> = (0..RETIRED_MAX + 2)
            .map(|_| {
                b.extend_from_slice(&[b'x'; 600]);
                let (event, _, _) = b.take_shared(600, &[0; 16]);
                b.seal();
                event
            })
            .collect();
        assert_eq!(
            b.allocated(),
            (1 + RETIRED_MAX) * INITIAL_CAPACITY + SPAN_CAPACITY,
            "the current allocation, the retired ones kept, the tables"
        );
        assert!(held.iter().all(|e| e[..] == [b'x'; 600]));
    }

    #[test]
    fn an_emptied_large_sealed_allocation_stays_counted_while_its_slices_live() {
        let mut b = ReadBuf::new(1 << 20);
        b.extend_from_slice(&[b'x'; 600]);
        let (first, _, _) = b.take_shared(600, &[0; 16]);
        b.seal();
        // A read past the shrink threshold, every byte of it cut out as events the
        // consumer still holds: the emptied buffer is sealed, not idle.
        b.extend_from_slice(&vec![b'y'; SHRINK_ABOVE + 4096]);
        let held: Vec<Bytes> =
            std::iter::from_fn(|| (!b.is_empty()).then(|| b.take_shared(4096, &[0; 16]).0))
                .collect();
        b.seal();
        let allocated = b.allocated();
        assert!(allocated > SHRINK_ABOVE + INITIAL_CAPACITY, "{allocated}");
        b.clear();
        assert_eq!(
            b.allocated(),
            allocated,
            "the sealed allocation and the retired one are still alive and counted"
        );
        assert_eq!(&first[..], &[b'x'; 600]);
        assert!(held.iter().all(|e| e.iter().all(|&x| x == b'y')));
    }

    #[test]
    fn a_large_message_in_a_sealed_allocation_is_copied_not_handed_the_allocation() {
        let mut b = ReadBuf::new(4 << 20);
        b.extend_from_slice(b"Event: A\r\n\r\n");
        b.extend_from_slice(&vec![b'x'; HAND_OVER_MIN]);
        let (a, _, _) = b.take_shared(12, &[0; 16]);
        // The read ends with the large message whole: its allocation is sealed, `a` lives.
        b.seal();
        let allocated = b.allocated();
        let m = b.take(HAND_OVER_MIN, &[]);
        assert_eq!(m.len(), HAND_OVER_MIN);
        assert_eq!(
            b.allocated(),
            allocated,
            "the sealed allocation is still the buffer's, and counted"
        );
        assert_eq!(&a[..], b"Event: A\r\n\r\n");
    }

    #[test]
    fn a_large_message_taken_while_the_read_shares_slices_is_copied_and_they_stay_pinned() {
        let mut b = ReadBuf::new(4 << 20);
        b.extend_from_slice(b"Event: A\r\n\r\n");
        b.extend_from_slice(&vec![b'x'; HAND_OVER_MIN]);
        let (a, _, _) = b.take_shared(12, &[0; 16]);
        let before = b.pinned();
        let m = b.take(HAND_OVER_MIN, &[]);
        assert_eq!(m.len(), HAND_OVER_MIN);
        assert_eq!(before.0, 12 + 16);
        assert_eq!(
            b.pinned(),
            before,
            "the read's slices are still counted as pinned"
        );
        assert_eq!(&a[..], b"Event: A\r\n\r\n");
    }

    #[test]
    fn a_reads_field_tables_get_a_quarter_of_the_read_buffers_size_at_once() {
        let mut b = ReadBuf::new(1 << 20);
        b.extend_from_slice(&vec![b'x'; 64 << 10]);
        let read = b.allocated();
        assert_eq!(read, 64 << 10);
        let (a, table, _) = b.take_shared(500, &[0; 16]);
        // Room for about a read's worth of tables: not one small arena after another.
        assert_eq!(b.allocated(), read + read / 4);
        assert_eq!((a.len(), table.len()), (500, 16));
    }

    #[test]
    fn a_message_of_the_share_limit_is_said_not_to_share_and_is_not_shared() {
        let mut b = ReadBuf::new(1 << 20);
        b.extend_from_slice(&vec![b'x'; SHARE_MAX + 10]);
        assert!(b.shares(SHARE_MAX - 1));
        assert!(!b.shares(SHARE_MAX));
        let (m, table, shared) = b.take_shared(SHARE_MAX, &[1, 2]);
        assert!(!shared);
        assert_eq!((m.len(), table.len()), (SHARE_MAX + 2, 0));
    }
}
