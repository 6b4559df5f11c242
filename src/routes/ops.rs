//! Operations endpoints: `/healthz` (the process runs), `/readyz` (store and broker answer),
//! and `/metrics` (Prometheus text).

use http::{header, HeaderValue, StatusCode};

use super::body::{full, json, Response};
use crate::error::Result;
use crate::state::AppState;

pub fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

pub async fn readyz(state: AppState) -> Result<Response> {
    state.store.ping().await?;
    state.broker.ping().await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"status": "ready"}),
    ))
}

pub fn metrics(state: &AppState) -> Response {
    let mut response = full(StatusCode::OK, state.metrics.render());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
