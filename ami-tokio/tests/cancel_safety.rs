//! Cancellation safety of the async API: futures of `Handle` and `FleetHandle` dropped at
//! an await point, as `tokio::select!`, `tokio::time::timeout` or `now_or_never` do. What a
//! caller gives up never takes effect unsent, and what the server said is never lost
//! unsaid.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

use ami_proto::fleet::FleetConfig;
use ami_proto::{Action, ClientConfig, OutcomeKind, SendError, Status, StreamItem};
use ami_sim::tcp::TcpFront;
use ami_sim::{ActionMatch, SimConfig};
use ami_tokio::{AmiError, Events};
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

fn front() -> TcpFront {
    TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap()
}

/// Polls `f` once with a no-op waker (what `now_or_never` does), then drops it.
fn poll_once_and_drop<F: Future>(f: F) -> Poll<F::Output> {
    let mut f = Box::pin(f);
    let mut cx = Context::from_waker(Waker::noop());
    f.as_mut().poll(&mut cx)
}

/// Events until `pred` matches one, or `None` after `within`.
async fn wait_event(
    events: &mut Events,
    within: Duration,
    mut pred: impl FnMut(&StreamItem) -> bool,
) -> Option<StreamItem> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(item)) if pred(&item) => return Some(item),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

fn is_user_event(item: &StreamItem, name: &str) -> bool {
    matches!(item, StreamItem::Event(e)
        if e.event() == Some("UserEvent") && e.get_str("UserEvent") == Some(name))
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// `add_filter` dropped before it completed (here: before the session was even Ready, so
/// the Filter action was still queued and is withdrawn, completing `Cancelled`) installs
/// nothing: one not yet written never goes out, at this login or a later one.
#[tokio::test]
async fn an_add_filter_given_up_before_it_went_out_is_not_installed_at_login() {
    let mut srv = front();
    let cfg = ClientConfig::builder("admin", "amp111")
        .seed(1)
        .build()
        .unwrap();
    let (ami, mut events) = ami_tokio::spawn(cfg, srv.local_addr());
    // Current-thread runtime: the driver has not run yet, the session is not Ready.
    assert!(!matches!(ami.status().get(), Status::Ready { .. }));
    // A filter that lets nothing through, given up at once (select!/timeout/now_or_never).
    let polled = poll_once_and_drop(ami.add_filter("Event: NothingMatchesThis"));
    assert!(polled.is_pending());
    let cancelled = ami.stats().actions_by_outcome.get(OutcomeKind::Cancelled);
    assert_eq!(cancelled, 1, "the Filter completed Cancelled, unsent");

    tokio::time::timeout(Duration::from_secs(10), ami.wait_ready())
        .await
        .expect("ready within 10 s")
        .unwrap();
    ami.send(Action::new("UserEvent").field("UserEvent", "Probe"))
        .await
        .unwrap();
    let got = wait_event(&mut events, Duration::from_secs(3), |i| {
        is_user_event(i, "Probe")
    })
    .await;
    let written = ami.stats().actions_written;
    srv.shutdown();
    assert!(
        got.is_some(),
        "the UserEvent never reached the stream: the cancelled filter was installed at login \
         (stats: cancelled {cancelled}, actions written {written})"
    );
}

/// `set_event_mask` dropped while its action was still queued (never written: withdrawn,
/// `Cancelled`) leaves the session's mask as it was: a later async Originate is checked
/// against the mask the server has (refused `FollowUpMasked`, since its OriginateResponse
/// could never come), not the one it never got.
#[tokio::test]
async fn a_set_event_mask_given_up_before_it_went_out_leaves_the_mask_as_it_was() {
    let mut srv = front();
    // Pings answered 500 ms late: with a pipeline of one, whatever follows stays queued.
    srv.with_faults(|f| {
        f.delay_replies(ActionMatch::named("Ping"), Duration::from_millis(500));
    });
    let cfg = ClientConfig::builder("admin", "amp111")
        .seed(2)
        .events("off")
        .pipeline_depth(1)
        .build()
        .unwrap();
    let (ami, _events) = ami_tokio::spawn(cfg, srv.local_addr());
    tokio::time::timeout(Duration::from_secs(10), ami.wait_ready())
        .await
        .expect("ready within 10 s")
        .unwrap();
    let slow = {
        let ami = ami.clone();
        tokio::spawn(async move { ami.send(Action::new("Ping")).await })
    };
    until("the Ping written", || ami.stats().actions_written >= 1).await;
    // Queued behind the Ping, then given up (a select! with a timer, a shutdown signal...).
    let polled = poll_once_and_drop(ami.set_event_mask("call"));
    assert!(polled.is_pending());
    assert_eq!(
        ami.stats().actions_by_outcome.get(OutcomeKind::Cancelled),
        1
    );
    slow.await.unwrap().unwrap();
    let written = ami.stats().actions_written;
    assert_eq!(written, 1, "the Events action never went out");

    // The server's mask is still "off": an async Originate can never get its
    // OriginateResponse, and the core refuses such an Originate with FollowUpMasked.
    let originate = Action::new("Originate")
        .field("Channel", "Local/echo@ami-test")
        .field("Application", "Wait")
        .field("Data", "1")
        .field("Async", "true");
    let r = tokio::time::timeout(Duration::from_secs(5), ami.send(originate)).await;
    srv.shutdown();
    assert!(
        matches!(r, Ok(Err(AmiError::Send(SendError::FollowUpMasked { .. })))),
        "the cancelled mask change took effect in the client only: the async Originate was \
         accepted and its OriginateResponse never came within 5 s: {r:?}"
    );
}

fn async_originate() -> Action {
    Action::new("Originate")
        .field("Channel", "Local/echo@ami-test")
        .field("Application", "Wait")
        .field("Data", "1")
        .field("Async", "true")
}

/// `Handle::send`'s doc: dropping the future cancels the action, "an Originate's call is
/// still placed; its `OriginateResponse` then arrives in the event stream". That holds for
/// a future dropped after the driver filled its slot too (the outcome was in, the task not
/// yet polled: a `select!` that picked its other ready branch, a `timeout` whose timer won
/// the same turn): the OriginateResponse the outcome held goes to the stream.
#[tokio::test]
async fn the_originate_response_of_a_send_dropped_after_its_outcome_came_reaches_the_stream() {
    let mut srv = front();
    let cfg = ClientConfig::builder("admin", "amp111")
        .seed(3)
        .build()
        .unwrap();
    let (ami, mut events) = ami_tokio::spawn(cfg, srv.local_addr());
    tokio::time::timeout(Duration::from_secs(10), ami.wait_ready())
        .await
        .expect("ready within 10 s")
        .unwrap();
    let mut send = Box::pin(ami.send(async_originate()));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(send.as_mut().poll(&mut cx).is_pending());
    // The driver completes it (response and OriginateResponse) and fills the slot; the
    // caller's task is woken but, like a select! that took another branch, drops it.
    until("the Originate completed", || {
        ami.stats().actions_by_outcome.get(OutcomeKind::Success) == 1
    })
    .await;
    drop(send);
    let seen = wait_event(
        &mut events,
        Duration::from_secs(3),
        |i| matches!(i, StreamItem::Event(e) if e.event() == Some("OriginateResponse")),
    )
    .await;
    let stats = ami.stats();
    srv.shutdown();
    assert!(
        seen.is_some(),
        "the OriginateResponse of a dropped send reached neither its caller nor the event \
         stream (cancelled: {}, success: {}, unmatched: {}, discarded: {})",
        stats.actions_by_outcome.get(OutcomeKind::Cancelled),
        stats.actions_by_outcome.get(OutcomeKind::Success),
        stats.unmatched,
        stats.discarded
    );
}

/// The same Originate dropped while still waiting (before its response) puts its
/// OriginateResponse in the stream, as documented.
#[tokio::test]
async fn the_originate_response_of_a_send_dropped_before_its_answer_reaches_the_stream() {
    let mut srv = front();
    srv.with_faults(|f| {
        f.delay_replies(ActionMatch::named("Originate"), Duration::from_millis(300));
    });
    let cfg = ClientConfig::builder("admin", "amp111")
        .seed(3)
        .build()
        .unwrap();
    let (ami, mut events) = ami_tokio::spawn(cfg, srv.local_addr());
    tokio::time::timeout(Duration::from_secs(10), ami.wait_ready())
        .await
        .expect("ready within 10 s")
        .unwrap();
    let r = tokio::time::timeout(Duration::from_millis(100), ami.send(async_originate())).await;
    assert!(r.is_err(), "{r:?}");
    let seen = wait_event(
        &mut events,
        Duration::from_secs(5),
        |i| matches!(i, StreamItem::Event(e) if e.event() == Some("OriginateResponse")),
    )
    .await;
    srv.shutdown();
    assert!(seen.is_some());
}

/// `StatusWatch::changed` "waits for a status newer than the last one this watch returned
/// (or than the one current when it was created)". A `wait_for` given up (wrapped in a
/// timeout) returned nothing, so it marks nothing as returned: the next `changed()` returns
/// the status the watch has not returned yet.
#[tokio::test]
async fn a_wait_for_given_up_leaves_the_next_status_to_changed() {
    let mut srv = front();
    let cfg = ClientConfig::builder("admin", "amp111")
        .seed(4)
        .build()
        .unwrap();
    let (ami, _events) = ami_tokio::spawn(cfg, srv.local_addr());
    let mut watch = ami.status();
    let created_with = watch.get();
    assert!(!matches!(created_with, Status::Ready { .. }));
    tokio::time::timeout(Duration::from_secs(10), ami.wait_ready())
        .await
        .expect("ready within 10 s")
        .unwrap();
    // The watch has returned nothing yet. A wait for Closed, given up at once.
    let polled = poll_once_and_drop(watch.wait_for(|s| matches!(s, Status::Closed { .. })));
    assert!(polled.is_pending());
    // Ready is newer than the status the watch was created with, and was never returned.
    let next = tokio::time::timeout(Duration::from_secs(2), watch.changed()).await;
    srv.shutdown();
    assert!(
        matches!(next, Ok(Some(Status::Ready { .. }))),
        "changed() skipped Ready (created with {created_with:?}): {next:?}"
    );
}

/// `send_all` over two servers, one answering at once and one 3 s late, given up once the
/// fast one's async Originate has completed (response and OriginateResponse) and the call
/// polled once more (a half-collected `send_all`): the fast server's OriginateResponse,
/// which came, reaches the merged stream, as an Originate cancelled before its answer does.
/// `slow_first`: the slow server holds the first slot (the order `send_all` waits in).
async fn a_given_up_send_all_puts_the_answered_servers_originate_response_in_the_stream(
    slow_first: bool,
) {
    let (mut fast, mut slow) = (front(), front());
    slow.with_faults(|f| {
        f.delay_replies(ActionMatch::named("Originate"), Duration::from_secs(3));
    });
    let (fleet, mut events) = ami_tokio::fleet::spawn_fleet_sharded(FleetConfig::default(), 1);
    let order = if slow_first {
        [("slow", &slow), ("fast", &fast)]
    } else {
        [("fast", &fast), ("slow", &slow)]
    };
    for (name, srv) in order {
        let cfg = ClientConfig::builder("admin", "amp111").build().unwrap();
        fleet.add(name, cfg, srv.local_addr()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), fleet.wait_ready(name))
            .await
            .unwrap()
            .unwrap();
    }
    let fast_done = || {
        fleet
            .stats()
            .servers
            .iter()
            .find(|s| s.name.as_str() == "fast")
            .map_or(0, |s| s.client.actions_by_outcome.get(OutcomeKind::Success))
    };
    {
        let all = fleet.send_all(async_originate());
        tokio::pin!(all);
        let mut waited = 0;
        while fast_done() == 0 && waited < 300 {
            tokio::select! {
                r = &mut all => panic!("send_all ended before the slow server answered: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(10)) => waited += 1,
            }
        }
        assert_eq!(fast_done(), 1, "the fast server's Originate completed");
        tokio::select! {
            r = &mut all => panic!("send_all ended before the slow server answered: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    let mut from_fast = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(i)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if let StreamItem::Event(e) = &i.item {
            if e.event() == Some("OriginateResponse") && i.server.as_str() == "fast" {
                from_fast = Some(i);
                break;
            }
        }
    }
    fast.shutdown();
    slow.shutdown();
    assert!(
        from_fast.is_some(),
        "the fast server's OriginateResponse reached neither the caller (send_all dropped) \
         nor the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_all_given_up_while_its_first_server_is_slow_puts_the_others_originate_responses_in_the_stream(
) {
    a_given_up_send_all_puts_the_answered_servers_originate_response_in_the_stream(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_all_given_up_after_its_first_server_answered_puts_that_originate_response_in_the_stream(
) {
    a_given_up_send_all_puts_the_answered_servers_originate_response_in_the_stream(false).await;
}
