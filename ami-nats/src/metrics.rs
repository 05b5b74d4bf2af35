//! Prometheus metrics (through `prometheus-client`) and a minimal HTTP endpoint for them.
//!
//! Counters are per server (label `server`), so `rate()` gives events and actions per second.
//! The endpoint answers any GET with the OpenMetrics text format and closes the connection.

use crate::ack::Refusal;
use crate::actions::ReplyLoss;
use crate::config::ServerSpec;
use crate::upstream::ServerIx;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

type Labels = Vec<(String, String)>;

/// Counters of one server, created once so the hot path touches no label map.
struct PerServer {
    events: Counter,
    published: Counter,
    duplicates: Counter,
    discarded: Counter,
    dropped: Counter,
    /// Per [`Refusal`], in the order of [`Refusal::ALL`].
    refused: [Counter; Refusal::ALL.len()],
}

/// Every metric of a bridge.
pub(crate) struct Metrics {
    registry: Registry,
    names: Vec<String>,
    bridge_id: String,
    per_server: Vec<PerServer>,
    gaps: Family<Labels, Counter>,
    /// Server input the AMI client threw away, per server and reason.
    input_discarded: Family<Labels, Counter>,
    actions: Family<Labels, Counter>,
    state: Family<Labels, Gauge>,
    lease: Family<Labels, Gauge>,
    /// Leases this bridge gave up because it could not use their server, per reason.
    given_up: Family<Labels, Counter>,
    /// Action replies that did not reach their requester, per [`ReplyLoss`].
    replies_lost: [Counter; ReplyLoss::ALL.len()],
    /// Items encoded but not yet handed to NATS.
    pub(crate) backlog: Gauge,
    /// Bytes of those items (bodies and subjects).
    pub(crate) backlog_bytes: Gauge,
    /// Times the publisher went back to its first unacknowledged item.
    pub(crate) publish_retries: Counter,
    /// 1 while the NATS connection is up.
    pub(crate) nats_connected: Gauge,
    /// Other live processes seen running under this bridge's ID, each counted once.
    pub(crate) same_name_peers: Counter,
    /// Forwarded action requests refused for arriving past their deadline.
    pub(crate) actions_expired: Counter,
    /// Messages async-nats dropped because one of this bridge's subscriptions was full.
    pub(crate) nats_slow_consumer_drops: Counter,
    /// Idempotency follow-ups (free a claim, store a reply) skipped for lack of room.
    pub(crate) idempotency_follow_ups_skipped: Counter,
    /// Abandoned idempotency claims forgotten to make room.
    pub(crate) idempotency_claims_forgotten: Counter,
    /// Late answers published, per server and whether their request was known.
    late_answers: Family<Labels, Counter>,
    /// Requests kept for their late answers dropped at the cap, and the stores of late
    /// answers at their keys by result.
    pub(crate) late: crate::late::LateCounters,
}

/// The states a server's `ami_bridge_server_state` gauge can be in.
pub(crate) const STATES: [&str; 5] = [
    "not_served",
    "connecting",
    "ready",
    "disconnected",
    "closed",
];

