//! Actions in flight under a clean stop, NATS outages and a slow NATS: a stop lets actions
//! in flight finish and answers every request; an idempotency key never runs two calls and
//! never blocks the retry a `not_sent` invites; a forwarded request is never run past its
//! deadline; nothing is dropped unsaid.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use std::time::{Duration, Instant};
use support::*;

/// A NATS server where the user `holder` may not subscribe to `ami.pbx1.action` nor
/// `ami.any.action`: a bridge logged in as `holder` is never picked from those queue groups,
/// so every request there reaches the other bridge (user `open`), which forwards it to the
/// lease holder. Makes the forwarding path deterministic.
const ONLY_THE_STANDBY_TAKES_REQUESTS: &str = r#"authorization { users = [
    { user: holder, password: pw, permissions: { subscribe: { deny: ["ami.pbx1.action", "ami.any.action"] } } },
    { user: open, password: pw }
] }"#;

fn url_as(nats: &Nats, user: &str) -> String {
    format!("nats://{user}:pw@127.0.0.1:{}", nats.port)
}

/// A simulated Asterisk whose Originate runs at once but is answered `delay` later.
fn slow_originate_sim(delay: Duration) -> ami_sim::tcp::TcpFront {
    let a = sim();
    a.with_faults(|f| {
        f.delay_replies(ami_sim::ActionMatch::named("Originate"), delay);
    });
    a
}

