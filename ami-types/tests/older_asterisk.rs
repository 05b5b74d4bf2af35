//! Typed views against what older Asterisk versions (13, 16) send, bytes reconstructed from
//! their source at the tag each test names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_types::actions::{CommandResponse, ResponseView};

/// Asterisk 13.38.3, `main/manager.c:action_command`: `Response: Follows`, `Privilege:
/// Command`, the ActionID, then the CLI's own text (LF line ends, no blank line before it)
/// and `--END COMMAND--\r\n\r\n`. `core show uptime` prints its two lines through
/// `main/cli.c:print_uptimestr`.
const UPTIME_13: &[u8] = b"Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\n\
System uptime: 1 hour, 2 minutes, 3 seconds\n\
Last reload: 1 hour, 2 minutes, 3 seconds\n\
--END COMMAND--\r\n\r\n";

#[test]
fn a_command_answered_the_asterisk_13_way_gives_its_output_lines() {
    let m = support::decode(UPTIME_13);
    let command = CommandResponse::from_response(&m);
    assert_eq!(
        command.output(),
        [
            "System uptime: 1 hour, 2 minutes, 3 seconds",
            "Last reload: 1 hour, 2 minutes, 3 seconds"
        ],
        "the legacy body is the output, as `Output:` lines are on 14+"
    );
    assert_eq!(command.text(), None, "13 sends no Message with Follows");
}

#[test]
fn a_failed_command_on_asterisk_13_gives_the_clis_complaint_as_output() {
    // 13.38.3 answers an unknown CLI command with Follows too (`action_command` never says
    // Error after the blacklist check); the complaint is `main/cli.c:ast_cli_command_full`'s.
    let m = support::decode(
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: 8\r\n\
No such command 'foo bar' (type 'core show help foo bar' for other possible commands)\n\
--END COMMAND--\r\n\r\n",
    );
    let command = CommandResponse::from_response(&m);
    assert_eq!(
        command.output(),
        ["No such command 'foo bar' (type 'core show help foo bar' for other possible commands)"]
    );
}

#[test]
fn a_command_with_output_lines_still_reads_only_its_output_fields() {
    // 16.30.1's `action_command` (the 14+ form): the Message is not output.
    let m = support::decode(
        b"Response: Success\r\nActionID: 9\r\nMessage: Command output follows\r\n\
Output: System uptime: 5 seconds\r\nOutput: Last reload: 5 seconds\r\n\r\n",
    );
    let command = CommandResponse::from_response(&m);
    assert_eq!(
        command.output(),
        ["System uptime: 5 seconds", "Last reload: 5 seconds"]
    );
    assert_eq!(command.text(), Some("Command output follows"));
}

#[test]
fn an_asterisk_13_queue_member_status_without_the_later_fields_is_still_typed() {
    use ami_types::Event;
    // 13.38.3 `apps/app_queue.c:queue_member_blob_create`: no LastPause, LoginTime or
    // Wrapuptime (16+ add them); ints and flags as `%d`.
    let m = support::decode(
        b"Event: QueueMemberStatus\r\nPrivilege: agent,all\r\nQueue: support\r\n\
MemberName: Alice\r\nInterface: PJSIP/101\r\nStateInterface: PJSIP/101\r\n\
Membership: dynamic\r\nPenalty: 0\r\nCallsTaken: 3\r\nLastCall: 1765077600\r\n\
InCall: 0\r\nStatus: 1\r\nPaused: 0\r\nPausedReason: \r\nRinginuse: 1\r\n\r\n",
    );
    let Event::QueueMemberStatus(q) = Event::from_message(&m) else {
        panic!("not typed: {m:?}");
    };
    assert_eq!(q.queue(), Some("support"));
    assert_eq!((q.calls_taken(), q.status()), (Some(3), Some(1)));
    assert_eq!((q.paused(), q.ringinuse()), (Some(false), Some(true)));
    assert_eq!(
        (q.last_pause(), q.login_time(), q.wrapuptime()),
        (None, None, None),
        "fields 13 does not send read as absent"
    );
    assert!(Event::from_message(&m).issues().is_empty());
}

#[test]
fn an_originate_asterisk_13_forbids_by_its_older_wording_is_refused() {
    use ami_proto::Action;
    use ami_types::actions::Originate;
    use ami_types::originate::OriginateEnd;
    let action: Action = Originate::new("PJSIP/1001")
        .application("System")
        .data("true")
        .async_(true)
        .into();
    // 13.38.3 and 16.30.1 `action_originate`: "Originate Access Forbidden: Application" (or
    // ": Data"), where 18+ say "app or data blacklisted"; no call was placed either way.
    for forbidden in ["Application", "Data"] {
        let outcome = support::outcome(
            action.clone(),
            |aid| {
                format!(
                    "Response: Error\r\nActionID: {aid}\r\n\
                     Message: Originate Access Forbidden: {forbidden}\r\n\r\n"
                )
            },
            support::Then::Stays,
        );
        assert!(
            matches!(OriginateEnd::of(&outcome), OriginateEnd::Refused(_)),
            "{outcome:?}"
        );
    }
}
