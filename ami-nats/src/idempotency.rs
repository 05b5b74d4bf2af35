//! Idempotency keys in the JetStream KV bucket `ami_idempotency`.
//!
//! A request with a key first *claims* it: it creates the key with a pending value naming
//! this request alone (`{"type":"pending","owner":"<instance>-<n>"}`), so that this process
//! can always tell its own claim from another request's. Then:
//!
//! - while its action runs, the pending value is written again (a compare-and-set on its
//!   revision) every third of the bucket's `max_age`, the idempotency window: the bucket
//!   expires entries by age, and a claim left alone for a window would vanish under an
//!   action still running (a long Originate), letting a retry place a second call;
//! - when the action ran, or may have run, the reply is stored in its place, and a retry
//!   is answered `duplicate` for the window;
//! - when it was answered `not_sent` (nothing reached Asterisk), the claim is *freed*
//!   (deleted, only while it still holds this request's own value), so the retry the answer
//!   invites runs.
//!
//! A claim whose `create` got no answer in time (NATS slow) may still land afterwards: the
//! request is answered `not_sent` and its claim is *abandoned*: remembered here, freed as
//! soon as NATS answers (a delete on the revision it landed at; or, when it has not landed,
//! a delete marker on the key's current revision, so that a late `create`, which expects
//! that revision, fails), and meanwhile a retry reaching this process takes an abandoned
//! claim over instead of being refused as a duplicate. A claim is never freed once its
//! action may have reached Asterisk: only `not_sent` outcomes free, and only their own value.

use crate::throttle::LogThrottle;
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The value an idempotency key held while its request ran, as bridges before the owned
/// claims wrote it (still read as pending).
const LEGACY_PENDING: &[u8] = b"pending";
/// How every pending value this bridge writes begins. JSON, so that a bridge from before
/// the owned claims, which quotes whatever is not `pending` as the original reply, still
/// answers with valid JSON during a rolling upgrade.
const PENDING_PREFIX: &[u8] = br#"{"type":"pending""#;

/// Whether `value` is a claim of a request that has not finished (no reply stored yet).
pub(crate) fn is_pending(value: &[u8]) -> bool {
    value == LEGACY_PENDING || value.starts_with(PENDING_PREFIX)
}

/// Most abandoned claims remembered at once (each is one request answered `not_sent`
/// while NATS was slow); the oldest make room.
const ABANDONED_MAX: usize = 4096;
/// Attempts to free a claim, or store a reply, after the requester was answered.
const FOLLOW_UP_ATTEMPTS: u32 = 6;
/// The first pause between those attempts (doubling, up to [`FOLLOW_UP_MAX_PAUSE`]).
const FOLLOW_UP_PAUSE: Duration = Duration::from_millis(250);
const FOLLOW_UP_MAX_PAUSE: Duration = Duration::from_secs(2);
/// Follow-ups (a claim to free or a reply to store after the requester was answered) run
/// at most this many at once: while NATS is down each takes seconds, and requests keep
/// coming. Past it one is skipped, logged rate-limited: its key stays as it is until the
/// window ends (a retry reaching this process still takes an abandoned claim over).
const FOLLOW_UPS_MAX: usize = 1024;
/// Claims (create, take-over) tried at most this many times when the key changes under
/// them (deleted between a failed create and the read of what holds it).
const CLAIM_ATTEMPTS: usize = 3;

/// The idempotency bucket, and the claims this process abandoned.
pub(crate) struct Keys {
    kv: Store,
    /// The bucket's `max_age` (the idempotency window as the bucket was created; zero: no
    /// expiry). A running claim is written again every third of it.
    window: Duration,
    /// This process's instance token: part of every claim's owner.
    instance: String,
    next: AtomicU64,
    /// Key: the claim value (and when it was abandoned) of requests answered `not_sent`
    /// whose claim may still hold the key.
    abandoned: Mutex<HashMap<String, (Bytes, Instant)>>,
    /// Room for follow-ups ([`FOLLOW_UPS_MAX`]).
    follow_ups: Arc<Semaphore>,
    /// The lines about follow-ups skipped for lack of room.
    skipped: Mutex<LogThrottle<1>>,
}

