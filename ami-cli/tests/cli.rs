//! The `ami` binary end to end: real process, real loopback sockets, the simulator's TCP
//! front as the server. Exit codes: 0 ok, 2 usage, 3 connect/login, 4 server error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use std::process::{Command, Output};

fn ami(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ami"))
        .args(args)
        .env_remove("AMI_URL")
        .output()
        .expect("run ami")
}

fn url(front: &TcpFront, secret: &str) -> String {
    format!("ami://admin:{secret}@{}", front.local_addr())
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn action_prints_the_response_as_json_and_exits_zero_on_both_runtimes() {
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    for runtime in ["tokio", "mio", "async-std"] {
        let out = ami(&[
            "--server",
            &url(&front, "amp111"),
            "--runtime",
            runtime,
            "action",
            "Ping",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{runtime}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let l = lines(&out);
        assert_eq!(l.len(), 1);
        assert!(
            l[0].starts_with(
                r#"{"type":"response","headers":[["Response","Success"],["ActionID","#
            ),
            "{}",
            l[0]
        );
        assert!(l[0].contains(r#"["Ping","Pong"]"#));
    }
}

#[test]
fn list_action_prints_response_then_each_item_then_complete() {
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let out = ami(&["--server", &url(&front, "amp111"), "action", "QueueStatus"]);
    assert_eq!(out.status.code(), Some(0));
    let l = lines(&out);
    assert!(l[0].contains(r#"["EventList","start"]"#), "{}", l[0]);
    let last = l.last().unwrap();
    assert!(
        last.contains(r#"["Event","QueueStatusComplete"]"#),
        "{last}"
    );
}

#[test]
fn wrong_password_exits_3_with_one_line_and_no_retry() {
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    let out = ami(&["--server", &url(&front, "wrong"), "action", "Ping"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("Authentication failed"), "{err}");
    assert!(!err.contains("wrong"), "the secret is not printed: {err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        front.stats().sessions_accepted,
        1,
        "no retry loop on a rejected password"
    );
}

#[test]
fn unreachable_server_exits_3() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = ami(&[
        "--server",
        &format!("ami://a:b@127.0.0.1:{port}"),
        "action",
        "Ping",
    ]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn server_error_exits_4_and_still_prints_the_response() {
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let out = ami(&[
        "--server",
        &url(&front, "amp111"),
        "action",
        "Status",
        "Channel=SIP/nope-1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lines(&out)[0].contains(r#"["Response","Error"]"#));
}

#[test]
fn originate_prints_the_originate_response() {
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let out = ami(&[
        "--server",
        &url(&front, "amp111"),
        "originate",
        "--channel",
        "Local/echo@ami-test",
        "--application",
        "Wait",
        "--data",
        "1",
        "--var",
        "A=1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = lines(&out);
    assert!(
        l[0].starts_with(r#"{"type":"event","headers":[["Event","OriginateResponse"]"#),
        "{}",
        l[0]
    );
    let busy = ami(&[
        "--server",
        &url(&front, "amp111"),
        "originate",
        "--channel",
        "Local/busy@ami-test",
        "--application",
        "Wait",
    ]);
    assert_eq!(busy.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("Reason 5"));
}

#[test]
fn listen_streams_events_as_json_lines_until_count() {
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let u = url(&front, "amp111");
    let child = std::thread::spawn(move || {
        ami(&[
            "--server",
            &u,
            "listen",
            "--count",
            "5",
            "--event",
            "UserEvent",
            "--duration",
            "10",
        ])
    });
    // Keep emitting until the listener has what it wants.
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        front.with_server(|s, now| s.emit_user_events(now, 3));
        if child.is_finished() {
            break;
        }
    }
    let out = child.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = lines(&out);
    assert_eq!(l.len(), 5);
    assert!(l.iter().all(|x| x.contains(r#"["Event","UserEvent"]"#)));
}

#[test]
fn decode_prints_every_message_of_a_capture() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/asterisk-22.10.1/originate_async.raw"
    );
    let out = ami(&["decode", file]);
    assert_eq!(out.status.code(), Some(0));
    let l = lines(&out);
    let raw = std::fs::read(file).unwrap();
    let blocks = raw.windows(4).filter(|w| w == b"\r\n\r\n").count();
    assert_eq!(l.len(), blocks, "one JSON object per message");
    assert!(l
        .iter()
        .all(|x| x.starts_with(r#"{"type":""#) && x.ends_with("]}")));
}

#[test]
fn decode_typed_prints_typed_events_and_reports_fields_that_do_not_parse() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/asterisk-22.10.1/originate_async.raw"
    );
    let out = ami(&["decode", "--typed", file]);
    assert_eq!(out.status.code(), Some(0));
    let hangup = lines(&out)
        .into_iter()
        .find(|l| l.contains(r#""event":"Hangup""#))
        .expect("a Hangup line");
    assert!(hangup.contains(r#""known":true"#), "{hangup}");
    let cause = hangup.split(r#""Cause":"#).nth(1).unwrap_or("");
    assert!(
        cause.starts_with(|c: char| c.is_ascii_digit()),
        "an integer, not a string: {hangup}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"Hangup: Cause: "soon" is not integer"#),
        "{err}"
    );
    assert!(err.contains("1 fields did not parse"), "{err}");
    assert!(lines(&out)[0].contains(r#""Cause":"soon""#), "kept as sent");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(ami(&["action"]).status.code(), Some(2));
    assert_eq!(
        ami(&["--server", "http://x", "action", "Ping"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        ami(&["action", "Ping"]).status.code(),
        Some(2),
        "no server given"
    );
    // async-std is a real runtime now: its action works, and what it lacks is refused.
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let out = ami(&[
        "--server",
        &url(&front, "amp111"),
        "--runtime",
        "async-std",
        "action",
        "Ping",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lines(&out)[0].contains(r#"["Ping","Pong"]"#));
    let out = ami(&["--runtime", "async-std", "bench", "--duration", "0.5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokio"));
    let out = ami(&[
        "--server",
        "amis://a:b@127.0.0.1:1",
        "--runtime",
        "async-std",
        "action",
        "Ping",
    ]);
    assert_eq!(out.status.code(), Some(2), "no TLS on async-std");
}

#[test]
fn async_std_runtime_runs_originate_listen_and_refuses_a_wrong_password() {
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let u = url(&front, "amp111");
    let originate = |exten: &str| {
        ami(&[
            "--server",
            &u,
            "--runtime",
            "async-std",
            "originate",
            "--channel",
            &format!("Local/{exten}@ami-test"),
            "--application",
            "Wait",
            "--data",
            "1",
        ])
    };
    let ok = originate("echo");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        lines(&ok)[0].starts_with(r#"{"type":"event","headers":[["Event","OriginateResponse"]"#)
    );
    let busy = originate("busy");
    assert_eq!(busy.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("Reason 5"));

    let listen_url = u.clone();
    let child = std::thread::spawn(move || {
        ami(&[
            "--server",
            &listen_url,
            "--runtime",
            "async-std",
            "listen",
            "--count",
            "3",
            "--event",
            "UserEvent",
            "--duration",
            "10",
        ])
    });
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        front.with_server(|s, now| s.emit_user_events(now, 3));
        if child.is_finished() {
            break;
        }
    }
    let out = child.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = lines(&out);
    assert_eq!(l.len(), 3);
    assert!(l.iter().all(|x| x.contains(r#"["Event","UserEvent"]"#)));

    let before = front.stats().sessions_accepted;
    let wrong = ami(&[
        "--server",
        &url(&front, "wrong"),
        "--runtime",
        "async-std",
        "action",
        "Ping",
    ]);
    assert_eq!(wrong.status.code(), Some(3));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("Authentication failed"), "{err}");
    assert_eq!(front.stats().sessions_accepted, before + 1, "no retry loop");
}

#[test]
fn demo_runs_without_a_server() {
    let out = ami(&["demo", "--duration", "1.5"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("logged in"));
    assert!(text.contains("done:"));
}

const RUNTIMES: [&str; 3] = ["tokio", "mio", "async-std"];

fn ami_env(args: &[&str], ami_url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ami"))
        .args(args)
        .env("AMI_URL", ami_url)
        .output()
        .expect("run ami")
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
        for out in [
            ami(&["--server", url, "action", "Ping"]),
            ami_env(&["action", "Ping"], url),
        ] {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{url}: {err}");
            assert!(err.contains(words), "{url}: {err}");
            assert!(!err.contains("S3cr3t"), "{url}: the secret leaked: {err}");
        }
    }
}

/// A listener that only counts who connects.
fn silent_listener() -> std::net::TcpListener {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

fn was_contacted(l: &std::net::TcpListener) -> bool {
    l.accept().is_ok()
}

#[test]
fn invalid_actions_are_refused_before_any_connection_on_every_runtime() {
    let listener = silent_listener();
    let server = format!("ami://a:b@{}", listener.local_addr().unwrap());
    let long = format!("Foo={}", "x".repeat(1100));
    let bad: [&[&str]; 5] = [
        &["action", "Ping", "Foo=bar\r\nAction: Originate"],
        &["action", "Ping", "Bad Name=1"],
        &["action", "Ping", &long],
        &["action", "Ping", "NoEqualsSign"],
        &[
            "originate",
            "--channel",
            "Local/1@x\n",
            "--application",
            "Wait",
        ],
    ];
    for runtime in RUNTIMES {
        for args in bad {
            let mut all = vec!["--server", server.as_str(), "--runtime", runtime];
            all.extend_from_slice(args);
            let out = ami(&all);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{runtime} {args:?}: {err}");
            assert!(!was_contacted(&listener), "{runtime} {args:?} connected");
        }
    }
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
