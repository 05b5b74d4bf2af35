//! The incremental, bounded AMI decoder.
//!
//! Bytes go in with [`Decoder::feed`] in chunks of any size, split anywhere; [`Frame`]s come
//! out of [`Decoder::decode`]. The scanner remembers where it stopped, so a message trickled
//! in one byte at a time costs O(n) in total, never a rescan from the start.

use super::limits::DecoderLimits;
use super::message::{FieldSpan, Message, Spans, SPAN_LEN};
use super::readbuf::ReadBuf;
use bytes::Bytes;
use std::borrow::Cow;
use std::fmt;
use thiserror::Error;

/// The line that ends a legacy (Asterisk 13 and older) `Response: Follows` Command output.
const END_COMMAND: &[u8] = b"--END COMMAND--";

/// Finds line ends. Lines are short (about 21 bytes on average in the captures), so rather
/// than one `memchr` call per line (6-7 ns each, most of it the call's setup and its
/// mispredicted exit), the LFs of 64 bytes at a time are found in one bitmask (four 16-byte
/// compares, `wide`'s safe SIMD) that then serves the three or so lines in it: about 2 ns
/// a line. The mask is kept only while the buffer's front has not moved (a message taken or
/// bytes dropped), since it is indexed by position in the buffer.
#[derive(Debug, Clone, Copy, Default)]
struct LineEnds {
    /// LFs of `buf[base..base + 64]` not yet passed, one bit per byte.
    mask: u64,
    base: usize,
    /// The buffer's [`ReadBuf::dropped`] when the mask was made; `None`: no mask.
    front: Option<u64>,
}

/// Bytes covered by one mask.
const MASK_BYTES: usize = 64;

impl LineEnds {
    /// The position of the first LF in `buf[from..]`; `front` is the buffer's
    /// [`ReadBuf::dropped`].
    #[inline]
    fn find(&mut self, buf: &[u8], front: u64, from: usize) -> Option<usize> {
        if self.front == Some(front) && from >= self.base && from < self.base + MASK_BYTES {
            let ahead = self.mask & (u64::MAX << (from - self.base));
            if ahead != 0 {
                return Some(self.base + ahead.trailing_zeros() as usize);
            }
            // None left in this block: the next one starts right after it.
            let next = self.base + MASK_BYTES;
            return self.scan_from(buf, front, next);
        }
        self.scan_from(buf, front, from)
    }

    /// Masks 64-byte blocks from `from` until one holds an LF; the tail of the buffer
    /// (under 64 bytes, still being filled) is searched without keeping a mask.
    fn scan_from(&mut self, buf: &[u8], front: u64, mut from: usize) -> Option<usize> {
        while let Some(block) = buf.get(from..from + MASK_BYTES) {
            let mask = lf_mask(block);
            if mask != 0 {
                *self = LineEnds {
                    mask,
                    base: from,
                    front: Some(front),
                };
                return Some(from + mask.trailing_zeros() as usize);
            }
            from += MASK_BYTES;
        }
        self.front = None;
        // Under 64 bytes: one byte at a time costs less than a call's setup.
        let tail = buf.get(from..)?;
        tail.iter().position(|&b| b == b'\n').map(|i| from + i)
    }
}

/// Where the text of the line `buf[start..=newline]` ends: before its LF, and before a CR
/// right in front of it.
#[inline]
pub(crate) fn content_end(buf: &[u8], start: usize, newline: usize) -> usize {
    if newline > start && buf[newline - 1] == b'\r' {
        newline - 1
    } else {
        newline
    }
}

/// Lines of an event that the reader splits into fields before it defers the rest (see
/// [`Message::deferred`]). The consumer's second walk costs a pass over all of the
/// message's bytes, so deferring pays only when there are many lines to leave to it: on
/// `stream_rate`'s events of 500 bytes (`tokio-recv`, three alternated pairs each), deferring
/// from the first line made 20-field events 13-20 % faster and 5-line events 7-12 % slower.
const SPLIT_BEFORE_DEFERRING: usize = 8;

/// The next header line of a message, starting at `start` (no LF in `buf[start..*scan]`):
/// its LF and where its text ends when it is complete, not blank, and within the line and
/// message limits. Otherwise where the header loops stop: at the LF of a line they cannot
/// take (the general path handles it), or `None` with `*scan` at the end when no LF is
/// buffered yet.
#[inline(always)]
fn header_line(
    lf: &mut LineEnds,
    buf: &[u8],
    front: u64,
    start: usize,
    scan: &mut usize,
    max_line: usize,
    max_message: usize,
) -> Result<(usize, usize), Option<usize>> {
    let Some(newline) = lf.find(buf, front, *scan) else {
        *scan = buf.len();
        return Err(None);
    };
    let line_end = content_end(buf, start, newline);
    if line_end <= start || line_end - start > max_line || newline + 1 > max_message {
        return Err(Some(newline));
    }
    Ok((newline, line_end))
}

/// Whether `line` is an `ActionID` field: its key (up to the first colon) is `ActionID`.
#[inline]
fn is_action_id_line(line: &[u8]) -> bool {
    line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"ActionID:")
}

/// One bit per LF in a 64-byte block.
#[inline]
pub(crate) fn lf_mask(block: &[u8]) -> u64 {
    let lf = wide::u8x16::splat(b'\n');
    let mut mask = 0u64;
    for (i, chunk) in block.chunks_exact(16).take(4).enumerate() {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(chunk);
        let bits = wide::u8x16::new(bytes).cmp_eq(lf).move_mask() as u32 as u64 & 0xffff;
        mask |= bits << (i * 16);
    }
    mask
}

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The one-line greeting the server sends on connect, before any message.
    Banner(Banner),
    /// A complete message.
    Message(Message),
}

/// The server's greeting line, e.g. `Asterisk Call Manager/11.0.0`.
#[derive(Clone, PartialEq, Eq)]
pub struct Banner {
    line: Bytes,
}

/// The prefix Asterisk puts before the AMI version in its banner.
pub const BANNER_PREFIX: &str = "Asterisk Call Manager/";

impl Banner {
    /// The whole line, without its line ending.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.line)
    }
    /// The line's bytes, without its line ending.
    pub fn as_bytes(&self) -> &[u8] {
        &self.line
    }
    /// The AMI version (`11.0.0` on Asterisk 22), if this is an Asterisk banner.
    pub fn version(&self) -> Option<&str> {
        std::str::from_utf8(&self.line)
            .ok()?
            .strip_prefix(BANNER_PREFIX)
    }
}

impl fmt::Debug for Banner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Banner").field(&self.text()).finish()
    }
}

/// Input that broke a limit. Each is counted in [`DecoderStats`]; the decoder has already
/// dropped the offending message and resynchronises at the next message boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A line longer than [`DecoderLimits::max_line_len`].
    #[error("line longer than {limit} bytes; message dropped")]
    LineTooLong {
        /// The configured limit.
        limit: usize,
    },
    /// A message larger than [`DecoderLimits::max_message_len`].
    #[error("message larger than {limit} bytes; message dropped")]
    MessageTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A message with more than [`DecoderLimits::max_fields`] fields.
    #[error("message with more than {limit} fields; message dropped")]
    TooManyFields {
        /// The configured limit.
        limit: usize,
    },
    /// A legacy `Response: Follows` that did not end (`--END COMMAND--`) within
    /// [`DecoderLimits::max_follows_len`]: dropped, and decoding resumed at the first
    /// message start after its headers, so the events behind it are not lost.
    #[error("legacy Response: Follows not ended within {limit} bytes; dropped")]
    FollowsTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A legacy `Response: Follows` interrupted by AMI framing (an empty CRLF line, then an
    /// `Event:` or `Response:` line) before its `--END COMMAND--`: Command output uses bare
    /// LF line ends, so the output never ended. Dropped; decoding resumes at that message.
    #[error(
        "legacy Response: Follows interrupted by a new message before --END COMMAND--; dropped"
    )]
    FollowsUnterminated,
}

/// Whose message the decoder dropped last, as far as it had read it: lets the client tell a
/// list that one of its items never arrived, so the list cannot complete as if whole, and an
/// action that its response was thrown away, so it does not wait for its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DroppedOwner {
    /// Not a list item nor a response: a banner, or a whole event without an `ActionID`.
    NoList,
    /// A response (legacy `Follows` output included), with its first `ActionID` value if
    /// one was read before the limit was crossed. One cut off before it may still name its
    /// action in the lines skipped after it: see [`Decoder::take_late_response_id`].
    Response(Option<Vec<u8>>),
    /// Its first `ActionID` value.
    Id(Vec<u8>),
    /// An event (or a message whose first line was lost) cut off before an `ActionID`
    /// line was read: it may belong to any list in progress.
    Unknown,
}

