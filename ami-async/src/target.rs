//! Where the server is, and opening a transport to it: resolve, try the addresses staggered
//! and side by side (RFC 8305), then TLS if asked for.

use crate::runtime::{BoxFuture, Runtime, Timer, Transport};
use ami_proto::{interleave_families, ConnectFailure, CONNECT_ATTEMPT_DELAY};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Where the server is: a socket address, or a host name resolved at every connect (off the
/// driver), so a DNS change is picked up on reconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A resolved address.
    Addr(SocketAddr),
    /// A host name and port.
    Host(String, u16),
}

impl From<SocketAddr> for Target {
    fn from(a: SocketAddr) -> Target {
        Target::Addr(a)
    }
}

impl From<(&str, u16)> for Target {
    fn from((h, p): (&str, u16)) -> Target {
        Target::Host(h.to_string(), p)
    }
}

impl From<(String, u16)> for Target {
    fn from((h, p): (String, u16)) -> Target {
        Target::Host(h, p)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// An open that failed for a reason the `io::ErrorKind` alone does not tell (the name did
/// not resolve, the TLS handshake failed): carried inside the `io::Error` it travels in.
/// Its message is the carried error's, so that error is not its `source()` too (a chain
/// printer would say it twice).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
struct Marked {
    cause: ConnectFailure,
    error: io::Error,
}

fn marked(cause: ConnectFailure, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), Marked { cause, error })
}

/// Why an open failed, as the core wants it: a name that did not resolve and a TLS
/// handshake that failed are said so; anything else is the `io::ErrorKind` of the last
/// address tried.
pub(crate) fn connect_failure(e: &io::Error) -> ConnectFailure {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Marked>())
        .map_or_else(|| e.kind().into(), |m| m.cause)
}

/// The addresses to try, in the resolver's order. An IP literal needs no resolver.
async fn resolve<R: Runtime>(target: &Target) -> io::Result<Vec<SocketAddr>> {
    let addrs = match target {
        Target::Addr(a) => vec![*a],
        Target::Host(h, p) => match h.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, *p)],
            Err(_) => crate::resolve::lookup::<R>(h, *p)
                .await
                .map_err(|e| marked(ConnectFailure::HostNotFound, e))?,
        },
    };
    if addrs.is_empty() {
        let none = io::Error::new(io::ErrorKind::NotFound, format!("{target}: no address"));
        return Err(marked(ConnectFailure::HostNotFound, none));
    }
    Ok(addrs)
}

/// Resolves and connects to the first address that accepts: attempts start one
/// [`CONNECT_ATTEMPT_DELAY`] apart (or at once when the one before fails) and run side by side,
/// addresses taken alternately by family (the first address's family first); the first
/// connected stream wins and the other attempts are dropped.
pub(crate) async fn connect<R: Runtime>(target: &Target) -> io::Result<R::Tcp> {
    let mut next = interleave_families(resolve::<R>(target).await?).into_iter();
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{target}: no address to connect to"),
    );
    let mut attempts: Vec<(SocketAddr, BoxFuture<io::Result<R::Tcp>>)> = Vec::new();
    let mut timer = R::timer();
    let mut start_next = true;
    std::future::poll_fn(|cx| loop {
        if start_next {
            start_next = false;
            if let Some(addr) = next.next() {
                attempts.push((addr, R::connect(addr)));
                if next.len() > 0 {
                    timer.set_at(R::now() + CONNECT_ATTEMPT_DELAY);
                }
            }
        }
        let mut failed = false;
        let mut i = 0;
        while let Some((addr, attempt)) = attempts.get_mut(i) {
            match attempt.as_mut().poll(cx) {
                Poll::Ready(Ok(stream)) => return Poll::Ready(Ok(stream)),
                Poll::Ready(Err(e)) => {
                    log::debug!("AMI {target}: connect to {addr} failed: {e}");
                    last = e;
                    drop(attempts.swap_remove(i));
                    failed = true;
                }
                Poll::Pending => i += 1,
            }
        }
        if attempts.is_empty() && next.len() == 0 {
            return Poll::Ready(Err(std::mem::replace(
                &mut last,
                io::ErrorKind::NotFound.into(),
            )));
        }
        // A failure starts the next address at once; a slow attempt, after the delay.
        if failed || attempts.is_empty() {
            start_next = true;
            continue;
        }
        if next.len() > 0 && timer.poll_fired(cx).is_ready() {
            start_next = true;
            continue;
        }
        return Poll::Pending;
    })
    .await
}

