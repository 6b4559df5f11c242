//! HTTPS with `--tls-cert` / `--tls-key`, with certificates the test makes (openssl): HTTP/2
//! through ALPN (HTTP/1.1 too), streams sharing one HTTP/2 connection, the files reloaded on
//! SIGHUP without dropping the open stream (and bad new files leaving the old ones in use),
//! bad files refused at start-up, and curl holding a stream over HTTP/2.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::common::*;

/// A client that trusts only `cert` (HTTP/2 when the server offers it).
fn trusting(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(WAIT * 3)
        .build()
        .unwrap()
}

/// Publish one notification to `user` through `client`; its id.
async fn notify(client: &reqwest::Client, h: &Herald, user: &str, title: &str) -> String {
    let body = json!({"users": [user], "notification": {"title": title}});
    let req = client.post(h.url("/publish")).bearer_auth(service_token());
    let (status, answer) = send(req.json(&body)).await;
    assert_eq!(status, 202, "{answer}");
    answer["ids"][user].as_str().unwrap().to_owned()
}

/// A node serving HTTPS with `cert` and `key`, and `extra` flags.
fn start(cert: &Path, key: &Path, extra: &[&str]) -> Herald {
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
    args.extend_from_slice(extra);
    Herald::start(None, &args)
}

/// `h`'s `host:port`, as `openssl s_client -connect` takes it.
fn authority(h: &Herald) -> &str {
    h.base.trim_start_matches("https://").trim_end_matches('/')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_http2_and_reload_on_sighup() {
    let dir = TempDir::new("tls");
    let (cert, key) = make_cert(&dir.0, "first");
    let h = start(&cert, &key, &[]);
    assert!(h.url("/").starts_with("https://"), "{}", h.url("/"));
    let client = trusting(&cert);
    let r = client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_2)
    );
    // two streams of one user on one client: both over HTTP/2
    let token = user_token("alice");
    let open = || h.events_with(client.get(h.url("/events?tab=a")).bearer_auth(&token));
    let mut first = open().await;
    let mut second = h
        .events_with(client.get(h.url("/events?tab=b")).bearer_auth(&token))
        .await;
    // both counted as HTTP/2 streams
    let metrics = client.get(h.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let http2 = r#"herald_streams_open_by_transport{transport="http2"} 2"#;
    assert!(metrics.lines().any(|l| l == http2), "{metrics}");
    let id = notify(&client, &h, "alice", "over h2").await;
    assert_eq!(first.expect("notification").await.json()["id"], id.as_str());
    assert_eq!(
        second.expect("notification").await.json()["id"],
        id.as_str()
    );
    // HTTP/1.1 still works for a client that only speaks it
    let h1 = reqwest::Client::builder()
        .http1_only()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let r = h1.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    // a head over 32 KiB gets the JSON 431, over HTTPS too (hyper reads every head there)
    let big = h1
        .get(h.url("/healthz"))
        .header("x-pad", "a".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(big.headers()["connection"], "close");
    let (status, body) = status_json(big).await;
    assert_error(status, &body, 431, "too_large");
    // a malformed head over HTTPS/1.1 gets the JSON 400 (hyper's own answer has no body)
    let answer = openssl_http1(&h, "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.ends_with(
            r#"{"error":{"code":"invalid_request","message":"malformed request head"}}"#
        ),
        "{answer}"
    );
    // a cookie write over HTTPS to a host named without a port (port 443): an http page of
    // that host (port 80, which a network attacker can forge) may neither write nor read by
    // CORS; the https one may
    let r = client
        .post(h.url("/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let cookie = cookie_of(&r);
    let read = |origin: &str| {
        h1.patch(h.url(&format!("/notifications/{id}")))
            .header("host", "herald.test")
            .header("cookie", &cookie)
            .header("origin", origin)
            .json(&json!({"read": true}))
            .send()
    };
    let (status, body) = status_json(read("http://herald.test").await.unwrap()).await;
    assert_error(status, &body, 403, "forbidden");
    let listed = |origin: &str| {
        h1.get(h.url("/notifications"))
            .header("host", "herald.test")
            .header("cookie", &cookie)
            .header("origin", origin)
            .send()
    };
    let r = listed("http://herald.test").await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = listed("https://herald.test").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://herald.test"
    );
    assert_eq!(read("https://herald.test").await.unwrap().status(), 200);
    first.expect("read").await;

    // new files + SIGHUP: new handshakes get the new certificate, the open stream carries on
    let (new_cert, new_key) = make_cert(&dir.0, "second");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    send_signal(h.pid(), "HUP");
    let fresh = trusting(&new_cert);
    wait_for("the new certificate", async || {
        fresh.get(h.url("/healthz")).send().await.is_ok()
    })
    .await;
    let id = notify(&fresh, &h, "alice", "after the reload").await;
    assert_eq!(first.expect("notification").await.json()["id"], id.as_str());

    // broken files + SIGHUP: the certificate in use stays
    std::fs::write(&cert, "not a certificate").unwrap();
    send_signal(h.pid(), "HUP");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let r = trusting(&new_cert)
        .get(h.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An HTTP/2 client (trusting `cert`) that reads nothing it is not asked to: each stream may
/// have 64 KiB unread, the connection as a whole far more.
fn stalling_http2_client(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .http2_initial_stream_window_size(65_535)
        .http2_initial_connection_window_size(64 << 20)
        .build()
        .unwrap()
}

/// alice's stream over `stalled` (never read), then `n` notifications of 12 KB to her; her
/// response (dropping it ends the stream).
async fn stall_alice(
    h: &Herald,
    stalled: &reqwest::Client,
    cert: &Path,
    n: usize,
) -> reqwest::Response {
    let req = stalled
        .get(h.url("/events"))
        .bearer_auth(user_token("alice"));
    let alice = req.send().await.unwrap();
    assert_eq!(alice.version(), reqwest::Version::HTTP_2);
    let client = trusting(cert);
    let body = "x".repeat(12_000);
    for i in 0..n {
        let publish =
            json!({"users": ["alice"], "notification": {"title": format!("n{i}"), "body": body}});
        let req = client.post(h.url("/publish")).bearer_auth(service_token());
        assert_eq!(send(req.json(&publish)).await.0, 202);
    }
    alice
}

/// An HTTP/2 stream whose client stops granting flow-control window (it never reads) is cut
/// off once its backlog passes the bound, as a slow HTTP/1 reader is: that stream alone is
/// reset (not left open, counted and holding its queue, for good), and another stream on the
/// same connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http2_stream_is_cut_off_alone() {
    let dir = TempDir::new("stall");
    let (cert, key) = make_cert(&dir.0, "stall");
    let h = start(&cert, &key, &[]);
    let stalled = stalling_http2_client(&cert);
    let open = |user: &str| {
        let req = stalled.get(h.url("/events")).bearer_auth(user_token(user));
        h.events_with(req)
    };
    let mut bob = open("bob").await;
    bob.expect("ready").await;
    // never read: 64 KiB fill its window, then more than the 1 MiB backlog waits
    let alice = stall_alice(&h, &stalled, &cert, 120).await;
    let client = trusting(&cert);
    let http2 = r#"herald_streams_open_by_transport{transport="http2"} 1"#;
    wait_for("the stalled stream gone, the other open", async || {
        let metrics = client.get(h.url("/metrics")).send().await.unwrap();
        metrics.text().await.unwrap().lines().any(|l| l == http2)
    })
    .await;
    // its client sees the end: what arrived, then an error (the reset)
    let mut body = alice.bytes_stream();
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut body).await {}
    });
    assert!(ended.await.is_ok(), "the stalled stream's body never ended");
    // the same connection still carries bob's stream and new requests
    let id = notify(&client, &h, "bob", "still here").await;
    let ev = bob.expect("notification").await;
    assert!(ev.data.contains(&id), "{}", ev.data);
    let r = stalled.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let metrics = client.get(h.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.lines().any(|l| l == http2), "{text}");
}

