//! Throwaway Redis: [`Redis`], one `redis-server`, and [`Cluster`], a Redis Cluster, each on
//! loopback ports and stopped on `Drop`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, rand_u64, send_signal, TempDir, WAIT};

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

    /// Crash (no save) and start again on the same port from the last `SAVE`: a Redis whose
    /// snapshot is older than its last writes.
    pub fn restart_from_last_save(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.start_again();
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

    /// A new synchronous connection, for looking at what Herald stored.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stop the process (`SIGSTOP`): connections stay open and nothing is answered.
    pub fn pause(&self) {
        send_signal(self.child.id(), "STOP");
    }

    pub fn resume(&self) {
        send_signal(self.child.id(), "CONT");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
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
        let (nodes, ports) = (0..5)
            .find_map(|_| {
                let ports = cluster_ports(count);
                Some((Self::spawn_nodes(&dir, &ports)?, ports))
            })
            .expect("could not start a cluster's redis-servers on free ports");
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

    /// Start a cluster-enabled redis-server on each of `ports` and wait until each listens;
    /// `None` (and none left running) if one exits first, its port taken after the probe.
    fn spawn_nodes(dir: &TempDir, ports: &[u16]) -> Option<Vec<(Child, u16)>> {
        let mut nodes: Vec<(Child, u16)> = ports
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
        if nodes.iter_mut().all(|(child, port)| listens(child, *port)) {
            return Some(nodes);
        }
        for (child, _) in &mut nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        None
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

    /// Stop (`SIGSTOP`) the primary serving `key`: it keeps its connections and answers
    /// nothing, as a hung process or a black hole. Returns its port, for [`Self::resume`].
    /// Until then, waits on the cluster (which ask every node) would hang.
    pub fn pause_primary_of(&mut self, key: &str) -> u16 {
        let port = self.primary_of(key);
        self.pause(port);
        port
    }

    /// Stop (`SIGSTOP`) the node on `port`, for [`Self::resume`].
    pub fn pause(&self, port: u16) {
        let (child, _) = self.nodes.iter().find(|(_, p)| *p == port).unwrap();
        send_signal(child.id(), "STOP");
    }

    pub fn resume(&self, port: u16) {
        let (child, _) = self.nodes.iter().find(|(_, p)| *p == port).unwrap();
        send_signal(child.id(), "CONT");
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
        let migration = self.start_migration(key, to);
        migration.migrate_the_rest();
        self.finish_migration(migration, between);
    }

    /// `SETSLOT … IMPORTING` on `to` and `… MIGRATING` on the slot's owner, for the slot of
    /// `key`: its keys then move with [`Migration::migrate`].
    pub fn start_migration(&self, key: &str, to: u16) -> Migration {
        let from = self.primary_of(key);
        assert_ne!(from, to, "the slot is already there");
        let migration = Migration {
            slot: self.slot_of(key),
            from,
            to,
            to_id: Self::id_of(to),
        };
        let slot = migration.slot.to_string();
        cli_ok(
            to,
            &["cluster", "setslot", &slot, "importing", &Self::id_of(from)],
        );
        cli_ok(
            from,
            &["cluster", "setslot", &slot, "migrating", &migration.to_id],
        );
        migration
    }

    /// `SETSLOT … NODE` on every primary, the target first, then `between`, then the others;
    /// returns once every node sees the new owner.
    pub fn finish_migration(&self, migration: Migration, between: &mut dyn FnMut()) {
        let Migration {
            slot,
            from,
            to,
            to_id,
        } = migration;
        let node = |port| {
            cli_ok(
                port,
                &["cluster", "setslot", &slot.to_string(), "node", &to_id],
            )
        };
        node(to);
        between();
        let mut others = vec![from];
        others.extend(
            self.primaries()
                .into_iter()
                .filter(|p| *p != to && *p != from),
        );
        for port in others {
            node(port);
        }
        self.wait_for_owner(slot, to);
    }
}

/// A slot on its way from one primary to another ([`Cluster::start_migration`]).
pub struct Migration {
    slot: u16,
    from: u16,
    to: u16,
    to_id: String,
}

impl Migration {
    /// `MIGRATE` every key of the slot still on the old owner, 100 at a time.
    pub fn migrate_the_rest(&self) {
        loop {
            let args = ["cluster", "getkeysinslot", &self.slot.to_string(), "100"];
            let keys: Vec<String> = Cluster::cli(self.from, &args)
                .lines()
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect();
            if keys.is_empty() {
                return;
            }
            self.migrate(&keys);
        }
    }

    /// `MIGRATE` `keys` to the new owner.
    pub fn migrate(&self, keys: &[String]) {
        let to = self.to.to_string();
        let mut args = vec!["migrate", "127.0.0.1", &to, "", "0", "5000", "keys"];
        args.extend(keys.iter().map(String::as_str));
        cli_ok(self.from, &args);
    }
}

/// `redis-cli` on `port` answers `OK`.
fn cli_ok(port: u16, args: &[&str]) {
    let reply = Cluster::cli(port, args);
    assert_eq!(reply.trim(), "OK", "{args:?} on {port}: {reply}");
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

/// Wait until `child` accepts connections on `port`; false if it exits first (could not bind).
fn listens(child: &mut Child, port: u16) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Where cluster ports come from: from 20000 up to 10000 below the ephemeral range
/// (`ip_local_port_range`), so that neither a node's port nor its cluster bus port (+10000)
/// is one the kernel hands out to outgoing connections (or to `free_port`).
fn cluster_port_range() -> std::ops::Range<u16> {
    const FIRST: u16 = 20000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let end = ephemeral_low.saturating_sub(10000).min(FIRST + 10000);
    assert!(
        end >= FIRST + 1000,
        "the ephemeral port range starts at {ephemeral_low}: no room for cluster ports below it"
    );
    FIRST..end
}

/// `count` ports in [`cluster_port_range`], not yet handed out by this process, whose cluster
/// bus ports (+10000) are free too.
fn cluster_ports(count: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static START: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let range = cluster_port_range();
    let span = u32::from(range.end - range.start);
    let start = *START.get_or_init(|| (rand_u64() % u64::from(span)) as u32);
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    let mut ports = Vec::new();
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = range.start + ((start + n) % span) as u16;
        if free(port) && free(port + 10000) {
            ports.push(port);
            if ports.len() == count {
                return ports;
            }
        }
    }
    panic!("no free ports for a cluster in {range:?}");
}
