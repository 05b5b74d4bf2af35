//! [`Event`]: the typed view of an event message, and what every typed event shares.

use crate::generated::events::EVENT_SPECS;
use crate::read::{read_fields, FieldIssue, Reading};
use crate::spec::MessageSpec;
use crate::Event;
use ami_proto::{Field, Message, MessageKind};
use std::sync::OnceLock;

/// A typed event that can be read from a message of its own name (every generated event
/// struct, and [`Event`] itself, which takes any message).
pub trait FromEvent<'a>: Sized {
    /// The view of `m`, or `None` when `m` is another event.
    fn from_event(m: &'a Message) -> Option<Self>;
}

impl<'a> FromEvent<'a> for Event<'a> {
    fn from_event(m: &'a Message) -> Option<Self> {
        Some(Event::from_message(m))
    }
}

/// Slots of the name index: a power of two, over four times the number of events, so
/// probes stay short.
const SLOTS: usize = 1024;
const EMPTY: u16 = u16::MAX;

/// FNV-1a over the name with ASCII case folded (`| 0x20` maps both cases of a letter to one
/// byte; other bytes may collide with each other, which the final comparison sorts out).
fn hash(name: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &b in name {
        h = (h ^ u32::from(b | 0x20)).wrapping_mul(0x0100_0193);
    }
    h as usize
}

/// Open-addressed index from name hash to position in [`EVENT_SPECS`], built on first use:
/// converting an event is one hash, usually one probe and one comparison.
fn name_index() -> &'static [u16; SLOTS] {
    static INDEX: OnceLock<Box<[u16; SLOTS]>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut slots = Box::new([EMPTY; SLOTS]);
        for (i, spec) in EVENT_SPECS.iter().enumerate() {
            let mut at = hash(spec.name.as_bytes()) % SLOTS;
            while slots[at] != EMPTY {
                at = (at + 1) % SLOTS;
            }
            // Fewer than SLOTS events (checked by a test), so the index fits in u16.
            slots[at] = i as u16;
        }
        slots
    })
}

/// Index of the event named `name` in the generated table, ignoring ASCII case.
pub(crate) fn lookup(name: &[u8]) -> Option<usize> {
    let slots = name_index();
    let mut at = hash(name) % SLOTS;
    loop {
        let i = usize::from(slots[at]);
        let spec = EVENT_SPECS.get(i)?; // EMPTY is past the end: not found
        if spec.name.as_bytes().eq_ignore_ascii_case(name) {
            return Some(i);
        }
        at = (at + 1) % SLOTS;
    }
}

pub(crate) fn issues<'a>(spec: &'static MessageSpec, m: &'a Message) -> Vec<FieldIssue<'a>> {
    read_fields(spec, m)
        .filter_map(|(_, r)| match r {
            Reading::Invalid(issue) => Some(issue),
            _ => None,
        })
        .collect()
}

impl<'a> Event<'a> {
    /// The typed view of `m`. Never fails: a message that is not a known event is
    /// [`Event::Unknown`]. Costs one name lookup; fields are read when asked for.
    pub fn from_message(m: &'a Message) -> Event<'a> {
        if m.kind() != MessageKind::Event {
            return Event::Unknown(m);
        }
        let name = match m.fields().next() {
            Some(first) => first.value.as_bytes(),
            None => return Event::Unknown(m),
        };
        match lookup(name) {
            Some(index) => Event::from_index(index, m),
            None => Event::Unknown(m),
        }
    }

    /// The `Event:` value as sent (for [`Event::Unknown`], whatever its first value is).
    pub fn name(&self) -> Option<&'a str> {
        let m = self.message();
        m.fields().next().and_then(|f| f.value.as_str())
    }

    /// The `ActionID` of a list item or follow-up event.
    pub fn action_id(&self) -> Option<&'a str> {
        self.message().action_id()
    }

    /// Every wire field in order, with what it is under the event's declared fields.
    /// For [`Event::Unknown`] every field but the envelope is [`Reading::Undeclared`].
    pub fn read_fields(&self) -> impl Iterator<Item = (Field<'a>, Reading<'a>)> + 'a {
        read_fields(self.spec().unwrap_or(&UNKNOWN_SPEC), self.message())
    }

    /// Declared fields whose value does not parse as the declared type. The raw values stay
    /// in [`Event::message`]; the typed accessors return `None` for them.
    pub fn issues(&self) -> Vec<FieldIssue<'a>> {
        issues(self.spec().unwrap_or(&UNKNOWN_SPEC), self.message())
    }

    /// Fields the catalog does not declare for this event (envelope headers excluded): the
    /// sender's own headers of a `UserEvent`, or what a newer Asterisk added.
    pub fn undeclared_fields(&self) -> impl Iterator<Item = Field<'a>> + 'a {
        self.read_fields()
            .filter(|(_, r)| matches!(r, Reading::Undeclared))
            .map(|(f, _)| f)
    }
}

impl<'a> From<&'a Message> for Event<'a> {
    fn from(m: &'a Message) -> Self {
        Event::from_message(m)
    }
}

/// The spec of an unknown event: no declared fields.
static UNKNOWN_SPEC: MessageSpec = MessageSpec {
    name: "",
    class: &[],
    source: crate::spec::Source::Undocumented,
    arbitrary_fields: true,
    fields: &[],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::cmp_ignore_case;

    #[test]
    fn the_event_table_is_sorted_for_binary_search() {
        for pair in EVENT_SPECS.windows(2) {
            assert_eq!(
                cmp_ignore_case(pair[0].name.as_bytes(), pair[1].name.as_bytes()),
                std::cmp::Ordering::Less,
                "{} / {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn the_name_index_has_room_for_every_event() {
        assert!(EVENT_SPECS.len() * 4 <= SLOTS);
    }

    #[test]
    fn every_event_is_found_by_its_name_in_any_case() {
        for (i, spec) in EVENT_SPECS.iter().enumerate() {
            assert_eq!(lookup(spec.name.as_bytes()), Some(i));
            assert_eq!(lookup(spec.name.to_ascii_uppercase().as_bytes()), Some(i));
        }
        assert_eq!(lookup(b"NoSuchEvent"), None);
    }
}
