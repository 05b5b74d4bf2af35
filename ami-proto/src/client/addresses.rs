//! In which order, and how far apart, a connect tries the addresses a host name resolved to:
//! RFC 8305 ("Happy Eyeballs" version 2) as the adapters apply it. Pure: the adapters own
//! the sockets and the timers; the core's connect timeout bounds the whole attempt.

use std::collections::VecDeque;
// `core::net`: the address types only; sockets live in `std::net`, which the core never names.
use core::net::SocketAddr;
use std::time::Duration;

/// How long a connect to one address runs alone before the next address starts beside it
/// (RFC 8305's "connection attempt delay"; a failed connect starts the next at once). A
/// first address that drops SYNs silently (an IPv6 route to nowhere) then costs this much,
/// not the whole connect timeout at every attempt.
pub const CONNECT_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// The addresses alternately by family, the first address's family first, each family in
/// the resolver's order (RFC 8305, section 4): a family unreachable as a whole costs one
/// [`CONNECT_ATTEMPT_DELAY`] per attempt, not one per address.
pub fn interleave_families(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first().map(SocketAddr::is_ipv4) else {
        return addrs;
    };
    let (mut same, mut other): (VecDeque<_>, VecDeque<_>) =
        addrs.into_iter().partition(|a| a.is_ipv4() == first);
    let mut out = Vec::with_capacity(same.len() + other.len());
    while !same.is_empty() || !other.is_empty() {
        out.extend(same.pop_front());
        out.extend(other.pop_front());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(addrs: &[&str]) -> Vec<String> {
        let addrs = addrs.iter().filter_map(|a| a.parse().ok()).collect();
        interleave_families(addrs)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn addresses_alternate_by_family_the_first_family_first() {
        assert_eq!(
            order(&[
                "[2001:db8::1]:1",
                "[2001:db8::2]:1",
                "192.0.2.1:1",
                "192.0.2.2:1"
            ]),
            [
                "[2001:db8::1]:1",
                "192.0.2.1:1",
                "[2001:db8::2]:1",
                "192.0.2.2:1"
            ]
        );
        assert_eq!(
            order(&[
                "192.0.2.1:1",
                "[2001:db8::1]:1",
                "192.0.2.2:1",
                "192.0.2.3:1"
            ]),
            [
                "192.0.2.1:1",
                "[2001:db8::1]:1",
                "192.0.2.2:1",
                "192.0.2.3:1"
            ]
        );
        assert!(order(&[]).is_empty());
    }
}
