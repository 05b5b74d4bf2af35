//! What a run of a repeated fault leaves unsaid is said at the latest when the connection
//! ends (a disconnect, Ready, the close): a fault that stops after a few repeats never has
//! its repeats (and their count) go unsaid for ever; a login refusal that comes back after
//! a different one is warned again. Virtual time; each test reads only the
//! records of its own uniquely named client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/log_capture.rs"]
mod log_capture;
#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{Action, ClientConfig, DecoderLimits};
use scripted::{event, id_of, list_complete, list_item, list_start, msg, pong, Harness};
use std::time::{Duration, Instant};

fn records_of(name: &str) -> Vec<String> {
    let prefix = format!("AMI {name}: ");
    log_capture::take(|r| r.message.starts_with(&prefix))
        .into_iter()
        .filter(|r| r.level <= log::Level::Info)
        .map(|r| r.message)
        .collect()
}

fn answer_pings(h: &mut Harness) {
    for m in h.take_all() {
        if m.action().is_some_and(|a| a.eq_ignore_ascii_case("Ping")) {
            h.feed(&pong(id_of(&m)));
        }
    }
}

/// The number just before `marker` in `line` (`"... 4 more server inputs"` -> 4).
fn number_before(line: &str, marker: &str) -> Option<u64> {
    let at = line.find(marker)?;
    line[..at].split_whitespace().last()?.parse().ok()
}

/// An hour of quiet (pings answered), then `close`.
fn quiet_hour_then_close(h: &mut Harness) {
    let end = h.now + Duration::from_secs(3600);
    while h.now < end {
        h.advance(Duration::from_secs(30));
        answer_pings(h);
    }
    let now = h.now;
    h.client.close(now);
    h.drain();
}

fn garbage() -> Vec<u8> {
    let names: Vec<String> = (0..20).map(|i| format!("F{i}")).collect();
    let mut fields = vec![("Event", "Junk")];
    fields.extend(names.iter().map(|n| (n.as_str(), "x")));
    msg(&fields)
}

/// Two garbage messages 1.5 s apart, then nothing: before 95627b2 each was said in full
/// (they are more than 1 s apart). Now the second joins the first's run ("recurs within
/// 10 s"), is only counted, and nothing ever says it: no later discard, and close does
/// not flush the run.
#[test]
fn a_second_discard_1_5_s_after_the_first_is_said_at_the_latest_on_close() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "owed-discard";
    let limits = DecoderLimits::builder().max_fields(8).build().unwrap();
    let config = ClientConfig::builder("admin", "amp111")
        .name(name)
        .decoder(limits)
        .ping_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut h = Harness::new(config, Instant::now());
    h.ready();
    h.events();
    records_of(name);
    h.feed(&garbage());
    h.events();
    h.advance(Duration::from_millis(1500));
    h.feed(&garbage());
    h.events();
    quiet_hour_then_close(&mut h);
    assert_eq!(h.client.stats().discarded, 2);
    let lines = records_of(name);
    let said: u64 = lines
        .iter()
        .map(|l| {
            if l.contains("server input discarded:") {
                1
            } else {
                number_before(l, "more server inputs discarded").unwrap_or(0)
            }
        })
        .sum();
    assert_eq!(said, 2, "2 discards, the log said {said}: {lines:#?}");
}

