//! Timer behaviour of the client in virtual time: connect/banner/login timeouts, reconnect
//! backoff and the circuit breaker, heartbeat, per-action deadlines, and `Output::Wait`.
//!
//! Time only moves when a test moves it (`t0 + Duration`); every instant is asserted exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

#[path = "support/scripted.rs"]
mod scripted;

use ami_proto::{
    Action, ActionError, ActionId, ClientConfig, ClientConfigBuilder, ConnectFailure, Discard,
    DisconnectReason, Input, Phase, SendError, SendOptions, Status, StreamItem,
};
use scripted::{
    async_originate, event, id_of, list_complete, list_item, list_start, originate_queued,
    originate_response, pong, Harness, Out, BANNER,
};
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);
const REFUSED: DisconnectReason = DisconnectReason::ConnectFailed(ConnectFailure::Refused);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn base() -> ClientConfigBuilder {
    ClientConfig::builder("admin", "s3cr3t-Pa55")
        .events("call")
        .seed(7)
}

/// Splits `[Close, Disconnected(reason, Some(retry_at))]` and returns `retry_at`.
fn close_then_disconnected(out: &[Out], reason: DisconnectReason) -> Instant {
    match out {
        [Out::Close, Out::Disconnected(r, Some(at))] if *r == reason => *at,
        other => panic!("expected Close + Disconnected({reason:?}), got {other:?}"),
    }
}

// ----- status -----------------------------------------------------------------------------

/// The first second, stepping 5 s at a time through `range` (seconds after `t0`), at which
/// the client gives the link up for a heartbeat timeout, if it does.
fn heartbeat_given_up(
    h: &mut Harness,
    t0: Instant,
    range: std::ops::RangeInclusive<u64>,
) -> Option<u64> {
    range.step_by(5).find(|&s| {
        h.advance_to(t0 + secs(s))
            .iter()
            .any(|o| matches!(o, Out::Disconnected(DisconnectReason::HeartbeatTimeout, _)))
    })
}

#[test]
fn a_failed_connect_says_why_in_the_notice_the_status_and_the_counters() {
    let mut h = Harness::new(base().build().unwrap(), Instant::now());
    let cause = ConnectFailure::HostNotFound;
    let out = h.input(Input::ConnectFailed(cause));
    let why = DisconnectReason::ConnectFailed(cause);
    let retry_at = close_then_disconnected(&out, why.clone());
    assert_eq!(
        h.client.status(),
        Status::Disconnected {
            reason: why.clone(),
            retry_at: Some(retry_at),
            breaker_open: false,
        }
    );
    assert_eq!(why.to_string(), "connect_failed: host not found");
    assert_eq!(
        h.client
            .stats()
            .disconnect_count(ami_proto::DisconnectKind::ConnectFailed),
        1
    );
}

#[test]
fn io_error_kinds_become_connect_causes() {
    use std::io::ErrorKind;
    let cases = [
        (ErrorKind::ConnectionRefused, ConnectFailure::Refused),
        (ErrorKind::TimedOut, ConnectFailure::TimedOut),
        (ErrorKind::HostUnreachable, ConnectFailure::HostUnreachable),
        (
            ErrorKind::NetworkUnreachable,
            ConnectFailure::NetworkUnreachable,
        ),
        (
            ErrorKind::PermissionDenied,
            ConnectFailure::Other(ErrorKind::PermissionDenied),
        ),
    ];
    for (kind, cause) in cases {
        assert_eq!(ConnectFailure::from(kind), cause);
    }
    assert_eq!(ConnectFailure::Refused.to_string(), "connection refused");
}

#[test]
fn status_says_where_the_notices_left_the_session() {
    let mut h = Harness::new(base().build().unwrap(), Instant::now());
    assert_eq!(h.client.status(), Status::Connecting);
    h.connected();
    assert_eq!(h.client.status(), Status::Connecting, "no banner yet");
    h.login();
    let ready = Status::Ready {
        ami_version: "11.0.0".into(),
    };
    assert_eq!(h.client.status(), ready);
    let retry_at = close_then_disconnected(&h.eof(), DisconnectReason::Eof);
    assert_eq!(
        h.client.status(),
        Status::Disconnected {
            reason: DisconnectReason::Eof,
            retry_at: Some(retry_at),
            breaker_open: false,
        }
    );
    assert_eq!(h.advance_to(retry_at), [Out::Connect]);
    assert_eq!(h.client.status(), Status::Connecting);
    h.login();
    assert_eq!(h.client.status(), ready);
    h.client.close(h.now);
    assert_eq!(
        h.client.status(),
        Status::Closed {
            reason: DisconnectReason::LocalClose
        }
    );
}

// ----- connect / banner / login timeouts --------------------------------------------------

#[test]
fn connect_timeout_closes_and_schedules_a_retry_within_the_first_backoff() {
    let t0 = Instant::now();
    let cfg = base()
        .connect_timeout(secs(5))
        .backoff_base(Duration::from_millis(400))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    assert_eq!(h.log, [Out::Connect]);
    assert_eq!(h.wait(), Some(t0 + secs(5)));
    assert!(h.advance_to(t0 + secs(5) - MS).is_empty());
    let out = h.advance_to(t0 + secs(5));
    let retry = close_then_disconnected(&out, DisconnectReason::ConnectTimeout);
    assert!(retry >= t0 + secs(5) && retry <= t0 + secs(5) + Duration::from_millis(400));
    assert_eq!(h.wait(), Some(retry));
    // A late Connected for the abandoned attempt is ignored.
    assert!(h.input(Input::Connected).is_empty());
    assert_eq!(h.advance_to(retry), [Out::Connect]);
    assert_eq!(
        h.client
            .stats()
            .disconnect_count(ami_proto::DisconnectKind::ConnectTimeout),
        1
    );
    assert_eq!(h.client.stats().connects, 2);
}

/// TCP up, TLS handshake hanging: the connect timer ends it with a reason that says the
/// network was fine; the next attempt starts fresh (a plain connect timeout is said as such).
#[test]
fn a_handshake_that_hangs_times_out_as_a_tls_handshake_timeout_for_that_attempt_only() {
    let t0 = Instant::now();
    let cfg = base()
        .connect_timeout(secs(5))
        .backoff_base(Duration::from_millis(400))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.advance_to(t0 + secs(1));
    assert!(h.input(Input::Handshaking).is_empty());
    // The handshake does not restart the connect timer.
    assert_eq!(h.wait(), Some(t0 + secs(5)));
    let out = h.advance_to(t0 + secs(5));
    let retry = close_then_disconnected(&out, DisconnectReason::TlsHandshakeTimeout);
    assert_eq!(
        DisconnectReason::TlsHandshakeTimeout.to_string(),
        "tls_handshake_timeout"
    );
    let stats = h.client.stats();
    assert_eq!(
        stats.disconnect_count(ami_proto::DisconnectKind::TlsHandshakeTimeout),
        1
    );
    assert_eq!(
        stats.disconnect_count(ami_proto::DisconnectKind::ConnectTimeout),
        0
    );
    // The next attempt never gets past TCP: a plain connect timeout.
    assert_eq!(h.advance_to(retry), [Out::Connect]);
    let out = h.advance_to(retry + secs(5));
    close_then_disconnected(&out, DisconnectReason::ConnectTimeout);
}