/// Counters kept by the decoder; every dropped byte is accounted for here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecoderStats {
    /// Bytes accepted by [`Decoder::feed`].
    pub bytes: u64,
    /// Messages yielded.
    pub messages: u64,
    /// Banners yielded.
    pub banners: u64,
    /// Empty lines outside a message, ignored (Asterisk's `\n\r\n\r\n` error paths).
    pub stray_blank_lines: u64,
    /// [`DecodeError::LineTooLong`] errors.
    pub lines_too_long: u64,
    /// [`DecodeError::MessageTooLarge`] errors.
    pub messages_too_large: u64,
    /// [`DecodeError::TooManyFields`] errors.
    pub too_many_fields: u64,
    /// [`DecodeError::FollowsTooLarge`] errors.
    pub follows_too_large: u64,
    /// [`DecodeError::FollowsUnterminated`] errors.
    pub follows_unterminated: u64,
    /// Bytes thrown away while resynchronising after an error.
    pub discarded_bytes: u64,
}

impl DecoderStats {
    /// Adds `other`'s counters to these (fleet-wide totals).
    pub fn merge(&mut self, other: &DecoderStats) {
        self.bytes += other.bytes;
        self.messages += other.messages;
        self.banners += other.banners;
        self.stray_blank_lines += other.stray_blank_lines;
        self.lines_too_long += other.lines_too_long;
        self.messages_too_large += other.messages_too_large;
        self.too_many_fields += other.too_many_fields;
        self.follows_too_large += other.follows_too_large;
        self.follows_unterminated += other.follows_unterminated;
        self.discarded_bytes += other.discarded_bytes;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the greeting line.
    Banner,
    /// Reading `Key: Value` lines of a message.
    Headers,
    /// After `Response: Follows`: `Privilege`/`ActionID` lines before the raw output.
    FollowsHeaders,
    /// Raw legacy Command output, up to `--END COMMAND--`.
    FollowsBody,
    /// Throwing bytes away after an error, up to the resynchronisation point.
    Discard { until: Resync },
}

/// Where discarding after an error stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resync {
    /// The next empty line: the end of the bad message.
    EmptyLine,
    /// The end of the current line (a bad banner).
    LineEnd,
    /// Inside legacy Command output, where empty lines are text: a line ending in
    /// `--END COMMAND--`, or a line starting with `Event:` or `Response:` right after an
    /// empty line (a message start: the output never ended).
    FollowsEnd,
}

