//! `ami` with several servers, end to end over loopback against several simulator fronts:
//! `listen` merges them with a `"server"` on every line and says on stderr when one goes
//! down and comes back; `action --on NAME|all`; AMI_URL with commas; `ami sim` standalone.
//! Each scenario with several servers runs on every runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::tcp::TcpFront;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use support::*;

fn url(front: &TcpFront) -> String {
    format!("ami://admin:amp111@{}", front.local_addr())
}

#[test]
fn listen_merges_servers_names_each_line_and_reports_a_restart_on_stderr() {
    each_runtime(listen_merges_on);
}

fn listen_merges_on(rt: &str) {
    let (a, b) = (sim(), sim());
    let (name_a, name_b) = (a.local_addr().to_string(), b.local_addr().to_string());
    let child = spawn_piped(&[
        "--runtime",
        rt,
        "--server",
        &url(&a),
        "--server",
        &url(&b),
        "listen",
        "--duration",
        "6",
    ]);
    // Both logged in, then B restarts while A keeps streaming.
    std::thread::sleep(Duration::from_millis(1200));
    a.with_server(|s, now| s.emit_user_events(now, 5));
    let logins = b.stats().logins;
    b.restart(Duration::from_millis(300));
    // B's second storm only reaches a session logged in again: wait for it (on a loaded
    // machine the reconnect can take longer than a fixed sleep allowed).
    let back = std::time::Instant::now();
    while b.stats().logins == logins && back.elapsed() < Duration::from_millis(3500) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    a.with_server(|s, now| s.emit_user_events(now, 5));
    b.with_server(|s, now| s.emit_user_events(now, 7));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut storms: HashMap<String, usize> = HashMap::new();
    let mut ready: HashMap<String, usize> = HashMap::new();
    for line in stdout_lines(&out) {
        let v = json(&line);
        let server = v["server"]
            .as_str()
            .unwrap_or_else(|| panic!("no server: {line}"));
        assert!(server == name_a || server == name_b, "{line}");
        if v["type"] == "session" && v["state"] == "ready" {
            *ready.entry(server.to_string()).or_default() += 1;
        }
        if line.contains("SimStorm") {
            *storms.entry(server.to_string()).or_default() += 1;
        }
    }
    assert_eq!(storms.get(&name_a), Some(&10), "{storms:?}");
    assert_eq!(storms.get(&name_b), Some(&7), "{storms:?}");
    assert_eq!(ready.get(&name_a), Some(&1), "{ready:?}");
    assert_eq!(
        ready.get(&name_b),
        Some(&2),
        "B's second session: {ready:?}"
    );
    let err = stderr(&out);
    let down = err.find(&format!("ami: {name_b}: down"));
    let back = err.find(&format!("ami: {name_b}: back"));
    assert!(
        matches!((down, back), (Some(d), Some(k)) if d < k),
        "one line when B went down, one when it came back:\n{err}"
    );
    assert!(!err.contains(&format!("ami: {name_a}: down")), "{err}");
    assert_eq!(
        err.matches(&format!("ami: {name_b}: down")).count(),
        1,
        "one line per outage, not per reconnect attempt:\n{err}"
    );
}

#[test]
fn listen_exits_3_once_every_server_has_refused_the_login() {
    let (a, b) = (sim(), sim());
    let wrong = |f: &TcpFront| format!("ami://admin:wrong@{}", f.local_addr());
    each_runtime(|rt| {
        // Without the fix this listened until --duration ran out, then exited 0.
        let out = ami(&[
            "--runtime",
            rt,
            "--server",
            &wrong(&a),
            "--server",
            &wrong(&b),
            "listen",
            "--duration",
            "60",
        ]);
        assert_eq!(out.status.code(), Some(3), "{rt}: {}", stderr(&out));
        let err = stderr(&out);
        for f in [&a, &b] {
            assert!(err.contains(&f.local_addr().to_string()), "{rt}: {err}");
        }
        assert!(!err.contains("wrong"), "{rt}: the secret leaked: {err}");
    });
}

#[test]
fn listen_exits_3_at_the_end_when_one_server_refused_the_login() {
    let (good, bad) = (sim(), sim());
    let bad_url = format!("ami://admin:wrong@{}", bad.local_addr());
    each_runtime(|rt| {
        let out = on_servers(rt, &[&url(&good), &bad_url], &["listen", "--duration", "2"]);
        assert_eq!(out.status.code(), Some(3), "{rt}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&bad.local_addr().to_string()),
            "{rt}: {}",
            stderr(&out)
        );
        assert!(
            stdout_lines(&out).iter().any(|l| l.contains("ready")),
            "{rt}: the good server streamed"
        );
    });
}

