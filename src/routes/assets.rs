//! Static files compiled into the binary, so one file deploys: the browser client
//! (`/herald.js`, `/herald-worker.js`, the Web Push service worker `/herald-sw.js`), the API's
//! OpenAPI description (`/openapi.yaml`, from `docs/`), with `--dev`, the demo page at `/`,
//! and with `--admin`, the admin page (`/admin/`, `admin.js`, `admin.css`). Each carries an
//! ETag (hash of its content) and `Cache-Control: no-cache`: browsers revalidate with a cheap
//! 304 and never run a stale client after an upgrade.

use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use http::{header, HeaderValue, StatusCode};

use super::body::{empty, full, Request, Response};

pub struct Asset {
    body: &'static str,
    content_type: &'static str,
    /// Computed on first use.
    etag: OnceLock<String>,
}

const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

pub static CLIENT: Asset = Asset::new(include_str!("../../static/herald.js"), JS);
pub static WORKER: Asset = Asset::new(include_str!("../../static/herald-worker.js"), JS);
/// The Web Push service worker: served from the root so its scope can cover the site.
pub static SERVICE_WORKER: Asset = Asset::new(include_str!("../../static/herald-sw.js"), JS);
/// The OpenAPI 3.1 description of the API, as `application/yaml` (RFC 9512; it has no
/// `charset` parameter: YAML is UTF-8).
pub static OPENAPI: Asset = Asset::new(include_str!("../../docs/openapi.yaml"), "application/yaml");
pub static DEMO: Asset = Asset::new(include_str!("../../static/index.html"), HTML);
pub static ADMIN_PAGE: Asset = Asset::new(include_str!("../../static/admin/index.html"), HTML);
pub static ADMIN_JS: Asset = Asset::new(include_str!("../../static/admin/admin.js"), JS);
pub static ADMIN_CSS: Asset = Asset::new(
    include_str!("../../static/admin/admin.css"),
    "text/css; charset=utf-8",
);

impl Asset {
    const fn new(body: &'static str, content_type: &'static str) -> Self {
        Asset {
            body,
            content_type,
            etag: OnceLock::new(),
        }
    }

    fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.body.hash(&mut h);
            format!("\"{:016x}\"", h.finish())
        })
    }

    /// 200 with the content, or 304 when the request's `If-None-Match` is current.
    pub fn serve(&self, req: &Request) -> Response {
        let etag = self.etag();
        let fresh = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        let mut response = if fresh {
            empty(StatusCode::NOT_MODIFIED)
        } else {
            full(StatusCode::OK, self.body)
        };
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex etag"));
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}
