//! The Hub: this node's live streams, by user. It routes a committed change to the streams of
//! one user (one map lookup, then each stream's non-blocking `Sink::deliver` of shared bytes),
//! ends streams that are replaced, revoked or shut down, ticks them for pings and expiry, and
//! reports presence. It never awaits: a stream that can't take more ends itself, so a slow
//! client can only lose its own stream, never stall others. Beside the streams it holds the
//! operators' tails (`/admin/tail`): they get the same changes, pings and shutdown, but are
//! no stream of the user (not in presence, `--max-streams-per-user` or `herald_streams_open`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::model::PresenceEntry;
use crate::model::{presence_since, Change, Epoch};
use crate::shutdown::Shutdown;
use crate::sse::frame;
use wheel::Wheel;

mod wheel;

/// Shards of the streams' map by user (and the memory store's trays): many, so two workers
/// fanning a group out at once (in the same member order) seldom wait on one shard's lock.
pub const SHARDS: usize = 256;

/// A committed change, encoded once, as every stream of the user receives it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The change log it belongs to; a stream on another epoch resets (the log restarted).
    pub epoch: Epoch,
    pub seq: u64,
    pub frame: Bytes,
    /// Commit time in Unix milliseconds, for the publish-to-delivery latency.
    pub at_ms: u64,
    /// [`Change::print`] (0: not taken), which tells a change logged at a position already
    /// delivered from the one delivered there.
    pub print: u64,
}

impl Delivery {
    /// A change of a log that may go back under its streams (Redis's).
    pub fn new(change: &Change) -> Self {
        Delivery {
            print: change.print(),
            ..Delivery::local(change)
        }
    }

