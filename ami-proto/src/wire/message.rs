//! `Message`: one server (or client) message, stored once as its wire bytes.

use super::decoder::{content_end, lf_mask};
use bytes::Bytes;
use std::borrow::Cow;
use std::fmt;

/// Where one `Key: Value` line sits inside a message's bytes.
///
/// Offsets are 32-bit: [`DecoderLimits`](crate::DecoderLimits) refuses messages that could
/// overflow them. A field with an empty key range is a raw line of legacy Command output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldSpan {
    pub(crate) key_start: u32,
    pub(crate) key_end: u32,
    pub(crate) value_start: u32,
    pub(crate) value_end: u32,
}

/// The first `:` in `line`. Keys are short (10 bytes on average), too short for a SIMD
/// call's setup to pay off, so eight bytes are tested at a time in a plain `u64` (the
/// classic "has a zero byte" test on the bytes XORed with `:`), then the rest one by one.
#[inline]
fn find_colon(line: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const COLONS: u64 = u64::from_ne_bytes([b':'; 8]);
    let mut at = 0;
    while let Some(word) = line.get(at..at + 8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_le_bytes(bytes) ^ COLONS;
        // Nonzero exactly when some byte of `x` is zero; the lowest set bit marks the first
        // (bits above it may be false positives, never below).
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    line[at..].iter().position(|&b| b == b':').map(|i| at + i)
}

/// Bytes of one [`FieldSpan`] in a message's field table.
pub(crate) const SPAN_LEN: usize = 16;

impl FieldSpan {
    /// The field on the line `buf[start..line_end]` (line ending excluded): split at the
    /// first colon, one space after it dropped; a line with no colon is kept whole as a key
    /// with an empty value, never dropped.
    #[inline]
    pub(crate) fn of_line(buf: &[u8], start: usize, line_end: usize) -> FieldSpan {
        let (key_end, value_start) = match find_colon(&buf[start..line_end]) {
            Some(colon) => {
                let colon = start + colon;
                let v = if colon + 1 < line_end && buf[colon + 1] == b' ' {
                    colon + 2
                } else {
                    colon + 1
                };
                (colon, v)
            }
            None => (line_end, line_end),
        };
        FieldSpan {
            key_start: start as u32,
            key_end: key_end as u32,
            value_start: value_start as u32,
            value_end: line_end as u32,
        }
    }

    /// The table's encoding: four little-endian `u32`s, so that a message's table lives in
    /// the same allocation as its bytes (or in the decoder's shared arena).
    pub(crate) fn encode(&self) -> [u8; SPAN_LEN] {
        let mut out = [0u8; SPAN_LEN];
        for (i, v) in [
            self.key_start,
            self.key_end,
            self.value_start,
            self.value_end,
        ]
        .into_iter()
        .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn decode(raw: &[u8]) -> FieldSpan {
        let at = |i: usize| {
            let mut b = [0u8; 4];
            if let Some(src) = raw.get(i * 4..i * 4 + 4) {
                b.copy_from_slice(src);
            }
            u32::from_le_bytes(b)
        };
        FieldSpan {
            key_start: at(0),
            key_end: at(1),
            value_start: at(2),
            value_end: at(3),
        }
    }

    fn is_action_id(&self, bytes: &[u8]) -> bool {
        self.key_end - self.key_start == 8
            && bytes[self.key_start as usize..self.key_end as usize]
                .eq_ignore_ascii_case(b"ActionID")
    }
}

/// A message's field spans: decoded from its table, or, for a [`Message::deferred`] event,
/// split from its lines as the decoder would have (a line's CR trimmed, split at the first
/// colon); such a message holds only `Key: Value` lines, `left` of them.
pub(crate) enum Spans<'a> {
    Table(std::slice::ChunksExact<'a, u8>),
    Lines {
        wire: &'a [u8],
        /// The 64-byte block of `wire` at `base`, one bit per LF not yet passed.
        base: usize,
        mask: u64,
        /// Where the next line starts.
        start: usize,
        left: usize,
    },
}

impl<'a> Spans<'a> {
    /// The spans of the first `left` lines of `wire` (a message's `Key: Value` lines).
    pub(crate) fn lines(wire: &'a [u8], left: usize) -> Spans<'a> {
        Spans::Lines {
            wire,
            base: 0,
            mask: block_lf_mask(wire, 0),
            start: 0,
            left,
        }
    }
}

/// Appends the encoded spans of the first `count` lines of `wire` to `out`: what
/// [`Spans::Lines`] yields, in one loop (the consumer's share of a deferred event's cost).
/// Not the iterator: `detach` through it cost the consumer 310-330 ns per 20-field event
/// against 150-180 for this loop (`stream_rate`, three alternated pairs).
fn push_line_spans(wire: &[u8], count: usize, out: &mut Vec<u8>) {
    let (mut start, mut base, mut left) = (0usize, 0usize, count);
    while left > 0 && base < wire.len() {
        let mut mask = block_lf_mask(wire, base);
        while mask != 0 && left > 0 {
            let newline = base + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let line_end = content_end(wire, start, newline);
            out.extend_from_slice(&FieldSpan::of_line(wire, start, line_end).encode());
            start = newline + 1;
            left -= 1;
        }
        base += 64;
    }
}

/// One bit per LF in the 64 bytes of `wire` from `base` (fewer at its end).
#[inline]
fn block_lf_mask(wire: &[u8], base: usize) -> u64 {
    match wire.get(base..base + 64) {
        Some(block) => lf_mask(block),
        None => {
            let tail = wire.get(base..).unwrap_or_default();
            let mut block = [0u8; 64];
            block[..tail.len()].copy_from_slice(tail);
            lf_mask(&block)
        }
    }
}

impl Iterator for Spans<'_> {
    type Item = FieldSpan;

    #[inline]
    fn next(&mut self) -> Option<FieldSpan> {
        match self {
            Spans::Table(chunks) => chunks.next().map(FieldSpan::decode),
            Spans::Lines {
                wire,
                base,
                mask,
                start,
                left,
            } => {
                if *left == 0 {
                    return None;
                }
                while *mask == 0 {
                    *base += 64;
                    if *base >= wire.len() {
                        return None;
                    }
                    *mask = block_lf_mask(wire, *base);
                }
                let newline = *base + mask.trailing_zeros() as usize;
                *mask &= *mask - 1;
                let line_end = content_end(wire, *start, newline);
                let span = FieldSpan::of_line(wire, *start, line_end);
                *start = newline + 1;
                *left -= 1;
                Some(span)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            Spans::Table(chunks) => chunks.len(),
            Spans::Lines { left, .. } => *left,
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Spans<'_> {}

/// What a message is, decided by its first line, as Asterisk does.
///
/// `Event:` wins over `Response:`: an `OriginateResponse` is an event that also carries a
/// `Response:` field, and only its first line says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// First line `Response: ...`: the answer to an action.
    Response,
    /// First line `Event: ...`: an event, a list item or a list's end.
    Event,
    /// First line `Action: ...`: a request (what a server decodes).
    Action,
    /// Anything else; kept, never dropped, so the caller can see it.
    Other,
}

/// One AMI message: ordered fields over a single buffer.
///
/// Cloning is cheap (reference counts). Keys are
/// matched ASCII case-insensitively. Repeated keys (`Output`, `Variable`, `ChanVariable`) are
/// all kept, in wire order. Values are raw bytes: a caller name in Latin-1 is kept as sent and
/// read through [`Value::as_bytes`] or [`Value::to_str_lossy`].
#[derive(Clone)]
pub struct Message {
    /// The wire bytes, then the field table ([`FieldSpan`]s encoded, [`SPAN_LEN`] bytes
    /// each): one allocation per message. A shared message holds the wire bytes only.
    data: Bytes,
    /// A shared message's field table, a slice of the decoder's table arena (empty for any
    /// other message).
    shared_table: Bytes,
    /// Length of the wire bytes at the front of `data`.
    wire_len: u32,
    /// Number of fields.
    field_count: u32,
    kind: MessageKind,
    /// The first `ActionID` field's value, as a span of the wire bytes: found while decoding,
    /// so that routing a message by its ActionID costs no search.
    action_id: Option<(u32, u32)>,
    /// `data` and `shared_table` are slices of the decoder's buffers (an event on its way
    /// through the client's queue): see [`Message::detach`].
    shared: bool,
    /// The field table was never built (a shared event, see [`Message::deferred`]): the
    /// spans come from the wire bytes' lines whenever they are asked for.
    deferred: bool,
}

impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.kind == other.kind
            && self.wire_bytes() == other.wire_bytes()
            && self.spans().eq(other.spans())
    }
}

impl Eq for Message {}

/// `bytes` without the spaces and tabs at either end. Two byte compares when there are
/// none, as on every value Asterisk sends.
#[inline]
pub(crate) fn trim_blanks(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// A field value: raw bytes, with text views.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Value<'a>(&'a [u8]);

impl<'a> Value<'a> {
    /// The value as sent.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
    /// The value as text, if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.0).ok()
    }
    /// The value as text, with invalid UTF-8 replaced by U+FFFD.
    pub fn to_str_lossy(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.0)
    }
    /// True when the value has no bytes (Asterisk sends `Key: ` for empty values).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Compares to `s` ignoring ASCII case.
    pub fn eq_ignore_ascii_case(&self, s: &str) -> bool {
        self.0.eq_ignore_ascii_case(s.as_bytes())
    }
    /// The value without the spaces and tabs around it. A value keeps the blanks the server
    /// put after the one space that follows the colon, and at its end (Asterisk never
    /// trims them); a word the client acts on (`Response: Error`, `EventList: start`) is
    /// compared trimmed, so a padded one is still read as that word.
    pub fn trim(&self) -> Value<'a> {
        Value(trim_blanks(self.0))
    }
    /// Whether the value, trimmed of the spaces and tabs around it, is `word` in any ASCII
    /// case: how the client reads the words it acts on.
    pub fn is_word(&self, word: &str) -> bool {
        self.trim().eq_ignore_ascii_case(word)
    }
}

impl PartialEq<str> for Value<'_> {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Value<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_str_lossy())
    }
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_str_lossy(), f)
    }
}

