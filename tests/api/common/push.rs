//! [`PushService`], a real Web Push service for the escalation tests: `tests/push/receiver.py`
//! (Python; `cryptography` and `http_ece`, which `scripts/test` installs) on free loopback
//! ports, stopped on `Drop`. It checks each push's VAPID `Authorization` and decrypts its
//! `aes128gcm` body with code that is not Herald's, and records what arrived; its control
//! server (plain HTTP) makes subscriptions, programs the answers and lists the messages.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{client, TempDir, WAIT};

const RECEIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/push/receiver.py");

/// A running `receiver.py`: push endpoints `https://127.0.0.1:<port>/push/<name>`.
pub struct PushService {
    child: Child,
    /// The control server, `http://127.0.0.1:<port>`.
    pub control: String,
    /// The CA certificate (PEM) the endpoints' certificate chains to: Herald's `--push-ca-file`.
    pub cert_path: PathBuf,
    http: reqwest::Client,
    /// Held open: the receiver exits when its stdin closes (`--exit-on-stdin-eof`), so it
    /// does not outlive a test process killed before `Drop` runs.
    _stdin: ChildStdin,
    _dir: TempDir,
}

impl PushService {
    /// Start the receiver and wait (at most `WAIT`) for its ready line,
    /// `{"port": N, "control": "http://127.0.0.1:M"}`.
    pub fn start() -> PushService {
        let dir = TempDir::new("push");
        let cert_path = dir.0.join("push-ca.pem");
        let mut child = Command::new("python3")
            .arg(RECEIVER)
            .arg("--cert-out")
            .arg(&cert_path)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 must be installed (scripts/test installs it)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // keep draining so the child never blocks on a full pipe
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let ready = rx
            .recv_timeout(WAIT)
            .ok()
            .and_then(|line| serde_json::from_str::<Value>(&line).ok());
        let control = ready.as_ref().and_then(|r| {
            r["port"].as_u64()?;
            Some(r["control"].as_str()?.to_owned())
        });
        let Some(control) = control else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the push receiver did not start (got {ready:?}): it needs python3 with \
                 `http_ece` and `cryptography` (scripts/test installs them); its stderr is above"
            );
        };
        PushService {
            child,
            control,
            cert_path,
            http: client(),
            _stdin: stdin,
            _dir: dir,
        }
    }

    /// The flags that let Herald push here: this address allowed, this CA trusted.
    pub fn herald_args(&self) -> Vec<String> {
        vec![
            "--push-endpoint-allow".into(),
            "127.0.0.1".into(),
            "--push-ca-file".into(),
            self.cert_path.to_string_lossy().into_owned(),
        ]
    }

    /// A new subscription named `name` (URL-safe characters; the same one again for a name
    /// already subscribed): the browser's `PushSubscription` JSON,
    /// `{"endpoint", "expirationTime": null, "keys": {"p256dh", "auth"}}`.
    pub async fn subscribe(&self, name: &str) -> Value {
        self.post("/subscriptions", json!({ "name": name })).await
    }

    /// Answer the next valid pushes to `name` with `statuses`, in order (with `Retry-After:
    /// retry_after` on those that are not 2xx), then `201` again. Pushes the receiver rejects
    /// (bad VAPID, undecryptable, ...) take nothing from the queue.
    pub async fn respond(&self, name: &str, statuses: &[u16], retry_after: Option<&str>) {
        let body = json!({ "name": name, "statuses": statuses, "retry_after": retry_after });
        self.post("/respond", body).await;
    }

    /// Answer every valid push to `name` `delay` late (a slow push service). The message is
    /// listed at once, with `status` and `answered_at` null until the answer goes.
    pub async fn respond_slowly(&self, name: &str, delay: Duration) {
        let body = json!({ "name": name, "statuses": [], "delay": delay.as_secs_f64() });
        self.post("/respond", body).await;
    }

    /// From now on, refuse (`403`, recorded with `vapid_ok: false`) a push whose VAPID key `k`
    /// is not `public_key` (base64url, as `GET /push/key` gives it).
    pub async fn expect_key(&self, public_key: &str) {
        self.post("/expect-key", json!({ "public_key": public_key }))
            .await;
    }

    /// Every push received (to `name`, or to any), in arrival order, rejected ones included:
    /// `{"name", "payload" (the decrypted JSON, or null), "plaintext", "ttl", "urgency",
    /// "topic", "vapid_ok", "error" (null, or why it was rejected), "status" (the answer
    /// given), "sub", "public_key", "received_at" (Unix seconds)}`.
    pub async fn messages(&self, name: Option<&str>) -> Vec<Value> {
        let path = match name {
            Some(name) => format!("/messages?name={name}"),
            None => "/messages".to_owned(),
        };
        let url = format!("{}{path}", self.control);
        let body = self.call(&path, self.http.get(url)).await;
        body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("push receiver {path}: {body}"))
    }

    /// Wait until at least `n` pushes to `name` arrived (rejected ones count too), checking
    /// every 50 ms; panics after `WAIT`. Returns them all.
    pub async fn wait_messages(&self, name: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let messages = self.messages(Some(name)).await;
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} pushes to {name} arrived within {WAIT:?}: {messages:#?}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`Self::wait_messages`], and then until the first `n` have been answered (the status
    /// is recorded once the answer is sent, a moment after the push arrived).
    pub async fn wait_answered(&self, name: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let messages = self.wait_messages(name, n).await;
            if messages[..n].iter().all(|m| !m["status"].is_null()) {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "pushes to {name} unanswered within {WAIT:?}: {messages:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.control);
        self.call(path, self.http.post(url).json(&body)).await
    }

    /// Send a control request (at most `WAIT`); its JSON answer, which must be a 200.
    async fn call(&self, path: &str, req: reqwest::RequestBuilder) -> Value {
        let r = tokio::time::timeout(WAIT, req.send())
            .await
            .unwrap_or_else(|_| panic!("push receiver {path}: no answer within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("push receiver {path}: {e}"));
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "push receiver {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("push receiver {path}: {e}: {text}"))
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
