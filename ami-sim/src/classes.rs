//! Permission and event classes (`read=`, `write=`, `Events:`), parsed like Asterisk.

use std::fmt;

/// A set of AMI classes: the `read=`/`write=` permissions of a user, the event mask of a
/// session, or the class of an event.
///
/// Bits follow Asterisk's `EVENT_FLAG_*` (`system` = bit 0, `call` = bit 1, ...).
/// [`ClassMask::ALL`] is Asterisk's `INT_MAX`, which is what `all`, `on` and `yes` mean.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClassMask(pub u32);

/// One named class and its bit, in Asterisk's `perms[]` order.
struct Perm {
    bits: u32,
    label: &'static str,
}

/// Asterisk's `perms[]` table (main/manager.c), `all` last; `none` is handled separately.
const PERMS: [Perm; 20] = [
    Perm {
        bits: 1 << 0,
        label: "system",
    },
    Perm {
        bits: 1 << 1,
        label: "call",
    },
    Perm {
        bits: 1 << 2,
        label: "log",
    },
    Perm {
        bits: 1 << 3,
        label: "verbose",
    },
    Perm {
        bits: 1 << 4,
        label: "command",
    },
    Perm {
        bits: 1 << 5,
        label: "agent",
    },
    Perm {
        bits: 1 << 6,
        label: "user",
    },
    Perm {
        bits: 1 << 7,
        label: "config",
    },
    Perm {
        bits: 1 << 8,
        label: "dtmf",
    },
    Perm {
        bits: 1 << 9,
        label: "reporting",
    },
    Perm {
        bits: 1 << 10,
        label: "cdr",
    },
    Perm {
        bits: 1 << 11,
        label: "dialplan",
    },
    Perm {
        bits: 1 << 12,
        label: "originate",
    },
    Perm {
        bits: 1 << 13,
        label: "agi",
    },
    Perm {
        bits: 1 << 15,
        label: "cc",
    },
    Perm {
        bits: 1 << 16,
        label: "aoc",
    },
    Perm {
        bits: 1 << 17,
        label: "test",
    },
    Perm {
        bits: 1 << 18,
        label: "security",
    },
    Perm {
        bits: 1 << 30,
        label: "message",
    },
    Perm {
        bits: i32::MAX as u32,
        label: "all",
    },
];

impl ClassMask {
    /// No class at all (`none`, `off`, `no`).
    pub const NONE: ClassMask = ClassMask(0);
    /// Every class (`all`, `on`, `yes`): Asterisk's `INT_MAX`.
    pub const ALL: ClassMask = ClassMask(i32::MAX as u32);
    /// `system`: FullyBooted, Shutdown, Reload.
    pub const SYSTEM: ClassMask = ClassMask(1 << 0);
    /// `call`: channel, dial and bridge events, OriginateResponse, DeviceStateChange.
    pub const CALL: ClassMask = ClassMask(1 << 1);
    /// `log` (unused by Asterisk's events).
    pub const LOG: ClassMask = ClassMask(1 << 2);
    /// `verbose` (unused by Asterisk's events).
    pub const VERBOSE: ClassMask = ClassMask(1 << 3);
    /// `command`: permission to run the Command action.
    pub const COMMAND: ClassMask = ClassMask(1 << 4);
    /// `agent`: Queue* and Agent* events.
    pub const AGENT: ClassMask = ClassMask(1 << 5);
    /// `user`: UserEvent.
    pub const USER: ClassMask = ClassMask(1 << 6);
    /// `config`.
    pub const CONFIG: ClassMask = ClassMask(1 << 7);
    /// `dtmf`.
    pub const DTMF: ClassMask = ClassMask(1 << 8);
    /// `reporting`: status actions.
    pub const REPORTING: ClassMask = ClassMask(1 << 9);
    /// `cdr`: Cdr events.
    pub const CDR: ClassMask = ClassMask(1 << 10);
    /// `dialplan`: Newexten, VarSet.
    pub const DIALPLAN: ClassMask = ClassMask(1 << 11);
    /// `originate`: permission to run Originate.
    pub const ORIGINATE: ClassMask = ClassMask(1 << 12);
    /// `agi`.
    pub const AGI: ClassMask = ClassMask(1 << 13);
    /// `cc`.
    pub const CC: ClassMask = ClassMask(1 << 15);
    /// `aoc`.
    pub const AOC: ClassMask = ClassMask(1 << 16);
    /// `test`.
    pub const TEST: ClassMask = ClassMask(1 << 17);
    /// `security`: SuccessfulAuth, InvalidPassword, ...
    pub const SECURITY: ClassMask = ClassMask(1 << 18);
    /// `message`.
    pub const MESSAGE: ClassMask = ClassMask(1 << 30);

