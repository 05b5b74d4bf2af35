//! Fleet behaviour against scripted servers (the full simulation is in `ami-sim`'s fleet
//! harness).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: a real epoch for virtual time

#[path = "support/fleet_login.rs"]
mod fleet_login;

use ami_proto::fleet::*;
use ami_proto::{
    Action, ActionError, ClientConfig, ClientConfigBuilder, ConnectFailure, DisconnectReason,
    Input, SendOptions, StreamItem, READ_AHEAD_BYTES,
};
use fleet_login::answer;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn client_config() -> ClientConfig {
    client_config_builder().build().unwrap()
}

fn client_config_builder() -> ClientConfigBuilder {
    ClientConfig::builder("admin", "amp111")
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(40))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_secs(5))
        .event_queue_cap(16)
}

fn fleet(connects_per_step: usize) -> Fleet {
    let mut config = FleetConfig::default();
    config.budget.connects_per_step = connects_per_step;
    config.seed = 42;
    Fleet::new(config)
}

/// Drains outputs; connects are answered per `open` (true: the transport opens).
fn drain(fleet: &mut Fleet, now: Instant, open: bool, log: &mut Vec<FleetOutput>) -> usize {
    let mut connects = 0;
    loop {
        match fleet.poll_output() {
            FleetOutput::Wait(_) => return connects,
            FleetOutput::Connect(id) => {
                connects += 1;
                if open {
                    fleet.handle_input(now, id, Input::Connected);
                    fleet.handle_input(
                        now,
                        id,
                        Input::Received(b"Asterisk Call Manager/11.0.0\r\n"),
                    );
                } else {
                    fleet.handle_input(now, id, Input::ConnectFailed(ConnectFailure::Refused));
                }
            }
            other => log.push(other),
        }
    }
}

/// Lets every server with bytes to send talk to its scripted server once.
fn exchange(fleet: &mut Fleet, now: Instant) {
    let ids: Vec<ServerId> = fleet.servers().map(|(id, _)| id).collect();
    for id in ids {
        let wire = fleet.transmit(id).to_vec();
        fleet.advance_transmit(id, wire.len());
        let reply = answer(&wire);
        if !reply.is_empty() {
            fleet.handle_input(now, id, Input::Received(&reply));
        }
    }
}

/// Runs steps until every server is ready.
fn all_ready(fleet: &mut Fleet, now: Instant) -> Vec<FleetOutput> {
    let mut log = Vec::new();
    for _ in 0..100 {
        fleet.handle_timeout(now);
        drain(fleet, now, true, &mut log);
        exchange(fleet, now);
        drain(fleet, now, true, &mut log);
        if fleet.stats().by_status[2] == fleet.len() {
            return log;
        }
    }
    panic!("not all ready: {:?}", fleet.stats().by_status);
}

fn event(name: &str, seq: usize) -> Vec<u8> {
    format!("Event: {name}\r\nSeq: {seq}\r\n\r\n").into_bytes()
}

#[test]
fn connects_per_step_stay_within_budget_and_every_server_gets_its_turn() {
    let now = Instant::now();
    let mut f = fleet(8);
    for k in 0..100 {
        f.add(now, &format!("pbx{k}"), client_config()).unwrap();
    }
    let mut started: HashMap<ServerId, usize> = HashMap::new();
    for step in 1..=13 {
        f.handle_timeout(now);
        let mut n = 0;
        loop {
            match f.poll_output() {
                FleetOutput::Connect(id) => {
                    n += 1;
                    *started.entry(id).or_default() += 1;
                }
                FleetOutput::Wait(at) => {
                    // Connects still waiting: the fleet asks to be stepped again at once.
                    if step < 13 {
                        assert_eq!(at, Some(now));
                    }
                    break;
                }
                _ => {}
            }
        }
        assert!(n <= 8, "{n} connects in step {step}");
    }
    assert_eq!(
        started.len(),
        100,
        "ceil(100 / 8) = 13 steps reach everyone"
    );
    assert!(started.values().all(|n| *n == 1));
    assert_eq!(f.stats().most_connects_in_a_step, 8);
}

#[test]
fn policy_routing_needs_a_ready_server_and_says_so_when_there_is_none() {
    let now = Instant::now();
    let mut f = fleet(16);
    f.add(now, "a", client_config()).unwrap();
    f.add(now, "b", client_config()).unwrap();
    let r = f.send(now, Route::Any(Policy::RoundRobin), Action::new("Ping"));
    assert_eq!(
        r,
        Err(RouteError::NoServer {
            servers: 2,
            ready: 0,
            full: 0
        })
    );
    assert_eq!(f.stats().total.pending, 0, "nothing was queued anywhere");
    assert_eq!(
        f.send(now, Route::Server("nope"), Action::new("Ping")),
        Err(RouteError::UnknownServer("nope".into()))
    );
    all_ready(&mut f, now);
    let picked: Vec<String> = (0..4)
        .map(|_| {
            f.send(now, Route::Any(Policy::RoundRobin), Action::new("Ping"))
                .unwrap()
                .server
                .to_string()
        })
        .collect();
    assert_eq!(picked, ["a", "b", "a", "b"]);
    // A caller error is the caller's, whichever server would have taken it.
    let bad = f.send(now, Route::Any(Policy::RoundRobin), Action::new("Login"));
    assert!(matches!(bad, Err(RouteError::Send { .. })), "{bad:?}");
}

#[test]
fn fewest_in_flight_prefers_the_idle_server() {
    let now = Instant::now();
    let mut f = fleet(16);
    for name in ["a", "b", "c"] {
        f.add(now, name, client_config()).unwrap();
    }
    all_ready(&mut f, now);
    for _ in 0..3 {
        f.send(now, Route::Server("a"), Action::new("Ping"))
            .unwrap();
        f.send(now, Route::Server("c"), Action::new("Ping"))
            .unwrap();
    }
    let r = f
        .send(now, Route::Any(Policy::FewestInFlight), Action::new("Ping"))
        .unwrap();
    assert_eq!(r.server.as_str(), "b");
}

#[test]
fn completions_name_the_server_and_ids_never_cross_servers() {
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    let b = f.add(now, "b", client_config()).unwrap();
    all_ready(&mut f, now);
    let on_a = f
        .send(now, Route::Server("a"), Action::new("Ping"))
        .unwrap();
    let wire_a = f.transmit(a).to_vec();
    f.advance_transmit(a, wire_a.len());
    assert!(!f.transmit(b).is_empty() || f.transmit(b).is_empty());
    // Server b echoes a's Ping answer: b's client has no such action.
    f.handle_input(now, b, Input::Received(&answer(&wire_a)));
    let mut log = Vec::new();
    drain(&mut f, now, true, &mut log);
    assert!(log
        .iter()
        .all(|o| !matches!(o, FleetOutput::Completed { .. })));
    assert_eq!(f.client("b").unwrap().stats().unmatched, 1);
    f.handle_input(now, a, Input::Received(&answer(&wire_a)));
    drain(&mut f, now, true, &mut log);
    let done: Vec<_> = log
        .iter()
        .filter_map(|o| match o {
            FleetOutput::Completed {
                server,
                id,
                outcome,
            } => Some((server.as_str(), id.clone(), outcome.is_ok())),
            _ => None,
        })
        .collect();
    assert_eq!(done, [("a", on_a.id, true)]);
}

