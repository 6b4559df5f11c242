//! The Redis connection behind the store, the broker and the ingest consumer: one server (a
//! multiplexed connection) or a Redis Cluster (a cluster connection that follows slot moves
//! and failovers). Both run any command; keys decide the node.
//!
//! An outage is answered, never waited out. Every command runs under a deadline
//! ([`COMMAND_DEADLINE`]; blocking reads get their block time on top). A connection error
//! marks the link down and drops its connection; a timeout has the probe check at once (a
//! busy Redis is not a dead one), and no answer to it marks the link down; while down, commands fail
//! at once (503 upstream) instead of queuing for a reconnect that would run them behind the
//! client's back. The link's probe (`link.rs`) notices a dead or black-holed connection,
//! connects anew and marks the link up; the new connection's number tells the broker to
//! subscribe again. (On a cluster only the probe takes the link down: one primary away
//! fails its own users' commands, by error or deadline, not everyone's; and the probe
//! connects anew when the slot owners change, since a primary that hangs never says it was
//! replaced.) Tray scripts also
//! get a deadline on Redis's own clock ([`RedisConn::write_deadline_ms`]) so bytes stuck in
//! a black hole cannot commit late.

mod link;
mod replicas;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use redis::aio::ConnectionLike;
use redis::cluster::ClusterClientBuilder;
use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, ProtocolVersion, PushInfo, PushKind, RedisError,
    RedisFuture, RedisResult, Value,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{watch, Notify};

use self::link::{clock_offset, Conn, Link, Target};
use crate::config::Backend;
use crate::error::StartupError;
use crate::metrics::{LinkLabels, Metrics};
use crate::model::now_ms;
use crate::shutdown::Shutdown;

/// Longest wait for one command's answer. With the few milliseconds around it, a request
/// that needs Redis is answered within a second even when Redis never answers.
pub const COMMAND_DEADLINE: Duration = Duration::from_millis(800);
/// A tray script refuses to run this long after it was sent (Redis's clock). Below
/// [`COMMAND_DEADLINE`], so a script that does run has 200 ms for its reply to come back
/// before Herald gives up on it and answers 503.
pub const SCRIPT_BUDGET: Duration = Duration::from_millis(600);
/// Longest wait for the first connection at start-up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Each connection attempt's own limit (start-up, then every reconnect).
const CONNECT_TIMEOUT: Duration = link::RECONNECT_TIMEOUT;

#[derive(Clone)]
pub struct RedisConn {
    link: Arc<Link>,
    /// Longest wait for one command on this handle.
    deadline: Duration,
    /// Commands on this handle may block in Redis (`XREADGROUP BLOCK`).
    blocking: bool,
    /// Commands on this handle fail as soon as the link drops their connection (all but
    /// writes with a deadline: see [`RedisConn::for_deadline_writes`]).
    ends_early: bool,
    /// `herald_redis_command_duration_seconds{link}`, once [`RedisConn::timed`].
    durations: Option<Histogram>,
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (mut conn, id) = self.checkout()?;
            self.guarded(id, conn.req_packed_command(cmd)).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (mut conn, id) = self.checkout()?;
            self.guarded(id, conn.req_packed_commands(pipeline, offset, count))
                .await
        })
    }

    fn get_db(&self) -> i64 {
        self.link.checkout().map_or(0, |(c, _)| c.get_db())
    }
}

/// [`SCRIPT_BUDGET`] after `now` (our Unix ms), on a clock `offset_ms` ahead of ours.
fn deadline_on_redis_clock(now: u64, offset_ms: i64) -> u64 {
    let ours = now as i64 + SCRIPT_BUDGET.as_millis() as i64;
    (ours + offset_ms).max(0) as u64
}

/// The error of a command refused because the link is down.
fn down() -> RedisError {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "Redis is unavailable").into()
}

/// A reply or push item as text (bulk or simple string), if it is one.
pub fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// True for failures of the connection itself (as opposed to Redis answering with an error).
pub fn is_link_failure(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() || e.is_timeout()
}

impl RedisConn {
    /// Commands on this handle (and the handles made from it) are timed in
    /// `herald_redis_command_duration_seconds`, labelled with the link's name. Blocking reads
    /// are not: their time is mostly the wait for new entries.
    pub fn timed(self, metrics: &Metrics) -> RedisConn {
        let labels = LinkLabels {
            link: self.link.name(),
        };
        let durations = metrics
            .redis_command_duration
            .get_or_create(&labels)
            .clone();
        RedisConn {
            durations: Some(durations),
            ..self
        }
    }

