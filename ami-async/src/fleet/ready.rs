//! Waiting for servers to be ready: [`FleetHandle::wait_ready`] and
//! [`FleetHandle::wait_any_ready`]. A server added to a fleet is not ready at once (it
//! connects, reads the banner, logs in), and [`Route::Any`](ami_proto::fleet::Route::Any)
//! takes only ready servers: a program that routes by policy right after adding its servers
//! waits for one of them first. Both waits are built on the fleet's status watch: they look
//! at the present status, then again after every change the watch reports (and whenever a
//! shard stops), so nothing between the look and the wait is missed (the watch is made
//! before the first look).

use super::handle::FleetHandle;
use super::shards::Shards;
use ami_proto::fleet::{ServerName, ServerStatus};
use ami_proto::DisconnectReason;
use std::future::poll_fn;
use std::task::Poll;

/// Why [`FleetHandle::wait_ready`] or [`FleetHandle::wait_any_ready`] gave up: the server
/// (or every server) can no longer become ready, so waiting on would never end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NeverReady {
    /// No server has this name: it was never added, or it was removed (before or during
    /// the wait). Carries the name asked for.
    #[error("no server named {0:?} in the fleet")]
    UnknownServer(String),
    /// The server stopped for good and will not reconnect (logged off,
    /// [`close_server`](FleetHandle::close_server), a final login rejection); it stays in
    /// the fleet, `Closed`, until removed. Carries its name and why it closed.
    #[error("server {server} closed: {reason}")]
    ServerClosed {
        /// The server.
        server: ServerName,
        /// Why it closed (its `ServerStatus::Closed` reason).
        reason: DisconnectReason,
    },
    /// No server can become ready: the fleet has none, or every one has closed for good.
    /// Carries how many servers there are (0: none at all).
    #[error("no server can become ready: {servers} servers, every one closed for good")]
    NoServer {
        /// Servers in the fleet, all of them closed for good.
        servers: usize,
    },
    /// The fleet was closed, or the driver of the server's shard is gone.
    #[error("fleet closed")]
    Closed,
}

impl Shards {
    /// Where the server named `name` stands for a waiter: `Some` when the wait is over
    /// (ready, or never will be), `None` while it may still become ready.
    fn look_ready(&self, name: &str) -> Option<Result<(), NeverReady>> {
        let unknown = || NeverReady::UnknownServer(name.to_string());
        let Some(shard) = self.shard_of(name) else {
            return Some(Err(unknown()));
        };
        let s = shard.lock();
        if s.closed || s.driver_done {
            return Some(Err(NeverReady::Closed));
        }
        match s.fleet.status(name) {
            None => Some(Err(unknown())),
            Some(ServerStatus::Ready { .. }) => Some(Ok(())),
            Some(ServerStatus::Closed { reason }) => {
                let server = s.fleet.id(name).and_then(|id| s.fleet.name(id)).cloned();
                Some(Err(match server {
                    Some(server) => NeverReady::ServerClosed {
                        server,
                        reason: reason.clone(),
                    },
                    None => unknown(),
                }))
            }
            Some(_) => None,
        }
    }

    /// Whether any server is ready, for a waiter: `Some` with the first ready one (shard by
    /// shard, each in slot order) or the reason none ever will be, `None` while one may
    /// still become ready. Servers of a closed shard, or one whose driver is gone, count as
    /// none: they cannot take actions.
    fn look_any_ready(&self) -> Option<Result<ServerName, NeverReady>> {
        let (mut live_shards, mut servers, mut hopeful) = (0, 0, false);
        for shard in &self.shards {
            let s = shard.lock();
            if s.closed || s.driver_done {
                continue;
            }
            live_shards += 1;
            for (_, name) in s.fleet.servers() {
                servers += 1;
                match s.fleet.status(name.as_str()) {
                    Some(ServerStatus::Ready { .. }) => return Some(Ok(name.clone())),
                    Some(ServerStatus::Closed { .. }) | None => {}
                    Some(_) => hopeful = true,
                }
            }
        }
        if live_shards == 0 {
            Some(Err(NeverReady::Closed))
        } else if hopeful {
            None
        } else {
            Some(Err(NeverReady::NoServer { servers }))
        }
    }
}

