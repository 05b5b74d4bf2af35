//! Transcript tests: the client driven by the exact bytes a real Asterisk 22.10.1 sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

mod support;

use ami_proto::{Action, AuthMethod, Client, ClientConfig, DisconnectReason, StreamItem};
use std::time::{Duration, Instant};
use support::{Replay, Step};

fn config(events: &str) -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .events(events)
        .seed(42)
        .build()
        .unwrap()
}

const GAP: Duration = Duration::from_millis(1);

#[test]
fn plain_login_then_logoff_closes_without_reconnect() {
    let now = Instant::now();
    let client = Client::new(config("on"), now);
    let mut r = Replay::new(client, now, "login_plain.sent", vec![Step::Logoff]);
    r.play("login_plain.raw", GAP);
    r.eof();
    assert_eq!(r.record.ready, 1);
    let login = &r.record.written[0];
    assert_eq!(login.get_str("Username"), Some("admin"));
    assert_eq!(login.get_str("Secret"), Some("amp111"));
    assert_eq!(r.record.closed, Some(DisconnectReason::Logoff));
    assert!(
        r.record.disconnected.is_empty(),
        "no reconnect after logoff"
    );
    // FullyBooted and SuccessfulAuth reach the event stream.
    let names: Vec<_> = r
        .record
        .events
        .iter()
        .filter_map(|i| match i {
            StreamItem::Event(m) => m.event().map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["FullyBooted", "SuccessfulAuth"]);
}

#[test]
fn md5_login_computes_the_same_key_as_the_capture() {
    let now = Instant::now();
    let cfg = ClientConfig::builder("admin", "amp111")
        .auth(AuthMethod::Md5)
        .events("call")
        .build()
        .unwrap();
    let client = Client::new(cfg, now);
    let mut r = Replay::new(client, now, "challenge_md5_login.sent", vec![]);
    let raw = support::fixture("challenge_md5_login.raw");
    // Only the banner, the challenge and the login reply: the capture then logs in again.
    let replies = support::messages(&raw, true);
    let banner_end = raw.iter().position(|&b| b == b'\n').unwrap() + 1;
    r.feed(&raw[..banner_end]);
    r.feed(&support::rewrite(&replies[0], &r.map));
    let fixture_key = support::messages(&support::fixture("challenge_md5_login.sent"), false)[1]
        .get_str("Key")
        .unwrap()
        .to_string();
    assert_eq!(
        r.record.written[1].get_str("Key"),
        Some(fixture_key.as_str())
    );
    assert_eq!(
        r.record.written[1].get_str("Secret"),
        None,
        "never sent in clear"
    );
    r.feed(&support::rewrite(&replies[1], &r.map));
    assert_eq!(r.record.ready, 1);
}

#[test]
fn bad_password_is_a_final_typed_outcome() {
    let now = Instant::now();
    let cfg = ClientConfig::builder("admin", "wrong").build().unwrap();
    let client = Client::new(cfg, now);
    let mut r = Replay::new(client, now, "bad_password.sent", vec![]);
    r.play("bad_password.raw", Duration::from_secs(1));
    assert_eq!(
        r.record.closed,
        Some(DisconnectReason::LoginRejected {
            message: "Authentication failed".into()
        })
    );
    assert!(r.client.is_closed());
    assert!(
        r.record.disconnected.is_empty(),
        "no reconnect loop on a bad password"
    );
}

#[test]
fn md5_challenge_refused_is_never_downgraded_to_plain() {
    let now = Instant::now();
    let cfg = ClientConfig::builder("admin", "amp111")
        .auth(AuthMethod::Md5)
        .build()
        .unwrap();
    let mut client = Client::new(cfg, now);
    let _ = client.poll_output();
    client.handle_input(now, ami_proto::Input::Connected);
    client.handle_input(
        now,
        ami_proto::Input::Received(b"Asterisk Call Manager/11.0.0\r\n"),
    );
    let written = support::messages(client.transmit(), false);
    let id = written[0].action_id().unwrap().to_string();
    let reply =
        format!("Response: Error\r\nActionID: {id}\r\nMessage: Must specify AuthType\r\n\r\n");
    client.advance_transmit(client.transmit().len());
    client.handle_input(now, ami_proto::Input::Received(reply.as_bytes()));
    assert!(client.transmit().is_empty(), "no plain Login follows");
    assert!(client.is_closed());
}

#[test]
fn event_lists_are_gathered_into_one_result() {
    let now = Instant::now();
    let client = Client::new(config("off"), now);
    let steps = vec![
        Step::Send(Action::new("CoreShowChannels")),
        Step::Send(Action::new("CoreShowChannels")),
        Step::Logoff,
    ];
    let mut r = Replay::new(client, now, "coreshowchannels.sent", steps);
    r.play("coreshowchannels.raw", GAP);
    for id in r.record.ids.clone() {
        let Ok(resp) = r.outcome(&id) else {
            panic!("list failed: {:?}", r.outcome(&id))
        };
        assert_eq!(resp.items().len(), 4, "4 Local channels were up");
        assert!(resp
            .items()
            .iter()
            .all(|m| m.event() == Some("CoreShowChannel")));
        let complete = resp.complete().unwrap();
        assert_eq!(complete.event(), Some("CoreShowChannelsComplete"));
        assert_eq!(complete.get_str("ListItems"), Some("4"));
    }
    assert!(
        r.record
            .events
            .iter()
            .all(|i| !matches!(i, StreamItem::Event(_) | StreamItem::Gap { .. })),
        "list items never leak into the event stream"
    );
}

#[test]
fn every_message_of_a_transcript_counts_once_and_its_events_and_list_items_as_events() {
    let now = Instant::now();
    let client = Client::new(config("off"), now);
    let steps = vec![
        Step::Send(Action::new("CoreShowChannels")),
        Step::Send(Action::new("CoreShowChannels")),
        Step::Logoff,
    ];
    let mut r = Replay::new(client, now, "coreshowchannels.sent", steps);
    r.play("coreshowchannels.raw", GAP);
    let sent = support::messages(&support::fixture("coreshowchannels.raw"), true);
    let events = sent.iter().filter(|m| m.event().is_some()).count() as u64;
    assert!(
        events > 0 && (events as usize) < sent.len(),
        "responses and events both"
    );
    let stats = r.client.stats();
    assert_eq!(
        stats.messages_in,
        sent.len() as u64,
        "every decoded message"
    );
    assert_eq!(r.client.messages_in(), stats.messages_in);
    assert_eq!(
        stats.events_in, events,
        "list items and their Complete included"
    );
}

#[test]
fn a_failed_command_says_why_in_its_error_not_only_that_output_follows() {
    let now = Instant::now();
    let client = Client::new(config("off"), now);
    let steps = vec![
        Step::Send(Action::new("Command").field("Command", "no such cli command")),
        Step::Send(Action::new("Command").field("Command", "module unload app_dial.so")),
        Step::Send(Action::new("Command")),
        Step::Logoff,
    ];
    let mut r = Replay::new(client, now, "command_errors.sent", steps);
    r.play("command_errors.raw", GAP);
    let texts: Vec<String> = r
        .record
        .ids
        .clone()
        .iter()
        .map(|id| r.outcome(id).as_ref().unwrap_err().to_string())
        .collect();
    assert_eq!(
        texts,
        [
            "server error: No such command 'no such cli command' (type 'core show help no such' for other possible commands)",
            "server error: Command blacklisted",
            "server error: No command provided",
        ]
    );
}

#[test]
fn empty_list_completes_with_no_items() {
    let now = Instant::now();
    let client = Client::new(config("off"), now);
    let steps = vec![Step::Send(Action::new("CoreShowChannels")), Step::Logoff];
    let mut r = Replay::new(client, now, "coreshowchannels_empty.sent", steps);
    r.play("coreshowchannels_empty.raw", GAP);
    let Ok(resp) = r.outcome(&r.record.ids[0]) else {
        panic!()
    };
    assert!(resp.items().is_empty());
    assert_eq!(resp.complete().unwrap().get_str("ListItems"), Some("0"));
}

#[test]
fn async_originate_completes_with_its_originate_response() {
    let now = Instant::now();
    let client = Client::new(config("on"), now);
    let originate = Action::new("Originate")
        .field("Channel", "Local/wait10@ami-test")
        .field("Application", "Wait")
        .field("Data", "3")
        .field("Async", "true")
        .field("Timeout", "10000")
        .field("CallerID", "AMI Test <5551000>")
        .field("Variable", "FOO=bar")
        .field("Variable", "BAZ=qux");
    let steps = vec![Step::Send(originate), Step::Logoff];
    let mut r = Replay::new(client, now, "originate_async.sent", steps);
    r.play("originate_async.raw", GAP);
    let Ok(resp) = r.outcome(&r.record.ids[0]) else {
        panic!("{:?}", r.outcome(&r.record.ids[0]))
    };
    assert_eq!(resp.text(), Some("Originate successfully queued"));
    let follow = resp.follow_up().unwrap();
    assert_eq!(follow.event(), Some("OriginateResponse"));
    assert_eq!(follow.get_str("Reason"), Some("4"));
    // The call's other events are delivered; the OriginateResponse went to the action.
    let names: Vec<_> = r
        .record
        .events
        .iter()
        .filter_map(|i| match i {
            StreamItem::Event(m) => m.event().map(str::to_owned),
            _ => None,
        })
        .collect();
    assert!(names.contains(&"Newchannel".to_string()));
    assert!(!names.contains(&"OriginateResponse".to_string()));
}

#[test]
fn pipelined_actions_each_complete_once_in_order() {
    let now = Instant::now();
    let client = Client::new(config("off"), now);
    let steps = vec![
        Step::Send(Action::new("Ping")),
        Step::Send(Action::new("Ping")),
        Step::Send(Action::new("Ping")),
        Step::Send(Action::new("Command").field("Command", "core show uptime")),
        Step::Send(Action::new("CoreStatus")),
        Step::Logoff,
    ];
    let mut r = Replay::new(client, now, "pipelined.sent", steps);
    r.play("pipelined.raw", GAP);
    let completed: Vec<_> = r
        .record
        .completed
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(completed, r.record.ids);
    for id in &r.record.ids {
        assert!(r.outcome(id).is_ok());
    }
    let Ok(cmd) = r.outcome(&r.record.ids[3]) else {
        panic!()
    };
    assert!(cmd.message().command_output().count() >= 1);
}

#[test]
fn server_shutdown_fails_in_flight_and_schedules_reconnect() {
    let now = Instant::now();
    let client = Client::new(config("on"), now);
    let mut r = Replay::new(client, now, "shutdown.sent", vec![]);
    r.play("shutdown.raw", GAP);
    r.eof();
    assert_eq!(r.record.disconnected, [DisconnectReason::ServerShutdown]);
    assert!(r.record.closed.is_none());
}
