//! What the client hands back: outputs, action outcomes, disconnect reasons.

use crate::wire::action::ActionId;
use crate::wire::message::Message;
use std::time::Instant;

/// The next thing the caller (an adapter) must do, from [`Client::poll_output`].
///
/// Drain outputs until [`Output::Wait`], then write [`Client::transmit`], then sleep until the
/// deadline or until input arrives. Only `Connect`, `Close` and `Wait` are for the adapter;
/// a [`Notice`] is news for the application, to be passed on as it is.
///
/// [`Client::poll_output`]: crate::Client::poll_output
/// [`Client::transmit`]: crate::Client::transmit
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Open a transport to the server, then report [`Input::Connected`] or
    /// [`Input::ConnectFailed`].
    ///
    /// [`Input::Connected`]: crate::Input::Connected
    /// [`Input::ConnectFailed`]: crate::Input::ConnectFailed
    Connect,
    /// Close the transport (drop any bytes not yet written).
    Close,
    /// Session news for the application (not for the adapter): pass it on unchanged.
    Notice(Notice),
    /// Nothing more to do until this deadline (call `handle_timeout` then) or new input.
    /// `None`: only new input or a call can wake the client.
    Wait(Option<Instant>),
}

/// Session news, from [`Output::Notice`]: what the application is told, as the core says it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// Logged in (and filters re-applied): actions flow and events arrive.
    Ready {
        /// The AMI version from the banner, e.g. `11.0.0`.
        ami_version: String,
    },
    /// An action finished; this is reported exactly once per [`ActionId`].
    Completed {
        /// The action's ID, as returned by [`Client::send_action`](crate::Client::send_action).
        id: ActionId,
        /// How it ended.
        outcome: Outcome,
    },
    /// The session was lost; the client will reconnect at `retry_at` (None: it will not).
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// When the next connect is scheduled.
        retry_at: Option<Instant>,
        /// The circuit breaker is open (`breaker_threshold` failures in a row): the connect
        /// at `retry_at` is one probe after the breaker cooldown, not a backoff retry.
        breaker_open: bool,
    },
    /// The client has stopped for good; no further outputs except `Wait(None)`.
    Closed {
        /// Why.
        reason: DisconnectReason,
    },
}

