//! Running `ami` and small hostile AMI servers for the end-to-end tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every runtime; each scenario runs on all of them.
pub const RUNTIMES: [&str; 3] = ["tokio", "mio", "async-std"];

/// The documented bound on waiting for a Logoff answer.
pub const LOGOFF_GRACE: Duration = Duration::from_secs(2);

pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ami"));
    c.args(args).env_remove("AMI_URL");
    c
}

pub fn ami(args: &[&str]) -> Output {
    command(args).output().expect("run ami")
}

/// Runs `ami` and returns its output and how long it ran.
pub fn timed(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = ami(args);
    (out, started.elapsed())
}

/// `ami --runtime RT --server URL ARGS...`
pub fn on(runtime: &str, server: &str, args: &[&str]) -> Output {
    let mut all = vec!["--runtime", runtime, "--server", server];
    all.extend_from_slice(args);
    ami(&all)
}

/// `ami --runtime RT --server URL1 --server URL2 ... ARGS...`
pub fn on_servers(runtime: &str, servers: &[&str], args: &[&str]) -> Output {
    let mut all = vec!["--runtime", runtime];
    for s in servers {
        all.extend(["--server", s]);
    }
    all.extend_from_slice(args);
    ami(&all)
}

pub fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `f` once per runtime, all at once, each on its own thread.
pub fn each_runtime(f: impl Fn(&'static str) + Sync) {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = RUNTIMES.iter().map(|rt| s.spawn(move || f(rt))).collect();
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
}

/// One connection to a fake server, seen from the server.
pub struct Conn {
    reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

/// One action as the fake server read it.
pub struct Request {
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
    pub fn action(&self) -> String {
        self.get("Action").unwrap_or("").to_ascii_lowercase()
    }
}

impl Conn {
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads the next action; `None` at EOF.
    pub fn next(&mut self) -> Option<Request> {
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end();
            if line.is_empty() {
                if headers.is_empty() {
                    continue;
                }
                return Some(Request { headers });
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }

    /// Answers `req` with `Response: response` and `fields`, echoing its ActionID.
    pub fn answer(&mut self, req: &Request, response: &str, fields: &[(&str, &str)]) {
        let mut m = format!("Response: {response}\r\n");
        if let Some(id) = req.get("ActionID") {
            m.push_str(&format!("ActionID: {id}\r\n"));
        }
        for (k, v) in fields {
            m.push_str(&format!("{k}: {v}\r\n"));
        }
        m.push_str("\r\n");
        let _ = self.send(m.as_bytes());
    }

    /// Banner, then accepts the login (`true`) or rejects it (`false`).
    pub fn login(&mut self, accept: bool) -> bool {
        let _ = self.send(b"Asterisk Call Manager/9.0.0\r\n");
        let Some(req) = self.next() else {
            return false;
        };
        if accept {
            self.answer(&req, "Success", &[("Message", "Authentication accepted")]);
            let _ = self.send(
                b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n",
            );
        } else {
            self.answer(&req, "Error", &[("Message", "Authentication failed")]);
        }
        accept
    }

    /// Answers Ping with Pong and every other action with Success, until EOF; a Logoff is
    /// answered with Goodbye only when `goodbye`.
    pub fn serve(&mut self, goodbye: bool) {
        while let Some(req) = self.next() {
            match req.action().as_str() {
                "ping" => self.answer(&req, "Success", &[("Ping", "Pong")]),
                "logoff" if goodbye => {
                    self.answer(&req, "Goodbye", &[("Message", "Thanks for all the fish.")]);
                    return;
                }
                "logoff" => {}
                _ => self.answer(&req, "Success", &[]),
            }
        }
    }
}

/// A fake AMI server on 127.0.0.1: connection number n (from 0) is handed to
/// `script(n, conn)` on a thread of its own.
pub struct Fake {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Fake {
    pub fn start(script: impl Fn(usize, Conn) + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let script = Arc::new(script);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                std::thread::spawn(move || {
                    let reader = BufReader::new(stream.try_clone().unwrap());
                    script(n, Conn { reader, stream });
                });
            }
        });
        Fake { addr, accepted }
    }

    pub fn url(&self) -> String {
        format!("ami://admin:S3cr3t@{}", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A port nothing listens on now, free for a server the test starts on it (another bind
/// may take it meanwhile: for a port that must refuse, [`refused_port`]).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A 127.0.0.1 port that refuses connections while the socket lives: bound, so no other
/// socket (another test's listener) can take the port, and never listening.
#[allow(dead_code)] // not every test binary needs one
pub fn refused_port() -> (socket2::Socket, u16) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

/// A child process that is killed and reaped when dropped. A test that fails or panics
/// before it waits for its `ami` (or its nats-server) would otherwise leave the process
/// running after the test binary ends: a bridge holding its lease and its AMI sessions, a
/// listener logged in, a simulator on its port. Derefs to the [`std::process::Child`], so
/// `wait`, `try_wait`, `kill` and the pipes are used as on the child itself.
pub struct Spawned(Option<std::process::Child>);

impl Spawned {
    /// Guards `child`.
    pub fn new(child: std::process::Child) -> Spawned {
        Spawned(Some(child))
    }

    /// [`std::process::Child::wait_with_output`]: the child is reaped by it.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        self.0.take().expect("a guarded child").wait_with_output()
    }
}

impl std::ops::Deref for Spawned {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        // `None` only inside `wait_with_output`, which consumes the guard.
        self.0.as_ref().expect("a guarded child")
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("a guarded child")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            // Already reaped by the test: nothing to kill (its pid may be another's now).
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// [`Command::spawn`] whose child is killed and reaped on drop ([`Spawned`]).
pub trait SpawnGuarded {
    /// Spawns the command (panicking if it cannot be started) under a [`Spawned`] guard.
    fn spawn_guarded(&mut self) -> Spawned;
}

impl SpawnGuarded for Command {
    fn spawn_guarded(&mut self) -> Spawned {
        Spawned::new(self.spawn().expect("spawn"))
    }
}

/// Starts `ami` with stdout piped (not read until the caller does).
pub fn spawn_piped(args: &[&str]) -> Spawned {
    command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded()
}

/// Sends `signal` (`INT`, `TERM`) to `child`, as Ctrl-C or a service manager would.
pub fn send_signal(child: &std::process::Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} failed");
}

/// Everything `child` wrote on its piped stderr, once it has ended.
pub fn stderr_of(child: &mut std::process::Child) -> String {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).expect("read stderr");
    }
    err
}

/// Starts `ami sim ARGS` and reads the URL it prints: (the process, its URL).
pub fn spawn_sim(args: &[&str]) -> (Spawned, String) {
    use std::io::{BufRead, BufReader};
    let mut all = vec!["sim"];
    all.extend_from_slice(args);
    let mut sim = spawn_piped(&all);
    let mut url = String::new();
    BufReader::new(sim.stdout.take().expect("sim stdout"))
        .read_line(&mut url)
        .expect("read the sim's URL");
    (sim, url.trim().to_string())
}

/// A simulated Asterisk on a loopback port (the simulator's TCP front).
pub fn sim() -> ami_sim::tcp::TcpFront {
    ami_sim::tcp::TcpFront::start(ami_sim::SimConfig::default(), "127.0.0.1:0").unwrap()
}

/// The URL of `front` for the simulator's `admin` user with `secret`.
pub fn sim_url(front: &ami_sim::tcp::TcpFront, secret: &str) -> String {
    format!("ami://admin:{secret}@{}", front.local_addr())
}

/// One output line, parsed as strict JSON.
pub fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// The value of the first header `key` of a parsed line.
pub fn header<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    v["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == key)
        .map(|h| &h[1])
}

/// Asserts the exit code of `out`, showing its stderr when it differs.
pub fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}: {}", stderr(out));
}

