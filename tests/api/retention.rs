//! Retention: notifications older than `--retention` are deleted by the cleaner, and open
//! streams see the deletion.

use std::time::Duration;

use serde_json::json;

use crate::both_modes;
use crate::common::*;

both_modes!(
    old_notifications_are_purged,
    no_idempotency_key_can_stop_retention,
    a_late_delivery_ages_from_its_delivery,
);

/// The cleaner deletes what is older than the window and keeps what is newer: with a 4 s
/// window (a run every second), a notification published 2 s after the first is still in the
/// window when the first one goes, so the first `deleted` names the old one alone.
async fn old_notifications_are_purged(mode: Mode) {
    let h = Setup::new(mode, &["--retention", "4s"]);
    let mut sse = h.events(&user_token("alice"), "").await;
    let old = h.notify("alice", "old").await;
    assert_eq!(sse.next_event().await.event, "notification");
    // the age is the point of the test: no event can stand in for time passing
    tokio::time::sleep(Duration::from_secs(2)).await;
    let young = h.notify("alice", "young").await;
    assert_eq!(sse.next_event().await.json()["id"], young.as_str());
    let deleted = sse
        .try_next(Duration::from_secs(10))
        .await
        .expect("the cleaner deletes the old one");
    assert_eq!(deleted.event, "deleted");
    let counts = json!({"ids": [old], "unread_count": 1, "unseen_count": 1});
    assert_eq!(deleted.json(), counts);
    assert_eq!(h.tray_ids("alice", "").await, vec![young.clone()]);
    // and the young one goes once it is old in its turn
    let deleted = sse
        .try_next(Duration::from_secs(10))
        .await
        .expect("the cleaner deletes the young one later");
    let counts = json!({"ids": [young], "unread_count": 0, "unseen_count": 0});
    assert_eq!(deleted.json(), counts);
    let fresh = h.notify("alice", "fresh").await;
    assert_eq!(h.tray_ids("alice", "").await, vec![fresh]);
}

