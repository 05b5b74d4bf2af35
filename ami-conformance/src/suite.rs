//! The tests, generic over the [`Adapter`]. Each is one `#[test]` per adapter through
//! [`conformance_suite!`](crate::conformance_suite).

use crate::support::*;
use crate::{client_tls, localhost_cert, Adapter, TlsTerminator};
use ami_async::{AmiError, Status, Target, Tls};
use ami_proto::calls::{CallTracker, TrackerConfig};
use ami_proto::{
    Action, ActionError, AuthMethod, ConnectFailure, DisconnectReason, Message, OverflowPolicy,
    Response, StreamItem,
};
use ami_proto::{CertificateProblem, DisconnectKind, OutcomeKind};
use ami_sim::call_harness::TrackerScript;
use ami_sim::hostile::{Hostile, HostileServer};
use ami_sim::tcp::TcpFront;
use ami_sim::{ActionMatch, Fault, SessionId};
use futures_lite::StreamExt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

fn spawn<A: Adapter>(
    config: ami_proto::ClientConfig,
    target: impl Into<Target>,
) -> (ami_async::Handle, ami_async::Events) {
    A::spawn(config, target.into())
}

/// A port nobody listens on: every connect is refused.
fn unreachable_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Login (plain) reaches Ready, a Ping round-trips, Logoff closes.
pub fn plain_login_reaches_ready_and_ping_round_trips<A: Adapter>() {
    let mut front = front();
    A::block_on(async {
        let (ami, _events) = spawn::<A>(admin(), front.local_addr());
        ready_ping_logoff(&ami).await;
        assert_eq!(
            ami.status().get(),
            Status::Closed {
                reason: DisconnectReason::Logoff
            }
        );
    });
    let st = front.stats();
    assert_eq!((st.sessions_accepted, st.logins), (1, 1));
    front.shutdown();
}

/// A server that answers the login, sends an event and hangs up in one burst: the client
/// sees the event and then the end of the stream, although both arrived with one readiness
/// (a read shorter than the buffer must not be taken to mean that nothing more will come).
pub fn an_answer_and_a_hang_up_in_one_burst_are_both_seen<A: Adapter>() {
    let event = b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n";
    let mut server = HostileServer::start(Hostile::HangUp(event.to_vec()), 0).unwrap();
    A::block_on(async {
        let (ami, mut events) = spawn::<A>(admin(), server.local_addr());
        let (mut ready, mut booted) = (false, false);
        let reason = within("the hang-up", async {
            loop {
                match events.recv().await {
                    Some(StreamItem::Ready { .. }) => ready = true,
                    Some(StreamItem::Event(m)) => booted |= m.event() == Some("FullyBooted"),
                    Some(StreamItem::Disconnected { reason, .. }) => break reason,
                    Some(_) => {}
                    None => panic!("the stream ended before the hang-up"),
                }
            }
        })
        .await;
        assert_eq!(reason, DisconnectReason::Eof);
        assert!(ready && booted, "ready {ready}, booted {booted}");
        ami.close();
    });
    server.shutdown();
}

/// Login with MD5 challenge/response.
pub fn md5_login_reaches_ready<A: Adapter>() {
    let mut front = front();
    A::block_on(async {
        let config = builder("admin", "amp111")
            .auth(AuthMethod::Md5)
            .build()
            .unwrap();
        let (ami, _events) = spawn::<A>(config, front.local_addr());
        ready(&ami).await;
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
        ami.close();
        within("close", ami.wait_closed()).await;
    });
    let st = front.stats();
    assert_eq!(
        (st.sessions_accepted, st.logins, st.login_failures),
        (1, 1, 0)
    );
    front.shutdown();
}

