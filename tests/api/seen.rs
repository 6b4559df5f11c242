//! Seen apart from read: `seen_at`, `unseen_count` beside every `unread_count`, the `seen`
//! event, the `unseen` filter and `GET /notifications/counts` (per category, with the
//! position it reflects).

use serde_json::json;

use crate::both_modes;
use crate::common::*;

both_modes!(
    seen_is_its_own_state,
    counts_per_category,
    seen_input_is_checked
);

async fn seen_is_its_own_state(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    assert_eq!(sse.ready.as_ref().unwrap().json()["unseen_count"], 0);
    let mut published = Vec::new();
    for i in 0..3 {
        published.push(h.notify("alice", &format!("n{i}")).await);
        // the notification event carries the tray's counts beside the notification's fields
        let n = sse.expect("notification").await.json();
        assert_eq!(
            (n["title"].clone(), n["seen_at"].clone()),
            (json!(format!("n{i}")), json!(null))
        );
        assert_eq!(
            (n["unread_count"].as_u64(), n["unseen_count"].as_u64()),
            (Some(i + 1), Some(i + 1))
        );
    }
    // seen: not read
    let (status, n) = h
        .patch(
            &format!("/notifications/{}", published[0]),
            &token,
            json!({"seen": true}),
        )
        .await;
    assert_eq!(status, 200, "{n}");
    assert!(n["seen_at"].is_string() && n["read_at"].is_null(), "{n}");
    let ev = sse.expect("seen").await;
    assert_eq!(
        ev.json(),
        json!({"ids": [published[0]], "unread_count": 3, "unseen_count": 2})
    );
    // reading sees too
    h.patch(
        &format!("/notifications/{}", published[1]),
        &token,
        json!({"read": true}),
    )
    .await;
    let ev = sse.expect("read").await;
    assert_eq!(
        ev.json(),
        json!({"ids": [published[1]], "unread_count": 2, "unseen_count": 1})
    );
    let page = h.list(&token, "").await;
    assert_eq!(
        (page["unread_count"].as_u64(), page["unseen_count"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(page["notifications"][1]["seen_at"].is_string());
    assert_eq!(
        ids(&h.list(&token, "?unseen=true").await),
        [published[2].clone()]
    );
    // bulk: all unseen ones; the event names only those that changed
    let (_, body) = h
        .patch("/notifications", &token, json!({"all": true, "seen": true}))
        .await;
    assert_eq!(body, json!({"updated": 1}));
    let ev = sse.expect("seen").await;
    assert_eq!(
        ev.json(),
        json!({"ids": [published[2]], "unread_count": 2, "unseen_count": 0})
    );
    let (_, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"ids": [published[0]], "seen": true}),
        )
        .await;
    assert_eq!(body, json!({"updated": 0}));
    // a stream resumed from the start replays seen like every other change
    let (epoch, _) = ev.position();
    let mut replay = h.events(&token, &format!("?last_event_id={epoch}.3")).await;
    let kinds: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(replay.next_event().await.event);
        }
        v
    };
    assert_eq!(kinds, ["seen", "read", "seen"]);
}

async fn counts_per_category(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let (status, empty) = h.get("/notifications/counts", &token).await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(
        (empty["unread"].clone(), empty["unseen"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(empty["by_category"], json!({}));
    assert!(empty["position"].as_str().unwrap().ends_with(".0"));
    for (title, category) in [
        ("a", Some("builds")),
        ("b", Some("builds")),
        ("c", Some("chat")),
        ("d", None),
    ] {
        let mut n = json!({"title": title});
        if let Some(c) = category {
            n["category"] = json!(c);
        }
        let (status, _) = h
            .publish(json!({"users": ["alice"], "notification": n}))
            .await;
        assert_eq!(status, 202);
    }
    let first = ids(&h.list(&token, "").await).pop().unwrap();
    h.patch(
        &format!("/notifications/{first}"),
        &token,
        json!({"read": true}),
    )
    .await;
    let (_, counts) = h.get("/notifications/counts", &token).await;
    assert_eq!(
        counts,
        json!({
            "unread": 3, "unseen": 3,
            "by_category": {"builds": {"unread": 1, "unseen": 1}, "chat": {"unread": 1, "unseen": 1}},
            "position": counts["position"].clone(),
        })
    );
    // the position is the head: a stream from it has nothing to replay yet
    let position = counts["position"].as_str().unwrap();
    assert!(position.ends_with(".5"), "{position}");
    let (_, other) = h.get("/notifications/counts", &user_token("bob")).await;
    assert_eq!(other["unread"], 0);
}

async fn seen_input_is_checked(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let id = h.notify("alice", "x").await;
    for body in [
        json!({"seen": false}),
        json!({"seen": true, "read": true}),
        json!({"seen": "yes"}),
    ] {
        let (status, err) = h
            .patch(&format!("/notifications/{id}"), &token, body.clone())
            .await;
        assert_eq!(status, 400, "{body}: {err}");
    }
    let (status, _) = h
        .patch(
            &format!("/notifications/{id}"),
            &user_token("bob"),
            json!({"seen": true}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = h.get("/notifications?unseen=maybe", &token).await;
    assert_eq!(status, 400);
    let (status, _) = h.get("/notifications/counts", &service_token()).await;
    assert_eq!(status, 401);
    // a publisher can't set seen_at
    let (status, err) = h
        .publish(json!({"users": ["alice"], "notification": {"title": "t", "seen_at": null}}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("seen_at"));
}
