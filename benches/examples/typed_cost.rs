//! The typed layer's cost next to plain decoding, as the minimum of many interleaved runs:
//! robust when other work shares the machine (criterion's mean is not).
//!
//! ```text
//! cargo run --release -p ami-benches --example typed_cost
//! ```
//!
//! Prints ns per message for: decoding the capture of the decode bench; decoding and
//! converting each message to its typed `Event` (the 30 % target); and decoding, converting
//! and reading every field through its declared type (what `ami decode --typed` does).

use ami_benches::{decode_capture, decode_chunked_with, decode_typed, load_fixture, EVENT_STREAM};
use ami_proto::{Decoder, DecoderLimits, Frame};
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Decodes, converts, and reads every field of every event.
fn decode_typed_read_all(data: &[u8]) -> u64 {
    let mut decoder = Decoder::new(DecoderLimits::default());
    let mut fields = 0u64;
    decode_chunked_with(&mut decoder, data, 65536, |f| {
        if let Ok(Frame::Message(m)) = f {
            for (_, reading) in ami_types::Event::from_message(&m).read_fields() {
                black_box(reading);
                fields += 1;
            }
        }
    });
    fields
}

/// A named way of going through the capture; returns a count so the work is not optimised out.
type Run<'a> = (&'a str, &'a dyn Fn(&[u8]) -> u64);

fn main() -> ExitCode {
    let data = match load_fixture(EVENT_STREAM) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("typed_cost: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runs: [Run<'_>; 3] = [
        ("decode", &|d| decode_capture(d, 65536)),
        ("decode + typed Event", &|d| decode_typed(d, 65536)),
        ("decode + typed + read every field", &decode_typed_read_all),
    ];
    let mut best = [Duration::MAX; 3];
    for _ in 0..400 {
        for (i, (_, run)) in runs.iter().enumerate() {
            let t = Instant::now();
            black_box(run(black_box(&data)));
            best[i] = best[i].min(t.elapsed());
        }
    }
    let messages = decode_capture(&data, data.len()) as f64;
    for (i, (name, _)) in runs.iter().enumerate() {
        let ns = best[i].as_nanos() as f64 / messages;
        let extra = (best[i].as_secs_f64() / best[0].as_secs_f64() - 1.0) * 100.0;
        println!("{name:<36} {ns:>6.0} ns/message  (+{extra:.1} % over decode)");
    }
    ExitCode::SUCCESS
}
