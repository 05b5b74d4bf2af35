//! What a person reads on stderr: every reason in words, never Debug text.

use crate::session::CallError;
use crate::url::ServerUrl;
use ami_proto::{
    ActionError, CertificateProblem, ConnectFailure, DisconnectReason, Phase, Response, SendError,
};
use std::io::ErrorKind;
use std::time::{Duration, Instant};

/// `1.5 s`, `250 ms`, `3 µs`.
pub(crate) fn duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{} µs", d.as_micros())
    }
}

/// What an I/O error kind means for a connection.
pub(crate) fn io_kind(kind: ErrorKind) -> String {
    match kind {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut => "timed out".into(),
        ErrorKind::HostUnreachable => "no route to host".into(),
        ErrorKind::NetworkUnreachable => "network unreachable".into(),
        ErrorKind::ConnectionReset => "connection reset by the server".into(),
        ErrorKind::ConnectionAborted => "connection aborted".into(),
        ErrorKind::BrokenPipe => "connection broken while writing".into(),
        ErrorKind::UnexpectedEof => "connection closed in the middle of a message".into(),
        ErrorKind::AddrNotAvailable => "local address not available".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::InvalidData => "invalid data (a TLS error, or not the expected protocol)".into(),
        other => other.to_string(),
    }
}

/// Why a session with `url` was lost or closed, in words.
pub(crate) fn reason(r: &DisconnectReason, url: &ServerUrl) -> String {
    let at = url.authority();
    match r {
        DisconnectReason::ConnectFailed(cause) if url.tls => format!(
            "could not open a TLS session with {at}: {}",
            connect_cause(*cause)
        ),
        DisconnectReason::ConnectFailed(cause) => {
            format!("could not connect to {at}: {}", connect_cause(*cause))
        }
        DisconnectReason::ConnectTimeout => format!("connecting to {at} timed out"),
        DisconnectReason::TlsHandshakeTimeout => format!(
            "{at} accepted the connection but did not finish the TLS handshake in time \
             (is it a TLS port?)"
        ),
        DisconnectReason::BannerTimeout => format!(
            "{at} accepted the connection but sent no AMI banner in time \
             (not a manager port, or the server is at its session limit)"
        ),
        DisconnectReason::BadBanner => {
            format!("{at} is not an Asterisk Manager Interface (unexpected first line)")
        }
        DisconnectReason::LoginTimeout => format!("{at} did not answer the login in time"),
        DisconnectReason::LoginRejected { message } => {
            format!("{at} rejected the login for {}: {message}", url.user)
        }
        DisconnectReason::Eof => format!("{at} closed the connection"),
        DisconnectReason::TransportError(kind) => {
            format!("connection to {at} failed: {}", io_kind(*kind))
        }
        DisconnectReason::HeartbeatTimeout => {
            format!("{at} stopped answering (no reply to a heartbeat Ping)")
        }
        DisconnectReason::EventOverflow => {
            "the event queue overflowed (this consumer was too slow)".into()
        }
        DisconnectReason::ServerShutdown => format!("Asterisk on {at} is shutting down"),
        DisconnectReason::Logoff => format!("logged off from {at}"),
        DisconnectReason::LocalClose => format!("closed the connection to {at}"),
        other => format!("session with {at} ended: {other}"),
    }
}

/// Why a connect failed, as the adapter reported it.
fn connect_cause(cause: ConnectFailure) -> String {
    match cause {
        ConnectFailure::Refused => io_kind(ErrorKind::ConnectionRefused),
        ConnectFailure::TimedOut => io_kind(ErrorKind::TimedOut),
        ConnectFailure::NetworkUnreachable => io_kind(ErrorKind::NetworkUnreachable),
        ConnectFailure::HostUnreachable => io_kind(ErrorKind::HostUnreachable),
        ConnectFailure::Tls => {
            "the TLS handshake failed (does the port speak TLS? amis:// is for Asterisk's TLS port, 5039)".into()
        }
        ConnectFailure::TlsCertificate(problem) => {
            let hint = match problem {
                // A CA made again under the same name (a new key) fails the signature.
                CertificateProblem::UnknownIssuer | CertificateProblem::BadSignature => {
                    " (--ca must hold the certificate of the CA that signed it)"
                }
                CertificateProblem::WrongName => {
                    " (the URL's host must be a name or address the certificate carries)"
                }
                CertificateProblem::CaAsServer => {
                    " (give Asterisk a certificate signed by a CA, and --ca that CA's certificate)"
                }
                _ => "",
            };
            format!("the server's TLS certificate was refused: {problem}{hint}")
        }
        ConnectFailure::Other(kind) => io_kind(kind),
        other => other.to_string(),
    }
}

