//! An action Asterisk answers twice (res_xmpp's `JabberSend`: "Attempting to send Jabber
//! Message", then a second response saying whether it was sent) completes with the second
//! response: a message that was never sent never reads as sent, and the second response is
//! never a stray one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{Action, ActionError, ClientConfig, Phase};
use scripted::{error, msg, success, Harness};
use std::time::{Duration, Instant};

fn ready() -> Harness {
    let cfg = ClientConfig::builder("admin", "amp111")
        .seed(11)
        .ping_interval(Duration::from_secs(3600))
        .action_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, Instant::now());
    h.ready();
    h.events();
    h
}

fn jabber_send() -> Action {
    Action::new("JabberSend")
        .field("Jabber", "asterisk")
        .field("ScreenName", "bob@example.com")
        .field("Message", "hello")
}

const ACK: &str = "Attempting to send Jabber Message";

#[test]
fn jabber_send_succeeds_only_with_its_second_response() {
    let mut h = ready();
    let id = h.send(jabber_send());
    h.take("JabberSend");
    h.feed(&success(id.as_str(), ACK));
    assert!(
        h.outcomes(&id).is_empty(),
        "the acknowledgement says nothing of the result"
    );
    h.feed(&msg(&[("Response", "Success"), ("ActionID", id.as_str())]));
    let response = h.outcome(&id).as_ref().unwrap();
    assert_eq!(response.text(), Some(ACK));
    assert_eq!(
        response.follow_up().and_then(|m| m.get_str("Response")),
        Some("Success")
    );
    assert_eq!(h.client.stats().unmatched, 0);
}

#[test]
fn jabber_send_fails_with_the_servers_second_response() {
    let mut h = ready();
    let id = h.send(jabber_send());
    h.take("JabberSend");
    h.feed(&success(id.as_str(), ACK));
    h.feed(&error(id.as_str(), "Could not find Sender"));
    let Err(ActionError::Server(response)) = h.outcome(&id) else {
        panic!("not sent, yet {:?}", h.outcome(&id));
    };
    assert_eq!(
        response.follow_up().and_then(|m| m.get_str("Message")),
        Some("Could not find Sender")
    );
    assert_eq!(h.client.stats().unmatched, 0);
}

#[test]
fn jabber_send_refused_at_once_fails_with_its_only_response() {
    let mut h = ready();
    let id = h.send(jabber_send());
    h.take("JabberSend");
    h.feed(&error(id.as_str(), "No ScreenName specified"));
    assert!(matches!(h.outcome(&id), Err(ActionError::Server(_))));
}

#[test]
fn jabber_send_whose_result_never_comes_times_out_waiting_for_it() {
    let mut h = ready();
    let id = h.send(jabber_send());
    h.take("JabberSend");
    h.feed(&success(id.as_str(), ACK));
    h.advance(Duration::from_secs(6));
    let Err(ActionError::TimedOut { phase, partial }) = h.outcome(&id) else {
        panic!("{:?}", h.outcome(&id));
    };
    assert_eq!(*phase, Phase::FollowUp);
    assert_eq!(partial.as_ref().and_then(|r| r.text()), Some(ACK));
    // The result that comes after all is a late answer, dropped and counted once, not a
    // stray response.
    let late = h.client.stats().late_answers_dropped;
    h.feed(&msg(&[("Response", "Success"), ("ActionID", id.as_str())]));
    let stats = h.client.stats();
    assert_eq!(stats.late_answers_dropped - late, 1);
    assert_eq!(stats.unmatched, 0);
}

#[test]
fn jabber_send_cancelled_before_any_answer_swallows_both_answers() {
    let mut h = ready();
    let id = h.send(jabber_send());
    h.take("JabberSend");
    assert!(h.client.cancel(h.now, &id));
    let late = h.client.stats().late_answers_dropped;
    h.feed(&success(id.as_str(), ACK));
    h.feed(&error(id.as_str(), "Could not find Sender"));
    // A third response with its ActionID is nobody's: the entry went with the second.
    h.feed(&msg(&[("Response", "Success"), ("ActionID", id.as_str())]));
    let stats = h.client.stats();
    assert_eq!(stats.late_answers_dropped - late, 2);
    assert_eq!(stats.unmatched, 1);
    assert_eq!(h.outcomes(&id).len(), 1, "completed once: cancelled");
}

