//! Retention: the cleaner's lock, and purging old notifications and log entries.

use std::sync::LazyLock;
use std::time::Duration;

use super::RedisStore;
use crate::error::{Error, Result};
use crate::model::{id_ms, Mark, Target};
use crate::redis_conn::RedisConn;
use crate::store::keys::{self, UserKeys};

impl RedisStore {
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
                        error = e.detail(),
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
        self.cut_log(user, log_before_ms).await?;
        Ok(removed)
    }

    /// Drop the user's changes committed before `before_ms` (`trim.lua`); how many went.
    pub(in crate::store) async fn cut_log(&self, user: &str, before_ms: u64) -> Result<u64> {
        Ok(self
            .tray(&self.scripts.trim, &UserKeys::new(user))
            .arg(before_ms)
            .invoke_async(&mut self.conn())
            .await?)
    }

    /// `SET NX` the cleaner lock, or extend it when this node already holds it: one script,
    /// so a lock that lapses between reading its holder and extending it is not extended
    /// for a node that no longer holds it (two nodes would clean at once).
    pub async fn claim_cleaner(&self, node: &str, ttl: Duration) -> Result<bool> {
        let claimed: bool = CLAIM_CLEANER
            .key(keys::cleaner_lock())
            .arg(node)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(claimed)
    }
}

static CLAIM_CLEANER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end \
         if redis.call('GET', KEYS[1]) == ARGV[1] then \
           redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 \
         end \
         return 0",
    )
});

/// Whether a failure is about reaching Redis (retry later) rather than about one key.
fn is_connection_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.downcast_ref::<redis::RedisError>()
        .is_none_or(crate::redis_conn::is_link_failure)
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
}
