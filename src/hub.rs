//! The Hub: this node's live streams, by user. It routes a committed change to the streams of
//! one user (one map lookup, then a non-blocking `try_send` of shared bytes per stream), ends
//! streams that are replaced or revoked, and reports presence. It never awaits: waiting
//! happens in each stream, so a slow client can only lose its own stream, never stall others.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::model::PresenceEntry;
use crate::model::{rfc3339, Change, Epoch};
use crate::sse::frame;

/// Signals queued per stream. Beyond this backlog the stream is closed; the client resumes
/// with `Last-Event-ID` and loses nothing.
pub const STREAM_BACKLOG: usize = 256;

/// A committed change, encoded once, as every stream of the user receives it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The change log it belongs to; a stream on another epoch resets (the log restarted).
    pub epoch: Epoch,
    pub seq: u64,
    pub frame: Bytes,
    /// Commit time in Unix milliseconds, for the publish-to-delivery latency.
    pub at_ms: u64,
}

impl Delivery {
    pub fn new(change: &Change) -> Self {
        Delivery {
            epoch: change.epoch,
            seq: change.seq,
            frame: frame::change(change),
            at_ms: change.at_ms,
        }
    }
}

/// Why the hub ended a stream; the stream writes it as its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Another stream of the same session (and tab) opened.
    Replaced,
    /// The session was ended (logout).
    Revoked,
}

#[derive(Debug, Clone)]
pub enum Signal {
    Change(Delivery),
    /// The broker may have missed changes (reconnect): fetch from the store after the last seq.
    CatchUp,
    End(EndReason),
}

struct Subscriber {
    id: u64,
    /// The session's public id; `None` for a stream without a session (it stands alone).
    session: Option<Arc<str>>,
    tab: Option<Arc<str>>,
    since: SystemTime,
    tx: mpsc::Sender<Signal>,
}

impl Subscriber {
    /// Whether this stream is the one (session, tab) unit; a stream without a session is
    /// never the same unit as another.
    fn same_unit(&self, session: Option<&str>, tab: Option<&str>) -> bool {
        session.is_some() && self.session.as_deref() == session && self.tab.as_deref() == tab
    }
}

/// What registering a stream gives it.
pub struct Registration {
    pub id: u64,
    pub rx: mpsc::Receiver<Signal>,
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    users: DashMap<String, Vec<Subscriber>>,
    next_id: AtomicU64,
    node: String,
    metrics: Metrics,
}

impl Hub {
    pub fn new(node: String, metrics: Metrics) -> Self {
        Hub {
            inner: Arc::new(Inner {
                users: DashMap::new(),
                next_id: AtomicU64::new(1),
                node,
                metrics,
            }),
        }
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The cluster-wide key of a local stream id.
    pub fn stream_key(&self, id: u64) -> String {
        format!("{}.{}", self.inner.node, id)
    }

    /// Add a stream for `user`; ends this node's other streams of the same (session, tab).
    /// `None` when the user already has `max` other streams here.
    pub fn register(
        &self,
        user: &str,
        session: Option<&str>,
        tab: Option<&str>,
        max: usize,
    ) -> Option<Registration> {
        let mut subs = self.inner.users.entry(user.to_owned()).or_default();
        if subs.iter().filter(|s| !s.same_unit(session, tab)).count() >= max {
            drop(subs);
            self.inner.users.remove_if(user, |_, subs| subs.is_empty());
            return None;
        }
        let (tx, rx) = mpsc::channel(STREAM_BACKLOG);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        end_matching(
            &mut subs,
            |s| s.same_unit(session, tab),
            EndReason::Replaced,
            &self.inner.metrics,
        );
        subs.push(Subscriber {
            id,
            session: session.map(Into::into),
            tab: tab.map(Into::into),
            since: SystemTime::now(),
            tx,
        });
        self.inner.metrics.streams_open.inc();
        Some(Registration { id, rx })
    }

    /// Remove a stream (it ended). Returns true when the user has no stream left here.
    pub fn remove(&self, user: &str, id: u64) -> bool {
        let mut last = false;
        let mut removed = false;
        self.inner.users.remove_if_mut(user, |_, subs| {
            if let Some(pos) = subs.iter().position(|s| s.id == id) {
                subs.swap_remove(pos);
                removed = true;
            }
            last = subs.is_empty();
            last
        });
        if removed {
            self.inner.metrics.streams_open.dec();
        }
        last || !self.inner.users.contains_key(user)
    }

    /// Queue a committed change on every stream of `user` here. A full queue closes that stream.
    pub fn dispatch(&self, user: &str, delivery: &Delivery) {
        let Some(mut subs) = self.inner.users.get_mut(user) else {
            return;
        };
        let metrics = &self.inner.metrics;
        subs.retain(|s| match s.tx.try_send(Signal::Change(delivery.clone())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(user, session = ?s.session, "stream backlog full; closing it");
                metrics.streams_open.dec();
                metrics.streams_overflowed.inc();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics.streams_open.dec();
                false
            }
        });
    }

    /// End every stream of a session (logout).
    pub fn end_session(&self, user: &str, session: &str) {
        if let Some(mut subs) = self.inner.users.get_mut(user) {
            end_matching(
                &mut subs,
                |s| s.session.as_deref() == Some(session),
                EndReason::Revoked,
                &self.inner.metrics,
            );
        }
    }

