//! Where the two stores legitimately differ, each backend tested on its own terms: the
//! cleaner's turn (one node in memory; a lock shared by nodes in Redis) and presence (the
//! hub's streams in memory; entries kept alive by the node's heartbeat in Redis).

use std::sync::Arc;

use super::*;
use crate::hub::Idle;
use crate::model::{Change, ChangeKind, PresenceEntry};
use crate::store::batch::{Batch, BATCH_CHANNEL};

/// Memory: one node, so the cleaner's turn is always this node's.
#[tokio::test]
async fn memory_cleaner_turn_is_always_ours() {
    let s = Subject::open(Kind::Memory, ROOMY).await;
    let ttl = Duration::from_secs(60);
    for node in ["n1", "n2", "n1"] {
        assert!(s.store.claim_cleaner(node, ttl).await.expect("claim"));
    }
}

/// Redis: the first node to claim the cleaner holds it; another node is refused while it
/// does, and the holder claiming again keeps it.
#[tokio::test]
async fn redis_cleaner_turn_belongs_to_one_node() {
    let s = Subject::open(Kind::Redis, ROOMY).await;
    let ttl = Duration::from_secs(60);
    let claim = |node: &'static str| s.store.claim_cleaner(node, ttl);
    let turns = tokio::time::timeout(CASE_DEADLINE, async {
        [
            claim("n1").await,
            claim("n2").await,
            claim("n1").await,
            claim("n2").await,
        ]
    })
    .await
    .expect("in time")
    .map(|turn| turn.expect("claim"));
    assert_eq!(turns, [true, false, true, false]);
}

/// Memory: presence is the hub's list of this node's streams; the store keeps none itself,
/// so `add_presence` changes nothing and a closing stream need not delete its entry.
#[tokio::test]
async fn memory_presence_reads_the_hub() {
    let s = Subject::open(Kind::Memory, ROOMY).await;
    assert!(!s.store.keeps_presence());
    let entry = PresenceEntry {
        stream: "elsewhere.1".into(),
        session: None,
        tab: None,
        node: "elsewhere".into(),
        since: "2026-01-01T00:00:00.000Z".into(),
    };
    s.store.add_presence("a", &entry).await.expect("add");
    assert!(s.store.presence("a").await.expect("presence").is_empty());
    let id = s.hub.next_id();
    assert!(s.hub.register(
        "a",
        (Some("s1"), None),
        10,
        id,
        std::time::SystemTime::now(),
        Arc::new(Idle)
    ));
    let entries = s.store.presence("a").await.expect("presence");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].session.as_deref(), entries[0].node.as_str()),
        (Some("s1"), "contract")
    );
    s.hub.remove("a", id);
    assert!(s.store.presence("a").await.expect("presence").is_empty());
}

/// Redis: presence entries live in the store and count only while their node's alive key
/// exists (heartbeat); recording one returns those recorded before it; removing an entry or
/// retiring the node makes it vanish.
#[tokio::test]
async fn redis_presence_lives_while_its_node_does() {
    let s = Subject::open(Kind::Redis, ROOMY).await;
    assert!(s.store.keeps_presence());
    let Store::Redis(redis) = &s.store else {
        unreachable!()
    };
    let entry = |stream: &str| PresenceEntry {
        stream: stream.into(),
        session: Some("s1".into()),
        tab: None,
        node: "n1".into(),
        since: "2026-01-01T00:00:00.000Z".into(),
    };
    tokio::time::timeout(CASE_DEADLINE, async {
        s.store
            .add_presence("a", &entry("n1.1"))
            .await
            .expect("add");
        assert!(
            s.store.presence("a").await.expect("presence").is_empty(),
            "node not alive"
        );
        s.store
            .add_presence("a", &entry("n1.1"))
            .await
            .expect("add");
        let before = s
            .store
            .add_presence("a", &entry("n1.2"))
            .await
            .expect("add");
        assert_eq!(
            before,
            [entry("n1.1")],
            "entries recorded before, live or not"
        );
        assert!(s
            .store
            .live_entries("a", before)
            .await
            .expect("live")
            .is_empty());
        // the dead node's entry was deleted by that read: written again
        s.store
            .add_presence("a", &entry("n1.1"))
            .await
            .expect("add");
        redis.heartbeat("n1", "r1", 0).await.expect("heartbeat");
        assert_eq!(s.store.presence("a").await.expect("presence").len(), 2);
        s.store.remove_presence("a", "n1.2").await.expect("remove");
        assert_eq!(
            s.store.presence("a").await.expect("presence"),
            [entry("n1.1")]
        );
        s.store.retire("n1").await.expect("retire");
        assert!(s.store.presence("a").await.expect("presence").is_empty());
    })
    .await
    .expect("in time");
}

