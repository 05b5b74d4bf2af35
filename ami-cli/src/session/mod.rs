//! The one interface every command is written against, and how a session is opened.
//!
//! A [`Session`] is synchronous: [`Session::send`] queues an action, [`Session::wait`]
//! blocks until something happened (a completed action, stream items, a change of the
//! session) or a deadline passed. Each runtime implements it in its own file and nothing
//! else in the CLI knows which runtime runs.

mod async_std;
pub(crate) mod calls;
mod mio;
mod on_runtime;
mod tokio;

use crate::diagnose;
use crate::stop;
use crate::subscription::Subscription;
use crate::url::ServerUrl;
use crate::words;
use crate::{Auth, Connection, Failure, Runtime, EXIT_CONNECT, EXIT_USAGE};
use ami_proto::{
    Action, ActionError, AuthMethod, ClientConfig, DisconnectReason, Response, SendError,
    SendOptions, Stats, Status, StreamItem,
};
use std::time::{Duration, Instant};

/// How long a command waits for its first login before it gives up.
pub(crate) const FIRST_LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a command waits for the server to answer its Logoff before it closes the
/// connection anyway: the most any command adds to its run time at exit.
pub(crate) const LOGOFF_GRACE: Duration = Duration::from_secs(2);

/// The part of [`LOGOFF_GRACE`] a Logoff leaves to writing what arrived while it waited
/// (`listen`): a server that never answers the Logoff must not leave its last events no
/// time to be printed on a stdout that drains.
pub(crate) const PRINT_RESERVE: Duration = Duration::from_millis(500);

/// Names one action queued with [`Session::send`].
pub(crate) type Ticket = u64;

/// Why an action did not succeed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Refused before sending (a cap, a reserved action...).
    Refused(SendError),
    /// Sent, and it did not succeed.
    Action(ActionError),
    /// The session ended before the action could be handed over.
    Closed,
}

impl From<ami_async::AmiError> for CallError {
    fn from(e: ami_async::AmiError) -> CallError {
        use ami_async::AmiError;
        match e {
            AmiError::Send(e) => CallError::Refused(e),
            AmiError::Action(e) => CallError::Action(e),
            _ => CallError::Closed,
        }
    }
}

/// A change of the session as a whole.
#[derive(Debug)]
pub(crate) enum Change {
    /// Logged in (again).
    Ready,
    /// Lost; a reconnect starts at `retry_at` (`None`: it will not), a probe after the
    /// breaker's cooldown when `breaker_open`.
    Lost {
        reason: DisconnectReason,
        retry_at: Option<Instant>,
        breaker_open: bool,
    },
    /// Stopped for good. Every stream item of the session was handed out before this.
    Closed { reason: DisconnectReason },
}

impl Change {
    /// The async adapters' status as a change (`None` for `Connecting`).
    fn from_status(status: Status) -> Option<Change> {
        match status {
            Status::Ready { .. } => Some(Change::Ready),
            Status::Disconnected {
                reason,
                retry_at,
                breaker_open,
            } => Some(Change::Lost {
                reason,
                retry_at,
                breaker_open,
            }),
            Status::Closed { reason } => Some(Change::Closed { reason }),
            _ => None,
        }
    }
}

/// Something [`Session::wait`] reports.
#[derive(Debug)]
pub(crate) enum Happening {
    /// An action queued with [`Session::send`] finished.
    Completed {
        ticket: Ticket,
        result: Result<Response, CallError>,
    },
    /// An item of the event stream.
    Item(StreamItem),
    /// The session changed.
    Change(Change),
}

/// One AMI session on some runtime.
pub(crate) trait Session {
    /// Queues an action; its outcome comes back from [`wait`](Self::wait).
    fn send(&mut self, action: Action) -> Ticket {
        self.send_with(action, SendOptions::default())
    }
    /// [`send`](Self::send) with options (a stream mark, for the call tracker).
    fn send_with(&mut self, action: Action, options: SendOptions) -> Ticket;
    /// Blocks until something happened or `until` passed, and appends what happened to
    /// `out` (completions first, then stream items in order, then changes).
    fn wait(&mut self, until: Option<Instant>, out: &mut Vec<Happening>) -> Result<(), Failure>;
    /// Logs off and waits for the server's answer at most `grace`, then closes. What
    /// arrives meanwhile (the events the server wrote before its Goodbye, the session's
    /// end) is appended to `out`, as [`wait`](Self::wait) would have.
    fn logoff(&mut self, grace: Duration, out: &mut Vec<Happening>);
    /// Closes at once, without a Logoff.
    fn close(&mut self);
    /// The core's counters.
    fn stats(&self) -> Stats;
    /// Reads the event stream one item at a time until `until`, as the README's loop does
    /// (`events.recv()` per item on the async runtimes, `poll_event` per item on mio), and
    /// counts what came. For `ami bench`; nothing else is reported meanwhile.
    fn read_one_by_one(&mut self, until: Instant) -> Result<ItemCount, Failure>;
}

/// What [`Session::read_one_by_one`] counted.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ItemCount {
    /// Events received.
    pub(crate) events: u64,
    /// Events the stream reported as dropped (gaps).
    pub(crate) dropped: u64,
}

