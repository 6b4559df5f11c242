//! Which push endpoints Herald may call: `https://` on a host allowed by
//! `--push-endpoint-allow` (host suffixes on label boundaries, or exact IP addresses), and,
//! when the host is a name under one of the default push services, only at public addresses
//! once resolved — so a subscription can never make Herald call into the network it runs in
//! (SSRF). A name the operator allowed (a private push service) is called where it resolves.
//! Redirects are never followed (see `push::Pusher`).

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

/// Whether `entry` can be on the allow-list: an IP address, or a host name (a suffix that
/// also matches its subdomains), with a trailing dot or not. Anything else (`*.example.org`,
/// `.example.org`, a URL, a port, a CIDR) would match no endpoint at all.
pub fn is_allow_entry(entry: &str) -> bool {
    let host = entry.strip_suffix('.').unwrap_or(entry);
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.parse::<IpAddr>().is_ok() || (host.len() <= 253 && host.split('.').all(label))
}

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
            Some(url::Host::Domain(name)) => self.allows_name(name),
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

    /// Whether host name `name` is an entry or under one (on a label boundary).
    fn allows_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.entries.iter().any(|e| {
            name == e
                || name
                    .strip_suffix(e.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }

    /// The entries the operator added to the default push services: the names under them
    /// are the operator's (a private push service) and may resolve to any address.
    pub fn added(&self) -> Allow {
        let added = self
            .entries
            .iter()
            .filter(|e| !DEFAULT_ALLOW.contains(&e.as_str()));
        Allow {
            entries: added.cloned().collect(),
        }
    }

    /// An IP address in the URL is allowed only when named exactly.
    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.entries
            .iter()
            .any(|e| e.trim_matches(['[', ']']).parse::<IpAddr>() == Ok(ip))
    }
}

/// One spelling per endpoint, so that a browser's endpoint is one subscription (and has one
/// owner) however it was written: the URL as parsed (`0x7f000001` and `127.1` are
/// `127.0.0.1`, the host lower case, no default port), a name without its trailing dot, no
/// `#fragment` (never sent). An endpoint that is no URL stays as it is.
pub fn canonical(endpoint: &str) -> String {
    let Ok(mut url) = Url::parse(endpoint) else {
        return endpoint.to_owned();
    };
    url.set_fragment(None);
    if let Some(url::Host::Domain(name)) = url.host() {
        if let Some(bare) = name.strip_suffix('.').map(str::to_owned) {
            let _ = url.set_host(Some(&bare));
        }
    }
    url.into()
}

/// Whether an address may be called after resolving a name: not loopback, private,
/// link-local, shared (CGNAT), reserved (IETF protocol assignments, benchmarking, the old class
/// E), unique-local, multicast, unspecified or documentation space. An IPv6 address that
/// carries an IPv4 one (mapped, compatible, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4
/// `2002::/16`) is judged by that IPv4 address; Teredo `2001::/32` (an obfuscated one) is
/// never public.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a, b, c) == (192, 0, 0)
                || (a == 198 && (b & 0xfe) == 18))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return is_public(IpAddr::V4(v4));
            }
            let [first, second, ..] = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first, second) == (0x2001, 0x0db8)
                || (first, second) == (0x2001, 0))
        }
    }
}

