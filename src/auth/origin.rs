//! The Origin rule for cookie-authenticated writes (CSRF defence): the request must carry an
//! `Origin` named by `--allowed-origin`, or, when none is configured, one whose host and port
//! equal those of the request's `Host`, and which is `https` when the request is known to be
//! (HTTPS here, or a trusted proxy's `X-Forwarded-Proto`): an `http://` page of the same host
//! (what a network attacker can forge) can't write to an HTTPS site. A port left out on either
//! side is the default port of the Origin's scheme, so `https://example.com` matches
//! `Host: example.com`, as behind a TLS-terminating proxy. Origins with userinfo are never
//! allowed. Bearer-authenticated requests are exempt (browsers never attach a Bearer token by
//! themselves).

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

/// `origin` (normalized) names the host and port of `host` (a `Host` header value), and is
/// `https` when the request is known to be. Only that direction is refused: a request that
/// is not known to be HTTPS may still come from an `https` page (through a TLS-terminating
/// proxy Herald does not trust, or a balancer in front of the one it does).
fn same_host(origin: &str, host: &str, https: bool) -> bool {
    let Some((origin_scheme, origin_host)) = origin.split_once("://") else {
        return false;
    };
    if https && origin_scheme != "https" {
        return false;
    }
    let default_port = if origin_scheme == "https" {
        ":443"
    } else {
        ":80"
    };
    let host = host.trim().to_ascii_lowercase();
    let host = host.strip_suffix(default_port).unwrap_or(&host);
    origin_host == host
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

/// 403 unless the request carries an allowed `Origin`.
pub fn check(state: &AppState, parts: &Parts) -> Result<()> {
    let origin = parts.headers.get(ORIGIN).and_then(|o| o.to_str().ok());
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

    /// A request known to be HTTPS needs an `https` Origin: a plain-HTTP page of the same
    /// host (what a network attacker can forge) may not write to an HTTPS site. One reported
    /// as HTTP may come from an `https` page (TLS ended before the trusted proxy).
    #[test]
    fn an_https_request_needs_an_https_origin() {
        let https = |origin, host| same_host(origin, host, true);
        let http = |origin, host| same_host(origin, host, false);
        assert!(https("https://example.com", "example.com"));
        assert!(https("https://a:8443", "a:8443"));
        assert!(!https("http://example.com", "example.com"));
        assert!(!https("http://a:8443", "a:8443"));
        assert!(http("https://a:8080", "a:8080"));
        assert!(http("https://example.com", "example.com"));
        assert!(http("http://a:8080", "a:8080"));
    }
}
