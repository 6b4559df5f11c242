//! `POST /publish`, groups and presence: service-token only, validation before any write,
//! idempotency, group fan-out.

use serde_json::json;

use crate::both_modes;
use crate::common::*;

both_modes!(
    publish_stores_for_users_and_groups,
    idempotency_key_stores_once,
    invalid_publishes_store_nothing,
    publish_needs_a_service_token,
    group_membership_endpoints,
    presence_lists_live_streams,
    notification_fields_round_trip,
    the_size_limit_is_the_notification_as_sent,
    data_travels_as_written,
);

/// A notification whose own JSON (as sent, compact) is 16 KiB is stored, for a user with a
/// long id too (Herald's own members are not counted); one byte more is refused with 413.
async fn the_size_limit_is_the_notification_as_sent(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let user = "u".repeat(128);
    let sized = |extra: usize| {
        let mut n = json!({"title": "t", "data": {"blob": ""}});
        let bare = serde_json::to_vec(&n).unwrap().len();
        n["data"]["blob"] = json!("x".repeat(16 * 1024 - bare + extra));
        assert_eq!(serde_json::to_vec(&n).unwrap().len(), 16 * 1024 + extra);
        json!({"users": [user], "notification": n})
    };
    let (status, body) = h.publish(sized(0)).await;
    assert_eq!(status, 202, "{body}");
    let (status, err) = h.publish(sized(1)).await;
    assert_error(status, &err, 413, "too_large");
    let tray = h.list(&user_token(&user), "").await;
    assert_eq!(tray["notifications"].as_array().unwrap().len(), 1, "{tray}");
}

