//! The application's side of a fleet: [`FleetHandle`] (servers, actions, status, stats) and
//! [`FleetEvents`] (the merged stream): std futures over the shards' shared state, on any
//! runtime (the clock is the runtime's, kept in the shared state).

use super::reads::ReadCounters;
use super::shards::{Shard, Shards};
use super::watch::StatusWatch;
use super::Endpoint;
use crate::AmiError;
use crate::Target;
use ami_proto::fleet::{
    FleetError, FleetItem, FleetQueued, FleetStats, Route, RouteError, Routed, ServerName,
    ServerStatus,
};
use ami_proto::{Action, ClientConfig, Response, SendOptions};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Items of the merged stream per server and per turn of a shard: a shard hands out this
/// many times its servers with items under one lock, so every server gets the same share
/// whichever shard holds it, and a lone server comes in batches of this size. Each take is
/// a turn of the shard's lock, which its driver holds while it decodes a read: with 256, a
/// lone flooding server's reader met the driver there four times as often and read 12 %
/// slower than with 1,024 (`fleet_loopback`).
const ITEMS_PER_SERVER: usize = 1024;

/// The most items taken from one shard under one lock.
const MAX_BATCH: usize = 4096;

/// Why a server was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The fleet refused it (bad or duplicate name, fleet full).
    #[error(transparent)]
    Refused(FleetError),
    /// The fleet was closed.
    #[error("fleet closed")]
    Closed,
    /// The TLS server name is neither a DNS name nor an IP address.
    #[error("bad TLS server name: {0:?}")]
    TlsName(String),
}

/// Why [`FleetHandle::send`] (or an operation naming one server, such as
/// [`FleetHandle::add_filter`]) did nothing: nothing was queued on any server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteFailed {
    /// No server could take it (unknown name, none ready, the server's client refused it).
    #[error(transparent)]
    Route(RouteError),
    /// The fleet was closed or its driver is gone.
    #[error("fleet closed")]
    Closed,
}

/// The outcome of one routed action: which server took it, and how it ended there.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The server the action went to.
    pub server: ServerName,
    /// Its result on that server (an `AmiError::Send` when that server refused it).
    pub result: Result<Response, AmiError>,
}

/// A cloneable handle on a fleet of AMI servers: add and remove servers by
/// name, send actions routed by name or policy, watch status, read stats. The fleet closes
/// when every handle and the [`FleetEvents`] are dropped, or on [`close`](Self::close), or
/// once no handle is left and every server has closed for good (after
/// [`logoff_all`](Self::logoff_all), say): nothing more can come then, and the stream ends.
pub struct FleetHandle {
    pub(crate) shards: Arc<Shards>,
}

impl Clone for FleetHandle {
    fn clone(&self) -> Self {
        self.shards.join();
        FleetHandle {
            shards: self.shards.clone(),
        }
    }
}

impl std::fmt::Debug for FleetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: usize = self
            .shards
            .shards
            .iter()
            .map(|s| s.lock().fleet.len())
            .sum();
        f.debug_struct("FleetHandle")
            .field("servers", &servers)
            .field("shards", &self.shards.shards.len())
            .finish()
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        self.shards.leave_handle();
    }
}

/// Cancels the action in the core if the caller stops waiting for it; an outcome that had
/// come but was never taken goes back to the core (`Fleet::unclaimed`).
struct CancelOnDrop<'a> {
    shard: &'a Shard,
    key: (ServerName, ami_proto::ActionId),
    /// The caller's `SendOptions::with_mark` value: the core forgets it once the action
    /// completes, and the late answer an unclaimed outcome becomes carries it.
    mark: Option<u64>,
    /// Still waiting: the action is cancelled on drop.
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let now = (self.shard.now)();
            let (server, id) = &self.key;
            self.shard.call(|s| {
                // An outcome that came but was never taken goes back to the core (the
                // server's answer reaches the stream as a late answer, an async Originate's
                // `OriginateResponse` after it); else the action is cancelled.
                match s.waiters.remove(&self.key).and_then(|w| w.outcome) {
                    Some(outcome) => {
                        s.fleet
                            .unclaimed(now, server.as_str(), id, self.mark, outcome)
                    }
                    None => {
                        s.fleet.cancel(now, server.as_str(), id);
                    }
                }
            });
        }
    }
}

impl FleetHandle {
    /// Adds a server under `name`, reached at `target`; it connects within the fleet's
    /// connect budget. Names: 1 to 128 bytes, no control characters, unique.
    pub fn add(
        &self,
        name: &str,
        config: ClientConfig,
        target: impl Into<Target>,
    ) -> Result<(), AddError> {
        self.shards.add(
            name,
            config,
            Endpoint {
                target: target.into(),
                #[cfg(feature = "tls")]
                tls: None,
            },
        )
    }

