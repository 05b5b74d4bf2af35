//! Every log record a client emits says which server it is about: `AMI <name>: ...` for a
//! client with a name (set by the application, or by a fleet from the server's name), `AMI:
//! ...` for one without. A process running a hundred clients writes all their records to
//! one stderr; without the name a warning cannot be traced to its PBX.
//!
//! One test function: the logger is process-global and tests run in parallel, so every
//! scenario runs in turn in the one test that owns the captured records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/log_capture.rs"]
mod log_capture;
#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::fleet::{Fleet, FleetConfig, FleetOutput};
use ami_proto::{Action, ClientConfig, ClientConfigBuilder, ConnectFailure, Input, SendOptions};
use scripted::{error, event, id_of, msg, Harness, Out, BANNER};
use std::time::{Duration, Instant};

/// The client's records captured since the last call (the fleet's and the decoder's own
/// are left out: they are not the client's to name).
fn take_client_records() -> Vec<String> {
    log_capture::take(|_| true)
        .into_iter()
        .filter(|r| r.target.starts_with("ami_proto::client"))
        .map(|r| r.message)
        .collect()
}

fn base() -> ClientConfigBuilder {
    ClientConfig::builder("admin", "amp111")
        .seed(7)
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(40))
        .event_queue_cap(2)
}

/// Runs a client through login, an action answered with Error, an action timeout, an
/// event-queue overflow, a discarded message, a server EOF and a reconnect.
fn eventful_session(config: ClientConfig) {
    let t0 = Instant::now();
    let mut h = Harness::new(config, t0);
    h.ready();

    let refused = h.send(Action::new("Status"));
    let m = h.take("Status");
    h.feed(&error(id_of(&m), "Permission denied"));
    assert!(h.outcome(&refused).is_err());

    let late = h.send_with(
        Action::new("CoreShowChannels"),
        SendOptions::timeout(Duration::from_secs(1)),
    );
    h.advance(Duration::from_secs(2));
    assert!(h.outcome(&late).is_err(), "the action timed out");

    // A queue of 2 (the Ready notice takes no room) and 4 events: drops, logged.
    for seq in 0..4 {
        h.feed(&event("Newchannel", seq));
    }
    h.events();
    h.feed(&event("Newchannel", 5));

    h.feed(&msg(&[("Junk", "x")]));
    assert!(h.client.stats().discarded >= 1, "the junk was discarded");

    h.eof();
    let retry = h.wait().expect("a reconnect is scheduled");
    let out = h.advance_to(retry);
    assert!(out.contains(&Out::Connect), "reconnect asked for: {out:?}");
    h.ready();
}

/// Each record in `records` that mentions one of `expected` proves that kind of record was
/// written, so the name check below covers every site the scenario reaches.
fn assert_reached(records: &[String], expected: &[&str]) {
    for what in expected {
        assert!(
            records.iter().any(|r| r.contains(what)),
            "no record about {what:?} in {records:#?}"
        );
    }
}

#[test]
fn every_client_log_record_names_its_server_or_says_plain_ami_when_unnamed() {
    log_capture::install(log::LevelFilter::Trace);
    let reached = [
        "transport open",
        "banner: version",
        "session ready",
        "action Status queued",
        "finished",
        "timed out",
        "event queue full",
        "event queue has room again",
        "server input discarded",
        "session lost: ",
    ];

    // (a) A named client: every record starts with `AMI pbx-east: `.
    take_client_records();
    eventful_session(base().name("pbx-east").build().unwrap());
    let records = take_client_records();
    assert_reached(&records, &reached);
    for r in &records {
        assert!(r.starts_with("AMI pbx-east: "), "unnamed record: {r:?}");
    }

    // (b) An unnamed client: every record starts with `AMI: `, no name and no other text
    // in front of the colon.
    eventful_session(base().build().unwrap());
    let records = take_client_records();
    assert_reached(&records, &reached);
    for r in &records {
        assert!(r.starts_with("AMI: "), "record of an unnamed client: {r:?}");
    }

    // (c) A fleet names the client of a server added from a config without a name after
    // the server; a name the application set stays.
    let t0 = Instant::now();
    let mut config = FleetConfig::default();
    config.seed = 42;
    let mut fleet = Fleet::new(config);
    let west = fleet
        .add(t0, "west", base().build().unwrap())
        .expect("west added");
    fleet
        .add(t0, "south", base().name("pbx-south").build().unwrap())
        .expect("south added");
    assert_eq!(
        fleet.client("west").and_then(|c| c.config().name()),
        Some("west")
    );
    assert_eq!(
        fleet.client("south").and_then(|c| c.config().name()),
        Some("pbx-south")
    );
    loop {
        match fleet.poll_output() {
            FleetOutput::Wait(_) => break,
            FleetOutput::Connect(id) => {
                fleet.handle_input(t0, id, Input::Connected);
                fleet.handle_input(t0, id, Input::Received(BANNER));
            }
            _ => {}
        }
    }
    fleet.handle_input(t0, west, Input::Eof);
    let records = take_client_records();
    let of_west: Vec<&String> = records
        .iter()
        .filter(|r| r.starts_with("AMI west: "))
        .collect();
    assert!(
        of_west.iter().any(|r| r.contains("banner: version")),
        "{records:#?}"
    );
    // EOF during the login: no session was ready, and the record says so.
    assert!(
        of_west
            .iter()
            .any(|r| r.contains("connection ended before the session was ready: eof")),
        "{records:#?}"
    );
    assert!(
        records.iter().any(|r| r.starts_with("AMI pbx-south: ")),
        "{records:#?}"
    );
    for r in &records {
        assert!(
            r.starts_with("AMI west: ") || r.starts_with("AMI pbx-south: "),
            "a fleet client's record without its server's name: {r:?}"
        );
    }

    // (d) A refused connect is said as what it is: no session was lost, none was ready.
    let mut h = Harness::new(base().name("pbx-down").build().unwrap(), Instant::now());
    h.input(Input::ConnectFailed(ConnectFailure::Refused));
    let records = take_client_records();
    assert!(
        records
            .iter()
            .any(|r| r == "AMI pbx-down: could not connect: connect_failed: connection refused"),
        "{records:#?}"
    );
    assert!(
        !records.iter().any(|r| r.contains("session lost")),
        "{records:#?}"
    );
}
