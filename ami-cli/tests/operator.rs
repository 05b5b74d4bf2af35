//! What an operator scripting `ami` relies on: every line of a multi-server `listen` naming
//! its server, exit codes that say whether any server was ever reached, deadlines that hold
//! from the first connect, stop signals that end the command cleanly whenever they come,
//! the shape of `action`'s output when it fails, and words a person can read.
//! Exit codes: 0 ok, 1 other, 2 usage, 3 connect/login, 4 server error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};
use support::*;

/// `ami://admin:S3cr3t@127.0.0.1:PORT`
fn url_at(port: u16) -> String {
    format!("ami://admin:S3cr3t@127.0.0.1:{port}")
}

/// Waits for `child` at most `limit`; past it the child is killed and `None` returned.
fn wait_at_most(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server that sends its banner, reads the Login and never answers it.
fn never_answers_the_login() -> Fake {
    Fake::start(|_, mut c| {
        let _ = c.send(b"Asterisk Call Manager/9.0.0\r\n");
        let _ = c.next();
        std::thread::sleep(Duration::from_secs(30));
    })
}

/// A server that accepts the connection and never says a word.
fn silent() -> Fake {
    Fake::start(|_, c| {
        std::thread::sleep(Duration::from_secs(30));
        drop(c);
    })
}

// ----- 1. gap lines of a multi-server listen ---------------------------------------------

#[test]
fn every_gap_line_of_a_multi_server_listen_names_its_server_so_each_servers_events_add_up() {
    let (mut flood, flood_url) = spawn_sim(&["--events-per-s", "100000"]);
    let (mut quiet, quiet_url) = spawn_sim(&["--events-per-s", "2000"]);
    let mut listen = spawn_piped(&[
        "--server",
        &flood_url,
        "--server",
        &quiet_url,
        "listen",
        "--event",
        "UserEvent",
        "--duration",
        "3",
    ]);
    // Nobody reads stdout for 2 s: the pipe and the printer's queue fill, and the quiet
    // server's events are dropped with the flooding one's.
    let (out, status, err) = read_after_stall(&mut listen, Duration::from_secs(2));
    for s in [&mut flood, &mut quiet] {
        s.kill().unwrap();
        s.wait().unwrap();
    }
    assert!(status.success(), "{err}");
    let name = |url: &str| url.rsplit('@').next().unwrap().to_string();
    let mut by_server: HashMap<String, Vec<Value>> = HashMap::new();
    for line in out.lines() {
        let v = json(line);
        let server = v["server"]
            .as_str()
            .unwrap_or_else(|| panic!("a line without its server: {line}"))
            .to_string();
        by_server.entry(server).or_default().push(v);
    }
    let quiet_lines = by_server
        .get(&name(&quiet_url))
        .expect("the quiet server's lines");
    let (events, dropped) = account_for_every_seq(quiet_lines.iter());
    assert!(
        events > 0 && dropped > 0,
        "the quiet server: {events} printed, {dropped} marked dropped\n{err}"
    );
    let flood_lines = by_server.get(&name(&flood_url)).expect("the flood's lines");
    let (_, dropped) = account_for_every_seq(flood_lines.iter());
    assert!(dropped > 10_000, "the flood: {dropped} marked dropped");
    // On stderr each server's drops are its own.
    assert!(
        err.contains(&format!("{}: gap:", name(&quiet_url))),
        "{err}"
    );
}

// ----- 2. exit codes of several servers -------------------------------------------------

#[test]
fn a_multi_server_listen_that_never_reaches_any_server_exits_3_naming_each() {
    each_runtime(|rt| {
        let (_a, pa) = refused_port();
        let (_b, pb) = refused_port();
        let (ua, ub) = (url_at(pa), url_at(pb));
        let out = on_servers(rt, &[&ua, &ub], &["listen", "--duration", "2"]);
        assert_code(&out, 3, rt);
        let err = stderr(&out);
        for port in [pa, pb] {
            assert!(
                err.contains(&format!("127.0.0.1:{port}: could not connect")),
                "{rt}: {err}"
            );
        }
    });
}

#[test]
fn a_multi_server_calls_watch_with_a_rejected_login_exits_3_at_the_end() {
    let (good, bad) = (sim(), sim());
    let (ug, ub) = (sim_url(&good, "amp111"), sim_url(&bad, "wrong"));
    each_runtime(|rt| {
        let started = Instant::now();
        let out = on_servers(rt, &[&ug, &ub], &["calls", "--watch", "--duration", "2"]);
        assert_code(&out, 3, rt);
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{rt}: at the end"
        );
        let err = stderr(&out);
        assert!(err.contains("rejected the login"), "{rt}: {err}");
        // The server that answered was followed to the end.
        let good_name = good.local_addr().to_string();
        assert!(
            stdout_lines(&out)
                .iter()
                .any(|l| json(l)["server"] == good_name.as_str()),
            "{rt}"
        );
    });
}

