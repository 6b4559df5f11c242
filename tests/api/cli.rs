//! The command line: start-up errors exit 2 with one line naming the flag or address; env
//! twins; `--dev` secret; `herald token` and `herald publish` (HTTP and Redis paths).

use std::process::{Command, Output};

use serde_json::json;

use crate::common::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).env("HERALD_LOG", "off");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

fn assert_startup_error(out: &Output, mentions: &str) {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(mentions),
        "stderr should name {mentions:?}: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn bad_flag_values_exit_2_naming_the_flag() {
    let secret = ["--jwt-secret", "x"];
    for (flag, value) in [
        ("--heartbeat", "soon"),
        ("--listen", "nowhere"),
        ("--max-per-user", "many"),
        ("--trusted-proxy", "10.0.0.0/99"),
        ("--retention", "forever"),
        // a negative value is the flag's bad value, not an unknown flag
        ("--heartbeat", "-5s"),
        ("--jwt-leeway", "-1s"),
        ("--max-streams-per-user", "-3"),
        ("--max-per-user", "-1"),
        ("--max-streams-per-user", "0"),
        // an allow-list entry that could match no push endpoint
        ("--push-endpoint-allow", ".example.org"),
        ("--push-endpoint-allow", "*.example.org"),
        ("--push-endpoint-allow", "https://example.org"),
        // checked while Web Push is off too
        ("--push-ca-file", "/nonexistent/ca.pem"),
        ("--upstream-ca-file", "/nonexistent/ca.pem"),
        ("--upstream", "ftp://127.0.0.1:1/"),
        // a base the proxy could not append a path to
        ("--upstream", "http://127.0.0.1:1/base?k=v"),
        ("--upstream", "http://127.0.0.1:1/base#f"),
        ("--upstream", "http://u:p@127.0.0.1:1/"),
        ("--push-after", "8d"),
        // a prefix no request could reach; a node id that would not survive a log line
        ("--base-path", "/x?y"),
        ("--base-path", "/../x"),
        ("--node-id", ""),
        ("--node-id", "a\nb"),
        // a cluster URL with no node would have run embedded
        ("--redis-url", "redis+cluster://"),
        // a claim no token carries: every token would be refused
        ("--jwt-issuer", ""),
        ("--jwt-audience", ""),
    ] {
        let out = run(&[&secret[..], &[flag, value]].concat(), &[]);
        assert_startup_error(&out, flag);
    }
    let out = run(
        &["--jwt-secret", "x", "--redis-url", "http://127.0.0.1:1"],
        &[],
    );
    assert_startup_error(&out, "--redis-url");
    let upstream = ["--upstream", "https://127.0.0.1:1"];
    let out = run(
        &[
            &secret[..],
            &upstream,
            &["--upstream-ca-file", "/nonexistent/ca.pem"],
        ]
        .concat(),
        &[],
    );
    assert_startup_error(&out, "--upstream-ca-file");
    // a CA file that holds no certificate, while Web Push is off too
    let dir = TempDir::new("badca");
    let garbage = dir.0.join("ca.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let out = run(
        &[&secret[..], &["--push-ca-file", garbage.to_str().unwrap()]].concat(),
        &[],
    );
    assert_startup_error(&out, "--push-ca-file");
    // a block that splits as PEM but holds no certificate: parsed at start too
    let not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    std::fs::write(&garbage, not_der).unwrap();
    let out = run(
        &[&secret[..], &["--push-ca-file", garbage.to_str().unwrap()]].concat(),
        &[],
    );
    assert_startup_error(&out, "--push-ca-file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a valid X.509 certificate"), "{stderr}");
    // a VAPID subject that names no contact
    let keys = run(&["vapid-keys"], &[]);
    assert!(keys.status.success(), "{keys:?}");
    let vapid = dir.0.join("vapid.pem");
    std::fs::write(&vapid, &keys.stdout).unwrap();
    for subject in ["mailto:", "https://", "mailto:ops @example.com"] {
        let push = ["--vapid-private-key", vapid.to_str().unwrap()];
        let out = run(
            &[&secret[..], &push, &["--vapid-subject", subject]].concat(),
            &[],
        );
        assert_startup_error(&out, "--vapid-subject");
    }
    let out = run(
        &["--jwt-secret", "x", "--allowed-origin", "not an origin"],
        &[],
    );
    assert_startup_error(&out, "--allowed-origin");
    // a flag that needs another names the missing one
    let out = run(&["--jwt-secret", "x", "--tls-cert", "/x.pem"], &[]);
    assert_startup_error(&out, "--tls-key");
    // `herald token` refuses a user id every server refuses
    for sub in ["", " bob", &"a".repeat(129)] {
        let out = run(&["token", "--jwt-secret", "x", "--sub", sub], &[]);
        assert_startup_error(&out, "--sub");
    }
    // `herald publish` checks what it would send as a node would, before sending it (nothing
    // listens at its --url, nor at its --redis-url), and names the flag of a bad value
    let long = "b".repeat(17_000);
    for to in [
        ["--url", "http://127.0.0.1:1"],
        ["--redis-url", "redis://127.0.0.1:1"],
    ] {
        for (flag, bad) in [
            ("--title", &["--user", "u", "--title", ""][..]),
            ("--user", &["--user", " u", "--title", "t"]),
            ("--group", &["--group", "", "--title", "t"]),
            ("--user or --group", &["--title", "t"]),
            (
                "--category",
                &["--user", "u", "--title", "t", "--category", ""],
            ),
            (
                "--link",
                &["--user", "u", "--title", "t", "--link", "javascript:x"],
            ),
            (
                "--deliver-at",
                &[
                    "--user",
                    "u",
                    "--title",
                    "t",
                    "--deliver-at",
                    "2001-01-01T00:00:00Z",
                ],
            ),
            (
                "--action",
                &[
                    "--user",
                    "u",
                    "--title",
                    "t",
                    "--action",
                    r#"{"id":"a","label":"A","path":"/x"}"#,
                ],
            ),
            // too large: the flags that make it so
            (
                "--title, --body, --data",
                &["--user", "u", "--title", "t", "--body", &long],
            ),
        ] {
            let out = run(
                &[&["publish", "--jwt-secret", "x"], &to[..], bad].concat(),
                &[],
            );
            assert_startup_error(&out, &format!("{flag}: "));
        }
    }
}

