//! What a reconnect costs must be given back: hundreds of connection attempts against a
//! server that accepts and hangs up, a port that refuses, or a simulator that restarts,
//! leave as many file descriptors, threads and tasks as a few attempts did. Counted from
//! `/proc/self` and the runtime's metrics, never timed. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The lock only runs the tests one at a time, each on a runtime of its own: no task of one
// test ever waits for it.
#![allow(clippy::await_holding_lock)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

#[path = "../../ami-proto/tests/support/process_counts.rs"]
mod process_counts;

use ami_proto::fleet::FleetConfig;
use ami_proto::{ClientConfig, Status};
use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use process_counts::{assert_no_growth_of, eager, hangs_up, open_fds, threads, SLACK};
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::Duration;

/// The tests count the whole process's descriptors and threads: one at a time.
static ALONE: Mutex<()> = Mutex::new(());

/// A loopback port that refuses connections (bound, never listening).
fn refusing() -> (tokio::net::TcpSocket, SocketAddr) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = s.local_addr().unwrap();
    (s, addr)
}

/// Waits (by counting, 60 s at most) until `connects()` reaches `n`.
async fn until_connects(n: u64, connects: impl Fn() -> u64) {
    for _ in 0..60_000 {
        if connects() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{} connects of {n}", connects());
}

/// fds, threads and live tasks now.
fn resources() -> (usize, usize, usize) {
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    (open_fds(), threads(), tasks)
}

fn assert_no_growth(what: &str, early: (usize, usize, usize), late: (usize, usize, usize)) {
    assert_no_growth_of(
        what,
        &[
            ("open fds", early.0, late.0),
            ("threads", early.1, late.1),
            ("live tasks", early.2, late.2),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reconnecting_to_a_server_that_hangs_up_keeps_its_fds_threads_and_tasks() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let addr = hangs_up();
    let (ami, _events) = ami_tokio::spawn(eager(), addr);
    until_connects(20, || ami.stats().connects).await;
    let early = resources();
    until_connects(520, || ami.stats().connects).await;
    assert_no_growth("500 hang-ups", early, resources());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reconnecting_to_a_refusing_port_keeps_its_fds_threads_and_tasks() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let (_port, addr) = refusing();
    let (ami, _events) = ami_tokio::spawn(eager(), addr);
    until_connects(20, || ami.stats().connects).await;
    let early = resources();
    until_connects(520, || ami.stats().connects).await;
    assert_no_growth("500 refusals", early, resources());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reconnecting_by_host_name_keeps_its_fds_threads_and_tasks() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let addr = hangs_up();
    let (ami, _events) = ami_tokio::spawn(eager(), ("localhost", addr.port()));
    until_connects(20, || ami.stats().connects).await;
    let early = resources();
    until_connects(320, || ami.stats().connects).await;
    assert_no_growth("300 lookups and hang-ups", early, resources());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_logging_in_again_after_each_restart_keeps_its_fds_threads_and_tasks() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let (ami, mut events) = ami_tokio::spawn(eager(), front.local_addr());
    // The stream is read, as an application would.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let status = ami.status();
    let mut early = None;
    for round in 0..150 {
        // Ready after one more login than rounds so far: each restart ended the session
        // and a new one logged in. Counted, not watched for a status other than Ready: a
        // watch keeps only the latest status, and on a loaded machine the session can be
        // down and back before this task looks (seen: "the restart ends the session").
        tokio::time::timeout(Duration::from_secs(10), async {
            while ami.stats().logins <= round || !matches!(status.get(), Status::Ready { .. }) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("logged in again after the restart");
        if round == 10 {
            early = Some(resources());
        }
        front.restart(Duration::ZERO);
    }
    assert!(ami.stats().logins >= 150);
    assert_no_growth("150 restarts", early.unwrap(), resources());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_started_and_closed_one_after_another_leave_nothing_behind() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let mut early = None;
    for round in 0..150 {
        let (ami, _events) = ami_tokio::spawn(eager(), front.local_addr());
        tokio::time::timeout(Duration::from_secs(10), ami.wait_ready())
            .await
            .expect("ready")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), ami.logoff())
            .await
            .expect("logged off");
        drop((ami, _events));
        if round == 10 {
            early = Some(resources());
        }
    }
    // The last driver may still be finishing its task.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_no_growth("150 sessions", early.unwrap(), resources());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_server_reconnecting_to_a_server_that_hangs_up_keeps_its_fds_and_tasks() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let addr = hangs_up();
    let (fleet, _events) = ami_tokio::fleet::spawn_fleet(FleetConfig::default());
    fleet.add("pbx", eager(), addr).unwrap();
    let connects = || fleet.stats().total.connects;
    until_connects(20, connects).await;
    let early = resources();
    until_connects(520, connects).await;
    assert_no_growth("500 fleet hang-ups", early, resources());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_servers_added_and_removed_again_and_again_leave_nothing_behind() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let (fleet, mut events) = ami_tokio::fleet::spawn_fleet(FleetConfig::default());
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let mut early = None;
    for round in 0..150 {
        let name = format!("pbx-{round}");
        fleet.add(&name, eager(), front.local_addr()).unwrap();
        let mut ready = false;
        for _ in 0..10_000 {
            if matches!(
                fleet.status(&name),
                Some(ami_proto::fleet::ServerStatus::Ready { .. })
            ) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(ready, "{name} ready");
        assert!(fleet.remove(&name));
        if round == 10 {
            early = Some(resources());
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_no_growth("150 servers", early.unwrap(), resources());
    let stats = fleet.stats();
    assert!(stats.servers.is_empty(), "{:?}", stats.servers.len());
    assert!(fleet.read_counters().is_empty());
}

/// A loopback port where connects hang, as to an address that drops SYNs, while the
/// returned sockets live: a listener with a backlog of 0 whose one slot is taken.
fn silent() -> ((tokio::net::TcpListener, std::net::TcpStream), SocketAddr) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let l = s.listen(0).unwrap();
    let addr = l.local_addr().unwrap();
    let filler = std::net::TcpStream::connect(addr).unwrap();
    ((l, filler), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_connects_time_out_keeps_its_fds_threads_and_tasks() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let (_held, addr) = silent();
    let config = ClientConfig::builder("admin", "amp111")
        .seed(11)
        .connect_timeout(Duration::from_millis(2))
        .backoff_base(Duration::from_micros(1))
        .backoff_max(Duration::from_micros(1))
        .breaker_threshold(u32::MAX)
        .build()
        .unwrap();
    let (ami, _events) = ami_tokio::spawn(config, addr);
    until_connects(20, || ami.stats().connects).await;
    let early = resources();
    until_connects(220, || ami.stats().connects).await;
    assert_no_growth("200 connect timeouts", early, resources());
}

/// A server that greets, takes any Login, then answers nothing more and closes its side
/// once the client has closed its own: a peer gone quiet, which only the heartbeat finds.
fn goes_quiet() -> SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.write_all(b"Asterisk Call Manager/11.0.0\r\n");
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                let mut id = String::new();
                while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                    if let Some(v) = line.strip_prefix("ActionID: ") {
                        id = v.trim().to_string();
                    }
                    if line == "\r\n" {
                        // One write: pieces would wait for the client's delayed ACK (Nagle).
                        let _ = s.write_all(
                            format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n")
                                .as_bytes(),
                        );
                        break;
                    }
                    line.clear();
                }
                // Reads on to the client's end, answering nothing.
                let mut buf = [0u8; 4096];
                while matches!(std::io::Read::read(&mut r, &mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_heartbeat_gives_up_on_a_quiet_peer_keeps_its_fds_threads_and_tasks() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let addr = goes_quiet();
    let config = ClientConfig::builder("admin", "amp111")
        .seed(11)
        .ping_interval(Duration::from_millis(2))
        .pong_timeout(Duration::from_millis(2))
        .backoff_base(Duration::from_micros(1))
        .backoff_max(Duration::from_micros(1))
        .breaker_threshold(u32::MAX)
        .build()
        .unwrap();
    let (ami, _events) = ami_tokio::spawn(config, addr);
    let logins = || ami.stats().logins;
    until_connects(10, logins).await;
    let early = resources();
    until_connects(210, logins).await;
    assert_no_growth("200 heartbeat losses", early, resources());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_session_whose_handshakes_fail_keeps_its_fds_threads_and_tasks() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let addr = hangs_up();
    let (pem, _) = ami_conformance::localhost_cert();
    let tls = ami_conformance::client_tls(&pem, "localhost");
    let (ami, _events, driver) =
        ami_async::session_tls::<ami_tokio::Tokio>(eager(), addr, tls).unwrap();
    tokio::spawn(driver);
    until_connects(20, || ami.stats().connects).await;
    let early = resources();
    until_connects(320, || ami.stats().connects).await;
    assert_no_growth("300 failed handshakes", early, resources());
}

#[test]
fn a_tls_session_logging_in_again_after_each_restart_keeps_its_fds_threads_and_tasks() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let (pem, server) = ami_conformance::localhost_cert();
    // Its runtime is its own, started outside the test's.
    let terminator = ami_conformance::TlsTerminator::start(server, front.local_addr());
    let tls = ami_conformance::client_tls(&pem, "localhost");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(tls_restarts(&front, terminator.addr, tls));
}

async fn tls_restarts(front: &TcpFront, addr: SocketAddr, tls: ami_async::Tls) {
    let (ami, mut events, driver) =
        ami_async::session_tls::<ami_tokio::Tokio>(eager(), addr, tls).unwrap();
    tokio::spawn(driver);
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let status = ami.status();
    let mut early = None;
    for round in 0..100 {
        // Counted, not watched for a status other than Ready (see the plain TCP test).
        tokio::time::timeout(Duration::from_secs(10), async {
            while ami.stats().logins <= round || !matches!(status.get(), Status::Ready { .. }) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("logged in again after the restart");
        if round == 10 {
            early = Some(resources());
        }
        front.restart(Duration::ZERO);
    }
    assert_no_growth("100 TLS restarts", early.unwrap(), resources());
}

#[test]
fn sessions_on_threads_of_their_own_started_and_logged_off_leave_no_thread_behind() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut early = None;
    for round in 0..100 {
        let (ami, events) = ami_tokio::run_on_thread(eager(), front.local_addr()).unwrap();
        rt.block_on(async {
            ami.wait_ready().await.unwrap();
            ami.logoff().await;
        });
        drop((ami, events));
        if round == 10 {
            early = Some((open_fds(), threads()));
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let late = (open_fds(), threads());
    eprintln!("100 sessions on threads: {early:?} -> {late:?}");
    let early = early.unwrap();
    assert!(late.0 <= early.0 + SLACK, "fds {early:?} -> {late:?}");
    assert!(late.1 <= early.1 + SLACK, "threads {early:?} -> {late:?}");
}
