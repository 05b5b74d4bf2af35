//! How a list ends when its server does not end it the regular way (AMI-PROTOCOL.md §5):
//! padded words, a start the client could not read, a second response, a list still
//! lists that together outgrow their byte budget. None may
//! complete as a success the server did not send, or leak its items into the event stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{
    Action, ActionError, ActionId, ClientConfig, Decoder, DecoderLimits, Frame, StreamItem,
};
use scripted::{msg, Harness};
use std::time::{Duration, Instant};

fn ready_with(config: ami_proto::ClientConfigBuilder) -> Harness {
    let cfg = config
        .events("on")
        .seed(5)
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, Instant::now());
    h.ready();
    h.events();
    h
}

fn ready() -> Harness {
    ready_with(ClientConfig::builder("admin", "amp111"))
}

fn start(id: &str) -> Vec<u8> {
    msg(&[
        ("Response", "Success"),
        ("ActionID", id),
        ("EventList", "start"),
        ("Message", "Device State Changes will follow"),
    ])
}

/// A `DeviceStateChange` list item: the same name as the live event.
fn item(id: &str, device: &str) -> Vec<u8> {
    msg(&[
        ("Event", "DeviceStateChange"),
        ("ActionID", id),
        ("Device", device),
        ("State", "INUSE"),
    ])
}

fn complete(id: &str, n: &str) -> Vec<u8> {
    msg(&[
        ("Event", "DeviceStateListComplete"),
        ("ActionID", id),
        ("EventList", "Complete"),
        ("ListItems", n),
    ])
}

/// Events in the stream that carry `id`: items that leaked out of their list.
fn leaked(h: &mut Harness, id: &ActionId) -> Vec<String> {
    h.events()
        .into_iter()
        .filter_map(|i| match i {
            StreamItem::Event(m) if m.action_id() == Some(id.as_str()) => {
                Some(m.event().unwrap_or("?").to_string())
            }
            _ => None,
        })
        .collect()
}

fn items_of(h: &Harness, id: &ActionId) -> Result<usize, String> {
    h.outcome(id)
        .as_ref()
        .map(|r| r.items().len())
        .map_err(|e| e.to_string())
}

#[test]
fn a_padded_error_after_the_start_fails_the_list_instead_of_completing_it() {
    let mut h = ready();
    let id = h.send(Action::new("CoreShowChannelMap").field("Channel", "PJSIP/1-0001"));
    h.take("CoreShowChannelMap");
    let s = id.as_str();
    let mut read = start(s);
    read.extend(item(s, "Custom:a"));
    read.extend(format!("Response: Error \r\nActionID: {s}\r\nMessage: gone\r\n\r\n").bytes());
    h.feed(&read);
    let Err(ActionError::Server(r)) = h.outcome(&id) else {
        panic!("an Error ended the list: {:?}", h.outcome(&id))
    };
    assert_eq!(r.items().len(), 1, "the items before the error are kept");
}

#[test]
fn a_padded_error_answering_a_plain_action_is_a_server_error() {
    let mut h = ready();
    let id = h.send(Action::new("Redirect").field("Channel", "PJSIP/1-0001"));
    h.take("Redirect");
    let s = id.as_str();
    h.feed(
        format!("Response:\tError\t\r\nActionID: {s}\r\nMessage: No such channel\r\n\r\n")
            .as_bytes(),
    );
    assert!(
        matches!(h.outcome(&id), Err(ActionError::Server(_))),
        "{:?}",
        h.outcome(&id)
    );
}

#[test]
fn a_padded_list_start_and_complete_still_open_and_close_the_list() {
    let mut h = ready();
    let id = h.send(Action::new("DeviceStateList"));
    h.take("DeviceStateList");
    let s = id.as_str();
    let mut read = format!(
        "Response: Success\r\nActionID: {s}\r\nEventList:  start \r\nMessage: will follow\r\n\r\n"
    )
    .into_bytes();
    read.extend(item(s, "Custom:a"));
    read.extend(
        format!(
            "Event: DeviceStateListComplete\r\nActionID: {s}\r\nEventList: Complete \r\nListItems: 1\r\n\r\n"
        )
        .bytes(),
    );
    h.feed(&read);
    assert_eq!(items_of(&h, &id), Ok(1));
    assert_eq!(leaked(&mut h, &id), Vec::<String>::new());
}

