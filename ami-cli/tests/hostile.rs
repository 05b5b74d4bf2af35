//! `ami` against hostile servers (ami-sim's `HostileServer`) on every runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::hostile::{Hostile, HostileServer};
use support::*;

/// The counts said on stderr for discards of `reason`: the first line's and each summary's.
fn discard_counts(stderr: &str, reason: &str) -> Vec<u64> {
    let prefix = format!("ami: server input discarded: {reason} (");
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let n = rest.split([' ', ')']).next().unwrap();
            n.parse().unwrap_or_else(|_| panic!("no count in {rest:?}"))
        })
        .collect()
}

#[test]
fn skipped_server_input_is_said_on_stderr_once_per_burst_with_its_count() {
    const EVENTS: u64 = 300;
    each_runtime(|rt| {
        // Each small event is followed by 63 KiB that is neither event nor response.
        let server = HostileServer::start(Hostile::PaddedEvents { pad: 63 << 10 }, 0).unwrap();
        let url = format!("ami://admin:x@{}", server.local_addr());
        let out = on(rt, &url, &["listen", "--count", &EVENTS.to_string()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{rt}: {err}");
        let events = stdout_lines(&out)
            .iter()
            .filter(|l| l.contains("\"Small\""))
            .count();
        assert_eq!(events as u64, EVENTS, "{rt}");
        let counts = discard_counts(&err, "message that is neither event nor response skipped");
        // One junk message between each two events, every one of them counted...
        assert!(
            counts.iter().sum::<u64>() >= EVENTS - 1,
            "{rt}: {counts:?}\n{err}"
        );
        // ...in a few lines (a burst's first discard, then its count), not one per event.
        assert!(
            !counts.is_empty() && counts.len() < 20,
            "{rt}: {counts:?}\n{err}"
        );
    });
}

/// The first line `ami sim ARGS` writes on stderr (then it is stopped).
fn sim_banner(args: &[&str]) -> String {
    use std::io::BufRead;
    let mut all = vec!["sim"];
    all.extend_from_slice(args);
    let mut sim = spawn_piped(&all);
    let mut line = String::new();
    std::io::BufReader::new(sim.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    sim.kill().unwrap();
    sim.wait().unwrap();
    line
}

#[test]
fn ami_sim_faults_print_the_seed_that_replays_them() {
    let given = sim_banner(&["--faults", "7"]);
    assert!(
        given.contains("faults on (seed 7; replay with --faults 7)"),
        "{given}"
    );
    // No seed given: one is drawn, and printed so the run can be replayed.
    let drawn = sim_banner(&["--faults"]);
    let seed = drawn
        .split("replay with --faults ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no seed in {drawn:?}"));
    assert!(seed.parse::<u64>().is_ok(), "{drawn}");
    assert!(!sim_banner(&[]).contains("faults on"));
}

#[test]
fn a_list_that_lost_an_item_prints_what_came_and_exits_1_saying_so() {
    // The second of three DBGetTree items has a line over the decoder's 1 MiB line limit.
    let server = Fake::start(|_, mut conn| {
        if !conn.login(true) {
            return;
        }
        while let Some(req) = conn.next() {
            let id = req.get("ActionID").unwrap_or("").to_string();
            match req.action().as_str() {
                "dbgettree" => {
                    let item = |key: &str, value: &str| {
                        format!(
                            "Event: DBGetTreeResponse\r\nActionID: {id}\r\nKey: {key}\r\nVal: {value}\r\n\r\n"
                        )
                    };
                    let mut out = format!(
                        "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: will follow\r\n\r\n"
                    );
                    out += &item("/a", "1");
                    out += &item("/big", &"x".repeat((1 << 20) + 10));
                    out += &item("/c", "3");
                    out += &format!(
                        "Event: DBGetTreeComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 3\r\n\r\n"
                    );
                    let _ = conn.send(out.as_bytes());
                }
                "logoff" => {
                    conn.answer(&req, "Goodbye", &[("Message", "Thanks for all the fish.")]);
                    return;
                }
                _ => conn.answer(&req, "Success", &[("Ping", "Pong")]),
            }
        }
    });
    each_runtime(|rt| {
        let out = on(rt, &server.url(), &["action", "DBGetTree"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{rt}: {err}");
        let lines = stdout_lines(&out);
        assert_eq!(
            lines.len(),
            4,
            "{rt}: response, /a, /c, complete: {lines:?}"
        );
        assert!(lines[1].contains("/a") && lines[2].contains("/c"), "{rt}");
        assert!(
            err.contains("the list is incomplete: 1 item(s) dropped"),
            "{rt}: {err}"
        );
    });
}

/// What a hostile server puts in a `Message`: a colour, a window title, backspaces that
/// rewrite the line, and a bidirectional override.
const TERMINAL_ATTACK: &str = "bad \x1b[31mRED\x1b]0;pwned\x07 \x08\x08end \u{202e}txt.exe";

fn assert_shown_escaped(rt: &str, err: &str) {
    assert!(
        !err.chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{rt}: a control character reached stderr: {err:?}"
    );
    assert!(
        err.contains("bad \\x1b[31mRED\\x1b]0;pwned\\x07 \\x08\\x08end \\u{202e}txt.exe"),
        "{rt}: {err:?}"
    );
}

#[test]
fn control_characters_in_a_login_rejection_reach_stderr_escaped() {
    each_runtime(|rt| {
        let fake = Fake::start(|_, mut c| {
            let _ = c.send(b"Asterisk Call Manager/9.0.0\r\n");
            if let Some(req) = c.next() {
                c.answer(&req, "Error", &[("Message", TERMINAL_ATTACK)]);
            }
        });
        let out = on(rt, &fake.url(), &["action", "Ping"]);
        assert_eq!(out.status.code(), Some(3), "{rt}: {}", stderr(&out));
        assert_shown_escaped(rt, &stderr(&out));
    });
}

#[test]
fn control_characters_in_an_action_error_reach_stderr_escaped() {
    each_runtime(|rt| {
        let fake = Fake::start(|_, mut c| {
            if !c.login(true) {
                return;
            }
            while let Some(req) = c.next() {
                match req.action().as_str() {
                    "logoff" => return,
                    _ => c.answer(&req, "Error", &[("Message", TERMINAL_ATTACK)]),
                }
            }
        });
        let out = on(rt, &fake.url(), &["action", "Ping"]);
        assert_eq!(out.status.code(), Some(4), "{rt}: {}", stderr(&out));
        assert_shown_escaped(rt, &stderr(&out));
    });
}
