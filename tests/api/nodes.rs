//! Two Herald nodes sharing one Redis behave as one: every change made on one node reaches
//! the streams on the other (publish, PATCH, logout, a replacing stream), presence spans nodes.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

fn two_nodes() -> (Redis, Herald, Herald) {
    let redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &[]);
    let b = Herald::start(Some(&redis.url()), &[]);
    (redis, a, b)
}

/// Wait (at most `WAIT`) until `node` answers `/readyz` with 200.
async fn wait_ready(node: &Herald) {
    wait_for("the node ready", async || {
        send_raw(node.http.get(node.url("/readyz"))).await.status() == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_node_reach_streams_on_the_other() {
    let (_redis, a, b) = two_nodes();
    let token = session_token("alice", "s1");
    let mut on_a = a.events(&token, "").await;
    let id = b.notify("alice", "from b").await;
    assert_eq!(on_a.next_event().await.json()["id"], id.as_str());
    b.patch(
        &format!("/notifications/{id}"),
        &user_token("alice"),
        json!({"read": true}),
    )
    .await;
    let read = on_a.next_event().await;
    assert_eq!(
        (read.event.as_str(), read.json()),
        (
            "read",
            json!({"ids": [id], "unread_count": 0, "unseen_count": 0})
        )
    );
    // the tray is shared
    assert_eq!(
        a.list(&user_token("alice"), "").await["notifications"][0]["id"],
        id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_stream_on_another_node_replaces_the_first() {
    let (_redis, a, b) = two_nodes();
    let token = session_token("alice", "s1");
    let mut on_a = a.events(&token, "").await;
    let mut on_b = b.events(&token, "").await;
    assert_eq!(on_a.next_event().await.event, "replaced");
    assert!(on_a.ends_within(Duration::from_secs(2)).await);
    b.notify("alice", "x").await;
    assert_eq!(on_b.next_event().await.event, "notification");
}

/// Two streams of one session opened at the same moment on two nodes: each node hears of the
/// other's, and exactly one of them stays (the later opened), never both ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_one_session_opened_at_once_on_two_nodes_leave_one() {
    let (_redis, a, b) = two_nodes();
    for round in 0..6 {
        let token = session_token("alice", &format!("s{round}"));
        let (mut on_a, mut on_b) = tokio::join!(a.events(&token, ""), b.events(&token, ""));
        let (a_ended, b_ended) = tokio::join!(
            on_a.try_next(Duration::from_secs(2)),
            on_b.try_next(Duration::from_secs(2))
        );
        let replaced = |e: &Option<Event>| e.as_ref().is_some_and(|e| e.event == "replaced");
        assert!(
            replaced(&a_ended) != replaced(&b_ended),
            "round {round}: exactly one stream must be replaced: {a_ended:?} / {b_ended:?}"
        );
        // the one left gets what is published next
        let id = a.notify("alice", &format!("after {round}")).await;
        let left = if replaced(&a_ended) {
            &mut on_b
        } else {
            &mut on_a
        };
        assert_eq!(
            left.next_event().await.json()["id"],
            id.as_str(),
            "round {round}"
        );
    }
}

/// A logout made as soon as Redis is back after a restart still ends the session's streams
/// on another node, which may not have subscribed again yet when it is announced: the node
/// checks its streams' sessions when they catch up. And a node is not ready (`/readyz`)
/// before its subscriptions are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_right_after_a_redis_restart_reaches_the_other_node() {
    let (mut redis, a, b) = two_nodes();
    let cookie = a.login("alice").await;
    let mut on_b = b.cookie_events(&cookie).await;
    redis.stop_saving();
    redis.start_again();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // 401: an earlier try ended the session but failed to announce it (503)
        let r = a.logout(&cookie).await;
        if matches!(r.status().as_u16(), 204 | 401) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "logout refused: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ev = on_b
        .try_next(Duration::from_secs(5))
        .await
        .expect("revoked after the restart");
    assert_eq!(ev.event, "revoked");
    assert!(on_b.ends_within(Duration::from_secs(2)).await);
    wait_ready(&b).await;
}

/// After a Redis restart a node answers `/readyz` 200 only once its subscriptions are back:
/// a stream of the same session opened on another node right then still replaces its stream
/// (the `replaced` control is not in the change log, so a catch-up cannot bring it later).
/// The node holds streams of many users, so restoring its subscriptions takes a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_ready_after_a_redis_restart_hears_a_replacing_stream() {
    let (mut redis, a, b) = two_nodes();
    let token = session_token("alice", "s1");
    let mut on_b = b.events(&token, "").await;
    let mut others = Vec::new();
    for i in 0..300 {
        others.push(b.events(&user_token(&format!("user-{i}")), "").await);
    }
    redis.stop_saving();
    redis.start_again();
    wait_ready(&a).await;
    wait_ready(&b).await;
    let _on_a = a.events(&token, "").await;
    let ev = on_b
        .try_next(Duration::from_secs(5))
        .await
        .expect("replaced after the restart");
    assert_eq!(ev.event, "replaced");
    assert!(on_b.ends_within(Duration::from_secs(2)).await);
}

/// A stream replaced while its node was cut off from Redis (stopped, and Redis restarted
/// meanwhile, so its subscription is gone and the `replaced` control never reaches it) ends
/// with `replaced` once the node is back: its catch-up finds the newer stream's presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_replaced_while_its_node_was_cut_off_ends_when_it_is_back() {
    let (mut redis, a, b) = two_nodes();
    let token = session_token("alice", "s1");
    let tab = "?tab=t1";
    let mut on_b = b.events(&token, tab).await;
    // another tab of the session is another unit: not replaced
    let mut other_tab = b.events(&token, "?tab=t2").await;
    send_signal(b.pid(), "STOP");
    redis.stop_saving();
    redis.start_again();
    wait_ready(&a).await;
    let mut on_a = a.events(&token, tab).await;
    send_signal(b.pid(), "CONT");
    let ev = on_b
        .try_next(Duration::from_secs(10))
        .await
        .expect("replaced once b is back");
    assert_eq!(ev.event, "replaced");
    assert!(on_b.ends_within(Duration::from_secs(2)).await);
    let id = a.notify("alice", "after").await;
    assert_eq!(on_a.next_event().await.json()["id"], id.as_str());
    assert_eq!(other_tab.next_event().await.json()["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_node_revokes_streams_on_the_other() {
    let (_redis, a, b) = two_nodes();
    let cookie = a.login("alice").await;
    let mut on_a = a.cookie_events(&cookie).await;
    let r = b.logout(&cookie).await;
    assert_eq!(r.status(), 204);
    let ev = on_a
        .try_next(Duration::from_secs(1))
        .await
        .expect("revoked within 1 s");
    assert_eq!(ev.event, "revoked");
    assert_eq!(
        send_raw(
            a.http
                .get(a.url("/notifications"))
                .header("cookie", &cookie)
        )
        .await
        .status(),
        401
    );
}

/// A logout whose message to the other nodes fails (here Redis refuses `SPUBLISH`) answers an
/// error and leaves the session, so the client's retry ends it and its streams everywhere.
/// Before, the session was deleted first: the retry got 401 and the other node's stream of
/// that session went on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_that_could_not_reach_the_other_nodes_can_be_retried() {
    let (redis, a, b) = two_nodes();
    let cookie = a.login("alice").await;
    let mut on_a = a.cookie_events(&cookie).await;
    acl(&redis, "-spublish");
    let failed = b.logout(&cookie).await.status();
    acl(&redis, "+spublish");
    assert!(failed.is_server_error(), "{failed}");
    let r = b.logout(&cookie).await;
    assert_eq!(r.status(), 204, "the retry ends the session");
    let ev = on_a
        .try_next(Duration::from_secs(1))
        .await
        .expect("revoked within 1 s");
    assert_eq!(ev.event, "revoked");
    let again = a
        .http
        .get(a.url("/notifications"))
        .header("cookie", &cookie);
    assert_eq!(send_raw(again).await.status(), 401);
}

/// A stream whose opening could not announce itself (here Redis refuses `SPUBLISH`) opens all
/// the same, and its announcement goes out once Redis takes it: the session's stream on the
/// other node is replaced then. Before, the opening answered 503, although an announcement
/// that ran out of time may still go out (and replace the stream of a refused opening).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opening_announces_itself_once_redis_takes_it() {
    let (redis, a, b) = two_nodes();
    let token = session_token("alice", "s");
    let mut first = a.events(&token, "").await;
    acl(&redis, "-spublish");
    let _second = b.events(&token, "").await;
    let early = first.try_next(Duration::from_millis(500)).await;
    acl(&redis, "+spublish");
    assert!(
        early.is_none(),
        "{early:?} while the announcement was refused"
    );
    let ev = first.try_next(Duration::from_secs(2)).await;
    assert_eq!(ev.expect("replaced once Redis takes it").event, "replaced");
}

/// Set an ACL rule on Redis's `default` user (the one the nodes use).
fn acl(redis: &Redis, rule: &str) {
    let mut conn = redis.conn();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg(rule)
        .query(&mut conn)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_and_resume_works_across_nodes() {
    let (_redis, a, b) = two_nodes();
    let token = session_token("alice", "s1");
    let mut on_a = a.events(&token, "?tab=t1").await;
    let _on_b = b.events(&token, "?tab=t2").await;
    let (_, presence) = a.get("/presence/alice", &service_token()).await;
    let nodes: std::collections::HashSet<_> = presence["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(nodes.len(), 2, "{presence}");
    a.notify("alice", "one").await;
    let first = on_a.next_event().await;
    drop(on_a);
    let two = b.notify("alice", "two").await;
    // resume on the other node
    let req = b
        .http
        .get(b.url("/events?tab=t1"))
        .bearer_auth(&token)
        .header("Last-Event-ID", first.id.unwrap());
    let mut resumed = b.events_with(req).await;
    assert_eq!(resumed.next_event().await.event, "ready");
    assert_eq!(resumed.next_event().await.json()["id"], two.as_str());
}

/// `--max-streams-per-user` counts a user's streams on every node: past it, a stream on
/// either node gets 429; a stream that replaces its own session's on the other node is not
/// refused; when one ends, a new one may open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_limit_counts_every_nodes_streams() {
    let redis = Redis::start();
    let limit = ["--max-streams-per-user", "2"];
    let a = Herald::start(Some(&redis.url()), &limit);
    let b = Herald::start(Some(&redis.url()), &limit);
    let s1 = session_token("alice", "s1");
    let mut on_a = a.events(&s1, "").await;
    let bearer = b.events(&user_token("alice"), "").await;
    for (node, token) in [
        (&a, user_token("alice")),
        (&b, session_token("alice", "s2")),
    ] {
        let (status, body) = send(node.http.get(node.url("/events")).bearer_auth(token)).await;
        assert_error(status, &body, 429, "too_many_streams");
    }
    // the refused streams leave no presence behind
    wait_for("two streams present", async || {
        let (_, presence) = a.get("/presence/alice", &service_token()).await;
        presence["sessions"].as_array().unwrap().len() == 2
    })
    .await;
    // s1 moves to node b: it replaces its stream on a, so the user still has two
    let mut moved = b.events(&s1, "").await;
    assert_eq!(on_a.next_event().await.event, "replaced");
    // one ends: room for another (its presence entry goes a moment after it closes)
    drop(bearer);
    wait_for("room for a stream", async || {
        let req = a
            .http
            .get(a.url("/events"))
            .bearer_auth(user_token("alice"));
        send_raw(req).await.status() == 200
    })
    .await;
    a.notify("alice", "still here").await;
    assert_eq!(moved.next_event().await.event, "notification");
}

/// Streams of one user opened at the same moment on two nodes stay within
/// `--max-streams-per-user`: each counts the entries recorded before its own, read in the same
/// step as it is written, so the last recorded sees all the others (an opening that read the
/// others' entries later, and ordered them by their nodes' clocks, let in 4 or 5 of 8 at a
/// limit of 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_limit_holds_for_streams_opened_at_once_on_two_nodes() {
    let redis = Redis::start();
    let limit = ["--max-streams-per-user", "3"];
    let a = Herald::start(Some(&redis.url()), &limit);
    let b = Herald::start(Some(&redis.url()), &limit);
    for round in 0..6 {
        let openings = (0..8).map(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            send_raw(
                node.http
                    .get(node.url("/events"))
                    .bearer_auth(user_token("alice")),
            )
        });
        let answers = futures_util::future::join_all(openings).await;
        let open: Vec<_> = answers.into_iter().filter(|r| r.status() == 200).collect();
        assert!(
            (1..=3).contains(&open.len()),
            "round {round}: {} streams open at a limit of 3",
            open.len()
        );
        drop(open);
        wait_for("every stream gone", async || {
            let (_, presence) = a.get("/presence/alice", &service_token()).await;
            presence["sessions"].as_array().unwrap().is_empty()
        })
        .await;
    }
}

