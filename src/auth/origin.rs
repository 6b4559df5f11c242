//! The Origin rule for cookie-authenticated writes (CSRF defence): the request must carry an
//! `Origin` named by `--allowed-origin`, or, when none is configured, one whose host and port
//! equal those of the request's `Host`. A port left out is the scheme's default: the Origin's
//! on its side, and on the `Host` side `443` for a request known to be HTTPS (here, or by a
//! trusted proxy's `X-Forwarded-Proto`), so an `http://` page of the host (what a network
//! attacker can forge) can't write to the HTTPS site; for any other request the Origin
//! scheme's default, so `https://example.com` matches `Host: example.com`, as behind a
//! TLS-terminating proxy. Origins with userinfo are never allowed. Bearer-authenticated
//! requests are exempt (browsers never attach a Bearer token by themselves).

use http::header::{HOST, ORIGIN};
use http::request::Parts;
use url::Url;

use crate::error::{Error, Result};
use crate::forwarded::ConnInfo;
use crate::state::AppState;

/// Whether `origin` may make credentialed requests here (also used for CORS).
pub fn allowed(state: &AppState, origin: &str, parts: &Parts) -> bool {
    let Some(origin) = normalize_origin(origin) else {
        return false;
    };
    if !state.config.allowed_origins.is_empty() {
        return state.config.allowed_origins.contains(&origin);
    }
    let Some(host) = parts.headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let https = (parts.extensions.get::<ConnInfo>())
        .is_some_and(|conn| conn.https(&state.config.trusted_proxies, &parts.headers));
    same_host(&origin, host, https)
}

/// `origin` (normalized) names the host and port of `host` (a `Host` header value). A port
/// left out is the default of the Origin's scheme on its side; on the `Host` side, `443`
/// when the request is known to be HTTPS (so `http://example.com` does not match an HTTPS
/// request's `Host: example.com`), else the Origin scheme's default too (behind a
/// TLS-terminating proxy Herald does not trust, an `https` page's request arrives as plain
/// HTTP).
fn same_host(origin: &str, host: &str, https: bool) -> bool {
    let Some((scheme, origin_authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme_port = if scheme == "https" { 443 } else { 80 };
    let host = host.trim().to_ascii_lowercase();
    let (Some((origin_name, origin_port)), Some((host_name, host_port))) =
        (split_port(origin_authority), split_port(&host))
    else {
        return false;
    };
    let origin_port = origin_port.unwrap_or(scheme_port);
    let host_port = host_port.unwrap_or(if https { 443 } else { scheme_port });
    origin_name == host_name && origin_port == host_port
}

/// `name[:port]` (`[v6]:port` for IPv6) as the name and the port, if one is given; `None`
/// when the port is not a number.
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    match authority.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => Some((name, Some(port.parse().ok()?))),
        _ => Some((authority, None)),
    }
}

/// `scheme://host[:port]` with the scheme and host lower-cased and a default port dropped.
/// An origin never carries userinfo (`http://user@host`): such a value is not an origin.
pub fn normalize_origin(origin: &str) -> Option<String> {
    if origin.contains('@') {
        return None;
    }
    let url = Url::parse(origin).ok()?;
    let host = url.host_str()?;
    if url.path() != "/" || url.query().is_some() {
        return None;
    }
    Some(match url.port() {
        Some(port) => format!("{}://{}:{}", url.scheme(), host, port),
        None => format!("{}://{}", url.scheme(), host),
    })
}

/// Methods that never change state (RFC 9110 §9.2.1): exempt from the Origin rule.
pub fn is_safe(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// 403 unless the request carries one `Origin`, and an allowed one (a browser sends one; of
/// two, which would count is anyone's guess, so neither does).
pub fn check(state: &AppState, parts: &Parts) -> Result<()> {
    let mut origins = parts.headers.get_all(ORIGIN).iter();
    let origin = match (origins.next(), origins.next()) {
        (Some(_), Some(_)) => {
            return Err(Error::Forbidden(
                "cookie-authenticated writes must carry one Origin header, not several",
            ))
        }
        (origin, _) => origin.and_then(|o| o.to_str().ok()),
    };
    match origin {
        Some(o) if allowed(state, o, parts) => Ok(()),
        Some(_) => Err(Error::Forbidden(
            "this Origin may not make cookie-authenticated writes",
        )),
        None => Err(Error::Forbidden(
            "cookie-authenticated writes must carry an Origin header",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Origins compare after normalization: case and default ports do not matter.
    #[test]
    fn origins_normalize() {
        assert_eq!(
            normalize_origin("HTTPS://Example.com:443").as_deref(),
            Some("https://example.com")
        );
        assert_eq!(
            normalize_origin("http://a:8080").as_deref(),
            Some("http://a:8080")
        );
        assert_eq!(normalize_origin("null"), None);
        assert_eq!(normalize_origin("http://user@a:8080"), None);
        assert_eq!(normalize_origin("http://user:pw@a:8080"), None);
    }

    /// Host and port must match; a default port may be implicit on either side. For a
    /// request not known to be HTTPS, the Origin's scheme only sets which port is the default.
    #[test]
    fn same_host_rules() {
        let unknown = |origin, host| same_host(origin, host, false);
        assert!(unknown("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(unknown("https://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(unknown("https://example.com", "example.com:443"));
        assert!(unknown("https://example.com", "example.com"));
        assert!(unknown("http://example.com", "EXAMPLE.com"));
        assert!(unknown("http://[::1]:8080", "[::1]:8080"));
        assert!(!unknown("http://127.0.0.1:8081", "127.0.0.1:8080"));
        assert!(!unknown("http://evil.com", "example.com"));
        assert!(!unknown("http://example.com", "example.com:443"));
        assert!(!unknown("https://example.com", "example.com:80"));
        assert!(!unknown("http://example.com:8080", "example.com"));
        assert!(!unknown("http://example.com", "example.com.evil.com"));
    }

    /// A request known to be HTTPS has port 443 when its `Host` names none: a plain-HTTP
    /// page of that host (port 80, what a network attacker can forge) may not write to the
    /// HTTPS site. Host and port are what is compared, so an explicit equal port matches
    /// whatever the scheme. One reported as HTTP may come from an `https` page (TLS ended
    /// before the trusted proxy).
    #[test]
    fn an_https_request_without_a_port_is_port_443() {
        let https = |origin, host| same_host(origin, host, true);
        let http = |origin, host| same_host(origin, host, false);
        assert!(https("https://example.com", "example.com"));
        assert!(https("https://a:8443", "a:8443"));
        assert!(!https("http://example.com", "example.com"));
        assert!(!https("http://example.com", "example.com:443"));
        assert!(https("http://a:8443", "a:8443"));
        assert!(https("https://[::1]", "[::1]"));
        assert!(http("https://a:8080", "a:8080"));
        assert!(http("https://example.com", "example.com"));
        assert!(http("http://a:8080", "a:8080"));
        assert!(!http("http://a", "a:x"));
    }
}
