//! Publishing: each recipient's notification stored, logged and announced by `publish.lua`,
//! many users per script call and a batch's calls sent together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::{late, RedisStore, USERS_PER_SCRIPT};
use crate::error::{refuses_the_data, Error, Result};
use crate::model::{now_ms, push_json_str, sha256_hex, Epoch, NotificationId, Template};
use crate::redis_conn::{as_str, COMMAND_DEADLINE};
use crate::store::batch::BATCH_CHANNEL;
use crate::store::keys::{self, UserKeys};
use crate::store::{Idempotency, Published, Recipient, IDEMPOTENCY_TTL_MS, LOG_CAPACITY};

/// The least time a publish's notes in the due index get before they are retried apart (the
/// store itself may have taken most of the publish's deadline).
const LAST_NOTE: Duration = Duration::from_millis(100);

impl RedisStore {
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
        idempotency: Option<Idempotency<'_>>,
    ) -> Vec<Result<Published>> {
        let call = Call {
            template,
            idempotency: idempotency.map(|i| sha256_hex(i.key)),
            stamp: idempotency.and_then(|i| i.stamp),
            deadline: self.conn.write_deadline_ms(),
            now: now_ms(),
        };
        let call = &call;
        let started = Instant::now();
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
        // Stored, so answered: each note after the store waits only for what is left of the
        // first deadline, then is retried apart until the index's shard answers (say, a
        // cluster primary being replaced), so the answer never waits out a second deadline.
        let noted = |f: fn(&Published) -> bool| -> Vec<&str> {
            let stored = recipients.iter().zip(&outcomes);
            stored
                .filter(|(_, outcome)| matches!(outcome, Some(Ok(p)) if f(p)))
                .map(|(to, _)| to.user)
                .collect()
        };
        if let Some(at) = due {
            self.hint_within(noted(|p| p.stored), at, started, "a publish's due time")
                .await;
        }
        self.hint_within(
            noted(|p| p.escalates),
            call.now,
            started,
            "Web Push escalations",
        )
        .await;
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::Internal("a recipient had no outcome".into()))))
            .collect()
    }

    /// [`Self::hint`] for `users` (none: nothing to do) within what is left of
    /// [`COMMAND_DEADLINE`] since `started` (at least [`LAST_NOTE`]); past that, or on an
    /// error, retried apart.
    async fn hint_within(&self, users: Vec<&str>, at: u64, started: Instant, what: &str) {
        if users.is_empty() {
            return;
        }
        let left = COMMAND_DEADLINE
            .saturating_sub(started.elapsed())
            .max(LAST_NOTE);
        match tokio::time::timeout(left, self.hint(users.iter().copied(), at)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not note {what} as due (check Redis); retrying");
            }
            Err(_) => tracing::debug!("{what} not noted as due within the publish's deadline"),
        }
        let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        tokio::spawn(self.clone().hint_until_noted(users, at));
    }

    /// [`Self::hint`] for one user after a write that is done (answered either way): on an
    /// error, retried apart ([`Self::hint_until_noted`]).
    pub(super) async fn hint_or_retry(&self, user: &str, at: u64) {
        if self.hint(std::iter::once(user), at).await.is_err() {
            tokio::spawn(self.clone().hint_until_noted(vec![user.to_owned()], at));
        }
    }

    /// [`Self::hint`] retried with backoff (0.25 s doubling up to 4 s) for up to two minutes.
    pub(super) async fn hint_until_noted(self, users: Vec<String>, at: u64) {
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
                        "users could not be noted in the due index for two minutes: what \
                         comes due in their trays (a delivery, an expiry, a Web Push \
                         escalation) waits until a later write notes them again"
                    );
                    return;
                }
                Err(_) => wait = (wait * 2).min(Duration::from_secs(4)),
            }
        }
    }

    /// Note in the due index that `users` have something due at `at` (an entry only ever
    /// moves earlier here).
    pub(super) async fn hint<'a>(
        &self,
        users: impl Iterator<Item = &'a str>,
        at: u64,
    ) -> Result<()> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(keys::due_index()).arg("LT");
        for user in users {
            cmd.arg(at).arg(user);
        }
        let _: () = cmd.query_async(&mut self.conn()).await?;
        Ok(())
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
        match call.stamp {
            Some(stamp) => cmd.arg(stamp),
            None => cmd.arg(""),
        };
        let mut user = String::new();
        for to in users {
            user.clear();
            push_json_str(&mut user, to.user);
            cmd.arg(to.id.as_str())
                .arg(user.as_str())
                .arg(Epoch::random().as_str());
        }
        let mut conn = self.conn.for_deadline_writes();
        let reply = (self.commit(&self.scripts.publish, cmd, &keys[0], &mut conn)).await;
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
}

/// What every script call of one publish shares.
struct Call<'a> {
    template: &'a Template,
    /// The hashed idempotency key (one hash per publish, not per user).
    idempotency: Option<String>,
    /// The idempotency key's stamp ([`Idempotency`]).
    stamp: Option<u64>,
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
