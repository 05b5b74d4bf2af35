//! ami-async-std end to end over real loopback sockets against the simulator's TCP front:
//! login (plain, rejected), a host name target, event lists, async Originate, and the
//! driver's lifetime (run on one thread with the test, on a thread of its own, dropped).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_async_std::{AmiError, Status};
use ami_proto::{Action, ActionError, DisconnectReason, StreamItem};
use std::time::Duration;
use support::*;

#[test]
fn plain_login_and_ping_with_the_driver_on_the_test_thread() {
    let mut front = front();
    let (ami, _events, driver) = ami_async_std::spawn(admin(), front.local_addr());
    // One thread, no executor: the driver and the test body are zipped into one future.
    let body = async {
        ready(&ami).await;
        assert_eq!(
            ami.status().get(),
            Status::Ready {
                ami_version: "11.0.0".into()
            }
        );
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
        within("logoff", ami.logoff()).await;
    };
    // The driver returns by itself once the session has closed.
    block_on(within(
        "driver and body",
        futures_lite::future::zip(driver, body),
    ));
    assert_eq!(
        ami.status().get(),
        Status::Closed {
            reason: DisconnectReason::Logoff
        }
    );
    let st = front.stats();
    assert_eq!((st.sessions_accepted, st.logins), (1, 1));
    front.shutdown();
}

#[test]
fn a_host_name_target_is_resolved_and_connected() {
    let mut front = front();
    let port = front.local_addr().port();
    // "localhost" may resolve to ::1 first, where nobody listens: the next address is tried.
    let (ami, _events) = connect(admin(), ("localhost", port));
    block_on(async {
        let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
        within("logoff", ami.logoff()).await;
    });
    assert_eq!(front.stats().logins, 1);
    front.shutdown();
}

#[test]
fn wrong_password_closes_with_login_rejected_and_never_reconnects() {
    let mut front = front();
    let config = builder("admin", "wrong").build().unwrap();
    let (ami, mut events) = connect(config, front.local_addr());
    let log = StatusLog::record(&ami);
    block_on(async {
        // The simulator answers a failed login after 1 s, like Asterisk.
        let reason = within("login rejection", ami.wait_ready())
            .await
            .expect_err("a wrong password must not reach Ready");
        assert!(
            matches!(&reason, DisconnectReason::LoginRejected { message } if message.contains("Authentication failed")),
            "{reason:?}"
        );
        assert!(matches!(
            ami.status().get(),
            Status::Closed {
                reason: DisconnectReason::LoginRejected { .. }
            }
        ));
        // Closed is final: actions are refused and the stream ends.
        assert!(matches!(
            ami.send(Action::new("Ping")).await,
            Err(AmiError::Closed | AmiError::Send(_))
        ));
        assert!(within("end of stream", events.recv()).await.is_none());
        // Longer than the first reconnect backoff (at most 100 ms): still one session.
        async_io::Timer::after(Duration::from_millis(250)).await;
    });
    let st = front.stats();
    assert_eq!(st.sessions_accepted, 1, "{st:?}");
    assert_eq!((st.logins, st.login_failures), (0, 1));
    assert_eq!(ami.stats().connects, 1);
    let seen = log.seen();
    assert!(
        !seen
            .iter()
            .any(|s| matches!(s, Status::Ready { .. } | Status::Disconnected { .. })),
        "{seen:?}"
    );
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

#[test]
fn core_show_channels_gathers_items_and_complete_while_a_call_is_up() {
    let mut front = front();
    let (ami, _events) = connect(admin(), front.local_addr());
    block_on(async {
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
        let id = list.message().action_id().expect("response ActionID");
        assert_eq!(list.message().get_str("EventList"), Some("start"));
        for m in list.items() {
            assert_eq!(m.event(), Some("CoreShowChannel"), "{m:?}");
            assert_eq!(m.action_id(), Some(id), "{m:?}");
        }
        let done = list.complete().expect("Complete event");
        assert_eq!(done.event(), Some("CoreShowChannelsComplete"));
        assert_eq!(done.action_id(), Some(id));
        assert_eq!(done.get_str("ListItems"), Some("2"));
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

#[test]
fn async_originate_resolves_with_its_originate_response() {
    let mut front = front();
    let (ami, mut events) = connect(admin(), front.local_addr());
    let (ok, busy) = block_on(async {
        ready(&ami).await;
        within(
            "both OriginateResponses",
            futures_lite::future::zip(ami.send(originate("echo")), ami.send(originate("busy"))),
        )
        .await
    });

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
    assert_eq!(st.outcome_count(ami_proto::OutcomeKind::Success), 1);
    assert_eq!(st.outcome_count(ami_proto::OutcomeKind::ServerError), 1);
    front.shutdown();
}

#[test]
fn dropping_every_handle_closes_the_session_and_ends_the_driver() {
    let mut front = front();
    let (ami, events, driver) = ami_async_std::spawn(admin(), front.local_addr());
    let thread = std::thread::spawn(move || async_io::block_on(driver));
    block_on(ready(&ami));
    let second = ami.clone();
    drop(ami);
    drop(events);
    // One user left: the session is still up.
    block_on(async {
        let pong = within("Ping", second.send(Action::new("Ping")))
            .await
            .unwrap();
        assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    });
    drop(second);
    block_on(until("the driver thread ends", || thread.is_finished()));
    thread.join().unwrap();
    block_on(sim_until(&front, "the session is gone", |s| {
        s.sessions_open == 0
    }));
    assert_eq!(front.stats().sessions_accepted, 1);
    front.shutdown();
}

#[test]
fn dropping_the_driver_closes_the_session_for_every_caller() {
    // Nobody listens here, and the driver never runs: nothing is ever connected.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (ami, mut events, driver) = ami_async_std::spawn(admin(), addr);
    assert_eq!(ami.status().get(), Status::Connecting);
    drop(driver);
    assert_eq!(
        ami.status().get(),
        Status::Closed {
            reason: DisconnectReason::LocalClose
        }
    );
    block_on(async {
        assert_eq!(ami.send(Action::new("Ping")).await, Err(AmiError::Closed));
        assert!(within("end of stream", events.recv()).await.is_none());
        within("wait_closed", ami.wait_closed()).await;
        assert_eq!(
            within("wait_ready", ami.wait_ready()).await,
            Err(DisconnectReason::LocalClose)
        );
    });
}
