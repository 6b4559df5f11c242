//! Embedded store: trays, change logs, sessions and groups in process memory, for one node
//! with zero set-up. Each user's tray sits behind its own `std::sync::Mutex`: sections are short
//! and never await, and committing a change dispatches it to the hub under that lock, which
//! keeps every stream's view in `seq` order. A user's epoch is a keyed hash of the user id
//! under a key drawn at start, so the ids of a previous run of the process reset instead of
//! replaying, and a user needs no tray to have one: reads (a stream's head, a list) of a user
//! with nothing stored create none. A tray item is the
//! publish's shared [`Template`] (one `Arc` for every recipient) and the user's state of it:
//! storing a notification for one more user costs an id, a refcount and its state, and its
//! change is logged in the same compact form (`change_log.rs`). A tray and its writes are in
//! `tray.rs`; this file holds the store's maps and its API.
//! Due times (delivery, snooze ends, expiry) are kept per tray and in a store-wide index of
//! the users with something due, which the due-time task walks (`crate::due`).

mod change_log;
mod due_index;
mod tray;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;

use super::{
    ActionOutcome, Due, Head, Idempotency, ListQuery, NodeInfo, Page, Preferences, Published,
    Recent, Recipient, Replay, ReplayWindow, SessionRecord, SessionState, Subscription, TrayCounts,
    MAX_SESSIONS_PER_USER, MAX_SUBSCRIPTIONS,
};
use crate::error::Result;
use crate::hub::Hub;
use crate::model::{
    id_ms, now_ms, too_many_preferences, Counts, Epoch, EventId, Mark, Marked, Notification,
    NotificationId, PresenceEntry, TakenAction, Target, Template, MAX_PREFERENCES,
};
use due_index::DueIndex;
use tray::{OnActive, Tray};

#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    trays: DashMap<String, Arc<Mutex<Tray>>>,
    /// The key of every user's epoch ([`MemoryStore::epoch`]), drawn at start.
    epochs: RandomState,
    sessions: DashMap<String, SessionRecord>,
    /// Each user's session ids, oldest first (for the per-user cap).
    user_sessions: DashMap<String, VecDeque<String>>,
    groups: DashMap<String, BTreeSet<String>>,
    /// Each user's preferences (kept apart from the tray, which retention may empty).
    preferences: DashMap<String, Preferences>,
    /// Each user's Web Push subscriptions, oldest first.
    subscriptions: DashMap<String, Vec<Subscription>>,
    /// Web Push endpoint → the user who subscribed it last (an endpoint is a browser's).
    push_owners: DashMap<String, String>,
    /// Web Push is on: notifications that become active escalate.
    push: bool,
    /// Users with something due, and when. Written under the user's tray lock (tray first,
    /// then this), so an entry is never older than the tray's state.
    due: Mutex<DueIndex>,
    hub: Hub,
    max_per_user: usize,
}

