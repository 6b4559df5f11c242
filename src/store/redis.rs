//! Redis store: the same surface as the memory store, over the layout in `keys`. Tray writes
//! are Lua scripts that store, log and announce a change atomically per user, on one slot;
//! reads are single commands or pipelines within that slot. A command that fails maps to 503.
//! A publish sends many users per script call and a batch's calls together (see
//! [`RedisStore::publish`]): a 10k-member group is a few round trips, not 10,000.
//! Tray scripts carry a deadline on Redis's clock and refuse to run past it, so a write that
//! was answered 503 (bytes stuck in a network black hole) cannot commit when they arrive. The
//! change log's epoch is drawn here and handed to the scripts, which keep an existing one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use redis::{AsyncCommands, Script, ScriptInvocation, Value};

use super::batch::BATCH_CHANNEL;
use super::keys::{self, UserKeys};
use super::nodes::{self, NodeInfo, PushPeers, NODE_ALIVE_TTL_MS, PUSH_HANDOVER_MS};
use super::{
    ActionOutcome, Due, Escalation, Head, ListQuery, Page, Preferences, Published, Recipient,
    Replay, ReplayWindow, SessionRecord, Subscription, TrayCounts, IDEMPOTENCY_TTL_MS,
    LOG_CAPACITY, MAX_SESSIONS_PER_USER, MAX_SUBSCRIPTIONS, PUSH_LEASE_MS,
};
use crate::error::{refuses_the_data, Error, Result};
use crate::hub::Hub;
use crate::model::{
    id_ms, ms_to_rfc3339, now_ms, now_secs, push_json_str, rfc3339, sha256_hex,
    too_many_preferences, Change, ChangeKind, Counts, Epoch, EventId, Mark, Marked, Notification,
    NotificationId, PresenceEntry, TakenAction, Target, Template, MAX_PREFERENCES,
};
use crate::redis_conn::{as_str, RedisConn};
use crate::shutdown::Shutdown;

/// How long an escalation a node left for another keeps the tray out of the due index.
const PUSH_HOLD_MS: u64 = 1_000;
/// Presence entries written at once when they are recorded again after an outage.
const PRESENCE_WRITES: usize = 32;
/// Users per `publish.lua` call: enough to share the script's fixed cost (about a third of a
/// one-user call), few enough that one call holds Redis for a few milliseconds at most.
pub const USERS_PER_SCRIPT: usize = 64;

#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConn,
    scripts: &'static Scripts,
    max_per_user: usize,
    /// This node sends Web Push: notifications that become active escalate, and it sends the
    /// escalations that come due.
    push: bool,
    /// Whether other nodes send Web Push (read at each heartbeat, see [`Self::keep_alive`]).
    /// With Web Push off here, notifications still escalate while one does, or did within
    /// [`PUSH_HANDOVER_MS`] (it may be restarting), and the due escalations are left to it:
    /// nodes with different Web Push flags, as in a rolling change of them, lose no push.
    push_peers: Arc<PushPeers>,
}

struct Scripts {
    publish: Script,
    mark: Script,
    list: Script,
    counts: Script,
    get: Script,
    due: Script,
    action: Script,
    head: Script,
    rehint: Script,
    trim: Script,
}

/// A tray script: `common.lua` (the key layout and the shared steps) and the script's own.
macro_rules! tray_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("scripts/common.lua"),
            include_str!(concat!("scripts/", $file))
        ))
    };
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        publish: tray_script!("publish.lua"),
        mark: tray_script!("mark.lua"),
        list: tray_script!("list.lua"),
        counts: tray_script!("counts.lua"),
        get: tray_script!("get.lua"),
        due: tray_script!("due.lua"),
        action: tray_script!("action.lua"),
        head: tray_script!("head.lua"),
        rehint: Script::new(include_str!("scripts/rehint.lua")),
        trim: tray_script!("trim.lua"),
    })
}

impl RedisStore {
    pub fn new(conn: RedisConn, max_per_user: usize, push: bool) -> Self {
        RedisStore {
            conn,
            scripts: scripts(),
            max_per_user,
            push,
            push_peers: Arc::default(),
        }
    }

    /// Some node sends Web Push, so notifications that become active escalate.
    fn escalates(&self) -> bool {
        self.push || self.push_peers.others()
    }

