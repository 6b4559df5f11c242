//! Kafka ingest (feature `kafka`): each record's value is a `POST /publish` body. The node
//! joins the consumer group `--kafka-group` on the `--kafka-topic`s; a new group starts at the
//! earliest offset. One thread polls librdkafka ([`run`]) and hands records to one task per
//! assigned partition (`partition`), so partitions proceed in parallel and each in order. An
//! offset is stored only after its record's notifications are stored (or the record is
//! dead-lettered), and librdkafka commits stored offsets every second, on a rebalance and on
//! shutdown: a crash, a rebalance or a broker outage redelivers at most the records not yet
//! committed, and a redelivered record stores nothing new, because its position is its
//! idempotency key when the body has none. A partition whose task falls behind (the store is
//! down) is paused and resumed as the task catches up. `context` turns librdkafka's statistics
//! into readiness and per-partition lag.

mod context;
mod partition;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use self::context::Context;
use self::partition::Partitions;
use crate::config::KafkaConfig;
use crate::error::{Error, StartupError};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Longest wait for the brokers' metadata at start-up (and for `herald publish`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait, at shutdown, for librdkafka to leave the group and close (never past the
/// drain's end; the records in hand stop this long, or half a shorter drain, before it).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// One poll's longest wait; also how often shutdown and paused partitions are looked at.
const POLL: Duration = Duration::from_millis(100);

type Client = BaseConsumer<Context>;

/// The consumer: a cheap handle for `/readyz`, and [`Kafka::run`] for the server to start.
#[derive(Clone)]
pub struct Kafka {
    inner: Arc<Inner>,
}

struct Inner {
    consumer: Arc<Client>,
    producer: FutureProducer,
    config: KafkaConfig,
    ready: Arc<AtomicBool>,
}

/// librdkafka settings: the brokers, Herald's `defaults`, then every `--kafka-option` (which
/// may override anything, SASL and TLS included). librdkafka's own logger is quiet unless a
/// `debug` option asks for it: it writes to stderr past Herald's log (rdkafka serves no log
/// events), and the failures that matter reach Herald as error events, logged there.
fn client_config(config: &KafkaConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut client = ClientConfig::new();
    if !config.options.iter().any(|(key, _)| key == "debug") {
        // The property for the client's first moments, rdkafka's level once it runs.
        client.set("log_level", "0");
        client.set_log_level(RDKafkaLogLevel::Emerg);
    }
    client.set("bootstrap.servers", &config.brokers);
    for (key, value) in defaults {
        client.set(*key, *value);
    }
    for (key, value) in &config.options {
        client.set(key, value);
    }
    client
}

/// A librdkafka error at start-up, as one line naming the flags.
fn startup(what: &str, e: impl std::fmt::Display) -> StartupError {
    StartupError(format!("{what}: {e}"))
}

/// Check that the brokers answer (bounded by [`CONNECT_TIMEOUT`]) and warn about topics that
/// don't exist yet (their records are read once they do). Returns the dead-letter topics that
/// don't exist.
fn check_brokers(
    client: &impl Consumer<Context>,
    config: &KafkaConfig,
) -> Result<Vec<String>, StartupError> {
    let metadata = client.fetch_metadata(None, CONNECT_TIMEOUT).map_err(|e| {
        startup(
            &format!("--kafka-brokers: cannot reach {}", config.brokers),
            e,
        )
    })?;
    let exists = |topic: &str| metadata.topics().iter().any(|t| t.name() == topic);
    for topic in &config.topics {
        if !exists(topic) {
            tracing::warn!(
                topic,
                "kafka: the topic does not exist (yet); its records are read once it does: \
                 create it, or check --kafka-topic"
            );
        }
    }
    let mut missing: Vec<String> = config
        .topics
        .iter()
        .map(|topic| KafkaConfig::dead_letters_of(config.dead_letter_topic.as_deref(), topic))
        .filter(|dead| !exists(dead))
        .collect();
    missing.sort();
    missing.dedup();
    Ok(missing)
}

