//! Helpers shared by the adapter tests. The server side is the simulator's loopback TCP front
//! ([`ami_sim::tcp::TcpFront`]): real sockets, the real clock, the simulated Asterisk with the
//! default users and the `ami-test` dialplan. Every wait here has a deadline, so a bug fails
//! a test instead of hanging it.
//!
//! The one case the simulator cannot play, a server that reads its socket slowly, lives in
//! [`slow_reader`].
#![allow(dead_code)]
// Test support: a panic here is a failed test, never reachable from a user's program.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod slow_reader;

use ami_mio::{ConnId, MioDriver, Notice, Report};
use ami_proto::{ActionId, ClientConfig, Message, Outcome};
use ami_sim::tcp::TcpFront;
use ami_sim::{SimConfig, SimStats};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A simulator with the default users and dialplan on a fresh loopback port.
pub fn front() -> TcpFront {
    front_with(SimConfig::default())
}

/// A simulator with `config` on a fresh loopback port.
pub fn front_with(config: SimConfig) -> TcpFront {
    TcpFront::start(config, "127.0.0.1:0").expect("start the simulator")
}

/// A config for tests: the simulator's admin user, short backoff, a seed of its own.
pub fn config(seed: u64) -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .seed(seed)
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// Steps and waits until `done` says so or `limit` passes; returns false on timeout.
pub fn drive(
    driver: &mut MioDriver,
    limit: Duration,
    mut done: impl FnMut(&mut MioDriver, Report) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let report = driver.step(Instant::now()).unwrap();
        if done(driver, report) {
            return true;
        }
        driver.wait(Some(Duration::from_millis(5))).unwrap();
    }
    false
}

/// How long the waits below give the loopback simulator.
pub const LIMIT: Duration = Duration::from_secs(5);

/// Steps until connection `conn` is Ready; fails the test after [`LIMIT`].
pub fn wait_ready(driver: &mut MioDriver, conn: ConnId) {
    assert!(
        drive(driver, LIMIT, |_, r| r
            .notices
            .iter()
            .any(|(c, n)| *c == conn && matches!(n, Notice::Ready { .. }))),
        "no Ready within {LIMIT:?}"
    );
}

/// Steps until action `want` completes; its outcome (fails the test after [`LIMIT`]).
pub fn complete(driver: &mut MioDriver, want: &ActionId) -> Outcome {
    let mut got = None;
    let ok = drive(driver, LIMIT, |_, r| {
        for (_, n) in r.notices {
            if let Notice::Completed { id, outcome } = n {
                if &id == want {
                    got = Some(outcome);
                }
            }
        }
        got.is_some()
    });
    assert!(ok, "action {want} did not complete within {LIMIT:?}");
    got.unwrap()
}

/// Polls the simulator's counters (every 2 ms) until `cond` holds; false after `limit`.
pub fn sim_until(front: &TcpFront, limit: Duration, cond: impl Fn(&SimStats) -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond(&front.stats()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// A 127.0.0.1 port that refuses connections for the rest of the test binary's run. No
/// server is needed to be unreachable.
pub fn refused_addr() -> SocketAddr {
    // Held until the test binary exits.
    static HELD: Mutex<Vec<socket2::Socket>> = Mutex::new(Vec::new());
    let (socket, addr) = refused_port();
    HELD.lock().unwrap_or_else(|p| p.into_inner()).push(socket);
    addr
}

/// A 127.0.0.1 port that refuses connections while the socket lives: bound, so no other
/// socket can take the port, and never listening, so every connect to it is refused. (A
/// listener bound and dropped freed its port, and another test's listener once took one of
/// a hundred such "refused" ports.) Drop it to start a server on the port.
#[allow(dead_code)] // not every test binary starts a server on a refused port
pub fn refused_port() -> (socket2::Socket, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}

/// A 127.0.0.1 port where connects hang (as to an address that drops SYNs) for the rest of
/// the test binary's run: a listener with a backlog of 0 whose one queue slot is taken by a
/// connection never accepted, so the kernel drops every later SYN.
#[allow(dead_code)] // not every test binary needs one
pub fn silent_addr() -> SocketAddr {
    use socket2::{Domain, Socket, Type};
    static HELD: Mutex<Vec<(socket2::Socket, std::net::TcpStream)>> = Mutex::new(Vec::new());
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let filler = std::net::TcpStream::connect(addr).unwrap();
    HELD.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((listener, filler));
    addr
}

/// A UserEvent of the simulator's storms: its `Seq`.
pub fn storm_seq(msg: &Message) -> Option<u64> {
    if msg.event() == Some("UserEvent") && msg.get_str("UserEvent") == Some("SimStorm") {
        msg.get_str("Seq").and_then(|s| s.parse().ok())
    } else {
        None
    }
}

#[allow(unused_imports)] // not every test binary floods
pub use ami_sim::flood::Flood;

/// A name resolver for `Options::resolve` whose lookups of names starting `hangs` block
/// until [`release`](Self::release) (an unreachable DNS server), while every other name
/// resolves to 127.0.0.1 at `port`; it counts the lookups of each name.
pub struct HangingDns {
    release: std::sync::Arc<(Mutex<bool>, std::sync::Condvar)>,
    calls: std::sync::Arc<Mutex<std::collections::HashMap<String, usize>>>,
}

impl HangingDns {
    /// A resolver whose hanging lookups wait for `release`.
    pub fn new() -> HangingDns {
        HangingDns {
            release: Default::default(),
            calls: Default::default(),
        }
    }

    /// The resolver to put in `Options::resolve`: other names go to 127.0.0.1:`port`.
    pub fn resolve(&self, port: u16) -> std::sync::Arc<ami_mio::ResolveFn> {
        let (release, calls) = (self.release.clone(), self.calls.clone());
        std::sync::Arc::new(move |host: &str| {
            *calls.lock().unwrap().entry(host.to_string()).or_default() += 1;
            if host.starts_with("hangs") {
                let (lock, cv) = &*release;
                let mut released = lock.lock().unwrap();
                while !*released {
                    released = cv.wait(released).unwrap();
                }
                return Err(std::io::Error::other("gave up"));
            }
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        })
    }

    /// Ends every hanging lookup (with an error).
    pub fn release(&self) {
        *self.release.0.lock().unwrap() = true;
        self.release.1.notify_all();
    }

    /// How many lookups each name had.
    pub fn calls(&self) -> std::collections::HashMap<String, usize> {
        self.calls.lock().unwrap().clone()
    }
}

/// A client config that gives up a connect after 100 ms and retries within 10 to 50 ms:
/// many attempts in a short test.
pub fn quick_retries(seed: u64) -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .seed(seed)
        .connect_timeout(Duration::from_millis(100))
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(50))
        .build()
        .unwrap()
}