/// A claim this request holds, or may hold (its `create` got no answer).
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) key: String,
    /// The pending value, this request's alone.
    value: Bytes,
    /// The revision it was last written at, when known (unknown after a write that got no
    /// answer: it may have landed).
    revision: Option<u64>,
}

/// What claiming a key gave.
pub(crate) enum Claimed {
    /// This request holds the key: it may run.
    Held(Claim),
    /// Another request holds it: its stored reply, or a pending value (it is running),
    /// or nothing when it could not be read.
    Taken(Option<Bytes>),
    /// The store did not answer, or failed: nothing may run. The claim may have landed and
    /// is to be freed ([`Keys::abandon`]).
    Failed(String, Claim),
}

/// Whether a key is now free of a claim.
enum Freed {
    /// Deleted, or it never landed and cannot land any more, or another value holds it.
    Done,
    /// NATS did not answer, or the key changed meanwhile: try again.
    Again(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only map inserts and removes run under the lock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Keys {
    /// The keys of bucket `kv`, whose entries live `window` (its `max_age`).
    pub(crate) fn new(kv: Store, window: Duration, instance: &str) -> Keys {
        Keys {
            kv,
            window,
            instance: instance.to_string(),
            next: AtomicU64::new(0),
            abandoned: Mutex::default(),
            follow_ups: Arc::new(Semaphore::new(FOLLOW_UPS_MAX)),
            skipped: Mutex::default(),
        }
    }

    /// Room for one follow-up of `key`, or `None` (logged, rate-limited) when
    /// [`FOLLOW_UPS_MAX`] run already.
    pub(crate) fn follow_up_slot(&self, key: &str) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.follow_ups.clone().try_acquire_owned() {
            return Some(permit);
        }
        let quiet = lock(&self.skipped).note(0, Instant::now());
        if let Some(quiet) = quiet {
            let more = if quiet == 0 {
                String::new()
            } else {
                format!("; {quiet} more since the last such line")
            };
            log::warn!(
                "idempotency key {key}: not brought up to date after its reply ({FOLLOW_UPS_MAX} such updates wait on NATS already): it stays as it is until the window ends{more}"
            );
        }
        None
    }

    fn pending_value(&self) -> Bytes {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Bytes::from(format!(
            r#"{{"type":"pending","owner":"{}-{n}"}}"#,
            self.instance
        ))
    }

    /// Claims `key` for one request.
    pub(crate) async fn claim(&self, key: &str) -> Claimed {
        let claim = Claim {
            key: key.to_string(),
            value: self.pending_value(),
            revision: None,
        };
        for _ in 0..CLAIM_ATTEMPTS {
            match self.kv.create(key, claim.value.clone()).await {
                Ok(revision) => {
                    return Claimed::Held(Claim {
                        revision: Some(revision),
                        ..claim
                    })
                }
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
                Err(e) => return Claimed::Failed(e.to_string(), claim),
            }
            let entry = match self.kv.entry(key).await {
                Ok(Some(e)) if e.operation == Operation::Put => e,
                // Deleted (or expired) since the create failed: create again.
                Ok(_) => continue,
                Err(_) => return Claimed::Taken(None),
            };
            if !self.is_abandoned(key, &entry.value) {
                return Claimed::Taken(Some(entry.value));
            }
            // A claim of a request of this process that was answered `not_sent`: nothing
            // ran under it, and its retry is what the answer invited. Taken over with a
            // compare-and-set on its revision.
            match self
                .kv
                .update(key, claim.value.clone(), entry.revision)
                .await
            {
                Ok(revision) => {
                    lock(&self.abandoned).remove(key);
                    log::info!("idempotency key {key}: the claim of a request answered not_sent is taken over by its retry");
                    return Claimed::Held(Claim {
                        revision: Some(revision),
                        ..claim
                    });
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Claimed::Failed(e.to_string(), claim),
            }
        }
        Claimed::Failed("the key kept changing while it was claimed".into(), claim)
    }

    fn is_abandoned(&self, key: &str, value: &[u8]) -> bool {
        lock(&self.abandoned)
            .get(key)
            .is_some_and(|(v, _)| v.as_ref() == value)
    }

    /// `claim`'s request was answered `not_sent` while its claim may hold the key: until it
    /// is freed ([`free`](Self::free)), a retry reaching this process takes it over.
    pub(crate) fn abandon(&self, claim: &Claim) {
        let now = Instant::now();
        let mut abandoned = lock(&self.abandoned);
        if !self.window.is_zero() {
            // Expired with the bucket's entries: nothing of them is left to free.
            abandoned.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.window);
        }
        if abandoned.len() >= ABANDONED_MAX && !abandoned.contains_key(&claim.key) {
            let oldest = abandoned
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                abandoned.remove(&oldest);
            }
        }
        abandoned.insert(claim.key.clone(), (claim.value.clone(), now));
    }

