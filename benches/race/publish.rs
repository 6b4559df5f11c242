//! Publishing for the race: to one user or to the group `g`, over HTTP with keep-alive
//! (Herald `POST /publish` with a service JWT; nchan `POST /pub/<channel>`) or through Herald's
//! Redis ingest stream (`XADD herald:ingest * publish <body>`). Each event carries its
//! [`Marker`]. [`targeted`] sends at a fixed rate with a bounded number in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::stream::Kind;
use crate::wire::{now_ns, Marker};

/// Publishes in flight at once, at most (each holds one keep-alive connection).
const IN_FLIGHT: usize = 64;
/// Any one publish gives up after this long.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Group membership is set in requests of this many users.
const MEMBERS_PER_REQUEST: usize = 5000;

/// HTTP straight to the server, or Herald's Redis ingest stream.
#[derive(Clone, Copy, PartialEq)]
pub enum Via {
    Http,
    Ingest,
}

pub struct Publisher {
    kind: Kind,
    base: String,
    http: reqwest::Client,
    token: String,
    ingest: Option<redis::aio::MultiplexedConnection>,
}

/// How a paced run went.
#[derive(Default)]
pub struct Paced {
    pub sent: u64,
    /// Publishes refused or failed (the server did not accept them).
    pub failed: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Events sent per user.
    pub counts: Vec<u32>,
    /// Of those, refused or failed per user.
    pub refused: Vec<u32>,
}

impl Paced {
    /// Events the server accepted, per user: what each stream should get.
    pub fn accepted(&self) -> Vec<u32> {
        let refused = |u: usize| self.refused.get(u).copied().unwrap_or(0);
        self.counts
            .iter()
            .enumerate()
            .map(|(u, c)| c.saturating_sub(refused(u)))
            .collect()
    }
}

impl Publisher {
    pub fn new(kind: Kind, addr: &str, secret: &str) -> Publisher {
        let exp = now_ns() / 1_000_000_000 + 3 * 3600;
        let key = EncodingKey::from_secret(secret.as_bytes());
        let token = encode(
            &Header::default(),
            &json!({"scope": "publish", "exp": exp}),
            &key,
        )
        .expect("HS256 encode");
        let http = reqwest::Client::builder()
            .timeout(PUBLISH_TIMEOUT)
            // Idle connections close soon, so they hold no server file between scenarios.
            .pool_idle_timeout(Duration::from_secs(1))
            .build()
            .expect("HTTP client");
        Publisher {
            kind,
            base: format!("http://{addr}"),
            http,
            token,
            ingest: None,
        }
    }

    /// Also publish through the ingest stream of the Redis at `url`.
    pub async fn connect_ingest(&mut self, url: &str) -> Result<(), String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis: {e}"))?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("redis: {e}"))?;
        self.ingest = Some(conn);
        Ok(())
    }

    async fn post(&self, path: &str, body: String, json_body: bool) -> Result<(), String> {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        if json_body {
            request = request
                .bearer_auth(&self.token)
                .header("content-type", "application/json");
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = response.status();
        let _ = response.bytes().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("POST {path}: HTTP {status}"))
        }
    }

    /// One event to user `u<user>`.
    pub async fn to_user(&self, via: Via, user: usize, marker: &Marker) -> Result<(), String> {
        let title = marker.text();
        match (self.kind, via) {
            (Kind::Nchan, _) => self.post(&format!("/pub/u{user}"), title, false).await,
            (Kind::Herald, Via::Http) => {
                let body =
                    format!(r#"{{"users":["u{user}"],"notification":{{"title":"{title}"}}}}"#);
                self.post("/publish", body, true).await
            }
            (Kind::Herald, Via::Ingest) => {
                let body =
                    format!(r#"{{"users":["u{user}"],"notification":{{"title":"{title}"}}}}"#);
                let mut conn = self.ingest.clone().ok_or("no ingest connection")?;
                redis::cmd("XADD")
                    .arg("herald:ingest")
                    .arg("*")
                    .arg("publish")
                    .arg(body)
                    .query_async::<String>(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("XADD: {e}"))
            }
        }
    }

    /// Entries still in Herald's ingest stream (handled ones are deleted); 0 without ingest.
    pub async fn ingest_backlog(&self) -> Result<u64, String> {
        let Some(mut conn) = self.ingest.clone() else {
            return Ok(0);
        };
        redis::cmd("XLEN")
            .arg("herald:ingest")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("XLEN: {e}"))
    }

    /// One event to the group `g` (nchan: the channel `g` every stream multiplexes).
    pub async fn to_group(&self, marker: &Marker) -> Result<(), String> {
        let title = marker.text();
        match self.kind {
            Kind::Nchan => self.post("/pub/g", title, false).await,
            Kind::Herald => {
                let body = format!(r#"{{"groups":["g"],"notification":{{"title":"{title}"}}}}"#);
                self.post("/publish", body, true).await
            }
        }
    }

    /// Make users `u0..u<n>` the members of `g` (Herald; nchan streams subscribe to it themselves).
    pub async fn set_members(&self, n: usize) -> Result<(), String> {
        if self.kind == Kind::Nchan {
            return Ok(());
        }
        for chunk in (0..n).collect::<Vec<_>>().chunks(MEMBERS_PER_REQUEST) {
            let users: Vec<String> = chunk.iter().map(|u| format!("u{u}")).collect();
            let body = json!({ "users": users }).to_string();
            let response = self
                .http
                .put(format!("{}/groups/g/members", self.base))
                .bearer_auth(&self.token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("PUT members: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("PUT members: HTTP {}", response.status()));
            }
        }
        Ok(())
    }
}

/// Publish to random users of `0..users` at `rate` per second for `limit` or until `stop`,
/// at most `IN_FLIGHT` at once (a server that can't keep up makes the rate fall behind: see
/// `sent` and `elapsed`). Waits (bounded) for the last publishes to be answered. A refused
/// publish is counted, not retried: streams expect only the [`Paced::accepted`] ones.
pub async fn targeted(
    publisher: Arc<Publisher>,
    via: Via,
    round: u32,
    users: usize,
    rate: u32,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> Paced {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let errors: Arc<Mutex<Paced>> = Arc::default();
    let mut counts = vec![0u32; users];
    let mut sent = 0u64;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let running = |started: Instant| started.elapsed() < limit && !stop.load(Ordering::Relaxed);
    while running(started) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent < due && running(started) {
            let permit = permits.clone().acquire_owned().await.expect("semaphore");
            let user = rand::random_range(0..users);
            counts[user] += 1;
            sent += 1;
            let marker = Marker {
                round,
                seq: counts[user],
                sent_ns: now_ns(),
            };
            let (publisher, errors) = (publisher.clone(), errors.clone());
            tokio::spawn(async move {
                if let Err(e) = publisher.to_user(via, user, &marker).await {
                    let mut errors = errors.lock().unwrap();
                    errors.failed += 1;
                    errors.first_error.get_or_insert(e);
                    if errors.refused.len() <= user {
                        errors.refused.resize(user + 1, 0);
                    }
                    errors.refused[user] += 1;
                }
                drop(permit);
            });
        }
    }
    let elapsed = started.elapsed();
    let _ = tokio::time::timeout(PUBLISH_TIMEOUT, permits.acquire_many(IN_FLIGHT as u32)).await;
    let errors = std::mem::take(&mut *errors.lock().unwrap());
    Paced {
        sent,
        elapsed,
        counts,
        ..errors
    }
}
