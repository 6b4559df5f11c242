//! Redis Cluster: nodes share a cluster as they share one Redis (users spread over the slots
//! of every primary), and open streams keep receiving through every kind of topology change:
//! a primary crash, a planned, forced or takeover failover, a slot moved to another primary.
//! (Every behaviour test also runs against a cluster: see `both_modes!`.)

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_a_cluster_behave_as_one() {
    let cluster = Cluster::start(3, 0);
    let a = Herald::start(Some(&cluster.url()), &[]);
    let b = Herald::start(Some(&cluster.url()), &[]);
    // enough users that every primary serves some of them
    let users: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    let mut streams = Vec::new();
    for user in &users {
        streams.push(a.events(&session_token(user, "s"), "").await);
    }
    for user in &users {
        b.notify(user, &format!("for {user}")).await;
    }
    for (user, sse) in users.iter().zip(&mut streams) {
        assert_eq!(
            sse.next_event().await.json()["title"],
            format!("for {user}")
        );
    }
    // status changes, replacement and logout cross nodes too
    let (status, _) = b
        .patch(
            "/notifications",
            &user_token(&users[0]),
            json!({"all": true, "read": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(streams[0].next_event().await.event, "read");
    let _replacing = b.events(&session_token(&users[1], "s"), "").await;
    assert_eq!(streams[1].next_event().await.event, "replaced");
    let cookie = a.login(&users[2]).await;
    let mut by_cookie = a.cookie_events(&cookie).await;
    let r = b.logout(&cookie).await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        by_cookie
            .try_next(Duration::from_secs(1))
            .await
            .expect("revoked within 1 s")
            .event,
        "revoked"
    );
}

/// A cluster of three primaries with a replica each, a node on it, and a stream of alice that
/// received one notification (its id), which has reached the replica (a failover loses
/// nothing of it).
async fn alice_on_a_replicated_cluster() -> (Cluster, Herald, Sse, String) {
    let cluster = Cluster::start(3, 1);
    let h = Herald::start(Some(&cluster.url()), &[]);
    let mut sse = h.events(&user_token("alice"), "").await;
    let before = h.notify("alice", "before").await;
    assert_eq!(sse.next_event().await.event, "notification");
    cluster.wait_for_replication("herald:{u:alice}:items");
    (cluster, h, sse, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_receiving_after_a_primary_fails_over() {
    let (mut cluster, h, mut sse, before) = alice_on_a_replicated_cluster().await;
    cluster.kill_primary_of("herald:{u:alice}:items");
    let (id, later) = served_again(&h, &mut sse, "alice").await;
    // the notification stored before the failover survived it
    assert_eq!(h.tray_ids("alice", "").await, vec![later, id, before]);
}

/// Once the replica of `user`'s failed primary is promoted, publishing to `user` through `h`
/// works again and `sse` (a stream of `user`, on `h` or another node) receives it, then a live one (not only a catch-up) a second
/// later: their ids.
async fn served_again(h: &Herald, sse: &mut Sse, user: &str) -> (String, String) {
    let id = published_once_promoted(h, user).await;
    // No bound in the spec: generous, for a loaded machine (a node that only streams learns
    // of the promotion from its probe and a new slot map, a few seconds at most when quiet).
    let ev = sse
        .try_next(Duration::from_secs(30))
        .await
        .expect("the stream receives after the promotion");
    assert_eq!(
        (ev.event.as_str(), ev.json()["id"].clone()),
        ("notification", json!(id))
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = h.notify(user, "later").await;
    let ev = sse
        .try_next(Duration::from_secs(5))
        .await
        .expect("live delivery on the new primary");
    assert_eq!(ev.json()["id"], later.as_str());
    (id, later)
}

/// Once the replica of `user`'s failed primary is promoted, publishing to `user` works again
/// (tried for 30 s): the id.
async fn published_once_promoted(h: &Herald, user: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = h
            .publish(json!({"users": [user], "notification": {"title": "after"}}))
            .await;
        if status == 202 {
            return body["ids"][user].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "publishing never recovered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A primary that hangs (it keeps its connections and answers nothing: a stopped process, a
/// black hole) tells the cluster client nothing, unlike one that died. Once its replica is
/// promoted, its users are served again and their open streams receive, live, while it
/// still hangs; and so are the other shards' users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primarys_users_are_served_once_its_replica_is_promoted() {
    let (mut cluster, h, mut sse, _) = alice_on_a_replicated_cluster().await;
    let other = (0..100)
        .map(|i| format!("bob{i}"))
        .find(|u| {
            cluster.primary_of(&format!("herald:{{u:{u}}}:items"))
                != cluster.primary_of("herald:{u:alice}:items")
        })
        .unwrap();
    let hung = cluster.pause_primary_of("herald:{u:alice}:items");
    served_again(&h, &mut sse, "alice").await;
    h.notify(&other, "elsewhere").await;
    cluster.resume(hung);
}

/// Streams of users on healthy shards keep receiving after a primary that `--redis-url` does
/// not name hung for 3 s, or for 8 s (no failover): the links connect anew, and the new
/// connection's first slot refresh, which may run just after the subscriptions were made
/// again, replaced node connections and took those subscriptions without a word (every later
/// notification of those users was stored but never streamed, and `/readyz` said 200); the
/// canaries made before them went silent with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_receiving_after_an_unnamed_primary_hangs_briefly() {
    streams_keep_receiving_after_an_unnamed_primary_hangs(Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_receiving_after_an_unnamed_primary_hangs_for_long() {
    streams_keep_receiving_after_an_unnamed_primary_hangs(Duration::from_secs(8)).await;
}

async fn streams_keep_receiving_after_an_unnamed_primary_hangs(hang: Duration) {
    let cluster = Cluster::start(3, 0);
    let primaries = cluster.primaries();
    let url = format!(
        "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
        primaries[0], primaries[1]
    );
    let a = Herald::start(Some(&url), &[]);
    let b = Herald::start(Some(&url), &[]);
    let users: Vec<String> = (0..12).map(|i| format!("hang-{i}")).collect();
    let mut streams = Vec::new();
    for user in &users {
        streams.push(a.events(&user_token(user), "").await);
        streams.push(b.events(&user_token(user), "").await);
    }
    cluster.pause(primaries[2]);
    tokio::time::sleep(hang).await;
    cluster.resume(primaries[2]);
    for round in ["after the hang", "live"] {
        let ids = publish_all(&a, &users, round).await;
        for (i, sse) in streams.iter_mut().enumerate() {
            let what = format!("stream {i} of {}, {round}", users[i / 2]);
            receives(sse, &ids[i / 2], Duration::from_secs(10), &what).await;
        }
    }
    // and a user whose streams open only now
    let fresh = vec!["hang-fresh".to_owned()];
    let mut on_both = [
        a.events(&user_token(&fresh[0]), "").await,
        b.events(&user_token(&fresh[0]), "").await,
    ];
    let ids = publish_all(&b, &fresh, "fresh").await;
    for (sse, node) in on_both.iter_mut().zip(["a", "b"]) {
        let what = format!("a fresh stream on {node}");
        receives(sse, &ids[0], Duration::from_secs(5), &what).await;
    }
}

/// A node that only holds streams of a hung primary's user (another node takes the
/// publishes) sends that primary no command of its own, so none misses a deadline; its
/// links' probe (`TIME` to every primary) gets no answer, so it connects anew all the same,
/// and its stream receives again once the replica is promoted, while the old primary still
/// hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_only_streams_follows_a_hung_primarys_promotion() {
    let mut cluster = Cluster::start(3, 1);
    let key = "herald:{u:alice}:items";
    // The streaming node's own keys (its alive key; the due index and the cleaner's lock are
    // on other primaries than alice's) away from alice's primary.
    let node = (0..100)
        .map(|i| format!("b{i}"))
        .find(|n| cluster.primary_of(&format!("herald:node:{n}")) != cluster.primary_of(key))
        .unwrap();
    let a = Herald::start(Some(&cluster.url()), &[]);
    let b = Herald::start(Some(&cluster.url()), &["--node-id", &node]);
    let mut sse = b.events(&user_token("alice"), "").await;
    let before = a.notify("alice", "before").await;
    assert_eq!(sse.next_event().await.json()["id"], before.as_str());
    cluster.wait_for_replication(key);
    let hung = cluster.pause_primary_of(key);
    // published through the other node, received here, once promoted and live after
    served_again(&a, &mut sse, "alice").await;
    cluster.resume(hung);
}

/// A primary that hangs until its replica is promoted, then wakes, runs the calls that
/// waited in its socket as a primary for the few milliseconds before it learns it was
/// replaced, and drops them when it resyncs from the new primary. Publishes sent to it just
/// before it wakes are therefore never answered 202 (their writes did not reach the replica:
/// 503, retried by the client), nor a mark 200, and a stream that delivered what it announced
/// meanwhile gets `reset` (the new primary hands those positions out again for other changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_wakes_after_its_replica_took_over_loses_no_accepted_publish() {
    let (mut cluster, h, mut sse, before) = alice_on_a_replicated_cluster().await;
    let key = "herald:{u:alice}:items";
    let replica = cluster.replica_of(cluster.primary_of(key));
    let hung = cluster.pause_primary_of(key);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Cluster::cli(replica, &["info", "replication"]).contains("role:master") {
        assert!(Instant::now() < deadline, "the replica was never promoted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Herald sent nothing to the hung primary meanwhile, so it still routes alice there.
    // A mark first (the first write in the primary's socket runs there), then publishes.
    let token = user_token("alice");
    let path = format!("/notifications/{before}");
    let read = h.patch(&path, &token, json!({"read": true}));
    let sent = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = (0..6).map(|i| {
            h.publish(json!({"users": ["alice"], "notification": {"title": format!("t{i}")}}))
        });
        futures_util::future::join_all(sent).await
    };
    let ((read, _), answers, ()) = tokio::join!(read, sent, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.resume(hung);
    });
    assert!(read == 200 || read == 503, "{read}");
    let accepted: Vec<String> = answers
        .iter()
        .filter(|(status, _)| *status == 202)
        .map(|(_, body)| body["ids"]["alice"].as_str().unwrap().to_owned())
        .collect();
    for (status, body) in &answers {
        assert!(*status == 202 || *status == 503, "{status} {body}");
    }
    let after = published_once_promoted(&h, "alice").await;
    if read == 200 {
        let page = h.list(&token, "").await;
        let marked = page["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == before.as_str());
        assert!(
            marked.unwrap()["read_at"].is_string(),
            "the read answered 200 was lost"
        );
    }
    let tray = h.tray_ids("alice", "").await;
    for id in accepted.iter().chain([&before, &after]) {
        assert!(
            tray.contains(id),
            "{id} was answered 202 and is not in the tray {tray:?}"
        );
    }
    // The stream: what it delivered is in the tray, unless it was told to start over since
    // (the client refetches the tray then): no notification the tray never had stays shown.
    // (Its subscription moves to the new primary first: give it time on a loaded machine.)
    let mut delivered = Vec::new();
    let mut reset = false;
    let until = Instant::now() + Duration::from_secs(15);
    while let Some(ev) = sse
        .try_next(until.saturating_duration_since(Instant::now()))
        .await
    {
        match ev.event.as_str() {
            "notification" => delivered.push(ev.json()["id"].as_str().unwrap().to_owned()),
            "reset" => {
                reset = true;
                delivered.clear();
            }
            _ => {}
        }
        if delivered.last() == Some(&after) {
            break;
        }
    }
    assert!(
        reset || delivered.last() == Some(&after),
        "the stream received the later publish, or a reset"
    );
    for id in &delivered {
        assert!(
            tray.contains(id),
            "the stream delivered {id}, which the tray never had, with no reset"
        );
    }
}

/// A replica that hangs confirms nothing: publishes to its primary's users are still stored
/// and answered (the primary keeps the writes, as it would without a replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_carries_on_while_a_replica_hangs() {
    let cluster = Cluster::start(3, 1);
    let h = Herald::start(Some(&cluster.url()), &[]);
    let mut sse = h.events(&user_token("alice"), "").await;
    h.notify("alice", "before").await;
    sse.expect("notification").await;
    // The node reads which primaries have a replica once it publishes (every 250 ms until
    // the first read).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let replica = cluster.replica_of(cluster.primary_of("herald:{u:alice}:items"));
    cluster.pause(replica);
    for i in 0..5 {
        let id = h.notify("alice", &format!("while {i}")).await;
        assert_eq!(sse.expect("notification").await.json()["id"], id.as_str());
    }
    cluster.resume(replica);
    assert_eq!(h.tray_len("alice").await, 6);
}

/// While resharding has moved some of a user's keys to the new owner and not the others,
/// Redis answers the user's tray scripts `TRYAGAIN` (each declares every key of the tray), so
/// Herald answers 503 instead of running a script against half of the tray (which wrote keys
/// on the new owner that the migration then could not move: `BUSYKEY`). Once the slot has
/// moved, the tray is whole and the stream catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tray_split_by_a_slot_migration_is_left_alone_until_it_moves() {
    let cluster = Cluster::start(3, 0);
    let h = Herald::start(Some(&cluster.url()), &[]);
    let token = user_token("alice");
    let mut sse = h.events(&session_token("alice", "s"), "").await;
    let first = h.notify("alice", "one").await;
    let second = h.notify("alice", "two").await;
    for id in [&first, &second] {
        receives(&mut sse, id, WAIT, "before the migration").await;
    }
    let from = cluster.primary_of(&items("alice"));
    let to = *cluster.primaries().iter().find(|p| **p != from).unwrap();
    let migration = cluster.start_migration(&items("alice"), to);
    migration.migrate(&["herald:{u:alice}:seq".to_owned()]);
    let (status, body) = h
        .publish(json!({"users": ["alice"], "notification": {"title": "split"}}))
        .await;
    assert_error(status, &body, 503, "unavailable");
    let (status, body) = h.get("/notifications", &token).await;
    assert_error(status, &body, 503, "unavailable");
    let (status, body) = h
        .patch("/notifications", &token, json!({"all": true, "read": true}))
        .await;
    assert_error(status, &body, 503, "unavailable");
    // the rest of the keys move (none was written on the new owner meanwhile)
    migration.migrate_the_rest();
    cluster.finish_migration(migration, &mut || {});
    let third = publish_all(&h, &["alice".to_owned()], "three")
        .await
        .remove(0);
    receives(
        &mut sse,
        &third,
        Duration::from_secs(20),
        "after the migration",
    )
    .await;
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page), vec![third, second, first]);
    assert_eq!(page["unread_count"], 3);
}

/// Keys of `user` (they all share the user's slot, and so does the user's channel).
fn items(user: &str) -> String {
    format!("herald:{{u:{user}}}:items")
}

/// Users whose slots live on the primary serving `users[0]` (several slots, so resubscribing
/// has to cross slots), then one user elsewhere that the change must not disturb.
fn pick_users(cluster: &Cluster) -> (Vec<String>, String) {
    let all: Vec<String> = (0..24).map(|i| format!("user-{i}")).collect();
    let home = cluster.primary_of(&items(&all[0]));
    let (moved, others): (Vec<String>, Vec<String>) = all
        .into_iter()
        .partition(|u| cluster.primary_of(&items(u)) == home);
    let mut moved: Vec<String> = moved.into_iter().take(4).collect();
    moved.sort_by_key(|u| cluster.slot_of(&items(u)));
    moved.dedup_by_key(|u| cluster.slot_of(&items(u)));
    (moved, others[0].clone())
}

/// Wait (bounded) until `sse` delivers the notification `id`; other events may come first.
async fn receives(sse: &mut Sse, id: &str, wait: Duration, what: &str) {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(ev) = sse.try_next(left).await else {
            panic!(
                "{what}: notification {id} not received; stream so far:\n{}",
                sse.raw
            );
        };
        if ev.event == "notification" && ev.json()["id"] == id {
            return;
        }
    }
}

/// Publish one notification to each of `users` through `node`, retrying while the cluster
/// settles; the ids by user.
async fn publish_all(node: &Herald, users: &[String], title: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = node
            .publish(json!({"users": users, "notification": {"title": title}}))
            .await;
        if status == 202 {
            return users
                .iter()
                .map(|u| body["ids"][u].as_str().unwrap().to_owned())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "publishing never recovered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Streams of users on the changed shard (and of one user elsewhere), each held on two nodes,
/// keep receiving through `change`. `change` may call its third argument once to publish
/// while it runs: that notification must reach every stream before anything else is
/// published (live, or by the catch-up that follows a restored subscription). What is
/// published after the change must arrive, and then once more live within 5 s.
async fn streams_survive(change: impl FnOnce(&Cluster, &[String], &mut dyn FnMut())) {
    let cluster = Cluster::start(3, 1);
    let a = Herald::start(Some(&cluster.url()), &[]);
    let b = Herald::start(Some(&cluster.url()), &[]);
    let (mut users, other) = pick_users(&cluster);
    users.push(other);
    let mut streams = Vec::new();
    for user in &users {
        streams.push(a.events(&session_token(user, "on-a"), "").await);
        streams.push(b.events(&session_token(user, "on-b"), "").await);
    }
    let stream_users: Vec<&String> = users.iter().flat_map(|u| [u, u]).collect();
    // ids by user → ids by stream
    let per_stream = |ids: Vec<String>| {
        stream_users
            .iter()
            .map(|u| ids[users.iter().position(|x| x == *u).unwrap()].clone())
            .collect::<Vec<String>>()
    };
    let before = per_stream(publish_all(&a, &users, "before").await);
    for (sse, id) in streams.iter_mut().zip(&before) {
        receives(sse, id, WAIT, "before the change").await;
    }
    let moving = &users[..users.len() - 1];
    let mut during = Vec::new();
    tokio::task::block_in_place(|| {
        let rt = tokio::runtime::Handle::current();
        let mut publish = || during = per_stream(rt.block_on(publish_all(&b, &users, "during")));
        change(&cluster, moving, &mut publish);
    });
    let wait = Duration::from_secs(20);
    for (i, id) in during.iter().enumerate() {
        let what = format!(
            "stream {i} of {}, published during the change",
            stream_users[i]
        );
        receives(&mut streams[i], id, wait, &what).await;
    }
    let after = per_stream(publish_all(&a, &users, "after").await);
    for (i, id) in after.iter().enumerate() {
        let what = format!("stream {i} of {} after the change", stream_users[i]);
        receives(&mut streams[i], id, wait, &what).await;
    }
    // and live delivery (not only the catch-up) works on the new owner
    let live = per_stream(publish_all(&b, &users, "live").await);
    for (i, id) in live.iter().enumerate() {
        let what = format!("stream {i} of {}, live", stream_users[i]);
        receives(&mut streams[i], id, Duration::from_secs(5), &what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_receiving_after_a_planned_failover() {
    streams_survive(|cluster, users, publish| {
        // published while the primary pauses writes for the hand-over
        let new = cluster.fail_over(&items(&users[0]), None, publish);
        assert_eq!(cluster.primary_of(&items(&users[0])), new);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_receiving_after_a_forced_failover() {
    // (nothing published during it: a forced failover may lose unreplicated writes)
    streams_survive(|cluster, users, _| {
        cluster.wait_for_replication(&items(&users[0]));
        cluster.fail_over(&items(&users[0]), Some("force"), &mut || {});
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_receiving_after_a_takeover() {
    streams_survive(|cluster, users, _| {
        cluster.wait_for_replication(&items(&users[0]));
        cluster.fail_over(&items(&users[0]), Some("takeover"), &mut || {});
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_receiving_after_their_slot_moves() {
    streams_survive(|cluster, users, publish| {
        let from = cluster.primary_of(&items(&users[0]));
        let to = *cluster.primaries().iter().find(|p| **p != from).unwrap();
        // every user on the shard moves, one slot after another; while the first slot's keys
        // are on the new owner but the old one still holds the subscriptions, a publish
        // commits there (by ASK) and reaches the streams by catch-up once the slot is handed over
        cluster.migrate_slot(&items(&users[0]), to, publish);
        for user in &users[1..] {
            cluster.migrate_slot(&items(user), to, &mut || {});
        }
    })
    .await;
}

/// While a user's primary is down, a stream of a session opened on another node is refused
/// (503) and must not end the session's live stream: the announcement that replaces it goes
/// only once the new stream opens. Before, an opening refused at its deadline still announced
/// once the replica took over, and the user was left with no stream. The live stream's entry,
/// whose deletion can fail while its shard is away, is deleted again: presence then names the
/// new stream alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_opening_replaces_no_stream() {
    let mut cluster = Cluster::start(3, 1);
    let a = Herald::start(Some(&cluster.url()), &[]);
    let b = Herald::start(Some(&cluster.url()), &[]);
    let token = session_token("alice", "s");
    let mut first = a.events(&token, "").await;
    cluster.wait_for_replication("herald:{u:alice}:items");
    cluster.kill_primary_of("herald:{u:alice}:items");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    let mut second = loop {
        let opening = b.http.get(b.url("/events")).bearer_auth(&token).send();
        let r = tokio::time::timeout(WAIT, opening)
            .await
            .expect("an answer")
            .unwrap();
        if r.status() == 200 {
            break Sse::new(r);
        }
        assert_eq!(r.status(), 503, "{}", r.text().await.unwrap_or_default());
        refused += 1;
        if let Some(ev) = first.try_next(Duration::from_millis(300)).await {
            panic!("the live stream got {ev:?} while its replacement was refused");
        }
        assert!(Instant::now() < deadline, "never opened after the failover");
    };
    assert!(
        refused > 0,
        "the first opening after the kill was not refused"
    );
    assert_eq!(second.next_event().await.event, "ready");
    assert_eq!(first.next_event().await.event, "replaced");
    let service = service_token();
    wait_for("presence to name the new stream alone", async || {
        let r = b.http.get(b.url("/presence/alice")).bearer_auth(&service);
        let (status, body) = send(r).await;
        status == 200 && body["sessions"].as_array().is_some_and(|s| s.len() == 1)
    })
    .await;
}

/// Every primary closes the broker's connection to it (`CLIENT KILL TYPE pubsub`): the node
/// subscribes every channel again and the streams catch up: the notification published
/// meanwhile arrives, and later ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_receiving_after_the_primaries_close_the_subscription_connections() {
    let cluster = Cluster::start(3, 0);
    let a = Herald::start(Some(&cluster.url()), &[]);
    let users: Vec<String> = (0..12).map(|i| format!("killed-{i}")).collect();
    let mut streams = Vec::new();
    for user in &users {
        streams.push(a.events(&user_token(user), "").await);
    }
    for primary in cluster.primaries() {
        Cluster::cli(primary, &["client", "kill", "type", "pubsub"]);
    }
    for round in ["meanwhile", "live"] {
        let ids = publish_all(&a, &users, round).await;
        for (i, sse) in streams.iter_mut().enumerate() {
            let what = format!("stream of {}, {round}", users[i]);
            receives(sse, &ids[i], Duration::from_secs(10), &what).await;
        }
    }
}
