//! The decoder's read buffer, managed so that a message handed out never pins more memory
//! than its own bytes.
//!
//! A message cut out of a shared buffer as a slice (`BytesMut::split_to`) keeps the whole
//! allocation alive as long as it lives: one small event kept by a slow consumer held a
//! 64 KiB+ read buffer, and a queue of them held gigabytes. Here a message either is copied
//! out (small ones: one `memcpy` of its own size), or, when it is large and fills the front
//! of the buffer, takes the allocation itself, trimmed to its length, and the few bytes read
//! past it move to a fresh buffer. Either way [`Message`](super::message::Message) bytes are
//! exactly their own allocation, so counting `len()` counts the memory.

use bytes::Bytes;
use std::ops::Deref;

/// First allocation; the buffer grows on demand up to the decoder's cap.
const INITIAL_CAPACITY: usize = 16 << 10;
/// Messages at least this long that start at the front of the buffer take the allocation
/// instead of being copied: copying them would briefly double the peak for large messages.
const HAND_OVER_MIN: usize = 64 << 10;
/// An empty buffer larger than this is given back after a large message, so one 16 MiB
/// message does not keep 16 MiB allocated for the rest of the session.
const SHRINK_ABOVE: usize = 256 << 10;

/// Bytes read and not yet consumed: `vec[start..]`.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    vec: Vec<u8>,
    start: usize,
    /// Most bytes ever held (the decoder's `buffer_cap`); growth never allocates past it.
    cap: usize,
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.vec[self.start..]
    }
}

impl ReadBuf {
    pub(crate) fn new(cap: usize) -> ReadBuf {
        ReadBuf {
            vec: Vec::with_capacity(INITIAL_CAPACITY.min(cap)),
            start: 0,
            cap,
        }
    }

    /// Bytes allocated (what the buffer costs in memory, whatever it holds).
    pub(crate) fn allocated(&self) -> usize {
        self.vec.capacity()
    }

    /// Appends `input`; the caller keeps `len() + input.len()` within the cap.
    pub(crate) fn extend_from_slice(&mut self, input: &[u8]) {
        if self.vec.capacity() - self.vec.len() < input.len() {
            self.compact();
            let needed = self.vec.len() + input.len();
            if self.vec.capacity() < needed {
                // Double, but never allocate past the cap: worst-case memory is the cap.
                let target = needed.max(self.vec.capacity().saturating_mul(2).min(self.cap));
                self.vec.reserve_exact(target - self.vec.len());
            }
        }
        self.vec.extend_from_slice(input);
    }

    /// Moves the unconsumed bytes to the front so the free space is all at the end.
    fn compact(&mut self) {
        if self.start > 0 {
            self.vec.copy_within(self.start.., 0);
            self.vec.truncate(self.vec.len() - self.start);
            self.start = 0;
        }
    }

    /// Drops the first `n` bytes.
    pub(crate) fn advance(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.vec.len());
        if self.start == self.vec.len() {
            self.vec.clear();
            self.start = 0;
            if self.vec.capacity() > SHRINK_ABOVE {
                self.vec = Vec::with_capacity(INITIAL_CAPACITY.min(self.cap));
            }
        }
    }

    /// Removes the first `n` bytes and returns them as `Bytes` that own exactly their
    /// allocation (see the module docs).
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len());
        if n < HAND_OVER_MIN || self.start > 0 {
            let bytes = Bytes::copy_from_slice(&self[..n]);
            self.advance(n);
            return bytes;
        }
        let rest = self.vec[n..].to_vec();
        let mut fresh = Vec::with_capacity(INITIAL_CAPACITY.min(self.cap).max(rest.len()));
        fresh.extend_from_slice(&rest);
        let mut taken = std::mem::replace(&mut self.vec, fresh);
        taken.truncate(n);
        // Shrinking a large allocation is done in place by the allocator: no copy.
        taken.shrink_to_fit();
        Bytes::from(taken)
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
        let a = b.take(12);
        assert_eq!(&a[..], b"Event: A\r\n\r\n");
        assert_eq!(&b[..], b"Event: B\r\n");
        // A copy: the read buffer's allocation is not shared with `a`.
        let before = b.allocated();
        drop(a);
        assert_eq!(b.allocated(), before);
    }

    #[test]
    fn large_message_at_the_front_takes_the_allocation_trimmed() {
        let mut b = ReadBuf::new(1 << 20);
        let big = vec![b'x'; HAND_OVER_MIN * 2];
        b.extend_from_slice(&big);
        b.extend_from_slice(b"tail");
        let m = b.take(big.len());
        assert_eq!(m.len(), big.len());
        assert_eq!(&b[..], b"tail");
        assert!(b.allocated() <= INITIAL_CAPACITY, "a fresh small buffer");
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
}
