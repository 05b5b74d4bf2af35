//! `--runtime async-std`: ami-async-std's driver on a thread of its own; `wait` runs on
//! this one with `async_io::block_on`.

use super::calls::{race, recv_one_by_one, Waiting, BATCH};
use super::{CallError, Happening, ItemCount, Session, Target, Ticket};
use crate::{Failure, EXIT_OTHER, EXIT_USAGE};
use ami_async_std::{Events, Handle, StatusWatch};
use ami_proto::{Action, SendOptions, Stats};
use async_io::Timer;
use futures_lite::future;
use std::future::pending;
use std::time::{Duration, Instant};

pub(crate) struct AsyncStdSession {
    handle: Handle,
    events: Events,
    status: StatusWatch,
    waiting: Waiting,
}

impl AsyncStdSession {
    pub(crate) fn open(target: Target) -> Result<AsyncStdSession, Failure> {
        let host = (target.url.host.as_str(), target.url.port);
        let (handle, events) = match &target.ca_pem {
            None => ami_async_std::run_on_thread(target.config, host)
                .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the driver: {e}")))?,
            Some(pem) => run_tls(target.config, host, pem)?,
        };
        let status = handle.status();
        let current = status.get();
        Ok(AsyncStdSession {
            handle,
            events,
            status,
            waiting: Waiting::new(current),
        })
    }
}

/// `amis://`: ami-async's TLS, the driver on a thread of its own.
#[cfg(feature = "tls")]
fn run_tls(
    config: ami_proto::ClientConfig,
    host: (&str, u16),
    pem: &[u8],
) -> Result<(Handle, Events), Failure> {
    let tls = ami_async_std::Tls {
        config: ami_async_std::client_config_from_pem(pem)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("--ca: {e}")))?,
        server_name: host.0.to_string(),
    };
    let (handle, events, driver) = ami_async_std::spawn_tls(config, host, tls)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("amis://: {e}")))?;
    std::thread::Builder::new()
        .name("ami-driver".into())
        .spawn(move || async_io::block_on(driver))
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the driver: {e}")))?;
    Ok((handle, events))
}

#[cfg(not(feature = "tls"))]
fn run_tls(
    _: ami_proto::ClientConfig,
    _: (&str, u16),
    _: &[u8],
) -> Result<(Handle, Events), Failure> {
    Err(Failure::new(EXIT_USAGE, "amis:// needs the `tls` feature"))
}

impl Session for AsyncStdSession {
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
        let AsyncStdSession {
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
        let woke = async_io::block_on(async {
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
                    Some(t) => drop(Timer::at(t).await),
                    None => pending().await,
                }
            };
            race(calls, out, items, status, timer).await
        });
        self.waiting.absorb(woke, out);
        Ok(())
    }

    fn logoff(&mut self, grace: Duration) {
        let handle = &self.handle;
        let in_time = async {
            handle.logoff().await;
            true
        };
        let late = async {
            Timer::after(grace).await;
            false
        };
        if !async_io::block_on(future::or(in_time, late)) {
            handle.close();
            async_io::block_on(future::or(handle.wait_closed(), async {
                Timer::after(grace).await;
            }));
        }
    }

    fn close(&mut self) {
        self.handle.close();
    }

    fn stats(&self) -> Stats {
        self.handle.stats()
    }

    fn read_one_by_one(&mut self, until: Instant) -> Result<ItemCount, Failure> {
        let mut count = ItemCount::default();
        let read = recv_one_by_one(&mut self.events, until, &mut count);
        async_io::block_on(future::or(read, async {
            Timer::at(until).await;
        }));
        Ok(count)
    }
}
