//! Preferences: a user mutes a category; publishes to them in it are suppressed (nothing
//! stored, nothing streamed, `suppressed` in the response) unless `critical`; bad input and
//! missing identity are refused.

use std::time::Duration;

use serde_json::json;

use crate::both_modes;
use crate::common::*;

both_modes!(
    muting_suppresses_all_but_critical,
    preference_input_is_checked
);

async fn put(
    h: &Herald,
    token: &str,
    category: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let path = format!("/preferences/categories/{category}");
    status_json(send_raw(h.http.put(h.url(&path)).bearer_auth(token).json(&body)).await).await
}

async fn muting_suppresses_all_but_critical(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let alice = user_token("alice");
    assert_eq!(
        h.get("/preferences", &alice).await,
        (200, json!({"categories": {}}))
    );
    let (status, body) = put(&h, &alice, "builds", json!({"muted": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"categories": {"builds": {"muted": true}}}));
    // muting before anything arrives in a category is fine; names are any text
    let (status, _) = put(&h, &alice, "r%C3%A9seau%20ops", json!({"muted": true})).await;
    assert_eq!(status, 200);
    let (_, prefs) = h.get("/preferences", &alice).await;
    assert_eq!(prefs["categories"]["réseau ops"]["muted"], true);
    let mut sse = h.events(&alice, "").await;
    let (status, body) = h
        .publish(json!({"users": ["alice", "bob"], "notification": {"title": "built", "category": "builds"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["count"].as_u64(), body["suppressed"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(body["ids"].get("alice").is_none() && body["ids"].get("bob").is_some());
    assert_eq!(h.tray_len("alice").await, 0);
    assert_eq!(h.tray_len("bob").await, 1);
    // critical goes through; other categories too; the stream carries only those
    let (_, body) = h
        .publish(json!({"users": ["alice"], "notification": {"title": "prod down", "category": "builds", "critical": true}}))
        .await;
    assert_eq!(body["suppressed"], 0);
    let ev = sse.expect("notification").await;
    assert_eq!(
        (ev.json()["title"].as_str(), ev.json()["critical"].as_bool()),
        (Some("prod down"), Some(true))
    );
    assert!(sse.try_next(Duration::from_millis(300)).await.is_none());
    // unmuted: delivered again
    let (_, body) = put(&h, &alice, "builds", json!({"muted": false})).await;
    assert_eq!(body["categories"]["builds"], json!({"muted": false}));
    h.publish(
        json!({"users": ["alice"], "notification": {"title": "built again", "category": "builds"}}),
    )
    .await;
    assert_eq!(
        sse.expect("notification").await.json()["title"],
        "built again"
    );
    // a notification without `critical` says false
    let page = h.list(&alice, "").await;
    assert_eq!(page["notifications"][0]["critical"], false);
}

async fn preference_input_is_checked(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let alice = user_token("alice");
    let long = "c".repeat(129);
    for (category, body) in [
        ("", json!({"muted": true})),
        (long.as_str(), json!({"muted": true})),
        ("builds", json!({"muted": "yes"})),
        ("builds", json!({})),
    ] {
        let (status, err) = put(&h, &alice, category, body.clone()).await;
        assert_eq!(status, 400, "{category:?} {body}: {err}");
        assert_eq!(err["error"]["code"], "invalid_request", "{err}");
    }
    let (_, err) = put(&h, &alice, "", json!({"muted": true})).await;
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("category"), "{err}");
    assert_eq!(
        h.get("/preferences", &alice).await.1,
        json!({"categories": {}})
    );
    // a publish's category follows the same rule, so every category can be muted
    for category in ["", long.as_str(), "a\nb"] {
        let (status, err) = h
            .publish(
                json!({"users": ["alice"], "notification": {"title": "t", "category": category}}),
            )
            .await;
        assert_names(status, &err, "notification.category");
    }
    assert_eq!(h.tray_len("alice").await, 0);
    // no identity, or a service token: 401
    let r = send_raw(h.http.get(h.url("/preferences"))).await;
    assert_eq!(r.status(), 401);
    let (status, _) = put(&h, &service_token(), "x", json!({"muted": true})).await;
    assert_eq!(status, 401);
    // a cookie write from another origin is refused
    let cookie = h.login("alice").await;
    let r = send_raw(
        h.http
            .put(h.url("/preferences/categories/x"))
            .header("cookie", &cookie)
            .header("origin", "https://evil.example")
            .json(&json!({"muted": true})),
    )
    .await;
    assert_eq!(r.status(), 403);
    // one user's preferences are theirs alone
    put(&h, &alice, "x", json!({"muted": true})).await;
    assert_eq!(
        h.get("/preferences", &user_token("bob")).await.1,
        json!({"categories": {}})
    );
    // at most 256 categories per user: a new one beyond is refused, a known one still changes
    let carol = user_token("carol");
    for i in 0..256 {
        let (status, _) = put(&h, &carol, &format!("c{i}"), json!({"muted": true})).await;
        assert_eq!(status, 200, "category {i}");
    }
    let (status, err) = put(&h, &carol, "one-more", json!({"muted": true})).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("256"),
        "{err}"
    );
    let (status, body) = put(&h, &carol, "c7", json!({"muted": false})).await;
    assert_eq!(
        (status, &body["categories"]["c7"]),
        (200, &json!({"muted": false}))
    );
}
