//! Browser sessions in Redis: each session's record under its public id, and the user's
//! sessions (oldest first) to cap them. A session that ends before its time (logout, the
//! cap) leaves [`ENDED`] in place of its record until then, so that a record missing while
//! its session should live tells that Redis lost it ([`SessionState::Lost`]).

use std::time::SystemTime;

use redis::AsyncCommands;

use super::RedisStore;
use crate::error::{Error, Result};
use crate::model::{now_ms, now_secs};
use crate::redis_conn::RedisConn;
use crate::store::keys::{self, UserKeys};
use crate::store::{SessionRecord, SessionState, MAX_SESSIONS_PER_USER, MAX_SESSION_SECS};

/// What an ended session's key holds until the session's end (`SET … XX KEEPTTL`): it reads
/// as no record.
const ENDED: &str = "ended";

impl RedisStore {
    /// The record expires with the session; the user's session index (one slot with the
    /// user's other keys) keeps creation order and lives as long as the newest session. Its
    /// scores are creation times in microseconds: sessions created within one millisecond
    /// still sort by creation, not by id, so the cap ends the oldest.
    pub async fn put_session(&self, id: &str, record: &SessionRecord) -> Result<Vec<String>> {
        let (set, exp) = storing(id, record)?;
        let mut conn = self.conn();
        let _: () = set.query_async(&mut conn).await?;
        let index = UserKeys::new(&record.user).sessions();
        let (count,): (usize,) = indexing(&index, id, exp)
            .zcard(&index)
            .query_async(&mut conn)
            .await?;
        if count <= MAX_SESSIONS_PER_USER {
            return Ok(Vec::new());
        }
        // Sessions that ended by themselves (their record expired) leave their ids in the
        // index: drop those first, so that only live sessions count.
        let all: Vec<String> = conn.zrange(&index, 0, -1).await?;
        let ids: Vec<&str> = all.iter().map(String::as_str).collect();
        let records = self.sessions(&ids).await?;
        let ended: Vec<&str> = (ids.iter().zip(&records))
            .filter(|(_, record)| record.is_none())
            .map(|(id, _)| *id)
            .collect();
        if !ended.is_empty() {
            let _: () = conn.zrem(&index, &ended).await?;
            if count.saturating_sub(ended.len()) <= MAX_SESSIONS_PER_USER {
                return Ok(Vec::new());
            }
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
            end(&mut conn, old).await?;
        }
        Ok(evicted)
    }

    /// One `MGET` (on a cluster the client splits it by slot and keeps the order).
    pub async fn sessions(&self, ids: &[&str]) -> Result<Vec<Option<SessionRecord>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| keys::session(id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn())
            .await?;
        Ok(values.into_iter().map(live_record).collect())
    }

    pub async fn end_session(&self, user: &str, id: &str) -> Result<()> {
        let mut conn = self.conn();
        end(&mut conn, id).await?;
        let _: () = conn.zrem(UserKeys::new(user).sessions(), id).await?;
        Ok(())
    }

    pub async fn end_token_session(
        &self,
        user: &str,
        sid: &str,
        at: &str,
        until: u64,
    ) -> Result<()> {
        let _: () = redis::cmd("SET")
            .arg(UserKeys::new(user).sid_ended(sid))
            .arg(at)
            .arg("EXAT")
            .arg(until.max(now_secs() + 1))
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    pub async fn token_session_ended(&self, user: &str, sid: &str) -> Result<Option<String>> {
        Ok(self.conn().get(UserKeys::new(user).sid_ended(sid)).await?)
    }

    /// [`ENDED`] or past its end: ended; a record: live; nothing: lost.
    pub async fn session_state(&self, id: &str) -> Result<SessionState> {
        let value: Option<String> = self.conn().get(keys::session(id)).await?;
        Ok(match (value.is_some(), live_record(value)) {
            (_, Some(_)) => SessionState::Live,
            (true, None) => SessionState::Ended,
            (false, None) => SessionState::Lost,
        })
    }

    /// The record unless one (or [`ENDED`]) is there, and its id in the user's index; whether
    /// it was written.
    pub async fn restore_session(&self, id: &str, record: &SessionRecord) -> Result<bool> {
        let (mut set, exp) = storing(id, record)?;
        let mut conn = self.conn();
        let written: Option<String> = set.arg("NX").query_async(&mut conn).await?;
        if written.is_none() {
            return Ok(false);
        }
        let index = UserKeys::new(&record.user).sessions();
        let _: () = indexing(&index, id, exp).query_async(&mut conn).await?;
        Ok(true)
    }
}

/// The `SET` of session `id`'s record, expiring at the session's end (a second from now at
/// the earliest), and that end in whole seconds, rounded up.
fn storing(id: &str, record: &SessionRecord) -> Result<(redis::Cmd, u64)> {
    let value = serde_json::to_string(record).map_err(|e| Error::Internal(e.to_string()))?;
    let ends_ms = record.ends_ms.max(now_ms() + 1000);
    let mut set = redis::cmd("SET");
    set.arg(keys::session(id))
        .arg(value)
        .arg("PXAT")
        .arg(ends_ms);
    Ok((set, ends_ms.div_ceil(1000)))
}

/// Add `id` to the user's session `index` as created now, the index living until `exp` at
/// least.
fn indexing(index: &str, id: &str, exp: u64) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.zadd(index, id, now_micros())
        .ignore()
        .cmd("EXPIREAT")
        .arg(index)
        .arg(exp)
        .arg("NX")
        .ignore()
        .cmd("EXPIREAT")
        .arg(index)
        .arg(exp)
        .arg("GT")
        .ignore();
    pipe
}

/// Mark a session ended: in place of its record, until the session's end; where the record
/// is gone (Redis lost it just now), for the longest a session lives, so that no node puts
/// it back. One script, so that no write-back lands between the two.
const END: &str = r#"
if not redis.call('SET', KEYS[1], ARGV[1], 'XX', 'KEEPTTL') then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
end
"#;

async fn end(conn: &mut RedisConn, id: &str) -> Result<()> {
    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(END));
    let _: () = SCRIPT
        .key(keys::session(id))
        .arg(ENDED)
        .arg(MAX_SESSION_SECS)
        .invoke_async(conn)
        .await?;
    Ok(())
}

/// A stored session record, if it reads and is live.
fn live_record(value: Option<String>) -> Option<SessionRecord> {
    value
        .and_then(|v| serde_json::from_str::<SessionRecord>(&v).ok())
        .filter(SessionRecord::is_live)
}

/// Unix time in microseconds (2^53 µs is year 2255: exact as a ZSET score).
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
