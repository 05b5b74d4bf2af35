//! The server's answer to an action request that was answered `timed_out` before it came:
//! published on the server's event subject as a `late_answer` item, and, when the request
//! had an idempotency key, stored in place of its `timed_out` reply, so a retry learns
//! what the server did.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use std::time::Duration;
use support::*;

/// The subject late answers are published on.
const SUBJECT: &str = "ami.pbx1.event.late_answer";

/// A simulated Asterisk answering every `Ping` `delay` late, and a bridge serving it as
/// `pbx1` with `tweak` applied to its config.
fn slow_pings(
    nats: &Nats,
    delay: Duration,
    tweak: impl FnOnce(BridgeConfig) -> BridgeConfig,
) -> (ami_sim::tcp::TcpFront, TestBridge) {
    let a = sim();
    a.with_faults(|f| {
        f.delay_replies(ami_sim::ActionMatch::named("Ping"), delay);
    });
    let config = BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, login().build().unwrap())]);
    let bridge = TestBridge::start(tweak(config));
    wait_for(Duration::from_secs(10), "served and logged in", || {
        bridge.serving().len() == 1 && a.stats().logins == 1
    });
    (a, bridge)
}

/// A keyed Ping that gives up after `timeout_ms`.
fn ping(key: &str, timeout_ms: u64) -> String {
    format!(
        r#"{{"headers":[["Action","Ping"]],"idempotency_key":"{key}","timeout_ms":{timeout_ms}}}"#
    )
}

/// The late answers stored in the stream once there are `n` of them (waits up to 10 s).
fn late_answers(url: &str, n: usize) -> Vec<Stored> {
    let mut found = Vec::new();
    wait_for(
        Duration::from_secs(10),
        "the late answers published",
        || {
            found = block(read_stream(url, 1))
                .into_iter()
                .filter(|s| s.body["type"] == "late_answer")
                .collect();
            found.len() >= n
        },
    );
    found
}

/// The bridge's metrics once every `(name, value)` of `expected` reads so (up to 10 s): the
/// test's view of them is a snapshot taken every 20 ms, and a counter may move a moment
/// after what the test saw happen (a store's count after NATS stored it).
fn metrics_once(bridge: &TestBridge, expected: &[(&str, i64)]) -> String {
    let mut text = String::new();
    let what = format!("the metrics reading {expected:?}");
    wait_for(Duration::from_secs(10), &what, || {
        text = bridge.metrics();
        expected.iter().all(|&(name, v)| metric(&text, name) == v)
    });
    text
}

/// The idempotency bucket's value at `key`, as JSON.
fn stored(url: &str, key: &str) -> serde_json::Value {
    serde_json::from_str(&stored_claim_text(url, key).expect("a value at the key")).unwrap()
}

#[test]
fn a_late_answer_to_a_timed_out_request_is_published_and_a_retry_gets_it_as_a_duplicate() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let (_a, bridge) = slow_pings(&nats, Duration::from_millis(700), |c| c);
    let first = block(request(&url, "ami.pbx1.action", &ping("late-ping", 200)));
    assert_eq!(first["outcome"], "timed_out", "{first}");

    let late = late_answers(&url, 1);
    assert_eq!(late.len(), 1, "published once: {late:?}");
    let item = &late[0];
    assert_eq!(item.subject, SUBJECT);
    let body = &item.body;
    assert_eq!(body["server"], "pbx1", "{body}");
    assert_eq!(body["idempotency_key"], "late-ping", "{body}");
    let id = body["action_id"].as_str().expect("the ActionID");
    let response = serde_json::json!({"headers": body["response"]});
    assert_eq!(header(&response, "Response"), Some("Success"), "{body}");
    assert_eq!(header(&response, "ActionID"), Some(id), "{body}");
    // De-duplicated like every item of the session: `<server>.<session>.<position>`.
    let session = body["session"].as_str().unwrap();
    let position = body["position"].as_u64().unwrap();
    assert_eq!(item.msg_id, format!("pbx1.{session}.{position}"));

    // The key's timed_out reply is replaced by the server's real answer, marked late.
    wait_for(
        Duration::from_secs(5),
        "the late answer stored at the key",
        || stored(&url, "late-ping")["outcome"] == "success",
    );
    let kept = stored(&url, "late-ping");
    assert_eq!(kept["late"], true, "{kept}");
    assert_eq!(kept["server"], "pbx1", "{kept}");
    assert_eq!(kept["response"], body["response"], "{kept}");
    let retry = block(request(&url, "ami.pbx1.action", &ping("late-ping", 200)));
    assert_eq!(retry["outcome"], "duplicate", "{retry}");
    assert_eq!(retry["original"], kept, "{retry}");

    let metrics = metrics_once(
        &bridge,
        &[
            (
                "ami_bridge_late_answers_total{server=\"pbx1\",request=\"known\"}",
                1,
            ),
            ("ami_bridge_late_answers_stored_total{result=\"stored\"}", 1),
        ],
    );
    assert_eq!(
        metric(
            &metrics,
            "ami_bridge_server_input_discarded_total{server=\"pbx1\",reason=\"late_answer\"}"
        ),
        -1,
        "nothing is discarded: {metrics}"
    );
    bridge.shutdown();
}

