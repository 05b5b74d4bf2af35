//! What the server sends: a message builder and the per-session output buffer with the
//! slow-reader (write timeout) bookkeeping.

use crate::clock::later;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Where `Key: value` lines are written: a message, or an event under construction.
pub(crate) trait PushField {
    /// Appends `Key: value`.
    fn push(&mut self, key: &str, value: impl AsRef<[u8]>);
}

impl PushField for Msg {
    fn push(&mut self, key: &str, value: impl AsRef<[u8]>) {
        Msg::push(self, key, value);
    }
}

/// Builds one server message: `Key: Value\r\n` lines and the closing empty line.
#[derive(Debug, Default, Clone)]
pub(crate) struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    /// Starts `Response: <kind>`.
    pub(crate) fn response(kind: &str) -> Msg {
        Msg::default().field("Response", kind)
    }

    /// Starts `Event: <name>` with no Privilege line (list items).
    pub(crate) fn item(name: &str) -> Msg {
        Msg::default().field("Event", name)
    }

    /// Appends `Key: value`.
    pub(crate) fn field(mut self, key: &str, value: impl AsRef<[u8]>) -> Msg {
        self.push(key, value);
        self
    }

    /// Appends `Key: value` in place.
    pub(crate) fn push(&mut self, key: &str, value: impl AsRef<[u8]>) {
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value.as_ref());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Appends `ActionID: id` when there is one.
    pub(crate) fn id(mut self, id: Option<&str>) -> Msg {
        if let Some(id) = id {
            self.push("ActionID", id);
        }
        self
    }

    /// Appends an ActionID the way handlers that format it into a fixed `char[cap]` buffer
    /// do: an overlong `ActionID: ...\r\n` loses its end, line end included, so the next
    /// header is glued onto it (a real Asterisk quirk).
    pub(crate) fn id_capped(mut self, id: Option<&str>, cap: usize) -> Msg {
        if let Some(id) = id {
            let mut line = format!("ActionID: {id}\r\n").into_bytes();
            line.truncate(cap.saturating_sub(1));
            self.buf.extend_from_slice(&line);
        }
        self
    }

    /// Appends a channel's snapshot block (list items carry it unprefixed).
    pub(crate) fn channel(mut self, ch: &crate::calls::channel::Channel) -> Msg {
        ch.block(&mut self, "");
        self
    }

    /// The lines so far, without the closing empty line (a template to append to).
    pub(crate) fn unfinished(self) -> Vec<u8> {
        self.buf
    }

    /// Closes the message with its empty line and returns the bytes.
    pub(crate) fn end(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"\r\n");
        self.buf
    }
}

/// A helper response as `astman_send_response_full` writes it.
pub(crate) fn simple(kind: &str, id: Option<&str>, message: &str) -> Vec<u8> {
    Msg::response(kind).id(id).field("Message", message).end()
}

/// `astman_send_error`.
pub(crate) fn error(id: Option<&str>, message: &str) -> Vec<u8> {
    simple("Error", id, message)
}

/// `astman_send_ack`.
pub(crate) fn ack(id: Option<&str>, message: &str) -> Vec<u8> {
    simple("Success", id, message)
}

/// `astman_send_listack`: the start of an event list.
pub(crate) fn list_start(id: Option<&str>, message: &str) -> Vec<u8> {
    Msg::response("Success")
        .id(id)
        .field("EventList", "start")
        .field("Message", message)
        .end()
}

/// `astman_send_list_complete_start`, without its end (callers add extra keys).
pub(crate) fn list_complete(name: &str, id: Option<&str>, items: usize) -> Msg {
    Msg::item(name)
        .id(id)
        .field("EventList", "Complete")
        .field("ListItems", items.to_string())
}

/// One session's output: bytes queued for the client, what the client has read, and the
/// write-timeout clock.
///
/// The first `socket_buffer` untransmitted bytes sit in the "kernel". A write (one message:
/// an event, a list item, a response) that does not fit there is blocked; Asterisk gives
/// each write `writetimeout` from the moment it starts, so the stall clock restarts whenever
/// a whole write gets into the kernel.
#[derive(Debug, Default)]
pub(crate) struct OutBuf {
    buf: Vec<u8>,
    /// `buf[..head]` was read by the client.
    head: usize,
    /// Absolute offset of `buf[0]` in the session's output stream.
    base: u64,
    /// Absolute end offsets of writes not yet wholly inside the kernel window.
    ends: VecDeque<u64>,
    /// When the current blocked write started.
    stalled_since: Option<Instant>,
    /// Total bytes ever queued.
    pub(crate) queued: u64,
}

impl OutBuf {
    /// Bytes queued and not yet read.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Number of bytes queued and not yet read.
    pub(crate) fn backlog(&self) -> usize {
        self.buf.len() - self.head
    }

    fn transmitted_abs(&self) -> u64 {
        self.base + self.head as u64
    }

    /// Whether `len` more bytes written now would all be wholly inside the kernel window at
    /// once: no write is blocked and the backlog stays within `window`. Then a run of
    /// writes is the same as one ([`write_fitting`](Self::write_fitting)).
    pub(crate) fn fits(&self, len: usize, window: usize) -> bool {
        self.ends.is_empty() && self.backlog().saturating_add(len) <= window
    }

