//! HTTP conformance and edge rules: 405 carries `Allow`; `HEAD` wherever `GET` answers but
//! `/events`; exactly
//! one `Host`; the Origin rule compares host and port and refuses userinfo; credentials only in
//! CORS answers to allowed origins; `--metrics-allow`.

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_not_allowed_names_the_allowed_methods() {
    let h = Herald::start(None, &["--dev"]);
    for (method, path, allow) in [
        ("DELETE", "/publish", "POST"),
        ("PUT", "/notifications", "GET, HEAD, PATCH"),
        ("HEAD", "/events", "GET"),
        ("GET", "/notifications/x", "PATCH"),
        ("POST", "/herald.js", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("GET", "/session", "POST, DELETE"),
        ("GET", "/dev/login", "POST"),
    ] {
        let r = send_raw(h.http.request(method.parse().unwrap(), h.url(path))).await;
        assert_eq!(r.status(), 405, "{method} {path}");
        let allow = format!("{allow}, OPTIONS");
        assert_eq!(r.headers()["allow"], allow.as_str(), "{method} {path}");
        if method != "HEAD" {
            let (status, body) = status_json(r).await;
            assert_error(status, &body, 405, "method_not_allowed");
        }
    }
}

/// `HEAD` on the JSON `GET` endpoints answers what `GET` would, headers alone: status,
/// `Content-Type`, `Content-Length`; a refusal keeps its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_like_get_on_the_json_endpoints() {
    let h = Herald::start(None, &[]);
    h.notify("alice", "one").await;
    let user = user_token("alice");
    let service = service_token();
    for (path, token, want) in [
        ("/notifications?limit=5", &user, 200),
        ("/notifications/counts", &user, 200),
        ("/preferences", &user, 200),
        ("/presence/alice", &service, 200),
        ("/groups/g/members", &service, 200),
        ("/notifications", &service, 401),
        ("/push/key", &user, 404),
    ] {
        let get = send_raw(h.http.get(h.url(path)).bearer_auth(token)).await;
        assert_eq!(get.status(), want, "GET {path}");
        let length = get.bytes().await.unwrap().len();
        let answer = raw_http_async(
            &h.base,
            format!(
                "HEAD {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(raw_status(&answer), want, "HEAD {path}: {answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let head = head.to_ascii_lowercase();
        assert!(body.is_empty(), "HEAD {path}: a body came with HEAD");
        assert!(
            head.contains("content-type: application/json"),
            "HEAD {path}: {head}"
        );
        assert!(
            head.contains(&format!("content-length: {length}")),
            "HEAD {path}: {head}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_serves_the_assets_without_a_body() {
    let h = Herald::start(None, &["--dev"]);
    for path in ["/herald.js", "/herald-worker.js", "/"] {
        let get = send_raw(h.http.get(h.url(path))).await;
        assert_eq!(get.status(), 200);
        let length = get.bytes().await.unwrap().len();
        let answer = raw_http_async(
            &h.base,
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(raw_status(&answer), 200, "{path}: {answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(body.is_empty(), "{path}: a body came with HEAD");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-length: {length}")),
            "{path}: {head}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_requests_need_exactly_one_host() {
    let h = Herald::start(None, &[]);
    for (request, want) in [
        ("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        (
            "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            400,
        ),
        ("GET /healthz HTTP/1.0\r\n\r\n", 200),
        (
            "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            200,
        ),
    ] {
        let answer = raw_http_async(&h.base, request.to_owned()).await;
        assert_eq!(raw_status(&answer), want, "{request:?}: {answer}");
        if want == 400 {
            assert!(answer.contains("invalid_request"), "{answer}");
        }
    }
    // A head refused for its Host, or for two Authorization headers, closes the connection:
    // a request pipelined behind it is not read. A CONNECT (no path) is no request for Herald.
    let token = user_token("alice");
    for first in [
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_owned(),
        format!(
            "GET /auth HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        ),
        "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n".to_owned(),
    ] {
        let request = format!("{first}GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
        let answer = raw_http_async(&h.base, request).await;
        assert_eq!(raw_status(&answer), 400, "{first:?}: {answer}");
        assert!(answer.contains("invalid_request"), "{answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{first:?}: {answer}"
        );
    }
}

/// The Origin rule for cookie writes: the Origin's host and port must equal the `Host`'s (the
/// scheme is not compared, so a page served over https by a TLS-terminating proxy passes), and
/// origins with userinfo are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_rule_compares_host_and_port_and_refuses_userinfo() {
    let h = Herald::start(None, &[]);
    let cookie = h.login("alice").await;
    let host = addr_of(&h.base);
    let port = host.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
    let write = |origin: String, host_header: Option<&str>| {
        let mut req = h
            .http
            .patch(h.url("/notifications"))
            .header("cookie", &cookie)
            .header("origin", origin)
            .json(&json!({"all": true, "read": true}));
        if let Some(value) = host_header {
            req = req.header("host", value);
        }
        async move { send_raw(req).await.status().as_u16() }
    };
    assert_eq!(write(format!("http://{host}"), None).await, 200);
    assert_eq!(write(format!("https://{host}"), None).await, 200);
    assert_eq!(
        write(format!("http://127.0.0.1:{}", port + 1), None).await,
        403
    );
    assert_eq!(write(format!("http://localhost:{port}"), None).await, 403);
    assert_eq!(write(format!("http://user@{host}"), None).await, 403);
    assert_eq!(write(format!("http://user:pw@{host}"), None).await, 403);
    // behind a proxy: the Host names the site, a missing port is the Origin scheme's default
    let site = Some("app.example");
    assert_eq!(write("https://app.example".into(), site).await, 200);
    assert_eq!(write("http://app.example".into(), site).await, 200);
    assert_eq!(write("https://app.example:8443".into(), site).await, 403);
    assert_eq!(
        write("https://app.example".into(), Some("app.example:443")).await,
        200
    );
    assert_eq!(
        write("http://app.example".into(), Some("app.example:443")).await,
        403
    );
}

/// `Access-Control-Allow-Credentials` only in answers to an allowed origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_credentials_only_for_allowed_origins() {
    let h = Herald::start(None, &[]);
    let get = |origin: Option<&str>| {
        let mut req = h.http.get(h.url("/healthz"));
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        async move { send_raw(req).await }
    };
    for origin in [None, Some("http://evil.example")] {
        let r = get(origin).await;
        assert!(
            r.headers()
                .get("access-control-allow-credentials")
                .is_none(),
            "{origin:?}: {:?}",
            r.headers()
        );
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
    let r = get(Some(&h.base)).await;
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert_eq!(r.headers()["access-control-allow-origin"], h.base.as_str());
}

/// A CORS preflight from an origin that is not allowed gets no `Access-Control-Allow-*`
/// answer (the browser then refuses the request); one from an allowed origin gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_refused_to_other_origins() {
    let h = Herald::start(None, &["--allowed-origin", "https://app.example"]);
    let preflight = |origin: &str| {
        h.http
            .request(reqwest::Method::OPTIONS, h.url("/notifications"))
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header("access-control-request-headers", "content-type")
    };
    for origin in ["http://evil.example", "https://app.example.evil", "null"] {
        let r = send_raw(preflight(origin)).await;
        for name in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
        ] {
            assert!(
                r.headers().get(name).is_none(),
                "{origin}: {name} in {:?}",
                r.headers()
            );
        }
    }
    let r = send_raw(preflight("https://app.example")).await;
    assert!(r.status().is_success(), "{}", r.status());
    let headers = r.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("PATCH"), "{methods}");
}

/// `--metrics-allow` limits `/metrics` to the listed networks (403 for others); without it,
/// anyone may read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_allow_limits_who_reads_metrics() {
    let closed = Herald::start(None, &["--metrics-allow", "10.0.0.0/8"]);
    let (status, body) = send(closed.http.get(closed.url("/metrics"))).await;
    assert_error(status, &body, 403, "forbidden");
    let open = Herald::start(None, &["--metrics-allow", "10.0.0.0/8,127.0.0.1"]);
    let r = send_raw(open.http.get(open.url("/metrics"))).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("herald_streams_open"));
    let default = Herald::start(None, &[]);
    let r = send_raw(default.http.get(default.url("/metrics"))).await;
    assert_eq!(r.status(), 200);
}
