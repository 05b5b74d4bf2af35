//! Errors that wrap a cause name it in their own message and do not return it again from
//! `source()`: a chain printer (anyhow's `{:#}`, a log line that walks `source()`) shows
//! each cause once, and `{e}` alone still says why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../ami-proto/tests/support/error_chain.rs"]
mod error_chain;

use ami_async::fleet::{NeverReady, ServerName};
use ami_proto::{ConnectFailure, DisconnectReason};
use error_chain::assert_cause_shown_once;

#[test]
fn a_server_closed_for_good_names_its_reason_once_in_the_printed_chain() {
    let closed = NeverReady::ServerClosed {
        server: ServerName::new("pbx1").unwrap(),
        reason: DisconnectReason::ConnectFailed(ConnectFailure::Refused),
    };
    assert_cause_shown_once(&closed, "connection refused");
}

#[cfg(feature = "tls")]
#[test]
fn bad_tls_settings_name_their_cause_once_in_the_printed_chain() {
    use ami_async::TlsConfigError;
    let pem = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
    let bad_pem = ami_async::tls::client_config_from_pem(pem).unwrap_err();
    let TlsConfigError::Pem(_) = &bad_pem else {
        panic!("{bad_pem:?}")
    };
    assert_cause_shown_once(&bad_pem, "base64 decode error");
    let bad_name = ami_async::rustls_pki_types::ServerName::try_from("not a name!").unwrap_err();
    let bad_name = TlsConfigError::ServerName(bad_name);
    assert_cause_shown_once(&bad_name, "invalid dns name");
}
