//! Due times on one node: a snooze hides a notification until `snoozed_until` passes (or it is
//! un-snoozed), when it arrives again as `event: notification`; `deliver_at` holds a publish
//! back until that moment; `expires_at` removes it with `event: deleted`, `"reason":"expired"`.
//! And the rules for those times (future, at most 90 days ahead, expiry after delivery).

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::both_modes;
use crate::common::*;

both_modes!(
    snooze_hides_it_until_it_passes,
    unsnooze_brings_it_back_at_once,
    snooze_input_is_checked,
    deliver_at_holds_it_back,
    due_time_input_is_checked,
    expiry_removes_it,
    hidden_ones_expire_too,
);

/// The ids of a listing, sorted.
fn sorted_ids(page: &Value) -> Vec<String> {
    let mut v = ids(page);
    v.sort();
    v
}

async fn position(h: &Herald, token: &str) -> String {
    h.list(token, "").await["position"]
        .as_str()
        .expect("a position")
        .to_owned()
}

/// Publish `notification` to alice; its id.
async fn publish_one(h: &Herald, notification: Value) -> String {
    let (status, body) = h
        .publish(json!({"users": ["alice"], "notification": notification}))
        .await;
    assert_eq!(status, 202, "{body}");
    body["ids"]["alice"].as_str().unwrap().to_owned()
}

async fn snooze_hides_it_until_it_passes(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let a = h.notify("alice", "a").await;
    let b = h.notify("alice", "b").await;
    for _ in 0..2 {
        assert_eq!(sse.next_event().await.event, "notification");
    }
    let before = position(&h, &token).await;
    let until = in_secs(3);
    let (status, n) = h
        .patch(
            &format!("/notifications/{a}"),
            &token,
            json!({"snoozed_until": until}),
        )
        .await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(n["id"], a.as_str());
    assert_eq!(time_of(&n["snoozed_until"]), time_of(&json!(until)), "{n}");
    let ev = sse.next_event().await;
    assert_eq!(ev.event, "updated", "{ev:?}");
    let updated = ev.json();
    assert_eq!(
        (updated["id"].clone(), updated["snoozed_until"].clone()),
        (json!(a), n["snoozed_until"].clone())
    );
    assert_eq!(counts_of(&updated), (Some(1), Some(1)));
    // out of the default listing and the counts; in snoozed=only
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page), [b.as_str()]);
    assert_eq!(counts_of(&page), (Some(1), Some(1)));
    let snoozed = h.list(&token, "?snoozed=only").await;
    assert_eq!(ids(&snoozed), [a.as_str()]);
    assert_eq!(counts_of(&snoozed), (Some(1), Some(1)));
    let (_, counts) = h.get("/notifications/counts", &token).await;
    assert_eq!(counts["unread"], 1, "{counts}");
    // when it passes, it arrives again, un-snoozed, and counts again
    let ev = sse.next_event().await;
    assert_eq!(ev.event, "notification", "{ev:?}");
    assert!(
        SystemTime::now() >= time_of(&n["snoozed_until"]),
        "woke before its time"
    );
    let back = ev.json();
    assert_eq!(back["id"], a.as_str());
    assert!(back["snoozed_until"].is_null(), "{back}");
    assert_eq!(counts_of(&back), (Some(2), Some(2)));
    let page = h.list(&token, "").await;
    assert_eq!(sorted_ids(&page), {
        let mut v = vec![a.clone(), b.clone()];
        v.sort();
        v
    });
    assert_eq!(counts_of(&page), (Some(2), Some(2)));
    assert!(ids(&h.list(&token, "?snoozed=only").await).is_empty());
    // exactly once
    let more = sse.try_next(Duration::from_millis(1500)).await;
    assert!(more.is_none(), "{more:?}");
    // both changes are replayed
    let mut replay = h.events(&token, &format!("?last_event_id={before}")).await;
    let first = replay.next_event().await;
    let second = replay.next_event().await;
    assert_eq!(
        (first.event.as_str(), second.event.as_str()),
        ("updated", "notification")
    );
    assert_eq!(second.json()["id"], a.as_str());
}

async fn unsnooze_brings_it_back_at_once(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let a = h.notify("alice", "a").await;
    assert_eq!(sse.next_event().await.event, "notification");
    let path = format!("/notifications/{a}");
    let (status, n) = h
        .patch(&path, &token, json!({"snoozed_until": in_secs(3600)}))
        .await;
    assert_eq!(status, 200, "{n}");
    let ev = sse.next_event().await;
    assert_eq!(ev.event, "updated", "{ev:?}");
    assert_eq!(counts_of(&ev.json()), (Some(0), Some(0)));
    let (status, n) = h.patch(&path, &token, json!({"snoozed_until": null})).await;
    assert_eq!(status, 200, "{n}");
    assert!(n["snoozed_until"].is_null(), "{n}");
    let ev = sse.next_event().await;
    assert_eq!(ev.event, "notification", "{ev:?}");
    assert_eq!(ev.json()["id"], a.as_str());
    assert!(ev.json()["snoozed_until"].is_null(), "{ev:?}");
    assert_eq!(counts_of(&ev.json()), (Some(1), Some(1)));
    assert_eq!(h.tray_ids("alice", "").await, [a.as_str()]);
    // bulk, by ids: snoozed, then un-snoozed
    let (status, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"ids": [a], "snoozed_until": in_secs(3600)}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 1})));
    assert!(h.tray_ids("alice", "").await.is_empty());
    assert_eq!(h.tray_ids("alice", "?snoozed=only").await, [a.as_str()]);
    let (status, body) = h
        .patch(
            "/notifications",
            &token,
            json!({"ids": [a], "snoozed_until": null}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"updated": 1})));
    assert_eq!(h.tray_ids("alice", "").await, [a.as_str()]);
    let ev = sse.expect("notification").await;
    assert_eq!(ev.json()["id"], a.as_str());
    assert_eq!(counts_of(&ev.json()), (Some(1), Some(1)));
}

