//! ami-async-std against the simulator's faults over real loopback sockets: a server
//! restart mid-stream with an action in flight, a slow consumer, an abandoned action.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_async_std::{AmiError, Status};
use ami_proto::{Action, ActionError, DisconnectReason, OverflowPolicy, StreamItem};
use ami_sim::ActionMatch;
use std::time::Duration;
use support::*;

#[test]
fn restart_mid_stream_fails_the_written_action_then_reconnects_and_events_resume() {
    let mut front = front();
    let (ami, mut events) = connect(admin(), front.local_addr());
    block_on(ready(&ami));
    let log = StatusLog::record(&ami);

    // An action the server takes but never answers: written, in flight at the restart.
    front.with_faults(|f| {
        f.drop_actions(ActionMatch::named("Getvar"));
    });
    let in_flight = {
        let ami = ami.clone();
        std::thread::spawn(move || {
            block_on(within(
                "the in-flight action",
                ami.send(Action::new("Getvar").field("Variable", "x")),
            ))
        })
    };
    block_on(sim_until(&front, "Getvar swallowed", |s| {
        s.actions_dropped == 1
    }));

    // A storm, and the restart right behind it while the client is still reading it.
    const N: usize = 2000;
    front.with_server(|sim, now| {
        sim.emit_user_events(now, N);
        sim.restart(now, Duration::from_millis(300));
    });

    assert_eq!(
        in_flight.join().unwrap(),
        Err(AmiError::Action(ActionError::Unknown(
            DisconnectReason::ServerShutdown
        ))),
        "written before the restart: the server may have run it"
    );
    block_on(async {
        // Everything sent before the close is delivered, in order.
        let before = storm_events(&mut events, N).await;
        assert_eq!(before, (0..N as u64).collect::<Vec<_>>());
        until("Disconnected", || {
            log.seen()
                .iter()
                .any(|s| matches!(s, Status::Disconnected { .. }))
        })
        .await;
        status_until(&ami, "Ready again", |s| matches!(s, Status::Ready { .. })).await;
    });
    let st = front.stats();
    assert_eq!((st.restarts, st.logins), (1, 2), "{st:?}");
    assert!(
        st.sessions_refused >= 1,
        "tried while the server was down: {st:?}"
    );

    // The stream carries on from the new session.
    front.with_server(|sim, now| sim.emit_user_events(now, N));
    block_on(async {
        let after = storm_events(&mut events, N).await;
        assert_eq!(after, (0..N as u64).collect::<Vec<_>>());
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    });

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

#[test]
fn slow_consumer_gets_a_gap_and_the_connection_is_kept() {
    let mut front = front();
    const CAP: usize = 1000;
    const STORM: u64 = 50_000;
    let config = builder("admin", "amp111")
        .event_queue_cap(CAP)
        .overflow(OverflowPolicy::DropOldest)
        .build()
        .unwrap();
    let (ami, mut events) = connect(config, front.local_addr());
    block_on(ready(&ami));
    let log = StatusLog::record(&ami);
    // Start from an empty queue so that every item after the storm belongs to it.
    drain(&mut events);
    let base = ami.stats();
    let sim_base = front.stats();

    front.with_server(|sim, now| sim.emit_user_events(now, STORM as usize));
    // The consumer "sleeps": it reads nothing until the reader has taken in the whole storm.
    block_on(until("the whole storm read off the socket", || {
        ami.stats().events_in - base.events_in >= STORM
    }));

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
    block_on(async {
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    });
    front.shutdown();
}

#[test]
fn dropping_a_send_future_cancels_the_action_and_the_session_carries_on() {
    let mut front = front();
    front.with_faults(|f| {
        f.drop_actions(ActionMatch::named("Getvar"));
    });
    let (ami, _events) = connect(admin(), front.local_addr());
    block_on(async {
        ready(&ami).await;
        let gave_up = futures_lite::future::or(
            async { Some(ami.send(Action::new("Getvar").field("Variable", "x")).await) },
            async {
                async_io::Timer::after(Duration::from_millis(100)).await;
                None
            },
        )
        .await;
        assert!(gave_up.is_none(), "the server never answers: {gave_up:?}");
        sim_until(&front, "Getvar swallowed", |s| s.actions_dropped == 1).await;
        assert_eq!(
            ami.stats().outcome_count(ami_proto::OutcomeKind::Cancelled),
            1
        );
        // The abandoned action does not stall the ones behind it.
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    });
    front.shutdown();
}

#[test]
fn a_storm_with_driver_and_consumer_on_one_thread_arrives_whole_and_in_order() {
    let mut front = front();
    let (ami, mut events, driver) = ami_async_std::spawn(admin(), front.local_addr());
    const N: usize = 20_000;
    let body = async {
        ready(&ami).await;
        front.with_server(|sim, now| sim.emit_user_events(now, N));
        // The driver yields to the consumer while the socket stays readable.
        let seqs = storm_events(&mut events, N).await;
        assert_eq!(seqs, (0..N as u64).collect::<Vec<_>>());
        within("logoff", ami.logoff()).await;
    };
    block_on(within(
        "driver and body",
        futures_lite::future::zip(driver, body),
    ));
    assert_eq!(ami.stats().events_dropped, 0);
    front.shutdown();
}
