//! The wire layer against real transcripts recorded from Asterisk 22.10.1.
//!
//! Every expectation below was written by reading the fixture files (line counts, first lines,
//! `cat -A`, a small independent script that splits the server's CRLF stream on empty lines),
//! not by running this decoder and pasting what it printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

use ami_proto::{DecodeError, Decoder, DecoderLimits, Frame, Message, MessageKind};
use std::collections::BTreeMap;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/asterisk-22.10.1/"
);

const BANNER: &str = "Asterisk Call Manager/11.0.0";

type Decoded = Vec<Result<Frame, DecodeError>>;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Names of the fixture files ending in `.{ext}`, sorted.
fn fixture_names(ext: &str) -> Vec<String> {
    let suffix = format!(".{ext}");
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap_or_else(|e| panic!("cannot list {FIXTURES}: {e}"))
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(&suffix))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no *{suffix} fixtures in {FIXTURES}");
    names
}

/// Feeds `input` in pieces of `chunk` bytes, draining the decoder after every feed, as a
/// socket reader would. Panics if the feed/decode loop ever stops making progress.
fn decode_in_chunks(decoder: &mut Decoder, input: &[u8], chunk: usize) -> Decoded {
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        let mut rest = piece;
        while !rest.is_empty() {
            let taken = decoder.feed(rest);
            rest = &rest[taken..];
            while let Some(frame) = decoder.decode() {
                out.push(frame);
            }
            assert!(
                taken > 0 || decoder.room() > 0,
                "feed/decode made no progress"
            );
        }
    }
    out
}

fn decode_whole(decoder: &mut Decoder, input: &[u8]) -> Decoded {
    decode_in_chunks(decoder, input, input.len())
}

/// Decodes a `.raw` transcript (client side, banner first) and returns its messages,
/// asserting there was no error and that the banner came first.
fn decode_raw(name: &str) -> Vec<Message> {
    let bytes = fixture(name);
    let mut decoder = Decoder::new(DecoderLimits::default());
    let frames = decode_whole(&mut decoder, &bytes);
    assert_eq!(decoder.buffered(), 0, "{name}: bytes left undecoded");
    split_banner(name, frames)
}

fn split_banner(name: &str, frames: Decoded) -> Vec<Message> {
    let mut frames = frames.into_iter();
    match frames.next() {
        Some(Ok(Frame::Banner(banner))) => {
            assert_eq!(banner.text(), BANNER, "{name}");
            assert_eq!(banner.version(), Some("11.0.0"), "{name}");
        }
        other => panic!("{name}: expected the banner first, got {other:?}"),
    }
    frames
        .map(|frame| match frame {
            Ok(Frame::Message(m)) => m,
            Ok(Frame::Banner(b)) => panic!("{name}: second banner {b:?}"),
            Err(e) => panic!("{name}: decode error {e}"),
        })
        .collect()
}

/// Decodes a `.sent` file (server side, no banner) with the given limits.
fn decode_sent(name: &str, limits: DecoderLimits) -> (Decoded, Decoder) {
    let bytes = fixture(name);
    let mut decoder = Decoder::without_banner(limits);
    let frames = decode_whole(&mut decoder, &bytes);
    assert_eq!(decoder.buffered(), 0, "{name}: bytes left undecoded");
    (frames, decoder)
}

/// The message's first line as it arrived, without its line ending.
fn first_line(m: &Message) -> String {
    let bytes = m.wire_bytes();
    let end = bytes.iter().position(|&b| b == b'\n').unwrap();
    let line = bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]);
    String::from_utf8(line.to_vec()).unwrap()
}

