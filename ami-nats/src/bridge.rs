//! The bridge: NATS connection, stream and buckets, and the tasks that tie them together.

use crate::config::{BridgeConfig, BridgeConfigError, NatsAuth, ServerSpec};
use crate::metrics::{self, Metrics};
use crate::publish::{Publisher, Stamp, Terms};
use crate::throttle::LogThrottle;
use crate::upstream::{ServerIx, Tagged, UpItem, Upstream};
use ami_tokio::fleet::ServerStatus;
use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Capacity of the channel of lease markers to the publisher (drained before every look at
/// the fleet's stream, so it holds a few at most).
const MARKERS_CAP: usize = 1024;

/// How long the first outstanding publish ack may take before the publisher publishes the
/// window again (the copies are dropped by JetStream's de-duplication).
const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a subscription being left keeps answering what NATS delivered before it saw the
/// unsubscribe (normally one round trip; bounded in case the connection is down then).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Why a bridge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] BridgeConfigError),
    /// NATS could not be reached: the URLs tried (credentials redacted) and why.
    #[error("cannot connect to NATS at {0}")]
    Connect(String),
    /// The stream or a bucket could not be found or created.
    #[error("JetStream setup failed: {0}")]
    Setup(String),
    /// The stream exists with subjects that do not fit the bridge (an operator made it):
    /// nothing was started. Publishing into a stream that does not take every item would
    /// be retried for ever; a stream that captures action requests answers them itself (a
    /// publish ack) while a bridge runs them too.
    #[error("stream {stream} has subjects {subjects:?}: {problem}")]
    StreamSubjects {
        /// The stream's name.
        stream: String,
        /// Its subjects as configured.
        subjects: Vec<String>,
        /// What is wrong with them.
        problem: StreamProblem,
    },
    /// The metrics address could not be bound.
    #[error("metrics listener: {0}")]
    Metrics(std::io::Error),
}

/// What is wrong with an existing stream's subjects (see [`BridgeError::StreamSubjects`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamProblem {
    /// Subjects the bridge publishes on that no subject of the stream covers.
    #[error("they do not cover {0:?}, which the bridge publishes on (add them, or give the bridge another stream)")]
    Uncovered(Vec<String>),
    /// A subject of the stream matches action requests the bridge answers.
    #[error("{stream_subject:?} captures the action requests on {action:?} (JetStream would answer them; remove it, or give the bridge another stream)")]
    CapturesActions {
        /// The stream's subject.
        stream_subject: String,
        /// The action subject (or pattern of them) it overlaps.
        action: String,
    },
}

