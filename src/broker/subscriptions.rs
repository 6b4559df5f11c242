//! The subscription worker: the one task that changes this node's broker subscriptions, so
//! ordering holds (a quick unsubscribe/subscribe pair of a user never leaves it unsubscribed,
//! and restoring a subscription never undoes an unsubscribe). It applies stream subscribes in
//! batches (pipelined, one channel per `SSUBSCRIBE`: channels of different slots cannot share
//! one). A user whose last stream here ended stays subscribed for `LINGER`, and is then
//! unsubscribed if still without a stream: a stream that comes back (a reload, a dropped
//! network, every stream of a node reconnecting at once) finds its channel subscribed, and
//! costs Redis nothing.
//!
//! The worker also keeps the node's own channels subscribed: on one server the batch channel,
//! where a group publish announces its members' changes together, and the canaries
//! (`canary.rs`), before any user's subscription is answered, and again before lost users
//! are restored and caught up.
//!
//! Redis can end a subscription without being asked: a lost connection (crash, restart,
//! network), a `sunsubscribe` push when the channel's slot left the node (planned or forced
//! failover, takeover, resharding), or silently (a canary unheard). The worker subscribes
//! such channels again between batches, on the slot's primary, retrying with backoff while
//! the cluster settles; each restored user's streams then catch up from the store.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::{PushInfo, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::canary::{marker, Canary, Report, Round, Tell};
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::redis_conn::{as_str, RedisConn};
use crate::shutdown::Shutdown;
use crate::store::batch::BATCH_CHANNEL;
use crate::store::keys::UserKeys;

/// Subscription changes applied together (their subscribes in one pipelined round trip), and
/// the most `SSUBSCRIBE`s in flight at once when restoring lost subscriptions.
const BATCH: usize = 256;
/// First wait before restoring subscriptions that failed to restore; doubles up to
/// `RETRY_MAX` (a failover takes a few seconds to promote a replica and for the slot map to
/// follow).
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a user's channel stays subscribed after the user's last stream here ended.
const LINGER: Duration = Duration::from_secs(10);

pub(super) enum Command {
    Subscribe(String, oneshot::Sender<Result<()>>),
    Unsubscribe(String),
    /// A connection to a node was lost: every subscription on it is gone. (One server's link
    /// then gets a new connection, which the worker also sees on the link itself.)
    Lost,
    /// Redis ended the subscription to this user's channel (a `sunsubscribe` push: its slot
    /// left the node), or confirmed one of our own unsubscribes.
    Dropped(String),
    /// A round of canaries is due.
    Round,
}

/// Whether this node's subscriptions are all in place, for `/readyz`: the worker has seen
/// the link's latest connection and has no lost subscription left to restore. Until then a
/// change announced elsewhere (a logout, a replaced stream) may not reach this node's streams.
#[derive(Clone, Default)]
pub(super) struct Settled {
    /// The link's connection generation the worker last handled.
    generation: Arc<AtomicU64>,
    /// Lost subscriptions are waiting to be restored.
    restoring: Arc<AtomicBool>,
}

impl Settled {
    /// Settled for a link whose current connection generation is `current`.
    pub(super) fn is_settled(&self, current: u64) -> bool {
        self.generation.load(Ordering::Acquire) == current
            && !self.restoring.load(Ordering::Acquire)
    }
}

/// What the worker knows about this node's subscriptions.
struct Subscriptions {
    /// Whether the batch channel (one server only) is subscribed on the current connection.
    batch: bool,
    /// Users whose channel this node wants: they have a stream here.
    wanted: HashSet<String>,
    /// Wanted users whose subscription Redis ended; restored with backoff.
    lost: HashSet<String>,
    /// When `lost` last went from empty to not empty (for the log).
    lost_since: Option<Instant>,
    /// When to try restoring `lost` again, and the wait after that.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Users whose last stream here ended, with when to unsubscribe them (the latest end
    /// counts), and the same in that order (a user may be in it more than once; only the
    /// entry that matches `leaving` counts).
    leaving: HashMap<String, Instant>,
    leave_order: VecDeque<(Instant, String)>,
    canary: Canary,
    /// The canaries check often after the next restore (it follows a loss Redis reported).
    watch_restore: bool,
}

