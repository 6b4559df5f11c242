//! `GET /events`: headers, `retry:` + `ready`, live change events with `<epoch>.<seq>` ids,
//! replay after Last-Event-ID (header and query), `reset` for ids of another user's log, of no
//! log, or no id at all, heartbeats, replacement, tabs, limits, shutdown.

use std::time::Duration;

use serde_json::json;

use crate::both_modes;
use crate::common::*;

both_modes!(
    opens_with_retry_and_ready,
    delivers_every_change_kind_with_ids,
    changes_from_any_session_reach_every_stream,
    replays_after_last_event_id_header,
    replays_after_last_event_id_query,
    unknown_or_future_id_resets,
    another_users_id_resets_and_skips_nothing,
    a_new_users_epoch_is_kept_by_its_first_change,
    heartbeats_are_sent,
    second_stream_of_a_session_replaces_first,
    tabs_of_one_session_coexist,
    too_many_streams_is_429,
    stream_ends_at_token_expiry,
    sigterm_ends_streams_promptly,
    users_only_see_their_own_events,
    a_stalled_client_is_cut_off_and_resumes_without_loss,
);

async fn opens_with_retry_and_ready(mode: Mode) {
    let h = Setup::new(mode, &[]);
    h.notify("alice", "before").await;
    let sse = h.events(&session_token("alice", "s1"), "").await;
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["cache-control"], "no-cache");
    assert_eq!(sse.headers["x-accel-buffering"], "no");
    assert!(sse.raw.starts_with("retry: "), "{}", sse.raw);
    let ready = sse.ready.unwrap();
    assert!(ready.retry.is_some(), "retry comes with ready");
    assert_eq!(ready.position().1, 1, "ready is at the head: {ready:?}");
    let ready = ready.json();
    assert_eq!(
        ready,
        json!({"user": "alice", "session": "s1", "unread_count": 1, "unseen_count": 1})
    );
}

async fn delivers_every_change_kind_with_ids(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    let id = h.notify("alice", "Build finished").await;
    let n = sse.next_event().await;
    assert_eq!(n.event, "notification");
    assert_eq!(n.json()["id"], id.as_str());
    assert_eq!(n.json()["title"], "Build finished");
    assert_eq!(n.json()["read_at"], serde_json::Value::Null);
    let (epoch, first) = n.position();

    h.patch(
        &format!("/notifications/{id}"),
        &token,
        json!({"read": true}),
    )
    .await;
    let read = sse.next_event().await;
    assert_eq!(
        (read.event.as_str(), read.json()),
        (
            "read",
            json!({"ids": [id], "unread_count": 0, "unseen_count": 0})
        )
    );
    h.patch(
        &format!("/notifications/{id}"),
        &token,
        json!({"read": false}),
    )
    .await;
    let unread = sse.next_event().await;
    assert_eq!(
        (unread.event.as_str(), unread.json()),
        // unread again, but still seen
        (
            "unread",
            json!({"ids": [id], "unread_count": 1, "unseen_count": 0})
        )
    );
    h.patch(
        &format!("/notifications/{id}"),
        &token,
        json!({"deleted": true}),
    )
    .await;
    let deleted = sse.next_event().await;
    assert_eq!(
        (deleted.event.as_str(), deleted.json()),
        (
            "deleted",
            json!({"ids": [id], "unread_count": 0, "unseen_count": 0})
        )
    );
    let ids: Vec<(String, u64)> = [read, unread, deleted]
        .iter()
        .map(Event::position)
        .collect();
    assert_eq!(
        ids,
        vec![
            (epoch.clone(), first + 1),
            (epoch.clone(), first + 2),
            (epoch, first + 3)
        ]
    );
}

async fn changes_from_any_session_reach_every_stream(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let mut a = h.events(&session_token("alice", "laptop"), "").await;
    let mut b = h.events(&session_token("alice", "phone"), "").await;
    let id = h.notify("alice", "hi").await;
    assert_eq!(a.expect("notification").await.json()["id"], id.as_str());
    assert_eq!(b.expect("notification").await.json()["id"], id.as_str());
    h.patch(
        &format!("/notifications/{id}"),
        &session_token("alice", "phone"),
        json!({"read": true}),
    )
    .await;
    assert_eq!(a.expect("read").await.json()["ids"], json!([id]));
    assert_eq!(b.expect("read").await.json()["ids"], json!([id]));
}

