//! The socket transport: a plain `GET /events` leaves hyper once its head is answered, so what
//! hyper used to handle for it is tested here on raw sockets: the response head, HTTP/1.0,
//! requests pipelined before and after it, a refused `/events` on a connection that goes on,
//! a client that half-closes, one that stalls, heartbeats on an idle stream, and SIGTERM.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::json;

use crate::common::*;

/// A raw connection and everything read from it so far.
struct Raw {
    socket: TcpStream,
    text: String,
}

impl Raw {
    async fn open(h: &Herald, request: &str) -> Raw {
        let mut socket = TcpStream::connect(addr_of(&h.base)).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        Raw {
            socket,
            text: String::new(),
        }
    }

    /// Read until `done` holds for what was read, or panic after `WAIT`.
    async fn until(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let mut buf = vec![0u8; 16 * 1024];
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&self.text) {
            let n = tokio::time::timeout_at(deadline, self.socket.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}; read:\n{}", self.text))
                .unwrap();
            assert!(n > 0, "closed before {what}; read:\n{}", self.text);
            self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Read until the server closes the connection (or panic after `WAIT`).
    async fn until_closed(&mut self) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let read = tokio::time::timeout(WAIT, self.socket.read(&mut buf)).await;
            match read.expect("the connection is still open") {
                Ok(0) | Err(_) => return,
                Ok(n) => self.text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    }
}

/// alice's stream on a connection with a small receive buffer that is never read: once
/// the kernel's buffers are full, Herald's writes to it block.
async fn unread_stream(h: &Herald) -> TcpStream {
    let mut stream = narrow_connection(&h.base).await;
    let request = events_request("HTTP/1.1", &user_token("alice"));
    stream.write_all(request.as_bytes()).await.unwrap();
    wait_for("the stream to open", async || {
        h.metric("herald_streams_open").await == 1.0
    })
    .await;
    stream
}

fn events_request(version: &str, token: &str) -> String {
    format!("GET /events {version}\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
}

/// The head is what hyper wrote: 200, the SSE headers, chunked; each event is one chunk.
#[tokio::test]
async fn the_stream_head_and_chunks_are_as_before() {
    let h = Herald::start(None, &[]);
    let mut raw = Raw::open(&h, &events_request("HTTP/1.1", &user_token("alice"))).await;
    raw.until("ready", |t| t.contains("event: ready")).await;
    let head = raw
        .text
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "x-accel-buffering: no",
        "transfer-encoding: chunked",
        "date: ",
    ] {
        assert!(head.contains(line), "{line} missing from {head}");
    }
    h.notify("alice", "hello").await;
    raw.until("the notification", |t| t.contains("\"title\":\"hello\""))
        .await;
    // every frame is a chunk: length line, the frame, CRLF
    let frame = raw.text.rsplit("\r\n\r\n").find(|c| c.contains("hello"));
    let chunk = raw.text.split("\r\n").skip_while(|l| !l.contains("hello"));
    assert!(frame.is_some() && chunk.count() > 0, "{}", raw.text);
}

/// HTTP/1.0 has no chunks: the body is the events, ended by closing the connection.
#[tokio::test]
async fn http_1_0_streams_without_chunks() {
    let h = Herald::start(None, &[]);
    let mut raw = Raw::open(&h, &events_request("HTTP/1.0", &user_token("alice"))).await;
    raw.until("ready", |t| t.contains("event: ready")).await;
    assert!(!raw.text.to_ascii_lowercase().contains("transfer-encoding"));
    let body = raw.text.split_once("\r\n\r\n").unwrap().1;
    assert!(body.starts_with("retry: "), "{body}");
}

/// Requests pipelined before `/events` are answered in order, then the stream runs (on
/// hyper); bytes sent after an `/events` request are never answered and break nothing.
#[tokio::test]
async fn pipelined_requests_before_and_after_events() {
    let h = Herald::start(None, &[]);
    let token = user_token("alice");
    let before = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n{}",
        events_request("HTTP/1.1", &token)
    );
    let mut raw = Raw::open(&h, &before).await;
    raw.until("ready", |t| t.contains("event: ready")).await;
    assert_eq!(raw_status(&raw.text), 200);
    assert_eq!(raw.text.matches("HTTP/1.1 200").count(), 2, "{}", raw.text);