/// SIGTERM does not wait out `--drain-timeout` for an HTTP/2 stream whose client grants no
/// flow-control window (hyper never takes what is queued): a second after the stop its
/// stream is reset, and the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_a_stalled_http2_stream() {
    let dir = TempDir::new("stallstop");
    let (cert, key) = make_cert(&dir.0, "stallstop");
    let h = start(&cert, &key, &["--drain-timeout", "20s"]);
    let stalled = stalling_http2_client(&cert);
    // never read: 64 KiB fill its window, ~400 KB wait in the backlog (under its bound)
    let alice = stall_alice(&h, &stalled, &cert, 40).await;
    let took = h.stop_time().await;
    assert!(
        took < std::time::Duration::from_secs(5),
        "exit took {took:?}"
    );
    drop(alice);
}

/// A client that completes the TLS handshake and then sends nothing is closed after
/// `--idle-timeout` (3 s here; HTTP/2: `GOAWAY`, dropped 5 s later if still open), whichever
/// protocol ALPN chose (HTTP/2 waited for bytes forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_https_connection_is_closed_after_the_idle_timeout() {
    let dir = TempDir::new("silent");
    let (cert, key) = make_cert(&dir.0, "silent");
    let h = start(&cert, &key, &["--idle-timeout", "3s"]);
    let connect = authority(&h);
    let silent: Vec<_> = ["h2", "http/1.1"]
        .into_iter()
        .map(|alpn| {
            Command::new("openssl")
                .args(["s_client", "-quiet", "-connect", connect, "-alpn", alpn])
                // stdin stays open and silent
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("openssl")
        })
        .collect();
    let started = std::time::Instant::now();
    for (mut client, alpn) in silent.into_iter().zip(["h2", "http/1.1"]) {
        while client.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{alpn}: still open after 20 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert!(started.elapsed() > std::time::Duration::from_millis(2500));
}

