//! The Store contract: each case below is written once and run against both siblings, the
//! memory store and the Redis store (over a real `redis-server` this file starts on a free
//! loopback port, one per case, stopped on drop). A case is one behaviour the rest of Herald
//! relies on; `contract!` turns each into `<case>::memory` and `<case>::redis` tests, so
//! `cargo test --lib store::contract` runs them all and `…::redis` picks one backend.
//!
//! Where the backends legitimately differ (presence lives in the hub for memory; only Redis
//! has a cleaner lock to share between nodes) the case is written per backend and says why.
//! A missing `redis-server` fails the Redis cases loudly: `scripts/test` installs it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ListQuery, Page, Published, Replay, SessionRecord, Store, LOG_CAPACITY};
use super::{MemoryStore, MAX_SESSIONS_PER_USER};
use crate::config::Backend;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::model::{
    new_id, now_secs, ChangeKind, Epoch, EventId, Mark, Notification, NotificationInput,
    PresenceEntry, Target,
};

/// One case, start to finish (a trim case publishes ~1200 notifications), never longer.
const CASE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a fresh redis-server may take to answer.
const REDIS_START: Duration = Duration::from_secs(10);
/// `max_per_user` of a case that does not care about it.
const ROOMY: usize = 10_000;

/// A throwaway `redis-server` on a free loopback port, with its own empty directory; killed
/// (and the directory removed) on drop.
struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Another process may take the probed port before redis-server binds it, so the server
    /// is asked for its directory to make sure it is ours; a few ports are tried.
    fn start() -> RedisServer {
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

    fn url(&self) -> String {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Redis,
}

/// A store under test and what it needs alive: the hub (the memory store dispatches to it
/// and reads presence from it) and, for Redis, the server. Fields drop in order: the store's
/// connection before its server.
struct Subject {
    store: Store,
    hub: Hub,
    _redis: Option<RedisServer>,
}

impl Subject {
    async fn open(kind: Kind, max_per_user: usize) -> Subject {
        let hub = Hub::new("contract".into(), Metrics::default());
        match kind {
            Kind::Memory => Subject {
                store: Store::Memory(MemoryStore::new(hub.clone(), max_per_user)),
                hub,
                _redis: None,
            },
            Kind::Redis => {
                let server = RedisServer::start();
                let store = Store::redis(&Backend::Redis(server.url()), max_per_user, None)
                    .await
                    .unwrap_or_else(|e| panic!("the Redis store connects: {}", e.0));
                Subject {
                    store,
                    hub,
                    _redis: Some(server),
                }
            }
        }
    }
}

/// Run `case` on a fresh store of `kind` under [`CASE_DEADLINE`].
async fn run<F: std::future::Future<Output = ()>>(
    kind: Kind,
    max_per_user: usize,
    case: impl FnOnce(Subject) -> F,
) {
    let subject = Subject::open(kind, max_per_user).await;
    tokio::time::timeout(CASE_DEADLINE, case(subject))
        .await
        .expect("the case finishes within its deadline");
}

/// `contract! { case; case(max_per_user = 3); }`: a `memory` and a `redis` test per case.
macro_rules! contract {
    ($($case:ident $(($max:expr))?;)*) => {$(
        mod $case {
            use super::*;
            #[tokio::test]
            async fn memory() {
                run(Kind::Memory, contract!(@max $($max)?), |s| async move { super::$case(&s).await }).await;
            }
            #[tokio::test]
            async fn redis() {
                run(Kind::Redis, contract!(@max $($max)?), |s| async move { super::$case(&s).await }).await;
            }
        }
    )*};
    (@max) => { ROOMY };
    (@max $max:expr) => { $max };
}

contract! {
    pages_walk_the_tray_newest_first_once;
    unread_filter_pages_only_unread;
    idempotency_key_stores_once_per_user;
    max_per_user_drops_the_oldest(3);
    mark_reports_found_and_changed;
    unchanged_marks_commit_nothing;
    mark_all_read_reads_every_unread;
    replay_after_seq_returns_exactly_the_rest;
    replay_beyond_head_resets;
    replay_of_a_trimmed_window_resets(10);
    another_epoch_resets;
    head_epoch_is_kept_by_the_first_commit;
    sessions_put_get_delete;
    session_cap_evicts_the_oldest;
    groups_add_remove_and_list_sorted;
    purge_before_deletes_only_older_ids;
}

// ---- helpers ----

fn notification(user: &str) -> Notification {
    let input: NotificationInput =
        serde_json::from_value(serde_json::json!({"title": "t"})).expect("a valid input");
    input.to_notification(new_id(), user, std::time::SystemTime::now())
}

async fn publish(s: &Subject, user: &str, key: Option<&str>) -> Published {
    let n = notification(user);
    let json = serde_json::to_string(&n).expect("serializable");
    s.store.publish(&n, &json, key).await.expect("publish")
}

/// Publish `count` notifications for `user`; their ids, oldest first.
async fn publish_many(s: &Subject, user: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(publish(s, user, None).await.id);
    }
    ids
}

