//! The bounded event queue between the reader and the consumer, with its overflow policy,
//! gap notices, discarded-input notices and session boundaries.
//!
//! Bounded twice: in events (`event_queue_cap`) and in bytes (`event_queue_bytes`, counting
//! what each message keeps alive: [`Message::retained_bytes`]).

use super::config::OverflowPolicy;
use super::output::{Discard, DisconnectReason, StreamItem};
use super::who::Who;
use crate::wire::action::ActionId;
use crate::wire::message::Message;
use std::collections::VecDeque;
use std::sync::Arc;

/// Overflow episodes since the client last looked ([`EventQueue::take_overflow_news`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverflowNews {
    /// An episode started: the queue as it was when it filled.
    pub(crate) started: Option<Full>,
    /// Episodes that ended (the consumer made room), and the events they dropped.
    pub(crate) ended: u64,
    pub(crate) ended_dropped: u64,
}

/// The queue when an overflow episode started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
    pub(crate) byte_cap: usize,
    pub(crate) policy: OverflowPolicy,
}

/// A stream item taken from the client's queue with [`Client::poll_queued`]: an event in
/// it may still be a slice of the buffer it was read into (the reader allocates nothing per
/// event). [`into_item`](Self::into_item) gives the [`StreamItem`], copying such an event
/// into allocations of its own, so that a message an application holds never keeps a read
/// buffer alive. Call it on the thread that will use (and drop) the item.
///
/// [`Client::poll_queued`]: crate::Client::poll_queued
#[derive(Debug)]
pub struct Queued(pub(crate) StreamItem);

impl Queued {
    /// The item, its event (if any) in allocations of its own.
    pub fn into_item(self) -> StreamItem {
        let mut item = self.0;
        if let StreamItem::Event(m) = &mut item {
            m.detach();
        }
        item
    }

    /// Wire bytes of the event (or late answer) in this item (0 for a notice): what a batch
    /// of items costs.
    pub fn wire_len(&self) -> usize {
        match &self.0 {
            StreamItem::Event(m) => m.wire_bytes().len(),
            StreamItem::LateAnswer { response, .. } => response.wire_bytes().len(),
            _ => 0,
        }
    }
}

/// Moves up to `max` items from `next` into `out`; returns how many: the batch calls of a
/// client's stream and of a fleet's merged stream.
pub(crate) fn take_into<T>(
    out: &mut Vec<T>,
    max: usize,
    mut next: impl FnMut() -> Option<T>,
) -> usize {
    let before = out.len();
    while out.len() - before < max {
        match next() {
            Some(item) => out.push(item),
            None => break,
        }
    }
    out.len() - before
}

/// The largest queue buffer, in batches of `max_items`, that [`EventQueue::take_batch`]
/// hands over whole.
const HANDOVER_CAPACITY_BATCHES: usize = 8;

/// Result of offering an event to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    /// Dropped (or displaced an older one): counted.
    Dropped,
    /// The policy says close the session.
    Overflow,
    /// Nobody reads the stream ([`EventQueue::close_reader`]): discarded, counted.
    Unread,
}

/// An event Asterisk writes to a session right after its login's Success, before any
/// filter of that session can exist: every session receives it, so one that installs its
/// filters after login is given it at its Ready rather than counting it as lost at every
/// login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginEvent {
    /// `Event: FullyBooted` (the system class).
    FullyBooted,
    /// `Event: SuccessfulAuth` naming this session's own account (the security class).
    SuccessfulAuth,
}

/// Holds at most `cap` events and late answers (counted together, as `events`), marks of completed marked actions (at most `cap`, enforced by
/// the client when it accepts a marked action) and notices (gaps and session boundaries).
///
/// Notices and marks never displace events and are never dropped; instead every run of
/// notices between two events or marks is kept in a canonical form (see [`fold`]): at most
/// seven boundaries and gaps, plus one discard notice per reason in each of the four
/// segments between boundaries. So a consumer that stalls across many reconnects, or under a
/// flood of bad input, costs a bounded queue.
#[derive(Debug)]
pub(crate) struct EventQueue {
    /// As [`Queued`], so that a whole queue can be handed over at once
    /// ([`take_batch`](Self::take_batch)).
    items: VecDeque<Queued>,
    events: usize,
    /// Sum of `retained_bytes` of the queued events.
    bytes: usize,
    byte_cap: usize,
    /// Marks waiting in `items` (bounded by the client, which refuses marked actions).
    marks: usize,
    cap: usize,
    policy: OverflowPolicy,
    /// Events dropped at the back (drop-newest), reported after the queued items.
    trailing_gap: u64,
    /// Drops in the current overflow episode.
    episode: u64,
    /// Overflow episodes started and ended since the client last took them
    /// ([`take_overflow_news`](Self::take_overflow_news)), for its rate-limited log.
    news: OverflowNews,
    pub(crate) dropped_total: u64,
    /// Events queued so far (a running count, so the client finds those of one read).
    pushed: u64,
    /// The login's own events (`FullyBooted`, `SuccessfulAuth`), waiting for the session's
    /// Ready while filters are installed: at most one of each kind (each its own
    /// allocation), in arrival order, so the queue stays bounded.
    held: Vec<(LoginEvent, Message)>,
    /// The application will never read the stream: nothing is queued any more.
    unread: bool,
    /// The client's name, for its log records ([`Who`]).
    name: Option<Arc<str>>,
}

