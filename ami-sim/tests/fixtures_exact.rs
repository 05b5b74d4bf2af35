//! Replays fixtures whose outcome does not depend on timing or on other connections, and
//! compares every message's first line, field names (in order) and ActionID with what the
//! real Asterisk 22.10.1 sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;
use support::*;

fn check(name: &str) {
    let (got, want) = replay_all(name, Duration::from_secs(2));
    assert_same_shapes(&got, &want, name);
}

#[test]
fn login_plain() {
    check("login_plain");
}

#[test]
fn ping() {
    check("ping");
}

#[test]
fn command_core_show_version() {
    check("command_core_show_version");
}

#[test]
fn command_errors() {
    let (got, want) = replay_all("command_errors", Duration::from_secs(1));
    assert_same_shapes(&got, &want, "command_errors");
    let unknown = got[2].get("Output").unwrap();
    assert_eq!(unknown, want[2].get("Output").unwrap());
    assert_eq!(got[3].get("Message").unwrap(), "Command blacklisted");
    assert_eq!(got[4].get("Message").unwrap(), "No command provided");
}

#[test]
fn action_before_login() {
    check("action_before_login");
}

#[test]
fn stray_blank_lines() {
    check("stray_blank_lines");
}

#[test]
fn logoff() {
    check("logoff");
}

#[test]
fn unknown_action() {
    let (got, want) = replay_all("unknown_action", Duration::from_secs(1));
    assert_same_shapes(&got, &want, "unknown_action");
    for i in 0..got.len() {
        assert_eq!(got[i].get("Message"), want[i].get("Message"), "message {i}");
    }
}

#[test]
fn long_header() {
    let (got, want) = replay_all("long_header", Duration::from_secs(1));
    assert_same_shapes(&got, &want, "long_header");
    for i in 0..got.len() {
        assert_eq!(got[i].get("Message"), want[i].get("Message"), "message {i}");
        assert_eq!(got[i].get("Value"), want[i].get("Value"), "message {i}");
    }
}

#[test]
fn too_many_headers() {
    let (got, want) = replay_all("too_many_headers", Duration::from_secs(1));
    assert_same_shapes(&got, &want, "too_many_headers");
    for i in 0..got.len() {
        assert_eq!(got[i].get("Message"), want[i].get("Message"), "message {i}");
    }
}

#[test]
fn bare_lf() {
    let (got, want) = replay_all("bare_lf", Duration::from_secs(1));
    assert_same_shapes(&got, &want, "bare_lf");
    assert_eq!(got[5].get("Message"), want[5].get("Message"));
}

#[test]
fn pipelined() {
    check("pipelined");
}

#[test]
fn coresettings() {
    check("coresettings");
}

#[test]
fn corestatus() {
    check("corestatus");
}

#[test]
fn coreshowchannels_empty() {
    check("coreshowchannels_empty");
}

#[test]
fn challenge_bad_authtype() {
    check("challenge_bad_authtype");
}

#[test]
fn userevent_action() {
    check("userevent_action");
    let (got, want) = replay_all("userevent_action", Duration::from_secs(1));
    let ev = got.iter().find(|s| s.is_event("UserEvent")).unwrap();
    let want_ev = want.iter().find(|s| s.is_event("UserEvent")).unwrap();
    assert_eq!(ev.get("Header2"), want_ev.get("Header2"));
    assert_eq!(ev.get("Header2").unwrap(), "two: with colon");
}

#[test]
fn bad_password() {
    check("bad_password");
}

#[test]
fn unknown_user() {
    check("unknown_user");
}

#[test]
fn challenge_md5_bad_key() {
    check("challenge_md5_bad_key");
}

#[test]
fn command_multiline_first_lines() {
    let (got, want) = replay_all("command_multiline", Duration::from_secs(1));
    assert_eq!(firsts(&got), firsts(&want));
    // dialplan show: same context header line and the same extension names.
    let g = got[2].msg.as_ref().unwrap();
    let w = want[2].msg.as_ref().unwrap();
    let g_out: Vec<String> = g.get_all("Output").map(|v| v.to_string()).collect();
    let w_out: Vec<String> = w.get_all("Output").map(|v| v.to_string()).collect();
    assert_eq!(g_out[0], w_out[0]);
    let exten_names = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.trim_start().strip_prefix('\''))
            .map(|l| l.split('\'').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(exten_names(&g_out), exten_names(&w_out));
    // manager show connected: header, one user, count line.
    let g = got[3].msg.as_ref().unwrap();
    let w = want[3].msg.as_ref().unwrap();
    assert_eq!(g.get_all("Output").count(), w.get_all("Output").count());
    assert_eq!(
        g.get_all("Output").last().map(|v| v.to_string()),
        w.get_all("Output").last().map(|v| v.to_string())
    );
}

#[test]
fn listcommands_shape() {
    let (got, want) = replay_all("listcommands", Duration::from_secs(1));
    assert_eq!(firsts(&got), firsts(&want));
    let g = &got[2];
    assert!(g.keys.contains(&"Originate".to_string()));
    assert!(want[2].keys.contains(&"Originate".to_string()));
}
