//! Redis broker: one RESP3 connection per node (to one server or to a cluster) carrying sharded
//! pub/sub (`SSUBSCRIBE` of the users that have a stream here) and control announcements
//! (`SPUBLISH`). Subscription changes go through one worker task, in batches (subscribes
//! pipelined, then unsubscribes of users still without a stream), so a quick
//! unsubscribe/subscribe pair of the same user can never leave it unsubscribed. When the link
//! gets a new connection (after Redis was stopped, or black-holed so that no disconnection was
//! ever seen) the worker subscribes again and every stream catches up from the store.

use std::collections::HashSet;
use std::time::Duration;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::Message;
use crate::config::{Backend, StartupError};
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::redis_conn::{connect, RedisConn, COMMAND_DEADLINE};
use crate::shutdown::Shutdown;
use crate::store::keys::{user_of_channel, UserKeys};

/// Longest wait for a subscription to become active before the stream gets 503.
const SUBSCRIBE_TIMEOUT: Duration = COMMAND_DEADLINE;
/// Subscription changes applied together (their subscribes in one pipelined round trip).
const BATCH: usize = 256;

enum Command {
    Subscribe(String, oneshot::Sender<Result<()>>),
    Unsubscribe(String),
    /// A connection to a node was lost (a cluster connection carries on without that node's
    /// subscriptions; one server's link gets a new connection, which is seen anyway).
    Lost,
}

#[derive(Clone)]
pub struct RedisBroker {
    conn: RedisConn,
    commands: mpsc::UnboundedSender<Command>,
}