async fn list(s: &Subject, user: &str, limit: usize, before: Option<&str>, unread: bool) -> Page {
    let query = ListQuery {
        limit,
        before: before.map(str::to_owned),
        unread_only: unread,
    };
    s.store.list(user, &query).await.expect("list")
}

fn ids(page: &Page) -> Vec<String> {
    page.notifications.iter().map(|n| n.id.clone()).collect()
}

/// Every id of `user`'s tray (or only the unread ones) by walking pages of `limit`.
async fn walk(s: &Subject, user: &str, limit: usize, unread: bool) -> Vec<String> {
    let (mut seen, mut before) = (Vec::new(), None::<String>);
    loop {
        let page = list(s, user, limit, before.as_deref(), unread).await;
        assert!(page.notifications.len() <= limit);
        seen.extend(ids(&page));
        match page.next {
            Some(next) => before = Some(next),
            None => return seen,
        }
    }
}

fn newest_first(mut ids: Vec<String>) -> Vec<String> {
    ids.reverse();
    ids
}

async fn mark(s: &Subject, user: &str, ids: &[&String], mark: Mark) -> crate::model::Marked {
    let target = Target::Ids(ids.iter().map(|id| (*id).clone()).collect());
    s.store.mark(user, &target, mark).await.expect("mark")
}

async fn seq(s: &Subject, user: &str) -> u64 {
    s.store.head(user).await.expect("head").seq
}

async fn replay(s: &Subject, user: &str, after: EventId) -> Replay {
    s.store.replay(user, after).await.expect("replay")
}

fn seqs(replay: &Replay) -> Vec<u64> {
    match replay {
        Replay::Changes(changes) => changes.iter().map(|c| c.seq).collect(),
        Replay::Reset => panic!("expected changes, got a reset"),
    }
}

fn session(user: &str) -> SessionRecord {
    SessionRecord {
        user: user.into(),
        exp: now_secs() + 3600,
        secret_hash: "ab".repeat(32),
    }
}

// ---- the cases, shared by both backends ----

/// Pages of `before` cursors walk the tray newest first with no gap and no overlap, even
/// for ids minted within one millisecond; the last page has no cursor.
async fn pages_walk_the_tray_newest_first_once(s: &Subject) {
    let all = publish_many(s, "a", 7).await;
    assert_eq!(walk(s, "a", 3, false).await, newest_first(all.clone()));
    let first = list(s, "a", 7, None, false).await;
    assert_eq!((first.next, first.unread_count), (None, 7));
    assert!(list(s, "a", 3, Some(&all[0]), false)
        .await
        .notifications
        .is_empty());
    assert!(walk(s, "nobody", 3, false).await.is_empty());
}

/// `unread_only` pages over unread notifications only (cursors included), while read ones
/// still list, with their `read_at`, without the filter.
async fn unread_filter_pages_only_unread(s: &Subject) {
    let all = publish_many(s, "a", 6).await;
    mark(s, "a", &[&all[1], &all[4]], Mark::Read).await;
    let unread: Vec<String> = [5, 3, 2, 0].iter().map(|&i| all[i].clone()).collect();
    assert_eq!(walk(s, "a", 2, true).await, unread);
    let page = list(s, "a", 10, None, false).await;
    assert_eq!(ids(&page), newest_first(all.clone()));
    assert_eq!(page.unread_count, 4);
    let read: Vec<&String> = page
        .notifications
        .iter()
        .filter(|n| n.read_at.is_some())
        .map(|n| &n.id)
        .collect();
    assert_eq!(read, [&all[4], &all[1]]);
}