impl Subscriptions {
    fn new(canary: Canary) -> Self {
        Subscriptions {
            batch: false,
            wanted: HashSet::new(),
            lost: HashSet::new(),
            lost_since: None,
            retry_at: None,
            backoff: RETRY_MIN,
            leaving: HashMap::new(),
            leave_order: VecDeque::new(),
            canary,
            watch_restore: false,
        }
    }

    /// Every subscription on the connection is gone: restore the wanted users'. `reported`:
    /// Redis said so (a lost or new connection), and the canaries check often until a while
    /// after the restore; a loss the canaries found does not (a node whose pushes lag would
    /// find one after another).
    fn lose_all(&mut self, reported: bool) {
        self.batch = false;
        self.canary.lost(None);
        if reported {
            self.canary.watch();
        }
        self.watch_restore = reported;
        self.lost.extend(self.wanted.iter().cloned());
    }

    /// The user's last stream here ended (`now`): unsubscribe after `LINGER`.
    fn leave(&mut self, user: String, now: Instant) {
        let at = now + LINGER;
        self.leaving.insert(user.clone(), at);
        self.leave_order.push_back((at, user));
    }

    /// Users due to be unsubscribed by `now` that still have no stream here; they are no
    /// longer wanted.
    fn due_leaves(&mut self, hub: &Hub, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.leave_order.front() {
            if *at > now {
                break;
            }
            let (at, user) = self.leave_order.pop_front().expect("a front entry");
            if self.leaving.get(&user) != Some(&at) {
                continue; // it left again later: that entry counts
            }
            self.leaving.remove(&user);
            if hub.count(&user) == 0 && self.wanted.remove(&user) {
                self.lost.remove(&user);
                due.push(user);
            }
        }
        due
    }
}

/// Apply subscription changes in order; an unsubscribe is skipped if the user has a stream
/// here again by the time it runs. Subscriptions Redis ended are restored between batches,
/// retried with backoff, each restored user's streams catching up from the store.
pub(super) async fn work(
    mut rx: mpsc::UnboundedReceiver<Command>,
    (pushes, mut reports): (
        mpsc::UnboundedSender<PushInfo>,
        mpsc::UnboundedReceiver<Report>,
    ),
    hub: Hub,
    conn: RedisConn,
    metrics: Metrics,
    settled: Settled,
    shutdown: Shutdown,
) {
    let owner = format!("{}:{}", hub.node(), hub.run());
    let mut subs = Subscriptions::new(Canary::new(&owner, conn.is_cluster()));
    // The link's new connections (after Redis was stopped or black-holed): the old
    // connection's subscriptions are gone with it.
    let mut reconnections = conn.reconnections();
    settled
        .generation
        .store(*reconnections.borrow_and_update(), Ordering::Release);
    loop {
        let retry_at = subs.retry_at;
        let leave_at = subs.leave_order.front().map(|(at, _)| *at);
        let first = tokio::select! {
            c = rx.recv() => match c { Some(c) => Some(c), None => return },
            changed = reconnections.changed() => match changed {
                Ok(()) => {
                    // One recovered loss: the lost connection's own push (below) is the
                    // same loss, not counted again.
                    metrics.broker_reconnects.inc();
                    // Not settled until the subscriptions lost with it are restored.
                    settled.restoring.store(true, Ordering::Release);
                    let generation = *reconnections.borrow_and_update();
                    settled.generation.store(generation, Ordering::Release);
                    Some(Command::Lost)
                }
                Err(_) => return,
            },
            _ = tokio::time::sleep_until(subs.canary.next_at()) => Some(Command::Round),
            _ = sleep_until(retry_at) => None,
            _ = sleep_until(leave_at) => None,
            _ = shutdown.wait() => return,
        };
        // Take what else is waiting, so a burst of new streams costs one round trip.
        let mut batch: Vec<Command> = first.into_iter().collect();
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut subscribes = Vec::new();
        let lost_before = subs.lost.len();
        let mut round_due = false;
        for command in batch {
            match command {
                Command::Subscribe(user, reply) => subscribes.push((user, reply)),
                Command::Unsubscribe(user) => subs.leave(user, Instant::now()),
                Command::Lost => subs.lose_all(true),
                // Our own unsubscribe is confirmed the same way, but by then the user is no
                // longer wanted (or wanted again, and subscribing once more is harmless).
                Command::Dropped(user) => {
                    if subs.wanted.contains(&user) {
                        tracing::debug!(user, "Redis ended a subscription; restoring it");
                        subs.lost.insert(user);
                    }
                }
                Command::Round => round_due = true,
            }
        }
        if round_due {
            // judged on every report so far
            while let Ok(report) = reports.try_recv() {
                subs.canary.take(report);
            }
            canary_round(&conn, &mut subs, &pushes, &metrics).await;
        }
        subscribe_all(&conn, &mut subs, subscribes).await;
        if subs.lost.len() > lost_before {
            // News about the topology: try at once, from the shortest wait.
            subs.retry_at = Some(Instant::now());
            subs.backoff = RETRY_MIN;
            subs.lost_since.get_or_insert_with(Instant::now);
        }
        sunsubscribe_each(&conn, subs.due_leaves(&hub, Instant::now())).await;
        if subs.lost.is_empty() {
            subs.retry_at = None;
            subs.lost_since = None;
        } else if subs.retry_at.is_some_and(|at| at <= Instant::now()) {
            restore(&conn, &hub, &mut subs).await;
        }
        settled
            .restoring
            .store(!subs.lost.is_empty(), Ordering::Release);
    }
}

