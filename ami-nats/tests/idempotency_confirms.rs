//! Confirms of idempotency claims: a request whose claim another request took over before
//! its confirm claims the key again instead of answering `duplicate` (the taker may send
//! nothing), and a confirm whose answer is lost in a NATS stall is found out, while the
//! request's deadline allows, instead of answering `not_sent` with a running value left in
//! the key. Both found by a review of the two-phase claims (351537a), where each test that
//! runs here failed; the ignored one is the residual case the `idempotency` module doc
//! describes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};
use support::*;

/// "Of the holder and the taker exactly one sends" (idempotency.rs module doc) is "at most
/// one": a taker may send nothing. Bridge X (NATS slow: its writes land 1.5 s after they
/// are sent) claims a key for request Q; its claiming value lands and its confirm is on
/// its way. Request P with the same key reaches bridge Y, takes the claiming value over,
/// then finds its deadline passed (here `timeout_ms` 0, deterministic; NATS slow at Y, or
/// Y's own confirm failing, do the same): P is answered `not_sent` and frees its claim.
/// Q's confirm then fails on the changed revision and Q is answered `duplicate`, "a
/// request with this idempotency key is running or ran", though at that moment the only
/// other request was already answered `not_sent`, the key is empty and no call was
/// placed, or ever will be unless someone retries P. A dialer that takes `duplicate` as
/// final (it must: it means the call is placed or being placed) never places the call.
#[test]
fn a_holder_whose_claim_was_taken_over_by_a_request_that_then_sent_nothing_is_not_a_duplicate() {
    let Some(nats) = Nats::start() else { return };
    let (proxy, a, b, x, y) = slow_and_direct_bridges(&nats);
    let url = nats.url();
    let key = "taker-sends-nothing";
    // Under the bridge's 2 s JetStream timeout: X's create and confirm are answered.
    proxy.hold_client_bytes(Duration::from_millis(1500));
    let q = request_in_background(
        url.clone(),
        None,
        "ami.pbx1.action",
        originate(key, 10_000),
        Duration::from_secs(20),
    );
    let p = block(async {
        let kv = idempotency_kv(&url).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        // Q's claiming value landed: its confirm lands about 1.5 s from now.
        loop {
            if let Ok(Some(_)) = kv.get(key).await {
                break;
            }
            assert!(Instant::now() < deadline, "Q's claim never landed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        request(&url, "ami.pbx2.action", &originate(key, 0)).await
    });
    let q = q.join().unwrap().expect("Q answered");
    proxy.hold_client_bytes(Duration::ZERO);
    let calls = (a.stats().calls_started, b.stats().calls_started);
    let left = stored_claim_text(&url, key);
    x.shutdown();
    y.shutdown();
    eprintln!("Q {q}\nP {p}\nkey holds {left:?}, calls {calls:?}");
    assert_eq!(p["outcome"], "not_sent", "P: {p}");
    assert_ne!(
        q["outcome"], "duplicate",
        "Q was told a request with its key is running or ran, though none ran, none runs and the key is free (P: {p})"
    );
    // Since the fix P, with no time left, claims nothing, and Q places the one call.
    assert_eq!(q["outcome"], "success", "Q: {q}");
    assert_eq!(calls, (1, 0), "one call, Q's");
    assert!(
        left.as_deref()
            .is_some_and(|v| v.contains(r#""outcome":"success""#)),
        "the key holds Q's reply: {left:?}"
    );
}

/// The take-over of a [`a_holder_whose_claim_was_taken_over_by_a_request_that_then_sent_nothing_is_not_a_duplicate`]
/// made deterministic: a client of its own plays the request that takes Q's claiming value
/// over (a compare-and-set on its revision, while Q's confirm is on its way) and then sends
/// nothing: it frees its claim (a `not_sent`: deadline passed, its own confirm failed) or
/// leaves its claiming value there (its bridge crashed, or a stop gave up on it). Q's
/// confirm fails on the changed revision: nothing was sent under Q's claim, so Q claims
/// the key again (patiently, then taking the orphaned claiming value over) and places the
/// one call, instead of answering `duplicate` ("running or ran") for nothing.
#[test]
fn a_holder_whose_claim_was_taken_over_by_a_taker_that_sent_nothing_claims_again_and_sends_once() {
    let Some(nats) = Nats::start() else { return };
    let (proxy, a, x) = slow_bridge(&nats, Duration::from_secs(60));
    let url = nats.url();
    for (key, frees) in [("taker-frees", true), ("taker-crashes", false)] {
        // Under the bridge's 2 s JetStream timeout: each of X's writes is answered, 1 s
        // after it was sent.
        proxy.hold_client_bytes(Duration::from_millis(1000));
        let q = request_in_background(
            url.clone(),
            None,
            "ami.pbx1.action",
            originate(key, 30_000),
            Duration::from_secs(40),
        );
        block(async {
            let kv = idempotency_kv(&url).await;
            let deadline = Instant::now() + Duration::from_secs(10);
            // Q's claiming value landed: its confirm lands about 1 s from now.
            let entry = loop {
                if let Ok(Some(e)) = kv.entry(key).await {
                    break e;
                }
                assert!(Instant::now() < deadline, "Q's claim never landed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            let seen = String::from_utf8(entry.value.to_vec()).unwrap();
            assert!(seen.contains(r#""phase":"claiming""#), "{seen}");
            let taker = r#"{"type":"pending","owner":"00000000feedbeef-1","phase":"claiming"}"#;
            let revision = kv
                .update(key, taker.into(), entry.revision)
                .await
                .expect("taken over before Q's confirm landed");
            if frees {
                kv.delete_expect_revision(key, Some(revision))
                    .await
                    .unwrap();
            }
        });
        let q = q.join().unwrap().expect("Q answered");
        proxy.hold_client_bytes(Duration::ZERO);
        let left = stored_claim_text(&url, key);
        eprintln!("{key}: Q {q}\nkey holds {left:?}");
        assert_eq!(q["outcome"], "success", "{key}: Q: {q}");
        assert!(
            left.as_deref()
                .is_some_and(|v| v.contains(r#""outcome":"success""#)),
            "{key}: the key holds Q's reply: {left:?}"
        );
    }
    let calls = a.stats().calls_started;
    x.shutdown();
    assert_eq!(calls, 2, "one call per key");
}

/// Sends `body` to `pbx1` (bridge X, behind `proxy`) in the background, timed so that a
/// NATS stall catches its confirm: the create is sent at once and held 1 s (answered); what
/// X sends from 0.5 s on (its confirm, at about 1 s) is held 3 s, over the 2 s JetStream
/// timeout. Returns when the request was asked, and its reply to come.
fn ask_into_a_stall_on_the_confirm(
    proxy: &SlowProxy,
    url: &str,
    body: &str,
) -> (Instant, std::thread::JoinHandle<Option<serde_json::Value>>) {
    proxy.hold_client_bytes(Duration::from_millis(1000));
    let asked = Instant::now();
    let first = request_in_background(
        url.to_string(),
        None,
        "ami.pbx1.action",
        body.to_string(),
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_millis(500).saturating_sub(asked.elapsed()));
    proxy.hold_client_bytes(Duration::from_secs(3));
    (asked, first)
}

/// A NATS stall that catches the confirm (held 3 s, over the 2 s JetStream timeout), shorter
/// than the request's deadline: the confirm's outcome is unknown for a while, but nothing
/// was sent yet, so the request finds out instead of answering `not_sent` at once: it reads
/// the key until NATS answers, finds its running value (the confirm landed) and places the
/// call. The retry on another bridge is then the `duplicate` of a real call, with its
/// reply. (At 351537a the request was answered `not_sent` at the first timeout, its claim
/// freed later if NATS let it.)
#[test]
fn a_stall_that_catches_the_confirm_is_outlasted_by_the_request_which_sends_once() {
    let Some(nats) = Nats::start() else { return };
    let (proxy, a, b, x, y) = slow_and_direct_bridges(&nats);
    let url = nats.url();
    let key = "stall-outlasted";
    let body = originate(key, 10_000);
    // The confirm times out at about 3 s; the stall ends at 3.4 s (what is held still goes
    // on in order), well within the request's 10 s.
    let (asked, first) = ask_into_a_stall_on_the_confirm(&proxy, &url, &body);
    std::thread::sleep(Duration::from_millis(3400).saturating_sub(asked.elapsed()));
    proxy.hold_client_bytes(Duration::ZERO);
    let first = first.join().unwrap().expect("the first request answered");
    let answered_at = asked.elapsed();
    let retry = block(request(&url, "ami.pbx2.action", &body));
    let calls = (a.stats().calls_started, b.stats().calls_started);
    x.shutdown();
    y.shutdown();
    eprintln!("first {first} (at {answered_at:?})\nretry {retry}");
    assert_eq!(first["outcome"], "success", "{first}");
    assert!(
        answered_at > Duration::from_secs(3),
        "the stall caught the confirm ({answered_at:?})"
    );
    assert_eq!(calls, (1, 0), "one call, the first request's");
    assert_eq!(retry["outcome"], "duplicate", "{retry}");
    assert_eq!(retry["original"]["outcome"], "success", "{retry}");
}

/// The "narrow case left" of the module doc is as wide as the case 351537a fixed: the
/// scenario of `a_not_sent_answered_just_before_a_clean_stop_leaves_the_key_free_for_the_retry`
/// (a rolling restart during a NATS stall) with the stall beginning one KV round trip later,
/// after the claim's create was answered, so that it catches the confirm instead. The
/// confirm gets no answer in 2 s: the request is answered `not_sent` ("nothing was sent:
/// retry"), its free left to a follow-up; the stop gives up on the follow-up, and the
/// confirm lands afterwards: a running value nobody frees. The retry the `not_sent`
/// invited, on the next bridge, is answered `duplicate` for the whole window (10 min),
/// though no call was ever placed. Documented at 351537a (not an undocumented defect);
/// kept to show how wide it is: a stall of one round trip's length starting at a random
/// moment is as likely to catch the confirm as the create.
///
/// Since the fix a confirm without an answer is found out within the request's deadline
/// (see the test above), but here the stop gives up on the request first (at about 5.4 s,
/// its flush after the stop began at 3.4 s), while the request still waits to learn
/// whether its confirm landed; the follow-up that would free the claim is given up too.
/// The residual case of the `idempotency` module doc: ignored, kept to show it.
#[test]
#[ignore = "residual (idempotency module doc): a stop that gives up on a request while its confirm's outcome is unknown (NATS stalled longer than the stop's flush) leaves a running value nobody frees; a retry on another bridge is duplicate until the window ends"]
fn a_stop_in_a_stall_that_catches_the_confirm_leaves_the_retry_a_duplicate() {
    let Some(nats) = Nats::start() else { return };
    let (proxy, a, x) = slow_bridge(&nats, Duration::from_secs(60));
    let b = sim();
    let url = nats.url();
    let key = "stall-on-confirm";
    let body = originate(key, 10_000);
    let (asked, first) = ask_into_a_stall_on_the_confirm(&proxy, &url, &body);
    // The confirm timed out at about 3 s: the not_sent reply is on its way (held like all
    // X sends), and the follow-up's delete, on the claiming revision, is held behind the
    // confirm (it will be refused). The rolling restart: the stop gives the follow-up its
    // flush (2 s), then gives up on it before the delete is answered (about 6 s).
    std::thread::sleep(Duration::from_millis(3400).saturating_sub(asked.elapsed()));
    x.shutdown();
    proxy.hold_client_bytes(Duration::ZERO);
    let first = first.join().unwrap().expect("the first request answered");
    let answered_at = asked.elapsed();
    assert_eq!(first["outcome"], "not_sent", "{first}");
    assert_eq!(a.stats().calls_started, 0, "nothing ran");
    // The held confirm (and the follow-up's refused delete) have landed.
    std::thread::sleep(Duration::from_millis(1500));
    let left = stored_claim_text(&url, key);
    let y = direct_bridge(&url, &b);
    let retry = block(request(&url, "ami.pbx2.action", &body));
    y.shutdown();
    eprintln!("first {first} (at {answered_at:?})\nkey holds {left:?}\nretry {retry}");
    assert_eq!(
        retry["outcome"], "success",
        "the retry a not_sent invited was refused, though no call was ever placed (calls: {} + {}): {retry}; the key held {left:?}",
        a.stats().calls_started,
        b.stats().calls_started
    );
}