impl Metrics {
    pub(crate) fn new(
        servers: &[ServerSpec],
        bridge_id: &str,
        max_backlog: usize,
        max_backlog_bytes: usize,
    ) -> Metrics {
        let mut registry = Registry::with_prefix("ami_bridge");
        let per_family = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Counter>::default();
            registry.register(name, help, f.clone());
            f
        };
        let events = per_family(
            &mut registry,
            "events_received",
            "Events taken from Asterisk",
        );
        let published = per_family(
            &mut registry,
            "published",
            "Items stored by JetStream (events and markers)",
        );
        let duplicates = per_family(
            &mut registry,
            "publish_duplicates",
            "Publishes JetStream had stored already (retries)",
        );
        let discarded = per_family(
            &mut registry,
            "discarded",
            "Items not published: the lease was gone, NATS can never take them, or the bridge stopped before NATS took them",
        );
        let dropped = per_family(
            &mut registry,
            "events_dropped",
            "Events dropped by a full queue (published as overflow gaps), or still queued in a session that ended with its gap never published (a stop, a lost lease)",
        );
        let refused = per_family(
            &mut registry,
            "publish_refused",
            "Items JetStream refuses for good, by reason: dropped (also counted in discarded)",
        );
        let gaps = per_family(&mut registry, "gaps", "Gap markers by reason");
        let input_discarded = per_family(
            &mut registry,
            "server_input_discarded",
            "Server input the AMI client threw away, by reason: malformed or over a limit, before_ready (both published as discarded gaps), not_event_or_response, unmatched_response",
        );
        let late_answers = per_family(
            &mut registry,
            "late_answers",
            "The server's answers to action requests that had ended without them (answered timed_out, or given up by a stop), read from the sessions and published as late_answer items (one over the backlog's byte cap is dropped into an overflow gap instead, as an event); request: known (its request still kept: with its idempotency key, if it had one) or unknown (forgotten at the cap or after the grace period: idempotency_key null)",
        );
        let dropped_requests = Counter::default();
        registry.register(
            "late_answer_requests_dropped",
            "Action requests forgotten at the cap (max_late_answer_requests, or 2 MiB) before their late-answer grace period ended: a late answer to one coming after is published with idempotency_key null and not stored at its key (one read before, waiting for its request's reply, was published with its key and is counted as failed in ami_bridge_late_answers_stored_total)",
            dropped_requests.clone(),
        );
        let stored = per_family(
            &mut registry,
            "late_answers_stored",
            "Late answers to requests with an idempotency key, by result of storing them at the key in place of its timed_out reply: stored, superseded (the key held something else by then: that is kept), failed (NATS failed or was too slow, or too many stores ran at once, or the answer, read before its request's reply was known, was forgotten first: the cap, the grace period), not_timed_out (the request was answered otherwise, such as unknown or reply_too_large: the key keeps that reply, the answer is published only)",
        );
        // Present from the start at 0, so alerts on their rate work before the first.
        let result =
            |r: &str| stored.get_or_create_owned(&vec![("result".to_string(), r.to_string())]);
        let late = crate::late::LateCounters {
            dropped: dropped_requests,
            stored: result("stored"),
            superseded: result("superseded"),
            failed: result("failed"),
            not_timed_out: result("not_timed_out"),
        };
        let lost = per_family(
            &mut registry,
            "action_replies_lost",
            "Action replies not sent to their requester, by reason",
        );
        // Present from the start at 0, so alerts on their rate work before the first.
        let replies_lost = ReplyLoss::ALL.map(|r| {
            lost.get_or_create_owned(&vec![("reason".to_string(), r.label().to_string())])
        });
        let actions = per_family(&mut registry, "actions", "Action requests by outcome");
        let state = Family::<Labels, Gauge>::default();
        registry.register(
            "server_state",
            "1 for the server's current state",
            state.clone(),
        );
        let lease = Family::<Labels, Gauge>::default();
        registry.register(
            "lease_held",
            "1 while this bridge holds the server's lease",
            lease.clone(),
        );
        let given_up = per_family(
            &mut registry,
            "leases_given_up",
            "Leases given up because this bridge could not use the server, by reason: login_rejected (for good), breaker_open (unreachable from here); another bridge may take them",
        );
        let backlog = Gauge::default();
        registry.register("backlog", "Items waiting for NATS", backlog.clone());
        let cap = Gauge::<i64>::default();
        cap.set(i64::try_from(max_backlog).unwrap_or(i64::MAX));
        registry.register(
            "backlog_cap",
            "Most items held while NATS is slow or down",
            cap,
        );
        let backlog_bytes = Gauge::default();
        registry.register(
            "backlog_bytes",
            "Bytes of the items waiting for NATS",
            backlog_bytes.clone(),
        );
        let bytes_cap = Gauge::<i64>::default();
        bytes_cap.set(i64::try_from(max_backlog_bytes).unwrap_or(i64::MAX));
        registry.register(
            "backlog_bytes_cap",
            "Most bytes of events held while NATS is slow or down",
            bytes_cap,
        );
        let publish_retries = Counter::default();
        registry.register(
            "publish_retries",
            "Publishes retried from the first unacknowledged one",
            publish_retries.clone(),
        );
        let nats_connected = Gauge::default();
        registry.register(
            "nats_connected",
            "1 while connected to NATS",
            nats_connected.clone(),
        );
        // Nonzero means a misconfiguration (one bridge ID given to two processes): alert on it.
        let same_name_peers = Counter::default();
        registry.register(
            "same_name_peers",
            "Other live bridge processes seen holding a lease under this bridge's ID (one config run twice), each counted once",
            same_name_peers.clone(),
        );
        let actions_expired = Counter::default();
        registry.register(
            "actions_expired",
            "Action requests forwarded to this bridge that arrived past their deadline (Ami-Deadline-Ms): not sent, answered not_sent (also counted in actions)",
            actions_expired.clone(),
        );
        let nats_slow_consumer_drops = Counter::default();
        registry.register(
            "nats_slow_consumer_drops",
            "Messages the NATS client reported dropping because a subscription of this bridge was full (publish acks: retried; action requests: their requesters time out); a lower bound, as the client itself drops such reports in a burst",
            nats_slow_consumer_drops.clone(),
        );
        let idempotency_follow_ups_skipped = Counter::default();
        registry.register(
            "idempotency_follow_ups_skipped",
            "Idempotency keys not brought up to date after their reply (1,024 such updates waiting on NATS already): the key stays as it was until the window ends",
            idempotency_follow_ups_skipped.clone(),
        );
        let idempotency_claims_forgotten = Counter::default();
        registry.register(
            "idempotency_claims_forgotten",
            "Abandoned idempotency claims forgotten (4,096 remembered already): a retry of such a key may be answered duplicate until the window ends, though nothing was sent",
            idempotency_claims_forgotten.clone(),
        );
        let label = |name: &str| vec![("server".to_string(), name.to_string())];
        let per_server = servers
            .iter()
            .map(|s| PerServer {
                events: events.get_or_create_owned(&label(&s.name)),
                published: published.get_or_create_owned(&label(&s.name)),
                duplicates: duplicates.get_or_create_owned(&label(&s.name)),
                discarded: discarded.get_or_create_owned(&label(&s.name)),
                dropped: dropped.get_or_create_owned(&label(&s.name)),
                // Present from the start at 0, so alerts on their rate work before the first.
                refused: Refusal::ALL.map(|r| {
                    refused.get_or_create_owned(&vec![
                        ("server".to_string(), s.name.clone()),
                        ("reason".to_string(), r.label().to_string()),
                    ])
                }),
            })
            .collect();
        let m = Metrics {
            registry,
            names: servers.iter().map(|s| s.name.clone()).collect(),
            bridge_id: bridge_id.to_string(),
            per_server,
            gaps,
            input_discarded,
            actions,
            state,
            lease,
            given_up,
            replies_lost,
            backlog,
            backlog_bytes,
            publish_retries,
            nats_connected,
            same_name_peers,
            actions_expired,
            nats_slow_consumer_drops,
            idempotency_follow_ups_skipped,
            idempotency_claims_forgotten,
            late_answers,
            late,
        };
        for ix in 0..servers.len() {
            m.set_state(ix, "not_served");
            m.set_lease(ix, false);
            // Present from the start at 0, so alerts on their rate work before the first gap.
            for reason in ["overflow", "disconnected", "takeover"] {
                let _ = m.gaps.get_or_create(&m.server_reason(ix, reason));
            }
            for reason in ["login_rejected", "breaker_open"] {
                let _ = m.given_up.get_or_create(&m.server_reason(ix, reason));
            }
        }
        m
    }

    fn name(&self, ix: ServerIx) -> String {
        self.names.get(ix).cloned().unwrap_or_default()
    }

    pub(crate) fn event(&self, ix: ServerIx) {
        if let Some(p) = self.per_server.get(ix) {
            p.events.inc();
        }
    }

    pub(crate) fn published(&self, ix: ServerIx, duplicate: bool) {
        if let Some(p) = self.per_server.get(ix) {
            p.published.inc();
            if duplicate {
                p.duplicates.inc();
            }
        }
    }

    pub(crate) fn discarded(&self, ix: ServerIx) {
        if let Some(p) = self.per_server.get(ix) {
            p.discarded.inc();
        }
    }

    /// Items of server `ix` counted discarded so far.
    #[cfg(test)]
    pub(crate) fn discarded_total(&self, ix: ServerIx) -> u64 {
        self.per_server.get(ix).map_or(0, |p| p.discarded.get())
    }

    /// Events of server `ix` counted dropped so far.
    #[cfg(test)]
    pub(crate) fn dropped_total(&self, ix: ServerIx) -> u64 {
        self.per_server.get(ix).map_or(0, |p| p.dropped.get())
    }

    /// An item JetStream refuses for good, for `reason` (the caller counts it discarded too).
    pub(crate) fn refused(&self, ix: ServerIx, reason: Refusal) {
        if let Some(c) = self
            .per_server
            .get(ix)
            .and_then(|p| p.refused.get(reason.index()))
        {
            c.inc();
        }
    }

    /// An action reply that did not reach its requester.
    pub(crate) fn reply_lost(&self, why: ReplyLoss) {
        if let Some(c) = self.replies_lost.get(why.index()) {
            c.inc();
        }
    }

    /// `n` events dropped by the publisher at the backlog's byte cap.
    pub(crate) fn dropped(&self, ix: ServerIx, n: u64) {
        if let Some(p) = self.per_server.get(ix) {
            p.dropped.inc_by(n);
        }
    }

    fn server_reason(&self, ix: ServerIx, reason: &str) -> Labels {
        vec![
            ("server".into(), self.name(ix)),
            ("reason".into(), reason.into()),
        ]
    }

    /// This bridge gave the lease of `ix` up, unable to use the server for `reason`.
    pub(crate) fn lease_given_up(&self, ix: ServerIx, reason: &str) {
        self.given_up
            .get_or_create(&self.server_reason(ix, reason))
            .inc();
    }

    /// A gap marker; `dropped` events counted (0 when unknown).
    pub(crate) fn gap(&self, ix: ServerIx, reason: &str, dropped: u64) {
        self.gaps
            .get_or_create(&self.server_reason(ix, reason))
            .inc();
        if let Some(p) = self.per_server.get(ix) {
            p.dropped.inc_by(dropped);
        }
    }

    /// `n` discards of server input by the AMI client, for `reason`.
    pub(crate) fn input_discarded(&self, ix: ServerIx, reason: &ami_proto::Discard, n: u64) {
        let label = match reason {
            ami_proto::Discard::Malformed(_) => "malformed",
            ami_proto::Discard::NotEventOrResponse => "not_event_or_response",
            ami_proto::Discard::BeforeReady => "before_ready",
            ami_proto::Discard::UnmatchedResponse => "unmatched_response",
            _ => "other",
        };
        self.input_discarded
            .get_or_create(&self.server_reason(ix, label))
            .inc_by(n);
    }

    /// A late answer of `ix` was published (or dropped at the backlog's byte cap, counted
    /// there too); `known`: its request was still kept.
    pub(crate) fn late_answer(&self, ix: ServerIx, known: bool) {
        let l = vec![
            ("server".into(), self.name(ix)),
            (
                "request".into(),
                if known { "known" } else { "unknown" }.into(),
            ),
        ];
        self.late_answers.get_or_create(&l).inc();
    }

    /// An action request answered with `outcome` (server empty when none was chosen).
    pub(crate) fn action(&self, server: &str, outcome: &str) {
        let l = vec![
            ("server".into(), server.into()),
            ("outcome".into(), outcome.into()),
        ];
        self.actions.get_or_create(&l).inc();
    }

    /// Sets the server's state gauge: 1 for `state`, 0 for the others.
    pub(crate) fn set_state(&self, ix: ServerIx, state: &str) {
        let name = self.name(ix);
        for s in STATES {
            let l = vec![("server".into(), name.clone()), ("state".into(), s.into())];
            self.state.get_or_create(&l).set(i64::from(s == state));
        }
    }

    pub(crate) fn set_lease(&self, ix: ServerIx, held: bool) {
        let l = vec![
            ("server".into(), self.name(ix)),
            ("bridge".into(), self.bridge_id.clone()),
        ];
        self.lease.get_or_create(&l).set(i64::from(held));
    }

    /// The metrics in the OpenMetrics text format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Largest request head read from a scraper.