/// A lost session and what happens next: a retry, or with the circuit breaker open
/// (`breaker_open`: many failures in a row) one probe after its cooldown.
pub(crate) fn lost(
    r: &DisconnectReason,
    retry_at: Option<Instant>,
    breaker_open: bool,
    url: &ServerUrl,
) -> String {
    let next = match retry_at {
        Some(t) => format!(
            "{} in {}",
            if breaker_open {
                "circuit breaker open after repeated failures, next try"
            } else {
                "retrying"
            },
            duration(t.saturating_duration_since(Instant::now()))
        ),
        None => "not retrying".into(),
    };
    format!("lost the session: {}; {next}", reason(r, url))
}

/// Asterisk's Originate `Reason` codes (the AST_CONTROL value that ended the dial).
fn originate_reason(code: &str) -> &'static str {
    match code {
        "0" => "no such channel or it failed",
        "1" => "hung up",
        "3" => "rang, no answer",
        "4" => "answered",
        "5" => "busy",
        "8" => "congestion",
        _ => "unknown reason",
    }
}

fn server_error(r: &Response) -> String {
    match r.follow_up() {
        // A second response (JabberSend's result), not an event: what it says.
        Some(second) if second.event().is_none() => {
            format!("the server answered Error: {}", error_text(second))
        }
        Some(ev) => {
            let code = ev.get_str("Reason").unwrap_or("?");
            format!(
                "{} says {}: Reason {code} ({})",
                ev.event().unwrap_or("the follow-up event"),
                ev.get_str("Response").unwrap_or("failure"),
                originate_reason(code)
            )
        }
        None => format!("the server answered Error: {}", error_text(r.message())),
    }
}

/// Output lines of a failed action said at most.
const OUTPUT_LINES_SAID: usize = 3;

/// What an error response says: its `Output` lines when it has some (a `Command` that
/// failed: "Command output follows" is no reason, the output is), else its `Message`, in a
/// lossy form if it is not UTF-8 (stdout has its exact bytes).
fn error_text(m: &ami_proto::Message) -> String {
    let output: Vec<_> = m.command_output().collect();
    if !output.is_empty() {
        let mut said: Vec<String> = output
            .iter()
            .take(OUTPUT_LINES_SAID)
            .map(|line| crate::terminal::cell(&line.to_str_lossy()).into_owned())
            .collect();
        if output.len() > OUTPUT_LINES_SAID {
            said.push(format!("({} more lines)", output.len() - OUTPUT_LINES_SAID));
        }
        return said.join(" / ");
    }
    m.get("Message")
        .map_or_else(|| "(no message)".into(), |v| v.to_str_lossy().into_owned())
}

/// How long an action waits when the command sets no deadline of its own: the client's
/// default `action_timeout` (`action --timeout`'s help documents it).
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// What a failed action's line names besides its error: the action, how long the command
/// waited for it, and the command's flag that sets that wait (`--timeout`), if it has one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt<'a> {
    /// The action's name, e.g. `Ping`.
    pub(crate) action: &'a str,
    /// The action's deadline, when the command knows it.
    pub(crate) waited: Option<Duration>,
    /// The flag that sets the deadline in this command (`demo` and `bench` have none).
    pub(crate) flag: Option<&'a str>,
}

impl Attempt<'_> {
    /// `within 1.0 s` or `in time`.
    fn within(&self) -> String {
        self.waited
            .map_or_else(|| "in time".into(), |d| format!("within {}", duration(d)))
    }

    /// `; to wait longer, raise --timeout`, or nothing without a flag.
    fn raise(&self) -> String {
        self.flag
            .map_or_else(String::new, |f| format!("; to wait longer, raise {f}"))
    }
}

/// Why an action did not succeed, in words, naming the server and the action: one line an
/// operator can act on (what happened in AMI terms, whether the server may have run it,
/// the flag to change).
pub(crate) fn call_error(e: &CallError, url: &ServerUrl, attempt: &Attempt<'_>) -> String {
    format!("{}: {}", url.authority(), call_failure(e, url, attempt))
}

/// [`call_error`] without the server, for lines a caller prefixes with it already
/// (`action --on`).
pub(crate) fn call_failure(e: &CallError, url: &ServerUrl, attempt: &Attempt<'_>) -> String {
    format!("{}: {}", attempt.action, what_happened(e, url, attempt))
}

