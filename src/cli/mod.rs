//! The command line: `serve` (default), `token` and `publish`. Every flag has its `HERALD_*`
//! env twin. The top layer: the clap types and value parsers live here, and so does turning
//! them into the library's plain values (`ServeArgs` → `Config`, `KeyArgs` → `Keys`); nothing
//! below ever sees a clap type. Parsing errors exit with status 2 (clap's usage status), as do
//! start-up errors.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use url::Url;

use crate::auth::jwt::{Checks, Keys, Signer};
use crate::auth::origin;
use crate::config::{Backend, Config, KafkaConfig};
use crate::error::StartupError;

mod commands;
mod logs;
#[cfg(test)]
mod props;
mod push;

#[derive(Debug, Parser)]
#[command(name = "herald", version, about = "Real-time notification edge server")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once per process: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Print a JWT signed with the configured key.
    Token(TokenArgs),
    /// Publish a notification, like POST /publish.
    Publish(PublishArgs),
    /// Print a new VAPID key pair for Web Push (PKCS#8 PEM, then `public_key: <base64url>`).
    VapidKeys,
    /// Exit 0 when the Herald on this machine answers `/healthz` (or `/readyz`), else 1: for
    /// container health checks.
    Health(HealthArgs),
}

/// `herald health`: the address and base path of the node to ask (the server's own flags, so
/// the same environment works).
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The node's `--listen` address (an unspecified IP such as `0.0.0.0` means loopback).
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// The node's `--base-path`.
    #[arg(long, env = "HERALD_BASE_PATH", default_value = "/")]
    pub base_path: String,
    /// Ask `/readyz` (store, broker, Kafka) instead of `/healthz` (the process).
    #[arg(long)]
    pub ready: bool,
    /// The node's `--tls-cert`: when set, the node is asked over HTTPS. Its certificate is not
    /// checked (it names the public host, not the loopback address asked; nothing secret is sent).
    #[arg(long, env = "HERALD_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Key material and token checks, shared by every sub-command.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Identity")]
