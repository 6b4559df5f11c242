//! The Redis ingest stream: `XADD herald:ingest * publish '<body>'` is stored once across
//! nodes and acknowledged; bad entries go to `herald:ingest:dead` without blocking the rest;
//! entries a dead node left pending are taken over.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

fn xadd(conn: &mut redis::Connection, field: &str, value: &str) -> String {
    xadd_bytes(conn, field, value.as_bytes())
}

fn xadd_bytes(conn: &mut redis::Connection, field: &str, value: &[u8]) -> String {
    redis::cmd("XADD")
        .arg("herald:ingest")
        .arg("*")
        .arg(field)
        .arg(value)
        .query(conn)
        .unwrap()
}

fn publish_body(title: &str) -> String {
    json!({"users": ["alice"], "notification": {"title": title}}).to_string()
}

/// The ingest lane of entries whose first recipient is `user`, as a node computes it
/// (`Item::lane` in `src/ingest/redis.rs`, 16 lanes: keep the two in step): entries of one
/// lane are stored in order, lanes independently.
fn lane(user: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    user.to_owned().hash(&mut hasher);
    hasher.finish() % 16
}

/// Every entry of the dead-letter stream, oldest first.
fn dead_letters(conn: &mut redis::Connection) -> Vec<redis::streams::StreamId> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("herald:ingest:dead")
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap();
    reply.ids
}

fn pending(conn: &mut redis::Connection) -> u64 {
    let summary: (u64, Option<String>, Option<String>, redis::Value) = redis::cmd("XPENDING")
        .arg("herald:ingest")
        .arg("herald")
        .query(conn)
        .unwrap();
    summary.0
}

