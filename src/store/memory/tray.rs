//! A user's tray in the memory store: the items, the ordered sets that index them (unread,
//! unseen, due times), the collapse keys, the idempotency keys and the change log; and every
//! write to it, each committing its change (numbered, logged, dispatched to the hub) under the
//! tray's lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use super::change_log::{ChangeLog, Data};
use crate::hub::{Delivery, Hub};
use crate::model::{
    ms_to_rfc3339, now_ms, rfc3339, status_data, Change, ChangeKind, Counts, Epoch, EventId,
    ItemState, Mark, Marked, Notification, NotificationId, TakenAction, Target, Template,
};
use crate::store::{
    new_lease, same_publish, ActionOutcome, Due, Escalation, Published, Recent, Recipient,
    COLLAPSE_KEPT, IDEMPOTENCY_TTL_MS, PUSH_LEASE_MS,
};

pub(super) struct Tray {
    /// Notifications by id; ids sort by creation time, so the last entry is the newest.
    pub(super) items: BTreeMap<NotificationId, Item>,
    /// Active notifications not read (see [`Item::is_active`]).
    pub(super) unread: BTreeSet<NotificationId>,
    /// Active notifications not seen (a subset of `unread`: reading sees).
    pub(super) unseen: BTreeSet<NotificationId>,
    /// Due times, collapse and idempotency keys: only once the tray has one (see [`Extras`]).
    extras: Option<Box<Extras>>,
    /// This change log's epoch: the user's ([`super::MemoryStore`] derives it).
    pub(super) epoch: Epoch,
    pub(super) seq: u64,
    pub(super) log: ChangeLog,
}

/// What only some trays need, boxed apart so that the tray of a user who just holds a stream
/// (the tray gives the stream its log's epoch) stays small: 136 bytes instead of 296.
#[derive(Default)]
struct Extras {
    /// (wake time, id): deliveries and snooze ends to come.
    wake: BTreeSet<(u64, NotificationId)>,
    /// (expiry time, id).
    expire: BTreeSet<(u64, NotificationId)>,
    /// (due time, id): Web Push escalations.
    push: BTreeSet<(u64, NotificationId)>,
    /// Collapse key → the notifications in the tray that carry it, in the order they were
    /// published (or delivered): the newest [`COLLAPSE_KEPT`].
    collapse: HashMap<String, Vec<NotificationId>>,
    /// Idempotency key → the id it stored, until when (Unix ms), its stamp ([`crate::store::Idempotency`]).
    idempotency: HashMap<Arc<str>, (NotificationId, u64, Option<u64>)>,
    /// The notifications whose action is being sent to the upstream: a collapse passes them
    /// by (taking the action reads them), so the action is recorded on the notification the
    /// upstream was sent.
    acting: BTreeSet<NotificationId>,
    /// When a notification became active after it was made (delivered at its `deliver_at`, or
    /// its snooze ended) while the user had no subscription: a first one takes it
    /// ([`Tray::escalate_recent`]).
    activated: BTreeMap<NotificationId, u64>,
}

/// What a notification that becomes active after it was made does about Web Push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnActive {
    /// Web Push is off.
    Nothing,
    /// The user has no subscription: note when, for a first one ([`Tray::escalate_recent`]).
    Note,
    /// Escalate ([`Tray::escalate`]).
    Escalate,
}

/// The extras of a tray that has none.
static NO_EXTRAS: LazyLock<Extras> = LazyLock::new(Extras::default);

/// A fresh notification's state: what [`Item::state`] reads while the item has none of its own.
static FRESH_ITEM_STATE: LazyLock<ItemState> = LazyLock::new(ItemState::default);

/// One notification in a tray: what its publish shared with every recipient, and this user's
/// state of it.
pub(super) struct Item {
    pub(super) template: Arc<Template>,
    /// `None` while the state is a fresh one (nothing happened to the notification yet, as
    /// for most stored notifications): boxed apart, it costs 8 bytes instead of ~180.
    state: Option<Box<ItemState>>,
    /// Not delivered yet (`deliver_at` ahead).
    pub(super) held: bool,
    /// When it wakes (delivery or the end of a snooze), Unix ms.
    wake_ms: Option<u64>,
    /// Its Web Push escalation, while one is pending.
    push: Option<Escalating>,
}

