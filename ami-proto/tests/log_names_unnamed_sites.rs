//! Records from the sites `log_names.rs` does not reach (the decoder, the call tracker) say
//! which server they are about: a process running hundreds of clients writes every record
//! to one log, and a record that does not name its server cannot be acted on.
//!
//! One test function: the logger is process-global.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time

#[path = "support/log_capture.rs"]
mod log_capture;
#[path = "support/scripted.rs"]
mod scripted;
#[path = "support/tracker.rs"]
mod tracker;

use ami_proto::calls::TrackerConfig;
use ami_proto::{ClientConfig, DecoderLimits};
use scripted::{msg, Harness};
use std::time::{Duration, Instant};
use tracker::{ev, T};

/// Records of `target`'s module taken from the capture, as `LEVEL message`.
fn take_from(target: &str) -> Vec<String> {
    log_capture::take(|r| r.target.starts_with(target))
        .into_iter()
        .map(|r| format!("{} {}", r.level, r.message))
        .collect()
}

/// The records the call tracker of a client named `name` writes when it reaches its
/// channel cap.
fn tracker_cap_records(name: &str) -> Vec<String> {
    let client = ClientConfig::builder("admin", "amp111")
        .name(name)
        .seed(3)
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let config = TrackerConfig::builder()
        .tag_prefix("t")
        .max_channels(1)
        .build()
        .unwrap();
    let mut t = T::with_client(client, config);
    t.live();
    take_from("ami_proto::calls");
    for n in 0..3 {
        let uid = format!("1.{n}");
        t.feed(&ev("Newchannel", &uid, &uid, 4, ""));
    }
    assert!(t.tr.stats().channels_over_cap > 0, "over the cap");
    take_from("ami_proto::calls")
}

#[test]
fn decoder_and_call_tracker_records_say_which_server_they_are_about() {
    log_capture::install(log::LevelFilter::Trace);

    // (a) The decoder, on garbage from a named client: "AMI decoder: ...; resynchronising",
    // one debug record per dropped message, none saying which of the servers sent it.
    let limits = DecoderLimits::builder().max_fields(8).build().unwrap();
    let config = ClientConfig::builder("admin", "amp111")
        .name("pbx-garbage")
        .decoder(limits)
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut h = Harness::new(config, Instant::now());
    h.ready();
    take_from("ami_proto::wire");
    let names: Vec<String> = (0..20).map(|i| format!("F{i}")).collect();
    let mut fields = vec![("Event", "Junk")];
    fields.extend(names.iter().map(|n| (n.as_str(), "x")));
    for _ in 0..3 {
        h.feed(&msg(&fields));
    }
    let decoder = take_from("ami_proto::wire");
    assert!(!decoder.is_empty(), "the decoder says what it dropped");
    let unnamed_decoder: Vec<&String> = decoder
        .iter()
        .filter(|r| !r.contains("pbx-garbage"))
        .collect();

    // (b) The call tracker of two servers at their channel caps: the same words for both.
    let a = tracker_cap_records("pbx-a");
    let b = tracker_cap_records("pbx-b");
    assert!(
        !a.is_empty() && !b.is_empty(),
        "the cap is said: {a:?} {b:?}"
    );
    let unnamed_tracker: Vec<&String> = a.iter().filter(|r| b.contains(r)).collect();

    assert!(
        unnamed_decoder.is_empty() && unnamed_tracker.is_empty(),
        "records that cannot be traced to their server:\n decoder (client pbx-garbage): \
         {unnamed_decoder:#?}\n call tracker (same line for pbx-a and pbx-b): \
         {unnamed_tracker:#?}"
    );
}
