//! Opening a transport: resolve (off the driver, on `blocking`'s thread pool), connect.

use async_io::Async;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};

/// Where the server is: a socket address, or a host name resolved at every connect (on a
/// thread pool, so a slow DNS answer never blocks the driver), so a DNS change is picked up
/// on reconnect.
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

/// The addresses to try, in the resolver's order. An IP literal needs no resolver.
async fn resolve(target: &Target) -> io::Result<Vec<SocketAddr>> {
    match target {
        Target::Addr(a) => Ok(vec![*a]),
        Target::Host(h, p) => {
            if let Ok(ip) = h.trim_matches(['[', ']']).parse::<IpAddr>() {
                return Ok(vec![SocketAddr::new(ip, *p)]);
            }
            let (host, port) = (h.clone(), *p);
            blocking::unblock(move || {
                (host.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect)
            })
            .await
        }
    }
}

/// Resolves and connects to the first address that accepts.
pub(crate) async fn open(target: &Target) -> io::Result<Async<TcpStream>> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{target}: no address to connect to"),
    );
    for addr in resolve(target).await? {
        match Async::<TcpStream>::connect(addr).await {
            Ok(stream) => {
                // AMI is request/response with small messages: Nagle only adds latency.
                stream.get_ref().set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => {
                log::debug!("AMI {target}: connect to {addr} failed: {e}");
                last = e;
            }
        }
    }
    Err(last)
}
