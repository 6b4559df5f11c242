//! Redis outages: while Redis is stopped or black-holed (a network path that accepts
//! connections and forwards nothing), every request is answered within a second (503
//! `unavailable` where Redis is needed), nothing answered 503 is stored later, open streams
//! stay open and catch up when Redis is back, and SIGTERM still ends the node in time. And
//! subscriptions Redis ends without a word are noticed and made again.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common::*;

/// What the spec promises is 1 s; the margin absorbs a loaded test machine.
const PROMPT: Duration = Duration::from_millis(1500);

/// A TCP proxy in front of redis-server that can turn into a black hole: it keeps every
/// connection open (and accepts new ones) but moves no byte either way, holding what was
/// sent until it forwards again, as a network partition that heals would. Stops on drop.
struct Proxy {
    listening: Listening,
    hole: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let (hole, mode) = watch::channel(false);
        let listening = Listening::start(move |client| relay(client, upstream, mode.clone())).await;
        Proxy { listening, hole }
    }

    fn url(&self) -> String {
        self.listening.url()
    }

    fn black_hole(&self, on: bool) {
        self.hole.send_replace(on);
    }
}

/// A proxy's listener on a free loopback port: each connection goes to its own relay task;
/// dropping it stops the accept loop and every relay.
struct Listening {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Listening {
    async fn start<R, F>(relay: R) -> Listening
    where
        R: Fn(TcpStream) -> F + Send + 'static,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                tasks.spawn(relay(client));
            }
        });
        Listening { port, task }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every relay.
        self.task.abort();
    }
}

/// One proxied connection; it reaches Redis only once the path forwards.
async fn relay(client: TcpStream, upstream: u16, mut mode: watch::Receiver<bool>) {
    if mode.wait_for(|hole| !*hole).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, mode.clone()),
        pump(server_read, client_write, mode),
    );
}

/// Copy bytes one way, reading and writing only while the path forwards.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if mode.wait_for(|hole| !*hole).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = mode.wait_for(|hole| *hole) => continue,
        };
        if mode.wait_for(|hole| !*hole).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// A TCP proxy in front of redis-server whose [`Swapper::swap`] makes Redis end the
/// subscriptions of every proxied connection that made one, without a word to the client:
/// the proxy closes its own connection to Redis and opens another, replaying the client's
/// first write (its handshake) and swallowing the answer, as a client that replaced a
/// connection under its user would. Stops on drop.
struct Swapper {
    listening: Listening,
    swaps: watch::Sender<u64>,
}

impl Swapper {
    async fn start(upstream: u16) -> Swapper {
        let (swaps, rx) = watch::channel(0);
        let relay = move |client| swapped_relay(client, upstream, rx.clone());
        let listening = Listening::start(relay).await;
        Swapper { listening, swaps }
    }

    fn url(&self) -> String {
        self.listening.url()
    }

    fn swap(&self) {
        self.swaps.send_modify(|n| *n += 1);
    }
}

/// One connection of a [`Swapper`]; returns when either side closes.
async fn swapped_relay(client: TcpStream, upstream: u16, mut swaps: watch::Receiver<u64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let Ok(n @ 1..) = client_read.read(&mut up).await else {
        return;
    };
    let handshake = up[..n].to_vec();
    let mut subscribed = false;
    swaps.borrow_and_update();
    loop {
        let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
            return;
        };
        if server.write_all(&handshake).await.is_err() {
            return;
        }
        if subscribed {
            // The new connection's answer to the handshake is not the client's to read: all
            // of it, that is what arrives until it has been quiet for a moment.
            let first = tokio::time::timeout(WAIT, server.read(&mut down)).await;
            if !matches!(first, Ok(Ok(1..))) {
                return;
            }
            let quiet = Duration::from_millis(100);
            while let Ok(Ok(1..)) = tokio::time::timeout(quiet, server.read(&mut down)).await {}
        }
        loop {
            tokio::select! {
                read = client_read.read(&mut up) => match read {
                    Ok(n @ 1..) => {
                        subscribed |= up[..n].windows(10).any(|w| w == b"SSUBSCRIBE");
                        if server.write_all(&up[..n]).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                },
                read = server.read(&mut down) => match read {
                    Ok(n @ 1..) => {
                        if client_write.write_all(&down[..n]).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                },
                changed = swaps.changed() => match changed {
                    Ok(()) if subscribed => break,
                    Ok(()) => {}
                    Err(_) => return,
                },
            }
        }
    }
}

/// Send `req` and time its answer; a request that gets no answer within 10 s fails the test.
async fn timed(req: reqwest::RequestBuilder) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("an answer, not a hang")
        .expect("a response");
    let elapsed = started.elapsed();
    let (status, body) = tokio::time::timeout(WAIT, status_json(response))
        .await
        .expect("the body");
    (status, body, elapsed)
}