/// A bridge stopped (SIGTERM: `Bridge::shutdown`, then the process ends, as `ami bridge`
/// does) while it forwards a request to the lease holder: the holder runs the Originate
/// (a call is placed), and the requester must still hear about it. Observed: the
/// forwarding task is dropped with the runtime, the holder's answer goes to an inbox
/// nobody reads, the requester gets nothing at all, and nothing is counted or logged.
#[test]
fn a_request_being_forwarded_when_its_bridge_stops_is_still_answered() {
    let Some(nats) = Nats::start_with_config(ONLY_THE_STANDBY_TAKES_REQUESTS) else {
        return;
    };
    let a = slow_originate_sim(Duration::from_secs(3));
    let cfg = |user: &str, id: &str| {
        BridgeConfig::new(
            url_as(&nats, user),
            vec![spec("pbx1", &a, login().build().unwrap())],
        )
        .lease_ttl(Duration::from_secs(60))
        .bridge_id(id)
    };
    let holder = TestBridge::start(cfg("holder", "holder"));
    wait_for(Duration::from_secs(10), "holder serves pbx1", || {
        holder.serving().len() == 1 && a.stats().logins == 1
    });
    let standby = TestBridge::start(cfg("open", "standby"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(standby.serving().is_empty());
    let asked = Instant::now();
    let reply = request_in_background(
        nats.url(),
        Some("open"),
        "ami.pbx1.action",
        originate("stop-while-forwarding", 8000),
        Duration::from_secs(12),
    );
    wait_for(Duration::from_secs(5), "the holder placed the call", || {
        a.stats().calls_started == 1
    });
    // SIGTERM to the forwarding bridge while the holder's answer is on its way.
    standby.shutdown();
    let reply = reply.join().unwrap();
    let waited = asked.elapsed();
    holder.shutdown();
    let reply = reply.unwrap_or_else(|| {
        panic!("no reply at all after {waited:?}, though the Originate ran (calls_started = {}): the stopped bridge dropped the request it was forwarding, uncounted", a.stats().calls_started)
    });
    // Whatever it says (the holder's success, or `unknown`), never `not_sent`: it ran.
    assert_ne!(reply["outcome"], "not_sent", "{reply}");
}

/// The idempotency store does not answer `create` within the JetStream timeout (NATS slow
/// for 3 s): the bridge answers `not_sent` ("safe to retry, and its idempotency key is
/// freed", README), but the `create` lands afterwards and nothing frees it: the retry the
/// answer invites is refused as `duplicate` ("running or ran") for the whole idempotency
/// window (10 min), and the customer is never called, while the dialer is told the call
/// is running or ran.
#[test]
fn a_not_sent_answer_from_a_slow_idempotency_store_leaves_the_key_free_for_the_retry() {
    let Some(nats) = Nats::start() else { return };
    // A long lease: the 3 s stall must not cost the bridge its lease.
    let (proxy, a, bridge) = slow_bridge(&nats, Duration::from_secs(60));
    let url = nats.url();
    let body = originate("slow-store", 10_000);
    // Held 3 s: over the bridge's 2 s JetStream timeout, well under the lease's fence.
    proxy.hold_client_bytes(Duration::from_secs(3));
    let first = block(request(&url, "ami.pbx1.action", &body));
    proxy.hold_client_bytes(Duration::ZERO);
    assert_eq!(first["outcome"], "not_sent", "{first}");
    assert_eq!(a.stats().calls_started, 0, "not_sent, and nothing ran");
    // The held bytes (the create among them) have reached NATS by now.
    std::thread::sleep(Duration::from_secs(2));
    let retry = block(request(&url, "ami.pbx1.action", &body));
    bridge.shutdown();
    assert_eq!(
        retry["outcome"], "success",
        "the retry a not_sent invites was refused, though no call was ever placed: {retry} (first answer: {first})"
    );
    assert_eq!(a.stats().calls_started, 1);
}

/// A clean stop (SIGTERM) while an Originate is in flight, its answer one second away and
/// the flush time two: the bridge closes the AMI session at once (`release` removes the
/// server from the fleet before anything else), so the requester gets `unknown` for an
/// Originate Asterisk was about to confirm: the dialer cannot tell whether the customer
/// is being called. Every rolling restart does this to whatever is in flight.
#[test]
fn a_clean_stop_lets_an_originate_in_flight_get_its_answer() {
    let Some(nats) = Nats::start() else { return };
    let a = slow_originate_sim(Duration::from_secs(1));
    let bridge = TestBridge::start(BridgeConfig::new(
        nats.url(),
        vec![spec("pbx1", &a, login().build().unwrap())],
    ));
    wait_for(Duration::from_secs(10), "logged in", || {
        bridge.serving().len() == 1 && a.stats().logins == 1
    });
    let reply = request_in_background(
        nats.url(),
        None,
        "ami.pbx1.action",
        originate("stop-mid-originate", 10_000),
        Duration::from_secs(12),
    );
    wait_for(Duration::from_secs(5), "the call placed", || {
        a.stats().calls_started == 1
    });
    bridge.shutdown();
    let reply = reply.join().unwrap().expect("a reply");
    assert_eq!(
        reply["outcome"], "success",
        "an Originate one second from its answer, cut off by a clean stop: {reply}"
    );
}

/// A forwarded request carries the time its requester has left as a relative
/// `Ami-Remaining-Ms`, counted again from when the holder receives it. When the
/// forwarder's connection to NATS stalls (5 s here), the forwarded request reaches the
/// holder after the requester's whole `timeout_ms` (2 s) and after the forwarder itself
/// answered `unknown`, and the holder still places the call then, with 2 s more. A dialer
/// that set `timeout_ms` so that no call goes out after it gets one anyway.
#[test]
fn a_forwarded_request_that_arrives_after_its_deadline_is_not_run() {
    let Some(nats) = Nats::start_with_config(ONLY_THE_STANDBY_TAKES_REQUESTS) else {
        return;
    };
    let proxy = SlowProxy::start(([127, 0, 0, 1], nats.port).into());
    let a = sim();
    let cfg = |url: String, id: &str| {
        BridgeConfig::new(url, vec![spec("pbx1", &a, login().build().unwrap())])
            .lease_ttl(Duration::from_secs(60))
            .bridge_id(id)
    };
    let holder = TestBridge::start(cfg(url_as(&nats, "holder"), "holder"));
    wait_for(Duration::from_secs(10), "holder serves pbx1", || {
        holder.serving().len() == 1 && a.stats().logins == 1
    });
    // The standby reaches NATS through the proxy.
    let standby_url = proxy.url().replace("nats://", "nats://open:pw@");
    let standby = TestBridge::start(cfg(standby_url, "standby"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(standby.serving().is_empty());
    proxy.hold_client_bytes(Duration::from_secs(5));
    let asked = Instant::now();
    let reply = request_in_background(
        nats.url(),
        Some("open"),
        "ami.pbx1.action",
        originate("late-forward", 2000),
        Duration::from_secs(14),
    );
    std::thread::sleep(Duration::from_millis(1000));
    proxy.hold_client_bytes(Duration::ZERO);
    let reply = reply.join().unwrap();
    // Give the holder time to run what reached it late.
    let mut placed_at = None;
    while asked.elapsed() < Duration::from_secs(9) {
        if placed_at.is_none() && a.stats().calls_started > 0 {
            placed_at = Some(asked.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let calls = a.stats().calls_started;
    standby.shutdown();
    holder.shutdown();
    eprintln!("requester's reply: {reply:?}");
    assert_eq!(
        calls, 0,
        "an Originate with timeout_ms 2000 was placed {placed_at:?} after its request (reply: {reply:?})"
    );
}

/// A clean stop while NATS is down: the publisher's backlog (events taken from Asterisk
/// and not yet stored in JetStream, up to 65,536 items / 64 MiB by default) is thrown
/// away when `shutdown` aborts the publisher, and no counter nor log line says how many:
/// the README promises that what is dropped is counted and said. Expected: a warning
/// naming the number of items left unpublished (or a counter; the log is what survives
/// the process).
#[test]
fn events_a_clean_stop_leaves_unpublished_in_a_nats_outage_are_logged_with_their_count() {
    let lines = warnings();
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let a = sim();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (held, said) = rt.block_on(async {
        let config =
            BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, login().build().unwrap())]);
        let bridge = ami_nats::Bridge::start(config).await.unwrap();
        while bridge.serving().is_empty() || a.stats().logins == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the session's first markers be stored, then take NATS away.
        tokio::time::sleep(Duration::from_millis(500)).await;
        nats.stop();
        a.with_server(|sim, now| sim.emit_user_events(now, 40));
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&bridge.metrics_text(), "ami_bridge_backlog") < 40 {
            assert!(Instant::now() < deadline, "{}", bridge.metrics_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let held = metric(&bridge.metrics_text(), "ami_bridge_backlog");
        let before = lines.lock().unwrap().len();
        bridge.shutdown(Duration::from_secs(2)).await;
        let said: Vec<String> = lines.lock().unwrap()[before..].to_vec();
        (held, said)
    });
    rt.shutdown_background();
    // The count, as a number of its own in a line (the stop adds the `lost` marker and the
    // gap of its Logoff, and a lease_released marker).
    let counted = said.iter().any(|l| {
        l.split(|c: char| !c.is_ascii_digit())
            .any(|n| (held..=held + 3).any(|h| n == h.to_string()))
    });
    assert!(
        counted,
        "{held} items were in the backlog when the bridge stopped; what it logged: {said:#?}"
    );
}

/// Every action request the bridge throws away must be counted: one published without a
/// reply subject (a fire-and-forget Originate, a client bug) is ignored by `handle` and
/// `forward` with a debug line only and no count in `ami_bridge_actions_total`, while
/// the same request refused for lack of room (`refuse`) is counted `not_sent`.
#[test]
fn an_action_request_without_a_reply_subject_is_counted_when_it_is_dropped() {
    let Some(nats) = Nats::start() else { return };
    let a = sim();
    let bridge = TestBridge::start(BridgeConfig::new(
        nats.url(),
        vec![spec("pbx1", &a, login().build().unwrap())],
    ));
    wait_for(Duration::from_secs(10), "logged in", || {
        bridge.serving().len() == 1 && a.stats().logins == 1
    });
    let actions_before = a.stats().actions;
    block(async {
        let nc = async_nats::connect(nats.url()).await.unwrap();
        nc.publish("ami.pbx1.action", originate("no-reply", 5000).into())
            .await
            .unwrap();
        nc.flush().await.unwrap();
    });
    std::thread::sleep(Duration::from_secs(1));
    let text = bridge.metrics();
    bridge.shutdown();
    let requests: i64 = text
        .lines()
        .filter(|l| l.starts_with("ami_bridge_actions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum();
    let stats = a.stats();
    assert_eq!(stats.logoffs, 1, "{stats:?}");
    assert_eq!(
        stats.actions,
        actions_before + 1,
        "nothing ran but the stop's Logoff"
    );
    assert_eq!(
        requests,
        1,
        "the dropped request is in no count: {}",
        text.lines()
            .filter(|l| l.contains("actions"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The `pending` value that holds an idempotency key while its request runs is an entry of
/// the idempotency bucket, whose `max_age` is the idempotency window: a request still
/// running when the window ends (its `timeout_ms`, which nothing caps, is longer) loses
/// its key, and a retry with the same key runs a second Originate: two calls. Shown with
/// a 1 s window and a 4 s answer; the same holds for the default 10 min window and a
/// request whose timeout is longer.
#[test]
fn an_idempotency_key_holds_while_its_originate_still_runs_past_the_window() {
    let Some(nats) = Nats::start() else { return };
    let a = slow_originate_sim(Duration::from_secs(4));
    let bridge = TestBridge::start(
        BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, login().build().unwrap())])
            .idempotency_window(Duration::from_secs(1)),
    );
    wait_for(Duration::from_secs(10), "logged in", || {
        bridge.serving().len() == 1 && a.stats().logins == 1
    });
    let first = request_in_background(
        nats.url(),
        None,
        "ami.pbx1.action",
        originate("long-running", 10_000),
        Duration::from_secs(12),
    );
    wait_for(Duration::from_secs(5), "the first call placed", || {
        a.stats().calls_started == 1
    });
    // The first still runs (its answer is 4 s away); the dialer retries with the same key.
    std::thread::sleep(Duration::from_millis(2500));
    let second = request_in_background(
        nats.url(),
        None,
        "ami.pbx1.action",
        originate("long-running", 10_000),
        Duration::from_secs(12),
    );
    let first = first.join().unwrap();
    let second = second.join().unwrap();
    let calls = a.stats().calls_started;
    bridge.shutdown();
    assert_eq!(
        calls, 1,
        "one idempotency key, two Originates: first {first:?}, second {second:?}"
    );
}

/// A `Bridge` dropped without `shutdown` while its runtime lives on (an application that
/// replaces its bridge): it stops, as its lease loop and action subscriptions already take
/// the drop to mean, and leaves nothing running behind: the lease released (a standby
/// takes over at once), the AMI session closed, and its metrics endpoint (like its
/// publisher and status tasks) gone, its port free for the bridge that replaces it.
#[test]
fn a_dropped_bridge_releases_its_lease_and_leaves_no_task_or_socket_behind() {
    let Some(nats) = Nats::start() else { return };
    let a = sim();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, login().build().unwrap())])
        .lease_ttl(Duration::from_secs(120))
        .bridge_id("dropped")
        .metrics("127.0.0.1:0".parse().unwrap());
    let bridge = rt.block_on(ami_nats::Bridge::start(config)).unwrap();
    let metrics = bridge.metrics_addr().unwrap();
    wait_for(Duration::from_secs(10), "logged in", || {
        bridge.serving().len() == 1 && a.stats().logins == 1
    });
    drop(bridge);
    let url = nats.url();
    let lease = move || {
        let url = url.clone();
        block(async move {
            let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
            let kv = js.get_key_value("ami_leases").await.unwrap();
            let e = kv.entry("pbx1").await.unwrap().unwrap();
            String::from_utf8(e.value.to_vec()).unwrap()
        })
    };
    wait_for(Duration::from_secs(10), "the lease released", || {
        lease().starts_with("released ")
    });
    wait_for(Duration::from_secs(10), "the AMI session closed", || {
        a.stats().sessions_open == 0
    });
    wait_for(
        Duration::from_secs(5),
        "the metrics endpoint closed",
        || std::net::TcpStream::connect(metrics).is_err(),
    );
    drop(rt);
}

/// `shutdown(Duration::MAX)`, "as long as each step takes": before, the Logoff step added
/// the limit to an `Instant` and panicked ("overflow when adding duration to instant"),
/// after the action requests were drained, with the sessions not logged off and the
/// leases not released.
#[test]
fn a_stop_given_no_time_limit_logs_the_sessions_off_instead_of_panicking() {
    let Some(nats) = Nats::start() else {
        return;
    };
    let a = sim();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stopped = rt.block_on(async {
        let config =
            BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, login().build().unwrap())]);
        let bridge = ami_nats::Bridge::start(config).await.unwrap();
        while bridge.serving().is_empty() || a.stats().logins == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stop = tokio::spawn(bridge.shutdown(Duration::MAX));
        tokio::time::timeout(Duration::from_secs(20), stop).await
    });
    rt.shutdown_background();
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the stop did not end well: {e}"),
        Err(_) => panic!("the stop did not end within 20 s"),
    }
    assert_eq!(a.stats().logoffs, 1, "the session was logged off");
}

/// The numbers a log line gives as counts of items or events ("480 events", "20 items").
fn counts_said(line: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[1].starts_with("items") || w[1].starts_with("events"))
        .filter_map(|w| w[0].parse::<u64>().ok())
        .sum()
}