/// Create the dead-letter topics that don't exist, with the brokers' default partitions and
/// replication: on brokers that don't create topics when written to, a record that can't be
/// dead-lettered would hold its partition up. Refused (no `CREATE` right, an old broker) or
/// created meanwhile by another node: logged, and the node goes on; a dead letter then waits
/// for its topic as before.
async fn create_dead_letter_topics(config: &KafkaConfig, client_id: &str, missing: &[String]) {
    let admin: AdminClient<DefaultClientContext> = match client_config(
        config,
        &[("client.id", client_id)],
    )
    .create()
    {
        Ok(admin) => admin,
        Err(e) => {
            tracing::warn!(error = %e, "kafka: cannot create the dead-letter topics {missing:?}");
            return;
        }
    };
    let topics: Vec<NewTopic> = missing
        .iter()
        .map(|name| NewTopic::new(name, -1, TopicReplication::Fixed(-1)))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(CONNECT_TIMEOUT));
    match admin.create_topics(&topics, &options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(topic) => tracing::info!(topic, "kafka: created the dead-letter topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => tracing::warn!(
                        topic,
                        error = %code,
                        "kafka: cannot create the dead-letter topic; create it, or a record \
                         that is not a valid publish body holds up its partition"
                    ),
                }
            }
        }
        Err(e) => tracing::warn!(
            error = %e,
            "kafka: cannot create the dead-letter topics {missing:?}; create them, or a record \
             that is not a valid publish body holds up its partition"
        ),
    }
    // librdkafka's teardown waits for its threads: off the async workers.
    let _ = tokio::task::spawn_blocking(move || drop(admin)).await;
}

impl Kafka {
    /// Create the consumer and the dead-letter producer, check the brokers answer, and join
    /// the group. A bad `--kafka-option` or unreachable brokers are start-up errors.
    pub async fn connect(
        config: KafkaConfig,
        metrics: Metrics,
        node: &str,
    ) -> Result<Self, StartupError> {
        let ready = Arc::new(AtomicBool::new(false));
        let client_id = format!("herald-{node}");
        let consumer: Client = client_config(
            &config,
            &[
                ("group.id", &config.group),
                ("client.id", &client_id),
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", "1000"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("statistics.interval.ms", "1000"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "3000"),
                // A broker that hangs (its sockets open, nothing answered) counts as down
                // once a request to it has waited this long, not librdkafka's 60 s: `/readyz`
                // follows it that much sooner.
                ("socket.timeout.ms", "10000"),
            ],
        )
        .create_with_context(Context::new(metrics, ready.clone()))
        .map_err(|e| startup("--kafka-option", e))?;
        // The brokers' size limit decides what a dead letter may carry, not librdkafka's
        // smaller default (1,000,000 bytes, below a 1 MiB publish body).
        let producer: FutureProducer = client_config(
            &config,
            &[("client.id", &client_id), ("message.max.bytes", "4194304")],
        )
        .create()
        .map_err(|e| startup("--kafka-option", e))?;
        let checked = tokio::task::spawn_blocking(move || {
            let missing = check_brokers(&consumer, &config)?;
            Ok::<_, StartupError>((consumer, config, missing))
        })
        .await
        .map_err(|e| StartupError(format!("kafka: {e}")))?;
        let (consumer, config, missing) = checked?;
        if !missing.is_empty() {
            create_dead_letter_topics(&config, &client_id, &missing).await;
        }
        let subscribed = tokio::task::spawn_blocking(move || {
            let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&topics)
                .map_err(|e| startup("--kafka-topic", e))?;
            Ok::<_, StartupError>((consumer, config))
        })
        .await
        .map_err(|e| StartupError(format!("kafka: {e}")))?;
        let (consumer, config) = subscribed?;
        ready.store(true, Ordering::Relaxed);
        let consumer = Arc::new(consumer);
        // Never dropped: rdkafka's `Drop` polls until librdkafka has closed, without bound,
        // and a close never completes while the brokers are away, so a node dropping it at
        // exit would hang. The poll loop closes it itself at shutdown, within CLOSE_TIMEOUT.
        std::mem::forget(Arc::clone(&consumer));
        Ok(Kafka {
            inner: Arc::new(Inner {
                consumer,
                producer,
                config,
                ready,
            }),
        })
    }

    /// For `/readyz`: the consumer runs and a broker answers.
    pub fn check(&self) -> Result<(), Error> {
        if self.inner.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(Error::Unavailable(
                "the Kafka brokers cannot be reached".into(),
            ))
        }
    }

    /// Consume until shutdown, then let the partitions' tasks finish the record in hand,
    /// commit what is stored and leave the group, all within `drain`. Returns when the
    /// consumer is closed, or after `drain` and a second if librdkafka cannot close in time
    /// (brokers away).
    pub async fn run(self, store: Store, metrics: Metrics, shutdown: Shutdown, drain: Duration) {
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        let mut partitions = Partitions::new(&self.inner, store, metrics, shutdown.clone());
        let stopping = shutdown.clone();
        let poller = std::thread::Builder::new()
            .name("kafka-consumer".into())
            .spawn(move || {
                poll(&self.inner, &mut partitions, &stopping, drain);
                let _ = done_tx.send(());
            });
        if let Err(e) = poller {
            tracing::error!(
                error = %e,
                "kafka: cannot start the consumer thread, nothing is consumed from Kafka: the \
                 process is likely out of threads or memory; restart the node"
            );
            return;
        }
        // The wind-down's limit counts from the shutdown, not from the start.
        tokio::select! {
            _ = &mut done_rx => return,
            () = shutdown.wait() => {}
        }
        let longest = drain + Duration::from_secs(1);
        let _ = tokio::time::timeout(longest, done_rx).await;
    }
}