/// Shared by the lease loop, the action handlers and the bridge handle.
pub(crate) struct Control {
    pub(crate) servers: Arc<[ServerSpec]>,
    pub(crate) bridge_id: String,
    /// This process's random token in its lease values and in its subject for forwarded
    /// actions: two processes started under one bridge ID never take each other's lease,
    /// nor each other's forwarded requests, for their own (see the `lease` module).
    pub(crate) instance: String,
    pub(crate) terms: Arc<Terms>,
    pub(crate) upstream: Upstream,
    pub(crate) merged: mpsc::Sender<Tagged>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) nats: async_nats::Client,
    pub(crate) action_timeout: Duration,
    /// The idempotency bucket's keys.
    pub(crate) keys: crate::idempotency::Keys,
    /// The requests that may still get a late answer (shared with the publisher).
    pub(crate) late: Arc<crate::late::LateAnswers>,
    /// The lease bucket: who holds which server, for forwarding `ami.any.action` requests.
    pub(crate) leases: kv::Store,
    /// The lease bucket as the lease loop's watch shows it (read before the bucket itself).
    pub(crate) lease_view: Arc<Mutex<crate::lease::LeaseView>>,
    action_slots: Arc<Semaphore>,
    /// The number of `action_slots`: those taken are the requests not answered yet.
    max_actions: usize,
    /// Held while a server starts or stops being served, so the two never interleave, and
    /// while a stop begins (taken before `handlers`), so no session starts after it. Per
    /// server, the term whose release began (0: none): a session whose start waited
    /// meanwhile (for room for its `lease_acquired` marker) is never started after it.
    serve_lock: Mutex<Vec<u64>>,
    /// When lost action replies were last logged (shared by every request's task).
    reply_log: Mutex<crate::actions::ReplyLossLog>,
    /// The tasks answering requests, so a clean stop waits for them (bounded) instead of
    /// dropping them with the runtime; `None` once the stop began: new requests are then
    /// refused `not_sent`, no task is started.
    handlers: Mutex<Option<JoinSet<()>>>,
    /// Turned true when a stop has waited long enough for the requests in flight: each
    /// then answers `unknown` (it may have run), or `not_sent` when its action was not sent
    /// yet, and ends.
    give_up: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only plain inserts and removes run under these locks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control {
    /// The rate limit of the lost-reply log lines.
    pub(crate) fn lock_reply_log(&self) -> MutexGuard<'_, crate::actions::ReplyLossLog> {
        lock(&self.reply_log)
    }

    /// Logs the summaries of lost action replies whose interval has passed at `now`: a
    /// flood of lost replies that stopped is summed up by the periodic tick, not only when
    /// another reply is lost.
    fn log_reply_summaries(&self, now: Instant) {
        let lines = self.lock_reply_log().due(now);
        for line in lines {
            log::warn!("{line}");
        }
    }

    /// Logs every summary of lost action replies still owed, due or not: at the bridge's
    /// end, when no later line could carry the counts.
    fn log_reply_summaries_at_end(&self) {
        let lines = self.lock_reply_log().pending();
        for line in lines {
            log::warn!("{line}");
        }
    }

    /// This bridge took `ix`'s lease as `term` (its KV revision then). Returns at once: the
    /// lease loop must not wait on a full merged stream (NATS slow) while other leases need
    /// renewing, so the marker, the session and the action subscription start in a task.
    pub(crate) fn acquired(
        self: &Arc<Self>,
        ix: ServerIx,
        term: u64,
        previous: Option<String>,
        fence_at: Stamp,
    ) {
        let Some(spec) = self.servers.get(ix) else {
            return;
        };
        log::info!("{}: lease acquired (term {term})", spec.name);
        {
            let _serve = lock(&self.serve_lock);
            self.terms.start(ix, term, fence_at);
        }
        self.metrics.set_lease(ix, true);
        let me = self.clone();
        tokio::spawn(async move {
            // The marker enters the merged stream before any event of the new session.
            let marker = (ix, term, UpItem::LeaseAcquired { previous });
            if me.merged.send(marker).await.is_err() {
                return;
            }
            // Checked and started under the lock `lost` and `release` take: a lease lost
            // meanwhile never leaves a session behind, nor does one released meanwhile
            // (its `lease_released` marker may be queued already: a session started now
            // would publish after it, under a term still current until the release ends).
            let released = lock(&me.serve_lock);
            if !me.terms.is_current(ix, term) {
                return;
            }
            if released.get(ix) == Some(&term) {
                log::info!(
                    "{}: released (term {term}) before its session started: not started",
                    spec_name(&me.servers, ix)
                );
                return;
            }
            // A stop began since the lease was taken: it releases the leases, this one
            // too, once it has logged the sessions off; a session started now would log in
            // after the stop began, only to be logged off again or, past that step, dropped
            // without its Logoff. The stop begins under this lock (see `shutdown`): a
            // session is either started before it, and logged off by it, or not at all.
            if me.stopping() {
                log::info!(
                    "{}: lease taken (term {term}) as this bridge stops: session not started",
                    spec_name(&me.servers, ix)
                );
                return;
            }
            me.upstream.add(ix);
        });
    }

    /// Whether a stop began ([`Bridge::shutdown`] took the request handlers).
    pub(crate) fn stopping(&self) -> bool {
        lock(&self.handlers).is_none()
    }

    /// What is not done yet that a stop would finish (see [`Unfinished`]).
    fn unfinished(&self) -> Unfinished {
        Unfinished {
            actions: self
                .max_actions
                .saturating_sub(self.action_slots.available_permits()),
            sessions: self.upstream.open_sessions(),
            unpublished: u64::try_from(self.metrics.backlog.get()).unwrap_or(0),
        }
    }

    /// Whether this bridge serves at least one server now.
    pub(crate) fn serves_any(&self) -> bool {
        let now = Stamp::now();
        (0..self.servers.len()).any(|ix| self.terms.may_act(ix, now))
    }

    /// The subject on which the process `instance` of bridge `bridge_id` answers the
    /// requests other bridges forward to it: `ami.bridge.<bridge>_<instance>.action`, one
    /// per process, so two processes started under one bridge ID never both get a request
    /// meant for the one holding the lease. It is the subject bridges from before the
    /// instance token compute from a lease value `held <bridge> <instance>` (they took all
    /// after `held ` for the bridge ID, its space made `_`), so during a rolling upgrade
    /// they reach the new holder too. A lease value without an instance (`None`, written by
    /// such an older bridge) names the subject that bridge listens on,
    /// `ami.bridge.<bridge>.action`.
    pub(crate) fn direct_subject(bridge_id: &str, instance: Option<&str>) -> String {
        let name = match instance {
            Some(instance) => format!("{bridge_id} {instance}"),
            None => bridge_id.to_string(),
        };
        format!("ami.bridge.{}.action", crate::config::subject_token(&name))
    }

    /// This process's own subject for forwarded requests (see [`direct_subject`](Self::direct_subject)).
    pub(crate) fn own_subject(&self) -> String {
        Self::direct_subject(&self.bridge_id, Some(&self.instance))
    }

    /// The lease of `ix` was renewed; it must be renewed again by `fence_at` (unless its
    /// deadline passed already: see [`Terms::renewed`]).
    pub(crate) fn renewed(&self, ix: ServerIx, term: u64, fence_at: Stamp) {
        // Under the lock terms start and end under: a renewal of a term that ended
        // meanwhile never moves the deadline of the next one.
        let _serve = lock(&self.serve_lock);
        self.terms.renewed(ix, term, fence_at);
    }

    /// This bridge no longer holds `ix` under `term`: stop at once (nothing more of it is
    /// published, its session closes, its action subject is left). Returns whether it
    /// ended the term (false: it had ended already).
    pub(crate) fn lost(&self, ix: ServerIx, term: u64) -> bool {
        let _serve = lock(&self.serve_lock);
        if !self.terms.is_current(ix, term) {
            return false;
        }
        self.terms.clear(ix, term);
        self.upstream.remove(ix);
        self.metrics.set_lease(ix, false);
        self.metrics.set_state(ix, "not_served");
        if let Some(spec) = self.servers.get(ix) {
            log::info!("{}: no longer served by this bridge", spec.name);
        }
        true
    }

    /// Starts giving `ix` up cleanly: its action subject is left and its AMI session closed,
    /// then a `lease_released` marker (saying `reason`) follows the session's last items.
    /// The returned receiver is told once JetStream stored the marker; the caller then calls
    /// [`lost`](Self::lost) and writes the lease `released`, so the next bridge's items
    /// come after it.
    pub(crate) async fn release(
        &self,
        ix: ServerIx,
        term: u64,
        reason: &'static str,
    ) -> Option<oneshot::Receiver<()>> {
        {
            let mut released = lock(&self.serve_lock);
            if !self.terms.is_current(ix, term) {
                return None;
            }
            // Before the marker is queued: a session of this term still waiting to start
            // (see `acquired`) is not started after it.
            if let Some(r) = released.get_mut(ix) {
                *r = term;
            }
            self.upstream.remove(ix);
        }
        let (done, stored) = oneshot::channel();
        let marker = (
            ix,
            term,
            UpItem::LeaseReleased {
                done: Some(done),
                reason,
            },
        );
        self.merged.send(marker).await.ok()?;
        Some(stored)
    }

    /// Stops serving every lease whose renewal deadline has passed: the control task's
    /// periodic look, and an action's right before it is sent (so that `ami.any.action`
    /// is routed among the servers still served, not refused for one past its deadline).
    pub(crate) fn fence_expired(&self) {
        let expired = self.terms.expired(Stamp::now());
        for (ix, term) in expired {
            // Said once, by whichever look ended the term.
            if self.lost(ix, term) {
                log::warn!(
                    "{}: lease not renewed in time: no longer serving it",
                    spec_name(&self.servers, ix)
                );
            }
        }
    }
}

