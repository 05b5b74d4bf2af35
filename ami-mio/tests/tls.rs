//! ami-mio over TLS (feature `tls`): a certificate generated for `localhost`, the conformance
//! suite's TLS terminator (tokio-rustls on its own runtime threads) forwarding to the
//! simulator's plain TCP front, and the client trusting exactly that certificate. The client
//! side is the driver's own non-blocking step: rustls's sans-IO `ClientConnection` over a
//! mio socket.
#![cfg(feature = "tls")]
// Test helpers may unwrap and panic: that is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_conformance::{client_tls, localhost_cert, TlsTerminator};
use ami_mio::{ConnId, MioDriver, Notice, Options};
use ami_proto::{
    Action, ActionError, ActionId, CertificateProblem, ClientConfig, ConnectFailure,
    DisconnectKind, DisconnectReason, StreamItem,
};
use std::time::{Duration, Instant};
use support::slow_reader::SlowReader;
use support::{config, drive, front, storm_seq};

const LIMIT: Duration = Duration::from_secs(5);

fn ready(driver: &mut MioDriver) -> ConnId {
    let mut id = None;
    let ok = drive(driver, LIMIT, |_, r| {
        for (conn, n) in r.notices {
            match n {
                Notice::Ready { .. } => id = Some(conn),
                Notice::Disconnected { reason, .. } => panic!("disconnected: {reason:?}"),
                _ => {}
            }
        }
        id.is_some()
    });
    assert!(ok, "no Ready within {LIMIT:?}");
    id.unwrap()
}

