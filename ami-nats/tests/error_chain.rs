//! Errors that wrap a cause name it in their own message and do not return it again from
//! `source()`: a chain printer (anyhow's `{:#}`, a log line that walks `source()`) shows
//! each cause once, and `{e}` alone still says why.

use ami_nats::BridgeError;
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
fn a_metrics_address_that_cannot_be_bound_names_the_os_error_once_in_the_printed_chain() {
    let os = "Address already in use";
    let refused = BridgeError::Metrics(std::io::Error::other(os));
    assert!(refused.to_string().contains(os), "{refused}");
    let chain = printed_chain(&refused);
    assert_eq!(chain.matches(os).count(), 1, "{chain}");
}
