//! How a client names itself at the start of its log records.

use crate::Shown;
use std::fmt;

/// `AMI <name>` for a client with a name ([`ClientConfigBuilder::name`]), else `AMI`: what
/// every log record of a client starts with, followed by `: `, so that of a process running
/// many clients (a fleet of a hundred servers) each line says which server it is about.
///
/// The name is shown escaped although the builder refuses control characters:
/// [`ClientConfig::with_name`] does not check it.
///
/// [`ClientConfigBuilder::name`]: crate::ClientConfigBuilder::name
/// [`ClientConfig::with_name`]: crate::ClientConfig::with_name
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who<'a>(pub(crate) Option<&'a str>);

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, "AMI {}", Shown(name)),
            None => f.write_str("AMI"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_client_shows_its_name_escaped_and_an_unnamed_one_plain_ami() {
        assert_eq!(Who(Some("pbx-east")).to_string(), "AMI pbx-east");
        assert_eq!(Who(None).to_string(), "AMI");
        assert_eq!(Who(Some("a\nb")).to_string(), "AMI a\\x0ab");
    }
}
