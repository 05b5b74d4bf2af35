//! A TLS server for the TLS tests (this suite's, ami-mio's and the `ami` command's): a
//! certificate generated for `localhost`, a terminator that forwards each connection in clear
//! to the simulator's TCP front, and the client side trusting exactly that certificate. The
//! terminator runs on a tokio runtime of its own threads, whatever the runtime under test.

use ami_async::Tls;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// A self-signed certificate for `localhost`: (certificate PEM, server config).
pub fn localhost_cert() -> (String, Arc<ServerConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let server = serving(certified.cert.der(), certified.key_pair.serialize_der());
    (certified.cert.pem(), server)
}

/// A server configuration presenting `cert` (DER) with its PKCS#8 `key`.
fn serving(cert: &[u8], key: Vec<u8>) -> Arc<ServerConfig> {
    let cert = CertificateDer::from(cert.to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    let server = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    Arc::new(server)
}

/// A self-signed *CA* certificate for `localhost` that the server presents as its own (what
/// `openssl req -x509` makes by default): (certificate PEM, server config).
pub fn ca_as_server_cert() -> (String, Arc<ServerConfig>) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key_pair).unwrap();
    (cert.pem(), serving(cert.der(), key_pair.serialize_der()))
}

/// Accepts TLS on a loopback port and forwards each connection to an upstream in clear.
pub struct TlsTerminator {
    /// Where it listens.
    pub addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    clean_ends: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl TlsTerminator {
    /// Starts one in front of `upstream`.
    pub fn start(server: Arc<ServerConfig>, upstream: SocketAddr) -> TlsTerminator {
        TlsTerminator::start_with(server, upstream, None)
    }

    /// `recv_buffer`: a fixed receive buffer for the accepted sockets (no autotuning), so
    /// that bytes the terminator has not forwarded yet push back on the client soon.
    pub fn start_with(
        server: Arc<ServerConfig>,
        upstream: SocketAddr,
        recv_buffer: Option<u32>,
    ) -> TlsTerminator {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_io()
            .build()
            .unwrap();
        let listener = runtime.block_on(async {
            let socket = TcpSocket::new_v4().unwrap();
            if let Some(size) = recv_buffer {
                socket.set_recv_buffer_size(size).unwrap();
            }
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            socket.listen(16).unwrap()
        });
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let clean_ends = Arc::new(AtomicUsize::new(0));
        let acceptor = TlsAcceptor::from(server);
        let count = handshakes.clone();
        let clean = clean_ends.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let count = count.clone();
                let clean = clean.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    // An error here is the client's end without close_notify (rustls reads
                    // it as an unexpected EOF); both ends clean is Ok.
                    if tokio::io::copy_bidirectional(&mut tls, &mut plain)
                        .await
                        .is_ok()
                    {
                        clean.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        TlsTerminator {
            addr,
            handshakes,
            clean_ends,
            _runtime: runtime,
        }
    }

    /// Connections whose both ends closed cleanly (the client's with a TLS close_notify).
    pub fn clean_ends(&self) -> usize {
        self.clean_ends.load(Ordering::SeqCst)
    }

    /// Completed handshakes so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

/// The client side: trust exactly `pem`, and expect the server to be `server_name`.
pub fn client_tls(pem: &str, server_name: &str) -> Tls {
    Tls {
        config: ami_async::tls::client_config_from_pem(pem.as_bytes()).unwrap(),
        server_name: server_name.into(),
    }
}