/// One field of a message, as returned by [`Message::fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The key as sent (case preserved). Empty for a raw line of legacy Command output.
    pub key: &'a [u8],
    /// The value, without the separating `: ` and without the line ending.
    pub value: Value<'a>,
}

impl Field<'_> {
    /// The key as text; keys that are not UTF-8 come back lossily converted.
    pub fn key_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.key)
    }
}

impl Message {
    /// A message from the decoder: `data` holds the wire bytes (`wire_len` of them) and then
    /// the table of `fields`, or, when `shared` (slices of the decoder's buffers), only the
    /// wire bytes, the table being `shared_table`; `action_id` is the span of the first
    /// `ActionID` value.
    pub(crate) fn new(
        data: Bytes,
        shared_table: Bytes,
        wire_len: usize,
        fields: &[FieldSpan],
        action_id: Option<(u32, u32)>,
        shared: bool,
    ) -> Message {
        let kind = match fields.first() {
            Some(f) => {
                let key = &data[f.key_start as usize..f.key_end as usize];
                if key.eq_ignore_ascii_case(b"Event") {
                    MessageKind::Event
                } else if key.eq_ignore_ascii_case(b"Response") {
                    MessageKind::Response
                } else if key.eq_ignore_ascii_case(b"Action") {
                    MessageKind::Action
                } else {
                    MessageKind::Other
                }
            }
            None => MessageKind::Other,
        };
        Message {
            data,
            shared_table,
            wire_len: wire_len as u32,
            field_count: fields.len() as u32,
            kind,
            action_id,
            shared,
            deferred: false,
        }
    }