/// A pending Web Push escalation: when it is due, whether as a push (else as the check), the
/// token of the sender that leased it (0 while none has), and when it first came due in that
/// stage (kept while leases of it run out: a check's activation, a push's first try).
#[derive(Debug, Clone, Copy)]
struct Escalating {
    at: u64,
    send: bool,
    lease: u64,
    since: u64,
}

impl Item {
    pub(super) fn state(&self) -> &ItemState {
        self.state.as_deref().unwrap_or(&FRESH_ITEM_STATE)
    }

    /// The state to change; call [`Item::settle`] after a change that may leave it fresh.
    fn state_mut(&mut self) -> &mut ItemState {
        self.state.get_or_insert_with(Box::default)
    }

    /// Whether the item keeps a state of its own (boxed), not the shared fresh one.
    #[cfg(test)]
    pub(super) fn has_own_state(&self) -> bool {
        self.state.is_some()
    }

    /// Drop the state's box once it is a fresh state again (a mark that changed nothing, an
    /// unarchive or a snooze's end of an untouched notification).
    fn settle(&mut self) {
        if self.state.as_deref().is_some_and(ItemState::is_fresh) {
            self.state = None;
        }
    }

    pub(super) fn notification(&self, id: &NotificationId, user: &str) -> Notification {
        self.template.notification(id.as_str(), user, self.state())
    }

    /// Delivered, not archived, not snoozed: listed by default and counted.
    pub(super) fn is_active(&self) -> bool {
        !self.held && self.state().archived_at.is_none() && self.state().snoozed_until.is_none()
    }

    fn expire_ms(&self) -> Option<u64> {
        self.template.schedule().expire_ms
    }
}

impl Tray {
    pub(super) fn new(epoch: Epoch) -> Self {
        Tray {
            items: BTreeMap::new(),
            unread: BTreeSet::new(),
            unseen: BTreeSet::new(),
            extras: None,
            epoch,
            seq: 0,
            log: ChangeLog::default(),
        }
    }