/// `Handshaking` only means something while connecting: once the transport is open (or
/// before any connect), it changes nothing.
#[test]
fn handshaking_outside_a_connect_changes_nothing() {
    let t0 = Instant::now();
    let cfg = base().banner_timeout(secs(4)).build().unwrap();
    let mut h = Harness::new(cfg, t0);
    assert!(h.connected().is_empty());
    assert!(h.input(Input::Handshaking).is_empty());
    let out = h.advance_to(t0 + secs(4));
    close_then_disconnected(&out, DisconnectReason::BannerTimeout);
}

#[test]
fn banner_timeout_closes_and_schedules_a_retry() {
    let t0 = Instant::now();
    let cfg = base().banner_timeout(secs(4)).build().unwrap();
    let mut h = Harness::new(cfg, t0);
    h.advance_to(t0 + secs(1));
    assert!(h.connected().is_empty());
    assert_eq!(
        h.wait(),
        Some(t0 + secs(5)),
        "banner deadline replaces connect"
    );
    assert!(h.advance_to(t0 + secs(5) - MS).is_empty());
    let out = h.advance_to(t0 + secs(5));
    let retry = close_then_disconnected(&out, DisconnectReason::BannerTimeout);
    assert!(retry >= t0 + secs(5) && retry <= t0 + secs(5) + Duration::from_millis(100));
    assert!(h.inbox.is_empty(), "nothing is written before the banner");
    assert_eq!(
        h.client
            .stats()
            .disconnect_count(ami_proto::DisconnectKind::BannerTimeout),
        1
    );
}

#[test]
fn login_timeout_closes_and_schedules_a_retry() {
    let t0 = Instant::now();
    let cfg = base().login_timeout(secs(10)).build().unwrap();
    let mut h = Harness::new(cfg, t0);
    h.connected();
    h.advance_to(t0 + secs(2));
    h.feed(BANNER);
    assert_eq!(h.inbox_actions(), ["Login"]);
    assert_eq!(
        h.wait(),
        Some(t0 + secs(12)),
        "login deadline counts from the banner"
    );
    assert!(h.advance_to(t0 + secs(12) - MS).is_empty());
    let out = h.advance_to(t0 + secs(12));
    let retry = close_then_disconnected(&out, DisconnectReason::LoginTimeout);
    assert!(retry >= t0 + secs(12) && retry <= t0 + secs(12) + Duration::from_millis(100));
    // The login answer on the dead link changes nothing.
    let login = h.take("Login");
    assert!(h.feed(&scripted::login_ok(id_of(&login))).is_empty());
    assert!(!h.client.is_ready());
    assert_eq!(
        h.client
            .stats()
            .disconnect_count(ami_proto::DisconnectKind::LoginTimeout),
        1
    );
}

// ----- reconnect backoff and circuit breaker ----------------------------------------------

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
const THRESHOLD: u32 = 10;
const COOLDOWN: Duration = Duration::from_secs(60);

/// Fails 12 connects in a row; returns each retry time relative to `t0`.
fn failure_schedule(seed: u64, t0: Instant) -> Vec<Duration> {
    let cfg = base()
        .seed(seed)
        .backoff_base(BACKOFF_BASE)
        .backoff_max(BACKOFF_MAX)
        .breaker_threshold(THRESHOLD)
        .breaker_cooldown(COOLDOWN)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    let mut schedule = Vec::new();
    for n in 1..=12u32 {
        assert_eq!(h.log.last(), Some(&Out::Connect));
        let out = h.input(Input::ConnectFailed(ConnectFailure::Refused));
        let retry = close_then_disconnected(&out, REFUSED);
        let delay = retry - h.now;
        // The status says whether the next connect is a backoff retry or the breaker's probe.
        assert_eq!(
            h.client.status(),
            Status::Disconnected {
                reason: REFUSED,
                retry_at: Some(retry),
                breaker_open: n >= THRESHOLD,
            },
            "failure {n}"
        );
        assert_eq!(h.client.is_breaker_open(), n >= THRESHOLD, "failure {n}");
        if n < THRESHOLD {
            let ceiling = (BACKOFF_BASE * 2u32.pow(n - 1)).min(BACKOFF_MAX);
            assert!(delay <= ceiling, "failure {n}: {delay:?} > {ceiling:?}");
            assert_eq!(h.client.stats().breaker_opened, 0);
        } else {
            assert!(delay >= COOLDOWN, "failure {n}: breaker open, {delay:?}");
            assert!(delay <= COOLDOWN + BACKOFF_BASE, "failure {n}: {delay:?}");
            assert_eq!(
                h.client.stats().breaker_opened,
                1,
                "opened once, stays open"
            );
        }
        assert_eq!(h.wait(), Some(retry));
        if retry > h.now {
            assert!(h.advance_to(retry - Duration::from_micros(1)).is_empty());
        }
        assert_eq!(
            h.advance_to(retry),
            [Out::Connect],
            "retry exactly at retry_at"
        );
        // Connecting again (the breaker's probe, once open) is not waiting out the breaker.
        assert!(!h.client.is_breaker_open(), "failure {n}: connecting");
        schedule.push(retry - t0);
    }
    assert_eq!(
        h.client
            .stats()
            .disconnect_count(ami_proto::DisconnectKind::ConnectFailed),
        12
    );
    assert_eq!(h.client.stats().connects, 13);
    schedule
}

#[test]
fn reconnect_schedule_is_reproducible_per_seed_bounded_and_opens_the_breaker() {
    let t0 = Instant::now();
    let a = failure_schedule(0xabcd, t0);
    let b = failure_schedule(0xabcd, t0);
    assert_eq!(a, b, "same seed, same retry times");
    let c = failure_schedule(0x1234, t0);
    assert_ne!(a, c, "another seed, another schedule");
    assert_eq!(a.len(), 12);
}