/// Which requests a `serve_actions` task answers.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// `ami.<server>.action` (a queue group): forwarded when this bridge does not serve it.
    Server(ServerIx),
    /// `ami.any.action` (a queue group): forwarded when this bridge serves nothing.
    AnyForwarding,
    /// This process's own subject (`ami.bridge.<bridge>_<instance>.action`): requests
    /// forwarded to it (header [`FORWARDED_FOR`] names the server of an
    /// `ami.<server>.action` request; absent: `ami.any.action`).
    Direct,
}

/// Header of a forwarded request: the subject token of the server it was sent to.
pub(crate) const FORWARDED_FOR: &str = "Ami-Forwarded-For";

/// Answers requests from one subscription, each in its own task, at most
/// `max_actions_in_flight` at once across the bridge, until `stop` (the bridge's end).
async fn serve_actions(
    control: Arc<Control>,
    route: Route,
    mut sub: async_nats::Subscriber,
    mut stop: oneshot::Receiver<()>,
) {
    let mut draining_until: Option<Instant> = None;
    loop {
        let msg = tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => msg,
                // Drained (or the client closed).
                None => return,
            },
            _ = &mut stop, if draining_until.is_none() => {
                draining_until = Some(Instant::now() + DRAIN_LIMIT);
                if let Err(e) = sub.drain().await {
                    log::warn!("cannot leave {}: {e}", sub_name(&control, route));
                    return;
                }
                continue;
            }
            () = sleep_until(draining_until) => {
                log::warn!("{}: not drained within {DRAIN_LIMIT:?}; left anyway", sub_name(&control, route));
                return;
            }
        };
        // The request's deadline counts from here, not from when its handler gets to it.
        let received = Instant::now();
        if msg.reply.is_none() {
            // Nobody could be told its outcome: not run, counted and logged.
            let to = match route {
                Route::Server(ix) => Some(ix),
                Route::AnyForwarding | Route::Direct => None,
            };
            crate::actions::without_reply(&control, to);
            continue;
        }
        // Where it goes, and whether this bridge must pass it on to the lease holder.
        let (to, forward) = match route {
            // Not served, or past its renewal deadline (another bridge may hold the lease):
            // the lease holder is asked (none but this bridge: answered not_sent).
            Route::Server(ix) => (Some(ix), !control.terms.may_act(ix, Stamp::now())),
            // Serving none, or none of its servers ready: a bridge with a ready one can
            // take it (the holders are asked in turn; one with none ready answers not_sent).
            Route::AnyForwarding => (
                None,
                !control.serves_any() || control.upstream.check(None).is_err(),
            ),
            Route::Direct => {
                let named = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(FORWARDED_FOR))
                    .map(|v| v.as_str().to_string());
                match named {
                    None => (None, false),
                    Some(token) => match control.servers.iter().position(|s| s.token == token) {
                        Some(ix) => (Some(ix), false),
                        None => {
                            let why = format!("forwarded for server {token}, which this bridge does not know; nothing was sent");
                            crate::actions::refuse(&control, None, &why, &msg).await;
                            continue;
                        }
                    },
                }
            }
        };
        match control.action_slots.clone().try_acquire_owned() {
            Ok(permit) => {
                // Started under the lock the stop takes: a request is either in the set
                // the stop waits for, or refused.
                let refused = {
                    let mut handlers = lock(&control.handlers);
                    match handlers.as_mut() {
                        Some(set) => {
                            // Finished tasks are reaped here: the set holds those in flight.
                            while set.try_join_next().is_some() {}
                            let c = control.clone();
                            set.spawn(answer_in_task(c, to, msg, received, forward, permit));
                            None
                        }
                        None => Some(msg),
                    }
                };
                if let Some(msg) = refused {
                    let why = "this bridge is stopping; nothing was sent: retry";
                    crate::actions::refuse(&control, server_name(&control, to), why, &msg).await;
                }
            }
            Err(_) => {
                // Named like every other answer to a request on `ami.<server>.action`
                // (the reply's `server`, the counter's label): `null` is for
                // `ami.any.action` answered before a server was picked.
                let server = server_name(&control, to);
                let max = control.max_actions;
                let line = control.lock_reply_log().busy(max, Instant::now());
                if let Some(line) = line {
                    log::warn!("{line}");
                }
                crate::actions::refuse(&control, server, "too many actions in flight", &msg).await;
            }
        }
    }
}

/// The name of server `ix` for a log line (`#<ix>` if it is not configured).
fn spec_name(servers: &[ServerSpec], ix: ServerIx) -> String {
    servers
        .get(ix)
        .map_or_else(|| format!("server #{ix}"), |s| s.name.clone())
}

/// The name of server `to`, if any.
fn server_name(control: &Control, to: Option<ServerIx>) -> Option<&str> {
    to.and_then(|ix| control.servers.get(ix))
        .map(|s| s.name.as_str())
}

/// Answers one request (forwarding it when `forward`), holding one of the bridge's action
/// slots, then does what is left for its idempotency key. When a stop gives up on it
/// ([`Control::give_up`]) before its reply went out, it answers itself, counted like every
/// reply, so that its requester hears of it instead of waiting for nothing: `unknown` once
/// its action may have left the bridge (written to Asterisk, or forwarded to the holder),
/// `not_sent` before (still claiming its idempotency key, say, NATS slow: nothing ran, and
/// a claiming value left in the key is taken over by the retry, on any bridge).
async fn answer_in_task(
    control: Arc<Control>,
    to: Option<ServerIx>,
    msg: async_nats::Message,
    received: Instant,
    forward: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut give_up = control.give_up.subscribe();
    let reply_to = msg.reply.clone();
    let sending = crate::actions::Sending::default();
    let work = async {
        if forward {
            crate::actions::forward(control.clone(), to, msg, received, &sending).await
        } else {
            crate::actions::handle(control.clone(), to, msg, received, &sending).await
        }
    };
    let after = tokio::select! {
        biased;
        after = work => after,
        () = given_up(&mut give_up) => {
            if let Some(mark) = sending.mark() {
                // Its reply is not `timed_out`: a late answer to it is published only
                // (counted as `not_timed_out`), never stored at its key.
                control.late.not_timed_out(mark);
            }
            if let Some(reply_to) = reply_to {
                let (kind, why) = if sending.begun() {
                    ("unknown", "the bridge stopped while this request was in flight; it may have run")
                } else {
                    ("not_sent", "the bridge stopped before this request's action was sent; nothing was sent: retry")
                };
                crate::actions::answer_unrun(&control, server_name(&control, to), kind, why, reply_to).await;
            }
            return;
        }
    };
    // Answered: the slot goes to the next request. What is left for the idempotency
    // store has room of its own, and may take seconds while NATS is slow.
    drop(permit);
    let Some(key) = after.key().map(str::to_string) else {
        return;
    };
    let Some(_room) = control.keys.follow_up_slot(&key, after.held_bytes()) else {
        return;
    };
    tokio::select! {
        biased;
        () = after.run(&control.keys) => {}
        () = given_up(&mut give_up) => {
            log::warn!("idempotency key {key}: the bridge stopped before its store was brought up to date; it stays as it is until the window ends");
        }
    }
}

