//! ami-mio as a gateway uses it: many sessions to one PBX by name, a DNS server that hangs
//! or answers slower than the connect timeout, a handler that stalls the loop. A name that
//! hangs holds one resolver thread, not the other names; a late answer serves the next
//! attempt; answers already in a socket count before timers fire.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_mio::{ConnId, MioDriver, Notice, Options};
use ami_proto::{Action, ActionId, ClientConfig, Outcome};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{config as cfg, drive, front, quick_retries, HangingDns, LIMIT};

/// Steps until every connection of `conns` is Ready.
fn all_ready(driver: &mut MioDriver, conns: &[ConnId]) {
    let mut ready = Vec::new();
    assert!(
        drive(driver, LIMIT, |_, r| {
            for (c, n) in r.notices {
                if matches!(n, Notice::Ready { .. }) {
                    ready.push(c);
                }
            }
            conns.iter().all(|c| ready.contains(c))
        }),
        "not all ready: {ready:?} of {conns:?}"
    );
}

/// Every `Completed` notice seen while driving for `d`, with its connection.
fn completions(driver: &mut MioDriver, d: Duration) -> Vec<(ConnId, ActionId, Outcome)> {
    let mut got = Vec::new();
    drive(driver, d, |_, r| {
        for (c, n) in r.notices {
            if let Notice::Completed { id, outcome } = n {
                got.push((c, id, outcome));
            }
        }
        false
    });
    got
}

// ---------------------------------------------------------------------------------------
// Name lookups: a name that hangs must hold one thread, not the other names.
// ---------------------------------------------------------------------------------------

/// Several sessions to one PBX by name (an events session, a few action sessions) whose
/// DNS hangs: the crate promises "a lookup that hangs holds one thread, not the other
/// names". With one lookup per connection rather than per name, as many sessions to the
/// hanging name as there are resolver threads (16 by default) take every thread, and a
/// session to another, healthy name never gets its lookup answered.
#[test]
fn sessions_to_one_hanging_name_do_not_starve_lookups_of_other_names() {
    let server = front();
    let port = server.local_addr().port();
    let dns = HangingDns::new();
    let mut options = Options::default();
    options.resolve = dns.resolve(port);
    let threads = options.resolver_threads;
    let mut driver = MioDriver::with_options(options).unwrap();
    for k in 0..threads {
        driver
            .add_host(
                Instant::now(),
                quick_retries(100 + k as u64),
                "hangs.pbx:5038",
            )
            .unwrap();
    }
    let healthy = driver
        .add_host(Instant::now(), quick_retries(200), format!("ok.pbx:{port}"))
        .unwrap();
    let ready = drive(&mut driver, Duration::from_secs(3), |_, r| {
        r.notices
            .iter()
            .any(|(c, n)| *c == healthy && matches!(n, Notice::Ready { .. }))
    });
    let calls = dns.calls();
    dns.release();
    assert!(
        ready,
        "ok.pbx never resolved while {threads} sessions to one hanging name held the \
         resolver: lookups {calls:?}"
    );
}

/// An operator removes a connection stuck resolving and adds it again (or a supervisor
/// does so on a timer). Each removed connection's hanging lookup keeps its thread, and
/// each re-add asks again; after `resolver_threads` cycles no other name resolves.
#[test]
fn removing_and_re_adding_a_connection_whose_lookup_hangs_does_not_starve_other_names() {
    let server = front();
    let port = server.local_addr().port();
    let dns = HangingDns::new();
    let mut options = Options::default();
    options.resolve = dns.resolve(port);
    options.resolver_threads = 4;
    let mut driver = MioDriver::with_options(options).unwrap();
    for k in 0..8u64 {
        let stuck = driver
            .add_host(Instant::now(), quick_retries(300 + k), "hangs.pbx:5038")
            .unwrap();
        // Long enough for its lookup to be asked.
        drive(&mut driver, Duration::from_millis(30), |_, _| false);
        assert!(driver.remove(Instant::now(), stuck));
    }
    let healthy = driver
        .add_host(Instant::now(), quick_retries(400), format!("ok.pbx:{port}"))
        .unwrap();
    let ready = drive(&mut driver, Duration::from_secs(3), |_, r| {
        r.notices
            .iter()
            .any(|(c, n)| *c == healthy && matches!(n, Notice::Ready { .. }))
    });
    let calls = dns.calls();
    dns.release();
    assert!(
        ready,
        "ok.pbx never resolved after removed connections' lookups kept every resolver \
         thread: lookups {calls:?}"
    );
}

