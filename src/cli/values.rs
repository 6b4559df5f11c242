//! The value parsers of the flags (listen addresses, durations, CIDRs, the base path, node
//! ids, `key=value` options): each answers clap with a message that says what was expected.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

/// clap value parser for `--kafka-option key=value`.
pub(super) fn parse_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` (loopback) or `:PORT` (every interface).
pub(super) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let (ip, port) = match (s.strip_prefix(':'), s.strip_prefix("localhost:")) {
        (Some(port), _) => ([0, 0, 0, 0], port),
        (_, Some(port)) => ([127, 0, 0, 1], port),
        _ => {
            return s
                .parse()
                .map_err(|_| format!("expected IP:PORT, localhost:PORT or :PORT, got {s:?}"))
        }
    };
    let port: u16 = port.parse().map_err(|_| format!("invalid port in {s:?}"))?;
    Ok(SocketAddr::from((ip, port)))
}

/// A count of at least 1 (`--max-per-user`, `--max-streams-per-user`: none would refuse
/// everything).
pub(super) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a whole number from 1, got {s:?}")),
    }
}

/// Durations such as `500ms`, `15s`, `30d`.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (examples: 500ms, 15s, 30d)"))
}

/// clap value parser for `herald token --ttl`: a token that ends within the second it is
/// printed is of no use.
pub(super) fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = parse_duration(s)?;
    if ttl < Duration::from_secs(1) {
        return Err("a token must live at least 1s".into());
    }
    Ok(ttl)
}

/// clap value parser for `--base-path`: segments of URL path characters that need no
/// escaping (no `.` or `..` segment), normalised to `/seg/…/` (`/` alone: no prefix).
pub(super) fn parse_base_path(s: &str) -> Result<String, String> {
    let mut path = String::from("/");
    for segment in s.trim().split('/').filter(|s| !s.is_empty()) {
        let plain = segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c));
        if !plain || segment == "." || segment == ".." {
            return Err(
                "not a plain path: letters, digits and -._~!$&'()*+,;=:@ between \
                 slashes, no . or .. segment"
                    .into(),
            );
        }
        path.push_str(segment);
        path.push('/');
    }
    Ok(path)
}

/// clap value parser for `--node-id`: 1–64 printable ASCII characters without spaces (it
/// names the node in presence, logs and Redis keys).
pub(super) fn parse_node_id(s: &str) -> Result<String, String> {
    if (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(s.to_owned())
    } else {
        Err("must be 1 to 64 printable ASCII characters without spaces".into())
    }
}

/// clap value parser for `--trusted-proxy`: a CIDR, or a bare address meaning just that host.
pub(super) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("not a CIDR or IP address: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations accept the spec's unit suffixes.
    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert!(parse_duration("soon").is_err());
    }

    /// A base path is normalised to `/seg/…/`; one that no request could reach is refused.
    #[test]
    fn base_paths() {
        for (given, kept) in [("/", "/"), ("", "/"), ("//", "/"), ("herald", "/herald/")] {
            assert_eq!(parse_base_path(given).unwrap(), kept, "{given:?}");
        }
        assert_eq!(parse_base_path("/a/b-c_d~/").unwrap(), "/a/b-c_d~/");
        for bad in ["/x?y", "/a b", "/../x", "/a/./b", "/%41", "/x#y", "/ü"] {
            assert!(parse_base_path(bad).is_err(), "{bad:?}");
        }
    }

    /// A node id is printable ASCII without spaces, 1–64 characters.
    #[test]
    fn node_ids() {
        assert!(parse_node_id("web-1.eu").is_ok());
        for bad in ["", "a b", "a\nb", &"n".repeat(65)] {
            assert!(parse_node_id(bad).is_err(), "{bad:?}");
        }
    }
}
