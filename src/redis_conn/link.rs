//! The link to Redis behind one `RedisConn`: the live connection (or none while Redis is
//! away), its health, the probe that brings it back, and Redis's clock as seen from here.
//! Rule for every edit: the mutex is held only to clone or swap the connection, never across
//! an await; a connection taken down (one server's when a command finds it broken, any
//! link's when the probe gets no answer) is dropped, never waited on again.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo, Slot,
};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::replicas::Replicas;
use crate::model::now_ms;
use crate::shutdown::Shutdown;

/// How often the probe checks the link (or tries to reconnect while it is down).
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Longest wait for the probe's answer on a live connection; beyond it the link is down.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest attempt to connect anew (TCP, TLS, `HELLO`, then `TIME`) while the link is down.
/// Commands fail at once meanwhile, so this can leave room for a distant Redis.
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Each cluster node's own connect limit. A new cluster connection waits for every node it
/// was given, then for every node of the slot map, so one node that takes the connection
/// and never answers (a hung process, a black hole) costs this twice: well within
/// [`CLUSTER_RECONNECT_TIMEOUT`], so the rest of the cluster is reached without it.
pub const CLUSTER_NODE_CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// [`RECONNECT_TIMEOUT`] for a cluster.
pub const CLUSTER_RECONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// How often a cluster link compares the cluster's slot owners with its connection's, while
/// it does (see [`Link::follow_topology`]).
const TOPOLOGY_EVERY: Duration = Duration::from_secs(1);
/// How long after a cluster command missed its deadline the links compare slot owners.
const FOLLOW_FOR: Duration = Duration::from_secs(30);

/// When a command on a cluster link of this process last missed its deadline (Unix ms; 0:
/// never). A primary that hangs shows itself only this way, and the links share it: the
/// broker's subscriptions to a hung primary say nothing at all.
static CLUSTER_LATE_AT_MS: AtomicU64 = AtomicU64::new(0);

fn cluster_late_recently() -> bool {
    let at = CLUSTER_LATE_AT_MS.load(Ordering::Relaxed);
    at != 0 && now_ms().saturating_sub(at) < FOLLOW_FOR.as_millis() as u64
}
/// Least time between two connections opened for topology changes.
const REOPEN_AT_MOST_EVERY: Duration = Duration::from_secs(3);

/// Where connections come from.
pub enum Target {
    Single {
        client: redis::Client,
        config: AsyncConnectionConfig,
    },
    Cluster(ClusterClient),
}

impl Target {
    pub async fn open(&self) -> RedisResult<Conn> {
        match self {
            Target::Single { client, config } => Ok(Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await?,
            )),
            Target::Cluster(client) => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }
}

/// One live connection; clones share it.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection in use and its number (a new number per connection).
struct Current {
    conn: Option<Conn>,
    id: u64,
}

/// What a cluster link knows of the cluster's slot owners ([`slot_owners`]).
#[derive(Default)]
struct Topology {
    /// As they were when the connection in use was opened: the reads that had it opened, or
    /// the first read after it.
    of_conn: Option<String>,
    /// A different map read once: a second read alike confirms it (nodes converge on a
    /// failover one by one, so one node's word is not enough).
    pending: Option<String>,
    checked_at: Option<Instant>,
    reopened_at: Option<Instant>,
    /// Which slots' primaries have no replica, once [`Link::unreplicated`] was asked.
    replicas: Replicas,
    replicas_wanted: bool,
}

pub struct Link {
    target: Target,
    /// `None` while Redis is away. A std mutex: held only to clone or swap, never across an await.
    current: Mutex<Current>,
    /// The number of the connection in use; it changes when a new connection replaces a lost
    /// one, which is when subscriptions must be made again (the broker watches it).
    generation: watch::Sender<u64>,
    /// One more than the number of the last connection dropped: commands still waiting on a
    /// dropped connection fail at once instead of waiting out their deadline.
    dropped: watch::Sender<u64>,
    /// Redis's clock minus ours, in milliseconds, measured by every probe.
    offset_ms: AtomicI64,
    /// Blocking commands in flight. The probe's `TIME` would queue behind them and look like
    /// a dead link, so it waits; their own (longer) deadline watches the link meanwhile.
    blocking: AtomicUsize,
    /// Replies received so far. A probe that times out while other replies keep arriving
    /// waited behind a burst of commands (a reconnect storm's subscribes): busy, not dead.
    answered: AtomicU64,
    /// Wakes the probe at once (a command took the link down, or a pub/sub connection said
    /// it was lost).
    wake: Arc<Notify>,
    /// Which link this is, for logs: `store`, `broker`, `ingest`.
    name: &'static str,
    /// Cluster links only. A std mutex: held only to read or write, never across an await.
    topology: Mutex<Topology>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    /// A link that is up with `conn` (already checked), whose probe runs until `shutdown` or
    /// until the link is dropped.
    pub fn start(
        target: Target,
        conn: Conn,
        offset_ms: i64,
        wake: Arc<Notify>,
        name: &'static str,
        shutdown: Option<Shutdown>,
    ) -> Arc<Link> {
        let link = Arc::new(Link {
            target,
            current: Mutex::new(Current {
                conn: Some(conn),
                id: 0,
            }),
            generation: watch::Sender::new(0),
            dropped: watch::Sender::new(0),
            offset_ms: AtomicI64::new(offset_ms),
            blocking: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            wake: wake.clone(),
            name,
            topology: Mutex::default(),
        });
        tokio::spawn(probe(Arc::downgrade(&link), wake, shutdown));
        link
    }

