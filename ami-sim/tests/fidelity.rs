//! Behaviours of a real Asterisk 22 the simulator reproduces, each with its source in
//! main/manager.c at 22.9.0 (identical in these parts to 22.10.1) or AMI-PROTOCOL.md: the
//! Filter action's advanced criteria, writes and the write timeout, Originate's checks,
//! ListCommands, and Setvar.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::SimConfig;
use support::*;

const LOGIN_ON: &[u8] = b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\n\r\n";

/// A logged-in admin session (events on), everything sent so far read.
fn session() -> Harness {
    let mut h = Harness::new(SimConfig::default());
    h.send(LOGIN_ON);
    h
}

/// Sends one Filter action and returns its reply's (Response, Message).
fn add_filter(h: &mut Harness, criteria: Option<&str>, filter: Option<&str>) -> (String, String) {
    let mut msg = b"Action: Filter\r\nActionID: flt\r\nOperation: Add\r\n".to_vec();
    if let Some(c) = criteria {
        msg.extend_from_slice(format!("MatchCriteria: {c}\r\n").as_bytes());
    }
    if let Some(f) = filter {
        msg.extend_from_slice(format!("Filter: {f}\r\n").as_bytes());
    }
    msg.extend_from_slice(b"\r\n");
    let from = h.got.len();
    h.send(&msg);
    let reply = h
        .shapes_from(from)
        .into_iter()
        .find(|s| s.get("ActionID").as_deref() == Some("flt"))
        .expect("no reply to Filter");
    (
        reply.first.trim_start_matches("Response: ").to_string(),
        reply.get("Message").unwrap_or_default(),
    )
}

/// The `UserEvent` values of the UserEvent events the session received since `from`.
fn user_events_since(h: &Harness, from: usize) -> Vec<String> {
    h.shapes_from(from)
        .into_iter()
        .filter(|s| s.is_event("UserEvent"))
        .map(|s| s.get("UserEvent").unwrap())
        .collect()
}

const FORMAT_ERROR: &str =
    "Filter was formatted incorrectly.  Check the syntax of the filter given.";

/// manager.c `manager_add_filter`: an advanced filter (MatchCriteria given) starts with
/// `match_type = FILTER_MATCH_NONE` (line 5836), not regex; `method(...)` alone changes it.
/// Then "method can't be 'none' with a filter pattern" (5938-5941) refuses a pattern
/// without a method, and a name() or header() without a pattern is a valid presence filter
/// (manager.c's own test table, line 6020: `eventfilter(name(VarSet),method(none))`, "").
#[test]
fn an_advanced_filter_without_method_is_a_presence_filter_not_a_regex() {
    let mut h = session();
    assert_eq!(
        add_filter(&mut h, Some("header(Channel)"), Some("^Local/")),
        ("Error".to_string(), FORMAT_ERROR.to_string()),
        "Asterisk refuses a pattern when no method() is given (match type none)"
    );
    let mut h = session();
    assert_eq!(
        add_filter(&mut h, Some("name(UserEvent)"), None),
        ("Success".to_string(), "Success".to_string()),
        "Asterisk accepts name() with no pattern: every event of that name"
    );
}

/// manager.c `manager_add_filter` splits MatchCriteria with `strtok_r(temp, " ,)")`
/// (line 5850) and knows only the options `action(`, `name(`, `header(`, `method(`; any
/// other token is "Filter option '%s' is unknown" (5923) = FILTER_FORMAT_ERROR. Method
/// names are compared with strcmp against `regex|exact|starts_with|ends_with|contains|none`
/// and action values against `include|exclude` (case-sensitive). AMI-PROTOCOL.md §8 gives
/// the same grammar: `method(regex|exact|starts_with|ends_with|contains|none)`. A bare
/// method (`ends_with`), the XML docs' camelCase (`startsWith`) or another case is refused.
#[test]
fn an_advanced_filter_accepts_only_asterisks_option_spellings() {
    for (criteria, filter) in [
        ("header(Seq),ends_with", "7"),
        ("header(Channel),starts_with", "Local/"),
        ("name(UserEvent),header(UserEvent),exact", "Foo"),
        ("header(Channel),method(startsWith)", "Local/"),
        ("header(Channel),method(Exact)", "Local/x"),
        ("action(Exclude),name(UserEvent),method(none)", ""),
        ("Name(UserEvent),Method(none)", ""),
    ] {
        let mut h = session();
        let filter = (!filter.is_empty()).then_some(filter);
        assert_eq!(
            add_filter(&mut h, Some(criteria), filter),
            ("Error".to_string(), FORMAT_ERROR.to_string()),
            "MatchCriteria: {criteria}"
        );
    }
}

