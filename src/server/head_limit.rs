//! The request-head limits, and their check on requests hyper reads (every request after a
//! connection's first over plain HTTP, every request over TLS). hyper's own caps are set
//! above Herald's (a head past them gets hyper's 431, given the JSON body by `bare_errors`
//! over HTTP/1; bare over HTTP/2), and this layer refuses a head between the two with the
//! JSON error body, as the first request's reader does.

use http::{header, HeaderValue};
use tower::ServiceExt;

use super::AppService;
use crate::error::Error;
use crate::request_id::{self, RequestId};
use crate::routes::body::{error_response, Request, Response};
use crate::routes::without_body;

/// Largest request head (request line and headers), in bytes, like nginx's 32 KiB
/// `large_client_header_buffers`: a bigger one gets 431 and the connection is closed.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Headers a request may carry: one with more gets 431.
pub const MAX_HEADERS: usize = 100;

/// hyper's own cap on an HTTP/1 head's bytes: beyond it, hyper answers 431 itself. It also
/// caps hyper's write buffer, the output a stream served by hyper holds before backpressure.
pub const HYPER_HEAD_BYTES: usize = 2 * MAX_HEAD_BYTES;
/// hyper's own cap on an HTTP/1 head's headers (more than its default 100 moves them to the
/// heap).
pub const HYPER_HEADERS: usize = 2 * MAX_HEADERS;

/// `service`, with heads over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`] refused: 431, and the
/// connection closed (as for the first request); and every answer to a HEAD without its body
/// (`routes::without_body`), those refused here or by the rate limit included.
pub fn refuse_large_heads(service: impl AppService) -> impl AppService {
    tower::service_fn(move |req: Request| {
        let too_large = head_too_large(&req);
        let h2 = req.version() == http::Version::HTTP_2;
        let head = req.method() == http::Method::HEAD;
        let service = service.clone();
        async move {
            let response = if too_large {
                let refused = refusal(Error::HeadTooLarge {
                    limit: MAX_HEAD_BYTES,
                });
                // HTTP/2 refuses the one stream; its connection goes on.
                if h2 {
                    refused
                } else {
                    closing(refused)
                }
            } else {
                service.oneshot(req).await?
            };
            Ok(if head {
                without_body(response)
            } else {
                response
            })
        }
    })
}

/// The answer to a head refused before the service saw it: the JSON error body, and an
/// `X-Request-Id` of its own, as every answer carries.
pub fn refusal(error: Error) -> Response {
    let mut response = error_response(error);
    let id = RequestId::generate().header_value();
    response.headers_mut().insert(request_id::HEADER, id);
    response
}

/// `response`, with the connection closed after it.
pub fn closing(mut response: Response) -> Response {
    let close = HeaderValue::from_static("close");
    response.headers_mut().insert(header::CONNECTION, close);
    response
}

/// Whether the head has more than [`MAX_HEADERS`] headers, or was over [`MAX_HEAD_BYTES`] on
/// the wire however it was written: counted at its shortest (`name:value` and bare `\n`
/// line ends), so a head the first request's reader took is never refused here.
fn head_too_large(req: &Request) -> bool {
    let headers = req.headers();
    if req.version() == http::Version::HTTP_2 {
        return h2_list_size(req) > MAX_HEAD_BYTES;
    }
    if headers.len() > MAX_HEADERS {
        return true;
    }
    let uri = req.uri();
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    let target = match (uri.scheme(), uri.authority()) {
        // absolute form (`GET http://host/path`), rare: as sent, but for a path that is `/`
        // alone, which may have been left out
        (Some(scheme), Some(authority)) => {
            scheme.as_str().len() + 3 + authority.as_str().len() + if path > 1 { path } else { 0 }
        }
        _ => path.max(1),
    };
    // "<method> <target> HTTP/1.1\n", then "<name>:<value>\n" each, then "\n".
    let line = req.method().as_str().len() + 1 + target + 10;
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 2)
        .sum();
    line + fields + 1 > MAX_HEAD_BYTES
}

/// An HTTP/2 request's header list size as RFC 9113 §6.5.2 counts it (each field's name
/// and value plus 32), the pseudo-headers included, and the `Host` copied from `:authority`
/// too (a few dozen bytes over); hyper's own cap on it ([`HYPER_HEAD_BYTES`]) is larger.
fn h2_list_size(req: &Request) -> usize {
    let uri = req.uri();
    let pseudo = [
        ":method".len() + req.method().as_str().len(),
        ":scheme".len() + uri.scheme_str().map_or(0, str::len),
        ":authority".len() + uri.authority().map_or(0, |a| a.as_str().len()),
        ":path".len() + uri.path_and_query().map_or(1, |p| p.as_str().len()),
    ];
    let fields = req.headers().iter();
    let fields = fields.map(|(name, value)| name.as_str().len() + value.len());
    pseudo.into_iter().chain(fields).map(|n| n + 32).sum()
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty};

    use super::*;

    fn request(headers: &[(&str, String)]) -> Request {
        request_to("/notifications?limit=5", headers)
    }

    fn request_to(target: &str, headers: &[(&str, String)]) -> Request {
        let mut builder = http::Request::get(target);
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
        builder.body(body).unwrap()
    }

    /// The head's size is counted at its shortest on the wire: a head of exactly the limit
    /// passes, one byte more does not; so is the header count.
    #[test]
    fn limits_as_on_the_wire() {
        let line = "GET /notifications?limit=5 HTTP/1.1\n".len();
        let fill = MAX_HEAD_BYTES - line - "x-big:\n".len() - 1;
        assert!(!head_too_large(&request(&[("x-big", "a".repeat(fill))])));
        assert!(head_too_large(&request(&[("x-big", "a".repeat(fill + 1))])));
        let many: Vec<(&str, String)> = (0..MAX_HEADERS).map(|_| ("x-h", "1".into())).collect();
        assert!(!head_too_large(&request(&many)));
        let more: Vec<(&str, String)> = (0..=MAX_HEADERS).map(|_| ("x-h", "1".into())).collect();
        assert!(head_too_large(&request(&more)));
        // an absolute-form target, with and without a path
        for target in ["http://h", "http://h/p?q"] {
            // (`http://h/` counts as `http://h`: the shortest it may have been)
            let line = format!("GET {target} HTTP/1.1\n").len();
            let fill = MAX_HEAD_BYTES - line - "x-big:\n".len() - 1;
            let at = |n| request_to(target, &[("x-big", "a".repeat(n))]);
            assert!(!head_too_large(&at(fill)), "{target}");
            assert!(head_too_large(&at(fill + 1)), "{target}");
        }
    }
}
