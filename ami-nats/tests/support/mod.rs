//! A real nats-server with JetStream on 127.0.0.1 (random free port, temporary store), the
//! simulator's TCP fronts, bridges on their own runtimes (so a test can kill one like a
//! crash), and a reader of the whole stream.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_nats::{Bridge, BridgeConfig, ServerSpec};
use ami_proto::ClientConfig;
use ami_sim::{tcp::TcpFront, SimConfig};
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use std::net::TcpListener;
use std::time::{Duration, Instant};

#[path = "nats_server.rs"]
mod nats_server;
pub use nats_server::Nats;

/// A simulated Asterisk on a loopback port.
pub fn sim() -> TcpFront {
    TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap()
}

pub fn login() -> ami_proto::ClientConfigBuilder {
    ClientConfig::builder("admin", "amp111")
}

pub fn spec(name: &str, front: &TcpFront, client: ClientConfig) -> ServerSpec {
    let a = front.local_addr();
    ServerSpec::new(name, a.ip().to_string(), a.port(), client).unwrap()
}

/// A bridge on its own runtime and thread: `kill` ends the runtime at once, as a crash would
/// (sockets closed, leases not released).
pub struct TestBridge {
    pub id: String,
    stop: Option<std::sync::mpsc::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    info: std::sync::Arc<std::sync::Mutex<(Vec<String>, String)>>,
}

impl TestBridge {
    pub fn start(config: BridgeConfig) -> TestBridge {
        Self::start_with(config, None)
    }

    /// Like [`start`](Self::start) on a runtime of `threads` workers (0: current-thread,
    /// as `ami bridge` runs); `None`: the `BRIDGE_THREADS` environment variable, else 2.
    pub fn start_with(config: BridgeConfig, threads: Option<usize>) -> TestBridge {
        let (tx, rx) = std::sync::mpsc::channel::<bool>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let info = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), String::new())));
        let info2 = info.clone();
        // The thread's name starts with `tokio-`: measurements count its CPU as the bridge's.
        let thread = std::thread::Builder::new()
            .name("tokio-bridge".into())
            .spawn(move || {
                let threads = threads.or_else(|| {
                    std::env::var("BRIDGE_THREADS")
                        .ok()
                        .and_then(|v| v.parse().ok())
                });
                let rt = match threads {
                    Some(0) => tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap(),
                    n => tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(n.unwrap_or(2))
                        .enable_all()
                        .build()
                        .unwrap(),
                };
                let bridge = rt.block_on(Bridge::start(config)).unwrap();
                ready_tx.send(bridge.bridge_id().to_string()).unwrap();
                // Inside the runtime: a current-thread runtime runs only there.
                let graceful = rt.block_on(async {
                    loop {
                        match rx.try_recv() {
                            Ok(g) => break g,
                            Err(std::sync::mpsc::TryRecvError::Empty) => {
                                *info2.lock().unwrap() = (bridge.serving(), bridge.metrics_text());
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(_) => break false,
                        }
                    }
                });
                if graceful {
                    rt.block_on(bridge.shutdown(Duration::from_secs(2)));
                } else {
                    drop(bridge);
                }
                rt.shutdown_background();
            })
            .unwrap();
        let id = ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("bridge started");
        TestBridge {
            id,
            stop: Some(tx),
            thread: Some(thread),
            info,
        }
    }

    /// Servers served now (as of the last 20 ms).
    pub fn serving(&self) -> Vec<String> {
        self.info.lock().unwrap().0.clone()
    }

    pub fn metrics(&self) -> String {
        self.info.lock().unwrap().1.clone()
    }

    /// Ends the bridge like a crash.
    pub fn kill(mut self) {
        self.end(false);
    }

    /// Ends the bridge cleanly (leases released).
    pub fn shutdown(mut self) {
        self.end(true);
    }

    fn end(&mut self, graceful: bool) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(graceful);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// One stored message: stream sequence, subject, message ID, JSON body.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub subject: String,
    pub msg_id: String,
    pub body: serde_json::Value,
}

/// How long the reader's consumer outlives the reader's silence. The server deletes an
/// ephemeral pull consumer that has had no pull request for its inactive threshold (5 s by
/// default): a reader paused that long (a loaded machine deschedules the test thread, or
/// nats-server) would resume to a deleted consumer and wait for messages that never come.
/// Far longer than any pause; the consumer is deleted when the read ends.
const READER_INACTIVE_THRESHOLD: Duration = Duration::from_secs(600);

/// How long the reader waits for its next message before it gives up: only a server that
/// no longer delivers what its stream holds is that slow.
const READ_STALL_LIMIT: Duration = Duration::from_secs(30);

