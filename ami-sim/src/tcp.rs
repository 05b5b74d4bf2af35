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
//! Like Asterisk's, a session reads no more than it can take: while it is busy (a sync
//! Originate, a delayed reply) and its input backlog is full
//! ([`SimServer::input_room`]), the front leaves the client's bytes in the kernel, so TCP
//! flow control holds the client back and nothing is dropped. A client that shuts down its
//! sending side still gets the replies to everything it wrote
//! ([`SimServer::client_eof`]), then EOF. [`Faults::set_max_chunk`] makes each write to the
//! socket at most that long, but the client's kernel may join the pieces again: only the
//! sans-IO [`SimServer::transmit`] guarantees reads that small.
//!
//! Only loopback addresses may be bound (`127.0.0.0/8`, `::1`). If the thread ever dies (a
//! bug in the simulator), its sockets close with it and [`TcpFront::status`] says why.
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

use crate::{Faults, SessionId, SessionState, SimConfig, SimServer, SimStats};
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
    /// Set by the thread if it panics: the panic's message.
    died: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

/// Whether a [`TcpFront`] still serves, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrontStatus {
    /// Accepting connections and moving their bytes.
    Serving,
    /// Stopped by [`TcpFront::shutdown`].
    Stopped,
    /// The serving thread panicked, with this message: a bug in the simulator. Its sockets
    /// closed with it (clients saw EOF or a reset, new connections are refused); the
    /// simulator itself stays readable through [`TcpFront::stats`] and
    /// [`TcpFront::with_server`].
    Died(String),
}

struct Conn {
    sid: SessionId,
    stream: TcpStream,
    /// The client shut down its sending side: nothing more to read.
    read_eof: bool,
    /// Since when a closed session's remaining output has not moved because the client does
    /// not read it.
    stalled_since: Option<Instant>,
}

/// Locks a simulator's state (shared with `flood`): a panic while holding the lock leaves
/// the simulator usable for inspection.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TcpFront {
    /// Binds `addr` (a loopback address: `127.0.0.1:<port>`, any other `127.x.y.z`, or
    /// `[::1]:<port>`; port 0 for any) and starts the thread. Any other address is refused
    /// with [`ErrorKind::InvalidInput`], and so is a config that cannot work
    /// ([`SimConfig::validate`]; the error carries its
    /// [`SimConfigError`](crate::SimConfigError), see [`io::Error::get_ref`]).
    pub fn start(config: SimConfig, addr: &str) -> io::Result<TcpFront> {
        config
            .validate()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        let wanted: SocketAddr = addr
            .parse()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        // A simulated Asterisk accepts any login it is configured for: it never faces a
        // network, only this host.
        if !wanted.ip().is_loopback() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "TcpFront only binds a loopback address (127.0.0.0/8 or ::1)",
            ));
        }
        let listener = TcpListener::bind(wanted)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let sim = Arc::new(Mutex::new(SimServer::new(config, Instant::now())));
        let stop = Arc::new(AtomicBool::new(false));
        let died = Arc::new(Mutex::new(None));
        let thread = {
            let sim = Arc::clone(&sim);
            let stop = Arc::clone(&stop);
            let died = Arc::clone(&died);
            std::thread::Builder::new()
                .name("ami-sim-tcp".to_string())
                .spawn(move || guarded(local, &died, || run(listener, &sim, &stop)))?
        };
        Ok(TcpFront {
            addr: local,
            sim,
            stop,
            died,
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the front still serves: [`FrontStatus::Died`] if its thread panicked, so a
    /// test that sees its clients cut off can tell a simulator bug from a client one.
    pub fn status(&self) -> FrontStatus {
        if let Some(msg) = lock(&self.died).clone() {
            return FrontStatus::Died(msg);
        }
        match &self.thread {
            Some(t) if !t.is_finished() => FrontStatus::Serving,
            _ => FrontStatus::Stopped,
        }
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

    /// Stops the thread and closes every socket. Also done on drop. A thread that died
    /// is reported in the log here as well (and stays reported by
    /// [`status`](Self::status)).
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("ami-sim: TCP front thread panicked");
            }
        }
        if let Some(msg) = lock(&self.died).as_deref() {
            log::error!("ami-sim: TCP front on {} had died: {msg}", self.addr);
        }
    }
}

