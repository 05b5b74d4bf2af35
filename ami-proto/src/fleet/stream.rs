//! The merged event stream: every server keeps its own bounded queue (its client's), and the
//! fleet hands items out one at a time from each server with items, in rotation. A server
//! that floods fills and overflows only its own queue (counted, as gaps naming it); a quiet
//! server's next item is at most one rotation away, however much the flooder has queued.

use super::name::ServerName;
use super::servers::Fleet;
use crate::client::events::{held_bytes, take_into};
use crate::{Queued, StreamItem};
use std::collections::VecDeque;

/// One item of the merged stream: what a server's own stream said, and which server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetItem {
    /// The server it came from.
    pub server: ServerName,
    /// The item, as that server's client produced it: an event, a gap notice counting the
    /// events this server lost, or any other stream item.
    pub item: StreamItem,
}

/// One item of the merged stream as it waits in its server's queue: an event in it may still
/// share the buffer it was read into, and [`into_item`](Self::into_item) copies it out. For
/// an adapter whose reader runs on another thread than the driver: take items under the lock
/// with [`Fleet::poll_queued`], convert them on the reader's thread, outside the lock.
#[derive(Debug)]
pub struct FleetQueued {
    /// The server it came from.
    pub server: ServerName,
    item: Queued,
}

impl FleetQueued {
    /// The item, its event (if any) in allocations of its own (see [`Queued::into_item`]).
    pub fn into_item(self) -> FleetItem {
        FleetItem {
            server: self.server,
            item: self.item.into_item(),
        }
    }
}

/// Gap notices (and stream marks, late answers) of removed servers waiting for the reader at most: a
/// program that removes servers while its reader is stalled must not grow this queue
/// without bound. Past it a removed server's notice is not queued (its events are still
/// counted in `events_lost_on_removal`; the notice itself in `removal_gaps_dropped`, and
/// logged).
pub const MAX_REMOVAL_GAPS: usize = 1024;

/// Bytes the [late answers](crate::StreamItem::LateAnswer) of removed servers waiting for
/// the reader keep alive at most (their messages' `retained_bytes`), within
/// [`MAX_REMOVAL_GAPS`]: out of their servers' queues, no `event_queue_bytes` bounds them
/// any more, and a late Command answer can be a 16 MiB message. Two of the largest the
/// default decoder limits allow do not both fit: past it a late answer is not queued
/// (counted in `removal_gaps_dropped`, and logged).
pub const MAX_REMOVAL_BYTES: usize = 32 << 20;

/// Slots with stream items, in the order they get their next turn.
#[derive(Debug, Default)]
pub(crate) struct EventRing {
    order: VecDeque<usize>,
    /// `listed[i]`: slot `i` is in `order` (at most once).
    listed: Vec<bool>,
    /// Items of servers that are gone (a final gap, marks, late answers), served first.
    orphans: VecDeque<FleetItem>,
    /// Bytes the late answers in `orphans` keep alive (at most [`MAX_REMOVAL_BYTES`]).
    orphan_bytes: usize,
    /// The application will never read the merged stream ([`Fleet::close_event_stream`]).
    pub(crate) unread: bool,
}

impl EventRing {
    /// Puts slot `index` at the back of the rotation unless it is in it.
    pub(crate) fn join(&mut self, index: usize) {
        if self.listed.len() <= index {
            self.listed.resize(index + 1, false);
        }
        if let Some(l) = self.listed.get_mut(index) {
            if !*l {
                *l = true;
                self.order.push_back(index);
            }
        }
    }

    /// Takes slot `index` out of the rotation (its server is being removed).
    pub(crate) fn forget(&mut self, index: usize) {
        if let Some(l) = self.listed.get_mut(index) {
            if std::mem::take(l) {
                self.order.retain(|&i| i != index);
            }
        }
    }

    /// Queues the last words of a removed server (its gap, its marks, its late answers);
    /// false when [`MAX_REMOVAL_GAPS`] wait already, or a late answer would take the bytes
    /// they hold past [`MAX_REMOVAL_BYTES`] (it is not queued).
    pub(crate) fn orphan(&mut self, item: FleetItem) -> bool {
        if self.unread {
            return true;
        }
        if self.orphans.len() >= MAX_REMOVAL_GAPS {
            return false;
        }
        let size = held_bytes(&item.item);
        if self.orphan_bytes.saturating_add(size) > MAX_REMOVAL_BYTES {
            return false;
        }
        self.orphan_bytes += size;
        self.orphans.push_back(item);
        true
    }

    /// The next item of a removed server, for the reader.
    fn pop_orphan(&mut self) -> Option<FleetItem> {
        let item = self.orphans.pop_front()?;
        self.orphan_bytes = self.orphan_bytes.saturating_sub(held_bytes(&item.item));
        Some(item)
    }

    /// Slots waiting for a turn.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

impl Fleet {
    /// The next item of the merged stream, taking one item from each server with items in
    /// turn. The reader never waits for this call: each server's queue is bounded by its
    /// `event_queue_cap`, and what overflows comes out as a gap naming that server.
    pub fn poll_event(&mut self) -> Option<FleetItem> {
        self.poll_queued().map(FleetQueued::into_item)
    }

