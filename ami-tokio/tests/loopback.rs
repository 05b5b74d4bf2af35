//! ami-tokio end to end over real loopback sockets against the simulator's TCP front:
//! login (plain, MD5, rejected), event lists, async Originate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_proto::{Action, ActionError, AuthMethod, DisconnectReason, Message};
use ami_tokio::{AmiError, Status};
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_login_reaches_ready_and_ping_round_trips() {
    let mut front = front();
    let (ami, _events) = ami_tokio::spawn(admin(), front.local_addr());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_login_reaches_ready() {
    let mut front = front();
    let config = builder("admin", "amp111")
        .auth(AuthMethod::Md5)
        .build()
        .unwrap();
    let (ami, _events) = ami_tokio::spawn(config, front.local_addr());
    ready(&ami).await;
    let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
    assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    let st = front.stats();
    assert_eq!(
        (st.sessions_accepted, st.logins, st.login_failures),
        (1, 1, 0)
    );
    ami.close();
    within("close", ami.wait_closed()).await;
    front.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_closes_with_login_rejected_and_never_reconnects() {
    let mut front = front();
    let config = builder("admin", "wrong").build().unwrap();
    let (ami, mut events) = ami_tokio::spawn(config, front.local_addr());
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
    // Closed is final: actions are refused and the stream ends.
    assert!(matches!(
        ami.send(Action::new("Ping")).await,
        Err(AmiError::Closed | AmiError::Send(_))
    ));
    assert!(within("end of stream", events.recv()).await.is_none());
    // Longer than the first reconnect backoff (at most 100 ms): still one session.
    tokio::time::sleep(Duration::from_millis(250)).await;
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

/// Every item carries the list's ActionID, and the Complete event counts them.
fn check_list(r: &ami_proto::Response, item: &str, complete: &str) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_show_channels_gathers_items_and_complete_while_a_call_is_up() {
    let mut front = front();
    let (ami, _events) = ami_tokio::spawn(admin(), front.local_addr());
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
    assert_eq!(front.stats().calls_active, 1);
    front.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_status_gathers_params_members_and_complete() {
    let mut front = front();
    let (ami, _events) = ami_tokio::spawn(admin(), front.local_addr());
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
    assert!(list
        .items()
        .iter()
        .all(|m| m.get_str("Queue") == Some("testq")));
    front.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_originate_resolves_with_its_originate_response() {
    let mut front = front();
    let (ami, mut events) = ami_tokio::spawn(admin(), front.local_addr());
    ready(&ami).await;
    let (ok, busy) = within("both OriginateResponses", async {
        tokio::join!(ami.send(originate("echo")), ami.send(originate("busy")))
    })
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
    assert_eq!(follow.event(), Some("OriginateResponse"));
    assert_eq!(follow.get_str("Response"), Some("Failure"));
    assert_eq!(follow.get_str("Reason"), Some("5"));
    assert_eq!(follow.action_id(), busy.message().action_id());

    // Claimed by their actions, the OriginateResponses are not in the event stream.
    while let Some(item) = events.try_recv() {
        if let ami_proto::StreamItem::Event(m) = item {
            assert_ne!(m.event(), Some("OriginateResponse"), "{m:?}");
        }
    }
    let st = ami.stats();
    assert_eq!(st.outcome_count(ami_proto::OutcomeKind::Success), 1);
    assert_eq!(st.outcome_count(ami_proto::OutcomeKind::ServerError), 1);
    front.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_sent_before_ready_are_written_after_login() {
    let mut front = front();
    let (ami, _events) = ami_tokio::spawn(admin(), front.local_addr());
    // No wait_ready: the action is queued in the core until the login is done.
    let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
    assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    assert!(matches!(&ami.status().get(), Status::Ready { .. }));
    assert_eq!(front.stats().logins, 1);
    front.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_send_future_cancels_the_action_and_the_session_carries_on() {
    let mut front = front();
    front.with_faults(|f| {
        f.drop_actions(ami_sim::ActionMatch::named("Getvar"));
    });
    let (ami, _events) = ami_tokio::spawn(admin(), front.local_addr());
    ready(&ami).await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        ami.send(Action::new("Getvar").field("Variable", "x")),
    )
    .await;
    assert!(gave_up.is_err(), "the server never answers: {gave_up:?}");
    sim_until(&front, "Getvar swallowed", |s| s.actions_dropped == 1).await;
    assert_eq!(
        ami.stats().outcome_count(ami_proto::OutcomeKind::Cancelled),
        1
    );
    // The abandoned action does not stall the ones behind it.
    let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
    assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    front.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_while_the_server_is_unreachable_fails_queued_actions_as_not_sent() {
    // A port nobody listens on: every connect is refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (ami, mut events) = ami_tokio::spawn(admin(), addr);
    let queued = {
        let ami = ami.clone();
        tokio::spawn(async move { ami.send(Action::new("Ping")).await })
    };
    let down = status_until(&ami, "Disconnected", |s| {
        matches!(s, Status::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            down,
            Status::Disconnected {
                reason: DisconnectReason::ConnectFailed(ami_proto::ConnectFailure::Refused),
                retry_at: Some(_)
            }
        ),
        "{down:?}"
    );
    // The spawned send must have queued its action before the close, or it is refused.
    within("the action queued", async {
        while ami.stats().queued == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
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
        Err(AmiError::Closed),
        "the driver is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logoff_while_disconnected_closes_at_once() {
    let mut front = front();
    let (ami, _events) = ami_tokio::spawn(admin(), front.local_addr());
    ready(&ami).await;
    front.restart(Duration::from_secs(3));
    status_until(&ami, "Disconnected", |s| {
        matches!(s, Status::Disconnected { .. })
    })
    .await;
    // Nothing to send a Logoff on: the client stops without waiting for the server.
    tokio::time::timeout(Duration::from_millis(500), ami.logoff())
        .await
        .expect("logoff returns promptly");
    assert_eq!(
        ami.status().get(),
        Status::Closed {
            reason: DisconnectReason::Logoff
        }
    );
    front.shutdown();
}