impl FleetHandle {
    /// Waits until the server named `name` is Ready (at once if it is): after
    /// [`add`](Self::add), before routing to it by policy. Ends with an error, rather than
    /// waiting for ever, when the server can never be ready: unknown or removed
    /// ([`NeverReady::UnknownServer`]), closed for good ([`NeverReady::ServerClosed`]), or
    /// the fleet closed or the server's driver gone ([`NeverReady::Closed`]). Backing off
    /// and an open breaker are waited through: the server reconnects by itself. Wrap it in
    /// the runtime's timeout to bound the wait.
    pub async fn wait_ready(&self, name: &str) -> Result<(), NeverReady> {
        self.wait_until(|| self.shards.look_ready(name)).await
    }

    /// Waits until any server is Ready (at once if one is) and returns its name: after
    /// adding servers, before the first [`Route::Any`](ami_proto::fleet::Route::Any), which
    /// takes only ready servers. With several ready, the first shard by shard, each in slot
    /// order. Ends with an error when none can ever be: the fleet has no server, or every
    /// one closed for good ([`NeverReady::NoServer`]), or the fleet closed
    /// ([`NeverReady::Closed`]). Wrap it in the runtime's timeout to bound the wait.
    pub async fn wait_any_ready(&self) -> Result<ServerName, NeverReady> {
        self.wait_until(|| self.shards.look_any_ready()).await
    }