/// One item of the event stream, from [`Client::poll_event`](crate::Client::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamItem {
    /// An event that no action claimed (list items and `OriginateResponse`s for our own
    /// actions go to those actions instead).
    Event(Message),
    /// Events were dropped here because the queue was full; `dropped` says how many (a
    /// [`LateAnswer`](Self::LateAnswer) dropped so counts as one).
    Gap {
        /// Number of events lost at this point of the stream.
        dropped: u64,
    },
    /// The action sent with [`SendOptions::with_mark`](crate::SendOptions::with_mark)`(mark)`
    /// completed here: events before this item arrived before its answer, events after it
    /// after. Never dropped.
    Mark {
        /// The caller's value from `with_mark`.
        mark: u64,
    },
    /// A session is up (logged in, filters applied): the events after this item are from it.
    /// The first item of every session, including the first one.
    Ready {
        /// The AMI version from the banner, e.g. `11.0.0`.
        ami_version: String,
    },
    /// The session was lost here. Whatever the server sent from now until the next
    /// [`StreamItem::Ready`] is missed and cannot be counted; a consumer that keeps state
    /// (a call view) must resynchronise after the next `Ready`.
    ///
    /// A session that came back after an outage and was lost again before it delivered any
    /// event is folded into that outage (the first loss reason is kept), so a consumer that
    /// stalls across many reconnects costs a bounded queue.
    Disconnected {
        /// Why the session was lost.
        reason: DisconnectReason,
    },
    /// The server's answer to an action of this session that had already ended without it
    /// ([`ActionError::TimedOut`] before its response, [`ActionError::Cancelled`] once its
    /// bytes were handed out, which is also what an async adapter's dropped future does):
    /// what the server actually did, arriving here, in stream order, where its response was
    /// read. For an action that changes the world (a sync `Originate`, `Redirect`,
    /// `Hangup`, `QueueAdd`...) it tells whether it ran, so a dialer can reconcile instead
    /// of guessing (no second dial, no lost agent).
    ///
    /// News only: the action's own outcome stays the error it got (a late `Success` never
    /// makes it a success), and the answer is still counted in
    /// [`Stats::late_answers_dropped`](crate::Stats::late_answers_dropped). Only the first
    /// response is reported, once: the items of a late list, a late `Complete`, a
    /// follow-up, a second response are swallowed and counted as before. Only while its
    /// entry is kept (its grace period, `action_timeout`, within `max_abandoned_actions`)
    /// and only on the connection the action was written on, once its session is Ready:
    /// after a reconnect the server session that would answer is gone
    /// ([`ActionError::Unknown`] never has a late answer). An async Originate's
    /// `OriginateResponse` comes as an [`Event`](Self::Event), as before.
    ///
    /// Also the answer of an action whose outcome had come (`Ok`, or
    /// [`ActionError::Server`]) but was handed back with
    /// [`Client::unclaimed`](crate::Client::unclaimed) because its caller never took it (an
    /// async adapter's future dropped between the answer's arrival and its next poll: a
    /// timeout around it that elapsed then, a `select!` that took another branch). It
    /// comes where it was handed back, with the ID and mark the caller gave, under the
    /// same rules (only from the current, Ready session), and is not counted in
    /// `late_answers_dropped` (it came in time); an async Originate's `OriginateResponse`
    /// follows it.
    ///
    /// Queued as an event is: it counts against `event_queue_cap` and `event_queue_bytes`,
    /// and when the queue is full the overflow policy applies to it (dropped into a
    /// [`Gap`](Self::Gap) with drop-newest, closing the session with close-session), but
    /// drop-oldest never displaces it to make room for a newer event. Counted as an event
    /// in `Stats::events_queued` or `Stats::events_dropped`.
    LateAnswer {
        /// The action's ID, as [`Client::send_action`](crate::Client::send_action) returned it
        /// and [`Notice::Completed`] reported it.
        id: ActionId,
        /// The action's [`SendOptions::with_mark`](crate::SendOptions::with_mark) value, if
        /// it was sent with one: how a caller that never sees the ActionID (an async
        /// adapter's `send_with`) recognises its action.
        mark: Option<u64>,
        /// The server's `Response:` message (`Success` or `Error`, its `Message`, any
        /// other fields; a list's `EventList: start`). Boxed so that every stream item (an
        /// event, mostly) stays the size of an event: the queue moves items by value.
        response: Box<Message>,
    },
    /// Server input was thrown away here: `count` messages (or broken fragments) for
    /// `reason`. Every one is also counted in [`Stats`](crate::Stats) and logged once per
    /// burst. Consecutive notices with no event between them are merged, so a flood of bad
    /// input costs one notice per reason, not one per message. A CLI prints these on stderr.
    Discarded {
        /// Why it was thrown away.
        reason: Discard,
        /// How many messages (or broken fragments) were lost at this point.
        count: u64,
    },
}

/// Why server input was discarded, in [`StreamItem::Discarded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Discard {
    /// The decoder dropped input that broke a limit (an over-long line, an endless or huge
    /// message, too many fields, an unterminated legacy `Response: Follows`) and
    /// resynchronised after it.
    Malformed(crate::DecodeError),
    /// A complete message whose first line is neither `Event:` nor `Response:`.
    NotEventOrResponse,
    /// An event that arrived after a reconnect's login, while the session's filters were
    /// being re-applied: it may be one the filters exist to keep out, and the stream's
    /// `Ready` is the first item of every session (a state kept from events resyncs there).
    /// The login's own `FullyBooted` and `SuccessfulAuth`, which Asterisk writes before
    /// any filter can exist, wait for `Ready` instead; they are counted here only if that
    /// session never got there.
    BeforeReady,
    /// A response whose ActionID matches no action of this connection, or a second one
    /// for an action that already had its response (an async Originate waiting for its
    /// `OriginateResponse`).
    UnmatchedResponse,
}

impl Discard {
    /// Whether what was thrown away may have been events the application would have
    /// received: a message over a decoder limit or malformed, or events before the session
    /// was ready. A stream consumer that accounts for every event (a gap marker in its
    /// output) counts these as missing; a message that is neither event nor response, or
    /// a stray response, was never an event.
    pub fn may_be_events(&self) -> bool {
        matches!(self, Discard::Malformed(_) | Discard::BeforeReady)
    }
}

impl std::fmt::Display for Discard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Discard::Malformed(e) => write!(f, "{e}"),
            Discard::NotEventOrResponse => {
                f.write_str("message that is neither event nor response skipped")
            }
            Discard::BeforeReady => {
                f.write_str("event before the session was ready (filters being re-applied) skipped")
            }
            Discard::UnmatchedResponse => {
                f.write_str("response with an unknown or missing ActionID skipped")
            }
        }
    }
}

