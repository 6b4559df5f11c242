//! One task per assigned partition, fed by the consumer thread through an unbounded channel
//! (bounded in practice: a partition whose backlog passes [`PAUSE_AT`] records is paused until
//! it is back under [`RESUME_AT`]). A task handles its records in order: parse, publish
//! (retried while the store is down, never dead-lettered for it), or produce the record to the
//! dead-letter topic with a `herald-error` header; only then is its offset stored for commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::Client;
use crate::config::KafkaConfig;
use crate::ingest::{give_up, parse, pause, unparsable, DEAD_COPY_BYTES};
use crate::metrics::Metrics;
use crate::model::sha256_hex;
use crate::publish::{accepted_at, publish_accepted, MAX_KEY_CHARS};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// A partition with this many records waiting for its task is paused…
const PAUSE_AT: usize = 500;
/// …and resumed when its task is down to this many.
const RESUME_AT: usize = 100;
/// First and longest wait between two attempts while the store or the brokers fail.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// The header that says why a record was dead-lettered.
pub const ERROR_HEADER: &str = "herald-error";
/// On a dead letter that keeps only the start of the value: the value's size, in bytes.
pub const SIZE_HEADER: &str = "herald-original-size";

/// Records handed to a partition's task and not yet taken up.
type Backlog = Arc<AtomicUsize>;

/// The partition tasks of this node, as the consumer thread (their one owner) sees them.
pub struct Partitions {
    shared: Arc<Shared>,
    tasks: HashMap<(String, i32), Task>,
}

/// What every task uses.
struct Shared {
    consumer: Arc<Client>,
    producer: FutureProducer,
    dead_letter_topic: Option<String>,
    store: Store,
    metrics: Metrics,
    runtime: Handle,
    shutdown: Shutdown,
    /// Tasks that have not finished.
    running: AtomicUsize,
}

/// The consumer thread's side of one task.
struct Task {
    tx: mpsc::UnboundedSender<OwnedMessage>,
    backlog: Backlog,
    /// Set when the partition is revoked or the node stops: finish the record in hand only.
    stop: Arc<AtomicBool>,
    paused: bool,
}

impl Partitions {
    /// The tasks of `kafka`'s partitions, to be spawned on the current runtime.
    pub fn new(kafka: &super::Inner, store: Store, metrics: Metrics, shutdown: Shutdown) -> Self {
        Partitions {
            shared: Arc::new(Shared {
                consumer: kafka.consumer.clone(),
                producer: kafka.producer.clone(),
                dead_letter_topic: kafka.config.dead_letter_topic.clone(),
                store,
                metrics,
                runtime: Handle::current(),
                shutdown,
                running: AtomicUsize::new(0),
            }),
            tasks: HashMap::new(),
        }
    }

