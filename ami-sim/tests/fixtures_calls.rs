//! Replays the fixtures that involve calls, timing or a second "driver" connection. The
//! driver's calls are started with `SimServer::originate_call`. Where timing makes event
//! counts differ, event-name multisets or key subsequences are compared.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::{CallRequest, CallTarget, SessionState, SimConfig};
use md5::{Digest, Md5};
use std::collections::BTreeMap;
use std::time::Duration;
use support::*;

fn multiset(shapes: &[Shape]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in shapes {
        *m.entry(s.first.clone()).or_insert(0) += 1;
    }
    m
}

/// Every event name's field list must equal the fixture's first occurrence of it.
fn assert_event_keys_match(got: &[Shape], want: &[Shape]) {
    for g in got.iter().filter(|s| s.event_name().is_some()) {
        if let Some(w) = want.iter().find(|w| w.first == g.first) {
            assert_eq!(g.keys, w.keys, "keys of {}", g.first);
        }
    }
}

fn index_of(shapes: &[Shape], pred: impl Fn(&Shape) -> bool) -> usize {
    shapes.iter().position(pred).expect("message not found")
}

fn driver_call(h: &mut Harness, channel: &str, app: &str, data: &str) {
    let mut req = CallRequest::new(channel, 0);
    req.action_id = Some("drv".into());
    req.target = CallTarget::App {
        app: app.into(),
        data: data.into(),
    };
    h.sim.originate_call(h.now, req).unwrap();
}

#[test]
fn originate_async_matches_event_for_event() {
    let sent = split_messages(&fixture("originate_async.sent"));
    let want = shapes(&fixture("originate_async.raw"));
    let mut h = Harness::new(SimConfig::default());
    h.send(&sent[0]);
    h.send(&sent[1]);
    h.advance(Duration::from_secs(15));
    h.send(&sent[2]);
    let got = h.shapes();
    assert_eq!(firsts(&got), firsts(&want));
    assert_event_keys_match(&got, &want);
    assert_same_shapes(&got, &want, "originate_async");
    let or = got
        .iter()
        .find(|s| s.is_event("OriginateResponse"))
        .unwrap();
    assert_eq!(or.keys[2], "ActionID");
    assert_eq!(or.get("Reason").unwrap(), "4");
    assert_eq!(or.get("CallerIDName").unwrap(), "AMI Test");
    let nc = got.iter().find(|s| s.is_event("Newchannel")).unwrap();
    let chan = nc.get("Channel").unwrap();
    assert!(
        chan.starts_with("Local/wait10@ami-test-") && chan.ends_with(";1"),
        "{chan}"
    );
    let uid = nc.get("Uniqueid").unwrap();
    assert_eq!(nc.get("Linkedid").unwrap(), uid);
    let two = got
        .iter()
        .filter(|s| s.is_event("Newchannel"))
        .nth(1)
        .unwrap();
    assert_eq!(two.get("Linkedid").unwrap(), uid);
    assert_ne!(two.get("Uniqueid").unwrap(), uid);
}

#[test]
fn originate_sync() {
    let sent = split_messages(&fixture("originate_sync.sent"));
    let want = shapes(&fixture("originate_sync.raw"));
    let mut h = Harness::new(SimConfig::default());
    h.send(&sent[0]);
    h.send(&sent[1]);
    let before = h.got.len();
    h.advance(Duration::from_millis(5));
    assert_eq!(
        h.got.len(),
        before,
        "sync originate answered before the call was"
    );
    h.advance(Duration::from_secs(2));
    h.send(&sent[2]);
    assert_same_shapes(&h.shapes(), &want, "originate_sync");
}

