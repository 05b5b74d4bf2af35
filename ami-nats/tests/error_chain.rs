//! Errors that wrap a cause name it in their own message and do not return it again from
//! `source()`: a chain printer (anyhow's `{:#}`, a log line that walks `source()`) shows
//! each cause once, and `{e}` alone still says why.

#[path = "../../ami-proto/tests/support/error_chain.rs"]
mod error_chain;

use ami_nats::BridgeError;
use error_chain::assert_cause_shown_once;

#[test]
fn a_metrics_address_that_cannot_be_bound_names_the_os_error_once_in_the_printed_chain() {
    let os = "Address already in use";
    assert_cause_shown_once(&BridgeError::Metrics(std::io::Error::other(os)), os);
}
