//! From the merged AMI stream to JetStream: the encoder gives every item its subject, JSON
//! body and message ID; the publisher keeps a window of publishes awaiting their acks and,
//! when NATS fails, publishes again from the first unacknowledged one, in order, with the
//! same message IDs (JetStream drops the copies it already stored).

use crate::config::ServerSpec;
use crate::metrics::Metrics;
use crate::schema::{self, GapReason, Place};
use crate::upstream::{ServerIx, Tagged, UpItem};
use ami_proto::StreamItem;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The lease term each server is served under now (0: not served by this bridge). Items of
/// an older term are discarded, never published: that is what keeps a server from being
/// served twice once its lease is gone.
#[derive(Debug)]
pub(crate) struct Terms(Vec<AtomicU64>);

impl Terms {
    pub(crate) fn new(servers: usize) -> Terms {
        Terms((0..servers).map(|_| AtomicU64::new(0)).collect())
    }
    pub(crate) fn set(&self, ix: ServerIx, term: u64) {
        if let Some(t) = self.0.get(ix) {
            t.store(term, Ordering::SeqCst);
        }
    }
    /// Clears `ix` if it is still at `term`.
    pub(crate) fn clear(&self, ix: ServerIx, term: u64) {
        if let Some(t) = self.0.get(ix) {
            let _ = t.compare_exchange(term, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
    pub(crate) fn is_current(&self, ix: ServerIx, term: u64) -> bool {
        term != 0
            && self
                .0
                .get(ix)
                .is_some_and(|t| t.load(Ordering::SeqCst) == term)
    }
}

/// One item ready to publish.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) ix: ServerIx,
    pub(crate) term: u64,
    pub(crate) subject: String,
    pub(crate) msg_id: String,
    pub(crate) payload: Bytes,
}

/// A bridge's tenure of one server: the `session` of the JSON and message IDs.
struct Tenure {
    session: String,
    position: u64,
}

/// Turns merged items into [`Outgoing`]s, in order, into the bounded backlog.
pub(crate) struct Encoder {
    pub(crate) servers: Arc<[ServerSpec]>,
    pub(crate) bridge_id: String,
    pub(crate) terms: Arc<Terms>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Encoder {
    pub(crate) async fn run(
        self,
        mut merged: mpsc::Receiver<Tagged>,
        backlog: mpsc::Sender<Outgoing>,
    ) {
        let mut tenures: HashMap<ServerIx, Tenure> = HashMap::new();
        while let Some((ix, term, item)) = merged.recv().await {
            let Some(spec) = self.servers.get(ix) else {
                continue;
            };
            if !self.terms.is_current(ix, term) {
                self.metrics.discarded(ix);
                continue;
            }
            if let UpItem::LeaseAcquired { .. } = item {
                tenures.insert(
                    ix,
                    Tenure {
                        session: format!("{}-{term}", self.bridge_id),
                        position: 0,
                    },
                );
            }
            let Some(tenure) = tenures.get_mut(&ix) else {
                continue;
            };
            for (subject, position, body) in self.encode(spec, ix, tenure, item) {
                let msg_id = format!("{}.{}.{position}", spec.token, tenure.session);
                let out = Outgoing {
                    ix,
                    term,
                    subject,
                    msg_id,
                    payload: Bytes::from(body),
                };
                if backlog.send(out).await.is_err() {
                    return;
                }
                self.metrics.backlog.inc();
            }
        }
    }

    /// The subjects and bodies for one item (a lost session gives a marker and a gap).
    fn encode(
        &self,
        spec: &ServerSpec,
        ix: ServerIx,
        tenure: &mut Tenure,
        item: UpItem,
    ) -> Vec<(String, u64, String)> {
        let token = &spec.token;
        let mut out = Vec::with_capacity(1);
        // Each item takes the next position of the tenure.
        let mut add = |subject: String, body: &dyn Fn(Place<'_>) -> String| {
            tenure.position += 1;
            let place = Place {
                server: &spec.name,
                session: &tenure.session,
                position: tenure.position,
            };
            out.push((subject, tenure.position, body(place)));
        };
        let bridge = self.bridge_id.as_str();
        match item {
            UpItem::Stream(StreamItem::Event(msg)) => {
                self.metrics.event(ix);
                let name = msg
                    .event()
                    .map_or_else(|| "_".to_string(), crate::config::subject_token);
                add(format!("ami.{token}.event.{name}"), &|p| {
                    schema::event(p, &msg)
                });
            }
            UpItem::Stream(StreamItem::Gap { dropped }) => {
                self.metrics.gap(ix, "overflow", dropped);
                add(format!("ami.{token}.gap"), &|p| {
                    schema::gap(p, GapReason::Overflow, Some(dropped))
                });
            }
            UpItem::Stream(StreamItem::Ready { ami_version }) => {
                add(format!("ami.{token}.session"), &|p| {
                    schema::session(
                        p,
                        "connected",
                        &[("bridge", bridge), ("ami_version", &ami_version)],
                    )
                });
            }
            UpItem::Stream(StreamItem::Disconnected { reason }) => {
                let reason = reason.to_string();
                add(format!("ami.{token}.session"), &|p| {
                    schema::session(
                        p,
                        "disconnected",
                        &[("bridge", bridge), ("reason", &reason)],
                    )
                });
                self.metrics.gap(ix, "disconnected", 0);
                add(format!("ami.{token}.gap"), &|p| {
                    schema::gap(p, GapReason::Disconnected, None)
                });
            }
            // Marks belong to actions sent with one; the bridge sends none.
            UpItem::Stream(_) => {}
            UpItem::LeaseAcquired { previous } => {
                let mut extra = vec![("bridge", bridge)];
                if let Some(prev) = &previous {
                    extra.push(("previous_bridge", prev.as_str()));
                }
                add(format!("ami.{token}.session"), &|p| {
                    schema::session(p, "lease_acquired", &extra)
                });
                if previous.is_some() {
                    self.metrics.gap(ix, "takeover", 0);
                    add(format!("ami.{token}.gap"), &|p| {
                        schema::gap(p, GapReason::Takeover, None)
                    });
                }
            }
        }
        out
    }
}

type AckFuture = Pin<
    Box<
        dyn Future<
                Output = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
            > + Send,
    >,
>;

/// Longest pause between publish retries while NATS is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Publishes the backlog in order with up to `window` acks outstanding.
pub(crate) async fn publish(
    js: jetstream::Context,
    mut backlog: mpsc::Receiver<Outgoing>,
    terms: Arc<Terms>,
    window: usize,
    metrics: Arc<Metrics>,
) {
    let mut inflight: VecDeque<(Outgoing, AckFuture)> = VecDeque::with_capacity(window);
    // Items to (re)send before anything new from the backlog, in stream order.
    let mut resend: VecDeque<Outgoing> = VecDeque::new();
    let mut backoff = Duration::from_millis(50);
    let mut closed = false;
    loop {
        // Fill the window.
        let mut failed = false;
        while inflight.len() < window {
            let o = match resend.pop_front() {
                Some(o) => o,
                None => match backlog.try_recv() {
                    Ok(o) => {
                        metrics.backlog.dec();
                        o
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                },
            };
            if !terms.is_current(o.ix, o.term) {
                metrics.discarded(o.ix);
                continue;
            }
            let msg = PublishMessage::build()
                .payload(o.payload.clone())
                .message_id(&o.msg_id);
            match js.send_publish(o.subject.clone(), msg).await {
                Ok(ack) => {
                    let ack: PublishAckFuture = ack;
                    inflight.push_back((o, ack.into_future()));
                }
                Err(e) => {
                    log::warn!("NATS publish failed: {e}");
                    resend.push_front(o);
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            if inflight.is_empty() {
                if closed && resend.is_empty() {
                    return;
                }
                match backlog.recv().await {
                    Some(o) => {
                        metrics.backlog.dec();
                        resend.push_back(o);
                    }
                    None => closed = true,
                }
                continue;
            }
            let room = inflight.len() < window && resend.is_empty() && !closed;
            tokio::select! {
                biased;
                acked = async { match inflight.front_mut() { Some((_, f)) => f.await, None => std::future::pending().await } } => {
                    match acked {
                        Ok(ack) => {
                            if let Some((o, _)) = inflight.pop_front() {
                                metrics.published(o.ix, ack.duplicate);
                            }
                            backoff = Duration::from_millis(50);
                            continue;
                        }
                        Err(e) => {
                            log::warn!("NATS publish not acknowledged: {e}");
                            failed = true;
                        }
                    }
                }
                o = backlog.recv(), if room => match o {
                    Some(o) => {
                        metrics.backlog.dec();
                        resend.push_back(o);
                        continue;
                    }
                    None => {
                        closed = true;
                        continue;
                    }
                }
            }
        }
        if failed {
            // Everything not acknowledged goes again, in order, with the same message IDs.
            metrics.publish_retries.inc();
            while let Some((o, _)) = inflight.pop_back() {
                resend.push_front(o);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
