//! Events as Asterisk 22.10.1 really prints them, where its C source differs from the
//! catalog (its docs): field types, escaping, enum values and fields the docs omit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_types::Event;
use support::decode as message;

#[test]
fn peer_status_and_registry_causes_are_text_while_hangup_causes_stay_integers() {
    // main/stasis_endpoints.c and main/stasis_system.c print `Cause: %s`: chan_iax2 sends
    // `Expired`, an outbound registration the SIP response.
    let peer = message(
        b"Event: PeerStatus\r\nPrivilege: system,all\r\nChannelType: IAX2\r\nPeer: IAX2/trunk\r\n\
          PeerStatus: Unregistered\r\nCause: Expired\r\n\r\n",
    );
    let Event::PeerStatus(p) = Event::from_message(&peer) else {
        panic!("not a PeerStatus")
    };
    assert_eq!(p.cause(), Some("Expired"));
    assert!(p.issues().is_empty(), "{:?}", p.issues());

    let registry = message(
        b"Event: Registry\r\nPrivilege: system,all\r\nChannelType: PJSIP\r\nUsername: sip:100@pbx\r\n\
          Domain: sip:pbx\r\nStatus: Rejected\r\nCause: 403 Forbidden\r\n\r\n",
    );
    let Event::Registry(r) = Event::from_message(&registry) else {
        panic!("not a Registry")
    };
    assert_eq!(r.cause(), Some("403 Forbidden"));
    assert!(r.issues().is_empty(), "{:?}", r.issues());

    // main/manager_channels.c prints these with `%d` / `%jd`.
    for name in ["Hangup", "HangupRequest", "SoftHangupRequest"] {
        let m =
            message(format!("Event: {name}\r\nChannel: PJSIP/1-1\r\nCause: 16\r\n\r\n").as_bytes());
        let cause = match Event::from_message(&m) {
            Event::Hangup(h) => h.cause(),
            Event::HangupRequest(h) => h.cause(),
            Event::SoftHangupRequest(h) => h.cause(),
            other => panic!("{other:?}"),
        };
        assert_eq!(cause, Some(16), "{name}");
    }
}

