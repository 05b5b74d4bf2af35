//! Behaviour tests on virtual time: authentication timing, blocking, slow readers,
//! restarts, calls, permissions, filters and variables.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::{
    CallRequest, ClassMask, CloseReason, SessionState, SimConfig, SimServer, SimUser, MAX_BURST,
};
use std::time::{Duration, Instant};
use support::*;

const LOGIN_OFF: &[u8] =
    b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\nEvents: off\r\n\r\n";
const LOGIN_ON: &[u8] = b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\n\r\n";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn failed_login_is_answered_after_exactly_one_second_then_closed() {
    let mut h = Harness::new(SimConfig::default());
    h.send(b"Action: Login\r\nUsername: admin\r\nSecret: wrong\r\nActionID: b\r\n\r\n");
    let banner_len = h.got.len();
    assert_eq!(h.sim.poll_timeout(), Some(h.now + Duration::from_secs(1)));
    h.advance(ms(999));
    assert_eq!(h.got.len(), banner_len);
    assert_eq!(h.sim.session_state(h.s), SessionState::Open);
    h.advance(ms(1));
    let got = h.shapes();
    assert_eq!(
        got.last().unwrap().get("Message").unwrap(),
        "Authentication failed"
    );
    assert_eq!(
        h.sim.session_state(h.s),
        SessionState::Closed(CloseReason::AuthFailed)
    );
    assert!(h.sim.is_eof(h.s));
    assert_eq!(h.sim.stats().login_failures, 1);
}

#[test]
fn unauthenticated_session_is_dropped_silently_after_auth_timeout() {
    let mut h = Harness::new(SimConfig::default());
    let len = h.got.len();
    h.advance(Duration::from_secs(30) - ms(1));
    assert_eq!(h.sim.session_state(h.s), SessionState::Open);
    h.advance(ms(1));
    assert_eq!(
        h.sim.session_state(h.s),
        SessionState::Closed(CloseReason::AuthTimeout)
    );
    assert_eq!(h.got.len(), len, "nothing is sent before the EOF");
}

#[test]
fn sync_originate_blocks_a_pipelined_ping_until_answered() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    let base = h.got.len();
    h.send(b"Action: Originate\r\nActionID: o1\r\nChannel: Local/wait10@ami-test\r\nApplication: Wait\r\nData: 1\r\n\r\nAction: Ping\r\nActionID: p1\r\n\r\n");
    assert_eq!(h.got.len(), base);
    h.advance(ms(19));
    assert_eq!(h.got.len(), base, "answered after one 20 ms step");
    h.advance(ms(1));
    let got = h.shapes_from(base);
    assert_eq!(firsts(&got), ["Response: Success", "Response: Success"]);
    assert_eq!(
        got[0].get("Message").unwrap(),
        "Originate successfully queued"
    );
    assert_eq!(got[1].get("ActionID").unwrap(), "p1");
}

#[test]
fn sync_originate_failure_unblocks_after_the_timeout() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    let base = h.got.len();
    h.send(b"Action: Originate\r\nActionID: o1\r\nChannel: Local/noanswer@ami-test\r\nApplication: Wait\r\nData: 1\r\nTimeout: 3000\r\n\r\nAction: Ping\r\nActionID: p1\r\n\r\n");
    h.advance(ms(2999));
    assert_eq!(h.got.len(), base);
    h.advance(ms(1));
    let got = h.shapes_from(base);
    assert_eq!(firsts(&got), ["Response: Error", "Response: Success"]);
    assert_eq!(got[0].get("Message").unwrap(), "Originate failed");
}

#[test]
fn slow_reader_is_closed_after_100ms_keeping_only_the_kernel_bytes() {
    let cfg = SimConfig {
        socket_buffer: 4096,
        ..SimConfig::default()
    };
    let t0 = Instant::now();
    let mut sim = SimServer::new(cfg, t0);
    let s = sim.accept(t0);
    sim.receive(s, t0, LOGIN_OFF);
    sim.receive(s, t0, b"Action: Events\r\nEventMask: user\r\n\r\n");
    sim.emit_user_events(t0, 1000);
    assert!(sim.transmit(s).len() > 4096);
    assert_eq!(sim.poll_timeout(), Some(t0 + ms(100)));
    sim.handle_timeout(t0 + ms(99));
    assert_eq!(sim.session_state(s), SessionState::Open);
    sim.handle_timeout(t0 + ms(100));
    assert_eq!(
        sim.session_state(s),
        SessionState::Closed(CloseReason::SlowReader)
    );
    assert_eq!(sim.transmit(s).len(), 4096);
    sim.advance_transmit(s, 4096);
    assert!(sim.is_eof(s));
    assert_eq!(sim.stats().slow_reader_closes, 1);
}

