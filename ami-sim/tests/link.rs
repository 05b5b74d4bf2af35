//! `ami_sim::link::Link`: a user's own client against the simulator on virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::{
    Action, ActionError, ActionId, ClientConfig, ConnectFailure, DisconnectReason, Notice, Phase,
    SendOptions, StreamItem,
};
use ami_sim::link::Link;
use ami_sim::{ActionMatch, Fault, SimConfig};
use std::time::{Duration, Instant};

fn config(seed: u64) -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .seed(seed)
        .action_timeout(Duration::from_secs(5))
        .build()
        .expect("valid config")
}

fn link(seed: u64, start: Instant) -> Link {
    let sim = SimConfig {
        seed: seed ^ 0x5151,
        ..SimConfig::default()
    };
    Link::with_configs(config(seed), sim, start)
}

fn completions(link: &Link, id: &ActionId) -> usize {
    link.notices()
        .iter()
        .filter(|(_, n)| matches!(n, Notice::Completed { id: done, .. } if done == id))
        .count()
}

fn readies(link: &Link) -> Vec<Instant> {
    link.notices()
        .iter()
        .filter(|(_, n)| matches!(n, Notice::Ready { .. }))
        .map(|(t, _)| *t)
        .collect()
}

#[test]
fn login_and_ping_round_trip() {
    let start = Instant::now();
    let mut link = link(1, start);
    assert!(link.run_until_ready(start + Duration::from_secs(5)));
    // Nothing on the simulated link takes virtual time: logged in at the start.
    assert_eq!(readies(&link), vec![start]);
    assert!(link.session().is_some());

    let id = link.send(Action::new("Ping")).expect("queued");
    let outcome = link
        .run_until_complete(&id, start + Duration::from_secs(5))
        .expect("answered");
    let response = outcome.expect("Ping succeeds");
    assert_eq!(response.message().get_str("Ping"), Some("Pong"));
    assert_eq!(response.message().action_id(), Some(id.as_str()));
    assert_eq!(link.now(), start);
    assert_eq!(completions(&link, &id), 1);
    assert!(link.outcome(&id).is_some_and(|o| o.is_ok()));
}

#[test]
fn a_restart_fails_the_pending_action_once_and_the_client_is_ready_again() {
    let start = Instant::now();
    let mut link = link(2, start);
    assert!(link.run_until_ready(start + Duration::from_secs(5)));
    // Held by the server, so it is still in flight when Asterisk goes down.
    link.server_mut()
        .faults()
        .delay_replies(ActionMatch::named("Getvar"), Duration::from_secs(10));
    let id = link
        .send(Action::new("Getvar").field("Variable", "EPOCH"))
        .expect("queued");
    link.run_for(Duration::from_millis(100));
    assert_eq!(completions(&link, &id), 0);

    let restart_at = link.now();
    let down_for = Duration::from_secs(2);
    link.inject(Fault::Restart { down_for });
    assert!(!link.client().is_ready());
    assert!(link.run_until_ready(restart_at + Duration::from_secs(60)));
    // Run well past the delayed reply's time: the action must not complete again.
    link.run_for(Duration::from_secs(30));

    assert_eq!(completions(&link, &id), 1);
    match link.outcome(&id) {
        Some(Err(ActionError::Unknown(_))) => {}
        other => panic!("written whole, then the server went away: {other:?}"),
    }
    // Connects while the server was down were refused, as by a closed port.
    let refused = link
        .notices()
        .iter()
        .filter(|(t, n)| {
            matches!(
                n,
                Notice::Disconnected {
                    reason: DisconnectReason::ConnectFailed(ConnectFailure::Refused),
                    ..
                }
            ) && *t < restart_at + down_for
        })
        .count();
    assert!(refused > 0, "{:?}", link.notices());
    let r = readies(&link);
    assert_eq!(r.len(), 2, "{:?}", link.notices());
    assert!(
        r[1] >= restart_at + down_for,
        "Ready while the server was down"
    );
    assert!(link.client().is_ready());

    // Actions flow on the new session.
    let ping = link.send(Action::new("Ping")).expect("queued");
    let pong = link.run_until_complete(&ping, link.now() + Duration::from_secs(5));
    assert!(matches!(pong, Some(Ok(_))), "{pong:?}");
}