/// The sub-commands check their flags as the server would: a `sid` no server takes, a tray
/// of none (nothing is sent); each answers `--version` as the top level does.
#[test]
fn sub_command_flags_are_checked() {
    let secret = ["--jwt-secret", "x"];
    for sid in ["", " s", &"s".repeat(129)] {
        let out = run(
            &[&["token", "--sub", "a", "--sid", sid][..], &secret].concat(),
            &[],
        );
        assert_startup_error(&out, "--sid");
    }
    let publish = [
        "publish",
        "--user",
        "a",
        "--title",
        "t",
        "--max-per-user",
        "0",
    ];
    for redis in [&["--redis-url", "redis://127.0.0.1:1"][..], &[]] {
        let out = run(&[&publish[..], redis, &secret].concat(), &[]);
        assert_startup_error(&out, "--max-per-user");
    }
    for command in ["serve", "token", "publish", "vapid-keys"] {
        let out = run(&[command, "--version"], &[]);
        assert_eq!(out.status.code(), Some(0), "{command}: {out:?}");
    }
}

#[test]
fn missing_key_or_unreadable_key_file_exits_2() {
    assert_startup_error(&run(&["--listen", "127.0.0.1:0"], &[]), "--jwt-secret");
    assert_startup_error(&run(&["--jwt-secret", " \t "], &[]), "--jwt-secret");
    assert_startup_error(
        &run(&["--jwt-public-key", "/nonexistent/key.pem"], &[]),
        "--jwt-public-key",
    );
    let dir = TempDir::new("badkey");
    let path = dir.0.join("key.pem");
    std::fs::write(&path, "not a key").unwrap();
    assert_startup_error(
        &run(&["--jwt-public-key", path.to_str().unwrap()], &[]),
        "--jwt-public-key",
    );
    // keys the server could never verify with: a private key, an EC key on another curve
    let rsa = dir.0.join("rsa.key");
    let rsa = rsa.to_str().unwrap();
    openssl(&["genpkey", "-algorithm", "RSA", "-out", rsa]);
    let p384 = dir.0.join("p384.key");
    let p384 = p384.to_str().unwrap();
    let p384_public = dir.0.join("p384.pub");
    let p384_public = p384_public.to_str().unwrap();
    p384_key(p384);
    openssl(&["pkey", "-in", p384, "-pubout", "-out", p384_public]);
    // two public keys in one file: which one verifies would be a guess
    let rsa_public = dir.0.join("rsa.pub");
    let rsa_public = rsa_public.to_str().unwrap();
    openssl(&["pkey", "-in", rsa, "-pubout", "-out", rsa_public]);
    let both = dir.0.join("both.pub");
    let rsa_text = std::fs::read_to_string(rsa_public).unwrap();
    std::fs::write(&both, format!("{rsa_text}{rsa_text}")).unwrap();
    let both = both.to_str().unwrap();
    for (key, says) in [
        (rsa, "private key"),
        (p384_public, "P-256"),
        (both, "2 PEM blocks"),
    ] {
        let out = run(&["--jwt-public-key", key], &[]);
        assert_startup_error(&out, "--jwt-public-key");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{out:?}"
        );
    }
}