/// One idempotency key stores once per user (the repeat returns the first id and commits
/// nothing); another user with the same key stores their own.
async fn idempotency_key_stores_once_per_user(s: &Subject) {
    let first = publish(s, "a", Some("k")).await;
    let again = publish(s, "a", Some("k")).await;
    let other = publish(s, "b", Some("k")).await;
    assert!(first.stored && !again.stored && other.stored);
    assert_eq!(first.id, again.id);
    assert_ne!(first.id, other.id);
    let head = s.store.head("a").await.expect("head");
    assert_eq!((head.seq, head.unread_count), (1, 1));
    assert_eq!(ids(&list(s, "a", 10, None, false).await), [first.id]);
    assert_eq!(ids(&list(s, "b", 10, None, false).await), [other.id]);
}

/// Beyond `max_per_user` (3 here) the oldest notifications go, unread count included; the
/// drop itself commits no change.
async fn max_per_user_drops_the_oldest(s: &Subject) {
    let all = publish_many(s, "a", 5).await;
    assert_eq!(
        ids(&list(s, "a", 10, None, false).await),
        newest_first(all[2..].to_vec())
    );
    assert_eq!(s.store.get("a", &all[0]).await.expect("get"), None);
    let head = s.store.head("a").await.expect("head");
    assert_eq!((head.seq, head.unread_count), (5, 3));
}

/// A mark counts the named ids that exist (`found`) and lists those whose state it changed;
/// `get` shows the result (read_at set, cleared, or the notification gone).
async fn mark_reports_found_and_changed(s: &Subject) {
    let all = publish_many(s, "a", 2).await;
    let (x, y, missing) = (&all[0], &all[1], &new_id());
    let read = mark(s, "a", &[x, y, missing], Mark::Read).await;
    assert_eq!((read.found, read.changed.clone()), (2, all.clone()));
    let got = s
        .store
        .get("a", x)
        .await
        .expect("get")
        .expect("still there");
    assert!(got.read_at.is_some());
    let unread = mark(s, "a", &[y], Mark::Unread).await;
    assert_eq!((unread.found, unread.changed), (1, vec![y.clone()]));
    let got = s
        .store
        .get("a", y)
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(got.read_at, None);
    let deleted = mark(s, "a", &[x, y], Mark::Deleted).await;
    assert_eq!((deleted.found, deleted.changed), (2, all.clone()));
    assert_eq!(s.store.get("a", x).await.expect("get"), None);
    let again = mark(s, "a", &[x], Mark::Deleted).await;
    assert_eq!((again.found, again.changed.len()), (0, 0));
    assert_eq!(s.store.head("a").await.expect("head").unread_count, 0);
}

/// A mark that changes nothing (read on read, unread on unread, any mark on a missing id)
/// commits no change: the head's seq stays where it was.
async fn unchanged_marks_commit_nothing(s: &Subject) {
    let all = publish_many(s, "a", 2).await;
    let (x, y) = (&all[0], &all[1]);
    mark(s, "a", &[x], Mark::Read).await;
    let before = seq(s, "a").await;
    assert_eq!(before, 3);
    assert!(mark(s, "a", &[x], Mark::Read).await.changed.is_empty());
    assert!(mark(s, "a", &[y], Mark::Unread).await.changed.is_empty());
    for m in [Mark::Read, Mark::Unread, Mark::Deleted] {
        assert!(mark(s, "a", &[&new_id()], m).await.changed.is_empty());
    }
    assert_eq!(seq(s, "a").await, before);
}

/// `Target::All` with read changes every unread notification (oldest first) in one commit;
/// repeated, it changes and commits nothing. (`found` is not compared: for `All`, memory
/// counts every notification and Redis only the unread ones; no caller reads it there.)
async fn mark_all_read_reads_every_unread(s: &Subject) {
    let all = publish_many(s, "a", 3).await;
    mark(s, "a", &[&all[1]], Mark::Read).await;
    let marked = s
        .store
        .mark("a", &Target::All, Mark::Read)
        .await
        .expect("mark");
    assert_eq!(marked.changed, [all[0].clone(), all[2].clone()]);
    let head = s.store.head("a").await.expect("head");
    assert_eq!((head.seq, head.unread_count), (5, 0));
    let again = s
        .store
        .mark("a", &Target::All, Mark::Read)
        .await
        .expect("mark");
    assert!(again.changed.is_empty());
    assert_eq!(seq(s, "a").await, 5);
}

