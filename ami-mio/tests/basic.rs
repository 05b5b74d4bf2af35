//! One client over real loopback sockets against the simulator's TCP front: login, Ping, the
//! CoreShowChannels and QueueStatus lists, async Originate (answered, and busy with Reason 5),
//! an unknown action, events (a storm, and a call started elsewhere), Logoff; large actions;
//! name lookups. The partial-write test uses the hand-written slow reader (see
//! `support/slow_reader.rs` for why the simulator cannot play it).

// Test helpers may unwrap and panic: that is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_mio::{ConnId, MioDriver, Notice};
use ami_proto::{
    Action, ActionError, ActionId, ConnectFailure, DisconnectReason, Message, Outcome, Response,
    StreamItem,
};
use ami_sim::{CallRequest, SimConfig};
use std::time::{Duration, Instant};
use support::slow_reader::SlowReader;
use support::{complete, config, drive, front, front_with, storm_seq, LIMIT};

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

/// Waits until every action of `want` completed; their outcomes in the same order.
fn complete_all(driver: &mut MioDriver, want: &[ActionId]) -> Vec<Outcome> {
    let mut got: Vec<Option<Outcome>> = want.iter().map(|_| None).collect();
    let ok = drive(driver, LIMIT, |_, r| {
        for (_, n) in r.notices {
            if let Notice::Completed { id, outcome } = n {
                if let Some(k) = want.iter().position(|w| *w == id) {
                    got[k] = Some(outcome);
                }
            }
        }
        got.iter().all(Option::is_some)
    });
    assert!(
        ok,
        "not all of {want:?} completed within {LIMIT:?}: {got:?}"
    );
    got.into_iter().flatten().collect()
}

/// Sends `action` and waits for its outcome.
fn run(driver: &mut MioDriver, conn: ConnId, action: Action) -> Outcome {
    let id = driver.send(Instant::now(), conn, action).unwrap();
    complete(driver, &id)
}

fn originate(exten: &str, wait_secs: u32) -> Action {
    Action::new("Originate")
        .field("Channel", format!("Local/{exten}@ami-test"))
        .field("Application", "Wait")
        .field("Data", wait_secs.to_string())
        .field("Timeout", "5000")
        .field("Async", "true")
}

/// Every item carries the list's ActionID, and the Complete event counts them.
fn check_list(r: &Response, item: &str, complete: &str) {
    let id = r.message().action_id().expect("response ActionID");
    assert_eq!(r.message().get_str("EventList"), Some("start"));
    for m in r.items() {
        assert_eq!(m.action_id(), Some(id), "{m:?}");
    }
    let done = r.complete().expect("Complete event");
    assert_eq!(done.event(), Some(complete));
    assert_eq!(done.action_id(), Some(id));
    assert_eq!(
        done.get_str("ListItems"),
        Some(r.items().len().to_string().as_str())
    );
    assert!(r.items().iter().any(|m| m.event() == Some(item)), "{r:?}");
}

