//! The Store: each user's tray (notifications, read state), change log for replay, browser
//! sessions, groups and presence. Two siblings with the same surface: `memory` (embedded mode)
//! and `redis`. A tray write *commits* a change: it is stored, numbered in the user's change
//! log and announced to the user's live streams in one step, so announcements arrive in `seq`
//! order (memory: under the user's lock; Redis: inside one Lua script with SPUBLISH). Each
//! change log carries an epoch drawn when it is created; positions of another epoch reset.

pub(crate) mod batch;
#[cfg(test)]
mod contract;
pub(crate) mod keys;
mod memory;
mod nodes;
mod redis;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Backend;
use crate::error::{Result, StartupError};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::model::{
    now_ms, Change, Counts, Epoch, EventId, ItemState, Mark, Marked, Notification, NotificationId,
    PresenceEntry, TakenAction, Target, Template,
};
use crate::redis_conn::connect_plain;
use crate::shutdown::Shutdown;

pub use self::memory::MemoryStore;
pub use self::nodes::NodeInfo;
pub use self::redis::RedisStore;

/// Changes kept per user for replay after `Last-Event-ID` (at least this many).
pub const LOG_CAPACITY: usize = 1000;
/// Ids kept per collapse key, the newest that carry it (`COLLAPSE_KEPT` in `common.lua` too):
/// a publish with the key replaces the newest of them that is active and unread. An older
/// one made active and unread again after as many newer ones is no longer found.
pub const COLLAPSE_KEPT: usize = 16;
/// How long an idempotency key is remembered, in milliseconds (spec: 24 h).
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 3600 * 1000;
/// Live browser sessions per user; a new one beyond this ends the oldest.
pub const MAX_SESSIONS_PER_USER: usize = 100;
/// Longest session, in seconds (400 days, the cap browsers put on a cookie's `Max-Age`): a
/// token whose `exp` lies further ahead gets a session that ends here.
pub const MAX_SESSION_SECS: u64 = 400 * 24 * 3600;

/// A browser session created by `POST /session`, stored under its public id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "StoredSession", into = "StoredSession")]
pub struct SessionRecord {
    pub user: String,
    /// Unix milliseconds; the session ends here at the latest (the token's `exp`).
    pub ends_ms: u64,
    /// SHA-256 of the cookie's secret, hex; the secret itself is never stored.
    pub secret_hash: String,
}

/// A session record as stored: its end in milliseconds (`exp_ms`) and, for builds that read
/// only whole seconds, rounded down (`exp`); a record of such a build has no `exp_ms`.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSession {
    user: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp_ms: Option<u64>,
    hash: String,
}

impl From<StoredSession> for SessionRecord {
    fn from(s: StoredSession) -> Self {
        SessionRecord {
            user: s.user,
            ends_ms: s.exp_ms.unwrap_or(s.exp.saturating_mul(1000)),
            secret_hash: s.hash,
        }
    }
}

impl From<SessionRecord> for StoredSession {
    fn from(r: SessionRecord) -> Self {
        StoredSession {
            user: r.user,
            exp: r.ends_ms / 1000,
            exp_ms: Some(r.ends_ms),
            hash: r.secret_hash,
        }
    }
}

/// What the store holds of a session a stream was opened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Live,
    /// Logged out, ended by the per-user cap, or past its end.
    Ended,
    /// No trace of it: Redis lost it with its data (a logout or the cap leaves a mark until
    /// the session's end). The embedded store loses nothing, so it never answers this.
    Lost,
}

impl SessionRecord {
    /// Whether the session has not ended yet: the one expiry rule for sessions.
    pub fn is_live(&self) -> bool {
        self.ends_ms > now_ms()
    }
}

/// `GET /notifications` parameters, already validated.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: usize,
    pub before: Option<String>,
    /// Only notifications not read.
    pub unread: bool,
    /// Only notifications not seen.
    pub unseen: bool,
    pub archived: Archived,
    /// Only snoozed notifications (otherwise snoozed ones are left out).
    pub snoozed: bool,
    /// Only notifications of these categories (all when empty).
    pub categories: Vec<String>,
}

