//! Archive: `{"archived": true|false}` one or bulk, the `archived` and `unarchived` events with
//! the counts of active notifications, the `archived=exclude|only|include` listings, and bulk
//! `all` changes that leave archived notifications alone.

use serde_json::{json, Value};

use crate::both_modes;
use crate::common::*;

both_modes!(
    archive_and_unarchive_one,
    bulk_archive_and_all_leave_archived_alone,
    all_unread_and_all_deleted_leave_archived_alone,
    archive_input_is_checked,
    archived_ones_count_toward_the_cap
);

/// `--max-per-user` counts archived notifications too, and drops the oldest first.
async fn archived_ones_count_toward_the_cap(mode: Mode) {
    let h = Setup::new(mode, &["--max-per-user", "3"]);
    let token = user_token("alice");
    let oldest = h.notify("alice", "oldest").await;
    let kept = h.notify("alice", "kept").await;
    let (status, _) = h
        .patch(
            &format!("/notifications/{oldest}"),
            &token,
            json!({"archived": true}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = h
        .patch(
            &format!("/notifications/{kept}"),
            &token,
            json!({"archived": true}),
        )
        .await;
    assert_eq!(status, 200);
    let newer = [h.notify("alice", "a").await, h.notify("alice", "b").await];
    let all = h.list(&token, "?archived=include").await;
    assert_eq!(
        ids(&all),
        [newer[1].clone(), newer[0].clone(), kept.clone()]
    );
    assert_eq!(ids(&h.list(&token, "?archived=only").await), [kept]);
    assert_eq!(all["unread_count"], 2);
}

/// An event's `ids`, sorted (a bulk change may name them in any order).
fn sorted_ids(data: &Value) -> Vec<String> {
    let mut ids: Vec<String> = data["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids: {data}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn archive_and_unarchive_one(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let a = h.notify("alice", "a").await;
    let b = h.notify("alice", "b").await;
    for _ in 0..2 {
        assert_eq!(sse.next_event().await.event, "notification");
    }
    let before = h.list(&token, "").await["position"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/notifications/{a}");
    let (status, archived) = h.patch(&path, &token, json!({"archived": true})).await;
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["id"], a.as_str());
    time_of(&archived["archived_at"]);
    assert!(archived["read_at"].is_null(), "{archived}");
    let ev = sse.next_event().await;
    assert_eq!(
        (ev.event.as_str(), ev.json()),
        (
            "archived",
            json!({"ids": [a], "unread_count": 1, "unseen_count": 1})
        )
    );
    // out of the default listing and the counts; the counts are the same whatever the filter
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page), [b.as_str()]);
    assert_eq!(counts_of(&page), (Some(1), Some(1)));
    let only = h.list(&token, "?archived=only").await;
    assert_eq!(ids(&only), [a.as_str()]);
    assert_eq!(counts_of(&only), (Some(1), Some(1)));
    assert_eq!(only["notifications"][0], archived);
    let both = h.list(&token, "?archived=include").await;
    assert_eq!(ids(&both), [b.clone(), a.clone()]);
    assert_eq!(counts_of(&both), (Some(1), Some(1)));
    let (_, counts) = h.get("/notifications/counts", &token).await;
    assert_eq!(
        (counts["unread"].clone(), counts["unseen"].clone()),
        (json!(1), json!(1))
    );
    // unarchived: back in the tray and the counts
    let (status, n) = h.patch(&path, &token, json!({"archived": false})).await;
    assert_eq!(status, 200, "{n}");
    assert!(n["archived_at"].is_null(), "{n}");
    let ev = sse.next_event().await;
    assert_eq!(
        (ev.event.as_str(), ev.json()),
        (
            "unarchived",
            json!({"ids": [a], "unread_count": 2, "unseen_count": 2})
        )
    );
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page), [b.clone(), a.clone()]);
    assert_eq!(counts_of(&page), (Some(2), Some(2)));
    assert!(ids(&h.list(&token, "?archived=only").await).is_empty());
    // both changes are replayed from the position before them
    let mut replay = h.events(&token, &format!("?last_event_id={before}")).await;
    let first = replay.next_event().await;
    let second = replay.next_event().await;
    assert_eq!(
        (first.event.as_str(), second.event.as_str()),
        ("archived", "unarchived")
    );
    assert_eq!(first.json()["ids"], json!([a]));
}

