//! Per-server operations on a [`FleetHandle`]: what a single session's
//! [`Handle`](crate::Handle) offers (a filter, the event mask, logoff, close, counters), by
//! server name. Each runs only the library's own code under the shard's lock: that lock is
//! every server of the shard's, so a caller's code that stalled or panicked there would stop
//! their reads, writes and timers too.

use super::handle::{wait, FleetHandle, Reply, RouteFailed};
use super::shards::{Shard, Shards};
use super::shared::Shared;
use super::Endpoint;
use ami_proto::fleet::{RouteError, Routed, ServerName};
use ami_proto::{ActionId, Client, SendError, Stats};
use std::time::Instant;

/// The refusal for a name no shard holds (or that its shard no longer holds).
fn unknown(name: &str) -> RouteFailed {
    RouteFailed::Route(RouteError::UnknownServer(name.to_string()))
}

impl Shards {
    /// Runs `op` (library code only) on the client of the server named `name`: refused as
    /// [`send`](Shards::send) refuses a named server (unknown name, closed fleet or
    /// stopped driver).
    fn on_client<T>(
        &self,
        name: &str,
        op: impl FnOnce(&mut Shared<Endpoint>, Instant) -> Result<T, RouteFailed>,
    ) -> Result<(Shard, T), RouteFailed> {
        let shard = self.shard_of(name).cloned().ok_or_else(|| unknown(name))?;
        let now = (self.now)();
        let r = shard.call(|s| {
            if s.closed || s.driver_done {
                return Err(RouteFailed::Closed);
            }
            op(s, now)
        })?;
        Ok((shard, r))
    }

    /// Queues an action that `op` builds on the server named `name` and registers its
    /// waiter, as [`send`](Shards::send) does for a caller's action.
    fn client_action(
        &self,
        name: &str,
        op: impl FnOnce(&mut Client, Instant) -> Result<ActionId, SendError>,
    ) -> Result<(Shard, Routed), RouteFailed> {
        self.on_client(name, |s, now| {
            let server: ServerName = s
                .fleet
                .id(name)
                .and_then(|id| s.fleet.name(id))
                .cloned()
                .ok_or_else(|| unknown(name))?;
            let id = s
                .fleet
                .with_client(now, name, op)
                .ok_or_else(|| unknown(name))?
                .map_err(|error| {
                    RouteFailed::Route(RouteError::Send {
                        server: server.clone(),
                        error,
                    })
                })?;
            s.waiters.insert(
                (server.clone(), id.clone()),
                crate::shared::Waiter::default(),
            );
            Ok(Routed { server, id })
        })
    }

    /// Runs `act` (a method of the client, library code only) on the server named `name`,
    /// refused as [`on_client`](Self::on_client) refuses.
    fn act_on_client(
        &self,
        name: &str,
        act: impl FnOnce(&mut Client, Instant),
    ) -> Result<(), RouteFailed> {
        self.on_client(name, |s, now| {
            s.fleet
                .with_client(now, name, act)
                .ok_or_else(|| unknown(name))
        })
        .map(drop)
    }

    /// Reads the client of the server named `name` under its shard's lock.
    fn read_client<T>(&self, name: &str, read: impl FnOnce(&Client) -> T) -> Option<T> {
        self.shard_of(name)?.lock().fleet.client(name).map(read)
    }
}

impl FleetHandle {
    /// Installs an event filter on the server named `name`, now and after every reconnect
    /// (see `Client::add_filter`), and waits for the server's answer. Refused as
    /// [`send`](Self::send) to that server would be: an unknown name, a closed fleet or a
    /// stopped driver, or the client's own refusal (too many filters, a bad field).
    /// Dropping the future stops waiting; the filter stays installed.
    pub async fn add_filter(&self, name: &str, filter: &str) -> Result<Reply, RouteFailed> {
        let (shard, routed) = self
            .shards
            .client_action(name, |c, now| c.add_filter(now, filter))?;
        Ok(wait(&shard, routed, None).await)
    }

    /// Changes the event mask of the server named `name`, now (`Action: Events`) and for
    /// every later login, and waits for the server's answer. Refused as
    /// [`add_filter`](Self::add_filter) is, and a mask that keeps `call` events out while
    /// async Originates wait for their `OriginateResponse` (see
    /// [`Client::set_event_mask`](ami_proto::Client::set_event_mask)).
    pub async fn set_event_mask(&self, name: &str, mask: &str) -> Result<Reply, RouteFailed> {
        let (shard, routed) = self
            .shards
            .client_action(name, |c, now| c.set_event_mask(now, mask))?;
        Ok(wait(&shard, routed, None).await)
    }

    /// Logs the server named `name` off: its queued actions are not sent, written ones still
    /// get their answers, then it closes after its Goodbye and does not reconnect. It stays
    /// in the fleet (status `Closed`) until removed; [`watch`](Self::watch) tells when it
    /// closed. Refused for an unknown name, a closed fleet or a stopped driver.
    pub fn logoff(&self, name: &str) -> Result<(), RouteFailed> {
        self.shards.act_on_client(name, Client::logoff)
    }

