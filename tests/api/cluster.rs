//! Redis Cluster: nodes share a cluster as they share one Redis (users spread over the slots
//! of every primary), and an open stream keeps receiving after its user's primary fails over.
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
    let mut by_cookie = a
        .events_with(a.http.get(a.url("/events")).header("cookie", &cookie))
        .await;
    assert_eq!(by_cookie.next_event().await.event, "ready");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_receiving_after_a_primary_fails_over() {
    let mut cluster = Cluster::start(3, 1);
    let h = Herald::start(Some(&cluster.url()), &[]);
    let mut sse = h.events(&user_token("alice"), "").await;
    h.notify("alice", "before").await;
    assert_eq!(sse.next_event().await.event, "notification");
    // the write has reached the replica, so the failover loses nothing
    cluster.wait_for_replication("herald:{u:alice}:items");
    cluster.kill_primary_of("herald:{u:alice}:items");
    // once the replica is promoted, publishing works again and the open stream gets it
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let (status, body) = h
            .publish(json!({"users": ["alice"], "notification": {"title": "after"}}))
            .await;
        if status == 202 {
            break body["ids"]["alice"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "publishing never recovered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ev = sse
        .try_next(Duration::from_secs(15))
        .await
        .expect("the stream receives after the failover");
    assert_eq!(
        (ev.event.as_str(), ev.json()["id"].clone()),
        ("notification", json!(id))
    );
    // and live delivery (not only the catch-up) works on the new primary
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = h.notify("alice", "later").await;
    let ev = sse
        .try_next(Duration::from_secs(5))
        .await
        .expect("live delivery after the failover");
    assert_eq!(ev.json()["id"], later.as_str());
}