/// manager.c `manager_add_filter` line 5797: `if (filter_pattern[0] == '!')` marks the
/// filter as an exclude filter and drops the `!` for advanced filters too (unless
/// `action(...)` says otherwise); manager.c's test table, line 6038:
/// `eventfilter(name(VarSet),header(Channel),method(exact))`, "!ZZZ" is an exclude filter.
#[test]
fn a_leading_bang_excludes_with_match_criteria_too() {
    let mut h = session();
    let r = add_filter(
        &mut h,
        Some("name(UserEvent),header(UserEvent),method(exact)"),
        Some("!Noise"),
    );
    assert_eq!(r.0, "Success");
    let from = h.got.len();
    h.send(b"Action: UserEvent\r\nUserEvent: Noise\r\n\r\n");
    h.send(b"Action: UserEvent\r\nUserEvent: Signal\r\n\r\n");
    assert_eq!(
        user_events_since(&h, from),
        ["Signal"],
        "Asterisk excludes Noise and lets everything else through"
    );
}

/// manager.c `filter_cmp_fn` (5634-5647) walks every line of the event and tests each
/// line that begins with `Header:` (ast_begins_with: case-sensitive), stopping at the
/// first that matches: a repeated header (Variable, ChanVariable, a UserEvent's own
/// headers) matches if any occurrence does.
#[test]
fn a_header_filter_matches_any_occurrence_of_a_repeated_header() {
    let mut h = session();
    let r = add_filter(&mut h, Some("header(Tag),method(exact)"), Some("b"));
    assert_eq!(r.0, "Success");
    let from = h.got.len();
    h.send(b"Action: UserEvent\r\nUserEvent: Both\r\nTag: a\r\nTag: b\r\n\r\n");
    assert_eq!(
        user_events_since(&h, from),
        ["Both"],
        "the second Tag: line matches, so Asterisk delivers the event"
    );
}

/// manager.c: `name()` compares `ast_str_hash` values (line 5616; the event's hash is
/// `ast_str_hash(event)`, 7620), and `header()` uses `ast_begins_with(line, "Name:")`
/// (5635): both are case-sensitive, so a filter with the wrong case drops its events.
#[test]
fn filter_event_and_header_names_are_case_sensitive() {
    let mut h = session();
    assert_eq!(
        add_filter(&mut h, Some("name(userevent),method(none)"), None).0,
        "Success"
    );
    let from = h.got.len();
    h.send(b"Action: UserEvent\r\nUserEvent: One\r\n\r\n");
    assert_eq!(
        user_events_since(&h, from),
        Vec::<String>::new(),
        "name(userevent) never matches Event: UserEvent in Asterisk"
    );
    let mut h = session();
    assert_eq!(
        add_filter(&mut h, Some("header(tag),method(exact)"), Some("x")).0,
        "Success"
    );
    let from = h.got.len();
    h.send(b"Action: UserEvent\r\nUserEvent: Two\r\nTag: x\r\n\r\n");
    assert_eq!(
        user_events_since(&h, from),
        Vec::<String>::new(),
        "header(tag) does not match a `Tag:` line in Asterisk"
    );
}