async fn snooze_input_is_checked(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let id = h.notify("alice", "x").await;
    let path = format!("/notifications/{id}");
    for body in [
        json!({"snoozed_until": secs_ago(60)}),
        json!({"snoozed_until": in_secs(91 * DAY)}),
        json!({"snoozed_until": "tomorrow"}),
        json!({"snoozed_until": "2030-01-01"}),
        // not a string: the message names the field too
        json!({"snoozed_until": 5}),
        json!({"snoozed_until": true}),
    ] {
        let (status, err) = h.patch(&path, &token, body.clone()).await;
        assert_names(status, &err, "snoozed_until");
    }
    let (status, err) = h
        .patch(
            "/notifications",
            &token,
            json!({"ids": [id], "snoozed_until": secs_ago(60)}),
        )
        .await;
    assert_names(status, &err, "snoozed_until");
    // another user's notification
    let (status, err) = h
        .patch(
            &path,
            &user_token("bob"),
            json!({"snoozed_until": in_secs(60)}),
        )
        .await;
    assert_error(status, &err, 404, "not_found");
    // nothing changed
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page), [id]);
    assert!(page["notifications"][0]["snoozed_until"].is_null());
}

async fn deliver_at_holds_it_back(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let due = in_secs(3);
    let id = publish_one(&h, json!({"title": "later", "deliver_at": due})).await;
    // not listed, not counted before it
    for query in ["", "?archived=include", "?snoozed=only"] {
        let page = h.list(&token, query).await;
        assert!(ids(&page).is_empty(), "{query}: {page}");
        assert_eq!(counts_of(&page), (Some(0), Some(0)));
    }
    let (_, counts) = h.get("/notifications/counts", &token).await;
    assert_eq!(
        (counts["unread"].clone(), counts["unseen"].clone()),
        (json!(0), json!(0))
    );
    // not streamed before it: the first event is its delivery, at its time
    let ev = sse.next_event().await;
    assert_eq!(ev.event, "notification", "{ev:?}");
    let n = ev.json();
    assert_eq!(
        (n["id"].as_str(), n["title"].as_str()),
        (Some(id.as_str()), Some("later"))
    );
    assert_eq!(time_of(&n["deliver_at"]), time_of(&json!(due)), "{n}");
    assert!(
        SystemTime::now() >= time_of(&n["deliver_at"]),
        "streamed before its deliver_at"
    );
    assert_eq!(counts_of(&n), (Some(1), Some(1)));
    let page = h.list(&token, "").await;
    assert_eq!(ids(&page), [id]);
    assert_eq!(counts_of(&page), (Some(1), Some(1)));
    // exactly once
    let more = sse.try_next(Duration::from_millis(1500)).await;
    assert!(more.is_none(), "{more:?}");
}

async fn due_time_input_is_checked(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let later = in_secs(3600);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"deliver_at": secs_ago(60)}), "deliver_at"),
        (json!({"deliver_at": in_secs(91 * DAY)}), "deliver_at"),
        (json!({"deliver_at": "next tuesday"}), "deliver_at"),
        (json!({"expires_at": secs_ago(1)}), "expires_at"),
        (json!({"expires_at": in_secs(91 * DAY)}), "expires_at"),
        (json!({"expires_at": "soon"}), "expires_at"),
        (
            json!({"deliver_at": later, "expires_at": in_secs(1800)}),
            "expires_at",
        ),
        (
            json!({"deliver_at": later, "expires_at": later}),
            "expires_at",
        ),
        (json!({"collapse_key": ""}), "collapse_key"),
        (json!({"collapse_key": "k".repeat(129)}), "collapse_key"),
        // fields Herald keeps
        (json!({"count": 2}), "count"),
        (json!({"replaces": null}), "replaces"),
        (json!({"action": null}), "action"),
        (json!({"archived_at": null}), "archived_at"),
        (json!({"snoozed_until": in_secs(60)}), "snoozed_until"),
    ];
    for (fields, field) in cases {
        let mut n = json!({"title": "t"});
        for (k, v) in fields.as_object().unwrap() {
            n[k] = v.clone();
        }
        let (status, err) = h
            .publish(json!({"users": ["alice"], "notification": n}))
            .await;
        assert_names(status, &err, field);
    }
    // nothing was stored
    let page = h.list(&token, "?archived=include").await;
    assert!(ids(&page).is_empty(), "{page}");
    let (_, counts) = h.get("/notifications/counts", &token).await;
    assert_eq!(
        (counts["unread"].clone(), counts["unseen"].clone()),
        (json!(0), json!(0))
    );
    // the limits themselves are fine
    publish_one(
        &h,
        json!({"title": "t", "deliver_at": in_secs(89 * DAY), "expires_at": in_secs(90 * DAY - 60)}),
    )
    .await;
    publish_one(&h, json!({"title": "t", "collapse_key": "k".repeat(128)})).await;
    assert_eq!(h.tray_len("alice").await, 1);
}