/// Sleep until `at`; forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Judge the canaries' last round and publish the next (in a task of its own: a hung primary
/// must not hold up the worker); a canary unheard is a silent loss of every subscription.
async fn canary_round(
    conn: &RedisConn,
    subs: &mut Subscriptions,
    pushes: &mpsc::UnboundedSender<PushInfo>,
    metrics: &Metrics,
) {
    let active = !subs.wanted.is_empty();
    if active && subs.lost.is_empty() {
        // a canary whose slot moved, or whose primary did not answer
        if let Err(e) = subscribe_own(conn, subs).await {
            tracing::debug!(error = e, "subscribing the node's own channels failed");
        }
    }
    match subs.canary.round(active) {
        Round::Idle => {}
        Round::Silent(channel) => {
            tracing::warn!(
                channel,
                "the broker's subscriptions went silent (a canary published here was not \
                 heard back); subscribing again, and the streams catch up"
            );
            metrics.broker_reconnects.inc();
            subs.lose_all(false);
        }
        Round::Publish(round, channels) => {
            let (conn, pushes) = (conn.clone(), pushes.clone());
            // each publish marked as it is taken: one to a hung primary holds up no other
            let publishes = futures_util::stream::iter(channels).for_each_concurrent(None, {
                move |channel| {
                    let (mut conn, pushes) = (conn.clone(), pushes.clone());
                    async move {
                        let taken: redis::RedisResult<i64> = redis::cmd("SPUBLISH")
                            .arg(&channel)
                            .arg(round)
                            .query_async(&mut conn)
                            .await;
                        if taken.is_ok() {
                            let _ = pushes.send(marker(channel, round));
                        }
                    }
                }
            });
            tokio::spawn(publishes);
        }
    }
}

/// Subscribe the node's own channels that are not: the batch channel (`store::batch`; one
/// server only) and the canaries. Every user's subscription is only as good as they are: a
/// group publish announces on the batch channel, and the canaries, subscribed first, go
/// silent with the users' subscriptions made after them. A canary that fails to subscribe
/// (its primary does not answer) does not hold up the users: it is tried again at the
/// canaries' next round.
async fn subscribe_own(conn: &RedisConn, subs: &mut Subscriptions) -> Result<(), String> {
    if !subs.batch && !conn.is_cluster() {
        conn.clone()
            .ssubscribe(BATCH_CHANNEL)
            .await
            .map_err(|e| e.to_string())?;
        subs.batch = true;
    }
    let canaries = subs.canary.unsubscribed();
    if !canaries.is_empty() {
        // Not on a demoted primary, which relays its new primary's messages: the connection
        // to the new one, where the users' channels are restored, would go unwatched.
        let (ready, mut failures) = on_primaries(conn, canaries.clone(), str::to_owned).await;
        failures.extend(each_channel(conn, ready, true, str::to_owned).await);
        for channel in canaries {
            let error = failures.get(&channel);
            if let Some(error) = error {
                tracing::debug!(error, channel, "subscribing a canary failed");
            }
            match subs.canary.subscribed(&channel, error.is_none()) {
                Tell::Nothing => {}
                Tell::Failing => tracing::warn!(
                    error,
                    channel,
                    "a canary keeps failing to subscribe: a silent loss of the \
                     subscriptions in its slots would go unnoticed until it subscribes"
                ),
                Tell::Back => tracing::info!(channel, "the canary subscribed again"),
            }
        }
    }
    Ok(())
}

