//! Redis store: the same surface as the memory store, over the layout in `keys`. Tray writes
//! are Lua scripts on one user's slot that store, log and announce a change atomically; reads
//! are single commands or pipelines within that slot. A command that fails maps to 503.
//! Tray scripts carry a deadline on Redis's clock and refuse to run past it, so a write that
//! was answered 503 (bytes stuck in a network black hole) cannot commit when they arrive. The
//! change log's epoch is drawn here and handed to the scripts, which keep an existing one.

use std::time::{Duration, SystemTime};

use redis::{AsyncCommands, Script};

use super::keys::{self, UserKeys};
use super::{
    Head, ListQuery, Page, Published, Replay, ReplayWindow, SessionRecord, IDEMPOTENCY_TTL_MS,
    LOG_CAPACITY, MAX_SESSIONS_PER_USER,
};
use crate::error::{Error, Result};
use crate::model::{
    now_ms, now_secs, rfc3339, Change, ChangeKind, Epoch, EventId, Mark, Marked, Notification,
    PresenceEntry, Target,
};
use crate::redis_conn::RedisConn;
use crate::shutdown::Shutdown;

/// A node is dead once its alive key is this old, in milliseconds (spec: presence gone in 30 s).
pub const NODE_ALIVE_TTL_MS: u64 = 20_000;

#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConn,
    scripts: &'static Scripts,
    max_per_user: usize,
}

struct Scripts {
    publish: Script,
    mark: Script,
    list: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        publish: Script::new(include_str!("scripts/publish.lua")),
        mark: Script::new(include_str!("scripts/mark.lua")),
        list: Script::new(include_str!("scripts/list.lua")),
    })
}

impl RedisStore {
    pub fn new(conn: RedisConn, max_per_user: usize) -> Self {
        RedisStore {
            conn,
            scripts: scripts(),
            max_per_user,
        }
    }