    /// [`Self::escalates`] as the scripts take it.
    fn push_flag(&self) -> &'static str {
        if self.escalates() {
            "1"
        } else {
            "0"
        }
    }

    /// Who sends the due escalations, as `due.lua` takes it: this node, only another one (`w`:
    /// left to it), or none (cancelled).
    fn due_push_flag(&self) -> &'static str {
        match (self.push, self.push_peers.others()) {
            (true, _) => "1",
            (false, true) => "w",
            (false, false) => "0",
        }
    }

    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// `script` on the tray of `k`: its base key, and on a cluster every key of the tray
    /// (`UserKeys::tray_keys`), so a slot migration never runs it against half of them.
    fn tray<'a>(&self, script: &'a Script, k: &UserKeys) -> ScriptInvocation<'a> {
        let mut inv = script.key(k.base());
        if self.conn.is_cluster() {
            for key in k.tray_keys() {
                inv.key(key);
            }
        }
        inv
    }

    /// Changes each time the store's link has a new connection after losing one.
    pub fn reconnections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.conn.reconnections()
    }

    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The record expires with the session; the user's session index (one slot with the
    /// user's other keys) keeps creation order and lives as long as the newest session. Its
    /// scores are creation times in microseconds: sessions created within one millisecond
    /// still sort by creation, not by id, so the cap ends the oldest.
    pub async fn put_session(&self, id: &str, record: &SessionRecord) -> Result<Vec<String>> {
        let value = serde_json::to_string(record).map_err(|e| Error::Internal(e.to_string()))?;
        let exp = record.exp.max(now_secs() + 1);
        let mut conn = self.conn();
        let _: () = redis::cmd("SET")
            .arg(keys::session(id))
            .arg(value)
            .arg("EXAT")
            .arg(exp)
            .query_async(&mut conn)
            .await?;
        let index = UserKeys::new(&record.user).sessions();
        let (count,): (usize,) = redis::pipe()
            .zadd(&index, id, now_micros())
            .ignore()
            .cmd("EXPIREAT")
            .arg(&index)
            .arg(exp)
            .arg("NX")
            .ignore()
            .cmd("EXPIREAT")
            .arg(&index)
            .arg(exp)
            .arg("GT")
            .ignore()
            .zcard(&index)
            .query_async(&mut conn)
            .await?;
        if count <= MAX_SESSIONS_PER_USER {
            return Ok(Vec::new());
        }
        // Those older than the newest 100 now stay that old: ending them is right whoever
        // else logs in meanwhile. Each is ended by the one login whose ZREM takes it, so
        // concurrent logins end the excess once, not once each.
        let older: Vec<String> = conn
            .zrange(&index, 0, -(MAX_SESSIONS_PER_USER as isize) - 1)
            .await?;
        if older.is_empty() {
            // Other logins trimmed meanwhile (an empty pipeline answers nothing to parse).
            return Ok(Vec::new());
        }
        let mut removing = redis::pipe();
        for old in &older {
            removing.zrem(&index, old);
        }
        let removed: Vec<i64> = removing.query_async(&mut conn).await?;
        let evicted: Vec<String> = older
            .into_iter()
            .zip(removed)
            .filter_map(|(old, n)| (n == 1).then_some(old))
            .collect();
        for old in &evicted {
            let _: () = conn.del(keys::session(old)).await?;
        }
        Ok(evicted)
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        let value: Option<String> = self.conn().get(keys::session(id)).await?;
        Ok(value
            .and_then(|v| serde_json::from_str::<SessionRecord>(&v).ok())
            .filter(SessionRecord::is_live))
    }

    pub async fn delete_session(&self, user: &str, id: &str) -> Result<()> {
        let mut conn = self.conn();
        let _: () = conn.del(keys::session(id)).await?;
        let _: () = conn.zrem(UserKeys::new(user).sessions(), id).await?;
        Ok(())
    }

    /// The recipients in script calls of up to [`USERS_PER_SCRIPT`] users, all sent at once on
    /// the multiplexed connection (one round trip for the lot). On one server a call takes any
    /// users. On a cluster a call takes the users of one slot (nearly always one), and each
    /// call is a command of its own that the cluster connection routes, pipelines per node
    /// and redirects (`MOVED`, `ASK`) by itself: such a refusal means the script did not run,
    /// so sending it again stores nothing twice. (A `redis::Pipeline` spanning slots is no
    /// way around that: redis 1.x sends a pipeline to its first key's node, refuses crossed
    /// slots, and answers a redirect of any one command by sending the whole pipeline again.)
    pub async fn publish(
        &self,
        template: &Arc<Template>,
        recipients: &[Recipient<'_>],
        key: Option<&str>,
    ) -> Vec<Result<Published>> {
        let call = Call {
            template,
            idempotency: key.map(sha256_hex),
            deadline: self.conn.write_deadline_ms(),
            now: now_ms(),
        };
        let call = &call;
        // The due index names the users before their notification exists (a hint that comes
        // too early finds nothing due and is moved on), and again after (a due task that ran
        // in between may have moved it past this notification's time).
        let due = template.schedule().first();
        if let Some(at) = due {
            if let Err(e) = self.hint(recipients.iter().map(|r| r.user), at).await {
                let text = e.to_string();
                return recipients
                    .iter()
                    .map(|_| Err(Error::Unavailable(text.clone().into())))
                    .collect();
            }
        }
        let calls = self.script_calls(recipients);
        let replies = futures_util::future::join_all(calls.iter().map(|users| {
            let users: Vec<Recipient<'_>> = users.iter().map(|&i| recipients[i]).collect();
            async move { self.publish_call(call, &users).await }
        }))
        .await;
        let mut outcomes: Vec<Option<Result<Published>>> = std::iter::repeat_with(|| None)
            .take(recipients.len())
            .collect();
        for (users, replies) in calls.iter().zip(replies) {
            for (&i, outcome) in users.iter().zip(replies) {
                outcomes[i] = Some(outcome);
            }
        }
        if let Some(at) = due {
            if let Err(e) = self.hint(recipients.iter().map(|r| r.user), at).await {
                tracing::warn!(
                    error = %e,
                    "could not note a publish's due time a second time (check Redis): a \
                     scheduled delivery may wait for the next due scan"
                );
            }
        }
        let escalating: Vec<&str> = recipients
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, Some(Ok(p)) if p.escalates))
            .map(|(to, _)| to.user)
            .collect();
        if !escalating.is_empty() {
            if let Err(e) = self.hint(escalating.iter().copied(), call.now).await {
                // Stored, so answered: the note is retried apart until the index's shard
                // answers (say, a cluster primary being replaced), or nothing would push them.
                tracing::warn!(
                    error = %e,
                    "could not note Web Push escalations as due (check Redis); retrying"
                );
                let users: Vec<String> = escalating.iter().map(|u| u.to_string()).collect();
                tokio::spawn(self.clone().hint_until_noted(users, call.now));
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::Internal("a recipient had no outcome".into()))))
            .collect()
    }

    /// [`Self::hint`] retried with backoff (0.25 s doubling up to 4 s) for up to two minutes.
    async fn hint_until_noted(self, users: Vec<String>, at: u64) {
        let mut wait = Duration::from_millis(250);
        let give_up = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            tokio::time::sleep(wait).await;
            match self.hint(users.iter().map(String::as_str), at).await {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() >= give_up => {
                    tracing::error!(
                        error = %e,
                        users = users.len(),
                        "Web Push escalations could not be noted as due for two minutes: \
                         those notifications are not pushed"
                    );
                    return;
                }
                Err(_) => wait = (wait * 2).min(Duration::from_secs(4)),
            }
        }
    }

    /// Note in the due index that `users` have something due at `at` (an entry only ever
    /// moves earlier here).
    async fn hint<'a>(&self, users: impl Iterator<Item = &'a str>, at: u64) -> Result<()> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(keys::due_index()).arg("LT");
        for user in users {
            cmd.arg(at).arg(user);
        }
        let _: () = cmd.query_async(&mut self.conn()).await?;
        Ok(())
    }

    pub async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, u64)>> {
        let due: Vec<(String, u64)> = redis::cmd("ZRANGE")
            .arg(keys::due_index())
            .arg("-inf")
            .arg(now_ms)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await?;
        Ok(due)
    }

    pub async fn defer_due(&self, user: &str, at_ms: u64) -> Result<()> {
        let _: () = redis::cmd("ZADD")
            .arg(keys::due_index())
            .arg("XX")
            .arg(at_ms)
            .arg(user)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Run `due.lua` on the user's slot, then move the index entry (`rehint.lua`), then read
    /// the tray's first due time (deliveries, expiries, escalations) once more and lower the
    /// entry to it: a snooze or publish that committed between the two scripts, and whose own
    /// hint the entry's old value swallowed, is named again.
    pub async fn process_due(&self, user: &str, hint: u64) -> Result<Due> {
        let k = UserKeys::new(user);
        let mut conn = self.conn();
        let out: Vec<String> = self
            .tray(&self.scripts.due, &k)
            .arg(now_ms())
            .arg(LOG_CAPACITY)
            .arg(Epoch::random().as_str())
            .arg(self.due_push_flag())
            .arg(PUSH_LEASE_MS)
            .arg(PUSH_HANDOVER_MS)
            .arg(PUSH_HOLD_MS)
            .invoke_async(&mut conn)
            .await?;
        let shape = || Error::Internal("due script returned an unexpected shape".into());
        let [next, cancelled, unread, rest @ ..] = out.as_slice() else {
            return Err(shape());
        };
        let unread_count = unread.parse().map_err(|_| shape())?;
        let mut due = Due {
            escalations: Vec::new(),
            cancelled: cancelled.parse().map_err(|_| shape())?,
        };
        for e in rest.chunks(3) {
            let [stage, at, json] = e else {
                return Err(shape());
            };
            due.escalations.push(Escalation {
                send: stage == "send",
                due_ms: at.parse().map_err(|_| shape())?,
                notification: serde_json::from_str(json).map_err(|_| shape())?,
                unread_count,
            });
        }
        let _: i64 = self
            .scripts
            .rehint
            .key(keys::due_index())
            .arg(user)
            .arg(hint)
            .arg(next)
            .invoke_async(&mut conn)
            .await?;
        type Firsts = Vec<(String, u64)>;
        let mut firsts = redis::pipe();
        for schedule in ["wake", "expire", "pushdue"] {
            firsts
                .cmd("ZRANGE")
                .arg(format!("{}:{schedule}", k.base()))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let (wake, expire, mut pushdue): (Firsts, Firsts, Firsts) =
            firsts.query_async(&mut conn).await?;
        if !self.push {
            // As the script holds them: this node leaves escalations to another one.
            let hold = now_ms() + PUSH_HOLD_MS;
            pushdue.iter_mut().for_each(|(_, at)| *at = (*at).max(hold));
        }
        let first = [wake, expire, pushdue]
            .iter()
            .flatten()
            .map(|(_, at)| *at)
            .min();
        if let Some(at) = first {
            self.hint(std::iter::once(user), at).await?;
        }
        Ok(due)
    }

    pub async fn push_later(&self, user: &str, id: &str, at_ms: u64, send: bool) -> Result<()> {
        let base = UserKeys::new(user);
        let base = base.base();
        let stage = if send { "send" } else { "check" };
        let (moved,): (u64,) = redis::pipe()
            .cmd("ZADD")
            .arg(format!("{base}:pushdue"))
            .arg("XX")
            .arg("CH")
            .arg(at_ms)
            .arg(id)
            .cmd("HSET")
            .arg(format!("{base}:pushstage"))
            .arg(id)
            .arg(stage)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        if moved > 0 {
            self.hint(std::iter::once(user), at_ms).await?;
        }
        Ok(())
    }

    pub async fn extend_push_lease(&self, user: &str, id: &str, until_ms: u64) -> Result<()> {
        let _: () = redis::cmd("ZADD")
            .arg(format!("{}:pushdue", UserKeys::new(user).base()))
            .arg("XX")
            .arg("GT")
            .arg(until_ms)
            .arg(id)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    pub async fn push_done(&self, user: &str, id: &str) -> Result<()> {
        let base = UserKeys::new(user);
        let base = base.base();
        let _: () = redis::pipe()
            .zrem(format!("{base}:pushdue"), id)
            .ignore()
            .hdel(format!("{base}:pushstage"), id)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Subscriptions live in the user's `push` hash (endpoint → JSON); the cap drops the
    /// oldest by their `created_ms`.
    pub async fn add_subscription(&self, user: &str, sub: &Subscription) -> Result<()> {
        let key = format!("{}:push", UserKeys::new(user).base());
        let json = serde_json::to_string(sub).map_err(|e| Error::Internal(e.to_string()))?;
        let mut conn = self.conn();
        let previous: Option<String> = redis::cmd("SET")
            .arg(keys::push_owner(&sub.endpoint))
            .arg(user)
            .arg("GET")
            .query_async(&mut conn)
            .await?;
        if let Some(previous) = previous.filter(|p| p != user) {
            let theirs = format!("{}:push", UserKeys::new(&previous).base());
            let _: () = conn.hdel(theirs, &sub.endpoint).await?;
        }
        let _: () = conn.hset(&key, &sub.endpoint, json).await?;
        let mut all = self.subscriptions(user).await?;
        if all.len() > MAX_SUBSCRIPTIONS {
            all.sort_by_key(|s| s.created_ms);
            let excess = all.len() - MAX_SUBSCRIPTIONS;
            for old in &all[..excess] {
                self.remove_subscription(user, &old.endpoint).await?;
            }
        }
        Ok(())
    }

    pub async fn remove_subscription(&self, user: &str, endpoint: &str) -> Result<bool> {
        let key = format!("{}:push", UserKeys::new(user).base());
        let mut conn = self.conn();
        let n: u64 = conn.hdel(key, endpoint).await?;
        let owner = keys::push_owner(endpoint);
        let owned: Option<String> = conn.get(&owner).await?;
        if owned.as_deref() == Some(user) {
            let _: () = conn.del(&owner).await?;
        }
        Ok(n > 0)
    }

    pub async fn subscriptions(&self, user: &str) -> Result<Vec<Subscription>> {
        let key = format!("{}:push", UserKeys::new(user).base());
        let all: Vec<String> = self.conn().hvals(key).await?;
        let mut subs: Vec<Subscription> = all
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        subs.sort_by_key(|s| s.created_ms);
        Ok(subs)
    }

    /// Recipient indices per script call: in order by [`USERS_PER_SCRIPT`] on one server; on
    /// a cluster grouped by slot (first-seen order), each group cut at [`USERS_PER_SCRIPT`].
    fn script_calls(&self, recipients: &[Recipient<'_>]) -> Vec<Vec<usize>> {
        if !self.conn.is_cluster() {
            let all: Vec<usize> = (0..recipients.len()).collect();
            return all
                .chunks(USERS_PER_SCRIPT)
                .map(<[usize]>::to_vec)
                .collect();
        }
        let mut calls: Vec<Vec<usize>> = Vec::new();
        let mut open: HashMap<redis::cluster_routing::Slot, usize> = HashMap::new();
        for (i, to) in recipients.iter().enumerate() {
            let slot = UserKeys::new(to.user).slot();
            let call = match open.get(&slot) {
                Some(&call) if calls[call].len() < USERS_PER_SCRIPT => call,
                _ => {
                    calls.push(Vec::with_capacity(1));
                    open.insert(slot, calls.len() - 1);
                    calls.len() - 1
                }
            };
            calls[call].push(i);
        }
        calls
    }

    /// One `publish.lua` call for `users`; one outcome per user, in order.
    async fn publish_call(
        &self,
        call: &Call<'_>,
        users: &[Recipient<'_>],
    ) -> Vec<Result<Published>> {
        let per_user = if call.idempotency.is_some() { 2 } else { 1 };
        let keys: Vec<UserKeys> = users.iter().map(|to| UserKeys::new(to.user)).collect();
        // On a cluster the call's users share a slot; each declares its tray's keys too, after
        // every user's base and idempotency keys (the script does not read them).
        let declared = if self.conn.is_cluster() {
            keys.len() * UserKeys::TRAY_KEYS
        } else {
            0
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.scripts.publish.get_hash())
            .arg(users.len() * per_user + declared);
        for k in &keys {
            k.write_publish(&mut cmd, call.idempotency.as_deref());
        }
        if declared > 0 {
            for key in keys.iter().flat_map(UserKeys::tray_keys) {
                cmd.arg(key);
            }
        }
        cmd.arg(call.deadline)
            .arg(self.max_per_user)
            .arg(LOG_CAPACITY)
            .arg(call.now)
            .arg(IDEMPOTENCY_TTL_MS)
            .arg(per_user)
            .arg(call.template.tail())
            .arg(call.template.mutable_category().unwrap_or(""))
            .arg(call.template.category().unwrap_or(""))
            .arg(call.template.collapse_key().unwrap_or(""));
        let schedule = call.template.schedule();
        for at in [schedule.deliver_ms, schedule.expire_ms] {
            match at {
                Some(at) => cmd.arg(at),
                None => cmd.arg(""),
            };
        }
        cmd.arg(self.push_flag());
        // Many users on one server: one announcement for all (a cluster call touches one
        // slot and announces on each user's channel).
        if users.len() > 1 && !self.conn.is_cluster() {
            cmd.arg(BATCH_CHANNEL);
        } else {
            cmd.arg("");
        }
        let mut user = String::new();
        for to in users {
            user.clear();
            push_json_str(&mut user, to.user);
            cmd.arg(to.id.as_str())
                .arg(user.as_str())
                .arg(Epoch::random().as_str());
        }
        let mut conn = self.conn.for_deadline_writes();
        let mut reply = cmd.query_async::<Value>(&mut conn).await;
        if matches!(&reply, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
        {
            // Redis lost its scripts (a restart, SCRIPT FLUSH): load it and send the call again.
            reply = match self.scripts.publish.load_async(&mut conn).await {
                Ok(_) => cmd.query_async::<Value>(&mut conn).await,
                Err(e) => Err(e),
            };
        }
        match reply {
            Ok(reply) => outcomes(reply, users),
            Err(e) => {
                // The call failed as a whole: every user of it has nothing stored (the error
                // is not `Clone`, so the others carry its text).
                let e = late(e);
                let text = match &e {
                    Error::Unavailable(source) => source.to_string(),
                    other => other.to_string(),
                };
                let mut out = vec![Err(e)];
                out.extend((1..users.len()).map(|_| Err(Error::Unavailable(text.clone().into()))));
                out
            }
        }
    }

    pub async fn list(&self, user: &str, q: &ListQuery) -> Result<Page> {
        let k = UserKeys::new(user);
        let flag = |on: bool| if on { "1" } else { "0" };
        let mut inv = self.tray(&self.scripts.list, &k);
        inv.arg(q.before.as_deref().unwrap_or(""))
            .arg(q.limit)
            .arg(q.archived.as_str())
            .arg(flag(q.snoozed))
            .arg(flag(q.unread))
            .arg(flag(q.unseen))
            .arg(Epoch::random().as_str());
        for category in &q.categories {
            inv.arg(category);
        }
        let out: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        let shape = || Error::Internal("list script returned an unexpected shape".into());
        let [unread, unseen, more, epoch, seq, rest @ ..] = out.as_slice() else {
            return Err(shape());
        };
        let position = EventId {
            epoch: Epoch::parse(epoch).ok_or_else(shape)?,
            seq: seq.parse().map_err(|_| shape())?,
        };
        let notifications: Vec<Notification> = rest
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        let counts = Counts {
            unread: unread.parse().unwrap_or(0),
            unseen: unseen.parse().unwrap_or(0),
        };
        Ok(Page::new(notifications, more == "1", counts, position))
    }

    pub async fn counts(&self, user: &str) -> Result<TrayCounts> {
        let k = UserKeys::new(user);
        let out: Vec<String> = self
            .tray(&self.scripts.counts, &k)
            .arg(Epoch::random().as_str())
            .invoke_async(&mut self.conn())
            .await?;
        let shape = || Error::Internal("counts script returned an unexpected shape".into());
        let number = |s: &String| s.parse::<u64>().map_err(|_| shape());
        let [unread, unseen, epoch, seq, rest @ ..] = out.as_slice() else {
            return Err(shape());
        };
        let mut by_category = std::collections::BTreeMap::new();
        for c in rest.chunks(3) {
            let [category, unread, unseen] = c else {
                return Err(shape());
            };
            let counts = Counts {
                unread: number(unread)?,
                unseen: number(unseen)?,
            };
            by_category.insert(category.clone(), counts);
        }
        Ok(TrayCounts {
            counts: Counts {
                unread: number(unread)?,
                unseen: number(unseen)?,
            },
            by_category,
            position: EventId {
                epoch: Epoch::parse(epoch).ok_or_else(shape)?,
                seq: number(seq)?,
            },
        })
    }

    pub async fn get(&self, user: &str, id: &str) -> Result<Option<Notification>> {
        let json: String = self
            .tray(&self.scripts.get, &UserKeys::new(user))
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(serde_json::from_str(&json).ok())
    }

    pub async fn claim_action(&self, user: &str, id: &str, ttl: Duration) -> Result<bool> {
        let claimed: Option<String> = redis::cmd("SET")
            .arg(UserKeys::new(user).acting(id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.conn())
            .await?;
        Ok(claimed.is_some())
    }

    pub async fn release_action(&self, user: &str, id: &str) -> Result<()> {
        let _: () = self.conn().del(UserKeys::new(user).acting(id)).await?;
        Ok(())
    }

    pub async fn take_action(
        &self,
        user: &str,
        id: &str,
        action: &TakenAction,
    ) -> Result<ActionOutcome> {
        let json = serde_json::to_string(action).map_err(|e| Error::Internal(e.to_string()))?;
        let now = SystemTime::now();
        let mut conn = self.conn.for_deadline_writes();
        let out: Vec<String> = self
            .tray(&self.scripts.action, &UserKeys::new(user))
            .arg(id)
            .arg(json)
            .arg(&action.at)
            .arg(crate::model::unix_ms(now))
            .arg(LOG_CAPACITY)
            .arg(self.conn.write_deadline_ms())
            .arg(Epoch::random().as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(late)?;
        match out.as_slice() {
            [outcome] if outcome == "missing" => Ok(ActionOutcome::Missing),
            [outcome] if outcome == "conflict" => Ok(ActionOutcome::Conflict),
            [outcome, json] if outcome == "taken" => serde_json::from_str(json)
                .map(|n| ActionOutcome::Taken(Box::new(n)))
                .map_err(|e| Error::Internal(format!("action script: {e}"))),
            _ => Err(Error::Internal(
                "action script returned an unexpected shape".into(),
            )),
        }
    }

    /// A snooze is noted in the due index before the script (see [`RedisStore::publish`]).
    pub async fn mark(&self, user: &str, target: &Target, mark: Mark) -> Result<Marked> {
        let k = UserKeys::new(user);
        if let Mark::Snooze(at) = mark {
            self.hint(std::iter::once(user), at).await?;
        }
        let mut inv = self.tray(&self.scripts.mark, &k);
        let now = SystemTime::now();
        inv.arg(mark.as_str())
            .arg(crate::model::unix_ms(now))
            .arg(rfc3339(now))
            .arg(LOG_CAPACITY)
            .arg(if matches!(target, Target::All) {
                "1"
            } else {
                "0"
            })
            .arg(self.conn.write_deadline_ms())
            .arg(Epoch::random().as_str());
        match mark {
            Mark::Snooze(at) => inv.arg(at).arg(ms_to_rfc3339(at)),
            _ => inv.arg("").arg(""),
        };
        inv.arg(self.push_flag());
        if let Target::Ids(ids) = target {
            for id in ids {
                inv.arg(id);
            }
        }
        let mut conn = self.conn.for_deadline_writes();
        let out: Vec<String> = inv.invoke_async(&mut conn).await.map_err(late)?;
        let mut out = out.into_iter();
        let found = out.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        let marked = Marked {
            found,
            changed: out.collect(),
        };
        match (mark, marked.changed.is_empty()) {
            (Mark::Snooze(at), false) => self.hint(std::iter::once(user), at).await?,
            // An unsnoozed notification may escalate now (stored, so answered: the note is
            // retried apart if it fails).
            (Mark::Unsnooze, false) if self.escalates() => {
                let at = crate::model::unix_ms(now);
                if self.hint(std::iter::once(user), at).await.is_err() {
                    tokio::spawn(self.clone().hint_until_noted(vec![user.to_owned()], at));
                }
            }
            _ => {}
        }
        Ok(marked)
    }

    /// SCAN every tray and every change log (on every primary of a cluster); each user's old
    /// ids are deleted through the mark script, then the log is cut
    /// (`trim.lua`). A key that is not a log, or a user that fails, is logged and skipped:
    /// one bad key never stops the round for everyone else. The round fails only when Redis
    /// itself is unreachable.
    pub async fn purge_before(&self, cutoff: &str, log_before_ms: u64) -> Result<usize> {
        let mut conn = self.conn();
        let mut removed = 0;
        let mut found = Vec::new();
        for pattern in keys::CLEANED_PATTERNS {
            found.extend(conn.scan_match(pattern).await?);
        }
        let mut users = std::collections::HashSet::new();
        for key in found {
            let Some(user) = keys::user_of_cleaned_key(&key) else {
                tracing::warn!(
                    key,
                    "retention: skipped a key that only looks like a tray; another program \
                     writes keys under herald: (give it its own prefix or database)"
                );
                continue;
            };
            if !users.insert(user.clone()) {
                continue; // its tray and its log: one visit
            }
            match self
                .purge_user(&mut conn, &user, cutoff, log_before_ms)
                .await
            {
                Ok(n) => removed += n,
                Err(Error::Unavailable(e)) if is_connection_error(&*e) => {
                    return Err(Error::Unavailable(e))
                }
                Err(e) => {
                    // The key names its user: it goes to debug, as user ids do.
                    tracing::warn!(
                        error = %e,
                        "retention: skipped a tray that could not be cleaned; run with \
                         HERALD_LOG=herald=debug to see its key, inspect it (TYPE, ZRANGE) and \
                         delete it if it is not Herald's"
                    );
                    tracing::debug!(key, "retention: the tray skipped");
                }
            }
        }
        Ok(removed)
    }

    async fn purge_user(
        &self,
        conn: &mut RedisConn,
        user: &str,
        cutoff: &str,
        log_before_ms: u64,
    ) -> Result<usize> {
        let keys = UserKeys::new(user);
        let mut old: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.order())
            .arg("-")
            .arg(format!("({cutoff}"))
            .arg("BYLEX")
            .query_async(conn)
            .await?;
        if !old.is_empty() {
            // A notification delivered later ages from its delivery (`deliver_at` is in the
            // stored JSON; absent for the others).
            let items: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(format!("{}:items", keys.base()))
                .arg(&old)
                .query_async(conn)
                .await?;
            let cutoff_ms = id_ms(cutoff).unwrap_or(0);
            let mut items = items.into_iter();
            old.retain(|_| {
                let json = items.next().flatten().unwrap_or_default();
                deliver_ms(&json).is_none_or(|at| at < cutoff_ms)
            });
        }
        let removed = if old.is_empty() {
            0
        } else {
            let marked = self.mark(user, &Target::Ids(old), Mark::Deleted).await?;
            marked.changed.len()
        };
        let _dropped: u64 = self
            .tray(&self.scripts.trim, &keys)
            .arg(log_before_ms)
            .invoke_async(conn)
            .await?;
        Ok(removed)
    }

    /// `SET NX` the cleaner lock, or extend it when this node already holds it.
    pub async fn claim_cleaner(&self, node: &str, ttl: Duration) -> Result<bool> {
        let mut conn = self.conn();
        let key = keys::cleaner_lock();
        let ttl_ms = ttl.as_millis() as u64;
        let taken: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(node)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await?;
        if taken.is_some() {
            return Ok(true);
        }
        let holder: Option<String> = conn.get(&key).await?;
        if holder.as_deref() == Some(node) {
            let _: () = conn.pexpire(&key, ttl_ms as i64).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// `SET NX GET` the epoch, so a user without a log gets one that the first commit keeps.
    pub async fn head(&self, user: &str) -> Result<Head> {
        Ok(self.open_at(user, None).await?.0)
    }

    pub async fn replay(&self, user: &str, after: EventId, after_ms: u64) -> Result<Replay> {
        let read = self.read_head(user, None, Some(after), Some(after_ms));
        // No epoch (the log is gone): the position means nothing here.
        Ok(match read.await? {
            (Some(_), Some(replay)) => replay,
            _ => Replay::Reset,
        })
    }

    /// The head (creating the epoch when the user has none) and, with `after`, the replay
    /// from it: one script, so one round trip and one instant.
    pub async fn open_at(
        &self,
        user: &str,
        after: Option<EventId>,
    ) -> Result<(Head, Option<Replay>)> {
        let (head, replay) = self
            .read_head(user, Some(Epoch::random()), after, None)
            .await?;
        let head = head.ok_or_else(|| Error::Internal("head.lua kept no epoch".into()))?;
        Ok((head, replay))
    }

    /// `head.lua`: the head (`None` when the user has no epoch and `fresh` is `None`) and,
    /// with `after`, the replay after it (`Reset` for a position of another epoch). With
    /// `handed_out` (`after` is a position this store gave a stream, not one a client sent,
    /// and the commit ms of its change, 0 if unknown), `after` beyond the head or a change
    /// of another commit ms at its seq shows the log went back, and the log takes a new epoch.
    async fn read_head(
        &self,
        user: &str,
        fresh: Option<Epoch>,
        after: Option<EventId>,
        handed_out: Option<u64>,
    ) -> Result<(Option<Head>, Option<Replay>)> {
        let k = UserKeys::new(user);
        let rotate_to = handed_out.map(|_| Epoch::random());
        let out: Vec<String> = self
            .tray(&self.scripts.head, &k)
            .arg(fresh.as_ref().map_or("", Epoch::as_str))
            .arg(after.map_or(String::new(), |a| a.seq.to_string()))
            .arg(LOG_CAPACITY)
            .arg(match (&after, handed_out) {
                (Some(a), Some(_)) => a.epoch.as_str(),
                _ => "",
            })
            .arg(rotate_to.as_ref().map_or("", Epoch::as_str))
            .arg(handed_out.unwrap_or(0))
            .invoke_async(&mut self.conn())
            .await?;
        let shape = || Error::Internal("head script returned an unexpected shape".into());
        let [epoch, seq, unread, unseen, entries @ ..] = out.as_slice() else {
            return Err(shape());
        };
        if epoch.is_empty() {
            return Ok((None, None));
        }
        let epoch = Epoch::parse(epoch)
            .ok_or_else(|| Error::Internal(format!("{} is not an epoch: {epoch:?}", k.epoch())))?;
        let head = Head {
            epoch,
            seq: seq.parse().map_err(|_| shape())?,
            unread_count: unread.parse().map_err(|_| shape())?,
            unseen_count: unseen.parse().map_err(|_| shape())?,
        };
        // A position of another epoch (or of a log created just now) means nothing here.
        let replay = after.map(|after| {
            if after.epoch == head.epoch {
                replay_from(after.seq, &head, entries)
            } else {
                Replay::Reset
            }
        });
        Ok((Some(head), replay))
    }

    pub async fn preferences(&self, user: &str) -> Result<Preferences> {
        let all: std::collections::HashMap<String, String> = self
            .conn()
            .hgetall(UserKeys::new(user).preferences())
            .await?;
        Ok(all
            .into_iter()
            .map(|(c, muted)| (c, muted == "1"))
            .collect())
    }

    /// A new category beyond [`MAX_PREFERENCES`] is refused (two set at once at the limit
    /// may both pass).
    pub async fn set_muted(&self, user: &str, category: &str, muted: bool) -> Result<()> {
        let flag = if muted { "1" } else { "0" };
        let key = UserKeys::new(user).preferences();
        let mut conn = self.conn();
        let (known, held): (bool, usize) = redis::pipe()
            .hexists(&key, category)
            .hlen(&key)
            .query_async(&mut conn)
            .await?;
        if !known && held >= MAX_PREFERENCES {
            return Err(too_many_preferences());
        }
        let _: () = conn.hset(&key, category, flag).await?;
        Ok(())
    }

    pub async fn add_members(&self, group: &str, users: &[String]) -> Result<()> {
        if !users.is_empty() {
            let _: () = self.conn().sadd(keys::group(group), users).await?;
        }
        Ok(())
    }

    pub async fn remove_member(&self, group: &str, user: &str) -> Result<bool> {
        let n: u64 = self.conn().srem(keys::group(group), user).await?;
        Ok(n > 0)
    }

    pub async fn members(&self, group: &str) -> Result<Vec<String>> {
        let mut members: Vec<String> = self.conn().smembers(keys::group(group)).await?;
        members.sort();
        Ok(members)
    }

    /// Record the entry; returns how many entries the user's presence holds now (live or
    /// left by a dead node), in the same round trip.
    pub async fn add_presence(&self, user: &str, entry: &PresenceEntry) -> Result<usize> {
        let value = serde_json::to_string(entry).map_err(|e| Error::Internal(e.to_string()))?;
        let key = UserKeys::new(user).presence();
        let (held,): (usize,) = redis::pipe()
            .hset(&key, &entry.stream, value)
            .ignore()
            .hlen(&key)
            .query_async(&mut self.conn())
            .await?;
        Ok(held)
    }

    pub async fn remove_presence(&self, user: &str, stream: &str) -> Result<()> {
        let _: () = self
            .conn()
            .hdel(UserKeys::new(user).presence(), stream)
            .await?;
        Ok(())
    }

    /// Entries of nodes whose alive key is gone, or that a previous process of a node left
    /// (its run differs), are dropped (and deleted).
    pub async fn presence(&self, user: &str) -> Result<Vec<PresenceEntry>> {
        let key = UserKeys::new(user).presence();
        let mut conn = self.conn();
        let all: Vec<(String, String)> = conn.hgetall(&key).await?;
        let mut live = Vec::new();
        let mut alive_nodes = std::collections::HashMap::new();
        for (stream, json) in all {
            let Ok(mut entry) = serde_json::from_str::<PresenceEntry>(&json) else {
                continue;
            };
            entry.stream = stream;
            let beat = match alive_nodes.get(&entry.node) {
                Some(beat) => beat,
                None => {
                    let beat: Option<String> = conn.get(keys::node_alive(&entry.node)).await?;
                    alive_nodes.entry(entry.node.clone()).or_insert(beat)
                }
            };
            if nodes::entry_alive(&entry.stream, beat.as_deref()) {
                live.push(entry);
            } else {
                let _: () = conn.hdel(&key, &entry.stream).await?;
            }
        }
        live.sort_by(|a, b| a.since.cmp(&b.since));
        Ok(live)
    }

    /// Mark this node alive for [`NODE_ALIVE_TTL_MS`], with its `streams` open, and make sure
    /// the node list finds it (the registry).
    pub async fn heartbeat(&self, node: &str, run: &str, streams: u64) -> Result<()> {
        let mut conn = self.conn();
        let now = now_ms();
        let _: () = conn
            .pset_ex(
                keys::node_alive(node),
                nodes::beat(now, streams, run, self.push),
                NODE_ALIVE_TTL_MS,
            )
            .await?;
        let _: () = conn.hset_nx(keys::node_registry(), node, now).await?;
        if !self.push {
            let pushing = self.nodes().await?.iter().any(|n| n.web_push);
            if let Some(others) = self.push_peers.observe(now, pushing) {
                tracing::info!(
                    another_node_sends_web_push = others,
                    "Web Push is off on this node; its escalations are now {}",
                    if others {
                        "left to the nodes that send it"
                    } else {
                        "not made, and cancelled when due (no node has sent Web Push for \
                         the hand-over time)"
                    }
                );
            }
        }
        Ok(())
    }

    /// After a first [`Self::beat`], refresh this node's alive key (with the hub's open
    /// streams) every quarter of
    /// [`NODE_ALIVE_TTL_MS`] until shutdown, so other nodes keep trusting its presence entries.
    /// After the link lost its connection, at once, and the node's presence entries are
    /// recorded again: a Redis that restarted without persistence lost them (and the alive
    /// key), and an entry whose write failed in the outage was never made.
    pub async fn keep_alive(self, hub: Hub, shutdown: Shutdown) {
        let period = Duration::from_millis(NODE_ALIVE_TTL_MS / 4);
        let mut reconnections = self.reconnections();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => self.beat(&hub).await,
                Ok(()) = reconnections.changed() => {
                    self.beat(&hub).await;
                    self.record_presence_again(&hub).await;
                }
                _ = shutdown.wait() => return,
            }
        }
    }

    /// One [`Self::heartbeat`] of the hub's node now; a failure is logged (the next is
    /// [`Self::keep_alive`]'s).
    pub async fn beat(&self, hub: &Hub) {
        if let Err(e) = self.heartbeat(hub.node(), hub.run(), hub.streams()).await {
            tracing::debug!(error = %e, "node heartbeat failed");
        }
    }

    /// Write every presence entry of this node's streams again, a few at a time.
    async fn record_presence_again(&self, hub: &Hub) {
        futures_util::stream::iter(hub.all_presence())
            .for_each_concurrent(PRESENCE_WRITES, |(user, entry)| async move {
                let written = self.add_presence(&user, &entry).await;
                // A stream that ended meanwhile deleted its entry before this write, or
                // deletes it after: it has left the hub either way.
                let gone = !hub.presence(&user).iter().any(|e| e.stream == entry.stream);
                let result = match written {
                    Ok(_) if gone => self.remove_presence(&user, &entry.stream).await,
                    result => result.map(drop),
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "presence not recorded again");
                }
            })
            .await;
    }

    /// Delete these (user, stream key) presence entries, a few at a time.
    pub async fn remove_presences(&self, entries: Vec<(String, String)>) {
        futures_util::stream::iter(entries)
            .for_each_concurrent(PRESENCE_WRITES, |(user, stream)| async move {
                if let Err(e) = self.remove_presence(&user, &stream).await {
                    tracing::debug!(error = %e, "presence not removed");
                }
            })
            .await;
    }

    /// Every live node, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        nodes::list(&self.conn).await
    }

    /// Remove this node's alive key and its registry entry (clean shutdown).
    pub async fn retire(&self, node: &str) -> Result<()> {
        let mut conn = self.conn();
        let _: () = conn.del(keys::node_alive(node)).await?;
        let _: () = conn.hdel(keys::node_registry(), node).await?;
        Ok(())
    }
}

/// What every script call of one publish shares.
struct Call<'a> {
    template: &'a Template,
    /// The hashed idempotency key (one hash per publish, not per user).
    idempotency: Option<String>,
    /// The calls' deadline on Redis's clock (see `publish.lua`).
    deadline: u64,
    /// Commit time for the change log and the channel message.
    now: u64,
}

/// One outcome per user from a `publish.lua` reply: `{failure, outcome…}` (see the script).
fn outcomes(reply: Value, users: &[Recipient<'_>]) -> Vec<Result<Published>> {
    let shape = || Error::Internal("publish script returned an unexpected shape".into());
    let Value::Array(items) = reply else {
        return users.iter().map(|_| Err(shape())).collect();
    };
    let mut items = items.iter();
    let failure = items.next().and_then(as_str).unwrap_or("unknown failure");
    let mut out = Vec::with_capacity(users.len());
    let mut handled = true;
    for to in users {
        out.push(match items.next() {
            Some(Value::Int(1)) => Ok(Published::stored(to.id)),
            Some(Value::Int(2)) => Ok(Published {
                escalates: true,
                ..Published::stored(to.id)
            }),
            Some(Value::Int(0)) => Ok(Published::suppressed(to.id)),
            Some(earlier) => as_str(earlier)
                .and_then(NotificationId::parse)
                .map(Published::earlier)
                .ok_or_else(shape),
            None if handled => {
                handled = false;
                let message = format!("Redis refused a user's publish: {failure}");
                // `CODE detail`, or a bare Lua error (`user_script:12: …`).
                let (code, detail) = failure.split_once(' ').unwrap_or((failure, ""));
                if refuses_the_data(code, detail) || refuses_the_data("ERR", failure) {
                    Err(Error::Internal(message))
                } else {
                    Err(Error::Unavailable(message.into()))
                }
            }
            None => Err(Error::Unavailable(
                "not attempted: an earlier user of its script call failed".into(),
            )),
        });
    }
    out
}

/// Unix time in microseconds (2^53 µs is year 2255: exact as a ZSET score).
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Whether a failure is about reaching Redis (retry later) rather than about one key.
fn is_connection_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.downcast_ref::<redis::RedisError>()
        .is_none_or(crate::redis_conn::is_link_failure)
}

/// A tray script that refused to run past its deadline (see `publish.lua`): 503 like any
/// outage, named in the log.
fn late(e: redis::RedisError) -> Error {
    if e.code() == Some("LATE") {
        Error::Unavailable("Redis ran a tray write after its deadline; refused".into())
    } else {
        e.into()
    }
}

/// The replay after `after` from the log entries `head.lua` read with `head`: every change
/// from `after + 1` to the head, each once and in order, or `Reset` when the log no longer
/// holds them all (trimmed, or a seq missing: written by a node of another log layout).
fn replay_from(after: u64, head: &Head, entries: &[String]) -> Replay {
    let changes: Vec<Change> = entries
        .iter()
        .filter_map(|entry| parse_change(head.epoch, entry))
        .filter(|c| c.seq > after)
        .collect();
    let whole = changes.iter().zip(after + 1..).all(|(c, seq)| c.seq == seq)
        && changes.last().map_or(after, |c| c.seq) == head.seq;
    match super::replay_window(after, head.seq, changes.first().map(|c| c.seq)) {
        ReplayWindow::Nothing => Replay::Changes(Vec::new()),
        ReplayWindow::From(_) if whole => Replay::Changes(changes),
        ReplayWindow::From(_) | ReplayWindow::Reset => Replay::Reset,
    }
}

/// One `changes` entry: seq<TAB>kind<TAB>commit ms<TAB>data.
fn parse_change(epoch: Epoch, entry: &str) -> Option<Change> {
    let mut parts = entry.splitn(4, '\t');
    let seq = parts.next()?.parse().ok()?;
    let kind = ChangeKind::parse(parts.next()?)?;
    let at_ms = parts.next()?.parse().unwrap_or(0);
    Some(Change {
        epoch,
        seq,
        kind,
        data: parts.next()?.to_owned(),
        at_ms,
    })
}

/// The `deliver_at` of a stored notification (its `items` JSON, which has no closing brace),
/// in Unix ms; `None` when it has none.
fn deliver_ms(stored: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Scheduled {
        deliver_at: Option<String>,
    }
    let at = serde_json::from_str::<Scheduled>(&format!("{stored}}}"))
        .ok()?
        .deliver_at?;
    crate::model::parse_time("deliver_at", &at).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retention reads a stored notification's own `deliver_at`, not one of the same name in
    /// its `data`.
    #[test]
    fn deliver_at_is_read_from_the_notification_itself() {
        let stored = r#"{"id":"x","user":"u","title":"t","data":{"deliver_at":"2999-01-01T00:00:00Z"},"deliver_at":"2030-01-01T00:00:00Z","created_at":"2026-01-01T00:00:00Z""#;
        assert_eq!(deliver_ms(stored), Some(1_893_456_000_000));
        let in_data_only = r#"{"id":"x","title":"t","data":{"deliver_at":"2999-01-01T00:00:00Z"}"#;
        assert_eq!(deliver_ms(in_data_only), None);
    }

    fn head(seq: u64) -> Head {
        Head {
            epoch: Epoch::parse("0123456789ab").unwrap(),
            seq,
            unread_count: 0,
            unseen_count: 0,
        }
    }

    fn entries(seqs: &[u64]) -> Vec<String> {
        seqs.iter()
            .map(|s| format!("{s}\tnotification\t1700000000000\t{{\"n\":{s}}}"))
            .collect()
    }

    fn seqs(replay: Replay) -> Option<Vec<u64>> {
        match replay {
            Replay::Changes(changes) => Some(changes.iter().map(|c| c.seq).collect()),
            Replay::Reset => None,
        }
    }

    #[test]
    fn a_replay_is_every_change_after_the_position() {
        let read = entries(&[3, 4, 5, 6]);
        assert_eq!(seqs(replay_from(4, &head(6), &read)), Some(vec![5, 6]));
        assert_eq!(
            seqs(replay_from(2, &head(6), &read)),
            Some(vec![3, 4, 5, 6])
        );
        assert_eq!(seqs(replay_from(6, &head(6), &read)), Some(vec![]));
    }

    /// Trimmed past the position, a seq missing (logged by a node of the old layout during a
    /// rolling upgrade), or an entry that does not parse: never a replay with a hole.
    #[test]
    fn a_replay_with_a_hole_resets() {
        assert_eq!(
            seqs(replay_from(1, &head(6), &entries(&[3, 4, 5, 6]))),
            None
        );
        assert_eq!(seqs(replay_from(2, &head(6), &entries(&[3, 5, 6]))), None);
        assert_eq!(seqs(replay_from(2, &head(6), &entries(&[3, 4, 5]))), None);
        let mut broken = entries(&[3, 4, 5, 6]);
        broken[1] = "4\tno-such-kind\t0\t{}".into();
        assert_eq!(seqs(replay_from(2, &head(6), &broken)), None);
        assert_eq!(seqs(replay_from(7, &head(6), &[])), None);
    }
}
