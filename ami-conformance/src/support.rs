//! Plumbing for the suite: a simulator per test, clients with fixed seeds, bounded waits
//! (every wait has a deadline, so a bug fails the test instead of hanging it), callers on
//! threads of their own, and a recorder of every status the handle publishes.

use ami_async::{Events, Handle, Status};
use ami_proto::{Action, ClientConfig, ClientConfigBuilder, DisconnectReason, Message, StreamItem};
use ami_sim::tcp::TcpFront;
use ami_sim::{SimConfig, SimStats};
use async_io::Timer;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
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

/// Sleeps on async-io's timer (which runs on any runtime).
pub async fn sleep(d: Duration) {
    Timer::after(d).await;
}

/// `fut`, or `None` after `d`.
pub async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep(d).await;
        None
    })
    .await
}

/// `fut`, or a test failure naming `what` after [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(WAIT, fut).await {
        Some(v) => v,
        None => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Waits (real time, polling every 2 ms) until `cond` holds; fails the test after [`WAIT`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            sleep(Duration::from_millis(2)).await;
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

/// The plain session's life: Ready (on the simulator's AMI version), a Ping answered with
/// Pong, then Logoff.
pub async fn ready_ping_logoff(ami: &Handle) {
    ready(ami).await;
    assert_eq!(
        ami.status().get(),
        Status::Ready {
            ami_version: "11.0.0".into()
        }
    );
    let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
    assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    within("logoff", ami.logoff()).await;
}

/// Waits until the simulator's counters satisfy `cond`.
pub async fn sim_until(front: &TcpFront, what: &str, cond: impl Fn(&SimStats) -> bool) {
    until(what, || cond(&front.stats())).await;
}

/// Waits until the status satisfies `pred`; returns the status that did.
pub async fn status_until(ami: &Handle, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
    let mut watch = ami.status();
    let s = within(what, watch.wait_for(|s| pred(s))).await;
    assert!(pred(&s), "closed instead: {s:?}");
    s
}

/// Waits for the session to go down, asserts it went down for `want`, then closes it.
pub async fn disconnected_for(ami: &Handle, want: DisconnectReason) {
    let down = status_until(ami, "Disconnected", |s| {
        matches!(s, Status::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(&down, Status::Disconnected { reason, .. } if *reason == want),
        "{down:?}, want {want:?}"
    );
    ami.close();
    within("close", ami.wait_closed()).await;
}

/// Every status the handle published, in order, as seen by a thread watching it. A watch
/// keeps only the latest value; the tests only rely on states that last milliseconds.
#[derive(Clone, Default)]
pub struct StatusLog(Arc<Mutex<Vec<Status>>>);

impl StatusLog {
    /// Starts recording, beginning with the current status.
    pub fn record(ami: &Handle) -> StatusLog {
        let log = StatusLog::default();
        let mut watch = ami.status();
        let sink = log.clone();
        sink.0.lock().unwrap().push(watch.get());
        std::thread::spawn(move || {
            futures_lite::future::block_on(async {
                while let Some(s) = watch.changed().await {
                    sink.0.lock().unwrap().push(s);
                }
            })
        });
        log
    }

    /// What was seen so far.
    pub fn seen(&self) -> Vec<Status> {
        self.0.lock().unwrap().clone()
    }
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
        while seqs.len() < n {
            match events.recv().await {
                None => panic!("stream ended after {} of {n} storm events", seqs.len()),
                Some(StreamItem::Event(m)) => seqs.extend(storm_seq(&m)),
                Some(StreamItem::Gap { dropped }) => panic!("unexpected gap of {dropped}"),
                // Session boundaries: the restart tests cross one on purpose.
                Some(StreamItem::Ready { .. } | StreamItem::Disconnected { .. }) => {}
                Some(other) => panic!("unexpected stream item {other:?}"),
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

/// A future run on a thread of its own: another caller of the same handle, independent of
/// the runtime under test (the handle's futures need none). Resolves to its output, or to
/// `Err` if it panicked.
pub struct Caller<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// A caller's result once it is there, and the waker of whoever waits for it.
type Slot<T> = (Option<std::thread::Result<T>>, Option<Waker>);

/// Starts `fut` on a thread of its own.
pub fn caller<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> Caller<T> {
    let slot = Arc::new(Mutex::new((None, None::<Waker>)));
    let out = slot.clone();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| futures_lite::future::block_on(fut)));
        let mut s = out.lock().unwrap();
        s.0 = Some(r);
        if let Some(w) = s.1.take() {
            w.wake();
        }
    });
    Caller { slot }
}

impl<T> Future for Caller<T> {
    type Output = std::thread::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.lock().unwrap();
        match s.0.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
