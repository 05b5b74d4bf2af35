//! The fleet (`ami_async::fleet`) on the adapter's runtime, over real loopback sockets
//! against several simulator TCP fronts at once: one floods events, one restarts, one
//! answers pings, one port never answers. Instantiated per adapter by
//! [`conformance_suite!`](crate::conformance_suite), like the single-session tests.

use crate::support::*;
use crate::Adapter;
use ami_async::fleet::{FleetConfig, Policy, Route, RouteError, RouteFailed, StatusChange};
use ami_proto::Action;
use ami_sim::fleet_log::FleetLog;
use ami_sim::flood::Flood;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A 127.0.0.1 port that takes connections (the kernel's backlog) and never answers: no
/// banner, so a server there never gets ready. Held by the test, so no other test's
/// simulator can take the port.
fn silent() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// The merged stream names each server and only the flooder may lose events; the
/// restarting server's status goes down and comes back; pings on the quiet server keep
/// completing on it; policy routing never picks a server that is not ready; connects per
/// step stay within the budget.
pub fn a_fleet_merges_a_flood_a_restart_and_a_quiet_server_fairly<A: Adapter>() {
    let flood = Flood::start().unwrap();
    let restarting = front();
    let pings = front();
    let silent = silent();
    A::block_on(async {
        let (fleet, mut events) = A::spawn_fleet(FleetConfig::default());
        let mut watch = fleet.watch();
        fleet.add("flood", admin(), flood.addr()).unwrap();
        fleet
            .add("restarts", admin(), restarting.local_addr())
            .unwrap();
        fleet.add("pings", admin(), pings.local_addr()).unwrap();
        fleet
            .add("down", admin(), silent.local_addr().unwrap())
            .unwrap();
        let duplicate = fleet.add("pings", admin(), pings.local_addr());
        assert!(duplicate.is_err(), "{duplicate:?}");

        // The consumer counts events and gaps per server; the watch records every status.
        let consumer = caller(async move {
            let mut log = FleetLog::default();
            while let Some(item) = events.recv().await {
                log.item(&item);
            }
            log
        });
        let statuses = caller(async move {
            let mut log = FleetLog::default();
            while let Some(change) = watch.changed().await {
                if let StatusChange::Changed { server, status } = change {
                    log.status(server.as_str(), &status);
                }
            }
            log
        });

        until("pings ready", || {
            fleet.status("pings").is_some_and(|s| s.is_ready())
        })
        .await;
        let mut latencies = Vec::new();
        let mut by_policy = Vec::new();
        let mut restarted = false;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let t0 = Instant::now();
            let reply = within(
                "a ping",
                fleet.send(Route::Server("pings"), Action::new("Ping")),
            )
            .await
            .unwrap();
            assert_eq!(reply.server.as_str(), "pings");
            assert!(reply.result.is_ok(), "{:?}", reply.result);
            latencies.push(t0.elapsed());
            if !restarted
                && started.elapsed() > Duration::from_millis(800)
                && fleet.status("restarts").is_some_and(|s| s.is_ready())
            {
                restarting.restart(Duration::from_millis(300));
                restarted = true;
            }
            match fleet
                .send(Route::Any(Policy::RoundRobin), Action::new("Ping"))
                .await
            {
                Ok(reply) => by_policy.push(reply.server.to_string()),
                Err(RouteFailed::Route(RouteError::NoServer { .. })) => {}
                Err(e) => panic!("{e}"),
            }
            sleep(Duration::from_millis(5)).await;
        }
        // A named server queues an action until it is ready (within the action's
        // deadline): take the unreachable one out so `send_all` answers at once.
        assert!(fleet.remove("down"));
        let all = within("send_all", fleet.send_all(Action::new("Ping"))).await;
        assert_eq!(all.len(), 3, "one reply per server");
        assert!(all
            .iter()
            .any(|r| r.server.as_str() == "pings" && r.result.is_ok()));
        let stats = fleet.stats();
        fleet.close();
        drop(fleet);
        let mut log = within("the stream to end", consumer).await.unwrap();
        log.statuses = within("the watch to end", statuses).await.unwrap().statuses;
        log.by_policy = by_policy;
        let max = latencies.iter().max().copied().unwrap_or_default();
        println!(
            "fleet over loopback: {} pings on the quiet server, max latency {max:?}; {log:?}",
            latencies.len()
        );
        assert!(latencies.len() >= 10, "only {} pings", latencies.len());
        // A starved quiet server would wait for the whole run; speed is measured in the
        // fleet_loopback examples, not asserted here.
        assert!(max < WAIT, "quiet server's ping took {max:?}");
        log.check("flood", 10_000, "restarts", "down").unwrap();
        assert_eq!(log.statuses["pings"].last(), Some(&"closed"));
        assert!(stats.most_connects_in_a_step <= FleetConfig::default().budget.connects_per_step);
    });
}

/// Removing a server fails its pending action on it (and later sends to the name are
/// refused as unknown); the fleet runs on while the stream alone is left, and closes its
/// sessions once the last user is gone.
pub fn a_removed_server_fails_its_pending_action_and_the_last_user_closes_the_fleet<A: Adapter>() {
    let server = front();
    let silent = silent();
    A::block_on(async {
        let (fleet, mut events) = A::spawn_fleet(FleetConfig::default());
        fleet.add("a", admin(), server.local_addr()).unwrap();
        // Never answers: the action waits on it until the server is removed.
        fleet
            .add("b", admin(), silent.local_addr().unwrap())
            .unwrap();
        let pending = {
            let fleet = fleet.clone();
            caller(async move { fleet.send(Route::Server("b"), Action::new("Ping")).await })
        };
        sleep(Duration::from_millis(50)).await;
        assert!(fleet.remove("b"));
        let reply = within("the removed server's action", pending)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.server.as_str(), "b");
        assert!(reply.result.is_err(), "{:?}", reply.result);
        let unknown = fleet.send(Route::Server("b"), Action::new("Ping")).await;
        assert!(
            matches!(
                unknown,
                Err(RouteFailed::Route(RouteError::UnknownServer(_)))
            ),
            "{unknown:?}"
        );
        // The stream alone keeps the fleet (its servers still stream): it runs on.
        drop(fleet);
        sim_until(&server, "a session", |s| s.sessions_open == 1).await;
        until("the server's session start", || events.try_recv().is_some()).await;
        // The last user gone: the fleet closes its sessions.
        drop(events);
        sim_until(&server, "the session to end", |s| s.sessions_open == 0).await;
    });
}