/// The subject a `serve_actions` task answers, for log lines.
fn sub_name(control: &Control, route: Route) -> String {
    match route {
        Route::Server(ix) => control
            .servers
            .get(ix)
            .map_or_else(String::new, |s| format!("ami.{}.action", s.token)),
        Route::AnyForwarding => "ami.any.action".into(),
        Route::Direct => control.own_subject(),
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a bridge has not done yet that a clean stop ([`Bridge::shutdown`]) waits for, bounded:
/// what a process that ends now abandons. Read with [`StopProgress::unfinished`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unfinished {
    /// Action requests not answered yet: a process that ends now leaves their requesters
    /// without an answer from this bridge (and the actions sent may have run).
    pub actions: usize,
    /// AMI sessions not closed yet: a process that ends now drops them without the Logoff
    /// (or before its Goodbye).
    pub sessions: usize,
    /// Items (events and markers) the publisher holds that JetStream has not stored yet.
    pub unpublished: u64,
}

/// A look at a bridge's stop while [`Bridge::shutdown`] runs (taken before, with
/// [`Bridge::progress`]): for a caller that ends the process before the stop is done (an
/// operator's second Ctrl-C) and says what it abandons.
#[derive(Clone)]
pub struct StopProgress {
    control: Arc<Control>,
}

impl std::fmt::Debug for StopProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopProgress")
            .field("bridge_id", &self.control.bridge_id)
            .finish_non_exhaustive()
    }
}

impl StopProgress {
    /// What is not done yet, now.
    pub fn unfinished(&self) -> Unfinished {
        self.control.unfinished()
    }
}

/// A running bridge. Dropping it without [`Bridge::shutdown`] stops it without shutdown's
/// waits: it takes no more action requests (those in flight run to their end), releases its
/// leases and closes its AMI sessions, then its other tasks (publisher, metrics endpoint)
/// end. Only a runtime that ends first leaves the leases held until they expire (which is
/// how a crashed bridge looks to the others).
pub struct Bridge {
    control: Arc<Control>,
    stop: watch::Sender<bool>,
    lease_task: JoinHandle<()>,
    /// The action subscriptions (`ami.any.action`, every server's `ami.<server>.action`,
    /// this process's own subject): their stop signal and task, for the bridge's life.
    action_subs: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    tasks: Vec<JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("bridge_id", &self.control.bridge_id)
            .finish_non_exhaustive()
    }
}