/// A user at `--max-streams-per-user` with every session's stream on a node that crashes gets
/// them all back on another node at once: the crashed node's entries still count until it is
/// known dead (~20 s), but not those a newer stream of their session replaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_at_the_stream_limit_reopen_at_once_after_their_node_crashed() {
    let redis = Redis::start();
    let limit = ["--max-streams-per-user", "3"];
    let mut a = Herald::start(Some(&redis.url()), &limit);
    let b = Herald::start(Some(&redis.url()), &limit);
    let sessions: Vec<String> = (1..=3)
        .map(|n| session_token("alice", &format!("s{n}")))
        .collect();
    let mut streams = Vec::new();
    for token in &sessions {
        streams.push(a.events(token, "").await);
    }
    a.kill();
    drop(streams);
    // one after the other, as browsers come back; each at its first try
    let mut back = Vec::new();
    for token in &sessions {
        back.push(b.events(token, "").await);
    }
    // still the limit: a stream of a fourth session is refused
    let fourth = b
        .http
        .get(b.url("/events"))
        .bearer_auth(session_token("alice", "s4"));
    let (status, body) = send(fourth).await;
    assert_error(status, &body, 429, "too_many_streams");
}

/// Of two streams of one session opened one right after the other on two nodes (often within
/// the same millisecond), the later one stays and the earlier gets `replaced`, whichever
/// node's name sorts first (a tie in the millisecond went by the names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_later_stream_of_a_session_stays_whatever_the_node() {
    let redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &[]);
    let b = Herald::start(Some(&redis.url()), &[]);
    for round in 0..16 {
        let token = session_token("alice", &format!("s{round}"));
        let (first, then) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let mut earlier = first.events(&token, "").await;
        let mut later = then.events(&token, "").await;
        let ended = earlier.try_next(WAIT).await.map(|e| e.event);
        assert_eq!(ended.as_deref(), Some("replaced"), "round {round}");
        let next = later.try_next(Duration::from_millis(300)).await;
        assert!(
            next.is_none(),
            "round {round}: the later stream got {next:?}"
        );
    }
}

