//! Identities that travel safely: the session secret never leaves the cookie (public session
//! ids everywhere else, the secret stored hashed), Bearer callers without `sid` have no
//! session, sessions per user are capped, user ids survive a header unchanged, RFC 7519 claim
//! forms are accepted and absurd dates are clamped.

use serde_json::{json, Value};

use crate::both_modes;
use crate::common::*;

both_modes!(
    session_secret_never_leaves_the_cookie,
    cookies_of_another_shape_sign_in_again,
    bearer_without_sid_has_no_session,
    sessions_per_user_are_capped,
    only_live_sessions_count_toward_the_cap,
    ids_with_edge_whitespace_are_refused,
    absurd_expiry_is_clamped,
);

async fn presence(h: &Herald, user: &str) -> Value {
    let (status, body) = send(
        h.http
            .get(h.url(&format!("/presence/{user}")))
            .bearer_auth(service_token()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `ready`, presence and `X-Herald-Session` name the public id; neither it nor anything a
/// service can read works as a cookie; Redis holds no copy of the secret.
async fn session_secret_never_leaves_the_cookie(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let cookie = h.login("victim").await;
    let (id, secret) = (session_id(&cookie), cookie_value(&cookie).to_owned());
    assert!(
        !secret.contains(&id),
        "the cookie holds no part of the public id"
    );
    let sse = h.cookie_events(&cookie).await;
    assert_eq!(sse.ready.as_ref().unwrap().json()["session"], id.as_str());
    assert!(!sse.raw.contains(&secret));

    let listed = presence(&h, "victim").await;
    assert_eq!(listed["sessions"][0]["session"], id.as_str(), "{listed}");
    assert!(!listed.to_string().contains(&secret));

    let r = send_raw(h.http.get(h.url("/auth")).header("cookie", &cookie)).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["x-herald-session"].to_str().unwrap(), id);

    // what a publish-scoped service (or page script) can see is not a credential
    for stolen in [id.clone(), format!("{id}.{}", "0".repeat(64))] {
        let r = send_raw(
            h.http
                .get(h.url("/notifications"))
                .header("cookie", format!("herald_session={stolen}")),
        )
        .await;
        assert_eq!(r.status(), 401, "{stolen}");
    }
    if let Some(server) = &h._redis {
        let mut conn = server.conn();
        let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        for key in keys {
            assert!(!key.contains(&secret), "{key}");
            let dump: Vec<u8> = ::redis::cmd("DUMP").arg(&key).query(&mut conn).unwrap();
            let dump = String::from_utf8_lossy(&dump);
            assert!(!dump.contains(&secret), "{key} holds the secret");
        }
    }
}

/// A cookie of another shape, or of the issued shape (64 hex digits) with an unknown secret, is
/// not a session: 401, and the browser signs in again. The `<id>.<secret>` form of earlier
/// builds still is.
async fn cookies_of_another_shape_sign_in_again(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let good = h.login("alice").await;
    for value in [
        "0123456789abcdef".repeat(4),
        format!("{}.", session_id(&good)),
        cookie_value(&good).to_uppercase(),
        format!("{}x", cookie_value(&good)),
    ] {
        let r = send_raw(
            h.http
                .get(h.url("/auth"))
                .header("cookie", format!("herald_session={value}")),
        )
        .await;
        assert_eq!(r.status(), 401, "{value}");
    }
    let r = send_raw(h.http.get(h.url("/auth")).header("cookie", &good)).await;
    assert_eq!(r.status(), 204);
    // the `<id>.<secret>` form earlier builds issued still names the session
    let (id, secret) = (session_id(&good), cookie_value(&good));
    let r = send_raw(
        h.http
            .get(h.url("/auth"))
            .header("cookie", format!("herald_session={id}.{secret}")),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["x-herald-session"].to_str().unwrap(), id);
}

/// A Bearer token without `sid`: no `X-Herald-Session`, `ready` and presence show no session,
/// and two such streams of one user both stay open (neither replaces the other).
async fn bearer_without_sid_has_no_session(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("carol");
    let r = send_raw(h.http.get(h.url("/auth")).bearer_auth(&token)).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["x-herald-user"], "carol");
    assert!(r.headers().get("x-herald-session").is_none());
    let mut a = h.events(&token, "").await;
    let mut b = h.events(&token, "").await;
    assert_eq!(a.ready.as_ref().unwrap().json()["session"], Value::Null);
    let listed = presence(&h, "carol").await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 2, "{listed}");
    assert!(listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["session"].is_null()));
    h.notify("carol", "both").await;
    assert_eq!(a.next_event().await.event, "notification");
    assert_eq!(b.next_event().await.event, "notification");
}

