//! Several servers at once (`--server` repeated, or AMI_URL with commas) behind a blocking
//! interface, for `listen`, `action --on` and `bench --servers`, on every runtime: tokio and
//! async-std run `ami-async`'s fleet ([`on_async`]), mio runs `MioFleet` ([`on_mio`]).
//! Each server is named by its `host:port`.

mod on_async;
mod on_mio;

use crate::session::{config, read_ca};
use crate::url::ServerUrl;
use crate::{Connection, Failure, Runtime};
use ami_async::fleet::Reply;
use ami_proto::fleet::{FleetItem, ServerName, ServerStatus};
use ami_proto::{Action, ClientConfig};
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
    /// Sends `action` to the server named `on` (or every server for `all`) and waits for
    /// the replies, at most `limit`.
    fn call(&mut self, on: &str, action: Action, limit: Duration) -> Result<Vec<Reply>, Failure>;
    /// Closes every server at once (no Logoff).
    fn close(&mut self);
    /// Logs every server off, waiting at most `grace`, then closes.
    fn logoff(&mut self, grace: Duration);
}

/// Several servers, on the runtime `--runtime` names.
pub(crate) struct Fleet {
    engine: Box<dyn Engine>,
    /// Server name to its URL, for messages.
    pub(crate) urls: HashMap<String, ServerUrl>,
}

/// The name of a server in the fleet: `host:port`.
pub(crate) fn name(url: &ServerUrl) -> String {
    url.authority()
}

impl Fleet {
    /// Adds every `--server` (asking for `events`); they connect in the background.
    pub(crate) fn open(conn: &Connection, events: &str) -> Result<Fleet, Failure> {
        let mut members = Vec::with_capacity(conn.server.len());
        for url in &conn.server {
            members.push(Member {
                name: name(url),
                config: config(conn.auth, &url.user, url.secret.expose(), events)?,
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
        Ok(Fleet { engine, urls })
    }

    /// Blocks until items or status changes arrive or `until` passes; appends them.
    pub(crate) fn wait(
        &mut self,
        until: Option<Instant>,
        out: &mut Vec<Happening>,
    ) -> Result<(), Failure> {
        self.engine.wait(until, out)
    }

    /// Sends `action` to the server named `on` (or every server for `all`) and waits for
    /// the replies, at most `limit`.
    pub(crate) fn call(
        &mut self,
        on: &str,
        action: Action,
        limit: Duration,
    ) -> Result<Vec<Reply>, Failure> {
        self.engine.call(on, action, limit)
    }

    /// Closes every server at once (no Logoff).
    pub(crate) fn close(&mut self) {
        self.engine.close();
    }

    /// Logs every server off, waiting at most `grace`, then closes.
    pub(crate) fn logoff(&mut self, grace: Duration) {
        self.engine.logoff(grace);
    }
}
