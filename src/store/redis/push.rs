//! Web Push: a tray's leased escalations (`push.lua`) and the user's subscriptions.

use redis::AsyncCommands;

use super::RedisStore;
use crate::error::{Error, Result};
use crate::store::keys::{self, UserKeys};
use crate::store::{Recent, Subscription, MAX_SUBSCRIPTIONS};

impl RedisStore {
    pub async fn push_later(
        &self,
        user: &str,
        id: &str,
        lease: u64,
        at_ms: u64,
        send: bool,
    ) -> Result<()> {
        let stage = if send { "send" } else { "check" };
        if self
            .leased::<i64>(user, "later", id, lease, at_ms, stage)
            .await?
            > 0
        {
            self.hint(std::iter::once(user), at_ms).await?;
        }
        Ok(())
    }

    pub async fn extend_push_lease(
        &self,
        user: &str,
        id: &str,
        lease: u64,
        until_ms: u64,
    ) -> Result<bool> {
        Ok(self
            .leased::<i64>(user, "extend", id, lease, until_ms, "")
            .await?
            >= 0)
    }

    pub async fn push_done(&self, user: &str, id: &str, lease: u64) -> Result<()> {
        self.leased::<i64>(user, "done", id, lease, 0, "").await?;
        Ok(())
    }

    pub async fn push_sent(&self, user: &str, id: &str, lease: u64, endpoint: &str) -> Result<()> {
        self.leased::<i64>(
            user,
            "sent",
            id,
            lease,
            0,
            &crate::store::push_fingerprint(endpoint),
        )
        .await?;
        Ok(())
    }

    pub async fn pushed_to(&self, user: &str, id: &str, lease: u64) -> Result<Option<Vec<String>>> {
        let answer: redis::Value = self.leased(user, "pushed", id, lease, 0, "").await?;
        Ok(match answer {
            redis::Value::Int(_) => None,
            sent => {
                let sent: String = redis::from_redis_value(sent)
                    .map_err(|e| Error::Internal(format!("push.lua: {e}")))?;
                Some(sent.split_whitespace().map(str::to_owned).collect())
            }
        })
    }

    /// `push.lua`'s `op` on the escalation of `id`, if it is still leased under `lease`
    /// (else -1): its answer.
    async fn leased<T: redis::FromRedisValue>(
        &self,
        user: &str,
        op: &str,
        id: &str,
        lease: u64,
        at_ms: u64,
        stage: &str,
    ) -> Result<T> {
        let k = UserKeys::new(user);
        let answer = self
            .tray(&self.scripts.push, &k)
            .arg(op)
            .arg(id)
            .arg(lease)
            .arg(at_ms)
            .arg(stage)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(answer)
    }

    /// Subscriptions live in the user's `push` hash (endpoint → JSON); the cap drops the
    /// oldest by their `created_ms`. The first one takes the recent notifications
    /// (`subscribed.lua`), then notes the earliest push in the due index.
    pub async fn add_subscription(
        &self,
        user: &str,
        sub: &Subscription,
        recent: Option<Recent>,
    ) -> Result<()> {
        let k = UserKeys::new(user);
        let key = format!("{}:push", k.base());
        let json = serde_json::to_string(sub).map_err(|e| Error::Internal(e.to_string()))?;
        let mut conn = self.conn();
        let had: u64 = conn.hlen(&key).await?;
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
        if let (0, true, Some(recent)) = (had, self.escalates(), recent) {
            let first: String = self
                .tray(&self.scripts.subscribed, &k)
                .arg(crate::model::first_id_at(recent.from_ms).as_str())
                .arg(recent.after_ms)
                .arg(recent.from_ms)
                .invoke_async(&mut conn)
                .await?;
            if let Ok(at) = first.parse::<u64>() {
                self.hint_or_retry(user, at).await;
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