/// The request's task and the publisher are both woken by the completion that ends a
/// timed-out action, and on a multi-threaded runtime (the test bridge runs on two workers)
/// the publisher may read the late answer before the task records its `timed_out` reply
/// (see the `late` module). Answers that come right at their request's deadline (timeouts
/// swept around the server's delay) are each stored at their key whichever ran first. Not
/// forced here (real TCP and NATS): the sweep only makes the window likely to be hit.
#[test]
fn late_answers_coming_right_at_their_deadline_are_all_stored_at_their_keys() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let delay = Duration::from_millis(60);
    let (_a, bridge) = slow_pings(&nats, delay, |c| c);
    let mut timed_out = Vec::new();
    for i in 0..80u64 {
        let key = format!("edge-{i}");
        // The deadline counts from when the bridge got the request, the claim's round
        // trips to NATS come off it: about the delay.
        let timeout_ms = 58 + i % 10;
        let reply = block(request(&url, "ami.pbx1.action", &ping(&key, timeout_ms)));
        match reply["outcome"].as_str() {
            Some("timed_out") => timed_out.push(key),
            // Answered in time; or the claim took the whole time (a loaded machine), and
            // nothing was sent.
            Some("success" | "not_sent") => {}
            _ => panic!("{reply}"),
        }
        // The server busy with no late answer when the next one comes.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!timed_out.is_empty(), "none timed out: the sweep missed");

    let late = late_answers(&url, timed_out.len());
    let mut published: Vec<String> = late
        .iter()
        .filter_map(|s| s.body["idempotency_key"].as_str().map(str::to_string))
        .collect();
    published.sort();
    let mut expected = timed_out.clone();
    expected.sort();
    assert_eq!(published, expected, "each published once, with its key");
    for key in &timed_out {
        wait_for(
            Duration::from_secs(5),
            &format!("the late answer stored at {key}"),
            || stored(&url, key)["outcome"] == "success",
        );
    }
    let n = i64::try_from(timed_out.len()).unwrap();
    metrics_once(
        &bridge,
        &[
            ("ami_bridge_late_answers_stored_total{result=\"stored\"}", n),
            ("ami_bridge_late_answers_stored_total{result=\"failed\"}", 0),
            (
                "ami_bridge_late_answers_stored_total{result=\"not_timed_out\"}",
                0,
            ),
        ],
    );
    bridge.shutdown();
}

