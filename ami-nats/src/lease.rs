//! Leases: each server is served by at most one bridge at a time.
//!
//! One key per server (its subject token) in a JetStream KV bucket. Its value is text, three
//! words separated by one space: `held <bridge> <instance>` or `released <bridge>
//! <instance>`, where `<bridge>` is the bridge's ID (its name, printable ASCII without
//! spaces) and `<instance>` a random token (16 lowercase hex digits) made when the bridge
//! process starts. The instance tells apart two processes started under one name: a bridge
//! renews and releases only a key holding its own instance, never one another process of
//! the same name took. A value without the instance (`held <bridge>`, as bridges before it
//! wrote) is read as held by that bridge, and is never any running process's own. Actions
//! are forwarded to the process a value names, on `ami.bridge.<bridge>_<instance>.action`
//! (`ami.bridge.<bridge>.action` for a value without an instance), never to its bridge ID
//! alone. A standby that sees a key held under its own bridge ID by another instance, and
//! renewed while it watches (a live process, not this unit's own crashed one), logs a
//! warning naming the ID and both instances (once per other instance, again after an hour
//! if it still runs) and counts it in `ami_bridge_same_name_peers_total`. Every `ttl / 4` a
//! bridge:
//!
//! 1. for each lease it holds: if its last successful renewal was *sent* more than
//!    `ttl - ttl/4` ago, it stops serving at once (self-fencing: it cannot know whether
//!    another bridge took over); otherwise it renews with a compare-and-set on the revision
//!    it holds. A wrong revision means another bridge owns the key: it stops at once, unless
//!    its previous renewal got no answer and the key holds this process's own value (that
//!    renewal landed): then it renews on that revision, a compare-and-set like any other.
//! 2. for each other server: an absent key is created (create fails if another bridge was
//!    first); a `released` value is taken with a compare-and-set; a `held` value is taken with
//!    a compare-and-set only after this bridge has seen the *same revision* for a whole `ttl`.
//!
//! A bridge that stops cleanly ends each session with a `lease_released` marker and then
//! writes `released <bridge> <instance>` (a compare-and-set on the revision it holds; after a
//! renewal whose answer was lost, on the key's current revision if it still holds this
//! process's own `held` value), which the next bridge takes at once: every bridge watches
//! the bucket, and a `released` (or deleted) lease makes it look at its free leases then,
//! not at its next tick. The stop is taken at once, in the middle of a pass too (the NATS
//! call under way abandoned: a renewal cut short moves no deadline, and one that landed
//! all the same is released like one whose answer was lost), and the leases are written
//! `released` all at once, not one after another: on a slow NATS the stop costs a few
//! calls' time, not a pass and a call per lease. A lease taken while the bridge stops
//! (the take was on its way when the stop began) is written `released` again at once and
//! its server never connected: the stop logs the sessions off first, and would drop one
//! started after that without its Logoff.
//!
//! A bridge that cannot use a server whose lease it holds (its client closed for good by a
//! rejected login, or its circuit breaker open) gives the lease up the same way, looking
//! every quarter of a second, not only at renewals: the session ends with a
//! `lease_released` marker naming why, the lease is written `released`, and this bridge
//! skips that lease for its stand-aside time. Otherwise a bridge with a wrong password or
//! a broken route would keep renewing a lease it cannot serve, and the standby that could
//! would wait for ever.
//!
//! Why no two bridges serve at once: the holder's last renewal R was sent at `t0`; it stops
//! serving by `t0 + 3/4 ttl` unless a later renewal succeeds (which changes the revision). A
//! standby saw R at some `s >= t0` and takes over at `s + ttl > t0 + 3/4 ttl`, and only if the
//! revision is still R. Both clocks are local monotonic clocks; only their rates must agree.
//! "Stops serving" is enforced where it counts, not only by the control task that ends a
//! term every 25 ms: the publisher reads the deadline itself before each publish, so
//! nothing of a term whose deadline passed goes out, whichever task runs first after a
//! stall (see [`crate::publish::Terms`]); the action handlers read it too, before an
//! action is handed to the fleet and when deciding to answer a request or forward it, so
//! no requested action of such a term reaches its server either.
//! A holder frozen with its clock (a paused or suspended VM: the monotonic clock does not
//! count that time) breaks that: running again, it finds its deadline still ahead. Two
//! things stop it. The deadline is counted on the wall clock too, which counts the time
//! suspended once it is set right (see [`crate::publish::Stamp`]): then nothing of the old
//! term is published once it runs again. And what its watch of the bucket delivers: any
//! value another bridge wrote over its lease after it took it (the takeover, which NATS
//! sent it while it was frozen), not its next renewal up to `ttl/4` later. The watch alone
//! comes too late for events: the session's reader and the publisher may run before the
//! watch task, and publish what waited on the AMI connection under the old term (the
//! `frozen_holder` tests). What neither can stop: publishes the NATS client had taken
//! before the holder stalled, or while NATS was slow, reach JetStream whenever the
//! connection delivers them, after a takeover too. Such late items carry the old
//! `session` (`<bridge>-<term>`, the term being the lease's KV revision, which only grows):
//! a consumer can tell them by a term below that of the server's last `lease_acquired`.
//! Takeover after a holder dies: between `ttl` and `ttl + ttl/4` after its last renewal (a
//! standby looks again the moment a lease it watches has been unchanged for a TTL).