/// An open transport, plain or TLS.
pub(crate) struct Link<T>(LinkKind<T>);

enum LinkKind<T> {
    Plain(T),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::TlsTransport<T>>),
}

impl<T> std::fmt::Debug for Link<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            LinkKind::Plain(_) => "plain",
            #[cfg(feature = "tls")]
            LinkKind::Tls(_) => "tls",
        };
        f.debug_tuple("Link").field(&kind).finish()
    }
}

impl<T: Transport> Transport for Link<T> {
    fn direct_writer(&self) -> Option<Arc<dyn crate::runtime::DirectWrite>> {
        match &self.0 {
            LinkKind::Plain(t) => t.direct_writer(),
            #[cfg(feature = "tls")]
            LinkKind::Tls(_) => None,
        }
    }
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            LinkKind::Plain(t) => t.poll_read(cx, buf),
            #[cfg(feature = "tls")]
            LinkKind::Tls(t) => t.poll_read(cx, buf),
        }
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            LinkKind::Plain(t) => t.poll_write(cx, buf),
            #[cfg(feature = "tls")]
            LinkKind::Tls(t) => t.poll_write(cx, buf),
        }
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            LinkKind::Plain(t) => t.poll_flush(cx),
            #[cfg(feature = "tls")]
            LinkKind::Tls(t) => t.poll_flush(cx),
        }
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            LinkKind::Plain(t) => t.poll_close(cx),
            #[cfg(feature = "tls")]
            LinkKind::Tls(t) => t.poll_close(cx),
        }
    }
}

/// A transport the core asked for, being opened: the TCP connect (see [`connect`]), then,
/// when `tls` is set, the handshake over it (inside the core's connect timeout: a refused
/// certificate is a failed connect). Polled by a driver, it says when TCP is up and the
/// handshake begins, so that the core tells a hung handshake from a hung connect.
pub(crate) struct Opening<T> {
    stage: Stage<T>,
}

enum Stage<T> {
    Connecting {
        tcp: BoxFuture<io::Result<T>>,
        #[cfg(feature = "tls")]
        tls: Option<crate::tls::TlsTarget>,
    },
    #[cfg(feature = "tls")]
    Handshaking(Box<crate::tls::TlsTransport<T>>),
    Done,
}

/// What polling an [`Opening`] found.
pub(crate) enum Opened<T> {
    /// The TCP connection is open and the TLS handshake starts (said once; poll on).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Handshaking,
    /// The transport is open, or could not be opened (then never polled again).
    Done(io::Result<Link<T>>),
}