#[test]
fn a_late_answer_whose_request_was_dropped_at_the_cap_is_published_without_its_key() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let _warnings = warnings();
    // Room for one request: the second one's entry pushes the first one's out.
    let (_a, bridge) = slow_pings(&nats, Duration::from_millis(500), |c| {
        c.max_late_answer_requests(1)
    });
    // One after the other: the second is sent once the first was answered timed_out, so
    // its entry is the newer, and the first one's answer (the server is busy with it) is
    // still to come.
    let first = block(request(&url, "ami.pbx1.action", &ping("dropped-a", 200)));
    let second = block(request(&url, "ami.pbx1.action", &ping("kept-b", 200)));
    assert_eq!(first["outcome"], "timed_out", "{first}");
    assert_eq!(second["outcome"], "timed_out", "{second}");

    let late = late_answers(&url, 2);
    let keys: Vec<_> = late
        .iter()
        .map(|s| s.body["idempotency_key"].clone())
        .collect();
    assert_eq!(keys, [serde_json::Value::Null, "kept-b".into()], "{late:?}");
    assert!(late.iter().all(|s| s.subject == SUBJECT));
    assert_ne!(late[0].body["action_id"], late[1].body["action_id"]);

    // Only the known request's key gets its answer; the other keeps its timed_out reply.
    wait_for(Duration::from_secs(5), "the known one stored", || {
        stored(&url, "kept-b")["outcome"] == "success"
    });
    assert_eq!(stored(&url, "dropped-a")["outcome"], "timed_out");

    metrics_once(
        &bridge,
        &[
            ("ami_bridge_late_answer_requests_dropped_total", 1),
            (
                "ami_bridge_late_answers_total{server=\"pbx1\",request=\"unknown\"}",
                1,
            ),
        ],
    );
    assert!(
        warnings()
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("late_answer_requests_dropped")),
        "the drop is logged"
    );
    bridge.shutdown();
}

#[test]
fn a_late_answer_does_not_replace_a_reply_that_changed_since_it_was_stored() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let (_a, bridge) = slow_pings(&nats, Duration::from_millis(800), |c| c);
    let first = block(request(&url, "ami.pbx1.action", &ping("changed", 200)));
    assert_eq!(first["outcome"], "timed_out", "{first}");
    // Someone else writes the key before the answer comes: that write wins.
    let theirs = put_claim(&url, "changed", r#"{"type":"outcome","outcome":"theirs"}"#);
    late_answers(&url, 1);
    wait_for(Duration::from_secs(5), "the store given up", || {
        metric(
            &bridge.metrics(),
            "ami_bridge_late_answers_stored_total{result=\"superseded\"}",
        ) == 1
    });
    assert_eq!(
        stored_claim(&url, "changed"),
        Some((
            r#"{"type":"outcome","outcome":"theirs"}"#.to_string(),
            theirs
        ))
    );
    bridge.shutdown();
}

#[test]
fn a_late_answer_the_store_refuses_is_counted_and_logged_and_still_published() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let _warnings = warnings();
    // An operator's idempotency bucket that takes values of at most 1 KiB: a reply of a
    // timed_out fits, the late answer below (its response echoes a long name) does not.
    block(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        // The bucket's stream, as the bridge would make it, with a message size cap.
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "KV_ami_idempotency".into(),
            subjects: vec!["$KV.ami_idempotency.>".into()],
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(600),
            max_message_size: 1024,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let a = sim();
    a.with_faults(|f| {
        f.delay_replies(
            ami_sim::ActionMatch::named("Getvar"),
            Duration::from_millis(500),
        );
    });
    let config = BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, login().build().unwrap())]);
    let bridge = TestBridge::start(config);
    wait_for(Duration::from_secs(10), "served and logged in", || {
        bridge.serving().len() == 1 && a.stats().logins == 1
    });
    let name = "V".repeat(900);
    let getvar = format!(
        r#"{{"headers":[["Action","Getvar"],["Variable","{name}"]],"idempotency_key":"too-big","timeout_ms":200}}"#
    );
    let first = block(request(&url, "ami.pbx1.action", &getvar));
    assert_eq!(first["outcome"], "timed_out", "{first}");

    let late = late_answers(&url, 1);
    assert_eq!(late[0].body["idempotency_key"], "too-big");
    wait_for(Duration::from_secs(5), "the failed store counted", || {
        metric(
            &bridge.metrics(),
            "ami_bridge_late_answers_stored_total{result=\"failed\"}",
        ) == 1
    });
    assert!(
        warnings()
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("too-big") && l.contains("not stored at the key")),
        "the failure is logged"
    );
    // The key keeps its reply: a retry is a duplicate of the timed_out.
    let retry = block(request(&url, "ami.pbx1.action", &getvar));
    assert_eq!(retry["outcome"], "duplicate", "{retry}");
    assert_eq!(retry["original"]["outcome"], "timed_out", "{retry}");
    bridge.shutdown();
}

