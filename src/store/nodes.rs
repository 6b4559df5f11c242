//! The live nodes, for the operators' `/admin/nodes`: each with its open streams, whether it
//! sends Web Push, and when it was last seen. Redis: every node's alive key
//! (`herald:node:<node>`, refreshed by its keep-alive, see `keys::node_alive`) holds
//! `{"at_ms":…,"streams":…,"run":…,"push":true}`; presence
//! checks that the key exists and names the run (the process) a stream's entry belongs to.
//! The nodes are found through the registry hash `herald:nodes` (each node adds itself when
//! it beats), not by scanning the keyspace; a registered node whose
//! alive key has expired is dead and is removed from the registry. Nodes of a version before
//! the registry are not listed (they are still present for presence). Embedded mode: this
//! node alone (the memory store answers from its hub).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::keys;
use crate::error::Result;
use crate::redis_conn::RedisConn;

/// A node is dead once its alive key is this old, in milliseconds (spec: presence gone in 30 s).
pub const NODE_ALIVE_TTL_MS: u64 = 20_000;
/// How long a node with Web Push off, having seen no live node that sends it, still makes
/// escalations and leaves due ones for such a node (one that restarts, or starts before this
/// node's next heartbeat sees it); and how overdue a due escalation is before it is
/// cancelled when none does (two alive-key lifetimes).
pub const PUSH_HANDOVER_MS: u64 = 2 * NODE_ALIVE_TTL_MS;
/// A gap between two successful reads of the node list this long means this node was out of
/// touch with Redis (two heartbeats missed).
const OUT_OF_TOUCH_MS: u64 = NODE_ALIVE_TTL_MS / 2;

/// Whether other nodes send Web Push, as a node with it off sees at its heartbeats. The
/// hand-over time runs only while this node reads the node list: an outage neither ends it
/// (the nodes that send Web Push could not beat either) nor lets it run out unseen.
#[derive(Debug, Default)]
pub struct PushPeers {
    /// The last successful read that saw one (Unix ms; 0: never).
    seen_ms: AtomicU64,
    /// The last successful read of the node list (Unix ms; 0: never).
    read_ms: AtomicU64,
    /// What was last reported by [`Self::observe`].
    told: AtomicBool,
}

impl PushPeers {
    /// Another node sends Web Push, or did within [`PUSH_HANDOVER_MS`] of reads.
    pub fn others(&self) -> bool {
        let seen = self.seen_ms.load(Ordering::Relaxed);
        let read = self.read_ms.load(Ordering::Relaxed);
        seen != 0 && read.saturating_sub(seen) < PUSH_HANDOVER_MS
    }

    /// A read of the node list at `now`: whether a node that sends Web Push is among them.
    /// After a gap (this node was out of touch), one that did before is given the hand-over
    /// time again to beat. Returns the new [`Self::others`] when it changed.
    pub fn observe(&self, now: u64, pushing: bool) -> Option<bool> {
        let read = self.read_ms.load(Ordering::Relaxed);
        let out_of_touch = read != 0 && now.saturating_sub(read) > OUT_OF_TOUCH_MS;
        if pushing || (out_of_touch && self.others()) {
            self.seen_ms.store(now, Ordering::Relaxed);
        }
        self.read_ms.store(now, Ordering::Relaxed);
        let others = self.others();
        (self.told.swap(others, Ordering::Relaxed) != others).then_some(others)
    }
}

/// One live node as `/admin/nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub node: String,
    /// Open SSE streams on the node at its last heartbeat; `None` from a node that does not
    /// report them (an older version).
    pub streams: Option<u64>,
    /// Unix milliseconds of the node's last heartbeat.
    pub last_seen_ms: u64,
    /// The node sends Web Push (so the escalations of nodes with it off are left to it).
    pub web_push: bool,
}

/// What a node's alive key holds.
#[derive(Debug, Serialize, Deserialize)]
struct Beat {
    at_ms: u64,
    streams: Option<u64>,
    /// The node process's run id (`Hub::run`): a node restarted under the same name has a new
    /// one, so the entries its previous process left are told apart. `None` from older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<String>,
    /// The node sends Web Push; absent when it does not (and from older nodes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    push: bool,
}

/// The alive key's value for a heartbeat at `at_ms` with `streams` open, by process `run`,
/// which sends Web Push or not (`push`).
pub fn beat(at_ms: u64, streams: u64, run: &str, push: bool) -> String {
    let beat = Beat {
        at_ms,
        streams: Some(streams),
        run: Some(run.to_owned()),
        push,
    };
    serde_json::to_string(&beat).unwrap_or_default()
}

/// Read an alive key's value: the JSON beat, or the bare Unix-ms number older nodes write.
fn parse_beat(value: &str) -> Option<Beat> {
    if let Ok(at_ms) = value.trim().parse() {
        return Some(Beat {
            at_ms,
            streams: None,
            run: None,
            push: false,
        });
    }
    serde_json::from_str(value).ok()
}

