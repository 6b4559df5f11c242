//! Due times: every node, every [`TICK`], asks the store which users have something due (a
//! `deliver_at` reached, a snooze ended, an `expires_at` passed, a Web Push escalation) and
//! has the store handle each such user's tray. The store makes that exactly-once however many
//! nodes run it at once (memory: under the tray's lock; Redis: one atomic script per user),
//! and the changes reach the user's streams on whichever node holds them. A node that dies
//! mid-round leaves its users in the due index; the next tick of any node handles them.
//! Escalations the store hands out are this node's to finish (`crate::push`).

use std::time::Duration;

use tokio::task::JoinSet;

use crate::error::Error;
use crate::model::now_ms;
use crate::push::Pusher;
use crate::shutdown::Shutdown;
use crate::store::{Escalation, Store};

/// How often the due index is read: the latest a due change can be.
pub const TICK: Duration = Duration::from_millis(200);
/// Users handled per tick, at most (the rest wait for the next tick).
const BATCH: usize = 256;
/// When a user whose due handling failed (not Redis being away) is tried again.
const RETRY_BROKEN: Duration = Duration::from_secs(60);

/// Handle what comes due in `store` until shutdown; then give the Web Push escalations in
/// flight up to `drain` to finish their requests (a push waiting for a retry is handed back
/// for any node at once; a request cut short is taken again by another node once its lease
/// runs out).
pub async fn run(store: Store, push: Option<Pusher>, shutdown: Shutdown, drain: Duration) {
    let mut sending = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(_) = sending.join_next(), if !sending.is_empty() => continue,
            _ = shutdown.wait() => break,
        }
        let due = match store.due(now_ms(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::debug!(error = %e, "due index unavailable");
                continue;
            }
        };
        for (user, hint) in due {
            let found = match store.process_due(&user, hint).await {
                Ok(found) => found,
                Err(e @ Error::Unavailable(_)) => {
                    tracing::warn!(
                        error = %e,
                        "due notifications could not be handled (check that Redis runs); \
                         retried at the next tick, nothing is lost"
                    );
                    break;
                }
                Err(e) => {
                    // One user's tray (a key of the wrong type, say): skip it, so it never
                    // holds up everyone else's, and try it again a minute later.
                    tracing::warn!(
                        error = %e,
                        retry_in = ?RETRY_BROKEN,
                        "due notifications of one user could not be handled; run with \
                         HERALD_LOG=herald=debug to see which, and inspect that user's keys"
                    );
                    tracing::debug!(user, "due: the user skipped");
                    let later = now_ms() + RETRY_BROKEN.as_millis() as u64;
                    if let Err(e) = store.defer_due(&user, later).await {
                        tracing::debug!(error = %e, "due: could not defer a user");
                    }
                    continue;
                }
            };
            let Some(push) = &push else { continue };
            let cancelled = push.metrics().push_escalations_cancelled.clone();
            cancelled.inc_by(found.cancelled as u64);
            for escalation in found.escalations {
                let (store, push, user) = (store.clone(), push.clone(), user.clone());
                let stop = shutdown.clone();
                sending
                    .spawn(async move { escalate(&store, &push, &user, escalation, &stop).await });
            }
        }
    }
    let finished = async { while sending.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, finished).await.is_err() {
        tracing::warn!(
            "Web Push sends still running at the drain timeout were stopped; another node \
             takes them over within 30 s"
        );
    }
}

/// The first step pushes at once when the user has no live stream on any node, and otherwise
/// waits `--push-after` from when the notification became active; the second pushes.
async fn escalate(
    store: &Store,
    push: &Pusher,
    user: &str,
    escalation: Escalation,
    stop: &Shutdown,
) {
    if !escalation.send {
        match store.presence(user).await {
            Ok(streams) if !streams.is_empty() => {
                let at = escalation.due_ms + push.after().as_millis() as u64;
                let id = &escalation.notification.id;
                let lease = escalation.lease;
                if let Err(e) = store.push_later(user, id, lease, at, true).await {
                    tracing::debug!(error = %e, "Web Push: could not defer an escalation");
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                // Its lease runs out and it is checked again.
                tracing::debug!(error = %e, "Web Push: presence unavailable");
                return;
            }
        }
    }
    push.send(store, user, &escalation, stop).await;
}
