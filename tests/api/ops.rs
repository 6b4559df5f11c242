//! Operations: health, readiness (follows Redis), metrics, unknown routes.

use std::time::Duration;

use serde_json::json;

use crate::both_modes;
use crate::common::*;

both_modes!(health_metrics_and_unknown_routes);

async fn health_metrics_and_unknown_routes(mode: Mode) {
    let h = Setup::new(mode, &[]);
    assert_eq!(send_raw(h.http.get(h.url("/healthz"))).await.status(), 200);
    assert_eq!(send_raw(h.http.get(h.url("/readyz"))).await.status(), 200);
    let _sse = h.events(&user_token("alice"), "").await;
    h.notify("alice", "x").await;
    let text = h.text("/metrics").await;
    for name in [
        "herald_streams_open 1",
        "herald_events_delivered_total",
        "herald_publishes_total 1",
        "herald_broker_reconnects_total",
        "herald_delivery_latency_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let (status, body) = send(h.http.get(h.url("/nope"))).await;
    assert_error(status, &body, 404, "not_found");
    let r = send_raw(
        h.http
            .delete(h.url("/notifications"))
            .bearer_auth(user_token("alice")),
    )
    .await;
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn readyz_follows_redis() {
    let mut redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    assert_eq!(send_raw(h.http.get(h.url("/readyz"))).await.status(), 200);
    redis.stop();
    becomes_unready(&h, "without Redis").await;
    assert_eq!(send_raw(h.http.get(h.url("/healthz"))).await.status(), 200);
}

/// On a Redis Cluster, a shard that is down (its primary gone, no replica to take over) makes
/// every node refuse every key: `/readyz` says so, though the other nodes still answer a PING.
#[tokio::test]
async fn readyz_follows_a_cluster_with_a_shard_down() {
    let mut cluster = Cluster::start(3, 0);
    let h = Herald::start(Some(&cluster.url()), &[]);
    assert_eq!(send_raw(h.http.get(h.url("/readyz"))).await.status(), 200);
    cluster.kill_primary_of("herald:{u:alice}:order");
    becomes_unready(&h, "with a shard down").await;
}

/// Wait until `/readyz` answers 503 `unavailable` (at most `WAIT`).
async fn becomes_unready(h: &Herald, what: &str) {
    let mut answer = (0, serde_json::Value::Null);
    wait_for(&format!("readyz stayed ready {what}"), async || {
        answer = send(h.http.get(h.url("/readyz"))).await;
        answer.0 == 503
    })
    .await;
    assert_error(answer.0, &answer.1, 503, "unavailable");
}

#[tokio::test]
async fn connect_rate_limit_is_429() {
    let h = Herald::start(None, &["--max-connect-rate", "3"]);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        // a fresh client per request: a new connection each time
        let r = send_raw(client().get(h.url("/healthz"))).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
            let (status, body) = status_json(r).await;
            assert_error(status, &body, 429, "rate_limited");
        }
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 3,
        "{statuses:?}"
    );
}

/// Behind a trusted proxy, `--max-connect-rate` counts each request against the forwarded
/// client address: one client over the rate gets 429 while another, on the same proxy
/// connection, is still served. Without the trust, a forwarded address changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rate_behind_a_trusted_proxy_counts_the_forwarded_client() {
    let h = Herald::start(
        None,
        &["--max-connect-rate", "3", "--trusted-proxy", "127.0.0.1"],
    );
    // one connection, as a proxy keeps it
    let proxy = client();
    let from = |client: &str| {
        proxy
            .get(h.url("/healthz"))
            .header("x-forwarded-for", client)
    };
    let mut statuses = Vec::new();
    while statuses.len() < 20 && !statuses.contains(&429) {
        statuses.push(send_raw(from("198.51.100.1")).await.status().as_u16());
    }
    assert!(statuses.contains(&429), "never limited: {statuses:?}");
    // right after: another client on the same proxy connection has a count of its own
    let second_client = send_raw(from("198.51.100.2")).await.status().as_u16();
    assert_eq!(second_client, 200, "limited with the first client");

    // no trusted proxy: forwarded addresses are the caller's own claim, and do not count
    let h = Herald::start(None, &["--max-connect-rate", "3"]);
    let mut statuses = Vec::new();
    for i in 0..20 {
        // a fresh connection per request, each claiming another client
        let r = client()
            .get(h.url("/healthz"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            break;
        }
    }
    assert!(statuses.contains(&429), "dodged the limit: {statuses:?}");
}

#[tokio::test]
async fn client_assets_are_served_with_etags() {
    let h = Herald::start(None, &[]);
    for path in ["/herald.js", "/herald-worker.js"] {
        let r = send_raw(h.http.get(h.url(path))).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
        assert_eq!(r.headers()["cache-control"], "no-cache");
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let body = r.text().await.unwrap();
        assert!(
            body.contains("export") || body.contains("import"),
            "{path} is a module"
        );
        let again = send_raw(h.http.get(h.url(path)).header("if-none-match", &etag)).await;
        assert_eq!(again.status(), 304, "{path}");
    }
    let client = h.text("/herald.js").await;
    assert!(client.contains("export class Herald") && client.contains("export default Herald"));
}

