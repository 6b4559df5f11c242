//! A user's preferences: `GET /preferences`, `PUT /preferences/categories/{category}` with
//! `{"muted": true|false}`. A publish to a user who muted its category stores and sends
//! nothing for them unless it is `critical`. User identity (cookie writes follow the Origin
//! rule).

use http::StatusCode;
use serde::Deserialize;

use super::body::{json, read_json, Request, Response};
use crate::auth;
use crate::error::Result;
use crate::model::validate_category;
use crate::state::AppState;
use crate::store::Preferences;

#[derive(Debug, Deserialize)]
struct Category {
    muted: bool,
}

pub async fn get(state: AppState, req: Request) -> Result<Response> {
    let caller = auth::session::user(&state, &req.into_parts().0).await?;
    let preferences = state.store.preferences(&caller.user).await?;
    Ok(body(&preferences))
}

pub async fn put_category(state: AppState, req: Request, category: &str) -> Result<Response> {
    let (parts, body_stream) = req.into_parts();
    let caller = auth::session::writer(&state, &parts).await?;
    validate_category(category)?;
    let setting: Category = read_json(body_stream, state.config.body_timeout).await?;
    let store = &state.store;
    store
        .set_muted(&caller.user, category, setting.muted)
        .await?;
    Ok(body(&store.preferences(&caller.user).await?))
}

/// `{"categories": {"<category>": {"muted": bool}}}`.
fn body(preferences: &Preferences) -> Response {
    let categories: serde_json::Map<String, serde_json::Value> = preferences
        .iter()
        .map(|(category, muted)| (category.clone(), serde_json::json!({"muted": muted})))
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({"categories": categories}),
    )
}