/// `SSUBSCRIBE` (or, with `subscribe` false, `SUNSUBSCRIBE`) each user's channel (`channel`
/// names it), one channel per command (channels of different slots cannot share one), up to
/// `BATCH` in flight; the users whose command failed, with why.
async fn each_channel(
    conn: &RedisConn,
    users: Vec<String>,
    subscribe: bool,
    channel: fn(&str) -> String,
) -> HashMap<String, String> {
    futures_util::stream::iter(users)
        .map(|user| {
            let mut conn = conn.clone();
            async move {
                let channel = channel(&user);
                let result = if subscribe {
                    conn.ssubscribe(&channel).await
                } else {
                    conn.sunsubscribe(&channel).await
                };
                (user, result)
            }
        })
        .buffer_unordered(BATCH)
        .filter_map(|(user, result)| async move { result.err().map(|e| (user, e.to_string())) })
        .collect()
        .await
}

/// `SUNSUBSCRIBE` each user's channel (a failure only leaves a channel this node ignores).
async fn sunsubscribe_each(conn: &RedisConn, users: Vec<String>) {
    for (user, error) in each_channel(conn, users, false, user_channel).await {
        tracing::debug!(error, user, "sunsubscribe failed");
    }
}

/// Subscribe the users not subscribed yet, pipelined on the connection, and answer every
/// waiting stream. A user whose subscription Redis ended is left to `restore` (which catches
/// up all of the user's streams, this one included). Where the slot map pointed at a demoted
/// primary (no `sunsubscribe` tells this node when it had no subscription there), the user is
/// restored on the new primary as well.
async fn subscribe_all(
    conn: &RedisConn,
    subs: &mut Subscriptions,
    requests: Vec<(String, oneshot::Sender<Result<()>>)>,
) {
    let mut new: Vec<String> = requests
        .iter()
        .map(|(user, _)| user)
        .filter(|user| !subs.wanted.contains(*user))
        .cloned()
        .collect();
    new.sort();
    new.dedup();
    if requests.is_empty() {
        return;
    }
    if let Err(e) = subscribe_own(conn, subs).await {
        for (_, reply) in requests {
            let e = format!("subscribing the node's own channels failed: {e}");
            let _ = reply.send(Err(Error::Unavailable(e.into())));
        }
        return;
    }
    let (failures, (_, misrouted)) = tokio::join!(
        each_channel(conn, new.clone(), true, user_channel),
        on_primaries(conn, new.clone(), user_channel)
    );
    for user in new {
        if failures.contains_key(&user) {
            continue;
        }
        if misrouted.contains_key(&user) {
            subs.lost.insert(user.clone());
        }
        subs.wanted.insert(user);
    }
    for (user, reply) in requests {
        let result = match failures.get(&user) {
            None => Ok(()),
            Some(e) => Err(Error::Unavailable(format!("subscribe failed: {e}").into())),
        };
        let _ = reply.send(result);
    }
}

/// One pass over the lost subscriptions: subscribe each again where the slot map points at a
/// primary; the restored users' streams catch up from the store; the others are tried again
/// after a longer wait.
async fn restore(conn: &RedisConn, hub: &Hub, subs: &mut Subscriptions) {
    let users: Vec<String> = subs.lost.iter().cloned().collect();
    let (ready, mut failures) = match subscribe_own(conn, subs).await {
        Ok(()) => on_primaries(conn, users, user_channel).await,
        Err(e) => (
            Vec::new(),
            users.into_iter().map(|u| (u, e.clone())).collect(),
        ),
    };
    failures.extend(each_channel(conn, ready.clone(), true, user_channel).await);
    let mut restored = 0;
    for user in ready {
        if !failures.contains_key(&user) {
            subs.lost.remove(&user);
            hub.catch_up(&user);
            restored += 1;
        }
    }
    if let Some((user, error)) = failures.iter().next() {
        tracing::debug!(
            error,
            user,
            restored,
            pending = failures.len(),
            retry_ms = subs.backoff.as_millis() as u64,
            "subscriptions not restored yet; retrying"
        );
        subs.retry_at = Some(Instant::now() + subs.backoff);
        subs.backoff = (subs.backoff * 2).min(RETRY_MAX);
    } else {
        // A slot moving between primaries is routine (debug); a restore that had to wait for
        // the cluster (a failover, a reconnect) is worth an operator's notice.
        let waited = subs
            .lost_since
            .take()
            .map_or(0, |t| t.elapsed().as_millis() as u64);
        if waited >= 1000 {
            tracing::info!(
                users = restored,
                waited_ms = waited,
                "broker subscriptions restored; their streams catch up"
            );
        } else {
            tracing::debug!(
                users = restored,
                waited_ms = waited,
                "broker subscriptions restored"
            );
        }
        subs.retry_at = None;
        subs.backoff = RETRY_MIN;
        if std::mem::take(&mut subs.watch_restore) {
            // what may end subscriptions silently comes just after a restore (a cluster
            // client's slot refresh that replaces node connections): check often a while
            subs.canary.watch();
        }
    }
}

