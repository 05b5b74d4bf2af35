//! `ami bridge` end to end: the binary against a real nats-server (started here on a free
//! 127.0.0.1 port with a temporary store; the test says SKIPPED loudly when nats-server is not
//! installed, `.ci/run` installs it) and two simulator fronts given through AMI_URL with a
//! comma. What the bridge publishes is checked in depth by ami-nats' own tests; here: the
//! command line reaches it (several servers, names, metrics) and Ctrl-C stops it cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A nats-server with JetStream, killed and its store removed on drop.
struct Nats {
    child: Spawned,
    port: u16,
    dir: PathBuf,
}

impl Nats {
    fn start() -> Option<Nats> {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with `extra` arguments (e.g. `--user u --pass p`).
    fn start_with(extra: &[&str]) -> Option<Nats> {
        let bin = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/sbin", "/usr/bin"])
            .map(|d| PathBuf::from(d).join("nats-server"))
            .find(|p| p.is_file());
        let Some(bin) = bin else {
            eprintln!("\n\n!!!!! SKIPPED: nats-server is not installed (apt-get install nats-server); .ci/run installs it !!!!!\n");
            return None;
        };
        // The port was free when picked, and may be taken before nats-server binds it (by
        // another test's listener): a port that accepts is only ours once it says `INFO`,
        // and the server must still be running; otherwise try another port.
        for _ in 0..5 {
            let port = closed_port();
            let dir =
                std::env::temp_dir().join(format!("ami-cli-bridge-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let child = Command::new(&bin)
                .args(extra)
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn_guarded();
            let mut nats = Nats { child, port, dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && nats.child.try_wait().unwrap().is_none() {
                if speaks_nats(port) {
                    return Some(nats);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("nats-server did not start on a free port in 5 tries");
    }
}

/// Whether what listens on `port` is a NATS server (it greets with `INFO`).
fn speaks_nats(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut greeting = [0u8; 5];
    s.read_exact(&mut greeting).is_ok() && &greeting == b"INFO "
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The metrics page, or an empty string while the endpoint is not up.
fn scrape(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut page = String::new();
    let _ = s.read_to_string(&mut page);
    page
}

/// The value of the sample named exactly `sample` (name and labels) on the page.
fn value(page: &str, sample: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

/// Waits until the bridge whose metrics are on `metrics` says both `pbx1` and `pbx2` ready.
fn wait_both_ready(metrics: u16) {
    wait_until(Duration::from_secs(20), "both servers ready", || {
        let page = scrape(metrics);
        ["pbx1", "pbx2"].iter().all(|s| {
            value(
                &page,
                &format!("ami_bridge_server_state{{server=\"{s}\",state=\"ready\"}}"),
            ) == Some(1.0)
        })
    });
}

/// The metrics port from the bridge's "serving through ... metrics on http://ADDR/metrics"
/// line, the stderr read up to it, and the reader for the rest, which stays in the pipe
/// until the end (a few lines: far below a pipe's 64 KiB, and the bridge's log lines never
/// wait on it).
fn metrics_port(
    bridge: &mut std::process::Child,
) -> (u16, String, std::io::BufReader<std::process::ChildStderr>) {
    use std::io::BufRead;
    let mut stderr = std::io::BufReader::new(bridge.stderr.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "ami bridge ended before serving: {said}"
        );
        said.push_str(&line);
        if let Some(rest) = line.split("metrics on http://").nth(1) {
            let addr: std::net::SocketAddr =
                rest.trim().trim_end_matches("/metrics").parse().unwrap();
            return (addr.port(), said, stderr);
        }
    }
}

#[test]
fn bridge_serves_every_server_of_ami_url_and_stops_cleanly_on_ctrl_c() {
    serve_then_stop_on("INT");
}

/// What systemd, Docker and Kubernetes send: the same clean stop (leases released, exit 0),
/// not death by the signal's default action.
#[test]
fn bridge_stops_cleanly_on_sigterm() {
    serve_then_stop_on("TERM");
}

/// SIGHUP (the SSH session of a bridge run in a terminal closed) stops the bridge as SIGTERM
/// does, as it stops `listen`: exit 0 with its lease released, so that a standby serves the
/// server at once, not after the lease's time-to-live (30 s here) as after a kill.
#[test]
fn sighup_stops_the_bridge_cleanly_and_a_standby_takes_its_lease_at_once() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(nats) = Nats::start() else { return };
    let a = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let nats_url = format!("nats://127.0.0.1:{}", nats.port);
    let spawn = || {
        command(&[
            "bridge",
            "--nats",
            &nats_url,
            "--name",
            "pbx1",
            "--lease-ttl",
            "30",
            "--metrics",
            "127.0.0.1:0",
        ])
        .env("AMI_URL", format!("ami://admin:amp111@{}", a.local_addr()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded()
    };
    let held = |port: u16| {
        scrape(port)
            .lines()
            .any(|l| l.starts_with("ami_bridge_lease_held{server=\"pbx1\"") && l.ends_with(" 1"))
    };
    let mut serving = spawn();
    let (serving_metrics, mut said, mut rest) = metrics_port(&mut serving);
    wait_until(
        Duration::from_secs(20),
        "the first bridge holds the lease",
        || held(serving_metrics),
    );
    let mut standby = spawn();
    let (standby_metrics, _, _standby_rest) = metrics_port(&mut standby);
    send_signal(&serving, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = serving.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = serving.kill();
            break serving.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    rest.read_to_string(&mut said).unwrap();
    assert_eq!(status.code(), Some(0), "SIGHUP: {status:?}; {said}");
    assert_eq!(a.stats().logoffs, 1, "SIGHUP: logged off; {said}");
    wait_until(
        Duration::from_secs(10),
        "the standby holds the lease within 10 s, its TTL being 30 s",
        || held(standby_metrics),
    );
    send_signal(&standby, "TERM");
    assert_eq!(standby.wait().unwrap().code(), Some(0));
}

/// An operator's stop (SIGTERM here; Ctrl-C and SIGHUP take the same path) logs every AMI
/// session off before the bridge exits 0: each simulated Asterisk sees a `Logoff` (answered
/// `Goodbye`), as Asterisk then logs the manager session as logged off, not as dropped.
#[test]
fn a_stopped_bridge_logs_off_every_ami_server_before_it_exits() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(nats) = Nats::start() else { return };
    let (a, b) = (
        TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap(),
        TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap(),
    );
    let mut bridge = command(&[
        "bridge",
        "--nats",
        &format!("nats://127.0.0.1:{}", nats.port),
        "--name",
        "pbx1",
        "--name",
        "pbx2",
        "--metrics",
        "127.0.0.1:0",
    ])
    .env(
        "AMI_URL",
        format!(
            "ami://admin:amp111@{},ami://admin:amp111@{}",
            a.local_addr(),
            b.local_addr()
        ),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn_guarded();
    let (metrics, mut said, mut rest) = metrics_port(&mut bridge);
    wait_both_ready(metrics);
    send_signal(&bridge, "TERM");
    let status = exit_within(&mut bridge, Duration::from_secs(30));
    rest.read_to_string(&mut said).unwrap();
    assert_eq!(status.code(), Some(0), "{said}");
    for (name, front) in [("pbx1", &a), ("pbx2", &b)] {
        let stats = front.stats();
        assert_eq!(
            stats.logoffs, 1,
            "{name}: the bridge's session ended without a Logoff ({stats:?}); stderr: {said}"
        );
        assert_eq!(stats.sessions_open, 0, "{name}: {stats:?}");
    }
}

/// A second Ctrl-C while the bridge stops leaves at once: exit 130 and one line that counts
/// what was abandoned (the action request in flight, the AMI session not logged off), where
/// the first stop alone would wait seconds more for them.
#[test]
fn a_second_stop_signal_ends_the_bridge_at_once_saying_what_it_abandoned() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(nats) = Nats::start() else { return };
    let a = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    // The request's action is answered a minute after it arrives: it is in flight through
    // the whole stop, and the session stays busy (the Logoff waits behind it).
    a.with_faults(|f| {
        f.delay_replies(
            ami_sim::ActionMatch::named("CoreSettings"),
            Duration::from_secs(60),
        );
    });
    let mut bridge = command(&[
        "bridge",
        "--nats",
        &format!("nats://127.0.0.1:{}", nats.port),
        "--name",
        "pbx1",
        "--metrics",
        "127.0.0.1:0",
    ])
    .env("AMI_URL", format!("ami://admin:amp111@{}", a.local_addr()))
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn_guarded();
    let (metrics, said, rest) = metrics_port(&mut bridge);
    wait_until(Duration::from_secs(20), "the server ready", || {
        value(
            &scrape(metrics),
            "ami_bridge_server_state{server=\"pbx1\",state=\"ready\"}",
        ) == Some(1.0)
    });
    let delayed = a.stats().faults_injected;
    let _requester = request_raw(
        nats.port,
        "ami.pbx1.action",
        r#"{"headers":[["Action","CoreSettings"]],"timeout_ms":120000}"#,
    );
    wait_until(
        Duration::from_secs(20),
        "the action at the server, its answer held",
        || a.stats().faults_injected > delayed,
    );
    let lines = lines_on_a_thread(rest);
    send_signal(&bridge, "TERM");
    // The second signal once the first was taken (two signals before the bridge looks are
    // one to it); without the bridge saying so, after a while anyway.
    let first_seen = Instant::now() + Duration::from_secs(3);
    let mut err = said;
    while Instant::now() < first_seen {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                err.push_str(&line);
                if line.contains("stopping") {
                    break;
                }
            }
            Err(_) => continue,
        }
    }
    let second = Instant::now();
    if bridge.try_wait().unwrap().is_none() {
        send_signal(&bridge, "INT");
    }
    let status = exit_within(&mut bridge, Duration::from_secs(30));
    let took = second.elapsed();
    err.extend(lines.iter());
    assert_eq!(
        status.code(),
        Some(130),
        "second signal: {status:?}, {took:?} after it; stderr: {err}"
    );
    assert!(
        took < Duration::from_secs(2),
        "not at once: {took:?}; stderr: {err}"
    );
    let said = err
        .lines()
        .find(|l| l.contains("second stop signal"))
        .unwrap_or_else(|| panic!("no line on what was abandoned: {err}"));
    assert!(said.contains("1 action request"), "{said}");
    assert!(said.contains("1 AMI session"), "{said}");
    assert!(!said.contains("amp111"), "{said}");
}

/// Waits up to `limit` for `child` to exit (killed after it: the test fails then).
fn exit_within(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "ami bridge did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines of `stderr`, each with its newline, read on a thread of their own as they come.
fn lines_on_a_thread(
    mut stderr: std::io::BufReader<std::process::ChildStderr>,
) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || loop {
        let mut line = String::new();
        match stderr.read_line(&mut line) {
            Ok(n) if n > 0 => {
                if tx.send(line).is_err() {
                    return;
                }
            }
            _ => return,
        }
    });
    rx
}

/// An action request on `subject` published over the plain NATS protocol, its reply inbox
/// subscribed: the connection, kept open by the caller so that the requester stays there.
fn request_raw(port: u16, subject: &str, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let out = format!(
        "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.stop 1\r\nPUB {subject} _INBOX.stop {}\r\n{body}\r\nPING\r\n",
        body.len()
    );
    s.write_all(out.as_bytes()).unwrap();
    // PONG: nats-server has taken the request.
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("PONG") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "nats-server closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(!got.contains("-ERR"), "{got}");
    s
}

/// One scenario at a time: each opens a dozen loopback connections, and a port handed out
/// by the kernel as a connection's local port cannot be bound by another scenario's server.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serve_then_stop_on(signal: &str) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(nats) = Nats::start() else { return };
    let (a, b) = (
        TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap(),
        TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap(),
    );
    let servers = format!(
        "ami://admin:amp111@{},ami://admin:amp111@{}",
        a.local_addr(),
        b.local_addr()
    );
    let mut bridge = command(&[
        "bridge",
        "--nats",
        &format!("nats://127.0.0.1:{}", nats.port),
        "--name",
        "pbx1",
        "--name",
        "pbx2",
        // Port 0: the bridge binds a free port itself and says which, so no port picked
        // here beforehand can be taken meanwhile by another socket.
        "--metrics",
        "127.0.0.1:0",
    ])
    .env("AMI_URL", servers)
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn_guarded();
    let (metrics, mut said, mut rest) = metrics_port(&mut bridge);
    wait_both_ready(metrics);
    a.with_server(|s, now| s.emit_user_events(now, 50));
    b.with_server(|s, now| s.emit_user_events(now, 30));
    wait_until(Duration::from_secs(20), "events published", || {
        let page = scrape(metrics);
        let published = |s: &str| {
            value(
                &page,
                &format!("ami_bridge_published_total{{server=\"{s}\"}}"),
            )
        };
        published("pbx1").is_some_and(|n| n >= 50.0) && published("pbx2").is_some_and(|n| n >= 30.0)
    });
    let page = scrape(metrics);
    assert!(
        page.lines()
            .any(|l| l.starts_with("ami_bridge_lease_held{server=\"pbx2\"") && l.ends_with(" 1")),
        "{page}"
    );
    // Ctrl-C or SIGTERM: the bridge releases its leases and exits 0.
    send_signal(&bridge, signal);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = bridge.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ami bridge did not stop on SIG{signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    rest.read_to_string(&mut said).unwrap();
    let err = said;
    assert_eq!(status.code(), Some(0), "{err}");
    // The NATS it serves through, then what stops it (once given in each other's place).
    let through = format!("serving through nats://127.0.0.1:{} (Ctrl-C", nats.port);
    assert!(err.contains(&through), "{err}");
    // The bridge's own log records are its voice: on at info level by default.
    assert!(
        err.contains("INFO ami_nats::bridge: pbx1: lease acquired"),
        "{err}"
    );
    assert!(!err.contains("amp111"), "{err}");
}

#[test]
fn bridge_refuses_a_name_count_that_does_not_match_the_servers() {
    let out = ami(&[
        "--server",
        "ami://admin:amp111@127.0.0.1:1",
        "--server",
        "ami://admin:amp111@127.0.0.1:2",
        "bridge",
        "--name",
        "only-one",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--name"), "{}", stderr(&out));
}

#[test]
fn bridge_publishes_only_the_classes_its_event_mask_names() {
    // `--events call`: a dialer's bridge that wants the calls, not the UserEvents (nor the
    // RTCP reports and queue events) of its servers, has them kept at the server.
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(nats) = Nats::start() else { return };
    let a = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let mut bridge = command(&[
        "--server",
        &format!("ami://admin:amp111@{}", a.local_addr()),
        "bridge",
        "--nats",
        &format!("nats://127.0.0.1:{}", nats.port),
        "--name",
        "pbx1",
        "--events",
        "call",
        "--metrics",
        "127.0.0.1:0",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn_guarded();
    let (metrics, _, _rest) = metrics_port(&mut bridge);
    let received = || {
        value(
            &scrape(metrics),
            "ami_bridge_events_received_total{server=\"pbx1\"}",
        )
    };
    wait_until(Duration::from_secs(20), "the server ready", || {
        value(
            &scrape(metrics),
            "ami_bridge_server_state{server=\"pbx1\",state=\"ready\"}",
        ) == Some(1.0)
    });
    a.with_server(|s, now| {
        s.emit_user_events(now, 500);
        s.originate_call(now, ami_sim::CallRequest::new("Local/echo@ami-test", 1));
    });
    wait_until(Duration::from_secs(20), "the call's events", || {
        received().is_some_and(|n| n >= 5.0)
    });
    std::thread::sleep(Duration::from_millis(300));
    let n = received().unwrap_or_default();
    assert!(n < 100.0, "only call events, no UserEvent: {n}");
    assert!(a.stats().events_emitted > 500);
    send_signal(&bridge, "INT");
    let deadline = Instant::now() + Duration::from_secs(20);
    while bridge.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ami bridge did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ami bridge --nats URL` for one simulated server until it serves, then SIGTERM: its
/// stderr, once it exited 0.
fn serves_through(nats_url: &str) -> String {
    let a = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let mut bridge = command(&["bridge", "--nats", nats_url, "--metrics", "127.0.0.1:0"])
        .env("AMI_URL", format!("ami://admin:amp111@{}", a.local_addr()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded();
    let (_, mut said, mut rest) = metrics_port(&mut bridge);
    send_signal(&bridge, "TERM");
    let status = bridge.wait().unwrap();
    rest.read_to_string(&mut said).unwrap();
    assert_eq!(status.code(), Some(0), "{said}");
    said
}

#[test]
fn bridge_logs_in_to_nats_with_the_user_password_or_token_of_its_url_and_shows_neither() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(nats) = Nats::start_with(&["--user", "u", "--pass", "SuperSecret99"]) else {
        return;
    };
    let down = closed_port();
    // A list, the live server first and last (the client tries them in random order).
    for url in [
        format!("nats://u:SuperSecret99@127.0.0.1:{}", nats.port),
        format!(
            "nats://u:SuperSecret99@127.0.0.1:{down},nats://u:SuperSecret99@127.0.0.1:{}",
            nats.port
        ),
        format!(
            "nats://u:SuperSecret99@127.0.0.1:{},nats://127.0.0.1:{down}",
            nats.port
        ),
    ] {
        let err = serves_through(&url);
        assert!(err.contains("nats://u:***@127.0.0.1"), "{err}");
        assert!(!err.contains("SuperSecret99"), "{err}");
    }
    let Some(nats) = Nats::start_with(&["--auth", "T0ken"]) else {
        return;
    };
    let err = serves_through(&format!("nats://T0ken@127.0.0.1:{}", nats.port));
    assert!(!err.contains("T0ken"), "{err}");
}

#[test]
fn a_bad_nats_url_whose_password_or_token_holds_a_comma_is_shown_without_any_of_it() {
    // Refused before anything connects (the port is out of range): the message is the
    // URL redacted, never a part of the secret cut off at its comma.
    for (url, shown) in [
        (
            "nats://nuser:NPART1,NPART2@127.0.0.1:99999",
            "nats://nuser:***@127.0.0.1:99999",
        ),
        (
            "nats://TOKPART1,TOKPART2@127.0.0.1:99999",
            "nats://***@127.0.0.1:99999",
        ),
    ] {
        let out = ami(&[
            "--server",
            "ami://admin:x@127.0.0.1:1",
            "bridge",
            "--nats",
            url,
        ]);
        assert_code(&out, 2, url);
        let err = stderr(&out);
        assert!(err.contains("bad NATS URL") && err.contains(shown), "{err}");
        assert!(!err.contains("PART"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn bridge_logs_in_to_nats_with_a_password_that_holds_a_comma_and_shows_none_of_it() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(nats) = Nats::start_with(&["--user", "nuser", "--pass", "NPART1,NPART2"]) else {
        return;
    };
    let err = serves_through(&format!(
        "nats://nuser:NPART1,NPART2@127.0.0.1:{}",
        nats.port
    ));
    assert!(err.contains("nats://nuser:***@127.0.0.1"), "{err}");
    assert!(!err.contains("PART"), "{err}");
}

/// Creates stream `AMI` with `subjects` as an operator would, over the plain NATS protocol.
fn operators_stream(port: u16, subjects: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = format!(r#"{{"name":"AMI","subjects":{subjects},"storage":"memory"}}"#);
    let out = format!(
        "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.op 1\r\nPUB $JS.API.STREAM.CREATE.AMI _INBOX.op {}\r\n{body}\r\n",
        body.len()
    );
    s.write_all(out.as_bytes()).unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("MSG _INBOX.op") || !got.ends_with("}\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "nats-server closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(!got.contains(r#""error""#), "{got}");
}

#[test]
fn bridge_refuses_a_stream_whose_subjects_do_not_fit_with_the_connect_exit_code_in_one_line() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (subjects, says) in [
        (r#"["ami.>"]"#, "captures the action requests"),
        (r#"["ami.*.event.>"]"#, "do not cover"),
    ] {
        let Some(nats) = Nats::start() else { return };
        operators_stream(nats.port, subjects);
        let out = ami(&[
            "--server",
            "ami://admin:amp111@127.0.0.1:1",
            "bridge",
            "--nats",
            &format!("nats://127.0.0.1:{}", nats.port),
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("stream AMI") && err.contains(says), "{err}");
    }
}

#[test]
fn a_nats_that_cannot_be_reached_is_named_by_its_urls_without_their_secret() {
    let (down1, down2) = (closed_port(), closed_port());
    let url = format!("nats://u:NatsPa55@127.0.0.1:{down1},nats://127.0.0.1:{down2}");
    let out = ami(&[
        "--server",
        "ami://admin:x@127.0.0.1:1",
        "bridge",
        "--nats",
        &url,
    ]);
    assert_code(&out, 3, &url);
    let err = stderr(&out);
    // Which NATS it tried, as given (the operator's list, redacted): not only "IO error".
    let shown = format!("nats://u:***@127.0.0.1:{down1},nats://127.0.0.1:{down2}");
    assert!(
        err.contains("cannot connect to NATS at ") && err.contains(&shown),
        "{err}"
    );
    assert!(!err.contains("NatsPa55"), "{err}");
}
