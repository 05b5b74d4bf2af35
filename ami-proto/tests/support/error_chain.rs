//! How a chain printer (anyhow's `{:#}`, a log line that walks `source()`) shows an error,
//! for the tests of every crate that check an error names each cause once (included with
//! `#[path]`).
#![allow(dead_code)]

use std::error::Error;

/// `e` as a chain printer shows it: its message, then each `source()` in turn, joined by
/// `: `.
pub fn printed_chain(e: &dyn Error) -> String {
    let mut links = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        links.push(cause.to_string());
        next = cause.source();
    }
    links.join(": ")
}

/// `e`'s own message names `cause` (so `{e}` alone says why), and its printed chain names
/// it once.
pub fn assert_cause_shown_once(e: &dyn Error, cause: &str) {
    let chain = printed_chain(e);
    assert!(e.to_string().contains(cause), "{e} does not say {cause:?}");
    assert_eq!(
        chain.matches(cause).count(),
        1,
        "{cause:?} repeated in {chain:?}"
    );
}
