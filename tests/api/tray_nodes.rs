//! v2 tray changes cross nodes (one Redis or one Redis Cluster): a collapse, an archive, a
//! snooze and an action made through one node reach the user's stream on the other, with the
//! counts; an action taken through one node is taken for every node; a `seen` mark, the
//! counts and the preferences read the same on both; a stream ended by its node's SIGTERM
//! resumes on the other with nothing lost or repeated.

use serde_json::{json, Value};

use crate::common::*;

mod redis {
    use crate::common::Mode;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v2_changes_reach_the_other_node() {
        super::v2_changes_reach_the_other_node(Mode::Redis).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seen_counts_and_preferences_agree_across_nodes() {
        super::seen_counts_and_preferences_agree_across_nodes(Mode::Redis).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_cut_by_sigterm_resumes_on_the_other_node_without_loss() {
        super::a_stream_cut_by_sigterm_resumes_on_the_other_node_without_loss(Mode::Redis).await
    }
}

mod cluster {
    use crate::common::Mode;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v2_changes_reach_the_other_node() {
        super::v2_changes_reach_the_other_node(Mode::Cluster).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seen_counts_and_preferences_agree_across_nodes() {
        super::seen_counts_and_preferences_agree_across_nodes(Mode::Cluster).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_cut_by_sigterm_resumes_on_the_other_node_without_loss() {
        super::a_stream_cut_by_sigterm_resumes_on_the_other_node_without_loss(Mode::Cluster).await
    }
}

/// The next event on `sse`: its name and data.
async fn next(sse: &mut Sse) -> (String, Value) {
    let ev = sse.next_event().await;
    (ev.event.clone(), ev.json())
}

async fn v2_changes_reach_the_other_node(mode: Mode) {
    let engine = Engine::start(mode);
    let up = EchoUpstream::start().await;
    let a = Herald::start(Some(&engine.url), &["--upstream", &up.url]);
    let b = Herald::start(Some(&engine.url), &["--upstream", &up.url]);
    let token = user_token("alice");
    let mut on_b = b.events(&token, "").await;
    // a collapse published through a: one notification event on b per publish
    let mut last: Option<String> = None;
    for i in 1..=2u64 {
        let (status, body) = a
            .publish(json!({"users": ["alice"], "notification": {
                "title": format!("build {i}"), "collapse_key": "build",
                "actions": [{"id": "ok", "label": "OK", "path": "/api/record/200"}]}}))
            .await;
        assert_eq!(status, 202, "{body}");
        let (event, n) = next(&mut on_b).await;
        assert_eq!(event, "notification", "{n}");
        assert_eq!(
            (n["id"].clone(), n["count"].clone(), n["replaces"].clone()),
            (body["ids"]["alice"].clone(), json!(i), json!(last))
        );
        last = n["id"].as_str().map(str::to_owned);
    }
    let id = last.unwrap();
    let path = format!("/notifications/{id}");
    // archive, unarchive, snooze, un-snooze through a
    for (change, event, counts) in [
        (json!({"archived": true}), "archived", (0, 0)),
        (json!({"archived": false}), "unarchived", (1, 1)),
        (json!({"snoozed_until": in_secs(3600)}), "updated", (0, 0)),
        (json!({"snoozed_until": null}), "notification", (1, 1)),
    ] {
        let (status, body) = a.patch(&path, &token, change.clone()).await;
        assert_eq!(status, 200, "{change}: {body}");
        let (got, data) = next(&mut on_b).await;
        assert_eq!(got, event, "{change}: {data}");
        let named = data["ids"].get(0).unwrap_or(&data["id"]);
        assert_eq!(named.as_str(), Some(id.as_str()), "{change}: {data}");
        assert_eq!(
            counts_of(&data),
            (Some(counts.0), Some(counts.1)),
            "{change}: {data}"
        );
    }
    // an action through a: updated on b; taking it again through b conflicts
    let take = |node: &Herald| {
        node.http
            .post(node.url(&format!("{path}/actions/ok")))
            .bearer_auth(&token)
    };
    let (status, n) = send(take(&a)).await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(n["action"]["status"], 200, "{n}");
    let (event, data) = next(&mut on_b).await;
    assert_eq!(event, "updated", "{data}");
    assert_eq!(data["action"], n["action"]);
    assert_eq!(counts_of(&data), (Some(0), Some(0)));
    let (status, err) = send(take(&b)).await;
    assert_error(status, &err, 409, "conflict");
    assert_eq!(up.recorded().len(), 1);
}

async fn seen_counts_and_preferences_agree_across_nodes(mode: Mode) {
    let engine = Engine::start(mode);
    let a = Herald::start(Some(&engine.url), &[]);
    let b = Herald::start(Some(&engine.url), &[]);
    let token = user_token("alice");
    let mut on_b = b.events(&token, "").await;
    let (status, body) = a
        .publish(json!({"users": ["alice"], "notification": {"title": "t", "category": "billing"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["ids"]["alice"].as_str().unwrap().to_owned();
    assert_eq!(next(&mut on_b).await.0, "notification");
    // seen through a: the event on b, the counts on b
    let (status, n) = a
        .patch(
            &format!("/notifications/{id}"),
            &token,
            json!({"seen": true}),
        )
        .await;
    assert_eq!(status, 200, "{n}");
    let seen = on_b.next_event().await;
    let data = seen.json();
    assert_eq!(seen.event, "seen", "{data}");
    assert_eq!(data["ids"], json!([id]));
    assert_eq!(counts_of(&data), (Some(1), Some(0)), "{data}");
    let (status, counts) = b.get("/notifications/counts", &token).await;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(
        (counts["unread"].clone(), counts["unseen"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        counts["by_category"],
        json!({"billing": {"unread": 1, "unseen": 0}})
    );
    assert_eq!(counts["position"], json!(seen.id), "b's counts at b's head");
    // a category muted through a is read back, and obeyed, on b
    let (status, prefs) = send(
        a.http
            .put(a.url("/preferences/categories/billing"))
            .bearer_auth(&token)
            .json(&json!({"muted": true})),
    )
    .await;
    assert_eq!(status, 200, "{prefs}");
    let (status, prefs) = b.get("/preferences", &token).await;
    assert_eq!(status, 200, "{prefs}");
    assert_eq!(prefs, json!({"categories": {"billing": {"muted": true}}}));
    let (status, body) = b
        .publish(
            json!({"users": ["alice"], "notification": {"title": "muted", "category": "billing"}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["suppressed"], 1, "{body}");
    let (status, page) = a.get("/notifications", &token).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(titles(&page), ["t"]);
}

/// Node a ends by SIGTERM while notifications are being published through b: the stream a
/// held ends, and resumed on b from the last id it read, it gets every notification once, in
/// order.
async fn a_stream_cut_by_sigterm_resumes_on_the_other_node_without_loss(mode: Mode) {
    let engine = Engine::start(mode);
    let mut a = Herald::start(Some(&engine.url), &["--drain-timeout", "2s"]);
    let b = Herald::start(Some(&engine.url), &[]);
    let token = session_token("alice", "s1");
    let mut on_a = a.events(&token, "").await;
    let publisher = b.publishing("alice", 120, std::time::Duration::from_millis(10));
    // let some arrive on a, then stop a
    let mut got = Vec::new();
    let mut last_id = None;
    while got.len() < 20 {
        let ev = on_a.next_event().await;
        assert_eq!(ev.event, "notification", "{ev:?}");
        got.push(ev.json()["id"].as_str().unwrap().to_owned());
        last_id = ev.id;
    }
    let status = a.terminate().expect("a exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    while let Some(ev) = on_a.try_next(std::time::Duration::from_secs(3)).await {
        if ev.event == "notification" {
            got.push(ev.json()["id"].as_str().unwrap().to_owned());
            last_id = ev.id;
        }
    }
    let published = publisher.await.unwrap();
    println!("{} of {} read on a", got.len(), published.len());
    let req = b
        .http
        .get(b.url("/events"))
        .bearer_auth(&token)
        .header("Last-Event-ID", last_id.unwrap());
    let mut on_b = b.events_with(req).await;
    assert_eq!(on_b.next_event().await.event, "ready");
    while got.len() < published.len() {
        let ev = on_b.next_event().await;
        assert_eq!(ev.event, "notification", "{ev:?}");
        got.push(ev.json()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, published, "every notification once, in order");
}
