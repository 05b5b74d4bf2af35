//! A `Bridge` dropped without `shutdown` while its runtime lives on ends its status tick,
//! which is what sums up the lost action replies that were only counted (one line per
//! reason per interval). What it had not summed up yet must still be said as it ends, as
//! `shutdown` says it: every drop is counted and logged.
//!
//! In a file of its own: the log capture is the process's one logger, and no other test may
//! lose replies into it. Real nats-server on 127.0.0.1 (passes vacuously without one, as
//! bridge.rs's tests do).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use std::time::Duration;
use support::*;

#[test]
fn a_dropped_bridge_still_sums_up_the_lost_replies_it_only_counted() {
    let lines = warnings();
    let Some(nats) = Nats::start() else { return };
    let a = sim();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, login().build().unwrap())])
        .bridge_id("dropped-log");
    let bridge = rt.block_on(ami_nats::Bridge::start(config)).unwrap();
    wait_for(Duration::from_secs(10), "serving", || {
        bridge.serving().len() == 1
    });
    // Three requests published without a reply subject: each is a lost reply
    // (`no_reply_subject`). The first is logged at once, the other two only counted, for
    // the tick to sum up once the interval (10 s) has passed.
    let url = nats.url();
    block(async move {
        let nc = async_nats::connect(url).await.unwrap();
        for _ in 0..3 {
            nc.publish(
                "ami.pbx1.action",
                r#"{"headers":[["Action","Ping"]]}"#.into(),
            )
            .await
            .unwrap();
        }
        nc.flush().await.unwrap();
    });
    wait_for(
        Duration::from_secs(10),
        "the three lost replies counted",
        || {
            metric(
                &bridge.metrics_text(),
                "ami_bridge_action_replies_lost_total{reason=\"no_reply_subject\"}",
            ) == 3
        },
    );
    drop(bridge);
    // Past the interval: either the tick summed them up or the bridge's end did.
    let said = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("2 more action replies not sent (no_reply_subject)"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(13);
    while !said() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        said(),
        "two lost replies counted and never logged: {:#?}",
        lines.lock().unwrap()
    );
    drop(rt);
}
