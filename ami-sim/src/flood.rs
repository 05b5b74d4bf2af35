//! A simulated Asterisk on loopback that floods its logged-in sessions with UserEvents as
//! fast as they read them: the noisy neighbour of fleet tests and throughput measurements.
//!
//! Unlike [`TcpFront`](crate::tcp::TcpFront), which polls its sockets every millisecond, a
//! flood blocks: a connection's writer blocks on the socket while the client's receive
//! buffer is full, its reader blocks on the client's input, the acceptor on the listener, and
//! the feeder (which tops the storm up while the writers write) waits until a writer has
//! taken the backlog below the low-water mark. So a flood costs CPU in proportion to the
//! events it sends, not a wake-up per tick; ten floods beside a client measure the client,
//! not the floods' timers.

use crate::tcp::lock;
use crate::{SessionId, SimConfig, SimServer, SimStats};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most bytes handed to one blocking write: the simulator's lock is not held during the
/// write, so this is also how much is copied out of it at a time.
const WRITE_CHUNK: usize = 256 << 10;
/// Longest wait for input when there is nothing to write (the simulator's timers run at
/// least this often).
const IDLE: Duration = Duration::from_millis(10);
/// Most connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// A simulated Asterisk on a fresh 127.0.0.1 port that tops its output up with a storm
/// ([`SimServer::emit_user_events`](crate::SimServer::emit_user_events), `UserEvent:
/// SimStorm` numbered by `Seq` from 0 in each batch of [`Flood::BATCH`]) whenever less than
/// its low-water mark waits to be written. The backlog stays under the simulator's
/// `socket_buffer`, so the server never sees a blocked write and the rate is set by how fast
/// the client reads, like a busy Asterisk. Stopped on drop.
pub struct Flood {
    addr: SocketAddr,
    state: Arc<State>,
    /// The acceptor and the feeder.
    threads: Vec<JoinHandle<()>>,
}

/// What the flood's threads share.
struct State {
    sim: Mutex<SimServer>,
    /// Signalled when input arrived or the feeder added events (the writers may have bytes
    /// to send), and on stop.
    output: Condvar,
    /// Signalled when a writer took the backlog below `low` or a client wrote (it may have
    /// logged in), and on stop: the feeder tops up.
    fill: Condvar,
    stop: AtomicBool,
    /// Event size for `emit_user_events_sized`, or plain storm events.
    event_bytes: Option<usize>,
    /// Events per top-up: [`Flood::BATCH`], fewer when they are large, so that a top-up
    /// never outgrows the simulator's `socket_buffer` (which it would close as a slow
    /// reader's).
    batch: usize,
    /// Top up when fewer bytes than this wait to be written.
    low: u64,
    /// Each connection's socket (to shut down on stop) and its threads.
    conns: Mutex<Vec<(TcpStream, Vec<JoinHandle<()>>)>>,
    /// What the writers did (a diagnostic).
    writes: WriteTally,
}

/// What a flood's writers did, summed over its connections (see [`Flood::writes`]): where a
/// flood that delivers less than the others spends its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FloodWrites {
    /// Writes to the socket.
    pub writes: u64,
    /// Bytes they took.
    pub bytes: u64,
    /// Time inside the socket writes (blocked while the client's receive buffer is full).
    pub in_write: Duration,
    /// Times a writer found nothing to write and waited for the feeder (or input).
    pub starved: u64,
    /// Time spent so.
    pub starved_for: Duration,
}

#[derive(Debug, Default)]
struct WriteTally {
    writes: AtomicU64,
    bytes: AtomicU64,
    in_write_ns: AtomicU64,
    starved: AtomicU64,
    starved_ns: AtomicU64,
}

impl WriteTally {
    fn snapshot(&self) -> FloodWrites {
        FloodWrites {
            writes: self.writes.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            in_write: Duration::from_nanos(self.in_write_ns.load(Ordering::Relaxed)),
            starved: self.starved.load(Ordering::Relaxed),
            starved_for: Duration::from_nanos(self.starved_ns.load(Ordering::Relaxed)),
        }
    }
}

fn add_ns(counter: &AtomicU64, since: Instant) {
    let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
    counter.fetch_add(ns, Ordering::Relaxed);
}

