//! A hand-written AMI server that reads its socket slowly, for the one adapter test the
//! simulator cannot play.
//!
//! Why not the simulator: its TCP front reads every socket as fast as the kernel delivers
//! (up to 256 KiB per connection every millisecond), so the kernel buffers between client
//! and server never fill and the client's writes rarely, if ever, block. Its slow-reader
//! model is the other direction (Asterisk not being read), and its faults that make a
//! session stop taking input (half-open, a busy session's input cap) drop the bytes instead
//! of leaving them in the socket. To make the adapter's writes end in `WouldBlock` and
//! resume on writable readiness for certain, the server must leave bytes unread in the
//! kernel: this one reads at most 4 KiB per pause.
//!
//! It speaks just enough AMI for that test: the banner, `Login` (always accepted), and
//! Asterisk's "Invalid/unknown command" error for every other action, which shows the whole
//! action was read and parsed. One connection at a time; it stops when dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes read per pause.
const READ_CHUNK: usize = 4096;

/// A slow-reading AMI server on a loopback port.
pub struct SlowReader {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SlowReader {
    /// Listens on a fresh port; reads at most 4 KiB, then sleeps `pause`.
    pub fn start(pause: Duration) -> SlowReader {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &stop, pause),
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        SlowReader {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SlowReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut s: TcpStream, stop: &AtomicBool, pause: Duration) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"Asterisk Call Manager/11.0.0\r\n").is_err() {
        return;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; READ_CHUNK];
    // Where the search for a message end resumes: never scan the whole buffer again.
    let mut scanned = 0;
    while !stop.load(Ordering::SeqCst) {
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                std::thread::sleep(pause);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        let mut from = 0;
        while let Some(end) = find(&buf[scanned..], b"\r\n\r\n").map(|i| i + scanned) {
            let reply = answer(&buf[from..end]);
            from = end + 4;
            scanned = from;
            if s.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
        buf.drain(..from);
        scanned = buf.len().saturating_sub(3);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The reply to one message (its header lines, without the empty line).
fn answer(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let get = |key: &str| {
        text.split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let id = get("ActionID");
    if get("Action").eq_ignore_ascii_case("login") {
        format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n")
    } else {
        format!("Response: Error\r\nActionID: {id}\r\nMessage: Invalid/unknown command\r\n\r\n")
    }
}
