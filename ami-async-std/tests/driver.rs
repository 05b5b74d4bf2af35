//! ami-async-std only: its `Driver` is a plain future the caller runs, so these tests run
//! it on the test thread zipped with the test body, on a thread of its own, and drop it.
//! (Everything both async adapters share is in the `ami-conformance` suite,
//! `tests/conformance.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_async_std::{AmiError, Status};
use ami_conformance::{
    admin, front, ready, ready_ping_logoff, sim_until, storm_events, until, within,
};
use ami_proto::{Action, DisconnectReason};
use async_io::block_on;

#[test]
fn plain_login_and_ping_with_the_driver_on_the_test_thread() {
    let mut front = front();
    let (ami, _events, driver) = ami_async_std::spawn(admin(), front.local_addr());
    // One thread, no executor: the driver and the test body are zipped into one future.
    let body = ready_ping_logoff(&ami);
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
        assert_eq!(
            ami.send(Action::new("Ping")).await,
            Err(AmiError::Closed {
                reason: DisconnectReason::LocalClose
            })
        );
        assert!(within("end of stream", events.recv()).await.is_none());
        within("wait_closed", ami.wait_closed()).await;
        assert_eq!(
            within("wait_ready", ami.wait_ready()).await,
            Err(DisconnectReason::LocalClose)
        );
    });
}
