//! What the fleet says in its log: each kind of a server's status at info once until the
//! server is ready again (the repeats of a retry churn at debug), and how many events a
//! closed merged stream freed.
//!
//! One test function: the logger is process-global.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/log_capture.rs"]
mod log_capture;

use ami_proto::fleet::{Fleet, FleetConfig, FleetOutput, ServerId};
use ami_proto::{ClientConfig, ConnectFailure, Input};
use std::time::{Duration, Instant};

/// Opens (or refuses) the connects that come out, answers a Login as Asterisk does.
fn step(fleet: &mut Fleet, now: Instant, open: bool) {
    fleet.handle_timeout(now);
    loop {
        match fleet.poll_output() {
            FleetOutput::Wait(_) => break,
            FleetOutput::Connect(id) if open => {
                fleet.handle_input(now, id, Input::Connected);
                fleet.handle_input(
                    now,
                    id,
                    Input::Received(b"Asterisk Call Manager/11.0.0\r\n"),
                );
            }
            FleetOutput::Connect(id) => {
                fleet.handle_input(now, id, Input::ConnectFailed(ConnectFailure::Refused));
            }
            _ => {}
        }
    }
    let ids: Vec<ServerId> = fleet.servers().map(|(id, _)| id).collect();
    for id in ids {
        let wire = String::from_utf8_lossy(fleet.transmit(id)).into_owned();
        fleet.advance_transmit(id, wire.len());
        if let Some(action_id) = wire
            .split("\r\n\r\n")
            .find(|b| b.starts_with("Action: Login"))
            .and_then(|b| b.lines().find_map(|l| l.strip_prefix("ActionID: ")))
        {
            let reply = format!(
                "Response: Success\r\nActionID: {action_id}\r\nMessage: Authentication accepted\r\n\r\n"
            );
            fleet.handle_input(now, id, Input::Received(reply.as_bytes()));
        }
    }
}

/// The fleet's own lines about server `a` (its client's lines are its own business).
fn fleet_lines() -> Vec<(log::Level, String)> {
    log_capture::take(|r| r.message.starts_with("AMI fleet"))
        .into_iter()
        .map(|r| (r.level, r.message))
        .collect()
}

fn count(lines: &[(log::Level, String)], level: log::Level, text: &str) -> usize {
    lines
        .iter()
        .filter(|(l, m)| *l == level && m.contains(text))
        .count()
}

#[test]
fn the_fleet_says_each_status_kind_once_at_info_until_ready_and_what_a_closed_stream_freed() {
    log_capture::install(log::LevelFilter::Debug);
    let mut now = Instant::now();
    let mut config = FleetConfig::default();
    config.seed = 3;
    let mut fleet = Fleet::new(config);
    let client = ClientConfig::builder("admin", "amp111")
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(20))
        .breaker_threshold(100)
        .build()
        .unwrap();
    let a = fleet.add(now, "a", client).unwrap();

    // Three refused connects: each kind said once at info, the repeats at debug.
    for _ in 0..3 {
        step(&mut fleet, now, false);
        now += Duration::from_millis(50);
    }
    let lines = fleet_lines();
    let repeats = "(repeats of this status are at debug)";
    assert_eq!(
        count(
            &lines,
            log::Level::Info,
            "AMI fleet: a is connecting (repeats"
        ),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        count(&lines, log::Level::Info, "AMI fleet: a is backing_off"),
        1
    );
    assert!(
        count(&lines, log::Level::Debug, "AMI fleet: a is connecting") >= 1,
        "{lines:#?}"
    );
    assert!(count(&lines, log::Level::Debug, "AMI fleet: a is backing_off") >= 2);
    assert!(lines
        .iter()
        .filter(|(l, _)| *l == log::Level::Debug)
        .all(|(_, m)| !m.contains(repeats)));

    // Ready is always said; after it the next outage is said at info again.
    step(&mut fleet, now, true);
    let lines = fleet_lines();
    assert_eq!(
        count(&lines, log::Level::Info, "AMI fleet: a is ready"),
        1,
        "{lines:#?}"
    );
    fleet.handle_input(now, a, Input::Eof);
    now += Duration::from_millis(50);
    step(&mut fleet, now, false);
    let lines = fleet_lines();
    assert_eq!(
        count(&lines, log::Level::Info, "AMI fleet: a is backing_off"),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        count(
            &lines,
            log::Level::Info,
            "AMI fleet: a is connecting (repeats"
        ),
        1,
        "{lines:#?}"
    );

    // Ready again, five events queued and two taken: the closed stream frees all seven.
    now += Duration::from_millis(50);
    step(&mut fleet, now, true);
    while fleet.poll_event().is_some() {}
    for seq in 0..7 {
        let e = format!("Event: Unread\r\nSeq: {seq}\r\n\r\n");
        fleet.handle_input(now, a, Input::Received(e.as_bytes()));
    }
    let taken: Vec<_> = (0..2).filter_map(|_| fleet.poll_queued()).collect();
    assert_eq!(taken.len(), 2);
    fleet_lines();
    fleet.close_event_stream(taken);
    let lines = fleet_lines();
    assert_eq!(
        count(
            &lines,
            log::Level::Info,
            "closed by the application: 7 events not read freed"
        ),
        1,
        "{lines:#?}"
    );
}
