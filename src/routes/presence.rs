//! `GET /presence/{user}`: the user's live streams on every live node. Service token only.

use http::StatusCode;

use super::body::{json, Request, Response};
use crate::auth;
use crate::error::Result;
use crate::model::{shown_since, validate_id};
use crate::state::AppState;

pub async fn get(state: AppState, req: Request, user: &str) -> Result<Response> {
    auth::session::service(&state, &req.into_parts().0)?;
    validate_id("user", user)?;
    let sessions: Vec<_> = (state.store.presence(user).await?)
        .into_iter()
        .map(|e| {
            let since = shown_since(&e.since);
            serde_json::json!({"session": e.session, "node": e.node, "since": since})
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"online": !sessions.is_empty(), "sessions": sessions}),
    ))
}
