//! A throwaway `redis-server` for the contract's Redis cases: its own port and directory,
//! no persistence, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh redis-server may take to answer.
const REDIS_START: Duration = Duration::from_secs(10);

/// A `redis-server` on a free loopback port with its own empty directory; killed (and the
/// directory removed) on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Another process may take the probed port before redis-server binds it, so the server
    /// is asked for its directory to make sure it is ours; a few ports are tried.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let dir = std::env::temp_dir().join(format!(
                "herald-contract-{}-{:x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/test installs it)");
            let mut server = RedisServer { child, port, dir };
            if server.answers_as_ours() {
                return server;
            }
        }
        panic!("could not start redis-server on a free loopback port");
    }

    /// Wait until the server answers; false when it exited (port taken) or is someone else's.
    fn answers_as_ours(&mut self) -> bool {
        let deadline = Instant::now() + REDIS_START;
        let ours = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let answer = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| {
                    redis::cmd("CONFIG")
                        .arg("GET")
                        .arg("dir")
                        .query::<Vec<String>>(&mut c)
                });
            if let Ok(answer) = answer {
                return answer.get(1).map(PathBuf::from) == Some(ours);
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
