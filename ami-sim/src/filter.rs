//! Per-session event filters (the Filter action).
//!
//! Asterisk compiles filters as POSIX extended regular expressions (`regcomp` with
//! `REG_EXTENDED | REG_NOSUB`, no `REG_NEWLINE`) and runs `regexec` over the whole event
//! text. The simulator compiles them with the `regex` crate set up to match the same way:
//! `.` matches the CR and LF between headers too (`UserEvent: Foo.*X: 1` spans two lines),
//! `^` and `$` are the ends of the whole text, and a match is found anywhere unless
//! anchored. What filters commonly use (`^Event: Hangup[[:space:]]`, `a|b`, `.*`, bracket
//! classes) means the same in both. The syntaxes are not the same, though: the simulator
//! also accepts Perl syntax that Asterisk's (glibc's) `regcomp` reads differently or
//! refuses, such as `\d` (a digit here, a plain `d` there) and `(?i)` or any other `(?...)`
//! group (refused there); it refuses back-references (`\1`), which glibc accepts; a
//! backslash inside brackets escapes here but is literal in POSIX; and a pattern that is
//! not UTF-8 is refused here, while `.` matches no byte that is not part of UTF-8 text.
//! A pattern that does not compile is refused with Asterisk's "did not compile" error.
//!
//! A leading `!` on the `Filter` pattern makes the filter exclude, legacy or advanced
//! (for an advanced filter `action(...)` overrides it). Legacy filters (no `MatchCriteria`)
//! match the whole event text. Advanced filters (`MatchCriteria`) are parsed as
//! `manager_add_filter` does: the criteria are split on spaces, commas and `)`, and each
//! token must begin `action(`, `name(`, `header(` or `method(` (compared case-sensitively,
//! by prefix), with the values `include|exclude` for `action` and
//! `regex|exact|starts_with|ends_with|contains|none` for `method`, spelt exactly so;
//! anything else is "formatted incorrectly". Without `method(...)` the method is `none`,
//! which takes no pattern and needs a `name()` or `header()`; every other method needs a
//! pattern. `name()` is compared with the event name case-sensitively. `header(Key)`
//! tests every line that begins `Key:` (case-sensitive), the value with its leading
//! blanks skipped, and matches if any such line with a non-empty value matches.

use regex::bytes::{Regex, RegexBuilder};

/// The size limits a pattern is compiled under, smallest first: each is tried in turn and a
/// filter is charged the first it fits (a failed try stops once the limit is passed, so it
/// costs no more than the limit). Plain text and bracket classes fit the first; a Unicode
/// class such as `\w` (some 18 KiB by itself) a later one; a pattern over the last is
/// refused, as `regcomp` refuses one it has no memory for (`REG_ESPACE`).
const REGEX_SIZE_TIERS: [usize; 3] = [8 << 10, 64 << 10, 256 << 10];

/// The compiled size all of a session's filters may be charged together: every one of
/// [`Filters::MAX`] plain filters, or 32 of the largest. A compiled filter takes a few
/// times its charge at most (forward and reverse automata, and lazy-DFA caches of twice
/// the charge each), so a session's filters stay within some tens of MiB.
const REGEX_SESSION_BUDGET: usize = Filters::MAX * REGEX_SIZE_TIERS[0];

/// How a filter compares its pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// A POSIX extended regular expression, found anywhere unless anchored.
    Regex,
    Substring,
    Exact,
    StartsWith,
    EndsWith,
    None,
}

/// One filter.
#[derive(Debug, Clone)]
struct Filter {
    exclude: bool,
    event: Option<String>,
    header: Option<String>,
    method: Method,
    pattern: Vec<u8>,
    /// The compiled pattern, for [`Method::Regex`].
    regex: Option<Regex>,
    /// The compiled size charged to the session for `regex` (0 without one).
    cost: usize,
}

/// Why a filter was refused (mapped to Asterisk's error texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterError {
    /// "Filter was formatted incorrectly."
    Format,
    /// "Filter did not compile."
    Compile,
}

