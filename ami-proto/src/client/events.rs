//! The bounded event queue between the reader and the consumer, with its overflow policy,
//! gap notices and session boundaries.

use super::config::OverflowPolicy;
use super::output::{DisconnectReason, StreamItem};
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

/// Holds at most `cap` events, marks of completed marked actions (at most `cap`, enforced by
/// the client when it accepts a marked action) and notices (gaps and session boundaries).
///
/// Notices and marks never displace events and are never dropped; instead every run of
/// notices between two events or marks is kept in a canonical form of at most seven items
/// (see [`fold`]), so a consumer that stalls across many reconnects costs a bounded queue:
/// at most `2 * cap` events and marks plus `7 * (2 * cap + 1)` notices.
#[derive(Debug)]
pub(crate) struct EventQueue {
    items: VecDeque<StreamItem>,
    events: usize,
    /// Marks waiting in `items` (bounded by the client, which refuses marked actions).
    marks: usize,
    cap: usize,
    policy: OverflowPolicy,
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
            marks: 0,
            cap,
            policy,
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
        !self.items.is_empty() || self.trailing_gap > 0
    }

    pub(crate) fn offer(&mut self, event: Message) -> Offer {
        if self.events < self.cap {
            self.flush_trailing_gap();
            self.end_episode();
            self.items.push_back(StreamItem::Event(event));
            self.events += 1;
            return Offer::Queued;
        }
        match self.policy {
            OverflowPolicy::CloseSession => return Offer::Overflow,
            OverflowPolicy::DropNewest => self.trailing_gap += 1,
            OverflowPolicy::DropOldest => {
                self.drop_oldest_event();
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

    pub(crate) fn marks(&self) -> usize {
        self.marks
    }

    /// A marked action completed here.
    pub(crate) fn mark(&mut self, mark: u64) {
        self.flush_trailing_gap();
        self.items.push_back(StreamItem::Mark { mark });
        self.marks += 1;
    }

    /// A session came up: events after this marker are from it.
    pub(crate) fn session_ready(&mut self, ami_version: String) {
        self.push_marker(StreamItem::Ready { ami_version });
    }

    /// The session was lost: events the server sends until the next `Ready` are missed.
    pub(crate) fn session_lost(&mut self, reason: DisconnectReason) {
        self.push_marker(StreamItem::Disconnected { reason });
    }

    fn push_marker(&mut self, marker: StreamItem) {
        self.flush_trailing_gap();
        self.items.push_back(marker);
        let end = self.items.len();
        self.fold_run(end);
    }

    fn flush_trailing_gap(&mut self) {
        if self.trailing_gap > 0 {
            let dropped = std::mem::take(&mut self.trailing_gap);
            self.items.push_back(StreamItem::Gap { dropped });
        }
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

    /// Removes the oldest event, leaving a gap notice where it was (after any markers that
    /// came before it in the stream).
    fn drop_oldest_event(&mut self) {
        let Some(at) = self
            .items
            .iter()
            .position(|i| matches!(i, StreamItem::Event(_)))
        else {
            return;
        };
        self.items[at] = StreamItem::Gap { dropped: 1 };
        self.events -= 1;
        // The run of markers now reaches to the next event.
        let end = self.items.iter().skip(at).position(splits_runs);
        let end = end.map_or(self.items.len(), |n| at + n);
        self.fold_run(end);
    }

    /// Puts the run of markers that ends just before `end` in canonical form.
    fn fold_run(&mut self, end: usize) {
        let start = self
            .items
            .range(..end)
            .rposition(splits_runs)
            .map_or(0, |n| n + 1);
        if end - start < 2 {
            return;
        }
        let run: Vec<StreamItem> = self.items.drain(start..end).collect();
        for (n, item) in fold(run).into_iter().enumerate() {
            self.items.insert(start + n, item);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<StreamItem> {
        match self.items.pop_front() {
            Some(item) => {
                match item {
                    StreamItem::Event(_) => self.events -= 1,
                    StreamItem::Mark { .. } => self.marks -= 1,
                    _ => {}
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

/// The canonical form of a run of markers (no events between them), in stream order:
/// adjacent gaps add up; a session that came back after an outage and was lost again before
/// it delivered any event (`Disconnected`, `Ready`, `Disconnected`) folds into that outage:
/// its gaps move in front of the outage and its loss reason is dropped (the run keeps the
/// first loss: where the consumer started missing events). Counts are preserved; the result
/// has at most seven items (`[Gap] [Ready] [Gap] [Disconnected] [Gap] [Ready] [Gap]`).
fn fold(run: Vec<StreamItem>) -> Vec<StreamItem> {
    let is_down = |i: &StreamItem| matches!(i, StreamItem::Disconnected { .. });
    let is_up = |i: &StreamItem| matches!(i, StreamItem::Ready { .. });
    let mut out: Vec<StreamItem> = Vec::with_capacity(8);
    for item in run {
        match item {
            StreamItem::Gap { dropped } => match out.last_mut() {
                Some(StreamItem::Gap { dropped: d }) => *d += dropped,
                _ => out.push(StreamItem::Gap { dropped }),
            },
            StreamItem::Disconnected { reason } => {
                let Some(down) = out.iter().position(is_down) else {
                    out.push(StreamItem::Disconnected { reason });
                    continue;
                };
                let Some(up) = out[down..].iter().position(is_up) else {
                    continue; // two losses with no session between them cannot happen
                };
                let moved: u64 = out.drain(down + up..).map(|i| gap_of(&i)).sum();
                if moved > 0 {
                    match down.checked_sub(1).and_then(|g| out.get_mut(g)) {
                        Some(StreamItem::Gap { dropped }) => *dropped += moved,
                        _ => out.insert(down, StreamItem::Gap { dropped: moved }),
                    }
                }
                log::debug!("AMI: a session lost before it delivered an event folded into the outage before it ({reason})");
            }
            other => out.push(other),
        }
    }
    out
}

/// Events and marks end a run of foldable markers: a mark is an answer the consumer waits
/// for, so the session it arrived in is never folded away.
fn splits_runs(item: &StreamItem) -> bool {
    matches!(item, StreamItem::Event(_) | StreamItem::Mark { .. })
}

fn gap_of(item: &StreamItem) -> u64 {
    match item {
        StreamItem::Gap { dropped } => *dropped,
        _ => 0,
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
                StreamItem::Ready { .. } => "up".to_string(),
                StreamItem::Disconnected { reason } => format!("down:{reason}"),
                StreamItem::Mark { mark } => format!("mark{mark}"),
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
    fn session_boundaries_sit_between_events_in_stream_order() {
        let mut q = EventQueue::new(8, OverflowPolicy::DropNewest);
        q.session_ready("11.0.0".into());
        q.offer(ev(0));
        q.session_lost(DisconnectReason::Eof);
        q.session_ready("11.0.0".into());
        q.offer(ev(1));
        assert_eq!(drain(&mut q), ["up", "E0", "down:eof", "up", "E1"]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_gap_before_a_loss_is_reported_before_it() {
        let mut q = EventQueue::new(1, OverflowPolicy::DropNewest);
        q.offer(ev(0));
        q.offer(ev(1));
        q.session_lost(DisconnectReason::HeartbeatTimeout);
        assert_eq!(drain(&mut q), ["E0", "gap1", "down:heartbeat_timeout"]);
    }

    #[test]
    fn drop_oldest_drops_events_never_boundaries() {
        let mut q = EventQueue::new(2, OverflowPolicy::DropOldest);
        q.session_ready("v".into());
        q.offer(ev(0));
        q.session_lost(DisconnectReason::Eof);
        q.session_ready("v".into());
        for n in 1..=3 {
            q.offer(ev(n));
        }
        assert_eq!(
            drain(&mut q),
            ["up", "gap1", "down:eof", "up", "gap1", "E2", "E3"]
        );
        assert_eq!(q.dropped_total, 2);
    }

    #[test]
    fn a_session_lost_before_any_event_folds_into_the_outage_before_it() {
        let mut q = EventQueue::new(4, OverflowPolicy::DropNewest);
        q.offer(ev(0));
        q.session_lost(DisconnectReason::Eof);
        q.session_ready("v".into());
        q.session_lost(DisconnectReason::HeartbeatTimeout);
        q.session_ready("v".into());
        q.offer(ev(1));
        assert_eq!(drain(&mut q), ["E0", "down:eof", "up", "E1"]);
    }

    /// A consumer that never reads, across many reconnects with events in every session:
    /// the queue stays within its bound and every event is either queued or counted.
    #[test]
    fn stalled_consumer_across_many_reconnects_stays_bounded_and_counted() {
        for policy in [OverflowPolicy::DropNewest, OverflowPolicy::DropOldest] {
            let cap = 5;
            let mut q = EventQueue::new(cap, policy);
            let mut offered = 0u64;
            for cycle in 0..5_000u32 {
                q.session_ready("v".into());
                for n in 0..(cycle % 4) {
                    q.offer(ev(n));
                    offered += 1;
                }
                q.session_lost(DisconnectReason::Eof);
                assert!(
                    q.items.len() <= 8 * cap + 7,
                    "{policy:?}: {}",
                    q.items.len()
                );
            }
            let items: Vec<StreamItem> = std::iter::from_fn(|| q.pop()).collect();
            let events = items
                .iter()
                .filter(|i| matches!(i, StreamItem::Event(_)))
                .count();
            let gaps: u64 = items.iter().map(gap_of).sum();
            assert_eq!(events as u64 + gaps, offered, "{policy:?}");
            assert_eq!(gaps, q.dropped_total, "{policy:?}");
            // Never a Ready directly followed by a loss after an earlier loss in one run.
            assert!(matches!(
                items.last(),
                Some(StreamItem::Disconnected { .. })
            ));
        }
    }

    #[test]
    fn marks_are_never_dropped_and_keep_a_session_from_folding() {
        let mut q = EventQueue::new(1, OverflowPolicy::DropOldest);
        q.session_lost(DisconnectReason::Eof);
        q.session_ready("v".into());
        q.mark(3);
        q.session_lost(DisconnectReason::Eof);
        q.offer(ev(0));
        q.offer(ev(1));
        assert_eq!(q.marks(), 1);
        assert_eq!(
            drain(&mut q),
            ["down:eof", "up", "mark3", "down:eof", "gap1", "E1"]
        );
        assert_eq!(q.marks(), 0);
    }

    #[test]
    fn close_session_policy_asks_to_close() {
        let mut q = EventQueue::new(1, OverflowPolicy::CloseSession);
        assert_eq!(q.offer(ev(0)), Offer::Queued);
        assert_eq!(q.offer(ev(1)), Offer::Overflow);
    }
}