/// Fails five connects, logs in, stays Ready for `ready_for`, then loses the session;
/// returns the delay of the reconnect that follows.
fn delay_after_ready(seed: u64, ready_for: Duration) -> Duration {
    let t0 = Instant::now();
    let cfg = base()
        .seed(seed)
        .backoff_base(secs(1))
        .backoff_max(secs(3600))
        .breaker_threshold(100)
        .stable_after(secs(30))
        .ping_interval(secs(3600))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    for _ in 0..5 {
        let out = h.input(Input::ConnectFailed(ConnectFailure::Refused));
        let retry = close_then_disconnected(&out, REFUSED);
        h.advance_to(retry);
    }
    h.ready();
    let ready_at = h.now;
    h.advance_to(ready_at + ready_for);
    let out = h.eof();
    close_then_disconnected(&out, DisconnectReason::Eof) - h.now
}

#[test]
fn failure_count_resets_after_ready_lasted_stable_after() {
    let mut without_reset = Vec::new();
    for seed in 0..16 {
        let after_stable = delay_after_ready(seed, secs(30));
        assert!(
            after_stable <= secs(1),
            "seed {seed}: ceiling back to base, got {after_stable:?}"
        );
        without_reset.push(delay_after_ready(seed, secs(30) - MS));
    }
    // Control: one millisecond short of stable_after, the sixth failure has a 32 s ceiling.
    assert!(without_reset.iter().all(|d| *d <= secs(32)));
    assert!(
        without_reset.iter().any(|d| *d > secs(1)),
        "without a reset the ceiling stays high: {without_reset:?}"
    );
}

// ----- heartbeat ----------------------------------------------------------------------------

fn heartbeat_config() -> ClientConfigBuilder {
    base()
        .ping_interval(secs(20))
        .pong_timeout(secs(10))
        .action_timeout(secs(300))
}

fn is_ping(h: &Harness) -> bool {
    h.inbox
        .iter()
        .any(|m| m.action().is_some_and(|a| a.eq_ignore_ascii_case("Ping")))
}

#[test]
fn no_heartbeat_ping_while_bytes_keep_arriving() {
    let t0 = Instant::now();
    let mut h = Harness::new(heartbeat_config().build().unwrap(), t0);
    h.ready();
    assert_eq!(h.wait(), Some(t0 + secs(20)));
    for k in 1..=20u64 {
        let t = t0 + secs(15 * k);
        assert!(h.advance_to(t).is_empty());
        h.feed(&event("Newchannel", k));
        assert!(!is_ping(&h), "no Ping at {k}");
        assert_eq!(h.wait(), Some(t + secs(20)), "idle timer re-armed by input");
    }
    assert_eq!(h.client.stats().actions_written, 0);
}

#[test]
fn heartbeat_ping_is_written_exactly_after_ping_interval_of_silence() {
    let t0 = Instant::now();
    let mut h = Harness::new(heartbeat_config().build().unwrap(), t0);
    h.ready();
    h.advance_to(t0 + secs(7));
    h.feed(&event("Newchannel", 1));
    assert!(h.advance_to(t0 + secs(27) - MS).is_empty());
    assert!(!is_ping(&h));
    assert!(h.advance_to(t0 + secs(27)).is_empty());
    let ping = h.take("Ping");
    assert!(h.inbox.is_empty());
    assert_eq!(h.wait(), Some(t0 + secs(37)), "pong deadline");
    h.advance_to(t0 + secs(30));
    assert!(
        h.feed(&pong(id_of(&ping))).is_empty(),
        "internal: no Completed"
    );
    assert_eq!(h.wait(), Some(t0 + secs(50)), "idle timer from the pong");
    assert!(h.advance_to(t0 + secs(50)).is_empty());
    h.take("Ping");
}

#[test]
fn a_complete_message_cancels_the_pong_deadline_and_a_partial_one_does_not() {
    let t0 = Instant::now();
    let mut h = Harness::new(heartbeat_config().build().unwrap(), t0);
    h.ready();
    h.advance_to(t0 + secs(20));
    let ping = h.take("Ping");
    assert_eq!(h.wait(), Some(t0 + secs(30)));
    // Half a line of an event is bytes, not progress: the pong deadline stands.
    h.advance_to(t0 + secs(25));
    h.feed(b"Event: Newch");
    assert_eq!(h.wait(), Some(t0 + secs(30)));
    // The rest of it completes a message: progress, so idle is re-armed and pong cancelled.
    h.advance_to(t0 + secs(28));
    h.feed(b"annel\r\nSeq: 1\r\n\r\n");
    assert!(matches!(
        &h.events()[..],
        [StreamItem::Ready { .. }, StreamItem::Event(m)] if m.event() == Some("Newchannel")
    ));
    assert_eq!(h.wait(), Some(t0 + secs(48)));
    assert!(
        h.advance_to(t0 + secs(30)).is_empty(),
        "old pong deadline is gone"
    );
    h.feed(&pong(id_of(&ping)));
    assert!(!h.log.iter().any(|o| matches!(o, Out::Disconnected(..))));
}

#[test]
fn a_trickle_of_bytes_never_counts_as_life() {
    // The case: after login the server sends an endless line one byte a second.
    let t0 = Instant::now();
    let mut h = Harness::new(heartbeat_config().build().unwrap(), t0);
    h.ready();
    h.feed(b"Event: Slow\r\nData: ");
    for s in 1..20 {
        h.advance_to(t0 + secs(s));
        h.feed(b"x");
    }
    h.advance_to(t0 + secs(20));
    assert_eq!(h.inbox_actions(), ["Ping"], "a Ping despite the trickle");
    for s in 21..30 {
        h.advance_to(t0 + secs(s));
        h.feed(b"x");
    }
    let out = h.advance_to(t0 + secs(30));
    assert!(
        out.contains(&Out::Close)
            && out
                .iter()
                .any(|o| matches!(o, Out::Disconnected(DisconnectReason::HeartbeatTimeout, _))),
        "closed for the unanswered Ping: {out:?}"
    );
}