/// Reads the stream from `start` to its last message.
pub async fn read_stream(url: &str, start: u64) -> Vec<Stored> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream("AMI").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut c = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: READER_INACTIVE_THRESHOLD,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut messages = c.messages().await.unwrap();
    while out.last().map_or(start <= last, |s: &Stored| s.seq < last) {
        let Ok(m) = tokio::time::timeout(READ_STALL_LIMIT, messages.next()).await else {
            let consumer = c.info().await.cloned();
            panic!(
                "stream read stalled: no message for {READ_STALL_LIMIT:?} after {} of seq {start}..={last} (last read {:?}); consumer: {consumer:?}",
                out.len(),
                out.last().map(|s| s.seq)
            );
        };
        let m = m.unwrap().unwrap();
        let info = m.info().unwrap();
        let msg_id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push(Stored {
            seq: info.stream_sequence,
            subject: m.subject.to_string(),
            msg_id,
            body: serde_json::from_slice(&m.payload).unwrap(),
        });
    }
    drop(messages);
    // Readers are called in loops (`wait_for`): their consumers must not pile up.
    let name = c.cached_info().name.clone();
    let _ = stream.delete_consumer(&name).await;
    out
}

/// Waits until `f` holds, or panics after `within` with `what`.
pub fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A header of an event body.
pub fn header<'a>(body: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    body["headers"]
        .as_array()?
        .iter()
        .find_map(|h| (h[0].as_str()? == key).then(|| h[1].as_str()).flatten())
}