#[test]
fn a_status_reply_no_session_could_hold_is_built_only_as_far_as_the_client_gets_it() {
    // 200 channels each listing ten copies of a 1,000-byte variable: a 2 MB reply,
    // where the session holds 8 KiB. Writing it closes the session as a slow reader,
    // keeping what the kernel had (the first 16 KiB): building the rest (hundreds of MB
    // with `max_calls` channels and longer lists) bought nothing.
    let cfg = SimConfig {
        socket_buffer: 16 << 10,
        max_backlog: 8 << 10,
        ..SimConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.send(LOGIN_OFF);
    for _ in 0..100 {
        h.send(b"Action: Originate\r\nChannel: Local/hold@ami-test\r\nApplication: Wait\r\nData: 300\r\nAsync: true\r\n\r\n");
    }
    h.advance(Duration::from_secs(1));
    assert_eq!(h.sim.channels().len(), 200);
    let value = "x".repeat(1000);
    h.send(format!("Action: Setvar\r\nVariable: GLOBAL(A)\r\nValue: {value}\r\n\r\n").as_bytes());
    let base = h.got.len();
    let queued = h.sim.stats().bytes_queued;
    let names = ["GLOBAL(A)"; 10].join(",");
    h.send(format!("Action: Status\r\nVariables: {names}\r\n\r\n").as_bytes());
    assert_eq!(
        h.sim.session_state(h.s),
        SessionState::Closed(CloseReason::SlowReader)
    );
    assert_eq!(h.got.len() - base, 16 << 10, "the kernel's bytes, then EOF");
    assert!(h.got[base..].starts_with(b"Response: Success\r\nEventList: start\r\n"));
    // What the kernel took, past the 8 KiB cap, and at most one more channel's item.
    let built = h.sim.stats().bytes_queued - queued;
    assert!(built <= (16 << 10) + (11 << 10), "{built} bytes queued");
}

#[test]
fn a_reader_that_keeps_up_is_not_closed() {
    let cfg = SimConfig {
        socket_buffer: 4096,
        ..SimConfig::default()
    };
    let t0 = Instant::now();
    let mut sim = SimServer::new(cfg, t0);
    let s = sim.accept(t0);
    sim.receive(s, t0, LOGIN_OFF);
    sim.receive(s, t0, b"Action: Events\r\nEventMask: user\r\n\r\n");
    sim.emit_user_events(t0, 2000);
    // Read 2 KiB every 50 ms: each blocked write completes well within 100 ms.
    let mut t = t0;
    while !sim.transmit(s).is_empty() {
        t += ms(50);
        sim.handle_timeout(t);
        assert_eq!(sim.session_state(s), SessionState::Open, "at {:?}", t - t0);
        let n = sim.transmit(s).len().min(2048);
        sim.advance_transmit(s, n);
    }
}

#[test]
fn restart_sends_shutdown_closes_refuses_then_accepts() {
    let t0 = Instant::now();
    let mut sim = SimServer::new(SimConfig::default(), t0);
    let admin = sim.accept(t0);
    let limited = sim.accept(t0);
    sim.receive(admin, t0, LOGIN_ON);
    sim.receive(
        limited,
        t0,
        b"Action: Login\r\nUsername: limited\r\nSecret: limited1\r\n\r\n",
    );
    for s in [admin, limited] {
        let n = sim.transmit(s).len();
        sim.advance_transmit(s, n);
    }
    sim.originate_call(t0, CallRequest::new("Local/hold@ami-test", 60))
        .unwrap();
    sim.handle_timeout(t0 + ms(100));
    for s in [admin, limited] {
        let n = sim.transmit(s).len();
        sim.advance_transmit(s, n);
    }
    sim.restart(t0 + ms(100), Duration::from_secs(5));
    let got = shapes(&[b"Asterisk Call Manager/11.0.0\r\n", sim.transmit(admin)].concat());
    assert_eq!(got[1].first, "Event: Shutdown");
    assert_eq!(got[1].get("Restart").unwrap(), "True");
    assert!(
        sim.transmit(limited).is_empty(),
        "read=call gets no system event"
    );
    for s in [admin, limited] {
        assert_eq!(
            sim.session_state(s),
            SessionState::Closed(CloseReason::Shutdown)
        );
    }
    assert!(sim.channels().is_empty());
    let refused = sim.accept(t0 + Duration::from_secs(3));
    assert_eq!(
        sim.session_state(refused),
        SessionState::Closed(CloseReason::Shutdown)
    );
    assert!(sim.transmit(refused).is_empty());
    assert!(sim.is_eof(refused));
    let back = sim.accept(t0 + ms(5100));
    assert_eq!(sim.transmit(back), b"Asterisk Call Manager/11.0.0\r\n");
    assert_eq!(sim.stats().restarts, 1);
}

#[test]
fn mid_call_coreshowchannels_lists_live_channels() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    let id = h
        .sim
        .originate_call(h.now, CallRequest::new("Local/wait10@ami-test", 3))
        .unwrap();
    h.advance(ms(500));
    let live = h.sim.channels();
    assert_eq!(live.len(), 2);
    assert!(live[0].ends_with(";1") && live[1].ends_with(";2"));
    let base = h.got.len();
    h.send(b"Action: CoreShowChannels\r\nActionID: c\r\n\r\n");
    let got = h.shapes_from(base);
    let listed: Vec<String> = got
        .iter()
        .filter(|s| s.is_event("CoreShowChannel"))
        .map(|s| s.get("Channel").unwrap())
        .collect();
    assert_eq!(listed, live);
    assert_eq!(got.last().unwrap().get("ListItems").unwrap(), "2");
    h.advance(Duration::from_secs(4));
    assert!(h.sim.channels().is_empty());
    assert!(!h.sim.hangup_call(h.now, id));
}

#[test]
fn call_outcomes_and_reasons() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_ON);
    for (n, exten) in ["busy", "congestion", "nosuchexten", "hangup"]
        .iter()
        .enumerate()
    {
        let mut req = CallRequest::new(&format!("Local/{exten}@ami-test"), 1);
        req.action_id = Some(format!("c{n}"));
        h.sim.originate_call(h.now, req).unwrap();
    }
    let mut req = CallRequest::new("PJSIP/nobody", 1);
    req.action_id = Some("c4".into());
    h.sim.originate_call(h.now, req).unwrap();
    let mut req = CallRequest::new("Local/noanswer@ami-test", 1);
    req.action_id = Some("c5".into());
    req.timeout = Duration::from_secs(2);
    h.sim.originate_call(h.now, req).unwrap();
    h.advance(Duration::from_secs(3));
    let got = h.shapes();
    let reason = |id: &str| {
        let s = got
            .iter()
            .find(|s| s.is_event("OriginateResponse") && s.get("ActionID").as_deref() == Some(id))
            .unwrap();
        (
            s.get("Response").unwrap(),
            s.get("Reason").unwrap(),
            s.get("Uniqueid").unwrap(),
        )
    };
    assert_eq!(
        reason("c0"),
        ("Failure".into(), "5".into(), "<unknown>".into())
    );
    assert_eq!(reason("c1").1, "8");
    assert_eq!(reason("c2").1, "0");
    assert_eq!(reason("c3").1, "0");
    assert_eq!(reason("c4").1, "0");
    assert_eq!(reason("c5").1, "3");
    // No channel was ever created for the unknown extension or channel type.
    assert!(!got.iter().any(|s| !s.is_event("OriginateResponse")
        && s.get("Channel")
            .is_some_and(|c| c.contains("nosuchexten") || c.contains("PJSIP"))));
    let failed = got
        .iter()
        .find(|s| s.is_event("OriginateResponse") && s.get("ActionID").as_deref() == Some("c2"))
        .unwrap();
    assert_eq!(failed.get("Channel").unwrap(), "Local/nosuchexten@ami-test");
    assert_eq!(h.sim.stats().calls_failed, 6);
}

