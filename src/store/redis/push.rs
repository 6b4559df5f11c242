//! Web Push: a tray's escalation stages and the user's subscriptions.

use redis::AsyncCommands;

use super::RedisStore;
use crate::error::{Error, Result};
use crate::store::keys::{self, UserKeys};
use crate::store::{Subscription, MAX_SUBSCRIPTIONS};

impl RedisStore {
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
}
