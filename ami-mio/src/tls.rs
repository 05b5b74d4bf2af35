//! AMI over TLS (feature `tls`): the settings, a helper building a rustls configuration, and
//! the per-connection TLS state.
//!
//! rustls's [`ClientConnection`] is itself sans-IO: it takes ciphertext through `read_tls`,
//! hands ciphertext out through `write_tls`, and never touches a socket on its own. So the
//! handshake and every record go through the same non-blocking reads and writes as plain TCP,
//! inside [`MioDriver::step`](crate::MioDriver::step); nothing blocks and no thread is added.

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use std::io;
use std::sync::Arc;

/// TLS settings of a connection (AMI over TLS is implicit TLS, usually on port 5039) and the
/// PEM helper: `ami-async`'s, the one definition every adapter shares (it needs no async
/// runtime).
pub use ami_async::tls::client_config_from_pem;
pub use ami_async::{Tls, TlsConfigError};

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
