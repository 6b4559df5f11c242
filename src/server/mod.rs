//! The process's lifetime: bind, build the state, start every background task (keep-alive,
//! catch-up, ingest, retention, the streams' ticker), accept with one task per connection
//! (`connection`), drain on shutdown. `serve` turns SIGINT/SIGTERM into the one `Shutdown`;
//! `run` is the accept loop over the bound listeners (`listen`), the state and that shutdown value.

mod bare_errors;
mod connection;
mod encode;
mod half_close;
mod head_limit;
mod idle;
mod linger;
mod listen;
mod observe;
mod prefixed;
mod tls;
mod unread;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, HeaderValue};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;
use tower::Service;
use tower_http::cors::{AllowCredentials, AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

use crate::config::Config;
use crate::connect_limit::ConnectLimit;
use crate::due;
use crate::error::StartupError;
use crate::forwarded::ConnInfo;
use crate::hub::{EndReason, Hub};
use crate::ingest::Ingest;
use crate::retention;
use crate::routes::body::{Request, Response};
use crate::shutdown::{self, Shutdown};
use crate::state::AppState;
use listen::Listeners;

/// A request service as hyper serves it: the routes and every layer around them.
trait AppService:
    Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static
{
}

impl<S> AppService for S where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// Bind, connect the backends, print the bound address, and serve until SIGINT/SIGTERM.
pub async fn serve(config: Config) -> Result<(), StartupError> {
    // First of all: SIGHUP's default action ends the process, and `systemctl reload` sends it.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    // SIGTERM and SIGINT too, before anything is printed (a script may stop the node as soon
    // as it reads the listening line).
    let mut signals = shutdown::StopSignals::new();
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::Tls::load(cert, key)?),
        None => None,
    };
    let (trigger, shutdown) = shutdown::channel();
    let listen = config.listen;
    let state = AppState::build(config, shutdown.clone()).await?;
    check_node_name(&state).await?;
    // Only now: a port that listened during the checks above would take connections and
    // leave them unanswered (a balancer would keep sending them here, not elsewhere).
    let listeners = Listeners::bind(listen)
        .map_err(|e| StartupError(format!("--listen: cannot bind {listen}: {e}")))?;
    let finishing = start_tasks(&state, &shutdown).await?;
    let addr = listeners
        .local_addr()
        .map_err(|e| StartupError(format!("--listen: {e}")))?;
    if let Some(secret) = &state.config.generated_secret {
        println!("herald dev secret: {secret}");
    }
    if state.config.dev {
        dev_warnings(addr);
        let config = &state.config;
        for line in dev_banner(addr, &config.base_path, config.generated_secret.as_deref()) {
            println!("{line}");
        }
    }
    // Tests and scripts read this line to learn the port when `--listen` used port 0. It stays
    // the last line of the banner: a reader may stop reading stdout once it has it.
    let url = listening_url(tls.is_some(), addr, &state.config.base_path);
    println!("herald listening on {url}");
    tracing::info!(%url, node = state.config.node, backend = ?state.config.backend, "listening");
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("shutting down");
        trigger.fire();
        // A second signal during the drain (Ctrl-C twice) ends the process at once.
        signals.next().await;
        tracing::warn!("second stop signal: exiting without waiting for the drain");
        std::process::exit(1);
    });
    let acceptor = tls.as_ref().map(|tls| tls.acceptor.clone());
    match hup {
        Ok(hup) => drop(tokio::spawn(on_sighup(hup, tls, shutdown.clone()))),
        Err(e) => tracing::warn!(
            error = %e,
            "SIGHUP cannot be watched: it would end the process, and TLS files are not reloaded"
        ),
    }
    run(listeners, state.clone(), acceptor, shutdown).await;
    for task in finishing {
        let _ = task.await;
    }
    if let Err(e) = state.store.retire(&state.config.node).await {
        tracing::debug!(error = %e, "could not remove the node's alive key");
    }
    Ok(())
}

/// Until shutdown, each SIGHUP reloads the TLS files (`--tls-cert`); without TLS there is
/// nothing to reload, and the node goes on.
async fn on_sighup(
    mut hup: tokio::signal::unix::Signal,
    tls: Option<tls::Tls>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            got = hup.recv() => match (got, &tls) {
                (None, _) => return,
                (Some(()), Some(tls)) => tls.reload(),
                (Some(()), None) => tracing::info!("SIGHUP: nothing to reload (no --tls-cert)"),
            },
            _ = shutdown.wait() => return,
        }
    }
}

