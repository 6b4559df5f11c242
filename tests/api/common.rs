//! Test harness: real `herald` processes and real `redis-server`s on free loopback ports, each
//! owned by a value that stops its process on `Drop`; tokens; and an SSE reader that asserts on
//! the wire format. Every wait has a timeout.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

pub const SECRET: &str = "test-secret-0123456789";
pub const WAIT: Duration = Duration::from_secs(10);

/// Which backend a behaviour test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Redis,
    Cluster,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway `redis-server` on a free port.
pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Redis {
    /// A redis-server on a free port. Another test may take the same port between the probe
    /// and the bind, so the server is asked for its directory to make sure it is ours.
    pub fn start() -> Redis {
        for _ in 0..5 {
            let (port, dir) = (free_port(), TempDir::new("redis"));
            if let Some(child) = Self::spawn(port, &dir) {
                return Redis {
                    child,
                    port,
                    _dir: dir,
                };
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Save to disk, stop, and start again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop_saving();
        self.start_again();
    }

    /// Save to disk and stop (`start_again` brings the same data back).
    pub fn stop_saving(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "save"])
            .output();
        let _ = self.child.wait();
    }

    /// Start again on the same port, from what `stop_saving` saved.
    pub fn start_again(&mut self) {
        self.child = Self::spawn(self.port, &self._dir).expect("redis-server restarts on its port");
    }

    /// Stop without saving and start again on the same port, empty (a Redis without
    /// persistence that restarted).
    pub fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self._dir.0.join("dump.rdb"));
        self.child = Self::spawn(self.port, &self._dir).expect("redis-server restarts on its port");
    }

    /// Start redis-server; `None` if the port turns out to be someone else's.
    fn spawn(port: u16, dir: &TempDir) -> Option<Child> {
        let mut child = redis_server(port, &dir.0)
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        let deadline = std::time::Instant::now() + WAIT;
        let url = format!("redis://127.0.0.1:{port}");
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return None; // could not bind
            }
            let dir_of_server = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| {
                    redis::cmd("CONFIG")
                        .arg("GET")
                        .arg("dir")
                        .query::<Vec<String>>(&mut c)
                });
            if let Ok(answer) = dir_of_server {
                let canonical = dir.0.canonicalize().unwrap_or_else(|_| dir.0.clone());
                let ours = answer.get(1).map(std::path::PathBuf::from) == Some(canonical);
                if ours {
                    return Some(child);
                }
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n: u64 = rand_u64();
        let path = std::env::temp_dir().join(format!("herald-test-{tag}-{n:x}"));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

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
                if let Some(addr) = line.strip_prefix("herald listening on ") {
                    let _ = tx.send(Ok((addr.to_owned(), banner.clone())));
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
        unsafe_kill(self.child.id(), "TERM");
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
        let r = self
            .http
            .post(self.url("/session"))
            .bearer_auth(user_token(user))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
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

    /// Open `/events` with a Bearer token; waits for `ready`.
    pub async fn events(&self, token: &str, query: &str) -> Sse {
        let mut sse = self
            .events_with(
                self.http
                    .get(self.url(&format!("/events{query}")))
                    .bearer_auth(token),
            )
            .await;
        let ready = sse.next_event().await;
        assert_eq!(ready.event, "ready", "{ready:?}");
        sse.ready = Some(ready);
        sse
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

fn unsafe_kill(pid: u32, signal: &str) {
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
    page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The `name=value` pair of the response's `Set-Cookie`.
pub fn cookie_of(r: &reqwest::Response) -> String {
    let set = r.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// The public session id in a `herald_session=<id>.<secret>` cookie pair.
pub fn session_id(cookie: &str) -> String {
    let value = cookie
        .strip_prefix("herald_session=")
        .expect("a session cookie");
    let (id, secret) = value.split_once('.').expect("<id>.<secret>");
    assert!(!id.is_empty() && secret.len() >= 32, "{cookie}");
    id.to_owned()
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

/// A throwaway Redis Cluster on loopback: `primaries` primaries with `replicas` each.
pub struct Cluster {
    nodes: Vec<(Child, u16)>,
    /// Replicas in all, for waiting until each one's link is up.
    replicas: usize,
    _dir: TempDir,
}

impl Cluster {
    pub fn start(primaries: usize, replicas: usize) -> Cluster {
        let dir = TempDir::new("cluster");
        let count = primaries * (1 + replicas);
        let ports = cluster_ports(count);
        let nodes: Vec<(Child, u16)> = ports
            .iter()
            .map(|&port| {
                let node_dir = dir.0.join(port.to_string());
                std::fs::create_dir_all(&node_dir).unwrap();
                let child = redis_server(port, &node_dir)
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                    .args(["--cluster-replica-validity-factor", "0"])
                    .args(["--cluster-config-file", "nodes.conf"])
                    .spawn()
                    .expect("redis-server must be installed (scripts/test installs it)");
                (child, port)
            })
            .collect();
        for &port in &ports {
            wait_port(port);
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster {
            nodes,
            replicas: primaries * replicas,
            _dir: dir,
        };
        cluster.wait_until(|c| c.all_ok() && c.replicas_linked() == c.replicas);
        cluster
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    pub fn cli(port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .map(|(_, p)| *p)
            .filter(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
            .collect()
    }

    fn all_ok(&self) -> bool {
        self.live_ports()
            .iter()
            .all(|p| Self::cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
    }

    fn replicas_linked(&self) -> usize {
        self.live_ports()
            .iter()
            .filter(|p| Self::cli(**p, &["info", "replication"]).contains("master_link_status:up"))
            .count()
    }

    pub fn wait_until(&self, ready: impl Fn(&Cluster) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !ready(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster did not settle"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the primary serving `key` has its writes on its replica. (`WAIT` covers the
    /// writes of its own connection, so one write to the same slot goes first, then `WAIT`.)
    pub fn wait_for_replication(&self, key: &str) {
        use std::io::Write;
        let port = self.primary_of(key);
        let mut cli = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let tag = key
            .find('{')
            .map_or(key, |i| &key[i..=key.find('}').unwrap_or(i)]);
        writeln!(cli.stdin.take().unwrap(), "SET {tag}:probe 1\nWAIT 1 5000").unwrap();
        let out = cli.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.lines().last().map(str::trim),
            Some("1"),
            "the replica did not acknowledge: {out}"
        );
    }

    /// Kill every node (the whole cluster is away).
    pub fn stop_all(&mut self) {
        for (child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill the primary serving `key`; returns its port.
    pub fn kill_primary_of(&mut self, key: &str) -> u16 {
        let port = self.primary_of(key);
        let (child, _) = self.nodes.iter_mut().find(|(_, p)| *p == port).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        port
    }

    /// The port of the primary serving `key`, as the first live node sees it.
    pub fn primary_of(&self, key: &str) -> u16 {
        let any = self.live_ports()[0];
        let nodes = Self::cli(any, &["cluster", "nodes"]);
        owner_in(&nodes, self.slot_of(key)).expect("a primary serves the slot")
    }

    pub fn slot_of(&self, key: &str) -> u16 {
        let any = self.live_ports()[0];
        Self::cli(any, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap()
    }

    fn id_of(port: u16) -> String {
        Self::cli(port, &["cluster", "myid"]).trim().to_owned()
    }

    /// The primaries serving slots, by port.
    pub fn primaries(&self) -> Vec<u16> {
        let any = self.live_ports()[0];
        let nodes = Self::cli(any, &["cluster", "nodes"]);
        let mut ports: Vec<u16> = nodes
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let serving = f.len() > 8 && f[2].contains("master") && !f[2].contains("fail");
                serving.then(|| f[1].split(['@', ':']).nth(1)?.parse().ok())?
            })
            .collect();
        ports.sort();
        ports
    }

    /// The port of a replica of the primary on `primary`.
    pub fn replica_of(&self, primary: u16) -> u16 {
        let id = Self::id_of(primary);
        Self::cli(primary, &["cluster", "nodes"])
            .lines()
            .find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.get(2)?.contains("slave") && *f.get(3)? == id)
                    .then(|| f[1].split(['@', ':']).nth(1)?.parse().ok())?
            })
            .expect("the primary has a replica")
    }

    /// Wait until every live node sees `port` serving `slot`, the cluster is ok and every
    /// replica's link to its primary is up.
    pub fn wait_for_owner(&self, slot: u16, port: u16) {
        self.wait_until(|c| {
            c.live_ports()
                .iter()
                .all(|p| owner_in(&Self::cli(*p, &["cluster", "nodes"]), slot) == Some(port))
                && c.all_ok()
                && c.replicas_linked() == c.replicas
        });
    }

    /// `CLUSTER FAILOVER [how]` on the replica of the primary serving `key`, then `meanwhile`,
    /// then wait until the replica serves the slot everywhere and the old primary replicates
    /// from it. Returns the new primary.
    pub fn fail_over(&self, key: &str, how: Option<&str>, meanwhile: &mut dyn FnMut()) -> u16 {
        let slot = self.slot_of(key);
        let new = self.replica_of(self.primary_of(key));
        let mut args = vec!["cluster", "failover"];
        args.extend(how);
        let reply = Self::cli(new, &args);
        assert_eq!(reply.trim(), "OK", "CLUSTER FAILOVER: {reply}");
        meanwhile();
        self.wait_for_owner(slot, new);
        new
    }

    /// Move the slot of `key` to the primary on `to`, as resharding does: `SETSLOT …
    /// IMPORTING/MIGRATING`, `MIGRATE` of every key in the slot, then `SETSLOT … NODE` on every
    /// primary, the target first; `between` runs after the target's (it serves the slot, the
    /// old owner still holds its subscribers). Returns once every node sees the new owner.
    pub fn migrate_slot(&self, key: &str, to: u16, between: &mut dyn FnMut()) {
        let from = self.primary_of(key);
        assert_ne!(from, to, "the slot is already there");
        let slot = self.slot_of(key).to_string();
        let (from_id, to_id) = (Self::id_of(from), Self::id_of(to));
        let ok = |port: u16, args: &[&str]| {
            let reply = Self::cli(port, args);
            assert_eq!(reply.trim(), "OK", "{args:?} on {port}: {reply}");
        };
        ok(to, &["cluster", "setslot", &slot, "importing", &from_id]);
        ok(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
        loop {
            let keys = Self::cli(from, &["cluster", "getkeysinslot", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut args = vec!["migrate", "127.0.0.1", &to_port, "", "0", "5000", "keys"];
            args.extend(keys);
            ok(from, &args);
        }
        ok(to, &["cluster", "setslot", &slot, "node", &to_id]);
        between();
        let mut others = vec![from];
        others.extend(
            self.primaries()
                .into_iter()
                .filter(|p| *p != to && *p != from),
        );
        for port in others {
            ok(port, &["cluster", "setslot", &slot, "node", &to_id]);
        }
        self.wait_for_owner(self.slot_of(key), to);
    }
}

/// The port of the primary serving `slot` in `CLUSTER NODES` output.
fn owner_in(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let serves = f.get(8..).unwrap_or(&[]).iter().any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
        });
        (f.get(2)?.contains("master") && serves)
            .then(|| f[1].split(['@', ':']).nth(1)?.parse().ok())?
    })
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A throwaway `redis-server` on loopback `port`, keeping its files in `dir`, persisting nothing.
fn redis_server(port: u16, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn wait_port(port: u16) {
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `count` ports whose cluster bus ports (+10000) are free too.
fn cluster_ports(count: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20000 + (rand_u64() % 5000) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let mut ports = Vec::new();
    while ports.len() < count {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 30000, "no free ports for a cluster");
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10000) {
            ports.push(port);
        }
    }
    ports
}

impl std::ops::Deref for Setup {
    type Target = Herald;
    fn deref(&self) -> &Herald {
        &self.node
    }
}

// -- tokens --

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sign(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn user_token(user: &str) -> String {
    sign(json!({"sub": user, "exp": now() + 3600}))
}

pub fn session_token(user: &str, sid: &str) -> String {
    sign(json!({"sub": user, "sid": sid, "exp": now() + 3600}))
}

pub fn service_token() -> String {
    sign(json!({"scope": "publish", "exp": now() + 3600}))
}

// -- SSE --

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
    pub retry: Option<String>,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// The event's `id:` split into (epoch, seq); panics unless it is `<12 hex>.<digits>`.
    pub fn position(&self) -> (String, u64) {
        let id = self.id.as_deref().expect("an id: line");
        event_id(id)
    }
}

/// An event id split into (epoch, seq); panics unless it is `<12 lowercase hex>.<digits>`.
pub fn event_id(id: &str) -> (String, u64) {
    let (epoch, seq) = id
        .split_once('.')
        .unwrap_or_else(|| panic!("not <epoch>.<seq>: {id}"));
    assert!(
        epoch.len() == 12
            && epoch
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "not a 12-hex-char epoch: {id}"
    );
    assert!(seq.bytes().all(|b| b.is_ascii_digit()), "not a seq: {id}");
    (epoch.to_owned(), seq.parse().unwrap())
}

/// Reads an SSE response incrementally, one event at a time, keeping the raw text seen.
pub struct Sse {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    pub raw: String,
    pub comments: usize,
    pub ready: Option<Event>,
    pub headers: reqwest::header::HeaderMap,
    pub ended: bool,
}

impl Sse {
    pub fn new(r: reqwest::Response) -> Sse {
        let headers = r.headers().clone();
        Sse {
            stream: Box::pin(r.bytes_stream()),
            buf: String::new(),
            raw: String::new(),
            comments: 0,
            ready: None,
            headers,
            ended: false,
        }
    }

    /// The next event (comments and `retry:`-only blocks are recorded, not returned).
    pub async fn next_event(&mut self) -> Event {
        self.try_next(WAIT).await.expect("expected an SSE event")
    }

    /// The next event within `wait`, or `None` on timeout or end of stream.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let mut ev = Event::default();
                let mut has_field = false;
                for line in block.lines().filter(|l| !l.is_empty()) {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => ev.id = Some(value.to_owned()),
                        "event" => ev.event = value.to_owned(),
                        "data" => ev.data.push_str(value),
                        "retry" => ev.retry = Some(value.to_owned()),
                        _ => {}
                    }
                    if field != "retry" {
                        has_field = true;
                    }
                }
                if has_field {
                    return Some(ev);
                }
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => self.ended = true,
                Ok(Some(Ok(bytes))) => {
                    let text = String::from_utf8_lossy(&bytes);
                    self.raw.push_str(&text);
                    self.buf.push_str(&text);
                }
            }
        }
    }

    /// Wait for the next event named `name`, skipping others.
    pub async fn expect(&mut self, name: &str) -> Event {
        loop {
            let ev = self.next_event().await;
            if ev.event == name {
                return ev;
            }
        }
    }

    /// True when the stream ends within `wait` (after any remaining events).
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if self
                .try_next(deadline - tokio::time::Instant::now())
                .await
                .is_none()
            {
                return self.ended;
            }
        }
        false
    }
}

/// Generate one test per mode (embedded, one Redis, a Redis Cluster) for each named `async fn name(mode: Mode)`.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::common::Mode::Embedded).await } )*
        }
        mod redis {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::common::Mode::Redis).await } )*
        }
        mod cluster {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::common::Mode::Cluster).await } )*
        }
    };
}

// -- raw HTTP, for requests a client library would tidy up --

/// `host:port` of a node's base URL.
pub fn addr_of(base: &str) -> String {
    base.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Send `request` as bytes on a fresh connection and read until the server closes it (or
/// `WAIT` passes); the whole answer as text. Ask for `Connection: close` to get one answer.
pub fn raw_http(base: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr_of(base)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw answer (0 when there is none).
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