/// Why a transport could not be opened, in [`Input::ConnectFailed`] and
/// [`DisconnectReason::ConnectFailed`]. An adapter builds it from the I/O error it got
/// (`io::Error::kind().into()`), or names the cause it knows better (a failed lookup is
/// [`HostNotFound`](ConnectFailure::HostNotFound), a refused handshake [`Tls`](ConnectFailure::Tls)).
///
/// [`Input::ConnectFailed`]: crate::Input::ConnectFailed
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing listens on that port (or a firewall rejects the connection).
    #[error("connection refused")]
    Refused,
    /// The operating system gave up waiting for the server.
    #[error("timed out")]
    TimedOut,
    /// The server's name did not resolve to any address.
    #[error("host not found")]
    HostNotFound,
    /// No route to the server's network.
    #[error("network unreachable")]
    NetworkUnreachable,
    /// No route to the server.
    #[error("no route to host")]
    HostUnreachable,
    /// The TCP connection opened but the TLS session did not (the port does not speak TLS,
    /// no protocol or cipher in common, a handshake cut off).
    #[error("TLS handshake failed")]
    Tls,
    /// The TLS handshake refused the server's certificate, for the reason given.
    #[error("TLS certificate refused: {0}")]
    TlsCertificate(CertificateProblem),
    /// Another I/O error.
    #[error("{0}")]
    Other(std::io::ErrorKind),
}

/// Why a server's TLS certificate was refused ([`ConnectFailure::TlsCertificate`]): what an
/// operator must fix, on the server or in the trusted CAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// Its validity period has ended.
    #[error("it has expired")]
    Expired,
    /// Its validity period has not begun (or this host's clock is behind).
    #[error("it is not valid yet")]
    NotValidYet,
    /// It does not name the server the client asked for (the host of its URL, or the
    /// `server_name` of its TLS settings).
    #[error("it is not valid for the server name asked for")]
    WrongName,
    /// No trusted CA signed it.
    #[error("it is not signed by a trusted CA")]
    UnknownIssuer,
    /// It is a CA's certificate, not a server's: typically a self-signed one made as a CA
    /// (`openssl req -x509` does so by default). Asterisk needs a certificate its CA signed
    /// (`ast_tls_cert` makes both), the client that CA's certificate.
    #[error("it is a CA certificate, not a server certificate (a self-signed CA certificate used by the server itself)")]
    CaAsServer,
    /// Its CA revoked it.
    #[error("it has been revoked")]
    Revoked,
    /// Its signature does not verify, or uses an algorithm not supported.
    #[error("its signature is invalid or of an unsupported algorithm")]
    BadSignature,
    /// Another problem (malformed, an unhandled critical extension, not for server use).
    #[error("it is malformed or not fit for a server")]
    Other,
}