    fn conn(&self) -> RedisConn {
        self.conn.clone()
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
        let excess = count.saturating_sub(MAX_SESSIONS_PER_USER);
        if excess == 0 {
            return Ok(Vec::new());
        }
        let popped: Vec<(String, f64)> = conn.zpopmin(&index, excess as isize).await?;
        let evicted: Vec<String> = popped.into_iter().map(|(id, _)| id).collect();
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

    pub async fn publish(
        &self,
        n: &Notification,
        json: &str,
        key: Option<&str>,
    ) -> Result<Published> {
        let k = UserKeys::new(&n.user);
        let mut inv = self.scripts.publish.prepare_invoke();
        for key in k.tray() {
            inv.key(key);
        }
        if let Some(idem) = key {
            inv.key(k.idempotency(idem));
        }
        inv.arg(&n.id)
            .arg(json)
            .arg(self.max_per_user)
            .arg(LOG_CAPACITY)
            .arg(now_ms())
            .arg(IDEMPOTENCY_TTL_MS)
            .arg(k.channel())
            .arg(self.conn.write_deadline_ms())
            .arg(Epoch::random().as_str());
        let mut conn = self.conn.for_deadline_writes();
        let out: Vec<String> = inv.invoke_async(&mut conn).await.map_err(late)?;
        match out.as_slice() {
            [stored, id] => Ok(Published {
                id: id.clone(),
                stored: stored == "1",
            }),
            _ => Err(Error::Internal(
                "publish script returned an unexpected shape".into(),
            )),
        }
    }

    pub async fn list(&self, user: &str, q: &ListQuery) -> Result<Page> {
        let k = UserKeys::new(user);
        let out: Vec<String> = self
            .scripts
            .list
            .key(k.items())
            .key(k.order())
            .key(k.unread())
            .key(k.read_at())
            .arg(q.before.as_deref().unwrap_or(""))
            .arg(q.limit)
            .arg(if q.unread_only { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await?;
        let (unread, more, rest) = match out.as_slice() {
            [unread, more, rest @ ..] => (unread.parse().unwrap_or(0), more == "1", rest),
            _ => {
                return Err(Error::Internal(
                    "list script returned an unexpected shape".into(),
                ))
            }
        };
        let notifications: Vec<Notification> = rest
            .chunks(2)
            .filter_map(|pair| parse_item(&pair[0], pair.get(1).map(String::as_str)))
            .collect();
        Ok(Page::new(notifications, more, unread))
    }

    pub async fn get(&self, user: &str, id: &str) -> Result<Option<Notification>> {
        let k = UserKeys::new(user);
        let (json, read_at): (Option<String>, Option<String>) = redis::pipe()
            .hget(k.items(), id)
            .hget(k.read_at(), id)
            .query_async(&mut self.conn())
            .await?;
        Ok(json.and_then(|j| parse_item(&j, read_at.as_deref())))
    }

    pub async fn mark(&self, user: &str, target: &Target, mark: Mark) -> Result<Marked> {
        let k = UserKeys::new(user);
        let mut inv = self.scripts.mark.prepare_invoke();
        for key in k.tray() {
            inv.key(key);
        }
        let now = SystemTime::now();
        inv.arg(mark.kind().as_str())
            .arg(crate::model::unix_ms(now))
            .arg(rfc3339(now))
            .arg(LOG_CAPACITY)
            .arg(k.channel());
        inv.arg(if matches!(target, Target::All) {
            "1"
        } else {
            "0"
        });
        inv.arg(self.conn.write_deadline_ms())
            .arg(Epoch::random().as_str());
        if let Target::Ids(ids) = target {
            for id in ids {
                inv.arg(id);
            }
        }
        let mut conn = self.conn.for_deadline_writes();
        let out: Vec<String> = inv.invoke_async(&mut conn).await.map_err(late)?;
        let mut out = out.into_iter();
        let found = out.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        Ok(Marked {
            found,
            changed: out.collect(),
        })
    }

    /// SCAN every tray (on every primary of a cluster); each user's old ids are deleted
    /// through the mark script. A key that is not a tray, or a tray that fails, is logged and
    /// skipped: one bad key never stops the round for everyone else. The round fails only
    /// when Redis itself is unreachable.
    pub async fn purge_before(&self, cutoff: &str) -> Result<usize> {
        let mut conn = self.conn();
        let mut removed = 0;
        for key in conn.scan_match(keys::ORDER_PATTERN).await? {
            let Some(user) = keys::user_of_order_key(&key) else {
                tracing::warn!(key, "retention: skipped a key that only looks like a tray");
                continue;
            };
            match self.purge_tray(&mut conn, &key, &user, cutoff).await {
                Ok(n) => removed += n,
                Err(Error::Unavailable(e)) if is_connection_error(&*e) => {
                    return Err(Error::Unavailable(e))
                }
                Err(e) => tracing::warn!(
                    key,
                    error = %e,
                    "retention: skipped a tray that could not be cleaned; inspect the key \
                     (TYPE, ZRANGE) and delete it if it is not Herald's"
                ),
            }
        }
        Ok(removed)
    }

    async fn purge_tray(
        &self,
        conn: &mut RedisConn,
        key: &str,
        user: &str,
        cutoff: &str,
    ) -> Result<usize> {
        let old: Vec<String> = redis::cmd("ZRANGE")
            .arg(key)
            .arg("-")
            .arg(format!("({cutoff}"))
            .arg("BYLEX")
            .query_async(conn)
            .await?;
        if old.is_empty() {
            return Ok(0);
        }
        let marked = self.mark(user, &Target::Ids(old), Mark::Deleted).await?;
        Ok(marked.changed.len())
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
        let k = UserKeys::new(user);
        let fresh = Epoch::random();
        let (kept, seq, unread): (Option<String>, Option<u64>, u64) = redis::pipe()
            .cmd("SET")
            .arg(k.epoch())
            .arg(fresh.as_str())
            .arg("NX")
            .arg("GET")
            .get(k.seq())
            .zcard(k.unread())
            .query_async(&mut self.conn())
            .await?;
        Ok(Head {
            epoch: match kept {
                None => fresh,
                Some(kept) => Epoch::parse(&kept).ok_or_else(|| {
                    Error::Internal(format!("{} is not an epoch: {kept:?}", k.epoch()))
                })?,
            },
            seq: seq.unwrap_or(0),
            unread_count: unread,
        })
    }

    pub async fn replay(&self, user: &str, after: EventId) -> Result<Replay> {
        let k = UserKeys::new(user);
        let (epoch, seq, entries): (
            Option<String>,
            Option<u64>,
            redis::streams::StreamRangeReply,
        ) = redis::pipe()
            .get(k.epoch())
            .get(k.seq())
            .xrange(k.log(), format!("{}-0", after.seq.saturating_add(1)), "+")
            .query_async(&mut self.conn())
            .await?;
        // No epoch (the log is gone) or another one: the position means nothing here.
        if epoch.as_deref() != Some(after.epoch.as_str()) {
            return Ok(Replay::Reset);
        }
        let changes: Vec<Change> = entries
            .ids
            .iter()
            .filter_map(|entry| parse_change(after.epoch, entry))
            .collect();
        Ok(
            match super::replay_window(after.seq, seq.unwrap_or(0), changes.first().map(|c| c.seq))
            {
                ReplayWindow::Nothing => Replay::Changes(Vec::new()),
                ReplayWindow::Reset => Replay::Reset,
                ReplayWindow::From(_) => Replay::Changes(changes),
            },
        )
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

    pub async fn add_presence(&self, user: &str, entry: &PresenceEntry) -> Result<()> {
        let value = serde_json::to_string(entry).map_err(|e| Error::Internal(e.to_string()))?;
        let _: () = self
            .conn()
            .hset(UserKeys::new(user).presence(), &entry.stream, value)
            .await?;
        Ok(())
    }

    pub async fn remove_presence(&self, user: &str, stream: &str) -> Result<()> {
        let _: () = self
            .conn()
            .hdel(UserKeys::new(user).presence(), stream)
            .await?;
        Ok(())
    }

    /// Entries of nodes whose alive key is gone are dropped (and deleted).
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
            let alive = match alive_nodes.get(&entry.node) {
                Some(alive) => *alive,
                None => {
                    let alive: bool = conn.exists(keys::node_alive(&entry.node)).await?;
                    alive_nodes.insert(entry.node.clone(), alive);
                    alive
                }
            };
            if alive {
                live.push(entry);
            } else {
                let _: () = conn.hdel(&key, &entry.stream).await?;
            }
        }
        live.sort_by(|a, b| a.since.cmp(&b.since));
        Ok(live)
    }

    /// Mark this node alive for [`NODE_ALIVE_TTL_MS`].
    pub async fn heartbeat(&self, node: &str) -> Result<()> {
        let _: () = self
            .conn()
            .pset_ex(keys::node_alive(node), now_ms(), NODE_ALIVE_TTL_MS)
            .await?;
        Ok(())
    }

    /// Refresh this node's alive key every quarter of [`NODE_ALIVE_TTL_MS`] until shutdown, so
    /// other nodes keep trusting its presence entries.
    pub async fn keep_alive(self, node: String, shutdown: Shutdown) {
        let period = Duration::from_millis(NODE_ALIVE_TTL_MS / 4);
        loop {
            if let Err(e) = self.heartbeat(&node).await {
                tracing::debug!(error = %e, "node heartbeat failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// Remove this node's alive key (clean shutdown).
    pub async fn retire(&self, node: &str) -> Result<()> {
        let _: () = self.conn().del(keys::node_alive(node)).await?;
        Ok(())
    }
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

fn parse_item(json: &str, read_at: Option<&str>) -> Option<Notification> {
    let mut n: Notification = serde_json::from_str(json).ok()?;
    n.read_at = read_at.filter(|r| !r.is_empty()).map(str::to_owned);
    Some(n)
}

fn parse_change(epoch: Epoch, entry: &redis::streams::StreamId) -> Option<Change> {
    let seq = entry.id.split('-').next()?.parse().ok()?;
    let field = |name: &str| entry.get::<String>(name);
    Some(Change {
        epoch,
        seq,
        kind: ChangeKind::parse(&field("k")?)?,
        data: field("d")?,
        at_ms: field("t").and_then(|t| t.parse().ok()).unwrap_or(0),
    })
}
