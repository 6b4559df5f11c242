//! `GET /events`: authenticate, open the stream (`sse::stream`) and hand its frames to hyper
//! as the response body.

use futures_util::stream::unfold;
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::body::{Body, BoxError, Request, Response};
use crate::auth;
use crate::error::{Error, Result};
use crate::model::validate_id;
use crate::sse::stream::{Owner, Stream};
use crate::state::AppState;

pub async fn open(state: AppState, req: Request) -> Result<Response> {
    let query = super::query_pairs(&req);
    let (parts, _) = req.into_parts();
    let caller = auth::session::user(&state, &parts).await?;
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
    let owner = Owner {
        user: caller.user,
        session: caller.session,
        tab,
        exp: caller.exp,
    };
    let stream = Stream::open(&state, owner, resume.as_deref())
        .await?
        .ok_or(Error::TooManyStreams)?;
    Ok(sse_response(stream))
}

fn sse_response(stream: Stream) -> Response {
    let frames = unfold(stream, |mut s| async move {
        let bytes = s.next().await?;
        Some((Ok::<_, BoxError>(Frame::data(bytes)), s))
    });
    let body: Body = StreamBody::new(frames).boxed_unsync();
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
