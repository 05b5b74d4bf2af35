//! `--runtime tokio`: ami-tokio on a two-worker runtime; `wait` blocks on it.

use super::calls::{race, recv_one_by_one, Waiting, BATCH};
use super::{CallError, Happening, ItemCount, Session, Target, Ticket};
use crate::{Failure, EXIT_OTHER, EXIT_USAGE};
use ami_proto::{Action, SendOptions, Stats};
use ami_tokio::{Events, Handle, StatusWatch};
use std::future::pending;
use std::time::{Duration, Instant};

pub(crate) struct TokioSession {
    rt: Option<tokio::runtime::Runtime>,
    handle: Handle,
    events: Events,
    status: StatusWatch,
    waiting: Waiting,
}

impl TokioSession {
    pub(crate) fn open(target: Target) -> Result<TokioSession, Failure> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start tokio: {e}")))?;
        let host = (target.url.host.as_str(), target.url.port);
        let _entered = rt.enter();
        let (handle, events) = match &target.ca_pem {
            None => ami_tokio::spawn(target.config, host),
            Some(pem) => spawn_tls(target.config, host, pem)?,
        };
        let status = handle.status();
        let current = status.get();
        drop(_entered);
        Ok(TokioSession {
            rt: Some(rt),
            handle,
            events,
            status,
            waiting: Waiting::new(current),
        })
    }
}

#[cfg(feature = "tls")]
fn spawn_tls(
    config: ami_proto::ClientConfig,
    host: (&str, u16),
    pem: &[u8],
) -> Result<(Handle, Events), Failure> {
    let tls = ami_tokio::Tls {
        config: ami_tokio::client_config_from_pem(pem)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("--ca: {e}")))?,
        server_name: host.0.to_string(),
    };
    ami_tokio::spawn_tls(config, host, tls)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("amis://: {e}")))
}

#[cfg(not(feature = "tls"))]
fn spawn_tls(
    _: ami_proto::ClientConfig,
    _: (&str, u16),
    _: &[u8],
) -> Result<(Handle, Events), Failure> {
    Err(Failure::new(EXIT_USAGE, "amis:// needs the `tls` feature"))
}

impl Session for TokioSession {
    fn send_with(&mut self, action: Action, options: SendOptions) -> Ticket {
        let handle = self.handle.clone();
        self.waiting.calls.push(async move {
            handle
                .send_with(action, options)
                .await
                .map_err(CallError::from)
        })
    }

    fn wait(&mut self, until: Option<Instant>, out: &mut Vec<Happening>) -> Result<(), Failure> {
        if self.waiting.take_initial(out) {
            return Ok(());
        }
        if self.waiting.idle() && until.is_none() {
            return Err(Failure::new(EXIT_OTHER, "the session ended"));
        }
        let Some(rt) = &self.rt else {
            return Err(Failure::new(EXIT_OTHER, "the session ended"));
        };
        let TokioSession {
            events,
            status,
            waiting,
            ..
        } = self;
        let Waiting {
            calls,
            batch,
            items_open,
            status_open,
            ..
        } = waiting;
        let woke = rt.block_on(async {
            let items = async {
                if !*items_open {
                    return pending().await;
                }
                events.recv_many(batch, BATCH).await
            };
            let status = async {
                if !*status_open {
                    return pending().await;
                }
                status.changed().await
            };
            let timer = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => pending().await,
                }
            };
            race(calls, out, items, status, timer).await
        });
        self.waiting.absorb(woke, out);
        Ok(())
    }

    fn logoff(&mut self, grace: Duration) {
        let Some(rt) = &self.rt else { return };
        let handle = self.handle.clone();
        rt.block_on(async move {
            if tokio::time::timeout(grace, handle.logoff()).await.is_err() {
                handle.close();
                let _ = tokio::time::timeout(grace, handle.wait_closed()).await;
            }
        });
    }

    fn close(&mut self) {
        self.handle.close();
    }

    fn stats(&self) -> Stats {
        self.handle.stats()
    }

    fn read_one_by_one(&mut self, until: Instant) -> Result<ItemCount, Failure> {
        let Some(rt) = &self.rt else {
            return Err(Failure::new(EXIT_OTHER, "the session ended"));
        };
        let events = &mut self.events;
        Ok(rt.block_on(async {
            let mut count = ItemCount::default();
            let read = recv_one_by_one(events, until, &mut count);
            let _ = tokio::time::timeout_at(until.into(), read).await;
            count
        }))
    }
}

impl Drop for TokioSession {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_millis(100));
        }
    }
}
