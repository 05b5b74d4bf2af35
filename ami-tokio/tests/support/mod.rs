//! Helpers shared by the loopback tests: a simulator per test, clients with fixed seeds,
//! bounded waits (every wait has a deadline, so a bug fails the test instead of hanging it)
//! and a recorder of every status the handle publishes.
#![allow(dead_code)]

use ami_proto::{ClientConfig, ClientConfigBuilder, Message, StreamItem};
use ami_sim::tcp::TcpFront;
use ami_sim::{SimConfig, SimStats};
use ami_tokio::{Events, Handle, Status};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest any single wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A simulator with the default users and dialplan on a fresh loopback port.
pub fn front() -> TcpFront {
    TcpFront::start(SimConfig::default(), "127.0.0.1:0").expect("start the simulator")
}

/// A builder for `user` with a fixed seed (reproducible ActionIDs and reconnect jitter).
pub fn builder(user: &str, secret: &str) -> ClientConfigBuilder {
    ClientConfig::builder(user, secret).seed(0x7e57)
}

/// The admin user's config with the defaults.
pub fn admin() -> ClientConfig {
    builder("admin", "amp111").build().expect("config")
}

/// `fut`, or a test failure naming `what` after [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Waits (real time, polling every 2 ms) until `cond` holds; fails the test after [`WAIT`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

/// Waits until the session is Ready.
pub async fn ready(ami: &Handle) {
    within("Ready", ami.wait_ready())
        .await
        .unwrap_or_else(|reason| panic!("closed instead of Ready: {reason}"));
}

/// Waits until the simulator's counters satisfy `cond`.
pub async fn sim_until(front: &TcpFront, what: &str, cond: impl Fn(&SimStats) -> bool) {
    until(what, || cond(&front.stats())).await;
}

/// Every status the handle published, in order, as seen by a task watching it. A watch
/// keeps only the latest value, so a status that lasted less than a scheduling round could
/// in principle be skipped; the tests only rely on states that last milliseconds.
#[derive(Clone, Default)]
pub struct StatusLog(Arc<Mutex<Vec<Status>>>);

impl StatusLog {
    /// Starts recording, beginning with the current status.
    pub fn record(ami: &Handle) -> StatusLog {
        let log = StatusLog::default();
        let mut rx = ami.status();
        let sink = log.clone();
        tokio::spawn(async move {
            sink.0.lock().unwrap().push(rx.get());
            while let Some(s) = rx.changed().await {
                sink.0.lock().unwrap().push(s);
            }
        });
        log
    }

    /// What was seen so far.
    pub fn seen(&self) -> Vec<Status> {
        self.0.lock().unwrap().clone()
    }
}

/// Waits until the status satisfies `pred`; returns the status that did.
pub async fn status_until(ami: &Handle, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
    let mut rx = ami.status();
    within(what, async move {
        let s = rx.wait_for(|s| pred(s)).await;
        assert!(pred(&s), "closed instead: {s:?}");
        s
    })
    .await
}

/// A UserEvent of the simulator's storms: its `Seq`.
pub fn storm_seq(msg: &Message) -> Option<u64> {
    if msg.event() == Some("UserEvent") && msg.get_str("UserEvent") == Some("SimStorm") {
        msg.get_str("Seq").and_then(|s| s.parse().ok())
    } else {
        None
    }
}

/// Reads the stream until `n` storm events have arrived (other events are skipped, gaps
/// fail the test); returns their `Seq` values in arrival order.
pub async fn storm_events(events: &mut Events, n: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(n);
    within("storm events", async {
        let mut batch = Vec::new();
        while seqs.len() < n {
            batch.clear();
            if events.recv_many(&mut batch, 1024).await == 0 {
                panic!("stream ended after {} of {n} storm events", seqs.len());
            }
            for item in batch.drain(..) {
                match item {
                    StreamItem::Event(m) => seqs.extend(storm_seq(&m)),
                    StreamItem::Gap { dropped } => panic!("unexpected gap of {dropped}"),
                    // Session boundaries: the restart tests cross one on purpose.
                    StreamItem::Ready { .. } | StreamItem::Disconnected { .. } => {}
                    other => panic!("unexpected stream item {other:?}"),
                }
            }
        }
    })
    .await;
    seqs
}

/// Discards whatever is queued in the stream now.
pub fn drain(events: &mut Events) -> usize {
    let mut n = 0;
    while events.try_recv().is_some() {
        n += 1;
    }
    n
}
