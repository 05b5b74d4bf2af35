//! Helpers shared by the benchmarks in `benches/benches/`: fixture loading, the decode loop
//! under test, and a memchr-only baseline that shows how close the decoder gets to the cost
//! of merely finding line and field boundaries.

use ami_proto::{Action, ActionId, DecodeError, Decoder, DecoderLimits, Frame, InvalidActionId};
use std::hint::black_box;
use std::io;
use std::path::PathBuf;

/// The Asterisk version whose captures the benchmarks read.
pub const FIXTURE_DIR: &str = "asterisk-22.10.1";

/// The capture used for decode throughput: 20 Originates and 20 s of every event.
pub const EVENT_STREAM: &str = "event_stream_20s.raw";

/// Where a fixture lives: `../shared/fixtures/asterisk-22.10.1/NAME` from the repo root.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("shared")
        .join("fixtures")
        .join(FIXTURE_DIR)
        .join(name)
}

/// Reads a fixture; the error names the path that could not be read.
pub fn load_fixture(name: &str) -> io::Result<Vec<u8>> {
    let path = fixture_path(name);
    std::fs::read(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read fixture {}: {e}", path.display()),
        )
    })
}

/// Feeds `data` to `decoder` in pieces of `chunk` bytes, draining every frame after each
/// feed, exactly as an I/O adapter would after each read. Returns the frames seen (banners,
/// messages and errors).
pub fn decode_chunked(decoder: &mut Decoder, data: &[u8], chunk: usize) -> u64 {
    decode_chunked_with(decoder, data, chunk, |f| {
        let _ = black_box(f);
    })
}

/// [`decode_chunked`], handing each frame to `on_frame` (what a consumer does with it).
pub fn decode_chunked_with(
    decoder: &mut Decoder,
    data: &[u8],
    chunk: usize,
    mut on_frame: impl FnMut(Result<Frame, DecodeError>),
) -> u64 {
    let mut frames = 0u64;
    for piece in data.chunks(chunk.max(1)) {
        let mut rest = piece;
        while !rest.is_empty() {
            let n = decoder.feed(rest);
            rest = &rest[n..];
            while let Some(f) = decoder.decode() {
                on_frame(f);
                frames += 1;
            }
        }
    }
    frames
}

/// Decodes a whole capture in `chunk`-byte reads and converts every message to its typed
/// event view ([`ami_types::Event`]); returns the messages that are typed events.
pub fn decode_typed(data: &[u8], chunk: usize) -> u64 {
    let mut decoder = Decoder::new(DecoderLimits::default());
    let mut typed = 0u64;
    decode_chunked_with(&mut decoder, data, chunk, |f| {
        if let Ok(Frame::Message(m)) = f {
            let event = ami_types::Event::from_message(&m);
            typed += u64::from(event.spec().is_some());
            black_box(event);
        }
    });
    typed
}

/// Decodes a whole capture with default limits in `chunk`-byte reads; returns messages seen.
pub fn decode_capture(data: &[u8], chunk: usize) -> u64 {
    let mut decoder = Decoder::new(DecoderLimits::default());
    decode_chunked(&mut decoder, data, chunk);
    decoder.stats().messages
}

/// What [`memchr_split`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitCounts {
    /// Non-empty runs of lines closed by an empty line.
    pub messages: u64,
    /// Lines inside messages.
    pub lines: u64,
    /// Lines that hold a `:`.
    pub fields: u64,
}

/// The baseline: finds every LF with memchr, treats an empty line (bare LF or CRLF) as the end
/// of a message, and finds the `:` of each line. It allocates nothing and keeps nothing, so it
/// is a floor for any decoder that must look at every byte. A leading banner line is skipped.
/// The LF searcher is picked once (memchr's AVX2 searcher where the CPU has it) rather than
/// paying `memchr::memchr`'s dispatch at every line. The decoder's own line-end search (a
/// 64-byte bitmask kept across lines) is faster than one call per line, so since then this
/// is a reference point rather than a strict floor.
pub fn memchr_split(data: &[u8]) -> SplitCounts {
    #[cfg(target_arch = "x86_64")]
    let avx2 = memchr::arch::x86_64::avx2::memchr::One::new(b'\n');
    let find_lf = |haystack: &[u8]| {
        #[cfg(target_arch = "x86_64")]
        if let Some(one) = &avx2 {
            return one.find(haystack);
        }
        memchr::memchr(b'\n', haystack)
    };
    let mut counts = SplitCounts::default();
    let mut pos = 0;
    if data.starts_with(ami_proto::BANNER_PREFIX.as_bytes()) {
        match memchr::memchr(b'\n', data) {
            Some(lf) => pos = lf + 1,
            None => return counts,
        }
    }
    let mut in_message = false;
    while let Some(offset) = find_lf(&data[pos..]) {
        let lf = pos + offset;
        let mut line = &data[pos..lf];
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        if line.is_empty() {
            if in_message {
                counts.messages += 1;
                in_message = false;
            }
        } else {
            in_message = true;
            counts.lines += 1;
            if let Some(colon) = memchr::memchr(b':', line) {
                black_box(colon);
                counts.fields += 1;
            }
        }
        pos = lf + 1;
    }
    counts
}

/// A typical asynchronous Originate, as a dialer would send it.
pub fn originate_action() -> Action {
    Action::new("Originate")
        .field("Channel", "PJSIP/1001@trunk-provider")
        .field("Context", "from-internal")
        .field("Exten", "5551234567")
        .field("Priority", "1")
        .field("Timeout", "30000")
        .field("CallerID", "\"Sales Desk\" <5550001111>")
        .field("Async", "true")
        .field("Variable", "CAMPAIGN=spring-2026")
        .field("Variable", "LEAD_ID=8f3a91c2")
        .field("Variable", "__TRANSFER_CONTEXT=from-internal-xfer")
        .field("Codecs", "ulaw,alaw,g722")
}

/// The ActionID used with [`originate_action`].
pub fn originate_action_id() -> Result<ActionId, InvalidActionId> {
    ActionId::new("dialer-000042")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_and_decoder_agree_on_the_capture() {
        let data = load_fixture(EVENT_STREAM).unwrap();
        let whole = decode_capture(&data, data.len());
        assert!(whole > 100, "capture has {whole} messages");
        for chunk in [1, 64, 65536] {
            assert_eq!(decode_capture(&data, chunk), whole, "chunk {chunk}");
        }
        assert_eq!(memchr_split(&data).messages, whole);
    }

    #[test]
    fn typed_conversion_types_every_event_of_the_capture() {
        let data = load_fixture(EVENT_STREAM).unwrap();
        let typed = decode_typed(&data, 65536);
        let events = data.windows(7).filter(|w| w == b"\nEvent:").count() as u64;
        assert_eq!(typed, events);
    }

    #[test]
    fn baseline_counts_messages_and_fields() {
        let wire = b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nPing: Pong\r\n\r\n\r\nEvent: X\nraw\n\n";
        assert_eq!(
            memchr_split(wire),
            SplitCounts {
                messages: 2,
                lines: 4,
                fields: 3
            }
        );
    }

    #[test]
    fn originate_encodes() {
        let mut out = Vec::new();
        let id = originate_action_id().unwrap();
        let n = originate_action().encode(Some(&id), &mut out).unwrap();
        assert_eq!(n, out.len());
        assert!(out.starts_with(b"Action: Originate\r\nActionID: dialer-000042\r\n"));
    }
}
