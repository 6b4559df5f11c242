//! Actions: `POST /notifications/{id}/actions/{action_id}` takes one action of a notification,
//! once: through the upstream as the user when it has a `path` (any status it answers is
//! recorded), only recorded without one; the notification is read and every stream gets
//! `updated`. A second take is 409, an unknown action 404, an upstream that is down or slow
//! records nothing; bad actions are refused at publish.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_modes;
use crate::common::*;

both_modes!(
    an_action_is_taken_once_through_the_upstream,
    an_action_without_path_only_records,
    an_unreachable_upstream_records_nothing,
    a_slow_upstream_records_nothing,
    action_input_is_checked,
    racing_takes_send_one_action_once,
    a_take_without_path_waits_for_one_being_sent,
    a_collapse_passes_by_a_notification_whose_action_is_being_sent,
);

/// Publish a notification with `actions` to `user`; its id.
async fn publish_with(h: &Herald, user: &str, actions: Value) -> String {
    let (status, body) = h
        .publish(json!({"users": [user], "notification": {"title": "Deploy?", "actions": actions}}))
        .await;
    assert_eq!(status, 202, "{body}");
    body["ids"][user].as_str().unwrap().to_owned()
}

/// Publish to alice a notification whose one action, `approve`, goes to the upstream's
/// `/slow` (it answers after 3 s); its id.
async fn publish_slow_action(h: &Herald) -> String {
    let action = json!([{"id": "approve", "label": "Approve", "path": "/api/slow"}]);
    publish_with(h, "alice", action).await
}

/// `POST /notifications/{id}/actions/{action}` with a Bearer token.
async fn take(h: &Herald, token: &str, id: &str, action: &str) -> (u16, Value) {
    let path = format!("/notifications/{id}/actions/{action}");
    send(h.http.post(h.url(&path)).bearer_auth(token)).await
}

/// The one notification `id` on alice's tray (archived ones included).
async fn listed(h: &Herald, id: &str) -> Value {
    let page = h.list(&user_token("alice"), "?archived=include").await;
    page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {page}"))
        .clone()
}

