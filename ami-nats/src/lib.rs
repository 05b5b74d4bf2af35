//! # ami-nats: Asterisk servers on NATS JetStream
//!
//! A bridge connects Asterisk Manager Interface servers to a NATS server with JetStream:
//!
//! - every event is published on `ami.<server>.event.<Event>` with its headers in wire order
//!   (JSON, the schema of `ami listen`, see [`schema`]) and a message ID built from the
//!   server, the session and the position, so a publish retried after a NATS hiccup is stored
//!   once (JetStream de-duplication); `<Event>` is the name as one subject token (a
//!   character outside `[A-Za-z0-9_-]` becomes `_`, an empty name is `_`, a name over 128
//!   bytes is cut and ends in `-` and a hash of the whole name), the body has it as sent;
//! - gaps and session boundaries are published on `ami.<server>.gap` and
//!   `ami.<server>.session`, so a consumer knows exactly where it missed events;
//! - the server's answer to an action request that came after its requester was told
//!   `timed_out` is published on `ami.<server>.event.late_answer`, and stored at the
//!   request's idempotency key in place of that reply (see
//!   [Late answers](crate#late-answers));
//! - the servers a bridge serves are one `ami_tokio` fleet: its merged stream is fair across
//!   servers (a flooding server loses its own events, counted, never a quiet one's);
//! - actions arrive as NATS requests on `ami.<server>.action` or `ami.any.action` (queue
//!   groups of every running bridge, which it never leaves while it runs: a member that
//!   does not serve the server, or serves none, forwards the request to the lease holder,
//!   on that process's own subject `ami.bridge.<bridge>_<instance>.action` (bridge ID and
//!   instance token from the lease value; `ami.bridge.<bridge>.action` when the value has
//!   no instance, written by an older bridge), so a request never waits on a bridge that
//!   has just lost the lease, and reaches only the process that holds it; on
//!   `ami.any.action` a ready server is picked by the fleet's routing policy,
//!   [`BridgeConfig::any_policy`]) and the
//!   reply carries the outcome kind (see [`actions`]); an idempotency key runs a request at
//!   most once per key within a window;
//! - several bridges may run for the same servers: each server is served by exactly one at a
//!   time through a lease in a KV bucket (see [`lease`](crate#leases-and-failover)); each
//!   bridge ID ([`BridgeConfig::bridge_id`]) belongs to one process at a time, but two
//!   processes started under one ID by mistake are told apart by a random instance token
//!   made at start: each serves, renews, releases and answers forwarded actions for its own
//!   leases only, and a process that sees another live one under its ID logs a warning
//!   (once per other process, again hourly while it runs) and counts it in
//!   `ami_bridge_same_name_peers_total`;
//! - bounded everywhere: when NATS is slow or down, the AMI sessions keep reading (Asterisk is
//!   never stalled into its 100 ms write timeout), the backlog is capped in items and bytes,
//!   and what had to be dropped is counted and published as an `overflow` gap when NATS is
//!   back; what the NATS client drops from a full subscription, and the idempotency
//!   bookkeeping it has no room for, are counted too (`ami_bridge_nats_slow_consumer_drops_total`,
//!   `ami_bridge_idempotency_follow_ups_skipped_total`,
//!   `ami_bridge_idempotency_claims_forgotten_total`) and logged, rate-limited.
//!
//! ## NATS URL and credentials
//!
//! [`BridgeConfig::new`] takes one NATS URL or a comma-separated list of them. async-nats
//! reads no credentials from a URL: the bridge takes `user:password@` or `token@` out of
//! them (percent-escapes decoded; the last `@` ends the secret, and a raw `,` in it does not
//! split the list) and passes them as
//! connection options, the same set for every server of the list (a URL without user info
//! uses the others'; two different sets are refused). [`redact_url`] shows a URL without
//! its secret; no log line or error of the bridge holds one.
//!
//! ```no_run
//! use ami_nats::{Bridge, BridgeConfig, ServerSpec};
//! use ami_proto::ClientConfig;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let login = ClientConfig::builder("admin", "amp111").build()?;
//! let pbx1 = ServerSpec::new("pbx1", "127.0.0.1", 5038, login)?;
//! let bridge = Bridge::start(BridgeConfig::new("nats://127.0.0.1:4222", vec![pbx1])).await?;
//! tokio::time::sleep(Duration::from_secs(60)).await;
//! bridge.shutdown(Duration::from_secs(2)).await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Sessions and positions
//!
//! A *session* (the `"session"` of every body, `<bridge>-<lease revision>`) is one bridge's
//! tenure of one server, from taking its lease to losing it. Within it every published item
//! (events and markers) has the next `"position"` (1, 2, 3...), and the JetStream message ID
//! is `<server>.<session>.<position>`. A session starts with a `lease_acquired` marker (and a
//! `takeover` gap naming the previous bridge if there was one); each AMI login adds a
//! `ready` marker, each lost AMI connection a `lost` marker and a gap with an unknown count.
//! Server input the AMI client threw away that may have been events (a message over a
//! decoder limit or malformed, events before the session was ready) is a `discarded` gap
//! with its count; every discard is also counted in
//! `ami_bridge_server_input_discarded_total` by reason. The server's answer to an action
//! request that came after its requester was answered (`timed_out`) is an item of the
//! session too, a `late_answer` (see [Late answers](crate#late-answers)).
//! A bridge that stops cleanly ([`Bridge::shutdown`]) first stops taking action requests and
//! lets those in flight finish (bounded), logs each AMI session off (its `lost` marker says
//! `logoff`), then ends each session with a
//! `lease_released` marker (`"reason":"shutdown"`), stored before the lease is written
//! `released`, so the next bridge's items come after it. A bridge that cannot use a server it
//! holds (its login rejected for good, or its circuit breaker open: that many connects in a
//! row failed from here) gives the lease up the same way within a quarter of a second, its
//! marker's `reason` saying why (`login_rejected`, `breaker_open`), counted in
//! `ami_bridge_leases_given_up_total`: a bridge with its own password and its own route to
//! the server takes it at once. It keeps out of that lease for
//! [`BridgeConfig::stand_aside`] (60 s), then competes again, so a lone bridge tries its
//! login once a minute instead of giving up for good.
//!
//! ## Late answers
//!
//! A request answered `timed_out` (its action written, no answer in time: it may have run),
//! or given up by a stop once its action was written (`unknown`), may still be answered by
//! Asterisk moments later: a Redirect that did move the call, a sync Originate whose call
//! was answered. The bridge publishes that answer, once, where it came in the server's
//! stream, on `ami.<server>.event.late_answer` (a subject the stream's `ami.*.event.>`
//! covers; a server event named `late_answer` would share it, the body's `type` tells them
//! apart), with the session, position and message ID of every item:
//!
//! ```json
//! {"type":"late_answer","server":"pbx1","session":"b1-7","position":42,
//!  "action_id":"1a2b3c4d-17","idempotency_key":"order-4711",
//!  "response":[["Response","Success"],["ActionID","1a2b3c4d-17"],["Message","Redirect successful"]]}
//! ```
//!
//! `idempotency_key` is `null` when the request had none, or when the bridge no longer
//! knows the request: it keeps at most [`BridgeConfig::max_late_answer_requests`] (4,096)
//! and 2 MiB of them, each while its action runs and for the AMI client's grace period after
//! it ended (the server's `action_timeout`: past it the client drops a late answer, counted
//! in its stats); one dropped at that cap is counted in
//! `ami_bridge_late_answer_requests_dropped_total` and logged. Its answer is published all
//! the same. Late answers read from the sessions are counted in
//! `ami_bridge_late_answers_total{server,request="known"|"unknown"}`; one that does not fit
//! the backlog's byte cap is dropped as an event is (an `overflow` gap, counted there too),
//! and still stored at its key.
//!
//! When the request had an idempotency key and the key still holds this request's
//! `timed_out` reply, that reply is replaced (compare-and-set on its revision: any other
//! write since wins) by the server's real answer, marked late:
//! `{"type":"outcome","server":S,"outcome":"success","late":true,"response":[...]}`
//! (`server_error` with an `error` for `Response: Error`), so that a retry with the key is
//! answered `duplicate` with what the server did. The store runs beside the publishing,
//! never in its way: bounded to 5 s and 64 at once; counted in
//! `ami_bridge_late_answers_stored_total{result}` (`stored`, `superseded`, `failed`,
//! `not_timed_out`), a failure logged. A request answered otherwise than `timed_out`
//! (`unknown`, `reply_too_large`) keeps that reply at its key; its late answer is
//! published only (`not_timed_out`). An answer read before its request's reply is known
//! (the two come from one completion, and run at once on a multi-threaded runtime) is kept
//! with the request, counted in the 2 MiB, until that reply is: then stored if it is
//! `timed_out`; one whose request is forgotten first (the cap, the grace period) is
//! counted as `failed` and logged.
//!
//! Every action the bridge sends carries an answer mark (`SendOptions::with_answer_mark`)
//! for this: it puts nothing in the event stream and takes no place in the event queue, so
//! a publisher held at its backlog cap (JetStream refusing) never gets actions refused.
//!
//! ## Leases and failover
//!
//! See the `lease` module source for the algorithm and why it never lets two bridges serve
//! one server at once: compare-and-set on the KV revision, self-fencing before the TTL runs
//! out, takeover after a standby saw the same revision for a whole TTL. Another bridge takes
//! a server over within about the lease TTL ([`BridgeConfig::lease_ttl`], 10 s) when its
//! holder dies, at once when it stops cleanly; a bridge that fenced itself because NATS did
//! not answer its renewals in time takes its own lease back at its next look once NATS
//! answers, if no other bridge took it meanwhile.
//!
//! ## What NATS refuses
//!
//! An item JetStream refuses for good (its `err_code` says so: over the stream's
//! `max_msg_size`, a sealed stream, and the others of the `ack` module) is dropped, counted in
//! `ami_bridge_publish_refused_total{reason}` and logged at most once per reason every 10 s,
//! so that no item can block the publishing behind it; an item over NATS's own max payload,
//! or on a subject NATS will not take, is dropped, counted in `ami_bridge_discarded_total`
//! and logged the same way. Refusals that can pass (no stream listening on the subject now, a
//! `DiscardNew` stream at its limits, resources, cluster elections) are retried. While NATS
//! is down the backlog is capped in items and in bytes ([`BridgeConfig::max_backlog`], [`BridgeConfig::max_backlog_bytes`]: 64 MiB by default);
//! what does not fit is counted and published as an `overflow` gap. A refusal that passes
//! is logged like the others, at most once every 10 s with the count not logged.
//!
//! Every publish carries the reply subject of its ack (`_INBOX.<random>.<n>`), which whoever
//! reads the event subjects sees and, with publish rights on `_INBOX.>`, can answer. An
//! answer that does not name the bridge's stream is ignored (logged, rate-limited); one that
//! names it cannot be told from JetStream's, so only NATS permissions keep readers from
//! acknowledging events that JetStream never stored: give event readers no publish right on
//! `_INBOX.>` (or `allow_responses` only). Text from NATS (acks, KV values) reaches the log
//! escaped and cut to a few hundred bytes.
//!
//! ## Stopping
//!
//! [`Bridge::shutdown`] (what `ami bridge` does on Ctrl-C, SIGTERM or SIGHUP) stops taking action
//! requests (those arriving are answered `not_sent`), lets those in flight finish within its
//! grace (2 s in `ami bridge`), answers those still running `unknown` (or `not_sent` when
//! their action was not sent yet), logs every AMI session off (waiting for each `Goodbye`
//! within the same grace), ends each session with its `lease_released` marker and
//! releases the leases. Events NATS had not taken by then are counted in
//! `ami_bridge_discarded_total` and their number logged. [`Bridge::progress`] tells, while
//! it runs, what it has not done yet ([`Unfinished`]), for a caller that must end the
//! process before it is done (`ami bridge` on a second Ctrl-C).
//!
//! ## Stream and buckets
//!
//! Created when absent. An existing stream is used with its own limits, once its subjects
//! are checked: they must cover what the bridge publishes for each of its servers
//! (`ami.<server>.event.>`, `ami.<server>.gap`, `ami.<server>.session`, one subject of the
//! stream covering each, with NATS wildcard rules) and overlap no action subject
//! (`ami.*.action`, this process's `ami.bridge.<bridge>_<instance>.action`); otherwise
//! [`Bridge::start`] fails with [`BridgeError::StreamSubjects`] and starts nothing (items a
//! stream does not take would be retried for ever; a stream capturing the requests would
//! answer them with a publish ack while the bridge runs them too). What is created:
//! - stream `AMI` ([`StreamLimits`]): subjects `ami.*.event.>`, `ami.*.gap`,
//!   `ami.*.session`; file storage, 24 h, 1 GiB, oldest dropped first; de-duplication window
//!   2 min;
//! - KV `ami_leases`: history 1, 1 MiB, file storage, no expiry (one small key per server);
//! - KV `ami_idempotency`: history 1, entries expire after the idempotency window (10 min),
//!   64 MiB (when full, requests with a key are answered `not_sent`). A request claims its
//!   key with a *claiming* value and confirms it (compare-and-set to a *running* value)
//!   right before its action is sent; a claiming value is taken over by any other request
//!   with the key (see the `idempotency` module). A running claim is written again every
//!   third of the window while it runs, so a key never expires under an action in flight;
//!   an existing bucket's own `max_age` is used.
#![forbid(unsafe_code)]

mod ack;
pub mod actions;
mod bridge;
mod config;
mod idempotency;
mod late;
mod lease;
mod metrics;
mod publish;
mod shown;
mod subject;
mod throttle;
mod upstream;

/// The JSON the bridge publishes (events, gap and session markers, late answers, action
/// replies' headers): the crate `ami-json`, the schema `ami listen` writes too.
pub use ami_json as schema;

pub use actions::{ActionRequest, RequestError};
pub use bridge::{Bridge, BridgeError, StopProgress, StreamProblem, Unfinished};
pub use config::{
    redact_url, url_secrets, BridgeConfig, BridgeConfigError, ServerSpec, StreamLimits,
    MAX_ACTIONS_IN_FLIGHT, MAX_SERVER_NAME_LEN,
};