/// Redis: the node list reads the registry, not the keyspace: beating nodes are listed with
/// their streams; a node whose alive key is gone (crashed: it expired) is left out and dropped
/// from the registry; a retired node is gone at once.
#[tokio::test]
async fn redis_node_list_follows_the_alive_keys() {
    let s = Subject::open(Kind::Redis, ROOMY).await;
    let Store::Redis(redis) = &s.store else {
        unreachable!()
    };
    let mut raw = s.raw();
    tokio::time::timeout(CASE_DEADLINE, async {
        redis.heartbeat("n1", "r1", 3).await.expect("heartbeat");
        redis.heartbeat("n2", "r2", 5).await.expect("heartbeat");
        let listed = |nodes: Vec<crate::store::NodeInfo>| {
            nodes
                .into_iter()
                .map(|n| (n.node, n.streams))
                .collect::<Vec<_>>()
        };
        let nodes = s.store.nodes().await.expect("nodes");
        assert_eq!(
            listed(nodes),
            [("n1".into(), Some(3)), ("n2".into(), Some(5))]
        );
        // n2 crashes: its alive key expires (deleted here rather than waited for)
        let _: () = redis::cmd("DEL")
            .arg(crate::store::keys::node_alive("n2"))
            .query(&mut raw)
            .expect("DEL");
        let nodes = s.store.nodes().await.expect("nodes");
        assert_eq!(listed(nodes), [("n1".into(), Some(3))]);
        let registered: bool = redis::cmd("HEXISTS")
            .arg(crate::store::keys::node_registry())
            .arg("n2")
            .query(&mut raw)
            .expect("HEXISTS");
        assert!(!registered, "a dead node stays in the registry");
        s.store.retire("n1").await.expect("retire");
        assert!(s.store.nodes().await.expect("nodes").is_empty());
    })
    .await
    .expect("in time");
}

/// Redis: a user whose writes fail (a key of the wrong type) fails alone within its script
/// call: the users before it in the call are stored, the ones after it are not attempted and
/// have nothing stored, and the other calls of the batch are unaffected. The failed user's
/// idempotency key is not kept, so once repaired a retry with the same key stores it.
#[tokio::test]
async fn redis_failed_user_fails_alone_in_its_script_call() {
    use crate::store::redis::USERS_PER_SCRIPT;
    let s = Subject::open(Kind::Redis, ROOMY).await;
    let mut raw = s.raw();
    let _: () = redis::cmd("SET")
        .arg("herald:{u:poison}:items")
        .arg("not a tray")
        .query(&mut raw)
        .expect("poisoned");
    let mut users: Vec<String> = (0..3 * USERS_PER_SCRIPT)
        .map(|i| format!("u{i:03}"))
        .collect();
    let at = USERS_PER_SCRIPT + 10;
    users[at] = "poison".into();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let t = template(serde_json::json!({"title": "t"}));
    let recipients: Vec<Recipient<'_>> = users
        .iter()
        .zip(new_ids(users.len()))
        .map(|(&user, id)| Recipient { user, id })
        .collect();
    let outcomes = tokio::time::timeout(
        CASE_DEADLINE,
        s.store
            .publish(&t, &recipients, Some(Idempotency::key("k"))),
    )
    .await
    .expect("in time");
    for (i, (user, outcome)) in users.iter().zip(&outcomes).enumerate() {
        let in_failed_call = (USERS_PER_SCRIPT..2 * USERS_PER_SCRIPT).contains(&i);
        match outcome {
            Ok(p) => {
                assert!(
                    !in_failed_call || i < at,
                    "{user} after the failure was stored"
                );
                assert!(p.stored);
            }
            Err(e) => assert!(in_failed_call && i >= at, "{user}: {e:?}"),
        }
        if *user != "poison" {
            let stored = list(&s, user, 10, None, false).await.notifications.len();
            assert_eq!(stored, usize::from(outcome.is_ok()), "{user}");
        }
    }
    let _: () = redis::cmd("DEL")
        .arg("herald:{u:poison}:items")
        .query(&mut raw)
        .expect("repaired");
    let again = publish_to(&s, &t, &users[at..at + 1], Some(Idempotency::key("k"))).await;
    assert!(
        again[0].stored,
        "the failed user's idempotency key was kept"
    );
}