    /// End this node's streams of (session, tab): another node opened one.
    pub fn end_replaced(&self, user: &str, session: &str, tab: Option<&str>) {
        if let Some(mut subs) = self.inner.users.get_mut(user) {
            end_matching(
                &mut subs,
                |s| s.same_unit(Some(session), tab),
                EndReason::Replaced,
                &self.inner.metrics,
            );
        }
    }

    /// Ask every stream to fetch what the broker may have missed.
    pub fn catch_up_all(&self) {
        for subs in self.inner.users.iter() {
            for s in subs.iter() {
                let _ = s.tx.try_send(Signal::CatchUp);
            }
        }
    }

    /// Ask every stream of `user` to fetch what the broker may have missed (its channel was
    /// subscribed again after Redis dropped it).
    pub fn catch_up(&self, user: &str) {
        if let Some(subs) = self.inner.users.get(user) {
            for s in subs.iter() {
                let _ = s.tx.try_send(Signal::CatchUp);
            }
        }
    }

    /// Streams of `user` open on this node.
    pub fn count(&self, user: &str) -> usize {
        self.inner.users.get(user).map_or(0, |s| s.len())
    }

    /// This node's streams of `user`, as presence entries.
    pub fn presence(&self, user: &str) -> Vec<PresenceEntry> {
        self.inner.users.get(user).map_or_else(Vec::new, |subs| {
            subs.iter()
                .map(|s| PresenceEntry {
                    stream: self.stream_key(s.id),
                    session: s.session.as_deref().map(str::to_owned),
                    node: self.inner.node.clone(),
                    since: rfc3339(s.since),
                })
                .collect()
        })
    }
}

/// Send `reason` to and drop every subscriber matching `pred`; dropping the sender makes
/// the stream end after the queued signals.
fn end_matching(
    subs: &mut Vec<Subscriber>,
    pred: impl Fn(&Subscriber) -> bool,
    reason: EndReason,
    metrics: &Metrics,
) {
    subs.retain(|s| {
        if !pred(s) {
            return true;
        }
        let _ = s.tx.try_send(Signal::End(reason));
        metrics.streams_open.dec();
        false
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeKind;

    fn hub() -> Hub {
        Hub::new("n1".into(), Metrics::default())
    }

    fn change(seq: u64) -> Delivery {
        Delivery::new(&Change {
            epoch: Epoch::parse("3f9a0c12d4e1").unwrap(),
            seq,
            kind: ChangeKind::Read,
            data: "{}".into(),
            at_ms: 0,
        })
    }

    /// A second stream of the same session ends the first with `Replaced`.
    #[tokio::test]
    async fn second_stream_replaces_first() {
        let hub = hub();
        let mut a = hub.register("alice", Some("s1"), None, 64).unwrap();
        let _b = hub.register("alice", Some("s1"), None, 64).unwrap();
        assert!(matches!(
            a.rx.recv().await,
            Some(Signal::End(EndReason::Replaced))
        ));
        assert!(a.rx.recv().await.is_none());
        assert_eq!(hub.count("alice"), 1);
    }

    /// Streams of other tabs of the same session are kept.
    #[tokio::test]
    async fn tabs_are_separate_units() {
        let hub = hub();
        let _a = hub.register("alice", Some("s1"), Some("t1"), 64).unwrap();
        let _b = hub.register("alice", Some("s1"), Some("t2"), 64).unwrap();
        assert_eq!(hub.count("alice"), 2);
    }

    /// A change reaches every stream of its user and no one else's.
    #[tokio::test]
    async fn dispatch_reaches_only_that_user() {
        let hub = hub();
        let mut a = hub.register("alice", Some("s1"), None, 64).unwrap();
        let mut b = hub.register("bob", Some("s2"), None, 64).unwrap();
        hub.dispatch("alice", &change(1));
        assert!(matches!(a.rx.recv().await, Some(Signal::Change(d)) if d.seq == 1));
        assert!(b.rx.try_recv().is_err());
    }

    /// A stream that stops reading is dropped once its backlog is full.
    #[tokio::test]
    async fn full_backlog_closes_stream() {
        let hub = hub();
        let mut a = hub.register("alice", Some("s1"), None, 64).unwrap();
        for seq in 0..=STREAM_BACKLOG as u64 {
            hub.dispatch("alice", &change(seq));
        }
        assert_eq!(hub.count("alice"), 0);
        let mut n = 0;
        while a.rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, STREAM_BACKLOG);
    }

    /// Beyond the per-user limit, a new stream is refused, but a replacing one is not.
    #[tokio::test]
    async fn limit_counts_other_units() {
        let hub = hub();
        let _a = hub.register("alice", Some("s1"), None, 1).unwrap();
        assert!(hub.register("alice", Some("s2"), None, 1).is_none());
        assert!(hub.register("alice", Some("s1"), None, 1).is_some());
    }

    /// Streams without a session never replace each other.
    #[tokio::test]
    async fn sessionless_streams_stand_alone() {
        let hub = hub();
        let _a = hub.register("alice", None, None, 64).unwrap();
        let _b = hub.register("alice", None, None, 64).unwrap();
        assert_eq!(hub.count("alice"), 2);
    }

    /// Removing the last stream reports the user gone from this node.
    #[tokio::test]
    async fn remove_reports_last() {
        let hub = hub();
        let a = hub.register("alice", Some("s1"), Some("t1"), 64).unwrap();
        let b = hub.register("alice", Some("s1"), Some("t2"), 64).unwrap();
        assert!(!hub.remove("alice", a.id));
        assert!(hub.remove("alice", b.id));
    }
}
