//! The upstream client for `--upstream`: the base URL, a pooled HTTP/1 client (plain, or TLS
//! for an `https://` base), and the rule that keeps a forwarded path below the base. What is forwarded (headers, identity) is the
//! HTTP layer's business (`routes/proxy.rs`).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use tower_http::timeout::TimeoutBody;
use url::Url;

use crate::config::Config;
use crate::error::{Error, Result, StartupError};
use crate::model;

/// A request body as it arrived: hyper's, boxed (or an empty one for a request head read off
/// the socket before hyper).
pub type RequestBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// The `/api/` target: base URL and a pooled HTTP/1 client (connections are reused).
#[derive(Clone)]
pub struct Upstream {
    base: Url,
    client: Client<HttpsConnector<HttpConnector>, RequestBody>,
}

impl Upstream {
    /// A client for `base`. An `https://` upstream's certificate must chain to a public root
    /// (webpki's) or to one of `ca_pem` (`--upstream-ca-file`), and name its host.
    pub fn new(base: Url, ca_pem: Option<&[u8]>) -> std::result::Result<Self, StartupError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca_pem)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        // An idle connection is let go of before common backends close theirs (Node.js,
        // uvicorn, Apache: 5 s): a request sent on one the backend is just closing fails (502)
        // without having reached it.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(4))
            .build(connector);
        Ok(Upstream { base, client })
    }

    /// Send `request` (its URI from [`Upstream::target`]). The waits are bounded one at a
    /// time, not the whole exchange: while the upstream waits for the next piece of the
    /// request body and the client sends nothing for `limits.body`, 408 (the client stalls);
    /// otherwise, when the upstream takes no piece of the body and sends no response head for
    /// `limits.head`, 504 (a steady upload may take longer). The response body is cut when no
    /// piece of it arrives for `limits.idle`. 502 when the upstream cannot be reached.
    pub async fn send(
        &self,
        request: http::Request<RequestBody>,
        limits: Waits,
    ) -> Result<http::Response<TimeoutBody<Incoming>>> {
        let upload = Arc::new(Upload::default());
        let request = request.map(|body| {
            Watched {
                body,
                upload: upload.clone(),
            }
            .boxed_unsync()
        });
        let answer = self.client.request(request);
        tokio::pin!(answer);
        loop {
            let client_stalls = upload.awaits_client.load(Ordering::Relaxed);
            let wait = if client_stalls {
                limits.body
            } else {
                limits.head
            };
            tokio::select! {
                answered = &mut answer => {
                    let response = answered.map_err(|e| Error::BadGateway(Box::new(e)))?;
                    return Ok(response.map(|body| TimeoutBody::new(limits.idle, body)));
                }
                // A piece of the upload went, or the upstream asks for the next one: the wait
                // starts again, on whoever is awaited now.
                () = upload.changed.notified() => {}
                () = tokio::time::sleep(wait) => {
                    return Err(if client_stalls {
                        Error::RequestTimeout
                    } else {
                        Error::GatewayTimeout
                    });
                }
            }
        }
    }

    /// `base` + `rest` (the path after `/api/`, still percent-encoded) + the query. `rest`
    /// must stay below the base: see [`check_confined`].
    pub fn target(&self, rest: &str, query: Option<&str>) -> Result<Uri> {
        check_confined(rest)?;
        let mut url = self.base.as_str().trim_end_matches('/').to_owned();
        url.push('/');
        url.push_str(rest);
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        url.parse()
            .map_err(|_| Error::invalid("the path cannot be forwarded"))
    }
}

/// How long [`Upstream::send`] waits, one wait at a time.
#[derive(Clone, Copy)]
pub struct Waits {
    /// For the response head (and for the upstream to take the next piece of the request
    /// body): `--upstream-timeout`.
    pub head: Duration,
    /// For the client's next piece of the request body, while the upstream waits for it:
    /// `--body-timeout`.
    pub body: Duration,
    /// For the next piece of the response body: `--upstream-idle-timeout`.
    pub idle: Duration,
}

impl Waits {
    /// The waits the flags set.
    pub fn of(config: &Config) -> Self {
        Waits {
            head: config.upstream_timeout,
            body: config.body_timeout,
            idle: config.upstream_idle_timeout,
        }
    }
}

/// Who an upload waits on: [`Upstream::send`]'s view of its request body.
#[derive(Default)]
struct Upload {
    /// The upstream asked for the next piece of the body and the client has not sent it yet.
    awaits_client: AtomicBool,
    /// A piece went, or the upstream began waiting for the client.
    changed: Notify,
}

