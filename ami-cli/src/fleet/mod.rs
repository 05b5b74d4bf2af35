//! Several servers at once (`--server` repeated, or AMI_URL with commas) behind a blocking
//! interface, for `listen`, `action --on` and `bench --servers`, on every runtime: tokio and
//! async-std run `ami-async`'s fleet ([`on_async`]), mio runs `MioFleet` ([`on_mio`]).
//! Each server is named by its `host:port`.

mod on_async;
mod on_mio;

use crate::session::{config, read_ca, CallError, Ticket};
use crate::subscription::Subscription;
use crate::terminal::say;
use crate::url::ServerUrl;
use crate::{words, Connection, Failure, Runtime, EXIT_CONNECT};
use ami_async::fleet::Reply;
use ami_proto::fleet::{FleetItem, ServerName, ServerStatus};
use ami_proto::{Action, ClientConfig, DisconnectReason, Response, SendOptions};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Items taken from the merged stream per wake.
const BATCH: usize = 16_384;

/// What [`Fleet::wait`] reports.
pub(crate) enum Happening {
    /// An item of the merged stream.
    Item(FleetItem),
    /// A server's status changed.
    Status(ServerName, ServerStatus),
    /// The fleet closed and its stream is drained.
    Ended,
    /// An action sent with [`Fleet::send`] finished.
    Completed {
        ticket: Ticket,
        result: Result<Response, CallError>,
    },
}

/// What [`Fleet::call`] gathered within its limit.
pub(crate) struct Called {
    /// The replies that came in time, in the order the servers were asked.
    pub(crate) replies: Vec<Reply>,
    /// Servers asked that had not answered when the limit passed (their answers, if they
    /// come, are not waited for).
    pub(crate) late: Vec<String>,
}

/// One `--server`, checked before anything connects.
struct Member {
    name: String,
    url: ServerUrl,
    config: ClientConfig,
    /// For `amis://`: the CA certificates to trust (`--ca`).
    ca_pem: Option<Vec<u8>>,
}

/// A fleet on one runtime.
trait Engine {
    /// Blocks until items or status changes arrive or `until` passes; appends them.
    fn wait(&mut self, until: Option<Instant>, out: &mut Vec<Happening>) -> Result<(), Failure>;
    /// Sends `action` with `options` to the server named `on` (or every server for `all`)
    /// and waits for the replies, at most `limit`: those in by then, and the servers still
    /// silent.
    fn call(
        &mut self,
        on: &str,
        action: Action,
        options: SendOptions,
        limit: Duration,
    ) -> Result<Called, Failure>;
    /// Sends `action` with `options` to the server named `on` without waiting: a later wait
    /// reports its result once, as [`Happening::Completed`] with the ticket returned here.
    fn send(&mut self, on: &str, action: Action, options: SendOptions) -> Ticket;
    /// Every server's status, by name.
    fn statuses(&self) -> Vec<(String, ServerStatus)>;
    /// Takes the server named `name` out of the fleet (its session closes).
    fn remove(&mut self, name: &str);
    /// Closes every server at once (no Logoff).
    fn close(&mut self);
    /// Logs every server off, waiting at most `grace`, then closes. What arrives meanwhile
    /// (the events each server wrote before its Goodbye, the servers' ends) is appended to
    /// `out`, as [`wait`](Self::wait) would have.
    fn logoff(&mut self, grace: Duration, out: &mut Vec<Happening>);
}

/// Several servers, on the runtime `--runtime` names.
pub(crate) struct Fleet {
    engine: Box<dyn Engine>,
    /// Server name to its URL, for messages.
    pub(crate) urls: HashMap<String, ServerUrl>,
    /// Each server's last loss (a refused connect, a rejected login...), seen in the status
    /// changes [`wait`](Self::wait) passes on: why a server that is trying again when a
    /// deadline passes is not logged in (its status, Connecting, no longer says).
    last_loss: HashMap<String, DisconnectReason>,
}

/// The name of a server in the fleet: `host:port`.
pub(crate) fn name(url: &ServerUrl) -> String {
    url.authority()
}

/// The server `--on NAME` names, if one is.
pub(crate) fn named<'a>(servers: &'a [ServerUrl], on: &str) -> Option<&'a ServerUrl> {
    servers.iter().find(|u| name(u) == on)
}

