//! Several servers at once (`--server` repeated, or AMI_URL with commas): the tokio fleet
//! ([`ami_tokio::fleet`]) behind a blocking interface, for `listen` and `action --on`.
//! Each server is named by its `host:port`.

use crate::session::config;
use crate::url::ServerUrl;
use crate::{Connection, Failure, Runtime, EXIT_OTHER, EXIT_USAGE};
use ami_proto::fleet::{FleetConfig, FleetItem, ServerName, ServerStatus};
use ami_proto::Action;
use ami_tokio::fleet::{spawn_fleet, FleetEvents, FleetHandle, Reply, StatusChange, StatusWatch};
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

/// Several servers driven by the tokio fleet.
pub(crate) struct Fleet {
    rt: Option<tokio::runtime::Runtime>,
    pub(crate) handle: FleetHandle,
    events: FleetEvents,
    watch: StatusWatch,
    batch: Vec<FleetItem>,
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
        if conn.runtime != Runtime::Tokio {
            return Err(Failure::new(
                EXIT_USAGE,
                "several servers need --runtime tokio (the CLI drives a fleet on tokio only)",
            ));
        }
        if conn.server.iter().any(|u| u.tls) {
            return Err(Failure::new(
                EXIT_USAGE,
                "amis:// is one server at a time in the CLI",
            ));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start tokio: {e}")))?;
        let entered = rt.enter();
        let (handle, events_stream) = spawn_fleet(FleetConfig::default());
        let watch = handle.watch();
        let mut urls = HashMap::new();
        for url in &conn.server {
            let name = name(url);
            let config = config(conn.auth, &url.user, url.secret.expose(), events)?;
            handle
                .add(&name, config, (url.host.as_str(), url.port))
                .map_err(|e| Failure::new(EXIT_USAGE, format!("--server {url}: {e}")))?;
            urls.insert(name, url.clone());
        }
        drop(entered);
        Ok(Fleet {
            rt: Some(rt),
            handle,
            events: events_stream,
            watch,
            batch: Vec::new(),
            urls,
        })
    }

    /// Blocks until items or status changes arrive or `until` passes; appends them.
    pub(crate) fn wait(
        &mut self,
        until: Option<Instant>,
        out: &mut Vec<Happening>,
    ) -> Result<(), Failure> {
        let Some(rt) = &self.rt else {
            return Err(Failure::new(EXIT_OTHER, "the fleet ended"));
        };
        let Fleet {
            events,
            watch,
            batch,
            ..
        } = self;
        rt.block_on(async {
            let timer = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                change = watch.changed() => match change {
                    Some(StatusChange::Changed { server, status }) => {
                        out.push(Happening::Status(server, status))
                    }
                    Some(_) => {}
                    None => out.push(Happening::Ended),
                },
                n = events.recv_many(batch, BATCH) => {
                    if n == 0 {
                        out.push(Happening::Ended);
                    }
                    out.extend(batch.drain(..).map(Happening::Item));
                }
                _ = timer => {}
            }
        });
        Ok(())
    }

    /// Sends `action` to the server named `on` (or every server for `all`) and waits for
    /// the replies, at most `limit`.
    pub(crate) fn call(
        &mut self,
        on: &str,
        action: Action,
        limit: Duration,
    ) -> Result<Vec<Reply>, Failure> {
        let Some(rt) = &self.rt else {
            return Err(Failure::new(EXIT_OTHER, "the fleet ended"));
        };
        let handle = &self.handle;
        rt.block_on(async {
            let replies = async {
                if on == "all" {
                    Ok(handle.send_all(action).await)
                } else {
                    let route = ami_proto::fleet::Route::Server(on);
                    match handle.send(route, action).await {
                        Ok(r) => Ok(vec![r]),
                        Err(e) => Err(Failure::new(EXIT_USAGE, format!("--on {on}: {e}"))),
                    }
                }
            };
            tokio::time::timeout(limit, replies)
                .await
                .map_err(|_| Failure::new(EXIT_OTHER, "no reply within the time limit"))?
        })
    }

    /// Closes every server at once (no Logoff).
    pub(crate) fn close(&mut self) {
        self.handle.close();
    }

    /// Logs every server off, waiting at most `grace`, then closes.
    pub(crate) fn logoff(&mut self, grace: Duration) {
        let Some(rt) = &self.rt else { return };
        self.handle.logoff_all();
        let watch = &mut self.watch;
        let handle = &self.handle;
        rt.block_on(async {
            let all_closed = async {
                while !handle
                    .statuses()
                    .iter()
                    .all(|(_, s)| matches!(s, ServerStatus::Closed { .. }))
                {
                    if watch.changed().await.is_none() {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(grace, all_closed).await;
        });
        self.handle.close();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_millis(100));
        }
    }
}