/// The run an alive key's value names (a node of an older version names none).
pub(super) fn beat_run(value: &str) -> Option<String> {
    parse_beat(value)?.run
}

/// Whether a presence entry with stream key `stream` belongs to the node process whose alive
/// key holds `alive` (`None`: the key is gone, the node is dead). A key
/// `<node>.<n>\t<run>` must name the run the alive key names; keys and beats of older nodes
/// carry no run and only need the node alive.
pub(super) fn entry_alive(stream: &str, alive: Option<&str>) -> bool {
    let Some(beat) = alive.and_then(parse_beat) else {
        return alive.is_some();
    };
    match (stream.split_once('\t'), beat.run) {
        (Some((_, run)), Some(current)) => run == current,
        _ => true,
    }
}

/// Every registered node whose alive key exists (one HKEYS, then one GET per node), by name;
/// registered nodes whose key is gone are dropped from the registry.
pub(super) async fn list(conn: &RedisConn) -> Result<Vec<NodeInfo>> {
    let registry = keys::node_registry();
    let names: Vec<String> = redis::cmd("HKEYS")
        .arg(&registry)
        .query_async(&mut conn.clone())
        .await?;
    let reads = names.into_iter().map(|node| {
        let mut conn = conn.clone();
        async move {
            let value: Option<String> = redis::cmd("GET")
                .arg(keys::node_alive(&node))
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>((node, value.as_deref().and_then(parse_beat)))
        }
    });
    let (mut nodes, mut dead) = (Vec::new(), Vec::new());
    for read in join_all(reads).await {
        match read? {
            (node, Some(beat)) => nodes.push(NodeInfo {
                node,
                streams: beat.streams,
                last_seen_ms: beat.at_ms,
                web_push: beat.push,
            }),
            (node, None) => dead.push(node),
        }
    }
    if !dead.is_empty() {
        // Best effort: the next reader tries again.
        let removed: redis::RedisResult<()> = redis::cmd("HDEL")
            .arg(&registry)
            .arg(&dead)
            .query_async(&mut conn.clone())
            .await;
        if let Err(e) = removed {
            tracing::debug!(error = %e, "could not drop dead nodes from the registry");
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A beat round-trips; the bare number older nodes write is a live node, streams unknown.
    #[test]
    fn beats_new_and_old() {
        let new = parse_beat(&beat(1700, 3, "r", true)).unwrap();
        assert_eq!(
            (new.at_ms, new.streams, new.run, new.push),
            (1700, Some(3), Some("r".into()), true)
        );
        assert!(!parse_beat(&beat(1700, 3, "r", false)).unwrap().push);
        assert!(!beat(1700, 3, "r", false).contains("push"));
        let old = parse_beat("1699").unwrap();
        assert_eq!(
            (old.at_ms, old.streams, old.run, old.push),
            (1699, None, None, false)
        );
        assert!(parse_beat("garbage").is_none());
    }

    /// Pushing peers: seen, then gone for the hand-over time of reads; an outage neither
    /// ends the hand-over nor lets it run out.
    #[test]
    fn push_peers_hand_over() {
        let beat = NODE_ALIVE_TTL_MS / 4;
        let p = PushPeers::default();
        // beats from `from` without a pushing node: within the hand-over, then it ends
        let beats_until_gone = |from: u64| {
            let mut now = from;
            while now + beat - from < PUSH_HANDOVER_MS {
                now += beat;
                assert_eq!(p.observe(now, false), None, "within the hand-over at {now}");
            }
            assert_eq!(p.observe(now + beat, false), Some(false));
            now + beat
        };
        assert!(!p.others());
        assert_eq!(p.observe(1_000, false), None);
        assert_eq!(p.observe(1_000 + beat, true), Some(true));
        let now = beats_until_gone(1_000 + beat);
        // seen again, then Redis away for far longer than the hand-over: still handing over
        assert_eq!(p.observe(now + beat, true), Some(true));
        let back = now + beat + 10 * PUSH_HANDOVER_MS;
        assert_eq!(p.observe(back, false), None);
        assert!(p.others());
        beats_until_gone(back);
    }

    /// An entry is alive while its node's key exists and, when both name a run, the runs match.
    #[test]
    fn entries_belong_to_their_run() {
        let now = beat(1, 2, "r2", false);
        assert!(entry_alive("n.1\tr2", Some(&now)));
        assert!(!entry_alive("n.1\tr1", Some(&now)));
        assert!(!entry_alive("n.1\tr2", None));
        // older nodes: keys without a run, beats without one
        assert!(entry_alive("n.1", Some(&now)));
        assert!(entry_alive("n.1\tr1", Some("1700000000000")));
        assert!(entry_alive("n.1", Some(r#"{"at_ms":1,"streams":2}"#)));
    }
}
