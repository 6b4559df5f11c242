//! One accepted connection. Its first request head is read here: a plain HTTP/1.x
//! `GET /events` goes through the same service as every request (identity, CORS, rate limit,
//! routes), and its stream is then held on the socket by `sse::socket` with no per-connection
//! buffer, no hyper and no task of this one's. A head hyper would refuse (malformed, over
//! 32 KiB) is answered here with the JSON error body. Anything else (and any request after an
//! `/events` that was refused) is served by hyper, with the bytes already read handed back.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::Either;
use http::{header, HeaderValue, Method, Version};
use http_body_util::{BodyExt, Empty};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_http::cors::CorsLayer;

use super::bare_errors::JsonErrors;
use super::encode::{encode, response_head};
use super::half_close::{Answered, Answering, HoldEof};
use super::head_limit::{
    closing, refusal, refuse_large_heads, HYPER_HEADERS, HYPER_HEAD_BYTES, MAX_HEADERS,
    MAX_HEAD_BYTES,
};
use super::idle::{self, Activity, Tracked};
use super::linger::Linger;
use super::prefixed::Prefixed;
use super::unread::close_unread;
use super::AppService;
use crate::connect_limit::ConnectLimit;
use crate::error::Error;
use crate::forwarded::{self, ConnInfo};
use crate::model::now_secs;
use crate::routes::body::{error_response, Request, Response};
use crate::routes::{with_body, EventStream};
use crate::send_timeout::SendTimeout;
use crate::sse;
use crate::sse::stream::{Abort, Went};
use crate::state::AppState;

/// What the server shares with every connection.
#[derive(Clone)]
pub struct Shared {
    pub state: AppState,
    pub cors: CorsLayer,
    pub limit: Arc<ConnectLimit>,
    /// `<base path>/events`, the one request head the server reads itself.
    pub events_path: Arc<str>,
    /// HTTPS (`--tls-cert`): every connection is served by hyper, HTTP/2 or HTTP/1.1.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serve one connection on its own task, watched for graceful shutdown.
pub fn spawn(shared: &Shared, graceful: &GracefulShutdown, socket: TcpStream, info: ConnInfo) {
    let _ = socket.set_nodelay(true);
    let shared = shared.clone();
    // Taken before the task starts, so a shutdown that begins meanwhile still waits for it.
    let watcher = graceful.watcher();
    let service = service(&shared, info);
    tokio::spawn(async move {
        match shared.tls.clone() {
            Some(tls) => serve_tls(shared, service, tls, socket, watcher).await,
            None => serve(shared, service, socket, watcher).await,
        }
    });
}

/// An HTTPS connection: the handshake (ALPN picks `h2` or `http/1.1`), then hyper for every
/// request; a stream is hyper's response body, and HTTP/2 carries many on one connection.
async fn serve_tls(
    shared: Shared,
    service: impl AppService,
    tls: tokio_rustls::TlsAcceptor,
    socket: TcpStream,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let idle_timeout = shared.state.config.idle_timeout;
    let socket = Linger::new(socket, shared.state.shutdown.clone());
    let handshake = tokio::time::timeout(idle_timeout, tls.accept(socket));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            _ => return,
        },
        _ = shared.state.shutdown.wait() => return,
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let abort = Abort::default();
    let connection = abort.clone();
    let service = ServiceBuilder::new()
        .map_request(move |req: http::Request<hyper::body::Incoming>| {
            let mut req = with_host(req.map(BodyExt::boxed_unsync));
            req.extensions_mut().insert(connection.clone());
            req
        })
        .map_response(with_body)
        .service(close_unread(refuse_large_heads(service)));
    // The protocol ALPN agreed on, so hyper does not wait (without a timeout) for bytes to
    // tell which one the client speaks.
    let builder = hyper_util::server::conn::auto::Builder::new(Http2Streams);
    let mut builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .max_buf_size(HYPER_HEAD_BYTES)
        .max_headers(HYPER_HEADERS);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(HYPER_HEAD_BYTES as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let state = &shared.state;
    let io = SendTimeout::new(stream, state.config.send_timeout, state.shutdown.clone());
    let io = TokioIo::new(JsonErrors::new(io));
    let activity = Activity::new();
    let conn = builder.serve_connection(io, Tracked::new(service, activity.clone()));
    let shutdown = &shared.state.shutdown;
    idle::drive(conn, &activity, idle_timeout, shutdown, abort.aborted()).await;
    // Held until here, so the server's drain waits for this connection.
    drop(watcher);
}

/// hyper's executor for an HTTPS connection's HTTP/2 streams: each one's task runs with an
/// abort of its own, so a stream whose backlog overflows is reset alone (`Abort`).
#[derive(Clone, Copy)]
struct Http2Streams;

impl<F> hyper::rt::Executor<F> for Http2Streams
where
    F: std::future::Future + Send + 'static,
    F::Output: Send,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Abort::carry_http2_stream(fut));
    }
}

