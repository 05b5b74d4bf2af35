//! What a removal says when a removed server's leftovers do not fit what waits for the
//! reader: a late answer not queued is said as a late answer (the server's word on an action
//! that timed out), not as a stream mark.
//!
//! One test function: the logger is process-global.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/fleet_login.rs"]
mod fleet_login;
#[path = "support/log_capture.rs"]
mod log_capture;

use ami_proto::fleet::{Fleet, FleetConfig, FleetOutput, Route, ServerId, MAX_REMOVAL_GAPS};
use ami_proto::{Action, Input, StreamItem};
use fleet_login::{all_ready, client_config};
use std::time::{Duration, Instant};

#[test]
fn a_removed_servers_late_answer_past_the_cap_is_said_as_a_late_answer() {
    log_capture::install(log::LevelFilter::Warn);
    let now = Instant::now();
    let mut config = FleetConfig::default();
    config.budget.connects_per_step = MAX_REMOVAL_GAPS + 1;
    let mut f = Fleet::new(config);
    let fillers: Vec<(String, ServerId)> = (0..MAX_REMOVAL_GAPS)
        .map(|k| {
            let name = format!("pbx{k}");
            let id = f.add(now, &name, client_config()).unwrap();
            (name, id)
        })
        .collect();
    let late = f.add(now, "pbx-late", client_config()).unwrap();
    all_ready(&mut f, now);
    while f.poll_event().is_some() {}
    // Each filler leaves one gap notice for its queued event: the cap is full.
    for (k, (name, id)) in fillers.iter().enumerate() {
        let event = format!("Event: Flood\r\nSeq: {k}\r\n\r\n");
        f.handle_input(now, *id, Input::Received(event.as_bytes()));
        assert!(f.remove(now, name));
    }
    assert_eq!(f.stats().removal_gaps_dropped, 0, "the cap is just full");
    let sent = f
        .send(now, Route::Server("pbx-late"), Action::new("Redirect"))
        .unwrap();
    let wire = f.transmit(late).to_vec();
    f.advance_transmit(late, wire.len());
    let later = now + Duration::from_secs(6);
    f.handle_timeout(later);
    while !matches!(f.poll_output(), FleetOutput::Wait(_)) {}
    let answer = format!(
        "Response: Success\r\nActionID: {}\r\nMessage: Redirect successful\r\n\r\n",
        sent.id.as_str()
    );
    f.handle_input(later, late, Input::Received(answer.as_bytes()));
    log_capture::take(|_| true);
    assert!(f.remove(later, "pbx-late"));
    assert_eq!(f.stats().removal_gaps_dropped, 1);
    let said: Vec<String> = log_capture::take(|r| r.message.contains("pbx-late"))
        .iter()
        .map(|r| r.message.clone())
        .collect();
    assert_eq!(
        said,
        [format!(
            "AMI fleet: {MAX_REMOVAL_GAPS} notices (or {} bytes of late answers) of removed servers wait for the reader; a late answer of pbx-late was not queued \
             (1 so far, counted in FleetStats::removal_gaps_dropped)",
            ami_proto::fleet::MAX_REMOVAL_BYTES
        )]
    );
    // The reader still gets every gap that fitted, and no late answer.
    let items: Vec<StreamItem> = std::iter::from_fn(|| f.poll_event())
        .map(|i| i.item)
        .collect();
    assert_eq!(items.len(), MAX_REMOVAL_GAPS);
    assert!(items
        .iter()
        .all(|i| matches!(i, StreamItem::Gap { dropped: 1 })));
}