/// The 101st session of a user ends the oldest one, and that session's stream.
async fn sessions_per_user_are_capped(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let first = h.login("dave").await;
    let mut sse = h.cookie_events(&first).await;
    let mut last = String::new();
    for _ in 0..100 {
        last = h.login("dave").await;
    }
    assert_eq!(sse.expect("revoked").await.event, "revoked");
    let status = |cookie: String| {
        let req = h.http.get(h.url("/auth")).header("cookie", cookie);
        async move { send_raw(req).await.status() }
    };
    assert_eq!(status(first).await, 401);
    assert_eq!(status(last.clone()).await, 204);
    // 20 logins at once at the cap end the 20 oldest, not each 20 more
    let cookies = futures_util::future::join_all((0..20).map(|_| h.login("dave"))).await;
    let live = futures_util::future::join_all(cookies.into_iter().map(status)).await;
    assert!(live.iter().all(|s| *s == 204), "{live:?}");
    assert_eq!(status(last).await, 204, "the newest earlier session stays");
}

/// Sessions that ended by themselves (their token's `exp` passed) do not count: a user with
/// one live session and 99 ended ones keeps the live one at the next login.
async fn only_live_sessions_count_toward_the_cap(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let live = h.login("erin").await;
    // Each short token is signed just before its login, so that on a slow run none has
    // expired by its login (one shared token did, on CI), and all have ended by the next.
    let mut last_exp = 0.0;
    for _ in 0..99 {
        last_exp = unix_now() + 2.0;
        h.login_with(&sign(json!({"sub": "erin", "exp": last_exp})))
            .await;
    }
    let left = (last_exp + 0.5 - unix_now()).max(0.0);
    tokio::time::sleep(std::time::Duration::from_secs_f64(left)).await;
    let newest = h.login("erin").await;
    for cookie in [live, newest] {
        let req = h.http.get(h.url("/auth")).header("cookie", cookie);
        assert_eq!(send_raw(req).await.status(), 204);
    }
}

/// Ids that a header would change (edge whitespace, whitespace only) are refused at the door.
async fn ids_with_edge_whitespace_are_refused(mode: Mode) {
    let h = Setup::new(mode, &[]);
    for sub in [" alice", "alice ", "  alice  ", "   ", "\u{a0}alice"] {
        let token = sign(json!({"sub": sub, "exp": now() + 60}));
        for path in ["/auth", "/notifications", "/events"] {
            let (status, body) = h.get(path, &token).await;
            assert_eq!(status, 401, "{sub:?} {path}: {body}");
        }
        let (status, body) = h
            .publish(json!({"users": [sub], "notification": {"title": "t"}}))
            .await;
        assert_error(status, &body, 400, "invalid_request");
        let (status, body) = send(
            h.http
                .put(h.url("/groups/g/members"))
                .bearer_auth(service_token())
                .json(&json!({"users": [sub]})),
        )
        .await;
        assert_error(status, &body, 400, "invalid_request");
    }
    // inner spaces are fine
    let (status, _) = h.get("/auth", &user_token("alice smith")).await;
    assert_eq!(status, 204);
}

