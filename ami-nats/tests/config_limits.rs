//! A duration the bridge cannot keep is refused when it starts, before anything runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::{Bridge, BridgeConfig, BridgeConfigError, BridgeError};
use std::time::Duration;
use support::*;

#[test]
fn a_stand_aside_no_instant_can_hold_is_refused_at_start_not_panicking_the_lease_task() {
    // Before: the bridge started, the server refused its login, and the lease task panicked
    // ("overflow when adding duration to instant") computing the stand-aside's end: the
    // bridge never competed for the lease again, and its other leases were no longer kept.
    let a = sim();
    let client = ami_proto::ClientConfig::builder("admin", "not-the-password")
        .build()
        .unwrap();
    let config = BridgeConfig::new("nats://127.0.0.1:1", vec![spec("pbx1", &a, client)])
        .stand_aside(Duration::MAX);
    let started = block(Bridge::start(config));
    match started {
        Err(BridgeError::Config(BridgeConfigError::TooLong { setting, .. })) => {
            assert_eq!(setting, "stand_aside");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a stand-aside of Duration::MAX was accepted"),
    }
}
