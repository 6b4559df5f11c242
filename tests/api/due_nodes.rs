//! Due times across nodes sharing one Redis or one Redis Cluster: a snooze and a `deliver_at`
//! stored through one node wake, exactly once, on the node holding the user's stream after the
//! first has crashed; a delivery, an expiry and a woken snooze reach the streams on both
//! nodes, once each.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

mod redis {
    use crate::common::Mode;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn due_times_wake_on_the_surviving_node() {
        super::due_times_wake_on_the_surviving_node(Mode::Redis).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivery_and_expiry_reach_both_nodes_once() {
        super::delivery_and_expiry_reach_both_nodes_once(Mode::Redis).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_woken_snooze_reaches_both_nodes_once() {
        super::a_woken_snooze_reaches_both_nodes_once(Mode::Redis).await
    }
}

mod cluster {
    use crate::common::Mode;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn due_times_wake_on_the_surviving_node() {
        super::due_times_wake_on_the_surviving_node(Mode::Cluster).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivery_and_expiry_reach_both_nodes_once() {
        super::delivery_and_expiry_reach_both_nodes_once(Mode::Cluster).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_woken_snooze_reaches_both_nodes_once() {
        super::a_woken_snooze_reaches_both_nodes_once(Mode::Cluster).await
    }
}

async fn due_times_wake_on_the_surviving_node(mode: Mode) {
    let engine = Engine::start(mode);
    let mut a = Herald::start(Some(&engine.url), &[]);
    let b = Herald::start(Some(&engine.url), &[]);
    let token = user_token("alice");
    let mut on_b = b.events(&token, "").await;
    let snoozed = a.notify("alice", "snoozed").await;
    assert_eq!(on_b.next_event().await.json()["id"], snoozed.as_str());
    let (status, n) = a
        .patch(
            &format!("/notifications/{snoozed}"),
            &token,
            json!({"snoozed_until": in_secs(3)}),
        )
        .await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(on_b.next_event().await.event, "updated");
    let (status, body) = a
        .publish(json!({"users": ["alice"], "notification": {"title": "delivered", "deliver_at": in_secs(3)}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let delivered = body["ids"]["alice"].as_str().unwrap().to_owned();
    // the node that stored both crashes before they are due
    a.kill();
    let mut woke = Vec::new();
    for _ in 0..2 {
        let ev = on_b.next_event().await;
        assert_eq!(ev.event, "notification", "{ev:?}");
        woke.push(ev.json()["id"].as_str().unwrap().to_owned());
    }
    woke.sort();
    let mut want = vec![snoozed, delivered];
    want.sort();
    assert_eq!(woke, want);
    let more = on_b.try_next(Duration::from_secs(2)).await;
    assert!(more.is_none(), "once only: {more:?}");
    let page = b.list(&token, "").await;
    let mut listed = ids(&page);
    listed.sort();
    assert_eq!(listed, want);
    assert_eq!(counts_of(&page), (Some(2), Some(2)));
}

async fn delivery_and_expiry_reach_both_nodes_once(mode: Mode) {
    let engine = Engine::start(mode);
    let a = Herald::start(Some(&engine.url), &[]);
    let b = Herald::start(Some(&engine.url), &[]);
    let token = user_token("alice");
    // Bearer streams without a session: each stands alone, one on each node
    let mut streams = [a.events(&token, "").await, b.events(&token, "").await];
    let (status, body) = a
        .publish(json!({"users": ["alice"], "notification": {
            "title": "brief", "deliver_at": in_secs(2), "expires_at": in_secs(4)}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["ids"]["alice"].as_str().unwrap().to_owned();
    for sse in &mut streams {
        let ev = sse.next_event().await;
        assert_eq!(
            (ev.event.as_str(), ev.json()["id"].as_str()),
            ("notification", Some(id.as_str()))
        );
        let ev = sse.next_event().await;
        assert_eq!(
            (ev.event.as_str(), ev.json()),
            (
                "deleted",
                json!({"ids": [id], "reason": "expired", "unread_count": 0, "unseen_count": 0})
            )
        );
    }
    for sse in &mut streams {
        let more = sse.try_next(Duration::from_millis(1500)).await;
        assert!(more.is_none(), "once only: {more:?}");
    }
    for node in [&a, &b] {
        let page = node.list(&token, "?archived=include").await;
        assert!(ids(&page).is_empty(), "{page}");
    }
}

async fn a_woken_snooze_reaches_both_nodes_once(mode: Mode) {
    let engine = Engine::start(mode);
    let a = Herald::start(Some(&engine.url), &[]);
    let b = Herald::start(Some(&engine.url), &[]);
    let token = user_token("alice");
    let mut streams = [a.events(&token, "").await, b.events(&token, "").await];
    let id = a.notify("alice", "later").await;
    let (status, n) = b
        .patch(
            &format!("/notifications/{id}"),
            &token,
            json!({"snoozed_until": in_secs(2)}),
        )
        .await;
    assert_eq!(status, 200, "{n}");
    for sse in &mut streams {
        let kinds = [
            sse.next_event().await,
            sse.next_event().await,
            sse.next_event().await,
        ];
        let kinds: Vec<(String, Option<String>)> = kinds
            .iter()
            .map(|ev| {
                (
                    ev.event.clone(),
                    ev.json()["id"].as_str().map(str::to_owned),
                )
            })
            .collect();
        let named = Some(id.clone());
        assert_eq!(
            kinds,
            [
                ("notification".to_owned(), named.clone()),
                ("updated".to_owned(), named.clone()),
                ("notification".to_owned(), named),
            ]
        );
    }
    for sse in &mut streams {
        let more = sse.try_next(Duration::from_millis(1500)).await;
        assert!(more.is_none(), "once only: {more:?}");
    }
    assert_eq!(a.tray_ids("alice", "").await, [id.as_str()]);
}
