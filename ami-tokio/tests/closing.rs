//! Ending a session at awkward moments: a Logoff while the client waits to reconnect, a
//! close while its Login goes unanswered, every user gone during a backoff. Each ends in
//! bounded time, fails every action once with a typed error (queued ones as not sent), ends
//! the event stream, and refuses later sends with a typed error. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

use ami_proto::{Action, ActionError, ClientConfig, DisconnectReason, Status, StreamItem};
use ami_tokio::{AmiError, Events};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A loopback port that refuses connections (bound, never listening).
fn refusing() -> (tokio::net::TcpSocket, SocketAddr) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = s.local_addr().unwrap();
    (s, addr)
}

/// A server that greets, reads the Login and never answers it.
fn never_answers_the_login() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.write_all(b"Asterisk Call Manager/11.0.0\r\n");
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

fn config() -> ClientConfig {
    ClientConfig::builder("admin", "x")
        .seed(3)
        .backoff_base(Duration::from_secs(30))
        .backoff_max(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The stream's items until it ends, which it must within 2 s.
async fn to_the_end(events: &mut Events) -> Vec<StreamItem> {
    let mut items = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .expect("the stream ends")
    {
        items.push(item);
    }
    items
}

#[tokio::test(flavor = "current_thread")]
async fn a_logoff_while_waiting_to_reconnect_ends_at_once_failing_queued_actions_not_sent() {
    let (_port, addr) = refusing();
    let (ami, mut events) = ami_tokio::spawn(config(), addr);
    let mut status = ami.status();
    tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| matches!(s, Status::Disconnected { .. })),
    )
    .await
    .expect("the connect is refused");
    let queued = {
        let ami = ami.clone();
        tokio::spawn(async move { ami.send(Action::new("Ping")).await })
    };
    tokio::task::yield_now().await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(2), ami.logoff())
        .await
        .expect("a logoff in the backoff does not wait for the backoff");
    assert!(started.elapsed() < Duration::from_secs(1));
    match queued.await.unwrap() {
        Err(AmiError::Action(ActionError::NotSent(_)) | AmiError::Send(_)) => {}
        other => panic!("a Ping that never left: {other:?}"),
    }
    assert_eq!(
        ami.status().get(),
        Status::Closed {
            reason: DisconnectReason::Logoff
        }
    );
    to_the_end(&mut events).await;
    assert!(matches!(
        ami.send(Action::new("Ping")).await,
        Err(AmiError::Closed { .. } | AmiError::Send(_))
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn a_close_while_the_login_goes_unanswered_fails_the_queued_action_once_and_closes_twice_quietly(
) {
    let addr = never_answers_the_login();
    let (ami, mut events) = ami_tokio::spawn(config(), addr);
    let queued = {
        let ami = ami.clone();
        tokio::spawn(async move { ami.send(Action::new("Ping")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ami.status().get(), Status::Connecting, "logging in");
    ami.close();
    ami.close();
    tokio::time::timeout(Duration::from_secs(2), ami.wait_closed())
        .await
        .expect("closed");
    match queued.await.unwrap() {
        Err(AmiError::Action(ActionError::NotSent(_)) | AmiError::Closed { .. }) => {}
        other => panic!("a Ping queued behind an unanswered Login: {other:?}"),
    }
    // A logoff after the close has nothing left to do.
    tokio::time::timeout(Duration::from_secs(1), ami.logoff())
        .await
        .expect("a logoff after close returns");
    to_the_end(&mut events).await;
    assert!(ami.send(Action::new("Ping")).await.is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn every_user_gone_while_waiting_to_reconnect_closes_the_session_at_once() {
    let (_port, addr) = refusing();
    let (ami, events) = ami_tokio::spawn(config(), addr);
    let mut status = ami.status();
    tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| matches!(s, Status::Disconnected { .. })),
    )
    .await
    .expect("the connect is refused");
    drop(ami);
    drop(events);
    let closed = tokio::time::timeout(
        Duration::from_secs(2),
        status.wait_for(|s| matches!(s, Status::Closed { .. })),
    )
    .await
    .expect("the driver ends without waiting for the backoff");
    assert!(matches!(closed, Status::Closed { .. }));
}