/// Walks `listen`'s parsed lines (one server's): within each session (reset at every
/// session marker) every Seq missing between two printed events must be counted by the gap
/// markers between them. Returns the events printed and the events the gap markers say
/// were dropped.
pub fn account_for_every_seq<'a>(lines: impl Iterator<Item = &'a serde_json::Value>) -> (u64, u64) {
    let (mut prev, mut owed, mut dropped, mut events) = (None::<u64>, 0u64, 0u64, 0u64);
    for v in lines {
        match v["type"].as_str() {
            Some("event") => {
                let seq: u64 = header(v, "Seq").unwrap().as_str().unwrap().parse().unwrap();
                if let Some(p) = prev {
                    assert_eq!(seq, p + 1 + owed, "after Seq {p}, {owed} marked as dropped");
                }
                (prev, owed, events) = (Some(seq), 0, events + 1);
            }
            Some("gap") => {
                assert_eq!(v["reason"], "overflow", "{v}");
                let n = v["dropped"].as_u64().unwrap();
                (owed, dropped) = (owed + n, dropped + n);
            }
            _ => (prev, owed) = (None, 0),
        }
    }
    (events, dropped)
}

/// Leaves `child`'s stdout unread for `stall`, then reads it to its end: (stdout, exit
/// status, stderr).
pub fn read_after_stall(
    child: &mut std::process::Child,
    stall: Duration,
) -> (String, std::process::ExitStatus, String) {
    std::thread::sleep(stall);
    let out = read_stdout(child);
    let status = child.wait().unwrap();
    let err = stderr_of(child);
    (out, status, err)
}

/// Reads `child`'s stdout to its end (taken: read once).
pub fn read_stdout(child: &mut std::process::Child) -> String {
    use std::io::Read;
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// Makes `front`'s simulator write UserEvents with one running `Seq`, `per_ms` a
/// millisecond at most, until `stop`.
pub fn feed_user_events(
    front: &Arc<ami_sim::tcp::TcpFront>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    per_ms: usize,
) -> std::thread::JoinHandle<()> {
    let (front, stop) = (front.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut seq = 0;
        while !stop.load(Ordering::Relaxed) {
            front.with_server(|s, now| s.emit_user_events_from(now, seq, per_ms));
            seq += per_ms;
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}