#[test]
fn a_multi_server_calls_watch_names_a_server_it_cannot_reach_and_exits_3_when_it_reaches_none() {
    let good = sim();
    let ug = sim_url(&good, "amp111");
    each_runtime(|rt| {
        let (_r, port) = refused_port();
        let refused = url_at(port);
        let out = on_servers(
            rt,
            &[&ug, &refused],
            &["calls", "--watch", "--duration", "1"],
        );
        assert_code(&out, 0, rt);
        assert!(
            stderr(&out).contains(&format!(
                "127.0.0.1:{port}: down: lost the session: could not connect"
            )),
            "{rt}: {}",
            stderr(&out)
        );
        let (_r2, port2) = refused_port();
        let none = on_servers(
            rt,
            &[&refused, &url_at(port2)],
            &["calls", "--watch", "--duration", "1"],
        );
        assert_code(&none, 3, rt);
        let err = stderr(&none);
        for p in [port, port2] {
            assert!(
                err.contains(&format!("127.0.0.1:{p}: could not connect")),
                "{rt}: {err}"
            );
        }
    });
}

// ----- 3. deadlines that bound the first login ------------------------------------------

#[test]
fn listen_duration_bounds_the_wait_for_a_first_login_that_never_comes() {
    let (mute, quiet) = (never_answers_the_login(), silent());
    each_runtime(|rt| {
        for (what, url) in [("no Login answer", mute.url()), ("no banner", quiet.url())] {
            let (out, took) = timed(&[
                "--runtime",
                rt,
                "--server",
                &url,
                "listen",
                "--duration",
                "1",
            ]);
            assert_code(&out, 3, &format!("{rt} {what}"));
            assert!(took < Duration::from_secs(3), "{rt} {what}: took {took:?}");
            assert!(
                stderr(&out).contains("no login to"),
                "{rt} {what}: {}",
                stderr(&out)
            );
        }
    });
}

#[test]
fn calls_watch_duration_and_action_timeout_bound_the_wait_for_a_first_login() {
    let mute = never_answers_the_login();
    each_runtime(|rt| {
        for args in [
            &["calls", "--watch", "--duration", "1"][..],
            &["action", "Ping", "--timeout", "1"][..],
        ] {
            let mut all = vec!["--runtime", rt, "--server"];
            let url = mute.url();
            all.push(&url);
            all.extend_from_slice(args);
            let (out, took) = timed(&all);
            assert_code(&out, 3, &format!("{rt} {args:?}"));
            assert!(
                took < Duration::from_secs(3),
                "{rt} {args:?}: took {took:?}"
            );
        }
    });
}

/// README: "an action's `--timeout` bounds the wait for the first login too", also with
/// several servers (`action --on`, whose wait for the first logins is otherwise at most
/// 15 s): `--timeout 1` against a server that never answers its Login names it (exit 3)
/// after about a second and the server that did log in answers, not 15 s later.
#[test]
fn action_on_with_a_timeout_bounds_the_wait_for_the_first_logins_too() {
    let mute = never_answers_the_login();
    let front = sim();
    let up = sim_url(&front, "amp111");
    each_runtime(|rt| {
        for on in ["all", mute.addr.to_string().as_str()] {
            let url = mute.url();
            let args = [
                "--runtime",
                rt,
                "--server",
                &url,
                "--server",
                &up,
                "action",
                "Ping",
                "--on",
                on,
                "--timeout",
                "1",
            ];
            let (out, took) = timed(&args);
            assert_code(&out, 3, &format!("{rt} --on {on}"));
            assert!(
                stderr(&out).contains(&mute.addr.to_string()),
                "{rt} --on {on}: {}",
                stderr(&out)
            );
            // 1 s for the logins, 2 s at most for the Logoff; 15 s is the bound without
            // --timeout.
            assert!(
                took < Duration::from_secs(8),
                "{rt} --on {on}: took {took:?}"
            );
        }
    });
}

// ----- 4. a stop signal before the first login ------------------------------------------

