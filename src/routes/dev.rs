//! `--dev` only helpers for the demo page: sign in as any user name (`POST /dev/login`) and
//! publish from the browser (`POST /dev/publish`, for any signed-in user). Both are 404
//! without `--dev`; they exist so the demo works with no token tooling at all.

use http::{header, StatusCode};
use serde::Deserialize;

use super::body::{empty, json, read_json, Request, Response};
use crate::auth;
use crate::error::Result;
use crate::model::{now_ms, validate_id};
use crate::publish::{publish, PublishRequest};
use crate::state::AppState;

/// Lifetime of a dev login session, in seconds.
const DEV_SESSION_SECS: u64 = 24 * 3600;

#[derive(Deserialize)]
struct Login {
    user: String,
}

pub async fn login(state: AppState, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    auth::origin::check(&state, &parts)?;
    let Login { user } = read_json(body, state.config.body_timeout).await?;
    validate_id("user", &user)?;
    let (cookie, ends_ms) =
        auth::session::start(&state, &user, now_ms() + DEV_SESSION_SECS * 1000).await?;
    let mut response = empty(StatusCode::NO_CONTENT);
    response.headers_mut().insert(
        header::SET_COOKIE,
        auth::session::set_cookie(&cookie, ends_ms, auth::session::cookie_secure(&state)),
    );
    Ok(response)
}

pub async fn publish_as_user(state: AppState, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    auth::session::writer(&state, &parts).await?;
    let request: PublishRequest = read_json(body, state.config.body_timeout).await?;
    let response = publish(&state.store, Some(&state.metrics), &request).await?;
    Ok(json(StatusCode::ACCEPTED, &response))
}
