//! The wire layer: bytes to [`Message`]s and [`Action`]s to bytes. No I/O, no clock.

pub(crate) mod action;
pub(crate) mod c_escape;
pub(crate) mod decoder;
pub(crate) mod limits;
pub(crate) mod message;
mod readbuf;
pub(crate) mod shown;
pub(crate) mod variable;
