//! What a reconnect costs must be given back: hundreds of connection attempts against a
//! server that accepts and hangs up, a port that refuses, one that never answers a SYN, or
//! a simulator that restarts, and connections added and removed again and again, leave as
//! many file descriptors, threads and slots as a few did. Counted from `/proc/self` and
//! the driver's own listings, never timed. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

#[path = "../../ami-proto/tests/support/process_counts.rs"]
mod process_counts;
mod support;

use ami_mio::{MioDriver, MioFleet, Notice, Options};
use ami_proto::fleet::{FleetConfig, FleetOutput, ServerStatus};
use ami_proto::ClientConfig;
use process_counts::{assert_no_growth_of, eager_builder, hangs_up, open_fds, threads};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::{front, refused_addr, silent_addr};

/// The tests count the whole process's descriptors and threads: one at a time.
static ALONE: Mutex<()> = Mutex::new(());

fn resources() -> (usize, usize) {
    (open_fds(), threads())
}

fn assert_no_growth(what: &str, early: (usize, usize), late: (usize, usize)) {
    assert_no_growth_of(
        what,
        &[("open fds", early.0, late.0), ("threads", early.1, late.1)],
    );
}

/// [`eager_builder`] whose connects to a peer that never answers give up at once.
fn eager() -> ClientConfig {
    eager_builder()
        .connect_timeout(Duration::from_millis(5))
        .build()
        .unwrap()
}

/// Steps `driver` until `connects()` reaches `n` (by counting, 60 s at most).
fn drive_until(driver: &mut MioDriver, n: u64, connects: impl Fn(&MioDriver) -> u64) {
    for _ in 0..600_000 {
        if connects(driver) >= n {
            return;
        }
        let report = driver.step(Instant::now()).unwrap();
        for conn in report.events {
            while driver.poll_event(conn).is_some() {}
        }
        driver.wait(Some(Duration::from_millis(1))).unwrap();
    }
    panic!("{} connects of {n}", connects(driver));
}

/// A driver with one connection to `addr` through `add`, cycled `n` times after 20.
fn cycle(what: &str, addr: SocketAddr, n: u64) {
    let mut driver = MioDriver::new().unwrap();
    let conn = driver.add(Instant::now(), eager(), addr).unwrap();
    let connects = move |d: &MioDriver| d.stats(conn).unwrap().connects;
    drive_until(&mut driver, 20, connects);
    let early = resources();
    drive_until(&mut driver, 20 + n, connects);
    assert_no_growth(what, early, resources());
}

#[test]
fn a_connection_reconnecting_to_a_server_that_hangs_up_keeps_its_fds() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    cycle("500 hang-ups", hangs_up(), 500);
}

#[test]
fn a_connection_reconnecting_to_a_refusing_port_keeps_its_fds() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    cycle("500 refusals", refused_addr(), 500);
}

#[test]
fn a_connection_whose_connects_time_out_keeps_its_fds() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    cycle("200 connect timeouts", silent_addr(), 200);
}

#[test]
fn a_connection_reconnecting_by_host_name_keeps_its_fds_and_threads() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let addr = hangs_up();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add_host(
            Instant::now(),
            eager(),
            format!("localhost:{}", addr.port()),
        )
        .unwrap();
    let connects = move |d: &MioDriver| d.stats(conn).unwrap().connects;
    drive_until(&mut driver, 20, connects);
    let early = resources();
    drive_until(&mut driver, 520, connects);
    assert_no_growth("500 lookups and hang-ups", early, resources());
}

#[test]
fn connections_added_logged_in_and_removed_again_and_again_leave_nothing_behind() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = front();
    let mut driver = MioDriver::with_options(Options::default()).unwrap();
    let mut early = None;
    for round in 0..150 {
        let conn = driver
            .add(Instant::now(), eager(), front.local_addr())
            .unwrap();
        support::wait_ready(&mut driver, conn);
        assert!(driver.remove(Instant::now(), conn));
        if round == 10 {
            early = Some(resources());
        }
    }
    driver.step(Instant::now()).unwrap();
    assert_no_growth("150 connections", early.unwrap(), resources());
    assert!(driver.connections().is_empty());
}

