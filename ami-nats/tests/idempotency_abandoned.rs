//! Known defect, open (session 32's review of 54ccba3): a claim a bridge abandoned (its
//! `create` got no answer in time, NATS slow; the request answered `not_sent`) is known
//! only to that process. A retry invited by the `not_sent` that reaches another bridge, or
//! comes after a stop gave up on freeing the claim, reads it as a request still running and
//! is answered `duplicate` though nothing ran. Both tests fail today and are ignored until
//! the fix (a claim that carries its own expiry, or an `in_flight` answer for a pending
//! claim): run them with `cargo test -p ami-nats --test idempotency_abandoned -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use std::time::{Duration, Instant};
use support::*;

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn originate(key: &str, timeout_ms: u64) -> String {
    format!(
        r#"{{"headers":[["Action","Originate"],["Channel","Local/100@ami-test"],["Application","Wait"],["Data","1"],["Async","true"]],"idempotency_key":"{key}","timeout_ms":{timeout_ms}}}"#
    )
}

fn request_in_background(
    url: String,
    subject: &'static str,
    body: String,
    within: Duration,
) -> std::thread::JoinHandle<Option<serde_json::Value>> {
    std::thread::spawn(move || {
        block(async move {
            let client = async_nats::connect(&url).await.unwrap();
            let r = tokio::time::timeout(within, client.request(subject, body.into())).await;
            match r {
                Ok(Ok(m)) => Some(serde_json::from_slice(&m.payload).unwrap()),
                _ => None,
            }
        })
    })
}

/// A rolling restart during a 3 s NATS stall of the stopping bridge: its `create` of the
/// idempotency claim gets no answer in time, the requester is answered `not_sent`
/// ("nothing was sent: retry"), the claim is abandoned and its free left to a follow-up.
/// The clean stop gives that follow-up `flush` (2 s), gives up on it, and the create lands
/// afterwards: nobody frees it. The retry the `not_sent` invited, reaching the next bridge,
/// is answered `duplicate` ("running or ran") for the whole idempotency window: the
/// customer is never called, though no call was ever placed.
#[test]
#[ignore = "known defect, open: an abandoned claim is known only to the bridge that abandoned it"]
fn a_not_sent_answered_just_before_a_clean_stop_leaves_the_key_free_for_the_retry() {
    let Some(nats) = Nats::start() else { return };
    let proxy = SlowProxy::start(([127, 0, 0, 1], nats.port).into());
    let a = sim();
    let b = sim();
    let x = TestBridge::start(
        BridgeConfig::new(
            proxy.url(),
            vec![spec("pbx1", &a, login().build().unwrap())],
        )
        .lease_ttl(Duration::from_secs(60))
        .bridge_id("x"),
    );
    wait_for(Duration::from_secs(10), "x logged in", || {
        x.serving().len() == 1 && a.stats().logins == 1
    });
    let body = originate("stop-in-stall", 10_000);
    proxy.hold_client_bytes(Duration::from_secs(3));
    let asked = Instant::now();
    let first = request_in_background(
        nats.url(),
        "ami.pbx1.action",
        body.clone(),
        Duration::from_secs(20),
    );
    // The create (2 s JetStream timeout) and the read that follows it (2 s more) got no
    // answer: answered not_sent, the claim abandoned, its free pending.
    std::thread::sleep(Duration::from_millis(4300).saturating_sub(asked.elapsed()));
    x.shutdown();
    proxy.hold_client_bytes(Duration::ZERO);
    let first = first.join().unwrap().expect("the first request answered");
    assert_eq!(first["outcome"], "not_sent", "{first}");
    assert_eq!(a.stats().calls_started, 0, "nothing ran");
    // The next bridge of the rolling restart.
    let y = TestBridge::start(
        BridgeConfig::new(nats.url(), vec![spec("pbx2", &b, login().build().unwrap())])
            .bridge_id("y"),
    );
    wait_for(Duration::from_secs(10), "y logged in", || {
        y.serving().len() == 1 && b.stats().logins == 1
    });
    // The dialer retries on the PBX the next bridge serves (the stopped bridge's connection
    // may linger at the server a moment through the proxy: not on `ami.any.action`).
    let retry = block(request(&nats.url(), "ami.pbx2.action", &body));
    y.shutdown();
    assert_eq!(
        retry["outcome"], "success",
        "the retry a not_sent invited was refused, though no call was ever placed (calls: {} + {}): {retry} (first: {first})",
        a.stats().calls_started,
        b.stats().calls_started
    );
}

/// The same stall without any stop: bridge X (pbx1, NATS slow for 3 s) answers `not_sent`
/// ("nothing was sent: retry") because its `create` got no answer in time; the create
/// lands, and X frees it only once its own NATS answers again. The dialer retries at once
/// with the same key on the other PBX (bridge Y, pbx2, NATS fine), as a `not_sent`
/// invites: Y cannot take the abandoned claim over (only X's own retries can, the
/// abandoned map is per process) and answers `duplicate`, "running or ran", a final
/// answer to a dialer, though no call was ever placed. Seconds later the key is free.
#[test]
#[ignore = "known defect, open: an abandoned claim is known only to the bridge that abandoned it"]
fn a_retry_on_another_bridge_after_a_not_sent_from_a_slow_store_is_not_a_duplicate() {
    let Some(nats) = Nats::start() else { return };
    let proxy = SlowProxy::start(([127, 0, 0, 1], nats.port).into());
    let a = sim();
    let b = sim();
    let x = TestBridge::start(
        BridgeConfig::new(
            proxy.url(),
            vec![spec("pbx1", &a, login().build().unwrap())],
        )
        .lease_ttl(Duration::from_secs(60))
        .bridge_id("x"),
    );
    let y = TestBridge::start(
        BridgeConfig::new(nats.url(), vec![spec("pbx2", &b, login().build().unwrap())])
            .bridge_id("y"),
    );
    wait_for(Duration::from_secs(10), "both logged in", || {
        x.serving().len() == 1
            && a.stats().logins == 1
            && y.serving().len() == 1
            && b.stats().logins == 1
    });
    let body = originate("failover-retry", 10_000);
    proxy.hold_client_bytes(Duration::from_secs(3));
    let first = block(request(&nats.url(), "ami.pbx1.action", &body));
    proxy.hold_client_bytes(Duration::ZERO);
    assert_eq!(first["outcome"], "not_sent", "{first}");
    // The retry the answer invites, on the other PBX.
    let retry = block(request(&nats.url(), "ami.pbx2.action", &body));
    let calls = a.stats().calls_started + b.stats().calls_started;
    // Later, once X's NATS answers again, its follow-up frees the key: it was free all along.
    std::thread::sleep(Duration::from_secs(4));
    let later = block(request(&nats.url(), "ami.pbx2.action", &body));
    x.shutdown();
    y.shutdown();
    eprintln!("first {first}\nretry {retry}\nlater {later}");
    assert_eq!(calls, 0);
    assert_eq!(
        retry["outcome"], "success",
        "the retry a not_sent invited was answered {retry} though no call was placed; a request with the same key {}s later: {later}",
        4
    );
}
