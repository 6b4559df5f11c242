//! Response bodies and request-body reading: one body type for every response (full bytes or
//! a stream), the one place an `Error` becomes a JSON error response, and JSON request bodies read with a size limit (413), a time limit
//! (`--body-timeout`, 408) and parsed strictly (400).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::model::MAX_BODY_BYTES;
use crate::upstream::RequestBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
pub type Response = http::Response<Body>;
pub type Request = http::Request<RequestBody>;

pub fn full(status: StatusCode, bytes: impl Into<Bytes>) -> Response {
    let body = Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    response
}

pub fn empty(status: StatusCode) -> Response {
    full(status, Bytes::new())
}

/// A JSON answer: `private, no-cache`, since most are one user's data, answered to a cookie
/// or a token that a shared cache put in front by mistake would not tell apart, and the
/// browser must ask again each time. Not `no-store`: Chromium keeps no page that fetched a
/// `no-store` answer in its back/forward cache.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = full(status, bytes);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    response
}

/// The response for an error: its status and `{"error":{"code","message"}}` (plus `stored` for
/// a partly stored publish). Our own faults are logged at error, client mistakes at debug.
/// True at most once per second, process-wide: rate-limits a warning that an outage repeats.
fn warn_now() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
    let now = crate::model::now_secs();
    let last = LAST.swap(now, Ordering::Relaxed);
    last != now
}

pub fn error_response(error: Error) -> Response {
    match &error {
        // During an outage every request fails the same way: one warning a second is enough
        // (the link's own `Redis link down` line names the cause); the rest go to debug.
        Error::Unavailable(source) if warn_now() => {
            tracing::warn!(
                error = %source,
                "backend unavailable, answered 503: check the part the error names (Redis: that \
                 it runs, and --redis-url; Kafka, for /readyz: --kafka-brokers); streams stay \
                 open and catch up when it is back (further ones this second at debug)"
            )
        }
        Error::Unavailable(source) => tracing::debug!(error = %source, "backend unavailable"),
        Error::BadGateway(source) => tracing::warn!(
            error = %source,
            "upstream unreachable, answered 502: check that the --upstream backend runs"
        ),
        Error::Internal(detail) => tracing::error!(
            %detail,
            "internal error, answered 500: a bug in Herald; please report it with this line"
        ),
        // An outage fails every publish alike: rate-limited as above.
        Error::PartlyStored { stored, source } if source.is_outage() && !warn_now() => {
            tracing::debug!(error = %source, stored = stored.len(), "publish interrupted")
        }
        Error::PartlyStored { stored, source } => {
            tracing::warn!(
                error = %source,
                stored = stored.len(),
                "publish interrupted, answered 503 with the users stored so far: check Redis; \
                 the publisher retries the rest"
            )
        }
        other => tracing::debug!(code = other.code(), reason = %other, "request rejected"),
    }
    let mut body =
        serde_json::json!({"error": {"code": error.code(), "message": error.to_string()}});
    if let Error::PartlyStored { stored, .. } = &error {
        body["error"]["stored"] = serde_json::json!(stored);
    }
    let mut response = json(error.status(), &body);
    if let Error::TooLarge { .. } | Error::RequestTimeout = error {
        // The rest of the body is left unread, so this connection cannot be reused.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    if let Error::MethodNotAllowed(allow) = error {
        allow_header(&mut response, allow);
    }
    if let Error::Unauthorized(_) = error {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// `Allow`: the methods a path answers (`allow`), and `OPTIONS`, which every known path
/// answers.
pub fn allow_header(response: &mut Response, allow: &str) {
    if let Ok(value) = header::HeaderValue::from_str(&format!("{allow}, OPTIONS")) {
        response.headers_mut().insert(header::ALLOW, value);
    }
}

/// Read the whole body (at most [`MAX_BODY_BYTES`], all of it within `timeout`: a body that
/// trickles or never ends gets 408) and parse it as JSON into `T`.
pub async fn read_json<T: DeserializeOwned>(body: RequestBody, timeout: Duration) -> Result<T> {
    let bytes = read(body, timeout).await?;
    if bytes.is_empty() {
        return Err(Error::invalid("a JSON body is required"));
    }
    crate::model::from_json(&bytes).map_err(Error::invalid)
}

/// Read and drop the body of a request that takes none, within the same bounds as
/// [`read_json`] (413 over [`MAX_BODY_BYTES`], 408 past `timeout`).
pub async fn discard(body: RequestBody, timeout: Duration) -> Result<()> {
    read(body, timeout).await.map(drop)
}

async fn read(body: RequestBody, timeout: Duration) -> Result<Bytes> {
    let too_large = || Error::TooLarge {
        what: "request body",
        limit: MAX_BODY_BYTES,
    };
    // A `Content-Length` over the limit is refused at once, not after the body's first MiB
    // (or, from a client that sends less than it announced, at the timeout).
    if hyper::body::Body::size_hint(&body).lower() > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect())
        .await
        .map_err(|_| Error::RequestTimeout)?;
    let collected = collected.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            Error::invalid("could not read the request body")
        }
    })?;
    Ok(collected.to_bytes())
}
