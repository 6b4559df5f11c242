//! Prometheus metrics, exposed at `GET /metrics`. One cheap-to-clone handle; every field is
//! an atomic, so recording never takes a lock.

use std::collections::HashSet;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

pub struct Inner {
    /// Open SSE streams on this node.
    pub streams_open: Gauge,
    /// Streams closed because the client stopped reading.
    pub streams_overflowed: Counter,
    /// Change events written to streams.
    pub events_delivered: Counter,
    /// Notifications stored by publishes (one per recipient).
    pub publishes: Counter,
    /// Times the broker connection was lost and re-established.
    pub broker_reconnects: Counter,
    /// Seconds from commit to the write of the event to a stream.
    pub delivery_latency: Histogram,
    /// Kafka ingest: records received, stored and dead-lettered.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub kafka_consumed: Counter,
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub kafka_stored: Counter,
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub kafka_dead_lettered: Counter,
    /// Kafka ingest: records behind the partition's end, per assigned partition.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub kafka_lag: Family<PartitionLabels, Gauge>,
    /// Web Push: messages a push service accepted; failed ones by reason; subscriptions
    /// removed (404/410); escalations cancelled when due (seen or read in time;
    /// archived, snoozed or deleted ones are dropped at once, uncounted).
    pub pushes_sent: Counter,
    pub pushes_failed: Family<ReasonLabels, Counter>,
    pub push_subscriptions_removed: Counter,
    pub push_escalations_cancelled: Counter,
    /// HTTP requests answered, by route pattern (`routes::paths`) and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Publishes refused or failed, by source and reason (HTTP, the Redis ingest stream and
    /// Kafka alike; ingest failures are counted here, not in a metric of their own).
    pub publish_errors: Family<PublishErrorLabels, Counter>,
    /// Redis ingest: entries of the stream no node of the group has read yet, and entries
    /// read but not yet acknowledged (sampled by the ingest loop).
    pub redis_ingest_backlog: Gauge,
    pub redis_ingest_pending: Gauge,
    /// Seconds each Redis command (or pipeline) took, by link (`store`, `broker`, `ingest`).
    pub redis_command_duration: Family<LinkLabels, Histogram, fn() -> Histogram>,
    /// Open SSE streams on this node by transport (`socket`, `http1`, `http2`).
    pub streams_open_by_transport: Family<TransportLabels, Gauge>,
    registry: Registry,
}

/// An HTTP request's route pattern (never a raw path) and status, as metric labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub status: u16,
}

/// Where a publish came from (`http`, `redis`, `kafka`) and why it failed: the error code
/// its answer carries (`invalid_request`, `unauthorized`, `forbidden`, `too_large`,
/// `request_timeout`, `unavailable`, `internal`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishErrorLabels {
    pub source: &'static str,
    pub reason: &'static str,
}

/// A Redis link's name, as a metric label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    pub link: &'static str,
}

/// A stream's transport, as a metric label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

