//! What an action changes in the session beyond its answer (the event mask, the filters
//! re-applied at every login) is kept only if the server can have taken it: an action
//! withdrawn unsent (cancelled, or past its deadline before it left) or refused by the
//! server leaves the session as it was, at this login and every later one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{Action, ActionError, ClientConfig, ClientConfigBuilder, SendError};
use scripted::{async_originate, id_of, Harness, Out};
use std::time::{Duration, Instant};

fn base() -> ClientConfigBuilder {
    ClientConfig::builder("admin", "s3cr3t")
        .events("call")
        .seed(11)
        .ping_interval(Duration::from_secs(3600))
}

#[test]
fn a_blank_event_mask_asterisk_refuses_leaves_the_session_mask_as_it_was() {
    // Asterisk reads the header with its leading blanks skipped (header_value): "  " is
    // the empty mask, answered "Invalid event mask", and the session's mask stays.
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("system,call").build().unwrap(), t0);
    h.ready();
    let mask = h
        .client
        .send_action(h.now, Action::new("Events").field("EventMask", "  "))
        .unwrap();
    h.drain();
    h.take("Events");
    h.feed(&scripted::error(mask.as_str(), "Invalid event mask"));
    // The session still reads call events: an async Originate is fine.
    let originate = h.client.send_action(h.now, async_originate(30_000));
    assert!(originate.is_ok(), "refused: {originate:?}");
    h.drain();
    h.take("Originate");
    let login = h.lose_and_reconnect_to_login();
    assert_eq!(login.get_str("Events"), Some("system,call"));
}

/// A client whose filter `filter` timed out (its entry still waiting for the answer), then
/// was answered by `answer` (given the filter's ActionID), then lost its session and logged
/// in again: what the new login installs is in its inbox.
fn filter_answered_late_then_logged_in_again(
    filter: &str,
    answer: impl Fn(&str) -> Vec<u8>,
) -> Harness {
    let t0 = Instant::now();
    let mut h = Harness::new(
        base()
            .action_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        t0,
    );
    h.ready();
    let id = h.client.add_filter(h.now, filter).unwrap();
    h.drain();
    h.take("Filter");
    h.advance(Duration::from_secs(3)); // the action times out, its entry waits for the answer
    h.feed(&answer(id.as_str()));
    let login = h.lose_and_reconnect_to_login();
    h.feed(&scripted::login_ok(id_of(&login)));
    h
}

#[test]
fn a_filter_refused_after_its_action_timed_out_is_not_re_applied_at_later_logins() {
    // add_filter's doc: "one the server refuses (an empty filter, a regex it cannot
    // compile) is not kept". A busy server answers after the action's deadline: the answer
    // is still the server's refusal of that filter.
    let h = filter_answered_late_then_logged_in_again("Event: (", |id| {
        scripted::error(id, "Filter Not Added")
    });
    assert!(
        h.inbox_actions().is_empty(),
        "the refused filter is re-applied (and refused) at every login: {:?}",
        h.inbox_actions()
    );
}

#[test]
fn a_filter_the_server_took_after_its_action_timed_out_is_re_applied_at_later_logins() {
    // The late answer is a Success: the server has the filter, so every later login
    // installs it again, as for one answered in time.
    let mut h = filter_answered_late_then_logged_in_again("Event: Newchannel", |id| {
        scripted::success(id, "Filter Added Successfully")
    });
    let reapplied = h.take("Filter");
    assert_eq!(reapplied.get_str("Filter"), Some("Event: Newchannel"));
}

#[test]
fn a_filter_whose_late_answer_is_the_servers_shutdown_is_re_applied_at_later_logins() {
    // "Asterisk is shutting down" refuses every action, not this filter: it is installed at
    // the next login, as for one refused that way in time.
    let mut h = filter_answered_late_then_logged_in_again("Event: Newchannel", |id| {
        scripted::error(id, "Asterisk is shutting down")
    });
    let reapplied = h.take("Filter");
    assert_eq!(reapplied.get_str("Filter"), Some("Event: Newchannel"));
}

#[test]
fn a_filter_cancelled_before_it_was_sent_is_not_installed_at_the_next_login() {
    // Client::cancel: "One none of whose bytes was handed out ... never goes out". The
    // filter never reached the server; the next login must not install it either.
    let t0 = Instant::now();
    let mut h = Harness::new(base().pipeline_depth(1).build().unwrap(), t0);
    h.ready();
    let _ping = h.send(Action::new("Ping"));
    h.take("Ping");
    let filter = h.client.add_filter(h.now, "Event: Hangup").unwrap();
    h.drain();
    assert!(h.inbox_actions().is_empty(), "queued behind the Ping");
    assert!(h.client.cancel(h.now, &filter));
    h.drain();
    let login = h.lose_and_reconnect_to_login();
    h.feed(&scripted::login_ok(id_of(&login)));
    assert!(
        h.inbox_actions().is_empty(),
        "the cancelled, never sent filter is installed at the next login: {:?}",
        h.inbox_actions()
    );
}