#[test]
fn login_ping_lists_originate_logoff() {
    let mut front = front();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(1), front.local_addr())
        .unwrap();
    assert_eq!(ready(&mut driver), conn);

    let out = run(&mut driver, conn, Action::new("Ping"));
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(
        out.as_ref().unwrap().message().get_str("Ping"),
        Some("Pong")
    );

    // A call that stays up (wait10), so that CoreShowChannels has something to list.
    let out = run(&mut driver, conn, originate("wait10", 10));
    assert!(out.is_ok(), "{out:?}");
    let follow = out.as_ref().unwrap().follow_up().unwrap();
    assert_eq!(follow.event(), Some("OriginateResponse"));
    assert_eq!(follow.get_str("Response"), Some("Success"));
    assert_eq!(follow.get_str("Reason"), Some("4"));

    let out = run(&mut driver, conn, Action::new("CoreShowChannels"));
    assert!(out.is_ok(), "{out:?}");
    let list = out.as_ref().unwrap();
    check_list(list, "CoreShowChannel", "CoreShowChannelsComplete");
    let names: Vec<&str> = list
        .items()
        .iter()
        .filter_map(|m| m.get_str("Channel"))
        .collect();
    assert_eq!(names.len(), 2, "the Local pair: {names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("Local/wait10@ami-test-")),
        "{names:?}"
    );

    let out = run(
        &mut driver,
        conn,
        Action::new("QueueStatus").field("Queue", "testq"),
    );
    assert!(out.is_ok(), "{out:?}");
    let list = out.as_ref().unwrap();
    check_list(list, "QueueParams", "QueueStatusComplete");
    let kinds: Vec<&str> = list.items().iter().filter_map(Message::event).collect();
    assert_eq!(kinds.first(), Some(&"QueueParams"), "{kinds:?}");
    assert!(kinds.len() > 1, "testq has members: {kinds:?}");
    assert!(kinds[1..].iter().all(|k| *k == "QueueMember"), "{kinds:?}");

    // Two async Originates in flight at once: one answered, one busy.
    let echo = driver
        .send(Instant::now(), conn, originate("echo", 1))
        .unwrap();
    let busy = driver
        .send(Instant::now(), conn, originate("busy", 1))
        .unwrap();
    let [ok, failed] = <[Outcome; 2]>::try_from(complete_all(&mut driver, &[echo, busy])).unwrap();
    assert!(ok.is_ok(), "{ok:?}");
    let follow = ok.as_ref().unwrap().follow_up().unwrap();
    assert_eq!(follow.get_str("Response"), Some("Success"));
    assert_eq!(follow.get_str("Reason"), Some("4"));
    let Err(ActionError::Server(r)) = &failed else {
        panic!("busy must fail with the server's answer: {failed:?}")
    };
    // The Originate itself was accepted; its OriginateResponse is the failure.
    assert_eq!(r.message().response(), Some("Success"));
    let follow = r.follow_up().expect("OriginateResponse");
    assert_eq!(follow.event(), Some("OriginateResponse"));
    assert_eq!(follow.get_str("Response"), Some("Failure"));
    assert_eq!(follow.get_str("Reason"), Some("5"));
    assert_eq!(follow.action_id(), r.message().action_id());

    let out = run(&mut driver, conn, Action::new("NoSuchThing"));
    let Err(ActionError::Server(r)) = &out else {
        panic!("an unknown action is an error: {out:?}")
    };
    let message = r.message().get_str("Message").unwrap_or_default();
    assert!(
        message.starts_with("Invalid/unknown command: NoSuchThing"),
        "{message}"
    );

    assert!(driver.logoff(Instant::now(), conn));
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
    assert_eq!(stats.outcome_count(ami_proto::OutcomeKind::Success), 5);
    assert_eq!(stats.outcome_count(ami_proto::OutcomeKind::ServerError), 2);
    let sim = front.stats();
    assert_eq!((sim.sessions_accepted, sim.logins), (1, 1), "{sim:?}");
    assert_eq!(sim.calls_started, 3, "{sim:?}");
    assert!(driver.remove(Instant::now(), conn));
    assert!(driver.stats(conn).is_none());
    assert!(driver
        .send(Instant::now(), conn, Action::new("Ping"))
        .is_err());
    front.shutdown();
}

