//! An operator's live tail of one user's changes (`GET /admin/tail?user=`): from the hub, the
//! same frames every stream of the user gets, with pings. It is no stream of the user: no
//! session, no presence, no replay and no catch-up (what the broker misses during a Redis
//! outage is not shown). It ends at shutdown, at the service token's expiry (`revoked`), or
//! when the operator stops reading (backlog bound). Like a stream, it never blocks the hub:
//! the hub only queues bytes here, and the response body does the waiting.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::time::Instant;

use super::frame;
use super::output::Output;
use super::stream::{expiry, tick, Ticked, MAX_BACKLOG_BYTES};
use super::wake::Wake;
use crate::error::Result;
use crate::hub::{Delivery, EndReason, Sink};
use crate::state::AppState;

pub struct Tail {
    state: AppState,
    user: String,
    id: u64,
    inner: Mutex<Inner>,
    /// Wakes the response body: bytes to write, or the end.
    wake: Wake,
}

struct Inner {
    out: Output,
    /// False once ended: the body writes what is queued, then finishes.
    open: bool,
    /// When the tail last wrote anything: pings go only to a tail quiet for a heartbeat less a
    /// tick (`Config::ping_after`).
    quiet_since: Instant,
    /// The service token's expiry (plus leeway).
    expires: Instant,
}

impl Tail {
    /// Watch `user` (subscribing this node to the user's channel), then queue `ready` with
    /// `{"user", "node"}`: from that frame on, every change of the user is shown. `ends_ms` is
    /// when the service token ends, Unix ms (`--jwt-leeway` included).
    pub async fn open(state: &AppState, user: &str, ends_ms: u64) -> Result<TailHandle> {
        let now = Instant::now();
        let hub = &state.hub;
        let tail = Arc::new(Tail {
            state: state.clone(),
            user: user.to_owned(),
            id: hub.next_id(),
            inner: Mutex::new(Inner {
                out: Output::body(),
                open: true,
                quiet_since: now,
                expires: expiry(ends_ms, now),
            }),
            wake: Wake::default(),
        });
        // From here on, dropping the handle undoes the registration.
        hub.add_tail(user, tail.id, tail.clone());
        let handle = TailHandle(tail);
        if state.shutdown.is_stopping() {
            handle.0.end(EndReason::Shutdown);
        }
        state.broker.subscribe(user).await?;
        let data = serde_json::json!({"user": user, "node": hub.node()});
        let ready = frame::event(None, "ready", &data.to_string());
        handle.0.lock().send(ready);
        handle.0.wake.wake();
        Ok(handle)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn send(&mut self, bytes: Bytes) {
        if self.open {
            self.quiet_since = Instant::now();
            self.out.send(bytes);
        }
    }

    fn end(&mut self, last: Option<Bytes>) {
        if let Some(last) = last {
            self.send(last);
        }
        self.open = false;
    }
}

impl Ticked for Inner {
    fn clock(&self) -> (Instant, Instant, bool) {
        (self.expires, self.quiet_since, self.out.is_backed_up())
    }
    fn send(&mut self, bytes: Bytes) {
        Inner::send(self, bytes)
    }
    fn end(&mut self, last: Option<Bytes>) {
        Inner::end(self, last)
    }
}

impl Sink for Tail {
    fn deliver(&self, d: &Delivery) -> bool {
        let mut g = self.lock();
        g.send(d.frame.clone());
        if g.open && g.out.backlog() > MAX_BACKLOG_BYTES {
            tracing::debug!(user = %self.user, "admin tail backlog full (the operator stopped reading); ending it");
            g.end(None);
        }
        let open = g.open;
        drop(g);
        self.wake.wake();
        open
    }

    /// Only shutdown ends a tail from the hub (it has no session to replace or revoke): no
    /// last event.
    fn end(&self, _reason: EndReason) {
        self.lock().end(None);
        self.wake.wake();
    }

    /// A tail shows live changes only: nothing to fetch.
    fn catch_up(&self) {}

    fn tick(&self, now: Instant) -> Option<Instant> {
        let g = self.lock();
        if !g.open {
            return None;
        }
        tick(g, &self.wake, now, self.state.config.ping_after())
    }
}

/// The response body's hold on a tail: dropping it (the operator went, the tail ended) takes
/// the tail out of the hub and, when nothing else of the user is here, the broker.
pub struct TailHandle(Arc<Tail>);

impl TailHandle {
    /// The next bytes to write, or `None` when the tail is over.
    pub async fn next(&self) -> Option<Bytes> {
        loop {
            {
                let mut g = self.0.lock();
                if let Some(bytes) = g.out.pull() {
                    return Some(bytes);
                }
                if !g.open {
                    return None;
                }
            }
            self.0.wake.woken().await;
        }
    }
}

impl Drop for TailHandle {
    fn drop(&mut self) {
        let t = &self.0;
        t.lock().open = false;
        if t.state.hub.remove_tail(&t.user, t.id) {
            t.state.broker.unsubscribe(&t.user);
        }
    }
}
