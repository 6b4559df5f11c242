//! Redis ingest, for services that only speak Redis:
//! `XADD herald:ingest * publish '<a POST /publish body>'`. Every node reads the stream as a
//! member of the consumer group `herald`, so each entry is handled by one node, and
//! acknowledges an entry only after it is stored. An entry that cannot be parsed, is invalid
//! or is larger than an HTTP body may be (`model::MAX_BODY_BYTES`) goes to `herald:ingest:dead`
//! with the reason and is acknowledged, so it never blocks the entries behind it. Both
//! streams stay bounded: a handled entry is deleted in the round trip that acknowledges it,
//! the dead stream is capped near [`DEAD_MAXLEN`] entries, and a dead letter keeps at most
//! [`DEAD_COPY_BYTES`] of the body (with its original size). Entries left pending by a node that died are claimed by
//! another after [`CLAIM_IDLE`]; a redelivered entry stores nothing new, because the entry id
//! serves as its idempotency key when the body has none. A read of up to [`BATCH`] entries is
//! handled in [`LANES`] lanes at once (one user's entries in one lane, in order) and
//! acknowledged in one round trip; an entry not stored yet holds up the rest of its lane
//! only (see [`Ingest::run`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use redis::AsyncCommands;
use tokio::time::Instant;

use super::{give_up, parse, pause, truncate, unparsable, DEAD_COPY_BYTES};
use crate::config::Backend;
use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::publish::{accepted_at, publish_accepted, PublishRequest};
use crate::redis_conn::{connect_plain, RedisConn};
use crate::shutdown::Shutdown;
use crate::store::Store;

pub const STREAM: &str = "herald:ingest";
pub const DEAD: &str = "herald:ingest:dead";
pub const GROUP: &str = "herald";
/// An entry pending this long on another consumer (a node that died) is taken over.
pub const CLAIM_IDLE: Duration = Duration::from_secs(30);
/// How often to look for such entries.
const CLAIM_EVERY: Duration = Duration::from_secs(5);
/// A consumer of the group holding no pending entry that has not read for this long, and
/// whose node is not alive (its heartbeat key, `store::nodes`), is removed (a node that
/// crashed: its entries were taken over after [`CLAIM_IDLE`]). A live node reads every
/// [`BLOCK`] at the longest, but Redis before 7.2 counts `idle` from the last read that got
/// entries, so a quiet stream makes live consumers look idle too; should one be removed all
/// the same, its next read makes it a consumer again.
const CONSUMER_IDLE: Duration = Duration::from_secs(30);
/// Remove the consumers of group ARGV[1] on stream KEYS[1] that hold no pending entry: the
/// one named ARGV[2] (this node, leaving), or, when ARGV[2] is '', every one but ARGV[3] and
/// the live nodes ARGV[5..] that has not read for ARGV[4] ms. One script, so that no consumer
/// takes an entry between the check and its removal (which would orphan it). Returns how
/// many were removed.
const PRUNE: &str = r#"
local live = {}
for i = 5, #ARGV do live[ARGV[i]] = true end
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  local gone = ARGV[2] ~= '' and f.name == ARGV[2]
    or ARGV[2] == '' and f.name ~= ARGV[3] and not live[f.name]
      and f.idle >= tonumber(ARGV[4])
  if gone and f.pending == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f.name)
    removed = removed + 1
  end
