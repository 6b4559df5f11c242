//! Due times: every node, every [`TICK`], asks the store which users have something due (a
//! `deliver_at` reached, a snooze ended, an `expires_at` passed) and has the store handle each
//! such user's tray. The store makes that exactly-once however many nodes run it at once
//! (memory: under the tray's lock; Redis: one atomic script per user), and the changes reach
//! the user's streams on whichever node holds them. A node that dies mid-round leaves its
//! users in the due index; the next tick of any node handles them.

use std::time::Duration;

use crate::model::now_ms;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// How often the due index is read: the latest a due change can be.
pub const TICK: Duration = Duration::from_millis(200);
/// Users handled per tick, at most (the rest wait for the next tick).
const BATCH: usize = 256;

/// Handle what comes due in `store` until shutdown.
pub async fn run(store: Store, shutdown: Shutdown) {
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
            if let Err(e) = store.process_due(&user, hint).await {
                tracing::warn!(
                    error = %e,
                    "due notifications could not be handled; retried at the next tick"
                );
                break;
            }
        }
    }
}