/// A rejected login is final: Closed, actions refused, the stream ends, no reconnect.
pub fn wrong_password_closes_with_login_rejected_and_never_reconnects<A: Adapter>() {
    let mut front = front();
    A::block_on(async {
        let config = builder("admin", "wrong").build().unwrap();
        let (ami, mut events) = spawn::<A>(config, front.local_addr());
        let log = StatusLog::record(&ami);
        // The simulator answers a failed login after 1 s, like Asterisk.
        let reason = within("login rejection", ami.wait_ready())
            .await
            .expect_err("a wrong password must not reach Ready");
        assert!(
            matches!(&reason, DisconnectReason::LoginRejected { message } if message.contains("Authentication failed")),
            "{reason:?}"
        );
        assert!(matches!(
            &ami.status().get(),
            Status::Closed {
                reason: DisconnectReason::LoginRejected { .. }
            }
        ));
        // A send after the rejection says why the session is closed.
        let refused = ami.send(Action::new("Ping")).await;
        assert!(
            matches!(
                &refused,
                Err(AmiError::Closed {
                    reason: DisconnectReason::LoginRejected { .. }
                } | AmiError::Send(ami_proto::SendError::Closed {
                    reason: DisconnectReason::LoginRejected { .. }
                }))
            ),
            "{refused:?}"
        );
        let said = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(said.contains("Authentication failed"), "{said}");
        assert!(within("end of stream", events.recv()).await.is_none());
        // Longer than the first reconnect backoff (at most 100 ms): still one session.
        sleep(Duration::from_millis(250)).await;
        assert_eq!(ami.stats().connects, 1);
        let seen = log.seen();
        assert!(
            !seen
                .iter()
                .any(|s| matches!(s, Status::Ready { .. } | Status::Disconnected { .. })),
            "{seen:?}"
        );
    });
    let st = front.stats();
    assert_eq!(st.sessions_accepted, 1, "{st:?}");
    assert_eq!((st.logins, st.login_failures), (0, 1));
    front.shutdown();
}

/// A host name is resolved off the driver and every address is tried in turn.
pub fn a_host_name_target_is_resolved_and_connected<A: Adapter>() {
    let mut front = front();
    let port = front.local_addr().port();
    A::block_on(async {
        // "localhost" may resolve to ::1 first, where nobody listens: the next address is tried.
        let (ami, _events) = spawn::<A>(admin(), ("localhost", port));
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
        within("logoff", ami.logoff()).await;
    });
    assert_eq!(front.stats().logins, 1);
    front.shutdown();
}

fn originate(exten: &str) -> Action {
    Action::new("Originate")
        .field("Channel", format!("Local/{exten}@ami-test"))
        .field("Application", "Wait")
        .field("Data", "1")
        .field("Timeout", "5000")
        .field("Async", "true")
}

/// Every item carries the list's ActionID, and the Complete event counts them.
fn check_list(r: &Response, item: &str, complete: &str) {
    let id = r.message().action_id().expect("response ActionID");
    assert_eq!(r.message().response(), Some("Success"));
    assert_eq!(r.message().get_str("EventList"), Some("start"));
    for m in r.items() {
        assert_eq!(m.action_id(), Some(id), "{m:?}");
        assert!(m.event().is_some(), "{m:?}");
    }
    let done = r.complete().expect("Complete event");
    assert_eq!(done.event(), Some(complete));
    assert_eq!(done.action_id(), Some(id));
    assert_eq!(done.get_str("EventList"), Some("Complete"));
    assert_eq!(
        done.get_str("ListItems"),
        Some(r.items().len().to_string().as_str())
    );
    assert!(r.items().iter().any(|m| m.event() == Some(item)));
}

/// A list (CoreShowChannels) gathers its items and its Complete event.
pub fn core_show_channels_gathers_items_and_complete_while_a_call_is_up<A: Adapter>() {
    let mut front = front();
    A::block_on(async {
        let (ami, _events) = spawn::<A>(admin(), front.local_addr());
        ready(&ami).await;
        let call = Action::new("Originate")
            .field("Channel", "Local/wait10@ami-test")
            .field("Application", "Wait")
            .field("Data", "10")
            .field("Async", "true");
        let answered = within("OriginateResponse", ami.send(call)).await.unwrap();
        assert_eq!(
            answered.follow_up().and_then(|m| m.event()),
            Some("OriginateResponse")
        );
        let list = within(
            "CoreShowChannels",
            ami.send(Action::new("CoreShowChannels")),
        )
        .await
        .unwrap();
        check_list(&list, "CoreShowChannel", "CoreShowChannelsComplete");
        // The Local pair: both legs are up.
        let names: Vec<&str> = list
            .items()
            .iter()
            .filter_map(|m| m.get_str("Channel"))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("Local/wait10@ami-test-")),
            "{names:?}"
        );
    });
    assert_eq!(front.stats().calls_active, 1);
    front.shutdown();
}

