//! Reading one field through its declared type: the helpers every generated accessor calls,
//! and the generic walk ([`read_fields`]) behind issue reports, serde and `ami decode --typed`.

use crate::spec::{is_debug_header, is_envelope, key_matches, FieldSpec, Kind, MessageSpec};
use ami_proto::{unescape_c, Field, Message, Value};
use std::borrow::Cow;
use std::fmt;

/// Parses a decimal integer as Asterisk prints one: an optional `-`, then digits.
///
/// Stricter than `str::parse` (no `+`, no empty string) so that what parses prints back the
/// same way.
pub fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a two-valued field spelled `yes` or `no`, in any ASCII case: one field may come
/// in both (res_fax_spandsp's FAXSession prints `ErrorCorrectionMode` as `Yes`/`No` for a
/// T.30 session and `yes`/`no` for a T.38 gateway), and no pair differs by case alone.
pub fn parse_bool(s: &str, yes: &str, no: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case(yes) {
        Some(true)
    } else if s.eq_ignore_ascii_case(no) {
        Some(false)
    } else {
        None
    }
}

pub(crate) fn text<'a>(m: &'a Message, key: &str) -> Option<&'a str> {
    m.get_str(key)
}

/// A C-escaped field ([`ami_proto::unescape_c`]), its escapes undone.
pub(crate) fn unescaped<'a>(m: &'a Message, key: &str) -> Option<Cow<'a, str>> {
    m.get_str(key).map(unescape_c)
}

/// Every value of the repeatable field `name` ([`FieldSpec::matches`]: a `Stem(*)` name
/// takes every `Stem(...)` header), in wire order.
fn values<'a>(m: &'a Message, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    m.fields()
        .filter(move |f| key_matches(name, f.key))
        .map(|f| own_value(f.key, f.value.as_bytes()))
}

/// The value of a `Stem(<channel>)` header whose channel name holds a colon: the key was
/// cut at that colon, so the rest of it leads the value, up to the `): ` that ends it.
fn own_value<'a>(key: &[u8], value: &'a [u8]) -> &'a [u8] {
    if key.ends_with(b")") {
        return value;
    }
    match value.windows(3).position(|w| w == b"): ") {
        Some(i) => value.get(i + 3..).unwrap_or(value),
        None => value,
    }
}

/// Every value of a repeatable C-escaped field, escapes undone: one element per header, in
/// wire order, a value that is not UTF-8 with U+FFFD for its bad bytes (so the n-th element
/// is the n-th header and a Latin-1 value is still shown; the raw value stays in the message
/// and the event's `issues()` reports it).
pub(crate) fn unescaped_list<'a>(m: &'a Message, name: &'a str) -> Vec<Cow<'a, str>> {
    values(m, name)
        .map(|v| match std::str::from_utf8(v) {
            Ok(s) => unescape_c(s),
            Err(_) => Cow::Owned(unescape_c(&String::from_utf8_lossy(v)).into_owned()),
        })
        .collect()
}

pub(crate) fn int(m: &Message, key: &str) -> Option<i64> {
    m.get_str(key).and_then(parse_int)
}

pub(crate) fn flag(m: &Message, key: &str, yes: &str, no: &str) -> Option<bool> {
    m.get_str(key).and_then(|s| parse_bool(s, yes, no))
}

pub(crate) fn enumer<'a, E: From<&'a str>>(m: &'a Message, key: &str) -> Option<E> {
    m.get_str(key).map(E::from)
}

/// Every value of a repeatable text field: one element per header, in wire order, a value
/// that is not UTF-8 with U+FFFD for its bad bytes (as [`unescaped_list`]).
pub(crate) fn list<'a>(m: &'a Message, name: &'a str) -> Vec<Cow<'a, str>> {
    values(m, name).map(String::from_utf8_lossy).collect()
}

/// The lines of Command output as [`list`] gives `Output` values, in either of Asterisk's
/// formats: `Output:` headers (14+) or the raw body of a legacy `Response: Follows` (13 and
/// older, which has no `Output:` header at all).
pub(crate) fn command_output(m: &Message) -> Vec<Cow<'_, str>> {
    m.command_output()
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect()
}

