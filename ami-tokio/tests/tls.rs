//! ami-tokio over TLS (feature `tls`): a certificate generated for `localhost`, a small TLS
//! terminator in the test forwarding to the simulator's plain TCP front, and the client
//! trusting exactly that certificate.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_proto::{Action, DisconnectReason};
use ami_tokio::{client_config_from_pem, Status, Tls};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// A self-signed certificate for `localhost`: (certificate PEM, server config).
fn localhost_cert() -> (String, Arc<ServerConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let server = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    (certified.cert.pem(), Arc::new(server))
}

/// Accepts TLS on a loopback port and forwards each connection to `upstream` in clear.
/// Returns the port's address and the number of completed handshakes.
async fn tls_terminator(
    server: Arc<ServerConfig>,
    upstream: SocketAddr,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let acceptor = TlsAcceptor::from(server);
    let count = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, handshakes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_login_and_ping_round_trip_with_a_generated_certificate() {
    let mut front = front();
    let (pem, server) = localhost_cert();
    let (addr, handshakes) = tls_terminator(server, front.local_addr()).await;
    let tls = Tls {
        config: client_config_from_pem(pem.as_bytes()).unwrap(),
        server_name: "localhost".into(),
    };
    let (ami, _events) = ami_tokio::spawn_tls(admin(), addr, tls).unwrap();
    ready(&ami).await;
    let pong = within("Ping", ami.send(Action::new("Ping"))).await.unwrap();
    assert_eq!(pong.message().get_str("Ping"), Some("Pong"));
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
    let st = front.stats();
    assert_eq!((st.sessions_accepted, st.logins), (1, 1));
    within("logoff", ami.logoff()).await;
    assert_eq!(
        ami.status().get(),
        Status::Closed {
            reason: DisconnectReason::Logoff
        }
    );
    front.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_a_certificate_for_another_name() {
    let mut front = front();
    let (pem, server) = localhost_cert();
    let (addr, handshakes) = tls_terminator(server, front.local_addr()).await;
    let tls = Tls {
        config: client_config_from_pem(pem.as_bytes()).unwrap(),
        server_name: "ami.example.com".into(),
    };
    let (ami, _events) = ami_tokio::spawn_tls(admin(), addr, tls).unwrap();
    let down = status_until(&ami, "Disconnected", |s| {
        matches!(s, Status::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            down,
            Status::Disconnected {
                reason: DisconnectReason::ConnectFailed(_),
                ..
            }
        ),
        "{down:?}"
    );
    ami.close();
    within("close", ami.wait_closed()).await;
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
    let st = front.stats();
    assert_eq!((st.sessions_accepted, st.logins), (0, 0), "{st:?}");
    front.shutdown();
}
