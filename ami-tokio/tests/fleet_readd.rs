//! A name removed and added again to a sharded fleet: the removed server's last items
//! (its final gap, its stream marks) reach the reader before anything of the new one.

use ami_proto::fleet::FleetConfig;
use ami_proto::fleet::ServerStatus;
use ami_proto::{ClientConfig, StreamItem};
use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use std::time::Duration;
use tokio::time::timeout;

/// The new server went to the shard with the fewest servers, which the reader may look
/// at first: its `Ready` and events went out before the old server's final gap (and, since
/// a removal hands its marks on too, before its marks, which a call tracker made for the
/// new session would take for its own requests').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_servers_last_items_precede_a_new_server_of_its_name() {
    let fronts: Vec<TcpFront> = (0..4)
        .map(|_| TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap())
        .collect();
    let (fleet, mut events) = ami_tokio::fleet::spawn_fleet_sharded(FleetConfig::default(), 2);
    let client = || ClientConfig::builder("admin", "amp111").build().unwrap();
    let port = |i: usize| fronts[i].local_addr().port();
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        fleet.add(n, client(), ("127.0.0.1", port(i))).unwrap();
    }
    let mut ready = 0;
    while ready < 3 {
        let item = timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(item.item, StreamItem::Ready { .. }) {
            ready += 1;
        }
    }
    while events.try_recv().is_some() {}
    assert!(fleet.remove("b"));
    // c (shard 0) gives one event, read: the next look starts at shard 1.
    let base = fleet.stats().total.events_queued;
    fronts[2].with_server(|sim, now| sim.emit_user_events(now, 1));
    let item = timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.server.as_str(), "c");
    while events.try_recv().is_some() {}
    // a (shard 0) gets events it never hands out, then leaves: its final gap.
    fronts[0].with_server(|sim, now| sim.emit_user_events(now, 5));
    while fleet.stats().total.events_queued < base + 6 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fleet.remove("a"));
    // a again, on another server: it goes to shard 1 (the fewest).
    fleet.add("a", client(), ("127.0.0.1", port(3))).unwrap();
    for _ in 0..500 {
        if matches!(fleet.status("a"), Some(ServerStatus::Ready { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen = Vec::new();
    while let Ok(Some(item)) = timeout(Duration::from_millis(300), events.recv()).await {
        if item.server.as_str() == "a" {
            seen.push(match item.item {
                StreamItem::Gap { .. } => "gap",
                StreamItem::Ready { .. } => "ready",
                _ => "other",
            });
        }
    }
    let gap = seen.iter().position(|s| *s == "gap");
    let ready = seen.iter().position(|s| *s == "ready");
    assert!(
        gap.is_some() && gap < ready,
        "the new session went before the old one's final gap: {seen:?}"
    );
}