    /// The connection in use and its number, or `None` while down.
    pub fn checkout(&self) -> Option<(Conn, u64)> {
        let current = lock(&self.current);
        current.conn.clone().map(|c| (c, current.id))
    }

    /// The name it was started with (`store`, `broker`, `ingest`), for logs and metrics.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether this link is to a Redis Cluster (known from its target, up or down).
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    pub fn is_up(&self) -> bool {
        lock(&self.current).conn.is_some()
    }

    /// A command on connection `id` timed out or found it broken. One server's connection is
    /// dropped at once. A cluster connection is left to the probe: it reconnects to single
    /// nodes by itself, and one primary away must not take every user down.
    pub fn failed(&self, id: u64, reason: &str) {
        match self.target {
            Target::Single { .. } => self.lost(id, reason),
            Target::Cluster(_) => {
                tracing::debug!(link = self.name, reason, "cluster command failed")
            }
        }
    }

    /// A command on connection `id` got no answer within its deadline. A busy Redis (a
    /// reconnect storm queues thousands of commands) is not a dead one: the probe checks
    /// now, on the same connection, and takes the link down only if `TIME` gets no answer
    /// either (a black hole is then down within [`PROBE_TIMEOUT`] more).
    pub fn slow(&self, id: u64) {
        if self.is_cluster() {
            CLUSTER_LATE_AT_MS.store(now_ms(), Ordering::Relaxed);
        }
        tracing::debug!(
            link = self.name,
            id,
            "a command got no answer in time; probing"
        );
        self.wake.notify_one();
    }

    /// Connection `id` failed (timed out or broke): drop it, so that nothing more is sent on
    /// it and commands fail at once until the probe connects again.
    fn lost(&self, id: u64, reason: &str) {
        let dropped = {
            let mut current = lock(&self.current);
            if current.id == id {
                current.conn.take()
            } else {
                None
            }
        };
        if dropped.is_some() {
            self.dropped.send_replace(id + 1);
            tracing::warn!(
                link = self.name,
                reason,
                "Redis link down; requests that need Redis answer 503 until it is back: check \
                 that Redis runs and --redis-url; streams stay open and catch up when it is back"
            );
            self.wake.notify_one();
        }
    }

    /// Put `conn` in use (a new number: subscriptions are made again on it). Commands still
    /// running on the one it replaces finish there.
    fn install(&self, conn: Conn, topology: Option<String>) {
        let id = {
            let mut current = lock(&self.current);
            current.id += 1;
            current.conn = Some(conn);
            current.id
        };
        {
            let mut t = lock(&self.topology);
            t.of_conn = topology;
            t.pending = None;
        }
        self.generation.send_replace(id);
    }

    /// Whether `slot`'s primary has had no replica of late ([`Replicas`]; true before the
    /// cluster's nodes were first read, and on one server). The first question has the link
    /// read them from then on.
    pub fn unreplicated(&self, slot: Slot) -> bool {
        let mut t = lock(&self.topology);
        t.replicas_wanted = true;
        t.replicas.unreplicated(slot, Instant::now())
    }

    /// A replica did not confirm a write in time ([`Replicas::unconfirmed`]).
    pub fn unconfirmed(&self) -> bool {
        lock(&self.topology).replicas.unconfirmed(Instant::now())
    }

