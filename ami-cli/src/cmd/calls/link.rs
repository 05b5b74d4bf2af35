//! Where `ami calls` gets its calls: one session, or several servers at once (`--server`
//! repeated: a fleet, on every runtime). Either way it hands out what happened by server
//! (an index into the `--server` list) and sends each tracker's requests to its server.

use crate::fleet::{self, Fleet};
use crate::session::{self, CallError, Change, FirstLogin, Happening, Live, Ticket};
use crate::url::ServerUrl;
use crate::{Connection, Failure};
use ami_proto::fleet::ServerStatus;
use ami_proto::{Action, DisconnectReason, Response, SendOptions, StreamItem};
use std::time::{Duration, Instant};

/// What happened, by server.
pub(super) enum News {
    /// An item of server `.0`'s stream.
    Item(usize, StreamItem),
    /// An action sent with [`Link::send`] finished.
    Completed(Ticket, Result<Response, CallError>),
    /// Server `.0` stopped for good (a rejected login, a refused connection on a single
    /// session's first try...), not by this command's own logoff.
    Closed(usize, DisconnectReason),
}

/// One session or a fleet.
pub(super) enum Link {
    One(Live),
    Many {
        fleet: Fleet,
        names: Vec<String>,
        /// A watch's servers going down or coming back, said on stderr (`None` once: it
        /// names the servers it could not reach itself, once each).
        status_lines: Option<fleet::StatusLines>,
    },
}

impl Link {
    /// Connects to every `--server`, asking only for `mask`; one server is logged in
    /// before this returns (a first failure is reported at once, as every command does;
    /// its wait bounded as `first` says), several connect in the background (and for a
    /// `watch`, each going down or coming back is said on stderr).
    pub(super) fn open(
        conn: &Connection,
        mask: &str,
        first: FirstLogin,
        watch: bool,
    ) -> Result<Link, Failure> {
        if conn.server.len() > 1 {
            Ok(Link::Many {
                fleet: Fleet::open(conn, mask)?,
                names: conn.server.iter().map(fleet::name).collect(),
                status_lines: watch.then(fleet::StatusLines::default),
            })
        } else {
            Ok(Link::One(session::open_with(conn, mask, first)?))
        }
    }

    /// Exit 3 for a run of several servers in which none logged in, naming each and why
    /// (`None` with one server, which was logged in before the run).
    pub(super) fn none_ready(&self, waited: Duration) -> Option<Failure> {
        match self {
            Link::One(_) => None,
            Link::Many { fleet, .. } => Some(fleet.none_ready(waited)),
        }
    }

    /// How many servers.
    pub(super) fn len(&self) -> usize {
        match self {
            Link::One(_) => 1,
            Link::Many { names, .. } => names.len(),
        }
    }

    /// Server `ix`'s name (its `host:port`), for output with several servers.
    pub(super) fn name(&self, ix: usize) -> String {
        match self {
            Link::One(live) => live.url.authority(),
            Link::Many { names, .. } => names.get(ix).cloned().unwrap_or_default(),
        }
    }

    /// Server `ix`'s URL, for messages in words.
    pub(super) fn url(&self, ix: usize) -> Option<&ServerUrl> {
        match self {
            Link::One(live) => Some(&live.url),
            Link::Many { fleet, names, .. } => fleet.urls.get(names.get(ix)?),
        }
    }

    /// Several servers: waits until each has logged in or failed its first try (at most
    /// `limit`), and takes those not logged in out, with why. One server is logged in
    /// already.
    pub(super) fn keep_ready(&mut self, limit: Duration) -> Result<Vec<(usize, String)>, Failure> {
        match self {
            Link::One(_) => Ok(Vec::new()),
            Link::Many { fleet, names, .. } => Ok(fleet
                .keep_ready(limit)?
                .into_iter()
                .filter_map(|(name, why)| Some((names.iter().position(|n| *n == name)?, why)))
                .collect()),
        }
    }

    /// Blocks until something happened or `until` passed; appends it to `out`.
    pub(super) fn wait(
        &mut self,
        until: Option<Instant>,
        out: &mut Vec<News>,
    ) -> Result<(), Failure> {
        match self {
            Link::One(live) => {
                let mut happened = Vec::new();
                live.wait(until, &mut happened)?;
                out.extend(happened.into_iter().filter_map(|h| match h {
                    Happening::Item(item) => Some(News::Item(0, item)),
                    Happening::Completed { ticket, result } => {
                        Some(News::Completed(ticket, result))
                    }
                    Happening::Change(Change::Closed { reason }) => Some(News::Closed(0, reason)),
                    Happening::Change(_) => None,
                }));
            }
            Link::Many {
                fleet,
                names,
                status_lines,
            } => {
                let mut happened = Vec::new();
                fleet.wait(until, &mut happened)?;
                let ix = |name: &str| names.iter().position(|n| n == name);
                for h in happened {
                    match h {
                        fleet::Happening::Item(item) => {
                            if let Some(i) = ix(item.server.as_str()) {
                                out.push(News::Item(i, item.item));
                            }
                        }
                        fleet::Happening::Completed { ticket, result, .. } => {
                            out.push(News::Completed(ticket, result))
                        }
                        fleet::Happening::Status(server, ServerStatus::Closed { reason })
                            if !matches!(
                                reason,
                                DisconnectReason::Logoff | DisconnectReason::LocalClose
                            ) =>
                        {
                            if let Some(i) = ix(server.as_str()) {
                                out.push(News::Closed(i, reason));
                            }
                        }
                        // A server that stopped for good is said by the trackers, with the
                        // command's consequence; down and back here, as `listen` says them.
                        fleet::Happening::Status(server, status)
                            if !matches!(status, ServerStatus::Closed { .. }) =>
                        {
                            if let Some(lines) = status_lines {
                                lines.say(fleet, server.as_str(), &status)
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends `action` to server `ix`; its result comes from a later wait.
    pub(super) fn send(&mut self, ix: usize, action: Action, options: SendOptions) -> Ticket {
        match self {
            Link::One(live) => live.session.send_with(action, options),
            Link::Many { fleet, names, .. } => {
                let name = names.get(ix).cloned().unwrap_or_default();
                fleet.send(&name, action, options)
            }
        }
    }

    /// Logs every server off within the grace every command gives.
    pub(super) fn logoff(&mut self) {
        match self {
            Link::One(live) => live.logoff(),
            Link::Many { fleet, .. } => fleet.logoff(session::LOGOFF_GRACE),
        }
    }
}