fn only_message(frame: &Result<Frame, DecodeError>) -> &Message {
    match frame {
        Ok(Frame::Message(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn find<'a>(messages: &'a [Message], first: &str, action_id: &str) -> &'a Message {
    messages
        .iter()
        .find(|m| first_line(m) == first && m.action_id() == Some(action_id))
        .unwrap_or_else(|| panic!("no {first:?} with ActionID {action_id:?}"))
}

/// For every `.raw` fixture except `event_stream_20s.raw`: the number of messages after the
/// banner and their first lines, in order, one per line.
const RAW_EXPECTED: &[(&str, usize, &str)] = &[
    (
        "action_before_login.raw",
        4,
        "
        Response: Error
        Response: Error
        Response: Success
        Response: Goodbye
        ",
    ),
    ("bad_password.raw", 1, "Response: Error"),
    (
        "bare_lf.raw",
        6,
        "
        Response: Success
        Response: Success
        Response: Success
        Response: Success
        Response: Error
        Response: Goodbye
        ",
    ),
    (
        "challenge_bad_authtype.raw",
        2,
        "
        Response: Error
        Response: Goodbye
        ",
    ),
    (
        "challenge_md5_bad_key.raw",
        2,
        "
        Response: Success
        Response: Error
        ",
    ),
    (
        "challenge_md5_login.raw",
        4,
        "
        Response: Success
        Response: Success
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "command_core_show_version.raw",
        3,
        "
        Response: Success
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "command_errors.raw",
        5,
        "
        Response: Success
        Response: Error
        Response: Error
        Response: Error
        Response: Goodbye
        ",
    ),
    (
        "command_multiline.raw",
        4,
        "
        Response: Success
        Response: Success
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "coresettings.raw",
        3,
        "
        Response: Success
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "coreshowchannels.raw",
        14,
        "
        Response: Success
        Response: Success
        Event: CoreShowChannel
        Event: CoreShowChannel
        Event: CoreShowChannel
        Event: CoreShowChannel
        Event: CoreShowChannelsComplete
        Response: Success
        Event: CoreShowChannel
        Event: CoreShowChannel
        Event: CoreShowChannel
        Event: CoreShowChannel
        Event: CoreShowChannelsComplete
        Response: Goodbye
        ",
    ),
    (
        "coreshowchannels_empty.raw",
        4,
        "
        Response: Success
        Response: Success
        Event: CoreShowChannelsComplete
        Response: Goodbye
        ",
    ),
    (
        "corestatus.raw",
        3,
        "
        Response: Success
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "devicestate_events.raw",
        8,
        "
        Response: Success
        Event: FullyBooted
        Event: SuccessfulAuth
        Event: ExtensionStatus
        Event: DeviceStateChange
        Event: DeviceStateChange
        Event: ExtensionStatus
        Response: Goodbye
        ",
    ),
    (
        "devicestatelist.raw",
        11,
        "
        Response: Success
        Response: Success
        Event: DeviceStateChange
        Event: DeviceStateChange
        Event: DeviceStateChange
        Event: DeviceStateChange
        Event: DeviceStateChange
        Event: DeviceStateChange
        Event: DeviceStateChange
        Event: DeviceStateListComplete
        Response: Goodbye
        ",
    ),
    (
        "events_off_on.raw",
        32,
        "
        Response: Success
        Event: FullyBooted
        Event: SuccessfulAuth
        Response: Success
        Response: Success
        Event: Newchannel
        Event: Newchannel
        Event: Newexten
        Event: LocalBridge
        Event: DialBegin
        Event: Newexten
        Event: Newstate
        Event: DeviceStateChange
        Event: Newstate
        Event: DeviceStateChange
        Event: DialEnd
        Event: OriginateResponse
        Event: Newexten
        Event: Cdr
        Event: UserEvent
        Event: Newexten
        Event: SoftHangupRequest
        Event: HangupRequest
        Event: Hangup
        Event: Hangup
        Event: Cdr
        Event: DeviceStateChange
        Event: DeviceStateChange
        Response: Success
        Event: UserEvent
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "extensionstatelist.raw",
        8,
        "
        Response: Success
        Response: Success
        Event: ExtensionStatus
        Event: ExtensionStatus
        Event: ExtensionStateListComplete
        Response: Success
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "listcommands.raw",
        3,
        "
        Response: Success
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "login_plain.raw",
        4,
        "
        Response: Success
        Event: FullyBooted
        Event: SuccessfulAuth
        Response: Goodbye
        ",
    ),
    (
        "logoff.raw",
        2,
        "
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "long_header.raw",
        13,
        "
        Response: Success
        Response: Success
        Response: Success
        Response: Error
        Response: Error
        Response: Error
        Response: Error
        Response: Error
        Response: Error
        Response: Success
        Response: Success
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "originate_async.raw",
        34,
        "
        Response: Success
        Event: FullyBooted
        Event: SuccessfulAuth
        Response: Success
        Event: Newchannel
        Event: Newchannel
        Event: Newexten
        Event: VarSet
        Event: VarSet
        Event: NewCallerid
        Event: NewConnectedLine
        Event: VarSet
        Event: VarSet
        Event: NewCallerid
        Event: NewConnectedLine
        Event: LocalBridge
        Event: DialBegin
        Event: Newexten
        Event: Newstate
        Event: OriginateResponse
        Event: Newstate
        Event: DialEnd
        Event: DeviceStateChange
        Event: DeviceStateChange
        Event: Newexten
        Event: HangupRequest
        Event: Cdr
        Event: Hangup
        Event: SoftHangupRequest
        Event: Hangup
        Event: Cdr
        Event: DeviceStateChange
        Event: DeviceStateChange
        Response: Goodbye
        ",
    ),
    (
        "originate_sync.raw",
        3,
        "
        Response: Success
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "originate_sync_blocks.raw",
        36,
        "
        Response: Success
        Response: Error
        Event: Newchannel
        Event: Newchannel
        Event: LocalBridge
        Event: DialBegin
        Event: Newchannel
        Event: Newchannel
        Event: LocalBridge
        Event: DialBegin
        Event: Newstate
        Event: Newstate
        Event: DialEnd
        Event: DeviceStateChange
        Event: DeviceStateChange
        Event: OriginateResponse
        Event: HangupRequest
        Event: Hangup
        Event: SoftHangupRequest
        Event: Hangup
        Event: DeviceStateChange
        Event: DeviceStateChange
        Event: SoftHangupRequest
        Event: HangupRequest
        Event: Hangup
        Event: DeviceStateChange
        Event: Hangup
        Event: DeviceStateChange
        Event: HangupRequest
        Event: Hangup
        Event: SoftHangupRequest
        Event: Hangup
        Response: Success
        Event: DeviceStateChange
        Event: DeviceStateChange
        Response: Goodbye
        ",
    ),
    (
        "ping.raw",
        5,
        "
        Response: Success
        Response: Success
        Response: Success
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "pipelined.raw",
        7,
        "
        Response: Success
        Response: Success
        Response: Success
        Response: Success
        Response: Success
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "queuestatus.raw",
        20,
        "
        Response: Success
        Response: Success
        Event: QueueParams
        Event: QueueEntry
        Event: QueueEntry
        Event: QueueParams
        Event: QueueMember
        Event: QueueStatusComplete
        Response: Success
        Event: QueueParams
        Event: QueueEntry
        Event: QueueEntry
        Event: QueueStatusComplete
        Response: Success
        Event: QueueStatusComplete
        Response: Success
        Event: QueueSummary
        Event: QueueSummary
        Event: QueueSummaryComplete
        Response: Goodbye
        ",
    ),
    (
        "shutdown.raw",
        4,
        "
        Response: Success
        Event: FullyBooted
        Event: SuccessfulAuth
        Event: Shutdown
        ",
    ),
    (
        "status.raw",
        13,
        "
        Response: Success
        Response: Success
        Event: Status
        Event: Status
        Event: StatusComplete
        Response: Success
        Event: Status
        Event: StatusComplete
        Response: Success
        Event: Status
        Event: StatusComplete
        Response: Error
        Response: Goodbye
        ",
    ),
    (
        "stray_blank_lines.raw",
        6,
        "
        Response: Success
        Response: Error
        Response: Success
        Response: Error
        Response: Error
        Response: Goodbye
        ",
    ),
    (
        "too_many_headers.raw",
        7,
        "
        Response: Success
        Response: Success
        Response: Error
        Response: Error
        Response: Error
        Response: Success
        Response: Goodbye
        ",
    ),
    (
        "unknown_action.raw",
        6,
        "
        Response: Success
        Response: Error
        Response: Error
        Response: Error
        Response: Success
        Response: Goodbye
        ",
    ),
    ("unknown_user.raw", 1, "Response: Error"),
    (
        "userevent_action.raw",
        6,
        "
        Response: Success
        Event: FullyBooted
        Event: SuccessfulAuth
        Response: Success
        Event: UserEvent
        Response: Goodbye
        ",
    ),
];

const EVENT_STREAM: &str = "event_stream_20s.raw";

fn expected_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn expectation_table_covers_every_raw_fixture() {
    let mut listed: Vec<&str> = RAW_EXPECTED.iter().map(|(name, _, _)| *name).collect();
    listed.push(EVENT_STREAM);
    listed.sort_unstable();
    assert_eq!(fixture_names("raw"), listed);
    for (name, count, lines) in RAW_EXPECTED {
        assert_eq!(expected_lines(lines).len(), *count, "table entry {name}");
    }
}

#[test]
fn every_raw_fixture_decodes_to_the_banner_then_the_expected_messages() {
    for (name, count, lines) in RAW_EXPECTED {
        let messages = decode_raw(name);
        let expected = expected_lines(lines);
        assert_eq!(messages.len(), *count, "{name}: message count");
        let got: Vec<String> = messages.iter().map(first_line).collect();
        assert_eq!(got, expected, "{name}: first lines");
        for m in &messages {
            let line = first_line(m);
            if let Some(event) = line.strip_prefix("Event: ") {
                assert_eq!(m.kind(), MessageKind::Event, "{name}: {line}");
                assert_eq!(m.event(), Some(event), "{name}: {line}");
                assert_eq!(m.response(), None, "{name}: {line}");
            } else if let Some(response) = line.strip_prefix("Response: ") {
                assert_eq!(m.kind(), MessageKind::Response, "{name}: {line}");
                assert_eq!(m.response(), Some(response), "{name}: {line}");
                assert_eq!(m.event(), None, "{name}: {line}");
            } else {
                panic!("{name}: unexpected first line {line:?}");
            }
        }
    }
}

#[test]
fn raw_fixtures_reassemble_byte_for_byte_from_banner_and_wire_bytes() {
    // No `.raw` file has a stray blank line, so banner + CRLF + every message's wire bytes
    // must give back the file exactly.
    for name in fixture_names("raw") {
        let bytes = fixture(&name);
        let mut decoder = Decoder::new(DecoderLimits::default());
        let frames = decode_whole(&mut decoder, &bytes);
        let mut rebuilt = Vec::with_capacity(bytes.len());
        for frame in &frames {
            match frame {
                Ok(Frame::Banner(b)) => {
                    rebuilt.extend_from_slice(b.as_bytes());
                    rebuilt.extend_from_slice(b"\r\n");
                }
                Ok(Frame::Message(m)) => rebuilt.extend_from_slice(m.wire_bytes()),
                Err(e) => panic!("{name}: {e}"),
            }
        }
        assert!(rebuilt == bytes, "{name}: reassembled bytes differ");
        let stats = decoder.stats();
        assert_eq!(stats.bytes, bytes.len() as u64, "{name}");
        assert_eq!(stats.banners, 1, "{name}");
        assert_eq!(stats.messages, frames.len() as u64 - 1, "{name}");
        assert_eq!(stats.stray_blank_lines, 0, "{name}");
        assert_eq!(stats.discarded_bytes, 0, "{name}");
    }
}

#[test]
fn event_stream_20s_has_837_messages_with_the_independently_counted_event_names() {
    let messages = decode_raw(EVENT_STREAM);
    assert_eq!(messages.len(), 837);

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for m in &messages {
        *counts.entry(first_line(m)).or_default() += 1;
    }
    // Counted with a script that splits the file on "\r\n\r\n" and tallies first lines.
    let expected = [
        ("Event: DeviceStateChange", 111),
        ("Event: Newexten", 105),
        ("Event: VarSet", 95),
        ("Event: Newchannel", 50),
        ("Event: Hangup", 50),
        ("Event: Cdr", 45),
        ("Event: DialBegin", 25),
        ("Event: OriginateResponse", 20),
        ("Event: BridgeEnter", 10),
        ("Event: UserEvent", 5),
        ("Event: QueueMemberStatus", 2),
        ("Event: FullyBooted", 1),
        ("Event: SuccessfulAuth", 1),
        ("Response: Success", 21),
        ("Response: Goodbye", 1),
    ];
    for (line, count) in expected {
        assert_eq!(counts.get(line).copied(), Some(count), "{line}");
    }
    assert_eq!(counts.len(), 30, "distinct first lines: {counts:?}");

    assert_eq!(first_line(&messages[0]), "Response: Success");
    assert_eq!(messages[0].action_id(), Some("login-1"));
    assert_eq!(first_line(&messages[836]), "Response: Goodbye");

    // Each of the 20 async Originates (stream-00 .. stream-19) got one OriginateResponse
    // event carrying its ActionID and a Response: Success field.
    let mut ids: Vec<&str> = messages
        .iter()
        .filter(|m| m.event() == Some("OriginateResponse"))
        .map(|m| {
            assert_eq!(m.kind(), MessageKind::Event);
            assert_eq!(m.get_str("Response"), Some("Success"));
            m.action_id().unwrap()
        })
        .collect();
    ids.sort_unstable();
    let want: Vec<String> = (0..20).map(|i| format!("stream-{i:02}")).collect();
    assert_eq!(ids, want);
}

#[test]
fn every_fixture_decodes_identically_one_byte_and_seven_bytes_at_a_time() {
    let raw = fixture_names("raw").into_iter().map(|n| (n, true));
    let sent = fixture_names("sent").into_iter().map(|n| (n, false));
    for (name, banner) in raw.chain(sent) {
        let bytes = fixture(&name);
        let new = || {
            if banner {
                Decoder::new(DecoderLimits::default())
            } else {
                Decoder::without_banner(DecoderLimits::default())
            }
        };
        let mut whole = new();
        let expected = decode_whole(&mut whole, &bytes);
        assert!(!expected.is_empty(), "{name}");
        for chunk in [1, 7] {
            let mut decoder = new();
            let got = decode_in_chunks(&mut decoder, &bytes, chunk);
            assert!(got == expected, "{name}: chunks of {chunk} differ");
            assert_eq!(decoder.stats(), whole.stats(), "{name}: chunks of {chunk}");
            assert_eq!(decoder.buffered(), 0, "{name}: chunks of {chunk}");
        }
    }
}

#[test]
fn stray_blank_lines_raw_lists_each_missing_action_error_as_its_own_message() {
    let messages = decode_raw("stray_blank_lines.raw");
    let summary: Vec<(String, Option<&str>, Option<&str>)> = messages
        .iter()
        .map(|m| (first_line(m), m.action_id(), m.get_str("Message")))
        .collect();
    let missing = Some("Missing action in request");
    assert_eq!(
        summary,
        [
            (
                "Response: Success".to_string(),
                Some("login-1"),
                Some("Authentication accepted")
            ),
            ("Response: Error".to_string(), None, missing),
            ("Response: Success".to_string(), Some("extra-crlf"), None),
            ("Response: Error".to_string(), None, missing),
            ("Response: Error".to_string(), None, missing),
            (
                "Response: Goodbye".to_string(),
                Some("logoff-1"),
                Some("Thanks for all the fish.")
            ),
        ]
    );
    assert_eq!(messages[2].get_str("Ping"), Some("Pong"));
    assert_eq!(messages[2].len(), 4);
}

#[test]
fn long_header_raw_keeps_1000_and_1022_byte_lines_intact() {
    let messages = decode_raw("long_header.raw");

    // The echoed ActionID lines are 1000 and 1022 bytes: "ActionID: " + "L1000-" + x...
    for (total, prefix) in [(1000, "L1000-"), (1022, "L1022-")] {
        let m = messages
            .iter()
            .find(|m| m.action_id().is_some_and(|id| id.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no ActionID {prefix}..."));
        let id = m.action_id().unwrap();
        assert_eq!(id.len(), total - "ActionID: ".len());
        assert!(id[prefix.len()..].bytes().all(|b| b == b'x'), "{prefix}");
        assert_eq!(m.get_str("Ping"), Some("Pong"));
    }

    // Getvar gives back the 1000-byte value set by Setvar on a 1007-byte line.
    let gv = find(&messages, "Response: Success", "gv-long");
    assert_eq!(gv.get_str("Variable"), Some("LONGVAR"));
    let value = gv.get("Value").unwrap();
    assert_eq!(value.as_bytes().len(), 1000);
    assert!(value.as_bytes().iter().all(|&b| b == b'v'));

    // The value that was too long for the server came back as an error with its ActionID.
    let err = find(&messages, "Response: Error", "long-value-2000");
    assert_eq!(
        err.get_str("Message"),
        Some("Failed to parse message: line too long")
    );
}

#[test]
fn long_header_raw_with_a_line_limit_below_its_longest_line_drops_only_that_message() {
    // The longest line the server sent is the 1022-byte ActionID echo; with a 1021-byte
    // limit only that response is dropped, everything else still decodes.
    let limits = DecoderLimits::builder().max_line_len(1021).build().unwrap();
    let mut decoder = Decoder::new(limits);
    let frames = decode_whole(&mut decoder, &fixture("long_header.raw"));
    let errors: Vec<&DecodeError> = frames.iter().filter_map(|f| f.as_ref().err()).collect();
    assert_eq!(errors, [&DecodeError::LineTooLong { limit: 1021 }]);
    assert_eq!(decoder.stats().lines_too_long, 1);
    let messages = split_banner(
        "long_header.raw",
        frames.into_iter().filter(Result::is_ok).collect(),
    );
    assert_eq!(messages.len(), 12);
    let ids: Vec<&str> = messages.iter().filter_map(|m| m.action_id()).collect();
    assert!(ids.iter().any(|id| id.starts_with("L1000-")));
    assert!(!ids.iter().any(|id| id.starts_with("L1022-")));
    assert!(ids.contains(&"after-long"));

    let limits = DecoderLimits::builder().max_line_len(1022).build().unwrap();
    let mut decoder = Decoder::new(limits);
    let frames = decode_whole(&mut decoder, &fixture("long_header.raw"));
    assert!(frames.iter().all(Result::is_ok));
    assert_eq!(decoder.stats().messages, 13);
}

#[test]
fn command_multiline_raw_gives_every_output_line_including_empty_ones() {
    let messages = decode_raw("command_multiline.raw");

    let dialplan = find(&messages, "Response: Success", "cmd-2");
    assert_eq!(dialplan.get_str("Message"), Some("Command output follows"));
    // Response + ActionID + Message + 50 Output lines.
    assert_eq!(dialplan.len(), 53);
    let lines: Vec<String> = dialplan
        .command_output()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(lines.len(), 50);
    assert_eq!(
        lines,
        dialplan
            .get_all("Output")
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(lines[0], "[ Context 'ami-test' created by 'pbx_config' ]");
    // Only the one space after the colon is taken; the indentation of the CLI text stays.
    assert!(lines[1].starts_with("  '100' =>          hint: Custom:ext100"));
    assert!(lines[1].ends_with("[extensions.conf:82]"));
    let empty: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].is_empty()).collect();
    assert_eq!(empty, [48], "the one blank CLI line is sent as `Output: `");
    assert_eq!(
        lines[49],
        "-= 16 extensions (47 priorities) in 1 context. =-"
    );

    let connected = find(&messages, "Response: Success", "cmd-3");
    let lines: Vec<String> = connected.command_output().map(|v| v.to_string()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("  Username         IP Address"));
    assert!(lines[1].starts_with("  admin            127.0.0.1"));
    assert_eq!(lines[2], "1 users connected.");
}

#[test]
fn status_raw_keeps_repeated_variable_fields_in_order() {
    let messages = decode_raw("status.raw");
    let items = |id: &str| -> Vec<&Message> {
        messages
            .iter()
            .filter(|m| m.event() == Some("Status") && m.action_id() == Some(id))
            .collect()
    };
    let vars =
        |m: &Message| -> Vec<String> { m.get_all("Variable").map(|v| v.to_string()).collect() };

    let one = items("st-one");
    assert_eq!(one.len(), 1);
    assert_eq!(vars(one[0]), ["STATUSVAR=abc", "CHANNEL(state)=Up"]);
    assert_eq!(one[0].get_str("Variable"), Some("STATUSVAR=abc"));
    // Status items carry ActionID as their last line and `Privilege: Call`.
    let last = one[0].fields().last().unwrap();
    assert_eq!(
        (last.key, last.value.as_bytes()),
        (&b"ActionID"[..], &b"st-one"[..])
    );
    assert_eq!(one[0].get_str("Privilege"), Some("Call"));
    assert!(one[0].get("Readtrans").unwrap().is_empty());

    let allvars = items("st-one-allvars");
    assert_eq!(allvars.len(), 1);
    assert_eq!(vars(allvars[0]), ["STATUSVAR=abc"]);

    let all = items("st-all");
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|m| m.get_all("Variable").count() == 0));

    let complete = find(&messages, "Event: StatusComplete", "st-all");
    assert_eq!(complete.get_str("ListItems"), Some("2"));
    assert_eq!(complete.get_str("Items"), Some("2"));
    let missing = find(&messages, "Response: Error", "st-missing");
    assert_eq!(missing.get_str("Message"), Some("No such channel"));
}

#[test]
fn originate_async_raw_originate_response_is_an_event_with_action_id_and_response() {
    let messages = decode_raw("originate_async.raw");
    let queued = find(&messages, "Response: Success", "orig-async-1");
    assert_eq!(queued.kind(), MessageKind::Response);
    assert_eq!(
        queued.get_str("Message"),
        Some("Originate successfully queued")
    );

    let events: Vec<&Message> = messages
        .iter()
        .filter(|m| first_line(m) == "Event: OriginateResponse")
        .collect();
    assert_eq!(events.len(), 1);
    let m = events[0];
    assert_eq!(m.kind(), MessageKind::Event);
    assert_eq!(m.event(), Some("OriginateResponse"));
    assert_eq!(m.response(), None, "an event is not a response");
    assert_eq!(m.action_id(), Some("orig-async-1"));
    assert_eq!(m.get_str("Response"), Some("Success"));
    assert_eq!(m.get_str("Privilege"), Some("call,all"));
    assert_eq!(
        m.get_str("Channel"),
        Some("Local/wait10@ami-test-00000002;1")
    );
    assert_eq!(m.get_str("Application"), Some("Wait"));
    assert_eq!(m.get_str("Data"), Some("3"));
    assert_eq!(m.get_str("Reason"), Some("4"));
    assert_eq!(m.get_str("CallerIDNum"), Some("5551000"));
    assert_eq!(m.get_str("CallerIDName"), Some("AMI Test"));
    assert_eq!(m.len(), 11);

    // The events generated by the call itself carry no ActionID.
    let with_id = messages.iter().filter(|m| m.action_id().is_some()).count();
    assert_eq!(with_id, 4, "login, queued, OriginateResponse, goodbye");
}

#[test]
fn coreshowchannels_raw_lists_start_items_and_complete_per_action_id() {
    let messages = decode_raw("coreshowchannels.raw");
    for id in ["csc-1", "csc-2"] {
        let of_list: Vec<&Message> = messages
            .iter()
            .filter(|m| m.action_id() == Some(id))
            .collect();
        assert_eq!(of_list.len(), 6, "{id}: start, 4 items, complete");

        let start = of_list[0];
        assert_eq!(start.response(), Some("Success"));
        assert_eq!(start.get_str("EventList"), Some("start"));
        assert_eq!(start.get_str("Message"), Some("Channels will follow"));

        let items = &of_list[1..5];
        let mut channels: Vec<&str> = items
            .iter()
            .map(|m| {
                assert_eq!(m.event(), Some("CoreShowChannel"), "{id}");
                assert_eq!(m.len(), 20, "{id}");
                assert_eq!(m.get("Privilege"), None, "list items have no Privilege");
                let second = m.fields().nth(1).unwrap();
                assert_eq!(second.key, b"ActionID", "ActionID is the 2nd line");
                m.get_str("Channel").unwrap()
            })
            .collect();
        channels.sort_unstable();
        assert_eq!(
            channels,
            [
                "Local/hold@ami-test-00000000;1",
                "Local/hold@ami-test-00000000;2",
                "Local/hold@ami-test-00000001;1",
                "Local/hold@ami-test-00000001;2",
            ]
        );

        let complete = of_list[5];
        assert_eq!(complete.kind(), MessageKind::Event);
        assert_eq!(complete.event(), Some("CoreShowChannelsComplete"));
        assert_eq!(complete.get_str("EventList"), Some("Complete"));
        assert_eq!(complete.get_str("ListItems"), Some("4"));
    }
}

/// Action names per `.sent` file, one per message in order. A message whose first line is not
/// `Action:` is written as `<Other> ` plus its first line.
fn sent_expected() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut stream = vec!["Login"];
    stream.extend(["Originate"; 20]);
    stream.push("Logoff");
    vec![
        (
            "action_before_login.sent",
            vec!["Ping", "Command", "Login", "Logoff"],
        ),
        ("bad_password.sent", vec!["Login"]),
        (
            "bare_lf.sent",
            vec![
                "Login",
                "Ping",
                "Ping",
                "Command",
                // A bare CR is data: this whole line is one field.
                "Ping\rActionID: cr-only\r",
                "Logoff",
            ],
        ),
        ("challenge_bad_authtype.sent", vec!["Challenge", "Logoff"]),
        ("challenge_md5_bad_key.sent", vec!["Challenge", "Login"]),
        (
            "challenge_md5_login.sent",
            vec!["Challenge", "Login", "Login", "Logoff"],
        ),
        (
            "command_core_show_version.sent",
            vec!["Login", "Command", "Logoff"],
        ),
        (
            "command_errors.sent",
            vec!["Login", "Command", "Command", "Command", "Logoff"],
        ),
        (
            "command_multiline.sent",
            vec!["Login", "Command", "Command", "Logoff"],
        ),
        ("coresettings.sent", vec!["Login", "CoreSettings", "Logoff"]),
        (
            "coreshowchannels.sent",
            vec!["Login", "CoreShowChannels", "CoreShowChannels", "Logoff"],
        ),
        (
            "coreshowchannels_empty.sent",
            vec!["Login", "CoreShowChannels", "Logoff"],
        ),
        ("corestatus.sent", vec!["Login", "CoreStatus", "Logoff"]),
        ("devicestate_events.sent", vec!["Login", "Logoff"]),
        (
            "devicestatelist.sent",
            vec!["Login", "DeviceStateList", "Logoff"],
        ),
        ("event_stream_20s.sent", stream),
        (
            "events_off_on.sent",
            vec!["Login", "Events", "Events", "Events", "Events", "Logoff"],
        ),
        (
            "extensionstatelist.sent",
            vec![
                "Login",
                "ExtensionStateList",
                "ExtensionState",
                "ExtensionState",
                "Logoff",
            ],
        ),
        ("listcommands.sent", vec!["Login", "ListCommands", "Logoff"]),
        ("login_plain.sent", vec!["Login", "Logoff"]),
        ("logoff.sent", vec!["Login", "Logoff"]),
        (
            "long_header.sent",
            vec![
                "Login", "Ping", "Ping", "Ping", "Ping", "Ping", "Ping", "Setvar", "Setvar",
                "Getvar", "Ping", "Logoff",
            ],
        ),
        ("originate_async.sent", vec!["Login", "Originate", "Logoff"]),
        ("originate_sync.sent", vec!["Login", "Originate", "Logoff"]),
        (
            "originate_sync_blocks.sent",
            vec!["Login", "Originate", "Ping", "Logoff"],
        ),
        ("ping.sent", vec!["Login", "Ping", "Ping", "Ping", "Logoff"]),
        (
            "pipelined.sent",
            vec![
                "Login",
                "Ping",
                "Ping",
                "Ping",
                "Command",
                "CoreStatus",
                "Logoff",
            ],
        ),
        (
            "queuestatus.sent",
            vec![
                "Login",
                "QueueStatus",
                "QueueStatus",
                "QueueStatus",
                "QueueSummary",
                "Logoff",
            ],
        ),
        ("shutdown.sent", vec!["Login"]),
        (
            "status.sent",
            vec!["Login", "Status", "Status", "Status", "Status", "Logoff"],
        ),
        ("stray_blank_lines.sent", vec!["Login", "Ping", "Logoff"]),
        (
            "too_many_headers.sent",
            vec!["Login", "Ping", "Ping", "Ping", "Ping", "Ping", "Logoff"],
        ),
        (
            "unknown_action.sent",
            vec![
                "Login",
                "NoSuchAction",
                "",
                "<Other> ActionID: no-action-1",
                "ping",
                "Logoff",
            ],
        ),
        ("unknown_user.sent", vec!["Login"]),
        (
            "userevent_action.sent",
            vec!["Login", "UserEvent", "Logoff"],
        ),
    ]
}

