//! A Logoff to a server that stopped reading (a hung Asterisk whose socket is full), on the
//! mio driver: the session ends in bounded time (`logoff_timeout`), every action completes
//! once with a typed error (the queued ones not sent), the event stream ends with the
//! session's `Disconnected`, later sends are refused, and no queued action ever reaches
//! the server. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

mod support;

use ami_mio::{MioDriver, Notice};
use ami_proto::{Action, ActionError, ClientConfig, StreamItem};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{drive, wait_ready};

/// Padding actions of about 120 KB each.
const FILLERS: usize = 100;
/// About 4.8 MB in the pipeline: more than the socket buffers hold.
const ON_WIRE: usize = 40;

fn filler(n: usize) -> Action {
    let pad = "x".repeat(1000);
    (0..120).fold(
        Action::new("UserEvent").field("UserEvent", format!("Fill{n}")),
        |a, _| a.field("Pad", pad.as_str()),
    )
}

/// Reads up to the end of one message (the Login).
fn read_message(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the client hung up");
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A fake Asterisk that logs one client in, reads nothing until resumed, then reads until
/// the client hangs up: everything the client wrote after the login.
fn deaf_until_resumed() -> (
    SocketAddr,
    mpsc::Sender<()>,
    std::thread::JoinHandle<Vec<u8>>,
) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(1).unwrap();
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();
    let (resume, resumed) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.write_all(b"Asterisk Call Manager/11.0.0\r\n").unwrap();
        let login = read_message(&mut s);
        let id = login
            .lines()
            .find_map(|l| l.strip_prefix("ActionID: "))
            .expect("the Login carries an ActionID");
        let ok = format!(
            "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
        );
        s.write_all(ok.as_bytes()).unwrap();
        resumed.recv().expect("told to resume");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    (addr, resume, thread)
}

#[test]
fn a_logoff_to_a_server_that_stopped_reading_ends_in_bounded_time_failing_each_action_once() {
    let (addr, resume, server) = deaf_until_resumed();
    let config = ClientConfig::builder("admin", "deaf")
        .seed(9)
        .pipeline_depth(ON_WIRE)
        .logoff_timeout(Duration::from_secs(1))
        .ping_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver.add(Instant::now(), config, addr).unwrap();
    wait_ready(&mut driver, conn);
    let mut outcomes: HashMap<_, Vec<_>> = (0..FILLERS)
        .map(|n| {
            let id = driver
                .send(Instant::now(), conn, filler(n))
                .expect("queued");
            (id, Vec::new())
        })
        .collect();
    let mut take = |notices: Vec<(ami_mio::ConnId, Notice)>, closed: &mut bool| {
        for (_, n) in notices {
            match n {
                Notice::Completed { id, outcome } => {
                    outcomes.get_mut(&id).expect("one of ours").push(outcome)
                }
                Notice::Closed { .. } => *closed = true,
                _ => {}
            }
        }
    };
    let mut closed = false;
    drive(&mut driver, Duration::from_millis(300), |_, r| {
        take(r.notices, &mut closed);
        false
    });
    assert!(
        driver.stats(conn).unwrap().transmit_pending > 1000,
        "the socket is full"
    );
    let started = Instant::now();
    assert!(driver.logoff(Instant::now(), conn));
    let ended = drive(&mut driver, Duration::from_secs(10), |_, r| {
        take(r.notices, &mut closed);
        closed
    });
    let took = started.elapsed();
    assert!(ended, "the session did not close");
    assert!(
        took < Duration::from_secs(3),
        "logoff_timeout 1 s, yet it took {took:?}"
    );
    let mut not_sent = 0;
    for (id, got) in &outcomes {
        assert_eq!(got.len(), 1, "{id}: {got:?}");
        match &got[0] {
            Err(ActionError::NotSent(_)) => not_sent += 1,
            Err(_) => {}
            Ok(r) => panic!("{id} succeeded on a server that read none of it: {r:?}"),
        }
    }
    assert!(not_sent >= FILLERS - ON_WIRE, "{not_sent} not sent");
    let mut last = None;
    while let Some(item) = driver.poll_event(conn) {
        last = Some(item);
    }
    assert!(
        matches!(last, Some(StreamItem::Disconnected { .. })),
        "the stream's last item: {last:?}"
    );
    assert!(driver
        .send(Instant::now(), conn, Action::new("Ping"))
        .is_err());
    resume.send(()).unwrap();
    let got = server.join().unwrap();
    let fill = b"UserEvent: Fill";
    let fills = got.windows(fill.len()).filter(|w| w == fill).count();
    assert!(
        fills <= ON_WIRE,
        "{fills} padding actions reached the server, of {ON_WIRE} it could have been sent"
    );
}

/// A Logoff while the client waits to reconnect (its server refuses connections), and a
/// close while its Login goes unanswered: each ends at the next step, fails the queued
/// action once as not sent, ends the event stream and refuses later sends.
#[test]
fn a_logoff_in_the_backoff_and_a_close_during_the_login_end_at_once_failing_queued_actions_not_sent(
) {
    let slow_retries = || {
        ClientConfig::builder("admin", "x")
            .seed(3)
            .backoff_base(Duration::from_secs(30))
            .backoff_max(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    // A greeting server that reads the Login and never answers it.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_addr = mute.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in mute.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.write_all(b"Asterisk Call Manager/11.0.0\r\n");
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let mut driver = MioDriver::new().unwrap();
    let backing_off = driver
        .add(Instant::now(), slow_retries(), support::refused_addr())
        .unwrap();
    let logging_in = driver
        .add(Instant::now(), slow_retries(), mute_addr)
        .unwrap();
    assert!(drive(&mut driver, Duration::from_secs(5), |d, _| {
        matches!(
            d.client(backing_off).unwrap().status(),
            ami_proto::Status::Disconnected { .. }
        )
    }));
    // Long enough for the Login to be written and left unanswered.
    drive(&mut driver, Duration::from_millis(300), |_, _| false);
    let mut queued = HashMap::new();
    for conn in [backing_off, logging_in] {
        let id = driver
            .send(Instant::now(), conn, Action::new("Ping"))
            .unwrap();
        queued.insert(id, conn);
    }
    let started = Instant::now();
    assert!(driver.logoff(Instant::now(), backing_off));
    assert!(driver.close(Instant::now(), logging_in));
    assert!(
        driver.close(Instant::now(), logging_in),
        "closing twice is quiet"
    );
    let mut outcomes = Vec::new();
    let mut closed = 0;
    assert!(drive(&mut driver, Duration::from_secs(2), |_, r| {
        for (conn, n) in r.notices {
            match n {
                Notice::Completed { id, outcome } => {
                    assert_eq!(queued.get(&id), Some(&conn));
                    outcomes.push(outcome);
                }
                Notice::Closed { .. } => closed += 1,
                _ => {}
            }
        }
        closed == 2
    }));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Err(ActionError::NotSent(_)))),
        "{outcomes:?}"
    );
    for conn in [backing_off, logging_in] {
        while driver.poll_event(conn).is_some() {}
        assert!(driver
            .send(Instant::now(), conn, Action::new("Ping"))
            .is_err());
    }
}
