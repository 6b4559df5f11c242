//! The Origin rule for cookie-authenticated writes (CSRF defence): the request must carry an
//! `Origin` named by `--allowed-origin`, or, when none is configured, one whose host and port
//! equal those of the request's `Host` and whose scheme is the request's own where that is
//! known (HTTPS here, or a trusted proxy's `X-Forwarded-Proto`): an `http://` page of the
//! same host can't write to an HTTPS site. A port left out on either side is the default port
//! of the scheme, so `https://example.com` matches `Host: example.com`, as behind a
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
    let scheme = (parts.extensions.get::<ConnInfo>())
        .and_then(|conn| conn.scheme(&state.config.trusted_proxies, &parts.headers));
    same_host(&origin, host, scheme)
}

/// `origin` (normalized) names the host and port of `host` (a `Host` header value), and the
/// request's `scheme` when it is known. An unknown scheme is not compared: behind a
/// TLS-terminating proxy that is not trusted, the request Herald sees is plain HTTP for an
/// `https` page.
fn same_host(origin: &str, host: &str, scheme: Option<&str>) -> bool {
    let Some((origin_scheme, origin_host)) = origin.split_once("://") else {
        return false;
    };
    if scheme.is_some_and(|scheme| scheme != origin_scheme) {
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

    /// Host and port must match; a default port may be implicit on either side. An unknown
    /// request scheme only sets which port is the default.
    #[test]
    fn same_host_rules() {
        let unknown = |origin, host| same_host(origin, host, None);
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

    /// A known request scheme must be the Origin's: a plain-HTTP page of the same host (what
    /// a network attacker can forge) may not write to an HTTPS site, nor the other way round.
    #[test]
    fn a_known_scheme_must_match() {
        assert!(same_host(
            "https://example.com",
            "example.com",
            Some("https")
        ));
        assert!(same_host("https://a:8443", "a:8443", Some("https")));
        assert!(!same_host(
            "http://example.com",
            "example.com",
            Some("https")
        ));
        assert!(!same_host("http://a:8443", "a:8443", Some("https")));
        assert!(!same_host("https://a:8080", "a:8080", Some("http")));
        assert!(same_host("http://a:8080", "a:8080", Some("http")));
    }
}