/// An idempotency key shaped like a tray key (`x}:order`) is stored under a hash, so the
/// cleaner never mistakes it for a tray: retention keeps working for everyone.
async fn no_idempotency_key_can_stop_retention(mode: Mode) {
    let h = Setup::new(mode, &["--retention", "1s"]);
    for key in ["x}:order", "}:order", "x}:seq", "*", "{u:ret-b}:seq"] {
        let (status, body) = h
            .publish(
                json!({"users": ["frank"], "notification": {"title": "p"}, "idempotency_key": key}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let mut sse = h.events(&user_token("ret-b"), "").await;
    let old = h.notify("ret-b", "old").await;
    assert_eq!(sse.next_event().await.event, "notification");
    let deleted = sse
        .try_next(Duration::from_secs(10))
        .await
        .expect("the cleaner still runs");
    assert_eq!(deleted.event, "deleted");
    assert_eq!(deleted.json()["ids"], json!([old]));
}

/// A notification delivered later (`deliver_at`) ages from its delivery: retention does not
/// purge it the moment it arrives, although it was published longer ago than the window.
async fn a_late_delivery_ages_from_its_delivery(mode: Mode) {
    let h = Setup::new(mode, &["--retention", "3s"]);
    let mut sse = h.events(&user_token("alice"), "").await;
    let notification = json!({"title": "later", "deliver_at": in_secs(5)});
    let (status, body) = h
        .publish(json!({"users": ["alice"], "notification": notification}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["ids"]["alice"].as_str().unwrap().to_owned();
    let ev = sse
        .try_next(Duration::from_secs(10))
        .await
        .expect("delivered");
    assert_eq!(ev.event, "notification", "{ev:?}");
    assert_eq!(ev.json()["id"], id.as_str());
    // published 5 s ago, past the 3 s window, but delivered just now: kept
    let early = sse.try_next(Duration::from_secs(2)).await;
    assert!(early.is_none(), "purged at its delivery: {early:?}");
    assert_eq!(h.tray_ids("alice", "").await, vec![id.clone()]);
    // and purged once it is older than the window counted from its delivery
    let ev = sse
        .try_next(Duration::from_secs(5))
        .await
        .expect("purged later");
    assert_eq!(ev.event, "deleted", "{ev:?}");
    assert_eq!(ev.json()["ids"], json!([id]));
}

/// With Redis, retention runs on one node at a time: the lock names one node and stays with it
/// round after round while it lives, a notification that ages out is deleted once (one
/// `deleted` on a stream of each node), and when the holder dies the other node takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleaner_runs_on_one_node_at_a_time() {
    let redis = Redis::start();
    let flags = |id: &'static str| ["--retention", "1s", "--node-id", id];
    let mut nodes = vec![
        (
            "node-a",
            Herald::start(Some(&redis.url()), &flags("node-a")),
        ),
        (
            "node-b",
            Herald::start(Some(&redis.url()), &flags("node-b")),
        ),
    ];
    let mut conn = redis.conn();
    let mut holder = move || -> Option<String> {
        ::redis::cmd("GET")
            .arg("herald:cleaner")
            .query(&mut conn)
            .unwrap()
    };
    let mut first = None;
    wait_for("no node took the cleaner lock", async || {
        first = holder();
        first.is_some()
    })
    .await;
    let first = first.unwrap();
    assert!(nodes.iter().any(|(id, _)| *id == first), "{first}");
    let mut streams = Vec::new();
    for (_, node) in &nodes {
        streams.push(node.events(&user_token("alice"), "").await);
    }
    // what each Redis client asks for, to see who scans for trays (that is, who cleans)
    let mut monitor = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "monitor"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(monitor.stdout.take().unwrap()));
    let reader = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let old = nodes[0].1.notify("alice", "old").await;
    // eight rounds and more (a round every 250 ms): the lock never changes hands, and each
    // stream gets the deletion once
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        assert_eq!(holder().as_deref(), Some(first.as_str()), "the lock moved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = monitor.kill();
    let _ = monitor.wait();
    let seen = reader.join().unwrap();
    // `<time> [0 127.0.0.1:<port>] "SCAN" ...`: one client scanned, round after round
    let scanners: std::collections::BTreeSet<&str> = seen
        .iter()
        .filter(|l| l.contains(r#"] "SCAN""#) || l.contains(r#"] "scan""#))
        .filter_map(|l| l.split(['[', ']']).nth(1))
        .collect();
    let rounds = seen
        .iter()
        .filter(|l| l.to_lowercase().contains(r#"] "scan""#))
        .count();
    assert!(rounds >= 4, "the cleaner ran {rounds} times in 2 s");
    assert_eq!(scanners.len(), 1, "clients that cleaned: {scanners:?}");
    for sse in &mut streams {
        assert_eq!(sse.next_event().await.json()["id"], old.as_str());
        let deleted = sse.next_event().await;
        assert_eq!(deleted.event, "deleted", "{}", sse.raw);
        assert_eq!(deleted.json()["ids"], json!([old]));
        assert!(
            sse.try_next(Duration::from_millis(300)).await.is_none(),
            "one deletion only: {}",
            sse.raw
        );
    }
    // the holder dies: the other node takes the lock and retention goes on
    let at = nodes.iter().position(|(id, _)| *id == first).unwrap();
    nodes[at].1.kill();
    let (other, node) = &nodes[1 - at];
    wait_for("the other node never took the lock over", async || {
        holder().as_deref() == Some(*other)
    })
    .await;
    let mut sse = node.events(&user_token("bob"), "").await;
    let later = node.notify("bob", "later").await;
    assert_eq!(sse.next_event().await.json()["id"], later.as_str());
    let deleted = sse
        .try_next(Duration::from_secs(10))
        .await
        .expect("the new holder deletes it");
    assert_eq!(deleted.json()["ids"], json!([later]));
}