/// Replay after a seq returns exactly the later changes, in order, with their kinds and
/// data; after the head it returns none.
async fn replay_after_seq_returns_exactly_the_rest(s: &Subject) {
    let all = publish_many(s, "a", 4).await;
    mark(s, "a", &[&all[0]], Mark::Read).await;
    let head = s.store.head("a").await.expect("head");
    assert_eq!(head.seq, 5);
    let at = |seq| EventId {
        epoch: head.epoch,
        seq,
    };
    let rest = replay(s, "a", at(2)).await;
    assert_eq!(seqs(&rest), [3, 4, 5]);
    let Replay::Changes(changes) = rest else {
        unreachable!()
    };
    assert!(changes.iter().all(|c| c.epoch == head.epoch));
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Notification,
            ChangeKind::Notification,
            ChangeKind::Read
        ]
    );
    let third: Notification = serde_json::from_str(&changes[0].data).expect("notification");
    assert_eq!(third.id, all[2]);
    assert!(changes[2].data.contains(&all[0]));
    assert_eq!(seqs(&replay(s, "a", at(0)).await), [1, 2, 3, 4, 5]);
    assert_eq!(replay(s, "a", at(5)).await, Replay::Changes(Vec::new()));
}

/// A position beyond the head (a log that went back) resets.
async fn replay_beyond_head_resets(s: &Subject) {
    publish_many(s, "a", 2).await;
    let head = s.store.head("a").await.expect("head");
    let beyond = EventId {
        epoch: head.epoch,
        seq: head.seq + 1,
    };
    assert_eq!(replay(s, "a", beyond).await, Replay::Reset);
}

/// Once the log has dropped changes past [`LOG_CAPACITY`], a position before the retained
/// window resets, while one inside it still replays exactly the rest.
async fn replay_of_a_trimmed_window_resets(s: &Subject) {
    // Redis trims with `MAXLEN ~`, whole stream nodes (100 entries) at a time: go well past.
    let total = LOG_CAPACITY as u64 + 300;
    for _ in 0..total {
        publish(s, "a", None).await;
    }
    let head = s.store.head("a").await.expect("head");
    assert_eq!(head.seq, total);
    let at = |seq| EventId {
        epoch: head.epoch,
        seq,
    };
    assert_eq!(replay(s, "a", at(1)).await, Replay::Reset);
    assert_eq!(
        seqs(&replay(s, "a", at(total - 10)).await),
        (total - 9..=total).collect::<Vec<_>>()
    );
}

/// Each user's log has its own epoch: a position of another user's log, or of an epoch no
/// log has, resets even when its seq is in range.
async fn another_epoch_resets(s: &Subject) {
    publish_many(s, "a", 3).await;
    publish_many(s, "b", 3).await;
    let (a, b) = (
        s.store.head("a").await.expect("head"),
        s.store.head("b").await.expect("head"),
    );
    assert_ne!(a.epoch, b.epoch);
    let b_at_1 = EventId {
        epoch: b.epoch,
        seq: 1,
    };
    assert_eq!(replay(s, "a", b_at_1).await, Replay::Reset);
    assert_eq!(seqs(&replay(s, "b", b_at_1).await), [2, 3]);
    let stranger = EventId {
        epoch: Epoch::random(),
        seq: 1,
    };
    assert_eq!(replay(s, "a", stranger).await, Replay::Reset);
    assert_eq!(replay(s, "nobody", stranger).await, Replay::Reset);
}

/// A head read before any commit draws the epoch, and the first commit keeps it: a stream
/// that got `ready` on an empty log replays that log's first change, not a reset.
async fn head_epoch_is_kept_by_the_first_commit(s: &Subject) {
    let empty = s.store.head("a").await.expect("head");
    assert_eq!((empty.seq, empty.unread_count), (0, 0));
    assert_eq!(s.store.head("a").await.expect("head"), empty);
    publish(s, "a", None).await;
    let head = s.store.head("a").await.expect("head");
    assert_eq!(
        (head.epoch, head.seq, head.unread_count),
        (empty.epoch, 1, 1)
    );
    assert_eq!(seqs(&replay(s, "a", empty.id()).await), [1]);
}

