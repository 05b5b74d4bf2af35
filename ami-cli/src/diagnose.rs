//! Finding out, in words, why a server cannot be reached. The adapters report only that a
//! connect failed; a command that failed its first connect asks the OS once more, itself.

use crate::url::ServerUrl;
use crate::words;
use crate::{Failure, EXIT_CONNECT};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long the diagnostic connect may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Resolves the host before anything connects, so that a name that does not exist is said
/// as such. (The adapters resolve again at every connect, to follow DNS changes.)
pub(crate) fn resolve(url: &ServerUrl) -> Result<Vec<SocketAddr>, Failure> {
    let fail = |why: String| {
        Failure::new(
            EXIT_CONNECT,
            format!("host not found: {} ({why})", url.host),
        )
    };
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(fail("no address".into()));
    }
    Ok(addrs)
}

/// Connects to each address once with a timeout; the first error in words (naming the
/// address when the URL gave a name), or `None` if a connect succeeded.
pub(crate) fn connect_failure(url: &ServerUrl, addrs: &[SocketAddr]) -> Option<String> {
    let named = url.host.parse::<std::net::IpAddr>().is_err();
    let mut why = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, PROBE_TIMEOUT) {
            Ok(_) => return None,
            Err(e) => {
                why.get_or_insert_with(|| match named {
                    true => format!("{} ({addr})", words::io_kind(e.kind())),
                    false => words::io_kind(e.kind()),
                });
            }
        }
    }
    why
}
