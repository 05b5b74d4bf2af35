//! The client against the bytes older Asterisk versions send (13 and 16, the oldest in
//! mixed dialer fleets), reconstructed from their source at the tag each test names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{Action, AuthMethod, ClientConfig, DisconnectReason, StreamItem};
use scripted::{id_of, Harness, Out};
use std::time::{Duration, Instant};

/// 13.38.3 `main/manager.c:session_do` with `include/asterisk/manager.h`'s AMI_VERSION.
const BANNER_13: &[u8] = b"Asterisk Call Manager/2.10.6\r\n";
/// 16.30.1, the same.
const BANNER_16: &[u8] = b"Asterisk Call Manager/5.0.5\r\n";

fn config(auth: AuthMethod) -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .auth(auth)
        .events("on")
        .seed(13)
        .ping_interval(Duration::from_secs(20))
        .pong_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Logged in against `banner` with a plain login, the stream emptied.
fn ready_on(banner: &[u8]) -> Harness {
    let mut h = Harness::new(config(AuthMethod::Plain), Instant::now());
    h.connected();
    h.feed(banner);
    let login = h.take("Login");
    let out = h.feed(&scripted::login_ok(id_of(&login)));
    assert!(matches!(out.last(), Some(Out::Ready(_))), "{out:?}");
    h.events();
    h
}

fn md5_hex(input: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(input)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn event_names(items: &[StreamItem]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Event(m) => m.event().map(str::to_owned),
            _ => None,
        })
        .collect()
}

#[test]
fn an_asterisk_13_md5_login_is_ready_with_its_ami_2_version_and_its_inline_fully_booted() {
    let mut h = Harness::new(config(AuthMethod::Md5), Instant::now());
    h.connected();
    h.feed(BANNER_13);
    // 13.38.3 `action_challenge`: `astman_start_ack` (Response, ActionID), then the
    // challenge (`ast_random()` printed with %ld) and the blank line.
    let c = h.take("Challenge");
    assert_eq!(c.get_str("AuthType"), Some("MD5"));
    h.feed(
        format!(
            "Response: Success\r\nActionID: {}\r\nChallenge: 1804289383\r\n\r\n",
            id_of(&c)
        )
        .as_bytes(),
    );
    let login = h.take("Login");
    assert_eq!(
        login.get_str("Key"),
        Some(md5_hex(b"1804289383amp111").as_str()),
        "13's `authenticate` compares lowercase hex of md5(challenge, secret)"
    );
    assert_eq!(login.get_str("Events"), Some("on"));
    // 13.38.3 `action_login`: the ack, then an inline FullyBooted without the Uptime and
    // LastReload that 16+ add.
    let out = h.feed(
        format!(
            "Response: Success\r\nActionID: {}\r\nMessage: Authentication accepted\r\n\r\n\
             Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n",
            id_of(&login)
        )
        .as_bytes(),
    );
    assert_eq!(out.last(), Some(&Out::Ready("2.10.6".into())));
    let items = h.events();
    assert!(matches!(&items[0], StreamItem::Ready { ami_version } if ami_version == "2.10.6"));
    assert_eq!(event_names(&items), ["FullyBooted"]);
}

#[test]
fn a_command_on_asterisk_13_completes_with_its_follows_body_and_later_events_still_flow() {
    let mut h = ready_on(BANNER_13);
    let id = h.send(Action::new("Command").field("Command", "core show uptime"));
    let sent = h.take("Command");
    let aid = id_of(&sent).to_string();
    // 13.38.3 `action_command`: three writes (the headers with the ActionID, the CLI's LF
    // text, `--END COMMAND--\r\n\r\n`), each its own TCP segment (TCP_NODELAY), then the
    // events queued meanwhile (`process_events` after the handler).
    h.feed(format!("Response: Follows\r\nPrivilege: Command\r\nActionID: {aid}\r\n").as_bytes());
    h.feed(
        b"System uptime: 1 hour, 2 minutes, 3 seconds\nLast reload: 1 hour, 2 minutes, 3 seconds\n",
    );
    h.feed(
        b"--END COMMAND--\r\n\r\nEvent: Newexten\r\nPrivilege: dialplan,all\r\nChannel: PJSIP/100-00000001\r\n\r\n",
    );
    let response = h.outcome(&id).as_ref().expect("a Follows is a success");
    let lines: Vec<String> = response
        .message()
        .command_output()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "System uptime: 1 hour, 2 minutes, 3 seconds",
            "Last reload: 1 hour, 2 minutes, 3 seconds"
        ]
    );
    assert_eq!(event_names(&h.events()), ["Newexten"]);

    // A CLI command that prints nothing: `--END COMMAND--` right after the ActionID line.
    let id = h.send(Action::new("Command").field("Command", "core set verbose 0"));
    let sent = h.take("Command");
    h.feed(
        format!(
            "Response: Follows\r\nPrivilege: Command\r\nActionID: {}\r\n--END COMMAND--\r\n\r\n",
            id_of(&sent)
        )
        .as_bytes(),
    );
    let response = h
        .outcome(&id)
        .as_ref()
        .expect("an empty Follows is a success");
    assert_eq!(response.message().command_output().count(), 0);
    assert_eq!(h.client.stats().unexpected, 0);
}

