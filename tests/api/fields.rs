//! Every notification JSON (listed, answered to a PATCH, streamed) carries every v2 field:
//! `null` when unset, `critical`, `actions` and `count` at their defaults; set ones come back.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_modes;
use crate::common::*;

both_modes!(
    unset_fields_are_present,
    set_fields_come_back,
    wrong_types_are_named_at_publish
);

/// The fields that are `null` on a notification published with a title alone.
const NULL_WHEN_UNSET: [&str; 14] = [
    "body",
    "source",
    "category",
    "link",
    "data",
    "read_at",
    "deliver_at",
    "expires_at",
    "collapse_key",
    "seen_at",
    "archived_at",
    "snoozed_until",
    "replaces",
    "action",
];

/// `n` has every field: the `NULL_WHEN_UNSET` ones `null` (but those in `set`, which hold a
/// time), `critical` false, `actions` empty, `count` 1.
fn assert_every_field(n: &Value, set: &[&str]) {
    let object = n
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {n}"));
    for field in NULL_WHEN_UNSET {
        let value = object
            .get(field)
            .unwrap_or_else(|| panic!("no {field} in {n}"));
        if set.contains(&field) {
            time_of(value);
        } else {
            assert!(value.is_null(), "{field} should be null: {n}");
        }
    }
    for (field, default) in [
        ("critical", json!(false)),
        ("actions", json!([])),
        ("count", json!(1)),
    ] {
        assert_eq!(object.get(field), Some(&default), "{field} in {n}");
    }
    for field in ["id", "user", "title", "created_at"] {
        assert!(
            object.get(field).is_some_and(Value::is_string),
            "{field}: {n}"
        );
    }
}

/// The notification event's data without the two counts beside the notification's fields.
fn without_counts(mut event: Value) -> Value {
    let object = event.as_object_mut().unwrap();
    object.remove("unread_count");
    object.remove("unseen_count");
    event
}

async fn unset_fields_are_present(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let id = h.notify("alice", "plain").await;
    let streamed = sse.expect("notification").await.json();
    assert_every_field(&streamed, &[]);
    assert_eq!(streamed["id"], id.as_str());
    assert_eq!(counts_of(&streamed), (Some(1), Some(1)));
    // the same JSON is listed
    let listed = h.list(&token, "").await["notifications"][0].clone();
    assert_every_field(&listed, &[]);
    assert_eq!(listed, without_counts(streamed));
    // and answered to each PATCH, with the state it set
    let path = format!("/notifications/{id}");
    let (status, n) = h.patch(&path, &token, json!({"seen": true})).await;
    assert_eq!(status, 200, "{n}");
    assert_every_field(&n, &["seen_at"]);
    let (_, n) = h.patch(&path, &token, json!({"read": true})).await;
    assert_every_field(&n, &["seen_at", "read_at"]);
    let (_, n) = h.patch(&path, &token, json!({"archived": true})).await;
    assert_every_field(&n, &["seen_at", "read_at", "archived_at"]);
    assert_eq!(
        h.list(&token, "?archived=only").await["notifications"][0],
        n
    );
    let (_, n) = h.patch(&path, &token, json!({"archived": false})).await;
    assert_every_field(&n, &["seen_at", "read_at"]);
    let (_, n) = h
        .patch(&path, &token, json!({"snoozed_until": in_secs(3600)}))
        .await;
    assert_every_field(&n, &["seen_at", "read_at", "snoozed_until"]);
    let updated = sse.expect("updated").await.json();
    assert_eq!(without_counts(updated), n);
    // `null` for an optional field is the field left out, `critical` and `actions` too
    let (status, body) = h
        .publish(
            json!({"users": ["alice"], "notification": {"title": "nulls", "body": null,
            "critical": null, "actions": null, "deliver_at": null, "collapse_key": null}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let streamed = sse.expect("notification").await.json();
    assert_every_field(&streamed, &[]);
}

/// A v2 field of the wrong JSON type gets a 400 naming it, like a value that breaks a rule.
async fn wrong_types_are_named_at_publish(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let mut unnamed = Vec::new();
    for (field, value) in [
        ("deliver_at", json!(1_900_000_000)),
        ("expires_at", json!(true)),
        ("collapse_key", json!(7)),
        ("critical", json!("yes")),
        ("actions", json!("approve")),
        ("actions", json!({})),
    ] {
        let (status, err) = h
            .publish(json!({"users": ["alice"], "notification": {"title": "t", field: value}}))
            .await;
        assert_error(status, &err, 400, "invalid_request");
        if !err["error"]["message"].as_str().unwrap().contains(field) {
            unnamed.push(format!("{field}: {value} → {err}"));
        }
    }
    assert!(unnamed.is_empty(), "not named:\n{}", unnamed.join("\n"));
    assert_eq!(h.tray_len("alice").await, 0);
}

async fn set_fields_come_back(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let expires_at = in_secs(3600);
    let sent = json!({
        "title": "Build 7 failed", "body": "3 tests", "source": "ci", "category": "builds",
        "link": "https://ci.example/7", "data": {"build": 7, "tags": ["a"]},
        "expires_at": expires_at, "collapse_key": "build-7", "critical": true,
        "actions": [{"id": "retry", "label": "Retry"}],
    });
    let (status, body) = h
        .publish(json!({"users": ["alice"], "notification": sent}))
        .await;
    assert_eq!(status, 202, "{body}");
    let streamed = sse.expect("notification").await.json();
    assert_eq!(streamed["id"], body["ids"]["alice"]);
    for field in [
        "title",
        "body",
        "source",
        "category",
        "link",
        "data",
        "collapse_key",
        "critical",
    ] {
        assert_eq!(streamed[field], sent[field], "{field}: {streamed}");
    }
    let kept = time_of(&streamed["expires_at"]);
    let asked = time_of(&json!(expires_at));
    let apart = kept.duration_since(asked).unwrap_or_else(|e| e.duration());
    assert!(apart < Duration::from_secs(1), "{expires_at} → {streamed}");
    let actions = streamed["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{streamed}");
    assert_eq!(
        (actions[0]["id"].as_str(), actions[0]["label"].as_str()),
        (Some("retry"), Some("Retry"))
    );
    for field in [
        "deliver_at",
        "read_at",
        "seen_at",
        "archived_at",
        "snoozed_until",
        "replaces",
        "action",
    ] {
        assert!(streamed[field].is_null(), "{field}: {streamed}");
    }
    assert_eq!(streamed["count"], 1);
    let listed = h.list(&token, "").await["notifications"][0].clone();
    assert_eq!(listed, without_counts(streamed));
}