/// Streams stay open while Redis restarts and get what was published once it is back, by a
/// catch-up, then live again; the catch-up's deliveries count in the latency histogram (the
/// stream was open: their delay is the outage's, not the client's absence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_survive_a_redis_restart_and_catch_up() {
    let mut redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &[]);
    let mut sse = a.events(&user_token("alice"), "").await;
    a.notify("alice", "before").await;
    assert_eq!(sse.next_event().await.event, "notification");
    redis.restart();
    // publishing works again once Redis is back; the open stream receives it
    let id = a.notify_when_back("alice", "after").await;
    let ev = sse.expect("notification").await;
    assert_eq!(ev.json()["id"], id.as_str());
    // live delivery, not only the catch-up, works again
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = a.notify("alice", "later").await;
    let ev = sse
        .try_next(Duration::from_secs(5))
        .await
        .expect("live delivery after the restart");
    assert_eq!(ev.json()["id"], later.as_str());
    // one restart, one recovered loss
    assert_eq!(a.metric("herald_broker_reconnects_total").await, 1.0);
    // every delivery to the open stream is in the latency, also one the catch-up brought
    // (published before the broker had subscribed again)
    let delivered = a.metric("herald_events_delivered_total").await;
    let timed = a.metric("herald_delivery_latency_seconds_count").await;
    assert_eq!((delivered, timed), (3.0, 3.0));
}

