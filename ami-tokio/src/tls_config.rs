//! Building a rustls client configuration from a PEM bundle of trusted CA certificates.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Why [`client_config_from_pem`] could not build a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The text is not PEM.
    #[error("bad PEM: {0}")]
    Pem(#[source] rustls_pki_types::pem::Error),
    /// A certificate in it cannot be a trust anchor.
    #[error("bad certificate: {0}")]
    Certificate(#[source] tokio_rustls::rustls::Error),
    /// It holds no certificate.
    #[error("no certificate in PEM")]
    Empty,
    /// The crypto provider offers none of the protocol versions asked for.
    #[error("TLS protocol versions: {0}")]
    Versions(#[source] tokio_rustls::rustls::Error),
}

/// A client configuration that trusts exactly the CA certificates in `pem` (Asterisk servers
/// usually present a certificate from a private CA).
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
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(PemError::Versions)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