    /// A shared event whose field table is left to whoever takes it out of the queue (see
    /// [`detach`](Self::detach)): past its first few lines the reader only counted its
    /// `field_count` lines and looked for its ActionID, so that on a multi-threaded runtime
    /// the consumer's thread, not the reader's, splits the lines into fields (the reader is
    /// the bound; the consumer mostly waits). Asterisk's events run to 17 lines on average.
    /// `first` is its first line's field.
    pub(crate) fn deferred(
        data: Bytes,
        wire_len: usize,
        first: &FieldSpan,
        field_count: usize,
        action_id: Option<(u32, u32)>,
    ) -> Message {
        let mut m = Message::new(data, Bytes::new(), wire_len, &[*first], action_id, true);
        m.field_count = field_count as u32;
        m.deferred = true;
        m
    }

    /// The span of the first `ActionID` value among `fields` of `bytes`.
    pub(crate) fn find_action_id(bytes: &[u8], fields: &[FieldSpan]) -> Option<(u32, u32)> {
        fields
            .iter()
            .find(|f| f.is_action_id(bytes))
            .map(|f| (f.value_start, f.value_end))
    }

    /// Heap bytes this message keeps alive: its wire bytes and its field table. A message an
    /// application holds owns exactly these (it never shares a larger read buffer), so the sum
    /// over the messages an application keeps is their memory. The client's queue and list
    /// caps count this (for an event still in the queue: what it will own once taken out).
    pub fn retained_bytes(&self) -> usize {
        self.wire_len as usize + self.field_count as usize * SPAN_LEN
    }