/// Buckets of Redis command durations, in seconds: a healthy local Redis answers in well
/// under a millisecond; the top buckets sit around the command deadline (0.8 s), which a
/// command that times out reaches (blocking reads are not timed).
fn command_histogram() -> Histogram {
    Histogram::new([
        0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

/// Why something failed, as a metric label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A Kafka partition, as metric labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let streams_open = Gauge::default();
        let streams_overflowed = Counter::default();
        let events_delivered = Counter::default();
        let publishes = Counter::default();
        let broker_reconnects = Counter::default();
        // From the commit's millisecond clock: nothing finer than 1 ms to tell apart.
        let delivery_latency = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        let kafka_consumed = Counter::default();
        let kafka_stored = Counter::default();
        let kafka_dead_lettered = Counter::default();
        let kafka_lag = Family::<PartitionLabels, Gauge>::default();
        let pushes_sent = Counter::default();
        let pushes_failed = Family::<ReasonLabels, Counter>::default();
        let push_subscriptions_removed = Counter::default();
        let push_escalations_cancelled = Counter::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let publish_errors = Family::<PublishErrorLabels, Counter>::default();
        let redis_ingest_backlog = Gauge::default();
        let redis_ingest_pending = Gauge::default();
        let redis_command_duration =
            Family::<LinkLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                command_histogram as fn() -> Histogram,
            );
        let streams_open_by_transport = Family::<TransportLabels, Gauge>::default();
        let mut registry = Registry::with_prefix("herald");
        registry.register(
            "pushes_sent",
            "Web Push messages a push service accepted",
            pushes_sent.clone(),
        );
        registry.register(
            "pushes_failed",
            "Web Push messages given up, by reason",
            pushes_failed.clone(),
        );
        registry.register(
            "push_subscriptions_removed",
            "Web Push subscriptions removed because the push service said they are gone",
            push_subscriptions_removed.clone(),
        );
        registry.register(
            "push_escalations_cancelled",
            "Web Push escalations dropped when due because the notification was seen or read first",
            push_escalations_cancelled.clone(),
        );
        registry.register(
            "streams_open",
            "Open SSE streams on this node",
            streams_open.clone(),
        );
        registry.register(
            "streams_overflowed",
            "Streams closed because their backlog was full",
            streams_overflowed.clone(),
        );
        registry.register(
            "events_delivered",
            "Change events written to streams",
            events_delivered.clone(),
        );
        registry.register(
            "publishes",
            "Notifications stored by publishes",
            publishes.clone(),
        );
        registry.register(
            "broker_reconnects",
            "Broker connection losses recovered",
            broker_reconnects.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Seconds from commit to the write of the event to a stream",
            delivery_latency.clone(),
        );
        registry.register(
            "kafka_records_consumed",
            "Kafka records received by this node",
            kafka_consumed.clone(),
        );
        registry.register(
            "kafka_records_stored",
            "Kafka records whose notifications are stored",
            kafka_stored.clone(),
        );
        registry.register(
            "kafka_records_dead_lettered",
            "Kafka records moved to the dead-letter topic",
            kafka_dead_lettered.clone(),
        );
        registry.register(
            "kafka_consumer_lag",
            "Kafka records behind the end of each assigned partition (from the last commit)",
            kafka_lag.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern and status",
            http_requests.clone(),
        );
        registry.register(
            "publish_errors",
            "Publishes refused or failed, by source (http, redis, kafka) and reason",
            publish_errors.clone(),
        );
        registry.register(
            "redis_ingest_backlog",
            "Redis ingest stream entries not yet read by the consumer group",
            redis_ingest_backlog.clone(),
        );
        registry.register(
            "redis_ingest_pending",
            "Redis ingest stream entries read but not yet acknowledged",
            redis_ingest_pending.clone(),
        );
        registry.register(
            "redis_command_duration_seconds",
            "Seconds per Redis command or pipeline, by link",
            redis_command_duration.clone(),
        );
        registry.register(
            "streams_open_by_transport",
            "Open SSE streams on this node, by transport (socket, http1, http2)",
            streams_open_by_transport.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                streams_open,
                streams_overflowed,
                events_delivered,
                publishes,
                broker_reconnects,
                pushes_sent,
                pushes_failed,
                push_subscriptions_removed,
                push_escalations_cancelled,
                delivery_latency,
                kafka_consumed,
                kafka_stored,
                kafka_dead_lettered,
                kafka_lag,
                http_requests,
                publish_errors,
                redis_ingest_backlog,
                redis_ingest_pending,
                redis_command_duration,
                streams_open_by_transport,
                registry,
            }),
        }
    }
}

impl Metrics {
    /// The exposition: OpenMetrics text, or (`openmetrics` false) the classic Prometheus text
    /// format 0.0.4.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.inner.registry);
        if openmetrics {
            out
        } else {
            classic(&out)
        }
    }

    /// The open-streams gauge of one transport (`socket`, `http1`, `http2`).
    pub fn streams_by_transport(&self, transport: &'static str) -> Gauge {
        self.streams_open_by_transport
            .get_or_create(&TransportLabels { transport })
            .clone()
    }

    /// Count a publish that failed: `source` is `http`, `redis` or `kafka`, `reason` the
    /// error's code.
    pub fn publish_failed(&self, source: &'static str, reason: &'static str) {
        self.publish_errors
            .get_or_create(&PublishErrorLabels { source, reason })
            .inc();
    }
}

/// OpenMetrics text as Prometheus text format 0.0.4: a counter's `# HELP` and `# TYPE` name
/// its samples' `_total` name, and there is no `# EOF`. Everything else is the same.
fn classic(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 8 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        match comment {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let name = rest.split(' ').next().unwrap_or_default();
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push_str(&rest[name.len()..]);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classic format names counters by their `_total` samples and has no `# EOF`.
    #[test]
    fn classic_text_format() {
        let metrics = Metrics::default();
        let open = metrics.render(true);
        assert!(open.contains("# TYPE herald_publishes counter\n"), "{open}");
        assert!(open.ends_with("# EOF\n"), "{open}");
        let classic = metrics.render(false);
        assert!(classic.contains("# HELP herald_publishes_total Notifications stored"));
        assert!(
            classic.contains("# TYPE herald_publishes_total counter\nherald_publishes_total 0\n")
        );
        assert!(classic.contains("# TYPE herald_streams_open gauge\nherald_streams_open 0\n"));
        assert!(classic.contains("# TYPE herald_delivery_latency_seconds histogram\n"));
        assert!(!classic.contains("# EOF"), "{classic}");
        assert_eq!(classic.lines().count() + 1, open.lines().count());
    }
}