#[test]
fn an_event_mask_change_cancelled_before_it_was_sent_leaves_the_mask_as_it_was() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("off").pipeline_depth(1).build().unwrap(), t0);
    h.ready();
    let _ping = h.send(Action::new("Ping"));
    h.take("Ping");
    let mask = h.client.set_event_mask(h.now, "call").unwrap();
    h.drain();
    assert!(h.inbox_actions().is_empty(), "queued behind the Ping");
    assert!(h.client.cancel(h.now, &mask));
    h.drain();
    // The server's mask is still off: an async Originate could never get its answer.
    assert!(
        matches!(
            h.client.send_action(h.now, async_originate(30_000)),
            Err(SendError::FollowUpMasked { .. })
        ),
        "the client took a mask the server never got"
    );
    let login = h.lose_and_reconnect_to_login();
    assert_eq!(login.get_str("Events"), Some("off"));
}

#[test]
fn an_event_mask_change_past_its_deadline_before_it_was_sent_leaves_the_mask_as_it_was() {
    let t0 = Instant::now();
    let mut h = Harness::new(
        base()
            .events("off")
            .pipeline_depth(1)
            .action_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        t0,
    );
    h.ready();
    let _ping = h.send_with(
        Action::new("Ping"),
        ami_proto::SendOptions::timeout(Duration::from_secs(60)),
    );
    h.take("Ping");
    let _mask = h.client.set_event_mask(h.now, "call").unwrap();
    h.drain();
    h.advance(Duration::from_secs(3)); // still queued behind the unanswered Ping
    let login = h.lose_and_reconnect_to_login();
    assert_eq!(login.get_str("Events"), Some("off"));
}

#[test]
fn a_refused_event_mask_change_restores_the_mask_before_it_even_under_a_later_change() {
    // Two changes in flight: the first refused while the second is pending. The second's
    // mask stands; had it been refused too, the mask before both would come back.
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("system").build().unwrap(), t0);
    h.ready();
    let first = h.client.set_event_mask(h.now, "call").unwrap();
    let second = h.client.set_event_mask(h.now, "agent").unwrap();
    h.drain();
    h.take("Events");
    h.take("Events");
    h.feed(&scripted::error(first.as_str(), "Invalid event mask"));
    h.feed(&scripted::error(second.as_str(), "Invalid event mask"));
    let login = h.lose_and_reconnect_to_login();
    assert_eq!(login.get_str("Events"), Some("system"));

    let mut h = Harness::new(base().events("system").build().unwrap(), t0);
    h.ready();
    let first = h.client.set_event_mask(h.now, "call").unwrap();
    let _second = h.client.set_event_mask(h.now, "agent").unwrap();
    h.drain();
    h.take("Events");
    h.take("Events");
    h.feed(&scripted::error(first.as_str(), "Invalid event mask"));
    let login = h.lose_and_reconnect_to_login();
    assert_eq!(
        login.get_str("Events"),
        Some("agent"),
        "the later change stands"
    );
}

#[test]
fn a_filter_added_with_blanks_before_its_operation_is_kept_as_asterisk_installs_it() {
    // Asterisk skips a value's leading blanks: `Operation:   Add` adds the filter.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let add = h
        .client
        .send_action(
            h.now,
            Action::new("Filter")
                .field("Operation", "  Add")
                .field("Filter", "Event: Hangup"),
        )
        .unwrap();
    h.drain();
    h.take("Filter");
    h.feed(&scripted::success(
        add.as_str(),
        "Filter Added Successfully",
    ));
    let login = h.lose_and_reconnect_to_login();
    h.feed(&scripted::login_ok(id_of(&login)));
    assert_eq!(
        h.inbox_actions(),
        ["Filter"],
        "re-applied after the reconnect"
    );
}

#[test]
fn a_mask_change_a_login_already_carried_stays_the_mask_when_its_action_is_cancelled() {
    // The Events action was still queued when the session was lost: the next Login carried
    // its mask, so the server has it whatever becomes of the action.
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("call").pipeline_depth(1).build().unwrap(), t0);
    h.ready();
    let _ping = h.send_with(
        Action::new("Ping"),
        ami_proto::SendOptions::timeout(Duration::from_secs(600)),
    );
    h.take("Ping");
    let mask = h.client.set_event_mask(h.now, "off").unwrap();
    h.drain();
    assert!(h.inbox_actions().is_empty(), "queued behind the Ping");
    h.room = None;
    let login = h.lose_and_reconnect_to_login();
    assert_eq!(
        login.get_str("Events"),
        Some("off"),
        "the login carried the new mask"
    );
    assert!(h.client.cancel(h.now, &mask));
    h.drain();
    h.feed(&scripted::login_ok(id_of(&login)));
    assert!(h.log.iter().any(|o| matches!(o, Out::Ready(_))));
    let r = h.client.send_action(h.now, async_originate(30_000));
    assert!(
        matches!(r, Err(SendError::FollowUpMasked { .. })),
        "the server has 'off': {r:?}"
    );
}