/// A list whose first item is of another kind (QueueParams, then QueueMembers).
pub fn queue_status_gathers_params_members_and_complete<A: Adapter>() {
    let mut front = front();
    A::block_on(async {
        let (ami, _events) = spawn::<A>(admin(), front.local_addr());
        ready(&ami).await;
        let list = within(
            "QueueStatus",
            ami.send(Action::new("QueueStatus").field("Queue", "testq")),
        )
        .await
        .unwrap();
        check_list(&list, "QueueParams", "QueueStatusComplete");
        let events: Vec<&str> = list.items().iter().filter_map(Message::event).collect();
        assert_eq!(events[0], "QueueParams", "{events:?}");
        assert!(
            events[1..].iter().all(|e| *e == "QueueMember"),
            "{events:?}"
        );
        assert!(events.len() > 1, "testq has members: {events:?}");
    });
    front.shutdown();
}

/// An async Originate resolves with its OriginateResponse (success, or the server's failure).
pub fn async_originate_resolves_with_its_originate_response<A: Adapter>() {
    let mut front = front();
    A::block_on(async {
        let (ami, mut events) = spawn::<A>(admin(), front.local_addr());
        ready(&ami).await;
        let (ok, busy) = within(
            "both OriginateResponses",
            futures_lite::future::zip(ami.send(originate("echo")), ami.send(originate("busy"))),
        )
        .await;

        let ok = ok.expect("echo is answered");
        assert_eq!(ok.message().response(), Some("Success"));
        let follow = ok.follow_up().expect("OriginateResponse");
        assert_eq!(follow.event(), Some("OriginateResponse"));
        assert_eq!(follow.get_str("Response"), Some("Success"));
        assert_eq!(follow.get_str("Reason"), Some("4"));
        assert_eq!(follow.action_id(), ok.message().action_id());

        let Err(AmiError::Action(ActionError::Server(busy))) = busy else {
            panic!("busy must fail with the server's answer: {busy:?}")
        };
        // The Originate itself was accepted; its OriginateResponse is the failure.
        assert_eq!(busy.message().response(), Some("Success"));
        let follow = busy.follow_up().expect("OriginateResponse");
        assert_eq!(follow.get_str("Response"), Some("Failure"));
        assert_eq!(follow.get_str("Reason"), Some("5"));
        assert_eq!(follow.action_id(), busy.message().action_id());

        // Claimed by their actions, the OriginateResponses are not in the event stream.
        while let Some(item) = events.try_recv() {
            if let StreamItem::Event(m) = item {
                assert_ne!(m.event(), Some("OriginateResponse"), "{m:?}");
            }
        }
        let st = ami.stats();
        assert_eq!(st.outcome_count(OutcomeKind::Success), 1);
        assert_eq!(st.outcome_count(OutcomeKind::ServerError), 1);
    });
    front.shutdown();
}

/// An action sent before the login is done waits in the core and goes out after it.
pub fn actions_sent_before_ready_are_written_after_login<A: Adapter>() {
    let mut front = front();
    A::block_on(async {
        let (ami, _events) = spawn::<A>(admin(), front.local_addr());
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
        assert!(matches!(&ami.status().get(), Status::Ready { .. }));
    });
    assert_eq!(front.stats().logins, 1);
    front.shutdown();
}

/// A caller that stops waiting cancels its action; the session carries on.
pub fn dropping_a_send_future_cancels_the_action_and_the_session_carries_on<A: Adapter>() {
    let mut front = front();
    front.with_faults(|f| {
        f.drop_actions(ActionMatch::named("Getvar"));
    });
    A::block_on(async {
        let (ami, _events) = spawn::<A>(admin(), front.local_addr());
        ready(&ami).await;
        let gave_up = timeout(
            Duration::from_millis(100),
            ami.send(Action::new("Getvar").field("Variable", "x")),
        )
        .await;
        assert!(gave_up.is_none(), "the server never answers: {gave_up:?}");
        sim_until(&front, "Getvar swallowed", |s| s.actions_dropped == 1).await;
        assert_eq!(ami.stats().outcome_count(OutcomeKind::Cancelled), 1);
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    });
    front.shutdown();
}

