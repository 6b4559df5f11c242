//! `Config`: every `serve` flag parsed and validated once into typed values. Inner code never
//! sees raw flag strings. Value parsers used by clap live here too, so a bad value is reported
//! by clap with the flag's name and exit status 2.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use crate::auth::jwt::Keys;
use crate::cli::{KeyArgs, ServeArgs};

/// A start-up failure: one line that names the flag or address; the process exits with 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Where the broker and store live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// No Redis: in-process broker and store, one node.
    Embedded,
    /// One Redis server (`redis://` or `rediss://`).
    Redis(String),
    /// Redis Cluster seed nodes.
    Cluster(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub backend: Backend,
    pub keys: Keys,
    /// Set when `--dev` generated the secret, so start-up can print it for `herald token`.
    pub generated_secret: Option<String>,
    pub dev: bool,
    /// Normalized origins (`scheme://host[:port]`); empty means "the request's own host".
    pub allowed_origins: Vec<String>,
    pub upstream: Option<Url>,
    pub retention: Duration,
    pub max_per_user: usize,
    pub heartbeat: Duration,
    pub upstream_timeout: Duration,
    /// A write blocked this long (the client does not read) closes the connection.
    pub send_timeout: Duration,
    /// A JSON request body must arrive whole within this (else 408).
    pub body_timeout: Duration,
    /// Client networks allowed to read `/metrics`; empty means any.
    pub metrics_allow: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    /// Always starts and ends with `/`.
    pub base_path: String,
    pub drain_timeout: Duration,
    pub max_streams_per_user: usize,
    pub max_connect_rate: u32,
    /// This node's name in presence entries and logs.
    pub node: String,
}

impl Config {
    pub fn from_args(args: &ServeArgs) -> Result<Self, StartupError> {
        let (keys, generated_secret) = match Keys::from_args(&args.keys)? {
            Some(keys) => (keys, None),
            None if args.dev => {
                let secret = crate::model::random_token(32);
                let keys = Keys::from_args(&KeyArgs {
                    jwt_secret: Some(secret.clone()),
                    ..args.keys.clone()
                })?
                .expect("a secret was given");
                (keys, Some(secret))
            }
            None => {
                return Err(StartupError(
                    "--jwt-secret or --jwt-public-key is required (or --dev)".into(),
                ))
            }
        };
        let allowed_origins = args
            .allowed_origin
            .iter()
            .map(|o| {
                normalize_origin(o)
                    .ok_or_else(|| StartupError(format!("--allowed-origin: invalid origin {o:?}")))
            })
            .collect::<Result<_, _>>()?;
        let mut base_path = args.base_path.trim().to_owned();
        if !base_path.starts_with('/') {
            base_path.insert(0, '/');
        }
        if !base_path.ends_with('/') {
            base_path.push('/');
        }
        if let Some(upstream) = &args.upstream {
            if upstream.scheme() != "http" || upstream.host().is_none() {
                return Err(StartupError(format!(
                    "--upstream: {upstream} must be an http:// URL (the backend beside the edge)"
                )));
            }
        }
        check_durations(args)?;
        if args.max_per_user == 0 {
            return Err(StartupError("--max-per-user must be at least 1".into()));
        }
        Ok(Config {
            listen: args.listen,
            backend: backend(&args.redis_url)?,
            keys,
            generated_secret,
            dev: args.dev,
            allowed_origins,
            upstream: args.upstream.clone(),
            retention: args.retention,
            max_per_user: args.max_per_user,
            heartbeat: args.heartbeat,
            upstream_timeout: args.upstream_timeout,
            send_timeout: args.send_timeout,
            body_timeout: args.body_timeout,
            metrics_allow: args.metrics_allow.clone(),
            trusted_proxies: args.trusted_proxy.clone(),
            base_path,
            drain_timeout: args.drain_timeout,
            max_streams_per_user: args.max_streams_per_user,
            max_connect_rate: args.max_connect_rate,
            node: args
                .node_id
                .clone()
                .unwrap_or_else(|| format!("node-{}", crate::model::random_token(4))),
        })
    }
}

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// 100 years of 365.25 days.
const CENTURY: Duration = Duration::from_secs(3_155_760_000);

