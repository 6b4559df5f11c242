//! What bounds each request: a publish to ~90k users shares the node (O(n) work, yields
//! between chunks), a store failure part-way names the users stored, stalled responses and
//! trickling bodies end at their timeouts, and request heads are capped at 32 KiB.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// M4: a 90k-user publish neither takes quadratic time nor stalls the node: `/healthz`,
/// polled meanwhile on its own connection, stays fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_fan_out_leaves_the_node_responsive() {
    let h = Herald::start(None, &[]);
    let users: Vec<String> = (0..90_000).map(|i| format!("u{i:06}")).collect();
    let mut body = json!({"users": users, "notification": {"title": "everyone"}});
    // duplicates are dropped, first-seen order kept
    body["users"].as_array_mut().unwrap().push(json!("u000007"));
    let started = Instant::now();
    let publish = {
        let (http, url) = (client(), h.url("/publish"));
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(service_token())
                .json(&body)
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .unwrap();
            status_json(r).await
        })
    };
    let probe = client();
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while !publish.is_finished() && started.elapsed() < Duration::from_secs(120) {
        let t = Instant::now();
        let r = probe.get(h.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        slowest = slowest.max(t.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, answer) = publish.await.unwrap();
    println!(
        "90k-user publish took {:?}; slowest of {probes} /healthz: {slowest:?}",
        started.elapsed()
    );
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["count"], 90_000);
    assert_eq!(answer["ids"].as_object().unwrap().len(), 90_000);
    assert!(probes > 0);
    assert!(
        slowest < Duration::from_secs(1),
        "/healthz took {slowest:?}"
    );
    assert_eq!(h.tray_len("u089999").await, 1);
}

/// L7: a store failure part-way through a multi-user publish answers 503 `unavailable` and
/// names, in `error.stored`, the users whose notification is stored, so a retry can skip
/// them. The failure is made deterministic by a key of the wrong type for one user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_publish_names_the_users_stored() {
    let redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    for suffix in ["items", "order", "unread"] {
        let _: () = redis::cmd("SET")
            .arg(format!("herald:{{u:poison}}:{suffix}"))
            .arg("not a tray")
            .query(&mut conn)
            .unwrap();
    }
    let mut users: Vec<String> = (0..300).map(|i| format!("p{i:03}")).collect();
    users.insert(100, "poison".into());
    let (status, body) = h
        .publish(json!({"users": users, "notification": {"title": "partial"}}))
        .await;
    assert_error(status, &body, 503, "unavailable");
    let stored = body["error"]["stored"].as_object().expect("error.stored");
    assert!(!stored.contains_key("poison"), "{body}");
    // chunks before the failing one are stored; nothing after its chunk is attempted
    for user in &users[..96] {
        assert!(stored.contains_key(user), "{user} missing from {body}");
    }
    assert!(stored.len() < 200, "{}", stored.len());
    for (user, id) in stored.iter().step_by(10) {
        assert_eq!(h.tray_ids(user, "").await, vec![id.as_str().unwrap()]);
    }
    let unstored = users
        .iter()
        .rev()
        .find(|u| !stored.contains_key(*u))
        .unwrap();
    assert_eq!(h.tray_len(unstored).await, 0);
    // the retry names only the others (with an idempotency_key it could resend all safely)
    let rest: Vec<&String> = users
        .iter()
        .filter(|u| !stored.contains_key(*u) && *u != "poison")
        .collect();
    let (status, body) = h
        .publish(json!({"users": rest, "notification": {"title": "partial"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(h.tray_len(unstored).await, 1);
    assert_eq!(h.tray_len(&users[0]).await, 1);
}