/// Closing while every connect fails: queued actions fail as NotSent (safe to resend).
pub fn close_while_the_server_is_unreachable_fails_queued_actions_as_not_sent<A: Adapter>() {
    A::block_on(async {
        let (ami, mut events) = spawn::<A>(admin(), unreachable_addr());
        let queued = caller({
            let ami = ami.clone();
            async move { ami.send(Action::new("Ping")).await }
        });
        let down = status_until(&ami, "Disconnected", |s| {
            matches!(s, Status::Disconnected { .. })
        })
        .await;
        assert!(
            matches!(
                down,
                Status::Disconnected {
                    reason: DisconnectReason::ConnectFailed(ConnectFailure::Refused),
                    retry_at: Some(_),
                    ..
                }
            ),
            "{down:?}"
        );
        until("the action queued", || ami.stats().queued > 0).await;
        ami.close();
        within("Closed", ami.wait_closed()).await;
        assert_eq!(
            ami.status().get(),
            Status::Closed {
                reason: DisconnectReason::LocalClose
            }
        );
        assert_eq!(
            within("the queued action", queued).await.unwrap(),
            Err(AmiError::Action(ActionError::NotSent(
                DisconnectReason::LocalClose
            ))),
            "never written: safe to send again"
        );
        assert!(within("end of stream", events.recv()).await.is_none());
        assert_eq!(
            ami.send(Action::new("Ping")).await,
            Err(AmiError::Closed {
                reason: DisconnectReason::LocalClose
            }),
            "the driver is gone"
        );
    });
}

/// Logoff with no connection closes at once.
pub fn logoff_while_disconnected_closes_at_once<A: Adapter>() {
    let mut front = front();
    A::block_on(async {
        let (ami, _events) = spawn::<A>(admin(), front.local_addr());
        ready(&ami).await;
        front.restart(Duration::from_secs(3));
        status_until(&ami, "Disconnected", |s| {
            matches!(s, Status::Disconnected { .. })
        })
        .await;
        timeout(Duration::from_millis(500), ami.logoff())
            .await
            .expect("logoff returns promptly");
        assert_eq!(
            ami.status().get(),
            Status::Closed {
                reason: DisconnectReason::Logoff
            }
        );
    });
    front.shutdown();
}

/// A restart mid-stream: the written action fails as Unknown, everything sent before the
/// close is delivered in order, the client reconnects, and the stream carries on.
pub fn restart_mid_stream_fails_the_written_action_then_reconnects_and_events_resume<A: Adapter>() {
    let mut front = front();
    A::block_on(async {
        let (ami, mut events) = spawn::<A>(admin(), front.local_addr());
        ready(&ami).await;
        let log = StatusLog::record(&ami);
        front.with_faults(|f| {
            f.drop_actions(ActionMatch::named("Getvar"));
        });
        let in_flight = caller({
            let ami = ami.clone();
            async move { ami.send(Action::new("Getvar").field("Variable", "x")).await }
        });
        sim_until(&front, "Getvar swallowed", |s| s.actions_dropped == 1).await;

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
        let before = storm_events(&mut events, N).await;
        assert_eq!(before, (0..N as u64).collect::<Vec<_>>());

        until("Disconnected", || {
            log.seen()
                .iter()
                .any(|s| matches!(s, Status::Disconnected { .. }))
        })
        .await;
        status_until(&ami, "Ready again", |s| matches!(s, Status::Ready { .. })).await;
        let st = front.stats();
        assert_eq!((st.restarts, st.logins), (1, 2), "{st:?}");

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
                    retry_at: Some(_),
                    ..
                }
            ),
            "{seen:?}"
        );
        assert!(!seen.iter().any(|s| matches!(s, Status::Closed { .. })));
        let cs = ami.stats();
        assert_eq!(cs.disconnect_count(DisconnectKind::ServerShutdown), 1);
        assert_eq!(cs.outcome_count(OutcomeKind::Unknown), 1);
        assert_eq!(cs.logins, 2);
    });
    front.shutdown();
}

