//! The method + path table. Paths are matched after the `--base-path` prefix is removed, and
//! path segments are percent-decoded. Every handler returns `Result<Response, Error>`; only
//! `body::error_response` builds error bodies.

mod actions;
mod admin;
mod assets;
mod auth_request;
pub(crate) mod body;
mod dev;
mod events;
mod groups;
mod notifications;
#[cfg(test)]
mod openapi_tests;
mod ops;
pub(crate) mod paths;
mod preferences;
mod presence;
mod proxy;
mod publish;
mod push;
mod session;

pub(crate) use self::events::{with_body, EventStream};

use http::{header, Method, Version};

pub use self::auth_request::{SESSION_HEADER, USER_HEADER};
use self::body::{error_response, Request, Response};
pub use self::notifications::POSITION_HEADER;
use crate::error::{Error, Result};
use crate::forwarded::ConnInfo;
use crate::model::{canonical_id, MAX_BODY_BYTES};
use crate::state::AppState;

/// Handle one request; never fails (errors become JSON error responses).
pub async fn handle(state: AppState, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let version = req.version();
    // The client's address is only worked out when the request log is on.
    let client = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| req.extensions().get::<ConnInfo>())
        .flatten()
        .map(|conn| {
            crate::forwarded::client(&state.config.trusted_proxies, conn.peer, req.headers()).addr
        });
    let head = check_head(&req);
    // `CONNECT host:port` (authority form): Herald is no forward proxy.
    let no_path = !path.starts_with('/') && path != "*";
    let bad_head = head.is_err() || no_path;
    let result = match (head, strip_base(&state.config.base_path, &path)) {
        (Err(e), _) => Err(e),
        _ if no_path => Err(Error::invalid(
            "the request target must be a path: Herald is no forward proxy",
        )),
        (Ok(()), Some("")) => Ok(to_base(&req)),
        (Ok(()), Some(rest)) if awaits_too_large_a_body(&req, rest) => Err(Error::TooLarge {
            what: "request body",
            limit: MAX_BODY_BYTES,
        }),
        (Ok(()), Some(rest)) => route(state, req, rest).await,
        (Ok(()), None) => Err(Error::NotFound("no such endpoint")),
    };
    let mut response = match result {
        // A path that answers 405 is known: a plain OPTIONS (the CORS layer answers
        // preflights) gets its methods instead, under `/admin/` too.
        Err(Error::MethodNotAllowed(allow)) if method == Method::OPTIONS => options(allow),
        result => result.unwrap_or_else(error_response),
    };
    if bad_head && version < Version::HTTP_2 {
        // No request to go on from, nor to read a pipelined one behind.
        let close = http::HeaderValue::from_static("close");
        response.headers_mut().insert(header::CONNECTION, close);
    }

    tracing::debug!(
        client = client.map(tracing::field::display),
        %method,
        path,
        status = response.status().as_u16(),
        "request"
    );
    response
}

/// A HEAD answer: its GET's status and headers, `Content-Length` included, and no body.
/// hyper leaves the body out over HTTP/1.1 itself, but not over HTTP/2; the server applies
/// this to every answer to a HEAD. (An empty body names no length: a HEAD forwarded to the
/// upstream comes back with an empty one, and the upstream's own headers say what its GET
/// would send.)
pub(crate) fn without_body(response: Response) -> Response {
    let (mut head, body) = response.into_parts();
    let length = hyper::body::Body::size_hint(&body).exact();
    if let Some(length) = length.filter(|&n| n > 0) {
        head.headers
            .entry(header::CONTENT_LENGTH)
            .or_insert(length.into());
    }
    Response::from_parts(head, body::Body::default())
}

/// A client waiting for `100 Continue` before it sends a body announced over the limit
/// (which Herald reads, not the `/api/` proxy): answered `413` from the head, before its
/// credentials are checked. (One that sends at once gets its 413 where the body is read.)
fn awaits_too_large_a_body(req: &Request, rest: &str) -> bool {
    let headers = req.headers();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let expects = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    expects && length.is_some_and(|n| n > MAX_BODY_BYTES as u64) && !rest.starts_with("/api/")
}

/// RFC 9112 §3.2: exactly one `Host` header, which HTTP/1.1 requests must carry (400
/// otherwise); the Origin rule and the proxy read it. At most one `Authorization` (RFC 9110
/// §11.6.2 gives it one value): with two, which one a proxy or backend reads is not known.
fn check_head(req: &Request) -> Result<()> {
    let count = |name| req.headers().get_all(name).iter().count();
    match count(header::HOST) {
        0 if req.version() >= Version::HTTP_11 => Err(Error::invalid(
            "an HTTP/1.1 request must carry a Host header",
        )),
        0 | 1 if count(header::AUTHORIZATION) > 1 => Err(Error::invalid(
            "a request may carry only one Authorization header",
        )),
        0 | 1 => Ok(()),
        _ => Err(Error::invalid("a request may carry only one Host header")),
    }
}