/// What `h` answers to `request` sent over HTTPS with HTTP/1.1 (ALPN) by `openssl s_client`,
/// read until the server closes the connection.
async fn openssl_http1(h: &Herald, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = authority(h);
    let mut client = tokio::process::Command::new("openssl")
        .args([
            "s_client", "-quiet", "-connect", connect, "-alpn", "http/1.1",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl");
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let mut stdout = client.stdout.take().unwrap();
    tokio::time::timeout(WAIT, stdout.read_to_string(&mut answer))
        .await
        .expect("the connection was not closed")
        .unwrap();
    drop(stdin);
    answer
}

/// An HTTP/2 connection over `cert`'s TLS to `h`, driven by hyper's client on its own task:
/// the request sender and the connection's task (it ends when the server closes it).
async fn http2_connection(
    cert: &Path,
    h: &Herald,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let address = authority(h);
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let io = hyper_util::rt::TokioIo::new(tls);
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    (
        sender,
        tokio::spawn(async move { connection.await.unwrap() }),
    )
}

/// An HTTP/2 connection with no request in progress for `--idle-timeout` is closed (with
/// `GOAWAY`, so the client's connection ends cleanly); an open stream keeps it, and its end
/// starts the idle time. Before, hyper kept an idle HTTP/2 connection as long as the client
/// did (its pings only prove the client is there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    use http_body_util::{BodyExt, Empty};
    use std::time::{Duration, Instant};
    let dir = TempDir::new("idle");
    let (cert, key) = make_cert(&dir.0, "idle");
    let (cert_arg, key_arg) = (cert.to_string_lossy(), key.to_string_lossy());
    let idle = Duration::from_secs(2);
    let h = Herald::start(
        None,
        &[
            "--tls-cert",
            &cert_arg,
            "--tls-key",
            &key_arg,
            "--idle-timeout",
            "2s",
        ],
    );
    let get = |path: &str, token: Option<&str>| {
        let mut req = http::Request::get(h.url(path));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        req.body(Empty::new()).unwrap()
    };

    // One request answered, then nothing: closed about the idle timeout later.
    let (mut sender, connection) = http2_connection(&cert, &h).await;
    let answer = sender.send_request(get("/healthz", None)).await.unwrap();
    assert_eq!(answer.status(), 200);
    answer.into_body().collect().await.unwrap();
    let answered = Instant::now();
    tokio::time::timeout(idle * 5, connection)
        .await
        .expect("an idle HTTP/2 connection stayed open")
        .unwrap();
    assert!(answered.elapsed() >= idle - Duration::from_millis(200));

    // A stream keeps its connection past the idle timeout, and still receives.
    let (mut sender, connection) = http2_connection(&cert, &h).await;
    let token = user_token("alice");
    let stream = sender
        .send_request(get("/events", Some(&token)))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut body = stream.into_body();
    tokio::time::sleep(idle * 2).await;
    assert!(!connection.is_finished(), "closed with a stream open");
    let id = notify(&trusting(&cert), &h, "alice", "still open").await;
    let mut seen = String::new();
    while !seen.contains(&id) {
        let frame = tokio::time::timeout(WAIT, body.frame()).await;
        let frame = frame.expect("no event").expect("the stream ended").unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    // The stream's end starts the idle time.
    drop(body);
    let ended = Instant::now();
    tokio::time::timeout(idle * 5, connection)
        .await
        .expect("the connection stayed open after its stream ended")
        .unwrap();
    assert!(ended.elapsed() >= idle - Duration::from_millis(200));

    // SIGTERM: a stream over HTTP/2 ends, the connection closes and the node exits, promptly.
    let (mut sender, connection) = http2_connection(&cert, &h).await;
    let stream = sender
        .send_request(get("/events", Some(&token)))
        .await
        .unwrap();
    let mut body = stream.into_body();
    let mut h = h;
    let stopping = Instant::now();
    let status = tokio::task::spawn_blocking(move || h.terminate())
        .await
        .unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, body.frame()).await {}
    let closed = tokio::time::timeout(WAIT, connection).await;
    closed
        .expect("the connection stayed open")
        .expect("it closed cleanly");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
}

/// `systemctl reload` sends SIGHUP to a node without TLS too (deploy/herald.service): it has
/// nothing to reload and goes on serving, its stream open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_changes_nothing() {
    let h = Herald::start(None, &[]);
    let mut sse = h.events(&user_token("alice"), "").await;
    send_signal(h.pid(), "HUP");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let id = h.notify("alice", "after SIGHUP").await;
    assert_eq!(sse.next_event().await.json()["id"], id.as_str());
}