    /// Whether the field table is still to be built (see [`Message::deferred`]).
    #[cfg(test)]
    pub(crate) fn is_deferred(&self) -> bool {
        self.deferred
    }

    /// Bytes of the decoder's buffers this message holds slices of: its wire bytes and, if
    /// it has one there, its field table (0 for a message that owns its bytes).
    pub(crate) fn shared_bytes(&self) -> usize {
        if self.shared {
            self.wire_len as usize + self.shared_table.len()
        } else {
            0
        }
    }

    /// Whether this message still shares the decoder's buffer (see [`detach`](Self::detach)).
    #[cfg(test)]
    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    /// Gives a message that still shares the decoder's buffers an allocation of its own (a
    /// copy of its bytes and of its field table, in one); a no-op for any other message.
    ///
    /// Events wait in the client's queue as slices of the buffer they were read into: the
    /// reader allocates nothing per event, and the copy is made by whoever takes the event
    /// out, so that on a multi-threaded runtime the consumer's thread both allocates and
    /// frees each message (an allocation freed by another thread than the one that made it
    /// costs the allocator a lock; per event, that lock was most of the stream's cost).
    pub(crate) fn detach(&mut self) {
        if !self.shared {
            return;
        }
        let table_len = self.field_count as usize * SPAN_LEN;
        let mut data = Vec::with_capacity(self.wire_len as usize + table_len);
        data.extend_from_slice(self.wire_bytes());
        if self.deferred {
            push_line_spans(self.wire_bytes(), self.field_count as usize, &mut data);
        } else {
            data.extend_from_slice(&self.shared_table);
        }
        // Exactly the capacity asked for: `Bytes` takes the vector without a second
        // allocation.
        self.data = Bytes::from(data);
        self.shared_table = Bytes::new();
        self.shared = false;
        self.deferred = false;
    }

    /// What the first line says this message is.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// Whether Asterisk would run this message as an action: it has an `Action` header,
    /// first or further down, whatever its first header, since Asterisk reads `Action`
    /// wherever it is (a client may send its `ActionID`, or even a `Response` or `Event`
    /// line, first). What decides whether a `Secret` or `Key` is a credential to hide
    /// (in an event or a response they are data); whitespace around the key is ignored,
    /// hiding too much being the safe side.
    pub fn runs_as_action(&self) -> bool {
        // Whatever the first header: a client's `Response: x` or `Event: x` line before its
        // `Action: Login` does not stop Asterisk from running the login.
        self.kind == MessageKind::Action
            || self
                .fields()
                .any(|f| f.key.trim_ascii().eq_ignore_ascii_case(b"Action"))
    }

    /// The message exactly as it arrived, line endings included.
    pub fn wire_bytes(&self) -> &[u8] {
        &self.data[..self.wire_len as usize]
    }

    /// Number of fields (lines) in the message.
    pub fn len(&self) -> usize {
        self.field_count as usize
    }

    /// True when the message has no fields (the decoder never yields one).
    pub fn is_empty(&self) -> bool {
        self.field_count == 0
    }

    /// The encoded field table.
    fn table(&self) -> &[u8] {
        if self.shared {
            &self.shared_table
        } else {
            self.data.get(self.wire_len as usize..).unwrap_or_default()
        }
    }

