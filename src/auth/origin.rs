//! The Origin rule for cookie-authenticated writes (CSRF defence): the request must carry an
//! `Origin` named by `--allowed-origin`, or, when none is configured, one whose host and port
//! equal those of the request's `Host` (a port left out on either side is the default port of
//! the Origin's scheme, so `https://example.com` matches `Host: example.com`, as behind a
//! TLS-terminating proxy). Origins with userinfo are never allowed. Bearer-authenticated
//! requests are exempt (browsers never attach a Bearer token by themselves).

use http::header::{HOST, ORIGIN};
use http::request::Parts;
use url::Url;

use crate::error::{Error, Result};
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
    same_host(&origin, host)
}

/// `origin` (normalized) names the host and port of `host` (a `Host` header value). The scheme
/// is not compared: one host and port serve one scheme, and behind a TLS-terminating proxy
/// the request Herald sees is plain HTTP for an `https` page.
fn same_host(origin: &str, host: &str) -> bool {
    let Some((scheme, origin_host)) = origin.split_once("://") else {
        return false;
    };
    let default_port = if scheme == "https" { ":443" } else { ":80" };
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

    /// Host and port must match; a default port may be implicit on either side; the scheme
    /// only sets which port is the default.
    #[test]
    fn same_host_rules() {
        assert!(same_host("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_host("https://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_host("https://example.com", "example.com:443"));
        assert!(same_host("https://example.com", "example.com"));
        assert!(same_host("http://example.com", "EXAMPLE.com"));
        assert!(same_host("http://[::1]:8080", "[::1]:8080"));
        assert!(!same_host("http://127.0.0.1:8081", "127.0.0.1:8080"));
        assert!(!same_host("http://evil.com", "example.com"));
        assert!(!same_host("http://example.com", "example.com:443"));
        assert!(!same_host("https://example.com", "example.com:80"));
        assert!(!same_host("http://example.com:8080", "example.com"));
        assert!(!same_host("http://example.com", "example.com.evil.com"));
    }
}
