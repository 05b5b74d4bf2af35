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

/// A client whose decoder drops messages over 1 KiB.
fn ready_small() -> Harness {
    let limits = ami_proto::DecoderLimits::builder()
        .max_line_len(512)
        .max_message_len(1024)
        .build()
        .unwrap();
    let cfg = ClientConfig::builder("admin", "amp111")
        .events("on")
        .seed(5)
        .ping_interval(Duration::from_secs(3600))
        .decoder(limits)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, Instant::now());
    h.ready();
    h.events();
    h
}

/// A list answer's start.
fn start(id: &str) -> Vec<u8> {
    msg(&[
        ("Response", "Success"),
        ("ActionID", id),
        ("EventList", "start"),
        ("Message", "will follow"),
    ])
}

/// A `DBGetTreeResponse` item of about `size` bytes, with its ActionID first or last.
fn item(id: &str, key: &str, size: usize, action_id_first: bool) -> Vec<u8> {
    let filler = "v".repeat(100);
    let names: Vec<String> = (0..size / 110).map(|i| format!("Pad{i:03}")).collect();
    let mut fields = vec![("Event", "DBGetTreeResponse")];
    if action_id_first {
        fields.push(("ActionID", id));
    }
    fields.push(("Key", key));
    fields.extend(names.iter().map(|n| (n.as_str(), filler.as_str())));
    if !action_id_first {
        fields.push(("ActionID", id));
    }
    msg(&fields)
}

fn complete(id: &str, items: &str) -> Vec<u8> {
    msg(&[
        ("Event", "DBGetTreeComplete"),
        ("ActionID", id),
        ("EventList", "Complete"),
        ("ListItems", items),
    ])
}

#[test]
fn a_list_item_over_the_message_size_fails_the_list_as_incomplete_not_ok() {
    let mut h = ready_small();
    let id = h.send(Action::new("DBGetTree"));
    h.take("DBGetTree");
    let id_s = id.as_str();
    let mut read = start(id_s);
    read.extend(item(id_s, "/a", 100, true));
    read.extend(item(id_s, "/b", 3000, true)); // over max_message_len: dropped
    read.extend(item(id_s, "/c", 100, true));
    read.extend(complete(id_s, "3"));
    h.feed(&read);
    let Err(ActionError::ListIncomplete {
        items,
        dropped,
        partial,
    }) = h.outcome(&id)
    else {
        panic!("{:?}", h.outcome(&id))
    };
    assert_eq!((*items, *dropped), (2, 1));
    let keys: Vec<_> = partial
        .items()
        .iter()
        .map(|m| m.get_str("Key").unwrap())
        .collect();
    assert_eq!(keys, ["/a", "/c"], "what arrived is kept");
    assert_eq!(partial.items_dropped(), 1);
    assert!(partial.complete().is_some());
    let events = h.events();
    assert!(
        matches!(
            &events[..],
            [StreamItem::Discarded {
                reason: ami_proto::Discard::Malformed(
                    ami_proto::DecodeError::MessageTooLarge { .. }
                ),
                count: 1
            }]
        ),
        "the drop is reported where it happened, no item leaks: {events:?}"
    );
    assert_eq!(
        h.client
            .stats()
            .outcome_count(ami_proto::OutcomeKind::ListIncomplete),
        1
    );
}

#[test]
fn a_list_short_of_its_list_items_but_with_nothing_dropped_completes_ok() {
    // ListItems is not truthful for every action (DBGet, VoicemailUserStatus): only the
    // decoder's own drop fails a list.
    let mut h = ready_small();
    let id = h.send(Action::new("DBGetTree"));
    h.take("DBGetTree");
    let id_s = id.as_str();
    let mut read = start(id_s);
    read.extend(item(id_s, "/a", 100, true));
    read.extend(complete(id_s, "7"));
    h.feed(&read);
    let Ok(r) = h.outcome(&id) else { panic!() };
    assert_eq!((r.items().len(), r.items_dropped()), (1, 0));
}

