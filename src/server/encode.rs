//! The bytes of an answer the server writes itself, off hyper: a stream's head, a refused
//! first request, or the JSON answer in place of one of hyper's own (`bare_errors`).

use std::time::SystemTime;

use http::header;
use http_body_util::BodyExt;

use crate::routes::body::Response;

/// A whole (small) response: its head, with its `content-length` when it has none, then its
/// body; `None` when the body fails.
pub async fn encode(mut response: Response) -> Option<Vec<u8>> {
    let body = std::mem::take(response.body_mut())
        .collect()
        .await
        .ok()?
        .to_bytes();
    let length = (!response.headers().contains_key(header::CONTENT_LENGTH))
        .then(|| format!("content-length: {}\r\n", body.len()));
    let mut bytes = response_head(&response, length.as_deref());
    bytes.extend_from_slice(&body);
    Some(bytes)
}

/// An HTTP/1.1 response head: status line, the response's headers, `extra` (whole header
/// lines), `date`, and the blank line.
pub fn response_head(response: &Response, extra: Option<&str>) -> Vec<u8> {
    let status = response.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in response.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(extra.unwrap_or("").as_bytes());
    let date = httpdate::fmt_http_date(SystemTime::now());
    head.extend_from_slice(format!("date: {date}\r\n\r\n").as_bytes());
    head
}
