//! The Store contract: each case in `cases` is written once and run against both siblings,
//! the memory store and the Redis store (over a real `redis-server` that `redis_server` starts
//! on a free loopback port, one per case, stopped on drop). A case is one behaviour the rest
//! of Herald relies on; `contract!` turns each into `<case>::memory` and `<case>::redis`
//! tests, so `cargo test --lib store::contract` runs them all and `…::redis` one backend.
//!
//! Where the backends legitimately differ (presence lives in the hub for memory; only Redis
//! has a cleaner lock to share between nodes) the case is in `differ`, per backend, saying why.
//! A missing `redis-server` fails the Redis cases loudly: `scripts/test` installs it.

mod cases;
mod differ;
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use self::redis_server::RedisServer;
use super::MemoryStore;
use super::{Idempotency, ListQuery, Page, Published, Recipient, Replay, SessionRecord, Store};
use crate::config::Backend;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::model::{
    new_id, new_ids, now_ms, EventId, Mark, Marked, Notification, NotificationInput, Schedule,
    Target, Template,
};

/// One case, start to finish (a trim case publishes ~1300 notifications), never longer.
const CASE_DEADLINE: Duration = Duration::from_secs(60);
/// `max_per_user` of a case that does not care about it.
const ROOMY: usize = 10_000;

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
                store: Store::Memory(MemoryStore::new(hub.clone(), max_per_user, false)),
                hub,
                _redis: None,
            },
            Kind::Redis => {
                let server = RedisServer::start();
                let store = Store::redis(&Backend::Redis(server.url()), max_per_user, false, None)
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

    /// A plain connection to the Redis server under the store, to read or plant keys.
    fn raw(&self) -> redis::Connection {
        let url = self._redis.as_ref().expect("a Redis server").url();
        redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("a raw connection")
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

/// `contract! { case; case(3); }`: a `memory` and a `redis` test per case, each on a fresh
/// store (`max_per_user` in parentheses, else [`ROOMY`]) running `cases::<case>`.
macro_rules! contract {
    ($($case:ident $(($max:expr))?;)*) => {$(
        mod $case {
            use super::*;

            #[tokio::test]
            async fn memory() {
                let max = contract!(@max $($max)?);
                run(Kind::Memory, max, |s| async move { cases::$case(&s).await }).await;
            }

            #[tokio::test]
            async fn redis() {
                let max = contract!(@max $($max)?);
                run(Kind::Redis, max, |s| async move { cases::$case(&s).await }).await;
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
    an_idempotency_key_stamped_anew_stores_anew;
    max_per_user_drops_the_oldest(3);
    max_per_user_drops_delivered_ones_before_held_ones(3);
    an_expiry_before_delivery_is_not_announced;
    mark_reports_found_and_changed;
    unchanged_marks_commit_nothing;
    mark_all_read_reads_every_unread;
    replay_after_seq_returns_exactly_the_rest;
    replayed_notifications_are_as_published;
    replay_beyond_head_resets;
    replay_of_a_trimmed_window_resets(10);
    another_epoch_resets;
    head_epoch_is_kept_by_the_first_commit;
    sessions_put_get_end;
    session_cap_evicts_the_oldest;
    groups_add_remove_and_list_sorted;
    purge_before_deletes_only_older_ids;
    purge_cuts_the_change_logs;
    one_publish_stores_once_per_recipient;
    notification_json_is_what_serde_writes;
    muted_categories_suppress_all_but_critical;
    pages_carry_the_head_they_reflect;
    seen_is_counted_apart_from_read;
    counts_by_category;
}

fn template(notification: serde_json::Value) -> Arc<Template> {
    let input: NotificationInput = serde_json::from_value(notification).expect("a valid input");
    Arc::new(
        Template::new(&input, Default::default(), std::time::SystemTime::now())
            .expect("a template"),
    )
}

/// A notification held for delivery (and expiring) as `schedule` says.
fn scheduled(schedule: Schedule) -> Arc<Template> {
    let input = serde_json::from_value(serde_json::json!({"title": "later"})).expect("input");
    let now = std::time::SystemTime::now();
    Arc::new(Template::new(&input, schedule, now).expect("a template"))
}

/// Publish `template` to `users` in one store call (fresh ids); one outcome per user.
async fn publish_to(
    s: &Subject,
    template: &Arc<Template>,
    users: &[&str],
    key: Option<Idempotency<'_>>,
) -> Vec<Published> {
    let recipients: Vec<Recipient<'_>> = users
        .iter()
        .zip(new_ids(users.len()))
        .map(|(&user, id)| Recipient { user, id })
        .collect();
    let outcomes = s.store.publish(template, &recipients, key).await;
    assert_eq!(outcomes.len(), users.len());
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("publish"))
        .collect()
}

/// What a case sees of one user's publish: the id as text, and whether it was stored.
struct Stored {
    id: String,
    stored: bool,
}

async fn publish(s: &Subject, user: &str, key: Option<&str>) -> Stored {
    publish_keyed(s, user, key.map(Idempotency::key)).await
}

/// [`publish`] with an [`Idempotency`] (a key and its stamp).
async fn publish_keyed(s: &Subject, user: &str, key: Option<Idempotency<'_>>) -> Stored {
    let template = template(serde_json::json!({"title": "t"}));
    let p = publish_to(s, &template, &[user], key).await[0];
    Stored {
        id: p.id.to_string(),
        stored: p.stored,
    }
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
        unread,
        ..ListQuery::default()
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

async fn mark(s: &Subject, user: &str, ids: &[&String], mark: Mark) -> Marked {
    let target = Target::Ids(ids.iter().map(|id| (*id).clone()).collect());
    s.store.mark(user, &target, mark).await.expect("mark")
}

async fn seq(s: &Subject, user: &str) -> u64 {
    s.store.head(user).await.expect("head").seq
}

async fn replay(s: &Subject, user: &str, after: EventId) -> Replay {
    s.store.replay(user, after, 0).await.expect("replay")
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
        ends_ms: now_ms() + 3_600_000,
        secret_hash: "ab".repeat(32),
    }
}
