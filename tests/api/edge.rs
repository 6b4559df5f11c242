//! Edge duties: `/auth` for nginx, the `/api/` reverse proxy against a real backend (identity
//! injection, spoofed headers stripped, cookie removed, 401 not forwarded, 502, 504, large
//! bodies streamed with bounded memory), `--base-path` and `--trusted-proxy`.

use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn auth_answers_for_nginx() {
    let h = Herald::start(None, &[]);
    let r = send_raw(
        h.http
            .get(h.url("/auth"))
            .bearer_auth(session_token("alice", "s1")),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["x-herald-user"], "alice");
    assert_eq!(r.headers()["x-herald-session"], "s1");
    let cookie = h.login("bob").await;
    let r = send_raw(h.http.get(h.url("/auth")).header("cookie", &cookie)).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["x-herald-user"], "bob");
    assert_eq!(
        r.headers()["x-herald-session"].to_str().unwrap(),
        session_id(&cookie)
    );
    // any valid user id goes out, as its UTF-8 bytes
    let r = send_raw(h.http.get(h.url("/auth")).bearer_auth(user_token("zoë ü"))).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["x-herald-user"].as_bytes(), "zoë ü".as_bytes());
    // for a cookie write (the proxy names the original method) the Origin rule applies
    let sub = |method: &str, origin: &str| {
        let req = h.http.get(h.url("/auth")).header("cookie", &cookie);
        send_raw(
            req.header("x-original-method", method)
                .header("origin", origin),
        )
    };
    assert_eq!(sub("POST", "http://evil.example").await.status(), 403);
    assert_eq!(sub("POST", &h.base).await.status(), 204);
    assert_eq!(sub("GET", "http://evil.example").await.status(), 204);
    for req in [
        h.http.get(h.url("/auth")),
        h.http
            .get(h.url("/auth"))
            .bearer_auth(sign(json!({"sub": "a", "exp": now() - 5}))),
    ] {
        let (status, body) = send(req).await;
        assert_error(status, &body, 401, "unauthorized");
    }
}

