//! What a JetStream publish ack says, and which refusals are final.
//!
//! An error ack is `{"stream":..,"error":{"code":C,"err_code":E,"description":D}}`; `E` is
//! nats-server's stable error number (`server/errors.json`). A refusal is *final* when the
//! same message would be refused again however often it was sent: publishing it again only
//! holds up everything behind it. Final, by `err_code`:
//!
//! | err_code | constant | why final |
//! |---|---|---|
//! | 10054 | `JSStreamMessageExceedsMaximumErr` | the message is over the stream's `max_msg_size` |
//! | 10097 | `JSStreamHeaderExceedsMaximumErr` | its headers are over 64 KiB |
//! | 10077 + `message too large` | `JSStreamStoreFailedF` (`ErrMsgTooLarge`) | over the file store's largest message |
//! | 10109 | `JSStreamSealedErr` | a sealed stream takes nothing, and a seal cannot be undone |
//! | 10060, 10070, 10071, 10164, 10193 | expected stream, last message ID or sequence | an expectation stated in the message's headers that does not hold (sequences only grow) |
//! | 10165, 10166 | `JSMessageTTL*` | a per-message TTL the stream cannot read or does not allow |
//!
//! The bridge sets none of the expectation or TTL headers, so only the size and seal
//! refusals are expected; the others are listed because they are as final if they come.
//!
//! Passing, so retried: no responders (no stream listens on the subject *now*: a stream
//! leader being elected, JetStream still recovering at start, an operator mending the
//! stream's subjects), 10077 for the limits of a `DiscardNew` stream (`maximum messages`,
//! `bytes` or `messages per subject exceeded`: room comes back as messages age out or are
//! consumed), account and server resources (10002, 10023, 10028, 10047), cluster states
//! (10009, 10063, 10163), `too many requests` (10167), and any code not known here.

use crate::shown::Remote;
use crate::throttle::LogThrottle;
use async_nats::StatusCode;

/// Why JetStream refuses a message for good (see the module docs for the codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The message or its headers are larger than the stream or its store takes.
    TooLarge,
    /// The stream is sealed.
    Sealed,
    /// An expectation in the message's headers (stream, last sequence or message ID).
    Expectation,
    /// A per-message TTL the stream cannot read or does not allow.
    Ttl,
}

impl Refusal {
    /// Every reason, in the order of [`Refusal::index`].
    pub(crate) const ALL: [Refusal; 4] = [
        Refusal::TooLarge,
        Refusal::Sealed,
        Refusal::Expectation,
        Refusal::Ttl,
    ];

    /// The `reason` label of the refusal counter.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::TooLarge => "too_large",
            Refusal::Sealed => "sealed",
            Refusal::Expectation => "expectation",
            Refusal::Ttl => "ttl",
        }
    }

    /// Its place in [`Refusal::ALL`] (per-reason tables are indexed by it).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The final refusal that `err_code` (with the ack's `description`) means, if it is one.
    fn of(err_code: u32, description: &[u8]) -> Option<Refusal> {
        match err_code {
            10054 | 10097 => Some(Refusal::TooLarge),
            // JSStreamStoreFailedF carries the store's own error; only "message too large"
            // is about the message, the others (limits, a closed store) pass.
            10077 if description.starts_with(b"message too large") => Some(Refusal::TooLarge),
            10109 => Some(Refusal::Sealed),
            10060 | 10070 | 10071 | 10164 | 10193 => Some(Refusal::Expectation),
            10165 | 10166 => Some(Refusal::Ttl),
            _ => None,
        }
    }
}

/// What an ack said.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ack {
    /// Stored (`duplicate`: it was already, from an earlier publish of the same ID).
    Stored { duplicate: bool },
    /// Not stored for now: the publisher goes back and publishes again (the text says why,
    /// escaped and cut short for a log line: see [`Remote`]).
    Failed(String),
    /// Not an answer of the bridge's stream: it names no stream, or another. Whoever may
    /// read the event subjects sees their reply subjects and may publish there; only the
    /// stream the bridge publishes into stores its items, so only its answers count. The
    /// real ack, or the ack timeout, decides.
    Foreign,
    /// Never to be stored: see [`Refusal`]. `err_code` is JetStream's number.
    Refused { reason: Refusal, err_code: u32 },
}