/// What an operator tries first: curl over HTTP/2 (ALPN), a stream that gets its `ready` and
/// then a notification published while it is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_streams_over_http2() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = TempDir::new("tls-curl");
    let (cert, key) = make_cert(&dir.0, "curl");
    let h = start(&cert, &key, &[]);
    let mut curl = tokio::process::Command::new("curl")
        .args([
            "--http2",
            "--silent",
            "--no-buffer",
            "--include",
            "--max-time",
            "30",
        ])
        .arg("--cacert")
        .arg(&cert)
        .args([
            "-H",
            &format!("Authorization: Bearer {}", user_token("carol")),
        ])
        .arg(h.url("/events"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl (scripts/test installs it)");
    let mut lines = BufReader::new(curl.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("curl went quiet")
            .unwrap()
            .expect("curl ended")
    };
    assert_eq!(next().await.trim_end(), "HTTP/2 200");
    while next().await != "event: ready" {}
    let id = notify(&trusting(&cert), &h, "carol", "to curl").await;
    while next().await != "event: notification" {}
    let data = next().await;
    assert!(data.starts_with("data: ") && data.contains(&id), "{data}");
}

/// Over HTTPS as over plain HTTP: a known length is sent as `Content-Length` (not chunked);
/// `HEAD` gets the headers alone, also over HTTP/2 (a body there is a protocol error to
/// curl); a head over 32 KiB gets 431 with the JSON error body over HTTP/2 too, and the
/// connection serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_answers_carry_their_length_and_head_no_body() {
    let dir = TempDir::new("tls-head");
    let (cert, key) = make_cert(&dir.0, "head");
    let h = start(&cert, &key, &[]);
    let client = trusting(&cert);
    let r = client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let length = r.headers().get("content-length").cloned();
    let body = r.bytes().await.unwrap();
    assert_eq!(length, Some(body.len().into()), "{body:?}");
    for http in ["--http1.1", "--http2"] {
        let out = Command::new("curl")
            .args([http, "--silent", "--show-error", "--head", "--cacert"])
            .arg(&cert)
            .arg(h.url("/healthz"))
            .output()
            .expect("curl (scripts/test installs it)");
        let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(out.status.success(), "{http}: {out:?}");
        assert!(head.contains(" 200"), "{http}: {head}");
        let want = format!("content-length: {}", body.len());
        assert!(head.contains(&want), "{http}: {head}");
    }
    let big = "a".repeat(40_000);
    let r = client.get(h.url("/healthz")).header("x-big", &big);
    let (status, answer) = send(r).await;
    assert_error(status, &answer, 431, "too_large");
    // refused before the routes, a HEAD still gets no body
    let out = Command::new("curl")
        .args(["--http2", "--silent", "--show-error", "--head", "--cacert"])
        .arg(&cert)
        .args(["-H", &format!("x-big: {big}")])
        .arg(h.url("/healthz"))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && head.contains(" 431"), "{out:?}");
    let r = client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_refused_at_start() {
    let dir = TempDir::new("tls-bad");
    let (cert, key) = make_cert(&dir.0, "good");
    let (other_cert, _) = make_cert(&dir.0, "other");
    let garbage = dir.0.join("garbage.pem");
    std::fs::write(&garbage, "nothing here").unwrap();
    let bad_base64 = dir.0.join("bad-base64.pem");
    std::fs::write(
        &bad_base64,
        "-----BEGIN PRIVATE KEY-----\n@@@@\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    for (cert, key, says) in [
        (&garbage, &key, "--tls-cert"),
        (&cert, &garbage, "--tls-key"),
        (&cert, &garbage, "no private key PEM in it"),
        (&cert, &bad_base64, "a PEM block in it is not valid base64"),
        (&other_cert, &key, "do not belong together"),
    ] {
        let out = Command::new(bin())
            .args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
    let out = Command::new(bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--tls-cert",
        ])
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--tls-cert needs --tls-key");
}

