//! Server restarts against the simulator's TCP front: the written action ends as Unknown,
//! the session reconnects through the refused attempts and is Ready again, and actions flow;
//! a server that is not there at first is reached when it comes up.

// Test helpers may unwrap and panic: that is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_mio::{ConnId, MioDriver, Notice};
use ami_proto::{Action, ActionError, ConnectFailure, DisconnectReason};
use ami_sim::hostile::{Hostile, HostileServer};
use ami_sim::tcp::TcpFront;
use ami_sim::{ActionMatch, SimConfig};
use std::io::ErrorKind;
use std::time::{Duration, Instant};
use support::{config, drive, front, refused_port, sim_until, wait_ready, LIMIT};

fn ping(driver: &mut MioDriver, conn: ConnId) {
    let ping = driver
        .send(Instant::now(), conn, Action::new("Ping"))
        .unwrap();
    let mut ok = false;
    assert!(drive(driver, LIMIT, |_, r| {
        for (_, n) in r.notices {
            if let Notice::Completed { id, outcome } = n {
                assert_eq!(id, ping);
                assert!(outcome.is_ok(), "{outcome:?}");
                ok = true;
            }
        }
        ok
    }));
}

#[test]
fn restart_fails_pending_as_unknown_then_ready_again() {
    let mut front = front();
    // An action the server takes and never answers: written, in flight at the restart.
    front.with_faults(|f| {
        f.drop_actions(ActionMatch::named("Getvar"));
    });
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(7), front.local_addr())
        .unwrap();
    wait_ready(&mut driver, conn);

    let hang = driver
        .send(
            Instant::now(),
            conn,
            Action::new("Getvar").field("Variable", "x"),
        )
        .unwrap();
    assert!(drive(&mut driver, LIMIT, |d, _| d
        .stats(conn)
        .is_some_and(|s| s.in_flight == 1 && s.actions_written == 1)));
    assert!(sim_until(&front, LIMIT, |s| s.actions_dropped == 1));

    // Down for a while: the reconnects in between are accepted and closed without a banner.
    let down_for = Duration::from_millis(200);
    let restarted = Instant::now();
    front.restart(down_for);

    let (mut unknown, mut shutdown, mut refused, mut ready_at) = (false, false, 0, None);
    assert!(
        drive(&mut driver, LIMIT, |_, r| {
            for (_, n) in r.notices {
                match n {
                    Notice::Completed { id, outcome } => {
                        assert_eq!(id, hang);
                        assert_eq!(
                            outcome,
                            Err(ActionError::Unknown(DisconnectReason::ServerShutdown))
                        );
                        unknown = true;
                    }
                    // Event: Shutdown, then EOF.
                    Notice::Disconnected {
                        reason: DisconnectReason::ServerShutdown,
                        retry_at,
                        ..
                    } => {
                        assert!(!shutdown, "two shutdowns");
                        assert!(retry_at.is_some());
                        shutdown = true;
                    }
                    // While down: EOF before any banner.
                    Notice::Disconnected {
                        reason, retry_at, ..
                    } => {
                        assert!(shutdown, "{reason:?} before the shutdown");
                        assert_eq!(reason, DisconnectReason::Eof);
                        assert!(retry_at.is_some());
                        refused += 1;
                    }
                    Notice::Ready { .. } => {
                        assert!(unknown && shutdown, "Ready before the loss was reported");
                        ready_at = Some(restarted.elapsed());
                    }
                    Notice::Closed { reason } => panic!("closed: {reason}"),
                    _ => {}
                }
            }
            ready_at.is_some()
        }),
        "unknown={unknown} shutdown={shutdown} refused={refused} ready={ready_at:?}"
    );
    let ready_at = ready_at.unwrap();
    assert!(ready_at >= down_for, "Ready {ready_at:?} after the restart");
    assert!(refused >= 1, "no attempt while the server was down");

    ping(&mut driver, conn);
    let stats = driver.stats(conn).unwrap();
    assert_eq!(stats.logins, 2);
    assert_eq!(stats.outcome_count(ami_proto::OutcomeKind::Unknown), 1);
    assert_eq!(
        stats.disconnect_count(ami_proto::DisconnectKind::ServerShutdown),
        1
    );
    let sim = front.stats();
    assert_eq!((sim.restarts, sim.logins), (1, 2), "{sim:?}");
    assert!(sim.sessions_refused >= 1, "{sim:?}");
    front.shutdown();
}