/// A field's value read through its declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldValue<'a> {
    /// Free text.
    Text(&'a str),
    /// C-escaped text as sent ([`Kind::EscapedText`]); `Display` (and so serde) writes it
    /// with its escapes undone, [`unescaped`](Self::unescaped) gives it.
    Escaped(&'a str),
    /// An integer.
    Int(i64),
    /// A two-valued field.
    Bool(bool),
    /// One of the documented enum values.
    Enum(&'a str),
    /// An enum value the catalog does not list (a newer Asterisk): kept, never an error.
    Other(&'a str),
}

impl<'a> FieldValue<'a> {
    /// An [`Escaped`](Self::Escaped) value with its escapes undone; any other text value as
    /// it is; `None` for numbers and booleans.
    pub fn unescaped(&self) -> Option<Cow<'a, str>> {
        match *self {
            FieldValue::Escaped(s) => Some(unescape_c(s)),
            FieldValue::Text(s) | FieldValue::Enum(s) | FieldValue::Other(s) => {
                Some(Cow::Borrowed(s))
            }
            FieldValue::Int(_) | FieldValue::Bool(_) => None,
        }
    }
}

impl fmt::Display for FieldValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Text(s) | FieldValue::Enum(s) | FieldValue::Other(s) => f.write_str(s),
            FieldValue::Escaped(s) => f.write_str(&unescape_c(s)),
            FieldValue::Int(n) => write!(f, "{n}"),
            FieldValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A field present on the wire whose value does not parse as its declared type.
///
/// Nothing is lost: the raw value stays in the [`Message`], and the typed accessor for the
/// field returns `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldIssue<'a> {
    /// The declared field.
    pub spec: &'static FieldSpec,
    /// The value as sent.
    pub raw: Value<'a>,
}

impl fmt::Display for FieldIssue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:?} is not {}",
            self.spec.name,
            self.raw.to_str_lossy(),
            self.spec.kind.describe()
        )
    }
}

/// What one wire field of a typed message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reading<'a> {
    /// An envelope header (`Event`, `Privilege`, `ActionID`, `SystemName`, `Timestamp`, and
    /// the undeclared ones `debug = on` adds: [`DEBUG_HEADERS`](crate::spec::DEBUG_HEADERS)).
    Envelope,
    /// A declared field whose value parsed as its declared type.
    Typed(&'static FieldSpec, FieldValue<'a>),
    /// A declared field whose value did not parse.
    Invalid(FieldIssue<'a>),
    /// A field the catalog does not declare for this message (for `UserEvent`, the sender's
    /// own headers).
    Undeclared,
}

/// Reads `raw` through `spec`.
pub fn read_value<'a>(spec: &'static FieldSpec, raw: Value<'a>) -> Reading<'a> {
    let Some(s) = raw.as_str() else {
        return Reading::Invalid(FieldIssue { spec, raw });
    };
    let value = match spec.kind {
        Kind::Text => Some(FieldValue::Text(s)),
        Kind::EscapedText => Some(FieldValue::Escaped(s)),
        Kind::Int => parse_int(s).map(FieldValue::Int),
        Kind::Bool { yes, no } => parse_bool(s, yes, no).map(FieldValue::Bool),
        Kind::Enum(values) => Some(if values.contains(&s) {
            FieldValue::Enum(s)
        } else {
            FieldValue::Other(s)
        }),
    };
    match value {
        Some(v) => Reading::Typed(spec, v),
        None => Reading::Invalid(FieldIssue { spec, raw }),
    }
}

/// Every field of `m`, in wire order, with what it is under `spec`.
pub fn read_fields<'a>(
    spec: &'static MessageSpec,
    m: &'a Message,
) -> impl Iterator<Item = (Field<'a>, Reading<'a>)> + 'a {
    // Asterisk prints fields in the order the catalog lists them, so the field after the
    // last one found is tried first; a full scan only when that guess misses.
    let mut next = 0;
    m.fields().map(move |field| {
        // Specs never declare envelope headers, so a hit on the guess is not one.
        let declared = match spec.fields.get(next) {
            Some(fs) if fs.matches(field.key) => Some(next),
            _ if is_envelope(field.key) => return (field, Reading::Envelope),
            _ => spec.fields.iter().position(|fs| fs.matches(field.key)),
        };
        let reading = match declared {
            Some(i) => {
                next = i + 1;
                read_value(&spec.fields[i], field.value)
            }
            // Not declared: a header `debug = on` adds to every event is the envelope's.
            None if is_debug_header(field.key) => Reading::Envelope,
            None => Reading::Undeclared,
        };
        (field, reading)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_only_in_the_form_asterisk_prints() {
        assert_eq!(parse_int("16"), Some(16));
        assert_eq!(parse_int("-1"), Some(-1));
        assert_eq!(parse_int(""), None);
        assert_eq!(parse_int("-"), None);
        assert_eq!(parse_int("+3"), None);
        assert_eq!(parse_int("1.5"), None);
        assert_eq!(parse_int("99999999999999999999"), None);
    }

    #[test]
    fn booleans_are_read_in_any_case_and_nothing_else() {
        assert_eq!(parse_bool("Yes", "Yes", "No"), Some(true));
        assert_eq!(parse_bool("No", "Yes", "No"), Some(false));
        // FAXSession's ErrorCorrectionMode: `Yes` from a T.30 session, `yes` from a gateway.
        assert_eq!(parse_bool("Yes", "yes", "no"), Some(true));
        assert_eq!(parse_bool("no", "Yes", "No"), Some(false));
        assert_eq!(parse_bool("Ye", "Yes", "No"), None);
        assert_eq!(parse_bool("", "Yes", "No"), None);
    }
}