/// A publish to many users (one announcement for all of them on one Redis server) reaches
/// each user's streams on every node, in order with the user's later changes, and again
/// live after Redis restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_publish_reaches_every_node_also_after_a_redis_restart() {
    let (mut redis, a, b) = two_nodes();
    let users = ["alice", "bob", "c\"arol", "dave"]; // dave has no stream
    let mut streams = vec![
        a.events(&user_token(users[0]), "").await,
        b.events(&user_token(users[1]), "").await,
        b.events(&user_token(users[2]), "").await,
    ];
    let group = async |title: &str| {
        let body = json!({"users": users, "notification": {"title": title}});
        let (status, body) = a.publish(body).await;
        (status, body)
    };
    let (status, first) = group("first").await;
    assert_eq!(status, 202, "{first}");
    let alice_id = first["ids"]["alice"].as_str().unwrap().to_owned();
    a.patch(
        &format!("/notifications/{alice_id}"),
        &user_token("alice"),
        json!({"read": true}),
    )
    .await;
    for (user, sse) in users.iter().zip(&mut streams) {
        let ev = sse.expect("notification").await;
        let n = ev.json();
        assert_eq!((&n["id"], &n["user"]), (&first["ids"][user], &json!(user)));
        assert_eq!(
            (&n["unread_count"], &n["title"]),
            (&json!(1), &json!("first"))
        );
    }
    // alice's read (her channel) comes after the group's notification (the batch channel)
    let read = streams[0].expect("read").await;
    assert_eq!(read.json()["ids"], json!([alice_id]));

    redis.restart();
    a.notify_when_back("dave", "after").await;
    let (status, after) = group("after").await;
    assert_eq!(status, 202, "{after}");
    for (user, sse) in users.iter().zip(&mut streams) {
        let ev = sse.expect("notification").await; // caught up or live
        assert_eq!(ev.json()["id"], after["ids"][user], "{user}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, again) = group("again").await;
    assert_eq!(status, 202, "{again}");
    for (user, sse) in users.iter().zip(&mut streams) {
        let ev = sse
            .try_next(Duration::from_secs(5))
            .await
            .expect("live delivery after the restart");
        assert_eq!(ev.json()["id"], again["ids"][user], "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_resets_open_streams() {
    let mut redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &[]);
    let mut sse = a.events(&user_token("alice"), "").await;
    let before = sse.ready.as_ref().unwrap().position();
    for title in ["one", "two", "three"] {
        a.notify("alice", title).await;
        assert_eq!(sse.next_event().await.event, "notification");
    }
    redis.restart_empty();
    a.notify_when_back("alice", "after the loss").await;
    // the change log restarted with a new epoch: the client is told to refetch
    let reset = sse.expect("reset").await;
    let (epoch, head) = reset.position();
    assert_ne!(epoch, before.0, "a log that was lost gets a new epoch");
    let id = a.notify_when_back("alice", "and then").await;
    // "after the loss" comes first when the reset was sent before it was stored; every change
    // after the reset carries the new epoch and numbering
    loop {
        let ev = sse.expect("notification").await;
        assert_eq!(ev.position().0, epoch, "{ev:?}");
        assert!(ev.position().1 > head, "{ev:?}");
        if ev.json()["id"] == id.as_str() {
            break;
        }
        assert_eq!(ev.json()["title"], "after the loss", "{ev:?}");
    }
    // the stream's presence entry was lost with the data: the node records it again
    wait_for("alice online again", async || {
        let (_, presence) = a.get("/presence/alice", &service_token()).await;
        presence["online"] == true
    })
    .await;
}

/// A Redis that lost its data lost the browser sessions too: the node puts back those its
/// streams hold (no logout ended them: a logout leaves a mark until the session's end), so
/// the stream stays open and the cookie goes on working, until a logout ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_keeps_the_sessions_of_open_streams() {
    let mut redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &[]);
    let cookie = a.login("alice").await;
    let mut sse = a.cookie_events(&cookie).await;
    a.notify("alice", "one").await;
    assert_eq!(sse.next_event().await.event, "notification");
    redis.restart_empty();
    let id = a.notify_when_back("alice", "after the loss").await;
    assert_eq!(sse.expect("reset").await.event, "reset");
    loop {
        let ev = sse.expect("notification").await;
        if ev.json()["id"] == id.as_str() {
            break;
        }
    }
    wait_for("the cookie works again", async || {
        let list = a
            .http
            .get(a.url("/notifications"))
            .header("cookie", &cookie);
        let (status, page) = send(list).await;
        status == 200 && ids(&page) == [id.clone()]
    })
    .await;
    assert_eq!(a.logout(&cookie).await.status(), 204);
    assert_eq!(sse.expect("revoked").await.event, "revoked");
    let list = a
        .http
        .get(a.url("/notifications"))
        .header("cookie", &cookie);
    assert_eq!(send_raw(list).await.status(), 401);
}