#[test]
fn userevent_and_queue_extensions() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_ON);
    h.sim
        .originate_call(h.now, CallRequest::new("Local/userevent@ami-test", 5))
        .unwrap();
    h.sim
        .originate_call(h.now, CallRequest::new("Local/queue@ami-test", 30))
        .unwrap();
    h.advance(Duration::from_secs(10));
    let got = h.shapes();
    let ue = got.iter().find(|s| s.is_event("UserEvent")).unwrap();
    assert_eq!(ue.get("UserEvent").unwrap(), "TestEvent");
    assert_eq!(ue.get("Foo").unwrap(), "bar");
    let order: Vec<String> = got
        .iter()
        .filter(|s| {
            s.event_name()
                .is_some_and(|n| n.starts_with("Queue") || n.starts_with("Agent"))
        })
        .map(|s| s.first.clone())
        .collect();
    assert_eq!(
        order,
        [
            "Event: QueueCallerJoin",
            "Event: AgentCalled",
            "Event: QueueCallerLeave",
            "Event: AgentConnect",
            "Event: AgentComplete"
        ]
    );
    assert!(h.sim.channels().is_empty(), "both calls ended");
}

#[test]
fn hangup_action_single_unknown_and_regex() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    for _ in 0..3 {
        h.sim
            .originate_call(h.now, CallRequest::new("Local/hold@ami-test", 60))
            .unwrap();
    }
    h.advance(ms(200));
    let chans = h.sim.channels();
    let base = h.got.len();
    h.send(
        format!(
            "Action: Hangup\r\nActionID: h1\r\nChannel: {}\r\n\r\n",
            chans[1]
        )
        .as_bytes(),
    );
    h.send(b"Action: Hangup\r\nActionID: h2\r\nChannel: SIP/none-1\r\n\r\n");
    h.send(b"Action: Hangup\r\nActionID: h3\r\nChannel: /hold@/\r\n\r\n");
    let got = h.shapes_from(base);
    assert_eq!(got[0].get("Message").unwrap(), "Channel Hungup");
    assert_eq!(got[1].get("Message").unwrap(), "No such channel");
    assert_eq!(got[2].get("EventList").unwrap(), "start");
    let hung: Vec<String> = got
        .iter()
        .filter(|s| s.is_event("ChannelHungup"))
        .map(|s| s.get("Channel").unwrap())
        .collect();
    assert_eq!(hung.len(), 4);
    assert_eq!(
        got.last().unwrap().first,
        "Event: ChannelsHungupListComplete"
    );
    assert_eq!(got.last().unwrap().get("ListItems").unwrap(), "4");
    assert!(h.sim.channels().is_empty());
}

#[test]
fn limited_user_permissions_and_event_classes() {
    let mut h = Harness::new(SimConfig::default());
    h.send(b"Action: Login\r\nUsername: limited\r\nSecret: limited1\r\n\r\n");
    h.send(b"Action: Command\r\nActionID: c\r\nCommand: core show version\r\n\r\n");
    h.send(b"Action: UserEvent\r\nActionID: u\r\nUserEvent: X\r\n\r\n");
    h.send(b"Action: Originate\r\nActionID: o\r\nChannel: Local/userevent@ami-test\r\nApplication: Wait\r\nData: 1\r\nAsync: true\r\n\r\n");
    h.advance(Duration::from_secs(3));
    let got = h.shapes();
    assert_eq!(got[1].get("Message").unwrap(), "Authentication accepted");
    assert!(!got
        .iter()
        .any(|s| s.is_event("FullyBooted") || s.is_event("SuccessfulAuth")));
    assert_eq!(got[2].get("Message").unwrap(), "Permission denied");
    assert_eq!(got[3].get("Message").unwrap(), "Permission denied");
    assert_eq!(
        got[4].get("Message").unwrap(),
        "Originate successfully queued"
    );
    assert!(got.iter().any(|s| s.is_event("OriginateResponse")));
    for s in &got[5..] {
        let p = s.get("Privilege").unwrap_or_default();
        assert_eq!(p, "call,all", "{} reached a read=call user", s.first);
    }
}

#[test]
fn filters_select_events() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_ON);
    h.send(
        b"Action: Filter\r\nActionID: f1\r\nOperation: Add\r\nFilter: Event: Newchannel\r\n\r\n",
    );
    h.send(b"Action: Filter\r\nActionID: f2\r\nOperation: Add\r\nFilter: !;2\r\n\r\n");
    h.send(b"Action: Filter\r\nActionID: f3\r\nOperation: Remove\r\nFilter: x\r\n\r\n");
    let base = h.got.len();
    h.sim
        .originate_call(h.now, CallRequest::new("Local/echo@ami-test", 1))
        .unwrap();
    h.advance(Duration::from_secs(3));
    let got = h.shapes_from(base);
    assert_eq!(firsts(&got), ["Event: Newchannel"]);
    assert!(got[0].get("Channel").unwrap().ends_with(";1"));
    let all = h.shapes();
    let f3 = all
        .iter()
        .find(|s| s.get("ActionID").as_deref() == Some("f3"))
        .unwrap();
    assert_eq!(f3.get("Message").unwrap(), "Unknown operation");
}

