//! Where the server is, and opening a transport to it: resolve, try every address in turn,
//! then TLS if asked for.

use crate::runtime::{Runtime, Transport};
use ami_proto::ConnectFailure;
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
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
struct Marked {
    cause: ConnectFailure,
    source: io::Error,
}

fn marked(cause: ConnectFailure, source: io::Error) -> io::Error {
    io::Error::new(source.kind(), Marked { cause, source })
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
            Err(_) => R::resolve(h.clone(), *p)
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

/// Resolves and connects to the first address that accepts, trying each in turn (a
/// dual-stack host whose first address is unreachable still connects).
pub(crate) async fn connect<R: Runtime>(target: &Target) -> io::Result<R::Tcp> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{target}: no address to connect to"),
    );
    for addr in resolve::<R>(target).await? {
        match R::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                log::debug!("AMI {target}: connect to {addr} failed: {e}");
                last = e;
            }
        }
    }
    Err(last)
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

/// Connects, then completes a TLS handshake over the stream when `tls` is set (inside the
/// core's connect timeout: a refused certificate is a failed connect).
pub(crate) async fn open_checked<R: Runtime>(
    target: &Target,
    #[cfg(feature = "tls")] tls: Option<&crate::tls::TlsTarget>,
) -> io::Result<Link<R::Tcp>> {
    let tcp = connect::<R>(target).await?;
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        let mut tls = tls.start(tcp).map_err(|e| marked(ConnectFailure::Tls, e))?;
        std::future::poll_fn(|cx| tls.poll_handshake(cx))
            .await
            .map_err(|e| marked(ConnectFailure::Tls, e))?;
        return Ok(Link(LinkKind::Tls(Box::new(tls))));
    }
    Ok(Link(LinkKind::Plain(tcp)))
}