/// A name that resolves, slowly: a dead first nameserver in resolv.conf makes every lookup
/// take the resolver's timeout (5 s by default, the same as the default `connect_timeout`)
/// before the second nameserver answers. The connect attempt that asked times out first;
/// the answer then arrives during the reconnect backoff and is thrown away
/// (`take_answers` keeps an answer only while a connect is wanted), and the next attempt
/// asks again and times out again. The server is up and the name resolves, yet the
/// connection never connects. Scaled down: lookups take 300 ms, the connect timeout is
/// 200 ms, and an open breaker makes the backoff a fixed ~500 ms.
#[test]
fn a_lookup_slower_than_the_connect_timeout_still_connects_on_a_later_attempt() {
    let server = front();
    let port = server.local_addr().port();
    let lookups = Arc::new(Mutex::new(0usize));
    let counted = Arc::clone(&lookups);
    let mut options = Options::default();
    options.resolve = Arc::new(move |_host: &str| {
        *counted.lock().unwrap() += 1;
        std::thread::sleep(Duration::from_millis(300));
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    });
    let mut driver = MioDriver::with_options(options).unwrap();
    let config = ClientConfig::builder("admin", "amp111")
        .seed(500)
        .connect_timeout(Duration::from_millis(200))
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(10))
        .breaker_threshold(1)
        .breaker_cooldown(Duration::from_millis(500))
        .build()
        .unwrap();
    let conn = driver
        .add_host(Instant::now(), config, format!("slow-dns.pbx:{port}"))
        .unwrap();
    let mut timeouts = 0;
    let ready = drive(&mut driver, Duration::from_secs(4), |_, r| {
        for (c, n) in &r.notices {
            assert_eq!(*c, conn);
            if matches!(n, Notice::Disconnected { .. }) {
                timeouts += 1;
            }
        }
        r.notices
            .iter()
            .any(|(_, n)| matches!(n, Notice::Ready { .. }))
    });
    let asked = *lookups.lock().unwrap();
    assert!(
        ready,
        "never connected to a server that is up and a name that resolves in 300 ms: \
         {timeouts} failed attempts, {asked} lookups, each answer thrown away"
    );
}

/// The same through a `MioFleet`: its `take_answers` drops an answer that arrives between
/// attempts as the driver's does.
#[test]
fn a_fleet_server_whose_lookup_is_slower_than_the_connect_timeout_still_connects() {
    let server = front();
    let port = server.local_addr().port();
    let mut options = Options::default();
    options.resolve = Arc::new(move |_host: &str| {
        std::thread::sleep(Duration::from_millis(300));
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    });
    let mut fleet =
        ami_mio::MioFleet::with_options(options, ami_proto::fleet::FleetConfig::default()).unwrap();
    let config = ClientConfig::builder("admin", "amp111")
        .connect_timeout(Duration::from_millis(200))
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(10))
        .breaker_threshold(1)
        .breaker_cooldown(Duration::from_millis(500))
        .build()
        .unwrap();
    fleet
        .add_host(
            Instant::now(),
            "pbx",
            config,
            format!("slow-dns.pbx:{port}"),
        )
        .unwrap();
    let end = Instant::now() + Duration::from_secs(4);
    let mut ready = false;
    while Instant::now() < end && !ready {
        fleet.step(Instant::now()).unwrap();
        ready = matches!(
            fleet.status("pbx"),
            Some(ami_proto::fleet::ServerStatus::Ready { .. })
        );
        while fleet.poll_event().is_some() {}
        fleet.wait(Some(Duration::from_millis(5))).unwrap();
    }
    assert!(
        ready,
        "fleet server never connected: {:?}",
        fleet.status("pbx")
    );
}

// ---------------------------------------------------------------------------------------
// A slow handler: one stalled turn of the loop must not break a healthy session.
// ---------------------------------------------------------------------------------------

/// Two sessions on one loop. The handler of session A's event stalls the loop for 400 ms
/// (a slow database write, a GC pause) just after session B wrote its heartbeat Ping. B's
/// server answers the Ping within a millisecond; the Pong sits in B's socket. The next
/// `step` runs B's timers (`handle_timeout`) before it reads B's socket, so the pong
/// deadline fires first and B is dropped with `HeartbeatTimeout` (its pending actions
/// failing, a reconnect and re-login), although its server answered in time. Reading the
/// ready socket before firing the timers would have seen the Pong.
#[test]
fn a_stalled_loop_does_not_drop_a_session_whose_pong_is_already_in_its_socket() {
    let server = front();
    let mut driver = MioDriver::new().unwrap();
    let slow = ClientConfig::builder("admin", "amp111")
        .seed(600)
        .build()
        .unwrap();
    let quick = ClientConfig::builder("admin", "amp111")
        .seed(601)
        .ping_interval(Duration::from_millis(100))
        .pong_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let a = driver
        .add(Instant::now(), slow, server.local_addr())
        .unwrap();
    let b = driver
        .add(Instant::now(), quick, server.local_addr())
        .unwrap();
    all_ready(&mut driver, &[a, b]);
    // Step until B writes its heartbeat Ping (its only output once logged in).
    let before = driver.stats(b).unwrap().bytes_out;
    assert!(
        drive(&mut driver, Duration::from_secs(2), |d, _| d
            .stats(b)
            .unwrap()
            .bytes_out
            > before),
        "no heartbeat from B"
    );
    // The handler of one of A's events takes 400 ms.
    std::thread::sleep(Duration::from_millis(400));
    let mut lost = Vec::new();
    drive(&mut driver, Duration::from_millis(300), |_, r| {
        for (c, n) in r.notices {
            if let Notice::Disconnected { reason, .. } = n {
                lost.push((c, reason));
            }
        }
        false
    });
    assert!(
        lost.is_empty(),
        "a healthy session was dropped after one slow turn of the loop: {lost:?}"
    );
}