    /// Closes the server named `name` at once, without Logoff: its pending actions fail
    /// now and it does not reconnect. It stays in the fleet (status `Closed`) until
    /// removed. Refused as [`logoff`](Self::logoff) is.
    pub fn close_server(&self, name: &str) -> Result<(), RouteFailed> {
        self.shards.act_on_client(name, Client::close)
    }

    /// A snapshot of the counters of the server named `name`'s client (what
    /// [`Handle::stats`](crate::Handle::stats) gives for one session). `None` if there is
    /// no such server; a stopped driver leaves the last counters readable.
    pub fn client_stats(&self, name: &str) -> Option<Stats> {
        self.shards.read_client(name, Client::stats)
    }

    /// Actions of the caller's tracked on the server named `name` now (queued, written,
    /// gathering, awaiting a follow-up), without building a stats snapshot. `None` if there
    /// is no such server.
    pub fn pending_actions(&self, name: &str) -> Option<usize> {
        self.shards.read_client(name, Client::pending_actions)
    }

    /// Whether the client of the server named `name` still holds stream items (events,
    /// gaps, session markers) that the fleet's stream has not taken: a caller about to
    /// [`remove`](Self::remove) a server that logged off can let its reader take them
    /// first (a removal turns the events left into one gap, and drops the session's end).
    /// `None` if there is no such server.
    pub fn has_stream_items(&self, name: &str) -> Option<bool> {
        self.shards.read_client(name, Client::has_stream_items)
    }
}

#[cfg(test)]
mod tests {
    use super::super::handle::tests::ready;
    use super::super::shared::Io;
    use super::*;
    use ami_proto::fleet::{FleetConfig, ServerStatus};
    use ami_proto::{DisconnectReason, Input};
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    /// A one-shard fleet with a handle (its driver is the test, over scripted transports).
    fn fleet(names: &[&str]) -> (Arc<Shards>, FleetHandle) {
        let shards = Arc::new(Shards::new(FleetConfig::default(), 1, Instant::now));
        shards.join();
        for name in names {
            ready(&shards, name);
        }
        let fleet = FleetHandle {
            shards: shards.clone(),
        };
        (shards, fleet)
    }

