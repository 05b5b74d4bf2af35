//! A small fake AMI server over real loopback sockets, for the adapter tests: a banner, Login,
//! Ping, CoreShowChannels as an event list, async Originate with its OriginateResponse,
//! Logoff, actions it never answers, an optional event flood, and stop/restart on the same
//! port. std::net and one thread per connection; it stops itself when dropped.
#![allow(dead_code)]
// Test support: a panic here is a failed test, never reachable from a user's program.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_mio::{MioDriver, Report};
use ami_proto::ClientConfig;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the fake server does.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// After login, send events as fast as the client reads them.
    pub flood: bool,
    /// Items in the CoreShowChannels list.
    pub channels: usize,
    /// Actions that are read and never answered.
    pub silent: Vec<String>,
    /// Read at most 4 KiB per this interval (a slow reader forces partial writes).
    pub slow_read: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub logins: AtomicU64,
    pub events_sent: AtomicU64,
}

pub struct FakeAmi {
    addr: SocketAddr,
    behaviour: Behaviour,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub counters: Arc<Counters>,
}

impl FakeAmi {
    pub fn start(behaviour: Behaviour) -> FakeAmi {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let counters: Arc<Counters> = Arc::default();
        let (addr, stop, thread) = spawn(addr, &behaviour, &counters);
        FakeAmi {
            addr,
            behaviour,
            stop,
            thread: Some(thread),
            counters,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every connection (clients see EOF), and waits for the threads.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops, then listens again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let (_, stop, thread) = spawn(self.addr, &self.behaviour, &self.counters);
        self.stop = stop;
        self.thread = Some(thread);
    }
}

fn spawn(
    addr: SocketAddr,
    behaviour: &Behaviour,
    counters: &Arc<Counters>,
) -> (SocketAddr, Arc<AtomicBool>, JoinHandle<()>) {
    // Rebinding a port right after a stop can race the kernel; retry briefly.
    let mut tries = 0;
    let listener = loop {
        match TcpListener::bind(addr) {
            Ok(l) => break l,
            Err(_) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    };
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (stop, behaviour, counters) =
            (Arc::clone(&stop), behaviour.clone(), Arc::clone(counters));
        std::thread::spawn(move || accept_loop(&listener, &stop, &behaviour, &counters))
    };
    (addr, stop, thread)
}

impl Drop for FakeAmi {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, b: &Behaviour, c: &Arc<Counters>) {
    let mut conns = Vec::new();
    let stop_all = Arc::new(AtomicBool::new(false));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let (b, c, stop_all) = (b.clone(), Arc::clone(c), Arc::clone(&stop_all));
                conns.push(std::thread::spawn(move || serve(stream, &b, &c, &stop_all)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    stop_all.store(true, Ordering::SeqCst);
    for t in conns {
        let _ = t.join();
    }
}

const FLOOD_EVENT: &str = "Event: Newexten\r\nPrivilege: dialplan,all\r\n\
Channel: PJSIP/100-00000001\r\nChannelState: 6\r\nChannelStateDesc: Up\r\n\
CallerIDNum: 100\r\nCallerIDName: Alice\r\nContext: default\r\nExten: 200\r\n\
Priority: 1\r\nUniqueid: 1700000000.1\r\nLinkedid: 1700000000.1\r\n\
Application: Dial\r\nAppData: PJSIP/200,30\r\n\r\n";

fn serve(mut s: TcpStream, b: &Behaviour, c: &Counters, stop: &AtomicBool) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"Asterisk Call Manager/11.0.0\r\n").is_err() {
        return;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut logged_in = false;
    let mut scanned = 0;
    let flood_batch = FLOOD_EVENT.repeat(32);
    while !stop.load(Ordering::SeqCst) {
        // While flooding, look for input without waiting (the timed read would cap the flood
        // at one batch per timer tick); otherwise wait a little for input.
        let flooding = b.flood && logged_in;
        if flooding {
            let _ = s.set_nonblocking(true);
        }
        let read = s.read(&mut chunk);
        if flooding {
            let _ = s.set_nonblocking(false);
        }
        match read {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(pause) = b.slow_read {
                    std::thread::sleep(pause);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        // Scan only what is new (minus a separator's length), never the whole buffer again.
        while let Some(end) = find(&buf[scanned..], b"\r\n\r\n").map(|i| i + scanned) {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            scanned = 0;
            let fields: Vec<(String, String)> = text
                .split("\r\n")
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let action = get("action");
            let id = get("actionid");
            let reply = answer(&action, &id, b);
            if action.eq_ignore_ascii_case("login") {
                logged_in = true;
                c.logins.fetch_add(1, Ordering::SeqCst);
            }
            if !reply.is_empty() && s.write_all(reply.as_bytes()).is_err() {
                return;
            }
            if action.eq_ignore_ascii_case("logoff") {
                let _ = s.shutdown(Shutdown::Both);
                return;
            }
        }
        scanned = buf.len().saturating_sub(3);
        if b.flood && logged_in {
            for _ in 0..8 {
                match s.write_all(flood_batch.as_bytes()) {
                    Ok(()) => {
                        c.events_sent.fetch_add(32, Ordering::Relaxed);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Both);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn answer(action: &str, id: &str, b: &Behaviour) -> String {
    if b.silent.iter().any(|s| s.eq_ignore_ascii_case(action)) {
        return String::new();
    }
    match action.to_ascii_lowercase().as_str() {
        "login" => format!(
            "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
        ),
        "ping" => format!(
            "Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nTimestamp: 1700000000.000000\r\n\r\n"
        ),
        "logoff" => {
            format!("Response: Goodbye\r\nActionID: {id}\r\nMessage: Thanks for all the fish.\r\n\r\n")
        }
        "coreshowchannels" => {
            let mut out = format!(
                "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n"
            );
            for k in 0..b.channels {
                out += &format!(
                    "Event: CoreShowChannel\r\nActionID: {id}\r\nChannel: PJSIP/{k}-0000000{k}\r\nUniqueid: 1700000000.{k}\r\n\r\n"
                );
            }
            out += &format!(
                "Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: {}\r\n\r\n",
                b.channels
            );
            out
        }
        "originate" => format!(
            "Response: Success\r\nActionID: {id}\r\nMessage: Originate successfully queued\r\n\r\n\
             Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: {id}\r\nResponse: Success\r\n\
             Channel: PJSIP/100-00000007\r\nContext: default\r\nExten: 200\r\nReason: 4\r\n\
             Uniqueid: 1700000000.7\r\n\r\n"
        ),
        _ => format!("Response: Error\r\nActionID: {id}\r\nMessage: Invalid/unknown command\r\n\r\n"),
    }
}

/// A config for tests: short backoff, a seed of its own.
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

/// A 127.0.0.1 port that refuses connections (bound, then released).
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
