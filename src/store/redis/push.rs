//! Web Push: a tray's leased escalations (`push.lua`) and the user's subscriptions.

use std::sync::LazyLock;

use redis::AsyncCommands;

use super::RedisStore;
use crate::error::{Error, Result};
use crate::store::keys::{self, UserKeys};
use crate::store::{Recent, Subscription, MAX_SUBSCRIPTIONS};

/// Delete an endpoint's owner key (KEYS[1]) if it names the user ARGV[1]; returns 1 if so.
static RELEASE_OWNER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
         return 0",
    )
});

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
        self.later(user, id, lease, at_ms, stage).await
    }

    pub async fn push_handover(
        &self,
        user: &str,
        id: &str,
        lease: u64,
        at_ms: u64,
        since_ms: u64,
    ) -> Result<()> {
        self.later(user, id, lease, at_ms, &format!("send@{since_ms}"))
            .await
    }

    /// `push.lua` `later`: due at `at_ms` as `stage`, released from the lease; the due index
    /// told when the due time moved.
    async fn later(&self, user: &str, id: &str, lease: u64, at_ms: u64, stage: &str) -> Result<()> {
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
        // Read through `subscriptions`: an entry of an endpoint another user took since is no
        // subscription (and goes), so a user left with none takes the recent ones below.
        let had = self.subscriptions(user).await?.len();
        let mut conn = self.conn();
        // The endpoint is this user's from now on: the owner key decides, and the previous
        // owner's entry is no longer pushed (see `subscriptions`, which drops it). Nothing
        // here deletes another user's entry: with two users posting one browser at once, the
        // one whose entry would be deleted may be the one the owner key ends up naming.
        let _: () = conn.set(keys::push_owner(&sub.endpoint), user).await?;
        let _: () = conn.hset(&key, &sub.endpoint, json).await?;
        // Another user's `POST` of the same endpoint (one browser, signed in again) may have
        // taken it meanwhile: the endpoint stays the last owner's alone.
        let owner: Option<String> = conn.get(keys::push_owner(&sub.endpoint)).await?;
        if owner.as_deref() != Some(user) {
            let _: () = conn.hdel(&key, &sub.endpoint).await?;
            return Ok(());
        }
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
        // Only while it is still ours, in one step: a read, then a `DEL`, would drop the owner
        // another user's `POST` set meanwhile, and with it the next owner's swap out of theirs.
        let _: u64 = RELEASE_OWNER
            .key(keys::push_owner(endpoint))
            .arg(user)
            .invoke_async(&mut conn)
            .await?;
        Ok(n > 0)
    }

    /// The user's subscriptions whose endpoint the user owns (`pushowner`): the owner key is
    /// the truth. Two users who subscribe one browser at the same moment (or one removes it
    /// while the other adds it) may leave it in both hashes for a while: it is pushed for its
    /// owner only, and dropped from the other's hash here.
    pub async fn subscriptions(&self, user: &str) -> Result<Vec<Subscription>> {
        let key = format!("{}:push", UserKeys::new(user).base());
        let mut conn = self.conn();
        let all: Vec<String> = conn.hvals(&key).await?;
        let subs: Vec<Subscription> = all
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        // One GET per endpoint (at most 10): the owner keys lie in other slots.
        let owners = subs.iter().map(|s| {
            let mut conn = self.conn();
            let owner = keys::push_owner(&s.endpoint);
            async move { conn.get::<_, Option<String>>(owner).await }
        });
        let owners = futures_util::future::try_join_all(owners).await?;
        let (mine, theirs): (Vec<_>, Vec<_>) =
            (subs.into_iter().zip(owners)).partition(|(_, owner)| owner.as_deref() == Some(user));
        for (stale, _) in theirs {
            let _: std::result::Result<(), _> = conn.hdel(&key, &stale.endpoint).await;
        }
        let mut subs: Vec<Subscription> = mine.into_iter().map(|(sub, _)| sub).collect();
        subs.sort_by_key(|s| s.created_ms);
        Ok(subs)
    }
}
