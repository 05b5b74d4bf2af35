//! `--runtime tokio` and `--runtime async-std` with several servers: `ami-async`'s fleet,
//! the same handle, stream and watch on both. Only where the driver runs differs: a tokio
//! task on a two-worker runtime, or a thread of its own (`async_io::block_on`). Waits use
//! async-io's timer, which runs under either.

use super::{Called, Engine, Happening, Member, BATCH};
use crate::session::calls::Calls;
use crate::session::{CallError, Ticket};
use crate::{Failure, Runtime, EXIT_OTHER, EXIT_USAGE};
use ami_async::fleet::{
    FleetConfig, FleetEvents, FleetHandle, FleetItem, Reply, Route, RouteError, RouteFailed,
    ServerStatus, StatusChange, StatusWatch,
};
use ami_async::AmiError;
use ami_proto::{Action, SendOptions};
use async_io::Timer;
use futures_lite::future;
use std::future::{pending, poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Where the futures of the handle are blocked on.
enum Blocker {
    /// The tokio runtime the driver runs on.
    Tokio(tokio::runtime::Runtime),
    /// The driver has a thread of its own; this thread blocks with async-io.
    Thread,
}

impl Blocker {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match self {
            Blocker::Tokio(rt) => rt.block_on(f),
            Blocker::Thread => async_io::block_on(f),
        }
    }
}

pub(super) struct AsyncRun {
    block: Blocker,
    handle: FleetHandle,
    events: FleetEvents,
    watch: StatusWatch,
    batch: Vec<FleetItem>,
    /// Actions sent with [`Engine::send`] and not finished, polled by every wait (each
    /// future owns a clone of the handle).
    sent: Calls,
}

impl AsyncRun {
    pub(super) fn open(runtime: Runtime, members: Vec<Member>) -> Result<AsyncRun, Failure> {
        let (block, handle, events) = match runtime {
            Runtime::AsyncStd => {
                let (handle, events) = ami_async_std::fleet::run_fleet_on_thread(
                    FleetConfig::default(),
                )
                .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the driver: {e}")))?;
                (Blocker::Thread, handle, events)
            }
            _ => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start tokio: {e}")))?;
                let (handle, events) = {
                    let _entered = rt.enter();
                    ami_tokio::fleet::spawn_fleet(FleetConfig::default())
                };
                (Blocker::Tokio(rt), handle, events)
            }
        };
        let watch = handle.watch();
        for m in members {
            let host = (m.url.host.clone(), m.url.port);
            match m.ca_pem {
                None => handle.add(&m.name, m.config, host),
                Some(pem) => add_tls(&handle, &m.name, m.config, host, &pem)?,
            }
            .map_err(|e| Failure::new(EXIT_USAGE, format!("--server {}: {e}", m.url)))?;
        }
        Ok(AsyncRun {
            block,
            handle,
            events,
            watch,
            batch: Vec::new(),
            sent: Calls::default(),
        })
    }
}

#[cfg(feature = "tls")]
fn add_tls(
    handle: &FleetHandle,
    name: &str,
    config: ami_proto::ClientConfig,
    host: (String, u16),
    pem: &[u8],
) -> Result<Result<(), ami_async::fleet::AddError>, Failure> {
    let tls = ami_tokio::Tls {
        config: ami_tokio::client_config_from_pem(pem)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("--ca: {e}")))?,
        server_name: host.0.clone(),
    };
    Ok(handle.add_tls(name, config, host, tls))
}

#[cfg(not(feature = "tls"))]
fn add_tls(
    _: &FleetHandle,
    _: &str,
    _: ami_proto::ClientConfig,
    _: (String, u16),
    _: &[u8],
) -> Result<Result<(), ami_async::fleet::AddError>, Failure> {
    Err(Failure::new(EXIT_USAGE, "amis:// needs the `tls` feature"))
}

/// What one wait ended with.
enum Woke {
    Change(Option<StatusChange>),
    Items(usize),
    /// At least one sent action finished (moved to the wait's output).
    Sent,
}

/// `fut`, or `None` once `until` passes (never, for `None`).
async fn until<T>(until: Option<Instant>, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        match until {
            Some(t) => drop(Timer::at(t).await),
            None => pending().await,
        }
        None
    })
    .await
}

impl Engine for AsyncRun {
    fn wait(&mut self, until_: Option<Instant>, out: &mut Vec<Happening>) -> Result<(), Failure> {
        let AsyncRun {
            block,
            events,
            watch,
            batch,
            sent,
            ..
        } = self;
        // Status changes first: a server's "down" comes before later items.
        let woke = block.block_on(until(
            until_,
            future::or(
                async { Woke::Change(watch.changed().await) },
                future::or(
                    async {
                        sent.finished_with(|ticket, result| {
                            out.push(Happening::Completed { ticket, result })
                        })
                        .await;
                        Woke::Sent
                    },
                    async { Woke::Items(events.recv_many(batch, BATCH).await) },
                ),
            ),
        ));
        match woke {
            None | Some(Woke::Sent) => {}
            Some(Woke::Change(Some(StatusChange::Changed { server, status }))) => {
                out.push(Happening::Status(server, status))
            }
            // Changes were dropped: the present statuses stand in for them.
            Some(Woke::Change(Some(StatusChange::Lagged(_)))) => out.extend(
                self.handle
                    .statuses()
                    .into_iter()
                    .map(|(server, status)| Happening::Status(server, status)),
            ),
            Some(Woke::Change(Some(_))) => {}
            Some(Woke::Change(None) | Woke::Items(0)) => out.push(Happening::Ended),
            Some(Woke::Items(_)) => out.extend(batch.drain(..).map(Happening::Item)),
        }
        Ok(())
    }