/// The consumer thread: poll, hand each record to its partition's task, pause and resume
/// partitions by their backlog; on shutdown, wind down as [`Kafka::run`] says.
fn poll(inner: &Inner, partitions: &mut Partitions, shutdown: &Shutdown, drain: Duration) {
    let consumer = &inner.consumer;
    while !shutdown.is_stopping() {
        match consumer.poll(POLL) {
            None => {}
            Some(Ok(message)) => partitions.dispatch(message.detach()),
            // Broker and transport trouble; the context reports the outage itself.
            Some(Err(e)) => tracing::debug!(error = %e, "kafka: consume error"),
        }
        partitions.flow_control(consumer);
    }
    inner.ready.store(false, Ordering::Relaxed);
    // The whole wind-down fits in the drain: the records in hand get what leaving the group
    // may need kept for it.
    let end = Instant::now() + drain;
    let stored_by = end - CLOSE_TIMEOUT.min(drain / 2);
    partitions.stop_all();
    while partitions.busy() > 0 && Instant::now() < stored_by {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Sent now; leaving the group below commits the stored offsets once more and waits for it.
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
        tracing::debug!(error = %e, "kafka: final commit");
    }
    // Leave the group: librdkafka revokes the assignment (committing once more) and closes.
    match consumer.close_queue() {
        Ok(()) => {
            let closed_by = end.min(Instant::now() + CLOSE_TIMEOUT);
            while !consumer.closed() && Instant::now() < closed_by {
                let _ = consumer.poll(POLL);
            }
            tracing::info!("kafka: left the consumer group");
        }
        Err(e) => tracing::warn!(
            error = %e,
            "kafka: cannot leave the consumer group; its partitions move to other nodes after the \
             session timeout (records committed stay committed, nothing is lost)"
        ),
    }
}

/// `herald publish --kafka-brokers … --kafka-topic …`: produce `value` (a publish body) with
/// `key`, and say where it went.
pub async fn produce(
    config: &KafkaConfig,
    key: &str,
    value: &[u8],
) -> Result<String, StartupError> {
    let timeout = CONNECT_TIMEOUT.as_millis().to_string();
    let producer: FutureProducer = client_config(config, &[("message.timeout.ms", &timeout)])
        .create()
        .map_err(|e| startup("--kafka-option", e))?;
    let topic = config
        .topics
        .first()
        .ok_or_else(|| StartupError("--kafka-topic is required".into()))?;
    let record = FutureRecord::to(topic).key(key).payload(value);
    let (partition, offset) = producer
        .send(record, Timeout::After(CONNECT_TIMEOUT))
        .await
        .map_err(|(e, _)| startup(&format!("--kafka-brokers: cannot produce to {topic}"), e))?;
    Ok(serde_json::json!({
        "topic": topic,
        "partition": partition,
        "offset": offset,
    })
    .to_string())
}
