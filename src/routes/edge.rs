//! Edge duties: `GET /auth` for nginx `auth_request`, and the `/api/` reverse proxy to
//! `--upstream`. Only authenticated requests are forwarded, with `X-Herald-User` /
//! `X-Herald-Session` set by us (incoming copies stripped) and the session cookie removed.
//! Bodies stream both ways (never buffered); hop-by-hop headers are dropped (RFC 9110 §7.6.1).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use url::Url;

use super::body::{empty, BoxError, Request, Response};
use crate::auth::origin;
use crate::auth::session::{self, Caller, Via, COOKIE_NAME};
use crate::error::{Error, Result};
use crate::forwarded;
use crate::server::ConnInfo;
use crate::state::AppState;

pub const USER_HEADER: &str = "x-herald-user";
pub const SESSION_HEADER: &str = "x-herald-session";

/// The `/api/` target: base URL and a pooled HTTP/1 client (connections are reused).
#[derive(Clone)]
pub struct Upstream {
    base: Url,
    client: Client<HttpConnector, Incoming>,
}

impl Upstream {
    pub fn new(base: Url) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build(connector);
        Upstream { base, client }
    }

    /// `base` + `rest` (the path after `/api/`, still percent-encoded) + the query. `rest`
    /// must stay below the base: see [`check_confined`].
    fn target(&self, rest: &str, query: Option<&str>) -> Result<Uri> {
        check_confined(rest)?;
        let mut url = self.base.as_str().trim_end_matches('/').to_owned();
        url.push('/');
        url.push_str(rest);
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        url.parse()
            .map_err(|_| Error::invalid("the path cannot be forwarded"))
    }
}

/// The rest of an `/api/` path is forwarded as received (still percent-encoded), so it must
/// not be able to leave the `--upstream` base once the upstream normalizes it: a dot-segment
/// (`.`, `..`, also percent-encoded in any case such as `%2e%2E` or `.%2e`), an encoded slash
/// (`%2f`) or a backslash (raw or `%5c`, which some servers treat as `/`) anywhere in it, or a
/// dot-segment followed by `;parameters` (`..;/`, which some servers read as `..`), is
/// refused with 400 rather than normalized (RFC 3986 §5.2.4), so what the upstream sees is
/// always exactly what the client sent.
fn check_confined(rest: &str) -> Result<()> {
    let refused = || {
        Error::invalid(
            "the /api/ path may not contain dot-segments, encoded slashes or backslashes",
        )
    };
    let lower = rest.to_ascii_lowercase();
    if lower.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return Err(refused());
    }
    for segment in rest.split('/') {
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        // Some servers (Tomcat) drop `;parameters` before normalizing: `..;x` climbs too.
        let name = decoded.split(|b| *b == b';').next().unwrap_or_default();
        if name == b"." || name == b".." {
            return Err(refused());
        }
    }
    Ok(())
}

/// `X-Herald-User` (the user id as UTF-8 bytes; ids never start or end with whitespace, so
/// the value arrives unchanged) and, when there is a session, `X-Herald-Session` (its public
/// id, never the cookie).
fn identity_headers(headers: &mut HeaderMap, caller: &Caller) -> Result<()> {
    let value = |s: &str| {
        HeaderValue::from_bytes(s.as_bytes())
            .map_err(|_| Error::Unauthorized("identity is not a valid header value"))
    };
    headers.insert(USER_HEADER, value(&caller.user)?);
    if let Some(session) = &caller.session {
        headers.insert(SESSION_HEADER, value(session)?);
    }
    Ok(())
}

/// `GET /auth`: 204 with the identity headers, or 401. When the proxy names the original
/// method (`X-Original-Method`), a cookie-authenticated write must pass the Origin rule (403).
pub async fn auth(state: AppState, req: Request) -> Result<Response> {
    let parts = req.into_parts().0;
    let caller = session::user(&state, &parts).await?;
    let original = parts
        .headers
        .get("x-original-method")
        .and_then(|m| m.to_str().ok());
    if caller.via == Via::Cookie && original.is_some_and(|m| !is_safe(m)) {
        origin::check(&state, &parts)?;
    }
    let mut response = empty(StatusCode::NO_CONTENT);
    identity_headers(response.headers_mut(), &caller)?;
    Ok(response)
}

/// Methods that never change state (RFC 9110 §9.2.1): exempt from the Origin rule.
fn is_safe(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// Hop-by-hop headers, plus those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    ] {
        headers.remove(name);
    }
}

/// The `Cookie` header without `herald_session` (other cookies pass through).
fn strip_session_cookie(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty() && pair.split('=').next().map(str::trim) != Some(COOKIE_NAME)
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            headers.insert(header::COOKIE, value);
        }
    }
}

/// Forward `/api/<rest>` to the upstream once the caller is authenticated.
pub async fn proxy(state: AppState, req: Request, rest: &str) -> Result<Response> {
    let upstream = state
        .upstream
        .as_ref()
        .ok_or(Error::NotFound("no upstream is configured"))?;
    let (mut parts, body) = req.into_parts();
    let caller = session::user(&state, &parts).await?;
    if caller.via == Via::Cookie && !is_safe(parts.method.as_str()) {
        origin::check(&state, &parts)?;
    }
    let target = upstream.target(rest, parts.uri.query())?;
    let conn = parts.extensions.get::<ConnInfo>().cloned();
    let headers = &mut parts.headers;
    let host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    strip_session_cookie(headers);
    headers.remove(header::HOST);
    headers.remove(USER_HEADER);
    headers.remove(SESSION_HEADER);
    if caller.via == Via::Bearer {
        // The backend trusts our identity headers, not the caller's token.
        headers.remove(header::AUTHORIZATION);
    }
    identity_headers(headers, &caller)?;
    if let Some(conn) = conn {
        let client = forwarded::client(&state.config.trusted_proxies, conn.peer, headers);
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) if client.proxied => format!("{prior}, {}", conn.peer.ip()),
            _ => client.addr.to_string(),
        };
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_str(&chain).expect("addresses are ASCII"),
        );
        let proto = if client.https { "https" } else { "http" };
        headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    }
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
    parts.uri = target;
    parts.version = http::Version::HTTP_11;
    let request = http::Request::from_parts(parts, body);
    let response = tokio::time::timeout(
        state.config.upstream_timeout,
        upstream.client.request(request),
    )
    .await
    .map_err(|_| Error::GatewayTimeout)?
    .map_err(|e| Error::BadGateway(Box::new(e)))?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
    Ok(http::Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths that could climb above the upstream base are refused; ordinary ones pass.
    #[test]
    fn api_paths_stay_below_the_base() {
        for bad in [
            "..",
            "../admin",
            "a/../../admin",
            ".",
            "./x",
            "%2e%2e/admin",
            "%2E%2e",
            ".%2e/x",
            "%2e./x",
            "x/%2E",
            "..%2fadmin",
            "a%2Fb",
            "x\\..\\admin",
            "x%5c..",
            "x%5C",
            "..;/admin",
            "..;x/admin",
            ".%2e;/x",
            ".;",
        ] {
            assert!(check_confined(bad).is_err(), "{bad}");
        }
        for good in [
            "",
            "echo",
            "echo/a%20b",
            "a/b/",
            "..a/b",
            "a;b/..c;d",
            "a../b",
            "...",
            "%2e%2e%2e",
            "v1.2/x",
        ] {
            assert!(check_confined(good).is_ok(), "{good}");
        }
    }
}
