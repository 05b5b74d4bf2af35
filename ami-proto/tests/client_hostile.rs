//! A hostile or broken server against the client, in virtual time (issue 9): memory stays
//! bounded in bytes, every discarded input is counted and reported in stream order, an
//! unterminated legacy `Response: Follows` does not make the client deaf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{
    Action, ActionError, ClientConfig, ClientConfigBuilder, DecodeError, DecoderLimits, Discard,
    OutcomeKind, StreamItem,
};
use scripted::{event, list_complete, list_item, list_start, msg, Harness};
use std::time::Instant;

fn base() -> ClientConfigBuilder {
    ClientConfig::builder("admin", "s3cr3t")
        .events("on")
        .seed(11)
}

fn ready(cfg: ClientConfig) -> Harness {
    let mut h = Harness::new(cfg, Instant::now());
    h.ready();
    h.take_all();
    // The session boundary opens the stream; the tests look at what follows it.
    assert!(matches!(&h.events()[..], [StreamItem::Ready { .. }]));
    h
}

/// A message that is neither event nor response, `size` bytes of padding.
fn skipped(size: usize) -> Vec<u8> {
    msg(&[("Junk", "x"), ("Pad", &"p".repeat(size))])
}

fn label(item: &StreamItem) -> String {
    match item {
        StreamItem::Event(m) => m.event().unwrap_or("?").to_string(),
        StreamItem::Gap { dropped } => format!("gap{dropped}"),
        StreamItem::Discarded { reason, count } => format!("discarded {reason:?} x{count}"),
        other => format!("{other:?}"),
    }
}

#[test]
fn skipped_padding_between_small_events_holds_no_memory() {
    // The case: small events each followed by a 63 KiB skipped message, and a
    // consumer that reads nothing. Each queued event must cost its own bytes only.
    let mut h = ready(base().build().unwrap());
    for i in 0..300 {
        let mut chunk = event("Small", i);
        chunk.extend(skipped(63 << 10));
        h.feed(&chunk);
    }
    let s = h.client.stats();
    assert_eq!(s.event_queue_len, 300);
    assert!(
        s.event_queue_bytes < 300 * 1024,
        "{} bytes kept for 300 small events",
        s.event_queue_bytes
    );
    assert!(s.decoder_allocated <= 256 << 10, "{}", s.decoder_allocated);
    assert_eq!(s.unexpected, 300);
    assert_eq!(s.discarded, 300);
    let items = h.events();
    assert_eq!(items.len(), 600, "each skip reported after its event");
    assert_eq!(label(&items[0]), "Small");
    assert_eq!(label(&items[1]), "discarded NotEventOrResponse x1");
}

#[test]
fn large_events_with_an_unread_stream_stay_within_the_byte_cap() {
    let cap = 2 << 20;
    let limits = DecoderLimits::builder()
        .max_message_len(1 << 20)
        .buffer_cap((1 << 20) + (64 << 10))
        .build()
        .unwrap();
    let mut h = ready(
        base()
            .decoder(limits)
            .event_queue_bytes(cap)
            .build()
            .unwrap(),
    );
    let big = msg(&[("Event", "Big"), ("Data", &"d".repeat(256 << 10))]);
    for _ in 0..40 {
        h.feed(&big);
        let s = h.client.stats();
        assert!(s.event_queue_bytes <= cap, "{}", s.event_queue_bytes);
    }
    let s = h.client.stats();
    assert_eq!(s.event_queue_len, 7, "2 MiB holds seven 256 KiB events");
    assert_eq!(s.events_dropped, 33);
    let items = h.events();
    assert_eq!(label(&items[0]), "gap33");
    assert_eq!(items.len(), 8);
}

#[test]
fn config_that_cannot_hold_one_maximal_message_is_refused() {
    let too_small = base().event_queue_bytes(1 << 20).build().unwrap_err();
    assert!(too_small.to_string().contains("event_queue_bytes"));
    let limits = DecoderLimits::builder()
        .max_message_len(64 << 10)
        .max_line_len(1024)
        .buffer_cap(128 << 10)
        .max_fields(100)
        .build()
        .unwrap();
    assert!(base()
        .decoder(limits)
        .event_queue_bytes(limits.max_message_memory())
        .max_list_bytes(limits.max_message_memory())
        .build()
        .is_ok());
    let err = base()
        .decoder(limits)
        .max_list_bytes(limits.max_message_memory() - 1)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("max_list_bytes"));
}

