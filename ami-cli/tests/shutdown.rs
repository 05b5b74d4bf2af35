//! How `ami listen` ends (`--duration`; Ctrl-C and SIGTERM end it the same way): the Logoff
//! keeps every event the server wrote before its Goodbye, and the whole end fits in the one
//! 2 s grace, a stdout nobody drains included, its unwritten events counted on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::tcp::TcpFront;
use serde_json::Value;
use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// Waits until the simulator has closed every session (the Logoff's Goodbye written).
fn sessions_closed(front: &TcpFront, what: &str) {
    let wait = Instant::now() + Duration::from_secs(5);
    while front.stats().sessions_open > 0 {
        assert!(Instant::now() < wait, "{what}: a session stayed open");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lines of the server named `name` (all of them with one server: no line names one).
fn of_server(lines: &[String], name: &str, servers: usize) -> Vec<Value> {
    lines
        .iter()
        .map(|l| json(l))
        .filter(|v| servers == 1 || v["server"] == name)
        .collect()
}

/// The sum of the counts in stderr's lines about lost events: `events not printed`
/// (stdout's queue) and `events dropped` (the client's).
fn said_lost(err: &str) -> u64 {
    err.lines()
        .filter(|l| l.contains("events not printed") || l.contains("events dropped"))
        .map(|l| {
            let after = l.split("gap: ").nth(1).unwrap_or_else(|| panic!("{l}"));
            after
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .sum()
}

/// `ami --runtime RT --server URL... listen --event UserEvent --duration 1`, its stdout
/// drained all along: (exit status, stderr, stdout's lines).
fn listen_one_second(rt: &str, urls: &[String]) -> (std::process::ExitStatus, String, Vec<String>) {
    let mut args = vec!["--runtime", rt];
    for u in urls {
        args.extend(["--server", u.as_str()]);
    }
    args.extend(["listen", "--event", "UserEvent", "--duration", "1"]);
    let mut child = spawn_piped(&args);
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map(Result::unwrap)
            .collect::<Vec<String>>()
    });
    let status = child.wait().unwrap();
    let err = stderr_of(&mut child);
    (status, err, reader.join().unwrap())
}

/// `listen --duration 1` against a server that writes events all along, its Logoff
/// included: every event the simulator delivered to the session before its Goodbye is
/// printed or counted by a gap line, and the session's last line is its `lost` line (logged
/// off), with one server and with two (the fleet's path), on every runtime.
#[test]
fn listen_duration_prints_every_event_the_server_wrote_before_its_goodbye() {
    each_runtime(|rt| {
        for servers in [1, 2] {
            let what = format!("{rt}, {servers} server(s)");
            let front = Arc::new(sim());
            let quiet = sim();
            let stop = Arc::new(AtomicBool::new(false));
            let feeder = feed_user_events(&front, &stop, 50);
            let url = sim_url(&front, "amp111");
            let quiet_url = sim_url(&quiet, "amp111");
            let urls = [url, quiet_url];
            let (status, err, lines) = listen_one_second(rt, &urls[..servers]);
            stop.store(true, Ordering::Relaxed);
            feeder.join().unwrap();
            assert_eq!(status.code(), Some(0), "{what}: {err}");
            sessions_closed(&front, &what);
            let delivered = front.stats().events_delivered;
            let mine = of_server(&lines, &front.local_addr().to_string(), servers);
            let (printed, dropped) = account_for_every_seq(mine.iter());
            // Some events, not a number of them: on a loaded machine the login and the
            // feeder share the one second (a run under load 7 printed under 100).
            assert!(printed > 0, "{what}: {printed} events printed");
            assert_eq!(
                printed + dropped,
                delivered,
                "{what}: {printed} printed and {dropped} in gap lines of {delivered} the \
                 server wrote; stderr: {err}"
            );
            let last = mine.last().unwrap();
            assert_eq!(
                (&last["type"], &last["state"]),
                (&Value::from("session"), &Value::from("lost")),
                "{what}: the last line is {last}"
            );
            assert!(
                last["reason"].as_str().unwrap().contains("logged off"),
                "{what}: {last}"
            );
        }
    });
}

/// `listen --duration 1` into a pipe nobody reads until it has exited: it ends within
/// 1 s + the 2 s grace (not the grace twice), exit 0, and the events it could not write
/// are counted on stderr as `events not printed`, so that the lines the pipe got plus that
/// count are every event the server delivered.
#[test]
fn listen_into_a_stdout_nobody_drains_ends_within_the_grace_and_counts_what_it_did_not_print() {
    each_runtime(|rt| {
        let front = Arc::new(sim());
        let stop = Arc::new(AtomicBool::new(false));
        let feeder = feed_user_events(&front, &stop, 50);
        let url = sim_url(&front, "amp111");
        let started = Instant::now();
        let mut child = spawn_piped(&[
            "--runtime",
            rt,
            "--server",
            &url,
            "listen",
            "--event",
            "UserEvent",
            "--duration",
            "1",
        ]);
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            stderr.read_to_string(&mut s).unwrap();
            s
        });
        let status = child.wait().unwrap();
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        feeder.join().unwrap();
        let err = stderr.join().unwrap();
        // Only now is stdout read: what the pipe held when the command ended.
        let out = read_stdout(&mut child);
        assert_eq!(status.code(), Some(0), "{rt}: {err}");
        assert!(
            took < Duration::from_secs(1) + LOGOFF_GRACE + Duration::from_secs(1),
            "{rt}: took {took:?}; {err}"
        );
        assert!(!err.contains("bytes of output"), "{rt}: {err}");
        sessions_closed(&front, rt);
        let delivered = front.stats().events_delivered;
        let lines: Vec<String> = out.lines().map(str::to_owned).collect();
        // Every gap line is said on stderr too: the events printed and those stderr counts
        // are every event.
        let (printed, _) = account_for_every_seq(of_server(&lines, "", 1).iter());
        let lost = said_lost(&err);
        assert!(err.contains("events not printed"), "{rt}: {err}");
        assert!(lost > 1000, "{rt}: {lost} lost; {err}");
        assert_eq!(
            printed + lost,
            delivered,
            "{rt}: {printed} printed, {lost} said lost on stderr, of {delivered}; \
             stderr: {err}"
        );
    });
}

