//! Due times: the users with something due (`herald:due`) and `due.lua`, which delivers,
//! wakes, expires and escalates what is due in one tray.

use super::{late, RedisStore};
use crate::error::{Error, Result};
use crate::model::{now_ms, Epoch};
use crate::store::keys::{self, UserKeys};
use crate::store::nodes::PUSH_HANDOVER_MS;
use crate::store::{new_lease, Due, Escalation, LOG_CAPACITY, PUSH_LEASE_MS};

/// How long an escalation a node left for another keeps the tray out of the due index.
const PUSH_HOLD_MS: u64 = 1_000;

impl RedisStore {
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
        let lease = new_lease();
        let out: Vec<String> = self
            .tray(&self.scripts.due, &k)
            .arg(now_ms())
            .arg(LOG_CAPACITY)
            .arg(Epoch::random().as_str())
            .arg(self.due_push_flag())
            .arg(PUSH_LEASE_MS)
            .arg(PUSH_HANDOVER_MS)
            .arg(PUSH_HOLD_MS)
            .arg(lease)
            .arg(self.conn.write_deadline_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(late)?;
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
                lease,
                notification: serde_json::from_str(json).map_err(|_| shape())?,
                unread_count,
            });
        }
        // The escalations are leased now: whatever happens to the index below, they are
        // handed to the senders. A failed index update leaves the user's old (past) entry,
        // so the user is looked at again at the next round.
        if let Err(e) = self.reindex(user, &k, hint, next).await {
            tracing::warn!(
                error = %e,
                "due: the index entry was not moved; the user is looked at again"
            );
        }
        Ok(due)
    }

    /// Move the user's index entry from `hint` to `next` (`rehint.lua`), then lower it to the
    /// tray's first due time read once more (see [`Self::process_due`]).
    async fn reindex(&self, user: &str, k: &UserKeys, hint: u64, next: &str) -> Result<()> {
        let mut conn = self.conn();
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
        Ok(())
    }
}