pub struct KeyArgs {
    /// HS256 secret.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key file (RS256 or ES256) instead of a secret.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY", conflicts_with = "jwt_secret")]
    pub jwt_public_key: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`.
    #[arg(long, env = "HERALD_JWT_LEEWAY", default_value = "0s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve on: `IP:PORT`, `localhost:PORT` or `:PORT` (every interface); port 0
    /// picks a free port (the bound address is printed).
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen, help_heading = "Listening")]
    pub listen: SocketAddr,
    /// Redis URL; `redis+cluster://h1:p,h2:p` or a repeated flag for Redis Cluster. None: embedded mode.
    #[arg(long, env = "HERALD_REDIS_URL", help_heading = "Redis")]
    pub redis_url: Vec<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Development mode: random secret if none, cookies without Secure, demo page at `/`.
    #[arg(long, env = "HERALD_DEV", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "Development")]
    pub dev: bool,
    /// Origin allowed for CORS and cookie-authenticated writes (repeatable).
    #[arg(
        long,
        env = "HERALD_ALLOWED_ORIGIN",
        value_delimiter = ',',
        help_heading = "Edge"
    )]
    pub allowed_origin: Vec<String>,
    /// Backend base URL for the `/api/` reverse proxy.
    #[arg(long, env = "HERALD_UPSTREAM", help_heading = "Edge")]
    pub upstream: Option<Url>,
    /// Notifications older than this are purged.
    #[arg(long, env = "HERALD_RETENTION", default_value = "30d", value_parser = parse_duration, help_heading = "Limits")]
    pub retention: Duration,
    /// A user's tray keeps at most this many notifications (oldest dropped).
    #[arg(
        long,
        env = "HERALD_MAX_PER_USER",
        default_value_t = 1000,
        help_heading = "Limits"
    )]
    pub max_per_user: usize,
    /// Interval of SSE `: ping` comment lines.
    #[arg(long, env = "HERALD_HEARTBEAT", default_value = "15s", value_parser = parse_duration, help_heading = "Limits")]
    pub heartbeat: Duration,
    /// Longest wait on the upstream: no response headers (nor a piece of the request body
    /// taken) for this long → 504; a response body pausing this long is cut.
    #[arg(long, env = "HERALD_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Edge")]
    pub upstream_timeout: Duration,
    /// CIDR whose X-Forwarded-For/-Proto are believed (repeatable).
    #[arg(long, env = "HERALD_TRUSTED_PROXY", value_delimiter = ',', value_parser = parse_cidr, help_heading = "Edge")]
    pub trusted_proxy: Vec<IpNet>,
    /// Prefix Herald is mounted under behind a proxy.
    #[arg(
        long,
        env = "HERALD_BASE_PATH",
        default_value = "/",
        value_parser = parse_base_path,
        help_heading = "Listening"
    )]
    pub base_path: String,
    /// Longest time one write to a client may stay blocked (it does not read) before the
    /// connection is closed, like nginx's `send_timeout`.
    #[arg(long, env = "HERALD_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Limits")]
    pub send_timeout: Duration,
    /// Longest time to receive a whole JSON request body before 408 `request_timeout`.
    #[arg(long, env = "HERALD_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Limits")]
    pub body_timeout: Duration,
    /// Only these client CIDRs may read `/metrics` (repeatable; default: any address).
    #[arg(long, env = "HERALD_METRICS_ALLOW", value_delimiter = ',', value_parser = parse_cidr, help_heading = "Edge")]
    pub metrics_allow: Vec<IpNet>,
    /// Serve the operators' admin view at `/admin` (nodes, streams, presence, a live tail of
    /// one user, a publish form); its data endpoints need a service token. Keep it behind the
    /// proxy: deny `/admin` from outside.
    #[arg(long, env = "HERALD_ADMIN", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "Edge")]
    pub admin: bool,
    /// Longest SIGTERM drain before exit.
    #[arg(long, env = "HERALD_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration, help_heading = "Limits")]
    pub drain_timeout: Duration,
    /// Further streams of a user beyond this get 429 too_many_streams.
    #[arg(
        long,
        env = "HERALD_MAX_STREAMS_PER_USER",
        default_value_t = 64,
        help_heading = "Limits"
    )]
    pub max_streams_per_user: usize,
    /// New connections per second per client address (0: off).
    #[arg(
        long,
        env = "HERALD_MAX_CONNECT_RATE",
        default_value_t = 0,
        help_heading = "Limits"
    )]
    pub max_connect_rate: u32,
    /// This node's name in presence and logs (default: random).
    #[arg(long, env = "HERALD_NODE_ID", value_parser = parse_node_id, help_heading = "Listening")]
    pub node_id: Option<String>,
    /// Serve HTTPS (and HTTP/2) with this certificate chain (PEM); with --tls-key. SIGHUP
    /// reloads both files.
    #[arg(
        long,
        env = "HERALD_TLS_CERT",
        requires = "tls_key",
        help_heading = "Listening"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM); with --tls-cert.
    #[arg(
        long,
        env = "HERALD_TLS_KEY",
        requires = "tls_cert",
        help_heading = "Listening"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// Log lines as text for people (colour only on a terminal, never with NO_COLOR) or as
    /// one JSON object a line for log pipelines.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, help_heading = "Listening")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub push: push::PushArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Kafka consumer group the nodes share.
    #[arg(
        long,
        env = "HERALD_KAFKA_GROUP",
        default_value = "herald",
        help_heading = "Kafka"
    )]
    pub kafka_group: String,
    /// Topic for records that are not valid publish bodies (default: `<topic>.dead`).
    #[arg(long, env = "HERALD_KAFKA_DEAD_LETTER_TOPIC", help_heading = "Kafka")]
    pub kafka_dead_letter_topic: Option<String>,
}

/// Kafka client settings, shared by `serve` (ingest) and `publish` (produce a record).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Kafka")]
pub struct KafkaArgs {
    /// Kafka bootstrap brokers, `host:port[,host:port…]`; turns Kafka ingest on.
    #[arg(long, env = "HERALD_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Topic whose records are publish bodies (repeatable).
    #[arg(long, env = "HERALD_KAFKA_TOPIC", value_delimiter = ',')]
    pub kafka_topic: Vec<String>,
    /// A librdkafka setting, `key=value` (repeatable), e.g. `security.protocol=sasl_ssl`.
    #[arg(long, env = "HERALD_KAFKA_OPTION", value_parser = parse_option)]
    pub kafka_option: Vec<(String, String)>,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The `sub` claim (user id).
    #[arg(long)]
    pub sub: Option<String>,
    /// The `scope` claim, e.g. `publish`.
    #[arg(long)]
    pub scope: Option<String>,
    /// Lifetime of the token.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The `sid` claim (session id for Bearer-authenticated streams).
    #[arg(long)]
    pub sid: Option<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub signing: SigningArgs,
}

