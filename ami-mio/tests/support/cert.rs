//! A self-signed certificate for `localhost`, for the TLS tests of ami-mio and of the `ami`
//! command (which includes this file by path): one copy of the rcgen and rustls set-up.
#![allow(clippy::unwrap_used)]

use ami_mio::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use ami_mio::rustls::ServerConfig;
use std::sync::Arc;

/// A new certificate for `localhost`: (certificate PEM, server config presenting it).
pub fn localhost_cert() -> (String, Arc<ServerConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let provider = Arc::new(ami_mio::rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    (certified.cert.pem(), Arc::new(server))
}
