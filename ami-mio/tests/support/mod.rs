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

use ami_mio::{MioDriver, Report};
use ami_proto::{ClientConfig, Message};
use ami_sim::tcp::TcpFront;
use ami_sim::{SimConfig, SimStats};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
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

/// A 127.0.0.1 port that refuses connections (bound, then released). No server is needed
/// to be unreachable.
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A UserEvent of the simulator's storms: its `Seq`.
pub fn storm_seq(msg: &Message) -> Option<u64> {
    if msg.event() == Some("UserEvent") && msg.get_str("UserEvent") == Some("SimStorm") {
        msg.get_str("Seq").and_then(|s| s.parse().ok())
    } else {
        None
    }
}

/// A simulator that floods its logged-in sessions with UserEvents as fast as they read them.
///
/// A feeder thread tops the simulator's output up with a storm
/// ([`SimServer::emit_user_events`](ami_sim::SimServer::emit_user_events)) whenever less
/// than [`Flood::LOW`] bytes are waiting to be written. The backlog therefore stays under
/// the simulator's `socket_buffer` (256 KiB): the server never sees a blocked write, and
/// the rate is set by how fast the client reads, like a busy Asterisk.
pub struct Flood {
    front: Arc<TcpFront>,
    stop: Arc<AtomicBool>,
    feeder: Option<JoinHandle<()>>,
}

impl Flood {
    /// Events per top-up (about 75 bytes each).
    pub const BATCH: usize = 1000;
    /// Top up when fewer bytes than this wait to be written.
    pub const LOW: u64 = 128 << 10;

    /// Starts a simulator and its feeder.
    pub fn start() -> Flood {
        let front = Arc::new(front());
        let stop = Arc::new(AtomicBool::new(false));
        let feeder = {
            let (front, stop) = (Arc::clone(&front), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("flood-feeder".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        front.with_server(|sim, now| {
                            let st = sim.stats();
                            let waiting = st.bytes_queued.saturating_sub(st.bytes_transmitted);
                            if st.logins > 0 && waiting < Flood::LOW {
                                sim.emit_user_events(now, Flood::BATCH);
                            }
                        });
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
                .unwrap()
        };
        Flood {
            front,
            stop,
            feeder: Some(feeder),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.front.local_addr()
    }

    /// The simulator's counters.
    pub fn stats(&self) -> SimStats {
        self.front.stats()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.feeder.take() {
            let _ = t.join();
        }
    }
}