/// Redis: a user whose log was written by a node of the old layout (a STREAM at `log`) is
/// published to as usual. A position inside the old entries, whose changes the new log lacks,
/// resets; one after the upgrade's first change replays exactly the rest. The old key is left
/// alone (operators free it, see docs/redis.md).
#[tokio::test]
async fn redis_an_old_layout_log_resets_instead_of_a_hole() {
    let s = Subject::open(Kind::Redis, ROOMY).await;
    let mut raw = s.raw();
    let head = s.store.head("a").await.expect("head");
    // What an old node left: seqs 1 and 2 in the STREAM, the seq counter at 2.
    for seq in 1..=2 {
        let _: String = redis::cmd("XADD")
            .arg("herald:{u:a}:log")
            .arg(format!("{seq}-1"))
            .arg("k")
            .arg("notification")
            .arg("d")
            .arg("{}")
            .arg("t")
            .arg(0)
            .query(&mut raw)
            .expect("an old entry");
    }
    let _: () = redis::cmd("SET")
        .arg("herald:{u:a}:seq")
        .arg(2)
        .query(&mut raw)
        .expect("the old seq");
    publish_many(&s, "a", 3).await;
    let at = |seq| EventId {
        epoch: head.epoch,
        seq,
    };
    assert_eq!(replay(&s, "a", at(1)).await, Replay::Reset);
    assert_eq!(seqs(&replay(&s, "a", at(3)).await), vec![4, 5]);
    assert_eq!(seqs(&replay(&s, "a", at(2)).await), vec![3, 4, 5]);
    let kind: String = redis::cmd("TYPE")
        .arg("herald:{u:a}:log")
        .query(&mut raw)
        .expect("type");
    assert_eq!(kind, "stream");
}

