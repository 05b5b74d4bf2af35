//! What a client sends: Asterisk's input framing (`get_input`/`do_message`) and the parsed
//! request.
//!
//! Framing is emulated byte for byte so that the edge cases recorded in the fixtures come out
//! the same: a 1025-byte input buffer (1022 bytes + CRLF per line; a 1023-byte line gives two
//! errors), at most 128 lines per message, CRLF or bare LF line ends, a NUL cutting a line,
//! and every empty line ending a message (a stray one is an empty message). Each complete
//! message is then parsed with [`ami_proto::Decoder`] into an [`ami_proto::Message`].

use ami_proto::{Decoder, DecoderLimits, Frame, Message};
use std::borrow::Cow;
use std::collections::VecDeque;

/// Asterisk's input buffer holds 1024 bytes (`inbuf[1025]` minus the NUL).
const INPUT_BUF: usize = 1024;
/// `AST_MAX_MANHEADERS`.
const MAX_HEADERS: usize = 128;

/// One unit of client input, as `do_message` sees it at an empty line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// A message (no lines at all for a stray empty line).
    Message(Vec<Vec<u8>>),
    /// A line overflowed the input buffer; the lines kept so far.
    LineTooLong(Vec<Vec<u8>>),
    /// More than 128 lines; the first 128.
    TooManyLines(Vec<Vec<u8>>),
}

/// The input state of one session. Its memory is bounded: one 1024-byte line buffer and at
/// most 128 kept lines of at most 1023 bytes each.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    buf: Vec<u8>,
    /// `buf[..scan]` holds no LF.
    scan: usize,
    lines: Vec<Vec<u8>>,
    hdr_loss: bool,
    too_long: bool,
}

impl Framer {
    /// Takes bytes from `inbox` until one [`Inbound`] is complete; `None` when more input is
    /// needed (everything available was consumed).
    pub(crate) fn next(&mut self, inbox: &mut VecDeque<u8>) -> Option<Inbound> {
        loop {
            if let Some(i) = self.buf[self.scan..].iter().position(|&b| b == b'\n') {
                let lf = self.scan + i;
                let mut end = lf;
                if end > 0 && self.buf[end - 1] == b'\r' {
                    end -= 1;
                }
                // The line is a C string: a NUL ends it.
                if let Some(nul) = self.buf[..end].iter().position(|&b| b == 0) {
                    end = nul;
                }
                let line = self.buf[..end].to_vec();
                self.buf.drain(..=lf);
                self.scan = 0;
                if let Some(done) = self.take_line(line) {
                    return Some(done);
                }
                continue;
            }
            self.scan = self.buf.len();
            if self.buf.len() >= INPUT_BUF {
                // Buffer full without a line end: Asterisk keeps only the last byte (it may
                // be the CR of a CRLF) and marks the message as broken.
                let last = self.buf[self.buf.len() - 1];
                self.buf.clear();
                self.buf.push(last);
                self.scan = 1;
                self.too_long = true;
                continue;
            }
            let room = INPUT_BUF - self.buf.len();
            let n = room.min(inbox.len());
            if n == 0 {
                return None;
            }
            self.buf.extend(inbox.drain(..n));
        }
    }

    fn take_line(&mut self, line: Vec<u8>) -> Option<Inbound> {
        if line.is_empty() {
            let lines = std::mem::take(&mut self.lines);
            if self.hdr_loss {
                // Asterisk leaves the line-too-long flag set in this branch.
                self.hdr_loss = false;
                return Some(Inbound::TooManyLines(lines));
            }
            if self.too_long {
                self.too_long = false;
                return Some(Inbound::LineTooLong(lines));
            }
            return Some(Inbound::Message(lines));
        }
        if self.lines.len() < MAX_HEADERS {
            self.lines.push(line);
        } else {
            self.hdr_loss = true;
        }
        None
    }
}

/// Limits for re-parsing one framed message: never more than 128 lines of 1023 bytes.
fn request_limits() -> DecoderLimits {
    let max_message = MAX_HEADERS * (INPUT_BUF + 2) + 2;
    DecoderLimits::builder()
        .max_line_len(INPUT_BUF)
        .max_message_len(max_message)
        .max_fields(MAX_HEADERS + 1)
        .buffer_cap(max_message + 2)
        .build()
        .unwrap_or_default()
}

/// Parses framed lines into a [`Message`] with `ami_proto`'s decoder.
#[derive(Debug)]
pub(crate) struct RequestParser {
    decoder: Decoder,
}

impl Default for RequestParser {
    fn default() -> Self {
        RequestParser {
            decoder: Decoder::without_banner(request_limits()),
        }
    }
}

impl RequestParser {
    /// Parses one framed message. A message the decoder cannot represent (its first line is
    /// `Response: Follows`, which switches the decoder to legacy Command output) is kept as
    /// raw lines only.
    pub(crate) fn parse(&mut self, lines: Vec<Vec<u8>>) -> Request {
        if lines.is_empty() {
            return Request { msg: None, lines };
        }
        let mut wire = Vec::with_capacity(lines.iter().map(|l| l.len() + 2).sum::<usize>() + 2);
        for l in &lines {
            wire.extend_from_slice(l);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        let mut msg = None;
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = self.decoder.feed(rest);
            rest = &rest[n..];
            while let Some(frame) = self.decoder.decode() {
                if let Ok(Frame::Message(m)) = frame {
                    msg.get_or_insert(m);
                }
            }
            if n == 0 {
                break;
            }
        }
        if msg.is_none() || self.decoder.buffered() > 0 {
            self.decoder.reset();
        }
        Request { msg, lines }
    }
}