/// The first request head decides the transport.
async fn serve(
    shared: Shared,
    service: impl AppService,
    mut socket: TcpStream,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let state = &shared.state;
    let mut buf = BytesMut::with_capacity(2048);
    let head = tokio::time::timeout(
        state.config.idle_timeout,
        read_head(&mut socket, &mut buf, &shared.events_path),
    );
    let first = tokio::select! {
        read = head => match read {
            Ok(Ok(first)) => first,
            // The client went, or sent no head in time: nothing to answer.
            _ => return,
        },
        // An idle connection at shutdown just closes (hyper does the same with its own).
        _ = state.shutdown.wait() => return,
    };
    let (mut request, head_len) = match first {
        Parsed::Events(request, head_len) => (*request, head_len),
        Parsed::Bad(error) => {
            let response = closing(refusal(error));
            if write_response(&mut socket, response, state.config.send_timeout).await {
                linger(socket, state).await;
            }
            return;
        }
        Parsed::Other | Parsed::Partial => {
            let io = Prefixed::new(buf.freeze(), socket);
            return hyper(shared.state, service, io, watcher).await;
        }
    };
    let version = request.version();
    let close = wants_close(&request);
    // The end of the client's input while the stream opens (it may wait for others to open,
    // or for Redis) means it went (see `half_close`): the stream must not open.
    let went = Went::default();
    request.extensions_mut().insert(went.clone());
    let answer = service.clone().oneshot(request);
    tokio::pin!(answer);
    let mut byte = [0u8; 1];
    let answered = tokio::select! {
        biased;
        peeked = socket.peek(&mut byte) => {
            if matches!(peeked, Ok(0) | Err(_)) {
                went.mark();
            }
            answer.await
        }
        answered = &mut answer => answered,
    };
    let mut response = match answered {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if went.is_marked() {
        return;
    }
    let send_timeout = state.config.send_timeout;
    if let Some(handle) = EventStream::take(&mut response) {
        // Nothing more is answered on this connection, and the client must know: one that
        // pooled it after the stream's end would send its next request into a closed socket.
        let chunked = version == Version::HTTP_11;
        let head = response_head(
            &response,
            Some(match chunked {
                true => "transfer-encoding: chunked\r\nconnection: close\r\n",
                false => "connection: close\r\n",
            }),
        );
        let sent = tokio::time::timeout(send_timeout, socket.write_all(&head)).await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        let io = Arc::new(socket);
        handle.attach(io.clone(), chunked);
        // A task of its own, small: this one's state (the head buffer, hyper's future) goes.
        let state = shared.state.clone();
        tokio::spawn(async move {
            let _watcher = watcher;
            // Ended by Herald: the client may still be sending, and a close with its bytes
            // unread would answer them with a reset, which can cost it the stream's last frames.
            let stop = &state.shutdown;
            if let Some(socket) = sse::socket::run(handle, io, send_timeout, stop).await {
                // Boxed: kept out of every idle stream's task.
                Box::pin(linger(socket, &state)).await;
            }
        });
        return;
    }
    // Refused (401, 429, …): answered here; the connection goes on in hyper unless closing,
    // and the answer says which, as hyper's would (an HTTP/1.0 client keeps it only when told).
    let close = close
        || response
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v == "close");
    if close {
        response = closing(response);
    } else if version == Version::HTTP_10 {
        let keep = HeaderValue::from_static("keep-alive");
        response.headers_mut().insert(header::CONNECTION, keep);
    }
    if !write_response(&mut socket, response, send_timeout).await {
        return;
    }
    if close {
        return linger(socket, state).await;
    }
    let rest = buf.split_off(head_len).freeze();
    hyper(shared.state, service, Prefixed::new(rest, socket), watcher).await;
}