fn describe_action(m: &Message) -> String {
    match m.kind() {
        MessageKind::Action => m.action().unwrap().to_string(),
        kind => format!("<{kind:?}> {}", first_line(m)),
    }
}

#[test]
fn every_sent_fixture_decodes_server_side_to_the_expected_actions() {
    let table = sent_expected();
    let listed: Vec<&str> = table.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        fixture_names("sent"),
        listed,
        "table covers every .sent file"
    );

    for (name, expected) in table {
        let (frames, decoder) = decode_sent(name, DecoderLimits::default());
        let got: Vec<String> = frames
            .iter()
            .map(|f| match f {
                Ok(Frame::Message(m)) => describe_action(m),
                other => panic!("{name}: expected only messages, got {other:?}"),
            })
            .collect();
        assert_eq!(got, expected, "{name}");
        // Only stray_blank_lines.sent has empty lines outside a message: one CRLF after the
        // Login, then a CRLF and a bare LF after the Ping.
        let stray = if name == "stray_blank_lines.sent" {
            3
        } else {
            0
        };
        assert_eq!(decoder.stats().stray_blank_lines, stray, "{name}");
        assert_eq!(decoder.stats().banners, 0, "{name}");
    }
}

#[test]
fn bare_lf_sent_accepts_lf_and_mixed_line_ends_and_keeps_bare_cr_as_data() {
    let (frames, _) = decode_sent("bare_lf.sent", DecoderLimits::default());
    let messages: Vec<&Message> = frames.iter().map(only_message).collect();
    let ids: Vec<Option<&str>> = messages.iter().map(|m| m.action_id()).collect();
    assert_eq!(
        ids,
        [
            Some("lf-login"),
            Some("lf-ping"),
            Some("mixed-ping"),
            Some("lf-cmd"),
            None,
            Some("lf-logoff"),
        ]
    );
    // LF-only lines carry no stray CR in their values.
    assert_eq!(messages[0].get_str("Username"), Some("admin"));
    assert_eq!(messages[0].get_str("Events"), Some("off"));
    assert_eq!(messages[3].get_str("Command"), Some("core show uptime"));
    // "Action: Ping\rActionID: cr-only\r\r\n": one line, one field; only the CR just before
    // the LF belongs to the line ending.
    let cr = messages[4];
    assert_eq!(cr.len(), 1);
    assert_eq!(
        cr.fields().next().unwrap().value.as_bytes(),
        b"Ping\rActionID: cr-only\r"
    );
}