#[test]
fn heartbeat_timeout_disconnects_fails_in_flight_once_and_reconnects() {
    let t0 = Instant::now();
    let cfg = heartbeat_config().pipeline_depth(2).build().unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let a = h.send(Action::new("Ping"));
    let b = h.send(Action::new("CoreShowChannels"));
    let c = h.send(Action::new("Ping"));
    assert_eq!(h.client.stats().queued, 1, "c waits behind the pipeline");
    let written_b = h.inbox[1].clone();
    h.feed(&list_start(id_of(&written_b)));
    h.take_all();
    assert!(h.advance_to(t0 + secs(20)).is_empty());
    h.take("Ping");
    assert!(h.advance_to(t0 + secs(30) - MS).is_empty());
    let out = h.advance_to(t0 + secs(30));
    let reason = DisconnectReason::HeartbeatTimeout;
    let retry = match &out[..] {
        [Out::Close, Out::Completed(i1, o1), Out::Completed(i2, o2), Out::Disconnected(r, Some(at))] =>
        {
            assert_eq!((i1, i2), (&a, &b), "failures in send order");
            assert_eq!(o1, &Err(ActionError::Unknown(reason.clone())));
            assert_eq!(o2, &Err(ActionError::Unknown(reason.clone())));
            assert_eq!(r, &reason);
            *at
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h.client
            .stats()
            .disconnect_count(ami_proto::DisconnectKind::HeartbeatTimeout),
        1
    );
    assert_eq!(h.advance_to(retry), [Out::Connect]);
    h.ready();
    let c_written = h.take("Ping");
    assert_eq!(id_of(&c_written), c.as_str());
    h.feed(&pong(c.as_str()));
    assert!(h.outcome(&c).is_ok());
    assert_eq!(h.outcomes(&a).len(), 1);
    assert_eq!(h.outcomes(&b).len(), 1);
}

/// A heartbeat Ping whose answer came after the Ping's own deadline (the server was blocked
/// by a sync Originate) must not stop later heartbeats.
#[test]
fn heartbeat_resumes_after_a_ping_answered_past_its_deadline() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(20))
        .pong_timeout(secs(10))
        .action_timeout(secs(30))
        .originate_margin(secs(10))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let sync = Action::new("Originate")
        .field("Channel", "Local/100@ami-test")
        .field("Application", "Wait")
        .field("Timeout", "60000");
    let id = h.send(sync);
    h.take("Originate");
    h.advance_to(t0 + secs(20));
    let ping = h.take("Ping");
    h.advance_to(t0 + secs(50)); // the heartbeat Ping's own action deadline passes
    h.advance_to(t0 + secs(55));
    h.feed(&originate_queued(id.as_str()));
    h.feed(&pong(id_of(&ping)));
    assert!(h.outcome(&id).is_ok());
    assert!(h.advance_to(t0 + secs(75)).is_empty());
    assert!(
        is_ping(&h),
        "a new heartbeat Ping after 20 s of silence; none was written"
    );
    h.take("Ping");
    // The new Ping's pong deadline is 75 + 10 s: nothing may fire before it.
    assert!(
        h.advance_to(t0 + secs(84)).is_empty(),
        "no HeartbeatTimeout"
    );
}

// ----- sync Originate ---------------------------------------------------------------------

fn sync_originate() -> Action {
    sync_originate_ringing(60_000)
}

/// A sync Originate whose call may ring `timeout_ms`.
fn sync_originate_ringing(timeout_ms: u64) -> Action {
    Action::new("Originate")
        .field("Channel", "Local/100@ami-test")
        .field("Exten", "100")
        .field("Context", "ami-test")
        .field("Priority", "1")
        .field("Timeout", timeout_ms.to_string())
}

#[test]
fn sync_originate_is_refused_by_default() {
    let t0 = Instant::now();
    let mut h = Harness::new(base().build().unwrap(), t0);
    h.ready();
    assert_eq!(
        h.try_send(sync_originate()),
        Err(SendError::SyncOriginateRefused)
    );
    let explicit_no = sync_originate().field("Async", "no");
    assert_eq!(
        h.try_send(explicit_no),
        Err(SendError::SyncOriginateRefused)
    );
    assert!(h.inbox.is_empty());
    assert_eq!(h.client.stats().pending, 0);
    assert!(h.try_send(sync_originate().field("Async", "yes")).is_ok());
}

#[test]
fn written_sync_originate_suspends_the_heartbeat_deadline() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(20))
        .pong_timeout(secs(10))
        .originate_margin(secs(10))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let id = h.send(sync_originate());
    h.take("Originate");
    // 65 s of silence: far beyond ping_interval + pong_timeout (30 s).
    let mut ping = None;
    for s in (5..=65).step_by(5) {
        let out = h.advance_to(t0 + secs(s));
        assert!(out.is_empty(), "at {s}s: {out:?}");
        if is_ping(&h) {
            ping = Some(h.take("Ping"));
        }
    }
    let ping = ping.expect("the heartbeat still pings");
    h.feed(&originate_queued(id.as_str()));
    h.feed(&pong(id_of(&ping)));
    assert!(h.outcome(&id).is_ok());
    assert!(h.client.is_ready());
    assert_eq!(
        h.client
            .stats()
            .disconnect_count(ami_proto::DisconnectKind::HeartbeatTimeout),
        0
    );
}

/// Cancelling a written sync Originate ends the caller's wait, not the server's: its
/// session stays blocked until the call is answered or fails, so the heartbeat still waits
/// for the Originate's deadline instead of giving a healthy session up.
#[test]
fn a_cancelled_sync_originate_still_suspends_the_heartbeat_deadline() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(20))
        .pong_timeout(secs(10))
        .originate_margin(secs(10))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let id = h.send(sync_originate());
    h.take("Originate");
    h.advance_to(t0 + secs(1));
    assert!(h.client.cancel(h.now, &id));
    h.drain();
    assert_eq!(h.outcome(&id), &Err(ActionError::Cancelled));
    // The call rings for 45 s: the server says nothing meanwhile.
    let mut ping = None;
    for s in (5..=45).step_by(5) {
        let out = h.advance_to(t0 + secs(s));
        assert!(out.is_empty(), "at {s}s: {out:?}");
        if is_ping(&h) {
            ping = Some(h.take("Ping"));
        }
    }
    let ping = ping.expect("the heartbeat still pings");
    h.feed(&originate_queued(id.as_str()));
    h.feed(&pong(id_of(&ping)));
    assert!(h.client.is_ready());
    assert_eq!(
        h.client
            .stats()
            .disconnect_count(ami_proto::DisconnectKind::HeartbeatTimeout),
        0
    );
}

/// The late answer of a cancelled sync Originate ends the server's silence: from then on a
/// link that goes quiet is the heartbeat's to judge within `pong_timeout`, not only at the
/// deadline of a call that has already been answered (ten minutes here).
#[test]
fn the_late_answer_of_a_cancelled_sync_originate_ends_its_hold_on_the_heartbeat() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(20))
        .pong_timeout(secs(10))
        .originate_margin(secs(10))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let ten_minutes = Action::new("Originate")
        .field("Channel", "Local/100@ami-test")
        .field("Exten", "100")
        .field("Context", "ami-test")
        .field("Priority", "1")
        .field("Timeout", "600000");
    let id = h.send(ten_minutes);
    h.take("Originate");
    h.advance_to(t0 + secs(1));
    assert!(h.client.cancel(h.now, &id));
    h.drain();
    // Answered at 2 s: the server is free again. Then the link dies without a word.
    h.advance_to(t0 + secs(2));
    h.feed(&originate_queued(id.as_str()));
    let down = heartbeat_given_up(&mut h, t0, 5..=60);
    // Idle from 2 s, the Ping at 22 s, its pong deadline at 32 s.
    assert_eq!(
        down,
        Some(35),
        "a dead link is given up a pong_timeout after its Ping"
    );
}