/// The path under `--base-path`; `""` for the base path without its final slash.
fn strip_base<'a>(base: &str, path: &'a str) -> Option<&'a str> {
    if base == "/" {
        return Some(path);
    }
    let rest = path.strip_prefix(base.trim_end_matches('/'))?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// `/herald` → `herald/` (308; relative, so a proxy's own prefix stays), the query kept: the
/// demo page's relative URLs resolve under the base path.
fn to_base(req: &Request) -> Response {
    let last = req.uri().path().rsplit('/').next().unwrap_or_default();
    let location = match req.uri().query() {
        Some(query) => format!("{last}/?{query}"),
        None => format!("{last}/"),
    };
    let mut response = body::empty(http::StatusCode::PERMANENT_REDIRECT);
    if let Ok(value) = http::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A new path here needs its pattern in `paths::PATTERNS` too (its metrics label).
async fn route(state: AppState, req: Request, path: &str) -> Result<Response> {
    if let Some(rest) = path.strip_prefix("/api/") {
        // Forwarded as received: the rest of the path stays percent-encoded.
        let rest = rest.to_owned();
        return proxy::forward(state, req, &rest).await;
    }
    // One leading slash: `//events` is not `/events`.
    let segments: Vec<String> = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(percent_decode)
        .collect::<Result<_>>()?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let dev = state.config.dev;
    // HEAD is GET without the body (RFC 9110 §9.3.2): the server sends the headers, with
    // `Content-Length`, and no body (`without_body`). Not on `/events`, where a GET opens a
    // stream.
    match (segs.as_slice(), &method) {
        (["events"], &Method::GET) => events::open(state, req).await,
        (["auth"], &Method::GET | &Method::HEAD) => auth_request::auth(state, req).await,
        (["session"], &Method::POST) => session::create(state, req).await,
        (["session"], &Method::DELETE) => session::delete(state, req).await,
        (["notifications"], &Method::GET | &Method::HEAD) => notifications::list(state, req).await,
        (["notifications"], &Method::PATCH) => notifications::patch_many(state, req).await,
        (["notifications", "counts"], &Method::GET | &Method::HEAD) => {
            notifications::counts(state, req).await
        }
        // A notification id in any letter case, as `before=` takes it.
        (["notifications", id], &Method::PATCH) => {
            notifications::patch_one(state, req, &canonical_id(id)).await
        }
        (["notifications", id, "actions", action], &Method::POST) => {
            actions::take(state, req, &canonical_id(id), action).await
        }
        (["publish"], &Method::POST) => publish::handle(state, req).await,
        (["groups", group, "members"], &Method::PUT) => groups::add(state, req, group).await,
        (["groups", group, "members"], &Method::GET | &Method::HEAD) => {
            groups::list(state, req, group).await
        }
        (["groups", group, "members", user], &Method::DELETE) => {
            groups::remove(state, req, group, user).await
        }
        (["presence", user], &Method::GET | &Method::HEAD) => presence::get(state, req, user).await,
        (["preferences"], &Method::GET | &Method::HEAD) => preferences::get(state, req).await,
        (["preferences", "categories", category], &Method::PUT) => {
            preferences::put_category(state, req, category).await
        }
        (["push", "key"], &Method::GET | &Method::HEAD) => push::key(state).await,
        (["push", "subscriptions"], &Method::POST) => push::subscribe(state, req).await,
        (["push", "subscriptions"], &Method::DELETE) => push::unsubscribe(state, req).await,
        (["healthz"], &Method::GET | &Method::HEAD) => Ok(ops::healthz()),
        (["readyz"], &Method::GET | &Method::HEAD) => ops::readyz(state).await,
        (["metrics"], &Method::GET | &Method::HEAD) => ops::metrics(&state, &req),
        (["herald.js"], &Method::GET | &Method::HEAD) => Ok(assets::CLIENT.serve(&req)),
        (["herald-worker.js"], &Method::GET | &Method::HEAD) => Ok(assets::WORKER.serve(&req)),
        (["herald-sw.js"], &Method::GET | &Method::HEAD) => Ok(assets::SERVICE_WORKER.serve(&req)),
        (["openapi.yaml"], &Method::GET | &Method::HEAD) => Ok(assets::OPENAPI.serve(&req)),
        ([""], &Method::GET | &Method::HEAD) if dev => Ok(assets::DEMO.serve(&req)),
        (["dev", "login"], &Method::POST) if dev => dev::login(state, req).await,
        (["dev", "publish"], &Method::POST) if dev => dev::publish_as_user(state, req).await,
        (["admin", rest @ ..], _) if state.config.admin => admin::route(state, req, rest).await,
        (segs, _) => match allowed_methods(segs, dev) {
            Some(allow) => Err(Error::MethodNotAllowed(allow)),
            None => Err(Error::NotFound("no such endpoint")),
        },
    }
}

/// `OPTIONS` on a known path (RFC 9110 §9.3.7): `204` with the methods it answers in `Allow`.
fn options(allow: &str) -> Response {
    let mut response = body::empty(http::StatusCode::NO_CONTENT);
    body::allow_header(&mut response, allow);
    response
}

/// The methods a known path answers, for 405's `Allow` header; `None` for unknown paths (404).
/// Keep in step with the table in [`route`].
fn allowed_methods(segs: &[&str], dev: bool) -> Option<&'static str> {
    Some(match segs {
        ["events"] => "GET",
        ["push", "subscriptions"] => "POST, DELETE",
        ["preferences", "categories", _] => "PUT",
        ["auth"]
        | ["healthz"]
        | ["readyz"]
        | ["metrics"]
        | ["herald.js"]
        | ["herald-worker.js"]
        | ["herald-sw.js"]
        | ["openapi.yaml"]
        | ["presence", _]
        | ["preferences"]
        | ["push", "key"] => "GET, HEAD",
        [""] if dev => "GET, HEAD",
        ["session"] => "POST, DELETE",
        // PATCH of `counts` is routed as an id (404).
        ["notifications"] | ["notifications", "counts"] => "GET, HEAD, PATCH",
        ["notifications", _] => "PATCH",
        ["notifications", _, "actions", _] => "POST",
        ["publish"] => "POST",
        ["groups", _, "members"] => "GET, HEAD, PUT",
        ["groups", _, "members", _] => "DELETE",
        ["dev", "login" | "publish"] if dev => "POST",
        _ => return None,
    })
}