/// Two processes under one name would take each other's stream controls and presence: exit
/// 2 when another running node has this one's (a crashed one's key is watched a few seconds
/// first: `Store::node_in_use`).
async fn check_node_name(state: &AppState) -> Result<(), StartupError> {
    match state.store.node_in_use(&state.hub).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(StartupError(format!(
            "--node-id: another running node is named {:?} (its heartbeat in Redis is fresh); \
             give each node its own",
            state.hub.node()
        ))),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "could not check that no other running node has this --node-id"
            );
            Ok(())
        }
    }
}

/// Every background task of a node, started here and nowhere else; each ends on `shutdown`:
/// the node's keep-alive (Redis; its first beat before the node serves, once no other running
/// node is found under its name), stream catch-up
/// after the store reconnects (Redis), the ingest consumers (Redis stream; Kafka) and
/// retention (one node at a time). The broker's worker and the Redis links' probes belong to
/// those values and start with them. Returns the tasks to wait for before exit (the Kafka
/// consumer commits and leaves its group; the Redis ingest leaves its group).
async fn start_tasks(
    state: &AppState,
    shutdown: &Shutdown,
) -> Result<Vec<tokio::task::JoinHandle<()>>, StartupError> {
    let config = &state.config;
    let keep_alive = state.store.keep_alive(state.hub.clone(), shutdown.clone());
    if let Some(keep_alive) = keep_alive.await {
        tokio::spawn(keep_alive);
    }
    if let Some(reconnections) = state.store.reconnections() {
        tokio::spawn(catch_up_when_back(
            reconnections,
            state.hub.clone(),
            shutdown.clone(),
        ));
    }
    let ingest = Ingest::connect(
        &config.backend,
        state.store.clone(),
        state.metrics.clone(),
        config.node.clone(),
        shutdown,
    )
    .await?;
    #[cfg(feature = "kafka")]
    let mut finishing: Vec<_> = state
        .kafka
        .clone()
        .map(|kafka| {
            let (store, metrics) = (state.store.clone(), state.metrics.clone());
            tokio::spawn(kafka.run(store, metrics, shutdown.clone(), config.drain_timeout))
        })
        .into_iter()
        .collect();
    #[cfg(not(feature = "kafka"))]
    let mut finishing = Vec::new();
    // The Redis ingest leaves its consumer group as it stops (one script, behind a blocking
    // read still in flight: a few seconds at most).
    if let Some(ingest) = ingest {
        finishing.push(tokio::spawn(ingest.run(shutdown.clone())));
    }
    // Pings and expiry of every stream.
    let period = config.tick_period();
    tokio::spawn(state.hub.clone().run_ticker(period, shutdown.clone()));
    tokio::spawn(retention::run(
        state.store.clone(),
        config.node.clone(),
        config.retention,
        shutdown.clone(),
    ));
    finishing.push(tokio::spawn(due::run(
        state.store.clone(),
        state.push.clone(),
        shutdown.clone(),
        config.drain_timeout,
    )));
    Ok(finishing)
}

/// The store's link has a new connection after an outage: every stream catches up again. The
/// broker has them catch up once it has subscribed again, but its link may come back before
/// the store's, and a stream whose catch-up failed would wait for the user's next change.
async fn catch_up_when_back(mut reconnections: watch::Receiver<u64>, hub: Hub, shutdown: Shutdown) {
    loop {
        tokio::select! {
            changed = reconnections.changed() => if changed.is_err() { return },
            _ = shutdown.wait() => return,
        }
        hub.catch_up_all();
    }
}

/// The URL Herald answers at: scheme, bound address and `--base-path` (which starts and ends
/// with `/`), e.g. `https://127.0.0.1:8443/herald/`.
fn listening_url(tls: bool, addr: SocketAddr, base_path: &str) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}{base_path}")
}

/// `--dev` is for a developer's machine: say so loudly on stderr (whatever the log level),
/// and louder when the address is reachable from elsewhere.
fn dev_warnings(addr: SocketAddr) {
    eprintln!(
        "herald: WARNING: --dev is on: POST /dev/login lets anyone sign in as any user, cookies \
         lack Secure and a demo page is served at /. Never use --dev in production."
    );
    if !addr.ip().is_loopback() {
        eprintln!(
            "herald: WARNING: --dev on the non-loopback address {addr}: anyone who can reach it \
             can sign in as any user. Use --listen 127.0.0.1:PORT for development."
        );
    }
}

