//! The AMI side of the bridge: the tokio fleet (`ami_tokio::fleet`) holding the servers this
//! bridge serves. A server joins the fleet when its lease is taken and leaves it when the
//! lease is lost; actions go to a named server or to any ready one by the fleet's routing
//! policy; the fleet's merged stream (fair across servers, each server's queue bounded and
//! its drops counted as gaps) is read together with the lease markers by [`Merged`].

use crate::config::ServerSpec;
use crate::publish::{Stamp, Terms};
use ami_proto::{Action, Response, SendOptions, StreamItem};
use ami_tokio::fleet::{
    spawn_fleet, FleetConfig, FleetEvents, FleetHandle, FleetItem, Policy, Route, RouteFailed,
    ServerStatus,
};
use ami_tokio::AmiError;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// A server's index in the bridge's configuration.
pub(crate) type ServerIx = usize;

/// One item of the merged stream.
#[derive(Debug)]
pub(crate) enum UpItem {
    /// An item of the server's AMI stream: an event, a counted gap, a session boundary.
    Stream(StreamItem),
    /// This bridge took the server's lease (the first item of a tenure); `previous` names
    /// the bridge that held it before, if its lease had to be taken over.
    LeaseAcquired { previous: Option<String> },
    /// This bridge gives the server up cleanly (the last item of a tenure); `done` is told
    /// once JetStream stored the marker.
    LeaseReleased {
        done: Option<tokio::sync::oneshot::Sender<()>>,
        /// Why: `shutdown`, or what made the server unusable from here (`login_rejected`,
        /// `breaker_open`...; see [`unusable`]).
        reason: &'static str,
    },
}

/// What the publisher reads: the server, the lease term it was served under, the item.
pub(crate) type Tagged = (ServerIx, u64, UpItem);

/// The served servers, in the fleet.
pub(crate) struct Upstream {
    fleet: FleetHandle,
    servers: Arc<[ServerSpec]>,
    /// Servers in the fleet now (added on a lease, removed when it is lost).
    serving: Mutex<BTreeSet<ServerIx>>,
    policy: Policy,
    /// The terms the servers are served under: no action goes to a server past its
    /// term's renewal deadline (see [`Terms::may_act`]).
    terms: Arc<Terms>,
}

/// Why an action could not be handed to a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    /// This bridge does not serve that server (now).
    #[error("this bridge does not serve that server")]
    NotServed,
    /// No served server is ready.
    #[error("no server served by this bridge is ready")]
    NoneReady,
    /// The lease of a server served here was not renewed in time: another bridge may
    /// serve it now, so nothing goes to it (named, or picked for `ami.any.action`) until
    /// this bridge ends the term (the lease loop then takes the lease again if it can).
    #[error("the lease of {0} was not renewed in time (another bridge may serve it now); nothing was sent: retry")]
    Lapsed(String),
    /// The fleet refused it (it became unready meanwhile, its queue is full...).
    #[error("{0}")]
    Refused(String),
}