/// One client message: the decoded [`Message`] plus the raw lines (UserEvent copies them).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    msg: Option<Message>,
    lines: Vec<Vec<u8>>,
}

/// Splits a raw line at its first colon.
fn split_raw(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b':') {
        Some(c) => (&line[..c], &line[c + 1..]),
        None => (line, &[][..]),
    }
}

/// Asterisk's `ast_skip_blanks`: drops leading bytes up to 0x20.
fn skip_blanks(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b > b' ').unwrap_or(v.len());
    &v[start..]
}

impl Request {
    /// A request built from raw lines only (tests, errors).
    #[cfg(test)]
    pub(crate) fn from_lines(lines: Vec<Vec<u8>>) -> Request {
        RequestParser::default().parse(lines)
    }

    /// (key, value) pairs in order, value with leading blanks skipped.
    fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        match &self.msg {
            Some(m) => m
                .fields()
                .map(|f| (f.key, skip_blanks(f.value.as_bytes())))
                .collect(),
            None => self
                .lines
                .iter()
                .map(|l| {
                    let (k, v) = split_raw(l);
                    (k, skip_blanks(v))
                })
                .collect(),
        }
    }

    /// The first value of `key` as Asterisk's `astman_get_header` returns it: first match,
    /// leading blanks skipped, trailing ones kept; `None` when absent or empty.
    pub(crate) fn get_bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.pairs()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key.as_bytes()))
            .map(|(_, v)| v.to_vec())
            .filter(|v| !v.is_empty())
    }

    /// [`get_bytes`](Self::get_bytes) as text (invalid UTF-8 replaced).
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.get_bytes(key)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// Every non-empty value of `key`, in order (`Variable:` on Originate).
    pub(crate) fn get_all(&self, key: &str) -> Vec<String> {
        self.pairs()
            .into_iter()
            .filter(|(k, v)| k.eq_ignore_ascii_case(key.as_bytes()) && !v.is_empty())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The action name: the first non-empty `Action` value.
    pub(crate) fn action(&self) -> Option<String> {
        self.get_all("Action").into_iter().next()
    }

    /// The ActionID, if present and non-empty.
    pub(crate) fn action_id(&self) -> Option<String> {
        self.get("ActionID")
    }

    /// The raw lines as received (without line ends).
    pub(crate) fn lines(&self) -> &[Vec<u8>] {
        &self.lines
    }

    /// The ActionID found in raw lines (for errors on messages that were not parsed).
    pub(crate) fn action_id_in(lines: &[Vec<u8>]) -> Option<String> {
        lines
            .iter()
            .map(|l| split_raw(l))
            .find(|(k, _)| k.eq_ignore_ascii_case(b"ActionID"))
            .map(|(_, v)| skip_blanks(v))
            .filter(|v| !v.is_empty())
            .map(|v| Cow::into_owned(String::from_utf8_lossy(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(input: &[u8]) -> Vec<Inbound> {
        let mut f = Framer::default();
        let mut inbox: VecDeque<u8> = input.iter().copied().collect();
        let mut out = Vec::new();
        while let Some(x) = f.next(&mut inbox) {
            out.push(x);
        }
        out
    }

    #[test]
    fn crlf_lf_and_stray_blank_lines() {
        let out = frame_all(b"Action: Ping\r\nActionID: 1\r\n\r\n\r\n\nAction: X\n\n");
        assert_eq!(
            out,
            vec![
                Inbound::Message(vec![b"Action: Ping".to_vec(), b"ActionID: 1".to_vec()]),
                Inbound::Message(vec![]),
                Inbound::Message(vec![]),
                Inbound::Message(vec![b"Action: X".to_vec()]),
            ]
        );
    }

    #[test]
    fn line_length_edges_match_asterisk() {
        for (len, expect) in [(1022usize, 1usize), (1023, 2), (1024, 1), (4000, 1)] {
            let mut input = b"Action: Ping\r\n".to_vec();
            input.extend(std::iter::repeat_n(b'x', len));
            input.extend_from_slice(b"\r\n\r\n");
            let out = frame_all(&input);
            assert_eq!(out.len(), expect, "len {len}: {out:?}");
            if len > 1022 {
                assert!(matches!(out[0], Inbound::LineTooLong(_)), "len {len}");
            }
        }
    }

    #[test]
    fn too_many_lines() {
        let mut input = b"Action: Ping\r\n".to_vec();
        for i in 0..130 {
            input.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        let out = frame_all(&input);
        assert!(matches!(&out[0], Inbound::TooManyLines(l) if l.len() == 128));
    }

    #[test]
    fn headers_follow_asterisk_rules() {
        let r = Request::from_lines(vec![
            b"Action: ".to_vec(),
            b"action: Ping ".to_vec(),
            b"ActionID:   a b".to_vec(),
            b"Variable: A=1".to_vec(),
            b"Variable: B=2".to_vec(),
            b"NoColonHere".to_vec(),
        ]);
        assert_eq!(r.action().as_deref(), Some("Ping "));
        assert_eq!(r.action_id().as_deref(), Some("a b"));
        assert_eq!(r.get_all("variable"), ["A=1", "B=2"]);
        assert_eq!(r.get("Missing"), None);
    }

    #[test]
    fn follows_first_line_falls_back_to_raw_lines() {
        let mut p = RequestParser::default();
        let r = p.parse(vec![b"Response: Follows".to_vec(), b"ActionID: z".to_vec()]);
        assert_eq!(r.action_id().as_deref(), Some("z"));
        let r2 = p.parse(vec![b"Action: Ping".to_vec()]);
        assert_eq!(r2.action().as_deref(), Some("Ping"));
    }
}