#[test]
fn getvar_setvar_global_and_channel() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_ON);
    let mut req = CallRequest::new("Local/hold@ami-test", 60);
    req.variables = vec![("FOO".into(), "bar".into())];
    h.sim.originate_call(h.now, req).unwrap();
    h.advance(ms(200));
    let chan = h.sim.channels()[0].clone();
    let base = h.got.len();
    h.send(b"Action: Setvar\r\nActionID: s1\r\nVariable: G1\r\nValue: global-value\r\n\r\n");
    h.send(b"Action: Getvar\r\nActionID: g1\r\nVariable: G1\r\n\r\n");
    h.send(
        format!("Action: Getvar\r\nActionID: g2\r\nChannel: {chan}\r\nVariable: FOO\r\n\r\n")
            .as_bytes(),
    );
    h.send(format!("Action: Setvar\r\nActionID: s2\r\nChannel: {chan}\r\nVariable: NEW\r\nValue: v\r\n\r\n").as_bytes());
    h.send(
        format!(
            "Action: Getvar\r\nActionID: g3\r\nChannel: {chan}\r\nVariable: CHANNEL(name)\r\n\r\n"
        )
        .as_bytes(),
    );
    h.send(b"Action: Getvar\r\nActionID: g4\r\nChannel: Local/none-1;1\r\nVariable: X\r\n\r\n");
    h.send(b"Action: Getvar\r\nActionID: g5\r\nVariable: UNSET\r\n\r\n");
    h.send(b"Action: Getvar\r\nActionID: g6\r\n\r\n");
    let got = h.shapes_from(base);
    let by = |id: &str| {
        got.iter()
            .find(|s| s.get("ActionID").as_deref() == Some(id))
            .unwrap()
            .clone()
    };
    assert_eq!(by("s1").get("Message").unwrap(), "Variable Set");
    assert_eq!(by("g1").get("Value").unwrap(), "global-value");
    assert_eq!(by("g2").get("Value").unwrap(), "bar");
    assert_eq!(by("g3").get("Value").unwrap(), chan);
    assert_eq!(by("g4").get("Message").unwrap(), "No such channel");
    assert_eq!(by("g5").get("Value").unwrap(), "");
    assert_eq!(by("g6").get("Message").unwrap(), "No variable specified");
    // The channel Setvar raised a VarSet event after its reply.
    let s2 = got
        .iter()
        .position(|s| s.get("ActionID").as_deref() == Some("s2"))
        .unwrap();
    assert!(got[s2 + 1].is_event("VarSet"));
    assert_eq!(got[s2 + 1].get("Variable").unwrap(), "NEW");
}

#[test]
fn events_action_masks() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    let base = h.got.len();
    h.send(b"Action: Events\r\nActionID: e1\r\nEventMask: 1\r\n\r\n");
    h.send(b"Action: Events\r\nActionID: e2\r\nEventMask: call,user\r\n\r\n");
    h.send(b"Action: Events\r\nActionID: e3\r\n\r\n");
    let got = h.shapes_from(base);
    assert_eq!(got[0].get("Events").unwrap(), "On");
    assert_eq!(got[1].get("Events").unwrap(), "On");
    assert_eq!(got[2].first, "Response: Error");
    assert_eq!(got[2].get("Message").unwrap(), "Invalid event mask");
}

#[test]
fn not_fully_booted_login_gets_fullybooted_later() {
    let cfg = SimConfig {
        fully_booted: false,
        boot_delay: Duration::from_secs(2),
        ..SimConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.send(LOGIN_ON);
    let got = h.shapes();
    assert_eq!(
        firsts(&got),
        ["banner", "Response: Success", "Event: SuccessfulAuth"]
    );
    h.advance(Duration::from_secs(2));
    let got = h.shapes();
    let fb = got.last().unwrap();
    assert!(fb.is_event("FullyBooted"));
    assert_eq!(
        fb.keys,
        ["Event", "Privilege", "Status", "Uptime", "LastReload"]
    );
}

#[test]
fn authlimit_and_single_login_users() {
    let mut cfg = SimConfig {
        auth_limit: 2,
        ..SimConfig::default()
    };
    let mut solo = SimUser::new("solo", "s3cret", ClassMask::ALL, ClassMask::ALL);
    solo.allow_multiple_login = false;
    cfg.users.push(solo);
    let t0 = Instant::now();
    let mut sim = SimServer::new(cfg, t0);
    let a = sim.accept(t0);
    let b = sim.accept(t0);
    let c = sim.accept(t0);
    assert_eq!(
        sim.session_state(c),
        SessionState::Closed(CloseReason::AuthLimit)
    );
    assert!(sim.transmit(c).is_empty());
    sim.receive(
        a,
        t0,
        b"Action: Login\r\nUsername: solo\r\nSecret: s3cret\r\nEvents: off\r\n\r\n",
    );
    sim.receive(
        b,
        t0,
        b"Action: Login\r\nUsername: SOLO\r\nSecret: s3cret\r\n\r\n",
    );
    sim.handle_timeout(t0 + Duration::from_secs(1));
    let got = shapes(sim.transmit(b));
    assert_eq!(
        got.last().unwrap().get("Message").unwrap(),
        "Login Already In Use"
    );
    assert_eq!(
        sim.session_state(b),
        SessionState::Closed(CloseReason::AuthFailed)
    );
    assert_eq!(sim.session_state(a), SessionState::Open);
}

#[test]
fn client_close_and_forget() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    h.sim.client_closed(h.s, h.now);
    assert_eq!(
        h.sim.session_state(h.s),
        SessionState::Closed(CloseReason::ClientClosed)
    );
    h.send(b"Action: Ping\r\n\r\n");
    assert!(h.sim.transmit(h.s).is_empty());
    h.sim.forget(h.s);
    assert_eq!(h.sim.session_state(h.s), SessionState::Unknown);
}

#[test]
fn same_seed_same_bytes() {
    let run = || {
        let mut h = Harness::new(SimConfig::default());
        h.send(b"Action: Challenge\r\nAuthType: MD5\r\n\r\n");
        h.send(LOGIN_ON);
        h.sim
            .originate_call(h.now, CallRequest::new("Local/queue@ami-test", 5))
            .unwrap();
        h.advance(Duration::from_secs(10));
        h.got
    };
    assert_eq!(run(), run());
}

#[test]
fn sized_storm_events_are_the_size_asked_and_numbered_in_order() {
    let t0 = Instant::now();
    let mut sim = SimServer::new(SimConfig::default(), t0);
    let s = sim.accept(t0);
    sim.receive(s, t0, LOGIN_OFF);
    sim.receive(s, t0, b"Action: Events\r\nEventMask: user\r\n\r\n");
    let skip = sim.transmit(s).len();
    sim.advance_transmit(s, skip);
    sim.emit_user_events_sized(t0, 1200, 500);
    let out = String::from_utf8(sim.transmit(s).to_vec()).unwrap();
    let events: Vec<&str> = out.split_terminator("\r\n\r\n").collect();
    assert_eq!(events.len(), 1200);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.len() + 4, 500, "event {i}: {e}");
        assert!(e.contains(&format!("\r\nSeq: {i}\r\n")), "{e}");
        assert!(e.contains("\r\nChannel: PJSIP/"), "{e}");
    }
}