impl Upstream {
    /// An empty fleet for `servers` (on the current tokio runtime), routing `ami.any.action`
    /// by `policy`; `markers` carries the lease markers the [`Merged`] stream puts first.
    pub(crate) fn start(
        servers: Arc<[ServerSpec]>,
        policy: Policy,
        markers: mpsc::Receiver<Tagged>,
        terms: Arc<Terms>,
    ) -> (Upstream, Merged) {
        let (fleet, events) = spawn_fleet(FleetConfig::default());
        let index = servers
            .iter()
            .enumerate()
            .map(|(ix, s)| (s.name.clone(), ix))
            .collect();
        let merged = Merged {
            markers,
            events,
            index,
            terms: terms.clone(),
            session_term: vec![0; servers.len()],
            markers_open: true,
            releasing: Vec::new(),
            #[cfg(test)]
            after_item: None,
        };
        let upstream = Upstream {
            fleet,
            servers,
            serving: Mutex::new(BTreeSet::new()),
            policy,
            terms,
        };
        (upstream, merged)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<ServerIx>> {
        // Only set inserts/removes run under the lock; a poisoned set is still consistent.
        self.serving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts serving `ix` (a no-op if it is served already).
    pub(crate) fn add(&self, ix: ServerIx) {
        let Some(spec) = self.servers.get(ix) else {
            return;
        };
        let mut serving = self.lock();
        if serving.contains(&ix) {
            return;
        }
        match self.fleet.add(
            &spec.name,
            spec.client.clone(),
            (spec.host.as_str(), spec.port),
        ) {
            Ok(()) => {
                serving.insert(ix);
            }
            Err(e) => log::warn!("{}: cannot join the fleet: {e}", spec.name),
        }
    }

    /// Stops serving: the session closes at once (pending actions fail); whatever of it is
    /// still queued belongs to a lease term no longer held: [`Merged`] tags it term 0, and
    /// the publisher discards it (counted, logged).
    pub(crate) fn remove(&self, ix: ServerIx) {
        if self.lock().remove(&ix) {
            if let Some(spec) = self.servers.get(ix) {
                self.fleet.remove(&spec.name);
            }
        }
    }

    /// The served servers and their status.
    pub(crate) fn statuses(&self) -> Vec<(ServerIx, ServerStatus)> {
        let serving = self.lock().clone();
        serving
            .into_iter()
            .filter_map(|ix| Some((ix, self.fleet.status(&self.servers.get(ix)?.name)?)))
            .collect()
    }

    /// The status of `ix` while it is served here (`None` when it is not).
    pub(crate) fn status(&self, ix: ServerIx) -> Option<ServerStatus> {
        if !self.lock().contains(&ix) {
            return None;
        }
        self.fleet.status(&self.servers.get(ix)?.name)
    }

    /// Checks that a request can be routed now, before anything is claimed for it: `Some(ix)`
    /// names a server (it must be served here), `None` means any (one served server must be
    /// ready). The fleet decides again when the action is sent.
    pub(crate) fn check(&self, to: Option<ServerIx>) -> Result<(), RouteError> {
        let serving = self.lock();
        let now = Stamp::now();
        match to {
            Some(ix) if serving.contains(&ix) => self.lapsed(ix, now).map_or(Ok(()), Err),
            Some(_) => Err(RouteError::NotServed),
            None => {
                let ready = serving.iter().any(|ix| {
                    self.terms.may_act(*ix, now)
                        && self.servers.get(*ix).is_some_and(|s| {
                            matches!(self.fleet.status(&s.name), Some(ServerStatus::Ready { .. }))
                        })
                });
                if ready {
                    Ok(())
                } else {
                    Err(RouteError::NoneReady)
                }
            }
        }
    }

    /// Sends `action` to `to` (or to a ready server by the routing policy) and waits for its
    /// outcome: the server it went to and the result there.
    pub(crate) async fn send(
        &self,
        to: Option<ServerIx>,
        action: Action,
        options: SendOptions,
    ) -> Result<(ServerIx, Result<Response, AmiError>), RouteError> {
        // Looked at right before the action is handed to the fleet, as the publisher looks
        // before each publish: a holder that stalled past a renewal deadline (the control
        // task, which ends such a term, not run yet) sends nothing more to that server.
        let route = {
            let serving = self.lock();
            let now = Stamp::now();
            match to {
                Some(ix) => {
                    if !serving.contains(&ix) {
                        return Err(RouteError::NotServed);
                    }
                    if let Some(lapsed) = self.lapsed(ix, now) {
                        return Err(lapsed);
                    }
                    let spec = self.servers.get(ix).ok_or(RouteError::NotServed)?;
                    Route::Server(spec.name.as_str())
                }
                // The fleet's policy may pick any server in it: none may be past its
                // deadline (the caller ends such terms first, so this is a race of
                // microseconds, answered not_sent).
                None => {
                    if let Some(lapsed) = serving.iter().find_map(|ix| self.lapsed(*ix, now)) {
                        return Err(lapsed);
                    }
                    Route::Any(self.policy)
                }
            }
        };
        match self.fleet.send_with(route, action, options).await {
            Ok(reply) => {
                let ix = self
                    .index_of(reply.server.as_str())
                    .ok_or(RouteError::NotServed)?;
                Ok((ix, reply.result))
            }
            Err(RouteFailed::Route(ami_proto::fleet::RouteError::NoServer { .. })) => {
                Err(RouteError::NoneReady)
            }
            // The server's client refused the action itself (a reserved field...): its
            // outcome, as a session would have given it.
            Err(RouteFailed::Route(ami_proto::fleet::RouteError::Send { server, error })) => {
                let ix = self
                    .index_of(server.as_str())
                    .ok_or(RouteError::NotServed)?;
                Ok((ix, Err(AmiError::Send(error))))
            }
            Err(e) => Err(RouteError::Refused(e.to_string())),
        }
    }

    /// Why no action may go to `ix` at `now`, if its term is past its renewal deadline.
    fn lapsed(&self, ix: ServerIx, now: Stamp) -> Option<RouteError> {
        if self.terms.may_act(ix, now) {
            return None;
        }
        let name = self.servers.get(ix).map_or("", |s| s.name.as_str());
        Some(RouteError::Lapsed(name.to_string()))
    }

    fn index_of(&self, name: &str) -> Option<ServerIx> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// Logs every served server off (the core's Logoff: its queued actions are not sent,
    /// written ones still get their answers, then `Logoff`, closed on `Goodbye` or EOF) and
    /// waits, at most `limit`, until each has closed. Returns how many had not by then:
    /// they are closed at once when they leave the fleet. A `limit` over
    /// [`MAX_SETTING_DURATION`](ami_proto::MAX_SETTING_DURATION) (a year) is taken as that.
    pub(crate) async fn logoff_all(&self, limit: std::time::Duration) -> usize {
        // `Duration::MAX` ("as long as it takes") is more than an `Instant` can hold: added
        // as it is, it panicked the stop halfway, sessions not logged off, leases kept.
        let deadline = tokio::time::Instant::now() + limit.min(ami_proto::MAX_SETTING_DURATION);
        // Watched before the first Logoff: a Goodbye that comes at once is not missed.
        let mut watch = self.fleet.watch();
        let names: Vec<&str> = self
            .lock()
            .iter()
            .filter_map(|ix| Some(self.servers.get(*ix)?.name.as_str()))
            .collect();
        for name in &names {
            if let Err(e) = self.fleet.logoff(name) {
                log::warn!("{name}: cannot log off: {e}");
            }
        }
        let all_closed = async {
            while self.open_sessions() > 0 {
                if watch.changed().await.is_none() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, all_closed).await;
        // What a session received up to its Goodbye (its last events, then its end) is left
        // for the merged stream to take: the lease loop removes the server next, and a
        // removal turns what its client still holds into a gap and drops the session's end.
        // Looked at every 10 ms: nothing tells when the stream took a client's last item,
        // and the reader (the publisher) takes them within a few milliseconds.
        let taken = async {
            while names
                .iter()
                .any(|name| self.fleet.has_stream_items(name) == Some(true))
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout_at(deadline, taken).await;
        self.open_sessions()
    }

    /// Served sessions not closed yet.
    pub(crate) fn open_sessions(&self) -> usize {
        self.statuses()
            .iter()
            .filter(|(_, status)| !matches!(status, ServerStatus::Closed { .. }))
            .count()
    }

    /// Closes every session.
    pub(crate) fn close_all(&self) {
        self.lock().clear();
        self.fleet.close();
    }
}

/// Why a served server cannot be used from this bridge, as the `reason` of its
/// `lease_released` marker, or `None` while it can (ready, or on its way there): its client
/// stopped for good (`login_rejected`: a final login rejection), or its circuit breaker
/// opened (`breaker_open`: that many connects in a row failed from here). Another bridge
/// may log in where this one cannot (its own password, its own route to the server).
pub(crate) fn unusable(status: &ServerStatus) -> Option<&'static str> {
    match status {
        ServerStatus::BreakerOpen { .. } => Some("breaker_open"),
        ServerStatus::Closed { reason } => Some(reason.kind().as_str()),
        _ => None,
    }
}

/// The publisher's input: lease markers, then the fleet's items, each tagged with the lease
/// term its server is served under.
///
/// Order: a marker is queued before its server joins the fleet, so draining the markers
/// after every batch taken from the fleet, before its first item goes on, puts each
/// `lease_acquired` before the events of its session. Items of a server from before its
/// current term (a final gap of a session that ended when a lease was lost) are dropped:
/// each session starts with `StreamItem::Ready`, and only items after a `Ready` seen under
/// the current term pass.
///
/// A `lease_released` marker is queued after its server left the fleet; what the fleet still
/// holds of it (items already taken from the core, then the final gap and marks the removal
/// left on its shard, see [`FleetEvents::removed_server_items`]) must go before it, and
/// nothing more of it can come. So the marker waits for exactly that many items of its
/// server, whatever passes of the others, and goes out with the last of them (at once when
/// there is none). Markers of other servers do not wait behind it (a `lease_acquired` must
/// precede its session's items, which the fleet may already hold); a later marker of its
/// own server puts it out first.
pub(crate) struct Merged {
    markers: mpsc::Receiver<Tagged>,
    events: FleetEvents,
    index: HashMap<String, ServerIx>,
    terms: Arc<Terms>,
    /// Per server: the term under which its current session's `Ready` was seen.
    session_term: Vec<u64>,
    markers_open: bool,
    /// The `lease_released` markers waiting for their servers' last items, one per server.
    releasing: Vec<Release>,
    /// Tests only: run after each item `recv_many` takes while it fills a batch, so that a
    /// test can make a lease change happen between two looks at the fleet.
    #[cfg(test)]
    after_item: Option<Box<dyn FnMut() + Send>>,
}

/// A `lease_released` marker waiting for its server's last items.
struct Release {
    /// The server being released.
    server: ServerIx,
    /// The marker, then any later `lease_released` of its server (a give-up and a stop both
    /// releasing it), which go out with it, in order.
    markers: Vec<Tagged>,
    /// Items of its server the fleet stream still has to hand out (never 0: with none
    /// left the marker goes at once).
    left: usize,
}

impl Merged {
    /// Moves up to `max` items into `out` (a server's waiting markers go out together, and
    /// with its last item; markers queued before a batch taken from the fleet go before it:
    /// either may make a few more), waiting for at least one; 0 once the fleet ended.
    pub(crate) async fn recv_many(&mut self, out: &mut Vec<Tagged>, max: usize) -> usize {
        let start = out.len();
        let limit = start + max;
        loop {
            self.drain_markers(out, limit, None);
            while out.len() < limit {
                // Nothing held: the next item comes from a batch taken now, which may hold
                // the first items of a session whose lease_acquired was queued since the
                // markers were last looked at.
                let fresh = self.events.buffered() == 0;
                match self.events.try_recv() {
                    Some(item) => {
                        if fresh {
                            let in_hand = self.index.get(item.server.as_str()).copied();
                            self.drain_markers(out, usize::MAX, in_hand);
                        }
                        self.take(item, out);
                        #[cfg(test)]
                        if let Some(f) = self.after_item.as_mut() {
                            f();
                        }
                    }
                    None => {
                        // The fleet holds nothing more of the releasing servers.
                        self.release_all(out, limit);
                        break;
                    }
                }
            }
            if out.len() > start {
                return out.len() - start;
            }
            tokio::select! {
                m = self.markers.recv(), if self.markers_open => match m {
                    Some(m) => self.marker(m, out, None),
                    None => self.markers_open = false,
                },
                item = self.events.recv() => match item {
                    Some(item) => {
                        // A marker queued before this item existed goes first.
                        let in_hand = self.index.get(item.server.as_str()).copied();
                        self.drain_markers(out, usize::MAX, in_hand);
                        self.take(item, out);
                    }
                    None => return out.len() - start,
                },
            }
        }
    }

    /// What this stream still holds (lease markers, what the fleet queued), taken without
    /// waiting, at most `max` items: for a reader that ends and must count what it never
    /// took. Items of a server not in the configuration are left out (none are queued).
    pub(crate) fn take_unread(&mut self, max: usize) -> Vec<(ServerIx, UpItem)> {
        let mut out: Vec<(ServerIx, UpItem)> = self
            .releasing
            .drain(..)
            .flat_map(|r| r.markers)
            .map(|(ix, _, item)| (ix, item))
            .collect();
        while out.len() < max {
            match self.markers.try_recv() {
                Ok((ix, _, item)) => out.push((ix, item)),
                Err(_) => break,
            }
        }
        while out.len() < max {
            let Some(item) = self.events.try_recv() else {
                break;
            };
            if let Some(&ix) = self.index.get(item.server.as_str()) {
                out.push((ix, UpItem::Stream(item.item)));
            }
        }
        out
    }

    /// Takes markers until `limit` (a `lease_released` waits for its server's last items).
    /// `in_hand`: the server of a fleet item taken out of the fleet stream and not yet
    /// passed on.
    fn drain_markers(&mut self, out: &mut Vec<Tagged>, limit: usize, in_hand: Option<ServerIx>) {
        while out.len() < limit {
            match self.markers.try_recv() {
                Ok(m) => self.marker(m, out, in_hand),
                Err(_) => break,
            }
        }
    }

    fn marker(&mut self, m: Tagged, out: &mut Vec<Tagged>, in_hand: Option<ServerIx>) {
        let waiting = self.releasing.iter().position(|r| r.server == m.0);
        if matches!(m.2, UpItem::LeaseReleased { .. }) {
            match waiting.and_then(|i| self.releasing.get_mut(i)) {
                Some(r) => r.markers.push(m),
                None => {
                    let server = m.0;
                    let left = self
                        .index
                        .iter()
                        .find(|(_, ix)| **ix == server)
                        .map_or(0, |(name, _)| self.events.removed_server_items(name))
                        + usize::from(in_hand == Some(server));
                    if left == 0 {
                        out.push(m);
                    } else {
                        self.releasing.push(Release {
                            server,
                            markers: vec![m],
                            left,
                        });
                    }
                }
            }
        } else {
            // A new lease of a server still being released: the old term is over (its
            // items left are tagged term 0, the publisher counts them discarded), and its
            // marker goes first.
            if let Some(i) = waiting {
                out.extend(self.releasing.remove(i).markers);
            }
            out.push(m);
        }
    }

    /// One fleet item; a waiting `lease_released` follows its server's last item, even past
    /// the caller's `max`: held, it would wait behind every item the fleet holds of the
    /// others, though nothing of its server is left.
    fn take(&mut self, item: FleetItem, out: &mut Vec<Tagged>) {
        let ix = self.index.get(item.server.as_str()).copied();
        self.tag(item, out);
        let Some(i) = self.releasing.iter().position(|r| Some(r.server) == ix) else {
            return;
        };
        let last = self.releasing.get_mut(i).is_some_and(|r| {
            r.left = r.left.saturating_sub(1);
            r.left == 0
        });
        if last {
            out.extend(self.releasing.remove(i).markers);
        }
    }

    /// Puts the waiting `lease_released` markers out, while there is room.
    fn release_all(&mut self, out: &mut Vec<Tagged>, limit: usize) {
        while out.len() < limit && !self.releasing.is_empty() {
            out.extend(self.releasing.remove(0).markers);
        }
    }

    fn tag(&mut self, item: FleetItem, out: &mut Vec<Tagged>) {
        let Some(&ix) = self.index.get(item.server.as_str()) else {
            return;
        };
        let term = self.terms.current(ix);
        let Some(session_term) = self.session_term.get_mut(ix) else {
            return;
        };
        if matches!(item.item, StreamItem::Ready { .. }) {
            *session_term = term;
        }
        // Term 0 (not served) or a session of an older term: the publisher counts it as
        // discarded.
        let term = if *session_term == term { term } else { 0 };
        out.push((ix, term, UpItem::Stream(item.item)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ami_proto::ClientConfig;
    use ami_sim::tcp::TcpFront;
    use ami_sim::SimConfig;
    use std::time::Duration;
    use tokio::time::timeout;

    /// A one-shard tokio fleet and `n` ami-sim servers (`s0`, `s1`...; none added yet),
    /// read through a [`Merged`] with its marker channel, as the bridge has them.
    struct Rig {
        fronts: Vec<TcpFront>,
        fleet: FleetHandle,
        markers: mpsc::Sender<Tagged>,
        merged: Merged,
        terms: Arc<Terms>,
    }

    impl Rig {
        fn new(n: usize) -> Rig {
            Rig::sharded(n, 1)
        }

        /// The same over `shards` shards (servers added in order go to shard 0, 1... in
        /// turn: each to the shard with the fewest).
        fn sharded(n: usize, shards: usize) -> Rig {
            let fronts = (0..n)
                .map(|_| TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap())
                .collect();
            let (fleet, events) =
                ami_tokio::fleet::spawn_fleet_sharded(FleetConfig::default(), shards);
            let (markers_tx, markers) = mpsc::channel(16);
            let terms = Arc::new(Terms::new(n));
            let merged = Merged {
                markers,
                events,
                index: (0..n).map(|i| (format!("s{i}"), i)).collect(),
                terms: terms.clone(),
                session_term: vec![0; n],
                markers_open: true,
                releasing: Vec::new(),
                after_item: None,
            };
            Rig {
                fronts,
                fleet,
                markers: markers_tx,
                merged,
                terms,
            }
        }

        /// Adds server `s<i>`, logging in with `client`.
        fn add(&self, i: usize, client: ClientConfig) {
            let port = self.fronts[i].local_addr().port();
            self.fleet
                .add(&format!("s{i}"), client, ("127.0.0.1", port))
                .unwrap();
        }

        /// `n` servers over `shards` shards, each logged in, with what the logins brought
        /// read: nothing is taken out of the core when a test begins.
        async fn serving(n: usize, shards: usize) -> Rig {
            let mut rig = Rig::sharded(n, shards);
            for i in 0..n {
                rig.add(i, ClientConfig::builder("admin", "amp111").build().unwrap());
            }
            rig.until_ready(n).await;
            rig.read_idle().await;
            rig
        }

        /// Has each server `i` of `floods` send its `n` UserEvents, and waits until the core
        /// queued all of them.
        async fn flood(&self, floods: &[(usize, usize)]) {
            let before = self.fleet.stats().total.events_queued;
            for &(i, n) in floods {
                self.fronts[i].with_server(|sim, now| sim.emit_user_events(now, n));
            }
            let n: usize = floods.iter().map(|&(_, n)| n).sum();
            self.until_queued(before + n as u64).await;
        }

        /// Reads the stream until `n` sessions were `Ready`.
        async fn until_ready(&mut self, n: usize) {
            let mut out = Vec::new();
            let mut ready = 0;
            while ready < n {
                out.clear();
                timeout(
                    Duration::from_secs(10),
                    self.merged.recv_many(&mut out, 1024),
                )
                .await
                .expect("the servers log in");
                ready += out
                    .iter()
                    .filter(|(_, _, item)| matches!(item, UpItem::Stream(StreamItem::Ready { .. })))
                    .count();
            }
        }

        /// Reads whatever the stream has until it is quiet for 300 ms (what the logins
        /// brought), so that nothing is taken out of the core when a test begins.
        /// Returns the servers of the items read, in order.
        async fn read_idle(&mut self) -> Vec<ServerIx> {
            let mut out = Vec::new();
            let mut servers = Vec::new();
            loop {
                let read = self.merged.recv_many(&mut out, 1024);
                if timeout(Duration::from_millis(300), read).await.is_err() {
                    return servers;
                }
                servers.extend(out.drain(..).map(|(ix, _, _)| ix));
            }
        }

        /// Reads the stream until a `lease_released` marker went out: the items before it,
        /// in order (the server, the item), beginning with `out`'s.
        async fn until_released(&mut self, mut out: Vec<Tagged>) -> Vec<(ServerIx, UpItem)> {
            let mut before = Vec::new();
            loop {
                for (ix, _, item) in out.drain(..) {
                    if matches!(item, UpItem::LeaseReleased { .. }) {
                        return before;
                    }
                    before.push((ix, item));
                }
                timeout(
                    Duration::from_secs(10),
                    self.merged.recv_many(&mut out, 1024),
                )
                .await
                .expect("the marker goes out");
            }
        }

        /// Waits until the core's queues took `n` events in all.
        async fn until_queued(&self, n: u64) {
            let queued = async {
                while self.fleet.stats().total.events_queued < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            timeout(Duration::from_secs(10), queued)
                .await
                .expect("the events reach the core's queues");
        }

        /// Queues server `ix`'s `lease_released` marker for `term` (after it left the
        /// fleet, as the lease loop does).
        async fn release(&self, ix: ServerIx, term: u64, reason: &'static str) {
            let marker = UpItem::LeaseReleased { done: None, reason };
            self.markers.send((ix, term, marker)).await.unwrap();
        }
    }

    /// Events each server sends: more than its share of one take of the fleet stream
    /// (1,024 items a server), so that a take is full.
    const EVENTS: u64 = 2000;

    /// A `lease_released` marker goes after every item of its server that the fleet stream
    /// already took out of the core. With four flooding servers on one shard, one take holds
    /// 4,096 items (`ami-async`'s `MAX_BATCH`), a quarter of them the removed server's,
    /// spread through it; when the marker went after a fixed count of 1,024 items, it went
    /// out with some 770 of them still behind it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_released_marker_follows_what_the_stream_took_of_its_server() {
        let mut rig = Rig::new(4);
        for i in 0..4 {
            rig.add(i, ClientConfig::builder("admin", "amp111").build().unwrap());
        }
        rig.until_ready(4).await;
        let before = rig.fleet.stats().total.events_queued;
        for front in &rig.fronts {
            front.with_server(|sim, now| sim.emit_user_events(now, EVENTS as usize));
        }
        rig.until_queued(before + 4 * EVENTS).await;
        // One item: the stream takes a whole batch out of the core, every server's share.
        let mut out = Vec::new();
        assert_eq!(rig.merged.recv_many(&mut out, 1).await, 1);
        // The server leaves the fleet, then its marker is queued (as the lease loop does).
        assert!(rig.fleet.remove("s0"));
        rig.release(0, 0, "shutdown").await;
        assert_eq!(
            behind_released_s0(&mut rig.merged).await,
            0,
            "items of the released server came after its lease_released marker"
        );
    }

    /// Reads the stream to its end: how many items of `s0` came after its
    /// `lease_released` marker (which must have gone out).
    async fn behind_released_s0(merged: &mut Merged) -> usize {
        let mut out = Vec::new();
        let mut released = false;
        let mut behind = 0;
        loop {
            out.clear();
            match timeout(Duration::from_millis(500), merged.recv_many(&mut out, 1024)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            for (ix, _, item) in &out {
                match item {
                    UpItem::LeaseReleased { .. } => released = true,
                    UpItem::Stream(_) if released && *ix == 0 => behind += 1,
                    _ => {}
                }
            }
        }
        assert!(released, "the marker went out");
        behind
    }

    /// The marker waits for every item the stream took of its server, not for the first
    /// gap among them: a gap the server's client made earlier (its queue overflowed, then
    /// the reader took some and more events came) is not the end of what was taken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_released_marker_follows_items_taken_after_an_earlier_gap_of_its_server() {
        let mut rig = Rig::new(1);
        // Dropping the newest: the gap follows the events queued before the drops.
        let client = ClientConfig::builder("admin", "amp111")
            .event_queue_cap(1500)
            .overflow(ami_proto::OverflowPolicy::DropNewest)
            .build()
            .unwrap();
        rig.add(0, client);
        rig.until_ready(1).await;
        let (fleet, front) = (&rig.fleet, &rig.fronts[0]);
        let until = |queued: u64, dropped: u64| async move {
            loop {
                let t = fleet.stats().total;
                if t.events_queued >= queued && t.events_dropped >= dropped {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let base = fleet.stats().total;
        // 1,600 events on a queue of 1,500: the last 100 dropped (a gap to come).
        front.with_server(|sim, now| sim.emit_user_events(now, 1600));
        timeout(
            Duration::from_secs(10),
            until(base.events_queued + 1500, base.events_dropped + 100),
        )
        .await
        .expect("the storm reaches the core's queue");
        // One take (1,024 items), read whole: 476 events stay queued, then the gap.
        let mut out = Vec::new();
        assert_eq!(rig.merged.recv_many(&mut out, 1024).await, 1024);
        // 500 more: queued after the gap.
        front.with_server(|sim, now| sim.emit_user_events(now, 500));
        timeout(
            Duration::from_secs(10),
            until(base.events_queued + 2000, base.events_dropped + 100),
        )
        .await
        .expect("the second storm reaches the core's queue");
        // One item: the stream takes the next batch (476 events, the gap, 500 events).
        out.clear();
        assert_eq!(rig.merged.recv_many(&mut out, 1).await, 1);
        assert!(rig.fleet.remove("s0"));
        rig.release(0, 0, "shutdown").await;
        assert_eq!(
            behind_released_s0(&mut rig.merged).await,
            0,
            "items of the released server came after its lease_released marker"
        );
    }

    /// A `lease_acquired` marker of another server does not wait behind a `lease_released`
    /// one: that server's session (its `Ready`, its events) follows its own marker. It waited
    /// while the released server's marker waited for its last items, and the new session's
    /// first items went out before the marker that starts it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_acquired_marker_precedes_its_session_while_another_server_is_released() {
        acquired_while_released(1).await;
    }

    /// The same with the released server's lease taken again (a new term): its
    /// `lease_released` goes first, then the new `lease_acquired`, then the new session.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_acquired_marker_of_the_released_server_follows_its_lease_released() {
        let seen = acquired_while_released(0).await;
        let released = seen.iter().position(|s| *s == "s0 lease_released");
        let acquired = seen.iter().position(|s| *s == "s0 lease_acquired");
        assert!(
            released.is_some() && released < acquired,
            "the lease_released marker of the old term went after the new term's lease_acquired: {seen:?}"
        );
    }

    /// Server `s0` is given up (it leaves the fleet, then its marker is queued) and the lease
    /// of server `acquired` is taken meanwhile (its marker is queued, then it joins the
    /// fleet), as the lease loop does, while the reader is busy elsewhere (NATS slow). The
    /// reader then takes everything: no item of `acquired` may go before its
    /// `lease_acquired`. Returns what went out, in order, up to that marker (included).
    async fn acquired_while_released(acquired: ServerIx) -> Vec<&'static str> {
        let mut rig = Rig::new(2);
        let client = || ClientConfig::builder("admin", "amp111").build().unwrap();
        rig.terms.set(0, 1);
        rig.add(0, client());
        rig.until_ready(1).await;
        assert!(rig.fleet.remove("s0"));
        rig.release(0, 1, "breaker_open").await;
        rig.terms.set(acquired, 2);
        rig.markers
            .send((acquired, 2, UpItem::LeaseAcquired { previous: None }))
            .await
            .unwrap();
        rig.add(acquired, client());
        let name = format!("s{acquired}");
        let logged_in = async {
            while rig.fleet.has_stream_items(&name) != Some(true) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        timeout(Duration::from_secs(10), logged_in)
            .await
            .expect("the acquired server logs in");
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let mut acquired_at = None;
        while acquired_at.is_none() {
            out.clear();
            timeout(
                Duration::from_secs(10),
                rig.merged.recv_many(&mut out, 1024),
            )
            .await
            .expect("the markers go out");
            for (ix, term, item) in &out {
                if acquired_at.is_some() {
                    break;
                }
                if *ix == acquired && matches!(item, UpItem::LeaseAcquired { .. }) {
                    acquired_at = Some(seen.len());
                }
                seen.push(match (ix, item) {
                    (0, UpItem::LeaseReleased { .. }) => "s0 lease_released",
                    (0, UpItem::LeaseAcquired { .. }) => "s0 lease_acquired",
                    (1, UpItem::LeaseAcquired { .. }) => "s1 lease_acquired",
                    (_, UpItem::Stream(_)) if *ix == acquired && *term == 2 => "new session item",
                    _ => "other",
                });
            }
        }
        assert!(
            !seen.contains(&"new session item"),
            "an item of the new session went out before its lease_acquired marker: {seen:?}"
        );
        seen
    }

    /// A `lease_released` marker goes out with its server's final gap even when that gap
    /// fills the caller's batch (`max` items, as when the publisher's backlog has little
    /// room): it waited on, behind every item the fleet held of the other servers, though
    /// nothing of its own server was left to wait for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_released_marker_follows_its_final_gap_at_once_when_the_gap_fills_the_batch() {
        let mut rig = Rig::serving(2, 1).await;
        rig.flood(&[(0, 10), (1, 3000)]).await;
        // s0's 10 events are lost with it: its final gap, which the fleet hands out first.
        assert!(rig.fleet.remove("s0"));
        rig.release(0, 0, "shutdown").await;
        let mut out = Vec::new();
        rig.merged.recv_many(&mut out, 1).await;
        assert!(
            matches!(
                out.first(),
                Some((0, _, UpItem::Stream(StreamItem::Gap { .. })))
            ),
            "the final gap first"
        );
        out.remove(0);
        let passed = rig.until_released(out).await;
        assert_eq!(
            passed.len(),
            0,
            "items of other servers went between the released server's final gap and its marker"
        );
    }

    /// A server given up with nothing lost (no final gap: nothing was queued for it) has
    /// nothing left to wait for: its `lease_released` marker goes out at once. It waited for
    /// the whole fleet to be empty (or for 16,384 items of the others), here behind the 3,000
    /// events of another server, and the next holder's takeover with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_released_marker_of_a_server_that_lost_nothing_waits_for_no_other_server() {
        let mut rig = Rig::serving(2, 1).await;
        rig.flood(&[(1, 3000)]).await;
        assert!(rig.fleet.remove("s0"));
        rig.release(0, 0, "shutdown").await;
        let before = rig.until_released(Vec::new()).await;
        assert_eq!(
            before.iter().filter(|(ix, _)| *ix != 0).count(),
            0,
            "items of another server went before the marker of a server with nothing left"
        );
    }

    /// The final gap of a removed server may be taken out of the fleet (it is handed out
    /// first) before its `lease_released` marker comes: the marker then follows as soon as
    /// the gap went by. A gap of its server among the items taken before the marker was
    /// taken for an earlier one, and the marker waited for the fleet to be empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_released_marker_follows_its_final_gap_taken_before_the_marker_came() {
        let mut rig = Rig::serving(2, 1).await;
        rig.flood(&[(0, 10), (1, 3000)]).await;
        assert!(rig.fleet.remove("s0"));
        // The reader takes a batch before the marker is queued: s0's final gap first.
        let mut out = Vec::new();
        rig.merged.recv_many(&mut out, 1).await;
        assert!(
            matches!(
                out.first(),
                Some((0, _, UpItem::Stream(StreamItem::Gap { .. })))
            ),
            "the final gap first"
        );
        out.clear();
        rig.release(0, 0, "shutdown").await;
        let before = rig.until_released(out).await;
        assert_eq!(
            before.iter().filter(|(ix, _)| *ix != 0).count(),
            0,
            "items of another server went before the marker though its final gap had gone by"
        );
    }

    /// With the released server on one shard and the reader holding a batch of another's,
    /// the marker waits for the final gap still on the server's own shard, then goes with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_released_marker_waits_for_its_final_gap_on_another_shard() {
        let mut rig = Rig::serving(2, 2).await;
        rig.flood(&[(1, 3000)]).await;
        // One item: the reader holds the rest of a batch of s1's shard.
        let mut out = Vec::new();
        rig.merged.recv_many(&mut out, 1).await;
        assert!(matches!(out.first(), Some((1, _, _))), "s1's batch first");
        out.clear();
        rig.flood(&[(0, 10)]).await;
        // s0's 10 events become its final gap, on its own shard.
        assert!(rig.fleet.remove("s0"));
        rig.release(0, 0, "shutdown").await;
        let before = rig.until_released(out).await;
        assert!(
            matches!(
                before.last(),
                Some((0, UpItem::Stream(StreamItem::Gap { dropped: 10 })))
            ),
            "the marker did not follow the final gap at once"
        );
        assert!(
            !rig.read_idle().await.contains(&0),
            "items of the released server came after its lease_released marker"
        );
    }

    /// A `lease_acquired` marker precedes its session even when the session's first item
    /// reaches the fleet while the reader is filling a batch: it is queued before its
    /// server joins the fleet, so the markers are looked at again before the items of every
    /// batch taken from the fleet. They were looked at once per batch given to the caller,
    /// and the new session's `Ready` went out before the marker that starts it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_acquired_marker_precedes_a_session_that_begins_while_a_batch_is_filled() {
        let mut rig = Rig::new(2);
        let client = || ClientConfig::builder("admin", "amp111").build().unwrap();
        rig.terms.set(1, 1);
        rig.add(1, client());
        rig.until_ready(1).await;
        rig.read_idle().await;
        rig.flood(&[(1, 10)]).await;
        // After the first item of the batch: s0's lease is taken (its marker queued, then
        // it joins the fleet, as the lease loop does), and it logs in before the reader
        // looks at the fleet again.
        rig.terms.set(0, 2);
        let (fleet, markers) = (rig.fleet.clone(), rig.markers.clone());
        let port = rig.fronts[0].local_addr().port();
        let mut armed = true;
        rig.merged.after_item = Some(Box::new(move || {
            if !std::mem::take(&mut armed) {
                return;
            }
            let acquired = UpItem::LeaseAcquired { previous: None };
            markers.try_send((0, 2, acquired)).unwrap();
            fleet.add("s0", client(), ("127.0.0.1", port)).unwrap();
            // The test's own thread (the runtime's workers run the fleet).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while fleet.has_stream_items("s0") != Some(true) {
                assert!(std::time::Instant::now() < deadline, "s0 logs in");
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
        let mut seen = Vec::new();
        let mut out = Vec::new();
        while !seen.contains(&"s0 item") {
            out.clear();
            timeout(
                Duration::from_secs(10),
                rig.merged.recv_many(&mut out, 1024),
            )
            .await
            .expect("s0's session goes out");
            seen.extend(
                out.iter()
                    .filter(|(ix, _, _)| *ix == 0)
                    .map(|(_, _, item)| match item {
                        UpItem::LeaseAcquired { .. } => "s0 lease_acquired",
                        _ => "s0 item",
                    }),
            );
        }
        assert_eq!(
            seen.first(),
            Some(&"s0 lease_acquired"),
            "an item of the new session went out before its lease_acquired marker: {seen:?}"
        );
    }

    /// A served server whose term's renewal deadline has passed (the holder stalled, the
    /// control task that ends such a term has not run yet) may already be another bridge's:
    /// no action goes to it, named or picked by the policy, as no event of it is published.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_action_goes_to_a_server_past_its_terms_renewal_deadline() {
        let fronts: Vec<TcpFront> = (0..2)
            .map(|_| TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap())
            .collect();
        let specs: Vec<ServerSpec> = fronts
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let a = f.local_addr();
                let login = ClientConfig::builder("admin", "amp111").build().unwrap();
                ServerSpec::new(format!("s{i}"), a.ip().to_string(), a.port(), login).unwrap()
            })
            .collect();
        let (_markers, markers) = mpsc::channel(4);
        let terms = Arc::new(Terms::new(2));
        let (upstream, _merged) =
            Upstream::start(specs.into(), Policy::RoundRobin, markers, terms.clone());
        let ahead = crate::publish::Stamp::now().after(Duration::from_secs(60));
        terms.start(0, 5, ahead);
        terms.start(1, 6, ahead);
        upstream.add(0);
        upstream.add(1);
        let ready = async {
            while [0, 1]
                .iter()
                .any(|ix| !matches!(upstream.status(*ix), Some(ServerStatus::Ready { .. })))
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        timeout(Duration::from_secs(10), ready)
            .await
            .expect("the servers log in");
        let ping = || Action::new("Ping");
        let options = || SendOptions::timeout(Duration::from_secs(5));
        let sent = upstream.send(Some(0), ping(), options()).await;
        assert!(
            matches!(sent, Ok((0, Ok(_)))),
            "an action to s0 is sent while its deadline is ahead: {sent:?}"
        );
        // Term 5's last renewal gave it a deadline that has passed when the next look comes.
        terms.renewed(0, 5, crate::publish::Stamp::now());
        let named = upstream.send(Some(0), ping(), options()).await;
        assert!(
            named.is_err(),
            "an action was sent to s0 past its term's renewal deadline: {named:?}"
        );
        for _ in 0..4 {
            let any = upstream.send(None, ping(), options()).await;
            assert!(
                !matches!(any, Ok((0, _))),
                "ami.any.action was sent to s0 past its term's renewal deadline: {any:?}"
            );
        }
        assert!(
            upstream.check(Some(0)).is_err(),
            "s0 checked as servable past its deadline"
        );
    }
}
