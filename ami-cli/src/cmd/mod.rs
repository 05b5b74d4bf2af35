//! One file per command.

pub(crate) mod action;
pub(crate) mod bench;
pub(crate) mod bridge;
pub(crate) mod calls;
pub(crate) mod decode;
pub(crate) mod demo;
pub(crate) mod listen;
pub(crate) mod originate;
pub(crate) mod sim;