    /// [`add`](Self::add) over TLS (AMI's implicit TLS, usually port 5039).
    #[cfg(feature = "tls")]
    pub fn add_tls(
        &self,
        name: &str,
        config: ClientConfig,
        target: impl Into<Target>,
        tls: crate::Tls,
    ) -> Result<(), AddError> {
        let server_name = tls.server_name.clone();
        let tls = crate::tls::TlsTarget::new(tls).map_err(|_| AddError::TlsName(server_name))?;
        self.shards.add(
            name,
            config,
            Endpoint {
                target: target.into(),
                tls: Some(tls),
            },
        )
    }

    /// Removes the server named `name` (no Logoff): its pending actions fail, events still
    /// queued for it become one gap naming it. False if there is no such server.
    pub fn remove(&self, name: &str) -> bool {
        self.shards.remove(name)
    }

    /// Sends `action` where `route` says and waits for its outcome. `Err` means no server
    /// took it (nothing was queued); otherwise the [`Reply`] names the server and holds the
    /// result there. Dropping the future cancels the action; the server's answer to one
    /// already written, whether it comes later or had come before the future was polled
    /// again, reaches the event stream as
    /// [`StreamItem::LateAnswer`](ami_proto::StreamItem::LateAnswer) naming the server
    /// (send with [`SendOptions::with_mark`] to recognise it by its mark).
    pub async fn send(&self, route: Route<'_>, action: Action) -> Result<Reply, RouteFailed> {
        self.send_with(route, action, SendOptions::default()).await
    }

    /// [`send`](Self::send) with options (e.g. a deadline).
    pub async fn send_with(
        &self,
        route: Route<'_>,
        action: Action,
        options: SendOptions,
    ) -> Result<Reply, RouteFailed> {
        let (shard, routed) = self.shards.send(route, action, options)?;
        Ok(wait(&shard, routed, options.late_answer_mark()).await)
    }

    /// Sends a copy of `action` to every server (the CLI's `--on all`) and waits for all of
    /// them: one reply per server, shard by shard, each in slot order. Dropping the future
    /// cancels every action not yet answered.
    pub async fn send_all(&self, action: Action) -> Vec<Reply> {
        self.send_all_with(action, SendOptions::default()).await
    }

    /// [`send_all`](Self::send_all) with options (e.g. a deadline), the same for every
    /// server.
    pub async fn send_all_with(&self, action: Action, options: SendOptions) -> Vec<Reply> {
        let mut sent = Vec::new();
        for shard in &self.shards.shards {
            let results = shard.call(|s| {
                if s.closed || s.driver_done {
                    return Vec::new();
                }
                let now = (shard.now)();
                let results = s.fleet.send_all(now, &action, options);
                for r in results.iter().flatten() {
                    s.waiters.insert(
                        (r.server.clone(), r.id.clone()),
                        crate::shared::Waiter::default(),
                    );
                }
                results
            });
            sent.extend(results.into_iter().map(|r| (shard, r)));
        }
        // Every action sent is guarded before the first wait: dropping this future cancels
        // those not yet answered and lets go of their waiters, not only the one awaited.
        let answers: Vec<Answer<'_>> = sent
            .into_iter()
            .filter_map(|(shard, r)| match r {
                Ok(routed) => Some(Answer::Wait(CancelOnDrop {
                    shard,
                    key: (routed.server, routed.id),
                    mark: options.late_answer_mark(),
                    armed: true,
                })),
                Err(RouteError::Send { server, error }) => Some(Answer::Now(Reply {
                    server,
                    result: Err(AmiError::Send(error)),
                })),
                // Only a server removed meanwhile gets here: nothing was sent.
                Err(_) => None,
            })
            .collect();
        // Every answer is waited for before any is taken: a caller that gives up meanwhile
        // leaves each outcome that came in its waiter, where its guard hands it back to the
        // core (`Fleet::unclaimed`: the server's answer reaches the stream as a late
        // answer, an async Originate's OriginateResponse after it) instead of dropping it
        // with a half-collected list.
        for answer in &answers {
            if let Answer::Wait(guard) = answer {
                answered(guard).await;
            }
        }
        answers
            .into_iter()
            .map(|answer| match answer {
                Answer::Wait(guard) => take_reply(guard),
                Answer::Now(reply) => reply,
            })
            .collect()
    }

