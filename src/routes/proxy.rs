//! The `/api/` reverse proxy to `--upstream`. Only authenticated requests are forwarded, with
//! `X-Herald-User` / `X-Herald-Session` set by us (every incoming `X-Herald-*` stripped) and
//! the session cookie removed (and the upstream's `Set-Cookie`s of it dropped); `X-Request-Id`
//! is the request's id. Bodies stream both ways (never buffered); hop-by-hop headers are
//! dropped (RFC 9110 §7.6.1). The target and the client are `crate::upstream`'s.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;

use super::auth_request::identity_headers;
use super::body::{Request, Response};
use crate::auth::origin;
use crate::auth::session::{self, Via};
use crate::error::{Error, Result};
use crate::forwarded;
use crate::forwarded::ConnInfo;
use crate::request_id::{self, RequestId};
use crate::state::AppState;
use crate::upstream::Waits;

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

/// Forwarding headers Herald does not set itself, dropped when the client is not behind a
/// `--trusted-proxy` (`X-Forwarded-For`/`-Proto`/`-Host` are set anew): among them the
/// client's address as proxies and CDNs name it.
const UNTRUSTED_FORWARDING: [&str; 6] = [
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

/// Original-path overrides some frameworks honour, which would route a request outside the
/// path it was allowed under: never forwarded (a proxy in front sends the path itself).
const PATH_OVERRIDES: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// Incoming `X-Herald-*` headers (Herald's namespace: the identity it sets, and whatever a
/// backend may take from it later), also spelt with `_`: CGI-style backends (WSGI, PHP, Rack)
/// read `X_Herald_User` as `X-Herald-User`.
fn strip_herald_headers(headers: &mut HeaderMap) {
    remove_where(headers, |name| {
        name.replace('_', "-").starts_with("x-herald-")
    });
}

/// Remove every header whose (lower-case) name `matches`.
fn remove_where(headers: &mut HeaderMap, matches: impl Fn(&str) -> bool) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| matches(name.as_str()))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// The upstream's `Set-Cookie`s of the session cookie: never passed on, so a backend cannot
/// replace or clear the browser's Herald session (its cookie is Herald's alone). The name is
/// the one the browser sends back (RFC 6265bis 5.6): a cookie without a name (`=a=b`, or no
/// `=` at all) goes back as its bare value, so `=herald_session=x` returns as
/// `herald_session=x`.
fn strip_session_set_cookie(headers: &mut HeaderMap) {
    let names_session = |value: &HeaderValue| {
        let pair = value.as_bytes().split(|&b| b == b';').next();
        let pair = pair.unwrap_or_default();
        let head = |text: &[u8]| {
            let name = text.split(|&b| b == b'=').next().unwrap_or_default();
            name.trim_ascii() == session::COOKIE_NAME.as_bytes()
        };
        match pair.iter().position(|&b| b == b'=') {
            // nameless: sent back as its value alone
            Some(i) if pair[..i].trim_ascii().is_empty() => head(&pair[i + 1..]),
            _ => head(pair),
        }
    };
    let set: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if set.iter().any(names_session) {
        headers.remove(header::SET_COOKIE);
        for value in set.into_iter().filter(|value| !names_session(value)) {
            headers.append(header::SET_COOKIE, value);
        }
    }
}

/// The upstream's `Access-Control-*` headers: CORS through the edge is Herald's to answer
/// (`--allowed-origin`, added on the way out). A backend that reflects `Origin` with
/// `Access-Control-Allow-Credentials: true` would otherwise let any origin, a same-site
/// sibling whose requests carry the cookie included, read answers made as the user.
fn strip_cors(headers: &mut HeaderMap) {
    remove_where(headers, |name| name.starts_with("access-control-"));
}

/// Forward `/api/<rest>` to the upstream once the caller is authenticated.
pub async fn forward(state: AppState, req: Request, rest: &str) -> Result<Response> {
    let upstream = state
        .upstream
        .as_ref()
        .ok_or(Error::NotFound("no upstream is configured"))?;
    let (mut parts, body) = req.into_parts();
    let caller = session::user(&state, &parts).await?;
    if !origin::is_safe(parts.method.as_str()) {
        session::check_write(&state, &caller, &parts)?;
    }
    let target = upstream.target(rest, parts.uri.query())?;
    let conn = parts.extensions.get::<ConnInfo>().cloned();
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .map(RequestId::header_value);
    let headers = &mut parts.headers;
    let host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    session::strip_session_cookie(headers);
    headers.remove(header::HOST);
    strip_herald_headers(headers);
    for name in PATH_OVERRIDES {
        headers.remove(name);
    }
    if caller.via == Via::Bearer {
        // The backend trusts our identity headers, not the caller's token.
        headers.remove(header::AUTHORIZATION);
    }
    identity_headers(headers, &caller)?;
    // Set again: a `Connection` header may have named it as hop-by-hop.
    if let Some(request_id) = request_id {
        headers.insert(request_id::HEADER, request_id);
    }
    let mut proxied = false;
    if let Some(conn) = conn {
        let client = forwarded::client(&state.config.trusted_proxies, conn.peer, headers);
        proxied = client.proxied;
        if !proxied {
            // What the client says of itself, in any spelling, is not passed on as if a
            // proxy had said it.
            for name in UNTRUSTED_FORWARDING {
                headers.remove(name);
            }
        }
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) if client.proxied => format!("{prior}, {}", conn.peer.ip()),
            _ => client.addr.to_string(),
        };
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_str(&chain).expect("addresses are ASCII"),
        );
        let proto = if client.https || conn.tls {
            "https"
        } else {
            "http"
        };
        headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    }
    // A trusted proxy's own `X-Forwarded-Host` (the public host) stays.
    match host {
        Some(_) if proxied && headers.contains_key("x-forwarded-host") => {}
        Some(host) => {
            headers.insert("x-forwarded-host", host);
        }
        None => {}
    }
    parts.uri = target;
    let version = std::mem::replace(&mut parts.version, http::Version::HTTP_11);
    let request = http::Request::from_parts(parts, body);
    let response = upstream.send(request, Waits::of(&state.config)).await?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    strip_session_set_cookie(&mut parts.headers);
    strip_cors(&mut parts.headers);
    // Answered in the client's version, not the upstream's: an HTTP/1.0 backend must not
    // cost the client its keep-alive (hop-by-hop, like the headers above).
    parts.version = version;
    Ok(http::Response::from_parts(parts, body.boxed_unsync()))
}