impl From<std::io::ErrorKind> for ConnectFailure {
    fn from(kind: std::io::ErrorKind) -> ConnectFailure {
        use std::io::ErrorKind as K;
        match kind {
            K::ConnectionRefused => ConnectFailure::Refused,
            K::TimedOut => ConnectFailure::TimedOut,
            K::NetworkUnreachable => ConnectFailure::NetworkUnreachable,
            K::HostUnreachable => ConnectFailure::HostUnreachable,
            other => ConnectFailure::Other(other),
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The adapter could not open a transport, for this cause.
    #[error("connect_failed: {0}")]
    ConnectFailed(ConnectFailure),
    /// The transport did not open in time.
    #[error("connect_timeout")]
    ConnectTimeout,
    /// The TCP connection opened but the TLS handshake over it did not finish in time (a
    /// server or middlebox that accepts and then stays silent): reported by adapters that say
    /// [`Input::Handshaking`](crate::Input::Handshaking).
    #[error("tls_handshake_timeout")]
    TlsHandshakeTimeout,
    /// No banner in time after connect (a server at `authlimit` closes without one).
    #[error("banner_timeout")]
    BannerTimeout,
    /// The first line was not an Asterisk Manager banner.
    #[error("bad_banner")]
    BadBanner,
    /// Login did not finish in time.
    #[error("login_timeout")]
    LoginTimeout,
    /// The server refused the login (`Authentication failed`, `Login Already In Use`, or an
    /// MD5 challenge refused or answered without a challenge). Final unless
    /// `reconnect_on_auth_failure` is set, except `Login Already In Use`: another session
    /// holds the login (`allowmultiplelogin=no`), perhaps this client's own, half-open after
    /// a network fault, so it is retried with backoff. A Login or Challenge refused with `Asterisk is
    /// shutting down` is no rejection: it ends the session as [`ServerShutdown`](Self::ServerShutdown).
    #[error("login rejected: {}", crate::Shown(.message))]
    LoginRejected {
        /// The server's `Message`; for a Challenge answer without a challenge, a sentence
        /// saying so.
        message: String,
    },
    /// The server closed the connection.
    #[error("eof")]
    Eof,
    /// The transport failed.
    #[error("transport error: {0}")]
    TransportError(std::io::ErrorKind),
    /// No complete message arrived within the pong deadline after a heartbeat Ping.
    #[error("heartbeat_timeout")]
    HeartbeatTimeout,
    /// The event queue overflowed under [`OverflowPolicy::CloseSession`](crate::OverflowPolicy).
    #[error("event_overflow")]
    EventOverflow,
    /// The server is shutting down: it announced `Event: Shutdown` before its EOF or
    /// connection reset, answered an action `Asterisk is shutting down` before it, or
    /// refused the Login (or MD5 Challenge) so. Not final: a reconnect with backoff follows.
    #[error("server_shutdown")]
    ServerShutdown,
    /// The caller logged off (Goodbye received, or the server closed after Logoff).
    #[error("logoff")]
    Logoff,
    /// The caller closed the client.
    #[error("local_close")]
    LocalClose,
}

counted! {
    /// The kind of a [`DisconnectReason`], without its details: what
    /// [`Stats::disconnects_by_reason`](crate::Stats::disconnects_by_reason) counts.
    pub enum DisconnectKind {
        /// [`DisconnectReason::ConnectFailed`].
        ConnectFailed => "connect_failed",
        /// [`DisconnectReason::ConnectTimeout`].
        ConnectTimeout => "connect_timeout",
        /// [`DisconnectReason::TlsHandshakeTimeout`].
        TlsHandshakeTimeout => "tls_handshake_timeout",
        /// [`DisconnectReason::BannerTimeout`].
        BannerTimeout => "banner_timeout",
        /// [`DisconnectReason::BadBanner`].
        BadBanner => "bad_banner",
        /// [`DisconnectReason::LoginTimeout`].
        LoginTimeout => "login_timeout",
        /// [`DisconnectReason::LoginRejected`].
        LoginRejected => "login_rejected",
        /// [`DisconnectReason::Eof`].
        Eof => "eof",
        /// [`DisconnectReason::TransportError`].
        TransportError => "transport_error",
        /// [`DisconnectReason::HeartbeatTimeout`].
        HeartbeatTimeout => "heartbeat_timeout",
        /// [`DisconnectReason::EventOverflow`].
        EventOverflow => "event_overflow",
        /// [`DisconnectReason::ServerShutdown`].
        ServerShutdown => "server_shutdown",
        /// [`DisconnectReason::Logoff`].
        Logoff => "logoff",
        /// [`DisconnectReason::LocalClose`].
        LocalClose => "local_close",
    }
}

impl DisconnectReason {
    /// The reason's kind, for counters.
    pub fn kind(&self) -> DisconnectKind {
        match self {
            DisconnectReason::ConnectFailed(_) => DisconnectKind::ConnectFailed,
            DisconnectReason::ConnectTimeout => DisconnectKind::ConnectTimeout,
            DisconnectReason::TlsHandshakeTimeout => DisconnectKind::TlsHandshakeTimeout,
            DisconnectReason::BannerTimeout => DisconnectKind::BannerTimeout,
            DisconnectReason::BadBanner => DisconnectKind::BadBanner,
            DisconnectReason::LoginTimeout => DisconnectKind::LoginTimeout,
            DisconnectReason::LoginRejected { .. } => DisconnectKind::LoginRejected,
            DisconnectReason::Eof => DisconnectKind::Eof,
            DisconnectReason::TransportError(_) => DisconnectKind::TransportError,
            DisconnectReason::HeartbeatTimeout => DisconnectKind::HeartbeatTimeout,
            DisconnectReason::EventOverflow => DisconnectKind::EventOverflow,
            DisconnectReason::ServerShutdown => DisconnectKind::ServerShutdown,
            DisconnectReason::Logoff => DisconnectKind::Logoff,
            DisconnectReason::LocalClose => DisconnectKind::LocalClose,
        }
    }
}

/// The server's answer to one action: the response, plus list items or a follow-up event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub(crate) response: Message,
    pub(crate) items: Vec<Message>,
    // Boxed: most responses have neither, and a `Response` travels inside every outcome.
    pub(crate) complete: Option<Box<Message>>,
    pub(crate) follow_up: Option<Box<Message>>,
    /// List items the decoder dropped while the list was in progress.
    pub(crate) items_dropped: u64,
    /// The connection whose session delivered the answer: what
    /// [`Client::unclaimed`](crate::Client::unclaimed) compares with the current one. Not
    /// the ActionID's prefix, which is the connection the action was queued on: one still
    /// queued when its session was lost is written, and answered, on the next.
    pub(crate) received_on: ReceivedOn,
}

/// The connection that delivered an answer: its generation, and its own ActionID prefix
/// (as a number). The generation alone does not tell one client's connection from
/// another's: every client counts from 0, and a fleet hands an outcome back by server name,
/// which may name a client added again since (its old session's answers are not the new
/// session's events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReceivedOn {
    pub(crate) generation: u64,
    pub(crate) prefix: u64,
}