/// A request body that tells its [`Upload`] when it waits on the client and when a piece
/// goes.
struct Watched {
    body: RequestBody,
    upload: Arc<Upload>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let waits = polled.is_pending();
        let waited = self.upload.awaits_client.swap(waits, Ordering::Relaxed);
        // A piece (or the end) went, or the wait on the client begins.
        if !(waits && waited) {
            self.upload.changed.notify_one();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// TLS towards the upstream: webpki's roots and the certificates of `ca_pem`.
fn tls_config(ca_pem: Option<&[u8]>) -> std::result::Result<rustls::ClientConfig, StartupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        roots.add_parsable_certificates(crate::pem::ca_certificates("--upstream-ca-file", pem)?);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartupError(format!("upstream TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The rest of an `/api/` path is forwarded as received (still percent-encoded), so one that
/// could leave the `--upstream` base once the upstream normalizes it ([`model::climbs`]) is
/// refused with 400 rather than normalized (RFC 3986 §5.2.4): what the upstream sees is
/// always exactly what the client sent.
fn check_confined(rest: &str) -> Result<()> {
    if model::climbs(rest) {
        return Err(Error::invalid(
            "the /api/ path may not contain dot-segments, encoded slashes or backslashes",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths that could climb above the upstream base are refused; ordinary ones pass.
    #[test]
    fn api_paths_stay_below_the_base() {
        for bad in [
            "..",
            "../admin",
            "a/../../admin",
            ".",
            "./x",
            "%2e%2e/admin",
            "%2E%2e",
            ".%2e/x",
            "%2e./x",
            "x/%2E",
            "..%2fadmin",
            "a%2Fb",
            "x\\..\\admin",
            "x%5c..",
            "x%5C",
            "..;/admin",
            "..;x/admin",
            ".%2e;/x",
            ".;",
        ] {
            assert!(check_confined(bad).is_err(), "{bad}");
        }
        for good in [
            "",
            "echo",
            "echo/a%20b",
            "a/b/",
            "..a/b",
            "a;b/..c;d",
            "a../b",
            "...",
            "%2e%2e%2e",
            "v1.2/x",
        ] {
            assert!(check_confined(good).is_ok(), "{good}");
        }
    }

    /// Property tests (issue 13): `/api/` paths of any text stay below the upstream base.
    mod props {
        use proptest::prelude::*;

        use super::*;
        use crate::model::props::any_text;

        /// Paths built from the pieces that climb: dots, slashes, backslashes, `;`, and their
        /// percent-encodings in either case.
        fn tricky_path() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("."),
                Just(".."),
                Just("/"),
                Just("\\"),
                Just(";"),
                Just("%2e"),
                Just("%2E"),
                Just("%2f"),
                Just("%2F"),
                Just("%5c"),
                Just("%5C"),
                Just("%252e"),
                Just("%"),
                Just("%e"),
                Just("a"),
                Just("x;y"),
                Just("%00"),
                Just("%c0%ae"),
            ];
            prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any text: accepted or refused with a 400, never a panic; an accepted path has,
            /// once percent-decoded, no backslash and no segment that is a dot-segment (before
            /// any `;parameters`), and a URL parser's normalization keeps it below the base.
            #[test]
            fn accepted_paths_stay_below_the_base(rest in prop_oneof![any_text(), tricky_path()]) {
                let result = check_confined(&rest);
                if let Err(e) = &result {
                    prop_assert!(matches!(e, Error::InvalidRequest(_)), "{e:?}");
                    return Ok(());
                }
                let decoded = percent_encoding::percent_decode_str(&rest).collect::<Vec<u8>>();
                prop_assert!(!decoded.contains(&b'\\'), "{:?}", rest);
                for segment in decoded.split(|b| *b == b'/') {
                    let name = segment.split(|b| *b == b';').next().unwrap_or_default();
                    prop_assert!(name != b"." && name != b"..", "{:?}", rest);
                }
                // What an upstream would make of it (WHATWG URL normalization), for a path a
                // request target can carry: no controls (the URL parser drops tabs and
                // newlines, `http::Uri` refuses them) and no query or fragment.
                let path = rest.split(['?', '#']).next().unwrap_or_default();
                if !path.chars().any(|c| c.is_ascii_control()) {
                    let url = Url::parse(&format!("http://upstream.example/base/{path}"));
                    if let Ok(url) = url {
                        prop_assert!(url.path().starts_with("/base/"), "{:?} → {}", rest, url.path());
                    }
                }
            }

            /// `target` on any path and query: a URI below the base, or a 400; never a panic.
            #[test]
            fn targets_stay_below_the_base(
                rest in prop_oneof![any_text(), tricky_path(), "[a-z0-9/._~%-]{0,20}"],
                query in prop::option::of(prop_oneof![any_text(), "[a-z0-9=&%]{0,12}"]),
            ) {
                let base = Url::parse("http://upstream.example/base/").expect("a URL");
                let upstream = Upstream::new(base, None).expect("a client");
                match upstream.target(&rest, query.as_deref()) {
                    Ok(uri) => {
                        prop_assert!(uri.path().starts_with("/base/"), "{}", uri);
                        prop_assert!(check_confined(&rest).is_ok());
                        let normalized = Url::parse(&uri.to_string()).expect("a URI is a URL");
                        prop_assert!(normalized.path().starts_with("/base/"), "{} → {}", uri, normalized);
                    }
                    Err(e) => prop_assert!(matches!(e, Error::InvalidRequest(_)), "{e:?}"),
                }
            }
        }
    }
}