    /// The next item of the merged stream as it waits in its server's queue (see
    /// [`FleetQueued`]); otherwise the same as [`poll_event`](Self::poll_event).
    pub fn poll_queued(&mut self) -> Option<FleetQueued> {
        if let Some(FleetItem { server, item }) = self.ring.pop_orphan() {
            return Some(FleetQueued {
                server,
                item: Queued(item),
            });
        }
        while let Some(index) = self.ring.order.pop_front() {
            let Some(s) = self
                .slots
                .get_mut(index)
                .and_then(|slot| slot.server.as_mut())
            else {
                continue;
            };
            match s.client.poll_queued() {
                Some(item) => {
                    if let StreamItem::Event(_) | StreamItem::LateAnswer { .. } = &item.0 {
                        s.counters.events_delivered += 1;
                    } else if let StreamItem::Gap { dropped } = &item.0 {
                        s.counters.events_lost += dropped;
                    }
                    // Back of the line, even if now empty: a trailing gap may still follow,
                    // and the next turn finds out.
                    self.ring.order.push_back(index);
                    return Some(FleetQueued {
                        server: s.name.clone(),
                        item,
                    });
                }
                None => {
                    if let Some(l) = self.ring.listed.get_mut(index) {
                        *l = false;
                    }
                }
            }
        }
        None
    }

    /// Moves up to `max` items of the merged stream into `out` (in rotation, as
    /// [`poll_event`](Self::poll_event)) and returns how many.
    pub fn poll_events(&mut self, out: &mut Vec<FleetItem>, max: usize) -> usize {
        take_into(out, max, || self.poll_event())
    }

    /// Moves up to `max` items of the merged stream into `out` as they wait in their queues
    /// (see [`poll_queued`](Self::poll_queued)) and returns how many.
    pub fn poll_queued_events(&mut self, out: &mut Vec<FleetQueued>, max: usize) -> usize {
        take_into(out, max, || self.poll_queued())
    }

    /// Servers with items waiting for their turn in the merged stream (each item a removed
    /// server left, its last gap or a mark, counts as one): what one rotation of [`poll_event`](Self::poll_event) visits.
    /// A reader merging several fleets sizes its batch from it, so each server gets the same
    /// share whichever fleet holds it.
    pub fn servers_with_events(&self) -> usize {
        self.ring.len() + self.ring.orphans.len()
    }

    /// Whether items a removed server named `name` left (its last gap, its marks) still wait
    /// for the reader: a reader merging several fleets adds that name again to this one
    /// only, so that nothing of the new server goes before them.
    pub fn holds_removed(&self, name: &str) -> bool {
        self.ring.orphans.iter().any(|o| o.server.as_str() == name)
    }

    /// How many items removed servers named `name` left (their last gaps, their marks) still
    /// wait for the reader: nothing more of a removed server comes, so a reader that puts
    /// something after its last item (a handover marker) knows how many to wait for.
    pub fn removed_items(&self, name: &str) -> usize {
        self.ring
            .orphans
            .iter()
            .filter(|o| o.server.as_str() == name)
            .count()
    }

    /// The application will never read the merged stream again (`ami-async` calls this when
    /// its `FleetEvents` is dropped): every server's client does as
    /// [`Client::close_event_stream`](crate::Client::close_event_stream) says, now and for
    /// servers added later, and the stream keeps nothing. `unread` are items taken out of
    /// the stream ([`poll_queued`](Self::poll_queued)) that nobody will read either: each
    /// event (and late answer) is counted on its server, or in `events_lost_on_removal` when its server is
    /// gone. One log line says so for the fleet.
    pub fn close_event_stream(&mut self, unread: impl IntoIterator<Item = FleetQueued>) {
        let mut freed = 0;
        for FleetQueued { server, item } in unread {
            let index = self.names.get(server.as_str()).copied();
            let client = index
                .and_then(|i| self.slots.get_mut(i))
                .and_then(|slot| slot.server.as_mut())
                .map(|s| &mut s.client);
            // A late answer counts as an event does (see `Client::close_event_stream`).
            let event = u64::from(matches!(
                item.0,
                StreamItem::Event(_) | StreamItem::LateAnswer { .. }
            ));
            match client {
                Some(c) => c.count_unread(event),
                None => self.counters.events_lost_on_removal += event,
            }
            freed += event;
        }
        if self.ring.unread {
            return;
        }
        self.ring.unread = true;
        self.ring.orphans.clear();
        self.ring.orphan_bytes = 0;
        self.ring.order.clear();
        self.ring.listed.clear();
        for s in self
            .slots
            .iter_mut()
            .filter_map(|slot| slot.server.as_mut())
        {
            freed += s.client.close_reader([]).unwrap_or(0);
        }
        log::info!(
            "AMI fleet event stream closed by the application: {freed} events not read freed; \
             events from now on are discarded as they arrive (counted in each server's \
             Stats::events_dropped)"
        );
    }

    /// False while `server`'s client does not want reads ([`Client::wants_read`]: its event
    /// queue holds [`READ_AHEAD_BYTES`] or [`READ_AHEAD_EVENTS`] of events, or half of either
    /// cap): the reader of the merged stream is behind, and reading more from this server now
    /// would decode events only for them to wait, or for its queue to drop them. An adapter
    /// whose reader runs on another thread may hold this server's next read until the reader
    /// takes items, for a bounded time of its choosing, so that responses and heartbeats are
    /// still read when the reader stalls (its queue then drops, counted, as for any slow
    /// reader). True for an unknown server.
    ///
    /// [`Client::wants_read`]: crate::Client::wants_read
    /// [`READ_AHEAD_BYTES`]: crate::READ_AHEAD_BYTES
    /// [`READ_AHEAD_EVENTS`]: crate::READ_AHEAD_EVENTS
    pub fn wants_read(&self, server: super::ServerId) -> bool {
        self.slots
            .get(server.index)
            .filter(|slot| slot.generation == server.generation)
            .and_then(|slot| slot.server.as_ref())
            .is_none_or(|s| s.client.wants_read())
    }

    /// True when the merged stream may have items ([`poll_event`](Self::poll_event) finds
    /// out).
    pub fn has_events(&self) -> bool {
        self.ring.len() > 0 || !self.ring.orphans.is_empty()
    }
}
