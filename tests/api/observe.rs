//! What an operator sees: request ids (kept, generated, replaced; in every answer, upstream and
//! in the JSON logs), user ids only in debug lines, `/metrics` by route pattern (never a raw
//! id), publish errors, streams by transport, Redis command times and ingest lag, and the
//! start-up line with `--base-path`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_modes;
use crate::common::*;

/// A series of `/metrics` (`name{labels}`), or `None` when it is missing.
async fn series(h: &Herald, name: &str) -> Option<f64> {
    let text = h.text("/metrics").await;
    text.lines().find_map(|l| {
        let (s, value) = l.rsplit_once(' ')?;
        (s == name).then(|| value.parse().unwrap())
    })
}

/// Wait until the series `name` reads `want`.
async fn wait_metric(h: &Herald, name: &str, want: f64) {
    wait_for(&format!("{name} never became {want}"), async || {
        series(h, name).await == Some(want)
    })
    .await;
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_owned()
}

fn is_generated(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A sane `X-Request-Id` comes back as sent; none, or an insane one, gets a new id; error
/// answers and refusals carry it too.
#[tokio::test]
async fn request_ids_are_echoed_generated_or_replaced() {
    let h = Herald::start(None, &[]);
    let get = |path: &str, id: Option<&str>| {
        let req = h.http.get(h.url(path));
        let req = match id {
            Some(id) => req.header("x-request-id", id),
            None => req,
        };
        send_raw(req)
    };
    let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    assert_eq!(request_id(&get("/healthz", Some(uuid)).await), uuid);
    let fresh = request_id(&get("/healthz", None).await);
    assert!(is_generated(&fresh), "{fresh}");
    assert_ne!(request_id(&get("/healthz", None).await), fresh);
    for insane in ["two words", &"x".repeat(129), ""] {
        let id = request_id(&get("/healthz", Some(insane)).await);
        assert!(is_generated(&id), "{insane:?} gave {id}");
    }
    let long = "y".repeat(128);
    assert_eq!(request_id(&get("/healthz", Some(&long)).await), long);
    // errors: 404, 401, 405
    let r = get("/no/such/path", Some("err-404")).await;
    assert_eq!(
        (r.status().as_u16(), request_id(&r)),
        (404, "err-404".into())
    );
    let r = get("/notifications", Some("err-401")).await;
    assert_eq!(
        (r.status().as_u16(), request_id(&r)),
        (401, "err-401".into())
    );
    let r = send_raw(
        h.http
            .delete(h.url("/healthz"))
            .header("x-request-id", "err-405"),
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), request_id(&r)),
        (405, "err-405".into())
    );
    // `/events` on the socket transport (a new connection's first request): the stream's
    // answer and a refusal
    let r = send_raw(
        client()
            .get(h.url("/events"))
            .bearer_auth(user_token("alice"))
            .header("x-request-id", "stream-1"),
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), request_id(&r)),
        (200, "stream-1".into())
    );
    let mut sse = Sse::new(r);
    assert_eq!(sse.next_event().await.event, "ready");
    let r = send_raw(
        client()
            .get(h.url("/events"))
            .header("x-request-id", "stream-401"),
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), request_id(&r)),
        (401, "stream-401".into())
    );
}