fn percent_decode(s: &str) -> Result<String> {
    utf8(s, "the path is not valid UTF-8")
}

/// `s` percent-decoded, or a 400 saying `what` if that is not UTF-8.
fn utf8(s: &str, what: &'static str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Error::invalid(what))
}

/// A query name or value decoded as a form (`+` is a space, then percent-decoding); one that
/// is not UTF-8 once decoded is a 400, not a lossy stand-in.
fn form_decode(s: &str) -> Result<String> {
    utf8(&s.replace('+', " "), "the query string is not valid UTF-8")
}

/// The query's (name, value) pairs, still encoded.
fn raw_query_pairs(req: &Request) -> impl Iterator<Item = (&str, &str)> {
    let query = req.uri().query().unwrap_or("");
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Query string parameters, decoded ([`form_decode`]).
pub fn query_pairs(req: &Request) -> Result<Vec<(String, String)>> {
    raw_query_pairs(req)
        .map(|(name, value)| Ok((form_decode(name)?, form_decode(value)?)))
        .collect()
}

/// The items of every `name` parameter, each a comma list (`category=a,b`): split before
/// decoding, so an encoded comma (`%2C`) stays within its item; empty items are left out.
pub fn query_list(req: &Request, name: &str) -> Result<Vec<String>> {
    let mut items = Vec::new();
    for (key, value) in raw_query_pairs(req) {
        if form_decode(key)? == name {
            for item in value.split(',').filter(|i| !i.is_empty()) {
                items.push(form_decode(item)?);
            }
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests outside the base path are not ours; inside, the prefix is removed.
    #[test]
    fn base_path_stripping() {
        assert_eq!(strip_base("/", "/events"), Some("/events"));
        assert_eq!(strip_base("/herald/", "/herald/events"), Some("/events"));
        assert_eq!(strip_base("/herald/", "/herald"), Some(""));
        assert_eq!(strip_base("/herald/", "/heraldx/events"), None);
    }

    /// Every known path names its methods for 405; unknown paths have none (404).
    #[test]
    fn allow_lists() {
        assert_eq!(allowed_methods(&["session"], false), Some("POST, DELETE"));
        assert_eq!(allowed_methods(&["herald.js"], false), Some("GET, HEAD"));
        assert_eq!(allowed_methods(&["dev", "login"], false), None);
        assert_eq!(allowed_methods(&["dev", "login"], true), Some("POST"));
        assert_eq!(allowed_methods(&["nothing"], true), None);
    }

    /// Percent-encoded path segments decode; invalid UTF-8 is a 400.
    #[test]
    fn path_segments_decode() {
        assert_eq!(percent_decode("a%20b").unwrap(), "a b");
        assert!(percent_decode("%ff").is_err());
    }

    fn get(uri: &str) -> Request {
        use http_body_util::{BodyExt, Empty};
        let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
        http::Request::builder().uri(uri).body(body).unwrap()
    }

    /// Query pairs decode as a form; a pair that is not UTF-8 once decoded is refused.
    #[test]
    fn query_decoding() {
        let pairs = |uri: &str| query_pairs(&get(uri));
        assert_eq!(
            pairs("/n?limit=5&category=a%2Cb+c&&flag&x=%E2%9C%93").unwrap(),
            [
                ("limit".into(), "5".into()),
                ("category".into(), "a,b c".into()),
                ("flag".into(), String::new()),
                ("x".into(), "\u{2713}".into()),
            ]
        );
        assert!(pairs("/n?category=%FF").is_err());
        assert!(pairs("/n?%C3=1").is_err());
    }

    /// A comma list splits before decoding: `%2C` is a comma within an item.
    #[test]
    fn query_lists() {
        let list = |uri: &str| query_list(&get(uri), "category");
        let uri = "/n?category=a,b%2Cc,,d+e&x=1&categor%79=f";
        assert_eq!(list(uri).unwrap(), ["a", "b,c", "d e", "f"]);
        assert!(list("/n?x=1").unwrap().is_empty());
        assert!(list("/n?category=a,%FF").is_err());
    }
}