impl std::fmt::Debug for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flood")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Flood {
    /// Events per top-up (about 75 bytes each; fewer for large sized events).
    pub const BATCH: usize = 1000;
    /// Top up when fewer bytes than this wait to be written.
    pub const LOW: u64 = 128 << 10;

    /// Starts a simulator with the default users on a fresh 127.0.0.1 port.
    pub fn start() -> io::Result<Flood> {
        Flood::start_with(SimConfig::default(), None, Flood::LOW)
    }

    /// Like [`start`](Self::start), with events of about `event_bytes` each
    /// ([`SimServer::emit_user_events_sized`](crate::SimServer::emit_user_events_sized)):
    /// realistic sizes for throughput measurements. The simulator's `socket_buffer` is 4 MiB
    /// and the flood tops up below 1 MiB, so that a batch of large events still fits and
    /// the server never sees a blocked write.
    ///
    /// Events of any size keep that promise: a top-up holds as many as fit between the
    /// low-water mark and the buffer (at least one), and the buffer grows to hold two events
    /// past the mark when they are larger than 1.5 MiB.
    pub fn start_sized(event_bytes: usize) -> io::Result<Flood> {
        const LOW: usize = 1 << 20;
        let socket_buffer = (4 << 20).max(LOW.saturating_add(event_bytes.saturating_mul(2)));
        let default = SimConfig::default();
        let config = SimConfig {
            socket_buffer,
            max_backlog: default.max_backlog.max(socket_buffer),
            ..default
        };
        Flood::start_with(config, Some(event_bytes), LOW as u64)
    }

    fn start_with(config: SimConfig, event_bytes: Option<usize>, low: u64) -> io::Result<Flood> {
        // What may still be queued when a top-up starts is just under `low`.
        let room = config.socket_buffer.saturating_sub(low as usize);
        let batch = match event_bytes {
            Some(b) => (room / b.max(1)).clamp(1, Flood::BATCH),
            None => Flood::BATCH,
        };
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            sim: Mutex::new(SimServer::new(config, Instant::now())),
            output: Condvar::new(),
            fill: Condvar::new(),
            stop: AtomicBool::new(false),
            event_bytes,
            batch,
            low,
            conns: Mutex::new(Vec::new()),
            writes: WriteTally::default(),
        });
        let feeder = {
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("flood-feed".into())
                .spawn(move || feed_loop(&state))?
        };
        let acceptor = {
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("flood-accept".into())
                .spawn(move || accept_loop(&listener, &state))
        };
        let acceptor = match acceptor {
            Ok(t) => t,
            Err(e) => {
                state.stop.store(true, Ordering::SeqCst);
                state.fill.notify_all();
                let _ = feeder.join();
                return Err(e);
            }
        };
        Ok(Flood {
            addr,
            state,
            threads: vec![acceptor, feeder],
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The simulator's counters.
    pub fn stats(&self) -> SimStats {
        lock(&self.state.sim).stats()
    }

    /// What the writers did so far.
    pub fn writes(&self) -> FloodWrites {
        self.state.writes.snapshot()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor with a connection of our own; it sees `stop` and ends.
        drop(TcpStream::connect(self.addr));
        self.state.fill.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Shutting a socket down ends its blocked read and write.
        let conns = std::mem::take(&mut *lock(&self.state.conns));
        for (stream, _) in &conns {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.state.output.notify_all();
        for (_, threads) in conns {
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<State>) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("ami-sim flood: accept failed: {e}");
                if state.stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(IDLE);
                continue;
            }
        };
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut conns = lock(&state.conns);
        conns.retain(|(_, threads)| !threads.iter().all(JoinHandle::is_finished));
        if conns.len() >= MAX_CONNECTIONS {
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        if let Err(e) = serve(stream, state, &mut conns) {
            log::warn!("ami-sim flood: cannot serve a connection: {e}");
        }
    }
}

/// Starts a connection's reader and writer threads.
fn serve(
    stream: TcpStream,
    state: &Arc<State>,
    conns: &mut Vec<(TcpStream, Vec<JoinHandle<()>>)>,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (reader, keep) = (stream.try_clone()?, stream.try_clone()?);
    let sid = lock(&state.sim).accept(Instant::now());
    let read = {
        let state = Arc::clone(state);
        std::thread::Builder::new()
            .name("flood-read".into())
            .spawn(move || read_loop(reader, sid, &state))?
    };
    let write = {
        let state = Arc::clone(state);
        std::thread::Builder::new()
            .name("flood-write".into())
            .spawn(move || write_loop(stream, sid, &state))?
    };
    conns.push((keep, vec![read, write]));
    Ok(())
}

/// The client's input into the simulator, blocking on the socket.
fn read_loop(mut stream: TcpStream, sid: SessionId, state: &State) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                lock(&state.sim).receive(sid, Instant::now(), &buf[..n]);
                state.output.notify_all();
                state.fill.notify_all();
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    lock(&state.sim).client_closed(sid, Instant::now());
    state.output.notify_all();
}

