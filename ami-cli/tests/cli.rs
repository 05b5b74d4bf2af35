//! The `ami` binary end to end: real processes, real loopback sockets, the simulator's TCP
//! front or a small hostile server as the peer, each scenario on every runtime.
//! Exit codes: 0 ok, 1 other, 2 usage, 3 connect/login, 4 server error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use base64::Engine;
use serde_json::Value;
use std::io::Read;
use std::time::{Duration, Instant};
use support::*;

/// `ami originate` of a one-second call on the simulator's `echo` extension.
const ECHO_CALL: [&str; 7] = [
    "originate",
    "--channel",
    "Local/echo@ami-test",
    "--application",
    "Wait",
    "--data",
    "1",
];

#[test]
fn action_prints_the_response_as_json_on_every_runtime() {
    let front = sim();
    each_runtime(|rt| {
        let out = on(rt, &sim_url(&front, "amp111"), &["action", "Ping"]);
        assert_code(&out, 0, rt);
        let l = stdout_lines(&out);
        assert_eq!(l.len(), 1, "{rt}");
        let v = json(&l[0]);
        assert_eq!(v["type"], "response");
        assert_eq!(v["headers"][0], serde_json::json!(["Response", "Success"]));
        assert_eq!(header(&v, "Ping").unwrap(), "Pong");
        assert!(stderr(&out).is_empty(), "{rt}: {}", stderr(&out));
    });
}

#[test]
fn action_timeout_bounds_the_wait_for_a_server_that_never_answers() {
    // A health check (`ami action Ping --timeout 1`) against a server that logs in and then
    // swallows every action: the outcome is unknown after the timeout, not after the
    // default 30 s, on one server and with `--on all` beside a server that answers.
    let silent = Fake::start(|_, mut c| {
        if c.login(true) {
            while c.next().is_some() {}
        }
    });
    let good = sim();
    let good_url = sim_url(&good, "amp111");
    each_runtime(|rt| {
        let started = Instant::now();
        let out = on(rt, &silent.url(), &["action", "Ping", "--timeout", "0.5"]);
        let took = started.elapsed();
        assert_code(&out, 1, rt);
        assert!(stderr(&out).contains("timed out"), "{rt}: {}", stderr(&out));
        assert!(stdout_lines(&out).is_empty(), "{rt}: nothing made up");
        // 0.5 s, then at most 2 s for a Logoff the server swallows too.
        assert!(took < Duration::from_secs(15), "{rt}: took {took:?}");

        let started = Instant::now();
        let out = on_servers(
            rt,
            &[&silent.url(), &good_url],
            &["action", "Ping", "--timeout", "0.5", "--on", "all"],
        );
        let took = started.elapsed();
        assert_code(&out, 1, rt);
        let lines = stdout_lines(&out);
        assert_eq!(lines.len(), 1, "{rt}: the answer that came: {lines:?}");
        assert_eq!(header(&json(&lines[0]), "Ping").unwrap(), "Pong");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{}: Ping: timed out", silent.addr)),
            "{rt}: {err}"
        );
        assert!(took < Duration::from_secs(15), "{rt}: took {took:?}");
    });
    for bad in ["0", "-1", "nan"] {
        let out = ami(&["action", "Ping", "--timeout", bad]);
        assert_code(&out, 2, bad);
    }
}