/// A server that writes events after the Logoff but never answers it (a hung or
/// slow Asterisk): the Logoff takes the whole grace, and the events it gathered meanwhile
/// are handed to the printer only then, with no grace left: a stdout that drains at once
/// still gets none of them, and they are said "not printed".
#[test]
fn events_gathered_during_an_unanswered_logoff_reach_a_draining_stdout() {
    each_runtime(|rt| {
        let mut failures = Vec::new();
        for servers in [1usize, 2] {
            let fakes: Vec<Fake> = (0..servers).map(|_| hung_logoff_fake()).collect();
            let urls: Vec<String> = fakes.iter().map(Fake::url).collect();
            let (status, err, lines) = listen_one_second(rt, &urls);
            let printed = lines.iter().filter(|l| l.contains("\"UserEvent\"")).count();
            assert_eq!(status.code(), Some(0), "{rt}: {err}");
            if printed != N * servers {
                failures.push(format!(
                    "{rt}, {servers} server(s): {printed} of the {} events received during \
                     the Logoff printed to a stdout that drains; stderr: {}",
                    N * servers,
                    err.trim_end().replace('\n', " | ")
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    });
}

const N: usize = 2000;

/// Logs in, answers Ping; on Logoff writes `N` UserEvents and never says Goodbye.
fn hung_logoff_fake() -> Fake {
    Fake::start(|_, mut conn| {
        if !conn.login(true) {
            return;
        }
        while let Some(req) = conn.next() {
            match req.action().as_str() {
                "ping" => conn.answer(&req, "Success", &[("Ping", "Pong")]),
                "logoff" => {
                    let mut burst = String::new();
                    for i in 0..N {
                        burst += &format!(
                            "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: T\r\nSeq: {i}\r\n\r\n"
                        );
                    }
                    let _ = conn.send(burst.as_bytes());
                    // No Goodbye: the connection stays open past the grace.
                    std::thread::sleep(Duration::from_secs(6));
                    return;
                }
                _ => conn.answer(&req, "Success", &[]),
            }
        }
    })
}

/// Logs in and answers every action as an empty list or a plain Success (its `Status` and
/// `CoreShowChannels` snapshots included), but never the Logoff: a hung Asterisk at the end.
fn never_says_goodbye() -> Fake {
    Fake::start(|_, mut conn| {
        if !conn.login(true) {
            return;
        }
        while let Some(req) = conn.next() {
            let action = req.action();
            let id = req.get("ActionID").unwrap_or("").to_string();
            match action.as_str() {
                "logoff" => {}
                "status" | "coreshowchannels" => {
                    let complete = if action == "status" {
                        "StatusComplete"
                    } else {
                        "CoreShowChannelsComplete"
                    };
                    let _ = conn.send(
                        format!(
                            "Response: Success\r\nActionID: {id}\r\nEventList: start\r\n\
                             Message: List follows\r\n\r\nEvent: {complete}\r\nActionID: {id}\r\n\
                             EventList: Complete\r\nListItems: 0\r\nItems: 0\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                }
                _ => conn.answer(&req, "Success", &[]),
            }
        }
    })
}

/// SIGTERM to `listen` and to `calls --watch` once they run, one server or two of which one
/// never answers the Logoff: the command ends within the Logoff's grace (plus two seconds
/// for a loaded machine), exit 0, its stdout whole JSON lines.
#[test]
fn a_stop_signal_ends_listen_and_calls_watch_within_the_grace_when_a_server_never_says_goodbye() {
    each_runtime(|rt| {
        for servers in [1usize, 2] {
            let hung = never_says_goodbye();
            let front = sim();
            let mut urls = vec![hung.url()];
            if servers == 2 {
                urls.push(sim_url(&front, "amp111"));
            }
            for command in [&["listen"][..], &["calls", "--watch"][..]] {
                let what = format!("{rt}, {servers} server(s), {}", command.join(" "));
                let mut args = vec!["--runtime", rt];
                for u in &urls {
                    args.extend(["--server", u.as_str()]);
                }
                args.extend_from_slice(command);
                let mut child = spawn_piped(&args);
                let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
                let mut first = String::new();
                assert!(
                    stdout.read_line(&mut first).unwrap() > 0,
                    "{what}: no output"
                );
                // Every server up: `listen` says each session; `calls` has its view.
                std::thread::sleep(Duration::from_millis(300));
                let signalled = Instant::now();
                send_signal(&child, "TERM");
                let mut rest = String::new();
                stdout.read_to_string(&mut rest).unwrap();
                let status = child.wait().unwrap();
                let took = signalled.elapsed();
                let err = stderr_of(&mut child);
                assert_eq!(status.code(), Some(0), "{what}: {err}");
                assert!(
                    took < LOGOFF_GRACE + Duration::from_secs(2),
                    "{what}: took {took:?} after SIGTERM; {err}"
                );
                for line in std::iter::once(first.as_str()).chain(rest.lines()) {
                    json(line);
                }
            }
        }
    });
}

/// A server whose first session logs in and is hung up on after 200 ms, and which then
/// closes every later connection unanswered: a client that logged in once and now waits
/// between reconnects.
fn gone_after_one_session() -> Fake {
    Fake::start(|n, mut conn| {
        if n == 0 && conn.login(true) {
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// SIGTERM while `listen` or `calls --watch` waits to reconnect (its one server, or one of
/// two, gone after a first session): the command ends promptly (within 3 s on a loaded
/// machine; the backoff is short by then, so this proves the stop is not lost while the
/// client waits, not the speed), exit 0 (it had logged in), its stdout whole JSON lines.
#[test]
fn a_stop_signal_while_waiting_to_reconnect_ends_listen_and_calls_watch_at_once() {
    each_runtime(|rt| {
        for servers in [1usize, 2] {
            let front = sim();
            for command in [&["listen"][..], &["calls", "--watch"][..]] {
                let gone = gone_after_one_session();
                let mut urls = vec![gone.url()];
                if servers == 2 {
                    urls.push(sim_url(&front, "amp111"));
                }
                let what = format!("{rt}, {servers} server(s), {}", command.join(" "));
                let mut args = vec!["--runtime", rt];
                for u in &urls {
                    args.extend(["--server", u.as_str()]);
                }
                args.extend_from_slice(command);
                let mut child = spawn_piped(&args);
                let stdout = child.stdout.take().unwrap();
                let reader = std::thread::spawn(move || {
                    let mut s = String::new();
                    std::io::BufReader::new(stdout)
                        .read_to_string(&mut s)
                        .unwrap();
                    s
                });
                // The session is lost after 200 ms; the reconnects fail from then on.
                let wait = Instant::now() + Duration::from_secs(10);
                while gone.accepted() < 3 {
                    assert!(Instant::now() < wait, "{what}: no reconnects");
                    std::thread::sleep(Duration::from_millis(10));
                }
                let signalled = Instant::now();
                send_signal(&child, "TERM");
                let status = child.wait().unwrap();
                let took = signalled.elapsed();
                let err = stderr_of(&mut child);
                let out = reader.join().unwrap();
                assert_eq!(status.code(), Some(0), "{what}: {err}");
                assert!(
                    took < Duration::from_secs(3),
                    "{what}: took {took:?} after SIGTERM; {err}"
                );
                for line in out.lines() {
                    json(line);
                }
            }
        }
    });
}

/// README "Exit codes": Ctrl-C, SIGTERM or SIGHUP ends `listen` and `calls --watch` with a
/// Logoff; "a second one ends the process at once (exit 130)". Here the server never
/// answers the Logoff, so the first SIGTERM leaves the command in its 2 s grace, where the
/// second one must end it with 130 instead of the clean stop's 0.
#[test]
fn a_second_stop_signal_during_the_logoff_ends_listen_and_calls_watch_with_exit_130() {
    each_runtime(|rt| {
        let hung = never_says_goodbye();
        let url = hung.url();
        for command in [&["listen"][..], &["calls", "--watch"][..]] {
            let what = format!("{rt}, {}", command.join(" "));
            let mut args = vec!["--runtime", rt, "--server", url.as_str()];
            args.extend_from_slice(command);
            let mut child = spawn_piped(&args);
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut first = String::new();
            assert!(
                stdout.read_line(&mut first).unwrap() > 0,
                "{what}: no output"
            );
            send_signal(&child, "TERM");
            // Inside the grace the Logoff waits for a Goodbye that never comes.
            std::thread::sleep(Duration::from_millis(300));
            send_signal(&child, "TERM");
            let mut rest = String::new();
            stdout.read_to_string(&mut rest).unwrap();
            let status = child.wait().unwrap();
            let err = stderr_of(&mut child);
            assert_eq!(status.code(), Some(130), "{what}: {err}");
        }
    });
}