    /// Read which primaries have a replica, every few seconds once asked ([`Replicas`]).
    async fn read_replicas(&self, conn: Conn) {
        let now = Instant::now();
        {
            let mut t = lock(&self.topology);
            if !t.replicas_wanted || !t.replicas.try_now(now) {
                return;
            }
        }
        let Conn::Cluster(mut c) = conn else { return };
        let any = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("NODES");
        let read = tokio::time::timeout(PROBE_TIMEOUT, c.route_command(cmd, any)).await;
        if let Ok(Ok(reply)) = read {
            if let Ok(nodes) = redis::from_redis_value::<String>(reply) {
                lock(&self.topology).replicas.read(&nodes, now);
            }
        }
    }

    /// A cluster connection follows failovers by the answers it gets (a `MOVED`, a refused
    /// connection), but a primary that takes commands and never answers (a hung process, a
    /// black hole) tells it nothing: its slots stay routed there after the cluster has
    /// promoted a replica. So the link reads the slot owners from any node once per
    /// connection, and then, while cluster commands miss their deadlines (within
    /// [`FOLLOW_FOR`]), every [`TOPOLOGY_EVERY`]; when they differ from its connection's
    /// (twice in a row), it connects anew, which reads the new map and leaves the silent node
    /// out. A planned failover or a slot move, which the connection follows by itself, costs
    /// no new connection.
    async fn follow_topology(&self, conn: Conn) {
        let now = Instant::now();
        let due = {
            let t = lock(&self.topology);
            (t.of_conn.is_none() || cluster_late_recently())
                && t.checked_at.is_none_or(|at| now >= at + TOPOLOGY_EVERY)
        };
        if !due {
            return;
        }
        lock(&self.topology).checked_at = Some(now);
        let Ok(Ok(owners)) = tokio::time::timeout(PROBE_TIMEOUT, slot_owners(conn)).await else {
            return;
        };
        let reopen = {
            let mut t = lock(&self.topology);
            match &t.of_conn {
                None => {
                    t.of_conn = Some(owners);
                    false
                }
                Some(known) if *known == owners => {
                    t.pending = None;
                    false
                }
                Some(_) => {
                    let confirmed = t.pending.as_ref() == Some(&owners);
                    t.pending = Some(owners);
                    confirmed
                        && t.reopened_at
                            .is_none_or(|at| now >= at + REOPEN_AT_MOST_EVERY)
                }
            }
        };
        if !reopen {
            return;
        }
        let owners = {
            let mut t = lock(&self.topology);
            t.reopened_at = Some(now);
            t.pending.take()
        };
        match tokio::time::timeout(CLUSTER_RECONNECT_TIMEOUT, self.target.open()).await {
            Ok(Ok(conn)) => {
                self.install(conn, owners);
                tracing::info!(
                    link = self.name,
                    "Redis Cluster slots changed owners; connected anew to follow them"
                );
            }
            Ok(Err(e)) => tracing::debug!(link = self.name, error = %e, "reconnect failed"),
            Err(_) => tracing::debug!(link = self.name, "reconnect got no answer"),
        }
    }

    /// Resolves once connection `id` has been dropped (at once if it already was).
    pub fn dropped(&self, id: u64) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut dropped = self.dropped.subscribe();
        async move {
            let _ = dropped.wait_for(|&d| d > id).await;
        }
    }

    pub fn generations(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Redis answered a command on this link (with a value or an error of its own).
    pub fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a blocking command for as long as the guard lives.
    pub fn blocking(self: &Arc<Self>) -> BlockingGuard {
        self.blocking.fetch_add(1, Ordering::Relaxed);
        BlockingGuard(self.clone())
    }

    /// One probe round: check the connection in use, or connect anew while down.
    async fn check(&self) {
        match self.checkout() {
            Some((conn, id)) => {
                // Not held up by blocking reads: `CLUSTER NODES` and `SLOTS` go to any node.
                if self.is_cluster() {
                    tokio::join!(
                        self.read_replicas(conn.clone()),
                        self.follow_topology(conn.clone())
                    );
                }
                if self.blocking.load(Ordering::Relaxed) > 0 {
                    return;
                }
                let before = self.answered.load(Ordering::Relaxed);
                match tokio::time::timeout(PROBE_TIMEOUT, clock_offset(conn)).await {
                    Ok(Ok(offset)) => self.offset_ms.store(offset, Ordering::Relaxed),
                    Ok(Err(e)) => self.lost(id, &e.to_string()),
                    Err(_) if self.answered.load(Ordering::Relaxed) != before => {
                        tracing::debug!(link = self.name, "probe waited behind other replies");
                    }
                    Err(_) => self.lost(id, "no answer to the probe"),
                }
            }
            None => {
                let budget = match self.target {
                    Target::Single { .. } => RECONNECT_TIMEOUT,
                    Target::Cluster(_) => CLUSTER_RECONNECT_TIMEOUT,
                };
                let opened = tokio::time::timeout(budget, async {
                    let conn = self.target.open().await?;
                    let offset = clock_offset(conn.clone()).await?;
                    Ok::<_, redis::RedisError>((conn, offset))
                })
                .await;
                match opened {
                    Ok(Ok((conn, offset))) => {
                        self.offset_ms.store(offset, Ordering::Relaxed);
                        self.install(conn, None);
                        tracing::info!(link = self.name, "Redis link back");
                    }
                    Ok(Err(e)) => tracing::debug!(link = self.name, error = %e, "Redis still away"),
                    Err(_) => tracing::debug!(link = self.name, "Redis still away (no answer)"),
                }
            }
        }
    }
}

