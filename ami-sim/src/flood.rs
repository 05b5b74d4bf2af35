//! A simulated Asterisk on loopback that floods its logged-in sessions with UserEvents as
//! fast as they read them: the noisy neighbour of fleet tests and throughput measurements.

use crate::tcp::TcpFront;
use crate::{SimConfig, SimStats};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A [`TcpFront`] plus a feeder thread that tops the simulator's output up with a storm
/// ([`SimServer::emit_user_events`](crate::SimServer::emit_user_events), `UserEvent:
/// SimStorm` numbered by `Seq` from 0 in each batch) whenever less than [`Flood::LOW`] bytes
/// wait to be written. The backlog stays under the simulator's `socket_buffer` (256 KiB), so
/// the server never sees a blocked write and the rate is set by how fast the client reads,
/// like a busy Asterisk. Stopped on drop.
pub struct Flood {
    front: Arc<TcpFront>,
    stop: Arc<AtomicBool>,
    feeder: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flood")
            .field("addr", &self.front.local_addr())
            .finish_non_exhaustive()
    }
}

impl Flood {
    /// Events per top-up (about 75 bytes each).
    pub const BATCH: usize = 1000;
    /// Top up when fewer bytes than this wait to be written.
    pub const LOW: u64 = 128 << 10;

    /// Starts a simulator with the default users on a fresh 127.0.0.1 port, and its feeder.
    pub fn start() -> io::Result<Flood> {
        Flood::start_with(SimConfig::default(), None, Flood::LOW)
    }

    /// Like [`start`](Self::start), with events of about `event_bytes` each
    /// ([`SimServer::emit_user_events_sized`](crate::SimServer::emit_user_events_sized)):
    /// realistic sizes for throughput measurements. The simulator's `socket_buffer` is 4 MiB
    /// and the feeder tops up below 1 MiB, so that a fast reader is not held back by the
    /// feeder's turns and the server still never sees a blocked write.
    pub fn start_sized(event_bytes: usize) -> io::Result<Flood> {
        let config = SimConfig {
            socket_buffer: 4 << 20,
            ..SimConfig::default()
        };
        Flood::start_with(config, Some(event_bytes), 1 << 20)
    }

    fn start_with(config: SimConfig, event_bytes: Option<usize>, low: u64) -> io::Result<Flood> {
        let front = Arc::new(TcpFront::start(config, "127.0.0.1:0")?);
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
                            if st.logins > 0 && waiting < low {
                                match event_bytes {
                                    Some(b) => sim.emit_user_events_sized(now, Flood::BATCH, b),
                                    None => sim.emit_user_events(now, Flood::BATCH),
                                }
                            }
                        });
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })?
        };
        Ok(Flood {
            front,
            stop,
            feeder: Some(feeder),
        })
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
            // The feeder only sleeps and locks the simulator: it ends within a turn.
            let _ = t.join();
        }
    }
}