/// SIGTERM stands for Ctrl-C here (a test run in the background inherits SIGINT ignored).
#[test]
fn a_stop_signal_before_the_first_login_ends_listen_and_calls_watch_with_exit_3_not_a_kill() {
    let mute = never_answers_the_login();
    each_runtime(|rt| {
        for cmd in [&["listen"][..], &["calls", "--watch"][..]] {
            let before = mute.accepted();
            let url = mute.url();
            let mut args = vec!["--runtime", rt, "--server", &url];
            args.extend_from_slice(cmd);
            let mut child = spawn_piped(&args);
            let wait = Instant::now() + Duration::from_secs(10);
            while mute.accepted() == before {
                assert!(Instant::now() < wait, "{rt}: never connected");
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(300));
            let signalled = Instant::now();
            send_signal(&child, "TERM");
            let status = wait_at_most(&mut child, Duration::from_secs(5));
            let err = stderr_of(&mut child);
            assert!(
                signalled.elapsed() < Duration::from_secs(2),
                "{rt} {cmd:?}: took {:?}",
                signalled.elapsed()
            );
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(3),
                "{rt} {cmd:?}: {err}"
            );
            assert!(err.contains("no login to"), "{rt} {cmd:?}: {err}");
        }
    });
}

// ----- 5. SIGHUP ------------------------------------------------------------------------

#[test]
fn sighup_ends_listen_as_sigterm_does_with_a_logoff_and_exit_0() {
    each_runtime(|rt| {
        let front = sim();
        let url = sim_url(&front, "amp111");
        let mut child = spawn_piped(&["--runtime", rt, "--server", &url, "listen"]);
        let mut first = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut first).unwrap();
        assert_eq!(json(&first)["state"], "ready", "{rt}");
        let actions = front.stats().actions;
        send_signal(&child, "HUP");
        let status = wait_at_most(&mut child, Duration::from_secs(5));
        let err = stderr_of(&mut child);
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{rt}: {err}");
        let wait = Instant::now() + Duration::from_secs(5);
        while front.stats().actions == actions || front.stats().sessions_open > 0 {
            assert!(Instant::now() < wait, "{rt}: no Logoff");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

// ----- 6. action's output when it fails --------------------------------------------------

#[test]
fn a_failed_async_originate_prints_its_response_then_its_originate_response() {
    let front = sim();
    let u = sim_url(&front, "amp111");
    each_runtime(|rt| {
        let out = on(
            rt,
            &u,
            &[
                "action",
                "Originate",
                "Channel=Local/busy@ami-test",
                "Application=Wait",
                "Async=true",
            ],
        );
        assert_code(&out, 4, rt);
        let lines: Vec<Value> = stdout_lines(&out).iter().map(|l| json(l)).collect();
        assert_eq!(lines.len(), 2, "{rt}: {lines:?}");
        assert_eq!(lines[0]["type"], "response", "{rt}: {lines:?}");
        assert_eq!(header(&lines[0], "Response").unwrap(), "Success", "{rt}");
        assert_eq!(
            header(&lines[1], "Event").unwrap(),
            "OriginateResponse",
            "{rt}"
        );
        assert!(stderr(&out).contains("Reason 5 (busy)"), "{rt}");
    });
}

#[test]
fn a_list_that_does_not_complete_in_time_prints_the_response_and_the_items_that_came() {
    let fake = Fake::start(|_, mut c| {
        if !c.login(true) {
            return;
        }
        while let Some(req) = c.next() {
            if req.action() == "logoff" {
                return;
            }
            let id = req.get("ActionID").unwrap_or("").to_string();
            let _ = c.send(
                format!(
                    "Response: Success\r\nActionID: {id}\r\nEventList: start\r\n\
                     Message: Channels will follow\r\n\r\n\
                     Event: CoreShowChannel\r\nActionID: {id}\r\nChannel: PJSIP/100-1\r\n\r\n"
                )
                .as_bytes(),
            );
        }
    });
    each_runtime(|rt| {
        let out = on(
            rt,
            &fake.url(),
            &["action", "CoreShowChannels", "--timeout", "1"],
        );
        assert_code(&out, 1, rt);
        let lines: Vec<Value> = stdout_lines(&out).iter().map(|l| json(l)).collect();
        assert_eq!(lines.len(), 2, "{rt}: {lines:?}");
        assert_eq!(lines[0]["type"], "response", "{rt}");
        assert_eq!(
            header(&lines[1], "Event").unwrap(),
            "CoreShowChannel",
            "{rt}"
        );
        // Where, which action, that the list was cut short (the server ran it), how much
        // was printed, and the flag that waits longer.
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "ami: {}: CoreShowChannels: timed out: list cut short: the server ran it",
                fake.addr
            )),
            "{rt}: {err}"
        );
        assert!(
            err.contains("within 1.0 s (1 item(s) printed)"),
            "{rt}: {err}"
        );
        assert!(err.contains("raise --timeout"), "{rt}: {err}");
    });
}