/// What signs the tokens a sub-command makes, when the server verifies with a public key.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Identity")]
pub struct SigningArgs {
    /// PEM private key (RSA → RS256, EC P-256 PKCS#8 → ES256) to sign with, the other half of
    /// the servers' `--jwt-public-key`; without it, the `--jwt-secret` signs.
    #[arg(long, env = "HERALD_JWT_PRIVATE_KEY", conflicts_with = "jwt_secret")]
    pub jwt_private_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Recipient user (repeatable).
    #[arg(long = "user")]
    pub users: Vec<String>,
    /// Recipient group (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// The notification's title (1–256 characters).
    #[arg(long)]
    pub title: String,
    /// Optional text under the title.
    #[arg(long)]
    pub body: Option<String>,
    /// The service it comes from, e.g. `ci`.
    #[arg(long)]
    pub source: Option<String>,
    /// Its module or kind, e.g. `builds` (users can mute a category).
    #[arg(long)]
    pub category: Option<String>,
    /// An `http(s)://` URL or a path starting with `/` to open.
    #[arg(long)]
    pub link: Option<String>,
    /// A JSON object attached as `data`.
    #[arg(long)]
    pub data: Option<String>,
    /// Delivered even to users who muted its category (`Urgency: high` in Web Push).
    #[arg(long)]
    pub critical: bool,
    /// A later publish with the same key replaces the user's active unread one (collapse).
    #[arg(long)]
    pub collapse_key: Option<String>,
    /// Not shown before this time (RFC 3339, at most 90 days ahead).
    #[arg(long)]
    pub deliver_at: Option<String>,
    /// Removed from the tray at this time (RFC 3339, after --deliver-at).
    #[arg(long)]
    pub expires_at: Option<String>,
    /// A button, as JSON: `{"id":"approve","label":"Approve","path":"/api/builds/42/approve"}`
    /// (repeatable, at most 3; `method` defaults to POST when a path is given).
    #[arg(long = "action", value_name = "JSON")]
    pub actions: Vec<String>,
    /// The same key for the same user within 24 h stores nothing new (safe retries).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Herald to send `POST /publish` to when no `--redis-url` is given.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: Url,
    /// Write through Redis directly instead of calling a running Herald.
    #[arg(long, env = "HERALD_REDIS_URL")]
    pub redis_url: Vec<String>,
    /// With --redis-url: the tray size the servers use (oldest dropped beyond it).
    #[arg(long, env = "HERALD_MAX_PER_USER", default_value_t = 1000)]
    pub max_per_user: usize,
    /// Produce the request as a record to `--kafka-topic` instead (for Kafka ingest).
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub signing: SigningArgs,
}

impl KeyArgs {
    fn checks(&self) -> Checks {
        Checks {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway: self.jwt_leeway,
        }
    }

    /// What signs a sub-command's tokens: `--jwt-private-key`, else the `--jwt-secret`.
    fn signer(&self, signing: &SigningArgs) -> Result<Signer, StartupError> {
        let Some(path) = &signing.jwt_private_key else {
            return self
                .keys()?
                .as_ref()
                .and_then(Keys::signer)
                .cloned()
                .ok_or_else(|| {
                    StartupError(
                        "signing needs --jwt-secret, or --jwt-private-key beside --jwt-public-key"
                            .into(),
                    )
                });
        };
        let pem = std::fs::read(path).map_err(|e| {
            StartupError(format!(
                "--jwt-private-key: cannot read {}: {e}",
                path.display()
            ))
        })?;
        Signer::private_pem(&pem, &self.checks()).map_err(|e| {
            StartupError(format!(
                "--jwt-private-key: {} is not an RSA or EC (P-256, PKCS#8) private key PEM: {e}",
                path.display()
            ))
        })
    }