#[test]
fn a_filter_whose_action_failed_not_sent_at_a_disconnect_is_not_installed_at_the_next_login() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    h.room = Some(0); // socket full: the Filter is encoded, never handed out
    let filter = h.client.add_filter(h.now, "Event: Hangup").unwrap();
    h.drain();
    assert!(h.inbox_actions().is_empty());
    h.room = None;
    let login = h.lose_and_reconnect_to_login();
    assert!(
        matches!(h.outcome(&filter), Err(ActionError::NotSent(_))),
        "{:?}",
        h.outcome(&filter)
    );
    h.feed(&scripted::login_ok(id_of(&login)));
    assert!(
        h.inbox_actions().is_empty(),
        "NotSent is 'safe to send again': nothing of it took effect: {:?}",
        h.inbox_actions()
    );
}

#[test]
fn an_event_mask_change_whose_action_failed_not_sent_at_a_disconnect_is_not_the_next_logins() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("off").build().unwrap(), t0);
    h.ready();
    h.room = Some(0);
    let mask = h.client.set_event_mask(h.now, "call").unwrap();
    h.drain();
    assert!(h.inbox_actions().is_empty());
    h.room = None;
    let login = h.lose_and_reconnect_to_login();
    assert!(
        matches!(h.outcome(&mask), Err(ActionError::NotSent(_))),
        "{:?}",
        h.outcome(&mask)
    );
    assert_eq!(login.get_str("Events"), Some("off"));
}

#[test]
fn a_filter_cancelled_after_a_partial_write_that_never_left_whole_is_not_installed_at_the_next_login(
) {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    h.room = Some(5); // the transport takes 5 bytes of the Filter, then the socket is full
    let filter = h.client.add_filter(h.now, "Event: Hangup").unwrap();
    h.drain();
    assert!(
        h.inbox_actions().is_empty(),
        "the server has not read it whole"
    );
    assert!(h.client.cancel(h.now, &filter));
    h.drain();
    assert!(matches!(h.outcome(&filter), Err(ActionError::Cancelled)));
    h.room = None;
    let login = h.lose_and_reconnect_to_login();
    h.feed(&scripted::login_ok(id_of(&login)));
    assert!(
        h.inbox_actions().is_empty(),
        "a cancelled filter that never left whole is not installed: {:?}",
        h.inbox_actions()
    );
}

#[test]
fn an_event_mask_cancelled_after_a_partial_write_that_never_left_whole_is_not_the_next_logins() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("off").build().unwrap(), t0);
    h.ready();
    h.room = Some(5);
    let mask = h.client.set_event_mask(h.now, "call").unwrap();
    h.drain();
    assert!(h.inbox_actions().is_empty());
    assert!(h.client.cancel(h.now, &mask));
    h.drain();
    h.room = None;
    let login = h.lose_and_reconnect_to_login();
    assert_eq!(login.get_str("Events"), Some("off"));
}

#[test]
fn a_mask_that_hides_call_events_is_refused_while_an_async_originate_waits_for_its_answer() {
    // Asterisk applies an Events mask from the moment it reads it: an OriginateResponse
    // (a call event) raised after that never reaches the session, and the Originate would
    // time out although its call was placed.
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("call,user").build().unwrap(), t0);
    h.ready();
    let originate = h.send(async_originate(30_000));
    let sent = h.take("Originate");
    h.feed(&scripted::originate_queued(id_of(&sent)));
    assert!(h.outcomes(&originate).is_empty(), "waits for its follow-up");
    let refused = h.client.set_event_mask(h.now, "user");
    assert!(
        matches!(&refused, Err(SendError::MaskHidesFollowUps { mask, originates: 1 }) if mask == "user"),
        "{refused:?}"
    );
    // The same through send_action, and `off`.
    let raw = h
        .client
        .send_action(h.now, Action::new("Events").field("EventMask", "off"));
    assert!(
        matches!(raw, Err(SendError::MaskHidesFollowUps { .. })),
        "{raw:?}"
    );
    h.drain();
    assert!(h.inbox_actions().is_empty(), "nothing was sent");
    // A mask that keeps call events is fine meanwhile.
    let kept = h.client.set_event_mask(h.now, "call");
    assert!(kept.is_ok(), "{kept:?}");
    h.drain();
    let events = h.take("Events");
    h.feed(&scripted::success(id_of(&events), "Events Off"));
    // Once the Originate has its answer, the mask may hide call events.
    h.feed(&scripted::originate_response(id_of(&sent), true));
    assert!(h.outcome(&originate).is_ok(), "{:?}", h.outcome(&originate));
    let later = h.client.set_event_mask(h.now, "user");
    assert!(later.is_ok(), "{later:?}");
}