    /// One attempt to free `claim` (its request answered `not_sent`, nothing sent): `Ok`
    /// once the key no longer holds it and a late write of it can no longer land; `Err`
    /// says why not yet (NATS slow, or the key changed meanwhile).
    pub(crate) async fn free_once(&self, claim: &mut Claim) -> Result<(), String> {
        match self.try_free(claim).await {
            Freed::Done => {
                let mut abandoned = lock(&self.abandoned);
                if abandoned
                    .get(&claim.key)
                    .is_some_and(|(v, _)| *v == claim.value)
                {
                    abandoned.remove(&claim.key);
                }
                Ok(())
            }
            Freed::Again(why) => Err(why),
        }
    }

    async fn try_free(&self, claim: &mut Claim) -> Freed {
        let key = claim.key.as_str();
        if let Some(revision) = claim.revision {
            match self.kv.delete_expect_revision(key, Some(revision)).await {
                Ok(()) => return Freed::Done,
                // Written since (a write of this claim whose answer was lost, or another
                // request's): read what holds the key.
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(e) => {
                    // The delete may have landed: the revision is unknown now.
                    claim.revision = None;
                    return Freed::Again(e.to_string());
                }
            }
        }
        let current = match self.kv.entry(key).await {
            Ok(Some(e)) if e.operation == Operation::Put => {
                if e.value != claim.value {
                    // Another request's claim or reply: not this one's to free.
                    return Freed::Done;
                }
                e.revision
            }
            // A delete marker: this claim is not there. One more marker on its revision
            // makes a late create of this claim (which expects that revision) fail.
            Ok(Some(e)) => e.revision,
            // Nothing at all: likewise, a marker where a late create expects none.
            Ok(None) => 0,
            Err(e) => return Freed::Again(e.to_string()),
        };
        match self.kv.delete_expect_revision(key, Some(current)).await {
            Ok(()) => Freed::Done,
            // It may have landed: the next attempt reads the key again.
            Err(e) => Freed::Again(e.to_string()),
        }
    }

    /// Frees `claim` after its requester was answered `not_sent`, trying a few times over
    /// some seconds while NATS is slow; logged when it cannot (the key then blocks a retry
    /// elsewhere as a duplicate until the window ends, though nothing ran).
    pub(crate) async fn free(&self, mut claim: Claim) {
        let mut pause = FOLLOW_UP_PAUSE;
        let mut last = String::new();
        for attempt in 0..FOLLOW_UP_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(FOLLOW_UP_MAX_PAUSE);
            }
            match self.free_once(&mut claim).await {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        log::warn!(
            "idempotency key {}: not freed after a not_sent answer ({last}); a retry reaching another bridge is answered duplicate until the window ends, though nothing ran",
            claim.key
        );
    }

