//! Group membership (`/groups/{group}/members`): add, list, remove. Service token only.

use http::StatusCode;
use serde::Deserialize;

use super::body::{empty, json, read_json, Request, Response};
use crate::auth;
use crate::error::Result;
use crate::model::validate_id;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
struct Members {
    users: Vec<String>,
}

pub async fn add(state: AppState, req: Request, group: &str) -> Result<Response> {
    let (parts, body) = req.into_parts();
    auth::session::service(&state, &parts)?;
    validate_id("group", group)?;
    let members: Members = read_json(body, state.config.body_timeout).await?;
    for user in &members.users {
        validate_id("each user", user)?;
    }
    state.store.add_members(group, &members.users).await?;
    let users = state.store.members(group).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"group": group, "users": users}),
    ))
}

pub async fn list(state: AppState, req: Request, group: &str) -> Result<Response> {
    auth::session::service(&state, &req.into_parts().0)?;
    validate_id("group", group)?;
    let users = state.store.members(group).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"group": group, "users": users}),
    ))
}

pub async fn remove(state: AppState, req: Request, group: &str, user: &str) -> Result<Response> {
    auth::session::service(&state, &req.into_parts().0)?;
    validate_id("group", group)?;
    validate_id("user", user)?;
    state.store.remove_member(group, user).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
