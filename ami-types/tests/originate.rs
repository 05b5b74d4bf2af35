//! `OriginateEnd`: an async Originate's outcome, as a real client resolves it from what a
//! scripted server says, sorted into answered, failed (with its reason), refused, placed
//! with an unknown end, and never sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_proto::{Action, ActionError, Outcome};
use ami_types::actions::Originate;
use ami_types::originate::{DialReason, OriginateEnd};
use support::Then;

/// An async Originate through a real client whose server answers it with `text` (`{id}`
/// its ActionID), then does `then`: its outcome.
fn originate(text: &str, then: Then) -> Outcome {
    let action: Action = Originate::new("PJSIP/1001")
        .application("Wait")
        .data("5")
        .async_(true)
        .timeout(20_000)
        .into();
    support::outcome(action, |aid| text.replace("{id}", aid), then)
}

const QUEUED: &str =
    "Response: Success\r\nActionID: {id}\r\nMessage: Originate successfully queued\r\n\r\n";

fn with_response(response: &str, reason: u8) -> String {
    format!(
        "{QUEUED}Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: {{id}}\r\n\
         Response: {response}\r\nChannel: PJSIP/1001\r\nApplication: Wait\r\nData: 5\r\n\
         Reason: {reason}\r\nUniqueid: 1796540923.7\r\nCallerIDNum: <unknown>\r\n\
         CallerIDName: <unknown>\r\n\r\n"
    )
}

#[test]
fn an_answered_call_is_answered_with_its_originate_response() {
    let outcome = originate(&with_response("Success", 4), Then::Stays);
    let OriginateEnd::Answered(r) = OriginateEnd::of(&outcome) else {
        panic!("{outcome:?}")
    };
    assert_eq!(r.uniqueid(), Some("1796540923.7"));
}

#[test]
fn a_failed_call_says_why_it_ended_in_words_and_code() {
    for (code, reason) in [
        (0, DialReason::Failed),
        (1, DialReason::HungUp),
        (3, DialReason::NoAnswer),
        (5, DialReason::Busy),
        (8, DialReason::Congestion),
        (7, DialReason::Other(7)),
    ] {
        let outcome = originate(&with_response("Failure", code), Then::Stays);
        let OriginateEnd::Failed {
            reason: got,
            response,
        } = OriginateEnd::of(&outcome)
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(got, reason);
        assert_eq!(got.code(), i64::from(code));
        assert_eq!(response.reason(), Some(i64::from(code)));
    }
    assert_eq!(DialReason::Busy.to_string(), "busy (reason 5)");
    assert_eq!(DialReason::from_code(4), DialReason::Answered);
}

#[test]
fn an_originate_asterisk_refuses_is_refused_not_a_failed_call() {
    // Asterisk's refusals before any dial say what was wrong (`action_originate`).
    for message in [
        "Invalid channel",
        "Originate with 'Exten' requires 'Context' and 'Priority'",
    ] {
        let outcome = originate(
            &format!("Response: Error\r\nActionID: {{id}}\r\nMessage: {message}\r\n\r\n"),
            Then::Stays,
        );
        let OriginateEnd::Refused(r) = OriginateEnd::of(&outcome) else {
            panic!("{outcome:?}")
        };
        assert_eq!(r.text(), Some(message));
    }
}

#[test]
fn originate_failed_without_an_originate_response_is_a_failure_that_may_have_rung() {
    // What a sync Originate gets once its dial did not connect (the fixture
    // originate_sync_blocks.raw: the call's Newchannel and DialBegin came first): not a
    // refusal, so never "no call was placed".
    let outcome = originate(
        "Response: Error\r\nActionID: {id}\r\nMessage: Originate failed\r\n\r\n",
        Then::Stays,
    );
    let OriginateEnd::FailedWithoutReason(r) = OriginateEnd::of(&outcome) else {
        panic!("{outcome:?}")
    };
    assert_eq!(r.text(), Some("Originate failed"));
}

#[test]
fn an_accepted_originate_whose_session_ends_is_placed_with_its_end_unknown() {
    let outcome = originate(QUEUED, Then::Closes);
    assert!(
        matches!(outcome, Err(ActionError::FollowUpLost { .. })),
        "{outcome:?}"
    );
    assert!(matches!(
        OriginateEnd::of(&outcome),
        OriginateEnd::Placed(_)
    ));
    // Written, then the connection went before any answer: it may be ringing.
    let outcome = originate("", Then::Closes);
    assert!(
        matches!(OriginateEnd::of(&outcome), OriginateEnd::InDoubt(_)),
        "{outcome:?}"
    );
    // Never written: no call.
    let never: Outcome = Err(ActionError::NotSent(ami_proto::DisconnectReason::Eof));
    assert!(matches!(OriginateEnd::of(&never), OriginateEnd::NotSent(_)));
}

#[test]
fn an_async_adapters_reply_is_sorted_by_of_response_and_of_error_as_of_sorts_an_outcome() {
    // A reply of ami-tokio or ami-async-std is Result<Response, AmiError>: its Ok and
    // AmiError::Action parts go through of_response and of_error, which must agree with of.
    let outcomes = [
        originate(&with_response("Success", 4), Then::Stays),
        originate(&with_response("Failure", 5), Then::Stays),
        originate(
            "Response: Error\r\nActionID: {id}\r\nMessage: Originate failed\r\n\r\n",
            Then::Stays,
        ),
    ];
    for outcome in &outcomes {
        let split = match outcome {
            Ok(r) => OriginateEnd::of_response(r),
            Err(e) => OriginateEnd::of_error(e),
        };
        assert_eq!(
            format!("{split:?}"),
            format!("{:?}", OriginateEnd::of(outcome))
        );
    }
    assert!(matches!(
        OriginateEnd::of_error(outcomes[1].as_ref().unwrap_err()),
        OriginateEnd::Failed {
            reason: DialReason::Busy,
            ..
        }
    ));
}
