//! The fields Asterisk C-escapes (the channel block's names and variables, VarSet's value)
//! read back as the caller set them; fields Asterisk sends as they are stay as sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_proto::Message;
use ami_types::Event;

fn message(wire: &str) -> Message {
    support::decode(wire.as_bytes())
}

#[test]
fn channel_names_variables_and_varset_values_are_unescaped() {
    // As Asterisk 22 writes a channel whose caller is `O'Brien? "Bob"`, with a channel
    // variable holding a tab, and a VarSet of a value with a newline.
    let newchannel = message(concat!(
        "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/100-00000001\r\n",
        "ChannelState: 0\r\nChannelStateDesc: Down\r\nCallerIDNum: 100\r\n",
        "CallerIDName: O\\'Brien\\? \\\"Bob\\\"\r\nConnectedLineNum: <unknown>\r\n",
        "ConnectedLineName: C:\\\\calls\r\nLanguage: en\r\nAccountCode: \r\n",
        "Context: default\r\nExten: 100\r\nPriority: 1\r\nUniqueid: 1.1\r\nLinkedid: 1.1\r\n",
        "ChanVariable: NOTE=a\\tb\r\n\r\n"
    ));
    let Event::Newchannel(e) = Event::from_message(&newchannel) else {
        panic!("not a Newchannel");
    };
    let ch = e.channel();
    assert_eq!(ch.caller_id_name().as_deref(), Some(r#"O'Brien? "Bob""#));
    assert_eq!(ch.connected_line_name().as_deref(), Some(r"C:\calls"));
    assert_eq!(ch.chan_variables(), ["NOTE=a\tb"]);
    // The wire text is still there for whoever wants it.
    assert_eq!(
        newchannel.get_str("CallerIDName"),
        Some(r#"O\'Brien\? \"Bob\""#)
    );

    let varset = message(concat!(
        "Event: VarSet\r\nPrivilege: dialplan,all\r\nChannel: PJSIP/100-00000001\r\n",
        "Variable: NOTE\r\nValue: line 1\\nline 2\r\nUniqueid: 1.1\r\n\r\n"
    ));
    let Event::VarSet(v) = Event::from_message(&varset) else {
        panic!("not a VarSet");
    };
    assert_eq!(v.value().as_deref(), Some("line 1\nline 2"));
}

#[test]
fn fields_asterisk_sends_unescaped_are_read_as_sent() {
    // app_queue writes a queue entry's caller name as it is: a backslash in it is a
    // backslash.
    let entry = message(concat!(
        "Event: QueueEntry\r\nQueue: sales\r\nPosition: 1\r\nChannel: PJSIP/100-00000001\r\n",
        "Uniqueid: 1.1\r\nCallerIDNum: 100\r\nCallerIDName: C:\\new\r\n\r\n"
    ));
    let Event::QueueEntry(q) = Event::from_message(&entry) else {
        panic!("not a QueueEntry");
    };
    assert_eq!(q.caller_id_name(), Some(r"C:\new"));
}

#[test]
fn the_generic_walk_and_serde_give_escaped_fields_unescaped_too() {
    let m = message(concat!(
        "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/100-00000001\r\n",
        "CallerIDNum: 100\r\nCallerIDName: O\\'Brien\\?\r\nUniqueid: 1.1\r\n\r\n"
    ));
    let event = Event::from_message(&m);
    let name = event
        .read_fields()
        .find_map(|(field, reading)| match reading {
            ami_types::Reading::Typed(_, v) if field.key == b"CallerIDName" => Some(v),
            _ => None,
        })
        .unwrap();
    assert_eq!(name, ami_types::FieldValue::Escaped(r"O\'Brien\?"));
    assert_eq!(name.to_string(), "O'Brien?");
    assert_eq!(name.unescaped().as_deref(), Some("O'Brien?"));
    let json = serde_json::to_value(event).unwrap();
    assert_eq!(json["CallerIDName"], "O'Brien?");
    // Text declared plain stays as sent.
    assert_eq!(json["Channel"], "PJSIP/100-00000001");
}
