//! A loopback TCP front for [`SimServer`]: real sockets and the real clock, for end-to-end
//! tests of a client. Not part of the sans-IO core.
//!
//! One background thread owns a non-blocking listener and the accepted streams and polls
//! them about every millisecond: it accepts, reads into [`SimServer::receive`], writes what
//! [`SimServer::transmit`] offers, closes sockets once a session is closed and drained, and
//! calls [`SimServer::handle_timeout`] with `Instant::now()`. The server sits behind a
//! mutex, so tests can inject faults or start calls while clients are connected. While the
//! simulated server is down after a restart, new connections are accepted and closed at once
//! (Asterisk would refuse them; both end in EOF before any banner).
//!
//! Only `127.0.0.1` may be bound.
//!
//! ```
//! use ami_sim::{tcp::TcpFront, SimConfig};
//! use std::io::{Read, Write};
//!
//! let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
//! let mut c = std::net::TcpStream::connect(front.local_addr()).unwrap();
//! c.write_all(b"Action: Logoff\r\n\r\n").unwrap();
//! let mut all = String::new();
//! c.read_to_string(&mut all).unwrap(); // EOF after Goodbye
//! assert!(all.starts_with("Asterisk Call Manager/11.0.0\r\nResponse: Goodbye\r\n"));
//! ```

use crate::{Faults, SessionId, SimConfig, SimServer, SimStats};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the polling thread sleeps between rounds.
const POLL: Duration = Duration::from_millis(1);
/// Most bytes read from one socket per round (keeps rounds short).
const READ_PER_ROUND: usize = 256 << 10;
/// Most connections kept at once; more are accepted and closed at once.
const MAX_CONNECTIONS: usize = 1024;

/// A [`SimServer`] listening on a loopback TCP port.
#[derive(Debug)]
pub struct TcpFront {
    addr: SocketAddr,
    sim: Arc<Mutex<SimServer>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Conn {
    sid: SessionId,
    stream: TcpStream,
}

/// Locks a simulator's state (shared with `flood`): a panic while holding the lock leaves
/// the simulator usable for inspection.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TcpFront {
    /// Binds `addr` (a loopback address, `127.0.0.1:<port>` or `[::1]:<port>`, port 0 for
    /// any) and starts the thread.
    pub fn start(config: SimConfig, addr: &str) -> io::Result<TcpFront> {
        let wanted: SocketAddr = addr
            .parse()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        // A simulated Asterisk accepts any login it is configured for: it never faces a
        // network, only this host.
        if !wanted.ip().is_loopback() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "TcpFront only binds a loopback address (127.0.0.1 or ::1)",
            ));
        }
        let listener = TcpListener::bind(wanted)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let sim = Arc::new(Mutex::new(SimServer::new(config, Instant::now())));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let sim = Arc::clone(&sim);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("ami-sim-tcp".to_string())
                .spawn(move || run(listener, &sim, &stop))?
        };
        Ok(TcpFront {
            addr: local,
            sim,
            stop,
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Restarts the simulated Asterisk now (see [`SimServer::restart`]).
    pub fn restart(&self, down_for: Duration) {
        lock(&self.sim).restart(Instant::now(), down_for);
    }

    /// Runs `f` on the fault settings.
    pub fn with_faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(lock(&self.sim).faults())
    }

    /// Runs `f` on the server with the current time (start calls, inject faults...).
    pub fn with_server<R>(&self, f: impl FnOnce(&mut SimServer, Instant) -> R) -> R {
        f(&mut lock(&self.sim), Instant::now())
    }

    /// The server's counters.
    pub fn stats(&self) -> SimStats {
        lock(&self.sim).stats()
    }

    /// Stops the thread and closes every socket. Also done on drop.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("ami-sim: TCP front thread panicked");
            }
        }
    }
}

impl Drop for TcpFront {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(listener: TcpListener, sim: &Mutex<SimServer>, stop: &AtomicBool) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::SeqCst) {
        {
            let mut sim = lock(sim);
            let now = Instant::now();
            accept_all(&listener, &mut sim, &mut conns, now);
            conns.retain_mut(|c| service(c, &mut sim, &mut buf, now));
            sim.handle_timeout(Instant::now());
        }
        std::thread::sleep(POLL);
    }
    for c in conns {
        let _ = c.stream.shutdown(Shutdown::Both);
    }
}

fn accept_all(listener: &TcpListener, sim: &mut SimServer, conns: &mut Vec<Conn>, now: Instant) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if conns.len() >= MAX_CONNECTIONS {
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let sid = match stream.local_addr() {
                    Ok(local) => sim.accept_from(now, local, peer),
                    Err(_) => sim.accept(now),
                };
                conns.push(Conn { sid, stream });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                log::warn!("ami-sim: accept failed: {e}");
                return;
            }
        }
    }
}

/// Moves bytes for one connection. Returns false when the connection is finished.
fn service(c: &mut Conn, sim: &mut SimServer, buf: &mut [u8], now: Instant) -> bool {
    // Client to server.
    let mut read = 0;
    while read < READ_PER_ROUND {
        match c.stream.read(buf) {
            Ok(0) => {
                sim.client_closed(c.sid, now);
                break;
            }
            Ok(n) => {
                read += n;
                sim.receive(c.sid, now, &buf[..n]);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                sim.client_closed(c.sid, now);
                break;
            }
        }
    }
    // Server to client.
    loop {
        let data = sim.transmit(c.sid);
        if data.is_empty() {
            break;
        }
        match c.stream.write(data) {
            Ok(0) => break,
            Ok(n) => sim.advance_transmit(c.sid, n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                sim.client_closed(c.sid, now);
                break;
            }
        }
    }
    if sim.is_eof(c.sid) {
        let _ = c.stream.flush();
        let _ = c.stream.shutdown(Shutdown::Both);
        sim.forget(c.sid);
        return false;
    }
    true
}