/// A session reads back as stored until deleted; an ended one (past `exp`) reads as none.
async fn sessions_put_get_delete(s: &Subject) {
    let record = session("a");
    assert!(s
        .store
        .put_session("s1", &record)
        .await
        .expect("put")
        .is_empty());
    assert_eq!(s.store.session("s1").await.expect("get"), Some(record));
    s.store.delete_session("a", "s1").await.expect("delete");
    assert_eq!(s.store.session("s1").await.expect("get"), None);
    assert_eq!(s.store.session("never").await.expect("get"), None);
    let ended = SessionRecord {
        exp: now_secs() - 1,
        ..session("a")
    };
    s.store.put_session("s2", &ended).await.expect("put");
    assert_eq!(s.store.session("s2").await.expect("get"), None);
}

/// The session beyond [`MAX_SESSIONS_PER_USER`] ends the user's oldest one (by creation,
/// whatever its id) and returns its id; other users' sessions are not counted.
async fn session_cap_evicts_the_oldest(s: &Subject) {
    // Ids sort in the reverse of creation order, so eviction by id would show.
    let id = |i: usize| format!("s{:04}", 9999 - i);
    s.store
        .put_session("other", &session("b"))
        .await
        .expect("put");
    for i in 0..MAX_SESSIONS_PER_USER {
        let evicted = s
            .store
            .put_session(&id(i), &session("a"))
            .await
            .expect("put");
        assert!(evicted.is_empty(), "session {i} evicted {evicted:?}");
    }
    let evicted = s
        .store
        .put_session(&id(MAX_SESSIONS_PER_USER), &session("a"))
        .await
        .expect("put");
    assert_eq!(evicted, [id(0)]);
    assert_eq!(s.store.session(&id(0)).await.expect("get"), None);
    assert!(s.store.session(&id(1)).await.expect("get").is_some());
    assert!(s.store.session("other").await.expect("get").is_some());
}

/// Members are added once, listed sorted, removed one by one (saying whether they were
/// members); an unknown or emptied group has none.
async fn groups_add_remove_and_list_sorted(s: &Subject) {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    s.store
        .add_members("g", &names(&["carol", "alice", "bob"]))
        .await
        .expect("add");
    s.store
        .add_members("g", &names(&["alice"]))
        .await
        .expect("add");
    s.store.add_members("g", &[]).await.expect("add");
    assert_eq!(
        s.store.members("g").await.expect("members"),
        names(&["alice", "bob", "carol"])
    );
    assert!(s.store.remove_member("g", "bob").await.expect("remove"));
    assert!(!s.store.remove_member("g", "bob").await.expect("remove"));
    assert!(!s.store.remove_member("none", "bob").await.expect("remove"));
    assert_eq!(
        s.store.members("g").await.expect("members"),
        names(&["alice", "carol"])
    );
    for user in ["alice", "carol"] {
        assert!(s.store.remove_member("g", user).await.expect("remove"));
    }
    assert!(s.store.members("g").await.expect("members").is_empty());
    assert!(s.store.members("none").await.expect("members").is_empty());
}

/// `purge_before` deletes, in every tray, exactly the ids that sort below the cutoff, and
/// commits each user's deletion as a `deleted` change.
async fn purge_before_deletes_only_older_ids(s: &Subject) {
    let (a_old, b_old) = (
        publish(s, "a", None).await.id,
        publish(s, "b", None).await.id,
    );
    let cutoff = new_id();
    let (a_new, b_new) = (
        publish(s, "a", None).await.id,
        publish(s, "b", None).await.id,
    );
    assert_eq!(s.store.purge_before(&cutoff).await.expect("purge"), 2);
    assert_eq!(ids(&list(s, "a", 10, None, false).await), [a_new]);
    assert_eq!(ids(&list(s, "b", 10, None, false).await), [b_new]);
    let a = s.store.head("a").await.expect("head");
    assert_eq!((a.seq, a.unread_count), (3, 1));
    let Replay::Changes(changes) = replay(s, "a", EventId { seq: 2, ..a.id() }).await else {
        panic!("reset")
    };
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ChangeKind::Deleted);
    assert!(changes[0].data.contains(&a_old) && !changes[0].data.contains(&b_old));
    assert_eq!(s.store.purge_before(&cutoff).await.expect("purge"), 0);
}

// ---- where the backends differ ----

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
    let registration = s
        .hub
        .register("a", Some("s1"), None, 10)
        .expect("registered");
    let entries = s.store.presence("a").await.expect("presence");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].session.as_deref(), entries[0].node.as_str()),
        (Some("s1"), "contract")
    );
    s.hub.remove("a", registration.id);
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
