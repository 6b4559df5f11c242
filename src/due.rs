//! Due times: every node, every [`TICK`], asks the store which users have something due (a
//! `deliver_at` reached, a snooze ended, an `expires_at` passed, a Web Push escalation) and
//! has the store handle each such user's tray. The store makes that exactly-once however many
//! nodes run it at once (memory: under the tray's lock; Redis: one atomic script per user),
//! and the changes reach the user's streams on whichever node holds them. A node that dies
//! mid-round leaves its users in the due index; the next tick of any node handles them.
//! Escalations the store hands out are this node's to finish (`crate::push`).

use std::time::Duration;

use crate::model::now_ms;
use crate::push::Pusher;
use crate::shutdown::Shutdown;
use crate::store::{Escalation, Store};

/// How often the due index is read: the latest a due change can be.
pub const TICK: Duration = Duration::from_millis(200);
/// Users handled per tick, at most (the rest wait for the next tick).
const BATCH: usize = 256;

/// Handle what comes due in `store` until shutdown.
pub async fn run(store: Store, push: Option<Pusher>, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait() => return,
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
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "due notifications could not be handled (check that Redis runs); \
                         retried at the next tick, nothing is lost"
                    );
                    break;
                }
            };
            let Some(push) = &push else { continue };
            let cancelled = push.metrics().push_escalations_cancelled.clone();
            cancelled.inc_by(found.cancelled as u64);
            for escalation in found.escalations {
                let (store, push, user) = (store.clone(), push.clone(), user.clone());
                tokio::spawn(async move { escalate(&store, &push, &user, escalation).await });
            }
        }
    }
}

/// The first step pushes at once when the user has no live stream on any node, and otherwise
/// waits `--push-after` from when the notification became active; the second pushes.
async fn escalate(store: &Store, push: &Pusher, user: &str, escalation: Escalation) {
    if !escalation.send {
        match store.presence(user).await {
            Ok(streams) if !streams.is_empty() => {
                let at = escalation.due_ms + push.after().as_millis() as u64;
                let id = &escalation.notification.id;
                if let Err(e) = store.push_later(user, id, at, true).await {
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
    push.send(store, user, &escalation).await;
}