/// A half-open link (the server stops answering, the socket stays up) is found by the
/// heartbeat, and the new session is Ready.
pub fn half_open_link_is_detected_by_the_heartbeat_and_a_new_session_is_ready<A: Adapter>() {
    let mut front = front();
    let ping = Duration::from_millis(200);
    A::block_on(async {
        let config = builder("admin", "amp111")
            .ping_interval(ping)
            .pong_timeout(ping)
            .build()
            .unwrap();
        let (ami, _events) = spawn::<A>(config, front.local_addr());
        ready(&ami).await;
        sim_until(&front, "a heartbeat Ping", |s| s.actions >= 2).await;
        assert!(matches!(&ami.status().get(), Status::Ready { .. }));
        assert_eq!(front.stats().sessions_accepted, 1);
        let t0 = Instant::now();
        front.with_server(|sim, now| {
            sim.inject(
                now,
                Fault::HalfOpen {
                    session: Some(SessionId(1)),
                },
            )
        });
        let down = status_until(&ami, "Disconnected", |s| {
            matches!(s, Status::Disconnected { .. })
        })
        .await;
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
        // At most one idle interval until the Ping, then the pong deadline.
        assert!(t0.elapsed() >= ping, "{:?}", t0.elapsed());
        status_until(&ami, "Ready again", |s| matches!(s, Status::Ready { .. })).await;
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
        assert_eq!(
            ami.stats()
                .disconnect_count(DisconnectKind::HeartbeatTimeout),
            1
        );
    });
    let st = front.stats();
    assert_eq!((st.sessions_accepted, st.logins), (2, 2), "{st:?}");
    front.shutdown();
}

