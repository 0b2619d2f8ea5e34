//! The real client address: one place decides it, and access rules,
//! limit keys, `consistent_hash`, the access log and `X-Forwarded-For`
//! all use it.
//!
//! The connection's peer is the client, unless the peer is one of the
//! listener's `trusted_proxies`: then the client is the right-most
//! `X-Forwarded-For` entry that is not trusted (nginx's realip module with
//! `real_ip_recursive on`), or the left-most when all are. On a
//! `proxy_protocol` listener the peer is already the PROXY header's
//! source (the connection layer put it in the socket digest).

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Whether `ip` is in one of `nets`. An IPv4 address mapped into IPv6
/// (`::ffff:10.0.0.1`, as a dual-stack listener sees IPv4 peers) is
/// compared as the IPv4 address it is.
pub fn is_in(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|net| net.contains(&ip))
}

/// `ip` with an IPv4-mapped IPv6 address turned back into IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client of a request from `peer` with `headers`, and whether `peer`
/// is a trusted proxy (whose forwarding headers lb keeps).
pub fn real_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> (IpAddr, bool) {
    if trusted.is_empty() || !is_in(trusted, peer) {
        return (peer, false);
    }
    let mut client = peer;
    // Right to left over every X-Forwarded-For field line, last line first.
    for line in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = line.to_str() else {
            return (client, true);
        };
        for entry in text.rsplit(',') {
            let Some(ip) = parse_entry(entry) else {
                // Garbage from the first untrusted hop: stop at the last
                // address lb could believe.
                return (client, true);
            };
            client = ip;
            if !is_in(trusted, ip) {
                return (ip, true);
            }
        }
    }
    (client, true)
}

/// One `X-Forwarded-For` entry: an address, with a port or IPv6 brackets
/// as some proxies write them.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|inner| inner.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let headers = xff(&["1.2.3.4"]);
        assert_eq!(
            real_client(ip("203.0.113.9"), &headers, &[]),
            (ip("203.0.113.9"), false)
        );
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            real_client(ip("203.0.113.9"), &headers, &trusted),
            (ip("203.0.113.9"), false)
        );
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_entry_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let headers = xff(&["6.6.6.6, 198.51.100.7, 10.1.1.1"]);
        assert_eq!(
            real_client(ip("10.0.0.2"), &headers, &trusted),
            (ip("198.51.100.7"), true)
        );
        // Over two field lines, the last line holds the nearest hops.
        let headers = xff(&["6.6.6.6", "198.51.100.7, 10.1.1.1"]);
        assert_eq!(
            real_client(ip("127.0.0.1"), &headers, &trusted),
            (ip("198.51.100.7"), true)
        );
    }

    #[test]
    fn when_every_entry_is_trusted_the_left_most_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = xff(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(
            real_client(ip("10.0.0.2"), &headers, &trusted),
            (ip("10.9.9.9"), true)
        );
        assert_eq!(
            real_client(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            (ip("10.0.0.2"), true)
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_believable_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = xff(&["1.2.3.4, <script>, 10.1.1.1"]);
        assert_eq!(
            real_client(ip("10.0.0.2"), &headers, &trusted),
            (ip("10.1.1.1"), true)
        );
    }

    #[test]
    fn entries_with_ports_and_brackets_are_read() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = xff(&["[2001:db8::7]:443"]);
        assert_eq!(
            real_client(ip("10.0.0.2"), &headers, &trusted),
            (ip("2001:db8::7"), true)
        );
        let headers = xff(&["198.51.100.7:5000"]);
        assert_eq!(
            real_client(ip("10.0.0.2"), &headers, &trusted),
            (ip("198.51.100.7"), true)
        );
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_its_ipv4_network() {
        let trusted = nets(&["127.0.0.0/8"]);
        assert!(is_in(&trusted, ip("::ffff:127.0.0.1")));
        assert!(!is_in(&trusted, ip("::1")));
    }
}