/// The same stall seen by an action: B's Ping (deadline 200 ms) is written and answered
/// within a millisecond, then the loop stalls 300 ms in A's handler. The answer is in B's
/// socket, yet the next `step` fires the deadline before it reads, and the action
/// completes `TimedOut`: a gateway told "timed out" about an Originate whose success
/// answer had arrived in time retries it and places the call twice.
#[test]
fn a_stalled_loop_does_not_time_out_an_action_whose_answer_is_already_in_its_socket() {
    let server = front();
    let mut driver = MioDriver::new().unwrap();
    let a = driver
        .add(Instant::now(), cfg(610), server.local_addr())
        .unwrap();
    let b = driver
        .add(Instant::now(), cfg(611), server.local_addr())
        .unwrap();
    all_ready(&mut driver, &[a, b]);
    let before = driver.stats(b).unwrap().bytes_out;
    let id = driver
        .send_with(
            Instant::now(),
            b,
            Action::new("Ping"),
            ami_proto::SendOptions::timeout(Duration::from_millis(200)),
        )
        .unwrap();
    // One step writes it (nothing else of B's is due).
    driver.step(Instant::now()).unwrap();
    assert!(
        driver.stats(b).unwrap().bytes_out > before,
        "the Ping was not written"
    );
    // The handler of one of A's events takes 300 ms; the answer arrives meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    let got = completions(&mut driver, Duration::from_millis(200));
    let outcome: Vec<_> = got.iter().filter(|(_, i, _)| *i == id).collect();
    assert_eq!(outcome.len(), 1, "{got:?}");
    assert!(
        outcome[0].2.is_ok(),
        "the answer was in the socket before the deadline: {:?}",
        outcome[0].2
    );
}

/// A reconnect storm through a `MioFleet` whose servers share one name (a gateway's many
/// sessions to one PBX), when the name's answer has to be asked for (slowly): the fleet
/// paces its `Connect`s at `connects_per_step`, "so a hundred servers coming back at once
/// cannot fill a step with socket opens". Every server that joins the name's one lookup
/// while it runs must not open its socket in the step its answer comes: the sockets opened
/// per step stay within the budget. Counted at a listener: after each step, the
/// connections it accepted.
#[test]
fn a_fleet_whose_servers_share_a_slow_name_opens_at_most_its_connect_budget_per_step() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut options = Options::default();
    options.resolve = Arc::new(move |_host: &str| {
        std::thread::sleep(Duration::from_millis(300));
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    });
    // The fleet's budget is the options' (`MioFleet::with_options` sets it).
    options.budget.connects_per_step = 2;
    let config = ami_proto::fleet::FleetConfig::default();
    let mut fleet = ami_mio::MioFleet::with_options(options, config).unwrap();
    let servers = 20;
    for k in 0..servers {
        fleet
            .add_host(
                Instant::now(),
                &format!("s{k}"),
                cfg(700 + k),
                format!("one-pbx.test:{port}"),
            )
            .unwrap();
    }
    let mut accepted = Vec::new();
    let mut per_step = Vec::new();
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end && accepted.len() < servers as usize {
        fleet.step(Instant::now()).unwrap();
        while fleet.poll_event().is_some() {}
        // Loopback connects complete in the kernel at once: what this step opened is in
        // the listener's queue after a moment.
        std::thread::sleep(Duration::from_millis(5));
        let mut n = 0;
        while let Ok((s, _)) = listener.accept() {
            accepted.push(s);
            n += 1;
        }
        per_step.push(n);
    }
    let most = per_step.iter().copied().max().unwrap_or(0);
    assert_eq!(
        accepted.len(),
        servers as usize,
        "not all connected: {per_step:?}"
    );
    assert!(
        most <= 2,
        "{most} sockets opened in one step against a budget of 2 per step: {per_step:?}"
    );
}
