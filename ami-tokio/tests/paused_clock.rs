//! ami-tokio only: the core's timers run on tokio's clock, so on a paused clock an action
//! deadline fires exactly at its configured virtual time. (Everything both async adapters
//! share is in the `ami-conformance` suite, `tests/conformance.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_conformance::{admin, front, WAIT};
use ami_proto::{Action, ActionError, Phase, SendOptions};
use ami_sim::ActionMatch;
use ami_tokio::{AmiError, Status};
use std::time::{Duration, Instant};

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
