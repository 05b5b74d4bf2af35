//! A scripted Asterisk on a raw loopback socket, for tests that need a server to misbehave
//! at an exact byte: it greets, answers the Login, then hands the stream to the test.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A listener on 127.0.0.1, port 0.
pub struct Fake {
    pub listener: TcpListener,
}

/// One accepted connection: its reader (for actions) and a writer.
pub struct Conn {
    pub reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Fake {
    pub fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Fake { listener }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Accepts one connection within `within` (None after it).
    pub fn accept_within(&self, within: Duration) -> Option<TcpStream> {
        self.listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + within;
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    return Some(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= end {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Accepts, greets, answers the Login with success.
    pub fn accept_logged_in(&self) -> Conn {
        let stream = self
            .accept_within(Duration::from_secs(5))
            .expect("a connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut conn = Conn {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        };
        conn.write(b"Asterisk Call Manager/11.0.0\r\n");
        let login = conn.read_action().expect("a Login");
        assert_eq!(login.get("Action").map(String::as_str), Some("Login"));
        let id = login.get("ActionID").cloned().unwrap_or_default();
        conn.write(
            format!(
                "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
            )
            .as_bytes(),
        );
        conn
    }
}

impl Conn {
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one action (fields up to the blank line); None at EOF, error or timeout.
    pub fn read_action(&mut self) -> Option<HashMap<String, String>> {
        let mut fields = HashMap::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if fields.is_empty() {
                    continue;
                }
                return Some(fields);
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }

    /// Reads actions until one named `name`; returns its ActionID.
    pub fn expect_action(&mut self, name: &str) -> String {
        loop {
            let a = self
                .read_action()
                .unwrap_or_else(|| panic!("no {name} came"));
            if a.get("Action")
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
            {
                return a.get("ActionID").cloned().unwrap_or_default();
            }
        }
    }

    /// Answers a Ping.
    pub fn pong(&mut self, id: &str) {
        self.write(format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n").as_bytes());
    }
}

/// Runs `fut` with a bound, failing the test after `d`.
pub async fn within<T>(what: &str, d: Duration, fut: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::or(fut, async {
        async_io::Timer::after(d).await;
        panic!("timed out after {d:?} waiting for {what}")
    })
    .await
}
