//! Response bodies and request-body reading: one body type for every response (full bytes or
//! a stream), and JSON request bodies read with a size limit (413), a time limit
//! (`--body-timeout`, 408) and parsed strictly (400).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::model::MAX_BODY_BYTES;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
pub type Response = http::Response<Body>;
pub type Request = http::Request<Incoming>;

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

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = full(status, bytes);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Read the whole body (at most [`MAX_BODY_BYTES`], all of it within `timeout`: a body that
/// trickles or never ends gets 408) and parse it as JSON into `T`.
pub async fn read_json<T: DeserializeOwned>(body: Incoming, timeout: Duration) -> Result<T> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect())
        .await
        .map_err(|_| Error::RequestTimeout)?;
    let bytes = collected
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::TooLarge {
                    what: "request body",
                    limit: MAX_BODY_BYTES,
                }
            } else {
                Error::invalid("could not read the request body")
            }
        })?
        .to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid("a JSON body is required"));
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))
}