impl EventQueue {
    pub(crate) fn new(
        cap: usize,
        byte_cap: usize,
        policy: OverflowPolicy,
        name: Option<Arc<str>>,
    ) -> EventQueue {
        EventQueue {
            items: VecDeque::new(),
            events: 0,
            bytes: 0,
            byte_cap,
            marks: 0,
            cap,
            policy,
            trailing_gap: 0,
            episode: 0,
            news: OverflowNews::default(),
            dropped_total: 0,
            pushed: 0,
            held: Vec::new(),
            unread: false,
            name,
        }
    }

    /// How this queue's log records name the client.
    fn who(&self) -> Who<'_> {
        Who(self.name.as_deref())
    }

    /// Nobody will read the stream again (the application dropped it): what is queued is
    /// freed now, its events counted as dropped, and from here on events are discarded as
    /// they come (counted) and markers and marks are not kept. Returns the events freed.
    pub(crate) fn close_reader(&mut self) -> u64 {
        let freed = self.events as u64 + self.held.len() as u64;
        self.items = VecDeque::new();
        (self.events, self.bytes, self.marks) = (0, 0, 0);
        // Events of a trailing gap were counted when they were dropped.
        self.trailing_gap = 0;
        self.episode = 0;
        self.held = Vec::new();
        self.dropped_total += freed;
        self.unread = true;
        freed
    }

    /// `n` events taken out of the queue that nobody will read: counted as dropped.
    pub(crate) fn count_unread(&mut self, n: u64) {
        self.dropped_total += n;
    }

    /// Whether [`close_reader`](Self::close_reader) was called.
    pub(crate) fn is_unread(&self) -> bool {
        self.unread
    }

    pub(crate) fn len(&self) -> usize {
        self.events
    }

    /// True when [`pop`](Self::pop) has something: an item or a gap not yet reported.
    pub(crate) fn has_items(&self) -> bool {
        !self.items.is_empty() || self.trailing_gap > 0
    }

    /// Bytes kept alive by the queued events.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes the queue's own buffer has allocated (not the events' bytes).
    pub(crate) fn allocated(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<Queued>()
    }

    fn fits(&self, size: usize) -> bool {
        self.events < self.cap && self.bytes.saturating_add(size) <= self.byte_cap
    }

    pub(crate) fn offer(&mut self, event: Message) -> Offer {
        self.offer_item(StreamItem::Event(event))
    }

    /// The first response of an action that had ended without it
    /// ([`StreamItem::LateAnswer`]): queued as an event is, under the same caps and policy,
    /// so a stalled consumer costs no more than its queue allows, and a late answer that
    /// does not fit is counted in a gap as an event is. Drop-oldest never displaces one
    /// (see [`drop_oldest_event`](Self::drop_oldest_event)): they are rare, and worth
    /// more than an event, which a state kept from events resynchronises after anyway.
    pub(crate) fn late_answer(
        &mut self,
        id: ActionId,
        mark: Option<u64>,
        response: Message,
    ) -> Offer {
        let response = Box::new(response);
        self.offer_item(StreamItem::LateAnswer { id, mark, response })
    }

    /// Offers an event or a late answer (the items that hold a message).
    fn offer_item(&mut self, item: StreamItem) -> Offer {
        if self.unread {
            self.dropped_total += 1;
            return Offer::Unread;
        }
        let size = held_bytes(&item);
        if self.fits(size) {
            self.flush_trailing_gap();
            self.end_episode();
            self.push_item(item, size);
            return Offer::Queued;
        }
        let dropped = match self.policy {
            OverflowPolicy::CloseSession => return Offer::Overflow,
            OverflowPolicy::DropNewest => {
                self.trailing_gap += 1;
                1
            }
            OverflowPolicy::DropOldest => {
                let mut n = 0;
                while !self.fits(size) && self.drop_oldest_event() {
                    n += 1;
                }
                if self.fits(size) {
                    self.push_item(item, size);
                } else {
                    // Larger than the whole byte cap: the config builder refuses caps below
                    // one maximal message, so this is only a safety net.
                    self.trailing_gap += 1;
                    n += 1;
                }
                n
            }
        };
        self.dropped_total += dropped;
        if self.episode == 0 {
            self.news.started = Some(Full {
                events: self.events,
                bytes: self.bytes,
                byte_cap: self.byte_cap,
                policy: self.policy,
            });
        }
        self.episode += dropped;
        Offer::Dropped
    }

    /// The overflow episodes that started and ended since the last call: the client logs
    /// them with the time (it has the clock; this queue does not).
    pub(crate) fn take_overflow_news(&mut self) -> OverflowNews {
        std::mem::take(&mut self.news)
    }

    /// Whether [`take_overflow_news`](Self::take_overflow_news) has anything: one test per
    /// event on the reader's path, where the news is almost always none.
    pub(crate) fn has_overflow_news(&self) -> bool {
        self.news.started.is_some() || self.news.ended > 0
    }

    /// Queues an event or a late answer: both count against the caps.
    fn push_item(&mut self, item: StreamItem, size: usize) {
        if matches!(item, StreamItem::Event(_)) {
            self.pushed += 1;
        }
        self.items.push_back(Queued(item));
        self.events += 1;
        self.bytes += size;
    }

    /// Events queued so far.
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Copies the last `n` queued events out of the buffers they share with the decoder
    /// (see [`Queued`]).
    pub(crate) fn detach_last(&mut self, n: usize) {
        let mut left = n;
        for Queued(item) in self.items.iter_mut().rev() {
            if left == 0 {
                break;
            }
            if let StreamItem::Event(m) = item {
                m.detach();
                left -= 1;
            }
        }
    }

    /// Server input was discarded here (merged with the notices around it, see [`fold`]).
    pub(crate) fn discarded(&mut self, reason: Discard, count: u64) {
        self.push_marker(StreamItem::Discarded { reason, count });
    }

    pub(crate) fn marks(&self) -> usize {
        self.marks
    }

    /// A marked action completed here.
    pub(crate) fn mark(&mut self, mark: u64) {
        if self.unread {
            return;
        }
        self.flush_trailing_gap();
        self.items.push_back(Queued(StreamItem::Mark { mark }));
        self.marks += 1;
    }

    /// A session came up: events after this marker are from it.
    pub(crate) fn session_ready(&mut self, ami_version: String) {
        self.push_marker(StreamItem::Ready { ami_version });
    }

    /// Keeps `event`, the login's own event of `kind`, until the session's Ready; true if
    /// it replaced one of that kind held already (which the caller counts as discarded).
    pub(crate) fn hold_until_ready(&mut self, kind: LoginEvent, event: Message) -> bool {
        if self.unread {
            self.dropped_total += 1;
            return false;
        }
        if let Some(slot) = self.held.iter_mut().find(|(k, _)| *k == kind) {
            slot.1 = event;
            return true;
        }
        self.held.push((kind, event));
        false
    }

    /// The events held until Ready, in arrival order.
    pub(crate) fn take_held(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.held)
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    }

    /// The session was lost: events the server sends until the next `Ready` are missed.
    pub(crate) fn session_lost(&mut self, reason: DisconnectReason) {
        self.push_marker(StreamItem::Disconnected { reason });
    }

    fn push_marker(&mut self, marker: StreamItem) {
        if self.unread {
            return;
        }
        self.flush_trailing_gap();
        self.items.push_back(Queued(marker));
        let end = self.items.len();
        self.fold_run(end);
    }

    fn flush_trailing_gap(&mut self) {
        if self.trailing_gap > 0 {
            let dropped = std::mem::take(&mut self.trailing_gap);
            self.items.push_back(Queued(StreamItem::Gap { dropped }));
        }
    }

    fn end_episode(&mut self) {
        if self.episode > 0 {
            self.news.ended += 1;
            self.news.ended_dropped += std::mem::take(&mut self.episode);
        }
    }

    /// Removes the oldest event, leaving a gap notice where it was (after any markers that
    /// came before it in the stream). False when there is no event to drop: a late answer
    /// is never displaced for a newer event (see [`late_answer`](Self::late_answer)).
    fn drop_oldest_event(&mut self) -> bool {
        let Some(at) = self
            .items
            .iter()
            .position(|i| matches!(i.0, StreamItem::Event(_)))
        else {
            return false;
        };
        if let StreamItem::Event(m) =
            std::mem::replace(&mut self.items[at].0, StreamItem::Gap { dropped: 1 })
        {
            self.bytes -= m.retained_bytes();
        }
        self.events -= 1;
        // The run of markers now reaches to the next event.
        let end = self.items.iter().skip(at).position(|i| splits_runs(&i.0));
        let end = end.map_or(self.items.len(), |n| at + n);
        self.fold_run(end);
        true
    }

    /// Puts the run of markers that ends just before `end` in canonical form.
    fn fold_run(&mut self, end: usize) {
        let start = self
            .items
            .range(..end)
            .rposition(|i| splits_runs(&i.0))
            .map_or(0, |n| n + 1);
        if end - start < 2 {
            return;
        }
        let run: Vec<StreamItem> = self.items.drain(start..end).map(|q| q.0).collect();
        for (n, item) in fold(run, self.who()).into_iter().enumerate() {
            self.items.insert(start + n, Queued(item));
        }
    }

    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<StreamItem> {
        self.pop_queued().map(|q| q.0)
    }

    /// The next item as it waits in the queue (an event may still share a read buffer).
    pub(crate) fn pop_queued(&mut self) -> Option<Queued> {
        match self.items.pop_front() {
            Some(item) => {
                match &item.0 {
                    StreamItem::Event(_) | StreamItem::LateAnswer { .. } => {
                        self.events -= 1;
                        self.bytes -= held_bytes(&item.0);
                    }
                    StreamItem::Mark { .. } => self.marks -= 1,
                    _ => {}
                }
                Some(item)
            }
            None if self.trailing_gap > 0 => Some(Queued(self.take_trailing_gap())),
            None => None,
        }
    }

    fn take_trailing_gap(&mut self) -> StreamItem {
        let dropped = std::mem::take(&mut self.trailing_gap);
        self.end_episode();
        StreamItem::Gap { dropped }
    }

    /// Moves up to `max_items` items to the back of `out`, stopping once their events'
    /// wire bytes reach `max_bytes` (the item that crosses it is moved too); returns how
    /// many. Exactly what as many [`pop_queued`](Self::pop_queued) calls give, but when
    /// `out` is empty and the whole queue is within both limits (the common case for a
    /// consumer that keeps up) the queue's buffer itself changes hands: no item is moved.
    /// A buffer larger than [`HANDOVER_CAPACITY_BATCHES`] batches (grown while the consumer
    /// stalled) is shrunk first.
    pub(crate) fn take_batch(
        &mut self,
        out: &mut VecDeque<Queued>,
        max_items: usize,
        max_bytes: usize,
    ) -> usize {
        // `bytes` (what the events keep alive) is at least their wire bytes.
        let fits = self.items.len() < max_items && self.bytes < max_bytes;
        if out.is_empty() && fits {
            let most = HANDOVER_CAPACITY_BATCHES.saturating_mul(max_items);
            if self.items.capacity() > most {
                // Grown while the consumer stalled: shrunk once before it changes hands, so
                // that the hand-off and the consumer never each keep a stall's worth of buffer.
                self.items.shrink_to(max_items.saturating_mul(2));
            }
            if !self.items.is_empty() && self.items.capacity() <= most {
                std::mem::swap(&mut self.items, out);
                (self.events, self.bytes, self.marks) = (0, 0, 0);
                if self.trailing_gap > 0 {
                    out.push_back(Queued(self.take_trailing_gap()));
                }
                return out.len();
            }
        }
        let (mut n, mut bytes) = (0, 0);
        while n < max_items && bytes < max_bytes {
            let Some(item) = self.pop_queued() else {
                break;
            };
            bytes += item.wire_len();
            out.push_back(item);
            n += 1;
        }
        n
    }
}