#[test]
fn presence_state_change_subtype_and_message_are_unescaped() {
    // main/presencestate.c writes both through ast_escape_c_alloc.
    let m = message(
        b"Event: PresenceStateChange\r\nPrivilege: call,all\r\nPresentity: CustomPresence:100\r\n\
          Status: away\r\nSubtype: at \\\"lunch\\\"\r\nMessage: back at 2\\nor 3\r\n\r\n",
    );
    let Event::PresenceStateChange(p) = Event::from_message(&m) else {
        panic!("not a PresenceStateChange")
    };
    assert_eq!(p.subtype().as_deref(), Some(r#"at "lunch""#));
    assert_eq!(p.message_field().as_deref(), Some("back at 2\nor 3"));
    let json = serde_json::to_value(Event::from_message(&m)).unwrap();
    assert_eq!(json["Subtype"], r#"at "lunch""#);
}

#[test]
fn new_callerid_presentation_text_is_unescaped() {
    // main/manager_channels.c: `CID-CallingPres: %d (%s)`, the text through
    // ast_escape_c_alloc.
    let m = message(
        b"Event: NewCallerid\r\nChannel: PJSIP/1-1\r\n\
          CID-CallingPres: 0 (Presentation Allowed, Not Screened \\\"x\\\")\r\n\r\n",
    );
    let Event::NewCallerid(n) = Event::from_message(&m) else {
        panic!("not a NewCallerid")
    };
    assert_eq!(
        n.cid_calling_pres().as_deref(),
        Some(r#"0 (Presentation Allowed, Not Screened "x")"#)
    );
}

#[test]
fn enum_values_asterisk_sends_beyond_its_docs_are_typed() {
    use ami_types::enums::{ChannelStateDesc, ContactStatus, PeerStatus};
    // res/res_pjsip/pjsip_configuration.c and chan_iax2.c: qualify results.
    assert_eq!(PeerStatus::from("Reachable"), PeerStatus::Reachable);
    assert_eq!(PeerStatus::from("Unreachable"), PeerStatus::Unreachable);
    // res/res_pjsip/pjsip_options.c: a contact that is not qualified.
    assert_eq!(
        ContactStatus::from("NonQualified"),
        ContactStatus::NonQualified
    );
    // main/channel.c ast_state2str.
    assert_eq!(ChannelStateDesc::from("Mute"), ChannelStateDesc::Mute);

    let m = message(
        b"Event: PeerStatus\r\nChannelType: PJSIP\r\nPeer: PJSIP/100\r\nPeerStatus: Reachable\r\n\r\n",
    );
    let Event::PeerStatus(p) = Event::from_message(&m) else {
        panic!("not a PeerStatus")
    };
    assert_eq!(p.peer_status(), Some(PeerStatus::Reachable));
    // The generic walk calls it documented too, not `Other`.
    assert!(Event::from_message(&m).read_fields().any(|(_, r)| matches!(
        r,
        ami_types::Reading::Typed(_, ami_types::FieldValue::Enum("Reachable"))
    )));
}

#[test]
fn hangup_requests_carry_the_tech_cause() {
    // main/manager_channels.c channel_hangup_request_cb: `TechCause: %jd` after `Cause`.
    for name in ["HangupRequest", "SoftHangupRequest"] {
        let m = message(
            format!("Event: {name}\r\nChannel: PJSIP/1-1\r\nCause: 16\r\nTechCause: 486\r\n\r\n")
                .as_bytes(),
        );
        let event = Event::from_message(&m);
        let tech_cause = match event {
            Event::HangupRequest(h) => h.tech_cause(),
            Event::SoftHangupRequest(h) => h.tech_cause(),
            other => panic!("{other:?}"),
        };
        assert_eq!(tech_cause, Some(486), "{name}");
        assert_eq!(event.undeclared_fields().count(), 0, "{name}");
    }
}

#[test]
fn originate_response_and_rename_read_their_channel_variables() {
    // main/manager.c append_channel_vars: with `channelvars` set in manager.conf, events
    // raised with their channel end in `ChanVariable(<channel>): name=value` lines, values
    // as they are (not C-escaped).
    let m = message(
        b"Event: OriginateResponse\r\nPrivilege: call,all\r\nResponse: Success\r\n\
          Channel: PJSIP/100-00000001\r\nContext: default\r\nExten: 100\r\nReason: 4\r\n\
          Uniqueid: 1.1\r\nCallerIDNum: <unknown>\r\nCallerIDName: <unknown>\r\n\
          ChanVariable(PJSIP/100-00000001): CAMPAIGN=spring\r\n\
          ChanVariable(PJSIP/100-00000001): NOTE=C:\\x\r\n\r\n",
    );
    let event = Event::from_message(&m);
    let Event::OriginateResponse(o) = event else {
        panic!("not an OriginateResponse")
    };
    assert_eq!(o.chan_variables(), ["CAMPAIGN=spring", r"NOTE=C:\x"]);
    assert_eq!(event.undeclared_fields().count(), 0);
    assert!(event.issues().is_empty());
    // Serialised as the list it is, like the snapshots' `ChanVariable`.
    let json = serde_json::to_value(event).unwrap();
    assert_eq!(
        json["ChanVariable(PJSIP/100-00000001)"],
        serde_json::json!(["CAMPAIGN=spring", r"NOTE=C:\x"])
    );

    let m = message(
        b"Event: Rename\r\nPrivilege: call,all\r\nChannel: PJSIP/100-00000001\r\n\
          Newname: PJSIP/100-00000001<ZOMBIE>\r\nUniqueid: 1.1\r\n\
          ChanVariable(PJSIP/100-00000001): CAMPAIGN=spring\r\n\r\n",
    );
    let Event::Rename(r) = Event::from_message(&m) else {
        panic!("not a Rename")
    };
    assert_eq!(r.chan_variables(), ["CAMPAIGN=spring"]);
    assert_eq!(Event::from_message(&m).undeclared_fields().count(), 0);
}

#[test]
fn the_headers_manager_debug_adds_to_every_event_are_envelope_not_the_senders_own() {
    // manager.conf `debug = on`: __manager_event_sessions_va adds SequenceNumber, File,
    // Line and Func to every event; a UserEvent's own headers are the sender's alone.
    let m = message(
        b"Event: UserEvent\r\nPrivilege: user,all\r\nSequenceNumber: 42\r\n\
          File: manager.c\r\nLine: 1234\r\nFunc: action_userevent\r\n\
          UserEvent: Campaign\r\nLead: 7\r\n\r\n",
    );
    let event = Event::from_message(&m);
    let own: Vec<&str> = event
        .undeclared_fields()
        .map(|f| std::str::from_utf8(f.key).unwrap())
        .collect();
    assert_eq!(own, ["Lead"]);
    // An event whose own field is named like one keeps it (pjsip's outbound `line` option).
    let m = message(
        b"Event: OutboundRegistrationDetail\r\nObjectType: registration\r\n\
          ObjectName: trunk\r\nLine: yes\r\n\r\n",
    );
    let event = Event::from_message(&m);
    assert_eq!(event.undeclared_fields().count(), 0);
    let json = serde_json::to_value(event).unwrap();
    assert!(json.get("Line").is_some(), "{json}");
}

#[test]
fn fax_session_error_correction_mode_is_read_in_both_spellings_asterisk_prints() {
    // res_fax_spandsp: `Yes`/`No` for a T.30 session, `yes`/`no` for a T.38 gateway.
    for (wire, want) in [("Yes", true), ("No", false), ("yes", true), ("no", false)] {
        let m = message(
            format!("Event: FAXSession\r\nSessionNumber: 7\r\nErrorCorrectionMode: {wire}\r\n\r\n")
                .as_bytes(),
        );
        let event = Event::from_message(&m);
        let Event::FAXSession(f) = &event else {
            panic!("not a FAXSession")
        };
        assert_eq!(f.error_correction_mode(), Some(want), "{wire}");
        assert!(event.issues().is_empty(), "{wire}");
    }
}

#[test]
fn channel_variables_of_a_channel_whose_name_has_a_colon_are_read() {
    // chan_rtp's channels are named after an address and port: the ChanVariable key
    // holds a colon, where a key would end, so the key arrives cut there.
    let m = message(
        b"Event: OriginateResponse\r\nPrivilege: call,all\r\nResponse: Success\r\n\
          Channel: UnicastRTP/127.0.0.1:4000-0x7f00\r\nReason: 4\r\nUniqueid: 1.1\r\n\
          ChanVariable(UnicastRTP/127.0.0.1:4000-0x7f00): CAMPAIGN=spring\r\n\
          ChanVariable(PJSIP/100-00000001): NOTE=a: b\r\n\r\n",
    );
    let event = Event::from_message(&m);
    let Event::OriginateResponse(o) = &event else {
        panic!("not an OriginateResponse")
    };
    assert_eq!(o.chan_variables(), ["CAMPAIGN=spring", "NOTE=a: b"]);
    assert_eq!(event.undeclared_fields().count(), 0);
}
