//! Property tests for the wire layer: split invariance, encode/decode round trips, refused
//! injections, bounded memory on hostile input, and resynchronisation after garbage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

use ami_proto::{
    Action, ActionId, DecodeError, Decoder, DecoderLimits, EncodeError, Frame, Message, MessageKind,
};
use proptest::prelude::*;
use proptest::sample::Index;
use std::sync::OnceLock;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/asterisk-22.10.1/"
);

type Decoded = Vec<Result<Frame, DecodeError>>;

/// Every fixture but the 300 KB event stream: (name, expects a banner, bytes).
fn fixtures() -> &'static [(String, bool, Vec<u8>)] {
    static FIXTURE_BYTES: OnceLock<Vec<(String, bool, Vec<u8>)>> = OnceLock::new();
    FIXTURE_BYTES.get_or_init(|| {
        let mut out: Vec<(String, bool, Vec<u8>)> = std::fs::read_dir(FIXTURES)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "event_stream_20s.raw")
            .filter_map(|n| {
                let banner = if n.ends_with(".raw") {
                    true
                } else if n.ends_with(".sent") {
                    false
                } else {
                    return None;
                };
                let bytes = std::fs::read(format!("{FIXTURES}{n}")).unwrap();
                Some((n, banner, bytes))
            })
            .collect();
        out.sort();
        assert!(out.len() > 40, "fixtures missing from {FIXTURES}");
        out
    })
}

fn decoder(banner: bool, limits: DecoderLimits) -> Decoder {
    if banner {
        Decoder::new(limits)
    } else {
        Decoder::without_banner(limits)
    }
}

/// Feeds each piece in turn, draining after every feed, and checks the loop makes progress.
fn decode_pieces<'a>(d: &mut Decoder, pieces: impl IntoIterator<Item = &'a [u8]>) -> Decoded {
    let mut out = Vec::new();
    for piece in pieces {
        let mut rest = piece;
        while !rest.is_empty() {
            let taken = d.feed(rest);
            rest = &rest[taken..];
            while let Some(frame) = d.decode() {
                out.push(frame);
            }
            assert!(taken > 0 || d.room() > 0, "feed/decode made no progress");
        }
    }
    out
}

fn decode_whole(d: &mut Decoder, input: &[u8]) -> Decoded {
    decode_pieces(d, [input])
}

/// Cuts `input` at the given points (any order, duplicates allowed).
fn split_at_points<'a>(input: &'a [u8], points: &[Index]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|i| i.index(input.len() + 1)).collect();
    cuts.push(0);
    cuts.push(input.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

fn small_limits() -> impl Strategy<Value = DecoderLimits> {
    (1usize..64, 0usize..256, 1usize..10, 2usize..64).prop_map(|(line, extra, fields, slack)| {
        DecoderLimits::builder()
            .max_line_len(line)
            .max_message_len(line + extra)
            .max_fields(fields)
            .buffer_cap(line + extra + slack)
            .build()
            .unwrap()
    })
}

// ---------------------------------------------------------------------------------------------
// Generated well-formed server streams, with a model of what they must decode to.

/// One generated message: its wire bytes and the fields it must decode to (an empty key is a
/// raw line of legacy Command output).
#[derive(Debug, Clone)]
struct GenMessage {
    /// The message's bytes, as `Message::wire_bytes` must return them.
    wire: Vec<u8>,
    /// Bytes sent after the message that are not part of it (a stray blank line).
    trailer: &'static [u8],
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

fn line_end() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![3 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..])]
}

/// Any byte but CR and LF (NUL, non-UTF-8 and colons included).
fn value_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_map(|b| if b == b'\r' || b == b'\n' { b'_' } else { b }),
        0..max,
    )
}