#[test]
fn a_flooding_server_cannot_push_out_a_quiet_servers_events() {
    let now = Instant::now();
    let mut f = fleet(16);
    let flood = f.add(now, "flood", client_config()).unwrap();
    let quiet = f.add(now, "quiet", client_config()).unwrap();
    all_ready(&mut f, now);
    // Each session opens its stream with a Ready item; take those first.
    let opened = std::iter::from_fn(|| f.poll_event())
        .filter(|i| matches!(i.item, StreamItem::Ready { .. }))
        .count();
    assert_eq!(opened, 2);
    let mut burst = Vec::new();
    for seq in 0..1000 {
        burst.extend(event("Flood", seq));
    }
    f.handle_input(now, flood, Input::Received(&burst));
    f.handle_input(now, quiet, Input::Received(&event("Quiet", 0)));
    f.handle_input(now, quiet, Input::Received(&event("Quiet", 1)));
    let items: Vec<FleetItem> = std::iter::from_fn(|| f.poll_event()).collect();
    let quiet_at: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.server.as_str() == "quiet")
        .map(|(k, _)| k)
        .collect();
    // Both quiet events came within the first rotations, and none was lost.
    assert_eq!(quiet_at.len(), 2);
    assert!(quiet_at[1] <= 4, "quiet events at {quiet_at:?}");
    let lost: u64 = items
        .iter()
        .filter_map(|i| match (&i.item, i.server.as_str()) {
            (StreamItem::Gap { dropped }, "flood") => Some(*dropped),
            (StreamItem::Gap { .. }, other) => panic!("{other} lost events"),
            _ => None,
        })
        .sum();
    assert_eq!(lost, 1000 - 16, "the flood's overflow is one counted gap");
    let s = f.stats();
    let by_name = |n: &str| s.servers.iter().find(|x| x.name.as_str() == n).unwrap();
    assert_eq!(by_name("flood").events_lost, 984);
    assert_eq!(by_name("quiet").events_delivered, 2);
    assert!(!f.has_events());
}

/// A reader on another thread takes items as they wait (`poll_queued_events`) and copies
/// them out later: it sees the same stream, in the same order, with the same counters, as one
/// that takes them copied (`poll_events`), a removed server's last gap included.
#[test]
fn queued_items_are_the_same_stream_as_polled_ones() {
    let now = Instant::now();
    let run = |queued: bool| {
        let mut f = fleet(16);
        let flood = f.add(now, "flood", client_config()).unwrap();
        let quiet = f.add(now, "quiet", client_config()).unwrap();
        all_ready(&mut f, now);
        let burst: Vec<u8> = (0..100).flat_map(|seq| event("Flood", seq)).collect();
        f.handle_input(now, flood, Input::Received(&burst));
        f.handle_input(now, quiet, Input::Received(&event("Quiet", 0)));
        let mut items = Vec::new();
        let mut take = |f: &mut Fleet, max: usize| {
            if queued {
                let mut batch = Vec::new();
                f.poll_queued_events(&mut batch, max);
                items.extend(batch.into_iter().map(FleetQueued::into_item));
            } else {
                f.poll_events(&mut items, max);
            }
        };
        take(&mut f, 5);
        f.handle_input(now, quiet, Input::Received(&event("Quiet", 1)));
        assert!(f.remove(now, "flood"));
        take(&mut f, usize::MAX);
        let counters: Vec<(String, u64, u64)> = f
            .stats()
            .servers
            .iter()
            .map(|s| (s.name.to_string(), s.events_delivered, s.events_lost))
            .collect();
        (items, counters)
    };
    let (polled, polled_counters) = run(false);
    let (queued, queued_counters) = run(true);
    assert_eq!(polled, queued);
    assert_eq!(polled_counters, queued_counters);
    assert!(polled
        .iter()
        .any(|i| i.server.as_str() == "flood" && matches!(i.item, StreamItem::Gap { .. })));
    assert_eq!(
        polled
            .iter()
            .filter(|i| i.server.as_str() == "quiet")
            .count(),
        3,
        "Ready and two events: {polled:?}"
    );
}

/// A server's reads are wanted until its queue holds `READ_AHEAD_BYTES` of events, far below
/// half its caps, and again once the reader has taken it back under that.
#[test]
fn a_server_is_not_read_further_ahead_of_its_reader_than_the_read_ahead() {
    let now = Instant::now();
    let mut f = fleet(16);
    let config = ClientConfig::builder("admin", "amp111")
        .event_queue_cap(1_000_000)
        .build()
        .unwrap();
    let a = f.add(now, "a", config).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    let one = format!("Event: Flood\r\nPad: {}\r\n\r\n", "x".repeat(1000)).into_bytes();
    let mut queued = 0;
    while f.wants_read(a) {
        f.handle_input(now, a, Input::Received(&one));
        queued += 1;
        assert!(queued < 10_000, "still wanted with {queued} KB queued");
    }
    let bytes = queued * one.len();
    assert!(
        (READ_AHEAD_BYTES * 9 / 10..=READ_AHEAD_BYTES * 11 / 10).contains(&bytes),
        "{bytes}"
    );
    for _ in 0..queued / 4 {
        assert!(matches!(
            f.poll_event().map(|i| i.item),
            Some(StreamItem::Event(_))
        ));
    }
    assert!(f.wants_read(a));
}

#[test]
fn removal_completes_pending_actions_and_reports_queued_events_as_a_gap() {
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    all_ready(&mut f, now);
    let ping = f
        .send(now, Route::Server("a"), Action::new("Ping"))
        .unwrap();
    let wire = f.transmit(a).to_vec();
    f.advance_transmit(a, wire.len());
    f.handle_input(now, a, Input::Received(&event("Left", 0)));
    assert!(f.remove(now, "a"));
    let mut log = Vec::new();
    drain(&mut f, now, true, &mut log);
    let completed = log.iter().find_map(|o| match o {
        FleetOutput::Completed { id, outcome, .. } if *id == ping.id => Some(outcome.clone()),
        _ => None,
    });
    assert_eq!(
        completed,
        Some(Err(ActionError::Unknown(DisconnectReason::LocalClose)))
    );
    assert!(matches!(log.last(), Some(FleetOutput::Removed { server }) if server.as_str() == "a"));
    assert!(log
        .iter()
        .any(|o| matches!(o, FleetOutput::Close(id) if *id == a)));
    let gap = f.poll_event().unwrap();
    assert_eq!(gap.item, StreamItem::Gap { dropped: 1 });
    assert_eq!(gap.server.as_str(), "a");
    // The old ID names nothing; the name is free again, under a new ID.
    f.handle_input(now, a, Input::Eof);
    assert!(f.transmit(a).is_empty());
    let again = f.add(now, "a", client_config()).unwrap();
    assert_ne!(again, a);
    assert_eq!(again.index(), a.index());
}

#[test]
fn a_removed_servers_last_items_are_counted_until_the_reader_takes_them() {
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    f.handle_input(now, a, Input::Received(&event("Left", 0)));
    assert_eq!(f.removed_items("a"), 0, "a is in the fleet");
    assert!(f.remove(now, "a"));
    assert!(f.holds_removed("a"));
    assert_eq!(f.removed_items("a"), 1, "its final gap");
    assert_eq!(f.removed_items("b"), 0);
    let gap = f.poll_event().unwrap();
    assert_eq!(gap.item, StreamItem::Gap { dropped: 1 });
    assert_eq!(f.removed_items("a"), 0);
}

