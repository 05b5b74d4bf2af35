//! ami-tokio against the simulator's faults over real loopback sockets: a server restart
//! mid-stream, a half-open link, a slow consumer, and an action the server never answers
//! (on tokio's paused clock).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_proto::{
    Action, ActionError, DisconnectReason, OverflowPolicy, Phase, SendOptions, StreamItem,
};
use ami_sim::{ActionMatch, Fault, SessionId};
use ami_tokio::{AmiError, Status};
use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_stream_fails_the_written_action_then_reconnects_and_events_resume() {
    let mut front = front();
    let (ami, mut events) = ami_tokio::spawn(admin(), front.local_addr());
    ready(&ami).await;
    let log = StatusLog::record(&ami);

    // An action the server takes but never answers: written, in flight at the restart.
    front.with_faults(|f| {
        f.drop_actions(ActionMatch::named("Getvar"));
    });
    let in_flight = {
        let ami = ami.clone();
        tokio::spawn(async move { ami.send(Action::new("Getvar").field("Variable", "x")).await })
    };
    sim_until(&front, "Getvar swallowed", |s| s.actions_dropped == 1).await;

    // A storm, and the restart right behind it while the client is still reading it.
    const N: usize = 2000;
    front.with_server(|sim, now| {
        sim.emit_user_events(now, N);
        sim.restart(now, Duration::from_millis(300));
    });

    let outcome = within("the in-flight action", in_flight).await.unwrap();
    assert_eq!(
        outcome,
        Err(AmiError::Action(ActionError::Unknown(
            DisconnectReason::ServerShutdown
        ))),
        "written before the restart: the server may have run it"
    );
    // Everything sent before the close is delivered, in order, then the Shutdown event.
    let before = storm_events(&mut events, N).await;
    assert_eq!(before, (0..N as u64).collect::<Vec<_>>());

    // Down for 300 ms: every connect in that window is refused (EOF before the banner).
    until("Disconnected", || {
        log.seen()
            .iter()
            .any(|s| matches!(s, Status::Disconnected { .. }))
    })
    .await;
    status_until(&ami, "Ready again", |s| matches!(s, Status::Ready { .. })).await;
    let st = front.stats();
    assert_eq!((st.restarts, st.logins), (1, 2), "{st:?}");
    assert!(
        st.sessions_refused >= 1,
        "tried while the server was down: {st:?}"
    );

    // The stream carries on from the new session.
    front.with_server(|sim, now| sim.emit_user_events(now, N));
    let after = storm_events(&mut events, N).await;
    assert_eq!(after, (0..N as u64).collect::<Vec<_>>());
    let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
    assert_eq!(pong.message().get_str("Ping"), Some("Pong"));

    let seen = log.seen();
    let first_down = seen
        .iter()
        .position(|s| matches!(s, Status::Disconnected { .. }))
        .unwrap_or_else(|| panic!("no Disconnected in {seen:?}"));
    assert!(
        matches!(
            &seen[first_down],
            Status::Disconnected {
                reason: DisconnectReason::ServerShutdown,
                retry_at: Some(_)
            }
        ),
        "{seen:?}"
    );
    assert!(
        seen[first_down..]
            .iter()
            .any(|s| matches!(s, Status::Ready { .. })),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|s| matches!(s, Status::Closed { .. })));
    let cs = ami.stats();
    assert_eq!(
        cs.disconnect_count(ami_proto::DisconnectKind::ServerShutdown),
        1
    );
    assert_eq!(cs.outcome_count(ami_proto::OutcomeKind::Unknown), 1);
    assert_eq!(cs.logins, 2);
    front.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_link_is_detected_by_the_heartbeat_and_a_new_session_is_ready() {
    let mut front = front();
    let ping = Duration::from_millis(200);
    let config = builder("admin", "amp111")
        .ping_interval(ping)
        .pong_timeout(ping)
        .build()
        .unwrap();
    let (ami, _events) = ami_tokio::spawn(config, front.local_addr());
    ready(&ami).await;
    // One heartbeat round trip on a healthy link keeps the session up.
    sim_until(&front, "a heartbeat Ping", |s| s.actions >= 2).await;
    assert!(matches!(&ami.status().get(), Status::Ready { .. }));

    // The simulator numbers sessions from 1 in accept order: ours is the only one so far.
    assert_eq!(front.stats().sessions_accepted, 1);
    let ours = SessionId(1);
    let log = StatusLog::record(&ami);
    let t0 = Instant::now();
    front.with_server(|sim, now| {
        sim.inject(
            now,
            Fault::HalfOpen {
                session: Some(ours),
            },
        )
    });

    let down = status_until(&ami, "Disconnected", |s| {
        matches!(s, Status::Disconnected { .. })
    })
    .await;
    let detected = t0.elapsed();
    assert!(
        matches!(
            down,
            Status::Disconnected {
                reason: DisconnectReason::HeartbeatTimeout,
                ..
            }
        ),
        "{down:?}"
    );
    // At most one idle interval until the Ping, then the pong deadline (plus scheduling).
    assert!(detected >= ping, "{detected:?}");
    // Nominal 0.4 s (ping 200 ms + pong 200 ms); the bound only proves the heartbeat, not
    // the connection's close, detected it, with room for a loaded CI machine.
    assert!(detected < Duration::from_secs(3), "{detected:?}");

    // The reconnect is a new session, which is not half-open.
    status_until(&ami, "Ready again", |s| matches!(s, Status::Ready { .. })).await;
    let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
    assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    let st = front.stats();
    assert_eq!((st.sessions_accepted, st.logins), (2, 2), "{st:?}");
    assert_eq!(
        ami.stats()
            .disconnect_count(ami_proto::DisconnectKind::HeartbeatTimeout),
        1
    );
    let seen = log.seen();
    assert!(!seen.iter().any(|s| matches!(s, Status::Closed { .. })));
    front.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_gets_a_gap_and_the_connection_is_kept() {
    let mut front = front();
    const CAP: usize = 1000;
    const STORM: u64 = 50_000;
    let config = builder("admin", "amp111")
        .event_queue_cap(CAP)
        .overflow(OverflowPolicy::DropOldest)
        .build()
        .unwrap();
    let (ami, mut events) = ami_tokio::spawn(config, front.local_addr());
    ready(&ami).await;
    let log = StatusLog::record(&ami);
    // Start from an empty queue so that every item after the storm belongs to it.
    drain(&mut events);
    let base = ami.stats();
    let sim_base = front.stats();

    front.with_server(|sim, now| sim.emit_user_events(now, STORM as usize));
    // The consumer "sleeps": it reads nothing until the reader has taken in the whole storm.
    until("the whole storm read off the socket", || {
        ami.stats().events_in - base.events_in >= STORM
    })
    .await;

    let (mut received, mut dropped, mut gaps, mut last) = (0u64, 0u64, 0, None);
    while let Some(item) = events.try_recv() {
        match item {
            StreamItem::Event(m) => {
                let seq = storm_seq(&m).unwrap_or_else(|| panic!("not a storm event: {m:?}"));
                assert!(
                    last.is_none_or(|l| seq > l),
                    "out of order: {seq} after {last:?}"
                );
                last = Some(seq);
                received += 1;
            }
            StreamItem::Gap { dropped: d } => {
                dropped += d;
                gaps += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(gaps >= 1, "the consumer was behind: a gap must say so");
    assert!(dropped > 0);
    assert_eq!(
        received + dropped,
        STORM,
        "received {received} dropped {dropped}"
    );
    // The core queue holds CAP; at most one batch (1024) already sat in the hand-off.
    assert!(received <= CAP as u64 + 1024, "{received}");
    // Drop-oldest keeps the newest events.
    assert_eq!(last, Some(STORM - 1));
    let cs = ami.stats();
    assert_eq!(cs.events_dropped - base.events_dropped, dropped);

    // The reader never waited on the consumer: the server saw a fast reader, and the
    // session is the same one.
    let st = front.stats();
    assert_eq!(st.events_emitted - sim_base.events_emitted, STORM);
    assert_eq!(st.events_delivered - sim_base.events_delivered, STORM);
    assert_eq!(st.slow_reader_closes, 0, "{st:?}");
    assert_eq!((st.sessions_accepted, st.sessions_open), (1, 1), "{st:?}");
    assert_eq!(cs.connects, 1);
    assert_eq!(cs.disconnects_by_reason.total(), 0);
    assert_eq!(
        log.seen().len(),
        1,
        "status never left Ready: {:?}",
        log.seen()
    );
    let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
    assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    front.shutdown();
}

/// The action deadline runs on tokio's clock, so on a paused clock it fires exactly at the
/// configured timeout of virtual time.
///
/// Real sockets and a paused clock: when the runtime has nothing to run, tokio advances the
/// paused clock straight to the next timer, even while bytes are on their way through a
/// real socket. Left alone, the connect, banner or login timers would fire before the
/// simulator (a real thread) answers. So while connecting and logging in, a task keeps the
/// runtime busy by yielding, which parks the driver with a zero timeout and never advances
/// the clock; once Ready it stops, and the only thing left to wait for is the dropped
/// Ping's deadline, which the clock jumps to.
#[tokio::test(start_paused = true)]
async fn unanswered_action_times_out_exactly_at_its_deadline_on_paused_time() {
    let mut front = front();
    front.with_faults(|f| {
        f.drop_actions(ActionMatch::named("Ping"));
    });
    let (ami, _events) = ami_tokio::spawn(admin(), front.local_addr());
    let virtual_start = tokio::time::Instant::now();
    let real_start = Instant::now();
    let rx = ami.status();
    loop {
        match &rx.get() {
            Status::Ready { .. } => break,
            Status::Closed { reason } => panic!("closed: {reason}"),
            _ => {}
        }
        assert!(real_start.elapsed() < WAIT, "no Ready in {WAIT:?}");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        tokio::time::Instant::now(),
        virtual_start,
        "the paused clock did not move while logging in"
    );

    let timeout = Duration::from_secs(3);
    let sent = tokio::time::Instant::now();
    let outcome = ami
        .send_with(Action::new("Ping"), SendOptions::timeout(timeout))
        .await;
    let waited = sent.elapsed();
    assert!(
        matches!(
            outcome,
            Err(AmiError::Action(ActionError::TimedOut {
                phase: Phase::Response,
                partial: None
            }))
        ),
        "{outcome:?}"
    );
    assert_eq!(waited, timeout, "virtual time waited");
    assert!(real_start.elapsed() < Duration::from_secs(4));

    // The server did get the Ping, and swallowed it.
    while front.stats().actions_dropped == 0 {
        assert!(
            real_start.elapsed() < WAIT,
            "the Ping never reached the server"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // A timed-out action does not end the session.
    assert!(matches!(&ami.status().get(), Status::Ready { .. }));
    assert_eq!(
        ami.stats().outcome_count(ami_proto::OutcomeKind::TimedOut),
        1
    );
    ami.close();
    front.shutdown();
}
