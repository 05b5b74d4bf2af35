//! The irregular event lists of Asterisk 22 (AMI-PROTOCOL.md §5): none of them may hang an
//! action or leak list events into the event stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{Action, ActionError, ClientConfig, StreamItem};
use scripted::{msg, Harness};
use std::time::{Duration, Instant};

fn ready() -> Harness {
    let cfg = ClientConfig::builder("admin", "amp111")
        .events("on")
        .seed(5)
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, Instant::now());
    h.ready();
    assert!(
        matches!(&h.events()[..], [StreamItem::Ready { .. }]),
        "every session opens the stream with Ready"
    );
    h
}

fn only_unsolicited(h: &mut Harness) -> Vec<String> {
    h.events()
        .into_iter()
        .map(|i| match i {
            StreamItem::Event(m) => m.event().unwrap_or("?").to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn capitalised_start_opens_a_list_like_lowercase() {
    let mut h = ready();
    let id = h.send(Action::new("FAXSessions"));
    h.take("FAXSessions");
    let id_s = id.as_str();
    h.feed(&msg(&[
        ("Response", "Success"),
        ("ActionID", id_s),
        ("EventList", "Start"),
        ("Message", "FAXSessions will follow"),
    ]));
    h.feed(&msg(&[
        ("Event", "FAXSessionsEntry"),
        ("ActionID", id_s),
        ("Channel", "x"),
    ]));
    h.feed(&msg(&[
        ("Event", "FAXSessionsComplete"),
        ("ActionID", id_s),
        ("EventList", "Complete"),
        ("ListItems", "1"),
    ]));
    let Ok(r) = h.outcome(&id) else { panic!() };
    assert_eq!(r.items().len(), 1);
    assert!(only_unsolicited(&mut h).is_empty());
}

#[test]
fn plain_success_instead_of_a_list_completes_at_once() {
    // VoicemailUsersList with no users answers a plain Success, no list, no Complete.
    let mut h = ready();
    let id = h.send(Action::new("VoicemailUsersList"));
    h.take("VoicemailUsersList");
    h.feed(&msg(&[("Response", "Success"), ("ActionID", id.as_str())]));
    let Ok(r) = h.outcome(&id) else { panic!() };
    assert!(r.items().is_empty() && r.complete().is_none());
}

#[test]
fn plain_error_instead_of_a_list_completes_at_once() {
    // PJSIPShowEndpoints with nothing configured answers a plain Error.
    let mut h = ready();
    let id = h.send(Action::new("PJSIPShowEndpoints"));
    h.take("PJSIPShowEndpoints");
    h.feed(&msg(&[
        ("Response", "Error"),
        ("ActionID", id.as_str()),
        ("Message", "No endpoints found"),
    ]));
    let Err(ActionError::Server(r)) = h.outcome(&id) else {
        panic!()
    };
    assert_eq!(r.text(), Some("No endpoints found"));
}

#[test]
fn error_after_start_without_complete_ends_the_list_with_its_items() {
    // CoreShowChannelMap can send Error after the start and never Complete.
    let mut h = ready();
    let id = h.send(Action::new("CoreShowChannelMap").field("Channel", "PJSIP/1-0001"));
    h.take("CoreShowChannelMap");
    let id_s = id.as_str();
    h.feed(&msg(&[
        ("Response", "Success"),
        ("ActionID", id_s),
        ("EventList", "start"),
    ]));
    h.feed(&msg(&[
        ("Event", "CoreShowChannelMap"),
        ("ActionID", id_s),
        ("ConnectedChannel", "a"),
    ]));
    h.feed(&msg(&[
        ("Response", "Error"),
        ("ActionID", id_s),
        ("Message", "Channel gone"),
    ]));
    let Err(ActionError::Server(r)) = h.outcome(&id) else {
        panic!()
    };
    assert_eq!(r.items().len(), 1, "items before the error are kept");
    assert_eq!(r.text(), Some("Channel gone"));
    assert_eq!(
        h.client.stats().in_flight,
        0,
        "no pipeline slot held for a Complete that never comes"
    );
    // Nothing more comes; the abandoned entry is forgotten after its grace period.
    h.advance(Duration::from_secs(120));
    assert_eq!(h.client.stats().pending, 0);
}

#[test]
fn extra_error_before_complete_does_not_leak_the_complete_event() {
    // PJSIPShowEndpoint can insert an Error before its Complete.
    let mut h = ready();
    let id = h.send(Action::new("PJSIPShowEndpoint").field("Endpoint", "100"));
    h.take("PJSIPShowEndpoint");
    let id_s = id.as_str();
    h.feed(&msg(&[
        ("Response", "Success"),
        ("ActionID", id_s),
        ("EventList", "start"),
    ]));
    h.feed(&msg(&[
        ("Event", "EndpointDetail"),
        ("ActionID", id_s),
        ("ObjectName", "100"),
    ]));
    h.feed(&msg(&[
        ("Response", "Error"),
        ("ActionID", id_s),
        ("Message", "Unable to retrieve aor"),
    ]));
    h.feed(&msg(&[
        ("Event", "EndpointDetailComplete"),
        ("ActionID", id_s),
        ("EventList", "Complete"),
        ("ListItems", "1"),
    ]));
    assert_eq!(h.outcomes(&id).len(), 1, "completed exactly once");
    assert!(matches!(h.outcome(&id), Err(ActionError::Server(_))));
    assert!(
        only_unsolicited(&mut h).is_empty(),
        "the late Complete is swallowed"
    );
    assert_eq!(h.client.stats().pending, 0);
}

#[test]
fn list_item_names_that_overlap_async_events_go_to_the_list_by_action_id() {
    // DeviceStateChange is both a list item and an unsolicited event.
    let mut h = ready();
    let id = h.send(Action::new("DeviceStateList"));
    h.take("DeviceStateList");
    let id_s = id.as_str();
    h.feed(&msg(&[
        ("Response", "Success"),
        ("ActionID", id_s),
        ("EventList", "start"),
    ]));
    h.feed(&msg(&[
        ("Event", "DeviceStateChange"),
        ("Device", "Custom:ext100"),
        ("State", "INUSE"),
    ]));
    h.feed(&msg(&[
        ("Event", "DeviceStateChange"),
        ("ActionID", id_s),
        ("Device", "Custom:ext101"),
        ("State", "RINGING"),
    ]));
    h.feed(&msg(&[
        ("Event", "DeviceStateListComplete"),
        ("ActionID", id_s),
        ("EventList", "Complete"),
        ("ListItems", "1"),
    ]));
    let Ok(r) = h.outcome(&id) else { panic!() };
    assert_eq!(r.items().len(), 1);
    assert_eq!(r.items()[0].get_str("Device"), Some("Custom:ext101"));
    assert_eq!(only_unsolicited(&mut h), ["DeviceStateChange"]);
}

#[test]
fn a_long_list_item_whose_action_id_comes_late_still_goes_to_its_list() {
    // Events of more than a few lines reach the client with their field tables deferred
    // (split by whoever takes them out): the ActionID on line 11 must still route the item,
    // and a long unsolicited event in the same read must keep every field.
    let mut h = ready();
    let id = h.send(Action::new("CoreShowChannels"));
    h.take("CoreShowChannels");
    let id_s = id.as_str();
    let mut item: Vec<(&str, &str)> = vec![("Event", "CoreShowChannel")];
    let names: Vec<String> = (1..10).map(|i| format!("Field{i}")).collect();
    item.extend(names.iter().map(|n| (n.as_str(), "x")));
    item.push(("ActionID", id_s));
    item.push(("Channel", "PJSIP/7001-00000001"));
    let mut unsolicited: Vec<(&str, &str)> = vec![("Event", "Newchannel")];
    unsolicited.extend(names.iter().map(|n| (n.as_str(), "y")));
    unsolicited.push(("Uniqueid", "1733312345.17"));
    let mut read = msg(&[
        ("Response", "Success"),
        ("ActionID", id_s),
        ("EventList", "start"),
        ("Message", "Channels will follow"),
    ]);
    read.extend(msg(&item));
    read.extend(msg(&unsolicited));
    read.extend(msg(&[
        ("Event", "CoreShowChannelsComplete"),
        ("ActionID", id_s),
        ("EventList", "Complete"),
        ("ListItems", "1"),
    ]));
    h.feed(&read);
    let Ok(r) = h.outcome(&id) else { panic!() };
    assert_eq!(r.items().len(), 1);
    assert_eq!(r.items()[0].get_str("Channel"), Some("PJSIP/7001-00000001"));
    assert_eq!(r.items()[0].len(), 12);
    let events = h.events();
    let [StreamItem::Event(e)] = &events[..] else {
        panic!("one unsolicited event, got {events:?}");
    };
    assert_eq!(e.event(), Some("Newchannel"));
    assert_eq!(e.len(), 11);
    assert_eq!(e.get_str("Uniqueid"), Some("1733312345.17"));
    assert_eq!(e.get_str("Field9"), Some("y"));
    assert_eq!(e.action_id(), None);
}
