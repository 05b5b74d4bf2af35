//! A fault that repeats for an hour does not write a line per occurrence for the whole
//! hour, however far apart its occurrences come (bursts less than 1 s apart were always
//! summarised; the same faults 1.5 s apart were logged in full each time, for ever). Each
//! test runs one simulated hour on virtual time and counts the warn records of its own
//! (uniquely named) client, so the tests can share the logger.
//!
//! The bound used: the project's own rate for a continuous burst is one summary per 10 s,
//! 360 a simulated hour (`log_rate.rs`); a fault that comes less often must not log more.
//!
//! And what a run of a repeated fault leaves unsaid is said at the latest when the
//! connection ends (a disconnect, Ready, the close): a fault that stops after a few repeats
//! never has its repeats (and their count) go unsaid for ever; a login refusal that comes
//! back after a different one is warned again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/log_capture.rs"]
mod log_capture;
#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{Action, ClientConfig, ConnectFailure, DecoderLimits, Input};
use scripted::{event, id_of, list_complete, list_item, list_start, msg, pong, Harness};
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);
/// The project's own rate for a burst that never ends: one line per 10 s, plus the first.
const BOUND_PER_HOUR: usize = 361;

/// Records at `max` or worse of the client named `name`, taken from the capture.
fn records_at(name: &str, max: log::Level) -> Vec<String> {
    let prefix = format!("AMI {name}: ");
    log_capture::take(|r| r.message.starts_with(&prefix))
        .into_iter()
        .filter(|r| r.level <= max)
        .map(|r| r.message)
        .collect()
}

/// Warn-or-worse records of the client named `name`, taken from the capture.
fn warnings_of(name: &str) -> Vec<String> {
    records_at(name, log::Level::Warn)
}

/// Info-or-worse records of the client named `name`, taken from the capture.
fn records_of(name: &str) -> Vec<String> {
    records_at(name, log::Level::Info)
}

/// Answers any heartbeat the client wrote, so a simulated hour stays one session.
fn answer_pings(h: &mut Harness) {
    for m in h.take_all() {
        if m.action().is_some_and(|a| a.eq_ignore_ascii_case("Ping")) {
            h.feed(&pong(id_of(&m)));
        }
    }
}

fn summary(lines: &[String]) -> String {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for l in lines {
        let k: String = l.chars().filter(|c| !c.is_ascii_digit()).take(90).collect();
        match kinds.iter_mut().find(|(x, _)| *x == k) {
            Some((_, n)) => *n += 1,
            None => kinds.push((k, 1)),
        }
    }
    format!("{kinds:#?}")
}

/// A Ready client named `name` at `t0` whose decoder drops any message of more than 8 fields
/// (the garbage these tests send), pinging every `ping`; its records so far taken.
fn lossy(name: &str, t0: Instant, ping: Duration) -> Harness {
    let limits = DecoderLimits::builder().max_fields(8).build().unwrap();
    let config = ClientConfig::builder("admin", "amp111")
        .name(name)
        .decoder(limits)
        .ping_interval(ping)
        .build()
        .unwrap();
    let mut h = Harness::new(config, t0);
    h.ready();
    h.events();
    records_at(name, log::Level::Trace);
    h
}

/// A client named `name` at `t0` that retries a refused login (`reconnect_on_auth_failure`).
fn refused(name: &str, t0: Instant) -> Harness {
    let config = ClientConfig::builder("admin", "amp111")
        .name(name)
        .reconnect_on_auth_failure(true)
        .build()
        .unwrap();
    Harness::new(config, t0)
}

/// A message of `first` followed by 20 short fields: over a lossy client's 8-field limit.
fn oversized(first: &[(&str, &str)]) -> Vec<u8> {
    let names: Vec<String> = (0..20).map(|i| format!("F{i}")).collect();
    let mut fields = first.to_vec();
    fields.extend(names.iter().map(|n| (n.as_str(), "x")));
    msg(&fields)
}

/// Garbage from the server: an event over a lossy client's field limit.
fn garbage() -> Vec<u8> {
    oversized(&[("Event", "Junk")])
}

/// The number just before `marker` in `line` (`"... 4 more server inputs"` -> 4).
fn number_before(line: &str, marker: &str) -> Option<u64> {
    let at = line.find(marker)?;
    line[..at].split_whitespace().last()?.parse().ok()
}

/// An hour of quiet (pings answered), then `close`.
fn quiet_hour_then_close(h: &mut Harness) {
    let end = h.now + HOUR;
    while h.now < end {
        h.advance(Duration::from_secs(30));
        answer_pings(h);
    }
    let now = h.now;
    h.client.close(now);
    h.drain();
}