#[test]
fn removal_counts_the_queued_events_it_drops_once_and_reports_every_missing_one() {
    // The queue (16 events) overflowed before the removal: the drops were counted on the
    // server then (its pending gap notice says so); the removal loses the 16 still queued.
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    all_ready(&mut f, now);
    let flood: Vec<u8> = (0..40).flat_map(|i| event("Flood", i)).collect();
    f.handle_input(now, a, Input::Received(&flood));
    let dropped = f.client("a").unwrap().stats().events_dropped;
    assert_eq!(dropped, 24);
    assert!(f.remove(now, "a"));
    let stats = f.stats();
    assert_eq!(stats.events_lost_on_removal, 16, "counted once: {stats:?}");
    let mut missing = 0;
    while let Some(item) = f.poll_event() {
        if let StreamItem::Gap { dropped } = item.item {
            missing += dropped;
        }
    }
    assert_eq!(missing, 40, "the reader learns of every event it missed");
}

#[test]
fn status_follows_the_session_and_the_breaker() {
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    assert_eq!(f.status("a"), Some(&ServerStatus::Connecting));
    f.handle_timeout(now);
    let id = loop {
        match f.poll_output() {
            FleetOutput::Connect(id) => break id,
            FleetOutput::Status { .. } => {}
            other => panic!("{other:?} before the connect"),
        }
    };
    f.handle_input(now, id, Input::Connected);
    assert_eq!(f.status("a"), Some(&ServerStatus::LoggingIn));
    f.handle_input(
        now,
        id,
        Input::Received(b"Asterisk Call Manager/11.0.0\r\n"),
    );
    exchange(&mut f, now);
    assert!(f.status("a").unwrap().is_ready());
    f.handle_input(now, a, Input::Eof);
    assert!(matches!(
        f.status("a"),
        Some(ServerStatus::BackingOff {
            reason: DisconnectReason::Eof,
            ..
        })
    ));
    // Failures in a row open the breaker (threshold 3 in this config).
    let mut t = now;
    let mut statuses = Vec::new();
    for _ in 0..200 {
        t += Duration::from_millis(50);
        f.handle_timeout(t);
        let mut log = Vec::new();
        drain(&mut f, t, false, &mut log);
        statuses.extend(log.into_iter().filter_map(|o| match o {
            FleetOutput::Status { status, .. } => Some(status.label()),
            _ => None,
        }));
        if matches!(f.status("a"), Some(ServerStatus::BreakerOpen { .. })) {
            break;
        }
    }
    assert!(
        matches!(f.status("a"), Some(ServerStatus::BreakerOpen { .. })),
        "{statuses:?}"
    );
    let r = f.send(t, Route::Any(Policy::RoundRobin), Action::new("Ping"));
    assert!(matches!(r, Err(RouteError::NoServer { ready: 0, .. })));
    let v = f.status_version();
    assert!(v >= 6, "every change counted: {v}");
}

#[test]
fn names_must_be_unique_valid_and_within_the_cap() {
    let now = Instant::now();
    let mut config = FleetConfig::default();
    config.budget.connects_per_step = 4;
    config.max_servers = 2;
    let mut f = Fleet::new(config);
    f.add(now, "a", client_config()).unwrap();
    assert!(matches!(
        f.add(now, "a", client_config()),
        Err(FleetError::DuplicateName(_))
    ));
    assert!(matches!(
        f.add(now, "x\ny", client_config()),
        Err(FleetError::InvalidName(InvalidName::Control))
    ));
    f.add(now, "b", client_config()).unwrap();
    assert_eq!(
        f.add(now, "c", client_config()),
        Err(FleetError::Full { cap: 2 })
    );
}

#[test]
fn unseeded_servers_get_distinct_action_id_prefixes() {
    let now = Instant::now();
    let mut f = fleet(16);
    for k in 0..50 {
        f.add(now, &format!("s{k}"), client_config()).unwrap();
    }
    let mut prefixes: Vec<String> = (0..50)
        .map(|k| {
            f.client(&format!("s{k}"))
                .unwrap()
                .action_id_prefix()
                .to_string()
        })
        .collect();
    prefixes.sort();
    prefixes.dedup();
    assert_eq!(prefixes.len(), 50);
}

#[test]
fn a_seeded_server_removed_and_added_again_under_its_name_never_reuses_action_ids() {
    // The removed session's actions may still be answered (an Originate still ringing: its
    // OriginateResponse is broadcast to every session reading call events), and an async
    // adapter keys its waiting callers by server name and ActionID: the new session must
    // not start the same IDs again, however often the name comes back.
    let now = Instant::now();
    let seeded = ClientConfig::builder("admin", "amp111")
        .seed(7)
        .build()
        .unwrap();
    let prefixes = || {
        let mut f = fleet(16);
        (0..20)
            .map(|_| {
                f.add(now, "pbx", seeded.clone()).unwrap();
                let prefix = f.client("pbx").unwrap().action_id_prefix().to_string();
                assert!(f.remove(now, "pbx"));
                prefix
            })
            .collect::<Vec<_>>()
    };
    let first = prefixes();
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), first.len(), "{first:?}");
    // Still reproducible: the same seeds and the same steps give the same IDs.
    assert_eq!(prefixes(), first);
}

#[test]
fn the_status_version_moves_once_for_every_status_output_added_servers_included() {
    // A watcher polling the version must see a server added, not only its later changes.
    let now = Instant::now();
    let mut f = fleet(16);
    assert_eq!(f.status_version(), 0);
    for k in 0..3 {
        f.add(now, &format!("s{k}"), client_config()).unwrap();
    }
    let log = all_ready(&mut f, now);
    let statuses = log
        .iter()
        .filter(|o| matches!(o, FleetOutput::Status { .. }))
        .count() as u64;
    assert!(statuses >= 6, "{log:?}");
    assert_eq!(f.status_version(), statuses);
    assert_eq!(f.stats().status_changes, statuses);
}

/// A fleet of ten servers, all ready.
fn ten_ready(now: Instant) -> (Fleet, Vec<ServerId>) {
    let mut f = fleet(16);
    let ids: Vec<ServerId> = (0..10)
        .map(|k| f.add(now, &format!("s{k}"), client_config()).unwrap())
        .collect();
    all_ready(&mut f, now);
    (f, ids)
}

#[test]
fn the_timer_heap_stays_small_when_deadlines_keep_moving() {
    let mut now = Instant::now();
    let (mut f, ids) = ten_ready(now);
    // Every received byte re-arms the heartbeat: a new deadline each time.
    for round in 0..2000 {
        now += Duration::from_millis(1);
        for id in &ids {
            f.handle_input(now, *id, Input::Received(&event("Tick", round)));
        }
        f.handle_timeout(now);
        while f.poll_event().is_some() {}
    }
    let entries = f.stats().timer_entries;
    assert!(entries <= 3 * ids.len() + 64, "{entries} timer entries");
}

#[test]
fn the_timer_heap_stays_small_when_deadlines_move_between_timer_firings() {
    // The async drivers step the fleet's timers only when their timer fires: every byte
    // received re-arms a server's heartbeat in between, and the stale entries must not pile
    // up until the next firing (a soak saw 27 per server with 16 servers).
    let mut now = Instant::now();
    let (mut f, ids) = ten_ready(now);
    for round in 0..2000 {
        now += Duration::from_millis(1);
        for id in &ids {
            f.handle_input(now, *id, Input::Received(&event("Tick", round)));
        }
        while f.poll_event().is_some() {}
    }
    let entries = f.stats().timer_entries;
    assert!(entries <= 2 * ids.len() + 64, "{entries} timer entries");
}

