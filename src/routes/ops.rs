//! Operations endpoints: `/healthz` (the process runs), `/readyz` (store and broker answer, and
//! the Kafka brokers with Kafka ingest),
//! and `/metrics` (Prometheus text; `--metrics-allow` limits who may read it).

use http::{header, HeaderValue, StatusCode};

use super::body::{full, json, Request, Response};
use crate::error::{Error, Result};
use crate::forwarded;
use crate::forwarded::ConnInfo;
use crate::state::AppState;

pub fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

pub async fn readyz(state: AppState) -> Result<Response> {
    state.store.ping().await?;
    state.broker.ping().await?;
    #[cfg(feature = "kafka")]
    if let Some(kafka) = &state.kafka {
        kafka.check()?;
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"status": "ready"}),
    ))
}

/// Prometheus text (OpenMetrics when the `Accept` asks for it); with `--metrics-allow`, only for clients in those networks (403 otherwise;
/// the client is the TCP peer, or the forwarded address behind a `--trusted-proxy`).
pub fn metrics(state: &AppState, req: &Request) -> Result<Response> {
    let allow = &state.config.metrics_allow;
    if !allow.is_empty() {
        let client = req
            .extensions()
            .get::<ConnInfo>()
            .map(|conn| forwarded::client(&state.config.trusted_proxies, conn.peer, req.headers()));
        // `is_trusted` is the plain "address in one of these networks" test.
        if !client.is_some_and(|c| forwarded::is_trusted(allow, c.addr)) {
            return Err(Error::Forbidden("/metrics is not open to this address"));
        }
    }
    // OpenMetrics for a scraper that asks for it (Prometheus does), else the classic text format.
    let openmetrics = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut response = full(StatusCode::OK, state.metrics.render(openmetrics));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if openmetrics {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "text/plain; version=0.0.4; charset=utf-8"
        }),
    );
    // The format follows `Accept`: a cache between must keep the two apart.
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    Ok(response)
}