pub struct BlockingGuard(Arc<Link>);

impl Drop for BlockingGuard {
    fn drop(&mut self) {
        self.0.blocking.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Check the link every [`PROBE_EVERY`] (at once when woken) until shutdown or until the
/// link is gone. Holds the link only while checking.
async fn probe(link: Weak<Link>, wake: Arc<Notify>, shutdown: Option<Shutdown>) {
    let stop = async {
        match &shutdown {
            Some(s) => s.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = wake.notified() => {}
            _ = &mut stop => return,
        }
        let Some(link) = link.upgrade() else { return };
        tokio::select! {
            _ = link.check() => {}
            _ = &mut stop => return,
        }
    }
}

/// Redis's clock minus ours, in milliseconds, from `TIME` (taken at the middle of the round
/// trip, so the error is at most half of it). On a cluster `TIME` goes to every primary and
/// the first answer counts: the cluster is up while any primary answers (one primary away is
/// its own users' outage, answered by deadlines while the cluster fails it over).
pub async fn clock_offset(mut conn: Conn) -> RedisResult<i64> {
    let sent = now_ms() as i64;
    let time = redis::cmd("TIME");
    let reply = match &mut conn {
        Conn::Single(c) => time.query_async(c).await?,
        Conn::Cluster(c) => {
            let any = RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::OneSucceeded),
            ));
            c.route_command(time, any).await?
        }
    };
    let (secs, micros): (i64, i64) = redis::from_redis_value(reply)?;
    let received = now_ms() as i64;
    Ok(offset(sent, received, secs, micros))
}

/// Which primary serves which slots, as one node of the cluster (any) sees it: one
/// `<first slot>-<last slot>=<node id>` line per range, in slot order (the node's id, not its
/// address: nodes may announce one primary under different endpoints, or none).
async fn slot_owners(conn: Conn) -> RedisResult<String> {
    let Conn::Cluster(mut c) = conn else {
        return Ok(String::new());
    };
    let any = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
    let mut slots = redis::cmd("CLUSTER");
    slots.arg("SLOTS");
    let reply = c.route_command(slots, any).await?;
    let ranges: Vec<Vec<Value>> = redis::from_redis_value(reply)?;
    let mut owners: Vec<(i64, String)> = ranges
        .into_iter()
        .filter_map(|range| {
            let mut fields = range.into_iter();
            let first: i64 = redis::from_redis_value(fields.next()?).ok()?;
            let last: i64 = redis::from_redis_value(fields.next()?).ok()?;
            let primary: Vec<Value> = redis::from_redis_value(fields.next()?).ok()?;
            let id: String = redis::from_redis_value(primary.into_iter().nth(2)?).ok()?;
            Some((first, format!("{first}-{last}={id}")))
        })
        .collect();
    owners.sort();
    let lines: Vec<String> = owners.into_iter().map(|(_, line)| line).collect();
    Ok(lines.join("\n"))
}

/// Redis's clock (`TIME`: seconds, microseconds) minus ours at the middle of the round trip
/// from `sent` to `received` (our Unix ms).
fn offset(sent: i64, received: i64, secs: i64, micros: i64) -> i64 {
    secs * 1000 + micros / 1000 - (sent + received) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offset is taken at the middle of the round trip, in either direction of skew.
    #[test]
    fn offset_is_measured_at_the_middle_of_the_round_trip() {
        // Redis one hour ahead; TIME answered at 1_000_010.5 ms of our clock.
        assert_eq!(offset(1_000_000, 1_000_020, 4_600, 10_500), 3_600_000);
        // Redis five seconds behind.
        assert_eq!(offset(1_000_000, 1_000_000, 995, 0), -5_000);
    }
}