/// `archived=exclude|only|include`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Archived {
    #[default]
    Exclude,
    Only,
    Include,
}

impl Archived {
    pub fn as_str(self) -> &'static str {
        match self {
            Archived::Exclude => "exclude",
            Archived::Only => "only",
            Archived::Include => "include",
        }
    }
}

impl ListQuery {
    /// Whether a delivered notification in this state belongs on the page.
    pub fn admits(&self, state: &ItemState, category: Option<&str>) -> bool {
        let archived = state.archived_at.is_some();
        let archived_ok = match self.archived {
            Archived::Exclude => !archived,
            Archived::Only => archived,
            Archived::Include => true,
        };
        archived_ok
            && state.snoozed_until.is_some() == self.snoozed
            && (!self.unread || state.read_at.is_none())
            && (!self.unseen || state.seen_at.is_none())
            && (self.categories.is_empty()
                || category.is_some_and(|c| self.categories.iter().any(|x| x == c)))
    }

    /// Whether the page lists active notifications only, so that the active unread (or
    /// unseen) set is exactly what it walks.
    pub fn active_only(&self) -> bool {
        self.archived == Archived::Exclude && !self.snoozed
    }
}

/// One page of a tray, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub notifications: Vec<Notification>,
    pub unread_count: u64,
    pub unseen_count: u64,
    /// The cursor for the next page (`before=`), when there is one.
    pub next: Option<String>,
    /// The user's change-log head when the page was read, in the same atomic read: a stream
    /// resumed from it gets exactly the changes the page does not reflect.
    pub position: EventId,
}

impl Page {
    /// A page of at most the requested size; `more` says whether older notifications remain,
    /// and then the cursor is the last id on this page. Both stores build pages here.
    pub fn new(
        notifications: Vec<Notification>,
        more: bool,
        counts: Counts,
        position: EventId,
    ) -> Self {
        Page {
            next: if more {
                notifications.last().map(|n| n.id.clone())
            } else {
                None
            },
            notifications,
            unread_count: counts.unread,
            unseen_count: counts.unseen,
            position,
        }
    }
}

/// `GET /notifications/counts`: the tray's counts, per category too, and the change-log head
/// they reflect (read in one step).
#[derive(Debug, Clone, PartialEq)]
pub struct TrayCounts {
    pub counts: Counts,
    /// Every category of the tray's notifications (uncategorised ones count in the totals).
    pub by_category: std::collections::BTreeMap<String, Counts>,
    pub position: EventId,
}

/// Where a user's change log stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The log's epoch (created by reading the head when the user has no log yet).
    pub epoch: Epoch,
    pub seq: u64,
    pub unread_count: u64,
    pub unseen_count: u64,
}

impl Head {
    /// The head as an event id (the `id:` of `ready` and `reset`).
    pub fn id(&self) -> EventId {
        EventId {
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

/// What a resume after `Last-Event-ID` gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// Every change after the given id, in order (possibly none).
    Changes(Vec<Change>),
    /// The id is of another epoch (another user's log, or one that was lost), beyond the head
    /// or older than the retained log: the client must refetch.
    Reset,
}

/// A publish's idempotency key, and for a Kafka record its timestamp (`stamp`): the same key
/// stored with another stamp was another record's (a broker that lost its log hands out its
/// offsets again), so it stores anew; when either side has no stamp, the key matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idempotency<'a> {
    pub key: &'a str,
    pub stamp: Option<u64>,
}

#[cfg(test)]
impl<'a> Idempotency<'a> {
    /// A key without a stamp.
    pub fn key(key: &'a str) -> Self {
        Idempotency { key, stamp: None }
    }
}

/// Whether a key stored with `stored` names the same publish as one sent with `stamp`.
pub fn same_publish(stamp: Option<u64>, stored: Option<u64>) -> bool {
    match (stamp, stored) {
        (Some(sent), Some(stored)) => sent == stored,
        _ => true,
    }
}

/// One recipient of a publish: the user and the id their notification gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient<'a> {
    pub user: &'a str,
    pub id: NotificationId,
}

