//! Text from the server made safe to show on a terminal.
//!
//! Header values reach a person's terminal through stderr lines (a login rejection's
//! `Message`, a shutdown reason) and through `calls --watch`'s table (channel names, caller
//! ID names that a remote SIP caller chooses). A value holding ESC, BEL, C1 or other control
//! characters could otherwise recolour, retitle or clear the operator's terminal, rewrite
//! what a line appears to say (backspaces, carriage returns) or, on terminals that honour
//! OSC 52, write the clipboard; bidirectional overrides could reorder what is shown. Each
//! such character is shown escaped (`\x1b`, `\u{202e}`) instead. JSON output needs none of
//! this: serde escapes every control character. The escaping is ami-proto's
//! ([`ami_proto::Shown`]), the one its own log lines and errors use.

use ami_proto::escape_controls;
use std::borrow::Cow;

/// `text` with every control character (newlines included) and bidirectional override
/// shown escaped: for one cell or one line made of text the program did not write.
pub(crate) fn cell(text: &str) -> Cow<'_, str> {
    escape_controls(text, false)
}

/// `text` as [`cell`] shows it, except that its newlines still end lines: for a message
/// the program composed, in which only the values it quotes came from elsewhere (AMI
/// values never hold a newline: it ends their line on the wire).
pub(crate) fn lines(text: &str) -> Cow<'_, str> {
    escape_controls(text, true)
}

/// One line on stderr, every value in it shown safely (see the module docs).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::terminal::say_line(&::std::format!($($arg)*))
    };
}
pub(crate) use say;

/// Writes `text`, shown as [`lines`] does, and a newline to stderr. A stderr that fails (its
/// reader gone: `ami listen 2>&1 | head -1`, a logger that died) loses the line and nothing
/// else: `eprintln!` panics there, which ended a listener mid-run (exit 101, no Logoff).
pub(crate) fn say_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{}", lines(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_escapes_newlines_and_a_line_keeps_its_own() {
        assert_eq!(cell("a\nb\x1b[2J"), "a\\x0ab\\x1b[2J");
        assert_eq!(lines("a\nb\x1b"), "a\nb\\x1b");
    }
}
