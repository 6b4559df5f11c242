//! `POST /publish`: a service token (scope `publish`), then the publish service
//! ([`crate::publish`]); 202 with the ids per named user.

use http::StatusCode;

use super::body::{json, read_json, Request, Response};
use crate::auth;
use crate::error::Result;
use crate::publish::{publish_until, Cutoff, PublishRequest};
use crate::state::AppState;

/// Every failure counts in `herald_publish_errors_total{source="http"}`.
pub async fn handle(state: AppState, req: Request) -> Result<Response> {
    let result = accept(&state, req).await;
    if let Err(e) = &result {
        state.metrics.publish_failed("http", e.code());
    }
    result
}

async fn accept(state: &AppState, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    auth::session::service(state, &parts)?;
    let request: PublishRequest = read_json(body, state.config.body_timeout).await?;
    let cutoff = Cutoff {
        shutdown: &state.shutdown,
        drain_timeout: state.config.drain_timeout,
    };
    let response =
        publish_until(&state.store, Some(&state.metrics), &request, Some(cutoff)).await?;
    Ok(json(StatusCode::ACCEPTED, &response))
}
