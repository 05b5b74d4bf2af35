//! A bridge serving a server that restarts every few minutes, 24/7: hundreds of AMI
//! sessions lost and logged in again leave as many file descriptors, threads and tasks as
//! a few did. Counted from `/proc/self` and the runtime's metrics, never timed. Loopback
//! only; skipped (loudly) without nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::{Bridge, BridgeConfig};
use std::time::Duration;
use support::*;

/// Descriptors and tasks a count may be off by: a session being set up, NATS's own.
const SLACK: usize = 6;

fn resources() -> (usize, usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let threads = std::fs::read_dir("/proc/self/task").unwrap().count();
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    (fds, threads, tasks)
}

#[test]
fn a_bridge_whose_server_restarts_again_and_again_keeps_its_fds_threads_and_tasks() {
    let Some(nats) = Nats::start() else { return };
    let a = sim();
    let client = login()
        .backoff_base(Duration::from_millis(1))
        .backoff_max(Duration::from_millis(1))
        .breaker_threshold(u32::MAX)
        .build()
        .unwrap();
    let config = BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, client)]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bridge = Bridge::start(config).await.unwrap();
        let logins = || a.stats().logins;
        let mut early = None;
        for round in 0..100u64 {
            for _ in 0..10_000 {
                if logins() > round {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(logins() > round, "login {round}");
            // Some events for the publisher, then the restart.
            a.with_server(|sim, now| sim.emit_user_events(now, 10));
            tokio::time::sleep(Duration::from_millis(5)).await;
            if round == 10 {
                early = Some(resources());
            }
            a.restart(Duration::ZERO);
        }
        let late = resources();
        eprintln!("100 AMI restarts: {early:?} -> {late:?}");
        let early = early.unwrap();
        assert!(late.0 <= early.0 + SLACK, "fds {early:?} -> {late:?}");
        assert!(late.1 <= early.1 + SLACK, "threads {early:?} -> {late:?}");
        assert!(late.2 <= early.2 + SLACK, "tasks {early:?} -> {late:?}");
        bridge.shutdown(Duration::from_secs(2)).await;
    });
}