/// A stream of a token's `sid` checks, as it opens, when that `sid` was logged out (the mark
/// `DELETE /session` leaves; written here by hand): a logout at or after its opening (one
/// that ran as it opened, whose announcement it missed) ends it at once; an earlier one does
/// not, since the token stays valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_session_logged_out_as_its_stream_opens_ends_it() {
    use sha2::{Digest, Sha256};
    let redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &[]);
    let mark = |sid: &str, at: &str| {
        let digest: String = Sha256::digest(sid)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = format!("herald:{{u:alice}}:sid-ended:{digest}");
        let _: () = ::redis::cmd("SET")
            .arg(key)
            .arg(at)
            .arg("EX")
            .arg(600)
            .query(&mut redis.conn())
            .unwrap();
    };
    mark("later", "2099-01-01T00:00:00.000000Z");
    mark("earlier", "2000-01-01T00:00:00.000000Z");
    let mut ended = a.events(&session_token("alice", "later"), "").await;
    assert_eq!(ended.expect("revoked").await.event, "revoked");
    let mut stays = a.events(&session_token("alice", "earlier"), "").await;
    let id = a
        .notify("alice", "to the stream opened after its logout")
        .await;
    assert_eq!(stays.expect("notification").await.json()["id"], id.as_str());
}

/// Redis restarted from a snapshot older than its last writes: the open stream is reset, and
/// the log takes a new epoch, so a position handed out after the snapshot resets too, even
/// once new changes have passed its seq (they are other changes under the same numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_back_from_an_older_snapshot_resets_later_positions() {
    let mut redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &[]);
    let token = user_token("alice");
    let mut sse = a.events(&token, "").await;
    for title in ["one", "two"] {
        a.notify("alice", title).await;
        sse.expect("notification").await;
    }
    let _: () = ::redis::cmd("SAVE").query(&mut redis.conn()).unwrap();
    let mut lost = None;
    for title in ["three", "four"] {
        a.notify("alice", title).await;
        lost = Some(sse.expect("notification").await.position());
    }
    let (old_epoch, old_seq) = lost.unwrap();
    redis.restart_from_last_save();
    let reset = sse.expect("reset").await;
    let (epoch, head) = reset.position();
    assert_ne!(epoch, old_epoch, "{reset:?}");
    assert_eq!(head, 2, "{reset:?}");
    let mut ids = Vec::new();
    for title in ["five", "six", "seven"] {
        ids.push(a.notify_when_back("alice", title).await);
    }
    for id in &ids {
        let ev = sse.expect("notification").await;
        assert_eq!(ev.json()["id"], id.as_str());
        assert_eq!(ev.position().0, epoch, "{ev:?}");
    }
    // a client that saw "four" before the crash comes back after "seven" (seq 5): reset, not
    // "seven" alone
    let last = format!("{old_epoch}.{old_seq}");
    let mut back = a.events(&token, &format!("?last_event_id={last}")).await;
    let ev = back.next_event().await;
    assert_eq!(ev.event, "reset", "{ev:?}");
    assert_eq!(ev.position(), (epoch, 5));
}

