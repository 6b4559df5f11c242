//! Retention: notifications older than `--retention` are deleted by the cleaner, and open
//! streams see the deletion.

use std::time::Duration;

use serde_json::json;

use crate::both_modes;
use crate::common::*;

both_modes!(
    old_notifications_are_purged,
    no_idempotency_key_can_stop_retention,
);

/// The cleaner deletes what is older than the window and keeps what is newer: with a 4 s
/// window (a run every second), a notification published 2 s after the first is still in the
/// window when the first one goes, so the first `deleted` names the old one alone.
async fn old_notifications_are_purged(mode: Mode) {
    let h = Setup::new(mode, &["--retention", "4s"]);
    let mut sse = h.events(&user_token("alice"), "").await;
    let old = h.notify("alice", "old").await;
    assert_eq!(sse.next_event().await.event, "notification");
    // the age is the point of the test: no event can stand in for time passing
    tokio::time::sleep(Duration::from_secs(2)).await;
    let young = h.notify("alice", "young").await;
    assert_eq!(sse.next_event().await.json()["id"], young.as_str());
    let deleted = sse
        .try_next(Duration::from_secs(10))
        .await
        .expect("the cleaner deletes the old one");
    assert_eq!(deleted.event, "deleted");
    assert_eq!(deleted.json(), json!({"ids": [old], "unread_count": 1}));
    assert_eq!(h.tray_ids("alice", "").await, vec![young.clone()]);
    // and the young one goes once it is old in its turn
    let deleted = sse
        .try_next(Duration::from_secs(10))
        .await
        .expect("the cleaner deletes the young one later");
    assert_eq!(deleted.json(), json!({"ids": [young], "unread_count": 0}));
    let fresh = h.notify("alice", "fresh").await;
    assert_eq!(h.tray_ids("alice", "").await, vec![fresh]);
}

/// An idempotency key shaped like a tray key (`x}:order`) is stored under a hash, so the
/// cleaner never mistakes it for a tray: retention keeps working for everyone.
async fn no_idempotency_key_can_stop_retention(mode: Mode) {
    let h = Setup::new(mode, &["--retention", "1s"]);
    for key in ["x}:order", "}:order", "*", "{u:ret-b}:order"] {
        let (status, body) = h
            .publish(
                json!({"users": ["frank"], "notification": {"title": "p"}, "idempotency_key": key}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let mut sse = h.events(&user_token("ret-b"), "").await;
    let old = h.notify("ret-b", "old").await;
    assert_eq!(sse.next_event().await.event, "notification");
    let deleted = sse
        .try_next(Duration::from_secs(10))
        .await
        .expect("the cleaner still runs");
    assert_eq!(deleted.event, "deleted");
    assert_eq!(deleted.json()["ids"], json!([old]));
}