#[test]
fn events_reach_the_caller_in_order() {
    const STORM: u64 = 5000;
    let mut front = front();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(2), front.local_addr())
        .unwrap();
    ready(&mut driver);
    // Whatever came with the login (FullyBooted, SuccessfulAuth) is not part of the storm.
    while driver.poll_event(conn).is_some() {}

    front.with_server(|sim, now| sim.emit_user_events(now, STORM as usize));
    let mut seqs = Vec::new();
    assert!(
        drive(&mut driver, LIMIT, |d, r| {
            for c in r.events {
                assert_eq!(c, conn);
                while let Some(item) = d.poll_event(c) {
                    match item {
                        StreamItem::Event(m) => seqs.extend(storm_seq(&m)),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            seqs.len() as u64 >= STORM
        }),
        "{} of {STORM} storm events arrived",
        seqs.len()
    );
    assert_eq!(seqs, (0..STORM).collect::<Vec<_>>());

    // A call started by "another connection": its events reach this session too.
    let call = front.with_server(|sim, now| {
        sim.originate_call(now, CallRequest::new("Local/echo@ami-test", 1))
    });
    assert!(call.is_some());
    let mut names: Vec<String> = Vec::new();
    assert!(
        drive(&mut driver, LIMIT, |d, r| {
            for c in r.events {
                while let Some(item) = d.poll_event(c) {
                    if let StreamItem::Event(m) = item {
                        names.extend(m.event().map(str::to_string));
                    }
                }
            }
            names.iter().any(|n| n == "OriginateResponse")
        }),
        "no OriginateResponse among {names:?}"
    );
    assert!(names.iter().any(|n| n == "Newchannel"), "{names:?}");
    let stats = driver.stats(conn).unwrap();
    assert_eq!(stats.events_dropped, 0);
    driver.close(Instant::now(), conn);
    front.shutdown();
}

#[test]
fn a_host_name_is_resolved_off_the_loop() {
    let mut front = front();
    let port = front.local_addr().port();
    let mut driver = MioDriver::new().unwrap();
    // localhost may resolve to ::1 first where the simulator listens on 127.0.0.1 only: this
    // one may reach Ready or fail its attempts, but it must never hang the loop.
    let _maybe = driver
        .add_host(Instant::now(), config(3), format!("localhost:{port}"))
        .unwrap();
    let conn = driver
        .add_host(Instant::now(), config(4), format!("127.0.0.1:{port}"))
        .unwrap();
    let mut ready = false;
    assert!(drive(&mut driver, LIMIT, |_, r| {
        ready |= r
            .notices
            .iter()
            .any(|(c, n)| *c == conn && matches!(n, Notice::Ready { .. }));
        ready
    }));
    front.shutdown();
}

/// A driver whose resolver answers every name with `addrs`, in that order.
fn resolving_to(addrs: Vec<std::net::SocketAddr>) -> MioDriver {
    let mut options = ami_mio::Options::default();
    options.resolve = std::sync::Arc::new(move |_: &str| Ok(addrs.clone()));
    MioDriver::with_options(options).unwrap()
}

#[test]
fn a_host_whose_first_address_refuses_connects_through_the_next_one() {
    let mut front = front();
    // A dual-stack name as a resolver may order it: an address where nothing listens (the
    // IPv6 loopback on the simulator's port, which listens on 127.0.0.1 only; or a closed
    // IPv4 port where the host has no IPv6), then the one that answers.
    let port = front.local_addr().port();
    let dead = match std::net::TcpListener::bind(("::1", port)) {
        Ok(_) => std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        Err(_) => support::refused_addr(),
    };
    let mut driver = resolving_to(vec![dead, support::refused_addr(), front.local_addr()]);
    connects_once_without_a_failure(&mut driver, port);
    front.shutdown();
}

/// Adds `pbx.test:port` and drives it to Ready: one connect, and no failed address reaches
/// the core (nothing but Ready is noticed).
fn connects_once_without_a_failure(driver: &mut MioDriver, port: u16) {
    let conn = driver
        .add_host(Instant::now(), config(5), format!("pbx.test:{port}"))
        .unwrap();
    let mut ready = false;
    assert!(drive(driver, LIMIT, |_, r| {
        for (c, n) in r.notices {
            assert_eq!(c, conn);
            match n {
                Notice::Ready { .. } => ready = true,
                other => panic!("a failed address reached the core: {other:?}"),
            }
        }
        ready
    }));
    assert_eq!(driver.stats(conn).unwrap().connects, 1, "one connect");
}

#[test]
fn a_host_whose_first_address_drops_connects_connects_through_the_next_one() {
    let mut front = front();
    let port = front.local_addr().port();
    // The first address never answers (its SYNs dropped, as on an IPv6 route to nowhere):
    // tried one after the other, it would hold the connect until the core's timeout (5 s)
    // at every attempt. The next starts beside it after the attempt delay.
    let mut driver = resolving_to(vec![support::silent_addr(), front.local_addr()]);
    connects_once_without_a_failure(&mut driver, port);
    front.shutdown();
}

#[test]
fn a_host_whose_addresses_all_refuse_fails_its_connect_once() {
    let mut driver = resolving_to(vec![support::refused_addr(), support::refused_addr()]);
    let conn = driver
        .add_host(Instant::now(), config(6), "pbx.test:5038")
        .unwrap();
    let mut failed = None;
    assert!(drive(&mut driver, LIMIT, |_, r| {
        for (_, n) in r.notices {
            if let Notice::Disconnected { reason, .. } = n {
                failed.get_or_insert(reason);
            }
        }
        failed.is_some()
    }));
    assert_eq!(
        failed,
        Some(DisconnectReason::ConnectFailed(ConnectFailure::Refused))
    );
    let s = driver.stats(conn).unwrap();
    let lost: u64 = ami_proto::DisconnectKind::ALL
        .iter()
        .map(|k| s.disconnect_count(*k))
        .sum();
    assert_eq!((s.connects, lost), (1, 1), "{s:?}");
}

/// A UserEvent action of about 120 KB: 120 headers of 1,000 bytes (Asterisk takes lines up
/// to 1,022 bytes and 128 lines per message).
fn big_user_event(k: usize) -> Action {
    let value = "x".repeat(1000);
    let mut a = Action::new("UserEvent").field("UserEvent", format!("big{k}"));
    for h in 0..120 {
        a = a.field(format!("H{h}"), value.as_str());
    }
    a
}

#[test]
fn large_actions_reach_the_simulator_intact() {
    const N: usize = 60;
    // Each action comes back as a 120 KB UserEvent: 7 MB the client reads while it writes
    // 7 MB. A generous write timeout keeps a loaded machine from closing the session as a
    // slow reader; that is not what this test is about.
    let mut front = front_with(SimConfig {
        write_timeout: Duration::from_secs(5),
        ..SimConfig::default()
    });
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(5), front.local_addr())
        .unwrap();
    ready(&mut driver);
    while driver.poll_event(conn).is_some() {}
    let ids: Vec<ActionId> = (0..N)
        .map(|k| {
            driver
                .send(Instant::now(), conn, big_user_event(k))
                .unwrap()
        })
        .collect();
    let (mut done, mut echoed) = (0, Vec::new());
    // Steps after which bytes were left to write (the socket would block). The simulator
    // reads fast, so there may be none: this test is about the bytes, the slow-reader test
    // below about partial writes.
    let mut blocked_steps = 0;
    assert!(drive(&mut driver, Duration::from_secs(10), |d, r| {
        if d.stats(conn).unwrap().transmit_pending > 0 {
            blocked_steps += 1;
        }
        for (_, n) in r.notices {
            if let Notice::Completed { id, outcome } = n {
                assert!(ids.contains(&id));
                let Ok(r) = &outcome else {
                    panic!("{outcome:?}")
                };
                assert_eq!(r.message().get_str("Message"), Some("Event Sent"));
                done += 1;
            }
        }
        for c in r.events {
            while let Some(item) = d.poll_event(c) {
                let StreamItem::Event(m) = item else {
                    panic!("unexpected {item:?}")
                };
                if m.event() != Some("UserEvent") {
                    continue;
                }
                // Every header arrived whole: the simulator copied them into the event.
                for h in 0..120 {
                    let v = m.get_str(&format!("H{h}")).unwrap_or_default();
                    assert_eq!(v.len(), 1000, "H{h} of {:?}", m.get_str("UserEvent"));
                }
                echoed.extend(m.get_str("UserEvent").map(str::to_string));
            }
        }
        done == N && echoed.len() == N
    }));
    let want: Vec<String> = (0..N).map(|k| format!("big{k}")).collect();
    assert_eq!(echoed, want);
    let stats = driver.stats(conn).unwrap();
    println!(
        "simulator: {} bytes of actions written; {blocked_steps} steps left bytes unwritten",
        stats.bytes_out
    );
    assert!(
        stats.bytes_out > (N * 120 * 1000) as u64,
        "{}",
        stats.bytes_out
    );
    let sim = front.stats();
    assert_eq!(sim.input_bytes_dropped, 0, "{sim:?}");
    assert_eq!(sim.slow_reader_closes, 0, "{sim:?}");
    front.shutdown();
}

#[test]
fn large_actions_survive_partial_writes_to_a_slow_reader() {
    const N: usize = 60;
    let server = SlowReader::start(Duration::from_micros(200));
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(6), server.addr())
        .unwrap();
    ready(&mut driver);
    let ids: Vec<ActionId> = (0..N)
        .map(|k| {
            driver
                .send(Instant::now(), conn, big_user_event(k))
                .unwrap()
        })
        .collect();
    let mut done = 0;
    // Steps after which bytes were left to write: the socket would block.
    let mut blocked_steps = 0;
    let end = Instant::now() + Duration::from_secs(10);
    while done < N && Instant::now() < end {
        let report = driver.step(Instant::now()).unwrap();
        for (_, n) in report.notices {
            if let Notice::Completed { id, outcome } = n {
                assert!(ids.contains(&id));
                // The fake answers unknown actions with an error: it parsed the whole action.
                assert!(
                    matches!(outcome, Err(ActionError::Server(_))),
                    "{outcome:?}"
                );
                done += 1;
            }
        }
        if driver.stats(conn).unwrap().transmit_pending > 0 {
            blocked_steps += 1;
        }
        driver.wait(Some(Duration::from_millis(5))).unwrap();
    }
    assert_eq!(done, N, "only {done} of {N} answered");
    let stats = driver.stats(conn).unwrap();
    println!(
        "slow reader: {} bytes of actions written; {blocked_steps} steps left bytes unwritten",
        stats.bytes_out
    );
    assert!(blocked_steps > 0, "no write ever blocked");
    assert!(
        stats.bytes_out > (N * 120 * 1000) as u64,
        "{}",
        stats.bytes_out
    );
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
    let conn = driver
        .add_host(Instant::now(), config(7), "pbx.invalid:5038")
        .unwrap();
    let mut failures = 0;
    assert!(drive(&mut driver, LIMIT, |_, r| {
        for (c, n) in r.notices {
            assert_eq!(c, conn);
            match n {
                Notice::Disconnected { reason, .. } => {
                    assert_eq!(
                        reason,
                        DisconnectReason::ConnectFailed(ConnectFailure::HostNotFound)
                    );
                    failures += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        failures >= 3
    }));
    assert!(driver.stats(conn).unwrap().connects >= 3);
}

/// A server that logs anyone in and then answers nothing: a Ping written to it stays
/// pending until cancelled. Runs until the test process ends.
fn login_only_server() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.write_all(b"Asterisk Call Manager/11.0.0\r\n");
        let mut lines = BufReader::new(stream.try_clone().unwrap());
        let (mut login, mut id, mut line) = (false, String::new(), String::new());
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            let l = line.trim_end();
            login |= l == "Action: Login";
            if let Some(v) = l.strip_prefix("ActionID: ") {
                id = v.to_string();
            }
            if l.is_empty() && login {
                let answer = format!("Response: Success\r\nActionID: {id}\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes());
                login = false;
            }
            line.clear();
        }
    });
    addr
}

