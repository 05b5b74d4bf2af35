//! A fleet shard driver's task aborted with actions in flight: each fails once, typed as a
//! session's do (written: `Unknown`), nothing hangs, the server is reported closed with
//! nothing pending, and the merged stream ends with its `Disconnected`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

use ami_proto::fleet::{FleetConfig, Route, ServerStatus};
use ami_proto::{Action, ActionError, ClientConfig, StreamItem};
use ami_sim::tcp::TcpFront;
use ami_sim::{ActionMatch, SimConfig};
use ami_tokio::AmiError;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_fleet_driver_fails_its_pending_actions_and_reports_the_servers_gone() {
    let mut srv = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    srv.with_faults(|f| {
        f.delay_replies(ActionMatch::named("Ping"), Duration::from_secs(5));
    });
    let (fleet, mut events, drivers) =
        ami_async::fleet::start_sharded::<ami_tokio::Tokio>(FleetConfig::default(), 1);
    let tasks: Vec<_> = drivers.into_iter().map(tokio::spawn).collect();
    let cfg = ClientConfig::builder("admin", "amp111")
        .seed(22)
        .build()
        .unwrap();
    fleet.add("a", cfg, srv.local_addr()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), fleet.wait_ready("a"))
        .await
        .unwrap()
        .unwrap();
    let mut sends = Vec::new();
    for _ in 0..3 {
        let fleet = fleet.clone();
        sends.push(tokio::spawn(async move {
            fleet.send(Route::Server("a"), Action::new("Ping")).await
        }));
    }
    for _ in 0..200 {
        if fleet.stats().total.actions_written >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fleet.stats().total.actions_written, 3, "the Pings written");
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        assert!(t.await.unwrap_err().is_cancelled());
    }
    let mut results = Vec::new();
    for s in sends {
        let r = tokio::time::timeout(Duration::from_secs(2), s)
            .await
            .expect("no pending action hangs")
            .unwrap();
        results.push(r.map(|reply| reply.result));
    }
    let status = fleet.status("a");
    let stats = fleet.stats();
    let mut tail = Vec::new();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
            Ok(Some(i)) => tail.push(i.item),
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    srv.shutdown();
    for r in &results {
        assert!(
            matches!(r, Ok(Err(AmiError::Action(ActionError::Unknown(_))))),
            "each written action fails Unknown as a session's does: {r:?}"
        );
    }
    assert!(
        matches!(status, Some(ServerStatus::Closed { .. })),
        "the server is closed once its driver is gone: {status:?}"
    );
    assert_eq!(stats.total.pending, 0, "no action pending any more");
    assert!(ended, "the merged stream ends: {tail:?}");
    assert!(
        matches!(tail.last(), Some(StreamItem::Disconnected { .. })),
        "the merged stream ends with the server's Disconnected, as a session's does: {tail:?}"
    );
}
