//! A server restart: the written action ends as Unknown, the session reconnects and is Ready
//! again, and actions flow.

// Test helpers may unwrap and panic: that is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_mio::{MioDriver, Notice};
use ami_proto::{Action, DisconnectReason, Outcome};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{config, drive, Behaviour, FakeAmi};

const LIMIT: Duration = Duration::from_secs(5);

#[test]
fn restart_fails_pending_as_unknown_then_ready_again() {
    let mut server = FakeAmi::start(Behaviour {
        silent: vec!["Hang".into()],
        ..Behaviour::default()
    });
    let mut driver = MioDriver::new().unwrap();
    let conn = driver.add(config(7), server.addr()).unwrap();
    assert!(drive(&mut driver, LIMIT, |_, r| r
        .notices
        .iter()
        .any(|(_, n)| matches!(n, Notice::Ready { .. }))));

    let hang = driver.send(conn, Action::new("Hang")).unwrap();
    assert!(drive(&mut driver, LIMIT, |d, _| d
        .stats(conn)
        .is_some_and(|s| s.in_flight == 1 && s.actions_written == 1)));

    server.restart();

    let (mut unknown, mut disconnected, mut ready_again) = (false, false, false);
    assert!(
        drive(&mut driver, LIMIT, |_, r| {
            for (_, n) in r.notices {
                match n {
                    Notice::Completed { id, outcome } => {
                        assert_eq!(id, hang);
                        assert_eq!(outcome, Outcome::Unknown(DisconnectReason::Eof));
                        unknown = true;
                    }
                    Notice::Disconnected { reason, retry_at } => {
                        assert_eq!(reason, DisconnectReason::Eof);
                        assert!(retry_at.is_some());
                        disconnected = true;
                    }
                    Notice::Ready { .. } => {
                        assert!(
                            unknown && disconnected,
                            "Ready before the loss was reported"
                        );
                        ready_again = true;
                    }
                    Notice::Closed { reason } => panic!("closed: {reason}"),
                    _ => {}
                }
            }
            ready_again
        }),
        "unknown={unknown} disconnected={disconnected} ready_again={ready_again}"
    );
    assert_eq!(server.counters.logins.load(Ordering::SeqCst), 2);

    let ping = driver.send(conn, Action::new("Ping")).unwrap();
    let mut ok = false;
    assert!(drive(&mut driver, LIMIT, |_, r| {
        for (_, n) in r.notices {
            if let Notice::Completed { id, outcome } = n {
                ok = id == ping && outcome.is_success();
            }
        }
        ok
    }));
    let stats = driver.stats(conn).unwrap();
    assert_eq!(stats.logins, 2);
    assert_eq!(stats.outcome_count("unknown"), 1);
}

#[test]
fn a_server_that_is_down_at_first_is_reached_when_it_comes_up() {
    let mut server = FakeAmi::start(Behaviour::default());
    let addr = server.addr();
    server.stop();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver.add(config(8), addr).unwrap();
    let mut failures = 0;
    drive(&mut driver, Duration::from_millis(200), |_, r| {
        for (c, n) in r.notices {
            assert_eq!(c, conn);
            if let Notice::Disconnected { reason, .. } = n {
                assert_eq!(reason, DisconnectReason::ConnectFailed);
                failures += 1;
            }
        }
        false
    });
    assert!(failures >= 1, "no failed connect reported");
    server.restart();
    assert!(drive(&mut driver, LIMIT, |_, r| r
        .notices
        .iter()
        .any(|(_, n)| matches!(n, Notice::Ready { .. }))));
}
