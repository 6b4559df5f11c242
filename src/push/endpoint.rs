//! Which push endpoints Herald may call: `https://` on a host allowed by
//! `--push-endpoint-allow` (host suffixes on label boundaries, or exact IP addresses), and,
//! when the host is a name, only at public addresses once resolved — so a subscription can
//! never make Herald call into the network it runs in (SSRF). Redirects are never followed
//! (see `push::Pusher`).

use std::net::{IpAddr, SocketAddr};

use url::Url;

use crate::error::{Error, Result};

/// The push services of Chrome, Firefox, Safari and Edge.
pub const DEFAULT_ALLOW: [&str; 4] = [
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "push.apple.com",
    "notify.windows.com",
];

/// Longest endpoint URL accepted.
const MAX_ENDPOINT_BYTES: usize = 2048;

/// The allow-list.
#[derive(Debug, Clone)]
pub struct Allow {
    entries: Vec<String>,
}

impl Allow {
    pub fn new(entries: Vec<String>) -> Self {
        Allow {
            entries: entries
                .into_iter()
                .map(|e| e.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
        }
    }

    /// Check a subscription's endpoint (400 naming `endpoint` otherwise); its URL.
    pub fn check(&self, endpoint: &str) -> Result<Url> {
        let refused = |why: &str| Error::invalid(format!("endpoint {why}"));
        if endpoint.len() > MAX_ENDPOINT_BYTES {
            return Err(refused("is too long"));
        }
        let url = Url::parse(endpoint).map_err(|_| refused("must be a URL"))?;
        if url.scheme() != "https" {
            return Err(refused("must be an https:// URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused("may not carry credentials"));
        }
        let allowed = match url.host() {
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.');
                self.entries.iter().any(|e| {
                    name == e
                        || name
                            .strip_suffix(e.as_str())
                            .is_some_and(|rest| rest.ends_with('.'))
                })
            }
            Some(url::Host::Ipv4(ip)) => self.allows_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.allows_ip(IpAddr::V6(ip)),
            None => false,
        };
        if !allowed {
            return Err(refused(
                "is not on a push service this server allows (--push-endpoint-allow)",
            ));
        }
        Ok(url)
    }

    /// An IP address in the URL is allowed only when named exactly.
    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.entries
            .iter()
            .any(|e| e.trim_matches(['[', ']']).parse::<IpAddr>() == Ok(ip))
    }
}

/// Whether an address may be called after resolving a name: not loopback, private,
/// link-local, shared (CGNAT), unique-local, multicast, unspecified or documentation space.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The DNS resolver of the push client: the system's, keeping public addresses only (a name
/// that resolves to none of them is an error, so nothing is called).
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Suffixes match on label boundaries; IPs only exactly; only https.
    #[test]
    fn allow_list() {
        let allow = Allow::new(vec!["fcm.googleapis.com".into(), "127.0.0.1".into()]);
        for ok in [
            "https://fcm.googleapis.com/fcm/send/x",
            "https://a.fcm.googleapis.com/x",
            "https://127.0.0.1:8443/push/a",
        ] {
            assert!(allow.check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://fcm.googleapis.com/x",
            "https://evilfcm.googleapis.com/x",
            "https://fcm.googleapis.com.evil.example/x",
            "https://127.0.0.2/x",
            "https://user:pw@fcm.googleapis.com/x",
            "https://localhost/x",
            "not a url",
        ] {
            assert!(allow.check(bad).is_err(), "{bad}");
        }
    }

    /// Private, loopback and link-local addresses are not public; others are.
    #[test]
    fn public_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["142.250.74.78", "2a00:1450:4001:80b::200a"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