/// Every endpoint answers within [`PROMPT`]: 503 `unavailable` where Redis is needed.
/// `cookie` is a session made before the outage.
async fn assert_prompt_answers(h: &Herald, cookie: &str, label: &str) {
    let user = user_token("alice");
    let service = service_token();
    let origin = h.base.clone();
    let any_id = "01J00000000000000000000000";
    let requests: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("GET /healthz", h.http.get(h.url("/healthz")), 200),
        ("GET /readyz #1", h.http.get(h.url("/readyz")), 503),
        ("GET /readyz #2", h.http.get(h.url("/readyz")), 503),
        ("GET /readyz #3", h.http.get(h.url("/readyz")), 503),
        ("GET /readyz #4", h.http.get(h.url("/readyz")), 503),
        (
            "GET /notifications",
            h.http.get(h.url("/notifications")).bearer_auth(&user),
            503,
        ),
        (
            "PATCH /notifications/{id}",
            h.http
                .patch(h.url(&format!("/notifications/{any_id}")))
                .bearer_auth(&user)
                .json(&json!({"read": true})),
            503,
        ),
        (
            "PATCH /notifications",
            h.http
                .patch(h.url("/notifications"))
                .bearer_auth(&user)
                .json(&json!({"all": true, "read": true})),
            503,
        ),
        (
            "GET /notifications (filtered)",
            h.http
                .get(h.url("/notifications?archived=only&snoozed=exclude&unseen=true&category=a,b"))
                .bearer_auth(&user),
            503,
        ),
        (
            "GET /notifications/counts",
            h.http
                .get(h.url("/notifications/counts"))
                .bearer_auth(&user),
            503,
        ),
        (
            "PATCH /notifications/{id} (seen)",
            h.http
                .patch(h.url(&format!("/notifications/{any_id}")))
                .bearer_auth(&user)
                .json(&json!({"seen": true})),
            503,
        ),
        (
            "PATCH /notifications/{id} (snoozed_until)",
            h.http
                .patch(h.url(&format!("/notifications/{any_id}")))
                .bearer_auth(&user)
                .json(&json!({"snoozed_until": in_secs(3600)})),
            503,
        ),
        (
            "PATCH /notifications (all archived)",
            h.http
                .patch(h.url("/notifications"))
                .bearer_auth(&user)
                .json(&json!({"all": true, "archived": true})),
            503,
        ),
        (
            "POST /notifications/{id}/actions/{action}",
            h.http
                .post(h.url(&format!("/notifications/{any_id}/actions/ok")))
                .bearer_auth(&user),
            503,
        ),
        (
            "GET /preferences",
            h.http.get(h.url("/preferences")).bearer_auth(&user),
            503,
        ),
        (
            "PUT /preferences/categories/{category}",
            h.http
                .put(h.url("/preferences/categories/billing"))
                .bearer_auth(&user)
                .json(&json!({"muted": true})),
            503,
        ),
        (
            "POST /session",
            h.http.post(h.url("/session")).bearer_auth(&user),
            503,
        ),
        (
            "GET /auth (cookie)",
            h.http.get(h.url("/auth")).header("cookie", cookie),
            503,
        ),
        (
            "GET /auth (Bearer)",
            h.http.get(h.url("/auth")).bearer_auth(&user),
            204,
        ),
        (
            "DELETE /session (cookie)",
            h.http
                .delete(h.url("/session"))
                .header("cookie", cookie)
                .header("origin", &origin),
            503,
        ),
        (
            "POST /publish",
            h.http
                .post(h.url("/publish"))
                .bearer_auth(&service)
                .json(&json!({"users": ["bob"], "notification": {"title": "answered 503"}})),
            503,
        ),
        (
            "PUT /groups/g/members",
            h.http
                .put(h.url("/groups/g/members"))
                .bearer_auth(&service)
                .json(&json!({"users": ["bob"]})),
            503,
        ),
        (
            "GET /groups/g/members",
            h.http.get(h.url("/groups/g/members")).bearer_auth(&service),
            503,
        ),
        (
            "DELETE /groups/g/members/bob",
            h.http
                .delete(h.url("/groups/g/members/bob"))
                .bearer_auth(&service),
            503,
        ),
        (
            "GET /presence/alice",
            h.http.get(h.url("/presence/alice")).bearer_auth(&service),
            503,
        ),
        (
            "GET /events",
            h.http
                .get(h.url("/events"))
                .bearer_auth(user_token("carol")),
            503,
        ),
    ];
    for (name, req, want) in requests {
        let (status, body, elapsed) = timed(req).await;
        println!("{label}: {name} -> {status} in {elapsed:?}");
        if want == 503 {
            assert_error(status, &body, 503, "unavailable");
        } else {
            assert_eq!(status, want, "{name}: {body}");
        }
        assert!(elapsed < PROMPT, "{label}: {name} took {elapsed:?}");
    }
}