use crate::bridge::Control;
use crate::publish::Stamp;
use crate::upstream::ServerIx;
use async_nats::jetstream::kv::{Entry, Operation, Store, UpdateErrorKind, Watch};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::{timeout, Instant};

enum State {
    Held {
        term: u64,
        revision: u64,
        /// The last renewal got no answer (timed out, or failed in a way that does not say
        /// whether it was applied): it may have landed at a revision not seen here.
        unanswered: bool,
    },
    Free {
        seen: Option<(u64, Instant)>,
        /// This bridge gave the lease up, unable to use the server: it keeps out of it
        /// until then.
        aside_until: Option<Instant>,
    },
}

/// What one pass of the lease loop looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every lease: the held ones renewed, the free ones tried.
    All,
    /// The free leases only (one seen unchanged for a TTL, or one released).
    Free,
    /// The servers of the held leases only, for one this bridge cannot use (local: no NATS
    /// call unless a lease is given up).
    Usable,
}

/// How often the servers of held leases are looked at for one this bridge cannot use: a
/// lease given up within this much of a rejected login, not at the next renewal (TTL/4).
const USABLE_CHECK: Duration = Duration::from_millis(250);

impl State {
    fn free() -> State {
        State::Free {
            seen: None,
            aside_until: None,
        }
    }
}

/// A lease value read from the bucket (see the module documentation for its format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseValue<'a> {
    /// `held` (true) or `released` (false).
    pub(crate) held: bool,
    /// The ID of the bridge that wrote it.
    pub(crate) bridge: &'a str,
    /// The instance token of the process that wrote it (`None` in a value written without
    /// one).
    pub(crate) instance: Option<&'a str>,
}

impl<'a> LeaseValue<'a> {
    /// The value in `bytes`, or `None` when it is not one a bridge writes.
    pub(crate) fn parse(bytes: &'a [u8]) -> Option<LeaseValue<'a>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut words = text.split(' ');
        let held = match words.next()? {
            "held" => true,
            "released" => false,
            _ => return None,
        };
        let bridge = words.next().filter(|b| !b.is_empty())?;
        let instance = match words.next() {
            None => None,
            Some(i) if !i.is_empty() => Some(i),
            Some(_) => return None,
        };
        if words.next().is_some() {
            return None;
        }
        Some(LeaseValue {
            held,
            bridge,
            instance,
        })
    }

    /// The value a process writes: `held` or `released`, its bridge ID and its instance.
    pub(crate) fn encode(held: bool, bridge: &str, instance: &str) -> Bytes {
        let state = if held { "held" } else { "released" };
        Bytes::from(format!("{state} {bridge} {instance}"))
    }
}

/// Most bytes of a lease value's holder kept for the `lease_acquired` marker: a bridge ID's
/// limit (`BridgeConfig` refuses longer ones).
const MAX_HOLDER_LEN: usize = 64;

/// Who a lease value names, as the `lease_acquired` marker says it (`previous_bridge`):
/// whoever may write the bucket writes the value, and markers are stored whatever the
/// backlog's byte cap, so the name is cut to a bridge ID's length (marked `...` when cut).
fn holder_named(text: &str) -> String {
    if text.len() <= MAX_HOLDER_LEN {
        return text.to_string();
    }
    let mut end = MAX_HOLDER_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", text.get(..end).unwrap_or_default())
}

/// How long after its warning another process under this bridge's ID is warned about again
/// while it is still seen; one not seen for this long is forgotten.
const SAME_NAME_REPEAT: Duration = Duration::from_secs(3600);
/// Most other processes under this bridge's ID remembered at once (each restart of a
/// misconfigured process is a new instance): the one seen longest ago makes room.
const SAME_NAME_MAX: usize = 64;

/// Other processes seen holding leases under this process's bridge ID: a misconfiguration
/// (one unit copied to two hosts) that the instance tokens make harmless for the leases and
/// the forwarding of actions, but that the operator must hear of. One counts as *live* once
/// a key it holds is seen at a second revision: it renewed while watched. A process that
/// died holding a lease (this same unit restarted after a crash) never renews, and is not
/// reported.
#[derive(Debug, Default)]
pub(crate) struct SameNamePeers {
    peers: Vec<Peer>,
}

