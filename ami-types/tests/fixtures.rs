//! Every event of every real Asterisk 22 capture converts to its typed variant with no field
//! lost (undeclared) and none mistyped (not parsing as its declared type).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::{Decoder, DecoderLimits, Frame, Message, MessageKind};
use ami_types::actions::{
    CoreSettings, CoreSettingsResponse, CoreStatus, CoreStatusResponse, ExtensionState,
    ExtensionStateResponse, Ping, PingResponse, ResponseView, TypedAction,
};
use ami_types::{Event, Reading};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/asterisk-22.10.1")
}

/// Every message of every `.raw` capture, with the capture's name.
fn captured_messages() -> Vec<(String, Message)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixtures at ../shared/fixtures (is ../shared beside the repository?)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "raw"))
        .collect();
    names.sort();
    assert!(names.len() > 30, "only {} captures", names.len());
    let mut out = Vec::new();
    for path in names {
        let data = std::fs::read(&path).unwrap();
        let mut decoder = Decoder::new(DecoderLimits::default());
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = decoder.feed(rest);
            rest = &rest[n..];
            while let Some(frame) = decoder.decode() {
                if let Ok(Frame::Message(m)) = frame {
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    out.push((name, m));
                }
            }
        }
    }
    out
}

/// The event names in the captures: the test fails if one stops being covered or a new one
/// appears untested.
const SEEN: &[&str] = &[
    "AgentCalled",
    "AgentComplete",
    "AgentConnect",
    "BridgeCreate",
    "BridgeDestroy",
    "BridgeEnter",
    "BridgeLeave",
    "Cdr",
    "CoreShowChannel",
    "CoreShowChannelsComplete",
    "DeviceStateChange",
    "DeviceStateListComplete",
    "DialBegin",
    "DialEnd",
    "ExtensionStateListComplete",
    "ExtensionStatus",
    "FullyBooted",
    "Hangup",
    "HangupRequest",
    "LocalBridge",
    "NewCallerid",
    "NewConnectedLine",
    "Newchannel",
    "Newexten",
    "Newstate",
    "OriginateResponse",
    "QueueCallerJoin",
    "QueueCallerLeave",
    "QueueEntry",
    "QueueMember",
    "QueueMemberStatus",
    "QueueParams",
    "QueueStatusComplete",
    "QueueSummary",
    "QueueSummaryComplete",
    "Shutdown",
    "SoftHangupRequest",
    "Status",
    "StatusComplete",
    "SuccessfulAuth",
    "UserEvent",
    "VarSet",
];

#[test]
fn every_captured_event_is_typed_with_no_field_lost_or_mistyped() {
    let messages = captured_messages();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut fields_checked = 0usize;
    for (capture, m) in messages
        .iter()
        .filter(|(_, m)| m.kind() == MessageKind::Event)
    {
        let event = Event::from_message(m);
        let name = m.event().unwrap_or("?").to_string();
        *seen.entry(name.clone()).or_default() += 1;
        let Some(spec) = event.spec() else {
            problems.push(format!("{capture}: {name} is Event::Unknown"));
            continue;
        };
        assert_eq!(event.name(), Some(name.as_str()));
        assert_eq!(
            event.message(),
            m,
            "the typed event keeps the exact message"
        );
        for (field, reading) in event.read_fields() {
            fields_checked += 1;
            match reading {
                Reading::Envelope | Reading::Typed(..) => {}
                Reading::Undeclared if spec.arbitrary_fields => {}
                Reading::Invalid(issue) => problems.push(format!("{capture}: {name}: {issue}")),
                other => problems.push(format!(
                    "{capture}: {name}: {} is {other:?}",
                    field.key_str()
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let names: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(names, SEEN, "event names in the captures");
    let total: usize = seen.values().sum();
    println!(
        "{total} events of {} kinds, {fields_checked} fields: all typed",
        seen.len()
    );
}

#[test]
fn typed_accessors_read_the_captured_values() {
    let messages = captured_messages();
    let mut hangups = 0;
    for (_, m) in &messages {
        match Event::from_message(m) {
            Event::Hangup(h) => {
                hangups += 1;
                assert!(h.cause().is_some(), "{m:?}");
                assert!(h.channel().name().is_some_and(|c| !c.is_empty()));
                assert!(h.channel().state().is_some());
                assert!(h.channel().state_desc().is_some());
            }
            Event::DialBegin(d) => {
                assert!(d.dest().uniqueid().is_some());
                assert_ne!(d.dest().uniqueid(), d.channel().uniqueid());
            }
            Event::QueueMemberStatus(q) => {
                assert!(q.paused().is_some() && q.in_call().is_some());
                assert!(q.status().is_some());
            }
            Event::Status(s) if s.action_id() == Some("st-one") => {
                assert!(s.variable().iter().any(|v| v == "STATUSVAR=abc"), "{m:?}");
            }
            Event::UserEvent(u) if u.user_event() == Some("TestEvent") => {
                let extra: Vec<String> = Event::UserEvent(u)
                    .undeclared_fields()
                    .map(|f| f.key_str().into_owned())
                    .collect();
                assert!(!extra.is_empty(), "the sender's own headers are kept");
            }
            _ => {}
        }
    }
    assert!(hangups > 10, "{hangups} hangups");
}

fn response_with_id(messages: &[(String, Message)], id: &str) -> Message {
    messages
        .iter()
        .map(|(_, m)| m)
        .find(|m| m.kind() == MessageKind::Response && m.action_id() == Some(id))
        .unwrap_or_else(|| panic!("no response {id}"))
        .clone()
}

#[test]
fn captured_responses_read_through_their_typed_views() {
    let messages = captured_messages();

    let m = response_with_id(&messages, "cs-1");
    let cs: CoreSettingsResponse<'_> = ResponseView::from_response(&m);
    assert_eq!(cs.asterisk_version(), Some("22.10.1"));
    assert_eq!(cs.core_max_calls(), Some(2000));
    assert_eq!(cs.core_cdr_enabled(), Some(true));
    assert_eq!(cs.core_real_time_enabled(), Some(false));
    assert!(cs.issues().is_empty(), "{:?}", cs.issues());
    assert_eq!(CoreSettings::NAME, "CoreSettings");

    let m = response_with_id(&messages, "cst-1");
    let st: CoreStatusResponse<'_> = ResponseView::from_response(&m);
    assert_eq!(st.core_processed_calls(), Some(44));
    assert!(st.issues().is_empty());
    assert_eq!(CoreStatus::NAME, "CoreStatus");

    let m = response_with_id(&messages, "ping-1");
    let p: PingResponse<'_> = ResponseView::from_response(&m);
    assert_eq!(p.ping(), Some("Pong"));
    assert!(p.timestamp().is_some());
    assert_eq!(Ping::NAME, "Ping");

    let m = response_with_id(&messages, "es-nohint");
    let es: ExtensionStateResponse<'_> = ResponseView::from_response(&m);
    assert_eq!(es.status(), Some(-1));
    assert_eq!(es.hint(), Some(""));
    assert_eq!(ExtensionState::NAME, "ExtensionState");
}
