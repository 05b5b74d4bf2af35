//! Errors that wrap a cause name it in their own message and do not return it again from
//! `source()`: a chain printer (anyhow's `{:#}`, a log line that walks `source()`) shows
//! each cause once, and `{e}` alone still says why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/error_chain.rs"]
mod error_chain;

#[path = "support/scripted.rs"]
mod scripted;

use error_chain::assert_cause_shown_once;

use ami_proto::fleet::{FleetError, InvalidName, RouteError, ServerName};
use ami_proto::{
    ActionError, ClientConfig, ConnectFailure, DisconnectReason, EncodeError, SendError,
};
use scripted::{async_originate, originate_queued, Harness, Out};
use std::time::Instant;

#[test]
fn an_action_lost_with_its_connection_names_the_reason_once_in_its_printed_chain() {
    let refused = DisconnectReason::ConnectFailed(ConnectFailure::Refused);
    assert_cause_shown_once(&ActionError::NotSent(refused), "connection refused");
    assert_cause_shown_once(&ActionError::Unknown(DisconnectReason::Eof), "eof");
}

#[test]
fn an_accepted_originate_whose_session_ends_names_the_reason_once_in_its_printed_chain() {
    let cfg = ClientConfig::builder("admin", "s3cr3t")
        .events("call")
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, Instant::now());
    h.ready();
    let accepted = h.send(async_originate(30_000));
    h.drain();
    assert!(h.feed(&originate_queued(accepted.as_str())).is_empty());
    let mut out = h.eof();
    out.extend(h.drain());
    let lost = out.iter().find_map(|o| match o {
        Out::Completed(id, Err(e @ ActionError::FollowUpLost { .. })) if *id == accepted => Some(e),
        _ => None,
    });
    let lost = lost.unwrap_or_else(|| panic!("no FollowUpLost in {out:?}"));
    assert_cause_shown_once(lost, "eof");
}

#[test]
fn an_invalid_action_names_the_field_problem_once_in_its_printed_chain() {
    assert_cause_shown_once(
        &SendError::Invalid(EncodeError::EmptyName),
        "action name is empty",
    );
}

#[test]
fn an_invalid_server_name_names_the_problem_once_in_its_printed_chain() {
    assert_cause_shown_once(
        &FleetError::InvalidName(InvalidName::Empty),
        "a server name cannot be empty",
    );
}

#[test]
fn an_action_a_server_refused_names_the_refusal_once_in_its_printed_chain() {
    let refused = RouteError::Send {
        server: ServerName::new("pbx1").unwrap(),
        error: SendError::TooManyFilters,
    };
    assert_cause_shown_once(&refused, "filters can be installed");
}

#[test]
fn a_full_queue_refusal_names_the_setting_whose_cap_it_hit() {
    use ami_proto::FullQueue;
    for (what, setting) in [
        (FullQueue::Pending, "max_pending_actions"),
        (FullQueue::Queued, "max_queued_actions"),
        (FullQueue::StreamMarks, "stream_marks"),
    ] {
        assert_eq!(
            SendError::QueueFull { what, cap: 3 }.to_string(),
            format!("queue full: {setting} is at its cap of 3")
        );
    }
}
