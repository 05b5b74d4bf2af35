//! The typed view over the adapters' own event streams: `item.typed()` on what `ami-mio` and
//! `ami-tokio` hand out, against the simulator's loopback TCP front. Same items, same queue.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_mio::MioDriver;
use ami_proto::{ClientConfig, StreamItem};
use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use ami_types::events::UserEvent;
use ami_types::{Event, TypedItem};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);
const STORM: usize = 3;

fn config(seed: u64) -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .seed(seed)
        .build()
        .unwrap()
}

/// A simulator storm event, read through its typed view.
fn storm_seq(u: UserEvent<'_>) -> Option<String> {
    assert!(u.issues().is_empty());
    if u.user_event() != Some("SimStorm") {
        return None;
    }
    let seq = Event::UserEvent(u)
        .undeclared_fields()
        .find(|f| f.key == b"Seq")
        .map(|f| f.value.to_str_lossy().into_owned());
    assert!(seq.is_some(), "the sender's own header is kept");
    seq
}

#[test]
fn mio_stream_items_read_as_typed_events() {
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let mut driver = MioDriver::new().unwrap();
    driver
        .add(Instant::now(), config(1), front.local_addr())
        .unwrap();
    let (mut booted, mut emitted, mut storm) = (false, false, Vec::new());
    let end = Instant::now() + LIMIT;
    while storm.len() < STORM && Instant::now() < end {
        let report = driver.step(Instant::now()).unwrap();
        for conn in report.events {
            while let Some(item) = driver.poll_event(conn) {
                match item.typed() {
                    Some(Event::FullyBooted(f)) => booted = f.status().is_some(),
                    Some(Event::UserEvent(u)) => storm.extend(storm_seq(u)),
                    Some(_) => {}
                    None => assert!(
                        !matches!(item, StreamItem::Gap { .. }),
                        "a gap in a short stream"
                    ),
                }
            }
        }
        if booted && !emitted {
            front.with_server(|sim, now| sim.emit_user_events(now, STORM));
            emitted = true;
        }
        driver.wait(Some(Duration::from_millis(5))).unwrap();
    }
    assert!(booted, "FullyBooted typed");
    assert_eq!(storm.len(), STORM, "storm events typed: {storm:?}");
}

#[test]
fn tokio_stream_items_read_as_typed_events() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
        let (ami, mut events) = ami_tokio::spawn(config(2), front.local_addr());
        tokio::time::timeout(LIMIT, ami.wait_ready())
            .await
            .unwrap()
            .unwrap();
        front.with_server(|sim, now| sim.emit_user_events(now, STORM));
        let mut storm = Vec::new();
        while storm.len() < STORM {
            let item = tokio::time::timeout(LIMIT, events.recv())
                .await
                .unwrap()
                .unwrap();
            if let Some(u) = item.typed_as::<UserEvent>() {
                storm.extend(storm_seq(u));
            }
        }
        assert_eq!(storm.len(), STORM);
        ami.logoff().await;
    });
}
