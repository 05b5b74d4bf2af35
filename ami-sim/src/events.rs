//! Broadcast events: how they are built (`Event`, `Privilege`, body) and what they carry.

use crate::classes::ClassMask;
use crate::out::Msg;

/// One broadcast event, already formatted.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// The `Event:` name.
    pub(crate) name: String,
    /// Its class: a session needs every bit in both `read=` and its event mask.
    pub(crate) class: ClassMask,
    /// The wire bytes, empty line included.
    pub(crate) bytes: Vec<u8>,
}

/// Builds a broadcast event the way `__manager_event_sessions_va` lays it out:
/// `Event`, `Privilege`, optional `SystemName`, then the body.
#[derive(Debug)]
pub(crate) struct EventBuilder {
    name: String,
    class: ClassMask,
    msg: Msg,
}

impl crate::out::PushField for EventBuilder {
    fn push(&mut self, key: &str, value: impl AsRef<[u8]>) {
        self.msg.push(key, value);
    }
}

impl EventBuilder {
    /// Starts an event of class `class`.
    pub(crate) fn new(name: &str, class: ClassMask, system_name: Option<&str>) -> EventBuilder {
        let mut msg = Msg::item(name).field("Privilege", class.privilege());
        if let Some(sys) = system_name {
            msg.push("SystemName", sys);
        }
        EventBuilder {
            name: name.to_string(),
            class,
            msg,
        }
    }

    /// Appends `Key: value`.
    pub(crate) fn field(mut self, key: &str, value: impl AsRef<[u8]>) -> EventBuilder {
        self.msg.push(key, value);
        self
    }

    /// Appends `Key: value` in place.
    pub(crate) fn push(&mut self, key: &str, value: impl AsRef<[u8]>) {
        self.msg.push(key, value);
    }

    /// The event's lines so far, without the closing empty line (a template).
    pub(crate) fn unfinished(self) -> Vec<u8> {
        self.msg.unfinished()
    }

    /// Finishes the event.
    pub(crate) fn build(self) -> Event {
        Event {
            name: self.name,
            class: self.class,
            bytes: self.msg.end(),
        }
    }
}

/// Asterisk's `ast_escape_c` as used for CallerIDName, ConnectedLineName and VarSet values
/// since 13.5: control characters, `\`, `"`, `'` and `?` become C escapes; other bytes
/// (including non-UTF-8 ones) pass through. Public so that tests of a client's unescaping
/// can write names as the simulator does, independently of the client's own code.
pub fn escape_c(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    for &b in v {
        let esc: Option<&[u8]> = match b {
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            b'\\' => Some(b"\\\\"),
            b'"' => Some(b"\\\""),
            b'\'' => Some(b"\\'"),
            b'?' => Some(b"\\?"),
            0x07 => Some(b"\\a"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0x0b => Some(b"\\v"),
            _ => None,
        };
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_escape() {
        let e = EventBuilder::new("UserEvent", ClassMask::USER, None)
            .field("UserEvent", "X")
            .build();
        assert_eq!(
            e.bytes,
            b"Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: X\r\n\r\n"
        );
        assert_eq!(escape_c(b"a\"b\r\n\xe9"), b"a\\\"b\\r\\n\xe9");
    }
}
