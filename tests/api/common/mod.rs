//! Test harness, shared by every test file through `use crate::common::*;`: real `herald`
//! processes and real `redis-server`s on free loopback ports, each owned by a value that stops
//! its process on `Drop`; tokens; and an SSE reader that asserts on the wire format. Every wait
//! has a timeout.
//!
//! Layout, one concern a file:
//! - `mod.rs`: constants, [`Mode`] and `both_modes!`, free ports, temporary directories, waits.
//! - `redis.rs`: [`Redis`] (one redis-server) and [`Cluster`] (a Redis Cluster).
//! - `herald.rs`: the [`Herald`] process, [`Setup`] (a backend plus one node) and the HTTP
//!   request helpers (`send`, `status_json`, cookies, `/metrics`).
//! - `tokens.rs`: JWTs signed with [`SECRET`].
//! - `sse.rs`: [`Sse`], an incremental reader of `text/event-stream` answers.
//! - `raw.rs`: raw HTTP over a TCP socket, for requests a client library would tidy up.
//! - `backend.rs`: [`EchoUpstream`], the upstream the `/api/` proxy tests forward to.
//! - `engine.rs`: [`Engine`], the Redis or Redis Cluster the nodes of a multi-node test share.
//! - `times.rs`: RFC 3339 times relative to now for the v2 due-time fields, and field-naming 400s.
//! - `kafka.rs`: `Kafka`, a Kafka-compatible broker (feature `kafka`).

mod backend;
mod certs;
mod engine;
mod herald;
#[cfg(feature = "kafka")]
mod kafka;
mod push;
mod raw;
mod redis;
mod sse;
mod times;
mod tokens;

pub use backend::EchoUpstream;
pub use certs::{make_cert, openssl, p384_key};
pub use engine::Engine;
pub use herald::*;
#[cfg(feature = "kafka")]
pub use kafka::{produce_with, Kafka};
pub use push::PushService;
pub use raw::*;
pub use redis::{Cluster, Redis};
pub use sse::*;
pub use times::*;
pub use tokens::*;

use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// A loopback URL nothing answers on for as long as the returned socket lives: its port is
/// bound and never listened on, so a connection is refused, and no process of a test running
/// alongside can take the port meanwhile (as it could a `free_port()` left unbound).
pub fn closed_url() -> (String, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (format!("http://127.0.0.1:{port}"), socket)
}

/// Wait until `done` holds, checking every 50 ms; after `WAIT`, fail with `failure`.
pub async fn wait_for(failure: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "{failure}");
        tokio::time::sleep(Duration::from_millis(50)).await;
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
