//! The session layer: login, correlation, timers, heartbeat, reconnect, events.

pub(crate) mod addresses;
pub(crate) mod backoff;
pub(crate) mod config;
#[macro_use]
pub(crate) mod counts;
pub(crate) mod deadlines;
pub(crate) mod event_mask;
pub(crate) mod events;
pub(crate) mod output;
pub(crate) mod pending;
pub(crate) mod rng;
pub(crate) mod session;
pub(crate) mod stats;
pub(crate) mod who;