end
return removed
"#;
/// Park an entry in the dead stream KEYS[1] once. KEYS[2] (`herald:{herald:ingest:dead}:<entry
/// id>`, in the dead stream's slot) marks it parked until it is acknowledged (then deleted;
/// at most ARGV[2] ms): a node that dies between parking an entry and acknowledging it leaves
/// the entry to another, which must not park it twice. The mark is set after the `XADD`, so
/// a failed one leaves none. ARGV: 1 the stream's cap (`MAXLEN ~`), 2 the mark's life, then
/// the fields. Returns 1 when parked, 0 when it already was.
const PARK: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
"#;
/// The mark of entry `id` parked ([`PARK`]), in the dead stream's slot.
fn parked_mark(id: &str) -> String {
    format!("herald:{{{DEAD}}}:{id}")
}
/// How long an entry's mark says it was parked: longer than any node takes to come back
/// for the entries it left pending, or another to take them over ([`CLAIM_IDLE`]).
const PARKED_MARK: Duration = Duration::from_secs(24 * 3600);
/// Longest wait of one blocking read (its command deadline is this plus the usual one). Short,
/// because a node that stops leaves its consumer group behind the read in flight: SIGTERM
/// waits for it. An idle node reads twice a second.
const BLOCK: Duration = Duration::from_millis(500);
/// Wait before trying again after a failure.
const RETRY: Duration = Duration::from_secs(1);
/// Entries read at once.
const BATCH: usize = 100;
/// Entries of one read handled at once (one user's entries always in order, see `Item::lane`).
const LANES: usize = 16;
/// Entries this node leaves pending (behind one that failed) before it stops reading new
/// ones until the retry: while a cluster shard is away, what arrives waits in the stream
/// rather than in this node's pending list, which every retry reads whole.
const MAX_LEFT: usize = 10 * BATCH;
/// The dead stream keeps about this many entries (`XADD … MAXLEN ~`), the oldest go first.
pub const DEAD_MAXLEN: usize = 10_000;

pub struct Ingest {
    conn: RedisConn,
    /// The same link, with a deadline that leaves room for [`BLOCK`].
    blocking: RedisConn,
    store: Store,
    metrics: Metrics,
    node: String,
    /// Failed publishes of entries still pending here, by entry id (see `give_up`).
    attempts: Mutex<HashMap<String, u32>>,
}

/// What became of one entry (before its acknowledgement).
enum Outcome {
    Stored,
    Dead,
    /// The store failed: the entry stays pending and is tried again.
    Retry,
}

impl Ingest {
    /// `conn` must be this loop's own connection: blocking reads hold it.
    /// The consumer for a Redis backend, on its own connection (blocking reads hold one);
    /// `None` in embedded mode, which has no ingest stream.
    pub async fn connect(
        backend: &Backend,
        store: Store,
        metrics: Metrics,
        node: String,
        shutdown: &Shutdown,
    ) -> Result<Option<Self>, StartupError> {
        if *backend == Backend::Embedded {
            return Ok(None);
        }
        let conn = connect_plain(backend, "ingest", Some(shutdown.clone()), BLOCK)
            .await?
            .timed(&metrics);
        Ok(Some(Ingest::new(conn, store, metrics, node)))
    }

    pub fn new(conn: RedisConn, store: Store, metrics: Metrics, node: String) -> Self {
        Ingest {
            blocking: conn.for_blocking_reads(BLOCK),
            conn,
            store,
            metrics,
            node,
            attempts: Mutex::default(),
        }
    }