    /// The same link, for blocking reads that may wait `block` in Redis before answering.
    pub fn for_blocking_reads(&self, block: Duration) -> RedisConn {
        RedisConn {
            deadline: block + COMMAND_DEADLINE,
            blocking: true,
            ..self.clone()
        }
    }

    /// The same link, for writes that carry a deadline for Redis ([`Self::write_deadline_ms`]).
    /// They wait out [`COMMAND_DEADLINE`] even when the link drops their connection earlier:
    /// answering 503 before Redis would refuse them would let a write held in a black hole
    /// run after its client was told it failed.
    pub fn for_deadline_writes(&self) -> RedisConn {
        RedisConn {
            ends_early: false,
            ..self.clone()
        }
    }

    /// True while the link has a connection (the last command or probe on it succeeded).
    pub fn is_up(&self) -> bool {
        self.link.is_up()
    }

    /// Changes each time a new connection replaces a lost one: subscriptions are gone.
    pub fn reconnections(&self) -> watch::Receiver<u64> {
        self.link.generations()
    }

    /// The deadline for a tray script sent now, in Unix milliseconds on Redis's clock (ours
    /// plus the offset the probe measures with `TIME`, so skew between the hosts does not
    /// matter, only the probe's half round trip).
    pub fn write_deadline_ms(&self) -> u64 {
        deadline_on_redis_clock(now_ms(), self.link.offset_ms())
    }

    fn checkout(&self) -> RedisResult<(Conn, u64)> {
        self.link.checkout().ok_or_else(down)
    }

    /// Run one command on connection `id` under this handle's deadline; a broken connection
    /// takes the link down, a timeout has the probe check it. Ends early when the link drops the connection.
    async fn guarded<T>(
        &self,
        id: u64,
        command: impl std::future::Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        let _blocking = self.blocking.then(|| self.link.blocking());
        let started = std::time::Instant::now();
        let command = tokio::time::timeout(self.deadline, command);
        let outcome = if self.ends_early {
            tokio::select! {
                outcome = command => outcome,
                // Taken down meanwhile (by the probe, or another command's timeout).
                () = self.link.dropped(id) => return Err(down()),
            }
        } else {
            command.await
        };
        if let (Some(durations), false) = (&self.durations, self.blocking) {
            durations.observe(started.elapsed().as_secs_f64());
        }
        match outcome {
            Ok(Ok(value)) => {
                self.link.answered();
                Ok(value)
            }
            Ok(Err(e)) => {
                if is_link_failure(&e) {
                    self.link.failed(id, &e.to_string());
                } else {
                    self.link.answered();
                }
                Err(e)
            }
            Err(_) => {
                self.link.slow(id);
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "Redis did not answer in time",
                )
                .into())
            }
        }
    }

    /// Subscribe to one shard channel (the cluster connection routes it to the channel's node).
    pub async fn ssubscribe(&mut self, channel: &str) -> RedisResult<()> {
        let (conn, id) = self.checkout()?;
        match conn {
            Conn::Single(mut c) => {
                let cmd = redis::cmd("SSUBSCRIBE").arg(channel).to_owned();
                self.guarded(id, cmd.exec_async(&mut c)).await
            }
            Conn::Cluster(mut c) => self.guarded(id, c.ssubscribe(channel)).await,
        }
    }

    pub async fn sunsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        let (conn, id) = self.checkout()?;
        match conn {
            Conn::Single(mut c) => {
                let cmd = redis::cmd("SUNSUBSCRIBE").arg(channel).to_owned();
                self.guarded(id, cmd.exec_async(&mut c)).await
            }
            Conn::Cluster(mut c) => self.guarded(id, c.sunsubscribe(channel)).await,
        }
    }

    /// Whether this link is to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.link.is_cluster()
    }

    /// Whether `slot`'s primary has had a replica of late (one the cluster does not hold
    /// failed, in a read of the cluster's nodes of the last 30 s); false on one server.
    pub fn replicated(&self, slot: redis::cluster_routing::Slot) -> bool {
        self.is_cluster() && !self.link.unreplicated(slot)
    }

    /// A replica did not confirm a write in time: for a while no slot counts as replicated
    /// (a `WAIT` that times out holds up the commands behind it on the node's connection).
    /// True when writes waited for replicas until then.
    pub fn unconfirmed(&self) -> bool {
        self.link.unconfirmed()
    }

    /// Run `cmd` on the node the cluster connection's slot map names as the primary of `key`'s
    /// slot (which may lag behind a failover); `None` on one server.
    pub async fn on_slot_primary(&mut self, key: &str, cmd: Cmd) -> Option<RedisResult<Value>> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let (conn, id) = match self.checkout() {
            Ok(checked) => checked,
            Err(e) => return Some(Err(e)),
        };
        let Conn::Cluster(mut c) = conn else {
            return None;
        };
        let at = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
        Some(
            self.guarded(id, c.route_command(cmd, RoutingInfo::SingleNode(at)))
                .await,
        )
    }

    /// Every key matching `pattern`, by `SCAN` on the server or on each cluster primary.
    pub async fn scan_match(&mut self, pattern: &str) -> RedisResult<Vec<String>> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let mut keys = Vec::new();
        let nodes = if self.is_cluster() {
            let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(self).await?;
            primaries(&nodes).into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(500);
                let reply = match (self.checkout()?, &node) {
                    ((Conn::Cluster(mut c), id), Some((host, port))) => {
                        let at = SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        };
                        self.guarded(id, c.route_command(cmd, RoutingInfo::SingleNode(at)))
                            .await?
                    }
                    _ => cmd.query_async(self).await?,
                };
                let (next, batch): (u64, Vec<String>) = redis::from_redis_value(reply)?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }
}
/// `host:port` of every primary in `CLUSTER NODES` output.
fn primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                return None;
            }
            let addr = fields.get(1)?.split('@').next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// Connect without pub/sub (store, ingest, `herald publish`). `name` labels the link in logs;
