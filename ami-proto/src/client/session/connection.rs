//! What belongs to one connection. The client replaces it whole when a session ends, so a
//! new per-connection field starts fresh without anyone remembering to reset it.

use super::transmit::Transmit;
use super::ReceivedOn;
use std::time::Instant;

/// The connection the client is on, or the next one while it waits to reconnect (actions
/// queued meanwhile already carry its ActionID prefix).
#[derive(Debug)]
pub(super) struct Connection {
    /// Bumped for every connection; nothing from an older one matches.
    pub(super) generation: u64,
    /// The ActionID prefix: IDs never cross connections.
    pub(super) prefix: String,
    /// Bytes encoded and not yet taken by the transport.
    pub(super) transmit: Transmit,
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
    /// The TCP connection opened and a TLS handshake is under way over it: a connect
    /// timeout now means the handshake hung, not the network.
    pub(super) handshaking: bool,
    /// The highest sequence number of the abandoned entries evicted on this connection
    /// (`max_abandoned_actions`), 0 if none: evicted oldest first, so every evicted entry is
    /// at or below it, and an answer with this connection's prefix at or below it that
    /// matches nothing is an answer to an action of ours that ended.
    pub(super) evicted_through: u64,
}

impl Connection {
    /// The first connection of a client.
    pub(super) fn first(prefix: String) -> Connection {
        Connection {
            generation: 0,
            prefix,
            transmit: Transmit::default(),
            ami_version: String::new(),
            heartbeat_outstanding: false,
            server_shutdown: false,
            reapply_left: 0,
            ready_since: None,
            handshaking: false,
            evicted_through: 0,
        }
    }

    /// What an answer this connection delivered carries to tell it from any other
    /// connection's, this client's or another's.
    pub(super) fn received_on(&self) -> ReceivedOn {
        ReceivedOn {
            generation: self.generation,
            // Eight bytes, each in a byte of its own: two prefixes give one number only if
            // they are the same.
            prefix: self
                .prefix
                .bytes()
                .fold(0, |k, b| k.rotate_left(8) ^ u64::from(b)),
        }
    }

    /// The connection after this one.
    pub(super) fn next(&self, prefix: String) -> Connection {
        Connection {
            generation: self.generation + 1,
            ..Connection::first(prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_connection_starts_fresh_with_a_new_generation() {
        let mut c = Connection::first("aaaa".into());
        c.transmit
            .push(1, |b| b.extend_from_slice(b"Action: Ping\r\n\r\n"));
        c.ami_version = "2.10.0".into();
        c.heartbeat_outstanding = true;
        c.server_shutdown = true;
        c.reapply_left = 3;
        c.handshaking = true;
        c.evicted_through = 7;
        let n = c.next("bbbb".into());
        assert_eq!(n.generation, 1);
        assert_eq!(n.prefix, "bbbb");
        assert!(n.transmit.bytes().is_empty());
        assert!(n.ami_version.is_empty());
        assert!(!n.heartbeat_outstanding && !n.server_shutdown);
        assert_eq!((n.reapply_left, n.ready_since), (0, None));
        assert!(!n.handshaking);
        assert_eq!(n.evicted_through, 0);
    }

    #[test]
    fn answers_are_told_apart_by_the_connection_prefix_not_only_the_generation() {
        // Two clients' first connections: the same generation, their own prefixes.
        let a = Connection::first("aaaa0001".into());
        let b = Connection::first("aaaa0002".into());
        assert_eq!(a.received_on(), a.received_on());
        assert_ne!(a.received_on(), b.received_on());
        assert_ne!(a.received_on(), a.next("aaaa0001".into()).received_on());
    }
}