impl MemoryStore {
    pub fn new(hub: Hub, max_per_user: usize, push: bool) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                trays: DashMap::with_shard_amount(crate::hub::SHARDS),
                epochs: RandomState::new(),
                sessions: DashMap::new(),
                user_sessions: DashMap::new(),
                groups: DashMap::new(),
                preferences: DashMap::new(),
                due: Mutex::new(DueIndex::default()),
                subscriptions: DashMap::new(),
                push_owners: DashMap::new(),
                push,
                hub,
                max_per_user,
            }),
        }
    }

    /// The user's change-log epoch: a keyed hash of the user id under the key this process
    /// drew at start, so it is the same all the process's life, whether the user has a tray
    /// yet or not, and another in the next run.
    fn epoch(&self, user: &str) -> Epoch {
        Epoch::from_bits(self.inner.epochs.hash_one(user))
    }

    fn tray(&self, user: &str) -> Arc<Mutex<Tray>> {
        if let Some(t) = self.inner.trays.get(user) {
            return t.clone();
        }
        self.inner
            .trays
            .entry(user.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Tray::new(self.epoch(user)))))
            .clone()
    }

    /// Run `f` on the user's tray, created if need be; the lock is released before returning.
    fn with_tray<T>(&self, user: &str, f: impl FnOnce(&mut Tray) -> T) -> T {
        let tray = self.tray(user);
        let mut guard = tray.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Run `f` on the user's tray, or on an empty one when the user has none: reads create
    /// no tray (a stream of a user with nothing stored costs none).
    fn read_tray<T>(&self, user: &str, f: impl FnOnce(&Tray) -> T) -> T {
        let Some(tray) = self.inner.trays.get(user).map(|t| t.clone()) else {
            return f(&Tray::new(self.epoch(user)));
        };
        let guard = tray.lock().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    pub async fn ping(&self) -> Result<()> {
        Ok(())
    }

    pub async fn put_session(&self, id: &str, record: &SessionRecord) -> Result<Vec<String>> {
        let inner = &self.inner;
        // Sweep expired sessions now and then, not on every login.
        if inner.sessions.len() % 1024 == 1023 {
            inner.sessions.retain(|_, r| r.is_live());
            inner.user_sessions.retain(|_, ids| {
                ids.retain(|id| inner.sessions.contains_key(id));
                !ids.is_empty()
            });
        }
        inner.sessions.insert(id.to_owned(), record.clone());
        let mut ids = inner.user_sessions.entry(record.user.clone()).or_default();
        ids.retain(|id| inner.sessions.get(id).is_some_and(|r| r.is_live()));
        ids.push_back(id.to_owned());
        let excess = ids.len().saturating_sub(MAX_SESSIONS_PER_USER);
        let evicted: Vec<String> = ids.drain(..excess).collect();
        drop(ids);
        for old in &evicted {
            inner.sessions.remove(old);
        }
        Ok(evicted)
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        Ok(self
            .inner
            .sessions
            .get(id)
            .map(|r| r.clone())
            .filter(SessionRecord::is_live))
    }

    pub async fn sessions(&self, ids: &[&str]) -> Result<Vec<Option<SessionRecord>>> {
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            records.push(self.session(id).await?);
        }
        Ok(records)
    }

    /// Nothing is lost here: a session not held is ended.
    pub async fn session_state(&self, id: &str) -> Result<SessionState> {
        Ok(match self.session(id).await? {
            Some(_) => SessionState::Live,
            None => SessionState::Ended,
        })
    }

    pub async fn end_session(&self, user: &str, id: &str) -> Result<()> {
        self.inner.sessions.remove(id);
        self.inner.user_sessions.remove_if_mut(user, |_, ids| {
            ids.retain(|s| s != id);
            ids.is_empty()
        });
        Ok(())
    }

    /// Every recipient in turn, each under its own tray's lock; never awaits.
    pub async fn publish(
        &self,
        template: &Arc<Template>,
        recipients: &[Recipient<'_>],
        idempotency: Option<Idempotency<'_>>,
    ) -> Vec<Result<Published>> {
        let hub = &self.inner.hub;
        let max = self.inner.max_per_user;
        let key: Option<(Arc<str>, Option<u64>)> = idempotency.map(|i| (Arc::from(i.key), i.stamp));
        let now = now_ms();
        let category = template.mutable_category();
        let schedule = template.schedule();
        recipients
            .iter()
            .map(|&to| {
                let muted = category.is_some_and(|c| self.is_muted(to.user, c));
                Ok(self.with_tray(to.user, |tray| {
                    // Asked under the tray's lock: a first subscription made meanwhile either
                    // is seen here or takes the notification itself (`escalate_recent`).
                    let escalate = schedule.deliver_ms.is_none() && self.escalates(to.user);
                    let key = key.as_ref().map(|(key, stamp)| (key, *stamp));
                    let published = tray.publish(template, to, key, muted, max, hub, now);
                    if let (Some(at), true) = (schedule.first(), published.stored) {
                        self.hint(to.user, at);
                    }
                    if escalate && published.stored && tray.escalate(to.id, now, false) {
                        self.hint(to.user, now);
                    }
                    published
                }))
            })
            .collect()
    }

    /// Note that `user` has something due at `at` (called under the user's tray lock).
    fn hint(&self, user: &str, at: u64) {
        let mut due = self.inner.due.lock().unwrap_or_else(|e| e.into_inner());
        due.hint(user, at);
    }

    pub async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, u64)>> {
        let due = self.inner.due.lock().unwrap_or_else(|e| e.into_inner());
        Ok(due.due(now_ms, limit))
    }

    /// Nothing to do: handling a memory tray's due times cannot fail.
    pub async fn defer_due(&self, _user: &str, _at_ms: u64) -> Result<()> {
        Ok(())
    }

    pub async fn process_due(&self, user: &str, hint: u64) -> Result<Due> {
        let hub = &self.inner.hub;
        Ok(self.with_tray(user, |tray| {
            let on_active = self.on_active(user);
            let found = tray.process_due(user, hub, now_ms(), on_active);
            let mut due = self.inner.due.lock().unwrap_or_else(|e| e.into_inner());
            due.handled(user, hint, tray.next_due());
            found
        }))
    }

    /// Whether notifications of `user` that become active escalate to Web Push.
    fn escalates(&self, user: &str) -> bool {
        self.on_active(user) == OnActive::Escalate
    }

    /// What a notification of `user` that becomes active after it was made does about Web Push.
    fn on_active(&self, user: &str) -> OnActive {
        let subscribed = || (self.inner.subscriptions.get(user)).is_some_and(|s| !s.is_empty());
        match self.inner.push {
            false => OnActive::Nothing,
            true if subscribed() => OnActive::Escalate,
            true => OnActive::Note,
        }
    }

    pub async fn push_later(
        &self,
        user: &str,
        id: &str,
        lease: u64,
        at_ms: u64,
        send: bool,
    ) -> Result<()> {
        self.with_tray(user, |tray| {
            let Some((&id, _)) = tray.items.get_key_value(id) else {
                return;
            };
            if tray.push_later(id, lease, at_ms, send) {
                self.hint(user, at_ms);
            }
        });
        Ok(())
    }

    /// One process: its escalations stop with it, so there is no other node to hand one to.
    pub async fn push_handover(&self, _: &str, _: &str, _: u64, _: u64, _: u64) -> Result<()> {
        Ok(())
    }

    pub async fn extend_push_lease(
        &self,
        user: &str,
        id: &str,
        lease: u64,
        until_ms: u64,
    ) -> Result<bool> {
        Ok(self.with_tray(user, |tray| {
            let found = tray.items.get_key_value(id).map(|(&id, _)| id);
            found.is_some_and(|id| tray.extend_push(id, lease, until_ms))
        }))
    }

    pub async fn push_done(&self, user: &str, id: &str, lease: u64) -> Result<()> {
        self.with_tray(user, |tray| {
            if let Some((&id, _)) = tray.items.get_key_value(id) {
                tray.push_done(id, lease);
            }
        });
        Ok(())
    }

    /// One process: a sender renews its lease until it is done, and a crash loses the
    /// escalation with the rest, so no sender takes one over from another (nothing to keep).
    pub async fn push_sent(&self, _: &str, _: &str, _: u64, _: &str) -> Result<()> {
        Ok(())
    }

    pub async fn pushed_to(&self, user: &str, id: &str, lease: u64) -> Result<Option<Vec<String>>> {
        Ok(self
            .read_tray(user, |tray| tray.holds_push(id, lease))
            .then(Vec::new))
    }

    pub async fn add_subscription(
        &self,
        user: &str,
        sub: &Subscription,
        recent: Option<Recent>,
    ) -> Result<()> {
        let owners = &self.inner.push_owners;
        if let Some(previous) = owners.insert(sub.endpoint.clone(), user.to_owned()) {
            // Taken from the previous owner (the owners map decides: see `subscriptions`).
            if previous != user {
                self.drop_entry(&previous, &sub.endpoint);
            }
        }
        let first;
        let dropped: Vec<Subscription> = {
            let mut subs = self.inner.subscriptions.entry(user.to_owned()).or_default();
            first = subs.is_empty();
            subs.retain(|s| s.endpoint != sub.endpoint);
            subs.push(sub.clone());
            let excess = subs.len().saturating_sub(MAX_SUBSCRIPTIONS);
            subs.drain(..excess).collect()
        };
        for old in dropped {
            owners.remove_if(&old.endpoint, |_, owner| owner == user);
        }
        if let (true, true, Some(recent)) = (first, self.inner.push, recent) {
            if self.inner.trays.contains_key(user) {
                self.with_tray(user, |tray| {
                    if let Some(at) = tray.escalate_recent(recent) {
                        self.hint(user, at);
                    }
                });
            }
        }
        Ok(())
    }

    pub async fn remove_subscription(&self, user: &str, endpoint: &str) -> Result<bool> {
        let was = self.drop_entry(user, endpoint);
        (self.inner.push_owners).remove_if(endpoint, |_, owner| owner == user);
        Ok(was)
    }

    /// Take `endpoint` out of `user`'s subscriptions (not its owner); whether it was there.
    fn drop_entry(&self, user: &str, endpoint: &str) -> bool {
        let mut was = false;
        self.inner.subscriptions.remove_if_mut(user, |_, subs| {
            let before = subs.len();
            subs.retain(|s| s.endpoint != endpoint);
            was = subs.len() < before;
            subs.is_empty()
        });
        was
    }

    /// The user's subscriptions whose endpoint the user owns: one that another user took at
    /// the same moment as it was added or removed here stays in no one's list twice.
    pub async fn subscriptions(&self, user: &str) -> Result<Vec<Subscription>> {
        let owners = &self.inner.push_owners;
        let mut subs = (self.inner.subscriptions.get(user)).map_or_else(Vec::new, |s| s.clone());
        subs.retain(|s| owners.get(&s.endpoint).is_some_and(|owner| *owner == user));
        Ok(subs)
    }

    pub async fn claim_action(&self, user: &str, id: &str, _ttl: Duration) -> Result<bool> {
        Ok(self.with_tray(user, |tray| tray.claim_action(id)))
    }

    pub async fn release_action(&self, user: &str, id: &str) -> Result<()> {
        self.with_tray(user, |tray| tray.release_action(id));
        Ok(())
    }

    pub async fn take_action(
        &self,
        user: &str,
        id: &str,
        action: &TakenAction,
    ) -> Result<ActionOutcome> {
        let hub = &self.inner.hub;
        Ok(self.with_tray(user, |tray| tray.take_action(user, hub, id, action)))
    }

    fn is_muted(&self, user: &str, category: &str) -> bool {
        self.inner
            .preferences
            .get(user)
            .is_some_and(|p| p.get(category) == Some(&true))
    }

    pub async fn preferences(&self, user: &str) -> Result<Preferences> {
        Ok(self
            .inner
            .preferences
            .get(user)
            .map(|p| p.clone())
            .unwrap_or_default())
    }

    pub async fn set_muted(&self, user: &str, category: &str, muted: bool) -> Result<()> {
        let mut preferences = self.inner.preferences.entry(user.to_owned()).or_default();
        if !preferences.contains_key(category) && preferences.len() >= MAX_PREFERENCES {
            return Err(too_many_preferences());
        }
        preferences.insert(category.to_owned(), muted);
        Ok(())
    }

    pub async fn list(&self, user: &str, q: &ListQuery) -> Result<Page> {
        Ok(self.read_tray(user, |tray| {
            let upper = match &q.before {
                Some(b) => std::ops::Bound::Excluded(b.as_str()),
                None => std::ops::Bound::Unbounded,
            };
            let range = (std::ops::Bound::Unbounded, upper);
            let take = q.limit + 1;
            let admitted = |id: &NotificationId| {
                let item = &tray.items[id];
                !item.held && q.admits(item.state(), item.template.category())
            };
            // The active unread (unseen) set is the page's set when only active ones list.
            let set = match (q.active_only(), q.unseen, q.unread) {
                (true, true, _) => Some(&tray.unseen),
                (true, false, true) => Some(&tray.unread),
                _ => None,
            };
            let ids: Vec<&NotificationId> = match set {
                Some(set) => {
                    let ids = set.range::<str, _>(range).rev();
                    ids.filter(|id| admitted(id)).take(take).collect()
                }
                None => {
                    let ids = tray.items.range::<str, _>(range).rev().map(|(k, _)| k);
                    ids.filter(|id| admitted(id)).take(take).collect()
                }
            };
            let more = ids.len() > q.limit;
            let notifications: Vec<Notification> = ids
                .iter()
                .take(q.limit)
                .map(|&id| tray.items[id].notification(id, user))
                .collect();
            Page::new(notifications, more, tray.counts(), tray.position())
        }))
    }

    /// Counts per category: every category with an active notification (its counts may be 0).
    pub async fn counts(&self, user: &str) -> Result<TrayCounts> {
        Ok(self.read_tray(user, |tray| {
            let mut by_category: BTreeMap<String, Counts> = BTreeMap::new();
            for (id, item) in &tray.items {
                let Some(category) = item.template.category().filter(|_| item.is_active()) else {
                    continue;
                };
                let c = by_category.entry(category.to_owned()).or_default();
                c.unread += u64::from(tray.unread.contains(id));
                c.unseen += u64::from(tray.unseen.contains(id));
            }
            TrayCounts {
                counts: tray.counts(),
                by_category,
                position: tray.position(),
            }
        }))
    }

    pub async fn get(&self, user: &str, id: &str) -> Result<Option<Notification>> {
        Ok(self.read_tray(user, |tray| {
            let id = tray.delivered(id)?;
            Some(tray.items[&id].notification(&id, user))
        }))
    }

    pub async fn mark(&self, user: &str, target: &Target, mark: Mark) -> Result<Marked> {
        let hub = &self.inner.hub;
        Ok(self.with_tray(user, |tray| {
            let on_active = match mark {
                Mark::Unsnooze => self.on_active(user),
                _ => OnActive::Nothing,
            };
            let marked = tray.mark(user, hub, target, mark, on_active);
            match (mark, marked.changed.is_empty()) {
                (Mark::Snooze(at), false) => self.hint(user, at),
                (Mark::Unsnooze, false) if on_active == OnActive::Escalate => {
                    self.hint(user, now_ms())
                }
                _ => {}
            }
            marked
        }))
    }

    pub async fn purge_before(&self, cutoff: &str, log_before_ms: u64) -> Result<usize> {
        let cutoff_ms = id_ms(cutoff).unwrap_or(0);
        let old: Vec<(String, Vec<String>)> = self
            .inner
            .trays
            .iter()
            .map(|entry| {
                let tray = entry.value().lock().unwrap_or_else(|e| e.into_inner());
                let below = (
                    std::ops::Bound::Unbounded,
                    std::ops::Bound::Excluded(cutoff),
                );
                // A notification delivered later ages from its delivery.
                let ids = tray
                    .items
                    .range::<str, _>(below)
                    .filter(|(_, item)| {
                        let deliver = item.template.schedule().deliver_ms;
                        deliver.is_none_or(|at| at < cutoff_ms)
                    })
                    .map(|(id, _)| id.to_string())
                    .collect();
                (entry.key().clone(), ids)
            })
            .filter(|(_, ids): &(String, Vec<String>)| !ids.is_empty())
            .collect();
        let mut removed = 0;
        for (user, ids) in old {
            removed += self
                .mark(&user, &Target::Ids(ids), Mark::Deleted)
                .await?
                .changed
                .len();
        }
        for entry in self.inner.trays.iter() {
            let mut tray = entry.value().lock().unwrap_or_else(|e| e.into_inner());
            tray.log.drop_before(log_before_ms);
        }
        Ok(removed)
    }

    /// One node: always its turn.
    pub async fn claim_cleaner(&self, _node: &str, _ttl: std::time::Duration) -> Result<bool> {
        Ok(true)
    }

    pub async fn head(&self, user: &str) -> Result<Head> {
        Ok(self.read_tray(user, |tray| Head {
            epoch: tray.epoch,
            seq: tray.seq,
            unread_count: tray.unread.len() as u64,
            unseen_count: tray.unseen.len() as u64,
        }))
    }

    pub async fn replay(&self, user: &str, after: EventId) -> Result<Replay> {
        Ok(self.read_tray(user, |tray| {
            if after.epoch != tray.epoch {
                return Replay::Reset;
            }
            let after = after.seq;
            match super::replay_window(after, tray.seq, tray.log.first_seq()) {
                ReplayWindow::Nothing => Replay::Changes(Vec::new()),
                ReplayWindow::Reset => Replay::Reset,
                ReplayWindow::From(from) => Replay::Changes(tray.log.since(from, tray.epoch, user)),
            }
        }))
    }

    pub async fn add_members(&self, group: &str, users: &[String]) -> Result<()> {
        self.inner
            .groups
            .entry(group.to_owned())
            .or_default()
            .extend(users.iter().cloned());
        Ok(())
    }

    pub async fn remove_member(&self, group: &str, user: &str) -> Result<bool> {
        let mut was = false;
        self.inner.groups.remove_if_mut(group, |_, members| {
            was = members.remove(user);
            members.is_empty()
        });
        Ok(was)
    }

    pub async fn members(&self, group: &str) -> Result<Vec<String>> {
        Ok(self
            .inner
            .groups
            .get(group)
            .map_or_else(Vec::new, |m| m.iter().cloned().collect()))
    }

    pub async fn add_presence(
        &self,
        _user: &str,
        _entry: &PresenceEntry,
    ) -> Result<Vec<PresenceEntry>> {
        Ok(Vec::new())
    }

    pub async fn remove_presence(&self, _user: &str, _stream: &str) -> Result<()> {
        Ok(())
    }

    pub async fn presence(&self, user: &str) -> Result<Vec<PresenceEntry>> {
        Ok(self.inner.hub.presence(user))
    }

    pub async fn retire(&self, _node: &str) -> Result<()> {
        Ok(())
    }

    /// This node alone, seen now.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let hub = &self.inner.hub;
        Ok(vec![NodeInfo {
            node: hub.node().to_owned(),
            streams: Some(hub.streams()),
            last_seen_ms: now_ms(),
            web_push: self.inner.push,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::model::{new_ids, NotificationInput};
    use std::time::SystemTime;

    fn store(max: usize) -> MemoryStore {
        MemoryStore::new(Hub::new("n".into(), Metrics::default()), max, false)
    }

    async fn add(s: &MemoryStore, user: &str, key: Option<&str>) -> Published {
        let input: NotificationInput =
            serde_json::from_value(serde_json::json!({"title": "t"})).unwrap();
        let template =
            Arc::new(Template::new(&input, Default::default(), SystemTime::now()).unwrap());
        let to = Recipient {
            user,
            id: new_ids(1).next().unwrap(),
        };
        let mut out = s.publish(&template, &[to], key.map(Idempotency::key)).await;
        out.pop().unwrap().unwrap()
    }

    fn ids(page: &Page) -> Vec<String> {
        page.notifications.iter().map(|n| n.id.clone()).collect()
    }

    /// An escalation taken again after its lease ran out (its sender died) is handed out with
    /// when it first came due in its stage: `--push-after` (a check) and the TTL (a push)
    /// count from then, not from the lapsed lease.
    #[tokio::test]
    async fn an_escalation_taken_again_keeps_when_it_came_due() {
        let s = MemoryStore::new(Hub::new("n".into(), Metrics::default()), 100, true);
        let id = add(&s, "a", None).await.id;
        let tray = s.tray("a");
        let mut tray = tray.lock().unwrap();
        let came = now_ms();
        assert!(tray.escalate(id, came, false));
        let first = tray.process_due("a", &s.inner.hub, came, OnActive::Nothing);
        assert_eq!(first.escalations[0].due_ms, came);
        let lapsed = came + crate::store::PUSH_LEASE_MS + 1;
        let again = tray.process_due("a", &s.inner.hub, lapsed, OnActive::Nothing);
        let due = |d: &Due| -> Vec<(bool, u64)> {
            d.escalations.iter().map(|e| (e.send, e.due_ms)).collect()
        };
        assert_eq!(due(&again), [(false, came)]);
        // the push (the TTL counts from its first try) likewise
        let tried = lapsed + 1;
        assert!(tray.push_later(id, again.escalations[0].lease, tried, true));
        let first = tray.process_due("a", &s.inner.hub, tried, OnActive::Nothing);
        assert_eq!(due(&first), [(true, tried)]);
        let lapsed = tried + crate::store::PUSH_LEASE_MS + 1;
        let again = tray.process_due("a", &s.inner.hub, lapsed, OnActive::Nothing);
        assert_eq!(due(&again), [(true, tried)]);
    }

    /// Reading a user's head, list or counts creates no tray; the tray the first change
    /// creates has the epoch the head gave, and another user's epoch is another.
    #[tokio::test]
    async fn reads_create_no_tray_and_the_epoch_holds() {
        let s = store(100);
        let head = s.head("a").await.unwrap();
        assert_eq!(head.seq, 0);
        s.list("a", &ListQuery::default()).await.unwrap();
        s.counts("a").await.unwrap();
        assert!(s.inner.trays.is_empty());
        add(&s, "a", None).await;
        let after = s.head("a").await.unwrap();
        assert_eq!((after.epoch, after.seq), (head.epoch, 1));
        assert_ne!(s.head("b").await.unwrap().epoch, head.epoch);
        assert_ne!(store(100).head("a").await.unwrap().epoch, head.epoch);
    }

    /// A fresh item keeps no state of its own; a mark that changes it gets one, and one that
    /// leaves it fresh again (or changes nothing) drops it.
    #[tokio::test]
    async fn only_a_touched_item_keeps_a_state() {
        let s = store(100);
        let id = add(&s, "a", None).await.id;
        let own = || {
            let tray = s.tray("a");
            let tray = tray.lock().unwrap();
            tray.items[&id].has_own_state()
        };
        let target = Target::Ids(vec![id.to_string()]);
        let mark = |m| s.mark("a", &target, m);
        assert!(!own());
        mark(Mark::Unarchived).await.unwrap();
        assert!(!own(), "a mark that changed nothing");
        mark(Mark::Archived).await.unwrap();
        assert!(own());
        mark(Mark::Unarchived).await.unwrap();
        assert!(!own(), "fresh again");
        mark(Mark::Read).await.unwrap();
        assert!(own());
        assert!(s
            .get("a", id.as_str())
            .await
            .unwrap()
            .unwrap()
            .state
            .read_at
            .is_some());
    }

    /// Pages walk the tray newest first without overlap or gap, even within one millisecond.
    #[tokio::test]
    async fn cursor_pages_cover_the_tray_once() {
        let s = store(100);
        let mut all = Vec::new();
        for _ in 0..7 {
            all.push(add(&s, "a", None).await.id.to_string());
        }
        all.reverse();
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = s
                .list(
                    "a",
                    &ListQuery {
                        limit: 3,
                        before: before.clone(),
                        ..ListQuery::default()
                    },
                )
                .await
                .unwrap();
            seen.extend(ids(&page));
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, all);
    }

    /// The same key for the same user stores once and returns the first id.
    #[tokio::test]
    async fn idempotency_key_stores_once_per_user() {
        let s = store(100);
        let first = add(&s, "a", Some("k")).await;
        let again = add(&s, "a", Some("k")).await;
        let other = add(&s, "b", Some("k")).await;
        assert!(first.stored && !again.stored && other.stored);
        assert_eq!(first.id, again.id);
        let head = s.head("a").await.unwrap();
        assert_eq!((head.seq, head.unread_count), (1, 1));
    }

    /// Replay returns exactly the changes after the given seq; a trimmed window resets.
    #[tokio::test]
    async fn replay_after_seq() {
        let s = store(10_000);
        for _ in 0..5 {
            add(&s, "a", None).await;
        }
        let epoch = s.head("a").await.unwrap().epoch;
        let at = |seq| EventId { epoch, seq };
        let Replay::Changes(changes) = s.replay("a", at(2)).await.unwrap() else {
            panic!("reset")
        };
        assert_eq!(
            changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        for _ in 0..crate::store::LOG_CAPACITY {
            add(&s, "a", None).await;
        }
        assert_eq!(s.replay("a", at(2)).await.unwrap(), Replay::Reset);
    }

    /// Each user's log has its own epoch: a position in another user's log resets.
    #[tokio::test]
    async fn another_users_position_resets() {
        let s = store(100);
        for _ in 0..3 {
            add(&s, "a", None).await;
            add(&s, "b", None).await;
        }
        let (a, b) = (s.head("a").await.unwrap(), s.head("b").await.unwrap());
        assert_ne!(a.epoch, b.epoch);
        let b_at_1 = EventId {
            epoch: b.epoch,
            seq: 1,
        };
        assert_eq!(s.replay("a", b_at_1).await.unwrap(), Replay::Reset);
        assert!(matches!(s.replay("b", b_at_1).await.unwrap(), Replay::Changes(c) if c.len() == 2));
    }

    /// Marking an already-read notification read changes nothing and commits no change.
    #[tokio::test]
    async fn unchanged_marks_commit_nothing() {
        let s = store(100);
        let id = add(&s, "a", None).await.id.to_string();
        let target = Target::Ids(vec![id.clone()]);
        assert_eq!(
            s.mark("a", &target, Mark::Read).await.unwrap().changed,
            vec![id.clone()]
        );
        let again = s.mark("a", &target, Mark::Read).await.unwrap();
        assert_eq!((again.found, again.changed.len()), (1, 0));
        assert_eq!(s.head("a").await.unwrap().seq, 2);
    }
}