/// The canonical form of a run of markers (no events between them), in stream order: within
/// a segment (between two session boundaries) gaps add up into one gap and discard notices
/// into one per reason (counts exact; their order within the segment approximate); a session that came back after an outage and was lost again before
/// it delivered any event (`Disconnected`, `Ready`, `Disconnected`) folds into that outage:
/// its gaps move in front of the outage and its loss reason is dropped (the run keeps the
/// first loss: where the consumer started missing events). Counts are preserved; the result
/// has at most seven boundaries and gaps (`[Gap] [Ready] [Gap] [Disconnected] [Gap] [Ready]
/// [Gap]`) plus one discard notice per reason in each of the four segments.
fn fold(run: Vec<StreamItem>, who: Who<'_>) -> Vec<StreamItem> {
    let is_down = |i: &StreamItem| matches!(i, StreamItem::Disconnected { .. });
    let is_up = |i: &StreamItem| matches!(i, StreamItem::Ready { .. });
    let mut out: Vec<StreamItem> = Vec::with_capacity(8);
    for item in run {
        match item {
            StreamItem::Disconnected { reason } => {
                let Some(down) = out.iter().position(is_down) else {
                    out.push(StreamItem::Disconnected { reason });
                    continue;
                };
                let Some(up) = out[down..].iter().position(is_up) else {
                    continue; // two losses with no session between them cannot happen
                };
                // The folded session's notices move in front of the outage.
                let moved: Vec<StreamItem> = out.drain(down + up..).collect();
                let outage: Vec<StreamItem> = out.drain(down..).collect();
                for notice in moved {
                    // The folded session's own Ready goes; its gaps and discards stay.
                    if matches!(
                        notice,
                        StreamItem::Gap { .. } | StreamItem::Discarded { .. }
                    ) {
                        add_notice(&mut out, notice);
                    }
                }
                out.extend(outage);
                log::debug!("{who}: a session lost before it delivered an event folded into the outage before it ({reason})");
            }
            other => add_notice(&mut out, other),
        }
    }
    out
}

