//! Every abandoned claim of a process is remembered, several requests with one key among
//! them: a retry on the same bridge takes over whichever of their writes landed last.
//! Found by a second review of the two-phase claims (failed at 1ff84f3, where the claims
//! were remembered one per key).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};
use support::*;

/// Two requests with one key abandoned in one stall: the first one's claim, which may hold
/// the key (a running value of a confirm that landed late), is still recognised as
/// abandoned after the second was, and the retry its `not_sent` invited, on this very
/// bridge, takes it over and runs (when the claims were remembered one per key, the second
/// replaced the first and the retry was answered `duplicate` though nothing ran):
///
/// 1. A (timeout 3 s) claims the key on X (create answered at ~1 s), its confirm is caught
///    by a NATS stall (X's bytes held 25 s from 0.5 s on): cut by A's deadline at 3 s,
///    `Confirmed::Failed`, A abandoned (map: key -> A) and answered `not_sent`. A's
///    follow-up free tries 6 times, each timed out, and gives up at ~21 s.
/// 2. B, same key, timeout 1 s, reaches X at ~4 s: its create is cut by its deadline,
///    `Claimed::Late(Some(B))`, B abandoned: map: key -> B (A's entry gone). B's
///    follow-up gives up too (or, had NATS answered, found A's value "not this one's to
///    free": Done, B's entry removed): either way A's is gone.
/// 3. The stall ends (~26 s): A's held confirm lands, the key holds A's running value;
///    nothing was ever sent under it.
/// 4. C, the retry, on X: `create` AlreadyExists, the holder is A's running value, not
///    abandoned as far as the map knows: `Claimed::Taken`, `duplicate` ("running or ran"),
///    no call placed, for the whole window. Without step 2 C takes A's claim over and runs.
#[test]
fn a_second_abandoned_request_with_a_key_does_not_make_the_first_ones_claim_a_duplicate() {
    let Some(nats) = Nats::start() else { return };
    let (proxy, a, x) = slow_bridge(&nats, Duration::from_secs(120));
    let url = nats.url();
    let key = "two-abandoned";
    proxy.hold_client_bytes(Duration::from_millis(1000));
    let asked = Instant::now();
    let first = request_in_background(
        url.clone(),
        None,
        "ami.pbx1.action",
        originate(key, 3_000),
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(500).saturating_sub(asked.elapsed()));
    proxy.hold_client_bytes(Duration::from_secs(25));
    std::thread::sleep(Duration::from_millis(4000).saturating_sub(asked.elapsed()));
    let second = request_in_background(
        url.clone(),
        None,
        "ami.pbx1.action",
        originate(key, 1_000),
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(5000).saturating_sub(asked.elapsed()));
    proxy.hold_client_bytes(Duration::ZERO);
    let first = first.join().unwrap().expect("A answered");
    let second = second.join().unwrap().expect("B answered");
    // What was held has landed (A's confirm, the refused deletes and create).
    std::thread::sleep(Duration::from_millis(1000));
    let left = stored_claim_text(&url, key);
    let retry = block(request(&url, "ami.pbx1.action", &originate(key, 5_000)));
    let calls = a.stats().calls_started;
    x.shutdown();
    eprintln!("A {first}\nB {second}\nkey held {left:?}\nretry {retry}\ncalls {calls}");
    assert_eq!(first["outcome"], "not_sent", "A: {first}");
    assert_eq!(second["outcome"], "not_sent", "B: {second}");
    assert_eq!(
        retry["outcome"], "success",
        "the retry on the bridge that abandoned A's claim was refused as a duplicate, though nothing ran (calls {calls}); the key held {left:?}"
    );
    assert_eq!(calls, 1, "one call, the retry's");
}