#[test]
fn originate_sync_blocks_the_session() {
    let sent = split_messages(&fixture("originate_sync_blocks.sent"));
    let want = shapes(&fixture("originate_sync_blocks.raw"));
    let mut h = Harness::new(SimConfig::default());
    h.send(&sent[0]);
    let after_login = h.got.len();
    // The sync Originate and the Ping go out in one write.
    let mut both = sent[1].clone();
    both.extend_from_slice(&sent[2]);
    h.send(&both);
    h.advance(Duration::from_millis(500));
    let mut req = CallRequest::new("Local/userevent@ami-test", 1);
    req.action_id = Some("drv-o1".into());
    h.sim.originate_call(h.now, req).unwrap();
    h.advance(Duration::from_millis(2400));
    assert_eq!(
        h.got.len(),
        after_login,
        "nothing may arrive while the session is blocked"
    );
    h.advance(Duration::from_secs(2));
    h.send(&sent[3]);
    let got = h.shapes();
    // The Originate's Error comes first, then the held events, and the Ping only after it.
    let orig = index_of(&got, |s| {
        s.get("ActionID").as_deref() == Some("sync-noanswer")
    });
    let ping = index_of(&got, |s| {
        s.get("ActionID").as_deref() == Some("ping-behind-sync")
    });
    let first_event = index_of(&got, |s| {
        s.event_name().is_some() && s.get("Privilege").as_deref() == Some("call,all")
    });
    assert_eq!(got[orig].first, "Response: Error");
    assert_eq!(got[orig].get("Message").unwrap(), "Originate failed");
    assert!(orig < first_event && orig < ping);
    assert_eq!(firsts(&got)[..3], firsts(&want)[..3]);
    let w_orig = index_of(&want, |s| {
        s.get("ActionID").as_deref() == Some("sync-noanswer")
    });
    assert_eq!(got[orig].keys, want[w_orig].keys);
    // Events: call only: no dialplan or cdr class.
    assert!(got
        .iter()
        .all(|s| !s.is_event("Newexten") && !s.is_event("Cdr") && !s.is_event("VarSet")));
    let drv = got
        .iter()
        .find(|s| s.is_event("OriginateResponse"))
        .unwrap();
    assert_eq!(drv.get("ActionID").unwrap(), "drv-o1");
    // The noanswer call's teardown has the fixture's shape.
    let names = |v: &[Shape]| -> Vec<String> {
        v.iter()
            .filter(|s| s.get("Channel").is_some_and(|c| c.contains("noanswer")))
            .map(|s| s.first.clone())
            .collect()
    };
    assert_eq!(names(&got), names(&want));
    assert_event_keys_match(&got, &want);
    assert_eq!(got.last().unwrap().first, "Response: Goodbye");
}

#[test]
fn events_off_on_user_invalid() {
    let sent = split_messages(&fixture("events_off_on.sent"));
    let want = shapes(&fixture("events_off_on.raw"));
    let mut h = Harness::new(SimConfig::default());
    h.send(&sent[0]); // login
    h.send(&sent[1]); // off
    driver_call(&mut h, "Local/userevent@ami-test", "Wait", "1");
    h.advance(Duration::from_secs(3));
    h.send(&sent[2]); // on
    driver_call(&mut h, "Local/userevent@ami-test", "Wait", "1");
    h.advance(Duration::from_secs(3));
    h.send(&sent[3]); // user
    driver_call(&mut h, "Local/userevent@ami-test", "Wait", "1");
    h.advance(Duration::from_secs(3));
    h.send(&sent[4]); // nonsense
    driver_call(&mut h, "Local/userevent@ami-test", "Wait", "1");
    h.advance(Duration::from_secs(3));
    h.send(&sent[5]);
    let got = h.shapes();
    let responses = |v: &[Shape]| -> Vec<(String, Option<String>, Option<String>)> {
        v.iter()
            .filter(|s| s.first.starts_with("Response"))
            .map(|s| (s.first.clone(), s.get("ActionID"), s.get("Events")))
            .collect()
    };
    assert_eq!(responses(&got), responses(&want));
    let between = |v: &[Shape], a: &str, b: &str| -> Vec<Shape> {
        let i = index_of(v, |s| s.get("ActionID").as_deref() == Some(a));
        let j = index_of(v, |s| s.get("ActionID").as_deref() == Some(b));
        v[i + 1..j].to_vec()
    };
    assert!(between(&got, "ev-off", "ev-on").is_empty());
    let on_got = between(&got, "ev-on", "ev-user");
    let on_want = between(&want, "ev-on", "ev-user");
    assert_eq!(multiset(&on_got), multiset(&on_want));
    assert_event_keys_match(&on_got, &on_want);
    assert_eq!(
        firsts(&between(&got, "ev-user", "ev-bad")),
        firsts(&between(&want, "ev-user", "ev-bad"))
    );
    assert!(between(&got, "ev-bad", "logoff-1").is_empty());
}

#[test]
fn coreshowchannels_with_two_calls() {
    let want = shapes(&fixture("coreshowchannels.raw"));
    let mut h = Harness::new(SimConfig::default());
    driver_call(&mut h, "Local/hold@ami-test", "Wait", "60");
    driver_call(&mut h, "Local/hold@ami-test", "Wait", "60");
    h.advance(Duration::from_secs(1));
    h.send(&fixture("coreshowchannels.sent"));
    let got = h.shapes();
    assert_same_shapes(&got, &want, "coreshowchannels");
    let names: Vec<String> = got
        .iter()
        .filter(|s| s.is_event("CoreShowChannel"))
        .take(4)
        .map(|s| s.get("Channel").unwrap())
        .collect();
    let mut live = h.sim.channels();
    live.sort();
    let mut names_sorted = names.clone();
    names_sorted.sort();
    assert_eq!(names_sorted, live);
}

