//! Opening a transport: resolve (asynchronously), connect, optionally TLS.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Where the server is: a socket address, or a host name resolved by tokio (asynchronously,
/// off the driver's path) at every connect, so a DNS change is picked up on reconnect.
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

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// TLS settings: AMI over TLS is implicit TLS (no STARTTLS), usually on port 5039.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub struct Tls {
    /// The rustls client configuration (roots, client auth).
    pub config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    /// The name the certificate must carry.
    pub server_name: String,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// An open transport, plain or TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

pub(crate) async fn open(
    target: &Target,
    #[cfg(feature = "tls")] tls: Option<&Tls>,
) -> io::Result<Stream> {
    let tcp = match target {
        Target::Addr(a) => TcpStream::connect(a).await?,
        Target::Host(h, p) => TcpStream::connect((h.as_str(), *p)).await?,
    };
    // AMI is request/response with small messages: Nagle only adds latency.
    tcp.set_nodelay(true)?;
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        let name = rustls_pki_types::ServerName::try_from(tls.server_name.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let stream = connector.connect(name, tcp).await?;
        return Ok(Stream::Tls(Box::new(stream)));
    }
    Ok(Stream::Plain(tcp))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