    /// Consume until shutdown. An entry not stored yet stays pending and is tried again
    /// [`RETRY`] later, with every pending entry of this consumer, in stream order; until then
    /// new entries of its lane wait behind it (pending too), and the other lanes go on. So
    /// an entry Redis refuses (a key of the wrong type) or a cluster shard that is away holds
    /// up its own lanes only.
    pub async fn run(mut self, shutdown: Shutdown) {
        self.consume(&shutdown).await;
        // Leaving: this node's consumer goes, unless entries are pending on it (another node
        // takes them over, then removes it). On the blocking handle: the script waits behind
        // a blocking read still in flight (at most [`BLOCK`]).
        let node = self.node.clone();
        let mut conn = self.blocking.clone();
        match self.prune(&mut conn, &node, &[]).await {
            Ok(1) => tracing::debug!("ingest: left the consumer group"),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "ingest: could not leave the consumer group"),
        }
    }

    /// Remove `leaving` from the consumer group, or with `""` every other consumer idle for
    /// [`CONSUMER_IDLE`] but those of the `live` nodes; in either case only a consumer with
    /// no pending entry ([`PRUNE`]).
    async fn prune(
        &self,
        conn: &mut RedisConn,
        leaving: &str,
        live: &[String],
    ) -> redis::RedisResult<usize> {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(PRUNE));
        SCRIPT
            .key(STREAM)
            .arg(GROUP)
            .arg(leaving)
            .arg(&self.node)
            .arg(CONSUMER_IDLE.as_millis() as u64)
            .arg(live)
            .invoke_async(conn)
            .await
    }

    /// Remove the consumers of nodes that stopped (see [`CONSUMER_IDLE`]); not while which
    /// nodes live is unknown.
    async fn prune_stopped(&self) {
        let live = match self.store.nodes().await {
            Ok(nodes) => nodes.into_iter().map(|n| n.node).collect::<Vec<_>>(),
            Err(e) => {
                tracing::debug!(error = %e, "ingest: live nodes unknown, consumers left");
                return;
            }
        };
        match self.prune(&mut self.conn.clone(), "", &live).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "ingest: removed consumers of stopped nodes"),
            Err(e) => tracing::debug!(error = %e, "ingest: consumer clean-up failed"),
        }
    }

    async fn consume(&mut self, shutdown: &Shutdown) {
        // Our own pending entries first (left over from a previous run of this node).
        let mut backlog = true;
        // Lanes with an entry pending here that is not done, and when to try them again.
        let mut held = Lanes::default();
        let mut retry_at: Option<Instant> = None;
        // Entries left pending here (not done), as of the last pass over them.
        let mut left = 0;
        let mut next_claim = Instant::now();
        // Whether the last try failed: an outage is logged at warn once, when it starts.
        let mut failing = false;
        // Whether the consumer group is known to exist: created (or found) once, and again
        // after any failure (a Redis that lost its data answers `NOGROUP`).
        let mut grouped = false;
        while !shutdown.is_stopping() {
            if !grouped {
                if let Err(e) = self.ensure_group().await {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(
                            error = %e,
                            "ingest: cannot create the consumer group on {STREAM}: check that \
                             Redis runs and --redis-url; retried every second (logged again \
                             once it reads)"
                        );
                    }
                    if pause(shutdown, RETRY).await {
                        return;
                    }
                    continue;
                }
                grouped = true;
            }
            if Instant::now() >= next_claim {
                next_claim = Instant::now() + CLAIM_EVERY;
                backlog |= self.claim_abandoned().await;
                self.prune_stopped().await;
                self.sample_lag().await;
            }
            let pending = backlog || retry_at.is_some_and(|at| Instant::now() >= at);
            // New entries would only join the pending ones: wait for the retry instead.
            let wait = held.is_full() || left >= MAX_LEFT;
            let pass = if pending {
                tokio::select! {
                    r = self.pending_pass() => r,
                    _ = shutdown.wait() => return,
                }
            } else if let (true, Some(at)) = (wait, retry_at) {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => continue,
                    _ = shutdown.wait() => return,
                }
            } else {
                let block = retry_at.map_or(BLOCK, |at| {
                    (at - Instant::now()).clamp(Duration::from_millis(1), BLOCK)
                });
                tokio::select! {
                    r = self.read(">", Some(block)) => match r {
                        Ok(entries) => Ok(self.handle_all(&entries, held).await),
                        Err(e) => Err(e),
                    },
                    _ = shutdown.wait() => return,
                }
            };
            match pass {
                Err(e) => {
                    // Redis may have handed this node entries whose answer was lost (they
                    // are pending for it now): read its own pending entries first again,
                    // rather than leave them to the claim of abandoned ones.
                    backlog = true;
                    grouped = false;
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(
                            error = %e,
                            "ingest: reading {STREAM} failed: check that Redis runs and \
                             --redis-url; retried every second, entries wait in the stream \
                             (logged again once it reads)"
                        );
                    }
                    if pause(shutdown, RETRY).await {
                        return;
                    }
                }
                Ok(handled) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("ingest: reading {STREAM} again");
                    }
                    if pending {
                        (held, left) = (handled.undone, handled.left);
                        backlog = false;
                    } else {
                        (held, left) = (held.with(handled.undone), left + handled.left);
                    }
                    // Entries handled but not acknowledged are pending too: the retry's pass
                    // reads them again (and stores nothing twice).
                    let retry = !held.is_empty() || !handled.acked;
                    retry_at = match retry_at {
                        Some(at) if retry && !pending => Some(at),
                        _ => retry.then(|| Instant::now() + RETRY),
                    };
                }
            }
        }
    }

    /// Every entry pending for this consumer, in stream order, a read at a time: none of a
    /// lane after one of its entries that is not done.
    async fn pending_pass(&mut self) -> redis::RedisResult<Handled> {
        let mut from = "0".to_owned();
        let mut all = Handled {
            undone: Lanes::default(),
            left: 0,
            acked: true,
        };
        loop {
            let entries = self.read(&from, None).await?;
            let handled = self.handle_all(&entries, all.undone).await;
            all.undone = all.undone.with(handled.undone);
            all.left += handled.left;
            all.acked &= handled.acked;
            match entries.last() {
                Some(last) if entries.len() == BATCH => from = last.id.clone(),
                _ => return Ok(all),
            }
        }
    }

    async fn ensure_group(&mut self) -> redis::RedisResult<()> {
        let created: redis::RedisResult<()> =
            self.conn.xgroup_create_mkstream(STREAM, GROUP, "0").await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Up to [`BATCH`] entries after `from`: new ones with `>` (waiting up to `block` for
    /// them), else this consumer's pending ones.
    async fn read(
        &mut self,
        from: &str,
        block: Option<Duration>,
    ) -> redis::RedisResult<Vec<StreamId>> {
        let mut options = StreamReadOptions::default()
            .group(GROUP, &self.node)
            .count(BATCH);
        if let Some(block) = block {
            options = options.block(block.as_millis() as usize);
        }
        let reply: Option<StreamReadReply> = self
            .blocking
            .xread_options(&[STREAM], &[from], &options)
            .await?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Take over entries another consumer left pending for [`CLAIM_IDLE`]; true if any.
    async fn claim_abandoned(&mut self) -> bool {
        let options = StreamAutoClaimOptions::default().count(BATCH);
        let idle = CLAIM_IDLE.as_millis() as u64;
        let claimed: redis::RedisResult<StreamAutoClaimReply> = self
            .conn
            .xautoclaim_options(STREAM, GROUP, &self.node, idle, "0-0", options)
            .await;
        match claimed {
            Ok(reply) if !reply.claimed.is_empty() => {
                tracing::info!(
                    count = reply.claimed.len(),
                    "ingest: took over entries of a stopped node"
                );
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(error = %e, "ingest: claim failed");
                false
            }
        }
    }

    /// Set the lag gauges: entries pending (read, not yet acknowledged) from `XPENDING`, and
    /// the backlog not yet read as `XLEN` minus those, since handled entries are deleted as
    /// they are acknowledged. Two O(1) commands in one round trip, every [`CLAIM_EVERY`];
    /// every node reports the same stream-wide numbers.
    async fn sample_lag(&mut self) {
        let sampled: redis::RedisResult<(u64, (u64, redis::Value, redis::Value, redis::Value))> =
            redis::pipe()
                .xlen(STREAM)
                .cmd("XPENDING")
                .arg(STREAM)
                .arg(GROUP)
                .query_async(&mut self.conn)
                .await;
        match sampled {
            Ok((len, (pending, ..))) => {
                let metrics = &self.metrics;
                metrics.redis_ingest_pending.set(pending as i64);
                metrics
                    .redis_ingest_backlog
                    .set(len.saturating_sub(pending) as i64);
            }
            Err(e) => tracing::debug!(error = %e, "ingest: lag not sampled"),
        }
    }

    /// Handle one read's entries and acknowledge those done (stored or dead-lettered) in one
    /// round trip. Entries run in [`LANES`] lanes by their first recipient, each lane in
    /// stream order: the store sees up to `LANES` publishes at once (its scripts pipelined on
    /// one connection), and one user's entries stay in order. A lane in `held`, and the rest
    /// of a lane after an entry to try again, is left pending.
    async fn handle_all(&mut self, entries: &[StreamId], held: Lanes) -> Handled {
        let mut lanes: Vec<Vec<Item<'_>>> = (0..LANES).map(|_| Vec::new()).collect();
        for entry in entries {
            let item = Item::read(entry);
            lanes[item.lane()].push(item);
        }
        let this = &*self;
        let outcomes = futures_util::future::join_all(lanes.into_iter().enumerate().map(
            |(lane, items)| async move {
                let (mut done, mut parked) = (Vec::new(), Vec::new());
                if held.has(lane) {
                    return (done, parked, !items.is_empty());
                }
                let count = items.len();
                for item in items {
                    let id = item.entry.id.as_str();
                    match this.handle(item).await {
                        Outcome::Retry => break,
                        Outcome::Stored => done.push(id),
                        Outcome::Dead => {
                            done.push(id);
                            parked.push(id);
                        }
                    }
                }
                let undone = done.len() < count;
                (done, parked, undone)
            },
        ))
        .await;
        let mut undone = Lanes::default();
        let (mut done, mut parked) = (Vec::new(), Vec::new());
        for (lane, (ids, dead, left)) in outcomes.into_iter().enumerate() {
            if left {
                undone = undone.with(Lanes::one(lane));
            }
            done.extend(ids);
            parked.extend(dead);
        }
        let left = entries.len() - done.len();
        let acked = done.is_empty() || self.ack(&done).await.is_ok();
        if acked && !parked.is_empty() {
            // Acknowledged, no node takes them over: their marks are done with (else they
            // expire by themselves).
            let marks: Vec<String> = parked.iter().map(|id| parked_mark(id)).collect();
            let _: redis::RedisResult<()> = self.conn.del(marks).await;
        }
        Handled {
            undone,
            left,
            acked,
        }
    }

    /// Store one entry or park it with the reason; not acknowledged yet.
    async fn handle(&self, item: Item<'_>) -> Outcome {
        let Item {
            entry,
            raw,
            request,
        } = item;
        let mut request = match request {
            Ok(r) => r,
            Err(reason) => {
                self.metrics.publish_failed("redis", unparsable(&raw));
                return self.dead(entry, &reason, &raw).await;
            }
        };
        request
            .idempotency_key
            .get_or_insert_with(|| format!("ingest:{}", entry.id));
        // Accepted when it was written: the stream id's first part is Redis's clock then.
        let written = entry.id.split('-').next().and_then(|ms| ms.parse().ok());
        let accepted = accepted_at(written);
        let result = publish_accepted(&self.store, Some(&self.metrics), &request, accepted).await;
        if let Err(e) = &result {
            self.metrics.publish_failed("redis", e.code());
        }
        let Err(e) = result else {
            self.forget(&entry.id);
            return Outcome::Stored;
        };
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            let n = attempts.entry(entry.id.clone()).or_default();
            *n += 1;
            *n
        };
        match give_up(&e, attempt) {
            // Once per entry at warn (an outage fails every retry alike), then at debug.
            None if attempt == 1 => {
                tracing::warn!(
                    error = %e.detail(),
                    id = entry.id,
                    "ingest: entry not stored yet; it stays pending and is retried (an outage of \
                     Redis as long as it lasts, other failures a few times; further tries logged \
                     at debug)"
                );
                Outcome::Retry
            }
            None => {
                tracing::debug!(error = %e.detail(), id = entry.id, "ingest: entry not stored yet");
                Outcome::Retry
            }
            Some(reason) => {
                self.forget(&entry.id);
                self.dead(entry, &reason, &raw).await
            }
        }
    }

    fn forget(&self, id: &str) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        attempts.remove(id);
    }

    /// Park an entry in the dead-letter stream with the reason (and the start of its body).
    async fn dead(&self, entry: &StreamId, reason: &str, raw: &[u8]) -> Outcome {
        let size = raw.len().to_string();
        // Its bytes as they came: text cut between characters, other bytes anywhere.
        let copy = match std::str::from_utf8(raw) {
            Ok(text) => truncate(text, DEAD_COPY_BYTES).as_bytes(),
            Err(_) => &raw[..raw.len().min(DEAD_COPY_BYTES)],
        };
        let fields: [(&str, &[u8]); 4] = [
            ("id", entry.id.as_bytes()),
            ("reason", reason.as_bytes()),
            ("publish", copy),
            ("size", size.as_bytes()),
        ];
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(PARK));
        let mut park = SCRIPT.key(DEAD);
        park.key(parked_mark(&entry.id))
            .arg(DEAD_MAXLEN)
            .arg(PARKED_MARK.as_millis() as u64);
        for (name, value) in fields {
            park.arg(name).arg(value);
        }
        match park.invoke_async::<u8>(&mut self.conn.clone()).await {
            Ok(1) => {
                tracing::info!(id = entry.id, reason, "ingest: entry moved to {DEAD}");
                Outcome::Dead
            }
            Ok(_) => {
                tracing::info!(
                    id = entry.id,
                    "ingest: entry already in {DEAD} (a node stopped before acknowledging it)"
                );
                Outcome::Dead
            }
            Err(_) => Outcome::Retry,
        }
    }

    /// Acknowledge and delete handled entries, in one round trip (`MULTI`: both or neither).
    async fn ack(&mut self, ids: &[&str]) -> redis::RedisResult<()> {
        redis::pipe()
            .atomic()
            .xack(STREAM, GROUP, ids)
            .ignore()
            .xdel(STREAM, ids)
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await
    }
}

