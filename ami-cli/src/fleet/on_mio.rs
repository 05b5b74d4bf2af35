//! `--runtime mio` with several servers: one `MioFleet` on this thread; a wait is the
//! fleet's blocking wait plus one non-blocking step.

use super::{Called, Engine, Happening, Member, BATCH};
use crate::session::{CallError, Ticket};
use crate::{Failure, EXIT_OTHER, EXIT_USAGE};
use ami_async::fleet::Reply;
use ami_async::AmiError;
use ami_mio::MioFleet;
use ami_proto::fleet::{FleetItem, FleetOutput, Route, RouteError, ServerName, ServerStatus};
use ami_proto::{Action, ActionId, SendOptions};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A routed action: the server it went to and its ActionID there.
type Key = (ServerName, ActionId);

fn io_failure(e: impl std::fmt::Display) -> Failure {
    Failure::new(EXIT_OTHER, format!("mio: {e}"))
}

pub(super) struct MioRun {
    fleet: MioFleet,
    names: Vec<String>,
    batch: Vec<FleetItem>,
    /// Status changes seen while waiting for replies, handed out by the next wait.
    held: Vec<Happening>,
    closed: bool,
    next_ticket: Ticket,
    /// Actions sent with [`Engine::send`], by where they went.
    tickets: HashMap<Key, Ticket>,
}

impl MioRun {
    pub(super) fn open(members: Vec<Member>) -> Result<MioRun, Failure> {
        let mut fleet = MioFleet::new().map_err(io_failure)?;
        let mut names = Vec::with_capacity(members.len());
        for m in members {
            // By name: MioFleet resolves it on helper threads before a connect (an answer
            // serves 30 s) and tries every address, so a name that does not resolve is a
            // server that is down (and retried), as on the other runtimes.
            let now = Instant::now();
            let host = m.url.authority();
            match &m.ca_pem {
                None => fleet
                    .add_host(now, &m.name, m.config, host)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Some(pem) => add_tls(&mut fleet, now, &m, host, pem)?,
            }
            .map_err(|e| Failure::new(EXIT_USAGE, format!("--server {}: {e}", m.url)))?;
            names.push(m.name);
        }
        Ok(MioRun {
            fleet,
            names,
            batch: Vec::new(),
            held: Vec::new(),
            closed: false,
            next_ticket: 0,
            tickets: HashMap::new(),
        })
    }

    /// One non-blocking step: status changes and the completions of [`Engine::send`] to
    /// `out`, other completions to `done`, and the stream's items to `out` when `items` is
    /// set.
    fn step(
        &mut self,
        out: &mut Vec<Happening>,
        done: &mut HashMap<Key, Reply>,
        items: bool,
    ) -> Result<(), Failure> {
        let report = self.fleet.step(Instant::now()).map_err(io_failure)?;
        for news in report.news {
            match news {
                FleetOutput::Status { server, status } => {
                    out.push(Happening::Status(server, status))
                }
                FleetOutput::Completed {
                    server,
                    id,
                    outcome,
                } => {
                    let key = (server, id);
                    if let Some(ticket) = self.tickets.remove(&key) {
                        out.push(Happening::Completed {
                            ticket,
                            result: outcome.map_err(CallError::Action),
                        });
                        continue;
                    }
                    let (server, id) = key;
                    done.insert(
                        (server.clone(), id),
                        Reply {
                            server,
                            result: outcome.map_err(AmiError::Action),
                        },
                    );
                }
                _ => {}
            }
        }
        if items && report.events {
            self.fleet.poll_events(&mut self.batch, BATCH);
            out.extend(self.batch.drain(..).map(Happening::Item));
        }
        Ok(())
    }

    /// Blocks until I/O, the fleet's next deadline, or `until`.
    fn block(&mut self, until: Option<Instant>) -> Result<(), Failure> {
        let timeout = until.map(|t| t.saturating_duration_since(Instant::now()));
        self.fleet.wait(timeout).map_err(io_failure)
    }

    fn all_closed(&self) -> bool {
        self.names.iter().all(|n| {
            self.fleet
                .status(n)
                .is_none_or(|s| matches!(s, ServerStatus::Closed { .. }))
        })
    }
}

/// Adds `m` over TLS; the outer error is a bad `--ca`, the inner one the fleet's refusal.
#[cfg(feature = "tls")]
fn add_tls(
    fleet: &mut MioFleet,
    now: Instant,
    m: &Member,
    host: String,
    pem: &[u8],
) -> Result<Result<(), String>, Failure> {
    let tls = ami_mio::Tls {
        config: ami_mio::client_config_from_pem(pem)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("--ca: {e}")))?,
        server_name: m.url.host.clone(),
    };
    Ok(fleet
        .add_host_tls(now, &m.name, m.config.clone(), host, tls)
        .map(drop)
        .map_err(|e| e.to_string()))
}

#[cfg(not(feature = "tls"))]
fn add_tls(
    _: &mut MioFleet,
    _: Instant,
    _: &Member,
    _: String,
    _: &[u8],
) -> Result<Result<(), String>, Failure> {
    Err(Failure::new(EXIT_USAGE, "amis:// needs the `tls` feature"))
}