/// A clean stop in a NATS outage, with more events read from Asterisk than the publisher's
/// backlog holds: the rest wait in the AMI session's event queue, and the stop's release
/// turns them into the session's final gap. Observed: the stop's lines counted the backlog
/// only; the events in that gap were neither said nor counted in
/// `ami_bridge_events_dropped_total` (the gap is left unread when the publisher is
/// aborted, or counted as one discarded item when it is read after the term ended).
#[test]
fn events_still_queued_in_the_ami_session_at_a_stop_in_a_nats_outage_are_counted_and_logged() {
    let lines = warnings();
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let a = sim();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = login().event_queue_cap(10_000).build().unwrap();
    let (held, said) = rt.block_on(async {
        let config = BridgeConfig::new(nats.url(), vec![spec("pbxqueued", &a, client)])
            .lease_ttl(Duration::from_secs(60))
            .max_backlog(20);
        let bridge = ami_nats::Bridge::start(config).await.unwrap();
        while bridge.serving().is_empty() || a.stats().logins == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        nats.stop();
        a.with_server(|sim, now| sim.emit_user_events(now, 500));
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&bridge.metrics_text(), "ami_bridge_backlog") < 20 {
            assert!(Instant::now() < deadline, "{}", bridge.metrics_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The rest reach the session's queue.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = metric(&bridge.metrics_text(), "ami_bridge_backlog");
        let before = lines.lock().unwrap().len();
        bridge.shutdown(Duration::from_secs(2)).await;
        let said: Vec<String> = lines.lock().unwrap()[before..].to_vec();
        (held, said)
    });
    rt.shutdown_background();
    // The backlog's items are said in a line of their own (see the test above); the events
    // behind them are said for their server.
    let queued = 500 - u64::try_from(held).unwrap();
    let counted: u64 = said
        .iter()
        .filter(|l| l.contains("pbxqueued"))
        .map(|l| counts_said(l))
        .sum();
    assert!(
        counted >= queued,
        "{queued} events were still queued in the AMI session when the bridge stopped; said for pbxqueued: {counted}; what it logged: {said:#?}"
    );
}

/// A clean stop that has waited its whole flush (2 s) for an Originate whose answer is
/// further away (6 s) gives up on it before it closes the session and releases the
/// lease: the requester is answered `unknown` (the action was written to Asterisk: it may
/// have run) at once, not left to time out, nor answered by a session closed under it.
#[test]
fn a_stop_that_gives_up_on_an_originate_in_flight_answers_it_unknown() {
    let Some(nats) = Nats::start() else { return };
    let a = slow_originate_sim(Duration::from_secs(6));
    let bridge = TestBridge::start(BridgeConfig::new(
        nats.url(),
        vec![spec("pbx1", &a, login().build().unwrap())],
    ));
    wait_for(Duration::from_secs(10), "logged in", || {
        bridge.serving().len() == 1 && a.stats().logins == 1
    });
    let asked = Instant::now();
    let reply = request_in_background(
        nats.url(),
        None,
        "ami.pbx1.action",
        originate("given-up-at-stop", 20_000),
        Duration::from_secs(20),
    );
    wait_for(Duration::from_secs(5), "the call placed", || {
        a.stats().calls_started == 1
    });
    bridge.shutdown();
    let reply = reply.join().unwrap().expect("a reply");
    let answered = asked.elapsed();
    assert_eq!(reply["outcome"], "unknown", "{reply}");
    assert!(
        answered < Duration::from_secs(6),
        "answered after {answered:?}: not by the stop's give-up"
    );
    // Its Logoff waits behind the Originate's answer, past the flush: the session is
    // closed without it, before the lease is released.
    wait_for(Duration::from_secs(5), "the AMI session closed", || {
        a.stats().sessions_open == 0
    });
}

/// The lease bucket as another bridge sees it, created as a bridge creates it when it is
/// not there yet (so a test can write a lease before the bridge under test starts).
async fn lease_bucket(url: &str) -> async_nats::jetstream::kv::Store {
    use async_nats::jetstream::stream;
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    js.get_or_create_stream(stream::Config {
        name: "KV_ami_leases".into(),
        subjects: vec!["$KV.ami_leases.>".into()],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    js.get_key_value("ami_leases").await.unwrap()
}

/// The value of lease `key` as text (empty when the key has none).
async fn lease_text(kv: &async_nats::jetstream::kv::Store, key: &str) -> String {
    kv.entry(key)
        .await
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
        .unwrap_or_default()
}

/// A clean stop of a bridge holding sixteen leases on a slow NATS (every call answered
/// 0.5 s after it is sent: a lease pass, one renewal after another, takes 8 s). Observed:
/// the lease loop took the stop only between passes, so it finished the pass under way
/// (up to 8 s), then released the leases one after another (0.5 s each): the standbys
/// waited 8.5 s to 16.5 s for leases a stop was meant to hand over at once, longer than
/// the stop's own flush (2 s in `ami bridge`), after which the process ends with them
/// still held (then free only after their TTL).
#[test]
fn a_stop_during_a_lease_pass_on_a_slow_nats_releases_every_lease_promptly() {
    let Some(nats) = Nats::start() else { return };
    let proxy = SlowProxy::start(([127, 0, 0, 1], nats.port).into());
    let a = sim();
    let names: Vec<String> = (1..=16).map(|n| format!("pbx{n}")).collect();
    let servers = names
        .iter()
        .map(|n| spec(n, &a, login().build().unwrap()))
        .collect();
    // TTL 16 s: renewals every 4 s, fenced 12 s after the last one; an 8 s pass keeps them.
    let config = BridgeConfig::new(proxy.url(), servers)
        .lease_ttl(Duration::from_secs(16))
        .bridge_id("x");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bridge = rt.block_on(ami_nats::Bridge::start(config)).unwrap();
    wait_for(Duration::from_secs(15), "x serves every server", || {
        bridge.serving().len() == names.len() && a.stats().logins == names.len() as u64
    });
    proxy.hold_client_bytes(Duration::from_millis(500));
    let url = nats.url();
    // Well into a pass of renewals: its first (pbx1's) has landed, fifteen are to come.
    block(async {
        let kv = lease_bucket(&url).await;
        let taken = kv.entry("pbx1").await.unwrap().unwrap().revision;
        let deadline = Instant::now() + Duration::from_secs(10);
        while kv.entry("pbx1").await.unwrap().unwrap().revision == taken {
            assert!(Instant::now() < deadline, "x never renewed pbx1");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let asked = Instant::now();
    // A flush long enough for the old loop to end too: the time measured is the lease
    // loop's, not the flush's.
    let stop = rt.spawn(bridge.shutdown(Duration::from_secs(30)));
    let (released, values) = block(async {
        let kv = lease_bucket(&url).await;
        loop {
            let mut values = Vec::new();
            for n in &names {
                values.push(lease_text(&kv, n).await);
            }
            if values.iter().all(|v| v.starts_with("released x ")) {
                break (Some(asked.elapsed()), values);
            }
            if asked.elapsed() > Duration::from_secs(25) {
                break (None, values);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    proxy.hold_client_bytes(Duration::ZERO);
    let _ = rt.block_on(stop);
    rt.shutdown_background();
    let released =
        released.unwrap_or_else(|| panic!("not every lease released in 25 s: {values:?}"));
    eprintln!("every lease released {released:?} after the stop began");
    // Taken at once (the call under way abandoned), the stop costs about two calls: the
    // markers stored, the leases written `released` (together; a renewal the stop cut short
    // but that landed costs two more: the key read, then written on its revision). About
    // 2 s; it took 8.5 s at the least (a stop between two passes), 16.5 s at most.
    assert!(
        released < Duration::from_secs(4),
        "the sixteen leases were released {released:?} after the stop began"
    );
}

/// A bridge whose lease pass is taking a released lease (its compare-and-set on its way,
/// NATS slow) when a clean stop begins: the stop logs the sessions off (here waiting for
/// pbx0's Goodbye, which never comes) before it tells the lease loop. Observed: the take
/// lands meanwhile, and the bridge connects and logs in to pbx1 after the stop began,
/// a session the stop then drops without its Logoff, and it keeps the lease until the
/// stop ends. Expected: a lease taken while stopping is released again at once, its
/// server never connected.
#[test]
fn a_lease_taken_while_the_bridge_stops_is_released_at_once_and_its_server_never_connected() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let proxy = SlowProxy::start(([127, 0, 0, 1], nats.port).into());
    let pbx0 = sim();
    pbx0.with_faults(|f| {
        f.drop_actions(ami_sim::ActionMatch::named("Logoff"));
    });
    let pbx1 = sim();
    // pbx1 is held by another bridge (z) when x starts.
    let other = "0123456789abcdef";
    block(async {
        let kv = lease_bucket(&url).await;
        kv.create("pbx1", format!("held z {other}").into())
            .await
            .unwrap();
    });
    let config = BridgeConfig::new(
        proxy.url(),
        vec![
            spec("pbx0", &pbx0, login().build().unwrap()),
            spec("pbx1", &pbx1, login().build().unwrap()),
        ],
    )
    // Renewals every 3 s; pbx1, seen unchanged, would be taken only after 12 s.
    .lease_ttl(Duration::from_secs(12))
    .bridge_id("x");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bridge = rt.block_on(ami_nats::Bridge::start(config)).unwrap();
    wait_for(Duration::from_secs(10), "x serves pbx0", || {
        bridge.serving() == ["pbx0"] && pbx0.stats().logins == 1
    });
    let slow = Duration::from_millis(1200);
    proxy.hold_client_bytes(slow);
    // Right after x's next renewal of pbx0 lands, z releases pbx1: x's read of pbx1 (sent
    // next, in the same pass) reaches NATS `slow` later and finds it released, and its
    // compare-and-set lands another `slow` later.
    let released_at = block(async {
        let kv = lease_bucket(&url).await;
        let renewed = kv.entry("pbx0").await.unwrap().unwrap().revision;
        let deadline = Instant::now() + Duration::from_secs(10);
        while kv.entry("pbx0").await.unwrap().unwrap().revision == renewed {
            assert!(Instant::now() < deadline, "x never renewed pbx0");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let e = kv.entry("pbx1").await.unwrap().unwrap();
        kv.update("pbx1", format!("released z {other}").into(), e.revision)
            .await
            .unwrap();
        Instant::now()
    });
    // The stop begins while x's take of pbx1 is on its way; it waits up to 20 s for pbx0's
    // Goodbye before it tells the lease loop.
    std::thread::sleep(slow);
    let _stop = rt.spawn(bridge.shutdown(Duration::from_secs(20)));
    let value = block(async {
        let kv = lease_bucket(&url).await;
        let deadline = released_at + Duration::from_secs(10);
        loop {
            let value = lease_text(&kv, "pbx1").await;
            if value.starts_with("released x ")
                || pbx1.stats().sessions_accepted > 0
                || Instant::now() > deadline
            {
                break value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // A session started by the take would connect within this.
    std::thread::sleep(Duration::from_millis(500));
    let stats = pbx1.stats();
    rt.shutdown_background();
    assert_eq!(
        (stats.sessions_accepted, stats.logins),
        (0, 0),
        "pbx1 connected by a bridge that was stopping (its lease: {value:?})"
    );
    assert!(
        value.starts_with("released x "),
        "the lease taken while stopping must be released at once, not at the stop's end: {value:?}"
    );
}