/// A scripted run: login, actions, an Originate, a restart, faults; its notices.
fn scripted(seed: u64, start: Instant) -> Vec<(Instant, Notice)> {
    let mut link = link(seed, start);
    assert!(link.run_until_ready(start + Duration::from_secs(5)));
    link.server_mut()
        .faults()
        .delay_replies(
            ActionMatch::any().with_probability(0.5),
            Duration::from_millis(700),
        )
        .set_max_chunk(Some(7));
    for i in 0..5 {
        link.send(Action::new("Ping")).expect("queued");
        link.send(Action::new("UserEvent").field("UserEvent", format!("Dst{i}")))
            .expect("queued");
        link.run_for(Duration::from_millis(300));
    }
    link.send(
        Action::new("Originate")
            .field("Channel", "Local/busy@ami-test")
            .field("Application", "Wait")
            .field("Data", "1")
            .field("Async", "true"),
    )
    .expect("queued");
    link.run_for(Duration::from_secs(2));
    link.inject(Fault::Restart {
        down_for: Duration::from_millis(1500),
    });
    link.run_for(Duration::from_secs(20));
    link.send(Action::new("Ping")).expect("queued");
    link.run_for(Duration::from_secs(3));
    while link.client_mut().poll_event().is_some() {}
    link.close();
    assert!(link.step().is_none(), "a closed client has no deadline");
    link.take_notices()
}

#[test]
fn the_same_seeds_give_the_same_notices_at_the_same_virtual_times() {
    let start = Instant::now();
    let a = scripted(9, start);
    let b = scripted(9, start);
    assert!(a.len() > 10, "{a:?}");
    // The run went through the restart (reconnects refused while it was down) and came back.
    let reasons: Vec<_> = a
        .iter()
        .filter_map(|(_, n)| match n {
            Notice::Disconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.first(), Some(&DisconnectReason::ServerShutdown));
    assert!(reasons.len() > 1, "{reasons:?}");
    assert!(reasons[1..]
        .iter()
        .all(|r| *r == DisconnectReason::ConnectFailed(ConnectFailure::Refused)));
    let readies = a
        .iter()
        .filter(|(_, n)| matches!(n, Notice::Ready { .. }))
        .count();
    assert_eq!(readies, 2, "{a:?}");
    assert_eq!(a, b);
    assert!(matches!(
        a.last(),
        Some((
            _,
            Notice::Closed {
                reason: DisconnectReason::LocalClose
            }
        ))
    ));
    // The seed matters (ActionID prefixes, reply delays): another one runs differently.
    assert_ne!(a, scripted(10, start));
}

#[test]
fn a_delayed_reply_times_out_at_its_deadline_in_virtual_time() {
    let start = Instant::now();
    let mut link = link(4, start);
    assert!(link.run_until_ready(start + Duration::from_secs(5)));
    link.run_for(Duration::from_millis(250));
    link.server_mut()
        .faults()
        .delay_replies(ActionMatch::named("Command"), Duration::from_secs(20));
    let sent_at = link.now();
    let id = link
        .send_with(
            Action::new("Command").field("Command", "core show version"),
            SendOptions::timeout(Duration::from_secs(3)),
        )
        .expect("queued");
    let outcome = link.run_until_complete(&id, sent_at + Duration::from_secs(10));
    match outcome {
        Some(Err(ActionError::TimedOut {
            phase: Phase::Response,
            ..
        })) => {}
        other => panic!("expected a timeout waiting for the response: {other:?}"),
    }
    // Exactly at its deadline, on the virtual clock.
    assert_eq!(link.now(), sent_at + Duration::from_secs(3));
    let at = link
        .notices()
        .iter()
        .find(|(_, n)| matches!(n, Notice::Completed { id: done, .. } if *done == id))
        .map(|(t, _)| *t);
    assert_eq!(at, Some(sent_at + Duration::from_secs(3)));
    // With a limit before the deadline, there is no outcome yet and the clock is at the limit.
    let again = link
        .send_with(
            Action::new("Command").field("Command", "core show version"),
            SendOptions::timeout(Duration::from_secs(3)),
        )
        .expect("queued");
    let limit = link.now() + Duration::from_secs(1);
    assert_eq!(link.run_until_complete(&again, limit), None);
    assert_eq!(link.now(), limit);
}

#[test]
fn events_wait_in_the_client_for_the_consumer() {
    let start = Instant::now();
    let mut link = link(5, start);
    assert!(link.run_until_ready(start + Duration::from_secs(5)));
    let now = link.now();
    link.server_mut().emit_user_events(now, 3);
    link.pump();
    let mut items = Vec::new();
    while let Some(item) = link.client_mut().poll_event() {
        items.push(item);
    }
    let events = items
        .iter()
        .filter(|i| matches!(i, StreamItem::Event(m) if m.event() == Some("UserEvent")))
        .count();
    assert_eq!(events, 3, "{items:?}");
}

#[test]
fn run_until_ends_at_its_instant_and_step_moves_to_the_next_deadline() {
    let start = Instant::now();
    let mut link = link(6, start);
    let until = start + Duration::from_millis(1234);
    link.run_until(until);
    assert_eq!(link.now(), until);
    assert_eq!(link.elapsed(), Duration::from_millis(1234));
    let next = link
        .next_deadline()
        .expect("the heartbeat is always due some time");
    assert!(next > until);
    assert_eq!(link.step(), Some(next));
    assert_eq!(link.now(), next);
}
