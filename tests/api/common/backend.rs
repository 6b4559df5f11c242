//! [`EchoUpstream`], a real HTTP upstream for the `/api/` proxy tests, served by hyper in the
//! test process (named so it does not read as the product's storage `Backend`):
//! `/echo` (what it received, as JSON; a header sent more than once shows as an array of all
//! its values), `/set-cookie` (sets four session cookies, two of them nameless, and three others, with
//! CORS headers for any origin), `/slow` (answers after 3 s), `/stall` (sends its head and 5 bytes, then
//! nothing for 30 s), `/pauses` (three pieces 1 s apart), `/upload` (counts the
//! body while streaming it), `/stream?mb=N` (streams N MiB), `/record/<status>` (answers
//! `status` and keeps the request, body included, in `recorded`). It counts the requests it got.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::make_cert;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub struct EchoUpstream {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted (to see that the proxy reuses them).
    pub connections: Arc<AtomicUsize>,
    /// The requests to `/record/<status>`, in arrival order: `{"method", "path", "headers",
    /// "body"}` (the body as text).
    pub recorded: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        EchoUpstream::serve(None).await
    }

    /// The same over HTTPS (HTTP/1.1), with a self-signed certificate for 127.0.0.1 made in
    /// `dir`: the upstream and that certificate's file (for `--upstream-ca-file`).
    pub async fn start_tls(dir: &Path) -> (EchoUpstream, PathBuf) {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = make_cert(dir, "upstream");
        let chain = CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (EchoUpstream::serve(Some(acceptor)).await, cert)
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> EchoUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let (counter, accepted, recorder) = (hits.clone(), connections.clone(), recorded.clone());
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (counter, recorder) = (counter.clone(), recorder.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        handle(req, recorder.clone())
                    });
                    let http = http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(socket), service).await,
                        Some(tls) => match tls.accept(socket).await {
                            Ok(socket) => {
                                http.serve_connection(TokioIo::new(socket), service).await
                            }
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        EchoUpstream {
            url,
            hits,
            connections,
            recorded,
        }
    }

    /// A copy of the requests recorded so far (see `recorded`).
    pub fn recorded(&self) -> Vec<serde_json::Value> {
        self.recorded.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Every header as JSON: a string for a header sent once, an array of every value, in order,
/// for a header sent more than once (so a duplicate never hides behind the last value).
fn headers_json(headers: &http::HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    headers
        .keys()
        .map(|name| {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or(""))
                .collect();
            let value = match values.as_slice() {
                [one] => json!(one),
                many => json!(many),
            };
            (name.to_string(), value)
        })
        .collect()
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

type Recorded = Arc<Mutex<Vec<serde_json::Value>>>;

async fn handle(
    req: http::Request<Incoming>,
    recorded: Recorded,
) -> Result<http::Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    Ok(match path.as_str() {
        p if p.starts_with("/record/") => {
            let status: u16 = p["/record/".len()..].parse().unwrap_or(200);
            let method = req.method().to_string();
            let headers = headers_json(req.headers());
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            recorded.lock().unwrap().push(json!({
                "method": method, "path": path, "query": query, "headers": headers,
                "body": String::from_utf8_lossy(&body),
            }));
            let mut response = http::Response::new(full("recorded"));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            response
        }
        "/set-cookie" => {
            let mut response = http::Response::new(full("cookies"));
            for cookie in [
                "herald_session=forged; Path=/; HttpOnly",
                "theme=dark; Path=/",
                " herald_session =; Max-Age=0",
                // nameless: a browser keeps the value and sends it back as
                // `herald_session=planted` (before Herald's own on the more specific path)
                "=herald_session=planted; Path=/events",
                " = herald_session=planted",
                "lang=en",
                "=other=1",
            ] {
                response
                    .headers_mut()
                    .append("set-cookie", cookie.parse().unwrap());
            }
            // CORS as a backend that reflects any origin would answer
            let headers = response.headers_mut();
            headers.insert(
                "access-control-allow-origin",
                "http://evil.example".parse().unwrap(),
            );
            headers.insert("access-control-allow-credentials", "true".parse().unwrap());
            headers.insert("access-control-expose-headers", "x-secret".parse().unwrap());
            response
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            http::Response::new(full("late"))
        }
        "/stall" => {
            let first = futures_util::stream::once(async {
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hello")))
            });
            let rest = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"late")))
            });
            http::Response::new(BodyExt::boxed(StreamBody::new(first.chain(rest))))
        }
        "/pauses" => {
            let pieces = futures_util::stream::iter(0..3).then(|i| async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok::<_, Infallible>(Frame::data(Bytes::from(format!("piece{i};"))))
            });
            http::Response::new(BodyExt::boxed(StreamBody::new(pieces)))
        }
        "/stream" => {
            let mb: usize = query
                .strip_prefix("mb=")
                .and_then(|m| m.parse().ok())
                .unwrap_or(1);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = futures_util::stream::iter(
                (0..mb * 16).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
            );
            http::Response::new(BodyExt::boxed(StreamBody::new(chunks)))
        }
        _ => {
            let method = req.method().to_string();
            let headers = headers_json(req.headers());
            let mut body = BodyStream::new(req.into_body());
            let mut bytes = 0usize;
            while let Some(Ok(frame)) = body.next().await {
                bytes += frame.data_ref().map_or(0, |d| d.len());
            }
            let reply = json!({"method": method, "path": path, "query": query, "headers": headers, "bytes": bytes});
            let mut response = http::Response::new(full(reply.to_string()));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
                .headers_mut()
                .insert("x-backend", "yes".parse().unwrap());
            response
        }
    })
}