#[derive(Debug)]
struct Peer {
    /// `None`: a value without an instance (a bridge from before the tokens).
    instance: Option<String>,
    /// The key it was seen holding, and at which revision first.
    key: String,
    first_revision: u64,
    last_seen: Instant,
    /// When it was last reported.
    warned: Option<Instant>,
}

/// What a sighting of another process under this bridge's ID calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sighting {
    /// Nothing (not known live yet, or reported recently).
    Quiet,
    /// Newly known live: a warning, and counted.
    New,
    /// Still live [`SAME_NAME_REPEAT`] after its last warning: a warning again.
    Again,
}

impl SameNamePeers {
    /// The lease `key` was seen at `revision` held under this bridge's ID by another
    /// process, `instance`, at `now`.
    pub(crate) fn note(
        &mut self,
        key: &str,
        instance: Option<&str>,
        revision: u64,
        now: Instant,
    ) -> Sighting {
        self.peers
            .retain(|p| now.saturating_duration_since(p.last_seen) < SAME_NAME_REPEAT);
        let Some(p) = self
            .peers
            .iter_mut()
            .find(|p| p.instance.as_deref() == instance)
        else {
            if self.peers.len() >= SAME_NAME_MAX {
                if let Some(oldest) = (0..self.peers.len()).min_by_key(|&i| self.peers[i].last_seen)
                {
                    self.peers.swap_remove(oldest);
                }
            }
            self.peers.push(Peer {
                instance: instance.map(str::to_string),
                key: key.to_string(),
                first_revision: revision,
                last_seen: now,
                warned: None,
            });
            return Sighting::Quiet;
        };
        p.last_seen = now;
        match p.warned {
            Some(at) if now.saturating_duration_since(at) >= SAME_NAME_REPEAT => {
                p.warned = Some(now);
                Sighting::Again
            }
            Some(_) => Sighting::Quiet,
            None if p.key == key && p.first_revision != revision => {
                p.warned = Some(now);
                Sighting::New
            }
            None => {
                if p.key != key {
                    // Renewals are told apart per key (revisions count across the bucket).
                    p.key = key.to_string();
                    p.first_revision = revision;
                }
                Sighting::Quiet
            }
        }
    }
}

/// Reports another process seen holding `key` under this process's bridge ID, as
/// [`SameNamePeers::note`] says.
fn same_name_peer(
    control: &Control,
    peers: &mut SameNamePeers,
    key: &str,
    other: Option<&str>,
    revision: u64,
) {
    let sighting = peers.note(key, other, revision, Instant::now());
    let still = match sighting {
        Sighting::Quiet => return,
        Sighting::New => {
            control.metrics.same_name_peers.inc();
            ""
        }
        Sighting::Again => "still ",
    };
    let id = &control.bridge_id;
    let mine = &control.instance;
    // Whoever may write the bucket wrote it: escaped and cut short like any remote text.
    let other = other.map_or_else(
        || "unknown: a bridge version without instance tokens".to_string(),
        |o| crate::shown::Remote(o.as_bytes()).to_string(),
    );
    log::warn!(
        "bridge ID {id}: two processes run under one name: another process (instance {other}) {still}holds lease {key} under it, this process is instance {mine}; give each bridge process its own bridge ID (BridgeConfig::bridge_id)"
    );
}