impl Response {
    pub(crate) fn new(response: Message) -> Response {
        Response {
            response,
            items: Vec::new(),
            complete: None,
            follow_up: None,
            items_dropped: 0,
            received_on: ReceivedOn::default(),
        }
    }
    /// The `Response:` message.
    pub fn message(&self) -> &Message {
        &self.response
    }
    /// The `Message:` text of the response, if any.
    pub fn text(&self) -> Option<&str> {
        self.response.get_str("Message")
    }
    /// List items, in order (empty for a plain response).
    pub fn items(&self) -> &[Message] {
        &self.items
    }
    /// The list's closing event (`...Complete`), if this was a list.
    pub fn complete(&self) -> Option<&Message> {
        self.complete.as_deref()
    }
    /// The follow-up, which Asterisk sends after the response with the action's ActionID:
    /// the event `OriginateResponse` for an async Originate, `FAXStats` for FAXStats,
    /// `FAXSession` for FAXSession, `WaitEventComplete` for WaitEvent; for JabberSend,
    /// answered twice, the second response (whether the message was sent; the first only
    /// says it was taken). The action completes only once it is here, so what it carries
    /// reaches the caller, not the event stream.
    pub fn follow_up(&self) -> Option<&Message> {
        self.follow_up.as_deref()
    }
    /// Items of this list that arrived but were dropped by the decoder (over a size limit,
    /// broken), so [`items`](Self::items) lacks them. Never non-zero in an `Ok` outcome:
    /// such a list completes as [`ActionError::ListIncomplete`]; it can be in the partial
    /// answer of an error (a list that then timed out, say).
    pub fn items_dropped(&self) -> u64 {
        self.items_dropped
    }
}

/// Which wait an action was in when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Never written: the connection was down, the pipeline full, or none of its bytes had
    /// been handed to the transport (written, or lent to an adapter writing from a copy)
    /// by the deadline (they were withdrawn; see
    /// [`Client::transmit`](crate::Client::transmit)). Safe to send again.
    Queued,
    /// Written, waiting for the response.
    Response,
    /// Response `EventList: start` received, waiting for `EventList: Complete`.
    List,
    /// Answered, waiting for its follow-up (an async Originate's `OriginateResponse`,
    /// JabberSend's second response; see [`Response::follow_up`]).
    FollowUp,
}

impl std::fmt::Display for Phase {
    /// Words for people: where the action was when its deadline passed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Queued => {
                "never sent (not connected, the pipeline stayed full, or the server stopped reading)"
            }
            Phase::Response => "no response arrived in time",
            Phase::List => "the list did not complete in time",
            Phase::FollowUp => {
                "no follow-up event (an async Originate's OriginateResponse, FAXStats's FAXStats, \
                 WaitEvent's WaitEventComplete...) arrived in time"
            }
        })
    }
}

/// How an action ended, reported once per ActionID in [`Notice::Completed`]: `Ok` with the
/// server's [`Response`] only when the server said it worked (`Success`, `Goodbye`,
/// `Follows`; for an async Originate, an `OriginateResponse` with `Response: Success`);
/// otherwise an [`ActionError`] that says why.
pub type Outcome = Result<Response, ActionError>;

