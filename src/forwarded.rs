//! Who the client is and how it reached us: the TCP peer, or — only when the peer is one of
//! `--trusted-proxy` — what `X-Forwarded-For` / `X-Forwarded-Proto` say. Headers from anyone
//! else are ignored, so they cannot spoof an address or the scheme.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// What a handler may know about the connection a request came on (a request extension, set
/// by the server for every request).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The connection is HTTPS (`--tls-cert`).
    pub tls: bool,
}

impl ConnInfo {
    /// Whether the client used https: on this connection, or as a trusted proxy reports it.
    pub fn https(&self, trusted: &[IpNet], headers: &HeaderMap) -> bool {
        self.tls || client(trusted, self.peer, headers).https
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub addr: IpAddr,
    /// The client used https (as reported by a trusted proxy).
    pub https: bool,
    /// The request came through a trusted proxy.
    pub proxied: bool,
}

pub fn is_trusted(trusted: &[IpNet], addr: IpAddr) -> bool {
    let addr = canonical(addr);
    trusted.iter().any(|net| net.contains(&addr))
}

/// An IPv4-mapped IPv6 address compares as the IPv4 address it carries.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The client behind `peer`: walk `X-Forwarded-For` from the right while hops are trusted.
pub fn client(trusted: &[IpNet], peer: SocketAddr, headers: &HeaderMap) -> Client {
    let peer_ip = canonical(peer.ip());
    if !is_trusted(trusted, peer_ip) {
        return Client {
            addr: peer_ip,
            https: false,
            proxied: false,
        };
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut addr = peer_ip;
    for hop in hops.iter().rev() {
        // A hop that names no address (`unknown`, garbage) ends the walk: what lies left of
        // it was written by someone no trusted proxy vouches for. The client is then the
        // last trusted hop.
        let Some(hop) = parse_hop(hop) else { break };
        addr = hop;
        if !is_trusted(trusted, addr) {
            break;
        }
    }
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    Client {
        addr,
        https,
        proxied: true,
    }
}

/// One `X-Forwarded-For` entry: an address, with a port or not (`203.0.113.5:4000`,
/// `[2001:db8::1]:443`, as some proxies write them).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = hop
        .parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()?;
    Some(canonical(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str, proto: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h.insert("x-forwarded-proto", proto.parse().unwrap());
        h
    }

    fn trusted() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    /// From an untrusted peer, forwarded headers are ignored.
    #[test]
    fn untrusted_peer_is_the_client() {
        let c = client(
            &trusted(),
            "203.0.113.9:5000".parse().unwrap(),
            &headers("1.2.3.4", "https"),
        );
        assert_eq!(
            c,
            Client {
                addr: "203.0.113.9".parse().unwrap(),
                https: false,
                proxied: false
            }
        );
    }

    /// From a trusted peer, the rightmost untrusted hop is the client.
    #[test]
    fn trusted_chain_yields_the_first_untrusted_hop() {
        let c = client(
            &trusted(),
            "10.0.0.2:5000".parse().unwrap(),
            &headers("6.6.6.6, 1.2.3.4, 10.0.0.7", "https"),
        );
        assert_eq!(
            c,
            Client {
                addr: "1.2.3.4".parse().unwrap(),
                https: true,
                proxied: true
            }
        );
    }

    /// Entries with a port count as their address; an entry that names no address ends the
    /// walk at the last trusted hop, so nothing written left of it is believed.
    #[test]
    fn ports_are_read_and_garbage_ends_the_walk() {
        let peer = "10.0.0.2:5000".parse().unwrap();
        let addr = |xff: &str| {
            client(&trusted(), peer, &headers(xff, "http"))
                .addr
                .to_string()
        };
        assert_eq!(addr("6.6.6.6, 203.0.113.5:4000"), "203.0.113.5");
        assert_eq!(addr("6.6.6.6, [2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(addr("6.6.6.6, unknown"), "10.0.0.2");
        assert_eq!(addr("6.6.6.6, unknown, 10.0.0.7"), "10.0.0.7");
    }

    /// IPv4-mapped IPv6 peers match IPv4 CIDRs.
    #[test]
    fn mapped_addresses_match() {
        assert!(is_trusted(&trusted(), "::ffff:10.1.2.3".parse().unwrap()));
    }
}