fn header_message() -> impl Strategy<Value = GenMessage> {
    let first = prop_oneof![
        "[A-Za-z]{1,20}".prop_map(|e| (b"Event".to_vec(), e.into_bytes())),
        prop::sample::select(vec!["Success", "Error", "Goodbye"])
            .prop_map(|r| (b"Response".to_vec(), r.as_bytes().to_vec())),
    ];
    let field = (
        "[A-Za-z][A-Za-z0-9_()/-]{0,15}".prop_map(String::into_bytes),
        value_bytes(40),
        line_end(),
    );
    (
        first,
        line_end(),
        prop::collection::vec(field, 0..8),
        line_end(),
    )
        .prop_map(|((k, v), first_end, fields, end)| {
            let mut wire = Vec::new();
            let mut model = Vec::new();
            for (key, value, eol) in std::iter::once((k, v, first_end)).chain(fields) {
                wire.extend_from_slice(&key);
                wire.extend_from_slice(b": ");
                wire.extend_from_slice(&value);
                wire.extend_from_slice(eol);
                model.push((key, value));
            }
            wire.extend_from_slice(end);
            GenMessage {
                wire,
                trailer: b"",
                fields: model,
            }
        })
}

/// A legacy (Asterisk 13) `Response: Follows` Command reply with raw LF-ended body lines.
fn legacy_follows_message() -> impl Strategy<Value = GenMessage> {
    let body_line = "[A-Za-z0-9 :=.'-]{0,30}".prop_filter("not a header or terminator", |l| {
        let lower = l.to_ascii_lowercase();
        !lower.starts_with("actionid:")
            && !lower.starts_with("privilege:")
            && !l.contains("--END COMMAND--")
    });
    (
        prop::option::of("[a-z0-9-]{1,12}"),
        prop::collection::vec(body_line, 0..6),
    )
        .prop_map(|(id, body)| {
            let mut wire = b"Response: Follows\r\nPrivilege: Command\r\n".to_vec();
            let mut fields = vec![
                (b"Response".to_vec(), b"Follows".to_vec()),
                (b"Privilege".to_vec(), b"Command".to_vec()),
            ];
            if let Some(id) = id {
                wire.extend_from_slice(format!("ActionID: {id}\r\n").as_bytes());
                fields.push((b"ActionID".to_vec(), id.into_bytes()));
            }
            for line in body {
                wire.extend_from_slice(line.as_bytes());
                wire.push(b'\n');
                fields.push((Vec::new(), line.into_bytes()));
            }
            // The message ends with the `--END COMMAND--` line; the empty line Asterisk 13
            // sends after it is a stray blank line.
            wire.extend_from_slice(b"--END COMMAND--\r\n");
            GenMessage {
                wire,
                trailer: b"\r\n",
                fields,
            }
        })
}

/// A stream of messages, optionally after a banner, with stray blank lines between messages.
fn generated_stream() -> impl Strategy<Value = (bool, Vec<u8>, Vec<GenMessage>)> {
    let item = (
        prop::collection::vec(line_end(), 0..3),
        prop_oneof![6 => header_message(), 1 => legacy_follows_message()],
    );
    (any::<bool>(), prop::collection::vec(item, 0..8)).prop_map(|(banner, items)| {
        let mut wire = Vec::new();
        if banner {
            wire.extend_from_slice(b"Asterisk Call Manager/11.0.0\r\n");
        }
        let mut messages = Vec::new();
        for (blank_lines, message) in items {
            for blank in blank_lines {
                wire.extend_from_slice(blank);
            }
            wire.extend_from_slice(&message.wire);
            wire.extend_from_slice(message.trailer);
            messages.push(message);
        }
        (banner, wire, messages)
    })
}

fn fields_of(m: &Message) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.fields()
        .map(|f| (f.key.to_vec(), f.value.as_bytes().to_vec()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Actions.

/// Names Asterisk can find: printable ASCII without blanks (it keeps a value's trailing
/// blanks, so `Ping ` is an unknown command).
fn action_name() -> impl Strategy<Value = String> {
    "[!-9;-~]{1,24}"
}

fn field_name() -> impl Strategy<Value = String> {
    "[!-9;-~]{1,16}"
}

/// Values with any character but CR, LF and NUL: unicode, colons and leading spaces included.
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\r\n\u{0}]{0,24}",
        "[ :]{0,4}[^\r\n\u{0}]{0,12}[ :]{0,3}",
        "[ -~]{0,40}",
    ]
}

fn action_id() -> impl Strategy<Value = Option<ActionId>> {
    prop::option::of("[!-~]{1,64}".prop_map(|s| ActionId::new(&s).unwrap()))
}

fn valid_action() -> impl Strategy<Value = Action> {
    (
        action_name(),
        prop::collection::vec((field_name(), field_value()), 0..12),
    )
        .prop_map(|(name, fields)| {
            let mut action = Action::new(name);
            for (k, v) in fields {
                action.push(k, v);
            }
            action
        })
}

