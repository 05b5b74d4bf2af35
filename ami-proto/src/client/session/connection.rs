//! What belongs to one connection. The client replaces it whole when a session ends, so a
//! new per-connection field starts fresh without anyone remembering to reset it.

use std::time::Instant;

/// Transmit bytes kept before compacting the buffer's consumed front.
const COMPACT_AFTER: usize = 64 << 10;

/// The connection the client is on, or the next one while it waits to reconnect (actions
/// queued meanwhile already carry its ActionID prefix).
#[derive(Debug)]
pub(super) struct Connection {
    /// Bumped for every connection; nothing from an older one matches.
    pub(super) generation: u64,
    /// The ActionID prefix: IDs never cross connections.
    pub(super) prefix: String,
    transmit: Vec<u8>,
    transmit_pos: usize,
    /// From the banner.
    pub(super) ami_version: String,
    /// A heartbeat Ping is written and unanswered.
    pub(super) heartbeat_outstanding: bool,
    /// The server announced `Event: Shutdown`: its EOF is a shutdown, not a failure.
    pub(super) server_shutdown: bool,
    /// Filters still being re-applied after login.
    pub(super) reapply_left: usize,
    /// When this connection's session became Ready (it was announced in the stream).
    pub(super) ready_since: Option<Instant>,
}

impl Connection {
    /// The first connection of a client.
    pub(super) fn first(prefix: String) -> Connection {
        Connection {
            generation: 0,
            prefix,
            transmit: Vec::new(),
            transmit_pos: 0,
            ami_version: String::new(),
            heartbeat_outstanding: false,
            server_shutdown: false,
            reapply_left: 0,
            ready_since: None,
        }
    }

    /// The connection after this one.
    pub(super) fn next(&self, prefix: String) -> Connection {
        Connection {
            generation: self.generation + 1,
            ..Connection::first(prefix)
        }
    }

    /// Bytes encoded and not yet written.
    pub(super) fn transmit(&self) -> &[u8] {
        &self.transmit[self.transmit_pos..]
    }

    /// The buffer to encode actions into (appended after what is unwritten).
    pub(super) fn transmit_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.transmit
    }

    /// Marks up to `n` bytes as written; returns how many were.
    pub(super) fn advance_transmit(&mut self, n: usize) -> usize {
        let n = n.min(self.transmit.len() - self.transmit_pos);
        self.transmit_pos += n;
        if self.transmit_pos == self.transmit.len() {
            self.transmit.clear();
            self.transmit_pos = 0;
        } else if self.transmit_pos > COMPACT_AFTER {
            self.transmit.drain(..self.transmit_pos);
            self.transmit_pos = 0;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_connection_starts_fresh_with_a_new_generation() {
        let mut c = Connection::first("aaaa".into());
        c.transmit_buffer()
            .extend_from_slice(b"Action: Ping\r\n\r\n");
        c.ami_version = "2.10.0".into();
        c.heartbeat_outstanding = true;
        c.server_shutdown = true;
        c.reapply_left = 3;
        let n = c.next("bbbb".into());
        assert_eq!(n.generation, 1);
        assert_eq!(n.prefix, "bbbb");
        assert!(n.transmit().is_empty());
        assert!(n.ami_version.is_empty());
        assert!(!n.heartbeat_outstanding && !n.server_shutdown);
        assert_eq!((n.reapply_left, n.ready_since), (0, None));
    }

    #[test]
    fn partial_writes_advance_through_the_transmit_bytes() {
        let mut c = Connection::first("p".into());
        c.transmit_buffer().extend_from_slice(b"abcdef");
        assert_eq!(c.advance_transmit(2), 2);
        assert_eq!(c.transmit(), b"cdef");
        assert_eq!(c.advance_transmit(100), 4);
        assert!(c.transmit().is_empty());
        assert_eq!(c.advance_transmit(1), 0);
    }
}
