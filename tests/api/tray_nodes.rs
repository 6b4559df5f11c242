//! v2 tray changes cross nodes (one Redis or one Redis Cluster): a collapse, an archive, a
//! snooze and an action made through one node reach the user's stream on the other, with the
//! counts; an action taken through one node is taken for every node.

use serde_json::{json, Value};

use crate::common::*;

mod redis {
    use crate::common::Mode;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v2_changes_reach_the_other_node() {
        super::v2_changes_reach_the_other_node(Mode::Redis).await
    }
}

mod cluster {
    use crate::common::Mode;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v2_changes_reach_the_other_node() {
        super::v2_changes_reach_the_other_node(Mode::Cluster).await
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