/// Sends a request and parses the reply.
pub async fn request(url: &str, subject: &str, body: &str) -> serde_json::Value {
    let client = async_nats::connect(url).await.unwrap();
    let reply = tokio::time::timeout(
        Duration::from_secs(15),
        client.request(subject.to_string(), body.to_string().into()),
    )
    .await
    .expect("reply in time")
    .unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

/// A TCP proxy in front of a server that can hold back what its clients send for a while:
/// what a slow NATS looks like to one client (the bridge) and to no other.
pub struct SlowProxy {
    addr: std::net::SocketAddr,
    /// Milliseconds each chunk from a client is held before it goes on.
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SlowProxy {
    /// Listens on a free 127.0.0.1 port and passes every connection on to `target`.
    pub fn start(target: std::net::SocketAddr) -> SlowProxy {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (delay, stopped) = (delay_ms.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                // Client to server: each chunk held by the delay in force when it was read.
                let (to_server, from_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
                let delay = delay.clone();
                std::thread::spawn(move || pump_read(from_client, tx, &delay));
                std::thread::spawn(move || pump_write(to_server, rx));
                // Server to client: at once.
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        SlowProxy {
            addr,
            delay_ms,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Holds what clients send from now on for `d` (zero: passes it on at once, after what
    /// is still held).
    pub fn hold_client_bytes(&self, d: Duration) {
        self.delay_ms
            .store(d.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn pump_read(
    mut from: std::net::TcpStream,
    tx: std::sync::mpsc::Sender<(Instant, Vec<u8>)>,
    delay_ms: &std::sync::atomic::AtomicU64,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match std::io::Read::read(&mut from, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let d = Duration::from_millis(delay_ms.load(std::sync::atomic::Ordering::SeqCst));
                if tx.send((Instant::now() + d, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    }
}

fn pump_write(mut to: std::net::TcpStream, rx: std::sync::mpsc::Receiver<(Instant, Vec<u8>)>) {
    for (at, bytes) in rx {
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if std::io::Write::write_all(&mut to, &bytes).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// The warnings logged in this test binary (every test's), in order, kept to be searched.
pub fn warnings() -> &'static std::sync::Mutex<Vec<String>> {
    struct Keep;
    static LINES: std::sync::OnceLock<std::sync::Mutex<Vec<String>>> = std::sync::OnceLock::new();
    static KEEP: Keep = Keep;
    impl log::Log for Keep {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                if let Some(lines) = LINES.get() {
                    lines.lock().unwrap().push(r.args().to_string());
                }
            }
        }
        fn flush(&self) {}
    }
    let lines = LINES.get_or_init(Default::default);
    if log::set_logger(&KEEP).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    lines
}

/// A gauge or counter of the metrics text, with its labels as written (-1: not there).
pub fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

/// Runs `f` to completion on a current-thread runtime of its own.
pub fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// An async Originate request for the bridge, with idempotency key `key`.
pub fn originate(key: &str, timeout_ms: u64) -> String {
    format!(
        r#"{{"headers":[["Action","Originate"],["Channel","Local/100@ami-test"],["Application","Wait"],["Data","1"],["Async","true"]],"idempotency_key":"{key}","timeout_ms":{timeout_ms}}}"#
    )
}

/// Sends `body` on `subject` from a thread of its own (as NATS user `user`, password `pw`,
/// when given); the reply, or `None` when none came within `within` (async-nats's own
/// request timeout, 10 s by default, set to `within` too).
pub fn request_in_background(
    url: String,
    user: Option<&'static str>,
    subject: &'static str,
    body: String,
    within: Duration,
) -> std::thread::JoinHandle<Option<serde_json::Value>> {
    std::thread::spawn(move || {
        block(async move {
            let options = match user {
                Some(user) => {
                    async_nats::ConnectOptions::new().user_and_password(user.into(), "pw".into())
                }
                None => async_nats::ConnectOptions::new(),
            };
            let client = options
                .request_timeout(Some(within))
                .connect(&url)
                .await
                .unwrap();
            let r = tokio::time::timeout(within, client.request(subject, body.into())).await;
            match r {
                Ok(Ok(m)) => Some(serde_json::from_slice(&m.payload).unwrap()),
                _ => None,
            }
        })
    })
}

/// Bridge X serving `pbx1` (simulator `a`) through a [`SlowProxy`] to NATS (lease TTL 60 s),
/// and bridge Y serving `pbx2` (simulator `b`) on NATS directly, both logged in: the
/// set-up of the idempotency tests, where one bridge's NATS is slow and the other's is not.
pub fn slow_and_direct_bridges(
    nats: &Nats,
) -> (SlowProxy, TcpFront, TcpFront, TestBridge, TestBridge) {
    let (proxy, a, x) = slow_bridge(nats, Duration::from_secs(60));
    let b = sim();
    let y = direct_bridge(&nats.url(), &b);
    (proxy, a, b, x, y)
}

/// Bridge Y serving `pbx2` (simulator `b`) on the NATS at `url` directly, logged in.
pub fn direct_bridge(url: &str, b: &TcpFront) -> TestBridge {
    let y = TestBridge::start(
        BridgeConfig::new(url, vec![spec("pbx2", b, login().build().unwrap())]).bridge_id("y"),
    );
    wait_for(Duration::from_secs(10), "y logged in", || {
        y.serving().len() == 1 && b.stats().logins == 1
    });
    y
}

/// Bridge X serving `pbx1` (simulator `a`) through a [`SlowProxy`] to NATS, its lease TTL
/// `lease_ttl`, logged in.
pub fn slow_bridge(nats: &Nats, lease_ttl: Duration) -> (SlowProxy, TcpFront, TestBridge) {
    let proxy = SlowProxy::start(([127, 0, 0, 1], nats.port).into());
    let a = sim();
    let x = TestBridge::start(
        BridgeConfig::new(
            proxy.url(),
            vec![spec("pbx1", &a, login().build().unwrap())],
        )
        .lease_ttl(lease_ttl)
        .bridge_id("x"),
    );
    wait_for(Duration::from_secs(10), "x logged in", || {
        x.serving().len() == 1 && a.stats().logins == 1
    });
    (proxy, a, x)
}

/// The idempotency bucket as a client of its own sees it.
pub async fn idempotency_kv(url: &str) -> async_nats::jetstream::kv::Store {
    let client = async_nats::connect(url).await.unwrap();
    async_nats::jetstream::new(client)
        .get_key_value("ami_idempotency")
        .await
        .unwrap()
}

/// Puts `value` at `key` in the idempotency bucket; its revision.
pub fn put_claim(url: &str, key: &str, value: &'static str) -> u64 {
    block(async {
        let kv = idempotency_kv(url).await;
        kv.put(key, value.into()).await.unwrap()
    })
}

/// What `key` holds in the idempotency bucket (a value, not a delete marker: its text and
/// revision), if anything.
pub fn stored_claim(url: &str, key: &str) -> Option<(String, u64)> {
    block(async {
        let kv = idempotency_kv(url).await;
        kv.entry(key)
            .await
            .unwrap()
            .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
            .map(|e| (String::from_utf8(e.value.to_vec()).unwrap(), e.revision))
    })
}

/// The text `key` holds in the idempotency bucket, if anything ([`stored_claim`]).
pub fn stored_claim_text(url: &str, key: &str) -> Option<String> {
    stored_claim(url, key).map(|(text, _)| text)
}

/// A bridge serving `pbx1`, a server that logs in and then answers nothing (every action
/// sent stays pending), with room for `slots` actions at once; returned once it serves.
pub fn silent_pbx1_with_slots(
    nats: &Nats,
    slots: usize,
) -> (ami_sim::hostile::HostileServer, TestBridge) {
    use ami_sim::hostile::{Hostile, HostileServer};
    let srv = HostileServer::start(Hostile::Silent, 0).unwrap();
    let a = srv.local_addr();
    let client = login()
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let spec = ServerSpec::new("pbx1", a.ip().to_string(), a.port(), client).unwrap();
    let bridge =
        TestBridge::start(BridgeConfig::new(nats.url(), vec![spec]).max_actions_in_flight(slots));
    wait_for(Duration::from_secs(10), "served", || {
        bridge.serving().len() == 1 && srv.connections() == 1
    });
    (srv, bridge)
}

/// Takes one action slot of a [`silent_pbx1_with_slots`] bridge with a Ping the server
/// never answers; returns once the Ping is written.
pub fn hold_one_slot(url: &str, srv: &ami_sim::hostile::HostileServer) {
    block(async {
        let nc = async_nats::connect(url).await.unwrap();
        let hold = r#"{"headers":[["Action","Ping"]],"timeout_ms":60000}"#;
        nc.publish_with_reply("ami.pbx1.action", nc.new_inbox(), hold.into())
            .await
            .unwrap();
        nc.flush().await.unwrap();
    });
    wait_for(Duration::from_secs(10), "the holding Ping written", || {
        srv.received_count("Ping") == 1
    });
}