/// Each duration flag within sensible bounds, so no later deadline arithmetic can overflow
/// (`--heartbeat 400000000000y` used to be accepted, then panic every stream).
fn check_durations(args: &ServeArgs) -> Result<(), StartupError> {
    let bounds = [
        ("--heartbeat", args.heartbeat, 10 * MS, HOUR),
        ("--upstream-timeout", args.upstream_timeout, MS, HOUR),
        ("--send-timeout", args.send_timeout, MS, HOUR),
        ("--body-timeout", args.body_timeout, MS, HOUR),
        ("--drain-timeout", args.drain_timeout, Duration::ZERO, HOUR),
        (
            "--retention",
            args.retention,
            Duration::from_secs(1),
            CENTURY,
        ),
        ("--jwt-leeway", args.keys.jwt_leeway, Duration::ZERO, DAY),
    ];
    for (flag, value, min, max) in bounds {
        if value < min || value > max {
            return Err(StartupError(format!(
                "{flag} must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )));
        }
    }
    Ok(())
}

/// `--redis-url` values → backend. `redis+cluster://h1:p,h2:p` and repeated flags name cluster nodes.
pub fn backend(urls: &[String]) -> Result<Backend, StartupError> {
    let mut cluster = Vec::new();
    let mut single = Vec::new();
    for url in urls {
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            cluster.extend(
                rest.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|h| format!("redis://{h}")),
            );
        } else {
            let parsed = Url::parse(url)
                .map_err(|e| StartupError(format!("--redis-url: invalid URL {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "redis" | "rediss") {
                return Err(StartupError(format!(
                    "--redis-url: scheme must be redis://, rediss:// or redis+cluster:// in {url:?}"
                )));
            }
            single.push(url.clone());
        }
    }
    match (single.len(), cluster.is_empty()) {
        (0, true) => Ok(Backend::Embedded),
        (1, true) => Ok(Backend::Redis(single.remove(0))),
        (_, _) => {
            cluster.extend(single);
            Ok(Backend::Cluster(cluster))
        }
    }
}

/// `scheme://host[:port]` with the scheme and host lower-cased and a default port dropped.
/// An origin never carries userinfo (`http://user@host`): such a value is not an origin.
pub fn normalize_origin(origin: &str) -> Option<String> {
    if origin.contains('@') {
        return None;
    }
    let url = Url::parse(origin).ok()?;
    let host = url.host_str()?;
    if url.path() != "/" || url.query().is_some() {
        return None;
    }
    Some(match url.port() {
        Some(port) => format!("{}://{}:{}", url.scheme(), host, port),
        None => format!("{}://{}", url.scheme(), host),
    })
}

/// clap value parser for durations such as `500ms`, `15s`, `30d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (examples: 500ms, 15s, 30d)"))
}

/// clap value parser for `--trusted-proxy`: a CIDR, or a bare address meaning just that host.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("not a CIDR or IP address: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations accept the spec's unit suffixes.
    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert!(parse_duration("soon").is_err());
    }

    /// Origins compare after normalization: case and default ports do not matter.
    #[test]
    fn origins_normalize() {
        assert_eq!(
            normalize_origin("HTTPS://Example.com:443").as_deref(),
            Some("https://example.com")
        );
        assert_eq!(
            normalize_origin("http://a:8080").as_deref(),
            Some("http://a:8080")
        );
        assert_eq!(normalize_origin("null"), None);
        assert_eq!(normalize_origin("http://user@a:8080"), None);
        assert_eq!(normalize_origin("http://user:pw@a:8080"), None);
    }

    /// A cluster URL and repeated flags give cluster seeds; one URL gives single Redis.
    #[test]
    fn backends() {
        assert_eq!(backend(&[]).unwrap(), Backend::Embedded);
        assert_eq!(
            backend(&["redis://h:1".into()]).unwrap(),
            Backend::Redis("redis://h:1".into())
        );
        assert_eq!(
            backend(&["redis+cluster://a:1,b:2".into()]).unwrap(),
            Backend::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert!(backend(&["http://x".into()]).is_err());
    }
}