#[test]
fn an_async_originate_queued_behind_a_call_mask_that_never_left_is_not_sent_into_a_mask_that_hides_its_answer(
) {
    // The session reads `user` only. A mask with `call` is queued, then an async Originate
    // (accepted: the queued mask admits its answer). The mask is cancelled before any of it
    // left: the server keeps `user`, and the Originate, written next, can never read its
    // OriginateResponse (a call event): it would time out although its call was placed,
    // the case MaskHidesFollowUps refuses when the mask comes second.
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("user").build().unwrap(), t0);
    h.ready();
    h.room = Some(0); // socket full: both are encoded, neither is handed out
    let mask = h.client.set_event_mask(h.now, "call,user").unwrap();
    let originate = h
        .client
        .send_action(h.now, async_originate(30_000))
        .unwrap();
    h.drain();
    assert!(h.inbox_actions().is_empty());
    assert!(h.client.cancel(h.now, &mask));
    h.room = None;
    h.drain();
    assert!(
        !h.inbox_actions().iter().any(|a| a == "Originate"),
        "the Originate went out into a session whose mask hides its answer: {:?}",
        h.inbox_actions()
    );
    assert_eq!(
        h.outcomes(&originate).len(),
        1,
        "nor did it fail with a typed error"
    );
    assert!(
        matches!(h.outcome(&originate), Err(ActionError::FollowUpMasked { mask }) if mask == "user"),
        "{:?}",
        h.outcome(&originate)
    );
    assert_eq!(
        h.client.stats().actions_withdrawn,
        2,
        "the mask change and the Originate, each withdrawn unsent, are counted"
    );
}

#[test]
fn async_originates_queued_behind_a_call_mask_that_expired_unwritten_are_withdrawn_not_sent() {
    // The same with the mask change's deadline passing while it waits behind a Ping
    // (pipeline depth 1) and the Ping's answer read before the timer fired: the mask change
    // ends unwritten inside the pump, which must not then write the Originates queued
    // behind it into a session whose mask hides their answers.
    let t0 = Instant::now();
    let mut h = Harness::new(base().events("user").pipeline_depth(1).build().unwrap(), t0);
    h.ready();
    let _ping = h.send_with(
        Action::new("Ping"),
        ami_proto::SendOptions::timeout(Duration::from_secs(600)),
    );
    let ping = h.take("Ping");
    let mask = h.send_with(
        Action::new("Events").field("EventMask", "call,user"),
        ami_proto::SendOptions::timeout(Duration::from_secs(1)),
    );
    let first = h.send(async_originate(30_000));
    let second = h.send(async_originate(30_000));
    // A late timer: time moves on, the Pong comes before any timer call.
    h.now = h.at(Duration::from_secs(2));
    h.feed(&scripted::pong(id_of(&ping)));
    h.drain();
    assert!(
        matches!(h.outcome(&mask), Err(ActionError::TimedOut { .. })),
        "{:?}",
        h.outcome(&mask)
    );
    for o in [&first, &second] {
        assert!(
            matches!(h.outcome(o), Err(ActionError::FollowUpMasked { .. })),
            "{:?}",
            h.outcome(o)
        );
    }
    assert!(
        !h.inbox_actions()
            .iter()
            .any(|a| a == "Originate" || a == "Events"),
        "{:?}",
        h.inbox_actions()
    );
    assert_eq!(h.client.stats().pending, 0);
}

#[test]
fn an_action_that_only_carries_filter_headers_is_not_re_applied_as_a_filter() {
    // A UserEvent whose headers happen to read like a Filter's changes nothing in the
    // session: the next login installs no filter.
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    let user_event = Action::new("UserEvent")
        .field("UserEvent", "Audit")
        .field("Operation", "Add")
        .field("Filter", "Event: Newchannel");
    let id = h.client.send_action(h.now, user_event).unwrap();
    h.drain();
    h.take("UserEvent");
    h.feed(&scripted::success(id.as_str(), "Event Sent"));
    assert!(h.outcome(&id).is_ok());
    let login = h.lose_and_reconnect_to_login();
    h.feed(&scripted::login_ok(id_of(&login)));
    assert!(
        !h.inbox_actions().iter().any(|a| a == "Filter"),
        "a filter installed: {:?}",
        h.inbox_actions()
    );
}