#[test]
fn poll_writable_names_each_server_with_bytes_once_until_it_has_new_bytes() {
    let now = Instant::now();
    let mut f = fleet(8);
    for k in 0..5 {
        f.add(now, &format!("pbx{k}"), client_config()).unwrap();
    }
    all_ready(&mut f, now);
    while f.poll_writable().is_some() {}
    assert_eq!(
        f.poll_writable(),
        None,
        "nothing to write once all are ready"
    );
    f.send(now, Route::Server("pbx3"), Action::new("Ping"))
        .unwrap();
    f.send(now, Route::Server("pbx3"), Action::new("Ping"))
        .unwrap();
    f.send(now, Route::Server("pbx1"), Action::new("Ping"))
        .unwrap();
    let id3 = f.id("pbx3").unwrap();
    let id1 = f.id("pbx1").unwrap();
    assert_eq!(f.poll_writable(), Some(id3), "listed once for two actions");
    assert_eq!(f.poll_writable(), Some(id1));
    assert_eq!(f.poll_writable(), None);
    assert!(!f.transmit(id3).is_empty(), "the bytes stay until written");
    f.send(now, Route::Server("pbx3"), Action::new("Ping"))
        .unwrap();
    assert_eq!(f.poll_writable(), Some(id3), "new bytes list it again");
    f.remove(now, "pbx1");
    f.send(now, Route::Server("pbx0"), Action::new("Ping"))
        .unwrap();
    assert_eq!(f.poll_writable(), Some(f.id("pbx0").unwrap()));
}