#[test]
fn a_dropped_item_whose_action_id_was_not_read_fails_every_list_in_progress() {
    let mut h = ready_small();
    let one = h.send(Action::new("DBGetTree"));
    let two = h.send(Action::new("VoicemailUsersList"));
    let ping = h.send(Action::new("Ping"));
    h.take("DBGetTree");
    h.take("VoicemailUsersList");
    h.take("Ping");
    let (one_s, two_s) = (one.as_str(), two.as_str());
    let mut read = start(one_s);
    read.extend(start(two_s));
    read.extend(item(one_s, "/a", 100, true));
    // Cut off past 1 KiB, before its ActionID line: either list may have lost it.
    read.extend(item(two_s, "/big", 3000, false));
    read.extend(item(two_s, "/b", 100, true));
    read.extend(complete(one_s, "1"));
    read.extend(complete(two_s, "2"));
    read.extend(msg(&[
        ("Response", "Success"),
        ("ActionID", ping.as_str()),
        ("Ping", "Pong"),
    ]));
    h.feed(&read);
    for (id, got) in [(&one, 1), (&two, 1)] {
        let Err(ActionError::ListIncomplete { items, dropped, .. }) = h.outcome(id) else {
            panic!("{:?}", h.outcome(id))
        };
        assert_eq!((*items, *dropped), (got, 1));
    }
    assert!(h.outcome(&ping).is_ok(), "no list: not affected");
    // A whole oversized message with no ActionID is no list's item.
    let three = h.send(Action::new("DBGetTree"));
    h.take("DBGetTree");
    let mut read = start(three.as_str());
    let mut unsolicited: Vec<(&str, &str)> = vec![("Event", "UserEvent")];
    let filler = "u".repeat(100);
    unsolicited.extend(std::iter::repeat_n(("Data", filler.as_str()), 9));
    let tail = "t".repeat(28);
    unsolicited.push(("X", tail.as_str()));
    let whole = msg(&unsolicited);
    assert_eq!(
        whole.len(),
        1025,
        "over 1 KiB only with its closing blank line"
    );
    read.extend(whole);
    read.extend(complete(three.as_str(), "0"));
    h.events();
    h.feed(&read);
    assert!(h.outcome(&three).is_ok(), "{:?}", h.outcome(&three));
    assert!(
        matches!(
            &h.events()[..],
            [StreamItem::Discarded {
                reason: ami_proto::Discard::Malformed(
                    ami_proto::DecodeError::MessageTooLarge { .. }
                ),
                ..
            }]
        ),
        "it was dropped"
    );
}

#[test]
fn skipped_input_carrying_a_lists_action_id_fails_it_as_incomplete() {
    let mut h = ready_small();
    let id = h.send(Action::new("DBGetTree"));
    h.take("DBGetTree");
    let id_s = id.as_str();
    let mut read = start(id_s);
    read.extend(msg(&[("Evnt", "DBGetTreeResponse"), ("ActionID", id_s)]));
    read.extend(complete(id_s, "1"));
    h.feed(&read);
    assert!(matches!(
        h.outcome(&id),
        Err(ActionError::ListIncomplete {
            items: 0,
            dropped: 1,
            ..
        })
    ));
}

/// main/manager.c `action_userevent` copies the ActionID of whoever raised a `UserEvent`
/// into it, with any header they chose: another AMI client with `write=user` can name one of
/// this client's ActionIDs (they are sequential, and its broadcast events show their
/// prefix). Such an event is no item and no end of a list, whatever it carries: no list
/// has `UserEvent` items, and it goes to the stream.
#[test]
fn a_user_event_naming_a_pending_lists_action_id_is_neither_its_item_nor_its_end() {
    let mut h = ready();
    let id = h.send(Action::new("QueueStatus"));
    h.take("QueueStatus");
    let id_s = id.as_str();
    h.feed(&msg(&[
        ("Response", "Success"),
        ("ActionID", id_s),
        ("EventList", "start"),
        ("Message", "Queue status will follow"),
    ]));
    // As Asterisk raises it for `Action: UserEvent`, `ActionID: <ours>` and forged fields.
    h.feed(&msg(&[
        ("Event", "UserEvent"),
        ("Privilege", "user,all"),
        ("UserEvent", "Forged"),
        ("ActionID", id_s),
        ("Event", "QueueStatusComplete"),
        ("EventList", "Complete"),
        ("ListItems", "0"),
    ]));
    assert!(
        h.outcomes(&id).is_empty(),
        "the list ended on the UserEvent: {:?}",
        h.outcomes(&id)
    );
    h.feed(&msg(&[
        ("Event", "QueueMember"),
        ("ActionID", id_s),
        ("Queue", "support"),
    ]));
    h.feed(&msg(&[
        ("Event", "QueueStatusComplete"),
        ("ActionID", id_s),
        ("EventList", "Complete"),
        ("ListItems", "1"),
    ]));
    let Ok(r) = h.outcome(&id) else {
        panic!("{:?}", h.outcome(&id))
    };
    assert_eq!(r.items().len(), 1);
    assert_eq!(r.items()[0].event(), Some("QueueMember"));
    assert_eq!(
        r.complete().and_then(|c| c.event()),
        Some("QueueStatusComplete")
    );
    assert_eq!(only_unsolicited(&mut h), ["UserEvent"]);
}