impl Engine for MioRun {
    fn wait(&mut self, until: Option<Instant>, out: &mut Vec<Happening>) -> Result<(), Failure> {
        if !self.held.is_empty() {
            out.append(&mut self.held);
            return Ok(());
        }
        let mut done = HashMap::new();
        loop {
            self.step(out, &mut done, true)?;
            if self.closed && self.all_closed() && !self.fleet.fleet().has_events() {
                out.push(Happening::Ended);
            }
            if !out.is_empty() || until.is_some_and(|t| Instant::now() >= t) {
                return Ok(());
            }
            self.block(until)?;
        }
    }

    fn call(
        &mut self,
        on: &str,
        action: Action,
        options: SendOptions,
        limit: Duration,
    ) -> Result<Called, Failure> {
        let now = Instant::now();
        let end = now + limit;
        let sent = if on == "all" {
            self.fleet.send_all_with(now, &action, options)
        } else {
            match self
                .fleet
                .send_with(now, Route::Server(on), action, options)
            {
                // The server's refusal is said as its failure below, as with `--on all`
                // (`RouteError::Send` names the server already: "--on NAME: NAME: ...").
                Err(e @ RouteError::Send { .. }) => vec![Err(e)],
                Err(e) => return Err(Failure::new(EXIT_USAGE, format!("--on {on}: {e}"))),
                ok => vec![ok],
            }
        };
        let mut replies: Vec<Result<Key, Reply>> = Vec::with_capacity(sent.len());
        for r in sent {
            match r {
                Ok(routed) => replies.push(Ok((routed.server, routed.id))),
                Err(RouteError::Send { server, error }) => replies.push(Err(Reply {
                    server,
                    result: Err(AmiError::Send(error)),
                })),
                // Only a server removed meanwhile gets here: nothing was sent.
                Err(_) => {}
            }
        }
        let mut done = HashMap::new();
        let mut held = Vec::new();
        loop {
            self.step(&mut held, &mut done, false)?;
            // Checked after the step, before blocking: the step that brings the last reply
            // must not be followed by a wait for the next timer (the heartbeat, 20 s).
            if !replies
                .iter()
                .any(|r| r.as_ref().is_ok_and(|k| !done.contains_key(k)))
            {
                break;
            }
            if Instant::now() >= end {
                // The replies already in are kept: the caller prints them and names the rest.
                break;
            }
            self.block(Some(end))?;
        }
        self.held.append(&mut held);
        let mut called = Called {
            replies: Vec::with_capacity(replies.len()),
            late: Vec::new(),
        };
        for r in replies {
            match r {
                Ok(routed) => match done.remove(&routed) {
                    Some(reply) => called.replies.push(reply),
                    None => called.late.push(routed.0.as_str().to_string()),
                },
                Err(reply) => called.replies.push(reply),
            }
        }
        Ok(called)
    }

    fn send(&mut self, on: &str, action: Action, options: SendOptions) -> Ticket {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        match self
            .fleet
            .send_with(Instant::now(), Route::Server(on), action, options)
        {
            Ok(routed) => {
                self.tickets.insert((routed.server, routed.id), ticket);
            }
            // Refused at once: reported by the next wait, as the other runtimes do.
            Err(e) => self.held.push(Happening::Completed {
                ticket,
                result: Err(match e {
                    RouteError::Send { error, .. } => CallError::Refused(error),
                    _ => CallError::Closed,
                }),
            }),
        }
        ticket
    }

    fn statuses(&self) -> Vec<(String, ServerStatus)> {
        self.names
            .iter()
            .filter_map(|n| Some((n.clone(), self.fleet.status(n)?.clone())))
            .collect()
    }

    fn remove(&mut self, name: &str) {
        self.fleet.remove(Instant::now(), name);
        self.names.retain(|n| n != name);
    }

    fn close(&mut self) {
        self.closed = true;
        self.fleet.close_all(Instant::now());
        // Carries the closes out (the sockets are dropped at once).
        let _ = self.step(&mut Vec::new(), &mut HashMap::new(), false);
    }

    fn logoff(&mut self, grace: Duration, out: &mut Vec<Happening>) {
        let now = Instant::now();
        for name in &self.names {
            self.fleet.with_client(now, name, |c, now| c.logoff(now));
        }
        let end = now + grace;
        let mut done = HashMap::new();
        // Step, then check, then block: the step that closes the last session ends it.
        while self.step(out, &mut done, true).is_ok()
            && !self.all_closed()
            && Instant::now() < end
            && self.block(Some(end)).is_ok()
        {}
        // Each server's last items (a step takes them only when it read some).
        self.take_items(out);
        self.close();
        // What the close queued (the end of a server that did not answer in time).
        self.take_items(out);
    }
}

impl MioRun {
    /// Every item queued in the merged stream, to `out`.
    fn take_items(&mut self, out: &mut Vec<Happening>) {
        while self.fleet.poll_events(&mut self.batch, BATCH) > 0 {
            out.extend(self.batch.drain(..).map(Happening::Item));
        }
    }
}
