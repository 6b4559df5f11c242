//! `SendTimeout`: the accepted socket, failing the connection when one write stays pending
//! (the client does not read) longer than `--send-timeout`, like nginx's `send_timeout`
//! (once the node stops, [`STOPPING_SEND_TIMEOUT`]). The timers are armed only while a write
//! is pending and dropped as soon as it completes, so idle connections and quiet SSE streams
//! carry no timer at all. Reads pass through untouched.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::shutdown::{Shutdown, STOPPING_SEND_TIMEOUT};

pub struct SendTimeout<T> {
    inner: T,
    timeout: Duration,
    /// The node's stop: from then on a blocked write waits [`STOPPING_SEND_TIMEOUT`] at most.
    stop: Shutdown,
    /// Set while a write is pending.
    pending: Option<Pending>,
}

/// A blocked write's timers.
struct Pending {
    /// `timeout` after the write first blocked (sooner once the node stops).
    deadline: Pin<Box<Sleep>>,
    /// Until the node stops (then `None`: the deadline has been brought forward).
    stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<T> SendTimeout<T> {
    pub fn new(inner: T, timeout: Duration, stop: Shutdown) -> Self {
        SendTimeout {
            inner,
            timeout,
            stop,
            pending: None,
        }
    }

    /// Arm the timers when a write blocks, fail once the deadline passes, disarm when the
    /// write completes.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.pending = None;
            return poll;
        }
        let (timeout, stop) = (self.timeout, &self.stop);
        let pending = self.pending.get_or_insert_with(|| Pending {
            deadline: Box::pin(tokio::time::sleep(timeout)),
            stop: Some(stop.stopped()),
        });
        if let Some(stopping) = &mut pending.stop {
            if stopping.as_mut().poll(cx).is_ready() {
                pending.stop = None;
                let sooner = Instant::now() + STOPPING_SEND_TIMEOUT;
                if sooner < pending.deadline.deadline() {
                    pending.deadline.as_mut().reset(sooner);
                }
            }
        }
        match pending.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.pending = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "send timeout: the client stopped reading",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A write the peer never drains fails after the timeout instead of waiting forever.
    #[tokio::test]
    async fn stalled_write_times_out() {
        let (client, _server) = tokio::io::duplex(16);
        let (_trigger, stop) = crate::shutdown::channel();
        let mut io = SendTimeout::new(client, Duration::from_millis(50), stop);
        let started = std::time::Instant::now();
        let err = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(io.pending.is_none());
    }

    /// Writes that complete leave no timer behind.
    #[tokio::test]
    async fn completed_writes_disarm_the_timer() {
        let (client, _server) = tokio::io::duplex(4096);
        let (_trigger, stop) = crate::shutdown::channel();
        let mut io = SendTimeout::new(client, Duration::from_millis(50), stop);
        io.write_all(b"hello").await.unwrap();
        assert!(io.pending.is_none());
    }

    /// A write blocked when the node stops fails [`STOPPING_SEND_TIMEOUT`] later, not at its
    /// own (longer) timeout.
    #[tokio::test]
    async fn a_blocked_write_waits_less_once_the_node_stops() {
        let (client, _server) = tokio::io::duplex(16);
        let (trigger, stop) = crate::shutdown::channel();
        let mut io = SendTimeout::new(client, Duration::from_secs(30), stop);
        let write = tokio::spawn(async move { io.write_all(&[0u8; 1024]).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped = Instant::now();
        trigger.fire();
        let err = write.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = stopped.elapsed();
        assert!(waited >= STOPPING_SEND_TIMEOUT && waited < 3 * STOPPING_SEND_TIMEOUT);
    }
}
