//! The fleet of ami-async-std as a smol user runs it (its driver a task on a
//! `smol::Executor`, or `run_fleet_on_thread`) against scripted servers on loopback
//! (`support::Fake`): a quiet server's Pings while another floods, a name that never
//! resolves, a server removed with actions pending, the last user gone while a server never
//! greets, a half-close mid-list, a reset mid-response, a 10 MB answer and an endless line.
//! Every test here passed at the tip it was written on: they pin behaviour over real
//! sockets that the conformance suite (run on `ami-sim`) does not reach.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use ami_async_std::fleet::{
    spawn_fleet, FleetConfig, FleetEvents, FleetHandle, Route, ServerStatus,
};
use ami_async_std::AmiError;
use ami_proto::{Action, ActionError, ClientConfig, SendOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{within, Fake};

fn cfg() -> ClientConfig {
    ClientConfig::builder("admin", "x")
        .seed(7)
        .backoff_base(Duration::from_millis(50))
        .build()
        .unwrap()
}

const S5: Duration = Duration::from_secs(5);

#[test]
fn a_quiet_servers_pings_stay_fast_while_another_floods_on_one_smol_thread() {
    let flood = Fake::start();
    let quiet = Fake::start();
    let (fa, qa) = (flood.addr(), quiet.addr());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let flooder = std::thread::spawn(move || {
        let mut c = flood.accept_logged_in();
        let mut chunk = Vec::new();
        for i in 0..1000 {
            chunk.extend_from_slice(
                format!(
                    "Event: Flood\r\nSeq: {i}\r\nPad: {}\r\n\r\n",
                    "y".repeat(200)
                )
                .as_bytes(),
            );
        }
        c.stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while !stop2.load(Ordering::SeqCst) {
            let _ = std::io::Write::write_all(&mut c.stream, &chunk);
        }
    });
    let quiet_srv = std::thread::spawn(move || {
        let mut c = quiet.accept_logged_in();
        while let Some(a) = c.read_action() {
            if a.get("Action").map(String::as_str) == Some("Ping") {
                let id = a.get("ActionID").cloned().unwrap_or_default();
                c.pong(&id);
            }
        }
    });
    let (fleet, events, driver) = spawn_fleet(FleetConfig::default());
    let ex = smol::Executor::new();
    ex.spawn(driver).detach();
    fleet.add("flood", cfg(), fa).unwrap();
    fleet.add("quiet", cfg(), qa).unwrap();
    // The caller is a task of the executor. (A future handed to `ex.run` itself is polled
    // only between batches of 200 task runs, so with a flood requeueing the driver at each
    // poll its Pings took about 100 ms each: smol's scheduling, not the driver's.)
    let fleet2 = fleet.clone();
    let body = ex.spawn(async move {
        let fleet = fleet2;
        within("flood ready", S5, fleet.wait_ready("flood"))
            .await
            .unwrap();
        within("quiet ready", S5, fleet.wait_ready("quiet"))
            .await
            .unwrap();
        async_io::Timer::after(Duration::from_millis(200)).await;
        let mut lat = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let r = within(
                "ping",
                S5,
                fleet.send(Route::Server("quiet"), Action::new("Ping")),
            )
            .await
            .unwrap();
            assert!(r.result.is_ok(), "{:?}", r.result);
            lat.push(t.elapsed());
        }
        lat
    });
    let lat = smol::block_on(ex.run(body));
    let flood_in = fleet.client_stats("flood").unwrap().events_in;
    stop.store(true, Ordering::SeqCst);
    fleet.close();
    drop(events);
    // The driver is a task of `ex`, which nobody runs any more: dropping it drops the
    // driver, and with it the sockets.
    drop(ex);
    let _ = flooder.join();
    let _ = quiet_srv.join();
    // The flood really ran (the reader took nothing: its events are dropped, counted).
    assert!(flood_in > 10_000, "{flood_in}");
    let mut sorted = lat.clone();
    sorted.sort();
    assert!(sorted[lat.len() / 2] < Duration::from_millis(50), "{lat:?}");
    assert!(
        sorted[lat.len() - 1] < Duration::from_millis(500),
        "{lat:?}"
    );
}

