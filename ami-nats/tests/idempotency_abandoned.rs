//! Claims abandoned in a NATS stall (a `create` of the idempotency claim that got no
//! answer in time, its request answered `not_sent`) do not outlive the bridge that
//! abandoned them: such a claim is a *claiming* value, under which nothing was ever sent
//! (a request sends only once it has confirmed its claim with a compare-and-set to a
//! running value), and any bridge takes it over. So the retry a `not_sent` invites runs,
//! on another bridge or after the abandoning bridge stopped without freeing its claim.
//! (Once a known defect, found by session 32's review of 54ccba3: the abandoned claim was
//! known only to the bridge that abandoned it, and the retry answered `duplicate`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use std::time::{Duration, Instant};
use support::*;

/// A rolling restart during a 3 s NATS stall of the stopping bridge: its `create` of the
/// idempotency claim gets no answer in time, the requester is answered `not_sent`
/// ("nothing was sent: retry"), the claim is abandoned and its free left to a follow-up.
/// The clean stop gives that follow-up `flush` (2 s), gives up on it, and the create lands
/// afterwards: nobody frees it. It is a claiming value: the retry the `not_sent` invited,
/// reaching the next bridge, takes it over and places the call (it would have been
/// answered `duplicate`, "running or ran", for the whole window, the customer never
/// called).
#[test]
fn a_not_sent_answered_just_before_a_clean_stop_leaves_the_key_free_for_the_retry() {
    let Some(nats) = Nats::start() else { return };
    let (proxy, a, x) = slow_bridge(&nats, Duration::from_secs(60));
    let b = sim();
    let body = originate("stop-in-stall", 10_000);
    proxy.hold_client_bytes(Duration::from_secs(3));
    let asked = Instant::now();
    let first = request_in_background(
        nats.url(),
        None,
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
    let y = direct_bridge(&nats.url(), &b);
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
/// invites: Y, which knows nothing of X's abandoned claims (that map is per process),
/// finds a claiming value, takes it over and places the call, where it would have
/// answered `duplicate`, a final answer to a dialer, though no call was placed. A request
/// with the key seconds later is the duplicate of that retry.
#[test]
fn a_retry_on_another_bridge_after_a_not_sent_from_a_slow_store_is_not_a_duplicate() {
    let Some(nats) = Nats::start() else { return };
    let (proxy, a, b, x, y) = slow_and_direct_bridges(&nats);
    let body = originate("failover-retry", 10_000);
    proxy.hold_client_bytes(Duration::from_secs(3));
    let first = block(request(&nats.url(), "ami.pbx1.action", &body));
    proxy.hold_client_bytes(Duration::ZERO);
    assert_eq!(first["outcome"], "not_sent", "{first}");
    // No call placed before the retry (counted before it: the retry is to place one).
    let calls = a.stats().calls_started + b.stats().calls_started;
    // The retry the answer invites, on the other PBX.
    let retry = block(request(&nats.url(), "ami.pbx2.action", &body));
    let calls_after_retry = a.stats().calls_started + b.stats().calls_started;
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
    assert_eq!(calls_after_retry, 1, "the retry placed the one call");
    assert_eq!(later["outcome"], "duplicate", "{later}");
}

/// A claiming value as a bridge writes it (its owner a bridge that is gone, say).
const FOREIGN_CLAIMING: &str =
    r#"{"type":"pending","owner":"00000000deadbeef-7","phase":"claiming"}"#;

/// Requests with one key sent all at once, half to each of two bridges, each serving its
/// own PBX, several rounds: creates fail with `AlreadyExists`, claiming values are taken
/// over by the requests that read them, and takers race one another and the holders'
/// confirms. Each round places exactly one call and answers exactly one `success`; the
/// others are `duplicate` (or `not_sent`, when the key kept changing under all of a
/// request's claim attempts: nothing of it ran).
#[test]
fn concurrent_requests_with_one_key_run_the_action_once() {
    let Some(nats) = Nats::start() else { return };
    let a = sim();
    let b = sim();
    let x = TestBridge::start(
        BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, login().build().unwrap())])
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
    let url = nats.url();
    for round in 0..4 {
        let body = originate(&format!("burst-{round}"), 10_000);
        let before = a.stats().calls_started + b.stats().calls_started;
        let replies: Vec<serde_json::Value> = block(async {
            let client = async_nats::connect(&url).await.unwrap();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..10 {
                let (client, body) = (client.clone(), body.clone());
                let subject = if i % 2 == 0 {
                    "ami.pbx1.action"
                } else {
                    "ami.pbx2.action"
                };
                set.spawn(async move {
                    let m = tokio::time::timeout(
                        Duration::from_secs(15),
                        client.request(subject, body.into()),
                    )
                    .await
                    .expect("answered in time")
                    .unwrap();
                    serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()
                });
            }
            set.join_all().await
        });
        let calls = a.stats().calls_started + b.stats().calls_started - before;
        let outcomes: Vec<&str> = replies
            .iter()
            .map(|r| r["outcome"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(calls, 1, "round {round}: {outcomes:?}");
        assert_eq!(
            outcomes.iter().filter(|o| **o == "success").count(),
            1,
            "round {round}: {outcomes:?}"
        );
        assert!(
            outcomes
                .iter()
                .all(|o| ["success", "duplicate", "not_sent"].contains(o)),
            "round {round}: {replies:?}"
        );
    }
    x.shutdown();
    y.shutdown();
}

/// Bridge X (NATS slow: what it sends is held 1.5 s) claims a key; its claiming value lands
/// and X sends its confirm, which lands 1.5 s later. Meanwhile a request with the same key
/// reaches bridge Y, finds the claiming value and takes it over. X's confirm, a
/// compare-and-set on the revision X's claim was created at, then fails: X sends nothing,
/// claims the key again and finds Y's running value or reply there, so it answers
/// `duplicate`; Y places the one call.
#[test]
fn a_claim_taken_over_before_its_confirm_sends_nothing() {
    let Some(nats) = Nats::start() else { return };
    let (proxy, a, b, x, y) = slow_and_direct_bridges(&nats);
    let url = nats.url();
    let body = originate("taken-over", 10_000);
    // Under the bridge's 2 s JetStream timeout: X's create and confirm are answered, each
    // 1.5 s after it was sent.
    proxy.hold_client_bytes(Duration::from_millis(1500));
    let first = request_in_background(
        url.clone(),
        None,
        "ami.pbx1.action",
        body.clone(),
        Duration::from_secs(20),
    );
    let (seen, retry) = block(async {
        let kv = idempotency_kv(&url).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        // X's claim landed: its confirm is on its way, 1.5 s from landing.
        let seen = loop {
            if let Ok(Some(v)) = kv.get("taken-over").await {
                break String::from_utf8(v.to_vec()).unwrap();
            }
            assert!(Instant::now() < deadline, "X's claim never landed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let retry = request(&url, "ami.pbx2.action", &body).await;
        (seen, retry)
    });
    let first = first.join().unwrap().expect("X answered");
    proxy.hold_client_bytes(Duration::ZERO);
    let calls = (a.stats().calls_started, b.stats().calls_started);
    x.shutdown();
    y.shutdown();
    eprintln!("X's claim {seen}\nfirst {first}\nretry {retry}");
    assert_eq!(retry["outcome"], "success", "{retry} (first: {first})");
    assert_eq!(first["outcome"], "duplicate", "{first}");
    assert_eq!(calls, (0, 1), "X sent nothing, Y placed the call");
    assert!(seen.contains(r#""phase":"claiming""#), "{seen}");
}

/// Values that may stand for an action running are never taken over: the `pending` of
/// bridges from before the owned claims, owned pending values of bridges from before the
/// two phases (no `phase`), running values and values that are not JSON are answered
/// `duplicate` (running or ran, no original, the reply itself JSON) and left as they are;
/// only a claiming value is taken over.
#[test]
fn pending_values_of_older_bridges_and_running_claims_are_duplicates() {
    let Some(nats) = Nats::start() else { return };
    let a = sim();
    let bridge = TestBridge::start(BridgeConfig::new(
        nats.url(),
        vec![spec("pbx1", &a, login().build().unwrap())],
    ));
    wait_for(Duration::from_secs(10), "logged in", || {
        bridge.serving().len() == 1 && a.stats().logins == 1
    });
    let url = nats.url();
    let held = [
        ("legacy", "pending"),
        (
            "owned",
            r#"{"type":"pending","owner":"0123456789abcdef-3"}"#,
        ),
        (
            "running",
            r#"{"type":"pending","owner":"0123456789abcdef-4","phase":"running"}"#,
        ),
        // Not JSON (put by hand, or by a tool of another version): spliced into the reply
        // as the original, it made the whole reply unreadable.
        ("garbled", "{\"type\":\"outcome\",\"outco"),
    ];
    for (key, value) in held {
        let revision = put_claim(&url, key, value);
        let r = block(request(&url, "ami.pbx1.action", &originate(key, 10_000)));
        assert_eq!(r["outcome"], "duplicate", "{key}: {r}");
        assert!(r.get("original").is_none(), "{key}: {r}");
        assert_eq!(
            stored_claim(&url, key),
            Some((value.to_string(), revision)),
            "{key}: left as it is"
        );
    }
    assert_eq!(a.stats().calls_started, 0, "nothing ran");
    put_claim(&url, "claiming", FOREIGN_CLAIMING);
    let r = block(request(
        &url,
        "ami.pbx1.action",
        &originate("claiming", 10_000),
    ));
    bridge.shutdown();
    assert_eq!(r["outcome"], "success", "{r}");
    assert_eq!(a.stats().calls_started, 1);
}

/// The key holds another request's value and the read of it, after the create found it
/// there, gets no answer (NATS slow just then): whose value it is, running or not, is not
/// known. Nothing is sent, and the answer is `not_sent`, not `duplicate` ("running or
/// ran", final to a dialer) on a guess; the value, not this request's, is left as it is.
#[test]
fn a_key_whose_holder_cannot_be_read_is_answered_not_sent_and_left_as_it_is() {
    let Some(nats) = Nats::start() else { return };
    let (proxy, a, bridge) = slow_bridge(&nats, Duration::from_secs(60));
    let url = nats.url();
    let revision = put_claim(&url, "unreadable", FOREIGN_CLAIMING);
    // The create's write (refused: the key exists) and its own read (which finds the
    // value: `AlreadyExists`) are answered 1.4 s each after they were sent, under the 2 s
    // JetStream timeout; the bridge's read that follows, sent at about 2.8 s, is held 3 s
    // and times out. The hold changes half-way through the create's read.
    proxy.hold_client_bytes(Duration::from_millis(1400));
    let asked = Instant::now();
    let first = request_in_background(
        url.clone(),
        None,
        "ami.pbx1.action",
        originate("unreadable", 20_000),
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(asked.elapsed()));
    proxy.hold_client_bytes(Duration::from_secs(3));
    let first = first.join().unwrap().expect("answered");
    proxy.hold_client_bytes(Duration::ZERO);
    // Any follow-up would have had time to act.
    std::thread::sleep(Duration::from_millis(500));
    let left = stored_claim(&url, "unreadable");
    bridge.shutdown();
    assert_eq!(first["outcome"], "not_sent", "{first}");
    assert!(
        first["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot read what holds the key")),
        "{first}"
    );
    assert_eq!(a.stats().calls_started, 0, "nothing ran");
    assert_eq!(left, Some((FOREIGN_CLAIMING.to_string(), revision)));
}

/// A clean stop gives up on a request still claiming its key (NATS slow: each write and
/// read held 1.5 s; the key held by a claiming value of a bridge that is gone, so the
/// claim takes a create, its read, a read and a take-over). Nothing was sent, so it is
/// answered `not_sent`, not `unknown` ("it may have run"), and the retry it invites,
/// reaching the next bridge, takes the claiming value over and places the call.
#[test]
fn a_request_given_up_by_a_stop_while_it_claims_its_key_is_answered_not_sent() {
    let Some(nats) = Nats::start() else { return };
    let (proxy, a, x) = slow_bridge(&nats, Duration::from_secs(60));
    let b = sim();
    let url = nats.url();
    put_claim(&url, "stop-while-claiming", FOREIGN_CLAIMING);
    let body = originate("stop-while-claiming", 15_000);
    proxy.hold_client_bytes(Duration::from_millis(1500));
    let first = request_in_background(
        url.clone(),
        None,
        "ami.pbx1.action",
        body.clone(),
        Duration::from_secs(20),
    );
    // The stop gives the request its 2 s flush, then gives up on it: its claim has 4 s to
    // go.
    std::thread::sleep(Duration::from_millis(200));
    x.shutdown();
    proxy.hold_client_bytes(Duration::ZERO);
    let first = first.join().unwrap().expect("answered");
    assert_eq!(first["outcome"], "not_sent", "{first}");
    assert!(
        first["error"]
            .as_str()
            .is_some_and(|e| e.contains("bridge stopped")),
        "answered by the stop: {first}"
    );
    assert_eq!(a.stats().calls_started, 0, "nothing ran");
    let y = direct_bridge(&url, &b);
    let retry = block(request(&url, "ami.pbx2.action", &body));
    y.shutdown();
    assert_eq!(retry["outcome"], "success", "{retry} (first: {first})");
    assert_eq!(b.stats().calls_started, 1);
}