/// The `/api/` proxy and a notification's action send the request's id to the upstream.
#[tokio::test]
async fn request_ids_reach_the_upstream() {
    let up = EchoUpstream::start().await;
    let h = Herald::start(None, &["--upstream", &up.url]);
    let token = user_token("alice");
    let echo = |id: Option<&'static str>| {
        let req = h.http.get(h.url("/api/echo")).bearer_auth(&token);
        send_raw(match id {
            Some(id) => req.header("x-request-id", id),
            None => req,
        })
    };
    let r = echo(Some("proxied-1")).await;
    assert_eq!(request_id(&r), "proxied-1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["headers"]["x-request-id"], "proxied-1", "{body}");
    // a generated id is the same upstream and in the answer
    let r = echo(None).await;
    let id = request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["headers"]["x-request-id"], id.as_str(), "{body}");
    // an insane one is replaced before it goes upstream
    let r = send_raw(
        h.http
            .get(h.url("/api/echo"))
            .bearer_auth(&token)
            .header("x-request-id", "not sane"),
    )
    .await;
    let id = request_id(&r);
    assert!(is_generated(&id), "{id}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["headers"]["x-request-id"], id.as_str(), "{body}");
    // an action
    let (status, body) = h
        .publish(
            json!({"users": ["alice"], "notification": {"title": "Deploy?",
            "actions": [{"id": "go", "label": "Go", "path": "/api/record/200"}]}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let nid = body["ids"]["alice"].as_str().unwrap();
    let r = send_raw(
        h.http
            .post(h.url(&format!("/notifications/{nid}/actions/go")))
            .bearer_auth(&token)
            .header("x-request-id", "action-1"),
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), request_id(&r)),
        (200, "action-1".into())
    );
    let got = up.recorded();
    assert_eq!(got[0]["headers"]["x-request-id"], "action-1", "{}", got[0]);
}

/// A node started with `--log-format json` whose stderr lines are kept.
struct Logged {
    child: Child,
    base: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn start(level: &str) -> Logged {
        let mut child = Command::new(bin())
            .args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .args(["--log-format", "json"])
            .env("HERALD_LOG", level)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (stderr, kept) = (child.stderr.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let base = listening_line(&mut child);
        Logged {
            child,
            base: origin(&base).to_owned(),
            lines,
        }
    }

    /// Wait until a log line satisfies `want`; that line, as JSON.
    async fn line(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        wait_for(
            &format!("no log line {what}: {:?}", self.lines),
            async || {
                found = self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
                    .find(&want);
                found.is_some()
            },
        )
        .await;
        found.unwrap()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The start-up line of `child` (read from its stdout, which is then drained).
fn listening_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("herald listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    rx.recv_timeout(WAIT).expect("herald did not start")
}

/// The request id of a JSON log line: a top-level member, lifted from its `request` span.
fn logged_id(line: &Value) -> Option<&str> {
    line["request_id"].as_str()
}

/// Every line of a request carries its id in JSON logs (`"request_id"`), `/events`
/// included; user ids only in debug lines.
#[tokio::test]
async fn json_logs_carry_request_ids_and_name_users_only_at_debug() {
    let h = Logged::start("herald=debug");
    let http = client();
    let r = http
        .get(format!("{}/healthz", h.base))
        .header("x-request-id", "log-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = h.line("for log-1", |l| logged_id(l) == Some("log-1")).await;
    assert_eq!(line["message"], "request", "{line}");
    assert_eq!(line["path"], "/healthz", "{line}");
    // a stream's opening request
    let r = http
        .get(format!("{}/events", h.base))
        .bearer_auth(user_token("zed-user"))
        .header("x-request-id", "log-events")
        .send()
        .await
        .unwrap();
    let mut sse = Sse::new(r);
    assert_eq!(sse.next_event().await.event, "ready");
    let line = h
        .line("for log-events", |l| logged_id(l) == Some("log-events"))
        .await;
    assert_eq!(line["path"], "/events", "{line}");
    // a session: info says it, only debug names the user
    let r = http
        .post(format!("{}/session", h.base))
        .bearer_auth(user_token("zed-user"))
        .header("x-request-id", "log-session")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let info = h
        .line("session created", |l| l["message"] == "session created")
        .await;
    assert_eq!(info["level"], "INFO", "{info}");
    assert_eq!(logged_id(&info), Some("log-session"), "{info}");
    h.line("naming the user", |l| {
        l["level"] == "DEBUG" && l.to_string().contains("zed-user")
    })
    .await;
    let lines = h.lines.lock().unwrap().clone();
    for line in lines.iter().filter(|l| l.contains("zed-user")) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["level"], "DEBUG", "a user id above debug: {line}");
    }
}

/// `/metrics` counts requests by route pattern and status (no raw id or user ever becomes a
/// label), publish errors by source and reason, streams by transport, and in Redis modes the
/// Redis commands' durations by link.
async fn metrics_for_operators(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("metric-user");
    let id = h.notify("metric-user", "hello").await;
    let (status, body) = h
        .patch(
            &format!("/notifications/{id}"),
            &token,
            json!({"read": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = h.get("/no/such/thing", &token).await;
    assert_eq!(status, 404);
    // publish errors: an invalid body, no token
    let (status, _) = h.publish(json!({"users": ["metric-user"]})).await;
    assert_eq!(status, 400);
    let r = send_raw(h.http.post(h.url("/publish")).json(&json!({}))).await;
    assert_eq!(r.status(), 401);
    let patched = r#"herald_http_requests_total{route="/notifications/{id}",status="200"}"#;
    assert_eq!(series(&h, patched).await, Some(1.0));
    let published = r#"herald_http_requests_total{route="/publish",status="202"}"#;
    assert_eq!(series(&h, published).await, Some(1.0));
    let other = r#"herald_http_requests_total{route="other",status="404"}"#;
    assert_eq!(series(&h, other).await, Some(1.0));
    let invalid = r#"herald_publish_errors_total{source="http",reason="invalid_request"}"#;
    assert_eq!(series(&h, invalid).await, Some(1.0));
    let unauthorized = r#"herald_publish_errors_total{source="http",reason="unauthorized"}"#;
    assert_eq!(series(&h, unauthorized).await, Some(1.0));
    let text = h.text("/metrics").await;
    assert!(!text.contains(&id), "a raw id on /metrics:\n{text}");
    assert!(!text.contains("metric-user"), "a user on /metrics:\n{text}");
    assert!(!text.contains("no/such"), "a raw path on /metrics:\n{text}");
    // the classic text format by default, OpenMetrics when the scraper asks for it
    let r = send_raw(h.http.get(h.url("/metrics"))).await;
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let classic = r.text().await.unwrap();
    assert!(
        classic.contains("# TYPE herald_publishes_total counter\n"),
        "{classic}"
    );
    assert!(!classic.contains("# EOF"), "{classic}");
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let r = send_raw(h.http.get(h.url("/metrics")).header("accept", accept)).await;
    let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert_eq!(r.headers()["vary"], "accept", "the format follows Accept");
    let open = r.text().await.unwrap();
    assert!(open.contains("# TYPE herald_publishes counter\n"), "{open}");
    assert!(open.ends_with("# EOF\n"), "{open}");
    // one stream on the socket transport (a new connection's first request), gone when it
    // closes
    let socket = r#"herald_streams_open_by_transport{transport="socket"}"#;
    let mut sse = h
        .events_with(client().get(h.url("/events")).bearer_auth(&token))
        .await;
    assert_eq!(sse.next_event().await.event, "ready");
    assert_eq!(series(&h, socket).await, Some(1.0));
    assert_eq!(h.metric("herald_streams_open").await, 1.0);
    drop(sse);
    wait_metric(&h, socket, 0.0).await;
    if mode != Mode::Embedded {
        for link in ["store", "broker", "ingest"] {
            let count = format!("herald_redis_command_duration_seconds_count{{link=\"{link}\"}}");
            assert!(series(&h, &count).await.unwrap_or(0.0) > 0.0, "{link}");
        }
        assert_eq!(h.metric("herald_redis_ingest_pending").await, 0.0);
        assert_eq!(h.metric("herald_redis_ingest_backlog").await, 0.0);
    }
}

both_modes!(metrics_for_operators);

/// A stream served by hyper (the connection's second request) counts as `http1`, and its
/// answer carries the request id.
#[tokio::test]
async fn hyper_streams_count_as_http1() {
    let h = Herald::start(None, &[]);
    let mut socket = tokio::net::TcpStream::connect(addr_of(&h.base))
        .await
        .unwrap();
    let token = user_token("alice");
    let requests = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         X-Request-Id: hyper-1\r\n\r\n"
    );
    socket.write_all(requests.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("event: ready") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("no ready");
    let answer = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(answer.contains("x-request-id: hyper-1"), "{answer}");
    let http1 = r#"herald_streams_open_by_transport{transport="http1"}"#;
    assert_eq!(series(&h, http1).await, Some(1.0));
    drop(socket);
    wait_metric(&h, http1, 0.0).await;
}

/// The Redis ingest stream: an entry waiting when the node starts shows in the backlog
/// (sampled every 5 s) until it is handled; one that is no publish counts as a `redis`
/// publish error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ingest_backlog_and_errors() {
    let redis = Redis::start();
    let mut conn = redis.conn();
    let _: String = ::redis::cmd("XADD")
        .arg("herald:ingest")
        .arg("*")
        .arg("publish")
        .arg("{not json")
        .query(&mut conn)
        .unwrap();
    let h = Herald::start(Some(&redis.url()), &[]);
    let invalid = r#"herald_publish_errors_total{source="redis",reason="invalid_request"}"#;
    wait_metric(&h, invalid, 1.0).await;
    wait_metric(&h, "herald_redis_ingest_backlog", 1.0).await;
    wait_metric(&h, "herald_redis_ingest_backlog", 0.0).await;
    assert_eq!(h.metric("herald_redis_ingest_pending").await, 0.0);
}

/// The start-up line is the whole URL: scheme, address and `--base-path`.
#[test]
fn startup_line_names_the_base_path() {
    for (flags, path) in [(&[][..], "/"), (&["--base-path", "/base"][..], "/base/")] {
        let mut child = Command::new(bin())
            .args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .args(flags)
            .env("HERALD_LOG", "off")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let url = listening_line(&mut child);
        let _ = child.kill();
        let _ = child.wait();
        let port = url
            .strip_prefix("http://127.0.0.1:")
            .and_then(|rest| rest.strip_suffix(path))
            .unwrap_or_else(|| panic!("{url}"));
        assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{url}");
    }
}