/// `herald health` with the node's own environment: plain HTTP without `--tls-cert`, HTTPS
/// with it (the certificate names no loopback host a container probe would use, so it is not
/// checked); exit status 0 when healthy, 1 otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_command_follows_tls() {
    let dir = TempDir::new("tls-health");
    let (cert, key) = make_cert(&dir.0, "health");
    let h = start(&cert, &key, &[]);
    let listen = authority(&h);
    let health = |tls: bool| {
        let mut cmd = Command::new(bin());
        cmd.args(["health", "--listen", listen])
            .env_remove("HERALD_TLS_CERT")
            .stderr(std::process::Stdio::null());
        if tls {
            cmd.arg("--tls-cert").arg(&cert);
        }
        cmd.status().unwrap().code()
    };
    assert_eq!(health(true), Some(0), "health over HTTPS");
    assert_eq!(
        health(false),
        Some(1),
        "plain HTTP to an HTTPS node is unhealthy"
    );
    drop(h);
    let plain = Herald::start(None, &[]);
    let listen = plain
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let status = Command::new(bin())
        .args(["health", "--ready", "--listen", listen])
        .env_remove("HERALD_TLS_CERT")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "health --ready over plain HTTP");
}

/// A take whose HTTP/2 stream the client resets while the action is at the upstream goes on
/// (the server drops the request, not the action): the upstream's answer is recorded, once,
/// and a later take is told it was taken. Before, the action was cut off unrecorded and its
/// claim stayed with the memory store: every later take got 409 "being taken" for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_action_take_is_still_recorded() {
    let dir = TempDir::new("reset");
    let (cert, key) = make_cert(&dir.0, "reset");
    let up = EchoUpstream::start().await;
    let h = start(&cert, &key, &["--upstream", &up.url]);
    let client = trusting(&cert);
    let body = json!({"users": ["alice"], "notification": {"title": "Deploy?",
        "actions": [{"id": "approve", "label": "Approve", "path": "/api/slow"}]}});
    let req = client.post(h.url("/publish")).bearer_auth(service_token());
    let (status, answer) = send(req.json(&body)).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["ids"]["alice"].as_str().unwrap().to_owned();
    let path = format!("/notifications/{id}/actions/approve");
    let take = || send(client.post(h.url(&path)).bearer_auth(user_token("alice")));
    tokio::select! {
        answer = take() => panic!("answered: {answer:?}"),
        _ = wait_for("the action did not reach the upstream", async || up.hits() > 0) => {}
    }
    // the first take's stream is reset; the action goes on, and is recorded
    let listed = async || {
        let req = client
            .get(h.url("/notifications"))
            .bearer_auth(user_token("alice"));
        send(req).await.1["notifications"][0].clone()
    };
    wait_for("the action was not recorded", async || {
        !listed().await["action"].is_null()
    })
    .await;
    assert_eq!(listed().await["action"]["status"], 200);
    let (status, again) = take().await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(up.hits(), 1);
}

/// Over HTTP/2 a browser's streams share one connection, past the 6 connections a browser
/// allows per host over HTTP/1.1: twelve streams of one session (tabs) on one connection are
/// all open at once and each receives a notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_streams_share_one_http2_connection() {
    use http_body_util::{BodyExt, Empty};
    let dir = TempDir::new("many");
    let (cert, key) = make_cert(&dir.0, "many");
    let h = start(&cert, &key, &[]);
    let (mut sender, _connection) = http2_connection(&cert, &h).await;
    let token = session_token("alice", "s1");
    let mut bodies = Vec::new();
    for tab in 0..12 {
        let req = http::Request::get(h.url(&format!("/events?tab=t{tab}")))
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::new())
            .unwrap();
        let answer = sender.send_request(req).await.unwrap();
        assert_eq!(answer.status(), 200, "tab {tab}");
        bodies.push(answer.into_body());
    }
    /// Read `body` until its text holds `what`.
    async fn until(body: &mut hyper::body::Incoming, what: &str) {
        let mut text = String::new();
        while !text.contains(what) {
            let frame = tokio::time::timeout(WAIT, body.frame())
                .await
                .expect("the stream went quiet")
                .expect("the stream ended")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
    for body in &mut bodies {
        until(body, "event: ready").await;
    }
    let id = notify(&trusting(&cert), &h, "alice", "to every tab").await;
    for body in &mut bodies {
        until(body, &id).await;
    }
}
