//! One connection: a core [`Client`], where it connects to, and its socket. Transport only:
//! every protocol decision is the client's.

use crate::report::{ConnId, Notice};
use ami_proto::fleet::Turn;
use ami_proto::{Client, Input, Output};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// Where a connection goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// An address the caller resolved.
    Addr(SocketAddr),
    /// `host:port`, resolved off the loop before every connect.
    Host(String),
}

/// The transport.
#[derive(Debug)]
pub(crate) enum Link {
    Idle,
    /// Non-blocking connect started; waiting for writable readiness.
    Connecting(TcpStream),
    Open(TcpStream),
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) target: Target,
    pub(crate) link: Link,
    /// The client asked for a connect that has not been started yet.
    pub(crate) want_connect: bool,
    /// The address for that connect, once known.
    pub(crate) resolved: Option<SocketAddr>,
    /// A lookup for this attempt is under way.
    pub(crate) resolving: bool,
    /// Bumped at every connect request; a lookup answer for an older one is ignored.
    pub(crate) attempt: u64,
    /// Readable readiness not used up yet (edge-triggered: read until `WouldBlock`). Also
    /// set when a budget stopped a read with data possibly left behind.
    pub(crate) readable: bool,
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
    pub(crate) fn new(client: Client, target: Target) -> Conn {
        Conn {
            client,
            target,
            link: Link::Idle,
            want_connect: false,
            resolved: None,
            resolving: false,
            attempt: 0,
            readable: false,
            writable: false,
            connect_event: false,
        }
    }

    /// Records readiness from the poll; the work happens in the step.
    pub(crate) fn absorb(&mut self, ev: &Event) {
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.readable = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            self.writable = true;
        }
        if matches!(self.link, Link::Connecting(_)) {
            self.connect_event = true;
        }
    }

    /// True when the next step has I/O to do for this connection without new readiness.
    pub(crate) fn has_work(&self) -> bool {
        match self.link {
            Link::Open(_) => self.readable || (self.writable && !self.client.transmit().is_empty()),
            Link::Connecting(_) => self.connect_event,
            // A connect to start, or a lookup to ask for.
            Link::Idle => self.want_connect && (self.resolved.is_some() || !self.resolving),
        }
    }

    /// Drains the client's outputs: transport requests are carried out (or noted for the
    /// connect phase), the rest goes to `notices` unchanged.
    pub(crate) fn drain(
        &mut self,
        id: ConnId,
        registry: &Registry,
        notices: &mut Vec<(ConnId, Notice)>,
    ) {
        loop {
            match self.client.poll_output() {
                Output::Wait(_) => break,
                Output::Connect => {
                    self.drop_link(registry);
                    self.want_connect = true;
                    self.attempt += 1;
                    self.resolving = false;
                    self.resolved = match &self.target {
                        Target::Addr(a) => Some(*a),
                        Target::Host(_) => None,
                    };
                }
                Output::Close => self.drop_link(registry),
                Output::Ready { ami_version } => notices.push((id, Notice::Ready { ami_version })),
                Output::Completed {
                    id: action,
                    outcome,
                } => notices.push((
                    id,
                    Notice::Completed {
                        id: action,
                        outcome,
                    },
                )),
                Output::Disconnected { reason, retry_at } => {
                    notices.push((id, Notice::Disconnected { reason, retry_at }))
                }
                Output::Closed { reason } => notices.push((id, Notice::Closed { reason })),
                other => log::debug!("ami-mio: output not known to this adapter: {other:?}"),
            }
        }
    }

    /// Drops the socket, if any, and forgets a connect not yet started.
    fn drop_link(&mut self, registry: &Registry) {
        match std::mem::replace(&mut self.link, Link::Idle) {
            Link::Idle => {}
            Link::Connecting(mut s) | Link::Open(mut s) => {
                if let Err(e) = registry.deregister(&mut s) {
                    log::debug!("ami-mio: deregister failed: {e}");
                }
            }
        }
        self.want_connect = false;
        self.resolved = None;
        self.resolving = false;
        self.readable = false;
        self.writable = false;
        self.connect_event = false;
    }

    /// Starts the non-blocking connect the client asked for. The core's connect timer bounds
    /// how long it may take.
    pub(crate) fn start_connect(&mut self, now: Instant, registry: &Registry, token: Token) {
        let Some(addr) = self.resolved.take() else {
            return;
        };
        self.want_connect = false;
        let stream = TcpStream::connect(addr).and_then(|mut s| {
            registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(s)
        });
        match stream {
            Ok(s) => self.link = Link::Connecting(s),
            Err(e) => {
                log::debug!("ami-mio: connect to {addr} failed at once: {e}");
                self.client.handle_input(now, Input::ConnectFailed);
            }
        }
    }

    /// After readiness on a connecting socket: reports `Connected` or `ConnectFailed`, or
    /// nothing if the connect is still in progress.
    pub(crate) fn finish_connect(&mut self, now: Instant) {
        if !self.connect_event {
            return;
        }
        self.connect_event = false;
        let Link::Connecting(stream) = &self.link else {
            return;
        };
        let failed = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failed {
            log::debug!("ami-mio: connect failed: {e}");
            self.client.handle_input(now, Input::ConnectFailed);
            return;
        }
        if let Link::Connecting(stream) = std::mem::replace(&mut self.link, Link::Idle) {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("ami-mio: TCP_NODELAY not set: {e}");
            }
            self.link = Link::Open(stream);
        }
        self.readable = true;
        self.writable = true;
        self.client.handle_input(now, Input::Connected);
    }

    /// Reads until `WouldBlock`, end of stream, an error, or the turn's budget, feeding each
    /// chunk to the client and draining its outputs after each (a session may end mid-read).
    pub(crate) fn read(
        &mut self,
        now: Instant,
        turn: &mut Turn,
        buf: &mut [u8],
        id: ConnId,
        registry: &Registry,
        notices: &mut Vec<(ConnId, Notice)>,
    ) -> ReadEnd {
        while self.readable {
            if turn.is_spent() {
                return ReadEnd::Budget;
            }
            let Link::Open(stream) = &mut self.link else {
                return ReadEnd::Drained;
            };
            let max = buf.len().min(turn.bytes_left()).max(1);
            let Some(chunk) = buf.get_mut(..max) else {
                return ReadEnd::Drained;
            };
            match stream.read(chunk) {
                Ok(0) => {
                    self.readable = false;
                    self.client.handle_input(now, Input::Eof);
                }
                Ok(n) => {
                    let before = self.client.messages_in();
                    self.client
                        .handle_input(now, Input::Received(chunk.get(..n).unwrap_or(&[])));
                    let after = self.client.messages_in();
                    turn.charge(n, usize::try_from(after - before).unwrap_or(usize::MAX));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.readable = false;
                    self.client
                        .handle_input(now, Input::TransportError(e.kind()));
                }
            }
            self.drain(id, registry, notices);
        }
        ReadEnd::Drained
    }

    /// Writes what the client has to send until it is all written or the socket would block;
    /// a partial write is reported with the count written.
    pub(crate) fn write(&mut self, now: Instant) {
        let Link::Open(stream) = &mut self.link else {
            return;
        };
        while self.writable {
            let data = self.client.transmit();
            if data.is_empty() {
                return;
            }
            match stream.write(data) {
                Ok(0) => {
                    let kind = io::ErrorKind::WriteZero;
                    self.client.handle_input(now, Input::TransportError(kind));
                    return;
                }
                Ok(n) => self.client.advance_transmit(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.client
                        .handle_input(now, Input::TransportError(e.kind()));
                    return;
                }
            }
        }
    }
}