    /// Where the server named `name` is now.
    pub fn status(&self, name: &str) -> Option<ServerStatus> {
        self.shards
            .shard_of(name)?
            .lock()
            .fleet
            .status(name)
            .cloned()
    }

    /// Every server and where it is now (shard by shard, each in slot order).
    pub fn statuses(&self) -> Vec<(ServerName, ServerStatus)> {
        self.shards.statuses()
    }

    /// A watch on status changes from now on: every change once, in order (a watch more
    /// than 4,096 changes, or 1 MiB of them, behind is told how many it missed instead:
    /// [`StatusChange::Lagged`](super::StatusChange::Lagged)).
    pub fn watch(&self) -> StatusWatch {
        StatusWatch::new(self.shards.clone())
    }

    /// Per-server and total counters and latency, over every shard.
    pub fn stats(&self) -> FleetStats {
        self.shards.stats()
    }

    /// The fleet driver's read counters of every server that has had a transport (shard by
    /// shard, each in slot order): a diagnostic of read fairness (see [`ReadCounters`]).
    pub fn read_counters(&self) -> Vec<(ServerName, ReadCounters)> {
        self.shards.read_counters()
    }

    /// How many shards (core fleets, each with a driver of its own) the servers are spread
    /// over.
    pub fn shards(&self) -> usize {
        self.shards.shards.len()
    }

    /// Logs every server off; each closes after its Goodbye.
    pub fn logoff_all(&self) {
        for shard in &self.shards.shards {
            let now = (shard.now)();
            shard.call(|s| s.fleet.logoff_all(now));
        }
    }

    /// Closes the fleet at once (no Logoff): pending actions fail, the event stream ends
    /// once drained, no server can be added any more.
    pub fn close(&self) {
        self.shards.close();
    }
}

/// One server's part of [`FleetHandle::send_all`]: an action to wait for, or a reply known
/// at once (the server refused it).
enum Answer<'a> {
    Wait(CancelOnDrop<'a>),
    Now(Reply),
}

/// Waits for a routed action's outcome on the shard that took it.
pub(super) async fn wait(shard: &Shard, routed: Routed, mark: Option<u64>) -> Reply {
    wait_guarded(CancelOnDrop {
        shard,
        key: (routed.server, routed.id),
        mark,
        armed: true,
    })
    .await
}

/// [`wait`] for the action `guard` cancels if the caller stops waiting.
async fn wait_guarded(guard: CancelOnDrop<'_>) -> Reply {
    answered(&guard).await;
    take_reply(guard)
}