#[test]
fn a_server_whose_bytes_are_all_lent_is_not_listed_writable_until_it_has_unlent_ones() {
    let now = Instant::now();
    let mut f = fleet(8);
    f.add(now, "pbx0", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_writable().is_some() {}
    let id = f.id("pbx0").unwrap();
    f.send(now, Route::Server("pbx0"), Action::new("Ping"))
        .unwrap();
    let lent = f.lend_transmit(id).len();
    assert!(lent > 0);
    assert_eq!(f.poll_writable(), None, "everything is with the adapter");
    // A turn that gives the unwritten copy back and lends it again (to withdraw what came
    // due) has nothing new for the writer: listing it would wake a stalled writer forever.
    f.advance_transmit(id, 10);
    f.unlend_transmit(id);
    f.handle_server_timeout(now, id);
    assert_eq!(f.lend_transmit(id).len(), lent - 10);
    assert_eq!(f.poll_writable(), None, "given back and lent again");
    // Given back and kept back: the bytes are the core's again, and the writer must come.
    f.unlend_transmit(id);
    assert_eq!(f.poll_writable(), Some(id));
    // New bytes behind a lent copy list it too.
    f.lend_transmit(id);
    f.send(now, Route::Server("pbx0"), Action::new("Ping"))
        .unwrap();
    assert_eq!(f.poll_writable(), Some(id), "a new action behind the copy");
}

#[test]
fn an_action_a_stalled_server_never_took_is_withdrawn_at_its_deadline() {
    // Each server's transmit is its own client's: the fleet inherits withdrawal. pbx0 stops
    // reading with its socket full; its Originate must not go out when it resumes.
    let t0 = Instant::now();
    let mut f = fleet(8);
    for k in 0..2 {
        f.add(t0, &format!("pbx{k}"), client_config()).unwrap();
    }
    all_ready(&mut f, t0);
    let stalled = f.id("pbx0").unwrap();
    let originate = Action::new("Originate")
        .field("Channel", "Local/100@ami-test")
        .field("Application", "Wait")
        .field("Async", "true");
    let timeout = ami_proto::SendOptions::timeout(Duration::from_secs(1));
    let call = f
        .send_with(t0, Route::Server("pbx0"), originate, timeout)
        .unwrap();
    let ping = f
        .send(t0, Route::Server("pbx0"), Action::new("Ping"))
        .unwrap();
    assert!(!f.transmit(stalled).is_empty());
    let later = t0 + Duration::from_secs(2);
    f.handle_timeout(later);
    let mut log = Vec::new();
    drain(&mut f, later, true, &mut log);
    let outcomes: Vec<_> = log
        .iter()
        .filter_map(|o| match o {
            FleetOutput::Completed { id, outcome, .. } => Some((id.clone(), outcome.clone())),
            _ => None,
        })
        .collect();
    let timed_out = Err(ActionError::TimedOut {
        phase: ami_proto::Phase::Queued,
        partial: None,
    });
    assert_eq!(outcomes, [(call.id.clone(), timed_out)]);
    assert_eq!(f.actions_withdrawn(stalled), 1);
    assert_eq!(f.stats().total.actions_withdrawn, 1);
    let wire = String::from_utf8(f.transmit(stalled).to_vec()).unwrap();
    assert!(!wire.contains("Originate"), "{wire}");
    assert!(
        wire.contains(ping.id.as_str()),
        "the Ping behind it stays: {wire}"
    );
    assert_eq!(f.actions_withdrawn(f.id("pbx1").unwrap()), 0);
}

#[test]
fn a_server_s_lent_bytes_stay_and_its_own_due_deadlines_fire_without_the_others() {
    // An adapter writing pbx0 from a copy lends it; right before lending more it fires
    // pbx0's due deadlines alone (`handle_server_timeout`): the unlent action is withdrawn,
    // the lent one stays on its way, and pbx1's deadline waits for the fleet's own step.
    let t0 = Instant::now();
    let mut f = fleet(8);
    for k in 0..2 {
        f.add(t0, &format!("pbx{k}"), client_config()).unwrap();
    }
    all_ready(&mut f, t0);
    let (pbx0, pbx1) = (f.id("pbx0").unwrap(), f.id("pbx1").unwrap());
    let timeout = ami_proto::SendOptions::timeout(Duration::from_secs(1));
    let ping = |f: &mut Fleet, server| {
        f.send_with(t0, Route::Server(server), Action::new("Ping"), timeout)
            .unwrap()
            .id
    };
    let lent = ping(&mut f, "pbx0");
    let copy = f.lend_transmit(pbx0).to_vec();
    assert!(String::from_utf8_lossy(&copy).contains(lent.as_str()));
    let unlent = ping(&mut f, "pbx0");
    let other = ping(&mut f, "pbx1");
    let later = t0 + Duration::from_secs(2);
    f.handle_server_timeout(later, pbx0);
    let mut log = Vec::new();
    drain(&mut f, later, true, &mut log);
    let outcomes: Vec<_> = log
        .iter()
        .filter_map(|o| match o {
            FleetOutput::Completed { id, outcome, .. } => Some((id.clone(), outcome.clone())),
            _ => None,
        })
        .collect();
    let timed_out = |phase| {
        Err(ActionError::TimedOut {
            phase,
            partial: None,
        })
    };
    assert_eq!(
        outcomes,
        [
            (lent.clone(), timed_out(ami_proto::Phase::Response)),
            (unlent.clone(), timed_out(ami_proto::Phase::Queued)),
        ],
        "pbx1's {other} is not pbx0's business"
    );
    assert_eq!(f.transmit(pbx0), copy, "the lent copy stays true");
    assert!(f.lend_transmit(pbx0).is_empty(), "nothing new to lend");
    // The adapter drops its copy unwritten: the timed-out action goes with it.
    f.unlend_transmit(pbx0);
    assert!(f.transmit(pbx0).is_empty());
    assert_eq!(f.actions_withdrawn(pbx0), 2);
    assert!(!f.transmit(pbx1).is_empty(), "pbx1 untouched");
    assert_eq!(f.actions_withdrawn(pbx1), 0);
}

#[test]
fn a_closed_merged_stream_keeps_nothing_for_any_server_added_before_or_after() {
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    all_ready(&mut f, now);
    for seq in 0..10 {
        f.handle_input(now, a, Input::Received(&event("Before", seq)));
    }
    // The reader had taken three items (the session's Ready, then events) and is gone: they
    // come back with the call.
    let taken: Vec<_> = (0..3).filter_map(|_| f.poll_queued()).collect();
    assert_eq!(taken.len(), 3);
    f.close_event_stream(taken);
    assert!(!f.has_events(), "the queued events are freed");
    assert_eq!(
        f.stats().total.events_dropped,
        10,
        "and counted, the taken ones too"
    );
    // A server added later keeps nothing either, and a removed one leaves no gap behind.
    let b = f.add(now, "b", client_config()).unwrap();
    all_ready(&mut f, now);
    for seq in 0..40 {
        f.handle_input(now, a, Input::Received(&event("After", seq)));
        f.handle_input(now, b, Input::Received(&event("After", seq)));
    }
    assert!(f.remove(now, "a"));
    drain(&mut f, now, true, &mut Vec::new());
    assert!(f.poll_event().is_none());
    let stats = f.stats();
    assert_eq!(stats.total.event_queue_bytes, 0);
    let b_stats = stats
        .servers
        .iter()
        .find(|s| s.name.as_str() == "b")
        .unwrap();
    assert_eq!(
        b_stats.client.events_dropped, 40,
        "each event counted on its server"
    );
}

#[test]
fn gaps_of_removed_servers_wait_for_a_reader_within_a_cap() {
    // A program that adds and removes servers (auto-discovery) while its reader is stalled:
    // each removal with events queued leaves a gap notice naming the server for the reader.
    // Those notices are a queue like any other: capped, and what the cap keeps out counted.
    let now = Instant::now();
    let mut f = fleet(16);
    for k in 0..3000 {
        let name = format!("pbx{k}");
        let id = f.add(now, &name, client_config()).unwrap();
        all_ready(&mut f, now);
        f.handle_input(now, id, Input::Received(&event("Flood", k)));
        assert!(f.remove(now, &name));
        while !matches!(f.poll_output(), FleetOutput::Wait(_)) {}
    }
    let waiting = f.servers_with_events();
    assert!(
        waiting <= 1024,
        "{waiting} gap notices of removed servers wait for the reader"
    );
    let stats = f.stats();
    assert_eq!(stats.events_lost_on_removal, 3000);
    assert_eq!(stats.removal_gaps_dropped as usize, 3000 - waiting);
    // The reader, back, finds the notices that were kept, oldest first.
    let first = f.poll_event().unwrap();
    assert_eq!(first.server.as_str(), "pbx0");
    assert_eq!(first.item, StreamItem::Gap { dropped: 1 });
}

#[test]
fn an_unclaimed_originate_response_of_a_removed_server_never_reaches_the_server_added_again_under_its_name(
) {
    // The async adapter hands an outcome its caller never took back by server name: the
    // name may meanwhile belong to a new client, whose first session is Ready as the removed
    // one's was. The removed session's OriginateResponse is not the new session's event.
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    all_ready(&mut f, now);
    let originate = Action::new("Originate")
        .field("Channel", "Local/100@ami-test")
        .field("Application", "Wait")
        .field("Data", "1")
        .field("Async", "true");
    let sent = f.send(now, Route::Server("a"), originate).unwrap();
    let wire = f.transmit(a).to_vec();
    f.advance_transmit(a, wire.len());
    let id = sent.id.as_str();
    let answer = format!(
        "Response: Success\r\nActionID: {id}\r\nMessage: Originate successfully queued\r\n\r\n\
         Event: OriginateResponse\r\nActionID: {id}\r\nResponse: Success\r\nReason: 4\r\n\r\n"
    );
    f.handle_input(now, a, Input::Received(answer.as_bytes()));
    let mut log = Vec::new();
    drain(&mut f, now, true, &mut log);
    let outcome = log
        .iter()
        .find_map(|o| match o {
            FleetOutput::Completed { id, outcome, .. } if *id == sent.id => Some(outcome.clone()),
            _ => None,
        })
        .expect("the Originate completed");
    assert!(outcome.as_ref().is_ok_and(|r| r.follow_up().is_some()));
    assert!(f.remove(now, "a"));
    f.add(now, "a", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    f.unclaimed(now, "a", &sent.id, Some(3), outcome);
    let mut items = Vec::new();
    while let Some(item) = f.poll_event() {
        items.push(item.item);
    }
    assert!(
        !items
            .iter()
            .any(|i| matches!(i, StreamItem::Event(_) | StreamItem::LateAnswer { .. })),
        "the removed server's answer or OriginateResponse in the new session's stream: {items:?}"
    );
}

#[test]
fn removal_hands_the_reader_the_stream_marks_its_server_had_queued() {
    // A mark is never dropped: a reader pairing a marked action's outcome with the stream
    // (a call tracker) waits for it. The removal queued neither it nor any count of it.
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    let options = || ami_proto::SendOptions::default();
    f.send_with(
        now,
        Route::Server("a"),
        Action::new("Ping"),
        options().with_mark(7),
    )
    .unwrap();
    exchange(&mut f, now);
    // Sent, not answered: the removal's close completes it (and queues its mark).
    f.send_with(
        now,
        Route::Server("a"),
        Action::new("Ping"),
        options().with_mark(8),
    )
    .unwrap();
    let wire = f.transmit(a).to_vec();
    f.advance_transmit(a, wire.len());
    f.handle_input(now, a, Input::Received(&event("Left", 0)));
    assert!(f.remove(now, "a"));
    let mut items = Vec::new();
    while let Some(item) = f.poll_event() {
        assert_eq!(item.server.as_str(), "a");
        items.push(item.item);
    }
    assert_eq!(
        items,
        [
            StreamItem::Gap { dropped: 1 },
            StreamItem::Mark { mark: 7 },
            StreamItem::Mark { mark: 8 },
        ]
    );
    assert_eq!(f.stats().removal_gaps_dropped, 0);
}

/// A reader merging several fleets sizes its batch from `servers_with_events`: it counts the
/// servers whose items wait, not only removed servers' leftovers.
#[test]
fn the_merged_stream_counts_the_servers_with_items_waiting() {
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    let b = f.add(now, "b", client_config()).unwrap();
    f.add(now, "c", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    assert!(!f.has_events());
    assert_eq!(f.servers_with_events(), 0);
    f.handle_input(now, a, Input::Received(&event("One", 0)));
    f.handle_input(now, b, Input::Received(&event("Two", 0)));
    f.handle_input(now, b, Input::Received(&event("Two", 1)));
    assert!(f.has_events());
    assert_eq!(f.servers_with_events(), 2, "a and b, once each");
    let items: Vec<_> = std::iter::from_fn(|| f.poll_event()).collect();
    assert_eq!(items.len(), 3);
    assert!(!f.has_events());
    assert_eq!(f.servers_with_events(), 0);
}

#[test]
fn a_name_that_left_nothing_behind_is_not_held_as_removed() {
    let now = Instant::now();
    let mut f = fleet(16);
    f.add(now, "a", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    assert!(!f.holds_removed("a"), "a is in the fleet");
    assert!(!f.holds_removed("never"));
    // Removed with nothing queued: no gap is left for the reader.
    assert!(f.remove(now, "a"));
    assert!(!f.holds_removed("a"));
}

/// Events the reader had taken out of the stream and hands back when it closes the stream
/// are counted: on their server while it is in the fleet, as lost on removal once it is not.
#[test]
fn events_handed_back_on_close_of_a_removed_server_count_as_lost_on_removal() {
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    let b = f.add(now, "b", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    for seq in 0..3 {
        f.handle_input(now, a, Input::Received(&event("Taken", seq)));
    }
    f.handle_input(now, b, Input::Received(&event("Taken", 0)));
    let taken: Vec<_> = std::iter::from_fn(|| f.poll_queued()).collect();
    assert_eq!(taken.len(), 4);
    assert!(f.remove(now, "a"));
    drain(&mut f, now, true, &mut Vec::new());
    let lost_before = f.stats().events_lost_on_removal;
    f.close_event_stream(taken);
    let stats = f.stats();
    assert_eq!(stats.events_lost_on_removal, lost_before + 3);
    let b_stats = stats
        .servers
        .iter()
        .find(|s| s.name.as_str() == "b")
        .unwrap();
    assert_eq!(
        b_stats.client.events_dropped, 1,
        "b's taken event counted on b"
    );
}

/// A removed server's entry leaves the writable queue, and only its own: the others' writers
/// must still be woken for the bytes they were listed for.
#[test]
fn removing_a_server_keeps_the_other_servers_listed_writable() {
    let now = Instant::now();
    let mut f = fleet(8);
    for k in 0..3 {
        f.add(now, &format!("pbx{k}"), client_config()).unwrap();
    }
    all_ready(&mut f, now);
    while f.poll_writable().is_some() {}
    for name in ["pbx0", "pbx1", "pbx2"] {
        f.send(now, Route::Server(name), Action::new("Ping"))
            .unwrap();
    }
    let (id0, id2) = (f.id("pbx0").unwrap(), f.id("pbx2").unwrap());
    assert!(f.remove(now, "pbx1"));
    let listed: Vec<ServerId> = std::iter::from_fn(|| f.poll_writable()).collect();
    assert_eq!(listed, [id0, id2]);
}

#[test]
fn removals_are_counted_once_each() {
    let now = Instant::now();
    let mut f = fleet(16);
    f.add(now, "a", client_config()).unwrap();
    f.add(now, "b", client_config()).unwrap();
    assert!(f.remove(now, "a"));
    assert!(!f.remove(now, "a"), "already gone");
    let stats = f.stats();
    assert_eq!((stats.added, stats.removed), (2, 1));
}

/// Only a transport that opens moves a connecting server to logging in: bytes arriving on a
/// ready session leave its status alone, and say nothing on the status watch.
#[test]
fn input_on_a_ready_session_does_not_change_its_status() {
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    all_ready(&mut f, now);
    f.handle_input(now, a, Input::Received(&event("Quiet", 0)));
    f.handle_input(now, a, Input::Connected);
    let mut log = Vec::new();
    drain(&mut f, now, true, &mut log);
    assert!(
        !log.iter().any(|o| matches!(o, FleetOutput::Status { .. })),
        "{log:?}"
    );
    assert!(f.status("a").unwrap().is_ready());
}

/// A step counts as one with deferred connects when it started connects and left some
/// waiting for the next; steps that started none (the adapter has not drained yet) do not.
#[test]
fn only_steps_that_left_connects_waiting_count_as_deferring_them() {
    let now = Instant::now();
    let mut f = fleet(2);
    for name in ["a", "b", "c"] {
        f.add(now, name, client_config()).unwrap();
    }
    f.handle_timeout(now);
    f.handle_timeout(now);
    assert_eq!(f.stats().steps_with_deferred_connects, 0);
    assert_eq!(drain(&mut f, now, false, &mut Vec::new()), 2);
    f.handle_timeout(now);
    assert_eq!(f.stats().steps_with_deferred_connects, 1, "two of three");
    assert_eq!(drain(&mut f, now, false, &mut Vec::new()), 1);
    f.handle_timeout(now);
    let stats = f.stats();
    assert_eq!(
        stats.steps_with_deferred_connects, 1,
        "the last one left none"
    );
    assert_eq!(stats.most_connects_in_a_step, 2);
}

/// The cap on removed servers' leftovers holds for marks too: a mark that does not fit is
/// counted (and logged), each one once.
#[test]
fn marks_of_a_removed_server_past_the_cap_are_counted_as_dropped() {
    let now = Instant::now();
    let mut f = fleet(16);
    for k in 0..MAX_REMOVAL_GAPS {
        let name = format!("pbx{k}");
        let id = f.add(now, &name, client_config()).unwrap();
        all_ready(&mut f, now);
        f.handle_input(now, id, Input::Received(&event("Flood", k)));
        assert!(f.remove(now, &name));
        while !matches!(f.poll_output(), FleetOutput::Wait(_)) {}
    }
    assert_eq!(f.stats().removal_gaps_dropped, 0, "the cap is just full");
    f.add(now, "marked", client_config()).unwrap();
    all_ready(&mut f, now);
    for mark in [7, 8] {
        f.send_with(
            now,
            Route::Server("marked"),
            Action::new("Ping"),
            ami_proto::SendOptions::default().with_mark(mark),
        )
        .unwrap();
    }
    exchange(&mut f, now);
    assert!(f.remove(now, "marked"));
    assert_eq!(f.stats().removal_gaps_dropped, 2);
    assert!(!f.holds_removed("marked"));
}

/// Drains outputs, checking before each that `has_output` said whether one other than
/// `Wait` would come; returns how many connects came out.
fn drain_checking_has_output(f: &mut Fleet) -> usize {
    let mut connects = 0;
    for _ in 0..100 {
        let said = f.has_output();
        match f.poll_output() {
            FleetOutput::Wait(_) => {
                assert!(!said, "has_output was true before a Wait");
                return connects;
            }
            FleetOutput::Connect(_) => {
                assert!(said, "has_output was false before a Connect");
                connects += 1;
            }
            other => assert!(said, "has_output was false before {other:?}"),
        }
    }
    panic!("no Wait after 100 outputs");
}

/// An adapter that blocks asks `has_output` first: true exactly when `poll_output` has
/// something before its `Wait` (news, or a connect the step's budget lets out).
#[test]
fn has_output_is_true_exactly_when_poll_output_has_something_before_its_wait() {
    let now = Instant::now();
    let mut f = fleet(1);
    assert!(!f.has_output());
    f.add(now, "a", client_config()).unwrap();
    f.add(now, "b", client_config()).unwrap();
    assert_eq!(
        drain_checking_has_output(&mut f),
        1,
        "b waits for the next step"
    );
    f.handle_timeout(now);
    assert_eq!(drain_checking_has_output(&mut f), 1);
    f.handle_timeout(now);
    assert_eq!(drain_checking_has_output(&mut f), 0);
    assert!(f.remove(now, "a"));
    assert!(f.has_output(), "news of the removal");
    assert_eq!(drain_checking_has_output(&mut f), 0);
}

#[test]
fn an_opened_transport_is_news_on_the_status_watch_as_logging_in() {
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    loop {
        match f.poll_output() {
            FleetOutput::Connect(id) => {
                assert_eq!(id, a);
                break;
            }
            FleetOutput::Wait(_) => panic!("no connect came out"),
            _ => {}
        }
    }
    let before = f.stats().status_changes;
    f.handle_input(now, a, Input::Connected);
    let first = f.poll_output();
    assert!(
        matches!(
            &first,
            FleetOutput::Status { server, status: ServerStatus::LoggingIn } if server.as_str() == "a"
        ),
        "{first:?}"
    );
    assert_eq!(f.stats().status_changes, before + 1);
}

/// A server's ID names it only while it is in the fleet: a server added again in its slot
/// has a new ID, and the old one names nothing (ActionIDs and outputs never cross).
#[test]
fn an_id_of_a_removed_server_names_nothing_once_its_slot_is_taken_again() {
    let now = Instant::now();
    let mut f = fleet(16);
    assert!(f.is_empty());
    let old = f.add(now, "a", client_config()).unwrap();
    assert!(!f.is_empty());
    assert_eq!(f.name(old).map(|n| n.as_str()), Some("a"));
    assert!(f.remove(now, "a"));
    assert!(f.is_empty());
    let new = f.add(now, "b", client_config()).unwrap();
    assert_ne!(old, new);
    assert_eq!(f.name(old), None);
    assert_eq!(f.name(new).map(|n| n.as_str()), Some("b"));
}

#[test]
fn the_config_in_force_has_its_budgets_clamped_to_at_least_one() {
    let mut config = FleetConfig::default();
    config.budget.connects_per_step = 0;
    config.max_servers = 0;
    config.seed = 9;
    let f = Fleet::new(config);
    assert_eq!(f.config().budget.connects_per_step, 1);
    assert_eq!(f.config().max_servers, 1);
    assert_eq!(f.config().seed, 9);
}

/// `cancel` and `with_client` reach the named server's own client, and say when there is
/// no such server or no such action.
#[test]
fn cancel_and_with_client_reach_the_named_servers_own_client() {
    let now = Instant::now();
    let mut f = fleet(16);
    f.add(now, "a", client_config()).unwrap();
    all_ready(&mut f, now);
    let sent = f
        .send(now, Route::Server("a"), Action::new("Ping"))
        .unwrap();
    assert_eq!(f.with_client(now, "a", |c, _| c.pending_actions()), Some(1));
    assert_eq!(
        f.with_client(now, "nobody", |c, _| c.pending_actions()),
        None
    );
    assert!(!f.cancel(now, "nobody", &sent.id));
    assert!(f.cancel(now, "a", &sent.id));
    assert!(!f.cancel(now, "a", &sent.id), "cancelled already");
}

#[test]
fn close_all_completes_every_pending_action_and_logoff_all_logs_every_server_off() {
    let now = Instant::now();
    let mut f = fleet(16);
    let a = f.add(now, "a", client_config()).unwrap();
    let b = f.add(now, "b", client_config()).unwrap();
    all_ready(&mut f, now);
    f.logoff_all(now);
    for id in [a, b] {
        let wire = String::from_utf8_lossy(f.transmit(id)).into_owned();
        assert!(wire.contains("Action: Logoff"), "{wire:?}");
    }
    let mut g = fleet(16);
    g.add(now, "a", client_config()).unwrap();
    g.add(now, "b", client_config()).unwrap();
    all_ready(&mut g, now);
    for name in ["a", "b"] {
        g.send(now, Route::Server(name), Action::new("Ping"))
            .unwrap();
    }
    g.close_all(now);
    let mut log = Vec::new();
    drain(&mut g, now, true, &mut log);
    let completed = log
        .iter()
        .filter(|o| matches!(o, FleetOutput::Completed { .. }))
        .count();
    assert_eq!(completed, 2, "{log:?}");
}

/// The servers an action routed by `policy` lands on, `n` times, each answered before the
/// next so every server is idle again.
fn picks(f: &mut Fleet, now: Instant, policy: Policy, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let routed = f
                .send(now, Route::Any(policy), Action::new("Ping"))
                .unwrap();
            exchange(f, now);
            routed.server.to_string()
        })
        .collect()
}

#[test]
fn accepted_sends_are_counted_per_server_and_in_total_and_refusals_as_no_server() {
    let now = Instant::now();
    let mut f = fleet(16);
    f.add(now, "a", client_config()).unwrap();
    f.add(now, "b", client_config()).unwrap();
    let none = f.send(now, Route::Any(Policy::RoundRobin), Action::new("Ping"));
    assert!(matches!(none, Err(RouteError::NoServer { .. })), "{none:?}");
    let unknown = f.send(now, Route::Server("nope"), Action::new("Ping"));
    assert!(matches!(unknown, Err(RouteError::UnknownServer(_))));
    all_ready(&mut f, now);
    f.send(now, Route::Server("a"), Action::new("Ping"))
        .unwrap();
    f.send(now, Route::Server("a"), Action::new("Ping"))
        .unwrap();
    f.send(now, Route::Any(Policy::RoundRobin), Action::new("Ping"))
        .unwrap();
    let refused = f.send(now, Route::Server("b"), Action::new("Login"));
    assert!(
        matches!(refused, Err(RouteError::Send { .. })),
        "{refused:?}"
    );
    let stats = f.stats();
    assert_eq!((stats.routed, stats.no_server), (3, 1));
    let per_server: Vec<(&str, u64)> = stats
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.routed))
        .collect();
    assert_eq!(per_server, [("a", 3), ("b", 0)]);
}

#[test]
fn send_all_sends_one_copy_to_every_server_in_slot_order_and_counts_each() {
    let now = Instant::now();
    let mut f = fleet(16);
    for name in ["a", "b", "c"] {
        f.add(now, name, client_config()).unwrap();
    }
    all_ready(&mut f, now);
    let results = f.send_all(now, &Action::new("Ping"), SendOptions::default());
    let servers: Vec<String> = results
        .iter()
        .map(|r| r.as_ref().unwrap().server.to_string())
        .collect();
    assert_eq!(servers, ["a", "b", "c"]);
    let stats = f.stats();
    assert_eq!(stats.routed, 3);
    assert!(stats.servers.iter().all(|s| s.routed == 1));
    assert_eq!(stats.total.pending, 3);
    let refused = f.send_all(now, &Action::new("Login"), SendOptions::default());
    assert_eq!(refused.len(), 3);
    assert!(refused
        .iter()
        .all(|r| matches!(r, Err(RouteError::Send { .. }))));
    assert_eq!(f.stats().routed, 3, "refused copies are not counted");
}

#[test]
fn least_in_flight_is_the_fewest_pending_on_a_ready_server_and_none_without_one() {
    let now = Instant::now();
    let mut f = fleet(16);
    for name in ["a", "b", "c"] {
        f.add(now, name, client_config()).unwrap();
    }
    assert_eq!(f.least_in_flight(), None, "no server is ready");
    all_ready(&mut f, now);
    for (name, n) in [("a", 3), ("b", 2), ("c", 4)] {
        for _ in 0..n {
            f.send(now, Route::Server(name), Action::new("Ping"))
                .unwrap();
        }
    }
    // A server that is not ready has nothing pending, yet takes no routed work.
    f.add(now, "d", client_config()).unwrap();
    assert_eq!(f.least_in_flight(), Some(2));
}

#[test]
fn fewest_in_flight_breaks_ties_in_round_robin_order() {
    let now = Instant::now();
    let mut f = fleet(16);
    for name in ["a", "b", "c"] {
        f.add(now, name, client_config()).unwrap();
    }
    all_ready(&mut f, now);
    assert_eq!(picks(&mut f, now, Policy::RoundRobin, 1), ["a"]);
    assert_eq!(f.least_in_flight(), Some(0), "answered: all idle again");
    assert_eq!(
        picks(&mut f, now, Policy::FewestInFlight, 4),
        ["b", "c", "a", "b"]
    );
}

#[test]
fn no_server_counts_the_ready_servers_whose_queues_were_full() {
    let now = Instant::now();
    let mut f = fleet(16);
    let one_pending = || {
        client_config_builder()
            .pipeline_depth(1)
            .max_queued_actions(1)
            .max_pending_actions(1)
            .build()
            .unwrap()
    };
    f.add(now, "a", one_pending()).unwrap();
    f.add(now, "b", one_pending()).unwrap();
    all_ready(&mut f, now);
    f.add(now, "c", one_pending()).unwrap();
    f.send(now, Route::Server("a"), Action::new("Ping"))
        .unwrap();
    let routed = f.send(now, Route::Any(Policy::RoundRobin), Action::new("Ping"));
    assert_eq!(
        routed.unwrap().server.as_str(),
        "b",
        "a full server is skipped"
    );
    for policy in [Policy::RoundRobin, Policy::FewestInFlight] {
        assert_eq!(
            f.send(now, Route::Any(policy), Action::new("Ping")),
            Err(RouteError::NoServer {
                servers: 3,
                ready: 2,
                full: 2
            })
        );
    }
    assert_eq!(f.stats().total.pending, 2, "nothing more was queued");
    assert_eq!(f.stats().no_server, 2);
}

#[test]
fn servers_logging_off_take_no_routed_work_before_their_status_changes() {
    let now = Instant::now();
    let mut f = fleet(16);
    f.add(now, "a", client_config()).unwrap();
    f.add(now, "b", client_config()).unwrap();
    all_ready(&mut f, now);
    f.logoff_all(now);
    // The status changes when the session ends, after the Goodbye; the clients stopped
    // taking actions already.
    assert!(f.status("a").unwrap().is_ready());
    assert_eq!(f.least_in_flight(), None);
    assert_eq!(
        f.send(now, Route::Any(Policy::RoundRobin), Action::new("Ping")),
        Err(RouteError::NoServer {
            servers: 2,
            ready: 0,
            full: 0
        })
    );
}

#[test]
fn timer_entries_count_a_live_deadline_for_every_ready_server() {
    let now = Instant::now();
    let (f, ids) = ten_ready(now);
    let entries = f.stats().timer_entries;
    assert!(
        (ids.len()..=2 * ids.len() + 64).contains(&entries),
        "{entries} timer entries for {} ready servers with heartbeats",
        ids.len()
    );
}

#[test]
fn server_ids_index_their_slots_in_the_order_servers_were_added() {
    let now = Instant::now();
    let mut f = fleet(16);
    let indices: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|name| f.add(now, name, client_config()).unwrap().index())
        .collect();
    assert_eq!(indices, [0, 1, 2]);
}