    /// Queues writes that [`fit`](Self::fits) (back to back in `bytes`): none blocks, so
    /// no write end is kept and the stall clock stays off.
    pub(crate) fn write_fitting(&mut self, bytes: &[u8]) {
        debug_assert!(self.ends.is_empty() && self.stalled_since.is_none());
        self.buf.extend_from_slice(bytes);
        self.queued += bytes.len() as u64;
    }

    /// Queues the messages in `bytes` (one or more, back to back), each its own write with
    /// its own write end: Asterisk writes every event, list item and response separately,
    /// each with its own `writetimeout`, so a multi-message reply (a list) is as many writes.
    pub(crate) fn write(&mut self, bytes: &[u8], now: Instant, window: usize) {
        if bytes.is_empty() {
            return;
        }
        let start = self.base + self.buf.len() as u64;
        self.buf.extend_from_slice(bytes);
        self.queued += bytes.len() as u64;
        let mut at = 0;
        while let Some(p) = bytes[at..].windows(4).position(|w| w == b"\r\n\r\n") {
            at += p + 4;
            if at < bytes.len() {
                self.ends.push_back(start + at as u64);
            }
        }
        self.ends.push_back(start + bytes.len() as u64);
        self.settle(now, window, false);
    }

    /// The client read `n` bytes (clamped to what is queued).
    pub(crate) fn advance(&mut self, n: usize, now: Instant, window: usize) -> usize {
        let n = n.min(self.backlog());
        self.head += n;
        if self.head == self.buf.len() {
            self.base += self.buf.len() as u64;
            self.buf.clear();
            self.head = 0;
        } else if self.head > (64 << 10) && self.head * 2 > self.buf.len() {
            self.buf.drain(..self.head);
            self.base += self.head as u64;
            self.head = 0;
        }
        self.settle(now, window, n > 0);
        n
    }

    /// Drops writes that fit in the kernel window and updates the stall clock.
    fn settle(&mut self, now: Instant, window: usize, progressed: bool) {
        let limit = self.transmitted_abs() + window as u64;
        let mut completed = false;
        while self.ends.front().is_some_and(|&e| e <= limit) {
            self.ends.pop_front();
            completed = true;
        }
        if self.ends.is_empty() {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() || (completed && progressed) {
            self.stalled_since = Some(now);
        }
    }

    /// When the blocked write times out, if one is blocked.
    pub(crate) fn deadline(&self, write_timeout: Duration) -> Option<Instant> {
        self.stalled_since.map(|t| later(t, write_timeout))
    }

    /// Keeps only the first `keep` untransmitted bytes (what the kernel already holds when the
    /// server gives up, or a reset's cut point) and forgets the write clock.
    pub(crate) fn truncate_pending(&mut self, keep: usize) {
        let end = self.head + keep.min(self.backlog());
        self.buf.truncate(end);
        self.ends.clear();
        self.stalled_since = None;
    }

    /// Forgets everything queued.
    pub(crate) fn clear(&mut self) {
        self.truncate_pending(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_shapes() {
        assert_eq!(
            simple("Success", Some("a"), "ok"),
            b"Response: Success\r\nActionID: a\r\nMessage: ok\r\n\r\n"
        );
        assert_eq!(
            list_start(None, "x"),
            b"Response: Success\r\nEventList: start\r\nMessage: x\r\n\r\n"
        );
        let long = "y".repeat(300);
        let m = Msg::item("E")
            .id_capped(Some(&long), 256)
            .field("K", "v")
            .end();
        assert!(String::from_utf8_lossy(&m).contains("yyyK: v"));
    }

    #[test]
    fn stall_clock() {
        let t0 = Instant::now();
        let mut o = OutBuf::default();
        o.write(&[0u8; 10], t0, 16);
        assert_eq!(o.deadline(Duration::from_millis(100)), None);
        o.write(&[0u8; 10], t0, 16);
        assert_eq!(
            o.deadline(Duration::from_millis(100)),
            Some(t0 + Duration::from_millis(100))
        );
        let t1 = t0 + Duration::from_millis(50);
        o.advance(4, t1, 16);
        assert_eq!(o.deadline(Duration::from_millis(100)), None);
        o.write(&[0u8; 30], t1, 16);
        let t2 = t1 + Duration::from_millis(10);
        o.advance(1, t2, 16);
        // No write completed: the clock keeps running from t1.
        assert_eq!(
            o.deadline(Duration::from_millis(100)),
            Some(t1 + Duration::from_millis(100))
        );
        o.truncate_pending(16);
        assert_eq!(o.backlog(), 16);
    }

    #[test]
    fn each_message_of_a_reply_is_its_own_write() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut o = OutBuf::default();
        // Three 10-byte messages in one reply, a 16-byte kernel window.
        let msg = b"K: 123\r\n\r\n";
        o.write(&msg.repeat(3), t0, 16);
        assert_eq!(o.deadline(ms(100)), Some(t0 + ms(100)));
        // Reading the first message lets the second into the kernel: a write completed, so
        // the third gets its own 100 ms.
        let t1 = t0 + ms(60);
        o.advance(10, t1, 16);
        assert_eq!(o.deadline(ms(100)), Some(t1 + ms(100)));
        o.advance(10, t1 + ms(60), 16);
        assert_eq!(o.deadline(ms(100)), None);
    }
}