/// Adds a gap or a discard notice to the last segment of `out` (after its last session
/// boundary), merged with one of its kind there; anything else is appended.
fn add_notice(out: &mut Vec<StreamItem>, item: StreamItem) {
    let start = out
        .iter()
        .rposition(|i| {
            matches!(
                i,
                StreamItem::Ready { .. } | StreamItem::Disconnected { .. }
            )
        })
        .map_or(0, |n| n + 1);
    for existing in &mut out[start..] {
        match (existing, &item) {
            (StreamItem::Gap { dropped: d }, StreamItem::Gap { dropped }) => {
                *d += dropped;
                return;
            }
            (
                StreamItem::Discarded {
                    reason: r,
                    count: c,
                },
                StreamItem::Discarded { reason, count },
            ) if r == reason => {
                *c += count;
                return;
            }
            _ => {}
        }
    }
    out.push(item);
}

/// Events, marks and late answers end a run of foldable markers: a mark or a late answer is
/// an answer the consumer waits for, so the session it arrived in is never folded away.
fn splits_runs(item: &StreamItem) -> bool {
    matches!(
        item,
        StreamItem::Event(_) | StreamItem::Mark { .. } | StreamItem::LateAnswer { .. }
    )
}

/// Bytes an item that holds a message keeps alive (0 for a notice): what the byte cap counts.
pub(crate) fn held_bytes(item: &StreamItem) -> usize {
    match item {
        StreamItem::Event(m) => m.retained_bytes(),
        StreamItem::LateAnswer { response, .. } => response.retained_bytes(),
        _ => 0,
    }
}