/// The log went back under an open stream while Redis ran on (a Redis Cluster primary that
/// hung until its replica took over ran writes the new primary never had, and this node's
/// stream delivered their announcements: simulated here by taking the last changes out of
/// the log). The next change then arrives at a position the stream already delivered, with
/// another commit time, or before it although committed later: the stream resets instead of
/// skipping it as delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_at_a_position_already_delivered_resets_the_stream() {
    let redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &[]);
    let mut sse = a.events(&user_token("alice"), "").await;
    a.notify("alice", "kept").await;
    sse.expect("notification").await;
    let take_back = |changes: usize| {
        let mut c = redis.conn();
        for _ in 0..changes {
            let _: () = ::redis::cmd("RPOP")
                .arg("herald:{u:alice}:changes")
                .query(&mut c)
                .unwrap();
            let _: () = ::redis::cmd("DECR")
                .arg("herald:{u:alice}:seq")
                .query(&mut c)
                .unwrap();
        }
    };
    for (dropped, why) in [(1, "the same position"), (2, "an earlier position")] {
        let mut last = None;
        for i in 0..dropped {
            a.notify("alice", &format!("dropped {i}")).await;
            last = Some(sse.expect("notification").await.position());
        }
        take_back(dropped);
        tokio::time::sleep(Duration::from_millis(5)).await;
        a.notify("alice", "later").await;
        let ev = sse.next_event().await;
        assert_eq!(ev.event, "reset", "{why}: {ev:?}");
        assert_ne!(ev.position().0, last.unwrap().0, "{why}: a new epoch");
    }
}