#[test]
fn wait_does_not_block_on_an_outcome_that_a_cancel_left_for_the_next_step() {
    let mut driver = MioDriver::new().unwrap();
    driver
        .add(Instant::now(), config(31), login_only_server())
        .unwrap();
    let conn = ready(&mut driver);
    let id = driver
        .send(Instant::now(), conn, Action::new("Ping"))
        .unwrap();
    // Written, and then nothing to read or write: the server never answers.
    for _ in 0..3 {
        driver.step(Instant::now()).unwrap();
    }
    assert!(driver.cancel(Instant::now(), conn, &id));
    // The Cancelled outcome waits in the client. A wait that ignored it would block until
    // the heartbeat (20 s) or the caller's limit.
    let started = Instant::now();
    driver.wait(Some(Duration::from_secs(30))).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "wait blocked {:?} with an outcome to report",
        started.elapsed()
    );
    let report = driver.step(Instant::now()).unwrap();
    assert!(report.notices.iter().any(|(_, n)| matches!(
        n,
        Notice::Completed { id: done, outcome: Err(ActionError::Cancelled) } if *done == id
    )));
}

#[test]
fn a_connection_whose_events_are_never_read_keeps_none_and_counts_them() {
    let front = front();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(41), front.local_addr())
        .unwrap();
    assert_eq!(ready(&mut driver), conn);
    assert!(driver.close_event_stream(conn));
    front.with_server(|sim, now| sim.emit_user_events(now, 500));
    // The Ping's answer comes after the 500 events on the same socket: they are all read.
    assert!(run(&mut driver, conn, Action::new("Ping")).is_ok());
    let stats = driver.stats(conn).unwrap();
    assert_eq!((stats.event_queue_len, stats.event_queue_bytes), (0, 0));
    assert!(stats.events_dropped >= 500, "{}", stats.events_dropped);
    assert_eq!(stats.events_dropped, stats.events_in, "every event counted");
    assert!(driver.poll_event(conn).is_none());
}

