//! The tray: listing order, cursor, unread filter, single and bulk writes, other users' ids,
//! and bad input.

use serde_json::json;

use crate::both_modes;
use crate::common::*;

both_modes!(
    lists_newest_first_with_cursor,
    unread_filter_and_count,
    patch_one_read_unread_delete,
    other_users_ids_are_not_found,
    bulk_by_ids_and_all,
    bad_tray_requests_are_400,
    tray_keeps_at_most_max_per_user,
    page_then_stream_from_its_position,
    writes_answer_where_they_left_the_log,
    ids_are_taken_in_any_letter_case,
);

/// A notification id in a path or a bulk write is taken in any letter case, as `before=` is
/// (Crockford base32), and answered and streamed as Herald writes it.
async fn ids_are_taken_in_any_letter_case(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let a = h.notify("alice", "a").await;
    let b = h.notify("alice", "b").await;
    let mut sse = h.events(&token, "").await;
    let (status, n) = h
        .patch(
            &format!("/notifications/{}", a.to_lowercase()),
            &token,
            json!({"read": true}),
        )
        .await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(n["id"], a.as_str());
    let read = sse.expect("read").await.json();
    assert_eq!(read["ids"], json!([a]));
    let (status, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"ids": [b.to_lowercase(), b], "read": true}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 1})));
    assert_eq!(sse.expect("read").await.json()["ids"], json!([b]));
    let (_, published) = h
        .publish(json!({"users": ["alice"], "notification": {"title": "c",
            "actions": [{"id": "ok", "label": "OK"}]}}))
        .await;
    let c = published["ids"]["alice"].as_str().unwrap().to_owned();
    let (status, n) = send(
        h.http
            .post(h.url(&format!("/notifications/{}/actions/ok", c.to_lowercase())))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(
        (n["id"].as_str(), &n["action"]["id"]),
        (Some(c.as_str()), &json!("ok"))
    );
}

/// A tray write's answer says where it left the user's change log (`X-Herald-Position`): the
/// id of the stream event that shows it; for a write that changed nothing, where the log
/// already was; for one refused, nothing.
async fn writes_answer_where_they_left_the_log(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let a = h.notify("alice", "a").await;
    let b = h.notify("alice", "b").await;
    sse.expect("notification").await;
    sse.expect("notification").await;
    let patch = async |path: &str, token: &str, body: serde_json::Value| {
        let answer = (h.http.patch(h.url(path)).bearer_auth(token).json(&body))
            .send()
            .await
            .unwrap();
        let position = answer.headers().get("x-herald-position");
        let position = position.map(|p| p.to_str().unwrap().to_owned());
        (answer.status().as_u16(), position)
    };
    let one = format!("/notifications/{a}");
    let mut last = None;
    for (path, body, event, status) in [
        (&one, json!({"read": true}), "read", 200),
        (&one, json!({"deleted": true}), "deleted", 204),
        (
            &"/notifications".into(),
            json!({"ids": [b], "seen": true}),
            "seen",
            200,
        ),
        (
            &"/notifications".into(),
            json!({"all": true, "read": true}),
            "read",
            200,
        ),
    ] {
        let (got, position) = patch(path, &token, body).await;
        assert_eq!(got, status, "{event}");
        last = sse.expect(event).await.id;
        assert!(last.is_some());
        assert_eq!(position, last, "{event}");
    }
    let (got, position) = patch("/notifications", &token, json!({"all": true, "read": true})).await;
    assert_eq!((got, position), (200, last), "nothing changed");
    let read_b = json!({"read": true});
    let (got, position) = patch(&format!("/notifications/{b}"), &user_token("bob"), read_b).await;
    assert_eq!((got, position), (404, None), "another user's id");
}

/// The page's `position` resumes a stream exactly after it: while publishes run, every
/// notification is either on the page or on the stream, never both, never neither.
async fn page_then_stream_from_its_position(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let empty = h.list(&token, "").await;
    let position = empty["position"]
        .as_str()
        .expect("a position on an empty tray");
    assert!(position.ends_with(".0"), "{position}");
    // a stream from an empty tray's position gets the first publish
    let mut first = h
        .events(&token, &format!("?last_event_id={position}"))
        .await;
    let id = h.notify("alice", "first").await;
    assert_eq!(first.expect("notification").await.json()["id"], id);
    drop(first);
    let publisher = h.publishing("alice", 30, std::time::Duration::ZERO);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let page = h.list(&token, "?limit=100").await;
    let position = page["position"].as_str().unwrap().to_owned();
    let on_page = ids(&page);
    let mut sse = h
        .events(&token, &format!("?last_event_id={position}"))
        .await;
    publisher.await.unwrap();
    let mut streamed = Vec::new();
    while on_page.len() + streamed.len() < 31 {
        let ev = sse.expect("notification").await;
        streamed.push(ev.json()["id"].as_str().unwrap().to_owned());
    }
    let mut all: Vec<String> = on_page.into_iter().chain(streamed).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 31, "a notification twice or missing");
    assert!(sse
        .try_next(std::time::Duration::from_millis(300))
        .await
        .is_none());
}

