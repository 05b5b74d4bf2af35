//! Text from NATS as a log line shows it: escaped and cut short.
//!
//! A reply on the bridge's ack inbox, a value in a KV bucket or an error a peer sent is
//! written by whoever may publish there, not by the bridge. CR/LF left in would forge log
//! lines, ESC and other controls would drive the reader's terminal, and a message of
//! megabytes would flood the log; each is shown as [`ami_proto::Shown`] shows server text,
//! and at most [`MAX_SHOWN`] bytes of it, with the whole length said.

use std::fmt;

/// Most bytes of remote text a log line shows (before escaping).
pub(crate) const MAX_SHOWN: usize = 256;

/// Remote bytes (UTF-8 or not) as [`Display`](fmt::Display) shows them safely in a log
/// line: `log::warn!("refused: {}", Remote(&payload))`.
pub(crate) struct Remote<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Remote<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = self.0.get(..MAX_SHOWN).unwrap_or(self.0);
        let text = String::from_utf8_lossy(head);
        write!(f, "{}", ami_proto::Shown(&text))?;
        if head.len() < self.0.len() {
            write!(f, "... ({} bytes in all)", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_text_is_shown_escaped_and_cut_at_its_cap() {
        assert_eq!(Remote(b"plain text").to_string(), "plain text");
        assert_eq!(
            Remote(b"a\r\nFORGED \x1b[31m").to_string(),
            "a\\x0d\\x0aFORGED \\x1b[31m"
        );
        let huge = vec![b'x'; 1 << 20];
        let shown = Remote(&huge).to_string();
        assert!(shown.len() < MAX_SHOWN + 40, "{} bytes", shown.len());
        assert!(shown.ends_with("... (1048576 bytes in all)"), "{shown}");
        // A cut inside a character loses that character, never the line.
        let mut cut = vec![b'y'; MAX_SHOWN - 1];
        cut.extend_from_slice("é".as_bytes());
        assert!(!Remote(&cut).to_string().chars().any(char::is_control));
    }
}
