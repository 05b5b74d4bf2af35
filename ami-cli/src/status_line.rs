//! A live one-line status on a terminal (stderr), nothing when piped.

use std::io::{IsTerminal, Write};

pub(crate) struct StatusLine {
    tty: bool,
}

impl StatusLine {
    pub(crate) fn new() -> StatusLine {
        StatusLine {
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub(crate) fn update(&self, text: &str) {
        if self.tty {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{}", crate::terminal::cell(text));
            let _ = e.flush();
        }
    }

    pub(crate) fn finish(&self) {
        if self.tty {
            // Not `eprintln!`: a terminal hung up would make it panic.
            let _ = writeln!(std::io::stderr());
        }
    }
}