async fn lists_newest_first_with_cursor(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let mut published = Vec::new();
    for i in 0..5 {
        published.push(h.notify("alice", &format!("n{i}")).await);
    }
    let token = user_token("alice");
    let page = h.list(&token, "?limit=2").await;
    let got = ids(&page);
    assert_eq!(got, vec![published[4].clone(), published[3].clone()]);
    assert_eq!(page["unread_count"], 5);
    assert_eq!(page["next"], published[3].as_str());
    let page = h
        .list(&token, &format!("?limit=2&before={}", published[3]))
        .await;
    let got = ids(&page);
    assert_eq!(got, vec![published[2].clone(), published[1].clone()]);
    // the cursor in any letter case (Crockford base32)
    let lower = published[1].to_lowercase();
    let page = h.list(&token, &format!("?limit=2&before={lower}")).await;
    assert_eq!(ids(&page).len(), 1);
    assert_eq!(page["next"], serde_json::Value::Null);
    let n = &h.list(&token, "").await["notifications"][0];
    assert_eq!(n["user"], "alice");
    assert_eq!(n["title"], "n4");
    assert!(n["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(n["read_at"], serde_json::Value::Null);
    // one user's data: no cache keeps it
    for query in ["", "?limit=0"] {
        let listing = h.http.get(h.url(&format!("/notifications{query}")));
        let r = send_raw(listing.bearer_auth(&token)).await;
        assert_eq!(r.headers()["cache-control"], "private, no-cache", "{query}");
    }
}

async fn unread_filter_and_count(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let a = h.notify("alice", "a").await;
    let b = h.notify("alice", "b").await;
    h.patch(
        &format!("/notifications/{b}"),
        &token,
        json!({"read": true}),
    )
    .await;
    let page = h.list(&token, "?unread=true").await;
    let got = ids(&page);
    assert_eq!(got, vec![a]);
    assert_eq!(page["unread_count"], 1);
    assert_eq!(h.tray_len("alice").await, 2);
}

async fn patch_one_read_unread_delete(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let id = h.notify("alice", "x").await;
    let path = format!("/notifications/{id}");
    let (status, n) = h.patch(&path, &token, json!({"read": true})).await;
    assert_eq!(status, 200);
    assert_eq!(n["id"], id.as_str());
    assert!(n["read_at"].as_str().is_some());
    let (status, n) = h.patch(&path, &token, json!({"read": false})).await;
    assert_eq!(status, 200);
    assert_eq!(n["read_at"], serde_json::Value::Null);
    let (status, _) = h.patch(&path, &token, json!({"deleted": true})).await;
    assert_eq!(status, 204);
    assert_eq!(h.list(&token, "").await["notifications"], json!([]));
    let (status, body) = h.patch(&path, &token, json!({"read": true})).await;
    assert_error(status, &body, 404, "not_found");
}

async fn other_users_ids_are_not_found(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let id = h.notify("alice", "private").await;
    let bob = user_token("bob");
    for body in [json!({"read": true}), json!({"deleted": true})] {
        let (status, err) = h.patch(&format!("/notifications/{id}"), &bob, body).await;
        assert_error(status, &err, 404, "not_found");
    }
    let (status, body) = h
        .patch(
            "/notifications",
            &bob,
            json!({"ids": [id], "deleted": true}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 0})));
    let page = h.list(&user_token("alice"), "").await;
    assert_eq!(page["notifications"][0]["id"], id.as_str());
    assert_eq!(page["unread_count"], 1);
}

async fn bulk_by_ids_and_all(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let a = h.notify("alice", "a").await;
    let b = h.notify("alice", "b").await;
    let c = h.notify("alice", "c").await;
    let (status, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"ids": [a, b, "nope"], "read": true}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 2})));
    let (_, body) = h
        .patch("/notifications", &token, json!({"all": true, "read": true}))
        .await;
    assert_eq!(body, json!({"updated": 1}));
    let (_, body) = h
        .patch("/notifications", &token, json!({"ids": [a], "read": false}))
        .await;
    assert_eq!(body, json!({"updated": 1}));
    let (_, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"ids": [a, c], "deleted": true}),
        )
        .await;
    assert_eq!(body, json!({"updated": 2}));
    let kinds: Vec<(String, serde_json::Value)> = {
        let mut v = Vec::new();
        for _ in 0..7 {
            let e = sse.next_event().await;
            v.push((e.event.clone(), e.json()));
        }
        v
    };
    assert_eq!(
        kinds[3],
        (
            "read".into(),
            json!({"ids": [a, b], "unread_count": 1, "unseen_count": 1})
        )
    );
    assert_eq!(
        kinds[4],
        (
            "read".into(),
            json!({"ids": [c], "unread_count": 0, "unseen_count": 0})
        )
    );
    assert_eq!(
        kinds[5],
        (
            "unread".into(),
            json!({"ids": [a], "unread_count": 1, "unseen_count": 0})
        )
    );
    assert_eq!(kinds[6].0, "deleted");
    assert_eq!(kinds[6].1["unread_count"], 0);
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page).len(), 1);
}

