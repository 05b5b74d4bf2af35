//! What `ami-codegen` says when the catalog cannot be read: the binary prints `{e}` alone,
//! so the message itself names where the JSON breaks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::error::Error;

#[test]
fn a_catalog_that_is_not_json_says_where_it_breaks_once() {
    let e = ami_codegen::generate("{\"events\": [").unwrap_err();
    let cause = "EOF while parsing a list at line 1 column 12";
    assert!(e.to_string().contains(cause), "{e}");
    let mut chain = vec![e.to_string()];
    let mut next = e.source();
    while let Some(link) = next {
        chain.push(link.to_string());
        next = link.source();
    }
    let chain = chain.join(": ");
    assert_eq!(chain.matches(cause).count(), 1, "{chain}");
}