/// Waits until the action `guard` watches has its outcome (or none will come: its waiter
/// is gone, or the shard's driver), without taking it.
async fn answered(guard: &CancelOnDrop<'_>) {
    poll_fn(|cx| {
        let mut shared = guard.shard.lock();
        let done = shared.driver_done;
        match shared.waiters.get_mut(&guard.key) {
            Some(w) if w.outcome.is_none() && !done => {
                w.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    })
    .await;
}

/// Takes the outcome [`answered`] waited for, disarming `guard`.
fn take_reply(mut guard: CancelOnDrop<'_>) -> Reply {
    let outcome = {
        let mut shared = guard.shard.lock();
        shared.waiters.remove(&guard.key).and_then(|w| w.outcome)
    };
    guard.armed = false;
    Reply {
        server: guard.key.0.clone(),
        result: match outcome {
            Some(o) => o.map_err(AmiError::Action),
            // The shard's driver is gone: the fleet closed it, or it stopped on its own.
            None => Err(AmiError::Closed {
                reason: ami_proto::DisconnectReason::LocalClose,
            }),
        },
    }
}

/// The merged event stream: items from every server, each naming its server, taken from the
/// servers in rotation so a flooding server cannot push out a quiet one's events (it loses
/// its own, counted as gaps naming it). Across shards, each shard's turn hands out the same
/// number of items per server with items, so shares stay even whichever shard holds a
/// server. Ends once the fleet is closed and drained (also once every handle is dropped
/// and every server has closed for good). Also a [`futures_core::Stream`], so
/// `StreamExt` from futures or futures-lite works.
///
/// A program that only routes actions may drop it: from then on no server keeps events
/// (each one counted in its `Stats::events_dropped`), servers added later included.
pub struct FleetEvents {
    pub(crate) shards: Arc<Shards>,
    /// The shard whose turn is next.
    next: usize,
    /// Items taken from the shards, still as they waited in their queues: each event is
    /// copied out ([`FleetQueued::into_item`]) as it is handed out, outside any lock, so the
    /// shard's driver never waits on the reader's copies.
    pub(crate) buf: VecDeque<FleetQueued>,
    batch: Vec<FleetQueued>,
    /// `poll_recv` has given its thread back once since it last handed out a batch.
    yielded: bool,
}

impl FleetEvents {
    pub(crate) fn new(shards: Arc<Shards>) -> FleetEvents {
        FleetEvents {
            shards,
            next: 0,
            buf: VecDeque::new(),
            batch: Vec::new(),
            yielded: false,
        }
    }
}

impl std::fmt::Debug for FleetEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetEvents")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl futures_core::Stream for FleetEvents {
    type Item = FleetItem;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FleetItem>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for FleetEvents {
    fn drop(&mut self) {
        // Nobody reads the merged stream any more (a program that only routes actions):
        // every shard's fleet keeps no events from here on, for its servers now and later
        // (counted as dropped on each server).
        // The items this stream took and did not hand out go back to the shard holding
        // their server (the first one for a server since removed), which counts them.
        let mut unread: Vec<Vec<FleetQueued>> =
            self.shards.shards.iter().map(|_| Vec::new()).collect();
        for item in self.buf.drain(..).chain(self.batch.drain(..)) {
            let at = self.shards.index_of(item.server.as_str()).unwrap_or(0);
            if let Some(list) = unread.get_mut(at) {
                list.push(item);
            }
        }
        for (shard, items) in self.shards.shards.iter().zip(unread) {
            shard.call(|s| s.fleet.close_event_stream(items));
        }
        self.shards.leave_stream();
    }
}

/// What one look at the shards found.
enum Look {
    Items,
    Empty,
    Over,
}

impl FleetEvents {
    /// Takes one batch from the next shard with items, in rotation; with `waker`, parks it
    /// on every shard found empty (under that shard's lock, so no wake-up is lost).
    fn look(&mut self, waker: Option<&std::task::Waker>) -> Look {
        let n = self.shards.shards.len();
        let mut over = true;
        for k in 0..n {
            let i = (self.next + k) % n;
            let Some(shard) = self.shards.shards.get(i) else {
                continue;
            };
            let mut shared = shard.lock();
            let with_items = shared.fleet.servers_with_events();
            // A server keeps its turn after its last item (a trailing gap may follow), so a
            // shard can list servers and still move nothing: that is an empty shard, never
            // an item (an `Items` with nothing in `buf` ended `recv` as if the fleet closed).
            let max = (with_items * ITEMS_PER_SERVER).min(MAX_BATCH);
            if with_items > 0 && shared.fleet.poll_queued_events(&mut self.batch, max) > 0 {
                let mut io = super::shared::Io::default();
                shared.reader_took(&mut io);
                drop(shared);
                io.wake_all();
                self.buf.extend(self.batch.drain(..));
                self.next = i + 1;
                return Look::Items;
            }
            if !shared.stream_over() {
                over = false;
                if let Some(w) = waker {
                    shared.event_waker = Some(w.clone());
                }
            }
        }
        if over {
            Look::Over
        } else {
            Look::Empty
        }
    }

    /// Polls for the next item; `Ready(None)` once the fleet is closed and every queue is
    /// empty. Items are taken from the shards in batches under one lock and handed out from
    /// here.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<FleetItem>> {
        if let Some(item) = self.buf.pop_front() {
            return Poll::Ready(Some(item.into_item()));
        }
        // A consumer that always finds items would never give its thread back (this future
        // is not the runtime's, so no runtime budget applies): one turn per batch lets the
        // drivers on the same thread read.
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut closed_now = false;
        loop {
            match self.look(Some(cx.waker())) {
                Look::Items => {
                    self.yielded = false;
                    return Poll::Ready(self.buf.pop_front().map(FleetQueued::into_item));
                }
                Look::Over => return Poll::Ready(None),
                // No handle left and every server closed for good: nothing more can come,
                // so the fleet closes, and the stream ends once the shards have let their
                // transports go (they wake it then).
                Look::Empty if !closed_now && self.shards.close_if_finished() => {
                    closed_now = true;
                }
                // Woken by a shard with items: look again at once.
                Look::Empty => return Poll::Pending,
            }
        }
    }

    /// The next item; `None` once the fleet is closed and every queue is empty. Cancel-safe,
    /// as [`Events::recv`](crate::Events::recv) is. It may return `Pending` once between
    /// batches even with items queued (a yield that keeps one flooding server from holding
    /// the task): to look without waiting, use [`try_recv`](Self::try_recv), not
    /// `recv().now_or_never()`.
    pub async fn recv(&mut self) -> Option<FleetItem> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Moves up to `max` items into `out` (waiting for at least one); returns how many, 0
    /// once the fleet is closed and drained (or when `max` is 0), as
    /// [`Events::recv_many`](crate::Events::recv_many) does.
    pub async fn recv_many(&mut self, out: &mut Vec<FleetItem>, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        let Some(first) = self.recv().await else {
            return 0;
        };
        out.push(first);
        let mut n = 1;
        while n < max {
            match self.try_recv() {
                Some(item) => {
                    out.push(item);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// Items already taken from the shards and not yet handed out: the next this many
    /// calls hand them out before anything taken later (a removed server's last gap, say).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Items of the removed server named `name` this stream has still to hand out: those
    /// already taken from the shards (among the [`buffered`](Self::buffered) ones) and the
    /// last ones it left on its shard (its final gap, its marks; see
    /// [`Fleet::removed_items`](ami_proto::fleet::Fleet::removed_items)). Nothing more of a
    /// removed server comes, so a reader that must put something after its last item (a
    /// handover marker) waits for this many of its items, however many of other servers
    /// pass meanwhile. For a server still in the fleet, what its client queues is not
    /// counted.
    pub fn removed_server_items(&self, name: &str) -> usize {
        let taken = self
            .buf
            .iter()
            .filter(|q| q.server.as_str() == name)
            .count();
        let left: usize = self
            .shards
            .shards
            .iter()
            .map(|shard| shard.lock().fleet.removed_items(name))
            .sum();
        taken + left
    }

    /// The next item if one is queued (taken with a batch under one lock, like `recv`).
    pub fn try_recv(&mut self) -> Option<FleetItem> {
        if self.buf.is_empty() {
            self.look(None);
        }
        self.buf.pop_front().map(FleetQueued::into_item)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use ami_proto::fleet::FleetConfig;
    use ami_proto::{Input, StreamItem};
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Waker};
    use std::time::Instant;

    /// Brings server `name` of a one-shard fleet to ready over a scripted transport.
    pub(in crate::fleet) fn ready(shards: &Shards, name: &str) {
        let endpoint = Endpoint {
            target: ("127.0.0.1", 5038).into(),
            #[cfg(feature = "tls")]
            tls: None,
        };
        let config = ClientConfig::builder("admin", "amp111").build().unwrap();
        shards.add(name, config, endpoint).unwrap();
        log_in(shards, name);
    }

    /// Takes what server `id`'s client wrote (as the transport would) and returns the
    /// ActionID of its action.
    fn take_written_action_id(
        fleet: &mut ami_proto::fleet::Fleet,
        id: ami_proto::fleet::ServerId,
    ) -> String {
        let wire = String::from_utf8(fleet.transmit(id).to_vec()).unwrap();
        fleet.advance_transmit(id, wire.len());
        wire.lines()
            .find_map(|l| l.strip_prefix("ActionID: "))
            .unwrap()
            .to_string()
    }

    /// Brings server `name`, added and asked to connect, to ready over a scripted
    /// transport: connected, the banner, the Login answered.
    pub(in crate::fleet) fn log_in(shards: &Shards, name: &str) {
        let shard = shards.shard_of(name).unwrap();
        shard.call(|s| {
            let now = Instant::now();
            let id = s.fleet.id(name).unwrap();
            s.fleet.handle_input(now, id, Input::Connected);
            s.fleet.handle_input(
                now,
                id,
                Input::Received(b"Asterisk Call Manager/11.0.0\r\n"),
            );
            let action_id = take_written_action_id(&mut s.fleet, id);
            let reply = format!(
                "Response: Success\r\nActionID: {action_id}\r\nMessage: Authentication accepted\r\n\r\n"
            );
            s.fleet.handle_input(now, id, Input::Received(reply.as_bytes()));
            assert!(s.fleet.status(name).unwrap().is_ready());
        });
    }

    fn receive(shards: &Shards, name: &str, bytes: &[u8]) {
        shards.shard_of(name).unwrap().call(|s| {
            let id = s.fleet.id(name).unwrap();
            s.fleet
                .handle_input(Instant::now(), id, Input::Received(bytes));
        });
    }

    /// A one-shard fleet whose server "a" is ready, and its stream past the Ready notice.
    fn one_ready_server() -> (Arc<Shards>, FleetEvents) {
        let shards = Arc::new(Shards::new(FleetConfig::default(), 1, Instant::now));
        let mut events = FleetEvents::new(shards.clone());
        ready(&shards, "a");
        while events.try_recv().is_some() {}
        (shards, events)
    }

    /// `n` Hangup events, `Uniqueid` 0 to n - 1.
    fn hangups(n: usize) -> String {
        (0..n)
            .map(|i| format!("Event: Hangup\r\nUniqueid: {i}\r\n\r\n"))
            .collect()
    }

    /// Polls `recv` up to `polls` times (it yields once per batch): `None` while pending.
    fn poll_recv(events: &mut FleetEvents, polls: usize) -> Option<Option<FleetItem>> {
        let mut recv = std::pin::pin!(events.recv());
        poll_up_to(polls, |cx| recv.as_mut().poll(cx))
    }

    /// Polls up to `polls` times with a no-op waker: `None` while pending.
    fn poll_up_to<T>(polls: usize, mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Option<T> {
        let mut cx = Context::from_waker(Waker::noop());
        (0..polls).find_map(|_| match poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    }

    #[test]
    fn recv_waits_when_a_server_keeps_its_turn_after_its_last_item() {
        let (shards, mut events) = one_ready_server();
        // Exactly one batch's worth: the batch takes the last item without finding the
        // queue empty, so the server keeps its turn.
        let burst = hangups(ITEMS_PER_SERVER);
        receive(&shards, "a", burst.as_bytes());
        for i in 0..ITEMS_PER_SERVER {
            let item = poll_recv(&mut events, 4).flatten();
            assert!(
                item.as_ref().is_some_and(
                    |i| matches!(&i.item, StreamItem::Event(e) if e.event() == Some("Hangup"))
                ),
                "item {i}: {item:?}"
            );
        }
        // The server still has its turn (a trailing gap could follow) but nothing to give:
        // the stream is open and empty, so recv waits; it never says the fleet ended.
        assert_eq!(shards.shards[0].lock().fleet.servers_with_events(), 1);
        assert!(poll_recv(&mut events, 4).is_none());
        assert!(events.try_recv().is_none());
        receive(&shards, "a", b"Event: Hangup\r\nUniqueid: 2\r\n\r\n");
        let next = poll_recv(&mut events, 4).flatten();
        assert!(next.is_some(), "{next:?}");
        // Closed and drained: now, and only now, the stream ends.
        shards.close();
        let mut last = Vec::new();
        while let Some(Some(item)) = poll_recv(&mut events, 4) {
            last.push(item.item);
            assert!(last.len() < 8, "{last:?}");
        }
        assert!(
            matches!(last[..], [StreamItem::Disconnected { .. }]),
            "{last:?}"
        );
        assert_eq!(poll_recv(&mut events, 4), Some(None));
    }

    #[test]
    fn a_removed_servers_items_are_counted_until_the_stream_hands_out_its_last() {
        let (shards, mut events) = one_ready_server();
        receive(&shards, "a", hangups(5).as_bytes());
        // One handed out, four taken and held by the stream.
        assert!(events.try_recv().is_some());
        assert_eq!(events.buffered(), 4);
        // Two more reach the core, then the removal makes them its final gap.
        receive(&shards, "a", hangups(2).as_bytes());
        assert!(shards.remove("a"));
        assert_eq!(events.removed_server_items("a"), 5, "4 held, then the gap");
        let mut last = Vec::new();
        while let Some(item) = events.try_recv() {
            last.push(item.item);
            assert_eq!(events.removed_server_items("a"), 5 - last.len());
        }
        assert!(
            matches!(last[..], [.., StreamItem::Gap { dropped: 2 }]),
            "{last:?}"
        );
        assert_eq!(last.len(), 5, "{last:?}");
    }

    /// Logs every server off and has each answer Goodbye and hang up, as Asterisk does.
    fn log_off_and_hang_up(shards: &Shards, names: &[&str]) {
        for name in names {
            shards.shard_of(name).unwrap().call(|s| {
                let now = Instant::now();
                let id = s.fleet.id(name).unwrap();
                let action_id = take_written_action_id(&mut s.fleet, id);
                let goodbye = format!(
                    "Response: Goodbye\r\nActionID: {action_id}\r\nMessage: Thanks for all the fish.\r\n\r\n"
                );
                s.fleet.handle_input(now, id, Input::Received(goodbye.as_bytes()));
                s.fleet.handle_input(now, id, Input::Eof);
            });
        }
    }

    /// Polls until the stream ends (every item it gives counted), or `None` if it waits.
    fn drain_to_end(events: &mut FleetEvents) -> Option<usize> {
        let mut items = 0;
        loop {
            match poll_recv(events, 4)? {
                Some(_) => items += 1,
                None => return Some(items),
            }
            assert!(items < 64, "the stream goes on");
        }
    }

    #[test]
    fn the_stream_ends_when_every_server_logged_off_after_the_last_handle_went() {
        let shards = Arc::new(Shards::new(FleetConfig::default(), 1, Instant::now));
        let fleet = FleetHandle {
            shards: shards.clone(),
        };
        let mut events = FleetEvents::new(shards.clone());
        ready(&shards, "a");
        ready(&shards, "b");
        fleet.logoff_all();
        drop(fleet);
        // No handle, but both servers are still logging off: their events may still come.
        assert_eq!(drain_to_end(&mut events), None, "a server is still open");
        log_off_and_hang_up(&shards, &["a"]);
        assert_eq!(drain_to_end(&mut events), None, "b is still open");
        log_off_and_hang_up(&shards, &["b"]);
        // Nobody can add or reopen a server: nothing more can come, so the stream ends
        // (it would otherwise wait for ever).
        assert_eq!(
            drain_to_end(&mut events),
            Some(1),
            "b's Disconnected, then the end"
        );
    }

    #[test]
    fn the_stream_ends_when_the_last_handle_goes_after_every_server_closed() {
        let shards = Arc::new(Shards::new(FleetConfig::default(), 1, Instant::now));
        let fleet = FleetHandle {
            shards: shards.clone(),
        };
        let extra = fleet.clone();
        let mut events = FleetEvents::new(shards.clone());
        ready(&shards, "a");
        fleet.close_server("a").unwrap();
        assert_eq!(
            drain_to_end(&mut events),
            None,
            "a handle could add a server"
        );
        drop(fleet);
        assert_eq!(drain_to_end(&mut events), None, "one handle is left");
        drop(extra);
        assert!(drain_to_end(&mut events).is_some(), "the stream ends");
    }

    fn fleet_status(shards: &Shards, name: &str) -> Option<ServerStatus> {
        shards.shard_of(name)?.lock().fleet.status(name).cloned()
    }

    /// Polls the watch until it ends (`Some(changes seen)`), or `None` if it waits.
    fn watch_to_end(watch: &mut StatusWatch) -> Option<usize> {
        let mut seen = 0;
        loop {
            let mut next = std::pin::pin!(watch.changed());
            match poll_up_to(4, |cx| next.as_mut().poll(cx))? {
                Some(_) => seen += 1,
                None => return Some(seen),
            }
            assert!(seen < 64, "the watch goes on");
        }
    }

    #[test]
    fn a_watch_ends_once_no_handle_is_left_and_every_server_closed() {
        // FleetHandle's doc: the fleet closes "once no handle is left and every server has
        // closed for good (after logoff_all, say)"; StatusWatch::changed: "None once the
        // fleet is closed and every change was seen".
        let shards = Arc::new(Shards::new(FleetConfig::default(), 1, Instant::now));
        let fleet = FleetHandle {
            shards: shards.clone(),
        };
        // The program keeps its stream (another task reads it later, or only on news).
        let _events = FleetEvents::new(shards.clone());
        let mut watch = fleet.watch();
        ready(&shards, "a");
        fleet.logoff_all();
        drop(fleet);
        log_off_and_hang_up(&shards, &["a"]);
        assert!(
            matches!(
                fleet_status(&shards, "a"),
                Some(ServerStatus::Closed { .. })
            ),
            "a closed for good"
        );
        assert!(
            watch_to_end(&mut watch).is_some(),
            "no handle, every server closed for good: the fleet is closed, yet the watch \
             waits for ever (closed: {})",
            shards.shards[0].lock().closed
        );
    }

    #[test]
    fn a_server_backing_off_keeps_a_handleless_stream_open() {
        let shards = Arc::new(Shards::new(FleetConfig::default(), 1, Instant::now));
        let fleet = FleetHandle {
            shards: shards.clone(),
        };
        let mut events = FleetEvents::new(shards.clone());
        ready(&shards, "a");
        drop(fleet);
        // The session drops; the server will be tried again: its events may come back.
        shards.shard_of("a").unwrap().call(|s| {
            let id = s.fleet.id("a").unwrap();
            s.fleet.handle_input(Instant::now(), id, Input::Eof);
        });
        assert_eq!(drain_to_end(&mut events), None, "a retries");
    }

    #[test]
    fn recv_many_takes_at_most_max_and_nothing_for_zero() {
        let (shards, mut events) = one_ready_server();
        let burst = hangups(5);
        receive(&shards, "a", burst.as_bytes());
        let mut out = Vec::new();
        let take = |events: &mut FleetEvents, out: &mut Vec<FleetItem>, max: usize| {
            let mut many = std::pin::pin!(events.recv_many(out, max));
            poll_up_to(4, |cx| many.as_mut().poll(cx))
        };
        assert_eq!(take(&mut events, &mut out, 0), Some(0));
        assert!(out.is_empty(), "nothing taken for a max of 0");
        assert_eq!(take(&mut events, &mut out, 3), Some(3));
        assert_eq!(take(&mut events, &mut out, 3), Some(2));
        let ids: Vec<_> = out
            .iter()
            .filter_map(|i| match &i.item {
                StreamItem::Event(e) => e.get_str("Uniqueid").map(str::to_owned),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn the_merged_stream_as_a_stream_yields_the_same_items_and_ends_when_the_fleet_closes() {
        use futures_core::Stream;
        let (shards, mut events) = one_ready_server();
        let burst = hangups(3);
        receive(&shards, "a", burst.as_bytes());
        let next =
            |events: &mut FleetEvents| poll_up_to(4, |cx| Pin::new(&mut *events).poll_next(cx));
        let mut ids = Vec::new();
        let mut items = 0;
        while ids.len() < 3 {
            let item = next(&mut events).flatten().expect("an item");
            items += 1;
            assert!(items < 8, "{ids:?}");
            assert_eq!(item.server.as_str(), "a");
            if let StreamItem::Event(e) = &item.item {
                ids.extend(e.get_str("Uniqueid").map(str::to_owned));
            }
        }
        assert_eq!(ids, ["0", "1", "2"]);
        assert_eq!(next(&mut events), None, "open and empty: pending");
        shards.close();
        let mut last = Vec::new();
        while let Some(Some(item)) = next(&mut events) {
            last.push(item.item);
            assert!(last.len() < 8, "{last:?}");
        }
        assert!(
            matches!(last[..], [StreamItem::Disconnected { .. }]),
            "{last:?}"
        );
        assert_eq!(next(&mut events), Some(None), "ended");
    }

    #[test]
    fn dropping_send_all_before_its_replies_cancels_every_action_it_sent() {
        let shards = Arc::new(Shards::new(FleetConfig::default(), 1, Instant::now));
        shards.join();
        let fleet = FleetHandle {
            shards: shards.clone(),
        };
        ready(&shards, "a");
        ready(&shards, "b");
        let pending = |name: &str| {
            shards.shard_of(name).unwrap().call(|s| {
                s.fleet
                    .with_client(Instant::now(), name, |c, _| c.pending_actions())
                    .unwrap()
            })
        };
        {
            let mut all = std::pin::pin!(fleet.send_all(Action::new("Ping")));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(all.as_mut().poll(&mut cx).is_pending());
            assert_eq!(shards.shards[0].lock().waiters.len(), 2);
            assert_eq!((pending("a"), pending("b")), (1, 1));
        }
        assert!(
            shards.shards[0].lock().waiters.is_empty(),
            "no waiter left behind"
        );
        assert_eq!((pending("a"), pending("b")), (0, 0), "both cancelled");
    }

    use crate::tests::CountingWaker;

    /// While a server's reads are held, the reader's takes wake the driver only once the
    /// server may read again: a wake-up per batch that found the queue still too full cost
    /// a reader that is behind a fifth of its rate.
    #[test]
    fn a_take_wakes_a_held_driver_only_once_its_server_may_read_again() {
        use ami_proto::READ_AHEAD_BYTES;
        let (shards, mut events) = one_ready_server();
        let one = format!("Event: Flood\r\nPad: {}\r\n\r\n", "x".repeat(1000));
        // The read-ahead's worth and two and a half batches more.
        let n = READ_AHEAD_BYTES / one.len() + 5 * ITEMS_PER_SERVER / 2;
        receive(&shards, "a", one.repeat(n).as_bytes());
        let counter = Arc::new(CountingWaker(Default::default()));
        let wakes = || counter.0.load(std::sync::atomic::Ordering::SeqCst);
        shards.shard_of("a").unwrap().call(|s| {
            let id = s.fleet.id("a").unwrap();
            assert!(!s.hold_read(id), "the server is behind: held");
            s.timer_waker = Some(Waker::from(counter.clone()));
        });
        // Each batch is one take; the first two leave more than the read-ahead queued, the
        // third takes the rest.
        for batch in 0..2 {
            for _ in 0..ITEMS_PER_SERVER {
                assert!(events.try_recv().is_some(), "batch {batch}");
            }
            assert_eq!(wakes(), 0, "after batch {batch}");
        }
        while events.try_recv().is_some() {}
        assert_eq!(wakes(), 1, "once the server may read again");
    }
}
