//! Collapse: a publish whose `collapse_key` matches an active, unread notification of the user
//! replaces it (`count` + 1, `replaces` the old id, one `notification` event, no `deleted`, the
//! unread count unchanged), also when publishes race; a read or archived one is not replaced.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_modes;
use crate::common::*;

both_modes!(
    same_key_replaces_the_active_unread_one,
    racing_publishes_collapse_into_one,
    read_or_archived_ones_are_not_replaced,
    one_active_again_is_replaced,
    a_held_one_collapses_when_it_is_delivered
);

/// Publish `title` with `key` to alice; her id in the answer.
async fn publish_keyed(h: &Herald, title: &str, key: &str) -> String {
    let (status, body) = h
        .publish(json!({"users": ["alice"], "notification": {"title": title, "collapse_key": key}}))
        .await;
    assert_eq!(status, 202, "{body}");
    body["ids"]["alice"].as_str().unwrap().to_owned()
}

/// PATCH alice's notification `id` with `body`: the status (200, or 204 for a delete).
async fn patch_alice(h: &Herald, id: &str, body: Value) -> u16 {
    let path = format!("/notifications/{id}");
    h.patch(&path, &user_token("alice"), body).await.0
}

/// Publish `title` with key `k` to alice and mark it read: its id.
async fn publish_read(h: &Herald, title: &str) -> String {
    let id = publish_keyed(h, title, "k").await;
    assert_eq!(patch_alice(h, &id, json!({"read": true})).await, 200);
    id
}

/// The notifications of a listing.
fn items(page: &Value) -> Vec<Value> {
    page["notifications"].as_array().unwrap().clone()
}

/// A notification published with `deliver_at` and a collapse key collapses when it is
/// delivered: it replaces the active unread one with its key then, and later publishes with
/// the key replace it. The unread count does not grow.
async fn a_held_one_collapses_when_it_is_delivered(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let start = sse.ready.as_ref().unwrap().id.clone().expect("an id");
    let first = publish_keyed(&h, "build 1", "q").await;
    assert_eq!(sse.next_event().await.json()["id"], first.as_str());
    let (status, body) = h
        .publish(json!({"users": ["alice"], "notification": {"title": "build 2", "collapse_key": "q", "deliver_at": in_secs(2)}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let held = body["ids"]["alice"].as_str().unwrap().to_owned();
    // held: nothing replaced yet
    assert_eq!(ids(&h.list(&token, "").await), [first.as_str()]);
    let ev = sse
        .try_next(Duration::from_secs(10))
        .await
        .expect("delivered");
    assert_eq!(ev.event, "notification", "{ev:?}");
    let n = ev.json();
    assert_eq!(
        (
            n["id"].as_str(),
            n["count"].as_u64(),
            n["replaces"].as_str()
        ),
        (Some(held.as_str()), Some(2), Some(first.as_str())),
        "{n}"
    );
    assert_eq!(counts_of(&n), (Some(1), Some(1)));
    let more = sse.try_next(Duration::from_millis(300)).await;
    assert!(more.is_none(), "no deleted for the replaced one: {more:?}");
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page), [held.as_str()]);
    assert_eq!(counts_of(&page), (Some(1), Some(1)));
    // delivered, it is the one the key names
    let third = publish_keyed(&h, "build 3", "q").await;
    let n = sse.next_event().await.json();
    assert_eq!(
        (n["count"].as_u64(), n["replaces"].as_str()),
        (Some(3), Some(held.as_str()))
    );
    // the replay says the same
    let mut replay = h.events(&token, &format!("?last_event_id={start}")).await;
    for (id, count) in [(&first, 1), (&held, 2), (&third, 3)] {
        let n = replay.next_event().await.json();
        assert_eq!(
            (n["id"].as_str(), n["count"].as_u64()),
            (Some(id.as_str()), Some(count))
        );
    }
}

async fn same_key_replaces_the_active_unread_one(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let start = sse
        .ready
        .as_ref()
        .unwrap()
        .id
        .clone()
        .expect("ready has an id");
    let mut published: Vec<String> = Vec::new();
    for i in 1..=3u64 {
        let id = publish_keyed(&h, &format!("build {i}"), "build-42").await;
        assert!(!published.contains(&id), "a new id each time");
        // one notification event per publish, nothing else (no deleted for the replaced id)
        let ev = sse.next_event().await;
        assert_eq!(ev.event, "notification", "{ev:?}");
        let n = ev.json();
        assert_eq!(n["id"], id.as_str());
        assert_eq!(n["count"], i, "{n}");
        assert_eq!(n["replaces"], json!(published.last()), "{n}");
        assert_eq!(n["collapse_key"], "build-42");
        assert_eq!(counts_of(&n), (Some(1), Some(1)));
        published.push(id);
    }
    let more = sse.try_next(Duration::from_millis(300)).await;
    assert!(more.is_none(), "{more:?}");
    // a stream resumed from before them replays the same three events, nothing else
    let mut replay = h.events(&token, &format!("?last_event_id={start}")).await;
    for (i, id) in published.iter().enumerate() {
        let ev = replay.next_event().await;
        assert_eq!(
            (ev.event.as_str(), ev.json()["id"].as_str()),
            ("notification", Some(id.as_str()))
        );
        assert_eq!(ev.json()["count"], i + 1);
    }
    let more = replay.try_next(Duration::from_millis(300)).await;
    assert!(more.is_none(), "{more:?}");
    let page = h.list(&token, "").await;
    let listed = items(&page);
    assert_eq!(listed.len(), 1, "{page}");
    assert_eq!(listed[0]["id"], published[2].as_str());
    assert_eq!(
        (listed[0]["count"].clone(), listed[0]["replaces"].clone()),
        (json!(3), json!(published[1]))
    );
    assert_eq!(listed[0]["title"], "build 3");
    assert_eq!(counts_of(&page), (Some(1), Some(1)));
    assert!(ids(&h.list(&token, "?archived=include").await).len() == 1);
    // the replaced ids are gone
    for old in &published[..2] {
        let (status, err) = h
            .patch(
                &format!("/notifications/{old}"),
                &token,
                json!({"read": true}),
            )
            .await;
        assert_error(status, &err, 404, "not_found");
    }
    // another key, no key, another user: separate
    let other = publish_keyed(&h, "deploy", "deploy-1").await;
    let plain = h.notify("alice", "plain").await;
    let (_, body) = h
        .publish(
            json!({"users": ["bob"], "notification": {"title": "b", "collapse_key": "build-42"}}),
        )
        .await;
    let bobs = h.list(&user_token("bob"), "").await;
    assert_eq!(
        ids(&bobs),
        [body["ids"]["bob"].as_str().unwrap().to_owned()]
    );
    assert_eq!(bobs["notifications"][0]["count"], 1);
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page), [plain, other, published[2].clone()]);
    assert_eq!(counts_of(&page), (Some(3), Some(3)));
}