    fn spans(&self) -> Spans<'_> {
        if self.deferred {
            Spans::lines(self.wire_bytes(), self.field_count as usize)
        } else {
            Spans::Table(self.table().chunks_exact(SPAN_LEN))
        }
    }

    fn field_at(&self, span: &FieldSpan) -> Field<'_> {
        let bytes = self.wire_bytes();
        Field {
            key: &bytes[span.key_start as usize..span.key_end as usize],
            value: Value(&bytes[span.value_start as usize..span.value_end as usize]),
        }
    }

    /// All fields in wire order, repeated keys included.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = Field<'_>> + '_ {
        self.spans().map(move |s| self.field_at(&s))
    }

    /// The first value for `key` (ASCII case-insensitive).
    pub fn get(&self, key: &str) -> Option<Value<'_>> {
        let key = key.as_bytes();
        self.fields()
            .find(|f| !f.key.is_empty() && f.key.eq_ignore_ascii_case(key))
            .map(|f| f.value)
    }

    /// The first value for `key` as text, if present and valid UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.as_str())
    }

    /// Every value for `key`, in wire order (`Output`, `Variable`, `ChanVariable` repeat).
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = Value<'a>> + 'a {
        let key = key.as_bytes();
        self.fields()
            .filter(move |f| !f.key.is_empty() && f.key.eq_ignore_ascii_case(key))
            .map(|f| f.value)
    }

    /// The `Event` name, for an event.
    pub fn event(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Event => self.first_value_str(),
            _ => None,
        }
    }

    /// The `Response` value (`Success`, `Error`, `Goodbye`, `Follows`), for a response.
    pub fn response(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Response => self.first_value_str(),
            _ => None,
        }
    }

    /// The `Action` name, for a request decoded on the server side.
    pub fn action(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Action => self.first_value_str(),
            _ => None,
        }
    }

    /// The first field's value as sent (the `Event` or `Response` value), without the
    /// UTF-8 check of [`event`](Self::event) and [`response`](Self::response): for the
    /// client's per-message name checks.
    pub(crate) fn first_value(&self) -> Option<Value<'_>> {
        self.spans().next().map(|s| self.field_at(&s).value)
    }

    fn first_value_str(&self) -> Option<&str> {
        self.spans()
            .next()
            .and_then(|s| self.field_at(&s).value.as_str())
    }

    /// The `ActionID` field, if present and non-empty (Asterisk treats empty as absent).
    pub fn action_id(&self) -> Option<&str> {
        self.action_id_value()
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    }

    /// The first `ActionID` value as sent (what [`get`](Self::get) would find), without a
    /// search: the client routes every message by it.
    pub(crate) fn action_id_value(&self) -> Option<Value<'_>> {
        let (start, end) = self.action_id?;
        self.wire_bytes()
            .get(start as usize..end as usize)
            .map(Value)
    }

    /// The lines of Command output, in either format: `Output:` fields (Asterisk 14+) or the
    /// raw text of a legacy `Response: Follows` message (Asterisk 13 and older).
    pub fn command_output(&self) -> impl Iterator<Item = Value<'_>> + '_ {
        self.fields()
            .filter(|f| f.key.is_empty() || f.key.eq_ignore_ascii_case(b"Output"))
            .map(|f| f.value)
    }
}