#[test]
fn storms_numbered_from_a_running_count_continue_one_another() {
    let t0 = Instant::now();
    let mut sim = SimServer::new(SimConfig::default(), t0);
    let s = logged_in(&mut sim, t0);
    // What `ami sim --events-per-s` does: a small storm per tick, one running number.
    sim.emit_user_events_from(t0, 0, 2);
    sim.emit_user_events_from(t0, 2, 1);
    sim.emit_user_events_from(t0, 3, 3);
    assert_eq!(storm_seqs(&sim, s), ["0", "1", "2", "3", "4", "5"]);
}

#[test]
fn a_storm_with_no_session_to_reach_is_counted_not_rendered_and_later_readers_get_theirs() {
    let t0 = Instant::now();
    let mut sim = SimServer::new(SimConfig::default(), t0);
    let idle = sim.accept(t0); // connected, not logged in: reached by no event
    assert_eq!(sim.storm_readers(), 0);
    // Ten billion events to nobody: counted at once (rendering them took minutes).
    sim.emit_user_events_from(t0, 0, 10_000_000_000);
    assert_eq!(sim.stats().events_emitted, 10_000_000_000);
    assert_eq!(sim.stats().events_delivered, 0);
    let s = logged_in(&mut sim, t0);
    assert_eq!(sim.storm_readers(), 1);
    sim.emit_user_events_from(t0, 10_000_000_000, 2);
    assert_eq!(storm_seqs(&sim, s), ["10000000000", "10000000001"]);
    assert!(sim.transmit(idle).starts_with(b"Asterisk Call Manager"));
}

/// Events a call to `Local/wait10@ami-test` raises when its answered channel runs
/// `UserEvent(Burst,Count: <count>)`, as an Originate from a client names it, with no
/// session reading user events.
fn originated_burst_events(count: &str) -> u64 {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    let before = h.sim.stats().events_emitted;
    let originate = format!(
        "Action: Originate\r\nChannel: Local/wait10@ami-test\r\nApplication: UserEvent\r\nData: Burst,Count: {count}\r\nAsync: true\r\n\r\n"
    );
    h.send(originate.as_bytes());
    h.advance(Duration::from_secs(30));
    assert!(h.sim.channels().is_empty(), "the call ended");
    h.sim.stats().events_emitted - before
}

#[test]
fn an_originated_burst_is_capped_and_costs_nothing_when_no_session_reads_it() {
    // The count is the client's: 10^15 once made the simulator build every event in the
    // step that ran it, until the allocator failed and the process aborted.
    let call_alone = originated_burst_events("0");
    let capped = originated_burst_events("1000000000000000") - call_alone;
    assert_eq!(capped, MAX_BURST as u64);
}

#[test]
fn an_originated_burst_reaches_a_reader_in_order_from_the_answered_channel() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_ON);
    h.send(b"Action: Originate\r\nChannel: Local/wait10@ami-test\r\nApplication: UserEvent\r\nData: Burst,Count: 3\r\nAsync: true\r\n\r\n");
    h.advance(Duration::from_secs(30));
    let got = h.shapes();
    let bursts: Vec<_> = got
        .iter()
        .filter(|s| s.is_event("UserEvent") && s.get("UserEvent").as_deref() == Some("Burst"))
        .collect();
    let seqs: Vec<String> = bursts.iter().map(|s| s.get("Seq").unwrap()).collect();
    assert_eq!(seqs, ["0", "1", "2"]);
    for b in bursts {
        assert!(b.get("Channel").unwrap().ends_with(";1"), "{b:?}");
        assert_eq!(b.get("Privilege").unwrap(), "user,all");
    }
}

/// A new session logged in with events on, what it was sent so far taken.
fn logged_in(sim: &mut SimServer, now: Instant) -> ami_sim::SessionId {
    let s = sim.accept(now);
    sim.receive(s, now, LOGIN_ON);
    let n = sim.transmit(s).len();
    sim.advance_transmit(s, n);
    s
}

/// The `Seq` of each storm event a session can read now, in order.
fn storm_seqs(sim: &SimServer, s: ami_sim::SessionId) -> Vec<String> {
    String::from_utf8(sim.transmit(s).to_vec())
        .unwrap()
        .split_terminator("\r\n\r\n")
        .filter(|m| m.contains("UserEvent: SimStorm"))
        .map(|m| {
            let seq = m.split("\r\nSeq: ").nth(1).unwrap();
            seq.split("\r\n").next().unwrap().to_string()
        })
        .collect()
}

#[test]
fn a_storm_honours_each_sessions_filters_event_mask_and_busy_hold() {
    let t0 = Instant::now();
    let mut sim = SimServer::new(SimConfig::default(), t0);
    sim.faults()
        .delay_replies(ami_sim::ActionMatch::named("Ping"), ms(100));
    let (all, filtered, masked, busy) = (
        logged_in(&mut sim, t0),
        logged_in(&mut sim, t0),
        logged_in(&mut sim, t0),
        logged_in(&mut sim, t0),
    );
    sim.receive(
        filtered,
        t0,
        b"Action: Filter\r\nOperation: Add\r\nMatchCriteria: header(Seq),method(ends_with)\r\nFilter: 7\r\n\r\n",
    );
    sim.receive(masked, t0, b"Action: Events\r\nEventMask: call\r\n\r\n");
    sim.receive(busy, t0, b"Action: Ping\r\nActionID: p\r\n\r\n");
    for s in [filtered, masked] {
        let n = sim.transmit(s).len();
        sim.advance_transmit(s, n);
    }
    assert!(sim.transmit(busy).is_empty());
    let emitted = sim.stats().events_emitted;
    sim.emit_user_events_sized(t0, 300, 500);
    let every: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    assert_eq!(storm_seqs(&sim, all), every);
    let sevens: Vec<String> = every.iter().filter(|s| s.ends_with('7')).cloned().collect();
    assert_eq!(storm_seqs(&sim, filtered), sevens);
    assert!(sim.transmit(masked).is_empty());
    // The busy session gets its reply first, then the held storm, in order.
    assert!(sim.transmit(busy).is_empty());
    sim.handle_timeout(t0 + ms(100));
    assert!(sim
        .transmit(busy)
        .starts_with(b"Response: Success\r\nActionID: p\r\nPing: Pong\r\n"));
    assert_eq!(storm_seqs(&sim, busy), every);
    let st = sim.stats();
    assert_eq!(st.events_emitted, emitted + 300);
}

