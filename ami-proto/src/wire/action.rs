//! `Action` and its encoder: what a client sends, checked before a byte is written.

use std::fmt;
use thiserror::Error;

/// Asterisk's inbound line limit, CRLF included (`get_input` has a 1025-byte buffer).
pub const MAX_LINE_LEN: usize = 1024;
/// Asterisk's inbound header limit per message (`AST_MAX_MANHEADERS`).
pub const MAX_LINES: usize = 128;
/// Longest ActionID we send: some handlers format ActionID into 80-byte buffers and glue
/// the next header onto an overflowing line, so 64 ASCII characters keeps every echo intact.
pub const MAX_ACTION_ID_LEN: usize = 64;

/// Field names whose values are secrets: never printed by `Debug`, never logged.
const SECRET_KEYS: [&str; 2] = ["Secret", "Key"];

/// True for a field name whose value must never be printed.
pub fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.iter().any(|s| s.eq_ignore_ascii_case(key))
}

/// Field names under which Asterisk 22 sends credentials of its own configuration in
/// events and list items (PJSIP's `AuthDetail` and `AuthList`: `Password`,
/// `PasswordDigest` (as good as the password for digest auth), `OauthSecret`,
/// `RefreshToken`; `TransportDetail`'s TLS key `Password`; `VoicemailPasswordChange`'s
/// `NewPassword`): a `PJSIPShowEndpoint` answer printed with `{:?}` into a log would
/// otherwise carry every SIP password of the endpoint.
const CREDENTIAL_FIELDS: [&str; 5] = [
    "Password",
    "PasswordDigest",
    "OauthSecret",
    "RefreshToken",
    "NewPassword",
];

/// True for a field name under which the server sends a credential: `Debug` hides its
/// value in any message, event or action alike.
pub(crate) fn is_credential_field(key: &str) -> bool {
    CREDENTIAL_FIELDS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(key))
}

/// An ActionID: at most 64 printable ASCII characters, no spaces.
///
/// An ID of up to 30 bytes (every ID the client generates) is stored inline: creating,
/// cloning and dropping it never allocates. The client makes one per action and hands
/// copies to the pending table, the caller and the completion; an allocation per copy was
/// a large part of an action's cost. Longer IDs (only from [`ActionId::new`]) are boxed.
#[derive(Clone)]
pub struct ActionId(Repr);

/// Bytes an inline [`ActionId`] holds: the whole fits in 32 bytes, as a boxed one does
/// with its tag, so small IDs cost no more to move than before.
const INLINE_LEN: usize = 30;

#[derive(Clone)]
enum Repr {
    /// `len` bytes in use; the rest stay zero.
    Inline {
        len: u8,
        bytes: [u8; INLINE_LEN],
    },
    Boxed(Box<str>),
}

/// Why a string cannot be an [`ActionId`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidActionId {
    /// Empty: Asterisk treats an empty ActionID as absent.
    #[error("ActionID is empty")]
    Empty,
    /// Longer than [`MAX_ACTION_ID_LEN`].
    #[error("ActionID is {len} bytes; at most {MAX_ACTION_ID_LEN} are allowed")]
    TooLong {
        /// The refused length.
        len: usize,
    },
    /// Contains a byte outside printable ASCII (`!` to `~`).
    #[error("ActionID contains byte 0x{byte:02x}; only printable ASCII without spaces is allowed")]
    BadByte {
        /// The first refused byte.
        byte: u8,
    },
}

impl ActionId {
    /// Checks `s` and wraps it.
    pub fn new(s: &str) -> Result<ActionId, InvalidActionId> {
        if s.is_empty() {
            return Err(InvalidActionId::Empty);
        }
        if s.len() > MAX_ACTION_ID_LEN {
            return Err(InvalidActionId::TooLong { len: s.len() });
        }
        if let Some(&byte) = s.as_bytes().iter().find(|b| !b.is_ascii_graphic()) {
            return Err(InvalidActionId::BadByte { byte });
        }
        if s.len() > INLINE_LEN {
            return Ok(ActionId(Repr::Boxed(s.into())));
        }
        let mut bytes = [0u8; INLINE_LEN];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(ActionId(Repr::Inline {
            len: s.len() as u8,
            bytes,
        }))
    }