    fn extras(&self) -> &Extras {
        self.extras.as_deref().unwrap_or(&NO_EXTRAS)
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Number the change, keep it for replay and hand it to this node's streams.
    fn commit(&mut self, user: &str, hub: &Hub, kind: ChangeKind, data: String, at_ms: u64) {
        self.commit_data(user, hub, kind, Data::Json(data), at_ms);
    }

    /// [`Tray::commit`] of data the log keeps as given (a compact form renders once, here).
    fn commit_data(&mut self, user: &str, hub: &Hub, kind: ChangeKind, data: Data, at_ms: u64) {
        self.seq += 1;
        let (json, compact) = match data {
            Data::Json(json) => (json, None),
            compact => (compact.render(user), Some(compact)),
        };
        let change = Change {
            epoch: self.epoch,
            seq: self.seq,
            kind,
            data: json,
            at_ms,
        };
        hub.dispatch(user, &Delivery::local(&change));
        self.log.push(change, compact);
    }

    /// Commit the notification `id` whole, with the tray's counts beside its fields.
    fn commit_whole(&mut self, user: &str, hub: &Hub, kind: ChangeKind, id: NotificationId) {
        let Some(item) = self.items.get(&id) else {
            return;
        };
        let json = item.template.json(id.as_str(), user, item.state());
        let data = self.counts().append_to(&json);
        self.commit(user, hub, kind, data, now_ms());
    }

    pub(super) fn counts(&self) -> Counts {
        Counts {
            unread: self.unread.len() as u64,
            unseen: self.unseen.len() as u64,
        }
    }

    pub(super) fn position(&self) -> EventId {
        EventId {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// Keep the count sets in step with the item's state (the one rule for what counts).
    fn sync(&mut self, id: NotificationId) {
        let (unread, unseen) = match self.items.get(&id) {
            Some(item) if item.is_active() => (
                item.state().read_at.is_none(),
                item.state().seen_at.is_none(),
            ),
            _ => (false, false),
        };
        for (set, member) in [(&mut self.unread, unread), (&mut self.unseen, unseen)] {
            if member {
                set.insert(id);
            } else {
                set.remove(&id);
            }
        }
    }

    /// Drop the oldest past `max`, never `new`: delivered ones first, oldest first; one held
    /// for delivery (not in the tray yet) only when too few delivered are left. The delivered
    /// ones dropped: streams have seen them, and are told they went.
    fn trim(&mut self, max: usize, new: NotificationId) -> Vec<String> {
        let over = self.items.len().saturating_sub(max);
        let (mut gone, mut waiting) = (Vec::new(), Vec::new());
        for (&id, item) in &self.items {
            if gone.len() == over {
                break;
            }
            match (id == new, item.held) {
                (true, _) => {}
                (false, true) => waiting.push(id),
                (false, false) => gone.push(id),
            }
        }
        let quiet = over - gone.len();
        for id in gone.iter().chain(waiting.iter().take(quiet)) {
            self.remove(id);
        }
        gone.iter().map(NotificationId::to_string).collect()
    }

    /// Remove every trace of `id`; whether it was there.
    fn remove(&mut self, id: &NotificationId) -> bool {
        self.unread.remove(id);
        self.unseen.remove(id);
        let Some(item) = self.items.remove(id) else {
            return false;
        };
        let Some(x) = self.extras.as_deref_mut() else {
            return true;
        };
        if let Some(at) = item.wake_ms {
            x.wake.remove(&(at, *id));
        }
        if let Some(at) = item.expire_ms() {
            x.expire.remove(&(at, *id));
        }
        if let Some(e) = item.push {
            x.push.remove(&(e.at, *id));
        }
        x.activated.remove(id);
        if let Some(key) = item.template.collapse_key() {
            if let Some(ids) = x.collapse.get_mut(key) {
                ids.retain(|other| other != id);
                if ids.is_empty() {
                    x.collapse.remove(key);
                }
            }
        }
        true
    }

    /// A delivered notification of this tray (held ones are not there yet for the user).
    pub(super) fn delivered(&self, id: &str) -> Option<NotificationId> {
        let (id, item) = self.items.get_key_value(id)?;
        (!item.held).then_some(*id)
    }

    /// When something is due next.
    pub(super) fn next_due(&self) -> Option<u64> {
        let x = self.extras();
        [&x.wake, &x.expire, &x.push]
            .into_iter()
            .filter_map(|set| set.first().map(|(at, _)| *at))
            .min()
    }

    /// Escalate `id` to Web Push at `at`, unless an escalation of it is pending (leased or
    /// waiting): that one decides, and a second would push twice. With `send`, past the
    /// check for a live stream: pushed at `at` if still unseen and unread. Whether it
    /// escalates.
    pub(super) fn escalate(&mut self, id: NotificationId, at: u64, send: bool) -> bool {
        match self.items.get(&id) {
            Some(item) if item.push.is_none() => {
                let fresh = Escalating {
                    at,
                    send,
                    lease: 0,
                    since: at,
                };
                self.set_push(id, Some(fresh));
                true
            }
            _ => false,
        }
    }

    /// `id` became active after it was made, at `now`: escalate it, or note when.
    fn activate(&mut self, id: NotificationId, now: u64, on: OnActive) {
        match on {
            OnActive::Escalate => {
                self.escalate(id, now, false);
            }
            OnActive::Note => {
                self.extras_mut().activated.insert(id, now);
            }
            OnActive::Nothing => {}
        }
    }

    /// Push the active, unseen (so unread) notifications that became active from
    /// `recent.from_ms` on (made then, or delivered or woken then: [`Tray::activate`]) when
    /// their `after_ms` ends (an escalation past its check, `send`: see [`Tray::escalate`]).
    /// The earliest due time set.
    pub(super) fn escalate_recent(&mut self, recent: Recent) -> Option<u64> {
        let (since, after_ms) = (recent.from_ms, recent.after_ms);
        // Those that became active after they were made first: that time counts, not their making.
        let activated = (self.extras().activated.iter())
            .filter(|&(id, &at)| at >= since && self.unseen.contains(id))
            .map(|(&id, &at)| (id, at));
        let made = (self.unseen.range(crate::model::first_id_at(since)..))
            .filter_map(|&id| Some((id, crate::model::id_ms(id.as_str())?)));
        let recent: Vec<(NotificationId, u64)> = activated.chain(made).collect();
        recent
            .into_iter()
            .filter_map(|(id, at)| {
                let at = at + after_ms;
                self.escalate(id, at, true).then_some(at)
            })
            .min()
    }

    /// Whether the escalation of `id` is leased under `lease`.
    pub(super) fn holds_push(&self, id: &str, lease: u64) -> bool {
        self.items
            .get_key_value(id)
            .is_some_and(|(&id, _)| self.leased(id, lease).is_some())
    }

    /// The escalation of `id` while it is leased under `lease`.
    fn leased(&self, id: NotificationId, lease: u64) -> Option<Escalating> {
        let e = self.items.get(&id)?.push?;
        (e.lease == lease).then_some(e)
    }

    /// Make the escalation of `id` leased under `lease` due at `at` (`send`: as a push),
    /// released from the lease. Whether it was still leased so.
    pub(super) fn push_later(
        &mut self,
        id: NotificationId,
        lease: u64,
        at: u64,
        send: bool,
    ) -> bool {
        let held = self.leased(id, lease).is_some();
        if held {
            let (lease, since) = (0, at);
            self.set_push(
                id,
                Some(Escalating {
                    at,
                    send,
                    lease,
                    since,
                }),
            );
        }
        held
    }

    /// Move the escalation of `id` leased under `lease` to `until`, only ever later (a lease
    /// renewed by one of several sends must not cut short another's). Whether it was still
    /// leased so.
    pub(super) fn extend_push(&mut self, id: NotificationId, lease: u64, until: u64) -> bool {
        let Some(e) = self.leased(id, lease) else {
            return false;
        };
        if until > e.at {
            self.set_push(id, Some(Escalating { at: until, ..e }));
        }
        true
    }

    /// The escalation of `id` leased under `lease` is done (not one begun since).
    pub(super) fn push_done(&mut self, id: NotificationId, lease: u64) {
        if self.leased(id, lease).is_some() {
            self.set_push(id, None);
        }
    }

    /// Set (or, with `None`, drop) the escalation of `id`, in the item and the due index.
    fn set_push(&mut self, id: NotificationId, push: Option<Escalating>) {
        let Some(item) = self.items.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut item.push, push);
        let x = self.extras_mut();
        if let Some(was) = old {
            x.push.remove(&(was.at, id));
        }
        if let Some(now) = push {
            x.push.insert((now.at, id));
        }
    }

    /// Store one recipient's notification and commit its change, unless `key` (shared by the
    /// publish's recipients) already stored one here within [`IDEMPOTENCY_TTL_MS`], or the
    /// user `muted` its category. A collapse key that names an active unread notification
    /// replaces it; a notification to deliver later waits in `wake`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish(
        &mut self,
        template: &Arc<Template>,
        to: Recipient<'_>,
        key: Option<(&Arc<str>, Option<u64>)>,
        muted: bool,
        max: usize,
        hub: &Hub,
        now: u64,
    ) -> Published {
        if let Some((key, stamp)) = key {
            if let Some(&(id, exp, stored)) = self.extras().idempotency.get(key) {
                if exp > now && same_publish(stamp, stored) {
                    return Published::earlier(id);
                }
            }
        }
        if muted {
            return Published::suppressed(to.id);
        }
        if let Some((key, stamp)) = key {
            let keys = &mut self.extras_mut().idempotency;
            if keys.len() >= 64 {
                keys.retain(|_, (_, exp, _)| *exp > now);
            }
            keys.insert(key.clone(), (to.id, now + IDEMPOTENCY_TTL_MS, stamp));
        }
        let schedule = template.schedule();
        let mut state = ItemState::default();
        let mut replaces = None;
        if let (Some(collapse), None) = (template.collapse_key(), schedule.deliver_ms) {
            if let Some((count, old)) = self.supersede(collapse) {
                state.count = count;
                state.replaces = Some(old.to_string());
                replaces = Some(old);
            }
        }
        let count = state.count;
        let item = Item {
            template: template.clone(),
            state: (!state.is_fresh()).then(|| Box::new(state)),
            held: schedule.deliver_ms.is_some(),
            wake_ms: schedule.deliver_ms,
            push: None,
        };
        self.items.insert(to.id, item);
        if let Some(at) = schedule.deliver_ms {
            self.extras_mut().wake.insert((at, to.id));
        }
        if let Some(at) = schedule.expire_ms {
            self.extras_mut().expire.insert((at, to.id));
        }
        if let (Some(collapse), None) = (template.collapse_key(), schedule.deliver_ms) {
            self.name_collapse(collapse, to.id);
        }
        self.sync(to.id);
        let dropped = self.trim(max, to.id);
        if schedule.deliver_ms.is_none() && self.items.contains_key(&to.id) {
            let data = Data::Published {
                template: template.clone(),
                id: to.id,
                count,
                replaces,
                counts: self.counts(),
            };
            self.commit_data(to.user, hub, ChangeKind::Notification, data, now);
        }
        if !dropped.is_empty() {
            let data = status_data(&dropped, self.counts());
            self.commit(to.user, hub, ChangeKind::Deleted, data, now);
        }
        Published::stored(to.id)
    }

    /// Collapse under `key`: the newest active unread notification that carries it (if any)
    /// is removed; the count the notification taking its place carries, and the removed id.
    /// The caller then names its notification under `key`.
    fn supersede(&mut self, key: &str) -> Option<(u64, NotificationId)> {
        let ids = self.extras().collapse.get(key)?;
        let acting = &self.extras().acting;
        let &old = ids
            .iter()
            .rev()
            .find(|&id| self.unread.contains(id) && !acting.contains(id))?;
        let count = self.items.get(&old).map_or(1, |i| i.state().count) + 1;
        self.remove(&old);
        Some((count, old))
    }

    /// Note that `id` carries collapse `key` (the newest that does).
    fn name_collapse(&mut self, key: &str, id: NotificationId) {
        let x = self.extras_mut();
        match x.collapse.get_mut(key) {
            Some(ids) => {
                ids.push(id);
                if ids.len() > COLLAPSE_KEPT {
                    ids.remove(0);
                }
            }
            None => {
                x.collapse.insert(key.to_owned(), vec![id]);
            }
        }
    }

    /// The ids a write to all applies to: the active ones it can change (unarchive and
    /// unsnooze: the archived and snoozed ones).
    fn all_for(&self, mark: Mark) -> Vec<NotificationId> {
        let delivered = || self.items.iter().filter(|(_, i)| !i.held);
        match mark {
            Mark::Read => self.unread.iter().copied().collect(),
            Mark::Seen => self.unseen.iter().copied().collect(),
            Mark::Unarchived => delivered()
                .filter(|(_, i)| i.state().archived_at.is_some())
                .map(|(id, _)| *id)
                .collect(),
            Mark::Unsnooze => delivered()
                .filter(|(_, i)| i.state().snoozed_until.is_some())
                .map(|(id, _)| *id)
                .collect(),
            _ => delivered()
                .filter(|(_, i)| i.is_active())
                .map(|(id, _)| *id)
                .collect(),
        }
    }

    /// Apply `mark` to one notification; whether its state changed.
    fn apply(&mut self, id: NotificationId, mark: Mark, now: &str) -> bool {
        if mark == Mark::Deleted {
            return self.remove(&id);
        }
        let Some(item) = self.items.get_mut(&id) else {
            return false;
        };
        let state = item.state_mut();
        let mut wake = None;
        let changed = match mark {
            Mark::Read if state.read_at.is_none() => {
                state.read_at = Some(now.to_owned());
                // Reading sees.
                state.seen_at.get_or_insert_with(|| now.to_owned());
                true
            }
            Mark::Seen if state.seen_at.is_none() => {
                state.seen_at = Some(now.to_owned());
                true
            }
            Mark::Unread if state.read_at.is_some() => {
                state.read_at = None;
                true
            }
            Mark::Archived if state.archived_at.is_none() => {
                state.archived_at = Some(now.to_owned());
                true
            }
            Mark::Unarchived if state.archived_at.is_some() => {
                state.archived_at = None;
                true
            }
            Mark::Snooze(until) => {
                state.snoozed_until = Some(ms_to_rfc3339(until));
                wake = Some((item.wake_ms.replace(until), Some(until)));
                true
            }
            Mark::Unsnooze if state.snoozed_until.is_some() => {
                state.snoozed_until = None;
                wake = Some((item.wake_ms.take(), None));
                true
            }
            _ => false,
        };
        item.settle();
        if let Some((old, new)) = wake {
            let x = self.extras_mut();
            if let Some(old) = old {
                x.wake.remove(&(old, id));
            }
            if let Some(new) = new {
                x.wake.insert((new, id));
            }
        }
        self.sync(id);
        changed
    }

    /// Apply `mark` to the named (delivered) ids or to all, and commit: one status event for
    /// the changed ids, or each snoozed or unsnoozed notification whole. An unsnoozed
    /// notification that is active again does `on_active`, as at a snooze end.
    pub(super) fn mark(
        &mut self,
        user: &str,
        hub: &Hub,
        target: &Target,
        mark: Mark,
        on_active: OnActive,
    ) -> Marked {
        // The named ids that exist (a repeated one counts each time, as `found` says).
        let ids: Vec<NotificationId> = match target {
            Target::Ids(ids) => ids.iter().filter_map(|id| self.delivered(id)).collect(),
            Target::All => self.all_for(mark),
        };
        let now = rfc3339(SystemTime::now());
        let mut marked = Marked::default();
        for id in ids {
            if !self.items.contains_key(&id) {
                continue;
            }
            marked.found += 1;
            if !self.apply(id, mark, &now) {
                continue;
            }
            // Archived before its Web Push: never pushed (unarchiving does not bring it back).
            // Snoozed: its end escalates afresh, `--push-after` after it is active again.
            if matches!(mark, Mark::Archived | Mark::Snooze(_)) {
                self.set_push(id, None);
            }
            marked.changed.push(id.to_string());
            if mark.status_kind().is_none() {
                let active = self.items.get(&id).is_some_and(Item::is_active);
                let kind = match mark {
                    Mark::Unsnooze if active => ChangeKind::Notification,
                    _ => ChangeKind::Updated,
                };
                if kind == ChangeKind::Notification {
                    self.activate(id, now_ms(), on_active);
                }
                self.commit_whole(user, hub, kind, id);
            }
        }
        if let (Some(kind), false) = (mark.status_kind(), marked.changed.is_empty()) {
            let data = status_data(&marked.changed, self.counts());
            self.commit(user, hub, kind, data, now_ms());
        }
        marked.position = Some(EventId {
            epoch: self.epoch,
            seq: self.seq,
        });
        marked
    }

    /// Expire, deliver and wake what is due at `now` (Unix ms): expired notifications go in
    /// one `deleted` change (reason `expired`); each delivered or woken one arrives whole as
    /// a `notification` (an archived one that wakes as `updated`).
    pub(super) fn process_due(
        &mut self,
        user: &str,
        hub: &Hub,
        now: u64,
        on_active: OnActive,
    ) -> Due {
        let mut expired = Vec::new();
        while let Some(&(at, id)) = self.extras().expire.first() {
            if at > now {
                break;
            }
            self.extras_mut().expire.remove(&(at, id));
            // One never delivered (its delivery and expiry both passed) goes unannounced.
            let delivered = self.items.get(&id).is_some_and(|item| !item.held);
            if self.remove(&id) && delivered {
                expired.push(id.to_string());
            }
        }
        if !expired.is_empty() {
            let data = serde_json::json!({
                "ids": expired,
                "reason": "expired",
                "unread_count": self.unread.len(),
                "unseen_count": self.unseen.len(),
            });
            self.commit(user, hub, ChangeKind::Deleted, data.to_string(), now);
        }
        while let Some(&(at, id)) = self.extras().wake.first() {
            if at > now {
                break;
            }
            self.extras_mut().wake.remove(&(at, id));
            let Some(item) = self.items.get(&id) else {
                continue;
            };
            // Delivered now (not a snooze ending), it collapses as a publish now would.
            let collapse = item.held.then(|| item.template.collapse_key()).flatten();
            if let Some(key) = collapse.map(str::to_owned) {
                let replaced = self.supersede(&key);
                self.name_collapse(&key, id);
                if let (Some((count, old)), Some(item)) = (replaced, self.items.get_mut(&id)) {
                    let state = item.state_mut();
                    state.count = count;
                    state.replaces = Some(old.to_string());
                }
            }
            let Some(item) = self.items.get_mut(&id) else {
                continue;
            };
            item.wake_ms = None;
            item.held = false;
            item.state_mut().snoozed_until = None;
            item.settle();
            let kind = if item.is_active() {
                ChangeKind::Notification
            } else {
                ChangeKind::Updated
            };
            self.sync(id);
            if kind == ChangeKind::Notification {
                self.activate(id, now, on_active);
            }
            self.commit_whole(user, hub, kind, id);
        }
        let mut due = Due::default();
        while let Some(&(at, id)) = self.extras().push.first() {
            if at > now {
                break;
            }
            let pending = self.unseen.contains(&id) && self.unread.contains(&id);
            let (Some(item), true) = (self.items.get(&id), pending) else {
                self.set_push(id, None);
                due.cancelled += 1;
                continue;
            };
            let (send, since) = item.push.map_or((true, at), |e| (e.send, e.since));
            let notification = item.notification(&id, user);
            let leased = Escalating {
                at: now + PUSH_LEASE_MS,
                send,
                lease: new_lease(),
                since,
            };
            self.set_push(id, Some(leased));
            due.escalations.push(Escalation {
                send,
                due_ms: since,
                lease: leased.lease,
                notification,
                unread_count: self.unread.len() as u64,
            });
        }
        due
    }

    /// Claim the sending of an action of notification `id`: `false` while another holds it.
    pub(super) fn claim_action(&mut self, id: &str) -> bool {
        match self.items.get_key_value(id) {
            Some((&id, _)) => self.extras_mut().acting.insert(id),
            None => true,
        }
    }

    /// Let go of a claim of [`Tray::claim_action`] (of a notification gone since too).
    pub(super) fn release_action(&mut self, id: &str) {
        if let Some(x) = self.extras.as_deref_mut() {
            x.acting.retain(|acting| acting.as_str() != id);
        }
    }

    /// Record `action` once, mark the notification read and commit it whole as `updated`.
    pub(super) fn take_action(
        &mut self,
        user: &str,
        hub: &Hub,
        id: &str,
        action: &TakenAction,
    ) -> ActionOutcome {
        let Some(id) = self.delivered(id) else {
            return ActionOutcome::Missing;
        };
        let Some(item) = self.items.get_mut(&id) else {
            return ActionOutcome::Missing;
        };
        if item.state().action.is_some() {
            return ActionOutcome::Conflict;
        }
        let state = item.state_mut();
        state.action = Some(action.clone());
        let now = &action.at;
        state.read_at.get_or_insert_with(|| now.clone());
        state.seen_at.get_or_insert_with(|| now.clone());
        let notification = item.notification(&id, user);
        self.sync(id);
        self.commit_whole(user, hub, ChangeKind::Updated, id);
        let position = EventId {
            epoch: self.epoch,
            seq: self.seq,
        };
        ActionOutcome::Taken(Box::new(notification), position)
    }
}