async fn racing_publishes_collapse_into_one(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let keys: Vec<String> = (0..5).map(|i| format!("race-{i}")).collect();
    for key in &keys {
        let (first, second) =
            tokio::join!(publish_keyed(&h, "one", key), publish_keyed(&h, "two", key));
        assert_ne!(first, second);
        publish_keyed(&h, "three", key).await;
    }
    let page = h.list(&token, "?limit=200").await;
    let listed = items(&page);
    assert_eq!(listed.len(), keys.len(), "one item per key: {page}");
    for n in &listed {
        assert_eq!(n["count"], 3, "{n}");
        assert_eq!(n["title"], "three", "{n}");
        assert!(n["replaces"].is_string(), "{n}");
    }
    let mut listed_keys: Vec<String> = listed
        .iter()
        .map(|n| n["collapse_key"].as_str().unwrap().to_owned())
        .collect();
    listed_keys.sort();
    assert_eq!(listed_keys, keys);
    assert_eq!(counts_of(&page), (Some(5), Some(5)));
    let (_, counts) = h.get("/notifications/counts", &token).await;
    assert_eq!(counts["unread"], 5, "{counts}");
}

async fn read_or_archived_ones_are_not_replaced(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let first = publish_keyed(&h, "first", "k").await;
    let second = publish_keyed(&h, "second", "k").await;
    // read: the next publish with the key is a new notification
    h.patch(
        &format!("/notifications/{second}"),
        &token,
        json!({"read": true}),
    )
    .await;
    let third = publish_keyed(&h, "third", "k").await;
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page), [third.clone(), second.clone()]);
    let listed = items(&page);
    assert_eq!(
        (listed[0]["count"].clone(), listed[0]["replaces"].clone()),
        (json!(1), json!(null))
    );
    assert_eq!(
        (listed[1]["count"].clone(), listed[1]["replaces"].clone()),
        (json!(2), json!(first))
    );
    assert_eq!(counts_of(&page), (Some(1), Some(1)));
    // archived: not active, so not replaced either
    h.patch(
        &format!("/notifications/{third}"),
        &token,
        json!({"archived": true}),
    )
    .await;
    let fourth = publish_keyed(&h, "fourth", "k").await;
    let page = h.list(&token, "?archived=include").await;
    assert_eq!(ids(&page), [fourth.clone(), third, second]);
    assert_eq!(items(&page)[0]["count"], 1);
    assert_eq!(counts_of(&page), (Some(1), Some(1)));
    // the new one collapses the next publish again
    let fifth = publish_keyed(&h, "fifth", "k").await;
    let n = &items(&h.list(&token, "").await)[0];
    assert_eq!(
        (n["id"].as_str(), n["count"].as_u64()),
        (Some(fifth.as_str()), Some(2))
    );
    assert_eq!(n["replaces"], fourth.as_str());
}

