//! `--runtime tokio`: ami-tokio on a two-worker runtime; `wait` blocks on it.

use super::on_runtime::{Exec, RuntimeSession};
use super::Target;
use crate::{Failure, EXIT_OTHER, EXIT_USAGE};
use ami_tokio::{Events, Handle};
use std::future::Future;
use std::time::{Duration, Instant};

/// The runtime the session's driver runs on; this thread blocks on it.
pub(crate) struct TokioExec {
    /// Taken when the session is dropped, to shut the runtime down without waiting long.
    rt: Option<tokio::runtime::Runtime>,
}

impl Exec for TokioExec {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            // Only a dropped session has no runtime, and nothing waits on one.
            None => futures_lite::future::block_on(f),
        }
    }

    async fn sleep_until(at: Instant) {
        tokio::time::sleep_until(at.into()).await;
    }
}

impl Drop for TokioExec {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

/// Starts the runtime and the session's driver on it.
pub(crate) fn open(target: Target) -> Result<RuntimeSession<TokioExec>, Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start tokio: {e}")))?;
    let host = (target.url.host.as_str(), target.url.port);
    let (handle, events) = {
        let _entered = rt.enter();
        match &target.ca_pem {
            None => ami_tokio::spawn(target.config, host),
            Some(pem) => spawn_tls(target.config, host, pem)?,
        }
    };
    Ok(RuntimeSession::new(
        TokioExec { rt: Some(rt) },
        handle,
        events,
    ))
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
