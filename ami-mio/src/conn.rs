//! One connection's transport: where it connects to, and its socket. Transport only: every
//! protocol decision is the session's (see [`Session`]), which this code feeds.

use crate::session::Session;
use ami_proto::fleet::Turn;
use ami_proto::{interleave_families, ConnectFailure, Input, CONNECT_ATTEMPT_DELAY};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// Whether a read shorter than its buffer means the socket is drained, so that readiness
/// can be cleared without a read that ends in WouldBlock: true where mio's readiness is
/// edge-triggered on every arrival (epoll, kqueue), as tokio also assumes; Windows' emulated
/// readiness makes no such promise.
const SHORT_READ_DRAINS: bool = cfg!(not(windows));

/// Most ciphertext one step reads for a TLS handshake before it lets the other connections
/// have their turn (the rest is read in the next step, which comes at once): a handshake's
/// flights are a few KiB, and a server that keeps sending handshake bytes must not hold the
/// loop. The same figure as a connection's read budget per step.
#[cfg(feature = "tls")]
const HANDSHAKE_READ_PER_STEP: usize = 64 << 10;

/// Where a connection goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// An address the caller resolved.
    Addr(SocketAddr),
    /// `host:port`, resolved off the loop before a connect (the resolver's recent answer, or
    /// the name's lookup).
    Host(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Host(host) => f.write_str(host),
        }
    }
}

/// The transport.
#[derive(Debug)]
pub(crate) enum Link {
    Idle,
    /// Non-blocking connects started, one per address tried so far, side by side (all
    /// registered under the connection's token); waiting for writable readiness.
    Connecting(Vec<TcpStream>),
    /// TCP connected, the TLS handshake under way: still connecting as far as the client
    /// knows (its connect timer runs), so a refused certificate or a port that does not
    /// speak TLS is a failed connect, as on every async runtime.
    #[cfg(feature = "tls")]
    Handshaking(Box<crate::tls::TlsStream>),
    Open(Stream),
}

/// An open transport.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    /// The handshake runs in the same reads and writes as the records after it.
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::TlsStream>),
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) target: Target,
    /// TLS over the socket, if asked for.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsTarget>,
    pub(crate) link: Link,
    /// The client asked for a connect that has not been started yet.
    pub(crate) want_connect: bool,
    /// The address for that connect, once known.
    pub(crate) resolved: Option<SocketAddr>,
    /// The name's other addresses, alternating by family: the next starts beside the running
    /// connects when one fails or at `next_attempt`.
    rest: VecDeque<SocketAddr>,
    /// When the next address starts beside the running connects (RFC 8305's connection
    /// attempt delay), while there is one.
    pub(crate) next_attempt: Option<Instant>,
    /// Waits for the lookup of its name under way (the resolver's, shared by every
    /// connection to the name): nothing to do until that lookup answers. It outlives the
    /// connect attempt that joined the lookup, as the lookup does.
    pub(crate) resolving: bool,
    /// Readable readiness not used up yet (edge-triggered: read until `WouldBlock`). Also
    /// set when a budget stopped a read with data possibly left behind.
    pub(crate) readable: bool,
    /// The peer's half is closed (or the socket failed), as the poll said: a final state, so a
    /// short read no longer means drained (the end of the stream raises no new edge).
    read_closed: bool,
    /// The last write did not block (or writable readiness arrived since).
    pub(crate) writable: bool,
    /// Readiness arrived while connecting: check whether the connect finished.
    pub(crate) connect_event: bool,
}

/// What a read turn ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadEnd {
    /// Nothing more to read now (or no open link).
    Drained,
    /// The turn's budget ran out; data may be left.
    Budget,
}

impl Conn {
    pub(crate) fn new(target: Target) -> Conn {
        Conn {
            target,
            #[cfg(feature = "tls")]
            tls: None,
            link: Link::Idle,
            want_connect: false,
            resolved: None,
            rest: VecDeque::new(),
            next_attempt: None,
            resolving: false,
            readable: false,
            read_closed: false,
            writable: false,
            connect_event: false,
        }
    }