#[test]
fn list_items_are_charged_their_retained_bytes_and_padding_costs_nothing() {
    let one = {
        let mut d = ami_proto::Decoder::without_banner(DecoderLimits::default());
        d.feed(&list_item("x", 0));
        match d.decode() {
            Some(Ok(ami_proto::Frame::Message(m))) => m.retained_bytes(),
            other => panic!("{other:?}"),
        }
    };
    let cap = DecoderLimits::default().max_message_memory() + 10 * one;
    let mut h = ready(base().max_list_bytes(cap).build().unwrap());
    let id = h.send(Action::new("CoreShowChannels"));
    h.feed(&list_start(id.as_str()));
    let n = cap / one + 50;
    for i in 0..n {
        let mut chunk = list_item(id.as_str(), i);
        chunk.extend(skipped(16 << 10));
        h.feed(&chunk);
    }
    h.feed(&list_complete(id.as_str(), n));
    match h.outcome(&id) {
        Err(ActionError::ListOverflow { bytes, .. }) => assert!(*bytes <= cap),
        other => panic!("{other:?}"),
    }
}

#[test]
fn each_discarded_input_is_counted_and_reported_in_stream_order() {
    let limits = DecoderLimits::builder()
        .max_line_len(512)
        .max_message_len(4096)
        .max_fields(16)
        .buffer_cap(8192)
        .build()
        .unwrap();
    let mut h = ready(base().decoder(limits).build().unwrap());
    let mut wire = event("A", 1);
    // An over-long line.
    wire.extend(msg(&[("Event", "Bad"), ("Long", &"x".repeat(1000))]));
    wire.extend(event("B", 2));
    // Too many fields.
    let many: Vec<(String, String)> = (0..40).map(|i| (format!("K{i}"), "v".into())).collect();
    let mut fields = vec![("Event", "Many")];
    fields.extend(many.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    wire.extend(msg(&fields));
    // An endless message (no blank line until 6000 bytes of headers have passed).
    for i in 0..15 {
        wire.extend_from_slice(format!("Endless{i}: {}\r\n", "e".repeat(400)).as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    // A response nobody asked for.
    wire.extend(msg(&[("Response", "Success"), ("ActionID", "nobody-1")]));
    wire.extend(event("C", 3));
    h.feed(&wire);
    let items: Vec<String> = h.events().iter().map(label).collect();
    assert_eq!(
        items,
        [
            "A",
            "discarded Malformed(LineTooLong { limit: 512 }) x1",
            "B",
            "discarded Malformed(TooManyFields { limit: 16 }) x1",
            "discarded Malformed(MessageTooLarge { limit: 4096 }) x1",
            "discarded UnmatchedResponse x1",
            "C",
        ]
    );
    let s = h.client.stats();
    assert_eq!(s.discarded, 4);
    assert_eq!(s.decoder.lines_too_long, 1);
    assert_eq!(s.decoder.too_many_fields, 1);
    assert_eq!(s.decoder.messages_too_large, 1);
    assert_eq!(s.unmatched, 1);
}

#[test]
fn a_flood_of_bad_input_costs_one_notice_per_reason() {
    let mut h = ready(base().build().unwrap());
    for _ in 0..2_000 {
        h.feed(&skipped(10));
        h.feed(&msg(&[("Response", "Success"), ("ActionID", "nobody-1")]));
    }
    let items: Vec<String> = h.events().iter().map(label).collect();
    assert_eq!(
        items,
        [
            "discarded NotEventOrResponse x2000",
            "discarded UnmatchedResponse x2000"
        ]
    );
}

#[test]
fn unterminated_legacy_follows_does_not_make_the_client_deaf() {
    // The case: a `Response: Follows` without `--END COMMAND--`, then 20,000
    // well-formed events; the server still answers Pings, so only the decoder can notice.
    let mut h = ready(base().build().unwrap());
    let id = h.send(Action::new("Command").field("Command", "core show uptime"));
    let mut wire = format!(
        "Response: Follows\r\nPrivilege: Command\r\nActionID: {}\r\nSystem uptime: 1 hour\n\n",
        id.as_str()
    )
    .into_bytes();
    for i in 0..20_000 {
        wire.extend(event("Later", i));
    }
    for chunk in wire.chunks(64 << 10) {
        h.feed(chunk);
    }
    let items = h.events();
    // Caught at the first AMI-framed message inside the output, not after 1 MiB.
    assert_eq!(
        label(&items[0]),
        "discarded Malformed(FollowsUnterminated) x1"
    );
    let events = items
        .iter()
        .filter(|i| matches!(i, StreamItem::Event(_)))
        .count();
    assert_eq!(events, 20_000, "every event after the broken output flows");
    assert_eq!(h.client.stats().decoder.follows_unterminated, 1);
    // The Command's answer was the broken output: it fails as that, at once, not at its
    // deadline as if the server had said nothing.
    assert_eq!(
        h.outcome(&id),
        &Err(ActionError::ResponseDiscarded {
            reason: Discard::Malformed(DecodeError::FollowsUnterminated)
        })
    );
}

/// What a hostile server puts in a `Message`: a colour, a window title, backspaces and a
/// lone CR that rewrite the line, a bidirectional override.
const TERMINAL_ATTACK: &str = "no \x1b[31mRED\x1b]0;pwned\x07\x08\x08 \rFAKE \u{202e}gpj.exe";

fn shown_escaped(what: &str, text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{what}: {text:?}"
    );
    assert!(
        text.contains("no \\x1b[31mRED\\x1b]0;pwned\\x07\\x08\\x08 \\x0dFAKE \\u{202e}gpj.exe"),
        "{what}: {text:?}"
    );
}

#[test]
fn server_text_in_an_error_message_is_shown_escaped_never_raw() {
    // An action's error response: ActionError's Display escapes the server's Message...
    let mut h = ready(base().build().unwrap());
    let id = h.send(Action::new("Ping"));
    h.feed(&scripted::error(id.as_str(), TERMINAL_ATTACK));
    let Err(e) = h.outcome(&id) else {
        panic!("an Error response is an error")
    };
    shown_escaped("action error", &e.to_string());
    // ...while the response itself keeps the bytes exactly as the server sent them.
    let Some(r) = e.response() else {
        panic!("the server's answer is kept")
    };
    assert_eq!(r.text(), Some(TERMINAL_ATTACK));

    // A rejected login: the disconnect reason's Display escapes it too.
    let mut h = Harness::new(base().build().unwrap(), Instant::now());
    h.connected();
    h.feed(scripted::BANNER);
    let login = h.take("Login");
    let out = h.feed(&scripted::error(scripted::id_of(&login), TERMINAL_ATTACK));
    let reason = out
        .iter()
        .find_map(|o| match o {
            scripted::Out::Closed(r) | scripted::Out::Disconnected(r, _) => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the login rejection ends the session: {out:?}"));
    shown_escaped("login rejected", &reason.to_string());
}

// ----- discarded responses (probe scenarios command_10k, follows_noend, rebanner) -----------

/// The `Response` to `id` of a Command whose output has `lines` `Output:` lines (Asterisk
/// 14+: one header per line of output).
fn command_output(id: &str, lines: usize) -> Vec<u8> {
    let mut wire =
        format!("Response: Success\r\nActionID: {id}\r\nMessage: Command output follows\r\n")
            .into_bytes();
    for i in 0..lines {
        wire.extend_from_slice(
            format!("Output: [ Context 'ctx{i}' created by 'pbx_config' ]\r\n").as_bytes(),
        );
    }
    wire.extend_from_slice(b"\r\n");
    wire
}

#[test]
fn a_response_over_the_field_limit_fails_its_action_at_once_as_discarded() {
    // `dialplan show` on a big dialplan: 12,000 `Output:` lines against the default cap of
    // 10,000 fields. The server answered; the client must say so now, not "no response
    // arrived in time" 30 s later.
    let mut h = ready(base().build().unwrap());
    let id = h.send(Action::new("Command").field("Command", "dialplan show"));
    let mut wire = command_output(id.as_str(), 12_000);
    wire.extend(event("After", 1));
    for chunk in wire.chunks(64 << 10) {
        h.feed(chunk);
    }
    assert_eq!(
        h.outcome(&id),
        &Err(ActionError::ResponseDiscarded {
            reason: Discard::Malformed(DecodeError::TooManyFields { limit: 10_000 })
        })
    );
    let items: Vec<String> = h.events().iter().map(label).collect();
    assert_eq!(
        items,
        [
            "discarded Malformed(TooManyFields { limit: 10000 }) x1",
            "After"
        ],
        "the discard is still reported where it happened"
    );
    let s = h.client.stats();
    assert_eq!(s.discarded, 1);
    assert_eq!(s.outcome_count(OutcomeKind::ResponseDiscarded), 1);
    assert_eq!(
        (s.pending, s.in_flight),
        (0, 0),
        "its pipeline slot is free"
    );
    // The next action goes on as usual.
    let ping = h.send(Action::new("Ping"));
    h.feed(&scripted::pong(ping.as_str()));
    assert!(h.outcome(&ping).is_ok());
}

#[test]
fn a_legacy_follows_that_never_ends_fails_its_command_when_the_decoder_gives_up_on_it() {
    // Asterisk <= 13 output without `--END COMMAND--`: the decoder finds out at the first
    // AMI-framed message after a CRLF blank line, and the Command fails then.
    let mut h = ready(base().build().unwrap());
    let id = h.send(Action::new("Command").field("Command", "x"));
    let mut wire = format!(
        "Response: Follows\r\nPrivilege: Command\r\nActionID: {}\r\nline1\nline2\n\r\n",
        id.as_str()
    )
    .into_bytes();
    wire.extend(event("Newchannel", 1));
    h.feed(&wire);
    assert!(h.outcomes(&id).is_empty(), "the output may still go on");
    h.advance(std::time::Duration::from_millis(200));
    h.feed(&event("Newchannel", 2));
    assert_eq!(
        h.outcome(&id),
        &Err(ActionError::ResponseDiscarded {
            reason: Discard::Malformed(DecodeError::FollowsUnterminated)
        })
    );
    let items: Vec<String> = h.events().iter().map(label).collect();
    assert_eq!(
        items,
        [
            "discarded Malformed(FollowsUnterminated) x1",
            "Newchannel",
            "Newchannel"
        ],
        "the events behind the broken output are found again"
    );
}

#[test]
fn a_response_glued_behind_a_repeated_banner_fails_its_action_as_discarded() {
    // A banner line sent again mid-session (a proxy reconnecting its upstream) runs into the
    // next response: the message starts with neither `Response:` nor `Event:`.
    let mut h = ready(base().build().unwrap());
    let id = h.send(Action::new("Ping"));
    let mut wire = scripted::BANNER.to_vec();
    wire.extend(scripted::pong(id.as_str()));
    h.feed(&wire);
    assert_eq!(
        h.outcome(&id),
        &Err(ActionError::ResponseDiscarded {
            reason: Discard::NotEventOrResponse
        })
    );
    let items: Vec<String> = h.events().iter().map(label).collect();
    assert_eq!(items, ["discarded NotEventOrResponse x1"]);
    assert_eq!(h.client.stats().discarded, 1);
}

#[test]
fn a_response_whose_action_id_comes_after_its_over_long_line_still_fails_its_action() {
    // Asterisk writes ActionID second; a proxy or another server may not. The ActionID is
    // read in the part of the message the decoder skips, however the bytes are split.
    let limits = DecoderLimits::builder()
        .max_line_len(512)
        .max_message_len(4096)
        .build()
        .unwrap();
    for chunk in [usize::MAX, 300, 7] {
        let mut h = ready(base().decoder(limits).build().unwrap());
        let ping = h.send(Action::new("Ping"));
        let other = h.send(Action::new("Ping"));
        let mut wire = format!(
            "Response: Success\r\nBig: {}\r\nActionID: {}\r\nAlso: x\r\n\r\n",
            "x".repeat(1000),
            ping.as_str()
        )
        .into_bytes();
        wire.extend(scripted::pong(other.as_str()));
        for piece in wire.chunks(chunk.min(wire.len())) {
            h.feed(piece);
        }
        assert_eq!(
            h.outcome(&ping),
            &Err(ActionError::ResponseDiscarded {
                reason: Discard::Malformed(DecodeError::LineTooLong { limit: 512 })
            }),
            "chunks of {chunk}"
        );
        assert!(h.outcome(&other).is_ok(), "chunks of {chunk}");
    }
}

#[test]
fn a_discarded_response_without_a_pending_action_id_fails_nothing() {
    // Dropped whole with no ActionID, or with one nobody waits for: only the discard.
    let limits = DecoderLimits::builder()
        .max_line_len(512)
        .max_message_len(4096)
        .build()
        .unwrap();
    let mut h = ready(base().decoder(limits).build().unwrap());
    let ping = h.send(Action::new("Ping"));
    let mut wire = format!("Response: Success\r\nBig: {}\r\n\r\n", "x".repeat(1000)).into_bytes();
    wire.extend(
        format!(
            "Response: Success\r\nBig: {}\r\nActionID: nobody-7\r\n\r\n",
            "x".repeat(1000)
        )
        .as_bytes(),
    );
    // An event cut off before its ActionID is a list's business, not a response's.
    wire.extend(
        format!(
            "Event: X\r\nBig: {}\r\nActionID: {}\r\n\r\n",
            "x".repeat(1000),
            ping.as_str()
        )
        .as_bytes(),
    );
    h.feed(&wire);
    assert!(h.outcomes(&ping).is_empty());
    h.feed(&scripted::pong(ping.as_str()));
    assert!(h.outcome(&ping).is_ok());
    assert_eq!(h.client.stats().discarded, 3);
}
