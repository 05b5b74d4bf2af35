//! Arbitrary bytes as the body of an action request arriving over NATS (any process on the
//! account can publish one), through `ami_nats::ActionRequest::parse`: never a panic, and a
//! request it accepts encodes to exactly the lines it named (its `Action`, the bridge's
//! ActionID, its other headers in order, the blank line), none carrying CR, LF or NUL, so no
//! header can be smuggled to Asterisk; never a reserved action; a key of the documented
//! shape only; and its re-encoding (what a standby bridge forwards) reads back as the same
//! request, no larger than the action's limits allow.
#![no_main]

use ami_nats::actions::MAX_IDEMPOTENCY_KEY_LEN;
use ami_nats::ActionRequest;
use ami_proto::ActionId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ActionRequest::parse(data) else {
        return;
    };
    let name = req.action.name();
    assert!(
        !["login", "logoff", "challenge", "events", "filter"]
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r)),
        "reserved action {name:?} accepted"
    );
    if let Some(key) = &req.idempotency_key {
        assert!(!key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN);
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    }
    let body = req.to_body();
    assert_eq!(ActionRequest::parse(&body).as_ref(), Ok(&req), "{body:?}");
    // 128 lines of at most 1 KiB, each escaped to at most 6 bytes a byte as JSON, plus the
    // key and the timeout.
    assert!(body.len() <= 8 * 1024 * 128, "{} bytes", body.len());
    let Ok(id) = ActionId::new("fuzz-1") else {
        return;
    };
    let mut out = Vec::new();
    // An action parse accepted is one the encoder accepts: what the bridge's session writes.
    let len = match req.action.encode(Some(&id), &mut out) {
        Ok(len) => len,
        Err(e) => panic!("accepted request does not encode: {e}"),
    };
    assert_eq!(len, out.len());
    assert!(out.ends_with(b"\r\n\r\n"));
    let body = &out[..out.len() - 2];
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    // Action, ActionID, then one line per field: nothing more.
    assert_eq!(lines.len(), 2 + req.action.fields().len(), "{out:?}");
    for line in &lines {
        let Some(text) = line.strip_suffix(b"\r") else {
            panic!("line not ended by CRLF: {line:?}");
        };
        assert!(
            !text.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
            "CR, LF or NUL in a line: {text:?}"
        );
        assert!(line.len() <= ami_proto::MAX_LINE_LEN, "line too long");
    }
    assert!(lines.len() <= ami_proto::MAX_LINES);
    assert!(lines[0].starts_with(b"Action: "));
    assert!(lines[1].starts_with(b"ActionID: fuzz-1"));
    // No field is another Action, nor a key that breaks the line. (A field named ActionID
    // passes parse: the session refuses it, `SendError::ActionIdField`, before writing.)
    for (k, _) in req.action.fields() {
        assert!(!k.eq_ignore_ascii_case("Action"));
        assert!(!k.contains(':') && !k.bytes().any(|b| b.is_ascii_whitespace()));
    }
});
