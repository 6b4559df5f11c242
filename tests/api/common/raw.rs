//! Raw HTTP over a TCP socket, for requests a client library would tidy up.

use super::WAIT;

/// `host:port` of a node's base URL.
pub fn addr_of(base: &str) -> String {
    base.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Send `request` as bytes on a fresh connection and read until the server closes it (or
/// `WAIT` passes); the whole answer as text. Ask for `Connection: close` to get one answer.
pub fn raw_http(base: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr_of(base)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// [`raw_http`] from async code, on a blocking thread.
pub async fn raw_http_async(base: &str, request: String) -> String {
    let base = base.to_owned();
    tokio::task::spawn_blocking(move || raw_http(&base, request.as_bytes()))
        .await
        .unwrap()
}

/// The status code of a raw answer (0 when there is none).
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A connection to a node with a 4 KiB receive buffer: a client that stops reading fills it,
/// and the server's writes block soon after.
pub async fn narrow_connection(base: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect(addr_of(base).parse().unwrap())
        .await
        .unwrap()
}