/// Redis: a log that went back (Redis restarted from a snapshot older than its last writes)
/// takes a new epoch when a position beyond its head shows it, so the seqs it hands out again
/// are never taken for the lost ones: every position of the old epoch resets, also one the
/// new changes have passed.
#[tokio::test]
async fn redis_a_log_that_went_back_takes_a_new_epoch() {
    let s = Subject::open(Kind::Redis, ROOMY).await;
    let mut raw = s.raw();
    publish_many(&s, "a", 4).await;
    let old = s.store.head("a").await.expect("head");
    assert_eq!(old.seq, 4);
    // The snapshot: seq 2, its two changes.
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("herald:{u:a}:seq")
        .arg(2)
        .cmd("LTRIM")
        .arg("herald:{u:a}:changes")
        .arg(0)
        .arg(1)
        .query(&mut raw)
        .expect("go back");
    let at = |epoch, seq| EventId { epoch, seq };
    assert_eq!(replay(&s, "a", at(old.epoch, 4)).await, Replay::Reset);
    let new = s.store.head("a").await.expect("head");
    assert_ne!(new.epoch, old.epoch);
    assert_eq!(new.seq, 2);
    publish_many(&s, "a", 3).await;
    for seq in [1, 2, 3, 4] {
        assert_eq!(replay(&s, "a", at(old.epoch, seq)).await, Replay::Reset);
    }
    assert_eq!(
        seqs(&replay(&s, "a", at(new.epoch, 2)).await),
        vec![3, 4, 5]
    );

    // A stream's position the new changes have passed before its catch-up: the change at its
    // seq is another one. (`entry_at(back)`: the log entry `back` before the newest.)
    let entry_at = |raw: &mut redis::Connection, back: i64| -> String {
        redis::cmd("LINDEX")
            .arg("herald:{u:a}:changes")
            .arg(-1 - back)
            .query(raw)
            .expect("LINDEX")
    };
    let print_of = |entry: &str| {
        let mut parts = entry.splitn(4, '\t').skip(1);
        let (kind, ms, data) = (parts.next(), parts.next(), parts.next());
        Change {
            epoch: new.epoch,
            seq: 0,
            kind: ChangeKind::parse(kind.unwrap()).unwrap(),
            at_ms: ms.unwrap().parse().unwrap(),
            data: data.unwrap().to_owned(),
        }
        .print()
    };
    let (print4, print5) = (
        print_of(&entry_at(&mut raw, 1)),
        print_of(&entry_at(&mut raw, 0)),
    );
    let handed_out = async |seq, print| {
        let after = at(new.epoch, seq);
        s.store.replay("a", after, print).await.expect("replay")
    };
    // the log as the stream saw it: no new epoch
    assert_eq!(seqs(&handed_out(4, print4).await), vec![5]);
    assert_eq!(handed_out(5, print5).await, Replay::Changes(Vec::new()));
    assert_eq!(s.store.head("a").await.expect("head").epoch, new.epoch);
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("herald:{u:a}:seq")
        .arg(3)
        .cmd("LTRIM")
        .arg("herald:{u:a}:changes")
        .arg(0)
        .arg(2)
        .query(&mut raw)
        .expect("go back");
    tokio::time::sleep(Duration::from_millis(5)).await;
    publish_many(&s, "a", 3).await;
    assert_eq!(handed_out(5, print5).await, Replay::Reset);
    let newer = s.store.head("a").await.expect("head");
    assert_ne!(newer.epoch, new.epoch);
    assert_eq!(newer.seq, 6);

    // Another change at the position committed in the same millisecond (a hung Cluster
    // primary's and its promoted replica's, published at once): told apart by its data.
    let entry6 = entry_at(&mut raw, 0);
    let other = entry6.replacen("\"title\":\"", "\"title\":\"other ", 1);
    assert_ne!(other, entry6);
    let at6 = at(newer.epoch, 6);
    let replay6 = async |print| s.store.replay("a", at6, print).await.expect("replay");
    assert_eq!(
        replay6(print_of(&entry6)).await,
        Replay::Changes(Vec::new())
    );
    let _: () = redis::cmd("LSET")
        .arg("herald:{u:a}:changes")
        .arg(-1)
        .arg(&other)
        .query(&mut raw)
        .expect("LSET");
    assert_eq!(replay6(print_of(&entry6)).await, Replay::Reset);
    assert_ne!(s.store.head("a").await.expect("head").epoch, newer.epoch);
}

/// Redis, a node with Web Push off and no live node that sends it: a due escalation is left
/// (for a node that may be restarting) while it is due within the hand-over time, and keeps
/// the tray out of the due index meanwhile for the hold time, not every tick; one overdue by
/// more is cancelled.
#[tokio::test]
async fn redis_escalations_wait_for_a_pushing_node_then_cancel() {
    let s = Subject::open(Kind::Redis, ROOMY).await;
    let mut raw = s.raw();
    let ids = publish_many(&s, "a", 2).await;
    let now = crate::model::now_ms();
    let (recent, old) = (now - 1_000, now - 3_600_000);
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg("herald:{u:a}:pushdue")
        .arg(recent)
        .arg(&ids[0])
        .arg(old)
        .arg(&ids[1])
        .cmd("HSET")
        .arg("herald:{u:a}:pushstage")
        .arg(&ids[0])
        .arg("check")
        .arg(&ids[1])
        .arg("check")
        .cmd("ZADD")
        .arg(crate::store::keys::due_index())
        .arg(old)
        .arg("a")
        .query(&mut raw)
        .expect("escalations due");
    let due = s.store.process_due("a", old).await.expect("due");
    assert_eq!((due.escalations.len(), due.cancelled), (0, 1));
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg("herald:{u:a}:pushdue")
        .arg(0)
        .arg(-1)
        .query(&mut raw)
        .expect("ZRANGE");
    assert_eq!(left, [ids[0].clone()]);
    let next: f64 = redis::cmd("ZSCORE")
        .arg(crate::store::keys::due_index())
        .arg("a")
        .query(&mut raw)
        .expect("ZSCORE");
    assert!(
        next as u64 >= now + 900,
        "held for the hold time: {next} at {now}"
    );
}