#[test]
fn status_all_one_and_missing() {
    let want = shapes(&fixture("status.raw"));
    let mut h = Harness::new(SimConfig::default());
    let mut req = CallRequest::new("Local/hold@ami-test", 60);
    req.caller_id = Some("Status Test <5552000>".into());
    req.variables = vec![("STATUSVAR".into(), "abc".into())];
    h.sim.originate_call(h.now, req).unwrap();
    h.advance(Duration::from_secs(1));
    let two = h.sim.channels()[1].clone();
    let sent = String::from_utf8(fixture("status.sent"))
        .unwrap()
        .replace("Local/hold@ami-test-0000002c;2", &two);
    h.send(sent.as_bytes());
    let got = h.shapes();
    assert_same_shapes(&got, &want, "status");
    let vars: Vec<String> = got
        .iter()
        .filter(|s| s.is_event("Status") && s.get("ActionID").as_deref() == Some("st-one"))
        .flat_map(|s| {
            s.msg
                .as_ref()
                .unwrap()
                .get_all("Variable")
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(vars, ["STATUSVAR=abc", "CHANNEL(state)=Up"]);
}

#[test]
fn queuestatus_with_waiting_callers_and_a_busy_agent() {
    let want = shapes(&fixture("queuestatus.raw"));
    let mut h = Harness::new(SimConfig::default());
    driver_call(&mut h, "Local/queue-wait@ami-test", "Wait", "60");
    driver_call(&mut h, "Local/queue-wait@ami-test", "Wait", "60");
    driver_call(&mut h, "Local/queue@ami-test", "Wait", "60");
    h.advance(Duration::from_secs(1));
    h.send(&fixture("queuestatus.sent"));
    let got = h.shapes();
    assert_same_shapes(&got, &want, "queuestatus");
    let member = got.iter().find(|s| s.is_event("QueueMember")).unwrap();
    assert_eq!(member.get("InCall").unwrap(), "1");
}

#[test]
fn challenge_md5_login_then_already_authenticated() {
    let want = shapes(&fixture("challenge_md5_login.raw"));
    let sent = split_messages(&fixture("challenge_md5_login.sent"));
    let mut h = Harness::new(SimConfig::default());
    h.send(&sent[0]);
    let challenge = h.shapes().last().unwrap().get("Challenge").unwrap();
    assert_eq!(challenge.len(), 9);
    let mut md5 = Md5::new();
    md5.update(challenge.as_bytes());
    md5.update(b"amp111");
    let key: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let login = String::from_utf8(sent[1].clone())
        .unwrap()
        .replace("c53a4af0b93f0b6840430ed2eec7565a", &key);
    h.send(login.as_bytes());
    h.send(&sent[2]);
    h.send(&sent[3]);
    assert_same_shapes(&h.shapes(), &want, "challenge_md5_login");
}

#[test]
fn shutdown_event_then_eof() {
    let want = shapes(&fixture("shutdown.raw"));
    let mut h = Harness::new(SimConfig::default());
    h.send(&fixture("shutdown.sent"));
    h.sim.restart(h.now, Duration::from_secs(1));
    h.drain();
    let got = h.shapes();
    assert_same_shapes(&got, &want, "shutdown");
    assert_eq!(got.last().unwrap().get("Restart").unwrap(), "True");
    assert_eq!(
        h.sim.session_state(h.s),
        SessionState::Closed(ami_sim::CloseReason::Shutdown)
    );
    assert!(h.sim.is_eof(h.s));
}

#[test]
fn event_stream_20_originates() {
    let sent = split_messages(&fixture("event_stream_20s.sent"));
    let want = shapes(&fixture("event_stream_20s.raw"));
    let mut h = Harness::new(SimConfig::default());
    h.send(&sent[0]);
    for m in &sent[1..sent.len() - 1] {
        h.send(m);
        h.advance(Duration::from_millis(250));
    }
    h.advance(Duration::from_secs(20));
    h.send(sent.last().unwrap());
    let got = h.shapes();
    let ids = |v: &[Shape]| -> Vec<String> {
        let mut ids: Vec<String> = v
            .iter()
            .filter(|s| s.is_event("OriginateResponse"))
            .map(|s| {
                format!(
                    "{} {}",
                    s.get("ActionID").unwrap(),
                    s.get("Response").unwrap()
                )
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&got), ids(&want));
    let want_names: std::collections::BTreeSet<String> =
        want.iter().map(|s| s.first.clone()).collect();
    for s in &got {
        assert!(
            want_names.contains(&s.first),
            "{} is not in the capture",
            s.first
        );
    }
    assert_event_keys_match(&got, &want);
    let ratio = got.len() as f64 / want.len() as f64;
    assert!(
        (0.6..1.4).contains(&ratio),
        "{} events vs {}",
        got.len(),
        want.len()
    );
    assert_eq!(h.sim.stats().calls_active, 0);
}