/// Any active unread notification with the key is replaced, not only the last one published
/// with it: one archived (or read) while newer ones came and went, then made active and
/// unread again, is replaced by the next publish with its key.
async fn one_active_again_is_replaced(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let patch = async |id: &str, body: Value| assert_eq!(patch_alice(&h, id, body).await, 200);
    let first = publish_keyed(&h, "first", "k").await;
    patch(&first, json!({"archived": true})).await;
    let second = publish_keyed(&h, "second", "k").await;
    assert_eq!(items(&h.list(&token, "").await)[0]["count"], 1);
    assert_eq!(
        patch_alice(&h, &second, json!({"deleted": true})).await,
        204
    );
    patch(&first, json!({"archived": false})).await;
    let third = publish_keyed(&h, "third", "k").await;
    let page = h.list(&token, "?archived=include").await;
    assert_eq!(ids(&page), [third.as_str()]);
    assert_eq!(items(&page)[0]["count"], 2);
    assert_eq!(items(&page)[0]["replaces"], first.as_str());
    // read, a new one with the key, the read one unread again, the new one read: the next
    // publish replaces the one that is unread (the newest such, were there several)
    patch(&third, json!({"read": true})).await;
    let fourth = publish_keyed(&h, "fourth", "k").await;
    patch(&third, json!({"read": false})).await;
    patch(&fourth, json!({"read": true})).await;
    let fifth = publish_keyed(&h, "fifth", "k").await;
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page), [fifth, fourth]);
    assert_eq!(
        (
            items(&page)[0]["count"].clone(),
            items(&page)[0]["replaces"].clone()
        ),
        (json!(3), json!(third))
    );
    assert_eq!(counts_of(&page), (Some(1), Some(1)));
}

/// Redis: a deleted notification takes its collapse entry with it, so a publisher that uses
/// a new key for each notification does not grow the user's collapse hash for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_removes_the_collapse_entry() {
    let redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    let token = user_token("alice");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish_keyed(&h, &format!("n{i}"), &format!("key-{i}")).await);
    }
    let held = || -> i64 {
        ::redis::cmd("HLEN")
            .arg("herald:{u:alice}:collapse")
            .query(&mut redis.conn())
            .unwrap()
    };
    assert_eq!(held(), 5);
    let (status, _) = send(
        h.http
            .patch(h.url("/notifications"))
            .bearer_auth(&token)
            .json(&json!({"ids": ids[..4], "deleted": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(held(), 1);
    // the one left still collapses the next publish of its key
    let next = publish_keyed(&h, "again", "key-4").await;
    let n = &items(&h.list(&token, "").await)[0];
    assert_eq!(
        (n["id"].as_str(), n["count"].as_u64()),
        (Some(next.as_str()), Some(2))
    );
    assert_eq!(held(), 1);
}

/// Redis: each key keeps the ids that carry it in one hash field, the newest 16, and a removed
/// id leaves it; a field of one id (as written before the list) still collapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collapse_list_stays_small() {
    let redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    let token = user_token("alice");
    let field = || -> Option<String> {
        ::redis::cmd("HGET")
            .arg("herald:{u:alice}:collapse")
            .arg("k")
            .query(&mut redis.conn())
            .unwrap()
    };
    let mut read = Vec::new();
    for i in 0..3 {
        read.push(publish_read(&h, &format!("n{i}")).await);
    }
    assert_eq!(field().unwrap(), read.join(" "));
    assert_eq!(
        patch_alice(&h, &read[1], json!({"deleted": true})).await,
        204
    );
    assert_eq!(field().unwrap(), format!("{} {}", read[0], read[2]));
    for i in 3..20 {
        read.push(publish_read(&h, &format!("n{i}")).await);
    }
    assert_eq!(field().unwrap(), read[read.len() - 16..].join(" "));
    // one id alone, unread: collapsed onto
    assert_eq!(patch_alice(&h, &read[0], json!({"read": false})).await, 200);
    let _: () = ::redis::cmd("HSET")
        .arg("herald:{u:alice}:collapse")
        .arg("k")
        .arg(&read[0])
        .query(&mut redis.conn())
        .unwrap();
    let next = publish_keyed(&h, "again", "k").await;
    let n = &items(&h.list(&token, "").await)[0];
    assert_eq!(n["id"].as_str(), Some(next.as_str()));
    assert_eq!(n["replaces"], read[0].as_str());
    assert_eq!(field().unwrap(), next);
}