/// Redis: an escalation taken again after its lease ran out (its sender died) is handed out
/// with when it first came due in its stage (kept in the stage): `--push-after` (a check)
/// and the TTL (a push) count from then, not from the lapsed lease.
#[tokio::test]
async fn redis_an_escalation_taken_again_keeps_when_it_came_due() {
    let server = RedisServer::start();
    let store = Store::redis(&Backend::Redis(server.url()), ROOMY, true, None)
        .await
        .unwrap_or_else(|e| panic!("the Redis store connects: {}", e.0));
    let hub = Hub::new("contract".into(), Metrics::default());
    let s = Subject {
        store,
        hub,
        _redis: Some(server),
    };
    let mut raw = s.raw();
    let id = publish(&s, "a", None).await.id;
    let now = crate::model::now_ms();
    let came = now - 10_000;
    let plant = |at: u64, raw: &mut redis::Connection| {
        let _: () = redis::cmd("ZADD")
            .arg("herald:{u:a}:pushdue")
            .arg(at)
            .arg(&id)
            .query(raw)
            .expect("ZADD");
    };
    plant(came, &mut raw);
    let _: () = redis::cmd("HSET")
        .arg("herald:{u:a}:pushstage")
        .arg(&id)
        .arg("check")
        .query(&mut raw)
        .expect("HSET");
    let due = |e: &crate::store::Due| -> Vec<(bool, u64)> {
        e.escalations.iter().map(|e| (e.send, e.due_ms)).collect()
    };
    let first = s.store.process_due("a", came).await.expect("due");
    assert_eq!(due(&first), [(false, came)]);
    // its sender died: the lease (now + 60 s) runs out; here, it is made past at once
    plant(now - 1_000, &mut raw);
    let again = s.store.process_due("a", now - 1_000).await.expect("due");
    assert_eq!(due(&again), [(false, came)]);
    // the push (the TTL counts from its first try) likewise
    let (lease, tried) = (again.escalations[0].lease, now - 5_000);
    let later = s.store.push_later("a", id.as_str(), lease, tried, true);
    later.await.expect("later");
    let first = s.store.process_due("a", tried).await.expect("due");
    assert_eq!(due(&first), [(true, tried)]);
    plant(now - 1_000, &mut raw);
    let again = s.store.process_due("a", now - 1_000).await.expect("due");
    assert_eq!(due(&again), [(true, tried)]);
}

/// Redis: the owner key decides whose an endpoint is. An entry in a user's hash for an
/// endpoint another user owns (two users posting one browser at once can leave one) is not
/// among the user's subscriptions, and goes from the hash as it is read.
#[tokio::test]
async fn redis_an_endpoint_is_its_owners_alone() {
    use crate::store::{Subscription, SubscriptionKeys};
    let s = Subject::open(Kind::Redis, ROOMY).await;
    let mut raw = s.raw();
    let endpoint = "https://push.example/1";
    let sub = Subscription {
        endpoint: endpoint.into(),
        keys: SubscriptionKeys {
            p256dh: "p".into(),
            auth: "a".into(),
        },
        created_ms: 1,
    };
    s.store
        .add_subscription("bob", &sub, None)
        .await
        .expect("add");
    let _: () = redis::cmd("HSET")
        .arg("herald:{u:alice}:push")
        .arg(endpoint)
        .arg(serde_json::to_string(&sub).expect("json"))
        .query(&mut raw)
        .expect("HSET");
    assert_eq!(s.store.subscriptions("alice").await.expect("subs"), []);
    let left: bool = redis::cmd("HEXISTS")
        .arg("herald:{u:alice}:push")
        .arg(endpoint)
        .query(&mut raw)
        .expect("HEXISTS");
    assert!(!left, "dropped from alice's hash");
    assert_eq!(s.store.subscriptions("bob").await.expect("subs"), [sub]);
}

