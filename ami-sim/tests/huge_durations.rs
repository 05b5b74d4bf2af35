//! Durations too large for an `Instant` (`Duration::MAX` as "never") in the configuration,
//! faults and calls: the deadline saturates to a far future instead of panicking, so what
//! waits on it simply never happens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::{ActionMatch, CallRequest, Fault, SessionState, SimConfig, SimServer};
use std::time::{Duration, Instant};
use support::*;

const LOGIN_OFF: &[u8] =
    b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\nEvents: off\r\n\r\n";
const LOGIN_ON: &[u8] = b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\n\r\n";
const YEAR: Duration = Duration::from_secs(365 * 86_400);

fn text(h: &Harness) -> String {
    String::from_utf8_lossy(&h.got).into_owned()
}

#[test]
fn an_endless_auth_timeout_never_drops_an_unauthenticated_session() {
    let mut h = Harness::new(SimConfig {
        auth_timeout: Duration::MAX,
        ..SimConfig::default()
    });
    assert!(h.sim.poll_timeout().is_none_or(|t| t > h.now + YEAR));
    h.advance(YEAR);
    assert_eq!(h.sim.session_state(h.s), SessionState::Open);
    h.send(LOGIN_OFF);
    assert!(text(&h).contains("Authentication accepted"));
}

#[test]
fn an_endless_write_timeout_never_closes_a_stalled_reader() {
    let t0 = Instant::now();
    let mut sim = SimServer::new(
        SimConfig {
            write_timeout: Duration::MAX,
            socket_buffer: 100,
            ..SimConfig::default()
        },
        t0,
    );
    let s = sim.accept(t0);
    sim.receive(s, t0, LOGIN_ON);
    sim.emit_user_events(t0, 10);
    assert!(sim.poll_timeout().is_none_or(|t| t > t0 + YEAR));
    sim.handle_timeout(t0 + YEAR);
    assert_eq!(sim.session_state(s), SessionState::Open);
}

#[test]
fn an_endless_boot_delay_never_boots() {
    let mut h = Harness::new(SimConfig {
        fully_booted: false,
        boot_delay: Duration::MAX,
        ..SimConfig::default()
    });
    h.send(LOGIN_ON);
    h.advance(YEAR);
    assert!(!text(&h).contains("FullyBooted"));
}

#[test]
fn an_endless_step_delay_never_lets_a_call_answer() {
    let mut h = Harness::new(SimConfig {
        step_delay: Duration::MAX,
        ..SimConfig::default()
    });
    let now = h.now;
    let call = h
        .sim
        .originate_call(now, CallRequest::new("Local/echo@ami-test", 1));
    assert!(call.is_some());
    // The first dialplan step never comes, so the 30 s dial timeout ends the call.
    h.advance(YEAR);
    assert_eq!(h.sim.stats().calls_answered, 0);
    assert_eq!(h.sim.stats().calls_failed, 1);
}

#[test]
fn an_endless_dial_timeout_leaves_an_unanswered_call_to_its_dialplan() {
    let mut h = Harness::new(SimConfig::default());
    let mut req = CallRequest::new("Local/noanswer@ami-test", 1);
    req.timeout = Duration::MAX;
    let now = h.now;
    assert!(h.sim.originate_call(now, req).is_some());
    // Well past the default 30 s: still ringing.
    h.advance(Duration::from_secs(60));
    assert_eq!(h.sim.stats().calls_active, 1);
    // `noanswer` is Wait(120) then the end of its dialplan.
    h.advance(YEAR);
    assert_eq!(h.sim.stats().calls_active, 0);
    assert_eq!(h.sim.stats().calls_answered, 0);
}

#[test]
fn an_endless_restart_keeps_the_server_down() {
    let t0 = Instant::now();
    let mut sim = SimServer::new(SimConfig::default(), t0);
    sim.restart(t0, Duration::MAX);
    assert!(sim.is_down(t0 + YEAR));
    let mut other = SimServer::new(SimConfig::default(), t0);
    other.inject(
        t0,
        Fault::Restart {
            down_for: Duration::MAX,
        },
    );
    assert!(other.is_down(t0 + YEAR));
    let s = other.accept(t0 + YEAR);
    assert!(matches!(other.session_state(s), SessionState::Closed(_)));
}

#[test]
fn an_endless_reply_delay_never_answers_and_keeps_the_session_open() {
    let mut h = Harness::new(SimConfig::default());
    h.sim
        .faults()
        .delay_replies(ActionMatch::named("Ping"), Duration::MAX);
    h.send(LOGIN_OFF);
    h.send(b"Action: Ping\r\nActionID: p\r\n\r\n");
    h.advance(YEAR);
    assert!(!text(&h).contains("Pong"));
    assert_eq!(h.sim.session_state(h.s), SessionState::Open);
}

#[test]
fn a_wall_clock_start_near_the_end_of_time_saturates() {
    let mut h = Harness::new(SimConfig {
        start_unix: Duration::MAX,
        ..SimConfig::default()
    });
    h.send(LOGIN_OFF);
    h.advance(Duration::from_secs(5));
    h.send(b"Action: Ping\r\nActionID: p\r\n\r\n");
    assert!(text(&h).contains("Pong"));
}
