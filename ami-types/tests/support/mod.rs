//! Shared by the test binaries: one wire message decoded, and a real `ami_proto::Client`
//! against a scripted server for the tests that need an action's outcome as the client
//! resolves it.
// Each test binary uses only some of these.
#![allow(dead_code)]

use ami_proto::{
    Action, Client, ClientConfig, Decoder, DecoderLimits, Frame, Input, Message, Notice, Outcome,
    Output,
};
use std::time::{Duration, Instant};

/// The one message `wire` holds, as the decoder hands it out (no banner).
pub fn decode(wire: &[u8]) -> Message {
    let mut decoder = Decoder::without_banner(DecoderLimits::default());
    assert_eq!(decoder.feed(wire), wire.len());
    match decoder.decode() {
        Some(Ok(Frame::Message(m))) => m,
        other => panic!("{wire:?} decoded as {other:?}"),
    }
}

/// What the scripted server does after answering the action.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Keeps the connection.
    Stays,
    /// Closes the connection.
    Closes,
}

/// Sends `action` through a client whose server accepts the login and answers the action
/// with `reply(action_id)`, then does `then`: the action's outcome.
pub fn outcome(action: Action, reply: impl Fn(&str) -> String, then: Then) -> Outcome {
    let config = ClientConfig::builder("admin", "amp111")
        .seed(1)
        .build()
        .unwrap();
    let mut now = Instant::now();
    let mut client = Client::new(config, now);
    let id = client.send_action(now, action).unwrap();
    let mut closed = false;
    for _ in 0..8 {
        loop {
            match client.poll_output() {
                Output::Connect => {
                    client.handle_input(now, Input::Connected);
                    client.handle_input(now, Input::Received(b"Asterisk Call Manager/11.0.0\r\n"));
                }
                Output::Notice(Notice::Completed { id: done, outcome }) if done == id => {
                    return outcome
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
        if closed {
            break;
        }
        let written = String::from_utf8(client.transmit().to_vec()).unwrap();
        client.advance_transmit(written.len());
        let mut answer = String::new();
        let mut answered = false;
        for block in written.split("\r\n\r\n").filter(|b| !b.is_empty()) {
            let aid = block
                .lines()
                .find_map(|l| l.strip_prefix("ActionID: "))
                .unwrap_or("");
            if block.starts_with("Action: Login") {
                answer += &format!("Response: Success\r\nActionID: {aid}\r\nMessage: Authentication accepted\r\n\r\n");
            } else {
                answer += &reply(aid);
                answered = true;
            }
        }
        now += Duration::from_millis(1);
        client.handle_input(now, Input::Received(answer.as_bytes()));
        if answered && then == Then::Closes {
            client.handle_input(now, Input::Eof);
            closed = true;
        }
    }
    panic!("no outcome");
}