#[test]
fn a_restarting_server_places_no_calls_until_it_is_up() {
    let t0 = Instant::now();
    let mut sim = SimServer::new(SimConfig::default(), t0);
    sim.restart(t0, Duration::from_secs(2));
    assert!(sim.is_down(t0 + ms(100)));
    let call = || CallRequest::new("Local/hold@ami-test", 60);
    assert!(sim.originate_call(t0 + ms(100), call()).is_none());
    assert_eq!(sim.stats().calls_started, 0);
    assert!(!sim.is_down(t0 + Duration::from_secs(2)));
    assert!(sim
        .originate_call(t0 + Duration::from_secs(2), call())
        .is_some());
}

#[test]
fn a_half_closed_session_answers_what_it_read_then_closes_keeping_the_replies() {
    let mut h = Harness::new(SimConfig::default());
    // A sync Originate keeps the session busy: the Ping behind it and the EOF wait.
    h.sim.receive(
        h.s,
        h.now,
        b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\nEvents: off\r\n\r\n\
          Action: Originate\r\nChannel: Local/wait10@ami-test\r\nApplication: Wait\r\n\
          Data: 1\r\nActionID: o\r\n\r\nAction: Ping\r\nActionID: p\r\n\r\nAction: Pi",
    );
    let now = h.now;
    h.sim.client_eof(h.s, now);
    assert_eq!(h.sim.session_state(h.s), SessionState::Open);
    // Input after EOF cannot exist; it is ignored.
    h.sim
        .receive(h.s, now, b"Action: Ping\r\nActionID: late\r\n\r\n");
    h.sim.handle_timeout(now + ms(500));
    assert_eq!(
        h.sim.session_state(h.s),
        SessionState::Closed(CloseReason::ClientClosed)
    );
    h.drain();
    let ids: Vec<String> = h
        .shapes()
        .iter()
        .filter_map(|m| m.get("ActionID"))
        .collect();
    assert_eq!(ids, ["o", "p"]);
    assert!(h.sim.is_eof(h.s));
}

#[test]
fn a_client_close_after_a_half_close_drops_what_is_unread() {
    let mut h = Harness::new(SimConfig::default());
    h.sim.receive(h.s, h.now, LOGIN_OFF);
    let now = h.now;
    h.sim.client_eof(h.s, now);
    assert!(!h.sim.transmit(h.s).is_empty());
    h.sim.client_closed(h.s, now);
    assert!(h.sim.is_eof(h.s));
}

#[test]
fn input_room_is_what_a_busy_session_can_still_take() {
    let mut h = Harness::new(SimConfig {
        max_input_backlog: 100,
        ..SimConfig::default()
    });
    h.send(LOGIN_OFF);
    assert_eq!(h.sim.input_room(h.s), 100);
    h.send(
        b"Action: Originate\r\nChannel: Local/noanswer@ami-test\r\nApplication: Wait\r\n\
          Data: 1\r\nTimeout: 1000\r\nActionID: sync\r\n\r\n",
    );
    let ping = b"Action: Ping\r\nActionID: p\r\n\r\n";
    h.send(ping);
    assert_eq!(h.sim.input_room(h.s), 100 - ping.len());
    h.send(&[b'x'; 100]);
    assert_eq!(h.sim.input_room(h.s), 0);
    assert_eq!(h.sim.stats().input_bytes_dropped, ping.len() as u64);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.sim.input_room(h.s), 100);
    h.sim.client_closed(h.s, h.now);
    assert_eq!(h.sim.input_room(h.s), usize::MAX);
}

#[test]
fn an_idle_session_handles_one_write_larger_than_its_input_backlog() {
    let mut h = Harness::new(SimConfig {
        max_input_backlog: 64,
        ..SimConfig::default()
    });
    let mut all = LOGIN_OFF.to_vec();
    for i in 0..100 {
        all.extend_from_slice(format!("Action: Ping\r\nActionID: p{i}\r\n\r\n").as_bytes());
    }
    h.send(&all);
    let pongs = h
        .shapes()
        .iter()
        .filter(|m| m.get("Ping").is_some())
        .count();
    assert_eq!(pongs, 100);
    assert_eq!(h.sim.stats().input_bytes_dropped, 0);
}

#[test]
fn a_busy_session_still_drops_what_passes_its_input_backlog_when_fed_directly() {
    let mut h = Harness::new(SimConfig {
        max_input_backlog: 64,
        ..SimConfig::default()
    });
    h.send(LOGIN_OFF);
    // The sync Originate and 100 Pings in one write: the Pings past 64 bytes are dropped.
    let mut all = b"Action: Originate\r\nChannel: Local/noanswer@ami-test\r\nApplication: Wait\r\n\
          Data: 1\r\nTimeout: 1000\r\nActionID: sync\r\n\r\n"
        .to_vec();
    let mut pings = 0;
    for i in 0..100 {
        let p = format!("Action: Ping\r\nActionID: p{i}\r\n\r\n");
        pings += p.len();
        all.extend_from_slice(p.as_bytes());
    }
    h.send(&all);
    // Kept: 64 bytes of backlog, plus what Asterisk's 1024-byte line buffer already held.
    let dropped = h.sim.stats().input_bytes_dropped as usize;
    assert!(dropped > 0 && dropped <= pings - 64, "{dropped}");
    assert!(dropped >= pings - 64 - 1024, "{dropped}");
    h.advance(Duration::from_secs(2));
    let pongs = h
        .shapes()
        .iter()
        .filter(|m| m.get("Ping").is_some())
        .count();
    assert!(pongs < 100);
}