/// Inserts `byte` (ASCII) into `s` before the character at `at`.
fn insert_at_char(s: &str, at: Index, byte: u8) -> String {
    let boundaries: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
    let pos = boundaries[at.index(boundaries.len())];
    let mut out = String::with_capacity(s.len() + 1);
    out.push_str(&s[..pos]);
    out.push(char::from(byte));
    out.push_str(&s[pos..]);
    out
}

#[derive(Debug, Clone)]
enum Defect {
    /// A CR, LF or NUL inside one field value.
    Value { field: Index, at: Index, byte: u8 },
    /// A CR, LF or NUL inside the action name.
    ActionName { at: Index, byte: u8 },
    /// A field name that is empty, has a colon, whitespace, a control byte or non-ASCII.
    FieldName { field: Index, name: String },
    /// An empty action name.
    EmptyActionName,
    /// A blank (space, tab, no-break space) or a control byte other than CR, LF and NUL
    /// inside the action name.
    ActionNameBlank { at: Index, blank: char },
}

fn forbidden_byte() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![b'\r', b'\n', 0u8])
}

fn defect() -> impl Strategy<Value = Defect> {
    let bad_name = prop_oneof![
        Just(String::new()),
        "[!-9;-~]{0,6}:[!-~]{0,6}",
        "[!-9;-~]{0,6}[ \t\r\n\u{0}\u{7f}][!-9;-~]{0,6}",
        "[!-9;-~]{0,4}[é€😀\u{a0}][!-9;-~]{0,4}",
    ];
    prop_oneof![
        3 => (any::<Index>(), any::<Index>(), forbidden_byte())
            .prop_map(|(field, at, byte)| Defect::Value { field, at, byte }),
        1 => (any::<Index>(), forbidden_byte())
            .prop_map(|(at, byte)| Defect::ActionName { at, byte }),
        2 => (any::<Index>(), bad_name).prop_map(|(field, name)| Defect::FieldName { field, name }),
        1 => Just(Defect::EmptyActionName),
        1 => (any::<Index>(), prop::sample::select(vec![' ', '\t', '\u{a0}', '\u{7f}', '\u{1b}']))
            .prop_map(|(at, blank)| Defect::ActionNameBlank { at, blank }),
    ]
}

/// Builds an action with exactly one defect and the error that defect must produce.
fn defective_action(
    name: String,
    mut fields: Vec<(String, String)>,
    defect: &Defect,
) -> (Action, EncodeError) {
    let mut name = name;
    let expected = match defect {
        Defect::Value { field, at, byte } => {
            let i = field.index(fields.len());
            fields[i].1 = insert_at_char(&fields[i].1, *at, *byte);
            EncodeError::ForbiddenByte {
                name: fields[i].0.clone(),
                byte: *byte,
            }
        }
        Defect::ActionName { at, byte } => {
            name = insert_at_char(&name, *at, *byte);
            EncodeError::ForbiddenByte {
                name: "Action".to_string(),
                byte: *byte,
            }
        }
        Defect::FieldName { field, name: bad } => {
            let i = field.index(fields.len());
            fields[i].0 = bad.clone();
            EncodeError::InvalidName {
                name: bad.escape_debug().to_string(),
            }
        }
        Defect::EmptyActionName => {
            name.clear();
            EncodeError::EmptyName
        }
        Defect::ActionNameBlank { at, blank } => {
            let boundaries: Vec<usize> = name
                .char_indices()
                .map(|(i, _)| i)
                .chain([name.len()])
                .collect();
            name.insert(boundaries[at.index(boundaries.len())], *blank);
            EncodeError::InvalidActionName {
                name: name.escape_debug().to_string(),
            }
        }
    };
    let mut action = Action::new(name);
    for (k, v) in fields {
        action.push(k, v);
    }
    (action, expected)
}

// ---------------------------------------------------------------------------------------------
// Hostile input.

