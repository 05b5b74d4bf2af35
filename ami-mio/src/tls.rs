//! AMI over TLS (feature `tls`): the settings, a helper building a rustls configuration, and
//! the per-connection TLS state.
//!
//! rustls's [`ClientConnection`] is itself sans-IO: it takes ciphertext through `read_tls`,
//! hands ciphertext out through `write_tls`, and never touches a socket on its own. So the
//! handshake and every record go through the same non-blocking reads and writes as plain TCP,
//! inside [`MioDriver::step`](crate::MioDriver::step); nothing blocks and no thread is added.

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::io;
use std::sync::Arc;

/// TLS settings of a connection: AMI over TLS is implicit TLS (no STARTTLS), usually on port
/// 5039. The same shape as `ami_tokio::Tls`.
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

/// Why [`client_config_from_pem`] could not build a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The text is not PEM.
    #[error("bad PEM: {0}")]
    Pem(#[source] rustls_pki_types::pem::Error),
    /// A certificate in it cannot be a trust anchor.
    #[error("bad certificate: {0}")]
    Certificate(#[source] rustls::Error),
    /// It holds no certificate.
    #[error("no certificate in PEM")]
    Empty,
    /// The crypto provider offers none of the protocol versions asked for.
    #[error("TLS protocol versions: {0}")]
    Versions(#[source] rustls::Error),
}

/// A client configuration that trusts exactly the CA certificates in `pem` (Asterisk servers
/// usually present a certificate from a private CA). TLS 1.2 and 1.3, ring as the crypto
/// provider, no client certificate.
pub fn client_config_from_pem(pem: &[u8]) -> Result<Arc<ClientConfig>, PemError> {
    let mut roots = RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(PemError::Pem)?;
        roots.add(cert).map_err(PemError::Certificate)?;
        n += 1;
    }
    if n == 0 {
        return Err(PemError::Empty);
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(PemError::Versions)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`Tls`] checked when the connection is added: the server name parsed once.
#[derive(Clone)]
pub(crate) struct TlsTarget {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsTarget {
    /// Fails if the server name is neither a DNS name nor an IP address.
    pub(crate) fn new(tls: Tls) -> Result<TlsTarget, crate::AddError> {
        let name = ServerName::try_from(tls.server_name.clone()).map_err(|_| {
            crate::AddError::TlsServerName {
                name: tls.server_name,
            }
        })?;
        Ok(TlsTarget {
            config: tls.config,
            name,
        })
    }

    /// A fresh TLS session over a connected socket; the handshake starts with the next write.
    pub(crate) fn start(&self, tcp: TcpStream) -> Result<TlsStream, (TcpStream, rustls::Error)> {
        match ClientConnection::new(Arc::clone(&self.config), self.name.clone()) {
            Ok(conn) => Ok(TlsStream { tcp, conn }),
            Err(e) => Err((tcp, e)),
        }
    }
}

/// A socket and the TLS session over it.
#[derive(Debug)]
pub(crate) struct TlsStream {
    pub(crate) tcp: TcpStream,
    pub(crate) conn: ClientConnection,
}

impl TlsStream {
    /// Writes queued TLS records (an alert, a close_notify) once, without blocking; errors
    /// are ignored: the session is ending anyway.
    pub(crate) fn flush_best_effort(&mut self) {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Sends close_notify if it can go out at once.
    pub(crate) fn close(&mut self) {
        self.conn.send_close_notify();
        self.flush_best_effort();
    }
}

/// How a rustls error is reported to the core.
pub(crate) fn error_kind(e: &rustls::Error) -> io::ErrorKind {
    log::debug!("ami-mio: TLS error: {e}");
    io::ErrorKind::InvalidData
}