#[test]
fn channels_are_found_by_uniqueid_when_no_name_matches() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    h.send(
        b"Action: Originate\r\nChannel: Local/wait10@ami-test\r\nApplication: Wait\r\n\
          Data: 5\r\nAsync: true\r\nChannelId: my-chan-1\r\nOtherChannelId: my-chan-2\r\n\
          Variable: NOTE=hi\r\nActionID: o\r\n\r\n",
    );
    let now = h.now;
    h.sim
        .originate_call(now, CallRequest::new("Local/wait10@ami-test", 5));
    h.advance(ms(500));
    let from = h.got.len();
    // Asterisk's lookup by name falls back to the Uniqueid, case-insensitively.
    h.send(b"Action: Status\r\nChannel: MY-CHAN-1\r\nActionID: s\r\n\r\n");
    h.send(b"Action: Getvar\r\nChannel: my-chan-1\r\nVariable: NOTE\r\nActionID: g\r\n\r\n");
    h.send(
        b"Action: Setvar\r\nChannel: my-chan-1\r\nVariable: X\r\nValue: 1\r\nActionID: v\r\n\r\n",
    );
    h.send(b"Action: Hangup\r\nChannel: my-chan-2\r\nActionID: h\r\n\r\n");
    let got = h.shapes_from(from);
    let status = got.iter().find(|m| m.is_event("Status")).unwrap();
    assert_eq!(status.get("Uniqueid").unwrap(), "my-chan-1");
    let getvar = got
        .iter()
        .find(|m| m.get("ActionID").as_deref() == Some("g"))
        .unwrap();
    assert_eq!(getvar.get("Value").unwrap(), "hi");
    let setvar = got
        .iter()
        .find(|m| m.get("ActionID").as_deref() == Some("v"))
        .unwrap();
    assert_eq!(setvar.first, "Response: Success");
    let hangup = got
        .iter()
        .find(|m| m.get("ActionID").as_deref() == Some("h"))
        .unwrap();
    assert_eq!(hangup.get("Message").unwrap(), "Channel Hungup");
    // A generated Uniqueid works too; an unknown one is still no channel.
    let uid = h.sim.channel_table().last().unwrap().uniqueid.clone();
    assert!(!uid.starts_with("my-chan"));
    let from = h.got.len();
    h.send(format!("Action: Status\r\nChannel: {uid}\r\nActionID: s2\r\n\r\n").as_bytes());
    h.send(b"Action: Status\r\nChannel: my-chan-9\r\nActionID: s3\r\n\r\n");
    let got = h.shapes_from(from);
    assert!(got
        .iter()
        .any(|m| m.is_event("Status") && m.get("Uniqueid").as_deref() == Some(uid.as_str())));
    let unknown = got
        .iter()
        .find(|m| m.get("ActionID").as_deref() == Some("s3"))
        .unwrap();
    assert_eq!(unknown.get("Message").unwrap(), "No such channel");
}

/// Hangs up a fresh answered call with `Cause: {cause}`; returns the Cause of its Hangup
/// events.
fn hangup_causes(cause: &str) -> Vec<String> {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_ON);
    let now = h.now;
    h.sim
        .originate_call(now, CallRequest::new("Local/hold@ami-test", 60))
        .unwrap();
    h.advance(ms(200));
    let chan = h.sim.channels()[0].clone();
    let from = h.got.len();
    h.send(
        format!("Action: Hangup\r\nChannel: {chan}\r\nCause: {cause}\r\nActionID: h\r\n\r\n")
            .as_bytes(),
    );
    h.advance(ms(500));
    let got = h.shapes_from(from);
    assert_eq!(got[0].get("Message").unwrap(), "Channel Hungup", "{cause}");
    got.iter()
        .filter(|m| m.is_event("Hangup"))
        .map(|m| m.get("Cause").unwrap())
        .collect()
}

#[test]
fn a_hangup_cause_outside_1_to_127_hangs_up_without_setting_it_like_asterisk() {
    // Asterisk logs "Invalid 'Cause'" and hangs up anyway, leaving the cause unset: the
    // same Hangup as with no Cause at all.
    let unset = hangup_causes("");
    assert!(!unset.is_empty());
    assert!(unset.iter().all(|c| c == "16"), "{unset:?}");
    assert!(hangup_causes("17").iter().all(|c| c == "17"));
    for bad in ["200", "128", "-1", "abc", "17x", "0"] {
        assert_eq!(hangup_causes(bad), unset, "Cause: {bad}");
    }
}

#[test]
fn an_originate_timeout_is_read_by_its_leading_number_like_sscanf() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_ON);
    let from = h.got.len();
    h.send(
        b"Action: Originate\r\nChannel: Local/noanswer@ami-test\r\nApplication: Wait\r\n\
          Data: 1\r\nAsync: true\r\nTimeout: 3000ms\r\nActionID: t\r\n\r\n",
    );
    h.send(
        b"Action: Originate\r\nChannel: Local/noanswer@ami-test\r\nApplication: Wait\r\n\
          Data: 1\r\nAsync: true\r\nTimeout: ms\r\nActionID: bad\r\n\r\n",
    );
    let got = h.shapes_from(from);
    assert_eq!(
        got[0].get("Message").unwrap(),
        "Originate successfully queued"
    );
    let bad = got
        .iter()
        .find(|m| m.get("ActionID").as_deref() == Some("bad"))
        .unwrap();
    assert_eq!(bad.get("Message").unwrap(), "Invalid timeout");
    // No answer within 3 s (not the default 30 s): Reason 3.
    h.advance(Duration::from_millis(3500));
    let got = h.shapes_from(from);
    let res = got
        .iter()
        .find(|m| m.is_event("OriginateResponse"))
        .unwrap();
    assert_eq!(res.get("Response").unwrap(), "Failure");
    assert_eq!(res.get("Reason").unwrap(), "3");
}

