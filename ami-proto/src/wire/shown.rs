//! Text from the server as a person reads it: in a log line, an error message, a terminal.
//!
//! A header value is whatever the server (or, through `CallerIDName`, a remote SIP caller)
//! put there, and AMI framing keeps only CR-LF out of it. ESC, BEL, backspace, a lone CR,
//! C1 controls and bidirectional overrides left in would reach the reader's terminal or log
//! viewer and be obeyed: recolour or retitle it, rewrite what a line appears to say, forge a
//! log line's start. Every such character is shown escaped instead (`\x1b`, `\u{202e}`);
//! the text itself, as the server sent it, stays available from the [`Message`].
//!
//! [`Message`]: crate::Message

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Server text as [`Display`](fmt::Display) shows it safely, e.g. in a log line:
/// `log::warn!("login rejected: {}", Shown(message))`.
///
/// ```
/// use ami_proto::Shown;
///
/// assert_eq!(Shown("bad \x1b[31mred\x07").to_string(), "bad \\x1b[31mred\\x07");
/// assert_eq!(Shown("Authentication failed").to_string(), "Authentication failed");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_controls(self.0, false))
    }
}

/// Characters that change how the rest of a line is displayed without being control
/// characters themselves: the bidirectional embeddings, overrides and isolates.
fn reorders(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn unsafe_char(c: char, keep_newlines: bool) -> bool {
    (c.is_control() && !(keep_newlines && c == '\n')) || reorders(c)
}

/// Whether a terminal or log viewer would obey `c` rather than show it: a control character
/// (C0, DEL, C1) or a bidirectional embedding, override or isolate. What [`Shown`] escapes;
/// for other encoders of server text (JSON lines) to escape the same set.
pub fn obeyed_by_terminals(c: char) -> bool {
    unsafe_char(c, false)
}

/// `text` with every control character (C0, DEL, C1) and bidirectional override shown
/// escaped: `\x1b` below 0x80, `\u{9b}` above. With `keep_newlines`, LF still ends a line
/// (for text a program composed around server values, which never hold one). Borrows
/// `text` when it has nothing to escape.
pub fn escape_controls(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !text.chars().any(|c| unsafe_char(c, keep_newlines)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c, keep_newlines) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_as_it_is() {
        assert!(matches!(
            escape_controls("PJSIP/100-0000002a José", false),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            escape_controls("two\nlines", true),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        let shown = escape_controls("bad \x1b[31mRED\x1b]0;pwned\x07 \x08\x08end\r", false);
        assert_eq!(
            shown,
            "bad \\x1b[31mRED\\x1b]0;pwned\\x07 \\x08\\x08end\\x0d"
        );
        assert!(!shown.chars().any(char::is_control), "{shown}");
    }

    #[test]
    fn c1_controls_del_and_bidi_overrides_are_escaped_too() {
        assert_eq!(Shown("a\u{9b}31mb\u{7f}").to_string(), "a\\u{9b}31mb\\x7f");
        assert_eq!(
            Shown("abc\u{202e}fdp.exe").to_string(),
            "abc\\u{202e}fdp.exe"
        );
        assert_eq!(Shown("x\u{2066}y").to_string(), "x\\u{2066}y");
    }

    /// Undoes [`escape_controls`]: each `\\x..` or `\\u{..}` it wrote back to its
    /// character. Text holding a backslash followed by such a form is ambiguous by design
    /// (the escape is for reading, not for parsing), so the property below keeps to text
    /// without backslashes.
    fn unescape(shown: &str) -> String {
        let mut out = String::new();
        let mut rest = shown;
        while let Some(at) = rest.find('\\') {
            out.push_str(&rest[..at]);
            let tail = &rest[at + 1..];
            let (code, used) = if let Some(hex) = tail.strip_prefix('x') {
                (u32::from_str_radix(&hex[..2], 16).unwrap(), 3)
            } else {
                let end = tail.find('}').unwrap();
                (u32::from_str_radix(&tail[2..end], 16).unwrap(), end + 1)
            };
            out.push(char::from_u32(code).unwrap());
            rest = &tail[used..];
        }
        out.push_str(rest);
        out
    }

    proptest::proptest! {
        /// Whatever the server sent, what is shown holds no control character (a newline
        /// only when kept) and no bidirectional override, text with neither is shown as it
        /// is, and nothing is lost: the escapes read back to the text.
        #[test]
        fn no_control_character_survives_and_nothing_is_lost(
            chars in proptest::collection::vec(proptest::prop_oneof![
                proptest::char::any(),
                proptest::char::range('\0', '\u{1f}'),
                proptest::char::range('\u{7f}', '\u{9f}'),
                proptest::char::range('\u{202a}', '\u{202e}'),
                proptest::char::range('\u{2066}', '\u{2069}'),
            ], 0..64),
            keep in proptest::bool::ANY,
        ) {
            let text: String = chars.into_iter().filter(|&c| c != '\\').collect();
            // Written out here, not taken from the code under test.
            let dangerous = |c: char| {
                (c.is_control() && !(keep && c == '\n'))
                    || ('\u{202a}'..='\u{202e}').contains(&c)
                    || ('\u{2066}'..='\u{2069}').contains(&c)
            };
            let shown = escape_controls(&text, keep);
            proptest::prop_assert!(!shown.chars().any(dangerous), "{:?}", shown);
            if !text.chars().any(dangerous) {
                proptest::prop_assert_eq!(&*shown, text.as_str());
            }
            proptest::prop_assert_eq!(unescape(&shown), text);
        }
    }

    #[test]
    fn obeyed_by_terminals_names_exactly_what_shown_escapes() {
        for c in [
            'a', 'é', ' ', '\n', '\x1b', '\x7f', '\u{80}', '\u{9b}', '\u{202e}', '\u{2069}',
        ] {
            let text = c.to_string();
            let escaped = Shown(&text).to_string() != text;
            assert_eq!(obeyed_by_terminals(c), escaped, "{c:?}");
        }
        assert!(obeyed_by_terminals('\x1b') && !obeyed_by_terminals('a'));
    }

    #[test]
    fn c1_controls_from_0x80_are_shown_as_unicode_escapes() {
        assert_eq!(escape_controls("\u{7f}\u{80}", false), "\\x7f\\u{80}");
    }

    #[test]
    fn newlines_are_escaped_unless_kept() {
        assert_eq!(escape_controls("a\nb", false), "a\\x0ab");
        assert_eq!(escape_controls("a\nb\x1b", true), "a\nb\\x1b");
    }
}
