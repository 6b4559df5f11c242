//! hyper answers a request head it cannot parse (malformed, or over its own caps: see
//! `head_limit`) by itself, with a bare `400`, `414` or `431`, an empty body and the
//! connection closed. That happens to every head after a connection's first over plain
//! HTTP/1 (the first is read in `connection.rs`) and to every HTTP/1 head over TLS.
//! [`JsonErrors`] writes Herald's JSON error answer in its place, so every refusal has the
//! same body. Such an answer is told apart from the service's by being a whole write that is
//! a bare head: the service's answers always carry `x-request-id` (`observe`) or a
//! `content-type`, hyper's only `connection`, `content-length: 0` and `date`. (A body passed
//! through `/api/` whose one chunk is exactly such a head would be taken for it; the
//! connection then closes, as after hyper's answer: any later write of hyper's fails.)

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::encode::encode;
use super::head_limit::{closing, refusal, MAX_HEAD_BYTES};
use crate::error::Error;

/// A connection's IO, with hyper's own error answers replaced (see the module doc).
pub struct JsonErrors<T> {
    io: T,
    state: State,
}

enum State {
    /// hyper's bytes go through.
    Passing,
    /// Writing the replacement (what is left of it) for hyper's answer of `len` bytes.
    Replacing { answer: Bytes, len: usize },
    /// The replacement is out: hyper ends the connection after its answer, and any write of
    /// it after that fails (nothing it writes may follow the replacement unseen).
    Replaced,
}

impl<T> JsonErrors<T> {
    pub fn new(io: T) -> Self {
        JsonErrors {
            io,
            state: State::Passing,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Write what is left of the replacement; the length of hyper's answer it replaced.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let State::Replacing { answer, len } = &mut self.state else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        while answer.has_remaining() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, answer))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            answer.advance(n);
        }
        let len = *len;
        self.state = State::Replaced;
        Poll::Ready(Ok(len))
    }

    /// Whether this write (`bytes` its first non-empty slice, `len` all of it) goes to the
    /// replacement instead of the IO: hyper's own error answer, or a write after it.
    fn replaces(&mut self, bytes: &[u8], len: usize) -> bool {
        if let State::Passing = self.state {
            let ours = (bytes.len() == len).then(|| bare_error(bytes)).flatten();
            if let Some(answer) = ours.and_then(json_answer) {
                self.state = State::Replacing { answer, len };
            }
        }
        !matches!(self.state, State::Passing)
    }

    /// Finish the replacement, if one is being written.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let State::Replacing { .. } = self.state {
            ready!(self.poll_answer(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replaces(buf, buf.len()) {
            return self.poll_answer(cx);
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.replaces(first, len) {
            return self.poll_answer(cx);
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_finish(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_finish(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The error behind `bytes` when they are one of hyper's own error answers.
fn bare_error(bytes: &[u8]) -> Option<Error> {
    // Most writes are bodies, or answers that are not 4xx: the check costs a few compares.
    if !(bytes.starts_with(b"HTTP/1.") && bytes.get(9) == Some(&b'4')) {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 4];
    let mut head = httparse::Response::new(&mut headers);
    // The whole write: hyper's answer has no body, and is written alone.
    let Ok(httparse::Status::Complete(len)) = head.parse(bytes) else {
        return None;
    };
    if len != bytes.len() {
        return None;
    }
    let bare = head.headers.iter().all(|h| match h.name {
        "connection" => h.value == b"close",
        "content-length" => h.value == b"0",
        name => name == "date",
    });
    if !bare {
        return None;
    }
    match head.code? {
        400 => Some(Error::invalid("malformed request head")),
        414 | 431 => Some(Error::HeadTooLarge {
            limit: MAX_HEAD_BYTES,
        }),
        _ => None,
    }
}

/// The whole JSON answer for `error`, the connection closed after it (`None` if it could not
/// be made: hyper's answer then stands).
fn json_answer(error: Error) -> Option<Bytes> {
    // An error's body is ready at once.
    let bytes = encode(closing(refusal(error))).now_or_never().flatten();
    bytes.map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Sat, 05 Dec 2026 10:29:23 GMT\r\n\r\n";

    #[test]
    fn hyper_s_own_answers_are_told_apart() {
        let bare = |status: &str| {
            format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}")
        };
        let code = |bytes: &str| bare_error(bytes.as_bytes()).map(|e| e.code());
        assert_eq!(code(&bare("400 Bad Request")), Some("invalid_request"));
        assert_eq!(
            code(&bare("431 Request Header Fields Too Large")),
            Some("too_large")
        );
        assert_eq!(code(&bare("414 URI Too Long")), Some("too_large"));
        // the service's answers, a body, another status, a head cut short
        let service =
            format!("HTTP/1.1 400 Bad Request\r\nx-request-id: 1\r\ncontent-length: 0\r\n{DATE}");
        let json = format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n{DATE}");
        for other in [
            service.as_str(),
            &json,
            &bare("404 Not Found"),
            &bare("200 OK"),
            "1f\r\nevent: ready\r\n",
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\n",
            // a bare head with more after it in the same write is not hyper's answer
            &format!("{}x", bare("400 Bad Request")),
        ] {
            assert_eq!(code(other), None, "{other:?}");
        }
    }

    #[test]
    fn the_answer_is_whole_and_closes() {
        let answer = json_answer(Error::invalid("malformed request head")).unwrap();
        let text = std::str::from_utf8(&answer).unwrap();
        let body = r#"{"error":{"code":"invalid_request","message":"malformed request head"}}"#;
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(
            text.contains(&format!("content-length: {}\r\n", body.len())),
            "{text}"
        );
        assert!(text.ends_with(&format!("\r\n\r\n{body}")), "{text}");
    }
}
