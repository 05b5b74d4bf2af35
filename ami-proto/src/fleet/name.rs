//! How servers of a fleet are named: by the caller ([`ServerName`]) and by the adapter
//! ([`ServerId`]).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest server name accepted, in bytes. Names travel in every event of the merged stream,
/// in log lines and in the CLI's JSON; 128 bytes holds any `host:port` or label.
pub const MAX_NAME_LEN: usize = 128;

/// The name a caller gave a server of a [`Fleet`](super::Fleet), e.g. `pbx-east-1` or
/// `10.0.0.7:5038`. Cheap to clone, compared and hashed as its text.
#[derive(Clone)]
pub struct ServerName(Repr);

/// Names up to this many bytes are kept inline: every item of the merged stream carries a
/// clone, and copying a few bytes costs less than the two atomic reference-count operations
/// of a shared name (clone, then drop), 4-5 % of a mio fleet's merged stream.
const INLINE: usize = 30;

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

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
        let mut bytes = [0u8; INLINE];
        match (bytes.get_mut(..name.len()), u8::try_from(name.len())) {
            (Some(inline), Ok(len)) => {
                inline.copy_from_slice(name.as_bytes());
                Ok(ServerName(Repr::Inline { len, bytes }))
            }
            _ => Ok(ServerName(Repr::Shared(Arc::from(name)))),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Copied whole from a `&str`, so always UTF-8; checking again costs a few
            // nanoseconds on 30 bytes at most.
            Repr::Inline { len, bytes } => bytes
                .get(..usize::from(*len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
            Repr::Shared(name) => name,
        }
    }
}

impl ServerName {
    /// The name's bytes, without [`as_str`](Self::as_str)'s UTF-8 check: what comparisons
    /// use (a consumer that counts events per server compares a name per event, and the
    /// check was a fifth of `ami bench --servers 10`'s client thread).
    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Shared(name) => name.as_bytes(),
        }
    }
}

impl PartialEq for ServerName {
    fn eq(&self, other: &Self) -> bool {
        // UTF-8 text compares and orders as its bytes.
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ServerName {}

impl std::hash::Hash for ServerName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that `Borrow<str>` lookups find it.
        self.as_str().hash(state);
    }
}

impl PartialOrd for ServerName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ServerName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Borrow<str> for ServerName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ServerName {
    fn as_ref(&self) -> &str {
        self.as_str()
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

    #[test]
    fn short_and_long_names_compare_hash_and_order_as_their_text() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        fn hash(v: &(impl Hash + ?Sized)) -> u64 {
            let mut h = DefaultHasher::new();
            v.hash(&mut h);
            h.finish()
        }
        let names = [
            "a".to_string(),
            "x".repeat(INLINE),
            "x".repeat(INLINE + 1),
            "y".repeat(MAX_NAME_LEN),
            "\u{e9}t\u{e9}-pbx:5038".to_string(),
        ];
        let mut sorted = Vec::new();
        for text in &names {
            let name = ServerName::new(text).unwrap();
            assert_eq!(name.as_str(), text);
            assert_eq!(name.to_string(), *text);
            assert_eq!(name.clone(), name);
            assert_eq!(hash(&name), hash(text.as_str()));
            sorted.push(name);
        }
        for (i, a) in sorted.iter().enumerate() {
            for (j, b) in sorted.iter().enumerate() {
                assert_eq!(a == b, i == j, "{a} vs {b}");
                assert_eq!(a.cmp(b), names[i].cmp(&names[j]), "{a} vs {b}");
            }
        }
        sorted.sort();
        let mut texts = names.to_vec();
        texts.sort();
        let got: Vec<&str> = sorted.iter().map(ServerName::as_str).collect();
        assert_eq!(got, texts);
        let set: std::collections::HashSet<ServerName> = sorted.into_iter().collect();
        assert!(
            set.contains(names[2].as_str()),
            "a long name is found by its text"
        );
        assert!(set.contains("a"), "and a short one");
    }

    #[test]
    fn a_name_shows_and_orders_as_its_text_through_every_trait() {
        let east = ServerName::new("pbx-east").unwrap();
        let west = ServerName::new("pbx-west").unwrap();
        let text: &str = east.as_ref();
        assert_eq!(text, "pbx-east");
        assert_eq!(format!("{east:?}"), "\"pbx-east\"");
        assert_eq!(east.partial_cmp(&west), Some(std::cmp::Ordering::Less));
    }
}
