//! `ami calls` end to end against the simulator's TCP front: once (the live calls from a
//! snapshot, on every runtime) and `--watch` across a server restart (the calls that died
//! with it reported ended while unobserved, without a cause).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::tcp::TcpFront;
use ami_sim::{CallRequest, SimConfig};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;
use support::*;

fn front_with_a_call() -> (TcpFront, String) {
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    front.with_server(|srv, now| {
        srv.originate_call(now, CallRequest::new("Local/hold@ami-test", 60))
    });
    let url = format!("ami://admin:amp111@{}", front.local_addr());
    (front, url)
}

/// `ami --runtime RT calls --watch --duration SECS` against `front` as admin, its output
/// piped.
fn watch(rt: &str, front: &TcpFront, secs: &str) -> Spawned {
    let url = format!("ami://admin:amp111@{}", front.local_addr());
    spawn_piped(&[
        "--runtime",
        rt,
        "--server",
        &url,
        "calls",
        "--watch",
        "--duration",
        secs,
    ])
}

#[test]
fn calls_prints_the_live_calls_from_a_snapshot_on_every_runtime() {
    let (front, url) = front_with_a_call();
    let table: BTreeSet<String> = front
        .with_server(|srv, _| srv.channel_table())
        .into_iter()
        .map(|r| r.uniqueid)
        .collect();
    each_runtime(|rt| {
        let out = on(rt, &url, &["calls"]);
        assert_eq!(out.status.code(), Some(0), "{rt}: {}", stderr(&out));
        let lines = stdout_lines(&out);
        assert_eq!(lines.len(), 1, "{rt}: one call: {lines:?}");
        let call = json(&lines[0]);
        assert_eq!(call["type"], "call");
        let uids: BTreeSet<String> = call["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["uniqueid"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(uids, table, "{rt}");
    });
}

#[test]
fn calls_watch_reports_calls_that_died_in_a_restart_as_ended_unobserved() {
    let (front, url) = front_with_a_call();
    let child = spawn_piped(&["--server", &url, "calls", "--watch", "--duration", "4"]);
    std::thread::sleep(Duration::from_millis(1500));
    front.restart(Duration::from_millis(200));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<Value> = stdout_lines(&out).iter().map(|l| json(l)).collect();
    let kinds: Vec<&str> = lines.iter().map(|v| v["type"].as_str().unwrap()).collect();
    let first_calls = lines
        .iter()
        .find(|v| v["type"] == "calls" && v["stale"] == false);
    assert_eq!(
        first_calls.unwrap()["calls"].as_array().unwrap().len(),
        1,
        "{kinds:?}"
    );
    let ended = lines
        .iter()
        .find(|v| v["type"] == "call_ended")
        .unwrap_or_else(|| panic!("no call_ended: {kinds:?}"));
    assert_eq!(ended["unobserved"], true);
    assert_eq!(ended["cause"], Value::Null, "no cause is made up");
    assert_eq!(ended["end"], "unobserved");
    assert_eq!(ended["duration_s"], Value::Null, "no end time is made up");
    assert!(lines
        .iter()
        .any(|v| v["type"] == "stale" && v["reason"].as_str().unwrap().contains("lost")));
    let last = lines.iter().rev().find(|v| v["type"] == "calls").unwrap();
    assert_eq!(
        last["stale"], false,
        "live again after the restart: {kinds:?}"
    );
    assert_eq!(last["calls"].as_array().unwrap().len(), 0);
}

#[test]
fn calls_watch_stops_cleanly_on_sigterm() {
    use std::io::BufRead;
    let (front, url) = front_with_a_call();
    let mut child = spawn_piped(&["--server", &url, "calls", "--watch"]);
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    // The first live view is out: the command is watching.
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "ended early");
        let v = json(&line);
        if v["type"] == "calls" && v["stale"] == false {
            break;
        }
    }
    let actions = front.stats().actions;
    send_signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        front.stats().actions > actions,
        "a Logoff reached the server"
    );
}

