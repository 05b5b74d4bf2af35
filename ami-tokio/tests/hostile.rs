//! ami-tokio against hostile servers over loopback (issue 9): discarded input reaches the
//! stream in order, an unterminated legacy Follows does not make the client deaf, a trickle
//! is closed by the heartbeat, nothing is written after its deadline, and skipped padding
//! holds no memory. Uses only the public API (spawn, send, events, stats).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

use ami_proto::{
    Action, ActionError, ClientConfig, ClientConfigBuilder, DecodeError, DecoderLimits, Discard,
    Phase, SendOptions, StreamItem,
};
use ami_sim::hostile::{junk, message, padded_event, Hostile, HostileServer};
use ami_tokio::{AmiError, Events};
use std::time::Duration;

fn builder() -> ClientConfigBuilder {
    ClientConfig::builder("admin", "hostile").seed(5)
}

fn server(h: Hostile) -> HostileServer {
    HostileServer::start(h, 0).unwrap()
}

/// The next stream item that is not a session boundary.
async fn next(events: &mut Events) -> StreamItem {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an item within 10 s")
            .expect("stream open");
        if !matches!(item, StreamItem::Ready { .. }) {
            return item;
        }
    }
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarded_input_reaches_the_stream_in_order() {
    let mut script = padded_event("A", 1, 0);
    script.extend(junk(100));
    script.extend(message(&[("Event", "Bad"), ("Long", &"x".repeat(2000))]));
    script.extend(padded_event("B", 2, 0));
    let srv = server(Hostile::Script(script));
    let limits = DecoderLimits::builder()
        .max_line_len(1024)
        .max_message_len(64 << 10)
        .buffer_cap(128 << 10)
        .build()
        .unwrap();
    let cfg = builder().decoder(limits).build().unwrap();
    let (ami, mut events) = ami_tokio::spawn(cfg, srv.local_addr());
    ami.wait_ready().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(next(&mut events).await);
    }
    assert!(matches!(&got[0], StreamItem::Event(m) if m.event() == Some("A")));
    assert_eq!(
        got[1],
        StreamItem::Discarded {
            reason: Discard::NotEventOrResponse,
            count: 1
        }
    );
    assert_eq!(
        got[2],
        StreamItem::Discarded {
            reason: Discard::Malformed(DecodeError::LineTooLong { limit: 1024 }),
            count: 1
        }
    );
    assert!(matches!(&got[3], StreamItem::Event(m) if m.event() == Some("B")));
    assert_eq!(ami.stats().discarded, 2);
    ami.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unterminated_legacy_follows_does_not_make_the_client_deaf() {
    let mut script = b"Response: Follows\r\nPrivilege: Command\r\nActionID: x-1\r\n\
System uptime: 1 hour\n\n"
        .to_vec();
    for i in 0..2000 {
        script.extend(padded_event("After", i, 0));
    }
    let srv = server(Hostile::Script(script));
    let (ami, mut events) = ami_tokio::spawn(builder().build().unwrap(), srv.local_addr());
    ami.wait_ready().await.unwrap();
    assert_eq!(
        next(&mut events).await,
        StreamItem::Discarded {
            reason: Discard::Malformed(DecodeError::FollowsUnterminated),
            count: 1
        }
    );
    for i in 0..2000 {
        match next(&mut events).await {
            StreamItem::Event(m) => assert_eq!(m.get_str("Seq"), Some(i.to_string().as_str())),
            other => panic!("{other:?}"),
        }
    }
    ami.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_of_bytes_is_closed_by_the_heartbeat_and_reconnected() {
    let srv = server(Hostile::Trickle {
        every: Duration::from_millis(20),
    });
    let cfg = builder()
        .ping_interval(Duration::from_millis(300))
        .pong_timeout(Duration::from_millis(300))
        .backoff_base(Duration::from_millis(10))
        .build()
        .unwrap();
    let (ami, _events) = ami_tokio::spawn(cfg, srv.local_addr());
    ami.wait_ready().await.unwrap();
    until("a heartbeat timeout and a reconnect", || {
        ami.stats()
            .disconnect_count(ami_proto::DisconnectKind::HeartbeatTimeout)
            >= 1
            && srv.connections() >= 2
    })
    .await;
    assert!(
        srv.received_count("Ping") >= 1,
        "the client pinged despite the trickle"
    );
    ami.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_written_after_its_deadline() {
    let srv = server(Hostile::Silent);
    let cfg = builder().pipeline_depth(1).build().unwrap();
    let (ami, _events) = ami_tokio::spawn(cfg, srv.local_addr());
    ami.wait_ready().await.unwrap();
    // The first Ping holds the one pipeline slot for a second; the two behind it expire
    // while queued, long before the slot frees (equal deadlines would race the slot: an
    // action whose deadline is a moment after the first's may still be written in time).
    let send = |ms| {
        let ami = ami.clone();
        let timeout = SendOptions::timeout(Duration::from_millis(ms));
        tokio::spawn(async move { ami.send_with(Action::new("Ping"), timeout).await })
    };
    let first = send(1000);
    until("the first Ping on the wire", || {
        srv.received_count("Ping") == 1
    })
    .await;
    let sends = [first, send(200), send(200)];
    let mut phases = Vec::new();
    for s in sends {
        match s.await.unwrap() {
            Err(AmiError::Action(ActionError::TimedOut { phase, .. })) => phases.push(phase),
            other => panic!("{other:?}"),
        }
    }
    phases.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(phases, [Phase::Queued, Phase::Queued, Phase::Response]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        srv.received_count("Ping"),
        1,
        "only the first Ping was written before its deadline"
    );
    ami.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_padding_between_events_holds_no_memory() {
    let srv = server(Hostile::PaddedEvents { pad: 63 << 10 });
    let (ami, mut events) = ami_tokio::spawn(builder().build().unwrap(), srv.local_addr());
    ami.wait_ready().await.unwrap();
    // Nobody reads for a while: small events pile up, their padding must not.
    until("500 queued events", || ami.stats().event_queue_len >= 500).await;
    let s = ami.stats();
    assert!(
        s.event_queue_bytes < s.event_queue_len * 1024,
        "{} bytes for {} small events",
        s.event_queue_bytes,
        s.event_queue_len
    );
    // Event n follows the padding of event n-1: the padding after the newest queued event may
    // still be unread, so n events prove n-1 skips, not n.
    assert!(
        s.discarded + 1 >= s.event_queue_len as u64,
        "{} skips counted for {} queued events",
        s.discarded,
        s.event_queue_len
    );
    assert!(matches!(next(&mut events).await, StreamItem::Event(_)));
    ami.close();
}
