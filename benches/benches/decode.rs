//! Decode throughput over a real Asterisk 22 capture, against a memchr-only baseline, and the
//! cost of encoding an Originate.
//!
//! ```text
//! cargo bench -p ami-benches --bench decode -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Both groups run the same four benchmarks: the decoder fed in reads of 1, 64 and 65536 bytes,
//! and `memchr_baseline`, which only finds line ends, message ends and colons. `decode_bytes`
//! reports bytes per second, `decode_messages` messages per second.

use ami_benches::{
    decode_capture, load_fixture, memchr_split, originate_action, originate_action_id, EVENT_STREAM,
};
use criterion::{black_box, criterion_main, BenchmarkId, Criterion, Throughput};

/// Read sizes: a trickle, a small socket read, a large socket read.
const CHUNKS: [usize; 3] = [1, 64, 65536];

fn load_or_exit() -> Vec<u8> {
    match load_fixture(EVENT_STREAM) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("decode bench: {e} (is ../shared beside the repository?)");
            std::process::exit(1);
        }
    }
}

fn decode(c: &mut Criterion) {
    let data = load_or_exit();
    let messages = decode_capture(&data, data.len());
    for (group_name, throughput) in [
        ("decode_bytes", Throughput::Bytes(data.len() as u64)),
        ("decode_messages", Throughput::Elements(messages)),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(throughput);
        for chunk in CHUNKS {
            group.bench_with_input(BenchmarkId::new("decoder", chunk), &chunk, |b, &chunk| {
                b.iter(|| decode_capture(black_box(&data), chunk));
            });
        }
        group.bench_function("memchr_baseline", |b| {
            b.iter(|| memchr_split(black_box(&data)));
        });
        group.finish();
    }
}

fn encode(c: &mut Criterion) {
    let action = originate_action();
    let id = match originate_action_id() {
        Ok(id) => id,
        Err(e) => {
            eprintln!("encode bench: {e}");
            std::process::exit(1);
        }
    };
    let mut out = Vec::with_capacity(1024);
    let len = match action.encode(Some(&id), &mut out) {
        Ok(len) => len,
        Err(e) => {
            eprintln!("encode bench: {e}");
            std::process::exit(1);
        }
    };
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function("originate", |b| {
        b.iter(|| {
            out.clear();
            black_box(black_box(&action).encode(Some(&id), &mut out))
        });
    });
    group.finish();
}

/// Private, so the `pub fn` that `criterion_group!` generates needs no doc comment.
mod group {
    criterion::criterion_group!(benches, super::decode, super::encode);
}
criterion_main!(group::benches);