/// Reads a JetStream publish ack (`{"stream":..,"seq":N[,"duplicate":true]}` or
/// `{"stream":..,"error":{..}}`; a no-responders status when no stream takes the subject)
/// to a publish into `stream`. A stored ack is read without allocating.
pub(crate) fn parse_ack(status: Option<StatusCode>, p: &[u8], stream: &str) -> Ack {
    if status == Some(StatusCode::NO_RESPONDERS) {
        return Ack::Failed("no stream listens on the subject".into());
    }
    // JetStream names the stream in every publish ack, error or not (its schema requires
    // `stream`), and one stream at most takes a subject of an account.
    if !names_stream(p, stream) {
        return Ack::Foreign;
    }
    if find(p, b"\"error\"").is_some() {
        if let Some(code) = err_code(p) {
            let description = value_after(p, b"\"description\":\"").unwrap_or_default();
            if let Some(reason) = Refusal::of(code, description) {
                return Ack::Refused {
                    reason,
                    err_code: code,
                };
            }
        }
        return Ack::Failed(Remote(p).to_string());
    }
    if find(p, b"\"seq\"").is_none() {
        return Ack::Failed(Remote(p).to_string());
    }
    Ack::Stored {
        duplicate: find(p, b"\"duplicate\":true").is_some(),
    }
}

/// Where `needle` starts in `p`.
fn find(p: &[u8], needle: &[u8]) -> Option<usize> {
    p.windows(needle.len()).position(|w| w == needle)
}

/// The bytes of `p` after the first `key`.
fn value_after<'a>(p: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    find(p, key).and_then(|at| p.get(at + key.len()..))
}

/// Whether the ack's `"stream"` string is `stream`. nats-server writes its error acks with
/// Go's JSON encoder, which escapes `&`, `<` and `>` (`A\u0026B`), and every ack escapes a
/// quote or backslash a stream name may hold (`A\"B`): such a value is unescaped before it
/// is compared. One without a backslash, as every ack of a plain name, is compared as it
/// is, without allocating. False when absent or not a string.
fn names_stream(p: &[u8], stream: &str) -> bool {
    let Some(rest) = value_after(p, b"\"stream\"") else {
        return false;
    };
    let Some(rest) = rest.trim_ascii_start().strip_prefix(b":") else {
        return false;
    };
    let literal = rest.trim_ascii_start();
    let Some(body) = literal.strip_prefix(b"\"") else {
        return false;
    };
    // The closing quote: the first one no backslash escapes.
    let mut escaped = false;
    let Some(end) = body.iter().position(|&b| {
        let close = b == b'"' && !escaped;
        escaped = b == b'\\' && !escaped;
        close
    }) else {
        return false;
    };
    let Some(value) = body.get(..end) else {
        return false;
    };
    if !value.contains(&b'\\') {
        return value == stream.as_bytes();
    }
    // The quoted literal, quotes included.
    literal
        .get(..end + 2)
        .and_then(|quoted| serde_json::from_slice::<String>(quoted).ok())
        .is_some_and(|name| name == stream)
}

