//! `GET /events`: authenticate and open the stream (`sse::stream`). The response carries the
//! stream as an `EventStream` until a transport takes it: the server's socket transport for a
//! plain HTTP/1.x connection, or hyper, whose body `with_body` makes of it.

use std::sync::{Arc, Mutex};

use futures_util::stream::unfold;
use http::{header, HeaderValue, StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::body::{Body, BoxError, Request, Response};
use crate::auth;
use crate::error::{Error, Result};
use crate::model::validate_id;
use crate::request_id::RequestId;
use crate::sse::stream::{Abort, Handle, Owner, Stream, Transport, Went};
use crate::state::AppState;

pub async fn open(state: AppState, req: Request) -> Result<Response> {
    let arrived = tokio::time::Instant::now();
    let query = super::query_pairs(&req);
    let (parts, _) = req.into_parts();
    let caller = auth::session::user(&state, &parts).await?;
    let query = query?;
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let tab = param("tab");
    if let Some(tab) = &tab {
        validate_id("tab", tab)?;
    }
    // A header that is not ASCII is still a resume attempt: it fails to parse and resets.
    let resume = parts
        .headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| param("last_event_id"))
        .filter(|v| !v.trim().is_empty());
    let request_id = parts.extensions.get::<RequestId>().cloned();
    let owner = Owner {
        user: caller.user,
        record: match caller.via {
            auth::session::Via::Cookie(record) => Some(record),
            auth::session::Via::Bearer => None,
        },
        session: caller.session,
        tab,
        ends_ms: caller.ends_ms,
        request_id: request_id.unwrap_or_else(RequestId::generate),
        carrier: Abort::current_http2_stream().or_else(|| parts.extensions.get::<Abort>().cloned()),
        went: parts.extensions.get::<Went>().cloned(),
        arrived,
    };
    let stream = Stream::open(&state, owner, resume.as_deref())
        .await?
        .ok_or(Error::TooManyStreams)?;
    Ok(sse_response(stream, parts.version))
}

/// An open stream riding on its `/events` response until a transport takes it; dropped
/// untaken, it ends the stream. With the request's HTTP version, which names hyper's
/// transport in the metrics.
#[derive(Clone)]
pub struct EventStream(Arc<Mutex<Option<Handle>>>, Version);

impl EventStream {
    /// Take the stream out of `response`, if it carries one.
    pub fn take(response: &mut Response) -> Option<Handle> {
        Self::take_with_version(response).map(|(handle, _)| handle)
    }

    fn take_with_version(response: &mut Response) -> Option<(Handle, Version)> {
        let slot = response.extensions_mut().remove::<EventStream>()?;
        let handle = slot.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        Some((handle, slot.1))
    }
}

/// For hyper: a response carrying a stream gets the stream's frames as its body.
pub fn with_body(mut response: Response) -> Response {
    if let Some((handle, version)) = EventStream::take_with_version(&mut response) {
        handle.count_as(if version == Version::HTTP_2 {
            Transport::Http2
        } else {
            Transport::Http1
        });
        let frames = unfold(handle, |h| async move {
            let bytes = h.next().await?;
            Some((Ok::<_, BoxError>(Frame::data(bytes)), h))
        });
        *response.body_mut() = StreamBody::new(frames).boxed_unsync();
    }
    response
}

fn sse_response(stream: Handle, version: Version) -> Response {
    let mut response = sse_head(Body::default());
    response
        .extensions_mut()
        .insert(EventStream(Arc::new(Mutex::new(Some(stream))), version));
    response
}

/// 200 with `body` and the headers of an SSE answer (no caching, no proxy buffering).
pub(super) fn sse_head(body: Body) -> Response {
    let mut response = http::Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
