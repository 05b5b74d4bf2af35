//! The decoder promises that how input is split into reads does not change what comes out:
//! frames (errors included) and counters from reads sized by the input must equal those from
//! one big read.
//!
//! One difference is allowed: a lone CR at the end of a discarded line may be dropped at once
//! or kept until the next read shows whether an LF follows it, so discarded and still-buffered
//! bytes are compared as a sum.
#![no_main]

use ami_fuzz::{decoder, drive, pattern_sizes, split_input};
use ami_proto::{Decoder, DecoderStats};
use libfuzzer_sys::fuzz_target;

/// The counters, with bytes still buffered counted as discarded.
fn counters(d: &Decoder) -> DecoderStats {
    let mut s = d.stats();
    s.discarded_bytes += d.buffered() as u64;
    s
}

fuzz_target!(|data: &[u8]| {
    let Some((setup, wire)) = split_input(data) else {
        return;
    };
    let mut whole = decoder(&setup);
    let expected = drive(&mut whole, wire, || usize::MAX);
    let mut split = decoder(&setup);
    let got = drive(&mut split, wire, pattern_sizes(&setup));
    assert_eq!(got, expected, "frames depend on read sizes");
    assert_eq!(
        counters(&split),
        counters(&whole),
        "counters depend on read sizes"
    );
});