async fn expiry_removes_it(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let a = publish_one(&h, json!({"title": "brief", "expires_at": in_secs(3)})).await;
    let b = h.notify("alice", "stays").await;
    let first = sse.next_event().await.json();
    assert_eq!(first["id"], a.as_str());
    let expires_at = time_of(&first["expires_at"]);
    let second = sse.next_event().await;
    assert_eq!(second.event, "notification");
    let before = second.id.expect("an id");
    let ev = sse.next_event().await;
    assert_eq!(
        (ev.event.as_str(), ev.json()),
        (
            "deleted",
            json!({"ids": [a], "reason": "expired", "unread_count": 1, "unseen_count": 1})
        )
    );
    assert!(SystemTime::now() >= expires_at, "expired before its time");
    for query in ["", "?archived=include", "?snoozed=only"] {
        let page = h.list(&token, query).await;
        let want = if query == "?snoozed=only" {
            vec![]
        } else {
            vec![b.clone()]
        };
        assert_eq!(ids(&page), want, "{query}");
        assert_eq!(counts_of(&page), (Some(1), Some(1)));
    }
    let (status, err) = h
        .patch(
            &format!("/notifications/{a}"),
            &token,
            json!({"read": true}),
        )
        .await;
    assert_error(status, &err, 404, "not_found");
    let more = sse.try_next(Duration::from_millis(1500)).await;
    assert!(more.is_none(), "{more:?}");
    // replayed like every change
    let mut replay = h.events(&token, &format!("?last_event_id={before}")).await;
    let ev = replay.next_event().await;
    assert_eq!(
        (ev.event.as_str(), ev.json()["reason"].as_str()),
        ("deleted", Some("expired"))
    );
}

/// A snoozed or an archived notification expires like any other; the counts (active
/// notifications only) do not move.
async fn hidden_ones_expire_too(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let stays = h.notify("alice", "stays").await;
    let mut sse = h.events(&token, "").await;
    let snoozed = publish_one(&h, json!({"title": "snoozed", "expires_at": in_secs(3)})).await;
    let archived = publish_one(&h, json!({"title": "archived", "expires_at": in_secs(3)})).await;
    for (id, change) in [
        (&snoozed, json!({"snoozed_until": in_secs(3600)})),
        (&archived, json!({"archived": true})),
    ] {
        let (status, body) = h
            .patch(&format!("/notifications/{id}"), &token, change)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // one deleted event naming both, or one each
    let mut gone = Vec::new();
    while gone.len() < 2 {
        let data = sse.expect("deleted").await.json();
        assert_eq!(data["reason"], "expired", "{data}");
        assert_eq!(counts_of(&data), (Some(1), Some(1)), "{data}");
        let named = data["ids"].as_array().unwrap().iter();
        gone.extend(named.map(|id| id.as_str().unwrap().to_owned()));
    }
    gone.sort();
    let mut want = vec![snoozed, archived];
    want.sort();
    assert_eq!(gone, want);
    assert_eq!(
        h.tray_ids("alice", "?archived=include").await,
        [stays.as_str()]
    );
    assert!(h.tray_ids("alice", "?snoozed=only").await.is_empty());
}

/// Redis: a tray whose due handling fails (a key of another type, written by someone else)
/// is skipped and tried again later; it never holds up anyone else's deliveries, although
/// it sorts first in the due index.
#[tokio::test]
async fn a_broken_tray_holds_up_no_one_else() {
    let redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    let mut conn = redis.conn();
    let _: () = ::redis::cmd("SET")
        .arg("herald:{u:broken}:wake")
        .arg("not a sorted set")
        .query(&mut conn)
        .unwrap();
    let _: () = ::redis::cmd("ZADD")
        .arg("herald:due")
        .arg(1)
        .arg("broken")
        .query(&mut conn)
        .unwrap();
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let id = publish_one(&h, json!({"title": "on time", "deliver_at": in_secs(2)})).await;
    let ev = sse.expect("notification").await;
    assert_eq!(ev.json()["id"], id.as_str());
    // the broken one waits a minute before its next try
    let score: f64 = ::redis::cmd("ZSCORE")
        .arg("herald:due")
        .arg("broken")
        .query(&mut conn)
        .unwrap();
    assert!(score > (now() * 1000 + 30_000) as f64, "{score}");
}
