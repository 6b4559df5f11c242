//! `POST /publish`: validate everything first (so a rejected request stores nothing), resolve
//! users and group members, then store one notification per recipient. The same function
//! serves `herald publish --redis-url`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::body::{json, read_json, Request, Response};
use crate::auth;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{new_id, notification_json, validate_id, NotificationInput};
use crate::state::AppState;
use crate::store::Store;

/// Recipients stored concurrently within one publish.
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

pub async fn handle(state: AppState, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    auth::session::service(&state, &parts)?;
    let request: PublishRequest = read_json(body).await?;
    let response = publish(&state.store, Some(&state.metrics), &request).await?;
    Ok(json(StatusCode::ACCEPTED, &response))
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
        let n = key.chars().count();
        if n == 0 || n > MAX_KEY_CHARS || key.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "idempotency_key must be 1 to {MAX_KEY_CHARS} characters without control characters"
            )));
        }
    }
    let mut recipients: Vec<String> = Vec::new();
    let mut push = |user: &String| {
        if !recipients.contains(user) {
            recipients.push(user.clone());
        }
    };
    request.users.iter().for_each(&mut push);
    for group in &request.groups {
        store.members(group).await?.iter().for_each(&mut push);
    }
    let now = SystemTime::now();
    let prepared = recipients
        .iter()
        .map(|user| {
            let n = request.notification.to_notification(new_id(), user, now);
            notification_json(&n).map(|json| (n, json))
        })
        .collect::<Result<Vec<_>>>()?;
    let key = request.idempotency_key.as_deref();
    let mut published = Vec::with_capacity(prepared.len());
    for chunk in prepared.chunks(CONCURRENCY) {
        let mut batch = Vec::with_capacity(chunk.len());
        for (n, json) in chunk {
            batch.push(store.publish(n, json, key));
        }
        let stored = futures_util::future::try_join_all(batch).await?;
        published.extend(chunk.iter().map(|(n, _)| n.user.clone()).zip(stored));
    }
    if let Some(metrics) = metrics {
        metrics
            .publishes
            .inc_by(published.iter().filter(|(_, p)| p.stored).count() as u64);
    }
    let ids = published
        .into_iter()
        .filter(|(user, _)| request.users.contains(user))
        .map(|(user, p)| (user, p.id))
        .collect();
    Ok(PublishResponse {
        count: recipients.len(),
        ids,
    })
}