    /// An ID the client generated itself: an 8-character base-36 prefix, `-`, and a decimal
    /// counter, so at most 29 printable ASCII bytes and always valid. Written digit by
    /// digit, inline: no formatter, no allocation (one ID per action).
    pub(crate) fn generated(prefix: &str, counter: u64) -> ActionId {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = counter;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let (prefix, digits) = (prefix.as_bytes(), &digits[at..]);
        let len = prefix.len() + 1 + digits.len();
        if len > INLINE_LEN {
            // Not with the client's 8-character prefixes; kept correct for any prefix.
            let text = format!("{}-{}", String::from_utf8_lossy(prefix), counter);
            return ActionId(Repr::Boxed(text.into()));
        }
        let mut bytes = [0u8; INLINE_LEN];
        bytes[..prefix.len()].copy_from_slice(prefix);
        bytes[prefix.len()] = b'-';
        bytes[prefix.len() + 1..len].copy_from_slice(digits);
        let id = ActionId(Repr::Inline {
            len: len as u8,
            bytes,
        });
        debug_assert!(
            ActionId::new(id.as_str()).is_ok(),
            "generated ActionID {id:?}"
        );
        id
    }

    /// The ActionID as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only printable ASCII is ever stored, so this never falls back.
            Repr::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Repr::Boxed(s) => s,
        }
    }

    /// The ActionID's bytes (no UTF-8 check: for comparisons and the encoder).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Boxed(s) => s.as_bytes(),
        }
    }
}

impl PartialEq for ActionId {
    fn eq(&self, other: &ActionId) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ActionId {}

impl std::hash::Hash for ActionId {
    /// The text's hash, whichever way it is stored.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for ActionId {
    fn partial_cmp(&self, other: &ActionId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ActionId {
    /// The text's order.
    fn cmp(&self, other: &ActionId) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionId({})", self.as_str())
    }
}

impl std::str::FromStr for ActionId {
    type Err = InvalidActionId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActionId::new(s)
    }
}

/// An AMI action: a name and ordered, repeatable fields.
///
/// Building never fails; [`Action::encode`] checks everything before writing anything.
/// `Debug` prints `<redacted>` for `Secret` and `Key` values (and for the credential
/// fields Asterisk itself sends, such as `Password`).
///
/// ```
/// use ami_proto::{Action, ActionId};
///
/// let action = Action::new("Originate")
///     .field("Channel", "Local/100@from-internal")
///     .field("Variable", "A=1")
///     // Escaped for Asterisk's splitter: B arrives as `2,3`, not `2`.
///     .variable("B", "2,3")
///     .unwrap();
/// let mut wire = Vec::new();
/// action.encode(Some(&ActionId::new("x-1").unwrap()), &mut wire).unwrap();
/// assert_eq!(
///     wire,
///     b"Action: Originate\r\nActionID: x-1\r\nChannel: Local/100@from-internal\r\n\
/// Variable: A=1\r\nVariable: B=2\\,3\r\n\r\n"
/// );
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Action {
    name: String,
    fields: Vec<(String, String)>,
}

/// Why an action cannot be sent. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The action name is empty.
    #[error("action name is empty")]
    EmptyName,
    /// A field name is empty, or has a byte other than printable ASCII, or a `:`.
    #[error("field name {name:?} is not allowed (printable ASCII without ':' or spaces)")]
    InvalidName {
        /// The refused name (names are never secret).
        name: String,
    },
    /// The action name holds a blank (space, tab, any whitespace) or a control character.
    /// Asterisk keeps trailing blanks of a value, so `Action: Ping ` names no command it
    /// has ("Invalid/unknown command"), and no action it registers has a blank inside.
    #[error("action name {name:?} holds whitespace or a control character; Asterisk would find no such action")]
    InvalidActionName {
        /// The refused name, escaped so its blanks show.
        name: String,
    },
    /// A value holds CR, LF or NUL, which would let it inject headers or whole actions.
    #[error("value of {name:?} contains byte 0x{byte:02x} (CR, LF and NUL are refused)")]
    ForbiddenByte {
        /// The field whose value was refused; the value itself is not repeated.
        name: String,
        /// The refused byte.
        byte: u8,
    },
    /// A line longer than Asterisk accepts (1024 bytes with CRLF).
    #[error("line for {name:?} is {len} bytes with CRLF; Asterisk accepts at most {MAX_LINE_LEN}")]
    LineTooLong {
        /// The field whose line was too long.
        name: String,
        /// The line's length with CRLF.
        len: usize,
    },
    /// More lines than Asterisk accepts in one message (128).
    #[error("action has {lines} lines; Asterisk accepts at most {MAX_LINES}")]
    TooManyLines {
        /// The line count, Action and ActionID lines included.
        lines: usize,
    },
}

fn check_name(name: &str) -> Result<(), EncodeError> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if ok {
        Ok(())
    } else {
        Err(EncodeError::InvalidName {
            name: name.escape_debug().to_string(),
        })
    }
}

