//! What reaches the publisher's ack inbox from anyone but JetStream.
//!
//! Every event publish carries its reply subject, so whoever may subscribe to the event
//! subjects sees the bridge's ack inbox and may publish to it. What it sends there must
//! neither make the bridge take an event as stored (a silent loss) nor reach a log line
//! unescaped or unbounded.
//!
//! Real nats-server on 127.0.0.1 (the test passes vacuously without one, as bridge.rs's do).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::BridgeConfig;
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// The stream the bridge creates (the subjects it publishes on), as the tests recreate it.
fn ami_stream() -> stream::Config {
    stream::Config {
        name: "AMI".into(),
        subjects: vec![
            "ami.*.event.>".into(),
            "ami.*.gap".into(),
            "ami.*.session".into(),
        ],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// `n` UserEvents from the simulator.
fn storm(front: &ami_sim::tcp::TcpFront, n: usize) {
    front.with_server(|sim, now| sim.emit_user_events(now, n));
}

/// How many storm events the stream holds.
fn storm_events(url: &str) -> usize {
    block(read_stream(url, 1))
        .iter()
        .filter(|s| s.body["type"] == "event" && header(&s.body, "UserEvent") == Some("SimStorm"))
        .count()
}

/// A subscriber of the event subjects that answers every publish on its reply subject
/// with `reply`, until the returned sender is dropped or told to stop; with the number of
/// publishes it answered so far.
fn answer_every_event(
    url: &str,
    reply: Vec<u8>,
) -> (std::sync::mpsc::Sender<()>, Arc<AtomicUsize>) {
    let answered = Arc::new(AtomicUsize::new(0));
    let counted = answered.clone();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let url = url.to_string();
    std::thread::spawn(move || {
        block(async move {
            let client = async_nats::connect(&url).await.unwrap();
            let mut sub = client.subscribe("ami.*.event.>").await.unwrap();
            client.flush().await.unwrap();
            ready_tx.send(()).unwrap();
            // Until told to stop, or the sender is dropped.
            while let Err(std::sync::mpsc::TryRecvError::Empty) = stop_rx.try_recv() {
                let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await
                else {
                    continue;
                };
                if let Some(to) = m.reply {
                    let _ = client.publish(to, reply.clone().into()).await;
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }
            let _ = sub.unsubscribe().await;
            let _ = client.flush().await;
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (stop_tx, answered)
}

/// A bridge of one simulated server, logged in, whose stream is then deleted: until it is
/// made again, only the answers of whoever subscribes to the event subjects come back.
fn bridge_without_its_stream(nats: &Nats) -> (ami_sim::tcp::TcpFront, TestBridge) {
    let url = nats.url();
    let a = sim();
    let client = login().build().unwrap();
    let bridge = TestBridge::start(BridgeConfig::new(
        url.clone(),
        vec![spec("pbx1", &a, client)],
    ));
    wait_for(Duration::from_secs(10), "logged in", || {
        a.stats().logins == 1
    });
    block(async {
        let js = jetstream::new(async_nats::connect(&url).await.unwrap());
        js.delete_stream("AMI").await.unwrap();
    });
    (a, bridge)
}

fn make_stream(url: &str) {
    block(async {
        let js = jetstream::new(async_nats::connect(url).await.unwrap());
        js.create_stream(ami_stream()).await.unwrap();
    });
}

#[test]
fn an_ack_forged_on_the_ack_inbox_does_not_make_the_bridge_take_an_event_as_stored() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let (a, bridge) = bridge_without_its_stream(&nats);
    // A plausible JetStream ack, of a stream that is not the bridge's.
    let (forger, answered) =
        answer_every_event(&url, br#"{"stream":"ELSEWHERE","seq":1}"#.to_vec());
    storm(&a, 20);
    // Every event published (and forged-acked) at least once.
    wait_for(Duration::from_secs(10), "every event answered", || {
        answered.load(Ordering::SeqCst) >= 20
    });
    drop(forger);
    std::thread::sleep(Duration::from_millis(300));
    make_stream(&url);
    // JetStream never stored them: the bridge must still hold them and publish them again.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = storm_events(&url);
        if stored == 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bridge.kill();
    assert_eq!(
        stored, 20,
        "events the forged acks stood for were never stored: a silent loss"
    );
}

#[test]
fn a_reply_on_the_ack_inbox_that_is_no_ack_reaches_the_log_escaped_and_bounded() {
    let lines = warnings();
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let (a, bridge) = bridge_without_its_stream(&nats);
    let from = lines.lock().unwrap().len();
    let mut hostile = b"no ack\r\n[ERROR] forged line \x1b[31mred\x1b]0;title\x07 ".to_vec();
    hostile.extend(std::iter::repeat_n(b'x', 200_000));
    let (forger, _) = answer_every_event(&url, hostile);
    storm(&a, 5);
    wait_for(Duration::from_secs(10), "the reply logged", || {
        lines.lock().unwrap()[from..]
            .iter()
            .any(|l| l.contains("forged line"))
    });
    drop(forger);
    bridge.kill();
    let logged: Vec<String> = lines.lock().unwrap()[from..].to_vec();
    for l in logged.iter().filter(|l| l.contains("forged line")) {
        let shown: String = l.chars().take(300).collect();
        assert!(
            !l.chars().any(|c| c.is_control()),
            "remote text logged with control characters: {shown:?}"
        );
        assert!(
            l.len() <= 2_000,
            "remote text logged unbounded: a line of {} bytes: {shown:?}",
            l.len()
        );
    }
}

#[test]
fn a_stream_whose_name_json_escapes_has_its_refusals_read_as_its_own() {
    // nats-server accepts a stream named `AMI&T`, and writes its error acks with Go's JSON
    // encoder: `"stream":"AMI\u0026T"`. A stream that refuses every event for good (each
    // is over its max_msg_size) must have them dropped and counted as refused, not ignored
    // as foreign replies and published again every ack timeout in front of the rest.
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();
    let name = "AMI&T";
    block(async {
        let js = jetstream::new(async_nats::connect(&url).await.unwrap());
        js.create_stream(stream::Config {
            name: name.into(),
            max_message_size: 16,
            ..ami_stream()
        })
        .await
        .unwrap();
    });
    let a = sim();
    let client = login().build().unwrap();
    let bridge = TestBridge::start(
        BridgeConfig::new(url.clone(), vec![spec("pbx1", &a, client)]).stream(
            ami_nats::StreamLimits {
                name: name.into(),
                ..Default::default()
            },
        ),
    );
    wait_for(Duration::from_secs(10), "logged in", || {
        a.stats().logins == 1
    });
    storm(&a, 5);
    let refused = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("ami_bridge_publish_refused_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .sum::<i64>()
    };
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline && refused(&bridge.metrics()) < 5 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = bridge.metrics();
    bridge.kill();
    assert!(
        refused(&m) >= 5,
        "the stream's own refusals were not taken as its answers\n{m}"
    );
}
