//! Property tests over generated events: typed -> `Message` -> typed is the identity, values
//! outside the documented sets are kept, and values that do not parse are reported, not lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_proto::{Decoder, DecoderLimits, Frame, Message};
use ami_types::enums::ChannelStateDesc;
use ami_types::spec::{self, FieldSpec, Kind, MessageSpec};
use ami_types::{Event, FieldValue, Reading};
use proptest::prelude::*;

/// A value as the test generated it, in its typed form.
#[derive(Debug, Clone, PartialEq)]
enum Typed {
    Text(String),
    /// Text Asterisk C-escapes on the wire (`Kind::EscapedText`), in its unescaped form.
    Escaped(String),
    Int(i64),
    Bool(bool),
    Enum(String),
    Other(String),
}

fn wire(spec: &FieldSpec, v: &Typed) -> String {
    match (v, spec.kind) {
        (Typed::Int(n), _) => n.to_string(),
        (Typed::Bool(b), Kind::Bool { yes, no }) => (if *b { yes } else { no }).to_string(),
        (Typed::Text(s) | Typed::Enum(s) | Typed::Other(s), _) => s.clone(),
        (Typed::Escaped(s), _) => escape_c(s),
        (Typed::Bool(_), _) => unreachable!("bool for a non-bool field"),
    }
}

fn typed_of(reading: &Reading<'_>) -> Option<Typed> {
    match reading {
        Reading::Typed(_, FieldValue::Text(s)) => Some(Typed::Text(s.to_string())),
        Reading::Typed(_, v @ FieldValue::Escaped(_)) => {
            Some(Typed::Escaped(v.unescaped()?.into_owned()))
        }
        Reading::Typed(_, FieldValue::Int(n)) => Some(Typed::Int(*n)),
        Reading::Typed(_, FieldValue::Bool(b)) => Some(Typed::Bool(*b)),
        Reading::Typed(_, FieldValue::Enum(s)) => Some(Typed::Enum(s.to_string())),
        Reading::Typed(_, FieldValue::Other(s)) => Some(Typed::Other(s.to_string())),
        _ => None,
    }
}

/// Text as Asterisk sends it: no CR/LF, no leading space (the separator's space is eaten).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[!-~][ -~]{0,20}", "[!-~]é[a-z]{0,3}"]
}

fn value(spec: &'static FieldSpec) -> BoxedStrategy<Typed> {
    match spec.kind {
        Kind::Int => any::<i64>().prop_map(Typed::Int).boxed(),
        Kind::Bool { .. } => any::<bool>().prop_map(Typed::Bool).boxed(),
        Kind::Enum(values) => prop_oneof![
            3 => proptest::sample::select(values).prop_map(|v| Typed::Enum(v.to_string())),
            1 => "[A-Za-z][A-Za-z ]{0,8}"
                .prop_filter("not documented", move |s| !values.contains(&s.as_str()))
                .prop_map(Typed::Other),
        ]
        .boxed(),
        // Names with what Asterisk escapes: quotes, apostrophes, backslashes, tabs, newlines.
        Kind::EscapedText => prop_oneof![text(), "[!-~][ -~\t\n\"'?\\\\]{0,20}"]
            .prop_map(Typed::Escaped)
            .boxed(),
        _ => text().prop_map(Typed::Text).boxed(),
    }
}

/// Asterisk's `ast_escape_c`, as the simulator writes it (independent of the unescaping
/// under test).
fn escape_c(text: &str) -> String {
    String::from_utf8(ami_sim::escape_c(text.as_bytes())).expect("escaping keeps UTF-8")
}

/// An event: its spec, and for each declared field none, one, or (repeatable) several values.
fn event() -> impl Strategy<Value = (&'static MessageSpec, Vec<(&'static FieldSpec, Typed)>)> {
    proptest::sample::select(spec::events().iter().collect::<Vec<_>>()).prop_flat_map(|spec| {
        let fields: Vec<_> = spec
            .fields
            .iter()
            .map(|f| {
                let max = if f.repeatable { 3 } else { 1 };
                proptest::collection::vec(value(f), 0..=max)
                    .prop_map(move |vs| vs.into_iter().map(|v| (f, v)).collect::<Vec<_>>())
            })
            .collect();
        (Just(spec), fields).prop_map(|(spec, per_field)| {
            (spec, per_field.into_iter().flatten().collect::<Vec<_>>())
        })
    })
}