#[test]
fn login_ping_and_a_storm_over_tls() {
    const STORM: u64 = 2000;
    let mut front = front();
    let (pem, server) = localhost_cert();
    let term = TlsTerminator::start(server, front.local_addr());

    // A small read budget, so that the storm takes many steps and the TLS read path stops on
    // its budget with ciphertext left behind.
    let mut options = Options::default();
    options.budget.read_bytes_per_conn = 4096;
    let mut driver = MioDriver::with_options(options).unwrap();
    let conn = driver
        .add_tls(
            Instant::now(),
            config(7),
            term.addr,
            client_tls(&pem, "localhost"),
        )
        .unwrap();
    assert_eq!(ready(&mut driver), conn);

    let ping = driver
        .send(Instant::now(), conn, Action::new("Ping"))
        .unwrap();
    let mut pong = None;
    assert!(drive(&mut driver, LIMIT, |_, r| {
        for (_, n) in r.notices {
            if let Notice::Completed { id, outcome } = n {
                if id == ping {
                    pong = Some(outcome);
                }
            }
        }
        pong.is_some()
    }));
    let pong = pong.unwrap().unwrap();
    assert_eq!(pong.message().get_str("Ping"), Some("Pong"));

    // Whatever came with the login (FullyBooted, SuccessfulAuth) is not part of the storm.
    while driver.poll_event(conn).is_some() {}
    let started = Instant::now();
    front.with_server(|sim, now| sim.emit_user_events(now, STORM as usize));
    let mut seqs = Vec::new();
    let mut more = 0;
    assert!(
        drive(&mut driver, LIMIT, |d, r| {
            more += usize::from(r.more);
            for c in r.events {
                assert_eq!(c, conn);
                while let Some(item) = d.poll_event(c) {
                    match item {
                        StreamItem::Event(m) => seqs.extend(storm_seq(&m)),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            seqs.len() as u64 >= STORM
        }),
        "{} of {STORM} storm events arrived",
        seqs.len()
    );
    eprintln!(
        "{STORM} events over TLS in {:?}; {more} steps stopped on the budget",
        started.elapsed()
    );
    assert_eq!(seqs, (0..STORM).collect::<Vec<_>>());
    assert!(more > 0, "a 4 KiB budget never stopped a read");

    assert_eq!(term.handshakes(), 1);
    let st = front.stats();
    assert_eq!((st.sessions_accepted, st.logins), (1, 1), "{st:?}");

    assert!(driver.logoff(Instant::now(), conn));
    let mut closed = None;
    assert!(drive(&mut driver, LIMIT, |_, r| {
        for (_, n) in r.notices {
            if let Notice::Closed { reason } = n {
                closed = Some(reason);
            }
        }
        closed.is_some()
    }));
    assert_eq!(closed, Some(DisconnectReason::Logoff));
    front.shutdown();
}

fn big_user_event(k: usize) -> Action {
    let value = "x".repeat(1000);
    let mut a = Action::new("UserEvent").field("UserEvent", format!("big{k}"));
    for h in 0..120 {
        a = a.field(format!("H{h}"), value.as_str());
    }
    a
}

/// 60 actions of 120 KB through the terminator to a server that reads slowly: rustls's
/// outgoing buffer fills, the socket would block, and the rest waits in the core's transmit
/// buffer until writable readiness comes back. Every action arrives whole.
#[test]
fn large_actions_survive_partial_tls_writes_to_a_slow_reader() {
    // About 24 MB: more than every kernel buffer on both hops (client -> terminator ->
    // reader) can absorb under loopback autotuning, so some write must block.
    const N: usize = 200;
    let server = SlowReader::start(Duration::from_micros(200));
    let (pem, tls_server) = localhost_cert();
    let term = TlsTerminator::start_with(tls_server, server.addr(), Some(16 << 10));
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add_tls(
            Instant::now(),
            config(10),
            term.addr,
            client_tls(&pem, "localhost"),
        )
        .unwrap();
    ready(&mut driver);
    let ids: Vec<ActionId> = (0..N)
        .map(|k| {
            driver
                .send(Instant::now(), conn, big_user_event(k))
                .unwrap()
        })
        .collect();
    let mut done = 0;
    let mut blocked_steps = 0;
    let started = Instant::now();
    let end = started + Duration::from_secs(10);
    while done < N && Instant::now() < end {
        let report = driver.step(Instant::now()).unwrap();
        for (_, n) in report.notices {
            match n {
                Notice::Completed { id, outcome } => {
                    assert!(ids.contains(&id));
                    // The fake answers unknown actions with an error: it parsed the whole
                    // action.
                    assert!(
                        matches!(outcome, Err(ActionError::Server(_))),
                        "{outcome:?}"
                    );
                    done += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if driver.stats(conn).unwrap().transmit_pending > 0 {
            blocked_steps += 1;
        }
        driver.wait(Some(Duration::from_millis(5))).unwrap();
    }
    assert_eq!(done, N, "only {done} of {N} answered");
    let stats = driver.stats(conn).unwrap();
    eprintln!(
        "slow reader over TLS: {} bytes in {:?}; {blocked_steps} steps left bytes unwritten",
        stats.bytes_out,
        started.elapsed()
    );
    assert!(blocked_steps > 0, "no write ever blocked");
    assert!(stats.bytes_out > (N * 120 * 1000) as u64);
}

/// Drives until the connection's first `Disconnected` and returns its reason; fails on
/// `Ready`.
fn first_disconnect(driver: &mut MioDriver, conn: ConnId) -> DisconnectReason {
    let mut down = None;
    assert!(
        drive(driver, LIMIT, |_, r| {
            for (c, n) in r.notices {
                assert_eq!(c, conn);
                match n {
                    Notice::Ready { .. } => panic!("Ready"),
                    Notice::Disconnected { reason, .. } if down.is_none() => down = Some(reason),
                    _ => {}
                }
            }
            down.is_some()
        }),
        "no Disconnected within {LIMIT:?}"
    );
    down.unwrap()
}

/// A certificate for another name is a failed connect with a TLS reason, as on the async
/// runtimes (the conformance suite's `tls_refuses_a_certificate_for_another_name`): the
/// client is told "connected" only once the handshake is done.
#[test]
fn a_certificate_for_another_name_fails_the_connect_with_a_tls_reason() {
    let mut front = front();
    let (pem, server) = localhost_cert();
    let term = TlsTerminator::start(server, front.local_addr());
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add_tls(
            Instant::now(),
            config(8),
            term.addr,
            client_tls(&pem, "ami.example.com"),
        )
        .unwrap();
    let down = first_disconnect(&mut driver, conn);
    assert_eq!(
        down,
        DisconnectReason::ConnectFailed(ConnectFailure::TlsCertificate(
            CertificateProblem::WrongName
        ))
    );
    assert!(driver.close(Instant::now(), conn));
    assert_eq!(term.handshakes(), 0);
    let st = front.stats();
    assert_eq!((st.sessions_accepted, st.logins), (0, 0), "{st:?}");
    front.shutdown();
}

/// TLS to a port that speaks plain AMI (its banner is no TLS record): a failed connect with
/// a TLS reason, as on the async runtimes (the conformance suite's
/// `tls_to_a_plain_ami_port_fails_the_connect_with_a_tls_reason`), not a transport error on
/// a session that had connected.
#[test]
fn tls_to_a_plain_ami_port_fails_the_connect_with_a_tls_reason() {
    let mut front = front();
    let (pem, _) = localhost_cert();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add_tls(
            Instant::now(),
            config(11),
            front.local_addr(),
            client_tls(&pem, "localhost"),
        )
        .unwrap();
    let down = first_disconnect(&mut driver, conn);
    assert_eq!(down, DisconnectReason::ConnectFailed(ConnectFailure::Tls));
    let stats = driver.stats(conn).unwrap();
    assert_eq!(stats.disconnect_count(DisconnectKind::ConnectFailed), 1);
    assert!(driver.close(Instant::now(), conn));
    assert_eq!(front.stats().logins, 0);
    front.shutdown();
}

/// A port that takes the connection and never answers the handshake: the client's connect
/// timer ends it as `TlsHandshakeTimeout` (the TCP connect worked), as on the async runtimes
/// (the conformance suite's `a_tls_handshake_that_never_ends_times_out_as_a_tls_handshake`);
/// the banner timer never starts.
#[test]
fn a_tls_handshake_that_never_ends_times_out_as_a_tls_handshake() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (pem, _) = localhost_cert();
    let config = ClientConfig::builder("admin", "amp111")
        .seed(12)
        .connect_timeout(Duration::from_millis(300))
        .banner_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add_tls(
            Instant::now(),
            config,
            silent.local_addr().unwrap(),
            client_tls(&pem, "localhost"),
        )
        .unwrap();
    let down = first_disconnect(&mut driver, conn);
    assert_eq!(down, DisconnectReason::TlsHandshakeTimeout);
    assert!(driver.close(Instant::now(), conn));
}

#[test]
fn a_bad_server_name_is_refused_when_added() {
    let (pem, _) = localhost_cert();
    let mut driver = MioDriver::new().unwrap();
    let err = driver
        .add_tls(
            Instant::now(),
            config(9),
            "127.0.0.1:5039".parse().unwrap(),
            client_tls(&pem, "not a name"),
        )
        .unwrap_err();
    assert!(
        matches!(&err, ami_mio::AddError::TlsServerName { name } if name == "not a name"),
        "{err:?}"
    );
    assert!(driver.connections().is_empty());
}

/// A server that ends its TLS session (close_notify) and leaves the TCP connection open
/// until the test is over: `reader().read` says Ok(0) once, and `read_tls` never does.
#[test]
fn a_close_notify_ends_the_session_though_the_tcp_connection_stays_open() {
    use std::io::{Read, Write};
    let (pem, server) = localhost_cert();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let pbx = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(server).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(b"Asterisk Call Manager/9.0.0\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tls.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed before logging in");
            got.extend_from_slice(&buf[..n]);
        }
        let login = String::from_utf8_lossy(&got).into_owned();
        let id = login
            .lines()
            .find_map(|l| l.strip_prefix("ActionID: "))
            .unwrap()
            .to_string();
        let answer = format!(
            "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
        );
        tls.write_all(answer.as_bytes()).unwrap();
        tls.conn.send_close_notify();
        while tls.conn.wants_write() {
            tls.conn.write_tls(&mut tls.sock).unwrap();
        }
        // The TCP connection stays open, silent, until the test has its answer.
        let _ = done_rx.recv_timeout(Duration::from_secs(10));
    });
    let mut driver = MioDriver::new().unwrap();
    let cfg = ClientConfig::builder("admin", "amp111")
        .seed(41)
        .ping_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let conn = driver
        .add_tls(Instant::now(), cfg, addr, client_tls(&pem, "localhost"))
        .unwrap();
    assert_eq!(ready(&mut driver), conn);
    let mut down = None;
    drive(&mut driver, Duration::from_secs(2), |_, r| {
        for (_, n) in r.notices {
            if let Notice::Disconnected { reason, .. } = n {
                down.get_or_insert(reason);
            }
        }
        down.is_some()
    });
    let _ = done_tx.send(());
    pbx.join().unwrap();
    assert!(
        down.is_some(),
        "the server ended the TLS session; the client still thinks it is up"
    );
}