/// Compiles a pattern under the smallest size tier it fits, no larger than `room` (what is
/// left of the session's budget): the regex and the size it is charged.
fn compile(pattern: &[u8], room: usize) -> Result<(Regex, usize), FilterError> {
    let text = std::str::from_utf8(pattern).map_err(|_| FilterError::Compile)?;
    let mut builder = RegexBuilder::new(text);
    // regexec without REG_NEWLINE: a newline is an ordinary character.
    builder.dot_matches_new_line(true);
    for limit in REGEX_SIZE_TIERS.into_iter().filter(|&l| l <= room) {
        // The lazy DFA needs a few times the automaton's size to be of use; its cache is
        // otherwise the default 2 MiB per direction, whatever the pattern.
        builder.size_limit(limit).dfa_size_limit(2 * limit);
        match builder.build() {
            Ok(regex) => return Ok((regex, limit)),
            Err(regex::Error::CompiledTooBig(_)) => continue,
            Err(_) => return Err(FilterError::Compile),
        }
    }
    Err(FilterError::Compile)
}

/// A session's include and exclude filters. Bounded by [`Filters::MAX`], and their compiled
/// patterns by [`REGEX_SESSION_BUDGET`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Filters {
    list: Vec<Filter>,
    /// The compiled size charged to the filters held (see [`compile`]).
    charged: usize,
}

impl Filters {
    /// Most filters one session may hold (a simulator guard).
    pub(crate) const MAX: usize = 1024;

    /// Adds a filter from the `Filter` and `MatchCriteria` headers (an empty
    /// `MatchCriteria` is no `MatchCriteria`, as in Asterisk).
    pub(crate) fn add(
        &mut self,
        filter: Option<&str>,
        criteria: Option<&str>,
    ) -> Result<(), FilterError> {
        if self.list.len() >= Self::MAX {
            return Err(FilterError::Format);
        }
        // An absent Filter header is "" (astman_get_header); a leading '!' excludes,
        // legacy or advanced.
        let text = filter.unwrap_or("");
        let (exclude, pattern) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let room = REGEX_SESSION_BUDGET - self.charged;
        let f = match criteria.filter(|c| !c.is_empty()) {
            None => {
                if pattern.is_empty() {
                    return Err(FilterError::Format);
                }
                let (regex, cost) = compile(pattern.as_bytes(), room)?;
                Filter {
                    exclude,
                    event: None,
                    header: None,
                    method: Method::Regex,
                    pattern: pattern.as_bytes().to_vec(),
                    regex: Some(regex),
                    cost,
                }
            }
            Some(c) => parse_criteria(c, exclude, pattern, room)?,
        };
        self.charged += f.cost;
        self.list.push(f);
        Ok(())
    }

    /// How many filters the session holds.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the session has no filter (every event passes).
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether an event (its full wire text) passes the filters.
    pub(crate) fn pass(&self, name: &str, text: &[u8]) -> bool {
        if self.list.is_empty() {
            return true;
        }
        let mut has_include = false;
        let mut included = false;
        for f in &self.list {
            let hit = f.matches(name, text);
            if f.exclude {
                if hit {
                    return false;
                }
            } else {
                has_include = true;
                included |= hit;
            }
        }
        !has_include || included
    }
}

/// A byte Asterisk's `ast_strip` and `ast_skip_blanks` skip: anything below 33.
fn is_blank(c: char) -> bool {
    u32::from(c) < 33
}

/// The value of one option token (`name(Foo`): what follows its first `(`, stripped, or
/// None when it has no `(` or nothing after it. (Asterisk refuses an `action` token
/// without `(` and dereferences a null pointer for the others; both are refused here.)
fn option_value(token: &str) -> Option<&str> {
    let open = token.find('(')?;
    Some(token[open + 1..].trim_matches(is_blank)).filter(|v| !v.is_empty())
}

