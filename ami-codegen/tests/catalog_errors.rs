//! What `ami-codegen` says when the catalog cannot be read: the binary prints `{e}` alone,
//! so the message itself names where the JSON breaks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../ami-proto/tests/support/error_chain.rs"]
mod error_chain;

use error_chain::assert_cause_shown_once;

#[test]
fn a_catalog_that_is_not_json_says_where_it_breaks_once() {
    let e = ami_codegen::generate("{\"events\": [").unwrap_err();
    assert_cause_shown_once(&e, "EOF while parsing a list at line 1 column 12");
}
