//! `AppState`: everything a request handler needs, as one cheap-to-clone handle over
//! `Arc<Inner>`. Built once at start-up from the config: embedded or Redis backends, and the
//! Kafka consumer. Building connects and spawns nothing of its own; the server starts the
//! background tasks.

use std::sync::Arc;

use tokio::sync::Semaphore;

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
    pub opening: Semaphore,
    /// The Web Push sender, with `--vapid-private-key`.
    pub push: Option<Pusher>,
    /// The Kafka consumer, with `--kafka-brokers` (the server runs it).
    #[cfg(feature = "kafka")]
    pub kafka: Option<Kafka>,
}

/// Streams that may be opening (subscribe, presence, head, replay) at once; the others wait.
pub const MAX_OPENING: usize = 64;

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
                opening: Semaphore::new(MAX_OPENING),
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