#[test]
fn caller_names_come_out_as_the_caller_set_them_not_as_asterisk_escapes_them() {
    // Asterisk (and the simulator) C-escape CallerIDName in every channel event:
    // `O'Brien? \ Ltd` is `O\'Brien\? \\ Ltd` on the wire.
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    front.with_server(|srv, now| {
        let mut call = CallRequest::new("Local/hold@ami-test", 60);
        call.caller_id = Some(r#""O'Brien? \ Ltd" <100>"#.to_string());
        srv.originate_call(now, call)
    });
    let url = format!("ami://admin:amp111@{}", front.local_addr());
    let out = on("tokio", &url, &["calls"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let call = json(&stdout_lines(&out)[0]);
    let names: Vec<&str> = call["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["caller_id_name"].as_str())
        .collect();
    assert!(names.contains(&r"O'Brien? \ Ltd"), "{names:?}");
}

#[test]
fn calls_watch_into_a_stalled_stdout_keeps_reading_and_catches_up_with_the_newest_view() {
    // A dashboard that stops reading `ami calls --watch` for 3 s while calls come and go,
    // each setting 20 long channel variables (VarSet events: 10 MB or more in all): far more
    // than the pipe and the loopback socket buffers hold, so a session whose thread waits on
    // stdout (on `ami-mio` the thread that reads the socket) stops reading, and the
    // simulator, like Asterisk, drops it as a slow reader after 100 ms.
    use std::io::Read;
    each_runtime(|rt| {
        let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
        for _ in 0..20 {
            front.with_server(|srv, now| {
                srv.originate_call(now, CallRequest::new("Local/hold@ami-test", 60))
            });
        }
        let mut child = watch(rt, &front, "6");
        let mut err = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut v = String::new();
            let _ = err.read_to_string(&mut v);
            v
        });
        std::thread::sleep(Duration::from_millis(500));
        let load_until = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < load_until {
            front.with_server(|srv, now| {
                let mut call = CallRequest::new("Local/echo@ami-test", 1);
                call.variables = (0..20)
                    .map(|i| (format!("CAMPAIGN_DATA_{i}"), "x".repeat(400)))
                    .collect();
                srv.originate_call(now, call);
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        let loaded = front.stats();
        // Only now read stdout.
        let out = read_stdout(&mut child);
        let status = child.wait().unwrap();
        let err = err.join().unwrap();
        assert_eq!(status.code(), Some(0), "{rt}: {err}");
        assert!(
            loaded.events_emitted > 20_000,
            "{rt}: the load was real: {loaded:?}"
        );
        assert_eq!(
            front.stats().slow_reader_closes,
            0,
            "{rt}: the session stopped reading while stdout was stalled: {err}"
        );
        let lines: Vec<Value> = out.lines().map(json).collect();
        assert!(
            !lines
                .iter()
                .any(|v| v["type"] == "stale" && v["reason"].as_str().unwrap().contains("lost")),
            "{rt}: the session was never lost: {err}"
        );
        let last = lines.iter().rev().find(|v| v["type"] == "calls").unwrap();
        assert_eq!(last["stale"], false, "{rt}");
        assert!(
            last["calls"].as_array().unwrap().len() >= 20,
            "{rt}: the long calls are in the newest view"
        );
    });
}

#[test]
fn calls_asks_the_server_only_for_the_classes_the_tracker_reads() {
    // A busy server's UserEvents (like its RTCP reports and queue events) are not even
    // built for the session: the mask is the tracker's (system, call, dialplan).
    each_runtime(|rt| {
        let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
        let child = watch(rt, &front, "3");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while front.stats().logins == 0 {
            assert!(std::time::Instant::now() < deadline, "{rt}: no login");
            std::thread::sleep(Duration::from_millis(10));
        }
        front.with_server(|srv, now| {
            srv.emit_user_events(now, 1000);
            srv.originate_call(now, CallRequest::new("Local/hold@ami-test", 60));
        });
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{rt}: {}", stderr(&out));
        let stats = front.stats();
        assert!(stats.events_emitted > 1000, "{rt}: {stats:?}");
        assert!(
            stats.events_delivered < 100,
            "{rt}: only the call's events: {stats:?}"
        );
        let last = stdout_lines(&out)
            .iter()
            .map(|l| json(l))
            .rfind(|v| v["type"] == "calls")
            .unwrap();
        assert_eq!(last["calls"].as_array().unwrap().len(), 1, "{rt}: {last}");
    });
}

#[test]
fn calls_on_several_servers_shows_each_servers_calls_under_its_name() {
    // Two servers with a call each and a third that refuses connections: once, every
    // line names its server and holds that server's channels; the down server is named on
    // stderr and the exit code says the run was not whole.
    let (a, _) = front_with_a_call();
    let (b, _) = front_with_a_call();
    let (_refusing, port) = refused_port();
    let url = |f: &TcpFront| format!("ami://admin:amp111@{}", f.local_addr());
    let down = format!("ami://admin:amp111@127.0.0.1:{port}");
    let table = |f: &TcpFront| -> BTreeSet<String> {
        f.with_server(|srv, _| srv.channel_table())
            .into_iter()
            .map(|r| r.uniqueid)
            .collect()
    };
    let want = [
        (a.local_addr().to_string(), table(&a)),
        (b.local_addr().to_string(), table(&b)),
    ];
    each_runtime(|rt| {
        let started = std::time::Instant::now();
        let out = on_servers(rt, &[&url(&a), &url(&b)], &["calls"]);
        assert_eq!(out.status.code(), Some(0), "{rt}: {}", stderr(&out));
        // Quiet servers: the snapshots are asked for at once, not when a wait for news that
        // never comes ends at the 15 s deadline.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{rt}: {:?}",
            started.elapsed()
        );
        let lines: Vec<Value> = stdout_lines(&out).iter().map(|l| json(l)).collect();
        assert_eq!(lines.len(), 2, "{rt}: a call on each: {lines:?}");
        for (server, uids) in &want {
            let line = lines
                .iter()
                .find(|v| v["server"] == server.as_str())
                .unwrap_or_else(|| panic!("{rt}: nothing from {server}: {lines:?}"));
            assert_eq!(line["type"], "call");
            let got: BTreeSet<String> = line["channels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["uniqueid"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(&got, uids, "{rt}: {server}");
        }

        let out = on_servers(rt, &[&url(&a), &down], &["calls"]);
        assert_eq!(out.status.code(), Some(3), "{rt}: {}", stderr(&out));
        let lines: Vec<Value> = stdout_lines(&out).iter().map(|l| json(l)).collect();
        assert_eq!(lines.len(), 1, "{rt}: {lines:?}");
        assert_eq!(lines[0]["server"], a.local_addr().to_string());
        let err = stderr(&out);
        // Its reason once, then a summary that names it without repeating the reason.
        assert_eq!(err.matches("not connected").count(), 1, "{rt}: {err}");
        assert!(
            err.contains(&format!("127.0.0.1:{port}: not connected: "))
                && err.contains(&format!(
                    "ami: calls not shown on 1 of 2 servers (127.0.0.1:{port})"
                )),
            "{rt}: {err}"
        );
        assert_eq!(err.lines().count(), 2, "{rt}: {err}");
    });
}

#[test]
fn calls_watch_on_several_servers_follows_each_through_a_restart_of_one() {
    each_runtime(|rt| {
        let (a, url_a) = front_with_a_call();
        let (b, url_b) = front_with_a_call();
        let child = spawn_piped(&[
            "--runtime",
            rt,
            "--server",
            &url_a,
            "--server",
            &url_b,
            "calls",
            "--watch",
            "--duration",
            "4",
        ]);
        std::thread::sleep(Duration::from_millis(1500));
        a.restart(Duration::from_millis(200));
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{rt}: {}", stderr(&out));
        let lines: Vec<Value> = stdout_lines(&out).iter().map(|l| json(l)).collect();
        let (name_a, name_b) = (a.local_addr().to_string(), b.local_addr().to_string());
        let of =
            |name: &str| -> Vec<&Value> { lines.iter().filter(|v| v["server"] == name).collect() };
        assert!(
            lines.iter().all(|v| v["server"].is_string()),
            "every line names its server: {lines:?}"
        );
        let (la, lb) = (of(&name_a), of(&name_b));
        assert!(
            la.iter()
                .any(|v| v["type"] == "call_ended" && v["unobserved"] == true),
            "the restarted server's call ended unobserved: {la:?}"
        );
        let lost =
            |v: &Value| v["type"] == "stale" && v["reason"].as_str().unwrap().contains("lost");
        assert!(la.iter().any(|v| lost(v)), "{la:?}");
        assert!(
            !lb.iter().any(|v| lost(v) || v["type"] == "call_ended"),
            "the other server was not disturbed: {lb:?}"
        );
        let last = |l: &[&Value]| -> Value {
            (*l.iter().rev().find(|v| v["type"] == "calls").unwrap()).clone()
        };
        let (last_a, last_b) = (last(&la), last(&lb));
        assert_eq!(last_a["stale"], false, "{la:?}");
        assert_eq!(last_a["calls"].as_array().unwrap().len(), 0);
        assert_eq!(last_b["stale"], false, "{lb:?}");
        assert_eq!(last_b["calls"].as_array().unwrap().len(), 1);
    });
}
