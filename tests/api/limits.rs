//! What bounds each request: a publish to ~90k users shares the node (O(n) work, yields
//! between chunks), a store failure part-way names the users stored, stalled responses and
//! trickling bodies end at their timeouts, request heads are capped at 32 KiB, and a client
//! refused while still sending reads its answer.

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
            let r = send_raw(
                http.post(url)
                    .bearer_auth(service_token())
                    .json(&body)
                    .timeout(Duration::from_secs(120)),
            )
            .await;
            status_json(r).await
        })
    };
    let probe = client();
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while !publish.is_finished() && started.elapsed() < Duration::from_secs(120) {
        let t = Instant::now();
        let r = send_raw(probe.get(h.url("/healthz"))).await;
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

/// L7: a store failure part-way through a multi-user publish answers with the failure's
/// status (503 `unavailable` for an outage, 500 `internal` for a refused key as here) and
/// names, in `error.stored`, the users whose notification is stored, so a retry can skip
/// them. The failure is made deterministic by a key of the wrong type for one user, placed in
/// the second batch of 512 recipients (the publish service's `BATCH`). Two batches are sent
/// at once: the third is on its way when the second fails, the fourth is never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_publish_names_the_users_stored() {
    const BATCH: usize = 512;
    let redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    let mut conn = redis.conn();
    for suffix in ["items", "order", "unread"] {
        let _: () = redis::cmd("SET")
            .arg(format!("herald:{{u:poison}}:{suffix}"))
            .arg("not a tray")
            .query(&mut conn)
            .unwrap();
    }
    let mut users: Vec<String> = (0..4 * BATCH).map(|i| format!("p{i:04}")).collect();
    users.insert(BATCH + 100, "poison".into());
    let (status, body) = h
        .publish(json!({"users": users, "notification": {"title": "partial"}}))
        .await;
    // the poisoned keys refuse the user's data: not an outage, so 500, with `stored` all the same
    assert_error(status, &body, 500, "internal");
    let stored = body["error"]["stored"].as_object().expect("error.stored");
    assert!(!stored.contains_key("poison"), "{body}");
    // the batch before the failing one and the one sent beside it are stored; nothing after
    // them is sent
    for user in users[..BATCH].iter().chain(&users[2 * BATCH..3 * BATCH]) {
        assert!(stored.contains_key(user), "{user} missing from {body}");
    }
    for user in &users[3 * BATCH..] {
        assert!(
            !stored.contains_key(user),
            "{user} stored after the failing batch"
        );
    }
    // exactly the users it names have the notification (the poisoned keys aside)
    let trays: Vec<String> = redis::cmd("KEYS")
        .arg("herald:{u:p[0-9]*}:items")
        .query(&mut conn)
        .unwrap();
    assert_eq!(trays.len(), stored.len(), "{body}");
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

/// L5: a client that asks for a large tray page and never reads is disconnected once a write
/// has been blocked for `--send-timeout`, instead of pinning the response in memory forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Herald::start(None, &["--send-timeout", "1s"]);
    let body = "x".repeat(15_000);
    for i in 0..200 {
        let (status, answer) = h
            .publish(json!({"users": ["bigtray"], "notification": {"title": format!("t{i}"), "body": body}}))
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    let mut stream = narrow_connection(&h.base).await;
    // the page twice on one connection (~6 MB): more than the kernel's socket buffers hold
    let get = |close: &str| {
        format!(
            "GET /notifications?limit=200 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{close}\r\n",
            user_token("bigtray")
        )
    };
    let request = get("") + &get("Connection: close\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // never read for longer than the send timeout
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection is still open"),
        }
    }
    let head = String::from_utf8_lossy(&received[..received.len().min(400)]).into_owned();
    assert_eq!(raw_status(&head), 200, "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    println!(
        "received {} bytes of two {length}-byte answers",
        received.len()
    );
    assert!(length > 2_500_000, "{length}");
    assert!(
        received.len() < 2 * length,
        "the whole answer arrived: the connection was not cut"
    );
}

/// L5: a JSON body that trickles, or a chunked body that never ends, gets 408
/// `request_timeout` (and the connection closes) once `--body-timeout` has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_endless_bodies_get_408_after_the_body_timeout() {
    let h = Herald::start(None, &["--body-timeout", "1s"]);
    let token = service_token();
    let heads = [
        format!("POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"),
        format!("POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n"),
    ];
    for (i, head) in heads.into_iter().enumerate() {
        let base = h.base.clone();
        let (took, answer) = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr_of(&base)).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let started = Instant::now();
            s.write_all(head.as_bytes()).unwrap();
            // the first body trickles a byte every 100 ms; the second just stops
            let mut writer = s.try_clone().unwrap();
            let trickle = std::thread::spawn(move || {
                for _ in 0..50 {
                    std::thread::sleep(Duration::from_millis(100));
                    let chunk: &[u8] = if i == 0 { b" " } else { b"" };
                    if writer.write_all(chunk).is_err() {
                        return;
                    }
                }
            });
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            let took = started.elapsed();
            drop(s);
            let _ = trickle.join();
            (took, String::from_utf8_lossy(&out).into_owned())
        })
        .await
        .unwrap();
        assert_eq!(raw_status(&answer), 408, "{answer}");
        assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
        assert!(took < Duration::from_secs(4), "answered after {took:?}");
    }
}

