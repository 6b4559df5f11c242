//! The `herald` process ([`Herald`]), [`Setup`] (a backend plus one node) and the HTTP request
//! helpers the tests share.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{service_token, user_token, Cluster, Mode, Redis, Sse, SECRET, WAIT};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_herald")
}

/// A running `herald serve` process.
pub struct Herald {
    child: Child,
    pub base: String,
    /// Lines printed on stdout before the listening line (e.g. the dev secret).
    pub banner: Vec<String>,
    pub http: reqwest::Client,
}

impl Herald {
    /// Start with the test secret, on a free port, with `extra` flags.
    pub fn start(redis: Option<&str>, extra: &[&str]) -> Herald {
        let mut args: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into()];
        if !extra
            .iter()
            .any(|a| *a == "--jwt-public-key" || *a == "--jwt-secret")
        {
            args.extend(["--jwt-secret".into(), SECRET.into()]);
        }
        if let Some(url) = redis {
            args.extend(["--redis-url".into(), url.into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(&args)
    }

    pub fn spawn(args: &[String]) -> Herald {
        Self::spawn_env(args, &[])
    }

    pub fn spawn_env(args: &[String], env: &[(&str, &str)]) -> Herald {
        let mut child = Command::new(bin())
            .args(args)
            .envs(env.iter().copied())
            // HERALD_TEST_LOG=debug shows the nodes' logs when a test needs explaining
            .env(
                "HERALD_LOG",
                std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn herald");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut banner = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("herald listening on ") {
                    let _ = tx.send(Ok((origin(url).to_owned(), banner.clone())));
                    // keep draining so the child never blocks on a full pipe
                    continue;
                }
                banner.push(line);
            }
            let _ = tx.send(Err(()));
        });
        let (base, banner) = match rx.recv_timeout(WAIT) {
            Ok(Ok(v)) => v,
            _ => {
                let _ = child.kill();
                panic!("herald did not start with {args:?}");
            }
        };
        Herald {
            child,
            base,
            banner,
            http: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill the process at once (a crash: no shutdown of any kind).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send SIGTERM and wait for the exit status (at most `WAIT`).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        send_signal(self.child.id(), "TERM");
        self.wait_exit()
    }

    /// Send SIGTERM and wait for the exit (at most `WAIT`); how long it took, once it exited
    /// with status 0 (panics otherwise). No second signal, as [`Herald::terminate`] sends none.
    pub async fn stop_time(self) -> Duration {
        let mut h = self;
        let started = std::time::Instant::now();
        send_signal(h.pid(), "TERM");
        let status = tokio::task::spawn_blocking(move || h.wait_exit())
            .await
            .unwrap();
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        started.elapsed()
    }

    /// The exit status once the process ends by itself (a signal sent already), within
    /// [`WAIT`]; `None` if it runs on. No signal: a second SIGTERM would end it at once, exit 1.
    pub fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // -- requests --