/// Publish three, remember the id of the first event, publish two more while away, resume.
async fn resume_scenario(h: &Herald, resume: impl Fn(&str) -> (String, Option<String>)) {
    let token = session_token("alice", "s1");
    let mut sse = h.events(&token, "").await;
    h.notify("alice", "one").await;
    let first = sse.next_event().await;
    drop(sse);
    let two = h.notify("alice", "two").await;
    let three = h.notify("alice", "three").await;
    let (query, header) = resume(first.id.as_deref().unwrap());
    let mut req = h
        .http
        .get(h.url(&format!("/events{query}")))
        .bearer_auth(&token);
    if let Some(header) = header {
        req = req.header("Last-Event-ID", header);
    }
    let mut sse = h.events_with(req).await;
    assert_eq!(sse.next_event().await.event, "ready");
    let a = sse.next_event().await;
    let b = sse.next_event().await;
    assert_eq!(a.json()["id"], two.as_str());
    assert_eq!(b.json()["id"], three.as_str());
    // nothing else (no duplicate), and live events continue after the replay
    let four = h.notify("alice", "four").await;
    let c = sse.next_event().await;
    assert_eq!(c.json()["id"], four.as_str());
    let ids: Vec<(String, u64)> = [first, a, b, c].iter().map(Event::position).collect();
    assert!(
        ids.windows(2)
            .all(|w| w[1].0 == w[0].0 && w[1].1 == w[0].1 + 1),
        "{ids:?}"
    );
}

async fn replays_after_last_event_id_header(mode: Mode) {
    let h = Setup::new(mode, &[]);
    resume_scenario(&h, |id| (String::new(), Some(id.to_owned()))).await;
}

async fn replays_after_last_event_id_query(mode: Mode) {
    let h = Setup::new(mode, &[]);
    resume_scenario(&h, |id| (format!("?last_event_id={id}"), None)).await;
}

/// How a test sends a Last-Event-ID: as the header (raw bytes, so non-ASCII goes as sent) or
/// as `?last_event_id=` (percent-encoded).
async fn resume_with(h: &Herald, token: &str, id: &str, as_header: bool) -> Sse {
    let req = if as_header {
        let value = reqwest::header::HeaderValue::from_bytes(id.as_bytes()).unwrap();
        h.http
            .get(h.url("/events"))
            .bearer_auth(token)
            .header("Last-Event-ID", value)
    } else {
        h.http
            .get(h.url("/events"))
            .query(&[("last_event_id", id)])
            .bearer_auth(token)
    };
    h.events_with(req).await
}

/// `ready` then `reset`, both at the head (nothing seen yet: unseen = unread); returns the
/// head.
async fn expect_ready_and_reset(sse: &mut Sse, unread: u64, what: &str) -> (String, u64) {
    let ready = sse.next_event().await;
    assert_eq!(ready.event, "ready", "for {what}");
    let reset = sse.next_event().await;
    assert_eq!(reset.event, "reset", "for {what}");
    let counts = json!({"unread_count": unread, "unseen_count": unread});
    assert_eq!(reset.json(), counts, "for {what}");
    assert_eq!(reset.position(), ready.position(), "for {what}");
    reset.position()
}

async fn unknown_or_future_id_resets(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut sse = h.events(&token, "").await;
    h.notify("alice", "one").await;
    h.notify("alice", "two").await;
    let (epoch, _) = sse.next_event().await.position();
    drop(sse);
    let other = if epoch.starts_with('0') { "1" } else { "0" };
    let other_epoch = format!("{other}{}", &epoch[1..]);
    let mut cases = vec![
        // a legacy plain seq that is inside the retained log
        "1".to_owned(),
        "999999".to_owned(),
        "not-a-number".to_owned(),
        // the right epoch, beyond the head
        format!("{epoch}.999999"),
        // another epoch, a seq inside the window
        format!("{other_epoch}.1"),
        format!("{epoch}.+1"),
        format!("{epoch}."),
        // a padded seq: no id Herald wrote
        format!("{epoch}.01"),
        // non-ASCII look-alikes (review I6): fullwidth digits and a fullwidth tag character
        format!("{epoch}.\u{ff11}"),
        "\u{ff11}".to_owned(),
        format!("\u{ff13}{}.1", &epoch[1..]),
    ];
    if epoch.to_uppercase() != epoch {
        cases.push(format!("{}.1", epoch.to_uppercase()));
    }
    for bad in &cases {
        for as_header in [true, false] {
            let what = format!("{bad:?} (header: {as_header})");
            let mut sse = resume_with(&h, &token, bad, as_header).await;
            let head = expect_ready_and_reset(&mut sse, 2, &what).await;
            assert_eq!(head, (epoch.clone(), 2), "for {what}");
        }
    }
}

