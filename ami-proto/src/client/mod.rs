//! The session layer: login, correlation, timers, heartbeat, reconnect, events.

pub(crate) mod backoff;
pub(crate) mod config;
pub(crate) mod events;
pub(crate) mod output;
pub(crate) mod pending;
pub(crate) mod rng;
pub(crate) mod session;
pub(crate) mod stats;