/// A consumer that falls behind every 1.5 s (a periodic flush, a GC pause) for an hour:
/// 2,400 overflows of two events each. Every drop is counted; the log should say the
/// pattern a bounded number of times, as it does when the overflows are 10 ms apart.
#[test]
fn event_queue_overflows_1_5_s_apart_for_an_hour_are_summarised_not_logged_each_time() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "overflow-spaced";
    let config = ClientConfig::builder("admin", "amp111")
        .name(name)
        .event_queue_cap(2)
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let mut h = Harness::new(config, t0);
    h.ready();
    h.events();
    warnings_of(name);
    let mut seq = 0;
    let mut overflows = 0u64;
    while h.now < t0 + HOUR {
        for _ in 0..4 {
            h.feed(&event("Newchannel", seq));
            seq += 1;
        }
        h.events();
        overflows += 1;
        h.advance(Duration::from_millis(1500));
        answer_pings(&mut h);
    }
    let lines = warnings_of(name);
    assert_eq!(
        h.client.stats().events_dropped,
        2 * overflows,
        "every drop counted"
    );
    assert!(
        lines.len() <= BOUND_PER_HOUR,
        "{} warn lines in one simulated hour for {overflows} overflows 1.5 s apart \
         (10 ms apart gives one per 10 s): {}",
        lines.len(),
        summary(&lines)
    );
}

/// A server that sends one oversized (garbage) message every 1.5 s for an hour: each is
/// discarded and counted; the log should not say each of the 2,400.
#[test]
fn server_garbage_every_1_5_s_for_an_hour_is_summarised_not_logged_each_time() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "garbage-spaced";
    let t0 = Instant::now();
    let mut h = lossy(name, t0, HOUR);
    let junk = garbage();
    let mut sent = 0u64;
    while h.now < t0 + HOUR {
        h.feed(&junk);
        h.events();
        sent += 1;
        h.advance(Duration::from_millis(1500));
        answer_pings(&mut h);
    }
    let lines = warnings_of(name);
    assert_eq!(h.client.stats().discarded, sent, "every discard counted");
    assert!(
        lines.len() <= BOUND_PER_HOUR,
        "{} warn lines in one simulated hour for {sent} discards 1.5 s apart \
         (a continuous stream gives one per 10 s): {}",
        lines.len(),
        summary(&lines)
    );
}

/// A list whose items keep being dropped on the way in (a server sending garbage while a
/// dialer polls CoreShowChannels): one warn line per lost item, with no rate limit, where
/// the discards themselves are summarised.
#[test]
fn a_list_losing_thousands_of_items_logs_a_bounded_number_of_lines() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "list-lossy";
    let mut h = lossy(name, Instant::now(), HOUR);
    let id = h.send(Action::new("CoreShowChannels"));
    let m = h.take("CoreShowChannels");
    let aid = id_of(&m).to_string();
    h.feed(&list_start(&aid));
    // 5,000 items whose ActionID was read, each with too many fields: dropped, counted.
    let bad = oversized(&[("Event", "CoreShowChannel"), ("ActionID", aid.as_str())]);
    for n in 0..5000 {
        h.feed(&bad);
        if n % 100 == 0 {
            h.feed(&list_item(&aid, n));
        }
        h.advance(Duration::from_millis(1));
    }
    h.feed(&list_complete(&aid, 5050));
    h.events();
    assert!(h.outcome(&id).is_err(), "the list completes as incomplete");
    let lines = warnings_of(name);
    let per_item = lines
        .iter()
        .filter(|l| l.contains("lost an item on the way in"))
        .count();
    assert!(
        lines.len() <= 20,
        "{} warn lines ({per_item} of them 'lost an item on the way in') for one list that \
         lost 5,000 items in 5 s: {}",
        lines.len(),
        summary(&lines)
    );
}

