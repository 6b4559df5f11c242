//! Reading and changing a tray: pages, counts, one notification, marks, actions and the
//! user's preferences.

use std::time::{Duration, SystemTime};

use redis::AsyncCommands;

use super::{late, RedisStore};
use crate::error::{Error, Result};
use crate::model::{
    ms_to_rfc3339, rfc3339, too_many_preferences, Counts, Epoch, EventId, Mark, Marked,
    Notification, TakenAction, Target, MAX_PREFERENCES,
};
use crate::store::keys::UserKeys;
use crate::store::{ActionOutcome, ListQuery, Page, Preferences, TrayCounts, LOG_CAPACITY};

impl RedisStore {
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
        let k = UserKeys::new(user);
        let mut call = self.tray_call(&self.scripts.action, &k);
        call.arg("claim").arg(id).arg(ttl.as_millis() as u64);
        let held = (self.commit(&self.scripts.action, call, &k, &mut self.conn())).await?;
        Ok(redis::from_redis_value::<u8>(held).map_err(redis::RedisError::from)? == 1)
    }

    pub async fn release_action(&self, user: &str, id: &str) -> Result<()> {
        let _: u8 = self
            .tray(&self.scripts.action, &UserKeys::new(user))
            .arg("release")
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
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
        let k = UserKeys::new(user);
        let mut call = self.tray_call(&self.scripts.action, &k);
        call.arg("take")
            .arg(id)
            .arg(json)
            .arg(&action.at)
            .arg(crate::model::unix_ms(now))
            .arg(LOG_CAPACITY)
            .arg(self.conn.write_deadline_ms())
            .arg(Epoch::random().as_str());
        let mut conn = self.conn.for_deadline_writes();
        let out = self.commit(&self.scripts.action, call, &k, &mut conn);
        let out = strings(out.await.map_err(late)?)?;
        match out.as_slice() {
            [outcome] if outcome == "missing" => Ok(ActionOutcome::Missing),
            [outcome] if outcome == "conflict" => Ok(ActionOutcome::Conflict),
            [outcome, json, at] if outcome == "taken" => {
                let n = serde_json::from_str(json)
                    .map_err(|e| Error::Internal(format!("action script: {e}")))?;
                let at = EventId::parse(at)
                    .ok_or_else(|| Error::Internal(format!("action script: position {at:?}")))?;
                Ok(ActionOutcome::Taken(Box::new(n), at))
            }
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
        let mut inv = self.tray_call(&self.scripts.mark, &k);
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
        let out = self.commit(&self.scripts.mark, inv, &k, &mut conn);
        let out = strings(out.await.map_err(late)?)?;
        let mut out = out.into_iter();
        let found = out.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        let position = out.next().and_then(|head| EventId::parse(&head));
        let marked = Marked {
            found,
            position,
            changed: out.collect(),
        };
        match (mark, marked.changed.is_empty()) {
            (Mark::Snooze(at), false) => self.hint(std::iter::once(user), at).await?,
            // An unsnoozed notification may escalate now (stored, so answered: the note is
            // retried apart if it fails).
            (Mark::Unsnooze, false) if self.escalates() => {
                self.hint_or_retry(user, crate::model::unix_ms(now)).await;
            }
            _ => {}
        }
        Ok(marked)
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
}

/// A script's reply as the strings it returns.
fn strings(reply: redis::Value) -> Result<Vec<String>> {
    Ok(redis::from_redis_value(reply).map_err(redis::RedisError::from)?)
}
