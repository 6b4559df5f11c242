//! The Redis connection behind the store, the broker and the ingest consumer: one server
//! (a `ConnectionManager` that reconnects by itself) or a Redis Cluster (a cluster connection
//! that follows slot moves and failovers). Both run any command; keys decide the node.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, ProtocolVersion, PushInfo, RedisFuture, Value};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::{Backend, StartupError};

/// Longest wait for a command's answer; blocking reads stay below it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConn {
    /// Subscribe to one shard channel (the cluster connection routes it to the channel's node).
    pub async fn ssubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            RedisConn::Single(c) => redis::cmd("SSUBSCRIBE").arg(channel).exec_async(c).await,
            RedisConn::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    pub async fn sunsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            RedisConn::Single(c) => redis::cmd("SUNSUBSCRIBE").arg(channel).exec_async(c).await,
            RedisConn::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }

    /// Every key matching `pattern`, by `SCAN` on the server or on each cluster primary.
    pub async fn scan_match(&mut self, pattern: &str) -> redis::RedisResult<Vec<String>> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let mut keys = Vec::new();
        let nodes = match self {
            RedisConn::Single(_) => vec![None],
            RedisConn::Cluster(c) => {
                let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(c).await?;
                primaries(&nodes).into_iter().map(Some).collect()
            }
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
                let reply = match (&mut *self, &node) {
                    (RedisConn::Cluster(c), Some((host, port))) => {
                        let at = SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        };
                        c.route_command(cmd, RoutingInfo::SingleNode(at)).await?
                    }
                    (conn, _) => cmd.query_async(conn).await?,
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

/// Connect without pub/sub (store, ingest, `herald publish`).
pub async fn connect_plain(backend: &Backend) -> Result<RedisConn, StartupError> {
    connect(backend, None).await
}

/// Connect to the backend named by `--redis-url`. `push` (pub/sub messages) needs RESP3.
/// An unreachable address fails at once, naming the address and the cause.
pub async fn connect(
    backend: &Backend,
    push: Option<UnboundedSender<PushInfo>>,
) -> Result<RedisConn, StartupError> {
    match backend {
        Backend::Embedded => Err(StartupError("--redis-url is required".into())),
        Backend::Redis(url) => connect_single(url, push).await,
        Backend::Cluster(nodes) => connect_cluster(nodes, push).await,
    }
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

async fn connect_single(
    url: &str,
    push: Option<UnboundedSender<PushInfo>>,
) -> Result<RedisConn, StartupError> {
    let url = if push.is_some() {
        with_resp3(url)
    } else {
        url.to_owned()
    };
    let client = redis::Client::open(url.as_str())
        .map_err(|e| StartupError(format!("--redis-url: invalid Redis URL {url:?}: {e}")))?;
    let addr = client.get_connection_info().addr().to_string();
    let failed = |what: &str| StartupError(format!("--redis-url: Redis at {addr} {what}"));
    // A plain connection first: a refused or unreachable address fails at once, with its
    // cause (the manager would keep retrying).
    let mut probe = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| failed("did not answer within 5 s"))?
    .map_err(|e| failed(&format!("cannot be reached: {e}")))?;
    let _: String = redis::cmd("PING")
        .query_async(&mut probe)
        .await
        .map_err(|e| failed(&format!("does not answer PING: {e}")))?;
    let mut config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(usize::MAX)
        .set_max_delay(Duration::from_secs(2));
    if let Some(push) = push {
        // No automatic resubscription: the broker subscribes again itself after a lost
        // connection, the same way for one server and for a cluster.
        config = config.set_push_sender(push);
    }
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| failed("did not answer within 5 s"))?
    .map_err(|e| failed(&format!("cannot be reached: {e}")))?;
    Ok(RedisConn::Single(conn))
}

async fn connect_cluster(
    nodes: &[String],
    push: Option<UnboundedSender<PushInfo>>,
) -> Result<RedisConn, StartupError> {
    let named = nodes.join(",");
    let failed =
        |what: String| StartupError(format!("--redis-url: Redis Cluster at {named} {what}"));
    let mut builder = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT);
    if let Some(push) = push {
        builder = builder
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(push);
    }
    let client = builder
        .build()
        .map_err(|e| failed(format!("is not usable: {e}")))?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), client.get_async_connection())
        .await
        .map_err(|_| failed("did not answer within 10 s".into()))?
        .map_err(|e| failed(format!("cannot be reached: {e}")))?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| failed(format!("does not answer PING: {e}")))?;
    Ok(RedisConn::Cluster(conn))
}
