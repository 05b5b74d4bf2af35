//! The JSON schema as exact lines, over messages a real Asterisk 22 sent (and a client sent
//! it): a public contract that jq pipelines and other-language NATS consumers read, so a
//! renamed field, a reordered key or a change of escaping fails here, not in their scripts.
//! Each expected line was written by hand from the capture, not copied from the encoder.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_json::{GapReason, Place, SessionState};
use ami_proto::{Decoder, DecoderLimits, Frame, Message};
use std::path::PathBuf;

/// Every message of a capture: `.raw` (what the server sent, banner first) or `.sent`
/// (what the client sent, no banner).
fn capture(name: &str) -> Vec<Message> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/asterisk-22.10.1")
        .join(name);
    let data = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (is ../shared beside the repository?)",
            path.display()
        )
    });
    decode(&data, name.ends_with(".raw"))
}

fn decode(data: &[u8], banner: bool) -> Vec<Message> {
    let mut d = if banner {
        Decoder::new(DecoderLimits::default())
    } else {
        Decoder::without_banner(DecoderLimits::default())
    };
    let mut rest = data;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let n = d.feed(rest);
        rest = &rest[n..];
        while let Some(frame) = d.decode() {
            match frame {
                Ok(Frame::Message(m)) => out.push(m),
                Ok(Frame::Banner(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    out
}

const PLACE: Place<'static> = Place {
    server: "pbx1",
    session: "b0123456789ab-7",
    position: 42,
};

#[test]
fn a_response_is_written_exactly_so() {
    let login = &capture("login_plain.raw")[0];
    assert_eq!(
        ami_json::message(login),
        r#"{"type":"response","headers":[["Response","Success"],["ActionID","login-1"],["Message","Authentication accepted"]]}"#
    );
    // `ami listen` and `ami action --on` over several servers: the server first.
    assert_eq!(
        ami_json::with_server(&ami_json::message(login), "127.0.0.1:5038"),
        r#"{"server":"127.0.0.1:5038","type":"response","headers":[["Response","Success"],["ActionID","login-1"],["Message","Authentication accepted"]]}"#
    );
}

#[test]
fn an_event_is_written_exactly_so_by_listen_and_by_the_bridge() {
    let booted = &capture("login_plain.raw")[1];
    assert_eq!(
        ami_json::message(booted),
        r#"{"type":"event","headers":[["Event","FullyBooted"],["Privilege","system,all"],["Uptime","3"],["LastReload","3"],["Status","Fully Booted"]]}"#
    );
    assert_eq!(
        ami_json::message_at(&PLACE, booted),
        r#"{"type":"event","server":"pbx1","session":"b0123456789ab-7","position":42,"headers":[["Event","FullyBooted"],["Privilege","system,all"],["Uptime","3"],["LastReload","3"],["Status","Fully Booted"]]}"#
    );
}

#[test]
fn a_list_item_and_the_lists_end_are_written_exactly_so_empty_values_included() {
    let m = capture("coreshowchannels.raw");
    assert_eq!(
        ami_json::message(&m[2]),
        r#"{"type":"event","headers":[["Event","CoreShowChannel"],["ActionID","csc-1"],["Channel","Local/hold@ami-test-00000001;1"],["ChannelState","6"],["ChannelStateDesc","Up"],["CallerIDNum","<unknown>"],["CallerIDName","<unknown>"],["ConnectedLineNum","<unknown>"],["ConnectedLineName","<unknown>"],["Language","en"],["AccountCode",""],["Context","ami-test"],["Exten","hold"],["Priority","1"],["Uniqueid","1795423109.2"],["Linkedid","1795423109.2"],["Application","Wait"],["ApplicationData","60"],["Duration","00:00:00"],["BridgeId",""]]}"#
    );
    let end = m
        .iter()
        .find(|m| m.event() == Some("CoreShowChannelsComplete"))
        .unwrap();
    assert_eq!(
        ami_json::message(end),
        r#"{"type":"event","headers":[["Event","CoreShowChannelsComplete"],["ActionID","csc-1"],["EventList","Complete"],["ListItems","4"]]}"#
    );
}

#[test]
fn a_value_that_is_not_utf8_is_written_exactly_so() {
    // The captured list item with a Latin-1 caller name in place of `<unknown>` (José).
    let raw = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/asterisk-22.10.1/coreshowchannels.raw"),
    )
    .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let start = text.find("Event: CoreShowChannel\r\n").unwrap();
    let len = text[start..].find("\r\n\r\n").unwrap() + 4;
    let item =
        text[start..start + len].replacen("CallerIDName: <unknown>", "CallerIDName: Jos\u{0}", 1);
    let mut wire = item.into_bytes();
    let nul = wire.iter().position(|&b| b == 0).unwrap();
    wire[nul] = 0xe9;
    let m = &decode(&wire, false)[0];
    let line = ami_json::message(m);
    assert!(
        line.contains(r#"["CallerIDNum","<unknown>"],["CallerIDName",{"base64":"Sm9z6Q==","lossy":"Jos�"}],["ConnectedLineNum","<unknown>"]"#),
        "{line}"
    );
    // Only that value changed.
    assert_eq!(
        line.replace(r#"{"base64":"Sm9z6Q==","lossy":"Jos�"}"#, r#""<unknown>""#),
        ami_json::message(&capture("coreshowchannels.raw")[2])
    );
}

#[test]
fn an_actions_secret_and_md5_key_are_written_exactly_as_the_marker() {
    let plain = capture("login_plain.sent");
    assert_eq!(
        ami_json::message(&plain[0]),
        r#"{"type":"action","headers":[["Action","Login"],["ActionID","login-1"],["Username","admin"],["Secret","***"]]}"#
    );
    let md5 = capture("challenge_md5_login.sent");
    assert_eq!(
        ami_json::message(&md5[1]),
        r#"{"type":"action","headers":[["Action","Login"],["ActionID","md5-1"],["AuthType","MD5"],["Username","admin"],["Key","***"],["Events","off"]]}"#
    );
    assert_eq!(
        ami_json::message(&md5[2]),
        r#"{"type":"action","headers":[["Action","Login"],["ActionID","md5-again"],["Username","admin"],["Secret","***"]]}"#
    );
    // What needs no hiding is as sent.
    assert_eq!(
        ami_json::message(&md5[0]),
        r#"{"type":"action","headers":[["Action","Challenge"],["ActionID","ch-1"],["AuthType","MD5"]]}"#
    );
}

/// A session marker's arguments and the line expected of them.
type Marker<'a> = (
    Option<&'a Place<'a>>,
    SessionState,
    &'a [(&'a str, &'a str)],
    &'a str,
);

#[test]
fn session_markers_are_written_exactly_so() {
    use SessionState::*;
    let cases: [Marker<'_>; 6] = [
        (
            None,
            Ready,
            &[("ami_version", "11.0.0")],
            r#"{"type":"session","state":"ready","ami_version":"11.0.0"}"#,
        ),
        (
            None,
            Lost,
            &[("reason", "127.0.0.1:5038 closed the connection")],
            r#"{"type":"session","state":"lost","reason":"127.0.0.1:5038 closed the connection"}"#,
        ),
        (
            Some(&PLACE),
            Ready,
            &[("bridge", "b0123456789ab"), ("ami_version", "11.0.0")],
            r#"{"type":"session","server":"pbx1","session":"b0123456789ab-7","position":42,"state":"ready","bridge":"b0123456789ab","ami_version":"11.0.0"}"#,
        ),
        (
            Some(&PLACE),
            Lost,
            &[("bridge", "b0123456789ab"), ("reason", "eof")],
            r#"{"type":"session","server":"pbx1","session":"b0123456789ab-7","position":42,"state":"lost","bridge":"b0123456789ab","reason":"eof"}"#,
        ),
        (
            Some(&PLACE),
            LeaseAcquired,
            &[
                ("bridge", "b0123456789ab"),
                ("previous_bridge", "b00000000000a"),
            ],
            r#"{"type":"session","server":"pbx1","session":"b0123456789ab-7","position":42,"state":"lease_acquired","bridge":"b0123456789ab","previous_bridge":"b00000000000a"}"#,
        ),
        (
            Some(&PLACE),
            LeaseReleased,
            &[("bridge", "b0123456789ab"), ("reason", "shutdown")],
            r#"{"type":"session","server":"pbx1","session":"b0123456789ab-7","position":42,"state":"lease_released","bridge":"b0123456789ab","reason":"shutdown"}"#,
        ),
    ];
    for (place, state, extra, expected) in cases {
        assert_eq!(ami_json::session(place, state, extra), expected);
    }
}

#[test]
fn gap_markers_are_written_exactly_so() {
    use GapReason::*;
    let cases: [(Option<&Place<'_>>, GapReason, Option<u64>, &str); 6] = [
        (
            None,
            Overflow,
            Some(120),
            r#"{"type":"gap","reason":"overflow","dropped":120}"#,
        ),
        (
            None,
            Discarded,
            Some(1),
            r#"{"type":"gap","reason":"discarded","dropped":1}"#,
        ),
        (
            Some(&PLACE),
            Overflow,
            Some(7),
            r#"{"type":"gap","server":"pbx1","session":"b0123456789ab-7","position":42,"reason":"overflow","dropped":7}"#,
        ),
        (
            Some(&PLACE),
            Disconnected,
            None,
            r#"{"type":"gap","server":"pbx1","session":"b0123456789ab-7","position":42,"reason":"disconnected","dropped":null}"#,
        ),
        (
            Some(&PLACE),
            Takeover,
            None,
            r#"{"type":"gap","server":"pbx1","session":"b0123456789ab-7","position":42,"reason":"takeover","dropped":null}"#,
        ),
        (
            Some(&PLACE),
            Discarded,
            Some(3),
            r#"{"type":"gap","server":"pbx1","session":"b0123456789ab-7","position":42,"reason":"discarded","dropped":3}"#,
        ),
    ];
    for (place, reason, dropped, expected) in cases {
        assert_eq!(ami_json::gap(place, reason, dropped), expected);
    }
}