/// The outcome of storing one notification for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The recipient's id, or the earlier one when the idempotency key had stored it before.
    pub id: NotificationId,
    /// False when the idempotency key had already stored this notification, or the user
    /// muted its category.
    pub stored: bool,
    /// The user muted the notification's category: nothing stored or delivered.
    pub suppressed: bool,
    /// Stored, and its Web Push escalation is due now (Redis: the caller notes the user in
    /// the due index).
    pub escalates: bool,
}

impl Published {
    pub fn stored(id: NotificationId) -> Self {
        Published {
            id,
            stored: true,
            suppressed: false,
            escalates: false,
        }
    }

    /// The idempotency key had stored `id` before.
    pub fn earlier(id: NotificationId) -> Self {
        Published {
            id,
            stored: false,
            suppressed: false,
            escalates: false,
        }
    }

    pub fn suppressed(id: NotificationId) -> Self {
        Published {
            id,
            stored: false,
            suppressed: true,
            escalates: false,
        }
    }
}

/// What recording an action found.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    /// Recorded: the notification as it is now (read, with its action), and the position of
    /// its `updated` change.
    Taken(Box<Notification>, EventId),
    /// The notification already has an action.
    Conflict,
    /// No such (delivered) notification.
    Missing,
}

/// A browser's Web Push subscription (the `PushSubscription` JSON it posted).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    pub endpoint: String,
    pub keys: SubscriptionKeys,
    /// When it was stored (Unix ms), for the per-user cap.
    #[serde(default)]
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key, base64url.
    pub p256dh: String,
    /// The 16-byte auth secret, base64url.
    pub auth: String,
}

/// What a connected user's first Web Push subscription takes: the notifications that became
/// active from `from_ms` (Unix ms) on, each pushed `after_ms` (`--push-after`) after it
/// became active if still active, unseen and unread ([`Store::add_subscription`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recent {
    pub from_ms: u64,
    pub after_ms: u64,
}

/// Web Push subscriptions kept per user; a new one beyond this drops the oldest.
pub const MAX_SUBSCRIPTIONS: usize = 10;
/// How long a node owns an escalation it took (it is due again after that, should the node
/// die before it is done): twice a push request's longest time, renewed before each retry.
pub const PUSH_LEASE_MS: u64 = 30_000;

/// A fresh token for the escalations one due pass leases (never 0: the memory store's "not
/// leased").
fn new_lease() -> u64 {
    rand::random::<u64>() | 1
}

/// A Web Push escalation that came due.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// `false`: the first step, at the moment the notification became active — push at once
    /// if the user has no live stream, else check again `--push-after` later. `true`: push.
    pub send: bool,
    /// When it first came due in its step (Unix ms), also when it is taken again after a
    /// lease ran out: for the first step, when the notification became active; for the push,
    /// its first try (the TTL counts from it).
    pub due_ms: u64,
    /// The lease's token: only the sender that took it may move, renew or end the
    /// escalation. A snooze or an archive drops the escalation with its lease, and one begun
    /// afresh (at the snooze's end) is leased under another token, so a sender still
    /// retrying the old one can neither push it a second time nor end the new one.
    pub lease: u64,
    pub notification: Notification,
    pub unread_count: u64,
}

/// What handling a user's due items found for Web Push.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Due {
    pub escalations: Vec<Escalation>,
    /// Escalations dropped because the notification was seen, read, archived, snoozed or
    /// deleted first.
    pub cancelled: usize,
}

/// A user's preferences: category → muted.
pub type Preferences = std::collections::BTreeMap<String, bool>;

