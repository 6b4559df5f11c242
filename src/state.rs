//! `AppState`: everything a request handler needs, as one cheap-to-clone handle over
//! `Arc<Inner>`. Built once at start-up from the config: embedded or Redis backends, and the
//! Kafka consumer. Building connects and spawns nothing of its own; the server starts the
//! background tasks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::broker::{Broker, Message};
use crate::config::Config;
use crate::error::Result;
use crate::error::StartupError;
use crate::hub::Hub;
#[cfg(feature = "kafka")]
use crate::ingest::Kafka;
use crate::metrics::Metrics;
use crate::push::Pusher;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::upstream::Upstream;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub broker: Broker,
    pub hub: Hub,
    pub metrics: Metrics,
    pub shutdown: Shutdown,
    /// The `/api/` proxy target, with `--upstream`.
    pub upstream: Option<Upstream>,
    /// Streams opening (or deleting their presence as they close), at most [`MAX_OPENING`] at
    /// once: a reconnect storm is served at the store's pace instead of queueing past its
    /// deadlines.
    pub opening: Turns,
    /// The Web Push sender, with `--vapid-private-key`.
    pub push: Option<Pusher>,
    /// The Kafka consumer, with `--kafka-brokers` (the server runs it).
    #[cfg(feature = "kafka")]
    pub kafka: Option<Kafka>,
}

/// Streams that may be opening (subscribe, presence, head, replay) at once; the others wait.
pub const MAX_OPENING: usize = 64;

/// Turns at the store for opening streams, in arrival order. A turn may be waited for as long
/// as it takes while the store answers (a reconnect storm queues at the store's pace), but not
/// past the request's deadline while it fails (the turns ahead each wait out their deadline:
/// Redis away, the answer still comes within a second). It fails once [`FAILING_AFTER`] turns
/// in a row found it unavailable, so one opening that ran out of time in a storm does not
/// turn the queue away.
pub struct Turns {
    permits: Semaphore,
    /// Turns in a row that found the store unavailable.
    failures: AtomicUsize,
    /// Told when the store starts failing: the turns waited for past their deadline give up.
    failed: Notify,
}

/// Turns in a row that found the store unavailable before it counts as failing.
const FAILING_AFTER: usize = 4;

impl Turns {
    fn new(n: usize) -> Self {
        Turns {
            permits: Semaphore::new(n),
            failures: AtomicUsize::new(0),
            failed: Notify::new(),
        }
    }

    /// A turn; `None` past `by` while the store fails.
    pub async fn take(&self, by: Instant) -> Option<SemaphorePermit<'_>> {
        // One place in the queue, kept past the deadline while the store answers.
        let turn = self.permits.acquire();
        tokio::pin!(turn);
        tokio::select! {
            permit = &mut turn => return Some(permit.expect("the turns are never closed")),
            () = tokio::time::sleep_until(by) => {}
        }
        loop {
            let failed = self.failed.notified();
            tokio::pin!(failed);
            failed.as_mut().enable();
            if self.failing() {
                return None;
            }
            tokio::select! {
                permit = &mut turn => return Some(permit.expect("the turns are never closed")),
                () = failed => {}
            }
        }
    }

    /// A turn, however long it takes (a closed stream's presence deletion).
    pub async fn wait(&self) -> SemaphorePermit<'_> {
        (self.permits.acquire().await).expect("the turns are never closed")
    }

    /// Whether the store was unavailable to the last [`FAILING_AFTER`] turns that ended.
    pub fn failing(&self) -> bool {
        self.failures.load(Ordering::Relaxed) >= FAILING_AFTER
    }

    /// Whether the store was unavailable to the last turn that ended: a turn taken now reads
    /// within its request's deadline only.
    pub fn failed_last(&self) -> bool {
        self.failures.load(Ordering::Relaxed) > 0
    }

    /// What a turn found: the store available or not.
    pub fn note(&self, available: bool) {
        if available {
            self.failures.store(0, Ordering::Relaxed);
        } else if self.failures.fetch_add(1, Ordering::Relaxed) + 1 == FAILING_AFTER {
            self.failed.notify_waiters();
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    /// Connect the backends named by the config; an unreachable Redis is a start-up error.
    pub async fn build(config: Config, shutdown: Shutdown) -> Result<Self, StartupError> {
        let metrics = Metrics::default();
        let hub = Hub::new(config.node.clone(), metrics.clone());
        // The store connects first: with Redis away, start-up fails before the broker starts.
        let push = match &config.push {
            Some(push) => Some(Pusher::new(push, metrics.clone())?),
            None => None,
        };
        let store = Store::connect(
            &config.backend,
            hub.clone(),
            config.max_per_user,
            push.is_some(),
            &metrics,
            &shutdown,
        )
        .await?;
        let broker = Broker::start(
            &config.backend,
            hub.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
        .await?;
        let upstream = (config.upstream.clone())
            .map(|base| Upstream::new(base, config.upstream_ca_pem.as_deref()))
            .transpose()?;
        #[cfg(feature = "kafka")]
        let kafka = match config.kafka.clone() {
            Some(kafka) => Some(Kafka::connect(kafka, metrics.clone(), &config.node).await?),
            None => None,
        };
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                store,
                broker,
                hub,
                metrics,
                shutdown,
                upstream,
                push,
                opening: Turns::new(MAX_OPENING),
                #[cfg(feature = "kafka")]
                kafka,
            }),
        })
    }

    /// End every stream of a session, here and on every other node.
    pub async fn revoke_session(&self, user: &str, session: &str) -> Result<()> {
        self.hub.end_session(user, session);
        let message = Message::Revoke {
            from: self.hub.sender().to_owned(),
            session: session.to_owned(),
        };
        self.broker.announce(user, &message).await
    }
}