/// Creates the stream if absent (an existing one is used as configured, once its subjects
/// are checked by [`check_stream_subjects`]).
async fn ensure_stream(
    js: &jetstream::Context,
    c: &BridgeConfig,
    own_subject: &str,
) -> Result<(), BridgeError> {
    let cfg = stream::Config {
        name: c.stream.name.clone(),
        subjects: STREAM_SUBJECTS.iter().map(|s| s.to_string()).collect(),
        max_age: c.stream.max_age,
        max_bytes: c.stream.max_bytes,
        duplicate_window: c.stream.duplicate_window,
        storage: if c.stream.file_storage {
            stream::StorageType::File
        } else {
            stream::StorageType::Memory
        },
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    let setup =
        |e: &dyn std::fmt::Display| BridgeError::Setup(format!("stream {}: {e}", c.stream.name));
    let mut stream = js.get_or_create_stream(cfg).await.map_err(|e| setup(&e))?;
    let info = stream.info().await.map_err(|e| setup(&e))?;
    let subjects = info.config.subjects.clone();
    check_stream_subjects(&subjects, &c.servers, own_subject).map_err(|problem| {
        BridgeError::StreamSubjects {
            stream: c.stream.name.clone(),
            subjects,
            problem,
        }
    })
}

/// The subjects of the stream the bridge creates.
const STREAM_SUBJECTS: [&str; 3] = ["ami.*.event.>", "ami.*.gap", "ami.*.session"];

/// Action requests: `ami.<server>.action` and `ami.any.action`.
const ACTION_SUBJECTS: &str = "ami.*.action";

/// Checks a stream's `subjects` against what a bridge for `servers` publishes (each
/// server's `ami.<server>.event.>`, `.gap` and `.session` must be covered by one of them)
/// and the requests it answers (`ami.*.action` and `own_subject`, this process's subject
/// for forwarded requests, must overlap none of them).
pub(crate) fn check_stream_subjects(
    subjects: &[String],
    servers: &[ServerSpec],
    own_subject: &str,
) -> Result<(), StreamProblem> {
    for action in [ACTION_SUBJECTS, own_subject] {
        if let Some(s) = subjects.iter().find(|s| crate::subject::overlap(s, action)) {
            return Err(StreamProblem::CapturesActions {
                stream_subject: s.clone(),
                action: action.to_string(),
            });
        }
    }
    let uncovered: Vec<String> = servers
        .iter()
        .flat_map(|spec| {
            let t = &spec.token;
            [
                format!("ami.{t}.event.>"),
                format!("ami.{t}.gap"),
                format!("ami.{t}.session"),
            ]
        })
        .filter(|needed| !subjects.iter().any(|s| crate::subject::covers(s, needed)))
        .collect();
    if uncovered.is_empty() {
        Ok(())
    } else {
        Err(StreamProblem::Uncovered(uncovered))
    }
}

/// Limits of a KV bucket the bridge creates when absent.
struct Bucket {
    name: String,
    max_age: Duration,
    max_bytes: i64,
}

/// Opens a KV bucket, creating its stream if absent. The stream is created directly (the
/// layout `KV_<bucket>` / `$KV.<bucket>.>` that every client reads as a bucket) because the
/// client's own bucket creation first asks for account details that nats-server 2.9 does not
/// answer in the shape the client expects.
/// Returns it with its `max_age` (an existing bucket's own, which may differ from `b`'s).
async fn ensure_bucket(
    js: &jetstream::Context,
    b: Bucket,
) -> Result<(kv::Store, Duration), BridgeError> {
    let cfg = stream::Config {
        name: format!("KV_{}", b.name),
        subjects: vec![format!("$KV.{}.>", b.name)],
        max_messages_per_subject: 1,
        max_age: b.max_age,
        max_bytes: b.max_bytes,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        duplicate_window: Duration::from_secs(120).min(if b.max_age.is_zero() {
            Duration::from_secs(120)
        } else {
            b.max_age
        }),
        ..Default::default()
    };
    let stream = js
        .get_or_create_stream(cfg)
        .await
        .map_err(|e| BridgeError::Setup(format!("bucket {}: {e}", b.name)))?;
    let max_age = stream.cached_info().config.max_age;
    let store = js
        .get_key_value(b.name.clone())
        .await
        .map_err(|e| BridgeError::Setup(format!("bucket {}: {e}", b.name)))?;
    Ok((store, max_age))
}

/// 64 random bits: std's hasher keys are random per process (and differ per call), mixed
/// with the time and the process ID.
fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A random bridge ID.
fn random_id() -> String {
    format!("b{:012x}", entropy() & 0xffff_ffff_ffff)
}

/// A random instance token for this bridge's lease values: 16 lowercase hex digits.
fn random_instance() -> String {
    format!("{:016x}", entropy())
}

impl Bridge {
    /// Connects to NATS, creates the stream and buckets if absent, and starts serving every
    /// server whose lease it can take. Must run inside a tokio runtime.
    pub async fn start(config: BridgeConfig) -> Result<Bridge, BridgeError> {
        config.validate()?;
        let bridge_id = config.bridge_id.clone().unwrap_or_else(random_id);
        let instance = random_instance();
        let servers: Arc<[ServerSpec]> = config.servers.clone().into();
        let metrics = Arc::new(Metrics::new(
            &servers,
            &bridge_id,
            config.max_backlog,
            config.max_backlog_bytes,
        ));
        let connected = metrics.nats_connected.clone();
        let slow_consumer_drops = metrics.nats_slow_consumer_drops.clone();
        // async-nats reads no credentials from a URL: they are taken out here and given as
        // options (and the addresses it may show in an error carry none).
        let (addrs, auth) = crate::config::nats_servers(&config.nats_url)?;
        let options = match auth {
            NatsAuth::None => async_nats::ConnectOptions::new(),
            NatsAuth::UserPassword(user, password) => {
                async_nats::ConnectOptions::new().user_and_password(user, password)
            }
            NatsAuth::Token(token) => async_nats::ConnectOptions::new().token(token),
        };
        let nats = options
            // The instance tells apart two processes started under one bridge ID.
            .name(format!("ami-bridge {bridge_id} {instance}"))
            // Every publish ack of the window lands in one subscription: room for all of them.
            .subscription_capacity(config.publish_window.saturating_add(1024).max(64 * 1024))
            .event_callback({
                // When NATS went away, so the way back is said with the outage's length
                // (a "disconnected" warning alone leaves the operator wondering).
                let down_since: Arc<Mutex<Option<Instant>>> = Arc::default();
                // async-nats says SlowConsumer once per message it drops: counted each,
                // logged at most once per interval.
                let slow: Arc<Mutex<LogThrottle<1>>> = Arc::default();
                let who = bridge_id.clone();
                move |event| {
                    let connected = connected.clone();
                    let slow_consumer_drops = slow_consumer_drops.clone();
                    let slow = slow.clone();
                    let down_since = down_since.clone();
                    let who = who.clone();
                    async move {
                        match event {
                            async_nats::Event::Connected => {
                                connected.set(1);
                                if let Some(since) = lock(&down_since).take() {
                                    log::warn!(
                                        "NATS reconnected after {:.1?} (bridge {who})",
                                        since.elapsed()
                                    );
                                }
                            }
                            async_nats::Event::Disconnected => {
                                log::warn!("NATS disconnected; reconnecting (bridge {who})");
                                lock(&down_since).get_or_insert_with(Instant::now);
                                connected.set(0);
                            }
                            async_nats::Event::SlowConsumer(sid) => {
                                slow_consumer_drops.inc();
                                let quiet = lock(&slow).note(0, Instant::now());
                                if let Some(quiet) = quiet {
                                    log::warn!(
                                        "NATS dropped a message of subscription {sid}: it was full (bridge {who}; counted in ami_bridge_nats_slow_consumer_drops_total){}",
                                        crate::throttle::more_since(quiet)
                                    );
                                }
                            }
                            other => log::info!("NATS: {other}"),
                        }
                    }
                }
            })
            .connect(addrs)
            .await
            // Which NATS it was, for the operator with several bridges or a list of URLs:
            // async-nats's error alone says only "IO error: Connection refused".
            .map_err(|e| {
                BridgeError::Connect(format!(
                    "{}: {e}",
                    crate::config::redact_url(&config.nats_url)
                ))
            })?;
        metrics.nats_connected.set(1);
        // API calls (stream and bucket setup, KV) wait at most this long.
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(nats.clone());
        let own_subject = Control::direct_subject(&bridge_id, Some(&instance));
        ensure_stream(&js, &config, &own_subject).await?;
        let (leases, _) = ensure_bucket(
            &js,
            Bucket {
                name: config.lease_bucket.clone(),
                max_age: Duration::ZERO,
                max_bytes: 1 << 20,
            },
        )
        .await?;
        let (idempotency, window) = ensure_bucket(
            &js,
            Bucket {
                name: config.idempotency_bucket.clone(),
                max_age: config.idempotency_window,
                max_bytes: 64 << 20,
            },
        )
        .await?;
        if window != config.idempotency_window {
            // Made by another bridge with another window: its entries live as it says, and
            // a running request's claim is kept alive by that.
            log::warn!(
                "bucket {} expires its entries after {window:?}, not the configured idempotency window ({:?}): its own is used",
                config.idempotency_bucket,
                config.idempotency_window
            );
        }

        let (markers_tx, markers_rx) = mpsc::channel(MARKERS_CAP);
        let terms = Arc::new(Terms::new(servers.len()));
        let (upstream, merged) = Upstream::start(
            servers.clone(),
            config.any_policy,
            markers_rx,
            terms.clone(),
        );
        let late = Arc::new(crate::late::LateAnswers::new(
            idempotency.clone(),
            config.max_late_answer_requests,
            metrics.late.clone(),
        ));
        let control = Arc::new(Control {
            servers: servers.clone(),
            bridge_id: bridge_id.clone(),
            late: late.clone(),
            keys: crate::idempotency::Keys::new(
                idempotency,
                window,
                &instance,
                metrics.idempotency_follow_ups_skipped.clone(),
                metrics.idempotency_claims_forgotten.clone(),
            ),
            instance,
            terms: terms.clone(),
            upstream,
            merged: markers_tx,
            metrics: metrics.clone(),
            nats: nats.clone(),
            action_timeout: config.action_timeout,
            action_slots: Arc::new(Semaphore::new(config.max_actions_in_flight)),
            max_actions: config.max_actions_in_flight,
            serve_lock: Mutex::new(vec![0; servers.len()]),
            reply_log: Mutex::new(crate::actions::ReplyLossLog::default()),
            handlers: Mutex::new(Some(JoinSet::new())),
            give_up: watch::Sender::new(false),
            leases: leases.clone(),
            lease_view: Arc::default(),
        });
        // Every bridge is in the queue groups of `ami.any.action` and of every one of its
        // servers' `ami.<server>.action` for its whole life, served or not: leaving a queue
        // group (or unsubscribing) when a lease goes loses the requests NATS already routed
        // to the member (the client drops what arrives after its unsubscribe, and
        // async-nats 0.51's drain does not wait for the server's PONG). A member that does
        // not serve the server (any server, for `ami.any.action`) forwards the request to the
        // lease holder, on that process's own subject, which it never leaves either.
        let mut subjects = vec![
            ("ami.any.action".to_string(), Route::AnyForwarding),
            (control.own_subject(), Route::Direct),
        ];
        for (ix, spec) in servers.iter().enumerate() {
            subjects.push((format!("ami.{}.action", spec.token), Route::Server(ix)));
        }
        let mut action_subs = Vec::new();
        for (subject, route) in subjects {
            let sub = match route {
                Route::Direct => nats.subscribe(subject.clone()).await,
                _ => {
                    nats.queue_subscribe(subject.clone(), "ami-bridge".to_string())
                        .await
                }
            }
            .map_err(|e| BridgeError::Setup(format!("subscribe to {subject}: {e}")))?;
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(serve_actions(control.clone(), route, sub, stopped));
            action_subs.push((stop, task));
        }
        let mut tasks = Vec::new();
        let publisher = Publisher {
            client: nats.clone(),
            servers: servers.clone(),
            bridge_id: bridge_id.clone(),
            terms,
            metrics: metrics.clone(),
            max_backlog: config.max_backlog,
            max_backlog_bytes: config.max_backlog_bytes,
            window: config.publish_window,
            ack_timeout: PUBLISH_ACK_TIMEOUT,
            stream: config.stream.name.clone(),
            late: Some(late),
        };
        tasks.push(tokio::spawn(publisher.run(merged)));
        // Self-fencing, status gauges and the summaries of lost replies, independent of how
        // long NATS calls take.
        {
            let control = control.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(25));
                let mut n = 0u32;
                loop {
                    tick.tick().await;
                    control.fence_expired();
                    n = n.wrapping_add(1);
                    if n.is_multiple_of(10) {
                        for (ix, status) in control.upstream.statuses() {
                            control.metrics.set_state(ix, status_name(&status));
                        }
                        control.log_reply_summaries(Instant::now());
                    }
                }
            }));
        }
        let metrics_addr = match config.metrics {
            Some(addr) => {
                let (local, task) = metrics::serve(addr, metrics.clone())
                    .await
                    .map_err(BridgeError::Metrics)?;
                tasks.push(task);
                Some(local)
            }
            None => None,
        };
        let (stop, stop_rx) = watch::channel(false);
        let asked = stop_rx.clone();
        let leftovers: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let at_end = control.clone();
        let lease = crate::lease::run(
            leases,
            control.clone(),
            config.lease_ttl,
            config.stand_aside,
            stop_rx,
        );
        let lease_task = tokio::spawn(async move {
            lease.await;
            // Never asked to stop: the `Bridge` was dropped, which the lease loop (leases
            // released) and the action subscriptions (left) take as the end. Nothing else
            // ends the publisher, the status tick and the metrics endpoint then: ended here,
            // once the leases' markers are stored. After `shutdown` they are its to end.
            if !*asked.borrow() {
                leftovers.iter().for_each(tokio::task::AbortHandle::abort);
                // The tick summed up the lost replies only counted; gone, it never will:
                // said now, as `shutdown` says them once its tick is gone.
                at_end.log_reply_summaries_at_end();
            }
        });
        Ok(Bridge {
            control,
            stop,
            lease_task,
            action_subs,
            tasks,
            metrics_addr,
        })
    }

    /// This bridge's ID (in leases, session IDs and the `bridge` metric label).
    pub fn bridge_id(&self) -> &str {
        &self.control.bridge_id
    }

    /// Where the metrics endpoint listens, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The metrics as the endpoint serves them.
    pub fn metrics_text(&self) -> String {
        self.control.metrics.render()
    }

    /// A look at what this bridge has not done yet, usable while
    /// [`shutdown`](Self::shutdown) runs.
    pub fn progress(&self) -> StopProgress {
        StopProgress {
            control: self.control.clone(),
        }
    }

    /// Names of the servers this bridge serves now.
    pub fn serving(&self) -> Vec<String> {
        self.control
            .servers
            .iter()
            .enumerate()
            .filter(|(ix, _)| self.control.terms.current(*ix) != 0)
            .map(|(_, s)| s.name.clone())
            .collect()
    }

    /// Stops cleanly, each step bounded by `flush` except where step 4 says otherwise:
    ///
    /// 1. takes no new action requests (each is answered `not_sent`: nothing was sent,
    ///    retry), and lets those in flight finish: an Originate Asterisk is about to confirm
    ///    gets its answer, not an `unknown` from a session closed under it. Those still
    ///    running after `flush` are answered `unknown` (they may have run), or `not_sent`
    ///    when their action was not sent yet (still claiming its idempotency key), counted
    ///    in `ami_bridge_actions_total`, and their number logged;
    /// 2. logs every AMI session off and waits, at most `flush`, for each one's `Goodbye`
    ///    (Asterisk then logs the manager session as logged off, not as dropped); those
    ///    still open then are closed without it (their number logged);
    /// 3. releases the leases (so another bridge takes over at once) and closes what is
    ///    left of the AMI sessions, each ended by a `lease_released` marker; a lease taken
    ///    after step 1 began (its take already on its way) is released at once and its
    ///    server never connected;
    /// 4. leaves the action subjects (requests then go to the other bridges, or get no
    ///    responders; this step waits for NATS to confirm, at most 5 s whatever `flush`
    ///    is, so that requests NATS already delivered are answered) and gives the publisher
    ///    up to `flush` to send what it holds; what it still holds then is counted in
    ///    `ami_bridge_discarded_total` and its number logged, with the events still queued
    ///    in the AMI sessions.
    ///
    /// A `flush` over [`MAX_SETTING_DURATION`](ami_proto::MAX_SETTING_DURATION) (a year;
    /// `Duration::MAX` as "as long as it takes") is taken as that.
    pub async fn shutdown(self, flush: Duration) {
        // Under the lock sessions start under (see `Control::acquired`): none starts once
        // the stop began.
        let handlers = {
            let _serve = lock(&self.control.serve_lock);
            lock(&self.control.handlers).take()
        };
        if let Some(mut handlers) = handlers {
            self.control.drain_actions(&mut handlers, flush).await;
        }
        // Before the leases go: the lease loop then removes each server from the fleet,
        // which closes its session at once, without a Logoff.
        let not_closed = self.control.upstream.logoff_all(flush).await;
        if not_closed > 0 {
            log::warn!(
                "{not_closed} AMI sessions not closed within {flush:?} of their Logoff: closed without their Goodbye"
            );
        }
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(flush, self.lease_task).await;
        self.control.upstream.close_all();
        // Left only now: until the leases are released, requests are still answered here
        // (refused while stopping), and after it they are forwarded to the new holders.
        let (stops, subs): (Vec<_>, Vec<_>) = self.action_subs.into_iter().unzip();
        for stop in stops {
            let _ = stop.send(());
        }
        let deadline = Instant::now() + DRAIN_LIMIT;
        for mut sub in subs {
            if tokio::time::timeout_at(deadline, &mut sub).await.is_err() {
                log::warn!("an action subscription did not end within {DRAIN_LIMIT:?}; stopped");
                sub.abort();
            }
        }
        tokio::time::sleep(flush.min(Duration::from_millis(100))).await;
        for t in &self.tasks {
            t.abort();
        }
        // Waited for: the publisher counts and logs what it never published as it ends,
        // and that line must be out before this returns (the process ends next).
        for t in self.tasks {
            let _ = t.await;
        }
        // After the tick is gone: the lost replies it had not summed up yet.
        self.control.log_reply_summaries_at_end();
        // The last replies (the `unknown`s among them) reach NATS before the caller ends
        // the process.
        let flushed = tokio::time::timeout(flush, self.control.nats.flush()).await;
        if !matches!(flushed, Ok(Ok(()))) {
            log::warn!("NATS did not take the bridge's last messages within {flush:?} (action replies among them may be lost)");
        }
    }
}

