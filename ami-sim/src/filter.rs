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
//! A pattern that does not compile is refused with Asterisk's "did not compile" error. Legacy
//! filters match the whole event text, with a leading `!` making the filter exclude. Advanced
//! filters (`MatchCriteria`) support `action(include|exclude)`, `name(Event)`, `header(Key)`
//! and the methods `exact`, `starts_with`/`startsWith`, `ends_with`/`endsWith`, `contains`,
//! `regex` and `none`, given bare or as `method(...)`.

use regex::bytes::{Regex, RegexBuilder};

/// Most memory one compiled filter may take: far more than any pattern that fits a
/// 1024-byte line needs, far less than a client could make the simulator spend otherwise.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

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
}

/// Why a filter was refused (mapped to Asterisk's error texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterError {
    /// "Filter was formatted incorrectly."
    Format,
    /// "Filter did not compile."
    Compile,
}

fn compile(pattern: &[u8]) -> Result<Regex, FilterError> {
    let text = std::str::from_utf8(pattern).map_err(|_| FilterError::Compile)?;
    RegexBuilder::new(text)
        // regexec without REG_NEWLINE: a newline is an ordinary character.
        .dot_matches_new_line(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|_| FilterError::Compile)
}

/// A session's include and exclude filters. Bounded by [`Filters::MAX`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Filters {
    list: Vec<Filter>,
}

impl Filters {
    /// Most filters one session may hold (a simulator guard).
    pub(crate) const MAX: usize = 1024;

    /// Adds a filter from the `Filter` and `MatchCriteria` headers.
    pub(crate) fn add(
        &mut self,
        filter: Option<&str>,
        criteria: Option<&str>,
    ) -> Result<(), FilterError> {
        if self.list.len() >= Self::MAX {
            return Err(FilterError::Format);
        }
        let f = match criteria {
            None => {
                let text = filter.ok_or(FilterError::Format)?;
                let (exclude, pattern) = match text.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, text),
                };
                if pattern.is_empty() {
                    return Err(FilterError::Format);
                }
                Filter {
                    exclude,
                    event: None,
                    header: None,
                    method: Method::Regex,
                    pattern: pattern.as_bytes().to_vec(),
                    regex: Some(compile(pattern.as_bytes())?),
                }
            }
            Some(c) => parse_criteria(c, filter.unwrap_or(""))?,
        };
        self.list.push(f);
        Ok(())
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

fn parse_criteria(criteria: &str, pattern: &str) -> Result<Filter, FilterError> {
    let mut f = Filter {
        exclude: false,
        event: None,
        header: None,
        method: Method::Regex,
        pattern: pattern.as_bytes().to_vec(),
        regex: None,
    };
    for token in criteria.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (key, arg) = match token.find('(') {
            Some(open) if token.ends_with(')') => {
                (&token[..open], &token[open + 1..token.len() - 1])
            }
            _ => ("method", token),
        };
        match key.to_ascii_lowercase().as_str() {
            "action" => match arg.to_ascii_lowercase().as_str() {
                "include" => f.exclude = false,
                "exclude" => f.exclude = true,
                _ => return Err(FilterError::Format),
            },
            "name" => f.event = Some(arg.to_string()),
            "header" => f.header = Some(arg.to_string()),
            "method" => {
                f.method = match arg.to_ascii_lowercase().replace('_', "").as_str() {
                    "regex" => Method::Regex,
                    "contains" => Method::Substring,
                    "exact" => Method::Exact,
                    "startswith" => Method::StartsWith,
                    "endswith" => Method::EndsWith,
                    "none" => Method::None,
                    _ => return Err(FilterError::Format),
                }
            }
            _ => return Err(FilterError::Format),
        }
    }
    if f.method != Method::None && f.pattern.is_empty() {
        return Err(FilterError::Format);
    }
    if f.method == Method::Regex {
        f.regex = Some(compile(&f.pattern)?);
    }
    Ok(f)
}

/// The first value of `key` in an event's wire text.
fn header_value<'a>(text: &'a [u8], key: &str) -> Option<&'a [u8]> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        if line[..colon].eq_ignore_ascii_case(key.as_bytes()) {
            let v = &line[colon + 1..];
            Some(v.strip_prefix(b" ").unwrap_or(v))
        } else {
            None
        }
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

impl Filter {
    fn matches(&self, name: &str, text: &[u8]) -> bool {
        if let Some(ev) = &self.event {
            if !ev.eq_ignore_ascii_case(name) {
                return false;
            }
        }
        let subject = match &self.header {
            Some(h) => match header_value(text, h) {
                Some(v) => v,
                None => return false,
            },
            None => text,
        };
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
            Some("action(exclude),header(Channel),starts_with"),
        )
        .unwrap();
        assert!(!f.pass("Hangup", HANGUP));
        assert!(f.pass("Newchannel", NEWCHANNEL));
        let mut g = Filters::default();
        g.add(None, Some("name(Hangup),method(none)")).unwrap();
        assert!(g.pass("Hangup", HANGUP));
        assert!(!g.pass("Newchannel", NEWCHANNEL));
    }
}