/// Every server's name, for a message: `a:5038, b:5038`.
pub(crate) fn names(servers: &[ServerUrl]) -> String {
    servers.iter().map(name).collect::<Vec<_>>().join(", ")
}

impl Fleet {
    /// Adds every `--server` (asking for `events`); they connect in the background.
    pub(crate) fn open(
        conn: &Connection,
        events: impl Into<Subscription>,
    ) -> Result<Fleet, Failure> {
        let events = events.into();
        let mut members = Vec::with_capacity(conn.server.len());
        for url in &conn.server {
            members.push(Member {
                name: name(url),
                config: config(conn.auth, &url.user, url.secret.expose(), events.clone())?,
                ca_pem: if url.tls { Some(read_ca(conn)?) } else { None },
                url: url.clone(),
            });
        }
        let urls = members
            .iter()
            .map(|m| (m.name.clone(), m.url.clone()))
            .collect();
        let engine: Box<dyn Engine> = match conn.runtime {
            Runtime::Mio => Box::new(on_mio::MioRun::open(members)?),
            rt => Box::new(on_async::AsyncRun::open(rt, members)?),
        };
        Ok(Fleet {
            engine,
            urls,
            last_loss: HashMap::new(),
        })
    }

    /// Blocks until items or status changes arrive or `until` passes; appends them.
    pub(crate) fn wait(
        &mut self,
        until: Option<Instant>,
        out: &mut Vec<Happening>,
    ) -> Result<(), Failure> {
        let from = out.len();
        let r = self.engine.wait(until, out);
        for happening in out.get(from..).unwrap_or_default() {
            if let Happening::Status(
                server,
                ServerStatus::BackingOff { reason, .. }
                | ServerStatus::BreakerOpen { reason, .. }
                | ServerStatus::Closed { reason },
            ) = happening
            {
                self.last_loss
                    .insert(server.as_str().to_string(), reason.clone());
            }
        }
        r
    }

    /// Sends `action` to the server named `on` (or every server for `all`) and waits for
    /// the replies, at most `limit`: those in by then, and the servers still silent.
    pub(crate) fn call(
        &mut self,
        on: &str,
        action: Action,
        options: SendOptions,
        limit: Duration,
    ) -> Result<Called, Failure> {
        self.engine.call(on, action, options, limit)
    }

    /// Sends `action` to the server named `on` without waiting; its result comes once from
    /// a later [`wait`](Self::wait), as [`Happening::Completed`] with this ticket.
    pub(crate) fn send(&mut self, on: &str, action: Action, options: SendOptions) -> Ticket {
        self.engine.send(on, action, options)
    }

    /// The servers that stopped for good on their own (a login rejected, for instance),
    /// with why, and whether that is every server of the fleet. A logoff or a close asked
    /// for here is not counted.
    pub(crate) fn closed_for_good(&self) -> (Vec<(String, DisconnectReason)>, bool) {
        let statuses = self.engine.statuses();
        let closed: Vec<_> = statuses
            .iter()
            .filter_map(|(name, status)| match status {
                ServerStatus::Closed { reason }
                    if !matches!(
                        reason,
                        DisconnectReason::Logoff | DisconnectReason::LocalClose
                    ) =>
                {
                    Some((name.clone(), reason.clone()))
                }
                _ => None,
            })
            .collect();
        let all = !statuses.is_empty() && closed.len() == statuses.len();
        (closed, all)
    }

    /// Waits until every server has logged in or failed its first try, at most `limit`,
    /// as a single server's command waits for its first login; then takes out of the
    /// fleet each server not logged in, and returns those with why. An action for `all`
    /// then goes to the servers that can answer it now, instead of waiting in a down
    /// server's queue until its deadline. Stream items that arrive meanwhile are not kept:
    /// its callers send actions (`action --on`) or take a snapshot afterwards (`calls`),
    /// which covers every event before it, and so must not wait for items to start.
    pub(crate) fn keep_ready(&mut self, limit: Duration) -> Result<Vec<(String, String)>, Failure> {
        let deadline = Instant::now() + limit;
        let mut ignored = Vec::new();
        let statuses = loop {
            let statuses = self.engine.statuses();
            let settled = statuses
                .iter()
                .all(|(_, s)| !matches!(s, ServerStatus::Connecting | ServerStatus::LoggingIn));
            if settled || Instant::now() >= deadline {
                break statuses;
            }
            self.wait(Some(deadline), &mut ignored)?;
            ignored.clear();
        };
        let mut down = Vec::new();
        for (name, status) in statuses {
            let Some(why) = self.why_not_ready(&name, &status, limit) else {
                continue;
            };
            self.engine.remove(&name);
            down.push((name, why));
        }
        Ok(down)
    }