/// Why an action did not succeed: the `Err` of an [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The server answered with an error (`Response: Error`, an `OriginateResponse` with
    /// `Response: Failure`, or a JabberSend's second response with `Response: Error`), or
    /// ended a list with a second response instead of its `EventList: Complete`; the
    /// response (with any list items received before it, or the failed follow-up) is here.
    #[error("server error: {}", server_error_text(.0))]
    Server(Box<Response>),
    /// The deadline passed in `phase`; whatever arrived is in `partial`. In
    /// [`Phase::Response`] the server may still have run it: should its response come
    /// within the grace period, it is reported in the event stream as
    /// [`StreamItem::LateAnswer`] with this action's ID (and mark), while this stays the
    /// outcome.
    #[error("timed out: {phase}")]
    TimedOut {
        /// The phase that did not finish.
        phase: Phase,
        /// What had arrived, if anything.
        partial: Option<Box<Response>>,
    },
    /// The list outgrew `max_list_items` or `max_list_bytes`; its remaining items are
    /// dropped (and counted in [`Stats::list_items_dropped`](crate::Stats::list_items_dropped))
    /// as they arrive, for as long as they keep coming: until its `Complete`, or until
    /// `action_timeout` passes without one.
    #[error("list overflow after {items} items / {bytes} bytes")]
    ListOverflow {
        /// Items gathered.
        items: usize,
        /// Bytes gathered.
        bytes: usize,
    },
    /// The list completed, but items of it were dropped on the way in (over the decoder's
    /// `max_message_len` or another of its limits, see [`DecodeError`](crate::DecodeError)),
    /// so the items received are not the whole list. Counted by the decoder's drop itself,
    /// not by the server's `ListItems`, which some actions do not fill in truthfully. A
    /// dropped message whose `ActionID` was not read (cut off before that line) counts
    /// against every list in progress on the connection: any of them may have lost it.
    #[error("list incomplete: {dropped} item(s) dropped on the way in (too large or broken), {items} received")]
    ListIncomplete {
        /// Items received (in `partial`).
        items: usize,
        /// Items dropped by the decoder.
        dropped: u64,
        /// The answer without the dropped items: response, items, closing event.
        partial: Box<Response>,
    },
    /// Cancelled by the caller (see [`Client::cancel`](crate::Client::cancel): whether its
    /// bytes may still reach the server depends on whether any had been handed out). A
    /// response that comes for it later is reported as [`StreamItem::LateAnswer`].
    #[error("cancelled")]
    Cancelled,
    /// The server cannot have run it, so it is safe to send again: it was never written
    /// (its connection never came up in time, the client closed or logged off first), or its
    /// session was lost before its last byte was handed to the transport (lent to the
    /// adapter or written; see [`Client::lend_transmit`](crate::Client::lend_transmit)).
    /// Asterisk runs an action only once it has read the blank line that ends it, and a
    /// lost connection takes a half-read action with it. The message names the reason, so
    /// `{e}` alone says it all; `source()` does not return it again (a chain printer would
    /// say it twice).
    #[error("not sent: {0}")]
    NotSent(DisconnectReason),
    /// Handed to the transport whole (its last byte lent or written), but the connection
    /// was lost before the answer: the server may or may not have run it. It is never
    /// re-sent automatically. No answer can come later: Asterisk answers an action only on
    /// the session that read it, and the next session's ActionIDs are its own (no
    /// [`StreamItem::LateAnswer`]); the world has to be asked (a status action, the events
    /// of the new session).
    #[error("outcome unknown: {0}")]
    Unknown(DisconnectReason),
    /// The server accepted it (its `Response` is here: for an async Originate, "Originate
    /// successfully queued", so the call is being placed), but the session was lost before
    /// its follow-up (the `OriginateResponse`) arrived: it ran, and how it ended will not
    /// come as this action's answer. Never re-sent (a second Originate is a second call);
    /// a new session may still carry the `OriginateResponse`, with this action's ActionID,
    /// as an ordinary event, since Asterisk sends it to every session that reads call
    /// events. Counted as [`OutcomeKind::Unknown`].
    #[error("accepted, then the session was lost before its follow-up: {reason}")]
    FollowUpLost {
        /// Why the session ended.
        reason: DisconnectReason,
        /// The server's acceptance.
        response: Box<Response>,
    },
    /// An async Originate withdrawn before any of it was handed out: the event mask the
    /// session went back to keeps call events out (the mask change it was accepted under
    /// was cancelled, passed its deadline unsent, or was refused), so its
    /// `OriginateResponse` could never arrive, and it would have timed out while its call
    /// was placed. Nothing of it reached the server: safe to send again once the mask lets
    /// call events through. Counted as [`OutcomeKind::NotSent`].
    #[error("not sent: the event mask `{mask}` keeps call events out, so its OriginateResponse could never arrive (the mask change it was accepted under did not take effect)")]
    FollowUpMasked {
        /// The session's event mask.
        mask: String,
    },
    /// The server answered, but the client threw its response away, for `reason`: over a
    /// decoder limit (a `Command` whose output has more `Output:` lines than
    /// [`DecoderLimits::max_fields`](crate::DecoderLimits::max_fields), a legacy
    /// `Response: Follows` that never ended), or not readable as a response (a banner line
    /// glued in front of it). The server did read the action, but what it said is lost:
    /// a `Response: Error` is discarded the same way as a success, so whether it ran is not
    /// known. It is not re-sent. Reported as soon as the discard is read, not at the deadline; the
    /// discard itself is counted and reported in the event stream as well
    /// ([`StreamItem::Discarded`]).
    #[error("its response was discarded: {reason}")]
    ResponseDiscarded {
        /// Why the response was thrown away.
        reason: Discard,
    },
}