#[test]
fn a_server_whose_name_never_resolves_backs_off_and_holds_no_other_server_up() {
    let good = Fake::start();
    let ga = good.addr();
    let srv = std::thread::spawn(move || {
        let mut c = good.accept_logged_in();
        while let Some(a) = c.read_action() {
            if a.get("Action").map(String::as_str) == Some("Ping") {
                let id = a.get("ActionID").cloned().unwrap_or_default();
                c.pong(&id);
            }
        }
    });
    let (fleet, _events, driver) = spawn_fleet(FleetConfig::default());
    let ex = smol::Executor::new();
    ex.spawn(driver).detach();
    fleet
        .add("nowhere", cfg(), ("no-such-host.invalid", 5038))
        .unwrap();
    fleet.add("good", cfg(), ga).unwrap();
    smol::block_on(ex.run(async {
        within("good ready", S5, fleet.wait_ready("good"))
            .await
            .unwrap();
        let r = within(
            "ping nowhere",
            S5,
            fleet.send_with(
                Route::Server("nowhere"),
                Action::new("Ping"),
                SendOptions::timeout(Duration::from_millis(500)),
            ),
        )
        .await
        .unwrap();
        assert!(
            matches!(
                r.result,
                Err(AmiError::Action(ActionError::TimedOut { .. }))
            ),
            "{:?}",
            r.result
        );
        for _ in 0..5 {
            let r = within(
                "ping any",
                S5,
                fleet.send(
                    Route::Any(ami_async_std::fleet::Policy::RoundRobin),
                    Action::new("Ping"),
                ),
            )
            .await
            .unwrap();
            assert_eq!(r.server.as_str(), "good");
            assert!(r.result.is_ok());
        }
        let st = fleet.client_stats("nowhere").unwrap();
        assert!(st.connects >= 1, "{st:?}");
        assert_eq!(st.logins, 0);
        assert!(!matches!(
            fleet.status("nowhere"),
            Some(ServerStatus::Ready { .. })
        ));
    }));
    fleet.close();
    drop(ex);
    let _ = srv.join();
}

#[test]
fn removing_a_silent_server_fails_its_written_and_queued_actions_once() {
    let silent = Fake::start();
    let sa = silent.addr();
    let srv = std::thread::spawn(move || {
        let mut c = silent.accept_logged_in();
        let _ = c.expect_action("Ping");
        // hold, never answer
        let _ = c.read_action();
        let _ = c.read_action();
    });
    let config = ClientConfig::builder("admin", "x")
        .seed(7)
        .pipeline_depth(1)
        .build()
        .unwrap();
    let (fleet, _events, driver) = spawn_fleet(FleetConfig::default());
    let ex = smol::Executor::new();
    ex.spawn(driver).detach();
    fleet.add("s", config, sa).unwrap();
    smol::block_on(ex.run(async {
        within("ready", S5, fleet.wait_ready("s")).await.unwrap();
        let a = fleet.send(Route::Server("s"), Action::new("Ping"));
        let b = fleet.send(Route::Server("s"), Action::new("Ping"));
        let rm = async {
            async_io::Timer::after(Duration::from_millis(100)).await;
            assert!(fleet.remove("s"));
        };
        let (a, (b, ())) = within(
            "both",
            S5,
            futures_lite::future::zip(a, futures_lite::future::zip(b, rm)),
        )
        .await;
        let (a, b) = (a.unwrap(), b.unwrap());
        // The written one may have run, the queued one never left.
        assert!(
            matches!(a.result, Err(AmiError::Action(ActionError::Unknown(_)))),
            "{:?}",
            a.result
        );
        assert!(
            matches!(b.result, Err(AmiError::Action(ActionError::NotSent(_)))),
            "{:?}",
            b.result
        );
    }));
    fleet.close();
    drop(ex);
    let _ = srv.join();
}

#[test]
fn dropping_every_fleet_user_while_a_server_never_greets_ends_the_driver_and_closes_the_socket() {
    let fake = Fake::start();
    let fa = fake.addr();
    let holder = std::thread::spawn(move || {
        let s = fake.accept_within(S5).unwrap();
        let mut b = [0u8; 16];
        s.set_read_timeout(Some(S5)).unwrap();
        let r = std::io::Read::read(&mut &s, &mut b);
        r.map(|n| n == 0).unwrap_or(false)
    });
    let (fleet, events, driver) = spawn_fleet(FleetConfig::default());
    let ex = smol::Executor::new();
    let task = ex.spawn(driver);
    fleet.add("s", cfg(), fa).unwrap();
    fleet
        .add("nowhere", cfg(), ("no-such-host.invalid", 5038))
        .unwrap();
    smol::block_on(ex.run(async {
        async_io::Timer::after(Duration::from_millis(200)).await;
        drop(fleet);
        drop(events);
        within("driver ends", S5, task).await;
    }));
    assert!(holder.join().unwrap(), "the socket was closed");
}

/// A fleet on its own thread (`run_fleet_on_thread`) with one server "s" at `addr`.
fn one(addr: std::net::SocketAddr, cfg: ClientConfig) -> (FleetHandle, FleetEvents) {
    let (fleet, events) =
        ami_async_std::fleet::run_fleet_on_thread(FleetConfig::default()).unwrap();
    fleet.add("s", cfg, addr).unwrap();
    (fleet, events)
}