/// Two overflows 1.5 s apart, then nothing: the second episode's drops go to the run's
/// unsaid count, said only when a later run opens, which never happens.
#[test]
fn the_drops_of_a_second_overflow_1_5_s_later_are_said_at_the_latest_on_close() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "owed-overflow";
    let config = ClientConfig::builder("admin", "amp111")
        .name(name)
        .event_queue_cap(2)
        .ping_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut h = Harness::new(config, Instant::now());
    h.ready();
    h.events();
    records_of(name);
    for round in 0..2 {
        for i in 0..4 {
            h.feed(&event("Newchannel", round * 4 + i));
        }
        h.events();
        h.advance(Duration::from_millis(1500));
        answer_pings(&mut h);
    }
    // One more event, read: the queue's news of the second episode's end is taken.
    h.feed(&event("Newchannel", 100));
    h.events();
    quiet_hour_then_close(&mut h);
    let dropped = h.client.stats().events_dropped;
    assert_eq!(dropped, 4);
    let lines = records_of(name);
    let said: u64 = lines
        .iter()
        .map(|l| {
            number_before(l, "events were dropped")
                .or_else(|| number_before(l, "more events dropped"))
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(
        said, dropped,
        "{dropped} events dropped, the log said {said}: {lines:#?}"
    );
}

/// A list loses 5 items at once and completes: before 95627b2 the log said "(5 so far)";
/// now the first loss is said ("1 so far") and the other 4 never are.
#[test]
fn items_a_list_lost_are_all_said_once_the_list_completes() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "owed-list-lost";
    let limits = DecoderLimits::builder().max_fields(8).build().unwrap();
    let config = ClientConfig::builder("admin", "amp111")
        .name(name)
        .decoder(limits)
        .ping_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut h = Harness::new(config, Instant::now());
    h.ready();
    h.events();
    records_of(name);
    let id = h.send(Action::new("CoreShowChannels"));
    let m = h.take("CoreShowChannels");
    let aid = id_of(&m).to_string();
    h.feed(&list_start(&aid));
    let names: Vec<String> = (0..20).map(|i| format!("F{i}")).collect();
    let mut fields = vec![("Event", "CoreShowChannel"), ("ActionID", aid.as_str())];
    fields.extend(names.iter().map(|n| (n.as_str(), "x")));
    let bad = msg(&fields);
    for _ in 0..5 {
        h.feed(&bad);
    }
    h.feed(&list_item(&aid, 0));
    h.feed(&list_complete(&aid, 6));
    h.events();
    assert!(h.outcome(&id).is_err(), "the list completes as incomplete");
    quiet_hour_then_close(&mut h);
    let lines = records_of(name);
    let said: u64 = lines
        .iter()
        .map(|l| {
            if l.contains("lost an item on the way in") {
                1
            } else {
                number_before(l, "more item(s) on the way in").unwrap_or(0)
            }
        })
        .sum();
    let five = lines.iter().any(|l| l.contains("5 so far"));
    assert!(
        said == 5 || five,
        "5 items lost, the log said {said}: {lines:#?}"
    );
}

/// Refused `Authentication failed`, then `Login Already In Use` (another session held the
/// login), then `Authentication failed` again, a minute apart: the state changed twice, and
/// the third refusal is a new fact for the operator. 95627b2 keeps the first refusal's
/// streak open across the other refusal (`refused_with` is only set on the rate-limited
/// branch) and says the third at debug only.
#[test]
fn a_refusal_that_comes_back_after_a_different_refusal_is_warned_again() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "owed-refusal-change";
    let config = ClientConfig::builder("admin", "amp111")
        .name(name)
        .reconnect_on_auth_failure(true)
        .build()
        .unwrap();
    let mut h = Harness::new(config, Instant::now());
    let mut warned = Vec::new();
    for message in [
        "Authentication failed",
        "Login Already In Use",
        "Authentication failed",
    ] {
        h.connected();
        h.feed(scripted::BANNER);
        let login = h.take("Login");
        h.feed(&scripted::error(id_of(&login), message));
        let prefix = format!("AMI {name}: ");
        warned.push(
            log_capture::take(|r| r.message.starts_with(&prefix))
                .into_iter()
                .filter(|r| r.level <= log::Level::Warn)
                .map(|r| r.message)
                .collect::<Vec<_>>(),
        );
        let Some(next) = h.wait() else {
            panic!("no retry after a refused login")
        };
        h.advance_to(next);
    }
    assert!(
        warned[2]
            .iter()
            .any(|l| l.contains("Authentication failed")),
        "the third refusal (Authentication failed, after Login Already In Use) is not \
         warned: {warned:#?}"
    );
}

/// Refusals retried until the login is accepted: the refusals are said by their own streak
/// (warn, then summarised), and when the session becomes Ready what was left unsaid of them
/// is said once, not again as "connection ended before the session was ready" (the same
/// refusals counted twice, in two lines that read as two faults).
#[test]
fn refusals_before_a_login_is_accepted_are_summed_up_once_at_ready() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "owed-refusals-once";
    let config = ClientConfig::builder("admin", "amp111")
        .name(name)
        .reconnect_on_auth_failure(true)
        .build()
        .unwrap();
    let mut h = Harness::new(config, Instant::now());
    for _ in 0..5 {
        h.connected();
        h.feed(scripted::BANNER);
        let login = h.take("Login");
        h.feed(&scripted::error(id_of(&login), "Authentication failed"));
        let Some(next) = h.wait() else {
            panic!("no retry after a refused login")
        };
        h.advance_to(next);
    }
    h.ready();
    let lines = records_of(name);
    let before: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("more time(s)"))
        .collect();
    assert_eq!(
        before.len(),
        1,
        "the refusals left unsaid are summed up once at Ready: {lines:#?}"
    );
    assert!(
        before[0].contains("login was rejected 4 more time(s)"),
        "{lines:#?}"
    );
}