/// Parses `MatchCriteria` as `manager_add_filter` does (see the module doc).
fn parse_criteria(
    criteria: &str,
    exclude: bool,
    pattern: &str,
    room: usize,
) -> Result<Filter, FilterError> {
    let mut f = Filter {
        exclude,
        event: None,
        header: None,
        method: Method::None,
        pattern: pattern.as_bytes().to_vec(),
        regex: None,
        cost: 0,
    };
    let mut found = false;
    let tokens = criteria
        .trim_start_matches(is_blank)
        .split([' ', ',', ')'])
        .filter(|t| !t.is_empty());
    for token in tokens {
        let value = option_value(token).ok_or(FilterError::Format)?;
        if token.starts_with("action") {
            f.exclude = match value {
                "include" => false,
                "exclude" => true,
                _ => return Err(FilterError::Format),
            };
        } else if token.starts_with("name") {
            f.event = Some(value.to_string());
        } else if token.starts_with("header") {
            let mut name = value.to_string();
            if !name.ends_with(':') {
                name.push(':');
            }
            f.header = Some(name);
        } else if token.starts_with("method") {
            f.method = match value {
                "regex" => Method::Regex,
                "exact" => Method::Exact,
                "starts_with" => Method::StartsWith,
                "ends_with" => Method::EndsWith,
                "contains" => Method::Substring,
                "none" => Method::None,
                _ => return Err(FilterError::Format),
            };
        } else {
            return Err(FilterError::Format);
        }
        found = true;
    }
    if !found {
        return Err(FilterError::Format);
    }
    // Only `none` goes without a pattern, and `none` takes none.
    if pattern.is_empty() != (f.method == Method::None) {
        return Err(FilterError::Format);
    }
    if f.method == Method::None && f.event.is_none() && f.header.is_none() {
        return Err(FilterError::Format);
    }
    if f.method == Method::Regex {
        let (regex, cost) = compile(&f.pattern, room)?;
        f.regex = Some(regex);
        f.cost = cost;
    }
    Ok(f)
}