/// `block` is the longest its blocking reads wait in Redis (zero: it makes none).
pub async fn connect_plain(
    backend: &Backend,
    name: &'static str,
    shutdown: Option<Shutdown>,
    block: Duration,
) -> Result<RedisConn, StartupError> {
    connect_with(backend, None, name, shutdown, block).await
}

/// Connect to the backend named by `--redis-url`. `push` (pub/sub messages) needs RESP3.
/// An unreachable address fails at once, naming the address and the cause. The link's probe
/// runs until `shutdown` (or until every handle is dropped).
pub async fn connect(
    backend: &Backend,
    push: Option<UnboundedSender<PushInfo>>,
    name: &'static str,
    shutdown: Option<Shutdown>,
) -> Result<RedisConn, StartupError> {
    connect_with(backend, push, name, shutdown, Duration::ZERO).await
}

async fn connect_with(
    backend: &Backend,
    push: Option<UnboundedSender<PushInfo>>,
    name: &'static str,
    shutdown: Option<Shutdown>,
    block: Duration,
) -> Result<RedisConn, StartupError> {
    let wake = Arc::new(Notify::new());
    // A lost pub/sub connection says so at once: wake the probe rather than wait for it.
    let push = push.map(|tx| {
        let wake = wake.clone();
        move |info: PushInfo| {
            if info.kind == PushKind::Disconnection {
                wake.notify_one();
            }
            tx.send(info)
        }
    });
    let (target, failed) = match backend {
        Backend::Embedded => return Err(StartupError("--redis-url is required".into())),
        Backend::Redis(url) => single(url, push)?,
        Backend::Cluster(nodes) => cluster(nodes, push, block)?,
    };
    let conn = tokio::time::timeout(STARTUP_TIMEOUT, target.open())
        .await
        .map_err(|_| failed("did not answer within 5 s"))?
        .map_err(|e| failed(&format!("cannot be reached: {e}")))?;
    let offset = tokio::time::timeout(STARTUP_TIMEOUT, clock_offset(conn.clone()))
        .await
        .map_err(|_| failed("did not answer within 5 s"))?
        .map_err(|e| failed(&format!("does not answer TIME: {e}")))?;
    // One node of a cluster, named as a lone server, would answer every key of another
    // node's slots with MOVED: say so now rather than fail every write later. `HELLO` (no
    // arguments: the connection's properties, its protocol unchanged) names the server's
    // mode; `INFO` would say it too, but an ACL without `@dangerous` refuses it.
    if let Conn::Single(c) = &conn {
        let hello: Value = tokio::time::timeout(
            STARTUP_TIMEOUT,
            redis::cmd("HELLO").query_async(&mut c.clone()),
        )
        .await
        .map_err(|_| failed("did not answer within 5 s"))?
        .unwrap_or(Value::Nil);
        if server_mode(&hello).as_deref() == Some("cluster") {
            return Err(failed(
                "is a node of a Redis Cluster: name the cluster as redis+cluster://host:port",
            ));
        }
    }
    let link = Link::start(target, conn, offset, wake, name, shutdown);
    Ok(RedisConn {
        link,
        deadline: COMMAND_DEADLINE,
        blocking: false,
        ends_early: true,
        durations: None,
    })
}

type Failed = Box<dyn Fn(&str) -> StartupError>;