/// A consumer that reads nothing during a storm: the reader keeps draining the socket, the
/// bounded queue drops the oldest and says so with a gap, the connection is kept.
pub fn slow_consumer_gets_a_gap_and_the_connection_is_kept<A: Adapter>() {
    const CAP: usize = 1000;
    const STORM: u64 = 50_000;
    let mut front = front();
    A::block_on(async {
        let config = builder("admin", "amp111")
            .event_queue_cap(CAP)
            .overflow(OverflowPolicy::DropOldest)
            .build()
            .unwrap();
        let (ami, mut events) = spawn::<A>(config, front.local_addr());
        ready(&ami).await;
        let log = StatusLog::record(&ami);
        drain(&mut events);
        let base = ami.stats();
        let sim_base = front.stats();
        front.with_server(|sim, now| sim.emit_user_events(now, STORM as usize));
        // The consumer "sleeps" until the reader has taken in the whole storm.
        until("the whole storm read off the socket", || {
            ami.stats().events_in - base.events_in >= STORM
        })
        .await;
        let (mut received, mut dropped, mut gaps, mut last) = (0u64, 0u64, 0, None);
        while let Some(item) = events.try_recv() {
            match item {
                StreamItem::Event(m) => {
                    let seq = storm_seq(&m).unwrap_or_else(|| panic!("not a storm event: {m:?}"));
                    assert!(last.is_none_or(|l| seq > l), "{seq} after {last:?}");
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
        assert_eq!(
            received + dropped,
            STORM,
            "received {received} dropped {dropped}"
        );
        // The core queue holds CAP; at most one batch (1024) already sat in the hand-off.
        assert!(received <= CAP as u64 + 1024, "{received}");
        assert_eq!(last, Some(STORM - 1), "drop-oldest keeps the newest");
        let cs = ami.stats();
        assert_eq!(cs.events_dropped - base.events_dropped, dropped);
        let st = front.stats();
        assert_eq!(st.events_delivered - sim_base.events_delivered, STORM);
        assert_eq!(st.slow_reader_closes, 0, "{st:?}");
        assert_eq!((st.sessions_accepted, st.sessions_open), (1, 1), "{st:?}");
        assert_eq!(log.seen().len(), 1, "never left Ready: {:?}", log.seen());
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    });
    front.shutdown();
}

/// A consumer that panics: actions keep completing, the reader keeps reading and counts
/// what nobody reads.
pub fn a_panicking_event_consumer_does_not_stop_actions_or_the_reader<A: Adapter>() {
    let front = front();
    A::block_on(async {
        let cfg = builder("admin", "amp111")
            .event_queue_cap(500)
            .overflow(OverflowPolicy::DropOldest)
            .build()
            .unwrap();
        let (ami, mut events) = spawn::<A>(cfg, front.local_addr());
        ready(&ami).await;
        let consumer = caller(async move {
            let _first = events.recv().await;
            panic!("consumer bug");
        });
        front.with_server(|s, now| s.emit_user_events(now, 10));
        assert!(within("the consumer", consumer).await.is_err());
        front.with_server(|s, now| s.emit_user_events(now, 5_000));
        until("events dropped and counted", || {
            ami.stats().events_dropped > 0
        })
        .await;
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let ami = ami.clone();
                caller(async move { ami.send(Action::new("Ping")).await })
            })
            .collect();
        for c in callers {
            assert!(within("a Ping", c).await.unwrap().is_ok());
        }
        assert!(ami.stats().event_queue_len <= 500);
        within("logoff", ami.logoff()).await;
    });
    assert_eq!(
        front.stats().sessions_accepted,
        1,
        "the connection was kept"
    );
}

/// A caller that panics with an action in hand does not break other callers.
pub fn a_caller_that_panics_while_waiting_does_not_break_other_callers<A: Adapter>() {
    let front = front();
    A::block_on(async {
        let (ami, _events) = spawn::<A>(admin(), front.local_addr());
        ready(&ami).await;
        let doomed = caller({
            let ami = ami.clone();
            async move {
                let mut pending = std::pin::pin!(ami.send(Action::new("Ping")));
                // Registered and waiting, then the caller dies.
                let _ = futures_lite::future::poll_once(&mut pending).await;
                panic!("caller bug while waiting");
            }
        });
        assert!(within("the doomed caller", doomed).await.is_err());
        for _ in 0..5 {
            let r = within("a Ping after the panic", ami.send(Action::new("Ping"))).await;
            assert!(r.is_ok(), "{r:?}");
        }
        within("logoff", ami.logoff()).await;
    });
}

/// The session closes when the last Handle and the Events are gone, counted explicitly: a
/// StatusWatch still held does not keep it open.
pub fn dropping_every_handle_and_the_events_closes_the_session_a_status_watch_does_not_count<
    A: Adapter,
>() {
    let front = front();
    A::block_on(async {
        let (ami, events) = spawn::<A>(admin(), front.local_addr());
        ready(&ami).await;
        let mut watch = ami.status();
        let second = ami.clone();
        sim_until(&front, "one open session", |s| s.sessions_open == 1).await;
        drop(events);
        drop(ami);
        sleep(Duration::from_millis(100)).await;
        assert_eq!(front.stats().sessions_open, 1, "a clone still holds it");
        drop(second);
        let closed = within(
            "Closed",
            watch.wait_for(|s| matches!(s, Status::Closed { .. })),
        )
        .await;
        assert!(matches!(closed, Status::Closed { .. }), "{closed:?}");
        sim_until(&front, "the session closed", |s| s.sessions_open == 0).await;
        sleep(Duration::from_millis(300)).await;
    });
    assert_eq!(
        front.stats().sessions_accepted,
        1,
        "no reconnect for nobody"
    );
}

/// A driver that stops for good under its callers (its task aborted, its runtime shut
/// down): a caller waiting on a written action learns its fate is unknown, and every later
/// call, `add_filter` included, fails at once with `Closed` instead of waiting forever.
pub fn a_driver_that_died_fails_waiting_callers_and_every_later_call_at_once<A: Adapter>() {
    let front = front();
    front.with_faults(|f| {
        f.drop_actions(ActionMatch::named("Ping"));
    });
    A::block_on(async {
        let (ami, mut events, driver) =
            ami_async::session::<A::Runtime>(admin(), front.local_addr());
        let kill = Kill::default();
        A::run_driver(Box::pin(kill.wrap(driver)));
        ready(&ami).await;
        let waiting = caller({
            let ami = ami.clone();
            async move { ami.send(Action::new("Ping")).await }
        });
        // Read by the server (which drops it unanswered): written for sure. `in_flight`
        // counts it from the moment it is queued, so under load the kill could land while
        // its bytes still waited in the driver, and the Ping then failed NotSent, rightly.
        until("the Ping written", || front.stats().actions_dropped == 1).await;
        kill.now();
        assert_eq!(
            within("the orphaned caller", waiting).await.unwrap(),
            Err(AmiError::Action(ActionError::Unknown(
                DisconnectReason::LocalClose
            )))
        );
        assert!(matches!(ami.status().get(), Status::Closed { .. }));
        let started = Instant::now();
        assert_eq!(
            within("add_filter", ami.add_filter("Event: Hangup")).await,
            Err(AmiError::Closed {
                reason: DisconnectReason::LocalClose
            })
        );
        assert_eq!(
            within("send", ami.send(Action::new("Ping"))).await,
            Err(AmiError::Closed {
                reason: DisconnectReason::LocalClose
            })
        );
        assert!(started.elapsed() < WAIT);
        within("end of stream", async {
            while let Some(item) = events.recv().await {
                drop(item);
            }
        })
        .await;
        within("wait_closed", ami.wait_closed()).await;
        // The handle still lives: nothing it holds (such as a direct writer) keeps the
        // socket open once the driver is gone.
        until("the server sees the connection closed", || {
            front.stats().sessions_open == 0
        })
        .await;
        drop(ami);
    });
}

/// `Events` is a `futures_core::Stream`: `StreamExt` gets the same items as `recv`.
pub fn events_are_also_a_stream<A: Adapter>() {
    const N: usize = 3000;
    let mut front = front();
    A::block_on(async {
        let (ami, events) = spawn::<A>(admin(), front.local_addr());
        ready(&ami).await;
        front.with_server(|sim, now| sim.emit_user_events(now, N));
        let seqs: Vec<u64> = within(
            "the storm through StreamExt",
            events
                .filter_map(|item| match item {
                    StreamItem::Event(m) => storm_seq(&m),
                    _ => None,
                })
                .take(N)
                .collect(),
        )
        .await;
        assert_eq!(seqs, (0..N as u64).collect::<Vec<_>>());
        ami.close();
    });
    front.shutdown();
}

/// A simulator behind a TLS terminator presenting a certificate for `localhost`, and a
/// client that trusts exactly that certificate and expects the server to be `server_name`.
fn behind_tls(server_name: &str) -> (TcpFront, TlsTerminator, Tls) {
    let front = front();
    let (pem, server) = localhost_cert();
    let terminator = TlsTerminator::start(server, front.local_addr());
    (front, terminator, client_tls(&pem, server_name))
}

/// TLS: login and Ping through a TLS terminator, trusting exactly its certificate.
pub fn tls_login_and_ping_round_trip_with_a_generated_certificate<A: Adapter>() {
    let (mut front, terminator, tls) = behind_tls("localhost");
    A::block_on(async {
        let (ami, _events) = A::spawn_tls(admin(), terminator.addr.into(), tls).unwrap();
        ready(&ami).await;
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
        within("logoff", ami.logoff()).await;
        assert_eq!(
            ami.status().get(),
            Status::Closed {
                reason: DisconnectReason::Logoff
            }
        );
    });
    assert_eq!(terminator.handshakes(), 1);
    assert_eq!(front.stats().logins, 1);
    // The client ended the TLS stream with close_notify, not a cut connection.
    let until = Instant::now() + Duration::from_secs(5);
    while terminator.clean_ends() == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(terminator.clean_ends(), 1);
    front.shutdown();
}

/// TLS: a certificate for another name is refused, as a failed connect that says why.
pub fn tls_refuses_a_certificate_for_another_name<A: Adapter>() {
    let (mut front, terminator, tls) = behind_tls("ami.example.com");
    A::block_on(async {
        let (ami, _events) = A::spawn_tls(admin(), terminator.addr.into(), tls).unwrap();
        let wrong_name = ConnectFailure::TlsCertificate(CertificateProblem::WrongName);
        disconnected_for(&ami, DisconnectReason::ConnectFailed(wrong_name)).await;
    });
    assert_eq!(terminator.handshakes(), 0);
    let st = front.stats();
    assert_eq!((st.sessions_accepted, st.logins), (0, 0), "{st:?}");
    front.shutdown();
}

/// TLS: a server presenting a self-signed CA certificate as its own, trusted as the CA, is
/// refused with a reason that says so (not a bare handshake failure).
pub fn tls_names_a_ca_certificate_the_server_presents_as_its_own<A: Adapter>() {
    let mut front = front();
    let (pem, server) = crate::ca_as_server_cert();
    let terminator = TlsTerminator::start(server, front.local_addr());
    A::block_on(async {
        let tls = client_tls(&pem, "localhost");
        let (ami, _events) = A::spawn_tls(admin(), terminator.addr.into(), tls).unwrap();
        let ca = ConnectFailure::TlsCertificate(CertificateProblem::CaAsServer);
        disconnected_for(&ami, DisconnectReason::ConnectFailed(ca)).await;
    });
    assert_eq!(front.stats().logins, 0);
    front.shutdown();
}

/// TLS to a port that speaks plain AMI (its banner is no TLS record): a failed connect with
/// a TLS reason, never a session that connected and then broke. ami-mio's TLS tests assert
/// the same reasons, so status, backoff and messages agree on every runtime.
pub fn tls_to_a_plain_ami_port_fails_the_connect_with_a_tls_reason<A: Adapter>() {
    let mut front = front();
    let (pem, _) = localhost_cert();
    A::block_on(async {
        let tls = client_tls(&pem, "localhost");
        let (ami, _events) = A::spawn_tls(admin(), front.local_addr().into(), tls).unwrap();
        disconnected_for(&ami, DisconnectReason::ConnectFailed(ConnectFailure::Tls)).await;
    });
    assert_eq!(front.stats().logins, 0);
    front.shutdown();
}

/// TLS to a port that takes the connection and never answers the handshake: the client's
/// connect timer ends it as `TlsHandshakeTimeout` (not `ConnectTimeout`: the TCP connect
/// worked, so the operator looks at the TLS side); the banner timer never starts, since the
/// transport never opened.
pub fn a_tls_handshake_that_never_ends_times_out_as_a_tls_handshake<A: Adapter>() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (pem, _) = localhost_cert();
    A::block_on(async {
        let config = builder("admin", "amp111")
            .connect_timeout(Duration::from_millis(300))
            .banner_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let tls = client_tls(&pem, "localhost");
        let target = silent.local_addr().unwrap().into();
        let (ami, _events) = A::spawn_tls(config, target, tls).unwrap();
        disconnected_for(&ami, DisconnectReason::TlsHandshakeTimeout).await;
    });
}

