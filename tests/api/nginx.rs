//! A real nginx (Debian package) in front of Herald and a backend, with the shipped drop-in
//! `deploy/nginx.conf` inside the shipped main config `deploy/nginx/nginx.conf` (only the
//! addresses, the worker count and the read timeout adapted): `auth_request` lets a
//! signed-in user through to the backend and stops anyone else, and a rate limit or an outage
//! reaches the client as Herald's JSON error; `/metrics`, `/readyz` and the admin view are not
//! public; `/events` through nginx is unbuffered and outlives nginx's read timeout thanks to
//! heartbeats.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

struct Nginx {
    child: Child,
    _dir: TempDir,
}

impl Nginx {
    /// `main` is nginx's main config; `site` goes beside it as `herald.conf`, which it includes.
    fn start(main: &str, site: &str, port: u16) -> Nginx {
        let dir = TempDir::new("nginx");
        for sub in ["logs", "temp"] {
            std::fs::create_dir_all(dir.0.join(sub)).unwrap();
        }
        let conf = dir.0.join("nginx.conf");
        std::fs::write(&conf, main).unwrap();
        std::fs::write(dir.0.join("herald.conf"), site).unwrap();
        let bin = ["nginx", "/usr/sbin/nginx"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("-v")
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
            .expect("nginx must be installed (scripts/test installs it)");
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(dir.0.join("logs/error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, _dir: dir }
    }
}

impl Nginx {
    /// The shipped configs in front of `h` and `backend` (only addresses, the worker count
    /// and the read timeout adapted), and the edge's base URL.
    fn shipped(h: &Herald, backend: &EchoUpstream) -> (Nginx, String) {
        let port = free_port();
        let shipped = |file: &str| {
            std::fs::read_to_string(format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
        };
        let main =
            shipped("nginx/nginx.conf").replace("worker_processes auto;", "worker_processes 1;");
        let site = shipped("nginx.conf")
            .replace("127.0.0.1:8080", &addr_of(&h.base))
            .replace("127.0.0.1:9000", &addr_of(&backend.url))
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            // nginx's default is 60 s; a short one proves heartbeats keep the stream open
            .replace("proxy_read_timeout 60s;", "proxy_read_timeout 3s;");
        let nginx = Nginx::start(&main, &site, port);
        (nginx, format!("http://127.0.0.1:{port}"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM lets the master stop its workers; KILL only if it does not.
        send_signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_and_unbuffered_events() {
    let backend = EchoUpstream::start().await;
    let h = Herald::start(
        None,
        &[
            "--heartbeat",
            "1s",
            "--trusted-proxy",
            "127.0.0.1/32",
            "--admin",
        ],
    );
    let (_nginx, edge) = Nginx::shipped(&h, &backend);
    let http = client();

    // auth_request: nobody without credentials reaches the backend
    let (status, body) = send(
        http.get(format!("{edge}/api/echo"))
            .header("x-herald-user", "mallory"),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    assert_eq!(backend.hits(), 0);

    // the operations endpoints and the admin view are not served on the public side
    for path in [
        "/metrics",
        "/readyz",
        "/metrics?x=1",
        "/admin",
        "/admin/",
        "/admin/nodes",
        "/admin/tail?user=alice",
    ] {
        let r = send_raw(http.get(format!("{edge}{path}"))).await;
        assert_eq!(r.status(), 403, "{path}");
    }
    assert_eq!(
        send_raw(http.get(format!("{edge}/healthz"))).await.status(),
        200
    );

    // a signed-in browser (session made through nginx) gets through, with its identity
    let r = send_raw(
        http.post(format!("{edge}/session"))
            .bearer_auth(user_token("alice")),
    )
    .await;
    assert_eq!(r.status(), 204);
    // Herald took nginx's request id ($request_id: 32 hex digits; its own are 16)
    let id = r.headers()["x-request-id"].to_str().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let cookie = cookie_of(&r);
    let r = send_raw(
        http.get(format!("{edge}/api/echo?q=1"))
            .header("cookie", format!("theme=dark; {cookie}; lang=en"))
            .header("x-herald-user", "mallory"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    // the session cookie (the session's secret) does not reach the backend; others do
    assert_eq!(echo["headers"]["cookie"], "theme=dark; lang=en", "{echo}");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "q=1");
    assert_eq!(echo["headers"]["x-herald-user"], "alice");
    assert_eq!(
        echo["headers"]["x-herald-session"].as_str().unwrap(),
        session_id(&cookie)
    );
    // a cookie write from a foreign origin is stopped at the edge
    let r = send_raw(
        http.post(format!("{edge}/api/echo"))
            .header("cookie", &cookie)
            .header("origin", "http://evil.example")
            .body("x"),
    )
    .await;
    let (status, body) = status_json(r).await;
    assert_error(status, &body, 403, "forbidden");
    // another scheme than Bearer is the backend's own business: it goes on
    let r = send_raw(
        http.get(format!("{edge}/api/echo"))
            .header("cookie", &cookie)
            .header("authorization", "Basic Zm9vOmJhcg=="),
    )
    .await;
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        echo["headers"]["authorization"], "Basic Zm9vOmJhcg==",
        "{echo}"
    );
    // bodies of any size go on to the backend; Herald's own endpoints answer their 1 MiB
    // limit themselves, and a body past nginx's cap gets the same JSON error
    let big = 3 * 1024 * 1024;
    let r = send_raw(
        http.post(format!("{edge}/api/upload"))
            .bearer_auth(user_token("alice"))
            .body(vec![b'u'; big]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["bytes"], big);
    for size in [1536 * 1024, big] {
        let r = send_raw(
            http.post(format!("{edge}/publish"))
                .bearer_auth(service_token())
                .header("content-type", "application/json")
                .body(vec![b' '; size]),
        )
        .await;
        let (status, body) = status_json(r).await;
        assert_error(status, &body, 413, "too_large");
    }
    let r = send_raw(
        http.post(format!("{edge}/api/echo"))
            .header("cookie", &cookie)
            .header("origin", &edge)
            .body("x"),
    )
    .await;
    assert_eq!(r.status(), 200);
    // a Bearer caller's token stays at the edge too (as do cookies at the front or the end,
    // and what the client says of its address or original path)
    for cookies in [format!("{cookie}; lang=en"), format!("lang=en; {cookie}")] {
        let r = send_raw(
            http.get(format!("{edge}/api/echo"))
                .header("cookie", cookies)
                .header("x-original-url", "/admin")
                .header("true-client-ip", "1.2.3.4")
                .bearer_auth(user_token("alice")),
        )
        .await;
        let echo: Value = r.json().await.unwrap();
        assert!(echo["headers"].get("authorization").is_none(), "{echo}");
        assert!(echo["headers"].get("x-original-url").is_none(), "{echo}");
        assert!(echo["headers"].get("true-client-ip").is_none(), "{echo}");
        let sent = echo["headers"]["cookie"].as_str().unwrap();
        assert!(!sent.contains("herald_session"), "{echo}");
        assert!(sent.contains("lang=en"), "{echo}");
    }
    // two session cookies (another site of the domain set one too): the live one counts,
    // wherever it is, and neither reaches the backend; a third is refused at the edge
    let tossed = "herald_session=tossed.value";
    for cookies in [
        format!("{tossed}; lang=en; {cookie}"),
        format!("{cookie}; lang=en; {tossed}"),
    ] {
        let r = send_raw(
            http.get(format!("{edge}/api/echo"))
                .header("cookie", cookies),
        )
        .await;
        let echo: Value = r.json().await.unwrap();
        assert_eq!(echo["headers"]["x-herald-user"], "alice", "{echo}");
        assert_eq!(echo["headers"]["cookie"], "lang=en", "{echo}");
    }
    let r = send_raw(
        http.get(format!("{edge}/api/echo"))
            .header("cookie", format!("{cookie}; {tossed}; {tossed}")),
    )
    .await;
    assert_eq!(r.headers()["content-type"], "application/json");
    let (status, body) = status_json(r).await;
    assert_error(status, &body, 400, "invalid_request");
    assert_eq!(backend.hits(), 8);

    // /events through nginx: the first event arrives at once, not when a buffer fills
    let started = Instant::now();
    let r = send_raw(http.get(format!("{edge}/events")).header("cookie", &cookie)).await;
    assert_eq!(r.status(), 200);
    let mut sse = Sse::new(r);
    let ready = sse
        .try_next(Duration::from_secs(3))
        .await
        .expect("ready through nginx");
    assert_eq!(ready.event, "ready");
    println!("first event through nginx after {:?}", started.elapsed());
    // idle for longer than nginx's read timeout: the pings keep it open
    let idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(5) {
        assert!(sse.try_next(Duration::from_millis(200)).await.is_none());
        assert!(
            !sse.ended,
            "nginx closed the stream after {:?}",
            idle.elapsed()
        );
    }
    assert!(sse.comments >= 3, "{}", sse.raw);
    let sent = Instant::now();
    let (status, _) = h
        .publish(json!({"users": ["alice"], "notification": {"title": "through nginx"}}))
        .await;
    assert_eq!(status, 202);
    let ev = sse
        .try_next(Duration::from_secs(3))
        .await
        .expect("notification through nginx");
    assert_eq!(
        (ev.event.as_str(), ev.json()["title"].clone()),
        ("notification", json!("through nginx"))
    );
    println!("notification through nginx after {:?}", sent.elapsed());
}

/// What Herald answers the auth sub-request besides 2xx, 401 and 403 (nginx itself would
/// answer an HTML 500) reaches the client as Herald's error: 429 `rate_limited` with its
/// `Retry-After`, 503 `unavailable` when Herald cannot reach Redis or nginx cannot reach Herald.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_on_a_refused_or_failed_auth_as_json() {
    let backend = EchoUpstream::start().await;
    let mut redis = Redis::start();
    let mut h = Herald::start(
        Some(&redis.url()),
        &["--trusted-proxy", "127.0.0.1/32", "--max-connect-rate", "3"],
    );
    let (_nginx, edge) = Nginx::shipped(&h, &backend);
    let http = client();
    let r = send_raw(
        http.post(format!("{edge}/session"))
            .bearer_auth(user_token("alice")),
    )
    .await;
    assert_eq!(r.status(), 204);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let api = || {
        http.get(format!("{edge}/api/echo"))
            .header("cookie", &cookie)
    };
    let mut limited = None;
    for _ in 0..10 {
        let r = send_raw(api()).await;
        if r.status() != 200 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the rate limit never applied");
    let retry_after = r.headers().get("retry-after").cloned();
    let (status, body) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_error(status, &body, 429, "rate_limited");
    assert!(retry_after.is_some(), "no Retry-After");
    let hits = backend.hits();

    // Redis gone: Herald cannot read the session (503), and the edge says so
    tokio::time::sleep(Duration::from_millis(1100)).await;
    redis.stop();
    let (status, body) = send(api()).await;
    assert_error(status, &body, 503, "unavailable");
    // Herald gone
    h.kill();
    let (status, body) = send(api()).await;
    assert_error(status, &body, 503, "unavailable");
    assert_eq!(
        backend.hits(),
        hits,
        "a refused request reached the backend"
    );
}
