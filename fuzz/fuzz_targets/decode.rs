//! Arbitrary bytes, in reads whose sizes come from the input, through a decoder with small
//! limits: no panic, the buffer never exceeds its cap, yielded messages respect the limits.
#![no_main]

use ami_fuzz::{decoder, drive, pattern_sizes, split_input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((setup, wire)) = split_input(data) else {
        return;
    };
    let mut d = decoder(&setup);
    drive(&mut d, wire, pattern_sizes(&setup));
    d.reset();
    assert_eq!(d.buffered(), 0);
});
