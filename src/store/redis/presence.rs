//! Presence and the node's heartbeat: each stream's entry (also the cross-node stream
//! limit), the node's alive key, and recording entries again after an outage.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;

use super::RedisStore;
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::model::{now_ms, PresenceEntry};
use crate::shutdown::Shutdown;
use crate::store::keys::{self, UserKeys};
use crate::store::nodes::{self, NodeInfo, NODE_ALIVE_TTL_MS};

/// A node's heartbeat period: a quarter of its alive key's lifetime.
const BEAT_PERIOD_MS: u64 = NODE_ALIVE_TTL_MS / 4;
/// How late a live node's beat may come (a busy node, a slow round trip) when telling a live
/// process's alive key from one a dead process left.
const BEAT_SLACK_MS: u64 = 2_000;
/// Presence entries written at once when they are recorded again after an outage.
const PRESENCE_WRITES: usize = 32;
/// Presence entries of ended streams kept for another deletion at most (each ~100 bytes); an
/// entry beyond them is left to the reader's check of its node once the node is gone.
const MAX_UNREMOVED: usize = 10_000;

/// Record a presence entry and read the ones recorded before it, in one step (one key, so
/// also on a cluster).
static ADD_PRESENCE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local before = redis.call('HGETALL', KEYS[1]) \
         redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
         return before",
    )
});

impl RedisStore {
    /// Record the entry; returns the entries the user's presence held just before it (live
    /// or left by a dead node: [`Self::live_entries`] tells them apart), read in the same
    /// step, so every stream recorded earlier, on any node, is among them.
    pub async fn add_presence(
        &self,
        user: &str,
        entry: &PresenceEntry,
    ) -> Result<Vec<PresenceEntry>> {
        let value = entry_json(entry)?;
        let before: Vec<(String, String)> = ADD_PRESENCE
            .key(UserKeys::new(user).presence())
            .arg(&entry.stream)
            .arg(value)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(parse_entries(before))
    }

    /// Write the entry again (after an outage), reading nothing.
    async fn write_presence(&self, user: &str, entry: &PresenceEntry) -> Result<()> {
        let value = entry_json(entry)?;
        let key = UserKeys::new(user).presence();
        Ok(self.conn().hset(key, &entry.stream, value).await?)
    }

    /// Of `entries`, the user's presence as read, those of live processes; the others are
    /// deleted.
    pub async fn live_entries(
        &self,
        user: &str,
        entries: Vec<PresenceEntry>,
    ) -> Result<Vec<PresenceEntry>> {
        self.keep_live(user, entries, &mut HashMap::new()).await
    }

    /// Delete the entry; one that could not be deleted is deleted again at the next
    /// heartbeat ([`Self::keep_alive`]).
    pub async fn remove_presence(&self, user: &str, stream: &str) -> Result<()> {
        let deleted: Result<()> = self
            .conn()
            .hdel(UserKeys::new(user).presence(), stream)
            .await
            .map_err(Error::from);
        if deleted.is_err() {
            let mut unremoved = self.unremoved.lock().unwrap_or_else(|e| e.into_inner());
            if unremoved.len() < MAX_UNREMOVED {
                unremoved.insert((user.to_owned(), stream.to_owned()));
            }
        }
        deleted
    }

    /// Delete again the entries whose deletion failed, each once, for at most `budget`: taken
    /// one at a time, so those not reached wait for the next turn.
    async fn remove_unremoved(&self, budget: Duration) {
        let unremoved = || self.unremoved.lock().unwrap_or_else(|e| e.into_inner());
        let queued = unremoved().len();
        let next = std::iter::from_fn(|| unremoved().pop_first()).take(queued);
        let retries = futures_util::stream::iter(next).for_each_concurrent(
            PRESENCE_WRITES,
            |(user, stream)| async move {
                // A failure queues it again.
                let _ = self.remove_presence(&user, &stream).await;
            },
        );
        let _ = tokio::time::timeout(budget, retries).await;
    }

    /// Entries of nodes whose alive key is gone, or that a previous process of a node left
    /// (its run differs), are dropped (and deleted).
    pub async fn presence(&self, user: &str) -> Result<Vec<PresenceEntry>> {
        self.live_presence(user, &mut HashMap::new()).await
    }

    /// [`Self::presence`], reading each node's alive key once into `alive_nodes` (node → its
    /// beat), which a sweep over many users shares, and again before dropping an entry.
    async fn live_presence(
        &self,
        user: &str,
        alive_nodes: &mut HashMap<String, Option<String>>,
    ) -> Result<Vec<PresenceEntry>> {
        let all: Vec<(String, String)> =
            self.conn().hgetall(UserKeys::new(user).presence()).await?;
        let mut live = self
            .keep_live(user, parse_entries(all), alive_nodes)
            .await?;
        live.sort_by(|a, b| a.since.cmp(&b.since));
        Ok(live)
    }

