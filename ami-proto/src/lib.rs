//! # ami-proto
//!
//! WIP
#![forbid(unsafe_code)]

mod wire;

pub use wire::action::{
    is_secret_key, Action, ActionId, EncodeError, InvalidActionId, MAX_ACTION_ID_LEN, MAX_LINES,
    MAX_LINE_LEN,
};
pub use wire::decoder::{Banner, DecodeError, Decoder, DecoderStats, Frame, BANNER_PREFIX};
pub use wire::limits::{
    DecoderLimits, DecoderLimitsBuilder, LimitsError, DEFAULT_BUFFER_CAP, DEFAULT_MAX_FIELDS,
    DEFAULT_MAX_LINE_LEN, DEFAULT_MAX_MESSAGE_LEN,
};
pub use wire::message::{Field, Message, MessageKind, Value};

mod client;
pub mod fleet;

pub use client::config::{
    AuthMethod, ClientConfig, ClientConfigBuilder, ConfigError, OverflowPolicy, Secret,
};
pub use client::output::{DisconnectReason, Outcome, Output, Phase, Response, StreamItem};
pub use client::session::{Client, Input, SendError, SendOptions, MAX_FILTERS};
pub use client::stats::{Latency, Stats};