/// The number of the ack's `"err_code"` (JSON from nats-server has no blanks; some are
/// allowed anyway). None when absent or not a number that fits.
fn err_code(p: &[u8]) -> Option<u32> {
    let rest = value_after(p, b"\"err_code\"")?.trim_ascii_start();
    let rest = rest.strip_prefix(b":")?.trim_ascii_start();
    let mut n = 0u32;
    let mut digits = 0;
    for d in rest.iter().take_while(|b| b.is_ascii_digit()) {
        n = n.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(n)
}

/// When final refusals were last logged, per reason ([`Refusal::index`]): a sealed stream
/// refuses every item, and a line each would flood the log.
pub(crate) type RefusalLog = LogThrottle<{ Refusal::ALL.len() }>;

#[cfg(test)]
mod tests {
    use super::*;

    fn error_ack(code: u16, err_code: u32, description: &str) -> Vec<u8> {
        format!(
            r#"{{"stream":"AMI","error":{{"code":{code},"err_code":{err_code},"description":"{description}"}}}}"#
        )
        .into_bytes()
    }

    /// The exact acks nats-server 2.9.10 sent for streams named `A&B` and `A"B` (both names
    /// it accepts): its error acks escape `&` (Go's JSON encoder), and every ack escapes a
    /// quote. They are the bridge's stream's answers, not foreign ones.
    #[test]
    fn acks_naming_the_stream_with_json_escapes_are_the_streams_own() {
        let full = br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"A\u0026B","seq":0}"#;
        assert!(matches!(parse_ack(None, full, "A&B"), Ack::Failed(_)));
        let too_big = br#"{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"},"stream":"A\u0026B","seq":0}"#;
        assert!(matches!(
            parse_ack(None, too_big, "A&B"),
            Ack::Refused {
                err_code: 10054,
                ..
            }
        ));
        assert_eq!(
            parse_ack(None, br#"{"stream":"A&B", "seq":1}"#, "A&B"),
            Ack::Stored { duplicate: false }
        );
        assert_eq!(
            parse_ack(None, br#"{"stream":"A\"B", "seq":1}"#, "A\"B"),
            Ack::Stored { duplicate: false }
        );
        // Another stream's name, escaped or not, is still foreign.
        assert_eq!(parse_ack(None, full, "A&C"), Ack::Foreign);
        assert_eq!(
            parse_ack(None, br#"{"stream":"A\"B", "seq":1}"#, "A\\"),
            Ack::Foreign
        );
    }

    #[test]
    fn acks_are_read_as_stored_duplicate_or_failed() {
        assert_eq!(
            parse_ack(None, br#"{"stream":"AMI","seq":7}"#, "AMI"),
            Ack::Stored { duplicate: false }
        );
        assert_eq!(
            parse_ack(None, br#"{"stream":"AMI","seq":7,"duplicate":true}"#, "AMI"),
            Ack::Stored { duplicate: true }
        );
        let limits = error_ack(400, 10002, "resource limits exceeded for account");
        assert!(
            matches!(parse_ack(None, &limits, "AMI"), Ack::Failed(w) if w.contains("resource limits"))
        );
        assert!(matches!(
            parse_ack(Some(StatusCode::NO_RESPONDERS), b"", "AMI"),
            Ack::Failed(_)
        ));
        assert_eq!(parse_ack(None, b"garbage", "AMI"), Ack::Foreign);
        assert!(matches!(
            parse_ack(None, br#"{"stream":"AMI","garbage":1}"#, "AMI"),
            Ack::Failed(_)
        ));
    }

    #[test]
    fn refusals_that_a_retry_cannot_change_are_final_with_their_reason() {
        for (code, err_code, description, reason) in [
            (
                400,
                10054,
                "message size exceeds maximum allowed",
                Refusal::TooLarge,
            ),
            (
                400,
                10097,
                "header size exceeds maximum allowed of 64k",
                Refusal::TooLarge,
            ),
            (503, 10077, "message too large", Refusal::TooLarge),
            (
                400,
                10109,
                "invalid operation on sealed stream",
                Refusal::Sealed,
            ),
            (
                400,
                10060,
                "expected stream does not match",
                Refusal::Expectation,
            ),
            (400, 10070, "wrong last msg ID: x", Refusal::Expectation),
            (400, 10071, "wrong last sequence: 4", Refusal::Expectation),
            (400, 10164, "wrong last sequence", Refusal::Expectation),
            (
                400,
                10193,
                "missing sequence for expected last sequence per subject",
                Refusal::Expectation,
            ),
            (400, 10165, "invalid per-message TTL", Refusal::Ttl),
            (400, 10166, "per-message TTL is disabled", Refusal::Ttl),
        ] {
            assert_eq!(
                parse_ack(None, &error_ack(code, err_code, description), "AMI"),
                Ack::Refused { reason, err_code },
                "{err_code} {description}"
            );
        }
    }

    #[test]
    fn refusals_that_may_pass_are_retried() {
        for (code, err_code, description) in [
            // A DiscardNew stream at its limits takes messages again once old ones go.
            (503, 10077, "maximum messages exceeded"),
            (503, 10077, "maximum bytes exceeded"),
            (503, 10077, "maximum messages per subject exceeded"),
            (503, 10077, "store closed"),
            (400, 10002, "resource limits exceeded for account"),
            (503, 10023, "insufficient resources"),
            (500, 10047, "insufficient storage resources available"),
            (500, 10009, "JetStream cluster can not handle request"),
            (503, 10063, "expected stream sequence does not match"),
            (429, 10167, "too many requests"),
            // Not known here: taken as passing, as before.
            (400, 19999, "something new"),
        ] {
            assert!(
                matches!(
                    parse_ack(None, &error_ack(code, err_code, description), "AMI"),
                    Ack::Failed(_)
                ),
                "{err_code} {description}"
            );
        }
    }

    #[test]
    fn a_reason_is_logged_at_most_once_an_interval_with_the_count_of_those_not_logged() {
        use crate::throttle::LOG_INTERVAL;
        use std::time::Duration;
        use tokio::time::Instant;
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        let sealed = Refusal::Sealed.index();
        assert_eq!(log.note(sealed, t0), Some(0));
        for k in 1..=500u32 {
            assert_eq!(log.note(sealed, t0 + Duration::from_millis(k.into())), None);
        }
        // Another reason has its own line.
        assert_eq!(log.note(Refusal::TooLarge.index(), t0), Some(0));
        assert_eq!(log.note(sealed, t0 + LOG_INTERVAL), Some(500));
        assert_eq!(log.note(sealed, t0 + LOG_INTERVAL), None);
    }

    #[test]
    fn an_ack_that_does_not_name_the_bridges_stream_is_no_ack_of_it() {
        for p in [
            &br#"{"stream":"ELSEWHERE","seq":1}"#[..],
            br#"{"stream":"AMI2","seq":1}"#,
            br#"{"stream":"AM","seq":1}"#,
            br#"{"seq":1}"#,
            br#"{"stream":7,"seq":1}"#,
            br#"{"stream":"OTHER","error":{"code":400,"err_code":10109}}"#,
            br#"{"error":{"code":400,"err_code":10054}}"#,
            b"",
        ] {
            assert_eq!(
                parse_ack(None, p, "AMI"),
                Ack::Foreign,
                "{}",
                String::from_utf8_lossy(p)
            );
        }
        assert_eq!(
            parse_ack(None, br#"{"stream" : "AMI", "seq":1}"#, "AMI"),
            Ack::Stored { duplicate: false }
        );
    }

    #[test]
    fn a_failure_text_is_escaped_and_bounded() {
        let mut p = b"{\"stream\":\"AMI\",\"error\":{\"description\":\"x\r\n\x1b[31m".to_vec();
        p.extend(std::iter::repeat_n(b'y', 100_000));
        let Ack::Failed(why) = parse_ack(None, &p, "AMI") else {
            panic!("not a failure");
        };
        assert!(!why.chars().any(char::is_control), "{why}");
        assert!(why.len() < 1_000, "{} bytes", why.len());
    }

    #[test]
    fn err_codes_are_read_as_numbers_not_as_text() {
        // The code and nothing longer: 100540 is not 10054.
        assert_eq!(err_code(br#"{"error":{"err_code":100540}}"#), Some(100_540));
        assert!(matches!(
            parse_ack(
                None,
                br#"{"stream":"AMI","error":{"code":400,"err_code":100540}}"#,
                "AMI"
            ),
            Ack::Failed(_)
        ));
        assert_eq!(err_code(br#"{"error":{"err_code" : 10109 }}"#), Some(10109));
        assert_eq!(err_code(br#"{"error":{"err_code":"10109"}}"#), None);
        assert_eq!(err_code(br#"{"error":{"err_code":}}"#), None);
        assert_eq!(err_code(br#"{"error":{"err_code":99999999999}}"#), None);
        assert_eq!(err_code(br#"{"error":{"code":400}}"#), None);
    }
}
