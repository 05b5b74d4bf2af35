//! What the catalog says about each message: its fields, their wire names and declared types.
//!
//! The generated code holds one [`MessageSpec`] per typed event and per typed response. The
//! generic parts of the crate (issue reports, serde, [`crate::Event::read_fields`]) walk these
//! tables, so each behaviour is written once, not once per event.

/// The declared type of a field, as the generator inferred it from the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Free text.
    Text,
    /// Free text that Asterisk writes through `ast_escape_c` (the channel block's names and
    /// variables, VarSet's value, PresenceStateChange's subtype and message, NewCallerid's
    /// presentation): read with its escapes undone ([`ami_proto::unescape_c`]).
    EscapedText,
    /// A decimal integer (`-` allowed), read as `i64`.
    Int,
    /// A two-valued field, spelled exactly `yes` or `no` on the wire (`Yes`/`No`, `1`/`0`, ...).
    Bool {
        /// The spelling of `true`.
        yes: &'static str,
        /// The spelling of `false`.
        no: &'static str,
    },
    /// One of the documented values; any other value is kept as the enum's `Other` case.
    Enum(&'static [&'static str]),
}

impl Kind {
    /// A short name of the type, used in issue reports.
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Text => "UTF-8 text",
            Kind::EscapedText => "UTF-8 text (C-escaped)",
            Kind::Int => "integer",
            Kind::Bool { .. } => "boolean",
            Kind::Enum(_) => "enum (UTF-8 text)",
        }
    }
}

/// One declared field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The header name as the server prints it (matched ignoring ASCII case). A name ending
    /// in `(*)` stands for a family of headers ([`matches`](Self::matches)): Asterisk
    /// prints `ChanVariable(<channel>)` with the channel's name in the key.
    pub name: &'static str,
    /// The declared type.
    pub kind: Kind,
    /// True when the header may appear several times (`Variable`, `ChanVariable`).
    pub repeatable: bool,
}

impl FieldSpec {
    /// Whether the wire header `key` is this field: its name, ignoring ASCII case; for a
    /// name `Stem(*)`, any key `Stem(...)` (`ChanVariable(*)` matches
    /// `ChanVariable(PJSIP/100-00000001)`).
    pub fn matches(&self, key: &[u8]) -> bool {
        key_matches(self.name, key)
    }
}

/// [`FieldSpec::matches`] for a field named `name`.
pub(crate) fn key_matches(name: &str, key: &[u8]) -> bool {
    match name.strip_suffix("*)").filter(|open| open.ends_with('(')) {
        // `Stem(`, then anything, then `)`: what is between is the key's own (a channel).
        // A channel name with a colon (chan_rtp's `UnicastRTP/127.0.0.1:4000-...`) cuts the
        // key there, a key ending at its first colon: `Stem(` and no `)` is that key too.
        Some(open) => {
            key.len() > open.len()
                && (key.ends_with(b")") || !key.contains(&b')'))
                && key
                    .get(..open.len())
                    .is_some_and(|k| k.eq_ignore_ascii_case(open.as_bytes()))
        }
        None => name.as_bytes().eq_ignore_ascii_case(key),
    }
}

/// Where the catalog's knowledge of a message comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A documented event (`<managerEvent>` in the Asterisk docs).
    Documented,
    /// An event the docs omit, with fields read from the C format strings.
    Undocumented,
    /// An action's response; fields listed by hand from the Asterisk source and captures.
    Response,
}

/// A typed message: its name and every field the catalog knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageSpec {
    /// The `Event:` value on the wire (or the action name, for a response).
    pub name: &'static str,
    /// Read classes the receiving session needs (`call`, `agent`, ...); empty for responses.
    pub class: &'static [&'static str],
    /// Where the field list comes from.
    pub source: Source,
    /// True for `UserEvent`: it carries whatever headers its sender added.
    pub arbitrary_fields: bool,
    /// Declared fields, channel and bridge snapshots expanded with their prefixes.
    pub fields: &'static [FieldSpec],
}

