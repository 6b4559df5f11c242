//! An HTTPS connection is closed once it has had no request in progress for `--idle-timeout`:
//! hyper closes an HTTP/1 connection waiting that long for a head itself, but keeps an HTTP/2
//! one (its pings only prove the client is there) for as long as the client does. A request
//! is in progress from when hyper hands it over ([`Tracked`]) until its answer's body is
//! dropped (sent, or cut off), so an open event stream keeps its connection. One timer per
//! connection, none per request. [`drive`] serves the connection and closes it gracefully
//! (HTTP/2: `GOAWAY`) when idle or at shutdown.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::routes::body::Response;
use crate::shutdown::Shutdown;

/// How long an idle connection closed gracefully may take to go before it is dropped (HTTP/2
/// waits for the client's answer to a ping before its last `GOAWAY`), once nothing is in
/// progress on it.
const GRACE: Duration = Duration::from_secs(5);

/// One connection's requests in progress, and when the last of them ended.
#[derive(Clone)]
pub struct Activity(Arc<Inner>);

struct Inner {
    /// When the connection began: the clock the stamps count from.
    start: Instant,
    /// Requests handed over whose answers are not done.
    busy: AtomicUsize,
    /// Milliseconds after `start` at which the connection last became idle.
    idle_since: AtomicU64,
}

/// A request in progress; dropping it (with its answer's body) ends it.
struct InProgress(Activity);

impl Activity {
    pub fn new() -> Self {
        Activity(Arc::new(Inner {
            start: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        }))
    }

    fn begin(&self) -> InProgress {
        self.0.busy.fetch_add(1, Ordering::SeqCst);
        InProgress(self.clone())
    }

    fn busy(&self) -> bool {
        self.0.busy.load(Ordering::SeqCst) > 0
    }

    /// When the connection has been idle for `timeout`; `None` while a request is in progress.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        // `busy` first: a request that ended stamped `idle_since` before it left `busy`.
        if self.busy() {
            return None;
        }
        let since = Duration::from_millis(self.0.idle_since.load(Ordering::SeqCst));
        Some(self.0.start + since + timeout)
    }

    /// Resolves once no request has been in progress for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let deadline = self.idle_deadline(timeout);
            if deadline.is_some_and(|at| at <= Instant::now()) {
                return;
            }
            // Busy: look again a timeout later (a request that ends restarts the wait then).
            tokio::time::sleep_until(deadline.unwrap_or_else(|| Instant::now() + timeout)).await;
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let inner = &self.0 .0;
        let now = inner.start.elapsed().as_millis() as u64;
        inner.idle_since.fetch_max(now, Ordering::SeqCst);
        inner.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// hyper's service on an HTTPS connection: a request is in progress from when hyper hands it
/// over (before the service is first polled) until its answer's body is dropped.
#[derive(Clone)]
pub struct Tracked<S> {
    service: S,
    activity: Activity,
}

impl<S> Tracked<S> {
    pub fn new(service: S, activity: Activity) -> Self {
        Tracked { service, activity }
    }
}

impl<S> hyper::service::Service<http::Request<Incoming>> for Tracked<S>
where
    S: tower::Service<http::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let in_progress = self.activity.begin();
        let answer = self.service.clone().oneshot(request);
        Box::pin(async move {
            let response = answer.await?;
            // The guard lives in the body, and goes with it.
            Ok(response.map(|body| {
                Guarded {
                    body,
                    _in_progress: in_progress,
                }
                .boxed_unsync()
            }))
        })
    }
}

/// An answer's body holding its request's [`InProgress`]: the body as it is (its size
/// too, so a known length is sent as `Content-Length`, not chunked).
struct Guarded {
    body: crate::routes::body::Body,
    _in_progress: InProgress,
}

impl Body for Guarded {
    type Data = <crate::routes::body::Body as Body>::Data;
    type Error = <crate::routes::body::Body as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serve `conn` to its end, or until `aborted`. It is closed gracefully at shutdown, or once
/// nothing has been in progress on it for `idle_timeout`; an idle one still open [`GRACE`]
/// after that, with nothing in progress, is dropped.
pub async fn drive<C>(
    conn: C,
    activity: &Activity,
    idle_timeout: Duration,
    shutdown: &Shutdown,
    aborted: impl Future<Output = ()>,
) where
    C: GracefulConnection,
    C::Error: Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut aborted = std::pin::pin!(aborted);
    let mut closing = false;
    let mut dropping: Option<Instant> = None;
    loop {
        let drop_at = dropping.unwrap_or_else(Instant::now);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = aborted.as_mut() => {
                tracing::debug!("connection closed: a stream's backlog overflowed");
                return;
            }
            () = shutdown.wait(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = activity.idle_for(idle_timeout), if !closing => {
                tracing::debug!("closing an idle connection");
                conn.as_mut().graceful_shutdown();
                closing = true;
                dropping = Some(Instant::now() + GRACE);
            }
            () = tokio::time::sleep_until(drop_at), if dropping.is_some() => {
                // A request the client sent before it saw `GOAWAY` is still answered.
                if !activity.busy() {
                    tracing::debug!("idle connection dropped: the client did not close it");
                    return;
                }
                dropping = Some(Instant::now() + GRACE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The idle clock keeps milliseconds: a wait may end up to 1 ms short of `timeout`.
    const TICK: Duration = Duration::from_millis(2);

    /// A connection with nothing in progress is idle `timeout` after it began.
    #[tokio::test]
    async fn idle_from_the_start() {
        let timeout = Duration::from_millis(100);
        let activity = Activity::new();
        let started = Instant::now();
        activity.idle_for(timeout).await;
        assert!(
            started.elapsed() + TICK >= timeout,
            "{:?}",
            started.elapsed()
        );
    }

    /// A request in progress holds idleness off; it counts from the end of the request.
    #[tokio::test]
    async fn idle_after_the_last_request_ends() {
        let timeout = Duration::from_millis(100);
        let activity = Activity::new();
        let request = activity.begin();
        let idle = activity.clone();
        let waiting = tokio::spawn(async move { idle.idle_for(timeout).await });
        tokio::time::sleep(timeout * 3).await;
        assert!(
            !waiting.is_finished(),
            "idle while a request was in progress"
        );
        let ended = Instant::now();
        drop(request);
        tokio::time::timeout(timeout * 20, waiting)
            .await
            .expect("idle after the request ended")
            .unwrap();
        assert!(ended.elapsed() + TICK >= timeout, "{:?}", ended.elapsed());
    }
}