impl ItemCount {
    /// Counts one stream item.
    fn count(&mut self, item: &StreamItem) {
        match item {
            StreamItem::Event(_) => self.events += 1,
            StreamItem::Gap { dropped } => self.dropped += dropped,
            _ => {}
        }
    }
}

/// Where and how to connect, checked before anything connects.
pub(crate) struct Target {
    pub(crate) url: ServerUrl,
    pub(crate) config: ClientConfig,
    /// For `amis://`: the PEM bundle of the CA certificates to trust (`--ca`).
    pub(crate) ca_pem: Option<Vec<u8>>,
}

/// The client settings of every command. The event queue keeps the core's default, one
/// maximal message in bytes (16 MiB, the least the core accepts): whatever a command takes
/// out of it in one batch and the stdout queue behind it (`printer::MAX_BYTES`) come on top,
/// and the sum must stay well under 64 MiB with 256 KiB events and a slow reader.
pub(crate) fn config(
    auth: Auth,
    user: &str,
    secret: &str,
    wanted: impl Into<Subscription>,
) -> Result<ClientConfig, Failure> {
    let wanted = wanted.into();
    let mut builder = ClientConfig::builder(user, secret)
        .auth(match auth {
            Auth::Plain => AuthMethod::Plain,
            Auth::Md5 => AuthMethod::Md5,
        })
        .events(wanted.mask);
    // Prefilters: the output is filtered here anyway, so the session need not wait for
    // them, and no event is lost to the moment before the server applies them.
    for f in wanted.filters {
        builder = builder.prefilter(f);
    }
    // The error says "invalid client config: ..." itself: a prefix of ours doubled it.
    builder
        .build()
        .map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))
}

/// An open session and the server it talks to (for messages).
pub(crate) struct Live {
    pub(crate) session: Box<dyn Session>,
    pub(crate) url: ServerUrl,
    /// What arrived with the first login (events sent right after it), for the first wait.
    early: Vec<Happening>,
}

/// How a command waits for its first login.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FirstLogin {
    /// The command's own deadline (`--duration`, an action's `--timeout`): the wait ends
    /// then if that comes before [`FIRST_LOGIN_TIMEOUT`].
    pub(crate) within: Option<Duration>,
    /// A stop signal ends the wait (`listen`, `calls --watch`): the signals are caught from
    /// the connect on, once the server's name has resolved.
    pub(crate) stoppable: bool,
}

/// Opens a session to the `--server`, asking for `events` (`on`, `off`, `call`...), and
/// waits for the first login. A first failure (refused, rejected password) is reported at
/// once, in words, with no retry loop.
pub(crate) fn open(conn: &Connection, events: impl Into<Subscription>) -> Result<Live, Failure> {
    open_with(conn, events, FirstLogin::default())
}

/// [`open`], the wait for the first login bounded and ended as `first` says.
pub(crate) fn open_with(
    conn: &Connection,
    events: impl Into<Subscription>,
    first: FirstLogin,
) -> Result<Live, Failure> {
    let url = one_server(conn)?;
    // Before the signals are caught: their default action ends a slow name lookup at once,
    // as a person pressing Ctrl-C wants.
    diagnose::resolve(url)?;
    if first.stoppable {
        stop::catch();
    }
    let config = config(conn.auth, &url.user, url.secret.expose(), events)?;
    open_url(conn.runtime, conn, url.clone(), config, first)
}

/// The one `--server` of a command that talks to one server.
pub(crate) fn one_server(conn: &Connection) -> Result<&ServerUrl, Failure> {
    match conn.server.as_slice() {
        [] => Err(no_server()),
        [one] => Ok(one),
        _ => Err(Failure::new(
            EXIT_USAGE,
            "this command takes one --server (several: `listen`, `calls`, `action --on`)",
        )),
    }
}

/// The usage error for a command run without any server.
pub(crate) fn no_server() -> Failure {
    Failure::new(
        EXIT_USAGE,
        "no server: pass --server ami://USER:SECRET@HOST:PORT or set AMI_URL",
    )
}

/// Opens a session to the embedded simulator (`demo`, `bench` without `--server`).
pub(crate) fn open_local(
    runtime: Runtime,
    addr: std::net::SocketAddr,
    events: &str,
) -> Result<Live, Failure> {
    let url: ServerUrl = format!("ami://admin:amp111@{addr}")
        .parse()
        .map_err(|e| Failure::new(crate::EXIT_OTHER, format!("{e}")))?;
    let config = config(Auth::Plain, "admin", "amp111", events)?;
    let conn = Connection {
        server: Vec::new(),
        auth: Auth::Plain,
        runtime,
        ca: None,
    };
    open_url(runtime, &conn, url, config, FirstLogin::default())
}

