//! The outermost layer of every request, whatever its transport (hyper, HTTP/2, or the
//! `/events` head read off the socket): its request id ([`RequestId`], from a sane
//! `X-Request-Id` or new), set on the request (header and extension, so the `/api/` proxy
//! and actions pass it upstream) and on the response (error responses included), the log span
//! every line of the request is written in, and `herald_http_requests_total{route,status}`
//! with the route's pattern (`routes::paths`), never the raw path. It waits for nothing but
//! the inner service.

use std::convert::Infallible;
use std::sync::Arc;

use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::metrics::HttpLabels;
use crate::request_id::{RequestId, HEADER};
use crate::routes::body::{Request, Response};
use crate::routes::paths;
use crate::state::AppState;

/// `inner`, wrapped: see the module doc.
pub fn wrap<S>(
    state: &AppState,
    inner: S,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static
where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static,
{
    let metrics = state.metrics.clone();
    let base: Arc<str> = state.config.base_path.as_str().into();
    tower::service_fn(move |mut req: Request| {
        let id = RequestId::of(req.headers().get(HEADER));
        let route = paths::label(&base, req.uri().path());
        let value = id.header_value();
        req.headers_mut().insert(HEADER, value.clone());
        let span = id.span();
        req.extensions_mut().insert(id);
        let (inner, metrics) = (inner.clone(), metrics.clone());
        async move {
            let mut response = match inner.oneshot(req).instrument(span).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            response.headers_mut().insert(HEADER, value);
            let status = response.status().as_u16();
            metrics
                .http_requests
                .get_or_create(&HttpLabels { route, status })
                .inc();
            Ok(response)
        }
    })
}
