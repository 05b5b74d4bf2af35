//! Law 5: ActionIDs never cross servers or connections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{Action, ActionError, ClientConfig, DisconnectReason};
use scripted::{async_originate, pong, Harness};
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn harness(seed: u64) -> Harness {
    let cfg = ClientConfig::builder("admin", "amp111")
        .events("call")
        .seed(seed)
        .ping_interval(Duration::from_secs(3600))
        .backoff_base(Duration::from_millis(10))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, Instant::now());
    h.ready();
    h
}

#[test]
fn an_answer_carrying_a_previous_connections_action_id_completes_nothing() {
    let mut h = harness(3);
    let old = h.send(Action::new("Ping"));
    h.take("Ping");
    let old_prefix = h.client.action_id_prefix().to_string();
    h.eof();
    assert_eq!(
        h.outcome(&old),
        &Err(ActionError::Unknown(DisconnectReason::Eof)),
        "written, then the connection died: outcome unknown, reported once"
    );
    h.advance(Duration::from_secs(1));
    h.ready();
    assert_ne!(
        h.client.action_id_prefix(),
        old_prefix,
        "a new connection, a new prefix"
    );
    let new = h.send(Action::new("Ping"));
    h.take("Ping");
    assert!(new.as_str().starts_with(h.client.action_id_prefix()));

    // The old connection's answer shows up on the new one (a broadcast, a confused proxy):
    let unmatched_before = h.client.stats().unmatched;
    h.feed(&pong(old.as_str()));
    assert_eq!(h.outcomes(&old).len(), 1, "still completed exactly once");
    assert!(
        h.outcomes(&new).is_empty(),
        "and it did not complete the new action"
    );
    assert_eq!(h.client.stats().unmatched, unmatched_before + 1, "counted");

    // An ID with the right counter but another prefix does not match either.
    let forged = new
        .as_str()
        .replace(h.client.action_id_prefix(), "zzzzzzzz");
    h.feed(&pong(&forged));
    assert!(h.outcomes(&new).is_empty());
    h.feed(&pong(new.as_str()));
    assert!(h.outcome(&new).is_ok());
}

#[test]
fn only_the_exact_action_id_completes_its_action() {
    let mut h = harness(11);
    let id = h.send(Action::new("Ping"));
    h.take("Ping");
    let (prefix, counter) = id.as_str().rsplit_once('-').unwrap();
    // The same counter written another way, a counter too long for a u64, no counter,
    // another case: none is this action's ID.
    for near in [
        format!("{prefix}-+{counter}"),
        format!("{prefix}-0{counter}"),
        format!("{prefix}-{counter}0000000000000000000000"),
        format!("{prefix}-"),
        format!("{}-{counter}", prefix.to_uppercase()),
        counter.to_string(),
    ] {
        let unmatched_before = h.client.stats().unmatched;
        h.feed(&pong(&near));
        assert!(h.outcomes(&id).is_empty(), "{near} completed {id}");
        assert_eq!(h.client.stats().unmatched, unmatched_before + 1, "{near}");
    }
    h.feed(&pong(id.as_str()));
    assert!(h.outcome(&id).is_ok());
}

#[test]
fn action_ids_are_never_reused_across_reconnects_or_clients() {
    let mut seen = HashSet::new();
    for seed in [1u64, 2] {
        // Two clients (two servers) with different seeds, each through three connections.
        let mut h = harness(seed);
        for _ in 0..3 {
            for _ in 0..5 {
                let id = h.send(Action::new("Ping"));
                assert!(seen.insert(id.to_string()), "{id} reused");
            }
            h.take_all();
            h.eof();
            h.advance(Duration::from_secs(1));
            h.ready();
        }
    }
    assert_eq!(seen.len(), 30);
}

#[test]
fn two_unseeded_clients_of_one_process_never_take_each_others_originate_response() {
    // Asterisk writes an OriginateResponse to every session reading call events: with one
    // ActionID prefix, B's pending Originate took A's call outcome as its own.
    let unseeded = || {
        let cfg = ClientConfig::builder("admin", "amp111")
            .events("call")
            .ping_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        let mut h = Harness::new(cfg, Instant::now());
        h.ready();
        h
    };
    let (mut a, mut b) = (unseeded(), unseeded());
    assert_ne!(a.client.action_id_prefix(), b.client.action_id_prefix());
    let ida = a.send(async_originate(30_000));
    let idb = b.send(async_originate(30_000));
    assert_ne!(ida, idb);
    for (h, id) in [(&mut a, &ida), (&mut b, &idb)] {
        h.take("Originate");
        h.feed(
            format!(
                "Response: Success\r\nActionID: {id}\r\nMessage: Originate successfully queued\r\n\r\n"
            )
            .as_bytes(),
        );
    }
    let failure = format!(
        "Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: {ida}\r\nResponse: Failure\r\n\
         Channel: Local/100@ami-test\r\nReason: 5\r\n\r\n"
    );
    // Both sessions read it; only A's Originate is answered by it.
    a.feed(failure.as_bytes());
    b.feed(failure.as_bytes());
    assert!(a.outcome(&ida).is_err(), "A's call failed");
    assert!(
        b.outcomes(&idb).is_empty(),
        "B's call is still being placed"
    );
}