/// Every action the bridge sends is marked (for its late answer), and the core keeps each
/// completed action's `Mark` in the server's event queue until the publisher takes it; a
/// marked action is refused while those reach the queue's cap. At its backlog's cap (the
/// stream gone: no responders, retried) the publisher takes nothing from the sessions, so
/// the marks of actions that completed pile up: actions, answered over core NATS and
/// owing the event stream nothing, must still run (the server is idle, one request at a
/// time), not be refused `not_sent` once the event queue's cap of them completed.
#[test]
fn actions_still_run_while_the_publisher_is_held_at_its_backlog_cap() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let a = sim();
    // The smallest event queue the bridge accepts for 4 requests in flight.
    let client = login().event_queue_cap(4).build().unwrap();
    let config = BridgeConfig::new(url.clone(), vec![spec("pbx1", &a, client)])
        .max_actions_in_flight(4)
        .max_backlog(2);
    let bridge = TestBridge::start(config);
    wait_for(Duration::from_secs(10), "served and logged in", || {
        bridge.serving().len() == 1 && a.stats().logins == 1
    });
    block(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        js.delete_stream("AMI").await.unwrap();
    });
    a.with_server(|s, now| s.emit_user_events(now, 8));
    wait_for(Duration::from_secs(10), "the backlog at its cap", || {
        metric(&bridge.metrics(), "ami_bridge_backlog") >= 2
    });
    for i in 0..12 {
        let reply = block(request(
            &url,
            "ami.pbx1.action",
            r#"{"headers":[["Action","Ping"]]}"#,
        ));
        assert_eq!(reply["outcome"], "success", "ping {i}: {reply}");
    }
    bridge.shutdown();
}

/// A reply whose first store at its key failed is stored again after its requester was
/// answered (a few tries over some seconds), but a try never overwrites a final value
/// written at the key meanwhile: on a slow NATS the first write may have landed though
/// NATS did not say so, and a late answer may since have replaced that `timed_out` reply
/// (counted `stored`). Here the first store fails because the bucket is gone; the test
/// makes it again and writes a final value there before the bridge's next try.
#[test]
fn a_store_tried_again_never_overwrites_a_final_value_written_at_the_key_meanwhile() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let (_a, bridge) = slow_pings(&nats, Duration::from_millis(600), |c| c);
    let asked = request_in_background(
        url.clone(),
        None,
        "ami.pbx1.action",
        ping("kept", 5000),
        Duration::from_secs(15),
    );
    wait_for(Duration::from_secs(5), "the key claimed", || {
        stored_claim_text(&url, "kept").is_some_and(|v| v.contains("pending"))
    });
    let js = || async { async_nats::jetstream::new(async_nats::connect(&url).await.unwrap()) };
    let config = block(async {
        let js = js().await;
        let mut stream = js.get_stream("KV_ami_idempotency").await.unwrap();
        let config = stream.info().await.unwrap().config.clone();
        js.delete_stream("KV_ami_idempotency").await.unwrap();
        config
    });
    let reply = asked.join().unwrap().expect("answered");
    assert_eq!(reply["outcome"], "success", "{reply}");
    // The bucket again, and a final value at the key before the bridge's next try (its
    // first follows the reply at once and finds no bucket; the next is 250 ms later).
    let last = r#"{"type":"outcome","outcome":"success","server":"pbx1","late":true}"#;
    block(async {
        js().await.create_stream(config).await.unwrap();
        idempotency_kv(&url)
            .await
            .put("kept", last.into())
            .await
            .unwrap();
    });
    // Past every try (250 ms, then doubling: 0.75, 1.75, 3.75 s after the first).
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(stored_claim_text(&url, "kept").as_deref(), Some(last));
    bridge.shutdown();
}