    /// The body of `GET path`, as text.
    pub async fn text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `DELETE /session` with a session cookie (and this node's own Origin).
    pub async fn logout(&self, cookie: &str) -> reqwest::Response {
        let req = self
            .http
            .delete(self.url("/session"))
            .header("cookie", cookie);
        req.header("origin", &self.base).send().await.unwrap()
    }

    /// `POST /session` with a user token; returns the `herald_session=…` cookie pair.
    pub async fn login(&self, user: &str) -> String {
        self.login_with(&user_token(user)).await
    }

    /// [`Herald::login`] with this token.
    pub async fn login_with(&self, token: &str) -> String {
        let r = self
            .http
            .post(self.url("/session"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{:?}", r.text().await);
        cookie_of(&r)
    }

    pub async fn publish(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/publish"))
            .bearer_auth(service_token())
            .json(&body)
            .send()
            .await
            .unwrap();
        status_json(r).await
    }

    /// Publish a notification with `title` to `user`; returns its id.
    pub async fn notify(&self, user: &str, title: &str) -> String {
        let (status, body) = self
            .publish(json!({"users": [user], "notification": {"title": title}}))
            .await;
        assert_eq!(status, 202, "{body}");
        body["ids"][user].as_str().unwrap().to_owned()
    }

    /// Publish `n` notifications (`n0`, `n1`, …) to `user`, `pause` apart, in a task of its
    /// own; the task ends with their ids, in order.
    pub fn publishing(
        &self,
        user: &str,
        n: usize,
        pause: Duration,
    ) -> tokio::task::JoinHandle<Vec<String>> {
        let (http, url, user) = (self.http.clone(), self.url("/publish"), user.to_owned());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..n {
                let body = json!({"users": [&user], "notification": {"title": format!("n{i}")}});
                let r = http.post(&url).bearer_auth(service_token()).json(&body);
                let (status, reply) = status_json(r.send().await.unwrap()).await;
                assert_eq!(status, 202, "{reply}");
                ids.push(reply["ids"][&user].as_str().unwrap().to_owned());
                tokio::time::sleep(pause).await;
            }
            ids
        })
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        status_json(
            self.http
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        status_json(
            self.http
                .patch(self.url(path))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn list(&self, user_token: &str, query: &str) -> Value {
        let (status, body) = self
            .get(&format!("/notifications{query}"), user_token)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// How many notifications `user`'s tray holds (first page).
    pub async fn tray_len(&self, user: &str) -> usize {
        self.tray_ids(user, "").await.len()
    }

    /// The ids on one page of `user`'s tray, in the order listed.
    pub async fn tray_ids(&self, user: &str, query: &str) -> Vec<String> {
        ids(&self.list(&user_token(user), query).await)
    }

    /// Open `/events` with a Bearer token; waits for `ready` (kept in [`Sse::ready`]).
    pub async fn events(&self, token: &str, query: &str) -> Sse {
        let req = self.http.get(self.url(&format!("/events{query}")));
        self.events_ready(req.bearer_auth(token)).await
    }

    /// Open `/events` with a `Cookie` header; waits for `ready` (kept in [`Sse::ready`]).
    pub async fn cookie_events(&self, cookie: &str) -> Sse {
        let req = self.http.get(self.url("/events"));
        self.events_ready(req.header("cookie", cookie)).await
    }

    async fn events_ready(&self, req: reqwest::RequestBuilder) -> Sse {
        let mut sse = self.events_with(req).await;
        let ready = sse.next_event().await;
        assert_eq!(ready.event, "ready", "{ready:?}");
        sse.ready = Some(ready);
        sse
    }

    /// The value of the series `name` (e.g. `herald_streams_open`, or a labelled
    /// `name{le="0.5"}`) on `/metrics`; panics when the series is missing, so a renamed or
    /// dropped metric fails the test instead of reading as 0.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.text("/metrics").await;
        text.lines()
            .find_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                (series == name).then(|| value.parse().expect("a number"))
            })
            .unwrap_or_else(|| panic!("no series {name} on /metrics:\n{text}"))
    }

    /// [`Herald::notify`], retried every 100 ms until Redis takes it (at most `WAIT`); its id.
    pub async fn notify_when_back(&self, user: &str, title: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self
                .publish(json!({"users": [user], "notification": {"title": title}}))
                .await;
            if status == 202 {
                return body["ids"][user].as_str().unwrap().to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "publish never recovered: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn events_with(&self, req: reqwest::RequestBuilder) -> Sse {
        let r = tokio::time::timeout(WAIT, req.send())
            .await
            .expect("events timed out")
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "events: {}",
            r.text().await.unwrap_or_default()
        );
        Sse::new(r)
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `scheme://host:port` of the start-up line's URL (`http://127.0.0.1:PORT/base/`): tests
/// add the base path themselves.
pub fn origin(url: &str) -> &str {
    let host_at = url.find("://").map_or(0, |i| i + 3);
    match url[host_at..].find('/') {
        Some(slash) => &url[..host_at + slash],
        None => url,
    }
}

/// Send `signal` (e.g. `TERM`) to process `pid` with the `kill` command.
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The notification ids of a `GET /notifications` body.
pub fn ids(page: &Value) -> Vec<String> {
    strings_of(page, "id")
}

/// The notification titles of a `GET /notifications` body.
pub fn titles(page: &Value) -> Vec<String> {
    strings_of(page, "title")
}

fn strings_of(page: &Value, field: &str) -> Vec<String> {
    page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n[field].as_str().unwrap().to_owned())
        .collect()
}

/// The `name=value` pair of the response's `Set-Cookie`.
pub fn cookie_of(r: &reqwest::Response) -> String {
    let set = r.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// The public session id of a `herald_session=<secret>` cookie pair: the first 24 hex digits
/// of the SHA-256 of `herald session id <secret>`.
pub fn session_id(cookie: &str) -> String {
    use sha2::{Digest, Sha256};
    let secret = cookie_value(cookie);
    assert!(
        secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
        "{cookie}"
    );
    let digest = Sha256::digest(format!("herald session id {secret}"));
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of a `herald_session=<value>` pair.
pub fn cookie_value(cookie: &str) -> &str {
    &cookie["herald_session=".len()..]
}

/// Send a request (it must get an answer).
pub async fn send_raw(req: reqwest::RequestBuilder) -> reqwest::Response {
    req.send().await.unwrap()
}

/// Send a request; its status and JSON body.
pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    status_json(send_raw(req).await).await
}

pub async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The spec's error body with `code`.
pub fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// A backend (and redis-server when needed) plus one Herald node.
pub struct Setup {
    /// Declared first, so the node stops before its backend does.
    pub node: Herald,
    /// Kept alive (and stopped on drop) with the node.
    pub _redis: Option<Redis>,
    pub _cluster: Option<Cluster>,
}

impl Setup {
    pub fn new(mode: Mode, extra: &[&str]) -> Setup {
        let redis = (mode == Mode::Redis).then(Redis::start);
        let cluster = (mode == Mode::Cluster).then(|| Cluster::start(3, 0));
        let url = redis
            .as_ref()
            .map(|r| r.url())
            .or_else(|| cluster.as_ref().map(|c| c.url()));
        let node = Herald::start(url.as_deref(), extra);
        Setup {
            _redis: redis,
            _cluster: cluster,
            node,
        }
    }
}

impl std::ops::Deref for Setup {
    type Target = Herald;
    fn deref(&self) -> &Herald {
        &self.node
    }
}