fn open_url(
    runtime: Runtime,
    conn: &Connection,
    url: ServerUrl,
    config: ClientConfig,
    first: FirstLogin,
) -> Result<Live, Failure> {
    let target = Target {
        ca_pem: if url.tls { Some(read_ca(conn)?) } else { None },
        url,
        config,
    };
    let url = target.url.clone();
    let mut session: Box<dyn Session> = match runtime {
        Runtime::Tokio => Box::new(tokio::open(target)?),
        Runtime::Mio => Box::new(mio::MioSession::open(target)?),
        Runtime::AsyncStd => Box::new(async_std::open(target)?),
    };
    let early = first_ready(session.as_mut(), &url, first)?;
    Ok(Live {
        session,
        url,
        early,
    })
}

pub(crate) fn read_ca(conn: &Connection) -> Result<Vec<u8>, Failure> {
    let ca = conn.ca.as_ref().ok_or_else(|| {
        Failure::new(
            EXIT_USAGE,
            "amis:// needs --ca FILE (PEM) to verify the server (a certificate from a public CA: \
             --ca /etc/ssl/certs/ca-certificates.crt, the system's bundle on Debian and Ubuntu)",
        )
    })?;
    std::fs::read(ca)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("cannot read {}: {e}", ca.display())))
}

/// Waits for the first login, at most [`FIRST_LOGIN_TIMEOUT`] or the command's own deadline
/// if that is shorter, and until a stop signal when `first` is stoppable; returns what came
/// with it (nothing of it may be lost: events can arrive in the same batch as the login).
fn first_ready(
    session: &mut dyn Session,
    url: &ServerUrl,
    first: FirstLogin,
) -> Result<Vec<Happening>, Failure> {
    let limit = first
        .within
        .map_or(FIRST_LOGIN_TIMEOUT, |w| w.min(FIRST_LOGIN_TIMEOUT));
    let deadline = Instant::now() + limit;
    let (mut happened, mut early) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        if first.stoppable && stop::requested() {
            // Nothing was received and nobody is logged in: nothing to write, no Logoff.
            session.close();
            return Err(Failure::new(
                EXIT_CONNECT,
                format!("no login to {url} before the stop signal"),
            ));
        }
        let until = if first.stoppable {
            stop::wake_by(Some(deadline))
        } else {
            Some(deadline)
        };
        session.wait(until, &mut happened)?;
        let mut batch = happened.drain(..);
        while let Some(h) = batch.next() {
            match h {
                Happening::Change(Change::Ready) => {
                    early.extend(batch);
                    return Ok(early);
                }
                // Logged in and lost before the status watch showed Ready (it shows the
                // latest status only): a session was up, so the command goes on, the loss
                // and its reconnect handed out as any later one.
                lost @ Happening::Change(Change::Lost { .. }) if session.stats().logins > 0 => {
                    early.push(lost);
                    early.extend(batch);
                    return Ok(early);
                }
                Happening::Change(Change::Lost { reason, .. } | Change::Closed { reason }) => {
                    session.close();
                    return Err(Failure::new(EXIT_CONNECT, words::reason(&reason, url)));
                }
                // The stream's own session-start item may come before the status.
                item @ Happening::Item(_) => early.push(item),
                _ => {}
            }
        }
    }
    session.close();
    Err(Failure::new(
        EXIT_CONNECT,
        format!("no login to {url} within {}", words::duration(limit)),
    ))
}

impl Live {
    /// [`Session::wait`], after handing out what arrived with the first login.
    pub(crate) fn wait(
        &mut self,
        until: Option<Instant>,
        out: &mut Vec<Happening>,
    ) -> Result<(), Failure> {
        if self.early.is_empty() {
            self.session.wait(until, out)
        } else {
            out.append(&mut self.early);
            Ok(())
        }
    }

    /// Sends one action and waits for its outcome; other happenings are dropped (a command
    /// that calls this asked for no events).
    pub(crate) fn call(&mut self, action: Action) -> Result<Result<Response, CallError>, Failure> {
        self.call_with(action, SendOptions::default())
    }

    /// [`call`](Self::call) with options (a deadline of the action's own).
    pub(crate) fn call_with(
        &mut self,
        action: Action,
        options: SendOptions,
    ) -> Result<Result<Response, CallError>, Failure> {
        let ticket = self.session.send_with(action, options);
        let mut happened = Vec::new();
        loop {
            self.wait(None, &mut happened)?;
            for h in happened.drain(..) {
                if let Happening::Completed { ticket: t, result } = h {
                    if t == ticket {
                        return Ok(result);
                    }
                }
            }
        }
    }

    /// Logs off within [`LOGOFF_GRACE`]; what arrives meanwhile is not kept (a command
    /// that prints the stream to its end uses [`logoff_keeping`](Self::logoff_keeping)).
    pub(crate) fn logoff(&mut self) {
        self.logoff_keeping(&mut Vec::new());
    }

    /// Logs off within [`LOGOFF_GRACE`], appending to `out` what arrives until the session
    /// has closed: the events the server wrote before its Goodbye, then the session's end.
    pub(crate) fn logoff_keeping(&mut self, out: &mut Vec<Happening>) {
        // What came with the first login and was never waited for comes first.
        out.append(&mut self.early);
        self.session.logoff(LOGOFF_GRACE - PRINT_RESERVE, out);
    }
}