/// The text of a server error: the failed follow-up event, or the response's `Message`.
fn server_error_text(r: &Response) -> String {
    match r.follow_up() {
        // An event (an OriginateResponse): how the call ended.
        Some(ev) if ev.event().is_some() => format!(
            "{} {} (Reason {})",
            crate::Shown(ev.event().unwrap_or("event")),
            crate::Shown(ev.get_str("Response").unwrap_or("?")),
            crate::Shown(ev.get_str("Reason").unwrap_or("?"))
        ),
        // A second response (JabberSend's result): what it says.
        Some(second) => response_error_text(second),
        None => response_error_text(r.message()),
    }
}

/// What an error response says: its `Message`, or for a failed Command (which says only
/// "Command output follows") its first line of output ("No such command ...").
fn response_error_text(m: &Message) -> String {
    let message = m.get_str("Message").unwrap_or("(no message)");
    let output = m
        .command_output()
        .map(|v| v.to_str_lossy())
        .find(|line| !line.trim().is_empty());
    match output {
        Some(line) if message.eq_ignore_ascii_case("Command output follows") => {
            crate::Shown(&line).to_string()
        }
        _ => crate::Shown(message).to_string(),
    }
}

impl ActionError {
    /// The server's answer, when there is one: its error response, what had arrived before
    /// a deadline, or a list without its dropped items.
    pub fn response(&self) -> Option<&Response> {
        match self {
            ActionError::Server(r) => Some(r),
            ActionError::TimedOut { partial, .. } => partial.as_deref(),
            ActionError::ListIncomplete { partial, .. } => Some(partial),
            ActionError::FollowUpLost { response, .. } => Some(response),
            _ => None,
        }
    }

    /// The error's kind, for counters.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            ActionError::Server(_) => OutcomeKind::ServerError,
            ActionError::TimedOut { .. } => OutcomeKind::TimedOut,
            ActionError::ListOverflow { .. } => OutcomeKind::ListOverflow,
            ActionError::ListIncomplete { .. } => OutcomeKind::ListIncomplete,
            ActionError::Cancelled => OutcomeKind::Cancelled,
            ActionError::NotSent(_) | ActionError::FollowUpMasked { .. } => OutcomeKind::NotSent,
            ActionError::Unknown(_) | ActionError::FollowUpLost { .. } => OutcomeKind::Unknown,
            ActionError::ResponseDiscarded { .. } => OutcomeKind::ResponseDiscarded,
        }
    }
}

impl OutcomeKind {
    /// The kind of an action's outcome.
    pub fn of(outcome: &Outcome) -> OutcomeKind {
        match outcome {
            Ok(_) => OutcomeKind::Success,
            Err(e) => e.kind(),
        }
    }
}

counted! {
    /// The kind of an [`Outcome`], without its details: what
    /// [`Stats::actions_by_outcome`](crate::Stats::actions_by_outcome) counts.
    pub enum OutcomeKind {
        /// `Ok`: the server said it worked.
        Success => "success",
        /// [`ActionError::Server`].
        ServerError => "server_error",
        /// [`ActionError::TimedOut`].
        TimedOut => "timed_out",
        /// [`ActionError::ListOverflow`].
        ListOverflow => "list_overflow",
        /// [`ActionError::Cancelled`].
        Cancelled => "cancelled",
        /// [`ActionError::NotSent`].
        NotSent => "not_sent",
        /// [`ActionError::Unknown`] and [`ActionError::FollowUpLost`].
        Unknown => "unknown",
        /// [`ActionError::ListIncomplete`] (after the older kinds, so they keep their slots).
        ListIncomplete => "list_incomplete",
        /// [`ActionError::ResponseDiscarded`] (last, so the older kinds keep their slots).
        ResponseDiscarded => "response_discarded",
    }
}

