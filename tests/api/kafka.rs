//! Kafka ingest against a real Kafka-compatible broker (tansu): a record reaches the user's
//! stream and tray; order per partition; poison records dead-lettered while the rest flow
//! (a missing dead-letter topic is created at start); a redelivered record stores nothing new (also on a topic with the longest name Kafka
//! allows); two nodes sharing a group, one killed; a broker restart; readiness, metrics,
//! SIGTERM's commit and start-up errors (also a dead-letter topic that is consumed, or whose
//! default name would be too long). A group's first join is slow on this broker (tens of
//! seconds), hence [`KAFKA_WAIT`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use serde_json::json;

use crate::common::*;

/// Long enough for the broker's first group join and a rebalance after a member vanished.
const KAFKA_WAIT: Duration = Duration::from_secs(120);

/// Wait until `done` holds, checking every 200 ms, for at most [`KAFKA_WAIT`].
async fn eventually(failure: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + KAFKA_WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "{failure}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn body(user: &str, title: &str) -> String {
    json!({"users": [user], "notification": {"title": title}}).to_string()
}

/// A node consuming `topic` in `group`.
fn node(redis: Option<&str>, kafka: &Kafka, topic: &str, group: &str, extra: &[&str]) -> Herald {
    let brokers = kafka.brokers();
    let mut args = vec![
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        topic,
        "--kafka-group",
        group,
    ];
    args.extend_from_slice(extra);
    Herald::start(redis, &args)
}

/// The users of [`produce_rounds`], one per partition.
const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];

/// For each round, one record `r<round>` per user of [`USERS`] to `topic`, each user on its
/// own partition; `pause_ms` between rounds.
async fn produce_rounds(
    producer: &FutureProducer,
    topic: &str,
    rounds: std::ops::Range<usize>,
    pause_ms: u64,
) {
    for round in rounds {
        for (p, user) in USERS.iter().enumerate() {
            let value = body(user, &format!("r{round}"));
            produce_with(producer, topic, p as i32, user, &value, &[]).await;
        }
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    }
}

