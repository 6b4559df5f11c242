//! Retention: every `period`, one node at a time (a Redis lock in Redis mode) deletes the
//! notifications older than `--retention`. Deletions are committed like any other, so open
//! streams get `deleted` with the new unread count. Ids are ULIDs, so "older than" is a
//! comparison with the id of the cut-off time; a notification delivered later (`deliver_at`)
//! ages from its delivery, which the stores check for the old ids only. The change logs
//! are cut too: a change older than the retention (and than a day, so that a replay reaches a
//! day back whatever the retention) is dropped, so a purged notification's JSON does not live
//! on in the log, and a user with nothing left keeps no log. Every [`PRESENCE_SWEEP_ROUNDS`]th
//! round, the cleaner also drops the presence entries of dead node processes, which a user
//! whose presence nobody reads would otherwise keep.

use std::time::{Duration, SystemTime};

use crate::model::unix_ms;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// How often retention runs for a given retention: a quarter of it, within [250 ms, 60 s].
pub fn period(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
}

/// The cleaner sweeps presence every this many rounds (every 10 minutes with the usual
/// 60 s period): a read of every online user's presence, for what only a crash leaves.
const PRESENCE_SWEEP_ROUNDS: u32 = 10;

/// A change stays replayable at least this long, whatever `--retention` says.
const REPLAY_AT_LEAST: Duration = Duration::from_secs(24 * 3600);

/// The smallest id that can be created at `t`: every id created before `t` sorts below it.
pub fn cutoff_id(t: SystemTime) -> String {
    ulid::Ulid::from_parts(unix_ms(t), 0).to_string()
}

/// Purge `store` of what is older than `retention`, as `node`, until shutdown.
pub async fn run(store: Store, node: String, retention: Duration, shutdown: Shutdown) {
    let period = period(retention);
    let mut rounds = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.wait() => return,
        }
        match store.claim_cleaner(&node, period * 2).await {
            Ok(true) => {}
            Ok(false) => continue, // another node cleans this round
            Err(e) => {
                tracing::debug!(error = %e, "cleaner lock unavailable");
                continue;
            }
        }
        let now = SystemTime::now();
        let cutoff = cutoff_id(now - retention);
        let log_before = unix_ms(now - retention.max(REPLAY_AT_LEAST));
        match store.purge_before(&cutoff, log_before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "retention: old notifications deleted"),
            Err(e) => tracing::warn!(
                error = %e,
                retry_in = ?period,
                "retention run failed: Redis could not be reached; it resumes by itself once \
                 Redis answers (check /readyz and the Redis address if this repeats)"
            ),
        }
        rounds = rounds.wrapping_add(1);
        if rounds.is_multiple_of(PRESENCE_SWEEP_ROUNDS) {
            match store.sweep_presence().await {
                Ok(users) => tracing::debug!(users, "presence swept"),
                Err(e) => {
                    tracing::debug!(error = %e, "presence sweep failed; the next one retries")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids made before the cut-off sort below it, ids made after sort above.
    #[test]
    fn cutoff_orders_ids_by_time() {
        let before = crate::model::new_id();
        std::thread::sleep(Duration::from_millis(2));
        let cut = cutoff_id(SystemTime::now());
        std::thread::sleep(Duration::from_millis(2));
        let after = crate::model::new_id();
        assert!(before < cut && cut < after);
    }

    /// The period follows the retention within its bounds.
    #[test]
    fn period_bounds() {
        assert_eq!(period(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(
            period(Duration::from_millis(100)),
            Duration::from_millis(250)
        );
        assert_eq!(
            period(Duration::from_secs(30 * 86400)),
            Duration::from_secs(60)
        );
    }
}