impl<T: Transport + Send + 'static> Opening<T> {
    /// Starts opening `target`; nothing happens until the first poll.
    pub(crate) fn start<R: Runtime<Tcp = T>>(
        target: &Target,
        #[cfg(feature = "tls")] tls: Option<crate::tls::TlsTarget>,
    ) -> Opening<T> {
        let target = target.clone();
        Opening {
            stage: Stage::Connecting {
                tcp: Box::pin(async move { connect::<R>(&target).await }),
                #[cfg(feature = "tls")]
                tls,
            },
        }
    }

    /// Moves the open on; `Pending` after [`Opened::Done`] (the caller drops it then).
    pub(crate) fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<Opened<T>> {
        match &mut self.stage {
            Stage::Connecting {
                tcp,
                #[cfg(feature = "tls")]
                tls,
            } => {
                let Poll::Ready(opened) = tcp.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                let tcp = match opened {
                    Ok(tcp) => tcp,
                    Err(e) => return self.done(Err(e)),
                };
                #[cfg(feature = "tls")]
                if let Some(tls) = tls.take() {
                    return match tls.start(tcp) {
                        Ok(session) => {
                            self.stage = Stage::Handshaking(Box::new(session));
                            Poll::Ready(Opened::Handshaking)
                        }
                        Err(e) => self.done(Err(marked(crate::tls::connect_failure(&e), e))),
                    };
                }
                self.done(Ok(Link(LinkKind::Plain(tcp))))
            }
            #[cfg(feature = "tls")]
            Stage::Handshaking(session) => match session.poll_handshake(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => self.done(Err(marked(crate::tls::connect_failure(&e), e))),
                Poll::Ready(Ok(())) => match std::mem::replace(&mut self.stage, Stage::Done) {
                    Stage::Handshaking(session) => {
                        Poll::Ready(Opened::Done(Ok(Link(LinkKind::Tls(session)))))
                    }
                    _ => Poll::Pending,
                },
            },
            Stage::Done => Poll::Pending,
        }
    }

    fn done(&mut self, r: io::Result<Link<T>>) -> Poll<Opened<T>> {
        self.stage = Stage::Done;
        Poll::Ready(Opened::Done(r))
    }
}

