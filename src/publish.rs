//! The publish service, shared by `POST /publish`, the ingest stream and `herald publish
//! --redis-url`: validate everything first (so a rejected request stores nothing), resolve
//! users and group members (de-duplicated, first-seen order), encode the notification once
//! (a [`Template`]: each recipient's JSON splices its id and user into it), then store it for
//! every recipient in batches of [`BATCH`], two in flight, with a yield after each. A store
//! failure part-way answers 503 with the named users already stored (`Error::PartlyStored`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::stream::{FuturesOrdered, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{
    is_plain, new_ids, unix_ms, validate_id, NotificationInput, Schedule, Template, MAX_AHEAD,
};
use crate::shutdown::Shutdown;
use crate::store::{Idempotency, Recipient, Store};

/// Recipients per store call. The memory store commits a batch without awaiting; the Redis
/// store sends it as one round of script calls (64 users each). After each batch's answer the
/// task yields, so a publish to many users never holds a runtime worker for long, and after a
/// failed batch nothing more is sent.
pub const BATCH: usize = 512;
/// Batches sent before the first of them is answered: Redis has the next batch's calls
/// queued while one batch's answers travel back and the batch after is built. (Measured on a
/// 10,000-member group: p99 ~7 % lower than one at a time; more in flight did no better.)
const IN_FLIGHT: usize = 2;
/// Longest idempotency key, in characters.
pub const MAX_KEY_CHARS: usize = 256;

/// The `POST /publish` body (also an ingest entry's `publish` field).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(deserialize_with = "crate::model::object")]
    pub notification: NotificationInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The stamp of a key the Kafka ingest made of a record's position (its timestamp; see
    /// [`Idempotency`]); never in a body.
    #[serde(skip)]
    pub idempotency_stamp: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishResponse {
    /// Users the notification is stored for (named users and group members), those who muted
    /// its category left out.
    pub count: usize,
    /// The notification id per user named in `users` (not for those who muted it).
    pub ids: BTreeMap<String, String>,
    /// Recipients who muted the notification's category: nothing stored or sent to them.
    pub suppressed: usize,
}

/// Where a publish in progress stops sending batches rather than be cut off unanswered:
/// once the node's drain has run half its `--drain-timeout` (the connection closes at the
/// end of it), it answers what it stored so far (`Error::PartlyStored`, 503).
#[derive(Clone, Copy)]
pub struct Cutoff<'a> {
    pub shutdown: &'a Shutdown,
    pub drain_timeout: Duration,
}

impl Cutoff<'_> {
    fn passed(&self) -> bool {
        self.shutdown
            .elapsed()
            .is_some_and(|draining| draining >= self.drain_timeout / 2)
    }
}

/// Validate and store `request`; nothing is stored when validation fails.
pub async fn publish(
    store: &Store,
    metrics: Option<&Metrics>,
    request: &PublishRequest,
) -> Result<PublishResponse> {
    publish_until(store, metrics, request, None).await
}

/// [`publish`], sending no further batch once `cutoff` has passed.
pub async fn publish_until(
    store: &Store,
    metrics: Option<&Metrics>,
    request: &PublishRequest,
    cutoff: Option<Cutoff<'_>>,
) -> Result<PublishResponse> {
    publish_as_of(store, metrics, request, cutoff, None).await
}

/// [`publish`] of a request a durable queue accepted at `accepted` (an ingest entry, handled
/// later, or again after a failure): its `deliver_at` and `expires_at` are checked as of
/// then. One whose delivery time has passed since is delivered now; one whose expiry has
/// passed since is over before it began, and nothing is stored (`count` 0).
pub async fn publish_accepted(
    store: &Store,
    metrics: Option<&Metrics>,
    request: &PublishRequest,
    accepted: SystemTime,
) -> Result<PublishResponse> {
    publish_as_of(store, metrics, request, None, Some(accepted)).await
}

/// When a queue accepted an entry, from the time it gives the entry (Unix ms): that time when
/// it is a plausible one (not ahead, and within [`MAX_AHEAD`], the furthest a due time may
/// lie), else now (a producer may choose its entries' ids or timestamps).
pub fn accepted_at(queued_ms: Option<u64>) -> SystemTime {
    let now = SystemTime::now();
    let queued = queued_ms.map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    queued
        .filter(|&at| at <= now && now.duration_since(at).is_ok_and(|ago| ago < MAX_AHEAD))
        .unwrap_or(now)
}

/// Check `request` as [`publish`] does before it stores anything (for a producer that hands
/// it to a queue: `herald publish` to Kafka).
pub fn check(request: &PublishRequest) -> Result<()> {
    let now = SystemTime::now();
    let (input, schedule) = validate(request, now)?;
    Template::new(&input, schedule, now).map(drop)
}

