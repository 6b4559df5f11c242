//! A client that sends its request and then shuts its sending side (`nc -N`, `printf … | nc`,
//! some health checkers) still gets its answer, whenever its end arrives. hyper takes the end
//! of a client's input while an answer is pending for the client having gone, and drops the
//! answer; [`HoldEof`] keeps that end from hyper from the moment hyper hands a request over
//! ([`Answered`]) until its answer's body has been sent (or dropped), then hands it on, and hyper
//! closes the connection after the answer. An event stream's answer holds nothing: there the
//! end of the client's input means it went, which ends the stream at once. A body the client
//! cut short and then ended its side waits for `--body-timeout` (408), as a body that stops
//! coming does: hyper reads a request's body ahead of the service, so "the body is whole" is
//! not known here in time.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::task::AtomicWaker;
use http::header::CONTENT_TYPE;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt;

/// One HTTP/1 connection's answer in progress: whether the end of the client's input is held
/// back from hyper. One request at a time is answered on such a connection.
#[derive(Clone, Default)]
pub struct Answering(Arc<Held>);

#[derive(Default)]
struct Held {
    held: AtomicBool,
    /// The connection's reader, parked on a held end.
    reader: AtomicWaker,
}

impl Answering {
    fn hold(&self, held: bool) {
        self.0.held.store(held, Ordering::SeqCst);
        if !held {
            self.0.reader.wake();
        }
    }

    /// The answer: the hold ends once its body has been sent whole or dropped; at once for an
    /// event stream or an empty body.
    fn response<B: Body>(&self, response: http::Response<B>) -> http::Response<Sent<B>> {
        let stream = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        let answering = (!stream && !response.body().is_end_stream()).then(|| self.clone());
        if answering.is_none() {
            self.hold(false);
        }
        response.map(|body| Sent { body, answering })
    }
}

/// hyper's service on an HTTP/1 connection: the hold starts when hyper hands a request over,
/// before the service is first polled (hyper reads on meanwhile), and the answer ends it.
#[derive(Clone)]
pub struct Answered<S> {
    service: S,
    answering: Answering,
}

impl<S> Answered<S> {
    pub fn new(service: S, answering: Answering) -> Self {
        Answered { service, answering }
    }
}

impl<S, B> hyper::service::Service<http::Request<Incoming>> for Answered<S>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body + Send + 'static,
{
    type Response = http::Response<Sent<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        self.answering.hold(true);
        let answering = self.answering.clone();
        let answer = self.service.clone().oneshot(request);
        Box::pin(async move { Ok(answering.response(answer.await?)) })
    }
}

/// An answer's body that ends the hold when it ends or is dropped unfinished.
pub struct Sent<B> {
    body: B,
    answering: Option<Answering>,
}

impl<B> Sent<B> {
    fn ended(&mut self) {
        if let Some(answering) = self.answering.take() {
            answering.hold(false);
        }
    }
}

impl<B> Drop for Sent<B> {
    fn drop(&mut self) {
        self.ended();
    }
}

impl<B: Body + Unpin> Body for Sent<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if frame.is_none() || self.body.is_end_stream() {
            self.ended();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's IO with the end of the client's input held back while [`Answering`] says so.
pub struct HoldEof<T> {
    io: T,
    answering: Answering,
    ended: bool,
}

impl<T> HoldEof<T> {
    pub fn new(io: T, answering: Answering) -> Self {
        HoldEof {
            io,
            answering,
            ended: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HoldEof<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.ended {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            if buf.filled().len() > before || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            this.ended = true;
        }
        let held = &this.answering.0;
        if held.held.load(Ordering::SeqCst) {
            held.reader.register(cx.waker());
            if held.held.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HoldEof<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The end of the client's input reaches the reader only once no answer holds it; bytes
    /// before it pass at once.
    #[tokio::test]
    async fn the_end_of_input_waits_for_the_answer() {
        let (mut client, server) = tokio::io::duplex(64);
        let answering = Answering::default();
        let mut io = HoldEof::new(server, answering.clone());
        answering.hold(true);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(io.read(&mut buf).await.unwrap(), 18);
        let held = tokio::time::timeout(Duration::from_millis(50), io.read(&mut buf)).await;
        assert!(held.is_err(), "the end passed while held");
        let reading = tokio::spawn(async move { io.read(&mut buf).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        answering.hold(false);
        assert_eq!(reading.await.unwrap(), 0);
    }

    /// An event stream's answer, or an empty one, ends the hold at once; another one when its
    /// body has been sent or dropped.
    #[test]
    fn answers_end_the_hold() {
        let answering = Answering::default();
        let response = |content_type: &str, body: &'static str| {
            answering.hold(true);
            let response = http::Response::builder()
                .header(CONTENT_TYPE, content_type)
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    body.as_bytes(),
                )))
                .unwrap();
            answering.response(response)
        };
        let held = |a: &Answering| a.0.held.load(Ordering::SeqCst);
        let stream = response("text/event-stream", "retry: 1\n\n");
        assert!(!held(&answering));
        drop(stream);
        let empty = response("application/json", "");
        assert!(!held(&answering));
        drop(empty);
        let sent = response("application/json", "{}");
        assert!(held(&answering));
        drop(sent);
        assert!(!held(&answering));
    }
}