/// `data` travels as written but for the spaces between tokens (numbers of any size or
/// spelling, escapes, member order), to a user and to a group's members: on the stream, in a
/// replay and in the tray.
async fn data_travels_as_written(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let svc = service_token();
    let (status, _) = send(
        h.http
            .put(h.url("/groups/g/members"))
            .bearer_auth(&svc)
            .json(&json!({"users": ["bob"]})),
    )
    .await;
    assert_eq!(status, 200);
    let data = r#"{"z":12345678901234567891234,"a":[1e2,-0.0,0.1000000000000000055511151231257827],"e":"\u00e9\n"}"#;
    let spaced = data.replace(",", " ,\n\t").replace(":", ": ");
    let mut streams = Vec::new();
    for user in ["alice", "bob"] {
        streams.push(h.events(&user_token(user), "").await);
    }
    let body = format!(
        r#"{{"users":["alice"],"groups":["g"],"notification":{{"title":"t","data":{spaced}}}}}"#
    );
    let r = send_raw(
        h.http
            .post(h.url("/publish"))
            .bearer_auth(&svc)
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(r.status(), 202);
    let written = format!(r#","data":{data},"#);
    for (user, sse) in ["alice", "bob"].into_iter().zip(&mut streams) {
        let live = sse.expect("notification").await;
        assert!(live.data.contains(&written), "{user}: {}", live.data);
        let from = sse.ready.as_ref().unwrap().id.clone().unwrap();
        let mut replay = h
            .events(&user_token(user), &format!("?last_event_id={from}"))
            .await;
        assert_eq!(replay.expect("notification").await.data, live.data);
        let tray = h
            .http
            .get(h.url("/notifications"))
            .bearer_auth(user_token(user));
        let tray = send_raw(tray).await.text().await.unwrap();
        assert!(tray.contains(&written), "{user}: {tray}");
    }
}

async fn publish_stores_for_users_and_groups(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let svc = service_token();
    let r = send_raw(
        h.http
            .put(h.url("/groups/gpu-users/members"))
            .bearer_auth(&svc)
            .json(&json!({"users": ["carol", "dave", "alice"]})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (status, body) = h.publish(json!({"users": ["alice", "bob"], "groups": ["gpu-users"], "notification": {"title": "GPU maintenance"}})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["count"], 4);
    let named = body["ids"].as_object().unwrap();
    assert_eq!(named.len(), 2);
    assert_ne!(named["alice"], named["bob"]);
    for user in ["alice", "bob", "carol", "dave"] {
        let page = h.list(&user_token(user), "").await;
        assert_eq!(ids(&page).len(), 1, "{user}");
        assert_eq!(page["notifications"][0]["title"], "GPU maintenance");
    }
    assert_eq!(
        h.tray_ids("alice", "").await,
        vec![named["alice"].as_str().unwrap()]
    );
}

async fn idempotency_key_stores_once(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let body = json!({"users": ["alice"], "notification": {"title": "once"}, "idempotency_key": "build-42"});
    let (s1, first) = h.publish(body.clone()).await;
    let (s2, second) = h.publish(body).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["ids"], second["ids"]);
    assert_eq!(h.tray_len("alice").await, 1);
    // another key stores again; the same key for another user stores for them
    h.publish(json!({"users": ["alice", "bob"], "notification": {"title": "again"}, "idempotency_key": "build-43"})).await;
    h.publish(
        json!({"users": ["bob"], "notification": {"title": "once"}, "idempotency_key": "build-42"}),
    )
    .await;
    assert_eq!(h.tray_len("alice").await, 2);
    assert_eq!(h.tray_len("bob").await, 2);
}

async fn invalid_publishes_store_nothing(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let cases = [
        (
            json!({"notification": {"title": "nobody"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"users": [], "groups": [], "notification": {"title": "x"}}),
            400,
            "invalid_request",
        ),
        (json!({"users": ["alice"]}), 400, "invalid_request"),
        (
            json!({"users": ["alice"], "notification": {"title": ""}}),
            400,
            "invalid_request",
        ),
        (
            json!({"users": ["alice"], "notification": {"title": "x".repeat(257)}}),
            400,
            "invalid_request",
        ),
        (
            json!({"users": ["alice"], "notification": {"title": 5}}),
            400,
            "invalid_request",
        ),
        (
            json!({"users": "alice", "notification": {"title": "x"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"users": ["alice", ""], "notification": {"title": "x"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"users": ["alice", "a\u{7}b"], "notification": {"title": "x"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"users": ["alice", "x".repeat(129)], "notification": {"title": "x"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"users": ["alice"], "notification": {"title": "x", "data": [1, 2]}}),
            400,
            "invalid_request",
        ),
        // a struct's members as an array, which serde alone would read in order
        (
            json!([["alice"], [], {"title": "x"}]),
            400,
            "invalid_request",
        ),
        (
            json!({"users": ["alice"], "notification": ["x"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"users": ["alice"], "notification": {"title": "x", "actions": [["a", "A"]]}}),
            400,
            "invalid_request",
        ),
        (
            json!({"users": ["alice"], "notification": {"title": "x", "body": "y".repeat(17 * 1024)}}),
            413,
            "too_large",
        ),
        (
            json!({"users": ["alice", "bob"], "notification": {"title": "x", "data": {"blob": "z".repeat(16 * 1024)}}}),
            413,
            "too_large",
        ),
    ];
    for (body, want, code) in cases {
        let (status, err) = h.publish(body.clone()).await;
        assert_error(status, &err, want, code);
    }
    let (status, err) = send(
        h.http
            .post(h.url("/publish"))
            .bearer_auth(service_token())
            .body("{\"users\":["),
    )
    .await;
    assert_error(status, &err, 400, "invalid_request");
    let r = send_raw(
        h.http
            .post(h.url("/publish"))
            .bearer_auth(service_token())
            .body(vec![b' '; 3 * 1024 * 1024]),
    )
    .await;
    let (status, err) = status_json(r).await;
    assert_error(status, &err, 413, "too_large");
    for user in ["alice", "bob"] {
        assert_eq!(
            h.list(&user_token(user), "").await["notifications"],
            json!([])
        );
    }
}

async fn publish_needs_a_service_token(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let body = json!({"users": ["alice"], "notification": {"title": "x"}});
    let (status, err) = send(h.http.post(h.url("/publish")).json(&body)).await;
    assert_error(status, &err, 401, "unauthorized");
    let (status, err) = send(
        h.http
            .post(h.url("/publish"))
            .bearer_auth(user_token("alice"))
            .json(&body),
    )
    .await;
    assert_error(status, &err, 403, "forbidden");
    let expired = sign(json!({"scope": "publish", "exp": now() - 60}));
    let (status, err) = send(
        h.http
            .post(h.url("/publish"))
            .bearer_auth(expired)
            .json(&body),
    )
    .await;
    assert_error(status, &err, 401, "unauthorized");
    for path in ["/groups/g/members", "/presence/alice"] {
        let (status, err) = h.get(path, &user_token("alice")).await;
        assert_error(status, &err, 403, "forbidden");
    }
    assert_eq!(
        h.list(&user_token("alice"), "").await["notifications"],
        json!([])
    );
}

async fn group_membership_endpoints(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let svc = service_token();
    let put = |users: serde_json::Value| {
        h.http
            .put(h.url("/groups/ops/members"))
            .bearer_auth(&svc)
            .json(&json!({"users": users}))
            .send()
    };
    assert_eq!(put(json!(["bob", "alice"])).await.unwrap().status(), 200);
    assert_eq!(put(json!(["carol", "alice"])).await.unwrap().status(), 200);
    let (status, body) = h.get("/groups/ops/members", &svc).await;
    assert_eq!(status, 200);
    assert_eq!(body["users"], json!(["alice", "bob", "carol"]));
    let r = send_raw(
        h.http
            .delete(h.url("/groups/ops/members/bob"))
            .bearer_auth(&svc),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        h.get("/groups/ops/members", &svc).await.1["users"],
        json!(["alice", "carol"])
    );
    let (status, err) = status_json(put(json!("alice")).await.unwrap()).await;
    assert_error(status, &err, 400, "invalid_request");
    let (status, err) = status_json(put(json!([""])).await.unwrap()).await;
    assert_error(status, &err, 400, "invalid_request");
    // the body's members as an array
    let (status, err) = send(
        h.http
            .put(h.url("/groups/ops/members"))
            .bearer_auth(&svc)
            .json(&json!([["alice"]])),
    )
    .await;
    assert_error(status, &err, 400, "invalid_request");
    // after removal, bob gets no group notification
    h.publish(json!({"groups": ["ops"], "notification": {"title": "ops"}}))
        .await;
    assert_eq!(
        h.list(&user_token("bob"), "").await["notifications"],
        json!([])
    );
    assert_eq!(h.tray_len("carol").await, 1);
}

async fn presence_lists_live_streams(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let svc = service_token();
    assert_eq!(
        h.get("/presence/alice", &svc).await.1,
        json!({"online": false, "sessions": []})
    );
    let sse = h.events(&session_token("alice", "s1"), "").await;
    let (status, body) = h.get("/presence/alice", &svc).await;
    assert_eq!(status, 200);
    assert_eq!(body["online"], true);
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["session"], "s1");
    assert!(sessions[0]["node"].as_str().is_some());
    assert!(sessions[0]["since"].as_str().is_some());
    drop(sse);
    wait_for("presence entry outlived its stream", async || {
        h.get("/presence/alice", &svc).await.1["online"] != true
    })
    .await;
}

async fn notification_fields_round_trip(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let notification = json!({
        "title": "Build finished", "body": "All green", "source": "ci", "category": "builds",
        "link": "https://ci.example/42", "data": {"build": 42, "tags": [], "nested": {"ok": true}},
    });
    let (status, body) = h
        .publish(json!({"users": ["alice"], "notification": notification}))
        .await;
    assert_eq!(status, 202);
    let n = &h.list(&user_token("alice"), "").await["notifications"][0];
    for field in ["title", "body", "source", "category", "link", "data"] {
        assert_eq!(n[field], notification[field], "{field}");
    }
    assert_eq!(n["id"], body["ids"]["alice"]);
}

/// Safe defaults: `link` must be an http(s) URL or a same-site path, and the fields Herald
/// sets cannot be sent; each refusal names the field and stores nothing. Unknown fields are
/// still ignored (forward compatibility). Validation comes before any backend, so one mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_links_and_herald_fields_are_refused() {
    let h = Herald::start(None, &[]);
    let publish = |notification: serde_json::Value| {
        h.publish(json!({"users": ["alice"], "notification": notification}))
    };
    for link in [
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,<script>x</script>",
        "vbscript:x",
        "//evil.example/x",
        "/\\evil.example",
        "evil.example",
    ] {
        let (status, err) = publish(json!({"title": "t", "link": link})).await;
        assert_error(status, &err, 400, "invalid_request");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("notification.link"),
            "{err}"
        );
    }
    for field in ["id", "user", "created_at", "read_at"] {
        let (status, err) = publish(json!({"title": "t", field: "forged"})).await;
        assert_error(status, &err, 400, "invalid_request");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("notification.{field}")), "{err}");
    }
    assert_eq!(h.tray_len("alice").await, 0);
    for link in ["https://ci.example/42", "http://x.example", "/tray/7"] {
        let (status, body) = publish(json!({"title": "t", "link": link, "later": true})).await;
        assert_eq!(status, 202, "{link}: {body}");
    }
    assert_eq!(h.tray_len("alice").await, 3);
}