#[test]
fn a_fleet_gives_each_server_its_own_prefixes_from_one_seeded_config() {
    use ami_proto::fleet::{Fleet, FleetConfig};
    let now = Instant::now();
    let cfg = ClientConfig::builder("admin", "amp111")
        .seed(7)
        .build()
        .unwrap();
    let mut f = Fleet::new(FleetConfig::default());
    f.add(now, "east", cfg.clone()).unwrap();
    f.add(now, "east-2", cfg).unwrap();
    let prefix = |name: &str| f.client(name).unwrap().action_id_prefix().to_string();
    assert_ne!(prefix("east"), prefix("east-2"));
    // Reproducible all the same: the same seed and name give the same prefix.
    let mut g = Fleet::new(FleetConfig::default());
    g.add(
        now,
        "east",
        ClientConfig::builder("admin", "amp111")
            .seed(7)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(g.client("east").unwrap().action_id_prefix(), prefix("east"));
}

#[test]
fn cancel_refuses_the_clients_own_action_ids_and_changes_nothing() {
    // The Login and the heartbeat's Ping belong to the client: a caller that names one (read
    // from a log, or guessed from the prefix) must not end it, or the session would wait for
    // an answer it then ignores and fall over at the login or pong timeout.
    let cfg = ClientConfig::builder("admin", "amp111")
        .events("call")
        .seed(5)
        .ping_interval(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, Instant::now());
    h.connected();
    h.feed(scripted::BANNER);
    let login = h.take("Login");
    let login_id = scripted::id_of(&login)
        .parse::<ami_proto::ActionId>()
        .unwrap();
    assert!(
        !h.client.cancel(h.now, &login_id),
        "the Login is not the caller's"
    );
    let out = h.feed(&scripted::login_ok(login_id.as_str()));
    assert!(
        matches!(out.last(), Some(scripted::Out::Ready(_))),
        "the login went on: {out:?}"
    );
    assert!(h.outcomes(&login_id).is_empty(), "and completed nothing");

    h.advance(Duration::from_secs(10));
    let ping = h.take("Ping");
    let ping_id = scripted::id_of(&ping)
        .parse::<ami_proto::ActionId>()
        .unwrap();
    assert!(
        !h.client.cancel(h.now, &ping_id),
        "the heartbeat is not the caller's"
    );
    h.feed(&pong(ping_id.as_str()));
    h.advance(Duration::from_secs(30));
    assert!(h.client.is_ready(), "the heartbeat's answer still counted");
    assert!(h.outcomes(&ping_id).is_empty());
    assert!(
        !h.log
            .iter()
            .any(|o| matches!(o, scripted::Out::Disconnected(..))),
        "{:?}",
        h.log
    );
}

#[test]
fn an_action_id_with_blanks_or_tabs_around_it_still_matches_its_action() {
    // Asterisk echoes an ActionID verbatim; a proxy may pad it or use a tab after the colon.
    let mut h = harness(9);
    for form in [
        "ActionID: {}  ",
        "ActionID:\t{}",
        "actionid: \t{}\t ",
        "ActionID:{}",
    ] {
        let id = h.send(Action::new("Ping"));
        h.take("Ping");
        let line = form.replace("{}", id.as_str());
        h.feed(format!("Response: Success\r\n{line}\r\nPing: Pong\r\n\r\n").as_bytes());
        assert!(h.outcome(&id).is_ok(), "{line:?}: {:?}", h.outcomes(&id));
    }
    assert_eq!(h.client.stats().unmatched, 0);
}

#[test]
fn a_response_with_our_prefix_and_the_counter_no_action_has_is_a_stray_response() {
    // Counters start at 1: `<prefix>-0` names no action of this connection, ended or not,
    // so it is counted as unmatched, not as the answer of an action forgotten early.
    let mut h = harness(11);
    let before = h.client.stats();
    let zero = format!("{}-0", h.client.action_id_prefix());
    h.feed(&pong(&zero));
    let after = h.client.stats();
    assert_eq!(after.unmatched, before.unmatched + 1);
    assert_eq!(after.evicted_answers_dropped, 0);
}

#[test]
fn every_unseeded_client_of_a_process_gets_its_own_action_id_prefix() {
    // Not only two in a row: any number of clients without a seed share no prefix.
    let now = Instant::now();
    let prefixes: HashSet<String> = (0..4)
        .map(|_| {
            let cfg = ClientConfig::builder("admin", "amp111").build().unwrap();
            ami_proto::Client::new(cfg, now)
                .action_id_prefix()
                .to_string()
        })
        .collect();
    assert_eq!(prefixes.len(), 4, "{prefixes:?}");
}
