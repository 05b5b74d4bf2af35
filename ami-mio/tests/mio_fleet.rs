//! `MioFleet` over real loopback sockets against several simulator TCP fronts at once: one
//! floods events, one restarts, one answers pings, one port refuses every connect. The merged
//! stream names each server, the quiet ones lose nothing, the restarting server's status
//! goes down and comes back, and pings on the quiet server keep completing on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_mio::MioFleet;
use ami_proto::fleet::{FleetOutput, Policy, Route, ServerStatus};
use ami_proto::{Action, ActionId, ClientConfig};
use ami_sim::fleet_log::FleetLog;
use std::time::{Duration, Instant};
use support::{config, front, quick_retries, refused_addr, silent_addr, Flood, HangingDns};

#[test]
fn a_fleet_merges_a_flood_a_restart_and_a_quiet_server_fairly() {
    let flood = Flood::start().unwrap();
    let restarting = front();
    let pings = front();
    let mut fleet = MioFleet::new().unwrap();
    fleet
        .add(Instant::now(), "flood", config(1), flood.addr())
        .unwrap();
    fleet
        .add(
            Instant::now(),
            "restarts",
            // Retries 10-100 ms apart can fail ten times in its 300 ms down: its breaker
            // (a minute) must not be what the test sees.
            ClientConfig::builder("admin", "amp111")
                .seed(2)
                .backoff_base(Duration::from_millis(10))
                .backoff_max(Duration::from_millis(100))
                .breaker_threshold(1000)
                .build()
                .unwrap(),
            restarting.local_addr(),
        )
        .unwrap();
    fleet
        .add(Instant::now(), "pings", config(3), pings.local_addr())
        .unwrap();
    fleet
        .add(Instant::now(), "down", config(4), refused_addr())
        .unwrap();

    let mut log = FleetLog::default();
    let mut inflight: Option<(ActionId, Instant)> = None;
    let mut latencies = Vec::new();
    let mut restarted = false;
    let started = Instant::now();
    let end = started + Duration::from_secs(3);
    while Instant::now() < end {
        let now = Instant::now();
        let ready = |n: &str, f: &MioFleet| f.status(n).is_some_and(ServerStatus::is_ready);
        if inflight.is_none() && ready("pings", &fleet) {
            let r = fleet
                .send(now, Route::Server("pings"), Action::new("Ping"))
                .unwrap();
            inflight = Some((r.id, now));
        }
        if !restarted && ready("restarts", &fleet) && now - started > Duration::from_millis(800) {
            restarting.restart(Duration::from_millis(300));
            restarted = true;
        }
        if log.by_policy.len() < 20 {
            if let Ok(r) = fleet.send(now, Route::Any(Policy::RoundRobin), Action::new("Ping")) {
                log.by_policy.push(r.server.to_string());
            }
        }
        let report = fleet.step(now).unwrap();
        for news in report.news {
            match news {
                FleetOutput::Status { server, status } => log.status(server.as_str(), &status),
                FleetOutput::Completed {
                    server,
                    id,
                    outcome,
                } => {
                    if let Some((want, at)) = &inflight {
                        if *want == id {
                            assert_eq!(server.as_str(), "pings");
                            assert!(outcome.is_ok(), "{outcome:?}");
                            latencies.push(at.elapsed());
                            inflight = None;
                        }
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        while let Some(item) = fleet.poll_event() {
            log.item(&item);
        }
        fleet.wait(Some(Duration::from_millis(5))).unwrap();
    }
    let max = latencies.iter().max().copied().unwrap_or_default();
    println!(
        "fleet over loopback: {} pings on the quiet server, max latency {max:?}; {log:?}",
        latencies.len()
    );
    assert!(
        latencies.len() >= 20,
        "only {} pings answered",
        latencies.len()
    );
    log.check("flood", 10_000, "restarts", "down").unwrap();
    let stats = fleet.stats();
    assert!(stats.most_connects_in_a_step <= 16);
    fleet.close_all(Instant::now());
    let report = fleet.step(Instant::now()).unwrap();
    assert!(report.news.iter().any(|n| matches!(
        n,
        FleetOutput::Status {
            status: ServerStatus::Closed { .. },
            ..
        }
    )));
}

#[test]
fn a_fleet_takes_host_names_resolved_off_the_step() {
    let sim = front();
    let up = sim.local_addr();
    let mut options = ami_mio::Options::default();
    // "pbx-a.test" answers with a refusing address first, then one that drops SYNs, then the
    // simulator; "nowhere.test" does not exist.
    let silent = silent_addr();
    options.resolve = std::sync::Arc::new(move |host: &str| {
        if host.starts_with("pbx-a.test:") {
            Ok(vec![refused_addr(), silent, up])
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such name",
            ))
        }
    });
    let mut fleet =
        MioFleet::with_options(options, ami_proto::fleet::FleetConfig::default()).unwrap();
    let now = Instant::now();
    fleet
        .add_host(now, "a", config(5), format!("pbx-a.test:{}", up.port()))
        .unwrap();
    fleet
        .add_host(now, "b", config(6), "nowhere.test:5038")
        .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let (mut a_ready, mut b_not_found) = (false, false);
    while Instant::now() < end && !(a_ready && b_not_found) {
        let report = fleet.step(Instant::now()).unwrap();
        for news in report.news {
            if let FleetOutput::Status { server, status } = news {
                match (server.as_str(), &status) {
                    ("a", s) if s.is_ready() => a_ready = true,
                    ("a", ServerStatus::BackingOff { reason, .. }) => {
                        panic!("a failed address reached the core: {reason:?}")
                    }
                    ("b", ServerStatus::BackingOff { reason, .. }) => {
                        assert_eq!(
                            *reason,
                            ami_proto::DisconnectReason::ConnectFailed(
                                ami_proto::ConnectFailure::HostNotFound
                            )
                        );
                        b_not_found = true;
                    }
                    _ => {}
                }
            }
        }
        fleet.wait(Some(Duration::from_millis(5))).unwrap();
    }
    assert!(a_ready, "the name's third address was not reached");
    assert!(
        b_not_found,
        "a name that does not resolve was not a failed connect"
    );
}

#[test]
fn a_fleet_asks_a_hanging_lookup_once_and_its_other_names_still_resolve() {
    let sim = front();
    let port = sim.local_addr().port();
    // `hangs.test` never answers (an unreachable DNS server) until the test ends; two
    // resolver threads, so a second lookup of it per connect attempt would leave none.
    let dns = HangingDns::new();
    let mut options = ami_mio::Options::default();
    options.resolver_threads = 2;
    options.resolve = dns.resolve(port);
    let mut fleet =
        MioFleet::with_options(options, ami_proto::fleet::FleetConfig::default()).unwrap();
    fleet
        .add_host(Instant::now(), "hang", quick_retries(80), "hangs.test:5038")
        .unwrap();
    let run =
        |fleet: &mut MioFleet, span: Duration, mut done: Box<dyn FnMut(&MioFleet) -> bool>| {
            let end = Instant::now() + span;
            while Instant::now() < end {
                fleet.step(Instant::now()).unwrap();
                if done(fleet) {
                    return true;
                }
                fleet.wait(Some(Duration::from_millis(5))).unwrap();
            }
            false
        };
    // Several connect attempts of `hang` time out meanwhile.
    run(&mut fleet, Duration::from_millis(700), Box::new(|_| false));
    fleet
        .add_host(
            Instant::now(),
            "good",
            quick_retries(81),
            format!("good.test:{port}"),
        )
        .unwrap();
    let ready = run(
        &mut fleet,
        Duration::from_secs(5),
        Box::new(|f| f.status("good").is_some_and(ServerStatus::is_ready)),
    );
    dns.release();
    let calls = dns.calls();
    assert!(
        ready,
        "good.test not ready while hangs.test hung: {calls:?}"
    );
    assert_eq!(
        calls.get("hangs.test:5038"),
        Some(&1),
        "a hanging lookup is asked once, not once per connect attempt: {calls:?}"
    );
}

#[test]
fn wait_does_not_block_on_what_close_all_and_remove_left_for_the_next_step() {
    let sim = front();
    let mut fleet = MioFleet::new().unwrap();
    for (name, seed) in [("a", 41), ("b", 42)] {
        fleet
            .add(Instant::now(), name, config(seed), sim.local_addr())
            .unwrap();
    }
    let ready = |fleet: &mut MioFleet, n: usize| {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            fleet.step(Instant::now()).unwrap();
            let up = ["a", "b"]
                .iter()
                .filter(|s| fleet.status(s).is_some_and(ServerStatus::is_ready))
                .count();
            if up == n {
                return;
            }
            fleet.wait(Some(Duration::from_millis(20))).unwrap();
        }
        panic!("not ready");
    };
    ready(&mut fleet, 2);
    // Each call leaves news and a socket to close for the next step; on a quiet server a
    // wait that ignored them would block for the caller's whole limit.
    let blocked = |fleet: &mut MioFleet| {
        let started = Instant::now();
        fleet.wait(Some(Duration::from_secs(30))).unwrap();
        started.elapsed()
    };
    assert!(fleet.remove(Instant::now(), "a"));
    let took = blocked(&mut fleet);
    assert!(took < Duration::from_secs(10), "after remove: {took:?}");
    let news = fleet.step(Instant::now()).unwrap().news;
    assert!(
        news.iter()
            .any(|n| matches!(n, FleetOutput::Removed { .. })),
        "{news:?}"
    );
    fleet.close_all(Instant::now());
    let took = blocked(&mut fleet);
    assert!(took < Duration::from_secs(10), "after close_all: {took:?}");
    let news = fleet.step(Instant::now()).unwrap().news;
    assert!(
        news.iter().any(|n| matches!(
            n,
            FleetOutput::Status {
                status: ServerStatus::Closed { .. },
                ..
            }
        )),
        "{news:?}"
    );
}

#[test]
fn an_action_sent_with_a_deadline_fails_a_silent_server_at_that_deadline() {
    // `send_with` and `send_all_with` give each server the action's own deadline: a server
    // that swallows it fails at that deadline with a typed timeout, not at the
    // configuration's 30 s; the other server's answer is its own.
    let answers = front();
    let swallows = front();
    swallows.with_faults(|f| {
        f.drop_actions(ami_sim::ActionMatch::named("CoreStatus"));
    });
    let mut fleet = MioFleet::new().unwrap();
    fleet
        .add(Instant::now(), "answers", config(51), answers.local_addr())
        .unwrap();
    fleet
        .add(
            Instant::now(),
            "swallows",
            config(52),
            swallows.local_addr(),
        )
        .unwrap();
    let run = |fleet: &mut MioFleet, want: usize| {
        let mut done = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end && done.len() < want {
            for news in fleet.step(Instant::now()).unwrap().news {
                if let FleetOutput::Completed {
                    server, outcome, ..
                } = news
                {
                    done.push((server.to_string(), outcome));
                }
            }
            fleet.wait(Some(Duration::from_millis(20))).unwrap();
        }
        done
    };
    let end = Instant::now() + Duration::from_secs(5);
    while ["answers", "swallows"]
        .iter()
        .any(|n| !fleet.status(n).is_some_and(ServerStatus::is_ready))
    {
        assert!(Instant::now() < end, "not ready");
        fleet.step(Instant::now()).unwrap();
        fleet.wait(Some(Duration::from_millis(20))).unwrap();
    }
    let deadline = Duration::from_millis(300);
    let timed_out = |o: &Result<_, ami_proto::ActionError>| {
        matches!(o, Err(ami_proto::ActionError::TimedOut { .. }))
    };
    let t0 = Instant::now();
    let sent = fleet.send_all_with(
        t0,
        &Action::new("CoreStatus"),
        ami_proto::SendOptions::timeout(deadline),
    );
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    let done = run(&mut fleet, 2);
    assert!(t0.elapsed() >= deadline, "failed before its deadline");
    assert_eq!(done.len(), 2, "{done:?}");
    for (server, outcome) in &done {
        match server.as_str() {
            "answers" => assert!(outcome.is_ok(), "{outcome:?}"),
            _ => assert!(timed_out(outcome), "{outcome:?}"),
        }
    }
    let t0 = Instant::now();
    fleet
        .send_with(
            t0,
            Route::Server("swallows"),
            Action::new("CoreStatus"),
            ami_proto::SendOptions::timeout(deadline),
        )
        .unwrap();
    let done = run(&mut fleet, 1);
    assert!(t0.elapsed() >= deadline);
    assert!(timed_out(&done[0].1), "{done:?}");
}
