//! A hostile or broken server against the client, in virtual time (issue 9): memory stays
//! bounded in bytes, every discarded input is counted and reported in stream order, an
//! unterminated legacy `Response: Follows` does not make the client deaf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{
    Action, ActionError, ClientConfig, ClientConfigBuilder, DecoderLimits, StreamItem,
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
    // The Command itself never got an answer it can trust: it times out, nothing else.
    assert!(h.outcomes(&id).is_empty());
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