/// The other side: a list whose action timed out, and whose items keep coming for an hour
/// (a server that never ends it). Every item is dropped and counted, but the log says only
/// the first, and the number dropped only "when the list ends", which is never: an hour of
/// drops, one line, no count. A drop that lasts should be summarised with its count.
#[test]
fn items_of_a_list_that_never_ends_are_summarised_with_their_count_while_they_come() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "list-endless";
    let config = ClientConfig::builder("admin", "amp111")
        .name(name)
        .ping_interval(Duration::from_secs(3600))
        .action_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let mut h = Harness::new(config, t0);
    h.ready();
    h.events();
    warnings_of(name);
    let id = h.send(Action::new("CoreShowChannels"));
    let m = h.take("CoreShowChannels");
    let aid = id_of(&m).to_string();
    h.feed(&list_start(&aid));
    h.feed(&list_item(&aid, 0));
    h.advance(Duration::from_secs(11));
    assert!(h.outcome(&id).is_err(), "timed out mid-list");
    let before = h.client.stats().list_items_dropped;
    let mut n = 1;
    while h.now < t0 + HOUR {
        h.feed(&list_item(&aid, n));
        n += 1;
        h.advance(Duration::from_secs(1));
        answer_pings(&mut h);
    }
    let dropped = h.client.stats().list_items_dropped - before;
    let lines = warnings_of(name);
    let dropped_said = dropped.to_string();
    let with_count = lines.iter().any(|l| {
        l.contains(&aid) && l.chars().any(|c| c.is_ascii_digit()) && l.contains("item(s)")
    });
    assert!(
        dropped > 3000 && with_count,
        "{dropped_said} items of {aid} dropped and counted over an hour; the log said: {lines:#?}"
    );
}

/// A login that keeps being refused (a secret rotated on the PBX, not yet in the dialer's
/// config), with `reconnect_on_auth_failure` on: the breaker opens once, said once; but
/// every probe after it writes `login rejected` at warn, once a minute for as long as it
/// lasts. The second hour of an unchanged refusal says as much as the first.
#[test]
fn a_login_refused_for_hours_is_not_re_warned_at_every_retry() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "auth-refused";
    let t0 = Instant::now();
    let mut h = refused(name, t0);
    let mut refusals = 0;
    let mut second_hour = Vec::new();
    while h.now < t0 + 2 * HOUR {
        h.connected();
        h.feed(scripted::BANNER);
        let login = h.take("Login");
        h.feed(&scripted::error(id_of(&login), "Authentication failed"));
        refusals += 1;
        let Some(next) = h.wait() else {
            panic!("no retry after a refused login")
        };
        h.advance_to(next);
        let lines = warnings_of(name);
        if h.now > t0 + HOUR {
            second_hour.extend(lines);
        }
    }
    assert!(refusals > 100, "{refusals} logins refused");
    assert!(
        second_hour.len() <= 6,
        "{} warn lines in the second hour of an unchanged login refusal ({refusals} \
         refusals in 2 h): {}",
        second_hour.len(),
        summary(&second_hour)
    );
}

/// Two garbage messages 1.5 s apart, then nothing: before 95627b2 each was said in full
/// (they are more than 1 s apart). Now the second joins the first's run ("recurs within
/// 10 s"), is only counted, and nothing ever says it: no later discard, and close does
/// not flush the run.
#[test]
fn a_second_discard_1_5_s_after_the_first_is_said_at_the_latest_on_close() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "owed-discard";
    let mut h = lossy(name, Instant::now(), Duration::from_secs(60));
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
    let mut h = lossy(name, Instant::now(), Duration::from_secs(60));
    let id = h.send(Action::new("CoreShowChannels"));
    let m = h.take("CoreShowChannels");
    let aid = id_of(&m).to_string();
    h.feed(&list_start(&aid));
    let bad = oversized(&[("Event", "CoreShowChannel"), ("ActionID", aid.as_str())]);
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
    let mut h = refused(name, Instant::now());
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
    let mut h = refused(name, Instant::now());
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

/// Connects refused three times, then a host that is not found: the outage changed, and
/// the operator hears of the new reason at once, with the count of the refusals the old
/// one left unsaid (the new reason is not a repeat of the old streak).
#[test]
fn a_connect_failure_with_a_new_reason_is_said_at_once_with_the_old_ones_count() {
    log_capture::install(log::LevelFilter::Trace);
    let name = "unreachable-reason-change";
    let config = ClientConfig::builder("admin", "amp111")
        .name(name)
        .build()
        .unwrap();
    let mut h = Harness::new(config, Instant::now());
    for failure in [
        ConnectFailure::Refused,
        ConnectFailure::Refused,
        ConnectFailure::Refused,
        ConnectFailure::HostNotFound,
    ] {
        h.input(Input::ConnectFailed(failure));
        let Some(next) = h.wait() else {
            panic!("no retry after a failed connect")
        };
        h.advance_to(next);
    }
    let lines = records_of(name);
    assert!(
        lines.iter().any(|l| l.contains("host not found")),
        "the new reason is said at info: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("2 more time(s)") && l.contains("connection refused")),
        "the refusals left unsaid are counted when the reason changes: {lines:#?}"
    );
}
