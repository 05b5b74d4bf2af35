//! The README's fleet example over loopback against two simulators: servers added, one
//! waited for with `wait_any_ready`, then an action routed by policy, which a send right
//! after `add` could not be (no server is ready yet). Also how the waits end when a server
//! can never be ready.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::fleet::{FleetConfig, Policy, Route, ServerStatus};
use ami_proto::{Action, ClientConfig, DisconnectReason};
use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use ami_tokio::fleet::NeverReady;
use std::future::Future;
use std::time::Duration;

/// `f`, which must end within 10 s.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 10 s"))
}

fn front() -> TcpFront {
    TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap()
}

/// A fleet of two servers, `east` and `west`, added (not yet ready).
fn east_and_west(
    east: &TcpFront,
    west: &TcpFront,
) -> (ami_tokio::fleet::FleetHandle, ami_tokio::fleet::FleetEvents) {
    let (fleet, events) = ami_tokio::fleet::spawn_fleet(FleetConfig::default());
    for (name, front) in [("east", east), ("west", west)] {
        let config = ClientConfig::builder("admin", "amp111").build().unwrap();
        fleet.add(name, config, front.local_addr()).unwrap();
    }
    (fleet, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_fleet_example_routes_by_policy_once_wait_any_ready_says_a_server_is() {
    let (mut east, mut west) = (front(), front());
    let (fleet, _events) = east_and_west(&east, &west);
    let first = within("a ready server", fleet.wait_any_ready())
        .await
        .unwrap();
    assert!(["east", "west"].contains(&first.as_str()), "{first}");
    let reply = fleet
        .send(Route::Any(Policy::FewestInFlight), Action::new("Ping"))
        .await
        .unwrap();
    assert!(reply.result.is_ok(), "{:?}", reply.result);
    within("east ready", fleet.wait_ready("east"))
        .await
        .unwrap();
    within("west ready", fleet.wait_ready("west"))
        .await
        .unwrap();

    assert_eq!(
        fleet.wait_ready("north").await,
        Err(NeverReady::UnknownServer("north".into()))
    );
    // Logged off: closed for good once the server said goodbye, with that reason.
    fleet.logoff("east").unwrap();
    let mut watch = fleet.watch();
    while !matches!(fleet.status("east"), Some(ServerStatus::Closed { .. })) {
        within("east closed", watch.changed()).await;
    }
    match fleet.wait_ready("east").await {
        Err(NeverReady::ServerClosed { server, reason }) => {
            assert_eq!(server.as_str(), "east");
            assert_eq!(reason, DisconnectReason::Logoff);
        }
        other => panic!("{other:?}"),
    }
    fleet.close();
    assert_eq!(fleet.wait_any_ready().await, Err(NeverReady::Closed));
    east.shutdown();
    west.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merged_stream_ends_after_logoff_all_once_the_handle_is_dropped() {
    let (mut east, mut west) = (front(), front());
    let (fleet, mut events) = east_and_west(&east, &west);
    within("east ready", fleet.wait_ready("east"))
        .await
        .unwrap();
    within("west ready", fleet.wait_ready("west"))
        .await
        .unwrap();
    // A program's shutdown: log every server off, let the handle go, read what is left.
    fleet.logoff_all();
    drop(fleet);
    let mut logged_off = Vec::new();
    within("the end of the stream", async {
        while let Some(item) = events.recv().await {
            if let ami_proto::StreamItem::Disconnected { reason } = item.item {
                logged_off.push((item.server.as_str().to_owned(), reason));
            }
        }
    })
    .await;
    logged_off.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        logged_off,
        [
            ("east".to_owned(), DisconnectReason::Logoff),
            ("west".to_owned(), DisconnectReason::Logoff)
        ]
    );
    east.shutdown();
    west.shutdown();
}