fn hostile_segment(with_follows: bool) -> BoxedStrategy<Vec<u8>> {
    let mut choices: Vec<BoxedStrategy<Vec<u8>>> = vec![
        prop::collection::vec(any::<u8>(), 0..64).boxed(),
        (0usize..700).prop_map(|n| vec![b'x'; n]).boxed(),
        (0usize..40).prop_map(|n| b"\r\n".repeat(n)).boxed(),
        (0usize..40).prop_map(|n| vec![b'\n'; n]).boxed(),
        (0usize..20).prop_map(|n| vec![b'\r'; n]).boxed(),
        (0usize..120).prop_map(|n| vec![b':'; n]).boxed(),
        "([A-Za-z]{1,6}: ?[ -~]{0,30}\r?\n){1,12}"
            .prop_map(String::into_bytes)
            .boxed(),
        Just(b"Event: X\r\n".to_vec()).boxed(),
        Just(b"Asterisk Call Manager/11.0.0\r\n".to_vec()).boxed(),
        Just(b"--END COMMAND--\r\n".to_vec()).boxed(),
    ];
    if with_follows {
        choices.push(Just(b"Response: Follows\r\nPrivilege: Command\r\n".to_vec()).boxed());
    }
    prop::strategy::Union::new(choices).boxed()
}

fn hostile_bytes(with_follows: bool) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(hostile_segment(with_follows), 0..16).prop_map(|s| s.concat())
}

/// Small limits with room for the resync probe message.
fn resync_limits() -> impl Strategy<Value = DecoderLimits> {
    small_limits().prop_filter("room for the probe message", |l| {
        l.max_line_len() >= 16 && l.max_message_len() >= 32 && l.max_fields() >= 2
    })
}

/// Hostile bytes without a legacy `Response: Follows`, whose raw body would legitimately
/// swallow the empty line that resynchronises the decoder.
fn resync_garbage() -> impl Strategy<Value = Vec<u8>> {
    hostile_bytes(false).prop_filter("no legacy Follows", |g| {
        !g.to_ascii_lowercase().windows(7).any(|w| w == b"follows")
    })
}

/// A message whose lines total exactly `max_message_len` bytes, without the CRLF of its last
/// line (the caller's `\r\n\r\n` completes it and then closes it, one CRLF too many).
/// Falls back to no bytes when the limits cannot hold such a message.
fn almost_full_message(limits: &DecoderLimits) -> Vec<u8> {
    let first = b"Event: Fill\r\n";
    let max_line = limits.max_line_len() + 2;
    let Some(rest) = limits.max_message_len().checked_sub(first.len()) else {
        return Vec::new();
    };
    let lines = rest.div_ceil(max_line).max(1);
    if rest < 5 * lines || 1 + lines > limits.max_fields() {
        return Vec::new();
    }
    let mut out = first.to_vec();
    for i in 0..lines {
        let len = rest / lines + usize::from(i < rest % lines);
        out.extend_from_slice(b"F: ");
        out.extend(std::iter::repeat_n(b'x', len - 5));
        out.extend_from_slice(b"\r\n");
    }
    assert_eq!(out.len(), limits.max_message_len());
    out.truncate(out.len() - 2);
    out
}