    /// Queue a record for its partition's task, starting the task if need be.
    pub fn dispatch(&mut self, message: OwnedMessage) {
        let shared = &self.shared;
        shared.metrics.kafka_consumed.inc();
        let key = (message.topic().to_owned(), message.partition());
        let task = self.tasks.entry(key).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let backlog = Backlog::default();
            let stop = Arc::new(AtomicBool::new(false));
            shared.running.fetch_add(1, Ordering::SeqCst);
            let worker = Worker {
                shared: shared.clone(),
                backlog: backlog.clone(),
                stop: stop.clone(),
            };
            shared.runtime.spawn(worker.run(rx));
            Task {
                tx,
                backlog,
                stop,
                paused: false,
            }
        });
        task.backlog.fetch_add(1, Ordering::SeqCst);
        let _ = task.tx.send(message);
    }

    /// Stop the tasks of revoked partitions, resume assigned ones, pause partitions whose task
    /// is behind and resume those that caught up.
    pub fn flow_control(&mut self, consumer: &Client) {
        let tasks = &mut self.tasks;
        let rebalanced = consumer.context().take_rebalanced();
        for key in rebalanced.revoked {
            if let Some(task) = tasks.remove(&key) {
                task.stop.store(true, Ordering::SeqCst);
            }
        }
        if !rebalanced.assigned.is_empty() {
            // Partitions this node paused before they were taken away come back running.
            let mut list = TopicPartitionList::new();
            for (topic, partition) in &rebalanced.assigned {
                list.add_partition(topic, *partition);
            }
            if let Err(e) = consumer.resume(&list) {
                tracing::debug!(error = %e, "kafka: resume on assignment");
            }
        }
        for ((topic, partition), task) in tasks.iter_mut() {
            let backlog = task.backlog.load(Ordering::SeqCst);
            let change = if !task.paused && backlog >= PAUSE_AT {
                Some(true)
            } else if task.paused && backlog <= RESUME_AT {
                Some(false)
            } else {
                None
            };
            let Some(pause) = change else { continue };
            let mut list = TopicPartitionList::new();
            list.add_partition(topic, *partition);
            let done = if pause {
                consumer.pause(&list)
            } else {
                consumer.resume(&list)
            };
            match done {
                Ok(()) => task.paused = pause,
                Err(e) => tracing::debug!(error = %e, topic, partition, "kafka: pause/resume"),
            }
        }
    }

    /// Tell every task to stop after the record in hand.
    pub fn stop_all(&mut self) {
        for (_, task) in self.tasks.drain() {
            task.stop.store(true, Ordering::SeqCst);
        }
    }

    /// Tasks still running.
    pub fn busy(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }
}

/// One partition's task.
struct Worker {
    shared: Arc<Shared>,
    backlog: Backlog,
    stop: Arc<AtomicBool>,
}

/// What became of a record.
enum Outcome {
    Stored,
    Dead,
}