impl RedisBroker {
    /// Connect and start the listener and subscription worker; both stop on shutdown.
    pub async fn start(
        backend: &Backend,
        hub: Hub,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Result<Self, StartupError> {
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let conn = connect(backend, Some(push_tx), "broker", Some(shutdown.clone())).await?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        tokio::spawn(listen(
            push_rx,
            hub.clone(),
            commands.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(work(command_rx, hub, conn.clone(), metrics, shutdown));
        Ok(RedisBroker { conn, commands })
    }

    pub async fn subscribe(&self, user: &str) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if !self.conn.is_up() {
            return Err(Error::Unavailable("the broker's Redis link is down".into()));
        }
        let unavailable = || Error::Unavailable("broker subscription worker stopped".into());
        self.commands
            .send(Command::Subscribe(user.to_owned(), tx))
            .map_err(|_| unavailable())?;
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(unavailable()),
            Err(_) => Err(Error::Unavailable("subscribing timed out".into())),
        }
    }

    pub fn unsubscribe(&self, user: &str) {
        let _ = self.commands.send(Command::Unsubscribe(user.to_owned()));
    }

    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    pub async fn announce(&self, user: &str, message: &Message) -> Result<()> {
        let _: i64 = redis::cmd("SPUBLISH")
            .arg(UserKeys::new(user).channel())
            .arg(message.encode())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

/// Apply subscription changes one at a time; an unsubscribe is skipped if the user has a
/// stream here again by the time it runs. When the link has a new connection (the old one
/// and its subscriptions are gone), subscribe every tracked channel anew (a cluster failover
/// also moves shard channels to a new primary) and have every stream catch up.
async fn work(
    mut rx: mpsc::UnboundedReceiver<Command>,
    hub: Hub,
    mut conn: RedisConn,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut reconnections = conn.reconnections();
    reconnections.mark_unchanged();
    loop {
        let first = tokio::select! {
            c = rx.recv() => match c { Some(c) => Some(c), None => return },
            changed = reconnections.changed() => match changed { Ok(()) => None, Err(_) => return },
            _ = shutdown.wait() => return,
        };
        // Take what else is waiting, so a burst of new streams costs one round trip.
        let mut batch: Vec<Command> = first.into_iter().collect();
        while !batch.is_empty() && batch.len() < BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut subscribes = Vec::new();
        let mut unsubscribes = Vec::new();
        // A new connection (no command at all), or a node's connection lost.
        let mut lost = batch.is_empty() || reconnections.has_changed().unwrap_or(false);
        for command in batch {
            match command {
                Command::Subscribe(user, reply) => subscribes.push((user, reply)),
                Command::Unsubscribe(user) => unsubscribes.push(user),
                Command::Lost => lost = true,
            }
        }
        if lost {
            metrics.broker_reconnects.inc();
            if !resubscribe(&mut conn, &subscribed, &mut reconnections, &shutdown).await {
                return;
            }
            tracing::info!(
                users = subscribed.len(),
                "broker subscribed again; streams catch up"
            );
            hub.catch_up_all();
        }
        subscribe_all(&conn, &mut subscribed, subscribes).await;
        // After the subscribes: a user who left and came back within the batch is kept.
        for user in unsubscribes {
            if hub.count(&user) == 0 && subscribed.remove(&user) {
                let channel = UserKeys::new(&user).channel();
                if let Err(e) = conn.sunsubscribe(&channel).await {
                    tracing::debug!(error = %e, user, "sunsubscribe failed");
                }
            }
        }
    }
}

/// Subscribe the users not subscribed yet, concurrently (pipelined on the connection), and
/// answer every waiting stream.
async fn subscribe_all(
    conn: &RedisConn,
    subscribed: &mut HashSet<String>,
    requests: Vec<(String, oneshot::Sender<Result<()>>)>,
) {
    let mut new: Vec<String> = requests
        .iter()
        .map(|(user, _)| user)
        .filter(|user| !subscribed.contains(*user))
        .cloned()
        .collect();
    new.sort();
    new.dedup();
    let mut pending = Vec::with_capacity(new.len());
    for user in new {
        let mut conn = conn.clone();
        pending.push(async move {
            let result = conn.ssubscribe(&UserKeys::new(&user).channel()).await;
            (user, result)
        });
    }
    let mut failures = std::collections::HashMap::new();
    for (user, result) in futures_util::future::join_all(pending).await {
        match result {
            Ok(()) => {
                subscribed.insert(user);
            }
            Err(e) => {
                failures.insert(user, e.to_string());
            }
        }
    }
    for (user, reply) in requests {
        let result = match failures.get(&user) {
            None => Ok(()),
            Some(e) => Err(Error::Unavailable(format!("subscribe failed: {e}").into())),
        };
        let _ = reply.send(result);
    }
}

/// Subscribe every tracked channel again, retrying until each one succeeds (a failover
/// takes a few seconds to promote a replica and for the slot map to follow). A connection
/// that replaces the link's before a round starts is covered by that round; one that comes
/// during a round is seen by the caller afterwards. False on shutdown.
async fn resubscribe(
    conn: &mut RedisConn,
    users: &HashSet<String>,
    reconnections: &mut watch::Receiver<u64>,
    shutdown: &Shutdown,
) -> bool {
    let mut missing: Vec<&String> = users.iter().collect();
    loop {
        if reconnections.has_changed().unwrap_or(false) {
            reconnections.mark_unchanged();
            missing = users.iter().collect();
        }
        let mut failed = Vec::new();
        for user in missing {
            if let Err(e) = conn.ssubscribe(&UserKeys::new(user).channel()).await {
                tracing::debug!(error = %e, user, "resubscribe failed; retrying");
                failed.push(user);
            }
        }
        let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut *conn).await;
        if failed.is_empty() && ping.is_ok() {
            return true;
        }
        missing = failed;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.wait() => return false,
        }
    }
}

/// Route pushed messages to the hub; report a lost connection to the worker. (A link whose
/// connection is black-holed reports nothing: its probe replaces the connection, and the
/// worker sees the new one.)
async fn listen(
    mut rx: mpsc::UnboundedReceiver<PushInfo>,
    hub: Hub,
    commands: mpsc::UnboundedSender<Command>,
    shutdown: Shutdown,
) {
    loop {
        let push = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => return },
            _ = shutdown.wait() => return,
        };
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                let (Some(channel), Some(payload)) = (push.data.first(), push.data.get(1)) else {
                    continue;
                };
                let (Some(channel), Some(payload)) = (as_str(channel), as_str(payload)) else {
                    continue;
                };
                let (Some(user), Some(message)) =
                    (user_of_channel(channel), Message::parse(payload))
                else {
                    tracing::warn!(channel, "unreadable broker message");
                    continue;
                };
                message.apply(&hub, &user);
            }
            PushKind::Disconnection => {
                tracing::warn!("broker connection lost; subscribing again once Redis answers");
                let _ = commands.send(Command::Lost);
            }
            _ => {}
        }
    }
}

fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}