/// The request's notification, checked as of `as_of`, and its due times; the recipients'
/// ids and the idempotency key checked too.
fn validate(request: &PublishRequest, as_of: SystemTime) -> Result<(NotificationInput, Schedule)> {
    let mut input = request.notification.clone();
    let schedule = input.validate(as_of)?;
    if request.users.is_empty() && request.groups.is_empty() {
        return Err(Error::invalid("name at least one user or group"));
    }
    for user in &request.users {
        validate_id("each user", user)?;
    }
    for group in &request.groups {
        validate_id("each group", group)?;
    }
    if let Some(key) = &request.idempotency_key {
        if !is_plain(key, MAX_KEY_CHARS) {
            return Err(Error::invalid(format!(
                "idempotency_key must be 1 to {MAX_KEY_CHARS} characters without control characters"
            )));
        }
    }
    Ok((input, schedule))
}

async fn publish_as_of(
    store: &Store,
    metrics: Option<&Metrics>,
    request: &PublishRequest,
    cutoff: Option<Cutoff<'_>>,
    accepted: Option<SystemTime>,
) -> Result<PublishResponse> {
    let now = SystemTime::now();
    let (input, mut schedule) = validate(request, accepted.unwrap_or(now))?;
    // Accepted earlier: a delivery time passed since is now; an expiry passed since leaves
    // nothing to store.
    let now_ms = unix_ms(now);
    schedule.deliver_ms = schedule.deliver_ms.filter(|&at| at > now_ms);
    if schedule.expire_ms.is_some_and(|at| at <= now_ms) {
        tracing::debug!("expired before it was handled: nothing stored");
        return Ok(PublishResponse {
            count: 0,
            ids: BTreeMap::new(),
            suppressed: 0,
        });
    }
    let mut members = Vec::new();
    for group in &request.groups {
        members.extend(store.members(group).await?);
    }
    let (recipients, named) = recipients(&request.users, &members);
    let template = Arc::new(Template::new(&input, schedule, now)?);
    let key = request.idempotency_key.as_deref().map(|key| Idempotency {
        key,
        stamp: request.idempotency_stamp,
    });
    let mut ids = BTreeMap::new();
    let mut stored = 0u64;
    let mut suppressed = 0usize;
    let mut failure = None;
    let mut cut_off = false;
    // Up to IN_FLIGHT batches sent at once: the next batch's calls wait in Redis while this
    // one's answers come back, so Redis rarely idles between two batches.
    let mut batches = recipients.chunks(BATCH).enumerate();
    let mut in_flight = FuturesOrdered::new();
    loop {
        while failure.is_none() && !cut_off && in_flight.len() < IN_FLIGHT {
            let Some((n, users)) = batches.next() else {
                break;
            };
            if n > 0 && cutoff.is_some_and(|c| c.passed()) {
                cut_off = true;
                break;
            }
            let batch: Vec<Recipient<'_>> = users
                .iter()
                .zip(new_ids(users.len()))
                .map(|(&user, id)| Recipient { user, id })
                .collect();
            let template = &template;
            in_flight.push_back(async move {
                let outcomes = store.publish(template, &batch, key).await;
                (n, batch, outcomes)
            });
        }
        // After a failure, the batches already sent are still counted (some of their users
        // may be stored), but no more are sent.
        let Some((n, batch, outcomes)) = in_flight.next().await else {
            break;
        };
        for (i, (to, outcome)) in batch.iter().zip(outcomes).enumerate() {
            match outcome {
                Ok(p) if p.suppressed => suppressed += 1,
                Ok(p) => {
                    stored += u64::from(p.stored);
                    // Named users come first among the recipients.
                    if n * BATCH + i < named {
                        ids.insert(to.user.to_owned(), p.id.to_string());
                    }
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        // Heavy fan-out shares the worker: other requests run between batches.
        tokio::task::yield_now().await;
    }
    if let Some(metrics) = metrics {
        metrics.publishes.inc_by(stored);
    }
    // A store's failure says more than the cutoff does.
    let failure = failure.or_else(|| {
        cut_off.then(|| {
            Error::Unavailable(
                "this node is shutting down: publish the rest through another node".into(),
            )
        })
    });
    if let Some(source) = failure {
        // Some recipients may be stored already: say which, so a retry can skip them.
        return Err(Error::PartlyStored {
            stored: ids,
            source: Box::new(source),
        });
    }
    Ok(PublishResponse {
        count: recipients.len() - suppressed,
        ids,
        suppressed,
    })
}

/// The named users, then the group members, each once, in first-seen order, in O(n) (a
/// publish may name ~95k users in a 1 MiB body); and how many of them are named users.
fn recipients<'a>(users: &'a [String], members: &'a [String]) -> (Vec<&'a str>, usize) {
    if users.is_empty() && members.windows(2).all(|w| w[0] < w[1]) {
        // Strictly increasing (as one group's sorted members are): none repeats.
        return (members.iter().map(String::as_str).collect(), 0);
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(users.len() + members.len());
    let mut named = 0;
    let mut out = Vec::with_capacity(users.len() + members.len());
    for user in users {
        if seen.insert(user) {
            out.push(user.as_str());
            named += 1;
        }
    }
    for member in members {
        if seen.insert(member) {
            out.push(member.as_str());
        }
    }
    (out, named)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue's time for an entry counts when it is a plausible one (past, and within 90
    /// days); else the entry counts as accepted now.
    #[test]
    fn accepted_at_takes_plausible_queue_times() {
        let now = SystemTime::now();
        let ms = |t: SystemTime| Some(crate::model::unix_ms(t));
        let hour_ago = now - Duration::from_secs(3600);
        let close = |t: SystemTime| {
            t.duration_since(now)
                .is_ok_and(|d| d < Duration::from_secs(5))
        };
        assert_eq!(
            accepted_at(ms(hour_ago)),
            SystemTime::UNIX_EPOCH + Duration::from_millis(ms(hour_ago).unwrap())
        );
        assert!(close(accepted_at(None)));
        assert!(close(accepted_at(Some(1))));
        assert!(close(accepted_at(ms(now
            - MAX_AHEAD
            - Duration::from_secs(1)))));
        assert!(close(accepted_at(ms(now + Duration::from_secs(3600)))));
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Named users first, then members; each once, in first-seen order.
    #[test]
    fn recipients_are_deduplicated_in_first_seen_order() {
        let users = strings(&["bob", "alice", "bob"]);
        let members = strings(&["alice", "carol", "dave", "carol"]);
        let (all, named) = recipients(&users, &members);
        assert_eq!(all, ["bob", "alice", "carol", "dave"]);
        assert_eq!(named, 2);
        let repeated = strings(&["a", "b", "b"]);
        assert_eq!(recipients(&[], &repeated), (vec!["a", "b"], 0));
        let sorted = strings(&["a", "b", "c"]);
        assert_eq!(recipients(&[], &sorted), (vec!["a", "b", "c"], 0));
    }

    /// Property tests (issue 13): the whole publish path on bodies of any shape.
    mod props {
        use proptest::prelude::*;

        use super::*;
        use crate::hub::Hub;
        use crate::model::props::{body_bytes, publish_body};
        use crate::model::{from_json, is_valid_id};
        use crate::store::MemoryStore;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any bytes as a publish body: parsed, or refused with a message that names the
            /// body and carries no parser position; never a panic.
            #[test]
            fn any_body_parses_or_is_refused(bytes in body_bytes()) {
                if let Err(message) = from_json::<PublishRequest>(&bytes) {
                    prop_assert!(message.starts_with("invalid JSON body"), "{}", message);
                    prop_assert!(!message.contains(" at line "), "{}", message);
                }
            }

            /// A publish body of any shape, against the embedded store: stored for every named
            /// user (an id each), or refused with a 400 or 413 and nothing stored; never a
            /// panic.
            #[test]
            fn publish_stores_all_or_nothing(body in publish_body()) {
                let bytes = serde_json::to_vec(&body).expect("a JSON value serializes");
                let Ok(request) = from_json::<PublishRequest>(&bytes) else {
                    return Ok(());
                };
                let hub = Hub::new("n".into(), Metrics::default());
                let store = Store::Memory(MemoryStore::new(hub, 1000, false));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                let result = runtime.block_on(publish(&store, None, &request));
                let named: HashSet<&str> = request.users.iter().map(String::as_str).collect();
                match &result {
                    Ok(response) => {
                        prop_assert_eq!(response.count, named.len());
                        prop_assert_eq!(response.suppressed, 0);
                        let ids: HashSet<&str> = response.ids.keys().map(String::as_str).collect();
                        prop_assert_eq!(&ids, &named);
                        // A scheduled one (`deliver_at`) is not in the tray before it is due.
                        let active = request.notification.deliver_at.is_none();
                        for (user, id) in response.ids.iter().filter(|_| active) {
                            let stored = runtime.block_on(store.get(user, id)).expect("stored");
                            prop_assert_eq!(
                                stored.map(|n| n.title),
                                Some(request.notification.title.clone())
                            );
                        }
                    }
                    Err(e) => {
                        prop_assert!(
                            matches!(e, Error::InvalidRequest(_) | Error::TooLarge { .. }),
                            "{e:?}"
                        );
                        for user in named.iter().filter(|u| is_valid_id(u)) {
                            let counts = runtime.block_on(store.counts(user)).expect("counts");
                            prop_assert_eq!(counts.counts.unread, 0, "{} got one", user);
                        }
                    }
                }
            }
        }
    }
}