/// Two sync Originates cancelled while written: the server runs them one after the other,
/// so the first one's late answer frees the session only for the second's call; the
/// heartbeat still waits for the second's deadline.
#[test]
fn the_late_answer_of_the_first_of_two_cancelled_sync_originates_keeps_the_wait_for_the_second() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(20))
        .pong_timeout(secs(10))
        .originate_margin(secs(10))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let first = h.send(sync_originate());
    let second = h.send(sync_originate());
    h.take("Originate");
    h.take("Originate");
    h.advance_to(t0 + secs(1));
    assert!(h.client.cancel(h.now, &first));
    assert!(h.client.cancel(h.now, &second));
    h.drain();
    h.advance_to(t0 + secs(2));
    h.feed(&originate_queued(first.as_str()));
    // The second call rings until 65 s: the server says nothing meanwhile.
    let mut ping = None;
    for s in (5..=65).step_by(5) {
        let out = h.advance_to(t0 + secs(s));
        assert!(out.is_empty(), "at {s}s: {out:?}");
        if is_ping(&h) {
            ping = Some(h.take("Ping"));
        }
    }
    let ping = ping.expect("the heartbeat still pings");
    h.feed(&originate_queued(second.as_str()));
    h.feed(&pong(id_of(&ping)));
    assert!(h.client.is_ready());
}

/// The server stays blocked on a cancelled sync Originate's call until the call is answered
/// or fails, which can be long after the grace period given to late answers of ordinary
/// actions: its answer, whenever it comes before the Originate's own deadline, is still its
/// late answer (dropped and counted as one, not a stray response), and it ends the hold on
/// the heartbeat, so a link that dies afterwards is given up a `pong_timeout` after its
/// Ping, not at the deadline of a call already answered (ten minutes here).
#[test]
fn the_answer_of_a_cancelled_sync_originate_after_the_grace_period_still_ends_its_hold() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(20))
        .pong_timeout(secs(10))
        .action_timeout(secs(5))
        .originate_margin(secs(10))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let ten_minutes = sync_originate_ringing(600_000);
    let id = h.send(ten_minutes);
    h.take("Originate");
    h.advance_to(t0 + secs(1));
    assert!(h.client.cancel(h.now, &id));
    h.drain();
    // The grace period (action_timeout, 5 s) ends at 6 s; the call is answered at 10 s.
    assert!(h.advance_to(t0 + secs(10)).is_empty());
    h.feed(&originate_queued(id.as_str()));
    let stats = h.client.stats();
    assert_eq!(
        (stats.late_answers_dropped, stats.unmatched),
        (1, 0),
        "the answer is the cancelled Originate's late answer, not a stray response"
    );
    let down = heartbeat_given_up(&mut h, t0, 15..=120);
    // Idle from 10 s, the Ping at 30 s, its pong deadline at 40 s.
    assert_eq!(
        down,
        Some(40),
        "a dead link is given up a pong_timeout after its Ping"
    );
}

/// A cancelled sync Originate's late answer that the client cannot read (thrown away as
/// neither a response nor an event, or cut by a decoder limit) is still the server's answer:
/// its session is free again, so the hold on the heartbeat ends with it, as it does for a
/// sync Originate still waited for whose answer is thrown away. A link that dies afterwards
/// is given up a `pong_timeout` after its Ping, not at the deadline of the answered call.
#[test]
fn a_cancelled_sync_originates_discarded_answer_ends_its_hold_on_the_heartbeat() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(20))
        .pong_timeout(secs(10))
        .action_timeout(secs(5))
        .originate_margin(secs(10))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let ten_minutes = sync_originate_ringing(600_000);
    let id = h.send(ten_minutes);
    h.take("Originate");
    h.advance_to(t0 + secs(1));
    assert!(h.client.cancel(h.now, &id));
    h.drain();
    // Its answer at 3 s, without its `Response` line: discarded, and known for its answer
    // by its ActionID.
    h.advance_to(t0 + secs(3));
    h.feed(&scripted::msg(&[
        ("ActionID", id.as_str()),
        ("Message", "Originate successfully queued"),
    ]));
    assert_eq!(h.client.stats().unexpected, 1, "the answer was discarded");
    let down = heartbeat_given_up(&mut h, t0, 5..=120);
    // Nothing counted as progress since the session was ready: the Ping at 20 s, its pong
    // deadline at 30 s (not the Originate's, past 600 s).
    assert_eq!(
        down,
        Some(30),
        "a dead link is given up a pong_timeout after its Ping"
    );
}

/// The discarded answer of a cancelled sync Originate leaves its entry to swallow what
/// follows for a grace period (`action_timeout`) from then: a duplicate answer within it is
/// a late answer, dropped and counted, not a stray response.
#[test]
fn a_cancelled_sync_originates_discarded_answer_swallows_a_duplicate_for_its_grace_period() {
    let t0 = Instant::now();
    let cfg = base()
        .action_timeout(secs(5))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let id = h.send(sync_originate_ringing(600_000));
    h.take("Originate");
    h.advance_to(t0 + secs(1));
    assert!(h.client.cancel(h.now, &id));
    h.drain();
    h.advance_to(t0 + secs(3));
    h.feed(&scripted::msg(&[
        ("ActionID", id.as_str()),
        ("Message", "Originate successfully queued"),
    ]));
    assert_eq!(h.client.stats().unexpected, 1, "the answer was discarded");
    h.advance_to(t0 + secs(7));
    let late = h.client.stats().late_answers_dropped;
    h.feed(&originate_queued(id.as_str()));
    assert_eq!(h.client.stats().late_answers_dropped, late + 1);
    assert_eq!(h.client.stats().unmatched, 0);
}

/// A cancelled sync Originate that is never answered holds the heartbeat until its own
/// deadline (the longest its call can ring, plus `originate_margin`), and no longer.
#[test]
fn a_cancelled_sync_originate_never_answered_holds_the_heartbeat_until_its_deadline_only() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(20))
        .pong_timeout(secs(10))
        .action_timeout(secs(5))
        .originate_margin(secs(10))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let id = h.send(sync_originate());
    h.take("Originate");
    h.advance_to(t0 + secs(1));
    assert!(h.client.cancel(h.now, &id));
    h.drain();
    let down = heartbeat_given_up(&mut h, t0, 5..=120);
    // The Ping at 20 s; its pong deadline held until the Originate's, 60 + 10 s.
    assert_eq!(down, Some(70), "given up at the Originate's deadline");
}