fn check_line(name: &str, value: &str) -> Result<(), EncodeError> {
    check_name(name)?;
    if let Some(&byte) = value
        .as_bytes()
        .iter()
        .find(|&&b| b == b'\r' || b == b'\n' || b == 0)
    {
        return Err(EncodeError::ForbiddenByte {
            name: name.to_string(),
            byte,
        });
    }
    let len = line_len(name, value);
    if len > MAX_LINE_LEN {
        return Err(EncodeError::LineTooLong {
            name: name.to_string(),
            len,
        });
    }
    Ok(())
}

/// An action name Asterisk can find: no whitespace anywhere and no control character (it
/// skips leading blanks but keeps trailing ones, and no action it registers has a blank).
/// Called after [`check_line`], so CR, LF and NUL are refused as the injection they are.
fn check_action_name(name: &str) -> Result<(), EncodeError> {
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EncodeError::InvalidActionName {
            name: name.escape_debug().to_string(),
        });
    }
    Ok(())
}

fn line_len(name: &str, value: &str) -> usize {
    name.len() + 2 + value.len() + 2
}

impl Action {
    /// A new action named `name` (case-insensitive on the server).
    pub fn new(name: impl Into<String>) -> Action {
        Action {
            name: name.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a field; repeated names are kept in order. Checked when encoded: a name of
    /// printable ASCII without `:` or spaces, a value without CR, LF or NUL, a line within
    /// Asterisk's 1,022 bytes. Asterisk reads a value from its first byte above a space, so
    /// blanks at its start never arrive (`" x"` is `x` to it; trailing ones are kept), and
    /// an empty value counts as no field at all.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<String>) -> Action {
        self.push(name, value);
        self
    }

    /// Adds a field in place.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.fields.push((name.into(), value.into()));
    }

    /// The action name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fields in order (not including `Action` and `ActionID`).
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The first value of `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True when the action's name is `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// True for an `Originate` with `Async` true (as Asterisk's `ast_true` reads it: `true`,
    /// `yes`, `1`, `on`...): it completes with an `OriginateResponse` event, a `call` event
    /// the session's event mask must let through.
    pub fn expects_originate_response(&self) -> bool {
        self.is("Originate") && self.get("Async").is_some_and(ast_true)
    }

    /// Checks every rule [`encode`](Self::encode) enforces, without writing.
    pub fn validate(&self, action_id: Option<&ActionId>) -> Result<usize, EncodeError> {
        if self.name.is_empty() {
            return Err(EncodeError::EmptyName);
        }
        check_line("Action", &self.name)?;
        check_action_name(&self.name)?;
        let mut len = line_len("Action", &self.name);
        let mut lines = 1 + self.fields.len();
        if let Some(id) = action_id {
            lines += 1;
            len += "ActionID".len() + 2 + id.as_bytes().len() + 2;
        }
        for (k, v) in &self.fields {
            check_line(k, v)?;
            len += line_len(k, v);
        }
        if lines > MAX_LINES {
            return Err(EncodeError::TooManyLines { lines });
        }
        Ok(len + 2)
    }

    /// Appends the wire form to `out`: `Action`, then `ActionID` (second, so the server can
    /// echo it even when a later line is refused), then the fields, then one empty line.
    /// On error nothing is appended. Returns the number of bytes written.
    pub fn encode(
        &self,
        action_id: Option<&ActionId>,
        out: &mut Vec<u8>,
    ) -> Result<usize, EncodeError> {
        let len = self.validate(action_id)?;
        out.reserve(len);
        self.encode_validated(action_id, out);
        Ok(len)
    }

    /// [`encode`](Self::encode) for an action that [`validate`](Self::validate) accepted
    /// with this `action_id` (the client checks an action when it is queued and writes it
    /// later: checking each field twice was a good part of its cost).
    pub(crate) fn encode_validated(&self, action_id: Option<&ActionId>, out: &mut Vec<u8>) {
        write_line(out, "Action", self.name.as_bytes());
        if let Some(id) = action_id {
            write_line(out, "ActionID", id.as_bytes());
        }
        for (k, v) in &self.fields {
            write_line(out, k, v.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn write_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Fields<'a>(&'a [(String, String)]);
        impl fmt::Debug for Fields<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut m = f.debug_list();
                for (k, v) in self.0 {
                    if is_secret_key(k) || is_credential_field(k) {
                        m.entry(&(k, "<redacted>"));
                    } else {
                        m.entry(&(k, v));
                    }
                }
                m.finish()
            }
        }
        f.debug_struct("Action")
            .field("name", &self.name)
            .field("fields", &Fields(&self.fields))
            .finish()
    }
}