/// An incremental AMI decoder with enforced limits.
///
/// ```
/// use ami_proto::{Decoder, DecoderLimits, Frame};
///
/// let mut decoder = Decoder::new(DecoderLimits::default());
/// let wire = b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nPing: Pong\r\n\r\n";
/// // Feed in two arbitrary pieces: the result is the same as one piece.
/// for chunk in [&wire[..20], &wire[20..]] {
///     let mut rest = &chunk[..];
///     while !rest.is_empty() {
///         let taken = decoder.feed(rest);
///         rest = &rest[taken..];
///         while let Some(frame) = decoder.decode() {
///             match frame {
///                 Ok(Frame::Banner(b)) => assert_eq!(b.version(), Some("11.0.0")),
///                 Ok(Frame::Message(m)) => assert_eq!(m.get_str("Ping"), Some("Pong")),
///                 Err(e) => panic!("{e}"),
///             }
///         }
///     }
/// }
/// assert_eq!(decoder.stats().messages, 1);
/// ```
pub struct Decoder {
    limits: DecoderLimits,
    expect_banner: bool,
    buf: ReadBuf,
    state: State,
    /// Start of the line being scanned, as an index into `buf` (which starts at the message).
    line_start: usize,
    /// `buf[line_start..scan]` is known to hold no LF.
    scan: usize,
    fields: Vec<FieldSpan>,
    lf: LineEnds,
    /// Messages come out as shared slices of the read buffer (the client's mode, see
    /// [`Message::detach`]); otherwise each owns its bytes.
    share: bool,
    /// Scratch for a message's encoded field table.
    table: Vec<u8>,
    /// While discarding: bytes of the current line were already thrown away.
    discard_partial: bool,
    /// While discarding to [`Resync::FollowsEnd`]: the previous line was empty.
    discard_after_blank: bool,
    /// In legacy Command output: the previous line ended with CRLF (output lines end in LF).
    follows_prev_crlf: bool,
    /// In legacy Command output: the previous line was an empty CRLF line after a CRLF line,
    /// the way an AMI message ends.
    follows_blank_crlf: bool,
    stats: DecoderStats,
    /// The message being decoded is an event whose field table may be deferred (share
    /// mode, see [`Message::deferred`]): its lines past [`SPLIT_BEFORE_DEFERRING`] are
    /// counted, not split into fields.
    deferring: bool,
    /// Lines of the deferred event counted so far (beside those in `fields`).
    deferred_lines: usize,
    /// The deferred event's first `ActionID` value, as a span.
    deferred_action_id: Option<(u32, u32)>,
    /// Whose message the last error dropped.
    last_dropped: DroppedOwner,
    /// While skipping the rest of a response dropped (for this error) before its `ActionID`
    /// was read: look for that line among the skipped ones, up to the blank line that ends
    /// the message.
    seek_response_id: Option<DecodeError>,
    /// The `ActionID` value found that way, with the error that dropped its response, for
    /// [`take_late_response_id`](Self::take_late_response_id).
    late_response_id: Option<(Vec<u8>, DecodeError)>,
    /// The name its log records say (`AMI <name>: ...`): the client's.
    name: Option<std::sync::Arc<str>>,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("state", &self.state)
            .field("buffered", &self.buf.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Decoder {
    /// A decoder for the client side: the first line is the server's banner.
    pub fn new(limits: DecoderLimits) -> Decoder {
        Decoder::with_banner(limits, true)
    }

    /// A decoder with no banner, for reading what a client sends (a simulated server).
    pub fn without_banner(limits: DecoderLimits) -> Decoder {
        Decoder::with_banner(limits, false)
    }

    fn with_banner(limits: DecoderLimits, expect_banner: bool) -> Decoder {
        Decoder {
            limits,
            expect_banner,
            buf: ReadBuf::new(limits.buffer_cap()),
            state: if expect_banner {
                State::Banner
            } else {
                State::Headers
            },
            line_start: 0,
            scan: 0,
            fields: Vec::new(),
            lf: LineEnds::default(),
            share: false,
            deferring: false,
            deferred_lines: 0,
            deferred_action_id: None,
            last_dropped: DroppedOwner::NoList,
            seek_response_id: None,
            late_response_id: None,
            table: Vec::new(),
            discard_partial: false,
            discard_after_blank: false,
            follows_prev_crlf: false,
            follows_blank_crlf: false,
            stats: DecoderStats::default(),
            name: None,
        }
    }

    /// Names the server this decoder reads in its log records (`AMI <name>: decoder: ...`),
    /// as a client's own records are named: a process reading hundreds of servers writes
    /// them all to one log. A client names its decoder after itself.
    pub fn set_log_name(&mut self, name: Option<std::sync::Arc<str>>) {
        self.name = name;
    }

    /// The record of a message dropped for `err`: at trace, one per dropped message (the
    /// client counts and says its discards, rate-limited, at warn).
    fn say_resync(&self, err: DecodeError) {
        match &self.name {
            Some(name) => log::trace!(
                "AMI {}: decoder: {err}; resynchronising",
                crate::Shown(name.as_ref())
            ),
            None => log::trace!("AMI decoder: {err}; resynchronising"),
        }
    }

    /// Forgets any partial input, as for a new connection (a banner is expected again if this
    /// decoder expects one). Counters are kept.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.clear_fields();
        self.line_start = 0;
        self.scan = 0;
        self.discard_partial = false;
        self.discard_after_blank = false;
        self.seek_response_id = None;
        self.late_response_id = None;
        self.state = if self.expect_banner {
            State::Banner
        } else {
            State::Headers
        };
    }

    /// From now on, messages other than responses are shared slices of the read buffer
    /// until detached: for the client, which detaches every message that leaves it and
    /// checks after each read that the slices do not keep much more memory alive than their
    /// own bytes ([`pinned`](Self::pinned)).
    pub(crate) fn share_messages(&mut self) {
        self.share = true;
    }

    /// See [`ReadBuf::pinned`](super::readbuf::ReadBuf::pinned).
    pub(crate) fn pinned(&self) -> (usize, usize) {
        self.buf.pinned()
    }

    /// See [`ReadBuf::seal`](super::readbuf::ReadBuf::seal).
    pub(crate) fn seal(&mut self) {
        self.buf.seal();
    }

    /// See [`ReadBuf::unshare`](super::readbuf::ReadBuf::unshare).
    pub(crate) fn unshare(&mut self) {
        self.buf.unshare();
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &DecoderLimits {
        &self.limits
    }

    /// Counters since creation.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Bytes currently buffered (never more than [`DecoderLimits::buffer_cap`]).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the read buffer has allocated (never more than [`DecoderLimits::buffer_cap`]; a
    /// large empty buffer is given back). Messages never share it: each one owns exactly its
    /// own bytes, however long it is kept.
    pub fn allocated(&self) -> usize {
        self.buf.allocated()
    }

    /// Room left before the buffer cap.
    pub fn room(&self) -> usize {
        self.limits.buffer_cap() - self.buf.len()
    }

    /// Whose message the last [`DecodeError`] dropped, for the client to charge the loss to
    /// the list it belonged to.
    pub(crate) fn last_dropped(&self) -> &DroppedOwner {
        &self.last_dropped
    }

    /// The `ActionID` value of a response dropped before its `ActionID` line was read, found
    /// in the lines skipped after the limit was crossed, with the error that dropped it
    /// (Asterisk writes ActionID second, so only another server's response gets here). Taken
    /// once; `None` on every other call.
    #[inline]
    pub(crate) fn take_late_response_id(&mut self) -> Option<(Vec<u8>, DecodeError)> {
        // Called after every frame: a read, not a write, when there is none.
        self.late_response_id.as_ref()?;
        self.late_response_id.take()
    }

    /// After [`note_dropped`](Self::note_dropped) for `err`, with the state still that of
    /// the dropped message: a response whose `ActionID` was not read yet has it looked for
    /// in the lines skipped after it. Only in an ordinary message: inside Follows output a
    /// line that looks like one is text.
    fn seek_response_id_after(&mut self, err: DecodeError) {
        let seek = self.state == State::Headers
            && matches!(self.last_dropped, DroppedOwner::Response(None));
        self.seek_response_id = seek.then_some(err);
    }

    /// Notes whose message is being dropped, before its fields are forgotten. `whole`: the
    /// message was read to its end, so no `ActionID` means it has none.
    fn note_dropped(&mut self, whole: bool) {
        let in_headers = self.state == State::Headers;
        let is_response = self.fields.first().is_some_and(|f| {
            self.buf[f.key_start as usize..f.key_end as usize].eq_ignore_ascii_case(b"Response")
        });
        self.seek_response_id = None;
        self.last_dropped = if is_response {
            // Its action is waiting for it. Legacy Follows output keeps its ActionID among
            // the headers before the raw text, so `fields` holds it there too.
            let id = Message::find_action_id(&self.buf, &self.fields).and_then(|(start, end)| {
                self.buf
                    .get(start as usize..end as usize)
                    .map(<[u8]>::to_vec)
            });
            DroppedOwner::Response(id)
        } else if !in_headers {
            // A banner: list items are events.
            DroppedOwner::NoList
        } else if let Some((start, end)) =
            Message::find_action_id(&self.buf, &self.fields).or(self.deferred_action_id)
        {
            let id = self
                .buf
                .get(start as usize..end as usize)
                .unwrap_or_default();
            DroppedOwner::Id(id.to_vec())
        } else if whole {
            DroppedOwner::NoList
        } else {
            DroppedOwner::Unknown
        };
    }

    /// Copies as much of `input` as fits under the buffer cap and returns how many bytes were
    /// taken. Drain [`decode`](Self::decode) until it returns `None`, then feed the rest: after
    /// a full drain there is always room (the cap exceeds the largest message).
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let n = input.len().min(self.room());
        self.buf.extend_from_slice(&input[..n]);
        self.stats.bytes += n as u64;
        n
    }

    /// The fast path, nearly every line: header lines after the first one of a message,
    /// within every limit, recorded in a loop that holds the buffer, the field table and the
    /// limits in locals (the general path re-reads them through `self` at every line). Stops
    /// at the first line it cannot take (a blank line, a limit, no LF yet), which the
    /// general path then handles. An event whose table may be deferred stops after its
    /// first [`SPLIT_BEFORE_DEFERRING`] lines and goes on in
    /// [`counted_lines`](Self::counted_lines).
    ///
    /// Returns the LF of the line it stopped at, `None` when no LF is buffered yet (the
    /// search then resumes at the end of the buffer).
    #[inline]
    fn header_lines(&mut self) -> Option<usize> {
        let max_fields = self.limits.max_fields();
        let split = if self.deferring {
            if self.fields.len() >= SPLIT_BEFORE_DEFERRING {
                return self.counted_lines();
            }
            max_fields.min(SPLIT_BEFORE_DEFERRING)
        } else {
            max_fields
        };
        let buf: &[u8] = &self.buf;
        let front = self.buf.dropped();
        let (fields, lf) = (&mut self.fields, &mut self.lf);
        let max_line = self.limits.max_line_len();
        let max_message = self.limits.max_message_len();
        let (mut start, mut scan) = (self.line_start, self.scan);
        let stop = loop {
            let (newline, line_end) =
                match header_line(lf, buf, front, start, &mut scan, max_line, max_message) {
                    Ok(line) => line,
                    Err(stop) => break stop,
                };
            if fields.len() >= split {
                break Some(newline);
            }
            fields.push(FieldSpan::of_line(buf, start, line_end));
            start = newline + 1;
            scan = start;
        };
        self.line_start = start;
        self.scan = scan;
        if self.deferring && self.fields.len() >= SPLIT_BEFORE_DEFERRING && stop.is_some() {
            // The line it stopped at is the first to be counted.
            return self.counted_lines();
        }
        stop
    }

    /// [`header_lines`](Self::header_lines) for the lines of a deferred event past its
    /// first [`SPLIT_BEFORE_DEFERRING`] (see [`Message::deferred`]): each is checked
    /// against the limits and counted, and only an `ActionID` line is split (it routes the
    /// event: a list item).
    #[inline(never)]
    fn counted_lines(&mut self) -> Option<usize> {
        let buf: &[u8] = &self.buf;
        let front = self.buf.dropped();
        let (split, lf) = (self.fields.len(), &mut self.lf);
        let max_line = self.limits.max_line_len();
        let max_message = self.limits.max_message_len();
        let max_fields = self.limits.max_fields();
        let (mut start, mut scan) = (self.line_start, self.scan);
        let (mut counted, mut action_id) = (self.deferred_lines, self.deferred_action_id);
        let stop = loop {
            let (newline, line_end) =
                match header_line(lf, buf, front, start, &mut scan, max_line, max_message) {
                    Ok(line) => line,
                    Err(stop) => break stop,
                };
            if split + counted >= max_fields {
                break Some(newline);
            }
            if action_id.is_none() && is_action_id_line(&buf[start..line_end]) {
                let f = FieldSpan::of_line(buf, start, line_end);
                action_id = Some((f.value_start, f.value_end));
            }
            counted += 1;
            start = newline + 1;
            scan = start;
        };
        self.line_start = start;
        self.scan = scan;
        self.deferred_lines = counted;
        self.deferred_action_id = action_id;
        stop
    }

    /// The next complete frame, an error for input that broke a limit, or `None` when more
    /// bytes are needed.
    pub fn decode(&mut self) -> Option<Result<Frame, DecodeError>> {
        loop {
            let found = if self.state == State::Headers && !self.fields.is_empty() {
                self.header_lines()
            } else {
                let front = self.buf.dropped();
                let found = self.lf.find(&self.buf, front, self.scan);
                if found.is_none() {
                    self.scan = self.buf.len();
                }
                found
            };
            let Some(newline) = found else {
                return self.check_partial_line().map(Err);
            };
            let next = newline + 1;
            let line_end = content_end(&self.buf, self.line_start, newline);
            // Every line `header_lines` could not take: the first of a message, a blank
            // line, a broken limit.
            if let Some(out) = self.take_line(line_end, next) {
                return Some(out);
            }
        }
    }

    /// Handles one complete line `buf[line_start..line_end]` whose terminator ends at `next`.
    /// Returns a frame or an error when the line finishes one.
    fn take_line(&mut self, line_end: usize, next: usize) -> Option<Result<Frame, DecodeError>> {
        let line_len = line_end - self.line_start;
        let empty = line_len == 0;
        if let State::Discard { until } = self.state {
            let whole = !self.discard_partial;
            if let (Some(err), true) = (self.seek_response_id, whole) {
                self.seek_late_response_id(line_end, err);
            }
            let resynced = match until {
                Resync::EmptyLine => empty && whole,
                Resync::LineEnd => true,
                Resync::FollowsEnd => {
                    let line = &self.buf[self.line_start..line_end];
                    if self.discard_after_blank && whole && is_message_start(line) {
                        // This line opens the next message: keep it and parse it.
                        self.discard_after_blank = false;
                        self.state = State::Headers;
                        return self.take_line(line_end, next);
                    }
                    self.discard_after_blank = empty && whole;
                    line.ends_with(END_COMMAND)
                }
            };
            self.drop_front(next, true);
            self.discard_partial = false;
            if resynced {
                self.state = State::Headers;
                self.seek_response_id = None;
            }
            return None;
        }
        // An empty line inside legacy Command output is text and still counts toward the size.
        let is_text = !empty || matches!(self.state, State::FollowsHeaders | State::FollowsBody);
        if is_text {
            if let Some(err) = self.first_limit_crossed(line_end, next) {
                return self.fail_line(line_end, next, err);
            }
        }
        match self.state {
            State::Discard { .. } => None,
            State::Banner => {
                if empty {
                    self.stats.stray_blank_lines += 1;
                    self.drop_front(next, false);
                    return None;
                }
                let line = Bytes::copy_from_slice(&self.buf[..line_end]);
                self.drop_front(next, false);
                self.state = State::Headers;
                self.stats.banners += 1;
                Some(Ok(Frame::Banner(Banner { line })))
            }
            State::Headers | State::FollowsHeaders if empty => {
                if self.fields.is_empty() {
                    self.stats.stray_blank_lines += 1;
                    self.drop_front(next, false);
                    return None;
                }
                if self.state == State::FollowsHeaders {
                    // Legacy output that starts with a blank line: it is body text (and, if
                    // CRLF, the end of an AMI message that a message start may follow).
                    self.state = State::FollowsBody;
                    self.follows_blank_crlf = line_end + 1 < next;
                    self.follows_prev_crlf = self.follows_blank_crlf;
                    return self.push_raw(line_end, next);
                }
                self.finish_message(next)
            }
            State::Headers => {
                let is_first = self.fields.is_empty();
                if let Some(err) = self.push_field(line_end, next) {
                    return Some(Err(err));
                }
                if is_first {
                    let f = self.fields[0];
                    let key = &self.buf[f.key_start as usize..f.key_end as usize];
                    let value = &self.buf[f.value_start as usize..f.value_end as usize];
                    // An event waiting in the client's queue gets its fields where it is
                    // taken out (see `Message::deferred`).
                    self.deferring = self.share && key.eq_ignore_ascii_case(b"Event");
                    if key.eq_ignore_ascii_case(b"Response")
                        && value.eq_ignore_ascii_case(b"Follows")
                    {
                        self.state = State::FollowsHeaders;
                        self.follows_prev_crlf = true;
                        self.follows_blank_crlf = false;
                    }
                }
                None
            }
            State::FollowsHeaders => {
                let line = &self.buf[self.line_start..line_end];
                let is_header = [&b"ActionID:"[..], b"Privilege:"]
                    .iter()
                    .any(|k| line.len() >= k.len() && line[..k.len()].eq_ignore_ascii_case(k));
                if is_header {
                    return self.push_field(line_end, next).map(Err);
                }
                self.state = State::FollowsBody;
                self.take_line(line_end, next)
            }
            State::FollowsBody => {
                let crlf = line_end + 1 < next;
                if self.follows_blank_crlf
                    && crlf
                    && is_message_start(&self.buf[self.line_start..line_end])
                {
                    self.stats.follows_unterminated += 1;
                    self.note_dropped(true);
                    let err = DecodeError::FollowsUnterminated;
                    self.say_resync(err);
                    self.resync_follows(self.line_start);
                    return Some(Err(err));
                }
                self.follows_blank_crlf = empty && crlf && self.follows_prev_crlf;
                self.follows_prev_crlf = crlf;
                self.push_raw(line_end, next)
            }
        }
    }

    /// While skipping a dropped response: its `ActionID`, if the whole line
    /// `buf[line_start..line_end]` is that field (the first one found counts, as when read).
    fn seek_late_response_id(&mut self, line_end: usize, err: DecodeError) {
        let line = &self.buf[self.line_start..line_end];
        if line.is_empty() || !is_action_id_line(line) {
            return;
        }
        let f = FieldSpan::of_line(&self.buf, self.line_start, line_end);
        let id = self
            .buf
            .get(f.value_start as usize..f.value_end as usize)
            .unwrap_or_default();
        self.late_response_id = Some((id.to_vec(), err));
        self.seek_response_id = None;
    }

    /// A raw line of legacy Command output; the `--END COMMAND--` line ends the message.
    fn push_raw(&mut self, line_end: usize, next: usize) -> Option<Result<Frame, DecodeError>> {
        let line = &self.buf[self.line_start..line_end];
        let ends = line.ends_with(END_COMMAND);
        let text_end = if ends {
            line_end - END_COMMAND.len()
        } else {
            line_end
        };
        if !ends || text_end > self.line_start {
            if let Some(err) = self.check_field_count(line_end, next) {
                return Some(Err(err));
            }
            let start = self.line_start as u32;
            self.fields.push(FieldSpan {
                key_start: start,
                key_end: start,
                value_start: start,
                value_end: text_end as u32,
            });
        }
        if ends {
            // The empty line after `--END COMMAND--` is then a stray blank line, ignored.
            return self.finish_message(next);
        }
        self.advance_line(next)
    }

    /// Parses `Key: Value` (split at the first colon, one optional space dropped).
    fn push_field(&mut self, line_end: usize, next: usize) -> Option<DecodeError> {
        if let Some(err) = self.check_field_count(line_end, next) {
            return Some(err);
        }
        self.push_span(line_end);
        self.advance_line(next).and_then(|r| r.err())
    }

    /// Forgets the fields of the message being decoded, deferred ones included.
    #[inline]
    fn clear_fields(&mut self) {
        self.fields.clear();
        if self.deferring {
            self.deferring = false;
            self.deferred_lines = 0;
            self.deferred_action_id = None;
        }
    }

    /// Fields of the message being decoded, deferred ones included.
    #[inline]
    fn field_count(&self) -> usize {
        self.fields.len() + self.deferred_lines
    }

    /// Records the field on `buf[line_start..line_end]`; limits were checked by the caller.
    #[inline]
    fn push_span(&mut self, line_end: usize) {
        self.fields
            .push(FieldSpan::of_line(&self.buf, self.line_start, line_end));
    }

    fn check_field_count(&mut self, line_end: usize, next: usize) -> Option<DecodeError> {
        if self.field_count() >= self.limits.max_fields() {
            self.stats.too_many_fields += 1;
            let limit = self.limits.max_fields();
            return self
                .fail_line(line_end, next, DecodeError::TooManyFields { limit })
                .and_then(|r| r.err());
        }
        None
    }

    /// Moves past a line inside a message, enforcing the message size.
    /// Moves past a line inside a message (its limits were checked by `take_line`).
    fn advance_line(&mut self, next: usize) -> Option<Result<Frame, DecodeError>> {
        self.line_start = next;
        self.scan = next;
        None
    }

    fn finish_message(&mut self, next: usize) -> Option<Result<Frame, DecodeError>> {
        if next > self.limits.max_message_len() {
            self.note_dropped(true);
            self.stats.messages_too_large += 1;
            let limit = self.limits.max_message_len();
            // The message is complete, so the decoder is already at a boundary.
            self.drop_front(next, true);
            self.clear_fields();
            self.state = State::Headers;
            return Some(Err(DecodeError::MessageTooLarge { limit }));
        }
        if self.deferred_lines > 0 {
            if let (true, Some(&first)) = (self.buf.shares(next), self.fields.first()) {
                let action_id =
                    Message::find_action_id(&self.buf, &self.fields).or(self.deferred_action_id);
                let count = self.field_count();
                let bytes = self.buf.take_shared_bytes(next);
                let message = Message::deferred(bytes, next, &first, count, action_id);
                return Some(Ok(self.finished(message)));
            }
            // Too large to share: its own allocation, table included, as for any message.
            self.split_deferred_lines(next);
        }
        // A response is never left a slice of the read buffer: the client hands it to its
        // caller, who keeps it as long as it likes, so it gets its own allocations now
        // rather than a shared slice copied out later.
        let is_response = self.fields.first().is_some_and(|f| {
            self.buf[f.key_start as usize..f.key_end as usize].eq_ignore_ascii_case(b"Response")
        });
        let action_id = Message::find_action_id(&self.buf, &self.fields);
        // Sized once, then filled in place: no capacity check per field.
        self.table.clear();
        self.table.resize(self.fields.len() * SPAN_LEN, 0);
        for (out, f) in self.table.chunks_exact_mut(SPAN_LEN).zip(&self.fields) {
            out.copy_from_slice(&f.encode());
        }
        let message = if self.share && !is_response {
            let (bytes, table, shared) = self.buf.take_shared(next, &self.table);
            Message::new(bytes, table, next, &self.fields, action_id, shared)
        } else {
            let data = self.buf.take(next, &self.table);
            Message::new(data, Bytes::new(), next, &self.fields, action_id, false)
        };
        Some(Ok(self.finished(message)))
    }

    /// The decoder's state after a message was cut out of the buffer.
    #[inline]
    fn finished(&mut self, message: Message) -> Frame {
        self.clear_fields();
        self.restart_line();
        self.state = State::Headers;
        self.stats.messages += 1;
        Frame::Message(message)
    }

    /// Splits the lines of the deferred event `buf[..next]` into `fields` after all, as if
    /// they had never been deferred.
    fn split_deferred_lines(&mut self, next: usize) {
        let count = self.field_count();
        self.clear_fields();
        self.fields.extend(Spans::lines(&self.buf[..next], count));
    }

    /// Which limit the input up to `end` crossed first, if any; `content_end` is where the
    /// current line's text ends (without its CR). Deciding by byte position makes the error
    /// the same however the input was split into reads.
    fn first_limit_crossed(&mut self, content_end: usize, end: usize) -> Option<DecodeError> {
        let max_line = self.limits.max_line_len();
        let line_cross = (content_end - self.line_start > max_line).then(|| {
            // A CR at the limit only counts once a byte follows it on the same line.
            let cr = self.buf[self.line_start + max_line] == b'\r';
            self.line_start + max_line + 1 + usize::from(cr)
        });
        let follows = matches!(self.state, State::FollowsHeaders | State::FollowsBody);
        let max_message = if follows {
            self.limits.max_follows_len()
        } else {
            self.limits.max_message_len()
        };
        let message_cross =
            (self.state != State::Banner && end > max_message).then_some(max_message + 1);
        match (line_cross, message_cross) {
            (Some(l), Some(m)) if m < l => Some(self.too_large(follows, max_message)),
            (Some(_), _) => {
                self.stats.lines_too_long += 1;
                Some(DecodeError::LineTooLong { limit: max_line })
            }
            (None, Some(_)) => Some(self.too_large(follows, max_message)),
            (None, None) => None,
        }
    }

    fn too_large(&mut self, follows: bool, limit: usize) -> DecodeError {
        if follows {
            self.stats.follows_too_large += 1;
            DecodeError::FollowsTooLarge { limit }
        } else {
            self.stats.messages_too_large += 1;
            DecodeError::MessageTooLarge { limit }
        }
    }

    /// Where to resynchronise after an error in the current state.
    fn resync_point(&self) -> Resync {
        match self.state {
            State::Banner => Resync::LineEnd,
            State::FollowsHeaders | State::FollowsBody => Resync::FollowsEnd,
            _ => Resync::EmptyLine,
        }
    }

    /// An error on the complete line `buf[line_start..line_end]` (terminator ends at `next`):
    /// drops the message so far and that line, then discards to the resync point.
    fn fail_line(
        &mut self,
        line_end: usize,
        next: usize,
        err: DecodeError,
    ) -> Option<Result<Frame, DecodeError>> {
        let until = self.resync_point();
        self.say_resync(err);
        self.note_dropped(false);
        self.seek_response_id_after(err);
        // The failing line itself may already be the resync point.
        let done = match until {
            Resync::LineEnd => true,
            Resync::FollowsEnd => {
                if !self.buf[self.line_start..line_end].ends_with(END_COMMAND) {
                    self.resync_follows(next);
                    return Some(Err(err));
                }
                true
            }
            Resync::EmptyLine => false,
        };
        self.drop_front(next, true);
        self.clear_fields();
        self.discard_partial = false;
        self.state = if done {
            State::Headers
        } else {
            State::Discard { until }
        };
        Some(Err(err))
    }

    /// An error found while the current line is still incomplete: drops what is buffered and
    /// discards to the resync point.
    fn fail_partial(&mut self, err: DecodeError) -> Option<DecodeError> {
        let until = self.resync_point();
        self.say_resync(err);
        self.note_dropped(false);
        self.seek_response_id_after(err);
        if until == Resync::FollowsEnd {
            self.resync_follows(self.line_start);
        } else {
            self.clear_fields();
            self.discard_partial = false;
            self.state = State::Discard { until };
        }
        self.discard_partial_line();
        Some(err)
    }

    /// Gives up on a legacy `Response: Follows` whose complete lines are `buf[..complete]`:
    /// decoding resumes at the first message start after an empty line in what is buffered
    /// (a Follows that never ended has ordinary messages behind it), or, if there is none
    /// yet, discards on to `--END COMMAND--` or the next such message start. The rescan
    /// happens once per dropped Follows, over at most `max_follows_len` bytes.
    fn resync_follows(&mut self, complete: usize) {
        self.clear_fields();
        self.discard_partial = false;
        let buf = &self.buf[..complete];
        // Skip the `Response: Follows` line itself.
        let mut pos = memchr::memchr(b'\n', buf).map_or(complete, |i| i + 1);
        let mut after_blank = false;
        let mut found = None;
        while pos < complete {
            let end = memchr::memchr(b'\n', &buf[pos..]).map_or(complete, |i| pos + i + 1);
            let line = trim_line_end(&buf[pos..end]);
            if after_blank && is_message_start(line) {
                found = Some(pos);
                break;
            }
            after_blank = line.is_empty();
            pos = end;
        }
        match found {
            Some(at) => {
                self.drop_front(at, true);
                self.state = State::Headers;
            }
            None => {
                self.drop_front(complete, true);
                self.state = State::Discard {
                    until: Resync::FollowsEnd,
                };
                self.discard_after_blank = after_blank;
            }
        }
    }

    /// In discard mode, drops the unfinished line except what the resync check still needs:
    /// a lone CR (with the LF that may follow it, an empty line) or the tail that may hold
    /// `--END COMMAND--`.
    fn discard_partial_line(&mut self) {
        let State::Discard { until } = self.state else {
            return;
        };
        // Everything before the current line is part of the bad message.
        if self.line_start > 0 {
            let n = self.line_start;
            self.drop_front(n, true);
        }
        let partial = &self.buf[..];
        let keep = match until {
            // A line that may be the ActionID of the dropped response being skipped is kept
            // whole (within the line limit), so one trickled in pieces is still read.
            Resync::EmptyLine
                if self.seek_response_id.is_some()
                    && !self.discard_partial
                    && partial.len() <= self.limits.max_line_len()
                    && could_be_action_id_line(partial) =>
            {
                partial.len()
            }
            Resync::EmptyLine => usize::from(partial == b"\r"),
            Resync::LineEnd => 0,
            // A line that may open the next message is kept whole (within the line limit).
            Resync::FollowsEnd
                if self.discard_after_blank
                    && !self.discard_partial
                    && partial.len() <= self.limits.max_line_len()
                    && could_start_message(partial) =>
            {
                partial.len()
            }
            Resync::FollowsEnd => partial.len().min(END_COMMAND.len() + 1),
        };
        let drop = partial.len() - keep;
        if drop > 0 {
            self.drop_front(drop, true);
            self.discard_partial = true;
        }
    }

    /// Checks the unfinished line at the end of the buffer against the limits.
    fn check_partial_line(&mut self) -> Option<DecodeError> {
        if let State::Discard { .. } = self.state {
            self.discard_partial_line();
            return None;
        }
        let trailing_cr =
            usize::from(self.buf.last() == Some(&b'\r') && self.buf.len() > self.line_start);
        let content_end = self.buf.len() - trailing_cr;
        let end = self.buf.len();
        let err = self.first_limit_crossed(content_end, end)?;
        self.fail_partial(err)
    }

    /// Throws away `buf[..n]`; counted as discarded when it was part of a bad message.
    fn drop_front(&mut self, n: usize, discarded: bool) {
        self.buf.advance(n);
        if discarded {
            self.stats.discarded_bytes += n as u64;
        }
        self.restart_line();
    }

    fn restart_line(&mut self) {
        self.line_start = 0;
        self.scan = 0;
    }
}

/// The line without its LF and the CR before it.
fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Line prefixes that open a message a client can receive.
const MESSAGE_STARTS: [&[u8]; 2] = [b"Event:", b"Response:"];

/// True for a line that opens an event or a response.
fn is_message_start(line: &[u8]) -> bool {
    MESSAGE_STARTS
        .iter()
        .any(|p| line.len() >= p.len() && line[..p.len()].eq_ignore_ascii_case(p))
}

/// True while an unfinished line may still turn out to be an `ActionID` field.
fn could_be_action_id_line(partial: &[u8]) -> bool {
    const KEY: &[u8] = b"ActionID:";
    let n = partial.len().min(KEY.len());
    partial[..n].eq_ignore_ascii_case(&KEY[..n])
}

/// True while an unfinished line may still turn out to open a message.
fn could_start_message(partial: &[u8]) -> bool {
    MESSAGE_STARTS.iter().any(|p| {
        let n = partial.len().min(p.len());
        partial[..n].eq_ignore_ascii_case(&p[..n])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(d: &mut Decoder, input: &[u8]) -> Vec<Result<Frame, DecodeError>> {
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            let n = d.feed(rest);
            rest = &rest[n..];
            while let Some(f) = d.decode() {
                out.push(f);
            }
            if rest.is_empty() {
                return out;
            }
            assert!(n > 0 || d.room() > 0, "no progress");
        }
    }

    fn names(frames: &[Result<Frame, DecodeError>]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                Ok(Frame::Banner(b)) => format!("banner {}", b.text()),
                Ok(Frame::Message(m)) => m
                    .fields()
                    .next()
                    .map(|f| format!("{}: {}", f.key_str(), f.value))
                    .unwrap_or_default(),
                Err(e) => format!("error {e:?}"),
            })
            .collect()
    }