/// The IPv4 address an IPv6 one stands for, when it is built from one.
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let low = |hi: u16, lo: u16| std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // Mapped (::ffff:a.b.c.d) and the deprecated compatible form (::a.b.c.d, not ::1 / ::).
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(low(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if !v6.is_loopback() && !v6.is_unspecified() => {
            Some(low(hi, lo))
        }
        // NAT64: the well-known prefix and the local-use one (RFC 6052, RFC 8215).
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 1, _, _, _, hi, lo] => {
            Some(low(hi, lo))
        }
        // 6to4 (RFC 3056): the IPv4 address follows the prefix.
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

/// The DNS resolver of the push client: the system's, keeping public addresses only (a name
/// that resolves to none of them is an error, so nothing is called), except for the names
/// under `trusted`: the entries the operator added to the allow-list ([`Allow::added`]).
pub struct PublicOnly {
    pub trusted: Allow,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let any = self.trusted.allows_name(&host);
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| any || is_public(a.ip())).collect();
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

    /// The names the operator added are trusted to resolve anywhere; the default push
    /// services' are not, even when the operator lists them too.
    #[test]
    fn added_entries() {
        let allow = Allow::new(vec![
            "fcm.googleapis.com".into(),
            "Push.Corp.".into(),
            "127.0.0.1".into(),
        ]);
        let added = allow.added();
        assert!(added.allows_name("push.corp") && added.allows_name("eu.push.corp."));
        assert!(!added.allows_name("fcm.googleapis.com"));
        assert!(!added.allows_name("corp") && !added.allows_name("xpush.corp"));
        assert!(Allow::new(DEFAULT_ALLOW.map(str::to_owned).to_vec())
            .added()
            .entries
            .is_empty());
    }

    /// Suffixes match on label boundaries; IPs only exactly; only https.
    #[test]
    fn allow_list() {
        for entry in DEFAULT_ALLOW
            .iter()
            .chain(&["127.0.0.1", "::1", "example.org.", "a_b.x"])
        {
            assert!(is_allow_entry(entry), "{entry}");
        }
        for entry in [
            "",
            ".example.org",
            "*.example.org",
            "https://example.org",
            "example.org:443",
            "10.0.0.0/8",
            "exa mple.org",
            "-a.org",
            "a..org",
        ] {
            assert!(!is_allow_entry(entry), "{entry}");
        }
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
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.254",
            "240.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::169.254.169.254",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "142.250.74.78",
            "198.20.0.1",
            "2a00:1450:4001:80b::200a",
            "64:ff9b::8efa:4a4e",
            "2002:8efa:4a4e::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn one_spelling_per_endpoint() {
        for spelling in [
            "https://127.0.0.1:8443/push/x",
            "https://0x7f000001:8443/push/x",
            "https://2130706433:8443/push/x",
            "https://127.1:8443/push/x",
            "https://127.0.0.1.:8443/push/x",
            "https://127.0.0.1:8443/push/x#frag",
        ] {
            assert_eq!(
                canonical(spelling),
                "https://127.0.0.1:8443/push/x",
                "{spelling}"
            );
        }
        for spelling in [
            "https://FCM.googleapis.com:443/fcm/send/a",
            "https://fcm.googleapis.com./fcm/send/a",
        ] {
            assert_eq!(canonical(spelling), "https://fcm.googleapis.com/fcm/send/a");
        }
        assert_eq!(canonical("not a url"), "not a url");
    }

    /// Property tests (issue 13): endpoints of any text, addresses of any value.
    mod props {
        use std::net::{Ipv4Addr, Ipv6Addr};

        use proptest::prelude::*;

        use super::*;
        use crate::model::props::any_text;

        fn allow() -> Allow {
            Allow::new(vec![
                "fcm.googleapis.com".into(),
                " Push.Apple.com. ".into(),
                "127.0.0.1".into(),
                "[::1]".into(),
                "".into(),
            ])
        }

        /// Whether `host` is an allowed name (an entry, or below one on a label boundary).
        fn allowed_name(host: &str) -> bool {
            let host = host.trim_end_matches('.');
            ["fcm.googleapis.com", "push.apple.com"]
                .iter()
                .any(|e| host == *e || host.ends_with(&format!(".{e}")))
        }

        fn endpoint_like() -> impl Strategy<Value = String> {
            let scheme = "(https|http|HTTPS|ftp|https:|)";
            let userinfo = "([a-z]{1,4}@|[a-z]:[a-z]@|:@|)";
            let host = prop_oneof![
                "(fcm\\.googleapis\\.com|FCM\\.GoogleAPIs\\.com\\.|evilfcm\\.googleapis\\.com)",
                "([a-z0-9-]{1,5}\\.){0,2}(fcm\\.googleapis\\.com|push\\.apple\\.com)\\.?",
                "(fcm\\.googleapis\\.com\\.evil\\.example|fcm\\.googleapis\\.com%2eevil|push\\.apple\\.com@evil)",
                "(127\\.0\\.0\\.1|127\\.0\\.0\\.2|0x7f\\.1|2130706433|\\[::1\\]|\\[::ffff:127\\.0\\.0\\.1\\]|localhost)",
                "[a-z0-9.%\\[\\]:-]{0,12}",
            ];
            let port = "(:[0-9]{1,5}|:)?";
            let path = "(/[a-zA-Z0-9%./?#@-]{0,12})?";
            (scheme, userinfo, host, port, path).prop_map(|(scheme, userinfo, host, port, path)| {
                format!("{scheme}://{userinfo}{host}{port}{path}")
            })
        }

        fn any_ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
                any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
                any::<u32>().prop_map(|n| IpAddr::V6(Ipv4Addr::from(n).to_ipv6_mapped())),
            ]
        }

        /// An address in a network Herald must never call: `(network, prefix length)` and any
        /// host bits.
        fn non_public_ip() -> impl Strategy<Value = IpAddr> {
            const V4: [(u32, u32); 15] = [
                (0x0000_0000, 8),  // "this network"
                (0xc000_0000, 24), // IETF protocol assignments
                (0xc612_0000, 15), // benchmarking
                (0xf000_0000, 4),  // reserved (old class E)
                (0x0a00_0000, 8),  // private
                (0x6440_0000, 10), // shared (CGNAT)
                (0x7f00_0000, 8),  // loopback
                (0xa9fe_0000, 16), // link-local
                (0xac10_0000, 12), // private
                (0xc000_0200, 24), // documentation
                (0xc0a8_0000, 16), // private
                (0xc633_6400, 24), // documentation
                (0xcb00_7100, 24), // documentation
                (0xe000_0000, 4),  // multicast
                (0xffff_ffff, 32), // broadcast
            ];
            const V6: [(u128, u32); 7] = [
                (0, 128),                // unspecified
                (0x2001_0000 << 96, 32), // Teredo
                (1, 128),                // loopback
                (0x2001_0db8 << 96, 32), // documentation
                (0xfc00 << 112, 7),      // unique-local
                (0xfe80 << 112, 10),     // link-local
                (0xff00 << 112, 8),      // multicast
            ];
            prop_oneof![
                (prop::sample::select(V4.to_vec()), any::<u32>()).prop_map(|((net, len), bits)| {
                    let host = bits.checked_shr(len).unwrap_or(0);
                    IpAddr::V4(Ipv4Addr::from(net | host))
                }),
                (prop::sample::select(V6.to_vec()), any::<u128>()).prop_map(
                    |((net, len), bits)| {
                        let host = bits.checked_shr(len).unwrap_or(0);
                        IpAddr::V6(Ipv6Addr::from(net | host))
                    }
                ),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any endpoint: a 400 naming `endpoint`, or an https URL without credentials on
            /// an allowed name (label boundary) or an exactly listed address; never a panic.
            #[test]
            fn endpoints_are_checked(endpoint in prop_oneof![
                any_text(),
                endpoint_like(),
                "https://fcm\\.googleapis\\.com/x{2030,2060}",
            ]) {
                match allow().check(&endpoint) {
                    Ok(url) => {
                        prop_assert!(endpoint.len() <= MAX_ENDPOINT_BYTES);
                        prop_assert_eq!(url.scheme(), "https");
                        prop_assert!(url.username().is_empty() && url.password().is_none());
                        let ok = match url.host() {
                            Some(url::Host::Domain(name)) => allowed_name(name),
                            Some(url::Host::Ipv4(ip)) => ip == Ipv4Addr::LOCALHOST,
                            Some(url::Host::Ipv6(ip)) => ip == Ipv6Addr::LOCALHOST,
                            None => false,
                        };
                        prop_assert!(ok, "{:?} allowed as {}", endpoint, url);
                    }
                    Err(e) => prop_assert!(
                        matches!(&e, Error::InvalidRequest(m) if m.starts_with("endpoint ")),
                        "{e:?}"
                    ),
                }
            }

            /// A push service's endpoints are allowed below its name, and a name that only
            /// ends with the same letters is not.
            #[test]
            fn allowed_on_label_boundaries_only(
                sub in "([a-z0-9]{1,6}\\.){0,2}",
                glued in "[a-z0-9]{1,6}",
                path in "/[A-Za-z0-9_-]{1,20}",
            ) {
                let ok = format!("https://{sub}fcm.googleapis.com{path}");
                prop_assert!(allow().check(&ok).is_ok(), "{}", ok);
                let glued = format!("https://{sub}{glued}fcm.googleapis.com{path}");
                prop_assert!(allow().check(&glued).is_err(), "{}", glued);
            }

            /// Any address: never a panic; an IPv4-mapped IPv6 address is judged as its IPv4
            /// address; nothing in a loopback, private, shared, reserved, link-local,
            /// unique-local, multicast, unspecified or documentation network is public, nor
            /// such an IPv4 address carried in IPv6 (mapped, NAT64, 6to4).
            #[test]
            fn public_addresses(ip in any_ip(), hidden in non_public_ip()) {
                let public = is_public(ip);
                if let IpAddr::V6(v6) = ip {
                    if let Some(v4) = v6.to_ipv4_mapped() {
                        prop_assert_eq!(public, is_public(IpAddr::V4(v4)));
                    }
                }
                prop_assert!(!is_public(hidden), "{} is public", hidden);
                if let IpAddr::V4(v4) = hidden {
                    let bits = u128::from(u32::from(v4));
                    for carrier in [
                        v4.to_ipv6_mapped(),
                        Ipv6Addr::from((0x64_ff9b_u128 << 96) | bits),
                        Ipv6Addr::from((0x2002_u128 << 112) | (bits << 80) | 1),
                    ] {
                        prop_assert!(!is_public(IpAddr::V6(carrier)), "{} in {}", hidden, carrier);
                    }
                }
            }
        }
    }
}