async fn bulk_archive_and_all_leave_archived_alone(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let a = h.notify("alice", "a").await;
    let b = h.notify("alice", "b").await;
    let c = h.notify("alice", "c").await;
    for _ in 0..3 {
        assert_eq!(sse.next_event().await.event, "notification");
    }
    let (status, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"ids": [a, b, "nope"], "archived": true}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 2})));
    let ev = sse.next_event().await;
    assert_eq!(ev.event, "archived", "{ev:?}");
    assert_eq!(sorted_ids(&ev.json()), sorted(vec![a.clone(), b.clone()]));
    assert_eq!(counts_of(&ev.json()), (Some(1), Some(1)));
    // archiving again changes nothing
    let (_, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"ids": [b], "archived": true}),
        )
        .await;
    assert_eq!(body, json!({"updated": 0}));
    // "all" reads the active ones only: the archived ones stay unread
    let (_, body) = h
        .patch("/notifications", &token, json!({"all": true, "read": true}))
        .await;
    assert_eq!(body, json!({"updated": 1}));
    let ev = sse.expect("read").await;
    assert_eq!(
        ev.json(),
        json!({"ids": [c], "unread_count": 0, "unseen_count": 0})
    );
    let only = h.list(&token, "?archived=only").await;
    assert_eq!(ids(&only), [b.clone(), a.clone()]);
    for n in only["notifications"].as_array().unwrap() {
        assert!(n["read_at"].is_null() && n["seen_at"].is_null(), "{n}");
    }
    // an archived notification is still read by its id; the counts (active only) stay
    let (status, n) = h
        .patch(
            &format!("/notifications/{a}"),
            &token,
            json!({"read": true}),
        )
        .await;
    assert_eq!(status, 200, "{n}");
    assert!(
        n["read_at"].is_string() && n["archived_at"].is_string(),
        "{n}"
    );
    let ev = sse.expect("read").await;
    assert_eq!(
        ev.json(),
        json!({"ids": [a], "unread_count": 0, "unseen_count": 0})
    );
    // unarchive both: b counts again, a (read, so seen) does not
    let (_, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"ids": [a, b], "archived": false}),
        )
        .await;
    assert_eq!(body, json!({"updated": 2}));
    let ev = sse.expect("unarchived").await;
    assert_eq!(sorted_ids(&ev.json()), sorted(vec![a.clone(), b.clone()]));
    assert_eq!(counts_of(&ev.json()), (Some(1), Some(1)));
    // archive all
    let (_, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"all": true, "archived": true}),
        )
        .await;
    assert_eq!(body, json!({"updated": 3}));
    let ev = sse.expect("archived").await;
    assert_eq!(
        sorted_ids(&ev.json()),
        sorted(vec![a.clone(), b.clone(), c.clone()])
    );
    assert_eq!(counts_of(&ev.json()), (Some(0), Some(0)));
    let page = h.list(&token, "").await;
    assert!(ids(&page).is_empty(), "{page}");
    assert_eq!(counts_of(&page), (Some(0), Some(0)));
    assert_eq!(ids(&h.list(&token, "?archived=include").await), [c, b, a]);
}

/// `"all": true` with `"read": false` or `"deleted": true` ("clear all") changes the active
/// notifications only: an archived one stays, read or not.
async fn all_unread_and_all_deleted_leave_archived_alone(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let a = h.notify("alice", "a").await;
    let b = h.notify("alice", "b").await;
    let c = h.notify("alice", "c").await;
    for _ in 0..3 {
        assert_eq!(sse.next_event().await.event, "notification");
    }
    let (_, body) = h
        .patch("/notifications", &token, json!({"all": true, "read": true}))
        .await;
    assert_eq!(body, json!({"updated": 3}));
    assert_eq!(sse.expect("read").await.json()["unread_count"], 0);
    let path = format!("/notifications/{a}");
    let (status, _) = h.patch(&path, &token, json!({"archived": true})).await;
    assert_eq!(status, 200);
    sse.expect("archived").await;
    let (status, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"all": true, "read": false}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 2})));
    let ev = sse.expect("unread").await;
    assert_eq!(sorted_ids(&ev.json()), sorted(vec![b.clone(), c.clone()]));
    assert_eq!(counts_of(&ev.json()), (Some(2), Some(0)));
    let (status, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"all": true, "deleted": true}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 2})));
    let ev = sse.expect("deleted").await;
    assert_eq!(sorted_ids(&ev.json()), sorted(vec![b, c]));
    assert_eq!(counts_of(&ev.json()), (Some(0), Some(0)));
    let page = h.list(&token, "?archived=include").await;
    assert_eq!(ids(&page), [a]);
    assert!(page["notifications"][0]["read_at"].is_string(), "{page}");
    // nothing left to change
    let (_, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"all": true, "deleted": true}),
        )
        .await;
    assert_eq!(body, json!({"updated": 0}));
}

async fn archive_input_is_checked(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let id = h.notify("alice", "x").await;
    let path = format!("/notifications/{id}");
    for body in [
        json!({"archived": "yes"}),
        json!({"archived": null}),
        json!({"archived": 1}),
    ] {
        let (status, err) = h.patch(&path, &token, body.clone()).await;
        assert_error(status, &err, 400, "invalid_request");
    }
    let (status, err) = h
        .patch(
            "/notifications",
            &token,
            json!({"ids": [id], "archived": "yes"}),
        )
        .await;
    assert_error(status, &err, 400, "invalid_request");
    for query in ["?archived=all", "?archived=yes", "?snoozed=maybe"] {
        let (status, err) = h.get(&format!("/notifications{query}"), &token).await;
        assert_error(status, &err, 400, "invalid_request");
    }
    // another user's notification
    let (status, err) = h
        .patch(&path, &user_token("bob"), json!({"archived": true}))
        .await;
    assert_error(status, &err, 404, "not_found");
    let (_, body) = h
        .patch(
            "/notifications",
            &user_token("bob"),
            json!({"ids": [id], "archived": true}),
        )
        .await;
    assert_eq!(body, json!({"updated": 0}));
    // nothing changed
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page), [id]);
    assert!(page["notifications"][0]["archived_at"].is_null());
}
