//! The Origin rule for cookie-authenticated writes (CSRF defence): the request must carry an
//! `Origin` named by `--allowed-origin`, or, when none is configured, one whose scheme, host
//! and port equal the request's: its `Host`, and `https` only when a `--trusted-proxy` says so
//! (`X-Forwarded-Proto`), else `http`. Origins with userinfo are never allowed. Bearer-
//! authenticated requests are exempt (browsers never attach a Bearer token by themselves).

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
    same_host(&origin, request_scheme(state, parts), host)
}

/// The scheme the client used: `https` on a TLS connection, or when a trusted proxy
/// reports it.
fn request_scheme(state: &AppState, parts: &Parts) -> &'static str {
    let https = parts
        .extensions
        .get::<ConnInfo>()
        .is_some_and(|conn| conn.https(&state.config.trusted_proxies, &parts.headers));
    if https {
        "https"
    } else {
        "http"
    }
}

/// `origin` (normalized) names the request's scheme and the host and port of its `Host`.
fn same_host(origin: &str, request_scheme: &str, host: &str) -> bool {
    let Some((scheme, origin_host)) = origin.split_once("://") else {
        return false;
    };
    if scheme != request_scheme {
        return false;
    }
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

    /// Scheme, host and port must all match; default ports may be implicit on either side.
    #[test]
    fn same_host_rules() {
        assert!(same_host("http://127.0.0.1:8080", "http", "127.0.0.1:8080"));
        assert!(same_host("https://example.com", "https", "example.com:443"));
        assert!(same_host("http://example.com", "http", "EXAMPLE.com"));
        assert!(!same_host(
            "http://127.0.0.1:8081",
            "http",
            "127.0.0.1:8080"
        ));
        assert!(!same_host("http://evil.com", "http", "example.com"));
        assert!(!same_host(
            "https://127.0.0.1:8080",
            "http",
            "127.0.0.1:8080"
        ));
        assert!(!same_host("http://example.com", "https", "example.com"));
    }
}
