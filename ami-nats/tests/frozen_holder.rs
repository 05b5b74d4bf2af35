//! A lease holder whose process is frozen past its lease's TTL while its monotonic clock
//! stands still (a paused VM: `CLOCK_MONOTONIC`, which tokio's `Instant` reads, does not
//! count the time a guest was paused or suspended), against a real nats-server on
//! 127.0.0.1. Its local renewal deadline then still lies ahead when it runs again, though
//! another bridge took the server over meanwhile: the takeover it has been told of (its
//! lease watch) must stop it, not the next renewal its clock asks for. For the events it
//! finds waiting on its AMI connection the watch comes too late (its reader and publisher
//! may run first): its renewal deadline counted on the wall clock too, which went on while
//! it was frozen, keeps them from being published under its old term.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_nats::{Bridge, BridgeConfig};
use ami_sim::hostile::{Hostile, HostileServer};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// A bridge on a current-thread runtime of its own (as `ami bridge` runs) that can be frozen:
/// nothing of it runs meanwhile. With `clock_stops` its clock stands still too, as in a paused
/// VM (it runs with the host's otherwise, advanced by hand as much as real time passed);
/// without, it runs on, as for a process stopped with SIGSTOP or starved of CPU.
struct FreezableBridge {
    freeze: mpsc::Sender<mpsc::Receiver<()>>,
    stop: mpsc::Sender<()>,
    serving: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FreezableBridge {
    fn start(config: BridgeConfig, clock_stops: bool) -> FreezableBridge {
        let (freeze, freezes) = mpsc::channel::<mpsc::Receiver<()>>();
        let (stop, stopped) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let serving = Arc::new(Mutex::new(Vec::new()));
        let shown = serving.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(clock_stops)
                .build()
                .unwrap();
            rt.block_on(async move {
                // A blocking task running for the bridge's life keeps the paused clock from
                // jumping to the next timer whenever the runtime idles (it waits on sockets).
                let (hold, held) = mpsc::channel::<()>();
                if clock_stops {
                    tokio::task::spawn_blocking(move || {
                        let _ = held.recv();
                    });
                }
                tokio::spawn(async move {
                    let mut last = Instant::now();
                    loop {
                        if clock_stops {
                            tokio::task::spawn_blocking(|| {
                                std::thread::sleep(Duration::from_millis(2))
                            })
                            .await
                            .unwrap();
                        } else {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        if let Ok(resume) = freezes.try_recv() {
                            // Frozen: the whole runtime waits here (a paused clock with it).
                            let _ = resume.recv();
                            last = Instant::now();
                            continue;
                        }
                        let now = Instant::now();
                        if clock_stops {
                            tokio::time::advance(now - last).await;
                        }
                        last = now;
                    }
                });
                let bridge = Bridge::start(config).await.unwrap();
                ready_tx.send(()).unwrap();
                while let Err(mpsc::TryRecvError::Empty) = stopped.try_recv() {
                    *shown.lock().unwrap() = bridge.serving();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                drop(bridge);
                drop(hold);
            });
            rt.shutdown_background();
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("bridge started");
        FreezableBridge {
            freeze,
            stop,
            serving,
            thread: Some(thread),
        }
    }

    fn serving(&self) -> Vec<String> {
        self.serving.lock().unwrap().clone()
    }

    /// Freezes the bridge (within a few milliseconds) until the returned sender is dropped.
    fn freeze(&self) -> mpsc::Sender<()> {
        let (resume, resumed) = mpsc::channel();
        self.freeze.send(resumed).unwrap();
        resume
    }
}

impl Drop for FreezableBridge {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn probe(n: usize) -> String {
    format!(r#"{{"headers":[["Action","UserEvent"],["UserEvent","probe"],["Probe","{n}"]]}}"#)
}

/// The ActionID prefix of the session that sent probe `n` (its ID without the sequence).
fn sender_of(pbx1: &HostileServer, n: usize) -> Option<String> {
    let text = n.to_string();
    pbx1.received().iter().find_map(|r| {
        (r.action.get_str("Probe") == Some(text.as_str())).then(|| {
            let id = r.action.action_id().unwrap_or_default();
            id.rsplit_once('-').map_or(id, |(p, _)| p).to_string()
        })
    })
}

#[test]
fn a_holder_frozen_with_its_clock_past_the_ttl_sends_nothing_once_another_bridge_took_over() {
    frozen_holder_sends_nothing_after_the_takeover(true);
}

/// The same with the holder's clock running on while it is frozen (SIGSTOP, CPU starvation):
/// its renewal deadline has passed when it runs again.
#[test]
fn a_holder_stopped_past_the_ttl_sends_nothing_once_another_bridge_took_over() {
    frozen_holder_sends_nothing_after_the_takeover(false);
}

/// Two bridges share pbx1; the holder is frozen (its clock too when `clock_stops`) until the
/// other has taken pbx1 over; requests right after it runs again reach pbx1 from the new
/// holder's session only, each answered once.
fn frozen_holder_sends_nothing_after_the_takeover(clock_stops: bool) {
    let Some(nats) = Nats::start() else { return };
    let pbx1 = HostileServer::start(Hostile::Script(Vec::new()), 0).unwrap();
    let a = pbx1.local_addr();
    let ttl = Duration::from_secs(4);
    let config = |id: &str| {
        let spec = ami_nats::ServerSpec::new(
            "pbx1",
            a.ip().to_string(),
            a.port(),
            login().build().unwrap(),
        )
        .unwrap();
        BridgeConfig::new(nats.url(), vec![spec])
            .lease_ttl(ttl)
            .bridge_id(id)
    };
    let first = FreezableBridge::start(config("first"), clock_stops);
    wait_for(Duration::from_secs(10), "first serves", || {
        first.serving().len() == 1
    });
    let url = nats.url();
    // The first bridge's session, by the ActionID prefix of what it sends.
    let reply = block(request(&url, "ami.pbx1.action", &probe(0)));
    assert_eq!(reply["outcome"], "success", "{reply}");
    let first_session = sender_of(&pbx1, 0).expect("probe 0 reached pbx1");
    let second = TestBridge::start_with(config("second"), Some(0));
    std::thread::sleep(Duration::from_millis(200));
    assert!(second.serving().is_empty(), "the standby waits");

    // Frozen (its clock too, when it stops) until the other bridge has taken pbx1 over.
    let resume = first.freeze();
    let frozen = Instant::now();
    wait_for(Duration::from_secs(15), "second takes over", || {
        second.serving().len() == 1
    });
    let took_over = Instant::now();
    drop(resume);
    eprintln!(
        "first bridge frozen for {:?} (its clock stopped: {clock_stops})",
        frozen.elapsed()
    );

    // Requests right after it runs again: the queue group hands some to each bridge.
    let replies = block(async {
        let client = async_nats::connect(&url).await.unwrap();
        let asked = (1..=20).map(|n| {
            let client = client.clone();
            async move {
                let reply = tokio::time::timeout(
                    Duration::from_secs(15),
                    client.request("ami.pbx1.action", probe(n).into()),
                )
                .await
                .expect("reply in time")
                .unwrap();
                serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
            }
        });
        futures_util::future::join_all(asked).await
    });
    let from_first: Vec<(usize, Duration)> = pbx1
        .received()
        .iter()
        .filter(|r| {
            r.action
                .action_id()
                .unwrap_or_default()
                .starts_with(&format!("{first_session}-"))
        })
        .filter_map(|r| {
            let n: usize = r.action.get_str("Probe")?.parse().ok()?;
            (n > 0).then(|| (n, r.at.saturating_duration_since(took_over)))
        })
        .collect();
    assert!(
        from_first.is_empty(),
        "pbx1 got probes from the first bridge's session after the second took it over (probe, time after the takeover was seen): {from_first:?}; replies: {replies:?}"
    );
    // Every probe was answered once, by the bridge holding the lease (or refused unsent),
    // and reached pbx1 at most once.
    for (n, reply) in (1..).zip(&replies) {
        let text = n.to_string();
        let times = pbx1
            .received()
            .iter()
            .filter(|r| r.action.get_str("Probe") == Some(text.as_str()))
            .count();
        assert!(times <= 1, "probe {n} reached pbx1 {times} times");
        let sent = sender_of(&pbx1, n);
        match reply["outcome"].as_str() {
            Some("success") => assert!(sent.is_some(), "probe {n}: {reply}"),
            _ => assert!(sent.is_none(), "probe {n} refused but sent: {reply}"),
        }
    }
}

fn storm(front: &ami_sim::tcp::TcpFront, n: usize) {
    front.with_server(|sim, now| sim.emit_user_events(now, n));
}

/// The items of the stream whose session starts with `prefix`.
fn of_session<'a>(all: &'a [Stored], prefix: &str) -> Vec<&'a Stored> {
    all.iter()
        .filter(|s| s.body["session"].as_str().unwrap_or("").starts_with(prefix))
        .collect()
}

#[test]
fn a_holder_frozen_with_its_clock_past_the_ttl_publishes_no_event_once_another_bridge_took_over() {
    frozen_holder_publishes_nothing_after_the_takeover(true);
}

/// The same with the holder's clock running on while it is frozen (SIGSTOP, CPU starvation):
/// its renewal deadline has passed when it runs again, and the events it finds waiting
/// then, read under its old term, are dropped, not published.
#[test]
fn a_holder_stopped_past_the_ttl_publishes_no_event_once_another_bridge_took_over() {
    frozen_holder_publishes_nothing_after_the_takeover(false);
}

/// Two bridges share pbx1, which sends events all along; the holder is frozen (its clock
/// too when `clock_stops`) until the other has taken pbx1 over, with events waiting on its
/// AMI connection. In the stream, nothing of the first bridge's session (event, gap or
/// marker) comes after the second bridge's `lease_acquired`: the first is never published
/// once the second may be.
fn frozen_holder_publishes_nothing_after_the_takeover(clock_stops: bool) {
    let Some(nats) = Nats::start() else { return };
    let a = sim();
    let ttl = Duration::from_secs(4);
    let config = |id: &str| {
        BridgeConfig::new(nats.url(), vec![spec("pbx1", &a, login().build().unwrap())])
            .lease_ttl(ttl)
            .bridge_id(id)
    };
    let url = nats.url();
    let first = FreezableBridge::start(config("first"), clock_stops);
    wait_for(Duration::from_secs(10), "first serves, logged in", || {
        first.serving().len() == 1 && a.stats().logins == 1
    });
    storm(&a, 100);
    wait_for(Duration::from_secs(10), "the first storm stored", || {
        let all = block(read_stream(&url, 1));
        of_session(&all, "first-")
            .iter()
            .filter(|s| s.body["type"] == "event")
            .count()
            >= 100
    });
    let second = TestBridge::start_with(config("second"), Some(0));
    std::thread::sleep(Duration::from_millis(200));
    assert!(second.serving().is_empty(), "the standby waits");

    let resume = first.freeze();
    // Within a few milliseconds the first is frozen: what pbx1 sends from then on waits on
    // its AMI connection, to be read under its old term when it runs again.
    std::thread::sleep(Duration::from_millis(100));
    storm(&a, 100);
    wait_for(
        Duration::from_secs(15),
        "second takes over, logged in",
        || second.serving().len() == 1 && a.stats().logins == 2,
    );
    storm(&a, 100);
    drop(resume);
    storm(&a, 100);
    wait_for(Duration::from_secs(10), "the first stops serving", || {
        first.serving().is_empty()
    });
    storm(&a, 100);
    // What the first would publish late has had its time to be stored.
    std::thread::sleep(Duration::from_millis(1000));
    let all = block(read_stream(&url, 1));
    let taken = all
        .iter()
        .position(|s| {
            s.body["session"]
                .as_str()
                .unwrap_or("")
                .starts_with("second-")
        })
        .expect("the second bridge's items are stored");
    assert_eq!(
        all[taken].body["state"], "lease_acquired",
        "the second's first item: {:?}",
        all[taken].body
    );
    let late: Vec<(u64, &str, &serde_json::Value)> = of_session(&all[taken..], "first-")
        .iter()
        .map(|s| (s.seq, s.subject.as_str(), &s.body["type"]))
        .collect();
    assert!(
        late.is_empty(),
        "items of the first bridge's session stored after the second's lease_acquired (seq, subject, type): {late:?}"
    );
}
