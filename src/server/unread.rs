//! An HTTP/1 answer given before its request's body was read to the end (a refusal: 401,
//! 403, 413, …; or an answer whose handler ignores a body, `DELETE /session` sent with one)
//! says `Connection: close`. hyper closes such a connection once the answer is
//! written, unless the rest of the body has already arrived to be drained, and a keep-alive
//! client that was not told would send its next request into a connection being closed.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tower::ServiceExt;

use super::AppService;
use crate::routes::body::Request;
use crate::upstream::RequestBody;

/// `service`, its HTTP/1 answers closing the connection when their request's body was not
/// read to its end by then.
pub fn close_unread(service: impl AppService) -> impl AppService {
    tower::service_fn(move |req: Request| {
        // Only a request with a body to read is watched (no allocation for the rest).
        let http1 = req.version() <= Version::HTTP_11;
        let (req, read) = if http1 && !req.body().is_end_stream() {
            let read = Arc::new(AtomicBool::new(false));
            let body = read.clone();
            let req = req.map(|inner| ReadMarked { inner, read: body }.boxed_unsync());
            (req, Some(read))
        } else {
            (req, None)
        };
        let answer = service.clone().oneshot(req);
        async move {
            let mut response = answer.await?;
            if read.is_some_and(|read| !read.load(Ordering::Relaxed)) {
                let close = HeaderValue::from_static("close");
                response.headers_mut().insert(header::CONNECTION, close);
            }
            Ok(response)
        }
    })
}

/// A request body that marks `read` once its end has been reached.
struct ReadMarked {
    inner: RequestBody,
    read: Arc<AtomicBool>,
}

impl Body for ReadMarked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.read.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