    /// A change of a log that never goes back (the memory store's): no print taken.
    pub fn local(change: &Change) -> Self {
        Delivery {
            epoch: change.epoch,
            seq: change.seq,
            frame: frame::change(change),
            at_ms: change.at_ms,
            print: 0,
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
    /// The node is shutting down: the stream ends without an event; the client resumes.
    Shutdown,
}

/// What the hub holds of a stream. Every method returns at once: a stream that needs to
/// wait (a full socket, a catch-up from the store) does it in its own transport.
pub trait Sink: Send + Sync {
    /// Take a committed change; false when the stream is over (the hub then drops it).
    fn deliver(&self, delivery: &Delivery) -> bool;
    /// End the stream with `reason` as its last event.
    fn end(&self, reason: EndReason);
    /// The broker may have missed changes: fetch from the store after the last position.
    fn catch_up(&self);
    /// The node's ticker: ping a stream that has been quiet for a heartbeat less a tick
    /// (`Config::ping_after`: its pings are then a heartbeat apart), end it at expiry.
    /// Returns when it may next need a tick (`None`: it is over and needs none).
    fn tick(&self, now: Instant) -> Option<Instant>;
}

/// When a stream opened, as its presence entry orders it: the Unix µs, then the stream key
/// for a tie. Two streams of one unit opened at once on two nodes each hear of the other;
/// both compare the same way, so exactly one stays. (Microseconds: a stream opened on another
/// node within the same millisecond as this node's, but after it, still replaces it.)
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Opened {
    pub us: u64,
    pub stream: String,
}

struct Subscriber {
    id: u64,
    /// The session's public id; `None` for a stream without a session (it stands alone).
    session: Option<Arc<str>>,
    tab: Option<Arc<str>>,
    since: SystemTime,
    sink: Arc<dyn Sink>,
}

impl Subscriber {
    /// Whether this stream is the one (session, tab) unit; a stream without a session is
    /// never the same unit as another.
    fn same_unit(&self, session: Option<&str>, tab: Option<&str>) -> bool {
        session.is_some() && self.session.as_deref() == session && self.tab.as_deref() == tab
    }
}

/// What the hub holds of an operator's tail.
struct TailSink {
    id: u64,
    sink: Arc<dyn Sink>,
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    users: DashMap<String, Vec<Subscriber>>,
    /// Operators' tails by the user they watch.
    tails: DashMap<String, Vec<TailSink>>,
    /// Set by the first tail ever added here: until then a delivery skips the tails' map.
    tailed: AtomicBool,
    next_id: AtomicU64,
    /// Streams and tails by when they next need a tick.
    wheel: Wheel,
    node: String,
    /// This process's run id: random, so a node restarted under the same name is told apart.
    run: String,
    /// `<node> <run>`: who sent a stream control (`broker::Message`).
    sender: String,
    metrics: Metrics,
}

impl Hub {
    pub fn new(node: String, metrics: Metrics) -> Self {
        let run = format!("{:08x}", rand::random::<u32>());
        Hub {
            inner: Arc::new(Inner {
                users: DashMap::with_shard_amount(SHARDS),
                tails: DashMap::new(),
                tailed: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
                wheel: Wheel::default(),
                sender: format!("{node} {run}"),
                node,
                run,
                metrics,
            }),
        }
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// This process's run id (see `store::nodes`).
    pub fn run(&self) -> &str {
        &self.inner.run
    }

    /// This process as the sender of a stream control: `<node> <run>` (a node id has no
    /// space).
    pub fn sender(&self) -> &str {
        &self.inner.sender
    }

    /// The cluster-wide key of a local stream id: `<node>.<n><TAB><run>`.
    pub fn stream_key(&self, id: u64) -> String {
        format!("{}.{}\t{}", self.inner.node, id, self.inner.run)
    }

    /// A new stream id, unique on this node.
    pub fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Add stream `id` of `user`. False when the user already has `max` other streams here
    /// (those of its (session, tab) aside: the opening ends them once it is admitted, with
    /// [`Self::end_replaced`], so a refused one ends none).
    pub fn register(
        &self,
        user: &str,
        (session, tab): (Option<&str>, Option<&str>),
        max: usize,
        id: u64,
        since: SystemTime,
        sink: Arc<dyn Sink>,
    ) -> bool {
        let mut subs = self.inner.users.entry(user.to_owned()).or_default();
        if subs.iter().filter(|s| !s.same_unit(session, tab)).count() >= max {
            drop(subs);
            self.inner.users.remove_if(user, |_, subs| subs.is_empty());
            return false;
        }
        // Most users have one or two streams here: grow one at a time, not to four.
        subs.reserve_exact(1);
        let ticked = Arc::downgrade(&sink);
        subs.push(Subscriber {
            id,
            session: session.map(Into::into),
            tab: tab.map(Into::into),
            since,
            sink,
        });
        drop(subs);
        self.inner.wheel.add(ticked);
        self.inner.metrics.streams_open.inc();
        true
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

    /// Add tail `id` watching `user`'s changes (an operator's `/admin/tail`).
    pub fn add_tail(&self, user: &str, id: u64, sink: Arc<dyn Sink>) {
        self.inner.wheel.add(Arc::downgrade(&sink));
        self.inner
            .tails
            .entry(user.to_owned())
            .or_default()
            .push(TailSink { id, sink });
        self.inner.tailed.store(true, Ordering::Relaxed);
    }

    /// Remove a tail (it ended). Returns true when nothing of `user` is left here (no stream,
    /// no tail): the node may leave the user's channel.
    pub fn remove_tail(&self, user: &str, id: u64) -> bool {
        self.inner.tails.remove_if_mut(user, |_, tails| {
            tails.retain(|t| t.id != id);
            tails.is_empty()
        });
        self.count(user) == 0
    }

    /// Hand a committed change to every stream and tail of `user` here; a stream that is over
    /// (its backlog passed the bound, its socket failed) is dropped.
    pub fn dispatch(&self, user: &str, delivery: &Delivery) {
        if self.inner.tailed.load(Ordering::Relaxed) {
            if let Some(mut tails) = self.inner.tails.get_mut(user) {
                tails.retain(|t| t.sink.deliver(delivery));
            }
        }
        let Some(mut subs) = self.inner.users.get_mut(user) else {
            return;
        };
        let metrics = &self.inner.metrics;
        subs.retain(|s| {
            let kept = s.sink.deliver(delivery);
            if !kept {
                metrics.streams_open.dec();
            }
            kept
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

    /// End this node's streams of (session, tab) opened before `opened`, a stream of that
    /// unit on another node (one opened after it stays: the other node ends its own).
    pub fn end_replaced(&self, user: &str, session: &str, tab: Option<&str>, opened: &Opened) {
        if let Some(mut subs) = self.inner.users.get_mut(user) {
            end_matching(
                &mut subs,
                |s| s.same_unit(Some(session), tab) && self.opened(s.id, s.since) < *opened,
                EndReason::Replaced,
                &self.inner.metrics,
            );
        }
    }

    /// End one stream of `user` here: its opening found a newer one of its unit elsewhere.
    pub fn end_one(&self, user: &str, id: u64, reason: EndReason) {
        if let Some(mut subs) = self.inner.users.get_mut(user) {
            end_matching(&mut subs, |s| s.id == id, reason, &self.inner.metrics);
        }
    }

    /// A stream's place in the order of opening (see [`Opened`]).
    pub fn opened(&self, id: u64, since: SystemTime) -> Opened {
        let us = since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Opened {
            us,
            stream: self.stream_key(id),
        }
    }

    /// End every stream and tail here (shutdown): each ends without an event, the clients
    /// resume.
    pub fn end_all(&self, reason: EndReason) {
        self.inner.users.retain(|_, subs| {
            end_matching(subs, |_| true, reason, &self.inner.metrics);
            false
        });
        self.inner.tails.retain(|_, tails| {
            tails.iter().for_each(|t| t.sink.end(reason));
            false
        });
    }

    /// Ask every stream to fetch what the broker may have missed.
    pub fn catch_up_all(&self) {
        self.for_each(|s| s.catch_up());
    }

    /// Ask every stream of `user` to fetch what the broker may have missed (its channel was
    /// subscribed again after Redis dropped it).
    pub fn catch_up(&self, user: &str) {
        if let Some(subs) = self.inner.users.get(user) {
            subs.iter().for_each(|s| s.sink.catch_up());
        }
    }

    /// The node's ticker, for ticks `period` apart: the streams due by `now` (and the ones
    /// added since the last tick) ping when quiet and end at their expiry, then wait in the
    /// wheel until they next may need to.
    pub fn tick(&self, now: Instant, period: Duration) {
        let due = self.inner.wheel.due(now, period);
        let later = due
            .into_iter()
            .filter_map(|sink| {
                let next = sink.upgrade()?.tick(now)?;
                Some((sink, next))
            })
            .collect();
        self.inner.wheel.put_back(later, period);
    }

    /// Tick each `period` until shutdown: one task per node drives every stream's pings and
    /// expiry, so an idle stream carries no timer of its own.
    pub async fn run_ticker(self, period: Duration, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                now = ticks.tick() => self.tick(now, period),
                _ = shutdown.wait() => return,
            }
        }
    }

    fn for_each(&self, f: impl Fn(&dyn Sink)) {
        for subs in self.inner.users.iter() {
            subs.iter().for_each(|s| f(s.sink.as_ref()));
        }
        for tails in self.inner.tails.iter() {
            tails.iter().for_each(|t| f(t.sink.as_ref()));
        }
    }

    /// Streams and tails of `user` open on this node: while there are any, the node keeps
    /// the user's channel.
    pub fn count(&self, user: &str) -> usize {
        let streams = self.inner.users.get(user).map_or(0, |s| s.len());
        streams + self.inner.tails.get(user).map_or(0, |t| t.len())
    }

    /// Streams open on this node, all users (tails not counted).
    pub fn streams(&self) -> u64 {
        self.inner.metrics.streams_open.get().max(0) as u64
    }

    /// The users with a stream on this node.
    pub fn users(&self) -> Vec<String> {
        self.inner.users.iter().map(|e| e.key().clone()).collect()
    }

    /// Every stream of this node, as (user, presence entry).
    pub fn all_presence(&self) -> Vec<(String, PresenceEntry)> {
        let users = self.users().into_iter();
        let entries = users.flat_map(|user| {
            let entries = self.presence(&user);
            entries.into_iter().map(move |entry| (user.clone(), entry))
        });
        entries.collect()
    }

    /// This node's streams of `user`, as presence entries.
    pub fn presence(&self, user: &str) -> Vec<PresenceEntry> {
        self.inner.users.get(user).map_or_else(Vec::new, |subs| {
            subs.iter()
                .map(|s| PresenceEntry {
                    stream: self.stream_key(s.id),
                    session: s.session.as_deref().map(str::to_owned),
                    tab: s.tab.as_deref().map(str::to_owned),
                    node: self.inner.node.clone(),
                    since: presence_since(s.since),
                })
                .collect()
        })
    }
}

/// End with `reason` and drop every subscriber matching `pred`; each stream ends after what
/// it has queued.
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
        s.sink.end(reason);
        metrics.streams_open.dec();
        false
    });
}

/// A stream that takes everything and does nothing, for tests that only need one registered.
#[cfg(test)]
pub struct Idle;

#[cfg(test)]
impl Sink for Idle {
    fn deliver(&self, _: &Delivery) -> bool {
        true
    }
    fn end(&self, _: EndReason) {}
    fn catch_up(&self) {}
    fn tick(&self, _: Instant) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeKind;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    /// A sink that records what the hub asked of it; `full` makes it refuse deliveries.
    #[derive(Default)]
    struct Probe {
        got: Mutex<Vec<String>>,
        full: AtomicBool,
    }

    impl Probe {
        fn got(&self) -> Vec<String> {
            self.got.lock().unwrap().clone()
        }
        fn push(&self, what: String) {
            self.got.lock().unwrap().push(what);
        }
    }

    impl Sink for Probe {
        fn deliver(&self, d: &Delivery) -> bool {
            self.push(format!("change {}", d.seq));
            !self.full.load(Ordering::Relaxed)
        }
        fn end(&self, reason: EndReason) {
            self.push(format!("end {reason:?}"));
        }
        fn catch_up(&self) {
            self.push("catch-up".into());
        }
        /// Due again a second later.
        fn tick(&self, now: Instant) -> Option<Instant> {
            self.push("tick".into());
            Some(now + Duration::from_secs(1))
        }
    }

    const TICK: Duration = Duration::from_millis(250);

    fn hub() -> Hub {
        Hub::new("n1".into(), Metrics::default())
    }

    fn add(
        hub: &Hub,
        user: &str,
        unit: (Option<&str>, Option<&str>),
        max: usize,
    ) -> Option<(u64, Arc<Probe>)> {
        let probe = Arc::new(Probe::default());
        let id = hub.next_id();
        hub.register(user, unit, max, id, SystemTime::now(), probe.clone())
            .then_some((id, probe))
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

    /// A second stream of the same session ends the first with `Replaced` once its opening
    /// is admitted (`end_replaced`), not when it registers.
    #[test]
    fn second_stream_replaces_first() {
        let hub = hub();
        let (_, a) = add(&hub, "alice", (Some("s1"), None), 64).unwrap();
        let now = SystemTime::now();
        let id = hub.next_id();
        let b = Arc::new(Probe::default());
        assert!(hub.register("alice", (Some("s1"), None), 64, id, now, b.clone()));
        assert!(a.got().is_empty());
        hub.end_replaced("alice", "s1", None, &hub.opened(id, now));
        assert_eq!(a.got(), ["end Replaced"]);
        assert!(b.got().is_empty());
        assert_eq!(hub.count("alice"), 1);
    }

    /// Streams of other tabs of the same session are kept.
    #[test]
    fn tabs_are_separate_units() {
        let hub = hub();
        let _a = add(&hub, "alice", (Some("s1"), Some("t1")), 64).unwrap();
        let _b = add(&hub, "alice", (Some("s1"), Some("t2")), 64).unwrap();
        assert_eq!(hub.count("alice"), 2);
    }

    /// A change reaches every stream of its user and no one else's.
    #[test]
    fn dispatch_reaches_only_that_user() {
        let hub = hub();
        let (_, a) = add(&hub, "alice", (Some("s1"), None), 64).unwrap();
        let (_, b) = add(&hub, "bob", (Some("s2"), None), 64).unwrap();
        hub.dispatch("alice", &change(1));
        assert_eq!(a.got(), ["change 1"]);
        assert!(b.got().is_empty());
    }

    /// A stream that refuses a delivery (it is over) is dropped from the hub.
    #[test]
    fn a_refusing_stream_is_dropped() {
        let hub = hub();
        let (_, a) = add(&hub, "alice", (Some("s1"), None), 64).unwrap();
        a.full.store(true, Ordering::Relaxed);
        hub.dispatch("alice", &change(1));
        assert_eq!(hub.count("alice"), 0);
        hub.dispatch("alice", &change(2));
        assert_eq!(a.got(), ["change 1"]);
    }

    /// Beyond the per-user limit, a new stream is refused, but a replacing one is not.
    #[test]
    fn limit_counts_other_units() {
        let hub = hub();
        let _a = add(&hub, "alice", (Some("s1"), None), 1).unwrap();
        assert!(add(&hub, "alice", (Some("s2"), None), 1).is_none());
        assert!(add(&hub, "alice", (Some("s1"), None), 1).is_some());
    }

    /// Streams without a session never replace each other.
    #[test]
    fn sessionless_streams_stand_alone() {
        let hub = hub();
        let _a = add(&hub, "alice", (None, None), 64).unwrap();
        let _b = add(&hub, "alice", (None, None), 64).unwrap();
        assert_eq!(hub.count("alice"), 2);
    }

    /// Removing the last stream reports the user gone from this node.
    #[test]
    fn remove_reports_last() {
        let hub = hub();
        let (a, _) = add(&hub, "alice", (Some("s1"), Some("t1")), 64).unwrap();
        let (b, _) = add(&hub, "alice", (Some("s1"), Some("t2")), 64).unwrap();
        assert!(!hub.remove("alice", a));
        assert!(hub.remove("alice", b));
    }

    /// A tail gets the user's changes and pings, ends at shutdown, and is no stream: not in
    /// presence nor in the node's stream count, yet it keeps the user's channel wanted.
    #[test]
    fn a_tail_sees_changes_but_is_no_stream() {
        let hub = hub();
        let tail = Arc::new(Probe::default());
        let id = hub.next_id();
        hub.add_tail("alice", id, tail.clone());
        hub.dispatch("alice", &change(1));
        hub.dispatch("bob", &change(2));
        hub.tick(Instant::now(), TICK);
        assert!(hub.presence("alice").is_empty());
        assert_eq!((hub.streams(), hub.count("alice")), (0, 1));
        hub.end_all(EndReason::Shutdown);
        assert_eq!(tail.got(), ["change 1", "tick", "end Shutdown"]);
        assert!(hub.remove_tail("alice", id));
    }

    /// Removing a tail while the user still has a stream here keeps the channel.
    #[test]
    fn removing_a_tail_reports_streams_left() {
        let hub = hub();
        let _a = add(&hub, "alice", (None, None), 64).unwrap();
        let id = hub.next_id();
        hub.add_tail("alice", id, Arc::new(Probe::default()));
        assert!(!hub.remove_tail("alice", id));
        assert_eq!(hub.streams(), 1);
    }

    /// Ticks and catch-ups reach every stream; ending all empties the hub.
    #[test]
    fn tick_catch_up_and_end_all_reach_every_stream() {
        let hub = hub();
        let (_, a) = add(&hub, "alice", (None, None), 64).unwrap();
        let (_, b) = add(&hub, "bob", (None, None), 64).unwrap();
        hub.tick(Instant::now(), TICK);
        hub.catch_up_all();
        hub.end_all(EndReason::Shutdown);
        for probe in [a, b] {
            assert_eq!(probe.got(), ["tick", "catch-up", "end Shutdown"]);
        }
        assert_eq!(hub.count("alice") + hub.count("bob"), 0);
    }
}
