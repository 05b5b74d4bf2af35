//! With the `serde` feature, typed events serialise with wire header names and typed values.
#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_proto::Message;
use ami_types::Event;
use serde_json::json;

fn decode(wire: &str) -> Message {
    support::decode(wire.as_bytes())
}

#[test]
fn events_serialise_with_wire_names_and_typed_values() {
    let m = decode(
        "Event: Hangup\r\nPrivilege: call,all\r\nChannel: PJSIP/1-1\r\nChannelState: 6\r\n\
         ChannelStateDesc: Up\r\nCause: 16\r\nCause-txt: Normal Clearing\r\n\r\n",
    );
    let value = serde_json::to_value(Event::from_message(&m)).unwrap();
    assert_eq!(
        value,
        json!({
            "Event": "Hangup", "Privilege": "call,all", "Channel": "PJSIP/1-1",
            "ChannelState": 6, "ChannelStateDesc": "Up", "Cause": 16,
            "Cause-txt": "Normal Clearing",
        })
    );
    let Event::Hangup(h) = Event::from_message(&m) else {
        panic!("not a Hangup")
    };
    assert_eq!(serde_json::to_value(h).unwrap(), value);
}

#[test]
fn repeated_unparsed_and_undeclared_headers_are_serialised_too() {
    let m = decode(
        "Event: Status\r\nChannel: Local/a-1;1\r\nVariable: A=1\r\nVariable: B=2\r\n\
         Seconds: soon\r\nX-Mine: kept\r\n\r\n",
    );
    let value = serde_json::to_value(Event::from_message(&m)).unwrap();
    assert_eq!(value["Variable"], json!(["A=1", "B=2"]));
    assert_eq!(value["Seconds"], json!("soon"));
    assert_eq!(value["X-Mine"], json!("kept"));

    let m = decode("Event: QueueMemberStatus\r\nPaused: 1\r\nInCall: 0\r\n\r\n");
    let value = serde_json::to_value(Event::from_message(&m)).unwrap();
    assert_eq!(value["Paused"], json!(true));
    assert_eq!(value["InCall"], json!(false));
}

#[test]
fn a_value_that_is_not_utf8_keeps_its_bytes_as_ami_json_writes_them() {
    // A Latin-1 caller name from a SIP phone, and two VarSet values differing in one byte:
    // the JSON must keep the bytes (as `ami listen` does), never fold them into U+FFFD.
    let m = support::decode(
        b"Event: Newchannel\r\nChannel: PJSIP/1-1\r\nCallerIDName: Jos\xe9\r\n\r\n",
    );
    let value = serde_json::to_value(Event::from_message(&m)).unwrap();
    assert_eq!(
        value["CallerIDName"],
        json!({"base64": "Sm9z6Q==", "lossy": "Jos\u{fffd}"})
    );
    let varset = |byte: u8| {
        let mut wire =
            b"Event: VarSet\r\nChannel: PJSIP/1-1\r\nVariable: NOTE\r\nValue: O\\'Brien ".to_vec();
        wire.extend_from_slice(&[byte, b'\r', b'\n', b'\r', b'\n']);
        let m = support::decode(&wire);
        serde_json::to_value(Event::from_message(&m)).unwrap()["Value"].clone()
    };
    let (e9, ff) = (varset(0xe9), varset(0xff));
    assert_ne!(e9, ff, "two different values, two different JSON values");
    // The exact bytes as sent; the text as the accessor gives it (escapes undone).
    assert_eq!(e9["lossy"], json!("O'Brien \u{fffd}"));
    assert_eq!(e9["base64"], json!("T1wnQnJpZW4g6Q=="));
}

#[test]
fn keys_that_are_not_utf8_never_repeat_a_json_key() {
    // Two keys that differ only in bytes that are not UTF-8 read the same once made text
    // (a map key must be a string): one key with both values, never the key twice (a
    // strict parser keeps one of the two and the other value is lost).
    let m = support::decode(b"Event: X\r\nK\xff: a\r\nK\xfe: b\r\nk\xff: c\r\n\r\n");
    let text = serde_json::to_string(&Event::from_message(&m)).unwrap();
    assert_eq!(text.matches("\"K\u{fffd}\"").count(), 1, "{text}");
    assert!(!text.contains("\"k\u{fffd}\""), "{text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["K\u{fffd}"], json!(["a", "b", "c"]));
}