impl MessageSpec {
    /// The declared field the header `key` is ([`FieldSpec::matches`]).
    pub fn field(&self, key: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.matches(key.as_bytes()))
    }
}

/// Every typed event the catalog knows, sorted by name ignoring ASCII case.
pub fn events() -> &'static [MessageSpec] {
    &crate::generated::events::EVENT_SPECS
}

/// Every typed response (`Ping`, `CoreSettings`, ...).
pub fn responses() -> &'static [MessageSpec] {
    &crate::generated::actions::RESPONSE_SPECS
}

/// Headers every event may carry that belong to no event's own field list: the event name,
/// the read classes, the ActionID of list items and follow-ups, and the two headers
/// `manager.conf` can add to every event.
pub const ENVELOPE: [&str; 5] = ["Event", "Privilege", "ActionID", "SystemName", "Timestamp"];

/// Headers `manager.conf`'s `debug = on` adds to every event it broadcasts
/// (`__manager_event_sessions_va`: the event's sequence number and where in Asterisk it was
/// raised). Envelope headers too, unless the event declares a field of that name
/// (OutboundRegistrationDetail's own `Line`).
pub const DEBUG_HEADERS: [&str; 4] = ["SequenceNumber", "File", "Line", "Func"];

/// True when `key` is one of the [`DEBUG_HEADERS`] (ASCII case-insensitive).
pub fn is_debug_header(key: &[u8]) -> bool {
    DEBUG_HEADERS
        .iter()
        .any(|e| e.as_bytes().eq_ignore_ascii_case(key))
}

/// True when `key` is one of the [`ENVELOPE`] headers (ASCII case-insensitive).
pub fn is_envelope(key: &[u8]) -> bool {
    ENVELOPE
        .iter()
        .any(|e| e.as_bytes().eq_ignore_ascii_case(key))
}

/// Compares two names ignoring ASCII case: the order of the generated event table.
#[cfg(test)]
pub(crate) fn cmp_ignore_case(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    for i in 0..n {
        let (x, y) = (a[i].to_ascii_lowercase(), b[i].to_ascii_lowercase());
        if x != y {
            return x.cmp(&y);
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn name_order_ignores_case_and_puts_prefixes_first() {
        assert_eq!(cmp_ignore_case(b"Newexten", b"NEWEXTEN"), Ordering::Equal);
        assert_eq!(cmp_ignore_case(b"Dial", b"DialBegin"), Ordering::Less);
        assert_eq!(cmp_ignore_case(b"hangup", b"Hangupx"), Ordering::Less);
        assert_eq!(cmp_ignore_case(b"B", b"a"), Ordering::Greater);
    }

    #[test]
    fn a_name_ending_in_a_star_in_parentheses_matches_every_key_of_its_family() {
        let f = |name| FieldSpec {
            name,
            kind: Kind::Text,
            repeatable: true,
        };
        let family = f("ChanVariable(*)");
        assert!(family.matches(b"ChanVariable(PJSIP/100-00000001)"));
        assert!(family.matches(b"chanvariable(Local/a@b-1;1)"));
        assert!(family.matches(b"ChanVariable()"));
        assert!(!family.matches(b"ChanVariable"));
        assert!(!family.matches(b"ChanVariable("));
        // A key cut at a colon in its channel's name (the rest leads the value).
        assert!(family.matches(b"ChanVariable(UnicastRTP/127.0.0.1"));
        assert!(!family.matches(b"ChanVariable(x)y"));
        assert!(!family.matches(b"ChanVariables(x)"));
        let plain = f("ChanVariable");
        assert!(plain.matches(b"CHANVARIABLE"));
        assert!(!plain.matches(b"ChanVariable(x)"));
    }

    #[test]
    fn envelope_headers_match_any_case() {
        assert!(is_envelope(b"actionid"));
        assert!(is_envelope(b"Privilege"));
        assert!(!is_envelope(b"Channel"));
    }
}