#[test]
fn a_wake_from_another_thread_is_told_in_the_next_report_of_the_driver_and_of_the_fleet() {
    // A loop fed by a channel looks at it when the report says it was woken, not at every
    // step; the wake ends the wait long before its timeout.
    let mut driver = MioDriver::new().unwrap();
    let waker = driver.waker();
    let waking = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap();
    });
    let started = Instant::now();
    driver.wait(Some(Duration::from_secs(10))).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    waking.join().unwrap();
    assert!(driver.step(Instant::now()).unwrap().woken);
    assert!(!driver.step(Instant::now()).unwrap().woken, "told once");

    let mut fleet = ami_mio::MioFleet::new().unwrap();
    assert!(!fleet.step(Instant::now()).unwrap().woken);
    fleet.waker().wake().unwrap();
    fleet.wait(Some(Duration::from_secs(10))).unwrap();
    assert!(fleet.step(Instant::now()).unwrap().woken);
    assert!(!fleet.step(Instant::now()).unwrap().woken, "told once");
}

/// A server that logs each connection in and hangs up at once, for as many connections as
/// come. Runs until the test process ends.
fn login_then_hang_up_server() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        while let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.write_all(b"Asterisk Call Manager/11.0.0\r\n");
            let mut lines = BufReader::new(stream.try_clone().unwrap());
            let (mut id, mut line) = (String::new(), String::new());
            while lines.read_line(&mut line).unwrap_or(0) > 0 {
                let l = line.trim_end().to_string();
                line.clear();
                if let Some(v) = l.strip_prefix("ActionID: ") {
                    id = v.to_string();
                }
                if l.is_empty() {
                    let answer = format!("Response: Success\r\nActionID: {id}\r\n\r\n");
                    let _ = stream.write_all(answer.as_bytes());
                    break;
                }
            }
        }
    });
    addr
}

#[test]
fn the_documented_loop_sees_session_markers_that_come_without_events() {
    // Logged in, then hung up on before any event: the stream holds `Ready` and
    // `Disconnected` and nothing else. Draining only the connections `Report::events`
    // names (as the crate docs' loop does) must still see them.
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), config(43), login_then_hang_up_server())
        .unwrap();
    let mut items = Vec::new();
    let ok = drive(&mut driver, LIMIT, |driver, report| {
        for id in report.events {
            while let Some(item) = driver.poll_event(id) {
                items.push(item);
            }
        }
        items
            .iter()
            .any(|i| matches!(i, StreamItem::Disconnected { .. }))
    });
    assert!(ok, "no Disconnected drained within {LIMIT:?}: {items:?}");
    assert!(matches!(items[0], StreamItem::Ready { .. }), "{items:?}");
    assert!(items.iter().all(|i| !matches!(i, StreamItem::Event(_))));
    assert!(driver.close(Instant::now(), conn));
}
