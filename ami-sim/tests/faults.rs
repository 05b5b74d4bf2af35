//! One test per fault: chunked transmit, delayed, dropped, duplicated and foreign-ID
//! replies, garbage and over-long lines, non-UTF-8 caller names, half-open sessions,
//! resets mid-message, planned restarts and event storms.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_proto::{Decoder, DecoderLimits, Frame, MessageKind};
use ami_sim::{ActionMatch, CallRequest, CloseReason, Fault, SessionState, SimConfig};
use std::time::Duration;
use support::*;

const LOGIN_OFF: &[u8] =
    b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\nEvents: off\r\n\r\n";
const LOGIN_ON: &[u8] = b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\n\r\n";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pings(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("Action: Ping\r\nActionID: p{i}\r\n\r\n").into_bytes())
        .collect()
}

fn ids(shapes: &[Shape]) -> Vec<String> {
    shapes.iter().filter_map(|s| s.get("ActionID")).collect()
}

#[test]
fn max_chunk_splits_transmit_anywhere() {
    let plain = {
        let mut h = Harness::new(SimConfig::default());
        h.send(LOGIN_ON);
        h.send(&pings(3));
        h.got
    };
    let mut h = Harness::new(SimConfig::default());
    h.sim.faults().set_max_chunk(Some(7));
    assert!(h.sim.transmit(h.s).is_empty());
    h.sim.receive(h.s, h.now, LOGIN_ON);
    h.sim.receive(h.s, h.now, &pings(3));
    let mut chunks = 0;
    loop {
        let d = h.sim.transmit(h.s);
        if d.is_empty() {
            break;
        }
        assert!(d.len() <= 7);
        h.got.extend_from_slice(d);
        let n = d.len();
        h.sim.advance_transmit(h.s, n);
        chunks += 1;
    }
    assert!(chunks > 50);
    // Timestamps differ only if time moved; it did not, so the bytes are identical.
    assert_eq!(h.got, plain);
}

#[test]
fn delayed_replies_keep_order_and_hold_the_session() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    h.sim
        .faults()
        .delay_replies(ActionMatch::named("Ping"), ms(500));
    let base = h.got.len();
    h.send(&pings(2));
    h.advance(ms(499));
    assert_eq!(h.got.len(), base);
    h.advance(ms(1));
    assert_eq!(ids(&h.shapes_from(base)), ["p0"]);
    h.advance(ms(500));
    assert_eq!(ids(&h.shapes_from(base)), ["p0", "p1"]);
}

#[test]
fn dropped_actions_are_never_answered() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    h.sim.faults().drop_actions(ActionMatch::named("ping"));
    let base = h.got.len();
    h.send(&pings(2));
    h.send(b"Action: CoreStatus\r\nActionID: cs\r\n\r\n");
    h.advance(Duration::from_secs(5));
    assert_eq!(ids(&h.shapes_from(base)), ["cs"]);
    assert_eq!(h.sim.stats().actions_dropped, 2);
}

#[test]
fn probabilistic_drops_are_reproducible() {
    let run = |seed: u64| {
        let cfg = SimConfig {
            seed,
            ..SimConfig::default()
        };
        let mut h = Harness::new(cfg);
        h.send(LOGIN_OFF);
        h.sim
            .faults()
            .drop_actions(ActionMatch::any().with_probability(0.3));
        let base = h.got.len();
        h.send(&pings(200));
        ids(&h.shapes_from(base))
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert!(a.len() > 100 && a.len() < 180, "{} answered", a.len());
    assert_ne!(a, run(2));
}

#[test]
fn duplicated_replies() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    h.sim.faults().duplicate_replies(ActionMatch::named("Ping"));
    let base = h.got.len();
    h.send(&pings(1));
    assert_eq!(ids(&h.shapes_from(base)), ["p0", "p0"]);
}

#[test]
fn foreign_action_ids() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    h.sim
        .faults()
        .foreign_action_ids(ActionMatch::named("Ping"));
    let base = h.got.len();
    h.send(&pings(1));
    h.send(b"Action: Ping\r\n\r\n");
    let got = h.shapes_from(base);
    assert_eq!(ids(&got), ["foreign-1", "foreign-2"]);
    assert_eq!(got[0].keys, ["Response", "ActionID", "Ping", "Timestamp"]);
}

#[test]
fn garbage_and_overlong_lines_between_messages() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    h.sim
        .faults()
        .garbage_lines(1.0, b"@@ garbage without colon @@")
        .overlong_lines(1.0, 5000);
    let base = h.got.len();
    h.send(&pings(2));
    let tail = &h.got[base..];
    let text = String::from_utf8_lossy(tail);
    assert!(text.contains("@@ garbage without colon @@\r\n\r\n"));
    let long = tail.split(|&b| b == b'\n').map(|l| l.len()).max().unwrap();
    assert_eq!(long, 5001, "5000 bytes plus the CR");
    // A tolerant decoder still finds both replies among the junk.
    let mut d = Decoder::without_banner(DecoderLimits::default());
    d.feed(tail);
    let mut responses = 0;
    let mut other = 0;
    while let Some(f) = d.decode() {
        if let Ok(Frame::Message(m)) = f {
            match m.kind() {
                MessageKind::Response => responses += 1,
                _ => other += 1,
            }
        }
    }
    assert_eq!(responses, 2);
    assert_eq!(other, 4);
    h.sim
        .faults()
        .garbage_lines(0.0, b"")
        .overlong_lines(0.0, 0);
    let before = h.got.len();
    h.send(&pings(1));
    assert!(!String::from_utf8_lossy(&h.got[before..]).contains("garbage"));
}