/// A client that sets ever new variables on a live channel (a dialer's bug, or a hostile
/// client) must not grow the simulator's memory without bound: past the channel's cap a new
/// variable is refused as Asterisk refuses a Setvar it could not do ("Variable not set"),
/// while one already set can still be changed.
#[test]
fn setvar_on_a_channel_refuses_new_variables_past_the_channels_cap() {
    let mut h = Harness::new(SimConfig::default());
    h.send(b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\nEvents: off\r\n\r\n");
    h.sim
        .originate_call(h.now, CallRequest::new("Local/hold@ami-test", 600))
        .unwrap();
    h.advance(ms(200));
    let chan = h.sim.channels()[0].clone();
    let base = h.got.len();
    for n in 0..5_000 {
        h.send(
            format!(
                "Action: Setvar\r\nActionID: s{n}\r\nChannel: {chan}\r\nVariable: V{n}\r\nValue: x\r\n\r\n"
            )
            .as_bytes(),
        );
    }
    let got = h.shapes_from(base);
    let refused = got
        .iter()
        .filter(|s| s.get("Message").as_deref() == Some("Variable not set"))
        .count();
    assert!(refused > 0, "5,000 new variables on one channel all set");
    let vars = |h: &Harness| {
        h.sim
            .channel_table()
            .into_iter()
            .find(|r| r.name == chan)
            .map_or(0, |r| r.variables.len())
    };
    let kept = vars(&h);
    assert!(kept <= 1024, "{kept} variables kept on one channel");
    // One already set is still changed.
    let base = h.got.len();
    h.send(
        format!("Action: Setvar\r\nActionID: again\r\nChannel: {chan}\r\nVariable: V0\r\nValue: y\r\n\r\n")
            .as_bytes(),
    );
    let got = h.shapes_from(base);
    assert_eq!(got[0].get("Message").as_deref(), Some("Variable Set"));
    assert_eq!(vars(&h), kept);
}

/// Few variables but long ones: the channel's cap is in bytes too.
#[test]
fn setvar_on_a_channel_refuses_variables_past_the_channels_byte_cap() {
    let mut h = Harness::new(SimConfig::default());
    h.send(b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\nEvents: off\r\n\r\n");
    h.sim
        .originate_call(h.now, CallRequest::new("Local/hold@ami-test", 600))
        .unwrap();
    h.advance(ms(200));
    let chan = h.sim.channels()[0].clone();
    let value = "v".repeat(1000);
    for n in 0..200 {
        h.send(
            format!(
                "Action: Setvar\r\nActionID: s{n}\r\nChannel: {chan}\r\nVariable: V{n}\r\nValue: {value}\r\n\r\n"
            )
            .as_bytes(),
        );
    }
    let bytes: usize = h
        .sim
        .channel_table()
        .into_iter()
        .find(|r| r.name == chan)
        .map_or(0, |r| {
            r.variables.iter().map(|(k, v)| k.len() + v.len()).sum()
        });
    assert!(
        bytes <= 128 << 10,
        "{bytes} bytes of variables kept on one channel"
    );
}

/// Crate docs, "Bounded memory": a session's filters are capped at 1024 entries. The 1025th
/// Filter is refused with an error (as a filter Asterisk could not add), the ones before it
/// all accepted.
#[test]
fn a_sessions_filters_stop_at_1024_and_the_next_filter_is_refused() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    let base = h.got.len();
    for n in 0..1030 {
        h.send(
            format!(
                "Action: Filter\r\nActionID: f{n}\r\nOperation: Add\r\nFilter: Event: E{n}\r\n\r\n"
            )
            .as_bytes(),
        );
    }
    let got = h.shapes_from(base);
    let response = |n: usize| {
        let id = format!("f{n}");
        got.iter()
            .find(|s| s.get("ActionID").as_deref() == Some(id.as_str()))
            .and_then(|s| s.get("Response"))
            .unwrap_or_else(|| panic!("no answer to {id}"))
    };
    assert!((0..1024).all(|n| response(n) == "Success"));
    assert!((1024..1030).all(|n| response(n) == "Error"));
}

/// Crate docs, "Bounded memory": global variables are capped at 4,096; a Setvar of a new
/// global past them is answered `Variable not set`, while one already set can still change.
#[test]
fn setvar_refuses_new_globals_past_4096_and_still_changes_an_existing_one() {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_OFF);
    let base = h.got.len();
    for n in 0..4100 {
        h.send(
            format!("Action: Setvar\r\nActionID: g{n}\r\nVariable: G{n}\r\nValue: x\r\n\r\n")
                .as_bytes(),
        );
    }
    h.send(b"Action: Setvar\r\nActionID: again\r\nVariable: G0\r\nValue: y\r\n\r\n");
    let got = h.shapes_from(base);
    let message = |id: &str| {
        got.iter()
            .find(|s| s.get("ActionID").as_deref() == Some(id))
            .and_then(|s| s.get("Message"))
            .unwrap_or_else(|| panic!("no answer to {id}"))
    };
    assert!((0..4096).all(|n| message(&format!("g{n}")) == "Variable Set"));
    assert!((4096..4100).all(|n| message(&format!("g{n}")) == "Variable not set"));
    assert_eq!(message("again"), "Variable Set");
}

/// `SimConfig::echo_timeout` is a `Duration`: a sub-second part must not be dropped. The
/// `echo` extension's `Set(TIMEOUT(absolute)=...)` must fire its `T` hangup 2.5 s after it
/// runs, not 2 s (nor 1 s for 0.3 s).
#[test]
fn echo_timeout_keeps_its_sub_second_part() {
    for (timeout, want) in [(ms(2500), ms(2500)), (ms(300), ms(300))] {
        let cfg = SimConfig {
            echo_timeout: timeout,
            ..SimConfig::default()
        };
        let mut h = Harness::new(cfg);
        h.send(LOGIN_ON);
        h.sim
            .originate_call(h.now, CallRequest::new("Local/echo@ami-test", 60))
            .unwrap();
        // Step deadline by deadline, noting the virtual instant each event is sent at.
        let (mut set_at, mut t_at) = (None, None);
        let end = h.now + Duration::from_secs(10);
        while let Some(t) = h.sim.poll_timeout() {
            if t > end || t_at.is_some() {
                break;
            }
            let base = h.got.len();
            h.now = h.now.max(t);
            h.sim.handle_timeout(h.now);
            h.drain();
            for s in h.shapes_from(base) {
                if !s.is_event("Newexten") {
                    continue;
                }
                let data = s.get("AppData").unwrap_or_default();
                if set_at.is_none() && data.starts_with("TIMEOUT(absolute)=") {
                    set_at = Some(h.now);
                }
                if t_at.is_none() && s.get("Extension").as_deref() == Some("T") {
                    t_at = Some(h.now);
                }
            }
        }
        let set_at = set_at.expect("the echo extension ran its Set(TIMEOUT(absolute))");
        let t_at = t_at.expect("the absolute timeout sent the channel to T");
        assert_eq!(t_at - set_at, want, "echo_timeout {timeout:?}");
    }
}
