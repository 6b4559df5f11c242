//! When an HTTPS connection has had no request in progress for `--idle-timeout`: hyper closes
//! an HTTP/1 connection waiting that long for a head itself, but keeps an HTTP/2 one (its
//! pings only prove the client is there) for as long as the client does. A request is in
//! progress from when hyper hands it over until its answer's body is dropped (sent, or cut
//! off), so an open event stream keeps its connection. One timer per connection, not per
//! request.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::routes::body::Response;

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
pub struct InProgress(Activity);

impl Activity {
    pub fn new() -> Self {
        Activity(Arc::new(Inner {
            start: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        }))
    }

    /// A request was handed over.
    pub fn begin(&self) -> InProgress {
        self.0.busy.fetch_add(1, Ordering::SeqCst);
        InProgress(self.clone())
    }

    /// The answer, kept in progress until its body is dropped.
    pub fn answer(response: Response, request: InProgress) -> Response {
        response.map(|body| {
            body.map_frame(move |frame| {
                let _in_progress = &request;
                frame
            })
            .boxed_unsync()
        })
    }

    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        let since = Duration::from_millis(self.0.idle_since.load(Ordering::SeqCst));
        (self.0.busy.load(Ordering::SeqCst) == 0).then_some(self.0.start + since + timeout)
    }

    /// Resolves once no request has been in progress for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle counts from the end of the last request; a request in progress holds it off.
    #[tokio::test]
    async fn idle_after_the_last_request_ends() {
        let timeout = Duration::from_millis(200);
        let activity = Activity::new();
        let started = Instant::now();
        activity.idle_for(timeout).await;
        assert!(started.elapsed() >= timeout);

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
        waiting.await.unwrap();
        assert!(ended.elapsed() >= timeout, "{:?}", ended.elapsed());
    }
}