    /// Of `entries`, those of live processes ([`Self::live_presence`]'s rule); the others
    /// are deleted.
    async fn keep_live(
        &self,
        user: &str,
        entries: Vec<PresenceEntry>,
        alive_nodes: &mut HashMap<String, Option<String>>,
    ) -> Result<Vec<PresenceEntry>> {
        let key = UserKeys::new(user).presence();
        let mut conn = self.conn();
        let mut live = Vec::new();
        for entry in entries {
            let mut alive = match alive_nodes.get(&entry.node) {
                Some(beat) => nodes::entry_alive(&entry.stream, beat.as_deref()),
                None => false,
            };
            if !alive {
                // Read now, not as remembered: the node may have (re)started since.
                let beat: Option<String> = conn.get(keys::node_alive(&entry.node)).await?;
                alive = nodes::entry_alive(&entry.stream, beat.as_deref());
                alive_nodes.insert(entry.node.clone(), beat);
            }
            if alive {
                live.push(entry);
            } else {
                let _: () = conn.hdel(&key, &entry.stream).await?;
            }
        }
        Ok(live)
    }

    /// Drop the entries of dead processes from every presence hash (on every primary of a
    /// cluster): a reader drops them too, but a user whose presence nobody reads would keep a
    /// crashed node's entries for good. Returns how many users' hashes were read.
    pub async fn sweep_presence(&self) -> Result<usize> {
        let keys = self.conn().scan_match(keys::PRESENCE_PATTERN).await?;
        // Each node's alive key read once for the whole sweep, and again before an entry is
        // dropped (a node that restarted meanwhile keeps its new entries): a node that dies
        // meanwhile has its entries dropped by the next sweep or reader.
        let mut alive_nodes = HashMap::new();
        let mut swept = 0;
        for user in keys
            .iter()
            .filter_map(|key| keys::user_of_presence_key(key))
        {
            self.live_presence(&user, &mut alive_nodes).await?;
            swept += 1;
        }
        Ok(swept)
    }

    /// Mark this node alive for [`NODE_ALIVE_TTL_MS`], with its `streams` open, and make sure
    /// the node list finds it (the registry); the run of another process whose beat it
    /// replaced, if any (a process under the same name, or the one this process took over
    /// from).
    pub async fn heartbeat(&self, node: &str, run: &str, streams: u64) -> Result<Option<String>> {
        let mut conn = self.conn();
        let now = now_ms();
        let before: Option<String> = redis::cmd("SET")
            .arg(keys::node_alive(node))
            .arg(nodes::beat(now, streams, run, self.push))
            .arg("PX")
            .arg(NODE_ALIVE_TTL_MS)
            .arg("GET")
            .query_async(&mut conn)
            .await?;
        let replaced = before
            .as_deref()
            .and_then(nodes::beat_run)
            .filter(|other| other != run);
        let _: () = conn.hset_nx(keys::node_registry(), node, now).await?;
        if !self.push {
            let pushing = self.nodes().await?.iter().any(|n| n.web_push);
            if let Some(others) = self.push_peers.observe(now, pushing) {
                tracing::info!(
                    another_node_sends_web_push = others,
                    "Web Push is off on this node; its escalations are now {}",
                    if others {
                        "left to the nodes that send it"
                    } else {
                        "not made, and cancelled when due (no node has sent Web Push for \
                         the hand-over time)"
                    }
                );
            }
        }
        Ok(replaced)
    }

