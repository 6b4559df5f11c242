//! `AppState`: everything a request handler needs, as one cheap-to-clone handle over
//! `Arc<Inner>`. Built once at start-up from the config: embedded or Redis backends.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::{Broker, Message, RedisBroker};
use crate::config::{Backend, Config};
use crate::error::Result;
use crate::error::StartupError;
use crate::hub::Hub;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::redis_conn::connect_plain;
use crate::shutdown::Shutdown;
use crate::store::{MemoryStore, RedisStore, Store};
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
        let (store, broker) = match &config.backend {
            Backend::Embedded => (
                Store::Memory(MemoryStore::new(hub.clone(), config.max_per_user)),
                Broker::Memory,
            ),
            backend @ (Backend::Redis(_) | Backend::Cluster(_)) => {
                let store = RedisStore::new(
                    connect_plain(backend, "store", Some(shutdown.clone())).await?,
                    config.max_per_user,
                );
                let broker =
                    RedisBroker::start(backend, hub.clone(), metrics.clone(), shutdown.clone())
                        .await?;
                tokio::spawn(keep_alive(
                    store.clone(),
                    config.node.clone(),
                    shutdown.clone(),
                ));
                tokio::spawn(catch_up_when_back(
                    store.clone(),
                    hub.clone(),
                    shutdown.clone(),
                ));
                // Blocking reads hold a connection: the ingest consumer has its own.
                let ingest = Ingest::new(
                    connect_plain(backend, "ingest", Some(shutdown.clone())).await?,
                    Store::Redis(store.clone()),
                    metrics.clone(),
                    config.node.clone(),
                );
                tokio::spawn(ingest.run(shutdown.clone()));
                (Store::Redis(store), Broker::Redis(broker))
            }
        };
        let upstream = config.upstream.clone().map(Upstream::new);
        let state = AppState {
            inner: Arc::new(Inner {
                config,
                store,
                broker,
                hub,
                metrics,
                shutdown,
                upstream,
            }),
        };
        tokio::spawn(crate::cleaner::run(state.clone()));
        Ok(state)
    }

    /// End every stream of a session, here and on every other node.
    pub async fn revoke_session(&self, user: &str, session: &str) -> Result<()> {
        self.hub.end_session(user, session);
        let message = Message::Revoke {
            node: self.hub.node().to_owned(),
            session: session.to_owned(),
        };
        self.broker.announce(user, &message).await
    }
}

impl AppState {
    /// Leaving for good: drop this node's alive key so its presence entries vanish at once.
    pub async fn retire(&self) {
        if let Store::Redis(store) = &self.store {
            if let Err(e) = store.retire(&self.config.node).await {
                tracing::debug!(error = %e, "could not remove the node's alive key");
            }
        }
    }
}

/// Refresh this node's alive key so other nodes keep trusting its presence entries.
async fn keep_alive(store: RedisStore, node: String, shutdown: Shutdown) {
    let period = Duration::from_millis(crate::store::redis::NODE_ALIVE_TTL_MS / 4);
    loop {
        if let Err(e) = store.heartbeat(&node).await {
            tracing::debug!(error = %e, "node heartbeat failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// The store's link has a new connection after an outage: every stream catches up again. The
/// broker has them catch up once it has subscribed again, but its link may come back before
/// the store's, and a stream whose catch-up failed would wait for the user's next change.
async fn catch_up_when_back(store: RedisStore, hub: Hub, shutdown: Shutdown) {
    let mut reconnections = store.reconnections();
    loop {
        tokio::select! {
            changed = reconnections.changed() => if changed.is_err() { return },
            _ = shutdown.wait() => return,
        }
        hub.catch_up_all();
    }
}