/// Bytes waiting to be written, over every session.
fn waiting(sim: &SimServer) -> u64 {
    let st = sim.stats();
    st.bytes_queued.saturating_sub(st.bytes_transmitted)
}

/// Tops the storm up (a batch per turn, so writers get the lock in between) while less
/// than `low` waits to be written and a client is logged in; otherwise waits until a writer
/// or a reader signals `fill`.
fn feed_loop(state: &State) {
    let mut sim = lock(&state.sim);
    while !state.stop.load(Ordering::SeqCst) {
        let before = waiting(&sim);
        if sim.stats().logins > 0 && before < state.low {
            let now = Instant::now();
            match state.event_bytes {
                Some(b) => sim.emit_user_events_sized(now, state.batch, b),
                None => sim.emit_user_events(now, state.batch),
            }
            // Nobody took them (every session logged off): wait for a signal instead.
            let fed = waiting(&sim) > before;
            drop(sim);
            state.output.notify_all();
            sim = lock(&state.sim);
            if fed {
                continue;
            }
        }
        sim = match state.fill.wait_timeout(sim, IDLE) {
            Ok((sim, _)) => sim,
            Err(e) => e.into_inner().0,
        };
    }
}

/// The simulator's output to the client: copies out a chunk, writes it with a blocking
/// write (so a client that reads slowly holds the flood back, as TCP would hold Asterisk
/// back), tells the simulator what was taken and the feeder when the backlog is low. With
/// nothing to write it waits for the feeder, input or the simulator's next deadline.
fn write_loop(mut stream: TcpStream, sid: SessionId, state: &State) {
    let mut chunk = Vec::with_capacity(WRITE_CHUNK);
    while !state.stop.load(Ordering::SeqCst) {
        {
            let mut sim = lock(&state.sim);
            let now = Instant::now();
            sim.handle_timeout(now);
            if sim.is_eof(sid) {
                sim.forget(sid);
                drop(sim);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            let out = sim.transmit(sid);
            chunk.clear();
            chunk.extend_from_slice(&out[..out.len().min(WRITE_CHUNK)]);
            if chunk.is_empty() {
                let wait = sim
                    .poll_timeout()
                    .map_or(IDLE, |t| t.saturating_duration_since(now).min(IDLE));
                let since = Instant::now();
                let _ = state.output.wait_timeout(sim, wait);
                state.writes.starved.fetch_add(1, Ordering::Relaxed);
                add_ns(&state.writes.starved_ns, since);
                continue;
            }
        }
        let since = Instant::now();
        let wrote = stream.write(&chunk);
        add_ns(&state.writes.in_write_ns, since);
        match wrote {
            Ok(0) => break,
            Ok(n) => {
                state.writes.writes.fetch_add(1, Ordering::Relaxed);
                state.writes.bytes.fetch_add(n as u64, Ordering::Relaxed);
                let mut sim = lock(&state.sim);
                sim.advance_transmit(sid, n);
                if waiting(&sim) < state.low {
                    state.fill.notify_one();
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    {
        let mut sim = lock(&state.sim);
        sim.client_closed(sid, Instant::now());
        sim.forget(sid);
    }
    let _ = stream.shutdown(Shutdown::Both);
}
