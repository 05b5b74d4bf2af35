//! A fleet whose servers are answered by a scripted Asterisk that accepts every Login and
//! answers every Ping:
//! the set-up of the fleet tests that need ready servers and nothing else from them.
#![allow(dead_code)]

use ami_proto::fleet::{Fleet, FleetOutput, ServerId};
use ami_proto::{ClientConfig, Input};
use std::time::{Duration, Instant};

/// A server's client: actions time out after 5 s, no heartbeat within a test.
pub fn client_config() -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .action_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// Answers the Login and Ping blocks in `wire` the way Asterisk does, echoing each
/// ActionID (anything else gets no answer).
pub fn answer(wire: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(wire);
    let mut reply = String::new();
    for block in text.split("\r\n\r\n").filter(|b| !b.is_empty()) {
        let id = block
            .lines()
            .find_map(|l| l.strip_prefix("ActionID: "))
            .unwrap_or("");
        if block.starts_with("Action: Login") {
            reply += &format!(
                "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
            );
        } else if block.starts_with("Action: Ping") {
            reply += &format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n");
        }
    }
    reply.into_bytes()
}

/// Steps the fleet at `now`, connecting and logging in every server, until all are Ready
/// (panics after 100 rounds).
pub fn all_ready(f: &mut Fleet, now: Instant) {
    for _ in 0..100 {
        f.handle_timeout(now);
        loop {
            match f.poll_output() {
                FleetOutput::Wait(_) => break,
                FleetOutput::Connect(id) => {
                    f.handle_input(now, id, Input::Connected);
                    f.handle_input(
                        now,
                        id,
                        Input::Received(b"Asterisk Call Manager/11.0.0\r\n"),
                    );
                }
                _ => {}
            }
        }
        let ids: Vec<ServerId> = f.servers().map(|(id, _)| id).collect();
        for id in ids {
            let wire = f.transmit(id).to_vec();
            f.advance_transmit(id, wire.len());
            let reply = answer(&wire);
            if !reply.is_empty() {
                f.handle_input(now, id, Input::Received(&reply));
            }
        }
        if f.stats().by_status[2] == f.len() {
            return;
        }
    }
    panic!("not all ready: {:?}", f.stats().by_status);
}
