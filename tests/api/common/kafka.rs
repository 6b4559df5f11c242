//! Throwaway Kafka: [`Kafka`], one Kafka-compatible broker (tansu, in-memory storage) on a
//! free loopback port, stopped on `Drop`; topics made with its CLI and listed, records produced
//! and read with rdkafka. `scripts/test` installs the broker binary (`target/test-tools/tansu`);
//! `HERALD_TEST_TANSU` names another one.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message};

use super::free_port;

/// A tansu broker on a free port.
pub struct Kafka {
    child: Child,
    pub port: u16,
}

/// A record read back from a topic.
#[derive(Debug)]
pub struct Record {
    pub key: Option<String>,
    pub value: String,
    pub headers: Vec<(String, String)>,
}

fn tansu() -> String {
    std::env::var("HERALD_TEST_TANSU").unwrap_or_else(|_| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-tools/tansu");
        assert!(
            std::path::Path::new(path).exists(),
            "no Kafka-compatible broker at {path}: ./scripts/test installs it"
        );
        path.to_owned()
    })
}

impl Kafka {
    pub fn start() -> Kafka {
        let port = free_port();
        let child = Self::spawn(port);
        let kafka = Kafka { child, port };
        kafka.wait_up();
        kafka
    }

    fn spawn(port: u16) -> Child {
        let url = format!("tcp://127.0.0.1:{port}");
        Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu")
    }

    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop and start again on the same port (memory storage: it comes back empty). The
    /// broker doesn't set SO_REUSEADDR, so its port may stay taken for a while: try again
    /// until it binds.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            self.child = Self::spawn(self.port);
            std::thread::sleep(Duration::from_millis(500));
            if self.child.try_wait().unwrap().is_none() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not come back on {}",
                self.port
            );
        }
        self.wait_up();
    }

    /// Hang the broker (SIGSTOP): its sockets stay open, nothing is answered.
    pub fn pause(&self) {
        super::send_signal(self.child.id(), "STOP");
    }

    /// Let a hung broker go on (SIGCONT).
    pub fn resume(&self) {
        super::send_signal(self.child.id(), "CONT");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .expect("tansu topic create");
        assert!(out.status.success(), "topic create: {out:?}");
    }

    /// The names of the broker's topics.
    pub fn topics(&self) -> Vec<String> {
        let producer = self.producer();
        let metadata = producer
            .client()
            .fetch_metadata(None, Duration::from_secs(10))
            .expect("metadata");
        metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect()
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("message.timeout.ms", "20000")
            .create()
            .expect("producer")
    }

    /// Produce one record to `partition`; returns its offset.
    pub async fn produce(&self, topic: &str, partition: i32, key: &str, value: &str) -> i64 {
        let producer = self.producer();
        produce_with(&producer, topic, partition, key, value, &[]).await
    }

    /// Every record of `topic` (all partitions) within `wait`, or fewer if they don't come.
    pub fn read_all(&self, topic: &str, want: usize, wait: Duration) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", format!("reader-{}", super::rand_u64()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < want && Instant::now() < deadline {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), text(h.value).unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Record {
                key: text(m.key()),
                value: text(m.payload()).unwrap_or_default(),
                headers,
            });
        }
        out
    }
}

/// Produce with `producer` (one per test keeps it quick), with extra headers.
pub async fn produce_with(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: &str,
    headers: &[(&str, &str)],
) -> i64 {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(value)
        .headers(h);
    let (_, offset) = producer
        .send(record, Duration::from_secs(20))
        .await
        .expect("produce");
    offset
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.stop();
    }
}
