//! Web Push escalation against a real push service (`tests/push/receiver.py`, which checks
//! VAPID and decrypts with `http_ece`, not Herald's code): a user with no live stream gets a
//! push at once; a connected user who sees the notification within `--push-after` gets none,
//! one who does not gets exactly one; two nodes push once; a node with Web Push off leaves
//! the escalations to one with it on; `410` removes the subscription;
//! `429` then success delivers once; SIGTERM waits for a slow push service's answer; endpoints
//! off the allow-list are refused at subscribe time; everything is `404` while Web Push is off;
//! a live stream on another node makes the user connected; a node has at most 256 pushes in
//! flight.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::both_modes;
use crate::common::*;

both_modes!(
    an_offline_user_is_pushed_at_once,
    a_connected_user_is_pushed_only_when_unseen,
    a_first_subscription_takes_the_recent_unseen_notifications,
    a_first_subscription_takes_what_became_active_recently,
    an_unsnoozed_notification_escalates_again,
    a_short_snooze_escalates_from_its_end,
    gone_and_throttled_endpoints,
    a_retry_goes_only_where_a_first_try_would,
    a_snooze_takes_the_escalation_from_a_retrying_sender,
    subscriptions_are_checked,
    at_most_ten_subscriptions
);

/// A user keeps at most 10 subscriptions: an 11th drops the oldest, which is pushed no more.
async fn at_most_ten_subscriptions(mode: Mode) {
    let (_dir, push, args) = web_push("60s");
    let h = Setup::new(mode, &refs(&args));
    let token = user_token("tess");
    for i in 0..11 {
        let (status, _) = subscribe(&h, &token, &push.subscribe(&format!("s{i}")).await).await;
        assert_eq!(status, 201);
        // (their order is by the time they were made)
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.notify("tess", "to ten").await;
    for i in 1..11 {
        push.wait_messages(&format!("s{i}"), 1).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        push.messages(Some("s0")).await.is_empty(),
        "the oldest was dropped"
    );
}

/// A node has at most 256 push requests in flight: a publish to 300 offline users, each with
/// a subscription at a slow push service, pushes to every one of them once, never to more
/// than 256 at a time (without the bound, all 300 at once: a socket each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_requests_in_flight_are_capped() {
    let (_dir, push, args) = web_push("60s");
    let h = Setup::new(Mode::Embedded, &refs(&args));
    let users: Vec<String> = (0..300).map(|i| format!("u{i}")).collect();
    let setups = users.iter().map(async |user| {
        push.respond_slowly(user, Duration::from_millis(1500)).await;
        let (status, _) = subscribe(&h, &user_token(user), &push.subscribe(user).await).await;
        assert_eq!(status, 201);
    });
    futures_util::stream::iter(setups)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let (status, body) = h
        .publish(json!({"users": users, "notification": {"title": "to all"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let deadline = std::time::Instant::now() + 2 * WAIT;
    let messages = loop {
        let messages = push.messages(None).await;
        let answered = messages.iter().filter(|m| !m["answered_at"].is_null());
        if answered.count() >= users.len() {
            break messages;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} pushes answered",
            messages.len(),
            users.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut names: Vec<&str> = messages
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    let mut want: Vec<&str> = users.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(names, want, "each user pushed once");
    assert!(messages.iter().all(|m| m["status"] == 201), "{messages:?}");
    // The most in flight at once: each push from its arrival to its answer (less 50 ms, the
    // receiver's own lag in noting the answer, during which the next push may arrive).
    let at = |m: &Value, field: &str| m[field].as_f64().unwrap();
    let mut edges: Vec<(f64, i32)> = messages
        .iter()
        .flat_map(|m| [(at(m, "received_at"), 1), (at(m, "answered_at") - 0.05, -1)])
        .collect();
    edges.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let most = edges
        .iter()
        .scan(0, |open, (_, step)| {
            *open += step;
            Some(*open)
        })
        .max()
        .unwrap();
    println!("at most {most} pushes in flight");
    assert!(most <= 256, "{most} pushes in flight at once");
}

/// A VAPID key made by `herald vapid-keys`: (the PEM file, the public key).
fn vapid_key(dir: &TempDir) -> (String, String) {
    let out = std::process::Command::new(bin())
        .arg("vapid-keys")
        .output()
        .expect("herald vapid-keys");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (pem, public) = text.split_once("public_key: ").expect("a public_key line");
    let path = dir.0.join("vapid.pem");
    std::fs::write(&path, pem).unwrap();
    (
        path.to_string_lossy().into_owned(),
        public.trim().to_owned(),
    )
}

/// A push service and the flags that turn Web Push on against it, with `--push-after`
/// `after`; the directory holds the VAPID key the flags name.
fn web_push(after: &str) -> (TempDir, PushService, Vec<String>) {
    let dir = TempDir::new("vapid");
    let (key, _) = vapid_key(&dir);
    let push = PushService::start();
    let args = push_args(&push, &key, after);
    (dir, push, args)
}

/// Flags that turn Web Push on against `push`, with `--push-after`.
fn push_args(push: &PushService, key: &str, after: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--vapid-private-key",
        key,
        "--vapid-subject",
        "mailto:ops@example.com",
        "--push-after",
        after,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(push.herald_args());
    args
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

async fn subscribe(h: &Herald, token: &str, sub: &Value) -> (u16, Value) {
    send(
        client()
            .post(h.url("/push/subscriptions"))
            .bearer_auth(token)
            .json(sub),
    )
    .await
}

/// A push service the operator allowed by name (a private one) is called at the address
/// the name resolves to, loopback here; the default push services only at public ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_private_push_service_is_called_by_name() {
    let (_dir, push, mut args) = web_push("60s");
    let at = args.iter().position(|a| a == "127.0.0.1").unwrap();
    args[at] = "localhost".into();
    let h = Setup::new(Mode::Embedded, &refs(&args));
    let mut sub = push.subscribe("lou").await;
    let endpoint = sub["endpoint"]
        .as_str()
        .unwrap()
        .replace("127.0.0.1", "localhost");
    sub["endpoint"] = json!(endpoint);
    let token = user_token("lou");
    let (status, _) = subscribe(&h, &token, &sub).await;
    assert_eq!(status, 201);
    let id = h.notify("lou", "to a private push service").await;
    let got = push.wait_messages("lou", 1).await;
    assert_eq!(got[0]["payload"]["id"], id.as_str(), "{got:?}");
}

async fn an_offline_user_is_pushed_at_once(mode: Mode) {
    let dir = TempDir::new("vapid");
    let (key, public) = vapid_key(&dir);
    let push = PushService::start();
    push.expect_key(&public).await;
    let h = Setup::new(mode, &refs(&push_args(&push, &key, "60s")));
    let (status, body) = send(client().get(h.url("/push/key"))).await;
    assert_eq!((status, body), (200, json!({"public_key": public})));
    let token = user_token("alice");
    let (status, _) = subscribe(&h, &token, &push.subscribe("alice").await).await;
    assert_eq!(status, 201);
    let (_, published) = h
        .publish(json!({"users": ["alice"], "notification": {
            "title": "Deploy failed", "body": "prod", "link": "/d/1", "category": "ops",
            "critical": true}}))
        .await;
    let id = published["ids"]["alice"].as_str().unwrap().to_owned();
    let got = push.wait_messages("alice", 1).await;
    let m = &got[0];
    assert_eq!(m["error"], Value::Null, "{m}");
    assert_eq!(m["vapid_ok"], true);
    assert_eq!(
        m["payload"],
        json!({"id": id, "title": "Deploy failed", "body": "prod", "link": "/d/1",
               "category": "ops", "unread_count": 1})
    );
    assert_eq!(m["urgency"], "high", "critical");
    assert_eq!(m["topic"], Value::Null, "no collapse_key, no Topic");
    let ttl = m["ttl"].as_u64().unwrap();
    assert!(ttl > 3600 && ttl <= 86_400, "{ttl}");
    // once: nothing more comes
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(push.messages(Some("alice")).await.len(), 1);
    assert!(h.metric("herald_pushes_sent_total").await >= 1.0);
    // a body too long for a push message (push services need only take 4,096 bytes) is
    // shortened to fit, not refused
    let long = "é".repeat(5000);
    h.publish(json!({"users": ["alice"], "notification": {"title": "long", "body": long}}))
        .await;
    let got = push.wait_messages("alice", 2).await;
    assert_eq!(got[1]["error"], Value::Null, "{}", got[1]);
    let body = got[1]["payload"]["body"].as_str().unwrap();
    assert!(
        body.ends_with('…') && long.starts_with(body.trim_end_matches('…')),
        "{body}"
    );
    assert!(body.len() > 3000, "{}", body.len());
    // a collapse_key gives a Topic (so a push service replaces the undelivered message of
    // the notification it replaced), the same for the next one; the TTL ends at expires_at
    let mut topics = Vec::new();
    for (i, title) in ["build 1", "build 2"].into_iter().enumerate() {
        h.publish(json!({"users": ["alice"], "notification": {"title": title,
            "collapse_key": "build", "expires_at": in_secs(600)}}))
            .await;
        let m = push.wait_messages("alice", 3 + i).await.remove(2 + i);
        assert_eq!(m["error"], Value::Null, "{m}");
        let ttl = m["ttl"].as_u64().unwrap();
        assert!(ttl > 500 && ttl <= 600, "{ttl}");
        topics.push(m["topic"].as_str().expect("a Topic").to_owned());
    }
    assert_eq!(topics[0], topics[1]);
    assert_eq!(topics[0].len(), 32, "{topics:?}");
}

async fn a_connected_user_is_pushed_only_when_unseen(mode: Mode) {
    let (_dir, push, args) = web_push("2s");
    let h = Setup::new(mode, &refs(&args));
    let token = user_token("bob");
    subscribe(&h, &token, &push.subscribe("bob").await).await;
    let mut sse = h.events(&token, "").await;
    let seen = h.notify("bob", "seen in time").await;
    sse.expect("notification").await;
    let (status, _) = h
        .patch(
            &format!("/notifications/{seen}"),
            &token,
            json!({"seen": true}),
        )
        .await;
    assert_eq!(status, 200);
    // archived before its push: never pushed, also once unarchived
    let archived = h.notify("bob", "archived in time").await;
    sse.expect("notification").await;
    for archive in [true, false] {
        let path = format!("/notifications/{archived}");
        let (status, _) = h.patch(&path, &token, json!({"archived": archive})).await;
        assert_eq!(status, 200);
    }
    let unseen = h.notify("bob", "left unseen").await;
    let got = push.wait_messages("bob", 1).await;
    assert_eq!(got[0]["payload"]["id"], unseen.as_str(), "{got:?}");
    assert_eq!(got[0]["urgency"], "normal");
    // the seen one is never pushed, the unseen one once
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(push.messages(Some("bob")).await.len(), 1);
    assert!(h.metric("herald_push_escalations_cancelled_total").await >= 1.0);
    drop(sse);
}

/// A connected user's first subscription takes what was published within `--push-after`
/// before it and is still unseen: pushed when its `--push-after` ends, as if the subscription
/// had been there; older and seen ones are not pushed, and a second subscription pushes
/// nothing again. An offline user's notifications were due at once, to no subscription: a
/// later one gets only what comes after it.
async fn a_first_subscription_takes_the_recent_unseen_notifications(mode: Mode) {
    let (_dir, push, args) = web_push("2s");
    let h = Setup::new(mode, &refs(&args));
    // offline: only what is published after the subscription
    let dave = user_token("dave");
    h.notify("dave", "before").await;
    let (status, _) = subscribe(&h, &dave, &push.subscribe("dave").await).await;
    assert_eq!(status, 201);
    let after = h.notify("dave", "after").await;
    let got = push.wait_messages("dave", 1).await;
    assert_eq!(got[0]["payload"]["id"], after.as_str(), "{got:?}");
    // offline when it was published, then connected and subscribed within --push-after:
    // still only what comes after (the first was due at once, to no subscription)
    let frank = user_token("frank");
    h.notify("frank", "while offline").await;
    let mut connected = h.events(&frank, "").await;
    let (status, _) = subscribe(&h, &frank, &push.subscribe("frank").await).await;
    assert_eq!(status, 201);
    let later = h.notify("frank", "while connected").await;
    connected.expect("notification").await;
    let got = push.wait_messages("frank", 1).await;
    assert_eq!(got[0]["payload"]["id"], later.as_str(), "{got:?}");
    // connected: the unseen one of the last 2 s, at its push-after; the older and the seen
    // one never
    let carol = user_token("carol");
    let mut sse = h.events(&carol, "").await;
    h.notify("carol", "too old").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let seen = h.notify("carol", "seen").await;
    let (status, _) = h
        .patch(
            &format!("/notifications/{seen}"),
            &carol,
            json!({"seen": true}),
        )
        .await;
    assert_eq!(status, 200);
    let unseen = h.notify("carol", "unseen").await;
    sse.expect("notification").await;
    let (status, _) = subscribe(&h, &carol, &push.subscribe("carol").await).await;
    assert_eq!(status, 201);
    let got = push.wait_messages("carol", 1).await;
    assert_eq!(got[0]["payload"]["id"], unseen.as_str(), "{got:?}");
    // a second subscription of carol's is not a first: nothing is pushed again
    let (status, _) = subscribe(&h, &carol, &push.subscribe("carol-2").await).await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(push.messages(Some("dave")).await.len(), 1);
    assert_eq!(push.messages(Some("frank")).await.len(), 1);
    assert_eq!(push.messages(Some("carol")).await.len(), 1);
    assert!(push.messages(Some("carol-2")).await.is_empty());
    drop((sse, connected));
}

/// "Pushed `--push-after` after it became active": a connected user's first subscription
/// also takes a notification made earlier that became active within `--push-after` before it,
/// delivered at its `deliver_at`, woken from a snooze or unsnoozed by hand, pushed
/// `--push-after` after that.
async fn a_first_subscription_takes_what_became_active_recently(mode: Mode) {
    let (_dir, push, args) = web_push("2s");
    let h = Setup::new(mode, &refs(&args));
    let erin = user_token("erin");
    let mut sse = h.events(&erin, "").await;
    let (status, body) = h
        .publish(
            json!({"users": ["erin"], "notification": {"title": "held", "deliver_at": in_secs(3)}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let held = body["ids"]["erin"].as_str().unwrap().to_owned();
    let snoozed = h.notify("erin", "snoozed").await;
    let unsnoozed = h.notify("erin", "unsnoozed").await;
    for (id, secs) in [(&snoozed, 3), (&unsnoozed, 60)] {
        sse.expect("notification").await;
        let path = format!("/notifications/{id}");
        let body = json!({"snoozed_until": in_secs(secs)});
        assert_eq!(h.patch(&path, &erin, body).await.0, 200);
    }
    sse.expect("updated").await;
    sse.expect("updated").await;
    // Both active again about 3 s after they were made, more than --push-after ago.
    let mut woke = vec![
        sse.expect("notification").await.json()["id"].clone(),
        sse.expect("notification").await.json()["id"].clone(),
    ];
    woke.sort_by_key(|id| id.to_string());
    let mut want = vec![json!(held), json!(snoozed)];
    want.sort_by_key(|id| id.to_string());
    assert_eq!(woke, want);
    let path = format!("/notifications/{unsnoozed}");
    let body = json!({"snoozed_until": null});
    assert_eq!(h.patch(&path, &erin, body).await.0, 200);
    sse.expect("notification").await;
    want.push(json!(unsnoozed));
    want.sort_by_key(|id| id.to_string());
    let (status, _) = subscribe(&h, &erin, &push.subscribe("erin").await).await;
    assert_eq!(status, 201);
    let got = push.wait_messages("erin", 3).await;
    let mut pushed: Vec<Value> = got.iter().map(|m| m["payload"]["id"].clone()).collect();
    pushed.sort_by_key(|id| id.to_string());
    assert_eq!(pushed, want, "{got:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(push.messages(Some("erin")).await.len(), 3);
    drop(sse);
}

/// A connected user's notification, snoozed for `secs` with Web Push on (`--push-after`
/// `after`): the node, push service, token, stream and the notification's id and path.
struct Snoozed {
    _dir: TempDir,
    push: PushService,
    h: Setup,
    token: String,
    sse: Sse,
    id: String,
    path: String,
}

async fn snoozed(mode: Mode, user: &str, after: &str, secs: u64) -> Snoozed {
    let (dir, push, args) = web_push(after);
    let h = Setup::new(mode, &refs(&args));
    let token = user_token(user);
    subscribe(&h, &token, &push.subscribe(user).await).await;
    let mut sse = h.events(&token, "").await;
    let id = h.notify(user, "snoozed").await;
    sse.expect("notification").await;
    let path = format!("/notifications/{id}");
    let (status, _) = h
        .patch(&path, &token, json!({"snoozed_until": in_secs(secs)}))
        .await;
    assert_eq!(status, 200);
    sse.expect("updated").await;
    Snoozed {
        _dir: dir,
        push,
        h,
        token,
        sse,
        id,
        path,
    }
}

impl Snoozed {
    /// Clear the snooze by hand (`snoozed_until: null`): the notification is active again.
    async fn unsnooze(&mut self) {
        let body = json!({"snoozed_until": null});
        let (status, _) = self.h.patch(&self.path, &self.token, body).await;
        assert_eq!(status, 200);
        self.sse.expect("notification").await;
    }

    /// The notification is pushed, and once only.
    async fn pushed_once(&self, user: &str) {
        let got = self.push.wait_messages(user, 1).await;
        assert_eq!(got[0]["payload"]["id"], self.id.as_str(), "{got:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(self.push.messages(Some(user)).await.len(), 1);
    }
}

/// A notification snoozed before its push is not pushed while snoozed; cleared by hand
/// (`snoozed_until: null`), it is active again and escalates as at a snooze's end.
async fn an_unsnoozed_notification_escalates_again(mode: Mode) {
    let mut n = snoozed(mode, "dora", "1s", 3600).await;
    // past --push-after: not pushed while snoozed
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(n.push.messages(Some("dora")).await.is_empty());
    n.unsnooze().await;
    n.pushed_once("dora").await;
}

/// A snooze that ends before `--push-after` has passed still cancels the escalation begun
/// at the publish: the notification is pushed `--push-after` after it is active again, once.
async fn a_short_snooze_escalates_from_its_end(mode: Mode) {
    let mut n = snoozed(mode, "erin", "4s", 2).await;
    n.sse.expect("notification").await;
    // The publish's escalation would have pushed 4 s after it, ~2 s after the snooze's end.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(n.push.messages(Some("erin")).await.is_empty());
    n.pushed_once("erin").await;
}

/// Redis: a sender that was handling the escalation when a snooze dropped it may still write
/// its stage back (`push_later`), with no due time beside it. That stray stage is no
/// escalation: the snooze's end escalates all the same.
#[tokio::test]
async fn a_stray_stage_does_not_block_the_snooze_end() {
    let mut n = snoozed(Mode::Redis, "fay", "1s", 3600).await;
    let mut conn = n.h._redis.as_ref().unwrap().conn();
    let _: () = ::redis::cmd("HSET")
        .arg("herald:{u:fay}:pushstage")
        .arg(&n.id)
        .arg("send")
        .query(&mut conn)
        .unwrap();
    n.unsnooze().await;
    n.pushed_once("fay").await;
}

/// A snooze while a push waits for its retry (`429`, `Retry-After: 3`) takes the escalation
/// from its sender: the snooze's end escalates afresh (no live stream: pushed at once), and
/// the old sender's retry no longer goes. Before, both pushed.
async fn a_snooze_takes_the_escalation_from_a_retrying_sender(mode: Mode) {
    let (_dir, push, args) = web_push("60s");
    let h = Setup::new(mode, &refs(&args));
    let token = user_token("ivy");
    subscribe(&h, &token, &push.subscribe("ivy").await).await;
    push.respond("ivy", &[429], Some("3")).await;
    let id = h.notify("ivy", "retried").await;
    assert_eq!(push.wait_answered("ivy", 1).await[0]["status"], 429);
    let path = format!("/notifications/{id}");
    let (status, _) = h
        .patch(&path, &token, json!({"snoozed_until": in_secs(1)}))
        .await;
    assert_eq!(status, 200);
    let got = push.wait_answered("ivy", 2).await;
    assert_eq!(got[1]["status"], 201, "{got:?}");
    assert_eq!(got[1]["payload"]["id"], id.as_str());
    // past the old sender's retry
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(push.messages(Some("ivy")).await.len(), 2);
}

async fn gone_and_throttled_endpoints(mode: Mode) {
    let (_dir, push, args) = web_push("60s");
    let h = Setup::new(mode, &refs(&args));
    let token = user_token("carol");
    subscribe(&h, &token, &push.subscribe("slow").await).await;
    subscribe(&h, &token, &push.subscribe("gone").await).await;
    subscribe(&h, &token, &push.subscribe("missing").await).await;
    push.respond("slow", &[429, 201], Some("1")).await;
    push.respond("gone", &[410], None).await;
    push.respond("missing", &[404], None).await;
    h.notify("carol", "one").await;
    let slow = push.wait_answered("slow", 2).await;
    assert_eq!(slow[0]["status"], 429);
    assert_eq!(slow[1]["status"], 201);
    let waited =
        slow[1]["received_at"].as_f64().unwrap() - slow[0]["received_at"].as_f64().unwrap();
    assert!(waited >= 0.9, "Retry-After honoured: {waited}");
    assert_eq!(push.wait_answered("gone", 1).await[0]["status"], 410);
    assert_eq!(push.wait_answered("missing", 1).await[0]["status"], 404);
    // the gone subscriptions were removed: the next notification reaches the other one only
    wait_for("the subscriptions to go", async || {
        h.metric("herald_push_subscriptions_removed_total").await >= 2.0
    })
    .await;
    h.notify("carol", "two").await;
    push.wait_messages("slow", 3).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(push.messages(Some("gone")).await.len(), 1);
    assert_eq!(push.messages(Some("missing")).await.len(), 1);
    assert_eq!(push.messages(Some("slow")).await.len(), 3);
    // a backoff that would pass the TTL (here 6 s: tries at 0 and 2 s, then 4 s later)
    // becomes one last try before it runs out
    let erin = user_token("erin");
    subscribe(&h, &erin, &push.subscribe("late").await).await;
    push.respond("late", &[503, 503, 201], None).await;
    h.publish(json!({"users": ["erin"], "notification": {"title": "soon gone", "expires_at": in_secs(6)}}))
        .await;
    let late = push.wait_answered("late", 3).await;
    assert_eq!(late[2]["status"], 201, "{late:?}");
    // `Retry-After: 0` is honoured (at least 250 ms), not the 2 s backoff; asked again and
    // again, the least wait doubles (250, 500, 1000 ms): no fixed four calls a second
    let hal = user_token("hal");
    subscribe(&h, &hal, &push.subscribe("now").await).await;
    push.respond("now", &[503, 503, 503, 201], Some("0")).await;
    h.notify("hal", "again at once").await;
    let now = push.wait_messages("now", 4).await;
    let at = |i: usize| now[i]["received_at"].as_f64().unwrap();
    let waits = [at(1) - at(0), at(2) - at(1), at(3) - at(2)];
    assert!((0.2..1.5).contains(&waits[0]), "{waits:?}");
    assert!(waits[1] >= 0.45 && waits[2] >= 0.95, "{waits:?}");
    // a `Retry-After` past the TTL is honoured: given up, no try before it (there was one
    // last try 1.5 s before the TTL ran out)
    let ivy = user_token("ivy");
    subscribe(&h, &ivy, &push.subscribe("patient").await).await;
    push.respond("patient", &[429, 201], Some("30")).await;
    h.publish(
        json!({"users": ["ivy"], "notification": {"title": "soon gone", "expires_at": in_secs(4)}}),
    )
    .await;
    wait_for("the push given up", async || {
        let text = h.text("/metrics").await;
        text.contains("herald_pushes_failed_total{reason=\"expired\"} 1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(push.messages(Some("patient")).await.len(), 1);
}

/// A push being retried (`429`, `Retry-After: 2`) is dropped when, by its retry, its
/// subscription was removed,
/// or taken by another user (someone else signed in on that browser: the endpoint is theirs
/// now), or its notification was read or deleted. Before, the retry reached the endpoint.
async fn a_retry_goes_only_where_a_first_try_would(mode: Mode) {
    let (_dir, push, args) = web_push("60s");
    let h = Setup::new(mode, &refs(&args));
    for name in ["removed", "taken", "read", "deleted"] {
        let user = format!("user-{name}");
        let token = user_token(&user);
        let sub = push.subscribe(name).await;
        assert_eq!(subscribe(&h, &token, &sub).await.0, 201);
        push.respond(name, &[429], Some("2")).await;
        let id = h.notify(&user, "retried").await;
        assert_eq!(push.wait_answered(name, 1).await[0]["status"], 429);
        let path = format!("/notifications/{id}");
        let status = match name {
            "removed" => {
                let req = client().delete(h.url("/push/subscriptions"));
                let body = json!({"endpoint": sub["endpoint"]});
                send(req.bearer_auth(&token).json(&body)).await.0
            }
            "taken" => subscribe(&h, &user_token("judy"), &sub).await.0,
            "read" => h.patch(&path, &token, json!({"read": true})).await.0,
            _ => h.patch(&path, &token, json!({"deleted": true})).await.0,
        };
        assert!((200..300).contains(&status), "{name}: {status}");
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert_eq!(
            push.messages(Some(name)).await.len(),
            1,
            "{name}: the retry went"
        );
    }
    // the taken endpoint is judy's now: her notifications reach it
    h.notify("judy", "mine").await;
    let got = push.wait_messages("taken", 2).await;
    assert_eq!(got[1]["payload"]["title"], "mine");
}

async fn subscriptions_are_checked(mode: Mode) {
    let (_dir, push, args) = web_push("60s");
    let h = Setup::new(mode, &refs(&args));
    let token = user_token("dave");
    let good = push.subscribe("dave").await;
    let with = |endpoint: &str| {
        let mut sub = good.clone();
        sub["endpoint"] = json!(endpoint);
        sub
    };
    for bad in [
        with("https://10.0.0.1/push/x"),
        with("http://127.0.0.1:1/push/x"),
        with("https://fcm.googleapis.com.evil.example/x"),
        with("not a url"),
        json!({"endpoint": good["endpoint"], "keys": {"p256dh": "AAAA", "auth": good["keys"]["auth"]}}),
        // 65 bytes in the uncompressed form, but not a point on the curve
        json!({"endpoint": good["endpoint"], "keys": {"p256dh": format!("BA{}", "A".repeat(85)), "auth": good["keys"]["auth"]}}),
        json!({"endpoint": good["endpoint"]}),
        json!({"endpoint": good["endpoint"], "keys": [good["keys"]["p256dh"], good["keys"]["auth"]]}),
        json!([good["endpoint"], good["keys"]]),
    ] {
        let (status, body) = subscribe(&h, &token, &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = send(client().post(h.url("/push/subscriptions")).json(&good)).await;
    assert_eq!(status, 401, "no token");
    let (status, _) = send(
        client()
            .delete(h.url("/push/subscriptions"))
            .bearer_auth(&token)
            .json(&json!({"endpoint": "https://127.0.0.1/never"})),
    )
    .await;
    assert_eq!(status, 204, "deleting one that is not there");
    // an endpoint is a browser's: subscribed by another user (who signed in on that
    // browser since), it no longer receives the first user's notifications; also when it is
    // spelled otherwise (the same URL once parsed)
    let shared = push.subscribe("shared").await;
    let mut respelled = shared.clone();
    let endpoint = shared["endpoint"].as_str().unwrap();
    respelled["endpoint"] = json!(format!("{}#again", endpoint.replace("127.0.0.1", "127.1")));
    for (user, sub) in [("frank", &shared), ("grace", &respelled)] {
        let (status, body) = subscribe(&h, &user_token(user), sub).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["endpoint"], endpoint, "{body}");
    }
    h.notify("frank", "for frank").await;
    h.notify("grace", "for grace").await;
    push.wait_messages("shared", 1).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = push.messages(Some("shared")).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["payload"]["title"], "for grace");
    // unsubscribed in either spelling: gone
    let (status, _) = send(
        client()
            .delete(h.url("/push/subscriptions"))
            .bearer_auth(user_token("grace"))
            .json(&json!({"endpoint": respelled["endpoint"]})),
    )
    .await;
    assert_eq!(status, 204);
    h.notify("grace", "after unsubscribing").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(push.messages(Some("shared")).await.len(), 1);
    // off without a key: every push endpoint is 404
    let off = Herald::start(None, &[]);
    let (status, _) = send(client().get(off.url("/push/key"))).await;
    assert_eq!(status, 404);
    let (status, _) = subscribe(&off, &token, &good).await;
    assert_eq!(status, 404);
}

/// Two nodes on one Redis, the user connected to neither: one push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_push_once() {
    let (_dir, push, args) = web_push("60s");
    let redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &refs(&args));
    let b = Herald::start(Some(&redis.url()), &refs(&args));
    let token = user_token("erin");
    subscribe(&a, &token, &push.subscribe("erin").await).await;
    for i in 0..4 {
        let node = if i % 2 == 0 { &a } else { &b };
        node.notify("erin", &format!("n{i}")).await;
    }
    push.wait_messages("erin", 4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ids = pushed_ids(&push, "erin").await;
    assert_eq!(ids.len(), 4, "{ids:?}");
    ids.dedup();
    assert_eq!(ids.len(), 4, "pushed twice: {ids:?}");
}

/// A node that dies while one subscription waits for its retry leaves the escalation (once its
/// lease runs out) to another node, which pushes to that subscription only: the one that took
/// the push already gets no second. (The lease's minute is skipped: the escalation is made due
/// again in Redis once the sender is killed.) Before, the other node pushed to both again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_taking_over_pushes_only_where_none_went() {
    let (_dir, push, args) = web_push("60s");
    let redis = Redis::start();
    let mut a = Herald::start(Some(&redis.url()), &refs(&args));
    let token = user_token("kim");
    subscribe(&a, &token, &push.subscribe("k1").await).await;
    subscribe(&a, &token, &push.subscribe("k2").await).await;
    push.respond("k2", &[503], Some("30")).await;
    let id = a.notify("kim", "once each").await;
    assert_eq!(push.wait_answered("k1", 1).await[0]["status"], 201);
    assert_eq!(push.wait_answered("k2", 1).await[0]["status"], 503);
    // the first tries' outcomes recorded, then the sender dies in its 30 s wait
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill();
    let b = Herald::start(Some(&redis.url()), &refs(&args));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut conn = redis.conn();
    let moved: i64 = ::redis::cmd("ZADD")
        .arg("herald:{u:kim}:pushdue")
        .arg("XX")
        .arg("CH")
        .arg(now)
        .arg(&id)
        .query(&mut conn)
        .unwrap();
    assert_eq!(moved, 1, "the escalation is pending");
    let _: () = ::redis::cmd("ZADD")
        .arg("herald:due")
        .arg(now)
        .arg("kim")
        .query(&mut conn)
        .unwrap();
    let k2 = push.wait_answered("k2", 2).await;
    assert_eq!(k2[1]["status"], 201, "{k2:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(push.messages(Some("k1")).await.len(), 1, "pushed twice");
    drop(b);
}

/// The notification ids of every push to `name` so far, sorted.
async fn pushed_ids(push: &PushService, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = push
        .messages(Some(name))
        .await
        .iter()
        .map(|m| m["payload"]["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Two nodes on one Redis with Web Push on only one of them (a rolling change of the flags):
/// what the node with it off publishes, wakes or unsnoozes still escalates, and its due ticks
/// leave the escalations to the node that sends them instead of cancelling them, also while
/// that node restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_web_push_off_leaves_pushes_to_one_with_it_on() {
    let (_dir, push, args) = web_push("60s");
    let redis = Redis::start();
    let mut on = Herald::start(Some(&redis.url()), &refs(&args));
    let off = Herald::start(Some(&redis.url()), &["--admin"]);
    let (_, listed) = off.get("/admin/nodes", &service_token()).await;
    let mut flags: Vec<bool> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["web_push"].as_bool().unwrap())
        .collect();
    flags.sort();
    assert_eq!(flags, [false, true], "{listed}");
    let token = user_token("gus");
    subscribe(&on, &token, &push.subscribe("gus").await).await;
    let a = off.notify("gus", "a").await;
    let b = off.notify("gus", "b").await;
    push.wait_messages("gus", 2).await;
    let mut conn = redis.conn();
    let pending = async |conn: &mut ::redis::Connection| -> usize {
        ::redis::cmd("ZCARD")
            .arg("herald:{u:gus}:pushdue")
            .query(conn)
            .unwrap()
    };
    // (an escalation still in flight would take the place of the ones below)
    wait_for("both pushes done", async || pending(&mut conn).await == 0).await;
    // a snooze that ends by itself, and one ended by the user, both on the node without it
    let (status, _) = off
        .patch(
            &format!("/notifications/{a}"),
            &token,
            json!({"snoozed_until": in_secs(2)}),
        )
        .await;
    assert_eq!(status, 200);
    let path = format!("/notifications/{b}");
    let (status, _) = off
        .patch(&path, &token, json!({"snoozed_until": in_secs(3600)}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = off
        .patch(&path, &token, json!({"snoozed_until": null}))
        .await;
    assert_eq!(status, 200);
    push.wait_messages("gus", 4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ids = pushed_ids(&push, "gus").await;
    let mut expected = vec![a.clone(), a, b.clone(), b];
    expected.sort();
    assert_eq!(ids, expected);

    // the node with Web Push on restarts: what the other node publishes meanwhile still
    // escalates and is left for it (within the hand-over time after the other node last saw
    // it), and is pushed once it is back
    assert!(on.terminate().expect("exits").success());
    tokio::time::sleep(Duration::from_secs(6)).await; // past the other node's next heartbeat
    let c = off.notify("gus", "while it restarts").await;
    tokio::time::sleep(Duration::from_secs(1)).await; // due ticks of the other node pass
    assert_eq!(pending(&mut conn).await, 1, "left, not cancelled");
    let _on = Herald::start(Some(&redis.url()), &refs(&args));
    let got = push.wait_messages("gus", 5).await;
    assert_eq!(got[4]["payload"]["id"], c.as_str());
}

/// SIGTERM while a push service is slow to answer: the node waits for the answer (within
/// `--drain-timeout`) before it exits, and marks the escalation done, so no node sends it
/// again when its lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_a_push_in_flight() {
    let (_dir, push, mut args) = web_push("60s");
    let redis = Redis::start();
    args.extend(["--drain-timeout", "10s"].map(str::to_owned));
    let mut a = Herald::start(Some(&redis.url()), &refs(&args));
    let token = user_token("fay");
    subscribe(&a, &token, &push.subscribe("fay").await).await;
    let delay = Duration::from_secs(2);
    push.respond_slowly("fay", delay).await;
    a.notify("fay", "slow").await;
    let got = push.wait_messages("fay", 1).await;
    assert_eq!(got[0]["status"], Value::Null, "still unanswered: {got:#?}");
    let asked = std::time::Instant::now();
    assert!(a.terminate().expect("exits within the drain").success());
    assert!(asked.elapsed() >= delay / 2, "exited before the answer");
    let got = push.messages(Some("fay")).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["status"], 201);
    let due: usize = ::redis::cmd("ZCARD")
        .arg("herald:{u:fay}:pushdue")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(due, 0, "the escalation is done, not left leased");
}

/// SIGTERM while a push waits for its retry: the node hands the escalation back at once (due at
/// the retry's time, for any node) and exits without waiting out its drain, and another node
/// retries it then, pushing only to the subscription that had not taken it, with the TTL still
/// counted from the first try. Before, the node slept through its drain to retry it itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_a_waiting_retry_to_another_node() {
    let (_dir, push, mut args) = web_push("60s");
    let redis = Redis::start();
    args.extend(["--drain-timeout", "60s"].map(str::to_owned));
    let mut a = Herald::start(Some(&redis.url()), &refs(&args));
    let token = user_token("hal");
    subscribe(&a, &token, &push.subscribe("h1").await).await;
    subscribe(&a, &token, &push.subscribe("h2").await).await;
    push.respond("h2", &[503], Some("5")).await;
    let id = a.notify("hal", "retried elsewhere").await;
    assert_eq!(push.wait_answered("h1", 1).await[0]["status"], 201);
    assert_eq!(push.wait_answered("h2", 1).await[0]["status"], 503);
    tokio::time::sleep(Duration::from_millis(500)).await; // the outcomes recorded
    assert!(a.terminate().expect("exits before its drain").success());
    let h2 = push.messages(Some("h2")).await;
    assert_eq!(h2.len(), 1, "retried before it exited: {h2:?}");
    let _b = Herald::start(Some(&redis.url()), &refs(&args));
    let h2 = push.wait_answered("h2", 2).await;
    assert_eq!(h2[1]["status"], 201, "{h2:?}");
    assert_eq!(h2[1]["payload"]["id"], id.as_str());
    let ttl = |m: &Value| m["ttl"].as_u64().unwrap();
    assert!(
        ttl(&h2[1]) < ttl(&h2[0]),
        "the TTL counts from the first try: {h2:?}"
    );
    let mut conn = redis.conn();
    wait_for("the escalation done", async || {
        let due: usize = ::redis::cmd("ZCARD")
            .arg("herald:{u:hal}:pushdue")
            .query(&mut conn)
            .unwrap();
        due == 0
    })
    .await;
    assert_eq!(push.messages(Some("h1")).await.len(), 1, "pushed twice");
}

/// A proxy in the environment is not used for pushes (it would resolve endpoint names past
/// the public-address check): with one that refuses every connection, pushes still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_ignore_a_proxy_in_the_environment() {
    let dir = TempDir::new("vapid");
    let (key, _) = vapid_key(&dir);
    let push = PushService::start();
    let mut args = ["--listen", "127.0.0.1:0", "--jwt-secret", SECRET]
        .map(str::to_owned)
        .to_vec();
    args.extend(push_args(&push, &key, "60s"));
    let dead = "http://127.0.0.1:9";
    let env = [
        ("HTTPS_PROXY", dead),
        ("https_proxy", dead),
        ("ALL_PROXY", dead),
        ("all_proxy", dead),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
    ];
    let h = Herald::spawn_env(&args, &env);
    let token = user_token("gil");
    subscribe(&h, &token, &push.subscribe("gil").await).await;
    h.notify("gil", "through no proxy").await;
    let got = push.wait_answered("gil", 1).await;
    assert_eq!(got[0]["status"], 201, "{got:#?}");
}

mod across_nodes {
    use crate::common::Mode;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_on_another_node_counts_as_live() {
        super::a_stream_on_another_node_counts_as_live(Mode::Redis).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_on_another_node_counts_as_live_on_a_cluster() {
        super::a_stream_on_another_node_counts_as_live(Mode::Cluster).await
    }
}

/// A user whose only live stream is on node b is connected for a publish through node a:
/// pushed `--push-after` later, not at once, and only what is still unread and unseen then
/// (one read and one deleted meanwhile, through b, are not pushed).
async fn a_stream_on_another_node_counts_as_live(mode: Mode) {
    let (_dir, push, args) = web_push("2s");
    let engine = Engine::start(mode);
    let a = Herald::start(Some(&engine.url), &refs(&args));
    let b = Herald::start(Some(&engine.url), &refs(&args));
    let token = user_token("nia");
    subscribe(&a, &token, &push.subscribe("nia").await).await;
    let mut sse = b.events(&token, "").await;
    let published = unix_now();
    let read = a.notify("nia", "read in time").await;
    let deleted = a.notify("nia", "deleted in time").await;
    let left = a.notify("nia", "left unread").await;
    for _ in 0..3 {
        sse.expect("notification").await;
    }
    for (id, change, want) in [
        (&read, json!({"read": true}), 200),
        (&deleted, json!({"deleted": true}), 204),
    ] {
        let (status, _) = b
            .patch(&format!("/notifications/{id}"), &token, change)
            .await;
        assert_eq!(status, want);
    }
    let got = push.wait_messages("nia", 1).await;
    assert_eq!(got[0]["payload"]["id"], left.as_str(), "{got:?}");
    let after = got[0]["received_at"].as_f64().unwrap() - published;
    assert!(after >= 1.9, "pushed {after:.2} s after the publish");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(push.messages(Some("nia")).await.len(), 1);
}
