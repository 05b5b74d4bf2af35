//! What went wrong on which of several servers (`action --on all`, `calls`): each server's
//! reason said once on stderr as it is found, and the command's failure a summary naming the
//! servers, without saying any reason twice.

use crate::terminal::say;
use crate::Failure;

/// The servers that failed so far, and the worst exit code among them.
#[derive(Debug, Default)]
pub(crate) struct ServerFailures {
    code: u8,
    names: Vec<String>,
}

impl ServerFailures {
    /// Says `why` for `server` on stderr and counts it with exit code `code`.
    pub(crate) fn say(&mut self, server: &str, why: &str, code: u8) {
        say!("ami: {server}: {why}");
        self.code = self.code.max(code);
        if !self.names.iter().any(|n| n == server) {
            self.names.push(server.to_string());
        }
    }

    /// The command's failure, if a server failed: `{what} on {server}`, or with several
    /// servers `{what} on N of TOTAL servers (A, B)`; the worst exit code.
    pub(crate) fn into_failure(self, total: usize, what: &str) -> Option<Failure> {
        let reason = match self.names.as_slice() {
            [] => return None,
            [one] if total <= 1 => format!("{what} on {one}"),
            names => format!(
                "{what} on {} of {total} servers ({})",
                names.len(),
                names.join(", ")
            ),
        };
        Some(Failure::new(self.code, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_each_server_once_with_the_worst_code() {
        let mut f = ServerFailures::default();
        f.say("pbx2:5038", "not connected: connection refused", 3);
        f.say(
            "pbx3:5038",
            "the server answered Error: Permission denied",
            4,
        );
        f.say("pbx2:5038", "said again", 1);
        let failure = f.into_failure(3, "failed").unwrap();
        assert_eq!(failure.code, 4);
        assert_eq!(
            failure.reason,
            "failed on 2 of 3 servers (pbx2:5038, pbx3:5038)"
        );
    }

    #[test]
    fn one_server_of_one_is_named_alone_and_none_is_no_failure() {
        let mut f = ServerFailures::default();
        f.say("pbx2:5038", "no reply within 30 s", 1);
        let failure = f.into_failure(1, "failed").unwrap();
        assert_eq!(
            (failure.code, failure.reason.as_str()),
            (1, "failed on pbx2:5038")
        );
        assert!(ServerFailures::default()
            .into_failure(2, "failed")
            .is_none());
    }
}