    /// Parses a mask the way Asterisk's `strings_to_mask` does: `None` for an empty string;
    /// all digits = a raw bitmask (`1` = system only); `off`/`no`/`false`... = none;
    /// `on`/`yes`/`true`... = all; otherwise a comma list of class names, read by
    /// [`parse_list`](Self::parse_list) (unknown names are ignored, so a typo yields none).
    pub fn parse(text: &str) -> Option<ClassMask> {
        if text.is_empty() {
            return None;
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            // atoi: saturate rather than overflow on absurd input.
            let v = text.parse::<u64>().unwrap_or(u64::from(u32::MAX));
            return Some(ClassMask(v.min(i32::MAX as u64) as u32));
        }
        if is_false(text) {
            return Some(ClassMask::NONE);
        }
        if is_true(text) {
            return Some(ClassMask::ALL);
        }
        Some(ClassMask::parse_list(text))
    }

    /// Parses a comma list of class names, as for the `read=`/`write=` settings and masks
    /// given by name: each item must be a class name exactly (lowercase, no spaces);
    /// unknown ones are ignored.
    ///
    /// This is what Asterisk's `get_perm` does with well-formed lists, but not with every
    /// list: it tests each class with `ast_instring`, which compares every item but the
    /// last only as a prefix of the class name (`strncmp(item, label, strlen(item))`), so in
    /// Asterisk `cal,user` also selects `call`, and an empty item (`,user`) selects every
    /// class. The simulator does not reproduce that quirk (the protocol reference,
    /// AMI-PROTOCOL.md, does not describe it): send whole names.
    pub fn parse_list(text: &str) -> ClassMask {
        let mut bits = 0u32;
        for item in text.split(',') {
            if let Some(p) = PERMS.iter().find(|p| p.label == item) {
                bits |= p.bits;
            }
        }
        ClassMask(bits)
    }

    /// True when every bit of `other` is in `self` (how Asterisk checks an event's class).
    pub fn contains(self, other: ClassMask) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when `self` and `other` share a bit (how Asterisk checks an action's authority).
    pub fn intersects(self, other: ClassMask) -> bool {
        self.0 & other.0 != 0
    }

    /// True for the empty mask.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The `Privilege:` text Asterisk prints for this class (`authority_to_str`):
    /// `call,all`, `system,reporting,all`, or `<none>`.
    pub fn privilege(self) -> String {
        let mut out = String::new();
        for p in PERMS.iter() {
            if self.0 & p.bits != 0 {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(p.label);
            }
        }
        if out.is_empty() {
            out.push_str("<none>");
        }
        out
    }
}

impl std::ops::BitOr for ClassMask {
    type Output = ClassMask;
    fn bitor(self, rhs: ClassMask) -> ClassMask {
        ClassMask(self.0 | rhs.0)
    }
}

impl fmt::Debug for ClassMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClassMask({:#x} {})", self.0, self.privilege())
    }
}

/// Asterisk's `ast_true`.
pub(crate) fn is_true(s: &str) -> bool {
    ["yes", "true", "y", "t", "1", "on"]
        .iter()
        .any(|w| s.eq_ignore_ascii_case(w))
}

/// Asterisk's `ast_false`.
pub(crate) fn is_false(s: &str) -> bool {
    ["no", "false", "n", "f", "0", "off"]
        .iter()
        .any(|w| s.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::ClassMask;

    #[test]
    fn parse_like_asterisk() {
        assert_eq!(ClassMask::parse(""), None);
        assert_eq!(ClassMask::parse("1"), Some(ClassMask::SYSTEM));
        assert_eq!(ClassMask::parse("on"), Some(ClassMask::ALL));
        assert_eq!(ClassMask::parse("Off"), Some(ClassMask::NONE));
        assert_eq!(ClassMask::parse("user"), Some(ClassMask::USER));
        assert_eq!(
            ClassMask::parse("call,user"),
            Some(ClassMask::CALL | ClassMask::USER)
        );
        assert_eq!(ClassMask::parse("nonsense"), Some(ClassMask::NONE));
        assert_eq!(ClassMask::parse("Call"), Some(ClassMask::NONE));
        assert_eq!(ClassMask::parse("all"), Some(ClassMask::ALL));
    }

    #[test]
    fn mask_items_are_whole_class_names_even_before_the_last() {
        // Asterisk would also select `call` for `cal,` and every class for `,user`.
        assert_eq!(ClassMask::parse("cal,user"), Some(ClassMask::USER));
        assert_eq!(ClassMask::parse(",user"), Some(ClassMask::USER));
        assert_eq!(ClassMask::parse("user,cal"), Some(ClassMask::USER));
    }

    #[test]
    fn privilege_text() {
        assert_eq!(ClassMask::CALL.privilege(), "call,all");
        assert_eq!(
            (ClassMask::SYSTEM | ClassMask::REPORTING).privilege(),
            "system,reporting,all"
        );
        assert_eq!(ClassMask::NONE.privilege(), "<none>");
        assert!(ClassMask::ALL.contains(ClassMask::SECURITY));
        assert!(!ClassMask::CALL.contains(ClassMask::CALL | ClassMask::USER));
    }
}