impl Worker {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<OwnedMessage>) {
        while let Some(message) = rx.recv().await {
            self.backlog.fetch_sub(1, Ordering::SeqCst);
            if self.stopped() {
                break;
            }
            let Some(outcome) = self.handle(&message).await else {
                break;
            };
            let counter = match outcome {
                Outcome::Stored => &self.shared.metrics.kafka_stored,
                Outcome::Dead => &self.shared.metrics.kafka_dead_lettered,
            };
            counter.inc();
            let (topic, partition, offset) =
                (message.topic(), message.partition(), message.offset());
            // librdkafka commits offset + 1: the next record to read.
            if let Err(e) = self.shared.consumer.store_offset(topic, partition, offset) {
                tracing::debug!(error = %e, topic, partition, offset, "kafka: offset not stored (partition revoked)");
            }
        }
        self.shared.running.fetch_sub(1, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Store or dead-letter one record, retrying what a retry may fix; `None` if the task was
    /// stopped first (the record stays uncommitted and is read again by the next owner).
    async fn handle(&self, message: &OwnedMessage) -> Option<Outcome> {
        let mut delay = RETRY_FIRST;
        let mut publishes = 0;
        loop {
            let metrics = &self.shared.metrics;
            let payload = message.payload().unwrap_or_default();
            let attempt = match parse(payload) {
                Err(reason) => {
                    metrics.publish_failed("kafka", unparsable(payload));
                    self.dead_letter(message, &reason).await
                }
                Ok(mut request) => {
                    if request.idempotency_key.is_none() {
                        request.idempotency_key = Some(idempotency_key(message));
                        request.idempotency_stamp =
                            message.timestamp().to_millis().map(|ms| ms as u64);
                    }
                    let written = message.timestamp().to_millis().map(|ms| ms.max(0) as u64);
                    let accepted = accepted_at(written);
                    let store = &self.shared.store;
                    let result = publish_accepted(store, Some(metrics), &request, accepted).await;
                    if let Err(e) = &result {
                        metrics.publish_failed("kafka", e.code());
                    }
                    publishes += 1;
                    match result {
                        Ok(_) => Ok(Outcome::Stored),
                        Err(e) => match give_up(&e, publishes) {
                            None => Err(format!("not stored yet: {}", e.detail())),
                            Some(reason) => self.dead_letter(message, &reason).await,
                        },
                    }
                }
            };
            match attempt {
                Ok(outcome) => return Some(outcome),
                // Once per record at warn (an outage fails every retry alike), then at debug.
                Err(why) if delay == RETRY_FIRST => tracing::warn!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    "kafka: {why}; the record is retried with backoff (the partition waits \
                     behind it, nothing is lost; further tries logged at debug): check Redis \
                     and the Kafka brokers"
                ),
                Err(why) => tracing::debug!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    "kafka: {why}; retried"
                ),
            }
            if self.stopped() || pause(&self.shared.shutdown, delay).await || self.stopped() {
                return None;
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Produce the record, key, value and headers as they came, plus `herald-error`, to the
    /// dead-letter topic; `Err` if the brokers did not take it. A record too large to produce
    /// (a producer or broker size limit) goes with the start of its value,
    /// [`DEAD_COPY_BYTES`], and `herald-original-size`, so it never blocks its partition.
    async fn dead_letter(&self, message: &OwnedMessage, reason: &str) -> Result<Outcome, String> {
        let topic =
            KafkaConfig::dead_letters_of(self.shared.dead_letter_topic.as_deref(), message.topic());
        tracing::info!(
            source = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "kafka: record moved to {topic}"
        );
        let value = message.payload().unwrap_or_default();
        let sent = match self.produce(&topic, message, reason, None).await {
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                let cut = &value[..value.len().min(DEAD_COPY_BYTES)];
                self.produce(&topic, message, reason, Some(cut)).await
            }
            sent => sent,
        };
        sent.map(|()| Outcome::Dead)
            .map_err(|e| format!("cannot dead-letter to {topic}: {e}"))
    }

    /// Produce `message` to `topic` with `herald-error`: its value whole, or `cut` (with
    /// `herald-original-size`).
    async fn produce(
        &self,
        topic: &str,
        message: &OwnedMessage,
        reason: &str,
        cut: Option<&[u8]>,
    ) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(header);
            }
        }
        headers = headers.insert(Header {
            key: ERROR_HEADER,
            value: Some(reason),
        });
        let value = message.payload();
        let size;
        if cut.is_some() {
            size = value.unwrap_or_default().len().to_string();
            headers = headers.insert(Header {
                key: SIZE_HEADER,
                value: Some(&size),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = cut.or(value) {
            record = record.payload(value);
        }
        self.shared
            .producer
            .send(record, Timeout::After(RETRY_MAX))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

/// A record's position as its idempotency key: `<topic>/<partition>/<offset>` (its timestamp,
/// when it has one, goes with it as the key's stamp, so that a broker that lost its log and
/// hands out the same offsets again does not make new records look like redelivered ones:
/// see [`crate::store::Idempotency`]). A topic name so long that the key would pass
/// [`MAX_KEY_CHARS`] is written as `:` and its SHA-256 instead (no topic name holds a `:`).
fn idempotency_key(message: &OwnedMessage) -> String {
    let key = |topic: &str| format!("{topic}/{}/{}", message.partition(), message.offset());
    let whole = key(message.topic());
    if whole.len() <= MAX_KEY_CHARS {
        whole
    } else {
        key(&format!(":{}", sha256_hex(message.topic())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    /// The key is the record's position; a topic too long for it is named by its SHA-256.
    #[test]
    fn idempotency_key_is_the_position() {
        let record = |topic: &str| {
            let at = Timestamp::CreateTime(1_700_000_000_000);
            idempotency_key(&OwnedMessage::new(
                None,
                None,
                topic.into(),
                at,
                2,
                41,
                None,
            ))
        };
        assert_eq!(record("orders"), "orders/2/41");
        // A key of 256 characters keeps its topic; one longer names it by its SHA-256.
        let fits = "t".repeat(MAX_KEY_CHARS - "/2/41".len());
        assert_eq!(record(&fits), format!("{fits}/2/41"));
        let over = format!("{fits}t");
        assert_eq!(record(&over), format!(":{}/2/41", sha256_hex(&over)));
    }
}