/// AMI-PROTOCOL.md §7: "Extension does not exist." is "checked only when Priority is set".
/// manager.c `action_originate` line 5338: `if (exten && context && pi)`: `exten` and
/// `context` come from astman_get_header, which returns "" (never NULL) for an absent
/// header, so the check runs whenever Priority is a non-zero number, Application or not;
/// with no Context/Exten, `ast_exists_extension(NULL, "", "", pi)` fails: an Originate
/// with Application and a default `Priority: 1`, or with Exten and Priority but no
/// Context, is "Extension does not exist.".
#[test]
fn originate_checks_the_extension_whenever_priority_is_set() {
    let mut h = Harness::new(SimConfig::default());
    h.send(b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\nEvents: off\r\n\r\n");
    let from = h.got.len();
    h.send(
        b"Action: Originate\r\nActionID: o-app\r\nChannel: Local/echo@ami-test\r\n\
          Application: Wait\r\nData: 1\r\nPriority: 1\r\nAsync: true\r\n\r\n",
    );
    h.send(
        b"Action: Originate\r\nActionID: o-noctx\r\nChannel: Local/echo@ami-test\r\n\
          Exten: echo\r\nPriority: 1\r\nAsync: true\r\n\r\n",
    );
    let got = h.shapes_from(from);
    let reply = |id: &str| {
        let s = got
            .iter()
            .find(|s| s.get("ActionID").as_deref() == Some(id) && s.first.starts_with("Response"))
            .unwrap();
        (s.first.clone(), s.get("Message").unwrap())
    };
    assert_eq!(
        reply("o-app"),
        (
            "Response: Error".to_string(),
            "Extension does not exist.".to_string()
        )
    );
    assert_eq!(
        reply("o-noctx"),
        (
            "Response: Error".to_string(),
            "Extension does not exist.".to_string()
        )
    );
}

/// stasis_channels.c `varset_to_ami` (22.9.0 lines 1231-1265): a variable set without a
/// channel (a global: AMI `Setvar` with no `Channel`, via `pbx_builtin_setvar_helper(NULL,
/// ...)`, which calls `ast_channel_publish_varset(NULL, ...)`, pbx_variables.c 1278) is
/// still published, as `Event: VarSet` (class dialplan) with `Channel: none` and
/// `Uniqueid: none` in place of the channel block.
#[test]
fn a_global_setvar_raises_a_varset_event_for_channel_none() {
    let mut h = session();
    let from = h.got.len();
    h.send(b"Action: Setvar\r\nActionID: sv\r\nVariable: FOO\r\nValue: bar\r\n\r\n");
    h.advance(std::time::Duration::from_secs(1));
    let got = h.shapes_from(from);
    let varset = got
        .iter()
        .find(|s| s.is_event("VarSet"))
        .expect("Asterisk sends Event: VarSet (Channel: none) for a global Setvar");
    assert_eq!(
        varset.keys,
        [
            "Event",
            "Privilege",
            "Channel",
            "Uniqueid",
            "Variable",
            "Value"
        ]
    );
    assert_eq!(varset.get("Privilege").unwrap(), "dialplan,all");
    assert_eq!(varset.get("Channel").unwrap(), "none");
    assert_eq!(varset.get("Uniqueid").unwrap(), "none");
    assert_eq!(varset.get("Value").unwrap(), "bar");
}

/// manager.c `action_setvar` calls `pbx_builtin_setvar_helper(c, varname, ...)`, which for
/// a name ending in `)` writes the dialplan function (`ast_func_write`, pbx_variables.c
/// 1244): `Setvar` `Variable: GLOBAL(FOO)` sets the global FOO, which `Getvar` `FOO` then
/// reads.
#[test]
fn setvar_of_a_function_writes_the_function() {
    let mut h = session();
    h.send(b"Action: Setvar\r\nActionID: sv\r\nVariable: GLOBAL(FOO)\r\nValue: bar\r\n\r\n");
    let from = h.got.len();
    h.send(b"Action: Getvar\r\nActionID: gv\r\nVariable: FOO\r\n\r\n");
    let got = h.shapes_from(from);
    let reply = got
        .iter()
        .find(|s| s.get("ActionID").as_deref() == Some("gv"))
        .unwrap();
    assert_eq!(reply.get("Value").unwrap_or_default(), "bar");
}

/// AMI-PROTOCOL.md §9: "Each write in `send_string` (one event or one response fragment)
/// has `writetimeout` ms to finish, measured from when that write starts". Asterisk writes
/// every `astman_append` separately (§1: "every fragment is a separate write"): a list is
/// its start, then each item, then the Complete event, each with its own 100 ms. A client
/// that keeps reading steadily (here 1 KiB every 50 ms, faster than any one ~0.5 KiB item
/// needs) is never dropped by Asterisk, however long the list: it need not take in the
/// whole list but the socket buffer within 100 ms.
#[test]
fn a_steady_reader_of_a_long_list_is_not_a_slow_reader() {
    use ami_sim::{CallRequest, CloseReason, SessionState};
    use std::time::Duration;
    let cfg = SimConfig {
        socket_buffer: 4096,
        ..SimConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.send(b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\nEvents: off\r\n\r\n");
    for _ in 0..20 {
        h.sim
            .originate_call(h.now, CallRequest::new("Local/wait10@ami-test", 60))
            .unwrap();
    }
    h.advance(Duration::from_secs(2));
    assert_eq!(h.sim.channels().len(), 40);
    h.sim.receive(
        h.s,
        h.now,
        b"Action: CoreShowChannels\r\nActionID: csc\r\n\r\n",
    );
    // Read 1 KiB every 50 ms until the list is complete.
    const COMPLETE: &[u8] = b"Event: CoreShowChannelsComplete\r\n";
    let complete = |got: &[u8]| got.windows(COMPLETE.len()).any(|w| w == COMPLETE);
    let mut got = Vec::new();
    for _ in 0..400 {
        let chunk = h.sim.transmit(h.s);
        let n = chunk.len().min(1024);
        got.extend_from_slice(&chunk[..n]);
        h.sim.advance_transmit(h.s, n);
        if complete(&got) {
            break;
        }
        h.now += Duration::from_millis(50);
        h.sim.handle_timeout(h.now);
    }
    assert_ne!(
        h.sim.session_state(h.s),
        SessionState::Closed(CloseReason::SlowReader),
        "Asterisk keeps a reader that drains 20 KiB/s during a list of 0.5 KiB items \
         (it had read {} bytes)",
        got.len()
    );
    assert!(complete(&got), "the whole list was read");
}

/// manager.c `action_originate` (22.9.0, after "Invalid channel"): `ast_callerid_parse`
/// then `ast_shrink_phone_number(l)` on the number (callerid.c 1101: drops `-` outside
/// brackets, `(`, `)`, blanks, and `.` but a trailing one). The caller number of the
/// originated channel (NewCallerid) and of the OriginateResponse is the shrunk one: `CallerID: Sales
/// <(555) 100-2000>` gives `CallerIDNum: 5551002000`.
#[test]
fn originate_caller_number_is_shrunk_like_asterisk() {
    use std::time::Duration;
    let mut h = session();
    let from = h.got.len();
    h.send(
        b"Action: Originate\r\nActionID: cid\r\nChannel: Local/echo@ami-test\r\n\
          Application: Wait\r\nData: 1\r\nAsync: true\r\n\
          CallerID: Sales <(555) 100-2000>\r\n\r\n",
    );
    h.advance(Duration::from_secs(3));
    let got = h.shapes_from(from);
    let or = got
        .iter()
        .find(|s| s.is_event("OriginateResponse"))
        .unwrap();
    assert_eq!(or.get("CallerIDName").unwrap(), "Sales");
    assert_eq!(or.get("CallerIDNum").unwrap(), "5551002000");
    // The caller ID reaches the channel after its Newchannel (<unknown>), in NewCallerid.
    let ncid = got.iter().find(|s| s.is_event("NewCallerid")).unwrap();
    assert_eq!(ncid.get("CallerIDNum").unwrap(), "5551002000");
}

/// manager.c `action_listcommands` (22.9.0): an action is listed only
/// `if ((s->session->writeperm & cur->authority) || cur->authority == 0)`: a user sees the
/// actions it may run, so `limited` (write=originate) is not shown Command, Status,
/// Filter... that would answer it "Permission denied".
#[test]
fn listcommands_lists_only_what_the_user_may_run() {
    let mut h = Harness::new(SimConfig::default());
    h.send(b"Action: Login\r\nUsername: limited\r\nSecret: limited1\r\nEvents: off\r\n\r\n");
    let from = h.got.len();
    h.send(b"Action: ListCommands\r\nActionID: lc\r\n\r\n");
    let got = h.shapes_from(from);
    let keys = &got[0].keys;
    for allowed in [
        "Originate",
        "Ping",
        "Login",
        "Logoff",
        "Events",
        "ListCommands",
    ] {
        assert!(keys.iter().any(|k| k == allowed), "{allowed} is listed");
    }
    for denied in [
        "Command",
        "Status",
        "Filter",
        "Getvar",
        "Setvar",
        "Hangup",
        "UserEvent",
    ] {
        assert!(
            !keys.iter().any(|k| k == denied),
            "{denied} is not listed for a write=originate user: {keys:?}"
        );
    }
}

/// manager.c `manager_add_filter`: the options may come in any order, separated by commas
/// or spaces (`strtok_r(temp, " ,)")`); `header(Key:)` is `header(Key)`; a value with
/// surrounding blanks is stripped (`ast_strip`). What real Asterisk accepts is accepted.
#[test]
fn an_advanced_filter_takes_asterisks_spellings_in_any_order() {
    for (criteria, filter) in [
        (
            "action(include),name(UserEvent),header(UserEvent),method(exact)",
            "Foo",
        ),
        ("method(exact) header(UserEvent:) name(UserEvent)", "Foo"),
        ("header(UserEvent),method(starts_with)", "Fo"),
        ("header(UserEvent),method(ends_with)", "oo"),
        ("header(UserEvent),method(contains)", "o"),
        ("header(UserEvent),method(regex)", "^F.o$"),
        ("name(UserEvent),method(none)", ""),
        ("header(UserEvent)", ""),
    ] {
        let mut h = session();
        let filter = (!filter.is_empty()).then_some(filter);
        assert_eq!(
            add_filter(&mut h, Some(criteria), filter),
            ("Success".to_string(), "Success".to_string()),
            "MatchCriteria: {criteria}"
        );
        let from = h.got.len();
        h.send(b"Action: UserEvent\r\nUserEvent: Bar\r\n\r\n");
        h.send(b"Action: UserEvent\r\nUserEvent: Foo\r\n\r\n");
        let want: &[&str] = if criteria.starts_with("name(UserEvent),method(none)")
            || criteria == "header(UserEvent)"
        {
            &["Bar", "Foo"]
        } else {
            &["Foo"]
        };
        assert_eq!(
            user_events_since(&h, from),
            want,
            "MatchCriteria: {criteria}"
        );
    }
}
