//! The bounded event queue between the reader and the consumer, with its overflow policy.

use super::config::OverflowPolicy;
use super::output::StreamItem;
use crate::wire::message::Message;
use std::collections::VecDeque;

/// Result of offering an event to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    /// Dropped (or displaced an older one): counted.
    Dropped,
    /// The policy says close the session.
    Overflow,
}

/// Holds at most `cap` events plus gap markers (at most one per accepted event, merged).
#[derive(Debug)]
pub(crate) struct EventQueue {
    items: VecDeque<StreamItem>,
    events: usize,
    cap: usize,
    policy: OverflowPolicy,
    /// Events dropped from the front (drop-oldest), reported before the next item.
    leading_gap: u64,
    /// Events dropped at the back (drop-newest), reported after the queued items.
    trailing_gap: u64,
    /// Drops in the current overflow episode, for one log line per episode.
    episode: u64,
    pub(crate) dropped_total: u64,
}

impl EventQueue {
    pub(crate) fn new(cap: usize, policy: OverflowPolicy) -> EventQueue {
        EventQueue {
            items: VecDeque::new(),
            events: 0,
            cap,
            policy,
            leading_gap: 0,
            trailing_gap: 0,
            episode: 0,
            dropped_total: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.events
    }

    /// True when [`pop`](Self::pop) has something: an item or a gap not yet reported.
    pub(crate) fn has_items(&self) -> bool {
        !self.items.is_empty() || self.leading_gap > 0 || self.trailing_gap > 0
    }

    pub(crate) fn offer(&mut self, event: Message) -> Offer {
        if self.events < self.cap {
            if self.trailing_gap > 0 {
                self.items.push_back(StreamItem::Gap {
                    dropped: self.trailing_gap,
                });
                self.trailing_gap = 0;
            }
            self.end_episode();
            self.items.push_back(StreamItem::Event(event));
            self.events += 1;
            return Offer::Queued;
        }
        match self.policy {
            OverflowPolicy::CloseSession => return Offer::Overflow,
            OverflowPolicy::DropNewest => self.trailing_gap += 1,
            OverflowPolicy::DropOldest => {
                self.pop_front_event();
                self.leading_gap += 1;
                self.items.push_back(StreamItem::Event(event));
                self.events += 1;
            }
        }
        self.dropped_total += 1;
        if self.episode == 0 {
            log::warn!(
                "AMI event queue full ({} events): consumer is behind, dropping events ({:?})",
                self.cap,
                self.policy
            );
        }
        self.episode += 1;
        Offer::Dropped
    }

    fn end_episode(&mut self) {
        if self.episode > 0 {
            log::warn!(
                "AMI event queue has room again; {} events were dropped",
                self.episode
            );
            self.episode = 0;
        }
    }

    /// Removes the oldest event; a gap marker at the front absorbs it.
    fn pop_front_event(&mut self) {
        while let Some(item) = self.items.pop_front() {
            match item {
                StreamItem::Event(_) => {
                    self.events -= 1;
                    return;
                }
                StreamItem::Gap { dropped } => self.leading_gap += dropped,
            }
        }
    }

    pub(crate) fn pop(&mut self) -> Option<StreamItem> {
        if self.leading_gap > 0 {
            let dropped = std::mem::take(&mut self.leading_gap);
            return Some(StreamItem::Gap { dropped });
        }
        match self.items.pop_front() {
            Some(item) => {
                if matches!(item, StreamItem::Event(_)) {
                    self.events -= 1;
                }
                Some(item)
            }
            None if self.trailing_gap > 0 => {
                let dropped = std::mem::take(&mut self.trailing_gap);
                self.end_episode();
                Some(StreamItem::Gap { dropped })
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decoder, DecoderLimits, Frame};

    fn ev(n: u32) -> Message {
        let mut d = Decoder::without_banner(DecoderLimits::default());
        d.feed(format!("Event: E{n}\r\n\r\n").as_bytes());
        match d.decode() {
            Some(Ok(Frame::Message(m))) => m,
            _ => unreachable!(),
        }
    }

    fn drain(q: &mut EventQueue) -> Vec<String> {
        std::iter::from_fn(|| q.pop())
            .map(|i| match i {
                StreamItem::Event(m) => m.event().unwrap_or("?").to_string(),
                StreamItem::Gap { dropped } => format!("gap{dropped}"),
            })
            .collect()
    }

    #[test]
    fn drop_oldest_reports_gap_before_survivors() {
        let mut q = EventQueue::new(3, OverflowPolicy::DropOldest);
        for n in 0..5 {
            q.offer(ev(n));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(drain(&mut q), ["gap2", "E2", "E3", "E4"]);
        assert_eq!(q.dropped_total, 2);
    }

    #[test]
    fn drop_newest_reports_gap_after_survivors() {
        let mut q = EventQueue::new(2, OverflowPolicy::DropNewest);
        for n in 0..5 {
            q.offer(ev(n));
        }
        assert_eq!(drain(&mut q), ["E0", "E1", "gap3"]);
        q.offer(ev(9));
        assert_eq!(drain(&mut q), ["E9"]);
    }

    #[test]
    fn drop_newest_gap_sits_between_old_and_new_events() {
        let mut q = EventQueue::new(2, OverflowPolicy::DropNewest);
        for n in 0..4 {
            q.offer(ev(n));
        }
        assert_eq!(q.pop(), Some(StreamItem::Event(ev(0))));
        q.offer(ev(7));
        assert_eq!(drain(&mut q), ["E1", "gap2", "E7"]);
    }

    #[test]
    fn close_session_policy_asks_to_close() {
        let mut q = EventQueue::new(1, OverflowPolicy::CloseSession);
        assert_eq!(q.offer(ev(0)), Offer::Queued);
        assert_eq!(q.offer(ev(1)), Offer::Overflow);
    }
}
