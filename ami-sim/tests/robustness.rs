//! Property tests: whatever a client sends, the simulator neither panics nor emits bytes a
//! tolerant AMI decoder rejects, and virtual time always moves on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::{CallRequest, SimConfig, SimServer};
use proptest::prelude::*;
use std::time::{Duration, Instant};

const ACTIONS: [&str; 14] = [
    "Ping",
    "Events",
    "Filter",
    "Command",
    "Getvar",
    "Setvar",
    "Status",
    "CoreShowChannels",
    "QueueStatus",
    "UserEvent",
    "Hangup",
    "Originate",
    "Challenge",
    "Login",
];
const KEYS: [&str; 14] = [
    "ActionID",
    "Channel",
    "Variable",
    "Value",
    "EventMask",
    "Filter",
    "Operation",
    "Command",
    "Application",
    "Data",
    "Async",
    "Exten",
    "Timeout",
    "Priority",
];

fn message() -> impl Strategy<Value = Vec<u8>> {
    (
        0..ACTIONS.len(),
        proptest::collection::vec((0..KEYS.len(), "[ -~]{0,40}"), 0..6),
    )
        .prop_map(|(a, fields)| {
            let mut m = format!("Action: {}\r\n", ACTIONS[a]).into_bytes();
            for (k, v) in fields {
                m.extend_from_slice(format!("{}: {v}\r\n", KEYS[k]).as_bytes());
            }
            m.extend_from_slice(b"\r\n");
            m
        })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        message(),
        proptest::collection::vec(any::<u8>(), 0..300),
        // Long runs of a few interesting bytes: over-long lines, stray line ends, NULs.
        (proptest::collection::vec(0usize..5, 0..40), 1usize..400).prop_map(|(picks, run)| {
            let alphabet = [b'\r', b'\n', b'x', b':', 0u8];
            picks
                .iter()
                .flat_map(|&p| std::iter::repeat_n(alphabet[p], 1 + run % 97))
                .collect()
        }),
    ]
}

fn decodes_cleanly(bytes: &[u8]) {
    let mut d = ami_proto::Decoder::new(ami_proto::DecoderLimits::default());
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = d.feed(rest);
        rest = &rest[n..];
        while let Some(f) = d.decode() {
            assert!(f.is_ok(), "{f:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_client_input_is_handled(
        inputs in proptest::collection::vec((input(), 1usize..64, 0u64..400), 1..25),
        seed in any::<u64>(),
    ) {
        let cfg = SimConfig { seed, ..SimConfig::default() };
        let t0 = Instant::now();
        let mut sim = SimServer::new(cfg, t0);
        let s = sim.accept(t0);
        sim.receive(s, t0, b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\n\r\n");
        sim.originate_call(t0, CallRequest::new("Local/hold@ami-test", 60)).unwrap();
        let mut now = t0;
        let mut out = Vec::new();
        for (bytes, chunk, gap) in inputs {
            for piece in bytes.chunks(chunk) {
                sim.receive(s, now, piece);
            }
            now += Duration::from_millis(gap);
            sim.handle_timeout(now);
            let data = sim.transmit(s).to_vec();
            sim.advance_transmit(s, data.len());
            out.extend_from_slice(&data);
            if let Some(t) = sim.poll_timeout() {
                prop_assert!(t >= t0);
            }
        }
        sim.handle_timeout(now + Duration::from_secs(400));
        let data = sim.transmit(s).to_vec();
        out.extend_from_slice(&data);
        decodes_cleanly(&out);
    }
}