#[test]
fn an_asterisk_13_ping_answer_keeps_the_session_alive() {
    let mut h = ready_on(BANNER_13);
    // Idle for the ping interval: the heartbeat Ping goes out.
    h.advance(Duration::from_secs(20));
    let ping = h.take("Ping");
    // 13.38.3 `action_ping`: Response, ActionID, `Ping: Pong`, `Timestamp: %ld.%06lu`.
    h.feed(
        format!(
            "Response: Success\r\nActionID: {}\r\nPing: Pong\r\nTimestamp: 1765077600.123456\r\n\r\n",
            id_of(&ping)
        )
        .as_bytes(),
    );
    // Past the pong timeout of that Ping.
    let out = h.advance(Duration::from_secs(15));
    assert!(
        !out.iter().any(|o| matches!(o, Out::Disconnected(..))),
        "{out:?}"
    );
    // The answer re-armed the idle timer: the next heartbeat goes 20 s after it.
    h.advance(Duration::from_secs(6));
    let ping = h.take("Ping");
    h.feed(
        format!(
            "Response: Success\r\nActionID: {}\r\nPing: Pong\r\nTimestamp: 1765077620.000001\r\n\r\n",
            id_of(&ping)
        )
        .as_bytes(),
    );
    let out = h.advance(Duration::from_secs(12));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Out::Disconnected(DisconnectReason::HeartbeatTimeout, _))),
        "{out:?}"
    );
}

#[test]
fn an_asterisk_16_core_show_channels_list_completes_with_its_items_and_none_leaks() {
    let mut h = ready_on(BANNER_16);
    let id = h.send(Action::new("CoreShowChannels"));
    let sent = h.take("CoreShowChannels");
    let aid = id_of(&sent).to_string();
    // 16.30.1 `action_coreshowchannels`: `astman_send_listack` (Response, ActionID,
    // EventList: start, Message), one CoreShowChannel per channel (ActionID, the channel
    // block of `ast_manager_build_channel_state_string_prefix`, Application,
    // ApplicationData, Duration, BridgeId), then `astman_send_list_complete`.
    let mut wire = format!(
        "Response: Success\r\nActionID: {aid}\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n"
    );
    for (n, uid) in [(1, "1765077600.1"), (2, "1765077600.2")] {
        wire += &format!(
            "Event: CoreShowChannel\r\nActionID: {aid}\r\nChannel: PJSIP/10{n}-0000000{n}\r\n\
             ChannelState: 6\r\nChannelStateDesc: Up\r\nCallerIDNum: 10{n}\r\nCallerIDName: <unknown>\r\n\
             ConnectedLineNum: <unknown>\r\nConnectedLineName: <unknown>\r\nLanguage: en\r\n\
             AccountCode: \r\nContext: from-internal\r\nExten: 200\r\nPriority: 1\r\n\
             Uniqueid: {uid}\r\nLinkedid: 1765077600.1\r\nApplication: Dial\r\n\
             ApplicationData: PJSIP/200\r\nDuration: 00:00:07\r\nBridgeId: \r\n\r\n"
        );
    }
    wire += &format!(
        "Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\nEventList: Complete\r\nListItems: 2\r\n\r\n"
    );
    h.feed(wire.as_bytes());
    let response = h.outcome(&id).as_ref().expect("the list completes");
    assert_eq!(response.items().len(), 2);
    assert_eq!(h.client.stats().list_count_mismatches, 0);
    assert!(event_names(&h.events()).is_empty());
}