/// Runs the lease loop until `stop` turns true, then releases what it holds.
pub(crate) async fn run(
    kv: Store,
    control: Arc<Control>,
    ttl: Duration,
    stand_aside: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let tick = ttl / 4;
    let n = control.servers.len();
    let mut states: Vec<State> = (0..n).map(|_| State::free()).collect();
    let mut peers = SameNamePeers::default();
    let held_value = LeaseValue::encode(true, &control.bridge_id, &control.instance);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut usable = tokio::time::interval(USABLE_CHECK.min(tick));
    usable.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A lease seen unchanged is taken the moment it has been so for a TTL, not at the next
    // tick (up to TTL/4 later): failover then takes about the TTL, no more. Such extra
    // passes look at free leases only, at most every TTL/16 (NATS down: no tight loop).
    let mut last_free_pass = Instant::now();
    // Opened before the first look: a release written before the watch exists is its
    // first entry (the latest value of every key comes first), so none is missed. Read in
    // a task of its own, so that the lease view forwarded requests read stays current
    // while a pass here waits on NATS.
    let freed = Arc::new(Notify::new());
    let watcher = tokio::spawn(watch_leases(
        kv.clone(),
        open_watch(&kv, tick).await,
        control.clone(),
        freed.clone(),
        tick,
    ));
    // Read by a take that lands once the stop was asked (the loop itself waits on `stop`).
    let asked = stop.clone();
    let lease = LeaseLoop {
        kv: &kv,
        control: &control,
        held_value: &held_value,
        ttl,
        tick,
        stand_aside,
        stop: &asked,
    };
    // Servers whose take the stop cut short.
    let mut cut_short: Vec<ServerIx> = Vec::new();
    loop {
        let stale_at = states
            .iter()
            .filter_map(|s| match s {
                State::Free {
                    seen: Some((_, since)),
                    ..
                } => Some(*since + ttl),
                _ => None,
            })
            .min()
            .map(|at| at.max(last_free_pass + ttl / 16));
        let pass = tokio::select! {
            _ = interval.tick() => Pass::All,
            () = sleep_until(stale_at) => Pass::Free,
            _ = usable.tick() => Pass::Usable,
            // The others a stopping bridge released at the same time are one pass for all:
            // the notification holds one permit, however many came.
            () = freed.notified() => Pass::Free,
            _ = stop.changed() => break,
        };
        if *stop.borrow() {
            break;
        }
        if pass != Pass::Usable {
            last_free_pass = Instant::now();
        }
        // A stop is taken between servers and during each one's NATS call, not only between
        // passes: with NATS slow or stalled a pass takes up to a call's timeout (`tick`) per
        // server, and the stop (a service manager's, bounded) would wait for all of them
        // before releasing anything. Abandoning a call is safe for the lease: a renewal cut
        // short moves no deadline (the fence still runs from the last renewal answered),
        // and one that landed all the same is found by the release (see `release`).
        let mut stopped = false;
        for (ix, state) in states.iter_mut().enumerate() {
            if stop_asked(&stop) {
                stopped = true;
                break;
            }
            let taking = matches!(state, State::Free { .. });
            let look = look_at(&lease, ix, state, pass, &mut peers);
            let next = tokio::select! {
                // A look already done (no NATS call, or its answer in) counts.
                biased;
                next = look => next,
                () = asked_to_stop(&mut stop) => {
                    stopped = true;
                    // A take cut short may have landed: this process's value at a revision
                    // it never heard of. Released at the end if so.
                    if taking {
                        cut_short.push(ix);
                    }
                    None
                }
            };
            if let Some(s) = next {
                *state = s;
            }
            if stopped {
                break;
            }
        }
        if stopped {
            break;
        }
    }
    watcher.abort();
    // Hand the servers over at once instead of making the others wait a TTL: each session
    // ends with a `lease_released` marker, and the lease is written `released` once the
    // markers are stored (or a renewal period passed), so the next holder's items follow.
    let held: Vec<(ServerIx, u64, u64)> = states
        .iter()
        .enumerate()
        .filter_map(|(ix, s)| match s {
            State::Held { term, revision, .. } => Some((ix, *term, *revision)),
            State::Free { .. } => None,
        })
        .collect();
    let mut stored = Vec::with_capacity(held.len());
    for &(ix, term, _) in &held {
        stored.extend(control.release(ix, term, "shutdown").await);
    }
    let _ = timeout(tick, futures_util::future::join_all(stored)).await;
    for &(ix, term, _) in &held {
        control.lost(ix, term);
    }
    // Written all at once, not one after another: each waits up to `tick` on a slow NATS,
    // and the stop that waits for them is bounded (a service manager's, `shutdown`'s
    // flush). Each is a compare-and-set on a key of its own. A renewal the stop cut short
    // may have landed: `release` then finds this process's value at a newer revision.
    let released_value = LeaseValue::encode(false, &control.bridge_id, &control.instance);
    let releases = held.iter().filter_map(|&(ix, _, revision)| {
        let key = control.servers.get(ix)?.token.as_str();
        Some(release(
            &kv,
            key,
            revision,
            &held_value,
            &released_value,
            tick,
        ))
    });
    let takes = cut_short.iter().filter_map(|&ix| {
        let key = control.servers.get(ix)?.token.as_str();
        Some(release_if_taken(
            &kv,
            key,
            &held_value,
            &released_value,
            tick,
        ))
    });
    futures_util::future::join(
        futures_util::future::join_all(releases),
        futures_util::future::join_all(takes),
    )
    .await;
}

/// What every look of the lease loop at a server shares.
struct LeaseLoop<'a> {
    kv: &'a Store,
    control: &'a Arc<Control>,
    /// This process's `held` value.
    held_value: &'a Bytes,
    ttl: Duration,
    tick: Duration,
    stand_aside: Duration,
    /// The bridge's stop (read only: a lease taken once it was asked is released at once).
    stop: &'a watch::Receiver<bool>,
}

