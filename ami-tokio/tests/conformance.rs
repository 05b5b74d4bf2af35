//! The shared conformance suite (`ami-conformance`) on tokio: a two-worker runtime per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_async::fleet::{FleetConfig, FleetEvents, FleetHandle};
use ami_async::{Events, Handle, Target, Tls, TlsConfigError};
use ami_proto::ClientConfig;
use ami_tokio::Tokio;
use std::future::Future;
use std::pin::Pin;

struct OnTokio;

impl ami_conformance::Adapter for OnTokio {
    type Runtime = Tokio;

    fn block_on<T>(body: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(body)
    }

    fn spawn(config: ClientConfig, target: Target) -> (Handle, Events) {
        ami_tokio::spawn(config, target)
    }

    fn spawn_tls(
        config: ClientConfig,
        target: Target,
        tls: Tls,
    ) -> Result<(Handle, Events), TlsConfigError> {
        let (handle, events, driver) = ami_async::session_tls::<Tokio>(config, target, tls)?;
        tokio::spawn(driver);
        Ok((handle, events))
    }

    fn run_driver(driver: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::spawn(driver);
    }

    fn spawn_fleet(config: FleetConfig) -> (FleetHandle, FleetEvents) {
        ami_tokio::fleet::spawn_fleet(config)
    }
}

ami_conformance::conformance_suite!(OnTokio);
