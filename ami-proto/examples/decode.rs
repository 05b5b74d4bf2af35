//! Decodes a raw AMI capture (every byte a server sent) and prints a summary.
//!
//! ```text
//! cargo run --release -p ami-proto --example decode [CAPTURE]
//! ```
//!
//! Without an argument it reads `../shared/fixtures/asterisk-22.10.1/event_stream_20s.raw`
//! from the workspace root. The capture is fed to the decoder in 64 KiB reads, as a socket
//! adapter would; the throughput is then measured over repeated passes.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

use ami_proto::{DecodeError, Decoder, DecoderLimits, DecoderStats, Frame, MessageKind};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Bytes per simulated socket read.
const READ_SIZE: usize = 64 << 10;
/// How long to keep re-decoding the capture for the throughput figure.
const TIMING_BUDGET: Duration = Duration::from_millis(500);

/// What one pass over the capture found.
#[derive(Default)]
struct Summary {
    banner: Option<String>,
    messages: u64,
    responses: u64,
    events: u64,
    actions: u64,
    others: u64,
    errors: Vec<String>,
    event_names: HashMap<String, u64>,
}

fn default_capture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("shared")
        .join("fixtures")
        .join("asterisk-22.10.1")
        .join("event_stream_20s.raw")
}

/// Feeds `data` in `READ_SIZE` reads and hands every frame to `on_frame`. Returns the
/// decoder's counters and the bytes left over (an unfinished message at the end).
fn decode(
    data: &[u8],
    mut on_frame: impl FnMut(Result<Frame, DecodeError>),
) -> (DecoderStats, usize) {
    let mut decoder = Decoder::new(DecoderLimits::default());
    for read in data.chunks(READ_SIZE) {
        let mut rest = read;
        while !rest.is_empty() {
            let taken = decoder.feed(rest);
            rest = &rest[taken..];
            while let Some(frame) = decoder.decode() {
                on_frame(frame);
            }
        }
    }
    (decoder.stats(), decoder.buffered())
}

fn summarise(data: &[u8]) -> (Summary, DecoderStats, usize) {
    let mut s = Summary::default();
    let (stats, unfinished) = decode(data, |frame| match frame {
        Ok(Frame::Banner(b)) => s.banner = Some(b.text().into_owned()),
        Ok(Frame::Message(m)) => {
            s.messages += 1;
            match m.kind() {
                MessageKind::Response => s.responses += 1,
                MessageKind::Event => {
                    s.events += 1;
                    let name = m.event().unwrap_or("<not UTF-8>").to_string();
                    *s.event_names.entry(name).or_default() += 1;
                }
                MessageKind::Action => s.actions += 1,
                _ => s.others += 1,
            }
        }
        Err(e) => s.errors.push(e.to_string()),
    });
    (s, stats, unfinished)
}

/// Decodes the capture repeatedly for about `TIMING_BUDGET`; returns passes and time taken.
fn time_decode(data: &[u8]) -> (u32, Duration) {
    let start = Instant::now();
    let mut passes = 0u32;
    while passes == 0 || start.elapsed() < TIMING_BUDGET {
        let counts = decode(data, |frame| drop(std::hint::black_box(frame)));
        std::hint::black_box(counts);
        passes += 1;
    }
    (passes, start.elapsed())
}

/// Renders the summary; writing to a `String` cannot fail, so `fmt::Error` never occurs.
fn report(
    path: &Path,
    data: &[u8],
    summary: &Summary,
    stats: &DecoderStats,
    unfinished: usize,
    (passes, elapsed): (u32, Duration),
) -> Result<String, fmt::Error> {
    let mut out = String::new();
    let shown = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    writeln!(out, "capture:   {} ({} bytes)", shown.display(), data.len())?;
    match &summary.banner {
        Some(banner) => writeln!(out, "banner:    {banner}")?,
        None => writeln!(out, "banner:    (none)")?,
    }
    writeln!(
        out,
        "messages:  {} ({} responses, {} events, {} actions, {} other)",
        summary.messages, summary.responses, summary.events, summary.actions, summary.others
    )?;
    if !summary.errors.is_empty() {
        writeln!(out, "errors:    {}", summary.errors.len())?;
        for e in summary.errors.iter().take(5) {
            writeln!(out, "           {e}")?;
        }
    }

    let mut names: Vec<(&String, &u64)> = summary.event_names.iter().collect();
    names.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    writeln!(
        out,
        "top events ({} distinct names):",
        summary.event_names.len()
    )?;
    for (name, count) in names.iter().take(10) {
        writeln!(out, "  {count:>6}  {name}")?;
    }

    writeln!(out, "decoder stats:")?;
    writeln!(out, "  bytes fed           {}", stats.bytes)?;
    writeln!(out, "  messages            {}", stats.messages)?;
    writeln!(out, "  banners             {}", stats.banners)?;
    writeln!(out, "  stray blank lines   {}", stats.stray_blank_lines)?;
    writeln!(out, "  lines too long      {}", stats.lines_too_long)?;
    writeln!(out, "  messages too large  {}", stats.messages_too_large)?;
    writeln!(out, "  too many fields     {}", stats.too_many_fields)?;
    writeln!(out, "  discarded bytes     {}", stats.discarded_bytes)?;
    writeln!(out, "  unfinished at end   {unfinished}")?;

    let secs = elapsed.as_secs_f64();
    let bytes = data.len() as f64 * f64::from(passes);
    let messages = stats.messages as f64 * f64::from(passes);
    writeln!(
        out,
        "throughput: {:.1} MB/s, {:.0} messages/s ({passes} passes in {:.3} s, {} KiB reads{})",
        bytes / secs / 1e6,
        messages / secs,
        secs,
        READ_SIZE >> 10,
        if cfg!(debug_assertions) {
            "; debug build, use --release"
        } else {
            ""
        }
    )?;
    Ok(out)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(default_capture);
    if args.next().is_some() {
        eprintln!("usage: decode [CAPTURE.raw]");
        return ExitCode::FAILURE;
    }
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };

    let (summary, stats, unfinished) = summarise(&data);
    let timing = time_decode(&data);
    let text = match report(&path, &data, &summary, &stats, unfinished, timing) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: formatting the summary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        eprintln!("error: cannot write to stdout: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