    /// Why server `name` is not logged in, in words (`None`: it is), `waited` the time its
    /// first login was given.
    fn why_not_ready(&self, name: &str, status: &ServerStatus, waited: Duration) -> Option<String> {
        Some(match status {
            ServerStatus::Ready { .. } => return None,
            ServerStatus::BackingOff { reason, .. }
            | ServerStatus::BreakerOpen { reason, .. }
            | ServerStatus::Closed { reason } => self.words(name, reason),
            // Trying again: the last failure says why better than the time does.
            _ => match self.last_loss.get(name) {
                Some(reason) => format!(
                    "{} (trying again; not logged in within {})",
                    self.words(name, reason),
                    crate::words::duration(waited)
                ),
                None => format!("not logged in within {}", crate::words::duration(waited)),
            },
        })
    }

    /// `reason`, a loss of server `name`, in words.
    fn words(&self, name: &str, reason: &DisconnectReason) -> String {
        match self.urls.get(name) {
            Some(url) => crate::words::reason(reason, url),
            None => reason.to_string(),
        }
    }

    /// Exit 3 for a run in which no server ever logged in (`listen`, `calls --watch` over
    /// `waited`): one line naming each server and why it is not logged in now.
    pub(crate) fn none_ready(&self, waited: Duration) -> Failure {
        let each: Vec<String> = self
            .engine
            .statuses()
            .iter()
            .map(|(name, status)| {
                let why = self
                    .why_not_ready(name, status, waited)
                    .unwrap_or_else(|| "logged in only now".into());
                format!("{name}: {why}")
            })
            .collect();
        Failure::new(
            EXIT_CONNECT,
            format!("no server logged in: {}", each.join("; ")),
        )
    }

    /// Closes every server at once (no Logoff).
    pub(crate) fn close(&mut self) {
        self.engine.close();
    }

    /// Logs every server off, waiting at most `grace`, then closes; what arrives meanwhile
    /// is not kept (a command that prints the stream to its end uses
    /// [`logoff_keeping`](Self::logoff_keeping)).
    pub(crate) fn logoff(&mut self, grace: Duration) {
        self.engine.logoff(grace, &mut Vec::new());
    }

    /// Logs every server off, waiting at most `grace`, then closes, appending to `out` what
    /// arrives until then: the events each server wrote before its Goodbye, then its end.
    pub(crate) fn logoff_keeping(&mut self, grace: Duration, out: &mut Vec<Happening>) {
        self.engine.logoff(grace, out);
    }
}

/// One line on stderr when a server goes down, when its circuit breaker opens (its next
/// try a minute away, not a backoff's), or when it comes back (`listen`, `calls --watch`).
#[derive(Debug, Default)]
pub(crate) struct StatusLines {
    /// Servers down now, and whether their breaker opening was said.
    down: HashMap<String, bool>,
}

impl StatusLines {
    /// Says what `status` of `server` means, if it is news.
    pub(crate) fn say(&mut self, fleet: &Fleet, server: &str, status: &ServerStatus) {
        let Some(url) = fleet.urls.get(server) else {
            return;
        };
        let down = &mut self.down;
        match status {
            ServerStatus::Ready { .. } if down.remove(server).is_some() => {
                say!("ami: {server}: back (logged in again to {url})")
            }
            ServerStatus::BackingOff { until, reason }
            | ServerStatus::BreakerOpen { until, reason } => {
                // Once per outage, and once more if the breaker opens: retries while it
                // stays down are not news.
                let breaker = matches!(status, ServerStatus::BreakerOpen { .. });
                match down.insert(server.to_string(), breaker) {
                    Some(said) if said || !breaker => {
                        down.insert(server.to_string(), said);
                        return;
                    }
                    _ => {}
                }
                say!(
                    "ami: {server}: down: {}",
                    words::lost(reason, Some(*until), breaker, url)
                )
            }
            ServerStatus::Closed { reason }
                if !matches!(
                    reason,
                    DisconnectReason::Logoff | DisconnectReason::LocalClose
                ) =>
            {
                say!("ami: {server}: closed: {}", words::reason(reason, url))
            }
            _ => {}
        }
    }
}