/// The answer of a cancelled sync Originate that comes just after the Originate's deadline
/// (a slow server) is, for a grace period, still its late answer, as a timed-out one's is.
#[test]
fn the_answer_of_a_cancelled_sync_originate_just_after_its_deadline_is_its_late_answer() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(3600))
        .action_timeout(secs(5))
        .originate_margin(secs(10))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let id = h.send(sync_originate_ringing(30_000));
    h.take("Originate");
    h.advance_to(t0 + secs(1));
    assert!(h.client.cancel(h.now, &id));
    h.drain();
    // Its deadline at 40 s, the grace period after it until 45 s.
    assert!(h.advance_to(t0 + secs(43)).is_empty());
    h.feed(&originate_queued(id.as_str()));
    let stats = h.client.stats();
    assert_eq!(
        (stats.late_answers_dropped, stats.unmatched),
        (1, 0),
        "the answer is the cancelled Originate's late answer, not a stray response"
    );
    assert_eq!(stats.pending, 0);
}

/// A sync Originate that timed out is kept a grace period to swallow its late answer, but
/// its call can ring no longer than its deadline: the heartbeat does not wait through that
/// grace period, as it waits for one cancelled before its deadline.
#[test]
fn a_timed_out_sync_originate_does_not_hold_the_heartbeat_through_its_grace_period() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(40))
        .pong_timeout(secs(10))
        .action_timeout(secs(30))
        .originate_margin(secs(10))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let id = h.send(sync_originate_ringing(25_000));
    h.take("Originate");
    let down = heartbeat_given_up(&mut h, t0, 5..=120);
    assert!(matches!(
        h.outcome(&id),
        Err(ActionError::TimedOut {
            phase: Phase::Response,
            ..
        })
    ));
    // Timed out at 35 s (25 + 10), swallowed until 65 s; the Ping at 40 s, due by 50 s.
    assert_eq!(
        down,
        Some(50),
        "a dead link is given up a pong_timeout after its Ping"
    );
}

/// A cancelled sync Originate whose bytes the transport gives back unwritten never reached
/// the server: nothing blocks the server's session, so its silence is the heartbeat's to
/// judge as usual, not held until the deadline of a call that was never placed.
#[test]
fn a_cancelled_sync_originate_given_back_unwritten_does_not_hold_the_heartbeat() {
    let t0 = Instant::now();
    let cfg = base()
        .ping_interval(secs(20))
        .pong_timeout(secs(10))
        .originate_margin(secs(10))
        .allow_sync_originate(true)
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    h.ready();
    h.take_all();
    h.room = Some(0);
    let id = h.send(sync_originate_ringing(600_000));
    assert!(!h.client.lend_transmit().is_empty());
    assert!(h.client.cancel(h.now, &id));
    h.drain();
    assert_eq!(h.outcome(&id), &Err(ActionError::Cancelled));
    h.client.unlend_transmit();
    assert_eq!(h.client.stats().actions_withdrawn, 1);
    assert!(h.client.transmit().is_empty(), "the Originate never leaves");
    h.room = None;
    let down = heartbeat_given_up(&mut h, t0, 5..=120);
    assert!(
        !h.written
            .iter()
            .any(|(_, m)| m.action() == Some("Originate")),
        "the Originate was never written"
    );
    // Idle from 0 s, the Ping at 20 s, its pong deadline at 30 s.
    assert_eq!(
        down,
        Some(30),
        "a dead link is given up a pong_timeout after its Ping"
    );
}

// ----- per-action deadlines -------------------------------------------------------------------

fn deadline_config() -> ClientConfigBuilder {
    base()
        .ping_interval(secs(3600))
        .action_timeout(secs(30))
        .originate_margin(secs(10))
}

#[test]
fn unanswered_action_times_out_in_the_response_phase() {
    let t0 = Instant::now();
    let mut h = Harness::new(deadline_config().build().unwrap(), t0);
    h.ready();
    h.advance_to(t0 + secs(1));
    let id = h.send_with(Action::new("Ping"), SendOptions::timeout(secs(5)));
    assert_eq!(h.wait(), Some(t0 + secs(6)));
    assert!(h.advance_to(t0 + secs(6) - MS).is_empty());
    let out = h.advance_to(t0 + secs(6));
    assert_eq!(
        out,
        [Out::Completed(
            id,
            Err(ActionError::TimedOut {
                phase: Phase::Response,
                partial: None
            })
        )]
    );
    assert_eq!(h.client.stats().pending, 0);
    assert_eq!(h.client.stats().in_flight, 0);
}

#[test]
fn late_response_after_a_timeout_is_swallowed_and_never_counted_as_success() {
    let t0 = Instant::now();
    let mut h = Harness::new(deadline_config().build().unwrap(), t0);
    h.ready();
    let id = h.send_with(Action::new("Ping"), SendOptions::timeout(secs(5)));
    h.advance_to(t0 + secs(5));
    assert_eq!(h.outcomes(&id).len(), 1);
    let before = h.client.stats();
    h.advance_to(t0 + secs(6));
    assert!(h.feed(&pong(id.as_str())).is_empty(), "late answer");
    assert!(h.feed(&pong(id.as_str())).is_empty(), "and its duplicate");
    // Past the grace period the entry is gone: still nothing.
    h.advance_to(t0 + secs(60));
    assert!(h.feed(&pong(id.as_str())).is_empty());
    let stats = h.client.stats();
    assert_eq!(h.outcomes(&id).len(), 1);
    assert_eq!(stats.outcome_count(ami_proto::OutcomeKind::Success), 0);
    assert_eq!(stats.outcome_count(ami_proto::OutcomeKind::TimedOut), 1);
    assert_eq!(
        stats.latency.count(),
        before.latency.count(),
        "no latency sample"
    );
    // The first late answer retires the entry, reported once as what the server said (the
    // outcome stays TimedOut); the duplicate and the one past the grace period match
    // nothing: reported as discarded input, never as events.
    let events = h.events();
    assert!(
        matches!(
            &events[..],
            [
                StreamItem::Ready { .. },
                StreamItem::LateAnswer { id: late, .. },
                StreamItem::Discarded {
                    reason: Discard::UnmatchedResponse,
                    count: 2
                }
            ] if *late == id
        ),
        "the session start, the late answer, then the discards: {events:?}"
    );
}