const MAX_REQUEST: usize = 8 << 10;
/// Scrapes served at once; more wait for the listener's backlog.
const MAX_SCRAPES: usize = 8;

/// Binds `addr` (before returning, so a bad address fails the start) and serves scrapes.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let limit = Arc::new(Semaphore::new(MAX_SCRAPES));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (mut sock, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let mut head = Vec::with_capacity(1024);
                let mut buf = [0u8; 1024];
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    true
                })
                .await;
                if !matches!(read, Ok(true)) {
                    return;
                }
                let body = metrics.render();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_inside_the_nats_client_and_the_idempotency_keys_are_exported_from_zero() {
        let m = Metrics::new(&[], "b1", 10, 10);
        let names = [
            "ami_bridge_nats_slow_consumer_drops_total",
            "ami_bridge_idempotency_follow_ups_skipped_total",
            "ami_bridge_idempotency_claims_forgotten_total",
        ];
        let text = m.render();
        for name in names {
            assert!(
                text.contains(&format!("\n{name} 0\n")),
                "{name} missing:\n{text}"
            );
        }
        m.nats_slow_consumer_drops.inc();
        m.idempotency_follow_ups_skipped.inc_by(2);
        m.idempotency_claims_forgotten.inc_by(3);
        let text = m.render();
        for (name, n) in names.iter().zip(1..) {
            assert!(
                text.contains(&format!("\n{name} {n}\n")),
                "{name} {n}:\n{text}"
            );
        }
    }

    #[test]
    fn every_lost_action_reply_is_counted_under_its_reason_from_zero() {
        let m = Metrics::new(&[], "b1", 10, 10);
        let text = m.render();
        for r in ReplyLoss::ALL {
            let line = format!(
                "ami_bridge_action_replies_lost_total{{reason=\"{}\"}} 0",
                r.label()
            );
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
        for _ in 0..1000 {
            m.reply_lost(ReplyLoss::TooLarge);
        }
        m.reply_lost(ReplyLoss::InvalidSubject);
        let text = m.render();
        for (r, n) in [
            (ReplyLoss::TooLarge, 1000),
            (ReplyLoss::InvalidSubject, 1),
            (ReplyLoss::Other, 0),
        ] {
            let line = format!(
                "ami_bridge_action_replies_lost_total{{reason=\"{}\"}} {n}",
                r.label()
            );
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
    }
}