/// `/openapi.yaml` is docs/openapi.yaml byte for byte, as `application/yaml` with an ETag;
/// HEAD gives the headers alone.
#[tokio::test]
async fn openapi_document_is_served() {
    let h = Herald::start(None, &[]);
    let r = send_raw(h.http.get(h.url("/openapi.yaml"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/yaml");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
    assert_eq!(
        r.text().await.unwrap(),
        std::fs::read_to_string(file).unwrap()
    );
    let head = send_raw(h.http.head(h.url("/openapi.yaml"))).await;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "application/yaml");
    let again = send_raw(
        h.http
            .get(h.url("/openapi.yaml"))
            .header("if-none-match", &etag),
    )
    .await;
    assert_eq!(again.status(), 304);
}

#[tokio::test]
async fn dev_routes_exist_only_in_dev_mode() {
    let h = Herald::start(None, &[]);
    for (path, status) in [("/", 404), ("/dev/login", 404)] {
        let r = send_raw(h.http.request(
            if path == "/" {
                reqwest::Method::GET
            } else {
                reqwest::Method::POST
            },
            h.url(path),
        ))
        .await;
        assert_eq!(r.status(), status, "{path}");
    }
    let dev = Herald::start(None, &["--dev"]);
    let login = |origin: &str| {
        dev.http
            .post(dev.url("/dev/login"))
            .header("origin", origin.to_owned())
            .json(&serde_json::json!({"user": "alice"}))
            .send()
    };
    assert_eq!(login("http://evil.example").await.unwrap().status(), 403);
    let r = login(&dev.base).await.unwrap();
    assert_eq!(r.status(), 204);
    let cookie = cookie_of(&r);
    let (status, body) = send(
        dev.http
            .get(dev.url("/notifications"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(
        (status, body["unread_count"].clone()),
        (200, serde_json::json!(0))
    );
}

/// On SIGTERM, a request in flight may finish within `--drain-timeout`, and is cut at it: a
/// proxied request whose upstream answers after 3 s completes with a 10 s drain, and the
/// process exits after the 1 s drain, the request unanswered, with a 1 s drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_up_to_the_drain_timeout() {
    let backend = EchoUpstream::start().await;
    for (drain, finishes) in [("10s", true), ("1s", false)] {
        let mut h = Herald::start(
            None,
            &["--upstream", &backend.url, "--drain-timeout", drain],
        );
        let hits = backend.hits();
        let request = h
            .http
            .get(h.url("/api/slow"))
            .bearer_auth(user_token("alice"));
        let in_flight = tokio::spawn(async move {
            let r = request.send().await?;
            let status = r.status().as_u16();
            Ok::<_, reqwest::Error>((status, r.text().await?))
        });
        wait_for("the request never reached the upstream", async || {
            backend.hits() > hits
        })
        .await;
        let started = std::time::Instant::now();
        let (status, h) = tokio::task::spawn_blocking(move || (h.terminate(), h))
            .await
            .unwrap();
        let took = started.elapsed();
        drop(h);
        let answer = tokio::time::timeout(WAIT, in_flight)
            .await
            .expect("the client heard back")
            .unwrap();
        assert!(status.is_some_and(|s| s.success()), "{drain}: {status:?}");
        if finishes {
            assert_eq!(answer.unwrap(), (200, "late".to_owned()), "{drain}");
        } else {
            assert!(answer.is_err(), "{drain}: answered {answer:?}");
            // it waited for the drain before cutting (the upstream answers at 3 s)
            assert!(
                took >= Duration::from_millis(900),
                "{drain}: exited after {took:?}"
            );
        }
    }
}

/// A second SIGTERM or SIGINT during the drain ends the process at once (exit status 1), as
/// Ctrl-C twice does: it does not wait out a 30 s drain for a request in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stop_signal_ends_the_drain() {
    let backend = EchoUpstream::start().await;
    for second in ["TERM", "INT"] {
        let mut h = Herald::start(
            None,
            &["--upstream", &backend.url, "--drain-timeout", "30s"],
        );
        let hits = backend.hits();
        let request = h
            .http
            .get(h.url("/api/slow"))
            .bearer_auth(user_token("alice"));
        let in_flight = tokio::spawn(async move { request.send().await.map(|r| r.status()) });
        wait_for("the request never reached the upstream", async || {
            backend.hits() > hits
        })
        .await;
        send_signal(h.pid(), "TERM");
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_signal(h.pid(), second);
        let (status, h) = tokio::task::spawn_blocking(move || (h.terminate(), h))
            .await
            .unwrap();
        drop(h);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(1),
            "{second}: {status:?}"
        );
        let answer = tokio::time::timeout(WAIT, in_flight)
            .await
            .unwrap()
            .unwrap();
        assert!(answer.is_err(), "{second}: answered {answer:?}");
    }
}

/// Set for every stream of a node reconnecting at once: the node listens on 8 sockets of its
/// port, each asking the kernel for the longest accept queue it allows (`ss` shows a
/// listener's queue size as its Send-Q), so handshakes are not dropped at a full queue, and
/// jemalloc runs its background thread, which returns the burst's request buffers to the
/// kernel.
#[tokio::test]
async fn a_node_is_set_for_reconnect_bursts() {
    let h = Herald::start(None, &[]);
    let port = h.base.rsplit(':').next().unwrap().trim_end_matches('/');
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) must be installed (scripts/test installs it)");
    let lines = String::from_utf8(out.stdout).unwrap();
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(lines.lines().count(), 8, "{lines}");
    for line in lines.lines() {
        let queue: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert_eq!(queue, somaxconn.min(65_535), "{line}");
    }
    let threads = || -> Vec<String> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", h.pid())).unwrap();
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !threads().iter().any(|t| t == "jemalloc_bg_thd") {
        assert!(std::time::Instant::now() < deadline, "{:?}", threads());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Redis user `docs/operators.md` creates, password `s3cret`.
fn documented_user(conn: &mut ::redis::Connection) {
    let rules = [
        "on",
        ">s3cret",
        "~herald:*",
        "&herald:*",
        "+@all",
        "-@dangerous",
    ];
    let _: () = ::redis::cmd("ACL")
        .arg("SETUSER")
        .arg("herald")
        .arg(&rules)
        .query(conn)
        .unwrap();
}

/// Herald works as the Redis user the operators' guide creates (`~herald:* &herald:* +@all
/// -@dangerous`): every key and channel it touches is under `herald:`, and it sends no
/// command of `@dangerous`. Publish, tray, stream, groups, a scheduled delivery, the ingest
/// stream and its dead letters, sessions, presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_runs_as_the_documented_redis_user() {
    let redis = Redis::start();
    let mut admin = redis.conn();
    documented_user(&mut admin);
    let url = format!("redis://herald:s3cret@127.0.0.1:{}", redis.port);
    let h = Herald::start(Some(&url), &[]);
    assert_eq!(h.get("/readyz", "").await.0, 200);
    let alice = user_token("alice");
    let mut sse = h.events(&alice, "").await;
    let id = h.notify("alice", "direct").await;
    assert_eq!(sse.expect("notification").await.json()["id"], id.as_str());
    let (status, _) = h
        .patch(
            &format!("/notifications/{id}"),
            &alice,
            json!({"read": true}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = send(
        h.http
            .put(h.url("/groups/g/members"))
            .bearer_auth(service_token())
            .json(&json!({"users": ["alice"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h
        .publish(json!({"groups": ["g"], "notification": {
            "title": "to the group", "deliver_at": in_secs(1)}}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        sse.expect("notification").await.json()["title"],
        "to the group"
    );
    // the ingest stream, with a good entry and a bad one
    let mut conn = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    for body in [
        json!({"users": ["alice"], "notification": {"title": "ingested"}}).to_string(),
        "not json".to_owned(),
    ] {
        let _: String = ::redis::cmd("XADD")
            .arg("herald:ingest")
            .arg("*")
            .arg("publish")
            .arg(body)
            .query(&mut conn)
            .unwrap();
    }
    assert_eq!(sse.expect("notification").await.json()["title"], "ingested");
    wait_for("no dead letter", async || {
        ::redis::cmd("XLEN")
            .arg("herald:ingest:dead")
            .query::<u64>(&mut conn)
            .unwrap()
            == 1
    })
    .await;
    let (status, page) = h.get("/notifications", &alice).await;
    assert_eq!((status, page["unread_count"].clone()), (200, json!(2)));
    // a browser session, presence
    let cookie = h.login("alice").await;
    let listed = h
        .http
        .get(h.url("/notifications"))
        .header("cookie", &cookie);
    assert_eq!(send_raw(listed).await.status(), 200);
    let (status, presence) = h.get("/presence/alice", &service_token()).await;
    assert_eq!((status, presence["online"].clone()), (200, json!(true)));
    // and Redis refused nothing it sent (start-up's checks included)
    let refused: Vec<::redis::Value> = ::redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
}

/// The same user on a Redis Cluster, its password written once in the URL
/// (`redis+cluster://user:password@h1:p,h2:p`): it is every node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_url_with_the_password_written_once() {
    let cluster = Cluster::start(3, 0);
    let nodes: Vec<String> = cluster
        .url()
        .trim_start_matches("redis+cluster://")
        .split(',')
        .map(str::to_owned)
        .collect();
    for node in &nodes {
        let mut conn = ::redis::Client::open(format!("redis://{node}"))
            .unwrap()
            .get_connection()
            .unwrap();
        documented_user(&mut conn);
    }
    let url = format!("redis+cluster://herald:s3cret@{}", nodes.join(","));
    let h = Herald::start(Some(&url), &[]);
    let mut sse = h.events(&user_token("alice"), "").await;
    let id = h.notify("alice", "through the cluster").await;
    assert_eq!(sse.expect("notification").await.json()["id"], id.as_str());
}