/// `exp` far beyond any real date ("never expires" tokens, u64::MAX): streams open, sessions
/// get a cookie of at most 400 days, nothing panics or leaks a stream slot.
async fn absurd_expiry_is_clamped(mode: Mode) {
    // pings find closed connections quickly
    let h = Setup::new(
        mode,
        &["--max-streams-per-user", "3", "--heartbeat", "100ms"],
    );
    for exp in [
        json!(u64::MAX),
        json!(i64::MAX),
        json!(1e300),
        json!(9.3e18),
    ] {
        let token = sign(json!({"sub": "eve", "exp": exp}));
        {
            let sse = h.events(&token, "").await;
            assert_eq!(sse.ready.as_ref().unwrap().json()["user"], "eve");
        }
        let r = send_raw(h.http.post(h.url("/session")).bearer_auth(&token)).await;
        assert_eq!(r.status(), 204, "exp {exp}");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        let max_age: u64 = set
            .split("; ")
            .find_map(|a| a.strip_prefix("Max-Age="))
            .expect("Max-Age")
            .parse()
            .expect("a positive Max-Age");
        assert!(max_age > 300 * 86400 && max_age <= 400 * 86400, "{set}");
        let r = send_raw(h.http.get(h.url("/auth")).header("cookie", cookie_of(&r))).await;
        assert_eq!(r.status(), 204);
    }
    // the closed streams gave their slots back
    wait_for("stream slots leaked", async || {
        h.text("/metrics").await.contains("herald_streams_open 0")
    })
    .await;
    let streams: Vec<Sse> = {
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(h.events(&user_token("eve"), "").await);
        }
        open
    };
    assert_eq!(streams.len(), 3);
}

/// RFC 7519 forms: `aud` as an array (with or without a configured audience), NumericDates
/// with a fraction.
#[tokio::test]
async fn rfc7519_claim_forms_are_accepted() {
    let plain = Herald::start(None, &[]);
    let app = Herald::start(None, &["--jwt-audience", "app"]);
    let far = now() + 3600;
    let cases = [
        (
            &plain,
            json!({"sub": "a", "exp": far, "aud": ["x", "y"]}),
            204,
        ),
        (&plain, json!({"sub": "a", "exp": far as f64 + 0.5}), 204),
        (
            &plain,
            json!({"sub": "a", "exp": far, "nbf": (now() - 5) as f64 + 0.25}),
            204,
        ),
        (&plain, json!({"sub": "a", "exp": now() as f64 - 2.5}), 401),
        // before 1970: long passed, long expired
        (&plain, json!({"sub": "a", "exp": far, "nbf": -1}), 204),
        (&plain, json!({"sub": "a", "exp": far, "nbf": -0.5}), 204),
        (&plain, json!({"sub": "a", "exp": -1}), 401),
        (
            &app,
            json!({"sub": "a", "exp": far, "aud": ["app", "other"]}),
            204,
        ),
        (&app, json!({"sub": "a", "exp": far, "aud": ["app"]}), 204),
        (&app, json!({"sub": "a", "exp": far, "aud": "app"}), 204),
        (&app, json!({"sub": "a", "exp": far, "aud": ["other"]}), 401),
        (&app, json!({"sub": "a", "exp": far}), 401),
    ];
    for (h, claims, want) in cases {
        let (status, body) = h.get("/auth", &sign(claims.clone())).await;
        assert_eq!(status, want, "{claims}: {body}");
    }
}

/// `scope` is split on ASCII spaces only (RFC 6749): a tab or a no-break space does not
/// separate `publish` from its neighbour. An array of strings (as some identity providers
/// issue it) names its items; another form names none: 403 to publish, and the token is
/// still a user's.
#[tokio::test]
async fn scope_is_space_delimited() {
    let h = Herald::start(None, &[]);
    let body = json!({"users": ["a"], "notification": {"title": "t"}});
    for (scope, want) in [
        (json!("read publish"), 202),
        (json!("read\tpublish"), 403),
        (json!("read\u{a0}publish"), 403),
        (json!("read\u{3000}publish"), 403),
        (json!(["openid", "publish"]), 202),
        (json!(["openid"]), 403),
        (json!(7), 403),
    ] {
        let user = sign(json!({"sub": "a", "scope": scope, "exp": now() + 60}));
        assert_eq!(h.get("/notifications", &user).await.0, 200, "{scope}");
        let token = sign(json!({"scope": scope, "exp": now() + 60}));
        let (status, answer) = send(
            h.http
                .post(h.url("/publish"))
                .bearer_auth(token)
                .json(&body),
        )
        .await;
        assert_eq!(status, want, "{scope:?}: {answer}");
    }
}