#[test]
fn unseeded_servers_get_distinct_action_id_prefixes_whatever_the_fleet_seed() {
    // The fleet's seed is the adapter's entropy: any value, all bits set included, must
    // still give each server its own prefix.
    let now = Instant::now();
    for seed in [0, u64::MAX] {
        let mut config = FleetConfig::default();
        config.seed = seed;
        let mut f = Fleet::new(config);
        f.add(now, "east", client_config()).unwrap();
        f.add(now, "west", client_config()).unwrap();
        let prefix = |name: &str| f.client(name).unwrap().action_id_prefix().to_string();
        assert_ne!(prefix("east"), prefix("west"), "fleet seed {seed:#x}");
    }
}

/// Stale timer entries are dropped in bulk, once they outnumber the live ones past the
/// slack, not at every moved deadline: a pass over every slot per byte received would make
/// each input cost the fleet's size.
#[test]
fn the_timer_heap_keeps_stale_entries_until_they_pass_its_slack_then_drops_them_all() {
    let mut now = Instant::now();
    let mut f = fleet(16);
    let id = f.add(now, "pbx", client_config()).unwrap();
    all_ready(&mut f, now);
    let mut seen = vec![f.stats().timer_entries];
    for round in 0..80 {
        now += Duration::from_millis(1);
        f.handle_input(now, id, Input::Received(&event("Tick", round)));
        seen.push(f.stats().timer_entries);
    }
    // One live entry plus one stale per move, up to 2 * 1 + 64; the move past that leaves
    // the live one alone.
    let expected: Vec<usize> = (1..=66).chain(1..=15).collect();
    assert_eq!(seen, expected);
}

