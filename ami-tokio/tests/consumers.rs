//! A consumer that panics or stalls cannot break dispatch for anyone else (law 8): the
//! driver keeps reading, actions keep completing, and lost events are counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_proto::{Action, OverflowPolicy};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_event_consumer_does_not_stop_actions_or_the_reader() {
    let front = front();
    let cfg = builder("admin", "amp111")
        .event_queue_cap(500)
        .overflow(OverflowPolicy::DropOldest)
        .build()
        .unwrap();
    let (ami, mut events) = ami_tokio::spawn(cfg, front.local_addr());
    ready(&ami).await;

    // The consumer reads one event, then panics; its Events handle is dropped mid-stream.
    let consumer = tokio::spawn(async move {
        let _first = events.recv().await;
        panic!("consumer bug");
    });
    front.with_server(|s, now| s.emit_user_events(now, 10));
    assert!(within("the consumer task", consumer)
        .await
        .unwrap_err()
        .is_panic());

    // Events keep arriving with nobody reading them: the bounded queue drops and counts.
    front.with_server(|s, now| s.emit_user_events(now, 5_000));
    until("events dropped and counted", || {
        ami.stats().events_dropped > 0
    })
    .await;

    // Other tasks' actions still complete, on the same connection.
    let mut callers = Vec::new();
    for _ in 0..20 {
        let ami = ami.clone();
        callers.push(tokio::spawn(
            async move { ami.send(Action::new("Ping")).await },
        ));
    }
    for c in callers {
        assert!(within("a Ping", c).await.unwrap().is_ok());
    }
    let s = ami.stats();
    assert!(
        s.event_queue_len <= 500,
        "queue stays within its cap: {}",
        s.event_queue_len
    );
    assert_eq!(
        front.stats().sessions_accepted,
        1,
        "the connection was kept"
    );
    ami.logoff().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_panics_while_waiting_does_not_break_other_callers() {
    let front = front();
    let (ami, _events) = ami_tokio::spawn(admin(), front.local_addr());
    ready(&ami).await;
    let doomed = {
        let ami = ami.clone();
        tokio::spawn(async move {
            let _pending = ami.send(Action::new("Ping"));
            panic!("caller bug while an action is being built");
        })
    };
    assert!(within("the doomed caller", doomed)
        .await
        .unwrap_err()
        .is_panic());
    for _ in 0..5 {
        let r = within("a Ping after the panic", ami.send(Action::new("Ping"))).await;
        assert!(r.is_ok(), "{r:?}");
    }
    ami.logoff().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_the_session() {
    let front = front();
    let (ami, events) = ami_tokio::spawn(admin(), front.local_addr());
    ready(&ami).await;
    sim_until(&front, "one open session", |s| s.sessions_open == 1).await;
    drop(events);
    drop(ami);
    sim_until(&front, "the session closed", |s| s.sessions_open == 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        front.stats().sessions_accepted,
        1,
        "no reconnect for nobody"
    );
}

#[test]
fn callers_waiting_on_a_driver_whose_runtime_shut_down_get_closed_not_a_hang() {
    let front = front();
    front.with_faults(|f| {
        f.drop_actions(ami_sim::ActionMatch::named("Ping"));
    });
    // The driver lives on its own runtime, which is then shut down under it.
    let driver_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (ami, _events) =
        driver_rt.block_on(async { ami_tokio::spawn(admin(), front.local_addr()) });
    let caller_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    caller_rt.block_on(ready(&ami));
    let waiting = caller_rt.spawn({
        let ami = ami.clone();
        async move { ami.send(Action::new("Ping")).await }
    });
    caller_rt.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(100)).await });
    driver_rt.shutdown_timeout(std::time::Duration::from_secs(1));
    let result = caller_rt
        .block_on(within("the orphaned caller", waiting))
        .unwrap();
    // The Ping was on the wire when the driver died: its fate is unknown, and the caller
    // learns exactly that (the core closed with the driver), instead of waiting forever.
    assert_eq!(
        result,
        Err(ami_tokio::AmiError::Action(
            ami_proto::ActionError::Unknown(ami_proto::DisconnectReason::LocalClose)
        ))
    );
    // A later call fails at once.
    let later = caller_rt.block_on(within("a call after", ami.send(Action::new("Ping"))));
    assert_eq!(later, Err(ami_tokio::AmiError::Closed));
    assert!(matches!(
        ami.status().get(),
        ami_tokio::Status::Closed { .. }
    ));
}
