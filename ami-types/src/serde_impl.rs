//! `serde` support (feature `serde`): a typed event serialises as a map from wire header
//! names to typed values, in wire order. Integers and booleans come out as numbers and
//! booleans; text, enums and values that did not parse come out as strings (nothing is
//! dropped); a value that is not UTF-8 comes out as ami-json has it,
//! `{"base64":<exact bytes>,"lossy":<text>}` (for a C-escaped field, `lossy` is unescaped, as
//! its accessor gives it); a header that appears several times becomes a list. A key is
//! written as text (a map key must be a string): one that is not UTF-8 has U+FFFD for its
//! bad bytes, and keys that read the same that way are one key (a list of their values).

use crate::read::{read_fields, FieldValue, Reading};
use crate::spec::MessageSpec;
use crate::Event;
use ami_proto::{Field, Message};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

static NO_FIELDS: MessageSpec = MessageSpec {
    name: "",
    class: &[],
    source: crate::spec::Source::Undocumented,
    arbitrary_fields: true,
    fields: &[],
};

struct One<'a>(Field<'a>, Reading<'a>);

impl Serialize for One<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.1 {
            Reading::Typed(_, FieldValue::Int(n)) => s.serialize_i64(n),
            Reading::Typed(_, FieldValue::Bool(b)) => s.serialize_bool(b),
            Reading::Typed(_, v) => s.collect_str(&v),
            _ if self.0.value.as_str().is_none() => {
                let lossy = self.0.value.to_str_lossy();
                let escaped = match self.1 {
                    Reading::Invalid(issue) => issue.spec.kind == crate::spec::Kind::EscapedText,
                    _ => false,
                };
                let lossy = if escaped {
                    ami_proto::unescape_c(&lossy).into_owned()
                } else {
                    lossy.into_owned()
                };
                ami_json::NonUtf8 {
                    bytes: self.0.value.as_bytes(),
                    lossy: &lossy,
                }
                .serialize(s)
            }
            _ => s.serialize_str(&self.0.value.to_str_lossy()),
        }
    }
}

struct Many<'a>(Vec<One<'a>>);

impl Serialize for Many<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for one in &self.0 {
            seq.serialize_element(one)?;
        }
        seq.end()
    }
}

pub(crate) fn serialize<S: Serializer>(
    spec: Option<&'static MessageSpec>,
    m: &Message,
    s: S,
) -> Result<S::Ok, S::Error> {
    let spec = spec.unwrap_or(&NO_FIELDS);
    let fields: Vec<(Field<'_>, Reading<'_>)> = read_fields(spec, m).collect();
    let mut map = s.serialize_map(None)?;
    for (i, (field, reading)) in fields.iter().enumerate() {
        // Compared as the map key is written (lossy text): two keys that differ only in
        // bytes that are not UTF-8 would otherwise write the same JSON key twice, and a
        // strict parser keeps only one of their values.
        let same = |f: &Field<'_>| f.key_str().eq_ignore_ascii_case(&field.key_str());
        if fields[..i].iter().any(|(f, _)| same(f)) {
            continue; // already written with its first occurrence
        }
        let repeatable = match reading {
            Reading::Typed(fs, _) => fs.repeatable,
            Reading::Invalid(issue) => issue.spec.repeatable,
            _ => false,
        };
        let key = field.key_str();
        let count = fields.iter().filter(|(f, _)| same(f)).count();
        if repeatable || count > 1 {
            let all = fields
                .iter()
                .filter(|(f, _)| same(f))
                .map(|(f, r)| One(*f, *r))
                .collect();
            map.serialize_entry(&key, &Many(all))?;
        } else {
            map.serialize_entry(&key, &One(*field, *reading))?;
        }
    }
    map.end()
}

impl Serialize for Event<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(self.spec(), self.message(), s)
    }
}
