//! The admin view (`--admin`): off by default (every `/admin` path is 404); the page is served
//! without auth under a strict CSP, also under `--base-path`; `/admin/nodes` and `/admin/tail`
//! take a service token (401 / 403 otherwise); nodes of one Redis are all listed with their
//! open streams; a tail shows that user's changes only, is no stream of the user, keeps the
//! user's channel on its node, pings, and ends on SIGTERM.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_modes;
use crate::common::*;

fn admin_node(mode: Mode) -> Setup {
    Setup::new(mode, &["--admin"])
}

/// Open `/admin/tail?user=<user>` with the service token; waits for its `ready`.
async fn tail(h: &Herald, user: &str) -> Sse {
    let req = h
        .http
        .get(h.url(&format!("/admin/tail?user={user}")))
        .bearer_auth(service_token());
    let mut sse = h.events_with(req).await;
    let ready = sse.next_event().await;
    assert_eq!(ready.event, "ready", "{ready:?}");
    assert_eq!(ready.json()["user"], user);
    sse
}

/// The `/admin/nodes` list.
async fn nodes(h: &Herald) -> Vec<Value> {
    let (status, body) = h.get("/admin/nodes", &service_token()).await;
    assert_eq!(status, 200, "{body}");
    body["nodes"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_every_admin_path_is_404() {
    for env in [None, Some("no")] {
        let env: Vec<(&str, &str)> = env.map(|v| ("HERALD_ADMIN", v)).into_iter().collect();
        let args: Vec<String> = ["--listen", "127.0.0.1:0", "--jwt-secret", SECRET]
            .map(String::from)
            .to_vec();
        let h = Herald::spawn_env(&args, &env);
        for path in [
            "/admin",
            "/admin/",
            "/admin/admin.js",
            "/admin/nodes",
            "/admin/tail?user=alice",
        ] {
            let (status, body) = h.get(path, &service_token()).await;
            assert_error(status, &body, 404, "not_found");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_without_auth_under_a_strict_csp() {
    // the env twin, with one of the boolean spellings the other flags take
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        SECRET,
        "--base-path",
        "/herald/",
    ]
    .map(String::from);
    let h = Herald::spawn_env(&args, &[("HERALD_ADMIN", "yes")]);
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // `/admin` sends the browser on to `admin/`, where the page's relative URLs resolve
    let r = send_raw(plain.get(h.url("/herald/admin"))).await;
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "admin/");

    let r = send_raw(h.http.get(h.url("/herald/admin"))).await;
    assert_eq!(r.status(), 200);
    assert!(r.url().path().ends_with("/herald/admin/"), "{}", r.url());
    let headers = r.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="admin.js"></script>"#));
    assert!(html.contains(r#"href="admin.css""#));
    // no inline script: every <script> names its file
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script type=\"module\" src=").count()
    );

    for (file, kind) in [("admin.js", "text/javascript"), ("admin.css", "text/css")] {
        let r = send_raw(h.http.get(h.url(&format!("/herald/admin/{file}")))).await;
        assert_eq!(r.status(), 200, "{file}");
        let content_type = r.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{file}: {content_type}");
    }
    // the page holds no data: its endpoints do, behind the token
    let (status, body) = send(h.http.get(h.url("/herald/admin/nodes"))).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = send(h.http.post(h.url("/herald/admin/nodes"))).await;
    assert_error(status, &body, 405, "method_not_allowed");
}

async fn nodes_needs_a_service_token(mode: Mode) {
    let h = admin_node(mode);
    let path = h.url("/admin/nodes");
    let (status, body) = send(h.http.get(&path)).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = send(h.http.get(&path).bearer_auth("not.a.jwt")).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = h.get("/admin/nodes", &user_token("alice")).await;
    assert_error(status, &body, 403, "forbidden");

    let _stream = h.events(&session_token("alice", "s1"), "").await;
    let listed = nodes(&h).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let me = &listed[0];
    assert_eq!(
        (
            me["self"].clone(),
            me["streams"].clone(),
            me["web_push"].clone()
        ),
        (json!(true), json!(1), json!(false))
    );
    assert!(me["node"].as_str().is_some_and(|n| !n.is_empty()), "{me}");
    let seen = me["last_seen_ms"].as_u64().unwrap();
    assert!((now() * 1000).abs_diff(seen) < 30_000, "{me}");
    // HEAD, like every JSON GET
    let head = send_raw(h.http.head(&path).bearer_auth(service_token())).await;
    assert_eq!(head.status(), 200);
}

async fn a_tail_shows_that_users_changes_only(mode: Mode) {
    let h = admin_node(mode);
    let mut tail = tail(&h, "alice").await;
    assert_eq!(tail.headers["content-type"], "text/event-stream");
    // a tail is no stream of the user
    let (_, presence) = h.get("/presence/alice", &service_token()).await;
    assert_eq!(presence["online"], false, "{presence}");

    h.notify("bob", "for bob").await;
    let id = h.notify("alice", "for alice").await;
    let seen = tail.next_event().await;
    assert_eq!(seen.event, "notification");
    assert_eq!(seen.json()["id"], id.as_str());
    assert_eq!(seen.json()["title"], "for alice");
    seen.position(); // the id: a stream would carry
    h.patch(
        &format!("/notifications/{id}"),
        &user_token("alice"),
        json!({"read": true}),
    )
    .await;
    let read = tail.next_event().await;
    assert_eq!(read.event, "read");
    assert_eq!(read.json()["ids"], json!([id]));

    // the user's own stream coming and going leaves the tail subscribed (Redis: the channel)
    let stream = h.events(&session_token("alice", "s1"), "").await;
    drop(stream);
    wait_for("the stream to close", async || {
        let (_, presence) = h.get("/presence/alice", &service_token()).await;
        presence["online"] == false
    })
    .await;
    let after = h.notify("alice", "after the stream left").await;
    assert_eq!(
        tail.expect("notification").await.json()["id"],
        after.as_str()
    );
}

async fn bad_tail_requests(mode: Mode) {
    let h = admin_node(mode);
    for query in [
        "",
        "?user=",
        "?user=%20alice",
        "?user=a%0Ab",
        "?user=al%FFice",
    ] {
        let (status, body) = h
            .get(&format!("/admin/tail{query}"), &service_token())
            .await;
        assert_error(status, &body, 400, "invalid_request");
    }
    let (status, body) = send(h.http.get(h.url("/admin/tail?user=alice"))).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = h.get("/admin/tail?user=alice", &user_token("alice")).await;
    assert_error(status, &body, 403, "forbidden");
}

both_modes!(
    nodes_needs_a_service_token,
    a_tail_shows_that_users_changes_only,
    bad_tail_requests
);

/// Two nodes of one Redis: each lists both, with the streams open on each (the other's as of
/// its last heartbeat); a tail on one node sees a publish made on the other; a node that
/// leaves is no longer listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_one_redis_are_all_listed_with_their_streams() {
    let redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &["--admin", "--node-id", "node-a"]);
    let mut b = Herald::start(Some(&redis.url()), &["--admin", "--node-id", "node-b"]);
    let _s1 = a.events(&session_token("alice", "s1"), "").await;
    let _s2 = a.events(&session_token("bob", "s2"), "").await;
    let _s3 = b.events(&session_token("carol", "s3"), "").await;
    let want = json!([["node-a", 2, true], ["node-b", 1, false]]);
    wait_for("both nodes listed with their streams", async || {
        let rows: Vec<Value> = nodes(&a)
            .await
            .iter()
            .map(|n| json!([n["node"], n["streams"], n["self"]]))
            .collect();
        json!(rows) == want
    })
    .await;

    let mut on_a = tail(&a, "dave").await;
    let id = b.notify("dave", "from node b").await;
    assert_eq!(on_a.next_event().await.json()["id"], id.as_str());

    assert!(b.terminate().is_some_and(|s| s.success()));
    let names: Vec<Value> = nodes(&a).await.iter().map(|n| n["node"].clone()).collect();
    assert_eq!(names, [json!("node-a")]);
}

/// A tail pings every `--heartbeat`, and SIGTERM ends it like any stream: the node exits well
/// within its long drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_pings_and_ends_on_sigterm() {
    let args = ["--admin", "--drain-timeout", "60s", "--heartbeat", "200ms"];
    let mut h = Herald::start(None, &args);
    let mut on = tail(&h, "alice").await;
    assert_eq!(on.try_next(Duration::from_millis(700)).await, None);
    assert!(on.comments >= 2, "{:?}", on.raw);
    assert!(on.raw.contains("\n\n: ping\n\n"), "{:?}", on.raw);
    let started = std::time::Instant::now();
    let status = h.terminate();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(on.ends_within(Duration::from_secs(2)).await);
}