#[test]
fn list_that_never_completes_times_out_with_the_items_so_far() {
    let t0 = Instant::now();
    let mut h = Harness::new(deadline_config().build().unwrap(), t0);
    h.ready();
    let id = h.send_with(
        Action::new("CoreShowChannels"),
        SendOptions::timeout(secs(10)),
    );
    h.advance_to(t0 + secs(1));
    h.feed(&list_start(id.as_str()));
    h.feed(&list_item(id.as_str(), 1));
    h.feed(&list_item(id.as_str(), 2));
    assert!(h.advance_to(t0 + secs(10) - MS).is_empty());
    let out = h.advance_to(t0 + secs(10));
    let [Out::Completed(
        done,
        Err(ActionError::TimedOut {
            phase: Phase::List,
            partial: Some(partial),
        }),
    )] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(done, &id);
    assert_eq!(partial.items().len(), 2);
    assert_eq!(partial.message().get_str("EventList"), Some("start"));
    assert!(partial.complete().is_none());
    // The rest of the list is swallowed, not leaked into the event stream.
    h.feed(&list_item(id.as_str(), 3));
    h.feed(&list_complete(id.as_str(), 3));
    assert!(
        matches!(&h.events()[..], [StreamItem::Ready { .. }]),
        "nothing but the session start reaches the stream"
    );
    assert_eq!(h.outcomes(&id).len(), 1);
}