/// End a connection whose last answer has been written: shut it and take what the client
/// still sends (`linger`), so the client reads the answer instead of a reset.
async fn linger(socket: TcpStream, state: &AppState) {
    let _ = Linger::new(socket, state.shutdown.clone()).shutdown().await;
}

/// Write a whole (small) response answered here; false when the client did not take it.
async fn write_response(
    socket: &mut TcpStream,
    response: Response,
    send_timeout: Duration,
) -> bool {
    let Some(bytes) = encode(response).await else {
        return false;
    };
    let sent = tokio::time::timeout(send_timeout, socket.write_all(&bytes)).await;
    matches!(sent, Ok(Ok(())))
}

/// The request service: its id, log span and count around everything (`observe`), the
/// connection's identity in every request (before CORS, whose Origin check needs the peer),
/// CORS around the routes, and `--max-connect-rate` (per connection, or per request for a
/// trusted proxy's connections, which many clients share: those count against the forwarded
/// client address).
fn service(shared: &Shared, info: ConnInfo) -> impl AppService {
    let state = &shared.state;
    let peer = info.peer;
    let via_proxy = forwarded::is_trusted(&state.config.trusted_proxies, peer.ip());
    let admitted = via_proxy || shared.limit.admit(peer.ip(), now_secs());
    let (app, limit) = (state.clone(), shared.limit.clone());
    let routed = tower::service_fn(move |req: Request| {
        let admitted = admitted
            && (!via_proxy || {
                let client = forwarded::client(&app.config.trusted_proxies, peer, req.headers());
                limit.admit(client.addr, now_secs())
            });
        let app = app.clone();
        async move {
            if !admitted {
                return Ok::<_, Infallible>(rate_limited());
            }
            // Boxed: the router's future (~4 KiB, its largest route's) is then moved once,
            // not by every layer that wraps it.
            Ok(Box::pin(crate::routes::handle(app, req)).await)
        }
    });
    let with_cors = shared.cors.clone().layer(routed.clone());
    let inner = tower::service_fn(move |mut req: Request| {
        req.extensions_mut().insert(info.clone());
        // tower-http's CORS answers every OPTIONS as a preflight; only one that names
        // Access-Control-Request-Method is one (Fetch). Any other OPTIONS is routed: `Allow`
        // for a known path, forwarded under `/api/`, 404 elsewhere.
        if req.method() == Method::OPTIONS
            && !req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            Either::Left(routed.clone().oneshot(req))
        } else {
            Either::Right(with_cors.clone().oneshot(req))
        }
    });
    super::observe::wrap(state, inner)
}