fn user_channel(user: &str) -> String {
    UserKeys::new(user).channel()
}

/// Split `users` into those whose channel (`channel` names it) has a slot the cluster
/// connection routes to a primary (ready to subscribe) and the others, with why. A demoted
/// primary still accepts `SSUBSCRIBE` for its new primary's slots (Redis serves shard
/// channels on replicas), but its subscribers only hear what the new primary relays once it
/// knows its replica, so a subscription is not restored there: a keyed read gets `MOVED`
/// instead, which makes the connection refresh its slot map before the next try. One `ROLE`
/// per slot, concurrently.
async fn on_primaries(
    conn: &RedisConn,
    users: Vec<String>,
    channel: fn(&str) -> String,
) -> (Vec<String>, HashMap<String, String>) {
    use redis::cluster_routing::Slot;
    if !conn.is_cluster() {
        return (users, HashMap::new());
    }
    let mut by_slot: HashMap<Slot, Vec<String>> = HashMap::new();
    for user in users {
        by_slot
            .entry(Slot::for_key(channel(&user)))
            .or_default()
            .push(user);
    }
    let checks = futures_util::stream::iter(by_slot.into_values())
        .map(|users| {
            let mut cluster = conn.clone();
            async move {
                let channel = channel(&users[0]);
                let role = cluster.on_slot_primary(&channel, redis::cmd("ROLE")).await;
                let verdict = match role {
                    None => Ok(()),
                    Some(Ok(Value::Array(role)))
                        if role.first().and_then(as_str) == Some("master") =>
                    {
                        Ok(())
                    }
                    Some(Ok(_)) => {
                        let _: redis::RedisResult<i64> = redis::cmd("EXISTS")
                            .arg(&channel)
                            .query_async(&mut cluster)
                            .await;
                        Err("the slot map points at a replica".to_owned())
                    }
                    Some(Err(e)) => Err(e.to_string()),
                };
                (users, verdict)
            }
        })
        .buffer_unordered(BATCH)
        .collect::<Vec<_>>()
        .await;
    let mut ready = Vec::new();
    let mut failures = HashMap::new();
    for (users, verdict) in checks {
        match verdict {
            Ok(()) => ready.extend(users),
            Err(e) => failures.extend(users.into_iter().map(|u| (u, e.clone()))),
        }
    }
    (ready, failures)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hub::Idle;

    fn wanting(users: &[&str]) -> Subscriptions {
        let mut subs = Subscriptions::new(Canary::new("n", false));
        subs.wanted = users.iter().map(|u| u.to_string()).collect();
        subs
    }

    /// A user is unsubscribed `LINGER` after its last stream ended, counted from the latest
    /// end, and not at all when a stream of it is open again by then.
    #[test]
    fn leaves_linger() {
        let hub = Hub::new("n".into(), Metrics::default());
        let mut subs = wanting(&["a", "b", "c"]);
        let start = Instant::now();
        let half = |n: u32| start + LINGER / 2 * n;
        for user in ["a", "b", "c"] {
            subs.leave(user.into(), start);
        }
        assert!(subs.due_leaves(&hub, half(1)).is_empty());
        subs.leave("b".into(), half(1)); // b came back and left again
        assert!(hub.register(
            "c",
            (None, None),
            10,
            hub.next_id(),
            std::time::SystemTime::now(),
            Arc::new(Idle)
        ));
        assert_eq!(subs.due_leaves(&hub, half(2)), ["a"]);
        assert!(subs.wanted.contains("b") && subs.wanted.contains("c"));
        assert_eq!(subs.due_leaves(&hub, half(3)), ["b"]);
        assert_eq!(subs.wanted, HashSet::from(["c".to_string()]));
        assert!(subs.leaving.is_empty() && subs.leave_order.is_empty());
    }
}
