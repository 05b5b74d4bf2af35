//! How servers of a fleet are named: by the caller ([`ServerName`]) and by the adapter
//! ([`ServerId`]).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest server name accepted, in bytes. Names travel in every event of the merged stream,
/// in log lines and in the CLI's JSON; 128 bytes holds any `host:port` or label.
pub const MAX_NAME_LEN: usize = 128;

/// The name a caller gave a server of a [`Fleet`](super::Fleet), e.g. `pbx-east-1` or
/// `10.0.0.7:5038`. Cheap to clone (shared), compared and hashed as its text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(Arc<str>);

impl ServerName {
    /// Checks `name`: 1 to [`MAX_NAME_LEN`] bytes, no control characters (a name ends up in
    /// log lines and JSON, where CR or LF would forge records).
    pub fn new(name: &str) -> Result<ServerName, InvalidName> {
        if name.is_empty() {
            return Err(InvalidName::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(InvalidName::TooLong(name.len()));
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidName::Control);
        }
        Ok(ServerName(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for ServerName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ServerName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a server name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidName {
    /// The name is empty.
    #[error("a server name cannot be empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("a server name has at most {MAX_NAME_LEN} bytes, this one {0}")]
    TooLong(usize),
    /// The name holds a control character (CR, LF, NUL...).
    #[error("a server name cannot hold control characters")]
    Control,
}

/// The adapter's handle on one server of a [`Fleet`](super::Fleet): a slot index (dense, so
/// an adapter can keep its sockets in a `Vec` and use it as a poll token) and a generation,
/// so the ID of a removed server never names another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId {
    pub(crate) index: usize,
    pub(crate) generation: u64,
}

impl ServerId {
    /// The slot number: below the fleet's `max_servers`, reused after a removal (with a new
    /// generation).
    pub fn index(&self) -> usize {
        self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_control_characters_or_no_text_are_refused() {
        assert_eq!(ServerName::new(""), Err(InvalidName::Empty));
        assert_eq!(ServerName::new("a\r\nb"), Err(InvalidName::Control));
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(ServerName::new(&long), Err(InvalidName::TooLong(129)));
        let ok = ServerName::new("pbx-1:5038");
        assert_eq!(ok.as_ref().map(ServerName::as_str), Ok("pbx-1:5038"));
    }
}