    /// Keys from the flags; `None` when neither a secret nor a public key is given.
    fn keys(&self) -> Result<Option<Keys>, StartupError> {
        let checks = self.checks();
        if let Some(secret) = &self.jwt_secret {
            if secret.is_empty() {
                return Err(StartupError("--jwt-secret must not be empty".into()));
            }
            Ok(Some(Keys::secret(secret.as_bytes(), checks)))
        } else if let Some(path) = &self.jwt_public_key {
            let pem = std::fs::read(path).map_err(|e| {
                StartupError(format!(
                    "--jwt-public-key: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            let keys = Keys::public_pem(&pem, checks).map_err(|e| {
                StartupError(format!(
                    "--jwt-public-key: {} is not an RSA or EC (P-256) public key PEM: {e}",
                    path.display()
                ))
            })?;
            Ok(Some(keys))
        } else {
            Ok(None)
        }
    }
}

impl KafkaArgs {
    /// The client settings, `None` without `--kafka-brokers`; topics are checked here.
    fn config(
        &self,
        group: &str,
        dead_letter_topic: Option<&String>,
    ) -> Result<Option<KafkaConfig>, StartupError> {
        let Some(brokers) = &self.kafka_brokers else {
            if !self.kafka_topic.is_empty() {
                return Err(StartupError("--kafka-topic needs --kafka-brokers".into()));
            }
            return Ok(None);
        };
        if !cfg!(feature = "kafka") {
            return Err(StartupError(
                "--kafka-brokers: this herald was built without Kafka (cargo feature `kafka`)"
                    .into(),
            ));
        }
        if brokers.trim().is_empty() {
            return Err(StartupError(
                "--kafka-brokers must name at least one broker".into(),
            ));
        }
        if self.kafka_topic.is_empty() {
            return Err(StartupError(
                "--kafka-brokers needs at least one --kafka-topic".into(),
            ));
        }
        for topic in self.kafka_topic.iter().chain(dead_letter_topic) {
            check_topic(topic)?;
        }
        if group.trim().is_empty() {
            return Err(StartupError("--kafka-group must not be empty".into()));
        }
        Ok(Some(KafkaConfig {
            brokers: brokers.trim().to_owned(),
            topics: self.kafka_topic.clone(),
            group: group.to_owned(),
            dead_letter_topic: dead_letter_topic.cloned(),
            options: self.kafka_option.clone(),
        }))
    }
}

/// Kafka's rule for topic names: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
fn check_topic(topic: &str) -> Result<(), StartupError> {
    let legal = (1..=249).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && topic != "."
        && topic != "..";
    if legal {
        Ok(())
    } else {
        Err(StartupError(format!(
            "--kafka-topic: {topic:?} is not a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -)"
        )))
    }
}

/// clap value parser for `--kafka-option key=value`.
fn parse_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

impl ServeArgs {
    /// The typed, validated `Config` (a `--dev` run without key flags gets a random secret).
    fn config(&self) -> Result<Config, StartupError> {
        let args = self;
        let (keys, generated_secret) = match args.keys.keys()? {
            Some(keys) => (keys, None),
            None if args.dev => {
                let secret = crate::model::random_token(32);
                let keys = KeyArgs {
                    jwt_secret: Some(secret.clone()),
                    ..args.keys.clone()
                }
                .keys()?
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
                origin::normalize_origin(o)
                    .ok_or_else(|| StartupError(format!("--allowed-origin: invalid origin {o:?}")))
            })
            .collect::<Result<_, _>>()?;
        let base_path = args.base_path.clone();
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
        if args.max_streams_per_user == 0 {
            return Err(StartupError(
                "--max-streams-per-user must be at least 1".into(),
            ));
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
            admin: args.admin,
            trusted_proxies: args.trusted_proxy.clone(),
            base_path,
            drain_timeout: args.drain_timeout,
            max_streams_per_user: args.max_streams_per_user,
            max_connect_rate: args.max_connect_rate,
            node: args
                .node_id
                .clone()
                .unwrap_or_else(|| format!("node-{}", crate::model::random_token(4))),
            kafka: args
                .kafka
                .config(&args.kafka_group, args.kafka_dead_letter_topic.as_ref())?,
            push: args.push.config()?,
            tls: args.tls_cert.clone().zip(args.tls_key.clone()),
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
fn backend(urls: &[String]) -> Result<Backend, StartupError> {
    let mut cluster = Vec::new();
    let mut single = Vec::new();
    for url in urls {
        let shown = crate::config::redacted(url);
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let before = cluster.len();
            cluster.extend(
                rest.split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|h| format!("redis://{h}")),
            );
            if cluster.len() == before {
                return Err(StartupError(format!(
                    "--redis-url: {shown:?} names no node (redis+cluster://host:port,host:port)"
                )));
            }
        } else {
            let parsed = Url::parse(url)
                .map_err(|e| StartupError(format!("--redis-url: invalid URL {shown:?}: {e}")))?;
            if !matches!(parsed.scheme(), "redis" | "rediss") {
                return Err(StartupError(format!(
                    "--redis-url: scheme must be redis://, rediss:// or redis+cluster:// in {shown:?}"
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

/// clap value parser for durations such as `500ms`, `15s`, `30d`.
/// `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` (loopback) or `:PORT` (every interface).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let (ip, port) = match (s.strip_prefix(':'), s.strip_prefix("localhost:")) {
        (Some(port), _) => ([0, 0, 0, 0], port),
        (_, Some(port)) => ([127, 0, 0, 1], port),
        _ => {
            return s
                .parse()
                .map_err(|_| format!("expected IP:PORT, localhost:PORT or :PORT, got {s:?}"))
        }
    };
    let port: u16 = port.parse().map_err(|_| format!("invalid port in {s:?}"))?;
    Ok(SocketAddr::from((ip, port)))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (examples: 500ms, 15s, 30d)"))
}

/// clap value parser for `--base-path`: segments of URL path characters that need no
/// escaping (no `.` or `..` segment), normalised to `/seg/…/` (`/` alone: no prefix).
fn parse_base_path(s: &str) -> Result<String, String> {
    let mut path = String::from("/");
    for segment in s.trim().split('/').filter(|s| !s.is_empty()) {
        let plain = segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c));
        if !plain || segment == "." || segment == ".." {
            return Err(
                "not a plain path: letters, digits and -._~!$&'()*+,;=:@ between \
                 slashes, no . or .. segment"
                    .into(),
            );
        }
        path.push_str(segment);
        path.push('/');
    }
    Ok(path)
}

/// clap value parser for `--node-id`: 1–64 printable ASCII characters without spaces (it
/// names the node in presence, logs and Redis keys).
fn parse_node_id(s: &str) -> Result<String, String> {
    if (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(s.to_owned())
    } else {
        Err("must be 1 to 64 printable ASCII characters without spaces".into())
    }
}

/// clap value parser for `--trusted-proxy`: a CIDR, or a bare address meaning just that host.
fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("not a CIDR or IP address: {s:?}"))
}

/// Parse the command line and run it. A usage error is one line naming the flag, exit 2
/// (`--help` and `--version` print as usual).
pub fn main() -> ExitCode {
    use clap::error::ErrorKind;
    match Cli::try_parse_from(join_negative_values(std::env::args_os())) {
        Ok(cli) => run(cli),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herald: {}", usage_error(&e));
            ExitCode::from(2)
        }
    }
}

/// `--flag -5s` as `--flag=-5s`. A word that starts with `-` and a digit (a negative number or
/// duration) is never a flag, yet clap would report it as an unexpected argument instead of
/// naming the flag whose value it is (`--heartbeat -5s`: "unexpected argument '-5' found").
/// Words after `--` are left alone.
fn join_negative_values(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    let mut rest = false;
    for arg in args {
        let negative = arg.to_str().is_some_and(|a| {
            let mut chars = a.chars();
            chars.next() == Some('-') && chars.next().is_some_and(|c| c.is_ascii_digit())
        });
        let joins = |flag: &OsString| {
            flag.to_str()
                .is_some_and(|f| f.starts_with("--") && f.len() > 2 && !f.contains('='))
        };
        match out.last_mut() {
            Some(flag) if negative && !rest && joins(flag) => {
                flag.push("=");
                flag.push(&arg);
            }
            _ => {
                rest |= arg == "--";
                out.push(arg);
            }
        }
    }
    out
}

/// A clap error in one line: its first line, with its tips and possible values kept
/// (`unexpected argument '--lisen' found (tip: a similar argument exists: '--listen')`).
/// A clap error as one line: a bad value is quoted as Rust would (clap prints it raw, and a
/// value may hold a line break); anything else is [`one_line`] of clap's own text.
fn usage_error(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let arg = e.get(ContextKind::InvalidArg);
    let value = e.get(ContextKind::InvalidValue);
    if let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (arg, value) {
        if let Some(cause) = std::error::Error::source(e) {
            return format!("invalid value {value:?} for '{arg}': {cause}");
        }
    }
    one_line(&e.render().to_string())
}

fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut out = first.trim_start_matches("error: ").to_owned();
    // "the following required arguments were not provided:" lists the flags on the lines
    // below, up to the usage line.
    let mut listing = out.ends_with(':');
    for line in lines {
        if listing && !line.starts_with("Usage:") {
            out.push_str(&format!(" {line}"));
            continue;
        }
        listing = false;
        if line.starts_with("tip:") || line.starts_with("[possible values:") {
            out.push_str(&format!(" ({line})"));
        }
    }
    out
}

/// Run the parsed command line; the exit code is 2 for any start-up or usage failure.
pub fn run(cli: Cli) -> ExitCode {
    init_tracing(match &cli.command {
        Some(Command::Serve(args)) => args.log_format,
        None => cli.serve.log_format,
        Some(Command::Health(_)) => LogFormat::Human,
        Some(_) => LogFormat::Human,
    });
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Token(args)) => commands::token(&args),
        Some(Command::VapidKeys) => push::vapid_keys(),
        Some(Command::Health(args)) => {
            // Docker reads 1 as unhealthy (2 is reserved there).
            let checked = runtime().and_then(|rt| rt.block_on(commands::health(&args)));
            return match checked {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("herald: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Some(Command::Publish(args)) => {
            runtime().and_then(|rt| rt.block_on(commands::publish(&args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, also when a cause spans several (a server that is not Redis).
            let message = e.to_string();
            eprintln!(
                "herald: {}",
                message.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), StartupError> {
    let config = args.config()?;
    runtime()?.block_on(crate::server::serve(config))
}

fn runtime() -> Result<tokio::runtime::Runtime, StartupError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StartupError(format!("cannot start the runtime: {e}")))
}

/// Logs on stderr: human text (colour only on a terminal, and never when `NO_COLOR` is set)
/// or JSON, one object a line. `HERALD_LOG` (or `RUST_LOG`) picks the levels.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERALD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        // The redis crate logs every retry of a reconnect at warn; its errors are enough. The
        // rdkafka crate logs every failed reconnect at error: the Kafka consumer says what
        // matters itself (`herald::ingest::kafka`, librdkafka's own lines at debug).
        .unwrap_or_else(|_| EnvFilter::new("info,redis=error,rdkafka=off,librdkafka=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .event_format(logs::FlatJson::new())
            .try_init(),
        LogFormat::Human => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            builder
                .with_ansi(std::io::stderr().is_terminal() && !no_color)
                .try_init()
        }
    };
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

    /// A negative value is joined to the flag before it, so clap's error names that flag.
    #[test]
    fn negative_values_join_their_flag() {
        let joined = |args: &[&str]| -> Vec<String> {
            join_negative_values(args.iter().map(OsString::from))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            joined(&["herald", "--heartbeat", "-5s", "--dev"]),
            ["herald", "--heartbeat=-5s", "--dev"]
        );
        assert_eq!(
            joined(&["herald", "--heartbeat=1s", "-5", "-x", "--", "--a", "-1"]),
            ["herald", "--heartbeat=1s", "-5", "-x", "--", "--a", "-1"]
        );
        assert_eq!(joined(&["herald", "--a", "-v"]), ["herald", "--a", "-v"]);
        let err = Cli::try_parse_from(joined(&["herald", "--heartbeat", "-5s"])).unwrap_err();
        assert!(err.to_string().contains("--heartbeat"), "{err}");
    }

    /// `--kafka-option` wants `key=value`; topic names follow Kafka's rule.
    #[test]
    fn kafka_values() {
        assert_eq!(
            parse_option("sasl.username=a=b"),
            Ok(("sasl.username".into(), "a=b".into()))
        );
        assert!(parse_option("novalue").is_err());
        assert!(parse_option("=x").is_err());
        assert!(check_topic("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"t".repeat(250)] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }

    /// A base path is normalised to `/seg/…/`; one that no request could reach is refused.
    #[test]
    fn base_paths() {
        for (given, kept) in [("/", "/"), ("", "/"), ("//", "/"), ("herald", "/herald/")] {
            assert_eq!(parse_base_path(given).unwrap(), kept, "{given:?}");
        }
        assert_eq!(parse_base_path("/a/b-c_d~/").unwrap(), "/a/b-c_d~/");
        for bad in ["/x?y", "/a b", "/../x", "/a/./b", "/%41", "/x#y", "/ü"] {
            assert!(parse_base_path(bad).is_err(), "{bad:?}");
        }
    }

    /// A node id is printable ASCII without spaces, 1–64 characters.
    #[test]
    fn node_ids() {
        assert!(parse_node_id("web-1.eu").is_ok());
        for bad in ["", "a b", "a\nb", &"n".repeat(65)] {
            assert!(parse_node_id(bad).is_err(), "{bad:?}");
        }
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
        for empty in ["redis+cluster://", "redis+cluster://,,"] {
            assert!(backend(&[empty.into()]).is_err(), "{empty}");
        }
        let Err(StartupError(shown)) = backend(&["redis://:secret@h:x".into()]) else {
            panic!("a bad port is an error")
        };
        assert!(!shown.contains("secret"), "{shown}");
    }
}
