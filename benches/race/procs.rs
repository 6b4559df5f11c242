//! The servers under test and what `/proc` says about them. Herald (`target/release/herald`),
//! nginx + nchan from a private prefix (config rendered from `benches/nchan/nginx.conf`) and
//! redis-server each run as a child owned by a [`Server`], stopped (SIGTERM, then SIGKILL to
//! every process of it) when dropped, also when the run panics. Memory is the sum of Pss over
//! a server's processes (`smaps_rollup`), CPU their utime + stime; the kernel's socket memory
//! (`/proc/net/sockstat`) is read separately, as it is in no process's RSS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a server to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The nchan config template, with `{{PREFIX}}`, `{{PORT}}` and `{{STORAGE}}` to fill in.
const NGINX_CONF: &str = include_str!("../nchan/nginx.conf");

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Where its logs go.
    pub log: PathBuf,
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn log_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).expect("create a log file"))
}

/// The last line of a log file, for an error message.
fn last_line(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().last().unwrap_or("").to_owned()
}

/// Wait until `addr` accepts a connection and `ready` accepts that connection.
fn wait_answering(
    child: &mut Child,
    addr: SocketAddr,
    ready: impl Fn(TcpStream) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited at start: {status}"));
        }
        if let Ok(conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            if ready(conn) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("not answering on {addr} after {START_TIMEOUT:?}"))
}

impl Server {
    /// `redis-server` on a free port, no persistence.
    pub fn redis(dir: &Path) -> Result<Server, String> {
        let port = free_port();
        let log = dir.join(format!("redis-{port}.log"));
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(log_file(&log))
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let pong = |mut conn: TcpStream| {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 7];
            conn.write_all(b"PING\r\n").is_ok()
                && conn.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
        };
        wait_answering(&mut child, addr, pong).map_err(|e| format!("redis-server {e}"))?;
        Ok(Server { child, addr, log })
    }

    /// Herald (`binary`), embedded or on `redis`; reads its `herald listening on` line.
    pub fn herald(
        binary: &str,
        secret: &str,
        redis: Option<&Server>,
        dir: &Path,
    ) -> Result<Server, String> {
        let log = dir.join("herald.log");
        let mut command = Command::new(binary);
        command.args(["--listen", "127.0.0.1:0", "--jwt-secret", secret]);
        command.args(["--max-streams-per-user", "1000000"]);
        if let Some(redis) = redis {
            command.args(["--redis-url", &format!("redis://{}", redis.addr)]);
        }
        let mut child = command
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log_file(&log))
            .spawn()
            .map_err(|e| format!("{binary}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps draining stdout after the line, so Herald never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // `http://ADDR/base/`: the address, whatever the base path.
                if let Some(url) = line.strip_prefix("herald listening on http://") {
                    let _ = tx.send(url.split('/').next().unwrap_or(url).to_owned());
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT).map(|a| a.parse()) {
            Ok(Ok(addr)) => Ok(Server { child, addr, log }),
            _ => Err(format!(
                "herald did not print its listening line: {}",
                last_line(&log)
            )),
        }
    }

    /// nginx + nchan from the private prefix `dir`, memory store or `redis`.
    pub fn nchan(redis: Option<&Server>, dir: &Path) -> Result<Server, String> {
        let port = free_port();
        // At http level, inherited by the pub/sub locations (without `_inheritable`, the
        // locations would silently use the memory store).
        let storage = redis.map_or(String::new(), |r| {
            let server = format!("nchan_redis_server redis://{};", r.addr);
            format!(
                "upstream redis_store {{ {server} }}\n    nchan_redis_pass redis_store;\n    \
                 nchan_redis_pass_inheritable on;"
            )
        });
        let conf = NGINX_CONF
            .replace("{{PREFIX}}", &dir.display().to_string())
            .replace("{{PORT}}", &port.to_string())
            .replace("{{STORAGE}}", &storage);
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).map_err(|e| format!("write {}: {e}", path.display()))?;
        let log = dir.join("error.log");
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log_file(&dir.join("nginx.stderr")))
            .spawn()
            .map_err(|e| format!("nginx: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stderr = dir.join("nginx.stderr");
        wait_answering(&mut child, addr, |_| true)
            .map_err(|e| format!("nginx {e}: {}{}", last_line(&stderr), last_line(&log)))?;
        Ok(Server { child, addr, log })
    }

    /// The server's processes: the one started and its children (nginx's workers).
    pub fn pids(&self) -> Vec<u32> {
        let root = self.child.id();
        let mut pids = vec![root];
        pids.extend(children(root));
        pids
    }

    /// Pss summed over its processes, KiB.
    pub fn pss_kib(&self) -> u64 {
        self.pids().into_iter().map(pss_kib).sum()
    }

    /// utime + stime summed over its processes, µs.
    pub fn cpu_us(&self) -> u64 {
        cpu_us(&self.pids())
    }

    /// (open files, soft limit) of each of its processes.
    pub fn fds(&self) -> Vec<(usize, u64)> {
        let pids = self.pids().into_iter();
        pids.map(|pid| (open_fds(pid), nofile_limit(pid))).collect()
    }

    /// Log lines naming an out-of-files error, counted.
    pub fn emfile_lines(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains("Too many open files") || l.contains("worker_connections are not enough")
            })
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pids = self.pids();
        // SAFETY: kill(2) on pids of processes this run started; no memory is touched.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids {
            // SAFETY: as above; a pid already gone just fails.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_fields(*pid).get(1).and_then(|p| p.parse().ok()) == Some(parent))
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name: [0] state, [1] ppid, … [11] utime, [12] stime.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    rest.split_whitespace().map(str::to_owned).collect()
}

/// utime + stime summed over `pids`, µs.
pub fn cpu_us(pids: &[u32]) -> u64 {
    let ticks: u64 = pids.iter().map(|pid| cpu_ticks(*pid)).sum();
    ticks * 1_000_000 / clock_ticks()
}

fn cpu_ticks(pid: u32) -> u64 {
    let fields = stat_fields(pid);
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

fn pss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn nofile_limit(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0)
}

/// The kernel's TCP memory, in pages (`TCP: … mem N` of /proc/net/sockstat), both ends of
/// every loopback connection included.
pub fn tcp_mem_pages() -> u64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words.iter().position(|w| *w == "mem")?;
            words.get(i + 1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Slab caches holding a TCP connection's kernel objects: the socket, its inode, its file and
/// its epoll entry.
const SOCKET_CACHES: [&str; 4] = ["TCP", "sock_inode_cache", "filp", "eventpoll_epi"];

/// The kernel memory of [`SOCKET_CACHES`] (active objects × object size, from /proc/slabinfo,
/// readable by root), KiB; 0 where it can't be read.
pub fn socket_slab_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    let bytes: u64 = text
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if !SOCKET_CACHES.contains(words.first()?) {
                return None;
            }
            let (active, size): (u64, u64) =
                (words.get(1)?.parse().ok()?, words.get(3)?.parse().ok()?);
            Some(active * size)
        })
        .sum();
    bytes / 1024
}

/// Raise this process's soft open-files limit to its hard limit.
pub fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
