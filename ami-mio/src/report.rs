//! What one [`step`](crate::MioDriver::step) hands back.

use ami_proto::Notice;
use mio::event::Event;
use mio::Token;

/// Names one connection of a [`MioDriver`](crate::MioDriver). A removed connection's ID is
/// never reused for another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) index: usize,
    pub(crate) generation: u64,
}

impl ConnId {
    /// The slot number (also the connection's mio token while it has a socket).
    pub fn index(&self) -> usize {
        self.index
    }
}

/// Readiness of one of the caller's own mio sources (a token in
/// [`USER_TOKENS`](crate::USER_TOKENS)), copied out of the poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserReady {
    /// The token the caller registered the source with.
    pub token: Token,
    /// Readable.
    pub readable: bool,
    /// Writable.
    pub writable: bool,
    /// The read half or the whole source was closed.
    pub read_closed: bool,
    /// The write half was closed.
    pub write_closed: bool,
    /// An error is pending on the source.
    pub error: bool,
}

impl UserReady {
    pub(crate) fn from_event(ev: &Event) -> UserReady {
        UserReady {
            token: ev.token(),
            readable: ev.is_readable(),
            writable: ev.is_writable(),
            read_closed: ev.is_read_closed(),
            write_closed: ev.is_write_closed(),
            error: ev.is_error(),
        }
    }
}

/// What happened during one [`step`](crate::MioDriver::step) (and the
/// [`wait`](crate::MioDriver::wait)s before it).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Report {
    /// Session notices and completed actions, per connection, in the order they happened.
    pub notices: Vec<(ConnId, Notice)>,
    /// Connections with stream items queued (events, and the session markers and discard
    /// notices between them): drain them with [`poll_event`](crate::MioDriver::poll_event).
    pub events: Vec<ConnId>,
    /// Readiness of the caller's own sources.
    pub user: Vec<UserReady>,
    /// True when a budget stopped this step short (data left unread, connects deferred):
    /// [`wait`](crate::MioDriver::wait) will then return at once.
    pub more: bool,
    /// True when the poll's [`waker`](crate::MioDriver::waker) fired since the last step:
    /// your own `wake()` (so a loop fed by a channel looks at it only then) or a name
    /// lookup's answer. Not counted by [`is_empty`](Self::is_empty).
    pub woken: bool,
}

impl Report {
    /// True when nothing happened.
    pub fn is_empty(&self) -> bool {
        self.notices.is_empty() && self.events.is_empty() && self.user.is_empty()
    }
}

/// Polls `poll` once and sorts what it reports: the waker sets `woken`, the caller's tokens
/// go to `user`, and a connection token goes to `conn` (its slot index and the event).
/// Shared by [`MioDriver`](crate::MioDriver) and [`MioFleet`](crate::MioFleet).
pub(crate) fn poll_ready(
    poll: &mut mio::Poll,
    events: &mut mio::Events,
    timeout: Option<std::time::Duration>,
    woken: &mut bool,
    user: &mut Vec<UserReady>,
    mut conn: impl FnMut(usize, &Event),
) -> std::io::Result<()> {
    match poll.poll(events, timeout) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
        Err(e) => return Err(e),
    }
    for ev in events.iter() {
        let token = ev.token().0;
        if token == crate::WAKER_TOKEN {
            *woken = true;
        } else if crate::USER_TOKENS.contains(&token) {
            user.push(UserReady::from_event(ev));
        } else {
            conn(token, ev);
        }
    }
    Ok(())
}