/// Debug prints every field, but the values of an action's `Secret` and `Key` (a decoded
/// capture of what a client sent, or what a simulated server read), as
/// [`Action`](crate::Action)'s Debug does: they are secrets wherever they are printed. The
/// same names in events and responses without an `Action` header (AstDB's `Key`) are
/// data, and shown ([`Message::runs_as_action`]). The credentials Asterisk sends of its
/// own configuration (PJSIP's auth `Password`, `PasswordDigest`, `OauthSecret`,
/// `RefreshToken`, a voicemail's `NewPassword`) are hidden in every message: a list
/// result or event printed into a log must not carry them.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = self.runs_as_action();
        let mut m = f.debug_map();
        for field in self.fields() {
            let key = field.key_str();
            let key_name = key.trim();
            if (action && crate::wire::action::is_secret_key(key_name))
                || crate::wire::action::is_credential_field(key_name)
            {
                m.entry(&key, &format_args!("<redacted>"));
            } else {
                m.entry(&key, &field.value);
            }
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::wire::decoder::{Decoder, Frame};
    use crate::wire::limits::DecoderLimits;

    fn one(wire: &[u8]) -> super::Message {
        let mut d = Decoder::without_banner(DecoderLimits::default());
        d.feed(wire);
        match d.decode() {
            Some(Ok(Frame::Message(m))) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn debug_of_a_decoded_action_never_shows_its_secret_or_key_but_an_events_key_is_data() {
        let login = one(b"Action: Login\r\nUsername: admin\r\nSecret: TOPSECRET1\r\n\r\n");
        let md5 = one(b"Action: Login\r\nAuthType: MD5\r\nKey: 0123456789abcdef\r\n\r\n");
        for m in [&login, &md5] {
            let shown = format!("{m:?}");
            assert!(!shown.contains("TOPSECRET1") && !shown.contains("0123456789abcdef"));
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        let astdb =
            one(b"Event: DBGetResponse\r\nFamily: cidname\r\nKey: 5551234\r\nVal: Bob\r\n\r\n");
        assert!(format!("{astdb:?}").contains("5551234"));
    }

    #[test]
    fn debug_of_an_auth_list_item_hides_the_credentials_asterisk_sends() {
        let auth = one(
            b"Event: AuthDetail\r\nActionID: 7\r\nObjectName: 1001-auth\r\nUsername: 1001\r\n\
Password: SIPPASS77\r\nPasswordDigest: 5f4dcc3b5aa765d61d8327deb882cf99\r\n\
OauthSecret: OAUTHS3\r\nRefreshToken: REFRESH9\r\n\r\n",
        );
        let shown = format!("{auth:?}");
        for secret in [
            "SIPPASS77",
            "5f4dcc3b5aa765d61d8327deb882cf99",
            "OAUTHS3",
            "REFRESH9",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(shown.matches("<redacted>").count(), 4, "{shown}");
        // The rest is data, and the values stay readable to the program.
        assert!(shown.contains("1001-auth"), "{shown}");
        assert_eq!(auth.get_str("Password"), Some("SIPPASS77"));
        let changed =
            one(b"Event: VoicemailPasswordChange\r\nMailbox: 100\r\nnewpassword : 4321\r\n\r\n");
        assert!(!format!("{changed:?}").contains("4321"), "{changed:?}");
    }

    #[test]
    fn debug_of_a_login_whose_action_header_is_not_first_hides_its_secret() {
        // Asterisk reads `Action` wherever it is: a client that sends its ActionID first
        // still logs in, and the decoder calls the message `Other`.
        let login =
            one(b"ActionID: 1\r\nAction: Login\r\nUsername: admin\r\nSecret : TOPSECRET1\r\n\r\n");
        assert_eq!(login.kind(), super::MessageKind::Other);
        assert!(login.runs_as_action());
        let shown = format!("{login:?}");
        assert!(!shown.contains("TOPSECRET1"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let data = one(b"Foo: bar\r\nKey: 5551234\r\n\r\n");
        assert!(!data.runs_as_action());
        assert!(format!("{data:?}").contains("5551234"));
    }

    #[test]
    fn debug_of_a_login_whose_first_header_is_response_or_event_hides_its_secret() {
        // Asterisk's process_message reads `Action` wherever it is, whatever comes first: a
        // capture of a client that sent this logged in with its secret.
        for wire in [
            &b"Response: x\r\nAction: Login\r\nUsername: admin\r\nSecret: TOPSECRET1\r\n\r\n"[..],
            b"Event: x\r\nAction: Login\r\nAuthType: MD5\r\nKey: TOPSECRET1\r\n\r\n",
        ] {
            let login = one(wire);
            assert!(login.runs_as_action());
            let shown = format!("{login:?}");
            assert!(!shown.contains("TOPSECRET1"), "{shown}");
        }
        // A server's DBGetResponse has no Action header: its Key is data.
        let astdb = one(b"Event: DBGetResponse\r\nFamily: f\r\nKey: 5551234\r\n\r\n");
        assert!(!astdb.runs_as_action());
        assert!(format!("{astdb:?}").contains("5551234"));
    }

    #[test]
    fn originate_response_is_an_event_despite_its_response_field() {
        let m = one(b"Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: a1\r\nResponse: Failure\r\n\r\n");
        assert_eq!(m.kind(), super::MessageKind::Event);
        assert_eq!(m.event(), Some("OriginateResponse"));
        assert_eq!(m.response(), None);
        assert_eq!(m.get_str("response"), Some("Failure"));
        assert_eq!(m.action_id(), Some("a1"));
    }

    #[test]
    fn value_keeps_colons_and_missing_space_is_tolerated() {
        let m = one(b"Response: Success\r\nHeader2: two: with colon\r\nTight:x\r\nEmpty: \r\n\r\n");
        assert_eq!(m.get_str("Header2"), Some("two: with colon"));
        assert_eq!(m.get_str("tight"), Some("x"));
        assert_eq!(m.get("EMPTY").map(|v| v.is_empty()), Some(true));
    }

    #[test]
    fn a_line_that_starts_with_its_colon_has_an_empty_key_and_its_value() {
        // The colon at the very first byte of the decoder's buffer: the space check after it
        // must not step below the line's start.
        let m = one(b": x\r\nFoo: y\r\n\r\n");
        let fields: Vec<_> = m.fields().map(|f| (f.key, f.value.as_bytes())).collect();
        assert_eq!(fields, [(&b""[..], &b"x"[..]), (b"Foo", b"y")]);
        assert_eq!(m.kind(), super::MessageKind::Other);
    }

    #[test]
    fn repeated_keys_are_all_kept_in_order() {
        let m = one(
            b"Response: Success\r\nOutput: a\r\nVariable: x=1\r\noutput: b\r\nOutput: \r\n\r\n",
        );
        let out: Vec<_> = m.get_all("Output").map(|v| v.to_string()).collect();
        assert_eq!(out, ["a", "b", ""]);
        assert_eq!(m.command_output().count(), 3);
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn non_utf8_value_is_kept_as_bytes() {
        let m = one(b"Event: Newchannel\r\nCallerIDName: Jos\xe9\r\nUniqueid: 1.2\r\n\r\n");
        let v = m.get("CallerIDName").unwrap();
        assert_eq!(v.as_bytes(), b"Jos\xe9");
        assert_eq!(v.as_str(), None);
        assert_eq!(v.to_str_lossy(), "Jos\u{fffd}");
        assert_eq!(m.get_str("Uniqueid"), Some("1.2"));
    }

    #[test]
    fn empty_action_id_counts_as_absent() {
        let m = one(b"Response: Success\r\nActionID: \r\nPing: Pong\r\n\r\n");
        assert_eq!(m.action_id(), None);
    }

    #[test]
    fn an_owned_message_holds_its_bytes_and_field_table_in_one_allocation() {
        let m = one(b"Response: Success\r\nActionID: 7\r\nPing: Pong\r\n\r\n");
        assert!(!m.is_shared());
        assert!(m.shared_table.is_empty());
        assert_eq!(m.data.len(), m.retained_bytes());
        assert_eq!(
            m.retained_bytes(),
            m.wire_bytes().len() + 3 * super::SPAN_LEN
        );
        assert_eq!(m.action_id(), Some("7"));
    }

    #[test]
    fn messages_with_the_same_shape_but_other_bytes_are_not_equal() {
        let a = one(b"Event: Hangup\r\nCause: 16\r\n\r\n");
        let b = one(b"Event: Hangup\r\nCause: 17\r\n\r\n");
        assert_eq!(a, one(b"Event: Hangup\r\nCause: 16\r\n\r\n"));
        assert_ne!(a, b);
    }

    #[test]
    fn the_fields_iterator_knows_its_length_owned_or_deferred() {
        let owned = one(b"Response: Success\r\nActionID: 7\r\nPing: Pong\r\n\r\n");
        assert_eq!(owned.fields().len(), 3);
        let mut wire = b"Event: VarSet\r\n".to_vec();
        for i in 0..19 {
            wire.extend_from_slice(format!("Line{i}: v\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        let mut d = Decoder::without_banner(DecoderLimits::default());
        d.share_messages();
        d.feed(&wire);
        let Some(Ok(Frame::Message(deferred))) = d.decode() else {
            panic!("expected a message");
        };
        assert!(deferred.is_deferred());
        assert_eq!(deferred.fields().len(), 20);
        assert_eq!(deferred.fields().count(), 20);
    }

    #[test]
    fn a_shared_message_counts_its_wire_bytes_and_table_until_detached() {
        let wire = b"Event: Hangup\r\nActionID: 7\r\nCause: 16\r\n\r\n";
        let mut d = Decoder::without_banner(DecoderLimits::default());
        d.share_messages();
        d.feed(wire);
        let Some(Ok(Frame::Message(mut m))) = d.decode() else {
            panic!("expected a message");
        };
        assert!(m.is_shared() && !m.is_deferred());
        assert_eq!(m.shared_bytes(), wire.len() + 3 * super::SPAN_LEN);
        m.detach();
        assert_eq!(m.shared_bytes(), 0);
    }

    #[test]
    fn values_compare_to_text_exactly_and_words_ignoring_case_and_padding() {
        let m = one(b"Response:  Success\t\r\nActionID: ab\r\nEmpty: \r\n\r\n");
        let id = m.get("ActionID").unwrap();
        assert!(id == "ab" && id == *"ab");
        assert!(id != "AB" && id != *"ax");
        assert!(!id.is_empty() && m.get("Empty").unwrap().is_empty());
        let response = m.get("Response").unwrap();
        assert!(response.is_word("success") && !response.is_word("error"));
        assert!(id.eq_ignore_ascii_case("AB") && !id.eq_ignore_ascii_case("ax"));
    }

    #[test]
    fn only_an_action_names_its_action_and_its_first_value_is_that_name() {
        let login = one(b"Action: Login\r\nUsername: admin\r\n\r\n");
        assert_eq!(login.action(), Some("Login"));
        assert_eq!(
            login.first_value().map(|v| v.as_bytes()),
            Some(&b"Login"[..])
        );
        let event = one(b"Event: FullyBooted\r\n\r\n");
        assert_eq!(event.action(), None);
    }

    #[test]
    fn a_message_is_empty_only_without_fields() {
        let m = super::Message::new(
            bytes::Bytes::new(),
            bytes::Bytes::new(),
            0,
            &[],
            None,
            false,
        );
        assert!(m.is_empty());
        assert_eq!((m.len(), m.kind()), (0, super::MessageKind::Other));
        assert!(!one(b"Event: FullyBooted\r\n\r\n").is_empty());
    }

    /// Event-like messages: field keys (ActionID in any case, repeated or not) and values.
    fn arb_message() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("ActionID".to_string()),
            Just("actionid".to_string()),
            Just("ACTIONID".to_string()),
            Just("ActionIDx".to_string()),
            Just("Action".to_string()),
            "[A-Za-z]{1,12}",
        ];
        let field = (key, "[ -~]{0,40}", any::<bool>(), any::<bool>());
        proptest::collection::vec(field, 0..12).prop_map(|fields| {
            let mut wire = b"Event: Test\r\n".to_vec();
            for (k, v, space, crlf) in fields {
                wire.extend_from_slice(k.as_bytes());
                wire.extend_from_slice(if space { b": " } else { b":" });
                wire.extend_from_slice(v.as_bytes());
                wire.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            }
            wire.extend_from_slice(b"\r\n");
            wire
        })
    }

    proptest::proptest! {
        /// The ActionID the decoder finds while decoding is the one a search finds, and a
        /// shared message detached into one allocation has the same fields and size.
        #[test]
        fn shared_messages_detach_to_the_same_fields_and_find_the_same_action_id(
            messages in proptest::collection::vec(arb_message(), 1..8)
        ) {
            let mut d = Decoder::without_banner(DecoderLimits::default());
            d.share_messages();
            let wire: Vec<u8> = messages.concat();
            d.feed(&wire);
            let mut n = 0;
            while let Some(frame) = d.decode() {
                let Ok(Frame::Message(shared)) = frame else {
                    panic!("expected a message, got {frame:?}");
                };
                proptest::prop_assert!(shared.is_shared());
                proptest::prop_assert_eq!(shared.action_id_value(), shared.get("ActionID"));
                let mut owned = shared.clone();
                owned.detach();
                proptest::prop_assert!(!owned.is_shared());
                proptest::prop_assert_eq!(owned.data.len(), owned.retained_bytes());
                proptest::prop_assert_eq!(owned.retained_bytes(), shared.retained_bytes());
                proptest::prop_assert_eq!(&owned, &shared);
                let a: Vec<_> = owned.fields().collect();
                let b: Vec<_> = shared.fields().collect();
                proptest::prop_assert_eq!(a, b);
                proptest::prop_assert_eq!(owned.action_id_value(), shared.action_id_value());
                proptest::prop_assert_eq!(owned.wire_bytes(), &messages[n][..]);
                n += 1;
            }
            proptest::prop_assert_eq!(n, messages.len());
        }
    }

    proptest::proptest! {
        /// The eight-bytes-at-a-time colon search finds what a byte-by-byte search finds,
        /// wherever the colon sits (or whether there is one) and whatever surrounds it,
        /// including bytes whose high bit is set.
        #[test]
        fn the_word_colon_search_finds_the_first_colon_as_a_byte_search_does(
            line in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::Just(b':'),
                    proptest::prelude::Just(b';'),
                    proptest::prelude::Just(0xBA_u8),
                    proptest::prelude::any::<u8>(),
                ],
                0..40,
            )
        ) {
            let want = line.iter().position(|&b| b == b':');
            proptest::prop_assert_eq!(super::find_colon(&line), want);
        }
    }
}