/// Returns once a stop gave up on the requests in flight ([`Control::give_up`]); never if
/// the bridge is gone without one.
async fn given_up(give_up: &mut watch::Receiver<bool>) {
    if give_up.wait_for(|g| *g).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How long requests a stop gave up on have to send their `unknown` answer.
const GIVE_UP_LIMIT: Duration = Duration::from_secs(1);

impl Control {
    /// Waits up to `limit` for the requests in `set` (the stop took it: no more start),
    /// then tells those left to answer (`unknown`, or `not_sent` before their action was
    /// sent) and end.
    async fn drain_actions(&self, set: &mut JoinSet<()>, limit: Duration) {
        async fn all(set: &mut JoinSet<()>) {
            while set.join_next().await.is_some() {}
        }
        if set.is_empty() || tokio::time::timeout(limit, all(set)).await.is_ok() {
            return;
        }
        log::warn!(
            "{} action requests still in flight {limit:?} after the stop began: those not answered yet are answered unknown (they may have run), or not_sent when their action was not sent yet (counted in actions); the others' idempotency keys are left as they are",
            set.len()
        );
        // Stored even with no receiver yet: a task not polled so far sees it when it looks.
        self.give_up.send_replace(true);
        if tokio::time::timeout(GIVE_UP_LIMIT, all(set)).await.is_err() {
            log::warn!(
                "{} action requests did not send their answer within {GIVE_UP_LIMIT:?} of being given up on; stopped without one",
                set.len()
            );
            set.abort_all();
            all(set).await;
        }
    }
}

fn status_name(s: &ServerStatus) -> &'static str {
    match s {
        ServerStatus::Connecting | ServerStatus::LoggingIn => "connecting",
        ServerStatus::Ready { .. } => "ready",
        ServerStatus::BackingOff { .. } | ServerStatus::BreakerOpen { .. } => "disconnected",
        _ => "closed",
    }
}

