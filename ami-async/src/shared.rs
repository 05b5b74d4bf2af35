//! The state behind a session's handles, event stream and driver.
//!
//! Two locks, never held across an await and never running user code:
//! - the core lock ([`Shared`]): the [`Client`], action waiters, the published status. The
//!   driver takes it to feed reads and drain outputs; handles take it to send actions.
//! - the hand-off lock ([`Handoff`]): one batch of stream items on its way to the consumer.
//!   The consumer takes only this one on its fast path, for an O(1) swap.
//!
//! Lock order is core, then hand-off. The consumer never holds the hand-off lock while it
//! takes the core lock, so the reader never waits on the consumer's locks. (It may choose to
//! hold a read for a consumer that is behind but taking, at most `HOLD_READ` between takes
//! and `MAX_HOLD` in a row: see the driver.) Handles may also write a lone action themselves
//! under the core lock ([`Shared::write_direct`]).

use ami_proto::{ActionId, Client, DisconnectReason, Notice, Outcome, Output, Queued, Status};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::runtime::DirectWrite;

/// Most stream items moved to the consumer in one batch.
pub(crate) const BATCH_ITEMS: usize = 1024;
/// Most event bytes (wire size) moved to the consumer in one batch: the hand-off and the
/// consumer's buffer add at most two batches to what the core's bounded queue holds.
pub(crate) const BATCH_BYTES: usize = 256 << 10;

/// Locks a mutex whose data stays consistent between calls (no user code runs under these
/// locks, and every update is a single call into the core): a poisoned lock is used as is
/// rather than wedging every other caller.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One caller waiting for an action's outcome.
#[derive(Default)]
pub(crate) struct Waiter {
    pub(crate) outcome: Option<Outcome>,
    pub(crate) waker: Option<Waker>,
}

/// Where one [`Handle`](crate::Handle) caller waits for its action's outcome: a lock of its
/// own, so that a waiting caller polls without the core lock (one core lock per action, to
/// send it, instead of one per poll), and the driver fills it under the core lock.
#[derive(Default)]
pub(crate) struct Slot(Mutex<Waiter>, AtomicBool);

impl Slot {
    /// The outcome arrived: store it, and the caller's waker goes to `wake`.
    fn fill(&self, outcome: Outcome, wake: &mut Vec<Waker>) {
        let mut w = lock(&self.0);
        w.outcome = Some(outcome);
        wake.extend(w.waker.take());
    }

    /// The driver has stopped and no outcome will come.
    fn close(&self, wake: &mut Vec<Waker>) {
        let mut w = lock(&self.0);
        self.1.store(true, Ordering::SeqCst);
        wake.extend(w.waker.take());
    }

    /// The outcome, if it came and was not taken (the caller gave up once it had come).
    pub(crate) fn take(&self) -> Option<Outcome> {
        lock(&self.0).outcome.take()
    }