#[test]
fn action_on_all_answers_from_the_servers_up_and_exits_3_naming_the_one_down() {
    let good = sim();
    let (_refusing, port) = refused_port();
    let down = format!("ami://admin:amp111@127.0.0.1:{port}");
    let down_name = down.trim_start_matches("ami://admin:amp111@").to_string();
    each_runtime(|rt| {
        let out = on_servers(
            rt,
            &[&url(&good), &down],
            &["action", "Ping", "--on", "all"],
        );
        assert_eq!(out.status.code(), Some(3), "{rt}: {}", stderr(&out));
        let lines = stdout_lines(&out);
        assert_eq!(lines.len(), 1, "{rt}: {lines:?}");
        assert_eq!(json(&lines[0])["server"], good.local_addr().to_string());
        // Its reason once, then a summary that names it without repeating the reason.
        let err = stderr(&out);
        assert_eq!(err.matches("not connected").count(), 1, "{rt}: {err}");
        assert!(
            err.contains(&format!("{down_name}: not connected: "))
                && err.contains(&format!("ami: failed on 1 of 2 servers ({down_name})")),
            "{rt}: {err}"
        );
        // The down server alone, by name: the same exit as a single server that is down.
        let out = on_servers(
            rt,
            &[&url(&good), &down],
            &["action", "Ping", "--on", &down_name],
        );
        assert_eq!(out.status.code(), Some(3), "{rt}: {}", stderr(&out));
        assert!(stdout_lines(&out).is_empty(), "{rt}");
    });
}

#[test]
fn action_on_one_server_or_all_and_amiurl_with_commas() {
    each_runtime(action_on);
}

