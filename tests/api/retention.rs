//! Retention: notifications older than `--retention` are deleted by the cleaner, and open
//! streams see the deletion.

use std::time::Duration;

use serde_json::json;

use crate::both_modes;
use crate::common::*;

both_modes!(old_notifications_are_purged);

async fn old_notifications_are_purged(mode: Mode) {
    let h = Setup::new(mode, &["--retention", "1s"]);
    let mut sse = h.events(&user_token("alice"), "").await;
    let old = h.notify("alice", "old").await;
    assert_eq!(sse.next_event().await.event, "notification");
    let deleted = sse
        .try_next(Duration::from_secs(10))
        .await
        .expect("the cleaner deletes it");
    assert_eq!(deleted.event, "deleted");
    assert_eq!(deleted.json(), json!({"ids": [old], "unread_count": 0}));
    let fresh = h.notify("alice", "fresh").await;
    assert_eq!(h.tray_ids("alice", "").await, vec![fresh]);
}