/// Steps `fleet` until `done` (60 s at most), draining its stream.
fn fleet_until(fleet: &mut MioFleet, mut done: impl FnMut(&MioFleet, &[FleetOutput]) -> bool) {
    for _ in 0..600_000 {
        let report = fleet.step(Instant::now()).unwrap();
        while fleet.poll_event().is_some() {}
        if done(fleet, &report.news) {
            return;
        }
        fleet.wait(Some(Duration::from_millis(1))).unwrap();
    }
    panic!("not done within 60 s");
}

#[test]
fn a_fleet_whose_servers_reconnect_or_come_and_go_leaves_nothing_behind() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = front();
    let mut fleet = MioFleet::with_options(Options::default(), FleetConfig::default()).unwrap();
    fleet
        .add(Instant::now(), "flapping", eager(), hangs_up())
        .unwrap();
    let mut early = None;
    for round in 0..150 {
        let name = format!("pbx-{round}");
        fleet
            .add(Instant::now(), &name, eager(), front.local_addr())
            .unwrap();
        fleet_until(&mut fleet, |f, _| {
            matches!(f.status(&name), Some(ServerStatus::Ready { .. }))
        });
        assert!(fleet.remove(Instant::now(), &name));
        fleet_until(&mut fleet, |_, news| {
            news.iter()
                .any(|n| matches!(n, FleetOutput::Removed { .. }))
        });
        if round == 10 {
            early = Some(resources());
        }
    }
    assert_no_growth("150 servers", early.unwrap(), resources());
    let stats = fleet.stats();
    assert_eq!(stats.servers.len(), 1);
    assert!(stats.total.connects > 150, "{}", stats.total.connects);
}

#[test]
fn a_connection_logging_in_again_after_each_restart_keeps_its_fds() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = front();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add(Instant::now(), eager(), front.local_addr())
        .unwrap();
    let mut early = None;
    for round in 0..150 {
        support::wait_ready(&mut driver, conn);
        if round == 10 {
            early = Some(resources());
        }
        front.restart(Duration::ZERO);
        assert!(support::drive(&mut driver, support::LIMIT, |d, r| {
            for c in r.events {
                while d.poll_event(c).is_some() {}
            }
            r.notices
                .iter()
                .any(|(_, n)| matches!(n, Notice::Disconnected { .. }))
        }));
    }
    assert_no_growth("150 restarts", early.unwrap(), resources());
}

#[cfg(feature = "tls")]
#[test]
fn a_tls_connection_whose_handshakes_fail_keeps_its_fds() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let (pem, _) = ami_conformance::localhost_cert();
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add_tls(
            Instant::now(),
            eager(),
            hangs_up(),
            ami_conformance::client_tls(&pem, "localhost"),
        )
        .unwrap();
    let connects = move |d: &MioDriver| d.stats(conn).unwrap().connects;
    drive_until(&mut driver, 20, connects);
    let early = resources();
    drive_until(&mut driver, 320, connects);
    assert_no_growth("300 failed handshakes", early, resources());
}

#[cfg(feature = "tls")]
#[test]
fn a_tls_connection_logging_in_again_after_each_restart_keeps_its_fds() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = front();
    let (pem, server) = ami_conformance::localhost_cert();
    let terminator = ami_conformance::TlsTerminator::start(server, front.local_addr());
    let mut driver = MioDriver::new().unwrap();
    let conn = driver
        .add_tls(
            Instant::now(),
            eager(),
            terminator.addr,
            ami_conformance::client_tls(&pem, "localhost"),
        )
        .unwrap();
    let mut early = None;
    for round in 0..100 {
        support::wait_ready(&mut driver, conn);
        if round == 10 {
            early = Some(resources());
        }
        front.restart(Duration::ZERO);
        assert!(support::drive(&mut driver, support::LIMIT, |d, r| {
            for c in r.events {
                while d.poll_event(c).is_some() {}
            }
            r.notices
                .iter()
                .any(|(_, n)| matches!(n, Notice::Disconnected { .. }))
        }));
    }
    assert_no_growth("100 TLS restarts", early.unwrap(), resources());
}