fn action_on(rt: &str) {
    let (a, b) = (sim(), sim());
    let (name_a, name_b) = (a.local_addr().to_string(), b.local_addr().to_string());
    let list = format!("{},{}", url(&a), url(&b));
    let out = command(&["--runtime", rt, "action", "Ping", "--on", "all"])
        .env("AMI_URL", &list)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut servers: Vec<String> = stdout_lines(&out)
        .iter()
        .map(|l| json(l)["server"].as_str().unwrap().to_string())
        .collect();
    servers.sort();
    let mut want = vec![name_a.clone(), name_b.clone()];
    want.sort();
    assert_eq!(servers, want, "one response per server");

    let on_both = |rest: &[&str]| {
        let (ua, ub) = (url(&a), url(&b));
        let mut args = vec!["action", "Ping"];
        args.extend_from_slice(rest);
        on_servers(rt, &[&ua, &ub], &args)
    };
    let out = on_both(&["--on", &name_b]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(json(&lines[0])["server"], name_b.as_str());
    assert_eq!(b.stats().logins, 2);

    let unknown = on_both(&["--on", "x:1"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr(&unknown));
    let no_on = on_both(&[]);
    assert_eq!(no_on.status.code(), Some(2), "{}", stderr(&no_on));
    assert!(stderr(&no_on).contains("--on"), "{}", stderr(&no_on));
}

#[test]
fn ami_sim_serves_on_loopback_and_prints_its_url() {
    let (mut sim, first) = spawn_sim(&["--events-per-s", "200"]);
    let url = first.trim().to_string();
    assert!(url.starts_with("ami://admin:amp111@127.0.0.1:"), "{url}");
    let out = ami(&[
        "--server",
        &url,
        "listen",
        "--event",
        "UserEvent",
        "--count",
        "5",
    ]);
    sim.kill().unwrap();
    sim.wait().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events: Vec<Value> = stdout_lines(&out)
        .iter()
        .map(|l| json(l))
        .filter(|v| v["type"] == "event")
        .collect();
    assert_eq!(events.len(), 5, "{events:?}");
    let refused = ami(&["sim", "--listen", "0.0.0.0:0"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "loopback only: {}",
        stderr(&refused)
    );
}

#[test]
fn ami_sim_at_a_rate_beyond_reach_still_serves_and_says_so() {
    // Everything due was once emitted under one hold of the simulator's lock: at 10^12
    // events/s no client got even the banner.
    let (mut sim, first) = spawn_sim(&["--events-per-s", "1000000000000"]);
    let url = first.trim().to_string();
    let ping = ami(&["--server", &url, "action", "Ping"]);
    // With a reader logged in the simulator cannot render what is due within its budget:
    // the shortfall is said. (It reads slower than the simulator renders, so the simulator
    // also closes it as a slow reader now and then, as Asterisk would; it logs in again.)
    let listen = ami(&[
        "--server",
        &url,
        "listen",
        "--event",
        "NoSuchEvent",
        "--duration",
        "2",
    ]);
    sim.kill().unwrap();
    sim.wait().unwrap();
    let said = stderr_of(&mut sim);
    assert_eq!(ping.status.code(), Some(0), "{}", stderr(&ping));
    assert_eq!(listen.status.code(), Some(0), "{}", stderr(&listen));
    assert!(
        said.contains("cannot render 1000000000000 events/s"),
        "{said}"
    );
}

#[test]
fn bench_with_several_simulated_servers_reports_the_merged_rate() {
    each_runtime(bench_on);
}

fn bench_on(rt: &str) {
    let out = ami(&[
        "--runtime",
        rt,
        "bench",
        "--servers",
        "3",
        "--duration",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 simulated servers"), "{text}");
    let per_server = text.rsplit("per server ").next().unwrap_or("");
    let least: u64 = per_server.split(' ').next().unwrap().parse().unwrap();
    assert!(least > 0, "every server's events got through: {text}");
    let zero = ami(&["bench", "--servers", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
}

/// A server that logs in and queues an async Originate; `answer`: it also sends its
/// OriginateResponse at once, else never (the action then waits for its follow-up deadline,
/// the Originate's `Timeout` plus a margin, which may be later than `action --on`'s limit).
fn originating(answer: bool) -> Fake {
    Fake::start(move |_, mut conn| {
        if !conn.login(true) {
            return;
        }
        while let Some(req) = conn.next() {
            match req.action().as_str() {
                "ping" => conn.answer(&req, "Success", &[("Ping", "Pong")]),
                "logoff" => {
                    conn.answer(&req, "Goodbye", &[("Message", "Thanks for all the fish.")]);
                    return;
                }
                "originate" => {
                    conn.answer(
                        &req,
                        "Success",
                        &[("Message", "Originate successfully queued")],
                    );
                    if answer {
                        let id = req.get("ActionID").unwrap_or("");
                        let ev = format!(
                            "Event: OriginateResponse\r\nActionID: {id}\r\nResponse: Success\r\n\
                             Channel: Local/100@default-1\r\nReason: 4\r\nUniqueid: 1.1\r\n\r\n"
                        );
                        let _ = conn.send(ev.as_bytes());
                    }
                }
                _ => conn.answer(&req, "Error", &[("Message", "Invalid/unknown command")]),
            }
        }
    })
}

#[test]
fn action_on_all_prints_the_replies_in_when_the_limit_passes_and_names_the_silent_server() {
    let (good, silent) = (originating(true), originating(false));
    let (good_name, silent_name) = (good.addr.to_string(), silent.addr.to_string());
    each_runtime(|rt| {
        let started = std::time::Instant::now();
        let out = command(&["--runtime", rt, "--server", &good.url(), "--server"])
            .arg(silent.url())
            .args(["action", "Originate", "Channel=Local/100@default"])
            .args(["Application=Wait", "Data=1", "Async=true", "Timeout=90000"])
            .args(["--on", "all"])
            .env("AMI_TEST_ON_LIMIT_MS", "1500")
            .output()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(1), "{rt}: {}", stderr(&out));
        let lines = stdout_lines(&out);
        assert!(!lines.is_empty(), "{rt}: the reply that came is printed");
        assert!(
            lines
                .iter()
                .all(|l| json(l)["server"] == good_name.as_str()),
            "{rt}: {lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("OriginateResponse")),
            "{rt}: {lines:?}"
        );
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{silent_name}: no reply within 1.5 s")),
            "{rt}: {err}"
        );
        assert!(took < Duration::from_secs(15), "{rt}: took {took:?}");
    });
}

/// A sync Originate: every session's client refuses it before sending (it would block the
/// session), so each server's refusal is a `SendError`, never a reply from Asterisk.
const SYNC_ORIGINATE: [&str; 4] = [
    "action",
    "Originate",
    "Channel=Local/1@x",
    "Application=Wait",
];

#[test]
fn action_on_all_says_each_servers_refusal_and_does_not_exit_0() {
    let (a, b) = (sim(), sim());
    let names = [a.local_addr().to_string(), b.local_addr().to_string()];
    each_runtime(|rt| {
        let mut args = SYNC_ORIGINATE.to_vec();
        args.extend(["--on", "all"]);
        let out = on_servers(rt, &[&url(&a), &url(&b)], &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{rt}: {err}");
        for name in &names {
            assert!(
                err.contains(&format!("ami: {name}: Originate: not sent (the server never saw it): a sync Originate blocks")),
                "{rt}: {err}"
            );
        }
        assert!(err.contains("failed on 2 of 2 servers"), "{rt}: {err}");
    });
}

#[test]
fn action_on_one_server_names_it_once_in_its_refusal() {
    let (a, b) = (sim(), sim());
    let name = b.local_addr().to_string();
    each_runtime(|rt| {
        let mut args = SYNC_ORIGINATE.to_vec();
        args.extend(["--on", &name]);
        let out = on_servers(rt, &[&url(&a), &url(&b)], &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{rt}: {err}");
        // Said as a refusal on that server, like any other of its failures: no
        // "--on NAME: NAME: ..." with the server named twice.
        assert!(
            err.contains(&format!("ami: {name}: Originate: not sent (the server never saw it): a sync Originate blocks")),
            "{rt}: {err}"
        );
        assert!(!err.contains(&format!("{name}: {name}")), "{rt}: {err}");
    });
}