    /// One attempt to store `reply` in place of `claim` (its action ran, or may have). A
    /// plain put, no compare-and-set: the claim was kept alive while the action ran (a loss
    /// of it is logged then), and the header a compare-and-set adds would push a reply
    /// that just fits NATS's max payload over it, leaving the key pending and the retry
    /// without its original.
    pub(crate) async fn store_once(&self, claim: &mut Claim, reply: &Bytes) -> Result<(), String> {
        match self.kv.put(claim.key.as_str(), reply.clone()).await {
            Ok(revision) => {
                claim.revision = Some(revision);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stores `reply` in place of `claim`, trying a few times after the requester was
    /// answered. When it cannot, the key keeps its pending value until the window ends:
    /// still one run per key, a retry is answered `duplicate` without the original.
    pub(crate) async fn store(&self, mut claim: Claim, reply: Bytes) {
        let mut pause = FOLLOW_UP_PAUSE;
        let mut last = String::new();
        for attempt in 0..FOLLOW_UP_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(FOLLOW_UP_MAX_PAUSE);
            }
            match self.store_once(&mut claim, &reply).await {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        log::warn!(
            "idempotency key {}: result not stored ({last}); it stays pending until the window ends: a retry is answered duplicate without the original",
            claim.key
        );
    }

    /// Runs `action` while `claim` holds its key, writing the claim again every third of
    /// the window so it does not expire under an action still running. A claim lost
    /// meanwhile (NATS unreachable for most of a window) is logged: a retry may then run.
    pub(crate) async fn hold_while<F: std::future::Future>(
        &self,
        claim: &mut Claim,
        action: F,
    ) -> F::Output {
        if self.window.is_zero() {
            return action.await;
        }
        let every = self.window / 3;
        tokio::pin!(action);
        let refresh = async {
            let mut at = Instant::now() + every;
            loop {
                tokio::time::sleep_until(at).await;
                at += every;
                // Bounded by the next refresh: a write that hangs is given up, its
                // revision then unknown.
                match tokio::time::timeout(every, self.refresh(claim)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(lost)) => {
                        log::warn!(
                            "idempotency key {}: its claim was lost while its action runs ({lost}): a retry with it may run the action again",
                            claim.key
                        );
                        return;
                    }
                    Err(_) => claim.revision = None,
                }
            }
        };
        tokio::select! {
            biased;
            out = &mut action => out,
            () = refresh => action.await,
        }
    }

    /// Writes `claim` again. `Err` when the key no longer holds it (it expired, or another
    /// request took it): nothing more to keep. NATS failing is no loss yet (`Ok`).
    async fn refresh(&self, claim: &mut Claim) -> Result<(), String> {
        let key = claim.key.as_str();
        if let Some(revision) = claim.revision {
            claim.revision = None;
            match self.kv.update(key, claim.value.clone(), revision).await {
                Ok(r) => {
                    claim.revision = Some(r);
                    return Ok(());
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(_) => return Ok(()),
            }
        }
        match self.kv.entry(key).await {
            Ok(Some(e)) if e.operation == Operation::Put && e.value == claim.value => {
                if let Ok(r) = self.kv.update(key, claim.value.clone(), e.revision).await {
                    claim.revision = Some(r);
                }
                Ok(())
            }
            Ok(Some(e)) if e.operation == Operation::Put => {
                Err("another request's value holds the key".into())
            }
            Ok(_) => Err("the key expired or was deleted".into()),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_values_old_and_new_are_told_from_replies() {
        assert!(is_pending(b"pending"));
        assert!(is_pending(br#"{"type":"pending","owner":"ab-1"}"#));
        assert!(!is_pending(
            br#"{"type":"outcome","server":"pbx1","outcome":"success"}"#
        ));
        assert!(!is_pending(b"pending2"));
    }
}