fn what_happened(e: &CallError, url: &ServerUrl, attempt: &Attempt<'_>) -> String {
    let unsent = "not sent (the server never saw it)";
    match e {
        // The library's advice names a client setting the CLI has no flag for.
        CallError::Refused(SendError::SyncOriginateRefused) => format!(
            "{unsent}: a sync Originate blocks the whole AMI session; add Async=true \
             (its result then comes as an OriginateResponse)"
        ),
        CallError::Refused(e) => format!("{unsent}: the client refused it: {e}"),
        CallError::Closed => format!("{unsent}: the session had ended"),
        CallError::Action(a) => match a {
            ActionError::Server(r) => server_error(r),
            ActionError::TimedOut { phase, partial } => match phase {
                Phase::Queued => format!(
                    "{unsent}: timed out: not written {} (not connected, the pipeline \
                     stayed full, or the server stopped reading){}",
                    attempt.within(),
                    attempt.raise()
                ),
                Phase::Response => format!(
                    "timed out: no response {}: outcome unknown, the server may still run it{}",
                    attempt.within(),
                    attempt.raise()
                ),
                Phase::List => format!(
                    "timed out: list cut short: the server ran it, but its EventList did not \
                     complete {} ({} item(s) printed){}",
                    attempt.within(),
                    partial.as_deref().map_or(0, |r| r.items().len()),
                    attempt.raise()
                ),
                // Its wait is the action's deadline plus what the action asks for (an
                // Originate's ring Timeout): no single number to say.
                Phase::FollowUp => format!(
                    "timed out: the server accepted it, but its follow-up (an Originate's \
                     OriginateResponse, a WaitEvent's WaitEventComplete...) did not arrive in \
                     time: outcome unknown{}{}",
                    if attempt.action.eq_ignore_ascii_case("Originate") {
                        ", the call may still be placed"
                    } else {
                        ""
                    },
                    attempt.raise()
                ),
                other => format!("timed out: {other}{}", attempt.raise()),
            },
            ActionError::ListOverflow { items, bytes } => format!(
                "list cut short: the server ran it, but the list outgrew the client's cap \
                 ({items} items, {bytes} bytes kept)"
            ),
            ActionError::ListIncomplete { items, dropped, .. } => format!(
                "the list is incomplete: {dropped} item(s) dropped on the way in (over the \
                 decoder's size limits or broken), {items} printed"
            ),
            ActionError::Cancelled => "cancelled".into(),
            // The discarded answer may have been `Response: Error` (an oversized one is
            // thrown away like a success), and the error keeps only why it was discarded.
            ActionError::ResponseDiscarded { reason } => format!(
                "the server answered, but its answer was thrown away ({reason}): whether it \
                 ran is not known"
            ),
            // Failed so when its last byte never left, however many of the first ones did
            // (the server may have read them): it cannot have run, as Asterisk runs an
            // action once it read its blank line.
            ActionError::NotSent(r) => format!(
                "not sent whole (the server cannot have run it): {}",
                reason(r, url)
            ),
            ActionError::Unknown(r) => format!(
                "outcome unknown (the server may have run it): {}",
                reason(r, url)
            ),
            ActionError::FollowUpLost { reason: r, .. } => format!(
                "the server accepted it (the call is being placed), then {}: how it ends \
                 is unknown",
                reason(r, url)
            ),
            other => other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The core fails an action `NotSent` when its session is lost before its last byte
    /// left, however much of it was written (ami-proto client_deadlines
    /// an_action_partly_written_when_its_session_is_lost_fails_not_sent): the server may
    /// have read part of it, so the line says it cannot have run, not that it was never seen.
    #[test]
    fn a_not_sent_action_is_said_not_run_not_unseen() {
        let url: ServerUrl = "ami://admin:s3cret@127.0.0.1:5038".parse().unwrap();
        let attempt = Attempt {
            action: "UserEvent",
            waited: None,
            flag: None,
        };
        let e = CallError::Action(ActionError::NotSent(DisconnectReason::Eof));
        let line = call_error(&e, &url, &attempt);
        assert!(!line.contains("never saw it"), "{line}");
        assert!(
            line.starts_with(
                "127.0.0.1:5038: UserEvent: not sent whole (the server cannot have run it): "
            ),
            "{line}"
        );
    }

    #[test]
    fn a_lost_session_says_when_the_next_try_is_the_open_breakers_probe() {
        let url: ServerUrl = "ami://admin:s3cret@127.0.0.1:5038".parse().unwrap();
        let why = DisconnectReason::ConnectFailed(ConnectFailure::Refused);
        let at = Some(Instant::now() + Duration::from_secs(60));
        let retry = lost(&why, at, false, &url);
        assert!(retry.contains("; retrying in "), "{retry}");
        assert!(!retry.contains("breaker"), "{retry}");
        let probe = lost(&why, at, true, &url);
        assert!(
            probe.contains("; circuit breaker open after repeated failures, next try in "),
            "{probe}"
        );
        assert!(!probe.contains("s3cret"), "{probe}");
        assert!(lost(&why, None, true, &url).ends_with("; not retrying"));
    }

    /// A response over the client's decoder limits is thrown away whatever it said: an
    /// oversized `Response: Error` (or one glued behind a banner line) is discarded the
    /// same way as a success. The client keeps only why it was discarded, so the line must
    /// not claim the server ran the action.
    #[test]
    fn a_discarded_response_does_not_claim_the_action_ran() {
        let url: ServerUrl = "ami://admin:s3cret@127.0.0.1:5038".parse().unwrap();
        let attempt = Attempt {
            action: "Command",
            waited: None,
            flag: None,
        };
        let e = CallError::Action(ActionError::ResponseDiscarded {
            reason: ami_proto::Discard::Malformed(ami_proto::DecodeError::MessageTooLarge {
                limit: 65536,
            }),
        });
        let line = call_error(&e, &url, &attempt);
        assert!(!line.contains("so it ran"), "{line}");
        assert!(line.contains("whether it ran is not known"), "{line}");
    }
}