/// Serve the rest of the connection with hyper: a 32 KiB cap on request heads (answered with
/// the JSON body up to hyper's own, larger caps: `head_limit`) and
/// `--send-timeout` on writes; a stream opened here is hyper's response body. A client that
/// shuts its side after a request still gets the answer ([`HoldEof`]).
async fn hyper(
    state: AppState,
    service: impl AppService,
    io: Prefixed<TcpStream>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let service = ServiceBuilder::new()
        .map_request(|req: http::Request<hyper::body::Incoming>| req.map(BodyExt::boxed_unsync))
        .map_response(with_body)
        .service(close_unread(refuse_large_heads(service)));
    let answering = Answering::default();
    let service = Answered::new(service, answering.clone());
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.config.idle_timeout)
        .max_buf_size(HYPER_HEAD_BYTES)
        .max_header_size(HYPER_HEAD_BYTES)
        .max_headers(HYPER_HEADERS)
        .serve_connection(
            TokioIo::new(JsonErrors::new(HoldEof::new(
                SendTimeout::new(
                    Linger::new(io, state.shutdown.clone()),
                    state.config.send_timeout,
                    state.shutdown.clone(),
                ),
                answering,
            ))),
            service,
        );
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// An HTTP/2 request names its host in `:authority` (the URI), not in `Host`: copy it there,
/// so the Host rules (the Origin rule, the proxy's `X-Forwarded-Host`) read one place.
fn with_host(mut req: Request) -> Request {
    if req.version() == Version::HTTP_2 && !req.headers().contains_key(header::HOST) {
        let host = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        if let Some(host) = host {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    req
}

/// Read until the first request head is complete (or is known to be malformed).
async fn read_head(
    socket: &mut TcpStream,
    buf: &mut BytesMut,
    events: &str,
) -> std::io::Result<Parsed> {
    loop {
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        if socket.read_buf(buf).await? == 0 {
            return Ok(Parsed::Other);
        }
        match parse(buf, events) {
            Parsed::Partial if buf.len() >= MAX_HEAD_BYTES => {
                return Ok(Parsed::Bad(Error::HeadTooLarge {
                    limit: MAX_HEAD_BYTES,
                }))
            }
            Parsed::Partial => {}
            parsed => return Ok(parsed),
        }
    }
}

enum Parsed {
    /// A plain `GET <events>` (the request, the head's length): served here.
    Events(Box<Request>, usize),
    /// Any other well-formed head: hyper reads it again.
    Other,
    /// Answered here with the JSON error body, and the connection closed (hyper would answer
    /// with an empty body).
    Bad(Error),
    Partial,
}

/// A complete `GET <events>` head without a body, as a request; `Other` for another complete
/// head (hyper answers it), `Bad` for one hyper would refuse: malformed, or with a body whose
/// length can't be known.
fn parse(buf: &[u8], events: &str) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let len = match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Parsed::Bad(Error::HeadTooLarge {
                limit: MAX_HEAD_BYTES,
            })
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Bad(Error::HeadTooLarge {
                limit: MAX_HEAD_BYTES,
            })
        }
        Err(e) => return Parsed::Bad(Error::invalid(format!("malformed request head: {e}"))),
    };
    let (Some(method), Some(path), Some(minor)) = (head.method, head.path, head.version) else {
        return Parsed::Other;
    };
    if let Err(e) = body_framing(head.headers, minor) {
        return Parsed::Bad(e);
    }
    let has_body = head.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("content-length") && h.value != b"0"
    });
    if method != "GET" || !is_events(path, events) || has_body {
        return Parsed::Other;
    }
    let mut builder = http::Request::builder()
        .method(Method::GET)
        .uri(path)
        .version(if minor == 1 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        });
    for h in head.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
    match builder.body(body) {
        Ok(request) => Parsed::Events(Box::new(request), len),
        Err(_) => Parsed::Other,
    }
}

/// The checks hyper makes of a request's body framing (RFC 9112 6.1–6.3): every
/// `Content-Length` a number, all the same; `Transfer-Encoding` only in HTTP/1.1, ending
/// with `chunked`.
fn body_framing(headers: &[httparse::Header], minor: u8) -> Result<(), Error> {
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value).ok();
            let parsed = value.filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            let Some(value) = parsed.and_then(|v| v.parse::<u64>().ok()) else {
                return Err(Error::invalid("Content-Length is not a number"));
            };
            if length.replace(value).is_some_and(|first| first != value) {
                return Err(Error::invalid("conflicting Content-Length headers"));
            }
        }
    }
    let codings = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| h.value)
        .collect::<Vec<_>>();
    let Some(last) = codings.last() else {
        return Ok(());
    };
    let last = last.rsplit(|&b| b == b',').next().unwrap_or_default();
    if minor == 0 || !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
        return Err(Error::invalid(
            "Transfer-Encoding must end with chunked (and needs HTTP/1.1)",
        ));
    }
    Ok(())
}

/// Whether a request target is the events path, with or without a query.
fn is_events(target: &str, events: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    path == events
}

/// HTTP/1.0 without keep-alive, or `Connection: close`.
fn wants_close(request: &Request) -> bool {
    let connection = request
        .headers()
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    match request.version() {
        Version::HTTP_10 => connection.as_deref() != Some("keep-alive"),
        _ => connection.as_deref() == Some("close"),
    }
}