/// L6: request heads are capped at 32 KiB (431); a 16 KiB header still works; a kept-alive
/// connection's later requests get the same JSON 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_are_capped_at_32_kib() {
    let h = Herald::start(None, &[]);
    let request = |pad: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(pad)
        )
    };
    let base = h.base.clone();
    let (small, large) = tokio::task::spawn_blocking(move || {
        (
            raw_http(&base, request(16 * 1024).as_bytes()),
            raw_http(&base, request(40 * 1024).as_bytes()),
        )
    })
    .await
    .unwrap();
    assert_eq!(raw_status(&small), 200, "{small}");
    assert_eq!(raw_status(&large), 431, "{large}");
    assert!(large.contains(r#""code":"too_large""#), "{large}");
    // more than 100 headers: 431 too
    let many = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: 1\r\n".repeat(101)
    );
    let answer = raw_http_async(&h.base, many).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    assert!(answer.contains(r#""code":"too_large""#), "{answer}");
    // the same on a kept-alive connection, whose later requests hyper reads: the JSON body,
    // and the connection closed (also past hyper's own cap, 64 KiB, where hyper answers)
    let first = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for later in [
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(40 * 1024)
        ),
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(70 * 1024)
        ),
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "X-A: 1\r\n".repeat(101)
        ),
    ] {
        let answer = raw_http_async(&h.base, format!("{first}{later}")).await;
        let (ok, refused) = answer.split_once("HTTP/1.1 431").expect(&answer);
        assert_eq!(raw_status(ok), 200, "{answer}");
        assert!(refused.contains(r#""code":"too_large""#), "{answer}");
        assert!(
            refused.to_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
}

/// A body announced over 1 MiB is refused from its head: `413` at once, without `100
/// Continue` to a client that waits for it (it would send 5 MB for nothing, or wait for a 408),
/// and to one that sends at once, before the body's first MiB (or, if it sends less than it
/// announced, a 408 at `--body-timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_announced_too_large_gets_413_before_it_is_sent() {
    let h = Herald::start(None, &[]);
    for (expect, body) in [("Expect: 100-continue\r\n", ""), ("", "{\"users\":")] {
        let head = format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 5000000\r\n{expect}\r\n{body}",
            service_token()
        );
        let started = Instant::now();
        let answer = raw_http_async(&h.base, head).await;
        assert_eq!(raw_status(&answer), 413, "{answer}");
        assert!(!answer.contains("100 Continue"), "{answer}");
        assert!(answer.contains(r#""code":"too_large""#), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(5), "{answer}");
    }
}

/// A client still sending when its request is refused reads the answer, not a reset: the
/// rest of a body over 1 MiB (413, hyper's connection) or of a head over 32 KiB (431, the
/// first request's reader) sent after the answer is taken and dropped (a lingering close), so
/// its writes succeed and the answer waits to be read. Closed at once, the socket answered
/// those writes with a reset and clients such as hyper's failed with "broken pipe".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_sending_when_refused_reads_the_answer() {
    use std::io::{Read, Write};
    let h = Herald::start(None, &[]);
    let body = 3 * 1024 * 1024;
    let publish = format!(
        "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {body}\r\n\r\n",
        service_token()
    );
    let big_head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
        "a".repeat(40 * 1024)
    );
    let cases = [
        (publish, vec![b' '; body], 413),
        (big_head, b"a".repeat(256 * 1024), 431),
    ];
    let addr = addr_of(&h.base);
    tokio::task::spawn_blocking(move || {
        for (first, rest, status) in cases {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            s.write_all(first.as_bytes()).unwrap();
            // the answer is written and the server done with the connection before the rest
            std::thread::sleep(Duration::from_millis(300));
            // in pieces, as a client streams a body: a reset would arrive between them
            for piece in rest.chunks(16 * 1024) {
                s.write_all(piece)
                    .unwrap_or_else(|e| panic!("{status}: the rest could not be sent: {e}"));
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut answer = Vec::new();
            s.read_to_end(&mut answer)
                .unwrap_or_else(|e| panic!("{status}: no answer: {e}"));
            let answer = String::from_utf8_lossy(&answer);
            assert_eq!(raw_status(&answer), status, "{answer}");
            assert!(answer.contains(r#""code":"too_large""#), "{answer}");
        }
    })
    .await
    .unwrap();
}

/// Request heads the HTTP parser refuses get 400 with the JSON error body too (a malformed
/// line, a body whose length can't be known) and an `X-Request-Id`, and the connection closes: a connection's first
/// head and a later one on a kept-alive connection (hyper's parser, whose own answer has an
/// empty body) alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_400_with_the_error_body() {
    let h = Herald::start(None, &[]);
    let heads = [
        "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
        "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        "POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        "GET /events HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n",
    ];
    for head in heads {
        let answer = raw_http_async(&h.base, head.to_owned()).await;
        assert_eq!(raw_status(&answer), 400, "{head:?}: {answer}");
        assert!(
            answer.contains(r#""code":"invalid_request""#),
            "{head:?}: {answer}"
        );
        assert!(answer.contains("x-request-id: "), "{head:?}: {answer}");
        let first = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let answer = raw_http_async(&h.base, format!("{first}{head}")).await;
        let (ok, refused) = answer.split_once("HTTP/1.1 400").expect(&answer);
        assert_eq!(raw_status(ok), 200, "{head:?}: {answer}");
        let refused = refused.to_lowercase();
        assert!(
            refused.contains("content-type: application/json"),
            "{head:?}: {answer}"
        );
        assert!(refused.contains("connection: close"), "{head:?}: {answer}");
        assert!(refused.contains("x-request-id: "), "{head:?}: {answer}");
        assert!(
            refused.ends_with(
                r#"{"error":{"code":"invalid_request","message":"malformed request head"}}"#
            ),
            "{head:?}: {answer}"
        );
    }
}