/// What became of a read's entries.
struct Handled {
    /// Lanes with an entry left pending.
    undone: Lanes,
    /// Entries left pending.
    left: usize,
    /// Those done were acknowledged.
    acked: bool,
}

/// A set of lanes (`0..LANES`).
#[derive(Clone, Copy, Default, PartialEq, Debug)]
struct Lanes(u32);

const _: () = assert!(LANES <= 32, "Lanes holds 32");

impl Lanes {
    fn is_full(self) -> bool {
        self.0.count_ones() as usize == LANES
    }

    fn one(lane: usize) -> Self {
        Lanes(1 << lane)
    }

    fn with(self, other: Lanes) -> Self {
        Lanes(self.0 | other.0)
    }

    fn has(self, lane: usize) -> bool {
        self.0 & (1 << lane) != 0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// An entry read, its body parsed (or why it can't be).
struct Item<'a> {
    entry: &'a StreamId,
    /// The `publish` field's bytes; for an entry without one, its fields as JSON (so a dead
    /// letter keeps what it carried).
    raw: Vec<u8>,
    request: Result<PublishRequest, String>,
}

impl<'a> Item<'a> {
    fn read(entry: &'a StreamId) -> Self {
        let (raw, request) = match entry.get::<Vec<u8>>("publish") {
            Some(raw) if std::str::from_utf8(&raw).is_ok() => {
                let request = parse(&raw);
                (raw, request)
            }
            Some(raw) => (
                raw,
                Err("the `publish` field is not UTF-8 (a POST /publish body is JSON)".into()),
            ),
            None => {
                let fields: serde_json::Map<String, serde_json::Value> = entry
                    .map
                    .iter()
                    .map(|(name, value)| {
                        let value = redis::from_redis_value_ref::<Vec<u8>>(value)
                            .map(|v| String::from_utf8_lossy(&v).into_owned())
                            .unwrap_or_default();
                        (name.clone(), value.into())
                    })
                    .collect();
                let names: Vec<&str> = fields.keys().map(String::as_str).collect();
                let reason = format!(
                    "the entry has no `publish` field (its fields: {}; their values are kept \
                     here as JSON)",
                    names.join(", ")
                );
                (
                    serde_json::Value::Object(fields).to_string().into_bytes(),
                    Err(reason),
                )
            }
        };
        Item {
            entry,
            raw,
            request,
        }
    }

    /// By the first named user (or group), so one user's entries keep their order; entries
    /// that will be dead-lettered share lane 0.
    fn lane(&self) -> usize {
        use std::hash::{Hash, Hasher};
        let Some(first) = self
            .request
            .as_ref()
            .ok()
            .and_then(|r| r.users.first().or(r.groups.first()))
        else {
            return 0;
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        first.hash(&mut hasher);
        (hasher.finish() % LANES as u64) as usize
    }
}