/// One look of a pass (`pass`) at server `ix`, whose lease is in `state`: the held lease
/// renewed (or given up, or found lost), the free one tried. Returns the new state if it
/// changed.
async fn look_at(
    lease: &LeaseLoop<'_>,
    ix: ServerIx,
    state: &mut State,
    pass: Pass,
    peers: &mut SameNamePeers,
) -> Option<State> {
    let LeaseLoop {
        kv,
        control,
        held_value,
        ttl,
        tick,
        stand_aside,
        stop,
    } = *lease;
    let fence = ttl - ttl / 4;
    let key = control.servers.get(ix)?.token.as_str();
    match state {
        State::Held { .. } if pass == Pass::Free => None,
        State::Held {
            term,
            revision,
            unanswered,
        } => {
            if !control.terms.is_current(ix, *term) {
                // Fenced by the control task: the renewal deadline passed.
                Some(State::free())
            } else if let Some(why) = control
                .upstream
                .status(ix)
                .as_ref()
                .and_then(crate::upstream::unusable)
                // A stop logs the sessions off (closed, reason `logoff`) before it
                // releases their leases itself, as `shutdown`.
                .filter(|_| !control.stopping())
            {
                give_up(kv, control, ix, *term, *revision, why, tick, stand_aside);
                Some(State::Free {
                    seen: None,
                    aside_until: Some(Instant::now() + stand_aside),
                })
            } else if pass == Pass::Usable {
                None
            } else {
                let sent = Stamp::now();
                match timeout(tick, kv.update(key, held_value.clone(), *revision)).await {
                    Ok(Ok(new)) => {
                        control.renewed(ix, *term, sent.after(fence));
                        Some(State::Held {
                            term: *term,
                            revision: new,
                            unanswered: false,
                        })
                    }
                    Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        // After a renewal with no answer, the key may hold that
                        // renewal, this bridge's own value at a revision not seen
                        // here: renewing on it keeps the lease. Otherwise another
                        // bridge has it.
                        let sent = Stamp::now();
                        let reclaimed = if *unanswered {
                            reclaim(kv, key, held_value, tick).await
                        } else {
                            None
                        };
                        match reclaimed {
                            Some(new) => {
                                log::info!(
                                    "lease {key}: a renewal's answer was lost; renewed on the revision it wrote"
                                );
                                control.renewed(ix, *term, sent.after(fence));
                                Some(State::Held {
                                    term: *term,
                                    revision: new,
                                    unanswered: false,
                                })
                            }
                            None => {
                                log::warn!(
                                    "lease {key}: taken by another bridge, no longer serving"
                                );
                                control.lost(ix, *term);
                                Some(State::free())
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        log::debug!("lease {key}: renewal failed: {e}");
                        Some(State::Held {
                            term: *term,
                            revision: *revision,
                            unanswered: true,
                        })
                    }
                    Err(_) => Some(State::Held {
                        term: *term,
                        revision: *revision,
                        unanswered: true,
                    }),
                }
            }
        }
        State::Free {
            aside_until: Some(until),
            ..
        } if Instant::now() < *until => None,
        State::Free { .. } if pass == Pass::Usable => None,
        // A stopping bridge takes no lease (one another bridge released meanwhile):
        // the stop has logged its sessions off and releases what it holds next, so
        // the server would be logged in only to be dropped without its Logoff. (A take
        // already on its way when the stop began is released again: see `try_acquire`.)
        State::Free { .. } if control.stopping() => None,
        State::Free { seen, .. } => {
            try_acquire(
                kv, control, ix, key, seen, ttl, tick, held_value, peers, stop,
            )
            .await
        }
    }
}

/// Whether the bridge was asked to stop: told so, or its handle is gone (dropped).
fn stop_asked(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Returns once the bridge is asked to stop ([`stop_asked`]).
async fn asked_to_stop(stop: &mut watch::Receiver<bool>) {
    // An error is the handle dropped: a stop too.
    let _ = stop.wait_for(|asked| *asked).await;
}

/// Gives up the lease of `ix` (held as `term`, at `revision` as far as this bridge knows)
/// because this bridge cannot use the server (`why`, see [`crate::upstream::unusable`]): as
/// at a clean stop, the session ends with a `lease_released` marker saying `why`, then the
/// lease is written `released`, which a bridge that can use the server takes at once. The
/// caller keeps out of the lease for `stand_aside`. In a task of its own: the marker may
/// wait for a slow NATS while the other leases need renewing.
#[allow(clippy::too_many_arguments)]
fn give_up(
    kv: &Store,
    control: &Arc<Control>,
    ix: ServerIx,
    term: u64,
    revision: u64,
    why: &'static str,
    tick: Duration,
    stand_aside: Duration,
) {
    let Some(spec) = control.servers.get(ix) else {
        return;
    };
    log::warn!(
        "{}: cannot be used from this bridge ({why}): lease given up, for another bridge to take; this one keeps out of it for {stand_aside:?}",
        spec.name
    );
    control.metrics.lease_given_up(ix, why);
    let key = spec.token.clone();
    let held_value = LeaseValue::encode(true, &control.bridge_id, &control.instance);
    let released_value = LeaseValue::encode(false, &control.bridge_id, &control.instance);
    let (kv, control) = (kv.clone(), control.clone());
    tokio::spawn(async move {
        if let Some(stored) = control.release(ix, term, why).await {
            let _ = timeout(tick, stored).await;
        }
        control.lost(ix, term);
        release(&kv, &key, revision, &held_value, &released_value, tick).await;
    });
}

/// Writes `released` into the lease `key`, held at `revision` as far as this bridge knows.
/// After a renewal whose answer was lost the key holds this process's own value at a newer
/// revision: then it is read again and released on that revision if it still holds
/// `held_value` (only this process writes it: it carries its instance token), a
/// compare-and-set like the first. Another bridge's value is never touched, nor that of
/// another process started under the same bridge ID. Left as it is (to expire after its TTL) only when NATS
/// does not answer within `tick`.
async fn release(
    kv: &Store,
    key: &str,
    revision: u64,
    held_value: &Bytes,
    released_value: &Bytes,
    tick: Duration,
) {
    match timeout(tick, kv.update(key, released_value.clone(), revision)).await {
        Ok(Ok(_)) => return,
        Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
        Ok(Err(e)) => {
            log::debug!("lease {key}: not released: {e}");
            return;
        }
        Err(_) => {
            log::debug!("lease {key}: not released: NATS did not answer in time");
            return;
        }
    }
    match write_if_ours(kv, key, held_value, released_value, tick).await {
        Some(_) => {
            log::info!("lease {key}: released on the revision of a renewal whose answer was lost")
        }
        None => log::debug!(
            "lease {key}: not released: another bridge holds it, or NATS did not answer in time"
        ),
    }
}

/// Releases the lease `key` if a take the stop cut short landed: the key then holds this
/// process's own `held_value` (only this process writes it), at a revision it never heard
/// of; written `released` with a compare-and-set on it, so the next bridge need not wait a
/// TTL for a lease nobody serves. Another bridge's value is never touched. A take still on
/// its way when the key is read (NATS slow) is missed: that lease is taken over after its
/// TTL, as one whose release NATS did not answer.
async fn release_if_taken(
    kv: &Store,
    key: &str,
    held_value: &Bytes,
    released_value: &Bytes,
    tick: Duration,
) {
    if write_if_ours(kv, key, held_value, released_value, tick)
        .await
        .is_some()
    {
        log::info!("lease {key}: taken as this bridge stopped: released again");
    }
}

/// A watch of every lease (the latest value of each first), or None if NATS cannot give
/// one now (leases are then still looked at every tick).
async fn open_watch(kv: &Store, tick: Duration) -> Option<Watch> {
    match timeout(tick, kv.watch_with_history(">")).await {
        Ok(Ok(w)) => Some(w),
        Ok(Err(e)) => {
            log::debug!("leases: cannot watch the bucket: {e}");
            None
        }
        Err(_) => None,
    }
}

/// Reads the lease bucket's watch until aborted: every entry goes into the lease view, and
/// one that frees a lease (`released`, deleted or purged) wakes the lease loop through
/// `freed`. One written over a lease this process holds, after it took it, by anyone else
/// (see [`taken_from_us`]) stops serving that server at once: the renewal deadline is
/// counted on the local monotonic clock, which stood still while the process was frozen
/// (a paused VM), so only what NATS says tells a process that ran again that its lease
/// passed to another bridge meanwhile. An ended or failed watch empties the view (its
/// callers read the bucket meanwhile) and is opened again after `tick` (NATS down: no
/// tight loop).
async fn watch_leases(
    kv: Store,
    mut watch: Option<Watch>,
    control: Arc<Control>,
    freed: Arc<Notify>,
    tick: Duration,
) {
    let view = control.lease_view.clone();
    let held_value = LeaseValue::encode(true, &control.bridge_id, &control.instance);
    loop {
        let Some(w) = watch.as_mut() else {
            tokio::time::sleep(tick).await;
            watch = open_watch(&kv, tick).await;
            continue;
        };
        match w.next().await {
            Some(Ok(e)) => {
                let frees = e.operation != Operation::Put || e.value.starts_with(b"released ");
                lock_view(&view).note(&e);
                if let Some((ix, term)) = taken_from_us(&control, &e, &held_value) {
                    log::warn!(
                        "lease {}: written by another bridge since this one took it, no longer serving",
                        e.key
                    );
                    control.lost(ix, term);
                }
                if frees {
                    freed.notify_one();
                }
            }
            Some(Err(e)) => {
                log::debug!("leases: watch failed: {e}");
                lock_view(&view).forget();
                watch = None;
            }
            None => {
                lock_view(&view).forget();
                watch = None;
            }
        }
    }
}

/// The server and term of a lease this process holds that `e` was written over: a value
/// other than this process's own `held_value` (or a delete or purge) at a revision after
/// the one at which it took the lease (its term). Its own renewals cannot follow such an
/// entry (each is a compare-and-set on a revision it wrote), so the lease is lost for good.
/// Entries from before the term (a watch that lags behind) are not: `None`.
fn taken_from_us(control: &Control, e: &Entry, held_value: &Bytes) -> Option<(ServerIx, u64)> {
    let ix = control.servers.iter().position(|s| s.token == e.key)?;
    let term = control.terms.current(ix);
    let ours = e.operation == Operation::Put && e.value == *held_value;
    (term != 0 && e.revision > term && !ours).then_some((ix, term))
}

/// The lease view's lock (the watch task writes it, forwarded requests read it).
pub(crate) fn lock_view(view: &Mutex<LeaseView>) -> std::sync::MutexGuard<'_, LeaseView> {
    // Only map inserts and removes run under the lock.
    view.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lease bucket as this bridge's watch last showed it: each key's latest value (one
/// small entry per server in the bucket). Forwarded `ami.any.action` requests find the
/// holders here instead of listing the bucket (a KV consumer, then one read per key, per
/// request). Only once the watch has delivered the bucket's values as they stood when it
/// opened (`seen_current`), and never after it failed until it is open again: then the
/// callers read the bucket.
#[derive(Debug, Default)]
pub(crate) struct LeaseView {
    current: bool,
    values: std::collections::BTreeMap<String, Bytes>,
}

impl LeaseView {
    fn note(&mut self, e: &async_nats::jetstream::kv::Entry) {
        if e.operation == Operation::Put {
            self.values.insert(e.key.clone(), e.value.clone());
        } else {
            self.values.remove(&e.key);
        }
        self.current |= e.seen_current;
    }

    fn forget(&mut self) {
        self.current = false;
        self.values.clear();
    }

    /// The value of `key` (`None` inside when the bucket has none), if the view is current.
    pub(crate) fn value(&self, key: &str) -> Option<Option<Bytes>> {
        self.current.then(|| self.values.get(key).cloned())
    }

    /// Every key and value, if the view is current.
    pub(crate) fn all(&self) -> Option<Vec<(String, Bytes)>> {
        self.current.then(|| {
            self.values
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }
}

/// After a renewal with no answer was followed by one refused for a wrong revision: if the
/// key holds this process's own `held` value (the unanswered renewal landed), renews on its
/// current revision and returns the new one. `None` when another bridge holds it, or NATS cannot
/// tell within `tick` (the bridge then stops serving, as fencing requires).
async fn reclaim(kv: &Store, key: &str, held_value: &Bytes, tick: Duration) -> Option<u64> {
    write_if_ours(kv, key, held_value, held_value, tick).await
}

/// Writes `value` on the key's current revision if the key still says `held_value` (only
/// this process writes it, as it carries the process's instance token: a renewal whose
/// answer was lost may have moved the revision the bridge knows); returns the new revision. Another bridge's value is never touched: a
/// compare-and-set on the revision just read. `None` when it is not ours, or NATS does not
/// answer within `tick`.
async fn write_if_ours(
    kv: &Store,
    key: &str,
    held_value: &Bytes,
    value: &Bytes,
    tick: Duration,
) -> Option<u64> {
    let entry = match timeout(tick, kv.entry(key)).await {
        Ok(Ok(Some(e))) => e,
        _ => return None,
    };
    if entry.operation != Operation::Put || entry.value != *held_value {
        return None;
    }
    match timeout(tick, kv.update(key, value.clone(), entry.revision)).await {
        Ok(Ok(revision)) => Some(revision),
        _ => None,
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One acquisition attempt; returns the new state if it changed.
#[allow(clippy::too_many_arguments)]
async fn try_acquire(
    kv: &Store,
    control: &Arc<Control>,
    ix: ServerIx,
    key: &str,
    seen: &mut Option<(u64, Instant)>,
    ttl: Duration,
    tick: Duration,
    held_value: &Bytes,
    peers: &mut SameNamePeers,
    stop: &watch::Receiver<bool>,
) -> Option<State> {
    let fence = ttl - ttl / 4;
    let entry = match timeout(tick, kv.entry(key)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            log::debug!("lease {key}: read failed: {e}");
            return None;
        }
        Err(_) => return None,
    };
    let sent = Stamp::now();
    let (result, previous) = match entry {
        None => (
            timeout(tick, kv.create(key, held_value.clone()))
                .await
                .map(|r| r.map_err(|e| e.to_string())),
            None,
        ),
        Some(e) if e.operation != Operation::Put => (
            timeout(tick, kv.create(key, held_value.clone()))
                .await
                .map(|r| r.map_err(|e| e.to_string())),
            None,
        ),
        Some(e) => {
            // A value no bridge writes counts as held, by whoever its text names.
            let (released, holder) = match LeaseValue::parse(&e.value) {
                Some(v) => {
                    if v.held
                        && v.bridge == control.bridge_id
                        && v.instance != Some(control.instance.as_str())
                    {
                        same_name_peer(control, peers, key, v.instance, e.revision);
                    }
                    (!v.held, holder_named(v.bridge))
                }
                None => (false, holder_named(&String::from_utf8_lossy(&e.value))),
            };
            let stale = match seen {
                Some((rev, since)) if *rev == e.revision => since.elapsed() >= ttl,
                _ => {
                    *seen = Some((e.revision, Instant::now()));
                    false
                }
            };
            // This very process's value: it fenced itself (NATS did not answer its renewals
            // in time) and nobody took the lease since, or the value would be theirs. It is
            // taken back at once, not after a TTL of seeing it unchanged.
            let ours = e.value == *held_value;
            if !released && !stale && !ours {
                return None;
            }
            (
                timeout(tick, kv.update(key, held_value.clone(), e.revision))
                    .await
                    .map(|r| r.map_err(|e| e.to_string())),
                Some(holder),
            )
        }
    };
    match result {
        // Taken while the bridge stops (the take was on its way when the stop began): a
        // session started now would log in after the stop began, which logs the sessions
        // off and then drops what is left without its Logoff. No session, no marker: the
        // lease is handed back at once.
        Ok(Ok(revision)) if control.stopping() || stop_asked(stop) => {
            log::info!("lease {key}: taken as this bridge stops: released again, not served");
            let released_value = LeaseValue::encode(false, &control.bridge_id, &control.instance);
            release(kv, key, revision, held_value, &released_value, tick).await;
            *seen = None;
            None
        }
        Ok(Ok(revision)) => {
            control.acquired(ix, revision, previous, sent.after(fence));
            Some(State::Held {
                term: revision,
                revision,
                unanswered: false,
            })
        }
        Ok(Err(e)) => {
            log::debug!("lease {key}: not taken: {e}");
            *seen = None;
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_process_under_the_bridge_id_is_reported_once_it_renews_then_hourly() {
        use Sighting::*;
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut peers = SameNamePeers::default();
        // Seen at one revision only: it may be this unit's own crashed process.
        assert_eq!(peers.note("pbx1", Some("aa"), 10, at(0)), Quiet);
        assert_eq!(peers.note("pbx1", Some("aa"), 10, at(5)), Quiet);
        // A new revision of another key tells nothing of the first: revisions are global.
        assert_eq!(peers.note("pbx2", Some("aa"), 11, at(6)), Quiet);
        // Renewed while watched: live. Reported once, not on every look.
        assert_eq!(peers.note("pbx2", Some("aa"), 14, at(7)), New);
        for s in 8..3600 {
            assert_eq!(peers.note("pbx2", Some("aa"), 14 + s, at(s)), Quiet);
        }
        assert_eq!(peers.note("pbx2", Some("aa"), 9000, at(3607)), Again);
        // Another instance, and one without any (an older bridge), on their own.
        assert_eq!(peers.note("pbx1", Some("bb"), 20, at(3608)), Quiet);
        assert_eq!(peers.note("pbx1", Some("bb"), 21, at(3609)), New);
        assert_eq!(peers.note("pbx1", None, 30, at(3610)), Quiet);
        assert_eq!(peers.note("pbx1", None, 31, at(3611)), New);
        // Gone an hour: forgotten, so the memory stays bounded; many instances too.
        assert_eq!(peers.note("pbx1", Some("cc"), 40, at(9000)), Quiet);
        assert_eq!(peers.peers.len(), 1);
        for i in 0..1000u64 {
            peers.note("pbx1", Some(&i.to_string()), 100 + i, at(9001));
        }
        assert_eq!(peers.peers.len(), SAME_NAME_MAX);
    }

    #[test]
    fn a_lease_value_names_the_bridge_and_the_process_and_reads_back() {
        let held = LeaseValue::encode(true, "b1", "00ff00ff00ff00ff");
        assert_eq!(&held[..], b"held b1 00ff00ff00ff00ff");
        assert_eq!(
            LeaseValue::parse(&held),
            Some(LeaseValue {
                held: true,
                bridge: "b1",
                instance: Some("00ff00ff00ff00ff"),
            })
        );
        let released = LeaseValue::encode(false, "b1", "00ff00ff00ff00ff");
        assert_eq!(&released[..], b"released b1 00ff00ff00ff00ff");
        assert_eq!(LeaseValue::parse(&released).map(|v| v.held), Some(false));
        // Written without an instance: held by that bridge, no process's own.
        assert_eq!(
            LeaseValue::parse(b"held first"),
            Some(LeaseValue {
                held: true,
                bridge: "first",
                instance: None,
            })
        );
        for odd in [
            &b""[..],
            b"held",
            b"held ",
            b"taken b1 x",
            b"held b1 x y",
            b"held b1 ",
            b"\xffheld b1",
        ] {
            assert_eq!(LeaseValue::parse(odd), None, "{odd:?}");
        }
    }
}