/// The second response is the one a JabberSend waits for: when the client has to throw it
/// away (here glued behind a banner line sent again mid-session, as in
/// `client_hostile.rs`), the server did answer, so the action fails
/// `ResponseDiscarded` at once, as any action whose answer was discarded does; it must not
/// wait to its deadline and read `TimedOut` (a caller that retries sends the message twice).
#[test]
fn jabber_send_whose_result_is_discarded_fails_at_once_as_discarded() {
    let mut h = ready();
    let id = h.send(jabber_send());
    h.take("JabberSend");
    h.feed(&success(id.as_str(), ACK));
    let mut wire = scripted::BANNER.to_vec();
    wire.extend(error(id.as_str(), "Could not find Sender"));
    h.feed(&wire);
    let now = h.outcomes(&id).len();
    h.advance(Duration::from_secs(6));
    assert!(
        now == 1
            && matches!(
                h.outcome(&id),
                Err(ActionError::ResponseDiscarded {
                    reason: ami_proto::Discard::NotEventOrResponse
                })
            ),
        "completed {now} times when the discard was read; then {:?}",
        h.outcomes(&id)
    );
}

/// The error a JabberSend refused by its second response reads says why, as every other
/// server error does (its `Message`): "Could not find Sender", not the words made for an
/// OriginateResponse ("event Error (Reason ?)"), which name an event that never came and
/// lose the server's reason.
#[test]
fn jabber_send_refused_by_its_second_response_says_the_servers_reason() {
    let mut h = ready();
    let id = h.send(jabber_send());
    h.take("JabberSend");
    h.feed(&success(id.as_str(), ACK));
    h.feed(&error(id.as_str(), "Could not find Sender"));
    let Err(e) = h.outcome(&id) else {
        panic!("not sent, yet {:?}", h.outcome(&id));
    };
    let shown = e.to_string();
    assert!(
        shown.contains("Could not find Sender") && !shown.contains("event"),
        "the error reads {shown:?}"
    );
}

#[test]
fn jabber_send_whose_session_is_lost_between_its_answers_fails_once_as_follow_up_lost() {
    let mut h = ready();
    let id = h.send(jabber_send());
    h.take("JabberSend");
    h.feed(&success(id.as_str(), ACK));
    let retry = h
        .eof()
        .iter()
        .find_map(|o| match o {
            scripted::Out::Disconnected(_, Some(at)) => Some(*at),
            _ => None,
        })
        .expect("a retry after the loss");
    // Accepted, its result lost with the session: never a success, never re-sent.
    let outcomes = h.outcomes(&id);
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let Err(ActionError::FollowUpLost { response, .. }) = outcomes[0] else {
        panic!("{:?}", outcomes[0]);
    };
    assert_eq!(response.text(), Some(ACK));
    h.advance_to(retry);
    let out = h.login();
    assert!(
        matches!(out.last(), Some(scripted::Out::Ready(_))),
        "{out:?}"
    );
    assert_eq!(h.inbox_actions(), Vec::<String>::new(), "nothing re-sent");
    // A result that still came on the new session is no answer of a new request.
    h.feed(&msg(&[("Response", "Success"), ("ActionID", id.as_str())]));
    assert_eq!(h.outcomes(&id).len(), 1);
}

/// The entry of an ended JabberSend goes with its second response whatever that says: a
/// further response with its ActionID answers nothing, so it is counted unmatched, not
/// swallowed as part of the ended action's answer.
#[test]
fn an_ended_jabber_sends_entry_goes_with_its_successful_second_response() {
    // Cancelled before any answer, or timed out waiting for its result.
    for timed_out in [false, true] {
        let mut h = ready();
        let id = h.send(jabber_send());
        h.take("JabberSend");
        if !timed_out {
            assert!(h.client.cancel(h.now, &id));
        }
        h.feed(&success(id.as_str(), ACK));
        if timed_out {
            h.advance(Duration::from_secs(6));
        }
        let (late, unmatched) = {
            let s = h.client.stats();
            (s.late_answers_dropped, s.unmatched)
        };
        h.feed(&msg(&[("Response", "Success"), ("ActionID", id.as_str())]));
        h.feed(&msg(&[("Response", "Success"), ("ActionID", id.as_str())]));
        let stats = h.client.stats();
        assert_eq!(
            (
                stats.late_answers_dropped - late,
                stats.unmatched - unmatched
            ),
            (1, 1),
            "timed out: {timed_out}"
        );
        assert_eq!(h.outcomes(&id).len(), 1, "completed once");
    }
}