#[test]
fn unknown_action_sent_keeps_empty_missing_and_lower_case_action_headers() {
    let (frames, _) = decode_sent("unknown_action.sent", DecoderLimits::default());
    let messages: Vec<&Message> = frames.iter().map(only_message).collect();
    assert_eq!(messages.len(), 6);

    let empty = messages[2];
    assert_eq!(empty.kind(), MessageKind::Action);
    assert_eq!(empty.action(), Some(""));
    assert_eq!(empty.action_id(), Some("empty-action"));

    let none = messages[3];
    assert_eq!(none.kind(), MessageKind::Other);
    assert_eq!(none.action(), None);
    assert_eq!(none.action_id(), Some("no-action-1"));
    assert_eq!(none.get_str("Foo"), Some("bar"));

    let lower = messages[4];
    assert_eq!(lower.kind(), MessageKind::Action);
    assert_eq!(lower.action(), Some("ping"));
    assert_eq!(
        lower.action_id(),
        Some("lower-1"),
        "keys match case-insensitively"
    );
    assert_eq!(
        lower.fields().nth(1).unwrap().key,
        b"actionid",
        "case is kept"
    );
}

#[test]
fn ping_sent_empty_action_id_counts_as_absent() {
    let (frames, _) = decode_sent("ping.sent", DecoderLimits::default());
    let ids: Vec<Option<&str>> = frames.iter().map(|f| only_message(f).action_id()).collect();
    assert_eq!(
        ids,
        [
            Some("login-1"),
            Some("ping-1"),
            None,
            None,
            Some("logoff-1")
        ]
    );
    assert_eq!(only_message(&frames[2]).get_str("ActionID"), Some(""));
    assert_eq!(only_message(&frames[3]).get("ActionID"), None);
}