/// The call tracker over the public API: the shared [`TrackerScript`] (a call followed to
/// its end, a server restart with a call up).
#[allow(clippy::disallowed_methods)] // test code: the tracker is fed the real clock
pub fn the_call_tracker_follows_calls_across_a_server_restart<A: Adapter>() {
    let front = front();
    A::block_on(async {
        let config = builder("admin", "amp111")
            .backoff_base(Duration::from_millis(10))
            .backoff_max(Duration::from_millis(100))
            .breaker_cooldown(Duration::from_millis(200))
            .build()
            .unwrap();
        let (ami, mut events) = spawn::<A>(config, front.local_addr());
        let mut tracker =
            CallTracker::new(TrackerConfig::builder().tag_prefix("conf").build().unwrap());
        let answers = Arc::new(Mutex::new(Vec::new()));
        let mut updates = Vec::new();
        let mut script = TrackerScript::new();
        let run = timeout(Duration::from_secs(15), async {
            loop {
                while let Some(req) = tracker.poll_request() {
                    let (ami, answers) = (ami.clone(), answers.clone());
                    drop(caller(async move {
                        let r = ami.send_with(req.action, req.options).await;
                        answers.lock().unwrap().push((req.token, r));
                    }));
                }
                if let Some(item) = timeout(Duration::from_millis(5), events.recv()).await {
                    let item = item.expect("the event stream ended");
                    tracker.handle_item(Instant::now(), &item);
                }
                for (token, r) in answers.lock().unwrap().drain(..) {
                    match r {
                        Ok(resp) => tracker.handle_reply(Instant::now(), token, Ok(resp)),
                        Err(AmiError::Action(e)) => {
                            tracker.handle_reply(Instant::now(), token, Err(e))
                        }
                        Err(_) => tracker.send_failed(Instant::now(), token),
                    }
                }
                updates.extend(std::iter::from_fn(|| tracker.poll_update()));
                if script.advance(&mut tracker, &updates, &front).unwrap() {
                    return;
                }
            }
        })
        .await;
        assert!(
            run.is_some(),
            "script stuck at {script:?}; status {:?}, sim {:?}",
            ami.status().get(),
            front.stats()
        );
        ami.close();
    });
}

/// Stops a driver from outside, as an aborted task or a runtime shut down would: the
/// driver future is dropped mid-session.
#[derive(Clone, Default)]
struct Kill(Arc<(AtomicBool, Mutex<Option<Waker>>)>);

impl Kill {
    fn wrap(&self, driver: ami_async::Driver) -> impl Future<Output = ()> + Send + 'static {
        let kill = self.clone();
        let mut driver = Some(driver);
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            *kill.0 .1.lock().unwrap() = Some(cx.waker().clone());
            if kill.0 .0.load(Ordering::SeqCst) {
                driver = None;
                return Poll::Ready(());
            }
            match driver.as_mut() {
                Some(d) => std::pin::Pin::new(d).poll(cx),
                None => Poll::Ready(()),
            }
        })
    }

    fn now(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        if let Some(w) = self.0 .1.lock().unwrap().take() {
            w.wake();
        }
    }
}
