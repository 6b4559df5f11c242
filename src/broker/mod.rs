//! The Broker carries what one node must tell the others about a user: committed changes (sent
//! by the Redis store's scripts) and stream controls (logout, a replacing stream). A node
//! subscribes to a user's channel only while it holds a stream of that user. Embedded mode has
//! one node, so its broker has nothing to carry: the memory store dispatches to the hub itself.

mod canary;
mod redis;
mod subscriptions;

use std::time::Duration;

use crate::config::Backend;
use crate::error::{Result, StartupError};
use crate::hub::{Delivery, Hub, Opened};
use crate::metrics::Metrics;
use crate::model::{Change, ChangeKind, Epoch};
use crate::shutdown::Shutdown;

pub use self::redis::RedisBroker;

/// A message on a user's channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A committed change (`c\t<epoch>\t<seq>\t<kind>\t<at_ms>\t<data>`, written by the
    /// store's scripts).
    Change(Change),
    /// End every stream of `session` (`r\t<from>\t<session>`).
    Revoke { from: String, session: String },
    /// A stream of (session, tab) opened by `from`; end the others of that unit opened before
    /// it (`o\t<from>\t<session>\t<tab>\t<opened µs>\t<stream key>`; nodes of an older
    /// version send milliseconds there, told apart by size).
    Open {
        /// The process that sent a control ([`Hub::sender`]; nodes of an older version send
        /// their node's name), which applied it itself.
        from: String,
        session: String,
        tab: Option<String>,
        opened: Opened,
    },
}

impl Message {
    pub fn encode(&self) -> String {
        match self {
            Message::Change(c) => format!(
                "c\t{}\t{}\t{}\t{}\t{}",
                c.epoch,
                c.seq,
                c.kind.as_str(),
                c.at_ms,
                c.data
            ),
            Message::Revoke { from, session } => format!("r\t{from}\t{session}"),
            Message::Open {
                from,
                session,
                tab,
                opened,
            } => format!(
                "o\t{from}\t{session}\t{}\t{}\t{}",
                tab.as_deref().unwrap_or(""),
                opened.us,
                opened.stream
            ),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let (tag, rest) = s.split_once('\t')?;
        match tag {
            "c" => {
                let mut parts = rest.splitn(5, '\t');
                Some(Message::Change(Change {
                    epoch: Epoch::parse(parts.next()?)?,
                    seq: parts.next()?.parse().ok()?,
                    kind: ChangeKind::parse(parts.next()?)?,
                    at_ms: parts.next()?.parse().ok()?,
                    data: parts.next()?.to_owned(),
                }))
            }
            "r" => {
                let (from, session) = rest.split_once('\t')?;
                Some(Message::Revoke {
                    from: from.into(),
                    session: session.into(),
                })
            }
            "o" => {
                // The stream key holds a tab itself: it is the rest.
                let mut parts = rest.splitn(5, '\t');
                let from = parts.next()?.to_owned();
                let session = parts.next()?.to_owned();
                let tab = parts.next().filter(|t| !t.is_empty()).map(str::to_owned);
                // From a node of the version before (no opening time, during a rolling
                // upgrade): newer than any stream here, as that version treated it.
                let opened = match (parts.next(), parts.next()) {
                    (Some(at), Some(stream)) => Opened {
                        us: micros(at.parse().ok()?),
                        stream: stream.to_owned(),
                    },
                    _ => Opened {
                        us: u64::MAX,
                        stream: String::new(),
                    },
                };
                Some(Message::Open {
                    from,
                    session,
                    tab,
                    opened,
                })
            }
            _ => None,
        }
    }

    /// Apply a message from the channel to this node's streams of `user`. Controls that this
    /// process sent itself were already applied locally (told by the sender, not the node's
    /// name: two processes given one `--node-id` still hear each other).
    pub fn apply(self, hub: &Hub, user: &str) {
        match self {
            // Encoded once here; every stream of the user on this node shares the bytes.
            Message::Change(change) => hub.dispatch(user, &Delivery::new(&change)),
            Message::Revoke { from, session } if from != hub.sender() => {
                hub.end_session(user, &session)
            }
            Message::Open {
                from,
                session,
                tab,
                opened,
            } if from != hub.sender() => hub.end_replaced(user, &session, tab.as_deref(), &opened),
            _ => {}
        }
    }
}

#[derive(Clone)]
pub enum Broker {
    /// Embedded mode: one node, nothing to carry.
    Memory,
    Redis(RedisBroker),
}

impl Broker {
    /// The broker for `backend`: nothing to carry in embedded mode; for Redis, connected, with
    /// its listener and subscription worker running until shutdown.
    pub async fn start(
        backend: &Backend,
        hub: Hub,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Result<Self, StartupError> {
        Ok(match backend {
            Backend::Embedded => Broker::Memory,
            Backend::Redis(_) | Backend::Cluster(_) => {
                Broker::Redis(RedisBroker::start(backend, hub, metrics, shutdown).await?)
            }
        })
    }

    /// Start receiving `user`'s channel on this node; returns once the subscription is active.
    pub async fn subscribe(&self, user: &str) -> Result<()> {
        match self {
            Broker::Memory => Ok(()),
            Broker::Redis(b) => b.subscribe(user).await,
        }
    }

    /// Stop receiving `user`'s channel unless a stream of the user opened again meanwhile.
    pub fn unsubscribe(&self, user: &str) {
        if let Broker::Redis(b) = self {
            b.unsubscribe(user);
        }
    }

    /// Ok when the broker answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        match self {
            Broker::Memory => Ok(()),
            Broker::Redis(b) => b.ping().await,
        }
    }