/// Every value of the header `prefix` (`Key:`, compared case-sensitively) in an event's
/// wire text, its leading blanks skipped, except the empty ones (as `filter_cmp_fn`).
fn header_values<'a>(text: &'a [u8], prefix: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    text.split(|&b| b == b'\n').filter_map(move |line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let rest = line.strip_prefix(prefix.as_bytes())?;
        let start = rest.iter().position(|&b| b >= 33).unwrap_or(rest.len());
        Some(&rest[start..]).filter(|v| !v.is_empty())
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

impl Filter {
    fn matches(&self, name: &str, text: &[u8]) -> bool {
        if let Some(ev) = &self.event {
            if ev != name {
                return false;
            }
        }
        match &self.header {
            Some(h) => header_values(text, h).any(|v| self.compare(v)),
            None => self.compare(text),
        }
    }

    /// `match_eventdata`: the pattern against one subject.
    fn compare(&self, subject: &[u8]) -> bool {
        match self.method {
            Method::None => true,
            Method::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(subject)),
            Method::Substring => contains(subject, &self.pattern),
            Method::Exact => subject == &self.pattern[..],
            Method::StartsWith => subject.starts_with(&self.pattern),
            Method::EndsWith => subject.ends_with(&self.pattern),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEWCHANNEL: &[u8] =
        b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: Local/1@x;1\r\n\r\n";
    const HANGUP: &[u8] = b"Event: Hangup\r\nPrivilege: call,all\r\nChannel: SIP/9\r\n\r\n";

    #[test]
    fn legacy_include_and_exclude() {
        let mut f = Filters::default();
        assert!(f.pass("Hangup", HANGUP));
        f.add(Some("Event: Newchannel"), None).unwrap();
        assert!(f.pass("Newchannel", NEWCHANNEL));
        assert!(!f.pass("Hangup", HANGUP));
        f.add(Some("!Local/"), None).unwrap();
        assert!(!f.pass("Newchannel", NEWCHANNEL));
        assert_eq!(f.add(Some("!"), None), Err(FilterError::Format));
        assert_eq!(f.add(None, None), Err(FilterError::Format));
    }

    #[test]
    fn legacy_filters_are_posix_extended_regular_expressions() {
        let request = b"Event: HangupRequest\r\nPrivilege: call,all\r\n\r\n";
        let mut f = Filters::default();
        // What `ami listen --event Hangup` installs: Hangup, not HangupRequest.
        f.add(Some("^Event: Hangup[[:space:]]"), None).unwrap();
        assert!(f.pass("Hangup", HANGUP));
        assert!(!f.pass("HangupRequest", request));
        assert!(!f.pass("Newchannel", NEWCHANNEL));
        let mut g = Filters::default();
        g.add(Some("Channel: (SIP|Local)/"), None).unwrap();
        g.add(Some("!Local/1@x"), None).unwrap();
        assert!(g.pass("Hangup", HANGUP));
        assert!(!g.pass("Newchannel", NEWCHANNEL));
        assert_eq!(
            g.add(Some("Event: (Hangup"), None),
            Err(FilterError::Compile)
        );
        let mut h = Filters::default();
        h.add(Some("^SIP/[0-9]+$"), Some("header(Channel),method(regex)"))
            .unwrap();
        assert!(h.pass("Hangup", HANGUP));
        assert!(!h.pass("Newchannel", NEWCHANNEL));
    }

    #[test]
    fn a_dot_matches_the_line_breaks_between_headers_as_in_posix_regexec() {
        let user = b"Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Foo\r\nX: 1\r\n\r\n";
        let mut f = Filters::default();
        f.add(Some("UserEvent: Foo.*X: 1"), None).unwrap();
        assert!(f.pass("UserEvent", user));
        let mut g = Filters::default();
        g.add(Some("Event: UserEvent.Privilege"), None).unwrap();
        assert!(
            !g.pass("UserEvent", user),
            "one dot is one byte: CR, not CRLF"
        );
        g.add(Some("Event: UserEvent..Privilege"), None).unwrap();
        assert!(g.pass("UserEvent", user));
        // Without REG_NEWLINE, ^ and $ are the ends of the whole text, not of lines.
        let mut h = Filters::default();
        h.add(Some("^UserEvent: Foo"), None).unwrap();
        assert!(!h.pass("UserEvent", user));
    }

    #[test]
    fn advanced_criteria() {
        let mut f = Filters::default();
        f.add(
            Some("SIP/"),
            Some("action(exclude),header(Channel),method(starts_with)"),
        )
        .unwrap();
        assert!(!f.pass("Hangup", HANGUP));
        assert!(f.pass("Newchannel", NEWCHANNEL));
        let mut g = Filters::default();
        g.add(None, Some("name(Hangup),method(none)")).unwrap();
        assert!(g.pass("Hangup", HANGUP));
        assert!(!g.pass("Newchannel", NEWCHANNEL));
    }

    /// manager.c's own `parsing_filter_tests` table (22.9.0), each filter alone: whether it
    /// is added, and whether its test event is then sent. The criteria there are
    /// `eventfilter(<MatchCriteria>)`; `eventfilter` alone is a legacy filter.
    #[test]
    fn asterisks_parsing_filter_tests() {
        const NEWCHANNEL: (&str, &[u8]) = (
            "Newchannel",
            b"Event: Newchannel\r\nChannel: XXX\r\nSomeheader: YYY\r\n",
        );
        const VARSET: (&str, &[u8]) = (
            "VarSet",
            b"Event: VarSet\r\nChannel: ABC\r\nSomeheader: XXX\r\n",
        );
        let valid = [
            (None, "XXX", NEWCHANNEL, true),
            (None, "!XXX", VARSET, false),
            (Some("name(VarSet),method(none)"), "", VARSET, true),
            (
                Some("name(Newchannel),method(regex)"),
                "X[XYZ]X",
                NEWCHANNEL,
                true,
            ),
            (
                Some("name(Newchannel),method(regex)"),
                "X[abc]X",
                NEWCHANNEL,
                false,
            ),
            (
                Some("action(exclude),name(Newchannel),method(regex)"),
                "X[XYZ]X",
                NEWCHANNEL,
                false,
            ),
            (
                Some("action(exclude),name(Newchannel),method(regex)"),
                "X[abc]X",
                NEWCHANNEL,
                true,
            ),
            (
                Some("action(include),name(VarSet),header(Channel),method(starts_with)"),
                "AB",
                VARSET,
                true,
            ),
            (
                Some("action(include),name(VarSet),header(Channel),method(ends_with)"),
                "BC",
                VARSET,
                true,
            ),
            (
                Some("action(include),name(VarSet),header(Channel),method(exact)"),
                "ABC",
                VARSET,
                true,
            ),
            (
                Some("action(include),name(VarSet),header(Channel),method(exact)"),
                "XXX",
                VARSET,
                false,
            ),
            (
                Some("name(VarSet),header(Channel),method(exact)"),
                "!ZZZ",
                VARSET,
                true,
            ),
            (
                Some("action(exclude),name(VarSet),header(Channel),method(exact)"),
                "ZZZ",
                VARSET,
                true,
            ),
            (
                Some("action(include),name(VarSet),header(Someheader),method(exact)"),
                "!XXX",
                VARSET,
                true,
            ),
        ];
        for (criteria, filter, (name, text), sent) in valid {
            let mut f = Filters::default();
            assert_eq!(
                f.add(Some(filter), criteria),
                Ok(()),
                "{criteria:?} {filter:?}"
            );
            assert_eq!(f.pass(name, text), sent, "{criteria:?} {filter:?}");
        }
        let invalid = [
            (Some("action(include)"), "", FilterError::Format),
            (Some("action(inlude)"), "", FilterError::Format),
            (Some("nnnn(yyy)"), "XXX", FilterError::Format),
            (Some("eader(VarSet)"), "XXX", FilterError::Format),
            (Some("ethod(contains)"), "XXX", FilterError::Format),
            (
                Some("nnnn(yyy),header(VarSet),method(contains)"),
                "XXX",
                FilterError::Format,
            ),
            (
                Some("name(yyy),heder(VarSet),method(contains)"),
                "XXX",
                FilterError::Format,
            ),
            (
                Some("name(yyy),header(VarSet),mehod(contains)"),
                "XXX",
                FilterError::Format,
            ),
            (
                Some("name(yyy),header(VarSet),method(coains)"),
                "XXX",
                FilterError::Format,
            ),
            (Some("method(yyy)"), "XXX", FilterError::Format),
            (None, "", FilterError::Format),
            (None, "!", FilterError::Format),
            (Some(")"), "XXX", FilterError::Format),
            (None, "XX[X", FilterError::Compile),
            (Some("method(regex)"), "XX[X", FilterError::Compile),
        ];
        for (criteria, filter, err) in invalid {
            let mut f = Filters::default();
            assert_eq!(
                f.add(Some(filter), criteria),
                Err(err),
                "{criteria:?} {filter:?}"
            );
        }
    }

    #[test]
    fn compiled_filters_are_bounded_per_filter_and_per_session() {
        let mut f = Filters::default();
        // `\w` is every Unicode word character: twenty of them compile to over 1 MiB.
        assert_eq!(f.add(Some(r"\w{20}"), None), Err(FilterError::Compile));
        assert_eq!(
            f.add(Some(r"\w{20}"), Some("method(regex) header(Channel)")),
            Err(FilterError::Compile)
        );
        // Four of them compile to some 70 KiB each: the session holds a bounded number.
        let mut held = 0;
        while f.add(Some(r"\w{4}"), None).is_ok() {
            held += 1;
            assert!(held <= 64, "a session held {held} large filters");
        }
        assert_eq!(f.add(Some(r"\w{4}"), None), Err(FilterError::Compile));
        assert!(held >= 16, "only {held} large filters fit");
        // Filters that need no special memory are charged the least, up to the count cap.
        let mut small = Filters::default();
        for i in 0..Filters::MAX {
            small
                .add(Some(&format!("^Event: Hangup{i}\r\n")), None)
                .unwrap();
        }
    }
}
