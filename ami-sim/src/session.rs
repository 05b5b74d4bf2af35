//! One client connection: its authentication state, input, output and busy state.

use crate::classes::ClassMask;
use crate::filter::Filters;
use crate::input::{Framer, RequestParser};
use crate::out::OutBuf;
use crate::{CloseReason, SessionId, SessionState};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

/// Why a session is busy: it runs no further action and holds its events until this ends.
#[derive(Debug)]
pub(crate) enum Block {
    /// A reply that goes out at `at` (delayed-reply fault, the 1 s sleep of a failed login),
    /// optionally followed by a close.
    Until {
        at: Instant,
        reply: Vec<u8>,
        close: Option<CloseReason>,
    },
    /// A sync Originate waiting for its call.
    Call,
}

/// One session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: SessionId,
    pub(crate) state: SessionState,
    pub(crate) accepted: Instant,
    /// Logged-in user name.
    pub(crate) user: Option<String>,
    pub(crate) read: ClassMask,
    pub(crate) write: ClassMask,
    /// The event mask (`send_events`): all until Login or Events say otherwise.
    pub(crate) events: ClassMask,
    pub(crate) challenge: Option<String>,
    pub(crate) filters: Filters,
    pub(crate) inbox: VecDeque<u8>,
    pub(crate) framer: Framer,
    pub(crate) parser: RequestParser,
    pub(crate) block: Option<Block>,
    /// Events that arrived while the session was busy, delivered when it is idle again.
    pub(crate) held: VecDeque<Vec<u8>>,
    pub(crate) held_bytes: usize,
    pub(crate) out: OutBuf,
    pub(crate) half_open: bool,
    /// The client shut down its sending side: once the input already received is handled,
    /// the session closes, its queued output still readable.
    pub(crate) read_eof: bool,
    /// A reset fault waiting for the next write to cut.
    pub(crate) reset_armed: bool,
    /// Set by a reset: nothing at all is readable past `out`'s cut.
    pub(crate) was_reset: bool,
    /// The server's end of the connection, as security events report it.
    pub(crate) local: SocketAddr,
    /// The client's end: security events, `manager show connected`.
    pub(crate) peer: SocketAddr,
}

/// Where a session's connection runs when the caller has no socket to say: Asterisk's
/// port on loopback, and a client port that differs between sessions.
pub(crate) fn virtual_addresses(id: SessionId) -> (SocketAddr, SocketAddr) {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    (
        SocketAddr::new(lo, 5038),
        SocketAddr::new(lo, 40_000u16.wrapping_add((id.0 % 20_000) as u16)),
    )
}

/// `IPV4/TCP/127.0.0.1/5038`: an address as Asterisk's security events print it (an
/// IPv4-mapped IPv6 address as IPv4, IPv6 without brackets).
pub(crate) fn security_address(addr: SocketAddr) -> String {
    match shown_ip(addr.ip()) {
        IpAddr::V4(ip) => format!("IPV4/TCP/{ip}/{}", addr.port()),
        IpAddr::V6(ip) => format!("IPV6/TCP/{ip}/{}", addr.port()),
    }
}

/// The address as Asterisk prints a peer's: an IPv4-mapped IPv6 address as IPv4.
pub(crate) fn shown_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Session {
    pub(crate) fn new(id: SessionId, now: Instant, local: SocketAddr, peer: SocketAddr) -> Session {
        Session {
            id,
            state: SessionState::Open,
            accepted: now,
            user: None,
            read: ClassMask::NONE,
            write: ClassMask::NONE,
            events: ClassMask::ALL,
            challenge: None,
            filters: Filters::default(),
            inbox: VecDeque::new(),
            framer: Framer::default(),
            parser: RequestParser::default(),
            block: None,
            held: VecDeque::new(),
            held_bytes: 0,
            out: OutBuf::default(),
            half_open: false,
            read_eof: false,
            reset_armed: false,
            was_reset: false,
            local,
            peer,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == SessionState::Open
    }

    pub(crate) fn logged_in(&self) -> bool {
        self.user.is_some()
    }

    /// Whether events of `class` reach this session, filters aside: it is open, logged in,
    /// and both its `read=` classes and its event mask hold every bit of `class`.
    pub(crate) fn reads(&self, class: ClassMask) -> bool {
        self.is_open()
            && self.logged_in()
            && self.read.contains(class)
            && self.events.contains(class)
    }

    /// Whether an event of `class` and text `bytes` is delivered to this session.
    pub(crate) fn wants(&self, class: ClassMask, name: &str, bytes: &[u8]) -> bool {
        self.reads(class) && self.filters.pass(name, bytes)
    }

    /// Output and held events not yet read by the client.
    pub(crate) fn backlog(&self) -> usize {
        self.out.backlog() + self.held_bytes
    }

    /// `0x7f...`-looking SessionID for security events.
    pub(crate) fn session_tag(&self) -> String {
        format!("0x7fcf{:08x}", self.id.0.wrapping_mul(0x1f10))
    }
}