/// Consumers of the nodes' group (0 before the group exists).
fn consumers(conn: &mut redis::Connection) -> usize {
    redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("herald:ingest")
        .arg("herald")
        .query::<Vec<redis::Value>>(conn)
        .map_or(0, |list| list.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stores_acks_and_parks_bad_entries() {
    let redis = Redis::start();
    let mut conn = redis.conn();
    // an entry written before any Herald runs is not lost
    xadd(&mut conn, "publish", &publish_body("before start"));
    let h = Herald::start(Some(&redis.url()), &[]);
    let mut sse = h.events(&user_token("alice"), "").await;
    let bad_json = xadd(&mut conn, "publish", "{not json");
    let no_title = xadd(
        &mut conn,
        "publish",
        r#"{"users":["alice"],"notification":{}}"#,
    );
    let no_field = xadd(&mut conn, "other", "x");
    let not_utf8 = xadd_bytes(&mut conn, "publish", b"\xff\xfe{}");
    xadd(&mut conn, "publish", &publish_body("after the bad ones"));
    let ev = sse.expect("notification").await;
    let title = ev.json()["title"].as_str().unwrap().to_owned();
    assert!(
        ["before start", "after the bad ones"].contains(&title.as_str()),
        "{title}"
    );
    wait_for("the good entries were not stored", async || {
        h.tray_len("alice").await >= 2
    })
    .await;
    let page = h.list(&user_token("alice"), "").await;
    assert_eq!(titles(&page), vec!["after the bad ones", "before start"]);
    // the bad ones are parked with their reason, and nothing stays pending
    let mut dead: Vec<(String, String)> = Vec::new();
    wait_for("timed out waiting for dead letters", async || {
        dead = dead_letters(&mut conn)
            .iter()
            .map(|e| (e.get("id").unwrap(), e.get("reason").unwrap()))
            .collect();
        dead.len() == 4
    })
    .await;
    let ids: Vec<&str> = dead.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            bad_json.as_str(),
            no_title.as_str(),
            no_field.as_str(),
            not_utf8.as_str()
        ]
    );
    assert!(
        dead.iter().all(|(_, reason)| !reason.is_empty()),
        "{dead:?}"
    );
    assert!(dead[1].1.contains("title"), "{dead:?}");
    assert!(dead[3].1.contains("UTF-8"), "{dead:?}");
    // what they carried is kept: the bytes as written, or the fields of one without `publish`
    let letters = dead_letters(&mut conn);
    let copy = |i: usize| letters[i].get::<Vec<u8>>("publish").unwrap();
    assert_eq!(copy(3), b"\xff\xfe{}");
    assert_eq!(copy(2), br#"{"other":"x"}"#);
    assert!(dead[2].1.contains("other"), "{dead:?}");
    wait_for("timed out waiting for all acknowledged", async || {
        pending(&mut conn) == 0
    })
    .await;
    // their marks (parked once) go once they are acknowledged
    wait_for("the parked entries' marks stayed", async || {
        let marks: Vec<String> = redis::cmd("KEYS")
            .arg("herald:{herald:ingest:dead}:*")
            .query(&mut conn)
            .unwrap();
        marks.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_store_each_entry_once() {
    let redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &[]);
    let b = Herald::start(Some(&redis.url()), &[]);
    let mut conn = redis.conn();
    // Both nodes read the group before the entries come, each entry alone: a node that came
    // later would find them all taken.
    wait_for("both nodes to read the group", async || {
        consumers(&mut conn) == 2
    })
    .await;
    for i in 0..30 {
        xadd(&mut conn, "publish", &publish_body(&format!("n{i}")));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for("not all entries were stored", async || {
        a.tray_len("alice").await >= 30
    })
    .await;
    wait_for("timed out waiting for all acknowledged", async || {
        pending(&mut conn) == 0
    })
    .await;
    assert_eq!(
        a.list(&user_token("alice"), "?limit=200").await["notifications"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
    // each node stored a share (its own count of stored notifications), once in all
    let (by_a, by_b) = (
        a.metric("herald_publishes_total").await,
        b.metric("herald_publishes_total").await,
    );
    assert_eq!(by_a + by_b, 30.0, "a stored {by_a}, b stored {by_b}");
    assert!(by_a > 0.0 && by_b > 0.0, "a stored {by_a}, b stored {by_b}");
}

/// An entry `publish` = `body` that the consumer `ghost` of group `herald` read ten minutes
/// ago and never acknowledged (a node that died): its id.
fn left_pending_by_a_ghost(conn: &mut redis::Connection, body: &str) -> String {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("herald:ingest")
        .arg("herald")
        .arg("0")
        .arg("MKSTREAM")
        .query(conn)
        .unwrap();
    let id = xadd(conn, "publish", body);
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("herald")
        .arg("ghost")
        .arg("STREAMS")
        .arg("herald:ingest")
        .arg(">")
        .query(conn)
        .unwrap();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg("herald:ingest")
        .arg("herald")
        .arg("ghost")
        .arg(0)
        .arg(&id)
        .arg("IDLE")
        .arg(600_000)
        .query(conn)
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_left_by_a_dead_consumer_are_taken_over_once() {
    let redis = Redis::start();
    let mut conn = redis.conn();
    // a consumer that read the entry and died before acknowledging it, long ago
    left_pending_by_a_ghost(&mut conn, &publish_body("orphan"));
    let h = Herald::start(Some(&redis.url()), &[]);
    wait_for("the orphaned entry was not taken over", async || {
        h.tray_len("alice").await >= 1
    })
    .await;
    wait_for("timed out waiting for acknowledged", async || {
        pending(&mut conn) == 0
    })
    .await;
    assert_eq!(h.tray_len("alice").await, 1);
    // The dead consumer, its entries taken over, leaves the group once it has not read for
    // 30 s; a node stopped by SIGTERM leaves it at once. (Each restart of a node under a new
    // name added a consumer for good.)
    assert_eq!(consumers(&mut conn), 2);
    let started = std::time::Instant::now();
    while consumers(&mut conn) > 1 {
        assert!(
            started.elapsed() < Duration::from_secs(50),
            "the dead consumer is still in the group"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A second node joins. The first has not read an entry for as long as the ghost had: Redis
    // before 7.2 counts a consumer's idle time from its last read that got entries, so a node
    // that went by that alone removed the other's consumer every few seconds. A live node's
    // consumer stays.
    let b = Herald::start(Some(&redis.url()), &[]);
    wait_for(
        "the two live nodes' consumers were never both in the group",
        async || consumers(&mut conn) == 2,
    )
    .await;
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_secs(7) {
        assert_eq!(
            consumers(&mut conn),
            2,
            "a live node's consumer was removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut h, mut b) = (h, b);
    assert_eq!(b.terminate().map(|s| s.success()), Some(true));
    assert_eq!(h.terminate().map(|s| s.success()), Some(true));
    assert_eq!(consumers(&mut conn), 0, "the stopped nodes left the group");
}

/// A node that parked a bad entry and died before acknowledging it: the node that takes the
/// entry over finds it parked (its mark, `herald:{herald:ingest:dead}:<entry id>`) and acknowledges
/// it without a second dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_entry_parked_by_a_node_that_died_is_not_parked_twice() {
    let redis = Redis::start();
    let mut conn = redis.conn();
    // a consumer that read it long ago, parked it, and died before acknowledging it
    let id = left_pending_by_a_ghost(&mut conn, "not json");
    let _: String = redis::cmd("XADD")
        .arg("herald:ingest:dead")
        .arg("*")
        .arg("id")
        .arg(&id)
        .arg("reason")
        .arg("the ghost's")
        .query(&mut conn)
        .unwrap();
    let mark = format!("herald:{{herald:ingest:dead}}:{id}");
    let _: () = redis::cmd("SET")
        .arg(&mark)
        .arg("1")
        .arg("PX")
        .arg(86_400_000)
        .query(&mut conn)
        .unwrap();
    let _h = Herald::start(Some(&redis.url()), &[]);
    wait_for("the parked entry was not taken over", async || {
        pending(&mut conn) == 0
    })
    .await;
    let letters = dead_letters(&mut conn);
    assert_eq!(letters.len(), 1, "{letters:?}");
}

/// M4/M6: handled entries leave the ingest stream (acknowledged and deleted), an entry over
/// the 1 MiB body limit is dead-lettered with the reason, and a dead letter keeps only the
/// first 4 KiB of the body, with its original size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_streams_stay_bounded() {
    let redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    let mut conn = redis.conn();
    for i in 0..20 {
        xadd(&mut conn, "publish", &publish_body(&format!("t{i}")));
    }
    let huge = json!({"users": ["alice"], "notification": {"title": "big", "body": "x".repeat(2_000_000)}})
        .to_string();
    let huge_id = xadd(&mut conn, "publish", &huge);
    let bad_id = xadd(
        &mut conn,
        "publish",
        &format!("{{not json {}", "y".repeat(10_000)),
    );
    let len = |conn: &mut redis::Connection, key: &str| -> u64 {
        redis::cmd("XLEN").arg(key).query(conn).unwrap()
    };
    wait_for(
        "timed out waiting for the ingest stream to empty",
        async || len(&mut conn, "herald:ingest") == 0,
    )
    .await;
    wait_for("timed out waiting for two dead letters", async || {
        len(&mut conn, "herald:ingest:dead") == 2
    })
    .await;
    assert_eq!(pending(&mut conn), 0);
    assert_eq!(h.tray_len("alice").await, 20);
    let dead = dead_letters(&mut conn);
    let field = |i: usize, name: &str| -> String { dead[i].get(name).unwrap() };
    assert_eq!(field(0, "id"), huge_id);
    assert!(
        field(0, "reason").contains("1048576"),
        "{}",
        field(0, "reason")
    );
    assert_eq!(field(0, "size"), huge.len().to_string());
    assert_eq!(field(0, "publish"), huge[..4096]);
    assert_eq!(field(1, "id"), bad_id);
    assert_eq!(field(1, "publish").len(), 4096);
    let memory: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("herald:ingest:dead")
        .query(&mut conn)
        .unwrap();
    assert!(memory < 64 * 1024, "dead stream holds {memory} bytes");
}

/// M6 on a Redis Cluster: the acknowledge-and-delete transaction works there too (one key,
/// one slot), so handled entries leave the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ingest_deletes_handled_entries() {
    let cluster = Cluster::start(3, 0);
    let h = Herald::start(Some(&cluster.url()), &[]);
    let seeds: Vec<String> = cluster
        .url()
        .trim_start_matches("redis+cluster://")
        .split(',')
        .map(|h| format!("redis://{h}"))
        .collect();
    let client = redis::cluster::ClusterClient::new(seeds).unwrap();
    let mut conn = client.get_connection().unwrap();
    for i in 0..5 {
        let _: String = redis::cmd("XADD")
            .arg("herald:ingest")
            .arg("*")
            .arg("publish")
            .arg(publish_body(&format!("c{i}")))
            .query(&mut conn)
            .unwrap();
    }
    // and a bad one, parked once (its mark lives in the dead stream's slot)
    let _: String = redis::cmd("XADD")
        .arg("herald:ingest")
        .arg("*")
        .arg("publish")
        .arg("not json")
        .query(&mut conn)
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let len: u64 = redis::cmd("XLEN")
            .arg("herald:ingest")
            .query(&mut conn)
            .unwrap();
        if len == 0 && h.tray_len("alice").await == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "{len} entries left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead: u64 = redis::cmd("XLEN")
        .arg("herald:ingest:dead")
        .query(&mut conn)
        .unwrap();
    assert_eq!(dead, 1);
}

/// Entries are handled many at once, but one user's entries are stored in stream order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_entries_keep_their_order() {
    let redis = Redis::start();
    let mut conn = redis.conn();
    let users = ["o1", "o2", "o3"];
    for i in 0..40 {
        let user = users[i % 3];
        let body = json!({"users": [user], "notification": {"title": format!("{i}")}});
        xadd(&mut conn, "publish", &body.to_string());
    }
    let h = Herald::start(Some(&redis.url()), &[]);
    for (n, user) in users.iter().enumerate() {
        wait_for("not every entry was stored", async || {
            h.tray_len(user).await == (40 + 2 - n) / 3
        })
        .await;
        let want: Vec<String> = (0..40)
            .rev()
            .filter(|i| i % 3 == n)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(titles(&h.list(&user_token(user), "?limit=100").await), want);
    }
    assert_eq!(pending(&mut conn), 0);
}

/// An entry whose store fails for a reason of its own (here a key of the wrong type in Redis)
/// is tried a few times, then dead-lettered with the reason: the entries behind it in other
/// lanes are stored meanwhile (they used to wait until it was given up). The same failure
/// over HTTP is a 500, not a 503 that says Redis is away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_fails_for_its_own_data_is_dead_lettered_after_a_few_tries() {
    let redis = Redis::start();
    let mut conn = redis.conn();
    let _: () = redis::cmd("SET")
        .arg("herald:{u:broken}:order")
        .arg("not a sorted set")
        .query(&mut conn)
        .unwrap();
    let h = Herald::start(Some(&redis.url()), &[]);
    let (status, body) = h
        .publish(json!({"users": ["broken"], "notification": {"title": "x"}}))
        .await;
    assert_error(status, &body, 500, "internal");
    let stuck = xadd(
        &mut conn,
        "publish",
        &json!({"users": ["broken"], "notification": {"title": "x"}}).to_string(),
    );
    for i in 0..5 {
        xadd(&mut conn, "publish", &publish_body(&format!("behind {i}")));
    }
    wait_for("the entries behind were not stored", async || {
        h.tray_len("alice").await == 5
    })
    .await;
    assert_ne!(lane("alice"), lane("broken"));
    assert!(
        dead_letters(&mut conn).is_empty(),
        "the entries behind waited until the stuck one was given up"
    );
    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead.is_empty() && Instant::now() < deadline {
        dead = dead_letters(&mut conn);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].get::<String>("id").unwrap(), stuck);
    let reason: String = dead[0].get("reason").unwrap();
    assert!(reason.contains("WRONGTYPE"), "{reason}");
    assert!(reason.contains("attempts"), "{reason}");
    assert!(
        !reason.contains("`stored`"),
        "an HTTP answer's wording: {reason}"
    );
    wait_for("the dead-lettered entry stayed pending", async || {
        pending(&mut conn) == 0
    })
    .await;
}

/// An entry's times are checked as of when it was written: one that waited (no node ran) past
/// its `deliver_at` is delivered when it is handled, not dead-lettered; one that waited past
/// its `expires_at` stores nothing, and is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_waited_past_its_times_is_handled_as_of_its_writing() {
    let redis = Redis::start();
    let mut conn = redis.conn();
    let entry = |title: &str, field: &str| {
        json!({"users": ["alice"], "notification": {"title": title, field: in_secs(1)}}).to_string()
    };
    xadd(&mut conn, "publish", &entry("late", "deliver_at"));
    xadd(&mut conn, "publish", &entry("gone", "expires_at"));
    xadd(&mut conn, "publish", &publish_body("after them"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let h = Herald::start(Some(&redis.url()), &[]);
    wait_for("the entries were not handled", async || {
        h.tray_len("alice").await >= 2 && pending(&mut conn) == 0
    })
    .await;
    let page = h.list(&user_token("alice"), "").await;
    assert_eq!(titles(&page), ["after them", "late"]);
    assert!(dead_letters(&mut conn).is_empty());
}

/// Redis restarted under a running node (with its data, then empty, so without the stream
/// and its consumer group), then emptied without a restart (the node's connections stay, and
/// its next read finds no group): entries written after each are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_resumes_after_redis_restarts() {
    let mut redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    // each step: what happens to Redis, then an entry, and the tray's size once it is stored
    let as_it_is: fn(&mut Redis) = |_| {};
    let flushed: fn(&mut Redis) = |r| {
        let _: () = redis::cmd("FLUSHALL").query(&mut r.conn()).unwrap();
    };
    let steps = [
        (as_it_is, "first", 1),
        (Redis::restart, "after a restart", 2),
        (Redis::restart_empty, "after an empty restart", 1),
        (flushed, "after FLUSHALL", 1),
    ];
    for (change, title, stored) in steps {
        change(&mut redis);
        xadd(&mut redis.conn(), "publish", &publish_body(title));
        wait_for(&format!("{title:?} was not stored"), async || {
            tray_len_or_0(&h).await == stored
        })
        .await;
    }
    let page = h.list(&user_token("alice"), "").await;
    assert_eq!(titles(&page), ["after FLUSHALL"]);
    wait_for("the entries were not acknowledged", async || {
        pending(&mut redis.conn()) == 0
    })
    .await;
}

/// How many notifications alice's tray holds; 0 while the node answers 503 (Redis is back
/// but its link is not yet).
async fn tray_len_or_0(h: &Herald) -> usize {
    let (status, page) = send(
        h.http
            .get(h.url("/notifications"))
            .bearer_auth(user_token("alice")),
    )
    .await;
    if status == 200 {
        ids(&page).len()
    } else {
        0
    }
}
