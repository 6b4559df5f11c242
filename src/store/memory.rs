//! Embedded store: trays, change logs, sessions and groups in process memory, for one node
//! with zero set-up. Each user's tray sits behind its own `std::sync::Mutex`: sections are short
//! and never await, and committing a change dispatches it to the hub under that lock, which
//! keeps every stream's view in `seq` order. Each tray draws a random epoch when it is created,
//! so the ids of a previous run of the process reset instead of replaying. A tray item is the
//! publish's shared [`Template`] (one `Arc` for every recipient) and its read time: storing a
//! notification for one more user costs an id, a refcount and the change's JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use dashmap::DashMap;

use super::{
    Filter, Head, ListQuery, Page, Preferences, Published, Recipient, Replay, ReplayWindow,
    SessionRecord, TrayCounts, IDEMPOTENCY_TTL_MS, LOG_CAPACITY, MAX_SESSIONS_PER_USER,
};
use crate::error::Result;
use crate::hub::{Delivery, Hub};
use crate::model::{
    now_ms, rfc3339, status_data, Change, ChangeKind, Counts, Epoch, EventId, Mark, Marked,
    Notification, NotificationId, PresenceEntry, Target, Template,
};

#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    trays: DashMap<String, Arc<Mutex<Tray>>>,
    sessions: DashMap<String, SessionRecord>,
    /// Each user's session ids, oldest first (for the per-user cap).
    user_sessions: DashMap<String, VecDeque<String>>,
    groups: DashMap<String, BTreeSet<String>>,
    /// Each user's preferences (kept apart from the tray, which retention may empty).
    preferences: DashMap<String, Preferences>,
    hub: Hub,
    max_per_user: usize,
}

struct Tray {
    /// Notifications by id; ids sort by creation time, so the last entry is the newest.
    items: BTreeMap<NotificationId, Item>,
    unread: BTreeSet<NotificationId>,
    /// Not seen yet (a subset of `unread`: reading sees).
    unseen: BTreeSet<NotificationId>,
    /// This change log's epoch, drawn when the tray is created.
    epoch: Epoch,
    seq: u64,
    log: VecDeque<Change>,
    /// Idempotency key → (notification id, expiry in Unix ms).
    idempotency: HashMap<Arc<str>, (NotificationId, u64)>,
}

/// One notification in a tray: what its publish shared with every recipient, and when this
/// user read and saw it.
struct Item {
    template: Arc<Template>,
    read_at: Option<String>,
    seen_at: Option<String>,
}

impl Item {
    fn notification(&self, id: &NotificationId, user: &str) -> Notification {
        self.template.notification(
            id.as_str(),
            user,
            self.read_at.as_deref(),
            self.seen_at.as_deref(),
        )
    }
}

impl Tray {
    fn new() -> Self {
        Tray {
            items: BTreeMap::new(),
            unread: BTreeSet::new(),
            unseen: BTreeSet::new(),
            epoch: Epoch::random(),
            seq: 0,
            log: VecDeque::new(),
            idempotency: HashMap::new(),
        }
    }

    /// Number the change, keep it for replay and hand it to this node's streams.
    fn commit(&mut self, user: &str, hub: &Hub, kind: ChangeKind, data: String, at_ms: u64) {
        self.seq += 1;
        let change = Change {
            epoch: self.epoch,
            seq: self.seq,
            kind,
            data,
            at_ms,
        };
        hub.dispatch(user, &Delivery::new(&change));
        self.log.push_back(change);
        while self.log.len() > LOG_CAPACITY {
            self.log.pop_front();
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            unread: self.unread.len() as u64,
            unseen: self.unseen.len() as u64,
        }
    }

    fn remove(&mut self, id: &NotificationId) -> bool {
        self.unread.remove(id);
        self.unseen.remove(id);
        self.items.remove(id).is_some()
    }