/// 429 for a connection over `--max-connect-rate`; the connection closes after it. The rate
/// is per second: `Retry-After: 1`.
fn rate_limited() -> Response {
    let mut response = closing(error_response(Error::RateLimited));
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> &'static str {
        match parse(head.as_bytes(), "/events") {
            Parsed::Events(..) => "events",
            Parsed::Other => "other",
            Parsed::Bad(_) => "bad",
            Parsed::Partial => "partial",
        }
    }

    /// Only a complete, bodiless `GET /events` leaves hyper; another complete head goes to
    /// hyper; one hyper would refuse is refused here (with a JSON body).
    #[test]
    fn which_heads_leave_hyper() {
        assert_eq!(
            parsed("GET /events?tab=a HTTP/1.1\r\nHost: x\r\n\r\n"),
            "events"
        );
        assert_eq!(parsed("GET /events HTTP/1.0\r\n\r\n"), "events");
        assert_eq!(parsed("GET /events HTTP/1.1\r\nHost: x\r\n"), "partial");
        assert_eq!(parsed("GET /eve"), "partial");
        assert_eq!(parsed("POST /events HTTP/1.1\r\n"), "partial");
        let long = format!("GET /healthz HTTP/1.1\r\nX-Pad: {}", "a".repeat(40_000));
        assert_eq!(parsed(&long), "partial");
        assert_eq!(parsed(&format!("{long}\r\n\r\n")), "bad");
        let many = "X-A: 1\r\n".repeat(101);
        assert_eq!(parsed(&format!("GET / HTTP/1.1\r\n{many}\r\n")), "bad");
        let enough = "X-A: 1\r\n".repeat(100);
        assert_eq!(parsed(&format!("GET / HTTP/1.1\r\n{enough}\r\n")), "other");
        assert_eq!(parsed("POST /events HTTP/1.1\r\n\r\n"), "other");
        assert_eq!(parsed("GET /healthz HTTP/1.1\r\n\r\n"), "other");
        assert_eq!(parsed("GET /events/x HTTP/1.1\r\n\r\n"), "other");
        assert_eq!(
            parsed("GET /events HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
            "other"
        );
        assert_eq!(
            parsed("POST /publish HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            "other"
        );
        assert_eq!(parsed("GET /events HTTP/1.1\r\nBad Header\r\n\r\n"), "bad");
        assert_eq!(parsed("\x16\x03\x01"), "bad");
        assert_eq!(parsed("GET /a b c HTTP/1.1\r\n\r\n"), "bad");
        for framing in [
            "Content-Length: 3\r\nContent-Length: 4",
            "Content-Length: -1",
            "Content-Length: 1e3",
            "Transfer-Encoding: gzip",
            "Transfer-Encoding: chunked, gzip",
        ] {
            let head = format!("POST /publish HTTP/1.1\r\n{framing}\r\n\r\n");
            assert_eq!(parsed(&head), "bad", "{framing}");
        }
        assert_eq!(
            parsed("POST /publish HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "bad"
        );
        assert_eq!(
            parsed("POST /publish HTTP/1.1\r\nContent-Length: 4\r\ncontent-length: 4\r\n\r\n"),
            "other"
        );
    }

    /// A refused `/events` keeps the connection unless the client asked to close it.
    #[test]
    fn close_rules() {
        let req = |version, connection: Option<&str>| {
            let mut b = http::Request::builder().version(version);
            if let Some(c) = connection {
                b = b.header("connection", c);
            }
            b.body(Empty::new().map_err(|never| match never {}).boxed_unsync())
                .unwrap()
        };
        assert!(!wants_close(&req(Version::HTTP_11, None)));
        assert!(wants_close(&req(Version::HTTP_11, Some("close"))));
        assert!(wants_close(&req(Version::HTTP_10, None)));
        assert!(!wants_close(&req(Version::HTTP_10, Some("keep-alive"))));
    }

    /// Property tests (issue 13): request heads of any bytes on the raw `/events` path.
    mod props {
        use proptest::prelude::*;

        use super::*;

        /// A complete, bodiless `GET <events>` head, as a browser's `EventSource` or curl
        /// sends it: the request target (query or not), the version, and its headers.
        fn events_head(
            events: &'static str,
        ) -> impl Strategy<Value = (String, String, u8, Vec<(String, String)>)> {
            let target = prop::option::of("[A-Za-z0-9_.~=&%-]{0,24}").prop_map(move |q| match q {
                Some(q) => format!("{events}?{q}"),
                None => events.to_owned(),
            });
            let name = prop_oneof![
                "(Host|Accept|Cookie|Last-Event-ID|Authorization|Origin|Connection|User-Agent)",
                "X-[A-Za-z0-9-]{1,12}",
                Just("Content-Length".to_owned()),
            ];
            let value = "[!-~]([ -~]{0,30}[!-~])?";
            let headers = prop::collection::vec((name, value), 0..12).prop_map(|headers| {
                headers
                    .into_iter()
                    .map(|(name, value)| {
                        // A Content-Length other than 0 announces a body: not a stream's head.
                        let value = if name == "Content-Length" {
                            "0".to_owned()
                        } else {
                            value
                        };
                        (name, value)
                    })
                    .collect::<Vec<_>>()
            });
            (target, 0u8..=1, headers).prop_map(|(target, minor, headers)| {
                let mut head = format!("GET {target} HTTP/1.{minor}\r\n");
                for (name, value) in &headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                (head, target, minor, headers)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any bytes: never a panic; a head taken off the socket is a bodiless GET of the
            /// events path, no longer than the bytes read.
            #[test]
            fn any_bytes_never_panic(bytes in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..256),
                (events_head("/events"), prop::collection::vec(any::<u8>(), 0..8), any::<prop::sample::Index>())
                    .prop_map(|((head, ..), noise, at)| {
                        // A valid head with bytes spliced in somewhere.
                        let mut bytes = head.into_bytes();
                        let at = at.index(bytes.len() + 1);
                        let tail = bytes.split_off(at);
                        bytes.extend(noise);
                        bytes.extend(tail);
                        bytes
                    }),
            ]) {
                if let Parsed::Events(request, len) = parse(&bytes, "/events") {
                    prop_assert!(len <= bytes.len());
                    prop_assert_eq!(request.method(), Method::GET);
                    prop_assert_eq!(request.uri().path(), "/events");
                    prop_assert!(!request.headers().contains_key(header::TRANSFER_ENCODING));
                    prop_assert!(request
                        .headers()
                        .get_all(header::CONTENT_LENGTH)
                        .iter()
                        .all(|v| v == "0"));
                }
            }

            /// A valid `GET /events` head (under a base path too) is taken, whole, with its
            /// target, version and headers, whatever follows it (a pipelined request); every
            /// prefix of it waits for more bytes, so no stream is ever handed to hyper by
            /// reading too early.
            #[test]
            fn events_heads_are_recognized(
                (base, (head, target, minor, headers)) in prop_oneof![
                    Just("/events"),
                    Just("/herald/events"),
                ]
                .prop_flat_map(|base| (Just(base), events_head(base))),
                rest in prop_oneof![
                    Just(String::new()),
                    Just("GET /healthz HTTP/1.1\r\n\r\n".to_owned()),
                    "[ -~]{0,16}",
                ],
            ) {
                let mut bytes = head.clone().into_bytes();
                bytes.extend_from_slice(rest.as_bytes());
                match parse(&bytes, base) {
                    Parsed::Events(request, len) => {
                        prop_assert_eq!(len, head.len());
                        prop_assert_eq!(request.uri().to_string(), target);
                        let version = if minor == 1 { Version::HTTP_11 } else { Version::HTTP_10 };
                        prop_assert_eq!(request.version(), version);
                        prop_assert_eq!(request.headers().len(), headers.len());
                        for (name, value) in &headers {
                            prop_assert!(request.headers().get_all(name.as_str()).iter().any(|v| v == value.as_str()));
                        }
                    }
                    _ => prop_assert!(false, "{:?} not taken", head),
                }
                for cut in 0..head.len() {
                    prop_assert!(
                        matches!(parse(&head.as_bytes()[..cut], base), Parsed::Partial),
                        "{:?} cut at {}",
                        head,
                        cut
                    );
                }
            }

            /// A complete head of another method or path, or with a body, is hyper's.
            #[test]
            fn other_heads_go_to_hyper(
                method in "(GET|POST|HEAD|PUT|OPTIONS|get)",
                path in "(/events|/events/|/event|/eventsx|/notifications|/herald/events|\\*)(\\?[a-z=]{0,4})?",
                body in prop_oneof![
                    Just(None),
                    Just(Some("Transfer-Encoding: chunked")),
                    Just(Some("Content-Length: 5")),
                    Just(Some("content-length: 00")),
                ],
            ) {
                let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
                if let Some(line) = body {
                    head.push_str(line);
                    head.push_str("\r\n");
                }
                head.push_str("\r\n");
                let events = method == "GET"
                    && path.split('?').next() == Some("/events")
                    && body.is_none();
                let taken = matches!(parse(head.as_bytes(), "/events"), Parsed::Events(..));
                prop_assert_eq!(taken, events, "{:?}", head);
            }
        }
    }
}
