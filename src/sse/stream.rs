//! One SSE stream: sends `ready`, replays after Last-Event-ID, then forwards live changes and
//! pings until the hub, the token expiry or shutdown ends it. Never blocks the hub: waiting
//! happens here. Rule for every edit: subscribe (hub + broker) *before* reading the store, and
//! skip live changes at or below the last seq written; that ordering makes replay gap-free
//! and duplicate-free. Seqs compare only within one epoch: a Last-Event-ID of another epoch
//! (another user's, a lost log's, or not an id at all) gets `reset`, and a live change of
//! another epoch makes the stream ask the store where the log stands.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::frame;
use crate::error::Result;
use crate::hub::{Delivery, EndReason, Signal};
use crate::model::PresenceEntry;
use crate::model::{now_ms, now_secs, Epoch, EventId};
use crate::state::AppState;
use crate::store::{Head, Replay};

/// Range of the reconnect delay each stream suggests in its `retry:` line, in milliseconds.
/// Each stream draws its own, so the clients of a node that shuts down (or of a network
/// blip) come back spread over a second instead of all at once.
pub const RETRY_MS: std::ops::Range<u64> = 1500..2500;
/// Longest a stream runs before it ends at its expiry, in seconds (about 100 years): a token
/// that "never expires" gets a deadline `Instant` can represent.
const MAX_STREAM_SECS: u64 = 100 * 365 * 24 * 3600;

/// Who the stream belongs to.
pub struct Owner {
    pub user: String,
    /// The session's public id; `None` for a Bearer token without `sid`.
    pub session: Option<String>,
    pub tab: Option<String>,
    /// Token or session expiry, Unix seconds.
    pub exp: u64,
}

pub struct Stream {
    state: AppState,
    user: String,
    id: u64,
    rx: mpsc::Receiver<Signal>,
    /// The position of the last change written (or skipped as already seen by the client).
    last: EventId,
    /// Frames ready to write, in order.
    pending: VecDeque<Bytes>,
    /// One timer per stream: the next ping or the expiry, whichever is first.
    timer: Pin<Box<Sleep>>,
    expires: Instant,
    done: bool,
}

impl Stream {
    /// Register with the hub and broker, then build the opening frames: `retry:`, `ready`, and
    /// the replay (or `reset`) when `resume` carries a Last-Event-ID. `None` when the user
    /// already has `--max-streams-per-user` streams here.
    pub async fn open(
        state: &AppState,
        owner: Owner,
        resume: Option<&str>,
    ) -> Result<Option<Stream>> {
        // Everything that could fail happens before the hub registration; after it, dropping
        // `stream` undoes the registration.
        let now = Instant::now();
        let left = owner
            .exp
            .saturating_add(state.config.keys.leeway.as_secs())
            .saturating_sub(now_secs());
        let expires = now
            .checked_add(Duration::from_secs(left.min(MAX_STREAM_SECS)))
            .unwrap_or(now);
        let next_ping = now.checked_add(state.config.heartbeat).unwrap_or(expires);
        let hub = &state.hub;
        let Some(reg) = hub.register(
            &owner.user,
            owner.session.as_deref(),
            owner.tab.as_deref(),
            state.config.max_streams_per_user,
        ) else {
            return Ok(None);
        };
        let mut stream = Stream {
            state: state.clone(),
            user: owner.user.clone(),
            id: reg.id,
            rx: reg.rx,
            // Set from the head or the resumed id below, before any change is read.
            last: EventId {
                epoch: Epoch::random(),
                seq: 0,
            },
            pending: VecDeque::new(),
            timer: Box::pin(tokio::time::sleep_until(next_ping.min(expires))),
            expires,
            done: false,
        };
        state.broker.subscribe(&owner.user).await?;
        let key = hub.stream_key(reg.id);
        let presence = PresenceEntry {
            stream: key,
            session: owner.session.clone(),
            node: hub.node().to_owned(),
            since: crate::model::rfc3339(std::time::SystemTime::now()),
        };
        // After the subscription, these three need not wait for each other.
        let announce = async {
            match &owner.session {
                Some(session) => {
                    let open = crate::broker::Message::Open {
                        node: hub.node().to_owned(),
                        session: session.clone(),
                        tab: owner.tab.clone(),
                    };
                    state.broker.announce(&owner.user, &open).await
                }
                None => Ok(()),
            }
        };
        let (recorded, announced, head) = tokio::join!(
            state.store.add_presence(&owner.user, &presence),
            announce,
            state.store.head(&owner.user),
        );
        if let Err(e) = recorded {
            tracing::debug!(error = %e, "presence not recorded");
        }
        announced?;
        let head = head?;
        let ready = |id: EventId| {
            let data = serde_json::json!({
                "user": owner.user, "session": owner.session, "unread_count": head.unread_count,
            });
            // `retry:` shares the first block with `ready`, so even naive parsers see both first.
            let event = frame::event(Some(id), "ready", &data.to_string());
            let retry = rand::random_range(RETRY_MS);
            Bytes::from([frame::retry(retry).as_bytes(), &event].concat())
        };
        match resume.map(EventId::parse) {
            None => {
                stream.pending.push_back(ready(head.id()));
                stream.last = head.id();
            }
            // The store resets an id of another epoch (another user's log, or a lost one).
            Some(Some(after)) => match state.store.replay(&owner.user, after).await? {
                Replay::Changes(changes) => {
                    stream.pending.push_back(ready(after));
                    stream.last = after;
                    for c in &changes {
                        stream.push_change(&Delivery::new(c), false);
                    }
                }
                Replay::Reset => {
                    stream.pending.push_back(ready(head.id()));
                    stream.reset(head);
                }
            },
            // Not an event id (a legacy plain number, garbage, non-ASCII): never replay from it.
            Some(None) => {
                stream.pending.push_back(ready(head.id()));
                stream.reset(head);
            }
        }
        Ok(Some(stream))
    }