#[tokio::test]
async fn proxy_injects_identity_and_strips_what_it_must() {
    let backend = EchoUpstream::start().await;
    let h = Herald::start(None, &["--upstream", &format!("{}/", backend.url)]);
    let cookie = h.login("alice").await;
    let r = send_raw(
        h.http
            .post(h.url("/api/echo/a%20b?x=1&y=2"))
            .header("cookie", format!("theme=dark; {cookie}; lang=en"))
            .header("origin", &h.base)
            .header("x-herald-user", "mallory")
            .header("x-herald-user", "eve")
            .header("x-herald-session", "forged")
            // CGI-style backends read `_` as `-`
            .header("X_Herald_User", "mallory")
            .header("x_herald_session", "forged")
            // Herald's namespace, whatever the name
            .header("x-herald-admin", "1")
            .header("X_Herald_Role", "root")
            // not from a trusted proxy: not passed on
            .header("forwarded", "for=1.2.3.4;proto=https")
            .header("x-real-ip", "1.2.3.4")
            .header("true-client-ip", "1.2.3.4")
            .header("x-original-url", "/admin")
            .header("cookie", format!("{cookie}; again=1"))
            .header("connection", "x-secret")
            .header("x-secret", "hop-by-hop")
            .header("x-custom", "kept")
            .body("hello"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "yes");
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/a%20b");
    assert_eq!(echo["query"], "x=1&y=2");
    assert_eq!(echo["bytes"], 5);
    // the echo shows a header sent twice as an array: each of these arrived exactly once
    let headers = &echo["headers"];
    assert_eq!(headers["x-herald-user"], "alice", "{headers}");
    assert_eq!(
        headers["x-herald-session"].as_str(),
        Some(session_id(&cookie).as_str()),
        "{headers}"
    );
    assert_eq!(
        headers["cookie"], "theme=dark; lang=en; again=1",
        "{headers}"
    );
    assert!(!headers.to_string().contains("herald_session"), "{headers}");
    assert!(
        !headers.to_string().contains(cookie_value(&cookie)),
        "{headers}"
    );
    assert_eq!(headers["x-custom"], "kept");
    assert!(headers.get("x-secret").is_none(), "{headers}");
    assert!(headers.get("x_herald_user").is_none(), "{headers}");
    assert!(headers.get("x_herald_session").is_none(), "{headers}");
    assert!(headers.get("x-herald-admin").is_none(), "{headers}");
    assert!(headers.get("x_herald_role").is_none(), "{headers}");
    assert!(headers.get("forwarded").is_none(), "{headers}");
    assert!(headers.get("x-real-ip").is_none(), "{headers}");
    assert!(headers.get("true-client-ip").is_none(), "{headers}");
    assert!(headers.get("x-original-url").is_none(), "{headers}");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");

    // Bearer callers: the token is replaced by the identity headers
    let r = send_raw(
        h.http
            .get(h.url("/api/echo"))
            .header("x-herald-user", "mallory")
            .header("x-herald-session", "forged")
            .bearer_auth(session_token("bob", "cli")),
    )
    .await;
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-herald-user"], "bob", "{echo}");
    assert_eq!(echo["headers"]["x-herald-session"], "cli", "{echo}");
    assert!(echo["headers"].get("authorization").is_none());
    assert!(echo["headers"].get("cookie").is_none());

    // the upstream's Set-Cookies of the session cookie never reach the browser; others do
    let r = send_raw(
        h.http
            .get(h.url("/api/set-cookie"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(r.status(), 200);
    let set: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set, ["theme=dark; Path=/", "lang=en", "=other=1"]);

    // CORS is Herald's: the upstream's headers never reach an origin Herald does not allow,
    // and an allowed one gets Herald's own
    for (origin, allowed) in [("http://evil.example", false), (h.base.as_str(), true)] {
        let r = send_raw(
            h.http
                .get(h.url("/api/set-cookie"))
                .header("origin", origin)
                .header("cookie", &cookie),
        )
        .await;
        assert_eq!(r.status(), 200);
        let headers = r.headers();
        let allow = headers.get("access-control-allow-origin");
        assert_eq!(allow.is_some(), allowed, "{origin}: {headers:?}");
        let credentials = headers.get("access-control-allow-credentials");
        assert_eq!(credentials.is_some(), allowed, "{origin}: {headers:?}");
        let exposed = headers.get_all("access-control-expose-headers").iter();
        assert!(!exposed
            .map(|v| v.to_str().unwrap())
            .any(|v| v.contains("x-secret")));
    }
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let backend = EchoUpstream::start().await;
    let h = Herald::start(None, &["--upstream", &backend.url]);
    for _ in 0..5 {
        assert_eq!(h.get("/api/echo", &user_token("alice")).await.0, 200);
    }
    assert_eq!(backend.hits(), 5);
    let connections = || {
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    assert_eq!(connections(), 1);
    // An idle connection is let go of after 4 s, before common backends close theirs (5 s),
    // so no request is sent on one the backend is just closing.
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    assert_eq!(h.get("/api/echo", &user_token("alice")).await.0, 200);
    assert_eq!(connections(), 2);
}

/// An upstream that answers in HTTP/1.0 (as Python's `http.server` does): the client is
/// answered in its own HTTP/1.1 and keeps its connection for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_upstream_is_answered_in_the_clients_version() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = conn.read(&mut head);
            let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let h = Herald::start(None, &["--upstream", &url]);
    let token = user_token("alice");
    let one = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
    };
    let last = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = raw_http_async(&h.base, one("/api/a") + &one("/api/b") + last).await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 3, "{answer}");
    assert!(!answer.contains("HTTP/1.0"), "{answer}");
}

/// An `https://` upstream: its certificate is checked against the public roots and
/// `--upstream-ca-file`; trusted, requests and actions go through as over plain HTTP;
/// untrusted, nothing is sent (502).
#[tokio::test]
async fn an_https_upstream_is_reached_when_its_certificate_is_trusted() {
    let dir = TempDir::new("upstream-tls");
    let (backend, ca) = EchoUpstream::start_tls(&dir.0).await;
    assert!(backend.url.starts_with("https://"), "{}", backend.url);
    let ca = ca.to_string_lossy().into_owned();
    let h = Herald::start(
        None,
        &["--upstream", &backend.url, "--upstream-ca-file", &ca],
    );
    let (status, echo) = h
        .get("/api/echo/x?y=1", &session_token("alice", "s1"))
        .await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/echo/x");
    assert_eq!(echo["headers"]["x-herald-user"], "alice", "{echo}");
    assert_eq!(echo["headers"]["x-herald-session"], "s1", "{echo}");
    let (status, n) = h
        .publish(
            json!({"users": ["alice"], "notification": {"title": "t", "actions": [
            {"id": "go", "label": "Go", "path": "/api/record/201"}]}}),
        )
        .await;
    assert_eq!(status, 202, "{n}");
    let id = n["ids"]["alice"].as_str().unwrap().to_owned();
    let path = format!("/notifications/{id}/actions/go");
    let (status, n) = send(h.http.post(h.url(&path)).bearer_auth(user_token("alice"))).await;
    assert_eq!(
        (status, n["action"]["status"].as_u64()),
        (200, Some(201)),
        "{n}"
    );
    assert_eq!(backend.recorded().len(), 1);
    // the certificate is not one a public root or a given CA vouches for, or does not name
    // the host the URL does (it names 127.0.0.1, not localhost): 502, nothing sent
    let by_name = backend.url.replace("127.0.0.1", "localhost");
    for args in [
        vec!["--upstream", backend.url.as_str()],
        vec!["--upstream", by_name.as_str(), "--upstream-ca-file", &ca],
    ] {
        let untrusting = Herald::start(None, &args);
        let hits = backend.hits();
        let (status, body) = untrusting.get("/api/echo", &user_token("alice")).await;
        assert_error(status, &body, 502, "bad_gateway");
        assert_eq!(backend.hits(), hits, "{args:?}");
    }
}

#[tokio::test]
async fn unauthenticated_or_cross_origin_requests_are_never_forwarded() {
    let backend = EchoUpstream::start().await;
    let h = Herald::start(None, &["--upstream", &backend.url]);
    let (status, body) = send(h.http.get(h.url("/api/echo"))).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = send(
        h.http
            .get(h.url("/api/echo"))
            .bearer_auth("forged.token.here"),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    let cookie = h.login("alice").await;
    let (status, body) = send(
        h.http
            .delete(h.url("/api/echo"))
            .header("cookie", &cookie)
            .header("origin", "http://evil.example"),
    )
    .await;
    assert_error(status, &body, 403, "forbidden");
    assert_eq!(backend.hits(), 0);
    // without --upstream there is no /api/
    let plain = Herald::start(None, &[]);
    let (status, body) = plain.get("/api/echo", &user_token("alice")).await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let (closed, _bound) = closed_url();
    let h = Herald::start(None, &["--upstream", &closed]);
    let (status, body) = h.get("/api/echo", &user_token("alice")).await;
    assert_error(status, &body, 502, "bad_gateway");
    let backend = EchoUpstream::start().await;
    let h = Herald::start(
        None,
        &["--upstream", &backend.url, "--upstream-timeout", "500ms"],
    );
    let started = std::time::Instant::now();
    let (status, body) = h.get("/api/slow", &user_token("alice")).await;
    assert_error(status, &body, 504, "gateway_timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

/// The proxy bounds each wait, not the whole exchange, and each on whoever is awaited:
/// `--upstream-timeout` the upstream's response head (a steady upload that takes longer goes
/// through, and so does a response body whose pauses are longer than it); a body that pauses
/// past `--upstream-idle-timeout` is cut; while the upstream waits for the rest of an upload,
/// a client pause within `--body-timeout` goes through, and a client that stops sending gets
/// 408 `request_timeout`, not a 504 that blames the upstream.
#[tokio::test]
async fn proxy_bounds_each_wait_on_whoever_is_awaited() {
    let backend = EchoUpstream::start().await;
    let h = Herald::start(
        None,
        &[
            "--upstream",
            &backend.url,
            "--upstream-timeout",
            "500ms",
            "--upstream-idle-timeout",
            "2s",
            "--body-timeout",
            "3s",
        ],
    );
    let token = user_token("alice");
    let upload = |body| {
        send_raw(
            h.http
                .put(h.url("/api/upload"))
                .bearer_auth(&token)
                .body(reqwest::Body::wrap_stream(body)),
        )
    };
    let piece = || Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"0123456789"));
    // 8 pieces 250 ms apart: 2 s in all, never 500 ms without progress
    let pieces =
        futures_util::StreamExt::then(futures_util::stream::iter(0..8), move |_| async move {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            piece()
        });
    let r = upload(futures_util::StreamExt::boxed(pieces)).await;
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["bytes"], 80);
    // a body paused 1 s twice: whole
    let r = send_raw(h.http.get(h.url("/api/pauses")).bearer_auth(&token)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "piece0;piece1;piece2;");
    // a head and a first piece, then silence: the body ends in an error, long before 30 s
    let started = std::time::Instant::now();
    let r = send_raw(h.http.get(h.url("/api/stall")).bearer_auth(&token)).await;
    assert_eq!(r.status(), 200);
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), r.bytes())
        .await
        .expect("the stalled body was not cut within 10 s");
    assert!(body.is_err(), "a cut body must not look complete: {body:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // a piece, a 1.5 s pause, a piece
    let paused =
        futures_util::StreamExt::then(futures_util::stream::iter(0..2), move |i| async move {
            if i == 1 {
                tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            }
            piece()
        });
    let r = upload(futures_util::StreamExt::boxed(paused)).await;
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["bytes"], 20);
    // a piece, then nothing more
    let stalled = futures_util::StreamExt::chain(
        futures_util::stream::iter([piece()]),
        futures_util::stream::pending(),
    );
    let r = upload(futures_util::StreamExt::boxed(stalled)).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_error(status, &body, 408, "request_timeout");
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_with_bounded_memory() {
    const MB: usize = 100;
    let backend = EchoUpstream::start().await;
    let h = Herald::start(None, &["--upstream", &backend.url]);
    let token = user_token("alice");
    // upload: streamed from the client, counted by the backend
    let chunk = bytes::Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = futures_util::stream::iter(
        (0..MB * 4).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let r = send_raw(
        h.http
            .put(h.url("/api/upload"))
            .bearer_auth(&token)
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["bytes"], MB * 1024 * 1024);
    // an upload that waits for `100 Continue` (curl does, for large bodies) is no JSON body:
    // it goes through too
    let r = send_raw(
        h.http
            .post(h.url("/api/upload"))
            .bearer_auth(&token)
            .header("expect", "100-continue")
            .body(vec![b'e'; 2 * 1024 * 1024]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["bytes"], 2 * 1024 * 1024);
    // download: streamed from the backend
    let r = send_raw(
        h.http
            .get(h.url(&format!("/api/stream?mb={MB}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut total = 0;
    let mut stream = r.bytes_stream();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        total += chunk.unwrap().len();
    }
    assert_eq!(total, MB * 1024 * 1024);
    let peak = peak_rss_kib(h.pid());
    assert!(
        peak < 64 * 1024,
        "herald peaked at {peak} KiB while moving {MB} MiB each way"
    );
}

#[tokio::test]
async fn base_path_mounts_every_route_under_a_prefix() {
    let h = Herald::start(None, &["--base-path", "/herald"]);
    assert_eq!(
        h.get("/herald/notifications", &user_token("alice")).await.0,
        200
    );
    assert_eq!(
        send_raw(h.http.get(h.url("/herald/healthz")))
            .await
            .status(),
        200
    );
    assert_eq!(h.get("/notifications", &user_token("alice")).await.0, 404);
    // the base path without its slash leads to it (relative URLs of a page resolve under it)
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = send_raw(no_follow.get(h.url("/herald?x=1"))).await;
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "herald/?x=1");
    // one slash separates segments: an empty segment is another path
    assert_eq!(
        h.get("/herald//notifications", &user_token("alice"))
            .await
            .0,
        404
    );
    let mut sse = h
        .events_with(
            h.http
                .get(h.url("/herald/events"))
                .bearer_auth(user_token("alice")),
        )
        .await;
    assert_eq!(sse.next_event().await.event, "ready");
}

#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    let backend = EchoUpstream::start().await;
    // (extra flags, https for the Origin rule, X-Forwarded-For / -Proto / -Host the backend
    // sees); the cookie never has `Secure` in --dev
    let cases = [
        (vec![], false, "127.0.0.1", "http", None),
        (
            vec!["--trusted-proxy", "127.0.0.0/8"],
            true,
            "198.51.100.7, 127.0.0.1",
            "https",
            Some("public.example"),
        ),
    ];
    for (extra, secure, chain, proto, public_host) in cases {
        let flags = [vec!["--dev", "--upstream", backend.url.as_str()], extra].concat();
        let h = Herald::start(None, &flags);
        let spoof = |req: reqwest::RequestBuilder| {
            req.header("x-forwarded-proto", "https")
                .header("x-forwarded-for", "198.51.100.7")
                .header("x-forwarded-host", "public.example")
        };
        // the page's origin carries the scheme the client used (https behind the proxy)
        let origin = match secure {
            true => h.base.replace("http://", "https://"),
            false => h.base.clone(),
        };
        let login = h.http.post(h.url("/dev/login")).header("origin", origin);
        let r = send_raw(spoof(login).json(&json!({"user": "alice"}))).await;
        let set = r.headers()["set-cookie"].to_str().unwrap();
        assert!(!set.contains("Secure"), "{flags:?}: {set}");
        let api = h.http.get(h.url("/api/echo")).bearer_auth(user_token("a"));
        let echo: Value = send_raw(spoof(api)).await.json().await.unwrap();
        assert_eq!(echo["headers"]["x-forwarded-for"], chain, "{flags:?}");
        assert_eq!(echo["headers"]["x-forwarded-proto"], proto, "{flags:?}");
        // the trusted proxy's public host stays; anyone else's is the request's Host
        let host = public_host.map_or_else(
            || crate::common::origin(&h.base)[7..].to_owned(),
            str::to_owned,
        );
        assert_eq!(
            echo["headers"]["x-forwarded-host"],
            host.as_str(),
            "{flags:?}"
        );
    }
}

/// M5: the rest of an `/api/` path cannot climb out of the `--upstream` base: dot-segments
/// (also percent-encoded), encoded slashes and backslashes are refused with 400 and never
/// forwarded. Sent as raw bytes, since HTTP clients normalize such paths themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_paths_cannot_leave_the_upstream_base() {
    let backend = EchoUpstream::start().await;
    let h = Herald::start(None, &["--upstream", &format!("{}/base", backend.url)]);
    let token = user_token("alice");
    let get = |path: &str| {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        raw_http_async(&h.base, req)
    };
    for path in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2E%2e/admin",
        "/api/.%2e/admin",
        "/api/..%2fadmin",
        "/api/x%2F..%2Fadmin",
        "/api/./../admin",
        "/api/x/./y",
        "/api/x\\..\\..\\admin",
        "/api/x%5c..%5cadmin",
        "/api/..;/admin",
    ] {
        let answer = get(path).await;
        assert_eq!(raw_status(&answer), 400, "{path}: {answer}");
        assert!(answer.contains("invalid_request"), "{path}: {answer}");
    }
    assert_eq!(backend.hits(), 0, "nothing was forwarded");
    // ordinary paths (dots inside names, encoded spaces) still go through, below the base
    let answer = get("/api/v1.2/..a/a%20b").await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(
        answer.contains(r#""path":"/base/v1.2/..a/a%20b""#),
        "{answer}"
    );
}

/// `OPTIONS` that is not a CORS preflight (no `Access-Control-Request-Method`) is routed:
/// `204` with `Allow` on a known path (`/admin/` included), `404` on an unknown one, forwarded
/// under `/api/`. A preflight is still the CORS layer's.
#[tokio::test]
async fn plain_options_is_routed() {
    let backend = EchoUpstream::start().await;
    let upstream = format!("{}/", backend.url);
    let h = Herald::start(None, &["--upstream", &upstream, "--admin"]);
    let options = |path: &str| h.http.request(reqwest::Method::OPTIONS, h.url(path));
    let r = send_raw(options("/notifications")).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["allow"], "GET, HEAD, PATCH, OPTIONS");
    // the admin view's own table too
    let r = send_raw(options("/admin/nodes")).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["allow"], "GET, HEAD, OPTIONS");
    let (status, body) = send(options("/nothing")).await;
    assert_error(status, &body, 404, "not_found");
    let r = send_raw(options("/api/echo").bearer_auth(user_token("alice"))).await;
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "OPTIONS");
    assert_eq!(echo["headers"]["x-herald-user"], "alice");
    // unauthenticated: never forwarded
    assert_eq!(send_raw(options("/api/echo")).await.status(), 401);
    // a preflight is answered by Herald, not forwarded
    let r = send_raw(
        options("/api/echo")
            .header("origin", &h.base)
            .header("access-control-request-method", "PUT"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], h.base.as_str());
}