// ----- 7. words -------------------------------------------------------------------------

#[test]
fn a_server_error_whose_message_is_not_utf8_is_said_in_a_lossy_form_escaped() {
    let fake = Fake::start(|_, mut c| {
        if !c.login(true) {
            return;
        }
        while let Some(req) = c.next() {
            if req.action() == "logoff" {
                return;
            }
            let id = req.get("ActionID").unwrap_or("").to_string();
            let mut m = format!("Response: Error\r\nActionID: {id}\r\nMessage: bad ").into_bytes();
            m.extend_from_slice(b"\x1b[31mred \xff end\r\n\r\n");
            let _ = c.send(&m);
        }
    });
    let out = on("tokio", &fake.url(), &["action", "Ping"]);
    assert_code(&out, 4, "non-UTF-8 Message");
    let err = stderr(&out);
    assert!(
        err.contains("the server answered Error: bad \\x1b[31mred \u{fffd} end"),
        "{err}"
    );
}

#[test]
fn a_failed_command_says_its_output_as_the_reason() {
    let front = sim();
    let out = on(
        "tokio",
        &sim_url(&front, "amp111"),
        &["action", "Command", "Command=no such cmd"],
    );
    assert_code(&out, 4, "Command");
    let err = stderr(&out);
    assert!(err.contains("No such command 'no such cmd'"), "{err}");
}

// ----- 8. usage, and the stale lines of calls --watch ------------------------------------

#[test]
fn listen_duration_0_and_calls_duration_without_watch_are_usage_errors() {
    let (_r, port) = refused_port();
    let url = url_at(port);
    for args in [
        &["listen", "--duration", "0"][..],
        &["calls", "--duration", "3"][..],
    ] {
        let mut all = vec!["--server", url.as_str()];
        all.extend_from_slice(args);
        let out = ami(&all);
        assert_code(&out, 2, &format!("{args:?}"));
    }
}

#[test]
fn a_multi_server_calls_watch_says_a_session_started_once_per_server_that_started_one() {
    let good = sim();
    let ug = sim_url(&good, "amp111");
    each_runtime(|rt| {
        let (_r, port) = refused_port();
        let out = on_servers(
            rt,
            &[&ug, &url_at(port)],
            &["calls", "--watch", "--duration", "1.5"],
        );
        assert_code(&out, 0, rt);
        let mut starts: HashMap<String, usize> = HashMap::new();
        for line in stdout_lines(&out) {
            let v = json(&line);
            if v["type"] == "stale" && v["reason"].as_str().unwrap().starts_with("session (re)") {
                *starts
                    .entry(v["server"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        let want = HashMap::from([(good.local_addr().to_string(), 1)]);
        assert_eq!(starts, want, "{rt}");
    });
}

// ----- 9. a reader that leaves while the stream is quiet ---------------------------------

#[test]
fn listen_ends_when_its_reader_leaves_though_no_event_comes() {
    let front = sim();
    let url = sim_url(&front, "amp111");
    each_runtime(|rt| {
        let mut child = spawn_piped(&["--runtime", rt, "--server", &url, "listen"]);
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        // `| head -1`: one line read, then the reader is gone.
        drop(stdout);
        let status = wait_at_most(&mut child, Duration::from_secs(5));
        let err = stderr_of(&mut child);
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{rt}: {err}");
    });
}

#[test]
fn calls_watch_ends_when_its_reader_leaves_though_no_call_changes() {
    let front = sim();
    let url = sim_url(&front, "amp111");
    each_runtime(|rt| {
        let mut child = spawn_piped(&["--runtime", rt, "--server", &url, "calls", "--watch"]);
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        // `| head -1`: one line read, then the reader is gone; the quiet view writes no more.
        drop(stdout);
        let status = wait_at_most(&mut child, Duration::from_secs(5));
        let err = stderr_of(&mut child);
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{rt}: {err}");
    });
}