fn decode(wire: &str) -> Message {
    support::decode(wire.as_bytes())
}

/// The wire form of a typed event: what a typed -> `Message` conversion writes.
fn encode(name: &str, fields: &[(&'static FieldSpec, Typed)]) -> String {
    let mut out = format!("Event: {name}\r\nPrivilege: call,all\r\n");
    for (spec, v) in fields {
        out += &format!("{}: {}\r\n", spec.name, wire(spec, v));
    }
    out + "\r\n"
}

/// The typed event read back from `m`, in the same form as generated.
fn read_back(m: &Message) -> Vec<(&'static FieldSpec, Typed)> {
    Event::from_message(m)
        .read_fields()
        .filter_map(|(_, r)| match r {
            Reading::Typed(spec, _) => Some((spec, typed_of(&r)?)),
            Reading::Envelope => None,
            other => panic!("{other:?} in {m:?}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn typed_to_message_to_typed_is_the_identity((spec, fields) in event()) {
        let m = decode(&encode(spec.name, &fields));
        let typed = Event::from_message(&m);
        prop_assert_eq!(typed.spec(), Some(spec));
        prop_assert!(typed.issues().is_empty(), "{:?}", typed.issues());
        let back = read_back(&m);
        prop_assert_eq!(&back, &fields);
        // Typed -> Message: the exact message, and re-encoding the typed values gives it too.
        prop_assert_eq!(typed.message(), &m);
        let again = decode(&encode(spec.name, &back));
        prop_assert_eq!(&again, &m);
        prop_assert_eq!(read_back(&again), fields);
    }

    #[test]
    fn values_that_do_not_parse_are_reported_and_kept(
        spec in proptest::sample::select(spec::events().iter().collect::<Vec<_>>()),
        junk in "[a-z]{1,6}",
    ) {
        let Some(field) = spec.fields.iter().find(|f| matches!(f.kind, Kind::Int)) else {
            return Ok(());
        };
        let m = decode(&format!("Event: {}\r\n{}: {junk}\r\n\r\n", spec.name, field.name));
        let typed = Event::from_message(&m);
        let issues = typed.issues();
        prop_assert_eq!(issues.len(), 1);
        prop_assert_eq!(issues[0].spec, field);
        prop_assert_eq!(issues[0].raw.as_str(), Some(junk.as_str()));
        prop_assert_eq!(m.get_str(field.name), Some(junk.as_str()));
    }
}

#[test]
fn undocumented_enum_values_are_kept_in_other() {
    let m = decode(
        // What `ast_state2str` prints for a state it has no name for.
        "Event: Newstate\r\nChannel: PJSIP/1-1\r\nChannelState: 12\r\nChannelStateDesc: Unknown (12)\r\n\r\n",
    );
    let Event::Newstate(n) = Event::from_message(&m) else {
        panic!("not a Newstate")
    };
    assert_eq!(n.channel().state(), Some(12));
    let desc = n.channel().state_desc();
    assert_eq!(desc, Some(ChannelStateDesc::Other("Unknown (12)".into())));
    assert_eq!(desc.map(|d| d.to_string()), Some("Unknown (12)".into()));
    assert_eq!(
        ChannelStateDesc::from("Dialing Offhook"),
        ChannelStateDesc::DialingOffhook
    );
    assert!(n.issues().is_empty());
}

#[test]
fn event_names_match_ignoring_case_and_unknown_events_are_kept() {
    let m = decode("Event: NEWEXTEN\r\nExtension: 100\r\n\r\n");
    let Event::Newexten(e) = Event::from_message(&m) else {
        panic!("not a Newexten")
    };
    assert_eq!(e.extension(), Some("100"));

    let m = decode("Event: FromTheFuture\r\nFoo: bar\r\n\r\n");
    let ev = Event::from_message(&m);
    assert_eq!(ev, Event::Unknown(&m));
    assert_eq!(ev.name(), Some("FromTheFuture"));
    assert_eq!(ev.undeclared_fields().count(), 1);

    let m = decode("Response: Success\r\nPing: Pong\r\n\r\n");
    assert_eq!(Event::from_message(&m), Event::Unknown(&m));
}

#[test]
fn non_utf8_text_is_reported_and_kept_as_bytes() {
    let mut wire = b"Event: Newchannel\r\nCallerIDName: Jos".to_vec();
    wire.extend_from_slice(&[0xe9]); // Latin-1 e-acute
    wire.extend_from_slice(b"\r\n\r\n");
    let mut decoder = Decoder::without_banner(DecoderLimits::default());
    decoder.feed(&wire);
    let Some(Ok(Frame::Message(m))) = decoder.decode() else {
        panic!("no message")
    };
    let Event::Newchannel(n) = Event::from_message(&m) else {
        panic!("not a Newchannel")
    };
    assert_eq!(n.channel().caller_id_name(), None);
    let issues = n.issues();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].raw.as_bytes(), b"Jos\xe9");
}

#[test]
fn fields_in_any_order_are_read_through_their_declared_types() {
    let m = decode(
        "Event: QueueMemberStatus\r\nPaused: 1\r\nWrapuptime: 5\r\nActionID: x\r\nQueue: q\r\n\
         Paused: 0\r\nInCall: 1\r\nMembership: static\r\n\r\n",
    );
    let readings: Vec<_> = Event::from_message(&m).read_fields().collect();
    assert_eq!(readings.len(), 8);
    assert!(matches!(readings[0].1, Reading::Envelope));
    assert!(
        matches!(readings[3].1, Reading::Envelope),
        "ActionID anywhere"
    );
    let typed: Vec<_> = readings.iter().filter_map(|(_, r)| typed_of(r)).collect();
    assert_eq!(
        typed,
        [
            Typed::Bool(true),
            Typed::Int(5),
            Typed::Text("q".into()),
            Typed::Bool(false),
            Typed::Bool(true),
            Typed::Enum("static".into()),
        ]
    );
}

#[test]
fn repeated_fields_keep_one_element_per_header_when_a_value_is_not_utf8_shown_lossy() {
    use ami_types::actions::{CommandResponse, ResponseView};
    use std::borrow::Cow;

    // A Latin-1 line in the middle: the lines after it keep their positions.
    let m = support::decode(
        b"Response: Success\r\nMessage: Command output follows\r\nOutput: line 1\r\n\
          Output: Jos\xe9\r\nOutput: line 3\r\n\r\n",
    );
    let command = CommandResponse::from_response(&m);
    assert_eq!(
        command.output(),
        ["line 1", "Jos\u{fffd}", "line 3"],
        "one element per Output header, the Latin-1 one shown lossy"
    );
    let issues = command.issues();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].raw.as_bytes(), b"Jos\xe9");

    let m = support::decode(
        b"Event: Status\r\nChannel: PJSIP/1-1\r\nVariable: A=\xe9\r\nVariable: B=2\r\n\r\n",
    );
    let Event::Status(status) = Event::from_message(&m) else {
        panic!("not a Status")
    };
    assert_eq!(status.variable(), ["A=\u{fffd}", "B=2"]);
    assert_eq!(status.issues().len(), 1);

    // C-escaped lists too (the channel block's `ChanVariable`).
    let m = support::decode(
        b"Event: Newchannel\r\nChannel: PJSIP/1-1\r\nChanVariable: A=\xe9\r\n\
          ChanVariable: B=O\\'Brien\r\n\r\n",
    );
    let Event::Newchannel(n) = Event::from_message(&m) else {
        panic!("not a Newchannel")
    };
    assert_eq!(
        n.channel().chan_variables(),
        [Cow::from("A=\u{fffd}"), Cow::from("B=O'Brien")]
    );
    assert_eq!(n.issues().len(), 1);
}
