//! AMI over TLS (feature `tls`): the settings, a rustls configuration from a PEM bundle, and
//! TLS over any [`Transport`].
//!
//! rustls's `ClientConnection` is sans-IO: ciphertext goes in through `read_tls` and out
//! through `write_tls`. `TlsTransport` drives it with the same non-blocking polls as plain
//! TCP, so every runtime gets TLS from this one implementation.

use crate::runtime::Transport;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::task::{Context, Poll};

/// TLS settings: AMI over TLS is implicit TLS (no STARTTLS), usually on port 5039.
#[derive(Clone)]
pub struct Tls {
    /// The rustls client configuration (trusted roots, client authentication).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry (a DNS name or an IP address).
    pub server_name: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The PEM text is malformed.
    #[error("bad PEM: {0}")]
    Pem(rustls_pki_types::pem::Error),
    /// A certificate was refused as a trust anchor.
    #[error("bad certificate: {0}")]
    Certificate(rustls::Error),
    /// The PEM held no certificate.
    #[error("no certificate in PEM")]
    NoCertificate,
    /// rustls refused the protocol versions.
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
    /// The server name is neither a DNS name nor an IP address.
    #[error("bad TLS server name: {0}")]
    ServerName(rustls_pki_types::InvalidDnsNameError),
}

// By hand, not `#[from]`, which would make the wrapped error its `source()` as well:
// the message names it already, and a chain printer would say it twice.
impl From<rustls_pki_types::pem::Error> for TlsConfigError {
    fn from(e: rustls_pki_types::pem::Error) -> TlsConfigError {
        TlsConfigError::Pem(e)
    }
}

impl From<rustls_pki_types::InvalidDnsNameError> for TlsConfigError {
    fn from(e: rustls_pki_types::InvalidDnsNameError) -> TlsConfigError {
        TlsConfigError::ServerName(e)
    }
}

/// A client configuration that trusts exactly the CA certificates in `pem` (Asterisk servers
/// usually present a certificate from a private CA). TLS 1.2 and 1.3, ring as the crypto
/// provider, no client certificate.
///
/// # Errors
/// Malformed PEM, a certificate rustls refuses, or no certificate at all.
pub fn client_config_from_pem(pem: &[u8]) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert?).map_err(TlsConfigError::Certificate)?;
    }
    if roots.is_empty() {
        return Err(TlsConfigError::NoCertificate);
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsConfigError::Setup)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`Tls`] checked when the session is created: the server name parsed once.
#[derive(Clone)]
pub(crate) struct TlsTarget {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsTarget {
    pub(crate) fn new(tls: Tls) -> Result<TlsTarget, TlsConfigError> {
        Ok(TlsTarget {
            config: tls.config,
            name: ServerName::try_from(tls.server_name)?,
        })
    }

    /// A fresh TLS session over a connected stream; the handshake starts with the driver's
    /// first poll.
    pub(crate) fn start<T>(&self, tcp: T) -> io::Result<TlsTransport<T>> {
        let conn = ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(tls_error)?;
        Ok(TlsTransport { tcp, conn })
    }
}

/// What a failed TLS open reports: the certificate's problem when the handshake refused it,
/// else a TLS failure. `e` is the error the handshake returned (rustls's error inside, as
/// every adapter's TLS wraps it), so that every runtime reports the same reason.
pub fn connect_failure(e: &io::Error) -> ami_proto::ConnectFailure {
    use ami_proto::ConnectFailure;
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(certificate_problem)
        .map_or(ConnectFailure::Tls, ConnectFailure::TlsCertificate)
}

/// The certificate problem behind a rustls error, if it is one (a certificate the
/// handshake refused); shared by every adapter's TLS.
pub fn certificate_problem(e: &rustls::Error) -> Option<ami_proto::CertificateProblem> {
    use ami_proto::CertificateProblem as P;
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = e else {
        return None;
    };
    Some(match c {
        C::Expired | C::ExpiredContext { .. } => P::Expired,
        C::NotValidYet | C::NotValidYetContext { .. } => P::NotValidYet,
        C::NotValidForName | C::NotValidForNameContext { .. } => P::WrongName,
        C::UnknownIssuer => P::UnknownIssuer,
        C::Revoked => P::Revoked,
        C::BadSignature
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => P::BadSignature,
        // webpki's own error, passed through as text only: its Display is its name.
        C::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => P::CaAsServer,
        _ => P::Other,
    })
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A transport and the TLS session over it.
pub(crate) struct TlsTransport<T> {
    tcp: T,
    conn: ClientConnection,
}

/// `io::Read`/`io::Write` over a polled transport: `Pending` becomes `WouldBlock` (the
/// waker is registered by the poll), which rustls's `read_tls`/`write_tls` understand.
struct Polled<'a, 'b, T> {
    tcp: &'a mut T,
    cx: &'a mut Context<'b>,
}

impl<T: Transport> Read for Polled<'_, '_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tcp.poll_read(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<T: Transport> Write for Polled<'_, '_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.tcp.poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `Pending` from an `io::Result` that says `WouldBlock`.
fn poll_io<T>(r: io::Result<T>) -> Poll<io::Result<T>> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        r => Poll::Ready(r),
    }
}

impl<T: Transport> TlsTransport<T> {
    /// Drives the handshake to its end, so that a refused certificate is a failed connect
    /// (as for any TLS client), not a transport error on an open session.
    pub(crate) fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.poll_send_records(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            let mut io = Polled {
                tcp: &mut self.tcp,
                cx,
            };
            match poll_io(self.conn.read_tls(&mut io)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Poll::Ready(Ok(_)) => {
                    if let Err(e) = self.conn.process_new_packets() {
                        // The alert that says why goes out, best effort.
                        let _ = self.poll_send_records(cx);
                        return Poll::Ready(Err(tls_error(e)));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes out queued TLS records (handshake, data, alerts).
    fn poll_send_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            let mut io = Polled {
                tcp: &mut self.tcp,
                cx,
            };
            match poll_io(self.conn.write_tls(&mut io)) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: Transport> Transport for TlsTransport<T> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            // Handshake messages and alerts go out as soon as rustls has them.
            if let Poll::Ready(Err(e)) = self.poll_send_records(cx) {
                return Poll::Ready(Err(e));
            }
            match self.conn.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                // The peer closed without close_notify: the end of the stream for AMI.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            let mut io = Polled {
                tcp: &mut self.tcp,
                cx,
            };
            match poll_io(self.conn.read_tls(&mut io)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(_)) => {
                    self.conn.process_new_packets().map_err(tls_error)?;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut n = self.conn.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            // rustls's buffer is full: records must leave before more plaintext fits.
            match self.poll_send_records(cx) {
                Poll::Ready(Ok(())) => n = self.conn.writer().write(buf)?,
                other => return other.map(|r| r.map(|()| 0)),
            }
            if n == 0 {
                // Still in the handshake: the read side wakes the driver when it is done.
                return Poll::Pending;
            }
        }
        // Best effort now; the driver's flush polls push out the rest.
        if let Poll::Ready(Err(e)) = self.poll_send_records(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send_records(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.conn.send_close_notify();
        match self.poll_send_records(cx) {
            Poll::Ready(Ok(())) => self.tcp.poll_close(cx),
            other => other,
        }
    }
}