/// Where a session is now, from [`Client::status`](crate::Client::status). The async adapters
/// publish it as a watch; a [`Notice`] says what happened, a `Status` where that left the
/// session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Opening a transport (first connect or reconnect).
    Connecting,
    /// Logged in; actions flow.
    Ready {
        /// AMI version from the banner.
        ami_version: String,
    },
    /// Lost; a reconnect is scheduled at `retry_at`.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// When the next connect starts.
        retry_at: Option<Instant>,
        /// The circuit breaker is open (`breaker_threshold` failures in a row): the connect
        /// at `retry_at` is one probe after the breaker cooldown, not a backoff retry.
        breaker_open: bool,
    },
    /// Stopped for good.
    Closed {
        /// Why.
        reason: DisconnectReason,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeError, Decoder, DecoderLimits, Frame};

    fn msg(text: &str) -> Message {
        let mut d = Decoder::without_banner(DecoderLimits::default());
        d.feed(text.as_bytes());
        match d.decode() {
            Some(Ok(Frame::Message(m))) => m,
            other => unreachable!("{other:?}"),
        }
    }

    fn error_response(message: &str) -> Box<Response> {
        Box::new(Response::new(msg(&format!(
            "Response: Error\r\nMessage: {message}\r\n\r\n"
        ))))
    }

    #[test]
    fn only_discards_that_may_have_been_events_count_as_missing_events() {
        assert!(Discard::Malformed(DecodeError::FollowsUnterminated).may_be_events());
        assert!(Discard::BeforeReady.may_be_events());
        assert!(!Discard::NotEventOrResponse.may_be_events());
        assert!(!Discard::UnmatchedResponse.may_be_events());
        assert_eq!(
            Discard::UnmatchedResponse.to_string(),
            "response with an unknown or missing ActionID skipped"
        );
    }

    #[test]
    fn a_server_error_says_what_the_server_said() {
        let plain = ActionError::Server(error_response("Permission denied"));
        assert_eq!(plain.to_string(), "server error: Permission denied");
        // A failed Command says only "Command output follows": its first output line tells.
        let command = ActionError::Server(Box::new(Response::new(msg(
            "Response: Error\r\nMessage: Command output follows\r\nOutput: \r\n\
             Output: No such command 'bogus'\r\n\r\n",
        ))));
        assert_eq!(command.to_string(), "server error: No such command 'bogus'");
        // Output under another message is not what the error is about.
        let other = ActionError::Server(Box::new(Response::new(msg(
            "Response: Error\r\nMessage: Denied\r\nOutput: stray\r\n\r\n",
        ))));
        assert_eq!(other.to_string(), "server error: Denied");
        // A failed async Originate: its OriginateResponse tells how the call ended.
        let mut originate = error_response("Originate successfully queued");
        originate.follow_up = Some(Box::new(msg(
            "Event: OriginateResponse\r\nResponse: Failure\r\nReason: 3\r\n\r\n",
        )));
        assert_eq!(
            ActionError::Server(originate).to_string(),
            "server error: OriginateResponse Failure (Reason 3)"
        );
        // JabberSend, answered twice: the second response tells.
        let mut jabber = error_response("Attempting to send Jabber Message");
        jabber.follow_up = Some(Box::new(msg(
            "Response: Error\r\nMessage: Could not find Sender\r\n\r\n",
        )));
        assert_eq!(
            ActionError::Server(jabber).to_string(),
            "server error: Could not find Sender"
        );
    }

    #[test]
    fn every_error_that_carries_an_answer_gives_it() {
        let text = |e: &ActionError| e.response().and_then(Response::text).map(str::to_owned);
        let said = Some("said".to_owned());
        assert_eq!(text(&ActionError::Server(error_response("said"))), said);
        let timed_out = ActionError::TimedOut {
            phase: Phase::List,
            partial: Some(error_response("said")),
        };
        assert_eq!(text(&timed_out), said);
        assert_eq!(
            timed_out.to_string(),
            "timed out: the list did not complete in time"
        );
        let incomplete = ActionError::ListIncomplete {
            items: 0,
            dropped: 1,
            partial: error_response("said"),
        };
        assert_eq!(text(&incomplete), said);
        let lost = ActionError::FollowUpLost {
            reason: DisconnectReason::Eof,
            response: error_response("said"),
        };
        assert_eq!(text(&lost), said);
        let never = ActionError::TimedOut {
            phase: Phase::Queued,
            partial: None,
        };
        assert!(never.response().is_none());
        assert!(ActionError::Cancelled.response().is_none());
    }
}
