//! Finding out, in words, why a server cannot be reached before anything connects. Why a
//! connect failed comes from the adapter, in `DisconnectReason::ConnectFailed`'s cause.

use crate::url::ServerUrl;
use crate::{Failure, EXIT_CONNECT};
use std::net::ToSocketAddrs;

/// Resolves the host before anything connects, so that a name that does not exist is said
/// as such. (The adapters resolve again before connects, to follow DNS changes: the async
/// ones at every connect, `ami-mio` once its last answer is 30 s old.)
pub(crate) fn resolve(url: &ServerUrl) -> Result<(), Failure> {
    let fail = |why: String| {
        Failure::new(
            EXIT_CONNECT,
            format!("host not found: {} ({why})", url.host),
        )
    };
    let mut addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?;
    match addrs.next() {
        Some(_) => Ok(()),
        None => Err(fail("no address".into())),
    }
}
