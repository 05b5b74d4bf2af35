//! Shared set-up for the fuzz targets: the decoder targets' input layout (below) and, in
//! [`sim`], a simulated runtime for the `ami-async` targets.
//!
//! The last [`CONFIG_LEN`] bytes of a fuzz input choose the decoder limits, whether a banner is
//! expected, and the pattern of read sizes; everything before them is the wire data. Putting
//! the configuration at the end keeps a raw capture useful as a seed: its banner and first
//! messages stay intact, and only its final blank line is taken as configuration.
//!
//! Panics and assertion failures here are the point: they are what the fuzzer reports.

use ami_proto::{DecodeError, Decoder, DecoderLimits, Frame};

pub mod sim;

/// Decodes what a client wrote as a server reads it, adding each action's ActionID and name
/// to `owed` (what the server owes an answer to); with `trace`, each one on stderr.
pub fn read_actions(
    server: &mut Decoder,
    mut bytes: &[u8],
    trace: bool,
    owed: &mut std::collections::VecDeque<(String, String)>,
) {
    while !bytes.is_empty() {
        let n = server.feed(bytes);
        bytes = &bytes[n..];
        while let Some(frame) = server.decode() {
            if let Ok(Frame::Message(m)) = frame {
                if trace {
                    eprintln!("  server reads {m:?}");
                }
                let id = m.action_id().unwrap_or("").to_string();
                let name = m.action().unwrap_or("").to_string();
                owed.push_back((id, name));
            }
        }
    }
}

/// Counts one completion of `key` in `counts`: it must have been sent (a key in `counts`)
/// and not have completed before.
pub fn complete_once<K>(counts: &mut std::collections::HashMap<K, u32>, key: &K)
where
    K: std::hash::Hash + Eq + std::fmt::Debug,
{
    let Some(n) = counts.get_mut(key) else {
        panic!("{key:?} completed but was never sent there");
    };
    *n += 1;
    assert_eq!(*n, 1, "{key:?} completed twice");
}

/// A fuzz input read one byte at a time, for the targets that take their steps from it;
/// zeros once it is used up.
pub struct Cursor<'a>(pub &'a [u8]);

impl Cursor<'_> {
    /// The next byte (0 once the input is used up).
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `n` bytes, or what is left.
    pub fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// Nothing left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Bytes at the end of an input that configure the run.
pub const CONFIG_LEN: usize = 4;

/// How one run is set up.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Small limits, so every limit is hit often.
    pub limits: DecoderLimits,
    /// Expect a banner line first (client side) or not (server side).
    pub banner: bool,
    /// Read sizes, cycled; see [`chunk_len`].
    pub pattern: [u8; 3],
}

/// Splits an input into its set-up and its wire data; `None` when it is too short or picks
/// limits that [`DecoderLimits`] refuses.
pub fn split_input(data: &[u8]) -> Option<(Setup, &[u8])> {
    let at = data.len().checked_sub(CONFIG_LEN)?;
    let (wire, cfg) = data.split_at(at);
    let max_line_len = [8, 16, 32, 64, 100, 200, 500, 1024][usize::from(cfg[0] & 7)];
    let max_message_len = max_line_len * [1, 2, 4, 8][usize::from((cfg[0] >> 3) & 3)];
    let max_fields = [1, 2, 4, 16][usize::from((cfg[0] >> 5) & 3)];
    // The smallest cap the builder allows, or a little more.
    let slack = [0, 1, 64][usize::from(cfg[1] % 3)];
    let limits = DecoderLimits::builder()
        .max_line_len(max_line_len)
        .max_message_len(max_message_len)
        .max_fields(max_fields)
        .buffer_cap(max_message_len + 2 + slack)
        .build()
        .ok()?;
    let setup = Setup {
        limits,
        banner: cfg[0] & 0x80 != 0,
        pattern: [cfg[1], cfg[2], cfg[3]],
    };
    Some((setup, wire))
}

/// The read size one pattern byte stands for: 1 to 16 bytes, multiples of 4 up to 452, or
/// everything that is left.
pub fn chunk_len(b: u8) -> usize {
    match b {
        0..=127 => 1 + usize::from(b % 16),
        128..=239 => 4 * usize::from(b - 127),
        240..=255 => usize::MAX,
    }
}

/// A fresh decoder for `setup`.
pub fn decoder(setup: &Setup) -> Decoder {
    if setup.banner {
        Decoder::new(setup.limits)
    } else {
        Decoder::without_banner(setup.limits)
    }
}

/// Feeds `wire` to `d` in reads of the sizes `sizes` yields (cycled until the input is used up),
/// draining every frame after each feed, and checks the decoder's promises on the way:
/// the buffer never exceeds its cap, a drained decoder always has room, and every message
/// respects the limits. Returns every frame in order.
pub fn drive(
    d: &mut Decoder,
    wire: &[u8],
    mut sizes: impl FnMut() -> usize,
) -> Vec<Result<Frame, DecodeError>> {
    let limits = *d.limits();
    let cap = limits.buffer_cap();
    let mut out = Vec::new();
    let mut rest = wire;
    let mut yielded_bytes = 0u64;
    while !rest.is_empty() {
        let take = sizes().clamp(1, rest.len());
        let mut chunk = &rest[..take];
        rest = &rest[take..];
        while !chunk.is_empty() {
            let n = d.feed(chunk);
            assert!(d.buffered() <= cap, "buffered {} > cap {cap}", d.buffered());
            assert!(n > 0, "no room after a full drain: {d:?}");
            chunk = &chunk[n..];
            while let Some(frame) = d.decode() {
                assert!(d.buffered() <= cap, "buffered {} > cap {cap}", d.buffered());
                if let Ok(Frame::Message(m)) = &frame {
                    assert!(!m.is_empty(), "empty message");
                    assert!(m.len() <= limits.max_fields(), "{} fields", m.len());
                    let bytes = m.wire_bytes();
                    assert!(
                        bytes.len() <= limits.max_message_len(),
                        "{} bytes",
                        bytes.len()
                    );
                    assert!(bytes.ends_with(b"\n"), "message does not end a line");
                    for f in m.fields() {
                        assert!(!f.key.contains(&b'\n') && !f.value.as_bytes().contains(&b'\n'));
                        assert!(f.key.len() <= limits.max_line_len());
                    }
                    yielded_bytes += bytes.len() as u64;
                }
                if let Ok(Frame::Banner(b)) = &frame {
                    assert!(!b.as_bytes().contains(&b'\n'));
                    yielded_bytes += b.as_bytes().len() as u64;
                }
                out.push(frame);
            }
        }
    }
    let stats = d.stats();
    assert_eq!(stats.bytes, wire.len() as u64);
    assert!(
        yielded_bytes + stats.discarded_bytes + d.buffered() as u64 <= stats.bytes,
        "more bytes accounted for than fed: {stats:?}"
    );
    out
}

/// Cycles through a set-up's read-size pattern.
pub fn pattern_sizes(setup: &Setup) -> impl FnMut() -> usize {
    let pattern = setup.pattern;
    let mut i = 0;
    move || {
        let len = chunk_len(pattern[i % pattern.len()]);
        i += 1;
        len
    }
}