    fn small_limits() -> DecoderLimits {
        DecoderLimits::builder()
            .max_line_len(32)
            .max_message_len(128)
            .max_fields(4)
            .buffer_cap(256)
            .build()
            .unwrap()
    }

    #[test]
    fn banner_split_across_reads() {
        let mut d = Decoder::new(DecoderLimits::default());
        let wire = b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\n\r\n";
        let mut out = decode_all(&mut d, &wire[..5]);
        assert!(out.is_empty());
        out.extend(decode_all(&mut d, &wire[5..29]));
        assert!(out.is_empty(), "banner must wait for its LF");
        out.extend(decode_all(&mut d, &wire[29..]));
        assert_eq!(
            names(&out),
            ["banner Asterisk Call Manager/11.0.0", "Response: Success"]
        );
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let mut d = Decoder::without_banner(DecoderLimits::default());
        let out = decode_all(&mut d, b"Event: A\nX: 1\n\nEvent: B\r\nY: 2\n\r\n");
        assert_eq!(names(&out), ["Event: A", "Event: B"]);
        let Ok(Frame::Message(m)) = &out[1] else {
            panic!()
        };
        assert_eq!(m.get_str("Y"), Some("2"));
    }

    #[test]
    fn bare_cr_is_data_not_a_line_end() {
        let mut d = Decoder::without_banner(DecoderLimits::default());
        let out = decode_all(&mut d, b"Response: Error\r\nMessage: a\rb\r\n\r\n");
        let Ok(Frame::Message(m)) = &out[0] else {
            panic!()
        };
        assert_eq!(m.get_str("Message"), Some("a\rb"));
    }

