//! [`Events`]: the event stream, handed over in batches.
//!
//! The driver moves up to one batch (by items and bytes) from the core's bounded queue into
//! the hand-off whenever the hand-off is empty, and wakes the consumer once per batch. The
//! consumer swaps the whole batch into its own buffer under the hand-off lock (O(1)) and
//! hands items out from there without any lock. So a consumer reading one item at a time
//! costs a queue pop per item, and the driver decodes without ever waiting on it: when the
//! consumer is behind, items stay in the core's queue, where the overflow policy applies and
//! gaps are counted.

use crate::shared::{Handoff, Inner};
use ami_proto::{Queued, StreamItem};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The event stream of one session: events in order, and gap notices where the bounded
/// queue dropped events because this consumer was behind. Receiving never slows the reader.
/// Also a [`futures_core::Stream`], so `StreamExt` from futures or futures-lite works.
///
/// Up to two batches (1024 items or 256 KiB each) sit outside the core's queue: one in the
/// hand-off, one in this stream's buffer.
///
/// A program that only sends actions may drop it (`let (ami, _) = ...`): from then on the
/// session keeps no events (each one counted in `Stats::events_dropped`, one log line says
/// so), while lists and async Originates still complete.
pub struct Events {
    pub(crate) inner: Arc<Inner>,
    /// Items handed over, each event still a slice of the driver's read buffer: copied out
    /// ([`Queued::into_item`]) as it is received, so that the consumer's thread both
    /// allocates and frees it.
    pub(crate) local: VecDeque<Queued>,
}

impl Events {
    pub(crate) fn new(inner: &Arc<Inner>) -> Events {
        inner.add_user();
        Events {
            inner: inner.clone(),
            local: VecDeque::new(),
        }
    }

    /// Refills the local buffer from the hand-off. Ready(true): items; Ready(false): the
    /// stream has ended; Pending: the waker is registered.
    fn poll_refill(&mut self, cx: Option<&mut Context<'_>>) -> Poll<bool> {
        let mut h = self.inner.handoff();
        if !h.items.is_empty() {
            let ring = take_handed_over(&mut self.local, &mut h);
            drop(h);
            if ring {
                self.inner.bell.ring();
            }
            return Poll::Ready(true);
        }
        if h.closed {
            return Poll::Ready(false);
        }
        if let Some(cx) = cx {
            match &mut h.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }

    /// Polls for the next item; `Ready(None)` once the session has closed and everything
    /// was received.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<StreamItem>> {
        if let Some(item) = self.local.pop_front() {
            return Poll::Ready(Some(item.into_item()));
        }
        match self.poll_refill(Some(cx)) {
            Poll::Ready(true) => Poll::Ready(self.local.pop_front().map(Queued::into_item)),
            Poll::Ready(false) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next item; `None` once the session has closed and everything was received.
    /// Cancel-safe: a `recv` dropped before it returned (a `select!` that took another
    /// branch, a timeout) took nothing, and the next one returns what it would have.
    pub async fn recv(&mut self) -> Option<StreamItem> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Moves up to `max` items into `out` (waiting for at least one); returns how many, 0
    /// once the session has closed and everything was received (or when `max` is 0).
    /// Cancel-safe, as [`recv`](Self::recv) is.
    pub async fn recv_many(&mut self, out: &mut Vec<StreamItem>, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        poll_fn(|cx| {
            if self.local.is_empty() {
                match self.poll_refill(Some(cx)) {
                    Poll::Ready(true) => {}
                    Poll::Ready(false) => return Poll::Ready(0),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let n = max.min(self.local.len());
            out.extend(self.local.drain(..n).map(Queued::into_item));
            Poll::Ready(n)
        })
        .await
    }

    /// The next item if one is queued (handed over, or still in the core's queue).
    pub fn try_recv(&mut self) -> Option<StreamItem> {
        if let Some(item) = self.local.pop_front() {
            return Some(item.into_item());
        }
        if self.poll_refill(None).is_ready() {
            return self.local.pop_front().map(Queued::into_item);
        }
        // Nothing handed over yet: take a batch from the core directly, in lock order (core,
        // then hand-off, whose batch, if the driver filled it meanwhile, is the older one).
        let ring = {
            let mut shared = self.inner.lock();
            let mut h = self.inner.handoff();
            if !h.items.is_empty() {
                take_handed_over(&mut self.local, &mut h)
            } else {
                // A driver that holds its reads for this consumer (the core's queue past its
                // read-ahead) reads again once it hears of the take, not when its hold runs
                // out; and the take counts, so a hold that runs out finds no stall.
                let holding = !shared.client.wants_read();
                shared.take_batch(&mut self.local);
                let took = !self.local.is_empty();
                if took {
                    h.takes += 1;
                }
                took && holding
            }
        };
        if ring {
            self.inner.bell.ring();
        }
        self.local.pop_front().map(Queued::into_item)
    }
}

/// Moves the hand-off's batch into `local` (the emptied local buffer goes back, so its
/// allocation is reused) and counts the take. True when the driver left items in the core
/// because this batch was still here: it must be rung to hand the next one over.
fn take_handed_over(local: &mut VecDeque<Queued>, h: &mut Handoff) -> bool {
    std::mem::swap(local, &mut h.items);
    h.takes += 1;
    std::mem::take(&mut h.backlog)
}

impl futures_core::Stream for Events {
    type Item = StreamItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamItem>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // Nobody reads this session's events any more (`let (ami, _) = spawn(..)` in a
        // program that only sends actions): the core keeps none of them from here on
        // (counted as dropped), so the session does not sit on a full queue of events for
        // nobody.
        // Under the core lock, so the driver cannot hand over another batch meanwhile: the
        // batch in the hand-off and this stream's own buffer go back to the core, which
        // counts their events as dropped.
        let local = std::mem::take(&mut self.local);
        {
            let mut shared = self.inner.lock();
            let handed = std::mem::take(&mut self.inner.handoff().items);
            shared
                .client
                .close_event_stream(handed.into_iter().chain(local));
        }
        self.inner.bell.ring();
        self.inner.drop_user();
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("buffered", &self.local.len())
            .finish_non_exhaustive()
    }
}
