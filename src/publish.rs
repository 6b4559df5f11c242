//! The publish service, shared by `POST /publish`, the ingest stream and `herald publish
//! --redis-url`: validate everything first (so a rejected request stores nothing), resolve
//! users and group members (de-duplicated, first-seen order), then store one notification per
//! recipient, in chunks with a yield between them. A store failure part-way answers 503 with
//! the named users already stored (`Error::PartlyStored`).

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{is_plain, new_id, notification_json, validate_id, NotificationInput};
use crate::store::Store;

/// Recipients stored concurrently within one publish; between two such chunks the task
/// yields, so a publish to many users never holds a runtime worker for long.
const CONCURRENCY: usize = 32;
/// Longest idempotency key, in characters.
const MAX_KEY_CHARS: usize = 256;

/// The `POST /publish` body (also an ingest entry's `publish` field).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub notification: NotificationInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishResponse {
    /// Users the notification is stored for (named users and group members).
    pub count: usize,
    /// The notification id per user named in `users`.
    pub ids: BTreeMap<String, String>,
}

/// Validate and store `request`; nothing is stored when validation fails.
pub async fn publish(
    store: &Store,
    metrics: Option<&Metrics>,
    request: &PublishRequest,
) -> Result<PublishResponse> {
    request.notification.validate()?;
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
    // De-duplicated in first-seen order, in O(n): a publish may name ~95k users (1 MiB body).
    let mut members = Vec::new();
    for group in &request.groups {
        members.extend(store.members(group).await?);
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(request.users.len() + members.len());
    let recipients: Vec<String> = request
        .users
        .iter()
        .chain(&members)
        .filter(|user| seen.insert(user.as_str()))
        .cloned()
        .collect();
    drop(seen);
    let now = SystemTime::now();
    // The size limit depends on the user id only through its JSON-escaped length: checking the
    // longest one up front keeps "a rejected request stores nothing".
    if let Some(longest) = recipients
        .iter()
        .max_by_key(|u| serde_json::to_string(u).map_or(0, |j| j.len()))
    {
        notification_json(&request.notification.to_notification(new_id(), longest, now))?;
    }
    let key = request.idempotency_key.as_deref();
    let named: HashSet<&str> = request.users.iter().map(String::as_str).collect();
    let mut ids = BTreeMap::new();
    let mut stored = 0u64;
    let mut failure = None;
    for chunk in recipients.chunks(CONCURRENCY) {
        let prepared = chunk
            .iter()
            .map(|user| {
                let n = request.notification.to_notification(new_id(), user, now);
                notification_json(&n).map(|json| (n, json))
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = prepared.iter().map(|(n, json)| store.publish(n, json, key));
        let results = futures_util::future::join_all(batch).await;
        for ((n, _), result) in prepared.into_iter().zip(results) {
            match result {
                Ok(p) => {
                    stored += u64::from(p.stored);
                    if named.contains(n.user.as_str()) {
                        ids.insert(n.user, p.id);
                    }
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if failure.is_some() {
            break;
        }
        // Heavy fan-out shares the worker: other requests run between chunks.
        tokio::task::yield_now().await;
    }
    if let Some(metrics) = metrics {
        metrics.publishes.inc_by(stored);
    }
    if let Some(source) = failure {
        // Some recipients may be stored already: say which, so a retry can skip them.
        return Err(Error::PartlyStored {
            stored: ids,
            source: Box::new(source),
        });
    }
    Ok(PublishResponse {
        count: recipients.len(),
        ids,
    })
}
