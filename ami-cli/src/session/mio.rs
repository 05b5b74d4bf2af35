//! `--runtime mio`: one ami-mio driver and one connection; `wait` is the driver's blocking
//! wait plus one non-blocking step.

use super::{CallError, Change, Happening, ItemCount, Session, Target, Ticket};
use crate::{Failure, EXIT_OTHER, EXIT_USAGE};
use ami_mio::{ConnId, MioDriver, Notice};
use ami_proto::{Action, ActionId, SendOptions, Stats};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub(crate) struct MioSession {
    driver: MioDriver,
    conn: ConnId,
    next: Ticket,
    tickets: HashMap<ActionId, Ticket>,
    /// Refused at `send`, reported by the next `wait`.
    refused: Vec<Happening>,
    closed: bool,
}

fn io_failure(e: impl std::fmt::Display) -> Failure {
    Failure::new(EXIT_OTHER, format!("mio: {e}"))
}

impl MioSession {
    pub(crate) fn open(target: Target) -> Result<MioSession, Failure> {
        let mut driver = MioDriver::new().map_err(io_failure)?;
        let now = Instant::now();
        let conn = match &target.ca_pem {
            None => driver
                .add_host(now, target.config, target.url.authority())
                .map_err(io_failure)?,
            Some(pem) => add_tls(&mut driver, now, &target, pem)?,
        };
        Ok(MioSession {
            driver,
            conn,
            next: 0,
            tickets: HashMap::new(),
            refused: Vec::new(),
            closed: false,
        })
    }

    /// One non-blocking step; what happened goes to `out`.
    fn step(&mut self, out: &mut Vec<Happening>) -> Result<(), Failure> {
        let report = self.driver.step(Instant::now()).map_err(io_failure)?;
        let mut changes = Vec::new();
        for (_, notice) in report.notices {
            match notice {
                Notice::Completed { id, outcome } => {
                    if let Some(ticket) = self.tickets.remove(&id) {
                        out.push(Happening::Completed {
                            ticket,
                            result: outcome.map_err(CallError::Action),
                        });
                    }
                }
                Notice::Ready { .. } => changes.push(Change::Ready),
                Notice::Disconnected {
                    reason,
                    retry_at,
                    breaker_open,
                } => changes.push(Change::Lost {
                    reason,
                    retry_at,
                    breaker_open,
                }),
                Notice::Closed { reason } => {
                    self.closed = true;
                    changes.push(Change::Closed { reason })
                }
                _ => {}
            }
        }
        while let Some(item) = self.driver.poll_event(self.conn) {
            out.push(Happening::Item(item));
        }
        out.extend(changes.into_iter().map(Happening::Change));
        Ok(())
    }
}

/// `amis://`: TLS on the driver's own steps, trusting exactly the CAs of `--ca`, the
/// certificate checked against the URL's host.
#[cfg(feature = "tls")]
fn add_tls(
    driver: &mut MioDriver,
    now: Instant,
    target: &Target,
    pem: &[u8],
) -> Result<ConnId, Failure> {
    let tls = ami_mio::Tls {
        config: ami_mio::client_config_from_pem(pem)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("--ca: {e}")))?,
        server_name: target.url.host.clone(),
    };
    driver
        .add_host_tls(now, target.config.clone(), target.url.authority(), tls)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("amis://: {e}")))
}

#[cfg(not(feature = "tls"))]
fn add_tls(_: &mut MioDriver, _: Instant, _: &Target, _: &[u8]) -> Result<ConnId, Failure> {
    Err(Failure::new(EXIT_USAGE, "amis:// needs the `tls` feature"))
}

impl Session for MioSession {
    fn send_with(&mut self, action: Action, options: SendOptions) -> Ticket {
        self.next += 1;
        match self
            .driver
            .send_with(Instant::now(), self.conn, action, options)
        {
            Ok(id) => {
                self.tickets.insert(id, self.next);
            }
            Err(e) => self.refused.push(Happening::Completed {
                ticket: self.next,
                result: Err(CallError::Refused(e)),
            }),
        }
        self.next
    }

    fn wait(&mut self, until: Option<Instant>, out: &mut Vec<Happening>) -> Result<(), Failure> {
        out.append(&mut self.refused);
        loop {
            self.step(out)?;
            let now = Instant::now();
            if !out.is_empty() || until.is_some_and(|u| now >= u) {
                return Ok(());
            }
            if self.closed && until.is_none() {
                return Err(Failure::new(EXIT_OTHER, "the session ended"));
            }
            let timeout = until.map(|u| u.saturating_duration_since(now));
            self.driver.wait(timeout).map_err(io_failure)?;
        }
    }

    fn logoff(&mut self, grace: Duration, out: &mut Vec<Happening>) {
        let deadline = Instant::now() + grace;
        self.driver.logoff(Instant::now(), self.conn);
        // Until the close (the step that reports it hands out every item before it).
        while !self.closed && Instant::now() < deadline {
            if self.wait(Some(deadline), out).is_err() {
                break;
            }
        }
        if !self.closed {
            // No Goodbye within the grace: closed, and what had arrived is still kept.
            self.close();
            let _ = self.step(out);
        }
    }

    fn close(&mut self) {
        self.driver.close(Instant::now(), self.conn);
        self.closed = true;
    }

    fn stats(&self) -> Stats {
        self.driver.stats(self.conn).unwrap_or_default()
    }

    fn read_one_by_one(&mut self, until: Instant) -> Result<ItemCount, Failure> {
        let mut count = ItemCount::default();
        loop {
            let now = Instant::now();
            if now >= until || self.closed {
                return Ok(count);
            }
            let report = self.driver.step(now).map_err(io_failure)?;
            self.closed |= report
                .notices
                .iter()
                .any(|(_, n)| matches!(n, Notice::Closed { .. }));
            while let Some(item) = self.driver.poll_event(self.conn) {
                count.count(&item);
            }
            self.driver
                .wait(Some(until.saturating_duration_since(now)))
                .map_err(io_failure)?;
        }
    }
}