/// A shared browser: bob's stream resumes with the id alice's stream left behind. Bob's log
/// is longer than the id's seq, so a seq-only check would replay from it and skip bob's first
/// events; instead bob gets `reset` at his own head, and his next change follows it.
async fn another_users_id_resets_and_skips_nothing(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let mut alice = h.events(&user_token("alice"), "").await;
    h.notify("alice", "for alice").await;
    let alices = alice.next_event().await;
    assert_eq!(alices.position().1, 1);
    for title in ["b1", "b2", "b3"] {
        h.notify("bob", title).await;
    }
    let token = user_token("bob");
    let mut bob = resume_with(&h, &token, alices.id.as_deref().unwrap(), true).await;
    let (epoch, seq) = expect_ready_and_reset(&mut bob, 3, "alice's id").await;
    assert_ne!(
        epoch,
        alices.position().0,
        "each user's log has its own epoch"
    );
    assert_eq!(seq, 3);
    let id = h.notify("bob", "b4").await;
    let next = bob.next_event().await;
    assert_eq!(next.event, "notification");
    assert_eq!(next.json()["id"], id.as_str());
    assert_eq!(next.position(), (epoch.clone(), 4));
    // and bob's own id resumes exactly
    let mut again = resume_with(&h, &token, &format!("{epoch}.2"), false).await;
    assert_eq!(again.next_event().await.position(), (epoch.clone(), 2));
    let replayed: Vec<(String, u64)> = [again.next_event().await, again.next_event().await]
        .iter()
        .map(Event::position)
        .collect();
    assert_eq!(replayed, vec![(epoch.clone(), 3), (epoch, 4)]);
}

/// A user without a log gets an epoch at the first `ready`; the first change keeps it.
async fn a_new_users_epoch_is_kept_by_its_first_change(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("carol");
    let mut sse = h.events(&token, "").await;
    let (epoch, seq) = sse.ready.as_ref().unwrap().position();
    assert_eq!(seq, 0);
    let id = h.notify("carol", "first").await;
    let ev = sse.next_event().await;
    assert_eq!(ev.json()["id"], id.as_str());
    assert_eq!(ev.position(), (epoch.clone(), 1));
    let mut read = h.events(&token, "").await;
    h.patch(
        &format!("/notifications/{id}"),
        &token,
        json!({"read": true}),
    )
    .await;
    assert_eq!(read.next_event().await.position(), (epoch.clone(), 2));
    assert_eq!(sse.next_event().await.position(), (epoch, 2));
}

async fn heartbeats_are_sent(mode: Mode) {
    let h = Setup::new(mode, &["--heartbeat", "200ms"]);
    let mut sse = h.events(&user_token("alice"), "").await;
    sse.try_next(Duration::from_millis(900)).await;
    assert!(sse.comments >= 2, "{}", sse.raw);
    assert!(sse.raw.contains(": ping\n\n"));
}

async fn second_stream_of_a_session_replaces_first(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = session_token("alice", "s1");
    let mut first = h.events(&token, "").await;
    let mut second = h.events(&token, "").await;
    assert_eq!(first.next_event().await.event, "replaced");
    assert!(first.ends_within(Duration::from_secs(2)).await);
    let id = h.notify("alice", "still here").await;
    assert_eq!(second.next_event().await.json()["id"], id.as_str());
}

async fn tabs_of_one_session_coexist(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = session_token("alice", "s1");
    let mut t1 = h.events(&token, "?tab=t1").await;
    let mut t2 = h.events(&token, "?tab=t2").await;
    h.notify("alice", "both").await;
    assert_eq!(t1.next_event().await.event, "notification");
    assert_eq!(t2.next_event().await.event, "notification");
    let _t1b = h.events(&token, "?tab=t1").await;
    assert_eq!(t1.next_event().await.event, "replaced");
    // A tab id not UTF-8 once percent-decoded is refused, not read as a stand-in character.
    let (status, body) = send(h.http.get(h.url("/events?tab=t%FF")).bearer_auth(&token)).await;
    assert_error(status, &body, 400, "invalid_request");
}

