//! A client that sends its request and then shuts its sending side (`nc -N`, `printf … | nc`,
//! some health checkers) still gets its answer, whenever its end arrives. hyper takes the end
//! of a client's input while an answer is pending for the client having gone, and drops the
//! answer; [`HoldEof`] keeps that end from hyper from the moment hyper hands a request over
//! ([`Answered`]) until its answer has been written out (its body ended or dropped, and the
//! next flush through here completed: hyper flushes the IO only once its own buffer is
//! empty), then hands it on, and hyper closes the connection after the answer. An event
//! stream's answer holds nothing: there the end of the client's input means it went, which
//! ends the stream at once. A body the client cut short and then ended its side is treated as
//! a body that stops coming (408 after `--body-timeout`, through `/api/` too): hyper reads a
//! request's body ahead of the service, so "the body is whole" is not known here in time. Likewise a client that closes during a long answer other
//! than a stream is noticed at the next write that fails, not at once.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::task::AtomicWaker;
use http::header::CONTENT_TYPE;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt;

/// One HTTP/1 connection's answers in progress: the end of the client's input is held back
/// from hyper while one is. hyper answers requests in order, and may take a pipelined request
/// before the answer to the one before it is out, so they are counted.
#[derive(Clone, Default)]
pub struct Answering(Arc<Held>);

#[derive(Default)]
struct Held {
    /// Requests handed over whose answers are not written out yet.
    pending: AtomicUsize,
    /// Of those, the answers whose bodies have ended: out at the next completed flush.
    ended: AtomicUsize,
    /// The connection's reader, parked on a held end.
    reader: AtomicWaker,
}

impl Answering {
    fn held(&self) -> bool {
        self.0.pending.load(Ordering::SeqCst) > 0
    }

    fn begin(&self) {
        self.0.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// `n` answers are out (or need no hold).
    fn out(&self, n: usize) {
        if n > 0 && self.0.pending.fetch_sub(n, Ordering::SeqCst) == n {
            self.0.reader.wake();
        }
    }

    /// An answer's body ended: it is out once the bytes before the next flush are.
    fn end(&self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }

    /// The flush completed: every answer ended before it is out.
    fn flushed(&self) {
        self.out(self.0.ended.swap(0, Ordering::SeqCst));
    }

    /// The answer: it holds until its body has ended (or was dropped) and been written out; an
    /// event stream not at all.
    fn response<B: Body>(&self, response: http::Response<B>) -> http::Response<Sent<B>> {
        let stream = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        let empty = response.body().is_end_stream();
        if stream {
            self.out(1);
        } else if empty {
            self.end();
        }
        let answering = (!stream && !empty).then(|| self.clone());
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
        self.answering.begin();
        let answering = self.answering.clone();
        let answer = self.service.clone().oneshot(request);
        Box::pin(async move { Ok(answering.response(answer.await?)) })
    }
}

/// An answer's body that counts as ended when it ends or is dropped unfinished.
pub struct Sent<B> {
    body: B,
    answering: Option<Answering>,
}

impl<B> Sent<B> {
    fn ended(&mut self) {
        if let Some(answering) = self.answering.take() {
            answering.end();
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
        let answering = &this.answering;
        if answering.held() {
            answering.0.reader.register(cx.waker());
            if answering.held() {
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
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.answering.flushed();
        Poll::Ready(Ok(()))
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
        answering.begin();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(io.read(&mut buf).await.unwrap(), 18);
        let held = tokio::time::timeout(Duration::from_millis(50), io.read(&mut buf)).await;
        assert!(held.is_err(), "the end passed while held");
        let reading = tokio::spawn(async move { io.read(&mut buf).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        answering.end();
        answering.flushed();
        assert_eq!(reading.await.unwrap(), 0);
    }

    /// An event stream's answer ends its hold at once; any other once its body has ended (or
    /// was dropped) and a flush completed after that, also for pipelined requests whose
    /// answers overlap.
    #[test]
    fn answers_end_the_hold_once_written_out() {
        let answering = Answering::default();
        let response = |content_type: &str, body: &'static str| {
            answering.begin();
            let response = http::Response::builder()
                .header(CONTENT_TYPE, content_type)
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    body.as_bytes(),
                )))
                .unwrap();
            answering.response(response)
        };
        let stream = response("text/event-stream", "retry: 1\n\n");
        assert!(!answering.held());
        drop(stream);
        answering.flushed();
        let empty = response("application/json", "");
        assert!(answering.held(), "an empty answer's head is not out yet");
        answering.flushed();
        assert!(!answering.held());
        drop(empty);
        let first = response("application/json", "{}");
        let second = response("application/json", "{}");
        answering.flushed();
        assert!(answering.held(), "nothing ended before that flush");
        drop(first);
        answering.flushed();
        assert!(answering.held(), "the second answer is not out");
        drop(second);
        assert!(answering.held(), "ended, not yet flushed");
        answering.flushed();
        assert!(!answering.held());
    }
}