    let after = format!(
        "{}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        events_request("HTTP/1.1", &token)
    );
    let mut raw = Raw::open(&h, &after).await;
    raw.until("ready", |t| t.contains("event: ready")).await;
    h.notify("alice", "still here").await;
    raw.until("the notification", |t| t.contains("still here"))
        .await;
    assert_eq!(raw.text.matches("HTTP/1.1").count(), 1, "{}", raw.text);
}

/// A refused `/events` (no token) is answered with the JSON error, and the connection then
/// serves the next request.
#[tokio::test]
async fn a_refused_stream_keeps_the_connection() {
    let h = Herald::start(None, &[]);
    let request = "GET /events HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut raw = Raw::open(&h, request).await;
    raw.until("both answers", |t| t.contains(r#"{"status":"ok"}"#))
        .await;
    assert_eq!(raw_status(&raw.text), 401, "{}", raw.text);
    assert!(
        raw.text.contains(r#""code":"unauthorized""#),
        "{}",
        raw.text
    );
    let second = raw.text.rsplit("HTTP/1.1 ").next().unwrap();
    assert!(second.starts_with("200"), "{}", raw.text);
}

/// A refused `/events` says whether the connection goes on, as hyper's answers do: closed
/// when the client asked (or is HTTP/1.0 without keep-alive), kept for HTTP/1.0 only when the
/// client asked and the answer says so.
#[tokio::test]
async fn a_refused_stream_says_whether_the_connection_goes_on() {
    let h = Herald::start(None, &[]);
    for (version, asked, answered) in [
        ("HTTP/1.1", "Connection: close\r\n", "connection: close"),
        ("HTTP/1.0", "", "connection: close"),
        (
            "HTTP/1.0",
            "Connection: keep-alive\r\n",
            "connection: keep-alive",
        ),
    ] {
        let request = format!(
            "GET /events {version}\r\nHost: x\r\n{asked}\r\nGET /healthz {version}\r\n\r\n"
        );
        let mut raw = Raw::open(&h, &request).await;
        if answered.ends_with("close") {
            raw.until_closed().await;
            assert_eq!(raw.text.matches("HTTP/1.1 ").count(), 1, "{}", raw.text);
        } else {
            raw.until("both answers", |t| t.contains(r#"{"status":"ok"}"#))
                .await;
        }
        assert_eq!(raw_status(&raw.text), 401, "{}", raw.text);
        let head = raw.text.split("\r\n\r\n").next().unwrap();
        assert!(
            head.to_ascii_lowercase().contains(answered),
            "{version} {asked:?}: no {answered} in\n{head}"
        );
    }
}

/// An answer given before its request's body was read (a refusal) says `Connection: close`,
/// as the connection then closes (hyper cannot tell where the next request would start); a
/// request whose body was read keeps the connection.
#[tokio::test]
async fn an_answer_before_the_body_says_the_connection_closes() {
    let h = Herald::start(None, &[]);
    let body = r#"{"read":true}"#;
    let head = format!(
        "PATCH /notifications/01ARZ3NDEKTSV4RRFFQ69G5FAV HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut raw = Raw::open(&h, &head).await;
    raw.until("the answer's head", |t| t.contains("\r\n\r\n"))
        .await;
    // the body comes late: the connection closes once the answer is written
    let _ = raw.socket.write_all(body.as_bytes()).await;
    raw.until_closed().await;
    assert_eq!(raw_status(&raw.text), 401, "{}", raw.text);
    let answer = raw.text.split("\r\n\r\n").next().unwrap();
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let all = r#"{"all":true,"read":true}"#;
    let request = format!(
        "PATCH /notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{all}\
         GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        user_token("alice"),
        all.len()
    );
    let mut raw = Raw::open(&h, &request).await;
    raw.until("both answers", |t| t.contains(r#"{"status":"ok"}"#))
        .await;
    assert_eq!(raw_status(&raw.text), 200, "{}", raw.text);
    assert!(
        !raw.text.to_ascii_lowercase().contains("connection: close"),
        "{}",
        raw.text
    );
}

/// A stream Herald ends while its client is still sending (bytes after its request) is
/// closed after its last chunk without a reset: the client reads the end and the socket's
/// close, not ECONNRESET (a close with unread input resets, which can cost the client the
/// stream's last frames). Several tries: without the lingering close most of them reset.
#[tokio::test]
async fn a_stream_ended_while_its_client_sends_closes_without_a_reset() {
    let h = Herald::start(None, &[]);
    for round in 0..5 {
        let token = session_token("alice", &format!("s{round}"));
        let socket = TcpStream::connect(addr_of(&h.base)).await.unwrap();
        let (mut reader, mut writer) = socket.into_split();
        writer
            .write_all(events_request("HTTP/1.1", &token).as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        let mut buf = vec![0u8; 16 * 1024];
        while !text.contains("event: ready") {
            let n = tokio::time::timeout(WAIT, reader.read(&mut buf))
                .await
                .expect("ready")
                .unwrap();
            assert!(n > 0, "closed before ready: {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        // Stray bytes, sent until the server closes.
        let sender = tokio::spawn(async move {
            while writer.write_all(&[b'x'; 256]).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The session's next stream replaces it.
        let mut next = Raw::open(&h, &events_request("HTTP/1.1", &token)).await;
        next.until("ready", |t| t.contains("event: ready")).await;
        loop {
            let read = tokio::time::timeout(WAIT, reader.read(&mut buf)).await;
            match read.expect("the stream is still open") {
                Ok(0) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) => panic!("round {round}: {e} after:\n{text}"),
            }
        }
        sender.abort();
        assert!(text.contains("event: replaced"), "{text}");
        assert!(text.ends_with("\r\n0\r\n\r\n"), "no last chunk: {text:?}");
    }
}

/// `--idle-timeout` closes a plain HTTP/1.1 connection kept alive after its answers, and one
/// that sends nothing at all, once it has been idle that long; an open stream is not idle.
#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    use std::time::Instant;
    let h = Herald::start(None, &["--idle-timeout", "1s"]);
    let mut kept = Raw::open(&h, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    kept.until("the answer", |t| t.contains(r#"{"status":"ok"}"#))
        .await;
    let answered = Instant::now();
    let mut silent = Raw::open(&h, "").await;
    let opened = Instant::now();
    let mut stream = Raw::open(&h, &events_request("HTTP/1.1", &user_token("alice"))).await;
    stream.until("ready", |t| t.contains("event: ready")).await;
    kept.until_closed().await;
    silent.until_closed().await;
    assert!(answered.elapsed() >= Duration::from_millis(800));
    assert!(opened.elapsed() >= Duration::from_millis(800));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id = h.notify("alice", "still open").await;
    stream.until("the event", |t| t.contains(&id)).await;
}

/// A client that closes its sending side (half-close) ends its stream, as hyper did: the
/// server closes the connection and the stream is gone from the hub.
#[tokio::test]
async fn a_half_closed_client_ends_its_stream() {
    let h = Herald::start(None, &[]);
    let mut raw = Raw::open(&h, &events_request("HTTP/1.1", &user_token("alice"))).await;
    raw.until("ready", |t| t.contains("event: ready")).await;
    assert_eq!(h.metric("herald_streams_open").await, 1.0);
    raw.socket.shutdown().await.unwrap();
    raw.until_closed().await;
    wait_for("the stream to leave the hub", async || {
        h.metric("herald_streams_open").await == 0.0
    })
    .await;
}

/// Any other request whose client shuts its sending side after it (`nc -N`, some health
/// checkers) still gets its answer, whenever the end of its side arrives: with the request,
/// while the answer is pending (a slow upstream), or right after two pipelined requests
/// (both answered). A publish is stored and answered once.
#[tokio::test]
async fn a_request_sent_then_half_closed_is_answered() {
    let backend = EchoUpstream::start().await;
    let h = Herald::start(None, &["--upstream", &backend.url]);
    let body = json!({"users": ["alice"], "notification": {"title": "half"}}).to_string();
    let token = service_token();
    let user = user_token("alice");
    let healthz = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases = [
        (
            format!(
                "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            Duration::ZERO,
            1,
        ),
        (healthz.to_owned(), Duration::ZERO, 1),
        (
            "GET /healthz HTTP/1.0\r\n\r\n".to_owned(),
            Duration::ZERO,
            1,
        ),
        // the end arrives while the upstream takes 3 s to answer
        (
            format!("GET /api/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\n\r\n"),
            Duration::from_millis(300),
            1,
        ),
        (format!("{healthz}{healthz}"), Duration::ZERO, 2),
    ];
    for (request, pause, answers) in cases {
        let mut socket = TcpStream::connect(addr_of(&h.base)).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(pause).await;
        socket.shutdown().await.unwrap();
        let mut raw = Raw {
            socket,
            text: String::new(),
        };
        raw.until_closed().await;
        let statuses: Vec<&str> = raw
            .text
            .split("HTTP/1.")
            .skip(1)
            .filter_map(|answer| answer.split(' ').nth(1))
            .collect();
        assert_eq!(statuses.len(), answers, "{request}: {}", raw.text);
        assert!(
            statuses.iter().all(|s| matches!(*s, "200" | "202")),
            "{request}: {}",
            raw.text
        );
    }
    assert_eq!(h.tray_len("alice").await, 1);
}

/// A half-closed client that reads only later gets a large answer whole: the end of its input
/// stays held until the last bytes are written out, not only handed to hyper.
#[tokio::test]
async fn a_half_closed_client_gets_a_large_answer_whole() {
    let backend = EchoUpstream::start().await;
    let h = Herald::start(None, &["--upstream", &backend.url]);
    let request = format!(
        "GET /api/stream?mb=8 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        user_token("alice")
    );
    // a small receive buffer, so most of the answer waits on the server's side
    let client = tokio::net::TcpSocket::new_v4().unwrap();
    client.set_recv_buffer_size(16 * 1024).unwrap();
    let mut socket = client
        .connect(addr_of(&h.base).parse().unwrap())
        .await
        .unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.shutdown().await.unwrap();
    // the answer fills the socket buffers before anything is read
    tokio::time::sleep(Duration::from_millis(500)).await;
    // then slowly, so the server's last writes wait on the client
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let reading = async {
        loop {
            match socket.read(&mut buf).await.expect("no reset") {
                0 => break,
                n => answer.extend_from_slice(&buf[..n]),
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    };
    tokio::time::timeout(WAIT, reading)
        .await
        .expect("the answer ends");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    let head = text.find("\r\n\r\n").expect("a head");
    let body = answer[head..].iter().filter(|b| **b == b'x').count();
    assert_eq!(body, 8 << 20, "the whole body");
}

/// A client that disappears is noticed without any write: its stream leaves at once.
#[tokio::test]
async fn a_closed_client_leaves_at_once() {
    let h = Herald::start(None, &["--heartbeat", "1h"]);
    let mut raw = Raw::open(&h, &events_request("HTTP/1.1", &user_token("alice"))).await;
    raw.until("ready", |t| t.contains("event: ready")).await;
    drop(raw);
    wait_for("the stream to leave the hub", async || {
        h.metric("herald_streams_open").await == 0.0
    })
    .await;
}

/// A stream nobody writes to still gets `: ping` every heartbeat, from the node's ticker: at
/// the tick when it has been quiet for a heartbeat less a tick (a tick is a quarter heartbeat
/// here), so the pings are about a heartbeat apart (a ping's write lands just after its tick),
/// not a heartbeat and a tick.
#[tokio::test]
async fn an_idle_stream_gets_pings() {
    let h = Herald::start(None, &["--heartbeat", "400ms"]);
    let mut raw = Raw::open(&h, &events_request("HTTP/1.1", &user_token("alice"))).await;
    let mut seen = Vec::new();
    for n in 1..=5 {
        raw.until("a ping", |t| t.matches(": ping\n\n").count() >= n)
            .await;
        seen.push(Instant::now());
    }
    let mut gaps: Vec<Duration> = seen.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    // ~400 ms apart (four ticks); a heartbeat and a tick would be 500 ms.
    assert!(gaps[2] < Duration::from_millis(450), "{gaps:?}");
}

/// A stream written to less than a heartbeat apart gets no ping, then pings once it is quiet
/// (the ticker's wheel visits it a heartbeat after its last write; `hub::wheel`'s unit tests
/// count those visits).
#[tokio::test]
async fn a_busy_stream_pings_only_once_quiet() {
    let h = Herald::start(None, &["--heartbeat", "2s"]);
    let mut raw = Raw::open(&h, &events_request("HTTP/1.1", &user_token("alice"))).await;
    raw.until("ready", |t| t.contains("event: ready")).await;
    // 3 s of writes 100 ms apart: past the first heartbeat after the opening.
    for _ in 0..30 {
        h.notify("alice", "busy").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    raw.until("30 notifications", |t| {
        t.matches("event: notification").count() >= 30
    })
    .await;
    assert!(
        !raw.text.contains(": ping"),
        "pinged while busy:\n{}",
        raw.text
    );
    raw.until("a ping once quiet", |t| t.contains(": ping\n\n"))
        .await;
}

/// A stalled reader whose backlog stays under the bound is cut off once a write has waited
/// for `--send-timeout`, without counting as an overflow.
#[tokio::test]
async fn a_stalled_reader_is_cut_off_after_the_send_timeout() {
    let h = Herald::start(None, &["--send-timeout", "1s"]);
    let stream = unread_stream(&h).await;
    // ~500 KB/s: once the kernel's buffers are full, the backlog grows slower than the bound
    // (1 MiB) within the send timeout
    let body = "x".repeat(10 * 1024);
    let mut cut = false;
    for i in 0..1000 {
        let (status, _) = h
            .publish(json!({"users": ["alice"], "notification": {"title": format!("n{i}"), "body": body}}))
            .await;
        assert_eq!(status, 202);
        if i % 10 == 9 && h.metric("herald_streams_open").await == 0.0 {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cut, "the stalled stream was never cut off");
    assert_eq!(h.metric("herald_streams_overflowed_total").await, 0.0);
    drop(stream);
}

/// SIGTERM ends streams held on sockets promptly (the last chunk, then close), and the
/// process exits within the drain timeout.
#[tokio::test]
async fn sigterm_ends_socket_streams() {
    let mut h = Herald::start(None, &["--drain-timeout", "5s"]);
    let mut raw = Raw::open(&h, &events_request("HTTP/1.1", &user_token("alice"))).await;
    raw.until("ready", |t| t.contains("event: ready")).await;
    let started = std::time::Instant::now();
    send_signal(h.pid(), "TERM");
    raw.until_closed().await;
    assert!(raw.text.ends_with("\r\n0\r\n\r\n"), "{}", raw.text);
    // Not `terminate`: its second SIGTERM, should the node not have exited yet, is the
    // "stop at once" signal (exit 1).
    let status = tokio::task::spawn_blocking(move || h.wait_exit())
        .await
        .unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// SIGTERM does not wait out `--drain-timeout` (nor `--send-timeout`) for a stream whose
/// client stopped reading: once the node stops, a write blocked for a second ends it (the
/// client resumes elsewhere by its last id). How much the kernel's buffers take varies; here
/// ~3 MB of the 4 MB published, so Herald's backlog holds the rest, under its bound (1 MiB).
#[tokio::test]
async fn sigterm_does_not_wait_for_a_client_that_stopped_reading() {
    let h = Herald::start(None, &["--drain-timeout", "20s"]);
    let stream = unread_stream(&h).await;
    let body = "x".repeat(10 * 1024);
    for i in 0..400 {
        let notification = json!({"title": format!("n{i}"), "body": body});
        let (status, _) = h
            .publish(json!({"users": ["alice"], "notification": notification}))
            .await;
        assert_eq!(status, 202);
    }
    let took = h.stop_time().await;
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    drop(stream);
}

/// Under `--base-path` the socket transport takes `<base>/events`; the bare `/events` is not
/// Herald's and gets 404.
#[tokio::test]
async fn the_socket_transport_honours_the_base_path() {
    let h = Herald::start(None, &["--base-path", "/herald/"]);
    let token = user_token("alice");
    let request = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
    };
    let mut raw = Raw::open(&h, &request("/herald/events?tab=t1")).await;
    raw.until("ready", |t| t.contains("event: ready")).await;
    assert!(
        raw.text.contains("transfer-encoding: chunked"),
        "{}",
        raw.text
    );
    let mut raw = Raw::open(&h, &request("/events")).await;
    raw.until("an answer", |t| t.contains("\r\n\r\n")).await;
    assert_eq!(raw_status(&raw.text), 404, "{}", raw.text);
}

/// An `/events` request whose client closed its connection before the stream opened (here
/// while Redis is paused) opens nothing: in particular it does not replace its session's live
/// stream, which a browser that closed one `EventSource` and opened another would lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_went_before_its_stream_opened_replaces_nothing() {
    let redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    let token = session_token("alice", "s1");
    let mut live = h.events(&token, "").await;
    redis.pause();
    let mut went = TcpStream::connect(addr_of(&h.base)).await.unwrap();
    let head = format!("GET /events HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n");
    went.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(went);
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.resume();
    h.notify("alice", "still live").await;
    let event = live.next_event().await;
    assert_eq!(event.event, "notification", "{event:?}");
}
