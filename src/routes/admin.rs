//! `/admin`, with `--admin` (off: 404 like any unknown path): the operators' page and its
//! data. The page (`static/admin/`) holds no data, so it is served without auth, with a strict
//! CSP (no inline script; everything from this origin). `/admin/nodes` and `/admin/tail` need
//! a service token, like `POST /publish`; the page looks presence up with `/presence/{user}`
//! and publishes with `/publish`. The page's URLs are relative, so it works under
//! `--base-path`; `/admin` redirects to `admin/` for them to resolve under `/admin/`.

use futures_util::stream::unfold;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::assets;
use super::body::{empty, json, BoxError, Request, Response};
use super::events::sse_head;
use crate::auth;
use crate::error::{Error, Result};
use crate::model::validate_id;
use crate::sse::tail::Tail;
use crate::state::AppState;

/// The page may load its script, style and data from this origin only, and be framed by none.
const CSP: &str =
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The method + path table under `/admin/` (`rest`: the segments after `admin`).
pub async fn route(state: AppState, req: Request, rest: &[&str]) -> Result<Response> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match rest {
        [] if get => Ok(redirect()),
        [""] if get => Ok(page(&req)),
        ["admin.js"] if get => Ok(assets::ADMIN_JS.serve(&req)),
        ["admin.css"] if get => Ok(assets::ADMIN_CSS.serve(&req)),
        ["nodes"] if get => nodes(state, req).await,
        ["tail"] if req.method() == Method::GET => tail(state, req).await,
        [] | [""] | ["admin.js" | "admin.css"] | ["nodes"] => {
            Err(Error::MethodNotAllowed("GET, HEAD"))
        }
        ["tail"] => Err(Error::MethodNotAllowed("GET")),
        _ => Err(Error::NotFound("no such endpoint")),
    }
}

/// `/admin` → `admin/` (relative: the browser keeps the base path).
fn redirect() -> Response {
    let mut response = empty(StatusCode::PERMANENT_REDIRECT);
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("admin/"));
    response
}

fn page(req: &Request) -> Response {
    let mut response = assets::ADMIN_PAGE.serve(req);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// One row of `GET /admin/nodes`.
#[derive(serde::Serialize)]
struct NodeRow {
    node: String,
    streams: Option<u64>,
    last_seen_ms: u64,
    web_push: bool,
    #[serde(rename = "self")]
    this: bool,
}

/// `GET /admin/nodes`: every live node, its open streams and last heartbeat; this node's own
/// stream count is read now (the others' at their last heartbeat, at most 5 s old).
async fn nodes(state: AppState, req: Request) -> Result<Response> {
    auth::session::service(&state, &req.into_parts().0)?;
    let me = state.hub.node();
    let nodes: Vec<NodeRow> = state
        .store
        .nodes()
        .await?
        .into_iter()
        .map(|n| {
            let this = n.node == me;
            NodeRow {
                streams: if this {
                    Some(state.hub.streams())
                } else {
                    n.streams
                },
                node: n.node,
                last_seen_ms: n.last_seen_ms,
                web_push: n.web_push,
                this,
            }
        })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "nodes": nodes })))
}

/// `GET /admin/tail?user=<id>`: the user's changes as they happen (`sse::tail`).
async fn tail(state: AppState, req: Request) -> Result<Response> {
    let query = super::query_pairs(&req);
    let claims = auth::session::service(&state, &req.into_parts().0)?;
    let query = query?;
    let user = query
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| Error::invalid("the user query parameter is required"))?;
    validate_id("user", user)?;
    let tail = Tail::open(&state, user, state.config.keys.ends_ms(&claims)).await?;
    let frames = unfold(tail, |t| async move {
        let bytes = t.next().await?;
        Some((Ok::<_, BoxError>(Frame::data(bytes)), t))
    });
    Ok(sse_head(StreamBody::new(frames).boxed_unsync()))
}
