//! `amis://` end to end: a small AMI server behind rustls on 127.0.0.1 with a certificate
//! generated for `localhost`, and `ami --ca` trusting exactly that certificate.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_conformance::localhost_cert;
use ami_mio::rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use support::*;

/// An AMI server over TLS on 127.0.0.1: logs anyone in, answers Ping with Pong and Logoff
/// with Goodbye, one thread per connection.
fn tls_server(config: Arc<ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let conn = ServerConnection::new(config).unwrap();
                let mut tls = BufReader::new(StreamOwned::new(conn, tcp));
                let _ = serve(&mut tls);
            });
        }
    });
    addr
}

fn serve(
    tls: &mut BufReader<StreamOwned<ServerConnection, std::net::TcpStream>>,
) -> std::io::Result<()> {
    tls.get_mut()
        .write_all(b"Asterisk Call Manager/11.0.0\r\n")?;
    tls.get_mut().flush()?;
    loop {
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if tls.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| {
            headers
                .iter()
                .find(|(h, _)| h == k)
                .map(|(_, v)| v.as_str())
        };
        let id = get("actionid").unwrap_or("");
        let answer = match get("action").map(str::to_ascii_lowercase).as_deref() {
            Some("login") => "Response: Success\r\nMessage: Authentication accepted".to_string(),
            Some("ping") => "Response: Success\r\nPing: Pong\r\nTLS: yes".to_string(),
            Some("logoff") => "Response: Goodbye".to_string(),
            _ => "Response: Success".to_string(),
        };
        let out = tls.get_mut();
        write!(out, "{answer}\r\nActionID: {id}\r\n\r\n")?;
        out.flush()?;
    }
}

/// `ami --runtime RT --server URL --ca CA action Ping`.
fn ping(rt: &str, url: &str, ca: &std::path::Path) -> std::process::Output {
    let ca = ca.to_str().unwrap();
    ami(&[
        "--runtime",
        rt,
        "--server",
        url,
        "--ca",
        ca,
        "action",
        "Ping",
    ])
}

#[test]
fn amis_reaches_a_tls_server_on_every_runtime() {
    let (pem, config) = localhost_cert();
    let addr = tls_server(config);
    let dir = std::env::temp_dir().join(format!("ami-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    // `localhost` may resolve to ::1 first, where nothing listens: the next address is tried.
    let url = format!("amis://admin:x@localhost:{}", addr.port());
    for rt in ["tokio", "mio", "async-std"] {
        let out = ping(rt, &url, &ca);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{rt}: {err}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(r#"["Ping","Pong"]"#), "{rt}: {stdout}");
        assert!(stdout.contains(r#"["TLS","yes"]"#), "{rt}: {stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A certificate from a CA the command was not told to trust: the same failed connect and
/// the same words on every runtime (mio used to report a transport error on a session that
/// had connected), saying what to fix. (The other CA has the same name, a new key: the
/// signature is what fails.)
#[test]
fn amis_refuses_a_certificate_it_was_not_told_to_trust_alike_on_every_runtime() {
    let (_, config) = localhost_cert();
    let addr = tls_server(config);
    // A different CA than the server's.
    let (other_pem, _) = localhost_cert();
    let dir = std::env::temp_dir().join(format!("ami-cli-tls-other-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &other_pem).unwrap();
    let url = format!("amis://admin:x@localhost:{}", addr.port());
    for rt in ["tokio", "mio", "async-std"] {
        let out = ping(rt, &url, &ca);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{rt}: {err}");
        assert!(out.stdout.is_empty(), "{rt}");
        assert!(
            err.contains("could not open a TLS session with")
                && err.contains("the server's TLS certificate was refused: ")
                && err.contains("(--ca must hold the certificate of the CA that signed it)"),
            "{rt}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn amis_with_several_servers_reaches_each_over_tls_on_every_runtime() {
    let (pem, config) = localhost_cert();
    let (a, b) = (tls_server(config.clone()), tls_server(config));
    let dir = std::env::temp_dir().join(format!("ami-cli-tls-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    let (ua, ub) = (
        format!("amis://admin:x@localhost:{}", a.port()),
        format!("amis://admin:x@localhost:{}", b.port()),
    );
    let ca_arg = ca.to_str().unwrap();
    each_runtime(|rt| {
        let args = ["--ca", ca_arg, "action", "Ping", "--on", "all"];
        let out = on_servers(rt, &[&ua, &ub], &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{rt}: {err}");
        let lines = stdout_lines(&out);
        assert_eq!(lines.len(), 2, "{rt}: one reply per server: {lines:?}");
        for line in &lines {
            assert!(line.contains(r#"["TLS","yes"]"#), "{rt}: {line}");
        }
        for port in [a.port(), b.port()] {
            let server = format!(r#""server":"localhost:{port}""#);
            assert!(lines.iter().any(|l| l.contains(&server)), "{rt}: {lines:?}");
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