#[cfg(test)]
fn gap_of(item: &StreamItem) -> u64 {
    match item {
        StreamItem::Gap { dropped } => *dropped,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeError, Decoder, DecoderLimits, Frame};

    fn ev(n: u32) -> Message {
        ev_padded(n, 0)
    }

    fn ev_padded(n: u32, pad: usize) -> Message {
        let mut d = Decoder::without_banner(DecoderLimits::default());
        d.feed(format!("Event: E{n}\r\nPad: {}\r\n\r\n", "p".repeat(pad)).as_bytes());
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
                StreamItem::Discarded { reason, count } => format!("{reason:?}x{count}"),
                StreamItem::LateAnswer { id, .. } => format!("late:{id}"),
            })
            .collect()
    }

    fn late(q: &mut EventQueue, n: u32) -> Offer {
        let id = ActionId::new(&format!("x-{n}")).unwrap_or_else(|e| unreachable!("{e}"));
        q.late_answer(id, None, ev(n))
    }

    #[test]
    fn a_stream_item_is_no_larger_than_the_event_it_mostly_carries() {
        // The queue and every adapter's batch move items by value, millions a second: a
        // variant larger than an event's message makes every event pay for it (a
        // LateAnswer with its message inline made them 136 bytes instead of 88, and the
        // async-std README loop 10 % slower).
        assert!(
            std::mem::size_of::<StreamItem>() <= std::mem::size_of::<Message>(),
            "{} > {}",
            std::mem::size_of::<StreamItem>(),
            std::mem::size_of::<Message>()
        );
    }

    #[test]
    fn late_answers_count_against_the_caps_survive_drop_oldest_and_keep_a_session_from_folding() {
        let mut q = EventQueue::new(2, usize::MAX, OverflowPolicy::DropOldest, None);
        q.session_lost(DisconnectReason::Eof);
        q.session_ready("v".into());
        assert_eq!(late(&mut q, 1), Offer::Queued);
        q.session_lost(DisconnectReason::Eof);
        assert_eq!(late(&mut q, 2), Offer::Queued);
        assert_eq!(q.len(), 2);
        // Full of late answers: a new event finds nothing it may displace.
        assert_eq!(q.offer(ev(0)), Offer::Dropped);
        assert_eq!(late(&mut q, 3), Offer::Dropped);
        assert_eq!(
            drain(&mut q),
            ["down:eof", "up", "late:x-1", "down:eof", "late:x-2", "gap2"]
        );
        assert_eq!((q.len(), q.bytes(), q.dropped_total), (0, 0, 2));
    }

    #[test]
    fn an_overflow_episode_is_news_once_when_it_starts_and_once_when_it_ends() {
        let mut q = EventQueue::new(2, usize::MAX, OverflowPolicy::DropNewest, None);
        q.offer(ev(0));
        q.offer(ev(1));
        assert_eq!(q.take_overflow_news(), OverflowNews::default());
        assert!(!q.has_overflow_news());
        q.offer(ev(2));
        q.offer(ev(3));
        assert!(q.has_overflow_news());
        let started = q.take_overflow_news();
        assert_eq!(started.started.map(|f| f.events), Some(2));
        assert_eq!(started.ended, 0);
        assert_eq!(drain(&mut q), ["E0", "E1", "gap2"]);
        let ended = q.take_overflow_news();
        assert_eq!(
            (ended.started, ended.ended, ended.ended_dropped),
            (None, 1, 2)
        );
        assert_eq!(q.take_overflow_news(), OverflowNews::default());
    }

    #[test]
    fn drop_oldest_reports_gap_before_survivors() {
        let mut q = EventQueue::new(3, usize::MAX, OverflowPolicy::DropOldest, None);
        for n in 0..5 {
            q.offer(ev(n));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(drain(&mut q), ["gap2", "E2", "E3", "E4"]);
        assert_eq!(q.dropped_total, 2);
    }

    #[test]
    fn drop_newest_reports_gap_after_survivors() {
        let mut q = EventQueue::new(2, usize::MAX, OverflowPolicy::DropNewest, None);
        for n in 0..5 {
            q.offer(ev(n));
        }
        assert_eq!(drain(&mut q), ["E0", "E1", "gap3"]);
        q.offer(ev(9));
        assert_eq!(drain(&mut q), ["E9"]);
    }

    #[test]
    fn drop_newest_gap_sits_between_old_and_new_events() {
        let mut q = EventQueue::new(2, usize::MAX, OverflowPolicy::DropNewest, None);
        for n in 0..4 {
            q.offer(ev(n));
        }
        assert_eq!(q.pop(), Some(StreamItem::Event(ev(0))));
        q.offer(ev(7));
        assert_eq!(drain(&mut q), ["E1", "gap2", "E7"]);
    }

    #[test]
    fn session_boundaries_sit_between_events_in_stream_order() {
        let mut q = EventQueue::new(8, usize::MAX, OverflowPolicy::DropNewest, None);
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
        let mut q = EventQueue::new(1, usize::MAX, OverflowPolicy::DropNewest, None);
        q.offer(ev(0));
        q.offer(ev(1));
        q.session_lost(DisconnectReason::HeartbeatTimeout);
        assert_eq!(drain(&mut q), ["E0", "gap1", "down:heartbeat_timeout"]);
    }

    #[test]
    fn drop_oldest_drops_events_never_boundaries() {
        let mut q = EventQueue::new(2, usize::MAX, OverflowPolicy::DropOldest, None);
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
        let mut q = EventQueue::new(4, usize::MAX, OverflowPolicy::DropNewest, None);
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
            let mut q = EventQueue::new(cap, usize::MAX, policy, None);
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
        let mut q = EventQueue::new(1, usize::MAX, OverflowPolicy::DropOldest, None);
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
        let mut q = EventQueue::new(1, usize::MAX, OverflowPolicy::CloseSession, None);
        assert_eq!(q.offer(ev(0)), Offer::Queued);
        assert_eq!(q.offer(ev(1)), Offer::Overflow);
    }

    #[test]
    fn byte_cap_bounds_the_queue_whatever_the_event_count() {
        let big = ev_padded(0, 10_000).retained_bytes();
        let mut q = EventQueue::new(1_000, big * 3, OverflowPolicy::DropOldest, None);
        for n in 0..10 {
            q.offer(ev_padded(n, 10_000));
            assert!(q.bytes() <= big * 3);
        }
        assert_eq!(q.len(), 3);
        assert_eq!(drain(&mut q), ["gap7", "E7", "E8", "E9"]);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn drop_oldest_makes_room_for_one_large_event_by_dropping_several_small_ones() {
        let small = ev(0).retained_bytes();
        let large = ev_padded(9, small * 3).retained_bytes();
        let mut q = EventQueue::new(100, large + small, OverflowPolicy::DropOldest, None);
        for n in 0..5 {
            q.offer(ev(n));
        }
        q.offer(ev_padded(9, small * 3));
        assert!(q.bytes() <= large + small);
        let out = drain(&mut q);
        assert_eq!(out.last().map(String::as_str), Some("E9"));
        let gap: u64 = out[0].strip_prefix("gap").unwrap().parse().unwrap();
        assert_eq!(gap + (out.len() as u64 - 2), 5, "{out:?}");
    }

    #[test]
    fn discard_notices_keep_stream_order_and_merge_in_a_run() {
        let mut q = EventQueue::new(10, usize::MAX, OverflowPolicy::DropOldest, None);
        let too_long = Discard::Malformed(DecodeError::LineTooLong { limit: 8 });
        q.offer(ev(0));
        for _ in 0..1000 {
            q.discarded(too_long, 1);
            q.discarded(Discard::NotEventOrResponse, 1);
        }
        q.offer(ev(1));
        q.discarded(too_long, 2);
        assert_eq!(
            drain(&mut q),
            [
                "E0",
                "Malformed(LineTooLong { limit: 8 })x1000",
                "NotEventOrResponsex1000",
                "E1",
                "Malformed(LineTooLong { limit: 8 })x2"
            ]
        );
    }

    #[test]
    fn drop_newest_with_discards_stays_bounded_while_full() {
        let mut q = EventQueue::new(2, usize::MAX, OverflowPolicy::DropNewest, None);
        q.offer(ev(0));
        q.offer(ev(1));
        for n in 0..10_000 {
            q.offer(ev(n));
            q.discarded(Discard::UnmatchedResponse, 1);
        }
        assert!(q.items.len() <= 4, "{} items", q.items.len());
        assert_eq!(
            drain(&mut q),
            ["E0", "E1", "gap10000", "UnmatchedResponsex10000"]
        );
    }

    #[test]
    fn drop_oldest_keeps_discard_notices_of_dropped_events_merged() {
        let mut q = EventQueue::new(1, usize::MAX, OverflowPolicy::DropOldest, None);
        for n in 0..1000 {
            q.discarded(Discard::NotEventOrResponse, 1);
            q.offer(ev(n));
        }
        assert!(q.items.len() <= 3, "{} items", q.items.len());
        assert_eq!(drain(&mut q), ["NotEventOrResponsex1000", "gap999", "E999"]);
    }

    #[test]
    fn discards_of_a_folded_session_move_in_front_of_the_outage() {
        let mut q = EventQueue::new(4, usize::MAX, OverflowPolicy::DropNewest, None);
        q.offer(ev(0));
        q.session_lost(DisconnectReason::Eof);
        q.session_ready("v".into());
        q.discarded(Discard::UnmatchedResponse, 3);
        q.session_lost(DisconnectReason::HeartbeatTimeout);
        q.session_ready("v".into());
        q.offer(ev(1));
        assert_eq!(
            drain(&mut q),
            ["E0", "UnmatchedResponsex3", "down:eof", "up", "E1"]
        );
    }

    /// One step of building a queue, for the property below.
    #[derive(Debug, Clone)]
    enum Op {
        Offer(u32, usize),
        Mark,
        Up,
        Down,
        Discard,
        Late(u32),
        Pop,
    }

    fn arb_ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
        use proptest::prelude::*;
        let op = prop_oneof![
            6 => (0u32..100, 0usize..600).prop_map(|(n, pad)| Op::Offer(n, pad)),
            1 => Just(Op::Mark),
            1 => Just(Op::Up),
            1 => Just(Op::Down),
            1 => Just(Op::Discard),
            1 => (0u32..100).prop_map(Op::Late),
            2 => Just(Op::Pop),
        ];
        proptest::collection::vec(op, 0..80)
    }

    fn build(ops: &[Op], cap: usize, byte_cap: usize, policy: OverflowPolicy) -> EventQueue {
        let mut q = EventQueue::new(cap, byte_cap, policy, None);
        for op in ops {
            match op {
                Op::Offer(n, pad) => {
                    q.offer(ev_padded(*n, *pad));
                }
                Op::Mark => q.mark(7),
                Op::Up => q.session_ready("v".into()),
                Op::Down => q.session_lost(DisconnectReason::Eof),
                Op::Discard => q.discarded(Discard::Malformed(DecodeError::FollowsUnterminated), 1),
                Op::Late(n) => {
                    late(&mut q, *n);
                }
                Op::Pop => {
                    q.pop();
                }
            }
        }
        q
    }

    fn label(q: Queued) -> String {
        match q.0 {
            StreamItem::Event(m) => m.event().unwrap_or("?").to_string(),
            other => format!("{other:?}"),
        }
    }

    proptest::proptest! {
        /// Taking a batch gives exactly the items, in the order, that popping one at a time
        /// up to the same limits gives, leaves the same queue behind, and keeps the
        /// counters right, whether the queue's buffer changes hands or items are moved.
        #[test]
        fn a_batch_take_equals_popping_one_at_a_time(
            ops in arb_ops(),
            cap in 1usize..20,
            byte_cap_k in 1usize..20,
            drop_oldest in proptest::bool::ANY,
            max_items in 1usize..30,
            max_bytes in 1usize..8_000,
            out_has_one in proptest::bool::ANY,
        ) {
            let policy = if drop_oldest { OverflowPolicy::DropOldest } else { OverflowPolicy::DropNewest };
            let byte_cap = byte_cap_k * 700;
            let mut batched = build(&ops, cap, byte_cap, policy);
            let mut popped = build(&ops, cap, byte_cap, policy);
            let mut out = VecDeque::new();
            if out_has_one {
                out.push_back(Queued(StreamItem::Gap { dropped: 99 }));
            }
            let before = out.len();
            let n = batched.take_batch(&mut out, max_items, max_bytes);
            proptest::prop_assert_eq!(out.len() - before, n);
            let mut expect = Vec::new();
            let mut bytes = 0;
            while expect.len() < max_items && bytes < max_bytes {
                let Some(item) = popped.pop_queued() else { break };
                bytes += item.wire_len();
                expect.push(label(item));
            }
            let got: Vec<String> = out.into_iter().skip(before).map(label).collect();
            proptest::prop_assert_eq!(got, expect);
            proptest::prop_assert_eq!(batched.len(), popped.len());
            proptest::prop_assert_eq!(batched.bytes(), popped.bytes());
            proptest::prop_assert_eq!(batched.marks(), popped.marks());
            let rest_b: Vec<String> = std::iter::from_fn(|| batched.pop_queued()).map(label).collect();
            let rest_p: Vec<String> = std::iter::from_fn(|| popped.pop_queued()).map(label).collect();
            proptest::prop_assert_eq!(rest_b, rest_p);
            proptest::prop_assert_eq!((batched.len(), batched.bytes(), batched.marks()), (0, 0, 0));
        }
    }

    #[test]
    fn a_queue_buffer_grown_by_a_stall_is_shrunk_before_it_changes_hands() {
        let mut q = EventQueue::new(100_000, usize::MAX, OverflowPolicy::DropNewest, None);
        for n in 0..10_000 {
            q.offer(ev(n));
        }
        let mut out = VecDeque::new();
        for _ in 0..156 {
            out.clear();
            assert_eq!(q.take_batch(&mut out, 64, usize::MAX), 64);
        }
        // 16 left: a batch that fits, in a buffer that held 10,000.
        out = VecDeque::new();
        assert_eq!(q.take_batch(&mut out, 64, usize::MAX), 16);
        assert!(out.capacity() <= 8 * 64, "{}", out.capacity());
        assert!(q.items.capacity() <= 8 * 64, "{}", q.items.capacity());
    }

    #[test]
    fn a_batch_that_fits_takes_the_whole_queue_and_its_trailing_gap() {
        let mut q = EventQueue::new(2, usize::MAX, OverflowPolicy::DropNewest, None);
        for n in 0..5 {
            q.offer(ev(n));
        }
        let mut out = VecDeque::new();
        assert_eq!(q.take_batch(&mut out, 1024, 1 << 20), 3);
        let got: Vec<String> = out.into_iter().map(label).collect();
        assert_eq!(got, ["E0", "E1", "Gap { dropped: 3 }"]);
        assert_eq!((q.len(), q.bytes(), q.has_items()), (0, 0, false));
        q.offer(ev(9));
        assert_eq!(drain(&mut q), ["E9"]);
    }

    #[test]
    fn a_batch_that_fits_hands_over_the_queue_buffer_itself() {
        let mut q = EventQueue::new(100, usize::MAX, OverflowPolicy::DropNewest, None);
        for n in 0..40 {
            q.offer(ev(n));
        }
        for _ in 0..30 {
            q.pop();
        }
        let buffer = q.items.capacity();
        assert!(buffer >= 40);
        let mut out = VecDeque::new();
        assert_eq!(q.take_batch(&mut out, 64, usize::MAX), 10);
        assert_eq!(out.capacity(), buffer, "the queue's own buffer, not a copy");
        assert_eq!(q.items.capacity(), 0, "the queue took the empty one");
    }

    #[test]
    fn a_batch_stops_at_its_item_limit_before_a_trailing_gap() {
        // Exactly max_items queued, then a gap: the gap is the next batch's.
        let mut q = EventQueue::new(2, usize::MAX, OverflowPolicy::DropNewest, None);
        for n in 0..5 {
            q.offer(ev(n));
        }
        let mut out = VecDeque::new();
        assert_eq!(q.take_batch(&mut out, 2, usize::MAX), 2);
        let got: Vec<String> = out.drain(..).map(label).collect();
        assert_eq!(got, ["E0", "E1"]);
        assert_eq!(q.take_batch(&mut out, 2, usize::MAX), 1);
        assert_eq!(label(out.pop_front().unwrap()), "Gap { dropped: 3 }");
    }

    #[test]
    fn a_batch_of_no_bytes_takes_nothing() {
        let mut q = EventQueue::new(10, usize::MAX, OverflowPolicy::DropNewest, None);
        q.offer(ev(1));
        let mut out = VecDeque::new();
        assert_eq!(q.take_batch(&mut out, 10, 0), 0);
        assert!(out.is_empty());
        assert_eq!(q.len(), 1);
        // Nor when only notices, which hold no bytes, wait.
        q.pop();
        q.session_lost(DisconnectReason::Eof);
        assert_eq!(q.take_batch(&mut out, 10, 0), 0);
        assert!(out.is_empty());
        assert!(q.has_items());
    }

    #[test]
    fn closing_the_reader_frees_and_counts_the_queued_and_held_events() {
        let mut q = EventQueue::new(10, usize::MAX, OverflowPolicy::DropNewest, None);
        q.offer(ev(1));
        q.mark(3);
        q.offer(ev(2));
        q.hold_until_ready(LoginEvent::FullyBooted, ev(3));
        assert_eq!(
            q.close_reader(),
            3,
            "two queued, one held; the mark is no event"
        );
        assert_eq!(q.dropped_total, 3);
        assert_eq!(
            (q.len(), q.bytes(), q.marks(), q.has_items()),
            (0, 0, 0, false)
        );
        q.offer(ev(4));
        assert_eq!(q.dropped_total, 4, "discarded as it arrives, counted");
        assert_eq!(q.close_reader(), 0);
    }
}