#[test]
fn too_many_headers_sent_with_asterisks_128_line_limit_refuses_the_same_messages() {
    // Asterisk refused the 129- and 132-line Pings and answered the 128-line one.
    let limits = DecoderLimits::builder().max_fields(128).build().unwrap();
    let (frames, decoder) = decode_sent("too_many_headers.sent", limits);
    let got: Vec<String> = frames
        .iter()
        .map(|f| match f {
            Ok(Frame::Message(m)) => format!("{} {}", m.action().unwrap(), m.action_id().unwrap()),
            Ok(Frame::Banner(b)) => panic!("banner {b:?}"),
            Err(e) => format!("{e:?}"),
        })
        .collect();
    let too_many = "TooManyFields { limit: 128 }";
    assert_eq!(
        got,
        [
            "Login login-1",
            "Ping hdr-128-last",
            too_many,
            too_many,
            too_many,
            "Ping after-many",
            "Logoff logoff-1",
        ]
    );
    assert_eq!(decoder.stats().too_many_fields, 3);
    assert_eq!(only_message(&frames[1]).len(), 128);

    // With the default limits nothing is refused.
    let (frames, _) = decode_sent("too_many_headers.sent", DecoderLimits::default());
    let lens: Vec<usize> = frames.iter().map(|f| only_message(f).len()).collect();
    assert_eq!(lens, [5, 128, 129, 132, 132, 2, 2]);
}