#[test]
fn items_of_a_list_whose_start_was_discarded_are_swallowed_and_counted_not_streamed() {
    let limits = DecoderLimits::builder()
        .max_line_len(512)
        .max_message_len(1024)
        .build()
        .unwrap();
    let mut h = ready_with(ClientConfig::builder("admin", "amp111").decoder(limits));
    let id = h.send(Action::new("DeviceStateList"));
    h.take("DeviceStateList");
    let s = id.as_str();
    let long = "x".repeat(600);
    let mut read = msg(&[
        ("Response", "Success"),
        ("ActionID", s),
        ("EventList", "start"),
        ("Message", &long),
    ]);
    read.extend(item(s, "Custom:a"));
    read.extend(item(s, "Custom:b"));
    read.extend(complete(s, "2"));
    h.feed(&read);
    assert!(matches!(
        h.outcome(&id),
        Err(ActionError::ResponseDiscarded { .. })
    ));
    assert_eq!(leaked(&mut h, &id), Vec::<String>::new());
    assert_eq!(h.client.stats().list_items_dropped, 2);
}

#[test]
fn the_user_event_echo_of_a_user_event_action_whose_response_was_discarded_still_streams() {
    let limits = DecoderLimits::builder()
        .max_line_len(512)
        .max_message_len(1024)
        .build()
        .unwrap();
    let mut h = ready_with(ClientConfig::builder("admin", "amp111").decoder(limits));
    let id = h.send(Action::new("UserEvent").field("UserEvent", "Campaign"));
    h.take("UserEvent");
    let s = id.as_str();
    let long = "x".repeat(600);
    let mut read = msg(&[("Response", "Success"), ("ActionID", s), ("Message", &long)]);
    read.extend(msg(&[
        ("Event", "UserEvent"),
        ("Privilege", "user,all"),
        ("UserEvent", "Campaign"),
        ("ActionID", s),
    ]));
    h.feed(&read);
    assert!(matches!(
        h.outcome(&id),
        Err(ActionError::ResponseDiscarded { .. })
    ));
    assert_eq!(leaked(&mut h, &id), ["UserEvent"]);
}

#[test]
fn a_second_success_response_ends_a_list_as_a_server_error_not_as_complete() {
    let mut h = ready();
    let id = h.send(Action::new("DeviceStateList"));
    h.take("DeviceStateList");
    let s = id.as_str();
    let mut read = start(s);
    read.extend(item(s, "Custom:a"));
    read.extend(msg(&[
        ("Response", "Success"),
        ("ActionID", s),
        ("Message", "something else"),
    ]));
    h.feed(&read);
    let Err(ActionError::Server(r)) = h.outcome(&id) else {
        panic!("no EventList: Complete came: {:?}", h.outcome(&id))
    };
    assert_eq!(r.items().len(), 1);
    assert!(r.complete().is_none(), "no Complete was sent");
    assert_eq!(r.text(), Some("something else"), "what ended the list");
}

#[test]
fn a_list_whose_items_fill_max_list_bytes_exactly_completes_whole() {
    // The cap is what the lists in progress may hold: items that reach it exactly are kept.
    let limits = DecoderLimits::builder()
        .max_line_len(2048)
        .max_message_len(4096)
        .max_fields(64)
        .build()
        .unwrap();
    let builder = |cap: usize| {
        ClientConfig::builder("admin", "amp111")
            .decoder(limits)
            .max_list_bytes(cap)
    };
    // Seeded: the list's ActionID, and so its items' sizes, are the same in every session.
    let id = ready_with(builder(64 << 10)).send(Action::new("DeviceStateList"));
    let pad = "p".repeat(900);
    let item = |n: usize| {
        msg(&[
            ("Event", "DeviceStateChange"),
            ("ActionID", id.as_str()),
            ("Device", &format!("Custom:{n:03}")),
            ("Pad", &pad),
        ])
    };
    let retained = |bytes: &[u8]| {
        let mut d = Decoder::without_banner(limits);
        d.feed(bytes);
        match d.decode() {
            Some(Ok(Frame::Message(m))) => m.retained_bytes(),
            other => panic!("{other:?}"),
        }
    };
    let cap: usize = (0..40).map(|n| retained(&item(n))).sum();
    let mut h = ready_with(builder(cap));
    let list = h.send(Action::new("DeviceStateList"));
    assert_eq!(list, id);
    let mut read = start(list.as_str());
    (0..40).for_each(|n| read.extend(item(n)));
    read.extend(complete(list.as_str(), "40"));
    h.feed(&read);
    assert_eq!(items_of(&h, &list), Ok(40));
}