    /// Whether another running process beats as `node`: its alive key names another run and
    /// is refreshed within a beat period and [`BEAT_SLACK_MS`] of its last beat (a key left by
    /// a process that died, or was stopped without its clean shutdown, is not). Called before
    /// this process's first beat; it waits only when such a key is there, and only until the
    /// next beat is overdue: each beat sets the key's lifetime anew, so what is left of it
    /// (`PTTL`, Redis's clock) says how long ago the last one came.
    pub async fn node_in_use(&self, node: &str, run: &str) -> Result<bool> {
        let key = keys::node_alive(node);
        let mut conn = self.conn();
        let (first, left_ms): (Option<String>, i64) = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut conn)
            .await?;
        let Some(first) = first else {
            return Ok(false);
        };
        if nodes::beat_run(&first).is_none_or(|other| other == run) {
            return Ok(false);
        }
        let age_ms =
            u64::try_from(left_ms).map_or(0, |left| NODE_ALIVE_TTL_MS.saturating_sub(left));
        let watch_ms = (BEAT_PERIOD_MS + BEAT_SLACK_MS).saturating_sub(age_ms);
        let until = tokio::time::Instant::now() + Duration::from_millis(watch_ms);
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now: Option<String> = conn.get(&key).await?;
            match now {
                None => return Ok(false),
                Some(now) if now != first => return Ok(true),
                Some(_) => {}
            }
        }
        Ok(false)
    }

    /// After [`Self::first_beat`], refresh this node's alive key (with the hub's open
    /// streams) every quarter of
    /// [`NODE_ALIVE_TTL_MS`] until shutdown, so other nodes keep trusting its presence entries,
    /// and delete again the entries of ended streams whose deletion failed.
    /// After the link lost its connection, at once, and the node's presence entries are
    /// recorded again: a Redis that restarted without persistence lost them (and the alive
    /// key), and an entry whose write failed in the outage was never made.
    pub async fn keep_alive(self, hub: Hub, shutdown: Shutdown) {
        let period = Duration::from_millis(BEAT_PERIOD_MS);
        let mut reconnections = self.reconnections();
        // A beat every period, whatever the beat's own work took (a node's beats are never
        // further apart than other nodes' checks of its alive key allow for).
        let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = beats.tick() => {
                    self.beat(&hub).await;
                    // Well within the period: the next beat is never late for it.
                    self.remove_unremoved(period / 4).await;
                }
                Ok(()) = reconnections.changed() => {
                    self.beat(&hub).await;
                    self.record_presence_again(&hub).await;
                    self.remove_unremoved(period / 4).await;
                }
                _ = shutdown.wait() => return,
            }
        }
    }

    /// This process's first [`Self::heartbeat`]: the beat it replaces, if another run's, was
    /// left by a process that is gone ([`Self::node_in_use`] watched it).
    pub async fn first_beat(&self, hub: &Hub) {
        if let Err(e) = self.heartbeat(hub.node(), hub.run(), hub.streams()).await {
            tracing::debug!(error = %e, "node heartbeat failed");
        }
    }

    /// One [`Self::heartbeat`] of the hub's node now; a failure is logged (the next is
    /// [`Self::keep_alive`]'s), and so is a beat of another process it replaced: one running
    /// under this node's name (say after Redis lost the key that kept it from starting).
    pub async fn beat(&self, hub: &Hub) {
        match self.heartbeat(hub.node(), hub.run(), hub.streams()).await {
            Ok(None) => {}
            Ok(Some(other)) => tracing::error!(
                node = hub.node(),
                other_run = other,
                "another running process uses this --node-id: give each node its own (until \
                 then logouts, replaced streams and presence are mixed up between them)"
            ),
            Err(e) => tracing::debug!(error = %e, "node heartbeat failed"),
        }
    }

    /// Write every presence entry of this node's streams again, a few at a time.
    async fn record_presence_again(&self, hub: &Hub) {
        futures_util::stream::iter(hub.all_presence())
            .for_each_concurrent(PRESENCE_WRITES, |(user, entry)| async move {
                let written = self.write_presence(&user, &entry).await;
                // A stream that ended meanwhile deleted its entry before this write, or
                // deletes it after: it has left the hub either way.
                let gone = !hub.presence(&user).iter().any(|e| e.stream == entry.stream);
                let result = match written {
                    Ok(_) if gone => self.remove_presence(&user, &entry.stream).await,
                    result => result.map(drop),
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "presence not recorded again");
                }
            })
            .await;
    }

    /// Delete these (user, stream key) presence entries, a few at a time.
    pub async fn remove_presences(&self, entries: Vec<(String, String)>) {
        futures_util::stream::iter(entries)
            .for_each_concurrent(PRESENCE_WRITES, |(user, stream)| async move {
                if let Err(e) = self.remove_presence(&user, &stream).await {
                    tracing::debug!(error = %e, "presence not removed");
                }
            })
            .await;
    }

    /// Every live node, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        nodes::list(&self.conn).await
    }

    /// Remove this node's alive key and its registry entry (clean shutdown).
    pub async fn retire(&self, node: &str) -> Result<()> {
        let mut conn = self.conn();
        let _: () = conn.del(keys::node_alive(node)).await?;
        let _: () = conn.hdel(keys::node_registry(), node).await?;
        Ok(())
    }
}

/// A presence hash's (stream key, JSON) pairs as entries; an unreadable one is skipped.
fn parse_entries(pairs: Vec<(String, String)>) -> Vec<PresenceEntry> {
    pairs
        .into_iter()
        .filter_map(|(stream, json)| {
            let mut entry = serde_json::from_str::<PresenceEntry>(&json).ok()?;
            entry.stream = stream;
            Some(entry)
        })
        .collect()
}

/// An entry as its presence hash keeps it (the stream key is the field, not in the JSON).
fn entry_json(entry: &PresenceEntry) -> Result<String> {
    serde_json::to_string(entry).map_err(|e| Error::Internal(e.to_string()))
}
