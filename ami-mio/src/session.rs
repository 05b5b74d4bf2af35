//! What a connection's I/O feeds: a client the [`MioDriver`](crate::MioDriver) owns, or one
//! server of a [`MioFleet`](crate::MioFleet)'s core fleet. The socket code in
//! [`Conn`] is written once against this trait.

use crate::conn::{Conn, Link, ReadEnd, Target};
use crate::report::ConnId;
use ami_proto::fleet::Turn;
use ami_proto::{Client, Input, Notice, Output};
use mio::{Registry, Token};
use std::time::Instant;

/// The protocol side of one connection, as the socket code sees it.
pub(crate) trait Session {
    /// Reports what happened on the transport.
    fn handle_input(&mut self, now: Instant, input: Input<'_>);
    /// Bytes to write.
    fn transmit(&self) -> &[u8];
    /// Marks `n` bytes as written.
    fn advance_transmit(&mut self, n: usize);
    /// Messages decoded so far (for the message budget).
    fn messages_in(&self) -> u64;
    /// Called after each input inside a read: carries out at once what the session asked
    /// for, so that a session that ended mid-read stops being fed the rest of that read.
    fn settle(&mut self, conn: &mut Conn);
}

/// A client owned by the driver, with where its news go.
pub(crate) struct Direct<'a> {
    pub(crate) client: &'a mut Client,
    pub(crate) id: ConnId,
    pub(crate) registry: &'a Registry,
    pub(crate) notices: &'a mut Vec<(ConnId, Notice)>,
}

impl Session for Direct<'_> {
    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.client.handle_input(now, input);
    }
    fn transmit(&self) -> &[u8] {
        self.client.transmit()
    }
    fn advance_transmit(&mut self, n: usize) {
        self.client.advance_transmit(n);
    }
    fn messages_in(&self) -> u64 {
        self.client.messages_in()
    }
    /// Drains the client's outputs: transport requests are carried out (or noted for the
    /// connect phase), the rest goes to `notices` unchanged.
    fn settle(&mut self, conn: &mut Conn) {
        let id = self.id;
        loop {
            match self.client.poll_output() {
                Output::Wait(_) => break,
                Output::Connect => conn.want_connect_now(self.registry),
                Output::Close => conn.drop_link(self.registry),
                Output::Notice(notice) => self.notices.push((id, notice)),
                other => log::debug!("ami-mio: output not known to this adapter: {other:?}"),
            }
        }
    }
}

/// One connection of a [`MioDriver`](crate::MioDriver): its client and its socket.
#[derive(Debug)]
pub(crate) struct Owned {
    pub(crate) client: Client,
    pub(crate) conn: Conn,
}

impl Owned {
    pub(crate) fn new(client: Client, target: Target) -> Owned {
        Owned {
            client,
            conn: Conn::new(target),
        }
    }

    fn direct<'a>(
        client: &'a mut Client,
        id: ConnId,
        registry: &'a Registry,
        notices: &'a mut Vec<(ConnId, Notice)>,
    ) -> Direct<'a> {
        Direct {
            client,
            id,
            registry,
            notices,
        }
    }

    /// Carries out the client's outputs (see [`Direct`]).
    pub(crate) fn drain(
        &mut self,
        id: ConnId,
        registry: &Registry,
        notices: &mut Vec<(ConnId, Notice)>,
    ) {
        Owned::direct(&mut self.client, id, registry, notices).settle(&mut self.conn);
    }

    pub(crate) fn has_work(&self) -> bool {
        self.conn.has_work(self.client.transmit().is_empty())
    }

    pub(crate) fn finish_connect(
        &mut self,
        now: Instant,
        id: ConnId,
        registry: &Registry,
        notices: &mut Vec<(ConnId, Notice)>,
    ) {
        let mut s = Owned::direct(&mut self.client, id, registry, notices);
        self.conn
            .finish_connect(now, &mut s, registry, Token(id.index));
    }

    pub(crate) fn start_connect(
        &mut self,
        now: Instant,
        id: ConnId,
        registry: &Registry,
        notices: &mut Vec<(ConnId, Notice)>,
    ) {
        let mut s = Owned::direct(&mut self.client, id, registry, notices);
        self.conn
            .start_connect(now, &mut s, registry, Token(id.index));
    }

    pub(crate) fn read(
        &mut self,
        now: Instant,
        turn: &mut Turn,
        buf: &mut [u8],
        id: ConnId,
        registry: &Registry,
        notices: &mut Vec<(ConnId, Notice)>,
    ) -> ReadEnd {
        let mut s = Owned::direct(&mut self.client, id, registry, notices);
        self.conn.read(now, &mut s, turn, buf)
    }

    pub(crate) fn write(
        &mut self,
        now: Instant,
        id: ConnId,
        registry: &Registry,
        notices: &mut Vec<(ConnId, Notice)>,
    ) {
        let mut s = Owned::direct(&mut self.client, id, registry, notices);
        self.conn.write(now, &mut s);
    }

    /// True while the socket is open.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.conn.link, Link::Open(_))
    }
}