#[test]
fn lists_in_progress_together_stay_within_max_list_bytes() {
    // Two lists at once, each under the cap alone, over it together: the one whose item
    // would pass it overflows; the memory held for lists never passes the cap.
    let limits = DecoderLimits::builder()
        .max_line_len(2048)
        .max_message_len(4096)
        .max_fields(64)
        .build()
        .unwrap();
    let mut h = ready_with(
        ClientConfig::builder("admin", "amp111")
            .decoder(limits)
            .max_list_bytes(64 << 10),
    );
    let a = h.send(Action::new("DeviceStateList"));
    let b = h.send(Action::new("DeviceStateList"));
    h.take("DeviceStateList");
    let (sa, sb) = (a.as_str(), b.as_str());
    let pad = "p".repeat(900);
    let big = |id: &str, n: usize| {
        msg(&[
            ("Event", "DeviceStateChange"),
            ("ActionID", id),
            ("Device", &format!("Custom:{n}")),
            ("Pad", &pad),
        ])
    };
    let mut read = start(sa);
    read.extend(start(sb));
    // About 40 KiB into each: 80 KiB together.
    for n in 0..40 {
        read.extend(big(sa, n));
        read.extend(big(sb, n));
    }
    read.extend(complete(sa, "40"));
    read.extend(complete(sb, "40"));
    h.feed(&read);
    let overflowed = [&a, &b]
        .iter()
        .filter(|id| matches!(h.outcome(id), Err(ActionError::ListOverflow { .. })))
        .count();
    assert_eq!(
        overflowed,
        1,
        "{:?} / {:?}",
        h.outcome(&a).is_ok(),
        h.outcome(&b).is_ok()
    );
    let whole = [&a, &b]
        .iter()
        .filter(|id| items_of(&h, id) == Ok(40))
        .count();
    assert_eq!(
        whole, 1,
        "the first list to reach the cap overflows, the other completes"
    );
    assert!(h.client.stats().list_items_dropped > 0);
    assert_eq!(leaked(&mut h, &a).len() + leaked(&mut h, &b).len(), 0);
}

#[test]
fn a_completed_lists_bytes_are_released_for_the_lists_after_it() {
    // One list after another, each about 40 KiB under a 64 KiB budget shared by the lists
    // in progress: a list that completed holds nothing, so every one completes whole.
    let limits = DecoderLimits::builder()
        .max_line_len(2048)
        .max_message_len(4096)
        .max_fields(64)
        .build()
        .unwrap();
    let mut h = ready_with(
        ClientConfig::builder("admin", "amp111")
            .decoder(limits)
            .max_list_bytes(64 << 10),
    );
    let pad = "p".repeat(900);
    for round in 0..3 {
        let id = h.send(Action::new("DeviceStateList"));
        h.take("DeviceStateList");
        let mut read = start(id.as_str());
        for n in 0..40 {
            read.extend(msg(&[
                ("Event", "DeviceStateChange"),
                ("ActionID", id.as_str()),
                ("Device", &format!("Custom:{n}")),
                ("Pad", &pad),
            ]));
        }
        read.extend(complete(id.as_str(), "40"));
        h.feed(&read);
        assert_eq!(items_of(&h, &id), Ok(40), "list {round}");
    }
    assert_eq!(h.client.stats().list_items_dropped, 0);
}