/// Whether Asterisk's `ast_true` reads `v` as true (an action's yes/no field, the event
/// mask's `on`).
pub(crate) fn ast_true(v: &str) -> bool {
    let v = header_value(v);
    ["true", "yes", "1", "on", "y", "t"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
}

/// A header value as Asterisk's `astman_get_header` hands it to an action: leading blanks
/// (every byte below 33, `ast_skip_blanks`) skipped, trailing ones kept, so `Async: true `
/// is not true to Asterisk and is not to the client either.
pub(crate) fn header_value(v: &str) -> &str {
    v.trim_start_matches(|c: char| (c as u32) < 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_async_originate_expects_its_originate_response() {
        let o = || Action::new("originate").field("Channel", "Local/1@x");
        assert!(o().field("Async", "true").expects_originate_response());
        // Asterisk skips a value's leading blanks and keeps its trailing ones: `On ` is not
        // true to `ast_true`, so that Originate is sync (no OriginateResponse ever comes).
        assert!(o().field("Async", " On").expects_originate_response());
        assert!(!o().field("Async", "true ").expects_originate_response());
        assert!(!o().field("Async", " On ").expects_originate_response());
        assert!(!o().field("Async", "false").expects_originate_response());
        assert!(!o().expects_originate_response());
        assert!(!Action::new("Ping")
            .field("Async", "true")
            .expects_originate_response());
    }

    fn encode(a: &Action) -> Result<Vec<u8>, EncodeError> {
        let mut out = b"keep".to_vec();
        let r = a.encode(None, &mut out);
        match r {
            Ok(n) => {
                assert_eq!(out.len(), 4 + n);
                Ok(out[4..].to_vec())
            }
            Err(e) => {
                assert_eq!(out, b"keep", "nothing written on error");
                Err(e)
            }
        }
    }

    #[test]
    fn crlf_injection_in_value_is_refused() {
        for bad in ["x\r\nAction: Command", "x\nAction: Command", "x\rY", "a\0b"] {
            let a = Action::new("Ping").field("Foo", bad);
            assert!(
                matches!(encode(&a), Err(EncodeError::ForbiddenByte { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn injection_in_name_or_action_name_is_refused() {
        for bad in ["Foo\r\nAction", "Foo:", "", "Fo o", "A\n"] {
            let a = Action::new("Ping").field(bad, "v");
            assert!(
                matches!(encode(&a), Err(EncodeError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        let a = Action::new("Ping\r\nAction: Command");
        assert!(matches!(encode(&a), Err(EncodeError::ForbiddenByte { .. })));
        assert_eq!(encode(&Action::new("")), Err(EncodeError::EmptyName));
    }

    #[test]
    fn an_action_name_with_whitespace_or_a_control_character_is_refused() {
        for bad in [
            "Ping ",
            " Ping",
            "Core Show",
            "Ping\t",
            "Ping\u{a0}",
            "Pi\x1bng",
        ] {
            assert!(
                matches!(
                    encode(&Action::new(bad)),
                    Err(EncodeError::InvalidActionName { .. })
                ),
                "{bad:?}"
            );
        }
        for good in ["Ping", "PJSIPShowEndpoint", "DBGet", "Queue_Add", "x.y"] {
            assert!(encode(&Action::new(good)).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn asterisk_line_limit_is_enforced_at_1024_with_crlf() {
        // "Foo: " + value + CRLF == 1024 is the longest Asterisk accepts.
        let ok = Action::new("Ping").field("Foo", "v".repeat(1024 - 7));
        assert!(encode(&ok).is_ok());
        let bad = Action::new("Ping").field("Foo", "v".repeat(1024 - 6));
        assert_eq!(
            encode(&bad),
            Err(EncodeError::LineTooLong {
                name: "Foo".into(),
                len: 1025
            })
        );
    }

    #[test]
    fn asterisk_line_count_is_enforced_at_128() {
        let mut a = Action::new("Ping");
        for i in 0..127 {
            a.push(format!("H{i}"), "x");
        }
        assert!(encode(&a).is_ok());
        let id = ActionId::new("id").unwrap();
        let mut out = Vec::new();
        assert_eq!(
            a.encode(Some(&id), &mut out),
            Err(EncodeError::TooManyLines { lines: 129 })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn action_id_rules() {
        assert!(ActionId::new(&"a".repeat(64)).is_ok());
        assert_eq!(
            ActionId::new(&"a".repeat(65)),
            Err(InvalidActionId::TooLong { len: 65 })
        );
        assert_eq!(ActionId::new(""), Err(InvalidActionId::Empty));
        assert_eq!(
            ActionId::new("a b"),
            Err(InvalidActionId::BadByte { byte: b' ' })
        );
        assert_eq!(
            ActionId::new("a\r\n"),
            Err(InvalidActionId::BadByte { byte: b'\r' })
        );
    }

    #[test]
    fn generated_ids_read_as_prefix_dash_counter() {
        for n in [0, 7, 10, 12_345, u64::MAX] {
            let id = ActionId::generated("abcdefgh", n);
            let text = format!("abcdefgh-{n}");
            assert_eq!(id.as_str(), text);
            assert_eq!(id, ActionId::new(&text).unwrap());
            assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn a_generated_id_too_long_to_keep_inline_reads_the_same() {
        let prefix = "p".repeat(20);
        let id = ActionId::generated(&prefix, u64::MAX);
        assert!(matches!(id.0, Repr::Boxed(_)));
        assert_eq!(id.as_str(), format!("{prefix}-{}", u64::MAX));
    }

    #[test]
    fn action_ids_compare_and_hash_as_their_text() {
        let (a9, a10) = (
            ActionId::new("a-9").unwrap(),
            ActionId::new("a-10").unwrap(),
        );
        assert_eq!(a9.cmp(&a10), "a-9".cmp("a-10"));
        assert_eq!(a9.partial_cmp(&a10), Some("a-9".cmp("a-10")));
        assert!(a9 > a10);
        assert_ne!(a9, a10);
        let longest = ActionId::new(&"z".repeat(MAX_ACTION_ID_LEN)).unwrap();
        assert_eq!(longest.as_str().len(), MAX_ACTION_ID_LEN);
        // Inline and boxed IDs of the same text are one ID.
        let inline = ActionId::new(&"q".repeat(INLINE_LEN)).unwrap();
        let boxed = ActionId::new(&"q".repeat(INLINE_LEN + 1)).unwrap();
        assert!(matches!(inline.0, Repr::Inline { .. }) && matches!(boxed.0, Repr::Boxed(_)));
        assert_eq!(inline.cmp(&boxed), inline.as_str().cmp(boxed.as_str()));
        assert_eq!(std::mem::size_of::<ActionId>(), 32);
        let set: std::collections::HashSet<ActionId> = [a9.clone(), a10, longest].into();
        assert!(set.contains(&ActionId::new("a-9").unwrap()));
        assert!(!set.contains(&ActionId::new("a-1").unwrap()));
    }

    #[test]
    fn distinct_action_ids_hash_apart() {
        // The pending table is keyed by ActionId: IDs that all hashed alike would make every
        // lookup a walk over every action in flight.
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hasher = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let hashes: std::collections::HashSet<u64> = (0..100)
            .map(|n| hasher.hash_one(ActionId::generated("abcdefgh", n)))
            .collect();
        assert_eq!(hashes.len(), 100);
        let text = "abcdefgh-7";
        assert_eq!(
            hasher.hash_one(ActionId::new(text).unwrap()),
            hasher.hash_one(ActionId::generated("abcdefgh", 7))
        );
    }

    #[test]
    fn a_generated_id_of_thirty_bytes_is_kept_inline() {
        // 30 bytes is the inline limit, as for `ActionId::new`: no allocation per action.
        let id = ActionId::generated(&"p".repeat(INLINE_LEN - 2), 7);
        assert_eq!(id.as_str().len(), INLINE_LEN);
        assert!(matches!(id.0, Repr::Inline { .. }));
        assert!(matches!(
            ActionId::generated(&"p".repeat(INLINE_LEN - 1), 7).0,
            Repr::Boxed(_)
        ));
    }

    #[test]
    fn a_header_value_is_read_from_its_first_byte_above_a_space() {
        // `ast_skip_blanks` skips bytes below 33: control bytes and spaces, not `!`.
        assert_eq!(header_value("\x01\t yes "), "yes ");
        assert_eq!(header_value("!yes"), "!yes");
        assert!(ast_true("\t\x1fyes"));
        assert!(!ast_true("!yes"));
    }

    #[test]
    fn secrets_never_appear_in_debug() {
        let a = Action::new("Login")
            .field("Username", "admin")
            .field("Secret", "amp111")
            .field("key", "0123abcd");
        let dbg = format!("{a:?} {a:#?}");
        assert!(!dbg.contains("amp111"));
        assert!(!dbg.contains("0123abcd"));
        assert!(dbg.contains("admin"));
        assert!(dbg.contains("<redacted>"));
        // A field named like one of the credentials Asterisk sends is hidden in an action
        // too.
        let set = Action::new("UserEvent")
            .field("UserEvent", "SetPin")
            .field("NewPassword", "4321");
        assert!(!format!("{set:?}").contains("4321"));
    }
}