    /// Store one recipient's notification and commit its change, unless `key` (shared by the
    /// publish's recipients) already stored one here within [`IDEMPOTENCY_TTL_MS`], or the
    /// user `muted` its category.
    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        template: &Arc<Template>,
        to: Recipient<'_>,
        key: Option<&Arc<str>>,
        muted: bool,
        max: usize,
        hub: &Hub,
        now: u64,
    ) -> Published {
        if let Some(key) = key {
            if let Some(&(id, exp)) = self.idempotency.get(key) {
                if exp > now {
                    return Published::earlier(id);
                }
            }
        }
        if muted {
            return Published::suppressed(to.id);
        }
        if let Some(key) = key {
            if self.idempotency.len() >= 64 {
                self.idempotency.retain(|_, (_, exp)| *exp > now);
            }
            self.idempotency
                .insert(key.clone(), (to.id, now + IDEMPOTENCY_TTL_MS));
        }
        let item = Item {
            template: template.clone(),
            read_at: None,
            seen_at: None,
        };
        self.items.insert(to.id, item);
        self.unread.insert(to.id);
        self.unseen.insert(to.id);
        while self.items.len() > max {
            let Some((oldest, _)) = self.items.pop_first() else {
                break;
            };
            self.unread.remove(&oldest);
            self.unseen.remove(&oldest);
        }
        let data = self
            .counts()
            .append_to(&template.json(to.id.as_str(), to.user));
        self.commit(to.user, hub, ChangeKind::Notification, data, now);
        Published::stored(to.id)
    }
}

