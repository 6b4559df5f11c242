//! Stream benchmark: starts the real `herald` binary (embedded mode, or Redis with
//! `--redis URL`), opens idle SSE streams over raw TCP (64 at a time), and reports the time to
//! open them, the server's memory per idle stream, then publish-to-delivery latency and
//! server CPU per delivered event. Run: `cargo bench --bench streams [-- N] [--redis URL]`.
//! Numbers go to docs/benchmarks.md; nothing here asserts on them. Without the `--bench` flag
//! that `cargo bench` passes (that is, under `cargo test --all-targets`) it makes a short smoke
//! run, so the test suite keeps it compiling and working. Every wait is bounded by
//! `STEP_TIMEOUT`: a stuck server fails the run instead of hanging it.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "bench-secret";

/// Longest wait for any one step: the server's listening line, a stream's `ready`, a publish,
/// a delivery. Generous (a loaded 2-core machine), but a hang ends the run with a message.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Streams opened and publish rounds in a smoke run (no `--bench` flag).
const SMOKE_STREAMS: usize = 64;
const SMOKE_ROUNDS: usize = 20;

/// Await `step`, or panic naming `what` after `STEP_TIMEOUT`.
async fn bounded<T>(what: &str, step: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, step).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {STEP_TIMEOUT:?} waiting for {what}"),
    }
}

/// The `herald` under test; killed when dropped, also when the run panics.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn token(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn exp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

/// (resident KiB, CPU ticks user+system) of a process, from /proc.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, ticks)
}

/// Open `/events` for `user` and read until the `ready` event has arrived (bounded by the caller).
async fn open_stream(addr: &str, user: &str) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        token(json!({"sub": user, "exp": exp()}))
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("event: ready") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream closed before ready");
        seen.extend_from_slice(&buf[..n]);
    }
    socket
}

/// Read from `socket` until a notification frame arrives (bounded by the caller). Reads are
/// kept until then, so a frame split across two reads is still seen.
async fn read_notification(socket: &mut TcpStream) {
    let mut buf = vec![0u8; 8192];
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("event: notification") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream closed");
        seen.extend_from_slice(&buf[..n]);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let default_streams = if full { 5000 } else { SMOKE_STREAMS };
    let streams: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(default_streams);
    let redis = args
        .iter()
        .position(|a| a == "--redis")
        .and_then(|i| args.get(i + 1));
    if !full {
        println!("smoke run (no --bench flag): a few streams, numbers not meaningful");
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET]);
    command.args(["--max-streams-per-user", "1000000"]);
    if let Some(url) = redis {
        command.args(["--redis-url", url]);
    }
    let mut server = Server(
        command
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // A thread reads stdout (blocking) and keeps draining it; the address comes back over a
    // channel so that the wait for it can time out.
    let stdout = server.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // `http://ADDR/base/`: the address, whatever the base path.
            if let Some(url) = line.strip_prefix("herald listening on http://") {
                let _ = tx.send(url.split('/').next().unwrap_or(url).to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(STEP_TIMEOUT)
        .expect("herald did not print its listening line");
    let pid = server.0.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_before, _) = usage(pid);

    let started = Instant::now();
    let mut sockets = Vec::with_capacity(streams);
    for chunk in (0..streams).collect::<Vec<_>>().chunks(64) {
        let opening: Vec<_> = chunk
            .iter()
            .map(|i| {
                let (addr, user) = (addr.clone(), format!("user{i}"));
                tokio::spawn(async move {
                    bounded("a stream's ready event", open_stream(&addr, &user)).await
                })
            })
            .collect();
        for task in opening {
            sockets.push(task.await.unwrap());
        }
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, _) = usage(pid);
    let mode = redis.map_or("embedded".to_owned(), |url| format!("Redis at {url}"));
    println!("idle streams ({mode}): {streams} opened in {opened:?}, 64 at a time");
    println!(
        "server RSS: {rss_before} KiB before, {rss_after} KiB with the streams: {:.2} KiB per idle stream",
        (rss_after.saturating_sub(rss_before)) as f64 / streams as f64
    );

    // Latency: publish to one user at a time, measure until its stream has the event.
    let http = reqwest::Client::builder()
        .timeout(STEP_TIMEOUT)
        .build()
        .unwrap();
    let service = token(json!({"scope": "publish", "exp": exp()}));
    let rounds = if full { 500 } else { SMOKE_ROUNDS }.min(streams);
    let (_, cpu_before) = usage(pid);
    let mut latencies = Vec::with_capacity(rounds);
    for (i, socket) in sockets.iter_mut().enumerate().take(rounds) {
        let t = Instant::now();
        let body = json!({"users": [format!("user{i}")], "notification": {"title": "bench"}});
        let (sent, _) = bounded("a publish and its delivery", async {
            tokio::join!(
                http.post(format!("http://{addr}/publish"))
                    .bearer_auth(&service)
                    .json(&body)
                    .send(),
                read_notification(socket)
            )
        })
        .await;
        sent.unwrap();
        latencies.push(t.elapsed());
    }
    let (_, cpu_after) = usage(pid);
    latencies.sort();
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    println!(
        "publish → delivery over HTTP, {rounds} rounds: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    println!(
        "server CPU per publish+delivery: {:.0} µs",
        (cpu_after - cpu_before) as f64 / ticks_per_sec * 1e6 / rounds as f64
    );
    drop(sockets);
    drop(server);
}