#[test]
fn long_header_sent_with_asterisks_1022_byte_line_limit_refuses_the_same_messages() {
    // Asterisk accepts 1022 bytes + CRLF per line: the 1023, 1024, 1100 and 4000-byte
    // ActionID lines and the 2007-byte Value line were refused; the rest was answered.
    let limits = DecoderLimits::builder().max_line_len(1022).build().unwrap();
    let (frames, decoder) = decode_sent("long_header.sent", limits);
    let got: Vec<String> = frames
        .iter()
        .map(|f| match f {
            Ok(Frame::Message(m)) => {
                let id = m.action_id().unwrap();
                format!("{} {}", m.action().unwrap(), &id[..id.len().min(12)])
            }
            Ok(Frame::Banner(b)) => panic!("banner {b:?}"),
            Err(e) => format!("{e:?}"),
        })
        .collect();
    let too_long = "LineTooLong { limit: 1022 }";
    assert_eq!(
        got,
        [
            "Login login-1",
            "Ping L1000-xxxxxx",
            "Ping L1022-xxxxxx",
            too_long,
            too_long,
            too_long,
            too_long,
            too_long,
            "Setvar sv-long",
            "Getvar gv-long",
            "Ping after-long",
            "Logoff logoff-1",
        ]
    );
    assert_eq!(decoder.stats().lines_too_long, 5);
    let setvar = only_message(&frames[8]);
    assert_eq!(setvar.get("Value").unwrap().as_bytes().len(), 1000);

    // With the default limits every action decodes, the 4000-byte ActionID included.
    let (frames, _) = decode_sent("long_header.sent", DecoderLimits::default());
    let id_lens: Vec<usize> = frames[1..7]
        .iter()
        .map(|f| only_message(f).action_id().unwrap().len())
        .collect();
    assert_eq!(id_lens, [990, 1012, 1013, 1014, 1090, 3990]);
}
