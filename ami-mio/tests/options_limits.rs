//! `Options` that cannot work are refused by the constructors with an error, not a panic.

// Test helpers may unwrap and panic: that is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_mio::{MioDriver, MioFleet, Options};
use ami_proto::fleet::FleetConfig;
use std::io::ErrorKind;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a constructor did with `options`: its error's kind and text, or the panic's text.
fn outcome<T>(build: impl FnOnce() -> std::io::Result<T>) -> Result<(ErrorKind, String), String> {
    match catch_unwind(AssertUnwindSafe(build)) {
        Ok(Ok(_)) => Err("accepted".to_string()),
        Ok(Err(e)) => Ok((e.kind(), e.to_string())),
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("?")
        )),
    }
}

fn cases() -> Vec<(Options, &'static str)> {
    let mut huge_chunk = Options::default();
    huge_chunk.read_chunk = usize::MAX;
    let mut huge_events = Options::default();
    huge_events.events_capacity = usize::MAX;
    let mut past_epoll = Options::default();
    past_epoll.events_capacity = i32::MAX as usize + 1;
    vec![
        (huge_chunk, "read_chunk"),
        (huge_events, "events_capacity"),
        (past_epoll, "events_capacity"),
    ]
}

#[test]
fn a_driver_refuses_options_that_cannot_work_with_an_error_naming_the_setting() {
    for (options, setting) in cases() {
        let (kind, text) = outcome(|| MioDriver::with_options(options))
            .unwrap_or_else(|e| panic!("{setting}: {e}"));
        assert_eq!(kind, ErrorKind::InvalidInput, "{setting}: {text}");
        assert!(text.contains(setting), "{text}");
    }
}

#[test]
fn a_fleet_refuses_options_that_cannot_work_with_an_error_naming_the_setting() {
    for (options, setting) in cases() {
        let (kind, text) = outcome(|| MioFleet::with_options(options, FleetConfig::default()))
            .unwrap_or_else(|e| panic!("{setting}: {e}"));
        assert_eq!(kind, ErrorKind::InvalidInput, "{setting}: {text}");
        assert!(text.contains(setting), "{text}");
    }
}