/// The replay decision shared by both backends, once the epochs matched: `after` against the
/// log's oldest retained seq and its head. `oldest` is `None` when the log holds nothing.
pub fn replay_window(after: u64, head: u64, oldest: Option<u64>) -> ReplayWindow {
    if after > head {
        return ReplayWindow::Reset;
    }
    if after == head {
        return ReplayWindow::Nothing;
    }
    match oldest {
        Some(oldest) if oldest <= after + 1 => ReplayWindow::From(after + 1),
        _ => ReplayWindow::Reset,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayWindow {
    Nothing,
    From(u64),
    Reset,
}

#[derive(Clone)]
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

macro_rules! forward {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Memory(s) => s.$method($($arg),*).await,
            Store::Redis(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// The store for `backend`: in memory (presence read from `hub`), or over its own Redis
    /// connection; an unreachable Redis is a start-up error.
    /// `push`: Web Push is on, so notifications that become active escalate. Redis commands
    /// are timed in `metrics`.
    pub async fn connect(
        backend: &Backend,
        hub: Hub,
        max_per_user: usize,
        push: bool,
        metrics: &Metrics,
        shutdown: &Shutdown,
    ) -> Result<Self, StartupError> {
        Ok(match backend {
            Backend::Embedded => Store::Memory(MemoryStore::new(hub, max_per_user, push)),
            Backend::Redis(_) | Backend::Cluster(_) => {
                let conn = connect_plain(backend, "store", Some(shutdown.clone()), Duration::ZERO)
                    .await?
                    .timed(metrics);
                Store::Redis(RedisStore::new(conn, max_per_user, push))
            }
        })
    }

    /// The Redis store for a Redis `backend` (`herald publish --redis-url` has no shutdown);
    /// `push`: a recipient with a Web Push subscription gets an escalation.
    pub async fn redis(
        backend: &Backend,
        max_per_user: usize,
        push: bool,
        shutdown: Option<Shutdown>,
    ) -> Result<Self, StartupError> {
        let conn = connect_plain(backend, "store", shutdown, Duration::ZERO).await?;
        Ok(Store::Redis(RedisStore::new(conn, max_per_user, push)))
    }

    /// Ok when the backend answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        forward!(self.ping())
    }

    /// Store a session under its public id; returns the ids of the user's oldest sessions
    /// that ended to keep [`MAX_SESSIONS_PER_USER`] (their streams are the caller's to end).
    pub async fn put_session(&self, id: &str, record: &SessionRecord) -> Result<Vec<String>> {
        forward!(self.put_session(id, record))
    }

    /// The live sessions of these public ids, in their order (`None` for one unknown or
    /// ended), in one read.
    pub async fn sessions(&self, ids: &[&str]) -> Result<Vec<Option<SessionRecord>>> {
        forward!(self.sessions(ids))
    }

    /// End a session: a later [`Store::session_state`] answers [`SessionState::Ended`].
    pub async fn end_session(&self, user: &str, id: &str) -> Result<()> {
        forward!(self.end_session(user, id))
    }

    /// Whether the session `id` is live, ended, or lost with the store's data.
    pub async fn session_state(&self, id: &str) -> Result<SessionState> {
        forward!(self.session_state(id))
    }

    /// Note that `user`'s token session `sid` was logged out `at` (a presence entry's
    /// `since`), until `until` (Unix s, the token's end): a node that could not hear the
    /// announcement ends its streams of it opened before then once it is back. The embedded
    /// store's one node hears every logout.
    pub async fn end_token_session(
        &self,
        user: &str,
        sid: &str,
        at: &str,
        until: u64,
    ) -> Result<()> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(s) => s.end_token_session(user, sid, at, until).await,
        }
    }

    /// When `user`'s token session `sid` was last logged out, if it was
    /// ([`Store::end_token_session`]).
    pub async fn token_session_ended(&self, user: &str, sid: &str) -> Result<Option<String>> {
        match self {
            Store::Memory(_) => Ok(None),
            Store::Redis(s) => s.token_session_ended(user, sid).await,
        }
    }

    /// Put back a session [`SessionState::Lost`] with Redis's data, as a node's stream on it
    /// holds it; one stored meanwhile (a record, or an end) stays. Whether it was put back.
    pub async fn restore_session(&self, id: &str, record: &SessionRecord) -> Result<bool> {
        match self {
            Store::Memory(_) => Ok(false),
            Store::Redis(s) => s.restore_session(id, record).await,
        }
    }

    /// Store the notification of `template` for each recipient (under the recipient's id) and
    /// commit its `notification` change, unless `idempotency` already stored one for that user
    /// within 24 h. One outcome per recipient, in order; a recipient whose outcome is an
    /// error has nothing stored. The memory store commits them all without awaiting; the Redis
    /// store sends them as one round of script calls (many users per call, see
    /// `redis/publish.rs`).
    pub async fn publish(
        &self,
        template: &Arc<Template>,
        recipients: &[Recipient<'_>],
        idempotency: Option<Idempotency<'_>>,
    ) -> Vec<Result<Published>> {
        forward!(self.publish(template, recipients, idempotency))
    }

    pub async fn list(&self, user: &str, query: &ListQuery) -> Result<Page> {
        forward!(self.list(user, query))
    }

    pub async fn counts(&self, user: &str) -> Result<TrayCounts> {
        forward!(self.counts(user))
    }

    pub async fn get(&self, user: &str, id: &str) -> Result<Option<Notification>> {
        forward!(self.get(user, id))
    }

    /// Apply a status change and commit one change event for the ids whose state changed.
    pub async fn mark(&self, user: &str, target: &Target, mark: Mark) -> Result<Marked> {
        forward!(self.mark(user, target, mark))
    }

    /// Claim the sending of an action of notification `id` to the upstream, for at most `ttl`
    /// (across nodes in Redis mode): `false` while another claim holds it.
    pub async fn claim_action(&self, user: &str, id: &str, ttl: Duration) -> Result<bool> {
        forward!(self.claim_action(user, id, ttl))
    }

    /// Let go of a claim of [`Store::claim_action`].
    pub async fn release_action(&self, user: &str, id: &str) -> Result<()> {
        forward!(self.release_action(user, id))
    }

    /// Record `action` on the notification (once), mark it read and commit `updated`.
    pub async fn take_action(
        &self,
        user: &str,
        id: &str,
        action: &TakenAction,
    ) -> Result<ActionOutcome> {
        forward!(self.take_action(user, id, action))
    }

    /// Users with something due at or before `now_ms` (Unix ms), at most `limit`, each with
    /// the due-index entry that names them (hand it back to [`Store::process_due`]).
    pub async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, u64)>> {
        forward!(self.due(now_ms, limit))
    }

    /// Deliver, wake and expire what is due in `user`'s tray (each exactly once, whichever
    /// node runs it, however often), take the Web Push escalations that are due (leased for
    /// [`PUSH_LEASE_MS`]), then move the user's due-index entry `hint` to what is due next.
    pub async fn process_due(&self, user: &str, hint: u64) -> Result<Due> {
        forward!(self.process_due(user, hint))
    }

    /// Move `user`'s due-index entry to `at_ms` (when it still has one): a tray whose due
    /// handling failed is retried then, not at every tick ahead of everyone else's.
    pub async fn defer_due(&self, user: &str, at_ms: u64) -> Result<()> {
        forward!(self.defer_due(user, at_ms))
    }

    /// Make the escalation of notification `id` leased under `lease` due again at `at_ms`
    /// (`send`: as a push; else as the connected-or-not check), released from its lease, if
    /// it is still pending under that lease.
    pub async fn push_later(
        &self,
        user: &str,
        id: &str,
        lease: u64,
        at_ms: u64,
        send: bool,
    ) -> Result<()> {
        forward!(self.push_later(user, id, lease, at_ms, send))
    }

    /// A stopping node hands the push of `id` leased under `lease` back: due again at `at_ms`
    /// (a retry's time) for any node, released from the lease, still counting its TTL from
    /// `since_ms` (its first try). Memory: nothing (the escalation stops with the process).
    pub async fn push_handover(
        &self,
        user: &str,
        id: &str,
        lease: u64,
        at_ms: u64,
        since_ms: u64,
    ) -> Result<()> {
        forward!(self.push_handover(user, id, lease, at_ms, since_ms))
    }

    /// Keep the escalation of `id` leased under `lease` until `until_ms`: it only ever moves
    /// later, so the sends to a user's subscriptions, running at once, never cut one
    /// another's lease short. Whether the lease is still held (else the escalation was
    /// dropped, or is another sender's: stop).
    pub async fn extend_push_lease(
        &self,
        user: &str,
        id: &str,
        lease: u64,
        until_ms: u64,
    ) -> Result<bool> {
        forward!(self.extend_push_lease(user, id, lease, until_ms))
    }

    /// The escalation of notification `id` leased under `lease` is done (sent, or given up);
    /// nothing when it is no longer (a fresh one begun meanwhile stays).
    pub async fn push_done(&self, user: &str, id: &str, lease: u64) -> Result<()> {
        forward!(self.push_done(user, id, lease))
    }

    /// The subscription at `endpoint` took the push of the escalation of `id` leased under
    /// `lease` (nothing when the lease is no longer held).
    pub async fn push_sent(&self, user: &str, id: &str, lease: u64, endpoint: &str) -> Result<()> {
        forward!(self.push_sent(user, id, lease, endpoint))
    }

    /// The subscriptions (by [`push_fingerprint`]) that took the push of the escalation of `id`,
    /// while it is leased under `lease` (`None` when it is not): a sender that took the lease
    /// over from one that died pushes the others only.
    pub async fn pushed_to(&self, user: &str, id: &str, lease: u64) -> Result<Option<Vec<String>>> {
        forward!(self.pushed_to(user, id, lease))
    }

    /// Store (or replace, by endpoint) a Web Push subscription; the oldest beyond
    /// [`MAX_SUBSCRIPTIONS`] are dropped. An endpoint is one browser's: another user's
    /// subscription of it is removed (the browser's user changed). With `recent` (the user
    /// is connected), the user's first one also takes what became active since
    /// `recent.from_ms` and is still active, unseen and unread: each is pushed when its
    /// `after_ms` ends, if still so, as it would have been had the subscription existed when
    /// it became active for a connected user.
    pub async fn add_subscription(
        &self,
        user: &str,
        sub: &Subscription,
        recent: Option<Recent>,
    ) -> Result<()> {
        forward!(self.add_subscription(user, sub, recent))
    }

    /// Whether it was there.
    pub async fn remove_subscription(&self, user: &str, endpoint: &str) -> Result<bool> {
        forward!(self.remove_subscription(user, endpoint))
    }

    pub async fn subscriptions(&self, user: &str) -> Result<Vec<Subscription>> {
        forward!(self.subscriptions(user))
    }

    /// Delete (and commit as `deleted`) every notification whose id sorts below `cutoff`,
    /// then drop from every change log the changes committed before `log_before_ms` (a
    /// replay from before them resets); returns how many notifications were deleted.
    pub async fn purge_before(&self, cutoff: &str, log_before_ms: u64) -> Result<usize> {
        forward!(self.purge_before(cutoff, log_before_ms))
    }

    /// Drop dead processes' entries from every user's presence (the memory store keeps
    /// presence in the hub alone: nothing to do); how many users' presence was read.
    pub async fn sweep_presence(&self) -> Result<usize> {
        match self {
            Store::Memory(_) => Ok(0),
            Store::Redis(s) => s.sweep_presence().await,
        }
    }

    /// Take (or keep) the cleaner's turn for `ttl`; false when another node holds it.
    pub async fn claim_cleaner(&self, node: &str, ttl: std::time::Duration) -> Result<bool> {
        forward!(self.claim_cleaner(node, ttl))
    }

    /// The log's epoch, head seq and unread count; creates the epoch when the user has none.
    pub async fn head(&self, user: &str) -> Result<Head> {
        forward!(self.head(user))
    }

    /// Every retained change after `after`, or `Reset` (also when `after` is of another epoch).
    /// `after` is a position the store handed out (a stream's last change), whose change has
    /// [`Change::print`] `print` (0: unknown). Redis: `after` beyond the head, or another
    /// change at its seq, shows that the log went back (Redis restored from a snapshot older
    /// than its last writes, or a Cluster primary replaced by a replica that lacked them), and
    /// the log takes a new epoch, so that every position of the old one resets rather than
    /// replaying the other changes that get its seqs again.
    pub async fn replay(&self, user: &str, after: EventId, print: u64) -> Result<Replay> {
        match self {
            Store::Memory(s) => s.replay(user, after).await,
            Store::Redis(s) => s.replay(user, after, print).await,
        }
    }

    /// What a stream opening needs: the head and, when it resumes from `after`, the replay
    /// (one round trip in Redis mode, where a reconnect storm makes every round trip count).
    pub async fn open_at(
        &self,
        user: &str,
        after: Option<EventId>,
    ) -> Result<(Head, Option<Replay>)> {
        match self {
            Store::Memory(s) => {
                let head = s.head(user).await?;
                let replay = match after {
                    Some(after) => Some(s.replay(user, after).await?),
                    None => None,
                };
                Ok((head, replay))
            }
            Store::Redis(s) => s.open_at(user, after).await,
        }
    }

    pub async fn preferences(&self, user: &str) -> Result<Preferences> {
        forward!(self.preferences(user))
    }

    /// Mute or unmute `category` for `user` (publishes to it are suppressed while muted).
    pub async fn set_muted(&self, user: &str, category: &str, muted: bool) -> Result<()> {
        forward!(self.set_muted(user, category, muted))
    }

    pub async fn add_members(&self, group: &str, users: &[String]) -> Result<()> {
        forward!(self.add_members(group, users))
    }

    /// Whether the user was a member.
    pub async fn remove_member(&self, group: &str, user: &str) -> Result<bool> {
        forward!(self.remove_member(group, user))
    }

    /// Members, sorted.
    pub async fn members(&self, group: &str) -> Result<Vec<String>> {
        forward!(self.members(group))
    }

    /// Record a live stream (Redis only; the memory store reads the hub). Returns the entries
    /// the user's presence held just before it, read in the same step (stale ones included:
    /// [`Store::live_entries`]; memory: none).
    pub async fn add_presence(
        &self,
        user: &str,
        entry: &PresenceEntry,
    ) -> Result<Vec<PresenceEntry>> {
        forward!(self.add_presence(user, entry))
    }

    /// Of `entries` (read from the user's presence), those of live processes.
    pub async fn live_entries(
        &self,
        user: &str,
        entries: Vec<PresenceEntry>,
    ) -> Result<Vec<PresenceEntry>> {
        match self {
            Store::Redis(redis) => redis.live_entries(user, entries).await,
            Store::Memory(_) => Ok(entries),
        }
    }

    pub async fn remove_presence(&self, user: &str, stream: &str) -> Result<()> {
        forward!(self.remove_presence(user, stream))
    }

    /// Delete these (user, stream key) entries (Redis; at shutdown, for the streams that
    /// ended then: their own deletions may not run before the process exits).
    pub async fn remove_presences(&self, entries: Vec<(String, String)>) {
        if let Store::Redis(redis) = self {
            redis.remove_presences(entries).await
        }
    }

    /// Live streams of a user on every live node.
    pub async fn presence(&self, user: &str) -> Result<Vec<PresenceEntry>> {
        forward!(self.presence(user))
    }

    /// Whether presence entries live in the store (Redis), so a closing stream must delete its
    /// own; the memory store reads presence from the hub.
    pub fn keeps_presence(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    /// Leaving for good: drop this node's alive key so its presence entries vanish at once.
    pub async fn retire(&self, node: &str) -> Result<()> {
        forward!(self.retire(node))
    }

    /// Mark this node (the hub's) alive in the store's eyes now, and return the task that
    /// keeps it so until shutdown (Redis: the alive key other nodes check presence entries
    /// against, with the node's open streams for the node list and whether it sends Web Push,
    /// and this node learns whether another one does); `None` when nothing needs it.
    pub async fn keep_alive(
        &self,
        hub: Hub,
        shutdown: Shutdown,
    ) -> Option<impl Future<Output = ()>> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(store) => {
                store.first_beat(&hub).await;
                Some(store.clone().keep_alive(hub, shutdown))
            }
        }
    }

    /// Whether another running process uses this node's name (Redis: its heartbeat is fresh
    /// and names another run; waits up to a heartbeat period when a key of another run is
    /// there). Never in embedded mode.
    pub async fn node_in_use(&self, hub: &Hub) -> Result<bool> {
        match self {
            Store::Memory(_) => Ok(false),
            Store::Redis(store) => store.node_in_use(hub.node(), hub.run()).await,
        }
    }

    /// Every live node with its open streams, by name (embedded: this node).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        forward!(self.nodes())
    }

    /// Changes each time the store's link has a new connection after losing one (Redis);
    /// `None` for the memory store, which never loses one.
    pub fn reconnections(&self) -> Option<watch::Receiver<u64>> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(store) => Some(store.reconnections()),
        }
    }
}