#[test]
fn a_fleet_list_fails_once_unknown_when_the_server_half_closes_mid_list_and_it_reconnects() {
    let fake = Fake::start();
    let addr = fake.addr();
    let server = std::thread::spawn(move || {
        let mut c = fake.accept_logged_in();
        let id = c.expect_action("CoreShowChannels");
        c.write(format!("Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\nEvent: CoreShowChannel\r\nActionID: {id}\r\nChannel: SIP/1-1\r\n\r\n").as_bytes());
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let eof = c.read_action();
        let again = fake.accept_within(Duration::from_secs(3)).is_some();
        (eof.is_none(), again)
    });
    let (fleet, _events) = one(addr, cfg());
    let r = futures_lite::future::block_on(async {
        within("ready", S5, fleet.wait_ready("s")).await.unwrap();
        within(
            "list",
            S5,
            fleet.send(Route::Server("s"), Action::new("CoreShowChannels")),
        )
        .await
        .unwrap()
        .result
    });
    assert!(
        matches!(r, Err(AmiError::Action(ActionError::Unknown(_)))),
        "{r:?}"
    );
    assert_eq!(server.join().unwrap(), (true, true));
    fleet.close();
}

#[test]
fn every_written_fleet_action_fails_once_unknown_when_the_server_resets_mid_response() {
    let fake = Fake::start();
    let addr = fake.addr();
    let server = std::thread::spawn(move || {
        let mut c = fake.accept_logged_in();
        let id = c.expect_action("Ping");
        c.write(format!("Response: Success\r\nActionID: {id}\r\nPi").as_bytes());
        let mut b = [0u8; 1];
        let n = c.stream.peek(&mut b).unwrap();
        assert!(n > 0);
        drop(c);
        fake.accept_within(Duration::from_secs(3)).is_some()
    });
    let (fleet, _events) = one(addr, cfg());
    let (a, b) = futures_lite::future::block_on(async {
        within("ready", S5, fleet.wait_ready("s")).await.unwrap();
        let a = fleet.send(Route::Server("s"), Action::new("Ping"));
        let b = async {
            async_io::Timer::after(Duration::from_millis(50)).await;
            fleet.send(Route::Server("s"), Action::new("Ping")).await
        };
        within("both", S5, futures_lite::future::zip(a, b)).await
    });
    let (a, b) = (a.unwrap().result, b.unwrap().result);
    assert!(
        matches!(a, Err(AmiError::Action(ActionError::Unknown(_)))),
        "{a:?}"
    );
    assert!(
        matches!(b, Err(AmiError::Action(ActionError::Unknown(_)))),
        "{b:?}"
    );
    assert!(server.join().unwrap());
    fleet.close();
}

#[test]
fn a_fleet_server_sending_ten_megabytes_then_an_endless_line_fails_each_action_typed() {
    let fake = Fake::start();
    let addr = fake.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        let mut c = fake.accept_logged_in();
        let id = c.expect_action("Ping");
        let big = "x".repeat(10 << 20);
        c.write(format!("Response: Success\r\nActionID: {id}\r\nPing: {big}\r\n\r\n").as_bytes());
        let id = c.expect_action("Ping");
        c.pong(&id);
        let _ = c.expect_action("Ping");
        c.stream
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let junk = vec![b'z'; 64 << 10];
        while !stop2.load(Ordering::SeqCst) {
            match std::io::Write::write(&mut c.stream, &junk) {
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
    });
    let cfg = ClientConfig::builder("admin", "x")
        .seed(7)
        .ping_interval(Duration::from_millis(300))
        .pong_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let (fleet, _events) = one(addr, cfg);
    let (a, b, c) = futures_lite::future::block_on(async {
        within("ready", S5, fleet.wait_ready("s")).await.unwrap();
        let a = within(
            "big",
            S5,
            fleet.send(Route::Server("s"), Action::new("Ping")),
        )
        .await
        .unwrap()
        .result;
        let b = within(
            "small",
            S5,
            fleet.send(Route::Server("s"), Action::new("Ping")),
        )
        .await
        .unwrap()
        .result;
        let c = within(
            "endless",
            S5,
            fleet.send(Route::Server("s"), Action::new("Ping")),
        )
        .await
        .unwrap()
        .result;
        (a, b, c)
    });
    let st = fleet.client_stats("s").unwrap();
    assert!(st.decoder_allocated <= 2 << 20, "{st:?}");
    stop.store(true, Ordering::SeqCst);
    fleet.close();
    server.join().unwrap();
    assert!(
        matches!(
            a,
            Err(AmiError::Action(ActionError::ResponseDiscarded { .. }))
        ),
        "{a:?}"
    );
    assert!(b.is_ok());
    assert!(
        matches!(c, Err(AmiError::Action(ActionError::Unknown(_)))),
        "{c:?}"
    );
}