/// The integration tests' nats-server process, for the unit tests below.
#[cfg(test)]
#[path = "../tests/support/nats_server.rs"]
mod nats_server;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Merged;
    use ami_proto::ClientConfig;
    use ami_sim::tcp::TcpFront;
    use ami_sim::SimConfig;

    use nats_server::Nats;

    /// A bridge's `Control` for one ami-sim server `pbx1` (its server and the fleet's
    /// stream, unread, returned too), as
    /// `Bridge::start` builds it but with no task started: the test is the lease loop, and
    /// reads the markers channel (of `markers_cap`) itself.
    async fn control(
        nats: &Nats,
        markers_cap: usize,
    ) -> (Arc<Control>, mpsc::Receiver<Tagged>, TcpFront, Merged) {
        let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
        let a = front.local_addr();
        let login = ClientConfig::builder("admin", "amp111").build().unwrap();
        let spec = ServerSpec::new("pbx1", a.ip().to_string(), a.port(), login).unwrap();
        let servers: Arc<[ServerSpec]> = vec![spec].into();
        let client = async_nats::connect(format!("nats://127.0.0.1:{}", nats.port))
            .await
            .unwrap();
        let js = jetstream::new(client.clone());
        let bucket = |name: &str, max_age| Bucket {
            name: name.to_string(),
            max_age,
            max_bytes: 1 << 20,
        };
        let (leases, _) = ensure_bucket(&js, bucket("leases", Duration::ZERO))
            .await
            .unwrap();
        let window = Duration::from_secs(60);
        let (idempotency, _) = ensure_bucket(&js, bucket("keys", window)).await.unwrap();
        let metrics = Arc::new(Metrics::new(&servers, "b1", 1000, 1 << 20));
        let (markers_tx, markers_rx) = mpsc::channel(markers_cap);
        let (_unread, upstream_markers) = mpsc::channel(1);
        let terms = Arc::new(Terms::new(servers.len()));
        let (upstream, merged) = Upstream::start(
            servers.clone(),
            ami_proto::fleet::Policy::RoundRobin,
            upstream_markers,
            terms.clone(),
        );
        let control = Arc::new(Control {
            servers,
            bridge_id: "b1".into(),
            late: Arc::new(crate::late::LateAnswers::new(
                idempotency.clone(),
                16,
                metrics.late.clone(),
            )),
            keys: crate::idempotency::Keys::new(
                idempotency,
                window,
                "i1",
                metrics.idempotency_follow_ups_skipped.clone(),
                metrics.idempotency_claims_forgotten.clone(),
            ),
            instance: "i1".into(),
            terms,
            upstream,
            merged: markers_tx,
            metrics,
            nats: client,
            action_timeout: Duration::from_secs(5),
            action_slots: Arc::new(Semaphore::new(8)),
            max_actions: 8,
            serve_lock: Mutex::new(vec![0]),
            reply_log: Mutex::new(crate::actions::ReplyLossLog::default()),
            handlers: Mutex::new(Some(JoinSet::new())),
            give_up: watch::Sender::new(false),
            leases,
            lease_view: Arc::default(),
        });
        // The fleet's items are not read (the test looks at the fleet, not the stream).
        (control, markers_rx, front, merged)
    }

    /// A release that comes while the task `acquired` started still waits to queue its
    /// `lease_acquired` marker (the markers channel full: NATS slow) finds no session to
    /// close; the session must not start after it either, or its items, under a term
    /// still current until the caller ends it, would be published after the
    /// `lease_released` marker, for a server the next bridge may already serve.
    // One thread: the spawned tasks run only while the test waits, so the acquiring task
    // is queued for room before the release is, however loaded the machine.
    #[tokio::test(flavor = "current_thread")]
    async fn a_session_released_before_it_started_never_starts() {
        let Some(nats) = Nats::start() else {
            return;
        };
        let (control, mut markers, _front, _merged) = control(&nats, 1).await;
        // The channel full: the acquiring task waits for room.
        let filler = (0, 1, UpItem::LeaseAcquired { previous: None });
        control.merged.send(filler).await.unwrap();
        control.acquired(0, 7, None, Stamp::now().after(Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A stop (or a give-up) releases term 7 meanwhile.
        let releasing = {
            let control = control.clone();
            tokio::spawn(async move { control.release(0, 7, "shutdown").await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let (_, term, item) = tokio::time::timeout(Duration::from_secs(5), markers.recv())
                .await
                .expect("the markers are queued")
                .unwrap();
            seen.push(match item {
                UpItem::LeaseAcquired { .. } => format!("acquired {term}"),
                UpItem::LeaseReleased { .. } => format!("released {term}"),
                UpItem::Stream(_) => format!("stream item {term}"),
            });
        }
        assert_eq!(seen, ["acquired 1", "acquired 7", "released 7"]);
        assert!(releasing.await.unwrap().is_some(), "term 7 was released");
        // The acquiring task had its room before the release's marker was queued.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            control.upstream.status(0),
            None,
            "the session of term 7 started after its lease_released marker was queued"
        );
    }

    /// A holder whose renewal deadline has passed (stalled; the control task that ends the
    /// term not run yet) may no longer hold the lease: a request on `ami.<server>.action`,
    /// or one forwarded to it by another bridge, is answered `not_sent` (retry), and its
    /// action never reaches the server, as no event of the term is published any more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_holder_past_its_renewal_deadline_sends_no_requested_action() {
        let Some(nats) = Nats::start() else {
            return;
        };
        let (control, _markers, front, _merged) = control(&nats, 16).await;
        control
            .terms
            .start(0, 7, Stamp::now().after(Duration::from_secs(60)));
        control.upstream.add(0);
        let ready = async {
            while !matches!(control.upstream.status(0), Some(ServerStatus::Ready { .. })) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .expect("pbx1 logs in");
        let mut serving = Vec::new();
        for (subject, route) in [
            ("ami.pbx1.action".to_string(), Route::Server(0)),
            (control.own_subject(), Route::Direct),
        ] {
            let sub = control.nats.subscribe(subject).await.unwrap();
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(serve_actions(control.clone(), route, sub, stopped));
            serving.push((stop, task));
        }
        control.nats.flush().await.unwrap();
        let requester = async_nats::connect(format!("nats://127.0.0.1:{}", nats.port))
            .await
            .unwrap();
        let actions_seen = || front.stats().actions;
        let ask = |subject: String, forwarded: bool| {
            let requester = requester.clone();
            async move {
                let mut headers = async_nats::HeaderMap::new();
                if forwarded {
                    headers.insert(FORWARDED_FOR, "pbx1");
                }
                let body = r#"{"headers":[["Action","UserEvent"],["UserEvent","fenced"]]}"#;
                let request = async_nats::Request::new()
                    .payload(body.into())
                    .headers(headers)
                    .timeout(Some(Duration::from_secs(10)));
                let reply = requester.send_request(subject, request).await.unwrap();
                let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
                v["outcome"].as_str().unwrap_or_default().to_string()
            }
        };
        assert_eq!(ask("ami.pbx1.action".into(), false).await, "success");
        let before = actions_seen();
        // Term 7's last renewal gave it a deadline that has passed by the next look.
        control.terms.renewed(0, 7, Stamp::now());
        let direct = ask(control.own_subject(), true).await;
        let named = ask("ami.pbx1.action".into(), false).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = actions_seen() - before;
        assert_eq!(
            (named.as_str(), direct.as_str(), sent),
            ("not_sent", "not_sent", 0),
            "requests answered (on ami.pbx1.action, forwarded) and actions sent to pbx1 past the renewal deadline"
        );
        for (stop, task) in serving {
            let _ = stop.send(());
            task.abort();
        }
    }
}