#[test]
fn listen_for_named_events_has_the_server_send_only_those_and_prints_the_same_lines() {
    // `listen --event Hangup` while calls come and go and 3,000 UserEvents fly: a user that
    // may filter (write=system) gets only the Hangups over the wire; one that reads
    // everything but may not filter (`reader`) gets every call event and no UserEvent (the
    // event mask asks for `system,call` only), and the command filters them itself. Both
    // print the same lines.
    let load = |front: &TcpFront| {
        front.with_server(|srv, now| {
            for _ in 0..10 {
                srv.originate_call(now, ami_sim::CallRequest::new("Local/echo@ami-test", 1));
            }
            srv.emit_user_events(now, 3000);
        });
    };
    each_runtime(|rt| {
        let mut config = SimConfig::default();
        config.users.push(ami_sim::SimUser::new(
            "reader",
            "reader1",
            ami_sim::ClassMask::ALL,
            ami_sim::ClassMask::CALL,
        ));
        let front = TcpFront::start(config, "127.0.0.1:0").unwrap();
        let mut printed = Vec::new();
        for (user, secret) in [("admin", "amp111"), ("reader", "reader1")] {
            let url = format!("ami://{user}:{secret}@{}", front.local_addr());
            let before = front.stats();
            let child = spawn_piped(&[
                "--runtime",
                rt,
                "--server",
                &url,
                "listen",
                "--event",
                "hangup",
                "--duration",
                "4",
            ]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while front.stats().logins == before.logins {
                assert!(Instant::now() < deadline, "{rt} {user}: no login");
                std::thread::sleep(Duration::from_millis(10));
            }
            // The filter's action after the login, answered.
            std::thread::sleep(Duration::from_millis(300));
            load(&front);
            let out = child.wait_with_output().unwrap();
            assert_code(&out, 0, &format!("{rt} {user}"));
            let lines = stdout_lines(&out);
            let events: Vec<Value> = lines
                .iter()
                .map(|l| json(l))
                .filter(|v| v["type"] == "event")
                .collect();
            assert!(
                events
                    .iter()
                    .all(|v| header(v, "Event").unwrap() == "Hangup"),
                "{rt} {user}: {lines:?}"
            );
            let delivered = front.stats().events_delivered - before.events_delivered;
            printed.push((user, events.len() as u64, delivered));
        }
        let [(_, admin_lines, admin_wire), (_, reader_lines, reader_wire)] = printed[..] else {
            panic!("{printed:?}");
        };
        assert!(admin_lines >= 10, "{rt}: {printed:?}");
        assert_eq!(
            admin_lines, reader_lines,
            "{rt}: the same lines: {printed:?}"
        );
        assert!(
            admin_wire <= admin_lines + 2,
            "{rt}: filtered at the server: {printed:?}"
        );
        assert!(
            reader_wire > 3 * reader_lines,
            "{rt}: unfiltered without write=system: {printed:?}"
        );
        assert!(
            reader_wire < 3000,
            "{rt}: the mask kept the UserEvents out: {printed:?}"
        );
    });
}

#[test]
fn log_records_reach_stderr_at_the_level_asked_and_never_show_the_secret() {
    let front = sim();
    each_runtime(|rt| {
        for auth in ["plain", "md5"] {
            let out = on(
                rt,
                &sim_url(&front, "amp111"),
                &["--auth", auth, "--log", "trace", "action", "Ping"],
            );
            assert_code(&out, 0, rt);
            let err = stderr(&out);
            assert!(
                err.lines().any(|l| l.starts_with("ami: 20")
                    && l.contains("Z DEBUG ami_proto::")
                    && l.contains("finished: success")),
                "{rt} {auth}: {err}"
            );
            assert!(!err.contains("amp111"), "{rt} {auth}: {err}");
        }
        // The same through the environment; `off` shows nothing at all.
        let out = command(&["--runtime", rt, "action", "Ping"])
            .env("AMI_URL", sim_url(&front, "amp111"))
            .env("AMI_LOG", "info")
            .output()
            .unwrap();
        assert!(stderr(&out).contains("Z INFO "), "{rt}: {}", stderr(&out));
        let out = on(
            rt,
            &sim_url(&front, "amp111"),
            &["--log", "off", "action", "Ping"],
        );
        assert!(stderr(&out).is_empty(), "{rt}: {}", stderr(&out));
    });
}

#[test]
fn list_action_prints_response_then_each_item_then_complete() {
    let front = sim();
    each_runtime(|rt| {
        let out = on(rt, &sim_url(&front, "amp111"), &["action", "QueueStatus"]);
        assert_code(&out, 0, rt);
        let l: Vec<Value> = stdout_lines(&out).iter().map(|l| json(l)).collect();
        assert_eq!(header(&l[0], "EventList").unwrap(), "start", "{rt}");
        assert_eq!(
            header(l.last().unwrap(), "Event").unwrap(),
            "QueueStatusComplete",
            "{rt}"
        );
    });
}

#[test]
fn wrong_password_exits_3_with_one_line_and_no_retry() {
    each_runtime(|rt| {
        let front = sim();
        let (out, took) = timed(&[
            "--runtime",
            rt,
            "--server",
            &sim_url(&front, "wrong"),
            "action",
            "Ping",
        ]);
        assert_code(&out, 3, rt);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{rt}: {err}");
        assert!(
            err.contains("rejected the login for admin: Authentication failed"),
            "{rt}: {err}"
        );
        assert!(!err.contains("wrong"), "{rt}: the secret is printed: {err}");
        assert!(took < Duration::from_secs(5), "{rt}: {took:?}");
        assert_eq!(front.stats().sessions_accepted, 1, "{rt}: no retry loop");
    });
}

#[test]
fn a_refused_connection_exits_3_and_says_so_with_the_address() {
    let (_refusing, port) = refused_port();
    each_runtime(|rt| {
        let out = on(
            rt,
            &format!("ami://a:b@127.0.0.1:{port}"),
            &["action", "Ping"],
        );
        assert_code(&out, 3, rt);
        assert_eq!(
            stderr(&out).trim_end(),
            format!("ami: could not connect to 127.0.0.1:{port}: connection refused"),
            "{rt}"
        );
    });
}

#[test]
fn an_unknown_host_exits_3_and_says_host_not_found() {
    each_runtime(|rt| {
        let out = on(rt, "ami://a:b@no-such-host.invalid", &["action", "Ping"]);
        assert_code(&out, 3, rt);
        assert!(
            stderr(&out).starts_with("ami: host not found: no-such-host.invalid"),
            "{rt}: {}",
            stderr(&out)
        );
    });
}

#[test]
fn an_ipv6_literal_url_reaches_the_server() {
    let Ok(front) = TcpFront::start(SimConfig::default(), "[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let url = format!("ami://admin:amp111@[::1]:{}", front.local_addr().port());
    each_runtime(|rt| {
        let out = on(rt, &url, &["action", "Ping"]);
        assert_code(&out, 0, rt);
    });
}

#[test]
fn server_error_exits_4_and_still_prints_the_response() {
    let front = sim();
    each_runtime(|rt| {
        let out = on(
            rt,
            &sim_url(&front, "amp111"),
            &["action", "Status", "Channel=SIP/nope-1"],
        );
        assert_code(&out, 4, rt);
        assert_eq!(json(&stdout_lines(&out)[0])["headers"][0][1], "Error");
        // Which server, which action, what it said.
        assert!(
            stderr(&out).starts_with(&format!(
                "ami: {}: Status: the server answered Error: ",
                front.local_addr()
            )),
            "{rt}: {}",
            stderr(&out)
        );
    });
}

/// The one stderr line of a failed action: the line that names `action`, checked to be a
/// single line naming the server.
fn failure_line(out: &std::process::Output, server: &str, action: &str) -> String {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.contains(&format!("{server}: {action}: ")))
        .unwrap_or_else(|| panic!("no line names {server} and {action}: {err}"))
        .to_string();
    assert!(line.starts_with("ami: "), "{line}");
    line
}

#[test]
fn action_timeout_line_names_the_server_the_action_the_wait_the_unknown_outcome_and_the_flag() {
    // `ami action Ping --timeout 0.5` against a server that logs in and then swallows every
    // action: at 3 a.m. the line must say where, what, how long, that the server may still
    // run it (why exit 1), and which flag waits longer.
    let silent = Fake::start(|_, mut c| {
        if c.login(true) {
            while c.next().is_some() {}
        }
    });
    each_runtime(|rt| {
        let out = on(rt, &silent.url(), &["action", "Ping", "--timeout", "0.5"]);
        assert_code(&out, 1, rt);
        let line = failure_line(&out, &silent.addr.to_string(), "Ping");
        assert!(line.contains("no response within 500.0 ms"), "{rt}: {line}");
        assert!(line.contains("the server may still run it"), "{rt}: {line}");
        assert!(line.contains("raise --timeout"), "{rt}: {line}");
    });
}

#[test]
fn sync_originate_refusal_says_to_add_async_true_not_a_library_setting() {
    // The client refuses a sync Originate (it would block the session); the library's words
    // advise `allow_sync_originate`, which no `ami` flag sets: the CLI says what to type.
    let front = sim();
    let server = front.local_addr().to_string();
    each_runtime(|rt| {
        let out = on(
            rt,
            &sim_url(&front, "amp111"),
            &[
                "action",
                "Originate",
                "Channel=Local/1@x",
                "Application=Wait",
            ],
        );
        assert_code(&out, 2, rt);
        let line = failure_line(&out, &server, "Originate");
        assert!(
            line.contains("not sent (the server never saw it)"),
            "{rt}: {line}"
        );
        assert!(line.contains("add Async=true"), "{rt}: {line}");
        assert!(!line.contains("allow_sync_originate"), "{rt}: {line}");
        assert!(!line.contains("amp111"), "{rt}: no secret: {line}");
    });
}

#[test]
fn originate_failure_line_names_the_server_and_the_action() {
    let front = sim();
    let server = front.local_addr().to_string();
    each_runtime(|rt| {
        let out = on(
            rt,
            &sim_url(&front, "amp111"),
            &[
                "originate",
                "--channel",
                "Local/busy@ami-test",
                "--application",
                "Wait",
                "--data",
                "1",
            ],
        );
        assert_code(&out, 4, rt);
        let line = failure_line(&out, &server, "Originate");
        assert!(line.contains("Reason 5 (busy)"), "{rt}: {line}");
    });
}

#[test]
fn calls_without_a_snapshot_names_the_server_and_the_list_that_did_not_complete() {
    // A server that logs in and answers nothing: `ami calls` gives up on its snapshot after
    // its fixed wait, and says where and which list.
    let silent = Fake::start(|_, mut c| {
        if c.login(true) {
            while c.next().is_some() {}
        }
    });
    each_runtime(|rt| {
        let out = on(rt, &silent.url(), &["calls"]);
        assert_code(&out, 1, rt);
        let line = failure_line(&out, &silent.addr.to_string(), "CoreShowChannels");
        assert!(line.contains("no snapshot"), "{rt}: {line}");
        assert!(line.contains("within 15.0 s"), "{rt}: {line}");
    });
}

#[test]
fn originate_prints_the_originate_response_and_a_busy_line_exits_4() {
    let front = sim();
    let u = sim_url(&front, "amp111");
    each_runtime(|rt| {
        let originate = |exten: &str| {
            let channel = format!("Local/{exten}@ami-test");
            on(
                rt,
                &u,
                &[
                    "originate",
                    "--channel",
                    &channel,
                    "--application",
                    "Wait",
                    "--data",
                    "1",
                    "--var",
                    "A=1",
                ],
            )
        };
        let ok = originate("echo");
        assert_code(&ok, 0, rt);
        let v = json(&stdout_lines(&ok)[0]);
        assert_eq!(v["type"], "event");
        assert_eq!(header(&v, "Event").unwrap(), "OriginateResponse");
        let busy = originate("busy");
        assert_code(&busy, 4, rt);
        assert!(
            stderr(&busy).contains("Reason 5 (busy)"),
            "{rt}: {}",
            stderr(&busy)
        );
    });
}

#[test]
fn originate_has_the_server_send_only_its_originate_response_on_a_busy_server() {
    // Calls start every 2 ms on the server while `ami originate` waits for its
    // OriginateResponse: a session with the `call` mask alone would read every one of
    // their events; the command's filter leaves only its answer on the wire.
    each_runtime(|rt| {
        let front = sim();
        let u = sim_url(&front, "amp111");
        let busy = std::sync::atomic::AtomicBool::new(true);
        std::thread::scope(|s| {
            s.spawn(|| {
                while busy.load(std::sync::atomic::Ordering::Relaxed) {
                    // Calls placed without an OriginateResponse: the command's own is
                    // then the only event its filter lets through.
                    let mut call = ami_sim::CallRequest::new("Local/echo@ami-test", 1);
                    call.report = false;
                    front.with_server(|srv, now| srv.originate_call(now, call));
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            // The load runs before the command logs in and after it is done.
            std::thread::sleep(Duration::from_millis(300));
            let out = on(rt, &u, &ECHO_CALL);
            std::thread::sleep(Duration::from_millis(100));
            busy.store(false, std::sync::atomic::Ordering::Relaxed);
            assert_code(&out, 0, rt);
            let v = json(&stdout_lines(&out)[0]);
            assert_eq!(header(&v, "Event").unwrap(), "OriginateResponse");
        });
        let stats = front.stats();
        assert!(
            stats.events_emitted > 500,
            "{rt}: the load was real: {stats:?}"
        );
        assert!(
            stats.events_delivered <= 1,
            "{rt}: only the command's OriginateResponse was sent to it: {stats:?}"
        );
    });
}

#[test]
fn action_originate_async_gets_its_originate_response_although_action_asks_for_no_events() {
    // `ami action` logs in with no events; an async Originate completes with an event, so
    // for it the command asks for that one (it used to time out after Timeout plus 10 s,
    // the call placed).
    let front = sim();
    let u = sim_url(&front, "amp111");
    each_runtime(|rt| {
        let started = Instant::now();
        let out = on(
            rt,
            &u,
            &[
                "action",
                "Originate",
                "Channel=Local/echo@ami-test",
                "Application=Wait",
                "Data=1",
                "Async=true",
                "Timeout=5000",
            ],
        );
        assert_code(&out, 0, rt);
        let lines: Vec<Value> = stdout_lines(&out).iter().map(|l| json(l)).collect();
        assert_eq!(lines[0]["type"], "response", "{rt}: {lines:?}");
        assert!(
            lines
                .iter()
                .any(|v| header(v, "Event").is_some_and(|e| e == "OriginateResponse")),
            "{rt}: {lines:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{rt}");
    });
}

#[test]
fn originate_on_several_servers_places_the_call_from_the_one_named() {
    let (a, b) = (sim(), sim());
    let (ua, ub) = (sim_url(&a, "amp111"), sim_url(&b, "amp111"));
    let call = ECHO_CALL;
    each_runtime(|rt| {
        let before = (a.stats().calls_started, b.stats().calls_started);
        let mut args = call.to_vec();
        let on_b = b.local_addr().to_string();
        args.extend(["--on", on_b.as_str()]);
        let out = on_servers(rt, &[&ua, &ub], &args);
        assert_code(&out, 0, rt);
        let v = json(&stdout_lines(&out)[0]);
        assert_eq!(header(&v, "Event").unwrap(), "OriginateResponse");
        // Named like an `action --on` line: which of the servers answered.
        assert_eq!(v["server"], on_b.as_str(), "{rt}: {v}");
        assert!(b.stats().calls_started > before.1, "{rt}: placed on b");
        assert_eq!(a.stats().calls_started, before.0, "{rt}: not on a");
    });
    let out = on_servers("tokio", &[&ua, &ub], &call);
    assert_code(&out, 2, "no --on");
    assert!(stderr(&out).contains("--on"), "{}", stderr(&out));
    let mut args = call.to_vec();
    args.extend(["--on", "127.0.0.1:1"]);
    let out = on_servers("tokio", &[&ua, &ub], &args);
    assert_code(&out, 2, "unknown --on");
    assert!(stderr(&out).contains("no such server"), "{}", stderr(&out));
}

#[test]
fn originate_var_values_with_commas_quotes_and_backslashes_reach_the_channel_whole() {
    // The simulator splits Variable headers as Asterisk does (`__ast_app_separate_args`):
    // sent as typed, NOTE would arrive as `a` and JSON as `{a:1`.
    let front = sim();
    let u = sim_url(&front, "amp111");
    let note = r#"a,b "c" \d"#;
    let lead = r#"{"a":1,"b":[2,3]}"#;
    let out = on(
        "tokio",
        &u,
        &[
            "originate",
            "--channel",
            "Local/echo@ami-test",
            "--application",
            "Wait",
            "--data",
            "30",
            "--var",
            &format!("NOTE={note}"),
            "--var",
            &format!("JSON={lead}"),
            "--caller-id",
            r#""O'Brien" <5551234>"#,
        ],
    );
    assert_code(&out, 0, "originate");
    let response = json(&stdout_lines(&out)[0]);
    assert!(response.get("server").is_none(), "one server: not named");
    // The caller ID went with it (Asterisk escapes the name in its events).
    assert_eq!(header(&response, "CallerIDNum").unwrap(), "5551234");
    assert_eq!(header(&response, "CallerIDName").unwrap(), "O'Brien");
    let channel = header(&response, "Channel").unwrap().as_str().unwrap();
    for (name, want) in [("NOTE", note), ("JSON", lead)] {
        let out = on(
            "tokio",
            &u,
            &[
                "action",
                "Getvar",
                &format!("Channel={channel}"),
                &format!("Variable={name}"),
            ],
        );
        assert_code(&out, 0, name);
        let v = json(&stdout_lines(&out)[0]);
        assert_eq!(header(&v, "Value").unwrap(), want, "{name}");
    }
    let empty_name = on(
        "tokio",
        &u,
        &[
            "originate",
            "--channel",
            "X",
            "--application",
            "Wait",
            "--var",
            "=1",
        ],
    );
    assert_code(&empty_name, 2, "--var =1");
    assert!(
        stderr(&empty_name).contains("invalid --var"),
        "{}",
        stderr(&empty_name)
    );
}

#[test]
fn listen_to_a_slow_stdout_marks_each_gap_in_the_stream_and_says_it_in_a_few_lines() {
    let (mut sim, url) = spawn_sim(&["--events-per-s", "100000"]);
    let mut listen = spawn_piped(&[
        "--server",
        url.trim(),
        "listen",
        "--event",
        "UserEvent",
        "--duration",
        "3",
    ]);
    // Nobody reads stdout for 2 s: the pipe and the printer's queue fill, lines are dropped.
    let (out, status, err) = read_after_stall(&mut listen, Duration::from_secs(2));
    sim.kill().unwrap();
    sim.wait().unwrap();
    assert!(status.success(), "{err}");
    // Every Seq missing from the printed events is a gap marker's count, in stream order.
    let (events, dropped) = account_for_every_seq(out.lines().map(json).collect::<Vec<_>>().iter());
    assert!(
        dropped > 10_000,
        "{events} printed, {dropped} marked dropped"
    );
    // On stderr: a burst of drops is a few lines, not one per drop (it was thousands).
    let gap_lines = err.lines().filter(|l| l.contains("gap:")).count();
    assert!(
        (1..=4).contains(&gap_lines),
        "{gap_lines} gap lines:\n{err}"
    );
    assert!(err.contains("events not printed"), "{err}");
}

#[test]
fn listen_to_a_stalled_stdout_keeps_every_session_marker_in_order_across_a_restart() {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let front = Arc::new(sim());
    let url = sim_url(&front, "amp111");
    // A steady stream with one running Seq, across the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed_user_events(&front, &stop, 20);
    let mut listen = spawn_piped(&[
        "--server",
        &url,
        "listen",
        "--event",
        "UserEvent",
        "--duration",
        "4",
    ]);
    // stdout is not read for 2.5 s; the server restarts 1 s in, while it is stalled.
    std::thread::sleep(Duration::from_secs(1));
    front.with_server(|s, now| {
        s.inject(
            now,
            ami_sim::Fault::Restart {
                down_for: Duration::from_millis(300),
            },
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    let mut lines = Vec::new();
    for line in BufReader::new(listen.stdout.take().unwrap()).lines() {
        lines.push(line.unwrap());
    }
    let status = listen.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let err = stderr_of(&mut listen);
    assert!(status.success(), "{err}");
    let states: Vec<String> = lines
        .iter()
        .map(|l| json(l))
        .filter(|v| v["type"] == "session")
        .map(|v| v["state"].as_str().unwrap().to_string())
        .collect();
    // ready, lost, ready, then lost again as the run ends with its Logoff (and, on a
    // machine too loaded to keep up, perhaps more of the same pairs): never two of a kind
    // in a row, and nothing missing at the end.
    assert!(
        states.len() >= 4 && states.len().is_multiple_of(2),
        "{states:?}: {err}"
    );
    for (i, state) in states.iter().enumerate() {
        let want = if i % 2 == 0 { "ready" } else { "lost" };
        assert_eq!(state, want, "{states:?}: {err}");
    }
    // Within each session every missing Seq is in a gap marker.
    let (_, dropped) =
        account_for_every_seq(lines.iter().map(|l| json(l)).collect::<Vec<_>>().iter());
    assert!(dropped > 1000, "the stall dropped events: {dropped}");
}

#[test]
fn listen_count_zero_is_a_usage_error_not_one_event() {
    // It printed the first event: "stop after 0 events" cannot be met after one.
    let out = ami(&[
        "--server",
        "ami://a:b@127.0.0.1:1",
        "listen",
        "--count",
        "0",
    ]);
    assert_code(&out, 2, "--count 0");
    assert!(stderr(&out).contains("--count"), "{}", stderr(&out));
}

#[test]
fn listen_streams_events_as_json_lines_until_count() {
    each_runtime(|rt| {
        let front = sim();
        let u = sim_url(&front, "amp111");
        let child = std::thread::spawn(move || {
            on(
                rt,
                &u,
                &[
                    "listen",
                    "--count",
                    "5",
                    "--event",
                    "userevent",
                    "--duration",
                    "10",
                ],
            )
        });
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(50));
            front.with_server(|s, now| s.emit_user_events(now, 3));
            if child.is_finished() {
                break;
            }
        }
        let out = child.join().unwrap();
        assert_code(&out, 0, rt);
        let l: Vec<Value> = stdout_lines(&out).iter().map(|l| json(l)).collect();
        assert_eq!(l[0]["type"], "session", "{rt}: a session starts the stream");
        assert_eq!(l[0]["state"], "ready");
        let events: Vec<&Value> = l.iter().filter(|v| v["type"] == "event").collect();
        assert_eq!(events.len(), 5, "{rt}");
        for v in events {
            assert_eq!(header(v, "Event").unwrap(), "UserEvent");
        }
    });
}

/// Ctrl-C (SIGINT) or SIGTERM while events flow: `listen` logs off, writes every line it
/// holds, whole, and exits 0, instead of dying with them.
#[test]
fn listen_stops_cleanly_on_ctrl_c_and_sigterm_with_every_line_written_whole() {
    use std::io::BufRead;
    each_runtime(|rt| {
        // One server, then two (the fleet's path: a quiet second server beside).
        for (signal, servers) in [("INT", 1), ("TERM", 2)] {
            let front = sim();
            let quiet = sim();
            let mut args = vec![
                "--runtime".to_string(),
                rt.to_string(),
                "--server".to_string(),
                sim_url(&front, "amp111"),
            ];
            if servers == 2 {
                args.extend(["--server".to_string(), sim_url(&quiet, "amp111")]);
            }
            args.extend(["listen", "--event", "userevent"].map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut child = command(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn_guarded();
            let stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                std::io::BufReader::new(stdout)
                    .lines()
                    .map(Result::unwrap)
                    .collect::<Vec<String>>()
            });
            // Events flow; the signal comes while they do.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut first = 0;
            while front.stats().events_delivered < 2_000 {
                assert!(Instant::now() < deadline, "{rt}: no events delivered");
                front.with_server(|s, now| s.emit_user_events_from(now, first, 200));
                first += 200;
                std::thread::sleep(Duration::from_millis(5));
            }
            let actions = front.stats().actions;
            send_signal(&child, signal);
            let status = child.wait().unwrap();
            let err = stderr_of(&mut child);
            assert_eq!(status.code(), Some(0), "{rt} SIG{signal}: {err}");
            let lines = reader.join().unwrap();
            let seqs: Vec<u64> = lines
                .iter()
                .map(|l| json(l))
                .filter(|v| v["type"] == "event")
                .map(|v| {
                    header(&v, "Seq")
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect();
            assert!(seqs.len() > 100, "{rt} SIG{signal}: {} events", seqs.len());
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0] + 1),
                "{rt} SIG{signal}: events missing from the output"
            );
            // It logged off: one more action reached the server after the signal.
            let wait = Instant::now() + Duration::from_secs(5);
            while front.stats().actions == actions || front.stats().sessions_open > 0 {
                assert!(Instant::now() < wait, "{rt} SIG{signal}: no Logoff");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
}

/// Before the first login there is nothing to save: a stop signal ends `listen` at once
/// (exit 3, no login: `tests/operator.rs` checks the code), even while it waits on a server
/// that accepted the connection and never sends its banner. SIGTERM stands for Ctrl-C's SIGINT here: a test
/// run started in the background inherits SIGINT ignored (as shells set it up for
/// background jobs), and a program rightly keeps an ignored signal ignored until it catches
/// it itself.
#[test]
fn a_stop_signal_before_the_first_login_ends_listen_at_once() {
    let fake = Fake::start(|_, c| {
        std::thread::sleep(Duration::from_secs(30));
        drop(c);
    });
    each_runtime(|rt| {
        let mut child = command(&["--runtime", rt, "--server", &fake.url(), "listen"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn_guarded();
        let wait = Instant::now() + Duration::from_secs(10);
        while fake.accepted() == 0 {
            assert!(Instant::now() < wait, "{rt}: never connected");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        let signalled = Instant::now();
        send_signal(&child, "TERM");
        let status = child.wait().unwrap();
        assert!(
            signalled.elapsed() < Duration::from_secs(3),
            "{rt}: took {:?} after SIGTERM ({status:?})",
            signalled.elapsed()
        );
    });
}

#[test]
fn listen_marks_server_input_it_threw_away_that_may_have_been_events_where_it_was() {
    // An event with more fields than the decoder takes (10,001) is thrown away and the
    // stream goes on; a script reading the lines sees a `discarded` gap between the two
    // events around it. A message that is neither event nor response was never an event:
    // said on stderr only.
    let fake = Fake::start(|_, mut c| {
        if !c.login(true) {
            return;
        }
        let _ = c.send(b"Event: UserEvent\r\nUserEvent: Before\r\n\r\n");
        let mut big = b"Event: UserEvent\r\nUserEvent: Huge\r\n".to_vec();
        for _ in 0..10_001 {
            big.extend_from_slice(b"F: x\r\n");
        }
        big.extend_from_slice(b"\r\n");
        let _ = c.send(&big);
        let _ = c.send(b"Foo: bar\r\n\r\n");
        let _ = c.send(b"Event: UserEvent\r\nUserEvent: After\r\n\r\n");
        c.serve(true);
    });
    each_runtime(|rt| {
        let out = on(
            rt,
            &fake.url(),
            &["listen", "--count", "3", "--duration", "20"],
        );
        assert_code(&out, 0, rt);
        let lines: Vec<Value> = stdout_lines(&out).iter().map(|l| json(l)).collect();
        let story: Vec<String> = lines
            .iter()
            .filter(|v| v["type"] != "session")
            .filter(|v| v["type"] != "event" || header(v, "Event").unwrap() == "UserEvent")
            .map(|v| match v["type"].as_str().unwrap() {
                "event" => header(v, "UserEvent")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                "gap" => format!("gap {} {}", v["reason"], v["dropped"]),
                other => other.to_string(),
            })
            .collect();
        assert_eq!(
            story,
            ["Before", "gap \"discarded\" 1", "After"],
            "{rt}: {lines:?}"
        );
        let err = stderr(&out);
        assert!(err.contains("server input discarded"), "{rt}: {err}");
        assert!(err.contains("neither event nor response"), "{rt}: {err}");
    });
}

#[test]
fn listen_writes_non_utf8_values_that_read_back_byte_exact() {
    let name: &[u8] = b"Jos\xe9 \xff";
    let fake = Fake::start(move |_, mut c| {
        c.login(true);
        let mut ev = b"Event: Newchannel\r\nCallerIDName: ".to_vec();
        ev.extend_from_slice(name);
        ev.extend_from_slice(b"\r\nExten: 100\r\n\r\n");
        let _ = c.send(&ev);
        c.serve(true);
    });
    each_runtime(|rt| {
        let out = on(
            rt,
            &fake.url(),
            &[
                "listen",
                "--count",
                "1",
                "--event",
                "Newchannel",
                "--duration",
                "20",
            ],
        );
        assert_code(&out, 0, rt);
        let v = stdout_lines(&out)
            .iter()
            .map(|l| json(l))
            .find(|v| v["type"] == "event")
            .unwrap();
        let value = header(&v, "CallerIDName").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value["base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, name, "{rt}");
        assert_eq!(value["lossy"], "Jos\u{fffd} \u{fffd}");
        assert_eq!(header(&v, "Exten").unwrap(), "100");
    });
}

#[test]
fn exit_is_bounded_when_logoff_is_never_answered() {
    let fake = Fake::start(|_, mut c| {
        if c.login(true) {
            c.serve(false);
        }
    });
    let bound = LOGOFF_GRACE + Duration::from_secs(2);
    each_runtime(|rt| {
        let server = fake.url();
        let (out, took) = timed(&["--runtime", rt, "--server", &server, "action", "Ping"]);
        assert_code(&out, 0, rt);
        assert_eq!(
            header(&json(&stdout_lines(&out)[0]), "Ping").unwrap(),
            "Pong"
        );
        assert!(took < bound, "{rt}: action took {took:?}");

        let (out, took) = timed(&[
            "--runtime",
            rt,
            "--server",
            &server,
            "listen",
            "--duration",
            "1",
        ]);
        assert_code(&out, 0, rt);
        assert!(
            took < Duration::from_secs(1) + bound,
            "{rt}: listen took {took:?}"
        );
    });
}

#[test]
fn a_rejected_relogin_ends_listen_with_exit_3() {
    each_runtime(|rt| {
        let fake = Fake::start(|n, mut c| {
            // The first session logs in, then the server drops it; every later login fails.
            if c.login(n == 0) {
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let (out, took) = timed(&[
            "--runtime",
            rt,
            "--server",
            &fake.url(),
            "listen",
            "--duration",
            "20",
        ]);
        assert_code(&out, 3, rt);
        let err = stderr(&out);
        // The "lost the session ... retrying in" line may be skipped on the async runtimes:
        // their status is a watch that keeps the latest value only. The end is never lost.
        assert!(
            err.lines()
                .last()
                .unwrap()
                .contains("rejected the login for admin: Authentication failed"),
            "{rt}: {err}"
        );
        assert!(!err.contains("S3cr3t"));
        assert!(took < Duration::from_secs(10), "{rt}: {took:?}");
    });
}

#[test]
fn a_session_lost_right_after_its_login_is_a_session_not_a_failed_connect() {
    each_runtime(|rt| {
        // Every session logs in and is hung up on at once: on the async runtimes the
        // status watch may never show Ready (it keeps the latest status only).
        let fake = Fake::start(|_, mut c| {
            c.login(true);
        });
        let out = ami(&[
            "--runtime",
            rt,
            "--server",
            &fake.url(),
            "listen",
            "--duration",
            "1",
        ]);
        assert_code(&out, 0, rt);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let first = stdout.lines().next().map(json);
        assert_eq!(
            first.as_ref().map(|v| (&v["type"], &v["state"])),
            Some((&Value::from("session"), &Value::from("ready"))),
            "{rt}: {stdout}"
        );
    });
}

#[test]
fn a_slow_stdout_does_not_stop_the_session_from_reading() {
    // 40 MB of events, far more than loopback socket buffers (a few MB each way) and the
    // pipe hold: the server can only write it all if `ami` keeps reading while nobody
    // reads its stdout.
    const EVENTS: usize = 200_000;
    each_runtime(|rt| {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(String, Duration)>();
        let done_tx = std::sync::Mutex::new(done_tx);
        // After the flood the server hangs up and refuses the next login, which ends the
        // command (exit 3) as soon as it has read everything.
        let fake = Fake::start(move |n, mut c| {
            if !c.login(n == 0) {
                return;
            }
            // A session that stopped reading blocks this write for good, so any bound
            // catches it; 20 s (not Asterisk's 100 ms) keeps a debug build on a loaded
            // machine, descheduled for a moment, from looking like one.
            c.stream
                .set_write_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let started = Instant::now();
            let pad = "x".repeat(150);
            let mut result = "ok".to_string();
            for i in 0..EVENTS {
                let ev =
                    format!("Event: UserEvent\r\nUserEvent: Flood\r\nN: {i}\r\nPad: {pad}\r\n\r\n");
                if let Err(e) = c.send(ev.as_bytes()) {
                    result = format!("write {i} blocked: {e}");
                    break;
                }
            }
            let _ = done_tx.lock().unwrap().send((result, started.elapsed()));
        });
        let server = fake.url();
        let mut child = spawn_piped(&[
            "--runtime",
            rt,
            "--server",
            &server,
            "listen",
            "--duration",
            "60",
        ]);
        // stderr is read all along: a line per dropped burst can fill its pipe, and a child
        // blocked on stderr would never close the stdout read below.
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stderr.read_to_end(&mut v);
            v
        });
        let (result, took) = done_rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(result, "ok", "{rt}: the server was blocked after {took:?}");
        // Only now read stdout.
        let mut stdout = Vec::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        let status = child.wait().unwrap();
        let err = stderr.join().unwrap();
        let err = String::from_utf8_lossy(&err);
        assert_eq!(status.code(), Some(3), "{rt}: {err}");
        assert!(
            err.contains("events not printed (stdout too slow)"),
            "{rt}: {err}"
        );
        assert!(!stdout.is_empty());
    });
}

#[test]
fn listen_into_a_closed_pipe_ends_quietly_with_exit_0() {
    // `ami listen | head -1`: the reader goes away after one line. A closed pipe is how a
    // pipeline says "enough": no complaint on stderr, exit 0.
    use std::io::BufRead;
    each_runtime(|rt| {
        let front = sim();
        let url = sim_url(&front, "amp111");
        let mut child = spawn_piped(&[
            "--runtime",
            rt,
            "--server",
            &url,
            "listen",
            "--duration",
            "30",
        ]);
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert_eq!(json(&first)["type"], "session", "{rt}");
        drop(stdout);
        // Events keep coming, so the next write finds the pipe closed.
        let started = Instant::now();
        let status = loop {
            front.with_server(|s, now| s.emit_user_events(now, 3));
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{rt}: still running with its stdout closed"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let err = stderr_of(&mut child);
        assert_eq!(status.code(), Some(0), "{rt}: {err}");
        assert!(
            err.is_empty(),
            "{rt}: a closed pipe is a quiet end, yet: {err}"
        );
    });
}

#[test]
fn bench_and_demo_run_on_every_runtime_without_a_server() {
    each_runtime(|rt| {
        let out = ami(&["--runtime", rt, "demo", "--duration", "1.5"]);
        assert_code(&out, 0, rt);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("logged in"), "{rt}: {text}");
        assert!(text.contains("done:"), "{rt}: {text}");
        let out = ami(&["--runtime", rt, "bench", "--duration", "0.5"]);
        assert_code(&out, 0, rt);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with(&format!("events ({rt}): ")),
            "{rt}: {text}"
        );
        // The README loop's own figure, one item at a time, on the same session.
        assert!(
            text.contains(&format!("events ({rt}, README loop, ")),
            "{rt}: {text}"
        );
    });
}

#[test]
fn bench_with_large_events_streams_them_and_refuses_sizes_the_client_would_refuse() {
    // 200 kB events: the simulator used to close the session after its first 4 MiB (20
    // events), and the run then counted nothing for seconds.
    let out = ami(&["bench", "--duration", "0.5", "--event-bytes", "200000"]);
    assert_code(&out, 0, "200 kB events");
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap();
    let events: u64 = first
        .strip_prefix("events (tokio): ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(events > 100, "{text}");
    assert!(!text.contains("logged in again"), "{text}");
    let too_large = ami(&["bench", "--event-bytes", "1048577"]);
    assert_code(&too_large, 2, "1 MiB + 1");
    assert!(stderr(&too_large).contains("--event-bytes takes at most"));
}

#[test]
fn decode_prints_every_message_of_a_capture() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/asterisk-22.10.1/originate_async.raw"
    );
    let out = ami(&["decode", file]);
    assert_code(&out, 0, "decode");
    let l = stdout_lines(&out);
    let raw = std::fs::read(file).unwrap();
    let blocks = raw.windows(4).filter(|w| w == b"\r\n\r\n").count();
    assert_eq!(l.len(), blocks, "one JSON object per message");
    for line in &l {
        assert!(json(line)["headers"].is_array());
    }
}

/// Peak resident memory of a running process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn decode_streams_standard_input_in_bounded_memory_and_prints_each_message_as_it_comes() {
    use std::io::{BufRead, BufReader, Write};
    let mut child = command(&["decode", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn_guarded();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut next_line = || {
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        json(&line)
    };
    input
        .write_all(b"Asterisk Call Manager/11.0.0\r\nEvent: First\r\n\r\n")
        .unwrap();
    // Printed while the input is still open: the old command read to the end first.
    assert_eq!(header(&next_line(), "Event").unwrap(), "First");
    // 48 MiB of a line that never ends (a hostile or corrupt capture), then a message.
    let junk = vec![b'x'; 1 << 20];
    for _ in 0..48 {
        input.write_all(&junk).unwrap();
    }
    input.write_all(b"\r\n\r\nEvent: Second\r\n\r\n").unwrap();
    assert_eq!(header(&next_line(), "Event").unwrap(), "Second");
    let peak = peak_rss_kib(child.id());
    assert!(peak < 24 << 10, "peak RSS {peak} KiB after 48 MiB of input");
    drop(input);
    let status = child.wait().unwrap();
    let err = stderr_of(&mut child);
    assert!(status.success(), "{err}");
    assert!(err.contains("2 messages, 1 decode errors"), "{err}");
}

#[test]
fn decode_typed_prints_typed_events_and_reports_fields_that_do_not_parse() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/asterisk-22.10.1/originate_async.raw"
    );
    let out = ami(&["decode", "--typed", file]);
    assert_code(&out, 0, "decode --typed");
    let hangup = stdout_lines(&out)
        .into_iter()
        .map(|l| json(&l))
        .find(|v| v["event"] == "Hangup")
        .expect("a Hangup line");
    assert_eq!(hangup["known"], true, "{hangup}");
    assert!(hangup["fields"]["Cause"].is_u64(), "an integer: {hangup}");
    let err = stderr(&out);
    assert!(
        err.contains("0 of kinds the catalog does not know), 0 fields did not parse"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("ami-decode-typed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.raw");
    std::fs::write(
        &bad,
        "Asterisk Call Manager/11.0.0\r\nEvent: Hangup\r\nCause: soon\r\n\r\n",
    )
    .unwrap();
    let out = ami(&["decode", "--typed", bad.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(
        err.contains(r#"Hangup: Cause: "soon" is not integer"#),
        "{err}"
    );
    assert!(err.contains("1 fields did not parse"), "{err}");
    assert_eq!(
        json(&stdout_lines(&out)[0])["fields"]["Cause"],
        "soon",
        "kept as sent"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decode_never_prints_a_login_secret_or_an_md5_key() {
    let capture = "Asterisk Call Manager/9.0.0\r\n\
        Action: Login\r\nActionID: 1\r\nUsername: admin\r\nSecret: TOPSECRET1\r\n\r\n\
        Action: Login\r\nAuthType: MD5\r\nUsername: admin\r\nKey: 0123456789abcdef0123456789abcdef\r\n\r\n\
        Response: Success\r\nChallenge: 123456789\r\n\r\n";
    let dir = std::env::temp_dir().join(format!("ami-decode-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cap.txt");
    std::fs::write(&file, capture).unwrap();
    for args in [
        &["decode", file.to_str().unwrap()][..],
        &["decode", "--typed", file.to_str().unwrap()][..],
    ] {
        let out = ami(args);
        assert_code(&out, 0, "decode");
        let (text, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
        for shown in [&*text, &*err] {
            assert!(
                !shown.contains("TOPSECRET1") && !shown.contains("0123456789abcdef"),
                "{args:?}: {shown}"
            );
        }
        let lines = stdout_lines(&out);
        assert_eq!(lines.len(), 3, "{args:?}: {lines:?}");
        // The headers are there, their values hidden; the rest of the capture as sent.
        assert_eq!(header(&json(&lines[0]), "Secret").unwrap(), "***");
        assert_eq!(header(&json(&lines[1]), "Key").unwrap(), "***");
        assert_eq!(header(&json(&lines[1]), "Username").unwrap(), "admin");
        assert_eq!(header(&json(&lines[2]), "Challenge").unwrap(), "123456789");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decode_hides_the_secret_of_a_login_whose_action_header_is_not_first() {
    // Asterisk reads `Action` wherever it is: a client that sends its ActionID first still
    // logs in, and its capture decodes as type `other`.
    let dir = std::env::temp_dir().join(format!("ami-decode-late-action-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cap.txt");
    std::fs::write(
        &file,
        "ActionID: 1\r\nAction: Login\r\nUsername: admin\r\nSecret: TOPSECRET1\r\n\r\n\
         ActionID: 2\r\naction: login\r\nAuthType: MD5\r\nkey: 0123456789abcdef\r\n\r\n",
    )
    .unwrap();
    let out = ami(&["decode", file.to_str().unwrap()]);
    assert_code(&out, 0, "decode");
    assert_eq!(
        stdout_lines(&out),
        [
            r#"{"type":"other","headers":[["ActionID","1"],["Action","Login"],["Username","admin"],["Secret","***"]]}"#,
            r#"{"type":"other","headers":[["ActionID","2"],["action","login"],["AuthType","MD5"],["key","***"]]}"#,
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decode_typed_hides_the_secret_of_a_login_whose_first_header_is_event() {
    // Asterisk runs `Action: Login` whatever line comes first; the decoder calls this an
    // event, and --typed printed every field of it.
    let dir = std::env::temp_dir().join(format!("ami-decode-event-login-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cap.txt");
    std::fs::write(
        &file,
        "Event: x\r\nAction: Login\r\nUsername: admin\r\nSecret: TOPSECRET1\r\n\r\n",
    )
    .unwrap();
    for args in [&["decode"][..], &["decode", "--typed"]] {
        let mut args = args.to_vec();
        args.push(file.to_str().unwrap());
        let out = ami(&args);
        assert_code(&out, 0, "decode");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("TOPSECRET1"), "{args:?}: {text}");
        assert!(text.contains(r#"["Secret","***"]"#), "{args:?}: {text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decode_of_captures_prints_the_shared_schema_exactly() {
    // The lines a jq pipeline reads, as exact text (ami-json's golden tests hold the rest).
    let fixture = |name: &str| {
        format!(
            "{}/../../shared/fixtures/asterisk-22.10.1/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    let out = ami(&["decode", &fixture("login_plain.sent")]);
    assert_code(&out, 0, "decode");
    assert_eq!(
        stdout_lines(&out),
        [
            r#"{"type":"action","headers":[["Action","Login"],["ActionID","login-1"],["Username","admin"],["Secret","***"]]}"#,
            r#"{"type":"action","headers":[["Action","Logoff"],["ActionID","logoff-1"]]}"#,
        ]
    );
    let out = ami(&["decode", &fixture("login_plain.raw")]);
    assert_code(&out, 0, "decode");
    assert_eq!(
        stdout_lines(&out)[..2],
        [
            r#"{"type":"response","headers":[["Response","Success"],["ActionID","login-1"],["Message","Authentication accepted"]]}"#,
            r#"{"type":"event","headers":[["Event","FullyBooted"],["Privilege","system,all"],["Uptime","3"],["LastReload","3"],["Status","Fully Booted"]]}"#,
        ]
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(ami(&["action"]).status.code(), Some(2));
    let out = ami(&["action", "Ping"]);
    assert_code(&out, 2, "no server given");
    assert!(stderr(&out).contains("no server"));
    let out = ami(&["--server", "amis://a:b@127.0.0.1:1", "action", "Ping"]);
    assert_code(&out, 2, "amis:// without --ca");
    assert!(stderr(&out).contains("--ca"));
    // An event name pasted with its line end, or empty, can never match an event.
    for bad in ["Hangup\r\nX", "", "Dial Begin", "Event:Hangup"] {
        let out = ami(&[
            "--server",
            "ami://a:b@127.0.0.1:1",
            "listen",
            "--event",
            bad,
        ]);
        assert_code(&out, 2, bad);
        assert!(stderr(&out).contains("an event name cannot"), "{bad:?}");
    }
}

#[test]
fn connection_options_given_to_sim_or_decode_are_refused_not_ignored() {
    for args in [
        &["sim", "--runtime", "mio"][..],
        &["--auth", "md5", "sim"],
        &["sim", "--server", "ami://a:b@127.0.0.1:1"],
        &["--ca", "ca.pem", "decode", "capture.raw"],
    ] {
        // Ignored, `sim` would serve until killed: waited for with a deadline.
        let mut child = spawn_piped(args);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{args:?} still running: the option was ignored");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_code(&out, 2, &format!("{args:?}"));
        let said = stderr(&out);
        assert!(
            said.contains("for the commands that connect to a server"),
            "{said}"
        );
    }
    // The bridge connects, but always on tokio: a runtime asked for is refused too.
    let out = ami(&[
        "--runtime",
        "mio",
        "bridge",
        "--server",
        "ami://a:b@127.0.0.1:1",
    ]);
    assert_code(&out, 2, "bridge --runtime mio");
    assert!(
        stderr(&out).contains("the bridge runs on tokio"),
        "{}",
        stderr(&out)
    );
    // AMI_URL is set for every command of a shell: it does not stop the simulator.
    let mut sim = command(&["sim", "--listen", "127.0.0.1:0"])
        .env("AMI_URL", "ami://a:b@127.0.0.1:1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn_guarded();
    let mut url = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sim.stdout.take().unwrap()),
        &mut url,
    )
    .unwrap();
    assert!(url.starts_with("ami://admin:amp111@127.0.0.1:"), "{url}");
    sim.kill().unwrap();
    sim.wait().unwrap();
}

#[test]
fn a_duration_that_is_not_a_finite_number_of_seconds_is_a_usage_error_not_a_panic() {
    let server = "ami://a:b@127.0.0.1:1";
    for cmd in ["listen", "calls", "demo", "bench"] {
        for bad in ["nan", "inf", "-1"] {
            let mut args = vec!["--server", server, cmd];
            if cmd == "calls" {
                args.push("--watch");
            }
            args.extend(["--duration", bad]);
            let out = ami(&args);
            assert_code(&out, 2, &format!("{args:?}"));
            assert!(
                !stderr(&out).contains("panicked"),
                "{args:?}: {}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn malformed_urls_name_the_problem_and_never_print_the_secret() {
    for (url, words) in [
        ("ami://u:S3cr3t@127.0.0.1:notaport", "invalid port number"),
        ("ami://u:S3cr3t%zz@127.0.0.1", "two hex digits"),
        (
            "http://u:S3cr3t@127.0.0.1",
            "scheme must be ami:// or amis://",
        ),
        ("ami://u:S3cr3t@::1", "empty host"),
        ("ami://u:S3cr3t", "invalid port number"),
    ] {
        let from_env = command(&["action", "Ping"])
            .env("AMI_URL", url)
            .output()
            .unwrap();
        for out in [ami(&["--server", url, "action", "Ping"]), from_env] {
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{url}: {err}");
            assert!(err.contains(words), "{url}: {err}");
            assert!(!err.contains("S3cr3t"), "{url}: the secret leaked: {err}");
        }
    }
}

#[test]
fn invalid_actions_are_refused_before_any_connection_on_every_runtime() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let server = format!("ami://a:b@{}", listener.local_addr().unwrap());
    let long = format!("Foo={}", "x".repeat(1100));
    let bad: [&[&str]; 7] = [
        &["action", "Ping", "Foo=bar\r\nAction: Originate"],
        &["action", "Ping", "Bad Name=1"],
        &["action", "Ping", &long],
        &["action", "Ping", "NoEqualsSign"],
        &["action", "Ping", "ActionID=mine"],
        &["action", "Logoff"],
        &[
            "originate",
            "--channel",
            "Local/1@x\n",
            "--application",
            "Wait",
        ],
    ];
    each_runtime(|rt| {
        for args in bad {
            let out = on(rt, &server, args);
            assert_code(&out, 2, &format!("{rt} {args:?}"));
        }
    });
    assert!(listener.accept().is_err(), "something connected");
}

#[test]
fn originate_needs_an_application_or_a_context_and_exten() {
    for args in [
        &["originate", "--channel", "X"][..],
        &["originate", "--channel", "X", "--context", "c"],
        &[
            "originate",
            "--channel",
            "X",
            "--application",
            "A",
            "--exten",
            "1",
        ],
    ] {
        assert_eq!(ami(args).status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn the_standalone_simulator_tells_the_real_time() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let (mut sim, url) = spawn_sim(&[]);
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let out = ami(&["--server", url.trim(), "action", "Ping"]);
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    sim.kill().unwrap();
    sim.wait().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stamp = header(&line, "Timestamp")
        .and_then(Value::as_str)
        .unwrap()
        .parse::<f64>()
        .unwrap();
    // Ping's Timestamp is the server's wall clock: within the run, give or take a second.
    assert!(
        stamp >= before.as_secs_f64() - 1.0 && stamp <= after.as_secs_f64() + 1.0,
        "Timestamp {stamp}, run {before:?}..{after:?}"
    );
}

/// Runs `ami ARGS` with its stdout a pipe whose reader is already gone (`| head -0`):
/// (exit code, stderr).
fn into_a_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let mut child = spawn_piped(args);
    drop(child.stdout.take());
    let err = stderr_of(&mut child);
    (child.wait().unwrap().code(), err)
}

#[test]
fn action_and_decode_into_a_closed_pipe_end_quietly_keeping_the_actions_exit_code() {
    let front = sim();
    let url = sim_url(&front, "amp111");
    // `ami action ... | head -1`: the answer came; the reader had enough.
    let (code, err) = into_a_closed_pipe(&["--server", &url, "action", "Ping"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "a closed pipe is a quiet end, yet: {err}");
    // A server error still says so, in the exit code and on stderr.
    let (code, err) = into_a_closed_pipe(&[
        "--server",
        &url,
        "action",
        "Originate",
        "Channel=Local/100@ami-test",
        "Context=no-such-context",
        "Exten=1",
        "Priority=1",
        "Async=true",
    ]);
    assert_eq!(code, Some(4), "{err}");
    assert!(!err.contains("cannot write"), "{err}");
    // `ami decode capture.raw | head`: stops reading, exit 0, no complaint.
    let dir = std::env::temp_dir().join(format!("ami-closed-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("many.raw");
    let one = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/asterisk-22.10.1/originate_async.raw"
    ))
    .unwrap();
    std::fs::write(&capture, one.repeat(2_000)).unwrap();
    let (code, err) = into_a_closed_pipe(&["decode", capture.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("cannot write"), "{err}");
    assert!(
        !err.contains("messages,"),
        "stopped early, so no summary: {err}"
    );
}

/// `ami demo | head -1` and `ami bench | head -1`: the two commands that print as they go
/// end like the others when their reader has gone: at once (not after their `--duration`),
/// exit 0, nothing on stderr (no panic message, no `failed printing to stdout`).
#[test]
fn demo_and_bench_into_a_closed_pipe_end_quietly_and_promptly_with_exit_0() {
    each_runtime(|rt| {
        let started = Instant::now();
        let (code, err) = into_a_closed_pipe(&["--runtime", rt, "demo", "--duration", "30"]);
        assert_eq!(code, Some(0), "{rt} demo: {err}");
        assert!(
            err.is_empty(),
            "{rt} demo: a closed pipe is a quiet end, yet: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{rt} demo: ran {:?} for a reader that had gone",
            started.elapsed()
        );
        let (code, err) = into_a_closed_pipe(&["--runtime", rt, "bench", "--duration", "0.5"]);
        assert_eq!(code, Some(0), "{rt} bench: {err}");
        assert!(
            err.is_empty(),
            "{rt} bench: a closed pipe is a quiet end, yet: {err}"
        );
    });
}

/// `ami sim` whose stdout is already closed (`ami sim | head -0`, a unit with stdout
/// closed): no panic; it serves, its address said on stderr.
#[test]
fn sim_with_its_stdout_closed_still_serves() {
    let mut sim = spawn_piped(&["sim"]);
    drop(sim.stdout.take());
    let mut err = std::io::BufReader::new(sim.stderr.take().unwrap());
    let mut said = String::new();
    std::io::BufRead::read_line(&mut err, &mut said).unwrap();
    let running = sim.try_wait().unwrap().is_none();
    let _ = sim.kill();
    let status = sim.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(
        running && said.contains("simulated Asterisk on"),
        "{status:?}: {said}{rest}"
    );
}

/// `ami listen 2>&1 | head -1`, or a stderr logger that died: a stderr whose reader has
/// gone is no reason to end a listener. Its session lost and back (said on stderr, which
/// fails), `listen` goes on printing to its stdout and ends as asked, exit 0, not with a
/// panic (exit 101, its session left without a Logoff).
#[test]
fn listen_with_its_stderr_closed_goes_on_through_a_lost_session() {
    each_runtime(|rt| {
        // The first session is hung up on after 200 ms; the next ones are served.
        let fake = Fake::start(|n, mut c| {
            if c.login(true) {
                if n == 0 {
                    std::thread::sleep(Duration::from_millis(200));
                } else {
                    c.serve(true);
                }
            }
        });
        let mut child = spawn_piped(&[
            "--runtime",
            rt,
            "--server",
            &fake.url(),
            "listen",
            "--duration",
            "2",
        ]);
        drop(child.stderr.take());
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = child.wait().unwrap();
        let ready = out.lines().filter(|l| json(l)["state"] == "ready").count();
        assert_eq!(status.code(), Some(0), "{rt}: {out}");
        assert!(ready >= 2, "{rt}: the session came back: {out}");
    });
}

/// `ami sim ARGS` refuses to start (exit 2), saying `why` on stderr.
fn assert_sim_refuses(args: &[&str], why: &str) {
    let mut all = vec!["sim"];
    all.extend_from_slice(args);
    let out = ami(&all);
    assert_code(&out, 2, "sim");
    assert!(stderr(&out).contains(why), "{}", stderr(&out));
}

/// Starts `ami sim SIM_ARGS`, runs `ami listen --event EVENT --duration SECS` against it,
/// stops it; the listen's output, which must have exited 0.
fn listen_to_sim(sim_args: &[&str], event: &str, secs: &str) -> std::process::Output {
    let (mut sim, url) = spawn_sim(sim_args);
    let out = ami(&[
        "--server",
        &url,
        "listen",
        "--event",
        event,
        "--duration",
        secs,
    ]);
    sim.kill().unwrap();
    sim.wait().unwrap();
    assert_code(&out, 0, "listen");
    out
}

#[test]
fn the_standalone_simulator_places_calls_at_the_asked_rate_and_refuses_more_than_it_holds() {
    assert_sim_refuses(
        &["--calls-per-s", "100", "--call-secs", "60"],
        "keeps about 6000 calls up",
    );
    let out = listen_to_sim(&["--calls-per-s", "20", "--call-secs", "1"], "Hangup", "3");
    // Calls of a second each, twenty a second: both channels of every call that ended in
    // the window hang up, each under its own caller ID.
    let callers: std::collections::BTreeSet<String> = stdout_lines(&out)
        .iter()
        .map(|l| json(l))
        .filter(|v| v["type"] == "event")
        .map(|v| {
            header(&v, "CallerIDNum")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(callers.len() >= 10, "{callers:?}");
    assert!(callers.iter().all(|c| c.starts_with("555")), "{callers:?}");
}

#[test]
fn the_standalone_simulator_sends_its_calls_where_asked_and_refuses_an_unknown_extension() {
    assert_sim_refuses(
        &["--calls-per-s", "1", "--call-exten", "nope"],
        "not in the simulated dialplan (one of 100, 101, burst",
    );
    let out = listen_to_sim(
        &["--calls-per-s", "4", "--call-exten", "queue"],
        "QueueCallerJoin",
        "2",
    );
    let joins = stdout_lines(&out)
        .iter()
        .filter(|l| json(l)["type"] == "event")
        .count();
    assert!(joins >= 3, "{joins} callers joined the queue in 2 s");
}

#[test]
fn the_standalone_simulator_accepts_the_users_it_is_given() {
    let (mut sim, url) = spawn_sim(&["--user", "dialer:d1@l:er"]);
    let port = url.rsplit(':').next().unwrap().to_string();
    let theirs = ami(&[
        "--server",
        &format!("ami://dialer:d1%40l%3Aer@127.0.0.1:{port}"),
        "action",
        "Ping",
    ]);
    let wrong = ami(&[
        "--server",
        &format!("ami://dialer:nope@127.0.0.1:{port}"),
        "action",
        "Ping",
    ]);
    // The built-in user stays.
    let admin = ami(&["--server", &url, "action", "Ping"]);
    sim.kill().unwrap();
    sim.wait().unwrap();
    assert_code(&theirs, 0, "dialer");
    assert_code(&wrong, 3, "wrong secret");
    assert_code(&admin, 0, "admin");
}

#[test]
fn calls_are_printed_oldest_first_though_their_linkedids_sort_otherwise_as_text() {
    let (mut sim, url) = spawn_sim(&["--calls-per-s", "20", "--call-secs", "30"]);
    // Past call 5, whose Linkedid sequence (1796...10) sorts before call 2's (...4) as text.
    std::thread::sleep(Duration::from_millis(1500));
    let out = ami(&["--server", &url, "calls"]);
    sim.kill().unwrap();
    sim.wait().unwrap();
    assert_code(&out, 0, "calls");
    let order: Vec<(u64, u64)> = stdout_lines(&out)
        .iter()
        .map(|l| {
            let id = json(l)["linkedid"].as_str().unwrap().to_string();
            let (epoch, seq) = id.split_once('.').unwrap();
            (epoch.parse().unwrap(), seq.parse().unwrap())
        })
        .collect();
    assert!(order.len() >= 10, "{order:?}");
    assert!(order.iter().any(|(_, seq)| *seq >= 10), "{order:?}");
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

/// The tests' guard on a spawned `ami`: dropped (a test that fails or panics before it waits
/// for its child), it kills the process and reaps it, so no `ami sim`, `listen` or `bridge`
/// outlives its test, not even as a zombie.
#[cfg(target_os = "linux")]
#[test]
fn a_spawned_ami_is_killed_and_reaped_when_its_guard_is_dropped() {
    let (sim, url) = spawn_sim(&[]);
    assert!(url.starts_with("ami://"), "{url}");
    let proc_dir = std::path::PathBuf::from(format!("/proc/{}", sim.id()));
    assert!(proc_dir.exists(), "the simulator runs");
    let panicked = std::thread::spawn(move || {
        let _sim = sim;
        panic!("a test failing with its child running");
    })
    .join();
    assert!(panicked.is_err());
    // Reaped: its /proc entry is gone (a zombie keeps one until its parent waits).
    assert!(
        !proc_dir.exists(),
        "still there after its guard was dropped"
    );
}
