//! What the client says about list items it does not deliver: items of a list whose action
//! already ended (timed out, cancelled, overflowed) are dropped and counted, and said in the
//! log; a list whose `ListItems` disagrees with what arrived is counted and said too.
//!
//! One test function: the logger is process-global.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/log_capture.rs"]
mod log_capture;
#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{Action, ActionError, Phase};
use scripted::{msg, Harness};
use std::time::Duration;

/// Warnings that name `id`, taken out of the log.
fn warnings_about(id: &str) -> Vec<String> {
    log_capture::take(|r| r.message.contains(id))
        .into_iter()
        .map(|r| r.message)
        .collect()
}

fn ready() -> Harness {
    Harness::ready_now(12, Duration::from_secs(10))
}

fn start(id: &str) -> Vec<u8> {
    msg(&[
        ("Response", "Success"),
        ("ActionID", id),
        ("EventList", "start"),
        ("Message", "Channels will follow"),
    ])
}

fn item(id: &str, n: usize) -> Vec<u8> {
    msg(&[
        ("Event", "CoreShowChannel"),
        ("ActionID", id),
        ("Channel", &format!("PJSIP/{n}-00000001")),
    ])
}

fn complete(id: &str, n: &str) -> Vec<u8> {
    msg(&[
        ("Event", "CoreShowChannelsComplete"),
        ("ActionID", id),
        ("EventList", "Complete"),
        ("ListItems", n),
    ])
}

#[test]
fn list_items_dropped_after_their_action_ended_and_miscounted_lists_are_said_in_the_log() {
    log_capture::install(log::LevelFilter::Warn);

    // A list that times out mid-stream: the items that come after are dropped, counted,
    // and said: once when the first comes, and their number when the list ends.
    let mut h = ready();
    let id = h.send(Action::new("CoreShowChannels"));
    h.take("CoreShowChannels");
    let s = id.as_str().to_string();
    h.feed(&start(&s));
    h.feed(&item(&s, 1));
    h.advance(Duration::from_secs(11));
    assert!(matches!(
        h.outcome(&id),
        Err(ActionError::TimedOut {
            phase: Phase::List,
            ..
        })
    ));
    let before = h.client.stats().list_items_dropped;
    for n in 2..5 {
        h.feed(&item(&s, n));
    }
    assert_eq!(
        warnings_about(&s).len(),
        1,
        "the first dropped item is said at once, the rest are not said one by one"
    );
    h.feed(&complete(&s, "4"));
    assert_eq!(h.client.stats().list_items_dropped - before, 3);
    let said = warnings_about(&s);
    assert!(
        said.len() == 1 && said[0].contains("3 item(s)"),
        "the number dropped is said when the list ends: {said:?}"
    );

    // Another list ended while those drops are still summarised (no time passed): its
    // first dropped item is said all the same, each list's first is.
    let id = h.send(Action::new("CoreShowChannels"));
    h.take("CoreShowChannels");
    let s = id.as_str().to_string();
    h.feed(&start(&s));
    h.feed(&item(&s, 1));
    assert!(h.client.cancel(h.now, &id));
    warnings_about(&s);
    h.feed(&item(&s, 2));
    h.feed(&item(&s, 3));
    assert_eq!(
        warnings_about(&s).len(),
        1,
        "the first dropped item of every list is said"
    );
    h.feed(&complete(&s, "3"));
    warnings_about(&s);

    // One cancelled whose Complete comes with no item after it: nothing was dropped after
    // it ended, so nothing is said of dropped items.
    let id = h.send(Action::new("CoreShowChannels"));
    h.take("CoreShowChannels");
    let s = id.as_str().to_string();
    h.feed(&start(&s));
    h.feed(&item(&s, 1));
    assert!(h.client.cancel(h.now, &id));
    warnings_about(&s);
    h.feed(&complete(&s, "1"));
    assert_eq!(warnings_about(&s), Vec::<String>::new());

    // A list whose Complete counts more items than came: it completes with what came, and
    // the mismatch is counted and said.
    let id = h.send(Action::new("CoreShowChannels"));
    h.take("CoreShowChannels");
    let s = id.as_str().to_string();
    let mut read = start(&s);
    read.extend(item(&s, 1));
    read.extend(complete(&s, "3"));
    h.feed(&read);
    assert_eq!(h.outcome(&id).as_ref().map(|r| r.items().len()), Ok(1));
    assert_eq!(h.client.stats().list_count_mismatches, 1);
    let said = warnings_about(&s);
    assert!(
        said.len() == 1 && said[0].contains("counted 3"),
        "the mismatch is said: {said:?}"
    );

    // One whose count is right is not said.
    let id = h.send(Action::new("CoreShowChannels"));
    h.take("CoreShowChannels");
    let s = id.as_str().to_string();
    let mut read = start(&s);
    read.extend(item(&s, 1));
    read.extend(complete(&s, "1"));
    h.feed(&read);
    assert_eq!(h.client.stats().list_count_mismatches, 1);
    assert_eq!(warnings_about(&s), Vec::<String>::new());
}