    /// The caller's side: the outcome, or `None` once the driver stopped without one.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Option<Outcome>> {
        let mut w = lock(&self.0);
        if let Some(outcome) = w.outcome.take() {
            return Poll::Ready(Some(outcome));
        }
        if self.1.load(Ordering::SeqCst) {
            return Poll::Ready(None);
        }
        match &mut w.waker {
            Some(old) if old.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Hashes the waiters' keys: ActionIds the core generated (a waiter is keyed by the ID
/// `send_action` returned and found with the ID of a `Completed` notice; the server never
/// chooses one), so a multiply-rotate hash is safe where SipHash defends against chosen
/// keys, at a fraction of its cost (two hashes per action).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // A product's low bits depend only on its factors' low bits, and the table picks
        // buckets by the low bits: fold the well-mixed high half in.
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.add(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// Everything under the core lock.
pub(crate) struct Shared {
    pub(crate) client: Client,
    /// Callers waiting for an outcome; a slot leaves the map when it is filled.
    pub(crate) waiters: HashMap<ActionId, Arc<Slot>, BuildHasherDefault<IdHasher>>,
    /// The driver has stopped for good (finished, or its future was dropped).
    pub(crate) driver_done: bool,
    pub(crate) status: Status,
    pub(crate) status_version: u64,
    pub(crate) status_wakers: HashMap<u64, Waker>,
    pub(crate) next_watch: u64,
    /// The connected stream's direct writer (plain TCP), for callers' new actions.
    pub(crate) direct: Option<Arc<dyn DirectWrite>>,
    /// The driver holds a copy of transmit bytes it has not finished writing: nobody else
    /// writes until it has (the bytes must go out in order).
    pub(crate) driver_writing: bool,
    /// When the driver's timer fires next (`None`: not armed).
    pub(crate) driver_timer: Option<Instant>,
}

impl Shared {
    /// Publishes the core's status if it changed; watchers to wake go to `wake`.
    pub(crate) fn publish_status(&mut self, wake: &mut Vec<Waker>) {
        let s = self.client.status();
        if s != self.status {
            self.set_status(s, wake);
        }
    }

    fn set_status(&mut self, s: Status, wake: &mut Vec<Waker>) {
        self.status = s;
        self.status_version += 1;
        wake.extend(self.status_wakers.drain().map(|(_, w)| w));
    }

    /// After a caller changed the core (a new action): writes what the core has to send from
    /// the caller's thread when the driver is not writing and the stream allows it, under
    /// this lock so that the bytes stay in order. True when the driver must still be woken:
    /// bytes are left, the core has outputs for it, or a deadline earlier than its timer.
    /// Only for a lone action: with others in flight the driver is awake for their answers
    /// anyway and writes many actions in one call, where a write per caller under this lock
    /// cost async-std a third of its Pings/s at 64 in flight.
    pub(crate) fn write_direct(&mut self) -> bool {
        if self.client.pending_actions() > 1 {
            return true;
        }
        let Some(writer) = self.direct.as_ref().filter(|_| !self.driver_writing) else {
            return true;
        };
        while !self.client.transmit().is_empty() {
            match writer.try_write(self.client.transmit()) {
                Ok(n) if n > 0 => self.client.advance_transmit(n),
                // Nothing taken, would block, or an error: the driver writes the rest (and
                // meets the error itself).
                _ => return true,
            }
        }
        let timer = self.driver_timer;
        self.client.has_output()
            || self
                .client
                .poll_timeout()
                .is_some_and(|d| timer.is_none_or(|t| d < t))
    }

    /// Hands an outcome to its waiter (none: the caller stopped waiting, its choice).
    pub(crate) fn complete(&mut self, id: &ActionId, outcome: Outcome, wake: &mut Vec<Waker>) {
        if let Some(slot) = self.waiters.remove(id) {
            slot.fill(outcome, wake);
        }
    }

    /// What an action meets once the driver is gone: the session's closing reason.
    pub(crate) fn closed_error(&self) -> crate::AmiError {
        let reason = match &self.status {
            Status::Closed { reason } => reason.clone(),
            _ => DisconnectReason::LocalClose,
        };
        crate::AmiError::Closed { reason }
    }

    /// The driver has stopped for good: waiters and status watchers learn it.
    pub(crate) fn finish(&mut self, wake: &mut Vec<Waker>) {
        if !matches!(self.status, Status::Closed { .. }) {
            // Only when the driver went away before the core closed.
            let reason = DisconnectReason::LocalClose;
            self.set_status(Status::Closed { reason }, wake);
        }
        self.driver_done = true;
        // The callers' writer shares the socket: the driver gone, nobody may keep it open.
        self.direct = None;
        self.driver_writing = false;
        for (_, slot) in self.waiters.drain() {
            slot.close(wake);
        }
        wake.extend(self.status_wakers.drain().map(|(_, w)| w));
    }

    /// Moves up to one batch (by items and bytes) from the core's queue to `out`, as
    /// [`Queued`] items: the consumer copies each event out on its own thread.
    pub(crate) fn take_batch(&mut self, out: &mut VecDeque<Queued>) {
        self.client.take_queued(out, BATCH_ITEMS, BATCH_BYTES);
    }
}

/// The batch on its way to the consumer, under the hand-off lock.
#[derive(Default)]
pub(crate) struct Handoff {
    pub(crate) items: VecDeque<Queued>,
    pub(crate) waker: Option<Waker>,
    /// The core still holds items the driver could not hand over (this batch was full):
    /// the consumer rings the bell when it takes the batch.
    pub(crate) backlog: bool,
    /// No more items will come.
    pub(crate) closed: bool,
    /// Batches the consumer has taken so far (the driver holds reads only for a consumer
    /// that keeps taking).
    pub(crate) takes: u64,
}

/// Wakes the driver: a flag and a waker outside the core lock, so that anyone can ring it
/// without waiting for the driver.
#[derive(Default)]
pub(crate) struct Bell {
    rung: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Bell {
    pub(crate) fn ring(&self) {
        if self.rung.swap(true, Ordering::SeqCst) {
            // Rung since the driver last looked: whoever rang first woke it (or found no
            // waker, and the driver sees the flag when it stores one). Callers woken
            // together ring once each; only the first takes the waker's lock.
            return;
        }
        let waker = lock(&self.waker).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Forgets a ring: the driver is about to look at everything a ring could announce.
    pub(crate) fn clear(&self) {
        self.rung.store(false, Ordering::SeqCst);
    }

    /// Whether a ring is waiting for the driver.
    #[cfg(test)]
    pub(crate) fn rung_for_test(&self) -> bool {
        self.rung.load(Ordering::SeqCst)
    }

    /// The driver's side: ready once rung since the last ready.
    pub(crate) fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rung.swap(false, Ordering::SeqCst) {
            return Poll::Ready(());
        }
        {
            let mut slot = lock(&self.waker);
            match &mut *slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        // A ring between the check and storing the waker found no waker: look again.
        if self.rung.swap(false, Ordering::SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// One session's state, shared by its handles, its event stream and its driver.
pub(crate) struct Inner {
    shared: Mutex<Shared>,
    pub(crate) handoff: Mutex<Handoff>,
    pub(crate) bell: Bell,
    /// Handles and event streams alive: the session closes when the last one goes. An
    /// explicit count, so that status watches and the driver's own references never count.
    users: AtomicUsize,
    /// The runtime's clock.
    pub(crate) now: fn() -> Instant,
    /// The target, for log records.
    pub(crate) what: String,
}

impl Inner {
    pub(crate) fn new(client: Client, now: fn() -> Instant, what: String) -> Arc<Inner> {
        let status = client.status();
        Arc::new(Inner {
            shared: Mutex::new(Shared {
                client,
                waiters: HashMap::default(),
                driver_done: false,
                status,
                status_version: 0,
                status_wakers: HashMap::new(),
                next_watch: 0,
                direct: None,
                driver_writing: false,
                driver_timer: None,
            }),
            handoff: Mutex::new(Handoff::default()),
            bell: Bell::default(),
            users: AtomicUsize::new(0),
            now,
            what,
        })
    }

    /// The core lock.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// The hand-off lock.
    pub(crate) fn handoff(&self) -> MutexGuard<'_, Handoff> {
        lock(&self.handoff)
    }

    /// Runs `f` on the core, then wakes the driver so that it acts on the change.
    pub(crate) fn with_client<R>(&self, f: impl FnOnce(&mut Client, Instant) -> R) -> R {
        let r = {
            let mut shared = self.lock();
            f(&mut shared.client, (self.now)())
        };
        self.bell.ring();
        r
    }

    pub(crate) fn add_user(&self) {
        self.users.fetch_add(1, Ordering::SeqCst);
    }

    /// The last user gone rings the driver, which then closes the session.
    pub(crate) fn drop_user(&self) {
        if self.users.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.bell.ring();
        }
    }

    pub(crate) fn has_users(&self) -> bool {
        self.users.load(Ordering::SeqCst) > 0
    }

    /// The driver stopped, for good or because its future was dropped: close the core, hand
    /// the consumer what is left, and tell every waiter, watcher and the consumer.
    pub(crate) fn finish(&self) {
        let mut wake = Vec::new();
        let mut shared = self.lock();
        if shared.driver_done {
            return;
        }
        let now = (self.now)();
        // A driver dropped mid-run took its copy of lent bytes with it: what the copy held
        // never left, and the close fails those actions `NotSent`. (After a driver that ran
        // to its end the core is closed already, and this does nothing.)
        shared.client.unlend_transmit();
        shared.client.close(now);
        // Outcomes the close produced (NotSent, Unknown) still reach their callers.
        loop {
            match shared.client.poll_output() {
                Output::Notice(Notice::Completed { id, outcome }) => {
                    shared.complete(&id, outcome, &mut wake)
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
        shared.publish_status(&mut wake);
        shared.finish(&mut wake);
        let mut h = self.handoff();
        while shared.client.has_stream_items() {
            shared.take_batch(&mut h.items);
        }
        h.closed = true;
        h.backlog = false;
        wake.extend(h.waker.take());
        drop(h);
        drop(shared);
        wake.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn id_hashes_of_consecutive_action_ids_spread_over_the_low_bits() {
        // A table of 64 buckets picks by the low 6 bits: 640 consecutive IDs (same prefix,
        // counters differing in their last digits) must land in nearly every bucket.
        let build = BuildHasherDefault::<IdHasher>::default();
        let mut buckets = [0u32; 64];
        for n in 1_000..1_640 {
            let id = ActionId::new(&format!("k3j9x0ab-{n}")).unwrap_or_else(|e| panic!("{e}"));
            buckets[(build.hash_one(&id) & 63) as usize] += 1;
        }
        let empty = buckets.iter().filter(|&&b| b == 0).count();
        let fullest = buckets.iter().max().copied().unwrap_or(0);
        assert!(
            empty <= 4 && fullest <= 30,
            "empty {empty}, fullest {fullest}"
        );
    }
}