async fn an_action_is_taken_once_through_the_upstream(mode: Mode) {
    let up = EchoUpstream::start().await;
    let h = Setup::new(mode, &["--upstream", &up.url]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let id = publish_with(
        &h,
        "alice",
        json!([
            {"id": "approve", "label": "Approve", "method": "POST", "path": "/api/record/200"},
            {"id": "later", "label": "Later"},
        ]),
    )
    .await;
    let n = sse.expect("notification").await.json();
    assert_eq!(n["actions"][0]["path"], "/api/record/200", "{n}");
    assert_eq!(n["actions"][1]["id"], "later", "{n}");
    assert!(n["action"].is_null(), "{n}");
    let (status, n) = take(&h, &token, &id, "approve").await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(n["id"], id.as_str());
    assert_eq!(
        (n["action"]["id"].as_str(), n["action"]["status"].as_u64()),
        (Some("approve"), Some(200)),
        "{n}"
    );
    time_of(&n["action"]["at"]);
    time_of(&n["read_at"]);
    time_of(&n["seen_at"]);
    // the upstream got it as the user, the path mapped like the proxy maps it
    let got = up.recorded();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["method"].as_str(), got[0]["path"].as_str()),
        (Some("POST"), Some("/record/200"))
    );
    assert_eq!(got[0]["headers"]["x-herald-user"], "alice", "{}", got[0]);
    let sent: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"notification": id, "action": "approve"}));
    // every stream: updated, with the counts
    let ev = sse.next_event().await;
    assert_eq!(ev.event, "updated", "{ev:?}");
    let updated = ev.json();
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["action"], n["action"]);
    assert_eq!(counts_of(&updated), (Some(0), Some(0)));
    assert_eq!(listed(&h, &id).await, n);
    // once: the same action again, or the other one
    for again in ["approve", "later"] {
        let (status, err) = take(&h, &token, &id, again).await;
        assert_error(status, &err, 409, "conflict");
    }
    assert_eq!(up.recorded().len(), 1);
    assert_eq!(listed(&h, &id).await["action"], n["action"]);
    // an unknown action, a notification without actions, another user's notification: 404
    let (status, err) = take(&h, &token, &id, "nope").await;
    assert_error(status, &err, 404, "not_found");
    let plain = h.notify("alice", "plain").await;
    let (status, err) = take(&h, &token, &plain, "approve").await;
    assert_error(status, &err, 404, "not_found");
    let bobs = publish_with(
        &h,
        "bob",
        json!([{"id": "approve", "label": "Approve", "path": "/api/record/200"}]),
    )
    .await;
    let (status, err) = take(&h, &token, &bobs, "approve").await;
    assert_error(status, &err, 404, "not_found");
    let (status, err) = take(&h, &token, "nope", "approve").await;
    assert_error(status, &err, 404, "not_found");
    assert_eq!(up.recorded().len(), 1);
    // whatever status the backend answers is recorded: it has seen the action
    let other = publish_with(
        &h,
        "alice",
        json!([{"id": "drop", "label": "Drop", "method": "DELETE", "path": "/api/record/404"}]),
    )
    .await;
    let (status, n) = take(&h, &token, &other, "drop").await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(n["action"]["status"], 404, "{n}");
    let got = up.recorded();
    assert_eq!(
        (got[1]["method"].as_str(), got[1]["path"].as_str()),
        (Some("DELETE"), Some("/record/404"))
    );
    // every method carries the body, GET too (hyper's client leaves a GET's body out unless
    // its length is set)
    let get = publish_with(
        &h,
        "alice",
        json!([{"id": "look", "label": "Look", "method": "GET", "path": "/api/record/200"}]),
    )
    .await;
    let (status, n) = take(&h, &token, &get, "look").await;
    assert_eq!(status, 200, "{n}");
    let got = up.recorded();
    assert_eq!(got[2]["method"], "GET", "{}", got[2]);
    // a path as published, with what a browser would encode: encoded as the proxy gets it
    let odd = publish_with(
        &h,
        "alice",
        json!([{"id": "odd", "label": "Odd", "path": "/api/record/200/caf\u{e9}/{x} y?q=\"\u{fc}\" z#top"}]),
    )
    .await;
    let (status, n) = take(&h, &token, &odd, "odd").await;
    assert_eq!(status, 200, "{n}");
    let got = up.recorded();
    assert_eq!(
        got[3]["path"], "/record/200/caf%C3%A9/%7Bx%7D%20y",
        "{}",
        got[3]
    );
    assert_eq!(got[3]["query"], "q=%22%C3%BC%22%20z", "{}", got[3]);
    for (sent, id, action) in [(&got[1], &other, "drop"), (&got[2], &get, "look")] {
        let body: Value = serde_json::from_str(sent["body"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{e}: {sent}"));
        assert_eq!(body, json!({"notification": id, "action": action}));
        assert_eq!(
            sent["headers"]["content-type"], "application/json",
            "{sent}"
        );
    }
}

async fn an_action_without_path_only_records(mode: Mode) {
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
    let id = publish_with(&h, "alice", json!([{"id": "ack", "label": "Got it"}])).await;
    assert_eq!(sse.next_event().await.event, "notification");
    let answer = (h
        .http
        .post(h.url(&format!("/notifications/{id}/actions/ack"))))
    .bearer_auth(&token)
    .send()
    .await
    .unwrap();
    let position = answer.headers().get("x-herald-position").cloned();
    let (status, n) = (
        answer.status().as_u16(),
        answer.json::<Value>().await.unwrap(),
    );
    assert_eq!(status, 200, "{n}");
    assert_eq!(n["action"]["id"], "ack", "{n}");
    assert!(n["action"]["status"].is_null(), "{n}");
    time_of(&n["action"]["at"]);
    time_of(&n["read_at"]);
    let ev = sse.next_event().await;
    assert_eq!(ev.event, "updated", "{ev:?}");
    assert_eq!(ev.json()["action"], n["action"]);
    // the answer says where the change log stood after it: the event's id
    let position = position.map(|p| p.to_str().unwrap().to_owned());
    assert_eq!(position, ev.id, "X-Herald-Position");
    // replayed like every change
    let mut replay = h.events(&token, &format!("?last_event_id={start}")).await;
    let first = replay.next_event().await;
    let second = replay.next_event().await;
    assert_eq!(
        (first.event.as_str(), second.event.as_str()),
        ("notification", "updated")
    );
    assert_eq!(second.json()["action"], n["action"]);
    let (status, err) = take(&h, &token, &id, "ack").await;
    assert_error(status, &err, 409, "conflict");
    // a path needs --upstream
    let id = publish_with(
        &h,
        "alice",
        json!([{"id": "go", "label": "Go", "path": "/api/echo"}]),
    )
    .await;
    assert_eq!(sse.next_event().await.event, "notification");
    let (status, err) = take(&h, &token, &id, "go").await;
    assert_error(status, &err, 400, "invalid_request");
    let n = listed(&h, &id).await;
    assert!(n["action"].is_null() && n["read_at"].is_null(), "{n}");
    let more = sse.try_next(Duration::from_millis(300)).await;
    assert!(more.is_none(), "{more:?}");
}

async fn an_unreachable_upstream_records_nothing(mode: Mode) {
    let (closed, _bound) = closed_url();
    let h = Setup::new(mode, &["--upstream", &closed]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let id = publish_with(
        &h,
        "alice",
        json!([{"id": "approve", "label": "Approve", "path": "/api/echo"}]),
    )
    .await;
    assert_eq!(sse.next_event().await.event, "notification");
    let (status, err) = take(&h, &token, &id, "approve").await;
    assert_error(status, &err, 502, "bad_gateway");
    let n = listed(&h, &id).await;
    assert!(n["action"].is_null() && n["read_at"].is_null(), "{n}");
    let more = sse.try_next(Duration::from_millis(300)).await;
    assert!(more.is_none(), "{more:?}");
    // still takeable: it fails the same way, not with a conflict
    let (status, err) = take(&h, &token, &id, "approve").await;
    assert_error(status, &err, 502, "bad_gateway");
}

async fn a_slow_upstream_records_nothing(mode: Mode) {
    let up = EchoUpstream::start().await;
    let h = Setup::new(
        mode,
        &["--upstream", &up.url, "--upstream-timeout", "500ms"],
    );
    let token = user_token("alice");
    let id = publish_slow_action(&h).await;
    let (status, err) = take(&h, &token, &id, "approve").await;
    assert_error(status, &err, 504, "gateway_timeout");
    let n = listed(&h, &id).await;
    assert!(n["action"].is_null() && n["read_at"].is_null(), "{n}");
}

/// Takes of two actions of one notification at the same time: one is taken (200), every other
/// gets 409, and the upstream sees that one action, once.
async fn racing_takes_send_one_action_once(mode: Mode) {
    let up = EchoUpstream::start().await;
    let h = Setup::new(mode, &["--upstream", &up.url]);
    let token = user_token("alice");
    for round in 0..3 {
        let id = publish_with(
            &h,
            "alice",
            json!([
                {"id": "approve", "label": "Approve", "path": "/api/record/200"},
                {"id": "reject", "label": "Reject", "path": "/api/record/201"},
            ]),
        )
        .await;
        let takes = (0..8).map(|i| take(&h, &token, &id, ["approve", "reject"][i % 2]));
        let answers = futures_util::future::join_all(takes).await;
        let mut taken = Vec::new();
        for (status, body) in &answers {
            match status {
                200 => taken.push(body["action"]["id"].as_str().unwrap().to_owned()),
                _ => assert_error(*status, body, 409, "conflict"),
            }
        }
        assert_eq!(taken.len(), 1, "{answers:?}");
        let got = up.recorded();
        assert_eq!(got.len(), round + 1, "{got:?}");
        let sent = &got[round]["path"];
        assert_eq!(
            sent,
            ["/record/200", "/record/201"][usize::from(taken[0] == "reject")]
        );
        assert_eq!(listed(&h, &id).await["action"]["id"], taken[0].as_str());
    }
}

/// While one action of a notification is being sent upstream, taking another one that has no
/// path is 409 too (it would be recorded while the backend acts on the first); once the send
/// ends without a record (504), it can be taken.
async fn a_take_without_path_waits_for_one_being_sent(mode: Mode) {
    let up = EchoUpstream::start().await;
    let h = Setup::new(mode, &["--upstream", &up.url, "--upstream-timeout", "1s"]);
    let token = user_token("alice");
    let id = publish_with(
        &h,
        "alice",
        json!([
            {"id": "approve", "label": "Approve", "path": "/api/slow"},
            {"id": "dismiss", "label": "Dismiss"},
        ]),
    )
    .await;
    let sending = take(&h, &token, &id, "approve");
    let meanwhile = async {
        // once the first is at the upstream
        wait_for("the action did not reach the upstream", async || {
            up.hits() > 0
        })
        .await;
        take(&h, &token, &id, "dismiss").await
    };
    let ((sent, timed_out), (status, err)) = tokio::join!(sending, meanwhile);
    assert_error(status, &err, 409, "conflict");
    assert_error(sent, &timed_out, 504, "gateway_timeout");
    let (status, n) = take(&h, &token, &id, "dismiss").await;
    assert_eq!(
        (status, &n["action"]["id"]),
        (200, &json!("dismiss")),
        "{n}"
    );
}

/// A publish with the collapse key of a notification whose action is at the upstream does not
/// replace it: it is stored beside it, and the action is recorded on the notification the
/// upstream was sent (before, the collapse removed it, the take answered 404 with the backend
/// having acted, and the new notification offered the action again).
async fn a_collapse_passes_by_a_notification_whose_action_is_being_sent(mode: Mode) {
    let up = EchoUpstream::start().await;
    let h = Setup::new(mode, &["--upstream", &up.url, "--upstream-timeout", "10s"]);
    let token = user_token("alice");
    let publish = async |title: &str| {
        let notification = json!({"title": title, "collapse_key": "deploy",
            "actions": [{"id": "approve", "label": "Approve", "path": "/api/slow"}]});
        let (status, body) = h
            .publish(json!({"users": ["alice"], "notification": notification}))
            .await;
        assert_eq!(status, 202, "{body}");
        body["ids"]["alice"].as_str().unwrap().to_owned()
    };
    let first = publish("Deploy 1?").await;
    let sending = take(&h, &token, &first, "approve");
    let meanwhile = async {
        wait_for("the action did not reach the upstream", async || {
            up.hits() > 0
        })
        .await;
        publish("Deploy 2?").await
    };
    let ((status, taken), second) = tokio::join!(sending, meanwhile);
    assert_eq!((status, &taken["id"]), (200, &json!(first)), "{taken}");
    assert_eq!(taken["action"]["status"], 200, "{taken}");
    let n = listed(&h, &second).await;
    assert_eq!(
        (&n["count"], &n["replaces"]),
        (&json!(1), &Value::Null),
        "{n}"
    );
    assert!(n["action"].is_null() && n["read_at"].is_null(), "{n}");
    assert_eq!(up.hits(), 1);
    let page = h.list(&token, "").await;
    assert_eq!(page["unread_count"], 1, "{page}");
    // the new one collapses as usual once the first is read
    let third = publish("Deploy 3?").await;
    let n = listed(&h, &third).await;
    assert_eq!(
        (&n["count"], &n["replaces"]),
        (&json!(2), &json!(second)),
        "{n}"
    );
}

async fn action_input_is_checked(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let action = |id: &str| json!({"id": id, "label": id});
    for actions in [
        json!([action("a"), action("b"), action("c"), action("d")]),
        json!([{"id": "a", "label": "A", "path": "/admin/x"}]),
        json!([{"id": "a", "label": "A", "path": "api/x"}]),
        json!([{"id": "a", "label": "A", "path": "/api/../admin"}]),
        json!([{"id": "a", "label": "A", "path": "/api/%2E%2e/admin"}]),
        json!([{"id": "a", "label": "A", "path": "/api/x%2fy"}]),
        json!([{"id": "a", "label": "A", "path": "/api/x\ty"}]),
        json!([{"id": "a", "label": "A", "path": "/api/x\u{a0}y"}]),
        json!([action("a"), action("a")]),
        json!([{"id": "a", "label": "A", "method": "TELEPORT", "path": "/api/x"}]),
        json!([{"id": "", "label": "A"}]),
    ] {
        let (status, err) = h
            .publish(
                json!({"users": ["alice"], "notification": {"title": "t", "actions": actions}}),
            )
            .await;
        assert_names(status, &err, "actions");
    }
    assert_eq!(h.tray_len("alice").await, 0);
    // three is fine
    let id = publish_with(&h, "alice", json!([action("a"), action("b"), action("c")])).await;
    // it takes no body, but one over 1 MiB is refused like any (413), and nothing is taken
    let path = format!("/notifications/{id}/actions/a");
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, err) = send(
        h.http
            .post(h.url(&path))
            .bearer_auth(user_token("alice"))
            .body(big),
    )
    .await;
    assert_error(status, &err, 413, "too_large");
    assert!(listed(&h, &id).await["action"].is_null());
    // a service token can't take an action; a cookie needs an allowed Origin
    let (status, err) = take(&h, &service_token(), &id, "a").await;
    assert_error(status, &err, 401, "unauthorized");
    let cookie = h.login("alice").await;
    let (status, err) = send(
        h.http
            .post(h.url(&path))
            .header("cookie", &cookie)
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_error(status, &err, 403, "forbidden");
    assert!(listed(&h, &id).await["action"].is_null());
    // with the node's own Origin it goes through
    let (status, n) = send(
        h.http
            .post(h.url(&path))
            .header("cookie", &cookie)
            .header("origin", &h.base),
    )
    .await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(n["action"]["id"], "a");
}

/// Redis away just when the upstream has answered: the take answers 503, and the action, which
/// the backend has seen, is recorded once Redis is back (before, the claim expired unrecorded
/// and the next take sent the action a second time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_sent_while_redis_is_away_is_recorded_once_it_is_back() {
    let up = EchoUpstream::start().await;
    let redis = Redis::start();
    let h = Herald::start(
        Some(&redis.url()),
        &["--upstream", &up.url, "--upstream-timeout", "5s"],
    );
    let token = user_token("alice");
    let id = publish_slow_action(&h).await;
    let mut sse = h.events(&token, "").await;
    let taking = take(&h, &token, &id, "approve");
    let meanwhile = async {
        wait_for("the action did not reach the upstream", async || {
            up.hits() > 0
        })
        .await;
        // `/slow` answers after 3 s: Redis is away then
        redis.pause();
    };
    let ((status, err), ()) = tokio::join!(taking, meanwhile);
    assert_error(status, &err, 503, "unavailable");
    redis.resume();
    let updated = sse.expect("updated").await;
    assert_eq!(updated.json()["action"]["id"], "approve");
    assert_eq!(updated.json()["action"]["status"], 200);
    let (status, err) = take(&h, &token, &id, "approve").await;
    assert_error(status, &err, 409, "conflict");
    assert_eq!(up.hits(), 1, "the action was sent again");
}
