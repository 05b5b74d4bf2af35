//! The bridge against what an adversary on the NATS account can send (action requests of
//! every malformed shape, floods) and against faults of the NATS side (a stream at its
//! `DiscardNew` limits, a server stopped mid-stream), on a real nats-server on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use std::time::{Duration, Instant};
use support::*;

/// A header value that must never reach a log line.
const SECRET: &str = "hunter2-natsfault";

/// Sends `body` (raw bytes) on `subject` and parses the reply.
fn request_bytes(url: &str, subject: &str, body: Vec<u8>) -> serde_json::Value {
    block(async {
        let client = async_nats::connect(url).await.unwrap();
        let reply = tokio::time::timeout(
            Duration::from_secs(15),
            client.request(subject.to_string(), body.into()),
        )
        .await
        .expect("reply in time")
        .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    })
}

#[test]
fn hostile_request_bodies_are_refused_invalid_request_and_nothing_reaches_asterisk_or_the_log() {
    let lines = warnings();
    let Some(nats) = Nats::start() else { return };
    let a = sim();
    let client = login()
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let bridge = TestBridge::start(BridgeConfig::new(
        nats.url(),
        vec![spec("pbx1", &a, client)],
    ));
    wait_for(Duration::from_secs(10), "logged in", || {
        a.stats().logins == 1
    });
    let url = nats.url();
    let ping = r#"{"headers":[["Action","Ping"]]}"#;
    assert_eq!(
        block(request(&url, "ami.pbx1.action", ping))["outcome"],
        "success"
    );
    let before = a.stats().actions;
    let secret = format!(r#"["Secret","{SECRET}"]"#);
    let many_headers = format!(
        r#"{{"headers":[["Action","Ping"],{}]}}"#,
        vec![r#"["X","y"]"#; 5000].join(",")
    );
    let mut bodies: Vec<(&str, Vec<u8>)> = vec![
        // Near NATS's max payload (1 MiB): one line far over Asterisk's limit.
        (
            "huge value",
            format!(
                r#"{{"headers":[["Action","Ping"],["X","{}"]]}}"#,
                "v".repeat(900_000)
            )
            .into_bytes(),
        ),
        (
            "deep nesting",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        ),
        (
            "deep nesting in headers",
            format!(
                r#"{{"headers":{}{}}}"#,
                "[".repeat(50_000),
                "]".repeat(50_000)
            )
            .into_bytes(),
        ),
        ("thousands of headers", many_headers.into_bytes()),
        (
            "non-UTF-8",
            b"{\"headers\":[[\"Action\",\"Ping\"],[\"X\",\"\xff\xfe\"]]}".to_vec(),
        ),
        (
            "lone surrogate",
            br#"{"headers":[["Action","Ping"],["X","\ud800"]]}"#.to_vec(),
        ),
        (
            "CR LF in a value",
            format!(r#"{{"headers":[["Action","Ping"],{secret},["X","a\r\nAction: Originate"]]}}"#)
                .into_bytes(),
        ),
        (
            "LF in a key",
            format!(r#"{{"headers":[["Action","Ping"],{secret},["X\nAction","Originate"]]}}"#)
                .into_bytes(),
        ),
        (
            "CR in a key",
            br#"{"headers":[["Action","Ping"],["X\r","y"]]}"#.to_vec(),
        ),
        (
            "NUL in a value",
            br#"{"headers":[["Action","Ping"],["X","a\u0000b"]]}"#.to_vec(),
        ),
        (
            "NUL in the action name",
            br#"{"headers":[["Action","Ping\u0000Originate"]]}"#.to_vec(),
        ),
        (
            "colon in a key",
            br#"{"headers":[["Action","Ping"],["X: Y","z"]]}"#.to_vec(),
        ),
        (
            "empty key",
            br#"{"headers":[["Action","Ping"],["","z"]]}"#.to_vec(),
        ),
        (
            "reserved action with a secret",
            format!(r#"{{"headers":[["Action","Login"],["Username","u"],{secret}]}}"#).into_bytes(),
        ),
        (
            "enormous idempotency key",
            format!(
                r#"{{"headers":[["Action","Ping"]],"idempotency_key":"{}"}}"#,
                "k".repeat(500_000)
            )
            .into_bytes(),
        ),
        (
            "idempotency key with a subject wildcard",
            br#"{"headers":[["Action","Ping"]],"idempotency_key":"a.>"}"#.to_vec(),
        ),
        (
            "duplicate keys, the last one bad",
            br#"{"headers":[["Action","Ping"]],"idempotency_key":"ok","idempotency_key":"not ok"}"#
                .to_vec(),
        ),
        (
            "timeout not a number",
            br#"{"headers":[["Action","Ping"]],"timeout_ms":"soon"}"#.to_vec(),
        ),
        (
            "timeout fractional",
            br#"{"headers":[["Action","Ping"]],"timeout_ms":1.5}"#.to_vec(),
        ),
        ("empty body", Vec::new()),
        ("NUL bytes", vec![0u8; 4096]),
    ];
    bodies.push(("JSON null", b"null".to_vec()));
    let mut sent = 0;
    for (what, body) in &bodies {
        for subject in ["ami.pbx1.action", "ami.any.action"] {
            let r = request_bytes(&url, subject, body.clone());
            sent += 1;
            assert_eq!(r["type"], "outcome", "{what}: {r}");
            assert_eq!(r["outcome"], "invalid_request", "{what} on {subject}: {r}");
            assert!(
                r["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{what}: {r}"
            );
        }
    }
    // The bridge still works, and nothing of the above reached Asterisk.
    assert_eq!(
        block(request(&url, "ami.pbx1.action", ping))["outcome"],
        "success"
    );
    assert_eq!(
        a.stats().actions,
        before + 1,
        "a refused request reached Asterisk"
    );
    // The test's copy of the metrics is taken every 20 ms: waited for.
    let refused = |m: &str| {
        metric(
            m,
            "ami_bridge_actions_total{server=\"pbx1\",outcome=\"invalid_request\"}",
        ) + metric(
            m,
            "ami_bridge_actions_total{server=\"\",outcome=\"invalid_request\"}",
        )
        .max(0)
    };
    wait_for(Duration::from_secs(5), "every refusal counted", || {
        refused(&bridge.metrics()) == sent
    });
    let leaked: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(SECRET))
        .cloned()
        .collect();
    assert!(leaked.is_empty(), "a secret reached the log: {leaked:?}");
    bridge.shutdown();
}

/// A bridge serving `pbx1` on a server that answers nothing after login, with room for
/// `slots` action requests at once; and that server.
#[test]
fn a_request_over_the_action_slots_is_refused_naming_the_server_it_was_sent_to() {
    let Some(nats) = Nats::start() else { return };
    let (srv, bridge) = silent_pbx1_with_slots(&nats, 1);
    let url = nats.url();
    // A Ping the server never answers holds the bridge's one action slot.
    hold_one_slot(&url, &srv);
    // A flood on the server's own subject: each refused at once, `not_sent`, and, as the
    // reply schema says, naming the server of the subject (`null` is for
    // `ami.any.action` answered before a server was picked), counted under it.
    let n = 20;
    for _ in 0..n {
        let r = block(request(
            &url,
            "ami.pbx1.action",
            r#"{"headers":[["Action","Ping"]]}"#,
        ));
        assert_eq!(r["outcome"], "not_sent", "{r}");
        assert_eq!(r["server"], "pbx1", "{r}");
    }
    let any = block(request(
        &url,
        "ami.any.action",
        r#"{"headers":[["Action","Ping"]]}"#,
    ));
    assert_eq!(any["outcome"], "not_sent", "{any}");
    assert_eq!(any["server"], serde_json::Value::Null, "{any}");
    assert_eq!(srv.received_count("Ping"), 1, "nothing more was written");
    wait_for(
        Duration::from_secs(5),
        "the refusals counted under pbx1",
        || {
            metric(
                &bridge.metrics(),
                "ami_bridge_actions_total{server=\"pbx1\",outcome=\"not_sent\"}",
            ) == n
        },
    );
    bridge.kill();
}

fn storm(front: &ami_sim::tcp::TcpFront, n: usize) {
    front.with_server(|sim, now| sim.emit_user_events(now, n));
}

/// The storm's events stored, and the events the gaps say were dropped.
fn storm_events_and_dropped(all: &[Stored]) -> (u64, u64) {
    let events = all
        .iter()
        .filter(|s| s.body["type"] == "event" && header(&s.body, "UserEvent") == Some("SimStorm"))
        .count() as u64;
    let dropped = all
        .iter()
        .filter(|s| s.body["type"] == "gap")
        .filter_map(|s| s.body["dropped"].as_u64())
        .sum();
    (events, dropped)
}

/// Positions of each session increase by one, with no repeat.
fn assert_positions_contiguous(all: &[Stored]) {
    let mut last: std::collections::HashMap<(String, String), u64> = Default::default();
    for s in all {
        let key = (
            s.body["server"].as_str().unwrap().to_string(),
            s.body["session"].as_str().unwrap().to_string(),
        );
        let pos = s.body["position"].as_u64().unwrap();
        let prev = last.insert(key.clone(), pos).unwrap_or(0);
        assert_eq!(pos, prev + 1, "position jump in {key:?} at seq {}", s.seq);
    }
}

/// Waits until the stream holds every one of `total` storm events, stored or counted in a
/// gap; returns how many were dropped.
fn all_accounted_for(url: &str, total: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let all = block(read_stream(url, 1));
        let (events, dropped) = storm_events_and_dropped(&all);
        if events + dropped == total {
            assert_positions_contiguous(&all);
            return dropped;
        }
        assert!(
            Instant::now() < deadline,
            "{events} events + {dropped} dropped != {total}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_discard_new_stream_at_its_limit_keeps_the_backlog_in_its_caps_and_publishing_resumes_with_room(
) {
    let lines = warnings();
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    // An operator's stream that refuses new messages once it holds 60.
    block(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "AMI".into(),
            subjects: vec![
                "ami.*.event.>".into(),
                "ami.*.gap".into(),
                "ami.*.session".into(),
            ],
            max_messages: 60,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let a = sim();
    let client = login().event_queue_cap(1000).build().unwrap();
    const CAP: i64 = 300;
    let bridge = TestBridge::start(
        BridgeConfig::new(url.clone(), vec![spec("pbx1", &a, client)])
            .max_backlog(CAP as usize)
            .publish_window(64),
    );
    wait_for(Duration::from_secs(10), "logged in", || {
        a.stats().logins == 1
    });
    storm(&a, 20);
    wait_for(Duration::from_secs(10), "the first events stored", || {
        storm_events_and_dropped(&block(read_stream(&url, 1))).0 == 20
    });
    let full_from = lines.lock().unwrap().len();
    // 3,000 more: the stream takes some 40, the rest wait in the backlog or are dropped.
    for _ in 0..3 {
        storm(&a, 1000);
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(Duration::from_secs(10), "the backlog full", || {
        metric(&bridge.metrics(), "ami_bridge_backlog") >= CAP / 2
    });
    // Some seconds at the limit: the publisher keeps retrying.
    let at_limit = Duration::from_secs(6);
    std::thread::sleep(at_limit);
    let m = bridge.metrics();
    assert!(
        metric(&m, "ami_bridge_backlog") <= CAP + 8,
        "backlog over its cap\n{m}"
    );
    assert!(metric(&m, "ami_bridge_publish_retries_total") > 0, "{m}");
    let refused_lines = lines.lock().unwrap()[full_from..]
        .iter()
        .filter(|l| l.contains("JetStream refused a publish"))
        .count();
    eprintln!("{refused_lines} 'JetStream refused a publish' lines in {at_limit:?} at the limit");
    // Room comes back.
    block(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        let mut config = js
            .get_stream("AMI")
            .await
            .unwrap()
            .cached_info()
            .config
            .clone();
        config.max_messages = -1;
        js.update_stream(config).await.unwrap();
    });
    storm(&a, 100);
    let dropped = all_accounted_for(&url, 20 + 3000 + 100, Duration::from_secs(30));
    assert!(dropped > 0, "the limit must have overflowed the backlog");
    assert_eq!(a.stats().logins, 1, "the AMI session was never cut");
    bridge.shutdown();
}

/// Stops (`STOP`) or resumes (`CONT`) the NATS server process.
fn signal(nats: &Nats, sig: &str) {
    let pid = nats.pid().unwrap().to_string();
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[test]
fn a_stalled_nats_server_never_stalls_the_ami_session_and_every_event_is_stored_or_counted() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let a = sim();
    let client = login().event_queue_cap(1000).build().unwrap();
    // A lease that outlives the stall: the session must be kept by reading, not by luck.
    let bridge = TestBridge::start(
        BridgeConfig::new(url.clone(), vec![spec("pbx1", &a, client)])
            .lease_ttl(Duration::from_secs(60))
            .max_backlog(500),
    );
    wait_for(Duration::from_secs(10), "logged in", || {
        a.stats().logins == 1
    });
    storm(&a, 100);
    wait_for(Duration::from_secs(10), "the first events stored", || {
        storm_events_and_dropped(&block(read_stream(&url, 1))).0 == 100
    });
    // NATS stops reading and answering (the connection stays up): acks never come, and
    // the bridge's writes back up.
    signal(&nats, "STOP");
    for _ in 0..8 {
        storm(&a, 1000);
        std::thread::sleep(Duration::from_millis(500));
    }
    let m = bridge.metrics();
    assert!(
        metric(&m, "ami_bridge_backlog") <= 500 + 8,
        "backlog over its cap\n{m}"
    );
    signal(&nats, "CONT");
    storm(&a, 100);
    let dropped = all_accounted_for(&url, 100 + 8000 + 100, Duration::from_secs(30));
    assert!(
        dropped > 0,
        "the stall must have overflowed the bounded queues"
    );
    assert_eq!(
        a.stats().logins,
        1,
        "Asterisk cut the AMI session while NATS was stalled"
    );
    bridge.shutdown();
}

#[test]
fn a_request_the_session_refuses_unsent_leaves_its_idempotency_key_to_the_corrected_retry() {
    let Some(nats) = Nats::start() else { return };
    let a = sim();
    let client = login()
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let _bridge = TestBridge::start(BridgeConfig::new(
        nats.url(),
        vec![spec("pbx1", &a, client)],
    ));
    wait_for(Duration::from_secs(10), "logged in", || {
        a.stats().logins == 1
    });
    let url = nats.url();
    let before = a.stats().actions;
    // Refused by the session before a byte is written (an ActionID is the bridge's to
    // give): `invalid_request`, nothing reached Asterisk.
    let wrong =
        r#"{"headers":[["Action","Ping"],["ActionID","mine"]],"idempotency_key":"fix-and-retry"}"#;
    let r = block(request(&url, "ami.pbx1.action", wrong));
    assert_eq!(r["outcome"], "invalid_request", "{r}");
    assert_eq!(
        a.stats().actions,
        before,
        "the refused request reached Asterisk"
    );
    // The requester corrects it and sends it again under the same key: nothing ran under
    // the key, so it runs (as after `not_sent`), instead of being answered `duplicate` of
    // a refusal for the whole idempotency window.
    let fixed = r#"{"headers":[["Action","Ping"]],"idempotency_key":"fix-and-retry"}"#;
    let r = block(request(&url, "ami.pbx1.action", fixed));
    assert_eq!(r["outcome"], "success", "{r}");
    assert_eq!(a.stats().actions, before + 1);
}
