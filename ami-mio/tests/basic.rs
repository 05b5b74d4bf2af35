//! Login, a list action, an async Originate and Logoff over real loopback sockets.

// Test helpers may unwrap and panic: that is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_mio::{ConnId, MioDriver, Notice};
use ami_proto::{Action, ActionId, DisconnectReason, Outcome};
use std::time::Duration;
use support::{config, drive, Behaviour, FakeAmi};

const LIMIT: Duration = Duration::from_secs(5);

fn ready(driver: &mut MioDriver) -> ConnId {
    let mut id = None;
    let ok = drive(driver, LIMIT, |_, r| {
        for (conn, n) in r.notices {
            if let Notice::Ready { ami_version } = n {
                assert_eq!(ami_version, "11.0.0");
                id = Some(conn);
            }
        }
        id.is_some()
    });
    assert!(ok, "no Ready within {LIMIT:?}");
    id.unwrap()
}

fn complete(driver: &mut MioDriver, want: &ActionId) -> Outcome {
    let mut got = None;
    let ok = drive(driver, LIMIT, |_, r| {
        for (_, n) in r.notices {
            if let Notice::Completed { id, outcome } = n {
                if &id == want {
                    got = Some(outcome);
                }
            }
        }
        got.is_some()
    });
    assert!(ok, "action {want} did not complete");
    got.unwrap()
}

#[test]
fn login_ping_list_originate_logoff() {
    let server = FakeAmi::start(Behaviour {
        channels: 3,
        ..Behaviour::default()
    });
    let mut driver = MioDriver::new().unwrap();
    let conn = driver.add(config(1), server.addr()).unwrap();
    assert_eq!(ready(&mut driver), conn);

    let ping = driver.send(conn, Action::new("Ping")).unwrap();
    let out = complete(&mut driver, &ping);
    assert!(out.is_success());
    assert_eq!(
        out.response().unwrap().message().get_str("Ping"),
        Some("Pong")
    );

    let list = driver.send(conn, Action::new("CoreShowChannels")).unwrap();
    let out = complete(&mut driver, &list);
    assert!(out.is_success(), "{out:?}");
    let r = out.response().unwrap();
    assert_eq!(r.items().len(), 3);
    assert!(r.complete().is_some());

    let originate = Action::new("Originate")
        .field("Channel", "PJSIP/100")
        .field("Exten", "200")
        .field("Context", "default")
        .field("Priority", "1")
        .field("Async", "true");
    let id = driver.send(conn, originate).unwrap();
    let out = complete(&mut driver, &id);
    assert!(out.is_success(), "{out:?}");
    let follow = out.response().unwrap().follow_up().unwrap();
    assert_eq!(follow.get_str("Reason"), Some("4"));

    let unknown = driver.send(conn, Action::new("NoSuchThing")).unwrap();
    assert!(matches!(
        complete(&mut driver, &unknown),
        Outcome::ServerError(_)
    ));

    assert!(driver.logoff(conn));
    let mut closed = None;
    assert!(drive(&mut driver, LIMIT, |_, r| {
        for (_, n) in r.notices {
            if let Notice::Closed { reason } = n {
                closed = Some(reason);
            }
        }
        closed.is_some()
    }));
    assert_eq!(closed, Some(DisconnectReason::Logoff));
    let stats = driver.stats(conn).unwrap();
    assert_eq!(stats.logins, 1);
    assert_eq!(stats.outcome_count("success"), 3);
    assert!(driver.remove(conn));
    assert!(driver.stats(conn).is_none());
    assert!(driver.send(conn, Action::new("Ping")).is_err());
}

#[test]
fn events_reach_the_caller() {
    let server = FakeAmi::start(Behaviour {
        flood: true,
        ..Behaviour::default()
    });
    let mut driver = MioDriver::new().unwrap();
    let conn = driver.add(config(2), server.addr()).unwrap();
    let mut events = 0;
    assert!(drive(&mut driver, LIMIT, |d, r| {
        for c in r.events {
            assert_eq!(c, conn);
            while let Some(item) = d.poll_event(c) {
                if let ami_proto::StreamItem::Event(m) = item {
                    assert_eq!(m.event(), Some("Newexten"));
                    events += 1;
                }
            }
        }
        events >= 1000
    }));
    driver.close(conn);
}

#[test]
fn a_host_name_is_resolved_off_the_loop() {
    let server = FakeAmi::start(Behaviour::default());
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add_host(config(3), format!("localhost:{}", server.addr().port()))
        .unwrap();
    // localhost may resolve to ::1 first where the fake listens on 127.0.0.1 only; accept
    // either a Ready or failed attempts, but never a hang of the loop.
    let _ = conn;
    let name = format!("127.0.0.1:{}", server.addr().port());
    let conn = driver.add_host(config(4), name).unwrap();
    assert_eq!(ready_of(&mut driver, conn), conn);
}

fn ready_of(driver: &mut MioDriver, want: ConnId) -> ConnId {
    let mut id = None;
    assert!(drive(driver, LIMIT, |_, r| {
        for (conn, n) in r.notices {
            if conn == want && matches!(n, Notice::Ready { .. }) {
                id = Some(conn);
            }
        }
        id.is_some()
    }));
    id.unwrap()
}

#[test]
fn large_actions_survive_partial_writes_to_a_slow_reader() {
    let server = FakeAmi::start(Behaviour {
        slow_read: Some(Duration::from_micros(200)),
        ..Behaviour::default()
    });
    let mut driver = MioDriver::new().unwrap();
    let conn = driver.add(config(5), server.addr()).unwrap();
    ready(&mut driver);
    let value = "x".repeat(1000);
    let ids: Vec<ActionId> = (0..60)
        .map(|k| {
            let mut a = Action::new("UserEvent").field("UserEvent", format!("big{k}"));
            for h in 0..120 {
                a = a.field(format!("H{h}"), value.as_str());
            }
            driver.send(conn, a).unwrap()
        })
        .collect();
    let mut done = 0;
    assert!(drive(&mut driver, Duration::from_secs(10), |_, r| {
        for (_, n) in r.notices {
            if let Notice::Completed { id, outcome } = n {
                assert!(ids.contains(&id));
                // The fake answers unknown actions with an error: it parsed the whole action.
                assert!(matches!(outcome, Outcome::ServerError(_)), "{outcome:?}");
                done += 1;
            }
        }
        done == ids.len()
    }));
    let stats = driver.stats(conn).unwrap();
    assert!(stats.bytes_out > 60 * 120 * 1000, "{}", stats.bytes_out);
}

#[test]
fn a_failed_lookup_is_a_failed_connect_and_is_retried() {
    let mut options = ami_mio::Options::default();
    options.resolve = std::sync::Arc::new(|host: &str| {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host}: no such name"),
        ))
    });
    let mut driver = MioDriver::with_options(options).unwrap();
    let conn = driver.add_host(config(6), "pbx.invalid:5038").unwrap();
    let mut failures = 0;
    assert!(drive(&mut driver, LIMIT, |_, r| {
        for (c, n) in r.notices {
            assert_eq!(c, conn);
            match n {
                Notice::Disconnected { reason, .. } => {
                    assert_eq!(reason, DisconnectReason::ConnectFailed);
                    failures += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        failures >= 3
    }));
    assert!(driver.stats(conn).unwrap().connects >= 3);
}