async fn too_many_streams_is_429(mode: Mode) {
    let h = Setup::new(mode, &["--max-streams-per-user", "2"]);
    let _a = h.events(&session_token("alice", "a"), "").await;
    let _b = h.events(&session_token("alice", "b"), "").await;
    let (status, body) = send(
        h.http
            .get(h.url("/events"))
            .bearer_auth(session_token("alice", "c")),
    )
    .await;
    assert_error(status, &body, 429, "too_many_streams");
    // another user is not affected
    let _bob = h.events(&user_token("bob"), "").await;
}

/// At `exp` (a NumericDate may carry a fraction) the stream ends with `revoked`: never before
/// it, while the token still opens requests, and promptly after it.
async fn stream_ends_at_token_expiry(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let unix = unix_now;
    let exp = unix() + 2.5;
    let token = sign(json!({"sub": "alice", "exp": exp}));
    let mut sse = h.events(&token, "").await;
    tokio::time::sleep(Duration::from_secs_f64((exp - 0.4 - unix()).max(0.0))).await;
    let (status, _) = h.get("/notifications", &token).await;
    assert_eq!(status, 200, "the token is good until its exp");
    let revoked = sse
        .try_next(Duration::from_secs(5))
        .await
        .expect("revoked before the timeout");
    let at = unix();
    assert_eq!(revoked.event, "revoked");
    assert!(at >= exp, "revoked {:.3} s before exp", exp - at);
    // a fraction counts to the millisecond, then the node's tick (250 ms); the bound is loose
    // for a busy machine (the unit test `numeric_dates` pins the end to the millisecond)
    assert!(at < exp + 2.5, "revoked {:.3} s after exp", at - exp);
    assert!(sse.ends_within(Duration::from_secs(2)).await);
}

