//! The async fleet driver's record of a failed connect says which server failed: with 300
//! servers unreachable, `AMI fleet: connect failed: Connection refused` three hundred
//! times, none saying which, was the one record that carries the OS error.
//! Over loopback: a port nothing listens on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::fleet::FleetConfig;
use ami_proto::ClientConfig;
use std::time::Duration;

#[path = "../../ami-proto/tests/support/log_capture.rs"]
mod log_capture;

/// Every record so far, as its line would show it.
fn records() -> Vec<String> {
    log_capture::snapshot()
        .iter()
        .map(log_capture::Record::line)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_servers_failed_connect_is_logged_with_its_name() {
    log_capture::install(log::LevelFilter::Trace);
    // A port on 127.0.0.1 that nothing listens on any more.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (fleet, _events) = ami_tokio::fleet::spawn_fleet(FleetConfig::default());
    let config = ClientConfig::builder("admin", "amp111").build().unwrap();
    fleet.add("pbx-refused", config, addr).unwrap();
    let failed = |r: &String| r.contains("connect failed") || r.contains("could not connect");
    for _ in 0..100 {
        if records().iter().filter(|r| failed(r)).count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.close();
    let said: Vec<String> = records().into_iter().filter(|r| failed(r)).collect();
    assert!(!said.is_empty(), "the refused connect is said");
    let unnamed: Vec<&String> = said.iter().filter(|r| !r.contains("pbx-refused")).collect();
    assert!(
        unnamed.is_empty(),
        "records of a failed connect that do not say which server: {unnamed:#?} (all: {said:#?})"
    );
}