#[test]
fn unreachable_redis_or_cluster_exits_2_naming_the_address() {
    let port = free_port();
    for scheme in ["redis", "redis+cluster"] {
        let url = format!("{scheme}://127.0.0.1:{port}");
        assert_startup_error(&serve_with_redis(&url), &format!("127.0.0.1:{port}"));
    }
    // something else answers there: still one line
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        for mut conn in listener.incoming().flatten().take(8) {
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let out = serve_with_redis(&format!("redis://{addr}"));
    assert_startup_error(&out, &addr.to_string());
    // a password in the URL is never printed
    for url in [
        format!("redis+cluster://:hunter2@127.0.0.1:{port}"),
        format!("redis://:hunter2@127.0.0.1:{port}/abc"),
    ] {
        let out = serve_with_redis(&url);
        assert_startup_error(&out, "--redis-url");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("hunter2"),
            "{out:?}"
        );
    }
}

/// `herald serve` on a free port with `--redis-url url`.
fn serve_with_redis(url: &str) -> Output {
    let args = [
        "--jwt-secret",
        "x",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        url,
    ];
    run(&args, &[])
}

/// A node of a Redis Cluster named as one server would answer MOVED to most writes: refused
/// at start-up, with the URL form that works.
#[test]
fn a_cluster_node_named_as_one_server_exits_2() {
    let cluster = Cluster::start(3, 0);
    let port = cluster.primaries()[0];
    let url = format!("redis://127.0.0.1:{port}");
    assert_startup_error(&serve_with_redis(&url), "redis+cluster://");
    let publish = [
        "publish",
        "--redis-url",
        &url,
        "--user",
        "u",
        "--title",
        "t",
    ];
    assert_startup_error(&run(&publish, &[]), "redis+cluster://");
}

#[test]
fn address_in_use_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_startup_error(
        &run(&["--jwt-secret", "x", "--listen", &addr], &[]),
        "--listen",
    );
}

/// A node listens on several sockets sharing its port (`SO_REUSEPORT`); a second Herald on
/// that port must still be refused, not join them and take part of the connections.
#[tokio::test]
async fn a_second_herald_on_a_nodes_port_exits_2() {
    let first = Herald::start(None, &[]);
    let addr = first.base.trim_start_matches("http://").to_owned();
    let mut second = Command::new(bin())
        .args(["--jwt-secret", "x", "--listen", &addr])
        .env("HERALD_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: one that joined the port would serve until killed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while second.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if second.try_wait().unwrap().is_none() {
        second.kill().unwrap();
    }
    assert_startup_error(&second.wait_with_output().unwrap(), "--listen");
    // The first still answers every connection (none was handed to the refused one).
    for _ in 0..32 {
        let status = client().get(first.url("/healthz")).send().await.unwrap();
        assert_eq!(status.status(), 200);
    }
}

#[tokio::test]
async fn env_twins_configure_the_server() {
    let args = ["--listen".to_owned(), "127.0.0.1:0".to_owned()];
    let h = Herald::spawn_env(
        &args,
        &[("HERALD_JWT_SECRET", SECRET), ("HERALD_HEARTBEAT", "150ms")],
    );
    let mut sse = h.events(&user_token("alice"), "").await;
    sse.try_next(std::time::Duration::from_millis(700)).await;
    assert!(
        sse.comments >= 2,
        "HERALD_HEARTBEAT was applied: {}",
        sse.raw
    );
}