    /// Looks at the present with `look` now and again after anything the status watch
    /// reports, until it says the wait is over. The watch is made before the first look, so
    /// nothing that happens between a look and the wait that follows it is missed.
    async fn wait_until<T>(
        &self,
        look: impl Fn() -> Option<Result<T, NeverReady>>,
    ) -> Result<T, NeverReady> {
        let mut watch = self.watch();
        poll_fn(|cx| loop {
            if let Some(done) = look() {
                return Poll::Ready(done);
            }
            match watch.poll_news(cx) {
                Poll::Ready(true) => {}
                // Every shard is over: what is there now is final.
                Poll::Ready(false) => {
                    return Poll::Ready(look().unwrap_or(Err(NeverReady::Closed)));
                }
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::handle::tests::log_in;
    use super::super::shared::Io;
    use super::*;
    use ami_proto::fleet::FleetConfig;
    use ami_proto::ClientConfig;
    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};
    use std::time::Instant;

    /// Counts the times it is woken: a wait that is never woken would hang on a runtime.
    #[derive(Default)]
    struct Woken(AtomicUsize);

    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A future polled with a waker that counts.
    struct Polled<F> {
        future: Pin<Box<F>>,
        woken: Arc<Woken>,
    }

    impl<F: Future> Polled<F> {
        fn new(future: F) -> Polled<F> {
            Polled {
                future: Box::pin(future),
                woken: Arc::default(),
            }
        }

        fn poll(&mut self) -> Poll<F::Output> {
            let waker = Waker::from(self.woken.clone());
            self.future.as_mut().poll(&mut Context::from_waker(&waker))
        }

        /// Polls again, after checking that something woke it.
        fn poll_woken(&mut self) -> Poll<F::Output> {
            assert!(self.woken.0.swap(0, Ordering::SeqCst) > 0, "never woken");
            self.poll()
        }
    }

    fn at_once<T>(f: impl Future<Output = T>) -> T {
        match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("waits"),
        }
    }

    /// A fleet of `shards` shards with a handle (its driver is the test).
    fn new_fleet(shards: usize) -> (Arc<Shards>, FleetHandle) {
        let shards = Arc::new(Shards::new(FleetConfig::default(), shards, Instant::now));
        shards.join();
        let fleet = FleetHandle {
            shards: shards.clone(),
        };
        (shards, fleet)
    }

    /// Adds server `name`, connecting (not ready).
    fn add(fleet: &FleetHandle, name: &str) {
        let config = ClientConfig::builder("admin", "amp111").build().unwrap();
        fleet.add(name, config, ("127.0.0.1", 5038)).unwrap();
        assert!(fleet.status(name).is_some_and(|s| !s.is_ready()));
    }

    #[test]
    fn wait_ready_resolves_once_the_named_server_is_ready_and_at_once_if_it_is() {
        let (shards, fleet) = new_fleet(1);
        add(&fleet, "a");
        add(&fleet, "b");
        let mut wait = Polled::new(fleet.wait_ready("a"));
        assert!(wait.poll().is_pending());
        // Another server's change wakes it, and it waits on.
        log_in(&shards, "b");
        assert!(wait.poll_woken().is_pending());
        log_in(&shards, "a");
        assert_eq!(wait.poll_woken(), Poll::Ready(Ok(())));
        assert_eq!(at_once(fleet.wait_ready("a")), Ok(()));
    }

    #[test]
    fn wait_ready_fails_for_an_unknown_server_and_one_removed_while_waiting() {
        let (_shards, fleet) = new_fleet(1);
        assert_eq!(
            at_once(fleet.wait_ready("nope")),
            Err(NeverReady::UnknownServer("nope".into()))
        );
        add(&fleet, "a");
        let mut wait = Polled::new(fleet.wait_ready("a"));
        assert!(wait.poll().is_pending());
        assert!(fleet.remove("a"));
        assert_eq!(
            wait.poll_woken(),
            Poll::Ready(Err(NeverReady::UnknownServer("a".into())))
        );
    }

    #[test]
    fn wait_ready_fails_with_the_reason_of_a_server_closed_for_good() {
        let (_shards, fleet) = new_fleet(1);
        add(&fleet, "a");
        let mut wait = Polled::new(fleet.wait_ready("a"));
        assert!(wait.poll().is_pending());
        fleet.close_server("a").unwrap();
        let Poll::Ready(Err(NeverReady::ServerClosed { server, reason })) = wait.poll_woken()
        else {
            panic!("a closed server's reason");
        };
        assert_eq!(server.as_str(), "a");
        assert_eq!(reason, DisconnectReason::LocalClose);
    }

    #[test]
    fn waits_end_when_the_fleet_closes_or_the_servers_driver_is_gone() {
        let (_shards, fleet) = new_fleet(1);
        add(&fleet, "a");
        let mut one = Polled::new(fleet.wait_ready("a"));
        let mut any = Polled::new(fleet.wait_any_ready());
        assert!(one.poll().is_pending());
        assert!(any.poll().is_pending());
        fleet.close();
        assert_eq!(one.poll_woken(), Poll::Ready(Err(NeverReady::Closed)));
        assert_eq!(any.poll_woken(), Poll::Ready(Err(NeverReady::Closed)));

        // Two shards, one of whose drivers ends: its server's wait ends, the other's not.
        let (shards, fleet) = new_fleet(2);
        add(&fleet, "a");
        add(&fleet, "b");
        assert_ne!(shards.index_of("a"), shards.index_of("b"));
        let mut a = Polled::new(fleet.wait_ready("a"));
        let mut b = Polled::new(fleet.wait_ready("b"));
        assert!(a.poll().is_pending());
        assert!(b.poll().is_pending());
        let mut io = Io::default();
        shards.shard_of("a").unwrap().lock().driver_ended(&mut io);
        io.wake_all();
        assert_eq!(a.poll_woken(), Poll::Ready(Err(NeverReady::Closed)));
        assert!(b.poll_woken().is_pending());
        log_in(&shards, "b");
        assert_eq!(b.poll_woken(), Poll::Ready(Ok(())));
    }

    #[test]
    fn wait_any_ready_names_the_first_server_to_be_ready() {
        let (shards, fleet) = new_fleet(2);
        add(&fleet, "a");
        add(&fleet, "b");
        let mut any = Polled::new(fleet.wait_any_ready());
        assert!(any.poll().is_pending());
        log_in(&shards, "b");
        let Poll::Ready(Ok(name)) = any.poll_woken() else {
            panic!("a ready server");
        };
        assert_eq!(name.as_str(), "b");
        assert_eq!(at_once(fleet.wait_any_ready()).unwrap().as_str(), "b");
    }

    #[test]
    fn wait_any_ready_fails_without_servers_or_once_every_one_closed_for_good() {
        let (shards, fleet) = new_fleet(1);
        assert_eq!(
            at_once(fleet.wait_any_ready()),
            Err(NeverReady::NoServer { servers: 0 })
        );
        add(&fleet, "a");
        add(&fleet, "b");
        let mut any = Polled::new(fleet.wait_any_ready());
        assert!(any.poll().is_pending());
        fleet.close_server("a").unwrap();
        assert!(any.poll_woken().is_pending(), "b may still be ready");
        fleet.logoff("b").unwrap();
        assert_eq!(
            any.poll_woken(),
            Poll::Ready(Err(NeverReady::NoServer { servers: 2 }))
        );
        // A server added later is waited for again.
        add(&fleet, "c");
        let mut any = Polled::new(fleet.wait_any_ready());
        assert!(any.poll().is_pending());
        log_in(&shards, "c");
        assert!(matches!(any.poll_woken(), Poll::Ready(Ok(n)) if n.as_str() == "c"));
    }
}
