//! Asterisk's C escaping of some event values, undone.
//!
//! Since Asterisk 13.5 the channel block of every event writes `CallerIDName` and
//! `ConnectedLineName` (and `ChanVariable` values, and VarSet's `Value`) through
//! `ast_escape_c`: `\a \b \f \n \r \t \v \\ \' \" \?` stand for the byte each names. So a
//! caller named `O'Brien` arrives as `O\'Brien`, and a screen that shows the wire text
//! shows the backslash. Other fields (Getvar's `Value`, a queue entry's caller name) are
//! sent as they are and must not be unescaped.

use std::borrow::Cow;

/// `text` with `ast_escape_c`'s escapes replaced by what they stand for. A backslash before
/// any other character, or at the end, is kept as it is (Asterisk never writes one, and
/// guessing would change text it did not escape). Borrows when there is nothing to undo.
///
/// ```
/// assert_eq!(ami_proto::unescape_c(r#"O\'Brien \"Bob\"\?"#), r#"O'Brien "Bob"?"#);
/// assert_eq!(ami_proto::unescape_c(r"line 1\nline 2"), "line 1\nline 2");
/// assert_eq!(ami_proto::unescape_c(r"C:\x"), r"C:\x");
/// ```
pub fn unescape_c(text: &str) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let rest = chars.clone().next();
        let plain = match rest {
            Some('a') => '\x07',
            Some('b') => '\x08',
            Some('f') => '\x0c',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('v') => '\x0b',
            Some(e @ ('\\' | '\'' | '"' | '?')) => e,
            _ => {
                out.push('\\');
                continue;
            }
        };
        chars.next();
        out.push(plain);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Asterisk's `ast_escape_c`, as the simulator models it.
    fn escape_c(text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            match c {
                '\x07' => out.push_str(r"\a"),
                '\x08' => out.push_str(r"\b"),
                '\x0c' => out.push_str(r"\f"),
                '\n' => out.push_str(r"\n"),
                '\r' => out.push_str(r"\r"),
                '\t' => out.push_str(r"\t"),
                '\x0b' => out.push_str(r"\v"),
                '\\' | '\'' | '"' | '?' => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn names_with_apostrophes_quotes_and_question_marks_come_back_as_typed() {
        for name in [
            "O'Brien",
            "\"Bob\" Smith",
            "Who?",
            r"C:\calls",
            "Tab\there",
            "plain",
        ] {
            let wire = escape_c(name);
            assert_eq!(unescape_c(&wire), name);
        }
    }

    #[test]
    fn text_without_a_backslash_is_borrowed() {
        assert!(matches!(unescape_c("Alice Example"), Cow::Borrowed(_)));
    }

    #[test]
    fn backslashes_asterisk_would_not_write_are_kept() {
        assert_eq!(unescape_c(r"a\x\"), r"a\x\");
        assert_eq!(unescape_c(r"\"), r"\");
    }

    proptest! {
        /// Whatever the text, unescaping what `ast_escape_c` wrote gives it back.
        #[test]
        fn unescape_undoes_asterisks_escape(text in "\\PC{0,40}|[\\x00-\\x7f]{0,40}") {
            let wire = escape_c(&text);
            prop_assert_eq!(unescape_c(&wire), text.as_str());
        }
    }
}