/// A connection of its own to `s`'s Redis, subscribed to the batch channel.
fn batch_listener(s: &Subject) -> redis::Connection {
    let mut raw = s.raw();
    raw.set_read_timeout(Some(CASE_DEADLINE)).expect("timeout");
    let _: redis::Value = redis::cmd("SSUBSCRIBE")
        .arg(BATCH_CHANNEL)
        .query(&mut raw)
        .expect("subscribe");
    raw
}

/// The payload of the next batch message `raw` hears.
fn next_batch(raw: &mut redis::Connection) -> String {
    let message = raw.recv_response().expect("a batch message");
    let redis::Value::Array(mut parts) = message else {
        panic!("a push: {message:?}")
    };
    redis::from_redis_value(parts.swap_remove(2)).expect("a payload")
}

/// Redis (one server): a publish to many users announces them all in one batch message, from
/// which each user's change is written exactly as logged (escaped user ids, a collapse's
/// count and replaced id, the counts); a publish to one user announces on the user's channel.
#[tokio::test]
async fn redis_a_group_publish_announces_one_batch_as_logged() {
    let s = Subject::open(Kind::Redis, ROOMY).await;
    let mut raw = batch_listener(&s);
    let t = template(serde_json::json!({
        "title": "a \"quoted\" title \\ é", "body": "line\nbreak\ttab", "collapse_key": "c",
        "data": {"z": 1, "a": [true, null]},
    }));
    let users = ["plain", "with \"quote\"", "ünï\tcødé"];
    for round in 1..=3u64 {
        publish_to(&s, &t, &users, None).await;
        if round == 2 {
            publish_to(&s, &t, &users[..1], None).await; // its own channel: no batch
        }
        let payload = next_batch(&mut raw);
        let batch = Batch::parse(&payload).expect("a batch");
        let announced: Vec<_> = batch.users().map(|u| u.expect("a readable line")).collect();
        assert_eq!(announced.len(), users.len());
        for (user, a) in users.iter().zip(&announced) {
            assert_eq!(a.user, *user);
            let change = batch.change(a);
            let head = s.store.head(user).await.expect("head");
            let before = EventId {
                seq: change.seq - 1,
                ..head.id()
            };
            let Replay::Changes(logged) = replay(&s, user, before).await else {
                panic!("reset")
            };
            assert_eq!(logged[0], change, "{user}, round {round}");
            let count = if round == 3 && *user == "plain" {
                4
            } else {
                round
            };
            assert!(change.data.contains(&format!(r#""count":{count},"#)));
        }
    }
}

/// Redis (one server): a group publish to full trays announces, on each user's batch line,
/// the ids it pushed out; the `deleted` written from it is the change logged after the
/// notification, byte for byte.
#[tokio::test]
async fn redis_a_batch_carries_what_a_full_tray_dropped() {
    let s = Subject::open(Kind::Redis, 1).await;
    let mut raw = batch_listener(&s);
    let t = template(serde_json::json!({"title": "t"}));
    let users = ["a", "b"];
    let first = publish_to(&s, &t, &users, None).await;
    next_batch(&mut raw);
    publish_to(&s, &t, &users, None).await;
    let payload = next_batch(&mut raw);
    let batch = Batch::parse(&payload).expect("a batch");
    for ((user, a), before) in users.iter().zip(batch.users()).zip(&first) {
        let a = a.expect("a readable line");
        let deleted = batch.dropped(&a).expect("one dropped");
        assert!(
            deleted.data.contains(before.id.as_str()),
            "{}",
            deleted.data
        );
        let head = s.store.head(user).await.expect("head");
        assert_eq!(head.seq, deleted.seq);
        let at = EventId {
            seq: deleted.seq - 2,
            ..head.id()
        };
        let Replay::Changes(logged) = replay(&s, user, at).await else {
            panic!("reset")
        };
        assert_eq!(logged, [batch.change(&a), deleted], "{user}");
    }
}

/// Redis: a tray that holds only notifications waiting for their `deliver_at` has no change
/// log yet; the cleaner's cut of it drops nothing, without an error (it used to fail on the
/// missing log, and every round warned of the user as of a broken tray).
#[tokio::test]
async fn redis_a_tray_without_a_log_is_cut_without_error() {
    let s = Subject::open(Kind::Redis, ROOMY).await;
    let later = scheduled(Schedule {
        deliver_ms: Some(crate::model::now_ms() + 60_000),
        expire_ms: None,
    });
    publish_to(&s, &later, &["a"], None).await;
    let Store::Redis(redis) = &s.store else {
        unreachable!("a Redis subject")
    };
    let dropped = redis
        .cut_log("a", crate::model::now_ms() + 60_000)
        .await
        .expect("cut");
    assert_eq!(dropped, 0);
}

/// Redis: retention's cut of a log drops its old entries (the whole `changes` key when all
/// are old) and keeps `seq` and `epoch`, so positions handed out keep their meaning; the
/// cleaner still finds a user whose log is gone by the tray.
#[tokio::test]
async fn redis_a_cut_log_keeps_its_head() {
    let s = Subject::open(Kind::Redis, ROOMY).await;
    let mut raw = s.raw();
    publish(&s, "a", None).await;
    let first = s.store.head("a").await.expect("head");
    let cutoff = new_id();
    publish(&s, "b", None).await;
    let later = crate::model::now_ms() + 60_000;
    assert_eq!(
        s.store.purge_before(&cutoff, later).await.expect("purge"),
        1
    );
    let exists = |raw: &mut redis::Connection, user: &str, suffix: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(format!("herald:{{u:{user}}}:{suffix}"))
            .query(raw)
            .expect("exists")
    };
    for (user, suffix, kept) in [
        ("a", "order", false),
        ("a", "changes", false),
        ("a", "seq", true),
        ("a", "epoch", true),
        ("b", "order", true),
        ("b", "changes", false),
    ] {
        assert_eq!(exists(&mut raw, user, suffix), kept, "{user}'s {suffix}");
    }
    let again = s.store.head("a").await.expect("head");
    assert_eq!((again.epoch, again.seq), (first.epoch, 2));
    // b's notification is old in the next round: found by its tray, although its log is gone
    let cutoff = new_id();
    assert_eq!(
        s.store.purge_before(&cutoff, later).await.expect("purge"),
        1
    );
    assert!(!exists(&mut raw, "b", "order"));
}

/// Redis: a tray write whose script Redis lost (a restart, a promoted replica, `SCRIPT
/// FLUSH`) loads it and sends the call again within the first send's deadline, so a slow
/// Redis still gets an answer within a second: here each round trip takes 350 ms (a proxy
/// holds every request that long), so send, load and send again took ~1.05 s.
#[tokio::test]
async fn redis_a_lost_script_is_loaded_within_the_first_deadline() {
    let server = RedisServer::start();
    let slow = slow_proxy(&server.url(), Duration::from_millis(350)).await;
    let store = Store::redis(&crate::config::Backend::Redis(slow), ROOMY, false, None)
        .await
        .unwrap_or_else(|e| panic!("the Redis store connects: {}", e.0));
    let mut raw = redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("a raw connection");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut raw)
        .expect("flush");
    let template = template(serde_json::json!({"title": "t"}));
    let recipients = [Recipient {
        user: "a",
        id: new_ids(1).next().expect("an id"),
    }];
    let started = std::time::Instant::now();
    let outcomes = store.publish(&template, &recipients, None).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    assert!(
        outcomes[0].is_err(),
        "{:?}",
        outcomes[0].as_ref().map(|p| p.id)
    );
}

/// A proxy to the Redis at `url` that holds each piece of a request `delay` before passing
/// it on (answers pass at once); its `redis://` URL.
async fn slow_proxy(url: &str, delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let at = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                    tokio::time::sleep(delay).await;
                    if to_server.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
            });
        }
    });
    format!("redis://{at}")
}