#[test]
fn non_utf8_caller_names() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_ON);
    h.sim.faults().non_utf8_caller_names(true);
    h.sim
        .originate_call(h.now, CallRequest::new("Local/echo@ami-test", 1))
        .unwrap();
    h.advance(Duration::from_secs(3));
    let got = h.shapes();
    let ncid = got.iter().find(|s| s.is_event("NewCallerid")).unwrap();
    let v = ncid.msg.as_ref().unwrap().get("CallerIDName").unwrap();
    assert_eq!(v.as_bytes(), b"Jos\xe9 Garc\xeda");
    assert!(v.as_str().is_none());
    let or = got
        .iter()
        .find(|s| s.is_event("OriginateResponse"))
        .unwrap();
    assert!(or
        .msg
        .as_ref()
        .unwrap()
        .get("CallerIDName")
        .unwrap()
        .as_str()
        .is_none());
}

#[test]
fn half_open_session_goes_silent_without_closing() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    h.sim.inject(h.now, Fault::HalfOpen { session: Some(h.s) });
    let base = h.got.len();
    h.send(&pings(2));
    h.advance(Duration::from_secs(60));
    assert_eq!(h.got.len(), base);
    assert_eq!(h.sim.session_state(h.s), SessionState::Open);
    h.sim.inject(h.now, Fault::Resume { session: Some(h.s) });
    h.send(&pings(1));
    assert_eq!(
        ids(&h.shapes_from(base)),
        ["p0"],
        "input during half-open was ignored"
    );
    // The global switch does the same for every session.
    h.sim.faults().half_open_all(true);
    let base = h.got.len();
    h.send(&pings(1));
    assert!(h.sim.transmit(h.s).is_empty());
    assert_eq!(h.got.len(), base);
    h.sim.faults().half_open_all(false);
}

#[test]
fn reset_mid_message_cuts_the_output() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_ON);
    h.drain();
    h.sim.receive(h.s, h.now, &pings(5));
    let queued = h.sim.transmit(h.s).len();
    h.sim
        .inject(h.now, Fault::ResetMidMessage { session: Some(h.s) });
    assert_eq!(
        h.sim.session_state(h.s),
        SessionState::Closed(CloseReason::Fault)
    );
    let left = h.sim.transmit(h.s).to_vec();
    assert!(!left.is_empty() && left.len() < queued);
    h.sim.advance_transmit(h.s, left.len());
    assert!(h.sim.is_eof(h.s));

    // With nothing queued, the next message is cut.
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    h.sim
        .inject(h.now, Fault::ResetMidMessage { session: Some(h.s) });
    assert_eq!(h.sim.session_state(h.s), SessionState::Open);
    let base = h.got.len();
    h.send(&pings(1));
    let tail = &h.got[base..];
    assert!(!tail.is_empty() && !tail.ends_with(b"\r\n\r\n"));
    assert_eq!(
        h.sim.session_state(h.s),
        SessionState::Closed(CloseReason::Fault)
    );
}

#[test]
fn planned_restart_and_storm() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    h.send(b"Action: Events\r\nEventMask: user,system\r\n\r\n");
    let t = h.now;
    h.sim
        .faults()
        .schedule(t + ms(300), Fault::EventStorm { count: 100 })
        .schedule(
            t + ms(500),
            Fault::Restart {
                down_for: Duration::from_secs(2),
            },
        );
    assert_eq!(h.sim.poll_timeout(), Some(t + ms(300)));
    let base = h.got.len();
    h.advance(ms(400));
    let storm = h.shapes_from(base);
    assert_eq!(storm.len(), 100);
    assert!(storm.iter().all(|s| s.is_event("UserEvent")));
    h.advance(ms(200));
    assert_eq!(
        h.sim.session_state(h.s),
        SessionState::Closed(CloseReason::Shutdown)
    );
    assert!(h.shapes().last().unwrap().is_event("Shutdown"));
    let refused = h.sim.accept(h.now);
    assert!(h.sim.transmit(refused).is_empty());
    let back = h.sim.accept(h.now + Duration::from_secs(2));
    assert!(!h.sim.transmit(back).is_empty());
}

#[test]
fn event_storm_helper_reaches_every_listener() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_ON);
    let other = h.sim.accept(h.now);
    h.sim.receive(other, h.now, LOGIN_OFF);
    h.drain();
    let base = h.got.len();
    let emitted = h.sim.stats().events_emitted;
    h.sim.emit_user_events(h.now, 10_000);
    h.drain();
    let got = h.shapes_from(base);
    assert_eq!(got.len(), 10_000);
    assert_eq!(got[9_999].get("Seq").unwrap(), "9999");
    let st = h.sim.stats();
    assert_eq!(st.events_emitted, emitted + 10_000);
    assert!(st.events_delivered >= 10_000);
}

#[test]
fn backlog_cap_closes_a_session_that_never_reads() {
    let cfg = SimConfig {
        max_backlog: 64 << 10,
        ..SimConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.send(LOGIN_ON);
    h.sim.emit_user_events(h.now, 5_000);
    assert_eq!(
        h.sim.session_state(h.s),
        SessionState::Closed(CloseReason::SlowReader)
    );
}

#[test]
fn half_open_during_a_blocked_write_is_not_a_slow_reader() {
    let cfg = SimConfig {
        socket_buffer: 1024,
        ..SimConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.send(LOGIN_ON);
    h.sim.emit_user_events(h.now, 100);
    h.sim.inject(h.now, Fault::HalfOpen { session: None });
    h.sim.handle_timeout(h.now + Duration::from_secs(5));
    assert_eq!(h.sim.session_state(h.s), SessionState::Open);
    assert!(h.sim.transmit(h.s).is_empty());
}
