//! One logger for the tests that check what the client says: it keeps every record the
//! `log` crate lets through, for the test to take. The logger is process-global: a test
//! binary that uses it either has one test function, or installs it once for all its tests
//! and only reads records that no other test could have made.
#![allow(dead_code)]

use std::sync::{Mutex, Once, PoisonError};

/// One captured record.
#[derive(Debug, Clone)]
pub struct Record {
    pub level: log::Level,
    pub target: String,
    pub message: String,
}

impl Record {
    /// `LEVEL target message`: everything a log line would show of the record.
    pub fn line(&self) -> String {
        format!("{} {} {}", self.level, self.target, self.message)
    }
}

static RECORDS: Mutex<Vec<Record>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let record = Record {
            level: record.level(),
            target: record.target().to_string(),
            message: record.args().to_string(),
        };
        RECORDS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
    fn flush(&self) {}
}

/// Installs the capturing logger (once per process) and lets records up to `max` through.
pub fn install(max: log::LevelFilter) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&Capture).is_err() {
            panic!("another logger was installed first");
        }
    });
    log::set_max_level(max);
}

/// Takes the records that `keep` accepts, in order; the others stay captured.
pub fn take(keep: impl Fn(&Record) -> bool) -> Vec<Record> {
    let mut all = RECORDS.lock().unwrap_or_else(PoisonError::into_inner);
    let (taken, rest): (Vec<Record>, Vec<Record>) = all.drain(..).partition(|r| keep(r));
    *all = rest;
    taken
}

/// Every record captured so far, left in place.
pub fn snapshot() -> Vec<Record> {
    RECORDS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}