/// `herald serve` is the server, as with no sub-command; `HERALD_REDIS_URL` may list the
/// nodes of a cluster as the repeated flag would (a plain URL naming a cluster node would be
/// refused at start-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_cluster_nodes_listed_in_the_env_twin() {
    let cluster = Cluster::start(3, 0);
    let nodes: Vec<String> = cluster
        .primaries()
        .iter()
        .take(2)
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let args = ["serve", "--listen", "127.0.0.1:0"].map(str::to_owned);
    let h = Herald::spawn_env(
        &args,
        &[
            ("HERALD_JWT_SECRET", SECRET),
            ("HERALD_REDIS_URL", &nodes.join(",")),
        ],
    );
    assert_eq!(h.get("/readyz", "").await.0, 200);
    let mut sse = h.events(&user_token("alice"), "").await;
    let id = h.notify("alice", "through the cluster").await;
    assert_eq!(sse.expect("notification").await.json()["id"], id.as_str());
}

/// An env twin set to the empty string counts as unset (a compose file's `HERALD_REDIS_URL=`):
/// embedded mode, no upstream, the default heartbeat. The same value as a flag is refused.
#[tokio::test]
async fn empty_env_twins_count_as_unset() {
    let args = ["--listen".to_owned(), "127.0.0.1:0".to_owned()];
    let h = Herald::spawn_env(
        &args,
        &[
            ("HERALD_JWT_SECRET", SECRET),
            ("HERALD_REDIS_URL", ""),
            ("HERALD_UPSTREAM", ""),
            ("HERALD_HEARTBEAT", ""),
            ("HERALD_ALLOWED_ORIGIN", ""),
        ],
    );
    assert_eq!(h.get("/readyz", "").await.0, 200);
    let (status, body) = send(
        h.http
            .post(h.url("/publish"))
            .bearer_auth(service_token())
            .json(&json!({"users": ["alice"], "notification": {"title": "t"}})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(h.get("/notifications", &user_token("alice")).await.0, 200);
    // no upstream: nothing is proxied
    assert_eq!(h.get("/api/x", &user_token("alice")).await.0, 404);
    let out = run(&["--jwt-secret", "x", "--redis-url", ""], &[]);
    assert_startup_error(&out, "--redis-url");
}

/// More env twins, with no flag at all on the command line: the address, Redis, the base path,
/// the upstream, a list of allowed origins, the tray cap and the node id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_twins_replace_every_flag() {
    let redis = Redis::start();
    let backend = EchoUpstream::start().await;
    let h = Herald::spawn_env(
        &[],
        &[
            ("HERALD_LISTEN", "127.0.0.1:0"),
            ("HERALD_JWT_SECRET", SECRET),
            ("HERALD_REDIS_URL", &redis.url()),
            ("HERALD_BASE_PATH", "/h/"),
            ("HERALD_UPSTREAM", &backend.url),
            ("HERALD_ALLOWED_ORIGIN", "http://a.example,http://b.example"),
            ("HERALD_MAX_PER_USER", "2"),
            ("HERALD_NODE_ID", "env-node"),
        ],
    );
    let svc = service_token();
    // HERALD_BASE_PATH: routes live under /h/ only
    assert_eq!(h.get("/notifications", &user_token("alice")).await.0, 404);
    // HERALD_MAX_PER_USER and HERALD_REDIS_URL: three published, two kept, in Redis
    for title in ["1", "2", "3"] {
        let (status, body) = send(
            h.http
                .post(h.url("/h/publish"))
                .bearer_auth(&svc)
                .json(&json!({"users": ["alice"], "notification": {"title": title}})),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let (_, page) = h.get("/h/notifications", &user_token("alice")).await;
    assert_eq!(titles(&page), ["3", "2"]);
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("herald:*alice*")
        .query(&mut redis.conn())
        .unwrap();
    assert!(!keys.is_empty(), "nothing of alice's in Redis");
    // HERALD_NODE_ID: presence names the node
    let sse = h
        .events_with(
            h.http
                .get(h.url("/h/events"))
                .bearer_auth(session_token("alice", "s1")),
        )
        .await;
    let (_, presence) = h.get("/h/presence/alice", &svc).await;
    assert_eq!(presence["sessions"][0]["node"], "env-node", "{presence}");
    drop(sse);
    // HERALD_UPSTREAM: /h/api/ reaches the upstream
    let (status, echo) = h.get("/h/api/echo", &user_token("alice")).await;
    assert_eq!(
        (status, echo["headers"]["x-herald-user"].clone()),
        (200, json!("alice"))
    );
    // HERALD_ALLOWED_ORIGIN: both listed origins, split at the comma, may write with a cookie
    let cookie = {
        let r = send_raw(
            h.http
                .post(h.url("/h/session"))
                .bearer_auth(user_token("alice")),
        )
        .await;
        assert_eq!(r.status(), 204);
        cookie_of(&r)
    };
    for (origin, want) in [
        ("http://a.example", 200),
        ("http://b.example", 200),
        ("http://c.example", 403),
    ] {
        let (status, body) = send(
            h.http
                .patch(h.url("/h/notifications"))
                .header("cookie", &cookie)
                .header("origin", origin)
                .json(&json!({"all": true, "read": true})),
        )
        .await;
        assert_eq!(status, want, "{origin}: {body}");
    }
}

#[tokio::test]
async fn dev_mode_prints_a_secret_that_token_can_use() {
    let h = Herald::spawn(&["--dev".into(), "--listen".into(), "127.0.0.1:0".into()]);
    let secret = h
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("herald dev secret: "))
        .expect("secret printed")
        .to_owned();
    let out = run(
        &[
            "token",
            "--jwt-secret",
            &secret,
            "--sub",
            "alice",
            "--ttl",
            "10m",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(h.get("/notifications", &token).await.0, 200);
    let demo = send_raw(h.http.get(h.url("/"))).await;
    assert_eq!(demo.status(), 200);
    assert!(demo.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test]
async fn token_and_publish_commands() {
    let h = Herald::start(None, &[]);
    let out = run(
        &[
            "token",
            "--jwt-secret",
            SECRET,
            "--sub",
            "alice",
            "--sid",
            "cli",
        ],
        &[],
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut sse = h.events(&token, "").await;
    assert_eq!(sse.ready.as_ref().unwrap().json()["session"], "cli");
    let out = run(
        &[
            "publish",
            "--jwt-secret",
            SECRET,
            "--url",
            &h.base,
            "--user",
            "alice",
            "--title",
            "From the CLI",
            "--data",
            r#"{"k":1}"#,
            "--critical",
            "--collapse-key",
            "build-42",
            "--action",
            r#"{"id":"ok","label":"OK"}"#,
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["count"], 1);
    let ev = sse.next_event().await.json();
    assert_eq!(
        (ev["title"].clone(), ev["data"].clone()),
        (json!("From the CLI"), json!({"k": 1}))
    );
    assert_eq!(
        (
            &ev["critical"],
            &ev["collapse_key"],
            &ev["actions"][0]["id"]
        ),
        (&json!(true), &json!("build-42"), &json!("ok"))
    );
    // an --action that is not an action object is refused before anything is sent, and so
    // is --data with a member named twice, saying so (without the parser's position)
    let publish_x = |extra: &[&str]| {
        let args = ["publish", "--jwt-secret", SECRET, "--url", &h.base];
        let args = [&args[..], &["--user", "alice", "--title", "x"], extra].concat();
        run(&args, &[])
    };
    let out = publish_x(&["--action", "approve"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--action"));
    let out = publish_x(&["--data", r#"{"a":1,"a":2}"#]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim(),
        r#"herald: --data: the member "a" is named twice"#
    );
    // a failing publish exits non-zero with the server's message
    let out = run(
        &[
            "publish",
            "--jwt-secret",
            "wrong",
            "--url",
            &h.base,
            "--user",
            "alice",
            "--title",
            "x",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // a token that would end within the second it is printed is refused
    for ttl in ["0s", "500ms"] {
        let args = [
            "token",
            "--jwt-secret",
            SECRET,
            "--sub",
            "alice",
            "--ttl",
            ttl,
        ];
        let out = run(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{ttl}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--ttl"),
            "{out:?}"
        );
    }
}

/// `herald publish --url` with a Herald mounted under a base path: the path is kept, with or
/// without its trailing slash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_command_keeps_the_base_path_of_its_url() {
    let h = Herald::start(None, &["--base-path", "/herald/"]);
    let mut sse = h
        .events_with(
            h.http
                .get(h.url("/herald/events"))
                .bearer_auth(user_token("alice")),
        )
        .await;
    assert_eq!(sse.next_event().await.event, "ready");
    for url in [format!("{}/herald/", h.base), format!("{}/herald", h.base)] {
        let out = run(
            &[
                "publish",
                "--jwt-secret",
                SECRET,
                "--url",
                &url,
                "--user",
                "alice",
                "--title",
                &url,
            ],
            &[],
        );
        assert!(out.status.success(), "{url}: {out:?}");
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ev = sse.next_event().await.json();
        assert_eq!(ev["title"], url.as_str());
        assert_eq!(ev["id"], printed["ids"]["alice"], "{printed}");
    }
}

/// With `--redis-url`, also when the environment names Kafka brokers (a node's environment in
/// Redis mode with Kafka ingest; none runs at this address): the spec's "with `--redis-url` it
/// writes through Redis itself". A typed `--kafka-brokers` beats an env `HERALD_REDIS_URL`.
#[tokio::test]
async fn publish_command_writes_through_redis() {
    let redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    let mut sse = h.events(&user_token("alice"), "").await;
    let kafka_env = [
        ("HERALD_KAFKA_BROKERS", "127.0.0.1:1"),
        ("HERALD_KAFKA_TOPIC", "t"),
    ];
    for (title, env) in [("Via Redis", &[][..]), ("Via Redis, Kafka set", &kafka_env)] {
        let publish = ["publish", "--redis-url", &redis.url(), "--user", "alice"];
        let out = run(&[&publish[..], &["--title", title]].concat(), env);
        assert!(out.status.success(), "{out:?}");
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed["count"], 1, "{printed}");
        assert_eq!(sse.next_event().await.json()["title"], title);
    }
    // A typed --kafka-brokers beats HERALD_REDIS_URL (here the Kafka path refuses two topics,
    // before any broker is contacted); both typed is a usage error.
    let url = redis.url();
    let to_kafka = [
        "publish",
        "--kafka-brokers",
        "127.0.0.1:1",
        "--kafka-topic",
        "a",
        "--kafka-topic",
        "b",
        "--user",
        "alice",
        "--title",
        "t",
    ];
    let out = run(&to_kafka, &[("HERALD_REDIS_URL", &url)]);
    assert_startup_error(&out, "--kafka-topic");
    let both = [&to_kafka[..], &["--redis-url", &url]].concat();
    assert_startup_error(&run(&both, &[]), "--redis-url and --kafka-brokers");
}

/// I9: duration flags outside sensible bounds are refused at start-up (one line naming the
/// flag, exit 2) instead of being accepted and failing later.
#[test]
fn absurd_durations_exit_2_naming_the_flag() {
    for (flag, value) in [
        ("--heartbeat", "400000000000y"),
        ("--heartbeat", "1ms"),
        ("--heartbeat", "2h"),
        ("--upstream-timeout", "2h"),
        ("--send-timeout", "0s"),
        ("--send-timeout", "400000000000y"),
        ("--body-timeout", "90d"),
        ("--idle-timeout", "0s"),
        ("--idle-timeout", "2h"),
        ("--drain-timeout", "2h"),
        ("--retention", "101y"),
        ("--retention", "0s"),
        ("--jwt-leeway", "2d"),
    ] {
        let out = run(&["--jwt-secret", "x", flag, value], &[]);
        assert_startup_error(&out, flag);
    }
    // the env twins of the new flags are read too
    let out = run(&["--jwt-secret", "x"], &[("HERALD_BODY_TIMEOUT", "5000h")]);
    assert_startup_error(&out, "--body-timeout");
    let out = run(&["--jwt-secret", "x"], &[("HERALD_IDLE_TIMEOUT", "0ms")]);
    assert_startup_error(&out, "--idle-timeout");
}

/// Start `herald` with `args` until it listens, stop it, and return what it wrote to stderr.
fn startup_stderr(args: &[&str]) -> String {
    use std::io::{BufRead, Read};
    let mut child = Command::new(bin())
        .args(args)
        .env("HERALD_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("herald listening on") {
                let _ = tx.send(());
            }
        }
    });
    let listened = rx.recv_timeout(WAIT).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    assert!(listened, "herald did not start with {args:?}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// `--dev` always warns that `/dev/login` signs anyone in; on a non-loopback address it adds
/// a louder warning. Without `--dev`, nothing.
#[test]
fn dev_mode_warns_at_start_up() {
    let local = startup_stderr(&["--dev", "--listen", "127.0.0.1:0"]);
    assert!(
        local.contains("WARNING") && local.contains("/dev/login"),
        "{local}"
    );
    assert!(!local.contains("non-loopback"), "{local}");
    let open = startup_stderr(&["--dev", "--listen", "0.0.0.0:0"]);
    assert!(open.contains("non-loopback"), "{open}");
    let normal = startup_stderr(&["--jwt-secret", "x", "--listen", "127.0.0.1:0"]);
    assert!(!normal.contains("WARNING"), "{normal}");
}
