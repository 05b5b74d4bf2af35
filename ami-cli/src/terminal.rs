//! Text from the server made safe to show on a terminal.
//!
//! Header values reach a person's terminal through stderr lines (a login rejection's
//! `Message`, a shutdown reason) and through `calls --watch`'s table (channel names, caller
//! ID names that a remote SIP caller chooses). A value holding ESC, BEL, C1 or other control
//! characters could otherwise recolour, retitle or clear the operator's terminal, rewrite
//! what a line appears to say (backspaces, carriage returns) or, on terminals that honour
//! OSC 52, write the clipboard; bidirectional overrides could reorder what is shown. Each
//! such character is shown escaped (`\x1b`, `\u{202e}`) instead. JSON output needs none of
//! this: serde escapes every control character.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that change how the rest of a line is displayed without being control
/// characters themselves: the Unicode bidirectional embeddings, overrides and isolates.
fn reorders(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn unsafe_char(c: char, keep_newline: bool) -> bool {
    (c.is_control() && !(keep_newline && c == '\n')) || reorders(c)
}

fn escape(text: &str, keep_newline: bool) -> Cow<'_, str> {
    if !text.chars().any(|c| unsafe_char(c, keep_newline)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c, keep_newline) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// `text` with every control character (newlines included) and bidirectional override
/// shown escaped: for one cell or one line made of text the program did not write.
pub(crate) fn cell(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// `text` as [`cell`] shows it, except that its newlines still end lines: for a message
/// the program composed, in which only the values it quotes came from elsewhere (AMI
/// values never hold a newline: it ends their line on the wire).
pub(crate) fn lines(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

/// One line on stderr, every value in it shown safely (see the module docs).
macro_rules! say {
    ($($arg:tt)*) => {
        ::std::eprintln!("{}", $crate::terminal::lines(&::std::format!($($arg)*)))
    };
}
pub(crate) use say;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_shown_as_it_is_without_a_copy() {
        assert!(matches!(cell("PJSIP/100-0000002a José"), Cow::Borrowed(_)));
        assert!(matches!(lines("two\nlines"), Cow::Borrowed(_)));
    }

    #[test]
    fn escape_sequences_from_the_server_are_shown_not_obeyed() {
        let hostile = "bad \x1b[31mRED\x1b]0;pwned\x07 \x08\x08end\r";
        let shown = cell(hostile);
        assert_eq!(
            shown,
            "bad \\x1b[31mRED\\x1b]0;pwned\\x07 \\x08\\x08end\\x0d"
        );
        assert!(!shown.chars().any(char::is_control), "{shown}");
    }

    #[test]
    fn c1_controls_del_and_bidi_overrides_are_escaped_too() {
        assert_eq!(cell("a\u{9b}31mb\u{7f}"), "a\\u{9b}31mb\\x7f");
        assert_eq!(cell("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
        assert_eq!(cell("x\u{2066}y"), "x\\u{2066}y");
    }

    #[test]
    fn a_cell_escapes_newlines_and_a_line_keeps_its_own() {
        assert_eq!(cell("a\nb"), "a\\x0ab");
        assert_eq!(lines("a\nb\x1b"), "a\nb\\x1b");
    }
}
