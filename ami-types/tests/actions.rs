//! Typed action builders produce the `Action` a hand-written one would, and list actions
//! read their items and completion as the typed events they name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_proto::{Action, Response};
use ami_types::actions::{
    CoreShowChannels, Getvar, GetvarResponse, ListAction, MessageSend, Originate, PJSIPHangup,
    PJSIPNotify, Status, TypedAction, UpdateConfig,
};
use ami_types::enums::UpdateConfigAction;

fn fields(a: &Action) -> Vec<(String, String)> {
    a.fields()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn originate_builder_writes_required_optional_and_repeated_parameters_in_order() {
    let action: Action = Originate::new("PJSIP/1001")
        .context("from-internal")
        .exten(5551234)
        .priority(1)
        .variable("A=1")
        .async_(true)
        .variable("B=2")
        .timeout(20_000)
        .timeout(30_000) // set again: replaced, not repeated
        .into();
    let expected = Action::new("Originate")
        .field("Channel", "PJSIP/1001")
        .field("Context", "from-internal")
        .field("Exten", "5551234")
        .field("Priority", "1")
        .field("Variable", "A=1")
        .field("Async", "true")
        .field("Variable", "B=2")
        .field("Timeout", "30000");
    assert_eq!(fields(&action), fields(&expected));
    assert_eq!(action.name(), "Originate");
}

#[test]
fn var_escapes_what_asterisk_would_split_on_every_action_that_splits_variables() {
    let want = ("Variable".to_string(), r#"NOTE=a\,b \"c\" \\d"#.to_string());
    let value = r#"a,b "c" \d"#;
    let originate: Action = Originate::new("PJSIP/1")
        .application("Wait")
        .var("NOTE", value)
        .unwrap()
        .into();
    let message: Action = MessageSend::new().var("NOTE", value).unwrap().into();
    let notify: Action = PJSIPNotify::new().var("NOTE", value).unwrap().into();
    for action in [originate, message, notify] {
        assert!(fields(&action).contains(&want), "{action:?}");
    }
    assert_eq!(
        Originate::new("PJSIP/1").var("", 1).err(),
        Some(ami_proto::InvalidVariable::EmptyName)
    );
    assert!(Originate::new("PJSIP/1").var("A=B", 1).is_err());
}

#[test]
fn enum_bool_and_indexed_parameters_are_written_as_the_server_spells_them() {
    let action: Action = Status::new()
        .channel("Local/a-1;1")
        .all_variables(true)
        .into();
    assert_eq!(action.get("AllVariables"), Some("true"));

    let action: Action = UpdateConfig::new("a.conf", "b.conf")
        .action(0, UpdateConfigAction::NewCat)
        .cat(0, "general")
        .action(1, UpdateConfigAction::Other("Future".into()))
        .into();
    assert_eq!(
        fields(&action),
        [
            ("SrcFilename", "a.conf"),
            ("DstFilename", "b.conf"),
            ("Action-000000", "NewCat"),
            ("Cat-000000", "general"),
            ("Action-000001", "Future"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

/// Runs `action` against a scripted server that answers it with `reply(action_id)`.
fn run(action: Action, reply: impl Fn(&str) -> String) -> Response {
    match support::outcome(action, reply, support::Then::Stays) {
        Ok(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn list_items_and_completion_come_back_as_the_typed_events_the_action_names() {
    let response = run(Status::new().into(), |id| {
        format!(
            "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: Channel status will follow\r\n\r\n\
             Event: Status\r\nPrivilege: Call\r\nChannel: Local/hold@t-1;1\r\nChannelState: 6\r\n\
             Seconds: 12\r\nVariable: A=1\r\nVariable: B=2\r\nActionID: {id}\r\n\r\n\
             Event: StatusComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 1\r\nItems: 1\r\n\r\n"
        )
    });
    let items: Vec<_> = Status::items(&response).collect();
    assert_eq!(items.len(), 1);
    let status = items[0].expect("a Status item");
    assert_eq!(status.channel().name(), Some("Local/hold@t-1;1"));
    assert_eq!(status.seconds(), Some(12));
    assert_eq!(status.variable(), ["A=1", "B=2"]);
    let complete = Status::complete(&response).unwrap().unwrap();
    assert_eq!(complete.list_items(), Some(1));
    assert_eq!(complete.items(), Some(1));
}

#[test]
fn a_list_item_of_another_kind_is_returned_not_dropped() {
    let response = run(CoreShowChannels::new().into(), |id| {
        format!(
            "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n\
             Event: SomethingElse\r\nActionID: {id}\r\n\r\n\
             Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 1\r\n\r\n"
        )
    });
    let items: Vec<_> = CoreShowChannels::items(&response).collect();
    assert_eq!(items.len(), 1);
    let other = items[0].expect_err("not a CoreShowChannel");
    assert_eq!(other.event(), Some("SomethingElse"));
}

#[test]
fn responses_with_fields_have_typed_views() {
    let response = run(Getvar::new("CALLERID(num)").into(), |id| {
        format!("Response: Success\r\nActionID: {id}\r\nVariable: CALLERID(num)\r\nValue: 5551234\r\n\r\n")
    });
    let view: GetvarResponse<'_> = Getvar::response(&response);
    assert_eq!(view.variable(), Some("CALLERID(num)"));
    assert_eq!(view.value(), Some("5551234"));
    assert!(view.issues().is_empty());
}

#[test]
fn events_and_login_take_a_class_list_as_well_as_on_and_off() {
    use ami_types::actions::{EventMask, Events, Login};
    // On and off, as before.
    let on: Action = Events::new(true).into();
    assert_eq!(fields(&on), [("EventMask".into(), "on".into())]);
    let off: Action = Login::new("admin").events(false).into();
    assert_eq!(off.get("Events"), Some("off"));
    // A class list, checked: Asterisk ignores a name it does not know without a word.
    let mask = EventMask::classes(["call", "agent"]).unwrap();
    let action: Action = Events::new(mask.clone()).into();
    assert_eq!(action.get("EventMask"), Some("call,agent"));
    let login: Action = Login::new("admin").events(mask).into();
    assert_eq!(login.get("Events"), Some("call,agent"));
    assert_eq!(
        EventMask::classes(["call", "calls"]),
        Err(ami_types::actions::InvalidEventMask::UnknownClass(
            "calls".into()
        ))
    );
    assert_eq!(
        EventMask::classes(["Call"]).err(),
        Some(ami_types::actions::InvalidEventMask::UnknownClass(
            "Call".into()
        )),
        "class names are case-sensitive in Asterisk"
    );
    assert_eq!(
        EventMask::classes(Vec::<&str>::new()).err(),
        Some(ami_types::actions::InvalidEventMask::Empty)
    );
    assert_eq!(EventMask::classes(["all"]).unwrap().as_str(), "all");
}

#[test]
fn user_event_carries_arbitrary_headers_checked_at_encode() {
    use ami_types::actions::UserEvent;
    let action: Action = UserEvent::new("CallFlow")
        .header("Step", "ivr")
        .header("Step", 2) // repeated: kept, in order
        .header("X-Tenant", "acme")
        .into();
    assert_eq!(
        fields(&action),
        [
            ("UserEvent", "CallFlow"),
            ("Step", "ivr"),
            ("Step", "2"),
            ("X-Tenant", "acme"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    // No `Header1` / `HeaderN` from the catalog's placeholders.
    assert!(action.fields().all(|(k, _)| !k.starts_with("Header")));
    // Checked like any header when encoded: no CR/LF in a value, no `:` in a key.
    let mut out = Vec::new();
    let bad: Action = UserEvent::new("x")
        .header("Note", "a\r\nAction: Hangup")
        .into();
    assert!(matches!(
        bad.encode(None, &mut out),
        Err(ami_proto::EncodeError::ForbiddenByte { .. })
    ));
    let bad: Action = UserEvent::new("x").header("A: B", "c").into();
    assert!(matches!(
        bad.encode(None, &mut out),
        Err(ami_proto::EncodeError::InvalidName { .. })
    ));
    assert!(out.is_empty());
}

/// main/manager.c `action_userevent` copies every header but `Action` and `UserEvent`, as
/// sent, after the `Event: UserEvent` and `Privilege: user,all` lines `manager_event` writes
/// first (`__manager_event_sessions_va`). Caller headers named `Event`, `Privilege` or
/// `Response` come later in the event, where a reader that takes a key's first value (AMI's
/// rule, Asterisk's `astman_get_header`, this library's) never looks; the client's ActionID
/// comes before them too, and one of the caller's own is refused.
#[test]
fn user_event_headers_named_like_routing_fields_do_not_change_the_event_listeners_read() {
    use ami_proto::{Client, ClientConfig, MessageKind, SendError};
    use ami_types::actions::UserEvent;
    use ami_types::Event;
    let action: Action = UserEvent::new("CallFlow")
        .header("Event", "Hangup")
        .header("Privilege", "system,all")
        .header("Response", "Success")
        .header("Step", "ivr")
        .into();
    let mut wire = Vec::new();
    action
        .encode(
            Some(&ami_proto::ActionId::new("ours-1").unwrap()),
            &mut wire,
        )
        .unwrap();
    // The event Asterisk raises from it.
    let mut event =
        String::from("Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: CallFlow\r\n");
    for line in String::from_utf8(wire).unwrap().split("\r\n") {
        if !line.is_empty() && !line.starts_with("Action:") && !line.starts_with("UserEvent:") {
            event.push_str(line);
            event.push_str("\r\n");
        }
    }
    event.push_str("\r\n");
    let m = support::decode(event.as_bytes());
    assert_eq!(m.kind(), MessageKind::Event);
    assert_eq!(m.event(), Some("UserEvent"));
    assert_eq!(m.get_str("Privilege"), Some("user,all"));
    assert_eq!(m.action_id(), Some("ours-1"));
    let Event::UserEvent(u) = Event::from_message(&m) else {
        panic!("read as another event: {event:?}")
    };
    assert_eq!(u.user_event(), Some("CallFlow"));
    // A caller's `ActionID` would be the first one when the client sends none: refused.
    let config = ClientConfig::builder("admin", "amp111").build().unwrap();
    let now = std::time::Instant::now();
    let mut client = Client::new(config, now);
    let forged: Action = UserEvent::new("CallFlow")
        .header("actionid", "theirs-9")
        .into();
    assert_eq!(
        client.send_action(now, forged),
        Err(SendError::ActionIdField)
    );
}

#[test]
fn queue_add_sets_wrapuptime_and_blind_transfer_requires_exten() {
    use ami_types::actions::{BlindTransfer, QueueAdd};
    // apps/app_queue.c manager_add_queue_member reads `Wrapuptime`.
    let add: Action = QueueAdd::new("sales", "PJSIP/100")
        .penalty(1)
        .wrapuptime(15)
        .into();
    assert_eq!(add.get("Wrapuptime"), Some("15"));
    // main/manager.c action_blind_transfer: "No extension specified" without `Exten`.
    let transfer: Action = BlindTransfer::new("PJSIP/100-00000001", 200)
        .context("default")
        .into();
    assert_eq!(
        fields(&transfer),
        [
            ("Channel", "PJSIP/100-00000001"),
            ("Exten", "200"),
            ("Context", "default"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

#[test]
fn a_logins_debug_output_shows_neither_its_secret_nor_its_md5_key() {
    use ami_types::actions::Login;
    let plain = Login::new("admin").secret("TOPSECRET1");
    let md5 = Login::new("admin").key("0123456789abcdef0123456789abcdef");
    for shown in [
        format!("{plain:?}"),
        format!("{:?}", plain.params()),
        format!("{plain:#?}"),
        format!("{md5:?}"),
        format!("{:?}", md5.params()),
    ] {
        assert!(
            !shown.contains("TOPSECRET1") && !shown.contains("0123456789abcdef"),
            "{shown}"
        );
        // What is not secret still shows, and the secret's place is marked.
        assert!(
            shown.contains("admin") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
    // The secret is still sent.
    assert_eq!(plain.params().get("Secret"), Some("TOPSECRET1"));
}

#[test]
fn pjsip_hangup_of_a_regex_is_a_list_of_hung_up_channels_as_hangups_is() {
    // pjsip_action_hangup is ast_manager_hangup_helper, Hangup's own code: with a /regex/
    // it answers a ChannelHungup list, which the catalog misses.
    let response = run(PJSIPHangup::new("/^PJSIP\\/100-.*$/", 16).into(), |id| {
        format!(
            "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: Channels hung up will follow\r\n\r\n\
             Event: ChannelHungup\r\nActionID: {id}\r\nChannel: PJSIP/100-00000001\r\n\r\n\
             Event: ChannelsHungupListComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 1\r\n\r\n"
        )
    });
    let items: Vec<_> = PJSIPHangup::items(&response).collect();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].as_ref().map(|h| h.channel()).ok().flatten(),
        Some("PJSIP/100-00000001")
    );
    assert!(PJSIPHangup::complete(&response).is_some_and(|c| c.is_ok()));
}
