//! What `ami listen --event NAME...` asks the server for, so that a busy server sends only
//! those events instead of every event for the client to throw away (a dialer's server
//! streams thousands a second; `--event Hangup` wants a few dozen of them):
//!
//! - the **event mask** of the named events' read classes (from the catalog, `ami-types`),
//!   plus `system` for the server's own news (FullyBooted, Shutdown): Asterisk does not even
//!   build an event for a session whose mask lacks its class;
//! - one **filter** per name (`^Event: Hangup[[:space:]]`, a POSIX extended regular
//!   expression over the event text, anchored at its start so that `Hangup` does not also
//!   match `HangupRequest`), sent at every login as a prefilter
//!   ([`ami_proto::ClientConfigBuilder::prefilter`]): the session does not wait for it, so no
//!   event is lost to the moment before the server applies it.
//!
//! Neither replaces the command's own filtering: Asterisk refuses the Filter action to a
//! user without `write=system` (the session then goes on unfiltered, said in a warn record),
//! and a name the catalog does not know keeps the mask at `on`. The events printed are the
//! same either way; only the traffic changes.

use ami_types::spec::{self, MessageSpec};

/// The mask and filters for a set of event names (empty: everything, as before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// The `Events:` mask sent with the Login.
    pub(crate) mask: String,
    /// Prefilters sent at every login.
    pub(crate) filters: Vec<String>,
}

impl From<&str> for Subscription {
    /// Every event of the classes in `mask` (`on`, `off`, `call,user`...), no filter.
    fn from(mask: &str) -> Subscription {
        Subscription {
            mask: mask.to_string(),
            filters: Vec::new(),
        }
    }
}

/// The catalog's event named `name` (ASCII case-insensitive).
fn known(name: &str) -> Option<&'static MessageSpec> {
    spec::events()
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(name))
}

/// The filter that lets the event `name` through and no other: its name as Asterisk
/// spells it when the catalog knows it, else each letter in both cases. `None` for a name
/// that is not a plain word (nothing to anchor a pattern on safely).
fn filter_for(name: &str) -> Option<String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return None;
    }
    let spelled = match known(name) {
        Some(e) => e.name.to_string(),
        None => name
            .chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                } else {
                    c.to_string()
                }
            })
            .collect(),
    };
    Some(format!("^Event: {spelled}[[:space:]]"))
}

/// The mask that lets every named event through: the union of their classes and
/// `system`, or `on` when a name is unknown or is not broadcast (list items have no class
/// of their own, `command` items answer an action).
fn mask_for(names: &[String]) -> String {
    let mut classes = vec!["system"];
    for name in names {
        let Some(e) = known(name) else {
            return "on".to_string();
        };
        if e.class.is_empty() || e.class.contains(&"command") {
            return "on".to_string();
        }
        for c in e.class {
            if !classes.contains(c) {
                classes.push(c);
            }
        }
    }
    classes.join(",")
}

/// The subscription for `--event` names.
pub(crate) fn for_events(names: &[String]) -> Subscription {
    if names.is_empty() {
        return Subscription {
            mask: "on".to_string(),
            filters: Vec::new(),
        };
    }
    // Include filters pass an event that matches any one of them: a name without a filter
    // would be kept out by the others, so it is all names or none.
    let filters = names
        .iter()
        .map(|n| filter_for(n))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    Subscription {
        mask: mask_for(names),
        filters,
    }
}

/// The names the catalog does not know, each with the nearest known name when one is close
/// (a typo: `Hangupp`, `newchanel`), for a warning: a name nobody sends is listened for in
/// vain.
pub(crate) fn unknown_names(names: &[String]) -> Vec<(String, Option<&'static str>)> {
    names
        .iter()
        .filter(|n| known(n).is_none())
        .map(|n| (n.clone(), nearest(n)))
        .collect()
}

/// The known event name within two edits of `name` (ignoring case), the closest first.
fn nearest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    spec::events()
        .iter()
        .map(|e| (distance(&lower, &e.name.to_ascii_lowercase()), e.name))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance of two short ASCII words.
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn known_events_get_their_classes_and_one_anchored_filter_each() {
        let s = for_events(&names(&["hangup", "UserEvent", "QueueCallerJoin"]));
        assert_eq!(s.mask, "system,call,user,agent");
        assert_eq!(
            s.filters,
            [
                "^Event: Hangup[[:space:]]",
                "^Event: UserEvent[[:space:]]",
                "^Event: QueueCallerJoin[[:space:]]"
            ]
        );
        assert_eq!(for_events(&[]).mask, "on");
        assert!(for_events(&[]).filters.is_empty());
    }

    #[test]
    fn an_unknown_name_keeps_the_mask_open_and_is_matched_in_any_case() {
        let s = for_events(&names(&["Hangup", "MyModuleEvent"]));
        assert_eq!(s.mask, "on");
        assert_eq!(
            s.filters[1],
            "^Event: [Mm][Yy][Mm][Oo][Dd][Uu][Ll][Ee][Ee][Vv][Ee][Nn][Tt][[:space:]]"
        );
        // A list item answers an action: no class to ask for.
        assert_eq!(for_events(&names(&["PeerEntry"])).mask, "on");
    }

    #[test]
    fn a_name_that_is_not_a_word_installs_no_filter_at_all() {
        let s = for_events(&names(&["Hangup", "Bad.*Name"]));
        assert!(s.filters.is_empty(), "{:?}", s.filters);
        assert!(for_events(&names(&[""])).filters.is_empty());
    }

    #[test]
    fn a_typo_is_named_with_the_event_it_probably_meant() {
        assert_eq!(
            unknown_names(&names(&["Hangupp", "newchanel", "Hangup", "Zzzzzzzz"])),
            [
                ("Hangupp".to_string(), Some("Hangup")),
                ("newchanel".to_string(), Some("Newchannel")),
                ("Zzzzzzzz".to_string(), None),
            ]
        );
    }
}