    fn poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// The output of a future that must not wait.
    fn at_once<T>(f: impl Future<Output = T>) -> T {
        match poll(pin!(f)) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("waits"),
        }
    }

    /// What server `name` has to write, taken off its transmit buffer.
    fn written(shards: &Shards, name: &str) -> String {
        shards.shard_of(name).unwrap().call(|s| {
            let id = s.fleet.id(name).unwrap();
            let wire = String::from_utf8(s.fleet.transmit(id).to_vec()).unwrap();
            s.fleet.advance_transmit(id, wire.len());
            wire
        })
    }

    /// Answers the last action in `wire` with success (Goodbye for a Logoff), from server
    /// `name`.
    fn answer(shards: &Shards, name: &str, wire: &str) {
        let action_id = wire
            .lines()
            .filter_map(|l| l.strip_prefix("ActionID: "))
            .next_back()
            .unwrap();
        let response = if wire.starts_with("Action: Logoff") {
            "Goodbye"
        } else {
            "Success"
        };
        let reply = format!("Response: {response}\r\nActionID: {action_id}\r\n\r\n");
        shards.shard_of(name).unwrap().call(|s| {
            let id = s.fleet.id(name).unwrap();
            s.fleet
                .handle_input(Instant::now(), id, Input::Received(reply.as_bytes()));
        });
    }

    fn is_unknown(e: RouteFailed) -> bool {
        matches!(e, RouteFailed::Route(RouteError::UnknownServer(n)) if n == "nope")
    }

    #[test]
    fn per_server_operations_refuse_an_unknown_name_and_a_stopped_driver() {
        let (shards, fleet) = fleet(&["a"]);
        let filter = at_once(fleet.add_filter("nope", "Event: Hangup"));
        assert!(is_unknown(filter.unwrap_err()));
        let mask = at_once(fleet.set_event_mask("nope", "off"));
        assert!(is_unknown(mask.unwrap_err()));
        assert!(is_unknown(fleet.logoff("nope").unwrap_err()));
        assert!(is_unknown(fleet.close_server("nope").unwrap_err()));
        assert!(fleet.client_stats("nope").is_none());
        assert_eq!(fleet.pending_actions("nope"), None);

        // The shard's driver ends: every operation is refused at once, as `send` is.
        let mut io = Io::default();
        shards.shards[0].lock().driver_ended(&mut io);
        let closed = |r: Result<(), RouteFailed>| matches!(r, Err(RouteFailed::Closed));
        let filter = at_once(fleet.add_filter("a", "Event: Hangup"));
        assert!(matches!(filter, Err(RouteFailed::Closed)), "{filter:?}");
        let mask = at_once(fleet.set_event_mask("a", "off"));
        assert!(matches!(mask, Err(RouteFailed::Closed)), "{mask:?}");
        assert!(closed(fleet.logoff("a")));
        assert!(closed(fleet.close_server("a")));
        // What was counted stays readable.
        assert!(fleet.client_stats("a").is_some_and(|s| s.messages_in > 0));
        assert_eq!(fleet.pending_actions("a"), Some(0));
    }

    #[test]
    fn a_closed_fleet_refuses_per_server_operations() {
        let (_shards, fleet) = fleet(&["a"]);
        fleet.close();
        let filter = at_once(fleet.add_filter("a", "Event: Hangup"));
        assert!(matches!(filter, Err(RouteFailed::Closed)), "{filter:?}");
        assert!(matches!(fleet.logoff("a"), Err(RouteFailed::Closed)));
    }

    #[test]
    fn a_filter_and_an_event_mask_go_to_the_named_server_and_complete_with_its_answer() {
        let (shards, fleet) = fleet(&["a", "b"]);
        let mut filter = pin!(fleet.add_filter("a", "Event: Hangup"));
        assert!(poll(filter.as_mut()).is_pending());
        assert_eq!(
            (fleet.pending_actions("a"), fleet.pending_actions("b")),
            (Some(1), Some(0))
        );
        let wire = written(&shards, "a");
        assert!(wire.starts_with("Action: Filter\r\n"), "{wire:?}");
        assert!(wire.contains("Filter: Event: Hangup\r\n"), "{wire:?}");
        assert_eq!(written(&shards, "b"), "");
        answer(&shards, "a", &wire);
        let Poll::Ready(Ok(reply)) = poll(filter) else {
            panic!("the filter's answer")
        };
        assert_eq!(reply.server.as_str(), "a");
        assert!(reply.result.is_ok(), "{:?}", reply.result);

        let mut mask = pin!(fleet.set_event_mask("b", "off"));
        assert!(poll(mask.as_mut()).is_pending());
        let wire = written(&shards, "b");
        assert!(wire.starts_with("Action: Events\r\n"), "{wire:?}");
        assert!(wire.contains("EventMask: off\r\n"), "{wire:?}");
        assert_eq!(written(&shards, "a"), "");
        answer(&shards, "b", &wire);
        let Poll::Ready(Ok(reply)) = poll(mask) else {
            panic!("the mask's answer")
        };
        assert_eq!(reply.server.as_str(), "b");
        assert!(reply.result.is_ok(), "{:?}", reply.result);
        // Kept for the next login.
        let events = |name| {
            shards
                .shard_of(name)
                .unwrap()
                .lock()
                .fleet
                .client(name)
                .unwrap()
                .config()
                .events()
                .to_string()
        };
        assert_eq!(events("b"), "off");
        assert_ne!(events("a"), "off");
        assert_eq!(fleet.pending_actions("a"), Some(0));
        assert!(fleet.client_stats("a").is_some_and(|s| s.pending == 0));
    }

    #[test]
    fn logoff_and_close_act_on_the_named_server_only() {
        let (shards, fleet) = fleet(&["a", "b", "c"]);
        fleet.logoff("a").unwrap();
        let wire = written(&shards, "a");
        assert!(wire.starts_with("Action: Logoff\r\n"), "{wire:?}");
        fleet.close_server("b").unwrap();
        assert_eq!(
            fleet.status("b"),
            Some(ServerStatus::Closed {
                reason: DisconnectReason::LocalClose
            })
        );
        // The server says goodbye: "a" closes for good, as logged off.
        answer(&shards, "a", &wire);
        assert_eq!(
            fleet.status("a"),
            Some(ServerStatus::Closed {
                reason: DisconnectReason::Logoff
            })
        );
        assert!(fleet.status("c").is_some_and(|s| s.is_ready()));
        assert_eq!(written(&shards, "c"), "");
    }

    /// No caller's code runs under a shard's lock any more, but a panic of the library's
    /// own there (a bug) must not wedge the shard's other servers either: the lock is used
    /// as is after a panic poisoned it, like every lock of this crate.
    #[test]
    fn a_shard_lock_poisoned_by_a_panic_still_serves_every_server() {
        let (shards, fleet) = fleet(&["a", "b"]);
        let shard = shards.shard_of("a").unwrap().clone();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shard.call(|_| panic!("a bug under the shard's lock"))
        }));
        assert!(panicked.is_err());
        let mut filter = pin!(fleet.add_filter("b", "Event: Hangup"));
        assert!(poll(filter.as_mut()).is_pending());
        let wire = written(&shards, "b");
        answer(&shards, "b", &wire);
        assert!(matches!(poll(filter), Poll::Ready(Ok(r)) if r.result.is_ok()));
        fleet.close_server("a").unwrap();
        assert_eq!(fleet.pending_actions("b"), Some(0));
        assert!(fleet.status("b").is_some_and(|s| s.is_ready()));
    }
}
