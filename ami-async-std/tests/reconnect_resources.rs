//! What a reconnect costs must be given back: hundreds of connection attempts against a
//! server that accepts and hangs up, or a simulator that restarts,
//! leave as many file descriptors and threads as a few attempts did, on async-io's
//! `block_on`, on smol, and with the drivers on threads of their own. Counted from
//! `/proc/self`, never timed. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

#[path = "../../ami-proto/tests/support/process_counts.rs"]
mod process_counts;

use ami_proto::fleet::{FleetConfig, ServerStatus};
use ami_proto::Status;
use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use futures_lite::future;
use process_counts::{assert_no_growth_of, eager, hangs_up, open_fds, threads};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

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

/// Waits (by counting, 60 s at most) until `connects()` reaches `n`.
async fn until_connects(n: u64, connects: impl Fn() -> u64) {
    for _ in 0..60_000 {
        if connects() >= n {
            return;
        }
        async_io::Timer::after(Duration::from_millis(1)).await;
    }
    panic!("{} connects of {n}", connects());
}

/// `f`, which must end within 10 s.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    future::or(async { Some(f.await) }, async {
        async_io::Timer::after(Duration::from_secs(10)).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("{what}: not within 10 s"))
}

/// Runs the test body beside the driver on this thread (the driver is dropped after).
fn beside<D: Future<Output = ()>>(driver: D, body: impl Future<Output = ()>) {
    async_io::block_on(future::or(body, async {
        driver.await;
        panic!("the driver ended first");
    }));
}

#[test]
fn a_session_reconnecting_to_a_server_that_hangs_up_keeps_its_fds_and_threads() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let addr = hangs_up();
    let (ami, _events, driver) = ami_async_std::spawn(eager(), addr);
    beside(driver, async {
        until_connects(20, || ami.stats().connects).await;
        let early = resources();
        until_connects(520, || ami.stats().connects).await;
        assert_no_growth("500 hang-ups", early, resources());
    });
}

#[test]
fn a_session_reconnecting_by_host_name_keeps_its_fds_and_threads() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let addr = hangs_up();
    let (ami, _events, driver) = ami_async_std::spawn(eager(), ("localhost", addr.port()));
    beside(driver, async {
        until_connects(20, || ami.stats().connects).await;
        let early = resources();
        until_connects(320, || ami.stats().connects).await;
        assert_no_growth("300 lookups and hang-ups", early, resources());
    });
}

#[test]
fn a_session_on_smol_logging_in_again_after_each_restart_keeps_its_fds_and_threads() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let (ami, mut events, driver) = ami_async_std::spawn(eager(), front.local_addr());
    let ex = smol::LocalExecutor::new();
    ex.spawn(driver).detach();
    ex.spawn(async move { while events.recv().await.is_some() {} })
        .detach();
    smol::block_on(ex.run(async {
        let status = ami.status();
        let mut early = None;
        for round in 0..150 {
            // Ready after one more login than rounds so far: each restart ended the
            // session and a new one logged in. Counted, not watched for a status other
            // than Ready: a watch keeps only the latest status, and the session can be
            // down and back before this task looks.
            within("logged in again after the restart", async {
                while ami.stats().logins <= round || !matches!(status.get(), Status::Ready { .. }) {
                    async_io::Timer::after(Duration::from_millis(1)).await;
                }
            })
            .await;
            if round == 10 {
                early = Some(resources());
            }
            front.restart(Duration::ZERO);
        }
        assert!(ami.stats().logins >= 150);
        assert_no_growth("150 restarts", early.unwrap(), resources());
    }));
}

#[test]
fn sessions_on_threads_of_their_own_started_and_logged_off_leave_no_thread_behind() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let mut early = None;
    for round in 0..100 {
        let (ami, events) = ami_async_std::run_on_thread(eager(), front.local_addr()).unwrap();
        async_io::block_on(async {
            within("ready", ami.wait_ready()).await.unwrap();
            within("logged off", ami.logoff()).await;
        });
        drop((ami, events));
        if round == 10 {
            early = Some(resources());
        }
    }
    // The last driver's thread may still be on its way out.
    std::thread::sleep(Duration::from_millis(100));
    assert_no_growth("100 sessions on threads", early.unwrap(), resources());
}

#[test]
fn a_fleet_on_threads_whose_servers_come_and_go_leaves_nothing_behind() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let hangup = hangs_up();
    let (fleet, mut events) =
        ami_async_std::fleet::run_fleet_on_threads(FleetConfig::default(), 2).unwrap();
    std::thread::spawn(move || {
        async_io::block_on(async { while events.recv().await.is_some() {} })
    });
    // One server that reconnects all along, others added, logged in and removed.
    fleet.add("flapping", eager(), hangup).unwrap();
    let mut early = None;
    async_io::block_on(async {
        for round in 0..150 {
            let name = format!("pbx-{round}");
            fleet.add(&name, eager(), front.local_addr()).unwrap();
            let mut ready = false;
            for _ in 0..10_000 {
                if matches!(fleet.status(&name), Some(ServerStatus::Ready { .. })) {
                    ready = true;
                    break;
                }
                async_io::Timer::after(Duration::from_millis(1)).await;
            }
            assert!(ready, "{name} ready");
            assert!(fleet.remove(&name));
            if round == 10 {
                early = Some(resources());
            }
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_no_growth("150 servers", early.unwrap(), resources());
    assert_eq!(fleet.stats().servers.len(), 1);
    assert!(fleet.stats().total.connects > 150);
}