    /// Tell the other nodes (the caller has applied `message` locally).
    pub async fn announce(&self, user: &str, message: &Message) -> Result<()> {
        match self {
            Broker::Memory => Ok(()),
            Broker::Redis(b) => b.announce(user, message).await,
        }
    }

    /// [`Self::announce`] for a caller that has moved on, sent again every
    /// [`RESEND_EVERY`] while it fails (say, the user's shard being replaced), for
    /// [`RESEND_FOR`] at most, while `wanted` says so (the stream it announces is open), and
    /// until the node stops. The message may arrive twice (a send that ran out of time may
    /// still go out): only messages that mean the same twice.
    pub async fn announce_until_sent(
        self,
        user: String,
        message: Message,
        stop: Shutdown,
        wanted: impl Fn() -> bool,
    ) {
        let until = tokio::time::Instant::now() + RESEND_FOR;
        while tokio::time::Instant::now() < until {
            tokio::select! {
                () = tokio::time::sleep(RESEND_EVERY) => {}
                () = stop.wait() => return,
            }
            if !wanted() {
                return;
            }
            match self.announce(&user, &message).await {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = %e, "announcement not sent yet"),
            }
        }
        tracing::debug!(user, "announcement given up");
        tracing::warn!(
            "an announcement to the other nodes could not be sent for {RESEND_FOR:?} (check Redis)"
        );
    }
}

/// How often an announcement that failed is sent again ([`Broker::announce_until_sent`]).
const RESEND_EVERY: Duration = Duration::from_millis(250);
/// How long an announcement that failed is sent again at most.
const RESEND_FOR: Duration = Duration::from_secs(10);

/// An opening time from the channel in µs: a node of the version before sends Unix ms, far
/// below any Unix µs since 1973 (10^14).
fn micros(at: u64) -> u64 {
    if at < 100_000_000_000_000 {
        at.saturating_mul(1000)
    } else {
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message survives encode → parse, including data containing tabs.
    #[test]
    fn messages_round_trip() {
        for m in [
            Message::Change(Change {
                epoch: Epoch::random(),
                seq: 3,
                kind: ChangeKind::Read,
                at_ms: 9,
                data: "{\"a\":\"x\\ty\"}".into(),
            }),
            Message::Revoke {
                from: "n1 0a1b2c3d".into(),
                session: "s".into(),
            },
            Message::Open {
                from: "n1 0a1b2c3d".into(),
                session: "s".into(),
                tab: None,
                opened: Opened {
                    us: 1_700_000_000_000_001,
                    stream: "n1.4\t9".into(),
                },
            },
            Message::Open {
                from: "n1 0a1b2c3d".into(),
                session: "s".into(),
                tab: Some("t".into()),
                opened: Opened {
                    us: 1_700_000_000_000_002,
                    stream: "n1.5\t9".into(),
                },
            },
        ] {
            assert_eq!(Message::parse(&m.encode()), Some(m));
        }
    }

    /// An opening time in ms (a node of the version before) reads as µs.
    #[test]
    fn opening_times_in_ms_read_as_us() {
        let Some(Message::Open { opened, .. }) =
            Message::parse("o\tn1\ts\t\t1700000000000\tn1.4\t9")
        else {
            panic!("an open message");
        };
        assert_eq!(opened.us, 1_700_000_000_000_000);
    }

    /// An open message of the version before replaces every stream of its unit.
    #[test]
    fn open_without_its_time_is_newest() {
        let Some(Message::Open { tab, opened, .. }) = Message::parse("o\tn1\ts\tt") else {
            panic!("an open message");
        };
        assert_eq!(tab.as_deref(), Some("t"));
        assert_eq!(opened.us, u64::MAX);
    }

    /// A change message without a valid epoch (the layout before epochs) is not a change.
    #[test]
    fn change_without_epoch_is_ignored() {
        assert_eq!(Message::parse("c\t3\tread\t9\t{}"), None);
        let m = Message::parse("c\t3f9a0c12d4e1\t3\tread\t9\t{}").unwrap();
        assert!(matches!(m, Message::Change(Change { seq: 3, .. })));
    }
}
