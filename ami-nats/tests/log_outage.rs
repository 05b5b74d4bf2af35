//! When a NATS outage outlasts the lease, the bridge stops serving each server with a
//! warning that names the server (not its index in the config: with a hundred servers, a
//! hundred such lines at once that nobody could map to a PBX without the config at hand).
//!
//! Real nats-server on 127.0.0.1 (the test passes vacuously without one, as bridge.rs's do).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use std::time::Duration;
use support::*;

#[test]
fn a_lease_lost_in_a_nats_outage_is_said_with_the_servers_name() {
    let lines = warnings();
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let a = sim();
    let client = login().build().unwrap();
    let config = BridgeConfig::new(nats.url(), vec![spec("pbx-fenced", &a, client)])
        .lease_ttl(Duration::from_secs(3));
    let bridge = TestBridge::start(config);
    wait_for(Duration::from_secs(10), "logged in", || {
        a.stats().logins == 1
    });
    nats.stop();
    wait_for(Duration::from_secs(20), "the lease fenced", || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("not renewed in time"))
    });
    let fenced: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("not renewed in time"))
        .cloned()
        .collect();
    bridge.kill();
    assert!(
        fenced.iter().all(|l| l.contains("pbx")),
        "a lease lost without the server's name: {fenced:#?}"
    );
}
