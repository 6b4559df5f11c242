//! Identities: JWT checks (expiry, forgery, alg none, algorithm confusion, RS256/ES256,
//! iss/aud, leeway), browser sessions and their cookie, the Origin rule, logout.

use std::process::Command;
use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::both_modes;
use crate::common::*;

both_modes!(
    missing_or_bad_tokens_are_401,
    session_cookie_lifecycle,
    cookie_writes_need_an_allowed_origin,
    logout_revokes_streams_of_that_session_only,
    a_fractional_exp_counts_to_the_millisecond,
);

async fn missing_or_bad_tokens_are_401(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let forged = encode(
        &Header::default(),
        &json!({"sub": "alice", "exp": now() + 60}),
        &EncodingKey::from_secret(b"other"),
    )
    .unwrap();
    // a critical header extension Herald does not understand (RFC 7515 4.1.11)
    let critical = encode(
        &Header {
            crit: Some(vec!["exp".into()]),
            ..Header::default()
        },
        &json!({"sub": "alice", "exp": now() + 60}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let none = {
        use base64::Engine;
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = json!({"sub": "alice", "exp": now() + 60}).to_string();
        format!(
            "{}.{}.",
            b.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b.encode(claims)
        )
    };
    let bad = [
        forged,
        critical,
        none,
        "garbage".to_owned(),
        sign(json!({"sub": "alice", "exp": now() - 10})),
        sign(json!({"sub": "alice"})),
        sign(json!({"exp": now() + 60})),
        sign(json!({"sub": "", "exp": now() + 60})),
        sign(json!({"sub": "x".repeat(129), "exp": now() + 60})),
        sign(json!({"sub": "alice", "exp": now() + 60, "nbf": now() + 600})),
        sign(json!({"sub": "alice", "exp": now() + 60, "sid": ""})),
        sign(json!({"sub": "alice", "exp": now() + 60, "sid": "a\u{0}b"})),
        sign(json!({"sub": "alice", "exp": now() + 60, "sid": "s".repeat(129)})),
    ];
    for token in &bad {
        for path in ["/events", "/notifications"] {
            let (status, body) = h.get(path, token).await;
            assert_error(status, &body, 401, "unauthorized");
        }
        // no session either (a bad sid made one)
        let r = send_raw(h.http.post(h.url("/session")).bearer_auth(token)).await;
        assert_eq!(r.status(), 401);
        assert!(r.headers().get("set-cookie").is_none());
    }
    let r = send_raw(h.http.get(h.url("/notifications"))).await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (status, body) = status_json(r).await;
    assert_error(status, &body, 401, "unauthorized");
    let r = send_raw(h.http.post(h.url("/session")).bearer_auth(service_token())).await;
    assert_eq!(r.status(), 401);
    let r = send_raw(h.http.post(h.url("/session"))).await;
    assert_eq!(r.status(), 401);
}

/// A NumericDate with a fraction counts to the millisecond: a token whose `exp` is S+2.8 is
/// refused just after it (before S+3, when whole seconds rounded up would still take it), and
/// a session made from it lasts past S+2 (whole seconds rounded down would end it there) and
/// ends at its `exp` too. A token with less than a second left makes a session all the same,
/// with a cookie of `Max-Age=1`, ended at its time.
async fn a_fractional_exp_counts_to_the_millisecond(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let unix = unix_now;
    // Start early in a second, so that the times below fall where they are meant to.
    while unix().fract() > 0.2 {
        tokio::time::sleep(Duration::from_secs_f64(1.02 - unix().fract())).await;
    }
    let second = unix().floor();
    let until = |at: f64| tokio::time::sleep(Duration::from_secs_f64((at - unix()).max(0.0)));
    let auth = |cookie: &str| {
        let req = h.http.get(h.url("/auth")).header("cookie", cookie);
        async move { send_raw(req).await.status() }
    };
    let short = sign(json!({"sub": "alice", "exp": second + 0.9}));
    let r = send_raw(h.http.post(h.url("/session")).bearer_auth(&short)).await;
    assert_eq!(r.status(), 204, "a session of less than a second");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.ends_with("; Max-Age=1"), "{set}");
    let short = cookie_of(&r);
    assert_eq!(auth(&short).await, 204);
    let exp = second + 2.8;
    let token = sign(json!({"sub": "alice", "exp": exp}));
    let (status, _) = h.get("/notifications", &token).await;
    assert_eq!(status, 200, "the token is good until its exp");
    let r = send_raw(h.http.post(h.url("/session")).bearer_auth(&token)).await;
    assert_eq!(r.status(), 204);
    let cookie = cookie_of(&r);
    until(second + 1.0).await;
    assert_eq!(
        auth(&short).await,
        401,
        "the short session ended at its time"
    );
    until(second + 2.3).await;
    assert_eq!(
        auth(&cookie).await,
        204,
        "the session lasts past its whole second"
    );
    until(exp + 0.1).await;
    // The token verified (and was kept, with its claims): its `exp` is checked again.
    let (status, body) = h.get("/notifications", &token).await;
    assert_error(status, &body, 401, "unauthorized");
    assert_eq!(
        auth(&cookie).await,
        401,
        "the session ended at the token's exp"
    );
}

/// `POST /session` → cookie; cookie works for reads and streams; the response sets attributes.
async fn session_cookie_lifecycle(mode: Mode) {
    let h = Setup::new(mode, &[]);
    // it takes no body, but one over 1 MiB is refused like any (413), and no cookie is set
    let big = "x".repeat(2 * 1024 * 1024);
    let r = send_raw(
        h.http
            .post(h.url("/session"))
            .bearer_auth(user_token("alice"))
            .body(big),
    )
    .await;
    assert_eq!(r.status(), 413);
    assert!(r.headers().get("set-cookie").is_none());
    let r = send_raw(
        h.http
            .post(h.url("/session"))
            .bearer_auth(user_token("alice")),
    )
    .await;
    assert_eq!(r.status(), 204);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with("herald_session="), "{set}");
    // the attributes in the documented order, `Secure` after `Path=/`
    assert!(
        set.contains("; HttpOnly; SameSite=Lax; Path=/; Secure; Max-Age="),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    h.notify("alice", "hello").await;
    let (status, body) = send(
        h.http
            .get(h.url("/notifications"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["unread_count"], 1);
    let sse = h.cookie_events(&cookie).await;
    let ready = sse.ready.as_ref().unwrap().json();
    assert_eq!(ready["user"], "alice");
    // the public session id, never the cookie's secret
    assert_eq!(ready["session"].as_str().unwrap(), session_id(&cookie));
    let r = send_raw(
        h.http
            .get(h.url("/notifications"))
            .header("cookie", "herald_session=made-up"),
    )
    .await;
    assert_eq!(r.status(), 401);

    // cookie tossing: a sibling site's herald_session cookies sent before the user's (made
    // up, or the user's own id with a wrong secret) do not lock the user out; the first
    // live one counts, among the first 32 different ones of the session's shape
    let id = session_id(&cookie);
    let wrong_secret = format!("herald_session={id}.{}", "0".repeat(64));
    let dead = |n: usize| format!("herald_session={n:024x}.{}", "f".repeat(64));
    let deads = |range: std::ops::Range<usize>| range.map(dead).collect::<Vec<_>>().join("; ");
    for tossed in [
        "herald_session=made-up".to_owned(),
        wrong_secret.clone(),
        format!("{wrong_secret}; {}; {}", dead(1), dead(2)),
        // 30 different ones (then 29 of them again): the user's is the 31st to try
        format!("{wrong_secret}; {}; {}", deads(1..30), deads(1..30)),
    ] {
        let both = format!("{tossed}; a=1; {cookie}");
        let sse = h.cookie_events(&both).await;
        assert_eq!(sse.ready.as_ref().unwrap().json()["session"], id.as_str());
        let (status, body) = send(
            h.http
                .patch(h.url("/notifications"))
                .header("cookie", &both)
                .header("origin", h.url(""))
                .json(&json!({"all": true, "read": true})),
        )
        .await;
        assert_eq!(status, 200, "{tossed}: {body}");
    }
    let too_many = format!("{}; {cookie}", deads(1..33));
    let (status, body) = send(
        h.http
            .get(h.url("/notifications"))
            .header("cookie", &too_many),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
}

async fn cookie_writes_need_an_allowed_origin(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let id = h.notify("alice", "x").await;
    let cookie = h.login("alice").await;
    let path = h.url(&format!("/notifications/{id}"));
    let own = h.base.clone();
    let patch = |origin: Option<&str>| {
        let mut req = h
            .http
            .patch(&path)
            .header("cookie", &cookie)
            .json(&json!({"read": true}));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    for origin in [
        None,
        Some("http://evil.example"),
        Some("http://127.0.0.1:1"),
    ] {
        let (status, body) = status_json(patch(origin).await.unwrap()).await;
        assert_error(status, &body, 403, "forbidden");
    }
    assert_eq!(
        h.list(&user_token("alice"), "").await["unread_count"],
        1,
        "rejected write changed nothing"
    );
    // two Origin headers, the allowed one among them: neither counts
    for (first, second) in [
        (own.as_str(), "http://evil.example"),
        ("http://evil.example", &own),
    ] {
        let r = h
            .http
            .patch(&path)
            .header("cookie", &cookie)
            .header("origin", first)
            .header("origin", second)
            .json(&json!({"read": true}));
        let (status, body) = status_json(r.send().await.unwrap()).await;
        assert_error(status, &body, 403, "forbidden");
    }
    assert_eq!(patch(Some(&own)).await.unwrap().status(), 200);
    // Bearer requests are exempt
    let (status, _) = h
        .patch(
            &format!("/notifications/{id}"),
            &user_token("alice"),
            json!({"read": false}),
        )
        .await;
    assert_eq!(status, 200);
    // a configured origin replaces the same-host default
    drop(h);
    let h = Setup::new(mode, &["--allowed-origin", "https://app.example"]);
    let id = h.notify("alice", "x").await;
    let cookie = h.login("alice").await;
    let req = |origin: &str| {
        h.http
            .patch(h.url(&format!("/notifications/{id}")))
            .header("cookie", &cookie)
            .header("origin", origin)
            .json(&json!({"read": true}))
            .send()
    };
    assert_eq!(req("https://evil.example").await.unwrap().status(), 403);
    assert_eq!(req("https://app.example").await.unwrap().status(), 200);
    // CORS preflight answers for the allowed origin with credentials
    let r = send_raw(
        h.http
            .request(reqwest::Method::OPTIONS, h.url("/notifications"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "PATCH"),
    )
    .await;
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
}

async fn logout_revokes_streams_of_that_session_only(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let (one, two) = (h.login("alice").await, h.login("alice").await);
    assert_ne!(one, two);
    let mut s1 = h.cookie_events(&one).await;
    let mut s2 = h.cookie_events(&two).await;
    let r = h.logout(&one).await;
    assert_eq!(r.status(), 204);
    let cleared = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("herald_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // and the browser's cache of the user's answers goes with it
    assert_eq!(r.headers()["clear-site-data"], "\"cache\"");
    let revoked = s1
        .try_next(Duration::from_secs(1))
        .await
        .expect("revoked within 1 s");
    assert_eq!(revoked.event, "revoked");
    assert!(s1.ends_within(Duration::from_secs(2)).await);
    let r = send_raw(h.http.get(h.url("/notifications")).header("cookie", &one)).await;
    assert_eq!(r.status(), 401);
    // signing out again with the dead cookie: 401, and the browser is told to drop it
    let r = h.logout(&one).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["set-cookie"].to_str().unwrap(), cleared);
    assert_eq!(r.headers()["clear-site-data"], "\"cache\"");
    // the other session is untouched
    h.notify("alice", "still").await;
    assert_eq!(s2.next_event().await.event, "notification");
}

/// A key pair written by openssl: (private PEM, public PEM path); the private key's path is
/// the public one's with `.key` for `.pub`.
fn key_pair(dir: &TempDir, kind: &str) -> (Vec<u8>, String) {
    let private = dir.0.join(format!("{kind}.key"));
    let public = dir.0.join(format!("{kind}.pub"));
    let (p, q) = (private.to_str().unwrap(), public.to_str().unwrap());
    match kind {
        "rsa" => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p,
        ]),
        _ => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p,
        ]),
    }
    openssl(&["pkey", "-in", p, "-pubout", "-out", q]);
    (std::fs::read(&private).unwrap(), q.to_owned())
}

#[tokio::test]
async fn public_keys_accept_only_their_algorithm() {
    let dir = TempDir::new("keys");
    let claims = json!({"sub": "alice", "exp": now() + 60});
    for (kind, alg) in [("rsa", Algorithm::RS256), ("ec", Algorithm::ES256)] {
        let (private, public) = key_pair(&dir, kind);
        let h = Herald::start(None, &["--jwt-public-key", &public]);
        let key = match kind {
            "rsa" => EncodingKey::from_rsa_pem(&private).unwrap(),
            _ => EncodingKey::from_ec_pem(&private).unwrap(),
        };
        let good = encode(&Header::new(alg), &claims, &key).unwrap();
        assert_eq!(h.get("/notifications", &good).await.0, 200, "{kind}");
        // algorithm confusion: HS256 signed with the public key's text
        let pem = std::fs::read(&public).unwrap();
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&pem),
        )
        .unwrap();
        assert_eq!(h.get("/notifications", &confused).await.0, 401, "{kind}");
        assert_eq!(
            h.get("/notifications", &user_token("alice")).await.0,
            401,
            "{kind}"
        );
        // the sub-commands sign with the private half
        let private_path = public.replace(".pub", ".key");
        let signing = [
            "--jwt-public-key",
            &public,
            "--jwt-private-key",
            &private_path,
        ];
        let out = Command::new(bin())
            .args([&["token", "--sub", "alice"][..], &signing].concat())
            .output()
            .unwrap();
        assert!(out.status.success(), "{kind}: {out:?}");
        let token = String::from_utf8(out.stdout).unwrap();
        assert_eq!(h.get("/notifications", token.trim()).await.0, 200, "{kind}");
        let out = Command::new(bin())
            .args(
                [
                    &[
                        "publish", "--url", &h.base, "--user", "alice", "--title", "signed",
                    ][..],
                    &signing,
                ]
                .concat(),
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{kind}: {out:?}");
        let (_, tray) = h.get("/notifications", &good).await;
        assert_eq!(tray["notifications"][0]["title"], "signed", "{kind}");
    }
    // a public key cannot sign, and the error says what can
    let (_, public) = key_pair(&dir, "ec");
    let out = Command::new(bin())
        .args(["token", "--sub", "alice", "--jwt-public-key", &public])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jwt-private-key"));
    // a private key with text around its block signs
    let private = public.replace(".pub", ".key");
    let padded = dir.0.join("padded.key");
    let text = std::fs::read_to_string(&private).unwrap();
    std::fs::write(&padded, format!("made by openssl\n{text}\n\n# ES256\n")).unwrap();
    let out = Command::new(bin())
        .args(["token", "--sub", "alice", "--jwt-public-key", &public])
        .arg("--jwt-private-key")
        .arg(&padded)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // a private key file of two keys, of no key, or of an EC key on another curve is refused,
    // not signed with at random
    let two = dir.0.join("two.key");
    std::fs::write(&two, text.repeat(2)).unwrap();
    let public_file = std::path::PathBuf::from(&public);
    let p384 = dir.0.join("p384.key");
    let p384_path = p384.to_str().unwrap();
    p384_key(p384_path);
    for (file, says) in [
        (&two, "it holds 2 PEM blocks"),
        (&public_file, "no RSA or EC private key"),
        (&p384, "must be on the P-256 curve"),
    ] {
        let out = Command::new(bin())
            .args(["token", "--sub", "alice", "--jwt-public-key", &public])
            .arg("--jwt-private-key")
            .arg(file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--jwt-private-key") && stderr.contains(says),
            "{stderr}"
        );
        assert!(!stderr.contains("InvalidKeyFormat"), "{stderr}");
    }
}

/// A key flag on the command line wins over an exported secret, as a flag wins over its own
/// env twin: the server verifies with the public key, and `herald token` signs with the
/// private one.
#[tokio::test]
async fn a_key_flag_wins_over_an_exported_secret() {
    let dir = TempDir::new("keys");
    let (private, public) = key_pair(&dir, "ec");
    let secret = [("HERALD_JWT_SECRET", SECRET)];
    let args = ["--listen", "127.0.0.1:0", "--jwt-public-key", &public].map(str::to_owned);
    let h = Herald::spawn_env(&args, &secret);
    let claims = json!({"sub": "alice", "exp": now() + 60});
    let key = EncodingKey::from_ec_pem(&private).unwrap();
    let good = encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
    assert_eq!(h.get("/notifications", &good).await.0, 200);
    assert_eq!(h.get("/notifications", &user_token("alice")).await.0, 401);
    let private_path = public.replace(".pub", ".key");
    let out = Command::new(bin())
        .args(["token", "--sub", "alice", "--jwt-public-key", &public])
        .args(["--jwt-private-key", &private_path])
        .envs(secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(h.get("/notifications", token.trim()).await.0, 200);
    // both on the command line are still a conflict
    let out = Command::new(bin())
        .args(["--jwt-secret", "x", "--jwt-public-key", &public])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test]
async fn issuer_audience_and_leeway() {
    let h = Herald::start(
        None,
        &[
            "--jwt-issuer",
            "https://idp.example",
            "--jwt-audience",
            "herald",
            "--jwt-leeway",
            "60s",
        ],
    );
    let base = |extra: serde_json::Value| {
        let mut c = json!({"sub": "alice", "exp": now() + 60});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        sign(c)
    };
    let cases = [
        (json!({}), 401),
        (json!({"iss": "https://idp.example"}), 401),
        (json!({"iss": "https://other", "aud": "herald"}), 401),
        (json!({"iss": "https://idp.example", "aud": "herald"}), 200),
    ];
    for (claims, want) in cases {
        assert_eq!(
            h.get("/notifications", &base(claims.clone())).await.0,
            want,
            "{claims}"
        );
    }
    let late = sign(
        json!({"sub": "alice", "iss": "https://idp.example", "aud": "herald", "exp": now() - 30}),
    );
    assert_eq!(
        h.get("/notifications", &late).await.0,
        200,
        "leeway covers 30 s of skew"
    );
    // A session lasts as long as its token is accepted: to `exp` plus the leeway.
    let r = send_raw(h.http.post(h.url("/session")).bearer_auth(&late)).await;
    assert_eq!(r.status(), 204, "a session from a token within the leeway");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let max_age: u64 = set.rsplit("Max-Age=").next().unwrap().parse().unwrap();
    assert!((28..=30).contains(&max_age), "{set}");
    let cookie = cookie_of(&r);
    let r = send_raw(
        h.http
            .get(h.url("/notifications"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn dev_cookies_are_not_secure() {
    let h = Herald::start(None, &["--dev"]);
    let r = send_raw(
        h.http
            .post(h.url("/session"))
            .bearer_auth(user_token("alice")),
    )
    .await;
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(!set.contains("Secure"), "{set}");
}

/// A trusted proxy's `X-Forwarded-Proto: https` makes the request known to be HTTPS, and a
/// `Host` without a port then means port 443: an `http://` page of that host (port 80, what a
/// network attacker can forge) may not make cookie writes. A request reported as `http` may
/// still come from an `https` page (TLS ended by a balancer in front of the proxy). From
/// anyone else the header is the caller's own claim and changes nothing.
#[tokio::test]
async fn an_https_request_without_a_port_is_port_443() {
    for (trusted, plain_allowed) in [(true, false), (false, true)] {
        let flags: &[&str] = if trusted {
            &["--trusted-proxy", "127.0.0.1"]
        } else {
            &[]
        };
        let h = Herald::start(None, flags);
        let id = h.notify("alice", "x").await;
        let cookie = h.login("alice").await;
        let patch = |origin: &str, proto: &str| {
            h.http
                .patch(h.url(&format!("/notifications/{id}")))
                .header("host", "herald.test")
                .header("cookie", &cookie)
                .header("origin", origin)
                .header("x-forwarded-proto", proto)
                .json(&json!({"read": true}))
                .send()
        };
        let plain = patch("http://herald.test", "https").await.unwrap().status();
        assert_eq!(plain == 200, plain_allowed, "trusted: {trusted}, {plain}");
        for (origin, proto) in [
            ("https://herald.test", "https"),
            ("https://herald.test", "http"),
            ("http://herald.test", "http"),
        ] {
            let status = patch(origin, proto).await.unwrap().status();
            assert_eq!(status, 200, "{origin} {proto}");
        }
        // host and port are compared: the same explicit port matches either scheme
        let own = origin(&h.base).to_owned();
        let same_port = h
            .http
            .patch(h.url(&format!("/notifications/{id}")))
            .header("cookie", &cookie)
            .header("origin", &own)
            .header("x-forwarded-proto", "https")
            .json(&json!({"read": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(same_port.status(), 200);
    }
}
