//! The cost of the typed layer: decoding the capture of the decode bench, then converting
//! every message to its typed [`ami_types::Event`], next to decoding alone.
//!
//! ```text
//! cargo bench -p ami-benches --bench typed -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! `decode` is the same work as the decode bench's `decoder/65536`; `decode_typed` adds the
//! conversion; the difference is what typing costs per message.

use ami_benches::{decode_capture, decode_typed, load_fixture, EVENT_STREAM};
use criterion::{black_box, criterion_main, Criterion, Throughput};

fn typed(c: &mut Criterion) {
    let data = match load_fixture(EVENT_STREAM) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("typed bench: {e} (is ../shared beside the repository?)");
            std::process::exit(1);
        }
    };
    let messages = decode_capture(&data, data.len());
    let mut group = c.benchmark_group("typed_messages");
    group.throughput(Throughput::Elements(messages));
    group.bench_function("decode", |b| {
        b.iter(|| decode_capture(black_box(&data), 65536));
    });
    group.bench_function("decode_typed", |b| {
        b.iter(|| decode_typed(black_box(&data), 65536));
    });
    group.finish();
}

/// Private, so the `pub fn` that `criterion_group!` generates needs no doc comment.
mod group {
    criterion::criterion_group!(benches, super::typed);
}
criterion_main!(group::benches);
