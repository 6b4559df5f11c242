//! librdkafka's callbacks, run on the consumer thread while it polls: statistics (every
//! second) set readiness (a broker is up) and per-partition lag; an all-brokers-down error
//! clears readiness at once; revocations and assignments are noted for the poll loop (it stops
//! the revoked partitions' tasks and resumes assigned partitions this node may have paused
//! before they were taken away).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;

use crate::metrics::{Metrics, PartitionLabels};

/// Partitions as `(topic, partition)`.
#[derive(Default)]
pub struct Rebalanced {
    pub revoked: Vec<(String, i32)>,
    pub assigned: Vec<(String, i32)>,
}

pub struct Context {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    /// Partitions revoked and assigned since the poll loop last looked.
    rebalanced: Mutex<Rebalanced>,
    /// Partitions with a lag gauge, to drop the gauges of those no longer assigned.
    reported: Mutex<HashSet<PartitionLabels>>,
}

impl Context {
    pub fn new(metrics: Metrics, ready: Arc<AtomicBool>) -> Self {
        Context {
            metrics,
            ready,
            rebalanced: Mutex::default(),
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// The partitions revoked and assigned since the last call.
    pub fn take_rebalanced(&self) -> Rebalanced {
        std::mem::take(&mut *self.rebalanced.lock().expect("rebalanced lock"))
    }
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        if up && !self.ready.swap(true, Ordering::Relaxed) {
            tracing::info!("kafka: the brokers are back");
        }
        if !up {
            self.ready.store(false, Ordering::Relaxed);
        }
        let mut now = HashSet::new();
        for (name, topic) in &statistics.topics {
            for (&partition, p) in &topic.partitions {
                // -1 is librdkafka's internal "unassigned" partition; `desired`: assigned here.
                if partition < 0 || !p.desired || p.hi_offset < 0 {
                    continue;
                }
                // Behind the last commit, or the whole partition while nothing is committed.
                let lag = if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else {
                    p.hi_offset - p.lo_offset.max(0)
                };
                let labels = PartitionLabels {
                    topic: name.clone(),
                    partition,
                };
                self.metrics.kafka_lag.get_or_create(&labels).set(lag);
                now.insert(labels);
            }
        }
        let mut reported = self.reported.lock().expect("reported lock");
        for gone in reported.difference(&now) {
            self.metrics.kafka_lag.remove(gone);
        }
        *reported = now;
    }

    /// Brokers going away is said once, when readiness drops; the rest (librdkafka reports
    /// every failed reconnect) at debug.
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown)
            && self.ready.swap(false, Ordering::Relaxed)
        {
            tracing::warn!(
                reason,
                "kafka: the brokers cannot be reached; consuming pauses and resumes by itself \
                 when they are back: check that they run and --kafka-brokers"
            );
        } else {
            tracing::debug!(error = %error, reason, "kafka");
        }
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            tracing::debug!(facility, "librdkafka: {message}");
        } else {
            tracing::trace!(facility, "librdkafka: {message}");
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, rebalance: &Rebalance<'_>) {
        let (list, into) = match rebalance {
            Rebalance::Assign(list) => (list, "assigned"),
            Rebalance::Revoke(list) => (list, "revoked"),
            Rebalance::Error(e) => {
                tracing::warn!(
                    error = %e,
                    "kafka: rebalance failed; the group retries by itself: if it repeats, check \
                     the brokers and that --kafka-group is not shared with another application"
                );
                return;
            }
        };
        tracing::info!(partitions = list.count(), "kafka: partitions {into}");
        let mut rebalanced = self.rebalanced.lock().expect("rebalanced lock");
        let noted = match rebalance {
            Rebalance::Assign(_) => &mut rebalanced.assigned,
            _ => &mut rebalanced.revoked,
        };
        for elem in list.elements() {
            noted.push((elem.topic().to_owned(), elem.partition()));
        }
    }
}
