//! `OriginateEnd`: an async Originate's outcome, as a real client resolves it from what a
//! scripted server says, sorted into answered, failed (with its reason), refused, placed
//! with an unknown end, and never sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::{Action, ActionError, Client, ClientConfig, Input, Notice, Outcome, Output};
use ami_types::actions::Originate;
use ami_types::originate::{DialReason, OriginateEnd};
use std::time::{Duration, Instant};

/// What the scripted server does with the Originate.
enum Server {
    /// Sends these bytes (`{id}` is its ActionID).
    Says(String),
    /// Says this, then closes the connection.
    SaysThenCloses(String),
}

/// An async Originate through a real client against `server`: its outcome.
fn originate(server: Server) -> Outcome {
    let config = ClientConfig::builder("admin", "amp111")
        .seed(3)
        .build()
        .unwrap();
    let mut now = Instant::now();
    let mut client = Client::new(config, now);
    let action: Action = Originate::new("PJSIP/1001")
        .application("Wait")
        .data("5")
        .async_(true)
        .timeout(20_000)
        .into();
    let id = client.send_action(now, action).unwrap();
    let mut closed = false;
    for _ in 0..8 {
        loop {
            match client.poll_output() {
                Output::Connect => {
                    client.handle_input(now, Input::Connected);
                    client.handle_input(now, Input::Received(b"Asterisk Call Manager/11.0.0\r\n"));
                }
                Output::Notice(Notice::Completed { id: done, outcome }) if done == id => {
                    return outcome
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
        if closed {
            break;
        }
        let written = String::from_utf8(client.transmit().to_vec()).unwrap();
        client.advance_transmit(written.len());
        let mut answer = String::new();
        let mut close = false;
        for block in written.split("\r\n\r\n").filter(|b| !b.is_empty()) {
            let aid = block
                .lines()
                .find_map(|l| l.strip_prefix("ActionID: "))
                .unwrap_or("");
            if block.starts_with("Action: Login") {
                answer += &format!("Response: Success\r\nActionID: {aid}\r\nMessage: Authentication accepted\r\n\r\n");
            } else if block.starts_with("Action: Originate") {
                let (text, then_close) = match &server {
                    Server::Says(t) => (t, false),
                    Server::SaysThenCloses(t) => (t, true),
                };
                answer += &text.replace("{id}", aid);
                close = then_close;
            }
        }
        now += Duration::from_millis(1);
        client.handle_input(now, Input::Received(answer.as_bytes()));
        if close {
            client.handle_input(now, Input::Eof);
            closed = true;
        }
    }
    panic!("no outcome");
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
    let outcome = originate(Server::Says(with_response("Success", 4)));
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
        let outcome = originate(Server::Says(with_response("Failure", code)));
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
    let outcome = originate(Server::Says(
        "Response: Error\r\nActionID: {id}\r\nMessage: Originate failed\r\n\r\n".into(),
    ));
    let OriginateEnd::Refused(r) = OriginateEnd::of(&outcome) else {
        panic!("{outcome:?}")
    };
    assert_eq!(r.text(), Some("Originate failed"));
}

#[test]
fn an_accepted_originate_whose_session_ends_is_placed_with_its_end_unknown() {
    let outcome = originate(Server::SaysThenCloses(QUEUED.into()));
    assert!(
        matches!(outcome, Err(ActionError::FollowUpLost { .. })),
        "{outcome:?}"
    );
    assert!(matches!(
        OriginateEnd::of(&outcome),
        OriginateEnd::Placed(_)
    ));
    // Written, then the connection went before any answer: it may be ringing.
    let outcome = originate(Server::SaysThenCloses(String::new()));
    assert!(
        matches!(OriginateEnd::of(&outcome), OriginateEnd::InDoubt(_)),
        "{outcome:?}"
    );
    // Never written: no call.
    let never: Outcome = Err(ActionError::NotSent(ami_proto::DisconnectReason::Eof));
    assert!(matches!(OriginateEnd::of(&never), OriginateEnd::NotSent(_)));
}