/// As above, with the other change committed in the same millisecond as the one delivered
/// (a hung primary and its promoted replica each took one of several publishes sent at once):
/// its data tells it apart, live and in the catch-up, and the stream resets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_change_at_a_delivered_position_in_the_same_millisecond_resets_the_stream() {
    let redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &[]);
    let mut sse = a.events(&user_token("alice"), "").await;
    a.notify("alice", "kept").await;
    sse.expect("notification").await;
    a.notify("alice", "lost").await;
    let lost = sse.expect("notification").await.position();
    // The log as the new primary has it: "lost" never was, another change took its seq, at
    // its commit ms; announced as the scripts do.
    let mut c = redis.conn();
    let entry: String = ::redis::cmd("RPOP")
        .arg("herald:{u:alice}:changes")
        .query(&mut c)
        .unwrap();
    let other = entry.replacen(r#""title":"lost""#, r#""title":"taken""#, 1);
    assert_ne!(other, entry);
    let _: () = ::redis::cmd("RPUSH")
        .arg("herald:{u:alice}:changes")
        .arg(&other)
        .query(&mut c)
        .unwrap();
    let (_, logged) = other.split_once('\t').unwrap();
    let _: () = ::redis::cmd("SPUBLISH")
        .arg("herald:{u:alice}:ch")
        .arg(format!("c\t{}\t{}\t{logged}", lost.0, lost.1))
        .query(&mut c)
        .unwrap();
    let ev = sse.next_event().await;
    assert_eq!(ev.event, "reset", "{ev:?}");
    assert_ne!(ev.position().0, lost.0, "a new epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_presence_disappears_within_30_s() {
    a_crashed_nodes_presence_disappears(Mode::Redis).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_presence_disappears_within_30_s_on_a_cluster() {
    a_crashed_nodes_presence_disappears(Mode::Cluster).await
}

/// A node killed with a stream open: within 30 s the other node's presence says offline.
async fn a_crashed_nodes_presence_disappears(mode: Mode) {
    let engine = Engine::start(mode);
    let mut a = Herald::start(Some(&engine.url), &[]);
    let b = Herald::start(Some(&engine.url), &[]);
    let _stream = a.events(&session_token("alice", "s1"), "").await;
    let (_, presence) = b.get("/presence/alice", &service_token()).await;
    assert_eq!(presence["online"], true);
    a.kill();
    let killed = std::time::Instant::now();
    loop {
        let (_, presence) = b.get("/presence/alice", &service_token()).await;
        if presence["online"] == false {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "still online: {presence}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A crashed node's presence entries leave Redis also for a user whose presence nobody reads:
/// the cleaner (here every 5 s: every tenth round of a 500 ms period) sweeps them once the
/// node's alive key has expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_presence_entries_are_swept_from_redis() {
    let redis = Redis::start();
    // the cleaner's lock is b's from its first round: b starts first, and a's period is 60 s
    let b = Herald::start(Some(&redis.url()), &["--retention", "2s"]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut a = Herald::start(Some(&redis.url()), &[]);
    let _stream = a.events(&user_token("dora"), "").await;
    let key = "herald:{u:dora}:presence";
    let exists = || -> bool {
        let n: u64 = ::redis::cmd("EXISTS")
            .arg(key)
            .query(&mut redis.conn())
            .unwrap();
        n == 1
    };
    assert!(exists());
    a.kill();
    let killed = std::time::Instant::now();
    while exists() {
        assert!(
            killed.elapsed() < Duration::from_secs(45),
            "a dead node's presence entry is still in Redis"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(b.get("/healthz", "").await.0, 200);
}

/// A node killed and started again at once under the same `--node-id` keeps its name alive,
/// but the streams of its previous process are not listed: each process has its own run id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_its_name_drops_its_old_presence() {
    let redis = Redis::start();
    let named = ["--node-id", "n-a"];
    let mut a = Herald::start(Some(&redis.url()), &named);
    let b = Herald::start(Some(&redis.url()), &[]);
    let _stream = a.events(&session_token("alice", "s1"), "").await;
    let (_, presence) = b.get("/presence/alice", &service_token()).await;
    assert_eq!(presence["sessions"][0]["node"], "n-a", "{presence}");
    a.kill();
    let again = Herald::start(Some(&redis.url()), &named);
    let _live = again.events(&session_token("bob", "s2"), "").await;
    wait_for("the killed process's stream to go", async || {
        let (_, presence) = b.get("/presence/alice", &service_token()).await;
        presence == json!({"online": false, "sessions": []})
    })
    .await;
    let (_, presence) = b.get("/presence/bob", &service_token()).await;
    assert_eq!(presence["sessions"][0]["node"], "n-a", "{presence}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_by_sigterm_leaves_no_presence_behind() {
    let (redis, mut a, b) = two_nodes();
    let _stream = a.events(&session_token("alice", "s1"), "").await;
    // a thousand streams: their entries are deleted before the process exits, not left in Redis
    let mut others = Vec::new();
    for i in 0..1000 {
        others.push(a.events(&user_token(&format!("u{i}")), "").await);
    }
    assert!(a.terminate().is_some_and(|s| s.success()));
    // gone at once, not after the 20 s alive-key expiry a crash needs
    let (_, presence) = b.get("/presence/alice", &service_token()).await;
    assert_eq!(presence, json!({"online": false, "sessions": []}));
    let left: Vec<String> = ::redis::cmd("KEYS")
        .arg("*:presence")
        .query(&mut redis.conn())
        .unwrap();
    assert!(
        left.is_empty(),
        "{} presence keys left: {left:?}",
        left.len()
    );
}

/// `rediss://`: a node talks to a Redis that only speaks TLS, verifying its certificate
/// against the system's roots (here a test CA named by `SSL_CERT_FILE`), and two such nodes
/// behave as one; a node that does not trust the certificate refuses to start (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_connect_over_tls_and_verify_the_certificate() {
    let dir = TempDir::new("tls");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir.0)
            .output()
            .expect("openssl must be installed for the TLS test");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let subject = |cn| format!("/CN={cn}");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        &subject("herald test CA"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "srv.csr",
        "-subj",
        &subject("127.0.0.1"),
    ]);
    std::fs::write(dir.0.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
    let port = free_port();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem"])
        .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(&dir.0)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    wait_for(
        "redis-server did not listen for TLS (built without TLS?)",
        async || {
            assert!(
                server.try_wait().unwrap().is_none(),
                "redis-server exited: built without TLS?"
            );
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        },
    )
    .await;
    let _server = Kill(server);
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = dir.0.join("ca.pem");
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        SECRET,
        "--redis-url",
        &url,
    ]
    .map(String::from)
    .to_vec();
    let env = [("SSL_CERT_FILE", ca.to_str().unwrap())];
    let (a, b) = (
        Herald::spawn_env(&args, &env),
        Herald::spawn_env(&args, &env),
    );
    let mut sse = b.events(&user_token("alice"), "").await;
    let id = a.notify("alice", "over TLS").await;
    assert_eq!(sse.next_event().await.json()["id"], id.as_str());
    assert_eq!(b.tray_ids("alice", "").await, vec![id]);
    // without the CA, the certificate is refused at start-up
    let out = std::process::Command::new(bin())
        .args(&args)
        .env("SSL_CERT_FILE", dir.0.join("cert.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
}

/// Subscribers of alice's channel on Redis (this node's broker connection, or none).
fn channel_subscribers(redis: &Redis) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg("herald:{u:alice}:ch")
        .query(&mut redis.conn())
        .unwrap();
    n
}

/// A user's channel stays subscribed for a while after the user's last stream on a node
/// ended, so a stream that comes back (a reload, a reconnect storm) finds it subscribed and
/// gets what is published; some 10 s after the last stream ended it is unsubscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_lingers_after_the_last_stream_then_is_unsubscribed() {
    let redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    let token = user_token("alice");
    let first = h.events(&token, "").await;
    assert_eq!(channel_subscribers(&redis), 1);
    drop(first);
    wait_for("the stream ended", async || {
        h.metric("herald_streams_open").await == 0.0
    })
    .await;
    assert_eq!(channel_subscribers(&redis), 1, "lingering");

    let mut back = h.events(&token, "").await;
    let id = h.notify("alice", "while back").await;
    assert_eq!(back.next_event().await.json()["id"], id.as_str());
    drop(back);
    wait_for("the stream ended", async || {
        h.metric("herald_streams_open").await == 0.0
    })
    .await;
    let ended = std::time::Instant::now();
    while channel_subscribers(&redis) > 0 {
        assert!(
            ended.elapsed() < Duration::from_secs(20),
            "never unsubscribed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ended.elapsed() >= Duration::from_secs(9),
        "{:?}",
        ended.elapsed()
    );
}

/// Two running processes under one `--node-id` would take each other's stream controls and
/// presence: a second one is refused at start-up (exit 2, one line naming the flag), while a
/// node restarted under its name after a crash (its alive key left in Redis) starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_in_use_is_refused_and_a_crashed_nodes_is_not() {
    let redis = Redis::start();
    let mut a = Herald::start(Some(&redis.url()), &["--node-id", "web-1"]);
    let mut second = std::process::Command::new(bin())
        .args(["--jwt-secret", SECRET, "--listen", "127.0.0.1:0"])
        .args(["--redis-url", &redis.url(), "--node-id", "web-1"])
        .env("HERALD_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: one that started would serve until killed.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while second.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if second.try_wait().unwrap().is_none() {
        second.kill().unwrap();
    }
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--node-id"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // the first one serves on
    wait_ready(&a).await;
    // killed just after a beat, so its key looks alive for ~7 s more
    beat_aged(&redis, "web-1", 0..500).await;
    a.kill();
    // Started again on its port, it watches the crashed one's key until its next beat is
    // overdue; its port refuses connections meanwhile (they used to wait unanswered,
    // /healthz too, and a balancer kept sending them there), then it serves.
    let addr = addr_of(&a.base);
    let args: Vec<String> = ["--listen", &addr, "--jwt-secret", SECRET]
        .into_iter()
        .chain(["--redis-url", &redis.url(), "--node-id", "web-1"])
        .map(str::to_owned)
        .collect();
    let starting = std::thread::spawn(move || Herald::spawn(&args));
    let watching = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < watching {
        assert!(
            std::net::TcpStream::connect(&addr).is_err(),
            "a connection was taken before the node serves"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = starting.join().unwrap();
    wait_ready(&again).await;
}

/// A node restarted under its name after a crash watches the old process's key only until
/// that process's next beat is overdue, counted from its last beat (the key's lifetime left),
/// not for a whole beat period from the restart: killed late in a period, it serves again
/// within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_crashed_late_in_its_beat_period_restarts_sooner() {
    let redis = Redis::start();
    let mut a = Herald::start(Some(&redis.url()), &["--node-id", "web-1"]);
    wait_ready(&a).await;
    // killed ~4.5 s into its 5 s beat period: its next beat is overdue ~2.5 s later
    beat_aged(&redis, "web-1", 4_500..4_900).await;
    a.kill();
    let killed = std::time::Instant::now();
    let again = Herald::start(Some(&redis.url()), &["--node-id", "web-1"]);
    wait_ready(&again).await;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "served {:?} after the crash (a whole watch is 7 s)",
        killed.elapsed()
    );
}

/// Wait until `node`'s last beat is `age_ms` old (its alive key set `age_ms` ago).
async fn beat_aged(redis: &Redis, node: &str, age_ms: std::ops::Range<i64>) {
    const ALIVE_MS: i64 = 20_000;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left: i64 = ::redis::cmd("PTTL")
            .arg(format!("herald:node:{node}"))
            .query(&mut redis.conn())
            .unwrap();
        if age_ms.contains(&(ALIVE_MS - left)) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no beat of {node}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Should two processes run under one name anyway (a Redis that lost the alive key let the
/// second start), a logout on one still ends the session's stream on the other: a node skips
/// only the controls its own process sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_under_one_name_still_hear_each_others_logouts() {
    let redis = Redis::start();
    let a = Herald::start(Some(&redis.url()), &["--node-id", "web-1"]);
    // a beats no more while stopped; its alive key goes as if Redis had lost it
    send_signal(a.pid(), "STOP");
    let _: () = redis::Commands::del(&mut redis.conn(), "herald:node:web-1").unwrap();
    let b = Herald::start(Some(&redis.url()), &["--node-id", "web-1"]);
    send_signal(a.pid(), "CONT");
    let cookie = a.login("alice").await;
    let mut on_b = b.cookie_events(&cookie).await;
    assert_eq!(a.logout(&cookie).await.status(), 204);
    let ev = on_b
        .try_next(Duration::from_secs(1))
        .await
        .expect("revoked within 1 s");
    assert_eq!(ev.event, "revoked");
}