    /// Records readiness from the poll; the work happens in the step.
    pub(crate) fn absorb(&mut self, ev: &Event) {
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.readable = true;
        }
        if ev.is_read_closed() || ev.is_error() {
            self.read_closed = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            self.writable = true;
        }
        if matches!(self.link, Link::Connecting(_)) {
            self.connect_event = true;
        }
    }

    /// True when the next step has I/O to do for this connection without new readiness.
    pub(crate) fn has_work(&self, transmit_empty: bool) -> bool {
        match self.link {
            Link::Open(ref stream) => {
                self.readable || (self.writable && (!transmit_empty || wants_write(stream)))
            }
            Link::Connecting(_) => self.connect_event,
            #[cfg(feature = "tls")]
            Link::Handshaking(ref s) => self.readable || (self.writable && s.conn.wants_write()),
            // A connect to start, or a lookup to ask for or join.
            Link::Idle => self.want_connect && (self.resolved.is_some() || !self.resolving),
        }
    }

    /// The session asked for a connect: drop any old link and get ready to start one (after a
    /// name lookup for a host target).
    pub(crate) fn want_connect_now(&mut self, registry: &Registry) {
        self.drop_link(registry);
        self.want_connect = true;
        self.resolved = match &self.target {
            Target::Addr(a) => Some(*a),
            Target::Host(_) => None,
        };
    }

    /// Drops the socket, if any, and forgets a connect not yet started.
    pub(crate) fn drop_link(&mut self, registry: &Registry) {
        match std::mem::replace(&mut self.link, Link::Idle) {
            Link::Idle => {}
            Link::Connecting(streams) => streams.into_iter().for_each(|s| deregister(registry, s)),
            Link::Open(Stream::Plain(s)) => deregister(registry, s),
            // Nothing to close gracefully before the handshake ends (a failed one already
            // sent its alert).
            #[cfg(feature = "tls")]
            Link::Handshaking(s) => deregister(registry, s.tcp),
            #[cfg(feature = "tls")]
            Link::Open(Stream::Tls(mut s)) => {
                s.close();
                if let Err(e) = registry.deregister(&mut s.tcp) {
                    log::debug!("ami-mio: deregister failed: {e}");
                }
            }
        }
        self.want_connect = false;
        self.resolved = None;
        self.rest.clear();
        self.next_attempt = None;
        self.readable = false;
        self.read_closed = false;
        self.writable = false;
        self.connect_event = false;
    }

    /// A lookup answered: connect to the first address, keep the others (alternating by
    /// family) to start beside it.
    pub(crate) fn resolved_to(&mut self, addrs: Vec<SocketAddr>) {
        self.rest = interleave_families(addrs).into();
        self.resolved = self.rest.pop_front();
    }

    /// Starts the non-blocking connect the client asked for (or the next address beside the
    /// running ones) to the next address that accepts a connect attempt. The core's connect
    /// timer bounds how long it all may take.
    pub(crate) fn start_connect(
        &mut self,
        now: Instant,
        session: &mut impl Session,
        registry: &Registry,
        token: Token,
    ) {
        self.want_connect = false;
        let mut failed = None;
        while let Some(addr) = self.resolved.take() {
            let stream = TcpStream::connect(addr).and_then(|mut s| {
                registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
                Ok(s)
            });
            match stream {
                Ok(s) => {
                    match &mut self.link {
                        Link::Connecting(streams) => streams.push(s),
                        _ => self.link = Link::Connecting(vec![s]),
                    }
                    self.next_attempt =
                        (!self.rest.is_empty()).then(|| now + CONNECT_ATTEMPT_DELAY);
                    return;
                }
                Err(e) => {
                    log::debug!("ami-mio: connect to {addr} failed at once: {e}");
                    self.resolved = self.rest.pop_front();
                    failed = Some(e);
                }
            }
        }
        self.next_attempt = None;
        if !self.connecting() {
            self.link = Link::Idle;
            if let Some(e) = failed {
                session.handle_input(now, Input::ConnectFailed(e.kind().into()));
            }
        }
    }

    /// Connects under way.
    fn connecting(&self) -> bool {
        matches!(&self.link, Link::Connecting(streams) if !streams.is_empty())
    }

    /// After readiness on a connecting socket, or once the next address is due: reports
    /// `Connected` for the first connect that completed (the others are dropped), starts the
    /// name's next address beside the running ones when one failed or the attempt delay has
    /// passed, reports `ConnectFailed` when every address failed, or does nothing while the
    /// connects are in progress. Over TLS the connect completes with the handshake (see
    /// [`handshake`](Self::handshake)), which this also moves on.
    pub(crate) fn finish_connect(
        &mut self,
        now: Instant,
        session: &mut impl Session,
        registry: &Registry,
        token: Token,
    ) {
        #[cfg(feature = "tls")]
        if matches!(self.link, Link::Handshaking(_)) {
            return self.handshake(now, session, registry);
        }
        let due = self.next_attempt.is_some_and(|at| now >= at);
        if !self.connect_event && !due {
            return;
        }
        self.connect_event = false;
        let Link::Connecting(streams) = &mut self.link else {
            return;
        };
        let (mut won, mut failed, mut i) = (None, None, 0);
        while let Some(stream) = streams.get(i) {
            match connect_state(stream) {
                Ok(true) => {
                    won = Some(streams.swap_remove(i));
                    break;
                }
                Ok(false) => i += 1,
                Err(e) => {
                    log::debug!("ami-mio: connect failed: {e}");
                    deregister(registry, streams.swap_remove(i));
                    failed = Some(e);
                }
            }
        }
        let Some(stream) = won else {
            // (`next_attempt` is set only while `rest` holds an address.)
            if failed.is_some() || due {
                if let Some(next) = self.rest.pop_front() {
                    self.resolved = Some(next);
                    self.start_connect(now, session, registry, token);
                    return;
                }
            }
            if !self.connecting() {
                self.link = Link::Idle;
                if let Some(e) = failed {
                    session.handle_input(now, Input::ConnectFailed(e.kind().into()));
                }
            }
            return;
        };
        // The first to connect wins; the other attempts and the addresses not yet tried go.
        if let Link::Connecting(others) = std::mem::replace(&mut self.link, Link::Idle) {
            others.into_iter().for_each(|s| deregister(registry, s));
        }
        self.rest.clear();
        self.next_attempt = None;
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("ami-mio: TCP_NODELAY not set: {e}");
        }
        self.readable = true;
        self.writable = true;
        match self.open(stream) {
            Ok(link @ Link::Open(_)) => {
                self.link = link;
                session.handle_input(now, Input::Connected);
            }
            // The ClientHello goes out now; `Connected` waits for the handshake's end, and
            // the client knows that a timeout from here on is the handshake's.
            Ok(link) => {
                self.link = link;
                session.handle_input(now, Input::Handshaking);
                #[cfg(feature = "tls")]
                self.handshake(now, session, registry);
            }
            Err(stream) => {
                deregister(registry, stream);
                self.readable = false;
                self.writable = false;
                session.handle_input(now, Input::ConnectFailed(ConnectFailure::Tls));
            }
        }
    }

    /// The link over a connected socket: open for plain TCP, or a TLS session starting its
    /// handshake. Gives the socket back if the TLS session cannot be set up.
    fn open(&self, tcp: TcpStream) -> Result<Link, TcpStream> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return match tls.start(tcp) {
                Ok(s) => Ok(Link::Handshaking(Box::new(s))),
                Err((tcp, e)) => {
                    log::warn!("ami-mio: TLS session not started: {e}");
                    Err(tcp)
                }
            };
        }
        Ok(Link::Open(Stream::Plain(tcp)))
    }

    /// Moves a TLS handshake on with what the socket allows now: records out while it is
    /// writable, ciphertext in while it is readable (at most [`HANDSHAKE_READ_PER_STEP`]).
    /// Once rustls is done the link is open and the client is told `Connected`, the
    /// plaintext that came with the last flight read in the same step. A handshake that
    /// fails (a refused certificate, a port that does not speak TLS, the peer closing) is
    /// `ConnectFailed(Tls)`, as on the async runtimes; one that hangs ends with the client's
    /// connect timer (`TlsHandshakeTimeout`), as there too.
    #[cfg(feature = "tls")]
    fn handshake(&mut self, now: Instant, session: &mut impl Session, registry: &Registry) {
        let mut read = 0;
        let result: io::Result<()> = loop {
            let Link::Handshaking(s) = &mut self.link else {
                return;
            };
            // Records first: the ClientHello, then whatever each flight makes rustls send.
            if self.writable && s.conn.wants_write() {
                match s.conn.write_tls(&mut s.tcp) {
                    Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
                continue;
            }
            // Done: what rustls still has to send (the client's Finished) goes out with the
            // open link's writes.
            if !s.conn.is_handshaking() {
                break Ok(());
            }
            if !self.readable || read >= HANDSHAKE_READ_PER_STEP {
                return;
            }
            match s.conn.read_tls(&mut s.tcp) {
                Ok(0) => break Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    read += n;
                    if let Err(e) = s.conn.process_new_packets() {
                        // The alert that says why goes out, best effort.
                        s.flush_best_effort();
                        break Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => {
                if let Link::Handshaking(s) = std::mem::replace(&mut self.link, Link::Idle) {
                    self.link = Link::Open(Stream::Tls(s));
                }
                // Plaintext of the last flight (the banner) may wait inside rustls with the
                // socket drained: the read that follows in this step takes it.
                self.readable = true;
                session.handle_input(now, Input::Connected);
            }
            Err(e) => {
                log::debug!("ami-mio: TLS handshake failed: {e}");
                self.drop_link(registry);
                let why = ami_async::tls::connect_failure(&e);
                session.handle_input(now, Input::ConnectFailed(why));
            }
        }
    }

    /// Reads until `WouldBlock`, end of stream, an error, or the turn's budget, feeding each
    /// chunk to the client and draining its outputs after each (a session may end mid-read).
    pub(crate) fn read(
        &mut self,
        now: Instant,
        session: &mut impl Session,
        turn: &mut Turn,
        buf: &mut [u8],
    ) -> ReadEnd {
        #[cfg(feature = "tls")]
        if matches!(self.link, Link::Open(Stream::Tls(_))) {
            return self.read_tls(now, session, turn, buf);
        }
        while self.readable {
            if turn.is_spent() {
                return ReadEnd::Budget;
            }
            let Link::Open(Stream::Plain(stream)) = &mut self.link else {
                return ReadEnd::Drained;
            };
            let max = buf.len().min(turn.bytes_left()).max(1);
            let Some(chunk) = buf.get_mut(..max) else {
                return ReadEnd::Drained;
            };
            match stream.read(chunk) {
                Ok(0) => {
                    self.readable = false;
                    session.handle_input(now, Input::Eof);
                }
                Ok(n) => {
                    if n < chunk.len() && SHORT_READ_DRAINS && !self.read_closed {
                        // The socket held less than asked for: it is drained, and bytes that
                        // arrive later raise a new edge (an end of stream already announced
                        // raises none: then read on to it). Reading on to WouldBlock would
                        // cost one more syscall per wake (one per Ping at one in flight).
                        self.readable = false;
                    }
                    let before = session.messages_in();
                    session.handle_input(now, Input::Received(chunk.get(..n).unwrap_or(&[])));
                    let after = session.messages_in();
                    turn.charge(n, usize::try_from(after - before).unwrap_or(usize::MAX));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.readable = false;
                    session.handle_input(now, Input::TransportError(e.kind()));
                }
            }
            session.settle(self);
        }
        ReadEnd::Drained
    }

    /// Writes what the client has to send until it is all written or the socket would block;
    /// a partial write is reported with the count written.
    pub(crate) fn write(&mut self, now: Instant, session: &mut impl Session) {
        #[cfg(feature = "tls")]
        if matches!(self.link, Link::Open(Stream::Tls(_))) {
            return self.write_tls(now, session);
        }
        let Link::Open(Stream::Plain(stream)) = &mut self.link else {
            return;
        };
        while self.writable {
            let data = session.transmit();
            if data.is_empty() {
                return;
            }
            match stream.write(data) {
                Ok(0) => {
                    let kind = io::ErrorKind::WriteZero;
                    session.handle_input(now, Input::TransportError(kind));
                    return;
                }
                Ok(n) => session.advance_transmit(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    session.handle_input(now, Input::TransportError(e.kind()));
                    return;
                }
            }
        }
    }

    /// [`read`](Self::read) over TLS: ciphertext is read from the socket into the session
    /// (and charged to the turn), decrypted, and the plaintext fed to the client chunk by
    /// chunk. Handshake messages are taken in the same way; what they make rustls want to
    /// send goes out in the next [`write`](Self::write). A TLS error (a refused certificate,
    /// a bad record) is reported as a transport error after the alert is sent if it can be.
    #[cfg(feature = "tls")]
    fn read_tls(
        &mut self,
        now: Instant,
        session: &mut impl Session,
        turn: &mut Turn,
        buf: &mut [u8],
    ) -> ReadEnd {
        while self.readable {
            if turn.is_spent() {
                return ReadEnd::Budget;
            }
            let Link::Open(Stream::Tls(s)) = &mut self.link else {
                return ReadEnd::Drained;
            };
            let mut eof = false;
            match s.conn.read_tls(&mut s.tcp) {
                Ok(0) => {
                    self.readable = false;
                    eof = true;
                }
                Ok(n) => turn.charge(n, 0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.readable = false;
                    session.handle_input(now, Input::TransportError(e.kind()));
                    session.settle(self);
                    return ReadEnd::Drained;
                }
            }
            if let Err(e) = s.conn.process_new_packets() {
                let kind = crate::tls::error_kind(&e);
                s.flush_best_effort();
                self.readable = false;
                session.handle_input(now, Input::TransportError(kind));
                session.settle(self);
                return ReadEnd::Drained;
            }
            // All the plaintext of what was read; bounded by one `read_tls`.
            loop {
                let Link::Open(Stream::Tls(s)) = &mut self.link else {
                    return ReadEnd::Drained;
                };
                match s.conn.reader().read(buf) {
                    // A close_notify, or nothing left after a close without one.
                    Ok(0) => break,
                    Ok(n) => {
                        let before = session.messages_in();
                        session.handle_input(now, Input::Received(buf.get(..n).unwrap_or(&[])));
                        let after = session.messages_in();
                        turn.charge(0, usize::try_from(after - before).unwrap_or(usize::MAX));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.readable = false;
                        session.handle_input(now, Input::TransportError(e.kind()));
                        session.settle(self);
                        return ReadEnd::Drained;
                    }
                }
                session.settle(self);
            }
            if eof {
                session.handle_input(now, Input::Eof);
            }
            session.settle(self);
        }
        ReadEnd::Drained
    }

    /// [`write`](Self::write) over TLS: the client's bytes go into the session (which encrypts
    /// them, or holds them until the handshake is done), and the session's records go to the
    /// socket until it would block. The client's buffer advances by what rustls took; rustls
    /// bounds what it holds, so a slow server still pushes back on the client.
    #[cfg(feature = "tls")]
    fn write_tls(&mut self, now: Instant, session: &mut impl Session) {
        while self.writable {
            let Link::Open(Stream::Tls(s)) = &mut self.link else {
                return;
            };
            let data = session.transmit();
            let mut taken = 0;
            if !data.is_empty() {
                match s.conn.writer().write(data) {
                    Ok(n) => taken = n,
                    Err(e) => {
                        session.handle_input(now, Input::TransportError(e.kind()));
                        return;
                    }
                }
                session.advance_transmit(taken);
            }
            if !s.conn.wants_write() {
                if taken == 0 {
                    // Nothing to send, or rustls holds all it will until the handshake ends.
                    return;
                }
                continue;
            }
            match s.conn.write_tls(&mut s.tcp) {
                Ok(0) => {
                    let kind = io::ErrorKind::WriteZero;
                    session.handle_input(now, Input::TransportError(kind));
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    session.handle_input(now, Input::TransportError(e.kind()));
                    return;
                }
            }
        }
    }
}

/// True when a TLS session has records waiting for the socket (a handshake message, an
/// alert, encrypted data rustls could not write yet).
fn wants_write(stream: &Stream) -> bool {
    match stream {
        Stream::Plain(_) => false,
        #[cfg(feature = "tls")]
        Stream::Tls(s) => s.conn.wants_write(),
    }
}

/// Whether a non-blocking connect has completed (`Ok(true)`), is still under way
/// (`Ok(false)`), or failed.
fn connect_state(stream: &TcpStream) -> io::Result<bool> {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => match stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        },
    }
}

fn deregister(registry: &Registry, mut stream: TcpStream) {
    if let Err(e) = registry.deregister(&mut stream) {
        log::debug!("ami-mio: deregister failed: {e}");
    }
}