/// `--dev` on stdout, before the listening line: where the demo page is, and one line to paste
/// into another terminal so that `herald token`, `herald publish` and the README's curl
/// commands use this server and (when it was generated) its secret.
fn dev_banner(addr: SocketAddr, base_path: &str, generated_secret: Option<&str>) -> [String; 2] {
    let url = format!("http://{addr}{}", base_path.trim_end_matches('/'));
    let secret = generated_secret
        .map(|s| format!("HERALD_JWT_SECRET={s} "))
        .unwrap_or_default();
    [
        format!("herald demo page: {url}/"),
        format!("herald in another terminal: export {secret}HERALD_URL={url}"),
    ]
}

/// Accept connections until `shutdown`, then wait for open ones (at most `--drain-timeout`).
pub async fn run(
    mut listeners: Listeners,
    state: AppState,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: Shutdown,
) {
    let graceful = GracefulShutdown::new();
    let shared = connection::Shared {
        cors: cors_layer(&state),
        limit: Arc::new(ConnectLimit::new(state.config.max_connect_rate)),
        events_path: format!("{}/events", state.config.base_path.trim_end_matches('/')).into(),
        tls: tls.clone(),
        state: state.clone(),
    };
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listeners.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(
                        error = %e,
                        "accept failed (retrying in 50 ms): usually out of file descriptors; \
                         raise the open-files limit or add nodes"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let info = ConnInfo {
            peer,
            tls: tls.is_some(),
        };
        connection::spawn(&shared, &graceful, socket, info);
    }
    drop(listeners);
    // Every stream ends (hyper's and the socket ones alike); the connections then close.
    let present = state.store.keeps_presence().then(|| {
        let entries = state.hub.all_presence().into_iter();
        entries.map(|(user, entry)| (user, entry.stream)).collect()
    });
    state.hub.end_all(EndReason::Shutdown);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(state.config.drain_timeout) => tracing::warn!(
            "drain timeout; closing remaining connections (their clients reconnect): raise \
             --drain-timeout if requests need longer to finish"
        ),
    }
    // The ended streams' presence entries, deleted before exit (readers would skip them once
    // the node retires, but they would stay in Redis).
    if let Some(present) = present {
        let removed = state.store.remove_presences(present);
        if tokio::time::timeout(PRESENCE_CLEANUP, removed)
            .await
            .is_err()
        {
            tracing::debug!("presence entries not all removed before exit");
        }
    }
}

/// Longest the shutdown waits to delete the node's presence entries.
const PRESENCE_CLEANUP: Duration = Duration::from_secs(2);

/// CORS for `--allowed-origin` (or the request's own host). Credentials are allowed only in
/// answers to an allowed origin (never on answers without `Origin`).
fn cors_layer(state: &AppState) -> CorsLayer {
    let state = state.clone();
    let allowed = move |origin: &HeaderValue, parts: &Parts| {
        origin
            .to_str()
            .is_ok_and(|o| crate::auth::origin::allowed(&state, o, parts))
    };
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(allowed.clone()))
        .allow_credentials(AllowCredentials::predicate(allowed))
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        // Scripts may read the request id of an answer (to quote it in a bug report), the
        // identity a tray page was read as (the browser client's session check), and where a
        // tray write left the change log (the browser client waits for its stream to get there).
        .expose_headers([
            crate::request_id::HEADER,
            HeaderName::from_static(crate::routes::USER_HEADER),
            HeaderName::from_static(crate::routes::SESSION_HEADER),
            HeaderName::from_static(crate::routes::POSITION_HEADER),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paste line names the generated secret and the URL `herald publish` and curl need.
    #[test]
    fn dev_banner_exports_secret_and_url() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let [demo, export] = dev_banner(addr, "/", Some("abc123"));
        assert_eq!(demo, "herald demo page: http://127.0.0.1:8080/");
        assert_eq!(
            export,
            "herald in another terminal: export HERALD_JWT_SECRET=abc123 HERALD_URL=http://127.0.0.1:8080"
        );
    }

    /// The start-up line's URL carries the scheme and the base path.
    #[test]
    fn listening_url_has_scheme_and_base_path() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(listening_url(false, addr, "/"), "http://127.0.0.1:8080/");
        assert_eq!(
            listening_url(true, addr, "/base/"),
            "https://127.0.0.1:8080/base/"
        );
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(listening_url(false, v6, "/"), "http://[::1]:9000/");
    }

    /// Under `--base-path` both URLs carry the prefix; a secret from a flag is not repeated.
    #[test]
    fn dev_banner_with_base_path_and_own_secret() {
        let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let [demo, export] = dev_banner(addr, "/herald/", None);
        assert_eq!(demo, "herald demo page: http://127.0.0.1:9000/herald/");
        assert_eq!(
            export,
            "herald in another terminal: export HERALD_URL=http://127.0.0.1:9000/herald"
        );
    }
}
