//! Web Push endpoints: `GET /push/key` (the VAPID public key, no auth), and the user's
//! subscriptions, `POST /push/subscriptions` (the browser's `PushSubscription` JSON) and
//! `DELETE /push/subscriptions` (`{"endpoint"}`). All `404` while Web Push is off.

use http::StatusCode;
use serde::Deserialize;

use super::body::{empty, json, read_json, Request, Response};
use crate::auth::session;
use crate::error::{Error, Result};
use crate::model::{now_ms, unix_ms};
use crate::push::Pusher;
use crate::state::AppState;
use crate::store::{Recent, Subscription, SubscriptionKeys};

fn pusher(state: &AppState) -> Result<&Pusher> {
    state
        .push
        .as_ref()
        .ok_or(Error::NotFound("Web Push is not configured on this server"))
}

pub async fn key(state: AppState) -> Result<Response> {
    let push = pusher(&state)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"public_key": push.public_key()}),
    ))
}

/// A `PushSubscription` as browsers serialize it (`expirationTime` and the like ignored).
#[derive(Debug, Deserialize)]
struct NewSubscription {
    endpoint: String,
    #[serde(deserialize_with = "crate::model::object")]
    keys: SubscriptionKeys,
}

pub async fn subscribe(state: AppState, req: Request) -> Result<Response> {
    let push = pusher(&state)?.clone();
    let (parts, body) = req.into_parts();
    let caller = session::writer(&state, &parts).await?;
    let new: NewSubscription = read_json(body, state.config.body_timeout).await?;
    let sub = Subscription {
        endpoint: crate::push::canonical_endpoint(&new.endpoint),
        keys: new.keys,
        created_ms: now_ms(),
    };
    push.check(&sub)?;
    // One stored under another spelling by a version before goes: one browser, one entry.
    if sub.endpoint != new.endpoint {
        state
            .store
            .remove_subscription(&caller.user, &new.endpoint)
            .await?;
    }
    // What became active for a connected user within the last --push-after waits for its
    // escalation (pushed then if still unseen): a first subscription takes it. What became
    // active while the user was offline (before the oldest live stream opened) was due at
    // once, to no subscription.
    let streams = state.store.presence(&caller.user).await?;
    let connected_since = (streams.iter())
        .filter_map(|entry| humantime::parse_rfc3339(&entry.since).ok())
        .min();
    let recent = connected_since.map(|since| {
        let after_ms = push.after().as_millis() as u64;
        Recent {
            from_ms: now_ms().saturating_sub(after_ms).max(unix_ms(since)),
            after_ms,
        }
    });
    state
        .store
        .add_subscription(&caller.user, &sub, recent)
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({"endpoint": sub.endpoint}),
    ))
}

#[derive(Debug, Deserialize)]
struct Unsubscribe {
    endpoint: String,
}

pub async fn unsubscribe(state: AppState, req: Request) -> Result<Response> {
    pusher(&state)?;
    let (parts, body) = req.into_parts();
    let caller = session::writer(&state, &parts).await?;
    let gone: Unsubscribe = read_json(body, state.config.body_timeout).await?;
    // Under its one spelling, and as written (stored so by a version before).
    let endpoint = crate::push::canonical_endpoint(&gone.endpoint);
    state
        .store
        .remove_subscription(&caller.user, &endpoint)
        .await?;
    if endpoint != gone.endpoint {
        state
            .store
            .remove_subscription(&caller.user, &gone.endpoint)
            .await?;
    }
    Ok(empty(StatusCode::NO_CONTENT))
}