/// Every connect the fleet hands out is counted, on its server and in total, with the most
/// one step started.
#[test]
fn connects_started_are_counted_per_server_and_in_total_with_the_most_in_one_step() {
    let now = Instant::now();
    let mut f = fleet(2);
    for name in ["a", "b", "c"] {
        f.add(now, name, client_config()).unwrap();
    }
    f.handle_timeout(now);
    assert_eq!(drain(&mut f, now, false, &mut Vec::new()), 2);
    f.handle_timeout(now);
    assert_eq!(drain(&mut f, now, false, &mut Vec::new()), 1);
    f.handle_timeout(now);
    let stats = f.stats();
    let per_server: Vec<(&str, u64)> = stats
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.connects_started))
        .collect();
    assert_eq!(per_server, [("a", 1), ("b", 1), ("c", 1)]);
    assert_eq!(stats.connects_started, 3);
    assert_eq!(stats.most_connects_in_a_step, 2);
    assert_eq!(stats.steps_with_deferred_connects, 1);
}

/// `messages_in` (what a per-step message budget counts) is the named server's own count
/// of decoded messages: it grows by what that server sent, not by another's, and an unknown
/// server has none.
#[test]
fn messages_in_counts_each_servers_own_decoded_messages() {
    let now = Instant::now();
    let mut f = Fleet::new(FleetConfig::default());
    let a = f.add(now, "pbx-a", fleet_login::client_config()).unwrap();
    let b = f.add(now, "pbx-b", fleet_login::client_config()).unwrap();
    fleet_login::all_ready(&mut f, now);
    let (a0, b0) = (f.messages_in(a), f.messages_in(b));
    assert!(a0 >= 1, "the Login's answer was decoded: {a0}");
    let three = b"Event: A\r\n\r\nEvent: B\r\n\r\nEvent: C\r\n\r\n";
    f.handle_input(now, a, Input::Received(three));
    assert_eq!(f.messages_in(a), a0 + 3);
    assert_eq!(f.messages_in(b), b0);
    assert!(f.remove(now, "pbx-b"));
    assert_eq!(f.messages_in(b), 0, "a removed server counts nothing");
}