/// Starts the simulator on `addr`, a port that was just free; retries briefly if the kernel
/// has not released it yet.
fn start_on(addr: std::net::SocketAddr) -> TcpFront {
    let end = Instant::now() + LIMIT;
    loop {
        match TcpFront::start(SimConfig::default(), &addr.to_string()) {
            Ok(front) => return front,
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("start the simulator on {addr}: {e}"),
        }
    }
}

#[test]
fn a_server_that_is_down_at_first_is_reached_when_it_comes_up() {
    // Nothing listens yet: every connect is refused.
    let (refusing, addr) = refused_port();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver.add(Instant::now(), config(8), addr).unwrap();
    let mut failures = 0;
    drive(&mut driver, Duration::from_millis(200), |_, r| {
        for (c, n) in r.notices {
            assert_eq!(c, conn);
            if let Notice::Disconnected { reason, .. } = n {
                assert_eq!(
                    reason,
                    DisconnectReason::ConnectFailed(ConnectFailure::Refused)
                );
                failures += 1;
            }
        }
        false
    });
    assert!(failures >= 1, "no failed connect reported");
    drop(refusing);
    let mut front = start_on(addr);
    wait_ready(&mut driver, conn);
    ping(&mut driver, conn);
    assert_eq!(front.stats().logins, 1);
    front.shutdown();
}

#[test]
fn a_client_added_while_the_server_restarts_is_ready_once_it_is_back() {
    let mut front = front();
    front.restart(Duration::from_millis(300));
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(9), front.local_addr())
        .unwrap();
    let mut eofs = 0;
    let mut ready = false;
    assert!(drive(&mut driver, LIMIT, |_, r| {
        for (_, n) in r.notices {
            match n {
                Notice::Disconnected { reason, .. } => {
                    assert_eq!(reason, DisconnectReason::Eof);
                    eofs += 1;
                }
                Notice::Ready { .. } => ready = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        ready
    }));
    assert!(eofs >= 1, "the first attempts fall in the down time");
    ping(&mut driver, conn);
    let sim = front.stats();
    assert_eq!(sim.logins, 1, "{sim:?}");
    assert!(sim.sessions_refused >= 1, "{sim:?}");
    front.shutdown();
}

/// A server that answers and hangs up in one burst: the answer and the end of the stream are
/// both in the socket when the client next looks (one readiness for both). The client reads
/// the answer (a read shorter than its buffer) and must still read on to the end of the
/// stream: no new readiness will announce it.
#[test]
fn an_answer_and_a_hang_up_in_one_burst_are_both_seen() {
    let event = b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n";
    let server = HostileServer::start(Hostile::HangUp(event.to_vec()), 0).unwrap();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(11), server.local_addr())
        .unwrap();
    // Step until the login is written, then let the answer, the event and the close arrive.
    assert!(drive(&mut driver, LIMIT, |d, _| d
        .stats(conn)
        .is_some_and(|s| s.bytes_out > 0)));
    std::thread::sleep(Duration::from_millis(50));
    let (mut ready, mut booted, mut eof) = (false, false, false);
    assert!(
        drive(&mut driver, LIMIT, |d, r| {
            for (_, n) in r.notices {
                match n {
                    Notice::Ready { .. } => ready = true,
                    Notice::Disconnected { reason, .. } => {
                        assert_eq!(reason, DisconnectReason::Eof);
                        eof = true;
                    }
                    _ => {}
                }
            }
            while let Some(item) = d.poll_event(conn) {
                if let ami_proto::StreamItem::Event(m) = item {
                    booted |= m.event() == Some("FullyBooted");
                }
            }
            eof
        }),
        "the hang-up was never seen (ready {ready}, booted {booted})"
    );
    assert!(ready && booted, "ready {ready}, booted {booted}");
}
