//! A lease value is written by whoever may write the lease bucket; what of it reaches a
//! log line is escaped and bounded, so a value cannot forge log lines, drive the reader's
//! terminal or flood the log; what of it reaches a session marker is bounded too.
//!
//! Real nats-server on 127.0.0.1 (the test passes vacuously without one, as bridge.rs's do).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use std::time::Duration;
use support::*;

#[test]
fn a_lease_value_under_this_bridges_id_is_logged_escaped_and_bounded() {
    let lines = warnings();
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let a = sim();
    let config = || {
        let client = login().build().unwrap();
        BridgeConfig::new(url.clone(), vec![spec("pbx1", &a, client)])
            .lease_ttl(Duration::from_secs(2))
            .bridge_id("twin")
    };
    // A first bridge makes the bucket and takes the lease, then is gone.
    let first = TestBridge::start(config());
    wait_for(Duration::from_secs(10), "the lease taken", || {
        first.serving() == ["pbx1"]
    });
    first.kill();
    // Its value replaced by one under the same bridge ID whose instance is hostile (no
    // blank in it: it is still read as a lease value).
    let mut hostile = b"held twin i\r\n[ERROR]forged\x1b[31mred\x1b]0;title\x07".to_vec();
    hostile.extend(std::iter::repeat_n(b'x', 200_000));
    // Written again and again, as a live process renews it: a process seen renewing under
    // this bridge's ID is warned about.
    let renew = |times: usize| {
        let (url, hostile) = (url.clone(), hostile.clone());
        block(async move {
            let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
            let kv = js.get_key_value("ami_leases").await.unwrap();
            for _ in 0..times {
                kv.put("pbx1", hostile.clone().into()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    renew(1);
    let second = TestBridge::start(config());
    let ours = || -> Vec<String> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("bridge ID twin: two processes run under one name"))
            .cloned()
            .collect()
    };
    renew(12);
    wait_for(Duration::from_secs(10), "the warning", || {
        !ours().is_empty()
    });
    second.kill();
    for l in ours() {
        let shown: String = l.chars().take(300).collect();
        assert!(
            !l.chars().any(|c| c.is_control()),
            "a lease value logged with control characters: {shown:?}"
        );
        assert!(
            l.len() <= 2_000,
            "a lease value logged unbounded: a line of {} bytes: {shown:?}",
            l.len()
        );
    }
}

/// The `lease_acquired` marker names the lease's previous holder as its value says; a value
/// no bridge wrote (whoever may write the bucket wrote it) is named cut to a bridge ID's
/// length, not stored whole: markers are stored whatever the backlog's byte cap.
#[test]
fn a_lease_value_no_bridge_wrote_is_named_bounded_in_the_takeover_marker() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let a = sim();
    let config = |id: &str| {
        let client = login().build().unwrap();
        BridgeConfig::new(url.clone(), vec![spec("pbx1", &a, client)])
            .lease_ttl(Duration::from_secs(2))
            .bridge_id(id)
    };
    // A first bridge makes the bucket and takes the lease, then is gone.
    let first = TestBridge::start(config("first"));
    wait_for(Duration::from_secs(10), "the lease taken", || {
        first.serving() == ["pbx1"]
    });
    first.kill();
    // Its value replaced by 200 KB that no bridge writes (not `held`/`released` ...).
    let hostile = "z".repeat(200_000);
    {
        let (url, hostile) = (url.clone(), hostile.clone());
        block(async move {
            let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
            let kv = js.get_key_value("ami_leases").await.unwrap();
            kv.put("pbx1", hostile.into()).await.unwrap();
        });
    }
    // Seen unchanged for a TTL, the value's lease is taken over.
    let second = TestBridge::start(config("second"));
    wait_for(Duration::from_secs(15), "the lease taken over", || {
        second.serving() == ["pbx1"]
    });
    let marker = || {
        block(read_stream(&url, 1))
            .into_iter()
            .find(|m| m.body["state"] == "lease_acquired" && m.body["bridge"] == "second")
    };
    wait_for(
        Duration::from_secs(10),
        "the takeover marker stored",
        || marker().is_some(),
    );
    let marker = marker().unwrap();
    let previous = marker.body["previous_bridge"].as_str().unwrap_or_default();
    second.kill();
    assert!(
        previous.starts_with("zzzz") && previous.len() <= 80,
        "the marker names the previous holder with {} bytes of its value",
        previous.len()
    );
}
