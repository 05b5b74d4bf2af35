//! Errors that wrap a cause name it in their own message and do not return it again from
//! `source()`: a chain printer (anyhow's `{:#}`, a log line that walks `source()`) shows
//! each cause once, and `{e}` alone still says why.

use ami_mio::{AddError, FleetAddError};
use std::error::Error;

/// `e` as a chain printer shows it: its message, then each `source()` in turn, joined by
/// `: `.
fn printed_chain(e: &dyn Error) -> String {
    let mut links = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        links.push(cause.to_string());
        next = cause.source();
    }
    links.join(": ")
}

#[test]
fn resolver_threads_that_did_not_start_name_the_os_error_once_in_the_printed_chain() {
    let os = "Resource temporarily unavailable";
    let refused = AddError::Resolver(std::io::Error::other(os));
    assert!(refused.to_string().contains(os), "{refused}");
    assert_eq!(
        printed_chain(&refused).matches(os).count(),
        1,
        "{}",
        printed_chain(&refused)
    );
    let fleet = FleetAddError::Tls(AddError::Resolver(std::io::Error::other(os)));
    assert_eq!(
        printed_chain(&fleet).matches(os).count(),
        1,
        "{}",
        printed_chain(&fleet)
    );
}