async fn sigterm_ends_streams_promptly(mode: Mode) {
    let mut h = Setup::new(mode, &["--drain-timeout", "5s"]);
    let mut sse = h.events(&user_token("alice"), "").await;
    let started = std::time::Instant::now();
    let status = h.node.terminate().expect("herald exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(sse.ends_within(Duration::from_secs(2)).await);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// Each stream gets its own user's changes and nothing else: every event up to a final
/// marker is read, on both users' streams.
async fn users_only_see_their_own_events(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let mut bob = h.events(&user_token("bob"), "").await;
    let mut alice = h.events(&user_token("alice"), "").await;
    let mut sent = std::collections::HashMap::<&str, Vec<String>>::new();
    for i in 0..3 {
        for user in ["alice", "bob"] {
            let id = h.notify(user, &format!("for {user} {i}")).await;
            sent.entry(user).or_default().push(id);
        }
    }
    // changes of other kinds too: a read and a delete of alice's
    let a = sent["alice"].clone();
    for (id, change) in [
        (&a[0], json!({"read": true})),
        (&a[1], json!({"deleted": true})),
    ] {
        let (status, body) = h
            .patch(
                &format!("/notifications/{id}"),
                &user_token("alice"),
                change,
            )
            .await;
        assert!((200..300).contains(&status), "{status} {body}");
    }
    // the markers, last: everything before them has been delivered when they arrive
    for user in ["alice", "bob"] {
        let id = h.notify(user, "marker").await;
        sent.entry(user).or_default().push(id);
    }
    for (user, sse) in [("bob", &mut bob), ("alice", &mut alice)] {
        let marker = sent[user].last().unwrap().clone();
        let mut seen = Vec::new();
        loop {
            let ev = sse.next_event().await;
            let data = ev.json();
            match ev.event.as_str() {
                "notification" => seen.push(data["id"].as_str().unwrap().to_owned()),
                _ => seen.extend(data["ids"].as_array().map_or(vec![], |ids| {
                    ids.iter().map(|i| i.as_str().unwrap().to_owned()).collect()
                })),
            }
            if data["id"] == marker.as_str() {
                break;
            }
        }
        let mut expected = sent[user].clone();
        if user == "alice" {
            expected.splice(3..3, [a[0].clone(), a[1].clone()]);
        }
        assert_eq!(seen, expected, "{user}'s stream: {}", sse.raw);
    }
}

/// Each stream draws its own `retry:` between 1.5 and 2.5 s, so the clients of a node that
/// goes away come back spread out: ten streams, all in range, not all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_is_drawn_per_stream_within_1500_to_2500_ms() {
    let h = Herald::start(None, &[]);
    let mut retries = Vec::new();
    for i in 0..10 {
        let sse = h
            .events(&session_token("alice", &format!("s{i}")), "")
            .await;
        let retry = sse
            .raw
            .lines()
            .find_map(|l| l.strip_prefix("retry: "))
            .unwrap_or_else(|| panic!("no retry: {}", sse.raw));
        let ms: u64 = retry.parse().unwrap_or_else(|_| panic!("{retry}"));
        retries.push(ms);
    }
    assert!(
        retries.iter().all(|ms| (1500..=2500).contains(ms)),
        "{retries:?}"
    );
    let distinct: std::collections::BTreeSet<_> = retries.iter().collect();
    // ten draws from a thousand values: all alike by chance once in 10^27
    assert!(distinct.len() > 1, "every stream got {retries:?}");
}

/// A client that stops reading is cut off once its backlog passes the bound, and loses
/// nothing: it resumes from the last id it read and gets every notification, once.
async fn a_stalled_client_is_cut_off_and_resumes_without_loss(mode: Mode) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let addr = addr_of(&h.base);
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request =
        format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    // publish big notifications while the client reads nothing
    let body = "x".repeat(12 * 1024);
    let mut published = Vec::new();
    for i in 0..900 {
        let (status, reply) = h
            .publish(json!({"users": ["alice"], "notification": {"title": format!("n{i}"), "body": body}}))
            .await;
        assert_eq!(status, 202);
        published.push(reply["ids"]["alice"].as_str().unwrap().to_owned());
        if i % 100 == 99 && h.metric("herald_streams_overflowed_total").await >= 1.0 {
            break;
        }
    }
    assert!(
        h.metric("herald_streams_overflowed_total").await >= 1.0,
        "the stalled stream was not cut off"
    );
    assert_eq!(h.metric("herald_streams_open").await, 0.0);
    // the client wakes up: it reads what reached it, up to the end of the stream
    // (the response ends with the last chunk; it said `connection: close`, nothing follows)
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !raw.ends_with(b"\r\n0\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, socket.read(&mut buf))
            .await
            .expect("the stream ended")
            .unwrap();
        assert!(n > 0, "connection closed before the response ended");
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    let seen: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    let last = *seen.last().unwrap();
    // The notifications it read, in order and without a gap: the first ones published may
    // precede the stream (the publishing began before it was ready: `ready` counts them).
    let read: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(r#"data: {"id":""#))
        .map(|l| &l[..26])
        .collect();
    let already = published
        .iter()
        .position(|id| id == read.last().unwrap())
        .unwrap()
        + 1;
    assert_eq!(read, published[already - read.len()..already]);
    // and resumes from there: the rest arrives, in order, once
    let req = h
        .http
        .get(h.url("/events"))
        .bearer_auth(&token)
        .header("Last-Event-ID", last);
    let mut sse = h.events_with(req).await;
    assert_eq!(sse.next_event().await.event, "ready");
    for expected in &published[already..] {
        let ev = sse.next_event().await;
        assert_eq!(ev.json()["id"], expected.as_str());
    }
}

/// With `--jwt-leeway`, a stream (Bearer or cookie session) ends at `exp` plus the leeway,
/// not at `exp`: the skew allowed on requests holds for streams too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_at_exp_plus_the_leeway() {
    let h = Herald::start(None, &["--jwt-leeway", "2s"]);
    let exp = unix_now() + 1.5;
    let token = sign(json!({"sub": "alice", "exp": exp}));
    let cookie = h.login_with(&token).await;
    let mut bearer = h.events(&token, "").await;
    let mut session = h.cookie_events(&cookie).await;
    tokio::time::sleep(Duration::from_secs_f64((exp + 1.5 - unix_now()).max(0.0))).await;
    let (status, _) = h.get("/notifications", &token).await;
    assert_eq!(status, 200, "past exp, within the leeway");
    for (name, sse) in [("bearer", &mut bearer), ("cookie", &mut session)] {
        let revoked = sse
            .try_next(Duration::from_secs(5))
            .await
            .expect("revoked before the timeout");
        let at = unix_now();
        assert_eq!(revoked.event, "revoked", "{name}");
        assert!(
            at >= exp + 2.0,
            "{name}: revoked {:.3} s after exp",
            at - exp
        );
        assert!(
            at < exp + 4.5,
            "{name}: revoked {:.3} s after exp",
            at - exp
        );
        assert!(sse.ends_within(Duration::from_secs(2)).await, "{name}");
    }
}
