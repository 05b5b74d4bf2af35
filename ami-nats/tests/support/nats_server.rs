//! A real nats-server with JetStream on 127.0.0.1 (a free port, a temporary store), for
//! the integration tests (through `support`) and the crate's own unit tests (included with
//! `#[path]`): std only, so either can build it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary, if installed.
fn nats_binary() -> Option<PathBuf> {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
    {
        let p = PathBuf::from(dir).join("nats-server");
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// A nats-server process with JetStream; stopped and its store removed on drop.
pub struct Nats {
    bin: PathBuf,
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// A configuration file given to the server (`-c`), if any.
    config: Option<PathBuf>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nats {
    /// Starts one, or returns None after a loud message when nats-server is not installed
    /// (CI installs it: `.ci/run`).
    pub fn start() -> Option<Nats> {
        Self::start_with_config("")
    }

    /// Like [`start`](Self::start), with `config` (nats-server configuration text, e.g.
    /// `max_payload: 8192`) as its configuration file when not empty.
    pub fn start_with_config(config: &str) -> Option<Nats> {
        let Some(bin) = nats_binary() else {
            eprintln!("\n\n!!!!! SKIPPED: nats-server is not installed (apt-get install nats-server); .ci/run installs it !!!!!\n");
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "ami-nats-test-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = (!config.is_empty()).then(|| {
            let path = dir.join("nats.conf");
            std::fs::write(&path, config).unwrap();
            path
        });
        let mut n = Nats {
            bin,
            child: None,
            port: free_port(),
            dir,
            config,
        };
        // The free port can be taken between the probe and the server's bind (tests run in
        // parallel, and each binds its simulators to port 0): the server then exits, and
        // whoever took the port answered the readiness probe. Try another port.
        for _ in 0..5 {
            if n.try_spawn() {
                return Some(n);
            }
            n.stop();
            n.port = free_port();
        }
        panic!("nats-server did not start on any of 5 free ports");
    }

    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "nats-server did not start on port {}",
            self.port
        );
    }

    /// Starts the server on `self.port`; true once it answers there with its `INFO` line.
    fn try_spawn(&mut self) -> bool {
        // A name of its own, which its INFO greeting carries (see the probe below).
        let name = format!("ami-test-{}-{}", std::process::id(), self.port);
        let mut command = Command::new(&self.bin);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-n", &name])
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .child
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
            {
                return false;
            }
            if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                // Only this server greets with INFO naming it: whoever else holds the port
                // (another test's nats-server too, which took the port between the probe
                // and this server's bind) does not.
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut greeting = Vec::new();
                let mut byte = [0u8; 1];
                while !greeting.ends_with(b"\r\n") && greeting.len() < 64 * 1024 {
                    match std::io::Read::read(&mut conn, &mut byte) {
                        Ok(1) => greeting.push(byte[0]),
                        _ => return false,
                    }
                }
                let greeting = String::from_utf8_lossy(&greeting);
                return greeting.starts_with("INFO ")
                    && greeting.contains(&format!("\"server_name\":\"{name}\""));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The server's process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its store stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