#[test]
fn async_originate_without_originate_response_times_out_in_follow_up_phase() {
    let t0 = Instant::now();
    let mut h = Harness::new(deadline_config().build().unwrap(), t0);
    h.ready();
    let id = h.send(async_originate(20_000));
    h.advance_to(t0 + secs(2));
    assert!(h.feed(&originate_queued(id.as_str())).is_empty());
    // Deadline: response time + Timeout (20 s) + originate_margin (10 s).
    let deadline = t0 + secs(32);
    assert_eq!(h.wait(), Some(deadline));
    assert!(h.advance_to(deadline - MS).is_empty());
    let out = h.advance_to(deadline);
    let [Out::Completed(
        done,
        Err(ActionError::TimedOut {
            phase: Phase::FollowUp,
            partial: Some(partial),
        }),
    )] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(done, &id);
    assert_eq!(partial.text(), Some("Originate successfully queued"));
    assert!(partial.follow_up().is_none());
    // A late OriginateResponse does not complete it again: it says how the call that was
    // placed ended, so it goes to the stream, as to every session reading call events.
    h.advance_to(deadline + secs(1));
    assert!(h.feed(&originate_response(id.as_str(), true)).is_empty());
    let events = h.events();
    let [StreamItem::Ready { .. }, StreamItem::Event(late)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(late.event(), Some("OriginateResponse"));
    assert_eq!(late.get_str("ActionID"), Some(id.as_str()));
    assert_eq!(
        h.client
            .stats()
            .outcome_count(ami_proto::OutcomeKind::Success),
        0
    );
    assert_eq!(h.outcomes(&id).len(), 1);
}

/// Cancels an async Originate at one point of its life, then the server answers it in
/// full: where its OriginateResponse goes.
fn cancelled_originate_then_answered(cancel_after_response: bool) -> (ActionId, Vec<StreamItem>) {
    let t0 = Instant::now();
    let mut h = Harness::new(deadline_config().build().unwrap(), t0);
    h.ready();
    let id = h.send(async_originate(20_000));
    h.drain();
    h.advance_to(t0 + secs(1));
    if cancel_after_response {
        assert!(h.feed(&originate_queued(id.as_str())).is_empty());
    }
    assert!(h.client.cancel(h.now, &id));
    h.drain();
    if !cancel_after_response {
        assert!(h.feed(&originate_queued(id.as_str())).is_empty());
    }
    h.advance_to(t0 + secs(5));
    assert!(h.feed(&originate_response(id.as_str(), true)).is_empty());
    assert_eq!(h.outcomes(&id), [&Err(ActionError::Cancelled)]);
    (id, h.events())
}

#[test]
fn a_cancelled_async_originates_originate_response_reaches_the_stream_whenever_it_was_cancelled() {
    // Cancelled before or after its Response came, the answer is the same: the call was
    // placed, and the event that says how it ended is the stream's (it was dropped without
    // a count in one order and delivered in the other).
    // Cancelled before its Response, that Response is a late answer, reported first.
    for after in [false, true] {
        let (id, events) = cancelled_originate_then_answered(after);
        let e = match &events[..] {
            [StreamItem::Ready { .. }, StreamItem::Event(e)] if after => e,
            [StreamItem::Ready { .. }, StreamItem::LateAnswer { id: late, .. }, StreamItem::Event(e)]
                if !after && *late == id =>
            {
                e
            }
            _ => panic!("cancelled after its response: {after}: {events:?}"),
        };
        assert_eq!(e.event(), Some("OriginateResponse"));
        assert_eq!(e.get_str("ActionID"), Some(id.as_str()));
    }
}

#[test]
fn action_queued_while_disconnected_times_out_in_the_queued_phase() {
    let t0 = Instant::now();
    let mut h = Harness::new(deadline_config().build().unwrap(), t0);
    let id = h.send_with(Action::new("Ping"), SendOptions::timeout(secs(2)));
    assert_eq!(h.client.stats().queued, 1);
    assert_eq!(
        h.wait(),
        Some(t0 + secs(2)),
        "before the connect timeout (5 s)"
    );
    assert!(h.advance_to(t0 + secs(2) - MS).is_empty());
    assert_eq!(
        h.advance_to(t0 + secs(2)),
        [Out::Completed(
            id,
            Err(ActionError::TimedOut {
                phase: Phase::Queued,
                partial: None
            })
        )]
    );
    h.ready();
    assert!(
        h.inbox.is_empty(),
        "a timed-out queued action is never written"
    );
    assert_eq!(h.client.stats().actions_written, 0);
}

// ----- Output::Wait --------------------------------------------------------------------------

#[test]
fn wait_always_equals_the_earliest_timer_or_deadline() {
    let t0 = Instant::now();
    let cfg = base()
        .connect_timeout(secs(5))
        .banner_timeout(secs(4))
        .login_timeout(secs(10))
        .ping_interval(secs(20))
        .pong_timeout(secs(10))
        .action_timeout(secs(30))
        .build()
        .unwrap();
    let mut h = Harness::new(cfg, t0);
    assert_eq!(h.wait(), Some(t0 + secs(5)), "connect timeout");
    let a = h.send_with(Action::new("Ping"), SendOptions::timeout(secs(3)));
    assert_eq!(h.wait(), Some(t0 + secs(3)), "a's deadline");
    h.advance_to(t0 + secs(1));
    h.connected();
    assert_eq!(
        h.wait(),
        Some(t0 + secs(3)),
        "a's deadline before banner (5 s)"
    );
    h.advance_to(t0 + secs(2));
    h.feed(BANNER);
    let login = h.take("Login");
    assert_eq!(h.wait(), Some(t0 + secs(3)));
    let out = h.advance_to(t0 + secs(3));
    assert!(
        matches!(&out[..], [Out::Completed(i, Err(ActionError::TimedOut { phase: Phase::Queued, .. }))] if *i == a)
    );
    assert_eq!(h.wait(), Some(t0 + secs(12)), "login timeout");
    h.advance_to(t0 + secs(4));
    h.feed(&scripted::login_ok(id_of(&login)));
    assert!(h.client.is_ready());
    assert_eq!(h.wait(), Some(t0 + secs(24)), "idle timer");
    h.advance_to(t0 + secs(5));
    let b = h.send_with(Action::new("Ping"), SendOptions::timeout(secs(7)));
    assert_eq!(h.wait(), Some(t0 + secs(12)), "b's deadline");
    h.advance_to(t0 + secs(6));
    let c = h.send(Action::new("Ping"));
    assert_eq!(h.wait(), Some(t0 + secs(12)));
    h.advance_to(t0 + secs(7));
    h.feed(&pong(b.as_str()));
    assert_eq!(
        h.wait(),
        Some(t0 + secs(27)),
        "idle re-armed; c due at 36 s"
    );
    h.advance_to(t0 + secs(8));
    assert!(h.client.cancel(h.now, &c));
    h.drain();
    assert_eq!(h.wait(), Some(t0 + secs(27)), "c's grace ends at 38 s");
    h.take_all();
    h.advance_to(t0 + secs(27));
    let ping = h.take("Ping");
    assert_eq!(h.wait(), Some(t0 + secs(37)), "pong deadline");
    h.advance_to(t0 + secs(30));
    h.feed(&pong(id_of(&ping)));
    assert_eq!(h.wait(), Some(t0 + secs(38)), "c's grace period");
    h.advance_to(t0 + secs(38));
    assert_eq!(h.wait(), Some(t0 + secs(50)), "idle timer");
    h.advance_to(t0 + secs(40));
    let out = h.eof();
    let retry = close_then_disconnected(&out, DisconnectReason::Eof);
    assert_eq!(h.wait(), Some(retry), "reconnect");
    assert_eq!(h.advance_to(retry), [Out::Connect]);
    assert_eq!(h.wait(), Some(retry + secs(5)));
    h.client.close(h.now);
    h.drain();
    assert_eq!(h.wait(), None, "closed: nothing to wait for");
}

// ----- the documented defaults ------------------------------------------------------------

/// README "Reconnects": with the builder's defaults, retries back off with full jitter from
/// 100 ms to 30 s, and after 10 failures in a row the breaker waits 60 s before each try.
#[test]
fn default_reconnects_back_off_from_100ms_to_30s_and_the_breaker_opens_after_10_failures_for_60s() {
    for seed in 0..8 {
        let t0 = Instant::now();
        let cfg = ClientConfig::builder("admin", "s3cr3t-Pa55")
            .seed(seed)
            .build()
            .unwrap();
        let mut h = Harness::new(cfg, t0);
        let mut delays = Vec::new();
        for n in 1..=13u32 {
            let out = h.input(Input::ConnectFailed(ConnectFailure::Refused));
            let retry = close_then_disconnected(&out, REFUSED);
            let delay = retry - h.now;
            if n < 10 {
                let ceiling = (Duration::from_millis(100) * 2u32.pow(n - 1)).min(secs(30));
                assert!(delay <= ceiling, "seed {seed}, failure {n}: {delay:?}");
                assert_eq!(h.client.stats().breaker_opened, 0, "failure {n}");
            } else {
                // The breaker's wait: the cooldown plus at most one base of jitter.
                assert!(
                    (secs(60)..=secs(60) + Duration::from_millis(100)).contains(&delay),
                    "seed {seed}, failure {n}: {delay:?}"
                );
                assert_eq!(h.client.stats().breaker_opened, 1, "failure {n}");
            }
            delays.push(delay);
            assert_eq!(h.advance_to(retry), [Out::Connect]);
        }
        // Full jitter, not a fixed schedule: the ninth ceiling (25.6 s) is not always hit.
        assert!(
            delays[..9].iter().any(|d| *d > Duration::ZERO),
            "{delays:?}"
        );
    }
}

/// README "Reconnects": failures are forgotten once a session has stayed up 30 s (the
/// default `stable_after`), so the retry after it is within the 100 ms base again.
#[test]
fn by_default_a_session_up_30s_forgets_the_failures_before_it() {
    let delay_after = |seed: u64, up: Duration| {
        let t0 = Instant::now();
        let cfg = ClientConfig::builder("admin", "s3cr3t-Pa55")
            .seed(seed)
            .ping_interval(secs(3600))
            .build()
            .unwrap();
        let mut h = Harness::new(cfg, t0);
        for _ in 0..8 {
            let out = h.input(Input::ConnectFailed(ConnectFailure::Refused));
            let retry = close_then_disconnected(&out, REFUSED);
            h.advance_to(retry);
        }
        h.ready();
        let ready_at = h.now;
        h.advance_to(ready_at + up);
        let out = h.eof();
        close_then_disconnected(&out, DisconnectReason::Eof) - h.now
    };
    let mut short = Vec::new();
    for seed in 0..16 {
        let stable = delay_after(seed, secs(30));
        assert!(
            stable <= Duration::from_millis(100),
            "seed {seed}: {stable:?}"
        );
        short.push(delay_after(seed, secs(30) - MS));
    }
    // Control: a millisecond short of 30 s the ninth failure's ceiling (25.6 s) applies.
    assert!(
        short.iter().any(|d| *d > Duration::from_millis(100)),
        "{short:?}"
    );
}

/// README `ami action --timeout`: "the answer's deadline, 30 s": the client's default
/// action deadline, which an action sent without options gets.
#[test]
fn an_action_sent_without_options_times_out_after_the_default_30s() {
    let t0 = Instant::now();
    let cfg = ClientConfig::builder("admin", "s3cr3t-Pa55")
        .ping_interval(secs(3600))
        .build()
        .unwrap();
    assert_eq!(cfg.action_timeout(), secs(30));
    let mut h = Harness::new(cfg, t0);
    h.ready();
    let sent_at = h.now;
    let id = h.send(Action::new("Ping"));
    assert!(h.advance_to(sent_at + secs(30) - MS).is_empty());
    assert_eq!(
        h.advance_to(sent_at + secs(30)),
        [Out::Completed(
            id,
            Err(ActionError::TimedOut {
                phase: Phase::Response,
                partial: None
            })
        )]
    );
}
