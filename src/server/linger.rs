//! Lingering close, as nginx's `lingering_close`: a connection Herald ends is shut for
//! writing (FIN), then what the client still sends is read and dropped until it ends its side,
//! goes quiet for [`QUIET`], or [`MAX`] has passed. A socket closed with unread input answers
//! the client with a reset instead, and a client still sending a body the answer refused
//! (413, 408, a 431 head) then fails with "broken pipe" before it reads that answer. Not while
//! the node shuts down: then a connection closes at once, also one lingering when it began.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::shutdown::Shutdown;

/// Longest wait for the client's next bytes (or its end) once Herald has ended its side.
const QUIET: Duration = Duration::from_secs(1);
/// Longest lingering in all.
const MAX: Duration = Duration::from_secs(5);

pub struct Linger<T> {
    inner: T,
    stop: Shutdown,
    /// Set once the write side is shut.
    lingering: Option<Lingering>,
}

/// A lingering close under way.
struct Lingering {
    /// When it ends at the latest.
    until: Instant,
    /// Reset by each byte the client sends.
    quiet: Pin<Box<Sleep>>,
    /// The node's stop, which ends it at once (the drain waits for no client's bytes).
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<T> Linger<T> {
    pub fn new(inner: T, stop: Shutdown) -> Self {
        Linger {
            inner,
            stop,
            lingering: None,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Linger<T> {
    /// Read and drop what the client sends: ready at its end (or an error), after [`QUIET`]
    /// without a byte, or at [`MAX`].
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(Lingering {
            until,
            quiet,
            stopping,
        }) = &mut self.lingering
        else {
            return Poll::Ready(());
        };
        if stopping.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let mut scratch = [0u8; 8192];
        for _ in 0..16 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    let now = Instant::now();
                    if now >= *until {
                        return Poll::Ready(());
                    }
                    quiet.as_mut().reset((now + QUIET).min(*until));
                }
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return quiet.as_mut().poll(cx),
            }
        }
        // A client that keeps sending: let other tasks run, then read on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Linger<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Linger<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Shut the write side, then linger (unless the node is stopping).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.lingering.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            if this.stop.is_stopping() {
                return Poll::Ready(Ok(()));
            }
            this.lingering = Some(Lingering {
                until: Instant::now() + MAX,
                quiet: Box::pin(tokio::time::sleep(QUIET)),
                stopping: this.stop.stopped(),
            });
        }
        this.poll_drain(cx).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// After the shutdown the peer reads the end, and what it still sends is taken (no reset);
    /// the close waits for the peer's end.
    #[tokio::test]
    async fn what_the_client_still_sends_is_read_until_its_end() {
        let (_trigger, stop) = crate::shutdown::channel();
        let (server, mut client) = tokio::io::duplex(1024);
        let mut server = Linger::new(server, stop);
        server.write_all(b"answer").await.unwrap();
        let closing = tokio::spawn(async move { server.shutdown().await });
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
        client.write_all(&[b' '; 64 * 1024]).await.unwrap();
        assert!(!closing.is_finished());
        drop(client);
        closing.await.unwrap().unwrap();
    }

    /// A lingering close under way ends when the node stops, though the client still sends.
    #[tokio::test]
    async fn the_stop_ends_a_lingering_close() {
        let (trigger, stop) = crate::shutdown::channel();
        let (server, mut client) = tokio::io::duplex(1024);
        let mut server = Linger::new(server, stop);
        let closing = tokio::spawn(async move { server.shutdown().await });
        let mut end = Vec::new();
        client.read_to_end(&mut end).await.unwrap();
        for _ in 0..5 {
            client.write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            !closing.is_finished(),
            "still lingering while the client sends"
        );
        let stopped = Instant::now();
        trigger.fire();
        closing.await.unwrap().unwrap();
        assert!(stopped.elapsed() < Duration::from_millis(100));
    }

    /// A client that sends nothing more is given up after the quiet time; none at shutdown.
    #[tokio::test]
    async fn a_quiet_client_is_not_waited_for() {
        let (trigger, stop) = crate::shutdown::channel();
        let (server, _client) = tokio::io::duplex(1024);
        let started = Instant::now();
        Linger::new(server, stop.clone()).shutdown().await.unwrap();
        assert!((QUIET..MAX).contains(&started.elapsed()));
        trigger.fire();
        let (server, _client) = tokio::io::duplex(1024);
        let started = Instant::now();
        Linger::new(server, stop).shutdown().await.unwrap();
        assert!(started.elapsed() < QUIET);
    }
}