    /// The client's position is unknown here: it must refetch. Carries on from `head`.
    fn reset(&mut self, head: Head) {
        let data = serde_json::json!({"unread_count": head.unread_count}).to_string();
        self.pending
            .push_back(frame::event(Some(head.id()), "reset", &data));
        self.last = head.id();
    }

    /// Queue a change unless already written. Only `live` deliveries (straight from a commit)
    /// count in the publish-to-delivery latency: a replay's age is the client's absence.
    fn push_change(&mut self, d: &Delivery, live: bool) {
        if d.epoch != self.last.epoch || d.seq <= self.last.seq {
            return;
        }
        self.pending.push_back(d.frame.clone());
        self.last.seq = d.seq;
        let metrics = &self.state.metrics;
        metrics.events_delivered.inc();
        if live && d.at_ms > 0 {
            metrics
                .delivery_latency
                .observe(now_ms().saturating_sub(d.at_ms) as f64 / 1000.0);
        }
    }

    /// Fetch from the store what came after `last` (the broker lost or reordered something).
    async fn catch_up(&mut self) {
        match self.state.store.replay(&self.user, self.last).await {
            Ok(Replay::Changes(changes)) => {
                for c in &changes {
                    self.push_change(&Delivery::new(c), false);
                }
            }
            Ok(Replay::Reset) => {
                if let Ok(head) = self.state.store.head(&self.user).await {
                    self.reset(head);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, user = %self.user, "catch-up failed; will retry on next change")
            }
        }
    }

    /// A change of another epoch means the log restarted (the catch-up resets) or is a late
    /// one of the log this stream already left (the catch-up finds nothing; it is skipped).
    async fn on_change(&mut self, d: Delivery) {
        if d.epoch != self.last.epoch || d.seq > self.last.seq + 1 {
            self.catch_up().await;
        }
        self.push_change(&d, true);
    }

    /// The next bytes to write, or `None` when the stream is over.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.pending.pop_front() {
                return Some(bytes);
            }
            if self.done {
                return None;
            }
            let shutdown = self.state.shutdown.clone();
            tokio::select! {
                biased;
                _ = shutdown.wait() => self.done = true,
                signal = self.rx.recv() => match signal {
                    // The hub dropped us: our backlog was full. The client resumes by id.
                    None => self.done = true,
                    Some(Signal::Change(d)) => self.on_change(d).await,
                    Some(Signal::CatchUp) => self.catch_up().await,
                    Some(Signal::End(reason)) => {
                        self.pending.push_back(match reason {
                            EndReason::Replaced => frame::event(None, "replaced", "{}"),
                            EndReason::Revoked => frame::event(None, "revoked", r#"{"reason":"logout"}"#),
                        });
                        self.done = true;
                    }
                },
                _ = self.timer.as_mut() => {
                    let now = Instant::now();
                    if now >= self.expires {
                        self.pending.push_back(frame::event(None, "revoked", r#"{"reason":"expired"}"#));
                        self.done = true;
                    } else {
                        self.pending.push_back(Bytes::from_static(frame::PING));
                        let next_ping = now
                            .checked_add(self.state.config.heartbeat)
                            .unwrap_or(self.expires);
                        self.timer.as_mut().reset(next_ping.min(self.expires));
                    }
                }
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let state = &self.state;
        if state.hub.remove(&self.user, self.id) {
            state.broker.unsubscribe(&self.user);
        }
        // The memory store reads presence from the hub; Redis holds an entry to delete.
        let runtime = tokio::runtime::Handle::try_current();
        if let (true, Ok(runtime)) = (state.store.keeps_presence(), runtime) {
            let (store, user, key) = (
                state.store.clone(),
                self.user.clone(),
                state.hub.stream_key(self.id),
            );
            runtime.spawn(async move {
                let _ = store.remove_presence(&user, &key).await;
            });
        }
    }
}