async fn bad_tray_requests_are_400(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let id = h.notify("alice", "x").await;
    // A value not UTF-8 once percent-decoded is refused, not read as a stand-in character.
    for query in [
        "?limit=0",
        "?limit=201",
        "?limit=ten",
        "?unread=maybe",
        "?category=%FF",
        "?category=a&%C3%28=1",
        // a cursor that is no notification id (it read as "from the newest")
        "?before=garbage",
        "?before=8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
    ] {
        let (status, body) = h.get(&format!("/notifications{query}"), &token).await;
        assert_error(status, &body, 400, "invalid_request");
    }
    // a parameter given empty counts as not given, the page size too; given twice, the
    // last one counts, an empty one too
    let twice = format!("?before={id}&before=&limit=1&limit=");
    for query in [
        "?limit=",
        "?limit=&before=&archived=&snoozed=&unread=&category=",
        &twice,
    ] {
        let (status, body) = h.get(&format!("/notifications{query}"), &token).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["notifications"][0]["id"], id.as_str(), "{query}");
    }
    let path = format!("/notifications/{id}");
    for body in [
        json!({}),
        json!({"read": "yes"}),
        json!({"deleted": false}),
        json!({"read": true, "deleted": true}),
        json!([1]),
        json!({"read": true, "extra": 1}),
    ] {
        let (status, err) = h.patch(&path, &token, body.clone()).await;
        assert_error(status, &err, 400, "invalid_request");
    }
    let (status, err) = send(
        h.http
            .patch(h.url(&path))
            .bearer_auth(&token)
            .body("{not json"),
    )
    .await;
    assert_error(status, &err, 400, "invalid_request");
    // a value the message quotes is cut short, not sent back whole
    let (status, err) = h
        .patch(&path, &token, json!({"read": "x".repeat(100_000)}))
        .await;
    assert_error(status, &err, 400, "invalid_request");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.len() < 300 && message.contains("xxx…"), "{message}");
    for body in [
        json!({"read": true}),
        json!({"ids": "x", "read": true}),
        json!({"ids": [1], "read": true}),
        json!({"all": false, "deleted": true}),
        json!({"ids": [id], "all": true, "read": true}),
        json!([[id], true]),
    ] {
        let (status, err) = h.patch("/notifications", &token, body.clone()).await;
        assert_error(status, &err, 400, "invalid_request");
    }
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, err) = send(
        h.http
            .patch(h.url("/notifications"))
            .bearer_auth(&token)
            .body(big),
    )
    .await;
    assert_error(status, &err, 413, "too_large");
    // nothing changed
    assert_eq!(h.list(&token, "").await["unread_count"], 1);
}

/// The oldest go past `--max-per-user`, and streams are told: a `deleted` naming them comes
/// right after the notification that pushed them out (also from a publish to several users,
/// which one Redis server announces in one batch message).
async fn tray_keeps_at_most_max_per_user(mode: Mode) {
    let h = Setup::new(mode, &["--max-per-user", "3"]);
    let mut sse = h.events(&user_token("alice"), "").await;
    let mut published = Vec::new();
    for i in 0..5 {
        published.push(h.notify("alice", &format!("n{i}")).await);
    }
    for (i, id) in published.iter().enumerate() {
        let ev = sse.next_event().await;
        assert_eq!(
            (ev.event.as_str(), ev.json()["id"].clone()),
            ("notification", json!(id))
        );
        if i >= 3 {
            let ev = sse.next_event().await;
            assert_eq!(ev.event, "deleted", "{ev:?}");
            let want = json!({"ids": [published[i - 3]], "unread_count": 3, "unseen_count": 3});
            assert_eq!(ev.json(), want);
        }
    }
    let (status, body) = h
        .publish(json!({"users": ["alice", "bob"], "notification": {"title": "both"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(sse.next_event().await.json()["id"], body["ids"]["alice"]);
    let ev = sse.next_event().await;
    assert_eq!(ev.event, "deleted", "{ev:?}");
    assert_eq!(ev.json()["ids"], json!([published[2]]));
    let both = body["ids"]["alice"].as_str().unwrap().to_owned();
    let page = h.list(&user_token("alice"), "").await;
    let got = ids(&page);
    assert_eq!(got, vec![both, published[4].clone(), published[3].clone()]);
    assert_eq!(page["unread_count"], 3);
}
