//! Errors that wrap a cause name it in their own message and do not return it again from
//! `source()`: a chain printer (anyhow's `{:#}`, a log line that walks `source()`) shows
//! each cause once, and `{e}` alone still says why.

#[path = "../../ami-proto/tests/support/error_chain.rs"]
mod error_chain;

use ami_mio::{AddError, FleetAddError};
use error_chain::assert_cause_shown_once;

#[test]
fn resolver_threads_that_did_not_start_name_the_os_error_once_in_the_printed_chain() {
    let os = "Resource temporarily unavailable";
    assert_cause_shown_once(&AddError::Resolver(std::io::Error::other(os)), os);
    let fleet = FleetAddError::Tls(AddError::Resolver(std::io::Error::other(os)));
    assert_cause_shown_once(&fleet, os);
}