/// Checks that a yielded frame respects the limits it was decoded under.
fn check_frame_within_limits(frame: &Result<Frame, DecodeError>, limits: &DecoderLimits) {
    match frame {
        Ok(Frame::Message(m)) => {
            assert!(!m.is_empty(), "an empty message was yielded");
            assert!(m.len() <= limits.max_fields(), "{} fields", m.len());
            assert!(
                m.wire_bytes().len() <= limits.max_message_len(),
                "{}-byte message",
                m.wire_bytes().len()
            );
            for f in m.fields() {
                assert!(
                    f.key.len() + f.value.as_bytes().len() <= limits.max_line_len(),
                    "field longer than a line"
                );
                assert!(!f.key.contains(&b'\n') && !f.value.as_bytes().contains(&b'\n'));
            }
        }
        Ok(Frame::Banner(b)) => {
            assert!(b.as_bytes().len() <= limits.max_line_len());
            assert!(!b.as_bytes().contains(&b'\n'));
        }
        Err(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Keep failures in the output only: no regression files next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// (a) Any split of a recorded fixture decodes exactly like the whole stream.
    #[test]
    fn any_split_of_a_fixture_decodes_like_the_whole_stream(
        which in any::<Index>(),
        points in prop::collection::vec(any::<Index>(), 0..24),
    ) {
        let (name, banner, bytes) = &fixtures()[which.index(fixtures().len())];
        let mut whole = decoder(*banner, DecoderLimits::default());
        let expected = decode_whole(&mut whole, bytes);
        let mut split = decoder(*banner, DecoderLimits::default());
        let got = decode_pieces(&mut split, split_at_points(bytes, &points));
        prop_assert!(got == expected, "{}: split decode differs", name);
        prop_assert_eq!(split.stats(), whole.stats());
        prop_assert_eq!(split.buffered(), 0);
    }

    /// (a) Any split of a generated well-formed stream decodes like the whole stream, and both
    /// give back exactly the generated messages and fields.
    #[test]
    fn any_split_of_generated_messages_decodes_to_the_same_messages(
        (banner, wire, messages) in generated_stream(),
        points in prop::collection::vec(any::<Index>(), 0..24),
    ) {
        let mut whole = decoder(banner, DecoderLimits::default());
        let expected = decode_whole(&mut whole, &wire);
        let mut split = decoder(banner, DecoderLimits::default());
        let got = decode_pieces(&mut split, split_at_points(&wire, &points));
        prop_assert!(got == expected, "split decode differs");
        prop_assert_eq!(split.stats(), whole.stats());

        let mut frames = expected.into_iter();
        if banner {
            match frames.next() {
                Some(Ok(Frame::Banner(b))) => prop_assert_eq!(b.version(), Some("11.0.0")),
                other => panic!("expected the banner, got {other:?}"),
            }
        }
        let decoded: Vec<Message> = frames
            .map(|f| match f {
                Ok(Frame::Message(m)) => m,
                other => panic!("expected a message, got {other:?}"),
            })
            .collect();
        prop_assert_eq!(decoded.len(), messages.len());
        for (m, want) in decoded.iter().zip(&messages) {
            prop_assert_eq!(fields_of(m), want.fields.clone());
            prop_assert_eq!(m.wire_bytes(), &want.wire[..]);
        }
        prop_assert_eq!(whole.buffered(), 0);
    }

    /// (b) Encoding then decoding (server side) gives back the same action.
    #[test]
    fn encoded_action_decodes_to_the_same_name_action_id_and_fields(
        action in valid_action(),
        id in action_id(),
        points in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        let mut wire = b"prefix".to_vec();
        let written = action.encode(id.as_ref(), &mut wire).unwrap();
        let wire = wire.split_off(6);
        prop_assert_eq!(written, wire.len());
        prop_assert_eq!(action.validate(id.as_ref()), Ok(written));

        let mut d = Decoder::without_banner(DecoderLimits::default());
        let frames = decode_pieces(&mut d, split_at_points(&wire, &points));
        prop_assert_eq!(frames.len(), 1);
        let Ok(Frame::Message(m)) = &frames[0] else {
            panic!("expected a message, got {frames:?}");
        };
        prop_assert_eq!(m.kind(), MessageKind::Action);
        prop_assert_eq!(m.action(), Some(action.name()));
        prop_assert_eq!(m.wire_bytes(), &wire[..]);

        let mut fields = m.fields();
        let first = fields.next().unwrap();
        prop_assert_eq!(first.key, b"Action");
        if let Some(id) = &id {
            let second = fields.next().unwrap();
            prop_assert_eq!(second.key, b"ActionID");
            prop_assert_eq!(second.value.as_str(), Some(id.as_str()));
            prop_assert_eq!(m.action_id(), Some(id.as_str()));
        }
        let rest: Vec<(String, String)> = fields
            .map(|f| (f.key_str().into_owned(), f.value.as_str().unwrap().to_string()))
            .collect();
        let want: Vec<(String, String)> = action
            .fields()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        prop_assert_eq!(rest, want);
        prop_assert_eq!(d.buffered(), 0);
        prop_assert_eq!(d.stats().stray_blank_lines, 0);
    }

    /// (c) A CR, LF or NUL in a value or the action name, or a bad field name, is refused with
    /// the matching typed error, and nothing is written.
    #[test]
    fn action_with_a_forbidden_byte_or_bad_name_fails_encode_and_writes_nothing(
        name in action_name(),
        fields in prop::collection::vec((field_name(), field_value()), 1..8),
        defect in defect(),
        id in action_id(),
        prefix in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let (action, expected) = defective_action(name, fields, &defect);
        let mut out = prefix.clone();
        let err = action.encode(id.as_ref(), &mut out).unwrap_err();
        prop_assert_eq!(&err, &expected);
        prop_assert_eq!(out, prefix);
        prop_assert_eq!(action.validate(id.as_ref()), Err(expected));
    }

    /// (c) Whatever strings an action is built from, if it encodes at all it is exactly one
    /// message on the wire: nothing can smuggle a line break or a second action.
    #[test]
    fn any_action_that_encodes_is_exactly_one_message_on_the_wire(
        name in prop_oneof![any::<String>(), "[a-z\r\n\u{0}: ]{0,8}"],
        fields in prop::collection::vec(
            (
                prop_oneof![any::<String>(), "[A-Za-z:\r\n ]{0,8}"],
                prop_oneof![any::<String>(), "[a-z\r\n\u{0}: ]{0,8}"],
            ),
            0..6,
        ),
        id in action_id(),
    ) {
        let mut action = Action::new(name);
        for (k, v) in fields {
            action.push(k, v);
        }
        let mut out = Vec::new();
        match action.encode(id.as_ref(), &mut out) {
            Err(_) => prop_assert!(out.is_empty()),
            Ok(n) => {
                prop_assert_eq!(n, out.len());
                let mut d = Decoder::without_banner(DecoderLimits::default());
                let frames = decode_whole(&mut d, &out);
                prop_assert_eq!(frames.len(), 1);
                let Ok(Frame::Message(m)) = &frames[0] else {
                    panic!("expected a message, got {frames:?}");
                };
                prop_assert_eq!(m.kind(), MessageKind::Action);
                prop_assert_eq!(m.action(), Some(action.name()));
                prop_assert_eq!(m.len(), 1 + usize::from(id.is_some()) + action.fields().len());
            }
        }
    }

    /// (d) Arbitrary bytes under small limits: no panic, the buffer never exceeds its cap, the
    /// feed/decode loop always makes progress, and every frame respects the limits.
    #[test]
    fn hostile_bytes_never_panic_never_exceed_the_cap_and_always_progress(
        input in hostile_bytes(true),
        limits in small_limits(),
        banner in any::<bool>(),
        sizes in prop::collection::vec(1usize..400, 1..8),
    ) {
        let cap = limits.buffer_cap();
        let mut d = decoder(banner, limits);
        let mut pos = 0;
        let mut fed = 0u64;
        let mut frames = 0usize;
        let mut banners = 0usize;
        let mut stalls = 0;
        let mut turn = 0;
        while pos < input.len() {
            let size = sizes[turn % sizes.len()];
            turn += 1;
            let end = input.len().min(pos + size);
            let room_before = d.room();
            let taken = d.feed(&input[pos..end]);
            prop_assert!(d.buffered() <= cap);
            prop_assert_eq!(taken, (end - pos).min(room_before));
            pos += taken;
            fed += taken as u64;
            while let Some(frame) = d.decode() {
                prop_assert!(d.buffered() <= cap);
                check_frame_within_limits(&frame, &limits);
                if matches!(frame, Ok(Frame::Banner(_))) {
                    banners += 1;
                }
                frames += 1;
                prop_assert!(frames <= input.len(), "more frames than bytes");
            }
            prop_assert!(d.buffered() <= cap);
            prop_assert!(d.room() > 0, "no room after a full drain");
            if taken == 0 {
                stalls += 1;
                prop_assert!(stalls < 2, "feed took nothing twice in a row");
            } else {
                stalls = 0;
            }
        }
        prop_assert_eq!(d.stats().bytes, fed);
        prop_assert_eq!(fed, input.len() as u64);
        prop_assert!(banners <= usize::from(banner));
    }

    /// (e) After arbitrary garbage, an empty line and then a valid message, that message is
    /// decoded (garbage never contains a legacy `Response: Follows`, whose raw body would
    /// legitimately swallow the empty line). The stream arrives in one read: the buffer cap is
    /// raised to hold it, the line, message and field limits stay small. (Reads split anywhere
    /// are the ignored `..._however_split` property below.)
    #[test]
    fn garbage_then_an_empty_line_then_a_valid_message_resynchronises(
        garbage in resync_garbage(),
        limits in resync_limits(),
    ) {
        let probe = b"Event: Resync\r\nSeq: 42\r\n\r\n";
        let mut wire = garbage.clone();
        wire.extend_from_slice(b"\r\n\r\n");
        wire.extend_from_slice(probe);
        let limits = DecoderLimits::builder()
            .max_line_len(limits.max_line_len())
            .max_message_len(limits.max_message_len())
            .max_fields(limits.max_fields())
            .buffer_cap(limits.buffer_cap().max(wire.len()))
            .build()
            .unwrap();
        let mut d = Decoder::without_banner(limits);
        prop_assert_eq!(d.feed(&wire), wire.len());
        let frames: Decoded = std::iter::from_fn(|| d.decode()).collect();
        let last = frames.last().expect("no frame at all");
        let Ok(Frame::Message(m)) = last else {
            panic!("last frame is not a message: {last:?}");
        };
        prop_assert_eq!(m.event(), Some("Resync"));
        prop_assert_eq!(m.get_str("Seq"), Some("42"));
        prop_assert_eq!(m.wire_bytes(), &probe[..]);
        prop_assert_eq!(d.buffered(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// (a) under small limits: any two ways of splitting arbitrary bytes decode identically,
    /// errors and counters included.
    #[test]
        fn any_split_of_hostile_bytes_under_small_limits_decodes_like_the_whole_stream(
        input in hostile_bytes(true),
        limits in small_limits(),
        banner in any::<bool>(),
        points in prop::collection::vec(any::<Index>(), 0..32),
    ) {
        let mut whole = decoder(banner, limits);
        let expected = decode_whole(&mut whole, &input);
        let mut split = decoder(banner, limits);
        let got = decode_pieces(&mut split, split_at_points(&input, &points));
        prop_assert_eq!(got, expected);
        // A lone CR may legitimately wait in the buffer (it may start an empty line): count
        // what is still buffered with what was discarded.
        let (mut a, mut b) = (split.stats(), whole.stats());
        a.discarded_bytes += split.buffered() as u64;
        b.discarded_bytes += whole.buffered() as u64;
        prop_assert_eq!(a, b);
    }

    /// (e) with reads split anywhere: garbage, an empty line, then a valid message that must
    /// be decoded. Half the cases use garbage that ends one CRLF short of a message of exactly
    /// `max_message_len` bytes, the case where a split matters.
    #[test]
        fn garbage_then_an_empty_line_then_a_valid_message_resynchronises_however_split(
        (limits, garbage) in resync_limits().prop_flat_map(|l| {
            (Just(l), prop_oneof![resync_garbage(), Just(almost_full_message(&l))])
        }),
        points in prop::collection::vec(any::<Index>(), 0..32),
    ) {
        let probe = b"Event: Resync\r\nSeq: 42\r\n\r\n";
        let mut wire = garbage.clone();
        wire.extend_from_slice(b"\r\n\r\n");
        wire.extend_from_slice(probe);
        let mut d = Decoder::without_banner(limits);
        let frames = decode_pieces(&mut d, split_at_points(&wire, &points));
        let last = frames.last().expect("no frame at all");
        let Ok(Frame::Message(m)) = last else {
            panic!("last frame is not a message: {last:?}");
        };
        prop_assert_eq!(m.wire_bytes(), &probe[..]);
    }
}

// ---------------------------------------------------------------------------------------------
// Split invariance at the limits, found while writing the properties above.

fn limits_64() -> DecoderLimits {
    DecoderLimits::builder()
        .max_line_len(32)
        .max_message_len(64)
        .max_fields(8)
        .buffer_cap(128)
        .build()
        .unwrap()
}

#[test]
fn too_large_message_ending_in_a_split_crlf_does_not_swallow_the_next_message() {
    // 64 bytes of header lines (exactly max_message_len), then the closing empty line makes
    // the message 66 bytes: too large. The next message is fine.
    let mut wire = b"Event: Big\r\n".to_vec();
    wire.extend_from_slice(format!("A: {}\r\n", "x".repeat(21)).as_bytes());
    wire.extend_from_slice(format!("B: {}\r\n", "y".repeat(21)).as_bytes());
    assert_eq!(wire.len(), 64);
    wire.extend_from_slice(b"\r\nEvent: Next\r\n\r\n");

    let mut whole = Decoder::without_banner(limits_64());
    let expected = decode_whole(&mut whole, &wire);
    assert_eq!(expected.len(), 2, "{expected:?}");
    assert_eq!(expected[0], Err(DecodeError::MessageTooLarge { limit: 64 }));
    assert!(matches!(&expected[1], Ok(Frame::Message(m)) if m.event() == Some("Next")));

    // The same bytes with a read boundary between the CR and the LF of the empty line.
    let mut split = Decoder::without_banner(limits_64());
    let got = decode_pieces(&mut split, [&wire[..65], &wire[65..]]);
    assert_eq!(got, expected);
}

#[test]
fn overlong_line_that_also_overflows_the_message_gives_the_same_error_however_split() {
    // 58 bytes of lines within the limits, then a 40-byte line: over max_line_len (32), and
    // it also takes the message past max_message_len (64).
    let mut wire = b"Event: A\r\n".to_vec();
    wire.extend_from_slice(format!("B: {}\r\n", "b".repeat(27)).as_bytes());
    wire.extend_from_slice(format!("D: {}\r\n", "d".repeat(11)).as_bytes());
    assert_eq!(wire.len(), 58);
    wire.extend_from_slice(format!("C: {}\r\n", "c".repeat(37)).as_bytes());
    wire.extend_from_slice(b"\r\nEvent: Next\r\n\r\n");

    let mut whole = Decoder::without_banner(limits_64());
    let expected = decode_whole(&mut whole, &wire);
    // The message limit is crossed first (at byte 65; the line limit only at byte 91), so that
    // is the error, whatever the split.
    assert_eq!(expected[0], Err(DecodeError::MessageTooLarge { limit: 64 }));

    let mut split = Decoder::without_banner(limits_64());
    // A read boundary 10 bytes into the long line: 68 bytes buffered, the line so far short.
    let got = decode_pieces(&mut split, [&wire[..68], &wire[68..]]);
    assert_eq!(got, expected);
    assert_eq!(split.stats(), whole.stats());
}

#[test]
fn overlong_banner_line_drops_only_the_banner_however_split() {
    let mut wire = format!("{}{}\r\n", ami_proto::BANNER_PREFIX, "9".repeat(40)).into_bytes();
    let banner_len = wire.len();
    wire.extend_from_slice(b"Response: Success\r\nActionID: a1\r\n\r\n");

    // Split inside the banner line: the decoder sees the line is too long before its LF,
    // drops the rest of the line, and decodes the response.
    let mut split = Decoder::new(limits_64());
    let expected = decode_pieces(&mut split, [&wire[..40], &wire[40..]]);
    assert_eq!(expected.len(), 2, "{expected:?}");
    assert_eq!(expected[0], Err(DecodeError::LineTooLong { limit: 32 }));
    assert!(
        matches!(&expected[1], Ok(Frame::Message(m))
            if m.response() == Some("Success") && m.action_id() == Some("a1")),
        "{expected:?}"
    );
    assert_eq!(split.stats().discarded_bytes, banner_len as u64);

    // The whole banner line in one read must give the same result.
    let mut whole = Decoder::new(limits_64());
    let got = decode_whole(&mut whole, &wire);
    assert_eq!(got, expected);
    assert_eq!(whole.stats(), split.stats());
}

#[test]
fn too_large_legacy_command_output_is_skipped_up_to_end_command() {
    // Asterisk 13 Command output: raw LF lines, possibly empty, up to `--END COMMAND--`.
    // The second body line takes the message to 69 bytes, past max_message_len (64); an
    // empty body line follows it.
    let mut wire = b"Response: Follows\r\nPrivilege: Command\r\n".to_vec();
    wire.extend_from_slice(b"line one\n");
    wire.extend_from_slice(format!("{}\n", "a".repeat(20)).as_bytes());
    wire.extend_from_slice(b"\nKey: looks like a header\n--END COMMAND--\r\n\r\n");
    wire.extend_from_slice(b"Event: Next\r\n\r\n");

    let mut d = Decoder::without_banner(limits_64());
    let got = decode_whole(&mut d, &wire);
    let summary: Vec<String> = got
        .iter()
        .map(|f| match f {
            Ok(Frame::Message(m)) => format!("{m:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(got.len(), 2, "{summary:#?}");
    // A Follows is bounded by its own limit (never above the message limit).
    assert_eq!(got[0], Err(DecodeError::FollowsTooLarge { limit: 64 }));
    assert!(
        matches!(&got[1], Ok(Frame::Message(m)) if m.event() == Some("Next")),
        "{summary:#?}"
    );
}
