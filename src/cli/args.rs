//! The clap types: every sub-command and flag of `herald`, with its `HERALD_*` env twin, its
//! help text and its value parser. Turning them into the library's values is `config.rs`'s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use url::Url;

use super::push;
use super::values::{
    at_least_one, parse_base_path, parse_cidr, parse_duration, parse_listen, parse_node_id,
    parse_option, parse_ttl,
};

#[derive(Debug, Parser)]
#[command(name = "herald", version, propagate_version = true)]
#[command(about = "Real-time notification edge server")]
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
    #[arg(long, env = "HERALD_JWT_ISSUER", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "HERALD_JWT_AUDIENCE", value_parser = clap::builder::NonEmptyStringValueParser::new())]
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
    /// Backend base URL for the `/api/` reverse proxy (`http://` or `https://`).
    #[arg(long, env = "HERALD_UPSTREAM", help_heading = "Edge")]
    pub upstream: Option<Url>,
    /// Extra CA certificates (PEM) trusted for an `https://` upstream, beside the public roots.
    #[arg(long, env = "HERALD_UPSTREAM_CA_FILE", help_heading = "Edge")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Notifications older than this are purged.
    #[arg(long, env = "HERALD_RETENTION", default_value = "30d", value_parser = parse_duration, help_heading = "Limits")]
    pub retention: Duration,
    /// A user's tray keeps at most this many notifications (oldest dropped).
    #[arg(
        long,
        env = "HERALD_MAX_PER_USER",
        default_value_t = 1000,
        value_parser = at_least_one,
        help_heading = "Limits"
    )]
    pub max_per_user: usize,
    /// Interval of SSE `: ping` comment lines.
    #[arg(long, env = "HERALD_HEARTBEAT", default_value = "15s", value_parser = parse_duration, help_heading = "Limits")]
    pub heartbeat: Duration,
    /// Longest wait for the upstream's response headers: none (nor a piece of the request
    /// body taken) for this long → 504 (a client pausing its upload: --body-timeout).
    #[arg(long, env = "HERALD_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Edge")]
    pub upstream_timeout: Duration,
    /// Longest pause in the upstream's response body (a backend's own long poll or event
    /// stream) before it is cut.
    #[arg(long, env = "HERALD_UPSTREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration, help_heading = "Edge")]
    pub upstream_idle_timeout: Duration,
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
    /// connection is closed, like nginx's `send_timeout` (1 s once the node is stopping).
    #[arg(long, env = "HERALD_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Limits")]
    pub send_timeout: Duration,
    /// Longest time to receive a whole JSON request body before 408 `request_timeout`;
    /// through /api/, the longest pause in an upload the upstream waits for.
    #[arg(long, env = "HERALD_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Limits")]
    pub body_timeout: Duration,
    /// A connection with no request in progress this long is closed (HTTP/2 with `GOAWAY`);
    /// also the longest wait for a request head and for a TLS handshake.
    #[arg(long, env = "HERALD_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Limits")]
    pub idle_timeout: Duration,
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
        value_parser = at_least_one,
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
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
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
    #[arg(long, env = "HERALD_MAX_PER_USER", default_value_t = 1000, value_parser = at_least_one)]
    pub max_per_user: usize,
    /// Produce the request as a record to `--kafka-topic` instead (for Kafka ingest).
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// `--redis-url` was given on the command line (not by `HERALD_REDIS_URL`).
    #[arg(skip)]
    pub typed_redis_url: bool,
    /// `--kafka-brokers` was given on the command line (not by `HERALD_KAFKA_BROKERS`).
    #[arg(skip)]
    pub typed_kafka_brokers: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub signing: SigningArgs,
}
