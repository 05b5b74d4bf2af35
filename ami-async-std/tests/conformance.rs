//! The shared conformance suite (`ami-conformance`) on async-io: the test body on the test
//! thread, each driver on a thread of its own (as `run_on_thread` does).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_async::fleet::{FleetConfig, FleetEvents, FleetHandle};
use ami_async::{Events, Handle, Target, Tls, TlsConfigError};
use ami_async_std::AsyncIo;
use ami_proto::ClientConfig;
use std::future::Future;
use std::pin::Pin;

struct OnAsyncIo;

impl ami_conformance::Adapter for OnAsyncIo {
    type Runtime = AsyncIo;

    fn block_on<T>(body: impl Future<Output = T>) -> T {
        async_io::block_on(body)
    }

    fn spawn(config: ClientConfig, target: Target) -> (Handle, Events) {
        ami_async_std::run_on_thread(config, target).unwrap()
    }

    fn spawn_tls(
        config: ClientConfig,
        target: Target,
        tls: Tls,
    ) -> Result<(Handle, Events), TlsConfigError> {
        let (handle, events, driver) = ami_async::session_tls::<AsyncIo>(config, target, tls)?;
        Self::run_driver(Box::pin(driver));
        Ok((handle, events))
    }

    fn run_driver(driver: Pin<Box<dyn Future<Output = ()> + Send>>) {
        std::thread::spawn(move || async_io::block_on(driver));
    }

    fn spawn_fleet(config: FleetConfig) -> (FleetHandle, FleetEvents) {
        ami_async_std::fleet::run_fleet_on_thread(config).unwrap()
    }
}

ami_conformance::conformance_suite!(OnAsyncIo);