/// Every title in `user`'s tray (up to 200), newest first.
async fn tray_titles(h: &Herald, user: &str) -> Vec<String> {
    titles(&h.list(&user_token(user), "?limit=200").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_reaches_the_stream_and_the_tray_and_poison_is_dead_lettered() {
    let kafka = Kafka::start();
    kafka.create_topic("alerts", 1);
    kafka.create_topic("alerts.dead", 1);
    // produced before any node runs: a new group starts at the earliest offset
    kafka
        .produce("alerts", 0, "alice", &body("alice", "early"))
        .await;
    let h = node(None, &kafka, "alerts", "g1", &[]);
    let mut sse = h.events(&user_token("alice"), "").await;
    eventually("the early record was not stored", async || {
        h.tray_len("alice").await == 1
    })
    .await;
    let producer = kafka.producer();
    // not JSON; JSON but not a publish body; then a good one behind them
    produce_with(&producer, "alerts", 0, "k1", "{oops", &[("trace", "t1")]).await;
    produce_with(&producer, "alerts", 0, "k2", r#"{"users":["alice"]}"#, &[]).await;
    produce_with(&producer, "alerts", 0, "alice", &body("alice", "live"), &[]).await;
    let ev = sse.expect("notification").await;
    let ev = if ev.json()["title"] == "early" {
        sse.expect("notification").await
    } else {
        ev
    };
    assert_eq!(ev.json()["title"], "live");
    assert_eq!(tray_titles(&h, "alice").await, ["live", "early"]);
    let dead = kafka.read_all("alerts.dead", 2, Duration::from_secs(60));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].key.as_deref(), Some("k1"));
    assert_eq!(dead[0].value, "{oops");
    let headers: HashMap<_, _> = dead[0].headers.iter().cloned().collect();
    assert_eq!(headers.get("trace").map(String::as_str), Some("t1"));
    assert!(headers["herald-error"].contains("JSON"), "{headers:?}");
    assert_eq!(dead[1].key.as_deref(), Some("k2"));
    let reason = &dead[1]
        .headers
        .iter()
        .find(|(k, _)| k == "herald-error")
        .unwrap()
        .1;
    assert!(reason.contains("notification"), "{reason}");
    eventually("the counters did not move", async || {
        h.metric("herald_kafka_records_dead_lettered_total").await == 2.0
            && h.metric("herald_kafka_records_stored_total").await == 2.0
    })
    .await;
    assert_eq!(h.metric("herald_kafka_records_consumed_total").await, 4.0);
    let text = h.text("/metrics").await;
    assert!(
        text.contains(r#"herald_kafka_consumer_lag{topic="alerts",partition="0"}"#),
        "{text}"
    );
    let (status, _) = h.get("/readyz", "").await;
    assert_eq!(status, 200);
    // A record's position `<topic>/<partition>/<offset>` is its idempotency key: a publish
    // naming it stores nothing new.
    let (status, body) = h
        .publish(
            json!({"users": ["alice"], "notification": {"title": "again"},
                        "idempotency_key": "alerts/0/3"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["ids"]["alice"], ev.json()["id"], "{body}");
    assert_eq!(tray_titles(&h, "alice").await, ["live", "early"]);
}

/// A refused record too large to produce again (here the producer's own limit, lowered
/// through `--kafka-option`) is dead-lettered with the start of its value and its size, and
/// the record behind it is stored: it never blocks its partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_to_dead_letter_whole_goes_cut() {
    let kafka = Kafka::start();
    kafka.create_topic("big", 1);
    kafka.create_topic("big.dead", 1);
    let h = node(
        None,
        &kafka,
        "big",
        "g1",
        &["--kafka-option", "message.max.bytes=100000"],
    );
    let huge =
        json!({"users": ["alice"], "notification": {"title": "t", "body": "x".repeat(200_000)}})
            .to_string();
    let producer = kafka.producer();
    produce_with(&producer, "big", 0, "k", &huge, &[]).await;
    produce_with(&producer, "big", 0, "alice", &body("alice", "behind"), &[]).await;
    eventually("the record behind was not stored", async || {
        h.tray_len("alice").await == 1
    })
    .await;
    let dead = kafka.read_all("big.dead", 1, Duration::from_secs(60));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].value, huge[..4096]);
    let headers: HashMap<_, _> = dead[0].headers.iter().cloned().collect();
    assert_eq!(headers["herald-original-size"], huge.len().to_string());
    assert!(headers["herald-error"].contains("16"), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_keep_their_order_per_partition_and_redelivery_stores_nothing_new() {
    let redis = Redis::start();
    let kafka = Kafka::start();
    // The longest name Kafka allows: the records' positions are still their keys (the
    // topic written as its SHA-256, or the keys would pass 256 characters and be refused);
    // `<topic>.dead` would be too long a name, so the dead-letter topic is named.
    let feed = format!("feed{}", "x".repeat(245));
    let feed = feed.as_str();
    let dead = ["--kafka-dead-letter-topic", "feed.dead"];
    kafka.create_topic(feed, 3);
    let producer = kafka.producer();
    for i in 0..20 {
        for p in 0..3 {
            let user = format!("u{p}");
            produce_with(
                &producer,
                feed,
                p,
                &user,
                &body(&user, &format!("{p}-{i}")),
                &[],
            )
            .await;
        }
    }
    let mut h = node(Some(&redis.url()), &kafka, feed, "first", &dead);
    for p in 0..3 {
        let user = format!("u{p}");
        eventually("not every record was stored", async || {
            h.tray_len(&user).await == 20
        })
        .await;
        // newest first: the reverse of the produce order
        let want: Vec<String> = (0..20).rev().map(|i| format!("{p}-{i}")).collect();
        assert_eq!(tray_titles(&h, &user).await, want);
    }
    assert_eq!(h.terminate().map(|s| s.success()), Some(true));
    // Another group reads every record again from the start (offsets rolled back to 0):
    // the records' positions are their idempotency keys, so nothing new is stored.
    let h = node(Some(&redis.url()), &kafka, feed, "second", &dead);
    produce_with(&producer, feed, 0, "u0", &body("u0", "marker"), &[]).await;
    eventually("the marker was not stored", async || {
        tray_titles(&h, "u0").await.first().map(String::as_str) == Some("marker")
    })
    .await;
    for p in 0..3 {
        assert_eq!(h.tray_len(&format!("u{p}")).await, 20 + usize::from(p == 0));
    }
    assert!(h.metric("herald_kafka_records_consumed_total").await >= 61.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_what_is_stored() {
    let kafka = Kafka::start();
    kafka.create_topic("commits", 1);
    let redis = Redis::start();
    let producer = kafka.producer();
    for i in 0..5 {
        produce_with(
            &producer,
            "commits",
            0,
            "bob",
            &body("bob", &format!("n{i}")),
            &[],
        )
        .await;
    }
    // Only the commit at SIGTERM commits (no periodic one); the wind-down's limit (the 1 s
    // drain, leaving the group in its second half) has long passed since the start when the signal comes (it used to
    // count from the start, and the process then exited without committing).
    let extra = [
        "--drain-timeout",
        "1s",
        "--kafka-option",
        "auto.commit.interval.ms=600000",
    ];
    let started = Instant::now();
    let mut a = node(Some(&redis.url()), &kafka, "commits", "g", &extra);
    eventually("the records were not stored", async || {
        a.tray_len("bob").await == 5
    })
    .await;
    if let Some(left) = Duration::from_secs(6).checked_sub(started.elapsed()) {
        tokio::time::sleep(left).await;
    }
    assert_eq!(a.terminate().map(|s| s.success()), Some(true));
    // The next member of the group starts after the committed offsets: only the new record.
    let b = node(Some(&redis.url()), &kafka, "commits", "g", &[]);
    produce_with(&producer, "commits", 0, "bob", &body("bob", "n5"), &[]).await;
    eventually("the new record was not stored", async || {
        b.tray_len("bob").await == 6
    })
    .await;
    assert_eq!(b.metric("herald_kafka_records_consumed_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_group_and_a_killed_one_loses_nothing() {
    let redis = Redis::start();
    let kafka = Kafka::start();
    kafka.create_topic("shared", 4);
    let mut a = node(Some(&redis.url()), &kafka, "shared", "pair", &[]);
    let b = node(Some(&redis.url()), &kafka, "shared", "pair", &[]);
    let producer = kafka.producer();
    let produce_rounds = async |rounds| produce_rounds(&producer, "shared", rounds, 0).await;
    produce_rounds(0..10).await;
    // both nodes have taken records before one of them dies mid-stream
    eventually("the nodes did not share the partitions", async || {
        a.metric("herald_kafka_records_consumed_total").await > 0.0
            && b.metric("herald_kafka_records_consumed_total").await > 0.0
    })
    .await;
    a.kill();
    produce_rounds(10..20).await;
    for user in USERS {
        eventually("a record was lost", async || b.tray_len(user).await >= 20).await;
        let mut got = tray_titles(&b, user).await;
        got.sort();
        let mut want: Vec<String> = (0..20).map(|r| format!("r{r}")).collect();
        want.sort();
        assert_eq!(got, want, "every record of {user} stored exactly once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_hang_and_restart_are_survived_and_readiness_follows_the_brokers() {
    let mut kafka = Kafka::start();
    kafka.create_topic("news", 1);
    let mut h = node(None, &kafka, "news", "g", &["--drain-timeout", "1s"]);
    stored_in_turn(&kafka, &h, "before", 1).await;
    // A hung broker (its sockets open, nothing answered) is not ready either, once a request
    // to it has timed out (10 s, not librdkafka's default 60 s), and ready again when it
    // answers; what is produced then is stored.
    kafka.pause();
    let hung = Instant::now();
    readiness_becomes(&h, 503, "the broker hang").await;
    assert!(
        hung.elapsed() < Duration::from_secs(40),
        "/readyz saw the hang after {:?}",
        hung.elapsed()
    );
    kafka.resume();
    readiness_becomes(&h, 200, "the broker answer again").await;
    stored_in_turn(&kafka, &h, "resumed", 2).await;
    kafka.stop();
    readiness_becomes(&h, 503, "the brokers go").await;
    assert_eq!(h.get("/healthz", "").await.0, 200);
    kafka.restart();
    // memory storage: the broker comes back empty, and its offsets start again at 0
    kafka.create_topic("news", 1);
    stored_in_turn(&kafka, &h, "after", 3).await;
    readiness_becomes(&h, 200, "the brokers back").await;
    assert_eq!(
        tray_titles(&h, "carol").await,
        ["after", "resumed", "before"]
    );
    // SIGTERM while the brokers are away still ends the process within its drain: trying to
    // leave the group gets half of it (up to 3 s, which used to come on top).
    kafka.stop();
    let stopping = Instant::now();
    assert_eq!(h.terminate().map(|s| s.success()), Some(true));
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "a 1 s drain took {:?}",
        stopping.elapsed()
    );
}

/// Produce a record `title` for carol on `news` (partition 0) and wait until her tray holds
/// `count`.
async fn stored_in_turn(kafka: &Kafka, h: &Herald, title: &str, count: usize) {
    kafka
        .produce("news", 0, "carol", &body("carol", title))
        .await;
    eventually(&format!("{title:?} was not stored"), async || {
        h.tray_len("carol").await == count
    })
    .await;
}

/// Wait until `/readyz` answers `status`, having seen `what`.
async fn readiness_becomes(h: &Herald, status: u16, what: &str) {
    eventually(&format!("/readyz did not see {what}"), async || {
        h.get("/readyz", "").await.0 == status
    })
    .await;
}

/// A record the store refuses for its own data (a Redis key of the wrong type) is tried a few
/// times, then dead-lettered with the reason; the record behind it on the partition is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_for_its_data_is_dead_lettered_after_a_few_tries() {
    let redis = Redis::start();
    let _: () = redis::cmd("SET")
        .arg("herald:{u:broken}:order")
        .arg("not a sorted set")
        .query(&mut redis.conn())
        .unwrap();
    let kafka = Kafka::start();
    kafka.create_topic("refused", 1);
    kafka.create_topic("refused.dead", 1);
    let h = node(Some(&redis.url()), &kafka, "refused", "g", &[]);
    let producer = kafka.producer();
    produce_with(&producer, "refused", 0, "b", &body("broken", "x"), &[]).await;
    produce_with(&producer, "refused", 0, "e", &body("erin", "behind"), &[]).await;
    eventually("the record behind was not stored", async || {
        h.tray_len("erin").await == 1
    })
    .await;
    let dead = kafka.read_all("refused.dead", 1, Duration::from_secs(60));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let headers: HashMap<_, _> = dead[0].headers.iter().cloned().collect();
    assert!(headers["herald-error"].contains("WRONGTYPE"), "{headers:?}");
    assert!(headers["herald-error"].contains("attempts"), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_pauses_consumption_and_dead_letters_nothing() {
    let mut redis = Redis::start();
    let kafka = Kafka::start();
    kafka.create_topic("outage", 1);
    let h = node(Some(&redis.url()), &kafka, "outage", "g", &[]);
    let producer = kafka.producer();
    produce_with(&producer, "outage", 0, "erin", &body("erin", "first"), &[]).await;
    eventually("the first record was not stored", async || {
        h.tray_len("erin").await == 1
    })
    .await;
    redis.stop_saving();
    for i in 0..3 {
        produce_with(
            &producer,
            "outage",
            0,
            "erin",
            &body("erin", &format!("during {i}")),
            &[],
        )
        .await;
    }
    // records arrive while the store is away: they wait, in order, and none is dead
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.start_again();
    eventually("the records did not survive the outage", async || {
        h.get("/notifications?limit=10", &user_token("erin"))
            .await
            .0
            == 200
            && h.tray_len("erin").await == 4
    })
    .await;
    assert_eq!(
        tray_titles(&h, "erin").await,
        ["during 2", "during 1", "during 0", "first"]
    );
    assert_eq!(
        h.metric("herald_kafka_records_dead_lettered_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_publish_produces_a_record() {
    let kafka = Kafka::start();
    kafka.create_topic("cli", 1);
    let h = node(None, &kafka, "cli", "g", &[]);
    let out = std::process::Command::new(bin())
        .args([
            "publish",
            "--kafka-brokers",
            &kafka.brokers(),
            "--kafka-topic",
            "cli",
        ])
        .args(["--user", "dave", "--title", "from the CLI"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["topic"], "cli");
    eventually("the produced record was not stored", async || {
        h.tray_len("dave").await == 1
    })
    .await;
}

/// The dead-letter topics that don't exist are created at start (on brokers that don't create
/// topics when written to, a record that can't be dead-lettered would hold up its partition):
/// `<topic>.dead` by default, or `--kafka-dead-letter-topic`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_dead_letter_topics_are_created_at_start() {
    let kafka = Kafka::start();
    kafka.create_topic("orders", 1);
    kafka.create_topic("invoices", 1);
    let _default = node(None, &kafka, "orders", "g-orders", &[]);
    let flag = ["--kafka-dead-letter-topic", "rejected"];
    let _named = node(None, &kafka, "invoices", "g-invoices", &flag);
    let topics = kafka.topics();
    for dead in ["orders.dead", "rejected"] {
        assert!(topics.iter().any(|t| t == dead), "{dead} in {topics:?}");
    }
    assert!(!topics.iter().any(|t| t == "invoices.dead"), "{topics:?}");
}

/// `herald publish` to Kafka checks the publish as the nodes will (one line, exit 2, nothing
/// produced: a bad record would only reach the dead-letter topic), and produces to one topic.
/// Checked before any broker is contacted: none runs at this address.
#[test]
fn herald_publish_to_kafka_refuses_what_a_node_would() {
    let kafka = ["--kafka-brokers", "127.0.0.1:1", "--kafka-topic", "t"];
    let long = "t".repeat(257);
    let cases: &[(&[&str], &str)] = &[
        (&["--title", "no one"], "user or group"),
        (&["--user", " bad", "--title", "t"], "user"),
        (&["--user", "u", "--title", &long], "title"),
        (
            &["--user", "u", "--title", "t", "--link", "javascript:x"],
            "link",
        ),
    ];
    for (flags, named) in cases {
        let out = exits_2_naming(&[&["publish"], &kafka[..], flags].concat(), named);
        assert!(out.stdout.is_empty(), "{flags:?}: {out:?}");
    }
    let two_topics = [
        "--kafka-topic",
        "a",
        "--kafka-topic",
        "b",
        "--user",
        "u",
        "--title",
        "t",
    ];
    let args = [
        &["publish", "--kafka-brokers", "127.0.0.1:1"][..],
        &two_topics,
    ]
    .concat();
    exits_2_naming(&args, "--kafka-topic");
}

/// Start-up: unreachable brokers and bad values are one line and exit 2.
#[test]
fn bad_kafka_settings_fail_at_start() {
    let port = free_port().to_string();
    let long_topic = "t".repeat(245);
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--kafka-brokers",
                &format!("127.0.0.1:{port}"),
                "--kafka-topic",
                "t",
            ],
            "--kafka-brokers",
        ),
        (&["--kafka-brokers", "127.0.0.1:1"], "--kafka-topic"),
        (&["--kafka-topic", "t"], "--kafka-brokers"),
        (
            &[
                "--kafka-brokers",
                "127.0.0.1:1",
                "--kafka-topic",
                "bad topic",
            ],
            "--kafka-topic",
        ),
        (
            &[
                "--kafka-brokers",
                "127.0.0.1:1",
                "--kafka-topic",
                "t",
                "--kafka-dead-letter-topic",
                "bad topic",
            ],
            "--kafka-dead-letter-topic",
        ),
        // dead letters read again would be dead-lettered again, without end
        (
            &[
                "--kafka-brokers",
                "127.0.0.1:1",
                "--kafka-topic",
                "t,u",
                "--kafka-dead-letter-topic",
                "u",
            ],
            "--kafka-dead-letter-topic",
        ),
        // the default `<topic>.dead` is consumed too
        (
            &[
                "--kafka-brokers",
                "127.0.0.1:1",
                "--kafka-topic",
                "a,a.dead",
            ],
            "--kafka-dead-letter-topic",
        ),
        // `<topic>.dead` would not be a topic name
        (
            &[
                "--kafka-brokers",
                "127.0.0.1:1",
                "--kafka-topic",
                &long_topic,
            ],
            "--kafka-dead-letter-topic",
        ),
        (
            &[
                "--kafka-brokers",
                "127.0.0.1:1",
                "--kafka-topic",
                "t",
                "--kafka-option",
                "nokey",
            ],
            "--kafka-option",
        ),
        (
            &[
                "--kafka-brokers",
                "127.0.0.1:1",
                "--kafka-topic",
                "t",
                "--kafka-option",
                "no.such.setting=1",
            ],
            "--kafka-option",
        ),
    ];
    for (flags, named) in cases {
        let serve = ["--listen", "127.0.0.1:0", "--jwt-secret", SECRET];
        exits_2_naming(&[&serve[..], flags].concat(), named);
    }
}

/// Run herald with `args`: it must exit 2 with one line on stderr naming `named`.
fn exits_2_naming(args: &[&str], named: &str) -> std::process::Output {
    let out = std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(named), "{args:?}: {stderr}");
    out
}

/// A record's times are checked as of its timestamp: one that waited (no node ran) past its
/// `deliver_at` is delivered when it is read, not dead-lettered; one past its `expires_at`
/// stores nothing, and its offset is committed like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_waited_past_its_times_is_handled_as_of_its_timestamp() {
    let kafka = Kafka::start();
    kafka.create_topic("later", 1);
    kafka.create_topic("later.dead", 1);
    let entry = |title: &str, field: &str| {
        json!({"users": ["alice"], "notification": {"title": title, field: in_secs(1)}}).to_string()
    };
    kafka
        .produce("later", 0, "alice", &entry("late", "deliver_at"))
        .await;
    kafka
        .produce("later", 0, "alice", &entry("gone", "expires_at"))
        .await;
    kafka
        .produce("later", 0, "alice", &body("alice", "after them"))
        .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let h = node(None, &kafka, "later", "g-later", &[]);
    eventually("the records were not handled", async || {
        h.metric("herald_kafka_records_consumed_total").await == 3.0
            && h.tray_len("alice").await == 2
    })
    .await;
    assert_eq!(tray_titles(&h, "alice").await, ["after them", "late"]);
    assert_eq!(
        h.metric("herald_kafka_records_dead_lettered_total").await,
        0.0
    );
}

/// A second node joining the group while records flow, then the first leaving by SIGTERM (two
/// rebalances, each moving partitions between live members): every record is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_then_leaving_loses_and_repeats_nothing() {
    let redis = Redis::start();
    let kafka = Kafka::start();
    kafka.create_topic("moving", 4);
    let mut a = node(Some(&redis.url()), &kafka, "moving", "joiners", &[]);
    let producer = kafka.producer();
    let produce_rounds = async |rounds| produce_rounds(&producer, "moving", rounds, 20).await;
    produce_rounds(0..10).await;
    eventually("a did not consume", async || {
        a.metric("herald_kafka_records_consumed_total").await > 0.0
    })
    .await;
    // b joins while records keep coming, until it has consumed some of them
    let b = node(Some(&redis.url()), &kafka, "moving", "joiners", &[]);
    let mut rounds = 10;
    let deadline = Instant::now() + KAFKA_WAIT;
    while b.metric("herald_kafka_records_consumed_total").await == 0.0 {
        assert!(Instant::now() < deadline, "b never got a partition");
        produce_rounds(rounds..rounds + 1).await;
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // a leaves cleanly while records keep coming
    let (status, ()) = futures_util::future::join(
        async { a.terminate().expect("a exits after SIGTERM") },
        produce_rounds(rounds..rounds + 20),
    )
    .await;
    assert!(status.success(), "{status:?}");
    rounds += 20;
    for user in USERS {
        eventually("a record was lost", async || {
            tray_titles(&b, user).await.len() >= rounds
        })
        .await;
        let mut got = tray_titles(&b, user).await;
        got.sort();
        let mut want: Vec<String> = (0..rounds).map(|r| format!("r{r}")).collect();
        want.sort();
        assert_eq!(got, want, "every record of {user} stored exactly once");
    }
}