impl MemoryStore {
    pub fn new(hub: Hub, max_per_user: usize) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                trays: DashMap::new(),
                sessions: DashMap::new(),
                user_sessions: DashMap::new(),
                groups: DashMap::new(),
                preferences: DashMap::new(),
                hub,
                max_per_user,
            }),
        }
    }

    fn tray(&self, user: &str) -> Arc<Mutex<Tray>> {
        if let Some(t) = self.inner.trays.get(user) {
            return t.clone();
        }
        self.inner
            .trays
            .entry(user.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Tray::new())))
            .clone()
    }

    /// Run `f` on the user's tray; the lock is released before returning.
    fn with_tray<T>(&self, user: &str, f: impl FnOnce(&mut Tray) -> T) -> T {
        let tray = self.tray(user);
        let mut guard = tray.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
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

    pub async fn delete_session(&self, user: &str, id: &str) -> Result<()> {
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
        key: Option<&str>,
    ) -> Vec<Result<Published>> {
        let hub = &self.inner.hub;
        let max = self.inner.max_per_user;
        let key: Option<Arc<str>> = key.map(Arc::from);
        let now = now_ms();
        let category = template.mutable_category();
        recipients
            .iter()
            .map(|&to| {
                let muted = category.is_some_and(|c| self.is_muted(to.user, c));
                Ok(self.with_tray(to.user, |tray| {
                    tray.publish(template, to, key.as_ref(), muted, max, hub, now)
                }))
            })
            .collect()
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
        self.inner
            .preferences
            .entry(user.to_owned())
            .or_default()
            .insert(category.to_owned(), muted);
        Ok(())
    }

    pub async fn list(&self, user: &str, q: &ListQuery) -> Result<Page> {
        Ok(self.with_tray(user, |tray| {
            let upper = match &q.before {
                Some(b) => std::ops::Bound::Excluded(b.as_str()),
                None => std::ops::Bound::Unbounded,
            };
            let range = (std::ops::Bound::Unbounded, upper);
            let take = q.limit + 1;
            let ids: Vec<&NotificationId> = match q.filter {
                Filter::All => {
                    let all = tray.items.range::<str, _>(range).rev().map(|(k, _)| k);
                    all.take(take).collect()
                }
                Filter::Unread | Filter::Unseen => {
                    let unseen = q.filter == Filter::Unseen;
                    let set = if unseen { &tray.unseen } else { &tray.unread };
                    set.range::<str, _>(range).rev().take(take).collect()
                }
            };
            let more = ids.len() > q.limit;
            let notifications: Vec<Notification> = ids
                .iter()
                .take(q.limit)
                .filter_map(|&id| Some(tray.items.get(id)?.notification(id, user)))
                .collect();
            let position = EventId {
                epoch: tray.epoch,
                seq: tray.seq,
            };
            Page::new(notifications, more, tray.counts(), position)
        }))
    }

    pub async fn counts(&self, user: &str) -> Result<TrayCounts> {
        Ok(self.with_tray(user, |tray| {
            let mut by_category: BTreeMap<String, Counts> = BTreeMap::new();
            for (id, item) in &tray.items {
                let Some(category) = item.template.category() else {
                    continue;
                };
                let c = by_category.entry(category.to_owned()).or_default();
                c.unread += u64::from(tray.unread.contains(id));
                c.unseen += u64::from(tray.unseen.contains(id));
            }
            TrayCounts {
                counts: tray.counts(),
                by_category,
                position: EventId {
                    epoch: tray.epoch,
                    seq: tray.seq,
                },
            }
        }))
    }

    pub async fn get(&self, user: &str, id: &str) -> Result<Option<Notification>> {
        Ok(self.with_tray(user, |tray| {
            let (id, item) = tray.items.get_key_value(id)?;
            Some(item.notification(id, user))
        }))
    }

    pub async fn mark(&self, user: &str, target: &Target, mark: Mark) -> Result<Marked> {
        let hub = &self.inner.hub;
        Ok(self.with_tray(user, |tray| {
            // The named ids that exist (a repeated one counts each time, as `found` says).
            let ids: Vec<NotificationId> = match target {
                Target::Ids(ids) => ids
                    .iter()
                    .filter_map(|id| tray.items.get_key_value(id.as_str()).map(|(k, _)| *k))
                    .collect(),
                Target::All if mark == Mark::Seen => tray.unseen.iter().copied().collect(),
                Target::All => tray.items.keys().copied().collect(),
            };
            let now = rfc3339(SystemTime::now());
            let mut marked = Marked::default();
            for id in ids {
                let Some(item) = tray.items.get_mut(&id) else {
                    continue;
                };
                marked.found += 1;
                let changed = match mark {
                    Mark::Read if item.read_at.is_none() => {
                        item.read_at = Some(now.clone());
                        // Reading sees.
                        item.seen_at.get_or_insert_with(|| now.clone());
                        tray.unseen.remove(&id);
                        tray.unread.remove(&id)
                    }
                    Mark::Seen if item.seen_at.is_none() => {
                        item.seen_at = Some(now.clone());
                        tray.unseen.remove(&id)
                    }
                    Mark::Unread if item.read_at.is_some() => {
                        item.read_at = None;
                        tray.unread.insert(id)
                    }
                    Mark::Deleted => tray.remove(&id),
                    _ => false,
                };
                if changed {
                    marked.changed.push(id.to_string());
                }
            }
            if !marked.changed.is_empty() {
                let data = status_data(&marked.changed, tray.counts());
                tray.commit(user, hub, mark.kind(), data, now_ms());
            }
            marked
        }))
    }

    pub async fn purge_before(&self, cutoff: &str) -> Result<usize> {
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
                let ids = tray
                    .items
                    .range::<str, _>(below)
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
        Ok(removed)
    }

    /// One node: always its turn.
    pub async fn claim_cleaner(&self, _node: &str, _ttl: std::time::Duration) -> Result<bool> {
        Ok(true)
    }

    pub async fn head(&self, user: &str) -> Result<Head> {
        Ok(self.with_tray(user, |tray| Head {
            epoch: tray.epoch,
            seq: tray.seq,
            unread_count: tray.unread.len() as u64,
            unseen_count: tray.unseen.len() as u64,
        }))
    }

    pub async fn replay(&self, user: &str, after: EventId) -> Result<Replay> {
        Ok(self.with_tray(user, |tray| {
            if after.epoch != tray.epoch {
                return Replay::Reset;
            }
            let after = after.seq;
            match super::replay_window(after, tray.seq, tray.log.front().map(|c| c.seq)) {
                ReplayWindow::Nothing => Replay::Changes(Vec::new()),
                ReplayWindow::Reset => Replay::Reset,
                ReplayWindow::From(from) => {
                    Replay::Changes(tray.log.iter().filter(|c| c.seq >= from).cloned().collect())
                }
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

    pub async fn add_presence(&self, _user: &str, _entry: &PresenceEntry) -> Result<()> {
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::model::{new_ids, NotificationInput};

    fn store(max: usize) -> MemoryStore {
        MemoryStore::new(Hub::new("n".into(), Metrics::default()), max)
    }

    async fn add(s: &MemoryStore, user: &str, key: Option<&str>) -> Published {
        let input: NotificationInput =
            serde_json::from_value(serde_json::json!({"title": "t"})).unwrap();
        let template = Arc::new(Template::new(&input, SystemTime::now()).unwrap());
        let to = Recipient {
            user,
            id: new_ids(1).next().unwrap(),
        };
        let mut out = s.publish(&template, &[to], key).await;
        out.pop().unwrap().unwrap()
    }

    fn ids(page: &Page) -> Vec<String> {
        page.notifications.iter().map(|n| n.id.clone()).collect()
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
                        filter: Filter::All,
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
        for _ in 0..LOG_CAPACITY {
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