/// What the store keeps of a subscription that took an escalation's push
/// ([`Store::push_sent`]): the start of its endpoint's SHA-256, hex.
pub fn push_fingerprint(endpoint: &str) -> String {
    let mut hash = crate::model::sha256_hex(endpoint);
    hash.truncate(16);
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resume from the head replays nothing; from inside the window replays the rest.
    #[test]
    fn replay_inside_window() {
        assert_eq!(replay_window(5, 5, Some(1)), ReplayWindow::Nothing);
        assert_eq!(replay_window(3, 5, Some(1)), ReplayWindow::From(4));
        assert_eq!(replay_window(0, 5, Some(1)), ReplayWindow::From(1));
    }

    /// An id older than the oldest retained change, or beyond the head, resets.
    #[test]
    fn replay_outside_window_resets() {
        assert_eq!(replay_window(2, 10, Some(5)), ReplayWindow::Reset);
        assert_eq!(replay_window(11, 10, Some(5)), ReplayWindow::Reset);
        assert_eq!(replay_window(3, 10, None), ReplayWindow::Reset);
    }

    /// The first id after a trimmed log's gap is still replayable when nothing is missing.
    #[test]
    fn replay_at_window_edge() {
        assert_eq!(replay_window(4, 10, Some(5)), ReplayWindow::From(5));
    }

    /// A session record keeps its end to the millisecond, and whole seconds (rounded down)
    /// beside it for builds that read only those; their records read by whole seconds.
    #[test]
    fn session_records_end_to_the_millisecond() {
        let record = SessionRecord {
            user: "alice".into(),
            ends_ms: 1_700_000_000_950,
            secret_hash: "ab".into(),
        };
        let stored = serde_json::to_value(&record).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"user": "alice", "exp": 1_700_000_000u64,
                "exp_ms": 1_700_000_000_950u64, "hash": "ab"})
        );
        assert_eq!(
            serde_json::from_value::<SessionRecord>(stored).unwrap(),
            record
        );
        let older: SessionRecord =
            serde_json::from_str(r#"{"user":"alice","exp":1700000000,"hash":"ab"}"#).unwrap();
        assert_eq!(older.ends_ms, 1_700_000_000_000);
    }
}