    #[test]
    fn stray_blank_lines_yield_nothing_and_are_counted() {
        let mut d = Decoder::without_banner(DecoderLimits::default());
        let out = decode_all(
            &mut d,
            b"\r\n\nResponse: Error\r\nMessage: Oops\n\r\n\r\n\r\nEvent: X\r\n\r\n",
        );
        assert_eq!(names(&out), ["Response: Error", "Event: X"]);
        assert_eq!(d.stats().stray_blank_lines, 4);
    }

    #[test]
    fn overlong_line_is_one_error_then_recovery() {
        let mut d = Decoder::without_banner(small_limits());
        let long = [b'x'; 100];
        let mut wire = b"Event: Bad\r\nLong: ".to_vec();
        wire.extend_from_slice(&long);
        wire.extend_from_slice(b"\r\nMore: 1\r\n\r\nEvent: Good\r\n\r\n");
        for chunk in [1usize, 7, wire.len()] {
            let mut d2 = Decoder::without_banner(small_limits());
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                out.extend(decode_all(&mut d2, piece));
            }
            assert_eq!(
                names(&out),
                ["error LineTooLong { limit: 32 }", "Event: Good"],
                "chunk {chunk}"
            );
            assert_eq!(d2.stats().lines_too_long, 1);
            assert!(d2.stats().discarded_bytes > 100);
        }
        let _ = decode_all(&mut d, &wire);
        assert!(d.buffered() <= 256);
    }

    #[test]
    fn oversize_message_is_one_error_then_recovery() {
        let mut wire = b"Event: Big\r\n".to_vec();
        for i in 0..3 {
            wire.extend_from_slice(format!("K{i}: {}\r\n", "v".repeat(28)).as_bytes());
        }
        wire.extend_from_slice(b"\r\nEvent: Next\r\n\r\n");
        // The bad message is 116 bytes with its blank line.
        let limits = DecoderLimits::builder()
            .max_line_len(32)
            .max_message_len(100)
            .max_fields(10)
            .buffer_cap(256)
            .build()
            .unwrap();
        for chunk in [1usize, 5, wire.len()] {
            let mut d = Decoder::without_banner(limits);
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                out.extend(decode_all(&mut d, piece));
            }
            assert_eq!(
                names(&out),
                ["error MessageTooLarge { limit: 100 }", "Event: Next"],
                "chunk {chunk}"
            );
            assert_eq!(d.stats().messages_too_large, 1);
        }
    }

    #[test]
    fn a_message_is_dropped_at_the_line_that_crosses_its_limit_however_split() {
        // 12 + 30 + 30 bytes, then an ActionID line whose LF is the 101st byte: one past
        // the limit. That line is not read, so the event is charged to no list in
        // particular, whether it arrives whole or byte by byte.
        let mut wire = b"Event: Big\r\n".to_vec();
        for i in 0..2 {
            wire.extend_from_slice(format!("K{i}: {}\r\n", "v".repeat(24)).as_bytes());
        }
        wire.extend_from_slice(format!("ActionID: {}\r\n", "a".repeat(17)).as_bytes());
        assert_eq!(wire.len(), 101);
        wire.extend_from_slice(b"More: 1\r\n\r\nEvent: Next\r\n\r\n");
        let limits = DecoderLimits::builder()
            .max_line_len(32)
            .max_message_len(100)
            .max_fields(10)
            .buffer_cap(256)
            .build()
            .unwrap();
        for chunk in [1usize, 3, wire.len()] {
            let mut d = Decoder::without_banner(limits);
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                out.extend(decode_all(&mut d, piece));
            }
            assert_eq!(
                names(&out),
                ["error MessageTooLarge { limit: 100 }", "Event: Next"],
                "chunk {chunk}"
            );
            assert_eq!(d.last_dropped(), &DroppedOwner::Unknown, "chunk {chunk}");
        }
    }

    #[test]
    fn the_empty_line_that_ends_a_message_counts_toward_its_limit() {
        let limits = DecoderLimits::builder()
            .max_line_len(32)
            .max_message_len(100)
            .max_fields(10)
            .buffer_cap(256)
            .build()
            .unwrap();
        let message = |last: usize| {
            let mut wire = b"Event: Big\r\n".to_vec();
            for i in 0..2 {
                wire.extend_from_slice(format!("K{i}: {}\r\n", "v".repeat(24)).as_bytes());
            }
            wire.extend_from_slice(format!("K2: {}\r\n\r\n", "v".repeat(last)).as_bytes());
            wire
        };
        // Exactly 100 bytes with its empty line: taken.
        let fits = message(20);
        assert_eq!(fits.len(), 100);
        let mut d = Decoder::without_banner(limits);
        assert_eq!(names(&decode_all(&mut d, &fits)), ["Event: Big"]);
        // 101: only the empty line crosses the limit, and the message is still dropped.
        let over = message(21);
        assert_eq!(over.len(), 101);
        let mut d = Decoder::without_banner(limits);
        let mut wire = over.clone();
        wire.extend_from_slice(b"Event: Next\r\n\r\n");
        assert_eq!(
            names(&decode_all(&mut d, &wire)),
            ["error MessageTooLarge { limit: 100 }", "Event: Next"]
        );
        assert_eq!(d.stats().messages_too_large, 1);
        assert_eq!(d.stats().discarded_bytes, 101);
    }

    #[test]
    fn too_many_fields_is_one_error_then_recovery() {
        let mut d = Decoder::without_banner(small_limits());
        let out = decode_all(
            &mut d,
            b"Event: A\r\nB: 1\r\nC: 2\r\nD: 3\r\nE: 4\r\nF: 5\r\n\r\nEvent: Ok\r\n\r\n",
        );
        assert_eq!(
            names(&out),
            ["error TooManyFields { limit: 4 }", "Event: Ok"]
        );
        assert_eq!(d.stats().too_many_fields, 1);
    }

    #[test]
    fn buffer_never_exceeds_cap_on_endless_line() {
        let mut d = Decoder::without_banner(small_limits());
        let junk = [b'z'; 1000];
        let mut errors = 0;
        for _ in 0..50 {
            for f in decode_all(&mut d, &junk) {
                assert!(f.is_err());
                errors += 1;
            }
            assert!(d.buffered() <= d.limits().buffer_cap());
        }
        assert_eq!(errors, 1, "one error for one bad message");
        let out = decode_all(&mut d, b"\r\n\r\nEvent: After\r\n\r\n");
        assert_eq!(names(&out), ["Event: After"]);
    }

    #[test]
    fn legacy_command_output_gives_raw_lines() {
        let mut d = Decoder::without_banner(DecoderLimits::default());
        let wire = b"Response: Follows\r\nPrivilege: Command\r\nActionID: c1\r\n\
Asterisk 13.38.3 built by me\n\nKey: looks like a header\n--END COMMAND--\r\n\r\nEvent: After\r\n\r\n";
        let out = decode_all(&mut d, wire);
        assert_eq!(names(&out), ["Response: Follows", "Event: After"]);
        let Ok(Frame::Message(m)) = &out[0] else {
            panic!()
        };
        assert_eq!(m.action_id(), Some("c1"));
        let lines: Vec<_> = m.command_output().map(|v| v.to_string()).collect();
        assert_eq!(
            lines,
            [
                "Asterisk 13.38.3 built by me",
                "",
                "Key: looks like a header"
            ]
        );
        assert_eq!(d.stats().stray_blank_lines, 1);
    }

    #[test]
    fn legacy_output_keeps_event_lines_that_follow_no_empty_crlf_line() {
        // Only an empty CRLF line after a CRLF line ends an AMI message inside Command
        // output; an `Event:` line after text, or after an empty LF line, is output, even
        // when it ends in CRLF.
        let wire = b"Response: Follows\r\nPrivilege: Command\r\noutput\nEvent: inline\r\nmore\n\n\
Event: after an LF blank\r\n--END COMMAND--\r\n\r\nEvent: After\r\n\r\n";
        for chunk in [1usize, 4, wire.len()] {
            let mut d = Decoder::without_banner(follows_limits(1 << 16));
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                out.extend(decode_all(&mut d, piece));
            }
            assert_eq!(
                names(&out),
                ["Response: Follows", "Event: After"],
                "chunk {chunk}"
            );
            let Ok(Frame::Message(m)) = &out[0] else {
                panic!()
            };
            let lines: Vec<_> = m.command_output().map(|v| v.to_string()).collect();
            assert_eq!(
                lines,
                [
                    "output",
                    "Event: inline",
                    "more",
                    "",
                    "Event: after an LF blank"
                ]
            );
            assert_eq!(d.stats().follows_unterminated, 0);
        }
    }

    #[test]
    fn legacy_output_opening_with_an_empty_crlf_line_ends_at_a_message_start() {
        // An empty CRLF line right after the headers ends an AMI message: an `Event:` line
        // after it opens the next message, and the Follows never ended.
        let wire = b"Response: Follows\r\nPrivilege: Command\r\n\r\nEvent: Next\r\n\r\n";
        for chunk in [1usize, wire.len()] {
            let (got, stats) = decode_chunked(follows_limits(1 << 16), wire, chunk);
            assert_eq!(
                got,
                ["error FollowsUnterminated", "Event: Next"],
                "chunk {chunk}"
            );
            assert_eq!(stats.follows_unterminated, 1);
        }
    }

    #[test]
    fn legacy_output_opening_with_an_empty_lf_line_keeps_event_like_text() {
        // Command output ends its lines with a bare LF: after an empty LF line an `Event:`
        // line is output text, not a message start.
        let wire =
            b"Response: Follows\r\nPrivilege: Command\r\n\nEvent: text\r\n--END COMMAND--\r\n\r\n";
        for chunk in [1usize, wire.len()] {
            let mut d = Decoder::without_banner(follows_limits(1 << 16));
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                out.extend(decode_all(&mut d, piece));
            }
            let [Ok(Frame::Message(m))] = &out[..] else {
                panic!("chunk {chunk}: one message, got {out:?}");
            };
            let lines: Vec<_> = m.command_output().map(|v| v.to_string()).collect();
            assert_eq!(lines, ["", "Event: text"], "chunk {chunk}");
            assert_eq!(d.stats().follows_unterminated, 0);
        }
    }

    #[test]
    fn legacy_command_output_without_trailing_newline() {
        let mut d = Decoder::without_banner(DecoderLimits::default());
        let wire = b"Response: Follows\r\nPrivilege: Command\r\nNo such command 'x'--END COMMAND--\r\n\r\n";
        let out = decode_all(&mut d, wire);
        let Ok(Frame::Message(m)) = &out[0] else {
            panic!()
        };
        let lines: Vec<_> = m.command_output().map(|v| v.to_string()).collect();
        assert_eq!(lines, ["No such command 'x'"]);
    }

    fn follows_limits(max_follows_len: usize) -> DecoderLimits {
        DecoderLimits::builder()
            .max_line_len(256)
            .max_message_len(1 << 16)
            .max_follows_len(max_follows_len)
            .buffer_cap(1 << 17)
            .build()
            .unwrap()
    }

    /// Decodes `wire` fed in pieces of `chunk` bytes: frame names and the final counters.
    fn decode_chunked(
        limits: DecoderLimits,
        wire: &[u8],
        chunk: usize,
    ) -> (Vec<String>, DecoderStats) {
        let mut d = Decoder::without_banner(limits);
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            out.extend(decode_all(&mut d, piece));
        }
        (names(&out), d.stats())
    }

    fn events(from: usize, n: usize) -> Vec<u8> {
        (from..from + n)
            .flat_map(|i| format!("Event: E{i}\r\nSeq: {i}\r\n\r\n").into_bytes())
            .collect()
    }

    #[test]
    fn unterminated_follows_is_dropped_and_the_events_behind_it_flow() {
        let mut wire = b"Response: Follows\r\nPrivilege: Command\r\nActionID: c1\r\n\
output line one\n\nmore output\n"
            .to_vec();
        // No `--END COMMAND--`: events follow, far more than the Follows limit, framed with
        // bare LF like the output itself, so only the size limit can tell.
        wire.extend((0..2000).flat_map(|i| format!("Event: E{i}\nSeq: {i}\n\n").into_bytes()));
        for chunk in [1usize, 7, 4096, wire.len()] {
            let mut d = Decoder::without_banner(follows_limits(1024));
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                out.extend(decode_all(&mut d, piece));
            }
            let got = names(&out);
            assert_eq!(
                got[0], "error FollowsTooLarge { limit: 1024 }",
                "chunk {chunk}"
            );
            // E0 follows the output text with no empty line between: it reads as output.
            // Every later event starts after an empty line, a boundary that can be trusted.
            assert_eq!(got.len(), 2000, "chunk {chunk}: every event after E0");
            assert_eq!(got[1], "Event: E1");
            assert_eq!(got[1999], "Event: E1999");
            assert_eq!(d.stats().follows_too_large, 1);
        }
    }

    #[test]
    fn follows_interrupted_by_ami_framing_resyncs_at_once() {
        // Command output uses bare LF; an empty CRLF line then `Event:` is AMI framing.
        let mut wire = b"Response: Follows\r\nPrivilege: Command\r\nActionID: c1\r\n\
Event: not a boundary: LF text\n\nEvent: nor this\nlast output line\r\n\r\n"
            .to_vec();
        wire.extend(events(0, 3));
        for chunk in [1usize, 6, wire.len()] {
            let (got, _) = decode_chunked(follows_limits(1 << 16), &wire, chunk);
            assert_eq!(
                got,
                [
                    "error FollowsUnterminated",
                    "Event: nor this",
                    "Event: E0",
                    "Event: E1",
                    "Event: E2"
                ],
                "chunk {chunk}"
            );
            assert_eq!(
                decode_chunked(follows_limits(1 << 16), &wire, chunk)
                    .1
                    .follows_unterminated,
                1
            );
        }
    }

    #[test]
    fn oversize_follows_that_ends_resyncs_at_end_command() {
        let mut wire = b"Response: Follows\r\nPrivilege: Command\r\n".to_vec();
        for i in 0..100 {
            wire.extend_from_slice(format!("output line {i}\n\n").as_bytes());
        }
        wire.extend_from_slice(b"--END COMMAND--\r\n\r\nEvent: After\r\n\r\n");
        for chunk in [1usize, 5, wire.len()] {
            let (got, _) = decode_chunked(follows_limits(512), &wire, chunk);
            assert_eq!(
                got,
                ["error FollowsTooLarge { limit: 512 }", "Event: After"],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn skipped_follows_output_resyncs_only_at_a_message_start_after_an_empty_line() {
        // Past the limit the output is skipped line by line; an `Event:` line right after
        // a text line is output, not a boundary (only an empty line before it makes one).
        let mut wire = b"Response: Follows\r\nPrivilege: Command\r\n".to_vec();
        for i in 0..60 {
            wire.extend_from_slice(format!("output line {i}\n").as_bytes());
        }
        wire.extend_from_slice(b"Event: only output text\nmore output\n");
        wire.extend_from_slice(b"--END COMMAND--\r\n\r\nEvent: After\r\n\r\n");
        for chunk in [1usize, 5, wire.len()] {
            let (got, stats) = decode_chunked(follows_limits(512), &wire, chunk);
            assert_eq!(
                got,
                ["error FollowsTooLarge { limit: 512 }", "Event: After"],
                "chunk {chunk}"
            );
            assert_eq!(stats.messages, 1, "chunk {chunk}");
        }
    }

    #[test]
    fn overlong_line_in_follows_resyncs_at_the_next_message_start() {
        let mut wire = b"Response: Follows\r\nPrivilege: Command\r\n".to_vec();
        wire.extend_from_slice(&[b'x'; 1000]);
        wire.extend_from_slice(b"\n\r\n");
        wire.extend(events(0, 3));
        for chunk in [1usize, 9, wire.len()] {
            let (got, _) = decode_chunked(follows_limits(1 << 16), &wire, chunk);
            assert_eq!(
                got,
                [
                    "error LineTooLong { limit: 256 }",
                    "Event: E0",
                    "Event: E1",
                    "Event: E2"
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn one_byte_at_a_time_matches_one_chunk() {
        let wire = b"Asterisk Call Manager/11.0.0\r\nEvent: A\r\nB: c: d\r\n\r\n\r\nResponse: Success\nX:\n\n";
        let mut whole = Decoder::new(DecoderLimits::default());
        let expected = decode_all(&mut whole, wire);
        let mut d = Decoder::new(DecoderLimits::default());
        let mut got = Vec::new();
        for b in wire.iter() {
            got.extend(decode_all(&mut d, std::slice::from_ref(b)));
        }
        assert_eq!(got, expected);
        assert_eq!(got.len(), 3);
        assert_eq!(d.stats().bytes, wire.len() as u64);
    }

    #[test]
    fn empty_lines_before_the_banner_are_stray_and_counted() {
        let mut d = Decoder::new(DecoderLimits::default());
        let out = decode_all(
            &mut d,
            b"\r\n\nAsterisk Call Manager/11.0.0\r\nEvent: X\r\n\r\n",
        );
        assert_eq!(
            names(&out),
            ["banner Asterisk Call Manager/11.0.0", "Event: X"]
        );
        assert_eq!(d.stats().stray_blank_lines, 2);
        assert_eq!(d.stats().banners, 1);
    }

    #[test]
    fn reset_expects_a_new_banner() {
        let mut d = Decoder::new(DecoderLimits::default());
        let _ = decode_all(&mut d, b"Asterisk Call Manager/11.0.0\r\nEvent: Half");
        d.reset();
        let out = decode_all(
            &mut d,
            b"Asterisk Call Manager/12.0.0\r\nEvent: New\r\n\r\n",
        );
        assert_eq!(
            names(&out),
            ["banner Asterisk Call Manager/12.0.0", "Event: New"]
        );
    }

    /// One line of a generated event: key, value, a space after the colon, CRLF.
    type Line = (&'static str, String, bool, bool);

    fn arb_event_lines() -> impl proptest::strategy::Strategy<Value = Vec<Line>> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("ActionID"),
            Just("actionid"),
            Just("ActionID "),
            Just("ActionIDs"),
            Just("Channel"),
            Just("Uniqueid"),
            Just(""),
            Just("No colon at all"),
        ];
        proptest::collection::vec((key, "[ -~]{0,40}", any::<bool>(), any::<bool>()), 0..20)
    }

    /// The wire form of generated messages: events, and now and then a response.
    fn wire_of(messages: &[(bool, Vec<Line>)]) -> Vec<u8> {
        let mut wire = Vec::new();
        for (is_event, lines) in messages {
            wire.extend_from_slice(if *is_event {
                b"Event: Test\r\n".as_slice()
            } else {
                b"Response: Success\r\n".as_slice()
            });
            for (key, value, space, crlf) in lines {
                wire.extend_from_slice(key.as_bytes());
                if *key != "No colon at all" {
                    wire.extend_from_slice(if *space { b": " } else { b":" });
                }
                // A value holds no line end (the generator's class excludes them).
                wire.extend_from_slice(value.as_bytes());
                wire.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
            }
            wire.extend_from_slice(b"\r\n");
        }
        wire
    }

    /// Decodes `wire` fed in reads of the given sizes (cycled).
    fn decode_in_reads(
        d: &mut Decoder,
        wire: &[u8],
        reads: &[usize],
    ) -> Vec<Result<Frame, DecodeError>> {
        let mut out = Vec::new();
        let (mut at, mut k) = (0, 0);
        while at < wire.len() {
            let n = reads[k % reads.len()].min(wire.len() - at);
            k += 1;
            let mut rest = &wire[at..at + n];
            at += n;
            while !rest.is_empty() {
                let took = d.feed(rest);
                rest = &rest[took..];
                while let Some(f) = d.decode() {
                    out.push(f);
                }
                if took == 0 {
                    break;
                }
            }
        }
        out
    }

    proptest::proptest! {
        /// An event whose field table is deferred (the client's mode: its lines past the
        /// first few are counted, not split, and the ActionID looked for) is the same
        /// message as one decoded in full: same fields in order, same count, same ActionID, same kind, before and after
        /// it is detached; and a limit is broken at the same place with the same error,
        /// however the input is split into reads.
        #[test]
        fn deferred_events_equal_events_decoded_in_full(
            messages in proptest::collection::vec((proptest::prelude::any::<bool>(), arb_event_lines()), 1..6),
            reads in proptest::collection::vec(1usize..200, 1..8),
            small in proptest::prelude::any::<bool>(),
        ) {
            let limits = if small {
                // More fields than are split before deferring, so that deferred events
                // meet every limit too.
                DecoderLimits::builder()
                    .max_line_len(48)
                    .max_message_len(600)
                    .max_fields(SPLIT_BEFORE_DEFERRING + 4)
                    .buffer_cap(2048)
                    .build()
                    .unwrap()
            } else {
                DecoderLimits::default()
            };
            let wire = wire_of(&messages);
            let mut full = Decoder::without_banner(limits);
            let mut deferred = Decoder::without_banner(limits);
            deferred.share_messages();
            let want = decode_in_reads(&mut full, &wire, &reads);
            let got = decode_in_reads(&mut deferred, &wire, &reads);
            proptest::prop_assert_eq!(want.len(), got.len());
            for (w, g) in want.iter().zip(&got) {
                match (w, g) {
                    (Ok(Frame::Message(w)), Ok(Frame::Message(g))) => {
                        proptest::prop_assert_eq!(w.kind(), g.kind());
                        let long_event = g.kind() == super::super::message::MessageKind::Event
                            && g.len() > SPLIT_BEFORE_DEFERRING;
                        proptest::prop_assert_eq!(g.is_deferred(), long_event);
                        proptest::prop_assert_eq!(w.len(), g.len());
                        proptest::prop_assert_eq!(w.fields().len(), g.fields().len());
                        let wf: Vec<_> = w.fields().collect();
                        let gf: Vec<_> = g.fields().collect();
                        proptest::prop_assert_eq!(&wf, &gf);
                        proptest::prop_assert_eq!(w.action_id_value(), g.action_id_value());
                        proptest::prop_assert_eq!(w.action_id_value(), w.get("ActionID"));
                        proptest::prop_assert_eq!(w.retained_bytes(), g.retained_bytes());
                        proptest::prop_assert_eq!(w, g);
                        let mut owned = g.clone();
                        owned.detach();
                        proptest::prop_assert!(!owned.is_shared());
                        proptest::prop_assert_eq!(w, &owned);
                        let of: Vec<_> = owned.fields().collect();
                        proptest::prop_assert_eq!(&wf, &of);
                        proptest::prop_assert_eq!(owned.action_id_value(), w.action_id_value());
                    }
                    (w, g) => proptest::prop_assert_eq!(w, g),
                }
            }
        }
    }

    /// Only a decoder told to share lends events out of its read buffer, and never a
    /// response: a response goes to the caller, who may keep it as long as it likes, so a
    /// shared slice would keep the whole read buffer alive with it.
    #[test]
    fn only_events_of_a_sharing_decoder_share_its_read_buffer() {
        let wire = b"Event: Hangup\r\nChannel: SIP/1\r\n\r\n\
Response: Success\r\nActionID: 3\r\nMessage: Pong\r\n\r\n";
        let shared = |d: &mut Decoder| -> Vec<(bool, bool)> {
            decode_all(d, wire)
                .into_iter()
                .map(|f| match f {
                    Ok(Frame::Message(m)) => (m.response().is_some(), m.is_shared()),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let mut own = Decoder::without_banner(DecoderLimits::default());
        assert_eq!(shared(&mut own), [(false, false), (true, false)]);
        let mut sharing = Decoder::without_banner(DecoderLimits::default());
        sharing.share_messages();
        assert_eq!(shared(&mut sharing), [(false, true), (true, false)]);
    }

    #[test]
    fn a_deferred_event_too_large_to_share_gets_its_fields_split_at_once() {
        // Over the 64 KiB from which a message keeps the read buffer's allocation.
        let mut wire = b"Event: Big\r\nActionID: 7\r\n".to_vec();
        for i in 0..3000 {
            wire.extend_from_slice(format!("Variable{i}: {}\r\n", "v".repeat(20)).as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        assert!(wire.len() > 64 << 10);
        let mut full = Decoder::without_banner(DecoderLimits::default());
        let mut deferred = Decoder::without_banner(DecoderLimits::default());
        deferred.share_messages();
        let want = decode_all(&mut full, &wire);
        let got = decode_all(&mut deferred, &wire);
        let (Some(Ok(Frame::Message(w))), Some(Ok(Frame::Message(g)))) =
            (want.first(), got.first())
        else {
            panic!("one message each: {want:?} {got:?}");
        };
        assert!(!g.is_shared() && !g.is_deferred());
        assert_eq!(g.len(), 3002);
        assert_eq!(g.action_id(), Some("7"));
        assert_eq!(g.get_str("Variable2999"), Some("vvvvvvvvvvvvvvvvvvvv"));
        assert_eq!(w, g);
        assert!(w.fields().eq(g.fields()));
    }

    proptest::proptest! {
        /// The line-end search finds what `memchr::memchr` finds at every step of a walk
        /// through a buffer, each search starting after the last LF as the decoder's do (so
        /// kept masks are reused), while the buffer's front is cut off at some line ends as
        /// when the decoder takes a message (so a mask kept from before the cut, indexed by
        /// the old positions, must not be used).
        #[test]
        fn the_line_end_search_finds_what_memchr_finds(
            hay in proptest::collection::vec(
                // Sparse line ends, so that many searches cross a 64-byte block.
                proptest::prop_oneof![
                    1 => proptest::prelude::Just(b'\n'),
                    1 => proptest::prelude::Just(b'\r'),
                    30 => proptest::prelude::any::<u8>(),
                ],
                0..600,
            ),
            cuts in proptest::collection::vec(proptest::prelude::any::<bool>(), 64),
        ) {
            let mut lf = LineEnds::default();
            let (mut start, mut front, mut pos, mut k) = (0usize, 0u64, 0usize, 0usize);
            loop {
                let buf = &hay[start..];
                let want = memchr::memchr(b'\n', &buf[pos..]).map(|i| pos + i);
                let got = lf.find(buf, front, pos);
                proptest::prop_assert_eq!(got, want);
                let Some(at) = got else { break };
                pos = at + 1;
                k += 1;
                if cuts[k % cuts.len()] {
                    // A message ends here: the buffer now starts after this LF.
                    start += pos;
                    front += pos as u64;
                    pos = 0;
                }
            }
        }
    }
}
