//! `--runtime async-std`: ami-async-std's driver on a thread of its own; `wait` runs on
//! this one with `async_io::block_on`.

use super::on_runtime::{Exec, RuntimeSession};
use super::Target;
use crate::{Failure, EXIT_OTHER, EXIT_USAGE};
use ami_async_std::{Events, Handle};
use std::future::Future;
use std::time::Instant;

/// async-io's reactor and timers, driven by whichever thread blocks on them.
pub(crate) struct AsyncIoExec;

impl Exec for AsyncIoExec {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        async_io::block_on(f)
    }

    async fn sleep_until(at: Instant) {
        async_io::Timer::at(at).await;
    }
}

/// Starts the session's driver on a thread of its own.
pub(crate) fn open(target: Target) -> Result<RuntimeSession<AsyncIoExec>, Failure> {
    let host = (target.url.host.as_str(), target.url.port);
    let (handle, events) = match &target.ca_pem {
        None => ami_async_std::run_on_thread(target.config, host)
            .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the driver: {e}")))?,
        Some(pem) => run_tls(target.config, host, pem)?,
    };
    Ok(RuntimeSession::new(AsyncIoExec, handle, events))
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
