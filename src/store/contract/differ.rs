//! Where the two stores legitimately differ, each backend tested on its own terms: the
//! cleaner's turn (one node in memory; a lock shared by nodes in Redis) and presence (the
//! hub's streams in memory; entries kept alive by the node's heartbeat in Redis).

use std::sync::Arc;

use super::*;
use crate::hub::{Delivery, EndReason, Sink};
use crate::model::PresenceEntry;

/// A stream that takes everything and does nothing: presence only needs it registered.
struct Idle;

impl Sink for Idle {
    fn deliver(&self, _: &Delivery) -> bool {
        true
    }
    fn end(&self, _: EndReason) {}
    fn catch_up(&self) {}
    fn tick(&self, _: tokio::time::Instant) {}
}

/// Memory: one node, so the cleaner's turn is always this node's.
#[tokio::test]
async fn memory_cleaner_turn_is_always_ours() {
    let s = Subject::open(Kind::Memory, ROOMY).await;
    let ttl = Duration::from_secs(60);
    for node in ["n1", "n2", "n1"] {
        assert!(s.store.claim_cleaner(node, ttl).await.expect("claim"));
    }
}

/// Redis: the first node to claim the cleaner holds it; another node is refused while it
/// does, and the holder claiming again keeps it.
#[tokio::test]
async fn redis_cleaner_turn_belongs_to_one_node() {
    let s = Subject::open(Kind::Redis, ROOMY).await;
    let ttl = Duration::from_secs(60);
    let claim = |node: &'static str| s.store.claim_cleaner(node, ttl);
    let turns = tokio::time::timeout(CASE_DEADLINE, async {
        [
            claim("n1").await,
            claim("n2").await,
            claim("n1").await,
            claim("n2").await,
        ]
    })
    .await
    .expect("in time")
    .map(|turn| turn.expect("claim"));
    assert_eq!(turns, [true, false, true, false]);
}

/// Memory: presence is the hub's list of this node's streams; the store keeps none itself,
/// so `add_presence` changes nothing and a closing stream need not delete its entry.
#[tokio::test]
async fn memory_presence_reads_the_hub() {
    let s = Subject::open(Kind::Memory, ROOMY).await;
    assert!(!s.store.keeps_presence());
    let entry = PresenceEntry {
        stream: "elsewhere.1".into(),
        session: None,
        node: "elsewhere".into(),
        since: "2026-01-01T00:00:00.000Z".into(),
    };
    s.store.add_presence("a", &entry).await.expect("add");
    assert!(s.store.presence("a").await.expect("presence").is_empty());
    let id = s.hub.next_id();
    assert!(s
        .hub
        .register("a", (Some("s1"), None), 10, id, Arc::new(Idle)));
    let entries = s.store.presence("a").await.expect("presence");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].session.as_deref(), entries[0].node.as_str()),
        (Some("s1"), "contract")
    );
    s.hub.remove("a", id);
    assert!(s.store.presence("a").await.expect("presence").is_empty());
}

/// Redis: presence entries live in the store and count only while their node's alive key
/// exists (heartbeat); removing an entry or retiring the node makes it vanish.
#[tokio::test]
async fn redis_presence_lives_while_its_node_does() {
    let s = Subject::open(Kind::Redis, ROOMY).await;
    assert!(s.store.keeps_presence());
    let Store::Redis(redis) = &s.store else {
        unreachable!()
    };
    let entry = |stream: &str| PresenceEntry {
        stream: stream.into(),
        session: Some("s1".into()),
        node: "n1".into(),
        since: "2026-01-01T00:00:00.000Z".into(),
    };
    tokio::time::timeout(CASE_DEADLINE, async {
        s.store
            .add_presence("a", &entry("n1.1"))
            .await
            .expect("add");
        assert!(
            s.store.presence("a").await.expect("presence").is_empty(),
            "node not alive"
        );
        s.store
            .add_presence("a", &entry("n1.1"))
            .await
            .expect("add");
        s.store
            .add_presence("a", &entry("n1.2"))
            .await
            .expect("add");
        redis.heartbeat("n1").await.expect("heartbeat");
        assert_eq!(s.store.presence("a").await.expect("presence").len(), 2);
        s.store.remove_presence("a", "n1.2").await.expect("remove");
        assert_eq!(
            s.store.presence("a").await.expect("presence"),
            [entry("n1.1")]
        );
        s.store.retire("n1").await.expect("retire");
        assert!(s.store.presence("a").await.expect("presence").is_empty());
    })
    .await
    .expect("in time");
}
