//! `Options` that cannot work are refused by the constructors with an error, not a panic.

// Test helpers may unwrap and panic: that is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_mio::{MioDriver, MioFleet, Options, MAX_EVENTS_CAPACITY, MAX_READ_CHUNK};
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
    // Sizes an allocator may refuse: the buffer is allocated when the options are
    // accepted, and a refused allocation aborts the process, so they must be refused first.
    let mut past_any_alloc = Options::default();
    past_any_alloc.read_chunk = isize::MAX as usize;
    let mut past_read_cap = Options::default();
    past_read_cap.read_chunk = MAX_READ_CHUNK + 1;
    let mut past_events_cap = Options::default();
    past_events_cap.events_capacity = MAX_EVENTS_CAPACITY + 1;
    vec![
        (huge_chunk, "read_chunk"),
        (huge_events, "events_capacity"),
        (past_epoll, "events_capacity"),
        (past_any_alloc, "read_chunk"),
        (past_read_cap, "read_chunk"),
        (past_events_cap, "events_capacity"),
    ]
}

#[test]
fn the_largest_buffers_the_options_allow_are_accepted() {
    // Over these caps a setting gains nothing (see `MAX_READ_CHUNK`, `MAX_EVENTS_CAPACITY`);
    // at them it still works.
    let mut largest = Options::default();
    largest.read_chunk = MAX_READ_CHUNK;
    largest.events_capacity = MAX_EVENTS_CAPACITY;
    assert!(MioDriver::with_options(largest.clone()).is_ok());
    assert!(MioFleet::with_options(largest, FleetConfig::default()).is_ok());
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