impl Drop for TcpFront {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs the thread's body; if it panics, records why in `died` (and the log) instead of
/// ending silently. The body's sockets are dropped by the unwinding, so clients see the
/// front go away.
fn guarded(addr: SocketAddr, died: &Mutex<Option<String>>, body: impl FnOnce()) {
    let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) else {
        return;
    };
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_string());
    log::error!("ami-sim: TCP front on {addr} died: {msg}");
    *lock(died) = Some(msg);
}

fn run(listener: TcpListener, sim: &Mutex<SimServer>, stop: &AtomicBool) {
    let mut conns: Vec<Conn> = Vec::new();
    // Connections closed at once for the cap so far (logged at each power of two).
    let mut over_cap = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::SeqCst) {
        {
            let mut sim = lock(sim);
            let now = Instant::now();
            accept_all(&listener, &mut sim, &mut conns, &mut over_cap, now);
            conns.retain_mut(|c| service(c, &mut sim, &mut buf, now));
            sim.handle_timeout(Instant::now());
        }
        std::thread::sleep(POLL);
    }
    for c in conns {
        let _ = c.stream.shutdown(Shutdown::Both);
    }
}

fn accept_all(
    listener: &TcpListener,
    sim: &mut SimServer,
    conns: &mut Vec<Conn>,
    over_cap: &mut u64,
    now: Instant,
) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if conns.len() >= MAX_CONNECTIONS {
                    let _ = stream.shutdown(Shutdown::Both);
                    // Refused as `authlimit` refuses: counted, and said (rate-limited: a
                    // client retrying in a loop would otherwise write a line per attempt).
                    sim.refused_by_front();
                    *over_cap += 1;
                    if over_cap.is_power_of_two() {
                        log::warn!(
                            "ami-sim: {MAX_CONNECTIONS} connections open; a new one from {peer} \
                             closed at once ({over_cap} so far, counted in \
                             SimStats::sessions_refused)"
                        );
                    }
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
                conns.push(Conn {
                    sid,
                    stream,
                    read_eof: false,
                    stalled_since: None,
                });
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
    // Client to server, no more than the session can take: the rest stays in the kernel
    // and TCP flow control holds the client back.
    let mut read = 0;
    while !c.read_eof && read < READ_PER_ROUND {
        let want = sim
            .input_room(c.sid)
            .min(buf.len())
            .min(READ_PER_ROUND - read);
        if want == 0 {
            break;
        }
        match c.stream.read(&mut buf[..want]) {
            Ok(0) => {
                // A half-close: the client may still read the replies to what it wrote.
                c.read_eof = true;
                sim.client_eof(c.sid, now);
            }
            Ok(n) => {
                read += n;
                sim.receive(c.sid, now, &buf[..n]);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                sim.client_closed(c.sid, now);
                return finish(c, sim);
            }
        }
    }
    // Server to client.
    let mut moved = false;
    loop {
        let data = sim.transmit(c.sid);
        if data.is_empty() {
            break;
        }
        match c.stream.write(data) {
            Ok(0) => break,
            Ok(n) => {
                moved = true;
                sim.advance_transmit(c.sid, n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                // The client is gone: what it has not read is lost, whatever the session.
                sim.client_closed(c.sid, now);
                return finish(c, sim);
            }
        }
    }
    if sim.is_eof(c.sid) {
        let _ = c.stream.flush();
        return finish(c, sim);
    }
    // A closed session has no write timeout of its own: give a client that stops reading
    // its rest (Goodbye, replies after a half-close) the same `write_timeout` Asterisk's
    // writes get, so a vanished reader cannot hold the connection forever.
    if matches!(sim.session_state(c.sid), SessionState::Closed(_)) {
        if moved {
            c.stalled_since = None;
        } else {
            let since = *c.stalled_since.get_or_insert(now);
            if now.saturating_duration_since(since) > sim.config().write_timeout {
                return finish(c, sim);
            }
        }
    }
    true
}

/// Closes a finished connection's socket and forgets its session. Always false (the
/// connection is done).
fn finish(c: &mut Conn, sim: &mut SimServer) -> bool {
    let _ = c.stream.shutdown(Shutdown::Both);
    sim.forget(c.sid);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::panic)]
    fn a_thread_that_panics_leaves_its_message_for_status() {
        let died = Mutex::new(None);
        let addr: SocketAddr = ([127, 0, 0, 1], 1).into();
        guarded(addr, &died, || {});
        assert_eq!(*lock(&died), None);
        guarded(addr, &died, || panic!("boom {}", 7));
        assert_eq!(lock(&died).as_deref(), Some("boom 7"));
        guarded(addr, &died, || panic!("static"));
        assert_eq!(lock(&died).as_deref(), Some("static"));
    }
}
