//! `Abort`: what drops the carrier of a stream held by hyper when its backlog overflows (its
//! HTTP/2 stream's task, or its HTTPS/1.1 connection), and the task-local through which the
//! `/events` route finds the HTTP/2 stream it runs in.

use std::sync::Arc;

tokio::task_local! {
    /// The HTTP/2 stream whose task this is: `server::connection` runs each one in its scope.
    static HTTP2_STREAM: Abort;
}

/// Drops what carries a stream over hyper. A backlog that overflows ends a stream after what
/// is queued, but over HTTP/2 a client that stops granting flow-control window never takes
/// it: hyper, waiting for window, does not poll the body again. So the HTTP/2 stream's task is
/// dropped, which resets that stream alone (`RST_STREAM` needs no window; the connection's
/// other streams go on); over HTTPS/1.1, the connection is closed.
#[derive(Clone, Default)]
pub struct Abort(Arc<tokio::sync::Notify>);

impl Abort {
    pub fn abort(&self) {
        self.0.notify_one();
    }

    /// Until `abort` was called.
    pub async fn aborted(&self) {
        self.0.notified().await
    }

    /// The abort of the HTTP/2 stream this task carries, if it is one.
    pub fn current_http2_stream() -> Option<Abort> {
        HTTP2_STREAM.try_with(Abort::clone).ok()
    }

    /// Run an HTTP/2 stream's task (`fut`): in the scope of its own abort, and dropped once
    /// that is called.
    pub async fn carry_http2_stream<F: std::future::Future>(fut: F) {
        let abort = Abort::default();
        let aborted = abort.clone();
        HTTP2_STREAM
            .scope(abort, async move {
                tokio::select! {
                    _ = fut => {}
                    () = aborted.aborted() => {}
                }
            })
            .await
    }
}