/// The titles in `user`'s tray.
async fn tray_titles(h: &Herald, user: &str) -> Vec<String> {
    titles(&h.list(&user_token(user), "?limit=200").await)
}

/// How often Redis answered with a `LATE` error (a tray script refused past its deadline).
fn late_refusals(port: u16) -> u64 {
    Cluster::cli(port, &["info", "errorstats"])
        .lines()
        .find_map(|l| l.strip_prefix("errorstat_LATE:count="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Wait until `/readyz` says 503 (the node has noticed the outage).
async fn wait_unready(h: &Herald) {
    wait_for("readyz stayed 200", async || {
        timed(h.http.get(h.url("/readyz"))).await.0 == 503
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_gets_prompt_503s_and_nothing_is_stored_late() {
    let mut redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &[]);
    let cookie = h.login("alice").await;
    let session = session_token("alice", "s");
    let mut sse = h.events(&session, "").await;
    h.notify("alice", "before").await;
    assert_eq!(sse.expect("notification").await.json()["title"], "before");

    redis.stop_saving();
    let (status, body, elapsed) = timed(
        h.http
            .post(h.url("/publish"))
            .bearer_auth(service_token())
            .json(&json!({"users": ["alice"], "notification": {"title": "answered 503"}})),
    )
    .await;
    println!("stopped: first POST /publish -> {status} in {elapsed:?}");
    assert_error(status, &body, 503, "unavailable");
    assert!(elapsed < PROMPT, "{elapsed:?}");
    assert_prompt_answers(&h, &cookie, "stopped").await;
    // a stream of the same session refused meanwhile ends none: the open one stays
    let (status, _, _) = timed(h.http.get(h.url("/events")).bearer_auth(&session)).await;
    assert_eq!(status, 503);

    redis.start_again();
    let after = h.notify_when_back("alice", "after").await;
    let ev = sse.expect("notification").await;
    assert_eq!(ev.json()["id"], after.as_str(), "the open stream gets it");
    // late effects, if any, would show by now
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tray = tray_titles(&h, "alice").await;
    assert_eq!(tray, ["after", "before"], "nothing answered 503 was stored");
    assert_eq!(send_raw(h.http.get(h.url("/readyz"))).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_redis_gets_prompt_503s_and_nothing_is_stored_late() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    // `a` reaches Redis through the proxy; `b` directly, so it keeps publishing meanwhile
    let a = Herald::start(Some(&proxy.url()), &[]);
    let b = Herald::start(Some(&redis.url()), &[]);
    let cookie = a.login("alice").await;
    let mut sse = a.events(&user_token("alice"), "").await;
    let before = a.notify("alice", "before").await;
    assert_eq!(sse.expect("notification").await.json()["title"], "before");
    // a no-op mark, so that Redis knows the script (a NOSCRIPT would hide what we test)
    let path = format!("/notifications/{before}");
    let (status, _) = a
        .patch(&path, &user_token("alice"), json!({"read": false}))
        .await;
    assert_eq!(status, 200);

    proxy.black_hole(true);
    // sent at once, before the node has noticed: both tray writes go into the hole
    let publish = a
        .http
        .post(a.url("/publish"))
        .bearer_auth(service_token())
        .json(&json!({"users": ["alice"], "notification": {"title": "answered 503"}}));
    let mark = a
        .http
        .patch(a.url(&path))
        .bearer_auth(user_token("alice"))
        .json(&json!({"read": true}));
    // and a stream, which needs the broker's link and the store's one after the other
    let open = a
        .http
        .get(a.url("/events"))
        .bearer_auth(user_token("carol"));
    let (published, marked, opened) =
        futures_util::future::join3(timed(publish), timed(mark), timed(open)).await;
    let (status, body, elapsed) = opened;
    println!("black hole: first GET /events -> {status} in {elapsed:?}");
    assert_error(status, &body, 503, "unavailable");
    assert!(elapsed < PROMPT, "GET /events: {elapsed:?}");
    let mut into_the_hole = 0;
    for (name, (status, body, elapsed)) in [
        ("POST /publish", published),
        ("PATCH /notifications/{id}", marked),
    ] {
        println!("black hole: first {name} -> {status} in {elapsed:?}");
        assert_error(status, &body, 503, "unavailable");
        assert!(elapsed < PROMPT, "{name}: {elapsed:?}");
        // either refused before it was sent, or answered only once Redis would refuse it
        // (600 ms after sending, on Redis's clock)
        let sent = elapsed >= Duration::from_millis(100);
        assert!(
            !sent || elapsed >= Duration::from_millis(600),
            "{name}: {elapsed:?}"
        );
        into_the_hole += usize::from(sent);
    }
    assert_prompt_answers(&a, &cookie, "black hole").await;
    let during = b.notify("alice", "during").await;
    assert!(
        sse.try_next(Duration::from_millis(300)).await.is_none(),
        "nothing reaches a stream through a black hole"
    );

    proxy.black_hole(false);
    // the stream is still open and catches up with what was published meanwhile
    let ev = sse.expect("notification").await;
    assert_eq!(ev.json()["id"], during.as_str(), "caught up");
    let after = a.notify_when_back("alice", "after").await;
    let ev = sse.expect("notification").await;
    assert_eq!(ev.json()["id"], after.as_str(), "live again");
    // the bytes held in the hole reach Redis now; the tray write among them must not commit
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tray = tray_titles(&b, "alice").await;
    assert_eq!(
        tray,
        ["after", "during", "before"],
        "nothing answered 503 was stored"
    );
    let page = b.list(&user_token("alice"), "").await;
    assert_eq!(
        page["notifications"][2]["read_at"],
        Value::Null,
        "still unread"
    );
    assert_eq!(page["unread_count"], 3);
    let refused = late_refusals(redis.port) as usize;
    println!(
        "black hole: {into_the_hole} tray writes sent into the hole, {refused} refused as LATE"
    );
    assert!(
        refused >= into_the_hole,
        "the held tray writes reached Redis and were refused"
    );
}

/// A node cut off from Redis long enough to count as dead (its alive key lapses) has its
/// presence entries dropped by the others; a newer stream of one of its sessions opened on
/// another node meanwhile ends its stream once it is back (`replaced`), although it missed
/// the announcement and its own entry may not be in Redis again yet when it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_replaced_while_its_node_was_cut_off_ends_once_it_is_back() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    let a = Herald::start(Some(&proxy.url()), &[]);
    let b = Herald::start(Some(&redis.url()), &[]);
    let token = session_token("alice", "s");
    let mut old = a.events(&token, "").await;
    proxy.black_hole(true);
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (status, body) = b.get("/presence/alice", &service_token()).await;
        if status == 200 && body["online"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "a's entry stayed: {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut new = b.events(&token, "").await;
    proxy.black_hole(false);
    assert_eq!(old.expect("replaced").await.event, "replaced");
    let id = b.notify("alice", "to the newer stream").await;
    assert_eq!(new.expect("notification").await.json()["id"], id.as_str());
}

/// Logouts on another node while this one was cut off from Redis: it missed the
/// announcements, and finds once it is back that the sessions ended. A browser session by its
/// record's mark (not a record gone, which it would take for a Redis that lost its data and
/// put back); a token's `sid` by the time of its logout, after the stream opened (the token
/// stays valid: a stream it opens later stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_while_a_node_was_cut_off_ends_its_stream_once_it_is_back() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    let a = Herald::start(Some(&proxy.url()), &[]);
    let b = Herald::start(Some(&redis.url()), &[]);
    let cookie = a.login("alice").await;
    let mut browser = a.cookie_events(&cookie).await;
    let token = session_token("alice", "s");
    let mut by_token = a.events(&token, "").await;
    proxy.black_hole(true);
    wait_unready(&a).await;
    assert_eq!(b.logout(&cookie).await.status(), 204);
    let r = send_raw(b.http.delete(b.url("/session")).bearer_auth(&token)).await;
    assert_eq!(r.status(), 204);
    proxy.black_hole(false);
    assert_eq!(browser.expect("revoked").await.event, "revoked");
    assert_eq!(by_token.expect("revoked").await.event, "revoked");
    let list = b
        .http
        .get(b.url("/notifications"))
        .header("cookie", &cookie);
    assert_eq!(send_raw(list).await.status(), 401);
    wait_for("a is back", async || {
        timed(a.http.get(a.url("/readyz"))).await.0 == 200
    })
    .await;
    let mut again = a.events(&token, "").await;
    let id = b.notify("alice", "to the token's new stream").await;
    assert_eq!(again.expect("notification").await.json()["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_outage_exits_within_the_drain_timeout() {
    let mut stopped = Redis::start();
    let holed = Redis::start();
    let proxy = Proxy::start(holed.port).await;
    let flags = ["--drain-timeout", "2s"];
    let mut a = Herald::start(Some(&stopped.url()), &flags);
    let mut b = Herald::start(Some(&proxy.url()), &flags);
    let _on_a = a.events(&session_token("alice", "s1"), "").await;
    let _on_b = b.events(&session_token("alice", "s2"), "").await;

    stopped.stop();
    proxy.black_hole(true);
    wait_unready(&a).await;
    wait_unready(&b).await;
    // gone a while: reconnect attempts, retries and backoffs are all under way
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (label, node) in [("stopped", &mut a), ("black hole", &mut b)] {
        let started = Instant::now();
        let status = node.terminate();
        let elapsed = started.elapsed();
        println!("{label}: SIGTERM -> exit in {elapsed:?}");
        assert!(
            status.is_some_and(|s| s.success()),
            "{label}: {status:?} after {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(3), "{label}: {elapsed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_cluster_gets_prompt_503s() {
    let mut cluster = Cluster::start(3, 0);
    let h = Herald::start(Some(&cluster.url()), &[]);
    let cookie = h.login("alice").await;
    let _sse = h.events(&user_token("alice"), "").await;
    cluster.stop_all();
    assert_prompt_answers(&h, &cookie, "cluster stopped").await;
}

/// More streams open at once than may read the store at once, for users whose shard's primary
/// was just killed (each opening waits out its reads' deadline while the cluster client tries
/// the dead node): every one is answered 503 within a second of its request, those that
/// waited for a turn too. Before, the second wave answered after two deadlines (~1.7 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_queued_behind_a_dead_shard_get_prompt_503s() {
    let mut cluster = Cluster::start(3, 0);
    let h = Herald::start(Some(&cluster.url()), &[]);
    let key = |user: &str| format!("herald:{{u:{user}}}:order");
    let doomed = cluster.primary_of(&key("u0"));
    let users: Vec<String> = (0..600)
        .map(|i| format!("u{i}"))
        .filter(|u| cluster.primary_of(&key(u)) == doomed)
        .take(100)
        .collect();
    assert_eq!(users.len(), 100);
    // the nodes known: each user's first stream opens and closes while the cluster is whole
    let _ = h.events(&user_token(&users[0]), "").await;
    cluster.kill_primary_of(&key("u0"));
    let opens = users.iter().map(|user| {
        let request = h.http.get(h.url("/events")).bearer_auth(user_token(user));
        timed(request)
    });
    let answers = futures_util::future::join_all(opens).await;
    let slowest = answers.iter().map(|(_, _, took)| *took).max().unwrap();
    println!("100 opens on a dead shard: slowest answer in {slowest:?}");
    for (status, body, took) in answers {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable");
        assert!(took < PROMPT, "answered in {took:?}");
    }
}

/// The tray scripts refuse to run past their deadline (Redis's clock): nothing is stored,
/// logged or announced (`publish.lua`, `mark.lua`), nothing expired (`due.lua`). Called
/// directly, the way held bytes (or a hung primary) would run them late.
#[tokio::test]
async fn tray_scripts_refuse_to_run_past_their_deadline() {
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    // every await below is bounded by the connection's own timeouts
    let bounded = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(WAIT))
        .set_response_timeout(Some(WAIT));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&bounded)
        .await
        .unwrap();
    let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let past = secs * 1000 - 1;
    let future = secs * 1000 + 60_000;
    // the tray scripts take the user's base key and add suffixes (src/store/redis/scripts/common.lua)
    let base = "t";
    let keys = [
        "items", "order", "unread", "seq", "changes", "epoch", "unseen",
    ]
    .map(|k| format!("{base}:{k}"));
    let common = include_str!("../../src/store/redis/scripts/common.lua");
    let publish = redis::Script::new(&format!(
        "{common}{}",
        include_str!("../../src/store/redis/scripts/publish.lua")
    ));
    let run_publish = |deadline: u64| {
        let mut inv = publish.key(base);
        // ARGV: deadline, max_per_user, log_capacity, now_ms, idempotency_ttl_ms, keys per
        // user, the shared tail, the muted category (none), category, collapse key, deliver
        // at, expires at (none), Web Push off, no batch channel, no idempotency stamp, then
        // per user: id, user (JSON), fresh epoch
        inv.arg(deadline)
            .arg(10)
            .arg(10)
            .arg(secs * 1000)
            .arg(1000)
            .arg(1)
            .arg(r#","title":"t""#)
            .arg(&["", "", "", "", "", "0", "", ""])
            .arg("id1")
            .arg(r#""u""#)
            .arg("0123456789ab");
        inv
    };
    let late: redis::RedisResult<Vec<String>> = run_publish(past).invoke_async(&mut conn).await;
    assert_eq!(late.unwrap_err().code(), Some("LATE"));
    let stored: u64 = redis::cmd("EXISTS")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing written");
    let ok: Vec<String> = run_publish(future).invoke_async(&mut conn).await.unwrap();
    assert_eq!(ok, ["", "1"], "no failure; stored");

    let mark = redis::Script::new(&format!(
        "{common}{}",
        include_str!("../../src/store/redis/scripts/mark.lua")
    ));
    let run_mark = |deadline: u64| {
        let mut inv = mark.key(base);
        // ARGV: kind, now_ms, now, log_capacity, all, deadline, fresh epoch, snooze end (ms,
        // RFC 3339), Web Push on, ids
        inv.arg("read")
            .arg(secs * 1000)
            .arg("2026-01-01T00:00:00Z")
            .arg(10)
            .arg("0")
            .arg(deadline)
            .arg("0123456789ab")
            .arg("")
            .arg("")
            .arg("0")
            .arg("id1");
        inv
    };
    let late: redis::RedisResult<Vec<String>> = run_mark(past).invoke_async(&mut conn).await;
    assert_eq!(late.unwrap_err().code(), Some("LATE"));
    let unread: u64 = redis::cmd("ZCARD")
        .arg("t:unread")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(unread, 1, "still unread");
    let ok: Vec<String> = run_mark(future).invoke_async(&mut conn).await.unwrap();
    // found, the log's head after it, the changed ids
    assert_eq!(ok, ["1", "0123456789ab.2", "id1"], "ids start at ARGV[11]");

    // due.lua, with id1's expiry past: a late call expires nothing
    let due = redis::Script::new(&format!(
        "{common}{}",
        include_str!("../../src/store/redis/scripts/due.lua")
    ));
    let run_due = |deadline: u64| {
        let mut inv = due.key(base);
        // ARGV: now_ms, log_capacity, fresh epoch, Web Push off, lease, hand-over, hold,
        // lease token, deadline
        inv.arg(secs * 1000)
            .arg(10)
            .arg("0123456789ab")
            .arg("0")
            .arg(60_000)
            .arg(40_000)
            .arg(1_000)
            .arg(1)
            .arg(deadline);
        inv
    };
    let _: () = redis::cmd("ZADD")
        .arg("t:expire")
        .arg(secs * 1000 - 1_000)
        .arg("id1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored = async |conn: &mut redis::aio::MultiplexedConnection| -> bool {
        redis::cmd("HEXISTS")
            .arg("t:items")
            .arg("id1")
            .query_async(conn)
            .await
            .unwrap()
    };
    let late: redis::RedisResult<Vec<String>> = run_due(past).invoke_async(&mut conn).await;
    assert_eq!(late.unwrap_err().code(), Some("LATE"));
    assert!(stored(&mut conn).await, "nothing expired");
    let _: Vec<String> = run_due(future).invoke_async(&mut conn).await.unwrap();
    assert!(!stored(&mut conn).await, "expired in time");
}

/// A publish still running when half the drain is over sends no further batch and answers
/// 503 naming the users it stored, instead of being cut off unanswered with part of it stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_outlasting_the_drain_answers_what_it_stored() {
    const USERS: usize = 90_000;
    let redis = Redis::start();
    let h = Herald::start(Some(&redis.url()), &["--drain-timeout", "1s"]);
    let users: Vec<String> = (0..USERS).map(|i| format!("p{i}")).collect();
    let pid = h.pid();
    let terminate = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_signal(pid, "TERM");
    });
    let (status, body) = h
        .publish(json!({"users": users, "notification": {"title": "big"}}))
        .await;
    terminate.await.unwrap();
    assert_error(status, &body, 503, "unavailable");
    let stored = body["error"]["stored"].as_object().unwrap();
    assert!(
        !stored.is_empty() && stored.len() < USERS,
        "{} stored",
        stored.len()
    );
    // exactly the users it names have the notification
    let trays: Vec<String> = redis::cmd("KEYS")
        .arg("herald:{u:p*}:items")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(trays.len(), stored.len());
}

/// Redis ends the node's subscriptions without closing its connection (the broker's
/// connection to Redis is replaced under it): its canary goes unheard, every subscription is
/// made again, and the stream receives what was published meanwhile, then live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_receiving_after_redis_silently_ends_the_subscriptions() {
    let redis = Redis::start();
    let proxy = Swapper::start(redis.port).await;
    let h = Herald::start(Some(&proxy.url()), &[]);
    let mut sse = h.events(&user_token("alice"), "").await;
    let before = h.notify("alice", "before").await;
    assert_eq!(sse.next_event().await.json()["id"], before.as_str());
    proxy.swap();
    let channels = || {
        let mut conn = redis.conn();
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .query(&mut conn)
            .unwrap();
        channels
    };
    let deadline = Instant::now() + WAIT;
    while channels().iter().any(|c| c.contains("u:alice")) {
        assert!(Instant::now() < deadline, "the subscription never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let meanwhile = h.notify("alice", "meanwhile").await;
    let next = sse.try_next(Duration::from_secs(10)).await;
    let next = next.expect("the notification published meanwhile, within 10 s");
    assert_eq!(next.json()["id"], meanwhile.as_str());
    assert!(channels().iter().any(|c| c.contains("u:alice")));
    assert!(h.metric("herald_broker_reconnects_total").await >= 1.0);
    let live = h.notify("alice", "live").await;
    assert_eq!(sse.next_event().await.json()["id"], live.as_str());
}