/// Ends a transport the core closed: one attempt, without waiting, at a clean end (TLS's
/// `close_notify`, then TCP's FIN from a shutdown of the write side) before it is dropped.
/// A peer then reads the end of the stream, not a truncated TLS stream or, when its own
/// bytes were still unread here, a reset. Never waits: a peer that stopped reading keeps
/// its full socket, and the drop closes it anyway.
pub(crate) fn shut_down<T: Transport>(link: Option<T>) {
    if let Some(mut link) = link {
        let _ = link.poll_close(&mut Context::from_waker(std::task::Waker::noop()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Waker;
    use std::time::Instant;

    thread_local! {
        /// What the scripted resolver returns.
        static RESOLVED: RefCell<Vec<SocketAddr>> = const { RefCell::new(Vec::new()) };
        /// Connects started, in order.
        static TRIED: RefCell<Vec<SocketAddr>> = const { RefCell::new(Vec::new()) };
    }

    /// Connects that never answer (port 1: a dropped SYN), are refused (port 2), or succeed
    /// at once (any other port); a timer that has fired as soon as it is armed.
    struct Net;
    struct Stream(SocketAddr);
    struct Elapsed(bool);

    impl Runtime for Net {
        type Tcp = Stream;
        type Timer = Elapsed;
        fn now() -> Instant {
            Instant::now()
        }
        fn resolve(_: String, _: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
            let addrs = RESOLVED.with(|r| r.borrow().clone());
            Box::pin(async move { Ok(addrs) })
        }
        fn connect(addr: SocketAddr) -> BoxFuture<io::Result<Stream>> {
            TRIED.with(|t| t.borrow_mut().push(addr));
            match addr.port() {
                1 => Box::pin(std::future::pending()),
                2 => Box::pin(async { Err(io::ErrorKind::ConnectionRefused.into()) }),
                _ => Box::pin(async move { Ok(Stream(addr)) }),
            }
        }
        fn timer() -> Elapsed {
            Elapsed(false)
        }
    }

    impl Timer for Elapsed {
        fn set_at(&mut self, _: Instant) {
            self.0 = true;
        }
        fn poll_fired(&mut self, _: &mut Context<'_>) -> Poll<()> {
            if std::mem::take(&mut self.0) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Transport for Stream {
        fn poll_read(&mut self, _: &mut Context<'_>, _: &mut [u8]) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_write(&mut self, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Resolves `pbx` to `addrs` and polls the connect a few times: `None` while pending.
    fn connect_to(addrs: &[&str]) -> Option<io::Result<SocketAddr>> {
        RESOLVED.with(|r| *r.borrow_mut() = addrs.iter().map(|a| a.parse().unwrap()).collect());
        TRIED.with(|t| t.borrow_mut().clear());
        let target = Target::Host("pbx".into(), 5038);
        let mut connect = std::pin::pin!(connect::<Net>(&target));
        let mut cx = Context::from_waker(Waker::noop());
        (0..8).find_map(|_| match connect.as_mut().poll(&mut cx) {
            Poll::Ready(r) => Some(r.map(|s| s.0)),
            Poll::Pending => None,
        })
    }

    fn tried() -> Vec<String> {
        TRIED.with(|t| t.borrow().iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_first_address_that_never_answers_does_not_keep_the_next_from_connecting() {
        let got = connect_to(&["[2001:db8::1]:1", "192.0.2.1:5038"]);
        assert_eq!(
            got.map(|r| r.unwrap().to_string()),
            Some("192.0.2.1:5038".to_string())
        );
        assert_eq!(tried(), ["[2001:db8::1]:1", "192.0.2.1:5038"]);
    }

    #[test]
    fn a_refused_address_starts_the_next_at_once_and_the_last_error_is_returned() {
        let got = connect_to(&["192.0.2.1:2", "192.0.2.2:2"]).expect("no delay needed");
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(tried(), ["192.0.2.1:2", "192.0.2.2:2"]);
        // A single address that never answers waits (the core's connect timeout ends it).
        assert!(connect_to(&["192.0.2.1:1"]).is_none());
    }

    thread_local! {
        /// How far [`SlowDns`]'s clock runs ahead of the real one.
        static AHEAD: std::cell::Cell<std::time::Duration> = const { std::cell::Cell::new(std::time::Duration::ZERO) };
        /// The lookups [`SlowDns`] started on this thread, answered by the test.
        static LOOKUPS: RefCell<Vec<Arc<std::sync::Mutex<Lookup>>>> = const { RefCell::new(Vec::new()) };
    }

    /// A lookup on a blocking thread: it runs until the test answers it, whether or not
    /// anyone still waits for it (dropping its future does not stop `getaddrinfo`).
    #[derive(Default)]
    struct Lookup {
        answer: Option<io::Result<Vec<SocketAddr>>>,
        waker: Option<Waker>,
    }

    /// [`Net`] with a resolver that answers only when the test says so.
    struct SlowDns;

    impl Runtime for SlowDns {
        type Tcp = Stream;
        type Timer = Elapsed;
        fn now() -> Instant {
            Instant::now() + AHEAD.with(|a| a.get())
        }
        fn resolve(_: String, _: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
            let lookup = Arc::new(std::sync::Mutex::new(Lookup::default()));
            LOOKUPS.with(|l| l.borrow_mut().push(lookup.clone()));
            Box::pin(std::future::poll_fn(move |cx| {
                let mut l = lookup.lock().unwrap();
                match l.answer.take() {
                    Some(answer) => Poll::Ready(answer),
                    None => {
                        l.waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            }))
        }
        fn connect(addr: SocketAddr) -> BoxFuture<io::Result<Stream>> {
            Net::connect(addr)
        }
        fn timer() -> Elapsed {
            Elapsed(false)
        }
    }

    fn lookups() -> usize {
        LOOKUPS.with(|l| l.borrow().len())
    }

    /// Answers the `i`th lookup started on this thread.
    fn answer(i: usize, answer: io::Result<Vec<SocketAddr>>) {
        let lookup = LOOKUPS.with(|l| l.borrow()[i].clone());
        let mut l = lookup.lock().unwrap();
        l.answer = Some(answer);
        if let Some(w) = l.waker.take() {
            w.wake();
        }
    }

    fn poll_once<T>(f: Pin<&mut impl Future<Output = T>>) -> Poll<T> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn attempts_cut_off_while_a_lookup_hangs_wait_for_it_instead_of_starting_more() {
        let target = Target::Host("hung-dns.test".into(), 5038);
        // Five reconnects, each given up by the connect timeout while DNS does not answer.
        for _ in 0..5 {
            let mut attempt = std::pin::pin!(connect::<SlowDns>(&target));
            assert!(poll_once(attempt.as_mut()).is_pending());
        }
        assert_eq!(lookups(), 1, "lookups started while the first still ran");
        // Two attempts wait together: one answer (an error here) reaches both.
        let mut a = Box::pin(connect::<SlowDns>(&target));
        let mut b = Box::pin(connect::<SlowDns>(&target));
        assert!(poll_once(a.as_mut()).is_pending() && poll_once(b.as_mut()).is_pending());
        assert_eq!(lookups(), 1);
        answer(0, Err(io::Error::other("SERVFAIL")));
        for mut attempt in [a, b] {
            let Poll::Ready(Err(e)) = poll_once(attempt.as_mut()) else {
                panic!("the lookup's error did not reach every attempt");
            };
            assert_eq!(connect_failure(&e), ConnectFailure::HostNotFound);
        }
        // Ended, it is forgotten: the next connect looks the name up again.
        let mut next = std::pin::pin!(connect::<SlowDns>(&target));
        assert!(poll_once(next.as_mut()).is_pending());
        assert_eq!(lookups(), 2);
        answer(1, Ok(vec!["192.0.2.1:5038".parse().unwrap()]));
        let Poll::Ready(Ok(stream)) = poll_once(next.as_mut()) else {
            panic!("the connect did not use the answer");
        };
        assert_eq!(stream.0.to_string(), "192.0.2.1:5038");
    }

    #[test]
    fn a_lookup_that_ended_while_no_attempt_waited_is_not_reused() {
        let target = Target::Host("unwatched-dns.test".into(), 5038);
        {
            let mut gone = std::pin::pin!(connect::<SlowDns>(&target));
            assert!(poll_once(gone.as_mut()).is_pending());
        }
        answer(0, Ok(vec!["192.0.2.1:5038".parse().unwrap()]));
        // The answer came after the attempt was given up: maybe long ago, so a later
        // attempt asks again.
        let mut later = std::pin::pin!(connect::<SlowDns>(&target));
        assert!(poll_once(later.as_mut()).is_pending());
        assert_eq!(lookups(), 2);
    }

    #[test]
    fn a_lookup_that_never_ends_is_not_waited_for_past_a_minute() {
        let target = Target::Host("never-dns.test".into(), 5038);
        {
            let mut first = std::pin::pin!(connect::<SlowDns>(&target));
            assert!(poll_once(first.as_mut()).is_pending());
        }
        AHEAD.with(|a| a.set(std::time::Duration::from_secs(61)));
        let mut later = std::pin::pin!(connect::<SlowDns>(&target));
        assert!(poll_once(later.as_mut()).is_pending());
        assert_eq!(lookups(), 2);
        answer(1, Ok(vec!["192.0.2.1:5038".parse().unwrap()]));
        assert!(matches!(poll_once(later.as_mut()), Poll::Ready(Ok(_))));
    }

    #[test]
    fn an_open_failure_marked_with_its_cause_prints_its_text_once_when_its_chain_is_walked() {
        let e = marked(
            ConnectFailure::HostNotFound,
            io::Error::other("no such host"),
        );
        assert_eq!(connect_failure(&e), ConnectFailure::HostNotFound);
        let mut chain = vec![e.to_string()];
        let mut next = std::error::Error::source(&e);
        while let Some(cause) = next {
            chain.push(cause.to_string());
            next = cause.source();
        }
        assert_eq!(chain.join(": "), "no such host");
    }
}