/// The `mode` member of a `HELLO` reply (`standalone`, `sentinel` or `cluster`): a map in
/// RESP3, pairs in an array in RESP2.
fn server_mode(hello: &Value) -> Option<String> {
    let text = |v: &Value| redis::from_redis_value_ref::<String>(v).ok();
    let pairs: Vec<(&Value, &Value)> = match hello {
        Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(items) => items.chunks_exact(2).map(|p| (&p[0], &p[1])).collect(),
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .find(|(k, _)| text(k).as_deref() == Some("mode"))
        .and_then(|(_, v)| text(v))
}

fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

fn single(
    url: &str,
    push: Option<impl redis::aio::AsyncPushSender>,
) -> Result<(Target, Failed), StartupError> {
    let url = if push.is_some() {
        with_resp3(url)
    } else {
        url.to_owned()
    };
    let client = redis::Client::open(url.as_str()).map_err(|e| {
        let url = crate::config::redacted(&url);
        StartupError(format!("--redis-url: invalid Redis URL {url:?}: {e}"))
    })?;
    let addr = client.get_connection_info().addr().to_string();
    let failed = move |what: &str| StartupError(format!("--redis-url: Redis at {addr} {what}"));
    // Our own deadlines bound every command; the connection's own timeout would cut
    // blocking reads short.
    let mut config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    if let Some(push) = push {
        // No automatic resubscription: the broker subscribes again itself on a new
        // connection, the same way for one server and for a cluster.
        config = config.set_push_sender(push);
    }
    Ok((Target::Single { client, config }, Box::new(failed)))
}

fn cluster(
    nodes: &[String],
    push: Option<impl redis::aio::AsyncPushSender>,
    block: Duration,
) -> Result<(Target, Failed), StartupError> {
    let named: Vec<String> = nodes.iter().map(|n| crate::config::redacted(n)).collect();
    let named = named.join(",");
    let failed =
        move |what: &str| StartupError(format!("--redis-url: Redis Cluster at {named} {what}"));
    // Our own deadlines bound every command; the crate's answer timeout (above the longest
    // blocking read) is how soon it gives up on a node that took a command and went silent,
    // and how long such a node can hold up a slot-map refresh, which holds every command.
    let mut builder = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(link::CLUSTER_NODE_CONNECT_TIMEOUT)
        .response_timeout(block + Duration::from_secs(1));
    if let Some(push) = push {
        builder = builder
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(push);
    }
    let client = builder
        .build()
        .map_err(|e| failed(&format!("is not usable: {e}")))?;
    Ok((Target::Cluster(client), Box::new(failed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeout or a broken connection takes the link down; Redis answering with an error
    /// (a refused late script, a wrong type) does not.
    #[test]
    fn only_connection_failures_take_the_link_down() {
        let io = |kind| RedisError::from(std::io::Error::new(kind, "x"));
        assert!(is_link_failure(&io(std::io::ErrorKind::TimedOut)));
        assert!(is_link_failure(&io(std::io::ErrorKind::BrokenPipe)));
        assert!(is_link_failure(&io(std::io::ErrorKind::ConnectionRefused)));
        assert!(is_link_failure(&down()));
        let answered = RedisError::from((redis::ErrorKind::Client, "refused"));
        assert!(!is_link_failure(&answered));
    }

    /// `HELLO`'s mode, in either protocol's shape.
    #[test]
    fn hello_names_the_mode() {
        let text = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let pairs = vec![text("server"), text("redis"), text("mode"), text("cluster")];
        assert_eq!(
            server_mode(&Value::Array(pairs)).as_deref(),
            Some("cluster")
        );
        let map = vec![
            (text("proto"), Value::Int(3)),
            (text("mode"), text("standalone")),
        ];
        assert_eq!(server_mode(&Value::Map(map)).as_deref(), Some("standalone"));
        assert_eq!(server_mode(&Value::Nil), None);
    }

    /// A script's deadline is in Redis's time: skew between the hosts moves it along.
    #[test]
    fn script_deadline_follows_redis_clock() {
        let now = 1_700_000_000_000;
        assert_eq!(deadline_on_redis_clock(now, 0), now + 600);
        assert_eq!(deadline_on_redis_clock(now, 3_600_000), now + 3_600_600);
        assert_eq!(deadline_on_redis_clock(now, -5_000), now - 4_400);
    }

    /// Replicas and failed primaries are not scanned.
    #[test]
    fn primaries_are_the_live_masters() {
        let nodes = "\
a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c 127.0.0.1:7002@17002 master,fail - 0 0 3 connected
d 127.0.0.1:7003@17003 slave a 0 0 1 connected";
        assert_eq!(
            primaries(nodes),
            [("127.0.0.1".into(), 7000), ("127.0.0.1".into(), 7001)]
        );
    }
}