    fn call(
        &mut self,
        on: &str,
        action: Action,
        options: SendOptions,
        limit: Duration,
    ) -> Result<Called, Failure> {
        let names: Vec<String> = if on == "all" {
            self.statuses().into_iter().map(|(name, _)| name).collect()
        } else {
            vec![on.to_string()]
        };
        let handle = &self.handle;
        // One future per server, all polled in each turn, so every action is sent at the
        // first poll; each reply is stored as it comes, outside the futures, so the limit
        // passing drops (and cancels) only those still unanswered, never the replies in.
        type Send<'a> = Pin<Box<dyn Future<Output = Result<Reply, RouteFailed>> + 'a>>;
        let mut sends: Vec<Option<Send<'_>>> = names
            .iter()
            .map(|name| {
                Some(
                    Box::pin(handle.send_with(Route::Server(name), action.clone(), options))
                        as Send<'_>,
                )
            })
            .collect();
        let mut got: Vec<Option<Reply>> =
            std::iter::repeat_with(|| None).take(names.len()).collect();
        let mut refused = None;
        let all_in = poll_fn(|cx| {
            let mut waiting = false;
            for (i, slot) in sends.iter_mut().enumerate() {
                let Some(send) = slot else { continue };
                match send.as_mut().poll(cx) {
                    Poll::Pending => waiting = true,
                    Poll::Ready(result) => {
                        *slot = None;
                        match result {
                            Ok(reply) => got[i] = Some(reply),
                            // That server's client refused it: its failure, said with the
                            // others' replies (dropped, `--on all` exited 0 in silence).
                            Err(RouteFailed::Route(RouteError::Send { server, error })) => {
                                got[i] = Some(Reply {
                                    server,
                                    result: Err(AmiError::Send(error)),
                                });
                            }
                            Err(e) if on != "all" => refused = Some(e),
                            // `all`: a server removed meanwhile; nothing was sent to it.
                            Err(_) => {}
                        }
                    }
                }
            }
            if waiting {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        self.block
            .block_on(until(Some(Instant::now() + limit), all_in));
        let late: Vec<String> = names
            .iter()
            .zip(&sends)
            .filter(|(_, send)| send.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        drop(sends);
        if let Some(e) = refused {
            return Err(Failure::new(EXIT_USAGE, format!("--on {on}: {e}")));
        }
        Ok(Called {
            replies: got.into_iter().flatten().collect(),
            late,
        })
    }

    fn send(&mut self, on: &str, action: Action, options: SendOptions) -> Ticket {
        let handle = self.handle.clone();
        let server = on.to_string();
        self.sent.push(async move {
            match handle
                .send_with(Route::Server(&server), action, options)
                .await
            {
                Ok(reply) => reply.result.map_err(CallError::from),
                // Not sent: an unknown name or a closed fleet.
                Err(_) => Err(CallError::Closed),
            }
        })
    }

    fn statuses(&self) -> Vec<(String, ServerStatus)> {
        self.handle
            .statuses()
            .into_iter()
            .map(|(name, status)| (name.as_str().to_string(), status))
            .collect()
    }

    fn remove(&mut self, name: &str) {
        self.handle.remove(name);
    }

    fn close(&mut self) {
        self.handle.close();
    }

    fn logoff(&mut self, grace: Duration, out: &mut Vec<Happening>) {
        let deadline = Instant::now() + grace;
        self.handle.logoff_all();
        let all_closed = |handle: &FleetHandle| {
            handle
                .statuses()
                .iter()
                .all(|(_, s)| matches!(s, ServerStatus::Closed { .. }))
        };
        // Until every server has closed, keeping what comes...
        while !all_closed(&self.handle) && Instant::now() < deadline {
            let from = out.len();
            if self.wait(Some(deadline), out).is_err() || ended(&out[from..]) {
                return;
            }
        }
        // ...then the stream to its end: a closed fleet's stream hands out what is queued
        // (each server's last events and its end), then ends. Read alone: the status watch
        // of a closed fleet ends at once, before the stream is drained.
        self.handle.close();
        let AsyncRun {
            block,
            events,
            batch,
            ..
        } = self;
        let drained = block.block_on(until(Some(deadline), async {
            while events.recv_many(batch, BATCH).await > 0 {
                out.extend(batch.drain(..).map(Happening::Item));
            }
        }));
        if drained.is_none() {
            // The grace ran out: what is queued still comes, without waiting.
            while let Some(item) = events.try_recv() {
                out.push(Happening::Item(item));
            }
        }
    }
}

/// Whether the stream's end is among `happened`.
fn ended(happened: &[Happening]) -> bool {
    happened.iter().any(|h| matches!(h, Happening::Ended))
}

impl Drop for AsyncRun {
    fn drop(&mut self) {
        self.handle.close();
        if let Blocker::Tokio(rt) = std::mem::replace(&mut self.block, Blocker::Thread) {
            rt.shutdown_timeout(Duration::from_millis(100));
        }
    }
}
