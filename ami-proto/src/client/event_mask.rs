//! The event mask (`Events:` in the Login, `EventMask:` in the Events action) as Asterisk's
//! `strings_to_mask` reads it: all digits, a bitmask (`1` is `system` only); an `ast_false`
//! word (`off`, `no`...), nothing; an `ast_true` word (`on`, `yes`...), everything;
//! otherwise a comma-separated list of class names, matched case-sensitively, in which a
//! name Asterisk does not know is ignored without a word. A typo (`calls`, `Call`) would
//! silently ask for nothing, so the client refuses one.

use crate::wire::action::{ast_true, header_value};

/// The class names Asterisk 22 knows (`perms[]` in `manager.c`), `all` and `none` included.
const CLASSES: [&str; 21] = [
    "system",
    "call",
    "log",
    "verbose",
    "command",
    "agent",
    "user",
    "config",
    "dtmf",
    "reporting",
    "cdr",
    "dialplan",
    "originate",
    "agi",
    "cc",
    "aoc",
    "test",
    "security",
    "message",
    "all",
    "none",
];

/// The `call` class's bit.
const CALL: u64 = 1 << 1;

fn is_bitmask(mask: &str) -> bool {
    !mask.is_empty() && mask.bytes().all(|b| b.is_ascii_digit())
}

fn is_word(mask: &str, words: &[&str]) -> bool {
    words.iter().any(|w| mask.eq_ignore_ascii_case(w))
}

/// The words Asterisk's `ast_false` reads as false (its true words: `ast_true`).
const FALSE: [&str; 6] = ["no", "false", "n", "f", "0", "off"];

/// The first class name in `mask` that Asterisk would ignore, if any. The mask is read as
/// Asterisk reads the header (leading blanks skipped, trailing ones kept: `call ` names
/// no class, and would turn every event off).
pub(crate) fn unknown_class(mask: &str) -> Option<&str> {
    let m = header_value(mask);
    if is_bitmask(m) || is_word(m, &FALSE) || ast_true(m) {
        return None;
    }
    m.split(',').find(|c| !c.is_empty() && !CLASSES.contains(c))
}

/// Whether `mask` lets `call` events through, as Asterisk's `get_perm` reads a class list
/// (`ast_instring`): the last name must be a class exactly, and every other one matches
/// each class it is the start of, so an empty name in the middle (`system,,user`) matches
/// every class. A bitmask too long to read is given the benefit of the doubt.
pub(crate) fn admits_call(mask: &str) -> bool {
    let m = header_value(mask);
    if is_bitmask(m) {
        return m.parse::<u64>().map_or(true, |bits| bits & CALL != 0);
    }
    if is_word(m, &FALSE) {
        return false;
    }
    if ast_true(m) {
        return true;
    }
    let names: Vec<&str> = m.split(',').collect();
    let last = names.len().saturating_sub(1);
    names.iter().enumerate().any(|(i, name)| {
        ["call", "all"].iter().any(|class| {
            if i == last {
                name == class
            } else {
                class.starts_with(name)
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_class_is_read_from_a_mask_as_asterisk_reads_it() {
        for yes in [
            "on",
            "YES",
            "true",
            "all",
            "call",
            "system,call",
            "user,all",
            "2",
            "3",
        ] {
            assert!(admits_call(yes), "{yes}");
        }
        // `1` is a bitmask (system only), not `true`; class names are case-sensitive.
        for no in ["off", "no", "0", "1", "system", "user,agent", "Call", "4"] {
            assert!(!admits_call(no), "{no}");
        }
        // Blanks: leading ones skipped, trailing ones part of the last name.
        assert!(admits_call(" call"));
        assert!(
            !admits_call("call "),
            "`call ` is no class: Asterisk turns events off"
        );
        assert!(!admits_call("on "), "`on ` is no true word and no class");
        // ast_instring: an empty name before the last matches every class; a name before
        // the last matches the classes it starts.
        assert!(admits_call("system,,user"));
        assert!(admits_call("ca,user"));
        assert!(admits_call("call,"));
        assert!(!admits_call("user,ca"));
        assert!(
            admits_call("99999999999999999999999"),
            "unreadable: allowed"
        );
    }

    #[test]
    fn a_class_name_asterisk_would_ignore_is_found() {
        for fine in [
            "on",
            "off",
            "7",
            "call",
            "system,call,dialplan",
            "all",
            "none",
            "call,",
        ] {
            assert_eq!(unknown_class(fine), None, "{fine}");
        }
        assert_eq!(unknown_class("calls"), Some("calls"));
        assert_eq!(unknown_class("system,Call"), Some("Call"));
        assert_eq!(unknown_class("agent,queue"), Some("queue"));
        assert_eq!(unknown_class("call "), Some("call "));
        assert_eq!(unknown_class(" call"), None);
    }
}
