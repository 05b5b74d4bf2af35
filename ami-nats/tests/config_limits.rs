//! A duration the bridge cannot keep is refused when it starts, before anything runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::{Bridge, BridgeConfig, BridgeConfigError, BridgeError, StreamLimits};
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

#[test]
fn more_actions_in_flight_than_a_semaphore_holds_are_refused_at_start_not_panicking() {
    // Before: the limit was checked for zero only, and `Bridge::start` (after connecting
    // to NATS and making the stream and buckets) panicked in tokio's `Semaphore::new`
    // ("a semaphore may not have more than MAX_PERMITS permits") for a limit meant as
    // "no limit".
    let Some(nats) = Nats::start() else { return };
    let a = sim();
    let config = BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, login().build().unwrap())])
        .max_actions_in_flight(usize::MAX);
    match block(Bridge::start(config)) {
        Err(BridgeError::Config(BridgeConfigError::TooMany {
            setting,
            value,
            max,
        })) => {
            assert_eq!(setting, "max_actions_in_flight");
            assert_eq!(value, usize::MAX);
            assert!(max < usize::MAX, "{max}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("max_actions_in_flight usize::MAX was accepted"),
    }
}

#[test]
fn a_duplicate_window_nats_cannot_carry_is_refused_not_cut_to_a_fraction_of_a_second() {
    // NATS reads a duration as i64 nanoseconds, and async-nats casts a `Duration` to that
    // with `as`. 2^64 ns is about 584.5 years: a window of 18,446,744,074 s, cut so, is
    // 0.29 s. Before, the bridge started and made its stream with that window, which
    // passed the check against the lease TTL (the window as given is longer): a publish
    // retried later than 0.29 s after the first would no longer be seen as a duplicate.
    let Some(nats) = Nats::start() else { return };
    let a = sim();
    let config = BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, login().build().unwrap())])
        .stream(StreamLimits {
            duplicate_window: Duration::from_secs(18_446_744_074),
            ..StreamLimits::default()
        });
    let url = nats.url();
    let started = block(async move {
        match Bridge::start(config).await {
            Err(e) => Ok(e),
            Ok(bridge) => {
                let client = async_nats::connect(url).await.unwrap();
                let js = async_nats::jetstream::new(client);
                let mut stream = js.get_stream("AMI").await.unwrap();
                let made = stream.info().await.unwrap().config.duplicate_window;
                drop(bridge);
                Err(made)
            }
        }
    });
    match started {
        Ok(BridgeError::Config(BridgeConfigError::TooLongForNats { setting, .. })) => {
            assert_eq!(setting, "stream.duplicate_window");
        }
        Ok(e) => panic!("refused for another reason: {e}"),
        Err(made) => panic!("accepted: the stream was made with a duplicate window of {made:?}"),
    }
}
