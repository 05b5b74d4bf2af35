//! What the reconnect-resource tests of every adapter count (`tests/reconnect_resources.rs`
//! of ami-tokio, ami-async-std and ami-mio include this file): the process's descriptors
//! and threads from `/proc/self`, a server that hangs up on every connection, and a client
//! that reconnects at once. The counts are the whole process's, so each test binary runs
//! its tests one at a time.
#![allow(dead_code)]

use ami_proto::{ClientConfig, ClientConfigBuilder};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// How far a count may be off: the attempt under way and its accepted side, a thread of a
/// resolver's pool that has not exited yet, the runtime's own tasks.
pub const SLACK: usize = 6;

/// Descriptors open in this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Threads of this process.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Each `(name, early, late)` count grew by at most [`SLACK`] over `what`.
pub fn assert_no_growth_of(what: &str, counts: &[(&str, usize, usize)]) {
    eprintln!("{what}: {counts:?}");
    for &(name, early, late) in counts {
        assert!(
            late <= early + SLACK,
            "{what}: {name} grew from {early} to {late}"
        );
    }
}

/// A server that accepts every connection and closes it at once.
pub fn hangs_up() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    addr
}

/// Reconnects at once, however often it fails: the backoff and the breaker out of the way.
pub fn eager_builder() -> ClientConfigBuilder {
    ClientConfig::builder("admin", "amp111")
        .seed(11)
        .backoff_base(Duration::from_micros(1))
        .backoff_max(Duration::from_micros(1))
        .breaker_threshold(u32::MAX)
}

/// [`eager_builder`], built.
pub fn eager() -> ClientConfig {
    eager_builder().build().unwrap()
}
