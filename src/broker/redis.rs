//! Redis broker: one RESP3 connection per node (to one server or to a cluster) carrying sharded
//! pub/sub (`SSUBSCRIBE` of the users that have a stream here) and control announcements
//! (`SPUBLISH`). The listener routes pushed messages to the hub and tells the subscription
//! worker (`subscriptions.rs`, the only code that changes subscriptions) when Redis ended
//! subscriptions by itself: a lost connection, or a `sunsubscribe` push when a channel's slot
//! left the node (failover, takeover, resharding). A black-holed connection reports nothing:
//! the link's probe replaces it, and the worker sees the new connection.

use std::time::Duration;

use redis::{PushInfo, PushKind};
use tokio::sync::{mpsc, oneshot};

use super::canary::{is_canary, read_marker, Report};
use super::subscriptions::{work, Command, Settled};
use super::Message;
use crate::config::Backend;
use crate::error::StartupError;
use crate::error::{Error, Result};
use crate::hub::{Delivery, Hub};
use crate::metrics::Metrics;
use crate::redis_conn::{as_str, connect, RedisConn, COMMAND_DEADLINE};
use crate::shutdown::Shutdown;
use crate::store::batch::{Batch, BATCH_CHANNEL};
use crate::store::keys::{user_of_channel, UserKeys};

/// Longest wait for a subscription to become active before the stream gets 503.
const SUBSCRIBE_TIMEOUT: Duration = COMMAND_DEADLINE;

#[derive(Clone)]
pub struct RedisBroker {
    conn: RedisConn,
    commands: mpsc::UnboundedSender<Command>,
    settled: Settled,
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
        let conn = connect(
            backend,
            Some(push_tx.clone()),
            "broker",
            Some(shutdown.clone()),
        )
        .await?
        .timed(&metrics);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (reporter, reports) = mpsc::unbounded_channel();
        tokio::spawn(listen(
            push_rx,
            hub.clone(),
            (commands.clone(), reporter),
            shutdown.clone(),
        ));
        let settled = Settled::default();
        let worker = work(
            command_rx,
            (push_tx, reports),
            hub,
            conn.clone(),
            metrics,
            settled.clone(),
            shutdown,
        );
        tokio::spawn(worker);
        Ok(RedisBroker {
            conn,
            commands,
            settled,
        })
    }

    pub async fn subscribe(&self, user: &str) -> Result<()> {
        if !self.conn.is_up() {
            return Err(Error::Unavailable("the broker's Redis link is down".into()));
        }
        let (tx, rx) = oneshot::channel();
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

    /// Redis answers, and every subscription this node wants is in place (after a lost
    /// connection, not until they are restored).
    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        if !self.settled.is_settled(*self.conn.reconnections().borrow()) {
            return Err(Error::Unavailable(
                "the broker's subscriptions are being restored".into(),
            ));
        }
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

/// Route pushed messages to the hub; report a lost connection and every ended subscription
/// to the worker, and what it hears of its canaries.
async fn listen(
    mut rx: mpsc::UnboundedReceiver<PushInfo>,
    hub: Hub,
    (commands, reporter): (
        mpsc::UnboundedSender<Command>,
        mpsc::UnboundedSender<Report>,
    ),
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
                if channel == BATCH_CHANNEL {
                    dispatch_batch(&hub, payload);
                    continue;
                }
                if is_canary(channel) {
                    if let Ok(round) = payload.parse() {
                        let _ = reporter.send(Report::Heard(channel.to_owned(), round));
                    }
                    continue;
                }
                let (Some(user), Some(message)) =
                    (user_of_channel(channel), Message::parse(payload))
                else {
                    unreadable(channel);
                    continue;
                };
                message.apply(&hub, &user);
            }
            PushKind::SUnsubscribe => match push.data.first().and_then(as_str) {
                Some(channel) if is_canary(channel) => {
                    let _ = reporter.send(Report::Dropped(channel.to_owned()));
                }
                Some(channel) => {
                    if let Some(user) = user_of_channel(channel) {
                        let _ = commands.send(Command::Dropped(user));
                    }
                }
                None => {}
            },
            PushKind::Other(_) => {
                if let Some(report) = read_marker(&push) {
                    let _ = reporter.send(report);
                }
            }
            PushKind::Disconnection => {
                tracing::warn!(
                    "broker connection lost; subscribing again once Redis answers (streams stay \
                     open and catch up): check that Redis runs and --redis-url"
                );
                let _ = commands.send(Command::Lost);
            }
            _ => {}
        }
    }
}

/// Hand each change of a batch announcement to this node's streams of its user (encoded only
/// for users with a stream here).
fn dispatch_batch(hub: &Hub, payload: &str) {
    let Some(batch) = Batch::parse(payload) else {
        return unreadable(BATCH_CHANNEL);
    };
    for user in batch.users() {
        match user {
            Some(user) if hub.count(&user.user) > 0 => {
                hub.dispatch(&user.user, &Delivery::new(&batch.change(&user)));
                if let Some(deleted) = batch.dropped(&user) {
                    hub.dispatch(&user.user, &Delivery::new(&deleted));
                }
            }
            Some(_) => {}
            None => unreadable(BATCH_CHANNEL),
        }
    }
}

fn unreadable(channel: &str) {
    tracing::warn!(
        channel,
        "unreadable broker message, ignored: another program publishes on Herald's channels, \
         or nodes of different versions share this Redis"
    );
}
